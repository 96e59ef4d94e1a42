// karx::channel / unbounded_channel: single-thread semantics polled by hand, cancellation at
// every await point, misuse, and exactly-once delivery across threads and tasks.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using probes::DropCounter;
using probes::poll_by;
using probes::WakeCounter;

template <class P>
auto value_of(P&& p) {
  EXPECT_TRUE(p.is_ready());
  return std::forward<P>(p).value();
}

TEST(Channel, BufferedValuesLeaveInSendOrder) {
  auto [tx, rx] = karx::channel<int>(3);
  WakeCounter w;
  for (int i = 0; i < 3; ++i) {
    auto send = tx.send(i);
    EXPECT_TRUE(value_of(poll_by(w, send)));
  }
  for (int i = 0; i < 3; ++i) {
    auto recv = rx.recv();
    EXPECT_EQ(value_of(poll_by(w, recv)), std::optional<int>(i));
  }
  EXPECT_EQ(rx.try_recv(), std::nullopt);
  EXPECT_EQ(w.wakes(), 0);
}

TEST(Channel, ASendWaitsForRoomAndIsWokenByTheReceiverThatMakesIt) {
  auto [tx, rx] = karx::channel<int>(1);
  WakeCounter w;
  auto first = tx.send(1);
  EXPECT_TRUE(value_of(poll_by(w, first)));
  auto second = tx.send(2);
  EXPECT_TRUE(poll_by(w, second).is_pending());
  int two = 2;
  EXPECT_EQ(tx.try_send(std::move(two)), karx::TrySend::full);
  EXPECT_EQ(two, 2);  // not moved from
  EXPECT_EQ(rx.try_recv(), std::optional<int>(1));
  // The receive moved the waiting sender's value into the room it made, and woke it.
  EXPECT_EQ(w.wakes(), 1);
  EXPECT_TRUE(value_of(poll_by(w, second)));
  EXPECT_EQ(rx.try_recv(), std::optional<int>(2));
}

TEST(Channel, RendezvousSendWaitsForAReceiverAndHandsTheValueOver) {
  auto [tx, rx] = karx::channel<std::string>(0);
  WakeCounter sender_waker, receiver_waker;
  std::string v = "x";
  EXPECT_EQ(tx.try_send(std::move(v)), karx::TrySend::full);
  auto send = tx.send("hello");
  EXPECT_TRUE(poll_by(sender_waker, send).is_pending());
  auto recv = rx.recv();
  EXPECT_EQ(value_of(poll_by(receiver_waker, recv)), std::optional<std::string>("hello"));
  EXPECT_EQ(sender_waker.wakes(), 1);
  EXPECT_TRUE(value_of(poll_by(sender_waker, send)));

  // A waiting receiver: the send completes at once, handing the value to it.
  auto recv2 = rx.recv();
  EXPECT_TRUE(poll_by(receiver_waker, recv2).is_pending());
  auto send2 = tx.send("world");
  EXPECT_TRUE(value_of(poll_by(sender_waker, send2)));
  EXPECT_EQ(receiver_waker.wakes(), 1);
  EXPECT_EQ(value_of(poll_by(receiver_waker, recv2)), std::optional<std::string>("world"));
}

TEST(Channel, WaitingReceiversGetValuesInTheOrderTheyStartedWaiting) {
  auto [tx, rx] = karx::channel<int>(4);
  WakeCounter a, b, c;
  auto ra = rx.recv();
  auto rb = rx.recv();
  auto rc = rx.recv();
  EXPECT_TRUE(poll_by(b, rb).is_pending());
  EXPECT_TRUE(poll_by(a, ra).is_pending());
  EXPECT_TRUE(poll_by(c, rc).is_pending());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(tx.try_send(int(i)), karx::TrySend::sent);
  EXPECT_EQ((std::array{a.wakes(), b.wakes(), c.wakes()}), (std::array{1, 1, 1}));
  EXPECT_EQ(value_of(poll_by(b, rb)), std::optional<int>(0));
  EXPECT_EQ(value_of(poll_by(a, ra)), std::optional<int>(1));
  EXPECT_EQ(value_of(poll_by(c, rc)), std::optional<int>(2));
}

TEST(Channel, CloseFailsWaitingSendsDestroyingTheirValuesAndLetsReceiversDrain) {
  auto [tx, rx] = karx::channel<std::shared_ptr<int>>(1);
  WakeCounter w;
  auto kept = std::make_shared<int>(1);
  auto lost = std::make_shared<int>(2);
  EXPECT_EQ(tx.try_send(std::shared_ptr<int>(kept)), karx::TrySend::sent);
  auto send = tx.send(std::shared_ptr<int>(lost));
  EXPECT_TRUE(poll_by(w, send).is_pending());
  EXPECT_EQ(lost.use_count(), 2);
  rx.close();
  EXPECT_TRUE(tx.is_closed());
  EXPECT_EQ(w.wakes(), 1);
  EXPECT_FALSE(value_of(poll_by(w, send)));
  EXPECT_EQ(lost.use_count(), 1);  // the failed send destroyed its value
  auto after = tx.send(std::make_shared<int>(3));
  EXPECT_FALSE(value_of(poll_by(w, after)));
  std::shared_ptr<int> three;
  EXPECT_EQ(tx.try_send(std::move(three)), karx::TrySend::closed);
  // What was buffered is still received, then nullopt.
  auto r1 = rx.recv();
  EXPECT_EQ(*value_of(poll_by(w, r1)), kept);
  auto r2 = rx.recv();
  EXPECT_EQ(value_of(poll_by(w, r2)), std::nullopt);
}

TEST(Channel, ClosingWakesEveryWaitingReceiverWithNullopt) {
  auto [tx, rx] = karx::channel<int>(2);
  std::vector<WakeCounter> wakers(100);  // more than one batch of wakes
  std::vector<std::unique_ptr<karx::RecvFuture<int>>> recvs;
  for (auto& w : wakers) {
    recvs.push_back(std::make_unique<karx::RecvFuture<int>>(rx.recv()));
    EXPECT_TRUE(poll_by(w, *recvs.back()).is_pending());
  }
  tx.close();
  for (std::size_t i = 0; i < wakers.size(); ++i) {
    EXPECT_EQ(wakers[i].wakes(), 1);
    EXPECT_EQ(value_of(poll_by(wakers[i], *recvs[i])), std::nullopt);
  }
}

TEST(Channel, TheLastSenderClosesTheChannelAndTheLastReceiverToo) {
  {
    auto [tx, rx] = karx::channel<int>(1);
    WakeCounter w;
    auto recv = rx.recv();
    EXPECT_TRUE(poll_by(w, recv).is_pending());
    auto tx2 = tx;
    probes::drop_now(tx);
    EXPECT_EQ(w.wakes(), 0);  // one Sender is left
    probes::drop_now(tx2);
    EXPECT_EQ(w.wakes(), 1);
    EXPECT_EQ(value_of(poll_by(w, recv)), std::nullopt);
  }
  {
    auto [tx, rx] = karx::channel<int>(1);
    probes::drop_now(rx);
    EXPECT_TRUE(tx.is_closed());
    WakeCounter w;
    auto send = tx.send(1);
    EXPECT_FALSE(value_of(poll_by(w, send)));
  }
}

TEST(Channel, AWaitingReceiverDestroyedLeavesTheQueueAndLosesNothing) {
  auto [tx, rx] = karx::channel<int>(1);
  WakeCounter a, b;
  auto rb = rx.recv();
  {
    auto ra = rx.recv();
    EXPECT_TRUE(poll_by(a, ra).is_pending());
    EXPECT_TRUE(poll_by(b, rb).is_pending());
  }  // ra withdraws
  EXPECT_EQ(tx.try_send(5), karx::TrySend::sent);
  EXPECT_EQ(a.wakes(), 0);
  EXPECT_EQ(b.wakes(), 1);
  EXPECT_EQ(value_of(poll_by(b, rb)), std::optional<int>(5));
}

TEST(Channel, AValueHandedToAReceiverDestroyedBeforeTakingItGoesToTheNextReceiver) {
  auto [tx, rx] = karx::channel<int>(1);
  WakeCounter a, b;
  auto rb = rx.recv();
  {
    auto ra = rx.recv();
    EXPECT_TRUE(poll_by(a, ra).is_pending());
    EXPECT_TRUE(poll_by(b, rb).is_pending());
    EXPECT_EQ(tx.try_send(1), karx::TrySend::sent);  // handed to ra
    EXPECT_EQ(a.wakes(), 1);
    EXPECT_EQ(b.wakes(), 0);
  }  // ra destroyed without taking it
  EXPECT_EQ(b.wakes(), 1);
  EXPECT_EQ(value_of(poll_by(b, rb)), std::optional<int>(1));
}

TEST(Channel, AValueHandedToAReceiverDestroyedBeforeTakingItGoesBackToTheFront) {
  auto [tx, rx] = karx::channel<int>(1);
  WakeCounter a;
  {
    auto ra = rx.recv();
    EXPECT_TRUE(poll_by(a, ra).is_pending());
    EXPECT_EQ(tx.try_send(1), karx::TrySend::sent);  // handed to ra
    EXPECT_EQ(tx.try_send(2), karx::TrySend::sent);  // buffered
  }
  // 1 was sent first: it comes back ahead of 2 (the buffer briefly holds more than capacity).
  EXPECT_EQ(rx.try_recv(), std::optional<int>(1));
  EXPECT_EQ(rx.try_recv(), std::optional<int>(2));
  EXPECT_EQ(rx.try_recv(), std::nullopt);
}

TEST(Channel, AWaitingSendDestroyedIsWithdrawnAndItsValueDestroyed) {
  auto [tx, rx] = karx::channel<std::shared_ptr<int>>(0);
  WakeCounter w;
  auto v = std::make_shared<int>(1);
  {
    auto send = tx.send(std::shared_ptr<int>(v));
    EXPECT_TRUE(poll_by(w, send).is_pending());
    EXPECT_EQ(v.use_count(), 2);
  }
  EXPECT_EQ(v.use_count(), 1);
  EXPECT_EQ(rx.try_recv(), std::nullopt);
}

TEST(Channel, AFutureNeverPolledHoldsNoPlaceAndMovesFreely) {
  auto [tx, rx] = karx::channel<int>(0);
  auto send = tx.send(1);
  auto moved = std::move(send);
  auto recv = rx.recv();
  auto recv2 = std::move(recv);
  WakeCounter w;
  EXPECT_TRUE(poll_by(w, moved).is_pending());
  EXPECT_EQ(value_of(poll_by(w, recv2)), std::optional<int>(1));
}

TEST(Channel, UnboundedSendsNeverWait) {
  auto [tx, rx] = karx::unbounded_channel<int>();
  WakeCounter w;
  for (int i = 0; i < 100000; ++i) {
    auto send = tx.send(int(i));
    ASSERT_TRUE(value_of(poll_by(w, send)));
  }
  for (int i = 0; i < 100000; ++i) ASSERT_EQ(rx.try_recv(), std::optional<int>(i));
}

TEST(Channel, MisuseGetsAClearError) {
  karx::Sender<int> empty_tx;
  karx::Receiver<int> empty_rx;
  EXPECT_THROW((void)empty_tx.send(1), std::logic_error);
  EXPECT_THROW((void)empty_rx.recv(), std::logic_error);
  EXPECT_THROW((void)empty_tx.is_closed(), std::logic_error);
  EXPECT_THROW(empty_rx.close(), std::logic_error);
  try {
    (void)empty_tx.try_send(1);
    FAIL();
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("Sender::try_send()"), std::string::npos) << e.what();
  }
  auto [tx, rx] = karx::channel<int>(1);
  WakeCounter w;
  auto send = tx.send(1);
  EXPECT_TRUE(value_of(poll_by(w, send)));
  EXPECT_THROW((void)poll_by(w, send), std::logic_error);
  EXPECT_THROW((void)karx::channel<int>(SIZE_MAX), std::invalid_argument);
}

TEST(ChannelDeathTest, MovingAWaitingFutureEndsTheProcessWithADiagnostic) {
  auto move_a_waiting_receive = [] {
    auto channel = karx::channel<int>(0);
    auto recv = channel.second.recv();
    (void)probes::poll_once(recv);
    auto moved = std::move(recv);
  };
  EXPECT_DEATH(move_a_waiting_receive(), "karx: a karx.sync future was moved while it waited");
}

// --- Across threads -----------------------------------------------------------------------

// Plain threads polling by hand, each receive either awaited to the end or abandoned after its
// first pending poll (cancellation racing with hand-offs): every value is received once.
void exactly_once_by_hand(std::size_t capacity) {
  constexpr int kProducers = 3, kConsumers = 3, kPerProducer = 3000;
  auto [tx, rx] = karx::channel<int>(capacity);
  std::vector<std::atomic<int>> seen(kProducers * kPerProducer);
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([p, tx = tx]() mutable {
      // Shared with the waker: a late wake from a wait abandoned here may outlive this thread.
      auto woken_flag = std::make_shared<std::atomic<bool>>(false);
      std::atomic<bool>& woken = *woken_flag;
      karx::Waker w = karx::waker_fn([woken_flag] { woken_flag->store(true); });
      for (int i = 0; i < kPerProducer; ++i) {
        auto send = tx.send(p * kPerProducer + i);
        karx::Context cx(w);
        for (;;) {
          woken.store(false);
          auto r = send.poll(cx);
          if (r.is_ready()) {
            ASSERT_TRUE(r.value());
            break;
          }
          while (!woken.load()) std::this_thread::yield();
        }
      }
    });
  }
  probes::drop_now(tx);  // the producers' copies close the channel when they finish
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([c, rx = rx, &seen]() mutable {
      std::mt19937 rng(c);
      // Shared with the waker: a late wake from a wait abandoned here may outlive this thread.
      auto woken_flag = std::make_shared<std::atomic<bool>>(false);
      std::atomic<bool>& woken = *woken_flag;
      karx::Waker w = karx::waker_fn([woken_flag] { woken_flag->store(true); });
      karx::Context cx(w);
      for (;;) {
        auto recv = rx.recv();
        woken.store(false);
        auto r = recv.poll(cx);
        if (r.is_pending()) {
          if (rng() % 3 == 0) continue;  // abandon it: a value handed to it must be passed on
          // A stale wake, meant for a wait this thread abandoned, may come first: wait again.
          do {
            while (!woken.load()) std::this_thread::yield();
            woken.store(false);
            r = recv.poll(cx);
          } while (r.is_pending());
        }
        std::optional<int> v = std::move(r).value();
        if (!v) return;
        seen[*v].fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "value " << i;
}

TEST(ChannelStress, EveryValueIsReceivedOnceWhileReceiversAbandonWaitsRendezvous) { exactly_once_by_hand(0); }
TEST(ChannelStress, EveryValueIsReceivedOnceWhileReceiversAbandonWaitsCapacity1) { exactly_once_by_hand(1); }
TEST(ChannelStress, EveryValueIsReceivedOnceWhileReceiversAbandonWaitsCapacity16) { exactly_once_by_hand(16); }

karx::Async<> produce(karx::Sender<int> tx, int from, int count) {
  for (int i = 0; i < count; ++i) EXPECT_TRUE(co_await tx.send(from + i));
}
karx::Async<long> consume(karx::Receiver<int> rx, std::vector<std::atomic<int>>* seen) {
  long n = 0;
  while (std::optional<int> v = co_await rx.recv()) {
    (*seen)[*v].fetch_add(1);
    ++n;
  }
  co_return n;
}

void exactly_once_on_the_runtime(std::size_t capacity, bool unbounded) {
  constexpr int kProducers = 4, kConsumers = 4, kPerProducer = 5000;
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  auto [tx, rx] = unbounded ? karx::unbounded_channel<int>() : karx::channel<int>(capacity);
  std::vector<std::atomic<int>> seen(kProducers * kPerProducer);
  std::vector<karx::JoinHandle<void>> producers;
  std::vector<karx::JoinHandle<long>> consumers;
  for (int c = 0; c < kConsumers; ++c) consumers.push_back(rt.spawn(consume(rx, &seen)));
  for (int p = 0; p < kProducers; ++p) producers.push_back(rt.spawn(produce(tx, p * kPerProducer, kPerProducer)));
  probes::drop_now(tx);
  probes::drop_now(rx);
  long total = 0;
  rt.block_on([&]() -> karx::Async<> {
    for (auto& h : producers) EXPECT_TRUE(co_await h);
    for (auto& h : consumers) total += *co_await h;
  }());
  EXPECT_EQ(total, kProducers * kPerProducer);
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "value " << i;
}

TEST(ChannelStress, FourToFourOnTheRuntimeRendezvous) { exactly_once_on_the_runtime(0, false); }
TEST(ChannelStress, FourToFourOnTheRuntimeCapacity1) { exactly_once_on_the_runtime(1, false); }
TEST(ChannelStress, FourToFourOnTheRuntimeCapacity64) { exactly_once_on_the_runtime(64, false); }
TEST(ChannelStress, FourToFourOnTheRuntimeUnbounded) { exactly_once_on_the_runtime(0, true); }

}  // namespace
