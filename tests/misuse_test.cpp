// Misuse of the task layer gets a std::logic_error with a message, never undefined behaviour.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <memory>
#include <optional>
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

// Spawns until the runtime refuses (it is being destroyed); returns the refusal's message.
karx::Async<std::string> spawn_until_refused(karx::Runtime* rt, std::atomic<bool>* started) {
  started->store(true);
  for (;;) {
    try {
      rt->spawn(nothing()).detach();
    } catch (const std::logic_error& e) {
      co_return e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(Misuse, SpawningOntoARuntimeBeingDestroyedThrows) {
  karx::RuntimeOptions o;
  o.processors = 2;
  auto rt = std::make_unique<karx::Runtime>(o);
  std::atomic<bool> started{false};
  auto handle = rt->spawn(spawn_until_refused(rt.get(), &started));
  while (!started.load()) std::this_thread::yield();
  // The destructor waits for the poll in progress, which spawns until it is refused.
  rt.reset();
  std::optional<std::string> message = karx::block_on(std::move(handle));
  ASSERT_TRUE(message.has_value()) << "the task finished its poll before the runtime went";
  EXPECT_TRUE(mentions(*message, "being destroyed")) << *message;
}

}  // namespace
