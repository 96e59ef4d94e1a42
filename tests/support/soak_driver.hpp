// The test thread's part of a soak round: a Driver that draws random operations on the runtime
// (spawns, cancels, detaches, wakes, awaits) and holds the handles it gets back.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/soak_config.hpp"
#include "support/soak_ledger.hpp"
#include "support/soak_signals.hpp"
#include "support/soak_tasks.hpp"
#include "support/soak_wait.hpp"

import karx;

namespace soak {

// A handle held by the test thread.
struct Held {
  karx::JoinHandle<long> h;
  std::uint32_t id;
  long expected;
  bool cancel_requested = false;
  std::shared_ptr<SignalState> signal;  // fired before awaiting: its task may wait on it
  std::string what;                     // what the task is, for failure messages
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

}  // namespace soak
