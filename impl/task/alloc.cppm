// The allocations of a task (its block, and the frame of an Async coroutine), inline in the
// typed code that makes and frees them. Three build choices (KARX_TASK_ALLOCATOR), a public
// compile definition of the karx target so importers compile these functions as the library:
//
//  - cached (default): a per-thread cache of free blocks in 16-byte size classes up to 520
//    bytes, over malloc. A task's life is malloc+free of two small blocks, and glibc's fast
//    path costs about 130 instructions per pair (its checks and bin logic) where popping a
//    free list costs a handful. Bounded (kMaxBytes per thread); a thread that frees more than
//    it allocates passes the rest to free(); a thread's cache is freed when it exits, and
//    karx::detail::trim_task_cache() frees it earlier. Sanitizer builds use `system`, so that ASan sees every block's
//    lifetime.
//  - system: malloc/free directly.
//  - scalable: oneTBB's scalable_malloc, whose per-thread pools handle blocks freed on another
//    thread than their allocator's (measured: docs/bench.md).
module;
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#if KARX_SCALABLE_TASK_ALLOCATOR
#include <tbb/scalable_allocator.h>
#endif
export module karx.task:alloc;

namespace karx::detail {

#if KARX_CACHED_TASK_ALLOCATOR
struct BlockCache {
  // Classes of 16-byte steps sized 16c + 8, the usable size of a 16(c + 1)-byte malloc chunk
  // (glibc adds an 8-byte header and rounds to 16): rounding a request up to its class costs
  // no more memory than malloc of the request itself would.
  static constexpr std::size_t kStep = 16;
  static constexpr std::size_t kClasses = 33;  // blocks up to 520 bytes
  // What a thread may keep: enough for a burst of 10,000 coroutine tasks (a frame and a block
  // each) to come back from the cache on the next burst. Measured: spawn_many_inside 22% and
  // ping_pong 12% faster than with 256 blocks per class.
  static constexpr std::size_t kMaxBytes = std::size_t{4} << 20;
  struct FreeBlock {
    FreeBlock* next;
  };
  FreeBlock* heads[kClasses];
  std::size_t bytes;  // cached, in class sizes
  // 0: nothing cached yet; 1: the thread's exit will free the cache; 2: exited (free directly).
  std::uint8_t state;

  inline static bool cacheable(std::size_t size, std::size_t align) noexcept {
    return align <= alignof(std::max_align_t) && size <= class_size(kClasses - 1);
  }
  inline static std::size_t class_of(std::size_t size) noexcept { return (size + 7) / kStep; }
  inline static constexpr std::size_t class_size(std::size_t c) noexcept { return kStep * c + 8; }
};
// constinit and trivially destructible: an access is one thread-pointer-relative address, with
// no initialization guard. impl/task/alloc.cpp defines it and frees it at thread exit.
extern thread_local constinit BlockCache block_cache;
// First block cached on this thread: arranges for the cache to be freed at thread exit.
void register_block_cache() noexcept;
#endif

inline void* allocate_task(std::size_t size, std::size_t align) {
  void* block;
#if KARX_SCALABLE_TASK_ALLOCATOR
  block = align <= alignof(std::max_align_t) ? scalable_malloc(size) : scalable_aligned_malloc(size, align);
#else
#if KARX_CACHED_TASK_ALLOCATOR
  if (BlockCache::cacheable(size, align)) {
    BlockCache& cache = block_cache;
    const std::size_t c = BlockCache::class_of(size);
    if (BlockCache::FreeBlock* free = cache.heads[c]) {
      cache.heads[c] = free->next;
      cache.bytes -= BlockCache::class_size(c);
      return free;
    }
    size = BlockCache::class_size(c);  // the class's size: the block can come back to any of it
  }
#endif
  block = align <= alignof(std::max_align_t) ? std::malloc(size)
                                             : std::aligned_alloc(align, (size + align - 1) / align * align);
#endif
  if (block == nullptr) [[unlikely]]
    throw std::bad_alloc();
  return block;
}

// `size` and `align` are the ones the block was allocated with.
inline void deallocate_task(void* block, std::size_t size, std::size_t align) noexcept {
#if KARX_SCALABLE_TASK_ALLOCATOR
  (void)size;
  if (align <= alignof(std::max_align_t))
    scalable_free(block);
  else
    scalable_aligned_free(block);
#else
#if KARX_CACHED_TASK_ALLOCATOR
  if (BlockCache::cacheable(size, align)) {
    BlockCache& cache = block_cache;
    const std::size_t c = BlockCache::class_of(size);
    if (cache.bytes + BlockCache::class_size(c) <= BlockCache::kMaxBytes && cache.state != 2) {
      if (cache.state == 0) [[unlikely]]
        register_block_cache();
      auto* free = static_cast<BlockCache::FreeBlock*>(block);
      free->next = cache.heads[c];
      cache.heads[c] = free;
      cache.bytes += BlockCache::class_size(c);
      return;
    }
  }
#endif
  (void)size;
  (void)align;
  std::free(block);
#endif
}

}  // namespace karx::detail

export namespace karx::detail {
// Frees the blocks this thread's task cache holds (nothing to do without the cache). For tests
// that count allocations from outside, and for a thread about to sleep for long.
void trim_task_cache() noexcept;
}  // namespace karx::detail
