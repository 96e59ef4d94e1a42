// Two workloads for the monitor's two kinds of hand-off (impl/executor/monitor.cpp), on a
// karx runtime of 2 processors with the default blocking threshold (10 ms):
//
//  - blocking_calls: 100 tasks, each blocking its thread for 20 ms in an unannounced call (a
//    real sleep in the kernel, no karx::blocking), all queued at once, while a ticker task
//    sleeps 5 ms at a time. The ticker's worst lateness (the time past each deadline at which
//    it ran) shows how long queued work waits behind blocked workers.
//  - cpu_bound: 200 tasks, each computing for 30 ms in one poll. Every poll runs past the
//    threshold, but none is blocked: the extra threads the runtime starts for them (beyond a
//    worker per processor and the monitor) show whether it mistakes busy for blocked.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "probes.hpp"
import karx;

namespace karx_probes {
namespace {

constexpr int kBlockingCalls = 100;
constexpr std::chrono::milliseconds kBlockingCall{20};
constexpr std::chrono::milliseconds kTick{5};
constexpr int kCpuBoundPolls = 200;
constexpr std::chrono::milliseconds kCpuBoundPoll{30};

struct BlockInKernel {
  karx::Poll<> poll(karx::Context&) {
    std::this_thread::sleep_for(kBlockingCall);
    return karx::ready();
  }
};

struct Compute {
  karx::Poll<> poll(karx::Context&) {
    const auto until = Clock::now() + kCpuBoundPoll;
    while (Clock::now() < until) {
    }
    return karx::ready();
  }
};

// Sleeps kTick at a time until `stop`, recording the worst time past a deadline it woke at.
karx::Async<> ticker(const std::atomic<bool>* stop, Clock::duration* worst, int* ticks) {
  while (!stop->load(std::memory_order_acquire)) {
    const auto deadline = Clock::now() + kTick;
    co_await karx::sleep_until(deadline);
    *worst = std::max(*worst, Clock::now() - deadline);
    ++*ticks;
  }
}

karx::RuntimeOptions two_processors() {
  karx::RuntimeOptions o;
  o.processors = kThreads;
  return o;
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

void blocked_or_busy_karx(BlockedOrBusy workload) {
  const bool blocking = workload == BlockedOrBusy::blocking_calls;
  karx::Runtime rt(two_processors());
  rt.block_on([]() -> karx::Async<> { co_return; }());  // the workers are up
  const std::uint64_t started_before = rt.metrics().threads_started;
  const auto t0 = Clock::now();

  std::atomic<bool> stop{false};
  Clock::duration worst{};
  int ticks = 0;
  std::optional<karx::JoinHandle<void>> tick;
  std::vector<karx::JoinHandle<void>> tasks;
  if (blocking) {
    tick = rt.spawn(ticker(&stop, &worst, &ticks));
    for (int i = 0; i < kBlockingCalls; ++i) tasks.push_back(rt.spawn(BlockInKernel{}));
  } else {
    for (int i = 0; i < kCpuBoundPolls; ++i) tasks.push_back(rt.spawn(Compute{}));
  }
  for (auto& t : tasks)
    if (!karx::block_on(std::move(t))) throw std::runtime_error("a task of the workload was canceled");
  if (tick) {
    stop.store(true, std::memory_order_release);
    if (!karx::block_on(std::move(*tick))) throw std::runtime_error("the ticker was canceled");
  }

  const karx::RuntimeMetrics m = rt.metrics();
  JsonLine row;
  row.add("kind", "blocked_or_busy")
      .add("library", "karx")
      .add("workload", blocking ? "blocking_calls" : "cpu_bound")
      .add("tasks", static_cast<std::int64_t>(tasks.size()));
  if (blocking) row.add("worst_lateness_ms", ms(worst), 2).add("ticks", static_cast<std::int64_t>(ticks));
  row.add("wall_ms", ms(Clock::now() - t0), 1)
      .add("blocked_handoffs", m.blocked_handoffs)
      .add("busy_handoffs", m.busy_handoffs)
      .add("extra_threads", m.threads_started - started_before)
      .print();
}

}  // namespace karx_probes
