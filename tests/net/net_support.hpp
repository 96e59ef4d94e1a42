// Helpers for the karx.net tests: open-fd counts, the fd limit, byte buffers, raw POSIX peers
// (a peer that resets), and running a test body on a runtime with a deadline, so that a bug
// fails the test instead of hanging it.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

import karx;

namespace nettest {

using namespace std::chrono_literals;

// Open file descriptors of this process.
inline std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n - 1;  // the directory iterator's own fd
}

// Raises the soft RLIMIT_NOFILE to the hard limit; true if at least `need` fds are allowed.
inline bool allow_fds(rlim_t need, std::string& why) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur < need && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  if (r.rlim_cur >= need) return true;
  why = "RLIMIT_NOFILE allows " + std::to_string(r.rlim_cur) + " fds (hard limit " + std::to_string(r.rlim_max) +
        "), the test needs " + std::to_string(need) + ": raise the hard limit (ulimit -Hn) to run it";
  return false;
}

inline std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }
inline std::string text(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A pattern that a shifted or lost byte would break.
inline std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  std::uint32_t x = 12345;
  for (auto& b : v) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::byte>(x >> 16);
  }
  return v;
}

// A blocking POSIX TCP client connected to 127.0.0.1:port (the test's raw peer).
inline int raw_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Closes `fd` with a reset (SO_LINGER 0): the peer's next read fails with ECONNRESET.
inline void raw_reset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// Runs `body` (an Async) on `rt`, failing the test if it takes longer than `limit`.
template <class F>
void run_within(karx::Runtime& rt, std::chrono::nanoseconds limit, F body) {
  auto done = rt.block_on(karx::timeout(limit, std::move(body)));
  ASSERT_TRUE(done) << "the test body did not finish within its deadline";
}

}  // namespace nettest
