// Readiness: one direction (read or write) of one registered socket. The poller counts the
// readiness events the kernel reports for it (`ticks`) and wakes the one waker parked on it;
// a socket operation parks only if no event came since it looked, so an edge that arrives
// between "the syscall said EAGAIN" and "the waker is stored" is never lost (tokio's
// ScheduledIo readiness tick, Go's pollDesc rg/wg, both with a lock-free fast path).
//
// The protocol, for a future F and the poller P:
//   F: seen = ticks(); syscall; EAGAIN -> park(seen, waker): under the lock, if ticks still
//      equals seen, store the waker and return pending; else retry the syscall.
//   P: ticks += 1; then under the lock take the waker; wake it outside the lock.
// Why no wake is lost: the increment is sequenced before P takes the lock. If P's critical
// section comes first, F's later critical section sees the new count (the lock's
// release/acquire) and retries the syscall; if F's comes first, P finds the waker and wakes
// it. An event that the kernel queued before F's syscall may be delivered after F parked:
// then F is woken for nothing, retries, sees EAGAIN, parks again (spurious, harmless).
//
// Skipping the EAGAIN. On a TCP socket, a transfer shorter than asked shows what EAGAIN would:
// a read that returns less than its buffer has emptied the receive queue (tcp_recvmsg stops
// early only when the queue runs out), a write that takes less than its buffer has filled the
// send queue. F records that as drained_at(seen). The next operation in that direction, if
// ticks is still `seen`, parks without the syscall: data that came after the short transfer
// made the kernel queue an epoll event after F loaded `seen`, so the poller either counted it
// already (ticks != seen: F makes the syscall) or will count it and wake F. tokio clears its
// readiness on a short read or write for the same reason. This saves one syscall per request
// of a request/response connection (its next read always found nothing). Two kernel states
// break the premise, and the poller marks them in `exceptional` before it counts their event
// (so a future that sees the count sees the mark): the end of the stream or an error (EPOLLRDHUP,
// EPOLLHUP, EPOLLERR), after which a read returns 0 or the error at once, and urgent data
// (EPOLLPRI), where a read stops short at the urgent mark. A marked direction never skips.
module;
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <utility>
export module karx.netpoll:readiness;
import karx.waker;

export namespace karx::detail::net {

enum class Direction : unsigned char { read = 0, write = 1 };

// The count of readiness events of one direction. 64 bits: a drained_at mark can never meet
// the same count again after a wrap-around.
using Tick = std::uint64_t;

class Readiness {
 public:
  Readiness() = default;
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  // The number of readiness events so far. acquire: pairs with notify's release increment,
  // so a caller that sees tick n also sees what the poller saw before it counted n (the
  // epoll_wait that reported the event); the syscall the caller makes next comes after it.
  Tick ticks() const noexcept { return ticks_.load(std::memory_order_acquire); }

  // A short transfer made after ticks() returned `seen` emptied (read) or filled (write) the
  // socket's queue; see "Skipping the EAGAIN" above. relaxed, as the load in known_drained:
  // both are made by the direction's one operation at a time, ordered by its task's polls.
  void drained_at(Tick seen) noexcept { drained_at_.store(seen, std::memory_order_relaxed); }
  // Whether the syscall may be skipped: nothing was counted since a short transfer, and no
  // exceptional condition was. `seen` comes from ticks(), whose acquire makes the poller's
  // exceptional mark for any counted event visible here (relaxed load).
  bool known_drained(Tick seen) const noexcept {
    return drained_at_.load(std::memory_order_relaxed) == seen && !exceptional_.load(std::memory_order_relaxed);
  }

  // Stores a clone of `waker` for `owner` (the operation's address) unless an event came
  // since `seen`: true if parked, false to retry the syscall. A re-poll of the same owner
  // replaces its waker. Throws std::logic_error if another operation is parked here: one
  // pending operation per direction and socket (two reads, say, would steal each other's
  // wakes). The replaced waker is dropped outside the lock (dropping it may destroy a task
  // whose future's destructor comes back here).
  bool park(Tick seen, const Waker& waker, const void* owner) {
    Waker clone = waker;  // the clone function runs outside the lock
    {
      std::lock_guard lock(mutex_);
      // relaxed: the lock orders this load after any increment whose critical section came
      // before ours (see the protocol above).
      if (ticks_.load(std::memory_order_relaxed) != seen) return false;
      if (owner_ != nullptr && owner_ != owner)
        throw std::logic_error(
            "karx::net: two operations of the same kind wait on one socket at once (one read, one write, one "
            "accept or one recv_from at a time)");
      owner_ = owner;
      std::swap(waker_, clone);
    }
    return true;
  }

  // The operation `owner` is destroyed (or done): drops its waker if it is still parked.
  void forget(const void* owner) noexcept {
    Waker dropped = empty();
    {
      std::lock_guard lock(mutex_);
      if (owner_ != owner) return;
      owner_ = nullptr;
      std::swap(waker_, dropped);
    }
  }

  // The poller saw an event for this direction: count it, then wake whoever is parked.
  void notify() noexcept {
    Waker woken = take_on_event(false);
    if (holds_waker(woken)) wake_reporting(std::move(woken));
  }

  // notify in two steps, for a poller that acts between them (the runtime's sleeper takes a
  // processor only when a task is to be woken): counts the event and takes the parked waker,
  // if any (else an empty one: holds_waker is false); the caller wakes it (wake_reporting).
  // `exceptional`: the event reports a state in which a short transfer proves nothing (end of
  // stream, error, urgent data); it stays marked for the rest of the socket's life.
  Waker take_on_event(bool exceptional) noexcept {
    // relaxed: published by the release increment that follows.
    if (exceptional) exceptional_.store(true, std::memory_order_relaxed);
    // release: see ticks(). The lock below, not this ordering, is what makes park's check
    // see the increment (the protocol above).
    ticks_.fetch_add(1, std::memory_order_release);
    Waker woken = empty();
    {
      std::lock_guard lock(mutex_);
      if (owner_ == nullptr) return woken;
      owner_ = nullptr;
      std::swap(waker_, woken);
    }
    return woken;
  }
  static bool holds_waker(const Waker& w) noexcept { return w.as_raw().vtable != nullptr; }
  // A waker that throws must not take the poller (and every other socket) down with it: as
  // the timer driver does, report it and go on.
  static void wake_reporting(Waker&& woken) noexcept {
    try {
      std::move(woken).wake_and_release();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "karx: netpoller: a waker threw from wake(): %s (ignored)\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "karx: netpoller: a waker threw from wake(): non-standard exception (ignored)\n");
    }
  }

  // The socket is closing: drops whatever waker is still here (an operation that outlived its
  // socket, which is misuse, must not leave it to the registration's next socket), and the
  // drained mark. A late event of the old socket may still mark `exceptional` afterwards: that
  // only costs the next socket the skipped syscall, so it is cleared here and not fenced.
  void reset() noexcept {
    drained_at_.store(kNever, std::memory_order_relaxed);
    exceptional_.store(false, std::memory_order_relaxed);
    Waker dropped = empty();
    {
      std::lock_guard lock(mutex_);
      owner_ = nullptr;
      std::swap(waker_, dropped);
    }
  }

  // Whether an operation is parked here (tests, and the poller's close).
  bool parked() noexcept {
    std::lock_guard lock(mutex_);
    return owner_ != nullptr;
  }

 private:
  static Waker empty() noexcept { return Waker::from_raw(RawWaker{nullptr, nullptr}); }

  static constexpr Tick kNever = ~Tick{0};  // a count ticks_ does not reach

  std::atomic<Tick> ticks_{0};
  std::atomic<Tick> drained_at_{kNever};
  std::atomic<bool> exceptional_{false};
  std::mutex mutex_;
  Waker waker_ = empty();        // guarded by mutex_
  const void* owner_ = nullptr;  // guarded by mutex_
};

}  // namespace karx::detail::net
