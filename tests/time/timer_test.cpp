// Timers: sleep_for / sleep_until and the process-wide timer driver behind them.
//
// No runtime is involved: futures are polled by hand or by the tiny block_here below (a waker_fn
// waker and an atomic flag), and wakers are Probes that count their wakes and their live
// clones, so "the driver let go of the waker" is checked exactly, without waiting. Time is only
// waited for where time is the point; "a destroyed sleep is never woken" is checked after a
// later sentinel sleep fired (the driver fires in deadline order).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

import karx.executor;
import karx.time;

#include "support/thread_pool.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// How long a test waits for something that must happen before calling it a hang.
constexpr auto kHang = 30s;
// Upper bounds on lateness are this generous: the machine is shared and noisy.
constexpr auto kLate = 500ms;

// A waker target that counts its wakes and its live Wakers (clones), from any thread. Every
// Waker from waker() has the same identity (will_wake), distinct from any other Probe's.
class Probe {
 public:
  Probe() : s_(new State) {}
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  ~Probe() { unref(s_); }

  karx::Waker waker() const { return karx::Waker::from_raw(clone(s_)); }
  // Runs on every wake before it is counted, on the waking thread. Set before handing out wakers.
  void on_wake(std::function<void()> f) { s_->hook = std::move(f); }

  int wakes() const {
    std::lock_guard lock(s_->m);
    return s_->wakes;
  }
  // Wakers alive now (the driver's clone, if it holds one).
  int held() const {
    std::lock_guard lock(s_->m);
    return s_->held;
  }
  bool wait_wakes(int n) const {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, kHang, [&] { return s_->wakes >= n; });
  }
  bool wait_held(int n) const {
    std::unique_lock lock(s_->m);
    return s_->cv.wait_for(lock, kHang, [&] { return s_->held == n; });
  }

 private:
  struct State {
    std::atomic<int> refs{1};  // the Probe + every Waker
    std::mutex m;
    std::condition_variable cv;
    int wakes = 0;
    int held = 0;
    std::function<void()> hook;
  };
  static State* of(const void* p) { return static_cast<State*>(const_cast<void*>(p)); }
  static void unref(State* s) {
    if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
  }
  static karx::RawWaker clone(const void* p) {
    State* s = of(p);
    s->refs.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(s->m);
    ++s->held;
    return {p, &kVTable};
  }
  // The hook runs first, and the wake is counted even if it throws: a thread that saw the
  // count go up also sees what the hook did.
  static void wake_by_ref(const void* p) {
    State* s = of(p);
    struct Count {
      State* s;
      ~Count() {
        std::lock_guard lock(s->m);
        ++s->wakes;
        s->cv.notify_all();
      }
    } count{s};
    if (s->hook) s->hook();
  }
  static void drop(const void* p) {
    State* s = of(p);
    {
      std::lock_guard lock(s->m);
      --s->held;
      s->cv.notify_all();
    }
    unref(s);
  }
  static void wake(const void* p) {
    struct Drop {
      const void* p;
      ~Drop() { drop(p); }
    } d{p};
    wake_by_ref(p);
  }
  static constexpr karx::RawWakerVTable kVTable{&clone, &wake, &wake_by_ref, &drop};

  State* s_;
};

// One poll with a waker of `probe`; that waker is dropped again before this returns, so
// probe.held() afterwards counts only the clones kept by the future (the driver).
template <class F>
auto poll_with(F& f, const Probe& probe) {
  karx::Waker waker = probe.waker();
  karx::Context cx(waker);
  return f.poll(cx);
}

// Polls `f` on this thread until it is ready, waiting on an atomic flag that the waker sets;
// returns the output. `polls`, if given, receives the number of polls.
template <class F>
karx::output_of<F> block_here(F& f, int* polls = nullptr) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  karx::Waker waker = karx::waker_fn([flag] {
    flag->store(true, std::memory_order_release);
    flag->notify_one();
  });
  karx::Context cx(waker);
  for (int n = 1;; ++n) {
    auto r = f.poll(cx);
    if (r.is_ready()) {
      if (polls != nullptr) *polls = n;
      if constexpr (std::is_void_v<karx::output_of<F>>)
        return;
      else
        return std::move(r).value();
    }
    while (!flag->exchange(false, std::memory_order_acquire)) flag->wait(false, std::memory_order_acquire);
  }
}

// block_here for a sleep; returns the number of polls it took (2 or more: the driver woke it).
int polls_to_complete(karx::Sleep& s) {
  int polls = 0;
  block_here(s, &polls);
  return polls;
}

std::size_t pending_count() { return karx::detail::timer_pending_count(); }

// --- deadlines ------------------------------------------------------------------------------

TEST(TimerDeadline, SleepForIsNeverEarlyAndIsWokenByTheDriver) {
  for (auto d : {1ms, 5ms, 20ms, 50ms}) {
    SCOPED_TRACE(testing::Message() << "duration " << d.count() << " ms");
    const auto t0 = clock_type::now();
    auto s = karx::sleep_for(d);
    const int polls = polls_to_complete(s);
    const auto elapsed = clock_type::now() - t0;
    EXPECT_GE(elapsed, d);  // exact: t0 was read before sleep_for read the clock
    EXPECT_LT(elapsed, d + kLate);
    EXPECT_GE(polls, 2);  // the first poll was pending: the driver woke it
  }
}

TEST(TimerDeadline, SleepUntilIsNeverEarly) {
  const auto deadline = clock_type::now() + 30ms;
  auto s = karx::sleep_until(deadline);
  EXPECT_EQ(s.deadline(), deadline);
  EXPECT_GE(polls_to_complete(s), 2);
  const auto now = clock_type::now();
  EXPECT_GE(now, deadline);
  EXPECT_LT(now, deadline + kLate);
  // A sleep that was ready stays ready.
  Probe p;
  EXPECT_TRUE(poll_with(s, p).is_ready());
}

TEST(TimerDeadline, ZeroAndNegativeDurationsAreReadyOnTheFirstPollWithoutRegistering) {
  const std::size_t base = pending_count();
  const std::chrono::nanoseconds durations[] = {0ns, -1ns, -5ms, -1h, std::chrono::nanoseconds::min()};
  for (auto d : durations) {
    SCOPED_TRACE(testing::Message() << "duration " << d.count() << " ns");
    Probe p;
    auto s = karx::sleep_for(d);
    EXPECT_TRUE(poll_with(s, p).is_ready());
    EXPECT_EQ(p.held(), 0);  // no clone kept
    EXPECT_EQ(pending_count(), base);
    EXPECT_EQ(p.wakes(), 0);
  }
}

TEST(TimerDeadline, SleepUntilAPastTimeIsReadyAtOnce) {
  const std::size_t base = pending_count();
  const auto now = clock_type::now();
  for (auto t : {now, now - 1ms, now - 1h, clock_type::time_point::min()}) {
    Probe p;
    auto s = karx::sleep_until(t);
    EXPECT_TRUE(poll_with(s, p).is_ready());
    EXPECT_EQ(p.held(), 0);
    EXPECT_EQ(pending_count(), base);
  }
}

TEST(TimerDeadline, HugeDurationsSaturateInsteadOfOverflowing) {
  const std::size_t base = pending_count();
  for (auto d : {std::chrono::nanoseconds::max(), std::chrono::nanoseconds(std::chrono::hours(24 * 365 * 290))}) {
    Probe p;
    auto s = karx::sleep_for(d);
    EXPECT_GT(s.deadline(), clock_type::now() + 24h * 365);
    EXPECT_TRUE(poll_with(s, p).is_pending());
    EXPECT_EQ(p.held(), 1);
    EXPECT_EQ(pending_count(), base + 1);
  }
  EXPECT_EQ(pending_count(), base);
  EXPECT_EQ(karx::sleep_for(std::chrono::nanoseconds::max()).deadline(), clock_type::time_point::max());
}

// --- many sleeps ----------------------------------------------------------------------------

TEST(TimerMany, ManySleepsFromSeveralThreadsAllCompleteAndEachWakerFiresOnce) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  const std::size_t base = pending_count();
  struct One {
    std::chrono::milliseconds d{};
    clock_type::time_point t0;
    std::optional<karx::Sleep> sleep;
    bool first_pending = false;
    bool woken = false;
    bool ready_after = false;
    int wakes = -1;
    int held = -1;
    clock_type::duration elapsed{};
  };
  std::vector<std::vector<One>> results(kThreads);
  for (auto& r : results) r = std::vector<One>(kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      std::uniform_int_distribution<int> ms(0, 50);
      std::vector<Probe> probes(kPerThread);
      auto& mine = results[t];
      for (int i = 0; i < kPerThread; ++i) {
        One& o = mine[i];
        o.d = std::chrono::milliseconds(ms(rng));
        o.t0 = clock_type::now();
        o.sleep.emplace(karx::sleep_for(o.d));
        o.first_pending = poll_with(*o.sleep, probes[i]).is_pending();
      }
      for (int i = 0; i < kPerThread; ++i) {
        One& o = mine[i];
        if (o.first_pending) o.woken = probes[i].wait_wakes(1);
        o.ready_after = poll_with(*o.sleep, probes[i]).is_ready();
        o.elapsed = clock_type::now() - o.t0;
        if (o.first_pending) probes[i].wait_held(0);  // the driver drops its clone after the wake
        o.wakes = probes[i].wakes();
        o.held = probes[i].held();
        o.sleep.reset();
      }
    });
  }
  for (auto& th : threads) th.join();
  int pending_first = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const One& o = results[t][i];
      SCOPED_TRACE(testing::Message() << "thread " << t << " sleep " << i << " of " << o.d.count() << " ms");
      if (o.d == 0ms) EXPECT_FALSE(o.first_pending);
      if (o.first_pending) {
        ++pending_first;
        EXPECT_TRUE(o.woken);
        EXPECT_EQ(o.wakes, 1);
      } else {
        EXPECT_EQ(o.wakes, 0);
      }
      EXPECT_TRUE(o.ready_after);
      EXPECT_EQ(o.held, 0);
      EXPECT_GE(o.elapsed, o.d);
    }
  }
  EXPECT_GT(pending_first, kThreads * kPerThread / 2);  // most of them really waited
  EXPECT_EQ(pending_count(), base);
}

TEST(TimerMany, ConcurrentBlockOnSleepsAreNeverEarly) {
  constexpr int kThreads = 8;
  constexpr int kEach = 10;
  std::atomic<int> early{0}, late{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(99 + t);
      std::uniform_int_distribution<int> us(0, 20000);
      for (int i = 0; i < kEach; ++i) {
        const auto d = std::chrono::microseconds(us(rng));
        const auto t0 = clock_type::now();
        auto s = karx::sleep_for(d);
        block_here(s);
        const auto elapsed = clock_type::now() - t0;
        if (elapsed < d) ++early;
        if (elapsed > d + kLate) ++late;
        ++done;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(done.load(), kThreads * kEach);
  EXPECT_EQ(early.load(), 0);
  EXPECT_EQ(late.load(), 0);
}

// --- ordering -------------------------------------------------------------------------------

TEST(TimerOrder, ShorterSleepsCompleteBeforeLongerOnes) {
  const std::vector<std::chrono::milliseconds> durations{250ms, 50ms, 200ms, 100ms, 150ms};
  std::mutex m;
  std::vector<int> order;
  std::vector<std::unique_ptr<Probe>> probes;
  std::vector<karx::Sleep> sleeps;
  for (std::size_t i = 0; i < durations.size(); ++i) {
    probes.push_back(std::make_unique<Probe>());
    probes.back()->on_wake([&m, &order, i] {
      std::lock_guard lock(m);
      order.push_back(static_cast<int>(i));
    });
    sleeps.push_back(karx::sleep_for(durations[i]));
  }
  for (std::size_t i = 0; i < durations.size(); ++i) ASSERT_TRUE(poll_with(sleeps[i], *probes[i]).is_pending());
  for (auto& p : probes) ASSERT_TRUE(p->wait_wakes(1));
  std::lock_guard lock(m);
  EXPECT_EQ(order, (std::vector<int>{1, 3, 4, 2, 0}));
}

TEST(TimerOrder, EqualDeadlinesFireInRegistrationOrder) {
  constexpr int kN = 16;
  const auto deadline = clock_type::now() + 30ms;
  std::mutex m;
  std::vector<int> order;
  std::vector<std::unique_ptr<Probe>> probes;
  std::vector<karx::Sleep> sleeps;
  for (int i = 0; i < kN; ++i) {
    probes.push_back(std::make_unique<Probe>());
    probes.back()->on_wake([&m, &order, i] {
      std::lock_guard lock(m);
      order.push_back(i);
    });
    sleeps.push_back(karx::sleep_until(deadline));
    ASSERT_TRUE(poll_with(sleeps.back(), *probes.back()).is_pending());
  }
  for (auto& p : probes) ASSERT_TRUE(p->wait_wakes(1));
  std::vector<int> expected(kN);
  for (int i = 0; i < kN; ++i) expected[i] = i;
  std::lock_guard lock(m);
  EXPECT_EQ(order, expected);
}

// --- cancellation ---------------------------------------------------------------------------

TEST(TimerCancel, DestroyingAPendingSleepRemovesItsEntryAndItIsNeverWoken) {
  const std::size_t base = pending_count();
  Probe p;
  {
    auto s = karx::sleep_for(50ms);
    ASSERT_TRUE(poll_with(s, p).is_pending());
    EXPECT_EQ(pending_count(), base + 1);
    EXPECT_EQ(p.held(), 1);
  }
  // Released at once, not at the deadline.
  EXPECT_EQ(pending_count(), base);
  EXPECT_EQ(p.held(), 0);
  // A later sentinel: once it fired, the driver went past the destroyed sleep's deadline.
  Probe sentinel;
  auto s2 = karx::sleep_for(100ms);
  ASSERT_TRUE(poll_with(s2, sentinel).is_pending());
  ASSERT_TRUE(sentinel.wait_wakes(1));
  EXPECT_EQ(p.wakes(), 0);
}

TEST(TimerCancel, DestroyingHalfOfManySleepsKeepsTheRestInOrderAndWakesNoneOfTheDestroyed) {
  constexpr int kN = 200;
  const std::size_t base = pending_count();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> ms(10, 80);
  std::vector<Probe> probes(kN);
  std::vector<std::optional<karx::Sleep>> sleeps(kN);
  auto latest = clock_type::now();
  for (int i = 0; i < kN; ++i) {
    sleeps[i].emplace(karx::sleep_for(std::chrono::milliseconds(ms(rng))));
    latest = std::max(latest, sleeps[i]->deadline());
    ASSERT_TRUE(poll_with(*sleeps[i], probes[i]).is_pending());
  }
  EXPECT_EQ(pending_count(), base + kN);
  std::vector<int> idx(kN);
  for (int i = 0; i < kN; ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  std::vector<bool> destroyed(kN, false);
  for (int k = 0; k < kN / 2; ++k) {
    destroyed[idx[k]] = true;
    sleeps[idx[k]].reset();
    EXPECT_EQ(probes[idx[k]].held(), 0);
  }
  EXPECT_EQ(pending_count(), base + kN - kN / 2);
  Probe sentinel;
  auto last = karx::sleep_until(latest + 10ms);
  ASSERT_TRUE(poll_with(last, sentinel).is_pending());
  ASSERT_TRUE(sentinel.wait_wakes(1));
  for (int i = 0; i < kN; ++i) {
    if (destroyed[i]) {
      EXPECT_EQ(probes[i].wakes(), 0) << i;
    } else {
      // Fired no later than the sentinel, so already woken.
      EXPECT_EQ(probes[i].wakes(), 1) << i;
      EXPECT_TRUE(poll_with(*sleeps[i], probes[i]).is_ready()) << i;
    }
  }
  sleeps.clear();
  EXPECT_EQ(pending_count(), base);
}

// Destruction racing with firing (deadlines of 0-2 ms): nothing leaks or crashes (ASan, TSan),
// every clone is released and the count returns to where it was.
TEST(TimerCancel, DestroyingSleepsAsTheyFireIsSafe) {
  constexpr int kThreads = 4;
  constexpr int kEach = 300;
  const std::size_t base = pending_count();
  std::vector<std::thread> threads;
  std::atomic<int> not_released{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(42 + t);
      std::uniform_int_distribution<int> us(0, 2000);
      for (int i = 0; i < kEach; ++i) {
        Probe p;
        {
          auto s = karx::sleep_for(std::chrono::microseconds(us(rng)));
          (void)poll_with(s, p);
          const auto spin_until = clock_type::now() + std::chrono::microseconds(us(rng));
          while (clock_type::now() < spin_until) {
          }
        }
        // The driver may still be waking (and then dropping) a clone it took before the
        // destruction; it lets go of it promptly either way.
        if (!p.wait_held(0)) ++not_released;
        if (p.wakes() > 1) ++not_released;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(not_released.load(), 0);
  EXPECT_EQ(pending_count(), base);
}

// --- re-polling -----------------------------------------------------------------------------

TEST(TimerRepoll, ANewWakerReplacesTheRegisteredOneAndOnlyItIsWoken) {
  const std::size_t base = pending_count();
  Probe old_waker, new_waker;
  auto s = karx::sleep_for(30ms);
  ASSERT_TRUE(poll_with(s, old_waker).is_pending());
  EXPECT_EQ(old_waker.held(), 1);
  ASSERT_TRUE(poll_with(s, new_waker).is_pending());
  EXPECT_EQ(old_waker.held(), 0);  // the replaced clone is released at once: it cannot be woken
  EXPECT_EQ(new_waker.held(), 1);
  EXPECT_EQ(pending_count(), base + 1);  // replaced, not added
  ASSERT_TRUE(new_waker.wait_wakes(1));
  EXPECT_EQ(old_waker.wakes(), 0);
  EXPECT_TRUE(poll_with(s, new_waker).is_ready());
  EXPECT_TRUE(new_waker.wait_held(0));
  EXPECT_EQ(new_waker.wakes(), 1);
  EXPECT_EQ(pending_count(), base);
}

TEST(TimerRepoll, TheSameWakerAgainKeepsOneRegistrationAndIsWokenOnce) {
  const std::size_t base = pending_count();
  Probe p;
  auto s = karx::sleep_for(30ms);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(poll_with(s, p).is_pending());
  EXPECT_EQ(p.held(), 1);
  EXPECT_EQ(pending_count(), base + 1);
  ASSERT_TRUE(p.wait_wakes(1));
  ASSERT_TRUE(p.wait_held(0));  // no clone left: no second wake can come
  EXPECT_EQ(p.wakes(), 1);
  EXPECT_TRUE(poll_with(s, p).is_ready());
}

TEST(TimerRepoll, AReadyPollBeforeTheDriverFiredRemovesTheEntry) {
  // Polled again once the deadline passed but before the driver fired it: ready, and the
  // entry is removed so the waker is not woken for nothing.
  const std::size_t base = pending_count();
  Probe p;
  auto s = karx::sleep_for(20ms);
  ASSERT_TRUE(poll_with(s, p).is_pending());
  const auto deadline = s.deadline();
  // Spin (no driver involved) until the deadline passed, then poll with a different waker.
  while (clock_type::now() < deadline) {
  }
  Probe q;
  EXPECT_TRUE(poll_with(s, q).is_ready());
  EXPECT_EQ(q.held(), 0);
  EXPECT_TRUE(p.wait_held(0));  // removed by the ready poll, or fired just before it
  EXPECT_LE(p.wakes(), 1);
  EXPECT_EQ(pending_count(), base);
}

// --- wakes re-entering the timer ------------------------------------------------------------

TEST(TimerReentry, AWakeMayRegisterAnotherSleep) {
  Probe first, second;
  std::optional<karx::Sleep> next;
  std::atomic<bool> registered{false};
  first.on_wake([&] {
    // On the driver thread: would deadlock if wakes ran under the driver's lock.
    next.emplace(karx::sleep_for(10ms));
    registered.store(poll_with(*next, second).is_pending());
  });
  auto s = karx::sleep_for(5ms);
  ASSERT_TRUE(poll_with(s, first).is_pending());
  ASSERT_TRUE(first.wait_wakes(1));
  ASSERT_TRUE(second.wait_wakes(1));
  EXPECT_TRUE(registered.load());
  EXPECT_TRUE(poll_with(*next, second).is_ready());
}

TEST(TimerReentry, AWakeMayDestroyTheSleepItWakesAndOthers) {
  const std::size_t base = pending_count();
  Probe p, other;
  std::optional<karx::Sleep> s, later;
  s.emplace(karx::sleep_for(5ms));
  later.emplace(karx::sleep_for(1h));
  // The wake may come before this thread has returned from polling `s` (5 ms is short on a
  // loaded machine): the sleeps are destroyed only once both polls are done, since a future
  // is never polled and destroyed at once (TSan caught the test doing that).
  std::atomic<bool> polled{false};
  p.on_wake([&] {
    polled.wait(false);
    s.reset();
    later.reset();
  });
  const bool s_pending = poll_with(*s, p).is_pending();
  const bool later_pending = poll_with(*later, other).is_pending();
  polled.store(true);
  polled.notify_all();
  ASSERT_TRUE(s_pending);
  ASSERT_TRUE(later_pending);
  // `later` is in the heap; `s` too unless its 5 ms are already up and the driver has taken it
  // out to fire it (it then waits in the wake for `polled`).
  const std::size_t registered = pending_count();
  EXPECT_GE(registered, base + 1);
  EXPECT_LE(registered, base + 2);
  ASSERT_TRUE(p.wait_wakes(1));
  EXPECT_TRUE(other.wait_held(0));
  EXPECT_TRUE(p.wait_held(0));
  EXPECT_EQ(pending_count(), base);
  EXPECT_EQ(other.wakes(), 0);
}

// Dropping the driver's clone of a waker may run arbitrary code (the last reference to a task
// destroys its future): here the waker's captured state destroys another pending sleep when it
// goes away. The driver drops wakers outside its lock, whether the clone is replaced by a
// re-poll, released by a destroyed sleep, or dropped after its wake.
TEST(TimerReentry, DroppingTheDriversCloneMayTouchTimers) {
  const std::size_t base = pending_count();
  struct DestroyOnDrop {
    std::optional<karx::Sleep>* victim;
    std::atomic<bool>* done;
    ~DestroyOnDrop() {
      victim->reset();
      done->store(true, std::memory_order_release);
      done->notify_all();
    }
  };
  enum class How { replaced, destroyed, fired };
  for (How how : {How::replaced, How::destroyed, How::fired}) {
    SCOPED_TRACE(testing::Message() << "case " << static_cast<int>(how));
    Probe victim_probe;
    std::optional<karx::Sleep> victim(karx::sleep_for(1h));
    ASSERT_TRUE(poll_with(*victim, victim_probe).is_pending());
    std::optional<karx::Sleep> s(karx::sleep_for(how == How::fired ? 5ms : 1h));
    std::atomic<bool> done{false};
    {
      auto guard = std::make_shared<DestroyOnDrop>(&victim, &done);
      karx::Waker w = karx::waker_fn([g = std::move(guard)] {});
      karx::Context cx(w);
      ASSERT_TRUE(s->poll(cx).is_pending());
    }  // now only the driver's clone keeps `guard`
    // In the fired case, the 5 ms may already be up and `s` taken out of the heap to fire.
    if (how == How::fired)
      EXPECT_GE(pending_count(), base + 1);
    else
      EXPECT_EQ(pending_count(), base + 2);
    Probe other;
    if (how == How::replaced) ASSERT_TRUE(poll_with(*s, other).is_pending());
    if (how == How::destroyed) s.reset();
    done.wait(false, std::memory_order_acquire);  // the clone was dropped (possibly by the driver)
    EXPECT_FALSE(victim.has_value());
    EXPECT_EQ(victim_probe.held(), 0);  // the victim's entry was removed
    EXPECT_EQ(victim_probe.wakes(), 0);
    s.reset();
    EXPECT_EQ(pending_count(), base);
  }
}

// --- a throwing waker -----------------------------------------------------------------------

TEST(TimerDriver, AWakerThatThrowsIsReportedAndTheDriverKeepsGoing) {
  Probe thrower, after;
  thrower.on_wake([] { throw std::runtime_error("probe-wake-throws-42"); });
  testing::internal::CaptureStderr();
  auto s1 = karx::sleep_for(1ms);
  auto s2 = karx::sleep_for(50ms);
  ASSERT_TRUE(poll_with(s1, thrower).is_pending());
  ASSERT_TRUE(poll_with(s2, after).is_pending());
  const bool fired = after.wait_wakes(1);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(fired);
  EXPECT_EQ(thrower.wakes(), 1);
  EXPECT_TRUE(thrower.wait_held(0));  // the clone was still dropped
  EXPECT_NE(err.find("probe-wake-throws-42"), std::string::npos) << err;
  // And the driver still serves new timers.
  auto s3 = karx::sleep_for(5ms);
  EXPECT_GE(polls_to_complete(s3), 2);
}

// --- inside an executor ---------------------------------------------------------------------

TEST(TimerContext, SleepsInsideCoroutinesOnAnExecutor) {
  probes::ThreadPool ex(1);  // one worker thread
  auto body = []() -> karx::Async<clock_type::duration> {
    const auto t0 = clock_type::now();
    co_await karx::sleep_for(20ms);
    karx::Sleep lvalue = karx::sleep_for(20ms);
    co_await lvalue;
    co_await karx::sleep_for(0ms);
    co_return clock_type::now() - t0;
  };
  auto h1 = ex.spawn(body());
  auto h2 = ex.spawn(body());
  const std::optional<clock_type::duration> r1 = block_here(h1);
  const std::optional<clock_type::duration> r2 = block_here(h2);
  ASSERT_TRUE(r1.has_value());
  ASSERT_TRUE(r2.has_value());
  EXPECT_GE(*r1, 40ms);
  EXPECT_GE(*r2, 40ms);
  EXPECT_LT(*r1, 40ms + kLate);
  EXPECT_LT(*r2, 40ms + kLate);
}

// --- process exit ---------------------------------------------------------------------------

// Prints a marker when the last clone of its waker is dropped; exits with 3 if ever woken.
struct ExitProbe {
  struct Marker {
    ~Marker() { std::fputs("timer-waker-dropped-at-exit\n", stderr); }
  };
  static karx::Waker waker() {
    auto marker = std::make_shared<Marker>();
    return karx::waker_fn([marker] { std::_Exit(3); });
  }
};

// The pending sleep is a static constructed before the driver, so it is destroyed after the
// driver shut down; the driver's thread must be joined, the waker dropped and not woken.
TEST(TimerExitDeathTest, ExitWithAPendingSleepDropsItsWakerAndDoesNotHang) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(20);  // a hang at exit fails the test (SIGALRM) instead of blocking it
        static std::optional<karx::Sleep> s;
        s.emplace(karx::sleep_for(1h));
        {
          karx::Waker w = ExitProbe::waker();
          karx::Context cx(w);
          if (!s->poll(cx).is_pending()) std::_Exit(4);
        }
        if (karx::detail::timer_pending_count() != 1) std::_Exit(5);
        std::exit(0);
      },
      testing::ExitedWithCode(0), "timer-waker-dropped-at-exit");
}

// A child forked (without exec) while the parent's driver thread runs has no driver thread: it
// must start its own to serve its sleeps, and its exit must not try to join the parent's.
TEST(TimerExitDeathTest, AForkedChildCanSleepAndExit) {
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "ThreadSanitizer cannot start threads after a multi-threaded fork (die_after_fork)";
#endif
#endif
  auto warm = karx::sleep_for(2ms);  // the parent's driver thread is running
  block_here(warm);
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_EXIT(
      {
        alarm(20);
        auto s = karx::sleep_for(5ms);
        block_here(s);
        std::fputs("child-slept\n", stderr);
        std::exit(0);
      },
      testing::ExitedWithCode(0), "child-slept");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
}

// A sleep destroyed before exit leaves nothing behind; exit still joins the driver.
TEST(TimerExitDeathTest, ExitAfterSleepsCompletedDoesNotHang) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(20);
        auto s = karx::sleep_for(2ms);
        block_here(s);
        auto pending = karx::sleep_for(1h);
        {
          karx::Waker w = ExitProbe::waker();
          karx::Context cx(w);
          if (!pending.poll(cx).is_pending()) std::_Exit(4);
        }
        std::exit(0);  // `pending` is never destroyed (exit does not unwind): the driver drops it
      },
      testing::ExitedWithCode(0), "timer-waker-dropped-at-exit");
}

}  // namespace
