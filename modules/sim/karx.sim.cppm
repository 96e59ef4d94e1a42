// karx::sim::Simulation: a deterministic, single-threaded executor for tests. Ready tasks run
// in an order drawn from a seeded generator, and time is virtual: sleep_for inside it takes no
// real time, and the clock moves only when no task is ready. The same seed replays the same
// interleaving, so a test can search many seeds for an ordering bug and replay the one that
// failed (docs/examples/sim_search.cpp).
module;
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>
export module karx.sim;
import karx.task;
import karx.time;

export namespace karx::sim {

class Simulation {
 public:
  // The generator's seed decides every choice the simulation makes.
  explicit Simulation(std::uint64_t seed);
  // Destroys the futures of the tasks still queued or waiting on a virtual timer (their
  // handles yield "canceled"). A task waiting on a waker held elsewhere is not reachable from
  // here: wake it first (or keep the simulation alive); its waker must not be woken after.
  ~Simulation();
  Simulation(const Simulation&) = delete;
  Simulation& operator=(const Simulation&) = delete;

  std::uint64_t seed() const noexcept;
  // Virtual time: starts at start_time() and moves only when no task is ready, to the next
  // timer's deadline.
  std::chrono::steady_clock::time_point now() const noexcept;
  static std::chrono::steady_clock::time_point start_time() noexcept;
  // Polls run so far.
  std::size_t polls() const noexcept;

  // karx::Executor. May be called from any thread (a lock guards the queue), but only wakes
  // made by the simulation's own tasks and timers are deterministic.
  void schedule(Task<> task);

  template <Future F>
    requires std::move_constructible<F>  // and so a non-throwing destructor
  JoinHandle<output_of<F>> spawn(F future) {
    return spawn_on(*this, std::move(future));
  }

  // One step: runs a ready task picked by the generator or, with none ready, advances virtual
  // time to the earliest timer and fires it (and every timer due at that time). False when
  // there is nothing left to do: no task ready and no timer pending.
  bool step();
  // Steps until there is nothing left to do; returns the number of steps taken.
  std::size_t run();

  // Spawns `future` and steps until it completes; returns its output (or rethrows its
  // exception). Throws std::logic_error when it can never complete: it is pending while no
  // task is ready and no timer pending (a deadlock; the message gives the seed to replay).
  template <Future F>
    requires std::move_constructible<F>  // and so a non-throwing destructor
  output_of<F> block_on(F future) {
    auto handle = spawn(std::move(future));
    Waker waker = noop_waker();
    Context cx(waker);
    for (;;) {
      auto p = handle.poll(cx);
      if (p.is_ready()) {
        auto out = std::move(p).value();
        if (!out) throw std::logic_error("karx::sim::Simulation::block_on: the task was canceled");
        if constexpr (std::is_void_v<output_of<F>>)
          return;
        else
          return std::move(*out);
      }
      if (!step()) throw_deadlock();
    }
  }

 private:
  [[noreturn]] void throw_deadlock() const;

  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace karx::sim
