// The queue a schedule function pushes tasks to, and that schedule function.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>

#include "support/probes.hpp"

namespace probes {

// A queue of Tasks (async-task's tests' channel). Thread-safe: wakes may come from any thread.
template <class TaskType>
class TaskChannel {
 public:
  void push(TaskType task) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  std::size_t len() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }
  // The oldest queued task; an empty Task (and a test failure) if there is none.
  TaskType recv() {
    std::lock_guard lock(mu_);
    if (queue_.empty()) {
      ADD_FAILURE() << "nothing was scheduled";
      return TaskType{};
    }
    TaskType task = std::move(queue_.front());
    queue_.pop_front();
    return task;
  }

 private:
  mutable std::mutex mu_;
  std::deque<TaskType> queue_;
};

using Chan = TaskChannel<karx::Task<ProbeTag>>;

// Counts its calls and queues the Task in `chan` or, without one, drops it (which cancels it,
// as async-task's test schedule functions did); counts its own destruction.
struct Sched {
  Counts* counts;
  Chan* chan = nullptr;
  DropCounter drop{counts->schedule_drops};

  void operator()(karx::Task<ProbeTag> task) const {
    counts->schedules.fetch_add(1);
    if (chan != nullptr) chan->push(std::move(task));
  }
};

// Spawns `future` with a counting schedule function (queueing in `chan`, if given) and a
// counting tag.
template <class F>
auto spawn_counted(Counts& c, F future, Chan* chan = nullptr) {
  return karx::spawn(std::move(future), Sched{&c, chan}, ProbeTag{0, DropCounter(c.tag_drops)});
}

}  // namespace probes
