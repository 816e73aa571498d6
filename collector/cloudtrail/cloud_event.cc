#include "collector/cloudtrail/cloud_event.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {

struct CloudRecordJson {
  nlohmann::json doc;
};

namespace {

using nlohmann::json;

constexpr size_t kMaxPageBytes = 16 << 20;
constexpr size_t kMaxKeptRawBytes = 4096;
constexpr int kMaxPathSteps = 16;

// Nesting depth of a JSON text, ignoring brackets inside strings; checked before parsing so a
// deeply nested document never reaches the parser.
bool DepthWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

absl::StatusOr<json> ParseJson(std::string_view text, size_t max_bytes, const char* what) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d bytes, over the %d-byte limit", what, text.size(), max_bytes));
  }
  if (!DepthWithin(text, kMaxJsonDepth)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: nested deeper than %d levels", what, kMaxJsonDepth));
  }
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrFormat("%s: not JSON", what));
  return doc;
}

// A string member `key` of `obj`: "" when absent or null; an error when of another type or too
// long.
absl::StatusOr<std::string> StringField(const json& obj, const char* key, const char* where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s.%s: not a string", where, key));
  }
  const std::string& s = it->get_ref<const std::string&>();
  if (s.size() > kMaxFieldBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.%s: longer than %d bytes", where, key, kMaxFieldBytes));
  }
  return s;
}

const json* ObjectField(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? &*it : nullptr;
}

bool PlainId(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<int64_t> ParseRecordTime(const std::string& text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("eventTime '%s': not an RFC 3339 time", Printable(text, 64)));
  }
  return absl::ToUnixNanos(t);
}

// Collects the leaves at path steps[i..] under `node`.
void Collect(const json& node, const std::vector<std::string>& steps, size_t i,
             std::vector<std::string>* out) {
  if (out->size() >= 1000) return;
  if (i == steps.size()) {
    if (node.is_string()) {
      out->push_back(node.get<std::string>());
    } else if (node.is_boolean()) {
      out->push_back(node.get<bool>() ? "true" : "false");
    } else if (node.is_number_integer()) {
      out->push_back(std::to_string(node.get<int64_t>()));
    } else if (node.is_number()) {
      out->push_back(node.dump());
    }
    return;
  }
  std::string key = steps[i];
  const bool each = key.size() > 2 && key.compare(key.size() - 2, 2, "[]") == 0;
  if (each) key.resize(key.size() - 2);
  if (!node.is_object()) return;
  auto it = node.find(key);
  if (it == node.end()) return;
  if (!each) {
    Collect(*it, steps, i + 1, out);
    return;
  }
  if (!it->is_array()) return;
  for (const json& e : *it) Collect(e, steps, i + 1, out);
}

}  // namespace

absl::Status ValidateJsonPath(const std::string& path) {
  std::vector<std::string> steps = absl::StrSplit(path, '.');
  if (path.empty() || static_cast<int>(steps.size()) > kMaxPathSteps) {
    return absl::InvalidArgumentError(
        absl::StrFormat("JSON path '%s': expected 1-%d dot-separated keys", path, kMaxPathSteps));
  }
  for (std::string step : steps) {
    if (step.size() > 2 && step.compare(step.size() - 2, 2, "[]") == 0) step.resize(step.size() - 2);
    if (step.empty() || step.size() > 128) {
      return absl::InvalidArgumentError(absl::StrFormat("JSON path '%s': empty key", path));
    }
    for (char c : step) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '_' || c == ':' || c == '-';
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "JSON path '%s': key '%s' may hold only letters, digits, '_', ':' and '-' (and end "
            "in [] for every element of an array)",
            path, step));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> JsonPathValues(const CloudEvent& event, const std::string& path) {
  std::vector<std::string> out;
  if (event.record == nullptr) return out;
  const std::vector<std::string> steps = absl::StrSplit(path, '.');
  Collect(event.record->doc, steps, 0, &out);
  return out;
}

absl::StatusOr<CloudEvent> ParseCloudTrailRecord(std::string_view record,
                                                 const std::string& region) {
  ASSIGN_OR_RETURN(json doc, ParseJson(record, kMaxRecordBytes, "CloudTrailEvent"));
  if (!doc.is_object()) return absl::InvalidArgumentError("CloudTrailEvent: not a JSON object");
  CloudEvent e;
  ASSIGN_OR_RETURN(e.event_id, StringField(doc, "eventID", "record"));
  ASSIGN_OR_RETURN(e.event_name, StringField(doc, "eventName", "record"));
  ASSIGN_OR_RETURN(e.event_source, StringField(doc, "eventSource", "record"));
  ASSIGN_OR_RETURN(e.region, StringField(doc, "awsRegion", "record"));
  if (e.region.empty()) e.region = region;
  ASSIGN_OR_RETURN(e.source_ip, StringField(doc, "sourceIPAddress", "record"));
  ASSIGN_OR_RETURN(e.user_agent, StringField(doc, "userAgent", "record"));
  ASSIGN_OR_RETURN(std::string time, StringField(doc, "eventTime", "record"));
  if (!time.empty()) {
    ASSIGN_OR_RETURN(e.time_ns, ParseRecordTime(time));
  }
  if (auto it = doc.find("userIdentity"); it != doc.end() && !it->is_null()) {
    if (!it->is_object()) return absl::InvalidArgumentError("record.userIdentity: not an object");
    ASSIGN_OR_RETURN(e.principal_arn, StringField(*it, "arn", "record.userIdentity"));
    ASSIGN_OR_RETURN(e.access_key_id, StringField(*it, "accessKeyId", "record.userIdentity"));
  }
  if (e.event_name == "RunInstances") {
    // responseElements.instancesSet.items[].instanceId: the instances the call launched.
    const json* response = ObjectField(doc, "responseElements");
    const json* set = response ? ObjectField(*response, "instancesSet") : nullptr;
    if (set != nullptr) {
      auto items = set->find("items");
      if (items != set->end() && !items->is_array()) {
        return absl::InvalidArgumentError(
            "record.responseElements.instancesSet.items: not an array");
      }
      if (items != set->end()) {
        for (const json& item : *items) {
          if (!item.is_object()) {
            return absl::InvalidArgumentError(
                "record.responseElements.instancesSet.items[]: not an object");
          }
          ASSIGN_OR_RETURN(std::string id, StringField(item, "instanceId", "instancesSet.items[]"));
          if (id.size() < 3 || id.compare(0, 2, "i-") != 0 || !PlainId(id)) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "record.responseElements.instancesSet.items[].instanceId '%s': not an instance "
                "id",
                Printable(id, 64)));
          }
          if (e.instance_ids.size() >= kMaxResources) {
            return absl::InvalidArgumentError("record: more than 1000 launched instances");
          }
          e.instance_ids.push_back(id);
          e.resources.push_back("AWS::EC2::Instance " + id);
        }
      }
    }
  }
  e.raw = std::string(record);
  auto parsed = std::make_shared<CloudRecordJson>();
  parsed->doc = std::move(doc);
  e.record = std::move(parsed);
  return e;
}

absl::StatusOr<LookupEventsPage> ParseLookupEventsPage(std::string_view text,
                                                       const std::string& region) {
  ASSIGN_OR_RETURN(json doc, ParseJson(text, kMaxPageBytes, "LookupEvents answer"));
  if (!doc.is_object()) return absl::InvalidArgumentError("LookupEvents answer: not an object");
  LookupEventsPage page;
  ASSIGN_OR_RETURN(page.next_token, StringField(doc, "NextToken", "LookupEvents answer"));
  auto events = doc.find("Events");
  if (events == doc.end() || events->is_null()) return page;
  if (!events->is_array()) {
    return absl::InvalidArgumentError("LookupEvents answer: Events is not an array");
  }
  for (const json& item : *events) {
    auto malformed = [&](std::string event_id, std::string reason) {
      MalformedRecord m;
      m.event_id = std::move(event_id);
      m.reason = std::move(reason);
      m.raw = item.dump(-1, ' ', false, json::error_handler_t::replace);
      if (m.raw.size() > kMaxKeptRawBytes) m.raw.resize(kMaxKeptRawBytes);
      page.malformed.push_back(std::move(m));
    };
    if (!item.is_object()) {
      malformed("", "item is not an object");
      continue;
    }
    absl::StatusOr<std::string> id = StringField(item, "EventId", "item");
    if (!id.ok() || !PlainId(*id)) {
      malformed("", id.ok() ? "EventId missing or not an id" : std::string(id.status().message()));
      continue;
    }
    absl::StatusOr<std::string> raw = StringField(item, "CloudTrailEvent", "item");
    auto raw_it = item.find("CloudTrailEvent");
    if (raw_it == item.end() || !raw_it->is_string()) {
      malformed(*id, "CloudTrailEvent missing or not a string");
      continue;
    }
    absl::StatusOr<CloudEvent> e =
        ParseCloudTrailRecord(raw_it->get_ref<const std::string&>(), region);
    if (!e.ok()) {
      malformed(*id, std::string(e.status().message()));
      continue;
    }
    if (!e->event_id.empty() && e->event_id != *id) {
      malformed(*id, absl::StrFormat("EventId differs from the record's eventID '%s'",
                                     Printable(e->event_id, 64)));
      continue;
    }
    e->event_id = *id;
    absl::StatusOr<std::string> name = StringField(item, "EventName", "item");
    if (!name.ok()) {
      malformed(*id, std::string(name.status().message()));
      continue;
    }
    if (!name->empty()) e->event_name = *name;
    if (e->event_name.empty() || !PlainId(e->event_name)) {
      malformed(*id, "no usable event name");
      continue;
    }
    // EventTime: epoch seconds (a number), as the JSON protocol sends timestamps.
    if (auto t = item.find("EventTime"); t != item.end() && !t->is_null()) {
      if (!t->is_number() || !std::isfinite(t->get<double>()) || t->get<double>() < 0 ||
          t->get<double>() > 4e9) {
        malformed(*id, "EventTime is not epoch seconds");
        continue;
      }
      e->time_ns = static_cast<int64_t>(std::llround(t->get<double>() * 1e3)) * 1000000;
    }
    if (e->time_ns <= 0) {
      malformed(*id, "no event time");
      continue;
    }
    if (auto r = item.find("Resources"); r != item.end() && !r->is_null()) {
      bool bad = !r->is_array() || r->size() > kMaxResources;
      std::vector<std::string> resources;
      if (!bad) {
        for (const json& res : *r) {
          absl::StatusOr<std::string> type =
              res.is_object() ? StringField(res, "ResourceType", "Resources[]")
                              : absl::InvalidArgumentError("not an object");
          absl::StatusOr<std::string> rname =
              res.is_object() ? StringField(res, "ResourceName", "Resources[]")
                              : absl::InvalidArgumentError("not an object");
          if (!type.ok() || !rname.ok()) {
            bad = true;
            break;
          }
          resources.push_back(*type + " " + *rname);
        }
      }
      if (bad) {
        malformed(*id, "Resources is not a list of {ResourceType, ResourceName}");
        continue;
      }
      for (std::string& res : resources) {
        if (std::find(e->resources.begin(), e->resources.end(), res) == e->resources.end()) {
          e->resources.push_back(std::move(res));
        }
      }
    }
    page.events.push_back(*std::move(e));
  }
  return page;
}

}  // namespace tripline::collector
