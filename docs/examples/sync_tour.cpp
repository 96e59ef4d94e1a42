// A tour of karx.sync's primitives on the runtime: channel, oneshot, Mutex, Semaphore, Notify
// and TaskGroup. Each part is a snippet of docs/guide.md.
#include <atomic>
#include <coroutine>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>
import karx;

// --- channel ---
karx::Async<> produce(karx::Sender<int> tx) {
  for (int i = 1; i <= 100; ++i)
    if (!co_await tx.send(i)) co_return;  // false: the channel was closed
}  // the last Sender gone closes the channel

karx::Async<long> sum_all(karx::Receiver<int> rx) {
  long sum = 0;
  while (std::optional<int> v = co_await rx.recv()) sum += *v;  // nullopt: closed and drained
  co_return sum;
}

// --- oneshot ---
karx::Async<std::string> ask(karx::OneshotReceiver<std::string> answer) {
  std::optional<std::string> a = co_await std::move(answer);
  co_return a ? *a : "the sender went away";
}

// --- Mutex ---
karx::Async<> append_twice(karx::Mutex& m, std::vector<int>& log, int id) {
  karx::MutexGuard guard = co_await m.lock();  // FIFO; held across the await below
  log.push_back(id);
  co_await karx::yield_now();
  log.push_back(id);
}  // the guard unlocks

// --- Semaphore ---
karx::Async<> limited(karx::Semaphore& slots, std::atomic<int>& running, std::atomic<int>& peak) {
  karx::SemaphorePermit permit = co_await slots.acquire();
  const int now = ++running;
  for (int seen = peak; now > seen && !peak.compare_exchange_weak(seen, now);) {
  }
  co_await karx::yield_now();
  --running;
}  // the permit goes back

// --- Notify ---
karx::Async<int> wait_for_ready(karx::Notify& changed, const std::atomic<bool>& ready) {
  int waits = 0;
  for (;;) {
    auto notified = changed.notified();  // made before the check: no wake-up is lost
    if (ready) co_return waits;
    co_await std::move(notified);
    ++waits;
  }
}

// --- TaskGroup ---
karx::Async<int> square(int x) {
  co_await karx::yield_now();
  co_return x * x;
}

karx::Async<int> sum_of_squares(int n) {
  karx::TaskGroup group;  // spawns onto the runtime running this task
  std::vector<karx::JoinHandle<int>> parts;
  for (int i = 0; i < n; ++i) parts.push_back(group.spawn(square(i)));
  co_await group.join();  // every child is done (or the first exception is rethrown)
  int sum = 0;
  for (auto& part : parts) sum += *co_await part;
  co_return sum;
}

int main() {
  karx::Runtime rt;

  auto [tx, rx] = karx::channel<int>(16);
  for (int p = 0; p < 4; ++p) rt.spawn(produce(tx)).detach();
  auto total = rt.spawn(sum_all(rx));
  tx = {};  // only the producers' copies are left
  std::printf("channel: 4 producers sent %ld in all\n", *rt.block_on(std::move(total)));

  auto [answer_tx, answer_rx] = karx::oneshot<std::string>();
  auto question = rt.spawn(ask(std::move(answer_rx)));
  answer_tx.send("forty-two");
  std::printf("oneshot: %s\n", rt.block_on(std::move(question))->c_str());

  karx::Mutex m;
  std::vector<int> log;
  std::vector<karx::JoinHandle<void>> writers;
  for (int id = 0; id < 3; ++id) writers.push_back(rt.spawn(append_twice(m, log, id)));
  for (auto& w : writers) rt.block_on(std::move(w));
  bool paired = log.size() == 6 && log[0] == log[1] && log[2] == log[3] && log[4] == log[5];
  std::printf("mutex: 3 writers, each pair unbroken: %s\n", paired ? "yes" : "no");

  karx::Semaphore slots(2);
  std::atomic<int> running = 0, peak = 0;
  std::vector<karx::JoinHandle<void>> jobs;
  for (int i = 0; i < 10; ++i) jobs.push_back(rt.spawn(limited(slots, running, peak)));
  for (auto& j : jobs) rt.block_on(std::move(j));
  std::printf("semaphore: 10 jobs, at most %d at once\n", peak.load());

  karx::Notify changed;
  std::atomic<bool> ready = false;
  auto waiter = rt.spawn(wait_for_ready(changed, ready));
  rt.spawn_blocking([&] {
    ready = true;
    changed.notify_one();
  });
  std::printf("notify: the waiter saw the change after %s\n", *rt.block_on(std::move(waiter)) <= 1 ? "at most one wait" : "several waits");

  std::printf("task group: sum of squares 0..9 = %d\n", rt.block_on(sum_of_squares(10)));
}
