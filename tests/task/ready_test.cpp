// A future that completes while the handle is canceled, awaited, polled once or dropped.
//
// Ported from the behaviours of async-task's tests/ready.rs (tag-era suite), adapted to karx's
// contract (the normative API of the design brief): dropping the handle detaches;
// JoinHandle::cancel() during the run leaves the future to that run, which drops the output it
// produced.
// The Rust suite's future slept 200 ms inside poll and the test thread slept 100 ms to land in
// the middle; here the future waits at a gate the test opens, so the handle provably acts while
// the poll is running. Counts are checked exactly after every step; a count whose timing
// relative to a wake is not part of the contract is checked once the run has returned.
#include <gtest/gtest.h>

#include <coroutine>
#include <utility>

#include "support/channel.hpp"
#include "support/expect_counts.hpp"
#include "support/gate.hpp"
#include "support/gated_future.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::Background;
using probes::Counts;
using probes::drop_now;
using probes::Gate;
using probes::WakeCounter;

// ready.rs's future: polled once, it waits (at the gate) and then is ready with Output{7}.
auto spawn_gated(Counts& c, Gate& gate) {
  return probes::spawn_counted(c, probes::GatedFuture<probes::Output>{&c, &gate});
}

// --- ready.rs: cancel_during_run ----------------------------------------------------------------

TEST(Ready, CancelDuringRun) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();  // running: the run in progress finishes the job; no schedule call
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_FALSE(runner.finish());  // the poll completed; the task was canceled: its output is dropped at once
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: join_during_run ------------------------------------------------------------------

TEST(Ready, JoinDuringRun) {
  Counts c;
  WakeCounter p;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_EQ(p.wakes(), 0);
  EXPECT_COUNTS(c, .polls = 1);

  gate.open();
  ASSERT_TRUE(p.wait_for_wakes(1));  // the completion wakes the awaiting handle
  {
    auto r = probes::poll_with(handle, p.waker());
    ASSERT_TRUE(r.is_ready());
    ASSERT_TRUE(r.value().has_value());
    EXPECT_EQ(r.value()->value, 7);
    // Completed means the future is gone; the output now lives in `r`.
    EXPECT_EQ(c.polls.load(), 1);
    EXPECT_EQ(c.future_drops.load(), 1);
    EXPECT_EQ(c.output_drops.load(), 0);
    EXPECT_EQ(c.schedules.load(), 0);
  }
  EXPECT_EQ(c.output_drops.load(), 1);

  EXPECT_FALSE(runner.finish());
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: try_join_during_run --------------------------------------------------------------

TEST(Ready, TryJoinThenDetachDuringRun) {
  Counts c;
  WakeCounter p;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());

  // One poll that gives up when pending (async-task: select with a ready future).
  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_COUNTS(c, .polls = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_FALSE(runner.finish());  // nobody takes the output: the run drops it and frees the block
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: drop_handle_during_run -----------------------------------------------------------

TEST(Ready, DropHandleDuringRun) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());
  EXPECT_COUNTS(c, .polls = 1);

  drop_now(handle);  // ~JoinHandle detaches
  EXPECT_FALSE(handle);
  EXPECT_COUNTS(c, .polls = 1);

  EXPECT_FALSE(runner.finish());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// karx: canceling after the run completed does nothing; the output is still delivered.
TEST(Ready, CancelAfterRunCompletedDeliversOutput) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Background runner(gate, std::move(task));
  ASSERT_TRUE(gate.wait_arrived());

  runner.finish();
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  handle.cancel();
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  {
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready());
    ASSERT_TRUE(r.value().has_value());
    EXPECT_EQ(r.value()->value, 7);
    EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  }
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

}  // namespace
