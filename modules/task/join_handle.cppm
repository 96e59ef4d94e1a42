// JoinHandle<R, Tag>: the awaiting half of a spawned future.
module;
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
export module karx.task:join_handle;
import karx.waker;
import :header;
import :outcome;

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
    switch (detail::poll_handle(h, cx)) {
      case detail::HandlePoll::pending:
        return pending;
      case detail::HandlePoll::canceled:
        finish();
        if constexpr (std::is_void_v<R>)
          return Poll<bool>::ready(false);
        else
          return Poll<result_type>::ready(std::nullopt);
      case detail::HandlePoll::ready:
        break;
    }
    // We own the output now; whatever happens below it is destroyed and the handle finished.
    auto* out = reinterpret_cast<detail::Outcome<R>*>(reinterpret_cast<char*>(h) + h->vtable->output_offset);
    struct Finish {
      JoinHandle* self;
      detail::Outcome<R>* out;
      ~Finish() {
        out->~Outcome();
        self->finish();
      }
    } finish_guard{this, out};
    if (out->error) std::rethrow_exception(out->error);
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

  void finish() noexcept {
    detach();
    yielded_ = true;
  }

  detail::Header* header(const char* what) const {
    if (h_ != nullptr) return h_;
    if (yielded_)
      throw std::logic_error(std::string("karx::JoinHandle::") + what +
                             "(): the handle already yielded its result; a handle is awaited once");
    throw std::logic_error(std::string("karx::JoinHandle::") + what +
                           "(): the handle is empty (moved from or detached)");
  }

  detail::Header* h_ = nullptr;
  bool yielded_ = false;
};

}  // namespace karx
