// Waker: a type-erased handle that makes a sleeping future runnable again.
// Same shape as Rust's: a data pointer plus a table of four functions.
module;
#include <utility>
export module karx.waker:waker;

export namespace karx {

struct RawWakerVTable;

struct RawWaker {
  const void* data;
  const RawWakerVTable* vtable;
};

// clone: a new RawWaker for the same target; wake: wake and release `data` (consumes);
// wake_by_ref: wake, keep `data`; drop: release `data`. All may be called from any thread.
struct RawWakerVTable {
  RawWaker (*clone)(const void*);
  void (*wake)(const void*);
  void (*wake_by_ref)(const void*);
  void (*drop)(const void*);
};

// Member functions are marked inline on purpose: in a named module, a function defined in its
// class is not implicitly inline, and clang would then call it out of line from every importer.
class Waker {
 public:
  // Takes ownership of `raw`: the Waker will call raw.vtable->drop once.
  inline static Waker from_raw(RawWaker raw) noexcept { return Waker(raw); }

  inline Waker(const Waker& other) : raw_(other.raw_.vtable ? other.raw_.vtable->clone(other.raw_.data) : RawWaker{}) {}
  inline Waker(Waker&& other) noexcept : raw_(std::exchange(other.raw_, RawWaker{})) {}
  inline Waker& operator=(const Waker& other) {
    if (this != &other && !will_wake(other)) *this = Waker(other);
    return *this;
  }
  inline Waker& operator=(Waker&& other) noexcept {
    if (this != &other) {
      release();
      raw_ = std::exchange(other.raw_, RawWaker{});
    }
    return *this;
  }
  inline ~Waker() { release(); }

  // Wakes the target without consuming this waker (Rust's wake_by_ref).
  // A moved-from waker wakes nothing.
  inline void wake() const {
    if (raw_.vtable) raw_.vtable->wake_by_ref(raw_.data);
  }
  // Wakes and gives up this waker in one step; cheaper when the waker is no longer needed.
  inline void wake_and_release() && {
    RawWaker raw = std::exchange(raw_, RawWaker{});
    if (raw.vtable) raw.vtable->wake(raw.data);
  }

  // True when both wake the same target (same data and vtable), so one may stand for the other.
  inline bool will_wake(const Waker& other) const noexcept {
    return raw_.vtable != nullptr && raw_.data == other.raw_.data && raw_.vtable == other.raw_.vtable;
  }

  inline const RawWaker& as_raw() const noexcept { return raw_; }
  // Gives up ownership without dropping: the caller becomes responsible for `drop`.
  inline RawWaker into_raw() && noexcept { return std::exchange(raw_, RawWaker{}); }

 private:
  inline explicit Waker(RawWaker raw) noexcept : raw_(raw) {}
  inline void release() noexcept {
    RawWaker raw = std::exchange(raw_, RawWaker{});
    if (raw.vtable) raw.vtable->drop(raw.data);
  }
  RawWaker raw_;
};

// What a poll is given: for now just the waker of the task being polled.
class Context {
 public:
  inline explicit Context(const Waker& waker) noexcept : waker_(&waker) {}
  inline const Waker& waker() const noexcept { return *waker_; }

 private:
  const Waker* waker_;
};

}  // namespace karx
