// The seed's demo: blocking inside a task is fine. One task waits on a timer, another blocks
// its thread; on the global runtime they run side by side, so both finish in about 10 s, not
// 20. Then a harder variant: more blocking tasks than processors, and a ticker that must stay
// on time. `hello_blocking quick` runs both with 1/20 of the times (the tests do).
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
import karx;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds tick = 1000ms;  // 50 ms in quick mode

karx::Async<> non_blocking_hello() {
  for (int i = 0; i < 10; ++i) {
    std::printf("Non-blocking Hello World\n");
    co_await karx::sleep_for(tick);  // a timer: no thread is blocked
  }
}

karx::Async<> blocking_hello() {
  for (int i = 0; i < 10; ++i) {
    std::printf("Blocking Hello World\n");
    std::this_thread::sleep_for(tick);  // blocks this worker: the monitor hands its processor off
  }
  co_return;
}

karx::Async<> blocker(int rounds) {
  for (int i = 0; i < rounds; ++i) std::this_thread::sleep_for(tick / 2);
  co_return;
}

// Sleeps `n` times for `period` and reports the worst lateness of a wake-up.
karx::Async<Clock::duration> ticker(int n, std::chrono::milliseconds period) {
  Clock::duration worst{};
  for (int i = 0; i < n; ++i) {
    const auto due = Clock::now() + period;
    co_await karx::sleep_until(due);
    worst = std::max(worst, Clock::now() - due);
  }
  co_return worst;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "quick") == 0) tick = 50ms;

  const auto start = Clock::now();
  auto a = karx::exec(non_blocking_hello());
  auto b = karx::exec(blocking_hello());
  karx::block_on(std::move(a));
  karx::block_on(std::move(b));
  std::printf("both finished in %.1f s (10 ticks of %.2f s each, side by side)\n", seconds(Clock::now() - start),
              seconds(tick));

  // Harder: 2 processors, 6 tasks that block their threads, and a ticker that must stay on time.
  karx::RuntimeOptions options;
  options.processors = 2;
  karx::Runtime runtime(options);
  std::vector<karx::JoinHandle<void>> blockers;
  for (int i = 0; i < 6; ++i) blockers.push_back(runtime.spawn(blocker(6)));
  auto worst = runtime.block_on(ticker(20, tick / 10));
  for (auto& h : blockers) karx::block_on(std::move(h));
  const karx::RuntimeMetrics m = runtime.metrics();
  std::printf("6 blocking tasks on 2 processors: the ticker's worst lateness was %.1f ms\n", seconds(worst) * 1000);
  std::printf("threads started: %llu, processors handed off: %llu\n",
              static_cast<unsigned long long>(m.threads_started), static_cast<unsigned long long>(m.handoffs));
}
