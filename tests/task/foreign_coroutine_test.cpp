// Interoperation with other coroutine types: JoinHandle::is_finished.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/gate.hpp"
#include "support/probes.hpp"
#include "support/wake_counter.hpp"

namespace {

using namespace std::chrono_literals;
using probes::Boom;
using probes::Counts;
using probes::kTimeout;

// ============================================================================================
// JoinHandle::is_finished.
// ============================================================================================

TEST(JoinHandleIsFinished, FalseUntilTheTaskCompletesThenTheHandleYields) {
  Counts c;
  std::deque<karx::Task<>> queue;
  karx::Waker kept = karx::noop_waker();
  auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1, 5, false, &kept}, probes::ProbeSchedule{&c, &queue});
  EXPECT_FALSE(handle.is_finished());  // queued, not run
  task.run();
  EXPECT_FALSE(handle.is_finished());  // pending, idle
  kept.wake();
  ASSERT_EQ(queue.size(), 1u);
  EXPECT_FALSE(handle.is_finished());  // scheduled again
  probes::drain(queue);
  EXPECT_TRUE(handle.is_finished());
  handle.cancel();  // after completion: nothing, the output is still delivered
  EXPECT_TRUE(handle.is_finished());
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value()->value, 5);
  EXPECT_THROW((void)handle.is_finished(), std::logic_error);  // yielded
  try {
    (void)handle.is_finished();
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("is_finished"), std::string::npos) << e.what();
  }
  karx::JoinHandle<int> empty;
  EXPECT_THROW((void)empty.is_finished(), std::logic_error);
}

TEST(JoinHandleIsFinished, AfterCancelOnlyOnceTheFutureIsDestroyed) {
  Counts c;
  std::deque<karx::Task<>> queue;
  {
    // Canceled while queued: the queued run destroys the future.
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1}, probes::ProbeSchedule{&c, &queue});
    handle.cancel();
    EXPECT_FALSE(handle.is_finished());
    EXPECT_EQ(c.future_drops.load(), 0);
    task.run();
    EXPECT_EQ(c.future_drops.load(), 1);
    EXPECT_TRUE(handle.is_finished());
    EXPECT_FALSE(probes::poll_once(handle).value().has_value());
  }
  {
    // Canceled while idle: scheduled once more; that run destroys it.
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1}, probes::ProbeSchedule{&c, &queue});
    task.run();
    handle.cancel();
    EXPECT_EQ(queue.size(), 1u);
    EXPECT_FALSE(handle.is_finished());
    probes::drain(queue);
    EXPECT_TRUE(handle.is_finished());
  }
  {
    // Task::cancel destroys it at once.
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1}, probes::ProbeSchedule{&c, &queue});
    task.cancel();
    EXPECT_TRUE(handle.is_finished());
    EXPECT_FALSE(probes::poll_once(handle).value().has_value());
  }
  {
    // Canceled during its own poll: not finished until that run has destroyed the future.
    struct CancelsItself {
      karx::JoinHandle<int>* handle;
      bool* finished_in_poll;
      probes::DropCounter drop;
      karx::Poll<int> poll(karx::Context&) {
        handle->cancel();
        *finished_in_poll = handle->is_finished();
        return karx::pending;
      }
    };
    karx::JoinHandle<int> handle;
    bool finished_in_poll = true;
    const int drops = c.future_drops.load();
    auto [task, h] = karx::spawn(CancelsItself{&handle, &finished_in_poll, probes::DropCounter(c.future_drops)},
                                 probes::ProbeSchedule{&c, &queue});
    handle = std::move(h);
    task.run();
    EXPECT_FALSE(finished_in_poll);
    EXPECT_EQ(c.future_drops.load(), drops + 1);
    EXPECT_TRUE(handle.is_finished());
  }
}

TEST(JoinHandleIsFinished, TrueMeansThePollIsReadyAndSeesWhatTheTaskDid) {
  for (int i = 0; i < 2000; ++i) {
    int written = 0;  // plain memory: the acquire of is_finished must order it
    struct Writes {
      int* out;
      int value;
      karx::Poll<int> poll(karx::Context&) {
        *out = value;
        return karx::ready(value);
      }
    };
    auto [task, handle] = karx::spawn(Writes{&written, i + 1}, [](karx::Task<>) {});
    std::thread runner([t = std::move(task)]() mutable { t.run(); });
    while (!handle.is_finished()) std::this_thread::yield();
    EXPECT_EQ(written, i + 1);
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready()) << "iteration " << i;
    EXPECT_EQ(r.value(), std::optional<int>(i + 1));
    runner.join();

    // Canceled on another thread: true once the future's destructor has run.
    struct Destroyed {
      int* out;
      bool live = true;
      Destroyed(int* o) : out(o) {}
      Destroyed(Destroyed&& d) noexcept : out(d.out) { d.live = false; }
      ~Destroyed() {
        if (live) *out = -1;
      }
      karx::Poll<int> poll(karx::Context&) { return karx::pending; }
    };
    auto [task2, handle2] = karx::spawn(Destroyed(&written), [](karx::Task<>) {});
    std::thread canceler([t = std::move(task2)]() mutable { t.cancel(); });
    while (!handle2.is_finished()) std::this_thread::yield();
    EXPECT_EQ(written, -1);
    EXPECT_TRUE(probes::poll_once(handle2).is_ready());
    canceler.join();
    if (HasFailure()) break;
  }
}

}  // namespace
