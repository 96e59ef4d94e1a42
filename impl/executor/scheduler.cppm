// The runtime's machinery: workers and the state they share. Shared by impl/executor/*.cpp;
// not part of any interface. Its parts, each a type of its own with both halves of its
// protocols in one file: the slots and searching counts (slots.cppm), the monitor
// (monitor.cppm), the blocking pool (blocking_pool.cppm), the thread budget
// (thread_budget.cppm), a worker's poll word (machinery/poll_word.cppm); the idle list and
// parking are idle.cpp's.
//
// How it works (the long form is docs/design.md, "The runtime"):
//
//  - A *worker* is an OS thread with a local run queue (RunQueue, 256 slots, stealable), a
//    `runnext` slot (stealable too) and a parker. It runs tasks only while it holds one of
//    the `processors` *slots* (Go's P). Spawns and wakes on a worker go to its runnext (the
//    previous runnext moves to the local queue, which spills half to the injector when full);
//    everything else goes to the injector. The worker runs runnext, then the newest task of
//    its queue (depth-first), and every 61st tick the oldest (worker.cpp: kOldestEvery).
//  - A worker out of work *searches* (at most half the slots search at once): the injector,
//    then stealing half of another worker's queue or its runnext. Still nothing: it gives up
//    its slot, joins the idle list and parks. Whoever makes work available calls wakep(),
//    which hands a free slot to an idle (or new) worker unless one is already searching.
//  - The *monitor* (Go's sysmon) watches each worker's polls: a poll blocked in the kernel,
//    or one that has run longer than blocking_threshold, gets its slot revoked and the slot
//    goes to another worker. When the blocked poll returns, its worker tries to take a free
//    slot back; failing that it moves its queued tasks to the injector and becomes a spare.
//  - spawn_blocking runs closures on a separate pool of threads that never hold a slot
//    (blocking_pool.cppm); every thread counts against the budget (thread_budget.cppm).
module;
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
module karx.executor:scheduler;
import karx.task;
import karx.machinery;
import karx.netpoll;
import :options;
import :core;
import :thread_budget;
import :blocking_pool;
import :slots;
import :monitor;
import :idle_list;

namespace karx::detail {

struct Worker {
  RuntimeCore* core = nullptr;
  unsigned index = 0;
  std::thread thread;
  Parker parker;
  RunQueue<RawTask, 256> local;
  std::atomic<RawTask> runnext{nullptr};
  // Takes runnext's task (any thread). Looked at before it is taken: the exchange is a locked
  // RMW, and runnext is often empty (after a yield, or when the last spawn ran already). Only
  // the owner fills it, and others only empty it, so an empty slot seen here cannot be missing
  // a task this call should have taken.
  inline RawTask take_runnext() noexcept {
    if (runnext.load(std::memory_order_relaxed) == nullptr) return nullptr;
    return runnext.exchange(nullptr, std::memory_order_acq_rel);
  }
  PollWord poll;  // its polls, watched by the monitor (machinery/poll_word.cppm)
  // Set while the worker waits for a wake inside block_on (help_while_blocked): its poll is
  // waiting by design and keeps the processor, looking for work every millisecond. The
  // monitor does not revoke such a poll: with the wait overslept on a loaded machine it took
  // the poll for a blocked one, and at the thread cap nobody was left to run what it waited for.
  std::atomic<bool> waiting_in_block_on{false};
  // Set (under the idle lock) by whoever hands this idle worker a slot, before unparking it.
  std::atomic<bool> given_slot{false};
  // Set (under the idle lock, after taking it off the idle list) by the monitor when the
  // thread cap keeps blocking-pool work waiting: this idle spare exits to make room.
  std::atomic<bool> exit_requested{false};
  // The thread returned (spare timeout or shutdown) or the guest left; the struct may get a
  // new thread or guest.
  bool exited = false;  // guarded by the idle lock

  // A guest (Runtime::block_on's caller) rather than a thread the runtime started.
  bool guest = false;
  bool guest_holds_slot = false;  // owner-only

  // Owner-only state.
  bool searching = false;
  std::uint64_t tick = 0;
  bool pick_oldest = false;  // a task yielded: the next pick from the queue is its oldest (worker.cpp)
  std::uint32_t rng = 0;

  // Counters written by the owner only, summed by metrics(): a load and a store, no RMW.
  std::atomic<std::uint64_t> polled{0};
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::uint64_t> steals{0};
  // Tasks of this core created minus freed on this worker's thread (see core_orphan).
  std::atomic<std::int64_t> task_balance{0};

  // The thread running this worker (a worker thread, or a guest while it is one): its CPU
  // clock and thread id, for the monitor to tell a blocked poll from a busy one. Stored by
  // that thread before its first poll; relaxed, the monitor reads them for a poll it sees.
  std::atomic<bool> has_thread_clock{false};
  std::atomic<clockid_t> thread_clock{};
  std::atomic<pid_t> thread_id{0};

  MonitorView monitor_view;  // the monitor thread's alone

  // release: metrics() reads completions before polls before spawns, with acquire (see there);
  // on x86 a release store is a plain store.
  inline void bump(std::atomic<std::uint64_t>& counter) noexcept {  // inline: not implicit in a module
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
};

class RuntimeCore {
 public:
  explicit RuntimeCore(const RuntimeOptions& options, unsigned processors);

  // Cache lines: the read-mostly fields first (every schedule call reads shutting_down); the
  // counters that threads outside the workers write on every spawn and wake on a line of their
  // own; the injector's head and tail on lines of their own; the slot counts on theirs. Packed
  // together, a thread spawning from outside made every worker miss on shutting_down once per
  // spawn.
  RuntimeOptions options;
  void* runtime = nullptr;                  // the Runtime object: what its threads report as Runtime::current()
  std::chrono::milliseconds schedtrace{0};  // KARX_SCHEDTRACE
  std::atomic<bool> shutting_down{false};

  // Tasks created minus freed on threads that are not this core's workers, plus kAlive
  // while the Runtime object exists (see core_orphan).
  static constexpr std::int64_t kAlive = std::int64_t{1} << 62;
  alignas(64) std::atomic<std::int64_t> foreign_balance{kAlive};
  std::atomic<std::uint64_t> outside_spawned{0};
  std::atomic<std::uint64_t> outside_completed{0};

  alignas(64) Injector<RawTask> injector;

  // The registry of workers: grows up to max_threads entries (additions under idle.lock()),
  // freed with the core; memory in proportion to the workers there are, not to the cap.
  GrowOnlyArray<Worker> workers;

  Slots slots;  // the processors, and who searches (slots.cppm)
  // Workers whose slot was revoked while their poll still runs. Their queued tasks have no
  // processor (a Go P would travel with them): while this is non-zero, searchers take from
  // those queues before the injector. A hint (relaxed); the queues' protocol moves the tasks.
  std::atomic<int> revoked_workers{0};

  alignas(64) IdleList idle;  // parked workers without a slot (idle_list.cppm); its lock guards the registry too
  // Threads inside Runtime::block_on as guests (under idle.lock()): shutdown waits until none
  // is left, for a guest touches the core until it has left (guest_leave).
  unsigned guests = 0;
  std::atomic<std::uint64_t> blocked_handoffs{0};  // the thread was blocked (or said it would be)
  std::atomic<std::uint64_t> busy_handoffs{0};     // a CPU-bound poll ran past the threshold
  // Workers whose slot was taken from a CPU-bound poll still running: each keeps a core busy
  // beside the processors, so the monitor takes no more than busy_handoff_cap at once.
  std::atomic<int> busy_revoked{0};
  int busy_handoff_cap = 1;
  std::atomic<std::uint64_t> blocking_spawned{0};
  // start_worker was refused by the thread cap (read by the monitor's retry, which then asks
  // an idle blocking-pool thread to make room).
  std::atomic<bool> worker_refused_at_cap{false};
  ThreadBudget budget;

  Monitor monitor{*this};  // monitor.cppm

  BlockingPool blocking_pool;

  // The netpoller (karx.net; netpoll.cpp has the protocol): made by the first socket opened on
  // this runtime, closed and released at the end of shutdown. Null while no socket was made.
  std::atomic<net::Poller*> netpoller{nullptr};
  std::mutex netpoller_mutex;  // its creation

  // --- Functions (impl/executor/*.cpp) ---
  // Hands a free slot to an idle or new worker if work may be waiting. wakep() is for work
  // published without a seq_cst operation (the injector); wakep_after_seq_cst() for work
  // published with a seq_cst RMW (runnext), which already orders it before our loads.
  void wakep() noexcept;
  void wakep_after_seq_cst() noexcept;
  bool work_visible() const noexcept;
  // Under idle.lock(); nullptr at the thread cap or on failure, with `retry` set: the caller
  // asks the monitor to retry once it has given its slot back.
  Worker* start_worker(bool& retry) noexcept;
  Worker* register_worker() noexcept;  // under idle.lock(): an exited struct or a new one
  void worker_main(Worker* w) noexcept;
  void shutdown() noexcept;
  // Shutdown's steps (runtime_core.cpp).
  void drop_queued_tasks() noexcept;
  bool wake_listed_tasks() noexcept;  // true if it found any of ours
  bool threads_still_running() noexcept;
  void ask_for_retry() noexcept { monitor.ask_for_retry(); }  // work waits for a thread
  void trim_idle_worker() noexcept;                           // at the cap: an idle spare worker exits
  RuntimeMetrics metrics() const noexcept;

  // The netpoller (netpoll.cpp). acquire_netpoller: this runtime's, made on first use, with a
  // reference for the caller (throws std::system_error if it cannot be made).
  net::Poller* acquire_netpoller();
  // A non-blocking poll, if sockets are registered: what it wakes is scheduled from here (on a
  // worker holding a slot, into its own queue). True if it handled any event.
  bool netpoll_ready_work() noexcept;
  // The monitor's poll when nobody has polled for kNetpollStale.
  void netpoll_if_stale() noexcept;
  // An idle thread (`who`: a worker, a guest or the monitor) sleeps in the netpoller instead
  // of on its futex if the netpoller exists and nobody else sleeps in it; `woken()` are the
  // conditions its wakers set before calling netpoll_wake(who). True if it took the role
  // (and has slept or found itself woken); false: park as usual. `give_up_at`: the sleep
  // ends then at the latest (a worker's idle timeout). While it sleeps it stands in for the
  // timer driver (netpoll.cpp, step 4c).
  template <class Woken>
  bool sleep_in_netpoller(
      const void* who, Woken woken,
      std::chrono::steady_clock::time_point give_up_at = std::chrono::steady_clock::time_point::max()) noexcept {
    net::Poller* p = netpoller.load(std::memory_order_acquire);
    if (p == nullptr || !p->become_sleeper(who)) return false;
    // Pairs with netpoll_wake's fence: either we see the waker's condition here, or it sees
    // us as the sleeper and interrupts the wait.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (woken())
      p->stop_sleeping();
    else
      netpoll_sleep(p, give_up_at);
    return true;
  }
  void netpoll_sleep(net::Poller* p, std::chrono::steady_clock::time_point give_up_at) noexcept;
  // The sleeper worker `w` takes a free slot (or finds one handed over); true if it holds one.
  bool take_slot_after_netpoll(Worker* w) noexcept;
  // After setting a wake condition of `who`: interrupts the netpoller if `who` sleeps in it.
  void netpoll_wake(const void* who) noexcept;
  void netpoll_wake_any() noexcept;  // whoever sleeps in it (shutdown)
  void netpoll_close() noexcept;     // the end of shutdown
  // Wakes a parked worker or guest, on its futex or in the netpoller.
  void unpark_worker(Worker* w) noexcept;
};

// Parking and waking (impl/executor/idle.cpp).
enum class Idle { got_slot, exit };
// The parking side of wakep's protocol, for workers and guests alike: stop searching, join
// the idle list, give up the slot (if held), then look for work once more. With
// `unless_shutting_down` it returns false, doing nothing, once the runtime shuts down.
bool join_idle_list(Worker* w, bool holds_slot, bool unless_shutting_down) noexcept;
bool leave_idle_list(Worker* w) noexcept;  // false: a wakep took it off, a slot is coming
void look_again_after_giving_up_slot(RuntimeCore& core) noexcept;
Idle park_idle(Worker* w, bool holds_slot) noexcept;  // until a slot, the idle timeout or shutdown

// The worker the current thread is (nullptr on other threads).
extern thread_local Worker* current_worker;
// yield_requested (set by yield_now and by a spent budget for the schedule call that follows
// on this thread) and the budget itself live in karx.task (impl/task/coop.cppm).

// The runtime's own queues run out of memory on a path that cannot report it (a schedule
// call, a wake): says so on stderr and aborts. Only the injector's overflow and the idle list
// allocate, and only beyond what they have held before (impl/executor/runtime_core.cpp).
[[noreturn]] void die_out_of_memory(const char* where) noexcept;

void run_task(Worker* w, RawTask task) noexcept;
// karx.net's hook finds a runtime's netpoller through these (netpoll.cpp).
void register_runtime_for_netpoll(RuntimeCore* core);
void unregister_runtime_for_netpoll(RuntimeCore* core) noexcept;
bool push_local(Worker* w, RawTask task) noexcept;       // into runnext; true if a previous one queued
void push_back_local(Worker* w, RawTask task) noexcept;  // to the back of the local queue
void core_submit_outside(RuntimeCore* core, Task<> task) noexcept;

}  // namespace karx::detail
