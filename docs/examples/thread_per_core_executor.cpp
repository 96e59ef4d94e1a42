// A thread-per-core executor: one queue per thread and no stealing. A task is pinned to the
// core it was spawned on: its schedule function pushes to that core's queue only, so every
// wake, from whichever thread, sends it home. Data a task touches stays on one thread's cache,
// at the price of balance: a busy core's backlog waits while another core idles.
#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>
import karx;

// One core: a queue and the one thread that drains it. A karx::Executor, so
// karx::spawn_on(core, future) pins a future to it.
class Core {
 public:
  Core() : thread_([this] { loop(); }) {}
  ~Core() {
    {
      std::lock_guard lock(m_);
      closed_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void schedule(karx::Task<> task) {
    std::lock_guard lock(m_);  // notify under it: a late notify cannot outlive the core
    queue_.push_back(std::move(task));
    cv_.notify_one();
  }

  std::thread::id thread_id() const { return thread_.get_id(); }
  int runs() const { return runs_.load(); }  // polls this core's thread made

 private:
  void loop() {
    for (;;) {
      karx::Task<> task;
      {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
        if (closed_) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      runs_.fetch_add(1);  // before run(): counted before the task can complete
      task.run();
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<karx::Task<>> queue_;
  bool closed_ = false;
  std::atomic<int> runs_{0};
  std::thread thread_;  // last: starts once the members above exist
};
static_assert(karx::Executor<Core>);

// Yields `rounds` times (rounds + 1 polls); returns how many polls ran off the home thread.
karx::Async<int> pinned(const Core& home, int rounds) {
  int strays = 0;
  for (int i = 0;; ++i) {
    if (std::this_thread::get_id() != home.thread_id()) ++strays;
    if (i == rounds) co_return strays;
    co_await karx::yield_now();  // under this executor, a plain wake: back to the home queue
  }
}

// Awaits a task of another core: that core's thread wakes us, and we resume on ours.
// Returns {our polls off home, the other task's}.
karx::Async<std::pair<int, int>> awaits_other(const Core& home, karx::JoinHandle<int> other) {
  int strays = std::this_thread::get_id() != home.thread_id();
  int others = *co_await other;
  strays += std::this_thread::get_id() != home.thread_id();
  co_return std::pair(strays, others);
}

int main() {
  std::vector<std::unique_ptr<Core>> cores;
  for (int i = 0; i < 4; ++i) cores.push_back(std::make_unique<Core>());

  // Core 0 gets a backlog: 4 tasks of 100 yields each. Core 1's task is woken from core 2.
  // Core 3 gets nothing: with stealing it would take some of core 0's work; here it may not.
  std::vector<karx::JoinHandle<int>> busy;
  for (int i = 0; i < 4; ++i) busy.push_back(karx::spawn_on(*cores[0], pinned(*cores[0], 100)));
  auto other = karx::spawn_on(*cores[2], pinned(*cores[2], 50));
  auto waiter = karx::spawn_on(*cores[1], awaits_other(*cores[1], std::move(other)));

  int busy_strays = 0;
  for (auto& h : busy) busy_strays += *karx::block_on(std::move(h));
  auto [waiter_strays, other_strays] = *karx::block_on(std::move(waiter));

  std::printf("polls off their home thread: core 0's tasks %d, core 2's %d, core 1's (woken from core 2) %d\n",
              busy_strays, other_strays, waiter_strays);
  std::printf("core 0 ran %d polls; core 3, idle, ran %d\n", cores[0]->runs(), cores[3]->runs());
}
