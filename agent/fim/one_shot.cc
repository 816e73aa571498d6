#include "agent/fim/one_shot.h"

#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "agent/fim/baseline_store.h"
#include "platform/crypto/digest.h"
#include "platform/runtime/logging.h"
#include "platform/runtime/status_macros.h"

namespace tripline::agent {
namespace {

using tripline::v1::FileState;

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

// A JSON string literal of UTF-8 text.
std::string JsonString(std::string_view utf8) {
  std::string out = "\"";
  for (char ch : utf8) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += '"';
  return out;
}

// A path for people: the bytes when printable UTF-8, else with \xHH escapes.
std::string PathText(const std::string& path) {
  bool plain = IsUtf8(path);
  for (unsigned char c : path) plain = plain && c >= 0x20 && c != 0x7f;
  return plain ? path : Printable(path, path.size());
}

std::string PathJson(const std::string& path) {
  return absl::StrCat("\"path\":", JsonString(PathText(path)), ",\"path_base64\":\"",
                      absl::Base64Escape(path), "\"");
}

std::string TypeName(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "char-device";
    case S_IFBLK:
      return "block-device";
    default:
      return "unknown";
  }
}

std::string TimeText(int64_t ns) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", absl::FromUnixNanos(ns), absl::UTCTimeZone());
}

std::string StateJson(const FileState& s) {
  std::string out = absl::StrFormat(
      "{\"type\":\"%s\",\"size\":%d,\"mode\":\"%04o\",\"uid\":%d,\"gid\":%d,\"mtime_ns\":%d,"
      "\"ctime_ns\":%d,\"inode\":%d,\"device\":%d,\"links\":%d",
      TypeName(s.mode()), s.size(), s.mode() & 07777, s.uid(), s.gid(), s.mtime_ns(), s.ctime_ns(),
      s.inode(), s.device(), s.nlink());
  if (!s.sha256().empty()) absl::StrAppend(&out, ",\"sha256\":\"", ToHex(s.sha256()), "\"");
  if ((s.mode() & S_IFMT) == S_IFLNK) {
    absl::StrAppend(&out, ",\"target\":", JsonString(PathText(s.link_target())),
                    ",\"target_base64\":\"", absl::Base64Escape(s.link_target()), "\"");
  }
  out += "}";
  return out;
}

double Seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }

absl::Status CheckRoots(const std::vector<FimRoot>& roots, const std::string& baseline_path,
                        const std::unordered_map<std::string, std::string>& stored,
                        std::vector<std::string>* warnings) {
  for (const FimRoot& r : roots) {
    auto it = stored.find(r.path);
    if (it == stored.end()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: no baseline for %s; run `tripline-agent scan` first", baseline_path,
                          PathText(r.path)));
    }
    if (it->second != RootFingerprint(r)) {
      warnings->push_back(absl::StrFormat(
          "the options of %s changed since its baseline was taken; differences may come from "
          "that (run `tripline-agent scan` to take a new one)",
          PathText(r.path)));
    }
  }
  return absl::OkStatus();
}

}  // namespace

size_t CheckReport::added() const {
  size_t n = 0;
  for (const FileChange& c : changes) n += c.kind == FileChange::kAdded;
  return n;
}
size_t CheckReport::removed() const {
  size_t n = 0;
  for (const FileChange& c : changes) n += c.kind == FileChange::kRemoved;
  return n;
}
size_t CheckReport::changed() const {
  size_t n = 0;
  for (const FileChange& c : changes) n += c.kind == FileChange::kChanged;
  return n;
}

absl::StatusOr<ScanReport> RunScan(const OneShotOptions& options, const Clock& clock) {
  const int64_t t0 = clock.MonotonicNanos();
  ASSIGN_OR_RETURN(std::unique_ptr<BaselineStore> store,
                   BaselineStore::Open(options.baseline_path));
  TreeScanOptions opts;
  opts.threads = options.threads;
  ScanResult scan = ScanTrees(options.roots, AllRoots(options.roots), opts);
  RETURN_IF_ERROR(store->Replace(options.roots, scan.files, clock.NowUnixNanos()));
  ScanReport report;
  report.files = scan.files.size();
  report.bytes_hashed = scan.bytes_hashed;
  report.errors = std::move(scan.errors);
  report.duration_ns = clock.MonotonicNanos() - t0;
  return report;
}

absl::StatusOr<CheckReport> RunCheck(const OneShotOptions& options, const Clock& clock) {
  const int64_t t0 = clock.MonotonicNanos();
  struct stat st;
  if (::stat(options.baseline_path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: no baseline file; run `tripline-agent scan` first", options.baseline_path));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<BaselineStore> store,
                   BaselineStore::Open(options.baseline_path));
  CheckReport report;
  ASSIGN_OR_RETURN(auto fingerprints, store->LoadRoots());
  RETURN_IF_ERROR(CheckRoots(options.roots, options.baseline_path, fingerprints, &report.warnings));
  ASSIGN_OR_RETURN(Baseline baseline, store->Load());
  TreeScanOptions opts;
  opts.threads = options.threads;
  ScanResult scan = ScanTrees(options.roots, AllRoots(options.roots), opts);
  std::vector<std::string> scope;
  for (const FimRoot& r : options.roots) scope.push_back(r.path);
  report.changes = DiffBaseline(baseline, scan, options.roots, scope);
  report.files = scan.files.size();
  report.bytes_hashed = scan.bytes_hashed;
  report.errors = std::move(scan.errors);
  report.duration_ns = clock.MonotonicNanos() - t0;
  return report;
}

std::string AttrValueText(const FileState& s, std::string_view attr) {
  if (attr == "type") return TypeName(s.mode());
  if (attr == "target") return PathText(s.link_target());
  if (attr == "inode") return absl::StrFormat("%d (device %d)", s.inode(), s.device());
  if (attr == "size") return absl::StrCat(s.size());
  if (attr == "sha256") return s.sha256().empty() ? "(not hashed)" : ToHex(s.sha256());
  if (attr == "mtime") return TimeText(s.mtime_ns());
  if (attr == "ctime") return TimeText(s.ctime_ns());
  if (attr == "mode") return absl::StrFormat("%04o", s.mode() & 07777);
  if (attr == "owner") return absl::StrFormat("%d:%d", s.uid(), s.gid());
  if (attr == "links") return absl::StrCat(s.nlink());
  return "?";
}

std::string ScanReportText(const ScanReport& report, const std::string& baseline_path) {
  std::string out;
  for (const ScanError& e : report.errors) {
    absl::StrAppend(&out, "warning: ", PathText(e.path), ": ", e.message, "\n");
  }
  absl::StrAppendFormat(&out,
                        "baseline: %d entries, %d bytes hashed in %.2f s, %d warnings; stored in "
                        "%s\n",
                        report.files, report.bytes_hashed, Seconds(report.duration_ns),
                        report.errors.size(), baseline_path);
  return out;
}

std::string ScanReportJson(const ScanReport& report, const std::string& baseline_path) {
  std::string out = absl::StrFormat(
      "{\"baseline\":%s,\"files\":%d,\"bytes_hashed\":%d,\"duration_ns\":%d,\"errors\":[",
      JsonString(PathText(baseline_path)), report.files, report.bytes_hashed, report.duration_ns);
  for (size_t i = 0; i < report.errors.size(); ++i) {
    absl::StrAppend(&out, i > 0 ? "," : "", "{", PathJson(report.errors[i].path),
                    ",\"message\":", JsonString(PathText(report.errors[i].message)), "}");
  }
  out += "]}\n";
  return out;
}

std::string CheckReportText(const CheckReport& report) {
  std::string out;
  for (const std::string& w : report.warnings) absl::StrAppend(&out, "warning: ", w, "\n");
  for (const ScanError& e : report.errors) {
    absl::StrAppend(&out, "warning: ", PathText(e.path), ": ", e.message, "\n");
  }
  for (const FileChange& c : report.changes) {
    switch (c.kind) {
      case FileChange::kAdded:
        absl::StrAppend(&out, "added: ", PathText(c.path), "\n");
        break;
      case FileChange::kRemoved:
        absl::StrAppend(&out, "removed: ", PathText(c.path), "\n");
        break;
      case FileChange::kChanged: {
        std::vector<std::string> names(c.attrs.begin(), c.attrs.end());
        absl::StrAppend(&out, "changed: ", PathText(c.path), " (", absl::StrJoin(names, ", "),
                        ")\n");
        for (std::string_view a : c.attrs) {
          absl::StrAppend(&out, "  ", std::string(a), ": ", AttrValueText(c.before, a), " -> ",
                          AttrValueText(c.after, a), "\n");
        }
        break;
      }
    }
    if (!c.note.empty()) absl::StrAppend(&out, "  note: ", c.note, "\n");
  }
  absl::StrAppendFormat(
      &out, "%s: %d added, %d removed, %d changed; %d entries checked in %.2f s\n",
      report.changes.empty() ? "no changes" : "changes", report.added(), report.removed(),
      report.changed(), report.files, Seconds(report.duration_ns));
  return out;
}

std::string CheckReportJson(const CheckReport& report) {
  std::string added, removed, changed;
  for (const FileChange& c : report.changes) {
    switch (c.kind) {
      case FileChange::kAdded:
        absl::StrAppend(&added, added.empty() ? "" : ",", "{", PathJson(c.path),
                        ",\"after\":", StateJson(c.after), "}");
        break;
      case FileChange::kRemoved:
        absl::StrAppend(&removed, removed.empty() ? "" : ",", "{", PathJson(c.path),
                        ",\"before\":", StateJson(c.before), "}");
        break;
      case FileChange::kChanged: {
        std::string attrs;
        for (std::string_view a : c.attrs) {
          absl::StrAppend(&attrs, attrs.empty() ? "" : ",", "\"", std::string(a), "\"");
        }
        absl::StrAppend(&changed, changed.empty() ? "" : ",", "{", PathJson(c.path), ",\"kind\":\"",
                        c.content ? "content" : "attributes", "\",\"attributes\":[", attrs,
                        "],\"before\":", StateJson(c.before), ",\"after\":", StateJson(c.after),
                        "}");
        break;
      }
    }
  }
  std::string errors;
  for (const ScanError& e : report.errors) {
    absl::StrAppend(&errors, errors.empty() ? "" : ",", "{", PathJson(e.path),
                    ",\"message\":", JsonString(PathText(e.message)), "}");
  }
  std::string warnings;
  for (const std::string& w : report.warnings) {
    absl::StrAppend(&warnings, warnings.empty() ? "" : ",", JsonString(PathText(w)));
  }
  return absl::StrFormat(
      "{\"summary\":{\"added\":%d,\"removed\":%d,\"changed\":%d,\"files\":%d,\"bytes_hashed\":%d,"
      "\"duration_ns\":%d},\"added\":[%s],\"removed\":[%s],\"changed\":[%s],\"errors\":[%s],"
      "\"warnings\":[%s]}\n",
      report.added(), report.removed(), report.changed(), report.files, report.bytes_hashed,
      report.duration_ns, added, removed, changed, errors, warnings);
}

}  // namespace tripline::agent
