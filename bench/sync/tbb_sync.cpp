// oneTBB's bounded queue with blocking std::threads, the channel workloads as a C++ programmer
// without an async runtime writes them: a tbb::concurrent_bounded_queue of capacity kCapacity,
// each producer and each consumer on its own std::thread, push blocking while the queue is
// full and pop while it is empty. The queue has no close: each producer pushes one end marker
// after its messages and each consumer stops at the first it pops (as many of them as of
// producers). The threads are started once per benchmark run and released together at every
// iteration; with N processors they are pinned to N of the process's CPUs, as the runtimes' N
// processors are N threads.
#include <oneapi/tbb/concurrent_queue.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "sync_workloads.hpp"

namespace {

using namespace karx_sync_bench;

// The first n CPUs of the process's affinity mask in `out`; false (do not pin) when the process
// may run on n CPUs or fewer anyway.
bool first_cpus(int n, cpu_set_t& out) {
  cpu_set_t all;
  CPU_ZERO(&all);
  if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) <= n) return false;
  CPU_ZERO(&out);
  for (int cpu = 0, taken = 0; cpu < CPU_SETSIZE && taken < n; ++cpu)
    if (CPU_ISSET(cpu, &all)) {
      CPU_SET(cpu, &out);
      ++taken;
    }
  return true;
}

// A fixed crew of threads, each running body(index) once per run(); run() returns when all
// have finished.
class Crew {
 public:
  Crew(int threads, int processors, std::function<void(int)> body) : body_(std::move(body)), barrier_(threads + 1) {
    cpu_set_t cpus;
    const bool pin = first_cpus(processors, cpus);
    threads_.reserve(threads);
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this, i] {
        for (;;) {
          barrier_.arrive_and_wait();  // released by run() (or the destructor)
          if (stop_.load(std::memory_order_relaxed)) return;
          body_(i);
          barrier_.arrive_and_wait();  // run() returns once every thread is here
        }
      });
      // Before the first iteration: the thread waits at the barrier until run().
      if (pin) pthread_setaffinity_np(threads_.back().native_handle(), sizeof cpus, &cpus);
    }
  }
  Crew(const Crew&) = delete;
  Crew& operator=(const Crew&) = delete;
  ~Crew() {
    stop_.store(true, std::memory_order_relaxed);  // the barrier orders it before the load
    barrier_.arrive_and_wait();
    for (auto& t : threads_) t.join();
  }

  void run() {
    barrier_.arrive_and_wait();
    barrier_.arrive_and_wait();
  }

 private:
  std::function<void(int)> body_;
  std::barrier<> barrier_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

struct alignas(64) Sum {
  std::uint64_t value = 0;
};

template <int Producers, int Consumers>
void tbb_channel(benchmark::State& state) {
  static_assert(Producers == Consumers, "one end marker per producer stops one consumer");
  constexpr std::int64_t kEnd = -1;
  constexpr int per = kMessages / Producers;
  tbb::concurrent_bounded_queue<std::int64_t> queue;
  queue.set_capacity(kCapacity);
  std::vector<Sum> sums(Consumers);
  Crew crew(Producers + Consumers, static_cast<int>(state.range(0)), [&](int i) {
    if (i < Producers) {
      for (int k = 0; k < per; ++k) queue.push(k);
      queue.push(kEnd);
    } else {
      std::uint64_t sum = 0;
      std::int64_t v;
      for (;;) {
        queue.pop(v);
        if (v == kEnd) break;
        sum += static_cast<std::uint64_t>(v);
      }
      sums[i - Producers].value = sum;
    }
  });
  for (auto _ : state) {
    crew.run();
    std::uint64_t total = 0;
    for (const Sum& s : sums) total += s.value;
    if (total != expected_sum(Producers)) {
      state.SkipWithError("the consumers' sum is wrong");
      break;
    }
  }
  set_ops(state, messages(Producers));
}

void tbb_channel_1to1(benchmark::State& state) { tbb_channel<1, 1>(state); }
void tbb_channel_4to4(benchmark::State& state) { tbb_channel<4, 4>(state); }

KARX_SYNC_CHANNEL(tbb, 1to1);
KARX_SYNC_CHANNEL(tbb, 4to4);

}  // namespace
