#include "collector/store/collector_store.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "platform/runtime/status_macros.h"

namespace tripline::collector {
namespace {

// Migration i brings the schema to version i+1. Never edit a released migration: add one.
const std::vector<std::string>& Schema() {
  static const std::vector<std::string> kSchema = {
      // 1: agents, batches, events, incidents, actions.
      R"sql(
CREATE TABLE agents (
  agent_id        TEXT PRIMARY KEY,
  public_key      BLOB NOT NULL,
  hostname        TEXT NOT NULL DEFAULT '',
  version         TEXT NOT NULL DEFAULT '',
  enrolled_ns     INTEGER NOT NULL,
  last_seen_ns    INTEGER NOT NULL DEFAULT 0,
  durable_seq     INTEGER NOT NULL DEFAULT 0,
  durable_digest  BLOB NOT NULL,
  isolation_state TEXT NOT NULL DEFAULT ''
);
CREATE TABLE batches (
  agent_id    TEXT NOT NULL REFERENCES agents(agent_id),
  batch_seq   INTEGER NOT NULL,
  batch       BLOB NOT NULL,
  signature   BLOB NOT NULL,
  received_ns INTEGER NOT NULL,
  PRIMARY KEY (agent_id, batch_seq)
) WITHOUT ROWID;
CREATE TABLE events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id    TEXT NOT NULL,
  batch_seq   INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  time_ns     INTEGER NOT NULL,
  kind        TEXT NOT NULL,
  path        BLOB NOT NULL DEFAULT x'',
  change      TEXT NOT NULL DEFAULT '',
  event       BLOB NOT NULL,
  received_ns INTEGER NOT NULL,
  FOREIGN KEY (agent_id, batch_seq) REFERENCES batches(agent_id, batch_seq)
);
CREATE INDEX events_by_agent ON events(agent_id, id);
CREATE INDEX events_by_time ON events(time_ns);
CREATE INDEX events_by_kind ON events(kind, id);
CREATE INDEX events_by_path ON events(path);
CREATE TABLE incidents (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id   TEXT NOT NULL,
  rule_id    TEXT NOT NULL,
  title      TEXT NOT NULL,
  severity   TEXT NOT NULL,
  status     TEXT NOT NULL,
  opened_ns  INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  summary    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incidents_by_rule_agent ON incidents(rule_id, agent_id, status);
CREATE TABLE incident_events (
  incident_id INTEGER NOT NULL REFERENCES incidents(id),
  event_id    INTEGER NOT NULL REFERENCES events(id),
  PRIMARY KEY (incident_id, event_id)
) WITHOUT ROWID;
CREATE TABLE actions (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  incident_id    INTEGER REFERENCES incidents(id),
  parent_id      INTEGER REFERENCES actions(id),
  agent_id       TEXT NOT NULL,
  kind           TEXT NOT NULL,
  target         TEXT NOT NULL DEFAULT '',
  status         TEXT NOT NULL,
  detail         TEXT NOT NULL DEFAULT '',
  aws_request_id TEXT NOT NULL DEFAULT '',
  error_code     TEXT NOT NULL DEFAULT '',
  error_message  TEXT NOT NULL DEFAULT '',
  actor          TEXT NOT NULL DEFAULT 'collector',
  created_ns     INTEGER NOT NULL,
  updated_ns     INTEGER NOT NULL
);
CREATE INDEX actions_by_status ON actions(status, kind);
CREATE INDEX actions_by_incident ON actions(incident_id, id);
CREATE INDEX actions_by_parent ON actions(parent_id);
)sql",
      // 2: operator tokens (keyed hashes only; the token itself is shown once at creation).
      R"sql(
CREATE TABLE operator_tokens (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  name        TEXT NOT NULL,
  role        TEXT NOT NULL,
  hash        BLOB NOT NULL,
  created_ns  INTEGER NOT NULL,
  created_by  TEXT NOT NULL,
  revoked_ns  INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX operator_tokens_active_name ON operator_tokens(name) WHERE revoked_ns = 0;
)sql",
      // 3: who is working an incident.
      R"sql(
ALTER TABLE incidents ADD COLUMN assignee TEXT NOT NULL DEFAULT '';
)sql",
      // 4: response steps that resume: a stable key per step of its parent, what the step
      // learned (e.g. the recorded instance), and the mode the action runs in.
      R"sql(
ALTER TABLE actions ADD COLUMN step_key TEXT NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN result TEXT NOT NULL DEFAULT '';
ALTER TABLE actions ADD COLUMN mode TEXT NOT NULL DEFAULT '';
CREATE INDEX actions_by_kind_target ON actions(kind, target, id);
)sql",
      // 5: the agents' heartbeats (spool backlog) and the silences absence rules are tracking.
      R"sql(
ALTER TABLE agents ADD COLUMN heartbeat_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN spool_batches INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN spool_bytes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE absence_episodes (
  rule_id         TEXT NOT NULL,
  agent_id        TEXT NOT NULL,
  silent_since_ns INTEGER NOT NULL,
  incident_id     INTEGER NOT NULL,
  PRIMARY KEY (rule_id, agent_id)
) WITHOUT ROWID;
)sql",
      // 6: events without the foreign key to batches, and without the index on path. The key was
      // checked with a lookup in `batches` for every stored event, which cost more than the rest
      // of the insert together (its rows hold the whole signed batch, so the lookup walks a tree
      // of large cells): the store writer inserts a batch and its events in one transaction, and
      // nothing deletes batches, so the link holds by construction. No query can use the path
      // index (paths are matched with GLOB on CAST(path AS TEXT)), so it only cost inserts.
      // SQLite cannot drop a constraint, so the table is rebuilt: rows and ids are kept, and so
      // is AUTOINCREMENT's high-water mark (an event id is never handed out twice). Foreign keys
      // from incident_events are deferred while the table is briefly gone.
      R"sql(
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE events_copy AS SELECT * FROM events;
CREATE TEMP TABLE events_seq AS SELECT seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
CREATE TABLE events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id    TEXT NOT NULL,
  batch_seq   INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  time_ns     INTEGER NOT NULL,
  kind        TEXT NOT NULL,
  path        BLOB NOT NULL DEFAULT x'',
  change      TEXT NOT NULL DEFAULT '',
  event       BLOB NOT NULL,
  received_ns INTEGER NOT NULL
);
INSERT INTO events SELECT * FROM temp.events_copy ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'events';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events', seq FROM temp.events_seq;
DROP TABLE temp.events_copy;
DROP TABLE temp.events_seq;
CREATE INDEX events_by_agent ON events(agent_id, id);
CREATE INDEX events_by_time ON events(time_ns);
CREATE INDEX events_by_kind ON events(kind, id);
)sql",
      // 7: CloudTrail events (collector-side only), unique by CloudTrail's event id; each
      // region's poll cursor; records reported as malformed; incidents' cloud events.
      R"sql(
CREATE TABLE cloud_events (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  region        TEXT NOT NULL,
  event_id      TEXT NOT NULL,
  event_name    TEXT NOT NULL,
  event_source  TEXT NOT NULL DEFAULT '',
  time_ns       INTEGER NOT NULL,
  principal_arn TEXT NOT NULL DEFAULT '',
  access_key_id TEXT NOT NULL DEFAULT '',
  source_ip     TEXT NOT NULL DEFAULT '',
  user_agent    TEXT NOT NULL DEFAULT '',
  resources     TEXT NOT NULL DEFAULT '',
  raw           BLOB NOT NULL,
  received_ns   INTEGER NOT NULL
);
CREATE UNIQUE INDEX cloud_events_by_event_id ON cloud_events(event_id);
CREATE INDEX cloud_events_by_time ON cloud_events(time_ns);
CREATE TABLE cloud_cursors (
  region     TEXT PRIMARY KEY,
  start_ns   INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE cloud_event_errors (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  region      TEXT NOT NULL,
  event_id    TEXT NOT NULL DEFAULT '',
  reason      TEXT NOT NULL,
  raw         BLOB NOT NULL,
  received_ns INTEGER NOT NULL
);
CREATE UNIQUE INDEX cloud_event_errors_once ON cloud_event_errors(region, event_id, raw);
CREATE TABLE incident_cloud_events (
  incident_id    INTEGER NOT NULL REFERENCES incidents(id),
  cloud_event_id INTEGER NOT NULL REFERENCES cloud_events(id),
  PRIMARY KEY (incident_id, cloud_event_id)
) WITHOUT ROWID;
)sql",
      // 8: events without secondary indexes. No read of the collector can use them: every
      // event query filters with optional terms ("?2 = '' OR agent_id = ?2") and pages by id, so
      // SQLite walks the table by id whatever the filters, and incident timelines look events up
      // by id. Yet the three indexes were half the cost of storing an event (about 2 us of the
      // 4.5 us the writer spent per event with 100 streams), events_by_agent the most: its
      // text keys are scattered across one insertion point per agent. Rows stay as they are.
      R"sql(
DROP INDEX IF EXISTS events_by_agent;
DROP INDEX IF EXISTS events_by_time;
DROP INDEX IF EXISTS events_by_kind;
)sql",
      // 9: every key an agent has had, so batches signed before an operator-approved re-key
      // still verify (evidence). A key signs from from_seq until the next key's from_seq. Agents
      // already enrolled start with their current key from batch 1: a key replaced before this
      // migration was not kept anywhere a query can read.
      R"sql(
CREATE TABLE agent_keys (
  agent_id   TEXT NOT NULL REFERENCES agents(agent_id),
  from_seq   INTEGER NOT NULL,
  public_key BLOB NOT NULL,
  pinned_ns  INTEGER NOT NULL,
  PRIMARY KEY (agent_id, from_seq)
) WITHOUT ROWID;
INSERT INTO agent_keys (agent_id, from_seq, public_key, pinned_ns)
  SELECT agent_id, 1, public_key, enrolled_ns FROM agents;
)sql",
  };
  return kSchema;
}

constexpr char kTokenColumns[] = "id, name, role, hash, created_ns, created_by, revoked_ns";

OperatorTokenRecord ReadToken(const Statement& s) {
  OperatorTokenRecord t;
  t.id = s.ColumnInt(0);
  t.name = s.ColumnText(1);
  t.role = s.ColumnText(2);
  t.hash = s.ColumnText(3);
  t.created_ns = s.ColumnInt(4);
  t.created_by = s.ColumnText(5);
  t.revoked_ns = s.ColumnInt(6);
  return t;
}

constexpr char kAgentColumns[] =
    "agent_id, public_key, hostname, version, enrolled_ns, last_seen_ns, durable_seq, "
    "durable_digest, isolation_state, heartbeat_ns, spool_batches, spool_bytes";

AgentRecord ReadAgent(const Statement& s) {
  AgentRecord a;
  a.agent_id = s.ColumnText(0);
  a.public_key = s.ColumnText(1);
  a.hostname = s.ColumnText(2);
  a.version = s.ColumnText(3);
  a.enrolled_ns = s.ColumnInt(4);
  a.last_seen_ns = s.ColumnInt(5);
  a.durable_seq = static_cast<uint64_t>(s.ColumnInt(6));
  a.durable_digest = s.ColumnText(7);
  a.isolation_state = s.ColumnText(8);
  a.heartbeat_ns = s.ColumnInt(9);
  a.spool_batches = static_cast<uint64_t>(s.ColumnInt(10));
  a.spool_bytes = static_cast<uint64_t>(s.ColumnInt(11));
  return a;
}

constexpr char kIncidentColumns[] =
    "id, agent_id, rule_id, title, severity, status, opened_ns, updated_ns, summary, assignee";

IncidentRecord ReadIncident(const Statement& s) {
  IncidentRecord i;
  i.id = s.ColumnInt(0);
  i.agent_id = s.ColumnText(1);
  i.rule_id = s.ColumnText(2);
  i.title = s.ColumnText(3);
  i.severity = s.ColumnText(4);
  i.status = s.ColumnText(5);
  i.opened_ns = s.ColumnInt(6);
  i.updated_ns = s.ColumnInt(7);
  i.summary = s.ColumnText(8);
  i.assignee = s.ColumnText(9);
  return i;
}

constexpr char kActionColumns[] =
    "id, COALESCE(incident_id, 0), COALESCE(parent_id, 0), agent_id, kind, target, status, detail, "
    "aws_request_id, error_code, error_message, actor, created_ns, updated_ns, step_key, result, mode";

ActionRecord ReadAction(const Statement& s) {
  ActionRecord a;
  a.id = s.ColumnInt(0);
  a.incident_id = s.ColumnInt(1);
  a.parent_id = s.ColumnInt(2);
  a.agent_id = s.ColumnText(3);
  a.kind = s.ColumnText(4);
  a.target = s.ColumnText(5);
  a.status = s.ColumnText(6);
  a.detail = s.ColumnText(7);
  a.aws_request_id = s.ColumnText(8);
  a.error_code = s.ColumnText(9);
  a.error_message = s.ColumnText(10);
  a.actor = s.ColumnText(11);
  a.created_ns = s.ColumnInt(12);
  a.updated_ns = s.ColumnInt(13);
  a.step_key = s.ColumnText(14);
  a.result = s.ColumnText(15);
  a.mode = s.ColumnText(16);
  return a;
}

EventRecord ReadEvent(const Statement& s) {
  EventRecord e;
  e.id = s.ColumnInt(0);
  e.agent_id = s.ColumnText(1);
  e.batch_seq = static_cast<uint64_t>(s.ColumnInt(2));
  e.event = s.ColumnText(3);
  e.received_ns = s.ColumnInt(4);
  return e;
}

template <typename T, typename F>
absl::StatusOr<std::vector<T>> Collect(Statement& s, F read) {
  std::vector<T> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(read(s));
  }
  s.Reset();
  return out;
}

absl::StatusOr<std::optional<AgentRecord>> SelectAgent(Database* db, const std::string& agent_id) {
  ASSIGN_OR_RETURN(Statement s, db->Prepare(absl::StrFormat(
                                    "SELECT %s FROM agents WHERE agent_id = ?", kAgentColumns)));
  s.Bind(1, agent_id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return ReadAgent(s);
}

// A key that never signed a batch (re-keyed again before any batch) is replaced: its range is
// empty.
absl::Status InsertAgentKey(Database* db, const std::string& agent_id, uint64_t from_seq,
                            const std::string& public_key, int64_t pinned_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db->Prepare("INSERT OR REPLACE INTO agent_keys (agent_id, from_seq, "
                               "public_key, pinned_ns) VALUES (?, ?, ?, ?)"));
  s.Bind(1, agent_id).Bind(2, static_cast<int64_t>(from_seq)).BindBlob(3, public_key);
  s.Bind(4, pinned_ns);
  return s.Run();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CollectorStore>> CollectorStore::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Database> write_db, Database::Open(path, /*durable=*/true));
  RETURN_IF_ERROR(write_db->Migrate(Schema()));
  // The writer touches the right-hand edge of `batches` for every agent (its key starts with the
  // agent id) besides the tail of `events`: 64 MiB of page cache keeps them in memory instead of
  // re-reading them from the WAL for each insert. It is a bound, not an allocation.
  RETURN_IF_ERROR(write_db->Exec("PRAGMA cache_size=-65536"));
  ASSIGN_OR_RETURN(std::unique_ptr<Database> read_db, Database::Open(path, /*durable=*/true));
  return std::unique_ptr<CollectorStore>(
      new CollectorStore(path, std::move(write_db), std::move(read_db)));
}

absl::StatusOr<CollectorStore::Writer> CollectorStore::BeginWrite() {
  std::unique_lock<std::mutex> lock(write_mu_);
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(write_db_.get()));
  return Writer(std::move(lock), write_db_.get(), std::move(txn));
}

// --- Writer ---------------------------------------------------------------------------------

absl::StatusOr<std::optional<AgentRecord>> CollectorStore::Writer::GetAgent(
    const std::string& agent_id) {
  return SelectAgent(db_, agent_id);
}

absl::Status CollectorStore::Writer::InsertAgent(const AgentRecord& a) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("INSERT INTO agents (agent_id, public_key, hostname, version, "
                                "enrolled_ns, last_seen_ns, durable_seq, durable_digest, "
                                "isolation_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  s.Bind(1, a.agent_id).BindBlob(2, a.public_key).Bind(3, a.hostname).Bind(4, a.version);
  s.Bind(5, a.enrolled_ns).Bind(6, a.last_seen_ns).Bind(7, static_cast<int64_t>(a.durable_seq));
  s.BindBlob(8, a.durable_digest).Bind(9, a.isolation_state);
  RETURN_IF_ERROR(s.Run());
  return InsertAgentKey(db_, a.agent_id, 1, a.public_key, a.enrolled_ns);
}

absl::Status CollectorStore::Writer::SetAgentKey(const std::string& agent_id,
                                                 const std::string& public_key,
                                                 const std::string& hostname,
                                                 const std::string& version, int64_t now_ns) {
  ASSIGN_OR_RETURN(std::optional<AgentRecord> known, SelectAgent(db_, agent_id));
  if (!known) return absl::NotFoundError(absl::StrFormat("agent %s is not enrolled", agent_id));
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("UPDATE agents SET public_key = ?, hostname = ?, "
                                             "version = ? WHERE agent_id = ?"));
  s.BindBlob(1, public_key).Bind(2, hostname).Bind(3, version).Bind(4, agent_id);
  RETURN_IF_ERROR(s.Run());
  return InsertAgentKey(db_, agent_id, known->durable_seq + 1, public_key, now_ns);
}

absl::Status CollectorStore::Writer::UpdateAgentMeta(const std::string& agent_id,
                                                     const std::string& hostname,
                                                     const std::string& version) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE agents SET hostname = ?, version = ? WHERE agent_id = ?"));
  s.Bind(1, hostname).Bind(2, version).Bind(3, agent_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::AdvanceAgentChain(const std::string& agent_id,
                                                       uint64_t durable_seq,
                                                       const std::string& durable_digest,
                                                       int64_t last_seen_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE agents SET durable_seq = ?, durable_digest = ?, "
                                "last_seen_ns = ? WHERE agent_id = ?"));
  s.Bind(1, static_cast<int64_t>(durable_seq)).BindBlob(2, durable_digest).Bind(3, last_seen_ns);
  s.Bind(4, agent_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::RecordHeartbeat(const std::string& agent_id, int64_t sent_ns,
                                                     uint64_t spool_batches, uint64_t spool_bytes) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE agents SET heartbeat_ns = ?, spool_batches = ?, "
                                "spool_bytes = ? WHERE agent_id = ?"));
  s.Bind(1, sent_ns).Bind(2, static_cast<int64_t>(spool_batches));
  s.Bind(3, static_cast<int64_t>(spool_bytes)).Bind(4, agent_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::PutAbsenceEpisode(const AbsenceEpisode& episode) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("INSERT OR REPLACE INTO absence_episodes (rule_id, agent_id, "
                                "silent_since_ns, incident_id) VALUES (?, ?, ?, ?)"));
  s.Bind(1, episode.rule_id).Bind(2, episode.agent_id).Bind(3, episode.silent_since_ns);
  s.Bind(4, episode.incident_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::DeleteAbsenceEpisode(const std::string& rule_id,
                                                          const std::string& agent_id) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("DELETE FROM absence_episodes WHERE rule_id = ? AND "
                                             "agent_id = ?"));
  s.Bind(1, rule_id).Bind(2, agent_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::SetIsolationState(const std::string& agent_id,
                                                       const std::string& state) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE agents SET isolation_state = ? WHERE agent_id = ?"));
  s.Bind(1, state).Bind(2, agent_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::InsertBatch(const std::string& agent_id, uint64_t batch_seq,
                                                 const std::string& batch_bytes,
                                                 const std::string& signature,
                                                 int64_t received_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->PrepareCached("INSERT INTO batches (agent_id, batch_seq, batch, "
                                      "signature, received_ns) VALUES (?, ?, ?, ?, ?)"));
  s.Bind(1, agent_id).Bind(2, static_cast<int64_t>(batch_seq)).BindBlob(3, batch_bytes);
  s.BindBlob(4, signature).Bind(5, received_ns);
  return s.Run();
}

absl::StatusOr<std::optional<std::string>> CollectorStore::Writer::GetBatchBytes(
    const std::string& agent_id, uint64_t batch_seq) {
  ASSIGN_OR_RETURN(Statement s, db_->PrepareCached("SELECT batch FROM batches WHERE agent_id = ? "
                                                   "AND batch_seq = ?"));
  s.Bind(1, agent_id).Bind(2, static_cast<int64_t>(batch_seq));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(s.ColumnText(0));
}

absl::StatusOr<int64_t> CollectorStore::Writer::InsertEvent(
    const std::string& agent_id, uint64_t batch_seq, uint64_t seq, int64_t time_ns,
    const std::string& kind, const std::string& path, const std::string& change,
    std::string_view event_bytes, int64_t received_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->PrepareCached("INSERT INTO events (agent_id, batch_seq, seq, time_ns, kind, "
                                "path, change, event, received_ns) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  s.Bind(1, agent_id).Bind(2, static_cast<int64_t>(batch_seq)).Bind(3, static_cast<int64_t>(seq));
  s.Bind(4, time_ns).Bind(5, kind).BindBlob(6, path).Bind(7, change).BindBlob(8, event_bytes);
  s.Bind(9, received_ns);
  RETURN_IF_ERROR(s.Run());
  return db_->LastInsertId();
}

absl::StatusOr<std::optional<int64_t>> CollectorStore::Writer::FindOpenIncident(
    const std::string& rule_id, const std::string& agent_id) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("SELECT id FROM incidents WHERE rule_id = ? AND "
                                             "agent_id = ? AND status != 'resolved' "
                                             "ORDER BY id DESC LIMIT 1"));
  s.Bind(1, rule_id).Bind(2, agent_id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return s.ColumnInt(0);
}

absl::StatusOr<int64_t> CollectorStore::Writer::InsertIncident(const IncidentRecord& i) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("INSERT INTO incidents (agent_id, rule_id, title, severity, "
                                "status, opened_ns, updated_ns, summary) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
  s.Bind(1, i.agent_id).Bind(2, i.rule_id).Bind(3, i.title).Bind(4, i.severity);
  s.Bind(5, i.status).Bind(6, i.opened_ns).Bind(7, i.updated_ns).Bind(8, i.summary);
  RETURN_IF_ERROR(s.Run());
  return db_->LastInsertId();
}

absl::Status CollectorStore::Writer::LinkIncidentEvent(int64_t incident_id, int64_t event_id,
                                                       int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("INSERT OR IGNORE INTO incident_events "
                                             "(incident_id, event_id) VALUES (?, ?)"));
  s.Bind(1, incident_id).Bind(2, event_id);
  RETURN_IF_ERROR(s.Run());
  ASSIGN_OR_RETURN(Statement u, db_->Prepare("UPDATE incidents SET updated_ns = ? WHERE id = ?"));
  u.Bind(1, now_ns).Bind(2, incident_id);
  return u.Run();
}

absl::StatusOr<int64_t> CollectorStore::Writer::InsertCloudEvent(const CloudEventRecord& e) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->PrepareCached(
                       "INSERT OR IGNORE INTO cloud_events (region, event_id, event_name, "
                       "event_source, time_ns, principal_arn, access_key_id, source_ip, "
                       "user_agent, resources, raw, received_ns) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  s.Bind(1, e.region).Bind(2, e.event_id).Bind(3, e.event_name).Bind(4, e.event_source);
  s.Bind(5, e.time_ns).Bind(6, e.principal_arn).Bind(7, e.access_key_id).Bind(8, e.source_ip);
  s.Bind(9, e.user_agent).Bind(10, absl::StrJoin(e.resources, "\n")).BindBlob(11, e.raw);
  s.Bind(12, e.received_ns);
  RETURN_IF_ERROR(s.Run());
  if (db_->Changes() == 0) return int64_t{0};
  return db_->LastInsertId();
}

absl::StatusOr<bool> CollectorStore::Writer::InsertCloudEventError(const std::string& region,
                                                                   const std::string& event_id,
                                                                   const std::string& reason,
                                                                   const std::string& raw,
                                                                   int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->PrepareCached("INSERT OR IGNORE INTO cloud_event_errors (region, "
                                      "event_id, reason, raw, received_ns) VALUES (?, ?, ?, ?, ?)"));
  s.Bind(1, region).Bind(2, event_id).Bind(3, reason).BindBlob(4, raw).Bind(5, now_ns);
  RETURN_IF_ERROR(s.Run());
  return db_->Changes() > 0;
}

absl::Status CollectorStore::Writer::SetCloudCursor(const std::string& region, int64_t start_ns,
                                                    int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->PrepareCached("INSERT INTO cloud_cursors (region, start_ns, updated_ns) "
                                      "VALUES (?1, ?2, ?3) ON CONFLICT(region) DO UPDATE SET "
                                      "start_ns = ?2, updated_ns = ?3"));
  s.Bind(1, region).Bind(2, start_ns).Bind(3, now_ns);
  return s.Run();
}

absl::Status CollectorStore::Writer::LinkIncidentCloudEvent(int64_t incident_id,
                                                            int64_t cloud_event_id,
                                                            int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("INSERT OR IGNORE INTO incident_cloud_events "
                                             "(incident_id, cloud_event_id) VALUES (?, ?)"));
  s.Bind(1, incident_id).Bind(2, cloud_event_id);
  RETURN_IF_ERROR(s.Run());
  ASSIGN_OR_RETURN(Statement u, db_->Prepare("UPDATE incidents SET updated_ns = ? WHERE id = ?"));
  u.Bind(1, now_ns).Bind(2, incident_id);
  return u.Run();
}

absl::Status CollectorStore::Writer::SetIncidentStatus(int64_t incident_id,
                                                       const std::string& status, int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE incidents SET status = ?1, updated_ns = ?2 WHERE id = ?3 "
                                "AND NOT (?1 = 'contained' AND status = 'resolved')"));
  s.Bind(1, status).Bind(2, now_ns).Bind(3, incident_id);
  return s.Run();
}

absl::StatusOr<std::optional<IncidentRecord>> CollectorStore::Writer::GetIncident(int64_t id) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM incidents WHERE id = ?", kIncidentColumns)));
  s.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return ReadIncident(s);
}

absl::Status CollectorStore::Writer::SetIncidentAssignee(int64_t incident_id,
                                                         const std::string& assignee,
                                                         int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE incidents SET assignee = ?, updated_ns = ? WHERE id = ?"));
  s.Bind(1, assignee).Bind(2, now_ns).Bind(3, incident_id);
  return s.Run();
}

absl::Status CollectorStore::Writer::AppendIncidentSummary(int64_t incident_id,
                                                           const std::string& line,
                                                           int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE incidents SET summary = CASE WHEN summary = '' THEN ?1 "
                                "ELSE summary || char(10) || ?1 END, updated_ns = ?2 "
                                "WHERE id = ?3 AND length(summary) < 65536"));
  s.Bind(1, line).Bind(2, now_ns).Bind(3, incident_id);
  return s.Run();
}

absl::StatusOr<int64_t> CollectorStore::Writer::InsertAction(const ActionRecord& a) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("INSERT INTO actions (incident_id, parent_id, agent_id, kind, "
                                "target, status, detail, aws_request_id, error_code, "
                                "error_message, actor, created_ns, updated_ns, step_key, result, mode) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  if (a.incident_id > 0) s.Bind(1, a.incident_id); else s.BindNull(1);
  if (a.parent_id > 0) s.Bind(2, a.parent_id); else s.BindNull(2);
  s.Bind(3, a.agent_id).Bind(4, a.kind).Bind(5, a.target).Bind(6, a.status).Bind(7, a.detail);
  s.Bind(8, a.aws_request_id).Bind(9, a.error_code).Bind(10, a.error_message);
  s.Bind(11, a.actor.empty() ? std::string("collector") : a.actor);
  s.Bind(12, a.created_ns).Bind(13, a.updated_ns);
  s.Bind(14, a.step_key).Bind(15, a.result).Bind(16, a.mode);
  RETURN_IF_ERROR(s.Run());
  return db_->LastInsertId();
}

absl::StatusOr<int64_t> CollectorStore::Writer::InsertOperatorToken(const OperatorTokenRecord& t) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("INSERT INTO operator_tokens (name, role, hash, created_ns, "
                                "created_by) VALUES (?, ?, ?, ?, ?)"));
  s.Bind(1, t.name).Bind(2, t.role).BindBlob(3, t.hash).Bind(4, t.created_ns).Bind(5, t.created_by);
  RETURN_IF_ERROR(s.Run());
  return db_->LastInsertId();
}

absl::StatusOr<std::optional<OperatorTokenRecord>> CollectorStore::Writer::ActiveOperatorToken(
    const std::string& name) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare(absl::StrFormat("SELECT %s FROM operator_tokens WHERE name = ? AND "
                                                "revoked_ns = 0",
                                                kTokenColumns)));
  s.Bind(1, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return ReadToken(s);
}

absl::Status CollectorStore::Writer::RevokeOperatorToken(int64_t id, int64_t now_ns) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare("UPDATE operator_tokens SET revoked_ns = ? "
                                             "WHERE id = ? AND revoked_ns = 0"));
  s.Bind(1, now_ns).Bind(2, id);
  RETURN_IF_ERROR(s.Run());
  if (db_->Changes() != 1) {
    return absl::NotFoundError(
        absl::StrFormat("database %s: no active operator token %d", db_->path(), id));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<ActionRecord>> CollectorStore::Writer::PendingAction(
    const std::string& kind, const std::string& target) {
  ASSIGN_OR_RETURN(Statement s, db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE kind = ? AND target = ? AND "
                                    "status = 'pending' AND parent_id IS NULL ORDER BY id LIMIT 1",
                                    kActionColumns)));
  s.Bind(1, kind).Bind(2, target);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return ReadAction(s);
}

absl::Status CollectorStore::Writer::UpdateAction(const ActionRecord& a) {
  ASSIGN_OR_RETURN(Statement s,
                   db_->Prepare("UPDATE actions SET status = ?, detail = ?, aws_request_id = ?, "
                                "error_code = ?, error_message = ?, updated_ns = ?, result = ?, "
                                "mode = ?, actor = ? WHERE id = ?"));
  s.Bind(1, a.status).Bind(2, a.detail).Bind(3, a.aws_request_id).Bind(4, a.error_code);
  s.Bind(5, a.error_message).Bind(6, a.updated_ns).Bind(7, a.result).Bind(8, a.mode);
  s.Bind(9, a.actor.empty() ? std::string("collector") : a.actor).Bind(10, a.id);
  RETURN_IF_ERROR(s.Run());
  if (db_->Changes() != 1) {
    return absl::NotFoundError(absl::StrFormat("database %s: no action %d", db_->path(), a.id));
  }
  return absl::OkStatus();
}

absl::Status CollectorStore::Writer::Commit() {
  absl::Status st = txn_.Commit();
  lock_.unlock();
  return st;
}

// --- Reads ----------------------------------------------------------------------------------

absl::StatusOr<std::vector<AgentRecord>> CollectorStore::ListAgents() {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM agents ORDER BY agent_id", kAgentColumns)));
  return Collect<AgentRecord>(s, ReadAgent);
}

absl::StatusOr<std::vector<AbsenceEpisode>> CollectorStore::ListAbsenceEpisodes() {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare("SELECT rule_id, agent_id, silent_since_ns, "
                                                  "incident_id FROM absence_episodes"));
  return Collect<AbsenceEpisode>(s, [](const Statement& row) {
    return AbsenceEpisode{row.ColumnText(0), row.ColumnText(1), row.ColumnInt(2), row.ColumnInt(3)};
  });
}

absl::StatusOr<std::optional<AgentRecord>> CollectorStore::GetAgent(const std::string& agent_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  return SelectAgent(read_db_.get(), agent_id);
}

absl::StatusOr<std::vector<AgentKeyRecord>> CollectorStore::AgentKeys(const std::string& agent_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare("SELECT from_seq, public_key, pinned_ns FROM "
                                                  "agent_keys WHERE agent_id = ? ORDER BY from_seq"));
  s.Bind(1, agent_id);
  std::vector<AgentKeyRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    AgentKeyRecord k;
    k.from_seq = static_cast<uint64_t>(s.ColumnInt(0));
    k.public_key = s.ColumnText(1);
    k.pinned_ns = s.ColumnInt(2);
    out.push_back(std::move(k));
  }
  return out;
}

absl::StatusOr<std::vector<EventRecord>> CollectorStore::QueryEvents(const EventQuery& q) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT id, agent_id, batch_seq, event, received_ns "
                                     "FROM events WHERE id > ?1 AND (?2 = '' OR agent_id = ?2) "
                                     "AND (?3 = '' OR kind = ?3) "
                                     "AND (?5 = '' OR CAST(path AS TEXT) GLOB ?5) "
                                     "AND (?6 = 0 OR time_ns >= ?6) AND (?7 = 0 OR time_ns < ?7) "
                                     "AND (length(?8) = 0 OR instr(event, ?8) > 0) "
                                     "ORDER BY id LIMIT ?4"));
  s.Bind(1, q.after_id).Bind(2, q.agent_id).Bind(3, q.kind).Bind(4, static_cast<int64_t>(q.limit));
  s.Bind(5, q.path_glob).Bind(6, q.since_ns).Bind(7, q.until_ns).BindBlob(8, q.text);
  return Collect<EventRecord>(s, ReadEvent);
}

absl::StatusOr<int64_t> CollectorStore::MaxEventId() {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare("SELECT COALESCE(MAX(id), 0) FROM events"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.ColumnInt(0) : 0;
}

absl::StatusOr<std::vector<EventRecord>> CollectorStore::IncidentEvents(int64_t incident_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT e.id, e.agent_id, e.batch_seq, e.event, "
                                     "e.received_ns FROM incident_events l JOIN events e "
                                     "ON e.id = l.event_id WHERE l.incident_id = ? "
                                     "ORDER BY e.id"));
  s.Bind(1, incident_id);
  return Collect<EventRecord>(s, ReadEvent);
}

namespace {

constexpr char kCloudEventColumns[] =
    "id, region, event_id, event_name, event_source, time_ns, principal_arn, access_key_id, "
    "source_ip, user_agent, resources, raw, received_ns";

CloudEventRecord ReadCloudEvent(const Statement& s) {
  CloudEventRecord e;
  e.id = s.ColumnInt(0);
  e.region = s.ColumnText(1);
  e.event_id = s.ColumnText(2);
  e.event_name = s.ColumnText(3);
  e.event_source = s.ColumnText(4);
  e.time_ns = s.ColumnInt(5);
  e.principal_arn = s.ColumnText(6);
  e.access_key_id = s.ColumnText(7);
  e.source_ip = s.ColumnText(8);
  e.user_agent = s.ColumnText(9);
  const std::string resources = s.ColumnText(10);
  if (!resources.empty()) e.resources = absl::StrSplit(resources, '\n');
  e.raw = s.ColumnText(11);
  e.received_ns = s.ColumnInt(12);
  return e;
}

}  // namespace

absl::StatusOr<std::optional<int64_t>> CollectorStore::GetCloudCursor(const std::string& region) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT start_ns FROM cloud_cursors WHERE region = ?"));
  s.Bind(1, region);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(s.ColumnInt(0));
}

absl::StatusOr<std::vector<CloudEventRecord>> CollectorStore::ListCloudEvents(int64_t after_id,
                                                                              int limit) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM cloud_events WHERE id > ? ORDER BY id LIMIT ?",
                                    kCloudEventColumns)));
  s.Bind(1, after_id).Bind(2, static_cast<int64_t>(limit));
  return Collect<CloudEventRecord>(s, ReadCloudEvent);
}

absl::StatusOr<std::vector<CloudEventRecord>> CollectorStore::IncidentCloudEvents(
    int64_t incident_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare(absl::StrFormat(
                       "SELECT %s FROM cloud_events WHERE id IN (SELECT cloud_event_id FROM "
                       "incident_cloud_events WHERE incident_id = ?) ORDER BY id",
                       kCloudEventColumns)));
  s.Bind(1, incident_id);
  return Collect<CloudEventRecord>(s, ReadCloudEvent);
}

absl::StatusOr<std::vector<CloudEventError>> CollectorStore::ListCloudEventErrors(int limit) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT id, region, event_id, reason, raw, received_ns FROM "
                                     "cloud_event_errors ORDER BY id LIMIT ?"));
  s.Bind(1, static_cast<int64_t>(limit));
  return Collect<CloudEventError>(s, [](const Statement& r) {
    CloudEventError e;
    e.id = r.ColumnInt(0);
    e.region = r.ColumnText(1);
    e.event_id = r.ColumnText(2);
    e.reason = r.ColumnText(3);
    e.raw = r.ColumnText(4);
    e.received_ns = r.ColumnInt(5);
    return e;
  });
}

absl::StatusOr<std::vector<IncidentRecord>> CollectorStore::ListIncidents(const std::string& status,
                                                                          int limit) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM incidents WHERE (?1 = '' OR status = ?1) "
                                    "ORDER BY id DESC LIMIT ?2",
                                    kIncidentColumns)));
  s.Bind(1, status).Bind(2, static_cast<int64_t>(limit));
  ASSIGN_OR_RETURN(std::vector<IncidentRecord> out, Collect<IncidentRecord>(s, ReadIncident));
  ASSIGN_OR_RETURN(Statement links, read_db_->Prepare("SELECT event_id FROM incident_events "
                                                      "WHERE incident_id = ? ORDER BY event_id"));
  for (IncidentRecord& i : out) {
    links.Bind(1, i.id);
    ASSIGN_OR_RETURN(i.event_ids,
                     Collect<int64_t>(links, [](const Statement& st) { return st.ColumnInt(0); }));
  }
  return out;
}

absl::StatusOr<std::optional<IncidentRecord>> CollectorStore::GetIncident(int64_t id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM incidents WHERE id = ?", kIncidentColumns)));
  s.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  IncidentRecord i = ReadIncident(s);
  s.Reset();
  ASSIGN_OR_RETURN(Statement links, read_db_->Prepare("SELECT event_id FROM incident_events "
                                                      "WHERE incident_id = ? ORDER BY event_id"));
  links.Bind(1, id);
  ASSIGN_OR_RETURN(i.event_ids,
                   Collect<int64_t>(links, [](const Statement& st) { return st.ColumnInt(0); }));
  return i;
}

absl::StatusOr<std::vector<ActionRecord>> CollectorStore::ListActions(int64_t incident_id,
                                                                      int limit) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE (?1 = 0 OR incident_id = ?1) "
                                    "ORDER BY id LIMIT ?2",
                                    kActionColumns)));
  s.Bind(1, incident_id).Bind(2, static_cast<int64_t>(limit));
  return Collect<ActionRecord>(s, ReadAction);
}

absl::StatusOr<std::vector<BatchRecord>> CollectorStore::Batches(const std::string& agent_id,
                                                                 uint64_t from_seq, uint64_t to_seq,
                                                                 int limit) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(
                                    "SELECT agent_id, batch_seq, batch, signature, received_ns "
                                    "FROM batches WHERE agent_id = ? AND batch_seq BETWEEN ? AND ? "
                                    "ORDER BY batch_seq LIMIT ?"));
  s.Bind(1, agent_id)
      .Bind(2, static_cast<int64_t>(from_seq))
      .Bind(3, static_cast<int64_t>(to_seq))
      .Bind(4, static_cast<int64_t>(limit));
  return Collect<BatchRecord>(s, [](const Statement& row) {
    BatchRecord b;
    b.agent_id = row.ColumnText(0);
    b.batch_seq = static_cast<uint64_t>(row.ColumnInt(1));
    b.batch = row.ColumnText(2);
    b.signature = row.ColumnText(3);
    b.received_ns = row.ColumnInt(4);
    return b;
  });
}

absl::StatusOr<std::optional<OperatorTokenRecord>> CollectorStore::GetOperatorToken(int64_t id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM operator_tokens WHERE id = ?", kTokenColumns)));
  s.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::nullopt;
  return ReadToken(s);
}

absl::StatusOr<std::vector<OperatorTokenRecord>> CollectorStore::ListOperatorTokens() {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM operator_tokens ORDER BY id", kTokenColumns)));
  return Collect<OperatorTokenRecord>(s, ReadToken);
}

absl::StatusOr<std::vector<ActionRecord>> CollectorStore::UnfinishedActions(
    const std::string& kind) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE parent_id IS NULL AND kind = ? "
                                    "AND status IN ('pending', 'running') ORDER BY id",
                                    kActionColumns)));
  s.Bind(1, kind);
  return Collect<ActionRecord>(s, ReadAction);
}

absl::StatusOr<std::vector<ActionRecord>> CollectorStore::RunningSteps(int64_t parent_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE parent_id = ? AND "
                                    "status = 'running' ORDER BY id",
                                    kActionColumns)));
  s.Bind(1, parent_id);
  return Collect<ActionRecord>(s, ReadAction);
}

absl::StatusOr<std::vector<ActionRecord>> CollectorStore::Steps(int64_t parent_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE parent_id = ? ORDER BY id",
                                    kActionColumns)));
  s.Bind(1, parent_id);
  return Collect<ActionRecord>(s, ReadAction);
}

absl::StatusOr<std::optional<ActionRecord>> CollectorStore::GetAction(int64_t id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE id = ?", kActionColumns)));
  s.Bind(1, id);
  ASSIGN_OR_RETURN(std::vector<ActionRecord> found, Collect<ActionRecord>(s, ReadAction));
  if (found.empty()) return std::nullopt;
  return found[0];
}

absl::StatusOr<std::vector<ActionRecord>> CollectorStore::TopLevelActions(
    const std::string& kind, const std::string& target) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s, read_db_->Prepare(absl::StrFormat(
                                    "SELECT %s FROM actions WHERE parent_id IS NULL AND kind = ? "
                                    "AND target = ? ORDER BY id",
                                    kActionColumns)));
  s.Bind(1, kind).Bind(2, target);
  return Collect<ActionRecord>(s, ReadAction);
}

absl::StatusOr<int64_t> CollectorStore::CountAutomaticActionsSince(const std::string& kind,
                                                                    int64_t since_ns) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT COUNT(*) FROM actions WHERE parent_id IS NULL AND "
                                     "kind = ? AND actor = 'collector' AND mode = 'auto' AND "
                                     "status IN ('running', 'done', 'failed') AND "
                                     "error_code != 'NeverIsolate' AND created_ns >= ?"));
  s.Bind(1, kind).Bind(2, since_ns);
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.ColumnInt(0) : 0;
}

absl::StatusOr<int64_t> CollectorStore::CountBatches(const std::string& agent_id) {
  std::lock_guard<std::mutex> lock(read_mu_);
  ASSIGN_OR_RETURN(Statement s,
                   read_db_->Prepare("SELECT COUNT(*) FROM batches WHERE agent_id = ?"));
  s.Bind(1, agent_id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.ColumnInt(0) : 0;
}

}  // namespace tripline::collector
