// karx.net TCP on loopback (127.0.0.1 and ::1), on a karx::Runtime: accept/connect, echo,
// half-close, large transfers with partial writes, a peer that resets, cancellation of a
// pending read (by destroying it and by karx::timeout), and 1,000 concurrent connections with
// the process's open fds counted before and after. Every body runs under a deadline.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "net/net_support.hpp"

namespace {

using namespace std::chrono_literals;
using karx::net::TcpListener;
using karx::net::TcpStream;
using nettest::bytes;
using nettest::text;

// Accepts one connection and echoes it until the peer closes its side.
karx::Async<> echo_one(TcpListener& listener) {
  TcpStream s = co_await listener.accept();
  std::byte buf[4096];
  for (;;) {
    const std::size_t n = co_await s.read(buf);
    if (n == 0) break;
    co_await s.write_all(std::span(buf, n));
  }
}

void echo_round_trip(const std::string& host) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind(host, 0);
    const std::uint16_t port = listener.local_port();
    EXPECT_NE(port, 0);
    auto server = karx::exec(echo_one(listener));
    TcpStream c = co_await TcpStream::connect(host, port);
    EXPECT_EQ(c.peer_port(), port);
    EXPECT_NE(c.local_port(), 0);
    c.set_nodelay(true);
    for (int i = 0; i < 100; ++i) {
      const std::string msg = "hello " + std::to_string(i);
      co_await c.write_all(bytes(msg));
      std::vector<std::byte> back(msg.size());
      co_await c.read_exact(back);
      EXPECT_EQ(text(back), msg);
    }
    c.shutdown_write();
    EXPECT_TRUE(co_await server);  // the server saw the end and finished
  }());
}

TEST(NetTcp, AcceptConnectAndEchoOverIpv4Loopback) { echo_round_trip("127.0.0.1"); }
TEST(NetTcp, AcceptConnectAndEchoOverIpv6Loopback) { echo_round_trip("::1"); }
TEST(NetTcp, ConnectResolvesLocalhostOnTheBlockingPool) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    auto server = karx::exec(echo_one(listener));
    const std::uint64_t pool_before = rt.metrics().blocking_tasks;
    TcpStream c = co_await TcpStream::connect("localhost", listener.local_port());
    EXPECT_GT(rt.metrics().blocking_tasks, pool_before) << "the name was not resolved on the blocking pool";
    co_await c.write_all(bytes("abc"));
    std::byte back[3];
    co_await c.read_exact(back);
    EXPECT_EQ(text(back), "abc");
    c.shutdown_write();
    co_await server;
  }());
}

TEST(NetTcp, HalfCloseDeliversEndOfStreamAndKeepsTheOtherDirection) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    // The server reads everything until end of stream, then answers with the byte count.
    auto server = karx::exec([](TcpListener& l) -> karx::Async<std::size_t> {
      TcpStream s = co_await l.accept();
      std::size_t total = 0;
      std::byte buf[1000];
      for (std::size_t n; (n = co_await s.read(buf)) != 0;) total += n;
      const std::string reply = std::to_string(total);
      co_await s.write_all(bytes(reply));
      co_return total;
    }(listener));
    TcpStream c = co_await TcpStream::connect("127.0.0.1", listener.local_port());
    const auto data = nettest::pattern(10000);
    co_await c.write_all(data);
    c.shutdown_write();  // the server's read returns 0; our read side stays open
    std::string reply;
    std::byte buf[64];
    for (std::size_t n; (n = co_await c.read(buf)) != 0;) reply += text(std::span(buf, n));
    EXPECT_EQ(reply, "10000");
    EXPECT_EQ(*(co_await server), 10000u);
  }());
}

TEST(NetTcp, LargeTransfersCompleteAcrossPartialWrites) {
  karx::Runtime rt;
  nettest::run_within(rt, 30s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    constexpr std::size_t kSize = 32 << 20;  // far more than the socket buffers hold
    const auto data = nettest::pattern(kSize);
    // The server starts reading only after a while, so the writer fills the buffers first.
    auto server = karx::exec([](TcpListener& l, std::size_t size) -> karx::Async<std::vector<std::byte>> {
      TcpStream s = co_await l.accept();
      co_await karx::sleep_for(100ms);
      std::vector<std::byte> got(size);
      co_await s.read_exact(got);
      co_return got;
    }(listener, kSize));
    TcpStream c = co_await TcpStream::connect("127.0.0.1", listener.local_port());
    // One plain write first: it cannot take 32 MiB at once (a partial write).
    const std::size_t first = co_await c.write(data);
    EXPECT_GT(first, 0u);
    EXPECT_LT(first, kSize) << "expected a partial write";
    co_await c.write_all(std::span(data).subspan(first));  // completes the rest
    auto got = co_await server;
    EXPECT_TRUE(got && *got == data) << "the bytes arrived altered or incomplete";
  }());
}

TEST(NetTcp, APeerResetSurfacesAsConnectionReset) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    const std::uint16_t port = listener.local_port();
    std::thread peer([port] {
      const int fd = nettest::raw_connect(port);
      ASSERT_GE(fd, 0);
      std::this_thread::sleep_for(50ms);  // the server is waiting in read by now
      nettest::raw_reset(fd);
    });
    TcpStream s = co_await listener.accept();
    std::byte buf[16];
    try {
      (void)co_await s.read(buf);
      ADD_FAILURE() << "read after a reset did not throw";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
    }
    peer.join();
  }());
}

TEST(NetTcp, ReadExactThrowsWhenThePeerClosesEarly) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    auto client = karx::exec([](std::uint16_t port) -> karx::Async<> {
      TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
      co_await c.write_all(bytes("abc"));
    }(listener.local_port()));  // closes after 3 bytes
    TcpStream s = co_await listener.accept();
    std::byte buf[10];
    try {
      co_await s.read_exact(buf);
      ADD_FAILURE() << "read_exact did not throw at an early end of stream";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::connection_aborted) << e.what();
    }
    co_await client;
  }());
}

TEST(NetTcp, TimeoutCancelsAPendingReadAndLosesNothing) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    TcpStream c = co_await TcpStream::connect("127.0.0.1", listener.local_port());
    TcpStream s = co_await listener.accept();
    std::byte buf[8];
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await karx::timeout(50ms, s.read(buf));
    EXPECT_FALSE(r) << "the read completed with no data sent";
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
    // The canceled read left no waker behind: a new read gets the data sent now.
    co_await c.write_all(bytes("xy"));
    std::byte two[2];
    co_await s.read_exact(two);
    EXPECT_EQ(text(two), "xy");
  }());
}

TEST(NetTcp, WrongUseOfOneSocketThrowsLogicError) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    TcpStream c = co_await TcpStream::connect("127.0.0.1", listener.local_port());
    TcpStream s = co_await listener.accept();
    std::byte a[4], b[4];
    auto first = s.read(a);
    auto second = s.read(b);
    // Both pending at once: the second one to park is refused.
    auto both = karx::when_all(std::move(first), std::move(second));
    EXPECT_THROW((void)co_await std::move(both), std::logic_error);
    TcpStream moved = std::move(s);
    EXPECT_THROW((void)co_await s.read(a), std::logic_error);  // NOLINT: use after move, on purpose
    co_await c.write_all(bytes("ok!!"));
    co_await moved.read_exact(a);
    EXPECT_EQ(text(a), "ok!!");
  }());
}

TEST(NetTcp, ErrorsAreSystemErrorsWithTheErrno) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    const std::uint16_t port = listener.local_port();
    try {
      (void)TcpListener::bind("127.0.0.1", port);
      ADD_FAILURE() << "a second bind to a port in use succeeded";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::address_in_use) << e.what();
    }
    {
      TcpListener gone = std::move(listener);
    }  // closed: nobody listens on `port` now
    try {
      (void)co_await TcpStream::connect("127.0.0.1", port);
      ADD_FAILURE() << "connect to a closed port succeeded";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::connection_refused) << e.what();
    }
    try {
      (void)co_await TcpStream::connect("no-such-host.invalid", 80);
      ADD_FAILURE() << "connect to a host that does not exist succeeded";
    } catch (const std::system_error& e) {
      EXPECT_NE(std::string(e.what()).find("no-such-host.invalid"), std::string::npos) << e.what();
    }
    EXPECT_THROW((void)TcpListener::bind("300.1.2.3.4..", 0), std::system_error);
  }());
}

TEST(NetTcp, AThousandConcurrentConnectionsLeakNoFd) {
  constexpr int kConnections = 1000;
  std::string why;
  if (!nettest::allow_fds(2 * kConnections + 64, why)) FAIL() << why;
  const std::size_t fds_before = nettest::open_fds();
  {
    karx::Runtime rt;
    nettest::run_within(rt, 60s, [&]() -> karx::Async<> {
      TcpListener listener = TcpListener::bind("127.0.0.1", 0);
      const std::uint16_t port = listener.local_port();
      karx::TaskGroup servers;
      auto acceptor = karx::exec([](TcpListener& l, karx::TaskGroup& g) -> karx::Async<> {
        for (int i = 0; i < kConnections; ++i) {
          auto s = std::make_unique<TcpStream>(co_await l.accept());
          g.spawn([](std::unique_ptr<TcpStream> s) -> karx::Async<> {
            std::byte buf[64];
            for (std::size_t n; (n = co_await s->read(buf)) != 0;) co_await s->write_all(std::span(buf, n));
          }(std::move(s)));
        }
      }(listener, servers));
      // Every client stays connected until all have echoed: 2,000 sockets open at once.
      auto all_connected = std::make_shared<karx::Notify>();
      auto echoed = std::make_shared<std::atomic<int>>(0);
      karx::TaskGroup clients;
      for (int i = 0; i < kConnections; ++i)
        clients.spawn([](std::uint16_t port, int i, std::shared_ptr<karx::Notify> all,
                         std::shared_ptr<std::atomic<int>> echoed) -> karx::Async<> {
          TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
          const std::string msg = "client " + std::to_string(i);
          co_await c.write_all(bytes(msg));
          std::vector<std::byte> back(msg.size());
          co_await c.read_exact(back);
          EXPECT_EQ(text(back), msg);
          auto released = all->notified();
          if (echoed->fetch_add(1) + 1 == kConnections)
            all->notify_all();
          else
            co_await released;
        }(port, i, all_connected, echoed));
      co_await clients.join();
      EXPECT_EQ(echoed->load(), kConnections);
      co_await acceptor;
      co_await servers.join();
    }());
  }  // the runtime, its netpoller and every socket are gone
  EXPECT_EQ(nettest::open_fds(), fds_before) << "fds leaked";
}

TEST(NetTcp, ShuttingDownARuntimeWithPendingIoNeitherHangsNorLeaks) {
  const std::size_t fds_before = nettest::open_fds();
  const auto t0 = std::chrono::steady_clock::now();
  {
    karx::Runtime rt;
    std::uint16_t port = 0;
    rt.block_on([&]() -> karx::Async<> {
      auto listener = std::make_shared<TcpListener>(TcpListener::bind("127.0.0.1", 0));
      port = listener->local_port();
      // An accept and a read that will never complete, left pending in detached tasks.
      karx::exec([](std::shared_ptr<TcpListener> l) -> karx::Async<> {
        TcpStream s = co_await l->accept();
        std::byte buf[8];
        (void)co_await s.read(buf);
        ADD_FAILURE() << "the read completed";
      }(listener))
          .detach();
      TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
      karx::exec([](TcpStream c) -> karx::Async<> {
        std::byte buf[8];
        (void)co_await c.read(buf);
      }(std::move(c)))
          .detach();
      co_await karx::sleep_for(20ms);  // both are parked in the netpoller now
    }());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(nettest::open_fds(), fds_before) << "fds leaked";
}

// A runtime whose only I/O waits from outside: the sockets were made in its block_on (they
// use its netpoller), and are then awaited from a plain thread with karx::block_on. Nothing
// runs on the runtime, so its idle monitor must be the one that waits in epoll.
TEST(NetTcp, ARuntimesSocketsWorkFromOutsideWhileTheRuntimeIsIdle) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 1});
  auto [client, server] = rt.block_on([]() -> karx::Async<std::pair<TcpStream, TcpStream>> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    auto c = co_await TcpStream::connect("127.0.0.1", listener.local_port());
    auto s = co_await listener.accept();
    co_return std::pair<TcpStream, TcpStream>(std::move(c), std::move(s));
  }());
  std::thread writer([&client] {
    std::this_thread::sleep_for(100ms);  // the runtime is idle by now
    karx::block_on(client.write_all(bytes("late")));
  });
  std::byte buf[4];
  auto got = karx::block_on(karx::timeout(10s, server.read_exact(buf)));
  writer.join();
  ASSERT_TRUE(got) << "the read was never woken";
  EXPECT_EQ(text(buf), "late");
}

}  // namespace

namespace {

// Short connections in a loop, several at once, with data in flight when they close: the
// netpoller's registrations are recycled over and over while events for closed sockets may
// still be in other threads' hands (impl/net/poller.cppm: deregistration). No hang, no fd left.
TEST(NetTcp, ManyShortConnectionsRecycleRegistrationsSafely) {
  const std::size_t fds_before = nettest::open_fds();
  {
    karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
    nettest::run_within(rt, 60s, [&]() -> karx::Async<> {
      auto listener = std::make_shared<TcpListener>(TcpListener::bind("127.0.0.1", 0));
      auto acceptor = karx::exec([](std::shared_ptr<TcpListener> l) -> karx::Async<> {
        for (;;)
          karx::exec([](TcpStream s) -> karx::Async<> {
            std::byte buf[512];
            try {
              for (std::size_t n; (n = co_await s.read(buf)) != 0;) co_await s.write_all(std::span(buf, n));
            } catch (const std::system_error&) {
              // The client may close with our echo unread: a reset here is expected.
            }
          }(co_await l->accept()))
              .detach();
      }(listener));
      karx::TaskGroup clients;
      for (int c = 0; c < 8; ++c)
        clients.spawn([](std::uint16_t port, int c) -> karx::Async<> {
          const auto data = nettest::pattern(4096);
          for (int i = 0; i < 60; ++i) {
            TcpStream s = co_await TcpStream::connect("127.0.0.1", port);
            co_await s.write_all(data);
            if ((i + c) % 3 == 0) continue;  // close with the echo still coming
            std::vector<std::byte> back(data.size());
            co_await s.read_exact(back);
            EXPECT_EQ(back, data);
          }
        }(listener->local_port(), c));
      co_await clients.join();
      acceptor.cancel();
    }());
  }
  EXPECT_EQ(nettest::open_fds(), fds_before) << "fds leaked";
}

}  // namespace
