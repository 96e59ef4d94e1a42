// The netpoller itself (impl/net/poller.cppm), driven by hand with a socket pair: an event is
// counted in the direction's ticks whether or not anyone waits; it wakes the parked operation
// if there is one; and the before_wakes hook (where the runtime's sleeper takes a processor)
// runs only before a real wake, never for an event that wakes nobody.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>

import karx;
import karx.netpoll;

namespace {

using namespace std::chrono_literals;
using karx::detail::net::IoRegistration;
using karx::detail::net::Poller;

void count_call(void* calls) noexcept { ++*static_cast<int*>(calls); }

TEST(NetPoller, AnEventNobodyWaitsForIsCountedButWakesNothing) {
  Poller* poller = Poller::create();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  IoRegistration* reg = poller->add(sv[0]);
  int before_wakes = 0;
  // Registration reports the socket writable: nobody waits, nothing is woken.
  EXPECT_EQ(poller->poll(0ms, false, &count_call, &before_wakes), 0u);
  EXPECT_EQ(before_wakes, 0);

  const karx::detail::net::Tick ticks = reg->read.ticks();
  ASSERT_EQ(::write(sv[1], "x", 1), 1);
  EXPECT_EQ(poller->poll(0ms, false, &count_call, &before_wakes), 0u) << "an event with no waiter woke something";
  EXPECT_EQ(before_wakes, 0) << "before_wakes ran for an event that wakes nobody";
  EXPECT_NE(reg->read.ticks(), ticks) << "the event was not counted: a read about to park would miss it";

  // A parked read is woken by the next event, after exactly one before_wakes.
  std::atomic<int> woken{0};
  const karx::Waker waker = karx::waker_fn([&woken] { woken.fetch_add(1); });
  ASSERT_TRUE(reg->read.park(reg->read.ticks(), waker, &woken));
  ASSERT_EQ(::write(sv[1], "y", 1), 1);
  EXPECT_EQ(poller->poll(0ms, false, &count_call, &before_wakes), 1u);
  EXPECT_EQ(before_wakes, 1);
  EXPECT_EQ(woken.load(), 1);
  EXPECT_FALSE(reg->read.parked());

  poller->remove(reg);
  ::close(sv[0]);
  ::close(sv[1]);
  poller->release();
}

}  // namespace
