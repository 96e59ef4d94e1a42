// The one allocation of a task, inline in the typed code that makes and frees the block.
//
// Default: malloc (glibc's per-thread cache serves the spawn/free pattern of tasks well, and
// measured faster than oneTBB's scalable_malloc here: docs/bench.md). The build option
// KARX_TASK_ALLOCATOR=scalable switches to scalable_malloc, whose per-thread pools may suit
// tasks freed on another thread than their spawner's; the runtime benchmarks decide. The
// choice is a public compile definition of the karx target, so every importer compiles
// these functions the same way as the library.
module;
#include <cstddef>
#include <cstdlib>
#include <new>
#if KARX_SCALABLE_TASK_ALLOCATOR
#include <tbb/scalable_allocator.h>
#endif
export module karx.task:alloc;

namespace karx::detail {

inline void* allocate_task(std::size_t size, std::size_t align) {
  void* block;
#if KARX_SCALABLE_TASK_ALLOCATOR
  block = align <= alignof(std::max_align_t) ? scalable_malloc(size) : scalable_aligned_malloc(size, align);
#else
  block = align <= alignof(std::max_align_t) ? std::malloc(size)
                                             : std::aligned_alloc(align, (size + align - 1) / align * align);
#endif
  if (block == nullptr) [[unlikely]]
    throw std::bad_alloc();
  return block;
}

inline void deallocate_task(void* block, std::size_t align) noexcept {
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
