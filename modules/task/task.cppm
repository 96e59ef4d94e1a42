// Task<Tag>: the runnable half of a spawned future, owned by whatever queue holds it.
module;
#include <type_traits>
#include <utility>
export module karx.task:task;
import karx.waker;
import :header;

export namespace karx {

template <class Tag = void>
class Task {
 public:
  Task() noexcept = default;
  Task(Task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      cancel();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  // Same as cancel(): a Task nobody runs destroys its future.
  ~Task() { cancel(); }

  // Passes this task to its schedule function. The Task becomes empty.
  void schedule() { detail_header("schedule")->vtable->schedule(std::exchange(h_, nullptr)); }

  // Polls the future once (or, if the handle canceled it, destroys it). The Task becomes
  // empty. Returns true iff the task was woken while it ran: it has then been handed to the
  // schedule function again. The future's exception is kept for the JoinHandle, never thrown.
  // Throws karx::foreign_thread, leaving the Task intact, for a spawn_local task run off its
  // spawning thread.
  bool run() {
    detail::Header* h = detail_header("run");
    if (h->vtable->check_thread != nullptr) h->vtable->check_thread(h);
    h_ = nullptr;
    return detail::run(h);
  }

  // Destroys the future now; the JoinHandle yields "canceled". Does nothing on an empty Task.
  void cancel() noexcept {
    if (h_ != nullptr) detail::cancel_task(std::exchange(h_, nullptr));
  }

  // A waker that schedules this task when woken.
  Waker waker() const { return detail::task_waker(detail_header("waker")); }

  template <class T = Tag>
    requires(!std::is_void_v<T>)
  const T& tag() const {
    return detail::tag_of<T>(detail_header("tag"));
  }

  explicit operator bool() const noexcept { return h_ != nullptr; }

  // For executors that keep tasks in their own (lock-free, intrusive) structures: gives up
  // ownership without running or canceling the task. The pointer must come back through
  // from_raw exactly once (as async-task's Runnable::into_raw / from_raw).
  void* into_raw() && noexcept { return std::exchange(h_, nullptr); }
  static Task from_raw(void* raw) noexcept { return Task(static_cast<detail::Header*>(raw)); }

 private:
  friend struct detail::TaskAccess;
  explicit Task(detail::Header* h) noexcept : h_(h) {}

  detail::Header* detail_header(const char* operation) const {
    if (h_ == nullptr) [[unlikely]]
      detail::throw_empty_task(operation);
    return h_;
  }

  detail::Header* h_ = nullptr;
};

}  // namespace karx
