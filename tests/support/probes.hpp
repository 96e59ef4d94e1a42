// Test probes: futures, outputs, schedule functions and tags that count what happens to them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

import karx;

namespace probes {

// How long a test waits for another thread before it calls it a hang. Generous: only reached
// if the library deadlocks or loses a task.
inline constexpr std::chrono::seconds kTimeout{60};

// Counts the destruction of the one live object that owns it (moves hand the duty on).
class DropCounter {
 public:
  explicit DropCounter(std::atomic<int>& counter) noexcept : counter_(&counter) {}
  DropCounter(DropCounter&& o) noexcept : counter_(std::exchange(o.counter_, nullptr)) {}
  DropCounter& operator=(DropCounter&&) = delete;
  ~DropCounter() {
    if (counter_ != nullptr) counter_->fetch_add(1, std::memory_order_relaxed);
  }

 private:
  std::atomic<int>* counter_;
};

// What tests count and assert on after every step.
struct Counts {
  std::atomic<int> polls{0};
  std::atomic<int> future_drops{0};
  std::atomic<int> output_drops{0};
  std::atomic<int> schedules{0};
  std::atomic<int> schedule_drops{0};
  std::atomic<int> tag_drops{0};
};

// The output of a probe future: counts its own destruction.
struct Output {
  int value;
  DropCounter drop;
};

// A future that is pending `pending_polls` times, then ready with an Output{value}.
// With `throw_on_ready`, it throws std::runtime_error("probe failure") instead of completing.
// Each poll stores the context's waker in `last_waker` (if given) so a test can wake it.
struct ProbeFuture {
  Counts* counts;
  int pending_polls = 0;
  int value = 0;
  bool throw_on_ready = false;
  karx::Waker* last_waker = nullptr;
  DropCounter drop{counts->future_drops};

  karx::Poll<Output> poll(karx::Context& cx) {
    counts->polls.fetch_add(1, std::memory_order_relaxed);
    if (last_waker != nullptr) *last_waker = cx.waker();
    if (pending_polls > 0) {
      --pending_polls;
      return karx::pending;
    }
    if (throw_on_ready) throw std::runtime_error("probe failure");
    return karx::Poll<Output>::ready(Output{value, DropCounter(counts->output_drops)});
  }
};

// A probe future that is ready at once with Output{7}.
inline ProbeFuture ready_future(Counts& c) { return ProbeFuture{&c, 0, 7}; }

// The exception the test futures throw; `id` tells which one arrived where.
struct Boom : std::runtime_error {
  explicit Boom(int i) : std::runtime_error("boom " + std::to_string(i)), id(i) {}
  int id;
};

// A schedule function that counts calls and pushes the Task onto `queue` (if given; tasks
// with a tag are dropped, i.e. canceled, instead).
struct ProbeSchedule {
  Counts* counts;
  std::deque<karx::Task<>>* queue = nullptr;
  DropCounter drop{counts->schedule_drops};

  template <class Tag>
  void operator()(karx::Task<Tag> task) const {
    counts->schedules.fetch_add(1, std::memory_order_relaxed);
    if constexpr (std::is_void_v<Tag>) {
      if (queue != nullptr) queue->push_back(std::move(task));
    }
  }
};

// A tag that counts its destruction.
struct ProbeTag {
  int id;
  DropCounter drop;
};

// Destroys what `x` owns now, as Rust's drop(x) (the moved-from shell stays behind, empty).
template <class T>
void drop_now(T& x) {
  T dropped = std::move(x);
}

// Polls `f` once with a waker that does nothing.
template <class F>
auto poll_once(F& f) {
  karx::Waker w = karx::noop_waker();
  karx::Context cx(w);
  return f.poll(cx);
}

// Polls `f` once with `waker`.
template <class F>
auto poll_with(F& f, const karx::Waker& waker) {
  karx::Context cx(waker);
  return f.poll(cx);
}

// Runs tasks from `queue` until it is empty; returns how many ran.
inline int drain(std::deque<karx::Task<>>& queue) {
  int n = 0;
  while (!queue.empty()) {
    karx::Task<> t = std::move(queue.front());
    queue.pop_front();
    t.run();
    ++n;
  }
  return n;
}

}  // namespace probes
