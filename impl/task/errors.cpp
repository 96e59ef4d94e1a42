// The detached-exception handler and its default.
module;
#include <atomic>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <typeinfo>
module karx.task;

namespace karx {
namespace {

// Prints `error` and, for an exception the task layer wrapped (report_undeliverable), the
// exception nested in it.
void print_detached_exception(std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const undeliverable& e) {
    std::fprintf(stderr, "karx: %s", e.what());
    try {
      e.rethrow_nested();
    } catch (const std::exception& cause) {
      std::fprintf(stderr, ": %s: %s\n", typeid(cause).name(), cause.what());
    } catch (...) {
      std::fprintf(stderr, ": an exception not derived from std::exception\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "karx: a detached task threw %s: %s\n", typeid(e).name(), e.what());
  } catch (...) {
    std::fprintf(stderr, "karx: a detached task threw an exception not derived from std::exception\n");
  }
}

std::atomic<detached_exception_handler> current_handler{&print_detached_exception};

}  // namespace

detached_exception_handler set_detached_exception_handler(detached_exception_handler handler) noexcept {
  if (handler == nullptr) handler = &print_detached_exception;
  return current_handler.exchange(handler, std::memory_order_acq_rel);
}

namespace detail {
void throw_empty_task(const char* operation) {
  throw std::logic_error(std::string("karx::Task::") + operation +
                         "(): the Task is empty (moved from, or already run, scheduled or canceled)");
}

void throw_unusable_handle(const char* operation, bool yielded) {
  if (yielded)
    throw std::logic_error(std::string("karx::JoinHandle::") + operation +
                           "(): the handle already yielded its result; a handle is awaited once");
  throw std::logic_error(std::string("karx::JoinHandle::") + operation +
                         "(): the handle is empty (moved from or detached)");
}

void report_detached_exception(std::exception_ptr error) noexcept {
  current_handler.load(std::memory_order_acquire)(std::move(error));
}

void report_undeliverable(const char* what_happened) noexcept {
  std::exception_ptr wrapped;
  try {
    // Nests the exception being handled (our caller is in a catch block).
    throw undeliverable(what_happened);
  } catch (...) {
    wrapped = std::current_exception();  // or std::bad_alloc, if the wrapper could not be made
  }
  report_detached_exception(std::move(wrapped));
}
}  // namespace detail

}  // namespace karx
