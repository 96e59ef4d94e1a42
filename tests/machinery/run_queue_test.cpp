// RunQueue: single-thread semantics, then the owner pushing and popping while thieves steal,
// with every item taken exactly once.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
  std::size_t missing() const {
    return count_taken_if([](int n) { return n == 0; });
  }
  std::size_t duplicated() const {
    return count_taken_if([](int n) { return n > 1; });
  }
  template <class Pred>
  std::size_t count_taken_if(Pred pred) const {
    std::size_t count = 0;
    for (const auto& t : taken) count += pred(t.load()) ? 1 : 0;
    return count;
  }
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

TEST(RunQueue, StealTakesTheOlderHalfRoundedUpAndReturnsTheNewestOfIt) {
  Items items(16);
  Queue victim, thief;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(victim.push(items.at(i)));
  EXPECT_EQ(victim.steal_into(thief), items.at(2)) << "items 0, 1 and 2 are taken; 2 is for the thief to run";
  EXPECT_EQ(victim.size(), 2u);
  EXPECT_EQ(thief.size(), 2u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(*thief.pop(), items.at(i));
  for (int i = 3; i < 5; ++i) EXPECT_EQ(*victim.pop(), items.at(i));
  EXPECT_EQ(victim.steal_into(thief), nullptr) << "nothing to steal from an empty queue";
  ASSERT_TRUE(victim.push(items.at(9)));
  EXPECT_EQ(victim.steal_into(thief), items.at(9)) << "one item is stolen whole, straight to the thief";
  EXPECT_TRUE(thief.empty()) << "nothing published for a single item";
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

TEST(RunQueue, PopNewestIsLifoAndMixesWithTheOldestEnd) {
  Items items(16);
  Queue q;
  EXPECT_FALSE(q.pop_newest().has_value());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(q.push(items.at(i)));
  EXPECT_EQ(*q.pop_newest(), items.at(4));
  EXPECT_EQ(*q.pop(), items.at(0)) << "the other end is still the oldest";
  EXPECT_EQ(*q.pop_newest(), items.at(3));
  ASSERT_TRUE(q.push(items.at(5)));
  EXPECT_EQ(*q.pop_newest(), items.at(5));
  EXPECT_EQ(*q.pop_newest(), items.at(2));
  EXPECT_EQ(*q.pop_newest(), items.at(1)) << "the last item, taken with a CAS";
  EXPECT_FALSE(q.pop_newest().has_value());
  EXPECT_TRUE(q.empty());
  // Wrap around the ring many times, at both ends.
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(q.push(items.at(i)));
    for (int i = 6; i >= 0; --i) ASSERT_EQ(*q.pop_newest(), items.at(i));
  }
  EXPECT_TRUE(q.empty());
}

using Big = karx::detail::RunQueue<int*, 256>;

// Which end a queue's owner takes from: the oldest item (pop) or the newest (pop_newest).
enum class End { oldest, newest };

std::optional<int*> take(Big& q, End end) { return end == End::oldest ? q.pop() : q.pop_newest(); }

// The owner pushes `count` items (spilling half to an overflow list of its own when full) and
// after each push calls owner_turn(queue, i), which takes some back; `thieves` threads steal
// into queues of their own and drain them from `end`, as the owner drains its queue at the
// end. Every item must be taken exactly once.
template <class OwnerTurn>
void owner_against_thieves(std::size_t count, int thieves, End end, OwnerTurn owner_turn) {
  Items items(count);
  Big owner_queue;
  std::atomic<bool> done_pushing{false};
  std::vector<int*> overflow;  // touched by the owner only, drained by it at the end

  std::vector<std::thread> threads;
  for (int t = 0; t < thieves; ++t)
    threads.emplace_back([&] {
      auto mine = std::make_unique<Big>();
      for (;;) {
        const bool finished = done_pushing.load(std::memory_order_acquire);
        int* stolen = owner_queue.steal_into(*mine);
        if (stolen == nullptr && finished && owner_queue.empty()) break;
        if (stolen != nullptr) items.take(stolen);
        while (auto item = take(*mine, end)) items.take(*item);
      }
    });

  std::array<int*, 128> batch{};
  for (std::size_t i = 0; i < count; ++i) {
    while (!owner_queue.push(items.at(i))) {
      std::uint32_t n = owner_queue.take_half_for_spill(batch.data());
      overflow.insert(overflow.end(), batch.begin(), batch.begin() + n);
    }
    owner_turn(owner_queue, i, items);
  }
  done_pushing.store(true, std::memory_order_release);
  while (auto item = take(owner_queue, end)) items.take(*item);
  for (auto& t : threads) t.join();
  for (int* p : overflow) items.take(p);

  EXPECT_EQ(items.missing(), 0u);
  EXPECT_EQ(items.duplicated(), 0u);
}

// The owner pushes and takes its newest items (the last one often, where it races thieves for
// it) while thieves steal the oldest: every item is taken exactly once.
TEST(RunQueue, OwnerTakingNewestAndThievesTakeEveryItemExactlyOnce) {
  owner_against_thieves(1000000, 2, End::newest, [](Big& q, std::size_t i, Items& items) {
    // Keep the queue short (one to three items), so that thieves and the owner meet at the
    // last items all the time, and pop twice in a row now and then (a thief that read `tail`
    // before two pops must not claim what they took).
    if (i % 4 != 3)
      if (auto item = q.pop_newest()) items.take(*item);
    if (i % 16 == 5)
      if (auto item = q.pop_newest()) items.take(*item);
    if (i % 64 == 0)
      if (auto item = q.pop()) items.take(*item);
  });
}

// The owner pushes (spilling half to an overflow list when full) and pops; thieves steal into
// their own queues and drain them. Every item is taken exactly once.
TEST(RunQueue, OwnerAndThievesTakeEveryItemExactlyOnce) {
  owner_against_thieves(200000, 3, End::oldest, [](Big& q, std::size_t i, Items& items) {
    if (i % 3 == 0)
      if (auto item = q.pop()) items.take(*item);
  });
}

// As the runtime's workers do: every thread owns a queue, pops its own, and steals from any
// other, including from thieves that have just stolen. A thief that published everything it
// stole and popped one back could find its queue emptied by another thief in between (the
// runtime then ran a garbage task pointer): the stolen item it runs comes back from the steal.
TEST(RunQueue, ThievesStealingFromThievesTakeEveryItemExactlyOnce) {
  constexpr std::size_t kItems = 200000;
  constexpr int kThreads = 4;  // thread 0 also produces
  Items items(kItems);
  std::vector<std::unique_ptr<Big>> queues;
  for (int i = 0; i < kThreads; ++i) queues.push_back(std::make_unique<Big>());
  std::atomic<std::size_t> taken{0};
  std::atomic<bool> done_pushing{false};
  std::mutex overflow_mu;
  std::vector<int*> overflow;

  const auto take = [&](int* p) {
    items.take(p);
    taken.fetch_add(1, std::memory_order_relaxed);
  };
  // A lost item would keep everyone looking for it: give up after a generous deadline, and
  // let the counts below say what went missing.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  const auto work = [&](int me) {
    std::uint32_t rng = 0x9e3779b9u * static_cast<std::uint32_t>(me + 1);
    Big& mine = *queues[me];
    for (;;) {
      if (auto item = mine.pop()) {
        take(*item);
        continue;
      }
      rng ^= rng << 13;
      rng ^= rng >> 17;
      rng ^= rng << 5;
      const int victim = static_cast<int>(rng % kThreads);
      if (victim != me)
        if (int* stolen = queues[victim]->steal_into(mine)) take(stolen);
      if (done_pushing.load(std::memory_order_acquire) && taken.load(std::memory_order_relaxed) >= kItems) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      {
        std::lock_guard lock(overflow_mu);
        if (!overflow.empty()) {
          take(overflow.back());
          overflow.pop_back();
        }
      }
    }
  };

  std::vector<std::thread> threads;
  for (int t = 1; t < kThreads; ++t) threads.emplace_back(work, t);
  std::array<int*, 128> batch{};
  for (std::size_t i = 0; i < kItems; ++i) {
    while (!queues[0]->push(items.at(i))) {
      const std::uint32_t n = queues[0]->take_half_for_spill(batch.data());
      std::lock_guard lock(overflow_mu);
      overflow.insert(overflow.end(), batch.begin(), batch.begin() + n);
    }
    if (i % 4 == 0)
      if (auto item = queues[0]->pop()) take(*item);
  }
  done_pushing.store(true, std::memory_order_release);
  work(0);
  for (auto& t : threads) t.join();

  EXPECT_EQ(items.missing(), 0u);
  EXPECT_EQ(items.duplicated(), 0u);
}

}  // namespace
