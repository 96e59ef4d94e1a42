// The thread-local state of Async chains (impl/task/chain.cppm, impl/task/frame_block.cppm)
// and of the cooperative budget (impl/task/coop.cppm).
module karx.task;

namespace karx::detail {

thread_local constinit AsyncPoll* current_async_poll = nullptr;
thread_local constinit void* fresh_frame = nullptr;
thread_local constinit int coop_budget = kCoopUnlimited;
thread_local constinit bool yield_requested = false;

}  // namespace karx::detail
