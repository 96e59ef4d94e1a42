// TaskGroup: structured concurrency. Children are tasks spawned through the group; join()
// waits until every child's future is gone; the first child to throw cancels the others, and
// join() rethrows its exception; destroying the group cancels the children still running
// (it never blocks).
//
// Protocol. The group's state is shared (a shared_ptr) by the group and every child's future,
// so either may go first. Each child has a node in the group's list, allocated by spawn():
// the node holds a waker of the child's task, a reference that keeps the task block alive and
// lets the group cancel it at any time (detail::cancel_task_by_waker). A child reports once,
// from its future's destructor (completed, cancelled, or dropped by its executor's teardown),
// after its own future has been destroyed: `live` goes down, and the last one wakes the
// joiners. The node is freed by whichever of spawn() (which registers the waker after the
// spawn returned) and the report comes second. All of it under one short lock; wakers are
// woken and task references dropped after the lock is released.
module;
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
export module karx.sync:task_group;
import karx.waker;
import karx.task;
import karx.executor;
import :lock;
import :wait_list;
import :fatal;

namespace karx::detail {

struct GroupChildNode : WaitNode {  // `waker` holds the child's task reference once registered
  bool registered = false;          // spawn() stored the task's waker
  bool finished = false;            // the child's future is gone
  bool cancel_sent = false;
};

struct GroupJoinNode : WaitNode {
  std::atomic<bool> done{false};
};

// Spawns onto the runtime, or onto any karx::Executor through a type-erased schedule.
struct GroupSpawner {
  Runtime* runtime = nullptr;
  void* executor = nullptr;
  void (*schedule)(void*, Task<>) = nullptr;
};

class GroupState {
 public:
  explicit GroupState(GroupSpawner spawner) noexcept : spawner_(spawner) {}

  const GroupSpawner& spawner() const noexcept { return spawner_; }

  // Before the spawn: the node is linked and counted.
  void add_child(GroupChildNode* node) noexcept {
    SyncLockGuard guard(lock_);
    children_.push_back(node);
    ++live_;
  }
  // After the spawn returned: keep a reference to the task for cancelling, unless the child
  // already finished (then the node is ours to free). Cancels it at once if the group was
  // cancelled meanwhile.
  void register_child(GroupChildNode* node, Waker task) {
    bool cancel_now = false;
    bool free_node = false;
    {
      SyncLockGuard guard(lock_);
      if (node->finished) {
        children_.remove(node);
        free_node = true;
      } else {
        node->waker = task;  // a clone: one more task reference, held until the report
        node->registered = true;
        // cancel_sent already set: the child threw before we got here (child_failed) and is
        // completing with its exception; cancelling it now would drop that exception from
        // its own handle.
        cancel_now = cancelled_ && !node->cancel_sent;
        if (cancel_now) node->cancel_sent = true;
      }
    }
    if (free_node) delete node;
    if (cancel_now) cancel_task_by_waker(task);
  }
  // The spawn threw: the child never ran (its future, if made, already reported).
  void abandon_child(GroupChildNode* node) noexcept {
    {
      SyncLockGuard guard(lock_);
      children_.remove(node);
      if (!node->finished) --live_;  // (no future was made to report)
    }
    delete node;
  }

  // The child's future is gone.
  void child_finished(GroupChildNode* node) noexcept {
    Waker task_ref = noop_waker();
    bool free_node = false;
    WakeBatch wake;
    SyncLockGuard guard(lock_);
    node->finished = true;
    if (node->registered) {
      children_.remove(node);
      task_ref = std::exchange(node->waker, noop_waker());
      free_node = true;
    }
    if (--live_ == 0) wake_joiners(guard, wake);
    guard.unlock();
    if (free_node) delete node;
    // task_ref is dropped here, outside the lock (it may be the task's last reference but one:
    // the run calling us holds another).
  }

  // A child's poll threw: keep the first exception, cancel the other children.
  void child_failed(GroupChildNode* self, std::exception_ptr error) noexcept {
    {
      SyncLockGuard guard(lock_);
      if (!error_) error_ = std::move(error);
      self->cancel_sent = true;  // it is completing with its exception, not cancelled
    }
    cancel();
  }

  // Cancels every child not finished, in batches (no allocation: a group's destructor calls
  // this). Each child is cancelled once.
  void cancel() noexcept {
    for (;;) {
      RawWaker batch[WakeBatch::kCapacity];
      std::size_t n = 0;
      {
        SyncLockGuard guard(lock_);
        cancelled_ = true;
        for (WaitNode* it = children_.front(); it != nullptr && n < WakeBatch::kCapacity; it = it->next) {
          auto* c = static_cast<GroupChildNode*>(it);
          if (!c->registered || c->finished || c->cancel_sent) continue;
          c->cancel_sent = true;
          batch[n++] = Waker(c->waker).into_raw();  // a clone, taken while the node holds its reference
        }
      }
      if (n == 0) return;
      for (std::size_t i = 0; i < n; ++i) cancel_task_by_waker(Waker::from_raw(batch[i]));
    }
  }

  std::size_t live() noexcept {
    SyncLockGuard guard(lock_);
    return live_;
  }

  // join(): ready when no child is live; rethrows the first child exception.
  Poll<void> poll_join(GroupJoinNode& node, Context& cx) {
    if (!node.done.load(std::memory_order_acquire)) {
      SyncLockGuard guard(lock_);
      if (live_ != 0) {
        Waker replaced = node.exchange_waker(cx.waker());
        if (!node.queued) joiners_.push_back(&node);
        guard.unlock();  // the replaced waker is dropped outside the lock
        return pending;
      }
      if (node.queued) joiners_.remove(&node);
    }
    std::exception_ptr error;
    {
      SyncLockGuard guard(lock_);
      error = error_;
    }
    if (error) std::rethrow_exception(error);
    return ready();
  }
  void cancel_join(GroupJoinNode& node) noexcept {
    SyncLockGuard guard(lock_);
    if (node.queued) joiners_.remove(&node);
  }

 private:
  void wake_joiners(SyncLockGuard& guard, WakeBatch& wake) noexcept {
    for (;;) {
      while (!wake.full() && !joiners_.empty()) {
        auto& j = static_cast<GroupJoinNode&>(*joiners_.pop_front());
        wake.take_from(j);
        j.done.store(true, std::memory_order_release);  // last touch of the node
      }
      if (joiners_.empty()) return;
      guard.unlock();
      wake.wake_all();
      guard.relock(lock_);
    }
  }

  const GroupSpawner spawner_;
  SyncLock lock_;
  WaitList children_;
  WaitList joiners_;
  std::size_t live_ = 0;
  bool cancelled_ = false;
  std::exception_ptr error_;
};

// A child's future: the user's future, plus the membership that reports to the group once
// the user's future has been destroyed (it is declared first, so it is destroyed last).
template <class F>
class GroupChild {
  struct Membership {
    std::shared_ptr<GroupState> group;
    GroupChildNode* node;
    Membership(std::shared_ptr<GroupState> g, GroupChildNode* n) noexcept : group(std::move(g)), node(n) {}
    Membership(Membership&& o) noexcept : group(std::move(o.group)), node(o.node) {}
    ~Membership() {
      if (group) group->child_finished(node);
    }
  };

 public:
  GroupChild(std::shared_ptr<GroupState> group, GroupChildNode* node, F&& future)
      : membership_(std::move(group), node), future_(std::move(future)) {}
  GroupChild(GroupChild&&) noexcept = default;

  Poll<output_of<F>> poll(Context& cx) {
    try {
      return future_.poll(cx);
    } catch (...) {
      membership_.group->child_failed(membership_.node, std::current_exception());
      throw;
    }
  }

 private:
  Membership membership_;
  F future_;
};

}  // namespace karx::detail

export namespace karx {

// The future of TaskGroup::join(): a Future<void>. Destroying it stops waiting (the children
// go on). It borrows the group's state: keep the TaskGroup alive while it exists.
class TaskGroupJoin {
 public:
  TaskGroupJoin(TaskGroupJoin&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {
    if (other.node_.queued)
      detail::sync_fatal("a karx.sync future was moved while it waited (a polled future must stay where it is)");
  }
  TaskGroupJoin& operator=(TaskGroupJoin&&) = delete;
  ~TaskGroupJoin() {
    if (state_ != nullptr) state_->cancel_join(node_);
  }
  Poll<void> poll(Context& cx) {
    if (state_ == nullptr) throw std::logic_error("karx::TaskGroup::join(): the future was moved from");
    return state_->poll_join(node_, cx);
  }

 private:
  friend class TaskGroup;
  explicit TaskGroupJoin(detail::GroupState* state) noexcept : state_(state) {}
  detail::GroupState* state_;
  detail::GroupJoinNode node_;
};

class TaskGroup {
 public:
  // Spawns onto Runtime::current() (the runtime running the caller), else the global runtime.
  TaskGroup() : TaskGroup(current_or_global()) {}
  explicit TaskGroup(Runtime& runtime)
      : state_(std::make_shared<detail::GroupState>(detail::GroupSpawner{&runtime, nullptr, nullptr})) {}
  // Spawns onto any executor (the simulation, a user's); it must outlive the children.
  template <Executor E>
  requires(!std::same_as<E, Runtime>) explicit TaskGroup(E& executor)
      : state_(std::make_shared<detail::GroupState>(detail::GroupSpawner{
            nullptr, &executor, [](void* e, Task<> t) { static_cast<E*>(e)->schedule(std::move(t)); }})) {}

  TaskGroup(TaskGroup&&) noexcept = default;
  TaskGroup& operator=(TaskGroup&& other) noexcept {
    if (this != &other) {
      if (state_) state_->cancel();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  // Cancels the children still running; does not wait for them.
  ~TaskGroup() {
    if (state_) state_->cancel();
  }

  // Spawns a child. In a group already cancelled (or failed), the child is cancelled at once.
  template <Future F>
  requires std::move_constructible<F> JoinHandle<output_of<F>> spawn(F future) {
    const std::shared_ptr<detail::GroupState>& state = checked("spawn");
    auto* node = new detail::GroupChildNode;
    std::optional<detail::GroupChild<F>> child;
    try {
      child.emplace(state, node, std::move(future));
    } catch (...) {
      delete node;
      throw;
    }
    state->add_child(node);
    JoinHandle<output_of<F>> handle;
    try {
      handle = spawn_child(state->spawner(), std::move(*child));
    } catch (...) {
      child.reset();  // (moved from: reports nothing; the spawn's own copy reported)
      state->abandon_child(node);
      throw;
    }
    state->register_child(node, handle.waker());
    return handle;
  }

  // Waits for every child; if one threw, rethrows the first exception (the others were
  // cancelled and have finished).
  TaskGroupJoin join() { return TaskGroupJoin(checked("join").get()); }
  // Cancels every child not finished (their handles yield "canceled").
  void cancel() { checked("cancel")->cancel(); }
  // The children whose futures are not gone yet.
  std::size_t size() const { return checked("size")->live(); }

 private:
  static Runtime& current_or_global() {
    Runtime* current = Runtime::current();
    return current != nullptr ? *current : global_runtime();
  }
  const std::shared_ptr<detail::GroupState>& checked(const char* what) const {
    if (!state_) throw std::logic_error(std::string("karx::TaskGroup::") + what + "(): the group was moved from");
    return state_;
  }
  template <class F>
  static JoinHandle<output_of<F>> spawn_child(const detail::GroupSpawner& s, detail::GroupChild<F>&& child) {
    if (s.runtime != nullptr) return s.runtime->spawn(std::move(child));
    auto [task, handle] =
        karx::spawn(std::move(child), [e = s.executor, schedule = s.schedule](Task<> t) { schedule(e, std::move(t)); });
    task.schedule();
    return std::move(handle);
  }

  std::shared_ptr<detail::GroupState> state_;
};

}  // namespace karx
