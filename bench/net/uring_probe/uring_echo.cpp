// Single-threaded io_uring echo server, two modes:
//
//   ring  (default)  completion model, as io_uring is meant to be used: one multishot accept;
//                    per connection one multishot recv that picks buffers from a provided-buffer
//                    ring, and a send of each received buffer (one send in flight per connection
//                    so the stream stays in order); the buffer goes back to the ring when its send
//                    completes. One io_uring_submit_and_wait per loop turn submits everything
//                    queued and reaps all completions.
//   poll             io_uring as a readiness notifier only, which is what a drop-in backend for an
//                    epoll netpoller would be: multishot IORING_OP_POLL_ADD per socket, then plain
//                    read/write syscalls exactly as in epoll_echo; a short write arms a one-shot
//                    POLLOUT.
//
// The ring asks for SINGLE_ISSUER|DEFER_TASKRUN and falls back to COOP_TASKRUN, then to none.
//   usage: uring_echo [port] [ring|poll]
#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>

#include <csignal>
#include <deque>
#include <memory>
#include <string_view>
#include <vector>

#include "common.hpp"

using namespace probe;

namespace {

// user_data: op in bits 0-7, fd in bits 8-31, the fd slot's generation in bits 32-63, so a
// completion for a closed connection whose fd was reused is recognised and dropped.
enum Op : uint64_t { kAccept = 1, kRecv, kSend, kPollIn, kPollOut, kIgnore };

uint64_t tag(Op op, int fd, uint32_t gen) {
  return uint64_t(op) | (uint64_t(uint32_t(fd)) << 8) | (uint64_t(gen) << 32);
}
Op tag_op(uint64_t u) { return Op(u & 0xff); }
int tag_fd(uint64_t u) { return int((u >> 8) & 0xffffff); }
uint32_t tag_gen(uint64_t u) { return uint32_t(u >> 32); }

constexpr unsigned kBufSize = 64 * 1024;  // as epoll_echo's read buffer
constexpr unsigned kBufCount = 512;       // 32 MiB in the ring
constexpr int kBgid = 0;

io_uring ring;
io_uring_buf_ring* br = nullptr;
char* buf_base = nullptr;
char rw_buf[kBufSize];  // poll mode's read buffer

struct Pending {
  uint16_t bid;
  uint32_t off, len;
};

struct Conn {
  int fd = -1;
  uint32_t gen = 0;
  bool live = false;
  // ring mode
  std::deque<Pending> q;  // received buffers waiting to be echoed, in order
  bool sending = false;
  bool recv_armed = false;
  bool recv_done = false;  // peer closed or error: close once the sends finish
  // poll mode
  std::vector<char> out;
  size_t out_off = 0;
  bool pollout_armed = false;
};

std::vector<Conn> conns;
std::vector<int> starved;  // ring mode: connections whose recv stopped on ENOBUFS

io_uring_sqe* sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring);
  if (!s) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
    if (!s) die("io_uring_get_sqe", EBUSY);
  }
  return s;
}

Conn& conn_for(int fd) {
  if (size_t(fd) >= conns.size()) conns.resize(size_t(fd) * 2 + 1);
  Conn& c = conns[fd];
  c.fd = fd;
  c.live = true;
  c.q.clear();
  c.sending = c.recv_armed = c.recv_done = c.pollout_armed = false;
  c.out.clear();
  c.out_off = 0;
  return c;
}

void close_conn(Conn& c) {
  ::close(c.fd);
  c.live = false;
  ++c.gen;
}

// ---- ring mode --------------------------------------------------------------------------

void setup_buf_ring() {
  // liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring (2.4):
  // map the ring ourselves.
  size_t ring_bytes = kBufCount * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) die("mmap buf ring");
  br = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(mem);
  reg.ring_entries = kBufCount;
  reg.bgid = kBgid;
  int rc = io_uring_register_buf_ring(&ring, &reg, 0);
  if (rc < 0) die("io_uring_register_buf_ring", -rc);
  io_uring_buf_ring_init(br);
  buf_base = static_cast<char*>(::mmap(nullptr, size_t(kBufSize) * kBufCount, PROT_READ | PROT_WRITE,
                                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0));
  if (buf_base == MAP_FAILED) die("mmap buffers");
  int mask = io_uring_buf_ring_mask(kBufCount);
  for (unsigned i = 0; i < kBufCount; ++i)
    io_uring_buf_ring_add(br, buf_base + size_t(i) * kBufSize, kBufSize, uint16_t(i), mask, int(i));
  io_uring_buf_ring_advance(br, int(kBufCount));
}

void recycle(uint16_t bid) {
  io_uring_buf_ring_add(br, buf_base + size_t(bid) * kBufSize, kBufSize, bid,
                        io_uring_buf_ring_mask(kBufCount), 0);
  io_uring_buf_ring_advance(br, 1);
}

void arm_recv(Conn& c) {
  io_uring_sqe* s = sqe();
  io_uring_prep_recv_multishot(s, c.fd, nullptr, 0, 0);
  s->flags |= IOSQE_BUFFER_SELECT;
  s->buf_group = kBgid;
  io_uring_sqe_set_data64(s, tag(kRecv, c.fd, c.gen));
  c.recv_armed = true;
}

void send_front(Conn& c) {
  const Pending& p = c.q.front();
  io_uring_sqe* s = sqe();
  io_uring_prep_send(s, c.fd, buf_base + size_t(p.bid) * kBufSize + p.off, p.len, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, tag(kSend, c.fd, c.gen));
  c.sending = true;
}

void maybe_close(Conn& c) {
  if (c.recv_done && !c.sending && !c.recv_armed) {
    for (const Pending& p : c.q) recycle(p.bid);
    c.q.clear();
    close_conn(c);
  }
}

bool multishot_accept = true;
int lfd = -1;

void arm_accept() {
  io_uring_sqe* s = sqe();
  if (multishot_accept)
    io_uring_prep_multishot_accept(s, lfd, nullptr, nullptr, SOCK_CLOEXEC);
  else
    io_uring_prep_accept(s, lfd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, tag(kAccept, lfd, 0));
}

void ring_cqe(const io_uring_cqe* cqe) {
  uint64_t u = cqe->user_data;
  int res = cqe->res;
  bool more = cqe->flags & IORING_CQE_F_MORE;
  switch (tag_op(u)) {
    case kAccept:
      if (res >= 0) {
        set_nodelay(res);
        arm_recv(conn_for(res));
      } else if (res == -EINVAL && multishot_accept) {
        multishot_accept = false;  // kernel without multishot accept
        std::fprintf(stderr, "uring_echo: no multishot accept, using one-shot accept\n");
      }
      if (!more) arm_accept();
      return;
    case kRecv: {
      Conn& c = conns[tag_fd(u)];
      if (!c.live || c.gen != tag_gen(u)) return;
      if (res > 0) {
        uint16_t bid = uint16_t(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        c.q.push_back({bid, 0, uint32_t(res)});
        if (!c.sending) send_front(c);
      }
      if (!more) {
        if (res == -EINVAL) die("multishot recv with provided buffers", EINVAL);
        c.recv_armed = false;
        if (res == -ENOBUFS)
          starved.push_back(c.fd);  // re-armed when a send gives a buffer back
        else if (res > 0)
          arm_recv(c);  // multishot ended for another reason (e.g. CQ overflow)
        else
          c.recv_done = true;  // EOF or error
      }
      maybe_close(c);
      return;
    }
    case kSend: {
      Conn& c = conns[tag_fd(u)];
      if (!c.live || c.gen != tag_gen(u)) return;
      c.sending = false;
      if (res < 0) {
        // Broken connection: stop receiving; the recv's final completion closes it.
        ::shutdown(c.fd, SHUT_RDWR);
        c.recv_done = true;
        maybe_close(c);
        return;
      }
      Pending& p = c.q.front();
      p.off += uint32_t(res);
      p.len -= uint32_t(res);
      if (p.len == 0) {
        recycle(p.bid);
        c.q.pop_front();
        while (!starved.empty()) {
          Conn& s = conns[starved.back()];
          starved.pop_back();
          if (s.live && !s.recv_armed && !s.recv_done) arm_recv(s);
        }
      }
      if (!c.q.empty()) send_front(c);
      maybe_close(c);
      return;
    }
    default:
      return;
  }
}

// ---- poll mode --------------------------------------------------------------------------

void arm_poll(int fd, uint32_t gen, unsigned mask, Op op, bool multi) {
  io_uring_sqe* s = sqe();
  if (multi)
    io_uring_prep_poll_multishot(s, fd, mask);
  else
    io_uring_prep_poll_add(s, fd, mask);
  io_uring_sqe_set_data64(s, tag(op, fd, gen));
}

void poll_close(Conn& c) {
  // The poll holds a file reference: remove it, or the socket outlives close().
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_remove(s, tag(kPollIn, c.fd, c.gen));
  io_uring_sqe_set_data64(s, tag(kIgnore, 0, 0));
  if (c.pollout_armed) {
    s = sqe();
    io_uring_prep_poll_remove(s, tag(kPollOut, c.fd, c.gen));
    io_uring_sqe_set_data64(s, tag(kIgnore, 0, 0));
  }
  close_conn(c);
}

// Same logic as epoll_echo: read until EAGAIN, write back, park what does not fit.
bool poll_readable(Conn& c) {
  for (;;) {
    if (!c.out.empty()) return true;
    ssize_t r = ::read(c.fd, rw_buf, sizeof rw_buf);
    if (r > 0) {
      const char* p = rw_buf;
      size_t n = size_t(r);
      while (n > 0) {
        ssize_t w = ::write(c.fd, p, n);
        if (w < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) break;
          return false;
        }
        p += w;
        n -= size_t(w);
      }
      if (n > 0) {
        c.out.insert(c.out.end(), p, p + n);
        if (!c.pollout_armed) {
          arm_poll(c.fd, c.gen, POLLOUT, kPollOut, false);
          c.pollout_armed = true;
        }
      }
      continue;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN;
  }
}

void poll_cqe(const io_uring_cqe* cqe) {
  uint64_t u = cqe->user_data;
  bool more = cqe->flags & IORING_CQE_F_MORE;
  switch (tag_op(u)) {
    case kAccept:  // readiness of the listening socket
      for (;;) {
        int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          break;
        }
        set_nodelay(cfd);
        Conn& c = conn_for(cfd);
        arm_poll(cfd, c.gen, POLLIN | POLLRDHUP, kPollIn, true);
      }
      if (!more) arm_poll(lfd, 0, POLLIN, kAccept, true);
      return;
    case kPollIn: {
      Conn& c = conns[tag_fd(u)];
      if (!c.live || c.gen != tag_gen(u)) return;
      if (cqe->res < 0 || !poll_readable(c)) {
        poll_close(c);
        return;
      }
      if (!more) arm_poll(c.fd, c.gen, POLLIN | POLLRDHUP, kPollIn, true);
      return;
    }
    case kPollOut: {
      Conn& c = conns[tag_fd(u)];
      if (!c.live || c.gen != tag_gen(u)) return;
      c.pollout_armed = false;
      while (c.out_off < c.out.size()) {
        ssize_t w = ::write(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off);
        if (w < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN) break;
          poll_close(c);
          return;
        }
        c.out_off += size_t(w);
      }
      if (c.out_off < c.out.size()) {
        arm_poll(c.fd, c.gen, POLLOUT, kPollOut, false);
        c.pollout_armed = true;
        return;
      }
      c.out.clear();
      c.out_off = 0;
      if (!poll_readable(c)) poll_close(c);  // the readiness that arrived meanwhile
      return;
    }
    default:
      return;
  }
}

void init_ring() {
  const unsigned tries[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_COOP_TASKRUN,
      0,
  };
  for (unsigned flags : tries) {
    io_uring_params p{};
    p.flags = flags | IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    int rc = io_uring_queue_init_params(4096, &ring, &p);
    if (rc == 0) {
      std::fprintf(stderr, "uring_echo: setup flags 0x%x, features 0x%x\n", p.flags, p.features);
      io_uring_register_ring_fd(&ring);  // fails harmlessly on old kernels
      return;
    }
    if (rc != -EINVAL) die("io_uring_queue_init_params", -rc);
  }
  die("io_uring_queue_init_params", EINVAL);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  bool poll_mode = argc > 2 && std::string_view(argv[2]) == "poll";
  lfd = listen_on(port_arg(argc, argv));
  init_ring();
  if (poll_mode) {
    arm_poll(lfd, 0, POLLIN, kAccept, true);
  } else {
    setup_buf_ring();
    arm_accept();
  }
  for (;;) {
    int rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) die("io_uring_submit_and_wait", -rc);
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      if (poll_mode)
        poll_cqe(cqe);
      else
        ring_cqe(cqe);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }
}
