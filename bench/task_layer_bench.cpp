// Google Benchmark suite for the task layer (karx.task), with its peers in the same binary.
//
// Every benchmark runs on one thread, on the smallest executor that is still honest: a global
// std::deque<karx::Task<>> run queue and a stateless schedule function that pushes to it (so
// the schedule function takes no space in the task block). The peers use the same kind of
// queue.
//
//   karx  (1) BM_karx_spawn_detach_cancel       spawn, detach the handle, drop the Task unrun
//                                               (that cancels: the future is destroyed, the block
//                                               freed). Cost of making and unmaking a task.
//         (2) BM_karx_spawn_run_detached        spawn, detach the handle, run the ready future
//                                               once (it completes; the output is dropped and the
//                                               block freed inside run). Spawn is in the timed
//                                               region: this is spawn+run, nothing subtracted.
//         (2c) BM_karx_async_spawn_run_join     spawn + run + join of a ready karx::Async: one block
//                                               (the frame's). Goal: no more than (8).
//              BM_karx_async_spawn_detached_run the same with spawn_detached (no handle).
//         (3) BM_karx_spawn_schedule_run_join   THE HEADLINE: spawn, task.schedule() into the
//                                               queue, pop, run, poll the JoinHandle for the int.
//         (4) BM_karx_wake_by_ref_run_pending   an idle, always-pending task: Waker::wake() (the
//                                               schedule function pushes the Task), pop, run (it
//                                               returns pending and goes idle again).
//         (5) BM_karx_clone_wake_run_pending    as (4) but a clone of the waker is woken and
//                                               released: std::move(clone).wake_and_release().
//         (6) BM_karx_async_chain_spawn_run_join/N
//                                               N karx::Async<int> frames each co_awaiting the
//                                               next, the innermost co_awaits a ready future;
//                                               spawned, scheduled, run, joined as (3).
//   peer  (7) BM_std_packaged_task_queue_run_get
//                                               std::packaged_task<int()> + std::future<int>
//                                               through a std::deque of packaged tasks: the
//                                               same work as (3), the naive C++ way.
//   base  (8) BM_baseline_malloc64_free_2rmw    one 64-byte malloc+free and two uncontended
//             BM_baseline_scalable_malloc64_free_2rmw
//                                               fetch_adds; the second with oneTBB's
//                                               scalable_malloc/free, the allocator of task blocks.
//
// After the usual report the binary prints a summary: the median (or the single) CPU time of
// each benchmark and the goals: (7)/(3) >= 3, (2c)/(8) <= 1, (2b)/(8) and (3)/(8) <= 2. bench/summarize.sh runs it
// with repetitions; see there. --benchmark_format=json keeps stdout pure JSON (the summary
// then goes to stderr).
#include <benchmark/benchmark.h>
#include <tbb/scalable_allocator.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <coroutine>  // before `import karx;`: this file defines coroutines
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

import karx;

namespace {

// --- The minimal executor ---------------------------------------------------------------------

std::deque<karx::Task<>> g_queue;

// Stateless: takes no space in the task block (the header is followed directly by the future).
struct Enqueue {
  void operator()(karx::Task<> task) const { g_queue.push_back(std::move(task)); }
};

[[gnu::always_inline]] inline bool run_front() {
  karx::Task<> task = std::move(g_queue.front());
  g_queue.pop_front();
  return task.run();
}

// A future that is ready at its first poll.
struct Ready {
  int value;
  karx::Poll<int> poll(karx::Context&) { return karx::ready(value); }
};

// A future that never completes.
struct Never {
  karx::Poll<int> poll(karx::Context&) { return karx::pending; }
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "karx_task_bench: sanity check failed: %s\n", what);
  std::abort();
}

// --- (1) spawn alone ----------------------------------------------------------------------------

void BM_karx_spawn_detach_cancel(benchmark::State& state) {
  for (auto _ : state) {
    auto [task, handle] = karx::spawn(Ready{42}, Enqueue{});
    handle.detach();  // one CAS: INITIAL -> INITIAL without HANDLE
    task.cancel();    // close, destroy the future, drop the last reference: frees the block
  }
}
BENCHMARK(BM_karx_spawn_detach_cancel);

// --- (2) spawn + run a ready task (handle detached) ----------------------------------------------

void BM_karx_spawn_run_detached(benchmark::State& state) {
  for (auto _ : state) {
    auto [task, handle] = karx::spawn(Ready{42}, Enqueue{});
    handle.detach();
    benchmark::DoNotOptimize(task.run());  // completes; output dropped, block freed
  }
  if (!g_queue.empty()) fail("spawn_run_detached left a task in the queue");
}
BENCHMARK(BM_karx_spawn_run_detached);

// --- (2b) spawn + run + join: the task layer alone, no queue --------------------------------------

// The goal's own words: spawn + run + join of a ready future, compared with malloc+free and two
// atomic RMWs. No executor queue: the Task is run right where it was spawned.
void BM_karx_spawn_run_join(benchmark::State& state) {
  karx::Waker waker = karx::noop_waker();
  karx::Context cx(waker);
  for (auto _ : state) {
    auto [task, handle] = karx::spawn(Ready{42}, Enqueue{});
    task.run();
    auto out = handle.poll(cx);
    benchmark::DoNotOptimize(out);
  }
  if (!g_queue.empty()) fail("spawn_run_join left a task in the queue");
}
BENCHMARK(BM_karx_spawn_run_join);

// --- (2c) the same for a coroutine: spawn + run + join of a ready Async ---------------------------

// The issue-11 goal: a coroutine task (one block: the frame, with the task built in front of
// it) against one 64-byte malloc+free and two RMWs. The coroutine is made inside the timed
// loop: its frame is the task's only allocation.
karx::Async<int> ready_async() { co_return 42; }

void BM_karx_async_spawn_run_join(benchmark::State& state) {
  karx::Waker waker = karx::noop_waker();
  karx::Context cx(waker);
  for (auto _ : state) {
    auto [task, handle] = karx::spawn(ready_async(), Enqueue{});
    task.run();
    auto out = handle.poll(cx);
    benchmark::DoNotOptimize(out);
  }
  if (!g_queue.empty()) fail("async_spawn_run_join left a task in the queue");
}
BENCHMARK(BM_karx_async_spawn_run_join);

// spawn_detached + run of a ready Async: no handle, so a run that owns the only reference
// starts and completes the task without an atomic RMW.
void BM_karx_async_spawn_detached_run(benchmark::State& state) {
  for (auto _ : state) {
    karx::Task<> task = karx::spawn_detached(ready_async(), Enqueue{});
    benchmark::DoNotOptimize(task.run());
  }
  if (!g_queue.empty()) fail("async_spawn_detached_run left a task in the queue");
}
BENCHMARK(BM_karx_async_spawn_detached_run);

// --- (3) the headline: spawn + schedule + run + join -----------------------------------------------

template <class F>
[[gnu::always_inline]] inline std::optional<int> spawn_schedule_run_join(F future, karx::Context& cx) {
  auto [task, handle] = karx::spawn(std::move(future), Enqueue{});
  task.schedule();  // the schedule function pushes it to g_queue
  run_front();
  auto out = handle.poll(cx);
  return out.is_ready() ? std::move(out).value() : std::nullopt;
}

void BM_karx_spawn_schedule_run_join(benchmark::State& state) {
  karx::Waker waker = karx::noop_waker();
  karx::Context cx(waker);
  if (spawn_schedule_run_join(Ready{42}, cx) != std::optional<int>(42)) fail("headline did not yield 42");
  for (auto _ : state) {
    auto out = spawn_schedule_run_join(Ready{42}, cx);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_karx_spawn_schedule_run_join);

// --- (4) wake by reference of an idle task, run it back to pending ---------------------------------

// An always-pending task, run once so that it is idle; `waker` holds the only reference.
struct IdleTask {
  karx::JoinHandle<int> handle;
  karx::Waker waker = karx::noop_waker();

  IdleTask() {
    auto [task, h] = karx::spawn(Never{}, Enqueue{});
    handle = std::move(h);
    waker = task.waker();
    task.run();  // pending: idle now
    if (!g_queue.empty()) fail("an idle task is queued");
  }
  ~IdleTask() {
    handle.detach();
    {
      karx::Waker last = std::move(waker);
    }                                      // the last reference: closes it and schedules it once more
    while (!g_queue.empty()) run_front();  // that run destroys the future and frees the block
  }
};

void BM_karx_wake_by_ref_run_pending(benchmark::State& state) {
  IdleTask idle;
  for (auto _ : state) {
    idle.waker.wake();                      // idle -> SCHEDULED (+1 reference), pushed by Enqueue
    benchmark::DoNotOptimize(run_front());  // polls, pending -> idle (-1 reference)
  }
}
BENCHMARK(BM_karx_wake_by_ref_run_pending);

// --- (5) clone + wake_and_release ------------------------------------------------------------------

void BM_karx_clone_wake_run_pending(benchmark::State& state) {
  IdleTask idle;
  for (auto _ : state) {
    karx::Waker clone = idle.waker;       // +1 reference
    std::move(clone).wake_and_release();  // its reference becomes the queued Task's
    benchmark::DoNotOptimize(run_front());
  }
}
BENCHMARK(BM_karx_clone_wake_run_pending);

// --- (6) an Async chain -----------------------------------------------------------------------------

karx::Async<int> chain(int depth) {
  if (depth <= 1) co_return co_await Ready{1};
  int below = co_await chain(depth - 1);
  co_return below + 1;
}

void BM_karx_async_chain_spawn_run_join(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  karx::Waker waker = karx::noop_waker();
  karx::Context cx(waker);
  if (spawn_schedule_run_join(chain(depth), cx) != std::optional<int>(depth)) fail("async chain gave a wrong value");
  for (auto _ : state) {
    auto out = spawn_schedule_run_join(chain(depth), cx);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_karx_async_chain_spawn_run_join)->Arg(1)->Arg(8);

// --- (7) the naive C++ way: std::packaged_task + std::future ------------------------------------------

std::deque<std::packaged_task<int()>> g_packaged_queue;

void BM_std_packaged_task_queue_run_get(benchmark::State& state) {
  for (auto _ : state) {
    std::packaged_task<int()> task([] { return 42; });
    std::future<int> result = task.get_future();
    g_packaged_queue.push_back(std::move(task));
    std::packaged_task<int()> next = std::move(g_packaged_queue.front());
    g_packaged_queue.pop_front();
    next();
    benchmark::DoNotOptimize(result.get());
  }
}
BENCHMARK(BM_std_packaged_task_queue_run_get);

// --- (8) the baseline: one allocation and two atomic RMWs -------------------------------------------

template <void* (*Alloc)(std::size_t), void (*Free)(void*)>
void baseline(benchmark::State& state) {
  std::atomic<std::size_t> counter{0};
  for (auto _ : state) {
    void* block = Alloc(64);
    benchmark::DoNotOptimize(block);
    counter.fetch_add(1, std::memory_order_acq_rel);
    benchmark::ClobberMemory();
    counter.fetch_add(1, std::memory_order_acq_rel);
    benchmark::ClobberMemory();
    Free(block);
  }
  benchmark::DoNotOptimize(counter.load(std::memory_order_relaxed));
}

void* plain_malloc(std::size_t n) { return std::malloc(n); }
void plain_free(void* p) { std::free(p); }

void BM_baseline_malloc64_free_2rmw(benchmark::State& state) { baseline<&plain_malloc, &plain_free>(state); }
BENCHMARK(BM_baseline_malloc64_free_2rmw);

void BM_baseline_scalable_malloc64_free_2rmw(benchmark::State& state) {
  baseline<&scalable_malloc, &scalable_free>(state);
}
BENCHMARK(BM_baseline_scalable_malloc64_free_2rmw);

// --- The summary ------------------------------------------------------------------------------------

constexpr const char* kHeadline = "BM_karx_spawn_schedule_run_join";
constexpr const char* kSpawnRunJoin = "BM_karx_spawn_run_join";
constexpr const char* kAsyncSpawnRunJoin = "BM_karx_async_spawn_run_join";
constexpr const char* kPackaged = "BM_std_packaged_task_queue_run_get";
constexpr const char* kMalloc = "BM_baseline_malloc64_free_2rmw";

// Forwards everything to the reporter the user asked for, and remembers the CPU time per
// iteration of every run to print a summary at the end: the median aggregate when repetitions
// produced one, else the median of the plain runs.
class SummaryReporter : public benchmark::BenchmarkReporter {
 public:
  SummaryReporter(std::unique_ptr<benchmark::BenchmarkReporter> inner, std::ostream& summary_out)
      : inner_(std::move(inner)), out_(summary_out) {}

  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }

  void ReportRuns(const std::vector<Run>& runs) override {
    inner_->ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const std::string name = run.run_name.str();
      Entry& e = entry(name);
      e.order = {run.family_index, run.per_family_instance_index};
      e.unit = benchmark::GetTimeUnitString(run.time_unit);
      if (run.run_type == Run::RT_Aggregate) {
        if (run.aggregate_name == "median") e.median = run.GetAdjustedCPUTime();
      } else {
        e.samples.push_back(run.GetAdjustedCPUTime());
      }
    }
  }

  void Finalize() override {
    inner_->Finalize();
    print();
  }

 private:
  struct Entry {
    std::string name;
    std::string unit;
    std::pair<std::int64_t, std::int64_t> order;  // registration order (runs may be interleaved)
    std::optional<double> median;
    std::vector<double> samples;

    std::optional<double> value() const {
      if (median) return median;
      if (samples.empty()) return std::nullopt;
      std::vector<double> s = samples;
      std::sort(s.begin(), s.end());
      const std::size_t n = s.size();
      return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }
    std::size_t count() const { return samples.size(); }
  };

  Entry& entry(const std::string& name) {
    for (Entry& e : entries_)
      if (e.name == name) return e;
    entries_.push_back(Entry{name, {}, {}, {}, {}});
    return entries_.back();
  }
  std::optional<double> value_of(const char* name) const {
    for (const Entry& e : entries_)
      if (e.name == name && e.unit == "ns") return e.value();
    return std::nullopt;
  }

  void ratio_line(std::ostream& os, const char* label, const char* num, const char* den, double goal, bool at_least) {
    std::optional<double> a = value_of(num), b = value_of(den);
    os << "  " << std::left << std::setw(52) << label;
    if (!a || !b || *b <= 0) {
      os << "   n/a (benchmark not run)\n";
      return;
    }
    const double r = *a / *b;
    const bool pass = at_least ? r >= goal : r <= goal;
    os << std::right << std::fixed << std::setprecision(2) << std::setw(7) << r << "x   goal "
       << (at_least ? ">= " : "<= ") << std::setprecision(0) << goal << "x   " << (pass ? "PASS" : "FAIL") << "\n";
  }

  void print() {
    if (entries_.empty()) return;
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.order < b.order; });
    std::ostringstream os;
    bool aggregated = false;
    std::size_t runs = 0;
    for (const Entry& e : entries_) {
      aggregated = aggregated || e.median.has_value();
      runs = std::max(runs, e.count());
    }
    os << "\nkarx task layer summary: CPU time per operation, "
       << (aggregated ? "median of the repetitions"
                      : (runs > 1 ? "median of " + std::to_string(runs) + " runs"
                                  : "one run (use bench/summarize.sh for medians)"))
       << "\n";
    for (const Entry& e : entries_) {
      std::optional<double> v = e.value();
      if (!v) continue;
      os << "  " << std::left << std::setw(52) << e.name << std::right << std::fixed << std::setprecision(1)
         << std::setw(10) << *v << " " << e.unit << "\n";
    }
    os << "goals (ratios of the lines above, same run):\n";
    ratio_line(os, "packaged_task / karx (spawn+schedule+run+join)", kPackaged, kHeadline, 3, true);
    ratio_line(os, "karx Async (spawn+run+join) / baseline (malloc)", kAsyncSpawnRunJoin, kMalloc, 1, false);
    ratio_line(os, "karx (spawn+run+join) / baseline (malloc)", kSpawnRunJoin, kMalloc, 2, false);
    ratio_line(os, "karx (spawn+schedule+run+join) / baseline (malloc)", kHeadline, kMalloc, 2, false);
    out_ << os.str() << std::flush;
  }

  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  std::ostream& out_;
  std::vector<Entry> entries_;
};

}  // namespace

int main(int argc, char** argv) {
  // The display reporter is chosen here (so that it can be wrapped); read the flag before
  // benchmark::Initialize consumes it.
  std::string format = "console";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    constexpr std::string_view flag = "--benchmark_format=";
    if (arg.starts_with(flag)) format = std::string(arg.substr(flag.size()));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  std::unique_ptr<benchmark::BenchmarkReporter> inner;
  if (format == "console") {
    inner = std::make_unique<benchmark::ConsoleReporter>(
        isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular : benchmark::ConsoleReporter::OO_Tabular);
  } else if (format == "json") {
    inner = std::make_unique<benchmark::JSONReporter>();
  }
  if (inner) {
    // Keep stdout machine-readable when it is not the console format.
    SummaryReporter reporter(std::move(inner), format == "console" ? std::cout : std::cerr);
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();  // another format: the library's own reporter, no summary
  }
  benchmark::Shutdown();
  return 0;
}
