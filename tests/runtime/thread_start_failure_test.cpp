// Thread creation failure: the runtime keeps running on the threads it has, counts each failed
// start, retries while work waits, and blocked work completes once a thread frees.
//
// The fault is real, not simulated: each test runs in a forked child that switches to a user
// of its own (so nobody else's processes count) and lowers RLIMIT_NPROC to the threads it
// already has, so the kernel refuses the next thread (`std::thread` throws std::system_error
// with EAGAIN). Raising the limit again plays "resources came back". Root is needed to switch
// users (the CI runs as root); elsewhere the tests say they were skipped and why.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <system_error>
#include <thread>

import karx;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The child's side: failures go to the parent through a pipe, one line each.
class Child {
 public:
  explicit Child(int fd) : fd_(fd) {}
  void check(bool ok, const std::string& what) {
    if (ok) return;
    const std::string line = what + "\n";
    (void)!::write(fd_, line.data(), line.size());
    failed_ = true;
  }
  bool failed() const { return failed_; }

 private:
  int fd_;
  bool failed_ = false;
};

int threads_of_this_process() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  return -1;
}

// No thread can be started until allow_threads(): the limit is what this user runs now.
void forbid_new_threads() {
  rlimit limit{};
  getrlimit(RLIMIT_NPROC, &limit);
  limit.rlim_cur = static_cast<rlim_t>(threads_of_this_process());
  if (setrlimit(RLIMIT_NPROC, &limit) != 0) std::perror("setrlimit");
}

void allow_threads() {
  rlimit limit{};
  getrlimit(RLIMIT_NPROC, &limit);
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NPROC, &limit) != 0) std::perror("setrlimit");
}

// Waits (generously) for `cond`; true if it came.
template <class Cond>
bool eventually(Cond cond, std::chrono::seconds limit = 20s) {
  const auto deadline = Clock::now() + limit;
  while (!cond()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Runs `body` in a forked child as a fresh user; reports its failures (or its crash) here.
void in_child(const std::function<void(Child&)>& body) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the child switches to a user of its own for RLIMIT_NPROC";
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    ::close(fds[0]);
    Child child(fds[1]);
    // A user id nobody else runs as, so that only this process counts against the limit.
    const uid_t id = 40000 + static_cast<uid_t>(::getpid() % 20000);
    child.check(::setresgid(id, id, id) == 0 && ::setresuid(id, id, id) == 0, "cannot switch to a fresh user");
    if (!child.failed()) body(child);
    ::_exit(child.failed() ? 1 : 0);
  }
  ::close(fds[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    report.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << (WIFSIGNALED(status) ? "child killed by signal " + std::to_string(WTERMSIG(status)) : "child failed") << ":\n"
      << report;
}

// A poll that blocks its thread until released (a call the runtime knows nothing about).
struct BlocksUntilReleased {
  std::atomic<bool>* started;
  std::atomic<bool>* release;
  karx::Poll<> poll(karx::Context&) {
    started->store(true);
    while (!release->load()) std::this_thread::sleep_for(1ms);
    return karx::ready();
  }
};

struct SetsFlag {
  std::atomic<bool>* flag;
  karx::Poll<> poll(karx::Context&) {
    flag->store(true);
    return karx::ready();
  }
};

karx::RuntimeOptions one_processor() {
  karx::RuntimeOptions o;
  o.processors = 1;
  o.max_threads = 16;
  o.blocking_threshold = 2ms;
  return o;
}

// Starts the runtime's worker (spawned work from outside runs there), so that only a handoff
// needs a new thread later.
void start_the_worker(Child& child, karx::Runtime& rt) {
  std::atomic<bool> ran{false};
  auto warm = rt.spawn(SetsFlag{&ran});
  child.check(eventually([&] { return ran.load(); }), "the first task never ran");
  warm.detach();
}

TEST(ThreadStartFailure, TheRuntimeConstructorSaysTheMonitorCouldNotStart) {
  in_child([](Child& child) {
    forbid_new_threads();
    try {
      karx::Runtime rt(one_processor());
      child.check(false, "the Runtime started although no thread could");
    } catch (const std::system_error& e) {
      child.check(std::string(e.what()).find("cannot start the monitor thread") != std::string::npos,
                  std::string("unexpected message: ") + e.what());
    }
    allow_threads();
    karx::Runtime rt(one_processor());
    child.check(rt.block_on(karx::Async<int>([]() -> karx::Async<int> { co_return 7; }())) == 7,
                "a Runtime made after the limit was raised does not work");
  });
}

TEST(ThreadStartFailure, AFailedHandoffIsCountedAndRetriedUntilAThreadStarts) {
  in_child([](Child& child) {
    karx::Runtime rt(one_processor());
    start_the_worker(child, rt);
    const auto before = rt.metrics();
    forbid_new_threads();

    std::atomic<bool> blocked_started{false}, release{false}, queued_ran{false};
    auto blocked = rt.spawn(BlocksUntilReleased{&blocked_started, &release});
    child.check(eventually([&] { return blocked_started.load(); }), "the blocking task never started");
    auto queued = rt.spawn(SetsFlag{&queued_ran});
    // The only worker is stuck: the monitor revokes its processor and cannot start a thread for
    // it, and keeps trying.
    child.check(eventually([&] { return rt.metrics().thread_start_failures >= 3; }),
                "the failed start was not counted and retried");
    child.check(!queued_ran.load(), "a task ran although no thread was free to run it");
    child.check(rt.metrics().threads_started == before.threads_started, "a failed start counted as started");

    // Resources come back while the worker is still blocked: a retry starts the thread.
    allow_threads();
    child.check(eventually([&] { return queued_ran.load(); }), "the queued task never ran after the limit rose");
    // Counted by the starting thread once std::thread returns, which may be after the new
    // thread ran the task: wait for it.
    child.check(eventually([&] { return rt.metrics().threads_started > before.threads_started; }),
                "no thread was started by the retry");
    release = true;
    child.check(karx::block_on(std::move(blocked)) && karx::block_on(std::move(queued)), "a handle did not complete");
  });
}

TEST(ThreadStartFailure, QueuedWorkRunsWhenTheBlockedWorkerReturns) {
  in_child([](Child& child) {
    karx::Runtime rt(one_processor());
    start_the_worker(child, rt);
    forbid_new_threads();

    std::atomic<bool> blocked_started{false}, release{false}, queued_ran{false};
    auto blocked = rt.spawn(BlocksUntilReleased{&blocked_started, &release});
    child.check(eventually([&] { return blocked_started.load(); }), "the blocking task never started");
    auto queued = rt.spawn(SetsFlag{&queued_ran});
    child.check(eventually([&] { return rt.metrics().thread_start_failures >= 1; }),
                "the failed start was not counted");
    child.check(!queued_ran.load(), "a task ran although no thread was free to run it");

    // Still no new thread possible: the blocked worker itself takes its processor back.
    release = true;
    child.check(karx::block_on(std::move(blocked)), "the blocked task did not complete");
    child.check(karx::block_on(std::move(queued)), "the queued task did not complete on the returning worker");
    child.check(queued_ran.load(), "the queued task's handle completed but it never ran");
    allow_threads();
  });
}

TEST(ThreadStartFailure, SpawnBlockingRetriesAndAlsoRunsOnAThreadThatFrees) {
  in_child([](Child& child) {
    karx::Runtime rt(one_processor());
    // Nothing can start: the blocking call waits, counted, until a retry succeeds.
    forbid_new_threads();
    std::atomic<bool> first_ran{false};
    auto first = rt.spawn_blocking([&] {
      first_ran = true;
      return 1;
    });
    child.check(eventually([&] { return rt.metrics().thread_start_failures >= 2; }),
                "the blocking pool's failed start was not counted and retried");
    child.check(!first_ran.load(), "the blocking call ran although no thread could start");
    allow_threads();
    child.check(karx::block_on(std::move(first)) == 1, "the blocking call did not run after the limit rose");
    // Let that thread park first: a call made while it is still finishing would start a second.
    child.check(eventually([&] { return rt.metrics().idle_threads == 1; }), "the pool thread never went idle");

    // One blocking thread is busy; the next call cannot get a thread of its own, and runs on
    // the busy one once it is done.
    std::atomic<bool> busy_started{false}, release{false};
    auto busy = rt.spawn_blocking([&] {
      busy_started = true;
      while (!release.load()) std::this_thread::sleep_for(1ms);
      return 2;
    });
    child.check(eventually([&] { return busy_started.load(); }), "the busy blocking call never started");
    forbid_new_threads();
    const auto failures = rt.metrics().thread_start_failures;
    std::atomic<bool> second_ran{false};
    auto second = rt.spawn_blocking([&] {
      second_ran = true;
      return 3;
    });
    child.check(eventually([&] { return rt.metrics().thread_start_failures > failures; }),
                "the second blocking call's failed start was not counted");
    child.check(!second_ran.load(), "the second blocking call ran while every thread was busy");
    release = true;
    child.check(karx::block_on(std::move(busy)) == 2, "the busy blocking call did not complete");
    child.check(karx::block_on(std::move(second)) == 3, "the second call did not run on the thread that freed");
    allow_threads();
  });
}

TEST(ThreadStartFailure, ASleepThrowsWhenTheTimerThreadCannotStartAndALaterOneWorks) {
  in_child([](Child& child) {
    forbid_new_threads();
    try {
      karx::block_on(karx::sleep_for(1ms));
      child.check(false, "the sleep finished although the timer thread could not start");
    } catch (const std::system_error& e) {
      child.check(std::string(e.what()).find("cannot start the timer driver thread") != std::string::npos,
                  std::string("unexpected message: ") + e.what());
    }
    allow_threads();
    const auto start = Clock::now();
    karx::block_on(karx::sleep_for(1ms));
    child.check(Clock::now() - start >= 1ms, "the later sleep did not wait");
  });
}

}  // namespace
