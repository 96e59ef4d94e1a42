// spawn_detached: a task with no JoinHandle. It behaves as a spawned task whose handle was
// detached at once; a run that finds the Task's the only reference starts and completes it
// with plain loads and stores (impl/task/raw.cpp), which the stress test at the end races
// against wakers dropped and woken on other threads.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "support/detached.hpp"
#include "support/probes.hpp"
import karx;

namespace {

using probes::Counts;
using probes::ProbeFuture;
using probes::ProbeSchedule;

using SpawnDetached = probes::DetachedRecordingTest;

TEST_F(SpawnDetached, RunsToCompletionAndDropsTheOutputOnce) {
  Counts c;
  std::deque<karx::Task<>> queue;
  karx::Task<> task = karx::spawn_detached(probes::ready_future(c), ProbeSchedule{&c, &queue});
  EXPECT_EQ(c.schedules.load(), 0) << "a fresh task counts as scheduled";
  EXPECT_FALSE(task.run());
  EXPECT_EQ(c.polls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.output_drops.load(), 1) << "nobody can take the output: it goes at completion";
  EXPECT_EQ(c.schedule_drops.load(), 1) << "and the block with it";
  EXPECT_EQ(probes::detached_calls(), 0);
}

TEST_F(SpawnDetached, AnExceptionGoesToTheDetachedHandler) {
  Counts c;
  karx::Task<> task = karx::spawn_detached(ProbeFuture{&c, 0, 0, true}, ProbeSchedule{&c});
  EXPECT_FALSE(task.run());
  EXPECT_EQ(probes::detached_calls(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.schedule_drops.load(), 1);
}

TEST_F(SpawnDetached, AWokenTaskRunsAgainUntilItCompletes) {
  Counts c;
  std::deque<karx::Task<>> queue;
  karx::Waker stored = karx::noop_waker();
  queue.push_back(karx::spawn_detached(ProbeFuture{&c, 2, 3, false, &stored}, ProbeSchedule{&c, &queue}));
  EXPECT_EQ(probes::drain(queue), 1);
  stored.wake();
  EXPECT_EQ(probes::drain(queue), 1);
  EXPECT_EQ(c.output_drops.load(), 0);
  std::thread([&] { stored.wake(); }).join();  // a wake from another thread
  EXPECT_EQ(probes::drain(queue), 1);
  EXPECT_EQ(c.polls.load(), 3);
  EXPECT_EQ(c.output_drops.load(), 1);
  EXPECT_EQ(c.schedule_drops.load(), 0) << "the stored waker still holds the block";
  stored = karx::noop_waker();
  EXPECT_EQ(c.schedule_drops.load(), 1);
}

TEST_F(SpawnDetached, TheLastWakerDroppedWhileIdleSchedulesTheTaskToDestroyItsFuture) {
  Counts c;
  std::deque<karx::Task<>> queue;
  karx::Waker stored = karx::noop_waker();
  queue.push_back(karx::spawn_detached(ProbeFuture{&c, 5, 0, false, &stored}, ProbeSchedule{&c, &queue}));
  EXPECT_EQ(probes::drain(queue), 1);
  EXPECT_EQ(c.future_drops.load(), 0);
  stored = karx::noop_waker();  // nobody can wake it any more
  EXPECT_EQ(c.schedules.load(), 1) << "scheduled one last time";
  EXPECT_EQ(probes::drain(queue), 1);
  EXPECT_EQ(c.polls.load(), 1) << "that run destroys the future instead of polling it";
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.schedule_drops.load(), 1);
}

TEST_F(SpawnDetached, DroppingTheTaskUnrunCancelsIt) {
  Counts c;
  {
    karx::Task<> task = karx::spawn_detached(probes::ready_future(c), ProbeSchedule{&c});
  }
  EXPECT_EQ(c.polls.load(), 0);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.output_drops.load(), 0);
  EXPECT_EQ(c.schedule_drops.load(), 1);
}

TEST_F(SpawnDetached, TheTagIsKeptAndDestroyedOnce) {
  Counts c;
  {
    karx::Task<probes::ProbeTag> task = karx::spawn_detached(
        probes::ready_future(c), [](karx::Task<probes::ProbeTag>) {},
        probes::ProbeTag{9, probes::DropCounter(c.tag_drops)});
    EXPECT_EQ(task.tag().id, 9);
    EXPECT_FALSE(task.run());
  }
  EXPECT_EQ(c.tag_drops.load(), 1);
}

karx::Async<> bump(std::atomic<int>* n) {
  n->fetch_add(1, std::memory_order_relaxed);
  co_return;
}

TEST_F(SpawnDetached, ACoroutineRunsFromItsOwnBlock) {
  std::atomic<int> n{0};
  std::deque<karx::Task<>> queue;
  auto enqueue = [&queue](karx::Task<> t) { queue.push_back(std::move(t)); };
  for (int i = 0; i < 3; ++i) queue.push_back(karx::spawn_detached(bump(&n), enqueue));
  EXPECT_EQ(probes::drain(queue), 3);
  EXPECT_EQ(n.load(), 3);
}

// Many detached tasks, each pending a few times and woken from other threads through clones
// that those threads then drop, so that a completion (and an exclusive start) often races
// with a waker being dropped elsewhere. Every task must complete exactly once, every block be
// freed once (the schedule functions' drops), and nothing reported.
struct WakeElsewhere {
  std::mutex* mu;
  std::vector<karx::Waker>* handoff;
  int pending;
  std::atomic<int>* done;
  karx::Poll<> poll(karx::Context& cx) {
    if (pending-- > 0) {
      std::lock_guard lock(*mu);
      handoff->push_back(cx.waker());
      return karx::pending;
    }
    done->fetch_add(1, std::memory_order_relaxed);
    return karx::ready();
  }
};

TEST_F(SpawnDetached, StressEveryTaskCompletesOnceWhileWakersComeAndGoElsewhere) {
  constexpr int kTasks = 20000;
  std::mutex queue_mu, handoff_mu;
  std::deque<karx::Task<>> queue;
  std::vector<karx::Waker> handoff;
  std::atomic<int> done{0}, freed{0};
  std::atomic<bool> stop{false};
  struct Schedule {
    std::mutex* mu;
    std::deque<karx::Task<>>* queue;
    probes::DropCounter drop;
    void operator()(karx::Task<> t) const {
      std::lock_guard lock(*mu);
      queue->push_back(std::move(t));
    }
  };
  for (int i = 0; i < kTasks; ++i)
    queue.push_back(karx::spawn_detached(WakeElsewhere{&handoff_mu, &handoff, i % 3, &done},
                                         Schedule{&queue_mu, &queue, probes::DropCounter(freed)}));
  // Wakers: take what tasks left behind, wake by reference, then drop (each a reference).
  std::vector<std::thread> wakers;
  for (int t = 0; t < 2; ++t)
    wakers.emplace_back([&] {
      while (!stop.load(std::memory_order_acquire)) {
        std::vector<karx::Waker> mine;
        {
          std::lock_guard lock(handoff_mu);
          mine.swap(handoff);
        }
        for (karx::Waker& w : mine) w.wake();
        mine.clear();
        std::this_thread::yield();
      }
    });
  std::vector<std::thread> runners;
  for (int t = 0; t < 2; ++t)
    runners.emplace_back([&] {
      while (done.load(std::memory_order_acquire) < kTasks) {
        karx::Task<> task;
        {
          std::lock_guard lock(queue_mu);
          if (!queue.empty()) {
            task = std::move(queue.front());
            queue.pop_front();
          }
        }
        if (task)
          task.run();
        else
          std::this_thread::yield();
      }
    });
  for (auto& r : runners) r.join();
  stop.store(true, std::memory_order_release);
  for (auto& w : wakers) w.join();
  handoff.clear();
  {
    std::lock_guard lock(queue_mu);
    EXPECT_TRUE(queue.empty());
  }
  EXPECT_EQ(done.load(), kTasks);
  EXPECT_EQ(freed.load(), kTasks) << "every block freed exactly once";
  EXPECT_EQ(probes::detached_calls(), 0);
}

}  // namespace
