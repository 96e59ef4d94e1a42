// Single-threaded epoll echo server: the shape of a netpoller-driven server.
// Non-blocking sockets registered once, edge-triggered (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET,
// as Go's netpoller does); on readiness read until EAGAIN and write each chunk straight back.
// A short write parks the rest in the connection and stops reading until EPOLLOUT drains it.
//   usage: epoll_echo [port]
#include <sys/epoll.h>

#include <csignal>
#include <memory>
#include <vector>

#include "common.hpp"

using namespace probe;

namespace {

struct Conn {
  int fd = -1;
  std::vector<char> out;  // bytes read but not yet written back
  size_t out_off = 0;
};

std::vector<std::unique_ptr<Conn>> conns;  // indexed by fd
char buf[64 * 1024];

void close_conn(Conn* c) {
  ::close(c->fd);  // also drops it from the epoll set
  conns[c->fd].reset();
}

// Writes [p, p+n) or parks what the socket does not take. False: the connection is gone.
bool send_or_park(Conn* c, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(c->fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  if (n > 0) c->out.insert(c->out.end(), p, p + n);
  return true;
}

// Drains parked output. True when nothing is left parked.
bool flush(Conn* c, bool& alive) {
  while (c->out_off < c->out.size()) {
    ssize_t w = ::write(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return false;
      alive = false;
      return false;
    }
    c->out_off += size_t(w);
  }
  c->out.clear();
  c->out_off = 0;
  return true;
}

// Reads until EAGAIN (edge-triggered), echoing as it goes. False: the connection is gone.
bool on_readable(Conn* c) {
  for (;;) {
    if (!c->out.empty()) return true;  // back-pressure: resume on EPOLLOUT
    ssize_t r = ::read(c->fd, buf, sizeof buf);
    if (r > 0) {
      if (!send_or_park(c, buf, size_t(r))) return false;
      continue;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  int lfd = listen_on(port_arg(argc, argv));
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.fd = lfd;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl listen");

  epoll_event evs[256];
  for (;;) {
    int n = ::epoll_wait(ep, evs, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      uint32_t e = evs[i].events;
      if (fd == lfd) {
        for (;;) {
          int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break;  // EAGAIN (or EMFILE: try again on the next edge)
          }
          set_nodelay(cfd);
          if (size_t(cfd) >= conns.size()) conns.resize(size_t(cfd) * 2 + 1);
          conns[cfd] = std::make_unique<Conn>();
          conns[cfd]->fd = cfd;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
          cev.data.fd = cfd;
          if (::epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev) < 0) die("epoll_ctl conn");
        }
        continue;
      }
      Conn* c = conns[fd].get();
      if (!c) continue;
      bool alive = !(e & EPOLLERR);
      if (alive && (e & EPOLLOUT) && !c->out.empty()) {
        // Drained: the edge that stopped reading may have passed, so read again.
        if (flush(c, alive) && alive) alive = on_readable(c);
      }
      if (alive && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) alive = on_readable(c);
      if (!alive) close_conn(c);
    }
  }
}
