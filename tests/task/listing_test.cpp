// The listing of task blocks (impl/task/listing.cppm): a visit finds exactly the blocks listed,
// from slab pages and from the system allocator alike; an unlist waits for a visit that may be
// looking at its block; and blocks listed, unlisted, overwritten and freed on several threads
// while a walker visits are never seen after their unlist (TSan checks the orderings, and ASan
// the frees of the system blocks).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <set>
#include <thread>
#include <vector>

import karx;

namespace {

using karx::detail::list_task_block;
using karx::detail::TaskBlock;
using karx::detail::test_allocate_task;
using karx::detail::test_deallocate_task;
using karx::detail::test_slab_serves;
using karx::detail::unlist_task_block;
using karx::detail::visit_listed_task_blocks;

struct Shape {
  std::size_t size;
  std::size_t align;
};

// Blocks of several slab classes, one too large for the slab, and one aligned beyond it.
const Shape kShapes[] = {{48, 16}, {64, 16}, {160, 16}, {1024, 16}, {2048, 16}, {96, 64}};

struct Block {
  void* address;
  Shape shape;
  TaskBlock task() const { return TaskBlock{address, test_slab_serves(shape.size, shape.align)}; }
};

Block allocate(Shape shape) { return Block{test_allocate_task(shape.size, shape.align), shape}; }
void release(const Block& b) { test_deallocate_task(b.address, b.shape.size, b.shape.align); }

std::set<void*> visit_all() {
  std::set<void*> seen;
  visit_listed_task_blocks(
      [](void* block, void* context) noexcept {
        static_cast<std::set<void*>*>(context)->insert(block);
        return true;
      },
      &seen);
  return seen;
}

TEST(Listing, AVisitFindsExactlyTheListedBlocksOfEveryKind) {
  bool slab_kind = false, system_kind = false;
  std::vector<Block> blocks;
  for (int i = 0; i < 600; ++i) blocks.push_back(allocate(kShapes[i % std::size(kShapes)]));
  std::set<void*> listed;
  for (std::size_t i = 0; i < blocks.size(); i += 2) {
    list_task_block(blocks[i].task());
    listed.insert(blocks[i].address);
    (blocks[i].task().in_slab ? slab_kind : system_kind) = true;
  }
  EXPECT_TRUE(system_kind);  // both paths are exercised (the asan preset has no slab)
  EXPECT_EQ(visit_all(), listed);

  for (std::size_t i = 0; i < blocks.size(); i += 4) {
    unlist_task_block(blocks[i].task());
    listed.erase(blocks[i].address);
  }
  EXPECT_EQ(visit_all(), listed);

  for (std::size_t i = 2; i < blocks.size(); i += 4) unlist_task_block(blocks[i].task());
  EXPECT_TRUE(visit_all().empty());
  for (const Block& b : blocks) release(b);
  (void)slab_kind;
}

TEST(Listing, AVisitorThatReturnsFalseEndsTheVisit) {
  std::vector<Block> blocks;
  for (int i = 0; i < 10; ++i) {
    blocks.push_back(allocate(kShapes[i % std::size(kShapes)]));
    list_task_block(blocks.back().task());
  }
  int visits = 0;
  visit_listed_task_blocks([](void*, void* context) noexcept { return ++*static_cast<int*>(context) < 3; }, &visits);
  EXPECT_EQ(visits, 3);
  for (const Block& b : blocks) {
    unlist_task_block(b.task());
    release(b);
  }
}

// A visitor parked on a listed block keeps that block's unlist from returning, whichever
// allocator the block came from.
TEST(Listing, AnUnlistWaitsForAVisitLookingAtItsBlock) {
  for (Shape shape : {Shape{64, 16}, Shape{2048, 16}}) {
    Block block = allocate(shape);
    list_task_block(block.task());
    struct Park {
      void* block;
      std::atomic<bool> inside{false};
      std::atomic<bool> release{false};
    } park{block.address};
    std::thread walker([&park] {
      visit_listed_task_blocks(
          [](void* b, void* context) noexcept {
            auto& p = *static_cast<Park*>(context);
            if (b == p.block) {
              p.inside.store(true);
              while (!p.release.load()) std::this_thread::yield();
            }
            return true;
          },
          &park);
    });
    while (!park.inside.load()) std::this_thread::yield();
    auto unlisted = std::async(std::launch::async, [&block] { unlist_task_block(block.task()); });
    EXPECT_EQ(unlisted.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
        << "unlist returned while a visit was looking at the block (size " << shape.size << ")";
    park.release.store(true);
    walker.join();
    EXPECT_EQ(unlisted.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    release(block);
  }
}

// Owners list a block, unlist it, then overwrite and free it, while a walker visits without a
// pause and reads every block it is given. A visit of a block after its unlist returned would
// read the poison (and race with its write, which TSan reports; ASan reports a read of a
// freed system block).
TEST(Listing, BlocksUnlistedAndFreedWhileAWalkerVisitsAreNeverSeenAfterTheirUnlist) {
  constexpr std::uint64_t kAlive = 0x11571ed'0000'0001ULL, kPoison = 0xdead'dead'dead'deadULL;
  constexpr int kOwners = 3, kRounds = 20000;
  std::atomic<int> owners_done{0};
  struct Tally {
    std::uint64_t visits = 0, poisoned = 0;
  } tally;
  std::thread walker([&] {
    while (owners_done.load() < kOwners)
      visit_listed_task_blocks(
          [](void* b, void* context) noexcept {
            auto& t = *static_cast<Tally*>(context);
            ++t.visits;
            if (*static_cast<std::uint64_t*>(b) != kAlive) ++t.poisoned;
            return true;
          },
          &tally);
  });
  std::vector<std::thread> owners;
  for (int o = 0; o < kOwners; ++o)
    owners.emplace_back([&, o] {
      for (int r = 0; r < kRounds; ++r) {
        Block b = allocate(kShapes[(o + r) % std::size(kShapes)]);
        *static_cast<std::uint64_t*>(b.address) = kAlive;
        list_task_block(b.task());
        if (r % 8 == 0) std::this_thread::yield();  // let the walker find some
        unlist_task_block(b.task());
        *static_cast<std::uint64_t*>(b.address) = kPoison;
        release(b);
      }
      owners_done.fetch_add(1);
    });
  for (auto& t : owners) t.join();
  walker.join();
  EXPECT_EQ(tally.poisoned, 0u);
  EXPECT_GT(tally.visits, 0u) << "the walker never found a listed block: the test proved nothing";
}

}  // namespace
