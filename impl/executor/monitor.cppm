// The monitor (Go's sysmon): one thread per runtime that watches the workers' polls and hands
// the slot of a blocked (or long CPU-bound) poll to another worker, retries thread starts the
// thread cap refused, and prints KARX_SCHEDTRACE lines. It parks while no slot is taken, so an
// idle runtime costs it nothing. Its loop, its parking protocol with the slot takers, and its
// retry are in monitor.cpp; the revocation itself is the PollWord's (machinery/poll_word.cppm).
module;
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
module karx.executor:monitor;
import karx.machinery;

namespace karx::detail {

class RuntimeCore;

// The monitor's view of one worker's polls (the monitor thread alone touches it).
struct MonitorView {
  std::uint64_t seen_seq = 0;  // the poll seen at the last look
  std::chrono::steady_clock::time_point seen_at{};
  std::int64_t seen_cpu_ns = -1;  // the thread's CPU time at seen_cpu_at (-1: not read yet)
  std::chrono::steady_clock::time_point seen_cpu_at{};
};

class Monitor {
 public:
  explicit Monitor(RuntimeCore& core) noexcept : core_(core) {}
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  void start();  // throws std::system_error when the thread cannot be started
  // Shutdown (after RuntimeCore::shutting_down is set): the loop ends; joins the thread.
  void stop() noexcept;

  // A slot was just taken (by the caller, or by a wakep for the caller): the monitor must
  // watch it, so it leaves its park. Cheap when it is awake already.
  void slot_taken() noexcept;
  // A thread could not be started while work waits for it: the monitor retries the start.
  void ask_for_retry() noexcept;

 private:
  void run() noexcept;
  // One look at every worker's poll; revokes the slots of blocked or long polls.
  struct Look {
    bool polling = false;    // some poll runs
    bool long_poll = false;  // some poll was seen at an earlier look too
    bool acted = false;      // a slot was revoked
  };
  Look look_at_polls(std::chrono::steady_clock::time_point now) noexcept;
  void retry_thread_starts() noexcept;
  // Parks until a slot is taken, if none is and nothing else needs the monitor. False if it
  // did not park.
  bool park_while_idle() noexcept;

  RuntimeCore& core_;
  std::thread thread_;
  Parker parker_;
  std::atomic<bool> idle_{false};  // parked until a slot is taken (see slot_taken)
};

}  // namespace karx::detail
