// Signals: a hand-written future woken by another task or by a plain thread, and the plain
// thread that fires them (an event source outside the runtime).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "support/soak_ledger.hpp"

import karx;

namespace soak {

using Clock = std::chrono::steady_clock;

struct SignalState {
  std::mutex mu;
  bool fired = false;
  std::optional<karx::Waker> waker;
  // Idempotent. Returns true if it woke a waiting future.
  bool fire() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(mu);
      fired = true;
      w.swap(waker);
    }
    if (!w) return false;
    std::move(*w).wake_and_release();
    return true;
  }
};

// Pending until its signal fires, then ready with `value`.
struct WaitSignal {
  std::shared_ptr<SignalState> signal;
  Tracker tracker;
  long value;

  karx::Poll<long> poll(karx::Context& cx) {
    std::optional<karx::Waker> old;  // dropped outside the lock
    std::lock_guard lock(signal->mu);
    if (signal->fired) {
      tracker.done();
      return karx::ready(value);
    }
    if (!signal->waker || !signal->waker->will_wake(cx.waker())) {
      old.swap(signal->waker);
      signal->waker.emplace(cx.waker());
    }
    return karx::pending;
  }
};

// A plain thread that fires signals at given times (an event source outside the runtime). On
// destruction it fires whatever is left at once.
class SignalThread {
 public:
  SignalThread() : thread_([this] { run(); }) {}
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;
  ~SignalThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }
  void fire_after(std::shared_ptr<SignalState> s, Clock::duration d) {
    std::lock_guard lock(mu_);
    queue_.emplace(Clock::now() + d, std::move(s));
    cv_.notify_all();
  }
  // Signals this thread fired that woke a waiting future. Counted here, not in a round's
  // ledger: a wake may finish after the round it belongs to has ended.
  long wakes() const { return wakes_.load(std::memory_order_relaxed); }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (queue_.empty()) {
        if (stop_) return;
        cv_.wait(lock);
        continue;
      }
      const auto due = queue_.begin()->first;
      if (!stop_ && Clock::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      std::shared_ptr<SignalState> s = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
      lock.unlock();
      if (s->fire()) wakes_.fetch_add(1, std::memory_order_relaxed);
      s.reset();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::multimap<Clock::time_point, std::shared_ptr<SignalState>> queue_;
  std::atomic<long> wakes_{0};
  std::thread thread_;
};

}  // namespace soak
