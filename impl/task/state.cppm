// The task state word: eight flag bits and a reference count above them.
//
// Every transition is a CAS loop (or one fetch_*) on this single word, so a task is never run
// twice at once, never scheduled twice at once, and its future is destroyed exactly once.
// docs/design.md has the full transition table and the ordering argument.
module;
#include <cstddef>
export module karx.task:state;

namespace karx::detail::state {

// The task is in (or on its way to) a run queue: a `Task` object exists for it.
inline constexpr std::size_t SCHEDULED = 1u << 0;
// Its future is being polled right now (inside `run`).
inline constexpr std::size_t RUNNING = 1u << 1;
// The future returned ready (or threw): the union now holds the output.
inline constexpr std::size_t COMPLETED = 1u << 2;
// Canceled, or the output was taken: the future will not be polled again.
inline constexpr std::size_t CLOSED = 1u << 3;
// The JoinHandle still exists.
inline constexpr std::size_t HANDLE = 1u << 4;
// A waker is registered in the awaiter slot (to be woken on completion or cancel).
inline constexpr std::size_t AWAITER = 1u << 5;
// The handle is writing the awaiter slot; notifiers must leave it alone.
inline constexpr std::size_t REGISTERING = 1u << 6;
// A notifier is taking the waker out of the awaiter slot.
inline constexpr std::size_t NOTIFYING = 1u << 7;
// One reference: held by the `Task` and by every Waker of the task. The JoinHandle is the
// HANDLE bit, not a reference.
inline constexpr std::size_t REFERENCE = 1u << 8;
// Mask of the reference-count bits.
inline constexpr std::size_t REFERENCE_MASK = ~(REFERENCE - 1);

// A freshly spawned task: scheduled (the returned Task), one reference (that Task), a handle.
inline constexpr std::size_t INITIAL = SCHEDULED | HANDLE | REFERENCE;
// A task spawned without a handle (spawn_detached): scheduled, one reference.
inline constexpr std::size_t INITIAL_DETACHED = SCHEDULED | REFERENCE;

}  // namespace karx::detail::state
