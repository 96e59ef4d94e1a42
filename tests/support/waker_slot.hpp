// Where a future keeps the waker of its latest poll, for the test to take and wake.
#pragma once

#include <gtest/gtest.h>

#include <mutex>
#include <optional>
#include <utility>

#include "support/probes.hpp"

namespace probes {

// Where the futures keep the waker of their latest poll (async-task's tests' global WAKER).
// Thread-safe: the poll may run on another thread.
class WakerSlot {
 public:
  // Keeps a clone of `waker`, dropping the previous one (outside the lock).
  void store(const karx::Waker& waker) {
    std::optional<karx::Waker> fresh(std::in_place, waker);
    std::lock_guard lock(mu_);
    slot_.swap(fresh);
  }
  // Takes the stored waker out; a no-op waker (and a test failure) if there is none.
  karx::Waker take() {
    std::lock_guard lock(mu_);
    if (!slot_) {
      ADD_FAILURE() << "no waker was stored";
      return karx::noop_waker();
    }
    karx::Waker w = std::move(*slot_);
    slot_.reset();
    return w;
  }
  // Drops the stored waker.
  void drop() { (void)take(); }

 private:
  std::mutex mu_;
  std::optional<karx::Waker> slot_;
};

}  // namespace probes
