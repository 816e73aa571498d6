// The two propagation macros Debian's Abseil lacks. Both evaluate their expression once.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TRIPLINE_CONCAT_INNER_(a, b) a##b
#define TRIPLINE_CONCAT_(a, b) TRIPLINE_CONCAT_INNER_(a, b)

// RETURN_IF_ERROR(expr): returns the absl::Status of expr from the enclosing function if not ok.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status tripline_status_ = ::absl::Status(expr);    \
    if (!tripline_status_.ok()) return tripline_status_;       \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): lhs = *expr, or returns expr's status if not ok.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(TRIPLINE_CONCAT_(tripline_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
