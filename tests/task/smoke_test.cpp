#include <gtest/gtest.h>

#include <coroutine>
#include <deque>

#include "support/probes.hpp"

namespace {

karx::Async<int> plus_one(int v) {
  probes::Counts counts;
  auto out = co_await probes::ProbeFuture{&counts, 0, v};
  co_return out.value + 1;
}

TEST(Smoke, SpawnRunJoinAnAsync) {
  std::deque<karx::Task<>> queue;
  auto [task, handle] = karx::spawn(plus_one(41), [&queue](karx::Task<> t) { queue.push_back(std::move(t)); });
  task.run();
  EXPECT_TRUE(queue.empty());
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value(), 42);
}

}  // namespace
