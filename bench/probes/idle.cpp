// The idle workload: what a runtime with 2 threads costs in CPU time when it has nothing to do.
// Every worker runs some tasks first (so every thread has started and gone through its park
// path), then the process's CPU time is read across 2 s of the main thread sleeping.

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <coroutine>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include "probes.hpp"
#include "tbb_pool.hpp"
import karx;

namespace karx_probes {
namespace {

constexpr int kWarmTasks = 1000;     // per round
constexpr int kMaxWarmRounds = 100;  // rounds until every thread has run a task
constexpr std::chrono::milliseconds kSettle{200};
constexpr std::chrono::seconds kIdleFor{2};

// The threads that ran a warm-up task. A task records its thread and spins a little, so that a
// round is not all eaten by the first thread to wake.
class ThreadsSeen {
 public:
  void record() {
    const auto until = Clock::now() + std::chrono::microseconds(2);
    while (Clock::now() < until) {
    }
    std::lock_guard lock(mutex_);
    ids_.insert(std::this_thread::get_id());
  }
  std::size_t count() {
    std::lock_guard lock(mutex_);
    return ids_.size();
  }

 private:
  std::mutex mutex_;
  std::set<std::thread::id> ids_;
};

// Runs rounds of kWarmTasks tasks through `run_round(seen)` until kThreads threads have run one.
template <class RunRound>
void warm_up(const char* library, RunRound run_round) {
  ThreadsSeen seen;
  int rounds = 0;
  while (seen.count() < static_cast<std::size_t>(kThreads) && rounds < kMaxWarmRounds) {
    run_round(seen);
    ++rounds;
  }
  if (seen.count() < static_cast<std::size_t>(kThreads))
    std::fprintf(stderr, "idle %s: only %zu of %d threads ran a warm-up task\n", library, seen.count(), kThreads);
}

void measure_idle(const char* library) {
  std::this_thread::sleep_for(kSettle);  // past any spin-before-sleep of the workers
  const double cpu_before = process_cpu_ms();
  const Clock::time_point start = Clock::now();
  std::this_thread::sleep_for(kIdleFor);
  const double cpu_ms = process_cpu_ms() - cpu_before;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  JsonLine()
      .add("kind", "idle")
      .add("library", library)
      .add("threads", kThreads)
      .add("cpu_ms_per_s", cpu_ms / seconds)
      .print();
}

karx::Async<> record(ThreadsSeen* seen, Countdown* left) {
  seen->record();
  left->hit();
  co_return;
}

}  // namespace

void idle_karx() {
  karx::RuntimeOptions options;
  options.processors = kThreads;
  karx::Runtime rt(options);
  warm_up("karx", [&rt](ThreadsSeen& seen) {
    Countdown left(kWarmTasks);
    for (int i = 0; i < kWarmTasks; ++i) rt.spawn(record(&seen, &left)).detach();
    left.wait();
  });
  measure_idle("karx");
}

void idle_tbb() {
  TbbPool setup;
  tbb::task_arena& arena = setup.arena;
  warm_up("tbb", [&arena](ThreadsSeen& seen) {
    Countdown left(kWarmTasks);
    for (int i = 0; i < kWarmTasks; ++i)
      arena.enqueue([&seen, &left] {
        seen.record();
        left.hit();
      });
    left.wait();
  });
  measure_idle("tbb");
}

void idle_asio() {
  boost::asio::thread_pool pool(kThreads);
  warm_up("asio", [&pool](ThreadsSeen& seen) {
    Countdown left(kWarmTasks);
    for (int i = 0; i < kWarmTasks; ++i)
      boost::asio::post(pool, [&seen, &left] {
        seen.record();
        left.hit();
      });
    left.wait();
  });
  measure_idle("asio");
  pool.join();
}

}  // namespace karx_probes
