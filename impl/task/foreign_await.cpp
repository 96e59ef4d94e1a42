// The poll protocol of a karx future awaited from a foreign coroutine (foreign_await.cppm).
//
// The block's state word has four bits:
//
//   POLLING   someone owns the poll: the awaiting thread (from the block's creation until
//             await_suspend gives it up) or a waking thread (from its wake until the poll
//             pends or the future is ready). Nobody else touches the future or the awaiter.
//   WOKEN     a wake came while POLLING was held: the owner polls once more before letting go.
//   DONE      the future was ready (or threw): the coroutine is resumed, or was never
//             suspended; wakes do nothing from then on, and the awaiter may be gone.
//   DETACHED  the awaiter is being destroyed (its coroutine was destroyed while it waited);
//             wakes do nothing, and an owner of the poll lets go without resuming anything.
//
// Transitions (one RMW each, acq_rel with acquire on CAS failure, except where said):
//
//   clone            the block is made in state POLLING (the awaiting thread is polling)
//   await_suspend    POLLING -> 0 (suspended); or POLLING|WOKEN -> POLLING, poll again;
//                    ready -> DONE, and the coroutine goes on without suspending
//   wake             DONE or DETACHED: nothing. POLLING: set WOKEN. 0: -> POLLING, and the
//                    waking thread polls (drive)
//   drive            clears WOKEN, polls; pending: POLLING -> 0, unless WOKEN came meanwhile
//                    (poll again); ready: -> DONE, then resume the coroutine on this thread
//   detach           0 -> DETACHED; POLLING -> POLLING|DETACHED, then wait until the owner
//                    clears POLLING (it sees DETACHED and lets go without resuming)
//
// Orderings. The word hands the future (and the awaiter) from thread to thread: whoever gives
// up POLLING releases what its poll did, and whoever takes POLLING acquires it before polling.
// A wake's RMW releases what made the future ready; the poll that follows starts with an RMW
// that reads the wake's value or a later one (taking POLLING, or clearing WOKEN), so it sees
// it. A wake that finds WOKEN already set still writes it (a CAS of the same value), so that
// its own release enters the word's modification order (the argument of the task state word,
// raw.cpp). The coroutine handle is written by await_suspend before its release of POLLING and
// read by the thread that takes POLLING next.
module;
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <utility>
module karx.task;

namespace karx::detail {

namespace {
constexpr std::uint32_t POLLING = 1u << 0;
constexpr std::uint32_t WOKEN = 1u << 1;
constexpr std::uint32_t DONE = 1u << 2;
constexpr std::uint32_t DETACHED = 1u << 3;
}  // namespace

struct ForeignWakeBlock {
  // 32 bits: the word std::atomic::wait waits on with a futex directly.
  std::atomic<std::uint32_t> state{POLLING};
  // The awaiter's reference and one per clone of the waker. relaxed increments (a clone is made
  // from a live reference), acq_rel decrements (the shared_ptr argument).
  std::atomic<std::uint32_t> refs{1};
  ForeignAwaitBase* awaiter;          // valid until DONE or DETACHED
  std::coroutine_handle<> coroutine;  // set by await_suspend before it gives up POLLING
};

struct ForeignWakeAccess {
  static RawWaker lazy_clone(const void* data);
  static void lazy_wake(const void* data) noexcept;
  static void lazy_drop(const void*) noexcept {}

  static RawWaker block_clone(const void* data);
  static void block_wake_by_ref(const void* data);
  static void block_wake(const void* data);
  static void block_drop(const void* data) noexcept { release(block_of(data)); }

  static ForeignWakeBlock* block_of(const void* data) noexcept {
    return static_cast<ForeignWakeBlock*>(const_cast<void*>(data));
  }
  static ForeignWakeBlock* make_block(ForeignAwaitBase* awaiter);
  static void release(ForeignWakeBlock* b) noexcept;
  static void wake(ForeignWakeBlock* b);
  static void drive(ForeignWakeBlock* b);
  static bool poll_with(ForeignAwaitBase* awaiter, ForeignWakeBlock* b) noexcept;
  static void let_go_detached(ForeignWakeBlock* b) noexcept;
};

namespace {

// The waker of the awaiting thread's polls while no block exists: data is the awaiter. Only
// valid during those polls (a Context's waker is borrowed for the poll), so it needs no count;
// a clone is what outlives the poll, and that makes the block.
constexpr RawWakerVTable lazy_vtable{&ForeignWakeAccess::lazy_clone, &ForeignWakeAccess::lazy_wake,
                                     &ForeignWakeAccess::lazy_wake, &ForeignWakeAccess::lazy_drop};
constexpr RawWakerVTable block_vtable{&ForeignWakeAccess::block_clone, &ForeignWakeAccess::block_wake,
                                      &ForeignWakeAccess::block_wake_by_ref, &ForeignWakeAccess::block_drop};

// A foreign coroutine's polls are not a runtime task's turn: no cooperative budget (a spent
// budget makes karx futures pend and wake themselves, which would spin a re-poll loop here),
// and a yield a polled future asks for is not the surrounding task's (coop.cppm).
class Unbudgeted {
 public:
  Unbudgeted() noexcept
      : budget_(std::exchange(coop_budget, kCoopUnlimited)), yield_(std::exchange(yield_requested, false)) {}
  Unbudgeted(const Unbudgeted&) = delete;
  Unbudgeted& operator=(const Unbudgeted&) = delete;
  ~Unbudgeted() {
    coop_budget = budget_;
    yield_requested = yield_;
  }

 private:
  int budget_;
  bool yield_;
};

// The foreign awaiters whose future this thread is polling, innermost first (a poll may wake
// another foreign coroutine, whose re-poll then runs nested in it). detach() looks here: a
// coroutine destroyed from inside the poll of the very future it awaits would destroy that
// future while it runs, and would wait for itself for ever; that is a fatal error instead.
struct PollingHere {
  const ForeignAwaitBase* awaiter;
  PollingHere* outer;
};
thread_local constinit PollingHere* polling_here = nullptr;

}  // namespace

ForeignWakeBlock* ForeignWakeAccess::make_block(ForeignAwaitBase* awaiter) {
  void* raw = allocate_task(sizeof(ForeignWakeBlock), alignof(ForeignWakeBlock));
  auto* fresh = ::new (raw) ForeignWakeBlock{};
  fresh->awaiter = awaiter;
  // Several threads may clone at once (a poll that shares its context's waker): one block wins.
  // release: the winner's initialization is visible to whoever loads the pointer (acquire).
  ForeignWakeBlock* expected = nullptr;
  if (awaiter->block_.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel, std::memory_order_acquire))
    return fresh;
  fresh->~ForeignWakeBlock();
  deallocate_task(raw, sizeof(ForeignWakeBlock), alignof(ForeignWakeBlock));
  return expected;
}

void ForeignWakeAccess::release(ForeignWakeBlock* b) noexcept {
  if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  b->~ForeignWakeBlock();
  deallocate_task(b, sizeof(ForeignWakeBlock), alignof(ForeignWakeBlock));
}

RawWaker ForeignWakeAccess::lazy_clone(const void* data) {
  auto* awaiter = static_cast<ForeignAwaitBase*>(const_cast<void*>(data));
  ForeignWakeBlock* b = awaiter->block_.load(std::memory_order_acquire);
  if (b == nullptr) b = make_block(awaiter);
  return block_clone(b);
}

void ForeignWakeAccess::lazy_wake(const void* data) noexcept {
  // Only during a poll of the awaiting thread, which looks at the flag when the poll returns.
  // release/acquire (the exchange in suspend) in case the future woke from a helper thread.
  static_cast<ForeignAwaitBase*>(const_cast<void*>(data))->woken_.store(true, std::memory_order_release);
}

RawWaker ForeignWakeAccess::block_clone(const void* data) {
  block_of(data)->refs.fetch_add(1, std::memory_order_relaxed);
  return RawWaker{data, &block_vtable};
}

void ForeignWakeAccess::block_wake_by_ref(const void* data) { wake(block_of(data)); }

void ForeignWakeAccess::block_wake(const void* data) {
  ForeignWakeBlock* b = block_of(data);
  struct Release {
    ForeignWakeBlock* b;
    ~Release() { release(b); }
  } consumed{b};  // the wake consumes this reference, even if resuming the coroutine throws
  wake(b);
}

void ForeignWakeAccess::wake(ForeignWakeBlock* b) {
  std::uint32_t state = b->state.load(std::memory_order_acquire);
  for (;;) {
    if ((state & (DONE | DETACHED)) != 0) return;  // completed, or the coroutine is gone
    if ((state & POLLING) != 0) {
      // The owner will poll again. A CAS even when WOKEN is set already: see the top.
      if (b->state.compare_exchange_weak(state, state | WOKEN, std::memory_order_acq_rel, std::memory_order_acquire))
        return;
      continue;
    }
    // Suspended, nobody polling: take the poll and run it here.
    if (b->state.compare_exchange_weak(state, POLLING, std::memory_order_acq_rel, std::memory_order_acquire)) {
      drive(b);
      return;
    }
  }
}

bool ForeignWakeAccess::poll_with(ForeignAwaitBase* awaiter, ForeignWakeBlock* b) noexcept {
  // The context's waker borrows a reference: the block's (or, with no block, the awaiter
  // itself) lives at least as long as this poll.
  Waker borrowed = Waker::from_raw(b != nullptr ? RawWaker{b, &block_vtable} : RawWaker{awaiter, &lazy_vtable});
  Context cx(borrowed);
  PollingHere here{awaiter, polling_here};
  polling_here = &here;
  bool ready;
  {
    Unbudgeted unbudgeted;
    ready = awaiter->poll_(awaiter, cx);
  }
  polling_here = here.outer;
  (void)std::move(borrowed).into_raw();
  return ready;
}

void ForeignWakeAccess::let_go_detached(ForeignWakeBlock* b) noexcept {
  // release: our poll's accesses to the future and the awaiter happen before the destructor,
  // which waits for POLLING to clear with acquire loads.
  b->state.fetch_and(~POLLING, std::memory_order_acq_rel);
  b->state.notify_all();
}

// We own POLLING and the coroutine is suspended: poll on this thread until the future pends
// with no wake pending, or is ready (then resume the coroutine here).
void ForeignWakeAccess::drive(ForeignWakeBlock* b) {
  ForeignAwaitBase* awaiter = b->awaiter;
  const std::coroutine_handle<> coroutine = b->coroutine;
  for (;;) {
    // Clearing WOKEN before the poll: a wake from here on makes us poll again. acquire: the
    // poll sees what every wake so far published.
    std::uint32_t state = b->state.fetch_and(~WOKEN, std::memory_order_acq_rel);
    if ((state & DETACHED) != 0) {
      let_go_detached(b);
      return;
    }
    const bool ready = poll_with(awaiter, b);
    state = b->state.load(std::memory_order_acquire);
    for (;;) {
      if ((state & DETACHED) != 0) {
        // The coroutine is being destroyed: leave the value (if any) to the awaiter's
        // destructor, which waits for us, and resume nothing.
        let_go_detached(b);
        return;
      }
      if (!ready && (state & WOKEN) != 0) break;  // woken during the poll: poll again
      // Ready: DONE, after which no wake touches the awaiter; pending: give up the poll.
      // release: the next owner (or the resumed coroutine's destroyer) sees our poll's writes.
      const std::uint32_t next = ready ? DONE : state & ~POLLING;
      if (b->state.compare_exchange_weak(state, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        // The waker that called us holds a reference: the block outlives the resumption,
        // even if the coroutine destroys its awaiter.
        if (ready) coroutine.resume();
        return;
      }
    }
  }
}

// --- The awaiting thread -------------------------------------------------------------------

bool ForeignAwaitBase::poll_here() noexcept {
  return ForeignWakeAccess::poll_with(this, block_.load(std::memory_order_acquire));
}

bool ForeignAwaitBase::first_poll() noexcept {
  if (!poll_here()) return false;
  // Ready at once. A waker cloned by this poll may be woken later: make that a no-op.
  // relaxed: DONE publishes nothing (wakes that see it only return).
  if (ForeignWakeBlock* b = block_.load(std::memory_order_acquire)) b->state.store(DONE, std::memory_order_relaxed);
  return true;
}

bool ForeignAwaitBase::suspend(std::coroutine_handle<> coroutine) noexcept {
  for (;;) {
    // A wake by reference through the awaiter's own waker (the future woke itself in the poll,
    // as yield_now does): poll again before anything else.
    if (woken_.exchange(false, std::memory_order_acq_rel)) {
      if (poll_here()) break;
      continue;
    }
    ForeignWakeBlock* b = block_.load(std::memory_order_acquire);
    // No waker was kept anywhere (the future pends without one): nothing will ever wake the
    // coroutine; it stays suspended until it is destroyed.
    if (b == nullptr) return true;
    b->coroutine = coroutine;
    // Give up the poll. release: the handle above and our polls' writes go to the thread that
    // takes POLLING next. From here on this coroutine may be resumed (and this awaiter
    // destroyed) by a wake on another thread at any moment: touch nothing after a success.
    std::uint32_t expected = POLLING;
    if (b->state.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_acquire))
      return true;
    // WOKEN: a wake came during our poll or since (DONE and DETACHED cannot appear while we
    // hold POLLING and the coroutine runs this function). Clear it and poll again; acquire
    // sees what the wake published.
    b->state.fetch_and(~WOKEN, std::memory_order_acq_rel);
    if (poll_here()) break;
  }
  if (ForeignWakeBlock* b = block_.load(std::memory_order_acquire)) b->state.store(DONE, std::memory_order_relaxed);
  return false;  // ready: the coroutine goes on at once, on this thread
}

void ForeignAwaitBase::detach() noexcept {
  ForeignWakeBlock* b = block_.load(std::memory_order_acquire);
  if (b == nullptr) return;
  std::uint32_t state = b->state.load(std::memory_order_acquire);
  while ((state & DONE) == 0) {
    if (b->state.compare_exchange_weak(state, state | DETACHED, std::memory_order_acq_rel, std::memory_order_acquire)) {
      // A wake owns the poll (it is polling our future on another thread): wait until it lets
      // go, having seen DETACHED. acquire: its accesses to the future and to this awaiter
      // happen before we destroy them.
      state |= DETACHED;
      if ((state & POLLING) != 0) {
        for (const PollingHere* p = polling_here; p != nullptr; p = p->outer)
          if (p->awaiter == this) {
            std::fputs("karx: fatal: a coroutine awaiting a karx future was destroyed from inside that future's poll\n",
                       stderr);
            std::abort();
          }
      }
      while ((state & POLLING) != 0) {
        b->state.wait(state, std::memory_order_acquire);
        state = b->state.load(std::memory_order_acquire);
      }
      break;
    }
  }
  ForeignWakeAccess::release(b);
}

}  // namespace karx::detail
