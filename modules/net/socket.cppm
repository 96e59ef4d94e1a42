// Socket: the fd of a non-blocking socket and its netpoller registration, closed and
// deregistered on destruction; and the one loop every operation uses: try the syscall, and
// only on EAGAIN park on the direction's readiness (impl/net/readiness.cppm). Internal to
// karx.net.
module;
#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <system_error>
export module karx.net:socket;
import karx.waker;
import karx.task;
import karx.netpoll;

export namespace karx::detail::net {

[[noreturn]] void throw_errno(int err, const char* what);

class Socket {
 public:
  Socket() noexcept = default;
  // A new non-blocking, close-on-exec socket, registered with the netpoller of the runtime
  // this thread runs (Runtime::current()), else with the standalone reactor's.
  static Socket open(int family, int type);
  // Takes `fd` (non-blocking already: accept4) and registers it; closes it if that fails.
  static Socket adopt(int fd);
  Socket(Socket&& other) noexcept : fd_(other.fd_), reg_(other.reg_) {
    other.fd_ = -1;
    other.reg_ = nullptr;
  }
  Socket& operator=(Socket&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = other.fd_;
      reg_ = other.reg_;
      other.fd_ = -1;
      other.reg_ = nullptr;
    }
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }

  bool valid() const noexcept { return fd_ >= 0; }
  // The fd; throws std::logic_error naming `who` if this socket was moved from.
  int fd(const char* who) const;
  void close() noexcept;

  // Runs `attempt` (a syscall wrapper returning >= 0, or -1 with errno) until it succeeds
  // (returns its value), fails (throws std::system_error naming `what`) or would block: then
  // parks `owner` on direction `d`, sets `parked` and returns -1 (pending). EINTR retries.
  // `parked` is the operation's: true while its waker may be stored here. A success after a
  // park that was not followed by the poller's wake (a re-poll for another reason) takes the
  // waker back, so that the direction is free for the next operation; so does the
  // operation's destructor (forget), and only then: most operations never park.
  template <class Attempt>
  ssize_t io(Direction d, Context& cx, const void* owner, bool& parked, const char* what, Attempt attempt) {
    return io_impl(d, cx, owner, parked, what, 0, attempt);
  }
  // io for a TCP stream's transfer of `want` bytes: one that moves fewer (but some) shows the
  // queue drained, as EAGAIN would, and the direction's next operation parks without the
  // syscall until the poller counts an event ("Skipping the EAGAIN", readiness.cppm).
  template <class Attempt>
  ssize_t stream_io(Direction d, Context& cx, const void* owner, bool& parked, const char* what, std::size_t want,
                    Attempt attempt) {
    return io_impl(d, cx, owner, parked, what, want <= kMaxProvingTransfer ? want : 0, attempt);
  }
  Tick ticks(Direction d) const noexcept { return reg_->of(d).ticks(); }
  // Parks `owner` unless an event came since `seen` (false: retry). Throws std::system_error
  // (ECANCELED) if the runtime that owns the netpoller is gone.
  bool park(Direction d, Tick seen, Context& cx, const void* owner);
  // The operation `owner` ends (completed or destroyed): its parked waker, if any, goes.
  void forget(Direction d, const void* owner) noexcept {
    if (reg_ != nullptr) reg_->of(d).forget(owner);
  }

 private:
  // Linux moves at most MAX_RW_COUNT (INT_MAX rounded down to a page) bytes per call, so a
  // longer transfer may come back short with the queue not drained: those prove nothing.
  static constexpr std::size_t kMaxProvingTransfer = std::size_t{1} << 30;

  // `proving_want`: 0, or the bytes asked of a stream transfer whose shortness proves drained.
  template <class Attempt>
  ssize_t io_impl(Direction d, Context& cx, const void* owner, bool& parked, const char* what, std::size_t proving_want,
                  Attempt attempt) {
    Readiness& readiness = reg_->of(d);
    for (;;) {
      const Tick seen = readiness.ticks();  // before the syscall: see readiness.cppm
      if (proving_want == 0 || !readiness.known_drained(seen)) {
        const ssize_t r = attempt();
        if (r >= 0) {
          if (r > 0 && static_cast<std::size_t>(r) < proving_want) readiness.drained_at(seen);
          if (parked) {
            forget(d, owner);
            parked = false;
          }
          return r;
        }
        const int err = errno;
        if (err == EINTR) continue;
        if (err != EAGAIN && err != EWOULDBLOCK) throw_errno(err, what);
      }
      if (park(d, seen, cx, owner)) {
        parked = true;
        return -1;
      }
    }
  }

  Socket(int fd, IoRegistration* reg) noexcept : fd_(fd), reg_(reg) {}
  int fd_ = -1;
  IoRegistration* reg_ = nullptr;
};

// getsockname / getpeername's port; throw std::system_error.
std::uint16_t local_port_of(int fd);
std::uint16_t peer_port_of(int fd);

}  // namespace karx::detail::net
