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

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;
using probes::Counts;
using probes::DropCounter;
using probes::ProbeFuture;
using probes::ProbeTag;

struct Expect {
  int polls = 0;
  int schedules = 0;
  int future_drops = 0;
  int output_drops = 0;
  int schedule_drops = 0;
  int tag_drops = 0;
};

void expect_counts(const Counts& c, const Expect& e, int line) {
  SCOPED_TRACE(testing::Message() << "counts checked at line " << line);
  EXPECT_EQ(c.polls.load(), e.polls) << "polls";
  EXPECT_EQ(c.schedules.load(), e.schedules) << "schedule calls";
  EXPECT_EQ(c.future_drops.load(), e.future_drops) << "future destructions";
  EXPECT_EQ(c.output_drops.load(), e.output_drops) << "output destructions";
  EXPECT_EQ(c.schedule_drops.load(), e.schedule_drops) << "schedule-function destructions";
  EXPECT_EQ(c.tag_drops.load(), e.tag_drops) << "tag destructions";
}
#define EXPECT_COUNTS(counts, ...) expect_counts((counts), Expect{__VA_ARGS__}, __LINE__)

using Tag = ProbeTag;
using TaskT = karx::Task<Tag>;

// Counts calls and pushes the Task onto `queue` (under a lock: wakes may come from any thread).
struct TagSchedule {
  Counts* counts;
  std::deque<TaskT>* queue = nullptr;
  std::mutex* lock = nullptr;
  DropCounter drop{counts->schedule_drops};

  void operator()(TaskT task) const {
    counts->schedules.fetch_add(1, std::memory_order_relaxed);
    if (queue != nullptr) {
      std::lock_guard guard(*lock);
      queue->push_back(std::move(task));
    }
  }
};

struct Queue {
  std::mutex lock;
  std::deque<TaskT> tasks;

  std::size_t size() {
    std::lock_guard guard(lock);
    return tasks.size();
  }
  TaskT pop() {
    std::lock_guard guard(lock);
    if (tasks.empty()) throw std::logic_error("the run queue is empty");
    TaskT t = std::move(tasks.front());
    tasks.pop_front();
    return t;
  }
};

template <class F>
auto spawn_counted(Counts& c, F future, Queue* q = nullptr) {
  return karx::spawn(std::move(future), TagSchedule{&c, q ? &q->tasks : nullptr, q ? &q->lock : nullptr},
                     Tag{0, DropCounter(c.tag_drops)});
}

ProbeFuture ready_future(Counts& c) { return ProbeFuture{&c, 0, 7}; }

// A waker that counts its wakes (from any thread) and lets a thread wait for them.
class Parker {
 public:
  const karx::Waker& waker() const { return waker_; }
  int wakes() const {
    std::lock_guard lock(s_->m);
    return s_->wakes;
  }
  bool wait_for_wakes(int n) const {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, 60s, [&] { return s_->wakes >= n; });
  }

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv;
    int wakes = 0;
  };
  std::shared_ptr<State> s_ = std::make_shared<State>();
  karx::Waker waker_ = karx::waker_fn([s = s_] {
    std::lock_guard lock(s->m);
    ++s->wakes;
    s->cv.notify_all();
  });
};

template <class F>
karx::output_of<F> block_on(F& f, const Parker& parker) {
  for (;;) {
    const int seen = parker.wakes();
    auto r = probes::poll_with(f, parker.waker());
    if (r.is_ready()) return std::move(r).value();
    if (!parker.wait_for_wakes(seen + 1)) throw std::runtime_error("block_on: no wake for 60 s");
  }
}

// A one-shot rendezvous: the polled future announces it is inside poll, then waits for the
// test to open the gate. Waits are bounded (a hang fails the test instead of the whole run).
class Gate {
 public:
  void enter_and_wait() {
    std::unique_lock lock(m_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, 60s, [&] { return open_; });
  }
  bool wait_entered() {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, 60s, [&] { return entered_; });
  }
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool open_ = false;
};

// What a GatedFuture does once the gate opens.
enum class Then { ready, fail, pending, wake_self_then_pending };

// Polled once: waits at the gate, then is ready with Output{7}, throws, or stays pending
// (after waking its own task, with wake_self_then_pending).
struct GatedFuture {
  Counts* counts;
  Gate* gate;
  Then then = Then::ready;
  bool wake_self_first = false;  // wake its own task before waiting at the gate
  DropCounter drop{counts->future_drops};

  karx::Poll<probes::Output> poll(karx::Context& cx) {
    counts->polls.fetch_add(1);
    if (wake_self_first) cx.waker().wake();
    gate->enter_and_wait();
    switch (then) {
      case Then::ready:
        break;
      case Then::fail:
        throw std::runtime_error("gated failure");
      case Then::wake_self_then_pending:
        cx.waker().wake();
        [[fallthrough]];
      case Then::pending:
        return karx::pending;
    }
    return karx::Poll<probes::Output>::ready(probes::Output{7, DropCounter(counts->output_drops)});
  }
};

// Runs `task` on its own thread; the gate is opened (and the thread joined) at the latest when
// this goes out of scope, so a failing assertion cannot leave a thread blocked.
class Runner {
 public:
  Runner(TaskT task, Gate& gate) : gate_(gate), thread_([t = std::move(task), this]() mutable { woken_ = t.run(); }) {}
  ~Runner() { join(); }
  void join() {
    gate_.open();
    if (thread_.joinable()) thread_.join();
  }
  bool woken() const { return woken_; }

 private:
  Gate& gate_;
  bool woken_ = false;
  std::thread thread_;
};

// Counts the exceptions reported for tasks whose result nobody will take.
std::atomic<int> detached_exceptions{0};
class DetachedExceptionCounter {
 public:
  DetachedExceptionCounter()
      : previous_(karx::set_detached_exception_handler(
            [](std::exception_ptr) noexcept { detached_exceptions.fetch_add(1); })) {
    detached_exceptions.store(0);
  }
  ~DetachedExceptionCounter() { karx::set_detached_exception_handler(previous_); }

 private:
  karx::detached_exception_handler previous_;
};

// --- cancel.rs: run_and_cancel ------------------------------------------------------------------

TEST(Cancel, RunThenCancelStillDeliversTheOutput) {
  Counts c;
  Parker p;
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
  Parker p;
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
  Parker p;
  Queue q;
  auto [task, handle] = spawn_counted(c, ProbeFuture{&c, 1, 7}, &q);

  karx::Waker w = task.waker();
  EXPECT_FALSE(task.run());  // pending: the task is idle now
  EXPECT_EQ(q.size(), 0u);
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();
  EXPECT_EQ(q.size(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  handle.cancel();  // already canceled: no second schedule
  w.wake();         // a canceled task is not scheduled by wakes either
  EXPECT_EQ(q.size(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());  // the future is still alive
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_FALSE(q.pop().run());  // destroys the future instead of polling it
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_EQ(q.size(), 0u);
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
  Parker p;
  Gate gate;
  auto [task, handle] = spawn_counted(c, GatedFuture{&c, &gate});
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(gate.wait_entered());
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
  runner.join();
  EXPECT_FALSE(runner.woken());
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// The contract: canceled wins over a failure: the handle yields nullopt, nothing is rethrown or reported.
TEST(Cancel, CancelDuringRunThatThrows) {
  DetachedExceptionCounter reported;
  Counts c;
  Parker p;
  Gate gate;
  auto [task, handle] = spawn_counted(c, GatedFuture{&c, &gate, Then::fail});
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(gate.wait_entered());

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
  runner.join();
  EXPECT_EQ(detached_exceptions.load(), 0);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// Canceled while a poll that returns pending is running: that run destroys the future itself
// (nobody else could: the poll was using it) and does not reschedule, even if the future woke
// its own task during the poll.
void cancel_during_pending_run(Then then, bool wake_self_first = false) {
  Counts c;
  Parker p;
  Gate gate;
  auto [task, handle] = spawn_counted(c, GatedFuture{&c, &gate, then, wake_self_first});
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(gate.wait_entered());
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

  runner.join();
  EXPECT_FALSE(runner.woken());  // canceled: not rescheduled, whatever woke it
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
  Parker p;
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
  Queue q;
  auto [task, handle] = spawn_counted(c, ProbeFuture{&c, 1, 7}, &q);
  EXPECT_FALSE(task.run());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();
  EXPECT_EQ(q.size(), 1u);
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1);

  EXPECT_FALSE(q.pop().run());
  EXPECT_COUNTS(c, .polls = 1, .schedules = 1, .future_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- A bounded real race: cancel while another thread runs the task ---------------------------

TEST(Cancel, CancelRacesWithRun) {
  constexpr int kRounds = 200;
  int canceled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(testing::Message() << "round " << round);
    Counts c;
    Parker p;
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
