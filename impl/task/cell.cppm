// TaskCell: the one block of a task, and the typed functions that fill its vtable.
//
// Layout: the 4-word Header, the tag, the schedule function, then a union of the future and
// its output. A void tag and a stateless schedule function take no space.
module;
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>
export module karx.task:cell;
import karx.waker;
import :alloc;
import :errors;
import :header;
import :listing;
import :state;
import :outcome;
import :task;

namespace karx::detail {

// The future of a spawn_local task, stamped with its spawning thread.
template <class F>
struct LocalFuture {
  std::thread::id owner;
  F inner;

  auto poll(Context& cx) { return inner.poll(cx); }

  LocalFuture(F&& f) : owner(std::this_thread::get_id()), inner(std::move(f)) {}
  LocalFuture(const LocalFuture&) = delete;
  LocalFuture& operator=(const LocalFuture&) = delete;
  ~LocalFuture() {
    if (std::this_thread::get_id() != owner) {
      // The future is not thread-safe by contract; destroying it here could corrupt whatever
      // it shares with its own thread, and there is nobody to throw to.
      std::fputs(
          "karx: fatal: the future of a spawn_local task is being destroyed on a thread other than the "
          "one that spawned it (cancel, drop or run the Task on the spawning thread)\n",
          stderr);
      std::terminate();
    }
  }
};

// --- What every kind of cell shares ----------------------------------------------------------

// The vtable's drop_output_and_destroy, for any cell: the two inlined into one call.
template <class Cell>
void drop_output_and_destroy(Header* h, bool report) noexcept {
  Cell::drop_output(h, report);
  if (h->awaiter.vtable != nullptr) [[unlikely]]
    drop_stale_awaiter(h);
  Cell::destroy(h);
}

// Hands the task to its schedule function `fn` (the one in the task's own block).
template <class Tag, class S>
void call_schedule(Header* h, const S& fn) {  // may run on several threads at once: fn is const
  if constexpr (std::is_empty_v<S> || requires { typename S::karx_no_keep_alive; }) {
    // A stateless function has nothing to lose; the runtime's own schedule functions
    // (karx_no_keep_alive) never touch their state after taking the Task.
    std::invoke(fn, TaskAccess::make<Task<Tag>>(h));
  } else {
    // The function may drop the last reference (drop the Task, say) while it runs, which
    // would free the block, and the function's own state with it, under its feet: hold one
    // more reference for the duration of the call.
    Waker keep_alive = task_waker(h);
    std::invoke(fn, TaskAccess::make<Task<Tag>>(h));
  }
}

// Optional hooks of a schedule function, for an executor that keeps track of its tasks (the
// runtime lists the tasks that wait, for its shutdown, and counts completions). A schedule
// function opts in with a member type `karx_task_hooks`. The hooks are called by the holder
// of the task only (inside its poll, or where its future is destroyed), so never two at once:
//   on_poll_pending(TaskBlock)      a poll returned pending (before run() lets go of the task)
//   on_future_destroyed(TaskBlock)  the future's destructor has just returned
//   on_poll_finished()              a poll completed the task (a value or an exception)
// The TaskBlock (listing.cppm) is the task's own block, for list_task_block and its partner;
// `Cell::in_slab(h)` says where the block came from.
template <class S>
concept HasTaskHooks = requires {
  typename S::karx_task_hooks;
};
template <class Cell, class S>
inline void hook_pending(S& fn, Header* h) noexcept {
  if constexpr (HasTaskHooks<S>) fn.on_poll_pending(TaskBlock{h, Cell::in_slab(h)});
}
template <class Cell, class S>
inline void hook_future_destroyed(S& fn, Header* h) noexcept {
  if constexpr (HasTaskHooks<S>) fn.on_future_destroyed(TaskBlock{h, Cell::in_slab(h)});
}
template <class S>
inline void hook_finished(S& fn) noexcept {
  if constexpr (HasTaskHooks<S>) fn.on_poll_finished();
}

// Work-first joins. A schedule function may offer `bool run_here(void* task) const noexcept`
// (the task as Task<>::into_raw gives it):
// called when the task's JoinHandle is about to wait for it while the task is queued and not
// yet started, it may take the task out of its queue and run it on the calling thread right
// now (true: it ran once), so that the waiter finds it complete instead of sleeping until it
// is. Only the executor knows whether the task may run on this thread and where it is queued.
template <class S>
concept HasRunHere = requires(const S& fn, void* task) {
  { fn.run_here(task) }
  noexcept->std::same_as<bool>;
};
template <class Cell>
bool run_here(Header* h) noexcept {
  return Cell::of(h)->schedule_fn.run_here(static_cast<void*>(h));
}
template <class Cell, class S>
constexpr bool (*run_here_for() noexcept)(Header*) noexcept {
  if constexpr (HasRunHere<S>)
    return &run_here<Cell>;
  else
    return nullptr;
}
template <class Cell, class S>
inline constexpr bool (*run_here_of)(Header*) noexcept = run_here_for<Cell, S>();

// Destroys an output nobody took; with `report`, an exception in it goes to the handler.
template <class R>
void drop_outcome(Outcome<R>& out, bool report) noexcept {
  if (report && out.failed()) report_detached_exception(out.error);
  out.~Outcome();
}

template <class F, class S, class Tag, bool Local>
struct TaskCell {
  using Stored = std::conditional_t<Local, LocalFuture<F>, F>;
  using Output = output_of<F>;
  using Schedule = S;
  static constexpr bool is_local = Local;

  union Stage {
    Stage() noexcept {}
    ~Stage() {}
    Stored future;
    Outcome<Output> output;
  };

  TagLayout<Tag> head;
  [[no_unique_address]] S schedule_fn;
  Stage stage;

  template <class... TagArgs>
  TaskCell(const TaskVTable* vtable, std::size_t initial, F&& future, S&& schedule, TagArgs&&... tag)
      : head{Header{{initial}, RawWaker{}, vtable}, std::forward<TagArgs>(tag)...}, schedule_fn(std::move(schedule)) {
    ::new (static_cast<void*>(&stage.future)) Stored(std::move(future));
  }

  static TaskCell* of(Header* h) noexcept { return reinterpret_cast<TaskCell*>(h); }
  static const TaskCell* of(const Header* h) noexcept { return reinterpret_cast<const TaskCell*>(h); }

  static void schedule(Header* h) { call_schedule<Tag>(h, of(h)->schedule_fn); }

  static bool poll(Header* h, Context& cx) noexcept {
    TaskCell* c = of(h);
    bool future_alive = true;
    try {
      auto p = c->stage.future.poll(cx);
      if (p.is_pending()) {
        hook_pending<TaskCell>(c->schedule_fn, h);
        return false;
      }
      // The value lives in `p`; the future can go before the output takes its place.
      drop_future(h);
      future_alive = false;
      if constexpr (std::is_void_v<Output>)
        ::new (static_cast<void*>(&c->stage.output)) Outcome<Output>(std::in_place);
      else
        ::new (static_cast<void*>(&c->stage.output)) Outcome<Output>(std::in_place, std::move(p).value());
    } catch (...) {
      if (future_alive) drop_future(h);
      ::new (static_cast<void*>(&c->stage.output)) Outcome<Output>(std::current_exception());
    }
    hook_finished(c->schedule_fn);
    return true;
  }

  static void drop_future(Header* h) noexcept {
    TaskCell* c = of(h);
    c->stage.future.~Stored();
    hook_future_destroyed<TaskCell>(c->schedule_fn, h);
  }

  static void drop_output(Header* h, bool report) noexcept { drop_outcome(of(h)->stage.output, report); }

  static constexpr bool in_slab(Header*) noexcept { return slab_serves(sizeof(TaskCell), alignof(TaskCell)); }

  static void destroy(Header* h) noexcept {
    TaskCell* c = of(h);
    c->~TaskCell();
    deallocate_task(c, sizeof(TaskCell), alignof(TaskCell));
  }

  static void check_thread(const Header* h) {
    if constexpr (Local) {
      if (std::this_thread::get_id() != of(h)->stage.future.owner)
        throw foreign_thread(
            "karx::Task::run(): a spawn_local task must be run on the thread that spawned it; it was not polled");
    }
  }
};

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winvalid-offsetof"
template <class Cell>
inline constexpr TaskVTable task_vtable{&Cell::schedule,
                                        &Cell::poll,
                                        &Cell::drop_future,
                                        &Cell::drop_output,
                                        &Cell::destroy,
                                        &drop_output_and_destroy<Cell>,
                                        Cell::is_local ? &Cell::check_thread : nullptr,
                                        run_here_of<Cell, typename Cell::Schedule>,
                                        offsetof(Cell, stage)};
#pragma clang diagnostic pop

}  // namespace karx::detail
