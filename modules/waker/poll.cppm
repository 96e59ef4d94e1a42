// Poll<T>: the answer of one poll of a future, ready with a value or pending.
module;
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
export module karx.waker:poll;

export namespace karx {

// The type of `karx::pending`; converts to every Poll<T>.
struct pending_t {
  explicit constexpr pending_t(int) noexcept {}
};
inline constexpr pending_t pending{0};

template <class T = void>
class Poll {
  static_assert(std::is_object_v<T> && !std::is_array_v<T>, "karx::Poll<T>: T must be an object type (or void)");

 public:
  using value_type = T;

  constexpr Poll(pending_t) noexcept {}
  static constexpr Poll ready(T value) { return Poll(std::in_place, std::move(value)); }

  // Lets `return karx::ready(1);` serve a function returning Poll<long>.
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_constructible_v<T, U &&>)
  constexpr Poll(Poll<U>&& other) {
    if (other.is_ready()) value_.emplace(std::move(other).value());
  }

  constexpr bool is_ready() const noexcept { return value_.has_value(); }
  constexpr bool is_pending() const noexcept { return !value_.has_value(); }

  constexpr T& value() & {
    check();
    return *value_;
  }
  constexpr const T& value() const& {
    check();
    return *value_;
  }
  constexpr T&& value() && {
    check();
    return std::move(*value_);
  }

 private:
  template <class... A>
  constexpr explicit Poll(std::in_place_t, A&&... a) : value_(std::in_place, std::forward<A>(a)...) {}
  constexpr void check() const {
    if (!value_) throw std::logic_error("karx::Poll::value(): the poll is pending, it holds no value");
  }
  std::optional<T> value_;
};

template <>
class Poll<void> {
 public:
  using value_type = void;
  constexpr Poll(pending_t) noexcept {}
  static constexpr Poll ready() noexcept { return Poll(true); }
  constexpr bool is_ready() const noexcept { return ready_; }
  constexpr bool is_pending() const noexcept { return !ready_; }

 private:
  constexpr explicit Poll(bool r) noexcept : ready_(r) {}
  bool ready_ = false;
};

template <class V>
constexpr Poll<std::decay_t<V>> ready(V&& value) {
  return Poll<std::decay_t<V>>::ready(std::forward<V>(value));
}
constexpr Poll<void> ready() noexcept { return Poll<void>::ready(); }

}  // namespace karx
