// Runtime: the golang-style executor. Also the free functions that go with it: the global
// runtime and exec, block_on, blocking, yield_now.
module;
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
export module karx.executor:runtime;
import karx.task;
import karx.machinery;
import :core;
import :options;

namespace karx::detail {

// spawn_blocking's future: runs the closure when polled (on a blocking-pool thread).
template <class Fn>
struct BlockingFuture {
  Fn fn;
  using R = std::invoke_result_t<Fn&>;
  Poll<R> poll(Context&) {
    if constexpr (std::is_void_v<R>) {
      fn();
      return ready();
    } else {
      return Poll<R>::ready(fn());
    }
  }
};

// yield_now's future: reschedules its task once, behind the tasks already queued.
struct YieldNow {
  bool yielded = false;
  Poll<> poll(Context& cx) {
    if (yielded) return ready();
    yielded = true;
    request_yield();
    cx.waker().wake();
    return pending;
  }
};

// block_on's signal: the waker sets the flag and wakes the blocked thread (a futex on the
// flag itself: the waiting side may also wait with a timeout, which std::atomic::wait lacks).
struct BlockOnSignal {
  std::atomic<std::uint32_t> woken{0};
};

// Runtime::block_on on a guest worker: between polls of `future` the thread runs tasks.
struct GuestSignal {
  std::atomic<bool> done{false};
  Worker* guest = nullptr;
};

// Leaves the guest role however block_on exits.
class GuestScope {
 public:
  explicit GuestScope(RuntimeCore* core) noexcept : guest_(guest_enter(core)) {}
  GuestScope(const GuestScope&) = delete;
  GuestScope& operator=(const GuestScope&) = delete;
  ~GuestScope() {
    if (guest_ != nullptr) guest_leave(guest_);
  }
  Worker* get() const noexcept { return guest_; }

 private:
  Worker* guest_;
};

template <Future F>
output_of<F> guest_block_on(Worker* guest, F future) {
  auto signal = std::make_shared<GuestSignal>();
  signal->guest = guest;
  Waker waker = waker_fn([signal] {
    signal->done.store(true, std::memory_order_release);
    guest_wake(signal->guest);
  });
  Context cx(waker);
  for (;;) {
    auto p = future.poll(cx);
    if (p.is_ready()) {
      if constexpr (std::is_void_v<output_of<F>>)
        return;
      else
        return std::move(p).value();
    }
    guest_run(guest, signal->done);
    signal->done.store(false, std::memory_order_relaxed);
  }
}

}  // namespace karx::detail

export namespace karx {

// Runs `future` on the calling thread until it completes, sleeping while it is pending. Works
// anywhere: on a plain thread with no runtime, and inside a task, where the worker runs its
// other queued tasks while it waits (detail::help_while_blocked) instead of sleeping.
template <Future F>
output_of<F> block_on(F future) {
  auto signal = std::make_shared<detail::BlockOnSignal>();
  Waker waker = waker_fn([signal] {
    // release: what made the future ready is visible to the re-poll (acquire below).
    signal->woken.store(1, std::memory_order_release);
    detail::wake_word_waiters(signal->woken);
  });
  Context cx(waker);
  for (;;) {
    auto p = future.poll(cx);
    if (p.is_ready()) {
      if constexpr (std::is_void_v<output_of<F>>)
        return;
      else
        return std::move(p).value();
    }
    while (signal->woken.load(std::memory_order_acquire) == 0)
      if (!detail::help_while_blocked(signal->woken))
        detail::wait_on_word(signal->woken, 0, std::chrono::nanoseconds(-1));
    signal->woken.store(0, std::memory_order_relaxed);
  }
}

// A future that lets other tasks run: the task goes to the back of the global queue once.
inline detail::YieldNow yield_now() noexcept { return {}; }

// Runs `fn`, a call known to block (I/O, a lock, sleep), from inside a task: the worker gives
// its processor to another thread before `fn` runs and tries to take one back afterwards
// (Go's entersyscallblock / exitsyscall). Anywhere else it just calls `fn`.
template <class Fn>
std::invoke_result_t<Fn> blocking(Fn fn) {
  detail::enter_blocking();
  return fn();
}

class Runtime {
 public:
  // Throws std::invalid_argument for options out of range (and for a KARX_PROCS that is not
  // a whole number from 1 to 1024), std::system_error if the monitor thread cannot start.
  explicit Runtime(RuntimeOptions options = {}) : core_(detail::core_create(options, this)) {}
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Destroys every future still pending (their handles yield "canceled"), waits for polls in
  // progress to return, joins every thread it started. Does not wait for tasks to finish.
  ~Runtime() {
    detail::core_shutdown(core_);
    detail::core_orphan(core_);
  }

  template <Future F>
  requires std::move_constructible<F>  // and so a non-throwing destructor
      JoinHandle<output_of<F>> spawn(F future) {
    detail::core_begin_spawn(core_);
    detail::TaskTicket ticket(core_, detail::TaskTicket::Counted{});  // gives the count back if spawn throws
    auto [task, handle] = karx::spawn(std::move(future), detail::ScheduleOnRuntime{std::move(ticket)});
    detail::core_submit(core_, std::move(task));
    return std::move(handle);
  }

  // Spawns `future` here and blocks the calling thread until it completes. Throws
  // std::runtime_error if the runtime is destroyed first (the task was canceled). Called from
  // outside the runtime's workers, the calling thread takes a free processor while it waits
  // and runs tasks itself (the root first), so a small job runs without waking a worker.
  template <Future F>
  requires std::move_constructible<F>  // and so a non-throwing destructor
      output_of<F> block_on(F future) {
    detail::CurrentRuntimeScope current(this);
    detail::GuestScope guest(core_);
    auto handle = spawn(std::move(future));
    auto result = guest.get() != nullptr ? detail::guest_block_on(guest.get(), std::move(handle))
                                         : karx::block_on(std::move(handle));
    if (!result) throw std::runtime_error("karx::Runtime::block_on: the task was canceled");
    if constexpr (!std::is_void_v<output_of<F>>) return std::move(*result);
  }

  // Runs `fn` on a thread of the blocking pool, which holds no processor.
  template <class Fn>
  JoinHandle<std::invoke_result_t<Fn>> spawn_blocking(Fn fn) {
    detail::core_begin_spawn(core_);
    detail::TaskTicket ticket(core_, detail::TaskTicket::Counted{});
    auto [task, handle] =
        karx::spawn(detail::BlockingFuture<Fn>{std::move(fn)}, detail::ScheduleOnBlockingPool{std::move(ticket)});
    detail::core_count_blocking_spawn(core_);
    task.schedule();
    return std::move(handle);
  }

  RuntimeMetrics metrics() const { return detail::core_metrics(core_); }

  // The runtime whose task this thread is running (on its workers and blocking-pool threads),
  // or whose block_on it is inside; nullptr elsewhere, including on a thread whose block_on
  // has returned. exec() spawns onto it.
  static Runtime* current() noexcept { return static_cast<Runtime*>(detail::current_runtime); }

 private:
  detail::RuntimeCore* core_;
};

// spawn_on for the runtime: its tasks carry the runtime's own bookkeeping (shutdown reaches
// them, metrics count them), so this is Runtime::spawn.
template <Future F>
requires std::move_constructible<F>  // and so a non-throwing destructor
    JoinHandle<output_of<F>> spawn_on(Runtime& runtime, F future) {
  return runtime.spawn(std::move(future));
}

// The process-wide runtime, started on first use with default options. It lives until the
// process exits (it is never destroyed: tasks may still run while static objects go away).
Runtime& global_runtime();

// Spawns onto Runtime::current(): the runtime whose task is calling, else the global one.
template <Future F>
requires std::move_constructible<F>  // and so a non-throwing destructor
    JoinHandle<output_of<F>> exec(F future) {
  Runtime* current = Runtime::current();
  return (current != nullptr ? *current : global_runtime()).spawn(std::move(future));
}

}  // namespace karx
