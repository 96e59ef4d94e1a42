// co_await of a standard awaitable inside a karx::Async (one with await_ready, await_suspend
// and await_resume, or with a member or free operator co_await that yields one): the awaiter
// becomes a leaf of the chain (chain.cppm), as a pending Future does.
//
// The awaitable's await_suspend cannot be given the Async frame's handle: resuming it from the
// awaitable's thread would run the frame outside its task's poll. It is given the handle of a
// bridge instead, a tiny coroutine (awaitable_bridge.cpp) whose resume() marks the operation
// complete and wakes the waker the chain was last polled with (cloned at suspension). So the
// task is rescheduled by its own executor, and the chain resumes there: its next poll finds
// the bridge complete and resumes the leaf's frame, whose await_resume is the awaitable's.
//
// The bridge is reference-counted: by the leaf (until the leaf is destroyed) and by the
// awaitable's side (until it resumes the handle). So the leaf may be destroyed first (the
// Async destroyed while the operation is pending: the bridge then drops the waker and ignores
// the completion), and a completion may come from any thread, at any time, even before
// await_suspend has returned. The awaiter itself lives in the Async's frame and is destroyed
// with it: destroying an Async that waits on one is safe only for awaitables whose operation
// tolerates its awaiter's destruction (docs/api.md, "karx::Async"). An awaitable that drops the
// handle without ever resuming it leaves the bridge allocated (a few words), as it would leave
// any coroutine suspended for ever.
module;
#include <concepts>
#include <coroutine>
#include <memory>
#include <type_traits>
#include <utility>
export module karx.task:awaitable_bridge;
import karx.waker;
import :chain;

namespace karx::detail {

// The awaiter of an awaitable, as the language finds it: a member operator co_await, else a
// free one (found by argument-dependent lookup), else the awaitable itself.
template <class A>
concept has_member_co_await = requires(A&& a) { static_cast<A&&>(a).operator co_await(); };
template <class A>
concept has_free_co_await = requires(A&& a) { operator co_await(static_cast<A&&>(a)); };

template <class A>
decltype(auto) awaiter_of(A&& a) {
  if constexpr (has_member_co_await<A>)
    return static_cast<A&&>(a).operator co_await();
  else if constexpr (has_free_co_await<A>)
    return operator co_await(static_cast<A&&>(a));
  else
    return static_cast<A&&>(a);
}

template <class R>
concept suspend_result =
    std::is_void_v<R> || std::is_same_v<R, bool> || std::is_convertible_v<R, std::coroutine_handle<>>;

template <class W>
concept StandardAwaiter = requires(W& w, std::coroutine_handle<> h) {
  { w.await_ready() } -> std::convertible_to<bool>;
  w.await_suspend(h);
  w.await_resume();
} && suspend_result<decltype(std::declval<W&>().await_suspend(std::declval<std::coroutine_handle<>>()))>;

template <class A>
concept StandardAwaitable = requires(A&& a) { awaiter_of(static_cast<A&&>(a)); } &&
                            StandardAwaiter<std::remove_reference_t<decltype(awaiter_of(std::declval<A>()))>>;

// The part of the leaf that does not depend on the awaiter: the bridge and its protocol
// (awaitable_bridge.cpp; docs/design.md has the state machine and its orderings).
class BridgedLeaf : protected AsyncLeaf {
 public:
  BridgedLeaf(const BridgedLeaf&) = delete;
  BridgedLeaf& operator=(const BridgedLeaf&) = delete;

 protected:
  BridgedLeaf() noexcept : AsyncLeaf{} {}
  ~BridgedLeaf() = default;

  // Makes the bridge, registered with a clone of the current poll's waker, and returns the
  // handle for the awaitable's await_suspend. Throws std::bad_alloc, or what cloning throws.
  std::coroutine_handle<> open();
  // The awaitable will not resume the bridge (its await_suspend returned false or the bridge's
  // own handle, or threw): the operation is complete, or never started; frees the bridge.
  void not_taken() noexcept;
  // After an await_suspend that kept the handle: registers the leaf with the chain and returns
  // what the frame's await_suspend returns: `next` (the awaitable's handle to transfer to, or
  // std::noop_coroutine() to suspend), or `frame` itself if the bridge was resumed meanwhile
  // and there is nothing to transfer to.
  std::coroutine_handle<> finish(std::coroutine_handle<> frame, std::coroutine_handle<> next, bool transfer) noexcept;
  // The typed leaf's destructor, before the awaiter is destroyed (so that a completion its
  // destruction causes wakes nobody): drops the registered waker and the leaf's reference.
  void close() noexcept;

 private:
  friend struct BridgeAccess;

  void* bridge_ = nullptr;  // the bridge frame's address, null when there is none
  // What the bridge's waker slot holds, for comparison without touching the slot (which the
  // completing thread may be emptying): a re-poll with another waker registers that one.
  const void* registered_data_ = nullptr;
  const RawWakerVTable* registered_vtable_ = nullptr;
};

// The leaf for an awaiter of type W (decltype of awaiter_of: a reference when the awaitable is
// its own awaiter or its operator co_await returns one; then the leaf keeps its address).
template <class W>
class AwaitableLeaf : BridgedLeaf {
  static constexpr bool by_reference = std::is_reference_v<W>;
  using Awaiter = std::remove_reference_t<W>;

 public:
  template <class A>
  explicit AwaitableLeaf(A&& awaitable) : BridgedLeaf(), stored_(store(std::forward<A>(awaitable))) {}
  ~AwaitableLeaf() { close(); }

  bool await_ready() { return static_cast<bool>(awaiter().await_ready()); }

  std::coroutine_handle<> await_suspend(std::coroutine_handle<> frame) {
    const std::coroutine_handle<> handle = open();
    using R = decltype(awaiter().await_suspend(handle));
    std::coroutine_handle<> next = std::noop_coroutine();
    bool transfer = false;
    try {
      if constexpr (std::is_void_v<R>) {
        awaiter().await_suspend(handle);
      } else if constexpr (std::is_same_v<R, bool>) {
        if (!awaiter().await_suspend(handle)) {
          not_taken();
          return frame;  // not suspended after all
        }
      } else {
        const std::coroutine_handle<> other = awaiter().await_suspend(handle);
        if (other == handle) {  // "resume the awaiting coroutine": as false
          not_taken();
          return frame;
        }
        next = other;  // symmetric transfer: it runs once the chain has suspended
        transfer = true;
      }
    } catch (...) {
      not_taken();  // the language resumes the frame with the exception: so do we
      throw;
    }
    return finish(frame, next, transfer);
  }

  decltype(auto) await_resume() {
    AsyncPoll::rethrow_pending_error();  // registering a new waker failed (out of memory)
    return awaiter().await_resume();
  }

 private:
  using Stored = std::conditional_t<by_reference, Awaiter*, Awaiter>;
  template <class A>
  static Stored store(A&& awaitable) {
    if constexpr (by_reference)
      return address(awaiter_of(std::forward<A>(awaitable)));  // an xvalue too: the temporary outlives us
    else
      return awaiter_of(std::forward<A>(awaitable));  // a prvalue: built in place, never moved
  }
  static Awaiter* address(Awaiter& a) noexcept { return std::addressof(a); }
  static Awaiter* address(Awaiter&& a) noexcept { return std::addressof(a); }
  Awaiter& awaiter() noexcept {
    if constexpr (by_reference)
      return *stored_;
    else
      return stored_;
  }

  Stored stored_;
};

template <class A>
using awaitable_leaf_for = AwaitableLeaf<decltype(awaiter_of(std::declval<A>()))>;

}  // namespace karx::detail
