// TcpListener: a listening TCP socket. accept() is a future that borrows the listener; one
// accept may be pending at a time.
module;
#include <cstdint>
#include <string>
export module karx.net:tcp_listener;
import karx.waker;
import :socket;
import :tcp_stream;

export namespace karx::net {

class TcpListener {
 public:
  class Accept;

  // Binds to `host` (a literal such as "127.0.0.1", "::1", "0.0.0.0", or a name) and `port`
  // (0: any free port, see local_port()) and listens. SO_REUSEADDR is set (a restarted
  // server can bind while old connections linger in TIME_WAIT). Throws std::system_error,
  // e.g. std::errc::address_in_use.
  static TcpListener bind(std::string host, std::uint16_t port, int backlog = 1024);
  std::uint16_t local_port() const;
  // The next incoming connection (Future<TcpStream>).
  Accept accept();

  TcpListener(TcpListener&&) noexcept = default;
  TcpListener& operator=(TcpListener&&) noexcept = default;
  ~TcpListener() = default;  // closes the socket

 private:
  explicit TcpListener(detail::net::Socket s) noexcept : socket_(std::move(s)) {}
  detail::net::Socket socket_;
};

class TcpListener::Accept {
 public:
  explicit Accept(TcpListener& l) noexcept : listener_(&l) {}
  Accept(Accept&& o) noexcept : listener_(o.listener_) { o.listener_ = nullptr; }
  Accept& operator=(Accept&&) = delete;
  ~Accept();
  Poll<TcpStream> poll(Context& cx);

 private:
  TcpListener* listener_;
  bool parked_ = false;  // see Socket::io
};

inline TcpListener::Accept TcpListener::accept() { return Accept(*this); }

}  // namespace karx::net
