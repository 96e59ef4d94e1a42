// TcpStream: a connected TCP socket. Its operations are futures that borrow the stream (it
// must outlive them and not move while one is pending); at most one read-side (read,
// read_exact) and one write-side (write, write_all) operation may be pending at once, from
// any tasks (a second one of the same side throws std::logic_error). Destroying a pending
// operation cancels it: nothing is lost but what it had already transferred (write_all and
// read_exact then leave the stream mid-message).
module;
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>
export module karx.net:tcp_stream;
import karx.waker;
import :socket;
import :resolve;

export namespace karx::net {

class TcpStream {
 public:
  class Connect;
  class Read;
  class ReadExact;
  class Write;
  class WriteAll;

  // Connects to `host` (a literal or a name, resolved on the blocking pool) at `port`: each
  // resolved address in turn until one accepts; throws the last address's error
  // (std::system_error, e.g. std::errc::connection_refused).
  static Connect connect(std::string host, std::uint16_t port);

  // Reads what is there (at most buf.size() bytes, at least 1 unless buf is empty), waiting
  // for data if there is none. 0: the peer closed its side. A reset throws std::system_error
  // (std::errc::connection_reset).
  Read read(std::span<std::byte> buf);
  // Fills `buf` completely; throws std::system_error (std::errc::connection_aborted) if the
  // peer closes first.
  ReadExact read_exact(std::span<std::byte> buf);
  // Writes what the socket takes now (at least 1 byte unless buf is empty), waiting for room.
  Write write(std::span<const std::byte> buf);
  // Writes all of `buf`, across as many partial writes as it takes.
  WriteAll write_all(std::span<const std::byte> buf);

  void shutdown_write();  // the peer's reads then return 0 once drained
  void set_nodelay(bool on);
  std::uint16_t local_port() const;
  std::uint16_t peer_port() const;

  TcpStream(TcpStream&&) noexcept = default;
  TcpStream& operator=(TcpStream&&) noexcept = default;
  ~TcpStream() = default;  // closes the socket

  // Internal: a connected socket (connect's and accept's result).
  explicit TcpStream(detail::net::Socket socket) noexcept : socket_(std::move(socket)) {}

 private:
  detail::net::Socket socket_;
};

// Future<TcpStream>.
class TcpStream::Connect {
 public:
  Connect(std::string host, std::uint16_t port);
  Connect(Connect&&) noexcept;
  Connect& operator=(Connect&&) = delete;
  ~Connect();
  Poll<TcpStream> poll(Context& cx);

 private:
  std::string host_;
  std::uint16_t port_;
  std::optional<detail::net::Resolve> resolve_;  // made at the first poll
  std::vector<detail::net::Endpoint> addresses_;
  std::size_t next_ = 0;
  int last_error_ = 0;
  detail::net::Socket socket_;  // the attempt in progress
  bool resolved_ = false;
};

// Future<std::size_t>.
class TcpStream::Read {
 public:
  Read(TcpStream& s, std::span<std::byte> buf) noexcept : stream_(&s), buf_(buf) {}
  Read(Read&& o) noexcept : stream_(o.stream_), buf_(o.buf_) { o.stream_ = nullptr; }
  Read& operator=(Read&&) = delete;
  ~Read();
  Poll<std::size_t> poll(Context& cx);

 private:
  TcpStream* stream_;
  std::span<std::byte> buf_;
  bool parked_ = false;  // see Socket::io
};

// Future<void>.
class TcpStream::ReadExact {
 public:
  ReadExact(TcpStream& s, std::span<std::byte> buf) noexcept : stream_(&s), buf_(buf) {}
  ReadExact(ReadExact&& o) noexcept : stream_(o.stream_), buf_(o.buf_), done_(o.done_) { o.stream_ = nullptr; }
  ReadExact& operator=(ReadExact&&) = delete;
  ~ReadExact();
  Poll<void> poll(Context& cx);

 private:
  TcpStream* stream_;
  std::span<std::byte> buf_;
  std::size_t done_ = 0;
  bool parked_ = false;
};

// Future<std::size_t>.
class TcpStream::Write {
 public:
  Write(TcpStream& s, std::span<const std::byte> buf) noexcept : stream_(&s), buf_(buf) {}
  Write(Write&& o) noexcept : stream_(o.stream_), buf_(o.buf_) { o.stream_ = nullptr; }
  Write& operator=(Write&&) = delete;
  ~Write();
  Poll<std::size_t> poll(Context& cx);

 private:
  TcpStream* stream_;
  std::span<const std::byte> buf_;
  bool parked_ = false;
};

// Future<void>.
class TcpStream::WriteAll {
 public:
  WriteAll(TcpStream& s, std::span<const std::byte> buf) noexcept : stream_(&s), buf_(buf) {}
  WriteAll(WriteAll&& o) noexcept : stream_(o.stream_), buf_(o.buf_), done_(o.done_) { o.stream_ = nullptr; }
  WriteAll& operator=(WriteAll&&) = delete;
  ~WriteAll();
  Poll<void> poll(Context& cx);

 private:
  TcpStream* stream_;
  std::span<const std::byte> buf_;
  std::size_t done_ = 0;
  bool parked_ = false;
};

inline TcpStream::Connect TcpStream::connect(std::string host, std::uint16_t port) {
  return Connect(std::move(host), port);
}
inline TcpStream::Read TcpStream::read(std::span<std::byte> buf) { return Read(*this, buf); }
inline TcpStream::ReadExact TcpStream::read_exact(std::span<std::byte> buf) { return ReadExact(*this, buf); }
inline TcpStream::Write TcpStream::write(std::span<const std::byte> buf) { return Write(*this, buf); }
inline TcpStream::WriteAll TcpStream::write_all(std::span<const std::byte> buf) { return WriteAll(*this, buf); }

}  // namespace karx::net
