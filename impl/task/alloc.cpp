// The one allocation of a task.
module;
#include <cstddef>
#include <cstdlib>
#include <new>
#if KARX_SCALABLE_TASK_ALLOCATOR
#include <tbb/scalable_allocator.h>
#endif
module karx.task;

namespace karx::detail {

// oneTBB's scalable allocator keeps per-thread pools and returns blocks freed on another
// thread to their owner lazily, which suits tasks that are spawned on one worker and finish
// on another. Sanitizer builds use operator new so that every block is tracked.
void* allocate_task(std::size_t size, std::size_t align) {
#if KARX_SCALABLE_TASK_ALLOCATOR
  void* block = align <= alignof(std::max_align_t) ? scalable_malloc(size) : scalable_aligned_malloc(size, align);
  if (block == nullptr) throw std::bad_alloc();
  return block;
#else
  return ::operator new(size, std::align_val_t{align});  // throws std::bad_alloc
#endif
}

void deallocate_task(void* block, [[maybe_unused]] std::size_t size, std::size_t align) noexcept {
#if KARX_SCALABLE_TASK_ALLOCATOR
  if (align <= alignof(std::max_align_t))
    scalable_free(block);
  else
    scalable_aligned_free(block);
#else
  ::operator delete(block, size, std::align_val_t{align});
#endif
}

}  // namespace karx::detail
