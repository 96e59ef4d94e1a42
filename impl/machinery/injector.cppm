// Injector: the global run queue. Tasks spawned from outside the workers, a processor's
// overflow, and tasks that yielded go here; every processor takes from it now and then.
//
// A std::deque under a lock (as Go's global runq is a list under sched.lock), plus a size
// kept in an atomic so that processors can see an empty injector without taking the lock.
// The lock is a SpinLock: with a std::mutex, a worker draining tasks that a thread outside
// the pool spawns one by one made both sleep in the kernel on every collision.
// oneTBB's concurrent_queue was the first candidate; ThreadSanitizer reports races inside its
// page recycling, whose allocator lives in the uninstrumented libtbb, so the sanitizer gate
// could not vouch for it (docs/design.md). The lock is held for a push or pop of one pointer
// (or one batch), and processors reach the injector only on every 61st tick or when their
// own queue is empty.
module;
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <deque>
#include <mutex>  // std::lock_guard
#include <optional>
#include <utility>
export module karx.machinery:injector;
import :spin_lock;

export namespace karx::detail {

template <class T>
class Injector {
 public:
  // False (the item not taken) once the injector is closed.
  bool push(T item) {
    std::lock_guard guard(lock_);
    if (closed_) return false;
    queue_.push_back(item);
    size_.store(queue_.size(), std::memory_order_relaxed);
    return true;
  }
  // False (nothing taken) once the injector is closed.
  template <class It>
  bool push_batch(It first, It last) {
    std::lock_guard guard(lock_);
    if (closed_) return false;
    queue_.insert(queue_.end(), first, last);
    size_.store(queue_.size(), std::memory_order_relaxed);
    return true;
  }

  // Refuses every later push and hands back what is queued: a shutdown that must account
  // for every item sees each one either here or refused to its pusher.
  std::deque<T> close() {
    std::lock_guard guard(lock_);
    closed_ = true;
    size_.store(0, std::memory_order_relaxed);
    return std::exchange(queue_, {});
  }
  std::optional<T> pop() {
    if (size_.load(std::memory_order_relaxed) == 0) return std::nullopt;  // a hint; the lock decides
    std::lock_guard guard(lock_);
    if (queue_.empty()) return std::nullopt;
    T item = queue_.front();
    queue_.pop_front();
    size_.store(queue_.size(), std::memory_order_relaxed);
    return item;
  }
  // Up to `max` items (oldest first) into `out` under one lock; how many were taken.
  std::size_t pop_batch(T* out, std::size_t max) {
    if (size_.load(std::memory_order_relaxed) == 0) return 0;  // a hint; the lock decides
    std::lock_guard guard(lock_);
    const std::size_t n = std::min(max, queue_.size());
    std::copy_n(queue_.begin(), n, out);
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    size_.store(queue_.size(), std::memory_order_relaxed);
    return n;
  }
  // A snapshot without the lock: exact when nothing is pushing or popping. Whoever needs a
  // pushed item to be seen must synchronize with the pusher by other means (the runtime's
  // wake-up protocol does); the item itself is always handed over under the lock.
  std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
  bool empty() const noexcept { return size() == 0; }

 private:
  SpinLock lock_;
  std::deque<T> queue_;
  bool closed_ = false;
  std::atomic<std::size_t> size_{0};
};

}  // namespace karx::detail
