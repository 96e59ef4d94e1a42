// A complete executor on karx's task layer, as in the seed's first example: a channel of
// Tasks, worker threads that run whatever comes out of it, and block_on made from waker_fn.
#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>
import karx;

// An unbounded multi-producer multi-consumer channel.
template <class T>
class Channel {
 public:
  void send(T value) {
    std::lock_guard lock(m_);  // notify under it: a late notify cannot outlive the channel
    items_.push_back(std::move(value));
    cv_.notify_one();
  }
  std::optional<T> recv() {  // nullopt once closed and empty
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return std::nullopt;
    T value = std::move(items_.front());
    items_.pop_front();
    return value;
  }
  void close() {
    {
      std::lock_guard lock(m_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

class ChannelExecutor {
 public:
  explicit ChannelExecutor(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i)
      workers_.emplace_back([this] {
        while (std::optional<karx::Task<>> task = channel_.recv()) task->run();
      });
  }
  ~ChannelExecutor() {
    channel_.close();
    for (auto& w : workers_) w.join();
  }

  template <karx::Future F>
  karx::JoinHandle<karx::output_of<F>> spawn(F future) {
    // The schedule function is the whole plug-in point: a woken task goes back in the channel.
    auto [task, handle] = karx::spawn(std::move(future), [this](karx::Task<> t) { channel_.send(std::move(t)); });
    task.schedule();
    return std::move(handle);
  }

 private:
  Channel<karx::Task<>> channel_;
  std::vector<std::thread> workers_;
};

// Runs a future on this thread: poll, and sleep until the waker says polling again is worth it.
template <karx::Future F>
karx::output_of<F> block_on(F& future) {
  auto woken = std::make_shared<std::atomic<bool>>(false);
  karx::Waker waker = karx::waker_fn([woken] {
    woken->store(true);
    woken->notify_one();
  });
  karx::Context cx(waker);
  for (;;) {
    auto p = future.poll(cx);
    if (p.is_ready()) return std::move(p).value();
    woken->wait(false);
    woken->store(false);
  }
}

// Gives other tasks a turn: wakes itself and reports pending once.
struct Yield {
  bool yielded = false;
  karx::Poll<> poll(karx::Context& cx) {
    if (yielded) return karx::ready();
    yielded = true;
    cx.waker().wake();
    return karx::pending;
  }
};

// Never ready: something to cancel.
struct Forever {
  karx::Poll<> poll(karx::Context&) { return karx::pending; }
};

karx::Async<long> square(long x) { co_return (x * x); }

karx::Async<long> sum_of(std::vector<karx::JoinHandle<long>> parts) {
  long total = 0;
  for (auto& part : parts) total += (co_await part).value();  // co_await a JoinHandle
  co_return total;
}

karx::Async<int> yielder(int times) {
  for (int i = 0; i < times; ++i) co_await Yield{};
  co_return times;
}

int main() {
  ChannelExecutor executor(2);

  std::vector<karx::JoinHandle<long>> squares;
  for (long i = 0; i < 1000; ++i) squares.push_back(executor.spawn(square(i)));
  auto total = executor.spawn(sum_of(std::move(squares)));
  std::printf("sum of squares 0..999 = %ld\n", *::block_on(total));

  std::vector<karx::JoinHandle<int>> yielders;
  for (int i = 0; i < 4; ++i) yielders.push_back(executor.spawn(yielder(100)));
  int yields = 0;
  for (auto& y : yielders) yields += *::block_on(y);
  std::printf("4 tasks yielded %d times in all\n", yields);

  auto stuck = executor.spawn(Forever{});
  stuck.cancel();
  std::printf("a canceled task yields %s\n", ::block_on(stuck) ? "completed" : "canceled");
}
