// karx.net under executors other than the runtime: a plain thread pool built on karx::spawn
// (tests/support/thread_pool.hpp) and karx::block_on on a plain thread. The sockets are made
// outside any runtime, so they use the standalone reactor. Also: destroying a pending read
// drops its waker at once, and the socket keeps working.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/net_support.hpp"
#include "support/thread_pool.hpp"

namespace {

using namespace std::chrono_literals;
using karx::net::TcpListener;
using karx::net::TcpStream;
using nettest::bytes;
using nettest::text;

karx::Async<int> serve(TcpListener& l, int connections) {
  int served = 0;
  for (int i = 0; i < connections; ++i) {
    TcpStream s = co_await l.accept();
    std::byte buf[256];
    for (std::size_t n; (n = co_await s.read(buf)) != 0;) co_await s.write_all(std::span(buf, n));
    ++served;
  }
  co_return served;
}

karx::Async<std::string> ask(std::uint16_t port, std::string msg) {
  TcpStream c = co_await TcpStream::connect("127.0.0.1", port);
  co_await c.write_all(bytes(msg));
  c.shutdown_write();
  std::string reply;
  std::byte buf[256];
  for (std::size_t n; (n = co_await c.read(buf)) != 0;) reply += text(std::span(buf, n));
  co_return reply;
}

TEST(NetExecutor, EchoOnAPlainThreadPool) {
  TcpListener listener = TcpListener::bind("127.0.0.1", 0);
  probes::ThreadPool pool(3);
  auto server = pool.spawn(serve(listener, 8));
  std::vector<karx::JoinHandle<std::string>> clients;
  for (int i = 0; i < 8; ++i) clients.push_back(pool.spawn(ask(listener.local_port(), "pool " + std::to_string(i))));
  for (int i = 0; i < 8; ++i) {
    auto reply = karx::block_on(karx::timeout(10s, std::move(clients[i])));
    ASSERT_TRUE(reply) << "client " << i << " did not finish";
    EXPECT_EQ(**reply, "pool " + std::to_string(i));
  }
  auto served = karx::block_on(karx::timeout(10s, std::move(server)));
  ASSERT_TRUE(served);
  EXPECT_EQ(**served, 8);
}

TEST(NetExecutor, DestroyingAPendingReadDropsItsWakerAndLosesNothing) {
  TcpListener listener = TcpListener::bind("127.0.0.1", 0);
  auto client = karx::block_on(TcpStream::connect("127.0.0.1", listener.local_port()));
  auto server = karx::block_on(listener.accept());
  auto woken = std::make_shared<std::atomic<int>>(0);
  auto alive = std::make_shared<int>(0);  // held by the waker: its use count shows clones
  karx::Waker waker = karx::waker_fn([woken, alive] { woken->fetch_add(1); });
  karx::Context cx(waker);
  std::byte buf[8];
  {
    auto read = server.read(buf);
    EXPECT_TRUE(read.poll(cx).is_pending());
    EXPECT_EQ(alive.use_count(), 2);  // one waker_fn state; the clone shares it
  }  // destroyed while pending: cancelled
  karx::block_on(client.write_all(bytes("after")));
  std::this_thread::sleep_for(50ms);  // the reactor has seen the data by now
  EXPECT_EQ(woken->load(), 0) << "a destroyed read's waker was woken";
  std::byte five[5];
  karx::block_on(server.read_exact(five));
  EXPECT_EQ(text(five), "after");
}

TEST(NetExecutor, APendingReadWakesItsWakerWhenDataArrives) {
  TcpListener listener = TcpListener::bind("127.0.0.1", 0);
  auto client = karx::block_on(TcpStream::connect("127.0.0.1", listener.local_port()));
  auto server = karx::block_on(listener.accept());
  std::atomic<int> woken{0};
  karx::Waker waker = karx::waker_fn([&woken] {
    woken.fetch_add(1);
    woken.notify_all();
  });
  karx::Context cx(waker);
  std::byte buf[8];
  auto read = server.read(buf);
  ASSERT_TRUE(read.poll(cx).is_pending());
  karx::block_on(client.write_all(bytes("abc")));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (woken.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(woken.load(), 1);
  auto p = read.poll(cx);
  ASSERT_TRUE(p.is_ready());
  EXPECT_EQ(p.value(), 3u);
}

}  // namespace
