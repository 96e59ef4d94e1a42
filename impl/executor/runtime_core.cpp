// The runtime core: creation and options, scheduling, waking workers, starting threads,
// metrics and shutdown.
module;
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
module karx.executor;
import karx.task;
import karx.machinery;
import :scheduler;

namespace karx::detail {

thread_local Worker* current_worker = nullptr;
thread_local constinit void* current_runtime = nullptr;

namespace {

constexpr unsigned kMaxProcessors = 1024;

// KARX_PROCS: decimal digits only (no sign, no spaces: strtoul would accept " -1" and wrap it
// to a huge number), a value from 1 to kMaxProcessors.
unsigned processors_from_environment() {
  const char* text = std::getenv("KARX_PROCS");
  if (text == nullptr || *text == '\0') return std::max(1u, std::thread::hardware_concurrency());
  unsigned long n = 0;
  bool valid = true;
  for (const char* p = text; *p != '\0' && valid; ++p) {
    valid = *p >= '0' && *p <= '9';
    n = n * 10 + static_cast<unsigned long>(*p - '0');
    valid = valid && n <= kMaxProcessors;  // stops before any overflow
  }
  if (!valid || n == 0)
    throw std::invalid_argument(std::string("karx::Runtime: KARX_PROCS must be a whole number from 1 to ") +
                                std::to_string(kMaxProcessors) + ", not \"" + text + "\"");
  return static_cast<unsigned>(n);
}

std::chrono::milliseconds schedtrace_from_environment() {
  const char* text = std::getenv("KARX_SCHEDTRACE");
  if (text == nullptr || *text == '\0') return std::chrono::milliseconds(0);
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(text, &end, 10);
  // At most a day: the monitor adds it to the clock (and a larger period traces nothing).
  if (*end != '\0' || errno != 0 || n <= 0 || n > 86'400'000) {
    std::fprintf(
        stderr, "karx: ignoring KARX_SCHEDTRACE=\"%s\" (want milliseconds, a whole number from 1 to 86400000)\n", text);
    return std::chrono::milliseconds(0);
  }
  return std::chrono::milliseconds(n);
}

}  // namespace

void drop_task(RawTask task) noexcept { Task<>::from_raw(task).cancel(); }

void die_out_of_memory(const char* where) noexcept {
  std::fprintf(stderr, "karx: fatal: out of memory %s; a task cannot be queued or lost, so the process stops\n", where);
  std::abort();
}

RuntimeCore::RuntimeCore(const RuntimeOptions& opts, unsigned procs)
    : options(opts), slots(procs), budget(opts.max_threads), blocking_pool(*this, budget) {
  enable_asymmetric_fences();  // before any worker starts: they end polls with the light side
                               // (machinery/poll_word.cppm)
}

RuntimeCore* core_create(const RuntimeOptions& options, void* runtime) {
  const unsigned processors = options.processors != 0 ? options.processors : processors_from_environment();
  if (processors > kMaxProcessors)
    throw std::invalid_argument("karx::Runtime: processors must be at most " + std::to_string(kMaxProcessors) +
                                ", not " + std::to_string(processors));
  // Workers for every processor, plus the monitor.
  if (options.max_threads < processors + 1)
    throw std::invalid_argument("karx::Runtime: max_threads (" + std::to_string(options.max_threads) +
                                ") must be at least processors + 1 (" + std::to_string(processors + 1) +
                                "): one worker per processor and the monitor");
  if (options.blocking_threshold.count() <= 0)
    throw std::invalid_argument("karx::Runtime: blocking_threshold must be positive");
  if (options.idle_thread_timeout.count() <= 0)
    throw std::invalid_argument("karx::Runtime: idle_thread_timeout must be positive");

  auto core = std::make_unique<RuntimeCore>(options, processors);
  core->runtime = runtime;
  core->schedtrace = schedtrace_from_environment();
  // Busy hand-offs (monitor.cpp) at once: the cores the processors leave over, at least one.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  core->busy_handoff_cap = static_cast<int>(cores > processors ? cores - processors : 1);
  (void)core->budget.try_take();  // max_threads >= processors + 1: there is room for the monitor
  core->monitor.start();
  core->budget.started();
  try {
    register_runtime_for_netpoll(core.get());  // sockets made on its threads find its netpoller
  } catch (...) {
    core->shutdown();
    throw;
  }
  return core.release();
}

namespace {
// The current thread's worker if it is one of `core`'s (a worker or a guest), else nullptr.
inline Worker* worker_of(const RuntimeCore* core) noexcept {
  Worker* w = current_worker;
  return w != nullptr && w->core == core ? w : nullptr;
}
}  // namespace

void core_task_created(RuntimeCore* core) noexcept {
  if (Worker* w = worker_of(core)) {
    w->task_balance.store(w->task_balance.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return;
  }
  // relaxed: the new task comes from a live Runtime (or a live task): the count is not zero.
  core->foreign_balance.fetch_add(1, std::memory_order_relaxed);
}

void core_task_freed(RuntimeCore* core) noexcept {
  if (Worker* w = worker_of(core)) {
    // A worker thread: the Runtime's destructor joins it before it reads task_balance.
    w->task_balance.store(w->task_balance.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    return;
  }
  // acq_rel: whoever brings the count to zero sees every other use of the core first.
  if (core->foreign_balance.fetch_sub(1, std::memory_order_acq_rel) == 1) delete core;
}

void core_orphan(RuntimeCore* core) noexcept {
  // Every worker thread is joined (core_shutdown), so their balances are final and visible.
  std::int64_t on_workers = 0;
  const unsigned n = core->workers.size();
  for (unsigned i = 0; i < n; ++i) on_workers += core->workers[i]->task_balance.load(std::memory_order_relaxed);
  // Replace the Runtime's kAlive with the workers' share: what is left counts the tasks still
  // alive (held by wakers elsewhere); the last of them deletes the core.
  const std::int64_t delta = on_workers - RuntimeCore::kAlive;
  if (core->foreign_balance.fetch_add(delta, std::memory_order_acq_rel) + delta == 0) delete core;
}

void core_begin_spawn(RuntimeCore* core) {
  if (core->shutting_down.load(std::memory_order_acquire)) [[unlikely]]
    throw std::logic_error("karx::Runtime: spawn on a runtime that is being destroyed");
  core_task_created(core);
}

void core_count_blocking_spawn(RuntimeCore* core) noexcept {
  core->blocking_spawned.fetch_add(1, std::memory_order_relaxed);
}

void core_note_completed(RuntimeCore* core) noexcept {
  if (Worker* w = worker_of(core))
    w->bump(w->completed);
  else
    core->outside_completed.fetch_add(1, std::memory_order_release);  // see metrics()
}

// --- Scheduling -----------------------------------------------------------------------------

namespace {
// A spawn or wake on one of our workers: run it next on this worker (Go's runnext). Another
// worker is woken only when this leaves work it could take: a task pushed out of runnext into
// the queue. The task in runnext alone is this worker's to run when its poll ends (thieves
// leave it alone meanwhile: worker.cpp, steal), so waking a thread for it would cost a futex
// call per wake-up for a search that finds nothing (tokio's rule; with Go's wake-always the
// 2-processor channel benchmark paid that on every message). A runnext stranded behind a long
// poll is the monitor's to move (monitor.cpp, look_at_polls).
void submit_local(RuntimeCore* core, Worker* w, Task<> task) noexcept {
  // No fence (it would cost a fork-join tree one mfence per node): the queue push is a plain
  // release store, so this wake-up can miss a worker parking at that moment ("free the slot;
  // fence; look at the queues"). Nothing is lost: this worker runs the task itself when it
  // gets to it, and the monitor wakes a worker for a queue that waits behind a long poll
  // while a processor is free (monitor.cpp, look_at_polls).
  if (push_local(w, std::move(task).into_raw())) core->wakep_after_seq_cst();
}
}  // namespace

void core_schedule(RuntimeCore* core, Task<> task) noexcept {
  Worker* w = worker_of(core);
  const bool yielding = std::exchange(yield_requested, false);
  if (w != nullptr && !core->shutting_down.load(std::memory_order_relaxed)) {
    if (yielding) {
      // yield_now: to the back of this worker's queue, behind what waits there (the injector
      // gets its turn every 61st tick). No wake-up: this worker is running and comes back to
      // it; others may steal it.
      push_back_local(w, std::move(task).into_raw());
      w->pick_oldest = true;
      return;
    }
    submit_local(core, w, std::move(task));
    return;
  }
  // Not on one of our workers: the task may run, finish and be freed on a worker before this
  // call returns, and with the Runtime gone that could free the core. Count this call as a
  // task meanwhile (the task layer holds no reference for us: karx_no_keep_alive).
  core_task_created(core);
  core_submit_outside(core, std::move(task));
  core_task_freed(core);
}

void core_submit(RuntimeCore* core, Task<> task) noexcept {
  // Counted here, once the spawn has succeeded (a spawn whose allocation failed is no task).
  Worker* w = worker_of(core);
  if (w != nullptr)
    w->bump(w->spawned);
  else
    core->outside_spawned.fetch_add(1, std::memory_order_release);  // see metrics()
  if (w != nullptr && !core->shutting_down.load(std::memory_order_relaxed))
    submit_local(core, w, std::move(task));
  else
    core_submit_outside(core, std::move(task));
}

void core_submit_outside(RuntimeCore* core, Task<> task) noexcept {
  RawTask raw = std::move(task).into_raw();
  bool pushed = false;
  try {
    pushed = core->injector.push(raw);
  } catch (const std::bad_alloc&) {
    die_out_of_memory("growing the runtime's global queue (a task spawned or woken outside its workers)");
  }
  if (pushed)
    core->wakep();
  else
    drop_task(raw);  // shut down: the future is destroyed, its handle yields "canceled"
}

bool push_local(Worker* w, RawTask task) noexcept {
  // acq_rel: the task's writes are published to a thief or the monitor that takes it (its
  // exchange acquires); and the previous task, if a thief has not taken it, is ours.
  RawTask previous = w->runnext.exchange(task, std::memory_order_acq_rel);
  if (previous == nullptr) return false;
  push_back_local(w, previous);
  return true;
}

void push_back_local(Worker* w, RawTask task) noexcept {
  while (!w->local.push(task)) {
    // Full: move the older half (and then retry) to the injector, as Go's runqputslow, and
    // offer it to an idle worker: spilled work must not wait in the injector while a
    // processor has nothing to do (wakep: the injector's push is no seq_cst RMW).
    RawTask batch[decltype(w->local)::capacity / 2];
    const std::uint32_t n = w->local.take_half_for_spill(batch);
    if (n == 0) continue;
    bool pushed = false;
    try {
      pushed = w->core->injector.push_batch(batch, batch + n);
    } catch (const std::bad_alloc&) {
      die_out_of_memory("growing the runtime's global queue (a worker's full queue spilling)");
    }
    if (pushed)
      w->core->wakep();
    else
      for (std::uint32_t i = 0; i < n; ++i) drop_task(batch[i]);
  }
}

// Under idle.lock(). The new worker starts with a slot (the caller's) and searching.
Worker* RuntimeCore::start_worker(bool& retry) noexcept {
  Worker* w = register_worker();
  if (w == nullptr || !budget.try_take()) {
    // At the thread cap. Work may wait for good if the threads that hold the budget are idle
    // blocking-pool threads (they leave only after idle_thread_timeout) or will never pass by
    // the queues again: the monitor retries and makes room.
    if (w != nullptr) w->exited = true;
    worker_refused_at_cap.store(true, std::memory_order_relaxed);
    retry = true;
    return nullptr;
  }
  try {
    w->given_slot.store(true, std::memory_order_relaxed);
    w->thread = std::thread([this, w] { worker_main(w); });
    budget.started();
  } catch (...) {
    // Thread creation failed (resource limits): keep running on the threads we have, and let
    // the monitor try again while the work is still waiting.
    w->exited = true;
    budget.start_failed();
    retry = true;
    return nullptr;
  }
  return w;
}

// Under idle.lock(). Reuses the struct of a worker whose thread has exited (or whose guest
// left), else registers a new one; nullptr when the registry (max_threads entries) is full.
Worker* RuntimeCore::register_worker() noexcept {
  const unsigned n = workers.size();
  for (unsigned i = 0; i < n; ++i) {
    Worker* w = workers[i];
    if (!w->exited) continue;
    if (w->thread.joinable()) w->thread.join();  // it returned already: instant
    w->exited = false;
    w->guest = false;
    return w;
  }
  if (n >= options.max_threads) return nullptr;
  try {
    auto w = std::make_unique<Worker>();
    w->core = this;
    w->index = n;
    w->rng = 0x9e3779b9u * (n + 1);
    return workers.push_back(std::move(w));  // stealers and the monitor see it constructed
  } catch (...) {
    return nullptr;  // out of memory: no thread either
  }
}

// --- Metrics ---------------------------------------------------------------------------------

// The relations the metrics promise hold at every sample (tests/runtime/metrics_test.cpp):
//  - tasks_completed <= tasks_polled <= ... and tasks_completed <= tasks_spawned. Any one task
//    is counted spawned, then polled, then completed, each count a release store (or RMW) on
//    the counting thread, and its queue hands the task over between them. So the counters are
//    read the other way round, with acquire: completions first, then polls, then spawns; a
//    completion we count has its poll and its spawn counted by the time we read those. The
//    registry is read again before each pass: a worker added meanwhile has counts too.
//  - idle_threads <= threads. Guests (block_on's callers) are not threads of the runtime and
//    are not counted idle; a thread is counted alive before it parks and after it leaves the
//    idle list, but the two gauges are read at two instants, so a thread starting or exiting
//    between the reads could show idle above alive: the snapshot caps it.
//  - handoffs == blocked_handoffs + busy_handoffs (derived).
RuntimeMetrics RuntimeCore::metrics() const noexcept {
  RuntimeMetrics m;
  m.processors = slots.processors();
  m.tasks_completed = outside_completed.load(std::memory_order_acquire);
  for (unsigned i = 0, n = workers.size(); i < n; ++i)
    m.tasks_completed += workers[i]->completed.load(std::memory_order_acquire);
  for (unsigned i = 0, n = workers.size(); i < n; ++i)
    m.tasks_polled += workers[i]->polled.load(std::memory_order_acquire);
  m.tasks_spawned = outside_spawned.load(std::memory_order_acquire);
  for (unsigned i = 0, n = workers.size(); i < n; ++i) {
    m.tasks_spawned += workers[i]->spawned.load(std::memory_order_acquire);
    m.steals += workers[i]->steals.load(std::memory_order_relaxed);
  }
  m.idle_threads = idle.idle_threads();
  m.threads = budget.alive();
  m.idle_threads = std::min(m.idle_threads, m.threads);
  m.blocked_handoffs = blocked_handoffs.load(std::memory_order_relaxed);
  m.busy_handoffs = busy_handoffs.load(std::memory_order_relaxed);
  m.handoffs = m.blocked_handoffs + m.busy_handoffs;  // every hand-off is one of the two
  m.injector_depth = injector.size();
  m.threads_started = budget.started_count();
  m.blocking_tasks = blocking_spawned.load(std::memory_order_relaxed);
  m.thread_start_failures = budget.failures();
  return m;
}

RuntimeMetrics core_metrics(const RuntimeCore* core) noexcept { return core->metrics(); }

// --- Shutdown --------------------------------------------------------------------------------------

void core_shutdown(RuntimeCore* core) noexcept { core->shutdown(); }

void RuntimeCore::shutdown() noexcept {
  // ~Runtime on a thread the runtime runs (in one of its tasks, a spawn_blocking closure, or
  // inside its block_on): the destructor would wait for that very thread to finish its poll
  // or closure, or leave its block_on with freed memory under it. A destructor cannot throw
  // to the caller, so say what happened and stop here rather than hang or corrupt memory.
  if (current_runtime != nullptr && current_runtime == runtime) {
    std::fputs(
        "karx: fatal: a karx::Runtime is being destroyed from one of its own threads (inside one of its tasks, a "
        "spawn_blocking closure, or its block_on); it would wait for this very thread. Destroy a runtime from a "
        "thread it does not run.\n",
        stderr);
    std::abort();
  }
  // 1. Tell everyone. From here on a spawn throws, a wake or a schedule call drops its task
  //    (the injector is closed: core_submit_outside), no worker takes a new task (they look
  //    at shutting_down before each), no thread starts, and no guest joins.
  {
    const IdleList::Lock lock = idle.lock();
    shutting_down.store(true, std::memory_order_seq_cst);
    idle.for_each(lock, [](Worker* w) { w->parker.unpark(); });
  }
  unregister_runtime_for_netpoll(this);  // new sockets on our threads use the reactor now
  netpoll_wake_any();                    // a thread sleeping in the netpoller sees shutting_down
  for (RawTask t : injector.close()) drop_task(t);
  blocking_pool.close();
  for (unsigned i = 0, n = workers.size(); i < n; ++i) workers[i]->parker.unpark();

  // 2. Release every thread that waits for a task that will now never run, before waiting for
  //    any thread: a task, a spawn_blocking closure or a guest blocked in block_on on one of
  //    this runtime's tasks. Cancel what is queued and wake what is listed (its schedule call
  //    drops it): a canceled task's handle yields "canceled", which wakes whoever waits on it.
  //    Repeated while threads still run, for a poll in progress may queue or list more until
  //    it sees shutting_down. Polls that block on something else are waited for: ~Runtime
  //    waits for polls in progress to return.
  for (int quiet_rounds = 0;;) {
    drop_queued_tasks();
    const bool found = wake_listed_tasks();
    if (!threads_still_running()) break;
    if (found) {
      quiet_rounds = 0;
    } else if (quiet_rounds++ < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // 3. Every worker thread and pool thread has returned and every guest has left: join them.
  for (unsigned i = 0, n = workers.size(); i < n; ++i)
    if (workers[i]->thread.joinable()) workers[i]->thread.join();
  monitor.stop();
  blocking_pool.wait_for_threads();

  // 4. What the last polls queued or listed: drop and wake until none of ours is listed. A task
  //    woken by another thread just before ours was a no-op has its future destroyed on that
  //    thread (its schedule call finds the injector closed), and no future of this runtime may
  //    outlive its destructor. Nothing can stay listed: every queue is drained and closed, no
  //    thread of ours runs, and a task is unlisted once its future is gone.
  for (int quiet_rounds = 0;;) {
    drop_queued_tasks();
    if (!wake_listed_tasks()) break;
    if (quiet_rounds++ < 64)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  // 5. The netpoller: nobody polls it any more. Operations parked on sockets that outlive the
  //    runtime are woken and throw (impl/executor/netpoll.cpp, step 7).
  netpoll_close();
}

// Cancels every task in a queue: the workers' (which may still be running a poll: we take
// from their queues as a thief does) and the blocking pool's.
void RuntimeCore::drop_queued_tasks() noexcept {
  for (unsigned i = 0, n = workers.size(); i < n; ++i) {
    Worker& w = *workers[i];
    if (RawTask t = w.take_runnext()) drop_task(t);
    while (std::optional<RawTask> t = w.local.steal_one()) drop_task(*t);
  }
  for (RawTask t : injector.close()) drop_task(t);  // closed already; a pusher racing the close
  for (RawTask t : blocking_pool.take_queued()) drop_task(t);
}

// Tasks that wait on a waker held elsewhere (listed, see core.cppm): wakes each one; its
// schedule call finds the injector closed and drops it, which destroys its future and unlists
// it. A visit of the listing keeps each listed task alive while we take a reference to it, but
// must not drop one (listing.cppm), so the wakers are gathered first, a batch at a time (no
// allocation on this path), and woken after the visit. True if any of ours was found.
bool RuntimeCore::wake_listed_tasks() noexcept {
  struct IdleBatch {
    RuntimeCore* core;
    std::size_t count = 0;
    bool held_alone = false;  // one of ours could not be referenced now: look again
    std::array<std::optional<Waker>, 256> wakers{};

    static bool take(void* block, void* context) noexcept {
      auto& batch = *static_cast<IdleBatch*>(context);
      const auto& ticket = *reinterpret_cast<const TaskTicket*>(static_cast<char*>(block) + kTicketOffset);
      if (ticket.get() != batch.core) return true;  // another runtime's
      const RawWaker reference = reference_listed_task(block);
      if (reference.vtable == nullptr) {
        batch.held_alone = true;  // queued or running with its one holder: it comes to us later
        return true;
      }
      batch.wakers[batch.count++].emplace(Waker::from_raw(reference));
      return batch.count < batch.wakers.size();
    }
  };
  bool found = false;
  for (;;) {
    IdleBatch batch{this};
    visit_listed_task_blocks(&IdleBatch::take, &batch);
    found = found || batch.count > 0 || batch.held_alone;
    for (std::size_t i = 0; i < batch.count; ++i) std::move(*batch.wakers[i]).wake_and_release();
    if (batch.count < batch.wakers.size()) return found;  // else more may wait for the next batch
  }
}

// Whether a worker thread, a pool thread or a guest still runs (and may touch the core).
bool RuntimeCore::threads_still_running() noexcept {
  {
    const IdleList::Lock lock = idle.lock();
    if (guests != 0) return true;
    for (unsigned i = 0, n = workers.size(); i < n; ++i) {
      const Worker& w = *workers[i];
      if (!w.guest && w.thread.joinable() && !w.exited) return true;
    }
  }
  return blocking_pool.has_threads();
}

}  // namespace karx::detail

namespace karx {
Runtime& global_runtime() {
  // Never destroyed: at exit, static objects that tasks use may already be gone.
  static Runtime* runtime = new Runtime();
  return *runtime;
}
}  // namespace karx
