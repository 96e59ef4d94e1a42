// Parker: puts one thread to sleep until another unparks it (a futex, as Go's notesleep and
// Rust's std::thread::park). An unpark that comes first is remembered: the next park returns
// at once. Only the owning thread parks; any thread may unpark.
module;
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
export module karx.machinery:parker;

export namespace karx::detail {

// FUTEX_WAIT on `word` while it holds `expected`, at most `timeout` (negative: forever).
inline void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::chrono::nanoseconds timeout) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    tsp = &ts;
  }
  // Spurious returns (EINTR, EAGAIN when the word changed) are fine: callers re-check.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, tsp, nullptr, 0);
}

inline void futex_wake_one(std::atomic<std::uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace karx::detail

export namespace karx::detail {

// A futex on a 32-bit word for one-off waits (karx::block_on's wake flag): waits while `word`
// holds `expected`, at most `timeout` (negative: forever); returns on a wake, a change, a
// signal or the timeout alike (callers re-check). The waking side stores, then wakes all.
inline void wait_on_word(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                         std::chrono::nanoseconds timeout) noexcept {
  futex_wait(word, expected, timeout);
}
inline void wake_word_waiters(std::atomic<std::uint32_t>& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
}

// steady_clock::now() + `timeout`, or the end of time if that sum would overflow (an option
// like idle_thread_timeout = nanoseconds::max() means "never").
inline std::chrono::steady_clock::time_point saturating_deadline(std::chrono::nanoseconds timeout) noexcept {
  using clock = std::chrono::steady_clock;
  const clock::time_point now = clock::now();
  const auto d = std::chrono::ceil<clock::duration>(timeout);
  return d > clock::time_point::max() - now ? clock::time_point::max() : now + d;
}

class Parker {
 public:
  // Sleeps until unparked (returns at once if an unpark came since the last park).
  void park() noexcept { (void)park_for(std::chrono::nanoseconds(-1)); }

  // As park, for at most `timeout`. True if unparked, false if the time ran out.
  bool park_for(std::chrono::nanoseconds timeout) noexcept {
    // acquire: what the unparker did before unpark() is visible after we return.
    if (state_.exchange(kEmpty, std::memory_order_acquire) == kNotified) return true;
    std::uint32_t expected = kEmpty;
    if (!state_.compare_exchange_strong(expected, kParked, std::memory_order_acquire)) {
      state_.store(kEmpty, std::memory_order_relaxed);  // an unpark slipped in: consume it
      return true;
    }
    const bool forever = timeout.count() < 0;
    const auto deadline = saturating_deadline(forever ? std::chrono::nanoseconds(0) : timeout);
    for (;;) {
      std::chrono::nanoseconds left(-1);
      if (!forever) {
        left = deadline - std::chrono::steady_clock::now();
        if (left.count() <= 0) {
          // Time is up: leave PARKED unless an unpark won the race (then consume it).
          expected = kParked;
          if (state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acquire)) return false;
          state_.store(kEmpty, std::memory_order_relaxed);
          return true;
        }
      }
      futex_wait(state_, kParked, left);
      expected = kNotified;
      if (state_.compare_exchange_strong(expected, kEmpty, std::memory_order_acquire)) return true;
    }
  }

  // Wakes the parked thread, or makes its next park return at once.
  void unpark() noexcept {
    // release: pairs with park's acquire. Only a PARKED thread needs the syscall.
    if (state_.exchange(kNotified, std::memory_order_release) == kParked) futex_wake_one(state_);
  }

 private:
  static constexpr std::uint32_t kEmpty = 0, kParked = 1, kNotified = 2;
  std::atomic<std::uint32_t> state_{kEmpty};
};

}  // namespace karx::detail
