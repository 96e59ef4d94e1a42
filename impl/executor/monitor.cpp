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
#include <pthread.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>
#include <thread>
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
  MonitorView& view = w.monitor_view;
  if (!w.has_thread_clock.load(std::memory_order_relaxed)) return false;
  timespec ts{};
  if (::clock_gettime(w.thread_clock.load(std::memory_order_relaxed), &ts) != 0) return false;
  const std::int64_t cpu = static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  if (cpu != view.seen_cpu_ns) {
    view.seen_cpu_ns = cpu;
    view.seen_cpu_at = now;
    return false;
  }
  if (now - view.seen_cpu_at < kCpuStill) return false;
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

void Monitor::start() {
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error& e) {
    throw std::system_error(e.code(), "karx::Runtime: cannot start the monitor thread");
  }
}

void Monitor::stop() noexcept {
  parker_.unpark();  // the loop sees shutting_down at its next turn
  core_.netpoll_wake(this);
  if (thread_.joinable()) thread_.join();
}

void Monitor::run() noexcept {
  pthread_setname_np(pthread_self(), "karx-monitor");
  RuntimeCore& core = core_;
  const Clock::time_point start = Clock::now();
  Clock::time_point next_trace = start + core.schedtrace;
  std::chrono::nanoseconds delay = kMinDelay;
  // While a poll runs, look often enough to notice a block soon after the threshold: a poll
  // is first seen up to one look after it starts and revoked up to one look after the
  // threshold, so a revocation comes at most threshold + 2 x threshold/16 after the poll began
  // (11.25 ms for the default 10 ms).
  const std::chrono::nanoseconds busy_cap =
      std::clamp<std::chrono::nanoseconds>(core.options.blocking_threshold / 16, kMinDelay, kMaxDelay);

  while (!core.shutting_down.load(std::memory_order_acquire)) {
    const Clock::time_point now = Clock::now();
    const Look look = look_at_polls(now);
    core.netpoll_if_stale();  // sockets: nobody polled for 10 ms (netpoll.cpp, step 3)

    // A thread could not be started while work waited for it: try again (backing off as
    // the loop's delay does while nothing else happens).
    if (core.budget.take_retry()) retry_thread_starts();

    if (core.schedtrace.count() > 0 && now >= next_trace) {
      print_schedtrace(core, start);
      next_trace = now + core.schedtrace;
    }

    // Parks only once its delay has backed off to the longest (about 20 ms of no slot taken):
    // a runtime that goes idle between short bursts of work (a network server between
    // requests) would otherwise pay a futex wake of the monitor per burst (slot_taken).
    if (!look.polling && delay >= kMaxDelay && park_while_idle()) {
      delay = kMinDelay;
      continue;
    }
    // While slots are held, look at least every busy_cap (a poll that starts right after a
    // look is seen one look later: the bound is threshold + 2 x busy_cap), and every
    // kLongPollDelay while some poll is long enough to be checked for a blocked thread.
    const bool slots_held = core.slots.free_hint() < static_cast<int>(core.slots.processors());
    const std::chrono::nanoseconds cap = look.long_poll ? std::min<std::chrono::nanoseconds>(busy_cap, kLongPollDelay)
                                         : look.polling || slots_held ? busy_cap
                                                                      : kMaxDelay;
    delay = look.acted ? kMinDelay : std::min<std::chrono::nanoseconds>(delay * 2, cap);
    parker_.park_for(core.schedtrace.count() > 0 ? std::min<std::chrono::nanoseconds>(delay, core.schedtrace) : delay);
  }
}

Monitor::Look Monitor::look_at_polls(Clock::time_point now) noexcept {
  RuntimeCore& core = core_;
  Look look;
  const unsigned n = core.workers.size();
  for (unsigned i = 0; i < n; ++i) {
    Worker& w = *core.workers[i];
    MonitorView& view = w.monitor_view;
    const std::uint64_t seq = w.poll.seq();
    if (!PollWord::in_poll(seq) || w.poll.claimed()) {
      view.seen_seq = seq;
      continue;
    }
    look.polling = true;
    if (seq != view.seen_seq) {  // a new poll since we last looked: its clock starts now
      view.seen_seq = seq;
      view.seen_at = now;
      view.seen_cpu_ns = -1;
      continue;
    }
    look.long_poll = true;
    // Work waits behind a poll that has run since the last look (20 µs to busy_cap ago),
    // while a processor is free. A task in runnext: thieves leave a running worker's runnext
    // to it, expecting the poll that made the task to end soon (worker.cpp, steal); this one
    // has not, so move the task to the injector, where the worker woken for it finds it.
    // Tasks in the queue: thieves may take them, but the wake-up for them is not fenced
    // (runtime_core.cpp, submit_local) and can miss a worker that was just parking; wake one.
    if (core.slots.free_hint() > 0) {
      if (RawTask t = w.take_runnext()) {
        core_submit_outside(&core, Task<>::from_raw(t));
        look.acted = true;
      } else if (!w.local.empty()) {
        core.wakep();
        look.acted = true;
      }
    }
    // A worker waiting inside block_on keeps its processor (Worker::waiting_in_block_on):
    // checked before the blocked test, which reads the thread's state from /proc.
    if (w.waiting_in_block_on.load(std::memory_order_relaxed)) continue;
    const Clock::duration ran = now - view.seen_at;
    Revocation kind = Revocation::none;
    if (ran >= kBlockedAfter && poll_thread_blocked(w, now))
      kind = Revocation::blocked;
    else if (ran >= core.options.blocking_threshold &&
             core.busy_revoked.load(std::memory_order_relaxed) < core.busy_handoff_cap)
      kind = Revocation::busy;
    if (kind == Revocation::none) continue;
    // Counted before the claim, and given back if it fails: a worker that sees the claim
    // takes itself off these counts, after them (try_revoke's release, its settle's acquire).
    core.revoked_workers.fetch_add(1, std::memory_order_relaxed);
    if (kind == Revocation::busy) core.busy_revoked.fetch_add(1, std::memory_order_relaxed);
    if (!w.poll.try_revoke(seq, kind)) {  // the poll ended first
      core.revoked_workers.fetch_sub(1, std::memory_order_relaxed);
      if (kind == Revocation::busy) core.busy_revoked.fetch_sub(1, std::memory_order_relaxed);
      continue;
    }
    (kind == Revocation::busy ? core.busy_handoffs : core.blocked_handoffs).fetch_add(1, std::memory_order_relaxed);
    core.slots.give_back();
    core.wakep();
    look.acted = true;
  }
  return look;
}

// --- Parking while no slot is taken: both halves ------------------------------------------------
//
// The monitor parks when no slot is taken: it stores idle_, then checks the free slots. A slot
// taker takes a slot, then checks idle_ (slot_taken). seq_cst on both sides: one sees the
// other. The check may be made by the worker a wakep gave the slot to, after the wakep's CAS
// (which happens before the worker's unpark): the monitor's seq_cst load of the free slots
// that misses that CAS then precedes the worker's fence in the total order, whose load sees
// the flag.

bool Monitor::park_while_idle() noexcept {
  RuntimeCore& core = core_;
  if (core.schedtrace.count() != 0 || core.budget.retry_pending() || !core.slots.all_free_seq_cst()) return false;
  idle_.store(true, std::memory_order_seq_cst);
  if (core.slots.all_free_seq_cst() && !core.budget.retry_pending() &&
      !core.shutting_down.load(std::memory_order_acquire)) {
    // With sockets, the idle runtime sleeps in the netpoller, here if no idle worker does
    // (netpoll.cpp, step 4); slot_taken's netpoll_wake interrupts it. A wait that ends with
    // the runtime still idle (a timer deadline registered meanwhile: step 4c) sleeps again at
    // once: back in its loop, the monitor would take its whole back-off (about 20 ms) before
    // it parked again, and leave the timers to the driver meanwhile.
    const auto woken = [this, &core] {
      return !idle_.load(std::memory_order_relaxed) || core.budget.retry_pending() ||
             core.shutting_down.load(std::memory_order_relaxed);
    };
    bool in_netpoller = core.sleep_in_netpoller(this, woken);
    while (in_netpoller && !woken()) in_netpoller = core.sleep_in_netpoller(this, woken);
    if (!in_netpoller) parker_.park();
  }
  idle_.store(false, std::memory_order_relaxed);
  return true;
}

void Monitor::slot_taken() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (idle_.load(std::memory_order_relaxed) && idle_.exchange(false, std::memory_order_acq_rel)) {
    parker_.unpark();
    core_.netpoll_wake(this);  // if it sleeps in the netpoller instead
  }
}

// --- Retrying thread starts ---------------------------------------------------------------------

void Monitor::ask_for_retry() noexcept {
  // The monitor may be parked for good (no slot taken): it must come back to retry
  // (thread_budget.cppm says why it cannot miss the request).
  core_.budget.ask_for_retry();
  slot_taken();
}

void Monitor::retry_thread_starts() noexcept {
  RuntimeCore& core = core_;
  // Workers: wakep hands a free slot to a new thread if work is queued; if the start fails or
  // the cap refuses it, wakep asks for a retry again. At the cap, an idle pool thread
  // is asked to leave, so the next round finds room.
  if (core.work_visible()) {
    core.worker_refused_at_cap.store(false, std::memory_order_relaxed);
    core.wakep();
    if (core.worker_refused_at_cap.load(std::memory_order_relaxed)) core.blocking_pool.release_idle_thread();
  }
  // The blocking pool: closures wait and no pool thread is idle. At the cap with no pool
  // thread at all, an idle spare worker leaves to make room, and the monitor tries again.
  if (!core.blocking_pool.retry_start()) {
    core.trim_idle_worker();
    ask_for_retry();
  }
}

}  // namespace karx::detail
