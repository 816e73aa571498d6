// Time comes in through this interface so tests can control it.
#pragma once

#include <cstdint>
#include <string>

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

// "2026-11-23T19:40:43Z": a Unix time in nanoseconds as people read it in logs and incidents.
std::string Rfc3339Utc(int64_t unix_ns);

}  // namespace tripline
