// Injector: the global run queue. Tasks spawned from outside the workers, a processor's
// overflow, and tasks that yielded go here; every processor takes from it now and then.
//
// A ring buffer under a lock (as Go's global runq is a list under sched.lock), plus a size
// kept in an atomic so that processors can see an empty injector without taking the lock.
// The ring doubles when full and never shrinks, so in steady state a push allocates nothing:
// a std::deque allocated a 512-byte node every 64 pushes on the pushing thread (a thread that
// spawns from outside) and freed it on the popping one (a worker), which is the traffic the
// task slab removes for task blocks (impl/task/slab.cppm).
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
#include <iterator>
#include <memory>
#include <mutex>  // std::lock_guard
#include <optional>
#include <utility>
#include <vector>
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
    if (count_ == capacity_) grow(count_ + 1);
    ring_[(head_ + count_) & (capacity_ - 1)] = item;
    ++count_;
    size_.store(count_, std::memory_order_relaxed);
    return true;
  }
  // False (nothing taken) once the injector is closed.
  template <class It>
  bool push_batch(It first, It last) {
    std::lock_guard guard(lock_);
    if (closed_) return false;
    const auto n = static_cast<std::size_t>(std::distance(first, last));
    if (count_ + n > capacity_) grow(count_ + n);
    for (; first != last; ++first) ring_[(head_ + count_++) & (capacity_ - 1)] = *first;
    size_.store(count_, std::memory_order_relaxed);
    return true;
  }

  // Refuses every later push and hands back what is queued, oldest first: a shutdown that
  // must account for every item sees each one either here or refused to its pusher.
  std::vector<T> close() {
    std::lock_guard guard(lock_);
    closed_ = true;
    std::vector<T> left(count_);
    take(left.data(), count_);
    size_.store(0, std::memory_order_relaxed);
    return left;
  }
  std::optional<T> pop() {
    if (size_.load(std::memory_order_relaxed) == 0) return std::nullopt;  // a hint; the lock decides
    std::lock_guard guard(lock_);
    if (count_ == 0) return std::nullopt;
    T item;
    take(&item, 1);
    size_.store(count_, std::memory_order_relaxed);
    return item;
  }
  // Up to `max` items (oldest first) into `out` under one lock; how many were taken.
  std::size_t pop_batch(T* out, std::size_t max) {
    if (size_.load(std::memory_order_relaxed) == 0) return 0;  // a hint; the lock decides
    std::lock_guard guard(lock_);
    const std::size_t n = std::min(max, count_);
    take(out, n);
    size_.store(count_, std::memory_order_relaxed);
    return n;
  }
  // A snapshot without the lock: exact when nothing is pushing or popping. Whoever needs a
  // pushed item to be seen must synchronize with the pusher by other means (the runtime's
  // wake-up protocol does); the item itself is always handed over under the lock.
  std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
  bool empty() const noexcept { return size() == 0; }

 private:
  // Under the lock: the `n` oldest items into `out`.
  void take(T* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = ring_[(head_ + i) & (capacity_ - 1)];
    head_ = (head_ + n) & (capacity_ == 0 ? 0 : capacity_ - 1);
    count_ -= n;
  }
  // Under the lock: room for `need` items (a power of two, at least 64), oldest first.
  void grow(std::size_t need) {
    std::size_t capacity = std::max<std::size_t>(capacity_ * 2, 64);
    while (capacity < need) capacity *= 2;
    auto ring = std::make_unique<T[]>(capacity);
    const std::size_t n = count_;
    take(ring.get(), n);  // the items, oldest first, to the start of the new ring
    ring_ = std::move(ring);
    capacity_ = capacity;
    head_ = 0;
    count_ = n;
  }

  SpinLock lock_;
  std::unique_ptr<T[]> ring_;
  std::size_t capacity_ = 0;  // a power of two (or 0)
  std::size_t head_ = 0;      // the oldest item's slot
  std::size_t count_ = 0;
  bool closed_ = false;
  std::atomic<std::size_t> size_{0};
};

}  // namespace karx::detail
