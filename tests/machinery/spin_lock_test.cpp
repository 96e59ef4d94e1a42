// SpinLock (the injector's lock): mutual exclusion, try_lock, and that a holder's writes are
// seen by the next holder (the stress test's plain counter; TSan checks the orderings).
#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <vector>

import karx.machinery;

namespace {

TEST(SpinLock, TryLockFailsWhileHeldAndSucceedsAfterUnlock) {
  karx::detail::SpinLock lock;
  EXPECT_TRUE(lock.try_lock());
  EXPECT_FALSE(lock.try_lock());
  lock.unlock();
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
  lock.lock();
  EXPECT_FALSE(lock.try_lock());
  lock.unlock();
}

TEST(SpinLock, ExcludesEveryOtherHolderAcrossThreads) {
  karx::detail::SpinLock lock;
  long counter = 0;  // plain: only the lock orders the increments
  int inside = 0;
  bool overlapped = false;
  constexpr int kThreads = 4, kRounds = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        std::lock_guard guard(lock);
        if (++inside != 1) overlapped = true;
        ++counter;
        --inside;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_FALSE(overlapped);
  EXPECT_EQ(counter, long{kThreads} * kRounds);
}

}  // namespace
