// Async<T>: a lazy coroutine that is a Future.
//
// Inside an Async, `co_await` takes any Future (polled in place; JoinHandles included) and any
// Async<U> (run as a child frame). Awaited Asyncs form a chain of frames that share one
// `AsyncChain`, kept in the outermost (root) frame. When a leaf future is pending, the whole
// chain suspends and the root's poll returns pending; the next poll polls that leaf future
// again and, once it is ready, resumes the innermost frame directly. Children hand control
// back to their parent by symmetric transfer, so deep chains use no native stack.
module;
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
export module karx.task:async;
import karx.waker;
import :alloc;

export namespace karx {
template <class T = void>
class Async;
}

namespace karx::detail {

struct AsyncChain {
  Context* cx = nullptr;  // the context of the poll in progress
  // The future the chain is suspended on: polled by `poll_pending(pending, cx)` until it
  // returns true (ready, its result stored in its awaiter), then `leaf` resumes.
  void* pending = nullptr;
  bool (*poll_pending)(void*, Context&) = nullptr;
  std::coroutine_handle<> leaf;
};

template <class A>
inline constexpr bool is_async = false;
template <class T>
inline constexpr bool is_async<Async<T>> = true;

// co_await of a Future: polled once at once (no suspension if ready), then by the root's poll.
template <class F>
class FutureAwaiter {
 public:
  using Output = output_of<F>;

  FutureAwaiter(F& future, AsyncChain* chain) noexcept : future_(future), chain_(chain) {}

  bool await_ready() {
    auto p = future_.poll(*chain_->cx);  // an exception here surfaces in the coroutine body
    if (p.is_pending()) return false;
    store(std::move(p));
    return true;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    chain_->pending = this;
    chain_->poll_pending = &poll_again;
    chain_->leaf = h;
  }
  Output await_resume() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (!std::is_void_v<Output>) return std::move(*value_);
  }

 private:
  static bool poll_again(void* self, Context& cx) noexcept {
    auto* a = static_cast<FutureAwaiter*>(self);
    try {
      auto p = a->future_.poll(cx);
      if (p.is_pending()) return false;
      a->store(std::move(p));
    } catch (...) {
      a->error_ = std::current_exception();  // rethrown inside the coroutine by await_resume
    }
    return true;
  }
  void store(Poll<Output>&& p) {
    if constexpr (!std::is_void_v<Output>) value_.emplace(std::move(p).value());
  }

  F& future_;
  AsyncChain* chain_;
  std::exception_ptr error_;
  [[no_unique_address]] std::conditional_t<std::is_void_v<Output>, std::nullptr_t, std::optional<Output>> value_{};
};

struct AsyncPromiseBase {
  AsyncChain own_chain;                  // used only when this frame is the root
  AsyncChain* chain = &own_chain;        // the root's chain
  std::coroutine_handle<> continuation;  // the awaiting parent frame, if any
  std::exception_ptr error;

  // Frames come from the task allocator, as task blocks do: with it, a coroutine task costs
  // two allocations of the same kind (docs/design.md, "The cost of a task").
  // (`inline` throughout this non-template struct: a named module's in-class definitions are
  // not implicitly inline, and these are on every coroutine's path.)
  inline static void* operator new(std::size_t size) { return allocate_task(size, alignof(std::max_align_t)); }
  inline static void operator delete(void* frame, std::size_t size) noexcept {
    deallocate_task(frame, size, alignof(std::max_align_t));
  }

  inline std::suspend_always initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    inline bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      std::coroutine_handle<> parent = h.promise().continuation;
      return parent ? parent : std::noop_coroutine();
    }
    inline void await_resume() noexcept {}
  };
  inline FinalAwaiter final_suspend() noexcept { return {}; }
  inline void unhandled_exception() noexcept { error = std::current_exception(); }

  template <class A>
  decltype(auto) await_transform(A&& awaited) {
    using Plain = std::remove_cvref_t<A>;
    if constexpr (is_async<Plain>) {
      return std::forward<A>(awaited).child_awaiter(chain);
    } else {
      static_assert(Future<Plain>,
                    "karx::Async can co_await only a karx::Future (something with poll(Context&) -> Poll<X>), "
                    "an Async<U> or a JoinHandle");
      return FutureAwaiter<Plain>(awaited, chain);
    }
  }
};

template <class T>
struct AsyncPromise : AsyncPromiseBase {
  std::optional<T> value;
  Async<T> get_return_object() noexcept;
  template <class U = T>
    requires std::is_constructible_v<T, U&&>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};

template <>
struct AsyncPromise<void> : AsyncPromiseBase {
  Async<void> get_return_object() noexcept;
  void return_void() noexcept {}
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

  Async(Async&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Async& operator=(Async&& other) noexcept {
    if (this != &other) {
      reset();
      h_ = std::exchange(other.h_, nullptr);
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
    detail::AsyncChain& chain = h_.promise().own_chain;
    chain.cx = &cx;
    std::coroutine_handle<> next = h_;
    if (chain.poll_pending != nullptr) {
      if (!chain.poll_pending(chain.pending, cx)) return pending;
      chain.poll_pending = nullptr;
      next = chain.leaf;
    }
    next.resume();
    if (!h_.done()) return pending;
    // Finished: take the result and free the frame right away.
    handle_type done = std::exchange(h_, nullptr);
    struct Free {
      handle_type h;
      ~Free() { h.destroy(); }
    } free_frame{done};
    if (done.promise().error) std::rethrow_exception(done.promise().error);
    if constexpr (std::is_void_v<T>)
      return Poll<void>::ready();
    else
      return Poll<T>::ready(std::move(*done.promise().value));
  }

 private:
  friend struct detail::AsyncPromise<T>;
  friend struct detail::AsyncPromiseBase;
  explicit Async(handle_type h) noexcept : h_(h) {}

  void reset() noexcept {
    if (h_) std::exchange(h_, nullptr).destroy();
  }

  // co_await of an Async inside another: run it as a child frame of the same chain.
  struct ChildAwaiter {
    handle_type child;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
      child.promise().continuation = parent;
      return child;
    }
    T await_resume() {
      if (child.promise().error) std::rethrow_exception(child.promise().error);
      if constexpr (!std::is_void_v<T>) return std::move(*child.promise().value);
    }
  };
  ChildAwaiter child_awaiter(detail::AsyncChain* chain) {
    if (!h_) throw std::logic_error("karx::Async: co_await of an Async that already finished or was moved from");
    if (h_.done() || h_.promise().continuation || h_.promise().own_chain.poll_pending != nullptr)
      throw std::logic_error("karx::Async: co_await of an Async that is already running or finished");
    h_.promise().chain = chain;
    return ChildAwaiter{h_};
  }

  handle_type h_;
};

}  // namespace karx

namespace karx::detail {
template <class T>
Async<T> AsyncPromise<T>::get_return_object() noexcept {
  return Async<T>(Async<T>::handle_type::from_promise(*this));
}
inline Async<void> AsyncPromise<void>::get_return_object() noexcept {
  return Async<void>(Async<void>::handle_type::from_promise(*this));
}
}  // namespace karx::detail
