// Shared by the runtime workload benchmarks: the sizes of the workloads (the same in every
// library and in the Go peer under bench/peers/go), a countdown the waiting thread sleeps on,
// and the registration macro. Every benchmark is named <library>_<workload>/<threads> and sets
// the user counter `ops` (operations per iteration), so that bench/run_all divides the
// iteration time into ns per task / spawn / round / yield.
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <thread>

namespace karx_bench {

inline constexpr int kSpawns = 10000;  // spawn_many, spawn_many_inside
inline constexpr int kDepth = 1000;    // chained_spawn
inline constexpr int kRounds = 1000;   // ping_pong
inline constexpr int kYields = 1000;   // yield_many: per task; 2 x threads tasks

inline int yield_tasks(int threads) { return 2 * threads; }

// Fork-join. fib: each call with n >= 2 spawns fib(n-1) as a task, computes fib(n-2) itself,
// then waits for the task. skynet: a 10-ary tree of tasks over 10^6 leaves; each leaf returns
// its number, each node the sum of its children's. Both report ns per task spawned.
inline constexpr int kFibN = 30;
inline constexpr std::uint64_t kFibValue = 832040;
inline constexpr std::uint64_t kSkynetLeaves = 1000000;
inline constexpr std::uint64_t kSkynetChildren = 10;
inline constexpr std::uint64_t kSkynetSum = kSkynetLeaves * (kSkynetLeaves - 1) / 2;

// Tasks fib(n) spawns: one per call with n >= 2.
constexpr double fib_spawns(int n) { return n < 2 ? 0 : 1 + fib_spawns(n - 1) + fib_spawns(n - 2); }
// Every node of the skynet tree, the root included.
constexpr double skynet_tasks() {
  double n = 0;
  for (std::uint64_t level = 1; level <= kSkynetLeaves; level *= kSkynetChildren) n += static_cast<double>(level);
  return n;
}

// Counts down to zero; the waiting thread sleeps on it.
class Countdown {
 public:
  explicit Countdown(int n) : left_(n) {}
  void hit() {
    // acq_rel: the last hit sees every other hitter's writes before it releases the waiter.
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      done_.store(true, std::memory_order_release);
      done_.notify_one();
      notified_.store(true, std::memory_order_release);  // the countdown may go after this
    }
  }
  void wait() {
    while (!done_.load(std::memory_order_acquire)) done_.wait(false, std::memory_order_acquire);
    // The waiter can see `done_` before the hitter's notify_one returns: wait for that too, so
    // that the countdown is not destroyed under it (a few instructions, unless preempted).
    while (!notified_.load(std::memory_order_acquire)) std::this_thread::yield();
  }

 private:
  std::atomic<int> left_;
  std::atomic<bool> done_{false};
  std::atomic<bool> notified_{false};
};

inline void set_ops(benchmark::State& state, double ops) { state.counters["ops"] = ops; }

}  // namespace karx_bench

// Registers <library>_<workload> with 1 and 2 worker threads (the benchmark argument).
#define KARX_BENCH_WORKLOAD(library, workload) \
  BENCHMARK(library##_##workload)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond)
