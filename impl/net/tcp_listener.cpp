// TcpListener (modules/net/tcp_listener.cppm): bind, listen, accept4.
module;
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>
module karx.net;
import karx.waker;
import karx.task;
import karx.netpoll;

namespace karx::net {

using detail::net::Direction;

TcpListener TcpListener::bind(std::string host, std::uint16_t port, int backlog) {
  const std::vector<detail::net::Endpoint> addresses = detail::net::resolve_now(host, port, SOCK_STREAM);
  const std::string what = "karx::net::TcpListener::bind to " + host + ":" + std::to_string(port);
  int last_error = 0;
  for (const detail::net::Endpoint& at : addresses) {
    detail::net::Socket s = detail::net::Socket::open(at.family(), SOCK_STREAM);
    const int fd = s.fd("bind");
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, at.get(), at.length) != 0 || ::listen(fd, backlog) != 0) {
      last_error = errno;
      continue;  // `s` closes
    }
    return TcpListener(std::move(s));
  }
  throw std::system_error(last_error, std::generic_category(), what);
}

std::uint16_t TcpListener::local_port() const {
  return detail::net::local_port_of(socket_.fd("karx::net::TcpListener::local_port"));
}

TcpListener::Accept::~Accept() {
  if (listener_ != nullptr && parked_) listener_->socket_.forget(Direction::read, this);
}

Poll<TcpStream> TcpListener::Accept::poll(Context& cx) {
  if (listener_ == nullptr) throw std::logic_error("karx::net::TcpListener::accept: polled after it was moved from");
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = listener_->socket_;
  const int fd = s.fd("karx::net::TcpListener::accept");
  for (;;) {
    const ssize_t r = s.io(Direction::read, cx, this, parked_, "karx::net::TcpListener::accept", [&]() -> ssize_t {
      const int c = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      // A connection reset before we took it: not our error, take the next one.
      if (c < 0 && errno == ECONNABORTED) errno = EINTR;
      return c;
    });
    if (r < 0) return pending;
    return Poll<TcpStream>::ready(TcpStream(detail::net::Socket::adopt(static_cast<int>(r))));
  }
}

}  // namespace karx::net
