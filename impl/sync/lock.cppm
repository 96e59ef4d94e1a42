// SyncLock: the short lock that guards a karx.sync primitive's wait lists. A futex lock with
// three states (Drepper, "Futexes Are Tricky"): free, held, held with sleepers. Held only for a
// few list operations and never across a wake, so a waiter first spins briefly: on a
// multi-core machine the holder is almost always running and about to let go.
module;
#include <atomic>
#include <chrono>
#include <cstdint>
#include <utility>
export module karx.sync:lock;
import karx.machinery;

export namespace karx::detail {

class SyncLock {
 public:
  SyncLock() noexcept = default;
  SyncLock(const SyncLock&) = delete;
  SyncLock& operator=(const SyncLock&) = delete;

  inline void lock() noexcept {
    std::uint32_t expected = kFree;
    // acquire: what the previous holder wrote under the lock is visible to us.
    if (word_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire, std::memory_order_relaxed)) return;
    lock_contended();
  }
  inline void unlock() noexcept {
    // release: our writes under the lock reach the next holder. Only a lock that had sleepers
    // (kSleepers) costs a wake syscall.
    if (word_.exchange(kFree, std::memory_order_release) == kSleepers) futex_wake_one(word_);
  }

 private:
  static constexpr std::uint32_t kFree = 0, kHeld = 1, kSleepers = 2;

  void lock_contended() noexcept {
    // Spin on loads (no cache-line ping-pong) for a short while: the holder does a few pointer
    // updates and lets go.
    for (int i = 0; i < 100; ++i) {
      if (word_.load(std::memory_order_relaxed) == kFree) {
        std::uint32_t expected = kFree;
        if (word_.compare_exchange_weak(expected, kHeld, std::memory_order_acquire, std::memory_order_relaxed)) return;
      }
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    // Sleep. Taking the lock as kSleepers (not kHeld) is conservative: another sleeper may
    // remain, and our unlock must then wake it; at worst one wake syscall too many.
    while (word_.exchange(kSleepers, std::memory_order_acquire) != kFree)
      futex_wait(word_, kSleepers, std::chrono::nanoseconds(-1));
  }

  std::atomic<std::uint32_t> word_{kFree};
};

// Scoped holder, the std::lock_guard of SyncLock.
class SyncLockGuard {
 public:
  inline explicit SyncLockGuard(SyncLock& lock) noexcept : lock_(&lock) { lock_->lock(); }
  SyncLockGuard(const SyncLockGuard&) = delete;
  SyncLockGuard& operator=(const SyncLockGuard&) = delete;
  inline ~SyncLockGuard() {
    if (lock_ != nullptr) lock_->unlock();
  }
  // Lets go before the end of the scope (to wake wakers outside the lock).
  inline void unlock() noexcept { std::exchange(lock_, nullptr)->unlock(); }
  // Takes the lock again after unlock().
  inline void relock(SyncLock& lock) noexcept {
    lock_ = &lock;
    lock_->lock();
  }

 private:
  SyncLock* lock_;
};

}  // namespace karx::detail
