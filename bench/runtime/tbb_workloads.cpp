// oneTBB's runtime workloads, written as its users would: a task_arena of the same
// concurrency, enqueue from outside, task_group::run inside; a yield is a continuation run
// again as a new task.
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <cstdint>

#include "../forkjoin/forkjoin_tbb.hpp"
#include "workloads.hpp"

namespace {

using namespace karx_bench;

void tbb_spawn_many(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    Countdown c(kSpawns);
    for (int i = 0; i < kSpawns; ++i) arena.enqueue([&c] { c.hit(); });
    c.wait();
  }
  set_ops(state, kSpawns);
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
  set_ops(state, kSpawns);
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
  set_ops(state, kDepth);
}

void tbb_ping_pong(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    arena.execute([] {
      tbb::task_group tg;
      std::atomic<int> answered{0};
      // oneTBB tasks cannot wait for a one-shot without blocking their thread, so A's second
      // half is a continuation that B runs with its answer (as Boost.Asio's completion
      // handler is): three task runs per round, as karx's three polls and Asio's three
      // handlers. The group's wait is the signal to the waiting thread.
      for (int i = 0; i < kRounds; ++i)
        tg.run([&] {    // A
          tg.run([&] {  // B answers
            int answer = 1;
            tg.run([&answered, answer] {  // A's second half receives it
              if (answer == 1) answered.fetch_add(1, std::memory_order_relaxed);
            });
          });
        });
      tg.wait();
      benchmark::DoNotOptimize(answered.load());
    });
  }
  set_ops(state, kRounds);
}

void tbb_yield(tbb::task_group& tg, int left) {
  if (left > 0) tg.run([&tg, left] { tbb_yield(tg, left - 1); });
}

void tbb_yield_many(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  const int tasks = yield_tasks(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    arena.execute([tasks] {
      tbb::task_group tg;
      for (int i = 0; i < tasks; ++i) tg.run([&tg] { tbb_yield(tg, kYields); });
      tg.wait();
    });
  }
  set_ops(state, static_cast<double>(tasks) * kYields);
}

void tbb_fib(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state)
    if (!karx_forkjoin::run_tbb_fib(arena)) state.SkipWithError("fib(30) is wrong");
  set_ops(state, karx_forkjoin::fib_spawns(karx_forkjoin::kFibN));
}

void tbb_skynet(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state)
    if (!karx_forkjoin::run_tbb_skynet(arena)) state.SkipWithError("skynet's sum is wrong");
  set_ops(state, karx_forkjoin::skynet_tasks());
}

// The same trees with parallel_invoke ("tbbinvoke" in the tables).
void tbbinvoke_fib(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state)
    if (!karx_forkjoin::run_tbb_invoke_fib(arena)) state.SkipWithError("fib(30) is wrong");
  set_ops(state, karx_forkjoin::fib_spawns(karx_forkjoin::kFibN));
}

void tbbinvoke_skynet(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state)
    if (!karx_forkjoin::run_tbb_invoke_skynet(arena)) state.SkipWithError("skynet's sum is wrong");
  set_ops(state, karx_forkjoin::skynet_tasks());
}

KARX_BENCH_WORKLOAD(tbb, spawn_many);
KARX_BENCH_WORKLOAD(tbb, spawn_many_inside);
KARX_BENCH_WORKLOAD(tbb, chained_spawn);
KARX_BENCH_WORKLOAD(tbb, ping_pong);
KARX_BENCH_WORKLOAD(tbb, yield_many);
KARX_BENCH_WORKLOAD(tbb, fib);
KARX_BENCH_WORKLOAD(tbb, skynet);
KARX_BENCH_WORKLOAD(tbbinvoke, fib);
KARX_BENCH_WORKLOAD(tbbinvoke, skynet);

}  // namespace
