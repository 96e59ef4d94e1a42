// Asymmetric fences: a store-then-load pattern (Dekker's) between a hot side that runs all the
// time and a cold side that runs rarely, where the hot side pays only a compiler barrier and
// the cold side pays for both. The cold side calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED),
// which makes every thread of the process that is running at that moment execute a full memory
// barrier (an interrupt on its CPU), and a thread that is not running has passed one in its
// context switch. So in every interleaving the hot side's store-then-load is split by a real
// barrier, at the point where the cold side's syscall ran, which is all Dekker's argument
// needs. (The same pair is folly's asymmetricLightBarrier/asymmetricHeavyBarrier and .NET's
// FlushProcessWriteBuffers.)
//
// Where membarrier is not available (old kernels, seccomp filters) both sides issue a seq_cst
// fence. Under ThreadSanitizer too: it cannot see the barrier the kernel forces on the hot
// side, and a model that is missing an edge could hide a real race.
module;
#include <atomic>
#include <cstdio>
#include <cstdlib>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
export module karx.machinery:asymmetric_fence;

namespace karx::detail {

#if defined(__SANITIZE_THREAD__)
#define KARX_ASYMMETRIC_FENCE_OFF 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KARX_ASYMMETRIC_FENCE_OFF 1
#endif
#endif

// Set once, by the first call of enable_asymmetric_fences, before any thread that uses the
// fences is started by its caller (thread creation orders the store before their loads).
inline std::atomic<bool> membarrier_ready{false};

}  // namespace karx::detail

export namespace karx::detail {

// Registers the process for expedited membarrier (once; later calls return at once). Call it
// before starting the threads that use the light side.
inline void enable_asymmetric_fences() noexcept {
#if defined(__linux__) && !defined(KARX_ASYMMETRIC_FENCE_OFF)
  static const bool ready = [] {
    const long supported = ::syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
    return ::syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  }();
  membarrier_ready.store(ready, std::memory_order_relaxed);
#endif
}

// The hot side: between its store and its load.
inline void light_fence() noexcept {
  if (membarrier_ready.load(std::memory_order_relaxed))
    std::atomic_signal_fence(
        std::memory_order_seq_cst);  // the compiler keeps the order; the CPU is the heavy side's job
  else
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

// The cold side: between its store and its load. A syscall (a few µs with other threads running).
inline void heavy_fence() noexcept {
#if defined(__linux__)
  if (membarrier_ready.load(std::memory_order_relaxed)) {
    if (::syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return;
    // Cannot fail once registered; if it did, the light sides have no barrier at all, and a
    // fence here could not make up for it.
    std::fputs("karx: membarrier failed after registration; the asymmetric fences are broken\n", stderr);
    std::abort();
  }
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace karx::detail
