// Channels: MPMC queues between tasks with Go's semantics (impl/sync/channel_core.cppm holds
// the protocol). channel<T>(n) buffers n values (0: each send waits for a receiver, a
// rendezvous); unbounded_channel<T>() never makes a sender wait.
module;
#include <atomic>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
export module karx.sync:channel;
import karx.waker;
import :channel_core;
import :fatal;

namespace karx::detail {

[[noreturn]] inline void throw_empty_channel_handle(const char* what) {
  throw std::logic_error(std::string("karx::") + what + ": the handle is empty (moved from or default-constructed)");
}
[[noreturn]] inline void throw_polled_after_ready(const char* what) {
  throw std::logic_error(std::string("karx::") + what + ": the future already completed and was polled again");
}
inline void check_not_waiting(WaitState s) noexcept {
  if (s == WaitState::waiting)
    sync_fatal("a karx.sync future was moved while it waited (a polled future must stay where it is)");
}

}  // namespace karx::detail

export namespace karx {

template <class T>
class Sender;
template <class T>
class Receiver;
template <class T>
std::pair<Sender<T>, Receiver<T>> channel(std::size_t capacity);
template <class T>
std::pair<Sender<T>, Receiver<T>> unbounded_channel();

// The future of Sender::send: a Future<bool>, true once the value is in the channel (buffered
// or taken by a receiver), false if the channel closed first (the value is then destroyed).
// Destroying it while it waits withdraws the send: the value was not sent and is destroyed.
// It borrows the channel: some Sender or Receiver of the channel must outlive it.
template <class T>
class SendFuture {
 public:
  SendFuture(SendFuture&& other) noexcept : core_(std::exchange(other.core_, nullptr)), done_(other.done_) {
    detail::check_not_waiting(other.waiter_.state.load(std::memory_order_relaxed));
    waiter_.value = std::move(other.waiter_.value);
  }
  SendFuture& operator=(SendFuture&&) = delete;
  ~SendFuture() {
    if (core_ != nullptr && !done_) core_->cancel_send(waiter_);
  }

  Poll<bool> poll(Context& cx) {
    if (done_) detail::throw_polled_after_ready("Sender::send()");
    Poll<bool> p = core_->poll_send(waiter_, cx);
    done_ = p.is_ready();
    return p;
  }

 private:
  friend class Sender<T>;
  SendFuture(detail::ChannelCore<T>* core, T&& value) : core_(core) { waiter_.value.emplace(std::move(value)); }

  detail::ChannelCore<T>* core_;
  detail::ChannelWaiter<T> waiter_;
  bool done_ = false;
};

// The future of Receiver::recv: a Future<std::optional<T>>, the next value, or nullopt once
// the channel is closed and drained. Destroying it while it waits withdraws it; a value that
// was already handed to it goes to the next waiting receiver, or back to the channel.
// It borrows the channel: some Sender or Receiver of the channel must outlive it.
template <class T>
class RecvFuture {
 public:
  RecvFuture(RecvFuture&& other) noexcept : core_(std::exchange(other.core_, nullptr)), done_(other.done_) {
    detail::check_not_waiting(other.waiter_.state.load(std::memory_order_relaxed));
  }
  RecvFuture& operator=(RecvFuture&&) = delete;
  ~RecvFuture() {
    if (core_ != nullptr && !done_) core_->cancel_recv(waiter_);
  }

  Poll<std::optional<T>> poll(Context& cx) {
    if (done_) detail::throw_polled_after_ready("Receiver::recv()");
    Poll<std::optional<T>> p = core_->poll_recv(waiter_, cx);
    done_ = p.is_ready();
    return p;
  }

 private:
  friend class Receiver<T>;
  explicit RecvFuture(detail::ChannelCore<T>* core) noexcept : core_(core) {}

  detail::ChannelCore<T>* core_;
  detail::ChannelWaiter<T> waiter_;
  bool done_ = false;
};

// The sending half: copyable; the channel closes when the last Sender is destroyed.
template <class T>
class Sender {
 public:
  Sender() noexcept = default;
  Sender(const Sender& other) noexcept : core_(other.core_) {
    if (core_ != nullptr) core_->add_sender();
  }
  Sender(Sender&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  Sender& operator=(Sender other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  ~Sender() {
    if (core_ != nullptr) core_->drop_sender();
  }

  // Waits for room (or a receiver); false if the channel is closed (the value is destroyed).
  SendFuture<T> send(T value) { return SendFuture<T>(core("Sender::send()"), std::move(value)); }
  // Never waits; moves from `value` only when it returns TrySend::sent.
  TrySend try_send(T&& value) { return core("Sender::try_send()")->try_send(value); }
  // Closes the channel for every handle; values already sent can still be received.
  void close() { core("Sender::close()")->close(); }
  bool is_closed() const { return core("Sender::is_closed()")->is_closed(); }

  explicit operator bool() const noexcept { return core_ != nullptr; }

 private:
  friend std::pair<Sender<T>, Receiver<T>> channel<T>(std::size_t);
  friend std::pair<Sender<T>, Receiver<T>> unbounded_channel<T>();
  explicit Sender(detail::ChannelCore<T>* core) noexcept : core_(core) {}
  detail::ChannelCore<T>* core(const char* what) const {
    if (core_ == nullptr) [[unlikely]]
      detail::throw_empty_channel_handle(what);
    return core_;
  }

  detail::ChannelCore<T>* core_ = nullptr;
};

// The receiving half: copyable; several receivers share the values (each value goes to one).
// Destroying the last Receiver closes the channel (sends then return false).
template <class T>
class Receiver {
 public:
  Receiver() noexcept = default;
  Receiver(const Receiver& other) noexcept : core_(other.core_) {
    if (core_ != nullptr) core_->add_receiver();
  }
  Receiver(Receiver&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  Receiver& operator=(Receiver other) noexcept {
    std::swap(core_, other.core_);
    return *this;
  }
  ~Receiver() {
    if (core_ != nullptr) core_->drop_receiver();
  }

  // The next value; nullopt once the channel is closed and drained.
  RecvFuture<T> recv() { return RecvFuture<T>(core("Receiver::recv()")); }
  // Never waits: nullopt when nothing is buffered (or the channel is closed and drained).
  std::optional<T> try_recv() { return core("Receiver::try_recv()")->try_recv(); }
  void close() { core("Receiver::close()")->close(); }
  bool is_closed() const { return core("Receiver::is_closed()")->is_closed(); }

  explicit operator bool() const noexcept { return core_ != nullptr; }

 private:
  friend std::pair<Sender<T>, Receiver<T>> channel<T>(std::size_t);
  friend std::pair<Sender<T>, Receiver<T>> unbounded_channel<T>();
  explicit Receiver(detail::ChannelCore<T>* core) noexcept : core_(core) {}
  detail::ChannelCore<T>* core(const char* what) const {
    if (core_ == nullptr) [[unlikely]]
      detail::throw_empty_channel_handle(what);
    return core_;
  }

  detail::ChannelCore<T>* core_ = nullptr;
};

// A channel that buffers `capacity` values; 0 makes every send wait for a receiver.
template <class T>
std::pair<Sender<T>, Receiver<T>> channel(std::size_t capacity) {
  if (capacity == detail::ChannelCore<T>::kUnbounded)
    throw std::invalid_argument("karx::channel(capacity): capacity SIZE_MAX is reserved; use unbounded_channel()");
  auto* core = detail::ChannelCore<T>::make(capacity);
  return {Sender<T>(core), Receiver<T>(core)};
}

// A channel whose sends never wait (the buffer grows as needed).
template <class T>
std::pair<Sender<T>, Receiver<T>> unbounded_channel() {
  auto* core = detail::ChannelCore<T>::make(detail::ChannelCore<T>::kUnbounded);
  return {Sender<T>(core), Receiver<T>(core)};
}

}  // namespace karx
