// Parking and waking: both halves of the protocol that hands processor slots to workers
// (Go's wakep / stopm), and the transitions of a worker's searching state. A worker with
// nothing to do gives its slot up, joins the idle list and parks; whoever makes work available
// calls wakep(), which hands a free slot to an idle (or new) worker unless one is already
// searching. Neither side may miss the other: see wakep and look_again_after_giving_up_slot.
module;
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <new>
module karx.executor;
import karx.machinery;
import :scheduler;

namespace karx::detail {

// --- The waking side ---------------------------------------------------------------------------

bool RuntimeCore::work_visible() const noexcept {
  if (!injector.empty()) return true;
  const unsigned n = workers.size();
  for (unsigned i = 0; i < n; ++i) {
    const Worker* w = workers[i];
    if (!w->local.empty()) return true;
    // A runnext counts only between its owner's polls: during one, thieves leave it to the
    // owner (worker.cpp, steal), and a searcher that counted it would spin instead of parking.
    if (w->runnext.load(std::memory_order_relaxed) != nullptr && !PollWord::in_poll(w->poll.seq())) return true;
  }
  return false;
}

// Called after making work available. The fence pairs with the one a worker issues between
// giving up its slot and re-checking the queues before it parks (Go's wakep / stopm): either
// the worker sees the new work, or we see its freed slot.
void RuntimeCore::wakep() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wakep_after_seq_cst();
}

// The work was published by a seq_cst RMW (or wakep's fence). The loads are seq_cst too, so a
// parking worker's "free its slot (or stop searching); seq_cst fence; look at the queues"
// cannot miss it: if our load misses its RMW, our publication precedes its fence in the
// single total order, and its look after the fence sees the work. On x86 this path is plain
// loads, where a fence (mfence) would cost more than the rest of a spawn.
// (submit_local calls it for a task pushed into a worker's own queue without that guarantee, a
// hint backed by the monitor: see there.)
void RuntimeCore::wakep_after_seq_cst() noexcept {
  if (slots.anyone_searching_seq_cst()) return;  // a searcher will find it
  if (slots.free_seq_cst() <= 0) return;         // every slot is busy: their workers will get to it
  if (!slots.take()) return;
  slots.count_woken_searcher();  // the woken worker starts searching

  Worker* w = nullptr;
  bool retry = false;
  {
    const IdleList::Lock lock = idle.lock();
    if (shutting_down.load(std::memory_order_relaxed)) {
      w = nullptr;
    } else if ((w = idle.take_newest(lock)) != nullptr) {
      w->given_slot.store(true, std::memory_order_relaxed);  // published by unpark's release
    } else {
      w = start_worker(retry);
    }
  }
  if (w == nullptr) {
    // No thread to give the slot to (at the thread cap, the start failed, or shutting down):
    // return it. The work stays queued for the workers that hold slots, or for a later wakep;
    // after a refusal or a failure the monitor retries, asked only now that the slot is back
    // (asked earlier, its retry could find the slot still taken, give up, and never retry).
    slots.uncount_woken_searcher();
    slots.give_back();
    if (retry) ask_for_retry();
    return;
  }
  // The worker wakes the monitor itself once it runs with the slot (worker_main, park_idle's
  // caller): a thread spawning from outside pays one futex wake per wakep, not two.
  unpark_worker(w);  // on its futex, or in the netpoller (netpoll.cpp)
}

void RuntimeCore::trim_idle_worker() noexcept {
  Worker* w = nullptr;
  {
    const IdleList::Lock lock = idle.lock();
    // The oldest idle spare (wakep takes the newest); never a guest, which is no thread of ours.
    w = idle.take_oldest_if(lock, [](const Worker* x) { return !x->guest; });
    if (w == nullptr) return;
    w->exit_requested.store(true, std::memory_order_relaxed);  // published by unpark's release
  }
  unpark_worker(w);
}

// --- The parking side --------------------------------------------------------------------------

// After giving a slot back: the fence pairs with wakep's, so either
// we see work made available before it, or its wakep sees our freed slot and hands it out.
void look_again_after_giving_up_slot(RuntimeCore& core) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (core.work_visible()) core.wakep();
}

// The parking side of wakep's protocol, for workers and guests alike: stop searching, join
// the idle list, give up the slot, then look for work once more. With `unless_shutting_down`
// it does nothing else and returns false once the runtime is shutting down (shutdown has
// unparked the idle list already, and a worker parking now would sleep its whole timeout).
bool join_idle_list(Worker* w, bool holds_slot, bool unless_shutting_down) noexcept {
  RuntimeCore& core = *w->core;
  core.slots.stop_searching(w->searching);
  {
    const IdleList::Lock lock = core.idle.lock();
    if (unless_shutting_down && core.shutting_down.load(std::memory_order_relaxed)) return false;
    w->given_slot.store(false, std::memory_order_relaxed);
    try {
      core.idle.park(w, !w->guest, lock);
    } catch (const std::bad_alloc&) {
      die_out_of_memory("growing the runtime's idle list");
    }
  }
  if (holds_slot) core.slots.give_back();
  look_again_after_giving_up_slot(core);
  return true;
}

// Takes `w` off the idle list: true if it was still there; false if a wakep took it off first,
// which it does under the same lock after setting given_slot: a slot is ours.
bool leave_idle_list(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  return core.idle.take(w, core.idle.lock());
}

// Parks without a slot until wakep hands one over, the idle timeout passes, or shutdown. If
// the runtime has a netpoller and nobody sleeps in it, parks there instead (netpoll.cpp, step
// 4), for the same idle timeout counted from here: its wait also ends for the timers it fires
// and for sockets that find no free slot, and it sleeps again.
Idle park_idle(Worker* w, bool holds_slot) noexcept {
  using Clock = std::chrono::steady_clock;
  RuntimeCore& core = *w->core;
  if (!join_idle_list(w, holds_slot, true)) return Idle::exit;
  const std::chrono::nanoseconds timeout = core.options.idle_thread_timeout;
  const Clock::time_point start = Clock::now();
  const Clock::time_point give_up_at =
      timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + timeout;
  bool netpoll_sleeper = false;
  for (;;) {
    const bool in_netpoller = core.sleep_in_netpoller(
        w,
        [w, &core] {
          return w->given_slot.load(std::memory_order_relaxed) || w->exit_requested.load(std::memory_order_relaxed) ||
                 core.shutting_down.load(std::memory_order_relaxed);
        },
        give_up_at);
    netpoll_sleeper = netpoll_sleeper || in_netpoller;
    const bool unparked = in_netpoller ? Clock::now() < give_up_at : w->parker.park_for(timeout);
    if (w->exit_requested.load(std::memory_order_acquire)) {
      // The monitor took us off the idle list to make room under the thread cap.
      w->exit_requested.store(false, std::memory_order_relaxed);
      if (netpoll_sleeper) core.monitor.slot_taken();  // netpoll.cpp, step 6: it takes the role over
      return Idle::exit;
    }
    if (core.shutting_down.load(std::memory_order_acquire)) {
      if (!leave_idle_list(w) && w->given_slot.load(std::memory_order_relaxed))
        core.slots.uncount_woken_searcher();  // we were woken to search
      return Idle::exit;
    }
    if (w->given_slot.load(std::memory_order_acquire)) return Idle::got_slot;
    // Idle too long: leave, unless a wakep picked us meanwhile (then a slot is coming).
    if (!unparked && leave_idle_list(w)) {
      if (netpoll_sleeper) core.monitor.slot_taken();  // netpoll.cpp, step 6
      return Idle::exit;
    }
  }
}

}  // namespace karx::detail
