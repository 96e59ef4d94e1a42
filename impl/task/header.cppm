// The first four words of every task and the non-template state machine that works on them.
//
// Everything type-specific (the future, its output, the schedule function, the tag) is reached
// through `TaskVTable`, filled in once per task type by `TaskCell`. The state machine itself
// (impl/task/raw.cpp) is compiled once for all task types.
module;
#include <atomic>
#include <cstddef>
#include <exception>
export module karx.task:header;
import karx.waker;

namespace karx::detail {

struct Header;

struct TaskVTable {
  // Hands a `Task` that owns one reference to the user's schedule function.
  void (*schedule)(Header*);
  // Polls the future once. Returns true when it finished (returned ready or threw): the
  // future is then destroyed and the output (value or exception) constructed in its place.
  bool (*poll)(Header*, Context&) noexcept;
  void (*drop_future)(Header*) noexcept;
  // Destroys the output; with `report`, an exception nobody will see goes to the handler.
  void (*drop_output)(Header*, bool report) noexcept;
  // Destroys the schedule function and tag and frees the block.
  void (*destroy)(Header*) noexcept;
  // The end of a completed task nobody else can reach (a detached run's completion): as
  // drop_output, then free_task, in one indirect call instead of two.
  void (*drop_output_and_destroy)(Header*, bool report) noexcept;
  // spawn_local only (else null): throws karx::foreign_thread off the spawning thread.
  void (*check_thread)(const Header*);
  // The schedule function's run_here hook, or null (cell.cppm: HasRunHere): a handle about to
  // wait for this queued task asks its executor to run it on the calling thread instead.
  bool (*run_here)(Header*) noexcept;
  // Where the output lives, from the start of the block.
  std::size_t output_offset;
};

struct Header {
  std::atomic<std::size_t> state;
  // The waker to notify when the task completes or is canceled (vtable null: none).
  // Written only by the side that owns REGISTERING or NOTIFYING.
  RawWaker awaiter;
  const TaskVTable* vtable;
};
static_assert(sizeof(Header) == 4 * sizeof(void*), "the task header is four machine words");

// --- The state machine (impl/task/raw.cpp) -------------------------------------------------

// Polls the task once (or destroys its future if it was canceled). Consumes the Task's reference.
bool run(Header*);
// Task::cancel / ~Task: closes the task and destroys its future now. Consumes the reference.
void cancel_task(Header*) noexcept;
// A new Waker for the task (one more reference).
Waker task_waker(Header*);

enum class HandlePoll {
  pending,
  // The caller owns the output (at output_offset): it destroys it, then release_handle().
  ready,
  // As `ready`, and nothing else references the task: the caller frees it with free_task().
  ready_sole_owner,
  // The task was canceled and its future destroyed; the caller calls release_handle().
  canceled,
};
HandlePoll poll_handle(Header*, Context&);
void cancel_handle(Header*);
// ~JoinHandle / detach before the handle yielded.
void detach_handle(Header*) noexcept;
// What a handle does once it yielded (the task is CLOSED): give up HANDLE, free if last.
void release_handle(Header*) noexcept;
// Drops a waker left in the awaiter slot (out of line: rare).
void drop_stale_awaiter(Header*) noexcept;
// Frees a task nobody else can reach (the handle's sole-owner path), inline: it is the end of
// every spawn + run + join.
inline void free_task(Header* h) noexcept {
  if (h->awaiter.vtable != nullptr) [[unlikely]]
    drop_stale_awaiter(h);
  h->vtable->destroy(h);
}

// The error paths of Task and JoinHandle, out of line so the hot paths stay small.
[[noreturn]] void throw_empty_task(const char* operation);
[[noreturn]] void throw_unusable_handle(const char* operation, bool yielded);

// Reports the exception of a task nobody awaits (the detached-exception handler).
void report_detached_exception(std::exception_ptr) noexcept;
// Called in a catch block where nobody can receive the exception: hands the handler a
// std::runtime_error saying `what happened`, with the caught exception nested in it.
void report_undeliverable(const char* what_happened) noexcept;

}  // namespace karx::detail

namespace karx::detail {

// The header followed by the tag: the prefix every task block starts with, whatever its
// future and schedule function, so Task<Tag> and JoinHandle<R, Tag> find the tag without
// knowing them.
template <class Tag>
struct TagLayout {
  Header header;
  [[no_unique_address]] Tag tag;
};
template <>
struct TagLayout<void> {
  Header header;
};

template <class Tag>
const Tag& tag_of(const Header* h) noexcept {
  return reinterpret_cast<const TagLayout<Tag>*>(h)->tag;
}

// Lets the typed parts of the layer make and unwrap Tasks without a public constructor.
struct TaskAccess {
  template <class TaskT>
  static TaskT make(Header* h) noexcept {
    return TaskT(h);
  }
};

}  // namespace karx::detail
