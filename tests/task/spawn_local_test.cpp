// spawn_local: the task stays on its spawning thread.
#include <gtest/gtest.h>

#include <deque>
#include <thread>

#include "support/probes.hpp"

namespace {

using probes::Counts;
using probes::ProbeFuture;
using probes::ProbeSchedule;

TEST(SpawnLocal, RunsOnTheSpawningThread) {
  Counts c;
  std::deque<karx::Task<>> queue;
  auto [task, handle] = karx::spawn_local(ProbeFuture{&c, 1, 5}, ProbeSchedule{&c, &queue});
  karx::Waker waker = task.waker();
  EXPECT_FALSE(task.run());
  EXPECT_EQ(c.polls, 1);
  waker.wake();
  EXPECT_EQ(c.schedules, 1);
  EXPECT_EQ(probes::drain(queue), 1);
  EXPECT_EQ(c.polls, 2);
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value()->value, 5);
}

TEST(SpawnLocal, RunOnAnotherThreadThrowsWithoutPollingAndKeepsTheTask) {
  Counts c;
  auto [task, handle] = karx::spawn_local(ProbeFuture{&c, 0, 9}, ProbeSchedule{&c});
  std::thread other([&task = task] {
    EXPECT_THROW(task.run(), karx::foreign_thread);
    EXPECT_TRUE(static_cast<bool>(task));  // still runnable on the right thread
  });
  other.join();
  EXPECT_EQ(c.polls, 0);
  EXPECT_EQ(c.future_drops, 0);
  EXPECT_FALSE(task.run());  // back home: runs
  EXPECT_EQ(c.polls, 1);
  EXPECT_EQ(c.future_drops, 1);
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value()->value, 9);
}

TEST(SpawnLocal, ForeignThreadIsALogicError) {
  static_assert(std::is_base_of_v<std::logic_error, karx::foreign_thread>);
  Counts c;
  auto [task, handle] = karx::spawn_local(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  std::thread other([&task = task] {
    try {
      task.run();
      ADD_FAILURE() << "run() on a foreign thread did not throw";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("spawn_local"), std::string::npos) << e.what();
    }
  });
  other.join();
}

TEST(SpawnLocal, TheHandleMayBeAwaitedElsewhere) {
  Counts c;
  auto [task, handle] = karx::spawn_local(ProbeFuture{&c, 0, 4}, ProbeSchedule{&c});
  task.run();
  std::thread other([&handle = handle] {
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready());
    EXPECT_EQ(r.value()->value, 4);
  });
  other.join();
}

void cancel_local_task_on_another_thread() {
  Counts c;
  auto spawned = karx::spawn_local(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  std::thread([t = std::move(spawned.first)]() mutable { t.cancel(); }).join();
}

TEST(SpawnLocalDeathTest, DestroyingTheFutureOnAnotherThreadTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(cancel_local_task_on_another_thread(),
               "spawn_local task is being destroyed on a thread other than the one that spawned it");
}

}  // namespace
