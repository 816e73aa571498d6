#include "collector/rules/cidr.h"

#include "gtest/gtest.h"

namespace tripline::collector {
namespace {

bool In(const std::string& cidr, const std::string& ip) {
  absl::StatusOr<Cidr> c = Cidr::Parse(cidr);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() && c->Contains(ip);
}

TEST(Cidr, Ipv4PrefixesMatchOnTheirBits) {
  EXPECT_TRUE(In("203.0.113.0/24", "203.0.113.255"));
  EXPECT_FALSE(In("203.0.113.0/24", "203.0.114.0"));
  EXPECT_TRUE(In("10.0.0.0/8", "10.255.1.2"));
  EXPECT_TRUE(In("192.168.1.128/25", "192.168.1.200"));
  EXPECT_FALSE(In("192.168.1.128/25", "192.168.1.127"));
  EXPECT_TRUE(In("0.0.0.0/0", "198.51.100.7"));
  EXPECT_TRUE(In("198.51.100.7", "198.51.100.7"));  // one address
  EXPECT_FALSE(In("198.51.100.7", "198.51.100.8"));
}

TEST(Cidr, Ipv6PrefixesAndMappedIpv4) {
  EXPECT_TRUE(In("2001:db8::/32", "2001:db8:ffff::1"));
  EXPECT_FALSE(In("2001:db8::/32", "2001:db9::1"));
  EXPECT_TRUE(In("::/0", "fe80::1"));
  EXPECT_TRUE(In("2001:db8:0:0:8000::/65", "2001:db8::8000:0:0:1"));
  EXPECT_FALSE(In("2001:db8::/65", "2001:db8::8000:0:0:1"));
  // An IPv4-mapped IPv6 address is its IPv4 address, for IPv4 networks only.
  EXPECT_TRUE(In("203.0.113.0/24", "::ffff:203.0.113.9"));
  EXPECT_FALSE(In("::/0", "203.0.113.9"));
  EXPECT_FALSE(In("0.0.0.0/0", "2001:db8::1"));
}

TEST(Cidr, WhatIsNotAnAddressIsNeverInside) {
  EXPECT_FALSE(In("0.0.0.0/0", "ec2.amazonaws.com"));  // CloudTrail's AWS-service callers
  EXPECT_FALSE(In("0.0.0.0/0", ""));
  EXPECT_FALSE(In("::/0", "AWS Internal"));
}

TEST(Cidr, BadNetworksAreRefusedNamingThem) {
  for (const char* bad : {"", "10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "10.0.0.0/",
                          "10.0.0.0/-1", "10.0.0.0/8/8", "example.com/24", "10.0.0.0/1x"}) {
    absl::StatusOr<Cidr> c = Cidr::Parse(bad);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok()) {
      EXPECT_NE(c.status().message().find(std::string("'") + bad + "'"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace tripline::collector
