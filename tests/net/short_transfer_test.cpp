// A TCP transfer shorter than asked shows the socket drained (read) or full (write), so the
// direction's next operation parks without the syscall that would say EAGAIN, until the
// netpoller counts a new event ("Skipping the EAGAIN", impl/net/readiness.cppm). These tests
// count the syscalls an operation makes, check that the wake still comes, and check the kernel
// states after which a short read proves nothing: the end of the stream, a reset, urgent data.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "net/net_support.hpp"
#include "support/soak_wait.hpp"

import karx.netpoll;

namespace {

using namespace std::chrono_literals;
using karx::detail::net::Direction;
using karx::detail::net::Socket;
using karx::net::TcpListener;
using karx::net::TcpStream;
using nettest::text;

// Waits (up to 5 s) until `done` holds; false on timeout.
template <class Done>
bool wait_until(Done done) {
  return soak::eventually(done, 5s);
}

// A connected TCP pair on 127.0.0.1: `ours` non-blocking (for a Socket), `peer` blocking.
struct RawPair {
  int ours = -1;
  int peer = -1;
  RawPair() {
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(l, 1) == 0 &&
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      peer = nettest::raw_connect(ntohs(a.sin_port));
      ours = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    ::close(l);
  }
  ~RawPair() {
    if (peer >= 0) ::close(peer);
  }
};

// stream_io on `s` with an attempt that counts its syscalls.
struct CountedIo {
  Socket& s;
  Direction d;
  std::atomic<int> woken{0};
  karx::Waker waker = karx::waker_fn([this] { woken.fetch_add(1); });
  karx::Context cx{waker};
  bool parked = false;
  int calls = 0;

  ssize_t read(std::span<std::byte> buf) {
    const int fd = s.fd("test");
    return s.stream_io(d, cx, this, parked, "test read", buf.size(), [&] {
      ++calls;
      return ::recv(fd, buf.data(), buf.size(), 0);
    });
  }
  ssize_t write(std::span<const std::byte> buf) {
    const int fd = s.fd("test");
    return s.stream_io(d, cx, this, parked, "test write", buf.size(), [&] {
      ++calls;
      return ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    });
  }
  ~CountedIo() { s.forget(d, this); }
};

TEST(NetShortTransfer, AReadAfterAShortReadParksWithoutTheSyscallAndTheNextDataWakesIt) {
  RawPair pair;
  ASSERT_GE(pair.ours, 0);
  ASSERT_EQ(::write(pair.peer, "0123456789", 10), 10);
  // Outside a runtime the socket registers with the standalone reactor, whose thread counts
  // the data's event: wait for that, so that the short read below comes after it.
  Socket s = Socket::adopt(pair.ours);
  ASSERT_TRUE(wait_until([&] { return s.ticks(Direction::read) >= 1; })) << "the reactor never counted the data";
  const karx::detail::net::Tick counted = s.ticks(Direction::read);

  CountedIo io{s, Direction::read};
  std::byte buf[100];
  ASSERT_EQ(io.read(buf), 10);
  EXPECT_EQ(text(std::span(buf, 10)), "0123456789");
  EXPECT_EQ(io.calls, 1);

  ASSERT_EQ(s.ticks(Direction::read), counted) << "an unexpected event came: the skip below cannot be tested";
  EXPECT_EQ(io.read(buf), -1) << "nothing is there: the read must wait";
  EXPECT_TRUE(io.parked);
  EXPECT_EQ(io.calls, 1) << "the short read already showed the socket empty, yet the read made the syscall";

  ASSERT_EQ(::write(pair.peer, "abc", 3), 3);
  ASSERT_TRUE(wait_until([&] { return io.woken.load() == 1; })) << "data came after the skipped syscall, no wake";
  ASSERT_EQ(io.read(buf), 3);
  EXPECT_EQ(text(std::span(buf, 3)), "abc");
  EXPECT_EQ(io.calls, 2);
  EXPECT_FALSE(io.parked);
}

TEST(NetShortTransfer, AReadThatFillsItsBufferProvesNothingAndTheNextOneAsksTheKernel) {
  RawPair pair;
  ASSERT_GE(pair.ours, 0);
  ASSERT_EQ(::write(pair.peer, "xyz", 3), 3);
  Socket s = Socket::adopt(pair.ours);
  ASSERT_TRUE(wait_until([&] { return s.ticks(Direction::read) >= 1; }));

  CountedIo io{s, Direction::read};
  std::byte buf[3];
  ASSERT_EQ(io.read(buf), 3);  // exactly what was asked: more may be queued
  EXPECT_EQ(io.read(buf), -1);
  EXPECT_EQ(io.calls, 2) << "a full-length read skipped the next syscall";
  EXPECT_TRUE(io.parked);
}

TEST(NetShortTransfer, AWriteAfterAShortWriteParksWithoutTheSyscallAndRoomWakesIt) {
  RawPair pair;
  ASSERT_GE(pair.ours, 0);
  Socket s = Socket::adopt(pair.ours);
  CountedIo io{s, Direction::write};
  const auto data = nettest::pattern(16 << 20);  // far more than the buffers hold
  const ssize_t first = io.write(data);
  ASSERT_GT(first, 0);
  ASSERT_LT(static_cast<std::size_t>(first), data.size()) << "expected a partial write";
  EXPECT_EQ(io.write(std::span(data).subspan(first)), -1);
  EXPECT_EQ(io.calls, 1) << "the short write already showed the socket full, yet the write made the syscall";
  EXPECT_TRUE(io.parked);

  // The peer drains: the room that opens wakes the parked write, which then moves more bytes.
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    std::vector<char> sink(1 << 16);
    while (!stop.load()) {
      if (::recv(pair.peer, sink.data(), sink.size(), MSG_DONTWAIT) <= 0) std::this_thread::sleep_for(1ms);
    }
  });
  EXPECT_TRUE(wait_until([&] { return io.woken.load() >= 1; })) << "room opened after the skipped syscall, no wake";
  EXPECT_GT(io.write(std::span(data).subspan(first)), 0);
  EXPECT_EQ(io.calls, 2);
  stop.store(true);
  drain.join();
}

// The three tests below: a raw POSIX peer on a thread of its own connects and runs
// `peer(fd)`; the server accepts, sleeps while everything the peer sent (and whatever follows
// it) reaches the socket and the runtime's poller counts its events, then runs
// `server(stream)`, in which one read comes back short. The peer's socket stays open until
// the server is done (a close would be one more event, and could wake a stalled read),
// unless `peer` closed it itself and set fd to -1.
template <class Peer, class Server>
void short_read_against_raw_peer(Peer peer, Server server) {
  karx::Runtime rt;
  nettest::run_within(rt, 10s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);
    std::atomic<bool> server_done{false};
    std::thread peer_thread([port = listener.local_port(), &peer, &server_done] {
      int fd = nettest::raw_connect(port);
      ASSERT_GE(fd, 0);
      peer(fd);
      wait_until([&] { return server_done.load(); });
      if (fd >= 0) ::close(fd);
    });
    TcpStream s = co_await listener.accept();
    co_await karx::sleep_for(100ms);
    co_await server(s);
    server_done.store(true);
    peer_thread.join();
  }());
}

TEST(NetShortTransfer, TheEndOfStreamAfterAShortReadIsStillSeen) {
  short_read_against_raw_peer(
      [](int& fd) {
        ASSERT_EQ(::write(fd, "0123456789", 10), 10);
        ::shutdown(fd, SHUT_WR);  // the FIN follows the data
      },
      [](TcpStream& s) -> karx::Async<> {
        std::byte buf[100];
        EXPECT_EQ(co_await s.read(buf), 10u);  // short: it consumed the FIN too
        // The event for the FIN was counted before that read, so no event will come: the
        // read must ask the kernel, which answers 0 at once.
        auto end = co_await karx::timeout(2s, s.read(buf));
        EXPECT_TRUE(end) << "the read after a short read waited for an event that had already come";
        if (end) EXPECT_EQ(*end, 0u);
      });
}

TEST(NetShortTransfer, AResetAfterAShortReadIsStillSeen) {
  short_read_against_raw_peer(
      [](int& fd) {
        ASSERT_EQ(::write(fd, "0123456789", 10), 10);
        std::this_thread::sleep_for(20ms);  // the data goes out before the reset
        nettest::raw_reset(fd);
        fd = -1;
      },
      [](TcpStream& s) -> karx::Async<> {
        std::byte buf[100];
        bool reset_seen = false;
        try {
          EXPECT_EQ(co_await s.read(buf), 10u);  // Linux keeps received bytes readable after a reset
          auto next = co_await karx::timeout(2s, s.read(buf));
          if (!next)
            ADD_FAILURE() << "the read after a short read waited for an event that had already come";
          else
            ADD_FAILURE() << "a read after the reset returned " << *next << " instead of throwing";
        } catch (const std::system_error& e) {
          EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
          reset_seen = true;
        }
        EXPECT_TRUE(reset_seen);
      });
}

TEST(NetShortTransfer, UrgentDataDoesNotStallTheBytesAfterIt) {
  short_read_against_raw_peer(
      [](int& fd) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ASSERT_EQ(::send(fd, "abc", 3, 0), 3);
        ASSERT_EQ(::send(fd, "!", 1, MSG_OOB), 1);  // out of band: not in the stream
        ASSERT_EQ(::send(fd, "def", 3, 0), 3);
      },
      [](TcpStream& s) -> karx::Async<> {
        // A read stops short at the urgent mark with "def" still queued, and every event is
        // counted already: only the urgent-data mark makes the next read ask the kernel.
        std::string got;
        std::byte buf[100];
        while (got.size() < 6) {
          auto n = co_await karx::timeout(2s, s.read(buf));
          if (!n || *n == 0) {
            ADD_FAILURE() << "stalled or ended after \"" << got
                          << "\": the bytes after the urgent mark were never read";
            break;
          }
          got += text(std::span(buf, *n));
        }
        EXPECT_EQ(got, "abcdef");
      });
}

}  // namespace
