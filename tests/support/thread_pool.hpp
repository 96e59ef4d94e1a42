// A plain multi-threaded executor for tests: one locked queue, `n` worker threads that run
// whatever is pushed. The destructor runs what is queued, then joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

import karx;

namespace probes {

class ThreadPool {
 public:
  explicit ThreadPool(int n) {
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  void push(karx::Task<> t) {
    // Notify under the lock: a push may come from another thread's wake (the timer driver's),
    // and once the task runs and its test ends, the pool is destroyed; the destructor takes
    // the lock first, so it cannot destroy the condition variable under a late notify.
    std::lock_guard lock(m_);
    queue_.push_back(std::move(t));
    cv_.notify_one();
  }
  // A schedule function that pushes here.
  auto scheduler() {
    return [this](karx::Task<> t) { push(std::move(t)); };
  }
  template <class F>
  auto spawn(F future) {
    auto [task, handle] = karx::spawn(std::move(future), scheduler());
    task.schedule();
    return std::move(handle);
  }

 private:
  void work() {
    std::unique_lock lock(m_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      karx::Task<> t = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      t.run();
      lock.lock();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<karx::Task<>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace probes
