// A waker that counts its wakes, and block_on with it.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "support/probes.hpp"

namespace probes {

// A waker that counts its wakes (from any thread) and lets a thread wait for them.
class WakeCounter {
 public:
  // The counter's own waker: the same one at every call, so a handle polled with it again
  // keeps the waker it registered.
  const karx::Waker& waker() const { return waker_; }
  // A new waker that counts here too, but is not the same one: a handle polled with it
  // registers it in place of the one it had.
  karx::Waker new_waker() const { return make_waker(s_); }
  int wakes() const {
    std::lock_guard lock(s_->m);
    return s_->wakes;
  }
  // Waits until at least `n` wakes happened; false after kTimeout (a hang).
  bool wait_for_wakes(int n) const {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, kTimeout, [&] { return s_->wakes >= n; });
  }

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv;
    int wakes = 0;
  };
  static karx::Waker make_waker(std::shared_ptr<State> s) {
    return karx::waker_fn([s = std::move(s)] {
      std::lock_guard lock(s->m);
      ++s->wakes;
      s->cv.notify_all();
    });
  }
  std::shared_ptr<State> s_ = std::make_shared<State>();
  karx::Waker waker_ = make_waker(s_);
};

// Polls `f` once with the counter's own waker.
template <class F>
auto poll_by(const WakeCounter& counter, F& f) {
  return poll_with(f, counter.waker());
}

// Polls `f` until it is ready, sleeping on `counter` in between; throws after a hang.
template <class F>
karx::output_of<F> block_on(F& f, const WakeCounter& counter) {
  for (;;) {
    const int seen = counter.wakes();
    auto r = poll_with(f, counter.waker());
    if (r.is_ready()) return std::move(r).value();
    if (!counter.wait_for_wakes(seen + 1))
      throw std::runtime_error("block_on: no wake for " + std::to_string(kTimeout.count()) + " s");
  }
}

}  // namespace probes
