// karx::oneshot: one value once; a sender gone without sending; a receiver gone; misuse; the
// value crossing threads.
#include <gtest/gtest.h>

#include <coroutine>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::WakeCounter;

TEST(Oneshot, DeliversTheValueAndWakesTheWaitingReceiver) {
  auto [tx, rx] = karx::oneshot<std::string>();
  WakeCounter w;
  EXPECT_TRUE(probes::poll_with(rx, w.waker()).is_pending());
  EXPECT_TRUE(tx.send("hi"));
  EXPECT_EQ(w.wakes(), 1);
  auto p = probes::poll_with(rx, w.waker());
  ASSERT_TRUE(p.is_ready());
  EXPECT_EQ(p.value(), std::optional<std::string>("hi"));
  EXPECT_THROW((void)probes::poll_once(rx), std::logic_error);
  EXPECT_THROW((void)tx.send("again"), std::logic_error);
}

TEST(Oneshot, ASenderDestroyedWithoutSendingYieldsNullopt) {
  auto [tx, rx] = karx::oneshot<int>();
  WakeCounter w;
  EXPECT_TRUE(probes::poll_with(rx, w.waker()).is_pending());
  probes::drop_now(tx);
  EXPECT_EQ(w.wakes(), 1);
  auto p = probes::poll_with(rx, w.waker());
  ASSERT_TRUE(p.is_ready());
  EXPECT_EQ(p.value(), std::nullopt);
}

TEST(Oneshot, SendingToAReceiverThatIsGoneReturnsFalseAndDestroysTheValue) {
  auto [tx, rx] = karx::oneshot<std::shared_ptr<int>>();
  auto v = std::make_shared<int>(1);
  EXPECT_FALSE(tx.is_closed());
  probes::drop_now(rx);
  EXPECT_TRUE(tx.is_closed());
  EXPECT_FALSE(tx.send(v));
  EXPECT_EQ(v.use_count(), 1);
}

TEST(Oneshot, AValueSentAndNeverReceivedIsDestroyedWithTheReceiver) {
  auto v = std::make_shared<int>(1);
  {
    auto [tx, rx] = karx::oneshot<std::shared_ptr<int>>();
    EXPECT_TRUE(tx.send(v));
    EXPECT_EQ(v.use_count(), 2);
  }
  EXPECT_EQ(v.use_count(), 1);
}

TEST(OneshotStress, TheValueCrossesThreadsWhileTheReceiverWaits) {
  for (int i = 0; i < 2000; ++i) {
    auto [tx, rx] = karx::oneshot<int>();
    std::thread t([tx = std::move(tx), i]() mutable { tx.send(i); });
    WakeCounter w;
    EXPECT_EQ(probes::block_on(rx, w), std::optional<int>(i));
    t.join();
  }
}

TEST(OneshotStress, AwaitedByATaskOnTheRuntime) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  auto [tx, rx] = karx::oneshot<int>();
  auto h = rt.spawn([](karx::OneshotReceiver<int> rx) -> karx::Async<int> { co_return *co_await rx; }(std::move(rx)));
  std::thread t([tx = std::move(tx)]() mutable { tx.send(42); });
  EXPECT_EQ(rt.block_on(std::move(h)), std::optional<int>(42));
  t.join();
}

}  // namespace
