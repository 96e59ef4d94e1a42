// The standalone reactor (poller.cppm: reactor_poller): the netpoller for sockets made outside
// a karx runtime, as the timer driver is for sleeps. One process-wide Poller and one thread
// that sleeps in it; both start on first use. The Poller is immortal (a socket may be
// destroyed during static destruction); only the thread is stopped and joined at exit.
module;
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <system_error>
module karx.netpoll;

namespace karx::detail::net {
namespace {

class Reactor {
 public:
  static Reactor& get() {
    static Reactor* const reactor = new Reactor;  // immortal (see above)
    struct StopAtExit {
      ~StopAtExit() { reactor->stop(); }
    };
    static const StopAtExit stop_at_exit;
    return *reactor;
  }
  Poller& poller() noexcept { return *poller_; }

 private:
  Reactor() : poller_(Poller::create()) {
    const int err = pthread_create(&thread_, nullptr, &thread_main, this);
    if (err != 0) {
      poller_->release();
      throw std::system_error(err, std::generic_category(), "karx::net: cannot start the reactor thread");
    }
    pthread_setname_np(thread_, "karx-reactor");
  }

  static void* thread_main(void* self) noexcept {
    auto* r = static_cast<Reactor*>(self);
    // acquire: pairs with stop's release (nothing else to see, but it is the exit signal).
    while (!r->stopping_.load(std::memory_order_acquire)) r->poller_->poll(std::chrono::milliseconds(-1));
    return nullptr;
  }

  void stop() noexcept {
    stopping_.store(true, std::memory_order_release);
    poller_->interrupt();  // the eventfd stays readable until a blocking poll drains it
    if (pthread_equal(thread_, pthread_self()))
      pthread_detach(thread_);  // exit() called from a wake on the reactor thread itself
    else
      pthread_join(thread_, nullptr);
  }

  Poller* const poller_;
  std::atomic<bool> stopping_{false};
  pthread_t thread_{};
};

}  // namespace

Poller& reactor_poller() { return Reactor::get().poller(); }

}  // namespace karx::detail::net
