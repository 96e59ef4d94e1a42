// Address resolution for karx.net (modules/net/resolve.cppm).
module;
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>
module karx.net;
import karx.waker;
import karx.task;
import karx.executor;

namespace karx::detail::net {

std::optional<Endpoint> parse_literal(const std::string& host, std::uint16_t port) {
  Endpoint e;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&e.address);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    e.length = sizeof(sockaddr_in);
    return e;
  }
  e = Endpoint{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.address);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    e.length = sizeof(sockaddr_in6);
    return e;
  }
  return std::nullopt;
}

std::vector<Endpoint> resolve_here(const std::string& host, std::uint16_t port, int socktype) {
  if (auto e = parse_literal(host, port)) return {*e};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  const std::string service = std::to_string(port);
  int rc = host.empty() ? EAI_NONAME : ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  if (rc == EAI_NONAME || rc == EAI_ADDRFAMILY) {
    // AI_ADDRCONFIG hides loopback-only names on a machine with no other address: ask again.
    hints.ai_flags = 0;
    if (!host.empty()) rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  }
  if (rc != 0) {
    const std::string why = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "karx::net: cannot resolve host \"" + host + "\": " + why);
  }
  std::vector<Endpoint> out;
  try {
    for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
      if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
      Endpoint e;
      std::memcpy(&e.address, a->ai_addr, a->ai_addrlen);
      e.length = a->ai_addrlen;
      out.push_back(e);
    }
  } catch (...) {
    ::freeaddrinfo(list);
    throw;
  }
  ::freeaddrinfo(list);
  if (out.empty())
    throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                            "karx::net: host \"" + host + "\" has no usable address");
  return out;
}

std::vector<Endpoint> resolve_now(const std::string& host, std::uint16_t port, int socktype) {
  if (auto e = parse_literal(host, port)) return {*e};
  if (karx::Runtime* rt = karx::Runtime::current()) {
    auto handle = rt->spawn_blocking([host, port, socktype] { return resolve_here(host, port, socktype); });
    auto result = karx::block_on(std::move(handle));
    if (!result)
      throw std::system_error(ECANCELED, std::generic_category(),
                              "karx::net: the runtime shut down while resolving \"" + host + "\"");
    return std::move(*result);
  }
  return resolve_here(host, port, socktype);
}

Resolve::Resolve(std::string host, std::uint16_t port, int socktype) : host_(std::move(host)) {
  literal_ = parse_literal(host_, port);
  if (literal_) return;
  karx::Runtime* rt = karx::Runtime::current();
  karx::Runtime& pool = rt != nullptr ? *rt : karx::global_runtime();
  lookup_.emplace(pool.spawn_blocking([h = host_, port, socktype] { return resolve_here(h, port, socktype); }));
}

Poll<std::vector<Endpoint>> Resolve::poll(Context& cx) {
  if (literal_) return Poll<std::vector<Endpoint>>::ready(std::vector<Endpoint>{*literal_});
  auto p = lookup_->poll(cx);  // rethrows resolve_here's exception
  if (p.is_pending()) return pending;
  auto result = std::move(p).value();
  if (!result)
    throw std::system_error(ECANCELED, std::generic_category(),
                            "karx::net: the runtime shut down while resolving \"" + host_ + "\"");
  return Poll<std::vector<Endpoint>>::ready(std::move(*result));
}

}  // namespace karx::detail::net
