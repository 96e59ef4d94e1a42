// The thread budget: a runtime's OS threads (workers, spares, blocking-pool threads, the
// monitor) counted against max_threads, and the retry that keeps work from waiting for good
// when a thread could not be had for it.
//
// Both halves of the retry are here. A thread is refused (the cap) or fails to start (resource
// limits) while work waits for it: the refused party asks for a retry (ask_for_retry, then
// wakes the monitor). The monitor takes each request once (take_retry) and retries the starts
// (RuntimeCore::retry_thread_starts: a worker for queued tasks, a pool thread for queued
// closures; at the cap, it asks an idle thread of the other kind to leave and retries again).
// The monitor may park only when no request is pending (retry_pending, seq_cst): the request's
// store and its check are seq_cst on both sides, so a request made while it goes to sleep is
// seen either by its check or by the asker's wake-up.
module;
#include <atomic>
#include <cstdint>
export module karx.executor:thread_budget;

namespace karx::detail {

class ThreadBudget {
 public:
  inline explicit ThreadBudget(unsigned max_threads) noexcept : max_(max_threads) {}

  // Reserves one thread before starting it; false at the cap. A CAS loop, not an add: the
  // count must never pass the cap, even for a moment (metrics read it).
  inline bool try_take() noexcept {
    unsigned alive = alive_.load(std::memory_order_relaxed);
    do {
      if (alive >= max_) return false;
    } while (!alive_.compare_exchange_weak(alive, alive + 1, std::memory_order_acq_rel, std::memory_order_relaxed));
    return true;
  }
  // The reserved thread runs.
  inline void started() noexcept { started_.fetch_add(1, std::memory_order_relaxed); }
  // The reserved thread could not be started: counted, and its share returned.
  inline void start_failed() noexcept {
    alive_.fetch_sub(1, std::memory_order_relaxed);
    failures_.fetch_add(1, std::memory_order_relaxed);
  }
  // A thread of the budget has returned (or is about to, touching nothing of the runtime).
  inline void exited() noexcept { alive_.fetch_sub(1, std::memory_order_relaxed); }

  // Work waits for a thread that was refused or failed; the caller then wakes the monitor.
  inline void ask_for_retry() noexcept { retry_.store(true, std::memory_order_seq_cst); }
  // The monitor, once per request.
  inline bool take_retry() noexcept {
    return retry_.load(std::memory_order_relaxed) && retry_.exchange(false, std::memory_order_acq_rel);
  }
  // The monitor, before it parks (seq_cst: pairs with ask_for_retry, see above).
  inline bool retry_pending() const noexcept { return retry_.load(std::memory_order_seq_cst); }

  // Metrics (relaxed: nothing is ordered by them).
  inline unsigned alive() const noexcept { return alive_.load(std::memory_order_relaxed); }
  inline std::uint64_t started_count() const noexcept { return started_.load(std::memory_order_relaxed); }
  inline std::uint64_t failures() const noexcept { return failures_.load(std::memory_order_relaxed); }

 private:
  const unsigned max_;
  std::atomic<unsigned> alive_{0};
  std::atomic<std::uint64_t> started_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<bool> retry_{false};
};

}  // namespace karx::detail
