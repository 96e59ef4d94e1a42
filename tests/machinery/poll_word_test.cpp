// PollWord: a revocation is seen by the poll's owner exactly when the revoker is told it
// succeeded, on one thread and with the owner and a revoker racing (with the membarrier fences
// where the kernel has them, a seq_cst fence on both sides elsewhere).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

import karx.machinery;

namespace {

using karx::detail::PollWord;
using karx::detail::Revocation;

TEST(PollWord, APollNobodyClaimsEndsUnrevoked) {
  PollWord poll;
  EXPECT_FALSE(PollWord::in_poll(poll.seq()));
  poll.begin();
  EXPECT_TRUE(PollWord::in_poll(poll.seq()));
  EXPECT_EQ(poll.end(), Revocation::none);
  EXPECT_FALSE(PollWord::in_poll(poll.seq()));
}

TEST(PollWord, TheOwnerRevokesItsOwnPollOnceAndOnlyInsideIt) {
  karx::detail::enable_asymmetric_fences();
  PollWord poll;
  EXPECT_FALSE(poll.revoke_self());  // no poll runs
  poll.begin();
  EXPECT_TRUE(poll.revoke_self());
  EXPECT_TRUE(poll.claimed());
  EXPECT_FALSE(poll.revoke_self());                             // claimed already
  EXPECT_FALSE(poll.try_revoke(poll.seq(), Revocation::busy));  // and for the monitor too
  EXPECT_EQ(poll.end(), Revocation::blocked);
  // The claim is cleared with the poll: the next one starts unclaimed.
  poll.begin();
  EXPECT_FALSE(poll.claimed());
  EXPECT_EQ(poll.end(), Revocation::none);
}

// A poll that runs nested polls (a work-first join) shows the monitor a new seq for each, and
// a claim made before a nested poll still belongs to the poll that ends.
TEST(PollWord, AClaimBeforeANestedPollIsSeenWhenTheOuterPollEnds) {
  karx::detail::enable_asymmetric_fences();
  PollWord poll;
  poll.begin();
  const std::uint64_t outer = poll.seq();
  EXPECT_TRUE(poll.try_revoke(outer, Revocation::blocked));
  poll.nest();
  EXPECT_NE(poll.seq(), outer);
  EXPECT_TRUE(PollWord::in_poll(poll.seq()));
  EXPECT_FALSE(poll.try_revoke(poll.seq(), Revocation::busy));  // one claim at a time
  poll.nest();
  EXPECT_EQ(poll.end(), Revocation::blocked);
  // And a claim of an earlier poll is not the next poll's.
  poll.begin();
  poll.nest();
  EXPECT_EQ(poll.end(), Revocation::none);
}

TEST(PollWord, ARevokerTakesARunningPollAndNotAnEndedOne) {
  karx::detail::enable_asymmetric_fences();
  PollWord poll;
  poll.begin();
  const std::uint64_t first = poll.seq();
  EXPECT_TRUE(poll.try_revoke(first, Revocation::busy));
  EXPECT_EQ(poll.end(), Revocation::busy);
  poll.begin();
  EXPECT_FALSE(poll.try_revoke(first, Revocation::blocked));  // that poll has ended: withdrawn
  EXPECT_FALSE(poll.claimed());
  EXPECT_EQ(poll.end(), Revocation::none);
}

// The owner runs polls of varying length, some with a nested poll, while a revoker claims
// whatever poll it sees running (and now and then one that has surely ended). Every revocation the revoker is told
// succeeded is seen by the owner, of the same kind, and no other: a slot handed over twice, or not at all, would make
// these counts differ.
TEST(PollWord, OwnerAndRevokerAgreeOnEveryRevocationUnderRacing) {
  karx::detail::enable_asymmetric_fences();
  PollWord poll;
  constexpr std::uint64_t kPolls = 100'000;
  std::atomic<bool> done{false};
  std::uint64_t owner_blocked = 0, owner_busy = 0;
  std::uint64_t revoker_blocked = 0, revoker_busy = 0, stale_taken = 0, attempts = 0;

  std::thread revoker([&] {
    std::uint64_t n = 0;
    while (!done.load(std::memory_order_acquire)) {
      const std::uint64_t seq = poll.seq();
      if (!PollWord::in_poll(seq)) continue;
      ++n;
      if (n % 7 == 0 && seq > 4) {
        // A poll two polls back (seq - 4: seq - 2 may be this poll before its nested one),
        // which has ended: must never be taken.
        if (poll.try_revoke(seq - 4, Revocation::blocked)) ++stale_taken;
        continue;
      }
      const Revocation kind = n % 2 == 0 ? Revocation::busy : Revocation::blocked;
      ++attempts;
      if (poll.try_revoke(seq, kind)) ++(kind == Revocation::busy ? revoker_busy : revoker_blocked);
    }
  });

  for (std::uint64_t i = 0; i < kPolls; ++i) {
    poll.begin();
    // Polls from a few ns to a few µs: about as long as the revoker's fence, so that polls end
    // before, during and after a claim.
    if (i % 4 == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(500 * (i % 9));
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    if (i % 1000 == 0) std::this_thread::yield();
    if (i % 3 == 0) poll.nest();  // a nested poll: the revoker may hold a claim of the outer one
    const Revocation seen = poll.end();
    if (seen == Revocation::blocked) ++owner_blocked;
    if (seen == Revocation::busy) ++owner_busy;
  }
  done.store(true, std::memory_order_release);
  revoker.join();

  EXPECT_EQ(stale_taken, 0u);
  EXPECT_EQ(owner_blocked, revoker_blocked);
  EXPECT_EQ(owner_busy, revoker_busy);
  EXPECT_GT(attempts, 0u);
  // Some revocations landed (the test would prove nothing without them).
  EXPECT_GT(owner_blocked + owner_busy, 0u);
}

}  // namespace
