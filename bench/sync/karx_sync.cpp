// karx's channel and Mutex (karx.sync) in Async tasks on a karx::Runtime. Each iteration runs
// under Runtime::block_on: the root task spawns the consumers and the producers (or the
// lockers) and awaits their handles.
#include <coroutine>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "sync_workloads.hpp"
import karx;

namespace {

using namespace karx_sync_bench;

karx::RuntimeOptions with_processors(benchmark::State& state) {
  karx::RuntimeOptions o;
  o.processors = static_cast<unsigned>(state.range(0));
  return o;
}

// A producer owns a copy of the Sender: the channel closes when the last producer is done.
karx::Async<> produce(karx::Sender<std::uint64_t> tx, int count) {
  for (int i = 0; i < count; ++i)
    if (!co_await tx.send(static_cast<std::uint64_t>(i))) co_return;  // closed under us
}

karx::Async<std::uint64_t> consume(karx::Receiver<std::uint64_t> rx) {
  std::uint64_t sum = 0;
  while (std::optional<std::uint64_t> v = co_await rx.recv()) sum += *v;
  co_return sum;
}

karx::Async<bool> channel_round(karx::Runtime* rt, int producers, int consumers) {
  auto [tx, rx] = karx::channel<std::uint64_t>(kCapacity);
  std::vector<karx::JoinHandle<std::uint64_t>> sums;
  sums.reserve(consumers);
  for (int c = 0; c < consumers; ++c) sums.push_back(rt->spawn(consume(rx)));
  {
    // The root gives up its Receiver and its Sender: only the tasks hold the channel's ends.
    auto root_rx = std::move(rx);
    auto root_tx = std::move(tx);
    for (int p = 0; p < producers; ++p) rt->spawn(produce(root_tx, kMessages / producers)).detach();
  }
  std::uint64_t total = 0;
  for (auto& h : sums) total += (co_await h).value_or(0);
  co_return total == expected_sum(producers);
}

// How the tasks were scheduled, for the analysis in docs/bench.md: task polls and successful
// steals per message (or per lock) over the whole run.
void report_scheduling(benchmark::State& state, const karx::Runtime& rt, const karx::RuntimeMetrics& before,
                       double ops_per_iteration) {
  const karx::RuntimeMetrics after = rt.metrics();
  const double ops = static_cast<double>(state.iterations()) * ops_per_iteration;
  if (ops <= 0) return;
  state.counters["polls_per_op"] = static_cast<double>(after.tasks_polled - before.tasks_polled) / ops;
  state.counters["steals_per_op"] = static_cast<double>(after.steals - before.steals) / ops;
}

template <int Producers, int Consumers>
void karx_channel(benchmark::State& state) {
  karx::Runtime rt(with_processors(state));
  const karx::RuntimeMetrics before = rt.metrics();
  for (auto _ : state)
    if (!rt.block_on(channel_round(&rt, Producers, Consumers))) {
      state.SkipWithError("the consumers' sum is wrong");
      break;
    }
  set_ops(state, messages(Producers));
  report_scheduling(state, rt, before, messages(Producers));
}

void karx_channel_1to1(benchmark::State& state) { karx_channel<1, 1>(state); }
void karx_channel_4to4(benchmark::State& state) { karx_channel<4, 4>(state); }

karx::Async<> lock_loop(karx::Mutex* mutex, long* counter) {
  for (int i = 0; i < kLocks; ++i) {
    karx::MutexGuard guard = co_await mutex->lock();
    ++*counter;
  }
}

karx::Async<bool> lockers(karx::Runtime* rt, int tasks) {
  karx::Mutex mutex;
  long counter = 0;
  std::vector<karx::JoinHandle<void>> handles;
  handles.reserve(tasks);
  for (int i = 0; i < tasks; ++i) handles.push_back(rt->spawn(lock_loop(&mutex, &counter)));
  for (auto& h : handles) co_await h;
  co_return counter == static_cast<long>(tasks) * kLocks;
}

void run_lockers(benchmark::State& state, int tasks) {
  karx::Runtime rt(with_processors(state));
  const karx::RuntimeMetrics before = rt.metrics();
  for (auto _ : state)
    if (!rt.block_on(lockers(&rt, tasks))) {
      state.SkipWithError("the counter is wrong");
      break;
    }
  set_ops(state, static_cast<double>(tasks) * kLocks);
  report_scheduling(state, rt, before, static_cast<double>(tasks) * kLocks);
}

void karx_mutex_uncontended(benchmark::State& state) { run_lockers(state, 1); }
void karx_mutex_contended(benchmark::State& state) { run_lockers(state, kContendedLockers); }

KARX_SYNC_CHANNEL(karx, 1to1);
KARX_SYNC_CHANNEL(karx, 4to4);
KARX_SYNC_MUTEX(karx);

}  // namespace
