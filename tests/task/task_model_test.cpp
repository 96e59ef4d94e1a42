// A model-based test of the task state machine: random, seeded, replayable sequences of every
// operation on one task (Task, JoinHandle, Waker, and the future itself), each step checked
// against a small reference model of what the contract says must happen.
//
// The executor is the test's std::deque: the schedule function pushes the Task (or, as chosen
// by the sequence, drops it or runs it on the spot), and "run" pops the front Task and runs it.
// The model follows the design brief's task contract ("karx.task", "Contract details") in
// terms of what a user can observe: polls, schedule calls, destructor runs of the future, the
// output, the exception, the schedule function and the tag, what run() returns, what the
// handle yields, and which awaiter waker is woken. It never looks at the state word. Where the
// contract leaves a detail open, the model pins what the code does while the handle exists (a
// handle's cancel() also wakes its registered awaiter; run() returns false when the poll
// completes, even if the future woke itself) and only bounds it once the handle is gone (a
// detached handle's awaiter is woken at most once more).
//
// Single-threaded on purpose: every step is deterministic, so a seed replays exactly. (The
// concurrent paths of the same transitions are the business of the cancel, waker and stress
// tests.) A poll can act on the task's own handle and wakers, which is how the model reaches the
// "while running" transitions without threads.
//
// Replay: KARX_MODEL_SEED=<n> runs only sequence n (a failure prints its seed and its steps);
// KARX_MODEL_SEQUENCES=<n> changes how many sequences run; KARX_MODEL_TRACE=1 prints each seed
// before its sequence runs, so a crash (which prints no failure message) names its sequence.
// One sequence in four starts from spawn_detached (the model: a spawn detached at once).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/probes.hpp"

namespace {

using probes::DropCounter;
using probes::Output;

constexpr int kTagId = 42;
// 10000 sequences take a few tenths of a second even in sanitizer builds.
constexpr int kDefaultSequences = 10000;
// Enough sequences to reach every corner (checked by the coverage counts).
constexpr int kCoverageSequences = 3000;
constexpr int kMaxSteps = 60;
constexpr std::size_t kMaxPollActions = 3;

// splitmix64: tiny, and the same sequence of numbers on every platform and standard library
// (std:: distributions are not specified bit for bit).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  unsigned below(unsigned n) { return static_cast<unsigned>(next() % n); }

 private:
  std::uint64_t s_;
};

// --- The probes: everything the task owns counts its own destruction ----------------------

struct Tag {
  int id;
  DropCounter drop;
};

// The future's exception. Copies share one token, so "the exception was destroyed" is counted
// once, whichever copy goes last (exception_ptr may or may not copy the object).
struct ErrorToken {
  std::atomic<int>* drops;
  ~ErrorToken() { drops->fetch_add(1, std::memory_order_relaxed); }
};
struct ModelError : std::runtime_error {
  ModelError(int i, std::shared_ptr<ErrorToken> t) : std::runtime_error("model failure"), id(i), token(std::move(t)) {}
  int id;
  std::shared_ptr<ErrorToken> token;
};

// The detached-exception handler is a plain function pointer: what it sees is global.
std::atomic<int> g_reports{0};
std::atomic<int> g_foreign_reports{0};
void count_report(std::exception_ptr e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const ModelError&) {
    g_reports.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {
    g_foreign_reports.fetch_add(1, std::memory_order_relaxed);
  }
}

// The awaiter: a waker_fn that counts wakes; its block's destruction is counted too, so a
// clone left behind in the task is seen.
struct AwaiterFn {
  int* wakes;
  DropCounter drop;
  void operator()() const { ++*wakes; }
};

// --- Operations -------------------------------------------------------------------------------

enum class Outcome : std::uint8_t { pending, ready, fail };

// What the future does inside its next poll, in order, before it answers.
enum class InPoll : std::uint8_t {
  keep_waker,           // clone the context's waker into the test's pool
  wake_self,            // cx.waker().wake()
  wake_self_consuming,  // clone the context's waker and wake_and_release() the clone
  cancel_handle,        // JoinHandle::cancel() while the task runs
  detach_handle,        // JoinHandle::detach() while the task runs
  poll_handle_a,        // await the task's own handle (with awaiter A) while it runs
  poll_handle_b,
  wake_held,            // wake a waker from the pool by reference
  wake_held_consuming,  // wake_and_release() a waker from the pool
  drop_held,            // drop a waker from the pool
  clone_held,           // clone a waker of the pool into the pool
  count
};
constexpr std::array<const char*, static_cast<int>(InPoll::count)> kInPollNames = {
    "keep_waker",    "wake_self", "wake_self_consuming", "cancel_handle", "detach_handle", "poll_handle_a",
    "poll_handle_b", "wake_held", "wake_held_consuming", "drop_held",     "clone_held"};

struct PollAction {
  InPoll kind;
  unsigned pick;  // which pool waker, modulo the pool's size when the action runs
};

// The future's next poll: its actions, then its answer. A poll consumes the plan.
struct Plan {
  Outcome outcome = Outcome::pending;
  std::vector<PollAction> actions;
};

// What the schedule function does with the Task it is given: queue it (the usual executor),
// drop it (an executor that refuses work: the task is canceled inside the schedule call), or run
// it at once (an inline executor: run() is called from inside wake, cancel, detach, run...).
enum class Delivery : std::uint8_t { queue, refuse, run_inline };

enum class Op : std::uint8_t {
  run,
  schedule,
  cancel_task,  // Task::cancel(), ~Task, or a move-assignment over the Task
  wake,
  wake_consuming,
  clone_held,
  clone_from_handle,
  clone_from_task,
  drop_waker,
  cancel_handle,
  detach,
  drop_handle,  // ~JoinHandle / move-assignment over it: detaches
  poll_handle,
  move_handle,
  misuse,
  plan_ready,
  plan_fail,
  plan_action,
  raw_roundtrip,  // Task::into_raw / from_raw, as an intrusive queue would
  set_delivery,
  count
};
constexpr std::array<const char*, static_cast<int>(Op::count)> kOpNames = {
    "run",        "schedule",          "cancel_task",     "wake",          "wake_consuming",
    "clone_held", "clone_from_handle", "clone_from_task", "drop_waker",    "cancel_handle",
    "detach",     "drop_handle",       "poll_handle",     "move_handle",   "misuse",
    "plan_ready", "plan_fail",         "plan_action",     "raw_roundtrip", "set_delivery"};

// What awaiting the handle gave: pending, the output (its id), canceled, the future's exception
// (its id), or a std::logic_error for awaiting a handle that already yielded or was detached.
enum class Answer : std::uint8_t { pending, value, canceled, threw, misuse, other };
struct HandleAnswer {
  Answer kind = Answer::pending;
  int id = 0;
  bool operator==(const HandleAnswer&) const = default;
};
std::string to_string(const HandleAnswer& a) {
  switch (a.kind) {
    case Answer::pending:
      return "pending";
    case Answer::value:
      return "value " + std::to_string(a.id);
    case Answer::canceled:
      return "canceled";
    case Answer::threw:
      return "threw " + std::to_string(a.id);
    case Answer::misuse:
      return "logic_error";
    case Answer::other:
      return "unexpected exception";
  }
  return "?";
}

// How often notable transitions happened over all sequences: the random test asserts each was
// reached, so a generator that stopped reaching a corner would fail instead of passing vacuously.
struct Coverage {
  int woken_while_running = 0;      // run() returned true
  int unreachable_rescheduled = 0;  // handle gone, last reference dropped: scheduled one last time
  int canceled_while_running = 0;
  int detached_while_running = 0;
  int awaited_while_running = 0;
  int waited_for_destruction = 0;  // canceled, future not destroyed yet: the handle was pending
  int yielded_value = 0;
  int yielded_canceled = 0;
  int yielded_exception = 0;
  int cancel_beat_completion = 0;  // canceled during the poll that completed: output dropped
  int reported = 0;                // a detached task's exception went to the handler
  int freed_by_handle = 0;
  int freed_by_waker = 0;
  int freed_by_run = 0;
  int freed_by_cancel = 0;
  int misuse = 0;
  int refused = 0;
  int run_inline = 0;
};

// --- The reference model -----------------------------------------------------------------------

enum class HandleState : std::uint8_t { held, yielded, detached };

// What must have happened so far; compared with the observed counters after every step.
struct Expected {
  int polls = 0;
  int schedules = 0;
  int future_drops = 0;
  int value_drops = 0;
  int error_drops = 0;
  int reports = 0;
  int block_drops = 0;  // the schedule function and the tag: the block was freed
  std::array<int, 2> awaiter_wakes{};
};

struct Model {
  Expected n;
  bool future_alive = true;
  bool completed = false;        // the future returned ready or threw
  bool threw = false;            // ... by throwing
  int result_id = 0;             // the value / exception id: the poll that completed
  bool outcome_in_task = false;  // the output or exception is in the task, not delivered or dropped
  // Canceled (by the Task or the handle), made unreachable, or its outcome delivered or
  // dropped: the future will not be polled again and wakes do nothing.
  bool closed = false;
  bool queued = true;  // a Task is in the queue; a fresh task counts as scheduled
  bool running = false;
  bool woken_while_running = false;
  int wakers = 0;  // wakers of the task the test holds (its pool)
  HandleState handle = HandleState::held;
  int awaiter = -1;  // the awaiter waker registered by the last pending handle poll, if any
  bool freed = false;
  // Once the handle is gone, which awaiter wakes happen is not the contract's business: each
  // registered awaiter may be woken at most once more (it is taken out of the task or dropped).
  bool awaiter_loose = false;
  std::array<int, 2> wake_floor{};
  std::array<int, 2> wake_ceiling{};
  Delivery delivery = Delivery::queue;
  Plan plan;  // the future's next poll
  // What the step's inline runs (in the schedule function) and its polls of the handle from
  // inside the future returned.
  std::vector<bool> inline_results;
  std::vector<HandleAnswer> in_poll_answers;
  std::string inconsistency;  // set if the model reaches a state it believes impossible
  Coverage* cov;

  explicit Model(Coverage* c) : cov(c) {}

  int refs() const { return (queued ? 1 : 0) + (running ? 1 : 0) + wakers; }

  // Wakes the registered awaiter, unless it is `current` (the one awaiting right now).
  void notify(int current) {
    if (awaiter >= 0 && awaiter != current) ++n.awaiter_wakes[awaiter];
    awaiter = -1;
  }

  void destroy_future() {
    if (!future_alive) inconsistency = "future destroyed twice";
    future_alive = false;
    ++n.future_drops;
  }

  void drop_outcome(bool report) {
    outcome_in_task = false;
    if (threw) {
      ++n.error_drops;
      if (report) {
        ++n.reports;
        ++cov->reported;
      }
    } else {
      ++n.value_drops;
    }
  }

  // The schedule function was called with a Task (one reference): what happens next depends on
  // the executor.
  void scheduled() {
    ++n.schedules;
    queued = true;
    if (delivery == Delivery::refuse) {
      ++cov->refused;
      cancel_task();
    } else if (delivery == Delivery::run_inline) {
      ++cov->run_inline;
      inline_results.push_back(run());
    }
  }

  // After a reference (Task or waker) or the handle went away.
  void settle(int* freed_counter) {
    if (refs() > 0 || handle == HandleState::held || freed) return;
    if (!completed && !closed) {
      // Nobody can wake or await it, yet the future lives: scheduled once more so that the
      // executor's run destroys it.
      closed = true;
      ++cov->unreachable_rescheduled;
      scheduled();
      return;
    }
    if (future_alive || outcome_in_task) inconsistency = "freed with the future or the output alive";
    freed = true;
    awaiter = -1;  // a stale awaiter is dropped, not woken
    ++n.block_drops;
    ++*freed_counter;
  }

  void wake(bool consuming) {
    if (!completed && !closed) {
      if (running) {
        woken_while_running = true;  // run() reschedules when it returns
      } else if (!queued) {
        if (consuming) --wakers;  // its reference becomes the Task's
        scheduled();
        return;
      }
    }
    if (consuming) {
      --wakers;
      settle(&cov->freed_by_waker);
    }
  }
  void clone() { ++wakers; }
  void drop_waker() {
    --wakers;
    settle(&cov->freed_by_waker);
  }

  // Task::schedule(): the queued Task goes to the schedule function again.
  void schedule() {
    queued = false;
    scheduled();
  }

  void cancel_task() {
    queued = false;
    closed = true;
    destroy_future();  // at once
    notify(-1);
    settle(&cov->freed_by_cancel);
  }

  void cancel_handle() {
    if (completed || closed) return;  // after completion: nothing; the output is still delivered
    closed = true;
    if (running) ++cov->canceled_while_running;
    if (!queued && !running) {
      // Idle: one more run destroys the future. A queued (or fresh) or running task needs none.
      scheduled();
    }
    notify(-1);
  }

  void detach() {
    handle = HandleState::detached;
    if (running) ++cov->detached_while_running;
    if (!awaiter_loose) {
      awaiter_loose = true;
      wake_floor = n.awaiter_wakes;
      wake_ceiling = n.awaiter_wakes;
      if (awaiter >= 0) ++wake_ceiling[awaiter];
    }
    if (completed && !closed) {
      closed = true;
      drop_outcome(true);  // nobody will see it: an exception goes to the handler
    }
    settle(&cov->freed_by_handle);
  }

  HandleAnswer poll_handle(int x) {
    if (handle != HandleState::held) {
      ++cov->misuse;
      return {Answer::misuse};
    }
    if (closed) {
      if (queued || running) {
        // Canceled, but the future is not destroyed yet: wait for the run that destroys it.
        awaiter = x;
        ++cov->waited_for_destruction;
        return {Answer::pending};
      }
      notify(x);
      handle = HandleState::yielded;
      ++cov->yielded_canceled;
      settle(&cov->freed_by_handle);
      return {Answer::canceled};
    }
    if (!completed) {
      awaiter = x;
      return {Answer::pending};
    }
    closed = true;
    notify(x);
    handle = HandleState::yielded;
    // The test destroys what it got at once, so the output (or exception) is gone after the step.
    drop_outcome(false);
    const HandleAnswer answer{threw ? Answer::threw : Answer::value, result_id};
    ++(threw ? cov->yielded_exception : cov->yielded_value);
    settle(&cov->freed_by_handle);
    return answer;
  }

  void in_poll(const PollAction& a) {
    const bool held = handle == HandleState::held;
    switch (a.kind) {
      case InPoll::keep_waker:
        clone();
        break;
      case InPoll::wake_self:
        wake(false);
        break;
      case InPoll::wake_self_consuming:
        clone();
        wake(true);
        break;
      case InPoll::cancel_handle:
        if (held) cancel_handle();
        break;
      case InPoll::detach_handle:
        if (held) detach();
        break;
      case InPoll::poll_handle_a:
      case InPoll::poll_handle_b:
        if (held) {
          ++cov->awaited_while_running;
          in_poll_answers.push_back(poll_handle(a.kind == InPoll::poll_handle_a ? 0 : 1));
        }
        break;
      case InPoll::wake_held:
        if (wakers > 0) wake(false);
        break;
      case InPoll::wake_held_consuming:
        if (wakers > 0) wake(true);
        break;
      case InPoll::drop_held:
        if (wakers > 0) drop_waker();
        break;
      case InPoll::clone_held:
        if (wakers > 0) clone();
        break;
      case InPoll::count:
        break;
    }
  }

  // Returns what run() must return.
  bool run() {
    queued = false;
    running = true;
    woken_while_running = false;
    if (closed) {
      // Canceled by the handle, or unreachable: destroyed instead of polled.
      destroy_future();
      running = false;
      notify(-1);
      settle(&cov->freed_by_run);
      return false;
    }
    ++n.polls;
    const Plan p = std::exchange(plan, Plan{});
    for (const PollAction& a : p.actions) in_poll(a);
    running = false;
    if (p.outcome != Outcome::pending) {
      destroy_future();
      completed = true;
      threw = p.outcome == Outcome::fail;
      result_id = n.polls;
      outcome_in_task = true;
      if (handle != HandleState::held || closed) {
        // Nobody will take it. Canceled: the handle yields "canceled" and nothing is reported.
        if (closed) ++cov->cancel_beat_completion;
        const bool report = !closed;
        closed = true;
        drop_outcome(report);
      }
      notify(-1);
      settle(&cov->freed_by_run);
      return false;  // completed: nothing to reschedule, even if woken during the poll
    }
    if (closed) {
      // Canceled during the poll: this run destroys the future.
      destroy_future();
      notify(-1);
      settle(&cov->freed_by_run);
      return false;
    }
    if (woken_while_running) {
      ++cov->woken_while_running;
      scheduled();
      return true;
    }
    settle(&cov->freed_by_run);
    return false;
  }
};

// --- The harness: the real objects, driven step by step and compared with the model ----------

class Harness;

struct ModelFuture {
  Harness* h;
  DropCounter drop;
  karx::Poll<Output> poll(karx::Context& cx);
};

struct Schedule {
  Harness* h;
  DropCounter drop;
  void operator()(karx::Task<Tag> task) const;
};

class Harness {
 public:
  Harness(std::uint64_t seed, Coverage* cov) : seed_(seed), rng_(seed), model_(cov) {
    g_reports = 0;
    g_foreign_reports = 0;
    for (int i = 0; i < 2; ++i) awaiters_[i] = karx::waker_fn(AwaiterFn{&wakes_[i], DropCounter(awaiter_drops_)});
    if (seed % 4 == 3) {
      // One sequence in four starts from spawn_detached: in every way a spawn whose handle is
      // detached at once, which is how the model starts it.
      queue_.push_back(karx::spawn_detached(ModelFuture{this, DropCounter(counts_.future_drops)},
                                            Schedule{this, DropCounter(counts_.schedule_drops)},
                                            Tag{kTagId, DropCounter(counts_.tag_drops)}));
      model_.detach();
      return;
    }
    auto [task, handle] =
        karx::spawn(ModelFuture{this, DropCounter(counts_.future_drops)},
                    Schedule{this, DropCounter(counts_.schedule_drops)}, Tag{kTagId, DropCounter(counts_.tag_drops)});
    queue_.push_back(std::move(task));
    handle_ = std::move(handle);
  }

  void count_schedule() { counts_.schedules.fetch_add(1, std::memory_order_relaxed); }

  // Runs up to `steps` random steps, then drops everything. False at the first mismatch.
  bool run_sequence(int steps) {
    for (step_ = 0; step_ < steps && !model_.freed; ++step_) {
      if (!apply(choose())) return false;
    }
    return teardown();
  }

  karx::Poll<Output> poll_future(karx::Context& cx) {
    const int polls = counts_.polls.fetch_add(1, std::memory_order_relaxed) + 1;
    const Plan plan = std::exchange(plan_, Plan{});
    for (const PollAction& a : plan.actions) perform_in_poll(a, cx);
    switch (plan.outcome) {
      case Outcome::pending:
        break;
      case Outcome::ready:
        return karx::Poll<Output>::ready(Output{polls, DropCounter(counts_.output_drops)});
      case Outcome::fail:
        throw ModelError(polls, std::make_shared<ErrorToken>(&error_drops_));
    }
    return karx::pending;
  }

  // The schedule function.
  void deliver(karx::Task<Tag> task) {
    switch (delivery_) {
      case Delivery::queue:
        queue_.push_back(std::move(task));
        break;
      case Delivery::refuse:
        break;  // the Task is dropped on return: canceled
      case Delivery::run_inline:
        try {
          inline_results_.push_back(task.run());
        } catch (...) {
          inline_run_threw_ = true;
        }
        break;
    }
  }

 private:
  Op choose() {
    const Model& m = model_;
    const bool queued = m.queued, held = m.handle == HandleState::held, wakers = m.wakers > 0;
    const bool live = m.future_alive && !m.completed && !m.closed;
    // Weights: running and awaiting are common, ending the task (cancel, detach) is rare so
    // that sequences live long enough to reach the interesting states.
    const std::array<unsigned, static_cast<int>(Op::count)> weight = {
        queued ? 20u : 0u,                                           // run
        queued ? 3u : 0u,                                            // schedule
        queued ? 2u : 0u,                                            // cancel_task
        wakers ? 6u : 0u,                                            // wake
        wakers ? 4u : 0u,                                            // wake_consuming
        wakers ? 3u : 0u,                                            // clone_held
        held ? 3u : 0u,                                              // clone_from_handle
        queued ? 2u : 0u,                                            // clone_from_task
        wakers ? 4u : 0u,                                            // drop_waker
        held ? 2u : 0u,                                              // cancel_handle
        held ? 1u : 0u,                                              // detach
        held ? 1u : 0u,                                              // drop_handle
        held ? 8u : 0u,                                              // poll_handle
        1u,                                                          // move_handle
        1u,                                                          // misuse
        live ? 2u : 0u,                                              // plan_ready
        live ? 2u : 0u,                                              // plan_fail
        live && m.plan.actions.size() < kMaxPollActions ? 10u : 0u,  // plan_action
        queued ? 1u : 0u,                                            // raw_roundtrip
        2u,                                                          // set_delivery
    };
    unsigned total = 0;
    for (unsigned w : weight) total += w;
    unsigned r = rng_.below(total);
    for (int i = 0; i < static_cast<int>(Op::count); ++i) {
      if (r < weight[i]) return static_cast<Op>(i);
      r -= weight[i];
    }
    return Op::misuse;
  }

  karx::Task<Tag> pop() {
    karx::Task<Tag> t = std::move(queue_.front());
    queue_.pop_front();
    return t;
  }

  HandleAnswer poll_handle_real(int x) {
    karx::Context cx(awaiters_[x]);
    try {
      auto p = handle_.poll(cx);
      if (p.is_pending()) return {Answer::pending};
      std::optional<Output> out = std::move(p).value();
      if (!out) return {Answer::canceled};
      return {Answer::value, out->value};
    } catch (const ModelError& e) {
      return {Answer::threw, e.id};
    } catch (const std::logic_error&) {
      return {Answer::misuse};
    } catch (...) {
      return {Answer::other};
    }
  }

  // A pool waker chosen by `pick`, taken out of the pool.
  karx::Waker take_waker(unsigned pick) {
    const std::size_t i = pick % wakers_.size();
    karx::Waker w = std::move(wakers_[i]);
    wakers_.erase(wakers_.begin() + static_cast<std::ptrdiff_t>(i));
    return w;
  }

  void perform_in_poll(const PollAction& a, karx::Context& cx) {
    const bool have = !wakers_.empty();
    switch (a.kind) {
      case InPoll::keep_waker:
        wakers_.push_back(cx.waker());
        break;
      case InPoll::wake_self:
        cx.waker().wake();
        break;
      case InPoll::wake_self_consuming:
        karx::Waker(cx.waker()).wake_and_release();
        break;
      case InPoll::cancel_handle:
        if (handle_) handle_.cancel();
        break;
      case InPoll::detach_handle:
        if (handle_) handle_.detach();
        break;
      case InPoll::poll_handle_a:
      case InPoll::poll_handle_b:
        if (handle_) in_poll_answers_.push_back(poll_handle_real(a.kind == InPoll::poll_handle_a ? 0 : 1));
        break;
      case InPoll::wake_held:
        if (have) wakers_[a.pick % wakers_.size()].wake();
        break;
      case InPoll::wake_held_consuming:
        if (have) take_waker(a.pick).wake_and_release();
        break;
      case InPoll::drop_held:
        if (have) take_waker(a.pick);
        break;
      case InPoll::clone_held:
        if (have) wakers_.push_back(wakers_[a.pick % wakers_.size()]);
        break;
      case InPoll::count:
        break;
    }
  }

  // Performs `op` on the model and on the real objects, then compares. False on a mismatch.
  bool apply(Op op) {
    std::string what = kOpNames[static_cast<int>(op)];
    std::string bad;
    model_.inline_results.clear();
    model_.in_poll_answers.clear();
    inline_results_.clear();
    in_poll_answers_.clear();
    auto expect_answer = [&](const HandleAnswer& want, const HandleAnswer& got) {
      what += " -> " + to_string(got);
      if (!(want == got)) bad += " handle yielded " + to_string(got) + " (want " + to_string(want) + ")";
    };
    switch (op) {
      case Op::run: {
        what += model_.closed ? " (destroys the future)" : describe(model_.plan);
        const bool want = model_.run();
        karx::Task<Tag> t = pop();
        bool got = false;
        try {
          got = t.run();
        } catch (...) {
          bad += " run() threw";
        }
        what += std::string(" -> ") + (got ? "true" : "false");
        if (got != want) bad += std::string(" run() returned ") + (got ? "true" : "false");
        if (t) bad += " the Task is not empty after run()";
        break;
      }
      case Op::schedule: {
        model_.schedule();
        karx::Task<Tag> t = pop();
        t.schedule();
        if (t) bad += " the Task is not empty after schedule()";
        break;
      }
      case Op::cancel_task: {
        model_.cancel_task();
        switch (rng_.below(3)) {
          case 0: {
            what += " (cancel)";
            karx::Task<Tag> t = pop();
            t.cancel();
            if (t) bad += " the Task is not empty after cancel()";
            break;
          }
          case 1:
            what += " (destroy)";
            pop();
            break;
          default:
            what += " (assign over)";
            queue_.front() = karx::Task<Tag>{};
            queue_.pop_front();
            break;
        }
        break;
      }
      case Op::wake: {
        model_.wake(false);
        wakers_[rng_.below(static_cast<unsigned>(wakers_.size()))].wake();
        break;
      }
      case Op::wake_consuming: {
        model_.wake(true);
        take_waker(static_cast<unsigned>(rng_.next())).wake_and_release();
        break;
      }
      case Op::clone_held: {
        model_.clone();
        wakers_.push_back(wakers_[rng_.below(static_cast<unsigned>(wakers_.size()))]);
        break;
      }
      case Op::clone_from_handle: {
        model_.clone();
        if (handle_.tag().id != kTagId) bad += " the handle's tag is wrong";
        wakers_.push_back(handle_.waker());
        break;
      }
      case Op::clone_from_task: {
        model_.clone();
        if (queue_.front().tag().id != kTagId) bad += " the Task's tag is wrong";
        wakers_.push_back(queue_.front().waker());
        break;
      }
      case Op::drop_waker: {
        model_.drop_waker();
        take_waker(static_cast<unsigned>(rng_.next()));
        break;
      }
      case Op::cancel_handle: {
        model_.cancel_handle();
        handle_.cancel();
        break;
      }
      case Op::detach: {
        model_.detach();
        handle_.detach();
        if (handle_) bad += " the handle is not empty after detach()";
        break;
      }
      case Op::drop_handle: {
        model_.detach();
        if (rng_.below(2) == 0) {
          what += " (destroy)";
          karx::JoinHandle<Output, Tag> gone = std::move(handle_);
        } else {
          what += " (assign over)";
          handle_ = karx::JoinHandle<Output, Tag>{};
        }
        break;
      }
      case Op::poll_handle: {
        const int x = static_cast<int>(rng_.below(2));
        what += x == 0 ? " A" : " B";
        expect_answer(model_.poll_handle(x), poll_handle_real(x));
        break;
      }
      case Op::move_handle: {
        karx::JoinHandle<Output, Tag> moved = std::move(handle_);
        handle_ = std::move(moved);
        break;
      }
      case Op::misuse: {
        // Nothing may change: only the error is checked.
        if (model_.handle != HandleState::held) {
          what += " (await a spent handle)";
          const int x = static_cast<int>(rng_.below(2));
          expect_answer(model_.poll_handle(x), poll_handle_real(x));
          handle_.cancel();  // both are allowed on an empty handle and do nothing
          handle_.detach();
          try {
            (void)handle_.waker();
            bad += " waker() of a spent handle did not throw";
          } catch (const std::logic_error&) {
          }
        } else {
          what += " (empty Task)";
          ++model_.cov->misuse;
          karx::Task<Tag> empty;
          try {
            empty.run();
            bad += " run() of an empty Task did not throw";
          } catch (const std::logic_error&) {
          }
          try {
            empty.schedule();
            bad += " schedule() of an empty Task did not throw";
          } catch (const std::logic_error&) {
          }
        }
        break;
      }
      case Op::plan_ready:
        plan_.outcome = model_.plan.outcome = Outcome::ready;
        break;
      case Op::plan_fail:
        plan_.outcome = model_.plan.outcome = Outcome::fail;
        break;
      case Op::plan_action: {
        const PollAction a{static_cast<InPoll>(rng_.below(static_cast<unsigned>(InPoll::count))),
                           static_cast<unsigned>(rng_.next())};
        plan_.actions.push_back(a);
        model_.plan.actions.push_back(a);
        what += std::string(" ") + kInPollNames[static_cast<int>(a.kind)];
        break;
      }
      case Op::raw_roundtrip: {
        void* raw = pop().into_raw();
        queue_.push_front(karx::Task<Tag>::from_raw(raw));
        break;
      }
      case Op::set_delivery: {
        const unsigned r = rng_.below(4);  // queueing stays the common case
        delivery_ = model_.delivery = r == 2 ? Delivery::refuse : r == 3 ? Delivery::run_inline : Delivery::queue;
        what += r == 2 ? " refuse" : r == 3 ? " run_inline" : " queue";
        break;
      }
      case Op::count:
        break;
    }
    return check(what, bad);
  }

  static std::string describe(const Plan& p) {
    std::string s = " [";
    for (const PollAction& a : p.actions) s += std::string(kInPollNames[static_cast<int>(a.kind)]) + ", ";
    s += p.outcome == Outcome::pending ? "pending]" : p.outcome == Outcome::ready ? "ready]" : "throw]";
    return s;
  }

  // What the inline runs of this step returned (order aside: a run the schedule function makes
  // while another run's keep-alive reference is held may come before or after it), and what the
  // handle yielded when the future awaited it.
  void compare_answers(std::string& bad) {
    std::vector<bool> got = inline_results_, want = model_.inline_results;
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    if (inline_run_threw_) bad += " an inline run() threw";
    if (got != want) {
      bad += " inline runs returned";
      for (bool b : got) bad += b ? " true" : " false";
      bad += " (want";
      for (bool b : want) bad += b ? " true" : " false";
      bad += ")";
    }
    if (in_poll_answers_ != model_.in_poll_answers) {
      bad += " inside the poll the handle yielded";
      for (const HandleAnswer& a : in_poll_answers_) bad += " " + to_string(a);
      bad += " (want";
      for (const HandleAnswer& a : model_.in_poll_answers) bad += " " + to_string(a);
      bad += ")";
    }
  }

  static void note(std::string& bad, const char* name, long long got, long long want) {
    if (got != want)
      bad += std::string(" ") + name + "=" + std::to_string(got) + " (want " + std::to_string(want) + ")";
  }

  bool check(const std::string& what, std::string bad) {
    log_ += std::to_string(step_) + ": " + what + "\n";
    const Expected& e = model_.n;
    note(bad, "polls", counts_.polls.load(), e.polls);
    note(bad, "schedules", counts_.schedules.load(), e.schedules);
    note(bad, "future_drops", counts_.future_drops.load(), e.future_drops);
    note(bad, "output_drops", counts_.output_drops.load(), e.value_drops);
    note(bad, "exception_drops", error_drops_.load(), e.error_drops);
    note(bad, "detached_reports", g_reports.load(), e.reports);
    note(bad, "foreign_reports", g_foreign_reports.load(), 0);
    note(bad, "schedule_fn_drops", counts_.schedule_drops.load(), e.block_drops);
    note(bad, "tag_drops", counts_.tag_drops.load(), e.block_drops);
    note(bad, "queued", static_cast<long long>(queue_.size()), model_.queued ? 1 : 0);
    note(bad, "wakers_held", static_cast<long long>(wakers_.size()), model_.wakers);
    note(bad, "handle_held", handle_ ? 1 : 0, model_.handle == HandleState::held ? 1 : 0);
    for (int i = 0; i < 2; ++i) {
      const char* name = i == 0 ? "awaiter_A_wakes" : "awaiter_B_wakes";
      if (!model_.awaiter_loose) {
        note(bad, name, wakes_[i], e.awaiter_wakes[i]);
      } else if (wakes_[i] < model_.wake_floor[i] || wakes_[i] > model_.wake_ceiling[i]) {
        bad += std::string(" ") + name + "=" + std::to_string(wakes_[i]) + " (want " +
               std::to_string(model_.wake_floor[i]) + ".." + std::to_string(model_.wake_ceiling[i]) + ")";
      }
    }
    compare_answers(bad);
    // The plan is consumed by a poll: a difference means the future was polled when it should
    // not have been, or the other way round.
    if (plan_.outcome != model_.plan.outcome || plan_.actions.size() != model_.plan.actions.size())
      bad += " the future's next-poll plan differs from the model's";
    if (!model_.inconsistency.empty()) bad += " model: " + model_.inconsistency;
    if (bad.empty()) return true;
    ADD_FAILURE() << "seed " << seed_ << ", step " << step_ << " (" << what << "):" << bad
                  << "\nreplay with KARX_MODEL_SEED=" << seed_ << "\nsteps:\n"
                  << log_;
    return false;
  }

  // Drops everything the test holds, running or canceling what gets scheduled, until the task
  // is freed; then checks every destructor ran exactly once.
  bool teardown() {
    plan_ = model_.plan = Plan{};
    log_ += "-- teardown\n";
    for (int guard = 0; !model_.freed; ++guard, ++step_) {
      if (guard > 1000) {
        ADD_FAILURE() << "seed " << seed_ << ": teardown does not end\n" << log_;
        return false;
      }
      Op op;
      if (model_.handle == HandleState::held)
        op = rng_.below(2) == 0 ? Op::detach : Op::drop_handle;
      else if (model_.wakers > 0)
        op = rng_.below(3) == 0 ? Op::wake_consuming : Op::drop_waker;
      else if (model_.queued)
        op = rng_.below(4) == 0 ? Op::cancel_task : Op::run;
      else
        break;
      if (!apply(op)) return false;
    }
    std::string bad;
    if (!model_.freed) bad += " the model says the task is still alive";
    note(bad, "future_drops", counts_.future_drops.load(), 1);
    note(bad, "output_and_exception_drops", counts_.output_drops.load() + error_drops_.load(),
         model_.completed ? 1 : 0);
    note(bad, "schedule_fn_drops", counts_.schedule_drops.load(), 1);
    note(bad, "tag_drops", counts_.tag_drops.load(), 1);
    note(bad, "queued", static_cast<long long>(queue_.size()), 0);
    for (karx::Waker& w : awaiters_) w = karx::noop_waker();
    note(bad, "awaiter_waker_drops", awaiter_drops_.load(), 2);  // no clone left in the task
    if (bad.empty()) return true;
    ADD_FAILURE() << "seed " << seed_ << ", at the end:" << bad << "\nreplay with KARX_MODEL_SEED=" << seed_
                  << "\nsteps:\n"
                  << log_;
    return false;
  }

  std::uint64_t seed_;
  Rng rng_;
  Model model_;
  Plan plan_;
  int step_ = 0;
  std::string log_;
  Delivery delivery_ = Delivery::queue;
  std::vector<bool> inline_results_;
  bool inline_run_threw_ = false;
  std::vector<HandleAnswer> in_poll_answers_;
  // Declared before everything that counts into them, so they outlive it.
  probes::Counts counts_;
  std::atomic<int> error_drops_{0};
  std::atomic<int> awaiter_drops_{0};
  std::array<int, 2> wakes_{};
  std::array<karx::Waker, 2> awaiters_{karx::noop_waker(), karx::noop_waker()};
  // The executor's queue; declared before the handle and the wakers, whose destruction (on an
  // early failure) may schedule the task into it.
  std::deque<karx::Task<Tag>> queue_;
  std::vector<karx::Waker> wakers_;
  karx::JoinHandle<Output, Tag> handle_;
};

karx::Poll<Output> ModelFuture::poll(karx::Context& cx) { return h->poll_future(cx); }
void Schedule::operator()(karx::Task<Tag> task) const {
  h->deliver(std::move(task));
  // Uses its own state after the Task was queued, dropped or run, any of which may have
  // released the last reference: the contract keeps this function alive until the block is
  // freed, and freeing it under our feet would be a use after free here.
  h->count_schedule();
}

// Runs sequence `seed`; false if it failed.
bool run_seed(std::uint64_t seed, Coverage& cov) {
  SCOPED_TRACE("model sequence seed " + std::to_string(seed));
  Rng lengths(seed ^ 0x5eed5eed5eed5eedull);
  const int steps = 1 + static_cast<int>(lengths.below(kMaxSteps));
  Harness h(seed, &cov);
  return h.run_sequence(steps);
}

std::optional<std::uint64_t> env_number(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::strtoull(v, nullptr, 10);
}

class TaskModel : public ::testing::Test {
 protected:
  void SetUp() override { previous_ = karx::set_detached_exception_handler(&count_report); }
  void TearDown() override { karx::set_detached_exception_handler(previous_); }

 private:
  karx::detached_exception_handler previous_ = nullptr;
};

TEST_F(TaskModel, RandomSequencesMatchTheModel) {
  Coverage cov;
  if (const auto seed = env_number("KARX_MODEL_SEED")) {
    EXPECT_TRUE(run_seed(*seed, cov));
    return;
  }
  const std::uint64_t sequences = env_number("KARX_MODEL_SEQUENCES").value_or(kDefaultSequences);
  const bool trace = env_number("KARX_MODEL_TRACE").value_or(0) != 0;
  for (std::uint64_t seed = 0; seed < sequences; ++seed) {
    if (trace) std::fprintf(stderr, "model sequence %llu\n", static_cast<unsigned long long>(seed));
    if (!run_seed(seed, cov)) return;  // one failing sequence is enough to read
  }
  if (sequences < kCoverageSequences) return;
  // Every corner of the state machine must have been reached by some sequence.
  EXPECT_GT(cov.woken_while_running, 0);
  EXPECT_GT(cov.unreachable_rescheduled, 0);
  EXPECT_GT(cov.canceled_while_running, 0);
  EXPECT_GT(cov.detached_while_running, 0);
  EXPECT_GT(cov.awaited_while_running, 0);
  EXPECT_GT(cov.waited_for_destruction, 0);
  EXPECT_GT(cov.yielded_value, 0);
  EXPECT_GT(cov.yielded_canceled, 0);
  EXPECT_GT(cov.yielded_exception, 0);
  EXPECT_GT(cov.cancel_beat_completion, 0);
  EXPECT_GT(cov.reported, 0);
  EXPECT_GT(cov.freed_by_handle, 0);
  EXPECT_GT(cov.freed_by_waker, 0);
  EXPECT_GT(cov.freed_by_run, 0);
  EXPECT_GT(cov.freed_by_cancel, 0);
  EXPECT_GT(cov.misuse, 0);
  EXPECT_GT(cov.refused, 0);
  EXPECT_GT(cov.run_inline, 0);
}

}  // namespace
