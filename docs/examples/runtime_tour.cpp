// A tour of the runtime: options, spawn, block_on, timers, yield_now, blocking,
// spawn_blocking, metrics. Each part is a snippet of docs/guide.md.
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
import karx;

using namespace std::chrono_literals;

karx::Async<int> add_later(int a, int b) {
  co_await karx::sleep_for(20ms);  // a timer: the worker runs other tasks meanwhile
  co_return a + b;
}

karx::Async<int> count_lines(std::string path) {
  // A call known to block: give the processor away first, take one back after.
  int lines = karx::blocking([&] {
    std::ifstream in(path);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  });
  co_return lines;
}

karx::Async<int> polite_loop(int rounds) {
  int done = 0;
  for (int i = 0; i < rounds; ++i) {
    ++done;                      // a slice of CPU-bound work...
    co_await karx::yield_now();  // ...then let the other tasks run
  }
  co_return done;
}

int main() {
  karx::RuntimeOptions options;
  options.processors = 2;             // default: KARX_PROCS, else hardware threads
  options.blocking_threshold = 10ms;  // a poll running longer counts as blocked
  options.idle_thread_timeout = 10s;  // spare threads exit after this
  karx::Runtime runtime(options);

  karx::JoinHandle<int> sum = runtime.spawn(add_later(1, 2));
  std::printf("1 + 2 = %d\n", *karx::block_on(std::move(sum)));

  std::printf("lines in this program's source: %d\n", runtime.block_on(count_lines(KARX_EXAMPLE_SOURCE)));

  std::vector<karx::JoinHandle<int>> loops;
  for (int i = 0; i < 4; ++i) loops.push_back(runtime.spawn(polite_loop(1000)));
  int total = 0;
  for (auto& loop : loops) total += *karx::block_on(std::move(loop));
  std::printf("4 polite loops ran %d rounds\n", total);

  karx::JoinHandle<long> file_size = runtime.spawn_blocking([] {
    std::this_thread::sleep_for(30ms);  // stands for a slow system call; holds no processor
    return 42L;
  });
  std::printf("spawn_blocking returned %ld\n", *karx::block_on(std::move(file_size)));

  karx::RuntimeMetrics m = runtime.metrics();
  std::printf("spawned %llu, completed %llu, polled %llu, threads %llu, handoffs %llu\n",
              static_cast<unsigned long long>(m.tasks_spawned), static_cast<unsigned long long>(m.tasks_completed),
              static_cast<unsigned long long>(m.tasks_polled), static_cast<unsigned long long>(m.threads),
              static_cast<unsigned long long>(m.handoffs));
}
