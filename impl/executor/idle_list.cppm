// IdleList: the workers parked without a slot, most recent last (wakep wakes the newest, whose
// caches are warmest; the monitor's trim takes the oldest spare), and the count of idle
// threads the metrics report (parked workers and idle blocking-pool threads).
//
// Its mutex also guards the worker registry's `exited` flags and the start of a new worker
// thread: a wakep chooses between a parked worker and a new thread in one decision, under one
// lock. Every operation on the list takes the caller's lock as a token, so that no call can
// forget it. The parking protocol that uses the list (wakep and park_idle) is idle.cpp's.
module;
#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>
module karx.executor:idle_list;
import :core;

namespace karx::detail {

class IdleList {
 public:
  using Lock = std::unique_lock<std::mutex>;
  [[nodiscard]] Lock lock() { return Lock(mutex_); }

  // --- Under lock() ---
  // `thread`: a thread of the runtime's, counted in idle_threads (a guest, block_on's caller,
  // is not one: metrics promise idle_threads <= threads).
  void park(Worker* w, bool thread, const Lock&) {
    parked_.push_back(Entry{w, thread});
    if (thread) idle_threads_.fetch_add(1, std::memory_order_relaxed);
  }
  // The most recently parked worker, taken off the list; nullptr if none is parked.
  Worker* take_newest(const Lock&) noexcept {
    if (parked_.empty()) return nullptr;
    const Entry e = parked_.back();
    parked_.pop_back();
    uncount(e);
    return e.worker;
  }
  // Takes `w` off the list: false if it was not on it (a wakep took it first).
  bool take(Worker* w, const Lock&) noexcept {
    auto it = std::find_if(parked_.begin(), parked_.end(), [w](const Entry& e) { return e.worker == w; });
    if (it == parked_.end()) return false;
    uncount(*it);
    parked_.erase(it);
    return true;
  }
  // The oldest parked worker for which `pred` holds, taken off the list; nullptr if none.
  template <class Pred>
  Worker* take_oldest_if(const Lock&, Pred pred) {
    auto it = std::find_if(parked_.begin(), parked_.end(), [&](const Entry& e) { return pred(e.worker); });
    if (it == parked_.end()) return nullptr;
    const Entry e = *it;
    parked_.erase(it);
    uncount(e);
    return e.worker;
  }
  template <class F>
  void for_each(const Lock&, F f) {
    for (const Entry& e : parked_) f(e.worker);
  }

  // --- Any thread ---
  // A blocking-pool thread waits for work, or stops waiting (it keeps no list entry).
  void pool_thread_idle() noexcept { idle_threads_.fetch_add(1, std::memory_order_relaxed); }
  void pool_thread_busy() noexcept { idle_threads_.fetch_sub(1, std::memory_order_relaxed); }
  unsigned idle_threads() const noexcept { return idle_threads_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    Worker* worker;
    bool thread;
  };
  void uncount(const Entry& e) noexcept {
    if (e.thread) idle_threads_.fetch_sub(1, std::memory_order_relaxed);
  }

  std::mutex mutex_;
  std::vector<Entry> parked_;
  std::atomic<unsigned> idle_threads_{0};  // relaxed: a metric
};

}  // namespace karx::detail
