// Parker: an unpark before a park is remembered; park_for times out; and a ping-pong between
// two threads loses no wake-up.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

import karx.machinery;

namespace {

using namespace std::chrono_literals;

TEST(Parker, AnUnparkBeforeTheParkIsRemembered) {
  karx::detail::Parker parker;
  parker.unpark();
  parker.unpark();  // still one notification
  EXPECT_TRUE(parker.park_for(10s));
  // Consumed: the next park waits (and times out).
  EXPECT_FALSE(parker.park_for(1ms));
}

TEST(Parker, ParkForTimesOutWithoutAnUnpark) {
  karx::detail::Parker parker;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(parker.park_for(20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
}

TEST(Parker, UnparkWakesAParkedThread) {
  karx::detail::Parker parker;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    EXPECT_TRUE(parker.park_for(60s));
    woke.store(true);
  });
  std::this_thread::sleep_for(20ms);  // most likely parked by now; either way it must wake
  parker.unpark();
  sleeper.join();
  EXPECT_TRUE(woke.load());
}

TEST(Parker, PingPongLosesNoWakeup) {
  constexpr int kRounds = 20000;
  karx::detail::Parker ping, pong;
  std::atomic<int> ball{0};  // odd: pong's turn; even: ping's turn
  std::thread other([&] {
    for (int i = 0; i < kRounds; ++i) {
      while (ball.load(std::memory_order_acquire) % 2 == 0) ASSERT_TRUE(pong.park_for(60s)) << "lost wake-up";
      ball.fetch_add(1, std::memory_order_release);
      ping.unpark();
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    ball.fetch_add(1, std::memory_order_release);
    pong.unpark();
    while (ball.load(std::memory_order_acquire) % 2 == 1) ASSERT_TRUE(ping.park_for(60s)) << "lost wake-up";
  }
  other.join();
  EXPECT_EQ(ball.load(), 2 * kRounds);
}

}  // namespace
