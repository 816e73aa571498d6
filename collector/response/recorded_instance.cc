#include "collector/response/recorded_instance.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tripline::collector {
namespace {

std::string Line(const std::vector<std::string>& fields) {
  std::vector<std::string> escaped;
  escaped.reserve(fields.size());
  for (const std::string& f : fields) escaped.push_back(absl::CEscape(f));
  return absl::StrCat(absl::StrJoin(escaped, "\t"), "\n");
}

}  // namespace

std::string EncodeInstance(const aws::Instance& inst) {
  std::string out;
  out +=
      Line({"instance", inst.instance_id, inst.state, inst.vpc_id, inst.iam_instance_profile_arn});
  for (const aws::NetworkInterface& e : inst.interfaces) {
    out += Line({"eni", e.interface_id, e.vpc_id, e.subnet_id, e.private_ip,
                 std::to_string(e.device_index), absl::StrJoin(e.group_ids, ","), e.public_ip,
                 e.eip_allocation_id, e.eip_association_id});
  }
  for (const aws::Volume& v : inst.volumes) {
    out += Line({"volume", v.device_name, v.volume_id, v.delete_on_termination ? "true" : "false"});
  }
  for (const auto& [key, value] : inst.tags) out += Line({"tag", key, value});
  return out;
}

absl::StatusOr<aws::Instance> DecodeInstance(const std::string& text) {
  aws::Instance inst;
  int n = 0;
  bool seen_instance = false;
  for (absl::string_view raw : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++n;
    std::vector<std::string> f;
    for (absl::string_view part : absl::StrSplit(raw, '\t')) {
      std::string un;
      if (!absl::CUnescape(part, &un)) {
        return absl::InvalidArgumentError(
            absl::StrCat("recorded instance line ", n, ": bad escape"));
      }
      f.push_back(std::move(un));
    }
    auto bad = [&] {
      return absl::InvalidArgumentError(
          absl::StrCat("recorded instance line ", n, ": unexpected fields"));
    };
    if (f[0] == "instance" && f.size() == 5) {
      inst.instance_id = f[1];
      inst.state = f[2];
      inst.vpc_id = f[3];
      inst.iam_instance_profile_arn = f[4];
      seen_instance = true;
    } else if (f[0] == "eni" && f.size() == 10) {
      aws::NetworkInterface e;
      e.interface_id = f[1];
      e.vpc_id = f[2];
      e.subnet_id = f[3];
      e.private_ip = f[4];
      if (!absl::SimpleAtoi(f[5], &e.device_index)) return bad();
      if (!f[6].empty()) e.group_ids = absl::StrSplit(f[6], ',');
      e.public_ip = f[7];
      e.eip_allocation_id = f[8];
      e.eip_association_id = f[9];
      inst.interfaces.push_back(std::move(e));
    } else if (f[0] == "volume" && f.size() == 4) {
      inst.volumes.push_back({f[1], f[2], f[3] == "true"});
    } else if (f[0] == "tag" && f.size() == 3) {
      inst.tags[f[1]] = f[2];
    } else {
      return bad();
    }
  }
  if (!seen_instance) return absl::InvalidArgumentError("recorded instance: no instance line");
  return inst;
}

std::string InstanceProfileName(const std::string& arn) {
  const size_t at = arn.find(":instance-profile/");
  if (!arn.starts_with("arn:") || at == std::string::npos) return "";
  const std::string path = arn.substr(at + 18);
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace tripline::collector
