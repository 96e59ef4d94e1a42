// The monitor (Go's sysmon): notices a poll whose thread is blocked in the kernel, or that has
// run longer than blocking_threshold, and hands its worker's slot to another worker; prints
// KARX_SCHEDTRACE lines.
//
// Blocked or busy. A poll that has run past the threshold is not necessarily blocked: it may
// be computing. Handing off a computing poll's slot starts another thread that competes for
// the same cores (200 CPU-bound polls of 28 ms on 2 processors started 32 threads), while a
// poll blocked in the kernel holds a processor it does not use, and the sooner it is handed
// off the better. So the monitor samples the CPU clock of the thread of any poll older than
// kBlockedAfter: if it has not moved for kCpuStill and the kernel does not list the thread as
// runnable (/proc/self/task/<tid>/stat: not R), the thread is blocked and its slot goes at
// once (a blocked hand-off, about 1 ms after the call began). A poll whose thread keeps
// running is handed off only at the threshold (a busy hand-off), and no more than
// busy_handoff_cap of those at once: each keeps a core busy beside the processors, and the
// machine has only so many cores.
module;
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
module karx.executor;
import karx.machinery;
import :scheduler;

namespace karx::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::microseconds kMinDelay{20};
constexpr std::chrono::milliseconds kMaxDelay{10};
constexpr std::chrono::microseconds kBlockedAfter{1000};  // a poll this old has its thread checked
constexpr std::chrono::microseconds kCpuStill{500};       // CPU time standing still this long
constexpr std::chrono::microseconds kLongPollDelay{250};  // the look's period while a poll is long

// The kernel's state of a thread of this process: false only if it could be read and is not R
// (running or runnable), so that a failed read never makes a poll look blocked.
bool thread_runnable(pid_t tid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return true;
  char text[512];
  const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
  std::fclose(f);
  text[n] = '\0';
  // "tid (comm) S ...": the state follows the last ')' (a thread's name may hold one).
  const char* close = std::strrchr(text, ')');
  if (close == nullptr || close[1] != ' ' || close[2] == '\0') return true;
  return close[2] == 'R';
}

// Whether the thread running `w`'s poll is blocked in the kernel (see the top of the file).
// Updates the monitor's CPU-time sample of it.
bool poll_thread_blocked(Worker& w, Clock::time_point now) noexcept {
  if (!w.has_thread_clock.load(std::memory_order_relaxed)) return false;
  timespec ts{};
  if (::clock_gettime(w.thread_clock.load(std::memory_order_relaxed), &ts) != 0) return false;
  const std::int64_t cpu = static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  if (cpu != w.seen_cpu_ns) {
    w.seen_cpu_ns = cpu;
    w.seen_cpu_at = now;
    return false;
  }
  if (now - w.seen_cpu_at < kCpuStill) return false;
  return !thread_runnable(w.thread_id.load(std::memory_order_relaxed));
}

void print_schedtrace(const RuntimeCore& core, Clock::time_point start) {
  const RuntimeMetrics m = core.metrics();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  std::fprintf(stderr,
               "karx: schedtrace %lldms: processors=%llu threads=%llu idle=%llu spawned=%llu polled=%llu "
               "completed=%llu steals=%llu handoffs=%llu (blocked=%llu busy=%llu) injector=%llu\n",
               static_cast<long long>(ms), static_cast<unsigned long long>(m.processors),
               static_cast<unsigned long long>(m.threads), static_cast<unsigned long long>(m.idle_threads),
               static_cast<unsigned long long>(m.tasks_spawned), static_cast<unsigned long long>(m.tasks_polled),
               static_cast<unsigned long long>(m.tasks_completed), static_cast<unsigned long long>(m.steals),
               static_cast<unsigned long long>(m.handoffs), static_cast<unsigned long long>(m.blocked_handoffs),
               static_cast<unsigned long long>(m.busy_handoffs), static_cast<unsigned long long>(m.injector_depth));
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
    bool polling = false, long_poll = false, acted = false;
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
        w.seen_cpu_ns = -1;
        continue;
      }
      long_poll = true;
      const Clock::duration ran = now - w.seen_at;
      std::uint64_t mark = 0;
      if (ran >= kBlockedAfter && poll_thread_blocked(w, now))
        mark = kRevoked;
      else if (ran >= options.blocking_threshold && busy_revoked.load(std::memory_order_relaxed) < busy_handoff_cap)
        mark = kRevoked | kRevokedBusy;
      if (mark == 0) continue;
      // Revoke the slot, if that same poll still runs.
      std::uint64_t expected = word;
      if (w.poll_word.compare_exchange_strong(expected, word | mark, std::memory_order_acq_rel)) {
        if ((mark & kRevokedBusy) != 0) {
          busy_handoffs.fetch_add(1, std::memory_order_relaxed);
          busy_revoked.fetch_add(1, std::memory_order_relaxed);
        } else {
          blocked_handoffs.fetch_add(1, std::memory_order_relaxed);
        }
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

    // While slots are held, look at least every busy_cap (a poll that starts right after a
    // look is seen one look later: the bound is threshold + 2 x busy_cap), and every
    // kLongPollDelay while some poll is long enough to be checked for a blocked thread.
    const bool slots_held = free_slots.load(std::memory_order_relaxed) < static_cast<int>(processors);
    const std::chrono::nanoseconds cap = long_poll ? std::min<std::chrono::nanoseconds>(busy_cap, kLongPollDelay)
                                         : polling || slots_held ? busy_cap
                                                                 : kMaxDelay;
    delay = acted ? kMinDelay : std::min<std::chrono::nanoseconds>(delay * 2, cap);
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
