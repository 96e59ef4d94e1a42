// Everything a waker/exception test counts and drives, in one place.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <utility>

#include "support/channel.hpp"
#include "support/expect_counts.hpp"
#include "support/gate.hpp"
#include "support/probes.hpp"
#include "support/waker_slot.hpp"

namespace probes {

// The counters, the queue the schedule function pushes to, the slot for the future's latest
// waker and the gate. Declared before the task, so it outlives it.
struct World {
  Counts counts;
  Chan chan;
  WakerSlot waker;
  Gate gate;

  template <class F>
  auto spawn(F future) {
    return spawn_counted(counts, std::move(future), &chan);
  }

  // is(polls, schedules, future drops, output drops, schedule-function drops, tag drops, queued)
  ::testing::AssertionResult is(int polls, int schedules, int future_drops, int output_drops, int schedule_drops,
                                int tag_drops, std::size_t queued) const {
    std::string bad =
        count_mismatches(counts, Expect{polls, schedules, future_drops, output_drops, schedule_drops, tag_drops});
    note_mismatch(bad, "queued", static_cast<long long>(chan.len()), static_cast<long long>(queued));
    if (bad.empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "unexpected:" << bad;
  }
};

}  // namespace probes
