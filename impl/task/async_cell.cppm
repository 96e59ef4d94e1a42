// AsyncCell: a task built in the room in front of an Async's frame (frame_block.cppm), so that
// a spawned coroutine is one block: the task's header, tag and schedule function, the chain's
// root (later the output), then the frame.
//
// The frame is the future. Completing moves the value out of the promise into the output and
// destroys the frame (its parameters and promise) at once, as a completed future is destroyed
// in any other task; the block stays until the task is freed, which frees it whole.
module;
#include <coroutine>
#include <cstddef>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>
export module karx.task:async_cell;
import karx.waker;
import :alloc;
import :async;
import :cell;
import :chain;
import :frame_block;
import :header;
import :listing;
import :outcome;
import :state;
import :task;

namespace karx::detail {

template <class T, class S, class Tag>
struct AsyncCell {
  using Frame = std::coroutine_handle<AsyncPromise<T>>;
  using Schedule = S;

  union Stage {
    Stage() noexcept : root{} {}
    ~Stage() {}
    AsyncRoot root;     // while the frame lives
    Outcome<T> output;  // once the frame finished
  };

  TagLayout<Tag> head;
  [[no_unique_address]] S schedule_fn;
  Stage stage;

  template <class... TagArgs>
  AsyncCell(const TaskVTable* vtable, std::size_t initial, AsyncRoot root, S&& schedule, TagArgs&&... tag)
      : head{Header{{initial}, RawWaker{}, vtable}, std::forward<TagArgs>(tag)...}, schedule_fn(std::move(schedule)) {
    stage.root = root;
  }

  static AsyncCell* of(Header* h) noexcept { return reinterpret_cast<AsyncCell*>(h); }
  static Frame frame(Header* h) noexcept { return Frame::from_address(reinterpret_cast<char*>(h) + frame_prefix<T>); }

  static void schedule(Header* h) { call_schedule<Tag>(h, of(h)->schedule_fn); }

  static bool poll(Header* h, Context& cx) noexcept {
    AsyncCell* c = of(h);
    const Frame f = frame(h);
    AsyncPoll chain(c->stage.root, cx);
    if (!chain.resume(f)) {
      hook_pending<AsyncCell>(c->schedule_fn, h);
      return false;
    }
    // Finished; the chain touches the root no more, so the output may take its place.
    if (chain.failed()) [[unlikely]] {
      ::new (static_cast<void*>(&c->stage.output)) Outcome<T>(chain.take_error());
    } else if constexpr (std::is_void_v<T>) {
      ::new (static_cast<void*>(&c->stage.output)) Outcome<T>(std::in_place);
    } else {
      try {
        ::new (static_cast<void*>(&c->stage.output)) Outcome<T>(std::in_place, std::move(*f.promise().value));
      } catch (...) {
        ::new (static_cast<void*>(&c->stage.output)) Outcome<T>(std::current_exception());
      }
    }
    drop_future(h);  // the block is the task's: the frame's operator delete leaves it
    hook_finished(c->schedule_fn);
    return true;
  }

  static void drop_future(Header* h) noexcept {
    const Frame f = frame(h);
    if (f.done())
      f.destroy();  // finished (the common case): it holds no suspended child
    else
      destroy_unfinished_frame(f, FrameDestroy::now);  // the frame is in the task's block
    hook_future_destroyed<AsyncCell>(of(h)->schedule_fn, h);
  }

  static bool in_slab(Header* h) noexcept {
    return slab_serves(frame_prefix<T> + frame_tail(frame(h).address()).frame_size, kFrameAlign);
  }

  static void drop_output(Header* h, bool report) noexcept { drop_outcome(of(h)->stage.output, report); }

  static void destroy(Header* h) noexcept {
    of(h)->~AsyncCell();
    free_frame_block<T>(h);
  }
};

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winvalid-offsetof"
template <class Cell>
inline constexpr TaskVTable async_task_vtable{&Cell::schedule,
                                              &Cell::poll,
                                              &Cell::drop_future,
                                              &Cell::drop_output,
                                              &Cell::destroy,
                                              &drop_output_and_destroy<Cell>,
                                              nullptr,
                                              run_here_of<Cell, typename Cell::Schedule>,
                                              offsetof(Cell, stage)};
#pragma clang diagnostic pop

// Whether a task with this schedule function and tag fits the room kept in front of an
// Async<T>'s frame. The tag and the schedule function must sit right after the header, as
// in every cell (Task<Tag> and JoinHandle find the tag there).
template <class T, class S, class Tag>
inline constexpr bool fits_in_frame_block = frame_prefix<T> != 0 &&
                                            sizeof(AsyncCell<T, S, Tag>) + sizeof(FrameTail) <= frame_prefix<T> &&
                                            alignof(AsyncCell<T, S, Tag>) <= kFrameAlign;

// spawn() of an Async whose frame sits in a block with room for the task: the task is built
// there, and the frame's block becomes the task's. Returns its header; `initial` is its first
// state (with or without HANDLE).
template <class Tag, class T, class S, class... TagArg>
Header* make_task_in_frame(std::size_t initial, Async<T>& future, S&& schedule, TagArg&&... tag) {
  using Cell = AsyncCell<T, S, Tag>;
  auto [frame, root] = AsyncAccess::release(future);
  void* block = static_cast<char*>(frame.address()) - frame_prefix<T>;
  Cell* cell;
  try {
    cell =
        ::new (block) Cell(&async_task_vtable<Cell>, initial, root, std::move(schedule), std::forward<TagArg>(tag)...);
  } catch (...) {
    frame.destroy();  // still the frame's block: freed with it
    throw;
  }
  frame_tail(frame.address()).task_owned = 1;
  return &cell->head.header;
}

}  // namespace karx::detail
