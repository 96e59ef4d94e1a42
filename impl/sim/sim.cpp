// The simulation executor's machinery (modules/sim/karx.sim.cppm).
module;
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
module karx.sim;
import karx.task;
import karx.time;

namespace karx::sim {

using Clock = std::chrono::steady_clock;

struct Simulation::State final : detail::VirtualClock {
  std::uint64_t seed;
  std::uint64_t rng_state;
  Clock::time_point virtual_now = Simulation::start_time();
  std::size_t steps = 0;

  std::mutex mutex;  // guards `ready` (schedule may come from anywhere)
  std::vector<Task<>> ready;

  struct Timer {
    Clock::time_point deadline;
    std::uint64_t order;  // registration order: equal deadlines fire first-come first
    Waker waker;
  };
  // A min-heap by (deadline, order); touched only by the simulation's own thread.
  std::vector<Timer> timers;
  std::uint64_t timer_order = 0;

  explicit State(std::uint64_t s) : seed(s), rng_state(s) {}

  // splitmix64: a full-period generator whose every output depends on the seed.
  std::uint64_t next() noexcept {
    std::uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  static bool later(const Timer& a, const Timer& b) noexcept {
    return a.deadline != b.deadline ? a.deadline > b.deadline : a.order > b.order;
  }

  Clock::time_point now() const noexcept override { return virtual_now; }
  void add_timer(Clock::time_point deadline, const Waker& waker) override {
    timers.push_back(Timer{deadline, timer_order++, waker});
    std::push_heap(timers.begin(), timers.end(), &later);
  }
};

namespace {
// Sleeps created and polled while a task runs use the simulation's clock.
class ClockScope {
 public:
  explicit ClockScope(detail::VirtualClock* clock) noexcept : previous_(detail::virtual_clock()) {
    detail::set_virtual_clock(clock);
  }
  ~ClockScope() { detail::set_virtual_clock(previous_); }
  ClockScope(const ClockScope&) = delete;
  ClockScope& operator=(const ClockScope&) = delete;

 private:
  detail::VirtualClock* previous_;
};
}  // namespace

Simulation::Simulation(std::uint64_t seed) : state_(std::make_unique<State>(seed)) {}

Simulation::~Simulation() {
  // Tasks waiting on a virtual timer are woken (into the queue), and every queued Task is
  // dropped, which destroys its future (its handle yields "canceled"). Dropping one may wake
  // others (an awaiter): repeat until nothing is left.
  for (;;) {
    std::vector<State::Timer> timers;
    timers.swap(state_->timers);
    for (State::Timer& t : timers) std::move(t.waker).wake_and_release();
    std::vector<Task<>> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->ready);
    }
    if (queued.empty() && timers.empty()) break;
  }
}

std::uint64_t Simulation::seed() const noexcept { return state_->seed; }
Clock::time_point Simulation::now() const noexcept { return state_->virtual_now; }
Clock::time_point Simulation::start_time() noexcept { return Clock::time_point(std::chrono::hours(1)); }
std::size_t Simulation::polls() const noexcept { return state_->steps; }

void Simulation::schedule(Task<> task) {
  std::lock_guard lock(state_->mutex);
  state_->ready.push_back(std::move(task));
}

bool Simulation::step() {
  State& s = *state_;
  Task<> task;
  {
    std::lock_guard lock(s.mutex);
    if (!s.ready.empty()) {
      const std::size_t pick = static_cast<std::size_t>(s.next() % s.ready.size());
      std::swap(s.ready[pick], s.ready.back());
      task = std::move(s.ready.back());
      s.ready.pop_back();
    }
  }
  if (task) {
    ++s.steps;
    ClockScope scope(&s);
    task.run();
    return true;
  }
  if (s.timers.empty()) return false;
  // Nothing ready: time jumps to the earliest deadline; every timer due then fires, in order.
  s.virtual_now = std::max(s.virtual_now, s.timers.front().deadline);
  while (!s.timers.empty() && s.timers.front().deadline <= s.virtual_now) {
    std::pop_heap(s.timers.begin(), s.timers.end(), &State::later);
    Waker waker = std::move(s.timers.back().waker);
    s.timers.pop_back();
    std::move(waker).wake_and_release();
  }
  return true;
}

std::size_t Simulation::run() {
  std::size_t n = 0;
  while (step()) ++n;
  return n;
}

void Simulation::throw_deadlock() const {
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(state_->virtual_now - start_time());
  throw std::logic_error("karx::sim::Simulation::block_on: deadlock with seed " + std::to_string(state_->seed) +
                         " at virtual time +" + std::to_string(elapsed.count()) +
                         " ms: the future is pending, no task is ready and no timer is pending");
}

}  // namespace karx::sim
