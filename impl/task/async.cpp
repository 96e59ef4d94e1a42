// The thread-local state of Async chains (impl/task/chain.cppm, impl/task/frame_block.cppm)
// and of the cooperative budget (impl/task/coop.cppm); the bounded destruction of a chain.
module;
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <vector>
module karx.task;

namespace karx::detail {

thread_local constinit AsyncPoll* current_async_poll = nullptr;
thread_local constinit void* fresh_frame = nullptr;
thread_local constinit int coop_budget = kCoopUnlimited;
thread_local constinit bool yield_requested = false;

namespace {
// 512 nested frame destructions take well under 1 MB of stack in any build.
constexpr int kMaxNestedFrameDestroys = 512;
thread_local constinit int frame_destroy_depth = 0;
thread_local constinit std::vector<std::coroutine_handle<>>* deferred_frames = nullptr;

void destroy_nested(std::coroutine_handle<> frame) noexcept {
  ++frame_destroy_depth;
  frame.destroy();
  --frame_destroy_depth;
}
}  // namespace

void destroy_unfinished_frame(std::coroutine_handle<> frame, FrameDestroy when) noexcept {
  if (frame_destroy_depth >= kMaxNestedFrameDestroys && when == FrameDestroy::may_queue) {
    try {
      deferred_frames->push_back(frame);
    } catch (...) {
      std::fputs("karx: fatal: out of memory queueing the destruction of a deep Async chain\n", stderr);
      std::abort();
    }
    return;
  }
  if (frame_destroy_depth > 0) {
    destroy_nested(frame);
    return;
  }
  // The outermost destroy on this thread: it runs what deeper ones queued, each from depth 0.
  std::vector<std::coroutine_handle<>> queued;
  deferred_frames = &queued;
  destroy_nested(frame);
  while (!queued.empty()) {
    const std::coroutine_handle<> next = queued.back();
    queued.pop_back();
    destroy_nested(next);
  }
  deferred_frames = nullptr;
}

}  // namespace karx::detail
