// What a finished future leaves behind: its value, or the exception that escaped its poll.
module;
#include <exception>
#include <utility>
export module karx.task:outcome;

namespace karx::detail {

template <class R>
struct Outcome {
  std::exception_ptr error;  // null: `value` holds the output
  union {
    R value;
  };

  template <class... A>
  explicit Outcome(std::in_place_t, A&&... a) : value(std::forward<A>(a)...) {}
  explicit Outcome(std::exception_ptr e) noexcept : error(std::move(e)) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  ~Outcome() {
    if (!error) value.~R();
  }
};

template <>
struct Outcome<void> {
  std::exception_ptr error;
  explicit Outcome(std::in_place_t) noexcept {}
  explicit Outcome(std::exception_ptr e) noexcept : error(std::move(e)) {}
};

}  // namespace karx::detail
