// ChannelCore<T>: the shared state of a channel and both halves of its protocol, the senders'
// and the receivers'. The design is Go's (runtime/chan.go): one lock, a ring buffer, and two
// FIFO queues of waiters; a value meets a waiting receiver directly (hand-off), and a waiting
// sender's value moves into the buffer as soon as a receiver makes room, so values leave in
// send order and waiting receivers get them in the order they started waiting.
//
// Invariants, all under the lock:
//   - receivers wait only while the buffer is empty (a send meets them first);
//   - senders wait only while the buffer holds `capacity` values or more;
//   - a waiter is in a queue iff its state is `waiting`; the channel takes it out and then
//     stores `granted` or `closed` as its very last touch of the node, since the future may
//     see that state without the lock and be destroyed at once.
//
// The futures (Send/Recv in modules/sync/channel.cppm) read their state with acquire before
// taking the lock, so a woken future completes without it. A future destroyed while waiting
// takes the lock and leaves its queue; a receiver destroyed holding a value it did not take
// passes it on: to the next waiting receiver, else back to the front of the buffer.
module;
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
export module karx.sync:channel_core;
import karx.waker;
import :lock;
import :wait_list;
import :ring;

export namespace karx {
// try_send's answer: the value was sent (moved from), the buffer was full, or the channel is
// closed (in both of these the value is left untouched).
enum class TrySend { sent, full, closed };
}  // namespace karx

export namespace karx::detail {

// Where a waiting future stands (see the invariants above).
enum class WaitState : std::uint8_t { idle, waiting, granted, closed };

template <class T>
struct ChannelWaiter : WaitNode {
  std::atomic<WaitState> state{WaitState::idle};
  // A sender's value until a receiver or the buffer takes it; a receiver's value once a
  // sender hands it over.
  std::optional<T> value;
};

template <class T>
class ChannelCore {
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                "karx::channel<T>: T must be nothrow move constructible and destructible");

 public:
  static constexpr std::size_t kUnbounded = SIZE_MAX;

  // A new channel with one Sender and one Receiver.
  static ChannelCore* make(std::size_t capacity) { return new ChannelCore(capacity); }

  // --- Handles ---------------------------------------------------------------------------
  // relaxed increments: a handle is copied from a live one, so the core cannot go away
  // meanwhile, and the increment publishes nothing (the shared_ptr argument).
  void add_sender() noexcept {
    senders_.fetch_add(1, std::memory_order_relaxed);
    handles_.fetch_add(1, std::memory_order_relaxed);
  }
  void add_receiver() noexcept {
    receivers_.fetch_add(1, std::memory_order_relaxed);
    handles_.fetch_add(1, std::memory_order_relaxed);
  }
  // The last Sender, or the last Receiver, closes the channel.
  void drop_sender() noexcept {
    if (senders_.fetch_sub(1, std::memory_order_acq_rel) == 1) close();
    release();
  }
  void drop_receiver() noexcept {
    if (receivers_.fetch_sub(1, std::memory_order_acq_rel) == 1) close();
    release();
  }

  // acquire: pairs with close()'s release store, for a caller that then looks at what the
  // closing thread did before.
  bool is_closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  // --- Senders ---------------------------------------------------------------------------
  Poll<bool> poll_send(ChannelWaiter<T>& w, Context& cx) {
    // acquire: pairs with the release store of the receiver (or closer) that took us out of
    // the queue, so its writes (our value taken) are visible.
    switch (w.state.load(std::memory_order_acquire)) {
      case WaitState::granted:
        return ready(true);
      case WaitState::closed:
        w.value.reset();  // a send on a closed channel destroys its value
        return ready(false);
      default:
        break;
    }
    WakeBatch wake;  // declared first: woken after the guard below has unlocked
    SyncLockGuard guard(lock_);
    const WaitState s = w.state.load(std::memory_order_relaxed);  // under the lock: current
    if (s == WaitState::waiting) {
      Waker replaced = w.exchange_waker(cx.waker());
      guard.unlock();  // the replaced waker is dropped outside the lock
      return pending;
    }
    if (s != WaitState::idle) {
      guard.unlock();
      if (s == WaitState::granted) return ready(true);
      w.value.reset();
      return ready(false);
    }
    if (closed_.load(std::memory_order_relaxed)) {
      guard.unlock();
      w.value.reset();
      w.state.store(WaitState::closed, std::memory_order_relaxed);
      return ready(false);
    }
    if (!receivers_queue_.empty()) {
      hand_to_receiver(std::move(*w.value), wake);
      w.value.reset();
      return ready(true);
    }
    if (buffer_.size() < capacity_) {
      buffer_.push_back(std::move(*w.value));  // may throw bad_alloc (unbounded growth): nothing sent
      w.value.reset();
      return ready(true);
    }
    w.set_waker(cx.waker());
    senders_queue_.push_back(&w);
    w.state.store(WaitState::waiting, std::memory_order_relaxed);
    return pending;
  }

  // The send future is destroyed before it completed: leave the queue. Its value was not
  // sent and is destroyed with it.
  void cancel_send(ChannelWaiter<T>& w) noexcept {
    if (w.state.load(std::memory_order_acquire) != WaitState::waiting) return;
    SyncLockGuard guard(lock_);
    if (w.queued) senders_queue_.remove(&w);
  }

  // Moves from `value` only when it returns TrySend::sent.
  TrySend try_send(T& value) {
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    if (closed_.load(std::memory_order_relaxed)) return TrySend::closed;
    if (!receivers_queue_.empty()) {
      hand_to_receiver(std::move(value), wake);
      return TrySend::sent;
    }
    if (buffer_.size() >= capacity_) return TrySend::full;
    buffer_.push_back(std::move(value));
    return TrySend::sent;
  }

  // --- Receivers -------------------------------------------------------------------------
  Poll<std::optional<T>> poll_recv(ChannelWaiter<T>& w, Context& cx) {
    // acquire: pairs with the sender's release store after it wrote w.value.
    switch (w.state.load(std::memory_order_acquire)) {
      case WaitState::granted:
        return take_granted(w);
      case WaitState::closed:
        return ready(std::optional<T>());
      default:
        break;
    }
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    const WaitState s = w.state.load(std::memory_order_relaxed);
    if (s == WaitState::waiting) {
      Waker replaced = w.exchange_waker(cx.waker());
      guard.unlock();  // the replaced waker is dropped outside the lock
      return pending;
    }
    if (s == WaitState::granted) return take_granted(w);
    if (s == WaitState::closed) return ready(std::optional<T>());
    if (std::optional<T> v = take_locked(wake)) return ready(std::move(v));
    if (closed_.load(std::memory_order_relaxed)) {
      w.state.store(WaitState::closed, std::memory_order_relaxed);
      return ready(std::optional<T>());
    }
    w.set_waker(cx.waker());
    receivers_queue_.push_back(&w);
    w.state.store(WaitState::waiting, std::memory_order_relaxed);
    return pending;
  }

  // The receive future is destroyed before it completed: leave the queue, or pass on a value
  // that was handed to it and not taken.
  void cancel_recv(ChannelWaiter<T>& w) noexcept {
    const WaitState s = w.state.load(std::memory_order_acquire);
    if (s == WaitState::idle || s == WaitState::closed) return;
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    if (w.queued) {
      receivers_queue_.remove(&w);
      return;
    }
    if (w.state.load(std::memory_order_relaxed) == WaitState::granted && w.value) {
      T v = std::move(*w.value);
      w.value.reset();
      if (!receivers_queue_.empty())
        hand_to_receiver(std::move(v), wake);
      else
        buffer_.push_front_or_die(std::move(v));  // it was sent before everything buffered
    }
  }

  std::optional<T> try_recv() {
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    return take_locked(wake);
  }

  // Closes the channel: no more sends; receivers drain what is buffered. Every waiting sender
  // resolves false, every waiting receiver (the buffer is then empty) nullopt.
  void close() noexcept {
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    // release: is_closed() readers that see it also see what preceded the close.
    closed_.store(true, std::memory_order_release);
    for (;;) {
      while (!wake.full() && !senders_queue_.empty()) finish(*senders_queue_.pop_front(), WaitState::closed, wake);
      while (!wake.full() && !receivers_queue_.empty()) finish(*receivers_queue_.pop_front(), WaitState::closed, wake);
      if (senders_queue_.empty() && receivers_queue_.empty()) return;
      // More than a batch: wake these outside the lock, then go on (no new waiter can come:
      // the channel is closed).
      guard.unlock();
      wake.wake_all();
      guard.relock(lock_);
    }
  }

 private:
  explicit ChannelCore(std::size_t capacity)
      : capacity_(capacity), buffer_(capacity == kUnbounded ? 16 : std::min<std::size_t>(capacity, 1024)) {}

  void release() noexcept {
    // acq_rel: the last handle sees every other handle's use of the core before deleting it.
    if (handles_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Takes the waiter out of its queue's business: its waker goes to the batch and, last of
  // all, its state is published (release: pairs with the future's acquire load; after this
  // store the node may be destroyed at any moment).
  static void finish(WaitNode& n, WaitState state, WakeBatch& wake) noexcept {
    auto& w = static_cast<ChannelWaiter<T>&>(n);
    wake.take_from(w);
    w.state.store(state, std::memory_order_release);
  }

  void hand_to_receiver(T&& v, WakeBatch& wake) noexcept {
    auto& w = static_cast<ChannelWaiter<T>&>(*receivers_queue_.pop_front());
    w.value.emplace(std::move(v));
    finish(w, WaitState::granted, wake);
  }

  // A value for a receiver, under the lock: the buffer's oldest (then a waiting sender's value
  // fills the room it left), or, with nothing buffered, a waiting sender's (a rendezvous).
  std::optional<T> take_locked(WakeBatch& wake) noexcept {
    if (!buffer_.empty()) {
      std::optional<T> v(buffer_.pop_front());
      // The pop freed a slot, so this push never grows the ring.
      if (!senders_queue_.empty() && buffer_.size() < capacity_) {
        auto& s = static_cast<ChannelWaiter<T>&>(*senders_queue_.pop_front());
        buffer_.push_back(std::move(*s.value));
        s.value.reset();
        finish(s, WaitState::granted, wake);
      }
      return v;
    }
    if (!senders_queue_.empty()) {
      auto& s = static_cast<ChannelWaiter<T>&>(*senders_queue_.pop_front());
      std::optional<T> v(std::move(*s.value));
      s.value.reset();
      finish(s, WaitState::granted, wake);
      return v;
    }
    return std::nullopt;
  }

  static Poll<std::optional<T>> take_granted(ChannelWaiter<T>& w) noexcept {
    std::optional<T> v(std::move(w.value));
    w.value.reset();
    return ready(std::move(v));
  }

  SyncLock lock_;
  const std::size_t capacity_;
  std::atomic<bool> closed_{false};
  Ring<T> buffer_;
  WaitList senders_queue_;
  WaitList receivers_queue_;
  std::atomic<std::size_t> senders_{1};
  std::atomic<std::size_t> receivers_{1};
  std::atomic<std::size_t> handles_{2};
};

}  // namespace karx::detail
