// Runtime::block_on's calling thread as a guest worker: it takes a free processor and runs
// the root task (and what the root spawns) itself; it waits like karx::block_on when no
// processor is free; it leaves nothing behind when it returns.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <thread>
#include <vector>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

karx::RuntimeOptions processors(unsigned n) {
  karx::RuntimeOptions o;
  o.processors = n;
  return o;
}

karx::Async<std::thread::id> where() { co_return std::this_thread::get_id(); }

// The root and its child: both thread ids.
karx::Async<std::vector<std::thread::id>> root_and_child(karx::Runtime* rt) {
  std::vector<std::thread::id> ids{std::this_thread::get_id()};
  ids.push_back((co_await rt->spawn(where())).value());
  co_return ids;
}

TEST(BlockOn, TheCallerRunsTheRootAndItsChildrenWhenAProcessorIsFree) {
  karx::Runtime rt(processors(1));
  const auto ids = rt.block_on(root_and_child(&rt));
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], std::this_thread::get_id());
  EXPECT_EQ(ids[1], std::this_thread::get_id());
  EXPECT_EQ(rt.metrics().tasks_completed, 2u);
}

// Holds its processor by spinning (not in a call the runtime knows of) until released.
karx::Async<> spin(std::atomic<bool>* spinning, std::atomic<bool>* release) {
  spinning->store(true);
  while (!release->load()) std::this_thread::yield();
  co_return;
}

TEST(BlockOn, WithoutAFreeProcessorTheCallerWaitsAndAWorkerRunsTheRoot) {
  karx::RuntimeOptions o = processors(1);
  o.blocking_threshold = 5ms;
  karx::Runtime rt(o);
  std::atomic<bool> spinning{false}, release{false};
  // The spinner takes the only processor; the monitor hands it to another thread once the
  // threshold passes, and that thread runs the root.
  auto spinner = rt.spawn(spin(&spinning, &release));
  while (!spinning.load()) std::this_thread::yield();
  const std::thread::id ran_on = rt.block_on(where());
  EXPECT_NE(ran_on, std::this_thread::get_id());
  release.store(true);
  EXPECT_TRUE(karx::block_on(std::move(spinner)));
}

karx::Async<> bump(std::atomic<int>* counter) {
  counter->fetch_add(1);
  co_return;
}

karx::Async<> spawns_and_leaves(karx::Runtime* rt, std::atomic<int>* counter, int n) {
  for (int i = 0; i < n; ++i) rt->spawn(bump(counter)).detach();
  co_return;
}

TEST(BlockOn, TasksStillQueuedOnTheCallerRunAfterItReturns) {
  karx::Runtime rt(processors(1));
  std::atomic<int> counter{0};
  // 600 detached tasks: more than the local queue holds, so some spill while the root runs
  // and the rest are handed over when block_on returns.
  rt.block_on(spawns_and_leaves(&rt, &counter, 600));
  const auto deadline = Clock::now() + 10s;
  while (counter.load() < 600 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(counter.load(), 600);
}

karx::Async<> tick(std::atomic<bool>* stop, std::atomic<int>* ticks) {
  while (!stop->load()) {
    ticks->fetch_add(1);
    co_await karx::yield_now();
  }
}

karx::Async<int> ticks_while_root_blocks(karx::Runtime* rt) {
  std::atomic<bool> stop{false};
  std::atomic<int> ticks{0};
  auto ticker = rt->spawn(tick(&stop, &ticks));
  // The root blocks the caller's thread, announced: the processor goes to another thread,
  // which runs the ticker meanwhile.
  karx::blocking([] { std::this_thread::sleep_for(100ms); });
  const int during = ticks.load();
  stop.store(true);
  co_await ticker;
  co_return during;
}

TEST(BlockOn, BlockingInsideTheRootHandsTheCallersProcessorOver) {
  karx::Runtime rt(processors(1));
  EXPECT_GT(rt.block_on(ticks_while_root_blocks(&rt)), 0);
  EXPECT_GE(rt.metrics().handoffs, 1u);
}

karx::Async<int> nested(karx::Runtime* rt) { co_return rt->block_on(where()) == std::this_thread::get_id() ? 1 : 2; }

TEST(BlockOn, NestedInsideTheRootRunsTheInnerTaskOnTheSameThread) {
  karx::RuntimeOptions o = processors(1);
  o.blocking_threshold = 5ms;
  karx::Runtime rt(o);
  // The inner block_on runs on a guest already: the task it waits for is queued on that
  // guest, not started, so the wait runs it right there (a work-first join), with no other
  // thread and no hand-off.
  EXPECT_EQ(rt.block_on(nested(&rt)), 1);
  EXPECT_EQ(rt.metrics().handoffs, 0u);
}

TEST(BlockOn, RepeatedCallsReuseOneRegistryEntry) {
  karx::RuntimeOptions o = processors(1);
  o.max_threads = 3;  // one worker, the monitor, one spare: a leaking guest would exhaust it
  karx::Runtime rt(o);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(rt.block_on(where()), std::this_thread::get_id());
}

TEST(BlockOn, CallersOnSeveralThreadsShareTheProcessors) {
  karx::Runtime rt(processors(2));
  std::atomic<int> bumped{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) rt.block_on(spawns_and_leaves(&rt, &bumped, 10));
    });
  for (auto& c : callers) c.join();
  const auto deadline = Clock::now() + 10s;
  while (bumped.load() < 8000 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(bumped.load(), 8000);
  EXPECT_EQ(rt.metrics().tasks_completed, 8800u);
}

}  // namespace
