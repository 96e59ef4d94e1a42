// The runtime destroyed with work in flight, one kind of work per case: tasks queued and never
// run, pending, running (yielding in a loop), blocked in karx::blocking, blocked in a poll the
// runtime is not told about, sleeping on a timer, waiting on each other, and spawn_blocking
// calls in progress. In every case:
// - the destructor returns (no hang), without waiting for timers;
// - every future is destroyed exactly once;
// - every handle resolves after the runtime is gone, awaited from this thread, from another
//   thread and from a task of a second runtime: "canceled", or the value of a poll that the
//   destructor waited for;
// - wakers that outlive the runtime are woken from another thread and dropped (no-ops);
// - no timer stays registered; ASan and TSan see no use after free and no race.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "support/probes.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

enum class Kind {
  queued,
  pending,
  running,
  blocking_call,
  blocked_poll,
  sleeping,
  waiting_on_each_other,
  spawn_blocking
};

std::string name_of(Kind k) {
  switch (k) {
    case Kind::queued:
      return "Queued";
    case Kind::pending:
      return "Pending";
    case Kind::running:
      return "Running";
    case Kind::blocking_call:
      return "BlockingCall";
    case Kind::blocked_poll:
      return "BlockedPoll";
    case Kind::sleeping:
      return "Sleeping";
    case Kind::waiting_on_each_other:
      return "WaitingOnEachOther";
    case Kind::spawn_blocking:
      return "SpawnBlocking";
  }
  return "?";
}

// gtest prints the parameter with this (test names and ctest's names show the kind).
void PrintTo(Kind k, std::ostream* os) { *os << name_of(k); }

// What the tasks of one case share: the counters, and the wakers they leave behind.
struct Shared {
  std::atomic<int> futures_destroyed{0};
  std::atomic<int> arrived{0};  // tasks that reached the state the case is about
  std::atomic<int> polls{0};
  std::mutex mu;
  std::vector<karx::Waker> wakers;  // clones kept by "event sources" that outlive the runtime
};

// Pending for ever; keeps a clone of its waker in `shared`, as an event source would.
struct NeverReady {
  Shared* shared;
  karx::Poll<> poll(karx::Context& cx) {
    {
      std::lock_guard lock(shared->mu);
      shared->wakers.push_back(cx.waker());
    }
    shared->arrived.fetch_add(1);
    return karx::pending;
  }
};

// Each coroutine takes its DropCounter by value, so it lives in the frame from the call on:
// a task destroyed before its first poll counts too.
karx::Async<int> pends(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  co_await NeverReady{s};
  co_return 1;
}

karx::Async<int> runs_for_ever(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  for (;;) co_await karx::yield_now();
}

karx::Async<int> calls_blocking(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  karx::blocking([] { std::this_thread::sleep_for(150ms); });
  co_return 1;  // the destructor waits for this poll, so the task completes
}

karx::Async<int> blocks_in_poll(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  std::this_thread::sleep_for(150ms);  // a blocking call the runtime is not told about
  co_return 1;
}

// Holds its processor for 150 ms computing: no hand-off takes it before the threshold (a
// blocked thread would be handed off within about a millisecond, whatever the threshold).
karx::Async<int> computes_in_poll(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  const auto until = Clock::now() + 150ms;
  while (Clock::now() < until) {
  }
  co_return 1;
}

karx::Async<int> sleeps(probes::DropCounter, Shared* s) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  co_await karx::sleep_for(1h);  // the destructor must not wait for this
  co_return 1;
}

karx::Async<int> awaits(probes::DropCounter, Shared* s, karx::JoinHandle<int> other) {
  s->polls.fetch_add(1);
  s->arrived.fetch_add(1);
  auto r = co_await other;  // `other` waits on this task's partner, which never comes
  co_return r.value_or(-1);
}

class ShutdownFault : public ::testing::TestWithParam<Kind> {};

TEST_P(ShutdownFault, EveryFutureGoesOnceAndEveryHandleResolves) {
  const Kind kind = GetParam();
  const int n = 8;
  Shared s;
  std::vector<karx::JoinHandle<int>> handles;
  int expected_futures = 0;
  const std::size_t timers_before = karx::detail::timer_pending_count();

  // Spawns a coroutine that owns one DropCounter of `s`.
  const auto counter = [&] {
    ++expected_futures;
    return probes::DropCounter(s.futures_destroyed);
  };

  Clock::duration destruction_time{};
  {
    karx::RuntimeOptions o;
    o.processors = 2;
    // Long enough that a computing poll is never handed off: in the queued case, the queue
    // behind the busy processors stays queued.
    if (kind == Kind::queued) o.blocking_threshold = 1h;
    std::optional<karx::Runtime> runtime;
    runtime.emplace(o);
    karx::Runtime& rt = *runtime;

    int must_arrive = n;
    switch (kind) {
      case Kind::queued: {
        // Both processors are busy in polls; what is spawned next waits in the queues.
        for (int i = 0; i < 2; ++i) handles.push_back(rt.spawn(computes_in_poll(counter(), &s)));
        must_arrive = 2;
        break;
      }
      case Kind::pending:
        for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(pends(counter(), &s)));
        break;
      case Kind::running:
        for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(runs_for_ever(counter(), &s)));
        break;
      case Kind::blocking_call:
        for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(calls_blocking(counter(), &s)));
        break;
      case Kind::blocked_poll:
        for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(blocks_in_poll(counter(), &s)));
        break;
      case Kind::sleeping:
        for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(sleeps(counter(), &s)));
        break;
      case Kind::waiting_on_each_other:
        // Chains: each task awaits a pending one; the last link awaits nothing that comes.
        for (int i = 0; i < n / 2; ++i) {
          auto first = rt.spawn(pends(counter(), &s));
          handles.push_back(rt.spawn(awaits(counter(), &s, std::move(first))));
        }
        break;
      case Kind::spawn_blocking:
        for (int i = 0; i < n; ++i)
          handles.push_back(rt.spawn_blocking([&s, d = std::make_shared<probes::DropCounter>(counter())] {
            s.arrived.fetch_add(1);
            std::this_thread::sleep_for(150ms);
            return 1;
          }));
        break;
    }
    const auto deadline = Clock::now() + 30s;
    while (s.arrived.load() < must_arrive && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    ASSERT_GE(s.arrived.load(), must_arrive) << "the tasks never reached the state under test";
    if (kind == Kind::queued)
      for (int i = 0; i < n; ++i) handles.push_back(rt.spawn(pends(counter(), &s)));

    const auto start = Clock::now();
    runtime.reset();
    destruction_time = Clock::now() - start;
  }

  EXPECT_LT(destruction_time, 10s) << "the destructor waited for timers or hung on a task";
  EXPECT_EQ(s.futures_destroyed.load(), expected_futures) << "a future was leaked or destroyed twice";
  if (kind == Kind::queued) EXPECT_EQ(s.polls.load(), 2) << "a queued task was polled after the destructor began";

  // Wakers that outlived the runtime: wake them from another thread, then drop them.
  std::thread([&s] {
    std::lock_guard lock(s.mu);
    for (auto& w : s.wakers) w.wake();
    s.wakers.clear();
  }).join();

  // Every handle resolves: a third here, a third on another thread, a third in a task of a
  // second runtime. A poll the destructor waited for completed its task (value 1); every
  // other task was canceled.
  const bool completes = kind == Kind::blocking_call || kind == Kind::blocked_poll || kind == Kind::spawn_blocking;
  std::vector<std::optional<int>> results(handles.size());
  std::vector<karx::JoinHandle<int>> on_thread, on_runtime;
  for (std::size_t i = 0; i < handles.size(); ++i) {
    if (i % 3 == 0) results[i] = karx::block_on(std::move(handles[i]));
  }
  std::thread([&] {
    for (std::size_t i = 1; i < handles.size(); i += 3) results[i] = karx::block_on(std::move(handles[i]));
  }).join();
  {
    karx::RuntimeOptions o;
    o.processors = 1;
    karx::Runtime second(o);
    for (std::size_t i = 2; i < handles.size(); i += 3)
      results[i] = second.block_on([](karx::JoinHandle<int> h) -> karx::Async<std::optional<int>> {
        co_return co_await h;
      }(std::move(handles[i])));
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (kind == Kind::queued)
      EXPECT_EQ(results[i], i < 2 ? std::optional<int>(1) : std::nullopt) << "handle " << i;
    else
      EXPECT_EQ(results[i], completes ? std::optional<int>(1) : std::nullopt) << "handle " << i;
  }
  EXPECT_EQ(karx::detail::timer_pending_count(), timers_before) << "a destroyed sleep left its timer registered";
}

INSTANTIATE_TEST_SUITE_P(Kinds, ShutdownFault,
                         ::testing::Values(Kind::queued, Kind::pending, Kind::running, Kind::blocking_call,
                                           Kind::blocked_poll, Kind::sleeping, Kind::waiting_on_each_other,
                                           Kind::spawn_blocking),
                         [](const ::testing::TestParamInfo<Kind>& info) { return name_of(info.param); });

}  // namespace
