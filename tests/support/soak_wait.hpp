// Bounded waits for the soak tests: a hang (a lost wake, a deadlock) fails the test, or, where
// the test itself is stuck, the Watchdog aborts the run; it must never stall the suite.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

import karx;

namespace soak {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long anything may take before the test calls it a hang. Generous: only a lost wake or a
// deadlock gets near it, even under a sanitizer on a loaded machine.
inline constexpr auto kHang = 60s;

// karx::block_on with a deadline, so a lost wake fails the round (with its seed) instead of
// hanging. nullopt: still pending at the deadline.
inline std::optional<std::optional<long>> await_for(karx::JoinHandle<long>& h, Clock::duration limit) {
  struct Wake {
    std::mutex mu;
    std::condition_variable cv;
    bool woken = false;
  };
  auto w = std::make_shared<Wake>();
  karx::Waker waker = karx::waker_fn([w] {
    std::lock_guard lock(w->mu);
    w->woken = true;
    w->cv.notify_all();
  });
  karx::Context cx(waker);
  const auto deadline = Clock::now() + limit;
  for (;;) {
    auto p = h.poll(cx);
    if (p.is_ready()) return std::move(p).value();
    std::unique_lock lock(w->mu);
    if (!w->cv.wait_until(lock, deadline, [&] { return w->woken; })) return std::nullopt;
    w->woken = false;
  }
}

template <class Pred>
bool eventually(Pred pred, Clock::duration limit = kHang) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Aborts the process, naming the seed, if a test makes no progress at all (a hang in a
// destructor, a block_on that never returns): a hang must fail, not stall the suite.
class Watchdog {
 public:
  Watchdog(std::string what, Clock::duration limit)
      : what_(std::move(what)), thread_([this, limit] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "soak: no progress for too long (%s); aborting\n", what_.c_str());
            std::fflush(stderr);
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }
  void note(std::string what) {
    std::lock_guard lock(mu_);
    what_ = std::move(what);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string what_;
  std::thread thread_;
};

}  // namespace soak
