// The runtime's machinery: workers, processor slots, the idle list, the monitor, the
// blocking pool. Shared by impl/executor/*.cpp; not part of any interface.
//
// How it works (the long form is docs/design.md, "The runtime"):
//
//  - A *worker* is an OS thread with a local run queue (RunQueue, 256 slots, stealable), a
//    `runnext` slot (stealable too) and a parker. It runs tasks only while it holds one of
//    the `processors` *slots* (Go's P). Spawns and wakes on a worker go to its runnext (the
//    previous runnext moves to the local queue, which spills half to the injector when full);
//    everything else goes to the injector.
//  - A worker out of work *searches* (at most half the slots search at once): the injector,
//    then stealing half of another worker's queue or its runnext. Still nothing: it gives up
//    its slot, joins the idle list and parks. Whoever makes work available calls wakep(),
//    which hands a free slot to an idle (or new) worker unless one is already searching.
//  - The *monitor* (Go's sysmon) watches each worker's poll word: a poll that has run longer
//    than blocking_threshold gets its slot revoked (one CAS) and the slot goes to another
//    worker. When the blocked poll returns, its worker tries to take a free slot back;
//    failing that it moves its queued tasks to the injector and becomes a spare.
//  - spawn_blocking runs closures on a separate pool of threads that never hold a slot.
module;
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
module karx.executor:scheduler;
import karx.task;
import karx.machinery;
import :options;
import :core;

namespace karx::detail {

// Tasks travel through the queues as raw pointers (Task<>::into_raw / from_raw).
using RawTask = void*;

// The poll word of a worker: (seq << 1) | REVOKED. `seq` is odd while a poll runs. The worker
// stores seq+1 (relaxed) when a poll starts and adds 1 to seq with an RMW when it ends, which
// also tells it whether the monitor (or karx::blocking) revoked its slot meanwhile; the
// revoker sets REVOKED with a CAS that succeeds only while that same poll is still running.
inline constexpr std::uint64_t kRevoked = 1;
inline constexpr std::uint64_t kSeqStep = 2;
inline bool in_poll(std::uint64_t word) noexcept { return ((word >> 1) & 1) != 0; }

struct Worker {
  RuntimeCore* core = nullptr;
  unsigned index = 0;
  std::thread thread;
  Parker parker;
  RunQueue<RawTask, 256> local;
  std::atomic<RawTask> runnext{nullptr};
  std::atomic<std::uint64_t> poll_word{0};
  // Set (under the idle lock) by whoever hands this idle worker a slot, before unparking it.
  std::atomic<bool> given_slot{false};
  // The thread returned (spare timeout or shutdown); the struct may get a new thread.
  bool exited = false;  // guarded by the idle lock

  // Owner-only state.
  bool searching = false;
  std::uint64_t tick = 0;
  std::uint32_t rng = 0;

  // Counters written by the owner only, summed by metrics(): relaxed load+store, no RMW.
  std::atomic<std::uint64_t> polled{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::uint64_t> steals{0};

  // The monitor's view (monitor thread only).
  std::uint64_t seen_word = 0;
  std::chrono::steady_clock::time_point seen_at{};

  void bump(std::atomic<std::uint64_t>& counter) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

class RuntimeCore {
 public:
  explicit RuntimeCore(const RuntimeOptions& options, unsigned processors);

  RuntimeOptions options;
  unsigned processors;
  std::chrono::milliseconds schedtrace{0};  // KARX_SCHEDTRACE

  std::atomic<std::size_t> refs{1};
  std::atomic<bool> shutting_down{false};

  Injector<RawTask> injector;

  // The registry of workers: grows up to max_threads entries, freed with the core.
  std::unique_ptr<std::unique_ptr<Worker>[]> workers;
  std::atomic<unsigned> worker_count{0};

  std::atomic<int> free_slots;    // slots no worker holds
  std::atomic<int> searching{0};  // workers searching for work (they hold a slot)

  std::mutex idle_mutex;
  std::vector<Worker*> idle;  // parked workers without a slot, most recent last
  std::atomic<unsigned> threads_alive{0};
  std::atomic<unsigned> idle_threads{0};
  std::atomic<std::uint64_t> threads_started{0};
  std::atomic<std::uint64_t> handoffs{0};
  std::atomic<std::uint64_t> outside_spawned{0};
  std::atomic<std::uint64_t> outside_completed{0};
  std::atomic<std::uint64_t> blocking_spawned{0};

  // Live tasks (see LiveNode): a circular list around `live`.
  std::mutex live_mutex;
  LiveNode live;

  // The monitor.
  std::thread monitor;
  Parker monitor_parker;
  std::atomic<bool> monitor_idle{false};

  // The blocking pool.
  std::mutex blocking_mutex;
  std::condition_variable blocking_cv;
  std::deque<RawTask> blocking_queue;
  bool blocking_closed = false;
  unsigned blocking_idle = 0;
  unsigned blocking_threads = 0;
  std::condition_variable blocking_exited;

  // --- Functions (impl/executor/*.cpp) ---
  void wakep() noexcept;         // hand a free slot to an idle or new worker if work may be waiting
  void wake_monitor() noexcept;  // after a slot was taken: the monitor must watch it
  bool work_visible() const noexcept;
  Worker* start_worker() noexcept;  // under idle_mutex; nullptr at the thread cap or on failure
  void worker_main(Worker* w) noexcept;
  void monitor_main() noexcept;
  void blocking_main() noexcept;
  void shutdown() noexcept;
  bool try_thread_budget() noexcept;  // reserve one thread of max_threads
  RuntimeMetrics metrics() const noexcept;
};

// The worker the current thread is (nullptr on other threads).
extern thread_local Worker* current_worker;
// Set by yield_now for the schedule call that follows on this thread.
extern thread_local bool yield_requested;

void run_task(Worker* w, RawTask task) noexcept;
void push_local(Worker* w, RawTask task) noexcept;
void drop_task(RawTask task) noexcept;

}  // namespace karx::detail
