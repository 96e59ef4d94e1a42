// karx.sync CancellationToken and with_cancellation.
//
// The token tree's semantics by hand with counting wakers (who is woken, how often, which
// waker; waiters destroyed while waiting; children unlinking; a deep chain), then on a
// karx::Runtime, in karx::sim::Simulation over many seeds, and a stress test for TSan: cancel
// racing with waiters registering, children made and dropped, and a second cancel.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/probes.hpp"
#include "support/sync_probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using namespace std::chrono_literals;
using karx::CancellationToken;
using probes::Boom;
using probes::CountingWaker;
using probes::Latch;
using probes::poll_with_counting;

using CancelledFuture = decltype(std::declval<const CancellationToken&>().cancelled());
static_assert(karx::Future<CancelledFuture>);
static_assert(std::is_same_v<karx::output_of<CancelledFuture>, void>);

// A cancelled() future of a token with the waker that polls it, in a place of its own (a
// polled future must not move).
struct Waiter {
  explicit Waiter(const CancellationToken& t) : f(t.cancelled()) {}
  bool poll() { return poll_with_counting(f, w).is_ready(); }
  CountingWaker w;
  CancelledFuture f;
  bool registered = false;  // pending at its first poll (for the stress tests)
};

std::size_t alive() { return karx::detail::token_nodes_alive_count(); }

// ---- the flag and the tree --------------------------------------------------------------------

TEST(CancellationToken, StartsUncancelledAndCopiesShareOneFlag) {
  CancellationToken t;
  CancellationToken copy = t;
  EXPECT_FALSE(t.is_cancelled());
  copy.cancel();
  EXPECT_TRUE(t.is_cancelled());
  EXPECT_TRUE(copy.is_cancelled());
  t.cancel();  // idempotent
  EXPECT_TRUE(t.is_cancelled());
  CancellationToken assigned;
  assigned = t;
  EXPECT_TRUE(assigned.is_cancelled());
}

TEST(CancellationToken, CancellingATokenCancelsItsSubtreeAndNothingAbove) {
  CancellationToken root;
  CancellationToken a = root.child();
  CancellationToken b = a.child();
  CancellationToken c = root.child();
  a.cancel();
  EXPECT_TRUE(a.is_cancelled());
  EXPECT_TRUE(b.is_cancelled());
  EXPECT_FALSE(root.is_cancelled());
  EXPECT_FALSE(c.is_cancelled());
  root.cancel();
  EXPECT_TRUE(c.is_cancelled());
}

TEST(CancellationToken, AChildOfACancelledTokenIsBornCancelled) {
  CancellationToken root;
  root.cancel();
  CancellationToken c = root.child();
  EXPECT_TRUE(c.is_cancelled());
  EXPECT_TRUE(c.child().is_cancelled());
  EXPECT_EQ(karx::detail::token_child_count(root), 0u) << "a cancelled token keeps no children";
}

TEST(CancellationToken, AMovedFromTokenThrowsLogicError) {
  CancellationToken t;
  CancellationToken moved = std::move(t);
  EXPECT_THROW(t.cancel(), std::logic_error);
  EXPECT_THROW((void)t.is_cancelled(), std::logic_error);
  EXPECT_THROW((void)t.child(), std::logic_error);
  EXPECT_THROW((void)t.cancelled(), std::logic_error);
  t = moved;  // assignable again
  EXPECT_FALSE(t.is_cancelled());
}

// ---- cancelled() --------------------------------------------------------------------------------

TEST(CancellationToken, CancelledIsReadyOnceCancelledAndWakesItsWakerOnce) {
  CancellationToken t;
  Waiter waiter(t);
  EXPECT_FALSE(waiter.poll());
  EXPECT_FALSE(waiter.poll());
  EXPECT_EQ(waiter.w.alive(), 1) << "the waiter keeps one clone of its waker";
  t.cancel();
  EXPECT_EQ(waiter.w.wakes(), 1);
  EXPECT_EQ(waiter.w.alive(), 0) << "the cancel consumed the waiter's clone";
  EXPECT_TRUE(waiter.poll());
  EXPECT_TRUE(waiter.poll()) << "stays ready";
  t.cancel();
  EXPECT_EQ(waiter.w.wakes(), 1);
}

TEST(CancellationToken, CancelledOfACancelledTokenIsReadyWithoutRegistering) {
  CancellationToken t;
  t.cancel();
  Waiter waiter(t);
  EXPECT_TRUE(waiter.poll());
  EXPECT_EQ(waiter.w.alive(), 0);
}

TEST(CancellationToken, ARepollWithAnotherWakerReplacesTheOldOne) {
  CancellationToken t;
  auto f = t.cancelled();
  CountingWaker w1, w2;
  ASSERT_TRUE(poll_with_counting(f, w1).is_pending());
  ASSERT_TRUE(poll_with_counting(f, w2).is_pending());
  EXPECT_EQ(w1.alive(), 0);
  t.cancel();
  EXPECT_EQ(w1.wakes(), 0);
  EXPECT_EQ(w2.wakes(), 1);
}

TEST(CancellationToken, AWaiterDestroyedWhileWaitingUnregistersAndIsNeverWoken) {
  CancellationToken t;
  CountingWaker gone;
  auto kept = std::make_unique<Waiter>(t);
  {
    auto f = t.cancelled();
    ASSERT_TRUE(poll_with_counting(f, gone).is_pending());
    EXPECT_EQ(gone.alive(), 1);
  }
  EXPECT_EQ(gone.alive(), 0) << "destroying the waiter dropped its waker";
  EXPECT_FALSE(kept->poll());
  t.cancel();
  EXPECT_EQ(gone.wakes(), 0);
  EXPECT_EQ(kept->w.wakes(), 1);
}

TEST(CancellationToken, EveryWaiterOfTheSubtreeIsWokenOnceInBatches) {
  CancellationToken root;
  std::vector<CancellationToken> tokens{root, root.child()};
  tokens.push_back(tokens[1].child());
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 300; ++i) {  // more than a wake batch (32) per token
    waiters.push_back(std::make_unique<Waiter>(tokens[i % 3]));
    ASSERT_FALSE(waiters.back()->poll());
  }
  root.cancel();
  for (auto& w : waiters) {
    EXPECT_EQ(w->w.wakes(), 1);
    EXPECT_TRUE(w->poll());
  }
}

TEST(CancellationToken, AWakeThatThrowsLetsTheOthersBeWokenThenPropagates) {
  CancellationToken t;
  auto thrower = t.cancelled();
  auto wakes = std::make_shared<std::atomic<int>>(0);
  karx::Waker bad = karx::waker_fn([wakes] {
    wakes->fetch_add(1);
    throw Boom(9);
  });
  karx::Context cx(bad);
  ASSERT_TRUE(thrower.poll(cx).is_pending());
  std::vector<std::unique_ptr<Waiter>> others;
  for (int i = 0; i < 40; ++i) {
    others.push_back(std::make_unique<Waiter>(t));
    ASSERT_FALSE(others.back()->poll());
  }
  EXPECT_THROW(t.cancel(), Boom);
  EXPECT_EQ(wakes->load(), 1);
  for (auto& w : others) EXPECT_EQ(w->w.wakes(), 1);
  EXPECT_TRUE(t.is_cancelled());
}

TEST(CancellationTokenDeathTest, MovingACancelledFutureWhileItWaitsTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        CancellationToken t;
        auto f = t.cancelled();
        CountingWaker w;
        (void)poll_with_counting(f, w);
        auto moved = std::move(f);
      },
      "moved while it was waiting");
}

// ---- the tree's shape: unlinking, re-parenting, deep chains ----------------------------------------

TEST(CancellationToken, ChildrenUnlinkFromTheirParentWhenTheirLastHandleGoes) {
  const std::size_t before = alive();
  CancellationToken root;
  for (int i = 0; i < 100000; ++i) {
    CancellationToken c = root.child();
    auto f = c.cancelled();
    CountingWaker w;
    ASSERT_TRUE(poll_with_counting(f, w).is_pending());
    if (i % 2 == 0) {
      CancellationToken g = c.child();  // a grandchild, gone with it
    }
  }
  EXPECT_EQ(karx::detail::token_child_count(root), 0u) << "the parent's list does not grow with children that left";
  EXPECT_EQ(alive(), before + 1);
  {
    CancellationToken kept = root.child();
    auto f = kept.cancelled();  // a future is a handle too
    kept = CancellationToken();
    EXPECT_EQ(karx::detail::token_child_count(root), 1u);
  }
  EXPECT_EQ(karx::detail::token_child_count(root), 0u);
}

TEST(CancellationToken, ATokenThatGoesHandsItsChildrenToItsParent) {
  CancellationToken root;
  std::optional<CancellationToken> middle = root.child();
  CancellationToken b = middle->child();
  CancellationToken c = middle->child();
  EXPECT_EQ(karx::detail::token_child_count(root), 1u);
  middle.reset();
  EXPECT_EQ(karx::detail::token_child_count(root), 2u);
  Waiter waiter(c);
  ASSERT_FALSE(waiter.poll());
  root.cancel();
  EXPECT_TRUE(b.is_cancelled());
  EXPECT_TRUE(c.is_cancelled());
  EXPECT_EQ(waiter.w.wakes(), 1);
}

TEST(CancellationToken, TheChildrenOfARootThatGoesBecomeRoots) {
  const std::size_t before = alive();
  {
    std::optional<CancellationToken> root{std::in_place};
    CancellationToken a = root->child();
    CancellationToken b = a.child();
    root.reset();
    EXPECT_FALSE(a.is_cancelled());
    a.cancel();
    EXPECT_TRUE(b.is_cancelled());
  }
  EXPECT_EQ(alive(), before);
}

// Deep enough that any recursion per level (cancel, unlink, free) would overflow an 8 MiB stack.
constexpr int kDeep = 500000;

TEST(CancellationToken, CancellingADeepChainDoesNotRecurse) {
  const std::size_t before = alive();
  {
    std::vector<CancellationToken> chain;
    chain.reserve(kDeep);
    chain.emplace_back();
    for (int i = 1; i < kDeep; ++i) chain.push_back(chain.back().child());
    Waiter leaf(chain.back());
    ASSERT_FALSE(leaf.poll());
    chain.front().cancel();
    EXPECT_EQ(leaf.w.wakes(), 1);
    EXPECT_TRUE(chain[kDeep / 2].is_cancelled());
    EXPECT_TRUE(chain.back().is_cancelled());
  }
  EXPECT_EQ(alive(), before);
}

TEST(CancellationToken, DroppingADeepChainInEitherOrderDoesNotRecurse) {
  const std::size_t before = alive();
  for (bool root_first : {true, false}) {
    std::vector<std::optional<CancellationToken>> chain(kDeep);
    chain[0].emplace();
    for (int i = 1; i < kDeep; ++i) chain[i] = chain[i - 1]->child();
    if (root_first) {
      for (auto& t : chain) t.reset();
    } else {
      for (int i = kDeep; i-- > 0;) chain[i].reset();
    }
    EXPECT_EQ(alive(), before);
  }
}

// ---- with_cancellation --------------------------------------------------------------------------

TEST(WithCancellation, TheFutureFinishingFirstGivesItsOutput) {
  CancellationToken t;
  Latch<int> a;
  auto f = karx::with_cancellation(t, a.future());
  static_assert(std::is_same_v<karx::output_of<decltype(f)>, std::optional<int>>);
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(f, w).is_pending());
  a.open(4);
  auto r = poll_with_counting(f, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>(4));
  EXPECT_EQ(a.drops(), 1);
  t.cancel();
  EXPECT_EQ(w.wakes(), 1) << "only the latch's wake: the finished future no longer waits on the token";
  EXPECT_THROW(poll_with_counting(f, w), std::logic_error);
}

TEST(WithCancellation, ATokenCancelledBeforeTheFirstPollNeverPollsTheFuture) {
  CancellationToken t;
  t.cancel();
  Latch<int> a;
  auto f = karx::with_cancellation(t, a.future());
  CountingWaker w;
  auto r = poll_with_counting(f, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::nullopt);
  EXPECT_EQ(a.polls(), 0);
  EXPECT_EQ(a.drops(), 1);
}

TEST(WithCancellation, CancellingWhilePendingWakesOnceAndDestroysTheFuture) {
  CancellationToken root;
  Latch<int> a;
  auto f = karx::with_cancellation(root.child(), a.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(f, w).is_pending());
  ASSERT_TRUE(poll_with_counting(f, w).is_pending());
  root.cancel();
  EXPECT_EQ(w.wakes(), 1);
  auto r = poll_with_counting(f, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::nullopt);
  EXPECT_EQ(a.drops(), 1);
  EXPECT_EQ(a.polls(), 2) << "not polled once the token is cancelled";
}

TEST(WithCancellation, OfAVoidFutureGivesBool) {
  CancellationToken t;
  Latch<void> a, b;
  auto done = karx::with_cancellation(t, a.future());
  static_assert(std::is_same_v<karx::output_of<decltype(done)>, bool>);
  a.open();
  CountingWaker w;
  auto r = poll_with_counting(done, w);
  ASSERT_TRUE(r.is_ready());
  EXPECT_TRUE(r.value());
  auto stopped = karx::with_cancellation(t, b.future());
  ASSERT_TRUE(poll_with_counting(stopped, w).is_pending());
  t.cancel();
  auto r2 = poll_with_counting(stopped, w);
  ASSERT_TRUE(r2.is_ready());
  EXPECT_FALSE(r2.value());
}

TEST(WithCancellation, DestroyedWhilePendingUnregistersAndDestroysTheFuture) {
  const std::size_t before = alive();
  CountingWaker w;
  Latch<int> a;
  {
    CancellationToken t;
    {
      auto f = karx::with_cancellation(t, a.future());
      ASSERT_TRUE(poll_with_counting(f, w).is_pending());
    }
    EXPECT_EQ(a.drops(), 1);
    t.cancel();
    EXPECT_EQ(w.wakes(), 0) << "the destroyed waiter is not woken";
  }
  EXPECT_EQ(alive(), before);
}

TEST(WithCancellation, AnExceptionIsRethrownAndTheWaitEnds) {
  CancellationToken t;
  Latch<int> a;
  auto f = karx::with_cancellation(t, a.future());
  CountingWaker w;
  ASSERT_TRUE(poll_with_counting(f, w).is_pending());
  a.fail(6);
  EXPECT_THROW(poll_with_counting(f, w), Boom);
  EXPECT_EQ(a.drops(), 1);
  const int wakes = w.wakes();
  t.cancel();
  EXPECT_EQ(w.wakes(), wakes);
}

// ---- on a karx::Runtime ------------------------------------------------------------------------

karx::Async<int> sleeps_unless_cancelled(CancellationToken t) {
  auto r = co_await karx::with_cancellation(std::move(t), karx::sleep_for(1h));
  co_return r ? 1 : 0;
}

karx::Async<int> waits_for(CancellationToken t) {
  co_await t.cancelled();
  co_return 1;
}

TEST(CancellationOnRuntime, ACancelFromAnotherThreadReleasesEveryWaitingTask) {
  karx::Runtime rt(probes::two_processors());
  CancellationToken root;
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < 100; ++i) {
    CancellationToken c = root.child();
    handles.push_back(rt.spawn(i % 2 == 0 ? sleeps_unless_cancelled(c.child()) : waits_for(c)));
  }
  std::thread canceller([&] { root.cancel(); });
  int sum = 0;
  for (auto& h : handles) sum += rt.block_on(std::move(h)).value();
  canceller.join();
  EXPECT_EQ(sum, 50) << "the sleepers were cancelled (0), the waiters released (1)";
}

// ---- in karx::sim::Simulation, many seeds -------------------------------------------------------

karx::Async<> cancel_after(CancellationToken t, std::chrono::milliseconds d, int yields) {
  co_await karx::sleep_for(d);
  for (int i = 0; i < yields; ++i) co_await karx::yield_now();
  t.cancel();
}

karx::Async<int> child_waits(CancellationToken parent, int yields) {
  for (int i = 0; i < yields; ++i) co_await karx::yield_now();
  CancellationToken mine = parent.child();
  auto r = co_await karx::with_cancellation(mine, karx::sleep_for(1h));
  co_return r ? 0 : 1;
}

TEST(CancellationInSimulation, EveryWaiterIsReleasedOnceUnderManyInterleavings) {
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    karx::sim::Simulation sim(seed);
    std::mt19937 gen(static_cast<std::uint32_t>(seed));
    CancellationToken root;
    std::vector<karx::JoinHandle<int>> handles;
    for (int i = 0; i < 12; ++i) handles.push_back(sim.spawn(child_waits(root, static_cast<int>(gen() % 4))));
    sim.spawn(cancel_after(root, std::chrono::milliseconds(gen() % 3), static_cast<int>(gen() % 4))).detach();
    const auto t0 = sim.now();
    auto outs = sim.block_on(karx::when_all(std::move(handles)));
    for (const auto& o : outs) ASSERT_EQ(o, std::optional<int>(1)) << "seed " << seed;
    EXPECT_LT(sim.now() - t0, 1h) << "released by the cancel, not by the hour's timers";
    EXPECT_EQ(karx::detail::token_child_count(root), 0u);
  }
}

TEST(CancellationInSimulation, TimeoutOfCancelledRacesInVirtualTime) {
  for (std::uint64_t seed = 0; seed < 64; ++seed) {
    karx::sim::Simulation sim(seed);
    CancellationToken t;
    sim.spawn(cancel_after(t, 20ms, 0)).detach();
    EXPECT_FALSE(sim.block_on(karx::timeout(10ms, t.cancelled())));
    EXPECT_TRUE(sim.block_on(karx::timeout(20ms, t.cancelled())));
    EXPECT_TRUE(t.is_cancelled());
  }
}

// ---- stress (TSan): cancel racing with registration and with children made and dropped ---------------

TEST(CancellationStress, CancelRacesWithWaitersRegisteringAndChildrenComingAndGoing) {
  const std::size_t before = alive();
  const int rounds = 300;
  for (int round = 0; round < rounds; ++round) {
    CancellationToken root;
    CancellationToken middle = root.child();
    std::atomic<bool> go{false};
    // Waiters that registered (pending at their first poll) and those that found the token
    // cancelled; each thread keeps its own.
    std::vector<std::unique_ptr<Waiter>> waiters_a, waiters_b;
    auto registrar = [&](std::vector<std::unique_ptr<Waiter>>& mine, int salt) {
      while (!go.load()) {
      }
      for (int i = 0; i < 40; ++i) {
        CancellationToken t = (i + salt) % 3 == 0 ? root : (i % 3 == 1 ? middle.child() : middle);
        mine.push_back(std::make_unique<Waiter>(t));
        mine.back()->registered = !mine.back()->poll();
        if (i % 7 == 0) {  // a waiter destroyed while it may be waiting
          auto f = t.child().cancelled();
          CountingWaker w;
          (void)poll_with_counting(f, w);
        }
      }
    };
    std::thread a(registrar, std::ref(waiters_a), 0);
    std::thread b(registrar, std::ref(waiters_b), 1);
    std::thread churn([&] {
      while (!go.load()) {
      }
      for (int i = 0; i < 60; ++i) {
        CancellationToken c = (i % 2 == 0 ? root : middle).child();
        CancellationToken g = c.child();
        if (i % 5 == 0) g.cancel();
      }
    });
    std::thread second_canceller([&] {
      while (!go.load()) {
      }
      for (int i = 0; i < round % 50; ++i) std::this_thread::yield();
      middle.cancel();
    });
    go.store(true);
    for (int i = 0; i < round % 40; ++i) std::this_thread::yield();
    root.cancel();
    a.join();
    b.join();
    churn.join();
    second_canceller.join();
    for (auto* mine : {&waiters_a, &waiters_b}) {
      for (auto& w : *mine) {
        // A waiter that registered was woken exactly once, by whichever cancel reached it
        // first; one that saw the token cancelled at its first poll never was.
        ASSERT_EQ(w->w.wakes(), w->registered ? 1 : 0) << "round " << round;
        ASSERT_TRUE(w->poll());
        ASSERT_EQ(w->w.alive(), 0) << "no waker is left behind";
      }
    }
  }
  EXPECT_EQ(alive(), before);
}

TEST(CancellationStress, EachRegisteredWaiterIsWokenExactlyOnce) {
  for (int round = 0; round < 300; ++round) {
    CancellationToken root;
    std::vector<CancellationToken> kids;
    for (int i = 0; i < 4; ++i) kids.push_back(root.child());
    // Registered before the race starts: each must be woken exactly once.
    std::vector<std::unique_ptr<Waiter>> registered;
    for (int i = 0; i < 32; ++i) {
      registered.push_back(std::make_unique<Waiter>(kids[i % 4]));
      ASSERT_FALSE(registered.back()->poll());
    }
    std::atomic<bool> go{false};
    std::thread t1([&] {
      while (!go.load()) {
      }
      root.cancel();
    });
    std::thread t2([&] {
      while (!go.load()) {
      }
      kids[round % 4].cancel();
    });
    std::thread t3([&] {
      while (!go.load()) {
      }
      for (auto& w : registered)
        if (w.get() != nullptr && round % 2 == 0) (void)w->poll();  // re-polls racing with the cancels
    });
    go.store(true);
    t1.join();
    t2.join();
    t3.join();
    for (auto& w : registered) {
      ASSERT_EQ(w->w.wakes(), 1) << "round " << round;
      ASSERT_TRUE(w->poll());
    }
  }
}

}  // namespace
