#include "agent/fim/baseline_diff.h"

#include <algorithm>
#include <unordered_set>

namespace tripline::agent {
namespace {

bool InScope(const std::string& path, const std::vector<std::string>& scope) {
  for (const std::string& s : scope) {
    if (IsAtOrUnder(path, s)) return true;
  }
  return false;
}

}  // namespace

std::vector<FileChange> DiffBaseline(const Baseline& baseline, const ScanResult& scan,
                                     const std::vector<FimRoot>& roots,
                                     const std::vector<std::string>& scope) {
  std::vector<FileChange> out;
  std::unordered_set<std::string_view> seen;
  seen.reserve(scan.files.size());
  for (const ScannedFile& f : scan.files) {
    if (!InScope(f.path, scope)) continue;
    seen.insert(f.path);
    auto it = baseline.find(f.path);
    if (it == baseline.end()) {
      FileChange c;
      c.kind = FileChange::kAdded;
      c.path = f.path;
      c.after = f.state;
      c.note = f.note;
      out.push_back(std::move(c));
      continue;
    }
    const uint32_t attrs = roots[f.root].attrs;
    std::vector<std::string_view> changed = ChangedAttrs(it->second, f.state, attrs);
    if (changed.empty()) continue;
    FileChange c;
    c.kind = FileChange::kChanged;
    c.path = f.path;
    c.before = it->second;
    c.after = f.state;
    c.content = CompareStates(it->second, f.state, attrs) == StateChange::kContent;
    c.attrs = std::move(changed);
    c.note = f.note;
    out.push_back(std::move(c));
  }
  for (const auto& [path, state] : baseline) {
    if (seen.count(path) != 0 || !InScope(path, scope)) continue;
    FileChange c;
    c.kind = FileChange::kRemoved;
    c.path = path;
    c.before = state;
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(),
            [](const FileChange& a, const FileChange& b) { return a.path < b.path; });
  return out;
}

}  // namespace tripline::agent
