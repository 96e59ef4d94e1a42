// Soak test of the runtime: a seeded random mix of spawns (coroutines and hand-written
// futures), cancels, detaches, wakes from other tasks and from plain threads, blocking calls
// (announced with karx::blocking and unannounced sleeps inside a poll, which the monitor must
// detect), timers, yields, spawns from inside tasks, spawn_blocking and tasks awaiting each
// other's handles, on a runtime with 2 processors and a small thread cap. After each round it
// checks what must hold whatever the interleaving: every future destroyed exactly once, every
// handle resolved with a result consistent with what was done to it, the runtime's counters
// matching the test's own, and the thread count going back down once the runtime is idle.
// A second test destroys runtimes with work in flight and checks the same of what is left.
// Reductions of what the soak has found are in thread_cap_test.cpp and shutdown_race_test.cpp.
//
// Environment:
//   KARX_SOAK_SEED=<n>     replays a run (the seed is printed; it fixes the operations each
//                          round draws, not the threads' interleaving). A failing round prints
//                          its own seed: replaying that seed runs that round first.
//   KARX_SOAK_SECONDS=<n>  the long form: each test loops rounds for n seconds (default: a
//                          fixed, small number of rounds, short enough for the sanitizer runs).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "support/soak_config.hpp"
#include "support/soak_driver.hpp"
#include "support/soak_ledger.hpp"
#include "support/soak_signals.hpp"
#include "support/soak_tasks.hpp"
#include "support/soak_wait.hpp"

namespace {

using namespace std::chrono_literals;
using namespace soak;

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
                                 "see ShutdownRace, in shutdown_race_test.cpp)";
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
