// The one client of the karx.net benchmarks (issue 15): it drives karx's, Boost.Asio's and Go's
// echo servers alike, so that a difference in the figures is the server's. Plain C++ and Linux
// system calls (blocking sockets, epoll): it shares no code with any server.
//
//   karx_echo_client --port P [--host 127.0.0.1] echo [--connections C] [--threads T]
//                    [--size 64] [--warmup 0.2] [--duration 1] [--assign blocks|round-robin]
//   karx_echo_client --port P [--host 127.0.0.1] bulk [--bytes 1073741824] [--chunk 65536] [--verify]
//
// echo: C connections, spread over T client threads, each in a closed loop: send `size` bytes,
// wait for the `size`-byte echo, note the round trip, send again. The connections are made one
// after the other and dealt to the threads in blocks (the default: thread t gets the t-th
// consecutive run of C/T connections) or round-robin (connection i to thread i mod T). Blocks,
// because a server that deals accepted connections round-robin over T threads of its own
// (Asio's io_context pool does) would otherwise pair each of its threads with one client
// thread: the kernel then runs each pair on one CPU, so no request crosses CPUs, which favours
// that server for a reason no real client would give it (docs/bench.md measures both). A thread
// with one connection uses blocking write/read (the cheapest client: no epoll_wait per request);
// a thread with more multiplexes them with a level-triggered epoll. After `warmup` seconds the
// requests sent and answered within the next `duration` seconds count (requests_total counts
// every echo, warm-up included: what the server's CPU time is to be divided by). Prints one JSON
// line:
//   {"kind":"net_echo","connections":C,"threads":T,"size":64,"seconds":s,"requests":n,
//    "requests_total":n,"rps":x,"mean_us":x,"p50_us":x,"p90_us":x,"p99_us":x,"p999_us":x,"max_us":x}
//
// bulk: one connection; a writer thread pushes `bytes` in `chunk`-sized writes then shuts its
// side down, a reader thread on the same socket reads the echo back concurrently. The time runs
// from the first write to the last byte read; GB/s is `bytes` / time / 1e9 (one direction's
// payload: the server moved it in and out once). With --verify every byte read is checked
// against the pattern written (costs CPU; for testing the servers, not for measuring them).
//   {"kind":"net_bulk","bytes":n,"chunk":n,"seconds":s,"gbps":x}
//
// Exit status: 0 success, 1 a connection failed or the server misbehaved, 2 bad arguments.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "karx_echo_client: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void die_msg(const std::string& msg) {
  std::fprintf(stderr, "karx_echo_client: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "karx_echo_client: %s\n"
               "usage: karx_echo_client --port P [--host H] echo [--connections C] [--threads T] [--size B]\n"
               "                        [--warmup S] [--duration S] [--assign blocks|round-robin]\n"
               "       karx_echo_client --port P [--host H] bulk [--bytes N] [--chunk B] [--verify]\n",
               msg.c_str());
  std::exit(2);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

int connect_to(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    die_msg("cannot resolve " + host + ": " + ::gai_strerror(rc));
  }
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) die(("connect to " + host + ":" + service).c_str());
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
  return fd;
}

void write_all(int fd, const std::byte* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// ---------------------------------------------------------------------------------------------
// echo

// 0: warm-up, 1: measuring, 2: stop. Written by main, read by the client threads.
std::atomic<int> phase{0};

struct ThreadResult {
  std::vector<std::uint32_t> latencies_ns;  // round trips sent and answered while measuring
  std::uint64_t total = 0;                  // every round trip, warm-up included
};

void note(ThreadResult& r, bool sent_measuring, std::int64_t t0, std::int64_t t1) {
  ++r.total;
  if (sent_measuring && phase.load(std::memory_order_relaxed) == 1) {
    const std::int64_t d = t1 - t0;
    r.latencies_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(d, UINT32_MAX)));
  }
}

// One connection on this thread: blocking write, blocking read of the whole echo.
void echo_blocking(int fd, std::size_t size, ThreadResult& r) {
  std::vector<std::byte> out(size, std::byte{'x'}), in(size);
  for (;;) {
    const int ph = phase.load(std::memory_order_relaxed);
    if (ph == 2) return;
    const std::int64_t t0 = now_ns();
    write_all(fd, out.data(), size);
    std::size_t got = 0;
    while (got < size) {
      ssize_t n = ::read(fd, in.data() + got, size - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        die("read");
      }
      if (n == 0) die_msg("the server closed a connection in the middle of an echo");
      got += static_cast<std::size_t>(n);
    }
    note(r, ph == 1, t0, now_ns());
  }
}

// Several connections on this thread: each has one request in flight; epoll says which echo
// has come back.
void echo_epoll(const std::vector<int>& fds, std::size_t size, ThreadResult& r) {
  struct Conn {
    int fd;
    std::size_t got;
    std::int64_t t0;
    bool measuring;
  };
  std::vector<Conn> conns;
  conns.reserve(fds.size());
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  std::vector<std::byte> out(size, std::byte{'x'}), in(size);
  for (int fd : fds) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) die("O_NONBLOCK");
    conns.push_back({fd, 0, 0, false});
  }
  for (std::size_t i = 0; i < conns.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0) die("epoll_ctl");
  }
  // A request fits an empty send buffer (the previous one was answered, so consumed): a write
  // that does not take it whole only happens under memory pressure; wait and retry then.
  auto send = [&](Conn& c) {
    c.measuring = phase.load(std::memory_order_relaxed) == 1;
    c.t0 = now_ns();
    c.got = 0;
    std::size_t off = 0;
    while (off < size) {
      ssize_t w = ::write(c.fd, out.data() + off, size - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          std::this_thread::yield();
          continue;
        }
        die("write");
      }
      off += static_cast<std::size_t>(w);
    }
  };
  for (Conn& c : conns) send(c);
  std::size_t in_flight = conns.size();
  std::vector<epoll_event> events(conns.size());
  bool stopping = false;
  while (in_flight > 0) {
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), stopping ? 100 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (n == 0) break;  // stopping, and the last echoes are slow: they do not count anyway
    for (int e = 0; e < n; ++e) {
      Conn& c = conns[events[e].data.u64];
      ssize_t k = ::read(c.fd, in.data() + c.got, size - c.got);
      if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        die("read");
      }
      if (k == 0) die_msg("the server closed a connection in the middle of an echo");
      c.got += static_cast<std::size_t>(k);
      if (c.got < size) continue;
      note(r, c.measuring, c.t0, now_ns());
      if (phase.load(std::memory_order_relaxed) == 2) {
        stopping = true;
        --in_flight;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        continue;
      }
      send(c);
    }
  }
  ::close(ep);
}

double percentile_us(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  std::size_t i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(i, sorted.size() - 1)]) / 1e3;
}

int run_echo(const std::string& host, std::uint16_t port, int connections, int threads, std::size_t size, double warmup,
             double duration, bool round_robin) {
  threads = std::min(threads, connections);
  std::vector<std::vector<int>> per_thread(static_cast<std::size_t>(threads));
  for (int i = 0; i < connections; ++i) {
    // Blocks: i * T / C is t for the t-th run of consecutive connections (sizes differ by one at most).
    const int t = round_robin ? i % threads : static_cast<int>(static_cast<long long>(i) * threads / connections);
    per_thread[static_cast<std::size_t>(t)].push_back(connect_to(host, port));
  }
  std::vector<ThreadResult> results(static_cast<std::size_t>(threads));
  for (auto& r : results) r.latencies_ns.reserve(1 << 20);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const auto& fds = per_thread[static_cast<std::size_t>(t)];
      if (fds.size() == 1) {
        echo_blocking(fds[0], size, results[static_cast<std::size_t>(t)]);
      } else {
        echo_epoll(fds, size, results[static_cast<std::size_t>(t)]);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  const auto start = Clock::now();
  phase.store(1, std::memory_order_relaxed);
  std::this_thread::sleep_for(std::chrono::duration<double>(duration));
  phase.store(2, std::memory_order_relaxed);
  const auto end = Clock::now();
  for (auto& w : workers) w.join();
  for (auto& fds : per_thread) {
    for (int fd : fds) ::close(fd);
  }

  std::vector<std::uint32_t> all;
  std::uint64_t total = 0;
  for (auto& r : results) {
    all.insert(all.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    total += r.total;
  }
  std::sort(all.begin(), all.end());
  const double seconds = std::chrono::duration<double>(end - start).count();
  double sum = 0;
  for (auto v : all) sum += v;
  const double mean_us = all.empty() ? 0 : sum / static_cast<double>(all.size()) / 1e3;
  std::printf(
      "{\"kind\":\"net_echo\",\"connections\":%d,\"threads\":%d,\"size\":%zu,\"seconds\":%.4f,"
      "\"requests\":%zu,\"requests_total\":%llu,\"rps\":%.1f,\"mean_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_"
      "us\":%.2f,"
      "\"p999_us\":%.2f,\"max_us\":%.2f}\n",
      connections, threads, size, seconds, all.size(), static_cast<unsigned long long>(total),
      static_cast<double>(all.size()) / seconds, mean_us, percentile_us(all, 0.50), percentile_us(all, 0.90),
      percentile_us(all, 0.99), percentile_us(all, 0.999), all.empty() ? 0.0 : all.back() / 1e3);
  std::fflush(stdout);
  if (all.empty()) die_msg("no request was answered while measuring");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// bulk

std::byte pattern_at(std::uint64_t i) { return static_cast<std::byte>((i * 131 + (i >> 16)) & 0xff); }

int run_bulk(const std::string& host, std::uint16_t port, std::uint64_t bytes, std::size_t chunk, bool verify) {
  const int fd = connect_to(host, port);
  const std::int64_t start_ns = now_ns();
  std::thread writer([&] {
    std::vector<std::byte> buf(chunk);
    // Without --verify the same chunk goes out again and again (as a file server's page cache
    // would); with it, every byte carries its offset's pattern.
    if (!verify) {
      for (std::size_t i = 0; i < chunk; ++i) buf[i] = pattern_at(i);
    }
    std::uint64_t sent = 0;
    while (sent < bytes) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, bytes - sent));
      if (verify) {
        for (std::size_t i = 0; i < n; ++i) buf[i] = pattern_at(sent + i);
      }
      write_all(fd, buf.data(), n);
      sent += n;
    }
    if (::shutdown(fd, SHUT_WR) != 0) die("shutdown");
  });
  std::vector<std::byte> buf(chunk);
  std::uint64_t got = 0;
  while (got < bytes) {
    ssize_t n = ::read(fd, buf.data(), chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (n == 0) break;
    if (verify) {
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[static_cast<std::size_t>(i)] != pattern_at(got + static_cast<std::uint64_t>(i))) {
          die_msg("the echo differs from what was sent at byte " + std::to_string(got + static_cast<std::uint64_t>(i)));
        }
      }
    }
    got += static_cast<std::uint64_t>(n);
  }
  const std::int64_t end_ns = now_ns();
  writer.join();
  ::close(fd);
  if (got != bytes) {
    die_msg("the server closed after echoing " + std::to_string(got) + " of " + std::to_string(bytes) + " bytes");
  }
  const double seconds = static_cast<double>(end_ns - start_ns) / 1e9;
  std::printf("{\"kind\":\"net_bulk\",\"bytes\":%llu,\"chunk\":%zu,\"seconds\":%.4f,\"gbps\":%.4f}\n",
              static_cast<unsigned long long>(bytes), chunk, seconds, static_cast<double>(bytes) / seconds / 1e9);
  std::fflush(stdout);
  return 0;
}

// ---------------------------------------------------------------------------------------------

double parse_double(std::string_view flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !(d >= 0)) usage_error(std::string(flag) + ": not a number: " + v);
  return d;
}

std::uint64_t parse_u64(std::string_view flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-') {
    usage_error(std::string(flag) + ": not a whole number: " + v);
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = -1;
  std::string mode;
  int connections = 1;
  int threads = 1;
  std::size_t size = 64;
  double warmup = 0.2;
  double duration = 1.0;
  std::uint64_t bytes = 1ull << 30;
  std::size_t chunk = 64 * 1024;
  bool verify = false;
  bool round_robin = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--host") {
      host = value();
    } else if (a == "--port") {
      std::uint64_t p = parse_u64(a, value());
      if (p == 0 || p > 65535) usage_error("--port must be in 1..65535");
      port = static_cast<long>(p);
    } else if (a == "--connections") {
      connections = static_cast<int>(std::clamp<std::uint64_t>(parse_u64(a, value()), 0, 100000));
    } else if (a == "--threads") {
      threads = static_cast<int>(std::clamp<std::uint64_t>(parse_u64(a, value()), 0, 1024));
    } else if (a == "--size") {
      size = static_cast<std::size_t>(parse_u64(a, value()));
    } else if (a == "--warmup") {
      warmup = parse_double(a, value());
    } else if (a == "--duration") {
      duration = parse_double(a, value());
    } else if (a == "--bytes") {
      bytes = parse_u64(a, value());
    } else if (a == "--chunk") {
      chunk = static_cast<std::size_t>(parse_u64(a, value()));
    } else if (a == "--verify") {
      verify = true;
    } else if (a == "--assign") {
      const std::string_view how = value();
      if (how != "blocks" && how != "round-robin") usage_error("--assign must be blocks or round-robin");
      round_robin = how == "round-robin";
    } else if (a == "-h" || a == "--help") {
      usage_error("help");
    } else if (a == "echo" || a == "bulk") {
      mode = a;
    } else {
      usage_error("unknown argument " + std::string(a));
    }
  }
  if (port < 0) usage_error("--port is required");
  if (mode.empty()) usage_error("echo or bulk?");
  if (mode == "echo") {
    if (connections < 1 || threads < 1 || size < 1 || size > (1 << 20) || !(duration > 0)) {
      usage_error("echo needs --connections >= 1, --threads >= 1, --size in 1..1048576, --duration > 0");
    }
    return run_echo(host, static_cast<std::uint16_t>(port), connections, threads, size, warmup, duration, round_robin);
  }
  if (bytes < 1 || chunk < 1 || chunk > (64u << 20)) usage_error("bulk needs --bytes >= 1, --chunk in 1..67108864");
  return run_bulk(host, static_cast<std::uint16_t>(port), bytes, chunk, verify);
}
