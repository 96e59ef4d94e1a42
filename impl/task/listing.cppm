// Listing: the tasks that wait on a waker held elsewhere, found through their blocks.
//
// An executor that must reach its idle tasks (a task no queue holds, waiting for a wake that
// may never come) lists each one while it waits: the runtime lists a task when a poll first
// returns pending and unlists it when its future is destroyed (ScheduleOnRuntime's hooks), and
// its shutdown visits the listed blocks to wake and so drop them. The listing belongs to the
// block, not to the task: a slab block is a bit in its page's listing map (slab.cppm), any
// other block a node in front of it (alloc.cppm, SystemBlockNode) on one list. So a task
// carries no list node, and listing a slab block takes no lock: one RMW on a word that only
// the tasks of 64 neighbouring steps of one page share.
//
// impl/task/listing.cpp has both halves of the protocol between an unlist and a visit.
module;
#include <cstddef>
export module karx.task:listing;
import karx.waker;

// Exported for the executors built into karx (the runtime is its one user), not for users.
export namespace karx::detail {

// A task's block as the listing needs it: its address (the block's first byte, where every
// cell puts the task's header) and whether the slab served it (alloc.cppm, slab_serves).
struct TaskBlock {
  void* address;
  bool in_slab;
};

// By the task's holder only (inside its poll, or where its future is destroyed), at most once
// each per listing: a block is listed or not, and the caller knows which.
void list_task_block(TaskBlock block) noexcept;
// Returns once no visit can be looking at the block, so that the caller may go on to free it.
void unlist_task_block(TaskBlock block) noexcept;

// Calls visit(block, context) for every block listed before the call and still listed, and
// perhaps for some listed meanwhile, until visit returns false. During the call the block is
// listed, so its task is alive (its unlister waits): visit may read it and take a reference
// to it with reference_listed_task (not a plain clone: see there). It must not drop a reference, or wait for anything another thread's unlist could
// hold up (the unlist waits for this visit to end).
using ListedBlockVisitor = bool (*)(void* block, void* context) noexcept;
void visit_listed_task_blocks(ListedBlockVisitor visit, void* context) noexcept;

// Inside a visit: a new reference to the listed task at `block`, as the RawWaker that owns it,
// or an empty RawWaker if the task cannot take one now. The visitor holds no reference, and
// the state machine writes the state word with a plain store (not an RMW) where it knows one
// party holds the task alone: a run's start, end and reschedule with one reference and no
// handle, and the last reference's final schedule. An increment there would be lost. So the
// reference is taken by CAS, and only outside those windows: the task is then queued, running
// or being scheduled by its one holder, who deals with it, and the visitor comes back later.
// impl/task/raw.cpp.
RawWaker reference_listed_task(void* block) noexcept;

}  // namespace karx::detail
