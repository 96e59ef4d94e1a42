// karx.sync:cancellation: CancellationToken, a tree of cancellation flags with futures that wait
// for them, and with_cancellation, which races a future against a token.
//
// A token is a handle (one pointer) to a node; copies share the node. Nodes made by child()
// hang below their parent, and cancelling a node cancels its whole subtree. The nodes of one
// tree (a root and everything made from it by child()) share one short lock, the tree lock,
// which guards the links (parent, children, siblings) and every change of a cancelled flag;
// each node has a lock of its own for its waiters, so waiters on different tokens never
// contend. The two locks are never held together.
//
// - child(): under the tree lock, links the new node below its parent, or makes it cancelled
//   and unlinked if the parent is cancelled already.
// - The last handle of a node (tokens and cancelled() futures both count): under the tree
//   lock, the node leaves its parent's list and hands its children to its parent (or makes
//   them roots). A long-lived parent's list holds only children that still have handles.
// - cancel(): under the tree lock, marks the subtree cancelled and detaches it, collecting its
//   nodes in a list threaded through the nodes themselves (breadth first: no recursion, no
//   allocation, however deep the tree); then, outside it, each node's waiters are taken under
//   that node's lock, 32 at a time, and woken after the lock is released.
//
// docs/design.md ("The token tree") walks through the races; the orderings are argued where
// they are used.
module;
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
export module karx.sync:cancellation;
import karx.waker;
import :lock;
import :wait_list;
import :combinators;  // RaceOutput, throw_polled_after_completion

namespace karx::detail {

// The lock of one token tree, shared by its nodes (each holds a reference).
struct TokenTree {
  std::atomic<std::size_t> refs{1};
  SyncLock lock;
};

struct TokenNode {
  explicit TokenNode(TokenTree* t) noexcept : tree(t) {}

  TokenTree* const tree;
  // Tokens and cancelled() futures referring to this node. At zero the node is unlinked.
  std::atomic<std::size_t> handles{1};
  // Owners of the memory: one for all the handles together, one per cancel() still walking it.
  std::atomic<std::size_t> refs{1};
  // Written only under tree->lock (release), read anywhere (acquire): once true, never false.
  std::atomic<bool> cancelled{false};

  // Guarded by tree->lock.
  TokenNode* parent = nullptr;
  TokenNode* first_child = nullptr;
  TokenNode* prev_sibling = nullptr;
  TokenNode* next_sibling = nullptr;
  TokenNode* cancel_next = nullptr;  // the list of a cancel() that collected this node

  // Guarded by lock: the cancelled() futures waiting on this node.
  SyncLock lock;
  WaitList waiters;
};

// Nodes allocated and not yet freed, process-wide (a test hook: nothing may leak).
std::atomic<std::size_t> token_nodes_alive{0};

void release_tree(TokenTree* tree) noexcept {
  // acq_rel: every node's use of the tree lock happens-before the last one frees it.
  if (tree->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete tree;
}

void release_node(TokenNode* n) noexcept {
  // acq_rel: every owner's use of the node happens-before the last owner frees it.
  if (n->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  TokenTree* tree = n->tree;
  delete n;
  token_nodes_alive.fetch_sub(1, std::memory_order_relaxed);
  release_tree(tree);
}

TokenNode* new_node(TokenTree* tree) {
  auto* n = new TokenNode(tree);
  token_nodes_alive.fetch_add(1, std::memory_order_relaxed);
  return n;
}

// Under the tree lock: takes n out of its parent's list of children.
void unlink_from_parent(TokenNode* n) noexcept {
  if (n->prev_sibling != nullptr)
    n->prev_sibling->next_sibling = n->next_sibling;
  else
    n->parent->first_child = n->next_sibling;
  if (n->next_sibling != nullptr) n->next_sibling->prev_sibling = n->prev_sibling;
  n->parent = n->prev_sibling = n->next_sibling = nullptr;
}

// Under the tree lock: puts c at the front of p's list of children.
void link_child(TokenNode* p, TokenNode* c) noexcept {
  c->parent = p;
  c->prev_sibling = nullptr;
  c->next_sibling = p->first_child;
  if (p->first_child != nullptr) p->first_child->prev_sibling = c;
  p->first_child = c;
}

void retain_handle(TokenNode* n) noexcept {
  // relaxed: made from a live handle, so the node cannot go meanwhile; publishes nothing.
  n->handles.fetch_add(1, std::memory_order_relaxed);
}

void release_handle(TokenNode* n) noexcept {
  // acq_rel: the last handle's owner sees every other handle's use of the node.
  if (n->handles.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  // No handle is left: nobody can cancel this node, wait on it or make a child of it. Unless
  // it was cancelled (then a cancel detached it, and it has no links: a cancelled node never
  // gets children), unlink it and give its children to its parent, whose cancel must still
  // reach them. acquire: pairs with the release store of the flag, made after that cancel took
  // its reference on the node (so the node outlives the cancel's walk).
  if (!n->cancelled.load(std::memory_order_acquire)) {
    SyncLockGuard guard(n->tree->lock);
    TokenNode* parent = n->parent;
    if (parent != nullptr) unlink_from_parent(n);
    for (TokenNode* c = n->first_child; c != nullptr;) {
      TokenNode* next = c->next_sibling;
      if (parent != nullptr) {
        link_child(parent, c);
      } else {  // a root's children become roots (of the same tree lock)
        c->parent = c->prev_sibling = c->next_sibling = nullptr;
      }
      c = next;
    }
    n->first_child = nullptr;
  }
  release_node(n);
}

TokenNode* new_root() {
  auto* tree = new TokenTree;
  try {
    return new_node(tree);
  } catch (...) {
    delete tree;
    throw;
  }
}

TokenNode* new_child(TokenNode* parent) {
  TokenTree* tree = parent->tree;
  // relaxed: the parent holds a reference, so the tree cannot go meanwhile.
  tree->refs.fetch_add(1, std::memory_order_relaxed);
  TokenNode* child;
  try {
    child = new_node(tree);
  } catch (...) {
    release_tree(tree);
    throw;
  }
  SyncLockGuard guard(tree->lock);
  // relaxed: the flag changes only under the tree lock, which we hold.
  if (parent->cancelled.load(std::memory_order_relaxed))
    // Not linked: nothing will ever need to reach it. relaxed: the node is not shared yet; whoever
    // gets it from us is ordered after our lock, which was ordered after the cancel's.
    child->cancelled.store(true, std::memory_order_relaxed);
  else
    link_child(parent, child);
  return child;
}

// Takes the waiters' wakers and wakes them outside the lock; keeps the first exception a wake
// throws (only a user's waker can) and goes on with the others.
void wake_batch(WakeBatch& batch, std::exception_ptr& failed) noexcept {
  for (;;) {
    try {
      batch.wake_all();  // resumes after the waker that threw
      return;
    } catch (...) {
      if (!failed) failed = std::current_exception();
    }
  }
}

void wake_waiters(TokenNode* n, std::exception_ptr& failed) noexcept {
  WakeBatch batch;
  n->lock.lock();
  while (!n->waiters.empty()) {
    batch.take_from(*n->waiters.pop_front());  // the waiter sees queued == false: cancelled
    if (batch.full()) {
      n->lock.unlock();
      wake_batch(batch, failed);
      n->lock.lock();
    }
  }
  n->lock.unlock();
  wake_batch(batch, failed);
}

void cancel_node(TokenNode* root) {
  TokenNode* head = nullptr;
  {
    SyncLockGuard guard(root->tree->lock);
    if (root->cancelled.load(std::memory_order_relaxed)) return;  // changes only under this lock
    if (root->parent != nullptr) unlink_from_parent(root);
    TokenNode* tail = nullptr;
    auto collect = [&](TokenNode* n) noexcept {
      // relaxed: a linked node keeps its handles' reference until it is unlinked under the
      // lock we hold, so it is alive; the increment publishes nothing.
      n->refs.fetch_add(1, std::memory_order_relaxed);
      // release, after the increment: a last handle that reads true (acquire) skips the tree
      // lock and drops the handles' reference, which must then not be the last one; and what
      // the cancelling thread did before cancel() reaches whoever sees the flag.
      n->cancelled.store(true, std::memory_order_release);
      n->cancel_next = nullptr;
      (tail != nullptr ? tail->cancel_next : head) = n;
      tail = n;
    };
    collect(root);
    // Breadth first through the list being built: each node's children go to its end.
    for (TokenNode* n = root; n != nullptr; n = n->cancel_next) {
      for (TokenNode* c = n->first_child; c != nullptr;) {
        TokenNode* next = c->next_sibling;
        c->parent = c->prev_sibling = c->next_sibling = nullptr;
        collect(c);
        c = next;
      }
      n->first_child = nullptr;
    }
  }
  // The list is ours alone now: its nodes are cancelled, so no other cancel collects them.
  std::exception_ptr failed;
  for (TokenNode* n = head; n != nullptr;) {
    TokenNode* next = n->cancel_next;
    wake_waiters(n, failed);
    release_node(n);
    n = next;
  }
  if (failed) std::rethrow_exception(failed);
}

[[noreturn]] void throw_moved_from(const char* what) {
  throw std::logic_error(std::string("karx::CancellationToken::") + what + ": the token was moved from");
}

// The future of CancellationToken::cancelled(): ready once the token is cancelled. Holds a
// handle of the node. Its WaitNode lives in it: once it has been polled and is waiting, it must
// not be moved (moving it then terminates with a diagnostic).
class CancelledFuture {
 public:
  // Takes over a handle of n.
  explicit CancelledFuture(TokenNode* n) noexcept : node_(n) {}
  CancelledFuture(CancelledFuture&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {
    if (other.registered_) moved_while_waiting();
  }
  CancelledFuture& operator=(CancelledFuture&&) = delete;
  ~CancelledFuture() {
    unregister();
    if (node_ != nullptr) release_handle(node_);
  }

  Poll<void> poll(Context& cx);
  // The node's flag, without registering (acquire: as in poll).
  bool cancelled_now() const noexcept { return node_->cancelled.load(std::memory_order_acquire); }
  // Stops waiting (the future stays usable).
  void unregister() noexcept;

 private:
  [[noreturn]] static void moved_while_waiting() noexcept;

  TokenNode* node_;
  WaitNode wait_;
  bool registered_ = false;  // in node_->waiters, or taken out by a cancel we have not seen yet
};

Poll<void> CancelledFuture::poll(Context& cx) {
  if (node_ == nullptr) throw std::logic_error("karx::CancellationToken::cancelled(): polled after it was moved from");
  Waker old = noop_waker();  // a replaced waker is dropped after the lock is released
  SyncLockGuard guard(node_->lock);
  if (!registered_) {
    // acquire: pairs with the canceller's release store; what it did before cancel() is
    // visible once we report ready. The canceller sets the flag before it takes this lock to
    // take the waiters: either we are in the list by then and it wakes us, or its unlock
    // happened-before our lock and we see the flag here.
    if (node_->cancelled.load(std::memory_order_acquire)) return ready();
    wait_.waker = cx.waker();
    node_->waiters.push_back(&wait_);
    registered_ = true;
    return pending;
  }
  if (!wait_.queued) {  // a cancel took us out (and our waker) under this lock: cancelled
    registered_ = false;
    return ready();
  }
  if (!wait_.waker.will_wake(cx.waker())) old = std::exchange(wait_.waker, cx.waker());
  return pending;
}

void CancelledFuture::unregister() noexcept {
  if (!registered_) return;
  registered_ = false;
  Waker old = noop_waker();
  // Always under the lock, even if a cancel took us out: its writes to wait_ (the links, the
  // waker it took) are ordered before our destruction of wait_ by it.
  SyncLockGuard guard(node_->lock);
  if (wait_.queued) node_->waiters.remove(&wait_);
  old = std::exchange(wait_.waker, noop_waker());
}

void CancelledFuture::moved_while_waiting() noexcept {
  std::fprintf(stderr,
               "karx: a CancellationToken::cancelled() future was moved while it was waiting (a future "
               "that has been polled must not be moved)\n");
  std::terminate();
}

struct TokenAccess;

}  // namespace karx::detail

export namespace karx {

// A handle to a cancellation flag. Copies share it; child() makes a token that is cancelled
// with this one (and its own children with it) but can be cancelled alone. cancel() and the
// const members may be called from any thread, also on one token object at once (none of them
// changes the handle).
class CancellationToken {
 public:
  // A new root token, not cancelled. Allocates (the node and the tree's lock).
  CancellationToken() : node_(detail::new_root()) {}
  CancellationToken(const CancellationToken& other) noexcept : node_(other.node_) {
    if (node_ != nullptr) detail::retain_handle(node_);
  }
  CancellationToken(CancellationToken&& other) noexcept : node_(std::exchange(other.node_, nullptr)) {}
  CancellationToken& operator=(const CancellationToken& other) noexcept {
    if (other.node_ != nullptr) detail::retain_handle(other.node_);
    reset(other.node_);
    return *this;
  }
  CancellationToken& operator=(CancellationToken&& other) noexcept {
    if (this != &other) reset(std::exchange(other.node_, nullptr));
    return *this;
  }
  ~CancellationToken() { reset(nullptr); }

  // Cancels this token and every token below it; wakes their cancelled() futures (outside any
  // lock). Idempotent. Rethrows the first exception a woken waker threw, after waking the rest.
  void cancel() { detail::cancel_node(node("cancel()")); }
  // True once this token or an ancestor was cancelled (acquire: what the canceller did before
  // cancel() is visible then).
  bool is_cancelled() const { return node("is_cancelled()")->cancelled.load(std::memory_order_acquire); }
  // A token below this one: cancelled when this one is (already cancelled if this one is).
  CancellationToken child() const { return CancellationToken(detail::new_child(node("child()"))); }
  // A Future<void>, ready once this token is cancelled. Holds a copy of the token.
  detail::CancelledFuture cancelled() const {
    detail::TokenNode* n = node("cancelled()");
    detail::retain_handle(n);
    return detail::CancelledFuture(n);
  }

 private:
  friend struct detail::TokenAccess;
  explicit CancellationToken(detail::TokenNode* n) noexcept : node_(n) {}
  detail::TokenNode* node(const char* what) const {
    if (node_ == nullptr) detail::throw_moved_from(what);
    return node_;
  }
  void reset(detail::TokenNode* n) noexcept {
    if (node_ != nullptr) detail::release_handle(node_);
    node_ = n;
  }

  detail::TokenNode* node_;
};

}  // namespace karx

namespace karx::detail {

struct TokenAccess {
  static TokenNode* node(const CancellationToken& t) noexcept { return t.node_; }
};

template <class F>
class WithCancellation {
 public:
  using Race = RaceOutput<output_of<F>>;
  using Output = typename Race::type;

  WithCancellation(CancelledFuture&& cancelled, F&& f) : cancelled_(std::move(cancelled)), future_(std::move(f)) {}

  // The token's flag first (a cancelled token's future is not polled again), then the future,
  // then the wait on the token (registered only while the future is pending).
  Poll<Output> poll(Context& cx) {
    if (!future_) throw_polled_after_completion("karx::with_cancellation");
    try {
      if (!cancelled_.cancelled_now()) {
        auto p = future_->poll(cx);
        if (p.is_ready()) {
          finish();
          return Race::won(std::move(p));
        }
        if (cancelled_.poll(cx).is_pending()) return pending;
      }
    } catch (...) {
      finish();
      throw;
    }
    finish();  // cancelled first: the future is destroyed
    return Race::lost();
  }

 private:
  void finish() noexcept {
    future_.reset();
    cancelled_.unregister();
  }

  CancelledFuture cancelled_;
  std::optional<F> future_;  // empty once finished
};

}  // namespace karx::detail

export namespace karx {

// f's output (void: true), or nullopt (void: false) if t is cancelled first; f is then
// destroyed. The token is checked before each poll of f.
template <Future F>
  requires std::move_constructible<F>
auto with_cancellation(CancellationToken t, F f) {
  return detail::WithCancellation<F>(t.cancelled(), std::move(f));
}

}  // namespace karx

// Test hooks (not API): the children a token's node lists now, and the nodes alive.
export namespace karx::detail {
std::size_t token_child_count(const CancellationToken& t) {
  TokenNode* n = TokenAccess::node(t);
  SyncLockGuard guard(n->tree->lock);
  std::size_t count = 0;
  for (TokenNode* c = n->first_child; c != nullptr; c = c->next_sibling) ++count;
  return count;
}
std::size_t token_nodes_alive_count() noexcept { return token_nodes_alive.load(std::memory_order_relaxed); }
}  // namespace karx::detail
