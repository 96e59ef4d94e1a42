// Cancelling a task from a waker of it: what JoinHandle::cancel() does, for a holder of the
// task's waker that is not its handle (a TaskGroup cancelling its children).
module;
export module karx.task:remote_cancel;
import karx.waker;
import :header;

export namespace karx::detail {

// `task_waker` must be a waker made by JoinHandle::waker() or Task::waker() (its data is the
// task's header); the reference it holds keeps the block alive through the call, and, counted
// beside the run's own, keeps the task out of the windows where its state word is stored
// plainly (listing.cppm). The task is closed: if idle it is scheduled once more, and that run
// destroys its future; its handle then yields "canceled". After completion it does nothing.
inline void cancel_task_by_waker(const Waker& task_waker) {
  cancel_handle(static_cast<Header*>(const_cast<void*>(task_waker.as_raw().data)));
}

}  // namespace karx::detail
