// Runtime workloads (modelled on tokio's benches/rt_multi_threaded.rs), karx beside oneTBB in
// the same binary, with 1 and 2 worker threads (the benchmark argument). Time per iteration is
// reported; divide by the operation count in the name for a per-task figure.
//
//   spawn_many          from outside, spawn 10,000 tasks that bump a counter; wait for all
//   spawn_many_inside   the same 10,000 spawns issued from inside a running task
//   chained_spawn       a task spawns one task, which spawns one, ... depth 1,000
//   ping_pong           1,000 concurrent rounds: A spawns B, B answers A, A reports
//   yield_many          2 x workers tasks, each yields 1,000 times
//
// oneTBB is written as its users would: a task_arena of the same concurrency, enqueue from
// outside, task_group::run inside; a yield is a continuation spawned again.
#include <benchmark/benchmark.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <coroutine>
#include <functional>
#include <utility>
import karx;

namespace {

constexpr int kSpawns = 10000;
constexpr int kDepth = 1000;
constexpr int kRounds = 1000;
constexpr int kYields = 1000;

// Counts down to zero; the waiting thread sleeps on it.
class Countdown {
 public:
  explicit Countdown(int n) : left_(n) {}
  void hit() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      done_.store(true, std::memory_order_release);
      done_.notify_one();
    }
  }
  void wait() {
    while (!done_.load(std::memory_order_acquire)) done_.wait(false, std::memory_order_acquire);
  }

 private:
  std::atomic<int> left_;
  std::atomic<bool> done_{false};
};

karx::RuntimeOptions with_workers(benchmark::State& state) {
  karx::RuntimeOptions o;
  o.processors = static_cast<unsigned>(state.range(0));
  return o;
}

// --- karx -----------------------------------------------------------------------------------------

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
}

karx::Async<> spawn_from_inside(karx::Runtime* rt, Countdown* c) {
  for (int i = 0; i < kSpawns; ++i) rt->spawn(bump(c)).detach();
  co_return;
}

void karx_spawn_many_inside(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) {
    Countdown c(kSpawns);
    rt.spawn(spawn_from_inside(&rt, &c)).detach();
    c.wait();
  }
}

karx::Async<> chain(karx::Runtime* rt, int depth, Countdown* c) {
  if (depth == 0)
    c->hit();
  else
    rt->spawn(chain(rt, depth - 1, c)).detach();
  co_return;
}

void karx_chained_spawn(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) {
    Countdown c(1);
    rt.spawn(chain(&rt, kDepth, &c)).detach();
    c.wait();
  }
}

karx::Async<int> pong() { co_return 1; }

karx::Async<> ping(karx::Runtime* rt, Countdown* c) {
  auto answer = co_await rt->spawn(pong());  // B answers A through its JoinHandle (a one-shot)
  if (answer.value_or(0) == 1) c->hit();
}

void karx_ping_pong(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  for (auto _ : state) {
    Countdown c(kRounds);
    for (int i = 0; i < kRounds; ++i) rt.spawn(ping(&rt, &c)).detach();
    c.wait();
  }
}

karx::Async<> yielder(Countdown* c) {
  for (int i = 0; i < kYields; ++i) co_await karx::yield_now();
  c->hit();
}

void karx_yield_many(benchmark::State& state) {
  karx::Runtime rt(with_workers(state));
  const int tasks = 2 * static_cast<int>(state.range(0));
  for (auto _ : state) {
    Countdown c(tasks);
    for (int i = 0; i < tasks; ++i) rt.spawn(yielder(&c)).detach();
    c.wait();
  }
}

// --- oneTBB -----------------------------------------------------------------------------------------

void tbb_spawn_many(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    Countdown c(kSpawns);
    for (int i = 0; i < kSpawns; ++i) arena.enqueue([&c] { c.hit(); });
    c.wait();
  }
}

void tbb_spawn_many_inside(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    arena.execute([] {
      tbb::task_group tg;
      Countdown c(kSpawns);
      tg.run([&] {
        for (int i = 0; i < kSpawns; ++i) tg.run([&c] { c.hit(); });
      });
      tg.wait();
    });
  }
}

void tbb_chain(tbb::task_group& tg, int depth) {
  if (depth > 0) tg.run([&tg, depth] { tbb_chain(tg, depth - 1); });
}

void tbb_chained_spawn(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    arena.execute([] {
      tbb::task_group tg;
      tbb_chain(tg, kDepth);
      tg.wait();
    });
  }
}

void tbb_ping_pong(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    arena.execute([] {
      tbb::task_group tg;
      std::atomic<int> answered{0};
      for (int i = 0; i < kRounds; ++i)
        tg.run([&] {                               // A
          tg.run([&] { answered.fetch_add(1); });  // B answers
        });
      tg.wait();
      benchmark::DoNotOptimize(answered.load());
    });
  }
}

void tbb_yield(tbb::task_group& tg, int left) {
  if (left > 0) tg.run([&tg, left] { tbb_yield(tg, left - 1); });  // a yield: continue as a new task
}

void tbb_yield_many(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  const int tasks = 2 * static_cast<int>(state.range(0));
  for (auto _ : state) {
    arena.execute([tasks] {
      tbb::task_group tg;
      for (int i = 0; i < tasks; ++i) tg.run([&tg] { tbb_yield(tg, kYields); });
      tg.wait();
    });
  }
}

#define KARX_WORKLOAD(name)                                                             \
  BENCHMARK(karx_##name)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond); \
  BENCHMARK(tbb_##name)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond)

KARX_WORKLOAD(spawn_many);
KARX_WORKLOAD(spawn_many_inside);
KARX_WORKLOAD(chained_spawn);
KARX_WORKLOAD(ping_pong);
KARX_WORKLOAD(yield_many);

}  // namespace

BENCHMARK_MAIN();
