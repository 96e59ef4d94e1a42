// ~Runtime returns only after every future is destroyed, even one whose wake another thread is
// delivering during the destruction. A reduction of what the soak test found.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "support/soak_config.hpp"
#include "support/soak_ledger.hpp"
#include "support/soak_wait.hpp"

import karx;

namespace {

using soak::eventually;
using soak::Kind;
using soak::Ledger;
using soak::soak_options;
using soak::Tracker;

// Where a task's latest waker is kept for another thread to wake, again and again.
struct WakerBox {
  std::mutex mu;
  std::optional<karx::Waker> waker;
  void wake() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(mu);
      w = waker;
    }
    if (w) w->wake();
  }
};

thread_local bool on_waking_thread = false;

// Pending forever; keeps the waker of its latest poll in its box. Counts its destructions
// that run on the waking thread.
struct Pinged {
  std::shared_ptr<WakerBox> box;
  Tracker tracker;
  std::atomic<int>* destroyed_by_waker;
  Pinged(std::shared_ptr<WakerBox> b, Tracker t, std::atomic<int>* d)
      : box(std::move(b)), tracker(std::move(t)), destroyed_by_waker(d) {}
  Pinged(Pinged&&) = default;
  ~Pinged() {
    if (box && on_waking_thread) destroyed_by_waker->fetch_add(1);
  }
  karx::Poll<long> poll(karx::Context& cx) {
    std::optional<karx::Waker> old;  // dropped outside the lock
    std::lock_guard lock(box->mu);
    old.swap(box->waker);
    box->waker.emplace(cx.waker());
    return karx::pending;
  }
};

TEST(ShutdownRace, NoFutureOutlivesTheRuntimeWhileAnotherThreadWakesTasks) {
  constexpr int kTasks = 256, kRounds = 500;
  int late_rounds = 0;
  long late_futures = 0;
  std::atomic<int> destroyed_by_waker{0};
  for (int round = 0; round < kRounds; ++round) {
    Ledger l(kTasks, true);
    std::vector<std::shared_ptr<WakerBox>> slots;
    std::vector<karx::JoinHandle<long>> handles;
    std::atomic<bool> stop{false};
    std::thread waker;
    long alive_after = 0;
    {
      karx::Runtime rt(soak_options());
      for (int i = 0; i < kTasks; ++i) {
        slots.push_back(std::make_shared<WakerBox>());
        handles.push_back(rt.spawn(Pinged(slots.back(), Tracker(l, Kind::root), &destroyed_by_waker)));
      }
      ASSERT_TRUE(eventually([&] { return rt.metrics().tasks_polled >= kTasks; }));
      // Wakes every task over and over until the runtime is gone.
      waker = std::thread([&] {
        on_waking_thread = true;
        while (!stop.load())
          for (auto& s : slots) s->wake();
      });
    }  // ~Runtime, while the other thread keeps waking the tasks
    alive_after = l.alive();
    stop.store(true);
    waker.join();
    for (auto& h : handles) EXPECT_FALSE(karx::block_on(std::move(h)).has_value());
    EXPECT_TRUE(eventually([&] { return l.alive() == 0; }));
    if (alive_after != 0) {
      ++late_rounds;
      late_futures += alive_after;
    }
  }
  EXPECT_EQ(late_rounds, 0) << late_futures << " futures were destroyed after ~Runtime returned (in " << late_rounds
                            << " of " << kRounds << " runtimes), on the thread delivering their wake (which destroyed "
                            << destroyed_by_waker.load() << " futures in all, most before ~Runtime returned)";
}

}  // namespace
