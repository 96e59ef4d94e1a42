// The README's example: the seed's first example in C++ (a queue, a schedule function, a loop).
#include <coroutine>
#include <cstdio>
#include <deque>
#include <utility>
import karx;

karx::Async<int> add() { co_return 1 + 2; }  // the future to spawn

int main() {
  std::deque<karx::Task<>> queue;  // the executor's run queue
  auto schedule = [&queue](karx::Task<> task) { queue.push_back(std::move(task)); };

  auto [task, handle] = karx::spawn(add(), schedule);  // one allocation: state, schedule, future
  task.schedule();                                     // push it into the queue

  while (!queue.empty()) {  // the executor's main loop
    karx::Task<> next = std::move(queue.front());
    queue.pop_front();
    next.run();
  }

  karx::Waker waker = karx::noop_waker();  // the task is done: one poll of the handle yields it
  karx::Context cx(waker);
  std::printf("1 + 2 = %d\n", *handle.poll(cx).value());
}
