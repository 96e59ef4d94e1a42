// One allocation per spawn, of exactly the documented layout; none per run, wake or join.
//
// Task blocks and coroutine frames are counted through the task allocator's observer
// (karx::detail::set_allocation_observer), which sees every one of them whatever the
// allocator (the slab serves most without calling malloc) and can make one fail. Besides, in
// builds where no sanitizer owns malloc, the test interposes malloc to check that run, wake
// and join call it nowhere at all. Only allocations made while `counting` is set on this
// thread are counted.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdlib>
#include <deque>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "support/probes.hpp"
#include "support/sanitized.hpp"

namespace {
thread_local bool counting = false;
int allocations = 0;                         // task blocks and frames (the observer)
std::size_t last_size = 0;                   // the size of the last one
int mallocs = 0;                             // malloc family calls (interposed builds)
thread_local bool fail_allocations = false;  // while counting: task allocations fail

bool observe(std::size_t size) noexcept {
  if (!counting) return false;
  ++allocations;
  last_size = size;
  return fail_allocations;
}
void note_malloc() {
  if (counting) ++mallocs;
}
}  // namespace

// --- Interposed allocation functions ---------------------------------------------------------

#if !KARX_TEST_SANITIZED
// glibc's documented way to replace malloc: define the family in the program (ELF
// interposition) and forward to glibc's own entry points. operator new calls malloc, so it
// is counted too. (Sanitizer runtimes own malloc: there only the observer counts.)
extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t size) {
  note_malloc();
  return __libc_malloc(size);
}
void free(void* p) { __libc_free(p); }
void* calloc(std::size_t n, std::size_t size) {
  note_malloc();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  note_malloc();
  return __libc_realloc(p, size);
}
void* memalign(std::size_t align, std::size_t size) {
  note_malloc();
  return __libc_memalign(align, size);
}
void* aligned_alloc(std::size_t align, std::size_t size) {
  note_malloc();
  return __libc_memalign(align, size);
}
int posix_memalign(void** out, std::size_t align, std::size_t size) {
  note_malloc();
  void* p = __libc_memalign(align, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

namespace {

struct Done {
  karx::Poll<> poll(karx::Context&) { return karx::ready(); }
};

// Counts from its construction to its destruction, after one warm-up spawn: an allocator may
// set itself up on first use (the slab takes a page), which is not a cost of the spawn.
struct Counting {
  Counting() {
    {
      auto warm_up = karx::spawn(Done{}, [](karx::Task<>) {});
    }
    karx::detail::set_allocation_observer(&observe);
    allocations = 0;
    mallocs = 0;
    counting = true;
  }
  ~Counting() {
    counting = false;
    karx::detail::set_allocation_observer(nullptr);
  }
};

// A future of exactly 64 bytes with a void output.
struct SixtyFourBytes {
  std::array<char, 64> bytes{};
  karx::Poll<> poll(karx::Context&) { return karx::ready(); }
};
static_assert(sizeof(SixtyFourBytes) == 64);

constexpr std::size_t kHeader = 4 * sizeof(void*);

// The observer sees the size the task layer asks for, whatever the allocator makes of it.
constexpr std::size_t requested(std::size_t size) { return size; }

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
  std::array<void*, 2> two_words{};  // the room's 16 bytes: a queue pointer and one more word
  auto [wide_task, wide_handle] = karx::spawn(make(), [two_words](karx::Task<>) { (void)two_words; });
  EXPECT_EQ(allocations, 3) << "a 16-byte schedule function fits the room";
  task.run();
  tagged_task.run();
  wide_task.run();
  EXPECT_EQ(*probes::poll_once(handle).value(), 1);
  EXPECT_EQ(*probes::poll_once(tagged_handle).value(), 1);
  EXPECT_EQ(*probes::poll_once(wide_handle).value(), 1);
  EXPECT_EQ(allocations, 3) << "running and joining allocate nothing";
}

// What does not fit the room (a large schedule function) or needs a wrapper (spawn_local) takes
// a task block of its own beside the frame, and works the same.
TEST(Allocation, ACoroutineWhoseTaskDoesNotFitTheRoomTakesASecondBlock) {
  auto make = []() -> karx::Async<int> { co_return 2; };
  std::array<void*, 4> big_state{};  // over the room, whatever the output
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
  EXPECT_EQ(mallocs, 0) << "nothing else may allocate either";  // (always 0 in sanitizer builds)
}

// --- Fault injection: the allocation of a spawn fails ---------------------------------------

// Runs `body` with every task allocation on this thread failing.
template <class Body>
void with_failing_allocations(Body body) {
  Counting scope;
  fail_allocations = true;
  try {
    body();
  } catch (...) {
    fail_allocations = false;
    throw;
  }
  fail_allocations = false;
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
    EXPECT_THROW(with_failing_allocations([&] { (void)karx::spawn(std::move(future), std::move(schedule)); }),
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

// Keeps the compiler from eliding a coroutine's frame allocation (HALO), which it may do for a
// coroutine created and destroyed in one place: the object escapes.
template <class T>
void escape(T& object) {
  asm volatile("" : : "r"(&object) : "memory");
}

TEST(AllocationFailure, ACoroutineWhoseFrameCannotBeAllocatedThrowsBadAlloc) {
  EXPECT_THROW(with_failing_allocations([] {
                 auto a = answer();
                 escape(a);
               }),
               std::bad_alloc);
  EXPECT_EQ(karx::block_on(answer()), 42);
}

TEST(AllocationFailure, TheRuntimeKeepsWorkingAfterASpawnFails) {
  karx::RuntimeOptions o;
  o.processors = 2;
  karx::Runtime rt(o);
  std::atomic<int> drops{0};
  EXPECT_THROW(with_failing_allocations([&] { (void)rt.spawn(CountedReady{probes::DropCounter(drops)}); }),
               std::bad_alloc);
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

// --- Spawning from outside in steady state ----------------------------------------------------

karx::Async<> bump(std::atomic<int>* done) {
  done->fetch_add(1, std::memory_order_release);
  co_return;
}

// The spawn_many pattern: this thread spawns, a worker runs and frees. With the slab, a block
// freed on the worker goes back to this thread's pages, so in steady state spawning calls no
// malloc here (with glibc's malloc, or a cache of freed blocks per thread, it called malloc on
// every spawn: the blocks piled up on the worker).
TEST(Allocation, SpawningFromOutsideInSteadyStateCallsNoMalloc) {
#if KARX_SLAB_TASK_ALLOCATOR && !KARX_TEST_SANITIZED
  constexpr int kSpawns = 10000, kWarmUpRounds = 3, kRounds = 5;
  karx::RuntimeOptions o;
  o.processors = 1;
  karx::Runtime rt(o);
  auto round = [&rt] {
    std::atomic<int> done{0};
    for (int i = 0; i < kSpawns; ++i) rt.spawn(bump(&done)).detach();
    while (done.load(std::memory_order_acquire) < kSpawns) std::this_thread::yield();
    // The last task's block is freed right after its poll: let the worker get there.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  };
  for (int i = 0; i < kWarmUpRounds; ++i) round();
  Counting scope;
  for (int i = 0; i < kRounds; ++i) round();
  EXPECT_EQ(allocations, kSpawns * kRounds) << "one block per spawn, the frame's";
  // Usually none at all. When the worker lags behind by pages' worth of tasks, the slab takes a
  // page and the injector's ring grows (a few mallocs in a round, seen under load): that is
  // not a malloc per spawn, which is what this catches (every spawn, before the slab).
  EXPECT_LE(mallocs, 100) << mallocs << " mallocs for " << kSpawns * kRounds << " spawns";
#else
  GTEST_SKIP() << "needs the slab task allocator and a malloc no sanitizer owns (asan uses `system`, tsan owns malloc)";
#endif
}

}  // namespace
