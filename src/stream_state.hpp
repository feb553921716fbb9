// stream_state.hpp: everything the streaming worker and its output plugin
// callbacks share. One instance per worker process, created by worker.cpp and
// reached through creek_stream (a plain pointer: no static destructors).
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pg.hpp"
#include "avro_writer.hpp"
#include "encoder.hpp"
#include "publisher.hpp"
#include "schema.hpp"
#include "shmem.hpp"
#include "spool.hpp"
#include "subjects.hpp"

// The current schema of one published table.
struct CreekTable {
    Oid relid = InvalidOid;
    bool stale = true;                 // rebuild from the catalog before next use
    creek::TableInfo info;
    creek::WriterSchema schema;
    CreekColumnCodec *codecs = nullptr;   // palloc'd in the worker's schema context
    std::string wal_subject, schema_subject, source;  // source: "schema.table"
    std::vector<int> all_cols;         // every column: the row record
    CreekTableStat *stat = nullptr;    // its counters in shared memory (may stay NULL)
    std::vector<int> pk_cols;          // primary key columns (to tell u from u_pk with FULL)
};

// A schema that must be stored in creek.schemas.
struct CreekSchemaToStore {
    std::string fingerprint, source, json, created_at;
};

// A decoded transaction whose messages are not all acknowledged yet.
struct CreekPendingTxn {
    uint64_t last_position;   // publisher position of its last message
    XLogRecPtr end_lsn;       // confirm this once last_position is acknowledged
    TimestampTz commit_time;  // of the last transaction merged into this entry
};

struct CreekStream {
    CreekDbEntry *entry = nullptr;
    creek::Publisher *pub = nullptr;
    creek::Subjects *subjects = nullptr;
    creek::AvroWriter writer;
    std::string db_name, producer_name;
    MemoryContext schema_cxt = nullptr;   // codecs
    MemoryContext change_cxt = nullptr;   // reset after every change

    // membership, read from creek.tables with the historic snapshot
    bool membership_valid = false;
    Oid tables_relid = InvalidOid;
    Oid creek_nsp = InvalidOid;            // creek's schema: creek.partition_rows is in it
    std::unordered_set<Oid> published;
    std::unordered_map<Oid, CreekTable> tables;

    // Partitioned tables (decoder.cpp). A change arrives on the partition that
    // holds the row; when that partition is not published itself, it is
    // published as a change of its topmost published ancestor (a partitioned
    // table in `published`, whose CreekTable in `tables` is used).
    // partition_routes: partition relid -> that ancestor, or InvalidOid when
    //   no ancestor is published (read with the historic catalog snapshot).
    // route_ancestors: every ancestor met while filling partition_routes.
    // Both are cleared on a relcache invalidation of a cached partition or of
    // one of those ancestors (ATTACH/DETACH anywhere in the tree), on a
    // relcache reset, and whenever membership is reread.
    std::unordered_map<Oid, Oid> partition_routes;
    std::unordered_set<Oid> route_ancestors;
    // partitions whose rows the current transaction published as removed
    // (creek.partition_rows, partition_ddl.cpp): their TRUNCATE is not logged
    std::unordered_set<Oid> ddl_removed;

    // schemas: fingerprint -> schema message JSON (served on NS._schemas)
    std::unordered_map<std::string, std::string> known_schemas;
    // NS._snapshot requests for this database, parsed, to be served between
    // decoding batches (they need a transaction).
    struct SnapshotRequest {
        std::string reply, schema, table, error;
    };
    std::vector<SnapshotRequest> snapshot_requests;
    std::unordered_set<std::string> announced;   // "fp/source" published this session
    std::unordered_set<std::string> stored_sources;  // "fp/source" in creek.schemas
    std::vector<CreekSchemaToStore> to_store;

    // current transaction (between begin and commit callbacks)
    XLogRecPtr txn_commit_lsn = InvalidXLogRecPtr;
    XLogRecPtr txn_end_lsn = InvalidXLogRecPtr;
    int64_t txn_commit_unix_us = 0;
    int64_t txn_full_xid = 0;
    uint32_t txn_index = 0;
    // the messages' Nats-Msg-Id before "/<index>": msg_id_prefix (after a
    // failover "<timeline>@", decoder.cpp startup_cb), then the commit LSN,
    // which txn_commit_lsn_text points at
    char msg_id_prefix[16] = {0};
    char txn_msg_id_base[48] = {0};
    const char *txn_commit_lsn_text = txn_msg_id_base;

    // Large transactions streamed before their commit (decoder.cpp): each
    // toplevel xid's encoded changes; spool is the one being written in the
    // current stream block (nullptr outside: changes are published at once).
    std::unordered_map<TransactionId, std::unique_ptr<creek::Spool>> spools;
    creek::Spool *spool = nullptr;
    std::string spool_subject;   // the subject of the spooled change being published

    std::deque<CreekPendingTxn> pending;
    XLogRecPtr last_decoded_lsn = InvalidXLogRecPtr;
    // the next attempt to connect to NATS (worker.cpp, connect_when_due)
    TimestampTz next_connect = 0;
    int connect_backoff_ms = 100;
    TimestampTz last_acked_commit_time = 0;   // commit time of the last acknowledged transaction
};

extern CreekStream *creek_stream;

// Output plugin side (decoder.cpp): waits while the publisher has no room,
// serving NATS requests and interrupts meanwhile.
extern "C" void creek_wait_for_room(void);

// Relcache callback (decoder.cpp): marks a table's schema for rebuild.
void creek_relcache_invalidate(Datum arg, Oid relid);

// Worker side (worker.cpp): serve NS._schemas requests; publisher pumping.
void creek_serve_requests(CreekStream *st);
void creek_pump(CreekStream *st);
