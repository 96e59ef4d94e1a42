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
//  - steal: the thief takes items one at a time from `head` (each a CAS), copying them into
//    its own queue's unpublished slots (its queue must have room: a thief steals only when
//    its own queue is empty or nearly so), and only then publishes its own `tail` (release);
//    the newest item taken is returned to it, never published.
//  - pop_newest (the owner at the tail, Chase and Lev's deque): the owner lowers `tail` with
//    a seq_cst store, then reads `head` (seq_cst); a thief reads `head`, issues a seq_cst
//    fence, then reads `tail`; every CAS of `head` is seq_cst. In the single total order of
//    those, either the thief sees the lowered tail and leaves that slot alone, or the owner
//    sees the thief's head. With two or more items left the owner's slot is beyond any thief's
//    reach; with one, both CAS `head` for it. Why one item per steal, not Go's half in one
//    CAS: a thief that read `tail` before the owner popped twice would claim, with one CAS
//    from an unchanged `head`, a slot the owner had already taken (a task run twice: the
//    first version did that under load).
module;
#include <algorithm>
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
      // seq_cst (pop_newest's argument needs every CAS of head in the total order); its
      // release half orders our slot read before a reuse of the slot (see above).
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_seq_cst, std::memory_order_acquire)) return item;
    }
  }

  // Owner only: the newest item (LIFO), or nothing.
  std::optional<T> pop_newest() noexcept {
    const std::uint32_t t = tail_.load(std::memory_order_relaxed);  // only the owner writes it
    if (t == head_.load(std::memory_order_acquire)) return std::nullopt;
    const std::uint32_t last = t - 1;
    // seq_cst store and load (an xchg and a mov; a relaxed store and an mfence cost a quarter
    // more per task here): with every CAS of `head` seq_cst too, and the thieves' fence, the
    // single total order rules out a thief that read the old tail while we read an old head.
    tail_.store(last, std::memory_order_seq_cst);
    std::uint32_t h = head_.load(std::memory_order_seq_cst);
    if (static_cast<std::int32_t>(last - h) > 0) {
      // Two or more were left: no thief can reach `last` (see above).
      return slots_[last & kMask].load(std::memory_order_relaxed);
    }
    std::optional<T> item;
    if (last == h) {
      // One left: thieves may want it too; whoever moves `head` past it has it.
      const T candidate = slots_[last & kMask].load(std::memory_order_relaxed);
      if (head_.compare_exchange_strong(h, h + 1, std::memory_order_seq_cst, std::memory_order_relaxed))
        item = candidate;
    }
    // Empty now, whoever took the last item: head == tail == t.
    tail_.store(t, std::memory_order_relaxed);
    return item;
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
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_seq_cst, std::memory_order_acquire)) return n;
    }
  }

  // Any thread but the owner: takes half of this queue (rounded up, at most kMaxSteal), the
  // older items, one at a time. Returns the newest of them, for the caller to run now, and
  // moves the others to the tail of `dst`, which the calling thread owns and which must have
  // room for Capacity / 2 more items. nullptr if there was nothing to take. (Returning one
  // item rather than publishing all of them in `dst` and popping one back, as Go's runqsteal
  // does: once published, the items can be stolen from `dst` by another thief before our pop,
  // which then finds nothing.)
  T steal_into(RunQueue& dst) noexcept {
    const std::uint32_t dst_tail = dst.tail_.load(std::memory_order_relaxed);  // the caller owns dst
    std::uint32_t want = 0;
    std::uint32_t taken = 0;
    T newest = nullptr;
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      std::atomic_thread_fence(std::memory_order_seq_cst);  // the partner of pop_newest's fence
      const std::uint32_t t = tail_.load(std::memory_order_acquire);
      const std::uint32_t n = t - h;
      if (n == 0 || n > Capacity) break;  // empty, or the owner is mid-pop (t below h): done
      if (want == 0) want = std::min<std::uint32_t>(n - n / 2, kMaxSteal);
      const T item = slots_[h & kMask].load(std::memory_order_relaxed);
      // seq_cst: the single-item race with pop_newest is decided on `head`. The release half
      // orders our slot read before the owner's reuse of the slot.
      if (!head_.compare_exchange_strong(h, h + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) continue;
      if (newest != nullptr) dst.slots_[(dst_tail + taken - 1) & kMask].store(newest, std::memory_order_relaxed);
      newest = item;
      if (++taken == want) break;
    }
    if (taken > 1) dst.tail_.store(dst_tail + taken - 1, std::memory_order_release);
    return newest;
  }

  // Any thread but the owner: takes the oldest item, as a steal of one (the runtime's shutdown
  // empties the queues of workers that may still be running a poll).
  std::optional<T> steal_one() noexcept {
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      std::atomic_thread_fence(std::memory_order_seq_cst);  // as in steal_into
      const std::uint32_t t = tail_.load(std::memory_order_acquire);
      const std::uint32_t n = t - h;
      if (n == 0 || n > Capacity) return std::nullopt;
      const T item = slots_[h & kMask].load(std::memory_order_relaxed);
      if (head_.compare_exchange_strong(h, h + 1, std::memory_order_seq_cst, std::memory_order_relaxed)) return item;
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
  // Items a thief takes at most in one steal: each is a CAS on the victim's `head`.
  static constexpr std::uint32_t kMaxSteal = Capacity / 2 < 32 ? Capacity / 2 : 32;

  alignas(64) std::atomic<std::uint32_t> head_{0};  // consumers CAS it
  alignas(64) std::atomic<std::uint32_t> tail_{0};  // the owner stores it
  alignas(64) std::array<std::atomic<T>, Capacity> slots_;
};

}  // namespace karx::detail
