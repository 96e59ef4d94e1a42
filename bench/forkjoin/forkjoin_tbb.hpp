// fib and skynet as oneTBB's users write them, with a task_group per call and with
// parallel_invoke, shared by the throughput benchmark (bench/runtime) and the peak-RSS probe
// (bench/probes). Sizes: sizes.hpp.
#pragma once

#include <oneapi/tbb/parallel_invoke.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "sizes.hpp"

namespace karx_forkjoin {

inline std::uint64_t tbb_fib(int n) {
  if (n < 2) return static_cast<std::uint64_t>(n);
  std::uint64_t a = 0;
  tbb::task_group tg;
  tg.run([&a, n] { a = tbb_fib(n - 1); });
  const std::uint64_t b = tbb_fib(n - 2);
  tg.wait();
  return a + b;
}

inline std::uint64_t tbb_skynet(std::uint64_t num, std::uint64_t size) {
  if (size == 1) return num;
  const std::uint64_t step = size / kSkynetChildren;
  std::uint64_t sums[kSkynetChildren];
  tbb::task_group tg;
  for (std::uint64_t i = 0; i < kSkynetChildren; ++i)
    tg.run([&sums, i, num, step] { sums[i] = tbb_skynet(num + i * step, step); });
  tg.wait();
  std::uint64_t sum = 0;
  for (std::uint64_t s : sums) sum += s;
  return sum;
}

// parallel_invoke: the children as one call that returns when all have (oneTBB runs one of
// them on the calling thread and offers the others to thieves).
inline std::uint64_t tbb_invoke_fib(int n) {
  if (n < 2) return static_cast<std::uint64_t>(n);
  std::uint64_t a = 0, b = 0;
  tbb::parallel_invoke([&a, n] { a = tbb_invoke_fib(n - 1); }, [&b, n] { b = tbb_invoke_fib(n - 2); });
  return a + b;
}

std::uint64_t tbb_invoke_skynet(std::uint64_t num, std::uint64_t size);

template <std::size_t... I>
void tbb_invoke_skynet_children(std::uint64_t* sums, std::uint64_t num, std::uint64_t step,
                                std::index_sequence<I...>) {
  tbb::parallel_invoke([sums, num, step] { sums[I] = tbb_invoke_skynet(num + I * step, step); }...);
}

inline std::uint64_t tbb_invoke_skynet(std::uint64_t num, std::uint64_t size) {
  if (size == 1) return num;
  const std::uint64_t step = size / kSkynetChildren;
  std::uint64_t sums[kSkynetChildren];
  tbb_invoke_skynet_children(sums, num, step, std::make_index_sequence<kSkynetChildren>{});
  std::uint64_t sum = 0;
  for (std::uint64_t s : sums) sum += s;
  return sum;
}

inline bool run_tbb_invoke_fib(tbb::task_arena& arena) {
  return arena.execute([] { return tbb_invoke_fib(kFibN); }) == kFibValue;
}

inline bool run_tbb_invoke_skynet(tbb::task_arena& arena) {
  return arena.execute([] { return tbb_invoke_skynet(0, kSkynetLeaves); }) == kSkynetSum;
}

inline bool run_tbb_fib(tbb::task_arena& arena) {
  return arena.execute([] { return tbb_fib(kFibN); }) == kFibValue;
}

// The root is a task too, as in karx and Go.
inline bool run_tbb_skynet(tbb::task_arena& arena) {
  const std::uint64_t sum = arena.execute([] {
    std::uint64_t result = 0;
    tbb::task_group tg;
    tg.run([&result] { result = tbb_skynet(0, kSkynetLeaves); });
    tg.wait();
    return result;
  });
  return sum == kSkynetSum;
}

}  // namespace karx_forkjoin
