// CancellationToken and with_cancellation: stopping a tree of work from outside. Each part is a
// snippet of docs/guide.md.
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <optional>
#include <thread>
#include <utility>
#include <vector>
import karx;

using namespace std::chrono_literals;

karx::Async<int> worker(karx::CancellationToken stop) {
  int rounds = 0;
  while (!stop.is_cancelled()) {
    co_await karx::sleep_for(1ms);  // a slice of work
    ++rounds;
  }
  co_return rounds;
}

karx::Async<> announce(karx::CancellationToken stop) {
  co_await stop.cancelled();  // ready once the token (or an ancestor) is cancelled
  std::printf("shutting down\n");
}

karx::Async<int> slow_reply() {
  co_await karx::sleep_for(1h);
  co_return 42;
}

int main() {
  karx::RuntimeOptions options;
  options.processors = 2;
  karx::Runtime runtime(options);

  karx::CancellationToken server;                       // the whole server
  karx::CancellationToken connection = server.child();  // cancelled with it, or alone
  karx::CancellationToken request = connection.child();

  karx::JoinHandle<std::optional<int>> reply = runtime.spawn(karx::with_cancellation(request, slow_reply()));
  connection.cancel();  // the client went away: its requests stop, the server goes on
  std::optional<int> answer = *runtime.block_on(std::move(reply));
  std::printf("the request was %s; the server is %s\n", answer ? "answered" : "cancelled",
              server.is_cancelled() ? "stopped" : "running");

  std::vector<karx::JoinHandle<int>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(runtime.spawn(worker(server.child())));
  karx::JoinHandle<void> announcer = runtime.spawn(announce(server));
  std::this_thread::sleep_for(20ms);
  server.cancel();  // from any thread: every token below is cancelled, every waiter woken
  runtime.block_on(std::move(announcer));
  int stopped = 0;
  for (auto& w : workers) stopped += runtime.block_on(std::move(w)).has_value() ? 1 : 0;
  std::printf("%d workers stopped\n", stopped);
}
