// karx.time: sleep_for / sleep_until, futures that a process-wide timer driver wakes. A module
// of its own: it needs only wakers, so any executor (the runtime, the simulation, a user's) uses
// it, and karx.executor does not depend on it.
//
// The driver (impl/time/timer_driver.cpp) is one thread with a min-heap of entries under a
// mutex; it starts on the first registration, so timers work from any context: a plain thread
// that polls with a waker_fn waker, or any executor. See the comments there for the protocol.
// A runtime's thread that sleeps in its netpoller stands in for the driver meanwhile (the
// TimerStandIn below): timers and sockets then share that one wait.
module;
#include <chrono>
#include <cstddef>
#include <utility>
export module karx.time;
import karx.waker;

// Exported for karx.sim (its virtual clock), not for users.
export namespace karx::detail {
// One registration with the timer driver: allocated on the first pending poll of a Sleep,
// owned by it, and freed by it (on completion or destruction). Defined in timer_driver.cpp.
struct TimerEntry;

// Virtual time (karx::sim::Simulation): while a simulation runs a task on this thread, sleeps
// read its clock and register with it instead of the timer driver.
class VirtualClock {
 public:
  virtual std::chrono::steady_clock::time_point now() const noexcept = 0;
  virtual void add_timer(std::chrono::steady_clock::time_point deadline, const Waker& waker) = 0;

 protected:
  ~VirtualClock() = default;
};
// The clock of the simulation running on this thread, or nullptr (timer_driver.cpp).
VirtualClock* virtual_clock() noexcept;
void set_virtual_clock(VirtualClock* clock) noexcept;
}  // namespace karx::detail

export namespace karx {

// The future of sleep_for / sleep_until: a Future<void> that is ready once
// steady_clock::now() >= deadline(). Move-only.
//
// A pending poll registers (deadline, a clone of cx.waker()) with the timer driver; a later poll
// with a waker that does not will_wake() the registered one replaces it, so only the newest is
// woken. The driver wakes the waker once, within about a millisecond after the deadline.
//
// Destroying a pending Sleep removes its entry from the driver at once and drops the waker clone
// it held: once the destructor has returned the driver never starts a wake of that waker. (A wake
// the driver had already begun, because the deadline had passed, may still be running on the
// driver thread while the Sleep is destroyed elsewhere: the destructor does not wait for it,
// which would deadlock a wake that needs a lock the destroying thread holds. Wakes are always
// allowed to be spurious.)
//
// Polling a Sleep during static destruction, after the driver has shut down, throws
// std::runtime_error when it would have to register (a ready Sleep is still ready). At exit,
// wakers still registered are dropped, not woken. An exception thrown by a waker's wake() is
// reported on stderr and ignored by the driver. A child forked without exec gets its own
// driver thread at its first registration.
class Sleep {
 public:
  inline explicit Sleep(std::chrono::steady_clock::time_point deadline) noexcept : deadline_(deadline) {}
  inline Sleep(Sleep&& other) noexcept : deadline_(other.deadline_), entry_(std::exchange(other.entry_, nullptr)) {}
  inline Sleep& operator=(Sleep&& other) noexcept {
    if (this != &other) {
      reset();
      deadline_ = other.deadline_;
      entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
  }
  Sleep(const Sleep&) = delete;
  Sleep& operator=(const Sleep&) = delete;
  inline ~Sleep() { reset(); }

  Poll<void> poll(Context& cx);

  inline std::chrono::steady_clock::time_point deadline() const noexcept { return deadline_; }

 private:
  // Deregisters (if still registered) and frees the entry.
  inline void reset() noexcept {
    if (entry_ != nullptr) release(std::exchange(entry_, nullptr));
  }
  static void release(detail::TimerEntry* entry) noexcept;

  std::chrono::steady_clock::time_point deadline_;
  detail::TimerEntry* entry_ = nullptr;  // null until the first pending poll
};

// A Sleep that is ready once steady_clock::now() >= deadline.
inline Sleep sleep_until(std::chrono::steady_clock::time_point deadline) noexcept { return Sleep(deadline); }

// sleep_until(now + duration); a zero or negative duration is ready on the first poll (without
// registering). A duration too long to represent saturates to the end of time.
// Inside a karx::sim::Simulation, `now` is the simulation's virtual time.
inline Sleep sleep_for(std::chrono::nanoseconds duration) noexcept {
  using clock = std::chrono::steady_clock;
  const detail::VirtualClock* virtual_time = detail::virtual_clock();
  const clock::time_point now = virtual_time != nullptr ? virtual_time->now() : clock::now();
  if (duration <= std::chrono::nanoseconds::zero()) return Sleep(now);
  const auto d = std::chrono::ceil<clock::duration>(duration);
  if (d > clock::time_point::max() - now) return Sleep(clock::time_point::max());
  return Sleep(now + d);
}

}  // namespace karx

export namespace karx::detail {
// The number of entries registered with the timer driver and not yet fired nor removed
// (process-wide). For tests: a destroyed pending Sleep must bring it back down at once.
std::size_t timer_pending_count() noexcept;

// A thread about to block in a wait of its own (a runtime's netpoll sleeper, in epoll_wait) may
// stand in for the timer driver: it waits no later than the earliest deadline, then fires what
// is due (timer_fire_due), so that a timer firing into an idle runtime wakes its task on that
// thread, with no hop through the driver's. One stand-in at a time; the protocol is in
// timer_driver.cpp. `interrupt(context)` must make the wait return early (an eventfd write);
// the driver calls it, under its lock, when an earlier deadline is registered meanwhile.
struct TimerStandIn {
  void (*interrupt)(void* context) noexcept = nullptr;
  void* context = nullptr;
  // The earliest deadline it was told of; max if none or not the stand-in. Written under the
  // driver's lock between begin and end; the stand-in's own thread may read it after end.
  std::chrono::steady_clock::time_point until = std::chrono::steady_clock::time_point::max();
};
// Becomes the stand-in, unless another thread is; returns `until`, the time to wait until.
std::chrono::steady_clock::time_point timer_stand_in_begin(TimerStandIn& stand_in) noexcept;
// The wait is over (whether or not begin made this the stand-in); if `until` has passed, the
// caller fires what is due.
void timer_stand_in_end(TimerStandIn& stand_in) noexcept;
// Fires the timers due now on the calling thread, calling `before_wakes(context)` first if
// any is; the number fired.
std::size_t timer_fire_due(void (*before_wakes)(void* context) noexcept, void* context) noexcept;
}  // namespace karx::detail
