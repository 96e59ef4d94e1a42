// The fork-join memory workload: the peak RSS that one run of fib(30) or skynet (10^6 leaves)
// adds to a process whose runtime is already up, for karx and for oneTBB, each in a process of
// its own. A breadth-first expansion keeps a whole level of the tree pending at once; a
// depth-first one, only a path. Peak: the process's VmHWM.
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "../forkjoin/forkjoin_tbb.hpp"
#include "probes.hpp"
#include "tbb_pool.hpp"
import karx;
#include "../forkjoin/forkjoin_karx.hpp"

namespace karx_probes {
namespace {

// The high-water mark of this process's resident set: VmHWM in /proc/self/status. Not
// getrusage's ru_maxrss, which keeps the peak of the image the process exec'd from (a Python
// driver's forked copy, 18 MB, would hide everything below it).
std::uint64_t peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) throw std::runtime_error("cannot open /proc/self/status");
  char line[256];
  unsigned long long kib = 0;
  bool found = false;
  while (!found && std::fgets(line, sizeof line, f) != nullptr) found = std::sscanf(line, "VmHWM: %llu kB", &kib) == 1;
  std::fclose(f);
  if (!found) throw std::runtime_error("no VmHWM line in /proc/self/status");
  return static_cast<std::uint64_t>(kib) * 1024;
}

void print_row(const char* library, ForkJoin workload, std::uint64_t before) {
  const std::uint64_t peak = peak_rss_bytes();
  const double growth = peak > before ? static_cast<double>(peak - before) : 0.0;
  JsonLine()
      .add("kind", "forkjoin_memory")
      .add("library", library)
      .add("workload", workload == ForkJoin::fib ? "fib" : "skynet")
      .add("threads", static_cast<std::int64_t>(kThreads))
      .add("peak_growth_mb", growth / (1024.0 * 1024.0), 2)
      .add("rss_before_mb", static_cast<double>(before) / (1024.0 * 1024.0), 2)
      .add("peak_rss_mb", static_cast<double>(peak) / (1024.0 * 1024.0), 2)
      .print();
}

void require(bool ok, ForkJoin workload) {
  if (!ok)
    throw std::runtime_error(std::string(workload == ForkJoin::fib ? "fib" : "skynet") + " computed a wrong result");
}

}  // namespace

void forkjoin_karx(ForkJoin workload) {
  karx::RuntimeOptions options;
  options.processors = kThreads;
  karx::Runtime rt(options);
  rt.block_on([]() -> karx::Async<> { co_return; }());  // the runtime's threads are up
  trim_heap();
  const std::uint64_t before = rss_bytes();
  require(workload == ForkJoin::fib ? karx_forkjoin::run_fib(rt) : karx_forkjoin::run_skynet(rt), workload);
  print_row("karx", workload, before);
}

void forkjoin_tbb(ForkJoin workload) {
  TbbPool setup;
  setup.arena.execute([] {});  // the arena's threads are up
  trim_heap();
  const std::uint64_t before = rss_bytes();
  require(
      workload == ForkJoin::fib ? karx_forkjoin::run_tbb_fib(setup.arena) : karx_forkjoin::run_tbb_skynet(setup.arena),
      workload);
  print_row("tbb", workload, before);
}

}  // namespace karx_probes
