// The last resort of karx.sync: a misuse or a failure that nothing can report (a destructor, a
// wake path) ends the process with a karx diagnostic naming what went wrong.
module;
#include <cstdio>
#include <cstdlib>
export module karx.sync:fatal;

export namespace karx::detail {

[[noreturn]] inline void sync_fatal(const char* what) noexcept {
  std::fprintf(stderr, "karx: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace karx::detail
