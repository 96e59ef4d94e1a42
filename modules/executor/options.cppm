// RuntimeOptions and RuntimeMetrics.
module;
#include <chrono>
#include <cstdint>
export module karx.executor:options;

export namespace karx {

struct RuntimeOptions {
  // Processors: how many tasks run in parallel. 0: the KARX_PROCS environment variable if
  // set, else the number of hardware threads.
  unsigned processors = 0;
  // Hard cap on the OS threads the runtime starts (workers, spares and blocking threads).
  unsigned max_threads = 10000;
  // A poll running longer than this counts as blocked: its processor goes to another thread.
  std::chrono::nanoseconds blocking_threshold = std::chrono::milliseconds(10);
  // Spare threads (and idle blocking threads) exit after this long without work.
  std::chrono::nanoseconds idle_thread_timeout = std::chrono::seconds(10);
};

// Counters (since the runtime started) and gauges (now). Read with Runtime::metrics().
struct RuntimeMetrics {
  std::uint64_t processors = 0;             // gauge: processors (parallelism)
  std::uint64_t threads = 0;                // gauge: OS threads alive: workers, spares, blocking, monitor
  std::uint64_t idle_threads = 0;           // gauge: threads parked without work
  std::uint64_t tasks_spawned = 0;          // counter
  std::uint64_t tasks_polled = 0;           // counter: polls run by workers
  std::uint64_t tasks_completed = 0;        // counter: futures that returned ready (or threw)
  std::uint64_t steals = 0;                 // counter: successful steals (batches)
  std::uint64_t handoffs = 0;               // counter: processors taken from a blocked worker
  std::uint64_t blocked_handoffs = 0;       // counter: ... whose thread was blocked in the kernel
  std::uint64_t busy_handoffs = 0;          // counter: ... whose poll computed past the threshold
  std::uint64_t injector_depth = 0;         // gauge: tasks in the global queue
  std::uint64_t threads_started = 0;        // counter: OS threads ever started
  std::uint64_t blocking_tasks = 0;         // counter: spawn_blocking calls
  std::uint64_t thread_start_failures = 0;  // counter: OS threads that could not be started
};

}  // namespace karx
