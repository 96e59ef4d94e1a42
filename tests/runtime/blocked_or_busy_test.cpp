// The monitor tells a poll blocked in the kernel from one that computes (impl/executor/
// monitor.cpp): a blocked poll's processor is handed off long before blocking_threshold (its
// thread's CPU time stands still and it is not runnable); a computing poll's only at the
// threshold, counted apart, and no more of those at once than the spare cores allow.
//
// Each case has one processor and a task that can run only on another worker: the blocker
// spawns its releaser into its own runnext, then blocks (or computes) until released. Without
// a hand-off the releaser never runs and the blocker gives up after a long deadline, which
// fails the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

import karx;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

karx::RuntimeOptions one_processor(std::chrono::nanoseconds threshold) {
  karx::RuntimeOptions o;
  o.processors = 1;
  o.blocking_threshold = threshold;
  return o;
}

struct Gate {
  std::mutex lock;
  std::condition_variable opened_cv;
  bool opened = false;
  std::atomic<bool> open_flag{false};

  void open() {
    open_flag.store(true);
    std::lock_guard guard(lock);
    opened = true;
    opened_cv.notify_all();
  }
};

struct Releaser {
  Gate* gate;
  karx::Poll<> poll(karx::Context&) {
    gate->open();
    return karx::ready();
  }
};

// Blocks its thread on a condition variable (no karx::blocking: unannounced) until released.
struct Sleeper {
  karx::Runtime* rt;
  Gate* gate;
  karx::Poll<bool> poll(karx::Context&) {
    rt->spawn(Releaser{gate}).detach();
    std::unique_lock guard(gate->lock);
    return karx::ready(gate->opened_cv.wait_for(guard, 20s, [&] { return gate->opened; }));
  }
};

// Computes (spins) until released.
struct Spinner {
  karx::Runtime* rt;
  Gate* gate;
  karx::Poll<bool> poll(karx::Context&) {
    rt->spawn(Releaser{gate}).detach();
    const auto deadline = Clock::now() + 20s;
    while (!gate->open_flag.load()) {
      if (Clock::now() > deadline) return karx::ready(false);
    }
    return karx::ready(true);
  }
};

TEST(BlockedOrBusy, ABlockedPollIsHandedOffLongBeforeTheThreshold) {
  // A threshold the test never reaches: only the blocked-thread rule can hand off.
  Gate gate;  // outlives the runtime, whose destructor waits for the releaser's poll
  karx::Runtime rt(one_processor(60s));
  const bool released = karx::block_on(rt.spawn(Sleeper{&rt, &gate})).value();
  EXPECT_TRUE(released) << "the releaser never ran: the blocked poll kept its processor";
  const karx::RuntimeMetrics m = rt.metrics();
  EXPECT_GE(m.blocked_handoffs, 1u);
  EXPECT_EQ(m.busy_handoffs, 0u);
  EXPECT_EQ(m.handoffs, m.blocked_handoffs + m.busy_handoffs);
}

TEST(BlockedOrBusy, AComputingPollIsHandedOffAtTheThresholdAndCountedAsBusy) {
  Gate gate;
  karx::Runtime rt(one_processor(50ms));
  const bool released = karx::block_on(rt.spawn(Spinner{&rt, &gate})).value();
  EXPECT_TRUE(released) << "the releaser never ran: the computing poll kept its processor";
  const karx::RuntimeMetrics m = rt.metrics();
  EXPECT_GE(m.busy_handoffs, 1u);
  EXPECT_EQ(m.blocked_handoffs, 0u) << "a thread that computes is not blocked";
}

// A poll that computes for `length`.
struct Compute {
  std::chrono::nanoseconds length;
  karx::Poll<> poll(karx::Context&) {
    const auto until = Clock::now() + length;
    while (Clock::now() < until) {
    }
    return karx::ready();
  }
};

// Many computing polls past the threshold: the runtime hands off at most as many at once as
// there are spare cores (at least one), so it starts only a few threads (before: 32 threads
// for 200 such polls on 2 processors).
TEST(BlockedOrBusy, ComputingPollsStartOnlyAFewThreads) {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.blocking_threshold = 10ms;
  karx::Runtime rt(o);
  constexpr int kPolls = 40;
  std::vector<karx::JoinHandle<void>> handles;
  for (int i = 0; i < kPolls; ++i) handles.push_back(rt.spawn(Compute{25ms}));
  for (auto& h : handles) EXPECT_TRUE(karx::block_on(std::move(h)));
  const karx::RuntimeMetrics m = rt.metrics();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::uint64_t cap = cores > 2 ? cores - 2 : 1;
  // The monitor and a worker per processor, plus a worker per concurrent busy hand-off and
  // the spares those leave behind (reused by later hand-offs).
  EXPECT_LE(m.threads_started, 3 + 2 * cap) << m.busy_handoffs << " busy hand-offs";
}

// While blocked workers' queues hold tasks, a task woken from outside (it waits in the
// injector) still runs within a few polls: the injector and those queues take turns. Before,
// the injector came only once every blocked queue was empty.
struct Blocker {
  Gate* gate;
  std::atomic<int>* started;
  karx::Poll<> poll(karx::Context&) {
    started->fetch_add(1);
    std::unique_lock guard(gate->lock);
    gate->opened_cv.wait_for(guard, 20s, [&] { return gate->opened; });
    return karx::ready();
  }
};

struct QueueBlockers {
  karx::Runtime* rt;
  Gate* gate;
  std::atomic<int>* started;
  int count;
  karx::Poll<> poll(karx::Context&) {
    for (int i = 0; i < count; ++i) rt->spawn(Blocker{gate, started}).detach();
    return karx::ready();
  }
};

struct Marker {
  Gate* gate;
  std::atomic<int>* started;
  std::atomic<int>* started_before_marker;
  karx::Poll<> poll(karx::Context&) {
    started_before_marker->store(started->load());
    gate->open();
    return karx::ready();
  }
};

TEST(BlockedOrBusy, ATaskFromOutsideIsNotQueuedBehindEveryBlockedWorkersQueue) {
  constexpr int kBlockers = 16;
  Gate gate;
  std::atomic<int> started{0}, started_before_marker{-1};
  karx::Runtime rt(one_processor(60s));
  rt.spawn(QueueBlockers{&rt, &gate, &started, kBlockers}).detach();
  while (started.load() == 0) std::this_thread::sleep_for(1ms);  // the first blocker blocks
  auto marker = rt.spawn(Marker{&gate, &started, &started_before_marker});
  EXPECT_TRUE(karx::block_on(std::move(marker)));
  EXPECT_LE(started_before_marker.load(), 4) << "blocked workers' queued tasks all went before the injector's";
}

}  // namespace
