// The slab allocator's slow paths (impl/task/slab.cppm): refilling a page, taking a new one
// (adopted, spare or from the system), remote frees, and abandoning a heap at thread exit.
module;
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
module karx.task;

namespace karx::detail {

constinit SlabPage slab_no_page{};
thread_local constinit SlabHeap slab_heap{};

namespace {

constexpr std::uint8_t kHeapFresh = 0, kHeapLive = 1, kHeapExited = 2;
// Empty pages a heap keeps for any class: a live set that goes back and forth across a page
// boundary does not take a page from the system and give it back each time.
constexpr std::uint32_t kSlabSpares = 4;
// A page is carved into its free list about one OS page at a time: a class that serves a few
// blocks touches little of its page.
constexpr std::size_t kCarveBytes = 4096;

// Process-wide counters (SlabStats): relaxed, nothing is ordered by them.
constinit std::atomic<std::size_t> pages_allocated{0};
constinit std::atomic<std::size_t> pages_released{0};
constinit std::atomic<std::size_t> pages_abandoned{0};
constinit std::atomic<std::size_t> pages_adopted{0};

// Pages whose owner exited with blocks of them still live. A mutex: only thread exits,
// adoptions and the first free into each abandoned page take it. Trivially destructible, so
// that its destruction at exit does nothing: threads may still free into abandoned pages while
// statics are being destroyed.
struct AbandonedPages {
  std::mutex lock;
  SlabPage* heads[kSlabClasses]{};  // doubly linked through next and prev; guarded by `lock`
  // How many per class, read without the lock to skip it when there is none.
  std::atomic<std::size_t> counts[kSlabClasses]{};
};
constinit AbandonedPages abandoned{};
static_assert(std::is_trivially_destructible_v<AbandonedPages>);

// --- Where pages come from ---------------------------------------------------------------------
//
// Segments of kSegmentPages pages, mapped at once and aligned to the page size by mapping a
// page more and unmapping the misaligned ends. Not aligned_alloc: glibc aligns a 64 KiB block
// by splitting a larger one and writes chunk headers on both sides, which touched about 8 KiB
// more per page (13% more resident memory with 1,000,000 pending tasks). A released page goes
// on a free list for the next page request. Up to kResidentFreePages of them keep their
// memory, as glibc keeps freed memory below its trim threshold: a workload whose live set
// swings by megabytes every round (10,000 tasks spawned and finished, say) must not fault its
// pages in again each time, which cost spawn_many_inside half its time when every released
// page was given back. Past that, a released page's memory but its first OS page (which holds
// the free list's link) goes back to the system with MADV_DONTNEED. Segments are never
// unmapped: the address space stays reserved for the process's peak, the memory does not.
constexpr std::size_t kSegmentPages = 16;
constexpr std::size_t kOsPage = 4096;
constexpr std::size_t kResidentFreePages = 64;  // 4 MiB

// A segment's record, for slab_visit_pages: on a list that only grows (pushed under
// page_source.lock, read without it), and never freed, as segments are never unmapped.
struct Segment {
  char* base;
  Segment* next;
  // Pages carved so far: stored under page_source.lock, read by visitors. Release/acquire:
  // a visitor that counts a page sees the segment's record complete (its memory is zero
  // from the mapping, which is all a visitor reads of it).
  std::atomic<std::size_t> carved{0};
};
constinit std::atomic<Segment*> segments{nullptr};

struct PageSource {
  std::mutex lock;
  // Released pages, linked through `next`; guarded by `lock`.
  SlabPage* resident = nullptr;  // their memory kept
  std::size_t resident_count = 0;
  SlabPage* advised = nullptr;  // their memory given back (but the header's OS page)
  char* carve = nullptr;        // the rest of the newest segment
  char* end = nullptr;
  Segment* newest = nullptr;
};
constinit PageSource page_source{};
static_assert(std::is_trivially_destructible_v<PageSource>);

// Under page_source.lock: a new segment's pages to carve.
void map_segment() {
  const std::size_t bytes = kSegmentPages * kSlabPageSize;
  auto* record = static_cast<Segment*>(std::malloc(sizeof(Segment)));
  if (record == nullptr) [[unlikely]]
    throw std::bad_alloc();
  void* mapped = ::mmap(nullptr, bytes + kSlabPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) [[unlikely]] {
    std::free(record);
    throw std::bad_alloc();
  }
  char* raw = static_cast<char*>(mapped);
  char* aligned =
      reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(raw) + kSlabPageSize - 1) & ~(kSlabPageSize - 1));
  if (aligned != raw) ::munmap(raw, static_cast<std::size_t>(aligned - raw));
  if (char* tail = aligned + bytes; tail != raw + bytes + kSlabPageSize)
    ::munmap(tail, static_cast<std::size_t>(raw + bytes + kSlabPageSize - tail));
  page_source.carve = aligned;
  page_source.end = aligned + bytes;
  Segment* segment = new (record) Segment{aligned, segments.load(std::memory_order_relaxed)};
  page_source.newest = segment;
  // Release: a visitor that loads the new head (acquire) sees the record initialized.
  segments.store(segment, std::memory_order_release);
}

SlabPage* system_page() {
  char* memory = nullptr;
  {
    std::lock_guard guard(page_source.lock);
    if (SlabPage* page = page_source.resident) {
      page_source.resident = page->next;
      --page_source.resident_count;
      memory = reinterpret_cast<char*>(page);
    } else if (SlabPage* advised = page_source.advised) {
      page_source.advised = advised->next;
      memory = reinterpret_cast<char*>(advised);
    } else {
      if (page_source.carve == page_source.end) map_segment();  // throws with nothing changed
      memory = page_source.carve;
      page_source.carve += kSlabPageSize;
      Segment& segment = *page_source.newest;
      segment.carved.store(segment.carved.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
  }
  pages_allocated.fetch_add(1, std::memory_order_relaxed);
  return new (memory) SlabPage;
}

void release_page(SlabPage* page) noexcept {
  static_assert(std::is_trivially_destructible_v<SlabPage>);
  bool give_back = false;
  {
    std::lock_guard guard(page_source.lock);
    if (page_source.resident_count < kResidentFreePages) {
      page->next = page_source.resident;
      page_source.resident = page;
      ++page_source.resident_count;
    } else {
      give_back = true;
    }
  }
  if (give_back) {
    // Outside the lock (a system call); the page is nobody's until it is on the list.
    ::madvise(reinterpret_cast<char*>(page) + kOsPage, kSlabPageSize - kOsPage, MADV_DONTNEED);
    std::lock_guard guard(page_source.lock);
    page->next = page_source.advised;
    page_source.advised = page;
  }
  pages_released.fetch_add(1, std::memory_order_relaxed);
}

// An empty page (new, or with no block out) as a page of class `c`.
void format(SlabPage* page, std::size_t c, SlabHeap* owner) noexcept {
  // Relaxed: no other thread looks at a page before it has one of its blocks, which comes
  // with the synchronization that handed the block over.
  page->owner.store(owner, std::memory_order_relaxed);
  page->local = nullptr;
  page->used = 0;
  page->cls = static_cast<std::uint32_t>(c);
  page->carve = reinterpret_cast<char*>(page) + kSlabHeaderSize;
  const std::size_t size = slab_block_size(c);
  page->end = page->carve + (kSlabPageSize - kSlabHeaderSize) / size * size;
}

// Moves a list of blocks taken off `remote` to the local list.
void merge(SlabPage* page, SlabBlock* head) noexcept {
  if (head == nullptr) return;
  SlabBlock* tail = head;
  std::uint32_t n = 1;
  for (; tail->next != nullptr; tail = tail->next) ++n;
  tail->next = page->local;
  page->local = head;
  page->used -= n;  // counted as used until now: see "Why a page is never released" (slab.cppm)
}

// Moves the page's remote frees to its local list; by its owner, the page not abandoned.
void collect(SlabPage* page) noexcept {
  if (page->remote.load(std::memory_order_relaxed) == 0) return;  // the usual case, no RMW
  // Acquire: pairs with the freers' release CASes (one release sequence on `remote`), so each
  // block's `next`, and the freer's last writes to the block, come before its reuse here.
  merge(page, reinterpret_cast<SlabBlock*>(page->remote.exchange(0, std::memory_order_acquire)));
}

// Links the next few blocks never handed out into the (empty) local list.
bool carve(SlabPage* page) noexcept {
  if (page->carve == page->end) return false;
  const std::size_t size = slab_block_size(page->cls);
  const auto left = static_cast<std::size_t>(page->end - page->carve) / size;
  const std::size_t n = std::min(left, std::max<std::size_t>(1, kCarveBytes / size));
  char* const first = page->carve;
  for (std::size_t i = 0; i + 1 < n; ++i)
    reinterpret_cast<SlabBlock*>(first + i * size)->next = reinterpret_cast<SlabBlock*>(first + (i + 1) * size);
  reinterpret_cast<SlabBlock*>(first + (n - 1) * size)->next = page->local;
  page->local = reinterpret_cast<SlabBlock*>(first);
  page->carve = first + n * size;
  return true;
}

// Free blocks on the local list, after collecting remote frees or carving if need be.
bool refill(SlabPage* page) noexcept {
  if (page->local != nullptr) return true;
  collect(page);
  return page->local != nullptr || carve(page);
}

void* pop(SlabPage* page) noexcept {
  SlabBlock* block = page->local;
  page->local = block->next;
  ++page->used;
  return block;
}

// --- A heap's ring of pages per class -------------------------------------------------------

// At the ring's tail (just before `current`), or as the only page.
void ring_push_back(SlabHeap& heap, SlabPage* page) noexcept {
  SlabPage*& current = heap.current[page->cls];
  if (current == &slab_no_page) {
    page->next = page->prev = page;
    current = page;
    return;
  }
  page->next = current;
  page->prev = current->prev;
  current->prev->next = page;
  current->prev = page;
}

void ring_remove(SlabHeap& heap, SlabPage* page) noexcept {
  SlabPage*& current = heap.current[page->cls];
  if (page->next == page) {
    current = &slab_no_page;
    return;
  }
  page->prev->next = page->next;
  page->next->prev = page->prev;
  if (current == page) current = page->next;
}

// A page with no block out, off any list: kept as a spare, or back to the system.
void give_back_empty(SlabHeap& heap, SlabPage* page) noexcept {
  if (heap.state == kHeapLive && heap.spares < kSlabSpares) {
    page->next = heap.spare;
    heap.spare = page;
    ++heap.spares;
  } else {
    release_page(page);
  }
}

// --- Abandoned pages ------------------------------------------------------------------------

// All under abandoned.lock, which orders an abandoned page's owner-only fields between its old
// owner, the threads that allocate or free into it meanwhile, and its adopter. So the stores
// of `owner` and `remote` here are relaxed: a freer that reads kSlabAbandoned takes the lock
// before touching the page (slab_free_remote); one that reads 0 pushes, and needs nothing
// from the adopter; and a thread reading `owner` compares it with its own heap, which matches
// only for the adopter itself.

// The page's `remote` is already kSlabAbandoned.
void push_abandoned(SlabPage* page) noexcept {
  page->owner.store(nullptr, std::memory_order_relaxed);
  SlabPage*& head = abandoned.heads[page->cls];
  page->prev = nullptr;
  page->next = head;
  if (head != nullptr) head->prev = page;
  head = page;
  abandoned.counts[page->cls].fetch_add(1, std::memory_order_relaxed);
  pages_abandoned.fetch_add(1, std::memory_order_relaxed);
}

void unlink_abandoned(SlabPage* page) noexcept {
  if (page->prev != nullptr)
    page->prev->next = page->next;
  else
    abandoned.heads[page->cls] = page->next;
  if (page->next != nullptr) page->next->prev = page->prev;
  abandoned.counts[page->cls].fetch_sub(1, std::memory_order_relaxed);
  pages_abandoned.fetch_sub(1, std::memory_order_relaxed);
}

// Off the abandoned list and this heap's: remote frees push again from here on.
void adopt(SlabPage* page, SlabHeap& heap) noexcept {
  unlink_abandoned(page);
  page->remote.store(0, std::memory_order_relaxed);
  page->owner.store(&heap, std::memory_order_relaxed);
  pages_adopted.fetch_add(1, std::memory_order_relaxed);
}

// An abandoned page with its free blocks all on `local`, or room to carve.
bool has_free_block(const SlabPage* page) noexcept { return page->local != nullptr || page->carve != page->end; }

// An abandoned page of class `c` with a free block, now this heap's; null if none.
SlabPage* adopt_page(SlabHeap& heap, std::size_t c) noexcept {
  // A hint: a page abandoned just now is found next time.
  if (abandoned.counts[c].load(std::memory_order_relaxed) == 0) return nullptr;
  std::lock_guard guard(abandoned.lock);
  // Pages with every block out stay: the first free into one reclaims it (free_abandoned).
  for (SlabPage* page = abandoned.heads[c]; page != nullptr; page = page->next)
    if (has_free_block(page)) {
      adopt(page, heap);
      return page;
    }
  return nullptr;
}

// An exiting thread's allocation (from a later thread_local's destructor): it has no heap any
// more, so it takes a block from an abandoned page under the lock, the page staying abandoned.
void* allocate_abandoned(std::size_t c) {
  SlabPage* fresh = nullptr;
  for (;;) {
    {
      std::lock_guard guard(abandoned.lock);
      SlabPage* page = abandoned.heads[c];
      while (page != nullptr && !has_free_block(page)) page = page->next;
      if (page == nullptr && fresh != nullptr) {
        page = std::exchange(fresh, nullptr);
        page->remote.store(kSlabAbandoned, std::memory_order_relaxed);
        push_abandoned(page);
      }
      if (page != nullptr) {
        if (page->local == nullptr) carve(page);
        void* block = pop(page);
        if (fresh != nullptr) release_page(fresh);  // not needed after all
        return block;
      }
    }
    fresh = system_page();  // outside the lock; throws with nothing changed
    format(fresh, c, nullptr);
  }
}

// --- Thread exit ----------------------------------------------------------------------------

// Takes every page off the heap's rings, collects what other threads freed into it, gives
// the empty ones back and hands each page still in use to `keep` (thread exit abandons them,
// a trim puts them back on their ring).
template <class Keep>
void sweep_rings(SlabHeap& heap, Keep keep) noexcept {
  for (SlabPage*& current : heap.current) {
    if (current == &slab_no_page) continue;
    SlabPage* page = current;
    current->prev->next = nullptr;  // the ring as a list
    current = &slab_no_page;
    while (page != nullptr) {
      SlabPage* next = page->next;
      collect(page);
      if (page->used == 0)
        release_page(page);
      else
        keep(page);
      page = next;
    }
  }
}

void release_spares(SlabHeap& heap) noexcept {
  while (SlabPage* page = heap.spare) {
    heap.spare = page->next;
    release_page(page);
  }
  heap.spares = 0;
}

// Releases the heap's empty pages and abandons the others. From here on the thread owns no
// page, so its heap's storage may go to another thread with no page naming it.
void abandon_heap(SlabHeap& heap) noexcept {
  heap.state = kHeapExited;
  SlabPage* orphans = nullptr;
  sweep_rings(heap, [&orphans](SlabPage* page) {
    page->next = orphans;
    orphans = page;
  });
  release_spares(heap);
  if (orphans == nullptr) return;
  std::lock_guard guard(abandoned.lock);
  while (SlabPage* page = orphans) {
    orphans = page->next;
    // The mark and what was pushed since the collect above, in one step: from here on a free
    // into the page finds the mark and takes the lock. Acquire as in collect().
    merge(page, reinterpret_cast<SlabBlock*>(page->remote.exchange(kSlabAbandoned, std::memory_order_acquire)));
    if (page->used == 0)
      release_page(page);
    else
      push_abandoned(page);
  }
}

// A thread_local with a destructor costs an initialization check per access, so the heap
// itself has none: this object, touched when the heap takes its first page, abandons it when
// the thread exits.
struct AbandonAtExit {
  ~AbandonAtExit() { abandon_heap(slab_heap); }
};
thread_local AbandonAtExit abandon_at_exit;

void register_heap(SlabHeap& heap) noexcept {
  heap.state = kHeapLive;
  (void)&abandon_at_exit;  // constructs it: its destructor runs at this thread's exit
}

// `block` is of `page`, whose `remote` was read as kSlabAbandoned. A live thread makes the
// page its own (reclaims it) and frees the block into it; an exiting thread frees the block
// under the lock, and gives the page back if that was its last block out. False if the page
// was adopted meanwhile: the block is then pushed as to any owned page.
bool free_abandoned(SlabPage* page, SlabBlock* block) noexcept {
  SlabHeap& heap = slab_heap;
  {
    std::lock_guard guard(abandoned.lock);
    // The mark is set and cleared under the lock only (and no push lands while it is set).
    if (page->remote.load(std::memory_order_relaxed) != kSlabAbandoned) return false;
    if (heap.state == kHeapExited) {
      block->next = page->local;
      page->local = block;
      if (--page->used == 0) {
        unlink_abandoned(page);
        release_page(page);
      }
      return true;
    }
    adopt(page, heap);
  }
  if (heap.state == kHeapFresh) register_heap(heap);
  block->next = page->local;
  page->local = block;
  if (--page->used == 0)
    give_back_empty(heap, page);
  else
    ring_push_back(heap, page);
  return true;
}

}  // namespace

void* slab_allocate_slow(std::size_t c) {
  SlabHeap& heap = slab_heap;
  if (heap.state != kHeapLive) [[unlikely]] {
    if (heap.state == kHeapExited) return allocate_abandoned(c);
    register_heap(heap);
  }
  // The class's pages, round from the current one: the first with a free block (local,
  // remotely freed or never carved) becomes current. Those passed over are full; going round
  // from where the last search stopped visits first the ones left longest to gather frees.
  if (SlabPage* const start = heap.current[c]; start != &slab_no_page) {
    SlabPage* page = start;
    do {
      if (refill(page)) {
        heap.current[c] = page;
        return pop(page);
      }
      page = page->next;
    } while (page != start);
  }
  SlabPage* page = adopt_page(heap, c);
  if (page == nullptr) {
    if (heap.spare != nullptr) {
      page = heap.spare;
      heap.spare = page->next;
      --heap.spares;
    } else {
      page = system_page();  // throws with nothing changed
    }
    format(page, c, &heap);
  }
  ring_push_back(heap, page);
  heap.current[c] = page;
  refill(page);  // an adopted page has a free block, a formatted one room to carve
  return pop(page);
}

void slab_free_remote(SlabPage* page, SlabBlock* block) noexcept {
  std::uintptr_t head = page->remote.load(std::memory_order_relaxed);
  for (;;) {
    if (head == kSlabAbandoned) [[unlikely]] {
      if (free_abandoned(page, block)) return;
      head = page->remote.load(std::memory_order_relaxed);
      continue;
    }
    block->next = reinterpret_cast<SlabBlock*>(head);
    // Release: pairs with the owner's acquire exchange (collect, abandon_heap), so that this
    // thread's writes to the block and its `next` come before the block is handed out again.
    // After the CAS this thread touches the page no more: from then on it may be released. A
    // mark set since the load fails the CAS, which then reloads it.
    if (page->remote.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(block), std::memory_order_release,
                                           std::memory_order_relaxed))
      return;
  }
}

void slab_retire(SlabPage* page) noexcept {
  SlabHeap& heap = slab_heap;
  ring_remove(heap, page);
  give_back_empty(heap, page);
}

void slab_trim() noexcept {
  SlabHeap& heap = slab_heap;
  if (heap.state == kHeapLive) sweep_rings(heap, [&heap](SlabPage* page) { ring_push_back(heap, page); });
  release_spares(heap);
}

void slab_visit_pages(SlabPageVisitor visit, void* context) noexcept {
  for (Segment* segment = segments.load(std::memory_order_acquire); segment != nullptr; segment = segment->next) {
    const std::size_t carved = segment->carved.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < carved; ++i)
      if (!visit(reinterpret_cast<SlabPage*>(segment->base + i * kSlabPageSize), context)) return;
  }
}

SlabStats slab_stats() noexcept {
  // Released first: a page is counted as allocated before it is counted as released, so
  // `live` does not go below zero when the loads race with a thread exit.
  const std::size_t released = pages_released.load(std::memory_order_relaxed);
  const std::size_t allocated = pages_allocated.load(std::memory_order_relaxed);
  return SlabStats{
      .pages_allocated = allocated,
      .pages_released = released,
      .pages_live = allocated - released,
      .pages_abandoned = pages_abandoned.load(std::memory_order_relaxed),
      .pages_adopted = pages_adopted.load(std::memory_order_relaxed),
  };
}

void* test_slab_allocate(std::size_t size) { return slab_allocate(size); }
void test_slab_free(void* block, std::size_t size) noexcept { slab_free(block, size); }
void test_slab_trim() noexcept { slab_trim(); }
SlabStats test_slab_stats() noexcept { return slab_stats(); }
std::size_t test_slab_page_size() noexcept { return kSlabPageSize; }

}  // namespace karx::detail
