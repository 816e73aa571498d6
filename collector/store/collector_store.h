// The collector's database: agents (pinned keys and chain positions), batches (the signed bytes as
// received), events, incidents with their linked events, and actions (the audit trail). All SQL of
// the collector lives here. SQLite in WAL mode with numbered migrations (kSchema in the .cc).
//
// Threads: two connections. Writes go through one write connection, taken by BeginWrite() under
// an internal mutex, so the store writer, the response worker and enrollment never interleave
// inside a transaction. Reads (operator API, startup) use a second connection under its own mutex;
// WAL lets them run while a write transaction is open, so queries never stall ingest for long.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "platform/store/sqlite.h"

namespace tripline::collector {

struct AgentRecord {
  std::string agent_id;
  std::string public_key;
  std::string hostname;
  std::string version;
  int64_t enrolled_ns = 0;
  int64_t last_seen_ns = 0;
  uint64_t durable_seq = 0;
  std::string durable_digest;   // ChainDigest of the last committed batch; GenesisDigest() if none
  std::string isolation_state;  // "", "isolating", "isolated", "failed"
  // From the last HEARTBEAT: when the agent sent it (0: none yet) and its spool backlog then.
  int64_t heartbeat_ns = 0;
  uint64_t spool_batches = 0;
  uint64_t spool_bytes = 0;
};

// One key of an agent: it signs batches from from_seq until the next key's from_seq.
struct AgentKeyRecord {
  uint64_t from_seq = 0;
  std::string public_key;
  int64_t pinned_ns = 0;
};

// An agent an absence rule found silent: since when (its last_seen_ns then) and the incident
// that silence opened (or was appended to). Deleted once the agent is heard again.
struct AbsenceEpisode {
  std::string rule_id;
  std::string agent_id;
  int64_t silent_since_ns = 0;
  int64_t incident_id = 0;
};

struct EventRecord {
  int64_t id = 0;
  std::string agent_id;
  uint64_t batch_seq = 0;
  std::string event;  // serialized tripline.v1.Event
  int64_t received_ns = 0;
};

struct IncidentRecord {
  int64_t id = 0;
  std::string agent_id;
  std::string rule_id;
  std::string title;
  std::string severity;
  std::string status;  // open, acknowledged, contained, resolved
  int64_t opened_ns = 0;
  int64_t updated_ns = 0;
  std::string summary;  // the timeline: one line per thing that happened
  std::string assignee;
  std::vector<int64_t> event_ids;
};

struct ActionRecord {
  int64_t id = 0;
  int64_t incident_id = 0;  // 0: none
  int64_t parent_id = 0;    // the "isolate" action a step belongs to; 0 for top-level actions
  std::string agent_id;
  std::string kind;    // "isolate", "ec2:DescribeInstances", "ec2:ModifyNetworkInterfaceAttribute"
  std::string target;  // instance id or eni id
  std::string status;  // pending, running, done, failed; approval (waiting for an operator)
  std::string detail;
  std::string aws_request_id;
  std::string error_code;
  std::string error_message;
  std::string actor;
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  std::string step_key;  // steps: stable name within the parent ("eni-isolate:eni-1")
  std::string result;    // steps: what the step learned, for the steps after it and for release
  std::string mode;      // top-level response actions: auto, approve, dry-run
};

// The action an operator's `agents reenroll` leaves pending (target: the agent id): the agent's
// next enrollment with a new key pins that key and completes the action (its result names both).
inline constexpr char kReenrollActionKind[] = "agent:reenroll";

// An operator's bearer token: only its keyed hash is kept (see collector/auth).
struct OperatorTokenRecord {
  int64_t id = 0;
  std::string name;
  std::string role;  // read, respond, admin
  std::string hash;  // keyed BLAKE2b-256 of the token's secret part
  int64_t created_ns = 0;
  std::string created_by;
  int64_t revoked_ns = 0;  // 0: active
};

struct BatchRecord {
  std::string agent_id;
  uint64_t batch_seq = 0;
  std::string batch;      // EventBatch bytes as signed
  std::string signature;  // Ed25519 over the context string and `batch`
  int64_t received_ns = 0;
};

// A CloudTrail event as stored (see collector/cloudtrail/cloud_event.h).
struct CloudEventRecord {
  int64_t id = 0;
  std::string region;  // the region polled
  std::string event_id;
  std::string event_name;
  std::string event_source;
  int64_t time_ns = 0;
  std::string principal_arn;
  std::string access_key_id;
  std::string source_ip;
  std::string user_agent;
  std::vector<std::string> resources;  // "TYPE NAME"
  std::string raw;                     // the CloudTrailEvent JSON
  int64_t received_ns = 0;
};

// A CloudTrail record that was reported as malformed and skipped.
struct CloudEventError {
  int64_t id = 0;
  std::string region;
  std::string event_id;  // "" when it had no usable one
  std::string reason;
  std::string raw;  // the item, capped
  int64_t received_ns = 0;
};

struct EventQuery {
  std::string agent_id;  // empty: all
  std::string kind;      // empty: all; file | log | agent
  int64_t after_id = 0;
  int limit = 100;
  std::string path_glob;  // SQLite GLOB on the path; empty: any
  int64_t since_ns = 0;   // 0: unbounded
  int64_t until_ns = 0;   // 0: unbounded
  std::string text;       // substring of the event's bytes; empty: any
};

class CollectorStore {
 public:
  // Opens (creating) the database at `path` and brings its schema up to date. Errors name the file.
  static absl::StatusOr<std::unique_ptr<CollectorStore>> Open(const std::string& path);

  // One write transaction on the write connection: holds the write lock from BeginWrite until it
  // is committed or destroyed (then it rolls back). Methods return the SQLite error naming the
  // database; after an error the transaction should be dropped.
  class Writer {
   public:
    Writer(Writer&&) = default;
    ~Writer() = default;

    // Agents.
    absl::StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& agent_id);
    absl::Status InsertAgent(const AgentRecord& agent);
    absl::Status UpdateAgentMeta(const std::string& agent_id, const std::string& hostname,
                                 const std::string& version);
    absl::Status AdvanceAgentChain(const std::string& agent_id, uint64_t durable_seq,
                                   const std::string& durable_digest, int64_t last_seen_ns);
    absl::Status SetIsolationState(const std::string& agent_id, const std::string& state);
    absl::Status RecordHeartbeat(const std::string& agent_id, int64_t sent_ns,
                                 uint64_t spool_batches, uint64_t spool_bytes);
    absl::Status PutAbsenceEpisode(const AbsenceEpisode& episode);
    absl::Status DeleteAbsenceEpisode(const std::string& rule_id, const std::string& agent_id);
    // Pins another key for a known agent (an operator-approved re-enrollment); the chain goes on,
    // and the key history records that the new key signs from the batch after the durable one.
    absl::Status SetAgentKey(const std::string& agent_id, const std::string& public_key,
                             const std::string& hostname, const std::string& version,
                             int64_t now_ns);

    // Batches and their events. InsertEvent returns the new event id.
    absl::Status InsertBatch(const std::string& agent_id, uint64_t batch_seq,
                             const std::string& batch_bytes, const std::string& signature,
                             int64_t received_ns);
    // The signed bytes stored for (agent, batch_seq), or nullopt when there is no such batch.
    absl::StatusOr<std::optional<std::string>> GetBatchBytes(const std::string& agent_id,
                                                             uint64_t batch_seq);
    // `kind` is file|log|agent; path and change are empty unless it is a file event.
    // `event_bytes` is the serialized tripline.v1.Event (the ingest path passes the event's bytes
    // as they lie in the signed batch).
    absl::StatusOr<int64_t> InsertEvent(const std::string& agent_id, uint64_t batch_seq,
                                        uint64_t seq, int64_t time_ns, const std::string& kind,
                                        const std::string& path, const std::string& change,
                                        std::string_view event_bytes, int64_t received_ns);

    // Incidents. FindOpenIncident: the incident of (rule, agent) whose status is not resolved.
    absl::StatusOr<std::optional<int64_t>> FindOpenIncident(const std::string& rule_id,
                                                            const std::string& agent_id);
    absl::StatusOr<int64_t> InsertIncident(const IncidentRecord& incident);
    absl::Status LinkIncidentEvent(int64_t incident_id, int64_t event_id, int64_t now_ns);
    // Containment finishing after an operator resolved the incident leaves it resolved.
    absl::Status SetIncidentStatus(int64_t incident_id, const std::string& status, int64_t now_ns);
    // The incident as this transaction sees it (without its event ids).
    absl::StatusOr<std::optional<IncidentRecord>> GetIncident(int64_t id);
    absl::Status SetIncidentAssignee(int64_t incident_id, const std::string& assignee,
                                     int64_t now_ns);
    // Appends one line to the incident's summary (its timeline); a summary past 64 KiB stops
    // growing, so a noisy source cannot fill the disk through it.
    absl::Status AppendIncidentSummary(int64_t incident_id, const std::string& line,
                                       int64_t now_ns);

    // CloudTrail. InsertCloudEvent returns the new row's id, or 0 when an event with that event
    // id is already stored (overlapping poll windows). InsertCloudEventError returns false when
    // the same record was already reported. The cursor is where the region's next poll starts.
    absl::StatusOr<int64_t> InsertCloudEvent(const CloudEventRecord& event);
    absl::StatusOr<bool> InsertCloudEventError(const std::string& region,
                                               const std::string& event_id,
                                               const std::string& reason, const std::string& raw,
                                               int64_t now_ns);
    absl::Status SetCloudCursor(const std::string& region, int64_t start_ns, int64_t now_ns);
    absl::Status LinkIncidentCloudEvent(int64_t incident_id, int64_t cloud_event_id,
                                        int64_t now_ns);

    // Actions.
    absl::StatusOr<int64_t> InsertAction(const ActionRecord& action);
    // Writes status, detail, request id, error fields, result, mode, actor of `action` (by id) and
  // updated_ns.
    absl::Status UpdateAction(const ActionRecord& action);
    // The oldest top-level action of `kind` on `target` in status pending, if any.
    absl::StatusOr<std::optional<ActionRecord>> PendingAction(const std::string& kind,
                                                              const std::string& target);

    // Operator tokens. At most one active token per name (the database enforces it).
    absl::StatusOr<int64_t> InsertOperatorToken(const OperatorTokenRecord& token);
    absl::StatusOr<std::optional<OperatorTokenRecord>> ActiveOperatorToken(const std::string& name);
    // NotFound when `id` is not an active token.
    absl::Status RevokeOperatorToken(int64_t id, int64_t now_ns);

    // Makes everything above durable; the lock is released either way.
    absl::Status Commit();

   private:
    friend class CollectorStore;
    Writer(std::unique_lock<std::mutex> lock, Database* db, Transaction txn)
        : lock_(std::move(lock)), db_(db), txn_(std::move(txn)) {}
    std::unique_lock<std::mutex> lock_;
    Database* db_;
    Transaction txn_;
  };

  // Waits for the write lock, then BEGIN IMMEDIATE.
  absl::StatusOr<Writer> BeginWrite();

  // Reads (read connection). Lists are ordered by id.
  absl::StatusOr<std::vector<AgentRecord>> ListAgents();
  absl::StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& agent_id);
  // Every key `agent_id` has had, oldest first (empty for an unknown agent).
  absl::StatusOr<std::vector<AgentKeyRecord>> AgentKeys(const std::string& agent_id);
  absl::StatusOr<std::vector<AbsenceEpisode>> ListAbsenceEpisodes();
  absl::StatusOr<std::vector<EventRecord>> QueryEvents(const EventQuery& query);
  absl::StatusOr<std::vector<EventRecord>> IncidentEvents(int64_t incident_id);
  // The newest event's id, 0 when there is none.
  absl::StatusOr<int64_t> MaxEventId();
  // status empty: all. Newest first.
  absl::StatusOr<std::vector<IncidentRecord>> ListIncidents(const std::string& status, int limit);
  absl::StatusOr<std::optional<IncidentRecord>> GetIncident(int64_t id);
  // incident_id 0: all. Oldest first.
  absl::StatusOr<std::vector<ActionRecord>> ListActions(int64_t incident_id, int limit);
  // Operator tokens, revoked ones included.
  absl::StatusOr<std::optional<OperatorTokenRecord>> GetOperatorToken(int64_t id);
  absl::StatusOr<std::vector<OperatorTokenRecord>> ListOperatorTokens();
  // Top-level actions (parent 0) of `kind` in status pending or running, oldest first: what the
  // response worker resumes.
  absl::StatusOr<std::vector<ActionRecord>> UnfinishedActions(const std::string& kind);
  // Steps of `parent_id` still marked running (left behind by a stop in the middle of a call).
  absl::StatusOr<std::vector<ActionRecord>> RunningSteps(int64_t parent_id);
  // An agent's batches with from_seq <= batch_seq <= to_seq, in seq order, at most `limit`.
  absl::StatusOr<std::vector<BatchRecord>> Batches(const std::string& agent_id, uint64_t from_seq,
                                                   uint64_t to_seq, int limit);
  // Every step of `parent_id`, oldest first.
  absl::StatusOr<std::vector<ActionRecord>> Steps(int64_t parent_id);
  absl::StatusOr<std::optional<ActionRecord>> GetAction(int64_t id);
  // Top-level actions of `kind` on `target`, oldest first.
  absl::StatusOr<std::vector<ActionRecord>> TopLevelActions(const std::string& kind,
                                                            const std::string& target);
  // Top-level `kind` actions the collector started on its own in mode auto since `since_ns`
  // and ran (refusals by the never-isolate list do not count): the hourly cap.
  absl::StatusOr<int64_t> CountAutomaticActionsSince(const std::string& kind, int64_t since_ns);
  // CloudTrail: a region's cursor (nullopt before its first poll), stored events by id, an
  // incident's cloud events, and the records reported as malformed (oldest first).
  absl::StatusOr<std::optional<int64_t>> GetCloudCursor(const std::string& region);
  absl::StatusOr<std::vector<CloudEventRecord>> ListCloudEvents(int64_t after_id, int limit);
  absl::StatusOr<std::vector<CloudEventRecord>> IncidentCloudEvents(int64_t incident_id);
  absl::StatusOr<std::vector<CloudEventError>> ListCloudEventErrors(int limit);
  // Number of stored batches of an agent (tests, diagnostics).
  absl::StatusOr<int64_t> CountBatches(const std::string& agent_id);

  const std::string& path() const { return path_; }

 private:
  CollectorStore(std::string path, std::unique_ptr<Database> write_db,
                 std::unique_ptr<Database> read_db)
      : path_(std::move(path)), write_db_(std::move(write_db)), read_db_(std::move(read_db)) {}

  const std::string path_;
  std::mutex write_mu_;  // held by a Writer for its whole transaction
  std::unique_ptr<Database> write_db_;
  std::mutex read_mu_;
  std::unique_ptr<Database> read_db_;  // guarded by read_mu_
};

}  // namespace tripline::collector
