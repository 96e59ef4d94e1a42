// Slots: the runtime's processors (Go's Ps) as a count of free slots, and the count of workers
// searching for work, with the transitions that move a worker between holding a slot,
// searching and neither. Every transition is one atomic operation on one of the two counts;
// the protocols that use them (wakep and parking, the monitor's revocation) are in idle.cpp
// and monitor.cpp, which say which load must see which store.
module;
#include <algorithm>
#include <atomic>
module karx.executor:slots;

namespace karx::detail {

class Slots {
 public:
  explicit Slots(unsigned processors) noexcept : processors_(processors), free_(static_cast<int>(processors)) {}
  Slots(const Slots&) = delete;
  Slots& operator=(const Slots&) = delete;

  unsigned processors() const noexcept { return processors_; }

  // --- Holding a slot ---
  // One free slot becomes the caller's; false if none is free. acq_rel: the taker sees what
  // the thread that gave the slot back did before (its queues spilled, say).
  bool take() noexcept {
    int n = free_.load(std::memory_order_relaxed);
    do {
      if (n <= 0) return false;
    } while (!free_.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel, std::memory_order_relaxed));
    return true;
  }
  // The caller's slot (or a revoked poll's) is free again. acq_rel: the partner of take().
  void give_back() noexcept { free_.fetch_add(1, std::memory_order_acq_rel); }
  // A hint (relaxed); the protocols use the seq_cst forms below where they must.
  int free_hint() const noexcept { return free_.load(std::memory_order_relaxed); }
  // seq_cst: one side of a Dekker pattern (wakep against parking, the monitor against a slot
  // taker); the other side's fence or seq_cst operation is named where this is called.
  int free_seq_cst() const noexcept { return free_.load(std::memory_order_seq_cst); }
  bool all_free_seq_cst() const noexcept { return free_seq_cst() == static_cast<int>(processors_); }

  // --- Searching (a worker holding a slot, out of local work, looking elsewhere) ---
  // `searching` is the worker's own flag (owner-only): it says whether the worker is counted.
  // At most half the busy slots search at once (Go's rule): the rest go idle right away.
  bool try_start_searching(bool& searching) noexcept {
    if (searching) return true;
    const int busy = static_cast<int>(processors_) - free_hint();
    if (2 * searching_.load(std::memory_order_relaxed) >= std::max(busy, 1)) return false;
    searching = true;
    searching_.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }
  // True if the caller was the last searcher: it found work, and there may be more than it
  // can take, so it wakes another worker (Go's resetspinning).
  bool stop_searching(bool& searching) noexcept {
    if (!searching) return false;
    searching = false;
    return searching_.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
  // wakep hands a slot to a worker that will start out searching: counted by the waker, so
  // that the next wakep leaves new work to it. Uncounted if no worker took the slot after all,
  // or the woken worker found the runtime shutting down.
  void count_woken_searcher() noexcept { searching_.fetch_add(1, std::memory_order_acq_rel); }
  void uncount_woken_searcher() noexcept { searching_.fetch_sub(1, std::memory_order_acq_rel); }
  bool anyone_searching_seq_cst() const noexcept { return searching_.load(std::memory_order_seq_cst) > 0; }

 private:
  const unsigned processors_;
  alignas(64) std::atomic<int> free_;  // slots no worker holds
  std::atomic<int> searching_{0};      // workers searching for work (each holds a slot)
};

}  // namespace karx::detail
