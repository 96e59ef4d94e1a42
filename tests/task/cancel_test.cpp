// Canceling through the JoinHandle: before, during and after a run.
//
// Ported from the behaviours of async-task's tests/cancel.rs (whose `task.cancel().await`
// is karx's `handle.cancel()` followed by awaiting the handle), adapted to karx's contract
// (the normative API of the design brief):
// - JoinHandle::cancel() schedules the task once more if it is idle, that run destroys the
//   future, and the handle yields std::nullopt only after the future's destructor ran;
// - a fresh Task counts as scheduled: canceling before its first run calls no schedule function;
// - after completion, cancel() does nothing and the output is still delivered;
// - a canceled task's handle yields "canceled" even if the future also threw.
// The Rust suite made a poll last 400 ms and ordered threads with sleeps; here the future blocks
// on a gate the test opens, so the cancel provably lands while the poll is running, and each
// check runs after the event it depends on has been synchronized with (a wake, a join).
// CancelRacesWithRun keeps a real race on purpose, bounded, and checks outcome-consistent counts.
#include <gtest/gtest.h>

#include <barrier>
#include <coroutine>
#include <optional>
#include <thread>
#include <utility>

#include "support/channel.hpp"
#include "support/detached.hpp"
#include "support/expect_counts.hpp"
#include "support/gate.hpp"
#include "support/gated_future.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::Background;
using probes::block_on;
using probes::Chan;
using probes::Counts;
using probes::Gate;
using probes::ProbeFuture;
using probes::ready_future;
using probes::spawn_counted;
using probes::Then;
using probes::WakeCounter;

// Polled once: waits at the gate, then is ready with Output{7}, throws, or stays pending
// (after waking its own task, with wake_self_then_pending).
using GatedFuture = probes::GatedFuture<probes::Output>;

// --- cancel.rs: run_and_cancel ------------------------------------------------------------------

TEST(Cancel, RunThenCancelStillDeliversTheOutput) {
  Counts c;
  WakeCounter p;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  handle.cancel();  // completed: does nothing
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  {
    std::optional<probes::Output> out = block_on(handle, p);
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(out->value, 7);
    EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  }
  EXPECT_EQ(p.wakes(), 0);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- cancel.rs: cancel_and_run ------------------------------------------------------------------

TEST(Cancel, CancelBeforeFirstRunThenRunOnAnotherThread) {
  Counts c;
  WakeCounter p;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.cancel();  // the fresh Task counts as scheduled: no schedule call
  EXPECT_COUNTS(c);

  // The future is alive until the due run destroys it: the handle must wait for that.
  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_EQ(p.wakes(), 0);
  EXPECT_COUNTS(c);

  std::jthread runner([t = std::move(task)]() mutable { EXPECT_FALSE(t.run()); });
  ASSERT_TRUE(p.wait_for_wakes(1));
  runner.join();
  EXPECT_COUNTS(c, .future_drops = 1);  // destroyed, never polled

  EXPECT_EQ(block_on(handle, p), std::nullopt);
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// The idle case the fresh-task rule does not cover: cancel schedules the task exactly once more.
TEST(Cancel, CancelIdleTaskSchedulesItOnceMore) {
  Counts c;
  WakeCounter p;
  Chan q;
  auto [task, handle] = spawn_counted(c, ProbeFuture{&c, 1, 7}, &q);

  karx::Waker w = task.waker();
  EXPECT_FALSE(task.run());  // pending: the task is idle now
  EXPECT_EQ(q.len(), 0u);
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();
  EXPECT_EQ(q.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  handle.cancel();  // already canceled: no second schedule
  w.wake();         // a canceled task is not scheduled by wakes either
  EXPECT_EQ(q.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());  // the future is still alive
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_FALSE(q.recv().run());  // destroys the future instead of polling it
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_EQ(q.len(), 0u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1, .future_drops = 1);

  EXPECT_EQ(block_on(handle, p), std::nullopt);
  // The waker still holds the block; the handle is done with it.
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1, .future_drops = 1);
  w = karx::noop_waker();
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- cancel.rs: cancel_during_run ---------------------------------------------------------------

TEST(Cancel, CancelDuringRun) {
  Counts c;
  WakeCounter p;
  Gate gate;
  auto [task, handle] = spawn_counted(c, GatedFuture{&c, &gate});
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();  // running: no schedule call; the run in progress will finish the job
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());  // the poll is still running
  EXPECT_EQ(p.wakes(), 0);
  EXPECT_COUNTS(c, .polls = 1);

  gate.open();  // the poll completes; the canceled task drops its output and wakes the handle
  ASSERT_TRUE(p.wait_for_wakes(1));
  {
    auto r = probes::poll_with(handle, p.waker());
    ASSERT_TRUE(r.is_ready());
    EXPECT_FALSE(r.value().has_value());
  }
  // Guaranteed once the handle yielded "canceled": the future is gone, it was polled once and
  // nothing was scheduled. (When the run drops the output and its reference relative to the
  // wake is not part of the contract: those are checked once the run has returned.)
  EXPECT_EQ(c.polls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.schedules.load(), 0);
  EXPECT_FALSE(runner.finish());
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// The contract: canceled wins over a failure: the handle yields nullopt, nothing is rethrown or reported.
TEST(Cancel, CancelDuringRunThatThrows) {
  probes::DetachedRecorder reported;
  Counts c;
  WakeCounter p;
  Gate gate;
  auto [task, handle] = spawn_counted(c, GatedFuture{&c, &gate, Then::fail});
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());

  handle.cancel();
  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_COUNTS(c, .polls = 1);

  gate.open();
  ASSERT_TRUE(p.wait_for_wakes(1));
  bool has_value = true;
  EXPECT_NO_THROW(has_value = block_on(handle, p).has_value());
  EXPECT_FALSE(has_value);
  EXPECT_EQ(c.polls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  runner.finish();
  EXPECT_EQ(probes::detached_calls(), 0);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// Canceled while a poll that returns pending is running: that run destroys the future itself
// (nobody else could: the poll was using it) and does not reschedule, even if the future woke
// its own task during the poll.
void cancel_during_pending_run(Then then, bool wake_self_first = false) {
  Counts c;
  WakeCounter p;
  Gate gate;
  auto [task, handle] =
      spawn_counted(c, GatedFuture{.counts = &c, .gate = &gate, .then = then, .wake_self_first = wake_self_first});
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_EQ(p.wakes(), 0);
  EXPECT_COUNTS(c, .polls = 1);

  gate.open();
  ASSERT_TRUE(p.wait_for_wakes(1));
  EXPECT_EQ(block_on(handle, p), std::nullopt);
  EXPECT_EQ(c.polls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_EQ(c.schedules.load(), 0);

  EXPECT_FALSE(runner.finish());  // canceled: not rescheduled, whatever woke it
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

TEST(Cancel, CancelDuringPendingRun) { cancel_during_pending_run(Then::pending); }

TEST(Cancel, CancelDuringPendingRunThatWokeItself) { cancel_during_pending_run(Then::wake_self_then_pending); }

// Woken (marked for a reschedule) and then canceled while running: no reschedule either.
TEST(Cancel, WakeThenCancelDuringPendingRun) { cancel_during_pending_run(Then::pending, true); }

// The handle cancels, then the Task is dropped instead of run: the future goes exactly once.
TEST(Cancel, HandleCancelThenTaskCancel) {
  Counts c;
  WakeCounter p;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.cancel();
  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_COUNTS(c);

  task.cancel();
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .future_drops = 1);

  EXPECT_EQ(block_on(handle, p), std::nullopt);
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// Cancel, then detach before the due run: that run still destroys the future and frees all.
TEST(Cancel, CancelThenDetachThenRun) {
  Counts c;
  Chan q;
  auto [task, handle] = spawn_counted(c, ProbeFuture{&c, 1, 7}, &q);
  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();
  EXPECT_EQ(q.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_FALSE(q.recv().run());
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- A bounded real race: cancel while another thread runs the task ---------------------------

TEST(Cancel, CancelRacesWithRun) {
  constexpr int kRounds = 200;
  int canceled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(testing::Message() << "round " << round);
    Counts c;
    WakeCounter p;
    bool delivered = false;
    {
      auto [task, handle] = spawn_counted(c, ready_future(c));
      std::barrier start(2);
      std::jthread runner([&start, t = std::move(task)]() mutable {
        start.arrive_and_wait();
        EXPECT_FALSE(t.run());
      });
      start.arrive_and_wait();
      handle.cancel();
      std::optional<probes::Output> out = block_on(handle, p);
      delivered = out.has_value();
      // Whichever won, the future is gone by the time the handle yields.
      EXPECT_EQ(c.future_drops.load(), 1);
      runner.join();
      EXPECT_EQ(c.schedules.load(), 0);  // never idle: fresh (scheduled), running or completed
      if (out.has_value()) {
        // The run completed before the cancel: the output is delivered.
        EXPECT_EQ(out->value, 7);
        EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
      } else {
        ++canceled;
        // Canceled before the poll (never polled) or during it (its output was dropped).
        const int polls = c.polls.load();
        EXPECT_TRUE(polls == 0 || polls == 1);
        EXPECT_COUNTS(c, .polls = polls, .future_drops = 1, .output_drops = polls, .schedule_drops = 1, .tag_drops = 1);
      }
    }
    if (delivered) EXPECT_EQ(c.output_drops.load(), 1);  // the delivered output is gone with `out`
    if (testing::Test::HasFailure()) return;
  }
  RecordProperty("canceled_rounds", canceled);
}

}  // namespace
