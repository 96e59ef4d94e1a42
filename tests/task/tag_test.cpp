// Tags: reachable from Task and JoinHandle, alive (with the schedule function) until the
// block is freed, destroyed exactly once.
#include <gtest/gtest.h>

#include <deque>

#include "support/probes.hpp"

namespace {

using probes::Counts;
using probes::ProbeFuture;
using probes::ProbeSchedule;
using probes::ProbeTag;

struct TagQueueSchedule {
  std::deque<karx::Task<ProbeTag>>* queue;
  void operator()(karx::Task<ProbeTag> t) const { queue->push_back(std::move(t)); }
};

TEST(Tag, TaskAndHandleSeeTheSameTag) {
  Counts c;
  auto [task, handle] =
      karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c}, ProbeTag{42, probes::DropCounter(c.tag_drops)});
  EXPECT_EQ(task.tag().id, 42);
  EXPECT_EQ(handle.tag().id, 42);
  EXPECT_EQ(&task.tag(), &handle.tag());
  EXPECT_EQ(c.tag_drops, 0);
}

TEST(Tag, LivesUntilTheLastWakerIsGone) {
  Counts c;
  auto [task, handle] =
      karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c}, ProbeTag{1, probes::DropCounter(c.tag_drops)});
  karx::Waker waker = task.waker();
  task.cancel();
  EXPECT_EQ(c.future_drops, 1);
  handle.detach();
  EXPECT_EQ(c.tag_drops, 0);
  EXPECT_EQ(c.schedule_drops, 0);
  {
    karx::Waker gone = std::move(waker);
  }
  EXPECT_EQ(c.tag_drops, 1);
  EXPECT_EQ(c.schedule_drops, 1);
}

TEST(Tag, DestroyedOnceAfterCompletionAndJoin) {
  Counts c;
  std::deque<karx::Task<ProbeTag>> queue;
  {
    auto [task, handle] =
        karx::spawn(ProbeFuture{&c, 0, 3}, TagQueueSchedule{&queue}, ProbeTag{7, probes::DropCounter(c.tag_drops)});
    EXPECT_FALSE(task.run());
    EXPECT_EQ(c.tag_drops, 0);  // the handle still holds the block
    auto r = probes::poll_once(handle);
    ASSERT_TRUE(r.is_ready());
    EXPECT_EQ(c.tag_drops, 1);  // output taken, handle finished: block freed
  }
  EXPECT_EQ(c.tag_drops, 1);
}

TEST(Tag, DestroyedOnceWhenDroppedUnrun) {
  Counts c;
  {
    std::deque<karx::Task<ProbeTag>> queue;
    auto [task, handle] =
        karx::spawn(ProbeFuture{&c, 1, 3}, TagQueueSchedule{&queue}, ProbeTag{7, probes::DropCounter(c.tag_drops)});
  }
  EXPECT_EQ(c.future_drops, 1);
  EXPECT_EQ(c.tag_drops, 1);
}

TEST(Tag, ScheduleFunctionSeesTheTag) {
  std::deque<karx::Task<ProbeTag>> queue;
  Counts c;
  auto [task, handle] =
      karx::spawn(ProbeFuture{&c, 1, 3}, TagQueueSchedule{&queue}, ProbeTag{11, probes::DropCounter(c.tag_drops)});
  karx::Waker w = task.waker();
  EXPECT_FALSE(task.run());
  w.wake();
  ASSERT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.front().tag().id, 11);
  karx::Task<ProbeTag> again = std::move(queue.front());
  queue.pop_front();
  EXPECT_FALSE(again.run());
  auto r = probes::poll_once(handle);
  ASSERT_TRUE(r.is_ready());
  EXPECT_EQ(r.value()->value, 3);
  EXPECT_EQ(c.tag_drops, 0);  // the waker `w` still holds the block
}

TEST(Tag, MoveOnlyTags) {
  Counts c;
  auto [task, handle] = karx::spawn(ProbeFuture{&c, 0, 1}, ProbeSchedule{&c}, std::make_unique<int>(5));
  EXPECT_EQ(*task.tag(), 5);
  EXPECT_EQ(*handle.tag(), 5);
}

}  // namespace
