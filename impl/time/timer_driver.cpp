// The timer driver behind karx::Sleep (modules/time/karx.time.cppm).
//
// One process-wide driver: a binary min-heap of TimerEntry pointers ordered by (deadline,
// registration number), under one mutex, and one thread that waits on a condition variable
// until the earliest deadline (std::condition_variable::wait_until on steady_clock, i.e.
// pthread_cond_clockwait on CLOCK_MONOTONIC: sub-millisecond resolution). The thread starts on
// the first registration; with nothing pending it waits with no timeout, so an idle process
// gets no periodic wake-ups. A registration wakes the thread only when its deadline is earlier
// than the one the thread is waiting for.
//
// Entries are intrusive: each knows its heap index, so a destroyed Sleep removes its entry in
// O(log n) under the lock and drops the waker clone right away (no tombstones that live until
// the deadline). Firing pops the due entries and moves their wakers out under the lock, then
// wakes them with the lock released, so a wake may register or destroy sleeps (even the one
// being fired) without deadlock.
//
// The stand-in (TimerStandIn in karx.time.cppm): a runtime's thread about to sleep in its
// netpoller (impl/executor/netpoll.cpp) waits no later than the earliest deadline and fires
// what is due itself, so that timers and sockets share its one wait and a timer firing into an
// idle runtime wakes its task on that thread. Both halves, under the driver's lock:
//  - begin: with no stand-in yet, the caller becomes it, `until` = the earliest deadline (max
//    if none: a deadline registered during its wait interrupts it, see arm). A
//    driver thread that waits for a deadline no later than that is notified: it then waits
//    kBackstop longer than a covered deadline, by which time the stand-in has fired it.
//  - arm: a deadline earlier than the stand-in's `until` lowers it and interrupts the stand-in
//    (under the lock, so the stand-in, on its thread's stack, cannot end meanwhile).
//  - end: no stand-in. The driver is not told: a deadline that the stand-in left before (its
//    sockets woke it, and its thread went to run tasks) fires on the driver at most kBackstop
//    late, unless a stand-in (usually the same thread, back to sleep) fires it first.
// Either side may fire an entry; each pops it under the lock, so it fires once.
//
// Ownership: a Sleep allocates its entry on its first pending poll and frees it itself. While
// an entry is in the heap (`armed`) the driver may touch it, and only under the lock; the driver
// never touches an entry after clearing `armed`. So the owner frees an unarmed entry without
// taking the lock, and takes the lock to remove an armed one.
module;
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>
module karx.time;
import karx.waker;
import karx.task;

// The names of this file live in karx::detail::timers, so that they cannot clash with (or be
// made ambiguous by) names that karx's other modules declare in karx::detail.
namespace karx::detail::timers {
using clock = std::chrono::steady_clock;
inline constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();

// A Waker that holds nothing (Waker has no default constructor); waking or dropping it is a no-op.
inline Waker empty_waker() noexcept { return Waker::from_raw(RawWaker{nullptr, nullptr}); }
}  // namespace karx::detail::timers

namespace karx::detail {

struct TimerEntry {
  using clock = timers::clock;
  static constexpr std::size_t npos = timers::npos;

  explicit TimerEntry(clock::time_point d) noexcept : deadline(d) {}

  const clock::time_point deadline;
  // Guarded by the driver's mutex.
  std::uint64_t seq = 0;                // registration number: equal deadlines fire in registration order
  std::size_t index = npos;             // position in the heap, npos when not in it
  Waker waker = timers::empty_waker();  // the clone to wake; empty when not in the heap
  // index != npos, readable without the lock by the owner. Set (true) by the owner under the
  // lock; cleared (false) under the lock by the driver when it fires the entry, as its last
  // access (release: the owner's acquire load that sees false may then free the entry), by
  // the owner when it removes the entry, and by the driver's shutdown.
  std::atomic<bool> armed{false};
  // Owner-only (the Sleep's poller; the driver never reads them): which waker was registered
  // last, so a re-poll with the same waker returns pending without the lock.
  const void* waker_data = nullptr;
  const RawWakerVTable* waker_vtable = nullptr;
};

}  // namespace karx::detail

namespace karx::detail::timers {
namespace {

class TimerDriver {
 public:
  // Immortal: a Sleep may be destroyed, or even polled, during static destruction after the
  // driver has shut down, so the object (mutex, heap) must stay valid; only its thread is
  // stopped at exit, by the function-local static `stop_at_exit`.
  static TimerDriver& get() {
    static TimerDriver* const driver = [] {
      auto* d = new TimerDriver;
      pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child);
      return d;
    }();
    struct StopAtExit {
      ~StopAtExit() { driver->shutdown(); }
    };
    static const StopAtExit stop_at_exit;
    return *driver;
  }

  // Puts `entry` in the heap with a clone of `waker`, or, if it is there already, replaces its
  // waker (the old one is dropped after the lock is released). Throws std::runtime_error after
  // shutdown, std::system_error if the thread cannot be started.
  void arm(TimerEntry& entry, const Waker& waker) {
    Waker clone = waker;  // runs the waker's clone function outside the lock
    bool notify = false;
    {
      std::lock_guard lock(mu_);
      if (stopping_)
        throw std::runtime_error("karx::Sleep: polled after the timer driver shut down (static destruction)");
      if (!started_) start();
      if (entry.index == npos) {
        entry.seq = next_seq_++;
        push(&entry);  // may throw bad_alloc: nothing changed yet
        entry.armed.store(true, std::memory_order_relaxed);
        // Wake the thread only if it would otherwise sleep past this deadline; then it will
        // look at the heap again anyway, so a second registration need not notify again.
        if (entry.deadline < wake_at_) {
          wake_at_ = entry.deadline;
          notify = true;
        }
        if (stand_in_ != nullptr && entry.deadline < stand_in_->until) {
          stand_in_->until = entry.deadline;
          stand_in_->interrupt(stand_in_->context);  // begins again, with this deadline
        }
      }
      std::swap(entry.waker, clone);  // `clone` now holds the replaced waker, if any
    }
    if (notify) cv_.notify_one();
  }  // the replaced waker is dropped here, outside the lock

  // Removes `entry` from the heap if the driver has not fired it meanwhile.
  void disarm(TimerEntry& entry) noexcept {
    Waker dropped = empty_waker();
    {
      std::lock_guard lock(mu_);
      if (entry.index == npos) return;
      remove(&entry);
      entry.armed.store(false, std::memory_order_relaxed);
      dropped = std::move(entry.waker);
    }
    // No notify: if it was the earliest, the thread wakes once at its deadline, finds nothing
    // due and waits for the next one (or for good). Dropped outside the lock.
  }

  std::size_t pending() noexcept {
    std::lock_guard lock(mu_);
    return heap_.size();
  }

  // --- The stand-in's half (see the top of the file) -------------------------------------------
  clock::time_point stand_in_begin(TimerStandIn& s) noexcept {
    bool notify = false;
    clock::time_point until;  // s.until may be lowered by an arm as soon as we unlock
    {
      std::lock_guard lock(mu_);
      if (stopping_ || stand_in_ != nullptr) return clock::time_point::max();
      // Even with nothing pending: a deadline registered during the wait interrupts it (arm).
      stand_in_ = &s;
      s.until = heap_.empty() ? clock::time_point::max() : heap_.front()->deadline;
      // The driver would wake for this deadline too (min: it is awake and will look again).
      if (!heap_.empty() && started_ && wake_at_ != clock::time_point::min() && wake_at_ <= s.until) {
        wake_at_ = clock::time_point::min();  // one notify: it looks again before waiting
        notify = true;
      }
      until = s.until;
    }
    if (notify) cv_.notify_one();
    return until;
  }

  void stand_in_end(TimerStandIn& s) noexcept {
    std::lock_guard lock(mu_);
    if (stand_in_ == &s) stand_in_ = nullptr;
  }

  std::size_t fire_due(void (*before_wakes)(void*) noexcept, void* context) noexcept {
    std::size_t fired = 0;
    for (;;) {
      std::optional<Waker> due[32];  // on the stack: firing allocates nothing
      std::size_t n = 0;
      {
        std::lock_guard lock(mu_);
        if (stopping_) return fired;
        const clock::time_point now = clock::now();
        while (n < std::size(due) && front_due(now)) due[n++].emplace(take_front());
      }
      if (n == 0) return fired;
      if (fired == 0 && before_wakes != nullptr) before_wakes(context);
      for (std::size_t i = 0; i < n; ++i) wake(*due[i]);
      fired += n;
      if (n < std::size(due)) return fired;
    }  // the wakers are dropped with `due`, outside the lock
  }

 private:
  TimerDriver() = default;

  // Under the lock. A bare pthread rather than std::thread: nothing of the thread lives on the
  // heap (std::thread allocates its start state), so a child forked without exec, which has
  // no copy of the thread, has no leaked memory either (LeakSanitizer), and forgetting the
  // parent's thread there takes no pthread call.
  void start() {
    if (due_.capacity() < kBatch) due_.reserve(kBatch);  // firing then never allocates under the lock
    const int err = pthread_create(&thread_, nullptr, &thread_main, this);
    if (err != 0) throw std::system_error(err, std::generic_category(), "karx: cannot start the timer driver thread");
    started_ = true;
    pthread_setname_np(thread_, "karx-timer");
  }
  static void* thread_main(void* self) noexcept {
    static_cast<TimerDriver*>(self)->run();
    return nullptr;
  }

  void run() noexcept {
    std::vector<Waker>& due = due_;
    std::unique_lock lock(mu_);
    while (!stopping_) {
      const clock::time_point now = clock::now();
      if (heap_.empty() || heap_.front()->deadline > now) {
        // Wait for the earliest deadline (capped, so that far-off deadlines never meet an
        // overflow in the wait), or for good when nothing is pending.
        if (heap_.empty()) {
          wake_at_ = clock::time_point::max();
          cv_.wait(lock);
        } else {
          // A stand-in that will wake by this deadline fires it: wait kBackstop longer, in
          // case it leaves its wait first and does not come back in time.
          const clock::time_point front = heap_.front()->deadline;
          const bool covered = stand_in_ != nullptr && stand_in_->until <= front;
          const clock::duration wait = front - now + (covered ? kBackstop : clock::duration::zero());
          wake_at_ = wait > kMaxWait ? now + kMaxWait : now + wait;
          cv_.wait_until(lock, wake_at_);
        }
        wake_at_ = clock::time_point::min();  // awake: it will look at the heap before waiting
        continue;
      }
      while (due.size() < kBatch && front_due(now)) due.push_back(take_front());
      lock.unlock();
      for (const Waker& waker : due) wake(waker);
      due.clear();  // drops the wakers, outside the lock too
      lock.lock();
    }
  }

  // A waker that throws from wake() must not take the driver (and every other timer of the
  // process) down with it: the exception is caught here, reported on stderr and dropped, and the
  // driver goes on with the next waker.
  static void wake(const Waker& waker) noexcept {
    try {
      waker.wake();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "karx: timer driver: a waker threw from wake(): %s (ignored)\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "karx: timer driver: a waker threw from wake(): non-standard exception (ignored)\n");
    }
  }

  // At static destruction: stops and joins the thread. Pending entries are taken out of the
  // heap and their wakers dropped (not woken); their Sleeps stay valid and may still be
  // destroyed, but polling one that is not due throws.
  void shutdown() noexcept {
    std::vector<Waker> dropped;
    bool join = false;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      try {
        dropped.reserve(heap_.size());
      } catch (...) {
        // Out of memory at exit: the wakers are then left alone (not dropped) below.
      }
      const bool drop = dropped.capacity() >= heap_.size();
      for (TimerEntry* entry : heap_) {
        entry->index = npos;
        if (drop) dropped.push_back(std::move(entry->waker));
        entry->armed.store(false, std::memory_order_release);
      }
      heap_.clear();
      join = std::exchange(started_, false);
    }
    cv_.notify_all();
    if (join) {
      // exit() called from a wake on the driver thread itself: it cannot join itself.
      if (pthread_equal(thread_, pthread_self()))
        pthread_detach(thread_);
      else
        pthread_join(thread_, nullptr);
    }
  }

  // fork() without exec: the child has a copy of the heap and of every Sleep, but not the
  // driver's thread. The lock is held across fork (no user code ever runs under it, so this
  // cannot deadlock), so the child's copy is consistent and unlocked; the child forgets the
  // parent's thread and starts its own at its first registration, which then also fires the
  // copied entries. Without this, a forked child that polls a Sleep (gtest's "fast" death
  // tests do) would wait forever, and its exit() would join a thread it does not have.
  static void before_fork() noexcept { get().mu_.lock(); }
  static void after_fork_in_parent() noexcept { get().mu_.unlock(); }
  static void after_fork_in_child() noexcept {
    TimerDriver& d = get();
    d.started_ = false;     // the parent's thread is not here: forget it (no pthread call)
    d.stand_in_ = nullptr;  // nor is the parent's stand-in
    d.wake_at_ = clock::time_point::min();
    d.mu_.unlock();
  }

  // Firing, under the lock: whether the earliest entry is due, and taking it out with its waker.
  bool front_due(clock::time_point now) const noexcept { return !heap_.empty() && heap_.front()->deadline <= now; }
  Waker take_front() noexcept {
    TimerEntry* entry = heap_.front();
    remove(entry);
    Waker waker = std::move(entry->waker);
    entry->armed.store(false, std::memory_order_release);  // last access to the entry
    return waker;
  }

  // The heap: heap_[0] is the earliest; each entry's `index` is its position.
  static bool earlier(const TimerEntry* a, const TimerEntry* b) noexcept {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
  }
  void place(TimerEntry* entry, std::size_t i) noexcept {
    heap_[i] = entry;
    entry->index = i;
  }
  void sift_up(std::size_t i) noexcept {
    TimerEntry* entry = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (!earlier(entry, heap_[parent])) break;
      place(heap_[parent], i);
      i = parent;
    }
    place(entry, i);
  }
  void sift_down(std::size_t i) noexcept {
    TimerEntry* entry = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
      std::size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && earlier(heap_[child + 1], heap_[child])) ++child;
      if (!earlier(heap_[child], entry)) break;
      place(heap_[child], i);
      i = child;
    }
    place(entry, i);
  }
  void push(TimerEntry* entry) {
    heap_.push_back(entry);
    sift_up(heap_.size() - 1);
  }
  void remove(TimerEntry* entry) noexcept {
    const std::size_t i = entry->index;
    TimerEntry* last = heap_.back();
    heap_.pop_back();
    entry->index = npos;
    if (last == entry) return;
    place(last, i);
    if (i > 0 && earlier(last, heap_[(i - 1) / 2]))
      sift_up(i);
    else
      sift_down(i);
  }

  static constexpr std::size_t kBatch = 256;  // wakers fired per lock hold
  static constexpr std::chrono::hours kMaxWait{24};
  // How much later than a deadline covered by a stand-in the driver wakes for it (see the top).
  static constexpr std::chrono::milliseconds kBackstop{1};

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<TimerEntry*> heap_;
  std::uint64_t next_seq_ = 0;
  // The time the thread will wake up by itself: max while it waits with no timeout, min while
  // it is awake (it will look at the heap before it waits again, so nobody needs to notify it).
  clock::time_point wake_at_ = clock::time_point::min();
  TimerStandIn* stand_in_ = nullptr;
  bool stopping_ = false;
  bool started_ = false;  // thread_ runs (and is to be joined)
  pthread_t thread_{};
  std::vector<Waker> due_;  // the driver thread's batch of wakers to wake; a member so that
                            // it stays reachable in a forked child (LeakSanitizer)
};

}  // namespace
}  // namespace karx::detail::timers

namespace karx::detail {
std::size_t timer_pending_count() noexcept { return timers::TimerDriver::get().pending(); }
std::chrono::steady_clock::time_point timer_stand_in_begin(TimerStandIn& stand_in) noexcept {
  return timers::TimerDriver::get().stand_in_begin(stand_in);
}
void timer_stand_in_end(TimerStandIn& stand_in) noexcept { timers::TimerDriver::get().stand_in_end(stand_in); }
std::size_t timer_fire_due(void (*before_wakes)(void*) noexcept, void* context) noexcept {
  return timers::TimerDriver::get().fire_due(before_wakes, context);
}
}  // namespace karx::detail

namespace karx {

namespace detail {
namespace {
thread_local VirtualClock* current_virtual_clock = nullptr;
}
VirtualClock* virtual_clock() noexcept { return current_virtual_clock; }
void set_virtual_clock(VirtualClock* clock) noexcept { current_virtual_clock = clock; }
}  // namespace detail

Poll<void> Sleep::poll(Context& cx) {
  if (detail::VirtualClock* virtual_time = detail::virtual_clock()) {
    // Inside a simulation: its virtual clock decides, and it wakes the task when its time
    // comes (a Sleep re-polled early registers again: a spurious wake, harmless).
    if (virtual_time->now() >= deadline_) return ready();
    virtual_time->add_timer(deadline_, cx.waker());
    return pending;
  }
  if (std::chrono::steady_clock::now() >= deadline_) {
    if (!detail::coop_proceed(cx)) return pending;  // the task's turn is spent (karx.task's coop)
    reset();                                        // removes the entry if the driver has not fired it yet
    return ready();
  }
  const RawWaker& raw = cx.waker().as_raw();
  // Re-polled with the waker already registered (Waker::will_wake): nothing to do. If the
  // driver fires the entry right after the load, it wakes that very waker, so no wake is lost.
  if (entry_ != nullptr && raw.vtable != nullptr && raw.data == entry_->waker_data &&
      raw.vtable == entry_->waker_vtable && entry_->armed.load(std::memory_order_acquire))
    return pending;
  if (entry_ == nullptr) entry_ = new detail::TimerEntry(deadline_);
  detail::timers::TimerDriver::get().arm(*entry_, cx.waker());
  entry_->waker_data = raw.data;
  entry_->waker_vtable = raw.vtable;
  return pending;
}

void Sleep::release(detail::TimerEntry* entry) noexcept {
  // acquire: pairs with the driver's release store of false, its last access to the entry.
  if (entry->armed.load(std::memory_order_acquire)) detail::timers::TimerDriver::get().disarm(*entry);
  delete entry;
}

}  // namespace karx
