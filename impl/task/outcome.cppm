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
  bool failed_;
  union {
    R value;
    std::exception_ptr error;
  };

  template <class... A>
  explicit Outcome(std::in_place_t, A&&... a) : failed_(false), value(std::forward<A>(a)...) {}
  explicit Outcome(std::exception_ptr e) noexcept : failed_(true), error(std::move(e)) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  ~Outcome() {
    if (failed_)
      error.~exception_ptr();
    else
      value.~R();
  }
  bool failed() const noexcept { return failed_; }
};

// No value: the exception_ptr alone says how the future ended (null: it returned), one word
// (it is the stage of a spawned Async<void>, impl/task/frame_block.cppm, whose room it keeps
// at 64 bytes). libstdc++ defines exception_ptr's default constructor and destructor inline,
// so the value path still makes no library call.
template <>
struct Outcome<void> {
  std::exception_ptr error;

  explicit Outcome(std::in_place_t) noexcept {}
  // `e` is an exception caught (never null).
  explicit Outcome(std::exception_ptr e) noexcept : error(std::move(e)) {}
  Outcome(const Outcome&) = delete;
  Outcome& operator=(const Outcome&) = delete;
  bool failed() const noexcept { return static_cast<bool>(error); }
};
static_assert(sizeof(Outcome<void>) == sizeof(void*));

}  // namespace karx::detail
