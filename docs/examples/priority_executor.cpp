// A priority executor: every task carries its priority as its tag, and the one worker thread
// always runs the highest-priority task queued. A task woken later (here, by the completion of
// a task it awaits) goes back in with the same priority, ahead of lower ones already waiting.
#include <algorithm>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>
import karx;

class PriorityExecutor {
 public:
  ~PriorityExecutor() {
    {
      std::lock_guard lock(m_);
      closed_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  // Tasks spawned before start() wait in the queue: the demo spawns them all first.
  void start() {
    worker_ = std::thread([this] {
      while (std::optional<karx::Task<int>> task = pop()) task->run();
    });
  }

  // The priority is the task's tag: it lives in the task block, so every reschedule sees it.
  template <karx::Future F>
  karx::JoinHandle<karx::output_of<F>, int> spawn(F future, int priority) {
    auto [task, handle] =
        karx::spawn(std::move(future), [this](karx::Task<int> t) { schedule(std::move(t)); }, priority);
    task.schedule();
    return std::move(handle);
  }

  // Takes Task<int>, not Task<>: this executor needs the tag, so it is not a karx::Executor.
  void schedule(karx::Task<int> task) {
    // Notify under the lock: a wake from another thread must not touch the condition
    // variable after the executor (which takes the lock to stop) is gone.
    std::lock_guard lock(m_);
    heap_.push_back(std::move(task));
    std::push_heap(heap_.begin(), heap_.end(), by_priority);
    cv_.notify_one();
  }

 private:
  static bool by_priority(const karx::Task<int>& a, const karx::Task<int>& b) { return a.tag() < b.tag(); }

  std::optional<karx::Task<int>> pop() {  // the highest priority; nullopt once closed
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return closed_ || !heap_.empty(); });
    if (closed_) return std::nullopt;
    std::pop_heap(heap_.begin(), heap_.end(), by_priority);
    karx::Task<int> top = std::move(heap_.back());
    heap_.pop_back();
    return top;
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::vector<karx::Task<int>> heap_;  // a max-heap on the tag
  bool closed_ = false;
  std::thread worker_;
};

// Only the worker thread runs tasks, so the log needs no lock; main reads it after the joins.
std::vector<std::string> ran;

karx::Async<> step(std::string name) {
  ran.push_back(name);
  co_return;
}

karx::Async<> urgent(karx::JoinHandle<void, int> signal) {
  ran.push_back("urgent waits");
  co_await signal;  // pending until the signal task completes; its completion wakes us
  ran.push_back("urgent woken");
}

int main() {
  PriorityExecutor executor;
  auto low = executor.spawn(step("low"), 1);
  auto signal = executor.spawn(step("signal"), 2);
  auto waiter = executor.spawn(urgent(std::move(signal)), 9);
  auto mid = executor.spawn(step("mid"), 5);
  std::printf("spawned: low (1), signal (2), urgent (9), mid (5)\n");

  executor.start();
  karx::block_on(std::move(low));
  karx::block_on(std::move(waiter));
  karx::block_on(std::move(mid));

  // Re-woken by signal (2), urgent (9) runs again before low (1), which was queued all along.
  std::string order;
  for (const auto& name : ran) order += (order.empty() ? "" : ", ") + name;
  std::printf("ran: %s\n", order.c_str());
}
