// The blocking pool: threads that run spawn_blocking closures (and every task scheduled with
// ScheduleOnBlockingPool), apart from the processors. They never hold a slot, so a closure may
// block as long as it likes without taking a processor from the runtime's tasks. A thread is
// started when a closure is queued and no pool thread is idle (within the thread budget), and
// exits after idle_thread_timeout without work, or when a worker needs its share of the budget.
//
// All of its state is under one mutex: a closure is expected to run for long, so the queue's
// lock is not what bounds the pool.
module;
#include <condition_variable>
#include <deque>
#include <mutex>
export module karx.executor:blocking_pool;
import :core;
import :thread_budget;

namespace karx::detail {

class BlockingPool {
 public:
  inline BlockingPool(RuntimeCore& core, ThreadBudget& budget) noexcept : core_(core), budget_(budget) {}
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Queues a task for a pool thread: an idle one takes it, or a new one if the budget allows;
  // at the cap, a busy one takes it when done, and with no pool thread at all the monitor is
  // asked to make room. Once closed, the task is dropped (its future destroyed).
  void schedule(RawTask task) noexcept;

  // The monitor's retry (thread_budget.cppm): tasks wait and no pool thread is idle. Starts
  // one if the budget allows. False when the cap keeps the pool empty while tasks wait: the
  // caller makes room (an idle spare worker leaves) and retries.
  bool retry_start() noexcept;
  // At the cap, a worker needs a thread: an idle pool thread leaves, if there is one.
  void release_idle_thread() noexcept;

  // Shutdown, in order: close (new tasks are dropped, idle threads leave), then wait until
  // every pool thread has returned (after its current task: their last touch of the core),
  // then take what is still queued, to drop it.
  void close() noexcept;
  void wait_for_threads() noexcept;
  bool has_threads() noexcept;  // some pool thread has not returned yet
  std::deque<RawTask> take_queued() noexcept;

 private:
  // Under mutex_: reserves a thread if the budget allows (the caller then starts it unlocked).
  bool reserve_thread() noexcept;
  void start_thread() noexcept;
  void thread_main() noexcept;

  RuntimeCore& core_;
  ThreadBudget& budget_;
  std::mutex mutex_;
  std::condition_variable work_;  // a task queued, the pool closed, or a thread asked to leave
  std::condition_variable exited_;
  std::deque<RawTask> queue_;
  bool closed_ = false;
  unsigned idle_ = 0;     // threads waiting for work
  unsigned threads_ = 0;  // threads started (or starting) and not yet returned
  unsigned leave_ = 0;    // idle threads asked to leave (the cap keeps a worker out)
};

}  // namespace karx::detail
