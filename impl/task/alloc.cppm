// The allocations of a task (its block, and the frame of an Async coroutine), inline in the
// typed code that makes and frees them. Three build choices (KARX_TASK_ALLOCATOR), a public
// compile definition of the karx target so importers compile these functions as the library:
//
//  - slab (default): the task slab (impl/task/slab.cppm): per-thread pages of one size class,
//    no header per block, and a block freed on another thread goes back to the page's owner in
//    batches, so a thread that spawns while workers free (spawning from outside) gets its
//    blocks back instead of calling malloc. Blocks over kSlabMaxBlock bytes, or aligned beyond
//    16, come from malloc. The asan preset uses `system`, so that ASan sees every block's
//    lifetime; the tsan preset keeps the slab, so that TSan checks its hand-offs.
//  - system: malloc/free directly.
//  - scalable: oneTBB's scalable_malloc, whose per-thread pools handle blocks freed on another
//    thread than their allocator's (measured: docs/bench.md).
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#if KARX_SCALABLE_TASK_ALLOCATOR
#include <tbb/scalable_allocator.h>
#endif
export module karx.task:alloc;
import :slab;

export namespace karx::detail {
// For tests: called with the size of every task block and Async frame allocated, on the
// allocating thread; returning true makes that allocation fail with std::bad_alloc (fault
// injection that works whatever the allocator). Null, the production case, costs one relaxed
// load and a branch not taken. Not for use while tasks are being spawned on other threads.
using AllocationObserver = bool (*)(std::size_t size) noexcept;
void set_allocation_observer(AllocationObserver observer) noexcept;
}  // namespace karx::detail

namespace karx::detail {

extern std::atomic<AllocationObserver> allocation_observer;  // impl/task/alloc.cpp

inline bool slab_serves(std::size_t size, std::size_t align) noexcept {
#if KARX_SLAB_TASK_ALLOCATOR
  return size <= kSlabMaxBlock && align <= kSlabStep;
#else
  (void)size;
  (void)align;
  return false;
#endif
}

// A block the slab does not serve carries this node in front of it, where the listing
// (impl/task/listing.cpp) keeps it on a list while it is a listed task: the slab's blocks are
// found through their pages' listing maps instead, and neither needs a field in the task.
// system_prefix(align) bytes go in front, so that the block keeps its alignment.
struct SystemBlockNode {
  SystemBlockNode* prev;
  SystemBlockNode* next;
};
inline constexpr std::size_t system_prefix(std::size_t align) noexcept {
  return align < sizeof(SystemBlockNode) ? sizeof(SystemBlockNode) : align;
}
inline SystemBlockNode* system_block_node(void* block) noexcept {
  return reinterpret_cast<SystemBlockNode*>(static_cast<char*>(block) - sizeof(SystemBlockNode));
}

inline void* allocate_task(std::size_t size, std::size_t align) {
  if (AllocationObserver observe = allocation_observer.load(std::memory_order_relaxed)) [[unlikely]]
    if (observe(size)) throw std::bad_alloc();
  if (slab_serves(size, align)) return slab_allocate(size);
  const std::size_t prefix = system_prefix(align);
  void* raw;
#if KARX_SCALABLE_TASK_ALLOCATOR
  raw = align <= alignof(std::max_align_t) ? scalable_malloc(prefix + size)
                                           : scalable_aligned_malloc(prefix + size, align);
#else
  raw = align <= alignof(std::max_align_t) ? std::malloc(prefix + size)
                                           : std::aligned_alloc(align, (prefix + size + align - 1) / align * align);
#endif
  if (raw == nullptr) [[unlikely]]
    throw std::bad_alloc();
  return static_cast<char*>(raw) + prefix;
}

// `size` and `align` are the ones the block was allocated with.
inline void deallocate_task(void* block, std::size_t size, std::size_t align) noexcept {
  if (slab_serves(size, align)) {
    slab_free(block, size);
    return;
  }
  void* raw = static_cast<char*>(block) - system_prefix(align);
#if KARX_SCALABLE_TASK_ALLOCATOR
  if (align <= alignof(std::max_align_t))
    scalable_free(raw);
  else
    scalable_aligned_free(raw);
#else
  std::free(raw);
#endif
}

}  // namespace karx::detail

export namespace karx::detail {
// Thin wrappers for tests (allocate_task and deallocate_task are not exported).
void* test_allocate_task(std::size_t size, std::size_t align);
void test_deallocate_task(void* block, std::size_t size, std::size_t align) noexcept;
bool test_slab_serves(std::size_t size, std::size_t align) noexcept;
// Gives this thread's empty slab pages back to the system, after collecting what other
// threads freed into them (nothing to do without the slab). For tests that count allocations
// from outside, and for a thread about to sleep for long.
void trim_task_cache() noexcept;
}  // namespace karx::detail
