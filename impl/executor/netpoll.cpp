// The runtime's netpoller: who polls it, who sleeps in it, and how a sleeper is woken. Both
// halves of the sleep protocol are here; the Poller itself is impl/net/poller.cppm.
//
//  1. The first socket opened on a runtime (Runtime::current()) makes its Poller
//     (acquire_netpoller, through the hook karx.net calls) and nudges the monitor, which may be
//     parked on its futex: it comes back and, if the runtime is idle, sleeps in the poller.
//  2. A worker (or guest) holding a slot that finds no work polls without waiting before it
//     parks (netpoll_ready_work), also during its spin: the tasks it wakes go to its own
//     queue, and it runs them.
//  3. The monitor, while slots are held, polls without waiting when nobody has for
//     kNetpollStale (Go's sysmon: 10 ms), so that busy workers do not starve the sockets.
//  4. An idle thread about to park, a worker or guest without a slot or the monitor when every
//     slot is free, sleeps in epoll_wait instead of its futex if nobody else does
//     (sleep_in_netpoller): at most one sleeper. So an idle runtime sleeps in epoll_wait, and
//     an idle process costs nothing. When sockets are ready, a worker or guest sleeper takes a
//     free slot before it wakes the first of their tasks (step 4b, take_slot_before_wakes; an
//     event that wakes nobody takes nothing), so they run on its thread, as a wakep's worker
//     would; the monitor, or a sleeper that finds no free slot, wakes them into the injector
//     (current_worker is cleared meanwhile) and wakep hands them a slot. A worker sleeper
//     leaves after idle_thread_timeout, as a worker on its futex does, and nudges the monitor,
//     which takes the role over (step 6).
// 4c. The sleeper stands in for karx.time's driver (TimerStandIn, timer_driver.cpp): it waits
//     no later than the earliest timer deadline (epoll_pwait2, to the microsecond), then fires
//     what is due, taking a free slot first as in 4b, so a timer that fires into an idle
//     runtime wakes its task on this thread. A timer registered meanwhile with an earlier
//     deadline interrupts the wait (the eventfd). Timers and sockets share this one wait; the
//     driver thread is the backstop for a deadline the sleeper left before (netpoll.cpp does
//     not run timers on busy workers: the driver fires those, at most 1 ms late).
//  5. Waking a sleeper: whoever sets a condition the sleeper waits for (wakep's given_slot,
//     the trim's exit_requested, a guest's done, the monitor's idle_, shutting_down) then calls
//     netpoll_wake(target): a seq_cst fence, and an eventfd write if the target is the
//     sleeper. The sleeper claims the role, issues a seq_cst fence, then checks its conditions.
//     By the two fences (the store-load pattern), either the sleeper sees the condition and
//     does not wait, or the waker sees the sleeper and interrupts it. The eventfd stays
//     readable until a blocking poll drains it, so a write before the wait still ends it.
//     (If the waker read the netpoller as null, its fence precedes the sleeper's in the total
//     order, by the rule for fences around a read that misses a later store: the sleeper then
//     sees the condition.)
//  6. A sleeper that leaves without a slot (a guest whose block_on is done, a worker asked to
//     exit or idle for idle_thread_timeout) nudges the monitor, which takes the role over if
//     the runtime is still idle.
//  7. Shutdown interrupts whoever sleeps (after shutting_down is set), and at its end, once
//     every thread is joined, closes the poller: operations still parked on sockets that
//     outlive the runtime are woken and throw std::system_error (ECANCELED).
//
module;
#include <atomic>
#include <chrono>
#include <mutex>
#include <new>
#include <vector>
module karx.executor;
import karx.machinery;
import karx.netpoll;
import karx.time;
import :scheduler;

namespace karx::detail {

namespace {
constexpr std::chrono::milliseconds kNetpollStale{10};

// The runtimes alive (not shutting down), for karx.net's hook: a socket made on a thread
// whose Runtime::current() is R registers with R's netpoller. Immortal: a socket may be made
// during static destruction.
struct Registry {
  std::mutex mutex;
  std::vector<RuntimeCore*> cores;
};
Registry& registry() {
  static Registry* const r = new Registry;
  return *r;
}

net::Poller* netpoller_of_runtime(void* runtime) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (RuntimeCore* core : r.cores)
    if (core->runtime == runtime) return core->acquire_netpoller();
  return nullptr;  // shutting down (or not a runtime of ours): the caller uses the reactor
}
}  // namespace

void register_runtime_for_netpoll(RuntimeCore* core) {
  net::set_runtime_poller_hook(&netpoller_of_runtime);
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.cores.push_back(core);  // may throw bad_alloc: core_create's caller sees it
}

void unregister_runtime_for_netpoll(RuntimeCore* core) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::erase(r.cores, core);
}

net::Poller* RuntimeCore::acquire_netpoller() {
  std::lock_guard lock(netpoller_mutex);
  net::Poller* p = netpoller.load(std::memory_order_relaxed);
  if (p == nullptr) {
    p = net::Poller::create();
    // seq_cst: pairs with the monitor's seq_cst store of idle_ before it looks for a netpoller
    // (park_while_idle): either it finds this one, or the nudge below finds it idle.
    netpoller.store(p, std::memory_order_seq_cst);
    monitor.slot_taken();  // step 1: the nudge
  }
  p->acquire();
  return p;
}

// The loads of `netpoller` are acquire: they pair with the store that published a new Poller,
// whose construction they must see.
bool RuntimeCore::netpoll_ready_work() noexcept {
  net::Poller* p = netpoller.load(std::memory_order_acquire);
  if (p == nullptr || p->registered() == 0) return false;
  return p->poll(std::chrono::milliseconds(0)) > 0;
}

void RuntimeCore::netpoll_if_stale() noexcept {
  net::Poller* p = netpoller.load(std::memory_order_acquire);
  if (p == nullptr || p->registered() == 0) return;
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  if (now - std::chrono::nanoseconds(p->last_poll_ns()) < kNetpollStale) return;
  p->poll(std::chrono::milliseconds(0));
}

namespace {
struct Sleeper {
  RuntimeCore* core;
  Worker* self;
};
// Step 4b, Go's findrunnable after its blocking netpoll: a worker (or guest) that slept in the
// netpoller and finds sockets ready takes a free processor before it wakes their tasks, so that
// they go to its own runnext and queue and run on this thread (park_idle and guest_idle then
// see given_slot, as after a wakep). Without it they went to the injector and wakep gave the
// processor to the newest idle worker, often another thread parked on its futex: a futex wake
// and a thread switch per request on a quiet connection.
void take_slot_before_wakes(void* context) noexcept {
  auto* s = static_cast<Sleeper*>(context);
  if (s->core->take_slot_after_netpoll(s->self)) current_worker = s->self;
}

// The stand-in's interrupt (step 4c): the timer driver calls it, under its lock, while the
// sleeper is registered, hence awake or in this poller's wait.
void interrupt_poller(void* poller) noexcept { static_cast<net::Poller*>(poller)->interrupt(); }
}  // namespace

bool RuntimeCore::take_slot_after_netpoll(Worker* w) noexcept {
  // A wakep handed us a slot already (set under the idle lock before its unpark).
  if (w->given_slot.load(std::memory_order_acquire)) return true;
  if (shutting_down.load(std::memory_order_relaxed) || !slots.take()) return false;
  bool ours = false;
  {
    const IdleList::Lock lock = idle.lock();
    ours = idle.take(w, lock);
    // relaxed: read by this thread only (park_idle), as after a wakep's hand-over.
    if (ours) w->given_slot.store(true, std::memory_order_relaxed);
  }
  if (!ours) {
    // Off the list already: a wakep (its slot is ours; it set given_slot under the lock), the
    // monitor's trim, or shutdown. Ours goes back either way.
    slots.give_back();
    return w->given_slot.load(std::memory_order_acquire);
  }
  slots.count_woken_searcher();  // as a wakep's worker, this one starts searching (worker_main)
  return true;
}

void RuntimeCore::netpoll_sleep(net::Poller* p, std::chrono::steady_clock::time_point give_up_at) noexcept {
  using Clock = std::chrono::steady_clock;
  Worker* self = current_worker;
  current_worker = nullptr;  // step 4: what we wake goes to the injector (we hold no slot)...
  Sleeper sleeper{this, self};
  // ...unless we take a slot first (step 4b): a worker or guest of ours can.
  const net::Poller::BeforeWakes before_wakes =
      self != nullptr && self->core == this ? &take_slot_before_wakes : nullptr;
  // Step 4c. The stand-in lives on this stack; the driver touches it only between begin and end.
  TimerStandIn stand_in{&interrupt_poller, p};
  const Clock::time_point timer_at = timer_stand_in_begin(stand_in);
  const Clock::time_point until = std::min(timer_at, give_up_at);
  const Clock::time_point now = until == Clock::time_point::max() ? Clock::time_point() : Clock::now();
  const std::chrono::nanoseconds timeout = until == Clock::time_point::max() ? std::chrono::nanoseconds(-1)
                                           : until <= now                    ? std::chrono::nanoseconds(0)
                                                                             : std::chrono::nanoseconds(until - now);
  p->poll(timeout, /*as_sleeper=*/true, before_wakes, &sleeper);
  timer_stand_in_end(stand_in);
  // `until` is ours again after end (it may have been lowered during the wait).
  if (stand_in.until != Clock::time_point::max() && stand_in.until <= Clock::now())
    timer_fire_due(before_wakes, &sleeper);
  current_worker = self;
}

void RuntimeCore::netpoll_wake(const void* who) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // step 5, the waker's fence
  net::Poller* p = netpoller.load(std::memory_order_acquire);
  if (p != nullptr && p->sleeper() == who) p->interrupt();
}

void RuntimeCore::netpoll_wake_any() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  net::Poller* p = netpoller.load(std::memory_order_acquire);
  if (p != nullptr && p->sleeper() != nullptr) p->interrupt();
}

void RuntimeCore::netpoll_close() noexcept {
  // Every thread of ours is joined: nobody polls any more. Sockets that outlive the runtime
  // keep the Poller (their references) until they close.
  // acq_rel: we see every use of the Poller by the threads we joined (join orders them anyway).
  net::Poller* p = netpoller.exchange(nullptr, std::memory_order_acq_rel);
  if (p == nullptr) return;
  p->close();
  p->release();
}

void RuntimeCore::unpark_worker(Worker* w) noexcept {
  w->parker.unpark();
  netpoll_wake(w);
}

}  // namespace karx::detail
