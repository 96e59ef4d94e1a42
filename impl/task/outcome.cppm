// What a finished future leaves behind: its value, or the exception that escaped its poll.
//
// The exception_ptr shares a union with the value, so the common (value) path never constructs
// or destroys one: in libstdc++ those are out-of-line library calls.
module;
#include <exception>
#include <utility>
export module karx.task:outcome;

namespace karx::detail {

template <class R>
struct Outcome {
  bool failed;
  union {
    R value;
    std::exception_ptr error;
  };

  template <class... A>
  explicit Outcome(std::in_place_t, A&&... a) : failed(false), value(std::forward<A>(a)...) {}
  explicit Outcome(std::exception_ptr e) noexcept : failed(true), error(std::move(e)) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  ~Outcome() {
    if (failed)
      error.~exception_ptr();
    else
      value.~R();
  }
};

template <>
struct Outcome<void> {
  bool failed;
  union {
    std::exception_ptr error;
  };

  explicit Outcome(std::in_place_t) noexcept : failed(false) {}
  explicit Outcome(std::exception_ptr e) noexcept : failed(true), error(std::move(e)) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  ~Outcome() {
    if (failed) error.~exception_ptr();
  }
};

}  // namespace karx::detail
