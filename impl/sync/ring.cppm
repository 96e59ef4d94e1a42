// Ring<T>: the buffer of a channel, a FIFO of values in a power-of-two array that doubles when
// full. Guarded by the channel's lock. A bounded channel never grows it past its capacity in
// normal operation; it grows beyond only to take back values that were handed to a receiver
// that was destroyed before taking them (they go back to the front, in their send order).
module;
#include <bit>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>
export module karx.sync:ring;
import :fatal;

export namespace karx::detail {

template <class T>
class Ring {
 public:
  explicit Ring(std::size_t initial_room) {
    if (initial_room != 0) grow_to(std::bit_ceil(initial_room));
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    while (size_ != 0) pop_front();
    if (slots_ != nullptr) std::allocator<T>().deallocate(slots_, mask_ + 1);
  }

  inline std::size_t size() const noexcept { return size_; }
  inline bool empty() const noexcept { return size_ == 0; }

  // May throw std::bad_alloc when it must grow (then nothing changed).
  // (`inline`, with growing out of line: every send goes through here, and a named module's
  // in-class definitions are not implicitly inline.)
  inline void push_back(T&& v) {
    if (size_ == room()) [[unlikely]]
      grow();
    std::construct_at(slots_ + ((head_ + size_) & mask_), std::move(v));
    ++size_;
  }
  // For a value going back to the front from a noexcept path: growing is the only failure,
  // and it ends the process with a diagnostic.
  void push_front_or_die(T&& v) noexcept {
    if (size_ == room()) {
      try {
        grow_to(room() == 0 ? 16 : room() * 2);
      } catch (...) {
        sync_fatal("out of memory giving a channel's value back to its buffer");
      }
    }
    head_ = (head_ - 1) & mask_;
    std::construct_at(slots_ + head_, std::move(v));
    ++size_;
  }
  inline T pop_front() noexcept {
    T* slot = slots_ + head_;
    T v = std::move(*slot);
    std::destroy_at(slot);
    head_ = (head_ + 1) & mask_;
    --size_;
    return v;
  }

 private:
  inline std::size_t room() const noexcept { return slots_ == nullptr ? 0 : mask_ + 1; }
  [[gnu::noinline]] void grow() { grow_to(room() == 0 ? 16 : room() * 2); }
  void grow_to(std::size_t new_room) {
    T* fresh = std::allocator<T>().allocate(new_room);
    for (std::size_t i = 0; i < size_; ++i) {
      T* from = slots_ + ((head_ + i) & mask_);
      std::construct_at(fresh + i, std::move(*from));
      std::destroy_at(from);
    }
    if (slots_ != nullptr) std::allocator<T>().deallocate(slots_, mask_ + 1);
    slots_ = fresh;
    mask_ = new_room - 1;
    head_ = 0;
  }

  T* slots_ = nullptr;
  std::size_t mask_ = 0;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace karx::detail
