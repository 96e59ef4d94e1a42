// Runtime::current() and exec(): inside a runtime's tasks (on its workers, its blocking pool and
// in its block_on) the current runtime is that runtime, and exec() spawns onto it; elsewhere
// there is none, and exec() spawns onto the global runtime.
#include <gtest/gtest.h>

#include <coroutine>

import karx;

namespace {

karx::RuntimeOptions two_processors() {
  karx::RuntimeOptions o;
  o.processors = 2;
  return o;
}

karx::Async<karx::Runtime*> report_current() { co_return karx::Runtime::current(); }

TEST(CurrentRuntime, IsNullOutsideAnyRuntime) { EXPECT_EQ(karx::Runtime::current(), nullptr); }

TEST(CurrentRuntime, IsTheRuntimeInItsTasksAndBlockOnAndNullAfter) {
  karx::Runtime rt(two_processors());
  EXPECT_EQ(rt.block_on(report_current()), &rt) << "the root of block_on runs on the calling thread";
  EXPECT_EQ(karx::Runtime::current(), nullptr) << "block_on has returned";
  // A task that a worker runs (the handle is awaited from outside, so no guest runs it).
  auto handle = rt.spawn(report_current());
  EXPECT_EQ(karx::block_on(std::move(handle)), std::optional<karx::Runtime*>(&rt));
  auto in_pool = rt.spawn_blocking([] { return karx::Runtime::current(); });
  EXPECT_EQ(karx::block_on(std::move(in_pool)), std::optional<karx::Runtime*>(&rt));
  EXPECT_EQ(karx::Runtime::current(), nullptr);
}

TEST(CurrentRuntime, ExecInsideATaskSpawnsOntoThatRuntime) {
  karx::Runtime rt(two_processors());
  const std::uint64_t before = rt.metrics().tasks_spawned;
  karx::Runtime* seen = rt.block_on([]() -> karx::Async<karx::Runtime*> {
    auto child = karx::exec(report_current());
    auto where = co_await child;
    co_return where.value_or(nullptr);
  }());
  EXPECT_EQ(seen, &rt) << "exec inside a task of rt must spawn onto rt, not the global runtime";
  EXPECT_EQ(rt.metrics().tasks_spawned, before + 2) << "the root and the exec'd child";
}

TEST(CurrentRuntime, NestedBlockOnSeesTheInnerRuntimeThenTheOuterAgain) {
  karx::Runtime outer(two_processors());
  karx::Runtime inner(two_processors());
  struct Seen {
    karx::Runtime* before;
    karx::Runtime* nested;
    karx::Runtime* after;
  };
  const Seen seen = outer.block_on([](karx::Runtime* in) -> karx::Async<Seen> {
    Seen s{karx::Runtime::current(), nullptr, nullptr};
    s.nested = in->block_on(report_current());
    s.after = karx::Runtime::current();
    co_return s;
  }(&inner));
  EXPECT_EQ(seen.before, &outer);
  EXPECT_EQ(seen.nested, &inner);
  EXPECT_EQ(seen.after, &outer);
}

TEST(CurrentRuntime, ExecOutsideAnyRuntimeGoesToTheGlobalRuntime) {
  auto handle = karx::exec(report_current());
  EXPECT_EQ(karx::block_on(std::move(handle)), std::optional<karx::Runtime*>(&karx::global_runtime()));
}

}  // namespace
