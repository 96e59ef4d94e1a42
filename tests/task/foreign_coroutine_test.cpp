// Interoperation with other coroutine types: karx futures awaited from a coroutine that is not
// karx::Async (the free operator co_await), standard awaitables awaited inside karx::Async (the
// bridge leaf), and JoinHandle::is_finished.
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

// --- A coroutine type that knows nothing of karx --------------------------------------------

// Eager: calling it runs the body on the calling thread until it first suspends. Whoever
// resumes it runs it on; the owner waits for it to finish (from any thread) and destroys the
// frame, also while it is suspended (which cancels what it awaits).
class Foreign {
 public:
  struct State {
    std::atomic<bool> finished{false};
    std::exception_ptr error;  // written before `finished`
  };
  struct promise_type {
    std::shared_ptr<State> state = std::make_shared<State>();
    Foreign get_return_object() { return Foreign(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_never initial_suspend() noexcept { return {}; }
    struct Final {
      bool await_ready() noexcept { return false; }
      void await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        // The owner may destroy the frame as soon as it sees `finished`: keep the state.
        const std::shared_ptr<State> s = h.promise().state;
        s->finished.store(true, std::memory_order_release);
      }
      void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { state->error = std::current_exception(); }
  };

  Foreign(Foreign&& other) noexcept : h_(std::exchange(other.h_, nullptr)), state_(std::move(other.state_)) {}
  Foreign& operator=(Foreign&&) = delete;
  ~Foreign() { destroy(); }

  bool finished() const { return state_->finished.load(std::memory_order_acquire); }
  // Waits until the body has finished (false after the timeout: a hang).
  [[nodiscard]] bool wait() const {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!finished()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(100us);
    }
    return true;
  }
  std::exception_ptr error() const { return state_->error; }
  // Destroys the frame, finished or suspended.
  void destroy() {
    if (h_) std::exchange(h_, nullptr).destroy();
  }

 private:
  explicit Foreign(std::coroutine_handle<promise_type> h) : h_(h), state_(h.promise().state) {}
  std::coroutine_handle<promise_type> h_;
  std::shared_ptr<State> state_;
};

// A lazy coroutine that destroys itself when it finishes: what an awaitable's await_suspend
// may return for symmetric transfer.
struct Detached {
  struct promise_type {
    Detached get_return_object() { return Detached{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
  std::coroutine_handle<promise_type> handle;
};

// --- Futures and wakers of the tests ------------------------------------------------------

// Counts the task allocations (wake blocks and bridges come from the task allocator) made on
// this thread while `counting` is set.
thread_local bool counting = false;
thread_local int allocations = 0;
bool observe(std::size_t) noexcept {
  if (counting) ++allocations;
  return false;
}
class CountAllocations {
 public:
  CountAllocations() {
    karx::detail::set_allocation_observer(&observe);
    allocations = 0;
    counting = true;
  }
  ~CountAllocations() {
    counting = false;
    karx::detail::set_allocation_observer(nullptr);
  }
  int count() const { return allocations; }
};

// Pending until opened (from any thread); keeps the waker of its last pending poll.
struct LatchState {
  std::mutex m;
  bool open = false;
  std::optional<karx::Waker> waker;
  std::atomic<int> polls{0};
  void release() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(m);
      open = true;
      w = std::move(waker);
    }
    if (w) w->wake();
  }
};
struct Latch {
  std::shared_ptr<LatchState> s;
  probes::DropCounter drop;
  karx::Poll<> poll(karx::Context& cx) {
    s->polls.fetch_add(1);
    std::lock_guard lock(s->m);
    if (s->open) return karx::ready();
    s->waker = cx.waker();
    return karx::pending;
  }
};

// A raw waker that counts the clones alive and the wakes: shows which waker a leaf registered
// and when it let go of it.
struct WakerCount {
  std::atomic<int> live{0};  // clones not yet dropped (the original included)
  std::atomic<int> wakes{0};

  static WakerCount* of(const void* d) { return static_cast<WakerCount*>(const_cast<void*>(d)); }
  static karx::RawWaker clone(const void* d);
  static void wake_by_ref(const void* d) { of(d)->wakes.fetch_add(1); }
  static void drop(const void* d) { of(d)->live.fetch_sub(1); }
  static void wake(const void* d) {
    wake_by_ref(d);
    drop(d);
  }
  static constexpr karx::RawWakerVTable vtable{&clone, &wake, &wake_by_ref, &drop};

  karx::Waker waker() {
    live.fetch_add(1);
    return karx::Waker::from_raw(karx::RawWaker{this, &vtable});
  }
};
karx::RawWaker WakerCount::clone(const void* d) {
  of(d)->live.fetch_add(1);
  return karx::RawWaker{d, &vtable};
}

// ============================================================================================
// karx futures awaited from a foreign coroutine.
//
// `adl` holds the coroutines that await karx's own futures: argument-dependent lookup finds
// the operator, with no using-declaration. `own` awaits futures of the test's own types, for
// which the operator is brought in as a user would.
// ============================================================================================

namespace adl {

Foreign await_handle(karx::JoinHandle<int>& handle, int* out, std::thread::id* resumed_on) {
  std::optional<int> r = co_await handle;  // an lvalue handle, polled in place
  *out = r.value_or(-1);
  *resumed_on = std::this_thread::get_id();
}

Foreign await_throwing_handle(karx::JoinHandle<int> handle, int* caught) {
  try {
    (void)co_await std::move(handle);
  } catch (const Boom& e) {
    *caught = e.id;
  }
}

Foreign await_sleep(std::chrono::nanoseconds d, std::thread::id* resumed_on) {
  co_await karx::sleep_for(d);
  *resumed_on = std::this_thread::get_id();
}

karx::Async<int> after_latch(std::shared_ptr<LatchState> s, std::atomic<int>* drops) {
  co_await Latch{std::move(s), probes::DropCounter(*drops)};
  co_return 7;
}

Foreign await_async(karx::Async<int> a, int* out, std::thread::id* resumed_on) {
  *out = co_await std::move(a);
  *resumed_on = std::this_thread::get_id();
}

Foreign await_yield_now(int* steps) {
  ++*steps;
  co_await karx::yield_now();  // a future of karx::detail: found through its using-declaration
  ++*steps;
}

Foreign await_ready_handle(karx::JoinHandle<int> handle, int* out) { *out = (co_await std::move(handle)).value_or(-1); }

Foreign sleep_forever(std::atomic<int>* resumed) {
  co_await karx::sleep_for(1h);
  resumed->fetch_add(1);
}

}  // namespace adl

namespace own {

using karx::operator co_await;

// Ready at once with `value`.
struct Now {
  int value;
  karx::Poll<int> poll(karx::Context&) { return karx::ready(value); }
};

// Wakes itself during its first poll (by reference, or through a clone it then drops) and is
// pending; ready on the next poll.
struct SelfWaking {
  bool through_clone;
  int* polls;
  karx::Poll<int> poll(karx::Context& cx) {
    if (++*polls > 1) return karx::ready(*polls);
    if (through_clone) {
      karx::Waker clone = cx.waker();
      clone.wake();
    } else {
      cx.waker().wake();
    }
    return karx::pending;
  }
};

// Pending forever without keeping a waker, or after cloning one (which allocates the block).
struct Pending {
  bool clone;
  std::optional<karx::Waker>* kept;
  karx::Poll<int> poll(karx::Context& cx) {
    if (clone) *kept = cx.waker();
    return karx::pending;
  }
};

// Throws from its first poll, or from the poll after its first wake.
struct Throwing {
  bool at_once;
  std::optional<karx::Waker>* kept;
  karx::Poll<int> poll(karx::Context& cx) {
    if (at_once || !*kept) {
      if (at_once) throw Boom(1);
      *kept = cx.waker();
      return karx::pending;
    }
    throw Boom(2);
  }
};

Foreign await_now(int* out) { *out = co_await Now{5}; }

Foreign await_self_waking(bool through_clone, int* polls, int* out) {
  *out = co_await SelfWaking{through_clone, polls};
}

Foreign await_pending(bool clone, std::optional<karx::Waker>* kept, std::atomic<int>* resumed) {
  (void)co_await Pending{clone, kept};
  resumed->fetch_add(1);
}

Foreign await_throwing(bool at_once, std::optional<karx::Waker>* kept, int* caught, std::thread::id* caught_on) {
  try {
    (void)co_await Throwing{at_once, kept};
  } catch (const Boom& e) {
    *caught = e.id;
    *caught_on = std::this_thread::get_id();
  }
}

Foreign await_latch(std::shared_ptr<LatchState> s, std::atomic<int>* drops, std::atomic<int>* resumed) {
  co_await Latch{std::move(s), probes::DropCounter(*drops)};
  resumed->fetch_add(1);
}

// A future whose first poll hands clones of its waker to two threads: one makes it ready and
// wakes it once; the other wakes it over and over until it sees it ready, so its wakes (and
// the polls they run on its thread) race with that one wake, with the first poll, with
// await_suspend and with each other. A wake lost anywhere leaves the coroutine suspended.
struct RaceState {
  std::atomic<bool> ready{false};
  std::atomic<int> polls{0};
  std::thread::id ready_poll_thread;  // written by the poll that found it ready
  std::vector<std::thread> threads;
  std::optional<karx::Waker> late;  // woken by the test after completion
};
struct Racy {
  RaceState* s;
  karx::Poll<int> poll(karx::Context& cx) {
    s->polls.fetch_add(1);
    if (s->ready.load(std::memory_order_acquire)) {
      s->ready_poll_thread = std::this_thread::get_id();
      return karx::ready(99);
    }
    if (s->threads.empty()) {
      s->late = cx.waker();
      s->threads.emplace_back([s = s, w = cx.waker()] {
        s->ready.store(true, std::memory_order_release);
        w.wake();
      });
      s->threads.emplace_back([s = s, w = cx.waker()] {
        while (!s->ready.load(std::memory_order_acquire)) w.wake();
      });
    }
    return karx::pending;
  }
};

Foreign await_racy(RaceState* s, std::atomic<int>* resumes, int* out, std::thread::id* resumed_on) {
  *out = co_await Racy{s};
  resumes->fetch_add(1);
  *resumed_on = std::this_thread::get_id();
}

// Its second poll (the first re-poll, on the waking thread) waits at `gate` before it reports
// ready: holds a re-poll in progress while the test destroys the coroutine.
struct HeldRepoll {
  probes::Gate* gate;
  std::optional<karx::Waker>* kept;
  probes::DropCounter drop;
  karx::Poll<int> poll(karx::Context& cx) {
    if (!*kept) {
      *kept = cx.waker();
      return karx::pending;
    }
    gate->pass();
    return karx::ready(1);
  }
};

Foreign await_held(probes::Gate* gate, std::optional<karx::Waker>* kept, std::atomic<int>* drops,
                   std::atomic<int>* resumed) {
  (void)co_await HeldRepoll{gate, kept, probes::DropCounter(*drops)};
  resumed->fetch_add(1);
}

// Keeps a clone of every waker it is polled with; ready after the first wake.
struct KeepsWakers {
  std::vector<karx::Waker>* kept;
  karx::Poll<int> poll(karx::Context& cx) {
    kept->push_back(cx.waker());
    return kept->size() > 1 ? karx::Poll<int>(karx::ready(3)) : karx::Poll<int>(karx::pending);
  }
};

Foreign await_keeps_wakers(std::vector<karx::Waker>* kept, std::atomic<int>* resumes) {
  (void)co_await KeepsWakers{kept};
  resumes->fetch_add(1);
}

// Destroys the coroutine that awaits it from inside its own re-poll (a misuse: the future
// would be destroyed while it runs).
struct DestroysItsAwaiter {
  Foreign** owner;
  std::optional<karx::Waker>* kept;
  karx::Poll<int> poll(karx::Context& cx) {
    if (!*kept) {
      *kept = cx.waker();
      return karx::pending;
    }
    (*owner)->destroy();
    return karx::ready(0);
  }
};

Foreign await_destroyer(Foreign** owner, std::optional<karx::Waker>* kept) {
  (void)co_await DestroysItsAwaiter{owner, kept};
}

}  // namespace own

// The task of a runtime test: waits for the latch, records its thread, returns 42 (or throws).
karx::Async<int> latched_task(std::shared_ptr<LatchState> s, std::atomic<int>* drops, std::thread::id* ran_on,
                              bool fail) {
  co_await Latch{std::move(s), probes::DropCounter(*drops)};
  *ran_on = std::this_thread::get_id();
  if (fail) throw Boom(3);
  co_return 42;
}

TEST(ForeignCoroutine, AwaitsTheJoinHandleOfARuntimeTaskAndResumesOnTheThreadThatCompletedIt) {
  karx::Runtime rt({.processors = 2});
  auto latch = std::make_shared<LatchState>();
  std::atomic<int> drops{0};
  std::thread::id task_thread, resumed_on;
  karx::JoinHandle<int> handle = rt.spawn(latched_task(latch, &drops, &task_thread, false));
  int out = 0;
  Foreign f = adl::await_handle(handle, &out, &resumed_on);
  EXPECT_FALSE(f.finished());  // the task waits for the latch: the coroutine suspended
  latch->release();
  ASSERT_TRUE(f.wait());
  EXPECT_EQ(out, 42);
  EXPECT_FALSE(handle);  // spent: polled in place
  EXPECT_NE(resumed_on, std::this_thread::get_id());
  EXPECT_EQ(resumed_on, task_thread);  // the completing worker re-polled the handle and resumed us
}

TEST(ForeignCoroutine, AJoinHandleRethrowsTheTasksException) {
  karx::Runtime rt({.processors = 2});
  auto latch = std::make_shared<LatchState>();
  std::atomic<int> drops{0};
  std::thread::id task_thread;
  int caught = 0;
  Foreign f = adl::await_throwing_handle(rt.spawn(latched_task(latch, &drops, &task_thread, true)), &caught);
  EXPECT_FALSE(f.finished());
  latch->release();
  ASSERT_TRUE(f.wait());
  EXPECT_EQ(caught, 3);
  EXPECT_EQ(f.error(), nullptr);
}

TEST(ForeignCoroutine, AwaitsASleepAndResumesOnTheTimerThread) {
  std::thread::id resumed_on;
  const auto start = std::chrono::steady_clock::now();
  Foreign f = adl::await_sleep(30ms, &resumed_on);
  EXPECT_FALSE(f.finished());
  ASSERT_TRUE(f.wait());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  EXPECT_NE(resumed_on, std::this_thread::get_id());
}

TEST(ForeignCoroutine, AwaitsAnAsyncAndResumesOnTheThreadThatWokeIt) {
  auto latch = std::make_shared<LatchState>();
  std::atomic<int> drops{0};
  int out = 0;
  std::thread::id resumed_on, opener;
  Foreign f = adl::await_async(adl::after_latch(latch, &drops), &out, &resumed_on);
  EXPECT_FALSE(f.finished());
  EXPECT_EQ(latch->polls.load(), 1);
  std::thread t([&] {
    opener = std::this_thread::get_id();
    latch->release();  // the wake re-polls the Async here, which finishes, and resumes us here
  });
  t.join();
  ASSERT_TRUE(f.finished());
  EXPECT_EQ(out, 7);
  EXPECT_EQ(resumed_on, opener);
  EXPECT_EQ(drops.load(), 1);  // the Async's frame (and the latch future in it) is gone
}

TEST(ForeignCoroutine, AReadyFutureSuspendsNothingAndAllocatesNothing) {
  int out = 0;
  {
    CountAllocations allocations;
    Foreign f = own::await_now(&out);
    EXPECT_TRUE(f.finished());
    EXPECT_EQ(allocations.count(), 0);
  }
  EXPECT_EQ(out, 5);

  // A handle whose task already completed.
  std::deque<karx::Task<>> queue;
  Counts c;
  auto [task, handle] = karx::spawn([]() -> karx::Async<int> { co_return 11; }(), probes::ProbeSchedule{&c, &queue});
  task.run();
  {
    CountAllocations allocations;
    Foreign f = adl::await_ready_handle(std::move(handle), &out);
    EXPECT_TRUE(f.finished());
    EXPECT_EQ(allocations.count(), 0);
  }
  EXPECT_EQ(out, 11);

  // The count sees the wake block when a poll keeps a waker (so the zeros above mean something).
  std::optional<karx::Waker> kept;
  std::atomic<int> resumed{0};
  {
    CountAllocations allocations;
    Foreign f = own::await_pending(/*clone=*/true, &kept, &resumed);
    EXPECT_FALSE(f.finished());
    EXPECT_EQ(allocations.count(), 1);
  }
  kept.reset();
  EXPECT_EQ(resumed.load(), 0);
}

TEST(ForeignCoroutine, AFutureThatWakesItselfDuringItsPollIsPolledAgainWithoutSuspending) {
  for (const bool through_clone : {false, true}) {
    int polls = 0, out = 0;
    std::optional<CountAllocations> allocations;
    allocations.emplace();
    Foreign f = own::await_self_waking(through_clone, &polls, &out);
    EXPECT_TRUE(f.finished()) << "through_clone " << through_clone;
    EXPECT_EQ(polls, 2);
    EXPECT_EQ(out, 2);
    // By reference: no waker outlived the poll, nothing allocated. A clone makes the block.
    EXPECT_EQ(allocations->count(), through_clone ? 1 : 0);
  }
  int steps = 0;
  Foreign y = adl::await_yield_now(&steps);  // yield_now wakes itself, then is ready
  EXPECT_TRUE(y.finished());
  EXPECT_EQ(steps, 2);
}

TEST(ForeignCoroutine, AWakeRacingWithThePollResumesTheCoroutineExactlyOnceOnTheThreadOfTheReadyPoll) {
  for (int i = 0; i < 2000; ++i) {
    own::RaceState s;
    std::atomic<int> resumes{0};
    int out = 0;
    std::thread::id resumed_on;
    {
      Foreign f = own::await_racy(&s, &resumes, &out, &resumed_on);
      const bool finished = f.wait();
      for (auto& t : s.threads) t.join();
      ASSERT_TRUE(finished) << "iteration " << i << ": a wake was lost";
      s.late->wake();  // a wake after completion is harmless
      EXPECT_EQ(resumes.load(), 1) << "iteration " << i;
      EXPECT_EQ(out, 99);
      EXPECT_EQ(resumed_on, s.ready_poll_thread) << "iteration " << i;
    }
    if (HasFailure()) break;
  }
}

TEST(ForeignCoroutine, AnExceptionFromPollIsRethrownByTheCoAwait) {
  std::optional<karx::Waker> kept;
  int caught = 0;
  std::thread::id caught_on;
  Foreign at_once = own::await_throwing(true, &kept, &caught, &caught_on);
  EXPECT_TRUE(at_once.finished());
  EXPECT_EQ(caught, 1);
  EXPECT_EQ(caught_on, std::this_thread::get_id());

  caught = 0;
  Foreign later = own::await_throwing(false, &kept, &caught, &caught_on);
  EXPECT_FALSE(later.finished());
  ASSERT_TRUE(kept);
  std::thread::id waker_thread;
  std::thread t([&] {
    waker_thread = std::this_thread::get_id();
    kept->wake();  // the re-poll throws here: the coroutine catches it here
  });
  t.join();
  ASSERT_TRUE(later.finished());
  EXPECT_EQ(caught, 2);
  EXPECT_EQ(caught_on, waker_thread);
  kept.reset();
}

TEST(ForeignCoroutine, WakersThatOutliveTheCoroutineMayStillBeWokenAndDropped) {
  std::vector<karx::Waker> kept;
  std::atomic<int> resumes{0};
  {
    Foreign f = own::await_keeps_wakers(&kept, &resumes);
    EXPECT_FALSE(f.finished());
    ASSERT_EQ(kept.size(), 1u);
    kept[0].wake();  // re-polled here: ready; the coroutine finishes
    ASSERT_TRUE(f.finished());
    EXPECT_EQ(kept.size(), 2u);
  }  // the frame and its awaiter are gone; the wakers still point at the wake block
  for (auto& w : kept) {
    w.wake();
    karx::Waker clone = w;
    std::move(clone).wake_and_release();
  }
  kept.clear();
  EXPECT_EQ(resumes.load(), 1);
}

TEST(ForeignCoroutine, DestroyingTheCoroutineWhileItWaitsCancelsTheWait) {
  // A kept waker: woken after the destruction, it resumes nothing.
  auto latch = std::make_shared<LatchState>();
  std::atomic<int> drops{0}, resumed{0};
  {
    Foreign f = own::await_latch(latch, &drops, &resumed);
    EXPECT_FALSE(f.finished());
  }
  EXPECT_EQ(drops.load(), 1);  // the awaited future was destroyed with the frame
  latch->release();
  EXPECT_EQ(resumed.load(), 0);

  // A sleep: its timer entry goes with it.
  const std::size_t timers = karx::detail::timer_pending_count();
  {
    Foreign f = adl::sleep_forever(&resumed);
    EXPECT_EQ(karx::detail::timer_pending_count(), timers + 1);
  }
  EXPECT_EQ(karx::detail::timer_pending_count(), timers);

  // A future that keeps no waker.
  std::optional<karx::Waker> none;
  {
    Foreign f = own::await_pending(false, &none, &resumed);
  }
  EXPECT_FALSE(none);
  EXPECT_EQ(resumed.load(), 0);
}

TEST(ForeignCoroutine, DestroyingTheCoroutineWaitsForARepollInProgressAndThenResumesNothing) {
  probes::Gate gate;
  std::optional<karx::Waker> kept;
  std::atomic<int> drops{0}, resumed{0};
  std::optional<Foreign> f;
  f.emplace(own::await_held(&gate, &kept, &drops, &resumed));
  ASSERT_TRUE(kept);
  gate.arm();
  std::thread waker([&] { kept->wake(); });  // re-polls on this thread, held at the gate
  ASSERT_TRUE(gate.wait_arrived());
  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    f.reset();  // must wait for the re-poll to return before destroying the future
    destroyed.store(true);
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(destroyed.load());
  EXPECT_EQ(drops.load(), 0);
  gate.open();  // the re-poll finds the future ready, sees the destruction, resumes nothing
  destroyer.join();
  waker.join();
  EXPECT_TRUE(destroyed.load());
  EXPECT_EQ(drops.load(), 1);
  EXPECT_EQ(resumed.load(), 0);
  kept.reset();
}

TEST(ForeignCoroutineDeathTest, DestroyedFromInsideThePollOfTheFutureItAwaitsIsAFatalError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::optional<karx::Waker> kept;
        Foreign* owner = nullptr;
        Foreign f = own::await_destroyer(&owner, &kept);
        owner = &f;
        kept->wake();  // re-polled here; the poll destroys the frame: detach cannot wait for itself
      },
      "destroyed from inside that future's poll");
}

// Inside an Async the task's own poll polls karx futures (the promise's await_transform comes
// before the free operator): the frame resumes inside a task's poll on a worker, not on the
// thread that woke the future (here, the timer thread).
karx::Async<int> sleeps_then_checks(karx::Runtime* rt) {
  co_await karx::sleep_for(5ms);
  const bool on_worker = karx::Runtime::current() == rt;
  auto child = karx::exec([]() -> karx::Async<int> {
    co_await karx::sleep_for(5ms);
    co_return 1;
  }());
  const std::optional<int> r = co_await child;
  co_return on_worker&& karx::Runtime::current() == rt&& r == 1 ? 1 : 0;
}

TEST(ForeignCoroutine, InsideAnAsyncTheTaskPollsKarxFuturesItself) {
  karx::Runtime rt({.processors = 2});
  EXPECT_EQ(rt.block_on(sleeps_then_checks(&rt)), 1);
  EXPECT_EQ(karx::block_on(rt.spawn(sleeps_then_checks(&rt))), std::optional<int>(1));
}

// ============================================================================================
// Standard awaitables awaited inside karx::Async.
// ============================================================================================

namespace awaitables {

// An operation that completes on a thread of its own, `delay` after await_suspend started it
// (or once `go` is set). Its state is shared with that thread, so its awaiter may be destroyed
// while it runs (the operation tolerates it: the awaiter is cancellable).
struct ThreadOp {
  std::atomic<bool> go{true};
  std::chrono::milliseconds delay{0};
  int result = 0;  // written by the operation's thread before it resumes the handle
  std::thread::id completed_on;
  std::thread thread;
  std::atomic<bool> started{false};  // set once `thread` is assigned
  ~ThreadOp() {
    if (!thread.joinable()) return;
    // The thread may hold the last reference to its operation.
    if (thread.get_id() == std::this_thread::get_id())
      thread.detach();
    else
      thread.join();
  }
};
struct OnThread {
  std::shared_ptr<ThreadOp> op;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    op->thread = std::thread([op = op, h] {
      while (!op->go.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
      std::this_thread::sleep_for(op->delay);
      op->result = 42;
      op->completed_on = std::this_thread::get_id();
      h.resume();
    });
    op->started.store(true, std::memory_order_release);
  }
  int await_resume() const { return op->result; }
};

// await_suspend's return: false (not suspended), true, the bridge's own handle, or another
// coroutine's handle that resumes the bridge (`resume_first`: the bridge is resumed inside
// await_suspend already, before it returns that handle).
enum class Returns { bool_false, handle_itself, other_handle, resumed_then_other_handle };
Detached run_then_resume(std::coroutine_handle<> bridge, bool* ran) {
  *ran = true;
  if (bridge) bridge.resume();
  co_return;
}
struct ReturnsFalse {
  int* suspends;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) noexcept {
    ++*suspends;
    return false;
  }
  int await_resume() const noexcept { return 8; }
};
struct ReturnsHandle {
  Returns how;
  bool* ran;
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    switch (how) {
      case Returns::handle_itself:
        return h;
      case Returns::other_handle:
        return run_then_resume(h, ran).handle;
      case Returns::resumed_then_other_handle:
        h.resume();
        return run_then_resume(nullptr, ran).handle;
      default:
        return std::noop_coroutine();
    }
  }
  int await_resume() const noexcept { return 9; }
};

// Resumes the handle before await_suspend returns: on this thread, or on another one that
// await_suspend joins, or on another one it does not wait for (racing with the return).
enum class Early { same_thread, joined_thread, racing_thread };
struct ResumesEarly {
  Early how;
  std::thread* racer;
  int value = 0;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    switch (how) {
      case Early::same_thread:
        value = 1;
        h.resume();
        break;
      case Early::joined_thread:
        std::thread([this, h] {
          value = 2;
          h.resume();
        }).join();
        break;
      case Early::racing_thread:
        *racer = std::thread([this, h] {
          value = 3;
          h.resume();
        });
        break;
    }
  }
  int await_resume() const noexcept { return value; }
};

// Throws from await_suspend (the handle not taken) or from await_resume.
struct ThrowsFrom {
  bool suspend;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    if (suspend) throw Boom(4);
    h.resume();
    return true;
  }
  int await_resume() const { throw Boom(5); }
};

// Awaitables through operator co_await: a member one, and a free one found by ADL.
struct ValueAwaiter {
  int value;
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  int await_resume() const noexcept { return value; }
};
struct WithMember {
  int value;
  ValueAwaiter operator co_await() const noexcept { return ValueAwaiter{value}; }
};
struct WithFree {
  int value;
};
OnThread operator co_await(WithFree w) {
  auto op = std::make_shared<ThreadOp>();
  op->delay = std::chrono::milliseconds(w.value);
  return OnThread{std::move(op)};
}
// A non-movable awaiter, made in place by operator co_await.
struct Pinned {
  int value;
  Pinned(int v) : value(v) {}
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) const noexcept { return false; }
  int await_resume() const noexcept { return value; }
};
struct MakesPinned {
  int value;
  Pinned operator co_await() const { return Pinned(value); }
};

// A foreign coroutine awaited inside an Async: a lazy task type with the usual continuation.
struct ForeignTask {
  struct promise_type {
    int value = 0;
    std::coroutine_handle<> continuation;
    ForeignTask get_return_object() { return ForeignTask{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct Final {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().continuation;
      }
      void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_value(int v) { value = v; }
    void unhandled_exception() { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
  ForeignTask(ForeignTask&& o) noexcept : h(std::exchange(o.h, nullptr)) {}
  ~ForeignTask() {
    if (h) h.destroy();
  }
  struct Awaiter {
    std::coroutine_handle<promise_type> h;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> continuation) noexcept {
      h.promise().continuation = continuation;
      return h;  // symmetric transfer into the task
    }
    int await_resume() const noexcept { return h.promise().value; }
  };
  Awaiter operator co_await() && noexcept { return Awaiter{h}; }

 private:
  explicit ForeignTask(std::coroutine_handle<promise_type> handle) : h(handle) {}
};
ForeignTask foreign_sum(std::shared_ptr<ThreadOp> op) {
  const int v = co_await OnThread{std::move(op)};  // a foreign coroutine awaiting a thread
  co_return v + 1;
}

}  // namespace awaitables

karx::Async<int> await_on_thread(std::shared_ptr<awaitables::ThreadOp> op, karx::Runtime* rt, bool* in_task) {
  const int v = co_await awaitables::OnThread{std::move(op)};
  *in_task = rt == nullptr || karx::Runtime::current() == rt;
  co_return v;
}

TEST(AsyncAwaitsAwaitables, OneThatCompletesOnAnotherThreadResumesInTheTasksPoll) {
  karx::Runtime rt({.processors = 2});
  auto op = std::make_shared<awaitables::ThreadOp>();
  op->delay = 10ms;
  bool in_task = false;
  const std::optional<int> r = karx::block_on(rt.spawn(await_on_thread(op, &rt, &in_task)));
  EXPECT_EQ(r, std::optional<int>(42));
  EXPECT_TRUE(in_task);  // not on the operation's thread: the task was woken and rescheduled

  // Polled by hand: pending, one wake from the operation's thread, then ready.
  auto op2 = std::make_shared<awaitables::ThreadOp>();
  op2->go = false;
  WakerCount wc;
  {
    karx::Waker w = wc.waker();
    auto a = await_on_thread(op2, nullptr, &in_task);
    EXPECT_TRUE(probes::poll_with(a, w).is_pending());
    EXPECT_EQ(wc.live.load(), 2);  // the bridge holds a clone
    op2->go = true;
    op2->thread.join();
    EXPECT_EQ(wc.wakes.load(), 1);
    EXPECT_EQ(wc.live.load(), 1);  // the completion consumed the clone
    auto p = probes::poll_with(a, w);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), 42);
  }
  EXPECT_EQ(wc.live.load(), 0);
}

karx::Async<int> await_returns_false(int* suspends) { co_return co_await awaitables::ReturnsFalse{suspends}; }
karx::Async<int> await_returns_handle(awaitables::Returns how, bool* ran) {
  co_return co_await awaitables::ReturnsHandle{how, ran};
}

TEST(AsyncAwaitsAwaitables, AwaitSuspendReturningFalseDoesNotSuspend) {
  int suspends = 0;
  WakerCount wc;
  {
    karx::Waker w = wc.waker();
    auto a = await_returns_false(&suspends);
    auto p = probes::poll_with(a, w);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), 8);
    EXPECT_EQ(suspends, 1);
    EXPECT_EQ(wc.wakes.load(), 0);
    EXPECT_EQ(wc.live.load(), 1);  // the bridge and its clone are gone already
  }
}

TEST(AsyncAwaitsAwaitables, AwaitSuspendReturningAHandle) {
  WakerCount wc;
  karx::Waker w = wc.waker();
  {
    // Its own argument: resume the awaiting coroutine at once.
    bool ran = false;
    auto a = await_returns_handle(awaitables::Returns::handle_itself, &ran);
    auto p = probes::poll_with(a, w);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), 9);
    EXPECT_EQ(wc.wakes.load(), 0);
  }
  for (auto how : {awaitables::Returns::other_handle, awaitables::Returns::resumed_then_other_handle}) {
    // Another coroutine: it runs (symmetric transfer) once the chain has suspended; the bridge
    // is resumed by it (or was, inside await_suspend), which wakes the task once.
    bool ran = false;
    const int wakes = wc.wakes.load();
    auto a = await_returns_handle(how, &ran);
    EXPECT_TRUE(probes::poll_with(a, w).is_pending());
    EXPECT_TRUE(ran);
    EXPECT_EQ(wc.wakes.load(), wakes + 1);
    auto p = probes::poll_with(a, w);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), 9);
  }
  EXPECT_EQ(wc.live.load(), 1);
}

karx::Async<int> await_resumes_early(awaitables::Early how, std::thread* racer) {
  co_return co_await awaitables::ResumesEarly{how, racer};
}

TEST(AsyncAwaitsAwaitables, ResumedBeforeAwaitSuspendReturns) {
  WakerCount wc;
  karx::Waker w = wc.waker();
  for (auto how : {awaitables::Early::same_thread, awaitables::Early::joined_thread}) {
    auto a = await_resumes_early(how, nullptr);
    auto p = probes::poll_with(a, w);  // completes in the first poll, with no wake
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), how == awaitables::Early::same_thread ? 1 : 2);
  }
  EXPECT_EQ(wc.wakes.load(), 0);
  EXPECT_EQ(wc.live.load(), 1);

  // Racing with the return of await_suspend, and with the chain's suspension.
  for (int i = 0; i < 2000; ++i) {
    std::thread racer;
    auto a = await_resumes_early(awaitables::Early::racing_thread, &racer);
    probes::WakeCounter counter;
    const int v = probes::block_on(a, counter);
    racer.join();
    ASSERT_EQ(v, 3) << "iteration " << i;
    ASSERT_LE(counter.wakes(), 1) << "iteration " << i;
  }
}

karx::Async<int> await_pending_then_drop(std::shared_ptr<awaitables::ThreadOp> op, bool* resumed) {
  const int v = co_await awaitables::OnThread{std::move(op)};
  *resumed = true;
  co_return v;
}

TEST(AsyncAwaitsAwaitables, DestroyingTheAsyncWhileTheAwaitableIsPendingLeavesNothingBehind) {
  auto op = std::make_shared<awaitables::ThreadOp>();
  op->go = false;
  WakerCount wc;
  bool resumed = false;
  {
    karx::Waker w = wc.waker();
    auto a = await_pending_then_drop(op, &resumed);
    EXPECT_TRUE(probes::poll_with(a, w).is_pending());
    EXPECT_EQ(wc.live.load(), 2);
  }  // the Async, its frame and the awaiter are destroyed; the operation still holds the bridge
  EXPECT_EQ(wc.live.load(), 0);  // the bridge let go of the waker at once
  op->go = true;                 // now the operation completes and resumes the bridge
  op->thread.join();
  EXPECT_EQ(wc.wakes.load(), 0);
  EXPECT_FALSE(resumed);
  // (ASan: the bridge was freed by that completion; nothing of the Async was touched.)

  // A runtime task canceled while it waits.
  karx::Runtime rt({.processors = 2});
  auto op2 = std::make_shared<awaitables::ThreadOp>();
  op2->go = false;
  auto handle = rt.spawn(await_pending_then_drop(op2, &resumed));
  while (!op2->started.load(std::memory_order_acquire)) std::this_thread::sleep_for(100us);
  handle.cancel();
  EXPECT_EQ(karx::block_on(std::move(handle)), std::nullopt);
  op2->go = true;
  op2->thread.join();
  EXPECT_FALSE(resumed);
}

karx::Async<int> await_throwing(bool from_suspend) {
  try {
    (void)co_await awaitables::ThrowsFrom{from_suspend};
  } catch (const Boom& e) {
    co_return e.id;
  }
  co_return 0;
}

TEST(AsyncAwaitsAwaitables, ExceptionsFromTheAwaiterReachTheCoAwait) {
  for (const bool from_suspend : {true, false}) {
    auto a = await_throwing(from_suspend);
    auto p = probes::poll_once(a);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), from_suspend ? 4 : 5);
  }
}

karx::Async<int> await_through_operators(std::shared_ptr<awaitables::ThreadOp> op) {
  const int a = co_await awaitables::WithMember{1};
  const int b = co_await awaitables::WithFree{2};  // 42 after 2 ms on its own thread
  const int c = co_await awaitables::MakesPinned{3};
  const int d = co_await awaitables::foreign_sum(std::move(op));  // 43
  co_return a + b + c + d;
}

TEST(AsyncAwaitsAwaitables, OperatorCoAwaitAndForeignCoroutineTypes) {
  auto op = std::make_shared<awaitables::ThreadOp>();
  EXPECT_EQ(karx::block_on(await_through_operators(op)), 1 + 42 + 3 + 43);
}

TEST(AsyncAwaitsAwaitables, TheCompletionWakesTheWakerOfTheLatestPoll) {
  auto op = std::make_shared<awaitables::ThreadOp>();
  op->go = false;
  WakerCount first, second;
  bool in_task = false;
  {
    karx::Waker w1 = first.waker(), w2 = second.waker();
    auto a = await_on_thread(op, nullptr, &in_task);
    EXPECT_TRUE(probes::poll_with(a, w1).is_pending());
    EXPECT_TRUE(probes::poll_with(a, w2).is_pending());  // polled by someone else now
    EXPECT_EQ(first.live.load(), 1);                     // the first clone was dropped
    EXPECT_EQ(second.live.load(), 2);
    op->go = true;
    op->thread.join();
    EXPECT_EQ(first.wakes.load(), 0);
    EXPECT_EQ(second.wakes.load(), 1);
    auto p = probes::poll_with(a, w2);
    ASSERT_TRUE(p.is_ready());
    EXPECT_EQ(p.value(), 42);
  }
  EXPECT_EQ(first.live.load(), 0);
  EXPECT_EQ(second.live.load(), 0);
}

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
