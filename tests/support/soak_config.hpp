// What a soak run is configured with: its seed and length (KARX_SOAK_SEED, KARX_SOAK_SECONDS),
// the generator that draws its operations, and the runtime options it runs on.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

import karx;

namespace soak {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// splitmix64: tiny, good enough for choosing operations, and the same on every platform.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(unsigned percent) { return below(100) < percent; }
  // A duration from 0 to `max`, in microseconds.
  std::chrono::microseconds upto(std::chrono::microseconds max) {
    return std::chrono::microseconds(below(static_cast<std::uint64_t>(max.count()) + 1));
  }
};

inline std::optional<std::uint64_t> env_number(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text, &end, 0);  // 0x... works too
  if (*end != '\0') {
    ADD_FAILURE() << name << "=\"" << text << "\" is not a number";
    return std::nullopt;
  }
  return n;
}

inline std::uint64_t run_seed() {
  if (auto s = env_number("KARX_SOAK_SEED")) return *s;
  const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  return SplitMix64{now ^ (static_cast<std::uint64_t>(std::random_device{}()) << 32)}.next();
}

// When to stop: after `rounds` rounds, or after `seconds` when KARX_SOAK_SECONDS is set.
struct Budget {
  int rounds;
  std::optional<Clock::time_point> until;
  bool more(int done) const { return until ? Clock::now() < *until : done < rounds; }
};

inline Budget budget(int short_rounds) {
  if (auto s = env_number("KARX_SOAK_SECONDS")) return {0, Clock::now() + std::chrono::seconds(*s)};
  return {short_rounds, std::nullopt};
}

inline std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

inline karx::RuntimeOptions soak_options() {
  karx::RuntimeOptions o;
  o.processors = 2;
  o.max_threads = 10;            // small, so the cap is reached and must hold
  o.blocking_threshold = 2ms;    // unannounced blocking gets handed off quickly
  o.idle_thread_timeout = 50ms;  // spares come and go within a round
  return o;
}

}  // namespace soak
