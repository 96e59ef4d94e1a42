// Waking a task whose future never completes (async-task's tests/waker_pending.rs).
//
// The future stores a clone of its context's waker at every poll; the test takes that waker
// and wakes it (wake(), wake_and_release(), clones, drops) while the task is idle, scheduled,
// running, canceled or detached, and checks exactly when the schedule function is called and
// when the future, the schedule function and the tag are destroyed.
//
// The originals order threads with sleeps. Here the future waits at a `Gate` inside its poll
// so that the test acts while the task is running, then releases it: every step is
// deterministic and every count is exact.
#include <gtest/gtest.h>

#include <utility>

#include "support/gated_future.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"
#include "support/world.hpp"

namespace {

using probes::Background;
using probes::drop_now;
using probes::run_checked;
using probes::WakeCounter;
using probes::World;

using TaskT = karx::Task<probes::ProbeTag>;

// --- the future ----------------------------------------------------------------------------

// Pending forever. Each poll stores a clone of its waker in the slot, counts itself, then waits
// at the gate if it is armed.
probes::GatedFuture<void> pending_future(World& w) {
  return {&w.counts, &w.gate, probes::Then::pending, 0, 0, &w.waker};
}

// Counts below: w.is(polls, schedules, future drops, output drops, schedule drops, tag drops,
// queued tasks).

// --- waker_pending.rs ----------------------------------------------------------------------

// Woken while running: only marked; the run then reschedules the task itself (once) and
// returns true.
TEST(WakerPending, WakeDuringRun) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  EXPECT_TRUE(bg.finish());
  EXPECT_TRUE(w.is(2, 2, 0, 0, 0, 0, 1));

  // Dropping the rescheduled Task cancels it: the future goes now, the rest with the last owner.
  {
    TaskT dropped = w.chan.recv();
  }
  EXPECT_TRUE(w.is(2, 2, 1, 0, 0, 0, 0));
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 2, 1, 0, 0, 0, 0));
  drop_now(waker);
  EXPECT_TRUE(w.is(2, 2, 1, 0, 0, 0, 0));
  handle.detach();
  EXPECT_TRUE(w.is(2, 2, 1, 0, 1, 1, 0));
}

// The handle cancels (and is dropped) while the task runs: no schedule; the run destroys the
// future when it returns; the last waker frees the task.
TEST(WakerPending, CancelDuringRun) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
}

// Woken, then canceled and dropped, all while running: still no schedule call.
TEST(WakerPending, WakeAndCancelDuringRun) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
}

// Canceled and dropped, then woken, all while running: the wake of a closed task is ignored.
TEST(WakerPending, CancelAndWakeDuringRun) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
}

// (From the later async-task suite.) Handle detached, then the last waker dropped: nobody can
// wake the task, so it is scheduled one last time and that run destroys the future.
TEST(WakerPending, DropLastWaker) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();

  handle.detach();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  drop_now(waker);
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
}

// (From the later async-task suite.) No waker left, the handle cancels: the idle task is
// scheduled once more; after the handle is dropped that run destroys and frees everything.
TEST(WakerPending, CancelLastTask) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  w.waker.drop();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  handle.detach();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
}

// (From the later async-task suite.) No waker left, the handle is detached: the task is
// scheduled one last time and that run destroys and frees everything.
TEST(WakerPending, DropLastTask) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  w.waker.drop();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  handle.detach();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
}

// --- beyond waker_pending.rs -----------------------------------------------------------------

// A fresh Task counts as scheduled: waking it (through the Task's or the handle's waker)
// before its first run calls no schedule function, and that run is not "woken while running".
TEST(WakerPending, WakeBeforeFirstRun) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  karx::Waker from_task = task.waker();
  karx::Waker from_handle = handle.waker();
  EXPECT_TRUE(from_task.will_wake(from_handle));
  from_task.wake();
  from_handle.wake();
  std::move(from_task).wake_and_release();
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  from_handle.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  drop_now(from_handle);
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));
  handle.detach();  // no waker left: one last run destroys the future
  EXPECT_TRUE(w.is(2, 2, 0, 0, 0, 0, 1));
  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(2, 2, 1, 0, 1, 1, 0));
}

// A scheduled task is never scheduled twice: wakes of any clone, by reference or consuming,
// do nothing until it has run.
TEST(WakerPending, WakeWhileScheduled) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  karx::Waker clone = waker;
  clone.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  std::move(clone).wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  // Idle again: the next wake schedules again.
  waker.wake();
  EXPECT_TRUE(w.is(2, 2, 0, 0, 0, 0, 1));
  {
    TaskT dropped = w.chan.recv();
  }
  EXPECT_TRUE(w.is(2, 2, 1, 0, 0, 0, 0));

  drop_now(waker);
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 2, 1, 0, 0, 0, 0));
  handle.detach();
  EXPECT_TRUE(w.is(2, 2, 1, 0, 1, 1, 0));
}

// Canceled by the handle while idle: one more schedule; wakes of the canceled task are
// ignored; the handle resolves to "canceled" only once that run destroyed the future.
TEST(WakerPending, WakeCanceledByHandle) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));
  WakeCounter awaiter;

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_EQ(awaiter.wakes(), 0);

  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 1);

  auto r = probes::poll_with(handle, awaiter.new_waker());
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value());
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));

  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));
  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
}

// With the handle detached the task still runs whenever woken; when its last waker goes, it
// is scheduled one last time to destroy the future.
TEST(WakerPending, WakeAfterHandleDetached) {
  World w;
  auto [task, handle] = w.spawn(pending_future(w));

  EXPECT_FALSE(run_checked(task));
  handle.detach();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  drop_now(waker);
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));  // the poll stored another waker
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 2, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(2, 2, 1, 0, 1, 1, 0));
}

}  // namespace
