// One allocation per spawn, of exactly the documented layout; none per run, wake or join.
//
// The test counts allocations from outside the library: it interposes malloc (the default
// allocator; operator new goes through it too) and oneTBB's scalable_malloc (the `scalable`
// build option), forwarding to the real ones. In sanitizer builds, whose runtimes own malloc,
// the sanitizer's allocation hook counts instead. Only allocations made while
// `counting` is set on this thread are counted.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <coroutine>
#include <cstdlib>
#include <deque>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "support/probes.hpp"

namespace {
thread_local bool counting = false;
int allocations = 0;
std::size_t last_size = 0;
void* last_block = nullptr;                 // what the last counted malloc returned (interposed builds)
std::atomic<void*> watched_block{nullptr};  // set to null by free() when that block is freed
int frees = 0;                              // counted free() calls (interposed builds)
thread_local bool fail_mallocs = false;     // while counting: malloc returns null (interposed builds)

void note(std::size_t size) {
  if (counting) {
    ++allocations;
    last_size = size;
  }
}

template <class Fn>
Fn real(const char* name) {
  static_assert(sizeof(Fn) == sizeof(void*));
  void* sym = dlsym(RTLD_NEXT, name);
  if (sym == nullptr) std::abort();
  return reinterpret_cast<Fn>(sym);
}
}  // namespace

// --- Interposed allocation functions ---------------------------------------------------------

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KARX_TEST_SANITIZED 1
#endif
#endif

#if KARX_TEST_SANITIZED
// The sanitizer runtimes own operator new and malloc; they report every allocation to a hook.
#include <sanitizer/allocator_interface.h>
namespace {
void on_malloc(const volatile void*, std::size_t size) { note(size); }
void on_free(const volatile void*) {}
const int hooks_installed = __sanitizer_install_malloc_and_free_hooks(&on_malloc, &on_free);
}  // namespace
#else
// glibc's documented way to replace malloc: define the family in the program (ELF
// interposition) and forward to glibc's own entry points. operator new calls malloc, so it
// is counted too.
extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t size) {
  note(size);
  if (fail_mallocs && counting) return nullptr;  // fault injection: this thread's counted mallocs fail
  void* p = __libc_malloc(size);
  if (counting) last_block = p;
  return p;
}
void free(void* p) {
  if (counting && p != nullptr) ++frees;
  void* expected = p;
  if (p != nullptr) watched_block.compare_exchange_strong(expected, nullptr);
  __libc_free(p);
}
void* calloc(std::size_t n, std::size_t size) {
  note(n * size);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  note(size);
  return __libc_realloc(p, size);
}
void* memalign(std::size_t align, std::size_t size) {
  note(size);
  return __libc_memalign(align, size);
}
void* aligned_alloc(std::size_t align, std::size_t size) {
  note(size);
  return __libc_memalign(align, size);
}
int posix_memalign(void** out, std::size_t align, std::size_t size) {
  note(size);
  void* p = __libc_memalign(align, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

extern "C" void* scalable_malloc(std::size_t size) {
  static auto fn = real<void* (*)(std::size_t)>("scalable_malloc");
  note(size);
  return fn(size);
}
extern "C" void* scalable_aligned_malloc(std::size_t size, std::size_t align) {
  static auto fn = real<void* (*)(std::size_t, std::size_t)>("scalable_aligned_malloc");
  note(size);
  return fn(size, align);
}

namespace {

struct Done {
  karx::Poll<> poll(karx::Context&) { return karx::ready(); }
};

// Counts from its construction to its destruction, after one warm-up spawn: an allocator may
// set itself up on first use (oneTBB's does), which is not a cost of the spawn.
struct Counting {
  Counting() {
    {
      auto warm_up = karx::spawn(Done{}, [](karx::Task<>) {});
    }
#if KARX_TEST_SANITIZED
    EXPECT_NE(hooks_installed, 0) << "the sanitizer did not take the allocation hook";
#endif
    // The task cache (the default allocator) would serve the next spawn from the warm-up's
    // block: empty it, so that every block counted here comes from malloc.
    karx::detail::trim_task_cache();
    allocations = 0;
    counting = true;
  }
  ~Counting() { counting = false; }
};

// A future of exactly 64 bytes with a void output.
struct SixtyFourBytes {
  std::array<char, 64> bytes{};
  karx::Poll<> poll(karx::Context&) { return karx::ready(); }
};
static_assert(sizeof(SixtyFourBytes) == 64);

constexpr std::size_t kHeader = 4 * sizeof(void*);

// What malloc is asked for a block of `size` bytes: the cached allocator asks for its size
// class (16c + 8 bytes, the usable size of a 16(c + 1)-byte glibc chunk), the others for the
// size itself. The sanitizer presets use the system allocator, so they check exact sizes.
constexpr std::size_t requested(std::size_t size) {
#if KARX_CACHED_TASK_ALLOCATOR
  return 16 * ((size + 7) / 16) + 8;
#else
  return size;
#endif
}
static_assert(requested(kHeader + 64) >= kHeader + 64 && requested(kHeader + 64) < kHeader + 64 + 16);

TEST(Allocation, OneBlockPerSpawnAndAStatelessScheduleAndVoidTagTakeNoSpace) {
  std::size_t size;
  {
    Counting scope;
    auto spawned = karx::spawn(SixtyFourBytes{}, [](karx::Task<>) {});
    size = last_size;
    EXPECT_EQ(allocations, 1);
    counting = false;
  }
  EXPECT_EQ(size, requested(kHeader + 64));  // header, then the union of the future and its output
}

TEST(Allocation, TagAndScheduleFunctionFollowTheHeader) {
  int sink = 0;
  std::size_t size;
  {
    Counting scope;
    auto spawned = karx::spawn(SixtyFourBytes{}, [&sink](karx::Task<std::uint64_t>) { ++sink; }, std::uint64_t{7});
    size = last_size;
    EXPECT_EQ(allocations, 1);
    counting = false;
  }
  EXPECT_EQ(size, requested(kHeader + sizeof(std::uint64_t) + sizeof(int*) + 64));
}

// A coroutine's frame keeps room for a task in front of it (impl/task/frame_block.cppm): spawning
// it builds the task there, so a coroutine task is one block, the frame's.
TEST(Allocation, ACoroutineTaskIsOneBlockTheFrames) {
  auto make = []() -> karx::Async<int> { co_return 1; };
  Counting scope;
  auto async = make();  // the coroutine frame, with the room
  EXPECT_EQ(allocations, 1);
  const std::size_t frame_block = last_size;
  EXPECT_GE(frame_block, kHeader + 16) << "the frame's block keeps room for at least the header and the stage";
  auto [task, handle] = karx::spawn(std::move(async), [](karx::Task<>) {});
  EXPECT_EQ(allocations, 1) << "the task is built in the frame's block";
  auto [tagged_task, tagged_handle] = karx::spawn(make(), [](karx::Task<std::uint64_t>) {}, std::uint64_t{7});
  EXPECT_EQ(allocations, 2) << "an 8-byte tag fits the room too";
  EXPECT_EQ(tagged_handle.tag(), 7u);
  task.run();
  tagged_task.run();
  EXPECT_EQ(*probes::poll_once(handle).value(), 1);
  EXPECT_EQ(*probes::poll_once(tagged_handle).value(), 1);
  EXPECT_EQ(allocations, 2) << "running and joining allocate nothing";
}

// What does not fit the room (a large schedule function) or needs a wrapper (spawn_local) takes
// a task block of its own beside the frame, and works the same.
TEST(Allocation, ACoroutineWhoseTaskDoesNotFitTheRoomTakesASecondBlock) {
  auto make = []() -> karx::Async<int> { co_return 2; };
  std::array<void*, 4> big_state{};
  Counting scope;
  auto [task, handle] = karx::spawn(make(), [big_state](karx::Task<>) { (void)big_state; });
  EXPECT_EQ(allocations, 2);
  auto [local_task, local_handle] = karx::spawn_local(make(), [](karx::Task<>) {});
  EXPECT_EQ(allocations, 4);
  task.run();
  local_task.run();
  EXPECT_EQ(karx::block_on(std::move(handle)), 2);
  EXPECT_EQ(karx::block_on(std::move(local_handle)), 2);
}

karx::Async<int> holds(probes::DropCounter, int value) { co_return value; }

// The frame (its arguments, its promise) is destroyed when the task completes, as any future
// is, although its block lives on with the output until the handle takes it.
TEST(Allocation, AFrameInATaskBlockIsDestroyedAtCompletionAndTheBlockWithTheTask) {
  std::atomic<int> drops{0};
  auto [task, handle] = karx::spawn(holds(probes::DropCounter(drops), 3), [](karx::Task<>) {});
  EXPECT_EQ(drops.load(), 0);
  EXPECT_FALSE(task.run());
  EXPECT_EQ(drops.load(), 1) << "the argument must go with the frame when the task completes";
  EXPECT_EQ(karx::block_on(std::move(handle)), 3);
  EXPECT_EQ(drops.load(), 1);
  // Canceled before it ran: the frame goes at once, once.
  std::atomic<int> canceled_drops{0};
  {
    auto [unrun, unrun_handle] = karx::spawn(holds(probes::DropCounter(canceled_drops), 4), [](karx::Task<>) {});
    unrun.cancel();
    EXPECT_EQ(canceled_drops.load(), 1);
    EXPECT_FALSE(karx::block_on(std::move(unrun_handle)).has_value());
  }
  EXPECT_EQ(canceled_drops.load(), 1);
}

// A tag whose move throws while the task is being built in the frame's block: spawn throws,
// and the frame, which still owns its block, is destroyed and freed once (LeakSanitizer checks
// the block in the asan preset).
struct TagThatThrowsWhenMoved {
  int* moves_left;  // the move that brings it to zero throws
  explicit TagThatThrowsWhenMoved(int* budget) : moves_left(budget) {}
  TagThatThrowsWhenMoved(TagThatThrowsWhenMoved&& o) : moves_left(o.moves_left) {
    if (--*moves_left == 0) throw std::runtime_error("tag move");
  }
};

TEST(Allocation, ASpawnInAFrameBlockThatThrowsDestroysTheFrameOnce) {
  std::atomic<int> drops{0};
  int moves_left = 1;  // the prvalue initializes spawn's parameter; the move into the cell throws
  auto async = holds(probes::DropCounter(drops), 5);
  EXPECT_THROW((void)karx::spawn(
                   std::move(async), [](karx::Task<TagThatThrowsWhenMoved>) {}, TagThatThrowsWhenMoved(&moves_left)),
               std::runtime_error);
  EXPECT_EQ(moves_left, 0) << "the throw must come from building the cell";
  EXPECT_EQ(drops.load(), 1) << "the frame must be destroyed exactly once";
}

TEST(Allocation, RunWakeCloneAndJoinDoNotAllocate) {
  probes::Counts c;
  std::deque<karx::Task<>> queue;
  karx::Waker stored = karx::noop_waker();
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 2, 5, false, &stored}, probes::ProbeSchedule{&c, &queue});
  queue.emplace_back(std::move(task));
  Counting scope;
  EXPECT_EQ(probes::drain(queue), 1);
  stored.wake();  // by reference
  EXPECT_EQ(probes::drain(queue), 1);
  karx::Waker clone = stored;
  std::move(clone).wake_and_release();  // by value
  EXPECT_EQ(probes::drain(queue), 1);
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value()->value, 5);
  EXPECT_EQ(allocations, 0);
}

#if KARX_CACHED_TASK_ALLOCATOR && !KARX_TEST_SANITIZED
TEST(Allocation, TheTaskCacheReusesAFreedBlockAndFreesWhatItHoldsAtThreadExit) {
  void* first = nullptr;
  int mallocs = -1;
  std::thread([&] {  // a new thread: its cache starts empty
    Counting scope;
    {
      auto spawned = karx::spawn(SixtyFourBytes{}, [](karx::Task<>) {});
    }  // the Task cancels, the handle drops
    first = last_block;
    {
      auto spawned = karx::spawn(SixtyFourBytes{}, [](karx::Task<>) {});
    }
    mallocs = allocations;
    watched_block.store(first);
  })
      .join();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(mallocs, 1) << "the second spawn should reuse the first one's block";
  EXPECT_EQ(watched_block.load(), nullptr) << "the thread's exit should free the block its cache held";
}

TEST(Allocation, TheTaskCacheKeepsAtMostItsBudgetAndFreesTheRest) {
  // 50,000 blocks of 104 bytes (5.2 MB) freed on one thread: the cache keeps 4 MiB of them
  // and passes the rest to free() at once.
  constexpr int kBlocks = 50000;
  int freed_at_once = -1;
  std::thread([&] {
    std::vector<std::pair<karx::Task<>, karx::JoinHandle<void>>> tasks;
    tasks.reserve(kBlocks);
    for (int i = 0; i < kBlocks; ++i) tasks.push_back(karx::spawn(SixtyFourBytes{}, [](karx::Task<>) {}));
    Counting scope;
    frees = 0;
    tasks.clear();
    freed_at_once = frees;
    counting = false;
  }).join();
  EXPECT_EQ(freed_at_once, kBlocks - static_cast<int>((std::size_t{4} << 20) / requested(kHeader + 64)));
}
#else
TEST(Allocation, TheTaskCacheKeepsAtMostItsBudgetAndFreesTheRest) {
  GTEST_SKIP() << "this build's task allocator is not `cached` (or a sanitizer owns malloc)";
}
TEST(Allocation, TheTaskCacheReusesAFreedBlockAndFreesWhatItHoldsAtThreadExit) {
  GTEST_SKIP() << "this build's task allocator is not `cached` (or a sanitizer owns malloc)";
}
#endif

// --- Fault injection: the allocation of a spawn fails ---------------------------------------

#if !KARX_TEST_SANITIZED
// Runs `body` with every malloc on this thread failing (after the task cache is emptied, so
// that the task allocator must call malloc).
template <class Body>
void with_failing_malloc(Body body) {
  Counting scope;
  fail_mallocs = true;
  try {
    body();
  } catch (...) {
    fail_mallocs = false;
    throw;
  }
  fail_mallocs = false;
}

struct CountedReady {
  probes::DropCounter drop;
  karx::Poll<int> poll(karx::Context&) { return karx::Poll<int>::ready(1); }
};

TEST(AllocationFailure, SpawnThrowsBadAllocAndDestroysTheFutureOnce) {
  std::atomic<int> drops{0}, schedule_drops{0};
  {
    CountedReady future{probes::DropCounter(drops)};
    probes::DropCounter schedule_state(schedule_drops);
    auto schedule = [state = std::move(schedule_state)](karx::Task<>) {};
    EXPECT_THROW(with_failing_malloc([&] { (void)karx::spawn(std::move(future), std::move(schedule)); }),
                 std::bad_alloc);
    EXPECT_EQ(drops.load(), 1) << "the future moved into spawn must be destroyed exactly once";
    EXPECT_EQ(schedule_drops.load(), 1) << "so must the schedule function";
  }
  EXPECT_EQ(drops.load(), 1);
  EXPECT_EQ(schedule_drops.load(), 1);
  // And spawning works again once memory is back.
  auto [task, handle] = karx::spawn(CountedReady{probes::DropCounter(drops)}, [](karx::Task<>) {});
  task.run();
  EXPECT_EQ(karx::block_on(std::move(handle)), 1);
}

karx::Async<int> answer() { co_return 42; }

TEST(AllocationFailure, ACoroutineWhoseFrameCannotBeAllocatedThrowsBadAlloc) {
  EXPECT_THROW(with_failing_malloc([] { (void)answer(); }), std::bad_alloc);
  EXPECT_EQ(karx::block_on(answer()), 42);
}

TEST(AllocationFailure, TheRuntimeKeepsWorkingAfterASpawnFails) {
  karx::RuntimeOptions o;
  o.processors = 2;
  karx::Runtime rt(o);
  std::atomic<int> drops{0};
  EXPECT_THROW(with_failing_malloc([&] { (void)rt.spawn(CountedReady{probes::DropCounter(drops)}); }), std::bad_alloc);
  EXPECT_EQ(drops.load(), 1);
  EXPECT_EQ(rt.block_on(answer()), 42);
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < 100; ++i) handles.push_back(rt.spawn(answer()));
  int sum = 0;
  for (auto& h : handles) sum += karx::block_on(std::move(h)).value();
  EXPECT_EQ(sum, 4200);
  const karx::RuntimeMetrics m = rt.metrics();
  EXPECT_EQ(m.tasks_spawned, m.tasks_completed) << "the failed spawn must not be counted as a task";
  // The Runtime's destructor then checks the task accounting: a failed spawn that left a task
  // counted would keep the core alive for good (LeakSanitizer in the asan preset, which runs
  // this test without the injection).
}
#else
TEST(AllocationFailure, SpawnThrowsBadAllocAndDestroysTheFutureOnce) {
  GTEST_SKIP() << "fault injection interposes malloc, which a sanitizer runtime owns";
}
#endif

}  // namespace
