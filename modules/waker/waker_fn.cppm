// waker_fn: any callable becomes a Waker; noop_waker: a waker that does nothing.
module;
#include <atomic>
#include <concepts>
#include <cstddef>
#include <type_traits>
#include <utility>
export module karx.waker:waker_fn;
import :waker;

namespace karx::detail {

// One heap block shared by every clone of a waker_fn waker: the count of clones and f.
template <class F>
struct WakerFnBlock {
  std::atomic<std::size_t> refs;
  F fn;

  // Wakers hand out const data pointers; the block itself is ours to count and free.
  static WakerFnBlock* of(const void* p) noexcept { return static_cast<WakerFnBlock*>(const_cast<void*>(p)); }

  static RawWaker clone(const void* p) noexcept;
  static void wake(const void* p) {
    // Release this waker's share even if the function throws.
    struct Release {
      const void* p;
      ~Release() { drop(p); }
    } release{p};
    wake_by_ref(p);
  }
  static void wake_by_ref(const void* p) { std::as_const(of(p)->fn)(); }
  static void drop(const void* p) noexcept {
    // acq_rel: the release half orders this owner's use of `fn` before the count drops; the
    // acquire half, on the last owner, makes every other owner's use visible before `delete`.
    if (of(p)->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete of(p);
  }
  static constexpr RawWakerVTable vtable{&clone, &wake, &wake_by_ref, &drop};
};

template <class F>
RawWaker WakerFnBlock<F>::clone(const void* p) noexcept {
  // relaxed: a clone is made from a live waker, so the block cannot be freed meanwhile and
  // nothing else is published by the increment (the shared_ptr argument).
  of(p)->refs.fetch_add(1, std::memory_order_relaxed);
  return RawWaker{p, &vtable};
}

inline RawWaker noop_clone(const void*) noexcept;
inline void noop(const void*) noexcept {}
inline constexpr RawWakerVTable noop_vtable{&noop_clone, &noop, &noop, &noop};
inline RawWaker noop_clone(const void*) noexcept { return RawWaker{nullptr, &noop_vtable}; }

}  // namespace karx::detail

export namespace karx {

// Every wake of any clone calls f(), possibly from several threads at once, so f is called
// through a const reference and must tolerate concurrent calls. Clones share one f.
template <class F>
  requires std::invocable<const std::decay_t<F>&> && std::move_constructible<std::decay_t<F>>
Waker waker_fn(F&& f) {
  using Block = detail::WakerFnBlock<std::decay_t<F>>;
  auto* block = new Block{{1}, std::forward<F>(f)};
  return Waker::from_raw(RawWaker{block, &Block::vtable});
}

// A waker whose wake does nothing; cloning and dropping it cost nothing.
inline Waker noop_waker() noexcept { return Waker::from_raw(RawWaker{nullptr, &detail::noop_vtable}); }

}  // namespace karx
