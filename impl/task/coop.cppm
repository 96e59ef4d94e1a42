// The cooperative budget: how many times a task may find a karx future ready in one turn.
//
// A task that awaits futures already ready (the handles of finished tasks, zero sleeps) never
// returns Pending, so it never lets its worker run anything else: on one processor, nothing
// else runs at all. As tokio's coop module does, each turn of a task on a runtime's worker
// gets kCoopBudget; karx's own futures that can report ready for ever (JoinHandle, Sleep) ask
// coop_proceed first, and once the budget is spent they report Pending instead, after waking
// the task and asking that its next schedule go to the back of the worker's queue (a yield).
// Off the runtime's workers the budget is unlimited: other executors decide for themselves.
module;
export module karx.task:coop;
import karx.waker;

// Exported for karx.executor (which sets the budget around each poll), karx.time and the
// task layer's own futures; not for users.
export namespace karx::detail {

inline constexpr int kCoopUnlimited = -1;
inline constexpr int kCoopBudget = 128;

// The budget left in the current task's turn on this thread (kCoopUnlimited outside a turn),
// and whether the next schedule of the running task from this thread goes to the back of the
// queue (set by yield_now and by a spent budget; the worker clears it after every poll).
// constinit and trivially destructible: one thread-pointer-relative access. impl/task/async.cpp.
extern thread_local constinit int coop_budget;
extern thread_local constinit bool yield_requested;

// False when the budget is spent: the caller reports Pending (its task is woken and yields).
inline bool coop_proceed(Context& cx) noexcept {
  int& left = coop_budget;
  if (left == kCoopUnlimited) return true;
  if (left > 0) {
    --left;
    return true;
  }
  yield_requested = true;
  cx.waker().wake();  // by reference: the waker stays the context's
  return false;
}

}  // namespace karx::detail
