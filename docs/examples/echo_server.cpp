// A complete TCP echo server on karx.net: one task per connection on the runtime, each
// echoing what it reads until the client closes. Usage: echo_server [port [seconds]]; port 0
// (the default) takes any free port, and the server prints the one it got; it stops after
// `seconds` (0, the default: never) and prints what it served.
// scripts/run starts it and points docs/examples/echo_load.cpp (the load generator) at it.
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <system_error>

import karx;

using karx::net::TcpListener;
using karx::net::TcpStream;

std::atomic<std::uint64_t> connections{0};
std::atomic<std::uint64_t> echoed_bytes{0};

karx::Async<> echo(TcpStream stream) {
  std::byte buf[16 * 1024];
  try {
    for (;;) {
      const std::size_t n = co_await stream.read(buf);
      if (n == 0) break;  // the client closed its side
      co_await stream.write_all(std::span(buf, n));
      echoed_bytes.fetch_add(n, std::memory_order_relaxed);
    }
  } catch (const std::system_error& e) {
    // A client that resets its connection ends only its own task.
    std::fprintf(stderr, "echo: %s\n", e.what());
  }
}

karx::Async<> serve(TcpListener& listener) {
  for (;;) {
    TcpStream stream = co_await listener.accept();
    stream.set_nodelay(true);
    connections.fetch_add(1, std::memory_order_relaxed);
    karx::exec(echo(std::move(stream))).detach();
  }
}

karx::Async<> run(std::uint16_t port, int seconds) {
  TcpListener listener = TcpListener::bind("127.0.0.1", port);
  std::printf("listening on 127.0.0.1:%u\n", static_cast<unsigned>(listener.local_port()));
  std::fflush(stdout);
  if (seconds <= 0) {
    co_await serve(listener);
    co_return;
  }
  // Serve until the time is up: timeout destroys the accept loop, and with it the listener's
  // pending accept; the connections' tasks end with the runtime.
  (void)co_await karx::timeout(std::chrono::seconds(seconds), serve(listener));
}

int main(int argc, char** argv) {
  const auto port = static_cast<std::uint16_t>(argc > 1 ? std::atoi(argv[1]) : 0);
  const int seconds = argc > 2 ? std::atoi(argv[2]) : 0;
  karx::Runtime runtime;
  runtime.block_on(run(port, seconds));
  std::printf("echo server: %llu connections, %llu bytes echoed\n", static_cast<unsigned long long>(connections.load()),
              static_cast<unsigned long long>(echoed_bytes.load()));
}
