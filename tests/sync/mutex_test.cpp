// karx::Mutex: FIFO hand-off, try_lock, cancellation at the await point (a lock handed to a
// destroyed waiter goes on), misuse, and mutual exclusion across threads and tasks.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
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

TEST(Mutex, LocksAtOnceWhenFreeAndTryLockFailsWhileHeld) {
  karx::Mutex m;
  WakeCounter w;
  auto lock = m.lock();
  auto p = poll_by(w, lock);
  ASSERT_TRUE(p.is_ready());
  karx::MutexGuard guard = std::move(p).value();
  EXPECT_TRUE(guard.owns_lock());
  EXPECT_FALSE(m.try_lock().has_value());
  guard.unlock();
  EXPECT_FALSE(guard.owns_lock());
  auto again = m.try_lock();
  ASSERT_TRUE(again.has_value());
}

TEST(Mutex, WaitersGetTheLockInTheOrderTheyCameAndNobodyBarges) {
  karx::Mutex m;
  std::optional<karx::MutexGuard> held = m.try_lock();
  WakeCounter a, b;
  auto la = m.lock();
  auto lb = m.lock();
  EXPECT_TRUE(poll_by(a, la).is_pending());
  EXPECT_TRUE(poll_by(b, lb).is_pending());
  held.reset();  // hands the lock to `a` without freeing it
  EXPECT_EQ(a.wakes(), 1);
  EXPECT_EQ(b.wakes(), 0);
  EXPECT_FALSE(m.try_lock().has_value());  // no barging past the queue
  auto ga = poll_by(a, la);
  ASSERT_TRUE(ga.is_ready());
  EXPECT_TRUE(poll_by(b, lb).is_pending());
  {
    karx::MutexGuard g = std::move(ga).value();
  }
  EXPECT_EQ(b.wakes(), 1);
  auto gb = poll_by(b, lb);
  ASSERT_TRUE(gb.is_ready());
  {
    karx::MutexGuard g = std::move(gb).value();
  }
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(Mutex, AWaiterDestroyedWhileWaitingLeavesTheQueue) {
  karx::Mutex m;
  std::optional<karx::MutexGuard> held = m.try_lock();
  WakeCounter a, b;
  auto lb = m.lock();
  {
    auto la = m.lock();
    EXPECT_TRUE(poll_by(a, la).is_pending());
    EXPECT_TRUE(poll_by(b, lb).is_pending());
  }
  held.reset();
  EXPECT_EQ(a.wakes(), 0);
  EXPECT_EQ(b.wakes(), 1);
  EXPECT_TRUE(poll_by(b, lb).is_ready());
}

TEST(Mutex, ALockHandedToAWaiterDestroyedBeforeSeeingItGoesToTheNext) {
  karx::Mutex m;
  std::optional<karx::MutexGuard> held = m.try_lock();
  WakeCounter a, b;
  auto lb = m.lock();
  {
    auto la = m.lock();
    EXPECT_TRUE(poll_by(a, la).is_pending());
    EXPECT_TRUE(poll_by(b, lb).is_pending());
    held.reset();  // handed to la
    EXPECT_EQ(a.wakes(), 1);
  }  // la never saw it
  EXPECT_EQ(b.wakes(), 1);
  auto gb = poll_by(b, lb);
  ASSERT_TRUE(gb.is_ready());
  {
    karx::MutexGuard g = std::move(gb).value();
  }
  EXPECT_TRUE(m.try_lock().has_value());  // and b's guard freed it
}

TEST(Mutex, ALockHandedToTheLastWaiterDestroyedBeforeSeeingItIsFreed) {
  karx::Mutex m;
  std::optional<karx::MutexGuard> held = m.try_lock();
  WakeCounter a;
  {
    auto la = m.lock();
    EXPECT_TRUE(poll_by(a, la).is_pending());
    held.reset();
  }
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(Mutex, MisuseGetsAClearError) {
  karx::Mutex m;
  auto g = m.try_lock();
  ASSERT_TRUE(g);
  g->unlock();
  try {
    g->unlock();
    FAIL() << "unlock twice did not throw";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("MutexGuard::unlock()"), std::string::npos) << e.what();
  }
  auto lock = m.lock();
  ASSERT_TRUE(probes::poll_once(lock).is_ready());
  EXPECT_THROW((void)probes::poll_once(lock), std::logic_error);
}

TEST(MutexDeathTest, DestroyingALockedMutexEndsTheProcessWithADiagnostic) {
  auto destroy_locked = [] {
    auto m = std::make_unique<karx::Mutex>();
    auto g = m->try_lock();
    m.reset();
  };
  EXPECT_DEATH(destroy_locked(), "karx: karx::Mutex destroyed while locked or awaited");
}

// Threads polling by hand, some abandoning their waits: the critical section is never shared
// and every lock taken is released.
TEST(MutexStress, MutualExclusionWhileWaitersAbandonTheirWaits) {
  karx::Mutex m;
  std::atomic<int> inside{0};
  long counter = 0;  // guarded by m only: TSan checks the hand-offs' orderings
  constexpr int kThreads = 4, kRounds = 4000;
  std::atomic<int> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      // Shared with the waker: a late wake from a wait abandoned here may outlive this thread.
      auto woken_flag = std::make_shared<std::atomic<bool>>(false);
      std::atomic<bool>& woken = *woken_flag;
      karx::Waker waker = karx::waker_fn([woken_flag] { woken_flag->store(true); });
      karx::Context cx(waker);
      for (int i = 0; i < kRounds;) {
        auto lock = m.lock();
        woken.store(false);
        auto p = lock.poll(cx);
        if (p.is_pending()) {
          if (rng() % 4 == 0) continue;  // abandon the wait
          // A stale wake, meant for a wait this thread abandoned, may come first: wait again.
          do {
            while (!woken.load()) std::this_thread::yield();
            woken.store(false);
            p = lock.poll(cx);
          } while (p.is_pending());
        }
        karx::MutexGuard g = std::move(p).value();
        ASSERT_EQ(inside.fetch_add(1), 0);
        ++counter;
        inside.fetch_sub(1);
        taken.fetch_add(1);
        ++i;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, kThreads * kRounds);
  EXPECT_EQ(taken.load(), kThreads * kRounds);
  EXPECT_TRUE(m.try_lock().has_value());
}

karx::Async<> add_under_lock(karx::Mutex* m, long* counter, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    karx::MutexGuard g = co_await m->lock();
    const long before = *counter;
    if (i % 8 == 0) co_await karx::yield_now();  // held across an await
    *counter = before + 1;
  }
}

TEST(MutexStress, TasksHoldingTheLockAcrossAwaitsOnTheRuntime) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  karx::Mutex m;
  long counter = 0;
  constexpr int kTasks = 8, kRounds = 2000;
  std::vector<karx::JoinHandle<void>> handles;
  for (int t = 0; t < kTasks; ++t) handles.push_back(rt.spawn(add_under_lock(&m, &counter, kRounds)));
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : handles) EXPECT_TRUE(co_await h);
  }());
  EXPECT_EQ(counter, kTasks * kRounds);
}

}  // namespace
