// Async<T>: lazy coroutines that are Futures, awaiting Futures, Asyncs and JoinHandles.
#include <gtest/gtest.h>

#include <coroutine>
#include <deque>
#include <memory>
#include <stdexcept>

#include "support/probes.hpp"

namespace {

using probes::Counts;
using probes::ProbeFuture;

// A future that is pending until `open` is set, then ready with `value`.
struct Gate {
  bool* open;
  int value;
  int* polls;
  karx::Poll<int> poll(karx::Context&) {
    ++*polls;
    if (!*open) return karx::pending;
    return karx::ready(value);
  }
};

karx::Async<int> leaf(bool* open, int* polls, int* resumed) {
  int v = co_await Gate{open, 10, polls};
  ++*resumed;
  co_return v + 1;
}
karx::Async<int> middle(bool* open, int* polls, int* resumed) {
  int v = co_await leaf(open, polls, resumed);
  ++*resumed;
  co_return v * 2;
}
karx::Async<int> top(bool* open, int* polls, int* resumed) {
  int v = co_await middle(open, polls, resumed);
  ++*resumed;
  co_return v + 100;
}

TEST(Async, IsLazy) {
  int started = 0;
  auto make = [&]() -> karx::Async<int> {
    ++started;
    co_return 1;
  };
  auto a = make();
  EXPECT_EQ(started, 0);
  EXPECT_TRUE(probes::poll_once(a).is_ready());
  EXPECT_EQ(started, 1);
}

TEST(Async, PendingLeafSuspendsTheChainAndThenResumesTheInnermostFrame) {
  bool open = false;
  int polls = 0, resumed = 0;
  auto a = top(&open, &polls, &resumed);
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  EXPECT_EQ(polls, 1);
  EXPECT_EQ(resumed, 0);
  EXPECT_TRUE(probes::poll_once(a).is_pending());  // re-polls the leaf future only
  EXPECT_EQ(polls, 2);
  EXPECT_EQ(resumed, 0);
  open = true;
  auto r = probes::poll_once(a);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), (10 + 1) * 2 + 100);
  EXPECT_EQ(polls, 3);
  EXPECT_EQ(resumed, 3);  // each frame resumed exactly once
}

TEST(Async, TheContextOfEachPollReachesTheLeaf) {
  struct SaveWaker {
    karx::Waker* out;
    int* polls;
    karx::Poll<int> poll(karx::Context& cx) {
      *out = cx.waker();
      return ++*polls < 3 ? karx::Poll<int>(karx::pending) : karx::ready(*polls);
    }
  };
  karx::Waker seen = karx::noop_waker();
  int polls = 0;
  auto inner = [&]() -> karx::Async<int> { co_return co_await SaveWaker{&seen, &polls}; };
  auto outer = [&]() -> karx::Async<int> { co_return co_await inner(); };
  auto a = outer();
  int wakes1 = 0, wakes2 = 0;
  karx::Waker w1 = karx::waker_fn([&] { ++wakes1; });
  karx::Waker w2 = karx::waker_fn([&] { ++wakes2; });
  EXPECT_TRUE(probes::poll_with(a, w1).is_pending());
  EXPECT_TRUE(seen.will_wake(w1));
  EXPECT_TRUE(probes::poll_with(a, w2).is_pending());
  EXPECT_TRUE(seen.will_wake(w2));
  EXPECT_TRUE(probes::poll_with(a, w1).is_ready());
}

TEST(Async, AnLvalueFutureIsPolledInPlace) {
  struct Counter {
    int polls = 0;
    karx::Poll<int> poll(karx::Context&) {
      ++polls;
      return polls < 3 ? karx::Poll<int>(karx::pending) : karx::ready(polls);
    }
  };
  Counter counter;
  // A capturing lambda coroutine reads its captures through the closure: keep it alive.
  auto body = [&]() -> karx::Async<int> { co_return co_await counter; };
  auto a = body();
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  auto r = probes::poll_once(a);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 3);
  EXPECT_EQ(counter.polls, 3);  // the same object all along
}

TEST(Async, AnLvalueAsyncRunsInPlace) {
  auto child = []() -> karx::Async<int> { co_return 5; }();
  auto body = [&]() -> karx::Async<int> { co_return co_await child + 1; };
  auto parent = body();
  auto r = probes::poll_once(parent);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 6);
}

karx::Async<int> thrower(bool* open, int* polls) {
  (void)co_await Gate{open, 0, polls};
  throw std::runtime_error("deep failure");
}
karx::Async<int> passes_through(bool* open, int* polls) { co_return co_await thrower(open, polls); }
karx::Async<int> catches(bool* open, int* polls) {
  try {
    co_return co_await passes_through(open, polls);
  } catch (const std::runtime_error& e) {
    co_return std::string(e.what()) == "deep failure" ? -1 : -2;
  }
}

TEST(Async, ExceptionsPropagateThroughTheChain) {
  bool open = false;
  int polls = 0;
  auto a = passes_through(&open, &polls);
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  open = true;
  EXPECT_THROW((void)probes::poll_once(a), std::runtime_error);
  EXPECT_THROW((void)probes::poll_once(a), std::logic_error);  // finished
}

TEST(Async, ExceptionsCanBeCaughtInAnOuterFrame) {
  bool open = false;
  int polls = 0;
  auto a = catches(&open, &polls);
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  open = true;
  auto r = probes::poll_once(a);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), -1);
}

TEST(Async, AnExceptionFromARepolledLeafReachesTheCoroutine) {
  struct FailsOnSecondPoll {
    int polls = 0;
    karx::Poll<int> poll(karx::Context&) {
      if (++polls == 2) throw std::out_of_range("second poll");
      return karx::pending;
    }
  };
  auto a = []() -> karx::Async<int> {
    try {
      co_return co_await FailsOnSecondPoll{};
    } catch (const std::out_of_range&) {
      co_return 77;
    }
  }();
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  auto r = probes::poll_once(a);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 77);
}

karx::Async<int> deep(int n) {
  if (n == 0) co_return 0;
  co_return 1 + co_await deep(n - 1);
}

TEST(Async, DeepChainsUseNoNativeStack) {
  auto a = deep(100000);
  auto r = probes::poll_once(a);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 100000);
}

TEST(Async, DestroyingASuspendedChainDestroysEveryFrameAndTheLeafFuture) {
  Counts c;
  auto inner = [&c]() -> karx::Async<int> {
    auto out = co_await ProbeFuture{&c, 100, 1};
    co_return out.value;
  };
  auto guard = std::make_shared<int>(0);
  std::weak_ptr<int> alive = guard;
  auto body = [&inner](std::shared_ptr<int> g) -> karx::Async<int> {
    (void)g;  // a coroutine parameter lives in the frame
    co_return co_await inner();
  };
  {
    auto outer = body(std::move(guard));
    EXPECT_TRUE(probes::poll_once(outer).is_pending());
    EXPECT_EQ(c.polls, 1);
    EXPECT_EQ(c.future_drops, 0);
    EXPECT_FALSE(alive.expired());
  }
  EXPECT_EQ(c.future_drops, 1);  // the leaf future, in the inner frame
  EXPECT_TRUE(alive.expired());  // the outer frame's parameter
}

TEST(Async, VoidAsync) {
  int steps = 0;
  auto inner = [&]() -> karx::Async<> {
    ++steps;
    co_return;
  };
  auto outer = [&]() -> karx::Async<> {
    ++steps;
    co_await inner();
    ++steps;
  };
  auto a = outer();
  EXPECT_TRUE(probes::poll_once(a).is_ready());
  EXPECT_EQ(steps, 3);
}

TEST(Async, AwaitsAJoinHandleOfAnotherTask) {
  std::deque<karx::Task<>> queue;
  auto schedule = [&queue](karx::Task<> t) { queue.push_back(std::move(t)); };
  Counts c;
  karx::Waker child_waker = karx::noop_waker();
  auto [child_task, child] = karx::spawn(ProbeFuture{&c, 1, 20, false, &child_waker}, schedule);
  auto [parent_task, parent] = karx::spawn(
      [](karx::JoinHandle<probes::Output> h) -> karx::Async<int> {
        std::optional<probes::Output> v = co_await h;
        co_return v ? v->value + 1 : -1;
      }(std::move(child)),
      schedule);
  child_task.schedule();
  parent_task.schedule();
  EXPECT_EQ(probes::drain(queue), 2);
  EXPECT_EQ(c.polls, 1);
  EXPECT_TRUE(probes::poll_once(parent).is_pending());
  // The child's event fires: it completes, and its completion wakes the parent.
  child_waker.wake();
  EXPECT_EQ(probes::drain(queue), 2);
  EXPECT_EQ(c.polls, 2);
  auto r = probes::poll_once(parent);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>(21));
  EXPECT_EQ(c.output_drops, 1);
}

// A chain polled as a plain future by a frame of another chain (as a combinator would) runs
// its own poll inside ours: each keeps its own leaf and exceptions, and ours carries on after.
struct PollsAnAsync {
  karx::Async<int>* inner;
  karx::Poll<int> poll(karx::Context& cx) { return inner->poll(cx); }
};

karx::Async<int> throws_when_open(bool* open, int* polls) {
  int v = co_await Gate{open, 1, polls};
  if (v == 1) throw std::runtime_error("inner");
  co_return v;
}

TEST(Async, AChainPolledInsideAnotherKeepsItsOwnStateAndExceptions) {
  bool inner_open = false, outer_open = false;
  int inner_polls = 0, outer_polls = 0, resumed = 0;
  karx::Async<int> inner = leaf(&inner_open, &inner_polls, &resumed);
  auto outer = [](karx::Async<int>* in, bool* open, int* polls) -> karx::Async<int> {
    int a = co_await PollsAnAsync{in};      // the inner chain, suspended inside ours
    int b = co_await Gate{open, 5, polls};  // then a leaf of our own
    co_return a + b;
  }(&inner, &outer_open, &outer_polls);
  EXPECT_TRUE(probes::poll_once(outer).is_pending());
  EXPECT_EQ(inner_polls, 1);
  inner_open = true;
  EXPECT_TRUE(probes::poll_once(outer).is_pending());  // the inner finishes; ours waits on its gate
  EXPECT_EQ(resumed, 1);
  EXPECT_EQ(outer_polls, 1);
  outer_open = true;
  auto r = probes::poll_once(outer);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 11 + 5);

  // An exception from the inner chain reaches the outer coroutine, which can catch it.
  bool open = false;
  int polls = 0;
  karx::Async<int> failing = throws_when_open(&open, &polls);
  auto catcher = [](karx::Async<int>* in) -> karx::Async<int> {
    try {
      co_return co_await PollsAnAsync{in};
    } catch (const std::runtime_error&) {
      co_return -1;
    }
  }(&failing);
  EXPECT_TRUE(probes::poll_once(catcher).is_pending());
  open = true;
  auto caught = probes::poll_once(catcher);
  ASSERT_TRUE(caught.is_ready());
  EXPECT_EQ(caught.value(), -1);
}

// An Async polled by hand, then spawned: the task goes on from where the chain was suspended
// (the task is built in the frame's block, and the chain's root moves into it).
TEST(Async, AnAsyncPolledByHandThenSpawnedGoesOnWhereItWas) {
  bool open = false;
  int polls = 0, resumed = 0;
  auto a = top(&open, &polls, &resumed);
  EXPECT_TRUE(probes::poll_once(a).is_pending());
  EXPECT_EQ(polls, 1);
  std::deque<karx::Task<>> queue;
  auto [task, handle] = karx::spawn(std::move(a), [&queue](karx::Task<> t) { queue.push_back(std::move(t)); });
  open = true;
  task.run();
  EXPECT_EQ(polls, 2) << "the leaf is re-polled, not the chain restarted";
  EXPECT_EQ(resumed, 3);
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), std::optional<int>((10 + 1) * 2 + 100));
}

}  // namespace
