// karx.net's Socket (modules/net/socket.cppm): opening, registering, parking, closing.
module;
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
module karx.net;
import karx.waker;
import karx.executor;
import karx.netpoll;

namespace karx::detail::net {

void throw_errno(int err, const char* what) { throw std::system_error(err, std::generic_category(), what); }

namespace {
// The netpoller for a socket made now: the current runtime's, else the standalone reactor's.
// Returned with a reference that the caller gives back (the registration holds its own).
Poller& poller_for_new_socket() {
  if (Poller* p = runtime_poller(karx::Runtime::current())) return *p;
  Poller& reactor = reactor_poller();
  reactor.acquire();
  return reactor;
}

IoRegistration* register_fd(int fd) {
  Poller& poller = poller_for_new_socket();
  IoRegistration* reg = nullptr;
  try {
    reg = poller.add(fd);
  } catch (...) {
    poller.release();
    throw;
  }
  poller.release();  // the registration holds its own reference
  return reg;
}
}  // namespace

Socket Socket::open(int family, int type) {
  const int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw_errno(errno, "karx::net: socket");
  return adopt(fd);
}

Socket Socket::adopt(int fd) {
  try {
    return Socket(fd, register_fd(fd));
  } catch (...) {
    ::close(fd);
    throw;
  }
}

int Socket::fd(const char* who) const {
  if (fd_ < 0) throw std::logic_error(std::string(who) + ": the socket was moved from");
  return fd_;
}

void Socket::close() noexcept {
  if (fd_ < 0) return;
  // Out of the epoll set first (remove), then close: the fd number may be reused at once.
  reg_->poller->remove(reg_);
  ::close(fd_);
  fd_ = -1;
  reg_ = nullptr;
}

bool Socket::park(Direction d, Tick seen, Context& cx, const void* owner) {
  Readiness& r = reg_->of(d);
  if (!r.park(seen, cx.waker(), owner)) return false;
  // After parking: Poller::close stores closed_ and then takes this Readiness's lock to wake
  // us; if its wake came before our park, our park's lock came after its and we see closed_.
  if (reg_->poller->is_closed()) {
    r.forget(owner);
    throw std::system_error(ECANCELED, std::generic_category(),
                            "karx::net: the runtime whose netpoller this socket uses was destroyed");
  }
  return true;
}

namespace {
std::uint16_t port_of(const sockaddr_storage& a) noexcept {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}
}  // namespace

std::uint16_t local_port_of(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) throw_errno(errno, "karx::net: getsockname");
  return port_of(a);
}

std::uint16_t peer_port_of(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) throw_errno(errno, "karx::net: getpeername");
  return port_of(a);
}

}  // namespace karx::detail::net
