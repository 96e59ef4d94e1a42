// karx's echo server for the karx.net benchmarks (issue 15): a TcpListener on a Runtime, an
// accept loop spawning one task per connection, each task reading into one 64 KiB buffer and
// writing back what it read with write_all (the same shape and buffer size as the Boost.Asio
// and Go servers beside it).
//
//   karx_echo_server [--processors 2] [--host 127.0.0.1] [--port 0] [--until-stdin-closes]
//
// Prints one JSON line on stdout once it listens:
//   {"kind":"listening","library":"karx","port":P,"threads":N}
// and serves until killed (or, with --until-stdin-closes, until its stdin reaches end of file:
// the runner's way to make sure no server outlives it).
#include <unistd.h>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
import karx;

namespace {

constexpr std::size_t kBufferSize = 64 * 1024;

karx::Async<void> echo(karx::net::TcpStream stream) {
  try {
    stream.set_nodelay(true);
    auto buf = std::make_unique<std::byte[]>(kBufferSize);  // one buffer per connection, reused
    for (;;) {
      const std::size_t n = co_await stream.read(std::span<std::byte>(buf.get(), kBufferSize));
      if (n == 0) co_return;  // the client is done: the stream closes
      co_await stream.write_all(std::span<const std::byte>(buf.get(), n));
    }
  } catch (const std::exception&) {
    // A reset connection: drop it, as the other servers do.
  }
}

karx::Async<void> serve(karx::Runtime& runtime, std::string host, std::uint16_t port, int processors) {
  karx::net::TcpListener listener = karx::net::TcpListener::bind(host, port, 1024);
  std::printf("{\"kind\":\"listening\",\"library\":\"karx\",\"port\":%u,\"threads\":%d}\n",
              static_cast<unsigned>(listener.local_port()), processors);
  std::fflush(stdout);
  for (;;) {
    karx::net::TcpStream stream = co_await listener.accept();
    runtime.spawn(echo(std::move(stream))).detach();
  }
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "karx_echo_server: %s\n"
               "usage: karx_echo_server [--processors N] [--host H] [--port P] [--until-stdin-closes]\n",
               msg.c_str());
  std::exit(2);
}

void exit_when_stdin_closes() {
  std::thread([] {
    char buf[256];
    while (::read(0, buf, sizeof buf) > 0) {
    }
    std::_Exit(0);
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  int processors = 2;
  std::string host = "127.0.0.1";
  unsigned long port = 0;
  bool until_stdin_closes = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--processors" || a == "--threads") {
      processors = std::atoi(value().c_str());
    } else if (a == "--host") {
      host = value();
    } else if (a == "--port") {
      port = std::strtoul(value().c_str(), nullptr, 10);
    } else if (a == "--until-stdin-closes") {
      until_stdin_closes = true;
    } else {
      usage_error("unknown argument " + std::string(a));
    }
  }
  if (processors < 1 || processors > 1024) usage_error("--processors must be in 1..1024");
  if (port > 65535) usage_error("--port must be in 0..65535");
  if (until_stdin_closes) exit_when_stdin_closes();

  karx::RuntimeOptions options;
  options.processors = processors;
  karx::Runtime runtime(options);
  try {
    runtime.block_on(serve(runtime, host, static_cast<std::uint16_t>(port), processors));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "karx_echo_server: %s\n", e.what());
    return 1;
  }
}
