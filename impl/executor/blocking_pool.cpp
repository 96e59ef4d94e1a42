// The blocking pool (impl/executor/blocking_pool.cppm).
module;
#include <pthread.h>

#include <deque>
#include <mutex>
#include <new>
#include <thread>
#include <utility>
module karx.executor;
import karx.task;
import karx.machinery;
import :scheduler;

namespace karx::detail {

void core_schedule_blocking(RuntimeCore* core, Task<> task) noexcept {
  // As in core_schedule: the task may be freed before we are done with the core.
  core_task_created(core);
  core->blocking_pool.schedule(std::move(task).into_raw());
  core_task_freed(core);
}

bool BlockingPool::reserve_thread() noexcept {
  if (!budget_.try_take()) return false;
  ++threads_;
  return true;
}

// The caller reserved the thread (reserve_thread) and does not hold the lock.
void BlockingPool::start_thread() noexcept {
  try {
    std::thread([this] { thread_main(); }).detach();
    budget_.started();
  } catch (...) {
    std::lock_guard lock(mutex_);
    --threads_;
    budget_.start_failed();
    core_.ask_for_retry();  // under the lock: the retry sees the pool as it now is
    exited_.notify_all();
  }
}

void BlockingPool::schedule(RawTask task) noexcept {
  bool start = false;
  {
    std::unique_lock lock(mutex_);
    if (closed_) {
      // Dropped without the lock: its cancel notifies its awaiter, whose schedule may come
      // back here.
      lock.unlock();
      drop_task(task);
      return;
    }
    try {
      queue_.push_back(task);
    } catch (const std::bad_alloc&) {
      die_out_of_memory("growing the blocking pool's queue");
    }
    if (idle_ > 0) {
      work_.notify_one();
    } else if (reserve_thread()) {
      start = true;
    } else if (threads_ == 0) {
      // At the thread cap with no pool thread to take it when done: the workers hold the
      // budget. The monitor retries, and asks an idle spare worker to make room.
      core_.ask_for_retry();
    }
    // Otherwise at the thread cap: a busy pool thread takes it when it is done.
  }
  if (start) start_thread();
}

bool BlockingPool::retry_start() noexcept {
  bool start = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_ || queue_.empty() || idle_ > 0) return true;
    if (reserve_thread())
      start = true;
    else if (threads_ == 0)
      return false;  // no pool thread will come by: the workers hold the budget
  }
  if (start) start_thread();
  return true;
}

void BlockingPool::release_idle_thread() noexcept {
  std::lock_guard lock(mutex_);
  if (idle_ > leave_) {
    ++leave_;
    work_.notify_all();  // one idle thread takes the request; the others wait on
  }
}

void BlockingPool::thread_main() noexcept {
  pthread_setname_np(pthread_self(), "karx-blocking");
  current_runtime = core_.runtime;  // until the thread leaves the pool, which ~Runtime waits for
  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty()) {
      if (closed_) break;
      ++idle_;
      core_.idle.pool_thread_idle();
      // wait_until a saturated deadline: wait_for would add the timeout to now() and overflow
      // for a timeout of nanoseconds::max() (which means "never").
      const bool got = work_.wait_until(lock, saturating_deadline(core_.options.idle_thread_timeout),
                                        [&] { return closed_ || !queue_.empty() || leave_ > 0; });
      --idle_;
      core_.idle.pool_thread_busy();
      if (!got) break;  // idle too long: exit
      if (queue_.empty() && leave_ > 0) {
        --leave_;  // make room under the thread cap for a worker
        break;
      }
      continue;
    }
    RawTask task = queue_.front();
    queue_.pop_front();
    lock.unlock();
    Task<>::from_raw(task).run();
    lock.lock();
  }
  current_runtime = nullptr;
  --threads_;
  budget_.exited();
  // The last touch of the core: wait_for_threads waits for this under the same lock.
  exited_.notify_all();
}

void BlockingPool::close() noexcept {
  std::lock_guard lock(mutex_);
  closed_ = true;
  work_.notify_all();
}

void BlockingPool::wait_for_threads() noexcept {
  std::unique_lock lock(mutex_);
  exited_.wait(lock, [&] { return threads_ == 0; });
}

bool BlockingPool::has_threads() noexcept {
  std::lock_guard lock(mutex_);
  return threads_ != 0;
}

std::deque<RawTask> BlockingPool::take_queued() noexcept {
  std::deque<RawTask> queued;
  std::lock_guard lock(mutex_);
  queued.swap(queue_);
  return queued;
}

}  // namespace karx::detail
