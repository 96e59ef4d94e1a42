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
  void park(Worker* w, const Lock&) {
    parked_.push_back(w);
    idle_threads_.fetch_add(1, std::memory_order_relaxed);
  }
  // The most recently parked worker, taken off the list; nullptr if none is parked.
  Worker* take_newest(const Lock&) noexcept {
    if (parked_.empty()) return nullptr;
    Worker* w = parked_.back();
    parked_.pop_back();
    idle_threads_.fetch_sub(1, std::memory_order_relaxed);
    return w;
  }
  // Takes `w` off the list: false if it was not on it (a wakep took it first).
  bool take(Worker* w, const Lock&) noexcept {
    auto it = std::find(parked_.begin(), parked_.end(), w);
    if (it == parked_.end()) return false;
    parked_.erase(it);
    idle_threads_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  // The oldest parked worker for which `pred` holds, taken off the list; nullptr if none.
  template <class Pred>
  Worker* take_oldest_if(const Lock&, Pred pred) {
    auto it = std::find_if(parked_.begin(), parked_.end(), pred);
    if (it == parked_.end()) return nullptr;
    Worker* w = *it;
    parked_.erase(it);
    idle_threads_.fetch_sub(1, std::memory_order_relaxed);
    return w;
  }
  template <class F>
  void for_each(const Lock&, F f) {
    for (Worker* w : parked_) f(w);
  }

  // --- Any thread ---
  // A blocking-pool thread waits for work, or stops waiting (it keeps no list entry).
  void pool_thread_idle() noexcept { idle_threads_.fetch_add(1, std::memory_order_relaxed); }
  void pool_thread_busy() noexcept { idle_threads_.fetch_sub(1, std::memory_order_relaxed); }
  unsigned idle_threads() const noexcept { return idle_threads_.load(std::memory_order_relaxed); }

 private:
  std::mutex mutex_;
  std::vector<Worker*> parked_;
  std::atomic<unsigned> idle_threads_{0};  // relaxed: a metric
};

}  // namespace karx::detail
