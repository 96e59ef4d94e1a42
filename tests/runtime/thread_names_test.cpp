// The threads a runtime starts carry names (karx-worker, karx-blocking, karx-monitor) for top,
// gdb and perf; a thread that calls block_on is the caller's and keeps its own name.
#include <gtest/gtest.h>

#include <coroutine>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "support/thread_name.hpp"

import karx;

namespace {

using probes::this_thread_name;

karx::Async<std::string> report_name() { co_return this_thread_name(); }

// Whether a thread of this process is named `name` (/proc/self/task/<tid>/comm).
bool some_thread_named(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) return true;
  }
  return false;
}

TEST(ThreadNames, TheRuntimesThreadsAreNamedAndAGuestKeepsItsOwn) {
  karx::Runtime rt(karx::RuntimeOptions{.processors = 2});
  // Awaited from outside, so a worker runs it (no guest).
  EXPECT_EQ(karx::block_on(rt.spawn(report_name())), std::optional<std::string>("karx-worker"));
  EXPECT_EQ(karx::block_on(rt.spawn_blocking([] { return this_thread_name(); })),
            std::optional<std::string>("karx-blocking"));
  EXPECT_TRUE(some_thread_named("karx-monitor"));
  // block_on's root runs on the calling thread, which is not renamed.
  const std::string mine = this_thread_name();
  EXPECT_EQ(rt.block_on(report_name()), mine);
  EXPECT_EQ(this_thread_name(), mine);
}

}  // namespace
