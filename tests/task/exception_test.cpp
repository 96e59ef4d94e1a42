// Exceptions escaping a future (async-task's tests/panic.rs, adapted to karx's semantics).
//
// In async-task a panic in poll propagates out of `run()` and the JoinHandle yields None.
// In karx an exception escaping poll becomes the task's output instead: `run()` never throws
// it, awaiting the JoinHandle rethrows it, a canceled task's handle yields "canceled" (nullopt,
// or false for void) even if the future threw, and a detached task's exception goes to the
// detached-exception handler, exactly once.
//
// The originals order threads with sleeps. Here a future that waits at a `Gate` inside its
// poll lets the test act while the task is running, then releases it: every step is
// deterministic and every count is exact.
#include <gtest/gtest.h>

#include <coroutine>
#include <exception>
#include <stdexcept>
#include <string>
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
using probes::run_checked;
using probes::WakeCounter;
using probes::World;

using TaskT = karx::Task<probes::ProbeTag>;

// Records the detached exceptions of each test (installs the handler, restores the previous one).
class Exception : public probes::DetachedRecordingTest {};

// Awaits `handle` once; expects it to rethrow Boom(id).
template <class H>
void expect_rethrows(H& handle, int id, const karx::Waker& waker = karx::noop_waker()) {
  try {
    auto r = probes::poll_with(handle, waker);
    ADD_FAILURE() << "the handle returned (" << (r.is_ready() ? "ready" : "pending") << ") instead of rethrowing";
  } catch (const Boom& b) {
    EXPECT_EQ(b.id, id);
  } catch (...) {
    ADD_FAILURE() << "the handle threw something other than Boom";
  }
}

// Awaiting a handle that already yielded is misuse.
template <class H>
void expect_spent(H& handle) {
  EXPECT_FALSE(static_cast<bool>(handle));
  EXPECT_THROW((void)probes::poll_once(handle), std::logic_error);
}

// --- futures ---------------------------------------------------------------------------------

// Throws Boom(id) from its first poll (after waiting at the gate, if armed).
probes::GatedFuture<void> throwing_future(World& w, int id) { return {&w.counts, &w.gate, probes::Then::fail, 0, id}; }

// Throws a value that is no std::exception.
struct ThrowingInt {
  probes::Counts* counts;
  int value;
  probes::DropCounter drop{counts->future_drops};

  karx::Poll<int> poll(karx::Context&) {
    counts->polls.fetch_add(1);
    throw value;
  }
};

// A coroutine that awaits a probe future (pending once), then throws.
karx::Async<int> throw_after_await(probes::Counts* counts, karx::Waker* slot, int id) {
  probes::Output out = co_await probes::ProbeFuture{counts, 1, id, false, slot};
  if (out.value == id) throw Boom(out.value);
  co_return out.value;
}

// --- panic.rs ------------------------------------------------------------------------------

// The handle cancels (and is then dropped) while the throwing poll runs: the exception is
// discarded, not reported, and the task is freed when the run returns.
TEST_F(Exception, CancelDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 1));

  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  handle.cancel();  // running: nothing to schedule, the run will close it
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// Run, then await: run() returns normally, the handle rethrows; nothing is reported.
TEST_F(Exception, RunAndJoin) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 2));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));

  expect_rethrows(handle, 2);
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Same with a value-returning future (the shared probe): the handle is a JoinHandle<Output>.
TEST_F(Exception, RunAndJoinWithValueOutput) {
  World w;
  auto [task, handle] = w.spawn(probes::ProbeFuture{&w.counts, 0, 7, true});

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));

  try {
    (void)probes::poll_once(handle);
    ADD_FAILURE() << "the handle did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "probe failure");
  }
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Await (pending), run, await again: the awaiting waker is woken once and the handle rethrows.
TEST_F(Exception, TryJoinAndRunAndJoin) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 3));
  WakeCounter awaiter;

  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 0);

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 1);

  expect_rethrows(handle, 3, awaiter.new_waker());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(awaiter.wakes(), 1);
  EXPECT_EQ(detached_calls(), 0);
}

// The handle is awaited while the poll runs on another thread; the completion wakes it and
// the next await rethrows.
TEST_F(Exception, JoinDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 4));
  WakeCounter awaiter;

  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 1);

  expect_rethrows(handle, 4, awaiter.new_waker());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Awaited (pending) during the run, then dropped: the exception has no taker and is reported.
TEST_F(Exception, TryJoinDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 5));
  WakeCounter awaiter;

  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 5);
}

// The handle is dropped (detached) while the poll runs: the run reports the exception once.
TEST_F(Exception, DropHandleDuringRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 6));

  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 6);
}

// --- beyond panic.rs: the rest of the exception contract ------------------------------------

// Canceled by the handle while the poll runs, and the future then throws: the handle is
// woken, yields "canceled" (false for void) rather than rethrowing; nothing is reported.
TEST_F(Exception, CancelDuringRunThenAwaitYieldsCanceled) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 7));
  WakeCounter awaiter;

  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  handle.cancel();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  // The future is not destroyed yet: the handle must not resolve.
  EXPECT_TRUE(probes::poll_with(handle, awaiter.new_waker()).is_pending());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.wakes(), 1);

  auto r = probes::poll_with(handle, awaiter.new_waker());
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Detached before the first run: the run reports the exception, once.
TEST_F(Exception, DetachBeforeRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 8));

  handle.detach();
  EXPECT_FALSE(static_cast<bool>(handle));
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 8);
}

// Detached after the task threw, without awaiting: the detach reports it, once.
TEST_F(Exception, DetachAfterRun) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 9));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(detached_calls(), 0);

  {
    auto dropped = std::move(handle);
  }
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 1);
  EXPECT_EQ(detached_boom_id(), 9);
}

// JoinHandle::cancel() after completion does nothing: the exception is still delivered.
TEST_F(Exception, CancelAfterCompletionStillRethrows) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 10));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));

  expect_rethrows(handle, 10);
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// Canceled by the handle before the first run (a fresh task counts as scheduled, so no
// schedule call): the run destroys the future unpolled and the handle yields "canceled".
TEST_F(Exception, CancelBeforeRunNeverPolls) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 11));

  handle.cancel();
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(0, 0, 1, 0, 0, 0, 0));

  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value());
  EXPECT_TRUE(w.is(0, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// Canceled by the Task (dropped unrun) while detached: the future is destroyed, nothing thrown
// and nothing reported.
TEST_F(Exception, DropTaskWhileDetachedReportsNothing) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 12));

  handle.detach();
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));

  {
    auto dropped = std::move(task);
  }
  EXPECT_TRUE(w.is(0, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// An exception that is no std::exception is kept as is: the handle rethrows the same int.
TEST_F(Exception, NonStdExceptionIsRethrownAsIs) {
  World w;
  auto [task, handle] = w.spawn(ThrowingInt{&w.counts, 42});

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));

  try {
    (void)probes::poll_once(handle);
    ADD_FAILURE() << "the handle did not rethrow";
  } catch (int v) {
    EXPECT_EQ(v, 42);
  } catch (...) {
    ADD_FAILURE() << "the handle threw something other than the int";
  }
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// ... and a detached one reaches the handler as that same int.
TEST_F(Exception, DetachedNonStdExceptionReachesHandler) {
  World w;
  auto [task, handle] = w.spawn(ThrowingInt{&w.counts, 43});
  handle.detach();

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  ASSERT_EQ(detached_calls(), 1);
  std::exception_ptr e = probes::detached_last();
  try {
    std::rethrow_exception(e);
  } catch (int v) {
    EXPECT_EQ(v, 43);
  } catch (...) {
    ADD_FAILURE() << "the handler got something other than the int";
  }
}

// An exception thrown by an Async coroutine after a suspension: run() returns normally and
// the handle rethrows it.
TEST_F(Exception, AsyncCoroutineExceptionReachesTheHandle) {
  World w;
  karx::Waker slot = karx::noop_waker();
  auto [task, handle] = w.spawn(throw_after_await(&w.counts, &slot, 13));

  EXPECT_FALSE(run_checked(task));  // the awaited probe future is pending once
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  slot.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));  // the probe is ready, then the coroutine throws
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  expect_rethrows(handle, 13);
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));  // `slot` still holds a waker of the task

  slot = karx::noop_waker();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

// The default handler (restored by passing nullptr) prints the exception to stderr.
TEST_F(Exception, DefaultHandlerPrintsToStderr) {
  World w;
  EXPECT_EQ(karx::set_detached_exception_handler(nullptr), &probes::record_detached);
  auto [task, handle] = w.spawn(throwing_future(w, 14));
  handle.detach();

  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(run_checked(task));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("boom 14"), std::string::npos) << "stderr was: " << err;
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

}  // namespace
