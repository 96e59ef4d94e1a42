// RunQueue: single-thread semantics, then the owner pushing and popping while thieves steal,
// with every item taken exactly once.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

import karx.machinery;

namespace {

using Queue = karx::detail::RunQueue<int*, 8>;

// Items are pointers into this array, so an item names its index.
struct Items {
  explicit Items(std::size_t n) : values(n), taken(n) {
    for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<int>(i);
  }
  int* at(std::size_t i) { return &values[i]; }
  std::size_t index(int* p) const { return static_cast<std::size_t>(p - values.data()); }
  void take(int* p) { taken[index(p)].fetch_add(1, std::memory_order_relaxed); }
  std::vector<int> values;
  std::vector<std::atomic<int>> taken;
};

TEST(RunQueue, PushPopIsFifoAndBounded) {
  Items items(16);
  Queue q;
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.pop().has_value());
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(q.push(items.at(i)));
  EXPECT_EQ(q.size(), 8u);
  EXPECT_FALSE(q.push(items.at(8))) << "a full queue refuses";
  for (int i = 0; i < 8; ++i) {
    auto got = q.pop();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, items.at(i));
  }
  EXPECT_FALSE(q.pop().has_value());
  // Wrap around the ring many times.
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.push(items.at(i)));
    for (int i = 0; i < 5; ++i) ASSERT_EQ(*q.pop(), items.at(i));
  }
  EXPECT_TRUE(q.empty());
}

TEST(RunQueue, StealTakesTheOlderHalfRoundedUp) {
  Items items(16);
  Queue victim, thief;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(victim.push(items.at(i)));
  EXPECT_EQ(victim.steal_into(thief), 3u);
  EXPECT_EQ(victim.size(), 2u);
  EXPECT_EQ(thief.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*thief.pop(), items.at(i));
  for (int i = 3; i < 5; ++i) EXPECT_EQ(*victim.pop(), items.at(i));
  EXPECT_EQ(victim.steal_into(thief), 0u) << "nothing to steal from an empty queue";
  ASSERT_TRUE(victim.push(items.at(9)));
  EXPECT_EQ(victim.steal_into(thief), 1u) << "one item is stolen whole";
  EXPECT_EQ(*thief.pop(), items.at(9));
}

TEST(RunQueue, TakeHalfForSpillEmptiesTheOlderHalfOfAFullQueue) {
  Items items(16);
  Queue q;
  std::array<int*, 4> out{};
  ASSERT_TRUE(q.push(items.at(0)));
  EXPECT_EQ(q.take_half_for_spill(out.data()), 0u) << "not full: nothing to spill";
  for (int i = 1; i < 8; ++i) ASSERT_TRUE(q.push(items.at(i)));
  ASSERT_EQ(q.take_half_for_spill(out.data()), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], items.at(i));
  EXPECT_EQ(q.size(), 4u);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(*q.pop(), items.at(i));
}

// The owner pushes (spilling half to a shared overflow list when full) and pops; thieves
// steal into their own queues and drain them. Every item is taken exactly once.
TEST(RunQueue, OwnerAndThievesTakeEveryItemExactlyOnce) {
  using Big = karx::detail::RunQueue<int*, 256>;
  constexpr std::size_t kItems = 200000;
  constexpr int kThieves = 3;
  Items items(kItems);
  Big owner_queue;
  std::atomic<bool> done_pushing{false};
  std::atomic<std::size_t> spilled{0};
  std::vector<int*> overflow;  // touched by the owner only, drained by it at the end

  std::vector<std::thread> thieves;
  for (int t = 0; t < kThieves; ++t)
    thieves.emplace_back([&] {
      auto mine = std::make_unique<Big>();
      for (;;) {
        const bool finished = done_pushing.load(std::memory_order_acquire);
        if (owner_queue.steal_into(*mine) == 0 && finished && owner_queue.empty()) break;
        while (auto item = mine->pop()) items.take(*item);
      }
    });

  std::array<int*, 128> batch{};
  for (std::size_t i = 0; i < kItems; ++i) {
    while (!owner_queue.push(items.at(i))) {
      std::uint32_t n = owner_queue.take_half_for_spill(batch.data());
      overflow.insert(overflow.end(), batch.begin(), batch.begin() + n);
      spilled.fetch_add(n, std::memory_order_relaxed);
    }
    if (i % 3 == 0)
      if (auto item = owner_queue.pop()) items.take(*item);
  }
  done_pushing.store(true, std::memory_order_release);
  while (auto item = owner_queue.pop()) items.take(*item);
  for (auto& t : thieves) t.join();
  for (int* p : overflow) items.take(p);

  std::size_t missing = 0, duplicated = 0;
  for (std::size_t i = 0; i < kItems; ++i) {
    const int n = items.taken[i].load();
    missing += n == 0;
    duplicated += n > 1;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(duplicated, 0u);
}

}  // namespace
