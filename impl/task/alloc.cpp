// The allocation observer and the trim of the task allocator (impl/task/alloc.cppm).
module;
#include <atomic>
module karx.task;

namespace karx::detail {

std::atomic<AllocationObserver> allocation_observer{nullptr};

void set_allocation_observer(AllocationObserver observer) noexcept {
  allocation_observer.store(observer, std::memory_order_relaxed);
}

void trim_task_cache() noexcept {
#if KARX_SLAB_TASK_ALLOCATOR
  slab_trim();
#endif
}

}  // namespace karx::detail
