// fib and skynet on karx, shared by the throughput benchmark (bench/runtime) and the peak-RSS
// probe (bench/probes). Include after `import karx;`. Sizes and shapes: bench/forkjoin/sizes.hpp.
#pragma once

#include <array>
#include <coroutine>
#include <cstdint>
#include <optional>

#include "sizes.hpp"

namespace karx_forkjoin {

// Each call with n >= 2 spawns fib(n-1) as a task, awaits fib(n-2) inline, then the task.
inline karx::Async<std::uint64_t> fib(karx::Runtime* rt, int n) {
  if (n < 2) co_return static_cast<std::uint64_t>(n);
  auto child = rt->spawn(fib(rt, n - 1));
  const std::uint64_t b = co_await fib(rt, n - 2);
  const std::optional<std::uint64_t> a = co_await child;
  co_return a.value() + b;
}

// A node spawns its 10 children as tasks and sums what they return; a leaf returns its number.
inline karx::Async<std::uint64_t> skynet(karx::Runtime* rt, std::uint64_t num, std::uint64_t size) {
  if (size == 1) co_return num;
  const std::uint64_t step = size / kSkynetChildren;
  std::array<karx::JoinHandle<std::uint64_t>, kSkynetChildren> children;
  for (std::uint64_t i = 0; i < kSkynetChildren; ++i) children[i] = rt->spawn(skynet(rt, num + i * step, step));
  std::uint64_t sum = 0;
  for (auto& child : children) sum += (co_await child).value();
  co_return sum;
}

inline bool run_fib(karx::Runtime& rt) { return rt.block_on(fib(&rt, kFibN)) == kFibValue; }
inline bool run_skynet(karx::Runtime& rt) { return rt.block_on(skynet(&rt, 0, kSkynetLeaves)) == kSkynetSum; }

}  // namespace karx_forkjoin
