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

// Called with the exception of a task whose output nobody will take: the handle was detached
// (or destroyed) before or after the task threw. May be called from any thread that runs tasks
// or drops handles. The default prints the exception's what() to stderr.
using detached_exception_handler = void (*)(std::exception_ptr) noexcept;

// Installs `handler` (nullptr restores the default) and returns the previous one.
detached_exception_handler set_detached_exception_handler(detached_exception_handler handler) noexcept;

}  // namespace karx
