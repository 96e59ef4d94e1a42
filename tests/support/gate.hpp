// Holding a poll in progress: a Gate the future waits at, and a Background run that it holds.
#pragma once

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "support/probes.hpp"

namespace probes {

// Lets the test hold a poll in progress: once armed, the next poll that passes the gate
// announces itself and waits until the test opens the gate. Waits are bounded by kTimeout (a
// hang fails the test instead of the whole run).
class Gate {
 public:
  void arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  // Called by a future inside poll.
  void pass() {
    std::unique_lock lock(mu_);
    if (!armed_) return;
    armed_ = false;
    arrived_ = true;
    cv_.notify_all();
    if (!cv_.wait_for(lock, kTimeout, [this] { return open_; })) ADD_FAILURE() << "the gate was never opened";
  }
  // True once a poll waits at the gate (false after the timeout).
  [[nodiscard]] bool wait_arrived() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kTimeout, [this] { return arrived_; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool arrived_ = false;
  bool open_ = false;
};

// Task::run(), which must never throw the future's exception.
template <class Tag>
bool run_checked(karx::Task<Tag>& task) {
  try {
    return task.run();
  } catch (...) {
    ADD_FAILURE() << "Task::run() threw";
    return false;
  }
}

// Arms the gate and runs a task on another thread: its poll waits at the gate. The gate is
// opened and the thread joined at the latest when this goes out of scope, so a failing
// assertion cannot leave a thread blocked.
class Background {
 public:
  template <class Tag>
  Background(Gate& gate, karx::Task<Tag> task) : gate_(gate) {
    gate_.arm();
    thread_ = std::thread([this, t = std::move(task)]() mutable { woken_ = run_checked(t); });
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  ~Background() { finish(); }

  // Opens the gate, waits for the run to return; returns what run() returned.
  bool finish() {
    gate_.open();
    if (thread_.joinable()) thread_.join();
    return woken_;
  }

 private:
  Gate& gate_;
  bool woken_ = false;
  std::thread thread_;
};

}  // namespace probes
