// Injector: the global run queue. Tasks spawned from outside the workers, a processor's
// overflow, and tasks that yielded go here; every processor takes from it now and then.
//
// A bounded lock-free ring (Dmitry Vyukov's MPMC queue: a sequence number per cell says whose
// turn the cell is), and behind it an unbounded overflow under a mutex for the rare burst that
// fills the ring. A push or a pop on the ring is one CAS and no lock, so a thread spawning
// from outside and the workers taking its tasks never wait for one another (the injector was
// a ring under a spin lock, which fell back to sched_yield when its holder was preempted).
// In steady state nothing allocates: the ring is allocated once, and the overflow keeps its
// buffer.
//
// Order. Items leave in the order they came, for one pusher and one popper: while the overflow
// holds anything, pushes go behind it, and pops take from the ring first (its items are
// older), then from the overflow. Between concurrent pushers the order is whatever their
// CASes make it.
//
// Closing (shutdown): a closed bit in the ring's tail makes every later ring push fail, the
// overflow's flag (under its mutex) every later overflow push; close() then takes what was
// accepted before, waiting for a pusher that has claimed a cell and not yet filled it (a few
// instructions). Each item pushed is either refused to its pusher, popped once, or handed
// back by close().
//
// oneTBB's concurrent_queue was a candidate; ThreadSanitizer reports races inside its page
// recycling, whose allocator lives in the uninstrumented libtbb, so the sanitizer gate could
// not vouch for it (docs/design.md).
module;
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
export module karx.machinery:injector;

namespace karx::detail {

// The overflow's storage: a FIFO ring that doubles when full and never shrinks. Not
// thread-safe; the Injector holds its mutex around every call.
template <class T>
class GrowableRing {
 public:
  std::size_t size() const noexcept { return count_; }
  void push(T item) {
    if (count_ == capacity_) grow(count_ + 1);
    ring_[(head_ + count_) & (capacity_ - 1)] = item;
    ++count_;
  }
  template <class It>
  void push_batch(It first, It last) {
    const auto n = static_cast<std::size_t>(std::distance(first, last));
    if (count_ + n > capacity_) grow(count_ + n);
    for (; first != last; ++first) ring_[(head_ + count_++) & (capacity_ - 1)] = *first;
  }
  // Puts back `n` items just taken (the room they left is there: no allocation).
  void push_front(const T* items, std::size_t n) noexcept {
    head_ = (head_ - n) & (capacity_ - 1);
    count_ += n;
    for (std::size_t i = 0; i < n; ++i) ring_[(head_ + i) & (capacity_ - 1)] = items[i];
  }
  // The `n` oldest items (n <= size()) into `out`.
  void take(T* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = ring_[(head_ + i) & (capacity_ - 1)];
    head_ = (head_ + n) & (capacity_ == 0 ? 0 : capacity_ - 1);
    count_ -= n;
  }

 private:
  // Room for `need` items (a power of two, at least 64), oldest first.
  void grow(std::size_t need) {
    std::size_t capacity = std::max<std::size_t>(capacity_ * 2, 64);
    while (capacity < need) capacity *= 2;
    auto ring = std::make_unique<T[]>(capacity);
    const std::size_t n = count_;
    take(ring.get(), n);
    ring_ = std::move(ring);
    capacity_ = capacity;
    head_ = 0;
    count_ = n;
  }

  std::unique_ptr<T[]> ring_;
  std::size_t capacity_ = 0;  // a power of two (or 0)
  std::size_t head_ = 0;      // the oldest item's slot
  std::size_t count_ = 0;
};

}  // namespace karx::detail

export namespace karx::detail {

template <class T>
requires std::is_trivially_copyable_v<T>
class Injector {
 public:
  static constexpr std::size_t ring_capacity = 4096;

  Injector() : cells_(std::make_unique<Cell[]>(ring_capacity)) {
    // Cell i is free for the push at position i (Vyukov: seq == position means "push here").
    for (std::size_t i = 0; i < ring_capacity; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  Injector(const Injector&) = delete;
  Injector& operator=(const Injector&) = delete;

  // False (the item not taken) once the injector is closed.
  bool push(T item) { return push_batch(&item, &item + 1); }
  // All or nothing: false (nothing taken) once the injector is closed. A contiguous range,
  // claimed on the ring with one CAS when it fits.
  template <std::contiguous_iterator It>
  bool push_batch(It first, It last) {
    const T* items = std::to_address(first);
    const auto n = static_cast<std::size_t>(last - first);
    if (n == 0) return !closed();
    if (overflow_size_.load(std::memory_order_relaxed) == 0 && n <= ring_capacity) {
      const Push r = ring_push(items, n);
      if (r == Push::done) return true;
      if (r == Push::closed) return false;
    }
    return overflow_push(items, items + n);
  }

  std::optional<T> pop() {
    T item;
    if (pop_batch(&item, 1) == 0) return std::nullopt;
    return item;
  }
  // Up to `max` items (oldest first) into `out`; how many were taken. The ring's items are
  // taken with one CAS; the overflow is looked at only when the ring has none.
  std::size_t pop_batch(T* out, std::size_t max) {
    if (max == 0) return 0;
    if (const std::size_t n = ring_pop(out, max); n > 0) return n;
    if (overflow_size_.load(std::memory_order_relaxed) == 0) return 0;
    std::lock_guard guard(overflow_mutex_);
    const std::size_t n = std::min(max, overflow_.size());
    overflow_.take(out, n);
    refill_ring();
    overflow_size_.store(overflow_.size(), std::memory_order_relaxed);
    return n;
  }

  // Refuses every later push and hands back what is queued, oldest first: a shutdown that
  // must account for every item sees each one either here or refused to its pusher (or
  // popped by a consumer racing with the close).
  std::vector<T> close() {
    std::vector<T> left;
    // The ring first: no push lands on it after the bit, and its items are the older.
    const std::uint64_t end = tail_.fetch_or(kClosed, std::memory_order_acq_rel) & ~kClosed;
    for (int idle_rounds = 0;;) {
      const std::uint64_t pos = head_.load(std::memory_order_acquire);
      if (pos >= end) break;
      T item;
      if (ring_pop(&item, 1) == 1) {
        left.push_back(item);
        idle_rounds = 0;
      } else if (++idle_rounds > 64) {
        // A pusher claimed the cell and has not filled it yet: it is preempted between two
        // instructions, so let it run.
        std::this_thread::yield();
      }
    }
    std::lock_guard guard(overflow_mutex_);
    overflow_closed_ = true;
    const std::size_t n = overflow_.size();
    left.resize(left.size() + n);
    overflow_.take(left.data() + left.size() - n, n);
    overflow_size_.store(0, std::memory_order_relaxed);
    return left;
  }

  // A snapshot without synchronization: exact when nothing is pushing or popping. Whoever
  // needs a pushed item to be seen must synchronize with the pusher by other means (the
  // runtime's wake-up protocol does).
  std::size_t size() const noexcept {
    const std::uint64_t head = head_.load(std::memory_order_relaxed);
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) & ~kClosed;
    const std::size_t ring = tail > head ? static_cast<std::size_t>(tail - head) : 0;
    return std::min(ring, ring_capacity) + overflow_size_.load(std::memory_order_relaxed);
  }
  bool empty() const noexcept { return size() == 0; }

 private:
  enum class Push { done, full, closed };
  static constexpr std::uint64_t kClosed = std::uint64_t{1} << 63;
  static constexpr std::uint64_t kMask = ring_capacity - 1;
  static constexpr std::size_t kRefill = 256;  // items moved from the overflow to the ring at once
  static_assert((ring_capacity & kMask) == 0, "the ring's capacity is a power of two");

  struct Cell {
    // Position p's cell holds seq == p while it is free for the push at p, p + 1 once that
    // push filled it, and p + ring_capacity once the pop at p emptied it (free for the push
    // a lap later). The value is written and read only by the one thread whose turn the
    // sequence number says it is; the seq store (release) and load (acquire) order it.
    std::atomic<std::uint64_t> seq{0};
    std::atomic<T> value{};
  };

  bool closed() const noexcept { return (tail_.load(std::memory_order_relaxed) & kClosed) != 0; }

  // Claims `n` consecutive positions at the tail with one CAS, if their cells are all free.
  Push ring_push(const T* items, std::size_t n) noexcept {
    std::uint64_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      if ((pos & kClosed) != 0) return Push::closed;
      // acquire: the pop that freed each cell read its value first (see Cell).
      bool free = true, lapped = false;
      for (std::size_t i = 0; i < n; ++i) {
        const auto diff =
            static_cast<std::int64_t>(cells_[(pos + i) & kMask].seq.load(std::memory_order_acquire) - (pos + i));
        if (diff < 0) {
          free = false;  // still holds the item of a lap ago: full
          break;
        }
        if (diff > 0) {
          lapped = true;  // our `pos` is stale: another pusher got there first
          break;
        }
      }
      if (lapped) {
        pos = tail_.load(std::memory_order_relaxed);
        continue;
      }
      if (!free) return Push::full;
      // relaxed: the cells' seq stores below publish the values; the CAS only decides who
      // owns the positions (and fails once the closed bit is set, the word having changed).
      if (tail_.compare_exchange_weak(pos, pos + n, std::memory_order_relaxed, std::memory_order_relaxed)) {
        for (std::size_t i = 0; i < n; ++i) {
          Cell& cell = cells_[(pos + i) & kMask];
          cell.value.store(items[i], std::memory_order_relaxed);
          cell.seq.store(pos + i + 1, std::memory_order_release);
        }
        return Push::done;
      }
    }
  }

  // Takes up to `max` filled cells at the head with one CAS; 0 if the head's cell is empty
  // (or claimed by a pusher that has not filled it yet).
  std::size_t ring_pop(T* out, std::size_t max) noexcept {
    std::uint64_t pos = head_.load(std::memory_order_relaxed);
    for (;;) {
      std::size_t n = 0;
      bool stale = false;
      while (n < max) {
        // acquire: the pusher's value store happens before its seq store (release).
        const auto diff =
            static_cast<std::int64_t>(cells_[(pos + n) & kMask].seq.load(std::memory_order_acquire) - (pos + n + 1));
        if (diff != 0) {
          stale = diff > 0 && n == 0;  // the head's cell was popped already: `pos` is stale
          break;
        }
        ++n;
      }
      if (stale) {
        pos = head_.load(std::memory_order_relaxed);
        continue;
      }
      if (n == 0) return 0;
      if (head_.compare_exchange_weak(pos, pos + n, std::memory_order_relaxed, std::memory_order_relaxed)) {
        for (std::size_t i = 0; i < n; ++i) {
          Cell& cell = cells_[(pos + i) & kMask];
          out[i] = cell.value.load(std::memory_order_relaxed);
          // release: our read of the value happens before the next lap's push rewrites it.
          cell.seq.store(pos + i + ring_capacity, std::memory_order_release);
        }
        return n;
      }
    }
  }

  // Under the overflow's mutex, the ring found empty: moves the overflow's oldest items back to
  // the ring, so that the pops after this one take no lock. They are older than anything pushed
  // later (pushes queue behind a non-empty overflow). Refused once closed: close() takes them.
  void refill_ring() noexcept {
    T moved[kRefill];
    const std::size_t n = std::min(kRefill, overflow_.size());
    if (n == 0) return;
    overflow_.take(moved, n);
    if (ring_push(moved, n) != Push::done) overflow_.push_front(moved, n);
  }

  bool overflow_push(const T* first, const T* last) {
    std::lock_guard guard(overflow_mutex_);
    if (overflow_closed_) return false;
    overflow_.push_batch(first, last);
    overflow_size_.store(overflow_.size(), std::memory_order_relaxed);
    return true;
  }

  alignas(64) std::atomic<std::uint64_t> head_{0};
  alignas(64) std::atomic<std::uint64_t> tail_{0};  // the next push position, and kClosed
  alignas(64) std::unique_ptr<Cell[]> cells_;
  alignas(64) std::atomic<std::size_t> overflow_size_{0};  // a hint for pushers and poppers; the mutex decides
  std::mutex overflow_mutex_;
  GrowableRing<T> overflow_;
  bool overflow_closed_ = false;
};

}  // namespace karx::detail
