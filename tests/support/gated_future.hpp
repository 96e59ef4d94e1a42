// A future whose poll the test can hold at a Gate, and that is pending, ready or throws.
#pragma once

#include <type_traits>

#include "support/gate.hpp"
#include "support/probes.hpp"
#include "support/waker_slot.hpp"

namespace probes {

// What a GatedFuture does at a poll once its pending polls are used up.
enum class Then { ready, fail, pending, wake_self_then_pending };

// Each poll stores a clone of its waker in `slot` (if given), counts itself, wakes its own task
// if `wake_self_first`, then waits at the gate if it is armed. The first `pending_polls` polls
// are pending; after that it is ready (R = void, or R = Output{value} whose destruction is
// counted), throws Boom(value), or stays pending (waking its own task first, with
// wake_self_then_pending).
template <class R>
struct GatedFuture {
  static_assert(std::is_void_v<R> || std::is_same_v<R, Output>);

  Counts* counts;
  Gate* gate;
  Then then = Then::ready;
  int pending_polls = 0;
  int value = 7;  // the output's value, or the id of the Boom thrown
  WakerSlot* slot = nullptr;
  bool wake_self_first = false;
  DropCounter drop{counts->future_drops};

  karx::Poll<R> poll(karx::Context& cx) {
    if (slot != nullptr) slot->store(cx.waker());
    counts->polls.fetch_add(1);
    if (wake_self_first) cx.waker().wake();
    gate->pass();
    if (pending_polls > 0) {
      --pending_polls;
      return karx::pending;
    }
    switch (then) {
      case Then::ready:
        break;
      case Then::fail:
        throw Boom(value);
      case Then::wake_self_then_pending:
        cx.waker().wake();
        [[fallthrough]];
      case Then::pending:
        return karx::pending;
    }
    if constexpr (std::is_void_v<R>) {
      return karx::ready();
    } else {
      return karx::Poll<R>::ready(R{value, DropCounter(counts->output_drops)});
    }
  }
};

}  // namespace probes
