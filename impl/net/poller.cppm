// Poller: one epoll instance, edge-triggered, plus an eventfd that breaks a blocking wait.
//
// Registration. A socket registers once, for its whole life, with
// EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLPRI|EPOLLET, and the event's data is its IoRegistration:
// per direction a Readiness (readiness.cppm). Edge-triggered, so an event means "something
// changed since the last event"; the sockets try the syscall first and park only on EAGAIN
// (or when a short transfer already showed it, readiness.cppm), so they never depend on an
// event for data that was there already.
//
// Who polls. Any thread may call poll(): several at once is fine (epoll hands each event to
// one caller), and a wait of 0 is what a worker does before it parks and what the monitor does
// when nobody has polled for 10 ms. At most one thread at a time *sleeps* in poll() (the
// sleeper, claimed with become_sleeper): the runtime's idle worker, idle guest or idle monitor;
// the standalone reactor's thread for the reactor's poller. Waking that thread is
// interrupt(): a write to the eventfd. The eventfd is registered level-triggered and only a
// blocking poll drains it, so a non-blocking poller that happens to see it cannot swallow a
// wake meant for the sleeper.
//
// Deregistration. A socket removes its fd from the epoll set before closing it, but another
// thread may be past epoll_wait with an event for it in hand. So registrations are never
// freed while the Poller lives: a removed one goes to a free list and is reused (Go's pollDesc
// cache does the same). A late event for a reused registration only bumps its ticks: its new
// socket then retries a syscall and parks again (a spurious wake). The Poller itself is
// reference-counted (its owner, and each registration) and deleted by the last release, which
// comes after every thread that polls it is gone (the runtime joins its threads first; the
// reactor's poller is never deleted).
module;
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>
export module karx.netpoll:poller;
import :readiness;

export namespace karx::detail::net {

class Poller;

struct IoRegistration {
  Readiness read;
  Readiness write;
  Readiness& of(Direction d) noexcept { return d == Direction::read ? read : write; }

  Poller* poller = nullptr;  // set once, when the node is made
  int fd = -1;               // owner-only while registered
  // Guarded by the poller's mutex.
  bool live = false;
  IoRegistration* next_free = nullptr;
};

class Poller {
 public:
  // A new poller with one reference (the caller's). Throws std::system_error.
  static Poller* create();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // relaxed: a reference is only ever taken from one held already (the count cannot be 0).
  void acquire() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // acq_rel: the last release sees every other holder's use of the poller before deleting it.
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Registers `fd` (non-blocking) for its lifetime; the registration holds a reference to the
  // poller. Throws std::system_error (errno of epoll_ctl), or if the poller is closed.
  IoRegistration* add(int fd);
  // Takes `fd` out of the epoll set (call before closing it), drops any parked waker and
  // recycles the registration; gives its reference back.
  void remove(IoRegistration* reg) noexcept;

  // Waits up to `timeout` (negative: forever; zero: just look; nanosecond resolution) and wakes
  // what is ready. Returns the number of operations woken (an event for a direction nobody
  // waits on wakes none). EINTR counts as a return with none. The sleeper passes
  // `as_sleeper`: it stops being the sleeper as soon as epoll_wait returns, before it wakes
  // anything, so that the wakes it causes do not interrupt it for nothing. `before_wakes`, if
  // given, is called with `context` once, before the first operation is woken: the runtime's
  // sleeper takes a processor there, so that what it wakes runs on its own thread (netpoll.cpp).
  using BeforeWakes = void (*)(void* context) noexcept;
  std::size_t poll(std::chrono::nanoseconds timeout, bool as_sleeper = false, BeforeWakes before_wakes = nullptr,
                   void* context = nullptr) noexcept;
  // Makes the sleeper's poll (or the next blocking poll) return.
  void interrupt() noexcept;

  // --- The sleeper: the one thread that may wait in poll() with a timeout ---------------------
  // The protocol with whoever wakes it: the sleeper claims the role (become_sleeper), issues a
  // seq_cst fence, checks its wake-up conditions and only then polls; a waker sets the
  // condition, issues a seq_cst fence, and interrupts if sleeper() is its target. By the
  // fences, either the sleeper sees the condition or the waker sees the sleeper.
  // All three relaxed: the seq_cst fences of the protocol above order them against the
  // conditions; the sleeper word itself publishes nothing else.
  bool become_sleeper(const void* who) noexcept {
    const void* none = nullptr;
    return sleeper_.compare_exchange_strong(none, who, std::memory_order_relaxed);
  }
  void stop_sleeping() noexcept { sleeper_.store(nullptr, std::memory_order_relaxed); }
  const void* sleeper() const noexcept { return sleeper_.load(std::memory_order_relaxed); }

  // Sockets registered now (a hint: relaxed). With none, nobody needs to poll.
  std::size_t registered() const noexcept { return registered_.load(std::memory_order_relaxed); }
  // When poll() last returned, in steady_clock nanoseconds (relaxed: a hint for the monitor).
  std::int64_t last_poll_ns() const noexcept { return last_poll_ns_.load(std::memory_order_relaxed); }

  // The owner (a runtime) is gone: nobody will poll any more. Wakes every parked operation;
  // from now on parking throws (is_closed), and add throws.
  void close() noexcept;
  bool is_closed() const noexcept { return closed_.load(std::memory_order_acquire); }

 private:
  Poller(int epfd, int evfd) noexcept : epfd_(epfd), evfd_(evfd) {}
  ~Poller();

  const int epfd_;
  const int evfd_;
  std::atomic<std::size_t> refs_{1};
  std::atomic<const void*> sleeper_{nullptr};
  std::atomic<std::size_t> registered_{0};
  std::atomic<std::int64_t> last_poll_ns_{0};
  std::atomic<bool> closed_{false};
  std::mutex mutex_;                  // guards the lists below and each node's live/next_free
  std::vector<IoRegistration*> all_;  // every node ever made, freed with the poller
  IoRegistration* free_ = nullptr;
};

// The standalone reactor: a process-wide Poller and one thread that sleeps in it, started on
// first use (as the timer driver); for sockets made outside a karx runtime. The poller is
// never deleted; the thread is stopped and joined at exit. Throws std::system_error if the
// poller or the thread cannot be made.
Poller& reactor_poller();

}  // namespace karx::detail::net

export namespace karx::detail::net {
// The runtime's side of socket creation: karx.executor installs a hook (when it makes a
// runtime) that returns a runtime's Poller with a reference for the caller, or nullptr when
// that runtime is shutting down. karx.net calls runtime_poller(Runtime::current()).
using RuntimePollerHook = Poller* (*)(void* runtime);
void set_runtime_poller_hook(RuntimePollerHook hook) noexcept;
// The Poller of `runtime` (acquired), or nullptr (no runtime, no hook, shutting down).
Poller* runtime_poller(void* runtime);
}  // namespace karx::detail::net
