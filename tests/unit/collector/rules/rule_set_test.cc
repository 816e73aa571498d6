#include "collector/rules/rule_set.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

using tripline::v1::Event;
using tripline::v1::FileEvent;

Event File(const std::string& path, FileEvent::Change change = FileEvent::MODIFIED,
           const std::string& old_path = "") {
  Event e;
  e.mutable_file()->set_path(path);
  e.mutable_file()->set_change(change);
  e.mutable_file()->set_old_path(old_path);
  return e;
}

bool GlobMatches(const std::string& pattern, const std::string& path) {
  absl::StatusOr<PathGlob> g = PathGlob::Compile(pattern);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() && g->Matches(path);
}

std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<RuleSet> r = ParseRules(yaml, "rules.yaml");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(PathGlob, DoubleStarCrossesComponentsSingleStarDoesNot) {
  EXPECT_TRUE(GlobMatches("/etc/**", "/etc/a/b"));
  EXPECT_TRUE(GlobMatches("/etc/**", "/etc/a"));
  EXPECT_FALSE(GlobMatches("/etc/*", "/etc/a/b"));
  EXPECT_TRUE(GlobMatches("/etc/*", "/etc/a"));
  EXPECT_FALSE(GlobMatches("/etc/**", "/etcetera/a"));
  EXPECT_TRUE(GlobMatches("/home/*/.ssh/authorized_keys", "/home/bob/.ssh/authorized_keys"));
  EXPECT_FALSE(GlobMatches("/home/*/.ssh/authorized_keys", "/home/a/b/.ssh/authorized_keys"));
  EXPECT_TRUE(GlobMatches("/etc/cron*/**", "/etc/cron.d/job"));
  EXPECT_TRUE(GlobMatches("/**/shadow", "/etc/shadow"));
}

TEST(PathGlob, QuestionMarkAndClassesMatchOneByteButNeverTheSeparator) {
  EXPECT_TRUE(GlobMatches("/etc/passw?", "/etc/passwd"));
  EXPECT_FALSE(GlobMatches("/etc?passwd", "/etc/passwd"));
  EXPECT_TRUE(GlobMatches("/usr/bin/[a-c]at", "/usr/bin/cat"));
  EXPECT_FALSE(GlobMatches("/usr/bin/[a-c]at", "/usr/bin/rat"));
  EXPECT_TRUE(GlobMatches("/usr/bin/[!a-c]at", "/usr/bin/rat"));
  EXPECT_FALSE(GlobMatches("/etc[!x]passwd", "/etc/passwd"));
  EXPECT_TRUE(GlobMatches("/etc/\\*", "/etc/*"));
  EXPECT_FALSE(GlobMatches("/etc/\\*", "/etc/a"));
}

TEST(PathGlob, NonUtf8PathBytesMatchLikeAnyOthers) {
  const std::string path = std::string("/etc/caf\xe9/\xff\xfe", 12);
  EXPECT_TRUE(GlobMatches("/etc/**", path));
  EXPECT_TRUE(GlobMatches(std::string("/etc/caf\xe9/*", 11), path));
  EXPECT_TRUE(GlobMatches("/etc/caf?/??", path));
  EXPECT_FALSE(GlobMatches("/etc/cafe/**", path));
}

TEST(PathGlob, HostilePathsDoNotBlowUp) {
  // Backtracking matchers go exponential on this; ours is linear per token.
  std::string path = "/" + std::string(4000, 'a');
  EXPECT_FALSE(GlobMatches("/**a**a**a**a**a**a**a**a**b", path));
}

TEST(PathGlob, BadPatternsAreRefused) {
  EXPECT_FALSE(PathGlob::Compile("").ok());
  EXPECT_FALSE(PathGlob::Compile("/etc/[abc").ok());
  EXPECT_FALSE(PathGlob::Compile("/etc/x\\").ok());
  EXPECT_FALSE(PathGlob::Compile("/etc/[z-a]").ok());
}

TEST(RuleSet, MatchesPathsAndTheChangeFilter) {
  absl::StatusOr<RuleSet> rules = ParseRules(R"(rules:
  - id: etc-changed
    title: etc
    severity: high
    match:
      kind: file
      paths: ["/etc/**", "/usr/bin/*"]
      changes: [created, modified]
    response: [isolate]
  - id: anything
    title: any file
    severity: low
    match: {kind: file}
)", "rules.yaml");
  ASSERT_TRUE(rules.ok()) << rules.status();
  ASSERT_EQ(rules->rules().size(), 2u);
  EXPECT_TRUE(rules->rules()[0].Isolates());
  EXPECT_FALSE(rules->rules()[1].Isolates());
  EXPECT_TRUE(rules->AnyIsolates());

  auto ids = [&](const Event& e) {
    std::vector<std::string> out;
    for (const Rule* r : rules->Match(e)) out.push_back(r->id);
    return out;
  };
  EXPECT_EQ(ids(File("/etc/ssh/sshd_config")), (std::vector<std::string>{"etc-changed", "anything"}));
  EXPECT_EQ(ids(File("/usr/bin/ls", FileEvent::CREATED)),
            (std::vector<std::string>{"etc-changed", "anything"}));
  EXPECT_EQ(ids(File("/etc/passwd", FileEvent::DELETED)), (std::vector<std::string>{"anything"}));
  EXPECT_EQ(ids(File("/usr/bin/x/y")), (std::vector<std::string>{"anything"}));
  Event log;
  log.mutable_log()->set_path("/etc/x");
  EXPECT_TRUE(ids(log).empty());
}

TEST(RuleSet, RenamedEventMatchesOnItsOldPath) {
  absl::StatusOr<RuleSet> rules = ParseRules(R"(rules:
  - id: etc
    title: etc
    severity: medium
    match: {kind: file, paths: ["/etc/**"]}
)", "rules.yaml");
  ASSERT_TRUE(rules.ok()) << rules.status();
  EXPECT_EQ(rules->Match(File("/tmp/stolen", FileEvent::RENAMED, "/etc/shadow")).size(), 1u);
  EXPECT_EQ(rules->Match(File("/etc/new", FileEvent::RENAMED, "/tmp/x")).size(), 1u);
  // old_path only counts for renames.
  EXPECT_TRUE(rules->Match(File("/tmp/x", FileEvent::MODIFIED, "/etc/shadow")).empty());
}

TEST(RuleSet, UnknownKeyNamesFileLineAndColumn) {
  std::string err = ErrorOf("rules:\n  - id: a\n    title: t\n    severity: low\n"
                            "    match: {kind: file}\n    treshold: 3\n");
  EXPECT_NE(err.find("rules.yaml:6:5"), std::string::npos) << err;
  EXPECT_NE(err.find("treshold"), std::string::npos) << err;
}

TEST(RuleSet, BadSeverityNamesWhereItIs) {
  std::string err = ErrorOf("rules:\n  - id: x\n    title: t\n    severity: apocalyptic\n"
                            "    match: {kind: file}\n");
  EXPECT_NE(err.find("rules.yaml:4:15"), std::string::npos) << err;
  EXPECT_NE(err.find("apocalyptic"), std::string::npos) << err;
}

TEST(RuleSet, BadGlobNamesTheElement) {
  std::string err = ErrorOf("rules:\n  - id: x\n    title: t\n    severity: low\n"
                            "    match:\n      kind: file\n      paths: [\"/etc/**\", \"/etc/[ab\"]\n");
  EXPECT_NE(err.find("rules.yaml:7:"), std::string::npos) << err;
  EXPECT_NE(err.find("no closing ']'"), std::string::npos) << err;
}

TEST(RuleSet, UnknownKindIsRefusedClearly) {
  std::string err = ErrorOf("rules:\n  - id: x\n    title: t\n    severity: low\n"
                            "    match: {kind: agent}\n");
  EXPECT_NE(err.find("rules.yaml:2:5:"), std::string::npos) << err;
  EXPECT_NE(err.find("kind: agent needs absence"), std::string::npos) << err;
  err = ErrorOf("rules:\n  - id: x\n    title: t\n    severity: low\n    match: {kind: dns}\n");
  EXPECT_NE(err.find("unknown kind 'dns'"), std::string::npos) << err;
}

TEST(RuleSet, BadChangeResponseAndIdAreRefused) {
  EXPECT_NE(ErrorOf("rules:\n  - id: x\n    title: t\n    severity: low\n"
                    "    match: {kind: file, changes: [touched]}\n")
                .find("'touched' is not a change"),
            std::string::npos);
  EXPECT_NE(ErrorOf("rules:\n  - id: x\n    title: t\n    severity: low\n"
                    "    match: {kind: file}\n    response: [reboot]\n")
                .find("unknown response 'reboot'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("rules:\n  - id: Bad_ID!\n    title: t\n    severity: low\n"
                    "    match: {kind: file}\n")
                .find("rules.yaml:2:9"),
            std::string::npos);
}

TEST(RuleSet, DuplicateIdAcrossFilesInADirectoryIsRefused) {
  tripline::testing::TempDir dir;
  const std::string rule = "rules:\n  - id: same\n    title: t\n    severity: low\n"
                           "    match: {kind: file}\n";
  std::ofstream(dir.Sub("10-a.yaml")) << rule;
  std::ofstream(dir.Sub("20-b.yaml")) << rule;
  std::ofstream(dir.Sub("notes.txt")) << "not yaml: [";
  absl::StatusOr<RuleSet> r = LoadRules(dir.path());
  ASSERT_FALSE(r.ok());
  const std::string err(r.status().message());
  EXPECT_NE(err.find(dir.Sub("20-b.yaml") + ":2:9"), std::string::npos) << err;
  EXPECT_NE(err.find("duplicate rule id 'same'"), std::string::npos) << err;
  EXPECT_NE(err.find(dir.Sub("10-a.yaml")), std::string::npos) << err;
}

TEST(RuleSet, DirectoryLoadsYamlFilesInNameOrder) {
  tripline::testing::TempDir dir;
  std::ofstream(dir.Sub("20-b.yaml")) << "rules:\n  - {id: b, title: t, severity: low, "
                                         "match: {kind: file}}\n";
  std::ofstream(dir.Sub("10-a.yaml")) << "rules:\n  - {id: a, title: t, severity: low, "
                                         "match: {kind: file}}\n";
  absl::StatusOr<RuleSet> r = LoadRules(dir.path());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rules().size(), 2u);
  EXPECT_EQ(r->rules()[0].id, "a");
  EXPECT_EQ(r->rules()[1].id, "b");
  EXPECT_EQ(LoadRules(dir.Sub("missing")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tripline::collector
