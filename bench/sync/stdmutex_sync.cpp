// std::mutex held across no await, in karx tasks: the peer of karx::Mutex on the same runtime
// and in the same tasks (tokio's advice: a blocking mutex is the right one when the critical
// section never awaits). Each task locks, increments the shared counter and unlocks, kLocks
// times, without yielding in between.
#include <coroutine>
#include <mutex>
#include <vector>

#include "sync_workloads.hpp"
import karx;

namespace {

using namespace karx_sync_bench;

karx::Async<> lock_loop(std::mutex* mutex, long* counter) {
  for (int i = 0; i < kLocks; ++i) {
    std::lock_guard guard(*mutex);
    ++*counter;
  }
  co_return;
}

karx::Async<bool> lockers(karx::Runtime* rt, int tasks) {
  std::mutex mutex;
  long counter = 0;
  std::vector<karx::JoinHandle<void>> handles;
  handles.reserve(tasks);
  for (int i = 0; i < tasks; ++i) handles.push_back(rt->spawn(lock_loop(&mutex, &counter)));
  for (auto& h : handles) co_await h;
  co_return counter == static_cast<long>(tasks) * kLocks;
}

void run_lockers(benchmark::State& state, int tasks) {
  karx::RuntimeOptions options;
  options.processors = static_cast<unsigned>(state.range(0));
  karx::Runtime rt(options);
  for (auto _ : state)
    if (!rt.block_on(lockers(&rt, tasks))) {
      state.SkipWithError("the counter is wrong");
      break;
    }
  set_ops(state, static_cast<double>(tasks) * kLocks);
}

void stdmutex_mutex_uncontended(benchmark::State& state) { run_lockers(state, 1); }
void stdmutex_mutex_contended(benchmark::State& state) { run_lockers(state, kContendedLockers); }

KARX_SYNC_MUTEX(stdmutex);

}  // namespace
