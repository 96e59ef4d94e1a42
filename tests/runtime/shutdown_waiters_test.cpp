// ~Runtime releases every thread that waits inside the runtime before it waits for any:
//  - a caller of block_on on another thread, whether its root runs on it as a guest (mid-poll
//    or waiting) or it waits for a root running elsewhere: block_on throws the documented
//    std::runtime_error, and the destructor returns only once that caller has left the
//    runtime (nothing is touched after it is freed);
//  - a task, or a spawn_blocking closure, blocked in karx::block_on on a task of the same
//    runtime: that task is canceled, the wait returns "canceled", the thread can be joined.
// Before, the first returned at once and left the caller in block_on for ever (then touching
// the freed runtime), and the second deadlocked (the destructor joined the waiting thread
// before it canceled the task that would release it). Every wait here is bounded: a hang fails.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <coroutine>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

import karx;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A future that is never ready (its waker is dropped with it).
struct Never {
  karx::Poll<> poll(karx::Context&) { return karx::pending; }
};

struct Flags {
  std::atomic<bool> started{false};
  std::atomic<bool> destroyed{false};
};

struct MarkDestroyed {
  Flags* flags;
  ~MarkDestroyed() { flags->destroyed.store(true); }
};

// The root: computes for `compute` (the destructor may come in the middle), then waits for ever.
karx::Async<int> root(Flags* flags, std::chrono::milliseconds compute) {
  MarkDestroyed guard{flags};
  flags->started.store(true);
  const auto until = Clock::now() + compute;
  while (Clock::now() < until) {
  }
  co_await Never{};
  co_return 1;
}

bool wait_for(const std::atomic<bool>& flag, std::chrono::seconds limit = 10s) {
  const auto deadline = Clock::now() + limit;
  while (!flag.load() && Clock::now() < deadline) std::this_thread::sleep_for(100us);
  return flag.load();
}

// A hang is a failure, not a stuck test binary: report it and leave the process.
template <class T>
void ready_or_die(std::future<T>& f, const char* what) {
  if (f.wait_for(10s) == std::future_status::ready) return;
  std::fprintf(stderr, "FAILED: %s (still waiting after 10 s)\n", what);
  std::fflush(stderr);
  std::_Exit(1);
}

// What block_on did on the caller's thread: threw the runtime_error, or something else.
enum class Outcome { threw_runtime_error, returned, threw_other };

void destroy_while_a_caller_is_in_block_on(unsigned processors, std::chrono::milliseconds compute) {
  Flags flags;
  karx::RuntimeOptions o;
  o.processors = processors;
  auto rt = std::make_unique<karx::Runtime>(o);
  std::promise<Outcome> outcome;
  std::thread caller([&] {
    try {
      rt->block_on(root(&flags, compute));
      outcome.set_value(Outcome::returned);
    } catch (const std::runtime_error&) {
      outcome.set_value(Outcome::threw_runtime_error);
    } catch (...) {
      outcome.set_value(Outcome::threw_other);
    }
  });
  ASSERT_TRUE(wait_for(flags.started));
  std::future<void> destroyed = std::async(std::launch::async, [&] { rt.reset(); });
  ready_or_die(destroyed, "~Runtime hung");
  // The destructor returned: the root's future is gone and the caller has left block_on.
  EXPECT_TRUE(flags.destroyed.load());
  auto result = outcome.get_future();
  ready_or_die(result, "the caller stayed in block_on");
  EXPECT_EQ(result.get(), Outcome::threw_runtime_error);
  caller.join();
}

TEST(ShutdownWaiters, ACallerWhoseRootIsMidPollOnItAsAGuestIsReleased) {
  destroy_while_a_caller_is_in_block_on(1, 100ms);
}

TEST(ShutdownWaiters, ACallerWhoseRootWaitsIsReleased) { destroy_while_a_caller_is_in_block_on(1, 0ms); }

TEST(ShutdownWaiters, ACallerOnARuntimeWithSeveralProcessorsIsReleased) {
  destroy_while_a_caller_is_in_block_on(2, 20ms);
}

// A task blocked in karx::block_on on a task of its own runtime that will never finish.
karx::Async<int> blocks_on_a_child(karx::Runtime* rt, std::atomic<bool>* waiting,
                                   std::atomic<int>* wait_result) {
  auto child = rt->spawn([]() -> karx::Async<int> {
    co_await Never{};
    co_return 1;
  }());
  waiting->store(true);
  const std::optional<int> r = karx::block_on(std::move(child));
  wait_result->store(r.has_value() ? 1 : 0);
  co_return 0;
}

TEST(ShutdownWaiters, ATaskBlockedInBlockOnOnItsOwnChildIsReleased) {
  std::atomic<bool> waiting{false};
  std::atomic<int> wait_result{-1};
  auto rt = std::make_unique<karx::Runtime>(karx::RuntimeOptions{.processors = 2});
  rt->spawn(blocks_on_a_child(rt.get(), &waiting, &wait_result)).detach();
  ASSERT_TRUE(wait_for(waiting));
  std::this_thread::sleep_for(5ms);  // let the worker go to sleep in block_on
  std::future<void> destroyed = std::async(std::launch::async, [&] { rt.reset(); });
  ready_or_die(destroyed, "~Runtime deadlocked");
  EXPECT_EQ(wait_result.load(), 0) << "the wait should have returned \"canceled\"";
}

TEST(ShutdownWaiters, ASpawnBlockingClosureBlockedInBlockOnOnATaskIsReleased) {
  std::atomic<bool> waiting{false};
  std::atomic<int> wait_result{-1};
  auto rt = std::make_unique<karx::Runtime>(karx::RuntimeOptions{.processors = 1});
  karx::Runtime* raw = rt.get();
  auto closure = rt->spawn_blocking([raw, &waiting, &wait_result] {
    auto child = raw->spawn([]() -> karx::Async<int> {
      co_await Never{};
      co_return 1;
    }());
    waiting.store(true);
    const std::optional<int> r = karx::block_on(std::move(child));
    wait_result.store(r.has_value() ? 1 : 0);
  });
  closure.detach();
  ASSERT_TRUE(wait_for(waiting));
  std::this_thread::sleep_for(5ms);
  std::future<void> destroyed = std::async(std::launch::async, [&] { rt.reset(); });
  ready_or_die(destroyed, "~Runtime deadlocked");
  EXPECT_EQ(wait_result.load(), 0);
}

}  // namespace
