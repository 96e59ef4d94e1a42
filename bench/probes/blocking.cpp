// The blocking workload: 4 tasks each block their thread for 100 ms, ten times, on 2 threads.
// Meanwhile a ticker task yields in a loop (its largest gap between ticks and its total stall
// show how long ready tasks wait) and a batch of 100,000 trivial tasks is timed against the same
// batch on a quiet runtime. karx hands a blocked worker's processor to another thread; oneTBB and
// Boost.Asio have no such detection, so their rows show what blocking inside a task costs there.
#include <oneapi/tbb/task_group.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <coroutine>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <utility>

#include "probes.hpp"
#include "tbb_pool.hpp"
import karx;

namespace karx_probes {
namespace {

// A real sleep: the thread is blocked in the kernel, as in a blocking system call.
void block_thread() { std::this_thread::sleep_for(kBlockFor); }

double in_ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// One row. `threads_note` (or null) says what threads_started counts when it is not the
// runtime's own counter. The two *_outside_batch fields come last: they are extra (TickStats).
void print_blocking_row(const char* library, const char* variant, const TickStats& stats, double quiet_ms,
                        double blocked_batch_ms, std::uint64_t threads_started, const char* threads_note,
                        double blocked_ms) {
  JsonLine row;
  row.add("kind", "blocking")
      .add("library", library)
      .add("variant", variant)
      .add("threads", kThreads)
      .add("max_gap_ms", in_ms(stats.max_gap))
      .add("stall_ms", in_ms(stats.stall))
      .add("batch_quiet_ms", quiet_ms)
      .add("batch_blocked_ms", blocked_batch_ms)
      .add("threads_started", threads_started);
  if (threads_note != nullptr) row.add("threads_started_note", threads_note);
  row.add("blocked_ms", blocked_ms)
      .add("max_gap_outside_batch_ms", in_ms(stats.max_gap_outside_batch))
      .add("stall_outside_batch_ms", in_ms(stats.stall_outside_batch))
      .print();
}

// ---- karx ----

karx::Async<> bump(Countdown* c) {
  c->hit();
  co_return;
}

double karx_batch(karx::Runtime& rt) {
  Countdown left(kBatchTasks);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBatchTasks; ++i) rt.spawn(bump(&left)).detach();
  left.wait();
  return ms_between(start, Clock::now());
}

karx::Async<> karx_ticker(TickStats* stats) {
  Clock::time_point last = Clock::now();
  while (!stats->stop.load(std::memory_order_relaxed)) {
    co_await karx::yield_now();
    stats->tick(last);
  }
}

karx::Async<> karx_blocker(bool declared, Countdown* done) {
  for (int i = 0; i < kBlocksPerBlocker; ++i) {
    if (declared)
      karx::blocking(block_thread);  // says so up front: the processor is handed off at once
    else
      block_thread();  // the monitor notices it after blocking_threshold
  }
  done->hit();
  co_return;
}

}  // namespace

void blocking_karx(BlockingVariant variant) {
  karx::RuntimeOptions options;
  options.processors = kThreads;
  const char* name = "default threshold (10ms)";
  if (variant == BlockingVariant::threshold_1ms) {
    options.blocking_threshold = std::chrono::milliseconds(1);
    name = "threshold 1ms";
  } else if (variant == BlockingVariant::blocking_call) {
    name = "karx::blocking()";
  }
  karx::Runtime rt(options);

  karx_batch(rt);  // unmeasured: the quiet batch must not pay for first-use costs (heap growth)
  const double quiet_ms = karx_batch(rt);

  TickStats stats;
  karx::JoinHandle<void> ticker = rt.spawn(karx_ticker(&stats));
  Countdown blockers(kBlockers);
  stats.start_measuring();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBlockers; ++i)
    rt.spawn(karx_blocker(variant == BlockingVariant::blocking_call, &blockers)).detach();
  stats.batch_starts();
  const double blocked_batch_ms = karx_batch(rt);
  stats.batch_ends();
  blockers.wait();
  const double blocked_ms = ms_between(start, Clock::now());
  stats.stop_measuring();
  stats.stop.store(true, std::memory_order_relaxed);
  // Joining the ticker orders its writes to `stats` before our reads.
  if (!karx::block_on(std::move(ticker))) throw std::runtime_error("the ticker was canceled");

  print_blocking_row("karx", name, stats, quiet_ms, blocked_batch_ms, rt.metrics().threads_started, nullptr,
                     blocked_ms);
}

// ---- oneTBB: a task_arena of 2 threads; tasks come from outside with enqueue ----

namespace {

double tbb_batch(tbb::task_arena& arena) {
  Countdown left(kBatchTasks);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBatchTasks; ++i) arena.enqueue([&left] { left.hit(); });
  left.wait();
  return ms_between(start, Clock::now());
}

// Re-posts itself after each tick. enqueue, not task_group::run: run would put it on top of
// this thread's own LIFO deque and the ticker would take the thread forever, which is not a
// yield; enqueue sends it to the back of the arena's shared FIFO, as karx::yield_now does.
struct TbbTicker {
  tbb::task_arena* arena;
  tbb::task_group* group;
  TickStats* stats;
  Clock::time_point last;
  void operator()() const {  // oneTBB runs its functors as const: the next run gets a copy
    TbbTicker next = *this;
    stats->tick(next.last);
    if (!stats->stop.load(std::memory_order_relaxed)) arena->enqueue(group->defer(next));
  }
};

}  // namespace

void blocking_tbb() {
  TbbPool setup;
  tbb::task_arena& arena = setup.arena;
  tbb::task_group group;  // the ticker and the blockers, joined at the end

  tbb_batch(arena);  // unmeasured: the quiet batch must not pay for first-use costs (heap growth)
  const double quiet_ms = tbb_batch(arena);

  TickStats stats;
  arena.enqueue(group.defer(TbbTicker{&arena, &group, &stats, Clock::now()}));
  Countdown blockers(kBlockers);
  stats.start_measuring();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBlockers; ++i)
    arena.enqueue(group.defer([&blockers] {
      for (int k = 0; k < kBlocksPerBlocker; ++k) block_thread();
      blockers.hit();
    }));
  stats.batch_starts();
  const double blocked_batch_ms = tbb_batch(arena);
  stats.batch_ends();
  blockers.wait();
  const double blocked_ms = ms_between(start, Clock::now());
  stats.stop_measuring();
  stats.stop.store(true, std::memory_order_relaxed);
  arena.execute([&group] { group.wait(); });  // the ticker's last run has returned

  // Counted while the arena and its workers are alive; minus the main thread.
  const auto threads = static_cast<std::uint64_t>(process_threads() - 1);
  print_blocking_row("tbb", "no blocking detection", stats, quiet_ms, blocked_batch_ms, threads, "threads alive at end",
                     blocked_ms);
}

// ---- Boost.Asio: a thread_pool of 2 threads ----

namespace {

double asio_batch(boost::asio::thread_pool& pool) {
  Countdown left(kBatchTasks);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBatchTasks; ++i) boost::asio::post(pool, [&left] { left.hit(); });
  left.wait();
  return ms_between(start, Clock::now());
}

// Re-posts itself after each tick: post (not defer) puts it at the back of the pool's shared
// queue, behind whatever is waiting, as karx::yield_now does.
struct AsioTicker {
  boost::asio::thread_pool* pool;
  TickStats* stats;
  Countdown* stopped;
  Clock::time_point last;
  void operator()() {
    stats->tick(last);
    if (stats->stop.load(std::memory_order_relaxed))
      stopped->hit();
    else
      boost::asio::post(*pool, *this);
  }
};

}  // namespace

void blocking_asio() {
  boost::asio::thread_pool pool(kThreads);

  asio_batch(pool);  // unmeasured: the quiet batch must not pay for first-use costs (heap growth)
  const double quiet_ms = asio_batch(pool);

  TickStats stats;
  Countdown ticker_stopped(1);
  boost::asio::post(pool, AsioTicker{&pool, &stats, &ticker_stopped, Clock::now()});
  Countdown blockers(kBlockers);
  stats.start_measuring();
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kBlockers; ++i)
    boost::asio::post(pool, [&blockers] {
      for (int k = 0; k < kBlocksPerBlocker; ++k) block_thread();
      blockers.hit();
    });
  stats.batch_starts();
  const double blocked_batch_ms = asio_batch(pool);
  stats.batch_ends();
  blockers.wait();
  const double blocked_ms = ms_between(start, Clock::now());
  stats.stop_measuring();
  stats.stop.store(true, std::memory_order_relaxed);
  ticker_stopped.wait();  // the ticker's last run has written `stats`

  const auto threads = static_cast<std::uint64_t>(process_threads() - 1);
  pool.join();
  print_blocking_row("asio", "no blocking detection", stats, quiet_ms, blocked_batch_ms, threads,
                     "threads alive at end", blocked_ms);
}

}  // namespace karx_probes
