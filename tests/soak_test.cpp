// Soak test of the runtime: a seeded random mix of spawns (coroutines and hand-written
// futures), cancels, detaches, wakes from other tasks and from plain threads, blocking calls
// (announced with karx::blocking and unannounced sleeps inside a poll, which the monitor must
// detect), timers, yields, spawns from inside tasks, spawn_blocking and tasks awaiting each
// other's handles, on a runtime with 2 processors and a small thread cap. After each round it
// checks what must hold whatever the interleaving: every future destroyed exactly once, every
// handle resolved with a result consistent with what was done to it, the runtime's counters
// matching the test's own, and the thread count going back down once the runtime is idle.
// A second test destroys runtimes with work in flight and checks the same of what is left.
// At the end, small deterministic reductions of what the soak has found.
//
// Environment:
//   KARX_SOAK_SEED=<n>     replays a run (the seed is printed; it fixes the operations each
//                          round draws, not the threads' interleaving). A failing round prints
//                          its own seed: replaying that seed runs that round first.
//   KARX_SOAK_SECONDS=<n>  the long form: each test loops rounds for n seconds (default: a
//                          fixed, small number of rounds, short enough for the sanitizer runs).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long anything may take before the test calls it a hang. Generous: only a lost wake or a
// deadlock gets near it, even under a sanitizer on a loaded machine.
constexpr auto kHang = 60s;

// --- Seeds and options ---------------------------------------------------------------------------

// splitmix64: tiny, good enough for choosing operations, and the same on every platform.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(unsigned percent) { return below(100) < percent; }
  // A duration from 0 to `max`, in microseconds.
  std::chrono::microseconds upto(std::chrono::microseconds max) {
    return std::chrono::microseconds(below(static_cast<std::uint64_t>(max.count()) + 1));
  }
};

std::optional<std::uint64_t> env_number(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text, &end, 0);  // 0x... works too
  if (*end != '\0') {
    ADD_FAILURE() << name << "=\"" << text << "\" is not a number";
    return std::nullopt;
  }
  return n;
}

std::uint64_t run_seed() {
  if (auto s = env_number("KARX_SOAK_SEED")) return *s;
  const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  return SplitMix64{now ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32)}.next();
}

// When to stop: after `rounds` rounds, or after `seconds` when KARX_SOAK_SECONDS is set.
struct Budget {
  int rounds;
  std::optional<Clock::time_point> until;
  bool more(int done) const { return until ? Clock::now() < *until : done < rounds; }
};

Budget budget(int short_rounds) {
  if (auto s = env_number("KARX_SOAK_SECONDS")) return {0, Clock::now() + std::chrono::seconds(*s)};
  return {short_rounds, std::nullopt};
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

karx::RuntimeOptions soak_options() {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.max_threads = 10;            // small, so the cap is reached and must hold
  o.blocking_threshold = 2ms;    // unannounced blocking gets handed off quickly
  o.idle_thread_timeout = 50ms;  // spares come and go within a round
  return o;
}

// Aborts the process, naming the seed, if a test makes no progress at all (a hang in a
// destructor, a block_on that never returns): a hang must fail, not stall the suite.
class Watchdog {
 public:
  Watchdog(std::string what, Clock::duration limit)
      : what_(std::move(what)), thread_([this, limit] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "soak: no progress for too long (%s); aborting\n", what_.c_str());
            std::fflush(stderr);
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }
  void note(std::string what) {
    std::lock_guard lock(mu_);
    what_ = std::move(what);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string what_;
  std::thread thread_;
};

// --- The ledger: what every future and handle of one round did ---------------------------------

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
long value_of(std::uint32_t id) { return static_cast<long>(id) * 7 + 3; }

// Checks one resolved handle: the future is gone by then, and the result agrees with what was
// done to the task (a value only if it completed; "canceled" only if someone canceled it).
void check_result(Ledger& l, const std::optional<long>& r, std::uint32_t id, long expected, bool cancel_requested,
                  const char* where) {
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

// --- Signals: a hand-written future woken by another task or a plain thread --------------------

struct SignalState {
  std::mutex mu;
  bool fired = false;
  std::optional<karx::Waker> waker;
  // Idempotent. Returns true if it woke a waiting future.
  bool fire() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(mu);
      fired = true;
      w.swap(waker);
    }
    if (!w) return false;
    std::move(*w).wake_and_release();
    return true;
  }
};

// Pending until its signal fires, then ready with `value`.
struct WaitSignal {
  std::shared_ptr<SignalState> signal;
  Tracker tracker;
  long value;

  karx::Poll<long> poll(karx::Context& cx) {
    std::optional<karx::Waker> old;  // dropped outside the lock
    std::lock_guard lock(signal->mu);
    if (signal->fired) {
      tracker.done();
      return karx::ready(value);
    }
    if (!signal->waker || !signal->waker->will_wake(cx.waker())) {
      old.swap(signal->waker);
      signal->waker.emplace(cx.waker());
    }
    return karx::pending;
  }
};

// A plain thread that fires signals at given times (an event source outside the runtime). On
// destruction it fires whatever is left at once.
class SignalThread {
 public:
  SignalThread() : thread_([this] { run(); }) {}
  SignalThread(const SignalThread&) = delete;
  SignalThread& operator=(const SignalThread&) = delete;
  ~SignalThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }
  void fire_after(std::shared_ptr<SignalState> s, Clock::duration d) {
    std::lock_guard lock(mu_);
    queue_.emplace(Clock::now() + d, std::move(s));
    cv_.notify_all();
  }
  // Signals this thread fired that woke a waiting future. Counted here, not in a round's
  // ledger: a wake may finish after the round it belongs to has ended.
  long wakes() const { return wakes_.load(std::memory_order_relaxed); }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (queue_.empty()) {
        if (stop_) return;
        cv_.wait(lock);
        continue;
      }
      const auto due = queue_.begin()->first;
      if (!stop_ && Clock::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      std::shared_ptr<SignalState> s = std::move(queue_.begin()->second);
      queue_.erase(queue_.begin());
      lock.unlock();
      if (s->fire()) wakes_.fetch_add(1, std::memory_order_relaxed);
      s.reset();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::multimap<Clock::time_point, std::shared_ptr<SignalState>> queue_;
  std::atomic<long> wakes_{0};
  std::thread thread_;
};

// --- What the tasks do ---------------------------------------------------------------------------

// How long things take: short in the checked rounds, long enough in the shutdown rounds that
// much is still pending, sleeping or blocked when the runtime goes.
struct Durations {
  std::chrono::microseconds sleep;       // sleep_for, up to
  std::chrono::microseconds block;       // inside karx::blocking, up to
  std::chrono::microseconds poll_block;  // an unannounced sleep in a poll: at least the threshold
  std::chrono::microseconds fire_delay;  // a plain thread fires a signal after, up to
  std::chrono::microseconds closure;     // a spawn_blocking closure sleeps, up to
  int spin;                              // yield_now loops, up to
};

constexpr Durations kChecked{2000us, 2000us, 3000us, 2000us, 1000us, 20};
constexpr Durations kShutdown{150000us, 10000us, 8000us, 100000us, 10000us, 300};

struct Env {
  karx::Runtime* rt;
  Ledger* ledger;
  SignalThread* thread;
  Durations d;
};

// Pending `n` times, each time waking its own task from inside the poll (a wake while running).
struct Countdown {
  Tracker tracker;
  int n;
  bool by_ref;
  long value;
  karx::Poll<long> poll(karx::Context& cx) {
    if (n-- > 0) {
      if (by_ref)
        cx.waker().wake();
      else
        karx::Waker(cx.waker()).wake_and_release();
      return karx::pending;
    }
    tracker.done();
    return karx::ready(value);
  }
};

// Blocks its worker in a plain sleep, longer than the blocking threshold, without telling the
// runtime: only the monitor can hand the processor off. Then ready, or once more pending.
struct Blocker {
  Tracker tracker;
  std::chrono::microseconds block;
  bool twice;
  long value;
  karx::Poll<long> poll(karx::Context& cx) {
    std::this_thread::sleep_for(block);
    tracker.ledger().poll_blocks.fetch_add(1, std::memory_order_relaxed);
    if (twice) {
      twice = false;
      cx.waker().wake();
      return karx::pending;
    }
    tracker.done();
    return karx::ready(value);
  }
};

// A spawn_blocking closure.
struct Closure {
  Tracker tracker;
  std::chrono::microseconds sleep;
  long value;
  long operator()() {
    std::this_thread::sleep_for(sleep);
    tracker.done();
    return value;
  }
};

karx::Async<long> inner_step(Tracker t, Env* env, std::uint64_t seed) {
  SplitMix64 rng{seed};
  if (rng.chance(50)) {
    env->ledger->yields.fetch_add(1, std::memory_order_relaxed);
    co_await karx::yield_now();
  } else {
    env->ledger->sleeps.fetch_add(1, std::memory_order_relaxed);
    co_await karx::sleep_for(rng.upto(env->d.sleep));
  }
  t.done();
  co_return 1;
}

karx::Async<long> spinner(Tracker t, Env* env, int n, long value) {
  for (int i = 0; i < n; ++i) co_await karx::yield_now();
  env->ledger->yields.fetch_add(n, std::memory_order_relaxed);
  t.done();
  co_return value;
}

// Fires a signal from inside a task (a wake from another task), after a yield or a sleep.
karx::Async<long> firer(Tracker t, Env* env, std::shared_ptr<SignalState> s, std::uint64_t seed, long value) {
  SplitMix64 rng{seed};
  if (rng.chance(50))
    co_await karx::yield_now();
  else
    co_await karx::sleep_for(rng.upto(env->d.sleep));
  if (s->fire()) env->ledger->task_wakes.fetch_add(1, std::memory_order_relaxed);
  t.done();
  co_return value;
}

// Awaits another task's handle, checks what it yields, then yields its own value.
karx::Async<long> joiner(Tracker t, Child target, long value) {
  Ledger& l = t.ledger();
  l.joins.fetch_add(1, std::memory_order_relaxed);
  std::optional<long> r = co_await target.h;
  check_result(l, r, target.id, target.expected, target.cancel_requested, "joiner");
  t.done();
  co_return value;
}

karx::Async<long> work(Tracker t, Env* env, std::uint64_t seed, int depth, long value);

// Spawns a random child task from inside a task (or from the test thread, depth 0). Throws
// std::logic_error when the runtime is being destroyed.
Child spawn_one(Env* env, SplitMix64& rng, int depth) {
  Ledger& l = *env->ledger;
  Tracker t(l, Kind::root);
  const std::uint32_t id = t.id();
  const long v = value_of(id);
  karx::JoinHandle<long> h;
  const char* what = "work";
  switch (rng.below(5)) {
    case 0:
      h = karx::spawn_on(*env->rt, work(std::move(t), env, rng.next(), depth + 1, v));
      break;
    case 1:
      what = "countdown";
      h = env->rt->spawn(Countdown{std::move(t), static_cast<int>(rng.below(4)), rng.chance(50), v});
      break;
    case 2:
      what = "blocker";
      h = env->rt->spawn(Blocker{std::move(t), env->d.poll_block, rng.chance(30), v});
      break;
    case 3: {
      what = "signal waiter (thread)";
      auto s = std::make_shared<SignalState>();
      env->thread->fire_after(s, rng.upto(env->d.fire_delay));
      h = env->rt->spawn(WaitSignal{s, std::move(t), v});
      break;
    }
    default:
      h = env->rt->spawn(work(std::move(t), env, rng.next(), depth + 1, v));
      break;
  }
  l.spawned.fetch_add(1, std::memory_order_relaxed);
  l.handles.fetch_add(1, std::memory_order_relaxed);
  return Child(std::move(h), id, v, false, &l, what);
}

// A task's body: a few random steps, then its value.
karx::Async<long> work(Tracker t, Env* env, std::uint64_t seed, int depth, long value) {
  Ledger& l = *env->ledger;
  SplitMix64 rng{seed};
  const int steps = 1 + static_cast<int>(rng.below(5));
  for (int i = 0; i < steps; ++i) {
    switch (rng.below(9)) {
      case 0:
        l.yields.fetch_add(1, std::memory_order_relaxed);
        co_await karx::yield_now();
        break;
      case 1:
        l.sleeps.fetch_add(1, std::memory_order_relaxed);
        co_await karx::sleep_for(rng.upto(env->d.sleep));
        break;
      case 2: {
        const auto d = rng.upto(env->d.block);
        l.blocks.fetch_add(1, std::memory_order_relaxed);
        const int r = karx::blocking([d] {
          std::this_thread::sleep_for(d);
          return 1;
        });
        if (r != 1) l.fail("karx::blocking returned the wrong value");
        break;
      }
      case 3:
        if (rng.chance(30)) {  // rare: each one holds a processor until the monitor notices
          l.poll_blocks.fetch_add(1, std::memory_order_relaxed);
          std::this_thread::sleep_for(env->d.poll_block);
        }
        break;
      case 4: {
        const long r = co_await inner_step(Tracker(l, Kind::inner), env, rng.next());
        if (r != 1) l.fail("an inner coroutine returned the wrong value");
        break;
      }
      case 5: {  // woken by a plain thread
        auto s = std::make_shared<SignalState>();
        env->thread->fire_after(s, rng.upto(env->d.fire_delay));
        const long r = co_await WaitSignal{s, Tracker(l, Kind::inner), 5};
        if (r != 5) l.fail("a signal wait returned the wrong value");
        break;
      }
      case 6: {  // woken by another task
        auto s = std::make_shared<SignalState>();
        std::optional<Child> fire;
        try {
          Tracker ft(l, Kind::root);
          const std::uint32_t id = ft.id();
          fire.emplace(env->rt->spawn(firer(std::move(ft), env, s, rng.next(), value_of(id))), id, value_of(id), false,
                       &l);
          l.spawned.fetch_add(1, std::memory_order_relaxed);
          l.spawned_inside.fetch_add(1, std::memory_order_relaxed);
          l.handles.fetch_add(1, std::memory_order_relaxed);
        } catch (const std::logic_error&) {
          l.spawn_refused.fetch_add(1, std::memory_order_relaxed);
          if (!l.shutdown_mode) l.fail("spawn from a task threw on a live runtime");
          break;  // nobody would fire the signal
        }
        const long r = co_await WaitSignal{s, Tracker(l, Kind::inner), 6};
        if (r != 6) l.fail("a signal wait returned the wrong value");
        if (rng.chance(50)) {
          std::optional<long> fr = co_await fire->h;
          check_result(l, fr, fire->id, fire->expected, false, "firer");
        } else {
          fire->h.detach();
          l.detached.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      default: {  // spawn a child from inside, then await it, cancel it, or detach it
        if (depth >= 2) break;
        std::optional<Child> child;
        try {
          child.emplace(spawn_one(env, rng, depth));
          l.spawned_inside.fetch_add(1, std::memory_order_relaxed);
        } catch (const std::logic_error&) {
          l.spawn_refused.fetch_add(1, std::memory_order_relaxed);
          if (!l.shutdown_mode) l.fail("spawn from a task threw on a live runtime");
          break;
        }
        const auto what = rng.below(3);
        if (what == 2) {
          child->h.detach();
          l.detached.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        if (what == 1) {
          if (rng.chance(50)) co_await karx::yield_now();
          child->h.cancel();
          child->cancel_requested = true;
          l.cancels.fetch_add(1, std::memory_order_relaxed);
        }
        l.joins.fetch_add(1, std::memory_order_relaxed);
        std::optional<long> r = co_await child->h;
        check_result(l, r, child->id, child->expected, child->cancel_requested, "parent");
        break;
      }
    }
  }
  t.done();
  co_return value;
}

// --- Awaiting from the test thread -----------------------------------------------------------------

// karx::block_on with a deadline, so a lost wake fails the round (with its seed) instead of
// hanging. nullopt: still pending at the deadline.
std::optional<std::optional<long>> await_for(karx::JoinHandle<long>& h, Clock::duration limit) {
  struct Wake {
    std::mutex mu;
    std::condition_variable cv;
    bool woken = false;
  };
  auto w = std::make_shared<Wake>();
  karx::Waker waker = karx::waker_fn([w] {
    std::lock_guard lock(w->mu);
    w->woken = true;
    w->cv.notify_all();
  });
  karx::Context cx(waker);
  const auto deadline = Clock::now() + limit;
  for (;;) {
    auto p = h.poll(cx);
    if (p.is_ready()) return std::move(p).value();
    std::unique_lock lock(w->mu);
    if (!w->cv.wait_until(lock, deadline, [&] { return w->woken; })) return std::nullopt;
    w->woken = false;
  }
}

template <class Pred>
bool eventually(Pred pred, Clock::duration limit = kHang) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A handle held by the test thread.
struct Held {
  karx::JoinHandle<long> h;
  std::uint32_t id;
  long expected;
  bool cancel_requested = false;
  std::shared_ptr<SignalState> signal;  // fired before awaiting: its task may wait on it
  std::string what;                     // what the task is, for failure messages
};

// --- One round ------------------------------------------------------------------------------------

// Totals over a test, printed at the end.
struct Summary {
  long rounds = 0, tasks = 0, inside = 0, blocking = 0, cancels = 0, canceled = 0, detached = 0, blocks = 0,
       poll_blocks = 0, sleeps = 0, yields = 0, joins = 0, wakes = 0, refused = 0, lingering = 0;
  void add(const Ledger& l) {
    ++rounds;
    tasks += l.spawned;
    inside += l.spawned_inside;
    blocking += l.blocking_spawned;
    cancels += l.cancels;
    canceled += l.canceled;
    detached += l.detached;
    blocks += l.blocks;
    poll_blocks += l.poll_blocks;
    sleeps += l.sleeps;
    yields += l.yields;
    joins += l.joins;
    wakes += l.task_wakes + l.thread_wakes;
    refused += l.spawn_refused;
  }
};

// The test thread's part of a round: `ops` random operations on the runtime in `env`.
class Driver {
 public:
  // `env` must outlive every task the driver starts (detached ones finish after it is gone).
  Driver(Env* env, std::uint64_t seed) : env_(*env), l_(*env->ledger), rng_{seed} {}

  void run(int ops) {
    for (int i = 0; i < ops && l_.errors == 0; ++i) {
      step();
      if (held_.size() > 48 && !l_.shutdown_mode) resolve(0);
    }
  }

  // Fires every signal this driver made (from the test thread: a wake from a plain thread).
  void fire_all() {
    for (auto& s : signals_)
      if (s->fire()) l_.thread_wakes.fetch_add(1, std::memory_order_relaxed);
    signals_.clear();
  }

  // Awaits every handle still held, with a deadline (stopping at the first hang: each of
  // the rest could wait as long).
  void resolve_all() {
    while (!held_.empty() && !hung_) resolve(held_.size() - 1);
  }

  // After the runtime is gone: every handle must resolve (through karx::block_on, as a user
  // would; the watchdog catches a hang).
  void block_on_all() {
    for (Held& x : held_) {
      const std::optional<long> r = karx::block_on(std::move(x.h));
      check_result(l_, r, x.id, x.expected, x.cancel_requested, "after ~Runtime");
    }
    held_.clear();
  }

 private:
  void step() {
    const bool checked = !l_.shutdown_mode;
    const auto op = rng_.below(100);
    if (op < 22) {
      keep(spawn_one(&env_, rng_, 0));
    } else if (op < 30) {  // a hand-written future woken by a plain thread (or, in the
                           // shutdown rounds, sometimes only after the runtime is gone)
      Tracker t(l_, Kind::root);
      const auto id = t.id();
      auto s = std::make_shared<SignalState>();
      if (checked || rng_.chance(75)) env_.thread->fire_after(s, rng_.upto(env_.d.fire_delay));
      signals_.push_back(s);
      keep(Child(env_.rt->spawn(WaitSignal{s, std::move(t), value_of(id)}), id, value_of(id), false, &l_,
                 "signal waiter (test thread)"),
           s);
      count_spawn();
    } else if (op < 38) {  // a waiter and the task that wakes it
      auto s = std::make_shared<SignalState>();
      signals_.push_back(s);
      Tracker wt(l_, Kind::root);
      const auto wid = wt.id();
      keep(Child(env_.rt->spawn(WaitSignal{s, std::move(wt), value_of(wid)}), wid, value_of(wid), false, &l_,
                 "signal waiter (task)"),
           s);
      count_spawn();
      Tracker ft(l_, Kind::root);
      const auto fid = ft.id();
      keep(Child(env_.rt->spawn(firer(std::move(ft), &env_, s, rng_.next(), value_of(fid))), fid, value_of(fid), false,
                 &l_, "firer"));
      count_spawn();
    } else if (op < 42) {
      Tracker t(l_, Kind::root);
      const auto id = t.id();
      keep(Child(env_.rt->spawn(Blocker{std::move(t), env_.d.poll_block, rng_.chance(30), value_of(id)}), id,
                 value_of(id), false, &l_, "blocker"));
      count_spawn();
    } else if (op < 47) {
      Tracker t(l_, Kind::root);
      const auto id = t.id();
      keep(Child(
          env_.rt->spawn(spinner(std::move(t), &env_, 1 + static_cast<int>(rng_.below(env_.d.spin)), value_of(id))), id,
          value_of(id), false, &l_, "spinner"));
      count_spawn();
    } else if (op < 53) {
      Tracker t(l_, Kind::closure);
      const auto id = t.id();
      keep(Child(env_.rt->spawn_blocking(Closure{std::move(t), rng_.upto(env_.d.closure), value_of(id)}), id,
                 value_of(id), false, &l_, "spawn_blocking closure"));
      l_.blocking_spawned.fetch_add(1, std::memory_order_relaxed);
      l_.handles.fetch_add(1, std::memory_order_relaxed);
    } else if (op < 61) {  // a task that awaits another one's handle
      if (held_.empty()) return;
      const std::size_t i = rng_.below(held_.size());
      Held target = take(i);
      Tracker t(l_, Kind::root);
      const auto id = t.id();
      Child c(std::move(target.h), target.id, target.expected, target.cancel_requested, &l_);
      keep(Child(env_.rt->spawn(joiner(std::move(t), std::move(c), value_of(id))), id, value_of(id), false, &l_,
                 "joiner"),
           target.signal, " of " + target.what + " " + std::to_string(target.id));
      count_spawn();
    } else if (op < 73) {
      if (held_.empty()) return;
      Held& x = held_[rng_.below(held_.size())];
      x.h.cancel();
      x.cancel_requested = true;
      l_.cancels.fetch_add(1, std::memory_order_relaxed);
    } else if (op < 79) {
      if (held_.empty()) return;
      Held x = take(rng_.below(held_.size()));
      x.h.detach();
      l_.detached.fetch_add(1, std::memory_order_relaxed);
    } else if (op < 86) {
      if (held_.empty() || !checked) return;
      resolve(rng_.below(held_.size()));
    } else if (op < 89) {  // the calling thread runs tasks as a guest
      if (!checked) return;
      Tracker t(l_, Kind::root);
      const auto id = t.id();
      count_spawn();
      const long r = env_.rt->block_on(work(std::move(t), &env_, rng_.next(), 1, value_of(id)));
      check_result(l_, r, id, value_of(id), false, "Runtime::block_on");
    } else if (op < 94) {  // a plain thread (this one) wakes a waiting task
      if (signals_.empty()) return;
      const std::size_t i = rng_.below(signals_.size());
      if (signals_[i]->fire()) l_.thread_wakes.fetch_add(1, std::memory_order_relaxed);
      signals_.erase(signals_.begin() + static_cast<long>(i));
    } else {
      keep(spawn_one(&env_, rng_, 1));
    }
  }

  // A spawn by the test thread: one task, one handle.
  void count_spawn() {
    l_.spawned.fetch_add(1, std::memory_order_relaxed);
    l_.handles.fetch_add(1, std::memory_order_relaxed);
  }

  void keep(Child c, std::shared_ptr<SignalState> signal = nullptr, const std::string& more = "") {
    if (!c.h) ADD_FAILURE() << "a spawn returned an empty handle";
    held_.push_back(Held{std::move(c.h), c.id, c.expected, c.cancel_requested, std::move(signal), c.what + more});
  }

  Held take(std::size_t i) {
    Held x = std::move(held_[i]);
    held_.erase(held_.begin() + static_cast<long>(i));
    return x;
  }

  void resolve(std::size_t i) {
    Held x = take(i);
    if (x.signal && x.signal->fire()) l_.thread_wakes.fetch_add(1, std::memory_order_relaxed);
    const auto r = await_for(x.h, kHang);
    if (!r) {
      hung_ = true;
      const karx::RuntimeMetrics m = env_.rt->metrics();
      l_.fail("handle of task " + std::to_string(x.id) + " (" + x.what + (x.cancel_requested ? ", canceled" : "") +
              ") never resolved; runtime: threads " + std::to_string(m.threads) + ", idle " +
              std::to_string(m.idle_threads) + ", injector " + std::to_string(m.injector_depth) + ", spawned " +
              std::to_string(m.tasks_spawned) + ", completed " + std::to_string(m.tasks_completed));
      return;
    }
    check_result(l_, *r, x.id, x.expected, x.cancel_requested, "test thread");
  }

  Env& env_;
  Ledger& l_;
  SplitMix64 rng_;
  std::vector<Held> held_;
  std::vector<std::shared_ptr<SignalState>> signals_;
  bool hung_ = false;
};

void report(const Ledger& l) {
  for (const std::string& m : l.messages()) ADD_FAILURE() << m;
  if (l.errors > static_cast<long>(l.messages().size()))
    ADD_FAILURE() << (l.errors - static_cast<long>(l.messages().size())) << " more failures";
}

// Samples the runtime's thread count while it lives.
class ThreadWatch {
 public:
  explicit ThreadWatch(const karx::Runtime& rt)
      : thread_([this, &rt] {
          while (!stop_.load()) {
            const auto t = rt.metrics().threads;
            if (t > peak_.load()) peak_.store(t);
            std::this_thread::sleep_for(1ms);
          }
        }) {}
  ~ThreadWatch() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t peak() const { return peak_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> peak_{0};
  std::thread thread_;
};

constexpr std::size_t kLedgerCapacity = 1 << 20;

// --- The tests ------------------------------------------------------------------------------------

TEST(Soak, RandomMixOnOneRuntimeKeepsEveryInvariant) {
  const std::uint64_t seed = run_seed();
  SCOPED_TRACE("KARX_SOAK_SEED=" + hex(seed));
  std::printf("soak: KARX_SOAK_SEED=%s\n", hex(seed).c_str());
  std::fflush(stdout);
  const Budget b = budget(40);
  Watchdog watchdog("seed " + hex(seed), (b.until ? *b.until - Clock::now() : 0s) + 240s);

  const karx::RuntimeOptions options = soak_options();
  karx::Runtime rt(options);
  SignalThread signal_thread;
  ThreadWatch watch(rt);
  SplitMix64 seeds{seed};
  Summary sum;
  const auto start = Clock::now();
  bool failed = false;
  for (int round = 0; b.more(round) && !failed; ++round) {
    const std::uint64_t round_seed = round == 0 ? seed : seeds.next();
    SCOPED_TRACE("round " + std::to_string(round) + ", round seed KARX_SOAK_SEED=" + hex(round_seed));
    watchdog.note("round " + std::to_string(round) + ", seed " + hex(round_seed));
    const karx::RuntimeMetrics before = rt.metrics();

    Ledger l(kLedgerCapacity, false);
    Env env{&rt, &l, &signal_thread, kChecked};
    {
      Driver driver(&env, round_seed);
      driver.run(150);
      driver.fire_all();
      driver.resolve_all();
    }
    // Detached tasks and their children finish on their own.
    EXPECT_TRUE(eventually([&] { return l.alive() == 0; })) << l.alive() << " futures still alive:" << l.undestroyed();
    EXPECT_EQ(l.undestroyed(), "");
    EXPECT_EQ(l.constructed.load(), l.destroyed.load());
    EXPECT_EQ(l.handles.load(), l.resolved + l.detached + l.dropped) << "a handle was neither resolved nor detached";
    // The runtime counts a completion just after the future returned ready (a coroutine frame
    // may be gone before that): wait for the counters to settle, then they must match exactly.
    auto delta = [&](auto field) { return static_cast<long>(rt.metrics().*field - before.*field); };
    eventually([&] { return delta(&karx::RuntimeMetrics::tasks_completed) >= l.roots_done; }, 10s);
    EXPECT_EQ(delta(&karx::RuntimeMetrics::tasks_spawned), l.spawned.load());
    EXPECT_EQ(delta(&karx::RuntimeMetrics::tasks_completed), l.roots_done.load());
    EXPECT_EQ(l.spawned.load(), l.roots_done + l.roots_undone) << "a task's future was never destroyed";
    EXPECT_EQ(delta(&karx::RuntimeMetrics::blocking_tasks), l.blocking_spawned.load());
    EXPECT_LE(l.canceled.load(), l.cancels.load()) << "more tasks canceled than cancel calls";
    EXPECT_EQ(l.spawn_refused.load(), 0);
    report(l);
    sum.add(l);
    failed = ::testing::Test::HasFailure();
    if (failed) std::printf("soak: failed in round %d, round seed KARX_SOAK_SEED=%s\n", round, hex(round_seed).c_str());
  }

  // Idle now: spare threads, idle workers and the blocking pool's threads time out, leaving the
  // monitor. Polled with a generous deadline (the timeout is 50 ms).
  EXPECT_TRUE(eventually([&] { return rt.metrics().threads <= 1; }, 30s))
      << rt.metrics().threads << " threads still alive after the idle timeout";
  watch.stop();
  const karx::RuntimeMetrics m = rt.metrics();
  EXPECT_LE(watch.peak(), options.max_threads) << "the thread cap was exceeded";
  EXPECT_LE(m.threads, options.max_threads);
  if (sum.blocks > 0) EXPECT_GT(m.handoffs, 0u) << "karx::blocking inside tasks made no handoff";

  sum.wakes += signal_thread.wakes();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "soak: %.1f s, %ld rounds, %ld tasks (%ld spawned inside tasks) + %ld spawn_blocking, %ld cancels -> %ld "
      "canceled, %ld detached, %ld joins, %ld blocking calls, %ld blocked polls, %ld sleeps, %ld yields, %ld wakes; "
      "runtime: %llu polls, %llu steals, %llu handoffs, threads peak %llu (cap %u), %llu threads started\n",
      secs, sum.rounds, sum.tasks, sum.inside, sum.blocking, sum.cancels, sum.canceled, sum.detached, sum.joins,
      sum.blocks, sum.poll_blocks, sum.sleeps, sum.yields, sum.wakes, static_cast<unsigned long long>(m.tasks_polled),
      static_cast<unsigned long long>(m.steals), static_cast<unsigned long long>(m.handoffs),
      static_cast<unsigned long long>(watch.peak()), options.max_threads,
      static_cast<unsigned long long>(m.threads_started));
  std::fflush(stdout);
  RecordProperty("seed", hex(seed));
  RecordProperty("rounds", std::to_string(sum.rounds));
  RecordProperty("tasks", std::to_string(sum.tasks));
  RecordProperty("cancels", std::to_string(sum.cancels));
  RecordProperty("blocks", std::to_string(sum.blocks + sum.poll_blocks));
  RecordProperty("handoffs", std::to_string(m.handoffs));
  RecordProperty("threads_peak", std::to_string(watch.peak()));
}

TEST(Soak, RuntimeDestroyedMidFlightResolvesEveryHandle) {
  const std::uint64_t seed = run_seed();
  SCOPED_TRACE("KARX_SOAK_SEED=" + hex(seed));
  std::printf("soak (shutdown): KARX_SOAK_SEED=%s\n", hex(seed).c_str());
  std::fflush(stdout);
  const Budget b = budget(20);
  Watchdog watchdog("seed " + hex(seed), (b.until ? *b.until - Clock::now() : 0s) + 240s);

  SignalThread signal_thread;  // outlives every runtime: some of its wakes land after one is gone
  SplitMix64 seeds{seed};
  Summary sum;
  long in_flight = 0;  // futures alive when a runtime's destruction began
  const auto start = Clock::now();
  bool failed = false;
  for (int round = 0; b.more(round) && !failed; ++round) {
    const std::uint64_t round_seed = round == 0 ? seed : seeds.next();
    SCOPED_TRACE("round " + std::to_string(round) + ", round seed KARX_SOAK_SEED=" + hex(round_seed));
    watchdog.note("shutdown round " + std::to_string(round) + ", seed " + hex(round_seed));
    SplitMix64 rng{round_seed};

    auto l = std::make_unique<Ledger>(kLedgerCapacity, true);
    Env env{nullptr, l.get(), &signal_thread, kShutdown};
    std::optional<Driver> driver;
    long alive_after = 0;
    {
      karx::Runtime rt(soak_options());
      env.rt = &rt;
      driver.emplace(&env, rng.next());
      driver->run(40 + static_cast<int>(rng.below(80)));
      // Destroy at once, or once part of the work has been polled (the rest still queued).
      if (const auto share = rng.below(3); share != 0) {
        const auto want = static_cast<std::uint64_t>(l->spawned) * (share + 1) / 4;
        eventually([&] { return rt.metrics().tasks_polled >= want; }, 2s);
      }
      in_flight += l->alive();
    }  // ~Runtime: pending, sleeping, queued and blocked tasks are all in flight here
    env.rt = nullptr;
    // ~Runtime destroys every future it has not finished: none may be left now.
    alive_after = l->alive();
    EXPECT_EQ(alive_after, 0) << "futures outlived ~Runtime (destroyed later, on a thread delivering their wake: "
                                 "see SoakShutdown below)";
    driver->block_on_all();
    // Signals never fired wake tasks of a runtime that is gone: a no-op.
    driver->fire_all();
    driver.reset();
    // Even so, each must go in the end, exactly once.
    EXPECT_TRUE(eventually([&] { return l->alive() == 0; }))
        << l->alive() << " futures still alive after ~Runtime:" << l->undestroyed();
    EXPECT_EQ(l->undestroyed(), "");
    EXPECT_EQ(l->constructed.load(), l->destroyed.load());
    report(*l);
    sum.add(*l);
    sum.lingering += alive_after;
    failed = ::testing::Test::HasFailure();
    if (failed)
      std::printf("soak (shutdown): failed in round %d, round seed KARX_SOAK_SEED=%s\n", round,
                  hex(round_seed).c_str());
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "soak (shutdown): %.1f s, %ld runtimes destroyed mid-flight with %ld futures alive, %ld tasks (%ld spawned "
      "inside tasks, %ld refused during destruction) + %ld spawn_blocking, %ld cancels, %ld handles yielded "
      "canceled, %ld futures outlived ~Runtime\n",
      secs, sum.rounds, in_flight, sum.tasks, sum.inside, sum.refused, sum.blocking, sum.cancels, sum.canceled,
      sum.lingering);
  std::fflush(stdout);
  RecordProperty("seed", hex(seed));
  RecordProperty("rounds", std::to_string(sum.rounds));
  RecordProperty("tasks", std::to_string(sum.tasks));
  RecordProperty("canceled", std::to_string(sum.canceled));
}

}  // namespace

// --- Reductions of what the soak found ----------------------------------------------------------
//
// SoakThreadCap: work queued while the thread cap is reached must still run once threads are
// free again: the cap may delay a task, never strand it. Each test fills the cap with one kind
// of thread and queues work that needs the other kind.
// SoakShutdown: a wake delivered by another thread while the runtime is destroyed must not
// leave that task's future to be destroyed after ~Runtime has returned.

namespace {

karx::Async<long> seven() { co_return 7; }

karx::Async<long> sleeps_in_poll_for(std::chrono::milliseconds d) {
  std::this_thread::sleep_for(d);  // holds the worker without telling the runtime
  co_return 1;
}

karx::RuntimeOptions one_spare_thread() {
  karx::RuntimeOptions o;
  o.processors = 1;
  o.max_threads = 2;           // the monitor and one more thread
  o.blocking_threshold = 60s;  // no handoff: it could not start a thread anyway
  // Idle threads never time out here: only the runtime asking an idle thread of the other
  // kind to leave can make room under the cap.
  o.idle_thread_timeout = 1h;
  return o;
}

TEST(SoakThreadCap, ATaskSpawnedWhileTheBlockingPoolHoldsTheCapRunsLater) {
  karx::Runtime rt(one_spare_thread());
  auto closure = rt.spawn_blocking([] {
    std::this_thread::sleep_for(100ms);
    return 1;
  });
  // The blocking pool's thread is the last one the cap allows: no worker can start now.
  ASSERT_TRUE(eventually([&] { return rt.metrics().threads == 2; }, 5s));
  auto task = rt.spawn(seven());
  EXPECT_EQ(karx::block_on(std::move(closure)), std::optional<int>(1));
  // The pool thread is free (idle, holding the last place under the cap): the task must run.
  const auto r = await_for(task, 10s);
  ASSERT_TRUE(r.has_value()) << "the task never ran: threads " << rt.metrics().threads << ", injector "
                             << rt.metrics().injector_depth;
  EXPECT_EQ(*r, std::optional<long>(7));
}

TEST(SoakThreadCap, SpawnBlockingWhileAWorkerHoldsTheCapRunsLater) {
  karx::Runtime rt(one_spare_thread());
  auto busy = rt.spawn(sleeps_in_poll_for(100ms));
  // The worker is the last thread the cap allows: no blocking-pool thread can start now.
  ASSERT_TRUE(eventually([&] { return rt.metrics().tasks_polled == 1; }, 5s));
  auto closure = rt.spawn_blocking([] { return 7L; });
  EXPECT_EQ(karx::block_on(std::move(busy)), std::optional<long>(1));
  // The worker is free (idle, holding the last place under the cap): the closure must run.
  const auto r = await_for(closure, 10s);
  ASSERT_TRUE(r.has_value()) << "the closure never ran: threads " << rt.metrics().threads;
  EXPECT_EQ(*r, std::optional<long>(7));
}

// Where a task's latest waker is kept for another thread to wake, again and again.
struct WakerBox {
  std::mutex mu;
  std::optional<karx::Waker> waker;
  void wake() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(mu);
      w = waker;
    }
    if (w) w->wake();
  }
};

thread_local bool on_waking_thread = false;

// Pending forever; keeps the waker of its latest poll in its box. Counts its destructions
// that run on the waking thread.
struct Pinged {
  std::shared_ptr<WakerBox> box;
  Tracker tracker;
  std::atomic<int>* destroyed_by_waker;
  Pinged(std::shared_ptr<WakerBox> b, Tracker t, std::atomic<int>* d)
      : box(std::move(b)), tracker(std::move(t)), destroyed_by_waker(d) {}
  Pinged(Pinged&&) = default;
  ~Pinged() {
    if (box && on_waking_thread) destroyed_by_waker->fetch_add(1);
  }
  karx::Poll<long> poll(karx::Context& cx) {
    std::optional<karx::Waker> old;  // dropped outside the lock
    std::lock_guard lock(box->mu);
    old.swap(box->waker);
    box->waker.emplace(cx.waker());
    return karx::pending;
  }
};

// ~Runtime destroys the future of every task it has not finished, including those whose wake
// another thread is delivering at that moment: when it returns, none is left.
TEST(SoakShutdown, NoFutureOutlivesTheRuntimeWhileAnotherThreadWakesTasks) {
  constexpr int kTasks = 256, kRounds = 500;
  int late_rounds = 0;
  long late_futures = 0;
  std::atomic<int> destroyed_by_waker{0};
  for (int round = 0; round < kRounds; ++round) {
    Ledger l(kTasks, true);
    std::vector<std::shared_ptr<WakerBox>> slots;
    std::vector<karx::JoinHandle<long>> handles;
    std::atomic<bool> stop{false};
    std::thread waker;
    long alive_after = 0;
    {
      karx::Runtime rt(soak_options());
      for (int i = 0; i < kTasks; ++i) {
        slots.push_back(std::make_shared<WakerBox>());
        handles.push_back(rt.spawn(Pinged(slots.back(), Tracker(l, Kind::root), &destroyed_by_waker)));
      }
      ASSERT_TRUE(eventually([&] { return rt.metrics().tasks_polled >= kTasks; }));
      // Wakes every task over and over until the runtime is gone.
      waker = std::thread([&] {
        on_waking_thread = true;
        while (!stop.load())
          for (auto& s : slots) s->wake();
      });
    }  // ~Runtime, while the other thread keeps waking the tasks
    alive_after = l.alive();
    stop.store(true);
    waker.join();
    for (auto& h : handles) EXPECT_FALSE(karx::block_on(std::move(h)).has_value());
    EXPECT_TRUE(eventually([&] { return l.alive() == 0; }));
    if (alive_after != 0) {
      ++late_rounds;
      late_futures += alive_after;
    }
  }
  EXPECT_EQ(late_rounds, 0) << late_futures << " futures were destroyed after ~Runtime returned (in " << late_rounds
                            << " of " << kRounds << " runtimes), on the thread delivering their wake (which destroyed "
                            << destroyed_by_waker.load() << " futures in all, most before ~Runtime returned)";
}

}  // namespace
