// The bridge between a standard awaitable and the Async chain that awaits it
// (awaitable_bridge.cppm).
//
// The bridge is a coroutine with an empty body, started suspended: the awaitable's side holds
// its handle and resumes it once, from any thread, when the operation completes; the body
// runs to final_suspend at once, whose await_suspend is the completion below. Its promise holds
// the state word and the waker slot:
//
//   COMPLETED    the awaitable resumed the bridge: the operation is complete.
//   REGISTERING  the leaf is writing the slot (from the bridge's creation until await_suspend
//                has returned; while a re-poll registers another waker; while the leaf's
//                destructor empties it). A completion then leaves the slot alone.
//   references   above the two bits: the leaf's (until its destructor) and the awaitable's
//                (until it resumes the handle). The last one out destroys the frame, whose
//                promise drops a waker still in the slot.
//
// The slot is a single-waker register in the manner of the task's awaiter slot (raw.cpp) and
// of futures-rs's AtomicWaker, simpler because there is one registerer (the leaf, which runs
// only inside its chain's polls) and one completion:
//
//   completion   fetch_or(COMPLETED). If REGISTERING was clear, the slot is the completer's:
//                it takes the waker and wakes it (after dropping its reference). If it was
//                set, the registerer will see COMPLETED when it clears REGISTERING and acts
//                on it itself, so no completion is lost and the slot is never written twice.
//   register     CAS to set REGISTERING, unless COMPLETED; write the slot; fetch_and to clear
//                REGISTERING, which returns whether COMPLETED came meanwhile.
//
// Orderings (every RMW acq_rel, acquire on CAS failure; loads acquire):
//   - the completer's fetch_or releases what the awaitable's side did before resuming the
//     handle (its result, in the awaiter); the leaf acquires it by the load (re-poll) or the
//     fetch_and (end of a registration) that sees COMPLETED, before the frame calls
//     await_resume. The wake's own RMW on the task word then orders the next poll after it.
//   - the registerer's clearing fetch_and releases the slot it wrote; the completer's fetch_or
//     that finds REGISTERING clear acquires it, before taking the waker.
//   - the reference decrements are acq_rel (the shared_ptr argument): whoever destroys the
//     frame sees every other use of it.
module;
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <utility>
module karx.task;

namespace karx::detail {

namespace {

constexpr std::size_t COMPLETED = 1u << 0;
constexpr std::size_t REGISTERING = 1u << 1;
constexpr std::size_t REFERENCE = 1u << 2;
constexpr std::size_t REFERENCE_MASK = ~(REFERENCE - 1);
constexpr std::size_t kBridgeAlign = alignof(std::max_align_t);

struct BridgePromise;
using BridgeHandle = std::coroutine_handle<BridgePromise>;

struct BridgeCoroutine {
  using promise_type = BridgePromise;
  BridgeHandle handle;
};

void complete(BridgeHandle bridge) noexcept;

struct BridgePromise {
  // Created while the leaf registers (its await_suspend), with both references.
  std::atomic<std::size_t> state{REGISTERING | 2 * REFERENCE};
  RawWaker slot{};

  // From the task allocator, as Async frames (and visible to its allocation observer).
  static void* operator new(std::size_t size) { return allocate_task(size, kBridgeAlign); }
  static void operator delete(void* frame, std::size_t size) noexcept { deallocate_task(frame, size, kBridgeAlign); }
  ~BridgePromise() {
    if (slot.vtable != nullptr) slot.vtable->drop(slot.data);
  }

  BridgeCoroutine get_return_object() noexcept { return BridgeCoroutine{BridgeHandle::from_promise(*this)}; }
  std::suspend_always initial_suspend() noexcept { return {}; }
  struct Completion {
    bool await_ready() noexcept { return false; }
    // The frame may be destroyed in here (the last reference): nothing touches it afterwards.
    void await_suspend(BridgeHandle bridge) noexcept { complete(bridge); }
    void await_resume() noexcept {}
  };
  Completion final_suspend() noexcept { return {}; }
  void return_void() noexcept {}
  void unhandled_exception() noexcept { std::terminate(); }  // the body is empty: unreachable
};

BridgeCoroutine make_bridge() { co_return; }

void release(BridgeHandle bridge) noexcept {
  const std::size_t old = bridge.promise().state.fetch_sub(REFERENCE, std::memory_order_acq_rel);
  if ((old & REFERENCE_MASK) == REFERENCE) bridge.destroy();
}

// Wakes (consuming) a waker taken out of the slot. The completion runs inside whatever resumed
// the bridge (the awaitable's thread, a callback): an exception has nobody to go to there.
void wake_taken(RawWaker w) noexcept {
  if (w.vtable == nullptr) return;
  try {
    w.vtable->wake(w.data);
  } catch (...) {
    report_undeliverable("a waker threw when an awaitable awaited by a karx::Async completed and woke its task");
  }
}

void drop_waker(RawWaker w) noexcept {
  if (w.vtable != nullptr) w.vtable->drop(w.data);
}

void complete(BridgeHandle bridge) noexcept {
  BridgePromise& p = bridge.promise();
  const std::size_t old = p.state.fetch_or(COMPLETED, std::memory_order_acq_rel);
  // REGISTERING clear: no registration is under way, and none can start now that COMPLETED
  // is set, so the slot is ours. Set: the registerer sees COMPLETED and handles it.
  const RawWaker waker = (old & REGISTERING) == 0 ? std::exchange(p.slot, RawWaker{}) : RawWaker{};
  release(bridge);  // the awaitable's reference: resuming was its last use of the handle
  wake_taken(waker);
}

}  // namespace

struct BridgeAccess {
  static BridgeHandle handle(const BridgedLeaf& leaf) noexcept { return BridgeHandle::from_address(leaf.bridge_); }
  static bool repoll(AsyncLeaf* leaf, Context& cx) noexcept;
  static void registered(BridgedLeaf& leaf, const RawWaker& w) noexcept {
    leaf.registered_data_ = w.data;
    leaf.registered_vtable_ = w.vtable;
  }
};

std::coroutine_handle<> BridgedLeaf::open() {
  const BridgeHandle bridge = make_bridge().handle;  // may throw std::bad_alloc
  BridgePromise& p = bridge.promise();
  try {
    Waker clone = current_async_poll->context().waker();
    p.slot = std::move(clone).into_raw();
  } catch (...) {
    bridge.destroy();
    throw;
  }
  BridgeAccess::registered(*this, p.slot);
  bridge_ = bridge.address();
  poll_again = &BridgeAccess::repoll;
  return bridge;
}

void BridgedLeaf::not_taken() noexcept {
  // Both references are ours and the awaitable will never resume the handle: nobody else can
  // reach the bridge. Its promise drops the waker.
  BridgeAccess::handle(*this).destroy();
  bridge_ = nullptr;
}

std::coroutine_handle<> BridgedLeaf::finish(std::coroutine_handle<> frame, std::coroutine_handle<> next,
                                            bool transfer) noexcept {
  BridgePromise& p = BridgeAccess::handle(*this).promise();
  // The registration of await_suspend ends: completions take the waker from here on.
  const std::size_t old = p.state.fetch_and(~REGISTERING, std::memory_order_acq_rel);
  this->frame = frame;  // what the chain's next poll resumes once the bridge is complete
  if ((old & COMPLETED) != 0) {
    // Resumed during await_suspend (on this thread or another): the completer left the waker
    // to us, unwoken. With nothing to transfer to, the frame just goes on.
    if (!transfer) return frame;
    // `next` must run first: suspend as usual, and wake the task as the completion would have.
    current_async_poll->suspend_on(this);
    wake_taken(std::exchange(p.slot, RawWaker{}));
    return next;
  }
  current_async_poll->suspend_on(this);
  return next;
}

bool BridgeAccess::repoll(AsyncLeaf* leaf, Context& cx) noexcept {
  auto* self = static_cast<BridgedLeaf*>(leaf);
  BridgePromise& p = handle(*self).promise();
  std::size_t state = p.state.load(std::memory_order_acquire);
  if ((state & COMPLETED) != 0) return true;
  const RawWaker& now = cx.waker().as_raw();
  if (now.data == self->registered_data_ && now.vtable == self->registered_vtable_) return false;
  // The chain is polled with another waker than the registered one (the Async moved to
  // another poller): register it, so that the completion wakes whoever polls now.
  RawWaker fresh;
  try {
    Waker clone = cx.waker();
    fresh = std::move(clone).into_raw();
  } catch (...) {
    current_async_poll->fail(std::current_exception());  // rethrown at the co_await
    return true;
  }
  for (;;) {
    if ((state & COMPLETED) != 0) {
      drop_waker(fresh);
      return true;
    }
    if (p.state.compare_exchange_weak(state, state | REGISTERING, std::memory_order_acq_rel, std::memory_order_acquire))
      break;
  }
  const RawWaker old = std::exchange(p.slot, fresh);
  registered(*self, fresh);
  state = p.state.fetch_and(~REGISTERING, std::memory_order_acq_rel);
  drop_waker(old);
  // Completed while we registered: the completer left the (new) waker in the slot, and the
  // frame resumes now. It is dropped with the bridge.
  return (state & COMPLETED) != 0;
}

void BridgedLeaf::close() noexcept {
  if (bridge_ == nullptr) return;
  const BridgeHandle bridge = BridgeAccess::handle(*this);
  bridge_ = nullptr;
  BridgePromise& p = bridge.promise();
  // Not completed: take the waker out under REGISTERING, so that a completion that comes later
  // wakes nobody and the task is not kept alive by the bridge until then.
  RawWaker taken{};
  std::size_t state = p.state.load(std::memory_order_acquire);
  while ((state & COMPLETED) == 0) {
    if (p.state.compare_exchange_weak(state, state | REGISTERING, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      taken = std::exchange(p.slot, RawWaker{});
      p.state.fetch_and(~REGISTERING, std::memory_order_acq_rel);
      break;
    }
  }
  drop_waker(taken);
  release(bridge);
}

}  // namespace karx::detail
