// Teardown never recurses in proportion to how deep tasks wait on one another: a chain of tasks
// each awaiting the next one's handle, torn down by the runtime's destructor or by a schedule
// function that drops its Task (a closed executor), cancels and notifies link after link
// iteratively. Without that, each link's cancel notifies its awaiter, whose wake schedules it,
// whose schedule drops it, whose cancel notifies the next: a stack frame set per link, and a
// stack overflow for deep chains.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

import karx;

namespace {

using namespace std::chrono_literals;

constexpr int kDepth = 1'000'000;
constexpr int kInlineDepth = kDepth;

struct Counts {
  std::atomic<int> built{0};
  std::atomic<int> destroyed{0};
};

struct CountDestruction {
  Counts* counts;
  ~CountDestruction() { counts->destroyed.fetch_add(1, std::memory_order_relaxed); }
};

// A link spawns the next and awaits it; the last one waits for ever (a sleep of an hour).
karx::Async<int> link(karx::Runtime* rt, int n, Counts* counts) {
  CountDestruction guard{counts};
  counts->built.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) {
    co_await karx::sleep_for(1h);
    co_return 0;
  }
  auto next = rt->spawn(link(rt, n - 1, counts));
  co_return (co_await next).value_or(-1) + 1;
}

TEST(TeardownDepth, TheRuntimesDestructorTearsDownAMillionDeepChainOfJoins) {
  Counts counts;
  {
    karx::RuntimeOptions o;
    o.processors = 1;
    karx::Runtime rt(o);
    auto root = rt.spawn(link(&rt, kDepth, &counts));
    while (counts.built.load() < kDepth + 1) std::this_thread::sleep_for(1ms);
    root.detach();
  }
  EXPECT_EQ(counts.destroyed.load(), kDepth + 1);
}

}  // namespace

namespace {

// A custom executor that, once closed, drops every Task handed to its schedule function (the
// pattern docs/guide.md shows for an executor that stops).
struct ClosableQueue {
  std::vector<karx::Task<>> queue;
  bool closed = false;
};

struct ScheduleOnClosable {
  ClosableQueue* q;
  void operator()(karx::Task<> task) const {
    if (!q->closed) q->queue.push_back(std::move(task));
    // closed: `task` is dropped here, which cancels it
  }
};

// The leaf waits on this gate; the test wakes it once the executor is closed.
struct Gate {
  std::optional<karx::Waker>* slot;
  karx::Poll<> poll(karx::Context& cx) {
    slot->emplace(cx.waker());
    return karx::pending;
  }
};

karx::Async<int> closable_link(ClosableQueue* q, int n, Counts* counts, std::optional<karx::Waker>* gate) {
  CountDestruction guard{counts};
  counts->built.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) {
    co_await Gate{gate};
    co_return 0;
  }
  auto [task, handle] = karx::spawn(closable_link(q, n - 1, counts, gate), ScheduleOnClosable{q});
  task.schedule();
  co_return (co_await handle).value_or(-1) + 1;
}

TEST(TeardownDepth, AClosedExecutorDroppingWokenTasksTearsDownAMillionDeepChain) {
  Counts counts;
  ClosableQueue q;
  std::optional<karx::Waker> gate;
  auto [root, root_handle] = karx::spawn(closable_link(&q, kDepth, &counts, &gate), ScheduleOnClosable{&q});
  root.run();
  while (!q.queue.empty()) {
    karx::Task<> next = std::move(q.queue.back());
    q.queue.pop_back();
    next.run();
  }
  ASSERT_EQ(counts.built.load(), kDepth + 1);
  ASSERT_TRUE(gate.has_value());
  // Close, then wake the leaf: its schedule drops it, its cancel notifies its parent, whose
  // schedule drops it... all the way up, iteratively.
  q.closed = true;
  std::move(*gate).wake();
  gate.reset();
  EXPECT_EQ(counts.destroyed.load(), kDepth + 1);
  EXPECT_FALSE(karx::block_on(std::move(root_handle)).has_value());  // canceled
}

}  // namespace

namespace {

// A chain of Asyncs each awaiting the next inline (co_await of an Async, one task), suspended
// at the bottom on a future that never completes, then destroyed: each frame's destruction
// destroys the frame it awaits. Iteratively beyond a bounded depth, so a million-deep chain
// does not overflow the stack.
karx::Async<int> inline_link(int n, Counts* counts) {
  CountDestruction guard{counts};
  counts->built.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) {
    std::optional<karx::Waker> never;
    co_await Gate{&never};
    co_return 0;
  }
  co_return 1 + co_await inline_link(n - 1, counts);
}

TEST(TeardownDepth, DestroyingAMillionDeepSuspendedAsyncChainDoesNotRecurse) {
  Counts counts;
  {
    karx::Async<int> chain = inline_link(kInlineDepth, &counts);
    karx::Waker waker = karx::noop_waker();
    karx::Context cx(waker);
    EXPECT_TRUE(chain.poll(cx).is_pending());
    ASSERT_EQ(counts.built.load(), kInlineDepth + 1);
  }
  EXPECT_EQ(counts.destroyed.load(), kInlineDepth + 1);
}

TEST(TeardownDepth, ARuntimeTaskHoldingAMillionDeepAsyncChainIsTornDown) {
  Counts counts;
  {
    karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
    rt.spawn(inline_link(kDepth, &counts)).detach();
    while (counts.built.load() < kDepth + 1) std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(counts.destroyed.load(), kDepth + 1);
}

}  // namespace
