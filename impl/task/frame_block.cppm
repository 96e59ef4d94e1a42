// The block of an Async frame: room for a task in front of the frame, so that spawning an
// Async costs no second allocation.
//
//   block:  [ prefix: room for the task cell ........... | FrameTail ][ coroutine frame ... ]
//                                                                      ^ what operator new returns
//
// A coroutine's frame is allocated when the coroutine is called, before anyone knows whether
// it will be spawned, awaited as a child, or polled by hand. So every frame's block keeps
// frame_prefix<T> bytes in front of it: the 4-word header, kCellRoom bytes for the tag and the
// schedule function (the runtime's takes 24), and the stage (the chain's root while the
// future lives, the output after). spawn() of an Async whose cell fits builds the task in
// that room and the frame becomes part of the task: one block, freed when the task is.
// A frame that is never spawned pays for the room unused (80 bytes for Async<void>); a
// spawned one saves the second block and its allocator overhead (docs/design.md, "Async<T>").
//
// The tail word tells operator delete who owns the block: the frame (free it with the frame)
// or a task (the frame's destruction leaves the block to the task, whose own destruction
// frees it). It also keeps the frame's size, which the task needs to free the block.
module;
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
export module karx.task:frame_block;
import :alloc;
import :chain;
import :header;
import :outcome;

namespace karx::detail {

// Bytes kept for the tag and the schedule function of a task spawned in a frame's block
// (exported: the runtime checks that its schedule function fits).
export inline constexpr std::size_t kCellRoom = 16;
inline constexpr std::size_t kFrameAlign = alignof(std::max_align_t);

struct FrameTail {
  std::uint32_t frame_size;
  std::uint32_t task_owned;  // set by spawn: the frame no longer owns its block
};

inline constexpr std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// Where the stage of a cell in the prefix starts, and how large the prefix is for Async<T>
// (0: no room kept, for an output too large or too aligned to be worth it; such a frame is
// spawned in a separate task block).
template <class T>
inline constexpr std::size_t stage_offset = round_up(sizeof(Header) + kCellRoom,
                                                     std::max(alignof(AsyncRoot), alignof(Outcome<T>)));
template <class T>
inline constexpr std::size_t frame_prefix =
    alignof(Outcome<T>) <= kFrameAlign && sizeof(Outcome<T>) <= 64
        ? round_up(stage_offset<T> + std::max(sizeof(AsyncRoot), sizeof(Outcome<T>)) + sizeof(FrameTail), kFrameAlign)
        : 0;

static_assert(frame_prefix<void> == 64 && frame_prefix<int> == 80,
              "the room in front of a frame: header 32, tag and schedule function 16, stage 8 (16 for a "
              "value), tail 8");

inline FrameTail& frame_tail(void* frame) noexcept {
  return *reinterpret_cast<FrameTail*>(static_cast<char*>(frame) - sizeof(FrameTail));
}

// The frame operator new returned last on this thread, until the coroutine's promise claims
// it (get_return_object). A frame whose allocation was elided by the compiler (HALO) has no
// block: its get_return_object finds another address (or null) here and does not claim it.
// Defined in impl/task/async.cpp.
extern thread_local constinit void* fresh_frame;

template <class T>
void* allocate_frame(std::size_t size) {
  constexpr std::size_t prefix = frame_prefix<T>;
  if constexpr (prefix == 0) {
    return allocate_task(size, kFrameAlign);
  } else {
    if (size > UINT32_MAX) [[unlikely]]
      throw std::bad_alloc();
    char* frame = static_cast<char*>(allocate_task(prefix + size, kFrameAlign)) + prefix;
    frame_tail(frame) = FrameTail{static_cast<std::uint32_t>(size), 0};
    fresh_frame = frame;
    return frame;
  }
}

template <class T>
void free_frame(void* frame, std::size_t size) noexcept {
  constexpr std::size_t prefix = frame_prefix<T>;
  if constexpr (prefix == 0) {
    deallocate_task(frame, size, kFrameAlign);
  } else {
    if (frame_tail(frame).task_owned != 0) return;  // the task frees the block
    // Freed before its promise claimed it (a coroutine argument's copy threw): forget it, so
    // that no later frame at this address is mistaken for it.
    if (fresh_frame == frame) [[unlikely]]
      fresh_frame = nullptr;
    deallocate_task(static_cast<char*>(frame) - prefix, prefix + size, kFrameAlign);
  }
}

// A task that owns its frame's block frees it (after the frame was destroyed).
template <class T>
void free_frame_block(void* block) noexcept {
  constexpr std::size_t prefix = frame_prefix<T>;
  void* frame = static_cast<char*>(block) + prefix;
  deallocate_task(block, prefix + frame_tail(frame).frame_size, kFrameAlign);
}

}  // namespace karx::detail
