// SpinLock: a test-and-test-and-set lock for critical sections of a few instructions (the
// injector's push and pop). A std::mutex sleeps in the kernel as soon as it is contended: a
// worker taking a batch while a producer outside the pool pushes then costs both a futex call
// and a context switch, far longer than the critical section itself. Spinning waits out the
// other holder instead; after a while it yields, so that a holder preempted on an overloaded
// machine gets the CPU back.
module;
#include <atomic>
#include <thread>
export module karx.machinery:spin_lock;

export namespace karx::detail {

class SpinLock {
 public:
  void lock() noexcept {
    // acquire: the critical section sees what the previous holder wrote before its unlock.
    while (locked_.exchange(true, std::memory_order_acquire)) {
      int spins = 0;
      while (locked_.load(std::memory_order_relaxed)) {  // wait reading, not writing, the line
        if (++spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire);
  }
  // release: publishes the critical section's writes to the next holder.
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  static constexpr int kSpinsBeforeYield = 128;
  std::atomic<bool> locked_{false};
};

}  // namespace karx::detail
