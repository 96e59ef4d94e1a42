// Listing (impl/task/listing.cppm): both halves of the protocol between unlisting a block and
// visiting the listed ones.
//
// A visit uses a listed task (reads it, takes a reference) while its holder may be unlisting
// it on another thread and will free it soon after; the visit must be done with the block
// before that unlist returns.
//
//  - Blocks outside the slab are on one list under one lock. A walk holds the lock for the
//    whole list, and an unlist takes it: so an unlist returns before or after a walk, never
//    during.
//  - Slab blocks have no lock. Walks of the listing maps take turns (walk_lock) and are
//    numbered: `started` counts the walks begun, `finished` is the number of the last one
//    done. An unlist clears the block's bit, then reads `started`; a walk increments
//    `started`, then reads the bits. All four are seq_cst, so they fall in one total order,
//    and in it either the clear comes before the walk's increment (then the walk's later
//    load of the word sees the bit clear and never visits the block) or the increment comes
//    first (then the unlist reads that walk's number, or a later one, and waits until
//    `finished` reaches it). This is Dekker's mutual exclusion; a lock per page would cost
//    the same RMW and add a second cache line. An unlist waits only for the walk under way
//    when it cleared its bit, never for walks begun after, so back-to-back walks cannot
//    starve it. The unlister's acquire load of `finished` pairs with the walk's release
//    store: everything the walk did to the block happens before the unlister frees it.
//
// Listing is an RMW (the word's other bits are other tasks', set and cleared concurrently),
// release so that a walk's acquire load of the word sees the task as it was built.
module;
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
module karx.task;

namespace karx::detail {

namespace {

struct Walks {
  std::mutex lock;  // one walk of the maps at a time
  // Written by walks only, read by every unlist of a slab block: one line, shared by readers.
  alignas(64) std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> finished{0};
};
constinit Walks walks{};
static_assert(std::is_trivially_destructible_v<Walks>);

// Listed blocks outside the slab: a circular list through their SystemBlockNodes. Trivially
// destructible, so that tasks dropped during static destruction can still unlist.
struct SystemListing {
  std::mutex lock;
  SystemBlockNode head{&head, &head};
};
constinit SystemListing system_listing{};
static_assert(std::is_trivially_destructible_v<SystemListing>);

struct BitOf {
  std::atomic_ref<std::uint64_t> word;
  std::uint64_t mask;
};

BitOf bit_of(void* block) noexcept {
  SlabPage* page = slab_page_of(block);
  const std::size_t step =
      static_cast<std::size_t>(static_cast<char*>(block) - reinterpret_cast<char*>(page)) / kSlabStep;
  return {std::atomic_ref<std::uint64_t>(slab_listing_map(page)[step / 64]), std::uint64_t{1} << (step % 64)};
}

struct Walk {
  ListedBlockVisitor visit;
  void* context;
  bool stopped = false;
};

bool walk_page(SlabPage* page, void* context) noexcept {
  Walk& walk = *static_cast<Walk*>(context);
  std::uint64_t* map = slab_listing_map(page);
  for (std::size_t w = 0; w < kSlabListingWords; ++w) {
    std::uint64_t bits = std::atomic_ref<std::uint64_t>(map[w]).load(std::memory_order_seq_cst);
    while (bits != 0) {
      const std::size_t step = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      bits &= bits - 1;
      if (!walk.visit(reinterpret_cast<char*>(page) + step * kSlabStep, walk.context)) {
        walk.stopped = true;
        return false;
      }
    }
  }
  return true;
}

}  // namespace

void list_task_block(TaskBlock block) noexcept {
  if (block.in_slab) {
    BitOf bit = bit_of(block.address);
    bit.word.fetch_or(bit.mask, std::memory_order_release);
    return;
  }
  SystemBlockNode* node = system_block_node(block.address);
  std::lock_guard guard(system_listing.lock);
  node->prev = &system_listing.head;
  node->next = system_listing.head.next;
  node->next->prev = node;
  system_listing.head.next = node;
}

void unlist_task_block(TaskBlock block) noexcept {
  if (block.in_slab) {
    BitOf bit = bit_of(block.address);
    bit.word.fetch_and(~bit.mask, std::memory_order_seq_cst);
    const std::uint64_t under_way = walks.started.load(std::memory_order_seq_cst);
    while (walks.finished.load(std::memory_order_acquire) < under_way) [[unlikely]] std::this_thread::yield();
    return;
  }
  SystemBlockNode* node = system_block_node(block.address);
  std::lock_guard guard(system_listing.lock);
  node->prev->next = node->next;
  node->next->prev = node->prev;
}

void visit_listed_task_blocks(ListedBlockVisitor visit, void* context) noexcept {
  Walk walk{visit, context};
  {
    std::lock_guard turn(walks.lock);
    const std::uint64_t number = walks.started.fetch_add(1, std::memory_order_seq_cst) + 1;
    slab_visit_pages(&walk_page, &walk);
    walks.finished.store(number, std::memory_order_release);
  }
  if (walk.stopped) return;
  std::lock_guard guard(system_listing.lock);
  for (SystemBlockNode* node = system_listing.head.next; node != &system_listing.head; node = node->next)
    if (!visit(reinterpret_cast<char*>(node) + sizeof(SystemBlockNode), context)) return;
}

}  // namespace karx::detail
