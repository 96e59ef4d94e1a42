// Injector: FIFO semantics, and many producers and consumers taking every item exactly once.
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

// The ring wraps and doubles: FIFO order must survive both, for single items and batches.
TEST(Injector, StaysFifoAcrossWrapAroundAndGrowth) {
  std::vector<int> v(1000);
  karx::detail::Injector<int*> inj;
  int next_in = 0, next_out = 0;
  auto push_n = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(inj.push(&v[next_in++]));
  };
  auto pop_n = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(*inj.pop(), &v[next_out++]);
  };
  push_n(60);
  pop_n(50);  // the head moves on: the next pushes wrap around the 64-slot ring
  push_n(40);  // wraps, then grows past 64 with the items straddling the end
  std::vector<int*> batch;
  for (int i = 0; i < 100; ++i) batch.push_back(&v[next_in++]);
  ASSERT_TRUE(inj.push_batch(batch.begin(), batch.end()));  // grows again
  EXPECT_EQ(inj.size(), static_cast<std::size_t>(next_in - next_out));
  std::array<int*, 30> out{};
  ASSERT_EQ(inj.pop_batch(out.data(), out.size()), out.size());
  for (int* p : out) EXPECT_EQ(p, &v[next_out++]);
  pop_n(10);
  push_n(5);
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

}  // namespace
