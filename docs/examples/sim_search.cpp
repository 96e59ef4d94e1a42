// Finding an ordering bug with the simulation executor: run a small concurrent program under
// many seeds, keep the seeds that break it, replay one, and check the fix against them all.
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <vector>
import karx;

struct Account {
  int balance = 100;
};

// Check, suspend, act: another withdrawal can pass the same check in between.
karx::Async<> withdraw_buggy(Account* account, int amount) {
  if (account->balance >= amount) {
    co_await karx::yield_now();  // say, an audit log write
    account->balance -= amount;
  }
}

// The fix: act on what was checked before suspending.
karx::Async<> withdraw_fixed(Account* account, int amount) {
  if (account->balance >= amount) {
    account->balance -= amount;
    co_await karx::yield_now();
  }
}

// Two withdrawals of 60 from 100 under one seed: does the account go negative?
template <class Withdraw>
bool overdrawn(std::uint64_t seed, Withdraw withdraw) {
  karx::sim::Simulation sim(seed);
  Account account;
  sim.spawn(withdraw(&account, 60)).detach();
  sim.spawn(withdraw(&account, 60)).detach();
  sim.run();
  return account.balance < 0;
}

int main() {
  std::vector<std::uint64_t> failing;
  for (std::uint64_t seed = 0; seed < 100; ++seed)
    if (overdrawn(seed, withdraw_buggy)) failing.push_back(seed);
  std::printf("buggy: %zu of 100 seeds overdraw the account\n", failing.size());
  if (!failing.empty())
    std::printf("seed %llu replays: %s\n", static_cast<unsigned long long>(failing.front()),
                overdrawn(failing.front(), withdraw_buggy) ? "overdrawn again" : "not reproduced");

  int fixed_failures = 0;
  for (std::uint64_t seed = 0; seed < 100; ++seed) fixed_failures += overdrawn(seed, withdraw_fixed) ? 1 : 0;
  std::printf("fixed: %d of 100 seeds overdraw the account\n", fixed_failures);
  return failing.empty() || fixed_failures != 0 ? 1 : 0;
}
