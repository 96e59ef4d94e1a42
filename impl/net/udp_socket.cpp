// UdpSocket (modules/net/udp_socket.cppm): bind, sendto, recvfrom.
module;
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
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

UdpSocket UdpSocket::bind(std::string host, std::uint16_t port) {
  const std::vector<detail::net::Endpoint> addresses = detail::net::resolve_now(host, port, SOCK_DGRAM);
  int last_error = 0;
  for (const detail::net::Endpoint& at : addresses) {
    detail::net::Socket s = detail::net::Socket::open(at.family(), SOCK_DGRAM);
    if (::bind(s.fd("bind"), at.get(), at.length) != 0) {
      last_error = errno;
      continue;
    }
    return UdpSocket(std::move(s), at.family());
  }
  throw std::system_error(last_error, std::generic_category(),
                          "karx::net::UdpSocket::bind to " + host + ":" + std::to_string(port));
}

std::uint16_t UdpSocket::local_port() const {
  return detail::net::local_port_of(socket_.fd("karx::net::UdpSocket::local_port"));
}

UdpSocket::SendTo::SendTo(UdpSocket& s, std::span<const std::byte> buf, std::string host, std::uint16_t port)
    : socket_(&s), buf_(buf), resolve_(std::move(host), port, SOCK_DGRAM) {}

UdpSocket::SendTo::SendTo(SendTo&& o) noexcept
    : socket_(o.socket_), buf_(o.buf_), resolve_(std::move(o.resolve_)), to_(o.to_) {
  o.socket_ = nullptr;
}

UdpSocket::SendTo::~SendTo() {
  if (socket_ != nullptr && parked_) socket_->socket_.forget(Direction::write, this);
}

Poll<std::size_t> UdpSocket::SendTo::poll(Context& cx) {
  if (socket_ == nullptr) throw std::logic_error("karx::net::UdpSocket::send_to: polled after it was moved from");
  if (!to_) {
    auto p = resolve_.poll(cx);
    if (p.is_pending()) return pending;
    // The first address of the socket's family.
    for (const detail::net::Endpoint& e : p.value())
      if (e.family() == socket_->family_) {
        to_ = e;
        break;
      }
    if (!to_)
      throw std::system_error(EAFNOSUPPORT, std::generic_category(),
                              "karx::net::UdpSocket::send_to: the host has no address of the socket's family");
  }
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = socket_->socket_;
  const int fd = s.fd("karx::net::UdpSocket::send_to");
  const ssize_t n = s.io(Direction::write, cx, this, parked_, "karx::net::UdpSocket::send_to",
                         [&] { return ::sendto(fd, buf_.data(), buf_.size(), MSG_NOSIGNAL, to_->get(), to_->length); });
  if (n < 0) return pending;
  return Poll<std::size_t>::ready(static_cast<std::size_t>(n));
}

UdpSocket::RecvFrom::~RecvFrom() {
  if (socket_ != nullptr && parked_) socket_->socket_.forget(Direction::read, this);
}

Poll<std::pair<std::size_t, std::uint16_t>> UdpSocket::RecvFrom::poll(Context& cx) {
  if (socket_ == nullptr) throw std::logic_error("karx::net::UdpSocket::recv_from: polled after it was moved from");
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = socket_->socket_;
  const int fd = s.fd("karx::net::UdpSocket::recv_from");
  sockaddr_storage from{};
  const ssize_t n = s.io(Direction::read, cx, this, parked_, "karx::net::UdpSocket::recv_from", [&] {
    socklen_t len = sizeof from;
    return ::recvfrom(fd, buf_.data(), buf_.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
  });
  if (n < 0) return pending;
  std::uint16_t port = 0;
  if (from.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in&>(from).sin_port);
  if (from.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6&>(from).sin6_port);
  return Poll<std::pair<std::size_t, std::uint16_t>>::ready({static_cast<std::size_t>(n), port});
}

}  // namespace karx::net
