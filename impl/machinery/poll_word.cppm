// PollWord: how a runtime worker's polls are watched and how its processor slot is taken from
// a poll that blocks. Both halves of the protocol are here: the owner's (begin, end, revoke_self)
// and the revoker's (try_revoke: the monitor's).
//
// The owner counts its polls in `seq_`: odd while a poll runs. Starting and ending a poll are
// plain stores: a poll costs no atomic RMW however many run. A revoker claims a running poll
// by writing its seq into `claim_` (a CAS from 0; one claim at a time), and the owner looks
// at `claim_` once the poll ends. The two sides are Dekker's pattern:
//
//     owner:   seq_ = even (poll ended)   light fence   read claim_
//     revoker: claim_ = seq (CAS)          heavy fence   read seq_
//
// with the asymmetric fences of karx.machinery: the owner's is a compiler barrier, the
// revoker's a membarrier syscall, paid once per revocation (rare: a poll past the blocking
// threshold or blocked in the kernel) instead of an RMW per poll. At least one side sees the
// other's store:
//  - the revoker reads the same odd seq: the poll was still running after the claim was
//    visible, so the owner sees the claim when the poll ends. The revocation stands, and the
//    revoker frees the slot.
//  - the revoker reads a later seq: the poll ended. The owner may or may not have seen the
//    claim, and the slot must change hands only if it did. Both then settle it by CAS on
//    `claim_`: the owner marks the claim SEEN, the revoker withdraws it (back to 0); whichever
//    CAS comes first decides, and the other fails. Withdrawn: the owner keeps its slot. SEEN:
//    the owner counts its slot as revoked, and the revoker frees it.
// Nested polls. A poll may run other tasks inside it (a work-first join runs the awaited task
// there): each starts with nest(), which moves `seq_` on by 2 (odd still) so that the monitor
// sees a new poll and restarts its clock, rather than taking the whole nest for one long
// poll. A claim made for any seq since begin() belongs to the poll that is ending: the owner
// settles it as above. A revoker that claimed seq s and reads s + 2 after its fence tries to
// withdraw, and the SEEN mark decides as before.
// The owner clears a claim it has marked SEEN (a relaxed store of 0: only a revoker's CAS from
// 0 races with it, and that one is for a later poll). A claim for an earlier poll than the one
// that just ended (a revoker that read an old seq and has not yet withdrawn) is left to its
// revoker, which will see that poll ended.
module;
#include <atomic>
#include <cstdint>
export module karx.machinery:poll_word;
import :asymmetric_fence;

export namespace karx::detail {

enum class Revocation { none, blocked, busy };

class PollWord {
 public:
  static bool in_poll(std::uint64_t seq) noexcept { return (seq & 1) != 0; }

  // --- The owner (the thread running the worker) ---
  void begin() noexcept {
    // Relaxed: the monitor only needs to see the new seq eventually; the claim protocol is
    // what decides a revocation.
    begun_ = seq_.load(std::memory_order_relaxed) + 1;
    seq_.store(begun_, std::memory_order_relaxed);
  }
  // Inside a poll: a nested poll starts (see above).
  void nest() noexcept { seq_.store(seq_.load(std::memory_order_relaxed) + 2, std::memory_order_relaxed); }
  // The poll ends: whether its slot was revoked meanwhile, and for what.
  Revocation end() noexcept {
    const std::uint64_t seq = seq_.load(std::memory_order_relaxed);
    seq_.store(seq + 1, std::memory_order_relaxed);
    light_fence();
    const std::uint64_t claim = claim_.load(std::memory_order_relaxed);
    if (claim == 0) [[likely]]
      return Revocation::none;
    return settle(seq, claim);
  }
  // Inside a poll, before a call known to block (karx::blocking): the owner revokes its own
  // slot. No fence: the owner is the one that ends the poll, after this. False if the poll
  // is claimed already (or a stale claim is being withdrawn: the monitor will see this poll).
  bool revoke_self() noexcept {
    const std::uint64_t seq = seq_.load(std::memory_order_relaxed);
    if (!in_poll(seq)) return false;
    std::uint64_t expected = 0;
    return claim_.compare_exchange_strong(expected, seq << kFlagBits, std::memory_order_acq_rel,
                                          std::memory_order_relaxed);
  }

  // --- Anyone ---
  std::uint64_t seq() const noexcept { return seq_.load(std::memory_order_relaxed); }
  // Whether a claim is out (a hint: it may be for an earlier poll, or still be withdrawn).
  bool claimed() const noexcept { return claim_.load(std::memory_order_relaxed) != 0; }

  // --- A revoker (the monitor) ---
  // Takes the slot from poll `seq` if it still runs (or ended having seen the claim). True:
  // the slot is the caller's to hand over, and the owner will count it as revoked.
  bool try_revoke(std::uint64_t seq, Revocation kind) noexcept {
    const std::uint64_t claim = (seq << kFlagBits) | (kind == Revocation::busy ? kBusy : 0);
    std::uint64_t expected = 0;
    // acq_rel: what the revoker wrote before (its counters) happens before the owner's settle,
    // whose CAS reads this value.
    if (!claim_.compare_exchange_strong(expected, claim, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;
    heavy_fence();
    if (seq_.load(std::memory_order_relaxed) == seq) return true;  // still running: it will see the claim
    expected = claim;
    if (claim_.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;  // withdrawn before the owner saw it
    return true;     // the owner saw it first (SEEN, or already cleared)
  }

 private:
  static constexpr unsigned kFlagBits = 2;
  static constexpr std::uint64_t kBusy = 1;  // taken from a CPU-bound poll, not a blocked one
  static constexpr std::uint64_t kSeen = 2;  // the owner saw the claim when its poll ended

  // The owner's slow path: a claim was seen as poll `seq` ended.
  Revocation settle(std::uint64_t seq, std::uint64_t claim) noexcept {
    for (;;) {
      // Withdrawn, or an earlier poll's.
      if (claim == 0 || (claim >> kFlagBits) < begun_ || (claim >> kFlagBits) > seq) return Revocation::none;
      // acquire: reads the revoker's claim (and what it wrote before); see try_revoke.
      if (claim_.compare_exchange_weak(claim, claim | kSeen, std::memory_order_acq_rel, std::memory_order_acquire))
        break;
    }
    claim_.store(0, std::memory_order_relaxed);
    return (claim & kBusy) != 0 ? Revocation::busy : Revocation::blocked;
  }

  std::uint64_t begun_ = 0;  // the seq begin() set (owner-only)
  std::atomic<std::uint64_t> seq_{0};
  std::atomic<std::uint64_t> claim_{0};
};

}  // namespace karx::detail
