// The monitor (Go's sysmon): notices a poll that has run longer than blocking_threshold and
// hands its worker's slot to another worker; prints KARX_SCHEDTRACE lines.
module;
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
module karx.executor;
import karx.machinery;
import :scheduler;

namespace karx::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::microseconds kMinDelay{20};
constexpr std::chrono::milliseconds kMaxDelay{10};

void print_schedtrace(const RuntimeCore& core, Clock::time_point start) {
  const RuntimeMetrics m = core.metrics();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  std::fprintf(stderr,
               "karx: schedtrace %lldms: processors=%llu threads=%llu idle=%llu spawned=%llu polled=%llu "
               "completed=%llu steals=%llu handoffs=%llu injector=%llu\n",
               static_cast<long long>(ms), static_cast<unsigned long long>(m.processors),
               static_cast<unsigned long long>(m.threads), static_cast<unsigned long long>(m.idle_threads),
               static_cast<unsigned long long>(m.tasks_spawned), static_cast<unsigned long long>(m.tasks_polled),
               static_cast<unsigned long long>(m.tasks_completed), static_cast<unsigned long long>(m.steals),
               static_cast<unsigned long long>(m.handoffs), static_cast<unsigned long long>(m.injector_depth));
}

}  // namespace

void RuntimeCore::monitor_main() noexcept {
  const Clock::time_point start = Clock::now();
  Clock::time_point next_trace = start + schedtrace;
  std::chrono::nanoseconds delay = kMinDelay;
  // While a poll runs, look often enough to notice a block soon after the threshold: a poll
  // is first seen up to one look after it starts and revoked up to one look after the
  // threshold, so a revocation comes at most threshold + 2 x threshold/16 after the poll began
  // (11.25 ms for the default 10 ms).
  const std::chrono::nanoseconds busy_cap =
      std::clamp<std::chrono::nanoseconds>(options.blocking_threshold / 16, kMinDelay, kMaxDelay);

  while (!shutting_down.load(std::memory_order_acquire)) {
    const Clock::time_point now = Clock::now();
    bool polling = false, acted = false;
    const unsigned n = worker_count.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; ++i) {
      Worker& w = *workers[i];
      const std::uint64_t word = w.poll_word.load(std::memory_order_relaxed);
      if (!in_poll(word) || (word & kRevoked) != 0) {
        w.seen_word = word;
        continue;
      }
      polling = true;
      if (word != w.seen_word) {  // a new poll since we last looked: its clock starts now
        w.seen_word = word;
        w.seen_at = now;
        continue;
      }
      if (now - w.seen_at < options.blocking_threshold) continue;
      // The same poll has run past the threshold: revoke the slot, if that poll still runs.
      std::uint64_t expected = word;
      if (w.poll_word.compare_exchange_strong(expected, word | kRevoked, std::memory_order_acq_rel)) {
        handoffs.fetch_add(1, std::memory_order_relaxed);
        revoked_workers.fetch_add(1, std::memory_order_relaxed);
        free_slots.fetch_add(1, std::memory_order_acq_rel);
        wakep();
        acted = true;
      }
    }

    // A thread could not be started while work waited for it: try again (backing off as
    // the loop's delay does while nothing else happens).
    if (budget.take_retry()) retry_thread_starts();

    if (schedtrace.count() > 0 && now >= next_trace) {
      print_schedtrace(*this, start);
      next_trace = now + schedtrace;
    }

    delay = acted ? kMinDelay : std::min<std::chrono::nanoseconds>(delay * 2, polling ? busy_cap : kMaxDelay);
    if (!polling && schedtrace.count() == 0 && !budget.retry_pending() &&
        free_slots.load(std::memory_order_acquire) == static_cast<int>(processors)) {
      // Nothing runs: sleep until wakep hands out a slot. Announce it, then re-check (wakep
      // takes a slot, then looks at monitor_idle: one of us sees the other).
      monitor_idle.store(true, std::memory_order_seq_cst);
      if (free_slots.load(std::memory_order_seq_cst) == static_cast<int>(processors) && !budget.retry_pending() &&
          !shutting_down.load(std::memory_order_acquire)) {
        monitor_parker.park();
      }
      monitor_idle.store(false, std::memory_order_relaxed);
      delay = kMinDelay;
      continue;
    }
    monitor_parker.park_for(schedtrace.count() > 0 ? std::min<std::chrono::nanoseconds>(delay, schedtrace) : delay);
  }
}

}  // namespace karx::detail
