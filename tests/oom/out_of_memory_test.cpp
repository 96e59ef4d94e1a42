// Running out of memory inside the runtime's own queues, on a path that cannot report it (a
// spawn from outside the workers pushes into the global queue in a noexcept schedule call):
// the process stops with a karx diagnostic that says what could not grow, never a bare
// std::terminate. A program of its own, because it replaces the global operator new: while
// armed, any request of kLarge bytes or more fails (task blocks come from the task allocator,
// not from operator new; the global queue's overflow grows with operator new[]).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdlib>
#include <new>
#include <thread>

import karx;

namespace {
std::atomic<bool> fail_large{false};
constexpr std::size_t kLarge = 4096;
}  // namespace

void* operator new(std::size_t n) {
  if (fail_large.load(std::memory_order_relaxed) && n >= kLarge) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }  // the sanitizers' own would not forward
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace std::chrono_literals;

std::atomic<bool> release{false};
std::atomic<long> spins{0};

// Holds the runtime's one processor until released. (The loop does an RMW: with an empty body
// the loop was not kept as written, and the worker went on to drain the global queue.)
karx::Async<void> hold_the_processor() {
  while (!release.load()) spins.fetch_add(1, std::memory_order_relaxed);
  co_return;
}

karx::Async<void> nothing() { co_return; }

// The one worker is kept busy, so tasks spawned from outside pile up in the global queue:
// past its 4096-slot ring they go to the overflow, which grows, and fails to.
void spawn_until_the_global_queue_cannot_grow() {
  alarm(20);  // a hang fails the test (SIGALRM) instead of blocking it
  // One processor, no thread to hand it to (the cap), no hand-off anyway (the threshold).
  auto* rt = new karx::Runtime(
      karx::RuntimeOptions{.processors = 1, .max_threads = 2, .blocking_threshold = std::chrono::seconds(60)});
  rt->spawn(hold_the_processor()).detach();
  while (spins.load() == 0) std::this_thread::sleep_for(1ms);
  fail_large.store(true);
  for (int i = 0; i < 100'000; ++i) rt->spawn(nothing()).detach();
  fail_large.store(false);
  std::_Exit(3);  // not reached: the overflow's growth fails long before
}

TEST(OutOfMemoryDeathTest, AGlobalQueueThatCannotGrowStopsWithAKarxDiagnostic) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(spawn_until_the_global_queue_cannot_grow(),
               "karx: fatal: out of memory growing the runtime's global queue");
}

}  // namespace
