// The waiters of a karx.sync primitive: an intrusive FIFO list of nodes that live inside the
// waiting futures (no allocation per wait; a future that has been polled is never moved, so a
// node's address is stable). The list and every node's links and waker are guarded by the
// primitive's SyncLock; WakeBatch carries wakers out of the lock, so that no wake (which may
// run a schedule function, or even poll inline) ever happens under it.
module;
#include <cstddef>
#include <exception>
#include <utility>
export module karx.sync:wait_list;
import karx.waker;

export namespace karx::detail {

struct WaitNode {
  WaitNode* prev = nullptr;
  WaitNode* next = nullptr;
  bool queued = false;
  Waker waker{noop_waker()};

  // Keeps the waker of the newest poll (a task may be polled with another waker than before).
  // For a node not queued yet, whose waker is the no-op one.
  inline void set_waker(const Waker& w) {
    if (!waker.will_wake(w)) waker = w;
  }
  // The same for a queued node, under the lock: returns the waker it replaces, for the caller
  // to drop after unlocking (a waker's drop may run a schedule function, or any user code).
  [[nodiscard]] inline Waker exchange_waker(const Waker& w) {
    if (waker.will_wake(w)) return noop_waker();
    return std::exchange(waker, w);
  }
};

class WaitList {
 public:
  WaitList() noexcept = default;
  WaitList(const WaitList&) = delete;
  WaitList& operator=(const WaitList&) = delete;

  inline bool empty() const noexcept { return head_ == nullptr; }
  inline WaitNode* front() const noexcept { return head_; }

  inline void push_back(WaitNode* n) noexcept {
    n->prev = tail_;
    n->next = nullptr;
    if (tail_ != nullptr)
      tail_->next = n;
    else
      head_ = n;
    tail_ = n;
    n->queued = true;
  }
  inline WaitNode* pop_front() noexcept {
    WaitNode* n = head_;
    if (n != nullptr) remove(n);
    return n;
  }
  inline void remove(WaitNode* n) noexcept {
    (n->prev != nullptr ? n->prev->next : head_) = n->next;
    (n->next != nullptr ? n->next->prev : tail_) = n->prev;
    n->prev = n->next = nullptr;
    n->queued = false;
  }
  // Moves every node of `other` to the back of this list.
  inline void splice_back(WaitList& other) noexcept {
    if (other.head_ == nullptr) return;
    if (tail_ != nullptr) {
      tail_->next = other.head_;
      other.head_->prev = tail_;
    } else {
      head_ = other.head_;
    }
    tail_ = other.tail_;
    other.head_ = other.tail_ = nullptr;
  }

 private:
  WaitNode* head_ = nullptr;
  WaitNode* tail_ = nullptr;
};

// Wakers taken out under a lock, woken after it is released. Holds up to kCapacity; a caller
// with more to wake releases the lock, wakes this batch, and takes the lock again.
class WakeBatch {
 public:
  static constexpr std::size_t kCapacity = 32;
  WakeBatch() noexcept = default;
  WakeBatch(const WakeBatch&) = delete;
  WakeBatch& operator=(const WakeBatch&) = delete;
  // The empty check keeps the common no-waiter path free of wake_all's exception bookkeeping.
  inline ~WakeBatch() {
    if (!empty()) wake_all();
  }

  inline bool full() const noexcept { return size_ == kCapacity; }
  inline bool empty() const noexcept { return next_ == size_; }
  inline void take_from(WaitNode& n) noexcept { add(std::exchange(n.waker, noop_waker())); }
  inline void add(Waker&& w) noexcept { slots_[size_++] = std::move(w).into_raw(); }
  // Wakes (consuming) every waker held so far, in the order taken (FIFO waiters wake in
  // order). A wake that throws (only a user's waker_fn can) does not stop the others; the first
  // exception then propagates, which ends the process where the caller is noexcept (most are).
  inline void wake_all() {
    std::exception_ptr first;
    while (next_ < size_) {
      const RawWaker raw = slots_[next_++];
      try {
        Waker::from_raw(raw).wake_and_release();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    size_ = next_ = 0;
    if (first) std::rethrow_exception(first);
  }

 private:
  RawWaker slots_[kCapacity];
  std::size_t size_ = 0;
  std::size_t next_ = 0;
};

}  // namespace karx::detail
