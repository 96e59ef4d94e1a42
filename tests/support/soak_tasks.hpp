// What the soak tests' tasks do: hand-written futures and coroutines that yield, sleep, block,
// wake each other, spawn, cancel, detach and await children, recording it all in the ledger.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "support/soak_config.hpp"
#include "support/soak_ledger.hpp"
#include "support/soak_signals.hpp"

import karx;

namespace soak {

using namespace std::chrono_literals;

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

inline constexpr Durations kChecked{2000us, 2000us, 3000us, 2000us, 1000us, 20};
inline constexpr Durations kShutdown{150000us, 10000us, 8000us, 100000us, 10000us, 300};

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

inline karx::Async<long> inner_step(Tracker t, Env* env, std::uint64_t seed) {
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

inline karx::Async<long> spinner(Tracker t, Env* env, int n, long value) {
  for (int i = 0; i < n; ++i) co_await karx::yield_now();
  env->ledger->yields.fetch_add(n, std::memory_order_relaxed);
  t.done();
  co_return value;
}

// Fires a signal from inside a task (a wake from another task), after a yield or a sleep.
inline karx::Async<long> firer(Tracker t, Env* env, std::shared_ptr<SignalState> s, std::uint64_t seed, long value) {
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
inline karx::Async<long> joiner(Tracker t, Child target, long value) {
  Ledger& l = t.ledger();
  l.joins.fetch_add(1, std::memory_order_relaxed);
  std::optional<long> r = co_await target.h;
  check_result(l, r, target.id, target.expected, target.cancel_requested, "joiner");
  t.done();
  co_return value;
}

inline karx::Async<long> work(Tracker t, Env* env, std::uint64_t seed, int depth, long value);

// Spawns a random child task from inside a task (or from the test thread, depth 0). Throws
// std::logic_error when the runtime is being destroyed.
inline Child spawn_one(Env* env, SplitMix64& rng, int depth) {
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
inline karx::Async<long> work(Tracker t, Env* env, std::uint64_t seed, int depth, long value) {
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

}  // namespace soak
