// The thread-local state of Async chains (impl/task/chain.cppm, impl/task/frame_block.cppm).
module karx.task;

namespace karx::detail {

thread_local constinit AsyncPoll* current_async_poll = nullptr;
thread_local constinit void* fresh_frame = nullptr;

}  // namespace karx::detail
