// A load generator for the echo server, written with karx: `connections` clients, each a task
// that sends a 64-byte message and waits for its echo, again and again, for `seconds`; then it
// prints the round trips per second and the latency percentiles.
// Usage: echo_load PORT [seconds [connections]]. With PORT 0 it starts an echo server of its
// own on the same runtime first (how the tests run it).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

import karx;

using karx::net::TcpListener;
using karx::net::TcpStream;
using Clock = std::chrono::steady_clock;

struct Tally {
  std::vector<std::uint32_t> latencies_us;  // one client's round trips
};

karx::Async<> client(std::uint16_t port, Clock::time_point until, Tally& tally) {
  TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
  c.set_nodelay(true);
  std::byte msg[64];
  std::byte back[64];
  for (std::size_t i = 0; i < sizeof msg; ++i) msg[i] = static_cast<std::byte>(i);
  while (Clock::now() < until) {
    const auto t0 = Clock::now();
    co_await c.write_all(msg);
    co_await c.read_exact(back);
    tally.latencies_us.push_back(
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
    if (!std::equal(std::begin(msg), std::end(msg), std::begin(back))) {
      std::fprintf(stderr, "echo_load: the echo differs from the message\n");
      std::exit(1);
    }
  }
}

// The in-process server for PORT 0: echoes each connection until it closes.
karx::Async<> echo(TcpStream s) {
  std::byte buf[4096];
  for (std::size_t n; (n = co_await s.read(buf)) != 0;) co_await s.write_all(std::span(buf, n));
}
karx::Async<> serve(std::shared_ptr<TcpListener> listener) {
  for (;;) karx::exec(echo(co_await listener->accept())).detach();
}

karx::Async<> run(std::uint16_t port, int seconds, int connections) {
  if (port == 0) {
    auto listener = std::make_shared<TcpListener>(TcpListener::bind("127.0.0.1", 0));
    port = listener->local_port();
    karx::exec(serve(listener)).detach();
  }
  const auto start = Clock::now();
  const auto until = start + std::chrono::seconds(seconds);
  std::vector<Tally> tallies(connections);
  karx::TaskGroup group;
  for (int i = 0; i < connections; ++i) group.spawn(client(port, until, tallies[i]));
  co_await group.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<std::uint32_t> all;
  for (const Tally& t : tallies) all.insert(all.end(), t.latencies_us.begin(), t.latencies_us.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0u : all[std::min(all.size() - 1, std::size_t(p * all.size()))]; };
  std::printf(
      "echo_load: %d connections, %zu round trips in %.1f s: %.0f round trips/s; latency p50 %u us, p99 %u us\n",
      connections, all.size(), elapsed, all.size() / elapsed, pct(0.50), pct(0.99));
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: echo_load PORT [seconds [connections]] (PORT 0: a server of its own)\n");
    return 2;
  }
  const auto port = static_cast<std::uint16_t>(std::atoi(argv[1]));
  const int seconds = argc > 2 ? std::atoi(argv[2]) : 3;
  const int connections = argc > 3 ? std::atoi(argv[3]) : 16;
  karx::Runtime runtime;
  runtime.block_on(run(port, seconds, connections));
}
