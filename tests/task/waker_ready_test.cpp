// Waking a task whose future completes on its second poll (async-task's tests/waker_ready.rs).
//
// The future stores a clone of its context's waker at every poll, is pending the first time
// and ready with a counted Output the second. The test wakes the stored waker (wake(),
// wake_and_release(), clones) while the task is idle, running, canceled or completed, and
// checks exactly when the schedule function is called and when the future, the output, the
// schedule function and the tag are destroyed. As in the original (`let (task, _) = ...`),
// most tests drop the JoinHandle right away: the task is detached and its output discarded.
#include <gtest/gtest.h>

#include <utility>

#include "support/gated_future.hpp"
#include "support/probes.hpp"
#include "support/world.hpp"

namespace {

using probes::Background;
using probes::drop_now;
using probes::run_checked;
using probes::World;

using TaskT = karx::Task<probes::ProbeTag>;

// --- the future ----------------------------------------------------------------------------

// Pending at the first poll, ready with Output{42} at the second. Each poll stores a clone of
// its waker in the slot, counts itself, then waits at the gate if it is armed.
probes::GatedFuture<probes::Output> ready_future(World& w) {
  return {&w.counts, &w.gate, probes::Then::ready, 1, 42, &w.waker};
}

// Counts below: w.is(polls, schedules, future drops, output drops, schedule drops, tag drops,
// queued tasks).

// --- waker_ready.rs ------------------------------------------------------------------------

// Consuming wakes: the first schedules the idle task; after completion one is a no-op that
// releases the last reference, which frees the task.
TEST(WakerReady, Wake) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));
  handle.detach();
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(again));  // completes; detached, so the output is dropped at once
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

// Wakes by reference: same schedule calls; the references go when the wakers are dropped.
TEST(WakerReady, WakeByRef) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));
  handle.detach();
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  karx::Waker first = w.waker.take();
  first.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  drop_now(first);
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  karx::Waker second = w.waker.take();
  second.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));
  drop_now(second);
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

// Clones wake the same task; a clone's wake after completion does nothing; the task is freed
// when the last clone goes.
TEST(WakerReady, Clone) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));
  handle.detach();

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  karx::Waker original = w.waker.take();
  karx::Waker w2 = original;
  drop_now(original);
  karx::Waker w3 = w2;
  karx::Waker w4 = w3;
  EXPECT_TRUE(w2.will_wake(w3));
  EXPECT_TRUE(w3.will_wake(w4));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  std::move(w4).wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  std::move(w3).wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  drop_now(w2);
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

// The scheduled Task is canceled: its future is destroyed at once (never completed, no
// output); a later wake does nothing and, as the last reference, frees the task.
TEST(WakerReady, WakeCanceled) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));
  handle.detach();

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  w.chan.recv().cancel();
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
}

// A wake after completion schedules nothing; as the last reference it frees the task.
TEST(WakerReady, WakeCompleted) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));
  handle.detach();

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

// --- beyond waker_ready.rs -------------------------------------------------------------------

// Woken while the completing poll runs: the task is not rescheduled (run() returns false); the
// kept handle receives the output; later wakes do nothing.
TEST(WakerReady, WakeDuringRunThatCompletes) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));  // the output waits for the handle

  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  {
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready());
    ASSERT_TRUE(r.value().has_value());
    EXPECT_EQ(r.value()->value, 42);
    EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  }
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

// Completed with the handle kept but not yet awaited: wakes do nothing, the output stays in
// the task until the handle takes it (or is dropped, which destroys it).
TEST(WakerReady, WakeCompletedBeforeHandleIsDropped) {
  World w;
  auto [task, handle] = w.spawn(ready_future(w));

  EXPECT_FALSE(run_checked(task));
  w.waker.take().wake_and_release();
  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  karx::Waker(waker).wake_and_release();  // a consuming wake (of a clone)
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  handle.detach();  // nobody takes the output: destroyed now
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));
  drop_now(waker);
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

}  // namespace
