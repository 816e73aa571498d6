// Time comes in through this interface so tests can control it.
#pragma once

#include <cstdint>

namespace tripline {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall time, nanoseconds since the Unix epoch: for timestamps people read.
  virtual int64_t NowUnixNanos() const = 0;
  // Monotonic nanoseconds: for intervals, timeouts and debouncing.
  virtual int64_t MonotonicNanos() const = 0;
};

// The real clocks (CLOCK_REALTIME, CLOCK_MONOTONIC). Never null; lives for the program.
const Clock& SystemClock();

}  // namespace tripline
