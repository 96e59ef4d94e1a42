// The soak tests' bookkeeping: a Ledger of every future and handle a round makes, the Tracker
// each future holds, and the checks every resolved handle must pass.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

import karx;

namespace soak {

enum class Kind : std::uint8_t {
  root,     // a task's own future (counted by the runtime's tasks_spawned / tasks_completed)
  closure,  // a spawn_blocking closure (counted by blocking_tasks instead)
  inner,    // a future or coroutine frame awaited inside a task
};

class Ledger {
 public:
  static constexpr std::uint32_t kNoId = ~std::uint32_t{0};
  enum : std::uint8_t { kUnused = 0, kAlive = 1, kDestroyed = 2 };

  Ledger(std::size_t capacity, bool shutdown_mode) : shutdown_mode(shutdown_mode), state_(capacity), kind_(capacity) {}

  std::uint32_t open(Kind kind) {
    const std::uint64_t id = next_.fetch_add(1, std::memory_order_relaxed);
    constructed.fetch_add(1, std::memory_order_relaxed);
    if (id >= state_.size()) {
      fail("ledger full: the round makes more futures than the test planned for");
      return kNoId;
    }
    kind_[id] = kind;  // written before the id leaves this thread
    state_[id].store(kAlive, std::memory_order_release);
    return static_cast<std::uint32_t>(id);
  }

  void close(std::uint32_t id, Kind kind, bool done) {
    if (id != kNoId) {
      const std::uint8_t was = state_[id].exchange(kDestroyed, std::memory_order_acq_rel);
      if (was != kAlive) fail("future " + std::to_string(id) + " destroyed twice (or never constructed)");
    }
    if (kind == Kind::root) (done ? roots_done : roots_undone).fetch_add(1, std::memory_order_relaxed);
    destroyed.fetch_add(1, std::memory_order_release);
  }

  bool is_destroyed(std::uint32_t id) const {
    return id == kNoId || state_[id].load(std::memory_order_acquire) == kDestroyed;
  }
  long alive() const { return constructed.load(std::memory_order_relaxed) - destroyed.load(std::memory_order_acquire); }

  // Checked on other threads (workers): recorded here, reported by the test thread.
  void fail(const std::string& what) {
    errors.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mu_);
    if (messages_.size() < 20) messages_.push_back(what);
  }
  std::vector<std::string> messages() const {
    std::lock_guard lock(mu_);
    return messages_;
  }

  // Every id ever opened must be destroyed now; returns what is not, for the failure message.
  std::string undestroyed() const {
    std::string bad;
    const std::uint64_t n = std::min<std::uint64_t>(next_.load(std::memory_order_relaxed), state_.size());
    int listed = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint8_t s = state_[i].load(std::memory_order_acquire);
      if (s == kDestroyed) continue;
      if (++listed <= 10)
        bad += " id " + std::to_string(i) + (s == kAlive ? " alive" : " unused") + " (kind " +
               std::to_string(static_cast<int>(kind_[i])) + ")";
    }
    if (listed > 10) bad += " and " + std::to_string(listed - 10) + " more";
    return bad;
  }

  const bool shutdown_mode;  // the runtime is destroyed mid-flight: any task may be canceled

  std::atomic<long> constructed{0}, destroyed{0}, errors{0};
  std::atomic<long> roots_done{0}, roots_undone{0};
  // Operations, for the invariants and the summary.
  std::atomic<long> spawned{0};           // successful Runtime::spawn / spawn_on / block_on
  std::atomic<long> spawned_inside{0};    // ... of which from inside tasks
  std::atomic<long> spawn_refused{0};     // spawns a runtime being destroyed refused
  std::atomic<long> blocking_spawned{0};  // spawn_blocking
  std::atomic<long> handles{0}, resolved{0}, detached{0}, dropped{0};
  std::atomic<long> cancels{0}, canceled{0}, completed{0};
  std::atomic<long> blocks{0}, poll_blocks{0}, sleeps{0}, yields{0}, joins{0};
  std::atomic<long> task_wakes{0}, thread_wakes{0};

 private:
  std::vector<std::atomic<std::uint8_t>> state_;
  std::vector<Kind> kind_;
  std::atomic<std::uint64_t> next_{0};
  mutable std::mutex mu_;
  std::vector<std::string> messages_;
};

// Held by every future the test makes (coroutine frames hold one as a parameter, so a frame
// destroyed before its first poll still counts). Moving hands the duty on.
class Tracker {
 public:
  Tracker(Ledger& ledger, Kind kind) : ledger_(&ledger), id_(ledger.open(kind)), kind_(kind) {}
  Tracker(Tracker&& o) noexcept
      : ledger_(std::exchange(o.ledger_, nullptr)), id_(o.id_), kind_(o.kind_), done_(o.done_) {}
  Tracker& operator=(Tracker&&) = delete;
  ~Tracker() {
    if (ledger_ != nullptr) ledger_->close(id_, kind_, done_);
  }
  // The future is about to return ready (the runtime counts it as completed).
  void done() { done_ = true; }
  std::uint32_t id() const { return id_; }
  Ledger& ledger() const { return *ledger_; }

 private:
  Ledger* ledger_;
  std::uint32_t id_;
  Kind kind_;
  bool done_ = false;
};

// What a task's output must be: derived from its future's id.
inline long value_of(std::uint32_t id) { return static_cast<long>(id) * 7 + 3; }

// Checks one resolved handle: the future is gone by then, and the result agrees with what was
// done to the task (a value only if it completed; "canceled" only if someone canceled it).
inline void check_result(Ledger& l, const std::optional<long>& r, std::uint32_t id, long expected,
                         bool cancel_requested, const char* where) {
  l.resolved.fetch_add(1, std::memory_order_relaxed);
  if (!l.is_destroyed(id))
    l.fail(std::string(where) + ": handle of " + std::to_string(id) + " resolved before its future was destroyed");
  if (r) {
    l.completed.fetch_add(1, std::memory_order_relaxed);
    if (*r != expected)
      l.fail(std::string(where) + ": task " + std::to_string(id) + " yielded " + std::to_string(*r) + ", want " +
             std::to_string(expected));
  } else {
    l.canceled.fetch_add(1, std::memory_order_relaxed);
    if (!cancel_requested && !l.shutdown_mode)
      l.fail(std::string(where) + ": task " + std::to_string(id) + " yielded canceled but nobody canceled it");
  }
}

// A handle owned by a task, with what it must yield. Dropping it unresolved (its owner was
// canceled) is a detach; counted so every handle is accounted for.
struct Child {
  karx::JoinHandle<long> h;
  std::uint32_t id = Ledger::kNoId;
  long expected = 0;
  bool cancel_requested = false;
  Ledger* ledger = nullptr;
  const char* what = "task";  // what the task is, for failure messages

  Child(karx::JoinHandle<long> handle, std::uint32_t i, long e, bool c, Ledger* l, const char* w = "task")
      : h(std::move(handle)), id(i), expected(e), cancel_requested(c), ledger(l), what(w) {}
  Child(Child&& o) noexcept
      : h(std::move(o.h)),
        id(o.id),
        expected(o.expected),
        cancel_requested(o.cancel_requested),
        ledger(o.ledger),
        what(o.what) {}
  Child& operator=(Child&&) = delete;
  ~Child() {
    if (h) ledger->dropped.fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace soak
