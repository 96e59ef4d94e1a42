// Injector: FIFO semantics across the ring and its overflow, many producers and consumers taking
// every item exactly once, and a close racing with both accounting for every item.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

import karx.machinery;

namespace {

TEST(Injector, FifoWithSizeAndBatches) {
  std::array<int, 6> v{};
  karx::detail::Injector<int*> inj;
  EXPECT_TRUE(inj.empty());
  EXPECT_FALSE(inj.pop().has_value());
  inj.push(&v[0]);
  std::array<int*, 3> batch{&v[1], &v[2], &v[3]};
  inj.push_batch(batch.begin(), batch.end());
  inj.push(&v[4]);
  EXPECT_EQ(inj.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(*inj.pop(), &v[i]);
  EXPECT_TRUE(inj.empty());
  EXPECT_FALSE(inj.pop().has_value());
}

// The lock-free ring wraps and then fills, and the overflow behind it doubles: FIFO order must
// survive all three, for single items and batches, and the overflow must empty before the
// ring takes pushes again.
TEST(Injector, StaysFifoAcrossWrapAroundOverflowAndGrowth) {
  using Inj = karx::detail::Injector<int*>;
  constexpr int kRing = static_cast<int>(Inj::ring_capacity);
  std::vector<int> v(3 * kRing + 1000);
  Inj inj;
  int next_in = 0, next_out = 0;
  auto push_n = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(inj.push(&v[next_in++]));
  };
  auto pop_n = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(*inj.pop(), &v[next_out++]);
  };
  auto push_batch_n = [&](int n) {
    std::vector<int*> batch;
    for (int i = 0; i < n; ++i) batch.push_back(&v[next_in++]);
    ASSERT_TRUE(inj.push_batch(batch.begin(), batch.end()));
  };
  auto pop_batch_n = [&](std::size_t n) {
    std::vector<int*> out(n);
    ASSERT_EQ(inj.pop_batch(out.data(), out.size()), out.size());
    for (int* p : out) ASSERT_EQ(p, &v[next_out++]);
  };
  push_n(kRing - 10);
  pop_n(kRing - 50);  // the head moves on: the next pushes wrap around the ring
  push_batch_n(30);   // straddles the ring's end
  push_n(kRing);      // fills the ring; the rest goes to the overflow, which grows
  EXPECT_EQ(inj.size(), static_cast<std::size_t>(next_in - next_out));
  push_batch_n(100);  // behind the overflow, although the ring had room for none anyway
  pop_batch_n(30);    // the ring's items come first...
  push_n(5);          // ...and while the overflow holds items, pushes queue behind it
  pop_n(next_in - next_out - 40);
  pop_batch_n(35);  // ...the overflow's last items
  pop_n(5);
  EXPECT_TRUE(inj.empty());
  push_batch_n(kRing + 1);  // larger than the ring: to the overflow as a whole
  push_n(3);
  auto rest = inj.close();
  ASSERT_EQ(rest.size(), static_cast<std::size_t>(next_in - next_out));
  for (int* p : rest) EXPECT_EQ(p, &v[next_out++]);
  EXPECT_EQ(next_out, next_in);
}

TEST(Injector, CloseHandsBackTheQueueAndRefusesLaterPushes) {
  std::array<int, 3> v{};
  karx::detail::Injector<int*> inj;
  EXPECT_TRUE(inj.push(&v[0]));
  EXPECT_TRUE(inj.push(&v[1]));
  auto rest = inj.close();
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0], &v[0]);
  EXPECT_EQ(rest[1], &v[1]);
  EXPECT_TRUE(inj.empty());
  EXPECT_FALSE(inj.push(&v[2]));
  std::array<int*, 1> batch{&v[2]};
  EXPECT_FALSE(inj.push_batch(batch.begin(), batch.end()));
  EXPECT_FALSE(inj.pop().has_value());
}

TEST(Injector, ProducersAndConsumersTakeEveryItemExactlyOnce) {
  constexpr int kProducers = 2, kConsumers = 2, kPerProducer = 50000;
  std::vector<int> values(kProducers * kPerProducer);
  std::vector<std::atomic<int>> taken(values.size());
  karx::detail::Injector<int*> inj;
  std::atomic<int> producers_left{kProducers};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) inj.push(&values[p * kPerProducer + i]);
      producers_left.fetch_sub(1, std::memory_order_release);
    });
  for (int c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      for (;;) {
        const bool last_round = producers_left.load(std::memory_order_acquire) == 0;
        bool got = false;
        while (auto item = inj.pop()) {
          taken[*item - values.data()].fetch_add(1, std::memory_order_relaxed);
          got = true;
        }
        if (last_round && !got) break;
      }
    });
  for (auto& t : threads) t.join();
  int missing = 0, duplicated = 0;
  for (auto& n : taken) {
    missing += n.load() == 0;
    duplicated += n.load() > 1;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(duplicated, 0);
  EXPECT_TRUE(inj.empty());
}

// Producers push single items and batches (a small ring would overflow; this one does under
// bursts) while consumers pop single items and batches, and the injector is closed midway.
// Every item is accounted for exactly once: refused to its producer, popped by a consumer, or
// handed back by close().
TEST(Injector, CloseRacingWithProducersAndConsumersAccountsForEveryItem) {
  using Inj = karx::detail::Injector<int*>;
  constexpr int kProducers = 2, kConsumers = 2, kPerProducer = 3 * static_cast<int>(Inj::ring_capacity);
  std::vector<int> values(kProducers * kPerProducer);
  std::vector<std::atomic<int>> seen(values.size());
  Inj inj;
  std::atomic<int> pushed{0};
  std::atomic<bool> closed{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      int i = 0;
      while (i < kPerProducer) {
        if (i % 3 == 0 && i + 8 <= kPerProducer) {
          std::vector<int*> batch;
          for (int k = 0; k < 8; ++k) batch.push_back(&values[p * kPerProducer + i + k]);
          if (!inj.push_batch(batch.begin(), batch.end()))
            for (int* b : batch) seen[b - values.data()].fetch_add(1, std::memory_order_relaxed);  // refused
          i += 8;
        } else {
          int* item = &values[p * kPerProducer + i];
          if (!inj.push(item)) seen[item - values.data()].fetch_add(1, std::memory_order_relaxed);  // refused
          ++i;
        }
        pushed.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (int c = 0; c < kConsumers; ++c)
    threads.emplace_back([&, c] {
      int* out[16];
      while (!closed.load(std::memory_order_acquire)) {
        const std::size_t n = c == 0 ? inj.pop_batch(out, 16) : inj.pop_batch(out, 1);
        for (std::size_t k = 0; k < n; ++k) seen[out[k] - values.data()].fetch_add(1, std::memory_order_relaxed);
      }
    });
  while (pushed.load(std::memory_order_relaxed) < kPerProducer / 4) std::this_thread::yield();
  for (int* item : inj.close()) seen[item - values.data()].fetch_add(1, std::memory_order_relaxed);
  closed.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  // Nothing is taken after the close: the consumers' last pops found nothing.
  EXPECT_FALSE(inj.pop().has_value());
  int missing = 0, duplicated = 0;
  for (auto& n : seen) {
    missing += n.load() == 0;
    duplicated += n.load() > 1;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(duplicated, 0);
}

}  // namespace
