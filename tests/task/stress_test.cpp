// Races between wake, run, cancel, detach and join on different threads; bounded in count and
// time. Each test checks the invariants that must hold whatever the interleaving: a future is
// never polled by two threads at once, a task is never queued twice at once, every future and
// output is destroyed exactly once, every handle resolves.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "support/probes.hpp"
#include "support/thread_pool.hpp"

namespace {

using namespace std::chrono_literals;
constexpr auto kDeadline = 60s;  // generous: a hang fails the test instead of the suite

using Executor = probes::ThreadPool;

// Shared by a racy future and the test.
struct Race {
  std::atomic<bool> polling{false};
  std::atomic<int> overlapping_polls{0};
  std::atomic<int> polls{0};
  std::atomic<int> queued{0};  // schedule calls not yet picked up by a run
  std::atomic<int> double_queued{0};
  std::atomic<int> future_drops{0};
  std::atomic<int> output_drops{0};
  std::atomic<bool> done{false};
};

// Pending until it has been polled `needed` times; detects overlapping polls.
struct RacyFuture {
  std::shared_ptr<Race> race;
  int needed;
  probes::DropCounter drop{race->future_drops};

  karx::Poll<probes::Output> poll(karx::Context&) {
    race->queued.fetch_sub(1, std::memory_order_relaxed);
    if (race->polling.exchange(true, std::memory_order_acquire)) race->overlapping_polls.fetch_add(1);
    int n = race->polls.fetch_add(1, std::memory_order_relaxed) + 1;
    std::this_thread::yield();  // widen the window for overlapping wakes
    race->polling.store(false, std::memory_order_release);
    if (n < needed) return karx::pending;
    race->done.store(true, std::memory_order_release);
    return karx::Poll<probes::Output>::ready(probes::Output{n, probes::DropCounter(race->output_drops)});
  }
};

// The schedule function counts queued Tasks per task: it must never see one already queued.
auto counting_scheduler(Executor& ex, std::shared_ptr<Race> race) {
  return [&ex, race](karx::Task<> t) {
    if (race->queued.fetch_add(1, std::memory_order_relaxed) != 0) race->double_queued.fetch_add(1);
    ex.push(std::move(t));
  };
}

TEST(Stress, WakesFromManyThreadsNeverRunATaskTwiceAtOnce) {
  constexpr int kTasks = 32, kPolls = 40, kWakers = 3;
  Executor ex(2);
  std::vector<std::shared_ptr<Race>> races;
  std::vector<karx::JoinHandle<probes::Output>> handles;
  std::vector<karx::Waker> wakers;
  for (int i = 0; i < kTasks; ++i) {
    auto race = std::make_shared<Race>();
    auto [task, handle] = karx::spawn(RacyFuture{race, kPolls}, counting_scheduler(ex, race));
    wakers.push_back(handle.waker());
    race->queued.fetch_add(1);  // the spawned Task counts as queued
    ex.push(std::move(task));
    races.push_back(race);
    handles.push_back(std::move(handle));
  }
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  std::vector<std::thread> wake_threads;
  for (int w = 0; w < kWakers; ++w)
    wake_threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      std::vector<karx::Waker> mine = wakers;  // clones
      for (;;) {
        bool all_done = true;
        for (int i = 0; i < kTasks; ++i) {
          if (races[i]->done.load(std::memory_order_acquire)) continue;
          all_done = false;
          if (rng() % 2)
            mine[i].wake();
          else
            karx::Waker(mine[i]).wake_and_release();
        }
        if (all_done || std::chrono::steady_clock::now() > deadline) return;
      }
    });
  for (auto& t : wake_threads) t.join();
  for (int i = 0; i < kTasks; ++i) {
    auto out = karx::block_on(std::move(handles[i]));
    ASSERT_TRUE(out.has_value()) << "task " << i;
    EXPECT_EQ(out->value, kPolls);
    EXPECT_EQ(races[i]->polls, kPolls);
    EXPECT_EQ(races[i]->overlapping_polls, 0);
    EXPECT_EQ(races[i]->double_queued, 0);
    EXPECT_EQ(races[i]->future_drops, 1);
  }
  wakers.clear();
  handles.clear();
  for (auto& r : races) EXPECT_EQ(r->output_drops, 1);
}

TEST(Stress, CancelByHandleRacesWithRuns) {
  constexpr int kRounds = 300;
  Executor ex(2);
  int canceled = 0, completed = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto race = std::make_shared<Race>();
    auto [task, handle] = karx::spawn(RacyFuture{race, 3}, counting_scheduler(ex, race));
    karx::Waker waker = handle.waker();
    race->queued.fetch_add(1);
    ex.push(std::move(task));
    std::thread waking([&] {
      for (int i = 0; i < 50 && !race->done.load(); ++i) waker.wake();
    });
    if (round % 3 != 0) std::this_thread::yield();
    handle.cancel();
    auto out = karx::block_on(std::move(handle));
    // "canceled" only after the future is destroyed; a completed output is delivered.
    if (out.has_value()) {
      ++completed;
      EXPECT_EQ(out->value, 3);
    } else {
      ++canceled;
    }
    EXPECT_EQ(race->future_drops, 1);
    waking.join();
    EXPECT_EQ(race->overlapping_polls, 0);
    EXPECT_EQ(race->double_queued, 0);
  }
  EXPECT_EQ(canceled + completed, kRounds);
  EXPECT_GT(canceled, 0);
}

TEST(Stress, JoinOnAnotherThreadThanTheRun) {
  constexpr int kTasks = 2000;
  Executor ex(2);
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < kTasks; ++i) {
    auto [task, handle] = karx::spawn([](int v) -> karx::Async<int> { co_return v; }(i), ex.scheduler());
    ex.push(std::move(task));
    handles.push_back(std::move(handle));
  }
  long long sum = 0;
  for (auto& h : handles) sum += karx::block_on(std::move(h)).value();
  EXPECT_EQ(sum, static_cast<long long>(kTasks) * (kTasks - 1) / 2);
}

TEST(Stress, TheLastWakerDroppedOnAnotherThreadDestroysTheFutureOnce) {
  constexpr int kRounds = 500;
  Executor ex(2);
  probes::Counts c;
  for (int round = 0; round < kRounds; ++round) {
    karx::Waker stored = karx::noop_waker();
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1000, 0, false, &stored}, ex.scheduler());
    task.run();  // pending; the future keeps a waker in `stored`
    handle.detach();
    std::thread([w = std::move(stored)]() mutable { karx::Waker gone = std::move(w); }).join();
  }
  // Each unreachable task was scheduled once more and its run destroyed the future.
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (c.future_drops.load() < kRounds && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_EQ(c.future_drops, kRounds);
  EXPECT_EQ(c.polls, kRounds);
}

TEST(Stress, DetachRacesWithCompletionAndTheOutputIsDroppedOnce) {
  constexpr int kRounds = 1000;
  Executor ex(2);
  probes::Counts c;
  for (int round = 0; round < kRounds; ++round) {
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 0, round}, ex.scheduler());
    ex.push(std::move(task));
    if (round % 2) std::this_thread::yield();
    handle.detach();
  }
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (c.output_drops.load() < kRounds && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_EQ(c.output_drops, kRounds);
  EXPECT_EQ(c.future_drops, kRounds);
}

TEST(Stress, TaskCancelRacesWithWakes) {
  constexpr int kRounds = 500;
  probes::Counts c;
  for (int round = 0; round < kRounds; ++round) {
    std::mutex m;
    std::deque<karx::Task<>> queue;
    auto schedule = [&](karx::Task<> t) {
      std::lock_guard lock(m);
      queue.push_back(std::move(t));
    };
    karx::Waker stored = karx::noop_waker();
    auto [task, handle] = karx::spawn(probes::ProbeFuture{&c, 1000, 0, false, &stored}, schedule);
    task.run();  // pending
    std::atomic<bool> go{false};
    std::thread waker_thread([&, w = stored] {
      while (!go.load()) {
      }
      for (int i = 0; i < 20; ++i) w.wake();
    });
    go.store(true);
    // Cancel whatever Task the wakes queued, while they keep coming.
    for (int i = 0; i < 20; ++i) {
      std::lock_guard lock(m);
      while (!queue.empty()) {
        queue.front().cancel();
        queue.pop_front();
      }
    }
    waker_thread.join();
    // If no wake got a Task queued before we stopped, the handle's cancel schedules one.
    handle.cancel();
    while (!queue.empty()) {
      karx::Task<> t = std::move(queue.front());
      queue.pop_front();
      t.run();
    }
    auto out = karx::block_on(std::move(handle));
    EXPECT_FALSE(out.has_value());
    EXPECT_EQ(c.future_drops, round + 1);  // destroyed exactly once, by cancel or by the run
    EXPECT_EQ(c.polls, round + 1);         // and never polled after the first run
  }
}

}  // namespace
