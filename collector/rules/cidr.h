// An IPv4 or IPv6 network in CIDR notation ("203.0.113.0/24", "2001:db8::/32", or one address),
// for rules on CloudTrail's sourceIPAddress. Immutable; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tripline::collector {

class Cidr {
 public:
  // InvalidArgument naming `text` when it is not an address or address/prefix of its family.
  static absl::StatusOr<Cidr> Parse(const std::string& text);
  // True when `address` (text) is an address of this network's family inside it. Anything that
  // is not an address ("ec2.amazonaws.com", "") is never inside. IPv4-mapped IPv6 addresses count
  // as their IPv4 address.
  bool Contains(const std::string& address) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  bool v6_ = false;
  int prefix_ = 0;
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace tripline::collector
