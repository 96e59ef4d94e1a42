// karx.sync:combinators: when_all, when_any and timeout run several futures concurrently inside
// the task that polls them (no extra tasks), speaking only Wakers, so they work on any executor
// and under plain polling.
//
// - The variadic when_all and when_any poll every child still pending at each of their polls,
//   with the parent's own Context: a handful of children costs no bookkeeping.
// - when_all over a vector polls only the children that were woken since its last poll. Each
//   child gets a waker of its own pointing into one shared block (WakeSet): a wake flag per
//   child and a lock-free stack of the woken ones. docs/design.md ("Combinators' wake flags")
//   argues the protocol; the comments below argue each memory ordering.
// - timeout polls its future, then its Sleep, at each poll.
//
// Children live in place (in the combinator, or in an array it allocated before the first
// poll) and are never moved once polled. When a child's poll throws, the combinator records the
// exception, destroys every other child (and the outputs it held), then rethrows; once it has
// returned ready or thrown, polling it again throws std::logic_error.
//
// The cooperative budget (impl/task/coop.cppm): a JoinHandle or a Sleep polled inside a
// combinator counts against the task's budget like any other poll. When the budget is spent,
// such children report Pending after waking their own waker, so the combinator is woken again
// and the next turn (with a fresh budget) gets further: a when_all of many JoinHandles finishes
// in about n / budget turns. The vector form also stops polling children once the budget is
// spent and keeps the rest of its woken batch for the next turn (it yields), so that turn
// polls no child for nothing.
module;
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <exception>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>
export module karx.sync:combinators;
import karx.waker;
import karx.task;
import karx.time;

namespace karx::detail {

// What a combinator yields for a child of output T: T itself, or std::monostate for void.
template <class T>
using value_or_monostate = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class F>
using combined_output = value_or_monostate<output_of<F>>;

// A child of when_all: its future until it completes, then its output, then nothing once the
// combinator has taken the output or destroyed it.
template <class F>
class MaybeDone {
 public:
  using Output = combined_output<F>;

  explicit MaybeDone(F&& future) : state_(std::in_place_index<kFuture>, std::move(future)) {}

  bool done() const noexcept { return state_.index() == kOutput; }
  bool pending() const noexcept { return state_.index() == kFuture; }

  // Polls the future (it must be pending); true once the output is stored. The future is
  // destroyed as soon as it completes; its poll's exception propagates.
  bool poll(Context& cx) {
    auto p = std::get<kFuture>(state_).poll(cx);
    if (p.is_pending()) return false;
    if constexpr (std::is_void_v<output_of<F>>)
      state_.template emplace<kOutput>();
    else
      state_.template emplace<kOutput>(std::move(p).value());
    return true;
  }
  Output&& output() noexcept { return std::move(*std::get_if<kOutput>(&state_)); }
  // Destroys the future or the output, whichever is alive.
  void reset() noexcept { state_.template emplace<kGone>(); }

 private:
  static constexpr std::size_t kGone = 0, kFuture = 1, kOutput = 2;
  std::variant<std::monostate, F, Output> state_;
};

[[noreturn]] inline void throw_polled_after_completion(const char* what) {
  throw std::logic_error(std::string(what) + ": polled again after it completed (or threw)");
}

// What a future raced against an event yields (timeout, with_cancellation): the future's
// output as an optional (for a void future a bool, true: it completed), empty if the event
// came first.
template <class R>
struct RaceOutput {
  using type = std::conditional_t<std::is_void_v<R>, bool, std::optional<R>>;
  // The future was ready first (p is ready).
  static Poll<type> won(Poll<R>&& p) {
    if constexpr (std::is_void_v<R>)
      return Poll<type>::ready(true);
    else
      return Poll<type>::ready(type(std::in_place, std::move(p).value()));
  }
  // The event came first.
  static Poll<type> lost() { return Poll<type>::ready(type()); }
};

// ---- The parent's waker, for the vector form -------------------------------------------------
//
// Registered by the combinator's poll (one thread at a time), woken by any child waker from any
// thread. A state word decides who may touch the slot (futures-rs's AtomicWaker protocol):
// kRegistering while the poller writes it, kWaking while a waker takes it. A wake that finds a
// registration under way leaves the wake to the registrar, which wakes the waker it just stored;
// a registration that finds a wake under way wakes its own waker at once (the wake may be taking
// the old one). Either way the newest waker is woken at least once.
class AtomicWaker {
 public:
  AtomicWaker() noexcept = default;
  AtomicWaker(const AtomicWaker&) = delete;
  AtomicWaker& operator=(const AtomicWaker&) = delete;

  void register_waker(const Waker& w) {
    unsigned s = kIdle;
    // acquire: the slot was last written by the previous registration (released by its CAS
    // back to kIdle) or emptied by a wake (released by its fetch_and); we read and write it now.
    if (state_.compare_exchange_strong(s, kRegistering, std::memory_order_acquire, std::memory_order_acquire)) {
      std::exception_ptr failed;
      Waker replaced = Waker::from_raw(RawWaker{nullptr, nullptr});  // dropped after the protocol
      if (!slot_.will_wake(w)) {
        try {
          replaced = w;  // the clone first: if it throws, the slot keeps the old waker
          std::swap(slot_, replaced);
        } catch (...) {
          failed = std::current_exception();
        }
      }
      s = kRegistering;
      // Success, release: the new waker reaches the next wake (its fetch_or acquires).
      // Failure, acquire: a wake set kWaking meanwhile and left the wake to us; what it did
      // before its wake happens-before ours.
      if (!state_.compare_exchange_strong(s, kIdle, std::memory_order_acq_rel, std::memory_order_acquire)) {
        Waker woken = std::move(slot_);
        // acq_rel, an exchange rather than a store: another wake may have done its fetch_or
        // after our CAS failed, found kRegistering and left its wake to us too; reading the
        // word's latest value acquires what that wake did before it, so our wake below comes
        // after it. Release: the emptied slot reaches the next registration or wake.
        state_.exchange(kIdle, std::memory_order_acq_rel);
        std::move(woken).wake_and_release();
      }
      if (failed) std::rethrow_exception(failed);
      return;
    }
    // kWaking: a wake is taking the slot's old waker. Wake ours too (the poll it causes may be
    // spurious, never lost). kRegistering would be two polls at once, which no executor does.
    w.wake();
  }

  void wake() {
    // acq_rel: acquire the registration's slot (its CAS to kIdle released it); release what
    // the waking thread did, for a registrar that wakes on our behalf.
    if (state_.fetch_or(kWaking, std::memory_order_acq_rel) == kIdle) {
      Waker woken = std::move(slot_);
      // release: the emptied slot reaches the next registration (its CAS acquires).
      state_.fetch_and(~kWaking, std::memory_order_release);
      std::move(woken).wake_and_release();  // outside the protocol: the wake may re-enter
    }
  }

  // Takes the waker out (to drop it: the combinator is going away). Empty if a wake has it.
  Waker take() noexcept {
    Waker out = Waker::from_raw(RawWaker{nullptr, nullptr});
    // acq_rel, release: as in wake().
    if (state_.fetch_or(kWaking, std::memory_order_acq_rel) == kIdle) {
      out = std::move(slot_);
      state_.fetch_and(~kWaking, std::memory_order_release);
    }
    return out;
  }

 private:
  static constexpr unsigned kIdle = 0, kRegistering = 1, kWaking = 2;
  std::atomic<unsigned> state_{kIdle};
  Waker slot_ = Waker::from_raw(RawWaker{nullptr, nullptr});  // empty: wakes nothing
};

// ---- The wake flags of when_all over a vector -------------------------------------------------
//
// One allocation: this header, then a Node per child. Every child waker is {&node, vtable} and
// holds a reference to the block, so a child may keep its waker (in a timer, a channel) after
// the combinator is gone; the combinator holds one reference too.
//
// A child's wake sets its node's flag; the wake that sets it (false -> true) pushes the node
// onto a Treiber stack of woken nodes, and the push that finds the stack empty wakes the
// parent. The combinator's poll registers the parent's waker, then takes the whole stack and
// polls the children in it: before polling a child it reads the node's link, then clears the
// node's flag, so a wake during (or after) that poll queues the node again.
//
// Why the push onto a non-empty stack need not wake the parent: the node that made the stack
// non-empty was pushed onto an empty one after the last take; its pusher wakes the parent, and
// the poll that wake causes takes the stack, ours included. Why that wake reaches the newest
// waker: the take is an acq_rel exchange sequenced after the registration, and the push that
// found the stack empty read that exchange's null with an acq_rel CAS, so the registration
// happens-before the pusher's parent.wake(). Why the stack has no ABA problem: nodes leave it
// only all at once (exchange), never by a pop, and a push is correct whatever the old head's
// own link is.
class WakeSet {
 public:
  struct Node {
    std::atomic<Node*> next{nullptr};  // the link in the stack, then in the poller's batch
    std::atomic<bool> woken{true};     // queued: in the stack or in the poller's batch
    WakeSet* set;
    std::size_t index;
  };

  // A block for n children, every flag set (the first poll polls every child), one reference.
  static WakeSet* create(std::size_t n) {
    if (n > (static_cast<std::size_t>(-1) - sizeof(WakeSet)) / sizeof(Node)) throw std::bad_array_new_length();
    void* mem = ::operator new(sizeof(WakeSet) + n * sizeof(Node));
    auto* set = ::new (mem) WakeSet();
    for (std::size_t i = 0; i < n; ++i) ::new (set->nodes() + i) Node{{nullptr}, {true}, set, i};
    return set;
  }

  void release() noexcept {
    // acq_rel: every owner's use of the block happens-before the last owner frees it.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      this->~WakeSet();  // Nodes are trivially destructible
      ::operator delete(this);
    }
  }

  Node* node(std::size_t i) noexcept { return nodes() + i; }
  // The child's waker, borrowed: no reference is taken (the combinator's covers it), so the
  // caller must not let it drop (BorrowedWaker). A child that keeps it clones it.
  static RawWaker raw_waker(Node* n) noexcept { return RawWaker{n, &kVTable}; }

  // Takes every node woken since the last take, in the order they were woken (oldest first);
  // `last` gets the newest (null if none).
  Node* take_woken(Node*& last) noexcept {
    // acq_rel: acquire the pushers' links (and what they published before their wakes);
    // release the registration before it to the next pusher that finds the stack empty.
    Node* lifo = head_.exchange(nullptr, std::memory_order_acq_rel);
    last = lifo;
    Node* fifo = nullptr;
    while (lifo != nullptr) {
      Node* next = lifo->next.load(std::memory_order_relaxed);  // ours until we clear the flag
      lifo->next.store(fifo, std::memory_order_relaxed);
      fifo = lifo;
      lifo = next;
    }
    return fifo;
  }

  AtomicWaker parent;

 private:
  WakeSet() noexcept = default;
  ~WakeSet() = default;
  // The nodes follow the header (whose size is a multiple of its alignment, see below).
  Node* nodes() noexcept { return reinterpret_cast<Node*>(this + 1); }

  void wake(Node* n) {
    // acq_rel. Acquire: we read false, written by the poller's clear of the flag, which it did
    // after its last read of n->next; our write of n->next below must come after that read.
    // Release: what the waking thread did before this wake reaches the child's next poll
    // (the poller's clear, an acquire RMW, reads our true). Reading true: the node is queued
    // and its poll has not started (the poller clears the flag first): nothing to do.
    if (n->woken.exchange(true, std::memory_order_acq_rel)) return;
    Node* head = head_.load(std::memory_order_relaxed);
    do {
      n->next.store(head, std::memory_order_relaxed);  // published by the CAS's release
      // Success, acq_rel: release the link to the taker (its exchange acquires); acquire the
      // registration that preceded the last take (see the class comment). Failure: relaxed,
      // we only retry with the new head.
    } while (!head_.compare_exchange_weak(head, n, std::memory_order_acq_rel, std::memory_order_relaxed));
    if (head == nullptr) parent.wake();
  }

  static RawWaker clone(const void* p) noexcept {
    // relaxed: a clone is made from a live waker, which holds a reference (the shared_ptr
    // argument): the block cannot be freed meanwhile, and the increment publishes nothing.
    of(p)->set->refs_.fetch_add(1, std::memory_order_relaxed);
    return RawWaker{p, &kVTable};
  }
  static void wake_by_value(const void* p) {
    struct Release {
      const void* p;
      ~Release() { of(p)->set->release(); }
    } release{p};
    of(p)->set->wake(of(p));
  }
  static void wake_by_ref(const void* p) { of(p)->set->wake(of(p)); }
  static void drop(const void* p) noexcept { of(p)->set->release(); }
  static Node* of(const void* p) noexcept { return static_cast<Node*>(const_cast<void*>(p)); }
  static constexpr RawWakerVTable kVTable{&clone, &wake_by_value, &wake_by_ref, &drop};

  std::atomic<std::size_t> refs_{1};
  std::atomic<Node*> head_{nullptr};
};
static_assert(alignof(WakeSet::Node) <= alignof(WakeSet));

// A Waker over a raw waker that someone else owns, for the length of one poll.
class BorrowedWaker {
 public:
  explicit BorrowedWaker(RawWaker raw) noexcept : waker_(Waker::from_raw(raw)) {}
  BorrowedWaker(const BorrowedWaker&) = delete;
  BorrowedWaker& operator=(const BorrowedWaker&) = delete;
  ~BorrowedWaker() { (void)std::move(waker_).into_raw(); }
  const Waker& get() const noexcept { return waker_; }

 private:
  Waker waker_;
};

// True when the running task's cooperative budget is spent (coop.cppm): karx's own futures
// would only report Pending now.
inline bool coop_spent() noexcept { return coop_budget == 0; }
// Ends the task's turn as a spent budget does: wake it, and have its next schedule yield.
inline void coop_yield(Context& cx) {
  yield_requested = true;
  cx.waker().wake();
}

// ---- when_all (variadic) ----------------------------------------------------------------------

template <class... F>
class WhenAll {
 public:
  using Output = std::tuple<combined_output<F>...>;

  explicit WhenAll(F&&... fs) : children_(MaybeDone<F>(std::move(fs))...) {}

  // Polls every child still pending, in argument order, with the parent's context.
  Poll<Output> poll(Context& cx) {
    if (finished_) throw_polled_after_completion("karx::when_all");
    try {
      bool all_done = true;
      std::apply([&](auto&... c) { ((all_done = (c.done() || c.poll(cx)) && all_done), ...); }, children_);
      if (!all_done) return pending;
      finished_ = true;
      Output out = std::apply([](auto&... c) { return Output(c.output()...); }, children_);
      reset();
      return Poll<Output>::ready(std::move(out));
    } catch (...) {
      finished_ = true;
      reset();  // the first exception wins: the other children are destroyed, then it is rethrown
      throw;
    }
  }

 private:
  void reset() noexcept {
    std::apply([](auto&... c) { (c.reset(), ...); }, children_);
  }

  std::tuple<MaybeDone<F>...> children_;
  bool finished_ = false;
};

// ---- when_all (vector) ------------------------------------------------------------------------

template <class F>
class WhenAllVector {
 public:
  using R = combined_output<F>;
  using Output = std::vector<R>;

  explicit WhenAllVector(std::vector<F>&& fs) {
    children_.reserve(fs.size());
    for (F& f : fs) children_.emplace_back(std::move(f));
    fs.clear();
    left_ = children_.size();
  }
  WhenAllVector(WhenAllVector&& other) noexcept
      : children_(std::move(other.children_)),
        set_(std::exchange(other.set_, nullptr)),
        batch_(std::exchange(other.batch_, nullptr)),
        batch_last_(std::exchange(other.batch_last_, nullptr)),
        left_(other.left_),
        finished_(other.finished_) {}
  WhenAllVector& operator=(WhenAllVector&&) = delete;
  ~WhenAllVector() { finish(); }

  // Polls the children woken before this poll began (all of them the first time), in the
  // order they were woken: those left over from the last poll (a spent budget) first, then
  // those taken from the stack now. Children woken during this poll wait for the next one, so
  // a child that wakes itself cannot keep the combinator polling for ever.
  Poll<Output> poll(Context& cx) {
    if (finished_) throw_polled_after_completion("karx::when_all");
    if (left_ == 0) return complete();
    if (set_ == nullptr) {
      set_ = WakeSet::create(children_.size());
      for (std::size_t i = children_.size(); i-- > 0;) {  // every child, in order
        WakeSet::Node* n = set_->node(i);
        n->next.store(batch_, std::memory_order_relaxed);
        batch_ = n;
      }
      batch_last_ = set_->node(children_.size() - 1);
    }
    // Register first, take second: a child woken after the take sees the new waker (WakeSet's
    // class comment).
    set_->parent.register_waker(cx.waker());
    WakeSet::Node* last = nullptr;
    if (WakeSet::Node* fresh = set_->take_woken(last)) {
      if (batch_ == nullptr)
        batch_ = fresh;
      else
        batch_last_->next.store(fresh, std::memory_order_relaxed);
      batch_last_ = last;
    }
    try {
      while (batch_ != nullptr) {
        if (coop_spent()) {  // the rest of the batch waits for the next turn
          coop_yield(cx);
          break;
        }
        WakeSet::Node* n = batch_;
        // Read the link before clearing the flag: once it is clear, a wake may push the node
        // again and rewrite the link.
        batch_ = n->next.load(std::memory_order_relaxed);
        // acq_rel. Acquire: the child's poll sees what its wakers did before setting the flag
        // (we read the last setter's true). Release: our read of the link above happens-before
        // the next setter's write of it.
        n->woken.exchange(false, std::memory_order_acq_rel);
        MaybeDone<F>& child = children_[n->index];
        if (!child.pending()) continue;  // a late or spurious wake of a child already done
        BorrowedWaker waker(WakeSet::raw_waker(n));
        Context child_cx(waker.get());
        if (child.poll(child_cx)) --left_;
      }
    } catch (...) {
      finish();  // the first exception: every other child is destroyed, then it is rethrown
      throw;
    }
    if (left_ == 0) return complete();
    return pending;
  }

 private:
  Poll<Output> complete() {
    Output out;
    try {
      out.reserve(children_.size());
      for (MaybeDone<F>& c : children_) out.push_back(c.output());
    } catch (...) {
      finish();
      throw;
    }
    finish();
    return Poll<Output>::ready(std::move(out));
  }
  // Destroys the children (futures or outputs), then lets go of the wake flags: the parent's
  // waker is dropped now, so a child waker kept elsewhere wakes nobody and holds no task alive.
  void finish() noexcept {
    finished_ = true;
    children_.clear();
    batch_ = nullptr;
    if (set_ != nullptr) {
      {
        Waker parent = set_->parent.take();
      }
      std::exchange(set_, nullptr)->release();
    }
  }

  std::vector<MaybeDone<F>> children_;   // never reallocated: the children stay in place
  WakeSet* set_ = nullptr;               // allocated at the first poll
  WakeSet::Node* batch_ = nullptr;       // taken from the stack, not polled yet (flags set)
  WakeSet::Node* batch_last_ = nullptr;  // the batch's last node (valid while batch_ is not null)
  std::size_t left_ = 0;                 // children not done
  bool finished_ = false;
};

// ---- when_any ---------------------------------------------------------------------------------

template <class... F>
class WhenAny {
 public:
  using Output = std::variant<combined_output<F>...>;

  explicit WhenAny(F&&... fs) : children_(std::move(fs)...) {}

  // Polls the children in argument order, with the parent's context, until one is ready.
  Poll<Output> poll(Context& cx) {
    if (finished_) throw_polled_after_completion("karx::when_any");
    std::optional<Output> out;
    try {
      poll_children(cx, out, std::index_sequence_for<F...>{});
    } catch (...) {
      finish();
      throw;
    }
    if (!out) return pending;
    finish();  // the losers are destroyed before the winner's output is handed out
    return Poll<Output>::ready(std::move(*out));
  }

 private:
  template <std::size_t... I>
  void poll_children(Context& cx, std::optional<Output>& out, std::index_sequence<I...>) {
    (void)(poll_child<I>(cx, out) || ...);  // stops at the first ready child
  }
  template <std::size_t I>
  bool poll_child(Context& cx, std::optional<Output>& out) {
    auto p = std::get<I>(children_)->poll(cx);
    if (p.is_pending()) return false;
    // in_place_index: two children of the same output type stay apart.
    if constexpr (std::is_void_v<typename decltype(p)::value_type>)
      out.emplace(std::in_place_index<I>);
    else
      out.emplace(std::in_place_index<I>, std::move(p).value());
    return true;
  }
  void finish() noexcept {
    finished_ = true;
    std::apply([](auto&... c) { (c.reset(), ...); }, children_);
  }

  std::tuple<std::optional<F>...> children_;
  bool finished_ = false;
};

// ---- timeout ----------------------------------------------------------------------------------

template <class F>
class Timeout {
 public:
  using Race = RaceOutput<output_of<F>>;
  using Output = typename Race::type;

  Timeout(std::chrono::nanoseconds d, F&& f) : duration_(d), future_(std::move(f)) {}

  // The future first (it wins a tie), then the timer. The timer starts at the first poll, so
  // that inside a simulation it counts virtual time.
  Poll<Output> poll(Context& cx) {
    if (!future_) throw_polled_after_completion("karx::timeout");
    try {
      auto p = future_->poll(cx);
      if (p.is_ready()) {
        finish();
        return Race::won(std::move(p));
      }
      if (!sleep_) sleep_.emplace(sleep_for(duration_));
      if (sleep_->poll(cx).is_pending()) return pending;
    } catch (...) {
      finish();
      throw;
    }
    finish();  // the deadline passed first: the future is destroyed
    return Race::lost();
  }

 private:
  void finish() noexcept {
    future_.reset();
    sleep_.reset();
  }

  std::chrono::nanoseconds duration_;
  std::optional<F> future_;  // empty once finished
  std::optional<Sleep> sleep_;
};

}  // namespace karx::detail

export namespace karx {

// Runs every future concurrently in the calling task; ready with all their outputs (void ones
// as std::monostate) once all are. The first exception is rethrown after the others are
// destroyed. Each poll polls every child still pending.
template <Future... F>
  requires(std::move_constructible<F> && ...)
auto when_all(F... fs) {
  return detail::WhenAll<F...>(std::move(fs)...);
}

// As above, for any number of futures of one type; each poll polls only the children woken
// since the previous one. The outputs keep the vector's order.
template <Future F>
  requires std::move_constructible<F>
auto when_all(std::vector<F> fs) {
  return detail::WhenAllVector<F>(std::move(fs));
}

// Runs the futures concurrently in the calling task; ready with the output of the first that
// is ready (the variant's index is the future's position); the others are destroyed.
template <Future... F>
  requires(sizeof...(F) > 0 && (std::move_constructible<F> && ...))
auto when_any(F... fs) {
  return detail::WhenAny<F...>(std::move(fs)...);
}

// f's output (void: true), or nullopt (void: false) if d passes first, counted from the first
// poll; f is then destroyed.
template <Future F>
  requires std::move_constructible<F>
auto timeout(std::chrono::nanoseconds d, F f) {
  return detail::Timeout<F>(d, std::move(f));
}

}  // namespace karx
