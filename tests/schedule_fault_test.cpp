// Fault injection: a schedule function that throws. Where there is a caller (Task::schedule,
// Waker::wake on any thread), the exception reaches it; the Task the function dropped is
// canceled, so the future is destroyed exactly once and the handle yields "canceled".
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "support/probes.hpp"

namespace {

struct ScheduleFailure : std::runtime_error {
  ScheduleFailure() : std::runtime_error("schedule failed") {}
};

// Throws on every call (the Task it was handed is dropped by the unwinding).
struct ThrowingSchedule {
  std::atomic<int>* calls;
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

}  // namespace
