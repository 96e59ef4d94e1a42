// karx::Semaphore: counting, FIFO without overtaking, cancellation at the await point (granted
// permits come back), misuse, and permits conserved across threads and tasks.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::poll_by;
using probes::WakeCounter;

TEST(Semaphore, CountsPermitsAndReturnsThemOnDestruction) {
  karx::Semaphore s(3);
  EXPECT_EQ(s.available(), 3u);
  {
    auto p = s.try_acquire(2);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->count(), 2u);
    EXPECT_EQ(s.available(), 1u);
    EXPECT_FALSE(s.try_acquire(2));
    auto moved = std::move(*p);
    EXPECT_EQ(s.available(), 1u);
  }
  EXPECT_EQ(s.available(), 3u);
  s.release(2);
  EXPECT_EQ(s.available(), 5u);
  auto zero = s.acquire(0);
  EXPECT_TRUE(probes::poll_once(zero).is_ready());
}

TEST(Semaphore, ALaterSmallRequestNeverOvertakesAnEarlierLargeOne) {
  karx::Semaphore s(1);
  WakeCounter big, small;
  auto a = s.acquire(3);
  auto b = s.acquire(1);
  EXPECT_TRUE(poll_by(big, a).is_pending());
  EXPECT_TRUE(poll_by(small, b).is_pending());  // one permit is free, but `a` came first
  EXPECT_FALSE(s.try_acquire(1));
  s.release(1);
  EXPECT_EQ(big.wakes(), 0);
  s.release(1);  // 3 free: `a` gets them all
  EXPECT_EQ(big.wakes(), 1);
  EXPECT_EQ(small.wakes(), 0);
  auto pa = poll_by(big, a);
  ASSERT_TRUE(pa.is_ready());
  EXPECT_EQ(s.available(), 0u);
  {
    auto permit = std::move(pa).value();
  }
  EXPECT_EQ(small.wakes(), 1);
  {
    auto pb = poll_by(small, b);
    ASSERT_TRUE(pb.is_ready());
    EXPECT_EQ(s.available(), 2u);
  }
  EXPECT_EQ(s.available(), 3u);  // b's permit went back with its Poll
}

TEST(Semaphore, AWaitingLargeRequestDestroyedLetsTheSmallerOnesBehindGo) {
  karx::Semaphore s(1);
  WakeCounter small;
  auto b = s.acquire(1);
  {
    auto a = s.acquire(3);
    EXPECT_TRUE(probes::poll_once(a).is_pending());
    EXPECT_TRUE(poll_by(small, b).is_pending());
  }
  EXPECT_EQ(small.wakes(), 1);
  auto pb = poll_by(small, b);
  ASSERT_TRUE(pb.is_ready());
  EXPECT_EQ(s.available(), 0u);
}

TEST(Semaphore, PermitsGrantedToAWaiterDestroyedBeforeSeeingThemComeBack) {
  karx::Semaphore s(0);
  WakeCounter a, b;
  auto wb = s.acquire(2);
  {
    auto wa = s.acquire(2);
    EXPECT_TRUE(poll_by(a, wa).is_pending());
    EXPECT_TRUE(poll_by(b, wb).is_pending());
    s.release(3);  // 2 to wa, 1 left
    EXPECT_EQ(a.wakes(), 1);
    EXPECT_EQ(b.wakes(), 0);
  }
  EXPECT_EQ(b.wakes(), 1);  // wa's two came back: wb has its two, one is free
  auto pb = poll_by(b, wb);
  ASSERT_TRUE(pb.is_ready());
  EXPECT_EQ(s.available(), 1u);
}

TEST(Semaphore, MisuseGetsAClearError) {
  karx::Semaphore s(1);
  EXPECT_THROW((void)s.acquire(karx::Semaphore::max_permits + 1), std::invalid_argument);
  EXPECT_THROW((void)karx::Semaphore(karx::Semaphore::max_permits + 1), std::invalid_argument);
  EXPECT_THROW(s.release(karx::Semaphore::max_permits), std::overflow_error);
  EXPECT_EQ(s.available(), 1u);
  auto f = s.acquire();
  ASSERT_TRUE(probes::poll_once(f).is_ready());
  EXPECT_THROW((void)probes::poll_once(f), std::logic_error);
}

// Threads acquiring 1..3 permits by hand, some abandoning their waits: at no time are more
// permits out than exist, and at the end all are back.
TEST(SemaphoreStress, PermitsAreConservedWhileWaitersAbandonTheirWaits) {
  constexpr std::size_t kPermits = 4;
  karx::Semaphore s(kPermits);
  std::atomic<long> out{0};
  std::atomic<bool> exceeded{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      // Shared with the waker: a late wake from a wait abandoned here may outlive this thread.
      auto woken_flag = std::make_shared<std::atomic<bool>>(false);
      std::atomic<bool>& woken = *woken_flag;
      karx::Waker waker = karx::waker_fn([woken_flag] { woken_flag->store(true); });
      karx::Context cx(waker);
      for (int i = 0; i < 4000;) {
        const std::size_t n = 1 + rng() % 3;
        auto acquire = s.acquire(n);
        woken.store(false);
        auto p = acquire.poll(cx);
        if (p.is_pending()) {
          if (rng() % 4 == 0) continue;
          // A stale wake, meant for a wait this thread abandoned, may come first: wait again.
          do {
            while (!woken.load()) std::this_thread::yield();
            woken.store(false);
            p = acquire.poll(cx);
          } while (p.is_pending());
        }
        karx::SemaphorePermit permit = std::move(p).value();
        if (out.fetch_add(static_cast<long>(n)) + static_cast<long>(n) > static_cast<long>(kPermits)) exceeded = true;
        out.fetch_sub(static_cast<long>(n));
        ++i;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(exceeded.load());
  EXPECT_EQ(s.available(), kPermits);
}

karx::Async<> bounded_work(karx::Semaphore* s, std::atomic<int>* inside, std::atomic<int>* peak) {
  karx::SemaphorePermit p = co_await s->acquire();
  const int now = inside->fetch_add(1) + 1;
  int seen = peak->load();
  while (now > seen && !peak->compare_exchange_weak(seen, now)) {
  }
  co_await karx::yield_now();
  inside->fetch_sub(1);
}

TEST(SemaphoreStress, BoundsConcurrencyOfTasksOnTheRuntime) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::Semaphore s(3);
  std::atomic<int> inside{0}, peak{0};
  std::vector<karx::JoinHandle<void>> handles;
  for (int i = 0; i < 2000; ++i) handles.push_back(rt.spawn(bounded_work(&s, &inside, &peak)));
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : handles) EXPECT_TRUE(co_await h);
  }());
  EXPECT_LE(peak.load(), 3);
  EXPECT_GE(peak.load(), 1);
  EXPECT_EQ(s.available(), 3u);
}

}  // namespace
