// Fault injection: a schedule function that throws. Where there is a caller (Task::schedule,
// Waker::wake on any thread, Task::run rescheduling a task woken while it ran), the exception
// reaches it; the Task the function dropped is canceled, so the future is destroyed exactly
// once and the handle yields "canceled". Where there is none (the last Waker or the JoinHandle
// is dropped and the task is scheduled one last time to destroy its future), the exception
// goes to the detached-exception handler as a karx::undeliverable, and the future is
// destroyed on the dropping thread instead.
#include <gtest/gtest.h>

#include <atomic>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/detached.hpp"
#include "support/probes.hpp"

namespace {

struct ScheduleFailure : std::runtime_error {
  ScheduleFailure() : std::runtime_error("schedule failed") {}
};

// Throws on every call (the Task it was handed is dropped by the unwinding). `alive` tells
// when the copy in the task block is gone (the block was freed).
struct ThrowingSchedule {
  std::atomic<int>* calls;
  std::shared_ptr<int> alive = std::make_shared<int>(0);
  void operator()(karx::Task<>) const {
    calls->fetch_add(1);
    throw ScheduleFailure();
  }
};

TEST(ScheduleFault, TaskScheduleRethrowsAndTheTaskIsCanceled) {
  probes::Counts c;
  std::atomic<int> calls{0};
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 0, 7}, ThrowingSchedule{&calls});
  EXPECT_THROW(task.schedule(), ScheduleFailure);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(c.polls.load(), 0);
  EXPECT_EQ(c.future_drops.load(), 1) << "the dropped Task cancels: the future goes once";
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value().has_value()) << "the handle yields canceled";
  EXPECT_EQ(c.future_drops.load(), 1);
}

TEST(ScheduleFault, AWakeOnAnotherThreadRethrowsThereAndTheTaskIsCanceled) {
  probes::Counts c;
  std::atomic<int> calls{0};
  karx::Waker stored = karx::noop_waker();
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1, 7, false, &stored}, ThrowingSchedule{&calls});
  EXPECT_FALSE(task.run());  // pending once: its waker is now in `stored`
  EXPECT_EQ(c.polls.load(), 1);
  bool caught = false;
  std::thread([&] {
    try {
      std::move(stored).wake_and_release();
    } catch (const ScheduleFailure&) {
      caught = true;
    }
  }).join();
  EXPECT_TRUE(caught) << "the waker's caller gets the schedule function's exception";
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value().has_value());
}

// Pending on its first poll, after waking itself: run() must reschedule it as it returns.
struct WakesItselfOnce {
  std::atomic<int>* polls;
  probes::DropCounter drop;
  karx::Poll<int> poll(karx::Context& cx) {
    if (polls->fetch_add(1) == 0) {
      cx.waker().wake();
      return karx::pending;
    }
    return karx::Poll<int>::ready(7);
  }
};

TEST(ScheduleFault, ARescheduleAsTheRunEndsRethrowsFromRunAndTheTaskIsCanceled) {
  std::atomic<int> polls{0}, future_drops{0}, calls{0};
  ThrowingSchedule schedule{&calls};
  std::weak_ptr<int> schedule_alive = schedule.alive;
  auto [task, handle] = karx::spawn(WakesItselfOnce{&polls, probes::DropCounter(future_drops)}, std::move(schedule));
  EXPECT_THROW(task.run(), ScheduleFailure) << "the executor that called run() gets the exception";
  EXPECT_EQ(polls.load(), 1);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(future_drops.load(), 1) << "the Task the schedule function dropped canceled the task";
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value().has_value()) << "the handle yields canceled";
  EXPECT_TRUE(schedule_alive.expired()) << "the task block was freed";
}

class ScheduleFaultWithoutCaller : public probes::DetachedRecordingTest {};

TEST_F(ScheduleFaultWithoutCaller, DroppingTheLastWakerReportsAndDestroysTheFuture) {
  probes::Counts c;
  std::atomic<int> calls{0};
  ThrowingSchedule schedule{&calls};
  std::weak_ptr<int> schedule_alive = schedule.alive;
  karx::Waker stored = karx::noop_waker();
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1, 7, false, &stored}, std::move(schedule));
  EXPECT_FALSE(task.run());  // pending: `stored` holds the only reference left
  handle.detach();           // nobody awaits it: the stored waker is its last owner
  EXPECT_EQ(calls.load(), 0);
  EXPECT_NO_THROW(probes::drop_now(stored)) << "dropping a Waker never throws";
  EXPECT_EQ(calls.load(), 1) << "the task was scheduled one last time";
  EXPECT_EQ(c.future_drops.load(), 1) << "the future was destroyed on this thread instead";
  EXPECT_EQ(c.polls.load(), 1);
  EXPECT_TRUE(probes::undeliverable_reported_once<ScheduleFailure>());
  EXPECT_TRUE(schedule_alive.expired()) << "the task block was freed";
}

TEST_F(ScheduleFaultWithoutCaller, DetachingTheLastOwnerReportsAndDestroysTheFuture) {
  probes::Counts c;
  std::atomic<int> calls{0};
  ThrowingSchedule schedule{&calls};
  std::weak_ptr<int> schedule_alive = schedule.alive;
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1, 7}, std::move(schedule));
  EXPECT_FALSE(task.run());  // pending, and no waker kept: the handle is the last owner
  EXPECT_NO_THROW(handle.detach());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_TRUE(probes::undeliverable_reported_once<ScheduleFailure>());
  EXPECT_TRUE(schedule_alive.expired()) << "the task block was freed";
}

}  // namespace
