// Shared by the runtime workload benchmarks: the sizes of the workloads (the same in every
// library and in the Go peer under bench/peers/go), a countdown the waiting thread sleeps on,
// and the registration macro. Every benchmark is named <library>_<workload>/<threads> and sets
// the user counter `ops` (operations per iteration), so that bench/run_all divides the
// iteration time into ns per task / spawn / round / yield.
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <thread>

namespace karx_bench {

inline constexpr int kSpawns = 10000;  // spawn_many, spawn_many_inside
inline constexpr int kDepth = 1000;    // chained_spawn
inline constexpr int kRounds = 1000;   // ping_pong
inline constexpr int kYields = 1000;   // yield_many: per task; 2 x threads tasks

inline int yield_tasks(int threads) { return 2 * threads; }

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
