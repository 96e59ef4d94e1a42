// A worker: run what is local, then the injector, then steal; park without a slot when there
// is nothing (idle.cpp has the parking protocol); give the slot up around a blocking call.
module;
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iterator>
#include <mutex>
#include <new>
#include <optional>
#include <utility>
#include <vector>
module karx.executor;
import karx.task;
import karx.machinery;
import :scheduler;

namespace karx::detail {
namespace {

// Every 61st tick a worker looks at the injector first, so that a worker busy with its own
// queue (tasks that keep waking each other) cannot starve the global queue (Go's rule).
constexpr std::uint64_t kInjectorEvery = 61;
// Depth-first, with a bound on every wait. A worker runs its newest work first: runnext (a
// task spawned or woken on it runs next, in the time slice of the one that made it, Go's
// inheritTime), then the newest task of its queue. A fork-join tree then unfolds depth-first
// and stays as small as its depth, while thieves take the oldest tasks, the largest subtrees.
// Newest-first alone would starve the oldest tasks for as long as new ones keep coming (a
// chain of spawns, two tasks waking each other); so every kOldestEvery-th tick the worker
// serves its queue's oldest task first, and a task that yields is put behind the others (the
// next pick after a yield_now is the oldest). A task k places from the front of the queue
// runs within about k x kOldestEvery polls whatever the others do. 61, as for the injector,
// at the opposite phase so that the two turns never fall on one tick. Measured: 8 and 16
// start more subtrees of a fork-join tree breadth-first (fib(30)'s peak RSS 22 MB with
// either, 11.5 with 61; skynet's 32, 25 and 22).
constexpr std::uint64_t kOldestEvery = 61;
constexpr std::uint64_t kOldestPhase = kOldestEvery / 2;
// Rounds over all other workers a searcher makes before it gives up.
constexpr int kStealRounds = 3;

std::uint32_t next_random(std::uint32_t& state) noexcept {  // xorshift32
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

// Takes a batch from the injector under one lock: one task to run now, a fair share of the
// rest into the local queue (called when the local queue is empty or nearly so).
RawTask take_from_injector(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  constexpr std::size_t kMaxBatch = 64;
  const std::size_t share = std::min<std::size_t>(core.injector.size() / core.slots.processors() + 1, kMaxBatch);
  const std::size_t room = std::min<std::size_t>(share, w->local.capacity - w->local.size());
  RawTask batch[kMaxBatch + 1];
  const std::size_t n = core.injector.pop_batch(batch, room + 1);
  if (n == 0) return nullptr;
  for (std::size_t i = 1; i < n; ++i) {
    if (!w->local.push(batch[i])) {
      // Cannot happen (we counted the room, and only we push here), but never lose a task.
      bool pushed = false;
      try {
        pushed = core.injector.push_batch(batch + i, batch + n);
      } catch (const std::bad_alloc&) {
        die_out_of_memory("growing the runtime's global queue (a batch put back)");
      }
      if (!pushed)
        for (std::size_t k = i; k < n; ++k) drop_task(batch[k]);
      break;
    }
  }
  return batch[0];
}

RawTask steal(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  const unsigned n = core.workers.size();
  if (n <= 1) return nullptr;
  for (int round = 0; round < kStealRounds; ++round) {
    const unsigned start = next_random(w->rng) % n;
    for (unsigned k = 0; k < n; ++k) {
      Worker* victim = core.workers[(start + k) % n];
      if (victim == w) continue;
      if (RawTask t = victim->local.steal_into(w->local)) {
        w->bump(w->steals);
        return t;
      }
      // The victim's runnext too (Go does; a LIFO slot nobody may steal can starve a task),
      // but only on later rounds, and never while the victim is in a poll: the task there was
      // just made or woken by that poll, which is about to end and run it on the same worker
      // with warm caches. Taking it splits a producer from the consumer it wakes across cores,
      // and every message then costs a cross-core wake (the 2-processor channel benchmark ran
      // 2-4x slower so; docs/bench.md). A poll that does not end soon is the monitor's: it
      // revokes a blocked or too-long poll's slot, and steal_from_blocked takes the runnext.
      // (A relaxed read: a stale answer either leaves the task to its owner, which runs it
      // when its poll ends, or takes it as before.)
      if (round > 0 && !PollWord::in_poll(victim->poll.seq()))
        if (RawTask t = victim->take_runnext()) {
          w->bump(w->steals);
          return t;
        }
    }
    if (RawTask t = take_from_injector(w)) return t;
  }
  return nullptr;
}

// Tasks queued on workers whose slot was revoked (blocked in a poll) waited before anything
// in the injector: take them first, or they wait behind the whole injector. A blocked worker
// runs nothing until its poll returns, so its whole queue is taken, oldest first, as far as
// ours has room, and its runnext last (it is the newest); the rest stays for the next thief.
// (Its blocker is the poll in progress, in no queue: never taken.)
RawTask steal_from_blocked(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  const unsigned n = core.workers.size();
  for (unsigned i = 0; i < n; ++i) {
    Worker* victim = core.workers[i];
    if (victim == w) continue;
    const std::uint64_t seq = victim->poll.seq();
    if (!PollWord::in_poll(seq) || !victim->poll.claimed()) continue;
    RawTask first = victim->local.steal_into(w->local);
    if (first != nullptr) {
      w->bump(w->steals);
      // More while ours has room for a whole steal (steal_into's contract), and the victim is
      // still blocked in the same poll.
      while (w->local.capacity - w->local.size() >= w->local.capacity / 2 && victim->poll.seq() == seq) {
        RawTask more = victim->local.steal_into(w->local);
        if (more == nullptr) break;
        push_back_local(w, more);
      }
    }
    if (victim->poll.seq() == seq)
      if (RawTask t = victim->runnext.exchange(nullptr, std::memory_order_acq_rel)) {
        if (first == nullptr) return t;
        push_back_local(w, t);
      }
    if (first != nullptr) return first;
  }
  return nullptr;
}

RawTask find_work(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  ++w->tick;
  if (w->tick % kInjectorEvery == 0) {
    // Sockets get the same turn (tokio's event_interval): a worker that never runs out of
    // work would otherwise leave them to the monitor's poll every 10 ms (netpoll.cpp).
    core.netpoll_ready_work();
    if (std::optional<RawTask> t = core.injector.pop()) return *t;
  }
  if (w->tick % kOldestEvery == kOldestPhase)
    if (std::optional<RawTask> t = w->local.pop()) return *t;
  if (RawTask t = w->take_runnext()) return t;
  if (std::exchange(w->pick_oldest, false)) {
    if (std::optional<RawTask> t = w->local.pop()) return *t;
  } else if (std::optional<RawTask> t = w->local.pop_newest()) {
    return *t;
  }
  // Out of local work: the queues of blocked workers (their tasks have no processor) and the
  // injector take turns. Blocked queues only, and a task woken from outside (a timer's, say)
  // waited in the injector behind every task queued on a blocked worker: with 100 blocking
  // calls queued on 2 processors, a 5 ms ticker ran 80 ms late.
  if (core.revoked_workers.load(std::memory_order_relaxed) > 0) {
    if ((w->tick & 1) != 0)
      if (RawTask t = take_from_injector(w)) return t;
    if (RawTask t = steal_from_blocked(w)) return t;
  }
  if (RawTask t = take_from_injector(w)) return t;
  // Search (steal), if few enough workers search already (idle.cpp).
  if (!core.slots.try_start_searching(w->searching)) return nullptr;
  return steal(w);
}

// Moves everything queued on this worker to the injector (it is about to stop running tasks),
// a batch at a time from a buffer on the stack: nothing here allocates but the injector.
void spill_all(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  RawTask batch[64];
  std::size_t n = 0;
  bool any = false;
  auto flush = [&] {
    bool pushed = false;
    try {
      pushed = core.injector.push_batch(batch, batch + n);
    } catch (const std::bad_alloc&) {
      die_out_of_memory("growing the runtime's global queue (a worker handing its queue over)");
    }
    if (!pushed)
      for (std::size_t i = 0; i < n; ++i) drop_task(batch[i]);
    any = any || n > 0;
    n = 0;
  };
  if (RawTask t = w->runnext.exchange(nullptr, std::memory_order_acq_rel)) batch[n++] = t;
  while (std::optional<RawTask> t = w->local.pop()) {
    batch[n++] = *t;
    if (n == std::size(batch)) flush();
  }
  if (n > 0) flush();
  if (any) core.wakep();
}

// After a poll whose slot was revoked: take a free slot back (Go's exitsyscall fast path),
// or hand the queued work over and stop. True if the worker keeps running.
bool reacquire_slot(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  if (core.slots.take()) {
    core.monitor.slot_taken();
    return true;
  }
  spill_all(w);
  return false;
}

// Out of work: as Go's spinning Ms do, look a little longer before parking. Parking costs the
// next producer a futex call and this thread a context switch (tens of µs here); work that
// arrives within microseconds (a producer outside the pool, a task about to wake another) is
// found here instead. Only a searching worker spins: wakep leaves new work to searchers, so
// the spinner is the one that would be woken for it anyway.
constexpr std::chrono::microseconds kSpinFor{20};

// A guest also stops once its block_on is `done`.
bool spin_for_work(Worker* w, const std::atomic<bool>* done = nullptr) noexcept {
  if (!w->searching) return false;
  RuntimeCore& core = *w->core;
  const auto until = std::chrono::steady_clock::now() + kSpinFor;
  unsigned round = 0;
  do {
    for (int i = 0; i < 16; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (core.shutting_down.load(std::memory_order_relaxed)) return false;
    if (done != nullptr && done->load(std::memory_order_relaxed)) return false;
    if (core.work_visible()) return true;
    // A socket's reply often comes within the spin (a request-response peer): poll for it
    // every few rounds (a syscall each, only while sockets exist), and run it on this
    // worker instead of parking and being woken through epoll (netpoll.cpp).
    if (++round % 4 == 0 && core.netpoll_ready_work()) return true;
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

// Task::run, on a worker. run() never throws the future's exception; what it throws comes
// from a schedule function or a waker. Nothing can be returned to: report it and keep the
// worker alive.
void run_reporting(RawTask task) noexcept {
  try {
    Task<>::from_raw(task).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "karx: a task's run threw %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "karx: a task's run threw an exception not derived from std::exception\n");
  }
}

}  // namespace

void run_task(Worker* w, RawTask task) noexcept {
  w->poll.begin();  // the monitor watches the poll from here (machinery/poll_word.cppm)
  w->bump(w->polled);
  coop_budget = kCoopBudget;  // this task's turn (impl/task/coop.cppm)
  run_reporting(task);
  coop_budget = kCoopUnlimited;
  yield_requested = false;
}

// --- Work-first joins ---------------------------------------------------------------------------
//
// A task that awaits the handle of a task queued on its own worker, not yet started, would
// otherwise go to sleep, and the child would run later, wake it, and the parent be queued and
// polled again: a wake, two queue operations and a poll per join, and in a fork-join tree a
// queue as wide as the tree (most children wait in it while their parents sleep). Instead the
// join runs the child right there, nested in the parent's poll, as oneTBB's task_group::wait
// and Cilk's sync do: the tasks on top of this worker's queue, newest first, until the child
// has run. They are newer than the child, so they would have run before it anyway (the
// worker takes its newest work first), and a parent that spawned several children awaits the
// oldest first (skynet does). A nested run is a poll like any other: its own coop budget, a
// new poll for the monitor's clock (PollWord::nest), counted in tasks_polled.
// Bounds: nesting at most kMaxNested deep (a chain of tasks each awaiting the next could
// otherwise grow the stack with the chain), and at most kMaxHelped tasks run before the child
// for one join (the child may have been stolen: then the rest stays queued for this worker's
// loop, which applies its fairness rules). The parent's own budget is not refilled, so a
// parent that joins child after child still gives way after kCoopBudget joins.
namespace {
constexpr int kMaxNested = 64;
constexpr int kMaxHelped = 16;
thread_local int nested_depth = 0;

void run_nested(Worker* w, RawTask task) noexcept {
  const int budget = coop_budget;
  const bool yielding = yield_requested;
  w->poll.nest();
  ++nested_depth;
  w->bump(w->polled);
  coop_budget = kCoopBudget;
  run_reporting(task);
  --nested_depth;
  coop_budget = budget;
  yield_requested = yielding;
}
// The current thread's worker if it may run a task nested in the poll it is in: inside a poll,
// not nested too deep, its runtime not shutting down. Null otherwise.
Worker* worker_that_may_nest() noexcept {
  Worker* w = current_worker;
  if (w == nullptr || nested_depth >= kMaxNested || !PollWord::in_poll(w->poll.seq()) ||
      w->core->shutting_down.load(std::memory_order_relaxed))
    return nullptr;
  return w;
}

// This worker's newest task: runnext, else the newest of its queue. Null if it has none.
RawTask take_newest_local(Worker* w) noexcept {
  if (RawTask t = w->take_runnext()) return t;
  if (std::optional<RawTask> t = w->local.pop_newest()) return *t;
  return nullptr;
}
}  // namespace

bool core_run_here(RuntimeCore* core, RawTask child) noexcept {
  Worker* w = worker_that_may_nest();
  if (w == nullptr || w->core != core) return false;
  bool ran = false;
  for (int helped = 0; helped <= kMaxHelped; ++helped) {
    const RawTask task = take_newest_local(w);
    if (task == nullptr) break;
    run_nested(w, task);
    ran = true;
    if (task == child) break;
  }
  return ran;
}

bool help_while_blocked(std::atomic<std::uint32_t>& woken) noexcept {
  Worker* w = worker_that_may_nest();
  if (w == nullptr || w->poll.claimed()) return false;
  RawTask task = take_newest_local(w);
  if (task == nullptr)
    if (std::optional<RawTask> t = w->core->injector.pop()) task = *t;
  if (task != nullptr) {
    run_nested(w, task);
    return true;
  }
  if (w->core->netpoll_ready_work()) return true;  // sockets ready: their tasks are queued here
  // Nothing to run: wait a little for the wake, then look again (work that arrives in the
  // global queue wakes idle workers, not this one). A new poll for the monitor's clock: a
  // worker that waits here keeps its processor, and helps with it.
  w->poll.nest();
  // relaxed: a hint for the monitor's next look (see Worker::waiting_in_block_on).
  w->waiting_in_block_on.store(true, std::memory_order_relaxed);
  wait_on_word(woken, 0, std::chrono::milliseconds(1));
  w->waiting_in_block_on.store(false, std::memory_order_relaxed);
  return true;
}

namespace {

// Runs a task found by find_work on a worker holding a slot. False if the slot was revoked
// during the poll and none could be taken back.
bool run_found_task(Worker* w, RawTask task) noexcept {
  RuntimeCore& core = *w->core;
  // Found work: stop searching; if we were the last searcher and more work is in sight, wake
  // another worker to take it (Go's resetspinning wakes one whether or not there is). Waking
  // one for nothing costs a futex wake, a search and a park; a connection's task that the
  // spinning worker picked up from the netpoller then also hops to the woken thread when it
  // parks next (a bulk echo's task moved between threads at every chunk so).
  // The fence, then the loads of work_visible: a producer publishes its work, then sees
  // anyone searching or not with a seq_cst load in wakep. Either it sees our count still
  // up and leaves the work to us (we see it here), or it sees it down and wakes a worker.
  // The same fence serves as wakep's own (wakep_after_seq_cst: no second one).
  if (core.slots.stop_searching(w->searching)) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (core.work_visible()) core.wakep_after_seq_cst();
  }
  run_task(w, task);
  // The poll ends: plain stores and loads, unless the slot was revoked (machinery/poll_word.cppm).
  const Revocation revoked = w->poll.end();
  if (revoked == Revocation::none) [[likely]]
    return true;
  if (revoked == Revocation::busy) core.busy_revoked.fetch_sub(1, std::memory_order_relaxed);
  core.revoked_workers.fetch_sub(1, std::memory_order_relaxed);
  return reacquire_slot(w);
}

}  // namespace

namespace {
// The calling thread now runs `w`'s tasks: the monitor may read its CPU clock and its state.
void note_thread(Worker* w) noexcept {
  clockid_t clock{};
  const bool has = pthread_getcpuclockid(pthread_self(), &clock) == 0;
  w->thread_clock.store(clock, std::memory_order_relaxed);
  w->thread_id.store(static_cast<pid_t>(::syscall(SYS_gettid)), std::memory_order_relaxed);
  w->has_thread_clock.store(has, std::memory_order_relaxed);
}
}  // namespace

void RuntimeCore::worker_main(Worker* w) noexcept {
  pthread_setname_np(pthread_self(), "karx-worker");  // as top, gdb and perf show it
  current_worker = w;
  note_thread(w);
  current_runtime = runtime;  // until the worker returns, which ~Runtime waits for (join)
  // A new worker starts with the slot (and the searching count) of the wakep that made it,
  // or of the monitor's retry; the monitor watches the slot.
  w->searching = true;
  monitor.slot_taken();
  bool holds_slot = true;
  for (;;) {
    while (holds_slot && !shutting_down.load(std::memory_order_acquire)) {
      RawTask task = find_work(w);
      if (task == nullptr) {
        if (spin_for_work(w)) continue;
        if (netpoll_ready_work()) continue;  // sockets ready: their tasks are ours now (netpoll.cpp)
        break;
      }
      holds_slot = run_found_task(w, task);
    }
    if (shutting_down.load(std::memory_order_acquire)) break;
    if (park_idle(w, holds_slot) == Idle::exit) break;
    holds_slot = true;
    monitor.slot_taken();  // wakep gave us a slot: the monitor watches it
    w->searching = true;   // wakep counted us as searching
  }
  slots.stop_searching(w->searching);
  current_worker = nullptr;
  current_runtime = nullptr;
  const IdleList::Lock lock = idle.lock();
  w->exited = true;
  budget.exited();
}

bool enter_blocking() noexcept {
  Worker* w = current_worker;
  if (w == nullptr) return false;
  // Give the slot up now, before the call blocks (Go's entersyscallblock): the revocation
  // the monitor would make later, without its detection delay.
  if (!w->poll.revoke_self()) return false;
  RuntimeCore& core = *w->core;
  core.blocked_handoffs.fetch_add(1, std::memory_order_relaxed);
  core.revoked_workers.fetch_add(1, std::memory_order_relaxed);
  core.slots.give_back();
  // Work may be waiting anywhere (our queues, the injector) with every other slot idle.
  core.wakep();
  return true;
}

void request_yield() noexcept {
  // Only a worker clears the flag (after each poll): elsewhere it would stay set and turn the
  // next runtime schedule on this thread into a yield.
  if (current_worker != nullptr) yield_requested = true;
}

// --- Guests: Runtime::block_on's caller runs tasks while it waits -------------------------------

Worker* guest_enter(RuntimeCore* core) noexcept {
  if (current_worker != nullptr || core->shutting_down.load(std::memory_order_acquire)) return nullptr;
  // A slot first: without one there is nothing to run.
  if (!core->slots.take()) return nullptr;
  Worker* w = nullptr;
  {
    const IdleList::Lock lock = core->idle.lock();
    // Checked again under the lock shutdown sets it under: a guest counted after shutdown
    // has looked at the count would not be waited for.
    if (!core->shutting_down.load(std::memory_order_relaxed)) w = core->register_worker();
    if (w != nullptr) {
      w->guest = true;
      ++core->guests;
    }
  }
  if (w == nullptr) {
    core->slots.give_back();
    core->wakep();  // the slot may have been what a wakep needed meanwhile
    return nullptr;
  }
  core->monitor.slot_taken();  // a slot is taken: the monitor watches it
  w->searching = false;
  w->guest_holds_slot = true;
  current_worker = w;
  note_thread(w);
  return w;
}

namespace {

// Out of work: the guest frees its slot and waits on the idle list, as a parked worker does,
// until wakep hands it a slot again or `done` is set.
void guest_idle(Worker* w, const std::atomic<bool>& done) noexcept {
  RuntimeCore& core = *w->core;
  // Joins even when shutting down: `done` comes then (shutdown cancels the root), and its
  // waker unparks us.
  join_idle_list(w, w->guest_holds_slot, false);
  w->guest_holds_slot = false;
  bool netpoll_sleeper = false;
  for (;;) {
    if (w->given_slot.load(std::memory_order_acquire)) break;
    if (done.load(std::memory_order_acquire) || core.shutting_down.load(std::memory_order_acquire)) {
      if (leave_idle_list(w)) {
        if (netpoll_sleeper) core.monitor.slot_taken();  // netpoll.cpp, step 6
        return;
      }
      break;  // a wakep took us off the list: its slot is ours
    }
    // In the netpoller if nobody sleeps there (netpoll.cpp, step 4), else on the futex.
    if (core.sleep_in_netpoller(w, [w, &done, &core] {
          return w->given_slot.load(std::memory_order_relaxed) || done.load(std::memory_order_relaxed) ||
                 core.shutting_down.load(std::memory_order_relaxed);
        }))
      netpoll_sleeper = true;
    else
      w->parker.park();
  }
  w->guest_holds_slot = true;
  w->searching = true;        // wakep counted us as searching
  core.monitor.slot_taken();  // and gave us a slot: the monitor watches it
}

}  // namespace

void guest_run(Worker* w, const std::atomic<bool>& done) noexcept {
  RuntimeCore& core = *w->core;
  while (!done.load(std::memory_order_acquire)) {
    if (!w->guest_holds_slot || core.shutting_down.load(std::memory_order_acquire)) {
      guest_idle(w, done);
      continue;
    }
    RawTask task = find_work(w);
    if (task == nullptr) {
      // A guest spins as a worker does: the request that comes right after the one it served
      // (a connection's task it ran) is found here, not after a sleep in epoll_wait.
      if (spin_for_work(w, &done)) continue;
      if (core.netpoll_ready_work()) continue;  // sockets ready: their tasks are ours now
      guest_idle(w, done);
      continue;
    }
    if (!run_found_task(w, task)) w->guest_holds_slot = false;
  }
}

void guest_wake(Worker* w) noexcept { w->core->unpark_worker(w); }

void guest_leave(Worker* w) noexcept {
  RuntimeCore& core = *w->core;
  core.slots.stop_searching(w->searching);
  if (w->guest_holds_slot) {
    w->guest_holds_slot = false;
    core.slots.give_back();
    // What is still queued here (tasks the root spawned and did not wait for) goes to the
    // injector; spill_all wakes a worker for it, which can now take the slot just freed.
    spill_all(w);
    // The slot may have come from a wakep meant for work elsewhere (the injector): a guest
    // woken with a slot just as its root completed gives it back here, so look again, as a
    // parking worker does. The soak test lost a task this way.
    look_again_after_giving_up_slot(core);
  }
  current_worker = nullptr;
  const IdleList::Lock lock = core.idle.lock();
  w->exited = true;
  --core.guests;  // the last touch of the core (shutdown waits for it under the same lock)
}

}  // namespace karx::detail
