// karx.net UDP on loopback: round trips over 127.0.0.1 and ::1, on a runtime and on a plain
// thread (the standalone reactor).
#include <gtest/gtest.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include "net/net_support.hpp"

namespace {

using namespace std::chrono_literals;
using karx::net::UdpSocket;
using nettest::bytes;
using nettest::text;

karx::Async<> ping_pong(std::string host, int rounds) {
  UdpSocket a = UdpSocket::bind(host, 0);
  UdpSocket b = UdpSocket::bind(host, 0);
  EXPECT_NE(a.local_port(), 0);
  for (int i = 0; i < rounds; ++i) {
    const std::string msg = "datagram " + std::to_string(i);
    EXPECT_EQ(co_await a.send_to(bytes(msg), host, b.local_port()), msg.size());
    std::byte buf[100];
    auto [n, from] = co_await b.recv_from(buf);
    EXPECT_EQ(text(std::span(buf, n)), msg);
    EXPECT_EQ(from, a.local_port());
    co_await b.send_to(std::span(buf, n), host, from);  // echo back
    auto [m, from_b] = co_await a.recv_from(buf);
    EXPECT_EQ(m, msg.size());
    EXPECT_EQ(from_b, b.local_port());
  }
}

TEST(NetUdp, RoundTripsOverIpv4LoopbackOnARuntime) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, ping_pong("127.0.0.1", 100));
}

TEST(NetUdp, RoundTripsOverIpv6LoopbackOnARuntime) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, ping_pong("::1", 100));
}

TEST(NetUdp, RoundTripsOnAPlainThreadThroughTheReactor) {
  auto done = karx::block_on(karx::timeout(10s, ping_pong("127.0.0.1", 50)));
  EXPECT_TRUE(done);
}

TEST(NetUdp, ADatagramLongerThanTheBufferIsCut) {
  auto done = karx::block_on(karx::timeout(10s, []() -> karx::Async<> {
    UdpSocket a = UdpSocket::bind("127.0.0.1", 0);
    UdpSocket b = UdpSocket::bind("127.0.0.1", 0);
    co_await a.send_to(bytes("0123456789"), "127.0.0.1", b.local_port());
    std::byte small[4];
    auto [n, from] = co_await b.recv_from(small);
    EXPECT_EQ(n, 4u);
    EXPECT_EQ(text(small), "0123");
    EXPECT_EQ(from, a.local_port());
  }()));
  EXPECT_TRUE(done);
}

TEST(NetUdp, SendingToTheOtherAddressFamilyIsAClearError) {
  auto done = karx::block_on(karx::timeout(10s, []() -> karx::Async<> {
    UdpSocket a = UdpSocket::bind("127.0.0.1", 0);
    EXPECT_THROW((void)co_await a.send_to(bytes("x"), "::1", 9), std::system_error);
  }()));
  EXPECT_TRUE(done);
}

}  // namespace
