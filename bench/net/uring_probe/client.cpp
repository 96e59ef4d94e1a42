// Closed-loop echo client, one thread, epoll (the same client for every server).
//
//   client PORT rr CONNS [SECONDS] [WARMUP]
//       CONNS connections; each sends 64 bytes, waits for the 64-byte echo, sends again.
//       Counts round trips completed after WARMUP seconds (default 0.5) for SECONDS more
//       (default 3). Prints: rps=<requests/s> p50_us=<> p99_us=<> n=<round trips measured>
//       total=<round trips including warm-up>
//   client PORT bulk MIB
//       One connection: writes a MIB-MiB stream and reads the echo concurrently; times the
//       stream from the first byte written to the last byte echoed, after a 32 MiB warm-up
//       on the same connection. Prints: gbps=<GB/s, 1e9 bytes> secs=<> total=<bytes echoed>
#include <sys/epoll.h>

#include <algorithm>
#include <csignal>
#include <string_view>
#include <vector>

#include "common.hpp"

using namespace probe;

namespace {

constexpr size_t kMsg = 64;

int connect_to(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int attempt = 0;; ++attempt) {  // the server may still be starting
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      set_nodelay(fd);
      set_nonblock(fd);
      return fd;
    }
    ::close(fd);
    if (attempt > 200) die("connect");
    ::usleep(10'000);
  }
}

struct Conn {
  int fd;
  size_t got = 0;
  uint64_t sent_at = 0;
  char in[kMsg];
};

char payload[kMsg];

void send_req(Conn& c) {
  c.sent_at = now_ns();
  ssize_t w = ::write(c.fd, payload, kMsg);
  if (w != ssize_t(kMsg)) die("write request (short)", w < 0 ? errno : EIO);
}

int run_rr(int port, int nconn, double secs, double warm) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<size_t>(nconn));
  for (int i = 0; i < nconn; ++i) {
    conns[i].fd = connect_to(port);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = uint32_t(i);
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
  }
  uint64_t total = 0;  // all round trips, warm-up included (for CPU cost per round trip)
  std::vector<uint32_t> lat_ns;
  lat_ns.reserve(8'000'000);
  uint64_t t0 = now_ns();
  uint64_t t_warm = t0 + uint64_t(warm * 1e9), t_end = t_warm + uint64_t(secs * 1e9);
  for (Conn& c : conns) send_req(c);
  epoll_event evs[256];
  uint64_t now = t0;
  while (now < t_end) {
    int n = ::epoll_wait(ep, evs, 256, 100);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      Conn& c = conns[evs[i].data.u32];
      ssize_t r = ::read(c.fd, c.in + c.got, kMsg - c.got);
      if (r == 0) die("server closed", EPIPE);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        die("read");
      }
      c.got += size_t(r);
      if (c.got < kMsg) continue;
      if (std::memcmp(c.in, payload, kMsg) != 0) die("echo mismatch", EIO);
      c.got = 0;
      ++total;
      now = now_ns();
      if (now >= t_warm && now < t_end) lat_ns.push_back(uint32_t(std::min<uint64_t>(now - c.sent_at, UINT32_MAX)));
      send_req(c);
    }
    if (n == 0) now = now_ns();
  }
  for (Conn& c : conns) ::close(c.fd);
  if (lat_ns.empty()) die("no round trips", EIO);
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double q) { return lat_ns[std::min(lat_ns.size() - 1, size_t(q * double(lat_ns.size())))] / 1e3; };
  std::printf("rps=%.0f p50_us=%.1f p99_us=%.1f n=%zu total=%llu\n", double(lat_ns.size()) / secs, pct(0.50),
              pct(0.99), lat_ns.size(), static_cast<unsigned long long>(total));
  return 0;
}

int run_bulk(int port, size_t mib) {
  constexpr size_t kWarm = 32u << 20, kChunk = 64u << 10;
  const size_t total = kWarm + (mib << 20);
  int fd = connect_to(port);
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  std::vector<char> wbuf(kChunk), rbuf(kChunk);
  for (size_t i = 0; i < kChunk; ++i) wbuf[i] = char(i * 131 + 7);
  size_t written = 0, echoed = 0;
  bool out_on = true;
  uint64_t t_start = 0;
  epoll_event evs[4];
  while (echoed < total) {
    int n = ::epoll_wait(ep, evs, 4, 1000);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    if (n <= 0) continue;
    uint32_t e = evs[0].events;
    if ((e & EPOLLOUT) && written < total) {
      for (;;) {
        size_t want = std::min(kChunk, total - written);
        ssize_t w = ::write(fd, wbuf.data(), want);
        if (w <= 0) break;
        written += size_t(w);
        if (written == total) break;
      }
      if (written == total && out_on) {
        ev.events = EPOLLIN;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        out_on = false;
      }
    }
    if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      for (;;) {
        ssize_t r = ::read(fd, rbuf.data(), rbuf.size());
        if (r == 0) die("server closed", EPIPE);
        if (r < 0) break;
        if (echoed < kWarm && echoed + size_t(r) >= kWarm) t_start = now_ns();
        echoed += size_t(r);
      }
    }
  }
  double secs = double(now_ns() - t_start) / 1e9;
  ::close(fd);
  std::printf("gbps=%.3f secs=%.4f total=%zu\n", double(mib << 20) / secs / 1e9, secs, total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < kMsg; ++i) payload[i] = char('a' + i % 26);
  if (argc < 4) {
    std::fprintf(stderr, "usage: client PORT rr CONNS [SECONDS] [WARMUP] | client PORT bulk MIB\n");
    return 2;
  }
  int port = std::atoi(argv[1]);
  std::string_view mode = argv[2];
  if (mode == "rr") return run_rr(port, std::atoi(argv[3]), argc > 4 ? std::atof(argv[4]) : 3.0,
                                  argc > 5 ? std::atof(argv[5]) : 0.5);
  if (mode == "bulk") return run_bulk(port, size_t(std::atoll(argv[3])));
  std::fprintf(stderr, "unknown mode\n");
  return 2;
}
