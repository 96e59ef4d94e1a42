// karx.sync under the simulation executor: many seeds, each a different interleaving of sends,
// receives, closes, locks and acquires, with waits abandoned at random await points. Each seed
// checks the invariants: every value received once, nothing received that was not sent, the
// lock never shared, permits conserved, no lost wake-up (a lost one is a deadlock, which the
// simulation reports with the seed to replay).
#include <gtest/gtest.h>

#include <coroutine>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "support/probes.hpp"

namespace {

using karx::sim::Simulation;

// Awaits `inner` but gives up after `patience` pending polls (destroying it where it stands):
// the abandoned wait at an await point. Yields nullopt when it gave up.
template <class F>
class Impatient {
 public:
  using Out = karx::output_of<F>;
  Impatient(F inner, int patience) : inner_(std::move(inner)), patience_(patience) {}
  karx::Poll<std::optional<Out>> poll(karx::Context& cx) {
    auto p = inner_->poll(cx);
    if (p.is_ready()) return karx::Poll<std::optional<Out>>::ready(std::optional<Out>(std::move(p).value()));
    if (patience_-- <= 0) {
      inner_.reset();  // cancelled while waiting, or holding what was just handed to it
      return karx::Poll<std::optional<Out>>::ready(std::nullopt);
    }
    cx.waker().wake();  // come back soon: the simulation picks who runs in between
    return karx::pending;
  }

 private:
  std::optional<F> inner_;
  int patience_;
};

karx::Async<> producer(karx::Sender<int> tx, int first, int count, std::vector<int>* accepted) {
  for (int i = 0; i < count; ++i) {
    if (i % 3 == 0) co_await karx::yield_now();
    if (co_await tx.send(first + i)) accepted->push_back(first + i);
  }
}

karx::Async<> consumer(karx::Receiver<int> rx, std::uint64_t seed, std::map<int, int>* received) {
  std::mt19937_64 rng(seed);
  for (;;) {
    const int patience = static_cast<int>(rng() % 4);
    std::optional<std::optional<int>> got = co_await Impatient(rx.recv(), rng() % 3 == 0 ? patience : 1 << 20);
    if (!got) continue;  // gave up; a value handed to it went on
    if (!*got) co_return;
    ++(*received)[**got];
  }
}

karx::Async<> closer(karx::Sender<int> tx, int yields) {
  for (int i = 0; i < yields; ++i) co_await karx::yield_now();
  tx.close();
}

void channel_seed(std::uint64_t seed, std::size_t capacity, bool close_early) {
  Simulation sim(seed);
  std::vector<int> accepted;
  std::map<int, int> received;
  {
    auto [tx, rx] = karx::channel<int>(capacity);
    for (int p = 0; p < 3; ++p) sim.spawn(producer(tx, p * 100, 20, &accepted)).detach();
    for (int c = 0; c < 3; ++c) sim.spawn(consumer(rx, seed * 7 + c, &received)).detach();
    if (close_early) sim.spawn(closer(tx, static_cast<int>(seed % 40))).detach();
  }
  sim.run();
  ASSERT_EQ(received.size(), accepted.size()) << "seed " << seed;
  for (int v : accepted) ASSERT_EQ(received[v], 1) << "seed " << seed << " value " << v;
  if (!close_early) ASSERT_EQ(accepted.size(), 60u) << "seed " << seed;
}

TEST(SyncSimulation, ChannelEveryAcceptedValueIsReceivedOnceRendezvous) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) channel_seed(seed, 0, false);
}
TEST(SyncSimulation, ChannelEveryAcceptedValueIsReceivedOnceCapacity2) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) channel_seed(seed, 2, false);
}
TEST(SyncSimulation, ChannelClosedMidwayDeliversExactlyWhatItAccepted) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) channel_seed(seed, seed % 4, true);
}

// A single consumer that never gives up sees each producer's values in send order.
TEST(SyncSimulation, ChannelKeepsSendOrderForASingleReceiver) {
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    Simulation sim(seed);
    std::vector<int> seen;
    std::vector<int> accepted;  // outlives the block: the producers run in sim.run() below
    {
      auto [tx, rx] = karx::channel<int>(seed % 3);
      for (int p = 0; p < 2; ++p) sim.spawn(producer(tx, p * 100, 30, &accepted)).detach();
      sim.spawn([](karx::Receiver<int> rx, std::vector<int>* seen) -> karx::Async<> {
           while (std::optional<int> v = co_await rx.recv()) seen->push_back(*v);
         }(rx, &seen))
          .detach();
    }
    sim.run();
    ASSERT_EQ(seen.size(), 60u);
    int last[2] = {-1, -1};
    for (int v : seen) {
      ASSERT_GT(v % 100, last[v / 100]) << "seed " << seed;
      last[v / 100] = v % 100;
    }
  }
}

karx::Async<> locker(karx::Mutex* m, std::uint64_t seed, int* inside, int* entries, int rounds) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < rounds; ++i) {
    const int patience = rng() % 3 == 0 ? static_cast<int>(rng() % 3) : 1 << 20;
    std::optional<karx::MutexGuard> g = co_await Impatient(m->lock(), patience);
    if (!g) continue;
    EXPECT_EQ((*inside)++, 0) << "seed " << seed;
    ++*entries;
    if (rng() % 2 == 0) co_await karx::yield_now();  // held across an await
    --*inside;
  }
}

TEST(SyncSimulation, MutexIsNeverSharedAndEndsFreeWhileWaitersGiveUp) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    Simulation sim(seed);
    karx::Mutex m;
    int inside = 0, entries = 0;
    for (int t = 0; t < 4; ++t) sim.spawn(locker(&m, seed * 5 + t, &inside, &entries, 15)).detach();
    sim.run();
    ASSERT_GT(entries, 0);
    ASSERT_TRUE(m.try_lock().has_value()) << "seed " << seed;
  }
}

karx::Async<> acquirer(karx::Semaphore* s, std::uint64_t seed, long* out, long limit) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 15; ++i) {
    const std::size_t n = 1 + rng() % 3;
    const int patience = rng() % 3 == 0 ? static_cast<int>(rng() % 3) : 1 << 20;
    std::optional<karx::SemaphorePermit> p = co_await Impatient(s->acquire(n), patience);
    if (!p) continue;
    *out += static_cast<long>(n);
    EXPECT_LE(*out, limit) << "seed " << seed;
    co_await karx::yield_now();
    *out -= static_cast<long>(n);
  }
}

TEST(SyncSimulation, SemaphorePermitsAreConservedWhileWaitersGiveUp) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    Simulation sim(seed);
    karx::Semaphore s(4);
    long out = 0;
    for (int t = 0; t < 4; ++t) sim.spawn(acquirer(&s, seed * 3 + t, &out, 4)).detach();
    sim.run();
    ASSERT_EQ(s.available(), 4u) << "seed " << seed;
  }
}

// Check-then-wait against set-then-notify: never a lost wake-up (that would deadlock the
// simulation's block_on, which throws).
TEST(SyncSimulation, NotifyLosesNoWakeUpBetweenACheckAndAWait) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    Simulation sim(seed);
    karx::Notify n;
    int produced = 0;
    sim.spawn([](karx::Notify* n, int* produced) -> karx::Async<> {
         for (int i = 0; i < 20; ++i) {
           co_await karx::yield_now();
           ++*produced;
           n->notify_one();
         }
       }(&n, &produced))
        .detach();
    EXPECT_NO_THROW(sim.block_on([](karx::Notify* n, int* produced) -> karx::Async<> {
      int seen = 0;
      while (seen < 20) {
        auto notified = n->notified();
        if (*produced > seen) {
          seen = *produced;
          continue;
        }
        co_await std::move(notified);
      }
    }(&n, &produced)))
        << "seed " << seed;
  }
}

}  // namespace
