// An executor on oneTBB: karx tasks run on the threads of a tbb::task_arena, beside whatever
// else the arena runs. Each schedule enqueues one TBB task that runs the karx task once; a
// tbb::task_group counts those in flight, so the executor can wait for them before it goes.
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <coroutine>
#include <cstdio>
#include <utility>
#include <vector>
import karx;

// oneTBB's library is not built with ThreadSanitizer, so TSan cannot see its synchronization:
// that a TBB task runs after it was enqueued, and that TBB's pool recycles a task's memory only
// after it ran. A TsanHandoff around an enqueue tells TSan the first and has it ignore the
// accesses of TBB's task construction; the TBB task calls acquire() first. The suppressions
// cover the rest of TBB's internals (the second needs a symbolizer). Without TSan: nothing.
#if __has_feature(thread_sanitizer)  // clang
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libtbb.so\nrace:tbb::detail::d2::task_handle_task\n";
}
struct TsanHandoff {
  inline static char sync;
  TsanHandoff() {
    __tsan_release(&sync);
    __tsan_ignore_thread_begin();
  }
  ~TsanHandoff() { __tsan_ignore_thread_end(); }
  static void acquire() { __tsan_acquire(&sync); }
};
#else
struct TsanHandoff {
  TsanHandoff() {}
  static void acquire() {}
};
#endif

class ArenaExecutor {
 public:
  // By default the arena has a slot per hardware thread (one kept for a thread that joins it).
  explicit ArenaExecutor(int threads = tbb::task_arena::automatic) : arena_(threads) {}
  ~ArenaExecutor() { wait(); }  // the tasks' schedule functions point here

  void schedule(karx::Task<> task) {
    // TBB stores the functor const and calls it const, and Task is move-only with a non-const
    // run(): pass the task as a raw pointer, taken back exactly once when the functor runs.
    void* raw = std::move(task).into_raw();
    TsanHandoff handoff;  // for ThreadSanitizer only (see above)
    arena_.enqueue(group_.defer([raw] {
      TsanHandoff::acquire();
      karx::Task<>::from_raw(raw).run();
    }));
  }

  // Waits until no TBB task of ours is queued or running (this thread helps meanwhile).
  void wait() {
    arena_.execute([this] { group_.wait(); });
  }

  int threads() const { return arena_.max_concurrency(); }

 private:
  tbb::task_arena arena_;
  tbb::task_group group_;
};
static_assert(karx::Executor<ArenaExecutor>);

// The arena slot of the thread running this poll: -2 off the arena's threads.
int slot() { return tbb::this_task_arena::current_thread_index(); }

karx::Async<int> where() { co_return slot(); }

karx::Async<long> square(long x) { co_return (x * x); }

// A task that spawns onto the same executor and awaits what it spawned.
karx::Async<long> sum_of_squares(ArenaExecutor& executor, long n) {
  std::vector<karx::JoinHandle<long>> parts;
  for (long i = 0; i < n; ++i) parts.push_back(karx::spawn_on(executor, square(i)));
  long total = 0;
  for (auto& part : parts) total += *co_await part;  // pending until that task completes
  co_return total;
}

int main() {
  ArenaExecutor executor;

  std::vector<karx::JoinHandle<int>> slots;
  for (int i = 0; i < 100; ++i) slots.push_back(karx::spawn_on(executor, where()));
  int in_arena = 0;
  for (auto& s : slots) {
    int index = *karx::block_on(std::move(s));
    in_arena += index >= 0 && index < executor.threads();
  }
  std::printf("%d of 100 tasks ran on the arena's threads (slot < %d)\n", in_arena, executor.threads());

  auto total = karx::spawn_on(executor, sum_of_squares(executor, 1000));
  std::printf("sum of squares 0..999 = %ld\n", *karx::block_on(std::move(total)));

  executor.wait();  // every TBB task we enqueued has run: none is left to touch the executor
  std::printf("arena drained\n");
}
