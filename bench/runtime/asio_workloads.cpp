// Boost.Asio's runtime workloads, written as its users would for throughput: one
// boost::asio::thread_pool of the same size, created once per benchmark; post() for new work
// (from outside, and for independent forks from inside, so that the other thread can take them
// at once); defer() for a continuation of the running handler (a chain link, each hop of a
// ping-pong round, a yield), which Asio keeps in the running thread's private queue and hands to
// the shared queue with one lock when the handler returns, without waking another thread.
// Handlers are small lambdas or function objects passed by value (no std::function); Asio
// recycles their operation's memory through a per-thread cache.
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstddef>
#include <utility>

#include "workloads.hpp"

namespace {

using namespace karx_bench;
namespace asio = boost::asio;
using Executor = asio::thread_pool::executor_type;

std::size_t pool_threads(const benchmark::State& state) { return static_cast<std::size_t>(state.range(0)); }

void asio_spawn_many(benchmark::State& state) {
  asio::thread_pool pool(pool_threads(state));
  const Executor ex = pool.get_executor();
  for (auto _ : state) {
    Countdown c(kSpawns);
    // From outside the pool every post locks the shared queue (and signals a thread if one is idle).
    for (int i = 0; i < kSpawns; ++i) asio::post(ex, [&c] { c.hit(); });
    c.wait();
  }
  pool.join();
  set_ops(state, kSpawns);
}

void asio_spawn_many_inside(benchmark::State& state) {
  asio::thread_pool pool(pool_threads(state));
  const Executor ex = pool.get_executor();
  for (auto _ : state) {
    Countdown c(kSpawns);
    asio::post(ex, [ex, &c] {
      // post, not defer: the handlers are independent forks, not this handler's continuation;
      // defer would hide them from the other thread until the loop ends. (With one thread Asio
      // queues them privately anyway.)
      for (int i = 0; i < kSpawns; ++i) asio::post(ex, [&c] { c.hit(); });
    });
    c.wait();
  }
  pool.join();
  set_ops(state, kSpawns);
}

// One link of the chain; the next link is this handler's tail, hence defer.
struct Link {
  Executor ex;
  int depth;
  Countdown* c;
  void operator()() const {
    if (depth == 0)
      c->hit();
    else
      asio::defer(ex, Link{ex, depth - 1, c});
  }
};

void asio_chained_spawn(benchmark::State& state) {
  asio::thread_pool pool(pool_threads(state));
  const Executor ex = pool.get_executor();
  for (auto _ : state) {
    Countdown c(1);
    asio::post(ex, Link{ex, kDepth, &c});
    c.wait();
  }
  pool.join();
  set_ops(state, kDepth);
}

// B, as an Asio asynchronous operation with the completion signature void(int): the completion
// handler (A's second half) is the one-shot through which B answers. A has nothing left to do
// but wait, so B runs as A's continuation (defer). B completes by deferring the handler to its
// associated executor, again as its own tail: A's second half is scheduled as a handler of its
// own, as a task woken through a one-shot is in karx (dispatching it inline would fold the
// round's third step into B).
template <typename Token>
auto async_pong(Executor ex, Token&& token) {
  return asio::async_initiate<Token, void(int)>(
      [ex](auto handler) {
        asio::defer(ex, [ex, handler = std::move(handler)]() mutable {
          auto handler_ex = asio::get_associated_executor(handler, ex);
          asio::defer(handler_ex, [handler = std::move(handler)]() mutable { std::move(handler)(1); });
        });
      },
      token);
}

void asio_ping_pong(benchmark::State& state) {
  asio::thread_pool pool(pool_threads(state));
  const Executor ex = pool.get_executor();
  for (auto _ : state) {
    Countdown c(kRounds);
    // The rounds start from inside the pool, as oneTBB's (in task_arena::execute) and karx's
    // (under Runtime::block_on) do.
    asio::post(ex, [ex, &c] {
      for (int i = 0; i < kRounds; ++i)
        asio::post(ex, [ex, &c] {            // A
          async_pong(ex, [&c](int answer) {  // A's second half
            if (answer == 1) c.hit();
          });
        });
    });
    c.wait();
  }
  pool.join();
  set_ops(state, kRounds);
}

// A task that yields `left` more times: a yield defers the task's continuation, which goes to the
// back of the pool's queue when this handler returns, so the other tasks run first.
struct Yielder {
  Executor ex;
  int left;
  Countdown* c;
  void operator()() const {
    if (left == 0)
      c->hit();
    else
      asio::defer(ex, Yielder{ex, left - 1, c});
  }
};

void asio_yield_many(benchmark::State& state) {
  asio::thread_pool pool(pool_threads(state));
  const Executor ex = pool.get_executor();
  const int tasks = yield_tasks(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    Countdown c(tasks);
    for (int i = 0; i < tasks; ++i) asio::post(ex, Yielder{ex, kYields, &c});
    c.wait();
  }
  pool.join();
  set_ops(state, static_cast<double>(tasks) * kYields);
}

KARX_BENCH_WORKLOAD(asio, spawn_many);
KARX_BENCH_WORKLOAD(asio, spawn_many_inside);
KARX_BENCH_WORKLOAD(asio, chained_spawn);
KARX_BENCH_WORKLOAD(asio, ping_pong);
KARX_BENCH_WORKLOAD(asio, yield_many);

}  // namespace
