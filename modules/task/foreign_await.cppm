// co_await of a karx future from any C++20 coroutine, not only from karx::Async.
//
// `karx::operator co_await(future)` (found by argument-dependent lookup for the futures of
// namespace karx and karx::detail: JoinHandle, Async, Sleep, yield_now's, karx.sync's) returns
// a ForeignAwaiter that drives the future with a Waker of its own:
//
//  - await_ready polls the future once; a ready future suspends nothing and allocates nothing.
//  - await_suspend polls again while the future woke itself during the poll, then suspends.
//  - a wake that comes later re-polls the future on the waking thread and, once it is ready,
//    resumes the coroutine right there. So a foreign coroutine resumes on the thread that woke
//    the future (a runtime worker that completed a task, the timer thread, a thread that sent
//    on a channel), inside that wake, after re-polling the future there.
//
// Inside a karx::Async this operator is never used: the promise's await_transform turns the
// future into an awaiter of the chain (async.cppm), which is not a Future, so this overload
// does not apply to it.
//
// The state machine is non-template code (impl/task/foreign_await.cpp); docs/design.md,
// "Awaiting across coroutine types", has the protocol and its orderings.
module;
#include <atomic>
#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
export module karx.task:foreign_await;
import karx.waker;

namespace karx::detail {

// What a foreign coroutine's wakes share with its awaiter: allocated by the first clone of the
// awaiter's waker, and reference-counted (the awaiter and every clone), so a waker may outlive
// the awaiter. impl/task/foreign_await.cpp.
struct ForeignWakeBlock;

// The part of a foreign awaiter that does not depend on the future's type: its poll protocol.
//
// Until a poll clones its waker, the waker the future sees points at the awaiter itself (no
// allocation: a future ready at once, or one that only wakes itself by reference, costs
// nothing). The first clone allocates the block, in the state "polling" (the awaiting thread
// owns the poll); await_suspend gives the poll up, or polls again if a wake came meanwhile.
class ForeignAwaitBase {
 public:
  ForeignAwaitBase(const ForeignAwaitBase&) = delete;
  ForeignAwaitBase& operator=(const ForeignAwaitBase&) = delete;

 protected:
  // Polls the future once with `cx`; true once it is ready (its value or exception stored).
  using PollFn = bool (*)(ForeignAwaitBase*, Context&) noexcept;
  explicit ForeignAwaitBase(PollFn poll) noexcept : poll_(poll) {}
  ~ForeignAwaitBase() = default;

  // await_ready: the first poll, on the awaiting thread. True: ready (no suspension).
  bool first_poll() noexcept;
  // await_suspend: polls while the future woke itself meanwhile, then leaves the poll to the
  // wakes. False: it became ready (resume at once, on this thread).
  bool suspend(std::coroutine_handle<> coroutine) noexcept;
  // The typed awaiter's destructor, before its value is destroyed: no wake touches the awaiter
  // after this returns. If the coroutine is destroyed while it waits and a wake is re-polling
  // the future on another thread, this waits for that poll to return (and that poll then does
  // not resume the coroutine, even if it found the future ready).
  void detach() noexcept;

 private:
  friend struct ForeignWakeAccess;
  bool poll_here() noexcept;

  PollFn poll_;
  std::atomic<ForeignWakeBlock*> block_{nullptr};  // null until the waker is first cloned
  std::atomic<bool> woken_{false};                 // woken by reference through the awaiter's waker
};

struct ForeignNoValue {};

template <class F>
class ForeignAwaiter : ForeignAwaitBase {
 public:
  using Output = output_of<F>;

  explicit ForeignAwaiter(F& future) noexcept : ForeignAwaitBase(&poll_future), future_(&future) {}
  ~ForeignAwaiter() { detach(); }

  bool await_ready() noexcept { return first_poll(); }
  bool await_suspend(std::coroutine_handle<> coroutine) noexcept { return suspend(coroutine); }
  Output await_resume() {
    if (error_) [[unlikely]]
      std::rethrow_exception(std::exchange(error_, nullptr));
    if constexpr (!std::is_void_v<Output>) return std::move(*value_);
  }

 private:
  static bool poll_future(ForeignAwaitBase* base, Context& cx) noexcept {
    auto* self = static_cast<ForeignAwaiter*>(base);
    try {
      auto p = self->future_->poll(cx);
      if (p.is_pending()) return false;
      if constexpr (!std::is_void_v<Output>) self->value_.emplace(std::move(p).value());
    } catch (...) {
      self->error_ = std::current_exception();  // rethrown by await_resume
    }
    return true;
  }

  F* future_;  // an lvalue is polled in place; a temporary lives until the co_await completes
  std::exception_ptr error_;
  [[no_unique_address]] std::conditional_t<std::is_void_v<Output>, ForeignNoValue, std::optional<Output>> value_;
};

}  // namespace karx::detail

export namespace karx {

// Makes every karx Future awaitable from any C++20 coroutine: `co_await future` polls it with
// a waker of the awaiter's own and yields output_of<F> (rethrowing what poll threw). Found by
// argument-dependent lookup; an lvalue future is polled in place. See the top of this file
// for where the coroutine resumes.
template <class F>
  requires Future<std::remove_reference_t<F>>
detail::ForeignAwaiter<std::remove_reference_t<F>> operator co_await(F && future) noexcept {
  return detail::ForeignAwaiter<std::remove_reference_t<F>>(future);
}

}  // namespace karx

// The same operator for the futures whose types live in karx::detail (yield_now's, and the
// unspecified future types of other karx modules): argument-dependent lookup looks in the
// namespace of the type, not in the namespaces around it.
export namespace karx::detail {
using karx::operator co_await;
}  // namespace karx::detail
