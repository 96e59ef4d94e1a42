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

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
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

// Destroys what `x` owns now, as Rust's drop(x) (the moved-from shell stays behind, empty).
template <class T>
void drop_now(T& x) {
  T dropped = std::move(x);
}

struct TagSchedule {
  Counts* counts;
  DropCounter drop{counts->schedule_drops};

  void operator()(TaskT) const { counts->schedules.fetch_add(1, std::memory_order_relaxed); }
};

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

// A one-shot rendezvous between the polled future and the test; waits are bounded.
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

// ready.rs's future: polled once, it waits (at the gate) and then is ready with Output{7}.
struct GatedFuture {
  Counts* counts;
  Gate* gate;
  DropCounter drop{counts->future_drops};

  karx::Poll<probes::Output> poll(karx::Context&) {
    counts->polls.fetch_add(1);
    gate->enter_and_wait();
    return karx::Poll<probes::Output>::ready(probes::Output{7, DropCounter(counts->output_drops)});
  }
};

auto spawn_gated(Counts& c, Gate& gate) {
  return karx::spawn(GatedFuture{&c, &gate}, TagSchedule{&c}, Tag{0, DropCounter(c.tag_drops)});
}

// Runs `task` on its own thread and waits until its poll is at the gate. The gate is opened and
// the thread joined at the latest when this goes out of scope.
class Runner {
 public:
  Runner(TaskT task, Gate& gate) : gate_(gate), thread_([t = std::move(task), this]() mutable { woken_ = t.run(); }) {
    entered_ = gate_.wait_entered();
  }
  ~Runner() { join(); }
  bool entered() const { return entered_; }
  void join() {
    gate_.open();
    if (thread_.joinable()) thread_.join();
  }
  bool woken() const { return woken_; }

 private:
  Gate& gate_;
  bool woken_ = false;
  bool entered_ = false;
  std::thread thread_;
};

// --- ready.rs: cancel_during_run ----------------------------------------------------------------

TEST(Ready, CancelDuringRun) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(runner.entered());
  EXPECT_COUNTS(c, .polls = 1);

  handle.cancel();  // running: the run in progress finishes the job; no schedule call
  EXPECT_COUNTS(c, .polls = 1);

  runner.join();  // the poll completed; the task was canceled: its output is dropped at once
  EXPECT_FALSE(runner.woken());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: join_during_run ------------------------------------------------------------------

TEST(Ready, JoinDuringRun) {
  Counts c;
  Parker p;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(runner.entered());
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

  runner.join();
  EXPECT_FALSE(runner.woken());
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: try_join_during_run --------------------------------------------------------------

TEST(Ready, TryJoinThenDetachDuringRun) {
  Counts c;
  Parker p;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(runner.entered());

  // One poll that gives up when pending (async-task: select with a ready future).
  EXPECT_TRUE(probes::poll_with(handle, p.waker()).is_pending());
  EXPECT_COUNTS(c, .polls = 1);

  handle.detach();
  EXPECT_COUNTS(c, .polls = 1);

  runner.join();  // nobody takes the output: the run drops it and frees the block
  EXPECT_FALSE(runner.woken());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// --- ready.rs: drop_handle_during_run -----------------------------------------------------------

TEST(Ready, DropHandleDuringRun) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(runner.entered());
  EXPECT_COUNTS(c, .polls = 1);

  drop_now(handle);  // ~JoinHandle detaches
  EXPECT_FALSE(handle);
  EXPECT_COUNTS(c, .polls = 1);

  runner.join();
  EXPECT_FALSE(runner.woken());
  EXPECT_COUNTS(c, .polls = 1, .future_drops = 1, .output_drops = 1, .schedule_drops = 1, .tag_drops = 1);
}

// karx: canceling after the run completed does nothing; the output is still delivered.
TEST(Ready, CancelAfterRunCompletedDeliversOutput) {
  Counts c;
  Gate gate;
  auto [task, handle] = spawn_gated(c, gate);
  Runner runner(std::move(task), gate);
  ASSERT_TRUE(runner.entered());

  runner.join();
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
