// TEMPORARY scratch for analysis; not part of the suite.
#include <benchmark/benchmark.h>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <atomic>
#include <new>
#include <tbb/scalable_allocator.h>
import karx;

std::deque<karx::Task<>> g_queue;
struct Enqueue { void operator()(karx::Task<> t) const { g_queue.push_back(std::move(t)); } };
struct Ready { int value; karx::Poll<int> poll(karx::Context&) { return karx::ready(value); } };

static void headline(benchmark::State& st) {
  karx::Waker w = karx::noop_waker(); karx::Context cx(w);
  for (auto _ : st) {
  auto [task, handle] = karx::spawn(Ready{42}, Enqueue{});
  task.schedule();
  karx::Task<> t = std::move(g_queue.front()); g_queue.pop_front();
  t.run();
  auto out = handle.poll(cx);
  benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(headline);
static void noqueue(benchmark::State& st) {
  karx::Waker w = karx::noop_waker(); karx::Context cx(w);
  for (auto _ : st) {
  auto [task, handle] = karx::spawn(Ready{42}, Enqueue{});
  task.run();
  auto out = handle.poll(cx);
  benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(noqueue);
static void queue_only(benchmark::State& st) {
  std::deque<void*> q;
  for (auto _ : st) {
    q.push_back(&st); void* p = q.front(); q.pop_front(); benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(queue_only);

template <int N, bool Scalable>
static void alloc_rmw_inblock(benchmark::State& st) {
  for (auto _ : st) {
    void* p = Scalable ? scalable_malloc(48) : malloc(48);
    auto* a = new (p) std::atomic<size_t>(0x111);
    benchmark::DoNotOptimize(p);
    size_t s = a->load(std::memory_order_acquire);
    for (int i = 0; i < N; ++i) {
      if (i % 3 == 2) a->fetch_sub(1, std::memory_order_acq_rel);
      else { while (!a->compare_exchange_weak(s, s ^ 2, std::memory_order_acq_rel)) {} s ^= 2; }
      benchmark::ClobberMemory();
    }
    if (Scalable) scalable_free(p); else free(p);
  }
}
BENCHMARK(alloc_rmw_inblock<0, true>);
BENCHMARK(alloc_rmw_inblock<2, true>);
BENCHMARK(alloc_rmw_inblock<6, true>);
BENCHMARK(alloc_rmw_inblock<0, false>);
BENCHMARK(alloc_rmw_inblock<2, false>);
BENCHMARK(alloc_rmw_inblock<6, false>);
template <int N>
static void rmw_only(benchmark::State& st) {
  std::atomic<size_t> a{0};
  for (auto _ : st) {
    for (int i = 0; i < N; ++i) { a.fetch_add(1, std::memory_order_acq_rel); benchmark::ClobberMemory(); }
  }
}
BENCHMARK(rmw_only<1>);
BENCHMARK(rmw_only<6>);
BENCHMARK_MAIN();
