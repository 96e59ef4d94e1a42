// A slab allocator for task blocks and coroutine frames, mimalloc-style: blocks freed on
// another thread than their allocator's go back to the allocating thread, in batches.
//
// The per-thread block cache it replaced (`cached`) kept a freed block on the freeing thread,
// so a thread that only spawns while workers free never got blocks back and called malloc
// forever; and each block carried glibc's 8-byte header and 16-byte rounding. Here:
//
//  - A page is 64 KiB, aligned to 64 KiB, and holds blocks of one size class (16-byte steps up
//    to kSlabMaxBlock) after a header and the page's listing map (listing.cppm): a block finds
//    its page by masking its address, so blocks have no header of their own.
//  - Each thread has a heap that owns pages. The owner allocates from and frees to a page's
//    `local` list with plain accesses; another thread frees onto the page's `remote` stack with
//    a CAS, and the owner takes the whole stack with one exchange when `local` runs dry.
//  - A thread that exits gives back its pages with no live block and abandons the others: it
//    marks their `remote` word kSlabAbandoned, after which frees into the page take a lock
//    instead of pushing. A thread that needs a page of that class adopts one with free
//    blocks; the first free into an abandoned page by a live thread reclaims it; and a free by
//    an exiting thread frees under the lock, and gives the page back if it was the last block.
//    So an abandoned page lives only as long as one of its blocks does.
//
// Why a page is never released under a concurrent free: a page's `used` counts its blocks
// from the moment they are handed out until they are back on `local`, so a block being freed
// remotely, or waiting on `remote`, keeps `used` above zero. A page is released (or reused for
// another class) only when `used` is zero, by its owner or, while abandoned, under the lock
// with the mark set; then no thread holds one of its blocks, so none can be freeing into it.
// A remote freer's last access to the page is the CAS that publishes its block (or the lock
// it holds while freeing into an abandoned page); the mark makes a CAS fail rather than push
// onto a page nobody will collect.
//
// The fast paths (pop or push `local`) are inline here; impl/task/slab.cpp has the rest.
module;
#include <atomic>
#include <cstddef>
#include <cstdint>
export module karx.task:slab;

namespace karx::detail {

inline constexpr std::size_t kSlabMaxBlock = 1024;
inline constexpr std::size_t kSlabPageSize = std::size_t{64} << 10;
inline constexpr std::size_t kSlabStep = 16;
// Class c holds blocks of 16c bytes, and class 0 those of 16 (for size 0): a size's class is
// one add and one shift, with no branch.
inline constexpr std::size_t kSlabClasses = kSlabMaxBlock / kSlabStep + 1;

inline constexpr std::size_t slab_class_of(std::size_t size) noexcept { return (size + kSlabStep - 1) / kSlabStep; }
inline constexpr std::size_t slab_block_size(std::size_t c) noexcept { return c == 0 ? kSlabStep : c * kSlabStep; }

struct SlabBlock {
  SlabBlock* next;
};

struct SlabHeap;

// At the start of every page. The first line is the owner's (read by every freeing thread for
// `owner`); `remote`, which other threads CAS, has a line of its own so that remote frees do
// not take the owner's line away on every push.
struct SlabPage {
  // The owning thread's heap, or null while the page is abandoned (then the page is on the
  // abandoned list, and its owner-only fields are guarded by that list's lock).
  std::atomic<SlabHeap*> owner{nullptr};
  // Owner only:
  SlabBlock* local = nullptr;  // free blocks
  std::uint32_t used = 0;      // handed out and not back on `local` (so including `remote`)
  std::uint32_t cls = 0;
  char* carve = nullptr;     // the first block never handed out: pages are carved as they fill
  char* end = nullptr;       // past the last whole block
  SlabPage* next = nullptr;  // the heap's ring of the class's pages, or a list of spare or abandoned pages
  SlabPage* prev = nullptr;
  // The address of the first block of a stack freed by other threads and not yet collected
  // (0 if none), or kSlabAbandoned while the page is abandoned (its free blocks are then all
  // on `local`).
  alignas(64) std::atomic<std::uintptr_t> remote{0};
};
inline constexpr std::uintptr_t kSlabAbandoned = 1;  // blocks are 16-byte aligned: never a block

// After the SlabPage, the page's listing map: a bit per 16-byte step of the page, set while
// the block that starts there is a listed task (impl/task/listing.cpp owns the bits and says
// why). A bit per step, not per block, so that a bit names its block's address without the
// page's class. Only ever accessed atomically (std::atomic_ref), and never written by the
// slab: a fresh segment's memory is zero, and a page is released or reformatted only with no
// block out, so with every bit clear. It sits in the page's first OS page, which a released
// page keeps (release_page), so reading it never faults memory back in.
inline constexpr std::size_t kSlabListingOffset = (sizeof(SlabPage) + 63) / 64 * 64;
inline constexpr std::size_t kSlabListingWords = kSlabPageSize / kSlabStep / 64;
// Blocks start after the header and the listing map, and stay 16-byte aligned.
inline constexpr std::size_t kSlabHeaderSize = kSlabListingOffset + kSlabListingWords * sizeof(std::uint64_t);
static_assert(kSlabHeaderSize % kSlabStep == 0 && kSlabHeaderSize + kSlabMaxBlock <= kSlabPageSize);
static_assert(kSlabHeaderSize <= 4096, "the listing map must stay in the page's first OS page");

inline std::uint64_t* slab_listing_map(SlabPage* page) noexcept {
  return reinterpret_cast<std::uint64_t*>(reinterpret_cast<char*>(page) + kSlabListingOffset);
}

// Stands for "no page" in a heap's `current`: its `local` is always null, so the allocation
// fast path needs no null check of the page; the slow path recognizes it by address.
extern constinit SlabPage slab_no_page;

struct SlabHeap {
  // The page each class allocates from: one of a ring of the class's pages (moved round when
  // it runs dry), or slab_no_page.
  SlabPage* current[kSlabClasses];
  SlabPage* spare = nullptr;  // empty pages kept for any class, up to kSlabSpares
  std::uint32_t spares = 0;
  // 0: no page yet; 1: the thread's exit will abandon the heap; 2: abandoned (the thread is
  // exiting: its allocations come from abandoned pages, and it reclaims nothing).
  std::uint8_t state = 0;

  constexpr SlabHeap() noexcept {
    for (SlabPage*& page : current) page = &slab_no_page;
  }
};
// constinit and trivially destructible: an access is one thread-pointer-relative address, with
// no initialization guard. impl/task/slab.cpp defines it and abandons it at thread exit.
extern thread_local constinit SlabHeap slab_heap;

inline SlabPage* slab_page_of(void* block) noexcept {
  return reinterpret_cast<SlabPage*>(reinterpret_cast<std::uintptr_t>(block) & ~(kSlabPageSize - 1));
}

// The slow paths (impl/task/slab.cpp).
void* slab_allocate_slow(std::size_t c);
void slab_free_remote(SlabPage* page, SlabBlock* block) noexcept;
void slab_retire(SlabPage* page) noexcept;

// `size` <= kSlabMaxBlock; the block is 16-byte aligned. Throws std::bad_alloc.
inline void* slab_allocate(std::size_t size) {
  const std::size_t c = slab_class_of(size);
  SlabPage* page = slab_heap.current[c];
  if (SlabBlock* block = page->local) [[likely]] {
    page->local = block->next;
    ++page->used;
    return block;
  }
  return slab_allocate_slow(c);
}

// `size` as passed to slab_allocate (the page knows its class: kept for symmetry, and for a
// caller that may route by size).
inline void slab_free(void* block, std::size_t size) noexcept {
  (void)size;
  SlabPage* page = slab_page_of(block);
  auto* free = static_cast<SlabBlock*>(block);
  SlabHeap& heap = slab_heap;
  // Relaxed: only this thread stores its own heap into `owner` (when it takes a page: new,
  // spare, adopted or reclaimed), and an exiting thread nulls `owner` in each page it keeps
  // owning (abandons) before its heap's storage can go to another thread; so reading this heap
  // means this thread owns the page, in program order. Any other value (another heap, a stale
  // one, null) sends the block to the remote path, which is right for all of them.
  if (page->owner.load(std::memory_order_relaxed) == &heap) [[likely]] {
    free->next = page->local;
    page->local = free;
    // The page a class allocates from stays, empty or not; another empty page goes.
    if (--page->used == 0 && page != heap.current[page->cls]) [[unlikely]]
      slab_retire(page);
    return;
  }
  slab_free_remote(page, free);
}

// Calls visit(page, context) for every page ever taken from the system (in use, spare,
// abandoned or released), from any thread, without a lock: the pages of a segment are
// published as they are carved, and segments are never unmapped. Only a page's listing map
// may be read through the pointer: its other fields belong to its owner.
using SlabPageVisitor = bool (*)(SlabPage* page, void* context) noexcept;  // false: stop
void slab_visit_pages(SlabPageVisitor visit, void* context) noexcept;

// This thread's pages: collects their remote frees and gives the empty ones back to the system
// (the spares too). For a thread about to sleep for long, and for tests.
void slab_trim() noexcept;

}  // namespace karx::detail

export namespace karx::detail {
// Per process, for tests (and the runtime's metrics later). Relaxed counters: a snapshot is
// exact only when no thread is allocating pages meanwhile.
struct SlabStats {
  std::size_t pages_allocated;  // taken from the system, ever
  std::size_t pages_released;   // given back to the system, ever
  std::size_t pages_live;       // allocated - released
  std::size_t pages_abandoned;  // on the abandoned list now
  std::size_t pages_adopted;    // taken off the abandoned list, ever (by an allocation or a free)
};
// Thin wrappers for tests (the functions above are not exported).
void* test_slab_allocate(std::size_t size);
void test_slab_free(void* block, std::size_t size) noexcept;
void test_slab_trim() noexcept;
SlabStats test_slab_stats() noexcept;
std::size_t test_slab_page_size() noexcept;
}  // namespace karx::detail

namespace karx::detail {
SlabStats slab_stats() noexcept;
}  // namespace karx::detail
