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

// The exception the test future throws; `id` tells which one arrived where.
struct Boom : std::runtime_error {
  explicit Boom(int i) : std::runtime_error("boom " + std::to_string(i)), id(i) {}
  int id;
};

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

// --- the detached-exception handler --------------------------------------------------------

std::mutex g_detached_mu;
int g_detached_calls = 0;
std::exception_ptr g_detached_last;

void record_detached(std::exception_ptr e) noexcept {
  std::lock_guard lock(g_detached_mu);
  ++g_detached_calls;
  g_detached_last = std::move(e);
}

void reset_detached() {
  std::lock_guard lock(g_detached_mu);
  g_detached_calls = 0;
  g_detached_last = nullptr;
}

int detached_calls() {
  std::lock_guard lock(g_detached_mu);
  return g_detached_calls;
}

// The id of the Boom the handler received last: -1 if none, -2 if it was not a Boom.
int detached_boom_id() {
  std::exception_ptr e;
  {
    std::lock_guard lock(g_detached_mu);
    e = g_detached_last;
  }
  if (!e) return -1;
  try {
    std::rethrow_exception(e);
  } catch (const Boom& b) {
    return b.id;
  } catch (...) {
    return -2;
  }
}

// Installs the recording handler for each test and restores the previous one after.
class WakerPanic : public ::testing::Test {
 protected:
  void SetUp() override {
    reset_detached();
    previous_ = karx::set_detached_exception_handler(&record_detached);
  }
  void TearDown() override {
    karx::set_detached_exception_handler(previous_);
    reset_detached();
  }

 private:
  karx::detached_exception_handler previous_ = nullptr;
};

// --- the future ----------------------------------------------------------------------------

// Pending at the first poll, throws Boom(id) at the second. Each poll stores a clone of its
// waker in `slot`, counts itself, then waits at the gate if it is armed.
struct ThrowOnSecondPoll {
  probes::Counts* counts;
  WakerSlot* slot;
  Gate* gate;
  int id;
  bool polled = false;
  probes::DropCounter drop{counts->future_drops};

  karx::Poll<void> poll(karx::Context& cx) {
    slot->store(cx.waker());
    counts->polls.fetch_add(1);
    gate->pass();
    if (!polled) {
      polled = true;
      return karx::pending;
    }
    throw Boom(id);
  }
};

ThrowOnSecondPoll throwing_future(World& w, int id) { return ThrowOnSecondPoll{&w.counts, &w.waker, &w.gate, id}; }

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

  w.gate.arm();
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
  EXPECT_EQ(detached_calls(), 0);
}

// (From the later async-task suite.) The handle awaits (pending), the task throws: the
// awaiter is woken once, the handle rethrows; a wake after that schedules nothing.
TEST_F(WakerPanic, PanicAndPoll) {
  World w;
  auto [task, handle] = w.spawn(throwing_future(w, 5));
  Signal awaiter;

  EXPECT_FALSE(run_checked(task));
  w.waker.take().wake_and_release();
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));

  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
  EXPECT_TRUE(w.is(1, 1, 0, 0, 0, 0, 1));
  EXPECT_EQ(awaiter.count(), 0);

  TaskT again = w.chan.recv();
  EXPECT_FALSE(run_checked(again));
  EXPECT_TRUE(w.is(2, 1, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 1);

  try {
    (void)probes::poll_with(handle, awaiter.waker());
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

  release(waker);
  EXPECT_TRUE(w.is(1, 1, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

}  // namespace
