// Uses the installed package: the task layer with a schedule function of its own, and the
// runtime. Prints what the consumer test checks.
#include <coroutine>
#include <cstdio>
#include <deque>
#include <utility>
import karx;

karx::Async<int> add(int a, int b) { co_return a + b; }

int main() {
  std::deque<karx::Task<>> queue;
  auto [task, handle] = karx::spawn(add(1, 2), [&queue](karx::Task<> t) { queue.push_back(std::move(t)); });
  task.schedule();
  while (!queue.empty()) {
    karx::Task<> next = std::move(queue.front());
    queue.pop_front();
    next.run();
  }
  const int sum = *karx::block_on(std::move(handle));

  karx::Runtime rt;
  const int product = rt.block_on([]() -> karx::Async<int> { co_return 6 * 7; }());
  std::printf("consumer: 1 + 2 = %d, 6 * 7 = %d\n", sum, product);
  return sum == 3 && product == 42 ? 0 : 1;
}
