// The task state machine: every transition of the state word, for every task type.
//
// Orderings. Each CAS and RMW below is acq_rel (acquire on failure) unless its comment says
// otherwise. The reason is the same everywhere: the state word is the only thing that hands
// the task between threads. Whoever changes it *releases* what it did to the task (a wake
// publishes what made the future ready; a run publishes the polled future or its output; a
// cancel publishes the destroyed future), and whoever acts on the new value *acquires* it
// before touching the future, the output or the awaiter slot. Weaker orderings are used only
// where their comment argues it.
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>
module karx.task;

namespace karx::detail {
namespace {

using namespace state;

constexpr std::size_t kMaxState = static_cast<std::size_t>(PTRDIFF_MAX);

Header* header_of(const void* data) noexcept { return static_cast<Header*>(const_cast<void*>(data)); }

[[noreturn]] void die(const char* why) noexcept {
  std::fprintf(stderr, "karx: fatal: %s\n", why);
  std::abort();
}

// Wakes (consuming) a raw waker taken out of the awaiter slot. The waker belongs to whoever
// awaits the handle, not to the thread that completes or cancels the task, which cannot act
// on its failure (and is often in a noexcept path): an exception goes to the handler.
void wake_raw(RawWaker w) noexcept {
  if (w.vtable == nullptr) return;
  try {
    w.vtable->wake(w.data);
  } catch (...) {
    report_undeliverable("a JoinHandle's waker threw when the task woke it (completion or cancellation)");
  }
}

// The last-chance schedule (nobody can wake the task any more, its future is alive) happens
// while a Waker or a JoinHandle is being dropped: there is no caller to throw to. If the
// schedule function throws, the Task it was handed is dropped by the unwinding, which cancels
// the task and destroys the future on this thread; the exception goes to the handler.
void schedule_to_destroy(Header* h) noexcept {
  try {
    h->vtable->schedule(h);
  } catch (...) {
    report_undeliverable(
        "a schedule function threw when the task was scheduled one last time to destroy its future (its last "
        "Waker or its JoinHandle was dropped); the future was destroyed on the dropping thread instead");
  }
}

// Releases one reference (the Task's or a Waker's).
void drop_ref(Header* h) noexcept {
  // acq_rel: release orders our use of the task before the decrement; acquire, if this was
  // the last reference, makes every other owner's writes visible before we destroy.
  std::size_t now = h->state.fetch_sub(REFERENCE, std::memory_order_acq_rel) - REFERENCE;
  if ((now & REFERENCE_MASK) != 0 || (now & HANDLE) != 0) return;
  if ((now & (COMPLETED | CLOSED)) == 0) {
    // Nobody can wake or await the task any more, yet its future is alive: close it and
    // schedule it one last time so that the executor's run destroys the future on its thread.
    // A plain store is enough: with no reference and no handle nobody else touches the word;
    // release publishes it to the run that the schedule function leads to.
    h->state.store(SCHEDULED | CLOSED | REFERENCE, std::memory_order_release);
    schedule_to_destroy(h);
  } else {
    free_task(h);
  }
}

// Takes the registered awaiter out of its slot (the notifying side of the register protocol).
// Returns an empty RawWaker if there is none, if a registration or another notification is in
// progress (they will deliver it), or if it would wake `current` (the caller itself).
RawWaker take_awaiter(Header* h, const Waker* current) {
  std::size_t old = h->state.fetch_or(NOTIFYING, std::memory_order_acq_rel);
  if ((old & (NOTIFYING | REGISTERING)) != 0) return RawWaker{};
  RawWaker w = std::exchange(h->awaiter, RawWaker{});
  // release: a later registration (acquire) sees the slot we emptied.
  h->state.fetch_and(~(NOTIFYING | AWAITER), std::memory_order_release);
  if (w.vtable != nullptr && current != nullptr && current->as_raw().data == w.data &&
      current->as_raw().vtable == w.vtable) {
    w.vtable->drop(w.data);
    return RawWaker{};
  }
  return w;
}

void notify_awaiter(Header* h, const Waker* current) { wake_raw(take_awaiter(h, current)); }

// Puts `waker` in the awaiter slot (the registering side). Only the JoinHandle registers, and a
// handle is polled by one thread at a time, so registrations never overlap each other.
void register_awaiter(Header* h, const Waker& waker) {
  // A load is enough (it was a fetch_or(0), which clang compiles to a locked cmpxchg loop):
  // the CAS below fails on a stale value and retries with the latest one, and the handle's
  // re-check after registering reads a value no older than that CAS (coherence), so a
  // completion is not missed. A stale NOTIFYING only makes us wake ourselves spuriously.
  std::size_t state = h->state.load(std::memory_order_acquire);
  for (;;) {
    if ((state & NOTIFYING) != 0) {
      // A notifier is emptying the slot right now: wake ourselves instead of registering.
      waker.wake();
      return;
    }
    if (h->state.compare_exchange_weak(state, state | REGISTERING, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
      state |= REGISTERING;
      break;
    }
  }
  // We own the slot. Keep the old waker if it wakes the same target: saves a clone per poll.
  const RawWaker& incoming = waker.as_raw();
  if (h->awaiter.vtable != incoming.vtable || h->awaiter.data != incoming.data) {
    RawWaker old = std::exchange(h->awaiter, incoming.vtable->clone(incoming.data));
    if (old.vtable != nullptr) old.vtable->drop(old.data);
  }
  RawWaker notified{};
  for (;;) {
    if ((state & NOTIFYING) != 0 && notified.vtable == nullptr) {
      // A notifier came while we registered and left the slot to us: deliver it ourselves.
      notified = std::exchange(h->awaiter, RawWaker{});
    }
    std::size_t next = notified.vtable != nullptr ? state & ~(NOTIFYING | REGISTERING | AWAITER)
                                                  : (state & ~(NOTIFYING | REGISTERING)) | AWAITER;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  wake_raw(notified);
}

// --- The waker vtable shared by every task --------------------------------------------------

RawWaker clone_waker(const void* data);
void wake_by_ref(const void* data);
void wake(const void* data);
void drop_waker(const void* data) { drop_ref(header_of(data)); }

constexpr RawWakerVTable task_waker_vtable{&clone_waker, &wake, &wake_by_ref, &drop_waker};

RawWaker clone_waker(const void* data) {
  // relaxed: a clone is made from a live reference, so the count cannot drop to zero meanwhile,
  // and the increment publishes nothing (the shared_ptr argument).
  if (header_of(data)->state.fetch_add(REFERENCE, std::memory_order_relaxed) > kMaxState)
    die("task reference count overflow");
  return RawWaker{data, &task_waker_vtable};
}

void wake_by_ref(const void* data) {
  Header* h = header_of(data);
  std::size_t state = h->state.load(std::memory_order_acquire);
  for (;;) {
    if ((state & (COMPLETED | CLOSED)) != 0) return;  // finished or canceled: nothing to run
    if ((state & SCHEDULED) != 0) {
      // Already queued. Still write (the same value) so that our release is in the word's
      // modification order: the coming run's acquire then sees what made the future ready.
      if (h->state.compare_exchange_weak(state, state, std::memory_order_acq_rel, std::memory_order_acquire)) return;
      continue;
    }
    // While running, only mark it: run() reschedules on return with the Task's reference.
    // Otherwise a new Task (one more reference) goes to the schedule function.
    std::size_t next = (state & RUNNING) != 0 ? state | SCHEDULED : (state | SCHEDULED) + REFERENCE;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if ((state & RUNNING) == 0) {
        if (state > kMaxState) die("task reference count overflow");
        h->vtable->schedule(h);
      }
      return;
    }
  }
}

void wake(const void* data) {
  Header* h = header_of(data);
  std::size_t state = h->state.load(std::memory_order_acquire);
  for (;;) {
    if ((state & (COMPLETED | CLOSED)) != 0) break;
    if ((state & SCHEDULED) != 0) {
      if (h->state.compare_exchange_weak(state, state, std::memory_order_acq_rel, std::memory_order_acquire)) break;
      continue;
    }
    if (h->state.compare_exchange_weak(state, state | SCHEDULED, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
      // Not running: this waker's reference becomes the new Task's, no count change needed.
      if ((state & RUNNING) == 0) {
        h->vtable->schedule(h);
        return;
      }
      break;  // running: run() reschedules with its own reference; ours is dropped below
    }
  }
  drop_ref(h);
}

}  // namespace

Waker task_waker(Header* h) { return Waker::from_raw(clone_waker(h)); }

RawWaker reference_listed_task(void* block) noexcept {
  Header* h = static_cast<Header*>(block);
  std::size_t state = h->state.load(std::memory_order_acquire);
  for (;;) {
    const std::size_t refs = state & REFERENCE_MASK;
    // The plain-store windows (see listing.cppm): no reference and no handle left (drop_ref's
    // final schedule or free), or queued or running with its one reference and no handle or
    // awaiter (run's exclusive paths). (A handle's sole-owner take needs COMPLETED, and a
    // listed task never is: its future is destroyed, and it unlisted, first.) An idle task
    // with no reference but its handle is no window: nobody may store to it then.
    const bool held_alone =
        (refs == 0 && (state & HANDLE) == 0) ||
        ((state & (SCHEDULED | RUNNING)) != 0 && (state & (HANDLE | AWAITER)) == 0 && refs == REFERENCE);
    if (held_alone) return RawWaker{};
    if (state > kMaxState) die("task reference count overflow");
    // relaxed on success, as clone_waker: the task is alive (listed, see listing.cppm) and the
    // increment publishes nothing. A CAS, not an add: it must fail if the state moved into a
    // window meanwhile.
    if (h->state.compare_exchange_weak(state, state + REFERENCE, std::memory_order_relaxed, std::memory_order_acquire))
      return RawWaker{h, &task_waker_vtable};
  }
}

bool run(Header* h) {
  const TaskVTable* vt = h->vtable;

  // SCHEDULED -> RUNNING.
  std::size_t state = h->state.load(std::memory_order_acquire);
  if (state == (SCHEDULED | REFERENCE)) {
    // Exclusive: the Task's is the only reference, no handle, no awaiter, not closed. Nobody
    // else can reach the word (references are only cloned from references), so a plain store
    // does it. acquire (the load): the wake or spawn that led here released its writes, and a
    // waker dropped elsewhere released its uses before its decrement left us alone. relaxed
    // (the store): no other thread reads it; one that later gets a reference (a waker the
    // future clones and hands over) gets it through a synchronization of its own.
    state = RUNNING | REFERENCE;
    h->state.store(state, std::memory_order_relaxed);
  } else {
    // A Task exists, so SCHEDULED is set and RUNNING clear, and only the Task's holder (us)
    // may clear the one or set the other: the transition is a blind add of RUNNING - SCHEDULED
    // (bit 0 carries into bit 1), one `lock xadd` instead of a CAS loop. acq_rel: acquire sees
    // what the wakes that led here published (they wrote the word with release); release
    // publishes nothing new but keeps the word's RMWs uniform.
    state = h->state.fetch_add(RUNNING - SCHEDULED, std::memory_order_acq_rel);
    if ((state & (SCHEDULED | RUNNING)) != SCHEDULED) die("Task::run(): the task was not scheduled (state corrupted)");
    state += RUNNING - SCHEDULED;
  }

  if ((state & CLOSED) != 0) {
    // Canceled by the handle, or unreachable: destroy the future instead of polling it.
    vt->drop_future(h);
    // Clear RUNNING last (release): a handle waiting for the future's destruction acquires
    // this and only then yields "canceled".
    state = h->state.fetch_and(~RUNNING, std::memory_order_acq_rel);
    RawWaker awaiter = (state & AWAITER) != 0 ? take_awaiter(h, nullptr) : RawWaker{};
    drop_ref(h);
    wake_raw(awaiter);
    return false;
  }

  // The Task's reference keeps the task alive during the poll, so the context's waker borrows
  // it: no count change unless the future clones the waker.
  Waker borrowed = Waker::from_raw(RawWaker{h, &task_waker_vtable});
  Context cx(borrowed);
  const bool finished = vt->poll(h, cx);
  (void)std::move(borrowed).into_raw();

  if (finished) {
    // Detached, and ours is the last reference: nobody else can reach the block (no handle,
    // no waker, and references are only cloned from references), so no state change is
    // needed before freeing it. acquire: a waker dropped on another thread during the poll
    // released its uses of the task with its decrement.
    state = h->state.load(std::memory_order_acquire);
    if ((state & (HANDLE | AWAITER | REFERENCE_MASK)) == REFERENCE) {
      // Report an exception nobody will see, unless the handle canceled the task while it
      // ran (and was then dropped): the user asked not to hear about it.
      vt->drop_output_and_destroy(h, (state & CLOSED) == 0);
      return false;
    }
    // RUNNING -> COMPLETED (and CLOSED too if nobody holds the handle to take the output).
    bool released = false, sole = false;
    for (;;) {
      std::size_t next = (state & ~(RUNNING | SCHEDULED)) | COMPLETED | ((state & HANDLE) == 0 ? CLOSED : 0);
      // The common case: a handle will take the output and no awaiter needs notifying, so run
      // has nothing left to do with the task. Drop the Task's reference in this same RMW; from
      // here on the handle (which frees the block) may take the output at any moment.
      released = (state & (HANDLE | CLOSED | AWAITER)) == HANDLE;
      // Detached, and ours is the last reference (no waker out there): drop it in this same
      // RMW too. With no reference and no handle left, nobody else can reach the block.
      sole = (state & (HANDLE | AWAITER)) == 0 && (state & REFERENCE_MASK) == REFERENCE;
      if (released || sole) next -= REFERENCE;
      if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    if (released) return false;
    if (sole) {
      // Nobody will see it: an exception goes to the handler.
      vt->drop_output_and_destroy(h, (state & CLOSED) == 0);
      return false;
    }
    // Nobody will take the output: the handle is gone (report an exception in it) or the
    // handle canceled while we ran (it yields "canceled"; the output is just dropped).
    if ((state & HANDLE) == 0 || (state & CLOSED) != 0) vt->drop_output(h, (state & (HANDLE | CLOSED)) == 0);
    RawWaker awaiter = (state & AWAITER) != 0 ? take_awaiter(h, nullptr) : RawWaker{};
    drop_ref(h);
    wake_raw(awaiter);
    return false;
  }

  // Still pending: RUNNING -> idle, or -> rescheduled if woken during the poll.
  //
  // Woken during the poll by itself (a yield) with ours the only reference and no handle:
  // nobody else can reach the word, as at the start. The context's borrowed waker is no
  // exception: it lives on our stack, so whatever used it did so before the poll returned.
  // acquire (the load), as at completion; release (the store) keeps the word publishing the
  // poll's writes to the next run, though the queue the schedule function uses does as well.
  state = h->state.load(std::memory_order_acquire);
  if ((state & (SCHEDULED | HANDLE | AWAITER | CLOSED | REFERENCE_MASK)) == (SCHEDULED | REFERENCE)) {
    h->state.store(state & ~RUNNING, std::memory_order_release);
    vt->schedule(h);
    return true;
  }
  bool future_dropped = false;
  for (;;) {
    if ((state & CLOSED) != 0 && !future_dropped) {
      // Canceled while we polled: the canceler left the future to us.
      vt->drop_future(h);
      future_dropped = true;
    }
    std::size_t next = (state & CLOSED) != 0 ? state & ~(RUNNING | SCHEDULED) : state & ~RUNNING;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  if ((state & CLOSED) != 0) {
    RawWaker awaiter = (state & AWAITER) != 0 ? take_awaiter(h, nullptr) : RawWaker{};
    drop_ref(h);
    wake_raw(awaiter);
    return false;
  }
  if ((state & SCHEDULED) != 0) {
    // Woken while running: the waker only set SCHEDULED; the Task's reference goes on.
    vt->schedule(h);
    return true;
  }
  drop_ref(h);
  return false;
}

namespace {

// Cancels started while a cancel runs on this thread, for the outermost cancel to run (null
// when no cancel runs here). See cancel_task.
thread_local constinit std::vector<Header*>* nested_cancels = nullptr;

void cancel_task_now(Header* h) noexcept {
  // A Task exists, so the task is not completed; close it unless the handle already did.
  std::size_t state = h->state.load(std::memory_order_acquire);
  while ((state & (COMPLETED | CLOSED)) == 0) {
    if (h->state.compare_exchange_weak(state, state | CLOSED, std::memory_order_acq_rel, std::memory_order_acquire))
      break;
  }
  h->vtable->drop_future(h);
  // As in run(): SCHEDULED clears only after the future is gone (release).
  state = h->state.fetch_and(~SCHEDULED, std::memory_order_acq_rel);
  if ((state & AWAITER) != 0) notify_awaiter(h, nullptr);
  drop_ref(h);
}

}  // namespace

// A cancel can lead to another on the same thread: destroying the future drops handles and
// wakers, and notifying the awaiter wakes a task whose schedule function may drop it (a closed
// executor, a runtime shutting down), which cancels it, which notifies its own awaiter... For
// a chain of tasks each awaiting the next, that is a stack frame set per link, and a stack
// overflow for deep chains. So a cancel that starts while another runs on this thread is only
// queued, and the outermost one runs the queue before it returns: the recursion becomes a loop,
// and every future is still destroyed before the outermost cancel returns.
void cancel_task(Header* h) noexcept {
  if (nested_cancels != nullptr) {
    try {
      nested_cancels->push_back(h);
    } catch (...) {
      die("out of memory queueing a task's cancellation (a cancel inside a cancel)");
    }
    return;
  }
  std::vector<Header*> queue;
  nested_cancels = &queue;
  cancel_task_now(h);
  while (!queue.empty()) {
    Header* next = queue.back();
    queue.pop_back();
    cancel_task_now(next);
  }
  nested_cancels = nullptr;
}

HandlePoll poll_handle(Header* h, Context& cx) {
  std::size_t state = h->state.load(std::memory_order_acquire);
  // Queued and not started: its executor may run it here and now (a work-first join,
  // cell.cppm: HasRunHere), rather than the caller waiting for it. A snapshot: run_here
  // itself decides, by taking the task out of its queue or not.
  if ((state & (SCHEDULED | RUNNING | COMPLETED | CLOSED)) == SCHEDULED && h->vtable->run_here != nullptr &&
      h->vtable->run_here(h))
    state = h->state.load(std::memory_order_acquire);
  // Completed, output not taken, and no reference left: the run that completed it has let go
  // (that CAS released the output, this load acquired it), no waker exists, and none can
  // appear (references are only cloned from references). Nobody else can touch the task
  // any more, so no RMW is needed: the caller takes the output and frees the block.
  if ((state & (REFERENCE_MASK | COMPLETED | CLOSED)) == COMPLETED) return HandlePoll::ready_sole_owner;
  for (;;) {
    if ((state & CLOSED) != 0) {
      // Canceled. If a run is still due or under way, the future is not destroyed yet: wait.
      if ((state & (SCHEDULED | RUNNING)) != 0) {
        register_awaiter(h, cx.waker());
        // Re-check after registering: the run may have finished just before we registered.
        state = h->state.load(std::memory_order_acquire);
        if ((state & (SCHEDULED | RUNNING)) != 0) return HandlePoll::pending;
      }
      notify_awaiter(h, &cx.waker());
      return HandlePoll::canceled;
    }
    if ((state & COMPLETED) == 0) {
      register_awaiter(h, cx.waker());
      state = h->state.load(std::memory_order_acquire);
      if ((state & CLOSED) != 0) continue;
      if ((state & COMPLETED) == 0) return HandlePoll::pending;
    }
    // Completed: close it to take the output (acquire: the run's writes of the output). With
    // no reference left, nobody else can reach the task any more (references are only cloned
    // from references), so give up HANDLE in the same RMW and let the caller free the block.
    const bool sole_owner = (state & REFERENCE_MASK) == 0;
    std::size_t next = sole_owner ? (state | CLOSED) & ~HANDLE : state | CLOSED;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if ((state & AWAITER) != 0) notify_awaiter(h, &cx.waker());
      return sole_owner ? HandlePoll::ready_sole_owner : HandlePoll::ready;
    }
  }
}

void cancel_handle(Header* h) {
  std::size_t state = h->state.load(std::memory_order_acquire);
  for (;;) {
    if ((state & (COMPLETED | CLOSED)) != 0) return;  // done or already canceled: nothing to do
    // Idle (neither queued nor running): schedule it once more, with a new reference, so that
    // the executor's run destroys the future. Otherwise the due or current run will.
    const bool idle = (state & (SCHEDULED | RUNNING)) == 0;
    std::size_t next = idle ? (state | SCHEDULED | CLOSED) + REFERENCE : state | CLOSED;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (idle) {
        if (state > kMaxState) die("task reference count overflow");
        h->vtable->schedule(h);
      }
      if ((state & AWAITER) != 0) notify_awaiter(h, nullptr);
      return;
    }
  }
}

void release_handle(Header* h) noexcept {
  // The task is CLOSED (the handle took the output or saw the cancel), so there is nothing to
  // schedule: clear HANDLE, and free the block if no reference is left (acq_rel as drop_ref).
  std::size_t old = h->state.fetch_and(~HANDLE, std::memory_order_acq_rel);
  if ((old & REFERENCE_MASK) == 0) free_task(h);
}

void drop_stale_awaiter(Header* h) noexcept {
  RawWaker stale = std::exchange(h->awaiter, RawWaker{});
  if (stale.vtable != nullptr) stale.vtable->drop(stale.data);
}

void detach_handle(Header* h) noexcept {
  // The common case costs one CAS: the handle is dropped right after spawn.
  std::size_t state = INITIAL;
  if (h->state.compare_exchange_strong(state, INITIAL & ~HANDLE, std::memory_order_acq_rel, std::memory_order_acquire))
    return;
  if ((state & AWAITER) != 0) {
    // Nobody will await any more: let go of the waker the handle registered now, not when the
    // block is freed. It may be the task's own (a task that awaited its own handle), whose
    // reference would otherwise keep the task alive for ever, its future never destroyed.
    // While HANDLE is still set, dropping it cannot free the block or schedule the final run:
    // that is decided below, with the count it leaves.
    RawWaker stale = take_awaiter(h, nullptr);
    if (stale.vtable != nullptr) stale.vtable->drop(stale.data);
    state = h->state.load(std::memory_order_acquire);
  }
  for (;;) {
    if ((state & COMPLETED) != 0 && (state & CLOSED) == 0) {
      // Completed and the output not taken: close it and drop the output (report an exception).
      if (h->state.compare_exchange_weak(state, state | CLOSED, std::memory_order_acq_rel, std::memory_order_acquire)) {
        h->vtable->drop_output(h, true);
        state |= CLOSED;
      }
      continue;
    }
    // Last owner of a live future (no reference, not closed): close it and schedule it once
    // more so that its future is destroyed by the executor. Otherwise just clear HANDLE.
    const bool last = (state & REFERENCE_MASK) == 0;
    std::size_t next = last && (state & CLOSED) == 0 ? SCHEDULED | CLOSED | REFERENCE : state & ~HANDLE;
    if (h->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (last) {
        if ((state & CLOSED) != 0)
          free_task(h);
        else
          schedule_to_destroy(h);
      }
      return;
    }
  }
}

}  // namespace karx::detail
