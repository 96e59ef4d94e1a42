// The task slab allocator (impl/task/slab.cppm), through its test hooks: blocks of every
// class, reuse without new pages, remote frees going back to the allocating thread, a thread
// that exits with live blocks, and a stress run across threads (TSan checks the orderings).
//
// The page counters are per process: each test measures differences, and ends with this
// thread's heap trimmed, so that the next one starts from what it finds.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

import karx;

namespace {

using karx::detail::SlabStats;
using karx::detail::test_slab_allocate;
using karx::detail::test_slab_free;
using karx::detail::test_slab_page_size;
using karx::detail::test_slab_stats;
using karx::detail::test_slab_trim;

constexpr std::size_t kMaxBlock = 1024;

std::uintptr_t page_of(const void* block) {
  return reinterpret_cast<std::uintptr_t>(block) & ~(std::uintptr_t{test_slab_page_size()} - 1);
}

// A block and what was written into it: its writer and index in the first 16 bytes, and a byte
// derived from them over the rest.
struct Item {
  void* block;
  std::size_t size;
  std::uint32_t writer;
  std::uint32_t index;
};

unsigned char fill_byte(std::uint32_t writer, std::uint32_t index) {
  return static_cast<unsigned char>(writer * 31 + index * 7 + 1);
}

Item make_item(std::size_t size, std::uint32_t writer, std::uint32_t index) {
  Item item{test_slab_allocate(size), size, writer, index};
  std::memset(item.block, fill_byte(writer, index), size);
  if (size >= 2 * sizeof(std::uint32_t)) {
    std::memcpy(item.block, &writer, sizeof writer);
    std::memcpy(static_cast<char*>(item.block) + sizeof writer, &index, sizeof index);
  }
  return item;
}

// True if the block holds what make_item wrote.
bool intact(const Item& item) {
  std::vector<unsigned char> expected(item.size, fill_byte(item.writer, item.index));
  if (item.size >= 2 * sizeof(std::uint32_t)) {
    std::memcpy(expected.data(), &item.writer, sizeof item.writer);
    std::memcpy(expected.data() + sizeof item.writer, &item.index, sizeof item.index);
  }
  return std::memcmp(item.block, expected.data(), item.size) == 0;
}

// --- One thread -----------------------------------------------------------------------------

TEST(Slab, EverySizeGivesAlignedDistinctBlocksWritableOverTheirSize) {
  test_slab_trim();
  const SlabStats before = test_slab_stats();
  std::vector<Item> items;
  for (std::size_t size = 1; size <= kMaxBlock; ++size)
    for (std::uint32_t k = 0; k < 3; ++k) items.push_back(make_item(size, static_cast<std::uint32_t>(size), k));
  // Every block 16-byte aligned, and no two overlapping (sorted by address, each ends before
  // the next begins).
  std::vector<std::pair<std::uintptr_t, std::size_t>> spans;
  for (const Item& item : items) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(item.block) % 16, 0u) << item.size;
    EXPECT_NE(reinterpret_cast<std::uintptr_t>(item.block), page_of(item.block)) << "a block over the page header";
    spans.emplace_back(reinterpret_cast<std::uintptr_t>(item.block), item.size);
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i)
    ASSERT_LE(spans[i - 1].first + spans[i - 1].second, spans[i].first) << "blocks overlap";
  for (const Item& item : items) EXPECT_TRUE(intact(item)) << item.size;
  for (const Item& item : items) test_slab_free(item.block, item.size);
  test_slab_trim();
  EXPECT_EQ(test_slab_stats().pages_live, before.pages_live) << "pages left after freeing every block";
}

TEST(Slab, FreedBlocksAreReusedLastInFirstOutWithoutNewPages) {
  for (std::size_t size = 16; size <= kMaxBlock; size += 16) {
    void* warm = test_slab_allocate(size);  // the class has a page
    void* a = test_slab_allocate(size);
    void* b = test_slab_allocate(size);
    const std::size_t allocated = test_slab_stats().pages_allocated;
    test_slab_free(a, size);
    test_slab_free(b, size);
    EXPECT_EQ(test_slab_allocate(size), b) << size;
    EXPECT_EQ(test_slab_allocate(size), a) << size;
    for (int i = 0; i < 1000; ++i) {
      void* c = test_slab_allocate(size);
      test_slab_free(c, size);
      ASSERT_EQ(test_slab_allocate(size), c) << size;
      test_slab_free(c, size);
    }
    EXPECT_EQ(test_slab_stats().pages_allocated, allocated) << size;
    test_slab_free(a, size);
    test_slab_free(b, size);
    test_slab_free(warm, size);
  }
  test_slab_trim();
}

// A page whose blocks are all freed goes (as a spare, then to the system), except the one its
// class allocates from: filling several pages and freeing everything leaves nothing behind.
TEST(Slab, EmptiedPagesAreGivenBackToTheSystem) {
  test_slab_trim();
  const std::size_t live = test_slab_stats().pages_live;
  constexpr std::size_t kSize = 512, kBlocks = 2000;  // about 16 pages
  for (int round = 0; round < 5; ++round) {
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < kBlocks; ++i) blocks.push_back(test_slab_allocate(kSize));
    EXPECT_GE(test_slab_stats().pages_live, live + kBlocks * kSize / test_slab_page_size());
    for (void* block : blocks) test_slab_free(block, kSize);
    // The current page and the spares at most.
    EXPECT_LE(test_slab_stats().pages_live, live + 8) << "round " << round;
  }
  test_slab_trim();
  EXPECT_EQ(test_slab_stats().pages_live, live);
}

// --- Remote frees ---------------------------------------------------------------------------

TEST(Slab, BlocksFreedOnAnotherThreadGoBackToTheirAllocator) {
  test_slab_trim();
  const SlabStats before = test_slab_stats();
  std::thread([] {
    constexpr std::size_t kSize = 64, kBlocks = 5000;  // about 5 pages
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < kBlocks; ++i) blocks.push_back(test_slab_allocate(kSize));
    std::set<std::uintptr_t> pages;
    for (void* block : blocks) pages.insert(page_of(block));
    const std::size_t allocated = test_slab_stats().pages_allocated;
    for (int round = 0; round < 10; ++round) {
      std::thread([&] {
        for (void* block : blocks) test_slab_free(block, kSize);
      }).join();
      // Back from the remote lists of this thread's pages: no new page, no block elsewhere.
      for (void*& block : blocks) {
        block = test_slab_allocate(kSize);
        ASSERT_TRUE(pages.count(page_of(block))) << "a block from a page this thread did not have";
      }
      ASSERT_EQ(test_slab_stats().pages_allocated, allocated) << "round " << round;
    }
    for (void* block : blocks) test_slab_free(block, kSize);
  }).join();
  const SlabStats after = test_slab_stats();
  EXPECT_EQ(after.pages_live, before.pages_live);
  EXPECT_EQ(after.pages_abandoned, before.pages_abandoned);
}

// A bounded queue of batches of blocks from one thread to another.
class BatchQueue {
 public:
  void push(std::vector<void*> batch) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return batches_.size() < kMaxBatches; });
    batches_.push_back(std::move(batch));
    not_empty_.notify_one();
  }
  // Empty once the producer has pushed an empty batch.
  std::vector<void*> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !batches_.empty(); });
    std::vector<void*> batch = std::move(batches_.front());
    batches_.pop_front();
    not_full_.notify_one();
    return batch;
  }

 private:
  static constexpr std::size_t kMaxBatches = 8;
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<std::vector<void*>> batches_;
};

// The pattern that made the `cached` allocator call malloc forever: one thread allocates, the
// other frees. The allocator's pages gather the frees and it takes them back.
TEST(Slab, AProducerFreedByAConsumerNeedsNoNewPagesInSteadyState) {
  constexpr std::size_t kBlocks = 1'000'000, kBatch = 256;
  constexpr std::size_t kSizes[] = {48, 192, 320};
  const SlabStats before = test_slab_stats();
  BatchQueue queue;
  std::thread consumer([&] {
    for (;;) {
      std::vector<void*> batch = queue.pop();
      if (batch.empty()) return;
      for (std::size_t i = 0; i < batch.size(); ++i) test_slab_free(batch[i], kSizes[i % 3]);
    }
  });
  std::thread producer([&] {
    for (std::size_t done = 0; done < kBlocks; done += kBatch) {
      std::vector<void*> batch(kBatch);
      for (std::size_t i = 0; i < kBatch; ++i) batch[i] = test_slab_allocate(kSizes[i % 3]);
      queue.push(std::move(batch));
    }
    queue.push({});
  });
  producer.join();
  consumer.join();
  const SlabStats after = test_slab_stats();
  // At most 10 batches (2,560 blocks, about 500 KiB) are out at once: a few pages per class.
  // Without the frees coming back, the producer would take ~3,000 pages.
  EXPECT_LE(after.pages_allocated - before.pages_allocated, 40u);
  EXPECT_EQ(after.pages_live, before.pages_live);
}

// --- Thread exit ----------------------------------------------------------------------------

// A thread exits with live blocks; other threads free them. The pages are abandoned, then
// reclaimed by the freeing threads and given back: nothing grows over rounds.
TEST(Slab, PagesOfAnExitedThreadAreReclaimedByTheThreadsThatFreeTheirBlocks) {
  test_slab_trim();
  const SlabStats before = test_slab_stats();
  for (int round = 0; round < 20; ++round) {
    std::vector<Item> items;
    std::thread([&] {
      for (std::uint32_t i = 0; i < 3000; ++i) items.push_back(make_item(16 + (i * 16) % kMaxBlock, 1, i));
    }).join();
    EXPECT_GT(test_slab_stats().pages_abandoned, before.pages_abandoned) << "round " << round;
    // Two threads free half each, interleaved: both race to reclaim the same pages.
    std::thread freers[2];
    for (int t = 0; t < 2; ++t)
      freers[t] = std::thread([&, t] {
        for (std::size_t i = static_cast<std::size_t>(t); i < items.size(); i += 2) {
          EXPECT_TRUE(intact(items[i]));
          test_slab_free(items[i].block, items[i].size);
        }
      });
    for (std::thread& freer : freers) freer.join();
    const SlabStats after = test_slab_stats();
    EXPECT_EQ(after.pages_abandoned, before.pages_abandoned) << "round " << round;
    EXPECT_EQ(after.pages_live, before.pages_live) << "round " << round;
  }
  EXPECT_GT(test_slab_stats().pages_adopted, before.pages_adopted);
}

// A thread exits with pages that have free blocks besides live ones: a thread that needs a
// page of that class adopts one instead of taking a new page.
TEST(Slab, AThreadNeedingAPageAdoptsAnAbandonedOne) {
  test_slab_trim();
  const SlabStats before = test_slab_stats();
  constexpr std::size_t kSize = 256, kBlocks = 1000;  // about 4 pages
  std::vector<void*> kept;
  std::set<std::uintptr_t> pages;
  std::thread([&] {
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < kBlocks; ++i) blocks.push_back(test_slab_allocate(kSize));
    for (std::size_t i = 0; i < kBlocks; ++i) {
      pages.insert(page_of(blocks[i]));
      if (i % 2 == 0)
        test_slab_free(blocks[i], kSize);  // a free block in every page
      else
        kept.push_back(blocks[i]);
    }
  }).join();
  ASSERT_EQ(test_slab_stats().pages_abandoned - before.pages_abandoned, pages.size());
  std::thread([&] {
    const std::size_t allocated = test_slab_stats().pages_allocated;
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < kBlocks / 2; ++i) {
      blocks.push_back(test_slab_allocate(kSize));
      EXPECT_TRUE(pages.count(page_of(blocks.back()))) << "not a block of an abandoned page";
    }
    EXPECT_EQ(test_slab_stats().pages_allocated, allocated) << "a new page while abandoned ones had room";
    EXPECT_EQ(test_slab_stats().pages_adopted - before.pages_adopted, pages.size());
    EXPECT_EQ(test_slab_stats().pages_abandoned, before.pages_abandoned);
    for (void* block : blocks) test_slab_free(block, kSize);
    for (void* block : kept) test_slab_free(block, kSize);  // local frees now: this thread owns them
  }).join();
  EXPECT_EQ(test_slab_stats().pages_live, before.pages_live);
}

// A thread_local destroyed after the heap was abandoned still allocates and frees (from
// abandoned pages, under the lock); a block it leaves live is freed later by another thread.
struct LateUser {
  std::promise<void*>* leave = nullptr;
  ~LateUser() {
    void* a = test_slab_allocate(100);
    void* b = test_slab_allocate(100);
    std::memset(a, 1, 100);
    std::memset(b, 2, 100);
    test_slab_free(a, 100);
    leave->set_value(b);
  }
};
thread_local LateUser late_user;

TEST(Slab, AnExitingThreadAllocatesAndFreesAfterItsHeapIsGone) {
  test_slab_trim();
  const SlabStats before = test_slab_stats();
  std::promise<void*> left;
  std::thread([&] {
    late_user.leave = &left;                       // constructed first, so destroyed after the heap
    test_slab_free(test_slab_allocate(100), 100);  // the heap registers its exit
  }).join();
  void* block = left.get_future().get();
  EXPECT_EQ(static_cast<unsigned char*>(block)[99], 2);
  std::thread([&] { test_slab_free(block, 100); }).join();
  const SlabStats after = test_slab_stats();
  EXPECT_EQ(after.pages_abandoned, before.pages_abandoned);
  EXPECT_EQ(after.pages_live, before.pages_live);
}

// --- Stress ---------------------------------------------------------------------------------

// The end of a stress test: no block was found corrupt, each was checked exactly once, and the
// pages in use are back to what they were before.
void expect_checked_once_and_pages_back(const std::atomic<bool>& corrupt,
                                        const std::vector<std::atomic<std::uint8_t>>& checked,
                                        const SlabStats& before) {
  EXPECT_FALSE(corrupt.load());
  std::size_t wrong = 0;
  for (const auto& count : checked) wrong += count.load() != 1;
  EXPECT_EQ(wrong, 0u) << "blocks not checked exactly once";
  const SlabStats after = test_slab_stats();
  EXPECT_EQ(after.pages_live, before.pages_live);
  EXPECT_EQ(after.pages_abandoned, before.pages_abandoned);
}

// Threads allocate blocks of random sizes, write a pattern, and pass them to a random other
// thread, which checks and frees them: every block is checked once, and every page comes back.
TEST(Slab, StressBlocksPassedBetweenThreadsAreIntactAndAllComeBack) {
  constexpr std::uint32_t kThreads = 4, kPerThread = 100000;
  const SlabStats before = test_slab_stats();
  struct Inbox {
    std::mutex mutex;
    std::vector<Item> items;
  };
  Inbox inboxes[kThreads];
  std::vector<std::atomic<std::uint8_t>> checked(kThreads * kPerThread);
  std::atomic<std::uint32_t> freed{0};
  std::atomic<bool> corrupt{false};
  auto drain = [&](Inbox& inbox) {
    std::vector<Item> items;
    {
      std::lock_guard lock(inbox.mutex);
      items.swap(inbox.items);
    }
    for (const Item& item : items) {
      if (!intact(item)) corrupt = true;
      checked[item.writer * kPerThread + item.index].fetch_add(1, std::memory_order_relaxed);
      test_slab_free(item.block, item.size);
    }
    freed.fetch_add(static_cast<std::uint32_t>(items.size()));
  };
  std::vector<std::thread> threads;
  for (std::uint32_t id = 0; id < kThreads; ++id)
    threads.emplace_back([&, id] {
      std::mt19937 random(id);
      for (std::uint32_t i = 0; i < kPerThread; ++i) {
        const std::size_t size = std::uniform_int_distribution<std::size_t>(1, kMaxBlock)(random);
        const std::uint32_t to =
            (id + std::uniform_int_distribution<std::uint32_t>(1, kThreads - 1)(random)) % kThreads;
        Item item = make_item(size, id, i);
        {
          std::lock_guard lock(inboxes[to].mutex);
          inboxes[to].items.push_back(item);
        }
        if (i % 64 == 0) drain(inboxes[id]);
      }
      while (freed.load() < kThreads * kPerThread) {
        drain(inboxes[id]);
        std::this_thread::yield();
      }
    });
  for (std::thread& thread : threads) thread.join();
  expect_checked_once_and_pages_back(corrupt, checked, before);
}

// Generations of threads: each checks and frees the blocks of the previous generation while
// allocating its own, frees half of them, passes the rest on and exits. Pages are abandoned
// while the next generation frees into them, reclaims and adopts them.
TEST(Slab, StressGenerationsOfThreadsExitWhileOthersFreeTheirBlocks) {
  constexpr int kGenerations = 16, kLanes = 2;
  constexpr std::uint32_t kPerThread = 10000;
  const SlabStats before = test_slab_stats();
  // inbox[g][l]: what lane l of generation g receives, from each lane of generation g - 1.
  std::vector<std::vector<std::promise<std::vector<Item>>>> inbox(kGenerations + 1);
  for (auto& lanes : inbox) lanes.resize(kLanes * kLanes);
  std::vector<std::atomic<std::uint8_t>> checked(kGenerations * kLanes * kPerThread);
  std::atomic<bool> corrupt{false};
  auto run = [&](int g, int l) {
    const auto writer = static_cast<std::uint32_t>(g * kLanes + l);
    std::mt19937 random(writer);
    std::vector<Item> received;
    if (g > 0)
      for (int from = 0; from < kLanes; ++from) {
        std::vector<Item> part = inbox[g][from * kLanes + l].get_future().get();
        received.insert(received.end(), part.begin(), part.end());
      }
    std::vector<Item> own;
    for (std::uint32_t i = 0; i < kPerThread; ++i) {
      own.push_back(make_item(std::uniform_int_distribution<std::size_t>(1, kMaxBlock)(random), writer, i));
      if (!received.empty()) {
        const Item item = received.back();
        received.pop_back();
        if (!intact(item)) corrupt = true;
        checked[item.writer * kPerThread + item.index].fetch_add(1, std::memory_order_relaxed);
        test_slab_free(item.block, item.size);
      }
    }
    std::vector<Item> out[kLanes];
    for (std::size_t i = 0; i < own.size(); ++i) {
      if (i % 2 == 0 || g == kGenerations - 1) {
        checked[own[i].writer * kPerThread + own[i].index].fetch_add(1, std::memory_order_relaxed);
        test_slab_free(own[i].block, own[i].size);
      } else {
        out[i / 2 % kLanes].push_back(own[i]);
      }
    }
    for (int to = 0; to < kLanes; ++to) inbox[g + 1][l * kLanes + to].set_value(std::move(out[to]));
  };
  std::vector<std::thread> threads;
  for (int g = 0; g < kGenerations; ++g)
    for (int l = 0; l < kLanes; ++l) threads.emplace_back(run, g, l);
  for (std::thread& thread : threads) thread.join();
  expect_checked_once_and_pages_back(corrupt, checked, before);
}

}  // namespace
