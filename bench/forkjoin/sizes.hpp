// The fork-join workloads' sizes (the Go peer's bench/peers/go/forkjoin.go uses the same).
// fib: each call with n >= 2 spawns fib(n-1) as a task, computes fib(n-2) itself, then waits
// for the task. skynet: a 10-ary tree of tasks over 10^6 leaves; each leaf returns its number,
// each node the sum of its children's. Both are reported per task spawned.
#pragma once

#include <cstdint>

namespace karx_forkjoin {

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

}  // namespace karx_forkjoin
