// Waking a task whose future throws on its second poll (async-task's tests/waker_panic.rs).
//
// The future stores a clone of its context's waker at every poll, is pending the first time
// and throws Boom the second. The test wakes the stored waker while the task runs, is
// canceled, detached or completed (with the exception), and checks exactly when the schedule
// function is called, when the future, the schedule function and the tag are destroyed, and
// that the exception reaches the handle, or the detached-exception handler exactly once, or
// nobody at all when the task was canceled.
//
// In async-task the panic propagates out of `run()`; in karx `run()` returns normally and the
// exception is the task's output. The originals order threads with sleeps; here the future
// waits at a `Gate` inside its poll while the test acts, so every step is deterministic.
#include <gtest/gtest.h>

#include <stdexcept>
#include <utility>

#include "support/detached.hpp"
#include "support/gated_future.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"
#include "support/world.hpp"

namespace {

using probes::Background;
using probes::Boom;
using probes::detached_boom_id;
using probes::detached_calls;
using probes::drop_now;
using probes::run_checked;
using probes::WakeCounter;
using probes::World;

using TaskT = karx::Task<probes::ProbeTag>;

// Records the detached exceptions of each test (installs the handler, restores the previous one).
class WakerPanic : public probes::DetachedRecordingTest {};

// --- the future ----------------------------------------------------------------------------

// Pending at the first poll, throws Boom(id) at the second. Each poll stores a clone of its
// waker in the slot, counts itself, then waits at the gate if it is armed.
probes::GatedFuture<void> throwing_future(World& w, int id) {
  return {&w.counts, &w.gate, probes::Then::fail, 1, id, &w.waker};
}

// Counts below: w.is(polls, schedules, future drops, output drops, schedule drops, tag drops,
// queued tasks).

// --- waker_panic.rs ------------------------------------------------------------------------

// Woken and detached while the throwing poll runs: the task is not rescheduled (it finished),
// run() returns normally, and the exception goes to the detached-exception handler once.
TEST_F(WakerPanic, WakeDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 1));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  Background bg(w.gate, w.chan.recv());
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));

  std::move(waker).wake_and_release();
  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 1);

  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
}

// Canceled and dropped while the throwing poll runs: the exception is discarded unreported.
TEST_F(WakerPanic, CancelDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 2));

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
  EXPECT_EQ(detached_calls(), 0);
}

// Woken, then canceled and dropped, while the throwing poll runs: unreported, no schedule.
TEST_F(WakerPanic, WakeAndCancelDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 3));

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
  EXPECT_EQ(detached_calls(), 0);
}

// Canceled and dropped, then woken, while the throwing poll runs: unreported, no schedule.
TEST_F(WakerPanic, CancelAndWakeDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 4));

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
  EXPECT_EQ(detached_calls(), 0);
}

// (From the later async-task suite.) The handle awaits (pending), the task throws: the
// awaiter is woken once, the handle rethrows; a wake after that schedules nothing.
TEST_F(WakerPanic, PanicAndPoll) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 5));
  WakeCounter awaiter;

  EXPECT_FALSE(run_checked(task));
  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  EXPECT_EQ(awaiter.wakes(), 0);

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 1);

  try {
    (void)probes::poll_with(handle, awaiter.new_waker());
    ADD_FAILURE() << "the handle did not rethrow";
  } catch (const Boom& b) {
    EXPECT_EQ(b.id, 5);
  }
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_THROW((void)probes::poll_once(handle), std::logic_error);  // awaited once only

  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// --- beyond waker_panic.rs -------------------------------------------------------------------

// The task throws while its handle is kept (nothing reported), then the handle is detached
// without awaiting: the detach reports the exception, once; wakes schedule nothing.
TEST_F(WakerPanic, PanicThenDetach) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 6));

  EXPECT_FALSE(run_checked(task));
  w.waker.take().wake_and_release();
  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  karx::Waker waker = w.waker.take();
  waker.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  karx::Waker(waker).wake_and_release();  // a consuming wake (of a clone)
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));

  handle.detach();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 6);

  std::move(waker).wake_and_release();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
}

// Detached before the throwing poll, woken from the stored waker: the run reports the
// exception once; the task goes with its last waker.
TEST_F(WakerPanic, DetachedThenWokenThrows) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 7));

  EXPECT_FALSE(run_checked(task));
  handle.detach();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  EXPECT_EQ(detached_calls(), 0);

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 7);

  w.waker.drop();
  EXPECT_TRUE(w.is(2, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
}

// Canceled by the handle while idle, before the throwing poll: the extra run destroys the
// future unpolled, the handle yields "canceled"; nothing is thrown or reported.
TEST_F(WakerPanic, CancelBeforeThrowingPoll) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 8));

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();

  handle.cancel();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));

  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value());
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));

  drop_now(waker);
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

}  // namespace
