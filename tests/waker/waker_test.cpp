// karx.waker: Poll, Waker over a raw vtable, waker_fn, noop_waker, the Future concept.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "support/probes.hpp"

namespace {

// --- Poll ---------------------------------------------------------------------------------

TEST(Poll, PendingHoldsNoValue) {
  karx::Poll<int> p = karx::pending;
  EXPECT_TRUE(p.is_pending());
  EXPECT_FALSE(p.is_ready());
  EXPECT_THROW((void)p.value(), std::logic_error);
}

TEST(Poll, ReadyHoldsItsValue) {
  karx::Poll<int> p = karx::ready(7);
  ASSERT_TRUE(p.is_ready());
  EXPECT_EQ(p.value(), 7);
  auto moved = std::make_unique<int>(3);
  karx::Poll<std::unique_ptr<int>> q = karx::ready(std::move(moved));
  std::unique_ptr<int> out = std::move(q).value();
  EXPECT_EQ(*out, 3);
}

TEST(Poll, ReadyConvertsToAWiderPoll) {
  karx::Poll<long> p = karx::ready(5);  // Poll<int> -> Poll<long>
  EXPECT_EQ(p.value(), 5L);
  karx::Poll<long> q = karx::Poll<int>(karx::pending);
  EXPECT_TRUE(q.is_pending());
}

TEST(Poll, VoidPoll) {
  karx::Poll<> p = karx::pending;
  EXPECT_TRUE(p.is_pending());
  karx::Poll<> q = karx::ready();
  EXPECT_TRUE(q.is_ready());
}

// --- The Future concept ---------------------------------------------------------------------

struct NotAFuture {
  int poll(karx::Context&) { return 0; }
};
static_assert(karx::Future<probes::ProbeFuture>);
static_assert(std::is_same_v<karx::output_of<probes::ProbeFuture>, probes::Output>);
static_assert(karx::Future<karx::Async<int>>);
static_assert(std::is_same_v<karx::output_of<karx::Async<>>, void>);
static_assert(karx::Future<karx::JoinHandle<int>>);
static_assert(std::is_same_v<karx::output_of<karx::JoinHandle<int>>, std::optional<int>>);
static_assert(std::is_same_v<karx::output_of<karx::JoinHandle<void>>, bool>);
static_assert(!karx::Future<NotAFuture>);
static_assert(!karx::Future<int>);

// --- Waker over a raw vtable ---------------------------------------------------------------

struct RawCalls {
  std::atomic<int> clones{0}, wakes{0}, wakes_by_ref{0}, drops{0};
};
RawCalls* raw_calls = nullptr;
karx::RawWaker raw_clone(const void* p);
void raw_wake(const void*) { ++raw_calls->wakes; }
void raw_wake_by_ref(const void*) { ++raw_calls->wakes_by_ref; }
void raw_drop(const void*) { ++raw_calls->drops; }
constexpr karx::RawWakerVTable raw_vtable{&raw_clone, &raw_wake, &raw_wake_by_ref, &raw_drop};
karx::RawWaker raw_clone(const void* p) {
  ++raw_calls->clones;
  return karx::RawWaker{p, &raw_vtable};
}

class RawWakerTest : public ::testing::Test {
 protected:
  void SetUp() override { raw_calls = &calls; }
  void TearDown() override { raw_calls = nullptr; }
  RawCalls calls;
  int target = 0;
};

TEST_F(RawWakerTest, EachOperationCallsItsVTableEntryOnce) {
  {
    karx::Waker w = karx::Waker::from_raw({&target, &raw_vtable});
    EXPECT_EQ(w.as_raw().data, &target);
    w.wake();
    EXPECT_EQ(calls.wakes_by_ref, 1);
    EXPECT_EQ(calls.wakes, 0);
    karx::Waker c = w;  // copy = clone
    EXPECT_EQ(calls.clones, 1);
    EXPECT_TRUE(c.will_wake(w));
    std::move(c).wake_and_release();  // consuming wake: no drop
    EXPECT_EQ(calls.wakes, 1);
    EXPECT_EQ(calls.drops, 0);
    c.wake();  // moved-from: nothing
    EXPECT_EQ(calls.wakes_by_ref, 1);
    EXPECT_FALSE(c.will_wake(w));
    karx::Waker m = std::move(w);  // move: no clone, no drop
    EXPECT_EQ(calls.clones, 1);
    EXPECT_EQ(calls.drops, 0);
  }
  EXPECT_EQ(calls.drops, 1);  // only `m` owned the original
}

TEST_F(RawWakerTest, IntoRawReleasesWithoutDrop) {
  karx::Waker w = karx::Waker::from_raw({&target, &raw_vtable});
  karx::RawWaker raw = std::move(w).into_raw();
  EXPECT_EQ(raw.data, &target);
  EXPECT_EQ(calls.drops, 0);
  karx::Waker back = karx::Waker::from_raw(raw);
  (void)back;
}

TEST_F(RawWakerTest, CopyAssignmentOfTheSameTargetKeepsTheWaker) {
  karx::Waker a = karx::Waker::from_raw({&target, &raw_vtable});
  karx::Waker b = karx::Waker::from_raw(raw_clone(&target));
  EXPECT_EQ(calls.clones, 1);
  a = b;  // same target: nothing to do
  EXPECT_EQ(calls.clones, 1);
  EXPECT_EQ(calls.drops, 0);
}

// --- waker_fn and noop_waker ----------------------------------------------------------------

TEST(WakerFn, EveryWakeOfEveryCloneCallsTheFunction) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  std::weak_ptr<std::atomic<int>> alive = calls;
  {
    karx::Waker w = karx::waker_fn([calls] { ++*calls; });
    w.wake();
    w.wake();
    EXPECT_EQ(*calls, 2);
    karx::Waker c = w;
    EXPECT_TRUE(c.will_wake(w));
    c.wake();
    EXPECT_EQ(*calls, 3);
    std::move(c).wake_and_release();
    EXPECT_EQ(*calls, 4);
    calls.reset();
    EXPECT_FALSE(alive.expired());  // the function (and its capture) lives while a clone does
  }
  EXPECT_TRUE(alive.expired());  // destroyed exactly when the last clone went
}

TEST(WakerFn, DistinctFunctionsAreDistinctWakers) {
  karx::Waker a = karx::waker_fn([] {});
  karx::Waker b = karx::waker_fn([] {});
  EXPECT_FALSE(a.will_wake(b));
}

TEST(WakerFn, WakesFromManyThreadsAreAllDelivered) {
  std::atomic<int> calls{0};
  karx::Waker w = karx::waker_fn([&calls] { calls.fetch_add(1, std::memory_order_relaxed); });
  constexpr int threads = 4, per_thread = 10000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([w, t] {  // each thread owns a clone
      for (int i = 0; i < per_thread; ++i) {
        if ((i + t) % 2 == 0) {
          w.wake();
        } else {
          karx::Waker c = w;
          std::move(c).wake_and_release();
        }
      }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(calls.load(), threads * per_thread);
}

TEST(WakerFn, AThrowingFunctionStillReleasesAConsumedWaker) {
  auto state = std::make_shared<int>(0);
  std::weak_ptr<int> alive = state;
  {
    karx::Waker w = karx::waker_fn([state] { throw std::runtime_error("wake failed"); });
    state.reset();
    karx::Waker clone = w;
    EXPECT_THROW(std::move(clone).wake_and_release(), std::runtime_error);
    EXPECT_FALSE(alive.expired());  // `w` still holds the function
  }
  EXPECT_TRUE(alive.expired()) << "the consumed clone's reference leaked";
}

TEST(NoopWaker, DoesNothingAndClonesFreely) {
  karx::Waker w = karx::noop_waker();
  w.wake();
  karx::Waker c = w;
  EXPECT_TRUE(c.will_wake(w));
  std::move(c).wake_and_release();
  karx::Context cx(w);
  EXPECT_TRUE(cx.waker().will_wake(w));
}

}  // namespace
