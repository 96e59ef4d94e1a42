// oneshot<T>(): one value from one sender to one receiver. The receiver is itself the future;
// it yields nullopt if the sender was destroyed without sending.
//
// Protocol. One block shared by the two halves: a short lock guards the value, the receiver's
// waker and the two "gone" flags; `refs` counts the halves still alive, and the last one frees
// the block. The sender wakes the receiver after letting go of the lock.
module;
#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
export module karx.sync:oneshot;
import karx.waker;
import :lock;

namespace karx::detail {

template <class T>
struct OneshotBlock {
  SyncLock lock;
  std::optional<T> value;
  std::optional<Waker> receiver_waker;
  bool sender_gone = false;
  bool receiver_gone = false;
  std::atomic<int> refs{2};

  void release() noexcept {
    // acq_rel: the last half sees the other's writes before freeing.
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

[[noreturn]] inline void throw_oneshot_misuse(const char* what, const char* why) {
  throw std::logic_error(std::string("karx::") + what + ": " + why);
}

}  // namespace karx::detail

export namespace karx {

template <class T>
class OneshotSender;
template <class T>
class OneshotReceiver;
template <class T>
std::pair<OneshotSender<T>, OneshotReceiver<T>> oneshot();

// The sending half: move-only; send() at most once.
template <class T>
class OneshotSender {
 public:
  OneshotSender(OneshotSender&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  OneshotSender& operator=(OneshotSender&& other) noexcept {
    OneshotSender(std::move(other)).swap(*this);
    return *this;
  }
  ~OneshotSender() { finish(std::nullopt); }

  // Sends the value: false if the receiver is gone (the value is then destroyed). The sender
  // is used up either way; a second send throws std::logic_error.
  bool send(T value) {
    if (block_ == nullptr) detail::throw_oneshot_misuse("OneshotSender::send()", "already sent, or moved from");
    return finish(std::optional<T>(std::move(value)));
  }
  // True once the receiver is gone (a send would be lost).
  bool is_closed() const {
    if (block_ == nullptr) detail::throw_oneshot_misuse("OneshotSender::is_closed()", "already sent, or moved from");
    detail::SyncLockGuard guard(block_->lock);
    return block_->receiver_gone;
  }

 private:
  friend std::pair<OneshotSender<T>, OneshotReceiver<T>> oneshot<T>();
  explicit OneshotSender(detail::OneshotBlock<T>* b) noexcept : block_(b) {}
  void swap(OneshotSender& other) noexcept { std::swap(block_, other.block_); }

  // Delivers `value` (or, with none, the news that none will come) and lets go of the block.
  bool finish(std::optional<T> value) noexcept {
    detail::OneshotBlock<T>* b = std::exchange(block_, nullptr);
    if (b == nullptr) return false;
    std::optional<Waker> waker;
    bool delivered = false;
    {
      detail::SyncLockGuard guard(b->lock);
      b->sender_gone = true;
      if (!b->receiver_gone) {
        b->value = std::move(value);
        delivered = b->value.has_value();
        waker = std::move(b->receiver_waker);
      }
    }
    if (waker) std::move(*waker).wake_and_release();
    b->release();
    return delivered;
  }

  detail::OneshotBlock<T>* block_;
};

// The receiving half, a Future<std::optional<T>>: the value, or nullopt if the sender was
// destroyed without sending. Move-only; destroying it makes the sender's send() return false.
template <class T>
class OneshotReceiver {
 public:
  OneshotReceiver(OneshotReceiver&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  OneshotReceiver& operator=(OneshotReceiver&& other) noexcept {
    OneshotReceiver(std::move(other)).swap(*this);
    return *this;
  }
  ~OneshotReceiver() { close(); }

  Poll<std::optional<T>> poll(Context& cx) {
    if (block_ == nullptr)
      detail::throw_oneshot_misuse("OneshotReceiver::poll()", "it already yielded its value, or was moved from");
    std::optional<T> out;
    {
      detail::SyncLockGuard guard(block_->lock);
      if (!block_->sender_gone) {
        if (!block_->receiver_waker || !block_->receiver_waker->will_wake(cx.waker()))
          block_->receiver_waker.emplace(cx.waker());
        return pending;
      }
      out = std::move(block_->value);
      block_->receiver_gone = true;
    }
    std::exchange(block_, nullptr)->release();
    return Poll<std::optional<T>>::ready(std::move(out));
  }

  // The value if it has come (nullopt otherwise, or if the sender is gone without one; the
  // receiver is used up once the sender is gone).
  std::optional<T> try_recv() {
    if (block_ == nullptr)
      detail::throw_oneshot_misuse("OneshotReceiver::try_recv()", "it already yielded its value, or was moved from");
    Waker w = noop_waker();
    Context cx(w);
    Poll<std::optional<T>> p = poll(cx);
    if (p.is_pending()) return std::nullopt;
    return std::move(p).value();
  }

 private:
  friend std::pair<OneshotSender<T>, OneshotReceiver<T>> oneshot<T>();
  explicit OneshotReceiver(detail::OneshotBlock<T>* b) noexcept : block_(b) {}
  void swap(OneshotReceiver& other) noexcept { std::swap(block_, other.block_); }
  void close() noexcept {
    detail::OneshotBlock<T>* b = std::exchange(block_, nullptr);
    if (b == nullptr) return;
    std::optional<T> dropped;  // destroyed outside the lock
    std::optional<Waker> waker;
    {
      detail::SyncLockGuard guard(b->lock);
      b->receiver_gone = true;
      dropped = std::move(b->value);
      waker = std::move(b->receiver_waker);
    }
    b->release();
  }

  detail::OneshotBlock<T>* block_;
};

template <class T>
std::pair<OneshotSender<T>, OneshotReceiver<T>> oneshot() {
  static_assert(std::is_nothrow_move_constructible_v<T>, "karx::oneshot<T>: T must be nothrow move constructible");
  auto* b = new detail::OneshotBlock<T>;
  return {OneshotSender<T>(b), OneshotReceiver<T>(b)};
}

}  // namespace karx
