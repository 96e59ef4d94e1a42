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

// Pending forever. Each poll stores a clone of its waker in `slot`, counts itself, then waits
// at the gate if it is armed.
struct PendingFuture {
  probes::Counts* counts;
  WakerSlot* slot;
  Gate* gate;
  probes::DropCounter drop{counts->future_drops};

  karx::Poll<void> poll(karx::Context& cx) {
    slot->store(cx.waker());
    counts->polls.fetch_add(1);
    gate->pass();
    return karx::pending;
  }
};

PendingFuture pending_future(World& w) { return PendingFuture{&w.counts, &w.waker, &w.gate}; }

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

  w.gate.arm();
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
  release(waker);
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

  w.gate.arm();
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

  w.gate.arm();
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

  w.gate.arm();
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

  release(waker);
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

  release(from_handle);
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

  release(waker);
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
  Signal awaiter;

  EXPECT_FALSE(run_checked(task));
  karx::Waker waker = w.waker.take();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  handle.cancel();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
  EXPECT_EQ(awaiter.count(), 0);

  waker.wake();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(1, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 1);

  auto r = probes::poll_with(handle, awaiter.waker());
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

  release(waker);
  EXPECT_TRUE(w.is(2, 1, 0, 0, 0, 0, 0));  // the poll stored another waker
  w.waker.drop();
  EXPECT_TRUE(w.is(2, 2, 0, 0, 0, 0, 1));

  TaskT last = w.chan.recv();
  EXPECT_FALSE(run_checked(last));
  EXPECT_TRUE(w.is(2, 2, 1, 0, 1, 1, 0));
}

}  // namespace
