// JoinHandle<R, Tag>: the awaiting half of a spawned future.
module;
#include <atomic>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>
export module karx.task:join_handle;
import karx.waker;
import :coop;
import :header;
import :outcome;
import :state;

export namespace karx {

// A Future of the task's result: std::optional<R> (std::nullopt if the task was canceled),
// or bool for R = void (true: completed). Rethrows the exception that escaped the future.
// Dropping the handle detaches the task: it keeps running and its output is discarded.
template <class R, class Tag = void>
class JoinHandle {
 public:
  using result_type = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;

  JoinHandle() noexcept = default;
  JoinHandle(JoinHandle&& other) noexcept
      : h_(std::exchange(other.h_, nullptr)), yielded_(std::exchange(other.yielded_, false)) {}
  JoinHandle& operator=(JoinHandle&& other) noexcept {
    if (this != &other) {
      detach();
      h_ = std::exchange(other.h_, nullptr);
      yielded_ = std::exchange(other.yielded_, false);
    }
    return *this;
  }
  JoinHandle(const JoinHandle&) = delete;
  JoinHandle& operator=(const JoinHandle&) = delete;
  ~JoinHandle() { detach(); }

  Poll<result_type> poll(Context& cx) {
    detail::Header* h = header("poll");
    if (!detail::coop_proceed(cx)) return pending;  // the task's turn is spent (coop.cppm)
    // The common case, inline: completed, and the handle is the task's last owner (see
    // poll_handle, which makes the same check first).
    const std::size_t state = h->state.load(std::memory_order_acquire);
    using namespace detail::state;
    const detail::HandlePoll polled = (state & (REFERENCE_MASK | COMPLETED | CLOSED)) == COMPLETED
                                          ? detail::HandlePoll::ready_sole_owner
                                          : detail::poll_handle(h, cx);
    if (polled == detail::HandlePoll::pending) return pending;
    h_ = nullptr;
    yielded_ = true;
    if (polled == detail::HandlePoll::canceled) {
      detail::release_handle(h);
      if constexpr (std::is_void_v<R>)
        return Poll<bool>::ready(false);
      else
        return Poll<result_type>::ready(std::nullopt);
    }
    // We own the output now; whatever happens below, it is destroyed and the task released.
    auto* out = reinterpret_cast<detail::Outcome<R>*>(reinterpret_cast<char*>(h) + h->vtable->output_offset);
    struct Release {
      detail::Header* h;
      detail::Outcome<R>* out;
      bool sole_owner;
      ~Release() {
        out->~Outcome();
        if (sole_owner)
          detail::free_task(h);
        else
          detail::release_handle(h);
      }
    } release{h, out, polled == detail::HandlePoll::ready_sole_owner};
    if (out->failed()) [[unlikely]]
      std::rethrow_exception(out->error);
    if constexpr (std::is_void_v<R>)
      return Poll<bool>::ready(true);
    else
      return Poll<result_type>::ready(result_type(std::in_place, std::move(out->value)));
  }

  // Cancels the task unless it already completed: its future is destroyed by one more run,
  // and the handle then yields "canceled". After completion it does nothing.
  void cancel() {
    if (h_ != nullptr) detail::cancel_handle(h_);
  }

  // True once poll would not pend: the task completed (or threw), or it was canceled and its
  // future has been destroyed. A snapshot that only moves from false to true while the handle
  // is held: once true, the next poll yields (the cooperative budget aside, which may still
  // defer it by one turn). Never polls, registers or runs anything. Throws std::logic_error on
  // an empty, moved-from or already yielded handle, as the other members do.
  //
  // Ordering: one acquire load of the state word, the same read poll starts with. The run that
  // set COMPLETED wrote the output before its release CAS, and the run or Task::cancel that
  // destroyed a canceled future cleared SCHEDULED/RUNNING with a release RMW after the
  // destructor; a load that sees either state therefore sees the output, or the destructor's
  // effects, and everything the task did before. Both states are final while the handle
  // exists (nothing clears COMPLETED, and a CLOSED task is never scheduled again), and a later
  // poll's load on this thread reads the same value or a later one (read-read coherence), so
  // it agrees: after a true here the poll yields, unless the budget defers it.
  bool is_finished() const {
    const std::size_t state = header("is_finished")->state.load(std::memory_order_acquire);
    using namespace detail::state;
    if ((state & CLOSED) != 0) return (state & (SCHEDULED | RUNNING)) == 0;
    return (state & COMPLETED) != 0;
  }

  // Gives up the result; the task keeps running. The handle becomes empty.
  void detach() noexcept {
    if (h_ != nullptr) detail::detach_handle(std::exchange(h_, nullptr));
  }

  Waker waker() const { return detail::task_waker(header("waker")); }

  template <class T = Tag>
    requires(!std::is_void_v<T>)
  const T& tag() const {
    return detail::tag_of<T>(header("tag"));
  }

  explicit operator bool() const noexcept { return h_ != nullptr; }

 private:
  friend struct detail::TaskAccess;
  explicit JoinHandle(detail::Header* h) noexcept : h_(h) {}

  detail::Header* header(const char* operation) const {
    if (h_ == nullptr) [[unlikely]]
      detail::throw_unusable_handle(operation, yielded_);
    return h_;
  }

  detail::Header* h_ = nullptr;
  bool yielded_ = false;
};

}  // namespace karx
