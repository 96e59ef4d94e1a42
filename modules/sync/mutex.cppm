// Mutex: an async lock with FIFO hand-off. Not recursive, holds no value (guard what you like
// with it), and held across awaits without holding a thread.
//
// Protocol. `word_` holds LOCKED and WAITERS. Uncontended, lock and unlock are one CAS each
// (0 -> LOCKED -> 0) and never touch the wait list. WAITERS is set and cleared only under
// `list_lock_` and means "the queue is not empty"; while it is set, the fast paths fail:
// a new locker queues behind the waiters (no barging, so FIFO), and unlock hands the lock to
// the first waiter without ever making it free. The waiter learns it owns the lock from its
// node's state, stored (release) as the unlocker's last touch of the node.
module;
#include <atomic>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <utility>
export module karx.sync:mutex;
import karx.waker;
import :lock;
import :wait_list;
import :fatal;

export namespace karx {

class Mutex;

// Proof of holding a Mutex: unlocks it on destruction or unlock(). Movable.
class MutexGuard {
 public:
  inline MutexGuard(MutexGuard&& other) noexcept : mutex_(std::exchange(other.mutex_, nullptr)) {}
  MutexGuard& operator=(MutexGuard&& other) noexcept {
    if (this != &other) {
      release();
      mutex_ = std::exchange(other.mutex_, nullptr);
    }
    return *this;
  }
  inline ~MutexGuard() { release(); }

  // Unlocks now. Throws std::logic_error if this guard does not hold the lock (unlocked
  // already, or moved from).
  void unlock();
  bool owns_lock() const noexcept { return mutex_ != nullptr; }
  explicit operator bool() const noexcept { return mutex_ != nullptr; }

 private:
  friend class Mutex;
  friend class MutexLockFuture;
  inline explicit MutexGuard(Mutex* m) noexcept : mutex_(m) {}
  inline void release() noexcept;

  Mutex* mutex_;
};

// The future of Mutex::lock: a Future<MutexGuard>, ready once this waiter holds the lock.
// Destroying it while it waits leaves the queue; if the lock was already handed to it, it is
// handed on to the next waiter (or unlocked). It borrows the Mutex, which must outlive it.
class MutexLockFuture {
 public:
  inline MutexLockFuture(MutexLockFuture&& other) noexcept : mutex_(std::exchange(other.mutex_, nullptr)) {
    if (other.node_.state.load(std::memory_order_relaxed) == State::waiting)
      detail::sync_fatal("a karx.sync future was moved while it waited (a polled future must stay where it is)");
  }
  MutexLockFuture& operator=(MutexLockFuture&&) = delete;
  inline ~MutexLockFuture();

  inline Poll<MutexGuard> poll(Context& cx);

 private:
  friend class Mutex;
  enum class State : std::uint8_t { idle, waiting, granted, done };
  struct Node : detail::WaitNode {
    std::atomic<State> state{State::idle};
  };
  inline explicit MutexLockFuture(Mutex* m) noexcept : mutex_(m) {}

  Mutex* mutex_;
  Node node_;
};

class Mutex {
 public:
  Mutex() noexcept = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  // Destroying a Mutex that is locked or awaited is a bug that would leave a guard or a waiter
  // dangling: it ends the process with a karx diagnostic.
  ~Mutex() {
    if (word_.load(std::memory_order_acquire) != 0) detail::sync_fatal("karx::Mutex destroyed while locked or awaited");
  }

  // Waits until this caller holds the lock (FIFO among waiters).
  inline MutexLockFuture lock() noexcept { return MutexLockFuture(this); }

  // The lock if it is free and nobody waits for it, else nullopt.
  std::optional<MutexGuard> try_lock() noexcept {
    if (!try_lock_fast()) return std::nullopt;
    return MutexGuard(this);
  }

 private:
  friend class MutexGuard;
  friend class MutexLockFuture;
  static constexpr std::uint32_t kLocked = 1, kWaiters = 2;
  using Node = MutexLockFuture::Node;
  using State = MutexLockFuture::State;

  inline bool try_lock_fast() noexcept {
    std::uint32_t expected = 0;
    // acquire: pairs with unlock's release, so the previous holder's writes are visible.
    return word_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // (`inline` on the fast paths: a named module's in-class definitions are not implicitly
  // inline, and out of line each call cost 10-15 instructions of an uncontended lock's 180.)
  inline Poll<MutexGuard> poll_lock(Node& node, Context& cx) {
    // acquire: pairs with the unlocker's release store of `granted`.
    const State seen = node.state.load(std::memory_order_acquire);
    if (seen == State::granted) return granted(node);
    if (seen == State::idle && try_lock_fast()) {
      node.state.store(State::done, std::memory_order_relaxed);
      return Poll<MutexGuard>::ready(MutexGuard(this));
    }
    return poll_lock_slow(node, cx);
  }

  Poll<MutexGuard> poll_lock_slow(Node& node, Context& cx) {
    detail::SyncLockGuard guard(list_lock_);
    const State s = node.state.load(std::memory_order_relaxed);
    if (s == State::granted) return granted(node);
    if (s == State::waiting) {
      Waker replaced = node.exchange_waker(cx.waker());
      guard.unlock();  // the replaced waker is dropped outside the lock
      return pending;
    }
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      if (w == 0) {
        if (word_.compare_exchange_weak(w, kLocked, std::memory_order_acquire, std::memory_order_relaxed)) {
          node.state.store(State::done, std::memory_order_relaxed);
          return Poll<MutexGuard>::ready(MutexGuard(this));
        }
        continue;
      }
      // relaxed: WAITERS only tells unlock to come to the list, whose lock orders the rest.
      if ((w & kWaiters) != 0 ||
          word_.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed, std::memory_order_relaxed))
        break;
    }
    node.set_waker(cx.waker());
    waiters_.push_back(&node);
    node.state.store(State::waiting, std::memory_order_relaxed);
    return pending;
  }

  inline Poll<MutexGuard> granted(Node& node) noexcept {
    node.state.store(State::done, std::memory_order_relaxed);
    return Poll<MutexGuard>::ready(MutexGuard(this));
  }

  inline void cancel_lock(Node& node) noexcept {
    const State s = node.state.load(std::memory_order_acquire);
    if (s == State::idle || s == State::done) return;
    cancel_waiting(node);
  }

  void cancel_waiting(Node& node) noexcept {
    {
      detail::SyncLockGuard guard(list_lock_);
      if (node.queued) {
        waiters_.remove(&node);
        // relaxed: under the list lock, where WAITERS is decided.
        if (waiters_.empty()) word_.fetch_and(~kWaiters, std::memory_order_relaxed);
        return;
      }
    }
    // The lock was handed to this waiter, which never saw it: hand it on.
    unlock();
  }

  inline void unlock() noexcept {
    std::uint32_t expected = kLocked;
    // release: the critical section happens before the next holder's acquire.
    if (word_.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed)) return;
    unlock_to_waiter();
  }

  void unlock_to_waiter() noexcept {
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    if (waiters_.empty()) {
      // The last waiter left (cancelled) since WAITERS was set; under the list lock nobody
      // else changes the word, which is exactly LOCKED now.
      word_.store(0, std::memory_order_release);
      return;
    }
    auto& next = static_cast<Node&>(*waiters_.pop_front());
    // The lock passes to `next` without ever being free; clear WAITERS if it was the last.
    if (waiters_.empty()) word_.store(kLocked, std::memory_order_relaxed);
    wake.take_from(next);
    // release: this holder's critical section happens before the new holder's (its acquire
    // load of the state). Last touch of the node.
    next.state.store(State::granted, std::memory_order_release);
  }

  std::atomic<std::uint32_t> word_{0};
  detail::SyncLock list_lock_;
  detail::WaitList waiters_;
};

inline void MutexGuard::release() noexcept {
  if (mutex_ != nullptr) std::exchange(mutex_, nullptr)->unlock();
}
inline void MutexGuard::unlock() {
  if (mutex_ == nullptr)
    throw std::logic_error(
        "karx::MutexGuard::unlock(): the guard does not hold the lock (unlocked already, or moved from)");
  release();
}

inline MutexLockFuture::~MutexLockFuture() {
  if (mutex_ != nullptr) mutex_->cancel_lock(node_);
}
inline Poll<MutexGuard> MutexLockFuture::poll(Context& cx) {
  if (mutex_ == nullptr || node_.state.load(std::memory_order_relaxed) == State::done)
    throw std::logic_error(
        "karx::Mutex::lock(): the future already completed (or was moved from) and was polled again");
  return mutex_->poll_lock(node_, cx);
}

}  // namespace karx
