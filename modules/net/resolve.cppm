// Address resolution: `host` is an IPv4 or IPv6 literal (parsed here, at once) or a name,
// which getaddrinfo resolves on the blocking pool (the current runtime's, else the global
// runtime's), never on a worker. Internal to karx.net.
module;
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
export module karx.net:resolve;
import karx.waker;
import karx.task;

export namespace karx::detail::net {

struct Endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  int family() const noexcept { return address.ss_family; }
  const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&address); }
};

// A numeric IPv4 or IPv6 address (no name lookup), or nullopt if `host` is not one.
std::optional<Endpoint> parse_literal(const std::string& host, std::uint16_t port);
// getaddrinfo, on the calling thread: the addresses in its order. Throws std::system_error
// (std::errc::invalid_argument, with getaddrinfo's message) if the name does not resolve.
std::vector<Endpoint> resolve_here(const std::string& host, std::uint16_t port, int socktype);
// For the synchronous binds: a literal at once; a name on the blocking pool, waited for here
// (inside a task the worker runs other tasks meanwhile: karx::block_on), or outside a runtime
// on the calling thread, which blocks in bind anyway.
std::vector<Endpoint> resolve_now(const std::string& host, std::uint16_t port, int socktype);

// The asynchronous resolution behind connect and send_to: a Future of the addresses.
class Resolve {
 public:
  Resolve(std::string host, std::uint16_t port, int socktype);
  Resolve(Resolve&&) noexcept = default;
  Resolve& operator=(Resolve&&) noexcept = default;
  ~Resolve() = default;  // a JoinHandle detaches: the lookup finishes on its own, unseen
  Poll<std::vector<Endpoint>> poll(Context& cx);

 private:
  std::optional<Endpoint> literal_;
  std::optional<JoinHandle<std::vector<Endpoint>>> lookup_;
  std::string host_;
};

}  // namespace karx::detail::net
