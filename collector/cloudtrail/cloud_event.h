// CloudEvent: one CloudTrail management event as the collector keeps it, parsed from a
// LookupEvents answer. The answer is hostile input: sizes are capped (a record at most
// kMaxRecordBytes, nesting at most kMaxJsonDepth), every field's type is checked, and a record that
// fails a check becomes a MalformedRecord (reported and skipped) instead of failing the page.
// CloudEvents live only on the collector (never on the agent wire). No threads, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tripline::collector {

inline constexpr size_t kMaxRecordBytes = 256 << 10;  // CloudTrail's own cap on an event
inline constexpr int kMaxJsonDepth = 64;
inline constexpr size_t kMaxFieldBytes = 2048;  // principal, user agent, ... (longer: malformed)
inline constexpr size_t kMaxResources = 1000;

// The parsed CloudTrailEvent document (opaque here; see JsonPathValues).
struct CloudRecordJson;

struct CloudEvent {
  std::string event_id;      // CloudTrail's EventId (a UUID): the de-duplication key
  std::string event_name;    // "RunInstances"
  std::string event_source;  // "ec2.amazonaws.com"
  int64_t time_ns = 0;       // EventTime
  std::string region;        // the record's awsRegion, else the region polled
  std::string principal_arn;  // userIdentity.arn ("" for some AWS-service events)
  std::string access_key_id;  // userIdentity.accessKeyId
  std::string source_ip;      // sourceIPAddress (an IP, or a service name like "ec2.amazonaws.com")
  std::string user_agent;
  // "TYPE NAME" per affected resource (the answer's Resources, plus launched instances).
  std::vector<std::string> resources;
  // RunInstances: responseElements.instancesSet.items[].instanceId, in the record's order.
  std::vector<std::string> instance_ids;
  std::string raw;  // the CloudTrailEvent JSON text, as received
  std::shared_ptr<const CloudRecordJson> record;  // `raw`, parsed
};

// A record that was reported and skipped.
struct MalformedRecord {
  std::string event_id;  // when the record had a usable one; else ""
  std::string reason;
  std::string raw;  // the item's text, capped at 4 KiB
};

struct LookupEventsPage {
  std::vector<CloudEvent> events;  // in the answer's order (newest first)
  std::vector<MalformedRecord> malformed;
  std::string next_token;  // "" on the last page
};

// Parses one LookupEvents answer ({"Events": [...], "NextToken": "..."}). `region` is the region
// polled. InvalidArgument when the answer itself is not of that shape (then nothing of it is used);
// bad items only land in `malformed`.
absl::StatusOr<LookupEventsPage> ParseLookupEventsPage(std::string_view text,
                                                       const std::string& region);

// Parses one CloudTrail record (the CloudTrailEvent document) into a CloudEvent. Fields the
// LookupEvents item carries next to it (EventId, EventName, EventTime, Resources) are merged in by
// ParseLookupEventsPage. InvalidArgument naming the field for a record that fails a check.
absl::StatusOr<CloudEvent> ParseCloudTrailRecord(std::string_view record, const std::string& region);

// The string values (numbers and booleans as text) at `path` in the event's record: dot-separated
// keys, "[]" after a key to step into every element of an array
// ("requestParameters.ipPermissions.items[].ipRanges.items[].cidrIp"). Empty when nothing is there.
std::vector<std::string> JsonPathValues(const CloudEvent& event, const std::string& path);

// Ok when `path` has that syntax (keys of [A-Za-z0-9_:-], optional "[]", at most 16 steps).
absl::Status ValidateJsonPath(const std::string& path);

}  // namespace tripline::collector
