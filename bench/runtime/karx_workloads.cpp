// karx's runtime workloads: a karx::Runtime with 1 or 2 processors; tasks are Async coroutines.
// spawn_many spawns from outside; the others run under Runtime::block_on, whose calling thread
// takes a processor and runs tasks while it waits (as oneTBB's task_arena::execute does).
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <optional>

#include "workloads.hpp"
import karx;
#include "../forkjoin/forkjoin_karx.hpp"

namespace {

using namespace karx_bench;

karx::RuntimeOptions with_workers(benchmark::State& state) {
  karx::RuntimeOptions o;
  o.processors = static_cast<unsigned>(state.range(0));
  return o;
}

// A countdown a task can await: the last hit wakes the waiting task (one lock, taken once
// by the waiter and once by the last hitter).
class AsyncLatch {
 public:
  explicit AsyncLatch(int n) : left_(n) {}
  void hit() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::optional<karx::Waker> waiter;
    {
      std::lock_guard lock(mutex_);
      waiter.swap(waiter_);
    }
    if (waiter) std::move(*waiter).wake_and_release();
  }
  struct Wait {
    AsyncLatch* latch;
    karx::Poll<> poll(karx::Context& cx) {
      if (latch->left_.load(std::memory_order_acquire) == 0) return karx::ready();
      std::lock_guard lock(latch->mutex_);
      if (latch->left_.load(std::memory_order_acquire) == 0) return karx::ready();
      latch->waiter_ = cx.waker();
      return karx::pending;
    }
  };
  Wait wait() { return Wait{this}; }

 private:
  std::atomic<int> left_;
  std::mutex mutex_;
  std::optional<karx::Waker> waiter_;
};

karx::Async<> bump(Countdown* c) {
  c->hit();
  co_return;
}

void karx_spawn_many(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) {
    Countdown c(kSpawns);
    for (int i = 0; i < kSpawns; ++i) rt.spawn(bump(&c)).detach();
    c.wait();
  }
  set_ops(state, kSpawns);
}

karx::Async<> hit(AsyncLatch* latch) {
  latch->hit();
  co_return;
}

karx::Async<> spawn_from_inside(karx::Runtime* rt) {
  AsyncLatch latch(kSpawns);
  for (int i = 0; i < kSpawns; ++i) rt->spawn(hit(&latch)).detach();
  co_await latch.wait();
}

void karx_spawn_many_inside(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) rt.block_on(spawn_from_inside(&rt));
  set_ops(state, kSpawns);
}

karx::Async<> chain(karx::Runtime* rt, int depth, AsyncLatch* latch) {
  if (depth == 0)
    latch->hit();
  else
    rt->spawn(chain(rt, depth - 1, latch)).detach();
  co_return;
}

karx::Async<> chained_spawn(karx::Runtime* rt) {
  AsyncLatch latch(1);
  rt->spawn(chain(rt, kDepth, &latch)).detach();
  co_await latch.wait();
}

void karx_chained_spawn(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) rt.block_on(chained_spawn(&rt));
  set_ops(state, kDepth);
}

karx::Async<int> pong() { co_return 1; }

karx::Async<> ping(karx::Runtime* rt, AsyncLatch* latch) {
  auto answer = co_await rt->spawn(pong());  // B answers A through its JoinHandle (a one-shot)
  if (answer.value_or(0) == 1) latch->hit();
}

karx::Async<> ping_pong(karx::Runtime* rt) {
  AsyncLatch latch(kRounds);
  for (int i = 0; i < kRounds; ++i) rt->spawn(ping(rt, &latch)).detach();
  co_await latch.wait();
}

void karx_ping_pong(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) rt.block_on(ping_pong(&rt));
  set_ops(state, kRounds);
}

karx::Async<> yielder(AsyncLatch* latch) {
  for (int i = 0; i < kYields; ++i) co_await karx::yield_now();
  latch->hit();
}

karx::Async<> yield_many(karx::Runtime* rt, int tasks) {
  AsyncLatch latch(tasks);
  for (int i = 0; i < tasks; ++i) rt->spawn(yielder(&latch)).detach();
  co_await latch.wait();
}

void karx_yield_many(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  const int tasks = yield_tasks(static_cast<int>(state.range(0)));
  for (auto _ : state) rt.block_on(yield_many(&rt, tasks));
  set_ops(state, static_cast<double>(tasks) * kYields);
}

void karx_fib(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state)
    if (!karx_forkjoin::run_fib(rt)) state.SkipWithError("fib(30) is wrong");
  set_ops(state, karx_forkjoin::fib_spawns(karx_forkjoin::kFibN));
}

void karx_skynet(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state)
    if (!karx_forkjoin::run_skynet(rt)) state.SkipWithError("skynet's sum is wrong");
  set_ops(state, karx_forkjoin::skynet_tasks());
}

KARX_BENCH_WORKLOAD(karx, spawn_many);
KARX_BENCH_WORKLOAD(karx, spawn_many_inside);
KARX_BENCH_WORKLOAD(karx, chained_spawn);
KARX_BENCH_WORKLOAD(karx, ping_pong);
KARX_BENCH_WORKLOAD(karx, yield_many);
KARX_BENCH_WORKLOAD(karx, fib);
KARX_BENCH_WORKLOAD(karx, skynet);

}  // namespace
