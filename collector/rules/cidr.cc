#include "collector/rules/cidr.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace tripline::collector {
namespace {

// Parses `text` as an IPv4 or IPv6 address; v4 addresses (and v4-mapped v6 ones) fill bytes 0-3.
bool ParseAddress(const std::string& text, bool* v6, std::array<uint8_t, 16>* out) {
  out->fill(0);
  in_addr a4;
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1) {
    *v6 = false;
    std::memcpy(out->data(), &a4, 4);
    return true;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(&a6, kMapped, 12) == 0) {
      *v6 = false;
      std::memcpy(out->data(), reinterpret_cast<const uint8_t*>(&a6) + 12, 4);
      return true;
    }
    *v6 = true;
    std::memcpy(out->data(), &a6, 16);
    return true;
  }
  return false;
}

bool PrefixEqual(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& b, int prefix) {
  const int full = prefix / 8;
  if (std::memcmp(a.data(), b.data(), static_cast<size_t>(full)) != 0) return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[static_cast<size_t>(full)] & mask) == (b[static_cast<size_t>(full)] & mask);
}

}  // namespace

absl::StatusOr<Cidr> Cidr::Parse(const std::string& text) {
  Cidr c;
  c.text_ = text;
  const size_t slash = text.find('/');
  const std::string address = text.substr(0, slash);
  if (address.size() > 64 || !ParseAddress(address, &c.v6_, &c.bytes_)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s': not an IPv4 or IPv6 network (e.g. 203.0.113.0/24, 2001:db8::/32)",
                        text));
  }
  const int max = c.v6_ ? 128 : 32;
  c.prefix_ = max;
  if (slash != std::string::npos) {
    int prefix = -1;
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !absl::SimpleAtoi(p, &prefix) || prefix < 0 ||
        prefix > max) {
      return absl::InvalidArgumentError(
          absl::StrFormat("'%s': prefix length must be 0-%d", text, max));
    }
    c.prefix_ = prefix;
  }
  return c;
}

bool Cidr::Contains(const std::string& address) const {
  if (address.empty() || address.size() > 64) return false;
  bool v6 = false;
  std::array<uint8_t, 16> bytes;
  if (!ParseAddress(address, &v6, &bytes) || v6 != v6_) return false;
  return PrefixEqual(bytes, bytes_, prefix_);
}

}  // namespace tripline::collector
