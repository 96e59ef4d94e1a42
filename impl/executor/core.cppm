// The runtime's entry points used by the templates in runtime.cppm. Everything here is
// internal (nothing is exported by name); the machinery behind it is impl/executor/*.cpp.
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>
export module karx.executor:core;
import karx.task;
import :options;

namespace karx::detail {

class RuntimeCore;

// Tasks travel through the runtime's queues as raw pointers (Task<>::into_raw / from_raw);
// dropping one cancels it (its future is destroyed, its handle yields "canceled").
using RawTask = void*;
void drop_task(RawTask task) noexcept;

// Lifetime: the core lives while the Runtime object does and while any of its tasks exists,
// so a waker that outlives the Runtime can still be woken safely (its task is then dropped).
// Tasks are counted without a shared reference count: a worker thread counts the tasks it
// creates and frees in its own counter (plain stores), other threads in one atomic counter;
// the Runtime's destructor adds the workers' counts up once their threads are joined
// (core_orphan), and from then on the last task freed deletes the core.
// `runtime` is the Runtime object that owns the core: its threads report it as
// Runtime::current().
RuntimeCore* core_create(const RuntimeOptions& options, void* runtime);  // throws std::invalid_argument
void core_shutdown(RuntimeCore* core) noexcept;
void core_orphan(RuntimeCore* core) noexcept;  // after core_shutdown: the Runtime is gone
void core_task_created(RuntimeCore* core) noexcept;
void core_task_freed(RuntimeCore* core) noexcept;
RuntimeMetrics core_metrics(const RuntimeCore* core) noexcept;

// The schedule functions: a task woken (or spawned) goes to a worker, or to the blocking pool.
void core_schedule(RuntimeCore* core, Task<> task) noexcept;
void core_schedule_blocking(RuntimeCore* core, Task<> task) noexcept;
// A new task's first schedule, by Runtime::spawn: as core_schedule, without keeping the core
// alive around the call (the caller's Runtime does).
void core_submit(RuntimeCore* core, Task<> task) noexcept;
// Runtime::spawn's first step: throws std::logic_error once the runtime is shutting down,
// else counts the new task for the core's lifetime (the TaskTicket the caller makes next is
// already counted, and gives the count back if the spawn fails). The metrics count a spawn
// once it has succeeded: core_submit, core_count_blocking_spawn.
void core_begin_spawn(RuntimeCore* core);
void core_count_blocking_spawn(RuntimeCore* core) noexcept;
void core_note_completed(RuntimeCore* core) noexcept;
// ScheduleOnRuntime::run_here: on one of the core's workers, takes `task` off the top of the
// worker's queue and runs it nested in the current poll (true if it ran).
bool core_run_here(RuntimeCore* core, RawTask task) noexcept;

// Every task of a runtime that has once returned Pending is *listed* until its future is
// destroyed, so that the runtime's destructor can reach idle tasks (waiting on a waker held
// elsewhere) and destroy their futures. A task that never returned Pending is always in a
// queue or being polled, where shutdown finds it anyway: most tasks finish in their first
// poll and are never listed. The listing is the task layer's (impl/task/listing.cppm): a bit
// in the slab page of the task's block, so a task carries no list node and no lock is shared
// by all the runtime's tasks. Whether a task is listed is a bit of its TaskTicket, which only
// the task itself writes, so a task that waits again does not list itself again.

// The Runtime (as void*: its type is defined later, in :runtime) whose tasks this thread runs:
// set for their lifetime on its workers and blocking-pool threads, and for the duration of
// Runtime::block_on on the calling thread (restored after, so nested block_ons unwind
// correctly); null elsewhere. Runtime::current() reads it. constinit and trivially
// destructible: one thread-pointer-relative load. Defined in impl/executor/runtime_core.cpp.
extern thread_local constinit void* current_runtime;

// Runtime::block_on's scope: the calling thread runs `runtime`'s tasks (or waits for one).
class CurrentRuntimeScope {
 public:
  inline explicit CurrentRuntimeScope(void* runtime) noexcept : outer_(current_runtime) { current_runtime = runtime; }
  CurrentRuntimeScope(const CurrentRuntimeScope&) = delete;
  CurrentRuntimeScope& operator=(const CurrentRuntimeScope&) = delete;
  inline ~CurrentRuntimeScope() { current_runtime = outer_; }

 private:
  void* outer_;
};

// On a worker thread inside a poll: gives up the processor before a call known to block
// (karx::blocking). Returns false elsewhere.
bool enter_blocking() noexcept;
// karx::block_on on a worker of a runtime, inside a poll, while its future is pending and
// `woken` is still 0: runs one task queued on this worker (or in the global queue) nested in
// the poll, or waits up to a millisecond for `woken`. The worker helps rather than sleeps, as
// oneTBB's wait does, so a task that block_ons needs no other thread (none may be left at the
// thread cap) and its processor keeps working. Returns false where it cannot help (not on a
// worker, not inside a poll, nested too deep, its slot handed off, shutting down): the caller
// then sleeps until woken.
bool help_while_blocked(std::atomic<std::uint32_t>& woken) noexcept;

// yield_now: the next schedule of the current task from this thread goes behind the tasks
// already queued, not next. It happens when the poll returns (a task woken while it runs is
// scheduled then), and the worker clears the request after every poll. Off the runtime's
// workers it does nothing: a yield under another executor is a plain wake.
void request_yield() noexcept;

// Runtime::block_on's calling thread runs tasks too, as a *guest* worker holding a slot (as
// oneTBB's master thread takes an arena slot in task_arena::execute, and Go's main goroutine
// runs on a P): the root task and what it spawns run on the caller without waking another
// thread. guest_enter returns nullptr when the thread cannot join (it is a worker already,
// no slot is free, the runtime is shutting down): block_on then waits as karx::block_on does.
struct Worker;
Worker* guest_enter(RuntimeCore* core) noexcept;
// Runs tasks until `done` is set (by a waker that also calls guest_wake).
void guest_run(Worker* guest, const std::atomic<bool>& done) noexcept;
void guest_wake(Worker* guest) noexcept;
// Gives the slot back (queued tasks go to the injector) and stops being a worker.
void guest_leave(Worker* guest) noexcept;

// A task's share in the core's lifetime (one pointer): counted from the task's creation to
// the destruction of its schedule function, when the task's block is freed. Bit 0 of the word
// says whether the task is listed (the core is at least 8-byte aligned). Only the
// task itself writes the bit (its polls and its future's destruction, which the task's state
// orders), while schedule calls on other threads read the pointer: relaxed atomics make that
// well-defined at the cost of a plain load or store, and the pointer bits never change.
class TaskTicket {
 public:
  struct Counted {};  // core_begin_spawn counted the task already
  inline TaskTicket(RuntimeCore* core, Counted) noexcept : word_(reinterpret_cast<std::uintptr_t>(core)) {}
  // Moved only while the task is built, by the thread that owns both: a load and a store, not
  // an exchange (which is a locked RMW, two of them per spawn).
  inline TaskTicket(TaskTicket&& o) noexcept : word_(o.word_.load(std::memory_order_relaxed)) {
    o.word_.store(0, std::memory_order_relaxed);
  }
  TaskTicket(const TaskTicket&) = delete;
  TaskTicket& operator=(const TaskTicket&) = delete;
  TaskTicket& operator=(TaskTicket&&) = delete;
  inline ~TaskTicket() {
    if (RuntimeCore* core = get()) core_task_freed(core);
  }
  inline RuntimeCore* get() const noexcept {
    return reinterpret_cast<RuntimeCore*>(word_.load(std::memory_order_relaxed) & ~kListed);
  }
  inline bool listed() const noexcept { return (word_.load(std::memory_order_relaxed) & kListed) != 0; }
  inline void set_listed(bool on) noexcept {
    const std::uintptr_t w = word_.load(std::memory_order_relaxed);
    word_.store(on ? w | kListed : w & ~kListed, std::memory_order_relaxed);
  }

 private:
  static constexpr std::uintptr_t kListed = 1;
  std::atomic<std::uintptr_t> word_;
};

// The schedule functions. Neither touches its own state once it has handed the Task over
// (the core pointer is read first), and core_schedule keeps the core alive itself where it
// must, so the task layer can skip the reference it otherwise holds around a stateful
// schedule call (two RMWs per wake).
//
// ScheduleOnRuntime also tracks what the runtime needs per task, through the task layer's
// hooks (impl/task/cell.cppm): the listing and the completion count. It is the one poll
// layer: the runtime does not wrap the user's future, so a spawned Async is polled directly
// and can be built in its own frame's block (impl/task/frame_block.cppm: kCellRoom bytes).
struct ScheduleOnRuntime {
  using karx_no_keep_alive = void;
  using karx_task_hooks = void;
  TaskTicket core;

  inline void operator()(Task<> task) const noexcept { core_schedule(core.get(), std::move(task)); }
  // A handle is about to wait for this task, queued and not started: run it here if it is
  // on top of this thread's worker (worker.cpp: core_run_here).
  inline bool run_here(RawTask task) const noexcept { return core_run_here(core.get(), task); }

  // Listed before the poll returns: until then no other thread can run or drop the task.
  inline void on_poll_pending(TaskBlock block) noexcept {
    if (!core.listed()) {
      list_task_block(block);
      core.set_listed(true);
    }
  }
  // A task is unlisted only once its future is gone, so the Runtime's destructor, which
  // waits until none of its tasks is listed, returns only after every future's destructor
  // has run (on whichever thread ran it).
  inline void on_future_destroyed(TaskBlock block) noexcept {
    if (core.listed()) {
      unlist_task_block(block);
      core.set_listed(false);
    }
  }
  inline void on_poll_finished() noexcept { core_note_completed(core.get()); }
};
// A runtime task of an Async is built in the room its frame's block keeps for a tag and a
// schedule function (impl/task/frame_block.cppm: kCellRoom).
static_assert(sizeof(ScheduleOnRuntime) == sizeof(void*) && sizeof(ScheduleOnRuntime) <= kCellRoom,
              "the runtime's schedule function is one word, and fits the room in front of a frame");

// Where a listed runtime task keeps its ticket, from its block's first byte: the schedule
// function follows the 4-word header (no tag; every cell puts it there, impl/task/cell.cppm).
// The shutdown walk reads the ticket of each listed block to find its own tasks.
inline constexpr std::size_t kTicketOffset = 4 * sizeof(void*) + offsetof(ScheduleOnRuntime, core);

struct ScheduleOnBlockingPool {
  using karx_no_keep_alive = void;
  TaskTicket core;
  inline void operator()(Task<> task) const noexcept { core_schedule_blocking(core.get(), std::move(task)); }
};

}  // namespace karx::detail
