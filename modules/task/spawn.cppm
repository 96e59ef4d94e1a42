// spawn / spawn_local: one allocation makes a task (none, for an Async whose frame kept room for
// it); returns its Task and its JoinHandle.
module;
#include <concepts>
#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>
export module karx.task:spawn;
import karx.waker;
import :alloc;
import :async;
import :async_cell;
import :cell;
import :header;
import :join_handle;
import :state;
import :task;

namespace karx::detail {

// Builds the task's block; `initial` is its first state (state.cppm: with or without HANDLE).
template <bool Local, class Tag, class F, class S, class... TagArg>
Header* make_task(std::size_t initial, F&& future, S&& schedule, TagArg&&... tag) {
  if constexpr (!Local && is_async<F>) {
    // A coroutine whose frame kept room for the task in front of it: one block (async_cell.cppm).
    if constexpr (fits_in_frame_block<output_of<F>, S, Tag>) {
      if (AsyncAccess::in_block(future))
        return make_task_in_frame<Tag>(initial, future, std::move(schedule), std::forward<TagArg>(tag)...);
    }
  }
  using Cell = TaskCell<F, S, Tag, Local>;
  void* block = allocate_task(sizeof(Cell), alignof(Cell));
  Cell* cell;
  try {
    cell = ::new (block)
        Cell(&task_vtable<Cell>, initial, std::move(future), std::move(schedule), std::forward<TagArg>(tag)...);
  } catch (...) {
    deallocate_task(block, sizeof(Cell), alignof(Cell));
    throw;
  }
  return &cell->head.header;
}

template <bool Local, class Tag, class F, class S, class... TagArg>
auto spawn_cell(F&& future, S&& schedule, TagArg&&... tag) -> std::pair<Task<Tag>, JoinHandle<output_of<F>, Tag>> {
  Header* h =
      make_task<Local, Tag>(state::INITIAL, std::move(future), std::move(schedule), std::forward<TagArg>(tag)...);
  return {TaskAccess::make<Task<Tag>>(h), TaskAccess::make<JoinHandle<output_of<F>, Tag>>(h)};
}

template <class F, class S, class Tag>
concept Spawnable = Future<F> && std::move_constructible<F> && std::move_constructible<S> &&
                    std::invocable<const S&, Task<Tag>> && (std::is_void_v<Tag> || std::move_constructible<Tag>);

}  // namespace karx::detail

export namespace karx {

// Makes a task of `future`: one block holding the state, the tag, `schedule` and the future.
// `schedule` is called (possibly from several threads at once) with the Task each time the
// task is woken; it should put the Task in a queue whose consumer calls Task::run().
// The returned Task counts as scheduled already: run it, schedule() it, or drop it to cancel.
template <Future F, class S, class Tag>
  requires detail::Spawnable<F, S, Tag>
auto spawn(F future, S schedule, Tag tag) -> std::pair<Task<Tag>, JoinHandle<output_of<F>, Tag>> {
  return detail::spawn_cell<false, Tag>(std::move(future), std::move(schedule), std::move(tag));
}

template <Future F, class S>
  requires detail::Spawnable<F, S, void>
auto spawn(F future, S schedule) -> std::pair<Task<>, JoinHandle<output_of<F>>> {
  return detail::spawn_cell<false, void>(std::move(future), std::move(schedule));
}

// As spawn, with no JoinHandle: the output is dropped (an exception goes to the detached-
// exception handler). A task that nobody can join needs no HANDLE bit, so nothing is spent on
// detaching it, and a run that finds its Task's the only reference starts and completes it
// without an atomic read-modify-write (impl/task/raw.cpp).
template <Future F, class S, class Tag>
  requires detail::Spawnable<F, S, Tag>
Task<Tag> spawn_detached(F future, S schedule, Tag tag) {
  return detail::TaskAccess::make<Task<Tag>>(detail::make_task<false, Tag>(
      detail::state::INITIAL_DETACHED, std::move(future), std::move(schedule), std::move(tag)));
}

template <Future F, class S>
  requires detail::Spawnable<F, S, void>
Task<> spawn_detached(F future, S schedule) {
  return detail::TaskAccess::make<Task<>>(
      detail::make_task<false, void>(detail::state::INITIAL_DETACHED, std::move(future), std::move(schedule)));
}

// As spawn, for a future that must stay on this thread: Task::run() on another thread throws
// karx::foreign_thread without polling; destroying the future on another thread terminates.
template <Future F, class S, class Tag>
  requires detail::Spawnable<F, S, Tag>
auto spawn_local(F future, S schedule, Tag tag) -> std::pair<Task<Tag>, JoinHandle<output_of<F>, Tag>> {
  return detail::spawn_cell<true, Tag>(std::move(future), std::move(schedule), std::move(tag));
}

template <Future F, class S>
  requires detail::Spawnable<F, S, void>
auto spawn_local(F future, S schedule) -> std::pair<Task<>, JoinHandle<output_of<F>>> {
  return detail::spawn_cell<true, void>(std::move(future), std::move(schedule));
}

}  // namespace karx
