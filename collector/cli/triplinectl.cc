#include "collector/cli/triplinectl.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "collector/cli/evidence.h"
#include "collector/cli/operator_commands.h"
#include "grpcpp/create_channel.h"
#include "platform/config/config_node.h"
#include "platform/fs/file_util.h"
#include "platform/runtime/logging.h"

namespace tripline::cli {
namespace {

constexpr int kDefaultColumns = 120;
constexpr size_t kMaxTokenBytes = 4096;
constexpr size_t kMaxPemBytes = 1 << 20;
constexpr int kMaxAnswerBytes = 512 << 20;

// A string as the inside of a JSON string literal.
std::string JsonEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

constexpr char kFooter[] =
    "Environment: TRIPLINE_COLLECTOR (default for --collector, else 127.0.0.1:7443),\n"
    "  TRIPLINE_TOKEN_FILE (default for --token-file, else ~/.config/tripline/token).\n"
    "Defaults below those: ~/.config/tripline/ctl.yaml (or $TRIPLINE_CTL_CONFIG) with the keys\n"
    "  collector, token_file, ca_file, cert_file, key_file, plaintext, timeout.\n"
    "TLS is used unless --plaintext is given; --ca-file pins the collector's CA (default: the\n"
    "  system's roots).\n"
    "--json prints one JSON document per command in protobuf's canonical mapping: field names as\n"
    "  in operator.proto, 64-bit integers as strings, bytes fields (paths, hashes, log lines)\n"
    "  base64.\n"
    "Exit status: 0 ok; 1 the collector answered with an error (printed as\n"
    "  \"triplinectl: CODE: message\"); 2 usage error, or the token or a TLS file cannot be read;\n"
    "  3 the collector cannot be reached (UNAVAILABLE, or no answer within --timeout).";

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFileToString(path, kMaxPemBytes);
  if (!pem.ok())
    return absl::Status(pem.status().code(),
                        absl::StrFormat("%s: %s", flag, pem.status().message()));
  return pem;
}

// "24h" / "90m" / "10s" ago, or an RFC 3339 time, as Unix nanoseconds.
absl::StatusOr<int64_t> ParseWhen(const std::string& text, int64_t now_unix_ns) {
  absl::Duration ago;
  if (absl::ParseDuration(text, &ago)) {
    if (ago < absl::ZeroDuration()) return absl::InvalidArgumentError("a duration ago is positive");
    return now_unix_ns - absl::ToInt64Nanoseconds(ago);
  }
  absl::Time when;
  std::string why;
  if (absl::ParseTime(absl::RFC3339_full, text, &when, &why)) return absl::ToUnixNanos(when);
  return absl::InvalidArgumentError(
      "want a duration ago such as 24h or 90m, or an RFC 3339 time such as "
      "2026-01-02T15:04:05Z");
}

// --since/--until texts (either may be empty: 0, unbounded) as Unix nanoseconds; on a bad text,
// the message for the user.
std::string ParseTimeRange(const std::string& since, const std::string& until, int64_t now_unix_ns,
                           int64_t* since_ns, int64_t* until_ns) {
  for (auto [text, field, out] :
       {std::tuple{&since, "--since", since_ns}, std::tuple{&until, "--until", until_ns}}) {
    *out = 0;
    if (text->empty()) continue;
    absl::StatusOr<int64_t> t = ParseWhen(*text, now_unix_ns);
    if (!t.ok()) {
      return absl::StrFormat("%s %s: %s", field, Printable(*text), t.status().message());
    }
    *out = *t;
  }
  return "";
}

// ~/.config/tripline/ctl.yaml (or $TRIPLINE_CTL_CONFIG): defaults below flags and environment.
struct CtlFile {
  std::string collector, token_file, ca_file, cert_file, key_file, timeout;
  bool plaintext = false;
};

absl::StatusOr<CtlFile> LoadCtlFile(const Environment& env) {
  std::string path;
  if (auto p = env.getenv("TRIPLINE_CTL_CONFIG"); p.has_value() && !p->empty()) {
    path = *p;
  } else if (auto home = env.getenv("HOME"); home.has_value() && !home->empty()) {
    path = *home + "/.config/tripline/ctl.yaml";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return CtlFile{};  // optional
  } else {
    return CtlFile{};
  }
  absl::StatusOr<ConfigNode> root = LoadYamlFile(path);
  if (!root.ok()) return root.status();
  CtlFile f;
  absl::Status st = root->ExpectKeys(
      {"collector", "token_file", "ca_file", "cert_file", "key_file", "plaintext", "timeout"});
  if (!st.ok()) return st;
  auto str = [&](const char* key, std::string* out) -> absl::Status {
    absl::StatusOr<std::string> v = root->String(key, "");
    if (!v.ok()) return v.status();
    *out = *std::move(v);
    return absl::OkStatus();
  };
  for (auto [key, out] :
       {std::pair{"collector", &f.collector}, std::pair{"token_file", &f.token_file},
        std::pair{"ca_file", &f.ca_file}, std::pair{"cert_file", &f.cert_file},
        std::pair{"key_file", &f.key_file}, std::pair{"timeout", &f.timeout}}) {
    if (absl::Status s2 = str(key, out); !s2.ok()) return s2;
  }
  absl::StatusOr<bool> plain = root->Bool("plaintext", false);
  if (!plain.ok()) return plain.status();
  f.plaintext = *plain;
  return f;
}

constexpr char kBashCompletion[] =
    R"SH(# bash completion for triplinectl: eval "$(triplinectl completion bash)"
_triplinectl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words
  case "$prev" in
    triplinectl) words="agents events cloud-events incidents incident actions evidence rules completion --collector --token-file --plaintext --ca-file --cert-file --key-file --json --timeout --help" ;;
    incident) words="show report ack contain resolve reopen note assign unassign" ;;
    evidence) words="export verify" ;;
    rules) words="reload test" ;;
    agents) words="reenroll" ;;
    events) words="--agent --kind --limit --after --path --text --since --until --follow" ;;
    incidents) words="--status --limit" ;;
    cloud-events) words="--limit --after" ;;
    --status) words="open acknowledged contained resolved" ;;
    --kind) words="file log agent" ;;
    completion) words="bash" ;;
    --token-file|--ca-file|--cert-file|--key-file|-o|--output|verify) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    *) words="--json --help" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _triplinectl triplinectl
)SH";

// Prints "triplinectl: <message>" and returns `code`, the exit status.
int Report(std::ostream& err, int code, const std::string& message) {
  err << "triplinectl: " << message << '\n';
  return code;
}

}  // namespace

int TerminalColumns(int fd) {
  struct winsize ws {};
  if (::isatty(fd) == 1 && ::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col != 0) return ws.ws_col;
  // Not a terminal (a pipe, a file): $COLUMNS when it is a sane width, as in the shell.
  int columns = 0;
  const char* env = std::getenv("COLUMNS");
  if (env != nullptr && absl::SimpleAtoi(env, &columns) && columns >= 20 && columns <= 1000) {
    return columns;
  }
  return kDefaultColumns;
}

Environment ProcessEnvironment(int fd) {
  Environment env;
  env.getenv = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  env.terminal_columns = TerminalColumns(fd);
  env.now_unix_ns = absl::ToUnixNanos(absl::Now());
  return env;
}

std::string CollectorAddress(const std::string& flag, const Environment& env) {
  if (!flag.empty()) return flag;
  if (auto address = env.getenv("TRIPLINE_COLLECTOR"); address.has_value() && !address->empty()) {
    return *address;
  }
  return kDefaultCollector;
}

absl::StatusOr<std::string> TokenPath(const std::string& flag, const Environment& env) {
  if (!flag.empty()) return flag;
  if (auto path = env.getenv("TRIPLINE_TOKEN_FILE"); path.has_value() && !path->empty()) {
    return *path;
  }
  auto home = env.getenv("HOME");
  if (!home.has_value() || home->empty()) {
    return absl::InvalidArgumentError(
        "no token file: HOME is not set; use --token-file or TRIPLINE_TOKEN_FILE");
  }
  return *home + "/.config/tripline/token";
}

absl::StatusOr<std::string> ReadOperatorToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path, kMaxTokenBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrFormat("token file: %s (use --token-file or TRIPLINE_TOKEN_FILE)",
                                        text.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("token file %s is empty", Printable(path)));
  }
  for (unsigned char c : token) {
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token file %s holds bytes that cannot go in an authorization header (spaces, control "
          "or non-ASCII bytes)",
          Printable(path)));
    }
  }
  return token;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeTransportCredentials(
    const TransportOptions& options) {
  if (options.plaintext) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--ca-file", options.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.cert_file.empty() || !options.key_file.empty()) {
    if (options.cert_file.empty() || options.key_file.empty()) {
      return absl::InvalidArgumentError("--cert-file and --key-file go together");
    }
    absl::StatusOr<std::string> cert = ReadPem("--cert-file", options.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("--key-file", options.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

int RunTriplinectl(int argc, const char* const* argv, const Environment& env, std::ostream& out,
                   std::ostream& err) {
  std::string collector, token_file, timeout_text = "10s";
  TransportOptions transport;
  OutputOptions output;
  output.columns = env.terminal_columns;
  output.now_unix_ns = env.now_unix_ns;

  CLI::App app{"triplinectl: query a Tripline collector's agents, events, incidents and actions",
               "triplinectl"};
  app.footer(kFooter);
  app.fallthrough();  // global flags also after the command: `triplinectl events --json`
  app.require_subcommand(1);
  app.add_option("--collector", collector, "collector address HOST:PORT");
  app.add_option("--token-file", token_file, "file holding the operator token");
  auto* plaintext = app.add_flag("--plaintext", transport.plaintext,
                                 "no TLS (only for a collector configured without it)");
  app.add_option("--ca-file", transport.ca_file, "PEM of the CA that signed the collector's cert")
      ->excludes(plaintext);
  auto* cert = app.add_option("--cert-file", transport.cert_file, "client certificate (mTLS)")
                   ->excludes(plaintext);
  auto* key = app.add_option("--key-file", transport.key_file, "client certificate's key (mTLS)")
                  ->excludes(plaintext);
  cert->needs(key);
  key->needs(cert);
  app.add_flag("--json", output.json, "print the answer as JSON instead of a table");
  app.add_option("--timeout", timeout_text, "deadline for the call, e.g. 10s, 500ms, 2m")
      ->capture_default_str();

  auto* agents = app.add_subcommand(
      "agents", "list agents: id, hostname, version, last seen, durable seq, isolation state");
  std::string reenroll_id;
  auto* reenroll = agents->add_subcommand(
      "reenroll",
      "let the agent enroll once with a new key (re-imaged instance, lost state); needs admin");
  reenroll->add_option("ID", reenroll_id, "agent id")->required();

  tripline::v1::QueryEventsRequest events_request;
  std::string kind;
  uint32_t events_limit = 0;
  int64_t after_id = 0;
  auto* events = app.add_subcommand("events", "list stored events, oldest first");
  events->add_option("--agent", *events_request.mutable_agent_id(), "only this agent's events");
  events->add_option("--kind", kind, "file, log or agent")
      ->check(CLI::IsMember({"file", "log", "agent"}));
  events->add_option("--limit", events_limit, "at most N events (collector default 100)")
      ->check(CLI::Range(1, 1000));
  std::string since_text, until_text;
  bool follow = false;
  events->add_option("--path", *events_request.mutable_path_glob(),
                     "only file/log events whose path matches this glob ('*' also matches '/')");
  events->add_option("--text", *events_request.mutable_text(),
                     "only events containing this text (case-sensitive)");
  events->add_option("--since", since_text, "from this time: 24h, 90m (ago) or RFC 3339");
  events->add_option("--until", until_text, "before this time: 1h (ago) or RFC 3339");
  events->add_flag("-f,--follow", follow, "after the stored events, print new ones as they come");
  events->add_option("--after", after_id, "only events with an id greater than ID (paging)")
      ->check(CLI::NonNegativeNumber);

  uint32_t cloud_limit = 0;
  int64_t cloud_after = 0;
  auto* cloud_events =
      app.add_subcommand("cloud-events", "list stored CloudTrail events, oldest first");
  cloud_events->add_option("--limit", cloud_limit, "at most N events (collector default 100)")
      ->check(CLI::Range(1, 1000));
  cloud_events->add_option("--after", cloud_after, "only events with an id greater than ID")
      ->check(CLI::NonNegativeNumber);

  tripline::v1::ListIncidentsRequest incidents_request;
  uint32_t incidents_limit = 0;
  auto* incidents = app.add_subcommand("incidents", "list incidents");
  incidents->add_option("--status", *incidents_request.mutable_status(),
                        "open, acknowledged, contained or resolved");
  incidents->add_option("--limit", incidents_limit, "at most N incidents")
      ->check(CLI::Range(1, 1000));

  int64_t incident_id = 0;
  int64_t update_id = 0;
  auto* incident = app.add_subcommand("incident", "one incident");
  incident->require_subcommand(1);
  auto* show =
      incident->add_subcommand("show", "the incident, its events and actions in time order");
  show->add_option("ID", incident_id, "incident id")->required()->check(CLI::PositiveNumber);

  std::string report_file;
  auto* report =
      incident->add_subcommand("report", "the post-incident report (Markdown; --json for JSON)");
  report->add_option("ID", incident_id, "incident id")->required()->check(CLI::PositiveNumber);
  report->add_option("-o,--output", report_file, "write it to this file (0600) instead");

  // Changes: each prints the incident as it is afterwards.
  tripline::v1::UpdateIncidentRequest update;
  struct Transition {
    const char* verb;
    const char* status;
    const char* help;
  };
  const Transition transitions[] = {
      {"ack", "acknowledged", "acknowledge: someone is on it"},
      {"contain", "contained", "mark contained (isolation does this by itself)"},
      {"resolve", "resolved", "resolve (say why with --note)"},
      {"reopen", "open", "reopen a resolved incident"},
  };
  std::vector<std::pair<CLI::App*, const char*>> transition_cmds;
  for (const Transition& t : transitions) {
    auto* cmd = incident->add_subcommand(t.verb, t.help);
    cmd->add_option("ID", update_id, "incident id")->required()->check(CLI::PositiveNumber);
    cmd->add_option("--note", *update.mutable_note(), "a note for the timeline");
    transition_cmds.emplace_back(cmd, t.status);
  }
  auto* note = incident->add_subcommand("note", "add a note to the timeline");
  note->add_option("ID", update_id, "incident id")->required()->check(CLI::PositiveNumber);
  note->add_option("TEXT", *update.mutable_note(), "the note")->required();
  auto* assign = incident->add_subcommand("assign", "assign the incident to someone");
  assign->add_option("ID", update_id, "incident id")->required()->check(CLI::PositiveNumber);
  assign->add_option("WHO", *update.mutable_assignee(), "who works it")->required();
  auto* unassign = incident->add_subcommand("unassign", "nobody works it any more");
  unassign->add_option("ID", update_id, "incident id")->required()->check(CLI::PositiveNumber);

  int64_t evidence_incident = 0;
  std::string evidence_dir;
  auto* evidence = app.add_subcommand("evidence", "export or verify an incident's evidence");
  evidence->require_subcommand(1);
  auto* export_cmd = evidence->add_subcommand(
      "export", "write the signed batches, keys, incident and actions, with a manifest");
  export_cmd->add_option("INCIDENT", evidence_incident, "incident id")
      ->required()
      ->check(CLI::PositiveNumber);
  export_cmd->add_option("-o,--output", evidence_dir, "a new (or empty) directory")->required();
  auto* verify_cmd = evidence->add_subcommand(
      "verify",
      "re-check an exported directory offline: digests, signatures, chain (exit 1 "
      "when anything fails)");
  verify_cmd->add_option("DIR", evidence_dir, "the exported directory")->required();

  auto* rules = app.add_subcommand("rules", "the collector's detection rules");
  rules->require_subcommand(1);
  auto* rules_reload = rules->add_subcommand(
      "reload", "load the rules file(s) again; a bad file keeps the old rules (needs admin)");

  std::string test_file, test_since = "24h", test_until;
  tripline::v1::TestRuleRequest test_request;
  auto* rules_test = rules->add_subcommand(
      "test", "run the rules in FILE over stored events, acting on nothing: what would fire");
  rules_test->add_option("FILE", test_file, "a rules file")->required();
  rules_test->add_option("--since", test_since, "from: 24h, 7d (ago) or RFC 3339")
      ->capture_default_str();
  rules_test->add_option("--until", test_until, "before: 1h (ago) or RFC 3339 (default: now)");
  rules_test->add_option("--agent", *test_request.mutable_agent_id(), "only this agent's events");

  std::string shell;
  auto* completion = app.add_subcommand("completion", "print a shell completion script");
  completion->add_option("SHELL", shell, "bash")->required()->check(CLI::IsMember({"bash"}));
  int64_t approve_id = 0;
  auto* approve = incident->add_subcommand("approve",
                                           "let the incident's isolation waiting for "
                                           "approval go ahead");
  approve->add_option("ID", approve_id, "incident id")->required()->check(CLI::PositiveNumber);

  std::string isolate_target;
  bool isolate_dry_run = false;
  int64_t isolate_incident = 0;
  auto* isolate = app.add_subcommand("isolate", "isolate an EC2 instance (the full recipe)");
  isolate->add_option("INSTANCE", isolate_target, "instance id (i-...)")->required();
  isolate->add_option("--incident", isolate_incident, "the incident it belongs to")
      ->check(CLI::PositiveNumber);
  isolate->add_flag("--dry-run", isolate_dry_run, "only ask AWS whether it would work (DryRun)");

  std::string release_target;
  bool release_dry_run = false;
  auto* release = app.add_subcommand(
      "release", "undo an isolation: restore the recorded groups, profile, shutdown behaviour");
  release->add_option("TARGET", release_target, "instance id (i-...) or incident id")->required();
  release->add_flag("--dry-run", release_dry_run, "only ask AWS whether it would work (DryRun)");

  // Separate actions: stop, disassociate-eips.
  tripline::v1::RespondRequest respond_request;
  bool respond_dry_run = false;
  int64_t respond_incident = 0;
  std::vector<CLI::App*> responds;
  for (const char* name : {"stop", "disassociate-eips"}) {
    auto* cmd = app.add_subcommand(name, std::string(name) == "stop"
                                             ? "stop an EC2 instance (memory evidence is lost)"
                                             : "disassociate the instance's Elastic IPs "
                                               "(release associates them again)");
    cmd->add_option("INSTANCE", *respond_request.mutable_instance_id(), "instance id (i-...)")
        ->required();
    cmd->add_option("--incident", respond_incident, "the incident it belongs to")
        ->check(CLI::PositiveNumber);
    cmd->add_flag("--dry-run", respond_dry_run, "only ask AWS whether it would work (DryRun)");
    responds.push_back(cmd);
  }

  tripline::v1::ListActionsRequest actions_request;
  int64_t action_incident = 0;
  uint32_t actions_limit = 0;
  auto* actions = app.add_subcommand("actions", "list response actions (the audit trail)");
  actions->add_option("--incident", action_incident, "only this incident's actions")
      ->check(CLI::PositiveNumber);
  actions->add_option("--limit", actions_limit, "at most N actions")->check(CLI::Range(1, 1000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  } catch (const CLI::Error& e) {
    return Report(err, kExitUsage, e.what());
  }

  if (completion->parsed()) {
    out << kBashCompletion;
    return kExitOk;
  }
  if (verify_cmd->parsed()) {  // offline: neither a collector nor a token
    EvidenceReport verdict = VerifyEvidence(evidence_dir);
    if (output.json) {
      out << "{\"ok\":" << (verdict.ok ? "true" : "false") << ",\"batches\":" << verdict.batches
          << ",\"events\":" << verdict.events << ",\"problems\":[";
      for (size_t i = 0; i < verdict.problems.size(); ++i) {
        out << (i == 0 ? "" : ",") << '"' << JsonEscape(verdict.problems[i]) << '"';
      }
      out << "]}\n";
    } else {
      for (const std::string& p : verdict.problems) out << "FAIL  " << p << '\n';
      out << verdict.summary << '\n';
    }
    return verdict.ok ? kExitOk : kExitRpcError;
  }

  absl::StatusOr<CtlFile> file = LoadCtlFile(env);
  if (!file.ok()) return Report(err, kExitUsage, std::string(file.status().message()));
  // Flags win, then the environment (inside CollectorAddress/TokenPath), then the file.
  if (collector.empty() && !env.getenv("TRIPLINE_COLLECTOR").has_value()) {
    collector = file->collector;
  }
  if (token_file.empty() && !env.getenv("TRIPLINE_TOKEN_FILE").has_value()) {
    token_file = file->token_file;
  }
  if (app.get_option("--plaintext")->count() == 0 && transport.ca_file.empty() &&
      transport.cert_file.empty()) {
    transport.plaintext = file->plaintext;
    if (!file->plaintext) {
      transport.ca_file = file->ca_file;
      transport.cert_file = file->cert_file;
      transport.key_file = file->key_file;
    }
  }
  if (app.get_option("--timeout")->count() == 0 && !file->timeout.empty()) {
    timeout_text = file->timeout;
  }

  CallOptions call;
  if (!absl::ParseDuration(timeout_text, &call.timeout) || call.timeout <= absl::ZeroDuration()) {
    return Report(err, kExitUsage,
                  absl::StrFormat("--timeout %s: want a positive duration such as 10s or 500ms",
                                  Printable(timeout_text)));
  }
  collector = CollectorAddress(collector, env);
  absl::StatusOr<std::string> token_path = TokenPath(token_file, env);
  if (!token_path.ok()) return Report(err, kExitUsage, std::string(token_path.status().message()));
  absl::StatusOr<std::string> token = ReadOperatorToken(*token_path);
  if (!token.ok()) return Report(err, kExitUsage, std::string(token.status().message()));
  call.token = *std::move(token);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeTransportCredentials(transport);
  if (!credentials.ok())
    return Report(err, kExitUsage, std::string(credentials.status().message()));

  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(kMaxAnswerBytes);  // evidence exports are large
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(collector, *credentials, channel_args);
  auto stub = tripline::v1::Operator::NewStub(channel);

  grpc::Status status;
  if (reenroll->parsed()) {
    status = ReenrollAgent(*stub, reenroll_id, call, output, out);
  } else if (agents->parsed()) {
    status = ListAgents(*stub, call, output, out);
  } else if (events->parsed()) {
    events_request.set_kind(kind);
    events_request.set_limit(events_limit);
    events_request.set_after_id(after_id);
    int64_t since_ns = 0, until_ns = 0;
    if (std::string bad =
            ParseTimeRange(since_text, until_text, env.now_unix_ns, &since_ns, &until_ns);
        !bad.empty()) {
      return Report(err, kExitUsage, bad);
    }
    events_request.set_since_unix_ns(since_ns);
    events_request.set_until_unix_ns(until_ns);
    status = follow ? FollowEvents(*stub, events_request, call, output, out)
                    : QueryEvents(*stub, events_request, call, output, out);
  } else if (cloud_events->parsed()) {
    tripline::v1::QueryCloudEventsRequest cloud_request;
    cloud_request.set_limit(cloud_limit);
    cloud_request.set_after_id(cloud_after);
    status = QueryCloudEvents(*stub, cloud_request, call, output, out);
  } else if (incidents->parsed()) {
    incidents_request.set_limit(incidents_limit);
    status = ListIncidents(*stub, incidents_request, call, output, out);
  } else if (show->parsed()) {
    status = ShowIncident(*stub, incident_id, call, output, out);
  } else if (note->parsed() || assign->parsed() || unassign->parsed() ||
             std::any_of(transition_cmds.begin(), transition_cmds.end(),
                         [](const auto& t) { return t.first->parsed(); })) {
    update.set_id(update_id);
    for (const auto& [cmd, to] : transition_cmds) {
      if (cmd->parsed()) update.set_status(to);
    }
    update.set_unassign(unassign->parsed());
    status = UpdateIncident(*stub, update, call, output, out);
  } else if (rules_test->parsed()) {
    absl::StatusOr<std::string> yaml = ReadFileToString(test_file, 1 << 20);
    if (!yaml.ok()) return Report(err, kExitUsage, std::string(yaml.status().message()));
    test_request.set_rules_yaml(*std::move(yaml));
    int64_t since_ns = 0, until_ns = 0;
    if (std::string bad =
            ParseTimeRange(test_since, test_until, env.now_unix_ns, &since_ns, &until_ns);
        !bad.empty()) {
      return Report(err, kExitUsage, bad);
    }
    test_request.set_since_unix_ns(since_ns);
    test_request.set_until_unix_ns(until_ns);
    status = TestRules(*stub, test_request, call, output, out);
  } else if (rules_reload->parsed()) {
    status = ReloadRules(*stub, call, output, out);
  } else if (report->parsed()) {
    status = IncidentReport(*stub, incident_id, report_file, call, output, out);
  } else if (export_cmd->parsed()) {
    status = ExportEvidence(*stub, evidence_incident, collector, evidence_dir, call, output, out);
  } else if (responds[0]->parsed() || responds[1]->parsed()) {
    respond_request.set_action(responds[0]->parsed() ? "stop" : "disassociate-eips");
    respond_request.set_incident_id(respond_incident);
    if (respond_dry_run) respond_request.set_mode("dry-run");
    status = Respond(*stub, respond_request, call, output, out);
  } else if (approve->parsed()) {
    status = ApproveIncident(*stub, approve_id, call, output, out);
  } else if (isolate->parsed()) {
    tripline::v1::IsolateRequest request;
    request.set_instance_id(isolate_target);
    request.set_incident_id(isolate_incident);
    if (isolate_dry_run) request.set_mode("dry-run");
    status = Isolate(*stub, request, call, output, out);
  } else if (release->parsed()) {
    tripline::v1::ReleaseRequest request;
    int64_t release_incident = 0;
    if (absl::SimpleAtoi(release_target, &release_incident) && release_incident > 0) {
      request.set_incident_id(release_incident);
    } else {
      request.set_instance_id(release_target);
    }
    if (release_dry_run) request.set_mode("dry-run");
    status = Release(*stub, request, call, output, out);
  } else if (actions->parsed()) {
    actions_request.set_incident_id(action_incident);
    actions_request.set_limit(actions_limit);
    status = ListActions(*stub, actions_request, call, output, out);
  } else {
    return Report(err, kExitUsage, "no command; see --help");
  }
  out.flush();
  if (!status.ok()) {
    std::string message = DescribeRpcError(status);
    if (ExitCodeFor(status) == kExitUnreachable) {
      message += absl::StrFormat(" (collector %s)", Printable(collector));
    }
    return Report(err, ExitCodeFor(status), message);
  }
  return kExitOk;
}

}  // namespace tripline::cli
