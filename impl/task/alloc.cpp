// The per-thread block cache's storage and its release at thread exit (impl/task/alloc.cppm).
module;
#include <cstdlib>
module karx.task;

namespace karx::detail {

#if KARX_CACHED_TASK_ALLOCATOR
thread_local constinit BlockCache block_cache{};

namespace {

void free_cached_blocks(BlockCache& cache) noexcept {
  for (std::size_t c = 0; c < BlockCache::kClasses; ++c) {
    while (BlockCache::FreeBlock* free = cache.heads[c]) {
      cache.heads[c] = free->next;
      std::free(free);
    }
  }
  cache.bytes = 0;
}

// A thread_local with a destructor costs an initialization check per access, so the cache
// itself has none: this object, touched once per thread, frees it when the thread exits.
struct ReleaseAtExit {
  ~ReleaseAtExit() {
    free_cached_blocks(block_cache);
    block_cache.state = 2;  // blocks freed later on this thread (other thread_locals) go to free()
  }
};
thread_local ReleaseAtExit release_at_exit;

}  // namespace

void register_block_cache() noexcept {
  block_cache.state = 1;
  (void)&release_at_exit;  // constructs it: its destructor runs at this thread's exit
}

void trim_task_cache() noexcept { free_cached_blocks(block_cache); }
#else
void trim_task_cache() noexcept {}
#endif

}  // namespace karx::detail
