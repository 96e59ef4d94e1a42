// Work-first joins: a task that awaits the handle of a task queued on its own worker and not
// started runs that task right there, nested in its own poll (worker.cpp: core_run_here).
// Each test would fail without one of its properties: the join runs the child on the same
// thread without a hand-off; nesting is bounded (a deep chain would overflow the stack); each
// nested poll restarts the monitor's clock (else a long nest looks like one long poll and is
// handed off as CPU-bound); a parent joining child after child still gives way to a queued
// task (its budget is not refilled by the nested polls).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <thread>

import karx;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

karx::Async<std::thread::id> where() { co_return std::this_thread::get_id(); }

karx::Async<bool> child_runs_on_this_thread(karx::Runtime* rt) {
  auto child = rt->spawn(where());
  const std::optional<std::thread::id> id = co_await child;
  co_return id.has_value() && *id == std::this_thread::get_id();
}

TEST(WorkFirstJoin, AnAwaitedChildRunsOnTheAwaitingThreadWithoutAWake) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  EXPECT_TRUE(rt.block_on(child_runs_on_this_thread(&rt)));
  const karx::RuntimeMetrics m = rt.metrics();
  EXPECT_EQ(m.handoffs, 0u);
  EXPECT_EQ(m.tasks_completed, m.tasks_spawned);
}

// The parent awaits its oldest child first: the newer ones, on top of the queue, run before
// it, each nested in the parent's poll, and every sum comes out right.
karx::Async<std::uint64_t> tree(karx::Runtime* rt, std::uint64_t num, std::uint64_t size) {
  if (size == 1) co_return num;
  const std::uint64_t step = size / 4;
  karx::JoinHandle<std::uint64_t> children[4];
  for (std::uint64_t i = 0; i < 4; ++i) children[i] = rt->spawn(tree(rt, num + i * step, step));
  std::uint64_t sum = 0;
  for (auto& child : children) sum += (co_await child).value();
  co_return sum;
}

TEST(WorkFirstJoin, ATreeJoinedOldestFirstSumsCorrectlyOnOneAndTwoProcessors) {
  constexpr std::uint64_t kLeaves = 4 * 4 * 4 * 4 * 4 * 4 * 4;  // 16384
  constexpr std::uint64_t kSum = kLeaves * (kLeaves - 1) / 2;
  for (unsigned processors : {1u, 2u}) {
    karx::RuntimeOptions o;
    o.processors = processors;
    karx::Runtime rt(o);
    for (int round = 0; round < 3; ++round) EXPECT_EQ(rt.block_on(tree(&rt, 0, kLeaves)), kSum) << processors;
  }
}

// A chain far deeper than any stack could nest: each link awaits the next one's handle.
karx::Async<std::uint64_t> chain(karx::Runtime* rt, std::uint64_t n) {
  if (n == 0) co_return 0;
  auto next = rt->spawn(chain(rt, n - 1));
  co_return 1 + (co_await next).value();
}

TEST(WorkFirstJoin, ADeepChainOfJoinsNestsOnlyABoundedDepth) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  constexpr std::uint64_t kDepth = 50'000;
  EXPECT_EQ(rt.block_on(chain(&rt, kDepth)), kDepth);
}

// Children that compute for about a millisecond each, joined one after another by a root
// whose poll therefore lasts ~60 ms, well past the threshold. Each nested poll shows the
// monitor a new poll, so nothing is handed off as CPU-bound.
karx::Async<int> spin_for_a_millisecond() {
  const auto until = Clock::now() + 1ms;
  while (Clock::now() < until) {
  }
  co_return 1;
}

karx::Async<int> joins_sixty_spinners(karx::Runtime* rt) {
  int sum = 0;
  for (int i = 0; i < 60; ++i) sum += (co_await rt->spawn(spin_for_a_millisecond())).value();
  co_return sum;
}

TEST(WorkFirstJoin, NestedPollsRestartTheMonitorsClock) {
  const karx::RuntimeOptions o{.processors = 1, .blocking_threshold = 40ms};
  karx::Runtime rt(o);
  const auto start = Clock::now();
  EXPECT_EQ(rt.block_on(joins_sixty_spinners(&rt)), 60);
  ASSERT_GT(Clock::now() - start, o.blocking_threshold) << "the nest must outlast the threshold to show anything";
  EXPECT_EQ(rt.metrics().busy_handoffs, 0u);
  EXPECT_EQ(rt.metrics().handoffs, 0u);
}

// A parent that spawns and joins children in a loop, for ever unless stopped, beside a task
// queued on the same (only) processor: the parent's budget runs out after kCoopBudget joins,
// it gives way, and the queued task runs.
struct Loop {
  std::atomic<bool> stop{false};
  std::atomic<bool> other_ran{false};
  std::atomic<std::uint64_t> joins{0};
};

karx::Async<int> one() { co_return 1; }

karx::Async<void> join_forever(karx::Runtime* rt, Loop* loop) {
  while (!loop->stop.load()) {
    co_await rt->spawn(one());
    loop->joins.fetch_add(1);
  }
}

karx::Async<void> other(Loop* loop) {
  loop->other_ran.store(true);
  loop->stop.store(true);
  co_return;
}

TEST(WorkFirstJoin, AParentJoiningInALoopStillGivesWayToAQueuedTask) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  Loop loop;
  auto looping = rt.spawn(join_forever(&rt, &loop));
  auto queued = rt.spawn(other(&loop));
  const auto deadline = Clock::now() + 10s;
  while (!loop.other_ran.load() && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  loop.stop.store(true);
  EXPECT_TRUE(loop.other_ran.load()) << "the queued task never ran behind " << loop.joins.load() << " joins";
  EXPECT_TRUE(karx::block_on(std::move(looping)));
  EXPECT_TRUE(karx::block_on(std::move(queued)));
}

}  // namespace
