// Misuse of the task layer gets a std::logic_error with a message, never undefined behaviour.
#include <gtest/gtest.h>

#include <coroutine>
#include <string>

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

}  // namespace
