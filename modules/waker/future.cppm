// The Future concept: something with `poll(Context&)` returning a Poll<X>.
module;
#include <type_traits>
#include <utility>
export module karx.waker:future;
import :poll;
import :waker;

namespace karx::detail {
template <class P>
inline constexpr bool is_poll = false;
template <class T>
inline constexpr bool is_poll<Poll<T>> = true;
}  // namespace karx::detail

export namespace karx {

template <class F>
concept Future = requires(F& f, Context& cx) {
  { f.poll(cx) };
} && detail::is_poll<std::remove_cvref_t<decltype(std::declval<F&>().poll(std::declval<Context&>()))>>;

// X for a future whose poll returns Poll<X>.
template <Future F>
using output_of = typename std::remove_cvref_t<decltype(std::declval<F&>().poll(std::declval<Context&>()))>::value_type;

}  // namespace karx
