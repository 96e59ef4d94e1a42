// Misuse of the task layer gets a std::logic_error with a message, never undefined behaviour.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/probes.hpp"

namespace {

using probes::Counts;
using probes::ProbeFuture;
using probes::ProbeSchedule;

template <class F>
std::string logic_error_of(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "(no std::logic_error thrown)";
}

bool mentions(const std::string& message, const char* what) { return message.find(what) != std::string::npos; }

TEST(Misuse, RunningOrSchedulingAnEmptyTaskThrows) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  karx::Task<> moved = std::move(task);
  EXPECT_TRUE(mentions(logic_error_of([&, &task = task] { task.run(); }), "empty"))
      << logic_error_of([&, &task = task] { task.run(); });
  EXPECT_TRUE(mentions(logic_error_of([&, &task = task] { task.schedule(); }), "empty"));
  EXPECT_TRUE(mentions(logic_error_of([&, &task = task] { (void)task.waker(); }), "empty"));
  moved.run();
  EXPECT_TRUE(mentions(logic_error_of([&] { moved.run(); }), "already run"));
  karx::Task<> none;
  EXPECT_FALSE(static_cast<bool>(none));
  EXPECT_THROW(none.run(), std::logic_error);
  none.cancel();  // canceling nothing is allowed
  EXPECT_EQ(c.polls, 1);
  EXPECT_EQ(c.schedules, 0);
}

TEST(Misuse, AwaitingAHandleAgainAfterItYieldedThrows) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  task.run();
  ASSERT_TRUE(probes::poll_once(handle).is_ready());
  std::string message = logic_error_of([&, &handle = handle] { (void)probes::poll_once(handle); });
  EXPECT_TRUE(mentions(message, "already yielded")) << message;
}

TEST(Misuse, AwaitingAHandleAgainAfterCancelThrows) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  task.cancel();
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_FALSE(r.value().has_value());
  EXPECT_THROW((void)probes::poll_once(handle), std::logic_error);
}

TEST(Misuse, AwaitingAMovedFromHandleThrows) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c});
  auto other = std::move(handle);
  std::string message = logic_error_of([&, &handle = handle] { (void)probes::poll_once(handle); });
  EXPECT_TRUE(mentions(message, "empty")) << message;
  other.detach();
  EXPECT_THROW((void)probes::poll_once(other), std::logic_error);
  karx::JoinHandle<int> none;
  EXPECT_THROW((void)probes::poll_once(none), std::logic_error);
  EXPECT_TRUE(mentions(logic_error_of([&] { (void)none.waker(); }), "empty"));
  none.cancel();  // nothing to cancel: allowed
  none.detach();
}

TEST(Misuse, TagOfAnEmptyHandleOrTaskThrows) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c}, 5);
  task.run();
  ASSERT_TRUE(probes::poll_once(handle).is_ready());
  EXPECT_THROW((void)handle.tag(), std::logic_error);
  EXPECT_THROW((void)task.tag(), std::logic_error);
}

karx::Async<int> one() { co_return 1; }

TEST(Misuse, PollingAFinishedAsyncThrows) {
  auto a = one();
  ASSERT_TRUE(probes::poll_once(a).is_ready());
  std::string message = logic_error_of([&] { (void)probes::poll_once(a); });
  EXPECT_TRUE(mentions(message, "finished")) << message;
  auto b = std::move(a);
  EXPECT_THROW((void)probes::poll_once(a), std::logic_error);
}

karx::Async<> nothing() { co_return; }

// Calls `spawn_one(rt)` until the runtime refuses (it is being destroyed); returns the
// refusal's message.
karx::Async<std::string> spawn_until_refused(karx::Runtime* rt, std::atomic<bool>* started,
                                             std::function<void(karx::Runtime&)> spawn_one) {
  started->store(true);
  for (;;) {
    try {
      spawn_one(*rt);
    } catch (const std::logic_error& e) {
      co_return e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Destroys a runtime while one of its tasks keeps calling `spawn_one`; the refusal's message.
std::optional<std::string> refusal_during_destruction(std::function<void(karx::Runtime&)> spawn_one) {
  karx::RuntimeOptions o;
  o.processors = 2;
  auto rt = std::make_unique<karx::Runtime>(o);
  std::atomic<bool> started{false};
  auto handle = rt->spawn(spawn_until_refused(rt.get(), &started, std::move(spawn_one)));
  while (!started.load()) std::this_thread::yield();
  // The destructor waits for the poll in progress, which spawns until it is refused.
  rt.reset();
  return karx::block_on(std::move(handle));
}

TEST(Misuse, SpawningOntoARuntimeBeingDestroyedThrows) {
  std::optional<std::string> message =
      refusal_during_destruction([](karx::Runtime& rt) { rt.spawn(nothing()).detach(); });
  ASSERT_TRUE(message.has_value()) << "the task finished its poll before the runtime went";
  EXPECT_TRUE(mentions(*message, "being destroyed")) << *message;
}

TEST(Misuse, SpawnBlockingOntoARuntimeBeingDestroyedThrows) {
  std::optional<std::string> message =
      refusal_during_destruction([](karx::Runtime& rt) { rt.spawn_blocking([] { return 0; }).detach(); });
  ASSERT_TRUE(message.has_value()) << "the task finished its poll before the runtime went";
  EXPECT_TRUE(mentions(*message, "being destroyed")) << *message;
}

// The message of the std::invalid_argument that constructing a Runtime with `o` throws.
std::string invalid_option(const karx::RuntimeOptions& o) {
  try {
    karx::Runtime rt(o);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

TEST(Misuse, EachOptionOutOfRangeSaysWhichAndWhy) {
  karx::RuntimeOptions o;
  o.processors = 4;
  o.max_threads = 4;
  std::string m = invalid_option(o);
  EXPECT_TRUE(mentions(m, "max_threads (4)") && mentions(m, "processors + 1 (5)")) << m;

  o = {};
  o.processors = 2000;
  m = invalid_option(o);
  EXPECT_TRUE(mentions(m, "processors") && mentions(m, "1024") && mentions(m, "2000")) << m;

  for (auto bad : {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-5)}) {
    o = {};
    o.processors = 1;
    o.blocking_threshold = bad;
    m = invalid_option(o);
    EXPECT_TRUE(mentions(m, "blocking_threshold must be positive")) << m;
    o = {};
    o.processors = 1;
    o.idle_thread_timeout = bad;
    m = invalid_option(o);
    EXPECT_TRUE(mentions(m, "idle_thread_timeout must be positive")) << m;
  }
}

// Options at the ends of their ranges work: a timeout that never expires (no deadline may
// overflow: UBSan would report it), a thread cap no machine reaches (nothing is allocated in
// proportion to it), a threshold that never hands a CPU-bound poll off.
TEST(Misuse, OptionsAtTheEndsOfTheirRangesWork) {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.max_threads = std::numeric_limits<unsigned>::max();
  o.idle_thread_timeout = std::chrono::nanoseconds::max();
  o.blocking_threshold = std::chrono::nanoseconds::max();
  karx::Runtime rt(o);
  // Spare workers and pool threads park with the endless timeout; a blocking call still
  // hands its processor over (it says so; the threshold plays no part).
  auto blocked = rt.spawn([]() -> karx::Async<int> {
    karx::blocking([] { std::this_thread::sleep_for(std::chrono::milliseconds(5)); });
    co_return 1;
  }());
  auto pooled = rt.spawn_blocking([] { return 2; });
  EXPECT_EQ(rt.block_on(std::move(blocked)), std::optional<int>(1));
  EXPECT_EQ(karx::block_on(std::move(pooled)), std::optional<int>(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // let threads park
  EXPECT_GE(rt.metrics().blocked_handoffs, 1u);
}

TEST(Misuse, ABadKarxProcsSaysWhatItHoldsAndWhatIsAllowed) {
  for (const char* bad : {"three", "0", "-2", "2x", "", "5000", "99999999999999999999", " -18446744073709551615", " 3",
                          "3 ", "+3", "0x4"}) {
    ::setenv("KARX_PROCS", bad, 1);
    const std::string m = invalid_option(karx::RuntimeOptions{});
    if (*bad == '\0') {
      // Empty counts as unset: the default (hardware threads) applies.
      EXPECT_EQ(m, "(no std::invalid_argument thrown)") << "KARX_PROCS=\"\"";
    } else {
      EXPECT_TRUE(mentions(m, "KARX_PROCS") && mentions(m, bad)) << "KARX_PROCS=" << bad << ": " << m;
    }
  }
  ::unsetenv("KARX_PROCS");
}

}  // namespace

namespace {

// Destroying a runtime from one of its own threads cannot work (the destructor would wait for
// that very thread), and a destructor cannot throw: it stops with a karx diagnostic, never a
// hang, a use after free or a silent leak. Each case in a child process (a death test).
constexpr const char* kSelfDestruction = "karx: fatal: a karx::Runtime is being destroyed from one of its own threads";

TEST(MisuseDeathTest, DestroyingARuntimeFromOneOfItsTasksStopsWithADiagnostic) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        alarm(20);  // a hang fails the test (SIGALRM) instead of blocking it
        auto* rt = new karx::Runtime(karx::RuntimeOptions{.processors = 1});
        auto h = rt->spawn([](karx::Runtime* self) -> karx::Async<void> {
          delete self;
          co_return;
        }(rt));
        (void)karx::block_on(std::move(h));
      },
      kSelfDestruction);
}

TEST(MisuseDeathTest, DestroyingARuntimeFromItsBlockOnStopsWithADiagnostic) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        alarm(20);
        auto* rt = new karx::Runtime(karx::RuntimeOptions{.processors = 1});
        rt->block_on([](karx::Runtime* self) -> karx::Async<void> {
          delete self;
          co_return;
        }(rt));
      },
      kSelfDestruction);
}

TEST(MisuseDeathTest, DestroyingARuntimeFromASpawnBlockingClosureStopsWithADiagnostic) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        alarm(20);
        auto* rt = new karx::Runtime(karx::RuntimeOptions{.processors = 1});
        auto h = rt->spawn_blocking([rt] { delete rt; });
        (void)karx::block_on(std::move(h));
      },
      kSelfDestruction);
}

}  // namespace
