// Fault injection: user callbacks that throw where the task layer has nobody to throw to.
//
// - A future whose destructor may throw: refused at compile time by every spawning function.
// - A waker_fn callback that throws: a wake called by user code throws to that caller (and a
//   consuming wake still releases its share); the wake of a JoinHandle's waker by the task
//   (on completion or cancellation) goes to the handler, and the task's state is already final.
#include <gtest/gtest.h>

#include <atomic>
#include <coroutine>
#include <deque>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "support/detached.hpp"
#include "support/probes.hpp"

namespace {

struct WakeFailure : std::runtime_error {
  WakeFailure() : std::runtime_error("wake failed") {}
};

// A future whose destructor may throw. The task layer destroys futures in completions,
// cancels and drops, where nobody could receive the exception, so spawning one is rejected at
// compile time: every spawning function requires std::move_constructible<F>, which includes
// std::destructible<F>, a non-throwing destructor. (A destructor declared noexcept that
// throws anyway ends in std::terminate, by the language.)
struct ThrowsOnDestruction {
  ThrowsOnDestruction() = default;
  ThrowsOnDestruction(ThrowsOnDestruction&&) = default;
  ~ThrowsOnDestruction() noexcept(false) {}
  karx::Poll<int> poll(karx::Context&) { return karx::Poll<int>::ready(7); }
};
struct Ordinary {
  karx::Poll<int> poll(karx::Context&) { return karx::Poll<int>::ready(7); }
};
static_assert(karx::Future<ThrowsOnDestruction>, "it is a future: only spawning it is refused");

struct Drop {
  void operator()(karx::Task<>) const {}
  void operator()(karx::Task<int>) const {}
};

struct InlineExecutor {
  void schedule(karx::Task<> t) { t.run(); }
};

template <class F>
concept SpawnableAnywhere = requires(F f, karx::Runtime& rt, InlineExecutor& ex, karx::sim::Simulation& sim) {
  karx::spawn(std::move(f), Drop{});
  karx::spawn(std::move(f), Drop{}, 1);
  karx::spawn_local(std::move(f), Drop{});
  rt.spawn(std::move(f));
  rt.block_on(std::move(f));
  karx::spawn_on(rt, std::move(f));
  karx::spawn_on(ex, std::move(f));
  karx::exec(std::move(f));
  sim.spawn(std::move(f));
  sim.block_on(std::move(f));
};
template <class F>
concept SpawnableSomewhere = requires(F f, karx::Runtime& rt, InlineExecutor& ex, karx::sim::Simulation& sim) {
  requires requires { karx::spawn(std::move(f), Drop{}); } || requires { karx::spawn(std::move(f), Drop{}, 1); } ||
               requires { karx::spawn_local(std::move(f), Drop{}); } || requires { rt.spawn(std::move(f)); } ||
               requires { rt.block_on(std::move(f)); } || requires { karx::spawn_on(rt, std::move(f)); } ||
               requires { karx::spawn_on(ex, std::move(f)); } || requires { karx::exec(std::move(f)); } ||
               requires { sim.spawn(std::move(f)); } || requires { sim.block_on(std::move(f)); };
};
static_assert(SpawnableAnywhere<Ordinary>, "the check itself: an ordinary future is accepted everywhere");
static_assert(!SpawnableSomewhere<ThrowsOnDestruction>, "a future with a throwing destructor is refused everywhere");

TEST(FutureDestructorFault, AFutureWhoseDestructorMayThrowIsRefusedAtCompileTime) {
  // The static_asserts above are the test; this records it in the run, and checks the one
  // spawning function that takes such a future, block_on on the calling thread (it owns the
  // future as a local, so a throwing destructor reaches its caller as any local's would).
  EXPECT_FALSE(SpawnableSomewhere<ThrowsOnDestruction>);
  EXPECT_EQ(karx::block_on(ThrowsOnDestruction{}), 7);
}

// --- waker_fn ------------------------------------------------------------------------------

// Counts calls, then throws. `alive` tells when the waker's shared block is freed.
struct ThrowingWake {
  std::atomic<int>* calls;
  std::shared_ptr<int> alive = std::make_shared<int>(0);
  void operator()() const {
    calls->fetch_add(1);
    throw WakeFailure();
  }
};

TEST(WakerFnFault, AWakeByReferenceThrowsToItsCallerAndTheWakerStaysUsable) {
  std::atomic<int> calls{0};
  ThrowingWake fn{&calls};
  std::weak_ptr<int> alive = fn.alive;
  {
    karx::Waker w = karx::waker_fn(std::move(fn));
    EXPECT_THROW(w.wake(), WakeFailure);
    EXPECT_THROW(w.wake(), WakeFailure);
    EXPECT_EQ(calls.load(), 2);
    EXPECT_FALSE(alive.expired());
  }
  EXPECT_TRUE(alive.expired()) << "the block is freed with the last waker";
}

TEST(WakerFnFault, AConsumingWakeThrowsToItsCallerAndStillReleasesItsShare) {
  std::atomic<int> calls{0};
  ThrowingWake fn{&calls};
  std::weak_ptr<int> alive = fn.alive;
  karx::Waker w = karx::waker_fn(std::move(fn));
  karx::Waker clone = w;
  EXPECT_THROW(std::move(w).wake_and_release(), WakeFailure);
  EXPECT_FALSE(alive.expired()) << "the clone still holds the block";
  EXPECT_THROW(std::move(clone).wake_and_release(), WakeFailure);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_TRUE(alive.expired()) << "both shares were released although each wake threw";
}

class WakerFnFaultInTheTaskLayer : public probes::DetachedRecordingTest {};

TEST_F(WakerFnFaultInTheTaskLayer, AHandlesWakerThatThrowsOnCompletionIsReportedAndRunReturns) {
  std::atomic<int> calls{0};
  probes::Counts c;
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 0, 7}, Drop{});
  {
    const karx::Waker awaiter = karx::waker_fn(ThrowingWake{&calls});
    EXPECT_TRUE(probes::poll_with(handle, awaiter).is_pending());  // registers `awaiter`
  }
  bool woken_during_run = true;
  EXPECT_NO_THROW(woken_during_run = task.run()) << "the awaiter's exception is not the executor's";
  EXPECT_FALSE(woken_during_run);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(probes::undeliverable_reported_once<WakeFailure>());
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  ASSERT_TRUE(r.value().has_value());
  EXPECT_EQ(r.value()->value, 7);
}

TEST_F(WakerFnFaultInTheTaskLayer, AHandlesWakerThatThrowsOnCancelIsReportedAndTheHandleYieldsCanceled) {
  std::atomic<int> calls{0};
  probes::Counts c;
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 0, 7}, Drop{});
  {
    const karx::Waker awaiter = karx::waker_fn(ThrowingWake{&calls});
    EXPECT_TRUE(probes::poll_with(handle, awaiter).is_pending());
  }
  EXPECT_NO_THROW(task.cancel());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(c.future_drops.load(), 1);
  EXPECT_TRUE(probes::undeliverable_reported_once<WakeFailure>());
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value().has_value());
}

TEST(WakerFnFaultDefaultHandler, PrintsWhereAndTheNestedException) {
  std::atomic<int> calls{0};
  probes::Counts c;
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 0, 7}, Drop{});
  {
    const karx::Waker awaiter = karx::waker_fn(ThrowingWake{&calls});
    EXPECT_TRUE(probes::poll_with(handle, awaiter).is_pending());
  }
  ::testing::internal::CaptureStderr();
  task.run();
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(printed.find("a JoinHandle's waker threw"), std::string::npos) << printed;
  EXPECT_NE(printed.find("wake failed"), std::string::npos) << printed;
  EXPECT_EQ(calls.load(), 1);
}

}  // namespace
