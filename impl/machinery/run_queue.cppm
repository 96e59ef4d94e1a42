// RunQueue: a processor's bounded local run queue. The owner pushes, and pops at either end:
// the oldest item (FIFO) or the newest (LIFO, depth-first for fork-join); any thread may steal
// the older half.
//
// The algorithm is Go's runq (runtime/proc.go: runqput, runqget, runqgrab) on a ring of
// `Capacity` slots: the owner alone writes `tail`; the owner's pops and the thieves' steals
// all advance `head` by CAS, so each position is taken by exactly one of them. Slots are
// atomics read with relaxed loads: a consumer may read a slot that the owner is rewriting
// (its `head` was stale), but then its CAS on `head` fails and it discards what it read.
//
// Orderings:
//  - push: the slot store (relaxed) is published by the release store of `tail`; consumers
//    load `tail` with acquire before reading slots.
//  - slot reuse: the owner rewrites a slot only past a `head` it loaded with acquire; the
//    consumer that moved `head` past that slot read it before its (release) CAS, so the read
//    happens-before the rewrite.
//  - steal: the thief copies into its own queue's unpublished slots (its queue must have room:
//    a thief steals only when its own queue is empty or nearly so), CASes the victim's
//    `head`, and only then publishes its own `tail` (release); the newest item taken is
//    returned to it, never published.
//  - pop_newest (the owner at the tail, as in Chase and Lev's deque): the owner lowers `tail`
//    first, then reads `head`; a thief reads `head`, then `tail`. Both pairs are separated by
//    seq_cst (the owner's store, the thief's fence), so either the thief sees the lowered
//    tail and leaves that slot alone, or the owner sees the thief's head. A thief that read
//    the old tail takes at most half of what it saw, rounded up, from `head`: that reaches
//    the slot the owner takes only when one item was left, and then both CAS `head` for it.
module;
#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <type_traits>
export module karx.machinery:run_queue;

export namespace karx::detail {

template <class T, std::uint32_t Capacity = 256>
  requires std::is_pointer_v<T>
class RunQueue {
  static_assert(Capacity >= 2 && (Capacity & (Capacity - 1)) == 0, "the capacity is a power of two");

 public:
  static constexpr std::uint32_t capacity = Capacity;

  RunQueue() {
    for (auto& s : slots_) s.store(nullptr, std::memory_order_relaxed);
  }
  RunQueue(const RunQueue&) = delete;
  RunQueue& operator=(const RunQueue&) = delete;

  // Owner only. False when the queue is full (the caller spills, see take_half_for_spill).
  bool push(T item) noexcept {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_relaxed);  // only the owner writes it
    if (t - h >= Capacity) return false;
    slots_[t & kMask].store(item, std::memory_order_relaxed);
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }

  // Owner only: the oldest item (FIFO, as Go's runq), or nothing.
  std::optional<T> pop() noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = tail_.load(std::memory_order_relaxed);
      if (h == t) return std::nullopt;
      T item = slots_[h & kMask].load(std::memory_order_relaxed);
      // acq_rel: release orders our slot read before a reuse of the slot (see above).
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return item;
    }
  }

  // Owner only: the newest item (LIFO), or nothing.
  std::optional<T> pop_newest() noexcept {
    const std::uint32_t t = tail_.load(std::memory_order_relaxed);  // only the owner writes it
    std::uint32_t h = head_.load(std::memory_order_acquire);
    if (h == t) return std::nullopt;
    const std::uint32_t last = t - 1;
    // seq_cst: a thief's later read of `tail` sees `last`, or our read of `head` below sees
    // the thief's CAS (the header's pop_newest paragraph).
    tail_.store(last, std::memory_order_seq_cst);
    h = head_.load(std::memory_order_seq_cst);
    if (last - h < Capacity && last != h) {
      // Two or more were left: no thief can reach `last` (see above). The slot is ours; a
      // thief that read it raced on an older head and fails its CAS.
      return slots_[last & kMask].load(std::memory_order_relaxed);
    }
    if (last == h) {
      // One left: thieves may want it too; whoever moves `head` past it has it.
      T item = slots_[last & kMask].load(std::memory_order_relaxed);
      const bool won = head_.compare_exchange_strong(h, h + 1, std::memory_order_seq_cst, std::memory_order_relaxed);
      tail_.store(t, std::memory_order_relaxed);  // head == tail == t: empty, either way
      if (won) return item;
      return std::nullopt;
    }
    // Thieves emptied it meanwhile (head passed last): restore an empty queue at head.
    tail_.store(t, std::memory_order_relaxed);
    return std::nullopt;
  }

  // Owner only, when push failed: takes the older half of the queue out (into `out`, which
  // holds at least Capacity / 2) so the caller can move it to the global queue. Returns the
  // count, 0 if thieves emptied enough of the queue meanwhile (then push again).
  std::uint32_t take_half_for_spill(T* out) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = tail_.load(std::memory_order_relaxed);
      if (t - h < Capacity) return 0;  // no longer full
      const std::uint32_t n = (t - h) / 2;
      for (std::uint32_t i = 0; i < n; ++i) out[i] = slots_[(h + i) & kMask].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel, std::memory_order_acquire)) return n;
    }
  }

  // Any thread but the owner: takes half of this queue (rounded up), the older items. Returns
  // the newest of them, for the caller to run now, and moves the others to the tail of
  // `dst`, which the calling thread owns and which must have room for Capacity / 2 more
  // items. nullptr if there was nothing to take. (Returning one item rather than publishing
  // all of them in `dst` and popping one back, as Go's runqsteal does: once published, the
  // items can be stolen from `dst` by another thief before our pop, which then finds nothing.)
  T steal_into(RunQueue& dst) noexcept {
    const std::uint32_t dst_tail = dst.tail_.load(std::memory_order_relaxed);  // the caller owns dst
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      // Between our read of head and of tail: the partner of pop_newest's seq_cst store.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      const std::uint32_t t = tail_.load(std::memory_order_acquire);
      std::uint32_t n = t - h;
      n -= n / 2;
      if (n == 0) return nullptr;
      if (n > Capacity / 2) {  // h and t read at different moments: inconsistent, reread
        h = head_.load(std::memory_order_acquire);
        continue;
      }
      for (std::uint32_t i = 0; i + 1 < n; ++i)
        dst.slots_[(dst_tail + i) & kMask].store(slots_[(h + i) & kMask].load(std::memory_order_relaxed),
                                                 std::memory_order_relaxed);
      const T newest = slots_[(h + n - 1) & kMask].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (n > 1) dst.tail_.store(dst_tail + n - 1, std::memory_order_release);
        return newest;
      }
    }
  }

  // Any thread; a snapshot that may be stale by the time it returns.
  std::uint32_t size() const noexcept {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_acquire);
    const std::uint32_t n = t - h;  // h is read first, so h <= t, but the owner may have pushed since
    return n > Capacity ? Capacity : n;
  }
  bool empty() const noexcept { return size() == 0; }

 private:
  static constexpr std::uint32_t kMask = Capacity - 1;

  alignas(64) std::atomic<std::uint32_t> head_{0};  // consumers CAS it
  alignas(64) std::atomic<std::uint32_t> tail_{0};  // the owner stores it
  alignas(64) std::array<std::atomic<T>, Capacity> slots_;
};

}  // namespace karx::detail
