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

#include <chrono>
#include <condition_variable>
#include <coroutine>
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

// The exception the test futures throw; `id` tells which one arrived where.
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

// Everything a test counts. Declared before the task, so it outlives it.
struct World {
  probes::Counts counts;
  Chan chan;
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
class Exception : public ::testing::Test {
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
struct ThrowingFuture {
  probes::Counts* counts;
  Gate* gate;
  int id;
  probes::DropCounter drop{counts->future_drops};

  karx::Poll<void> poll(karx::Context&) {
    counts->polls.fetch_add(1);
    gate->pass();
    throw Boom(id);
  }
};

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 1});

  w.gate.arm();
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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 2});

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 3});
  Signal awaiter;

  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
  EXPECT_TRUE(w.is(0, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 0);

  EXPECT_FALSE(run_checked(task));
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 1);

  expect_rethrows(handle, 3, awaiter.waker());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(awaiter.count(), 1);
  EXPECT_EQ(detached_calls(), 0);
}

// The handle is awaited while the poll runs on another thread; the completion wakes it and
// the next await rethrows.
TEST_F(Exception, JoinDuringRun) {
  World w;
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 4});
  Signal awaiter;

  w.gate.arm();
  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 0);

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 1);

  expect_rethrows(handle, 4, awaiter.waker());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Awaited (pending) during the run, then dropped: the exception has no taker and is reported.
TEST_F(Exception, TryJoinDuringRun) {
  World w;
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 5});
  Signal awaiter;

  w.gate.arm();
  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 6});

  w.gate.arm();
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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 7});
  Signal awaiter;

  w.gate.arm();
  Background bg(w.gate, std::move(task));
  ASSERT_TRUE(w.gate.wait_arrived());

  handle.cancel();
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));
  // The future is not destroyed yet: the handle must not resolve.
  EXPECT_TRUE(probes::poll_with(handle, awaiter.waker()).is_pending());
  EXPECT_TRUE(w.is(1, 0, 0, 0, 0, 0, 0));

  EXPECT_FALSE(bg.finish());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 0, 0, 0));
  EXPECT_EQ(awaiter.count(), 1);

  auto r = probes::poll_with(handle, awaiter.waker());
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value());
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
  expect_spent(handle);
}

// Detached before the first run: the run reports the exception, once.
TEST_F(Exception, DetachBeforeRun) {
  World w;
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 8});

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 9});

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 10});

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 11});

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
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 12});

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
  std::exception_ptr e;
  {
    std::lock_guard lock(g_detached_mu);
    e = g_detached_last;
  }
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
  EXPECT_EQ(karx::set_detached_exception_handler(nullptr), &record_detached);
  auto [task, handle] = w.spawn(ThrowingFuture{&w.counts, &w.gate, 14});
  handle.detach();

  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(run_checked(task));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("boom 14"), std::string::npos) << "stderr was: " << err;
  EXPECT_TRUE(w.is(1, 0, 1, 0, 1, 1, 0));
  EXPECT_EQ(detached_calls(), 0);
}

}  // namespace
