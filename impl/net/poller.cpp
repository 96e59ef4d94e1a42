// The Poller (poller.cppm): epoll, the eventfd, the registration free list, closing.
module;
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <new>
#include <system_error>
#include <vector>
module karx.netpoll;
import karx.waker;

namespace karx::detail::net {

namespace {
constexpr std::uint32_t kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR;
constexpr std::uint32_t kWriteEvents = EPOLLOUT | EPOLLHUP | EPOLLERR;
// The states in which a short transfer no longer proves a direction drained (readiness.cppm):
// a read returns 0 or the error at once after the end of the stream or an error, and stops
// short at an urgent mark.
constexpr std::uint32_t kReadExceptional = EPOLLRDHUP | EPOLLPRI | EPOLLHUP | EPOLLERR;
constexpr std::uint32_t kWriteExceptional = EPOLLHUP | EPOLLERR;
constexpr int kBatch = 128;  // events per epoll_wait

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Poller* Poller::create() {
  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) throw std::system_error(errno, std::generic_category(), "karx::net: epoll_create1");
  const int evfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (evfd < 0) {
    const int err = errno;
    ::close(epfd);
    throw std::system_error(err, std::generic_category(), "karx::net: eventfd");
  }
  // Level-triggered and with no data pointer: see poller.cppm (only a blocking poll drains it).
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) != 0) {
    const int err = errno;
    ::close(evfd);
    ::close(epfd);
    throw std::system_error(err, std::generic_category(), "karx::net: epoll_ctl (eventfd)");
  }
  return new Poller(epfd, evfd);
}

Poller::~Poller() {
  ::close(evfd_);
  ::close(epfd_);
  for (IoRegistration* r : all_) delete r;
}

IoRegistration* Poller::add(int fd) {
  IoRegistration* reg = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (closed_.load(std::memory_order_relaxed))
      throw std::system_error(ECANCELED, std::generic_category(),
                              "karx::net: the runtime whose netpoller this socket would use is shut down");
    if (free_ != nullptr) {
      reg = free_;
      free_ = reg->next_free;
    } else {
      all_.reserve(all_.size() + 1);  // may throw: nothing changed yet
      reg = new IoRegistration;
      reg->poller = this;
      all_.push_back(reg);
    }
    reg->live = true;
    reg->next_free = nullptr;
  }
  reg->fd = fd;
  epoll_event ev{};
  ev.events = kSocketEvents;
  ev.data.ptr = reg;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    const int err = errno;
    std::lock_guard lock(mutex_);
    reg->live = false;
    reg->fd = -1;
    reg->next_free = free_;
    free_ = reg;
    throw std::system_error(err, std::generic_category(), "karx::net: epoll_ctl (add)");
  }
  registered_.fetch_add(1, std::memory_order_relaxed);
  acquire();  // the registration's reference
  return reg;
}

void Poller::remove(IoRegistration* reg) noexcept {
  // Failure is impossible for an fd we added and have not closed; nothing to do about it.
  epoll_event ev{};
  (void)::epoll_ctl(epfd_, EPOLL_CTL_DEL, reg->fd, &ev);
  // Operations borrow their socket and forget themselves when destroyed, so none should be
  // parked; reset anyway, so that a stray waker neither outlives the socket nor blocks the
  // registration's next socket. A late event may still bump the ticks (see poller.cppm).
  reg->read.reset();
  reg->write.reset();
  reg->fd = -1;
  {
    std::lock_guard lock(mutex_);
    reg->live = false;
    reg->next_free = free_;
    free_ = reg;
  }
  registered_.fetch_sub(1, std::memory_order_relaxed);
  release();
}

namespace {
// epoll_wait for `timeout` (negative: forever). A positive timeout takes epoll_pwait2's
// nanoseconds, so that a timer deadline (the runtime's stand-in, netpoll.cpp) is kept to the
// microsecond; on a kernel without it (before 5.11), milliseconds rounded up.
int wait_for_events(int epfd, epoll_event* events, int max, std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() <= 0) return ::epoll_wait(epfd, events, max, timeout.count() < 0 ? -1 : 0);
  static std::atomic<bool> no_pwait2{false};  // relaxed: a cache of ENOSYS, any value is correct
  if (!no_pwait2.load(std::memory_order_relaxed)) {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(timeout);
    const timespec ts{static_cast<time_t>(s.count()), static_cast<long>((timeout - s).count())};
    const int n = ::epoll_pwait2(epfd, events, max, &ts, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    no_pwait2.store(true, std::memory_order_relaxed);
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  return ::epoll_wait(epfd, events, max, ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms));
}
}  // namespace

std::size_t Poller::poll(std::chrono::nanoseconds timeout, bool as_sleeper, BeforeWakes before_wakes,
                         void* context) noexcept {
  epoll_event events[kBatch];
  const int n = wait_for_events(epfd_, events, kBatch, timeout);
  if (as_sleeper) stop_sleeping();
  last_poll_ns_.store(now_ns(), std::memory_order_relaxed);
  if (n <= 0) return 0;  // timeout, or EINTR: the caller looks again
  // An event for a direction nobody waits on (its task is running, and will find the data
  // itself) only bumps the ticks: most events of a busy socket are such. So before_wakes runs
  // only before the first wake: a sleeper that takes a processor for nothing would spin with
  // it, then park again.
  std::size_t woken = 0;
  auto deliver = [&](Readiness& r, bool exceptional) {
    Waker w = r.take_on_event(exceptional);
    if (!Readiness::holds_waker(w)) return;
    if (woken++ == 0 && before_wakes != nullptr) before_wakes(context);
    Readiness::wake_reporting(std::move(w));
  };
  for (int i = 0; i < n; ++i) {
    auto* reg = static_cast<IoRegistration*>(events[i].data.ptr);
    if (reg == nullptr) {
      // The eventfd: only a blocking poll drains it, so that the wake stays visible to the
      // sleeper when a non-blocking poller sees it first.
      if (timeout.count() != 0) {
        std::uint64_t count = 0;
        (void)!::read(evfd_, &count, sizeof count);
      }
      continue;
    }
    // The node is valid even if its socket was just closed (never freed while we live).
    const std::uint32_t e = events[i].events;
    if ((e & kReadEvents) != 0) deliver(reg->read, (e & kReadExceptional) != 0);
    if ((e & kWriteEvents) != 0) deliver(reg->write, (e & kWriteExceptional) != 0);
  }
  return woken;
}

void Poller::interrupt() noexcept {
  const std::uint64_t one = 1;
  // EAGAIN only if the counter is about to overflow: it is non-zero then, which is all we need.
  (void)!::write(evfd_, &one, sizeof one);
}

void Poller::close() noexcept {
  // seq_cst store, then the lock: an operation that parks after our notify below takes a
  // Readiness lock after ours and so sees closed_ (it checks after parking).
  closed_.store(true, std::memory_order_seq_cst);
  std::vector<IoRegistration*> live;
  {
    std::lock_guard lock(mutex_);
    try {
      for (IoRegistration* r : all_)
        if (r->live) live.push_back(r);
    } catch (const std::bad_alloc&) {
      // Out of memory at shutdown: the parked operations stay parked (their sockets still
      // close when destroyed).
    }
  }
  // Nodes are never freed while we live, so a node that a socket removes meanwhile is still
  // valid: a spurious notify at worst.
  for (IoRegistration* r : live) {
    r->read.notify();
    r->write.notify();
  }
  interrupt();
}

}  // namespace karx::detail::net

namespace karx::detail::net {
namespace {
// release/acquire: a thread that finds the hook also sees what its installer did before.
std::atomic<RuntimePollerHook> runtime_poller_hook{nullptr};
}  // namespace
void set_runtime_poller_hook(RuntimePollerHook hook) noexcept {
  runtime_poller_hook.store(hook, std::memory_order_release);
}
Poller* runtime_poller(void* runtime) {
  if (runtime == nullptr) return nullptr;
  const RuntimePollerHook hook = runtime_poller_hook.load(std::memory_order_acquire);
  return hook != nullptr ? hook(runtime) : nullptr;
}
}  // namespace karx::detail::net
