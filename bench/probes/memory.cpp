// The memory workload: 1,000,000 tasks, each pending on its own one-shot. The RSS growth from
// before the one-shots exist to when every task is pending, divided by the task count, is what
// one pending task costs (its one-shot included). Then every one-shot is fulfilled, every task
// must run to its end exactly once, and everything is freed.
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "probes.hpp"
#include "tbb_pool.hpp"
import karx;

namespace karx_probes {
namespace {

constexpr std::int64_t kTasks = 1000000;

// A one-shot's states. Each receiver moves it to kConsumed when it sees the value, so a task that
// ran to its end twice, or not at all, shows up in the final check.
enum : std::uint32_t { kEmpty, kWaiting, kFired, kConsumed };

constexpr std::chrono::seconds kFinishTimeout{120};  // a lost task must fail the run, not hang it

// What every task shares: how many have reached their first poll, and how many have finished.
struct Progress {
  std::atomic<std::int64_t> first_polls{0};
  Countdown finished{kTasks};
};

void wait_finished(Progress& progress) {
  if (!progress.finished.wait_for(kFinishTimeout))
    throw std::runtime_error(std::to_string(progress.finished.left()) + " tasks did not finish");
}

// Once every task has been joined: each finished once (the count is exactly zero) and each
// receiver saw its value (every one-shot is consumed).
template <class Shot>
void check_exactly_once(Progress& progress, const Shot* shots) {
  if (progress.finished.left() != 0)
    throw std::runtime_error("tasks finished " + std::to_string(kTasks - progress.finished.left()) + " times, not " +
                             std::to_string(kTasks));
  std::int64_t wrong = 0;
  for (std::int64_t i = 0; i < kTasks; ++i)
    if (shots[i].state.load(std::memory_order_acquire) != kConsumed) ++wrong;
  if (wrong != 0) throw std::runtime_error(std::to_string(wrong) + " one-shots were not consumed");
}

void print_row(const char* library, const char* variant, std::uint64_t before, std::uint64_t after, const char* note) {
  const double growth = static_cast<double>(after) - static_cast<double>(before);
  JsonLine()
      .add("kind", "memory")
      .add("library", library)
      .add("variant", variant)
      .add("tasks", static_cast<std::int64_t>(kTasks))
      .add("bytes_per_task", growth / static_cast<double>(kTasks), 1)
      .add("rss_before_mb", static_cast<double>(before) / (1024.0 * 1024.0), 1)
      .add("rss_after_mb", static_cast<double>(after) / (1024.0 * 1024.0), 1)
      .add("note", note)
      .print();
}

// ---- karx: a one-shot with a waker slot, and the two kinds of future waiting on it ----

// The smallest one-shot: a state word and a waker slot. Whoever holds the slot may touch it:
// the receiver while the state is kEmpty, the sender once it swapped kWaiting for kFired.
struct OneShot {
  std::atomic<std::uint32_t> state{kEmpty};
  karx::Waker waker = karx::noop_waker();

  void send() {
    const std::uint32_t was = state.exchange(kFired, std::memory_order_acq_rel);
    if (was == kWaiting)
      std::move(waker).wake_and_release();  // the receiver published its waker: ours now
    else if (was != kEmpty)
      throw std::logic_error("one-shot sent twice");
  }

  karx::Poll<> receive(karx::Context& cx) {
    std::uint32_t s = state.load(std::memory_order_acquire);
    // Polled again while waiting: take the slot back (unless the sender got there first).
    if (s == kWaiting && state.compare_exchange_strong(s, kEmpty, std::memory_order_acquire)) s = kEmpty;
    if (s == kEmpty) {
      waker = cx.waker();  // a clone (nothing, if it already wakes the same task)
      if (state.compare_exchange_strong(s, kWaiting, std::memory_order_release, std::memory_order_acquire))
        return karx::pending;
      waker = karx::noop_waker();  // fired meanwhile: the slot is still ours, drop the clone
    }
    if (s != kFired) throw std::logic_error("one-shot received twice");
    state.store(kConsumed, std::memory_order_release);
    return karx::ready();
  }
};

// A future that waits on a one-shot; what the coroutine awaits.
struct Receive {
  OneShot* shot;
  karx::Poll<> poll(karx::Context& cx) { return shot->receive(cx); }
};

// The tasks are as small as a user's would be: all they hold is their one-shot. Whether they
// are pending (and later done) is read off the one-shots' states, not counted by the tasks.
karx::Async<> coroutine_task(OneShot* shot) { co_await Receive{shot}; }

// The same task written by hand: no coroutine frame, the future is stored in the task itself.
struct StructTask {
  OneShot* shot;
  karx::Poll<> poll(karx::Context& cx) { return shot->receive(cx); }
};

// Waits until every one-shot is in `state` (kWaiting: every task is pending; kConsumed: every
// task received its value and finished).
void wait_for_states(const OneShot* shots, std::uint32_t state) {
  const auto deadline = std::chrono::steady_clock::now() + kFinishTimeout;
  std::int64_t i = 0;
  while (i < kTasks) {
    if (shots[i].state.load(std::memory_order_acquire) == state) {
      ++i;
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("one-shot " + std::to_string(i) + " never reached state " + std::to_string(state));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

karx::Async<> warm_task() { co_return; }

}  // namespace

void memory_karx(FutureKind kind) {
  const bool coroutine = kind == FutureKind::coroutine;
  std::unique_ptr<OneShot[]> shots;  // outlives the runtime: tasks point into it
  std::uint64_t before = 0, after = 0;
  {
    karx::RuntimeOptions options;
    options.processors = kThreads;
    karx::Runtime rt(options);
    rt.block_on(warm_task());  // the runtime's threads are up before the baseline

    trim_heap();
    before = rss_bytes();
    shots = std::make_unique<OneShot[]>(kTasks);
    for (std::int64_t i = 0; i < kTasks; ++i) {
      // Detached, as a user does with a task nobody joins: the handle is not part of the cost.
      if (coroutine)
        rt.spawn(coroutine_task(&shots[i])).detach();
      else
        rt.spawn(StructTask{&shots[i]}).detach();
    }
    wait_for_states(shots.get(), kWaiting);  // every task has been polled: really pending
    after = rss_bytes();

    for (std::int64_t i = 0; i < kTasks; ++i) shots[i].send();
    wait_for_states(shots.get(), kConsumed);  // each received once (a second receive throws)
  }  // the runtime is gone: every poll has returned

  const std::string note = "one-shots (" + std::to_string(sizeof(OneShot)) +
                           " B each: state word + karx::Waker) in one array allocated after the before reading, "
                           "counted in the growth; tasks spawned from the main thread, JoinHandles detached";
  print_row("karx", coroutine ? "coroutine" : "struct", before, after, note.c_str());
}

// ---- oneTBB: each pending task is a task_group::defer handle kept in its one-shot ----

namespace {

// Sending runs the deferred task in the group; the task consumes the value.
struct TbbShot {
  std::atomic<std::uint32_t> state{kEmpty};
  tbb::task_handle task;

  void send(tbb::task_group& group) {
    if (state.exchange(kFired, std::memory_order_acq_rel) != kEmpty) throw std::logic_error("one-shot sent twice");
    group.run(std::move(task));
  }
};

}  // namespace

void memory_tbb() {
  TbbPool setup;
  tbb::task_arena& arena = setup.arena;
  tbb::task_group group;
  {
    Countdown warm(1000);  // the workers and their allocator pools are up before the baseline
    for (int i = 0; i < 1000; ++i) arena.enqueue([&warm] { warm.hit(); });
    warm.wait();
  }

  Progress progress;
  trim_heap();
  const std::uint64_t before = rss_bytes();
  auto shots = std::make_unique<TbbShot[]>(kTasks);
  // In the arena, so that the tasks belong to it and run on its threads.
  arena.execute([&] {
    for (std::int64_t i = 0; i < kTasks; ++i)
      shots[i].task = group.defer([shot = &shots[i], p = &progress] {
        std::uint32_t fired = kFired;
        if (shot->state.compare_exchange_strong(fired, kConsumed, std::memory_order_acq_rel)) p->finished.hit();
      });
  });
  const std::uint64_t after = rss_bytes();

  arena.execute([&] {
    for (std::int64_t i = 0; i < kTasks; ++i) shots[i].send(group);
    group.wait();
  });
  wait_finished(progress);
  check_exactly_once(progress, shots.get());

  const std::string note = "one-shots (" + std::to_string(sizeof(TbbShot)) +
                           " B each: state word + tbb::task_handle) in one array allocated after the before reading, "
                           "counted in the growth; each task made by task_group::defer, run by task_group::run when "
                           "its one-shot is sent";
  print_row("tbb", "task_group::defer", before, after, note.c_str());
}

}  // namespace karx_probes
