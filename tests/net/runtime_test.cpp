// karx.net inside the runtime: sockets made on a runtime use its netpoller (not the reactor);
// an idle runtime waiting on sockets sleeps in epoll_wait and burns no CPU; readiness reaches
// tasks whether a worker, a guest or the monitor is the one waiting in epoll; and a busy
// runtime still serves its sockets (the pre-park poll, and the monitor's stale poll).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "net/net_support.hpp"
#include "support/cpu_time.hpp"
#include "support/sanitized.hpp"

import karx.netpoll;

namespace {

using namespace std::chrono_literals;
using karx::net::TcpListener;
using karx::net::TcpStream;
using karx::net::UdpSocket;
using nettest::bytes;
using nettest::text;

// The bound for an idle runtime: under 1 ms of CPU per second (measured: 0 to 0.04 ms).
// A sanitizer's runtime has background threads of its own, which the process total includes.
constexpr double kIdleCpuBound = KARX_TEST_SANITIZED ? 0.010 : 0.001;

TEST(NetRuntime, SocketsMadeOnARuntimeUseItsNetpollerNotTheReactor) {
  karx::detail::net::Poller& reactor = karx::detail::net::reactor_poller();
  const std::size_t on_reactor = reactor.registered();
  {
    karx::Runtime rt;
    nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
      TcpListener l = TcpListener::bind("127.0.0.1", 0);
      TcpStream c = co_await TcpStream::connect("127.0.0.1", l.local_port());
      TcpStream s = co_await l.accept();
      UdpSocket u = UdpSocket::bind("127.0.0.1", 0);
      EXPECT_EQ(reactor.registered(), on_reactor) << "a runtime's socket went to the reactor";
    }());
  }
  UdpSocket outside = UdpSocket::bind("127.0.0.1", 0);  // no runtime here: the reactor's
  EXPECT_EQ(reactor.registered(), on_reactor + 1);
}

TEST(NetRuntime, AnIdleRuntimeWaitingOnSocketsBurnsNoCpu) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  TcpListener listener =
      rt.block_on([]() -> karx::Async<TcpListener> { co_return TcpListener::bind("127.0.0.1", 0); }());
  auto accepted = std::make_shared<std::atomic<bool>>(false);
  rt.spawn([](TcpListener& l, std::shared_ptr<std::atomic<bool>> accepted) -> karx::Async<> {
      TcpStream s = co_await l.accept();
      accepted->store(true);
    }(listener, accepted))
      .detach();
  std::this_thread::sleep_for(300ms);  // the workers and the monitor settle; one sleeps in epoll
  const double before = probes::process_cpu_seconds();
  std::this_thread::sleep_for(1s);
  const double used = probes::process_cpu_seconds() - before;
  EXPECT_LT(used, kIdleCpuBound) << "an idle runtime with a pending accept used " << used * 1000 << " ms of CPU in 1 s";
  // And it is still awake to the socket.
  const int fd = nettest::raw_connect(listener.local_port());
  ASSERT_GE(fd, 0);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!accepted->load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(accepted->load()) << "the accept was never woken";
  ::close(fd);
}

// Ping-pong between two tasks of one runtime, many rounds: every round parks a task in the
// netpoller and wakes it through whoever waits there (a worker polling before it parks, an
// idle worker or guest sleeping in epoll, the monitor). A lost wake-up hangs the test (and
// the deadline fails it).
void ping_pong(unsigned processors, int rounds) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = processors});
  nettest::run_within(rt, 60s, [&]() -> karx::Async<> {
    TcpListener l = TcpListener::bind("127.0.0.1", 0);
    auto server = karx::exec([](TcpListener& l) -> karx::Async<> {
      TcpStream s = co_await l.accept();
      std::byte b[8];
      for (std::size_t n; (n = co_await s.read(b)) != 0;) co_await s.write_all(std::span(b, n));
    }(l));
    TcpStream c = co_await TcpStream::connect("127.0.0.1", l.local_port());
    c.set_nodelay(true);
    for (int i = 0; i < rounds; ++i) {
      std::byte b[8];
      co_await c.write_all(bytes("ping1234"));
      co_await c.read_exact(b);
      if (text(b) != "ping1234") ADD_FAILURE() << "round " << i;
    }
    c.shutdown_write();
    co_await server;
  }());
}

TEST(NetRuntime, PingPongOnOneProcessorLosesNoWake) { ping_pong(1, 3000); }
TEST(NetRuntime, PingPongOnTwoProcessorsLosesNoWake) { ping_pong(2, 3000); }

// Many connections each doing a few round trips while other tasks keep every worker busy with
// CPU work: the sockets are served by the pre-park polls and by the monitor's poll when
// nobody has polled for 10 ms.
TEST(NetRuntime, BusyWorkersStillServeSockets) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  nettest::run_within(rt, 60s, [&]() -> karx::Async<> {
    TcpListener l = TcpListener::bind("127.0.0.1", 0);
    karx::TaskGroup servers;
    auto acceptor = karx::exec([](TcpListener& l, karx::TaskGroup& g) -> karx::Async<> {
      for (int i = 0; i < 20; ++i)
        g.spawn([](TcpStream s) -> karx::Async<> {
          std::byte b[64];
          for (std::size_t n; (n = co_await s.read(b)) != 0;) co_await s.write_all(std::span(b, n));
        }(co_await l.accept()));
    }(l, servers));
    std::atomic<bool> stop{false};
    karx::TaskGroup spinners;
    for (int i = 0; i < 4; ++i)
      spinners.spawn([](std::atomic<bool>& stop) -> karx::Async<> {
        while (!stop.load()) {
          const auto until = std::chrono::steady_clock::now() + 500us;  // CPU-bound slices
          while (std::chrono::steady_clock::now() < until) {
          }
          co_await karx::yield_now();
        }
      }(stop));
    karx::TaskGroup clients;
    for (int i = 0; i < 20; ++i)
      clients.spawn([](std::uint16_t port, int i) -> karx::Async<> {
        TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
        for (int k = 0; k < 10; ++k) {
          const std::string msg = std::to_string(i) + ":" + std::to_string(k);
          co_await c.write_all(bytes(msg));
          std::vector<std::byte> back(msg.size());
          co_await c.read_exact(back);
          EXPECT_EQ(text(back), msg);
        }
      }(l.local_port(), i));
    co_await clients.join();
    stop.store(true);
    co_await spinners.join();
    co_await acceptor;
    co_await servers.join();
  }());
}

// A socket that outlives its runtime can no longer wait: an operation that would wait throws
// ECANCELED instead of hanging; closing it still works.
TEST(NetRuntime, ASocketThatOutlivesItsRuntimeCannotWaitAnyMore) {
  std::optional<UdpSocket> survivor;
  {
    karx::Runtime rt;
    survivor.emplace(rt.block_on([]() -> karx::Async<UdpSocket> { co_return UdpSocket::bind("127.0.0.1", 0); }()));
  }
  std::byte buf[8];
  try {
    (void)karx::block_on(karx::timeout(10s, survivor->recv_from(buf)));
    ADD_FAILURE() << "a wait on a dead runtime's netpoller did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_canceled) << e.what();
  }
  survivor.reset();
}

}  // namespace
