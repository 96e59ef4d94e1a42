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
// on another. Sanitizer builds use malloc so that every block is tracked.
void* allocate_task(std::size_t size, std::size_t align) {
#if KARX_SCALABLE_TASK_ALLOCATOR
  void* block = align <= alignof(std::max_align_t) ? scalable_malloc(size) : scalable_aligned_malloc(size, align);
#else
  void* block = align <= alignof(std::max_align_t) ? std::malloc(size) : std::aligned_alloc(align, (size + align - 1) / align * align);
#endif
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

void deallocate_task(void* block, std::size_t, std::size_t align) noexcept {
#if KARX_SCALABLE_TASK_ALLOCATOR
  if (align <= alignof(std::max_align_t))
    scalable_free(block);
  else
    scalable_aligned_free(block);
#else
  (void)align;
  std::free(block);
#endif
}

}  // namespace karx::detail
