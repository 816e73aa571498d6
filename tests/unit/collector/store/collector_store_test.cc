#include "collector/store/collector_store.h"

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "platform/store/sqlite.h"
#include "tests/support/temp_dir.h"

namespace tripline::collector {
namespace {

AgentRecord Agent(const std::string& id) {
  AgentRecord a;
  a.agent_id = id;
  a.public_key = std::string(32, 'k');
  a.durable_digest = std::string(32, '\0');
  a.enrolled_ns = 1;
  return a;
}

TEST(CollectorStore, WritesSurviveReopen) {
  tripline::testing::TempDir dir;
  {
    auto store = CollectorStore::Open(dir.Sub("c.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
    ASSERT_TRUE(w->InsertBatch("i-1", 1, "batch-bytes", "sig", 5).ok());
    auto id = w->InsertEvent("i-1", 1, 1, 10, "file", std::string("/etc/\xff", 6), "modified",
                             "event-bytes", 5);
    ASSERT_TRUE(id.ok()) << id.status();
    ASSERT_TRUE(w->AdvanceAgentChain("i-1", 1, std::string(32, 'd'), 7).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok());
  auto agent = (*store)->GetAgent("i-1");
  ASSERT_TRUE(agent.ok() && agent->has_value());
  EXPECT_EQ((*agent)->durable_seq, 1u);
  EXPECT_EQ((*agent)->durable_digest, std::string(32, 'd'));
  EXPECT_EQ((*agent)->last_seen_ns, 7);
  auto events = (*store)->QueryEvents({});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].event, "event-bytes");
}

TEST(CollectorStore, UncommittedWriterRollsBack) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok());
  {
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
  }
  EXPECT_FALSE((*store)->GetAgent("i-1")->has_value());
  // The write lock was released: another writer can begin.
  auto w = (*store)->BeginWrite();
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->InsertAgent(Agent("i-1")).ok());
  EXPECT_TRUE(w->Commit().ok());
}

TEST(CollectorStore, DuplicateBatchIsAConstraintError) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok());
  auto w = (*store)->BeginWrite();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
  ASSERT_TRUE(w->InsertBatch("i-1", 1, "b", "s", 1).ok());
  EXPECT_FALSE(w->InsertBatch("i-1", 1, "b", "s", 1).ok());
}

TEST(CollectorStore, EventPagingFiltersByAgentAndKind) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok());
  {
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    for (const char* id : {"i-1", "i-2"}) {
      ASSERT_TRUE(w->InsertAgent(Agent(id)).ok());
      ASSERT_TRUE(w->InsertBatch(id, 1, "b", "s", 1).ok());
      for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(w->InsertEvent(id, 1, i, i, i % 2 ? "log" : "file", "", "", "e", 1).ok());
      }
    }
    ASSERT_TRUE(w->Commit().ok());
  }
  EventQuery q;
  q.agent_id = "i-2";
  q.limit = 2;
  auto page1 = (*store)->QueryEvents(q);
  ASSERT_TRUE(page1.ok());
  ASSERT_EQ(page1->size(), 2u);
  q.after_id = page1->back().id;
  auto page2 = (*store)->QueryEvents(q);
  ASSERT_EQ(page2->size(), 2u);
  EXPECT_GT((*page2)[0].id, page1->back().id);
  for (const auto& e : *page2) EXPECT_EQ(e.agent_id, "i-2");
  q = EventQuery{};
  q.kind = "log";
  EXPECT_EQ((*store)->QueryEvents(q)->size(), 4u);
}

TEST(CollectorStore, OpenIncidentIsFoundUntilResolved) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok());
  auto w = (*store)->BeginWrite();
  ASSERT_TRUE(w.ok());
  IncidentRecord i;
  i.agent_id = "i-1";
  i.rule_id = "r";
  i.title = "t";
  i.severity = "low";
  i.status = "open";
  int64_t id = *w->InsertIncident(i);
  EXPECT_EQ(*w->FindOpenIncident("r", "i-1"), id);
  EXPECT_FALSE(w->FindOpenIncident("r", "i-2")->has_value());
  ASSERT_TRUE(w->SetIncidentStatus(id, "contained", 2).ok());
  EXPECT_EQ(*w->FindOpenIncident("r", "i-1"), id);
  ASSERT_TRUE(w->SetIncidentStatus(id, "resolved", 3).ok());
  EXPECT_FALSE(w->FindOpenIncident("r", "i-1")->has_value());
  // A late containment does not undo an operator's resolution; a reopen does.
  ASSERT_TRUE(w->SetIncidentStatus(id, "contained", 4).ok());
  EXPECT_EQ((*w->GetIncident(id))->status, "resolved");
  ASSERT_TRUE(w->SetIncidentStatus(id, "open", 4).ok());
  EXPECT_EQ((*w->GetIncident(id))->status, "open");
  ASSERT_TRUE(w->SetIncidentStatus(id, "resolved", 4).ok());
  ASSERT_TRUE(w->AppendIncidentSummary(id, "one", 4).ok());
  ASSERT_TRUE(w->AppendIncidentSummary(id, "two", 5).ok());
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ((*(*store)->GetIncident(id))->summary, "one\ntwo");
}


// Migration 7 rebuilds the events table (without its foreign key to batches): every row keeps its
// id, incident links stay valid, and AUTOINCREMENT's high-water mark survives, so the id of an
// event that was deleted is never handed out again.
TEST(CollectorStore, EventsRebuildKeepsIdsLinksAndHighWaterMark) {
  tripline::testing::TempDir dir;
  const std::string path = dir.Sub("c.db");
  int64_t linked = 0;
  {
    auto store = CollectorStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
    ASSERT_TRUE(w->InsertBatch("i-1", 1, "b", "s", 1).ok());
    for (int i = 1; i <= 4; ++i) {
      auto id = w->InsertEvent("i-1", 1, i, i, "file", "/etc/x", "modified", "e", 1);
      ASSERT_TRUE(id.ok()) << id.status();
      if (i == 2) linked = *id;
    }
    IncidentRecord inc;
    inc.agent_id = "i-1";
    inc.rule_id = "r";
    inc.title = "t";
    inc.severity = "low";
    inc.status = "open";
    auto incident = w->InsertIncident(inc);
    ASSERT_TRUE(incident.ok());
    ASSERT_TRUE(w->LinkIncidentEvent(*incident, linked, 2).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  {
    // Forget the newest event, then make the database one that migration 6 has yet to run on.
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("DELETE FROM events WHERE seq = 4").ok());
    // What migrations after 6 created goes too, so they run again cleanly.
    ASSERT_TRUE((*db)->Exec("DROP TABLE incident_cloud_events; DROP TABLE cloud_event_errors; "
                            "DROP TABLE cloud_cursors; DROP TABLE cloud_events; "
                            "DROP TABLE agent_keys;")
                    .ok());
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version=5").ok());
  }
  auto store = CollectorStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto events = (*store)->QueryEvents({});
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 3u);
  const int64_t first = (*events)[0].id;
  EXPECT_EQ((*events)[1].id, first + 1);
  EXPECT_EQ((*events)[2].id, first + 2);
  auto incidents = (*store)->ListIncidents("", 10);
  ASSERT_TRUE(incidents.ok());
  ASSERT_EQ(incidents->size(), 1u);
  EXPECT_EQ((*incidents)[0].event_ids, std::vector<int64_t>{linked});
  auto w = (*store)->BeginWrite();
  ASSERT_TRUE(w.ok());
  auto next = w->InsertEvent("i-1", 1, 5, 5, "file", "/etc/x", "modified", "e", 1);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*next, first + 4);  // not first + 3, the deleted event's id
  ASSERT_TRUE(w->Commit().ok());
  // The linked event is still protected by incident_events' foreign key.
  auto db = Database::Open(path);
  ASSERT_TRUE(db.ok());
  EXPECT_FALSE((*db)->Exec(absl::StrFormat("DELETE FROM events WHERE id = %d", linked)).ok());
}

TEST(CollectorStore, KeyHistoryKeepsEveryKeyFromItsFirstBatch) {
  tripline::testing::TempDir dir;
  auto store = CollectorStore::Open(dir.Sub("c.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string a(32, 'a'), b(32, 'b'), c(32, 'c');
  {
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    AgentRecord agent = Agent("i-1");
    agent.public_key = a;
    agent.enrolled_ns = 10;
    ASSERT_TRUE(w->InsertAgent(agent).ok());
    ASSERT_TRUE(w->AdvanceAgentChain("i-1", 5, std::string(32, 'd'), 11).ok());
    ASSERT_TRUE(w->SetAgentKey("i-1", b, "host", "1", 20).ok());
    EXPECT_EQ(w->SetAgentKey("i-2", c, "host", "1", 20).code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE(w->Commit().ok());
  }
  auto keys = (*store)->AgentKeys("i-1");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0].from_seq, 1u);
  EXPECT_EQ((*keys)[0].public_key, a);
  EXPECT_EQ((*keys)[0].pinned_ns, 10);
  EXPECT_EQ((*keys)[1].from_seq, 6u);  // the batch after the durable one
  EXPECT_EQ((*keys)[1].public_key, b);
  EXPECT_EQ((*keys)[1].pinned_ns, 20);
  {
    // Re-keyed again before b signed anything: c takes b's place, b signed no batch.
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->SetAgentKey("i-1", c, "host", "1", 30).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  keys = (*store)->AgentKeys("i-1");
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[1].from_seq, 6u);
  EXPECT_EQ((*keys)[1].public_key, c);
  EXPECT_EQ((*store)->GetAgent("i-1")->value().public_key, c);
  EXPECT_TRUE((*store)->AgentKeys("i-unknown")->empty());
}

TEST(CollectorStore, KeyHistoryMigrationStartsAtTheCurrentKey) {
  tripline::testing::TempDir dir;
  const std::string path = dir.Sub("c.db");
  {
    auto store = CollectorStore::Open(path);
    ASSERT_TRUE(store.ok());
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  {
    // A database from before the key history.
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("DROP TABLE agent_keys; PRAGMA user_version=8").ok());
  }
  auto store = CollectorStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto keys = (*store)->AgentKeys("i-1");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ((*keys)[0].from_seq, 1u);
  EXPECT_EQ((*keys)[0].public_key, std::string(32, 'k'));
  EXPECT_EQ((*keys)[0].pinned_ns, 1);
}

// Migration 8 drops the events table's secondary indexes in place: a database of version 7 keeps
// its events and ids, and event queries answer as before.
TEST(CollectorStore, EventIndexesAreDroppedInPlace) {
  tripline::testing::TempDir dir;
  const std::string path = dir.Sub("c.db");
  {
    auto store = CollectorStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto w = (*store)->BeginWrite();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-1")).ok());
    ASSERT_TRUE(w->InsertAgent(Agent("i-2")).ok());
    ASSERT_TRUE(w->InsertBatch("i-1", 1, "b", "s", 1).ok());
    ASSERT_TRUE(w->InsertBatch("i-2", 1, "b", "s", 1).ok());
    for (int i = 1; i <= 6; ++i) {
      ASSERT_TRUE(w->InsertEvent(i % 2 ? "i-1" : "i-2", 1, i, 100 + i, i % 3 ? "file" : "log",
                                 absl::StrFormat("/etc/f%d", i), "modified",
                                 absl::StrFormat("event-%d", i), 1)
                      .ok());
    }
    ASSERT_TRUE(w->Commit().ok());
  }
  auto count_indexes = [&]() {
    auto db = Database::Open(path);
    EXPECT_TRUE(db.ok());
    auto s = (*db)->Prepare("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND "
                            "tbl_name = 'events' AND sql IS NOT NULL");
    EXPECT_TRUE(s.ok());
    EXPECT_TRUE(*s->Step());
    return s->ColumnInt(0);
  };
  EXPECT_EQ(count_indexes(), 0);
  {
    // Make it a database of version 7, with the indexes migration 6 created.
    auto db = Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Exec("CREATE INDEX events_by_agent ON events(agent_id, id); "
                            "CREATE INDEX events_by_time ON events(time_ns); "
                            "CREATE INDEX events_by_kind ON events(kind, id); "
                            "DROP TABLE agent_keys; PRAGMA user_version=7")
                    .ok());
  }
  EXPECT_EQ(count_indexes(), 3);
  auto store = CollectorStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(count_indexes(), 0);
  EventQuery q;
  q.agent_id = "i-2";
  q.kind = "file";
  q.since_ns = 103;
  auto events = (*store)->QueryEvents(q);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);  // event 4 (i-2, file, time 104); 6 is a log event
  EXPECT_EQ((*events)[0].event, "event-4");
  q = EventQuery{};
  q.text = "event-5";
  events = (*store)->QueryEvents(q);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].agent_id, "i-1");
}

}  // namespace
}  // namespace tripline::collector
