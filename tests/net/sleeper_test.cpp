// The thread that sleeps in a runtime's netpoller (impl/executor/netpoll.cpp, steps 4 to 6):
// it stands in for karx.time's driver, so that timers and sockets share its one wait and a
// timer that fires into an idle runtime is woken on that thread, not on the driver's; a
// deadline registered during its wait interrupts it; and a worker that sleeps there leaves
// after idle_thread_timeout like any idle worker, handing the role to the monitor.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "net/net_support.hpp"
#include "support/thread_name.hpp"

namespace {

using namespace std::chrono_literals;
using karx::net::TcpListener;
using karx::net::TcpStream;

// The timer driver's thread is named so (impl/time/timer_driver.cpp).
constexpr const char* kDriverThread = "karx-timer";

using probes::this_thread_name;

// The names of the threads that woke a NotedSleep.
struct Wakers {
  std::mutex mutex;
  std::vector<std::string> names;

  std::size_t not_the_driver() {
    std::lock_guard lock(mutex);
    std::size_t n = 0;
    for (const std::string& name : names) n += name != kDriverThread ? 1 : 0;
    return n;
  }
  std::string all() {
    std::lock_guard lock(mutex);
    std::string s;
    for (const std::string& name : names) s += "\"" + name + "\" ";
    return s;
  }
};

// A sleep whose waker notes the name of the thread that wakes it, then wakes the task.
class NotedSleep {
 public:
  NotedSleep(std::chrono::nanoseconds d, std::shared_ptr<Wakers> wakers)
      : sleep_(karx::sleep_for(d)), wakers_(std::move(wakers)) {}

  karx::Poll<void> poll(karx::Context& cx) {
    karx::Waker noting = karx::waker_fn([wakers = wakers_, task = cx.waker()] {
      {
        std::lock_guard lock(wakers->mutex);
        wakers->names.push_back(this_thread_name());
      }
      task.wake();
    });
    karx::Context inner(noting);
    return sleep_.poll(inner);
  }

 private:
  karx::Sleep sleep_;
  std::shared_ptr<Wakers> wakers_;
};

// Ten times: a task sleeps while nothing else happens in its runtime, which has a socket (so
// a thread of it sleeps in the netpoller). The driver wakes a covered deadline only 1 ms after
// it, so the sleeper fires it unless the machine keeps that thread off a CPU for that long:
// some of the ten, not necessarily all, must be woken by a runtime thread. Without the
// stand-in every one is woken by the driver.
TEST(NetSleeper, TimersThatFireIntoAnIdleRuntimeAreWokenByItsNetpollSleeper) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  auto wakers = std::make_shared<Wakers>();
  nettest::run_within(rt, 60s, [&]() -> karx::Async<> {
    TcpListener listener = TcpListener::bind("127.0.0.1", 0);  // the runtime has a netpoller now
    for (int i = 0; i < 10; ++i) co_await NotedSleep(20ms, wakers);
  }());
  EXPECT_GE(wakers->not_the_driver(), 1u) << "every timer was fired by the driver thread: " << wakers->all();
}

// The runtime is idle, with no timer pending: its sleeper waits with no deadline. A plain
// thread (no runtime) then sleeps: the registration must interrupt the sleeper's wait, which
// begins again with that deadline and fires it (the stand-in serves every timer of the
// process). Without the interrupt, the driver fires each one.
TEST(NetSleeper, ADeadlineRegisteredDuringTheSleepersWaitInterruptsIt) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  TcpListener listener =
      rt.block_on([]() -> karx::Async<TcpListener> { co_return TcpListener::bind("127.0.0.1", 0); }());
  auto wakers = std::make_shared<Wakers>();
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(30ms);  // the runtime settles: a thread sleeps in its netpoller
    karx::block_on(NotedSleep(10ms, wakers));
  }
  EXPECT_GE(wakers->not_the_driver(), 1u) << "every timer was fired by the driver thread: " << wakers->all();
}

// A worker that sleeps in the netpoller leaves after idle_thread_timeout: once the runtime has
// been idle that long only the monitor is left, and it keeps serving the sockets.
TEST(NetSleeper, AWorkerSleepingInTheNetpollerLeavesAfterTheIdleTimeout) {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.idle_thread_timeout = 100ms;
  karx::Runtime rt(o);
  TcpListener listener =
      rt.block_on([]() -> karx::Async<TcpListener> { co_return TcpListener::bind("127.0.0.1", 0); }());
  // Work on the workers, then idle.
  std::vector<karx::JoinHandle<int>> handles;
  for (int i = 0; i < 8; ++i) handles.push_back(rt.spawn([](int x) -> karx::Async<int> { co_return x; }(i)));
  for (auto& h : handles) EXPECT_GE(karx::block_on(std::move(h)).value(), 0);
  EXPECT_GE(rt.metrics().threads_started, 2u);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (rt.metrics().threads > 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(rt.metrics().threads, 1u) << "a worker stayed past the idle timeout";
  // The monitor sleeps in the netpoller now: an accept is still woken.
  auto accept = rt.spawn([](TcpListener& l) -> karx::Async<bool> {
    TcpStream s = co_await l.accept();
    co_return true;
  }(listener));
  const int fd = nettest::raw_connect(listener.local_port());
  ASSERT_GE(fd, 0);
  auto accepted = karx::block_on(karx::timeout(10s, std::move(accept)));
  ASSERT_TRUE(accepted.has_value()) << "the accept was never woken";
  ::close(fd);
}

}  // namespace
