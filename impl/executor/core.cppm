// The runtime's entry points used by the templates in runtime.cppm. Everything here is
// internal (nothing is exported by name); the machinery behind it is impl/executor/*.cpp.
module;
#include <atomic>
#include <cstddef>
#include <exception>
#include <utility>
export module karx.executor:core;
import karx.task;
import :options;

namespace karx::detail {

class RuntimeCore;

// Lifetime: the Runtime object and every task's schedule function hold a reference, so a
// waker that outlives the Runtime can still be woken safely (its task is then dropped).
RuntimeCore* core_create(const RuntimeOptions& options);  // throws std::invalid_argument
void core_add_ref(RuntimeCore* core) noexcept;
void core_release(RuntimeCore* core) noexcept;
void core_shutdown(RuntimeCore* core) noexcept;
RuntimeMetrics core_metrics(const RuntimeCore* core) noexcept;

// The schedule functions: a task woken (or spawned) goes to a worker, or to the blocking pool.
void core_schedule(RuntimeCore* core, Task<> task) noexcept;
void core_schedule_blocking(RuntimeCore* core, Task<> task) noexcept;
// Throws std::logic_error once the runtime is shutting down.
void core_check_open(RuntimeCore* core);
void core_note_spawn(RuntimeCore* core, bool blocking) noexcept;
void core_note_completed(RuntimeCore* core) noexcept;

// Every live task of a runtime is on its list from its first poll until its future is
// destroyed, so that the runtime's destructor can reach idle tasks (waiting on a waker held
// elsewhere) and destroy their futures. `task` is the task's own waker, borrowed: the list
// never owns a reference (a task listed is alive, since unlisting happens in its future's
// destructor, under the list's lock).
struct LiveNode {
  LiveNode* prev = nullptr;
  LiveNode* next = nullptr;
  RawWaker task{};
  bool listed = false;
};
void core_list(RuntimeCore* core, LiveNode* node, const Waker& task) noexcept;
void core_unlist(RuntimeCore* core, LiveNode* node) noexcept;

// On a worker thread inside a poll: gives up the processor before a call known to block
// (karx::blocking). Returns false elsewhere.
bool enter_blocking() noexcept;
// yield_now: the next schedule of the current task from this thread goes to the global queue.
void request_yield() noexcept;

// A reference to the core, as the schedule functions hold it (one pointer).
class CoreRef {
 public:
  explicit CoreRef(RuntimeCore* core) noexcept : core_(core) { core_add_ref(core_); }
  CoreRef(const CoreRef& o) noexcept : core_(o.core_) { core_add_ref(core_); }
  CoreRef(CoreRef&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  CoreRef& operator=(const CoreRef&) = delete;
  CoreRef& operator=(CoreRef&&) = delete;
  ~CoreRef() {
    if (core_ != nullptr) core_release(core_);
  }
  RuntimeCore* get() const noexcept { return core_; }

 private:
  RuntimeCore* core_;
};

struct ScheduleOnRuntime {
  CoreRef core;
  void operator()(Task<> task) const noexcept { core_schedule(core.get(), std::move(task)); }
};

struct ScheduleOnBlockingPool {
  CoreRef core;
  void operator()(Task<> task) const noexcept { core_schedule_blocking(core.get(), std::move(task)); }
};

// The future of a runtime task: the user's future, listed for shutdown, counted on completion.
template <class F>
class RuntimeFuture {
 public:
  RuntimeFuture(F future, RuntimeCore* core) : inner_(std::move(future)), core_(core) {}
  RuntimeFuture(RuntimeFuture&& o) : inner_(std::move(o.inner_)), core_(o.core_) {}  // before the first poll only
  RuntimeFuture& operator=(RuntimeFuture&&) = delete;
  ~RuntimeFuture() {
    if (node_.listed) core_unlist(core_, &node_);
  }

  auto poll(Context& cx) {
    if (!node_.listed) [[unlikely]]
      core_list(core_, &node_, cx.waker());
    try {
      auto p = inner_.poll(cx);
      if (p.is_ready()) core_note_completed(core_);
      return p;
    } catch (...) {
      core_note_completed(core_);
      throw;
    }
  }

 private:
  F inner_;
  RuntimeCore* core_;
  LiveNode node_;
};

}  // namespace karx::detail
