// The bookkeeping of an Async chain: what a suspended chain keeps between polls (one pointer),
// and what a poll in progress shares with the frames it resumes (on the poller's stack).
//
// A chain is a root frame and the child frames it awaits (co_await of an Async), each running
// by symmetric transfer. When a leaf future (co_await of any other Future) is pending, the
// whole chain suspends and the root's poll returns pending. The next poll polls that leaf
// future again, without resuming anything, and resumes the leaf's frame once it is ready.
//
// Why the poll's state lives on the stack and is found through a thread-local pointer rather
// than in the frames: every frame of a chain runs only inside its root's poll, on the polling
// thread, so the context, the chain's root and an exception on its way from one frame to the
// next are needed only for the duration of that poll. Keeping them in the promise cost every
// frame 56 bytes (a 1,000,000-task workload's frames were 144 bytes); now a promise is one
// word. A poll of another chain nested inside (an Async polled as a plain Future by a frame of
// this one) installs its own state and restores ours when it returns.
module;
#include <coroutine>
#include <exception>
#include <new>
#include <utility>
export module karx.task:chain;
import karx.waker;

namespace karx::detail {

// The awaiter of the future a suspended chain waits on (a FutureAwaiter, in the leaf's frame).
struct AsyncLeaf {
  // Polls the awaited future again. True once it is ready: its value is stored in the awaiter
  // (or its exception in the poll's error slot) and `frame` is to be resumed.
  bool (*poll_again)(AsyncLeaf*, Context&) noexcept;
  std::coroutine_handle<> frame;
};

// What a chain keeps between polls: in the Async object that owns the root frame, or in the
// task cell in front of a spawned Async's frame.
struct AsyncRoot {
  AsyncLeaf* leaf = nullptr;  // null: the chain is not suspended on a leaf (not started yet)
};

// Destroys a frame that has not finished (an Async dropped before completion, or a spawned
// Async's task canceled). Destroying a suspended frame destroys the Async it awaits, and so on
// down the chain: one nested destroy per frame. Beyond kMaxNestedFrameDestroys nested on this
// thread, a frame's destruction is queued instead and run by the outermost destroy once the
// frame above it is gone, so a chain of any depth is torn down in bounded stack. (Up to that
// depth the order is exactly the language's: a child before the rest of its parent.)
// A frame that lives in a task's block (a spawned Async's root) is destroyed `now` whatever the
// depth: the task frees the block right after. impl/task/async.cpp.
enum class FrameDestroy { may_queue, now };
void destroy_unfinished_frame(std::coroutine_handle<> frame, FrameDestroy when = FrameDestroy::may_queue) noexcept;

class AsyncPoll;
// The chain poll in progress on this thread (null between polls). constinit and trivially
// destructible: an access is one thread-pointer-relative load, with no initialization guard.
// Defined in impl/task/async.cpp.
extern thread_local constinit AsyncPoll* current_async_poll;

// One poll of a chain, on the poller's stack; it is the thread's current poll while it exists.
// (`inline` throughout: a named module's in-class definitions are not implicitly inline, and
// this is on every coroutine task's path.)
class AsyncPoll {
 public:
  inline AsyncPoll(AsyncRoot& root, Context& cx) noexcept
      : cx_(&cx), root_(&root), outer_(std::exchange(current_async_poll, this)) {}
  AsyncPoll(const AsyncPoll&) = delete;
  AsyncPoll& operator=(const AsyncPoll&) = delete;
  inline ~AsyncPoll() {
    current_async_poll = outer_;
    if (failed_) [[unlikely]]
      error_.~exception_ptr();
  }

  // Runs the chain of `root_frame` until it finishes or suspends on a pending leaf. Returns
  // true when the root frame finished (then failed() tells whether by an exception).
  inline bool resume(std::coroutine_handle<> root_frame) {
    std::coroutine_handle<> next = root_frame;
    if (AsyncLeaf* leaf = root_->leaf) {
      if (!leaf->poll_again(leaf, *cx_)) return false;
      root_->leaf = nullptr;
      next = leaf->frame;
    }
    next.resume();
    return root_frame.done();
  }

  inline Context& context() const noexcept { return *cx_; }
  // The leaf's await_suspend: the chain now waits on `leaf`.
  inline void suspend_on(AsyncLeaf* leaf) noexcept { root_->leaf = leaf; }

  // The error slot. An exception that escapes a frame (unhandled_exception) or a leaf's
  // re-poll is stored here and taken by whoever runs next in this poll: the parent frame's
  // await_resume, the leaf frame's await_resume, or the root's poller. Exactly one is in
  // flight at a time, since nothing runs between the store and the take. A union with a flag,
  // so that a poll without an exception never constructs or destroys an exception_ptr (in
  // libstdc++ those are out-of-line calls).
  inline bool failed() const noexcept { return failed_; }
  inline void fail(std::exception_ptr e) noexcept {
    if (failed_) {
      error_ = std::move(e);
    } else {
      ::new (static_cast<void*>(&error_)) std::exception_ptr(std::move(e));
      failed_ = true;
    }
  }
  inline std::exception_ptr take_error() noexcept {
    std::exception_ptr e = std::move(error_);
    error_.~exception_ptr();
    failed_ = false;
    return e;
  }
  // In an await_resume: rethrows the exception in flight, if any.
  inline static void rethrow_pending_error() {
    AsyncPoll* poll = current_async_poll;
    if (poll->failed_) [[unlikely]]
      std::rethrow_exception(poll->take_error());
  }

 private:
  Context* cx_;
  AsyncRoot* root_;
  AsyncPoll* outer_;
  bool failed_ = false;
  union {
    std::exception_ptr error_;
  };
};

}  // namespace karx::detail
