// karx::sim::Simulation: seeded, replayable interleavings; virtual time; deadlock reports; and
// a seed search finding a real ordering bug that the fixed code never shows.
#include <gtest/gtest.h>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;
using karx::sim::Simulation;

static_assert(karx::Executor<Simulation>);

karx::Async<> record(int id, std::vector<int>* trace) {
  for (int i = 0; i < 3; ++i) {
    trace->push_back(id);
    co_await karx::yield_now();
  }
}

std::vector<int> interleaving(std::uint64_t seed) {
  Simulation sim(seed);
  std::vector<int> trace;
  for (int id = 0; id < 6; ++id) sim.spawn(record(id, &trace)).detach();
  sim.run();
  return trace;
}

TEST(Simulation, TheSameSeedReplaysTheSameInterleavingAndOthersDiffer) {
  EXPECT_EQ(interleaving(42), interleaving(42));
  EXPECT_EQ(interleaving(42).size(), 18u);
  std::set<std::vector<int>> seen;
  for (std::uint64_t seed = 0; seed < 20; ++seed) seen.insert(interleaving(seed));
  EXPECT_GT(seen.size(), 10u) << "the seed should decide the order";
}

karx::Async<int> sleeps(std::chrono::milliseconds d, std::vector<int>* woke) {
  co_await karx::sleep_for(d);
  woke->push_back(static_cast<int>(d.count()));
  co_return static_cast<int>(d.count());
}

TEST(Simulation, VirtualTimeJumpsToTheNextTimerWithoutWaiting) {
  Simulation sim(1);
  std::vector<int> woke;
  const auto real_start = std::chrono::steady_clock::now();
  EXPECT_EQ(sim.block_on(sleeps(std::chrono::hours(1), &woke)), 3600000);
  EXPECT_LT(std::chrono::steady_clock::now() - real_start, 5s) << "an hour of virtual time took real time";
  EXPECT_EQ(sim.now() - Simulation::start_time(), std::chrono::hours(1));

  woke.clear();
  for (int ms : {30, 10, 20}) sim.spawn(sleeps(std::chrono::milliseconds(ms), &woke)).detach();
  sim.run();
  EXPECT_EQ(woke, (std::vector<int>{10, 20, 30}));
  EXPECT_EQ(sim.now() - Simulation::start_time(), std::chrono::hours(1) + 30ms);
}

struct Never {
  karx::Poll<int> poll(karx::Context&) { return karx::pending; }
};

TEST(Simulation, ADeadlockIsReportedWithItsSeed) {
  Simulation sim(7);
  try {
    sim.block_on(Never{});
    FAIL() << "block_on returned from a future that can never complete";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("deadlock with seed 7"), std::string::npos) << e.what();
  }
}

TEST(Simulation, DestroyingItCancelsWhatIsStillPending) {
  std::vector<int> woke;
  std::optional<karx::JoinHandle<int>> handle;
  {
    Simulation sim(3);
    handle = sim.spawn(sleeps(1s, &woke));
    sim.step();  // polled once: now waiting on a virtual timer
  }
  EXPECT_EQ(karx::block_on(std::move(*handle)), std::nullopt);
  EXPECT_TRUE(woke.empty());
}

// The ordering bug: check-then-act across a suspension point. Two withdrawals of 60 from an
// account of 100 both pass the check if each runs it before the other acts.
struct Account {
  int balance = 100;
};

karx::Async<> withdraw_buggy(Account* account, int amount) {
  if (account->balance >= amount) {
    co_await karx::yield_now();  // e.g. an audit log write: other tasks run here
    account->balance -= amount;
  }
}

karx::Async<> withdraw_fixed(Account* account, int amount) {
  if (account->balance >= amount) {
    account->balance -= amount;  // act on what was checked before suspending
    co_await karx::yield_now();
  }
}

template <class Withdraw>
bool overdrawn(std::uint64_t seed, Withdraw withdraw) {
  Simulation sim(seed);
  Account account;
  sim.spawn(withdraw(&account, 60)).detach();
  sim.spawn(withdraw(&account, 60)).detach();
  sim.run();
  return account.balance < 0;
}

TEST(Simulation, ASeedSearchFindsTheOrderingBugAndItsSeedReplaysIt) {
  std::vector<std::uint64_t> failing;
  for (std::uint64_t seed = 0; seed < 200; ++seed)
    if (overdrawn(seed, withdraw_buggy)) failing.push_back(seed);
  ASSERT_FALSE(failing.empty()) << "no seed exposed the check-then-act race";
  EXPECT_LT(failing.size(), 200u) << "some orders are fine: the bug depends on the interleaving";
  for (std::uint64_t seed : failing)
    EXPECT_TRUE(overdrawn(seed, withdraw_buggy)) << "seed " << seed << " did not replay";

  for (std::uint64_t seed = 0; seed < 200; ++seed) EXPECT_FALSE(overdrawn(seed, withdraw_fixed)) << "seed " << seed;
}

}  // namespace
