// TcpStream's futures (modules/net/tcp_stream.cppm).
module;
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <utility>
module karx.net;
import karx.waker;
import karx.task;
import karx.netpoll;

namespace karx::net {

using detail::net::Direction;

// --- connect: non-blocking connect, wait until writable, then SO_ERROR -------------------------

TcpStream::Connect::Connect(std::string host, std::uint16_t port) : host_(std::move(host)), port_(port) {}

TcpStream::Connect::Connect(Connect&& o) noexcept
    : host_(std::move(o.host_)),
      port_(o.port_),
      resolve_(std::move(o.resolve_)),
      addresses_(std::move(o.addresses_)),
      next_(o.next_),
      last_error_(o.last_error_),
      socket_(std::move(o.socket_)),
      resolved_(o.resolved_) {}

TcpStream::Connect::~Connect() { socket_.forget(Direction::write, this); }

Poll<TcpStream> TcpStream::Connect::poll(Context& cx) {
  if (!resolved_) {
    if (!resolve_) resolve_.emplace(host_, port_, SOCK_STREAM);
    auto p = resolve_->poll(cx);
    if (p.is_pending()) return pending;
    addresses_ = std::move(p).value();
    resolve_.reset();
    resolved_ = true;
  }
  for (;;) {
    if (!socket_.valid()) {
      if (next_ >= addresses_.size()) {
        const std::string what = "karx::net::TcpStream::connect to " + host_ + ":" + std::to_string(port_);
        throw std::system_error(last_error_ != 0 ? last_error_ : ECONNREFUSED, std::generic_category(), what);
      }
      const detail::net::Endpoint& to = addresses_[next_++];
      socket_ = detail::net::Socket::open(to.family(), SOCK_STREAM);
      int rc;
      do rc = ::connect(socket_.fd("connect"), to.get(), to.length);
      while (rc != 0 && errno == EINTR);
      if (rc == 0) return Poll<TcpStream>::ready(TcpStream(std::move(socket_)));
      if (errno != EINPROGRESS) {
        last_error_ = errno;
        socket_.close();
        continue;
      }
    }
    // In progress: done once writable. A writable event may be stale (the registration is
    // reused, or came before connect), so the connection itself is asked: SO_ERROR says it
    // failed, getpeername that it is established, ENOTCONN that it is still on its way.
    const detail::net::Tick seen = socket_.ticks(Direction::write);
    const int fd = socket_.fd("connect");
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      last_error_ = err;
      socket_.forget(Direction::write, this);
      socket_.close();
      continue;
    }
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
      socket_.forget(Direction::write, this);
      return Poll<TcpStream>::ready(TcpStream(std::move(socket_)));
    }
    if (errno != ENOTCONN) detail::net::throw_errno(errno, "karx::net::TcpStream::connect: getpeername");
    if (socket_.park(Direction::write, seen, cx, this)) return pending;
  }
}

// --- read, read_exact --------------------------------------------------------------------------

namespace {
ssize_t recv_some(int fd, std::span<std::byte> buf) noexcept { return ::recv(fd, buf.data(), buf.size(), 0); }
ssize_t send_some(int fd, std::span<const std::byte> buf) noexcept {
  return ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);  // no SIGPIPE: EPIPE instead
}
void check_stream(const TcpStream* s, const char* who) {
  if (s == nullptr) throw std::logic_error(std::string(who) + ": polled after it was moved from");
}
}  // namespace

TcpStream::Read::~Read() {
  if (stream_ != nullptr && parked_) stream_->socket_.forget(Direction::read, this);
}

Poll<std::size_t> TcpStream::Read::poll(Context& cx) {
  check_stream(stream_, "karx::net::TcpStream::read");
  if (!detail::coop_proceed(cx)) return pending;  // the task's turn is spent (karx.task's coop)
  detail::net::Socket& s = stream_->socket_;
  const int fd = s.fd("karx::net::TcpStream::read");
  const ssize_t n = s.stream_io(Direction::read, cx, this, parked_, "karx::net::TcpStream::read", buf_.size(),
                                [&] { return recv_some(fd, buf_); });
  if (n < 0) return pending;
  return Poll<std::size_t>::ready(static_cast<std::size_t>(n));
}

TcpStream::ReadExact::~ReadExact() {
  if (stream_ != nullptr && parked_) stream_->socket_.forget(Direction::read, this);
}

Poll<void> TcpStream::ReadExact::poll(Context& cx) {
  check_stream(stream_, "karx::net::TcpStream::read_exact");
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = stream_->socket_;
  const int fd = s.fd("karx::net::TcpStream::read_exact");
  while (done_ < buf_.size()) {
    const ssize_t n = s.stream_io(Direction::read, cx, this, parked_, "karx::net::TcpStream::read_exact",
                                  buf_.size() - done_, [&] { return recv_some(fd, buf_.subspan(done_)); });
    if (n < 0) return pending;
    if (n == 0)
      throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                              "karx::net::TcpStream::read_exact: the peer closed the connection after " +
                                  std::to_string(done_) + " of " + std::to_string(buf_.size()) + " bytes");
    done_ += static_cast<std::size_t>(n);
  }
  return ready();
}

// --- write, write_all --------------------------------------------------------------------------

TcpStream::Write::~Write() {
  if (stream_ != nullptr && parked_) stream_->socket_.forget(Direction::write, this);
}

Poll<std::size_t> TcpStream::Write::poll(Context& cx) {
  check_stream(stream_, "karx::net::TcpStream::write");
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = stream_->socket_;
  const int fd = s.fd("karx::net::TcpStream::write");
  const ssize_t n = s.stream_io(Direction::write, cx, this, parked_, "karx::net::TcpStream::write", buf_.size(),
                                [&] { return send_some(fd, buf_); });
  if (n < 0) return pending;
  return Poll<std::size_t>::ready(static_cast<std::size_t>(n));
}

TcpStream::WriteAll::~WriteAll() {
  if (stream_ != nullptr && parked_) stream_->socket_.forget(Direction::write, this);
}

Poll<void> TcpStream::WriteAll::poll(Context& cx) {
  check_stream(stream_, "karx::net::TcpStream::write_all");
  if (!detail::coop_proceed(cx)) return pending;
  detail::net::Socket& s = stream_->socket_;
  const int fd = s.fd("karx::net::TcpStream::write_all");
  // Partial writes (the send buffer is full) continue here, after a wait for room.
  while (done_ < buf_.size()) {
    const ssize_t n = s.stream_io(Direction::write, cx, this, parked_, "karx::net::TcpStream::write_all",
                                  buf_.size() - done_, [&] { return send_some(fd, buf_.subspan(done_)); });
    if (n < 0) return pending;
    done_ += static_cast<std::size_t>(n);
  }
  return ready();
}

// --- the rest ----------------------------------------------------------------------------------

void TcpStream::shutdown_write() {
  if (::shutdown(socket_.fd("karx::net::TcpStream::shutdown_write"), SHUT_WR) != 0)
    detail::net::throw_errno(errno, "karx::net::TcpStream::shutdown_write");
}

void TcpStream::set_nodelay(bool on) {
  const int v = on ? 1 : 0;
  if (::setsockopt(socket_.fd("karx::net::TcpStream::set_nodelay"), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0)
    detail::net::throw_errno(errno, "karx::net::TcpStream::set_nodelay");
}

std::uint16_t TcpStream::local_port() const {
  return detail::net::local_port_of(socket_.fd("karx::net::TcpStream::local_port"));
}
std::uint16_t TcpStream::peer_port() const {
  return detail::net::peer_port_of(socket_.fd("karx::net::TcpStream::peer_port"));
}

}  // namespace karx::net
