// Basic lifecycle of a task: spawn, run, schedule, cancel, detach, tags and wakers.
//
// Ported from the behaviours of async-task's tests/basic.rs (the tag-era suite, plus the
// cases the later suite added), adapted to karx's contract (the normative API of the design brief):
// - dropping the JoinHandle detaches; JoinHandle::cancel() cancels;
// - Task::cancel() (and ~Task) destroys the future at once (async-task 1.x only closed it);
// - a handle that yielded lets go of the task at once (async-task kept it until dropped);
// - the output's destruction is counted too (basic.rs did not count it).
// Every step is followed by an exact check of every counter.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <optional>
#include <stdexcept>
#include <utility>

#include "support/channel.hpp"
#include "support/expect_counts.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::Chan;
using probes::Counts;
using probes::drop_now;
using probes::DropCounter;
using probes::ProbeFuture;
using probes::ready_future;
using probes::spawn_counted;
using probes::WakeCounter;

using TaskT = karx::Task<probes::ProbeTag>;

// A future that never completes.
ProbeFuture pending_future(Counts& c) { return ProbeFuture{&c, 1 << 30, 0}; }

// --- basic.rs: cancel_and_drop_handle / drop_and_detach ------------------------------------

TEST(Basic, CancelTaskThenDetachHandle) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));
  EXPECT_COUNTS(c);

  task.cancel();  // karx: the future is destroyed now
  EXPECT_FALSE(task);
  EXPECT_COUNTS(c, .future_drops = 1);

  task.cancel();  // an empty Task: nothing happens
  EXPECT_COUNTS(c, .future_drops = 1);

  handle.detach();  // the last owner: the block (schedule function, tag) is freed
  EXPECT_FALSE(handle);
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

TEST(Basic, DropTaskThenDropHandle) {
  Counts c;
  {
    auto [task, handle] = spawn_counted(c, ready_future(c));
    EXPECT_COUNTS(c);

    drop_now(task);  // ~Task is cancel()
    EXPECT_COUNTS(c, .future_drops = 1);
  }  // ~JoinHandle detaches: nothing else holds the task
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: detach_and_drop ----------------------------------------------------------------

TEST(Basic, DetachHandleThenDropTask) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.detach();
  EXPECT_COUNTS(c);

  drop_now(task);
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: drop_handle_and_run / run_and_drop_handle / detach_and_run --------------------

TEST(Basic, DetachHandleThenRun) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.detach();
  EXPECT_COUNTS(c);

  EXPECT_FALSE(task.run());
  EXPECT_FALSE(task);
  // Nobody will take the output: it is destroyed by the run, and so is the block.
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

TEST(Basic, DropHandleThenRun) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  drop_now(handle);  // ~JoinHandle detaches, it does not cancel
  EXPECT_COUNTS(c);

  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs (later suite): run_and_detach ----------------------------------------------------

TEST(Basic, RunThenDetachHandle) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  EXPECT_FALSE(task.run());
  // The output waits in the task for the handle.
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: cancel_and_run -------------------------------------------------------------------

TEST(Basic, HandleCancelThenDropHandleThenRun) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.cancel();  // the fresh Task counts as scheduled: no schedule call
  EXPECT_COUNTS(c);

  handle.detach();
  EXPECT_COUNTS(c);

  EXPECT_FALSE(task.run());  // destroys the future without polling it
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: run_and_cancel -------------------------------------------------------------------

TEST(Basic, RunThenHandleCancelThenDropHandle) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  handle.cancel();  // completed already: nothing to cancel
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  handle.detach();  // the output nobody took is destroyed with the block
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: cancel_and_poll ------------------------------------------------------------------

TEST(Basic, HandleCancelThenPollThenRunThenPoll) {
  Counts c;
  WakeCounter w;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  handle.cancel();
  EXPECT_COUNTS(c);

  // The future is not destroyed yet: the handle must not yield "canceled" before it is.
  EXPECT_TRUE(probes::poll_with(handle, w.waker()).is_pending());
  EXPECT_COUNTS(c);
  EXPECT_EQ(w.wakes(), 0);

  EXPECT_FALSE(task.run());  // destroys the future, wakes the handle
  EXPECT_COUNTS(c, .future_drops = 1);
  EXPECT_EQ(w.wakes(), 1);

  {
    auto r = probes::poll_with(handle, w.waker());
    ASSERT_TRUE(r.is_ready());
    EXPECT_FALSE(r.value().has_value());
  }
  // karx: the handle lets go of the task as soon as it yielded.
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);

  handle.detach();  // already empty
  EXPECT_COUNTS(c, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  EXPECT_EQ(w.wakes(), 1);
}

// --- basic.rs (later suite): cancel_join (poll before the run, then join) -------------------

TEST(Basic, PollThenRunThenJoin) {
  Counts c;
  WakeCounter w;
  auto [task, handle] = spawn_counted(c, ready_future(c));

  EXPECT_TRUE(probes::poll_with(handle, w.waker()).is_pending());
  EXPECT_COUNTS(c);

  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);
  EXPECT_EQ(w.wakes(), 1);  // the completion woke the awaiting handle

  {
    auto r = probes::poll_with(handle, w.waker());
    ASSERT_TRUE(r.is_ready());
    ASSERT_TRUE(r.value().has_value());
    EXPECT_EQ(r.value()->value, 7);
    // The output now lives in `r`; the task itself is gone.
    EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  }
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  EXPECT_EQ(w.wakes(), 1);
}

// --- basic.rs: schedule -------------------------------------------------------------------------

TEST(Basic, ScheduleHandsTheTaskToTheScheduleFunction) {
  Counts c;
  Chan queue;
  auto [task, handle] = spawn_counted(c, pending_future(c), &queue);
  EXPECT_EQ(queue.len(), 0u);

  task.schedule();
  EXPECT_FALSE(task);
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .schedules = 1);

  TaskT t = queue.recv();
  t.schedule();
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .schedules = 2);

  t = queue.recv();
  t.schedule();
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .schedules = 3);

  t = queue.recv();
  EXPECT_EQ(queue.len(), 0u);
  EXPECT_COUNTS(c, .schedules = 3);  // never polled, never woken

  t.cancel();
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1);
  handle.detach();
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: tag ------------------------------------------------------------------------------

// A movable tag the task and the handle can both change through their const accessors.
struct CounterTag {
  explicit CounterTag(int v, std::atomic<int>& drops) : n(v), drop(drops) {}
  CounterTag(CounterTag&& o) noexcept : n(o.n.load()), drop(std::move(o.drop)) {}
  mutable std::atomic<int> n;
  DropCounter drop;
};
using CounterTask = karx::Task<CounterTag>;

struct CounterSchedule {
  Counts* counts;
  probes::TaskChannel<CounterTask>* queue;
  bool bump_tag = false;  // schedule_counter: count the schedule calls in the tag
  DropCounter drop{counts->schedule_drops};

  void operator()(CounterTask task) const {
    counts->schedules.fetch_add(1, std::memory_order_relaxed);
    if (bump_tag) task.tag().n.fetch_add(1);
    queue->push(std::move(task));
  }
};

TEST(Basic, TagIsSharedByTaskAndHandle) {
  Counts c;
  probes::TaskChannel<CounterTask> queue;
  auto [task, handle] = karx::spawn(pending_future(c), CounterSchedule{&c, &queue}, CounterTag(7, c.tag_drops));
  EXPECT_EQ(task.tag().n.load(), 7);
  EXPECT_EQ(handle.tag().n.load(), 7);
  EXPECT_EQ(&task.tag(), &handle.tag());

  task.schedule();
  EXPECT_COUNTS(c, .schedules = 1);

  CounterTask t = queue.recv();
  EXPECT_EQ(queue.len(), 0u);
  handle.tag().n.fetch_add(1);
  t.schedule();
  EXPECT_COUNTS(c, .schedules = 2);

  t = queue.recv();
  EXPECT_EQ(t.tag().n.load(), 8);
  EXPECT_EQ(queue.len(), 0u);
  t.schedule();
  EXPECT_COUNTS(c, .schedules = 3);

  t = queue.recv();
  t.cancel();
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1);
  // The tag outlives the Task: the handle still reads it.
  EXPECT_EQ(handle.tag().n.load(), 8);
  handle.detach();
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: schedule_counter -----------------------------------------------------------------

TEST(Basic, ScheduleFunctionCountsInTheTag) {
  Counts c;
  probes::TaskChannel<CounterTask> queue;
  auto [task, handle] = karx::spawn(pending_future(c), CounterSchedule{&c, &queue, true}, CounterTag(0, c.tag_drops));

  task.schedule();
  EXPECT_EQ(handle.tag().n.load(), 1);
  EXPECT_COUNTS(c, .schedules = 1);

  queue.recv().schedule();
  EXPECT_EQ(handle.tag().n.load(), 2);
  EXPECT_COUNTS(c, .schedules = 2);

  queue.recv().schedule();
  EXPECT_EQ(handle.tag().n.load(), 3);
  EXPECT_COUNTS(c, .schedules = 3);

  queue.recv();  // the temporary Task is dropped: cancels
  EXPECT_EQ(queue.len(), 0u);
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1);
  handle.detach();
  EXPECT_COUNTS(c, .schedules = 3, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- basic.rs: drop_inside_schedule -------------------------------------------------------------

// Drops the Task it is given; checks, without touching itself afterwards, that it was not
// destroyed while it was still running.
struct DroppingSchedule {
  Counts* counts;
  DropCounter drop{counts->schedule_drops};

  void operator()(karx::Task<> task) const {
    Counts* c = counts;  // `this` is not used after the Task is gone
    c->schedules.fetch_add(1);
    drop_now(task);
    EXPECT_EQ(c->schedule_drops.load(), 0) << "the schedule function was destroyed while it was being called";
    EXPECT_EQ(c->future_drops.load(), 1);
  }
};

TEST(Basic, DropTaskInsideScheduleFunction) {
  Counts c;
  auto [task, handle] = karx::spawn(ready_future(c), DroppingSchedule{&c});
  handle.detach();
  EXPECT_COUNTS(c);

  task.schedule();  // the schedule function drops the last reference while it runs
  EXPECT_COUNTS(c, .schedules = 1, .future_drops = 1, .schedule_drops = 1);
}

// --- basic.rs: waker ----------------------------------------------------------------------------

TEST(Basic, WakersScheduleTheIdleTask) {
  Counts c;
  Chan queue;
  auto [task, handle] = spawn_counted(c, pending_future(c), &queue);
  EXPECT_EQ(queue.len(), 0u);

  karx::Waker w = task.waker();
  EXPECT_FALSE(task.run());  // pending, not woken while running
  EXPECT_EQ(queue.len(), 0u);
  EXPECT_COUNTS(c, .polls = 1);

  w.wake();  // idle: a new Task goes to the schedule function
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  w.wake();  // already scheduled: nothing happens
  EXPECT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_FALSE(queue.recv().run());
  EXPECT_EQ(queue.len(), 0u);
  EXPECT_COUNTS(c, .polls = 2, .schedules = 1);

  handle.waker().wake();  // the handle's waker wakes the task too
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 2, .schedules = 2);

  std::move(w).wake_and_release();  // scheduled already; the waker is given up
  EXPECT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 2, .schedules = 2);

  queue.recv().cancel();
  EXPECT_COUNTS(c, .polls = 2, .schedules = 2, .future_drops = 1);
  handle.detach();
  EXPECT_COUNTS(c, .polls = 2, .schedules = 2, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// A future that wakes its own task while it is being polled, `times` times, then completes.
struct SelfWakingFuture {
  Counts* counts;
  int times;
  DropCounter drop{counts->future_drops};

  karx::Poll<int> poll(karx::Context& cx) {
    counts->polls.fetch_add(1);
    if (times == 0) return karx::Poll<int>::ready(5);
    --times;
    cx.waker().wake();
    return karx::pending;
  }
};

TEST(Basic, RunReportsAWakeWhileRunning) {
  Counts c;
  Chan queue;
  auto [task, handle] = spawn_counted(c, SelfWakingFuture{&c, 2}, &queue);

  EXPECT_TRUE(task.run());  // woken while running: rescheduled once it returned
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_TRUE(queue.recv().run());
  ASSERT_EQ(queue.len(), 1u);
  EXPECT_COUNTS(c, .polls = 2, .schedules = 2);

  EXPECT_FALSE(queue.recv().run());  // completes
  EXPECT_EQ(queue.len(), 0u);
  EXPECT_COUNTS(c, .polls = 3, .schedules = 2, .future_drops = 1);

  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>(5));
  EXPECT_COUNTS(c, .polls = 3, .schedules = 2, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- misuse the original could not express (Rust's moves are checked at compile time) ---------

TEST(Basic, EmptyTaskAndHandleReportMisuse) {
  Counts c;
  auto [task, handle] = spawn_counted(c, ready_future(c));
  EXPECT_FALSE(task.run());
  EXPECT_THROW(task.run(), std::logic_error);
  EXPECT_THROW(task.schedule(), std::logic_error);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1);

  {
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready());
    ASSERT_TRUE(r.value().has_value());
  }
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
  EXPECT_THROW(probes::poll_once(handle), std::logic_error);  // a handle is awaited once
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

}  // namespace
