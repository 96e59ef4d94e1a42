// Shared by the runtime probes: JSON-line output, process readings (RSS, CPU time, thread
// count), a countdown the main thread sleeps on, and the entry point of each workload.
// Plain C++ only (no karx import), so that every translation unit may include it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace karx_probes {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// One JSON object, printed as a single line on stdout by print().
class JsonLine {
 public:
  JsonLine& add(std::string_view key, std::string_view value);
  JsonLine& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  JsonLine& add(std::string_view key, std::int64_t value);
  JsonLine& add(std::string_view key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  JsonLine& add(std::string_view key, std::uint64_t value);
  JsonLine& add(std::string_view key, double value, int decimals = 3);
  void print() const;

 private:
  void key(std::string_view k);
  std::string text_ = "{";
};

// Resident set size now: /proc/self/statm resident pages x page size.
std::uint64_t rss_bytes();
// CPU time of the whole process so far (getrusage RUSAGE_SELF, user + system).
double process_cpu_ms();
// The "Threads:" line of /proc/self/status.
int process_threads();
// Gives freed heap memory back to the OS, so that a following RSS reading is a clean baseline.
void trim_heap();

// Counts down to zero; the main thread sleeps on it until the last hit. The last hitter
// signals under the mutex, so the waiter may destroy the countdown as soon as wait() returns
// (with atomic wait/notify the hitter would still touch the atomic after the waiter saw zero).
class Countdown {
 public:
  explicit Countdown(std::int64_t n) : left_(n) {}
  void hit() {
    // acq_rel: the last hitter sees every other hitter's writes before it releases the waiter.
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      done_ = true;
      cv_.notify_one();
    }
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
  }
  // False if the count has not reached zero within `timeout`.
  bool wait_for(std::chrono::nanoseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return done_; });
  }
  // Hits still missing; negative if there were more hits than the count.
  std::int64_t left() const { return left_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::int64_t> left_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
};

// The ticker's record of one blocking run: gaps between consecutive ticks while the blockers
// run (the measured window; a gap that began before the window opened counts from its opening).
// Written by the ticker alone; read after it is joined.
//
// The batch timed during the blocking phase floods the global queue, and a yielding ticker
// waits behind all of it: that wait says nothing about blocking. So gaps that overlap the batch
// are also kept apart, and the *_outside_batch figures show what the blockers alone cost.
struct TickStats {
  static constexpr std::chrono::milliseconds kStall{1};  // a gap longer than this is a stall

  std::atomic<bool> stop{false};

  Clock::duration max_gap{}, stall{};                              // every gap
  Clock::duration max_gap_outside_batch{}, stall_outside_batch{};  // gaps clear of the batch

  void start_measuring() {
    window_start_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    measuring_.store(true, std::memory_order_release);  // publishes window_start_
  }
  void stop_measuring() { measuring_.store(false, std::memory_order_relaxed); }
  void batch_starts() { batch_epoch_.fetch_add(1, std::memory_order_relaxed); }
  void batch_ends() { batch_epoch_.fetch_add(1, std::memory_order_relaxed); }

  // One tick: `last` is the previous tick's time, updated to now.
  void tick(Clock::time_point& last) {
    const Clock::time_point now = Clock::now();
    const unsigned epoch = batch_epoch_.load(std::memory_order_relaxed);
    if (measuring_.load(std::memory_order_acquire)) {
      const Clock::time_point opened{Clock::duration(window_start_.load(std::memory_order_relaxed))};
      const Clock::duration gap = now - std::max(last, opened);
      record(gap, max_gap, stall);
      // Clear of the batch: it neither ran at either end of the gap nor started or ended inside.
      if (epoch == last_epoch_ && epoch % 2 == 0) record(gap, max_gap_outside_batch, stall_outside_batch);
    }
    last = now;
    last_epoch_ = epoch;
  }

 private:
  static void record(Clock::duration gap, Clock::duration& max, Clock::duration& total) {
    if (gap > max) max = gap;
    if (gap > kStall) total += gap;
  }
  std::atomic<bool> measuring_{false};
  std::atomic<Clock::rep> window_start_{0};
  std::atomic<unsigned> batch_epoch_{0};  // bumped when the batch starts and ends: odd while it runs
  unsigned last_epoch_ = 0;               // the ticker's own
};

// The common sizes of the blocking workload (every library runs the same one).
inline constexpr int kBatchTasks = 100000;  // the batch timed quiet and while blockers run
inline constexpr int kBlockers = 4;
inline constexpr int kBlocksPerBlocker = 10;
inline constexpr std::chrono::milliseconds kBlockFor{100};
inline constexpr int kThreads = 2;  // processors / pool threads in every workload

// Workload entry points. Each prints its JSON line(s); errors are thrown.
enum class BlockingVariant { default_threshold, threshold_1ms, blocking_call };
enum class FutureKind { coroutine, hand_written };
enum class ForkJoin { fib, skynet };
enum class BlockedOrBusy { blocking_calls, cpu_bound };

void blocking_karx(BlockingVariant variant);
void blocking_tbb();
void blocking_asio();
void idle_karx();
void idle_tbb();
void idle_asio();
void memory_karx(FutureKind kind);
void memory_tbb();
void forkjoin_karx(ForkJoin workload);
void forkjoin_tbb(ForkJoin workload);
void blocked_or_busy_karx(BlockedOrBusy workload);

}  // namespace karx_probes
