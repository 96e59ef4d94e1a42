// Shared by the karx.sync benchmarks (karx_sync_bench): the sizes of the workloads (the same in
// every library and in the Go peer under bench/peers/go, sync.go), what a benchmark reports,
// and the registration macros. Every benchmark is named <library>_<workload>/<processors> and
// sets the user counter `ops` (messages or lock/unlock pairs per iteration), so that
// bench/run_all divides the iteration time into ns per message / per lock.
//
//   channel_1to1, channel_4to4  a bounded channel of capacity kCapacity; 1 producer and 1
//                               consumer, or 4 and 4; kMessages messages per iteration in all
//                               (each producer sends kMessages / producers); the channel
//                               closes when the producers are done, the consumers receive
//                               until it is closed and drained. 1 and 2 processors.
//   mutex_uncontended           one task takes and releases a lock kLocks times around an
//                               increment of a counter. 1 processor.
//   mutex_contended             kContendedLockers tasks do the same on one lock and one
//                               counter. 2 processors.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>

namespace karx_sync_bench {

inline constexpr int kMessages = 100000;     // channel_*: per iteration, over all producers
inline constexpr int kCapacity = 64;         // channel_*: the bounded channel's capacity
inline constexpr int kLocks = 10000;         // mutex_*: lock/unlock pairs per task
inline constexpr int kContendedLockers = 4;  // mutex_contended: tasks on one lock

// What the consumers of one iteration must have received in all: every producer sends
// 0, 1, ..., per - 1.
inline std::uint64_t expected_sum(int producers) {
  const std::uint64_t per = static_cast<std::uint64_t>(kMessages / producers);
  return static_cast<std::uint64_t>(producers) * per * (per - 1) / 2;
}

inline int messages(int producers) { return producers * (kMessages / producers); }

inline void set_ops(benchmark::State& state, double ops) { state.counters["ops"] = ops; }

}  // namespace karx_sync_bench

// <library>_channel_<shape> with 1 and 2 processors (the benchmark argument).
#define KARX_SYNC_CHANNEL(library, shape) \
  BENCHMARK(library##_channel_##shape)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond)
// <library>_mutex_uncontended with 1 processor, <library>_mutex_contended with 2.
#define KARX_SYNC_MUTEX(library)                                                                \
  BENCHMARK(library##_mutex_uncontended)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond); \
  BENCHMARK(library##_mutex_contended)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond)
