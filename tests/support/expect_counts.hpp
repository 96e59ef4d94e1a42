// Exact checks of every probe counter: EXPECT_COUNTS(c, .polls = 1, ...), or counts_are() for
// callers that check more than the counters (see World::is).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "support/probes.hpp"

namespace probes {

// What every counter must read after a step; fields left out must read 0.
struct Expect {
  int polls = 0;
  int schedules = 0;
  int future_drops = 0;
  int output_drops = 0;
  int schedule_drops = 0;
  int tag_drops = 0;
};

// Appends " name=got (want N)" to `bad` if `got` is not `want`.
inline void note_mismatch(std::string& bad, const char* name, long long got, long long want) {
  if (got != want) bad += std::string(" ") + name + "=" + std::to_string(got) + " (want " + std::to_string(want) + ")";
}

// Every counter of `c` that does not read what `e` says, as " name=got (want N)"; empty if none.
inline std::string count_mismatches(const Counts& c, const Expect& e) {
  std::string bad;
  note_mismatch(bad, "polls", c.polls.load(), e.polls);
  note_mismatch(bad, "schedules", c.schedules.load(), e.schedules);
  note_mismatch(bad, "future_drops", c.future_drops.load(), e.future_drops);
  note_mismatch(bad, "output_drops", c.output_drops.load(), e.output_drops);
  note_mismatch(bad, "schedule_drops", c.schedule_drops.load(), e.schedule_drops);
  note_mismatch(bad, "tag_drops", c.tag_drops.load(), e.tag_drops);
  return bad;
}

// Success if every counter of `c` reads exactly what `e` says; otherwise names those that do not.
inline ::testing::AssertionResult counts_are(const Counts& c, const Expect& e) {
  const std::string bad = count_mismatches(c, e);
  if (bad.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "unexpected:" << bad;
}

}  // namespace probes

// EXPECT_COUNTS(c, .polls = 1, .future_drops = 1): every counter of `c` exactly; fields left
// out must read 0. A failure names the counters that differ and the line of the check.
#define EXPECT_COUNTS(counts, ...) EXPECT_TRUE(::probes::counts_are((counts), ::probes::Expect{__VA_ARGS__}))
