// karx.sync combinators: when_all (variadic and vector), when_any, timeout.
//
// Semantics are checked by polling by hand with counting wakers (which children are polled,
// which waker is woken, when each child is destroyed); then on a karx::Runtime (the cooperative
// budget), on a plain thread pool built on karx::spawn (wakes from other threads, under TSan),
// and in karx::sim::Simulation over many seeds (virtual time for timeout).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "support/probes.hpp"
#include "support/sync_probes.hpp"
#include "support/thread_pool.hpp"
#include "support/wake_counter.hpp"

namespace {

using namespace std::chrono_literals;
using probes::Boom;
using probes::CountingWaker;
using probes::Latch;
using probes::poll_with_counting;

// A future that wakes its own waker at every poll and stays pending (a busy child).
struct WakesItself {
  std::atomic<int>* polls;
  karx::Poll<int> poll(karx::Context& cx) {
    polls->fetch_add(1);
    cx.waker().wake();
    return karx::pending;
  }
};

// Counts the polls of the future it wraps.
template <class F>
struct Counted {
  F inner;
  std::atomic<int>* polls;
  karx::Poll<karx::output_of<F>> poll(karx::Context& cx) {
    polls->fetch_add(1, std::memory_order_relaxed);
    return inner.poll(cx);
  }
};

template <class T>
int total_polls(const std::vector<Latch<T>>& latches) {
  int n = 0;
  for (const auto& l : latches) n += l.polls();
  return n;
}

karx::Async<int> sleep_then(std::chrono::nanoseconds d, int v) {
  co_await karx::sleep_for(d);
  co_return v;
}

karx::Async<> sleeps(std::chrono::nanoseconds d) { co_await karx::sleep_for(d); }

// ---- when_all, variadic ----------------------------------------------------------------------

TEST(WhenAll, YieldsEveryOutputInArgumentOrderWithMonostateForVoid) {
  Latch<int> a;
  Latch<void> b;
  Latch<std::string> c;
  auto all = karx::when_all(a.future(), b.future(), c.future());
  static_assert(std::is_same_v<karx::output_of<decltype(all)>, std::tuple<int, std::monostate, std::string>>);
  CountingWaker w;
  EXPECT_TRUE(poll_with_counting(all, w).is_pending());
  c.open("c");
  EXPECT_EQ(w.wakes(), 1) << "a child's wake reaches the parent's waker";
  EXPECT_TRUE(poll_with_counting(all, w).is_pending());
  a.open(1);
  b.open();
  auto r = poll_with_counting(all, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(std::get<0>(r.value()), 1);
  EXPECT_EQ(std::get<2>(r.value()), "c");
  EXPECT_EQ(a.drops() + b.drops() + c.drops(), 3) << "each child destroyed once, on completion";
  EXPECT_THROW(poll_with_counting(all, w), std::logic_error);
}

TEST(WhenAll, OfNothingIsReadyAtOnce) {
  auto all = karx::when_all();
  CountingWaker w;
  EXPECT_TRUE(poll_with_counting(all, w).is_ready());
}

TEST(WhenAll, VariadicPollsEveryChildStillPendingAtEachPoll) {
  Latch<int> a, b, c;
  auto all = karx::when_all(a.future(), b.future(), c.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  a.open(1);
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  EXPECT_EQ(a.polls(), 2);
  EXPECT_EQ(b.polls(), 2) << "the variadic form polls every pending child (documented)";
  EXPECT_EQ(c.polls(), 2);
  b.open(2);
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  EXPECT_EQ(a.polls(), 2) << "a child already done is not polled again";
  EXPECT_EQ(b.polls(), 3);
  EXPECT_EQ(c.polls(), 3);
}

TEST(WhenAll, TheFirstExceptionIsRethrownAfterTheOthersAreDestroyed) {
  probes::Counts counts;
  Latch<probes::Output> a;
  Latch<int> b, c, d;
  auto all = karx::when_all(a.future(), b.future(), c.future(), d.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  a.open(probes::Output{1, probes::DropCounter(counts.output_drops)});
  c.fail(3);
  b.fail(2);
  try {
    (void)poll_with_counting(all, w);
    ADD_FAILURE() << "no exception";
  } catch (const Boom& e) {
    EXPECT_EQ(e.id, 2) << "the first child that throws (in polling order) wins";
    EXPECT_EQ(a.drops() + b.drops() + c.drops() + d.drops(), 4) << "every child is gone before the rethrow";
    EXPECT_EQ(counts.output_drops.load(), 1) << "the completed child's output too";
    EXPECT_EQ(c.polls(), 1) << "children after the thrower are not polled";
  }
  EXPECT_THROW(poll_with_counting(all, w), std::logic_error);
  EXPECT_EQ(a.drops() + b.drops() + c.drops() + d.drops(), 4);
}

TEST(WhenAll, DestroyedWhilePendingDestroysEachChildAndOutputOnce) {
  probes::Counts counts;
  Latch<probes::Output> a;
  Latch<int> b;
  {
    auto all = karx::when_all(a.future(), b.future());
    CountingWaker w;
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    a.open(probes::Output{1, probes::DropCounter(counts.output_drops)});
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    EXPECT_EQ(a.drops(), 1) << "a completed child's future is destroyed at once";
    EXPECT_EQ(counts.output_drops.load(), 0);
  }
  EXPECT_EQ(a.drops(), 1);
  EXPECT_EQ(b.drops(), 1);
  EXPECT_EQ(counts.output_drops.load(), 1);
}

TEST(WhenAll, CanBeMovedBeforeItsFirstPoll) {
  Latch<int> a;
  auto all = karx::when_all(a.future(), sleep_then(0ns, 2));
  auto moved = std::move(all);
  a.open(1);
  CountingWaker w;
  auto r = poll_with_counting(moved, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::make_tuple(1, 2));
}

// ---- when_all, vector -------------------------------------------------------------------------

TEST(WhenAllVector, YieldsTheOutputsInTheVectorsOrder) {
  std::vector<Latch<int>> latches(5);
  std::vector<Latch<int>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  static_assert(std::is_same_v<karx::output_of<decltype(all)>, std::vector<int>>);
  CountingWaker w;
  for (int i = 4; i >= 0; --i) {
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    latches[i].open(i * 10);
  }
  auto r = poll_with_counting(all, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), (std::vector<int>{0, 10, 20, 30, 40}));
  EXPECT_EQ(total_polls(latches), 5 + 5) << "the first poll polls all five, each later one the child woken";
  for (auto& l : latches) EXPECT_EQ(l.drops(), 1);
  EXPECT_THROW(poll_with_counting(all, w), std::logic_error);
}

TEST(WhenAllVector, OfVoidFuturesYieldsMonostates) {
  std::vector<Latch<void>> latches(3);
  std::vector<Latch<void>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  static_assert(std::is_same_v<karx::output_of<decltype(all)>, std::vector<std::monostate>>);
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  for (auto& l : latches) l.open();
  auto r = poll_with_counting(all, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value().size(), 3u);
}

TEST(WhenAllVector, OfAnEmptyVectorIsReadyAtOnce) {
  auto all = karx::when_all(std::vector<Latch<int>::Future>{});
  CountingWaker w;
  auto r = poll_with_counting(all, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_TRUE(r.value().empty());
}

// The design requirement: with 10,000 children and one woken per poll, a poll polls that one.
TEST(WhenAllVector, TenThousandChildrenOneWokenPerPollPollsOnlyThatOne) {
  constexpr int n = 10000;
  std::vector<Latch<int>> latches(n);
  std::vector<Latch<int>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  ASSERT_EQ(total_polls(latches), n) << "the first poll polls every child once";

  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  int expected_polls = n;
  int expected_wakes = 0;
  for (int step = 0; step < n; ++step) {
    const int k = order[step];
    if (step % 3 == 0) {  // a spurious wake first: polled, still pending
      latches[k].wake();
      EXPECT_EQ(w.wakes(), ++expected_wakes);
      ASSERT_TRUE(poll_with_counting(all, w).is_pending());
      ++expected_polls;
      ASSERT_EQ(latches[k].polls(), 2);
    }
    latches[k].open(k);
    EXPECT_EQ(w.wakes(), ++expected_wakes) << "one wake of the parent per woken child";
    auto r = poll_with_counting(all, w);
    ++expected_polls;
    ASSERT_EQ(latches[k].polls(), step % 3 == 0 ? 3 : 2) << "child " << k;
    if (step % 500 == 0) ASSERT_EQ(total_polls(latches), expected_polls) << "only the woken child was polled";
    if (step + 1 < n) {
      ASSERT_TRUE(r.is_pending());
    } else {
      ASSERT_TRUE(r.is_ready());
      const std::vector<int>& out = r.value();
      ASSERT_EQ(out.size(), std::size_t{n});
      for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], i);
    }
  }
  EXPECT_EQ(total_polls(latches), expected_polls);
}

TEST(WhenAllVector, SeveralWakesOfOneChildBeforeAPollPollItOnce) {
  std::vector<Latch<int>> latches(3);
  std::vector<Latch<int>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  latches[1].wake();
  latches[1].wake();
  latches[2].wake();
  EXPECT_EQ(w.wakes(), 1) << "the parent is woken once for a batch";
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  EXPECT_EQ(latches[0].polls(), 1);
  EXPECT_EQ(latches[1].polls(), 2);
  EXPECT_EQ(latches[2].polls(), 2);
  latches[1].wake();
  EXPECT_EQ(w.wakes(), 2) << "the next wake after a poll wakes the parent again";
}

TEST(WhenAllVector, AChildThatWakesItselfIsPolledOncePerPoll) {
  std::atomic<int> busy{0};
  std::vector<WakesItself> fs(4, WakesItself{&busy});
  auto all = karx::when_all(std::move(fs));
  CountingWaker w;
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    EXPECT_EQ(busy.load(), 4 * i) << "each poll polls each self-waking child exactly once";
    EXPECT_EQ(w.wakes(), i);
  }
}

TEST(WhenAllVector, ThePollsNewestWakerIsTheOneWoken) {
  std::vector<Latch<int>> latches(2);
  std::vector<Latch<int>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  CountingWaker w1, w2;
  ASSERT_TRUE(poll_with_counting(all, w1).is_pending());
  ASSERT_TRUE(poll_with_counting(all, w2).is_pending());
  EXPECT_EQ(w1.alive(), 0) << "the replaced waker was dropped";
  latches[0].open(1);
  EXPECT_EQ(w1.wakes(), 0);
  EXPECT_EQ(w2.wakes(), 1);
  ASSERT_TRUE(poll_with_counting(all, w1).is_pending());
  latches[1].open(2);
  EXPECT_EQ(w1.wakes(), 1);
  EXPECT_EQ(w2.wakes(), 1);
  EXPECT_TRUE(poll_with_counting(all, w1).is_ready());
  EXPECT_EQ(w1.alive(), 0) << "a finished when_all holds no waker of its parent";
}

TEST(WhenAllVector, AChildsWakerOutlivesTheCombinatorAndWakesNobody) {
  std::vector<Latch<int>> latches(3);
  CountingWaker w;
  {
    std::vector<Latch<int>::Future> fs;
    for (auto& l : latches) fs.push_back(l.future());
    auto all = karx::when_all(std::move(fs));
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    EXPECT_EQ(w.alive(), 1);
  }
  for (auto& l : latches) EXPECT_EQ(l.drops(), 1);
  EXPECT_EQ(w.alive(), 0) << "destroying the combinator dropped its parent's waker";
  ASSERT_TRUE(latches[1].holds_waker()) << "the children's wakers live on in the latches";
  latches[1].wake();
  latches[1].open(1);
  EXPECT_EQ(w.wakes(), 0);
  // The latches (and the wake flags' block they keep alive) go at the end of the test: under
  // ASan, a block freed too early or never freed fails here.
}

TEST(WhenAllVector, TheFirstExceptionIsRethrownAfterTheOthersAreDestroyed) {
  probes::Counts counts;
  std::vector<Latch<probes::Output>> latches(4);
  std::vector<Latch<probes::Output>::Future> fs;
  for (auto& l : latches) fs.push_back(l.future());
  auto all = karx::when_all(std::move(fs));
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(all, w).is_pending());
  latches[0].open(probes::Output{0, probes::DropCounter(counts.output_drops)});
  latches[3].fail(3);
  latches[1].fail(1);
  try {
    (void)poll_with_counting(all, w);
    ADD_FAILURE() << "no exception";
  } catch (const Boom& e) {
    EXPECT_EQ(e.id, 3) << "the first woken child that throws wins (wake order)";
    for (auto& l : latches) EXPECT_EQ(l.drops(), 1);
    EXPECT_EQ(counts.output_drops.load(), 1);
    EXPECT_EQ(latches[1].polls(), 1) << "children after the thrower are not polled";
  }
  EXPECT_EQ(w.alive(), 0);
  EXPECT_THROW(poll_with_counting(all, w), std::logic_error);
}

TEST(WhenAllVector, DestroyedWhilePendingDestroysEachChildAndOutputOnce) {
  probes::Counts counts;
  std::vector<Latch<probes::Output>> latches(3);
  {
    std::vector<Latch<probes::Output>::Future> fs;
    for (auto& l : latches) fs.push_back(l.future());
    auto all = karx::when_all(std::move(fs));
    CountingWaker w;
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    latches[2].open(probes::Output{2, probes::DropCounter(counts.output_drops)});
    ASSERT_TRUE(poll_with_counting(all, w).is_pending());
    EXPECT_EQ(latches[2].drops(), 1);
  }
  for (auto& l : latches) EXPECT_EQ(l.drops(), 1);
  EXPECT_EQ(counts.output_drops.load(), 1);
}

// ---- when_any ---------------------------------------------------------------------------------

TEST(WhenAny, TheFirstReadyWinsAndTheOthersAreDestroyedBeforeItIsHandedOut) {
  Latch<int> a;
  Latch<std::string> b;
  Latch<void> c;
  auto any = karx::when_any(a.future(), b.future(), c.future());
  static_assert(std::is_same_v<karx::output_of<decltype(any)>, std::variant<int, std::string, std::monostate>>);
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(any, w).is_pending());
  b.open("b");
  EXPECT_EQ(w.wakes(), 1);
  auto r = poll_with_counting(any, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value().index(), 1u);
  EXPECT_EQ(std::get<1>(r.value()), "b");
  EXPECT_EQ(a.drops() + b.drops() + c.drops(), 3);
  EXPECT_THROW(poll_with_counting(any, w), std::logic_error);
}

TEST(WhenAny, TheIndexTellsChildrenOfOneTypeApart) {
  Latch<int> a, b, c;
  auto any = karx::when_any(a.future(), b.future(), c.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(any, w).is_pending());
  c.open(7);
  a.open(7);
  auto r = poll_with_counting(any, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value().index(), 0u) << "of two ready at one poll, the first in argument order wins";
  EXPECT_EQ(std::get<0>(r.value()), 7);

  Latch<int> d, e;
  auto any2 = karx::when_any(d.future(), e.future());
  ASSERT_TRUE(poll_with_counting(any2, w).is_pending());
  e.open(9);
  auto r2 = poll_with_counting(any2, w);
  ASSERT_TRUE(r2.is_ready());
  EXPECT_EQ(r2.value().index(), 1u);
  EXPECT_EQ(std::get<1>(r2.value()), 9);
}

TEST(WhenAny, AnExceptionDestroysTheOthersAndIsRethrown) {
  Latch<int> a, b;
  auto any = karx::when_any(a.future(), b.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(any, w).is_pending());
  b.fail(5);
  try {
    (void)poll_with_counting(any, w);
    ADD_FAILURE() << "no exception";
  } catch (const Boom& e) {
    EXPECT_EQ(e.id, 5);
    EXPECT_EQ(a.drops() + b.drops(), 2);
  }
  EXPECT_THROW(poll_with_counting(any, w), std::logic_error);
}

TEST(WhenAny, DestroyedWhilePendingDestroysEachChildOnce) {
  Latch<int> a, b;
  {
    auto any = karx::when_any(a.future(), b.future());
    CountingWaker w;
    ASSERT_TRUE(poll_with_counting(any, w).is_pending());
  }
  EXPECT_EQ(a.drops(), 1);
  EXPECT_EQ(b.drops(), 1);
}

// ---- timeout ----------------------------------------------------------------------------------

TEST(Timeout, TheFutureFinishingFirstGivesItsOutputAndCancelsTheTimer) {
  const std::size_t timers = karx::detail::timer_pending_count();
  Latch<int> a;
  auto t = karx::timeout(1h, a.future());
  static_assert(std::is_same_v<karx::output_of<decltype(t)>, std::optional<int>>);
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(t, w).is_pending());
  EXPECT_EQ(karx::detail::timer_pending_count(), timers + 1);
  a.open(3);
  EXPECT_EQ(w.wakes(), 1);
  auto r = poll_with_counting(t, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>(3));
  EXPECT_EQ(karx::detail::timer_pending_count(), timers) << "the timer was removed at completion";
  EXPECT_EQ(a.drops(), 1);
  EXPECT_THROW(poll_with_counting(t, w), std::logic_error);
}

TEST(Timeout, TheDeadlinePassingFirstGivesNulloptAndDestroysTheFuture) {
  Latch<int> a;
  auto t = karx::timeout(20ms, a.future());
  probes::WakeCounter counter;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(probes::block_on(t, counter), std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
  EXPECT_EQ(a.drops(), 1);
}

TEST(Timeout, OfAVoidFutureGivesBool) {
  Latch<void> a, b;
  auto done = karx::timeout(1h, a.future());
  static_assert(std::is_same_v<karx::output_of<decltype(done)>, bool>);
  a.open();
  CountingWaker w;
  auto r = poll_with_counting(done, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_TRUE(r.value());
  auto late = karx::timeout(0ns, b.future());
  auto r2 = poll_with_counting(late, w);
  ASSERT_TRUE(r2.is_ready());
  EXPECT_FALSE(r2.value());
  EXPECT_EQ(b.drops(), 1);
}

TEST(Timeout, AZeroDurationPollsTheFutureOnceAndTheFutureWinsTies) {
  Latch<int> a;
  a.open(1);
  auto t = karx::timeout(0ns, a.future());
  CountingWaker w;
  auto r = poll_with_counting(t, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>(1));
  Latch<int> b;
  auto t2 = karx::timeout(-5s, b.future());
  auto r2 = poll_with_counting(t2, w);
  ASSERT_TRUE(r2.is_ready());
  EXPECT_EQ(r2.value(), std::nullopt);
  EXPECT_EQ(b.polls(), 1);
}

TEST(Timeout, AnExceptionDestroysTheTimerAndIsRethrown) {
  const std::size_t timers = karx::detail::timer_pending_count();
  Latch<int> a;
  auto t = karx::timeout(1h, a.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(t, w).is_pending());
  a.fail(4);
  EXPECT_THROW(poll_with_counting(t, w), Boom);
  EXPECT_EQ(karx::detail::timer_pending_count(), timers);
  EXPECT_EQ(a.drops(), 1);
}

TEST(Timeout, DestroyedWhilePendingRemovesItsTimerAndDestroysTheFuture) {
  const std::size_t timers = karx::detail::timer_pending_count();
  Latch<int> a;
  {
    auto t = karx::timeout(1h, a.future());
    CountingWaker w;
    ASSERT_TRUE(poll_with_counting(t, w).is_pending());
  }
  EXPECT_EQ(karx::detail::timer_pending_count(), timers);
  EXPECT_EQ(a.drops(), 1);
}

// ---- in karx::sim::Simulation, many seeds -------------------------------------------------------

TEST(CombinatorsInSimulation, TimeoutCountsVirtualTimeFromItsFirstPoll) {
  for (std::uint64_t seed = 0; seed < 64; ++seed) {
    karx::sim::Simulation sim(seed);
    const auto t0 = sim.now();
    EXPECT_EQ(sim.block_on(karx::timeout(10ms, sleep_then(20ms, 5))), std::nullopt);
    EXPECT_EQ(sim.now() - t0, 10ms) << "seed " << seed;
    EXPECT_EQ(sim.block_on(karx::timeout(30ms, sleep_then(20ms, 5))), std::optional<int>(5));
    EXPECT_EQ(sim.now() - t0, 30ms) << "seed " << seed;
    // (A sleep_for called here, outside the simulation's tasks, would read the real clock:
    // the coroutine makes its Sleep inside, as timeout makes its timer at the first poll.)
    EXPECT_EQ(sim.block_on(karx::timeout(1h, sleeps(1s))), true);
    EXPECT_EQ(sim.now() - t0, 30ms + 1s);
  }
}

TEST(CombinatorsInSimulation, WhenAnyOfSleepsIsWonByTheShortestInVirtualTime) {
  for (std::uint64_t seed = 0; seed < 64; ++seed) {
    karx::sim::Simulation sim(seed);
    const auto t0 = sim.now();
    auto r = sim.block_on(karx::when_any(sleep_then(30ms, 0), sleep_then(10ms, 1), sleep_then(20ms, 2)));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(std::get<1>(r), 1);
    EXPECT_EQ(sim.now() - t0, 10ms);
  }
}

karx::Async<int> yields_then(int times, int v) {
  for (int i = 0; i < times; ++i) co_await karx::yield_now();
  co_return v;
}

TEST(CombinatorsInSimulation, WhenAllOfJoinHandlesUnderManyInterleavings) {
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    karx::sim::Simulation sim(seed);
    std::mt19937 gen(static_cast<std::uint32_t>(seed));
    std::vector<karx::JoinHandle<int>> handles;
    for (int i = 0; i < 24; ++i) handles.push_back(sim.spawn(yields_then(static_cast<int>(gen() % 5), i)));
    auto both = karx::when_all(karx::when_all(std::move(handles)), sleep_then(5ms, -1));
    auto [outs, slept] = sim.block_on(std::move(both));
    ASSERT_EQ(outs.size(), 24u);
    for (int i = 0; i < 24; ++i) ASSERT_EQ(outs[i], std::optional<int>(i)) << "seed " << seed;
    EXPECT_EQ(slept, -1);
  }
}

// ---- on a karx::Runtime: the cooperative budget --------------------------------------------------

karx::Async<long> join_all_counted(std::vector<karx::JoinHandle<int>> handles, std::atomic<int>* polls) {
  std::vector<Counted<karx::JoinHandle<int>>> counted;
  for (auto& h : handles) counted.push_back({std::move(h), polls});
  auto outs = co_await karx::when_all(std::move(counted));
  long sum = 0;
  for (const auto& o : outs) sum += o.value();
  co_return sum;
}

TEST(CombinatorsOnRuntime, WhenAllOfManyJoinHandlesProgressesWithinTheBudget) {
  karx::Runtime rt(probes::two_processors());
  constexpr int n = 4000;
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(yields_then(i % 3, i)));
  std::atomic<int> polls{0};
  const long sum = rt.block_on(rt.spawn(join_all_counted(std::move(handles), &polls))).value();
  EXPECT_EQ(sum, long{n} * (n - 1) / 2);
  // Each handle is polled once, plus once more if it was pending (its task's completion wakes
  // it). A spent budget stops the batch instead of polling the rest for nothing.
  EXPECT_LE(polls.load(), 2 * n);
}

karx::Async<int> variadic_on_runtime(karx::JoinHandle<int> a, karx::JoinHandle<int> b) {
  auto [x, y] = co_await karx::when_all(std::move(a), std::move(b));
  auto first = co_await karx::when_any(karx::sleep_for(1h), yields_then(3, 4));
  co_return *x + *y + std::get<1>(first);
}

TEST(CombinatorsOnRuntime, VariadicFormsAndTimeoutInsideTasks) {
  karx::Runtime rt(probes::two_processors());
  auto a = rt.spawn(yields_then(5, 1));
  auto b = rt.spawn(sleep_then(5ms, 2));
  EXPECT_EQ(rt.block_on(variadic_on_runtime(std::move(a), std::move(b))), 7);
  EXPECT_EQ(rt.block_on(karx::timeout(5ms, karx::sleep_for(1h))), false);
  EXPECT_EQ(rt.block_on(karx::timeout(1h, sleep_then(1ms, 9))), std::optional<int>(9));
}

// ---- on a user's executor: wakes from other threads (TSan) ----------------------------------------

TEST(CombinatorsOnThreadPool, WhenAllVectorWithChildrenWokenFromManyThreads) {
  for (int round = 0; round < 20; ++round) {
    constexpr int n = 256;
    std::vector<Latch<int>> latches(n);
    std::vector<Latch<int>::Future> fs;
    for (auto& l : latches) fs.push_back(l.future());
    probes::ThreadPool pool(2);
    auto handle = pool.spawn(karx::when_all(std::move(fs)));
    std::vector<std::thread> openers;
    for (int t = 0; t < 3; ++t)
      openers.emplace_back([&, t] {
        for (int i = t; i < n; i += 3) {
          if (i % 4 == 0) latches[i].wake();  // spurious wakes too
          latches[i].open(i);
        }
      });
    for (auto& th : openers) th.join();
    probes::WakeCounter counter;
    auto out = probes::block_on(handle, counter);
    ASSERT_TRUE(out.has_value());
    for (int i = 0; i < n; ++i) ASSERT_EQ((*out)[i], i);
    for (auto& l : latches) ASSERT_LE(l.polls(), 4) << "a child is polled only when woken";
  }
}

TEST(CombinatorsOnThreadPool, WhenAnyAndTimeoutWithWakesFromOtherThreads) {
  probes::ThreadPool pool(2);
  for (int round = 0; round < 50; ++round) {
    Latch<int> a, b;
    auto handle = pool.spawn(karx::when_any(karx::timeout(1h, a.future()), b.future()));
    std::thread opener([&] { (round % 2 == 0 ? a : b).open(round); });
    probes::WakeCounter counter;
    auto out = probes::block_on(handle, counter);
    opener.join();
    ASSERT_TRUE(out.has_value());
    if (round % 2 == 0) {
      ASSERT_EQ(out->index(), 0u);
      EXPECT_EQ(std::get<0>(*out), std::optional<int>(round));
    } else {
      ASSERT_EQ(out->index(), 1u);
      EXPECT_EQ(std::get<1>(*out), round);
    }
    EXPECT_EQ(a.drops() + b.drops(), 2);
  }
}

}  // namespace
