// when_all, when_any and timeout: several futures at once inside one task. Each part is a
// snippet of docs/guide.md.
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>  // std::get for the structured binding of when_all's tuple
#include <utility>
#include <variant>
#include <vector>
import karx;

using namespace std::chrono_literals;

karx::Async<int> fetch(int id, std::chrono::milliseconds latency) {
  co_await karx::sleep_for(latency);  // stands for a request to a server
  co_return id * 10;
}

karx::Async<std::string> fetch_name() {
  co_await karx::sleep_for(5ms);
  co_return "karx";
}

karx::Async<> fan_out() {
  // Two requests at once, inside this task: ready when both are.
  auto [n, name] = co_await karx::when_all(fetch(1, 20ms), fetch_name());
  std::printf("when_all: %d and %s\n", n, name.c_str());

  // Any number of futures of one type; each wake polls only the request it concerns.
  std::vector<karx::Async<int>> requests;
  for (int id = 1; id <= 100; ++id) requests.push_back(fetch(id, std::chrono::milliseconds(id % 7)));
  std::vector<int> replies = co_await karx::when_all(std::move(requests));
  long sum = 0;
  for (int r : replies) sum += r;
  std::printf("when_all of %zu requests: sum %ld\n", replies.size(), sum);

  // The first to finish wins (the variant's index says which); the other is destroyed.
  std::variant<int, int> first = co_await karx::when_any(fetch(1, 500ms), fetch(2, 5ms));
  int answer = first.index() == 0 ? std::get<0>(first) : std::get<1>(first);
  std::printf("when_any: replica %zu answered %d\n", first.index(), answer);
}

karx::Async<> with_deadlines() {
  std::optional<int> fast = co_await karx::timeout(1s, fetch(3, 1ms));
  std::optional<int> slow = co_await karx::timeout(10ms, fetch(4, 1h));
  std::printf("timeout: fast %d, slow %s\n", fast.value_or(-1), slow ? "answered" : "timed out");
}

int main() {
  karx::RuntimeOptions options;
  options.processors = 2;
  karx::Runtime runtime(options);
  runtime.block_on(fan_out());
  runtime.block_on(with_deadlines());

  // In a simulation, the deadline is virtual time: an hour passes at once.
  karx::sim::Simulation sim(1);
  std::optional<int> late = sim.block_on(karx::timeout(1h, fetch(5, 2h)));
  auto waited = std::chrono::duration_cast<std::chrono::minutes>(sim.now() - karx::sim::Simulation::start_time());
  std::printf("simulated: %s after %lld min\n", late ? "answered" : "timed out",
              static_cast<long long>(waited.count()));
}
