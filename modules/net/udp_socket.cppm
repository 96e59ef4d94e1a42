// UdpSocket: a bound UDP socket. send_to and recv_from are futures that borrow the socket;
// one of each may be pending at a time.
module;
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
export module karx.net:udp_socket;
import karx.waker;
import :socket;
import :resolve;

export namespace karx::net {

class UdpSocket {
 public:
  class SendTo;
  class RecvFrom;

  // Binds to `host` (a literal or a name) and `port` (0: any free port). The socket's address
  // family is the bound address's: send to addresses of the same family. Throws
  // std::system_error.
  static UdpSocket bind(std::string host, std::uint16_t port);
  // Sends one datagram to `host`:`port` (Future<std::size_t>: the bytes sent, all of buf).
  SendTo send_to(std::span<const std::byte> buf, std::string host, std::uint16_t port);
  // Receives one datagram (Future<std::pair<std::size_t, std::uint16_t>>: its size, cut to
  // buf.size(), and the sender's port).
  RecvFrom recv_from(std::span<std::byte> buf);
  std::uint16_t local_port() const;

  UdpSocket(UdpSocket&&) noexcept = default;
  UdpSocket& operator=(UdpSocket&&) noexcept = default;
  ~UdpSocket() = default;  // closes the socket

 private:
  UdpSocket(detail::net::Socket s, int family) noexcept : socket_(std::move(s)), family_(family) {}
  detail::net::Socket socket_;
  int family_ = 0;
};

class UdpSocket::SendTo {
 public:
  SendTo(UdpSocket& s, std::span<const std::byte> buf, std::string host, std::uint16_t port);
  SendTo(SendTo&& o) noexcept;
  SendTo& operator=(SendTo&&) = delete;
  ~SendTo();
  Poll<std::size_t> poll(Context& cx);

 private:
  UdpSocket* socket_;
  std::span<const std::byte> buf_;
  detail::net::Resolve resolve_;
  std::optional<detail::net::Endpoint> to_;
  bool parked_ = false;  // see Socket::io
};

class UdpSocket::RecvFrom {
 public:
  RecvFrom(UdpSocket& s, std::span<std::byte> buf) noexcept : socket_(&s), buf_(buf) {}
  RecvFrom(RecvFrom&& o) noexcept : socket_(o.socket_), buf_(o.buf_) { o.socket_ = nullptr; }
  RecvFrom& operator=(RecvFrom&&) = delete;
  ~RecvFrom();
  Poll<std::pair<std::size_t, std::uint16_t>> poll(Context& cx);

 private:
  UdpSocket* socket_;
  std::span<std::byte> buf_;
  bool parked_ = false;
};

inline UdpSocket::SendTo UdpSocket::send_to(std::span<const std::byte> buf, std::string host, std::uint16_t port) {
  return SendTo(*this, buf, std::move(host), port);
}
inline UdpSocket::RecvFrom UdpSocket::recv_from(std::span<std::byte> buf) { return RecvFrom(*this, buf); }

}  // namespace karx::net
