// Recording what reaches the detached-exception handler.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <mutex>
#include <utility>

#include "support/probes.hpp"

namespace probes {

namespace detail {
// The handler is a plain function pointer, so what it records is global.
inline std::mutex detached_mu;
inline int detached_calls = 0;
inline std::exception_ptr detached_last;
}  // namespace detail

// The handler a DetachedRecorder installs: counts the call, keeps the exception.
inline void record_detached(std::exception_ptr e) noexcept {
  std::lock_guard lock(detail::detached_mu);
  ++detail::detached_calls;
  detail::detached_last = std::move(e);
}

inline void reset_detached() {
  std::lock_guard lock(detail::detached_mu);
  detail::detached_calls = 0;
  detail::detached_last = nullptr;
}

inline int detached_calls() {
  std::lock_guard lock(detail::detached_mu);
  return detail::detached_calls;
}

// The exception the handler received last (null if none).
inline std::exception_ptr detached_last() {
  std::lock_guard lock(detail::detached_mu);
  return detail::detached_last;
}

// The id of the Boom the handler received last: -1 if none, -2 if it was not a Boom.
inline int detached_boom_id() {
  std::exception_ptr e = detached_last();
  if (!e) return -1;
  try {
    std::rethrow_exception(e);
  } catch (const Boom& b) {
    return b.id;
  } catch (...) {
    return -2;
  }
}

// The one report the handler received must be a karx::undeliverable with an E nested in it.
template <class E>
::testing::AssertionResult undeliverable_reported_once() {
  if (detached_calls() != 1) return ::testing::AssertionFailure() << detached_calls() << " reports instead of 1";
  try {
    std::rethrow_exception(detached_last());
  } catch (const karx::undeliverable& e) {
    try {
      e.rethrow_nested();
    } catch (const E&) {
      return ::testing::AssertionSuccess();
    } catch (...) {
      return ::testing::AssertionFailure() << "another exception is nested in: " << e.what();
    }
    return ::testing::AssertionFailure() << "nothing nested in: " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "the report is not a karx::undeliverable";
  }
}

// Installs record_detached (with an empty record) while it lives; restores the previous handler.
class DetachedRecorder {
 public:
  DetachedRecorder() {
    reset_detached();
    previous_ = karx::set_detached_exception_handler(&record_detached);
  }
  DetachedRecorder(const DetachedRecorder&) = delete;
  DetachedRecorder& operator=(const DetachedRecorder&) = delete;
  ~DetachedRecorder() {
    karx::set_detached_exception_handler(previous_);
    reset_detached();
  }

 private:
  karx::detached_exception_handler previous_ = nullptr;
};

// A fixture that records the detached exceptions of each test.
class DetachedRecordingTest : public ::testing::Test {
 private:
  DetachedRecorder recorder_;
};

}  // namespace probes
