// Semaphore: counted permits, acquired FIFO: a later small request never overtakes an earlier
// large one (so a big request cannot starve).
//
// Protocol. `word_` holds the free permits shifted left by one and a WAITERS bit. WAITERS is
// set and cleared only under `list_lock_` and means "the queue is not empty"; while it is set
// the fast paths (try_acquire, release without waiters) stand aside and all permits pass
// through the list lock, where release grants them to the queue's head in order. A grant
// stores the waiter's state (release) as its last touch of the node; the waiter sees it with
// acquire and owns its permits.
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
export module karx.sync:semaphore;
import karx.waker;
import :lock;
import :wait_list;
import :fatal;

export namespace karx {

class Semaphore;

// Permits held: returned to their Semaphore on destruction (or release()). Movable.
class SemaphorePermit {
 public:
  SemaphorePermit(SemaphorePermit&& other) noexcept
      : sem_(std::exchange(other.sem_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  SemaphorePermit& operator=(SemaphorePermit&& other) noexcept {
    if (this != &other) {
      release();
      sem_ = std::exchange(other.sem_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  ~SemaphorePermit() { release(); }

  std::size_t count() const noexcept { return count_; }
  // Returns the permits now (nothing if already returned or moved from).
  inline void release() noexcept;

 private:
  friend class Semaphore;
  SemaphorePermit(Semaphore* s, std::size_t n) noexcept : sem_(s), count_(n) {}

  Semaphore* sem_;
  std::size_t count_;
};

// The future of Semaphore::acquire: a Future<SemaphorePermit>. Destroying it while it waits
// leaves the queue (which may let the waiters behind it go); permits already granted to it are
// returned. It borrows the Semaphore, which must outlive it.
class SemaphoreAcquireFuture {
 public:
  SemaphoreAcquireFuture(SemaphoreAcquireFuture&& other) noexcept
      : sem_(std::exchange(other.sem_, nullptr)), need_(other.need_) {
    if (other.node_.state.load(std::memory_order_relaxed) == State::waiting)
      detail::sync_fatal("a karx.sync future was moved while it waited (a polled future must stay where it is)");
  }
  SemaphoreAcquireFuture& operator=(SemaphoreAcquireFuture&&) = delete;
  inline ~SemaphoreAcquireFuture();

  inline Poll<SemaphorePermit> poll(Context& cx);

 private:
  friend class Semaphore;
  enum class State : std::uint8_t { idle, waiting, granted, done };
  struct Node : detail::WaitNode {
    std::atomic<State> state{State::idle};
    std::size_t need = 0;
  };
  SemaphoreAcquireFuture(Semaphore* s, std::size_t n) noexcept : sem_(s), need_(n) {}

  Semaphore* sem_;
  std::size_t need_;
  Node node_;
};

class Semaphore {
 public:
  // The most permits a Semaphore can hold.
  static constexpr std::size_t max_permits = SIZE_MAX >> 1;

  explicit Semaphore(std::size_t permits) : word_(checked(permits, "Semaphore(permits)") << 1) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  // Destroying a Semaphore that is awaited would leave waiters dangling: a karx diagnostic,
  // then the process ends. (Outstanding permits are the owner's business, as with a mutex.)
  ~Semaphore() {
    if ((word_.load(std::memory_order_acquire) & kWaiters) != 0)
      detail::sync_fatal("karx::Semaphore destroyed while tasks wait on it");
  }

  // Waits for `n` permits, FIFO. n = 0 is ready at once. n > max_permits throws
  // std::invalid_argument.
  SemaphoreAcquireFuture acquire(std::size_t n = 1) {
    return SemaphoreAcquireFuture(this, checked(n, "Semaphore::acquire(n)"));
  }

  // `n` permits if they are free and nobody waits, else nullopt.
  std::optional<SemaphorePermit> try_acquire(std::size_t n = 1) {
    checked(n, "Semaphore::try_acquire(n)");
    if (!try_take(n)) return std::nullopt;
    return SemaphorePermit(this, n);
  }

  // Adds `n` permits (waiters first, in order). Throws std::overflow_error if the count would
  // pass max_permits.
  void release(std::size_t n = 1) {
    if (n == 0) return;
    // A count this big cannot be right; and permits handed back by a SemaphorePermit never
    // pass the maximum, since they were taken from it.
    std::size_t w = word_.load(std::memory_order_relaxed);
    if ((w >> 1) > max_permits - checked(n, "Semaphore::release(n)"))
      throw std::overflow_error("karx::Semaphore::release(n): the count would pass Semaphore::max_permits");
    add(n);
  }

  std::size_t available() const noexcept { return word_.load(std::memory_order_acquire) >> 1; }

 private:
  friend class SemaphorePermit;
  friend class SemaphoreAcquireFuture;
  static constexpr std::size_t kWaiters = 1;
  using Node = SemaphoreAcquireFuture::Node;
  using State = SemaphoreAcquireFuture::State;

  static std::size_t checked(std::size_t n, const char* what) {
    if (n > max_permits)
      throw std::invalid_argument(std::string("karx::") + what + ": more than Semaphore::max_permits");
    return n;
  }

  bool try_take(std::size_t n) noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    // acquire: pairs with release's release, so what the returner did is visible.
    while ((w & kWaiters) == 0 && (w >> 1) >= n)
      if (word_.compare_exchange_weak(w, w - (n << 1), std::memory_order_acquire, std::memory_order_relaxed))
        return true;
    return false;
  }

  void add(std::size_t n) noexcept {
    std::size_t w = word_.load(std::memory_order_relaxed);
    // release: what the returner did happens before the next taker's acquire.
    while ((w & kWaiters) == 0)
      if (word_.compare_exchange_weak(w, w + (n << 1), std::memory_order_release, std::memory_order_relaxed)) return;
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    // WAITERS may have been cleared since; the add is atomic with the fast paths either way.
    word_.fetch_add(n << 1, std::memory_order_release);
    grant(guard, wake);
  }

  // Under the list lock: gives free permits to the queue's head while it fits, in order.
  void grant(detail::SyncLockGuard& guard, detail::WakeBatch& wake) noexcept {
    for (;;) {
      // While WAITERS is set and we hold the list lock, nobody else changes the word.
      const std::size_t w = word_.load(std::memory_order_relaxed);
      if ((w & kWaiters) == 0) return;
      std::size_t free = w >> 1;
      while (!wake.full() && !waiters_.empty() && static_cast<Node*>(waiters_.front())->need <= free) {
        auto& n = static_cast<Node&>(*waiters_.pop_front());
        free -= n.need;
        wake.take_from(n);
        n.state.store(State::granted, std::memory_order_release);  // last touch of the node
      }
      word_.store((free << 1) | (waiters_.empty() ? 0 : kWaiters), std::memory_order_release);
      if (!wake.full()) return;
      guard.unlock();
      wake.wake_all();
      guard.relock(list_lock_);
    }
  }

  Poll<SemaphorePermit> poll_acquire(Node& node, std::size_t need, Context& cx) {
    const State seen = node.state.load(std::memory_order_acquire);
    if (seen == State::granted) return done(node, need);
    if (seen == State::idle && (need == 0 || try_take(need))) return done(node, need);
    detail::WakeBatch wake;
    detail::SyncLockGuard guard(list_lock_);
    const State s = node.state.load(std::memory_order_relaxed);
    if (s == State::granted) return done(node, need);
    if (s == State::waiting) {
      Waker replaced = node.exchange_waker(cx.waker());
      guard.unlock();  // the replaced waker is dropped outside the lock
      return pending;
    }
    std::size_t w = word_.load(std::memory_order_relaxed);
    for (;;) {
      if ((w & kWaiters) == 0 && (w >> 1) >= need) {
        if (word_.compare_exchange_weak(w, w - (need << 1), std::memory_order_acquire, std::memory_order_relaxed))
          return done(node, need);
        continue;
      }
      if ((w & kWaiters) != 0 ||
          word_.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed, std::memory_order_relaxed))
        break;
    }
    node.need = need;
    node.set_waker(cx.waker());
    waiters_.push_back(&node);
    node.state.store(State::waiting, std::memory_order_relaxed);
    return pending;
  }

  Poll<SemaphorePermit> done(Node& node, std::size_t need) noexcept {
    node.state.store(State::done, std::memory_order_relaxed);
    return Poll<SemaphorePermit>::ready(SemaphorePermit(this, need));
  }

  void cancel_acquire(Node& node, std::size_t need) noexcept {
    const State s = node.state.load(std::memory_order_acquire);
    if (s == State::idle || s == State::done) return;
    {
      detail::WakeBatch wake;
      detail::SyncLockGuard guard(list_lock_);
      if (node.queued) {
        const bool was_head = waiters_.front() == &node;
        waiters_.remove(&node);
        if (waiters_.empty())
          word_.fetch_and(~kWaiters, std::memory_order_relaxed);
        else if (was_head)
          grant(guard, wake);  // the waiters behind a big request may fit now
        return;
      }
    }
    add(need);  // granted but never seen: give the permits back
  }

  std::atomic<std::size_t> word_;
  detail::SyncLock list_lock_;
  detail::WaitList waiters_;
};

inline void SemaphorePermit::release() noexcept {
  if (sem_ != nullptr && count_ != 0) std::exchange(sem_, nullptr)->add(std::exchange(count_, 0));
  sem_ = nullptr;
}

inline SemaphoreAcquireFuture::~SemaphoreAcquireFuture() {
  if (sem_ != nullptr) sem_->cancel_acquire(node_, need_);
}
inline Poll<SemaphorePermit> SemaphoreAcquireFuture::poll(Context& cx) {
  if (sem_ == nullptr || node_.state.load(std::memory_order_relaxed) == State::done)
    throw std::logic_error(
        "karx::Semaphore::acquire(): the future already completed (or was moved from) and was polled again");
  return sem_->poll_acquire(node_, need_, cx);
}

}  // namespace karx
