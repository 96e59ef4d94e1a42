// karx::TaskGroup: join waits for every child's future to be gone; the first exception
// cancels the rest and is rethrown; cancel() and ~TaskGroup cancel without blocking; children
// on the runtime, on the simulation, and racing their own registration.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "support/probes.hpp"
#include "support/soak_wait.hpp"

namespace {

using namespace std::chrono_literals;
using probes::DropCounter;

karx::Async<int> after_yields(int n, int value) {
  for (int i = 0; i < n; ++i) co_await karx::yield_now();
  co_return value;
}

// Waits on `n` for ever (until cancelled). The counter is a parameter, so the frame holds it
// from the start: its destruction counts even when the child is cancelled before its first run.
karx::Async<int> wait_forever_counted(karx::Notify* n, DropCounter) {
  co_await n->notified();
  co_return -1;
}
karx::Async<int> wait_forever(karx::Notify* n, std::atomic<int>* destroyed) {
  return wait_forever_counted(n, DropCounter(*destroyed));
}

karx::Async<int> fail_after_yield(int id) {
  co_await karx::yield_now();
  throw probes::Boom(id);
}

TEST(TaskGroup, JoinWaitsForEveryChild) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::TaskGroup group(rt);
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < 100; ++i) handles.push_back(group.spawn(after_yields(i % 7, i)));
  rt.block_on(group.join());
  EXPECT_EQ(group.size(), 0u);
  rt.block_on([&]() -> karx::Async<> {
    for (int i = 0; i < 100; ++i) EXPECT_EQ(co_await handles[i], std::optional<int>(i));
  }());
}

TEST(TaskGroup, AnEmptyGroupJoinsAtOnce) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  karx::TaskGroup group(rt);
  auto join = group.join();
  EXPECT_TRUE(probes::poll_once(join).is_ready());
}

TEST(TaskGroup, TheFirstExceptionCancelsTheRestAndJoinRethrowsIt) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::Notify never;
  std::atomic<int> destroyed{0};
  karx::TaskGroup group(rt);
  std::vector<karx::JoinHandle<int>> waiting;
  for (int i = 0; i < 20; ++i) waiting.push_back(group.spawn(wait_forever(&never, &destroyed)));
  auto failing = group.spawn(fail_after_yield(7));
  try {
    rt.block_on(group.join());
    FAIL() << "join did not rethrow";
  } catch (const probes::Boom& e) {
    EXPECT_EQ(e.id, 7);
  }
  // join returned only after every other child's future was destroyed.
  EXPECT_EQ(destroyed.load(), 20);
  EXPECT_EQ(group.size(), 0u);
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : waiting) EXPECT_EQ(co_await h, std::nullopt);
    EXPECT_THROW(co_await failing, probes::Boom);  // the failing child's own handle rethrows too
  }());
}

TEST(TaskGroup, CancelCancelsEveryChildAndJoinReturnsNormally) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::Notify never;
  std::atomic<int> destroyed{0};
  karx::TaskGroup group(rt);
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < 50; ++i) handles.push_back(group.spawn(wait_forever(&never, &destroyed)));
  group.cancel();
  rt.block_on(group.join());
  EXPECT_EQ(destroyed.load(), 50);
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : handles) EXPECT_EQ(co_await h, std::nullopt);
  }());
  // A cancelled group cancels what it spawns next at once.
  auto late = group.spawn(wait_forever(&never, &destroyed));
  EXPECT_EQ(rt.block_on(std::move(late)), std::nullopt);
  EXPECT_EQ(destroyed.load(), 51);
}

TEST(TaskGroup, DestroyingTheGroupCancelsChildrenWithoutBlocking) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::Notify never;
  std::atomic<int> destroyed{0};
  std::vector<karx::JoinHandle<int>> handles;
  {
    karx::TaskGroup group(rt);
    for (int i = 0; i < 50; ++i) handles.push_back(group.spawn(wait_forever(&never, &destroyed)));
  }  // returns at once: the children are cancelled, not awaited
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : handles) EXPECT_EQ(co_await h, std::nullopt);
  }());
  EXPECT_EQ(destroyed.load(), 50);
}

TEST(TaskGroup, DefaultsToTheRuntimeRunningTheCaller) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  const int sum = rt.block_on([]() -> karx::Async<int> {
    karx::TaskGroup group;  // Runtime::current(): rt
    std::vector<karx::JoinHandle<int>> hs;
    for (int i = 1; i <= 10; ++i) hs.push_back(group.spawn(after_yields(1, i)));
    co_await group.join();
    int s = 0;
    for (auto& h : hs) s += *co_await h;
    co_return s;
  }());
  EXPECT_EQ(sum, 55);
}

// Children that finish before spawn() has registered them (the node freed by the registration)
// and children still running when the group is cancelled, many times over.
TEST(TaskGroupStress, ChildrenRacingTheirRegistrationAndACancel) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  for (int round = 0; round < 20; ++round) {
    karx::Notify never;
    std::atomic<int> destroyed{0};
    karx::TaskGroup group(rt);
    for (int i = 0; i < 500; ++i) {
      if (i % 5 == 0)
        group.spawn(wait_forever(&never, &destroyed)).detach();
      else
        group.spawn(after_yields(0, i)).detach();
    }
    group.cancel();
    rt.block_on(group.join());
    EXPECT_EQ(group.size(), 0u);
    EXPECT_EQ(destroyed.load(), 100);
  }
}

TEST(TaskGroup, OnTheSimulationTheFirstFailureCancelsTheRestInEveryInterleaving) {
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    karx::sim::Simulation sim(seed);
    karx::Notify never;
    std::atomic<int> destroyed{0};
    karx::TaskGroup group(sim);
    for (int i = 0; i < 4; ++i) group.spawn(wait_forever(&never, &destroyed)).detach();
    for (int i = 0; i < 3; ++i) group.spawn(after_yields(static_cast<int>(seed % 3), i)).detach();
    auto fail1 = group.spawn(fail_after_yield(1));  // kept: a detached failure is reported
    auto fail2 = group.spawn(fail_after_yield(2));
    int first = 0;
    try {
      sim.block_on(group.join());
      ADD_FAILURE() << "seed " << seed << ": join did not rethrow";
    } catch (const probes::Boom& e) {
      first = e.id;
    }
    EXPECT_TRUE(first == 1 || first == 2) << "seed " << seed;
    EXPECT_EQ(destroyed.load(), 4) << "seed " << seed;
    EXPECT_EQ(group.size(), 0u) << "seed " << seed;
  }
}

// An executor that runs each task on a thread of its own, and returns from schedule() only
// once `ready_to_return` holds (or after 5 s).
struct ThreadPerTask {
  std::vector<std::thread> threads;
  std::function<bool()> ready_to_return;
  void schedule(karx::Task<> t) {
    threads.emplace_back([t = std::move(t)]() mutable { std::move(t).run(); });
    soak::eventually(ready_to_return, 5s);
  }
  ~ThreadPerTask() {
    for (auto& t : threads) t.join();
  }
};

// Throws at its first poll; its destructor waits for `release` (up to 5 s), so that the
// child has failed but not finished while the test goes on.
struct ThrowThenLinger {
  std::atomic<bool>* destroying;
  std::atomic<bool>* release;
  ThrowThenLinger(std::atomic<bool>* d, std::atomic<bool>* r) : destroying(d), release(r) {}
  ThrowThenLinger(ThrowThenLinger&& o) noexcept
      : destroying(std::exchange(o.destroying, nullptr)), release(o.release) {}
  ~ThrowThenLinger() {
    if (destroying == nullptr) return;
    destroying->store(true);
    soak::eventually([this] { return release->load(); }, 5s);
  }
  karx::Poll<int> poll(karx::Context&) { throw probes::Boom(3); }
};

TEST(TaskGroup, AChildThatThrowsBeforeItsSpawnReturnsKeepsItsExceptionForItsHandle) {
  // The child fails (the group is now cancelled) before spawn() has registered it; the
  // registration must not cancel the failing child itself, or its handle would say
  // "canceled" instead of rethrowing.
  std::atomic<bool> destroying{false};
  std::atomic<bool> release{false};
  std::optional<karx::JoinHandle<int>> handle;
  {
    ThreadPerTask executor;
    executor.ready_to_return = [&] { return destroying.load(); };
    karx::TaskGroup group(executor);
    handle.emplace(group.spawn(ThrowThenLinger(&destroying, &release)));
    release.store(true);
  }  // the executor's thread is joined: the child finished
  EXPECT_THROW((void)probes::poll_once(*handle), probes::Boom)
      << "the failing child was cancelled by its own registration";
}

TEST(TaskGroup, MovedFromGroupGetsAClearError) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  karx::TaskGroup a(rt);
  karx::TaskGroup b = std::move(a);
  EXPECT_THROW((void)a.size(), std::logic_error);
  EXPECT_THROW((void)a.spawn(after_yields(0, 1)), std::logic_error);
  EXPECT_EQ(b.size(), 0u);
}

}  // namespace
