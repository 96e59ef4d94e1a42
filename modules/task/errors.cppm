// Errors of the task layer and the hook for exceptions nobody awaits.
module;
#include <exception>
#include <stdexcept>
export module karx.task:errors;

export namespace karx {

// Thrown by Task::run() when a spawn_local task is run on a thread other than its spawner's.
class foreign_thread : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Thrown nowhere: handed to the detached-exception handler when a user callback threw where the
// task layer had nobody to throw to (a schedule function called while a Waker or JoinHandle
// was dropped, a JoinHandle's waker woken on completion or cancellation). what() says where;
// the callback's exception is nested (std::nested_exception::rethrow_nested()).
class undeliverable : public std::runtime_error, public std::nested_exception {
 public:
  using std::runtime_error::runtime_error;
};

// Called with the exception of a task whose output nobody will take: the handle was detached
// (or destroyed) before or after the task threw; and with a karx::undeliverable for a user
// callback's exception that had nobody to go to. May be called from any thread that runs
// tasks, wakes them or drops handles and wakers. The default prints the exception to stderr.
using detached_exception_handler = void (*)(std::exception_ptr) noexcept;

// Installs `handler` (nullptr restores the default) and returns the previous one.
detached_exception_handler set_detached_exception_handler(detached_exception_handler handler) noexcept;

}  // namespace karx
