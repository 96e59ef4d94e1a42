// The thread cap may delay work, never strand it: work queued while the cap is reached must
// still run once a thread of the other kind is idle, because the runtime asks that idle thread
// to leave. Each test fills the cap with one kind of thread (a worker or the blocking pool's)
// and queues work that needs the other kind. idle_thread_timeout is an hour on purpose, so no
// timeout makes the room instead. A reduction of what the soak test found.
#include <gtest/gtest.h>

#include <chrono>
#include <coroutine>
#include <optional>
#include <thread>
#include <utility>

#include "support/soak_wait.hpp"

import karx;

namespace {

using namespace std::chrono_literals;
using soak::await_for;
using soak::eventually;

karx::Async<long> seven() { co_return 7; }

karx::Async<long> sleeps_in_poll_for(std::chrono::milliseconds d) {
  std::this_thread::sleep_for(d);  // holds the worker without telling the runtime
  co_return 1;
}

karx::RuntimeOptions one_spare_thread() {
  karx::RuntimeOptions o;
  o.processors = 1;
  o.max_threads = 2;           // the monitor and one more thread
  o.blocking_threshold = 60s;  // no handoff: it could not start a thread anyway
  // Idle threads never time out here: only the runtime asking an idle thread of the other
  // kind to leave can make room under the cap.
  o.idle_thread_timeout = 1h;
  return o;
}

TEST(ThreadCap, ATaskSpawnedWhileTheBlockingPoolHoldsTheCapRunsLater) {
  karx::Runtime rt(one_spare_thread());
  auto closure = rt.spawn_blocking([] {
    std::this_thread::sleep_for(100ms);
    return 1;
  });
  // The blocking pool's thread is the last one the cap allows: no worker can start now.
  ASSERT_TRUE(eventually([&] { return rt.metrics().threads == 2; }, 5s));
  auto task = rt.spawn(seven());
  EXPECT_EQ(karx::block_on(std::move(closure)), std::optional<int>(1));
  // The pool thread is free (idle, holding the last place under the cap): the task must run.
  const auto r = await_for(task, 10s);
  ASSERT_TRUE(r.has_value()) << "the task never ran: threads " << rt.metrics().threads << ", injector "
                             << rt.metrics().injector_depth;
  EXPECT_EQ(*r, std::optional<long>(7));
}

TEST(ThreadCap, SpawnBlockingWhileAWorkerHoldsTheCapRunsLater) {
  karx::Runtime rt(one_spare_thread());
  auto busy = rt.spawn(sleeps_in_poll_for(100ms));
  // The worker is the last thread the cap allows: no blocking-pool thread can start now.
  ASSERT_TRUE(eventually([&] { return rt.metrics().tasks_polled == 1; }, 5s));
  auto closure = rt.spawn_blocking([] { return 7L; });
  EXPECT_EQ(karx::block_on(std::move(busy)), std::optional<long>(1));
  // The worker is free (idle, holding the last place under the cap): the closure must run.
  const auto r = await_for(closure, 10s);
  ASSERT_TRUE(r.has_value()) << "the closure never ran: threads " << rt.metrics().threads;
  EXPECT_EQ(*r, std::optional<long>(7));
}

}  // namespace
