// Runtime::metrics() keeps its relations at every sample, under load: a sampler thread reads
// the metrics as fast as it can while tasks are spawned from outside and inside, block,
// join, run on the blocking pool and on guests in block_on, and threads start and exit.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

import karx;

namespace {

using namespace std::chrono_literals;

std::string show(const karx::RuntimeMetrics& m) {
  std::ostringstream out;
  out << "threads=" << m.threads << " idle=" << m.idle_threads << " spawned=" << m.tasks_spawned
      << " polled=" << m.tasks_polled << " completed=" << m.tasks_completed << " handoffs=" << m.handoffs
      << " (blocked=" << m.blocked_handoffs << " busy=" << m.busy_handoffs << ")";
  return out.str();
}

karx::Async<int> leaf() { co_return 1; }

karx::Async<int> node(karx::Runtime* rt, int depth) {
  if (depth == 0) co_return co_await leaf();
  auto a = rt->spawn(node(rt, depth - 1));
  auto b = rt->spawn(node(rt, depth - 1));
  if (depth % 3 == 0) karx::blocking([] { std::this_thread::sleep_for(200us); });
  co_return (co_await a).value() + (co_await b).value();
}

TEST(Metrics, RelationsHoldAtEverySampleUnderLoad) {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.blocking_threshold = 1ms;
  o.idle_thread_timeout = 2ms;  // spares come and go while we sample
  o.max_threads = 16;
  karx::Runtime rt(o);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> samples{0};
  std::vector<std::string> broken;
  std::thread sampler([&] {
    while (!stop.load(std::memory_order_acquire)) {
      const karx::RuntimeMetrics m = rt.metrics();
      samples.fetch_add(1, std::memory_order_relaxed);
      const bool ok = m.idle_threads <= m.threads && m.tasks_completed <= m.tasks_spawned &&
                      m.tasks_completed <= m.tasks_polled && m.handoffs == m.blocked_handoffs + m.busy_handoffs &&
                      m.threads <= o.max_threads;
      if (!ok && broken.size() < 5) broken.push_back(show(m));
    }
  });
  const auto until = std::chrono::steady_clock::now() + 400ms;
  std::vector<std::thread> spawners;
  for (int t = 0; t < 2; ++t)
    spawners.emplace_back([&] {
      while (std::chrono::steady_clock::now() < until) {
        // A guest in block_on, tasks spawned from outside, and the blocking pool.
        EXPECT_EQ(rt.block_on(node(&rt, 6)), 64);
        for (int i = 0; i < 50; ++i) rt.spawn(leaf()).detach();
        auto pooled = rt.spawn_blocking([] { return 3; });
        EXPECT_EQ(karx::block_on(std::move(pooled)), std::optional<int>(3));
        std::this_thread::sleep_for(3ms);  // long enough for spares to time out now and then
      }
    });
  for (auto& t : spawners) t.join();
  std::this_thread::sleep_for(10ms);
  stop.store(true, std::memory_order_release);
  sampler.join();
  EXPECT_GT(samples.load(), 100u);
  EXPECT_TRUE(broken.empty()) << broken.size() << " broken samples, the first: " << broken.front();
}

}  // namespace

namespace {

// Callers of block_on whose roots sleep wait on the idle list as guests: they are not threads
// of the runtime, so they must not count as idle threads (with none of the runtime's own
// workers started yet, threads is the monitor alone).
TEST(Metrics, GuestsWaitingInBlockOnAreNotCountedAsIdleThreads) {
  karx::RuntimeOptions o;
  o.processors = 2;
  karx::Runtime rt(o);
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i)
    callers.emplace_back([&] { rt.block_on([]() -> karx::Async<void> { co_await karx::sleep_for(150ms); }()); });
  std::vector<std::string> broken;
  const auto until = std::chrono::steady_clock::now() + 100ms;
  while (std::chrono::steady_clock::now() < until) {
    const karx::RuntimeMetrics m = rt.metrics();
    if (m.idle_threads > m.threads && broken.size() < 5) broken.push_back(show(m));
    std::this_thread::sleep_for(1ms);
  }
  for (auto& t : callers) t.join();
  EXPECT_TRUE(broken.empty()) << broken.size() << " broken samples, the first: " << broken.front();
}

}  // namespace
