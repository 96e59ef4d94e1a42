// Probes for the karx.sync tests: a waker that counts its wakes and its live clones, a future
// that a test (or another thread) completes from outside, and a small runtime's options.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "support/probes.hpp"

namespace probes {

// A waker target counting wakes and live Wakers (clones), from any thread. Every Waker from
// waker() is the same target (will_wake), distinct from any other CountingWaker's.
class CountingWaker {
 public:
  CountingWaker() : s_(new State) {}
  CountingWaker(const CountingWaker&) = delete;
  CountingWaker& operator=(const CountingWaker&) = delete;
  ~CountingWaker() { unref(s_); }

  karx::Waker waker() const { return karx::Waker::from_raw(clone(s_)); }
  int wakes() const { return s_->wakes.load(); }
  // Wakers of this target alive now (held by the test or by the futures under test).
  int alive() const { return s_->alive.load(); }

 private:
  struct State {
    std::atomic<int> refs{1};  // the CountingWaker + every Waker
    std::atomic<int> wakes{0};
    std::atomic<int> alive{0};
  };
  static State* of(const void* p) { return static_cast<State*>(const_cast<void*>(p)); }
  static void unref(State* s) {
    if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
  }
  static karx::RawWaker clone(const void* p) {
    of(p)->refs.fetch_add(1, std::memory_order_relaxed);
    of(p)->alive.fetch_add(1);
    return karx::RawWaker{p, &kVTable};
  }
  static void wake(const void* p) {
    wake_by_ref(p);
    drop(p);
  }
  static void wake_by_ref(const void* p) { of(p)->wakes.fetch_add(1); }
  static void drop(const void* p) {
    of(p)->alive.fetch_sub(1);
    unref(of(p));
  }
  static constexpr karx::RawWakerVTable kVTable{&clone, &wake, &wake_by_ref, &drop};

  State* s_;
};

// A future completed from outside: Latch<T>::future() is pending until open(value) (or fail()),
// counts its polls, keeps the waker of its latest poll and wakes it on open. Thread-safe.
// T = void: open() takes no value.
template <class T>
class Latch {
  using Stored = std::conditional_t<std::is_void_v<T>, bool, T>;

 public:
  struct State {
    std::mutex m;
    std::optional<Stored> value;
    int fail = 0;  // nonzero: the id of the Boom the next poll throws
    std::optional<karx::Waker> waker;
    std::atomic<int> polls{0};
  };

  class Future {
   public:
    Future(std::shared_ptr<State> s, std::atomic<int>* drops) : s_(std::move(s)), drop_(*drops) {}
    karx::Poll<T> poll(karx::Context& cx) {
      s_->polls.fetch_add(1);
      std::optional<karx::Waker> old;
      std::lock_guard lock(s_->m);
      if (s_->fail != 0) throw Boom(s_->fail);
      if (s_->value) {
        if constexpr (std::is_void_v<T>)
          return karx::ready();
        else
          return karx::Poll<T>::ready(std::move(*s_->value));
      }
      if (!s_->waker || !s_->waker->will_wake(cx.waker())) {
        old = std::move(s_->waker);
        s_->waker.emplace(cx.waker());
      }
      return karx::pending;
    }

   private:
    std::shared_ptr<State> s_;
    DropCounter drop_;
  };

  Future future() { return Future(s_, &drops_); }

  template <class... V>
  void open(V&&... v) {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(s_->m);
      if constexpr (std::is_void_v<T>)
        s_->value.emplace(true);
      else
        s_->value.emplace(std::forward<V>(v)...);
      w = std::move(s_->waker);
      s_->waker.reset();
    }
    if (w) w->wake();
  }
  // The next poll throws Boom(id).
  void fail(int id = 1) {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(s_->m);
      s_->fail = id;
      w = std::move(s_->waker);
      s_->waker.reset();
    }
    if (w) w->wake();
  }
  // Wakes the latest poll's waker without completing (a spurious wake).
  void wake() {
    std::optional<karx::Waker> w;
    {
      std::lock_guard lock(s_->m);
      w = s_->waker;
    }
    if (w) w->wake();
  }
  // Whether the latest pending poll's waker is kept.
  bool holds_waker() {
    std::lock_guard lock(s_->m);
    return s_->waker.has_value();
  }
  int polls() const { return s_->polls.load(); }
  int drops() const { return drops_.load(); }

 private:
  std::shared_ptr<State> s_ = std::make_shared<State>();
  std::atomic<int> drops_{0};
};

// A runtime of two processors (the machines here have two cores).
inline karx::RuntimeOptions two_processors() {
  karx::RuntimeOptions o;
  o.processors = 2;
  return o;
}

template <class F>
auto poll_with_counting(F& f, const CountingWaker& w) {
  karx::Waker waker = w.waker();
  karx::Context cx(waker);
  return f.poll(cx);
}

}  // namespace probes
