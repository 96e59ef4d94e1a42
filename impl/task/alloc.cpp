// The allocation observer and the trim of the task allocator (impl/task/alloc.cppm).
module;
#include <atomic>
#include <cstddef>
module karx.task;

namespace karx::detail {

std::atomic<AllocationObserver> allocation_observer{nullptr};

void set_allocation_observer(AllocationObserver observer) noexcept {
  allocation_observer.store(observer, std::memory_order_relaxed);
}

void* test_allocate_task(std::size_t size, std::size_t align) { return allocate_task(size, align); }
void test_deallocate_task(void* block, std::size_t size, std::size_t align) noexcept {
  deallocate_task(block, size, align);
}
bool test_slab_serves(std::size_t size, std::size_t align) noexcept { return slab_serves(size, align); }

void trim_task_cache() noexcept {
#if KARX_SLAB_TASK_ALLOCATOR
  slab_trim();
#endif
}

}  // namespace karx::detail
