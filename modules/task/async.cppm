// Async<T>: a lazy coroutine that is a Future.
//
// Inside an Async, `co_await` takes any Future (polled in place; JoinHandles included), any
// Async<U> (run as a child frame) and any standard awaitable (a leaf completed through a
// bridge: impl/task/awaitable_bridge.cppm). Awaited Asyncs form a chain of frames; when a leaf
// is pending, the whole chain suspends and the root's poll returns pending; the next poll
// polls that leaf again and, once it is ready, resumes the innermost frame directly.
// Children hand control back to their parent by symmetric transfer, so deep chains use no
// native stack. impl/task/chain.cppm keeps the chain's bookkeeping, impl/task/frame_block.cppm
// the room in front of each frame that lets spawn() make the frame a task's only block.
module;
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
export module karx.task:async;
import karx.waker;
import :awaitable_bridge;
import :chain;
import :frame_block;

export namespace karx {
template <class T = void>
class Async;
}

namespace karx::detail {

template <class A>
inline constexpr bool is_async = false;
template <class T>
inline constexpr bool is_async<Async<T>> = true;

struct NoValue {};

// co_await of a Future: polled once at once (no suspension if ready), then, while the chain is
// suspended on it, by the root's poll (poll_again) until it is ready.
template <class F>
class FutureAwaiter : AsyncLeaf {
 public:
  using Output = output_of<F>;

  explicit FutureAwaiter(F& future) noexcept : AsyncLeaf{}, future_(&future) {}

  bool await_ready() {
    auto p = future_->poll(current_async_poll->context());  // an exception surfaces in the coroutine
    if (p.is_pending()) return false;
    store(std::move(p));
    return true;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    poll_again = &repoll;
    frame = h;
    current_async_poll->suspend_on(this);
  }
  Output await_resume() {
    AsyncPoll::rethrow_pending_error();  // the re-poll threw: rethrown inside the coroutine
    if constexpr (!std::is_void_v<Output>) return std::move(*value_);
  }

 private:
  static bool repoll(AsyncLeaf* leaf, Context& cx) noexcept {
    auto* self = static_cast<FutureAwaiter*>(leaf);
    try {
      auto p = self->future_->poll(cx);
      if (p.is_pending()) return false;
      self->store(std::move(p));
    } catch (...) {
      current_async_poll->fail(std::current_exception());
    }
    return true;
  }
  void store(Poll<Output>&& p) {
    if constexpr (!std::is_void_v<Output>) value_.emplace(std::move(p).value());
  }

  F* future_;
  // Nothing for a void output (an empty member with no_unique_address takes no space).
  [[no_unique_address]] std::conditional_t<std::is_void_v<Output>, NoValue, std::optional<Output>> value_;
};

struct AsyncPromiseBase {
  // The awaiting parent frame's address (zero for a chain's root), with kInBlock set when the
  // frame sits in a block with room for a task in front of it (frame_block.cppm). One word:
  // frames are at least 16-byte aligned, so bit 0 is free.
  static constexpr std::uintptr_t kInBlock = 1;
  std::uintptr_t link = 0;

  // (`inline` throughout this non-template struct: a named module's in-class definitions are
  // not implicitly inline, and these are on every coroutine's path.)
  inline std::coroutine_handle<> continuation() const noexcept {
    return std::coroutine_handle<>::from_address(reinterpret_cast<void*>(link & ~kInBlock));
  }
  inline void set_continuation(std::coroutine_handle<> parent) noexcept {
    link = reinterpret_cast<std::uintptr_t>(parent.address()) | (link & kInBlock);
  }
  inline bool in_block() const noexcept { return (link & kInBlock) != 0; }
  // get_return_object: claims the block operator new just made for this frame (if it did).
  inline void claim_block(void* frame) noexcept {
    void* fresh = fresh_frame;
    fresh_frame = nullptr;
    if (fresh == frame) link |= kInBlock;
  }

  inline std::suspend_always initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    inline bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      std::coroutine_handle<> parent = h.promise().continuation();
      return parent ? parent : std::noop_coroutine();
    }
    inline void await_resume() noexcept {}
  };
  inline FinalAwaiter final_suspend() noexcept { return {}; }
  // Taken by the parent's await_resume, or by the root's poller.
  inline void unhandled_exception() noexcept { current_async_poll->fail(std::current_exception()); }

  // Three kinds of operand, in this order: an Async (a child frame of the chain), a karx Future
  // (polled by the chain), a standard awaitable (awaitable_bridge.cppm: a leaf of the chain that
  // the awaitable completes through a bridge). The awaiters returned are not Futures, so the
  // free operator co_await of foreign_await.cppm never applies to them: inside an Async a karx
  // future is always polled with the task's own context, and its frame resumes in the poll.
  template <class A>
  decltype(auto) await_transform(A&& awaited) {
    using Plain = std::remove_cvref_t<A>;
    if constexpr (is_async<Plain>) {
      return std::forward<A>(awaited).child_awaiter();
    } else if constexpr (Future<Plain>) {
      return FutureAwaiter<Plain>(awaited);
    } else {
      static_assert(StandardAwaitable<A>,
                    "karx::Async can co_await a karx::Future (something with poll(Context&) -> Poll<X>), an "
                    "Async<U>, a JoinHandle, or a standard awaitable (await_ready/await_suspend/await_resume, "
                    "or an operator co_await that yields one)");
      return awaitable_leaf_for<A>(std::forward<A>(awaited));
    }
  }
};

// Frames come from the task allocator, with room for a task in front (frame_block.cppm).
template <class T>
struct AsyncPromiseAlloc : AsyncPromiseBase {
  static void* operator new(std::size_t size) { return allocate_frame<T>(size); }
  static void operator delete(void* frame, std::size_t size) noexcept { free_frame<T>(frame, size); }
};

template <class T>
struct AsyncPromise : AsyncPromiseAlloc<T> {
  std::optional<T> value;
  Async<T> get_return_object() noexcept;
  template <class U = T>
    requires std::is_constructible_v<T, U&&>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};

template <>
struct AsyncPromise<void> : AsyncPromiseAlloc<void> {
  Async<void> get_return_object() noexcept;
  void return_void() noexcept {}
};

// The sizes that every coroutine pays for, kept honest (docs/design.md, "Async<T>").
struct SizeProbeFuture {
  Poll<> poll(Context&);
};
static_assert(sizeof(AsyncPromise<void>) == sizeof(void*),
              "a promise is one word: the poll's state lives with the poller");
static_assert(sizeof(FutureAwaiter<SizeProbeFuture>) == 3 * sizeof(void*),
              "awaiting a void future: the re-poll function, the leaf's frame, the future's address");

// Lets the task layer take an Async's frame over (spawn of an Async in its own block).
struct AsyncAccess {
  template <class T>
  static bool in_block(const Async<T>& a) noexcept {
    return a.h_ && a.h_.promise().in_block();
  }
  // Gives up the frame: the caller now owns it and the chain's root state.
  template <class T>
  static std::pair<std::coroutine_handle<AsyncPromise<T>>, AsyncRoot> release(Async<T>& a) noexcept {
    return {std::exchange(a.h_, nullptr), std::exchange(a.root_, AsyncRoot{})};
  }
};

}  // namespace karx::detail

export namespace karx {

template <class T>
class Async {
  static_assert(std::is_void_v<T> || (std::is_object_v<T> && !std::is_array_v<T>),
                "karx::Async<T>: T must be void or an object type");

 public:
  using promise_type = detail::AsyncPromise<T>;
  using handle_type = std::coroutine_handle<promise_type>;

  Async(Async&& other) noexcept : h_(std::exchange(other.h_, nullptr)), root_(std::exchange(other.root_, {})) {}
  Async& operator=(Async&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, nullptr);
      root_ = std::exchange(other.root_, {});
    }
    return *this;
  }
  Async(const Async&) = delete;
  Async& operator=(const Async&) = delete;
  ~Async() { reset(); }

  // Runs the coroutine (the first time) or the innermost suspended frame until it finishes or
  // a leaf future is pending. Rethrows an exception that escaped the coroutine.
  Poll<T> poll(Context& cx) {
    if (!h_)
      throw std::logic_error(
          "karx::Async::poll(): the coroutine already finished (its result was taken) or was moved from");
    detail::AsyncPoll chain(root_, cx);
    if (!chain.resume(h_)) return pending;
    // Finished: take the result and free the frame right away.
    handle_type done = std::exchange(h_, nullptr);
    struct Free {
      handle_type h;
      ~Free() { h.destroy(); }
    } free_frame{done};
    if (chain.failed()) std::rethrow_exception(chain.take_error());
    if constexpr (std::is_void_v<T>)
      return Poll<void>::ready();
    else
      return Poll<T>::ready(std::move(*done.promise().value));
  }

 private:
  friend struct detail::AsyncPromise<T>;
  friend struct detail::AsyncPromiseBase;
  friend struct detail::AsyncAccess;
  explicit Async(handle_type h) noexcept : h_(h) {}

  void reset() noexcept {
    if (!h_) return;
    // A finished frame (an awaited child's, once it returned) holds no suspended child: plain
    // destroy. Only an unfinished one can start a chain of destructions (chain.cppm).
    if (h_.done())
      std::exchange(h_, nullptr).destroy();
    else
      detail::destroy_unfinished_frame(std::exchange(h_, nullptr));
  }

  // co_await of an Async inside another: run it as a child frame of the same chain.
  struct ChildAwaiter {
    handle_type child;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
      child.promise().set_continuation(parent);
      return child;
    }
    T await_resume() {
      detail::AsyncPoll::rethrow_pending_error();  // the child threw
      if constexpr (!std::is_void_v<T>) return std::move(*child.promise().value);
    }
  };
  ChildAwaiter child_awaiter() {
    if (!h_) throw std::logic_error("karx::Async: co_await of an Async that already finished or was moved from");
    if (h_.done() || h_.promise().continuation() || root_.leaf != nullptr)
      throw std::logic_error("karx::Async: co_await of an Async that is already running or finished");
    return ChildAwaiter{h_};
  }

  handle_type h_;
  detail::AsyncRoot root_;  // the chain's state while this Async is polled as a root
};

}  // namespace karx

namespace karx::detail {
static_assert(sizeof(Async<void>) == 2 * sizeof(void*), "an Async is its frame and its chain's root");

template <class T>
Async<T> AsyncPromise<T>::get_return_object() noexcept {
  auto h = Async<T>::handle_type::from_promise(*this);
  if constexpr (frame_prefix<T> != 0) this->claim_block(h.address());
  return Async<T>(h);
}
inline Async<void> AsyncPromise<void>::get_return_object() noexcept {
  auto h = Async<void>::handle_type::from_promise(*this);
  if constexpr (frame_prefix<void> != 0) claim_block(h.address());
  return Async<void>(h);
}
}  // namespace karx::detail
