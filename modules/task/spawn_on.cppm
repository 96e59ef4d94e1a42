// The Executor concept and spawn_on: generic code spawns onto any executor with one call.
module;
#include <concepts>
#include <utility>
export module karx.task:spawn_on;
import karx.waker;
import :task;
import :join_handle;
import :spawn;

export namespace karx {

// An executor: something that takes a Task<> and sees that it runs (now, later, elsewhere).
// `schedule` may be called from any thread that wakes one of its tasks, and concurrently;
// it must not block for long (it runs inside wakers).
template <class E>
concept Executor = requires(E& executor, Task<> task) { executor.schedule(std::move(task)); };

// Spawns `future` onto `executor`: the task's schedule function hands it to
// executor.schedule(), and the task is scheduled once right away. The executor must outlive
// the task (the schedule function holds a reference to it), as a queue outlives its items.
template <Executor E, Future F>
  requires std::move_constructible<F>  // and so a non-throwing destructor
JoinHandle<output_of<F>> spawn_on(E& executor, F future) {
  auto [task, handle] = spawn(std::move(future), [&executor](Task<> t) { executor.schedule(std::move(t)); });
  executor.schedule(std::move(task));
  return std::move(handle);
}

}  // namespace karx
