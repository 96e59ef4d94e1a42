// Notify: wakes waiting tasks (tokio's Notify). notify_one wakes the first waiter or, with
// none, stores one permit that the next notified() consumes; notify_all wakes every current
// waiter and stores nothing.
//
// Protocol. `word_` holds a generation (upper bits, bumped by each notify_all) and one of
// EMPTY, WAITING (the queue is not empty) and NOTIFIED (a stored permit). Storing or taking
// the permit is one CAS with no lock; WAITING is entered and left only under `list_lock_`.
// A notified() future records the generation when it is made, so a notify_all between its
// creation and its first poll still counts for it (create the future, check your condition,
// then await: no wake-up is lost). A waiter learns it was notified from its node's state,
// stored (release) as the notifier's last touch of the node.
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
export module karx.sync:notify;
import karx.waker;
import :lock;
import :wait_list;
import :fatal;

export namespace karx {

class Notify;

// The future of Notify::notified(): a Future<void>. Destroyed after a notify_one chose it but
// before it saw that, it passes the notification on (to the next waiter, or as the permit).
// It borrows the Notify, which must outlive it.
class Notified {
 public:
  Notified(Notified&& other) noexcept : notify_(std::exchange(other.notify_, nullptr)), generation_(other.generation_) {
    if (other.node_.state.load(std::memory_order_relaxed) == State::waiting)
      detail::sync_fatal("a karx.sync future was moved while it waited (a polled future must stay where it is)");
  }
  Notified& operator=(Notified&&) = delete;
  inline ~Notified();

  inline Poll<void> poll(Context& cx);

 private:
  friend class Notify;
  enum class State : std::uint8_t { idle, waiting, notified_one, notified_all, done };
  struct Node : detail::WaitNode {
    std::atomic<State> state{State::idle};
    std::size_t generation = 0;
  };
  Notified(Notify* n, std::size_t generation) noexcept : notify_(n), generation_(generation) {}

  Notify* notify_;
  std::size_t generation_;
  Node node_;
};

class Notify {
 public:
  Notify() noexcept = default;
  Notify(const Notify&) = delete;
  Notify& operator=(const Notify&) = delete;
  ~Notify() {
    if ((word_.load(std::memory_order_acquire) & kStateMask) == kWaiting)
      detail::sync_fatal("karx::Notify destroyed while tasks wait on it");
  }

  // Wakes the longest-waiting notified() future, or stores one permit if none waits (at most
  // one is stored).
  void notify_one() noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t s = w & kStateMask;
      if (s == kNotified) return;
      if (s == kWaiting) break;
      // release: what the notifier did before happens before the permit's taker goes on.
      if (word_.compare_exchange_weak(w, (w & ~kStateMask) | kNotified, std::memory_order_release,
                                      std::memory_order_relaxed))
        return;
    }
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    notify_one_locked(wake);
  }

  // Wakes every notified() future waiting now (and every one made before this call that has
  // not been polled yet); stores nothing.
  void notify_all() noexcept {
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    // A new generation (release: pairs with the generation read of a new future): futures made
    // before this point are notified; the ones queued now are woken below.
    const std::size_t generation = word_.fetch_add(kGeneration, std::memory_order_release) >> kGenerationShift;
    for (;;) {
      while (!wake.full() && !waiters_.empty() && static_cast<Node*>(waiters_.front())->generation <= generation) {
        auto& n = static_cast<Node&>(*waiters_.pop_front());
        wake.take_from(n);
        n.state.store(State::notified_all, std::memory_order_release);  // last touch of the node
      }
      if (waiters_.empty()) clear_waiting();
      if (!wake.full()) return;
      // More than a batch: wake these outside the lock. Waiters queued meanwhile carry a newer
      // generation, at the back of the queue, and are not ours to wake.
      guard.unlock();
      wake.wake_all();
      guard.relock(list_lock_);
    }
  }

  // A future that is ready once this Notify is notified (see the class comment).
  Notified notified() noexcept {
    // acquire: pairs with notify_all's release.
    return Notified(this, word_.load(std::memory_order_acquire) >> kGenerationShift);
  }

 private:
  friend class Notified;
  static constexpr std::size_t kEmpty = 0, kWaiting = 1, kNotified = 2, kStateMask = 3;
  static constexpr std::size_t kGenerationShift = 2, kGeneration = std::size_t{1} << kGenerationShift;
  using Node = Notified::Node;
  using State = Notified::State;

  // Under the list lock, the state is WAITING: hand the notification to the first waiter.
  void notify_one_locked(detail::WakeBatch& wake) noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t s = w & kStateMask;
      if (s == kWaiting) break;
      if (s == kNotified) return;
      if (word_.compare_exchange_weak(w, (w & ~kStateMask) | kNotified, std::memory_order_release,
                                      std::memory_order_relaxed))
        return;
    }
    auto& n = static_cast<Node&>(*waiters_.pop_front());
    if (waiters_.empty()) clear_waiting();
    wake.take_from(n);
    n.state.store(State::notified_one, std::memory_order_release);  // last touch of the node
  }

  // Under the list lock, with the queue empty: WAITING -> EMPTY (the generation may move
  // meanwhile only under this lock, and the permit only outside WAITING: a plain CAS loop).
  void clear_waiting() noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    while ((w & kStateMask) == kWaiting &&
           !word_.compare_exchange_weak(w, w & ~kStateMask, std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }

  // Takes the stored permit if there is one.
  bool take_permit() noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    // acquire: pairs with notify_one's release.
    while ((w & kStateMask) == kNotified)
      if (word_.compare_exchange_weak(w, w & ~kStateMask, std::memory_order_acquire, std::memory_order_relaxed))
        return true;
    return false;
  }

  Poll<void> poll_notified(Node& node, std::size_t generation, Context& cx) {
    const State seen = node.state.load(std::memory_order_acquire);
    if (seen == State::notified_one || seen == State::notified_all) return done(node);
    if (seen == State::idle) {
      if ((word_.load(std::memory_order_acquire) >> kGenerationShift) != generation) return done(node);
      if (take_permit()) return done(node);
    }
    detail::SyncLockGuard guard(list_lock_);
    const State s = node.state.load(std::memory_order_relaxed);
    if (s == State::notified_one || s == State::notified_all) return done(node);
    if (s == State::waiting) {
      Waker replaced = node.exchange_waker(cx.waker());
      guard.unlock();  // the replaced waker is dropped outside the lock
      return pending;
    }
    std::size_t w = word_.load(std::memory_order_acquire);
    for (;;) {
      if ((w >> kGenerationShift) != generation) return done(node);
      const std::size_t st = w & kStateMask;
      if (st == kNotified) {
        if (word_.compare_exchange_weak(w, w & ~kStateMask, std::memory_order_acquire, std::memory_order_acquire))
          return done(node);
        continue;
      }
      if (st == kWaiting ||
          word_.compare_exchange_weak(w, w | kWaiting, std::memory_order_relaxed, std::memory_order_acquire))
        break;
    }
    node.generation = generation;
    node.set_waker(cx.waker());
    waiters_.push_back(&node);
    node.state.store(State::waiting, std::memory_order_relaxed);
    return pending;
  }

  static Poll<void> done(Node& node) noexcept {
    node.state.store(State::done, std::memory_order_relaxed);
    return ready();
  }

  void cancel_notified(Node& node) noexcept {
    const State s = node.state.load(std::memory_order_acquire);
    if (s == State::idle || s == State::done || s == State::notified_all) return;
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    if (node.queued) {
      waiters_.remove(&node);
      if (waiters_.empty()) clear_waiting();
      return;
    }
    // notify_one chose this waiter, which never saw it: pass it on.
    if (node.state.load(std::memory_order_relaxed) == State::notified_one) notify_one_locked(wake);
  }

  std::atomic<std::size_t> word_{kEmpty};
  detail::SyncLock list_lock_;
  detail::WaitList waiters_;
};

inline Notified::~Notified() {
  if (notify_ != nullptr) notify_->cancel_notified(node_);
}
inline Poll<void> Notified::poll(Context& cx) {
  if (notify_ == nullptr || node_.state.load(std::memory_order_relaxed) == State::done)
    throw std::logic_error(
        "karx::Notify::notified(): the future already completed (or was moved from) and was polled again");
  return notify_->poll_notified(node_, generation_, cx);
}

}  // namespace karx
