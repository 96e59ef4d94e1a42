// Waking a task whose future completes on its second poll (async-task's tests/waker_ready.rs).
//
// The future stores a clone of its context's waker at every poll, is pending the first time
// and ready with a counted Output the second. The test wakes the stored waker (wake(),
// wake_and_release(), clones) while the task is idle, running, canceled or completed, and
// checks exactly when the schedule function is called and when the future, the output, the
// schedule function and the tag are destroyed. As in the original (`let (task, _) = ...`),
// most tests drop the JoinHandle right away: the task is detached and its output discarded.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;

// Generous: only reached if the library deadlocks or loses a task.
constexpr auto kTimeout = 60s;

using Tag = probes::ProbeTag;
using TaskT = karx::Task<Tag>;

// --- helpers ------------------------------------------------------------------------------

// The queue the schedule function pushes to (the original's channel). Thread-safe.
class Chan {
 public:
  void push(TaskT task) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  std::size_t len() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }
  // The oldest queued task; an empty Task (and a test failure) if there is none.
  TaskT recv() {
    std::lock_guard lock(mu_);
    if (queue_.empty()) {
      ADD_FAILURE() << "nothing was scheduled";
      return TaskT{};
    }
    TaskT task = std::move(queue_.front());
    queue_.pop_front();
    return task;
  }

 private:
  mutable std::mutex mu_;
  std::deque<TaskT> queue_;
};

// Counts its calls and queues the Task in `chan`; counts its own destruction.
struct Sched {
  probes::Counts* counts;
  Chan* chan;
  probes::DropCounter drop{counts->schedule_drops};

  void operator()(TaskT task) const {
    counts->schedules.fetch_add(1);
    chan->push(std::move(task));
  }
};

// Lets the test hold a poll in progress: once armed, the next poll that passes the gate
// announces itself and waits until the test opens the gate.
class Gate {
 public:
  void arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  // Called by a future inside poll.
  void pass() {
    std::unique_lock lock(mu_);
    if (!armed_) return;
    armed_ = false;
    arrived_ = true;
    cv_.notify_all();
    if (!cv_.wait_for(lock, kTimeout, [this] { return open_; })) ADD_FAILURE() << "the gate was never opened";
  }
  // True once a poll waits at the gate (false after the timeout).
  [[nodiscard]] bool wait_arrived() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kTimeout, [this] { return arrived_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool arrived_ = false;
  bool open_ = false;
};

// Task::run(), which must never throw the future's exception.
bool run_checked(TaskT& task) {
  try {
    return task.run();
  } catch (...) {
    ADD_FAILURE() << "Task::run() threw";
    return false;
  }
}

// Runs a task on another thread (its poll may wait at the gate).
class Background {
 public:
  Background(Gate& gate, TaskT task) : gate_(gate) {
    thread_ = std::thread([this, t = std::move(task)]() mutable { woken_ = run_checked(t); });
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() { finish(); }

  // Opens the gate, waits for the run to return; returns what run() returned.
  bool finish() {
    gate_.open();
    if (thread_.joinable()) thread_.join();
    return woken_;
  }

 private:
  Gate& gate_;
  bool woken_ = false;
  std::thread thread_;
};

// A waker for awaiting a JoinHandle that counts how often it was woken.
class Signal {
 public:
  karx::Waker waker() const {
    return karx::waker_fn([s = state_] {
      std::lock_guard lock(s->mu);
      ++s->count;
    });
  }
  int count() const {
    std::lock_guard lock(state_->mu);
    return state_->count;
  }

 private:
  struct State {
    std::mutex mu;
    int count = 0;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Where the futures keep the waker of their latest poll (the original's global WAKER).
class WakerSlot {
 public:
  // Keeps a clone of `waker`, dropping the previous one (outside the lock).
  void store(const karx::Waker& waker) {
    std::optional<karx::Waker> fresh(std::in_place, waker);
    std::lock_guard lock(mu_);
    slot_.swap(fresh);
  }
  // Takes the stored waker out; a no-op waker (and a test failure) if there is none.
  karx::Waker take() {
    std::lock_guard lock(mu_);
    if (!slot_) {
      ADD_FAILURE() << "no waker was stored";
      return karx::noop_waker();
    }
    karx::Waker w = std::move(*slot_);
    slot_.reset();
    return w;
  }
  // Drops the stored waker.
  void drop() { (void)take(); }

 private:
  std::mutex mu_;
  std::optional<karx::Waker> slot_;
};

// Drops `waker` now.
void release(karx::Waker& waker) { karx::Waker gone = std::move(waker); }

// Everything a test counts. Declared before the task, so it outlives it.
struct World {
  probes::Counts counts;
  Chan chan;
  WakerSlot waker;
  Gate gate;

  template <class F>
  auto spawn(F future) {
    return karx::spawn(std::move(future), Sched{&counts, &chan}, Tag{1, probes::DropCounter(counts.tag_drops)});
  }

  // is(polls, schedules, future drops, output drops, schedule-function drops, tag drops, queued)
  ::testing::AssertionResult is(int polls, int schedules, int future_drops, int output_drops, int schedule_drops,
                                int tag_drops, std::size_t queued) const {
    std::string bad;
    auto check = [&bad](const char* name, long long got, long long want) {
      if (got != want)
        bad += std::string(" ") + name + "=" + std::to_string(got) + " (want " + std::to_string(want) + ")";
    };
    check("polls", counts.polls.load(), polls);
    check("schedules", counts.schedules.load(), schedules);
    check("future_drops", counts.future_drops.load(), future_drops);
    check("output_drops", counts.output_drops.load(), output_drops);
    check("schedule_drops", counts.schedule_drops.load(), schedule_drops);
    check("tag_drops", counts.tag_drops.load(), tag_drops);
    check("queued", static_cast<long long>(chan.len()), static_cast<long long>(queued));
    if (bad.empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "unexpected:" << bad;
  }
};

// --- the future ----------------------------------------------------------------------------

// Pending at the first poll, ready with Output{42} at the second. Each poll stores a clone of
// its waker in `slot`, counts itself, then waits at the gate if it is armed.
struct ReadyOnSecondPoll {
  probes::Counts* counts;
  WakerSlot* slot;
  Gate* gate;
  bool polled = false;
  probes::DropCounter drop{counts->future_drops};

  karx::Poll<probes::Output> poll(karx::Context& cx) {
    slot->store(cx.waker());
    counts->polls.fetch_add(1);
    gate->pass();
    if (!polled) {
      polled = true;
      return karx::pending;
    }
    return karx::Poll<probes::Output>::ready(probes::Output{42, probes::DropCounter(counts->output_drops)});
  }
};

ReadyOnSecondPoll ready_future(World& w) { return ReadyOnSecondPoll{&w.counts, &w.waker, &w.gate}; }

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
  release(first);
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  TaskT again = w.chan.recv();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 0));

  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));

  karx::Waker second = w.waker.take();
  second.wake();
  EXPECT_TRUE(w.is(2, 1, 1, 1, 0, 0, 0));
  release(second);
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
  release(original);
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

  release(w2);
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

  w.gate.arm();
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
  release(waker);
  EXPECT_TRUE(w.is(2, 1, 1, 1, 1, 1, 0));
}

}  // namespace
