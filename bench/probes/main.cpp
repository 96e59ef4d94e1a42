// karx_runtime_probes <workload> <library> [options]: runs one measurement in this process and
// prints it as JSON lines on stdout (diagnostics go to stderr). One process per measurement, so
// that RSS, CPU time and thread counts belong to that library alone.
#include <cstdio>
#include <exception>
#include <functional>
#include <string_view>

#include "probes.hpp"

namespace {

using namespace karx_probes;

constexpr const char* kUsage =
    "usage: karx_runtime_probes <workload> <library> [options]\n"
    "  blocking karx [--variant default|threshold-1ms|blocking-call]   (default: default)\n"
    "  blocking tbb | blocking asio\n"
    "  idle karx|tbb|asio\n"
    "  memory karx [--future coroutine|struct]                         (default: coroutine)\n"
    "  memory tbb\n"
    "  forkjoin_memory karx|tbb --workload fib|skynet\n"
    "  blocked_or_busy karx --workload blocking_calls|cpu_bound\n";

int usage(const char* why) {
  std::fprintf(stderr, "karx_runtime_probes: %s\n%s", why, kUsage);
  return 2;
}

std::function<void()> reject(const char*& why, const char* reason) {
  why = reason;
  return {};
}

// The run the arguments ask for, or an empty function with `why` set.
std::function<void()> parse(std::string_view workload, std::string_view library, std::string_view option,
                            std::string_view value, const char*& why) {
  if (workload == "blocking") {
    if (library == "karx") {
      if (option.empty() || (option == "--variant" && value == "default"))
        return [] { blocking_karx(BlockingVariant::default_threshold); };
      if (option == "--variant" && value == "threshold-1ms")
        return [] { blocking_karx(BlockingVariant::threshold_1ms); };
      if (option == "--variant" && value == "blocking-call")
        return [] { blocking_karx(BlockingVariant::blocking_call); };
      return reject(why, "blocking karx takes --variant default|threshold-1ms|blocking-call");
    }
    if (!option.empty()) return reject(why, "blocking tbb|asio take no options");
    if (library == "tbb") return blocking_tbb;
    if (library == "asio") return blocking_asio;
    return reject(why, "blocking: <library> must be karx, tbb or asio");
  }
  if (workload == "idle") {
    if (!option.empty()) return reject(why, "idle takes no options");
    if (library == "karx") return idle_karx;
    if (library == "tbb") return idle_tbb;
    if (library == "asio") return idle_asio;
    return reject(why, "idle: <library> must be karx, tbb or asio");
  }
  if (workload == "memory") {
    if (library == "karx") {
      if (option.empty() || (option == "--future" && value == "coroutine"))
        return [] { memory_karx(FutureKind::coroutine); };
      if (option == "--future" && value == "struct") return [] { memory_karx(FutureKind::hand_written); };
      return reject(why, "memory karx takes --future coroutine|struct");
    }
    if (!option.empty()) return reject(why, "memory tbb takes no options");
    if (library == "tbb") return memory_tbb;
    return reject(why, "memory: <library> must be karx or tbb");
  }
  if (workload == "forkjoin_memory") {
    if (option != "--workload" || (value != "fib" && value != "skynet"))
      return reject(why, "forkjoin_memory takes --workload fib|skynet");
    const ForkJoin which = value == "fib" ? ForkJoin::fib : ForkJoin::skynet;
    if (library == "karx") return [which] { forkjoin_karx(which); };
    if (library == "tbb") return [which] { forkjoin_tbb(which); };
    return reject(why, "forkjoin_memory: <library> must be karx or tbb");
  }
  if (workload == "blocked_or_busy") {
    if (library != "karx") return reject(why, "blocked_or_busy: <library> must be karx");
    if (option == "--workload" && value == "blocking_calls")
      return [] { blocked_or_busy_karx(BlockedOrBusy::blocking_calls); };
    if (option == "--workload" && value == "cpu_bound") return [] { blocked_or_busy_karx(BlockedOrBusy::cpu_bound); };
    return reject(why, "blocked_or_busy takes --workload blocking_calls|cpu_bound");
  }
  return reject(why, "<workload> must be blocking, idle, memory, forkjoin_memory or blocked_or_busy");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) return usage("expected <workload> <library> [--option value]");
  const char* why = "";
  const std::function<void()> run = parse(argv[1], argv[2], argc == 5 ? argv[3] : "", argc == 5 ? argv[4] : "", why);
  if (!run) return usage(why);
  try {
    run();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "karx_runtime_probes %s %s: %s\n", argv[1], argv[2], e.what());
    return 1;
  }
}
