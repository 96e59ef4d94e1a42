// docs/guide.md, "Awaiting from other coroutine types": a coroutine type that is not karx's
// awaiting karx futures, and a karx::Async awaiting an awaitable that is not a karx future.
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <exception>
#include <future>
#include <optional>
#include <thread>
#include <utility>
import karx;

using namespace std::chrono_literals;

// A coroutine type from elsewhere (here the smallest one): it starts at once, and once finished
// it destroys itself and fulfils a std::future. It knows nothing of karx.
struct Job {
  std::future<void> finished;
  struct promise_type {
    std::promise<void> done;
    Job get_return_object() { return Job{done.get_future()}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    struct Final {
      bool await_ready() noexcept { return false; }
      void await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        std::promise<void> done = std::move(h.promise().done);
        h.destroy();
        done.set_value();
      }
      void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

karx::Async<int> add_later(int a, int b) {
  co_await karx::sleep_for(10ms);
  co_return a + b;
}

// A Job awaits karx futures as they are: a JoinHandle, a timer, an Async. Each co_await polls
// the future at once; if it is pending, the Job resumes on the thread that wakes it.
Job report(karx::Runtime& runtime) {
  std::optional<int> sum = co_await runtime.spawn(add_later(1, 2));
  std::printf("a Job awaited a task: 1 + 2 = %d\n", *sum);
  co_await karx::sleep_for(5ms);
  int direct = co_await add_later(2, 3);
  std::printf("a Job awaited a timer and an Async: 2 + 3 = %d\n", direct);
}

// An awaitable from elsewhere: it completes on a thread of its own.
struct OnThread {
  int value;
  std::jthread* worker;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    *worker = std::jthread([h] { h.resume(); });
  }
  int await_resume() const noexcept { return value; }
};

// Inside an Async it wakes the task, whose executor resumes the Async in its own poll.
karx::Async<int> uses_awaitable(std::jthread* worker) {
  int v = co_await OnThread{41, worker};
  co_return v + 1;
}

int main() {
  karx::Runtime runtime({.processors = 2});
  report(runtime).finished.wait();

  std::jthread worker;
  int answer = *karx::block_on(runtime.spawn(uses_awaitable(&worker)));
  std::printf("an Async awaited a foreign awaitable: %d\n", answer);
}
