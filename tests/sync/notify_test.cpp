// karx::Notify: the stored permit, FIFO notify_one, notify_all for current waiters only (and
// for futures made before it), a notification passed on by a destroyed waiter, and no lost
// wake-up across threads.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <memory>
#include <thread>
#include <vector>

#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::poll_by;
using probes::WakeCounter;

TEST(Notify, NotifyOneWithNoWaiterStoresOnePermit) {
  karx::Notify n;
  n.notify_one();
  n.notify_one();  // at most one is stored
  auto first = n.notified();
  EXPECT_TRUE(probes::poll_once(first).is_ready());
  auto second = n.notified();
  EXPECT_TRUE(probes::poll_once(second).is_pending());
}

TEST(Notify, NotifyOneWakesWaitersInOrder) {
  karx::Notify n;
  WakeCounter a, b;
  auto fa = n.notified();
  auto fb = n.notified();
  EXPECT_TRUE(poll_by(a, fa).is_pending());
  EXPECT_TRUE(poll_by(b, fb).is_pending());
  n.notify_one();
  EXPECT_EQ(a.wakes(), 1);
  EXPECT_EQ(b.wakes(), 0);
  EXPECT_TRUE(poll_by(a, fa).is_ready());
  EXPECT_TRUE(poll_by(b, fb).is_pending());
  n.notify_one();
  EXPECT_TRUE(poll_by(b, fb).is_ready());
  auto fc = n.notified();
  EXPECT_TRUE(probes::poll_once(fc).is_pending());  // nothing was stored
}

TEST(Notify, NotifyAllWakesEveryCurrentWaiterAndStoresNothing) {
  karx::Notify n;
  std::vector<WakeCounter> wakers(70);  // more than one batch
  std::vector<std::unique_ptr<karx::Notified>> futures;
  for (auto& w : wakers) {
    futures.push_back(std::make_unique<karx::Notified>(n.notified()));
    EXPECT_TRUE(poll_by(w, *futures.back()).is_pending());
  }
  auto made_before = n.notified();  // made, not yet polled: notify_all counts for it too
  n.notify_all();
  for (std::size_t i = 0; i < wakers.size(); ++i) {
    EXPECT_EQ(wakers[i].wakes(), 1);
    EXPECT_TRUE(poll_by(wakers[i], *futures[i]).is_ready());
  }
  EXPECT_TRUE(probes::poll_once(made_before).is_ready());
  auto made_after = n.notified();
  EXPECT_TRUE(probes::poll_once(made_after).is_pending());
}

TEST(Notify, ANotificationChosenForADestroyedWaiterIsPassedOn) {
  karx::Notify n;
  WakeCounter a, b;
  auto fb = n.notified();
  {
    auto fa = n.notified();
    EXPECT_TRUE(poll_by(a, fa).is_pending());
    EXPECT_TRUE(poll_by(b, fb).is_pending());
    n.notify_one();  // chooses fa
  }
  EXPECT_EQ(b.wakes(), 1);
  EXPECT_TRUE(poll_by(b, fb).is_ready());
  // With nobody left to pass it to, it becomes the stored permit.
  {
    auto fa = n.notified();
    EXPECT_TRUE(probes::poll_once(fa).is_pending());
    n.notify_one();
  }
  auto later = n.notified();
  EXPECT_TRUE(probes::poll_once(later).is_ready());
}

TEST(Notify, AWaiterDestroyedWhileWaitingLeavesTheQueue) {
  karx::Notify n;
  {
    auto f = n.notified();
    EXPECT_TRUE(probes::poll_once(f).is_pending());
  }
  n.notify_one();  // no waiter left: stored
  auto g = n.notified();
  EXPECT_TRUE(probes::poll_once(g).is_ready());
}

// A waiter checks a flag, then waits; a notifier sets the flag, then notifies: the waiter
// never sleeps through the change (the permit covers the race), across threads, many times.
TEST(NotifyStress, NoWakeUpIsLostBetweenAThreadAndAWaiter) {
  karx::Notify n;
  std::atomic<int> produced{0};
  constexpr int kRounds = 20000;
  std::thread producer([&] {
    for (int i = 1; i <= kRounds; ++i) {
      produced.store(i);
      n.notify_one();
    }
  });
  std::atomic<bool> woken{false};
  karx::Waker waker = karx::waker_fn([&woken] { woken.store(true); });
  karx::Context cx(waker);
  int seen = 0;
  while (seen < kRounds) {
    auto f = n.notified();
    const int now = produced.load();
    if (now > seen) {
      seen = now;
      continue;
    }
    woken.store(false);
    if (f.poll(cx).is_pending()) {
      const auto deadline = std::chrono::steady_clock::now() + probes::kTimeout;
      while (!woken.load()) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "a lost wake-up";
        std::this_thread::yield();
      }
      ASSERT_TRUE(f.poll(cx).is_ready());
    }
  }
  producer.join();
}

karx::Async<> wait_then_count(karx::Notify* n, std::atomic<int>* done) {
  co_await n->notified();
  done->fetch_add(1);
}

TEST(NotifyStress, NotifyAllOnTheRuntimeWakesEveryWaiter) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  for (int round = 0; round < 50; ++round) {
    karx::Notify n;
    std::atomic<int> done{0};
    std::vector<karx::JoinHandle<void>> handles;
    // Futures are made inside the tasks; each round notifies until all have seen one.
    for (int i = 0; i < 40; ++i) handles.push_back(rt.spawn(wait_then_count(&n, &done)));
    const auto deadline = std::chrono::steady_clock::now() + probes::kTimeout;
    while (done.load() < 40) {
      n.notify_all();
      ASSERT_LT(std::chrono::steady_clock::now(), deadline);
      std::this_thread::yield();
    }
    rt.block_on([&]() -> karx::Async<> {
      for (auto& h : handles) EXPECT_TRUE(co_await h);
    }());
  }
}

}  // namespace
