// worker.cpp: the streaming worker, one per database with creek installed.
//
// It owns the database's logical slot and a Publisher. Its loop reads WAL up
// to the flush position through creek's output plugin (decoder.cpp), lets the
// publisher send and collect acknowledgements, and confirms the slot only past
// transactions whose every message JetStream acknowledged.
//
// Frames in this file that call Postgres hold no C++ objects with
// destructors; C++ work happens in small functions guarded by try/catch.
#include "stream_state.hpp"

#include <cerrno>
#include <map>
#include <cstdio>
#include <stdexcept>
#include <cstring>


#include "json_text.hpp"
#include "names.hpp"
#include "nats_config.hpp"
#include "settings.hpp"
#include "slot.hpp"
#include "slot_recovery.hpp"
#include "snapshot_queue.hpp"
#include "snapshot_requests.hpp"

extern "C" {
PGDLLEXPORT void creek_worker_main(Datum arg);
}

static LogicalDecodingContext *decoding_ctx = nullptr;
static ResourceOwner worker_owner = nullptr;
static char slot_name[NAMEDATALEN];
static Oid extension_oid = InvalidOid;
static XLogRecPtr confirmed_lsn = InvalidXLogRecPtr;
static XLogRecPtr saved_lsn = InvalidXLogRecPtr;
static uint64_t logged_error_generation = 0;
static uint64_t stats_base_messages = 0;      // counters at the last creek.reset_stats()
static uint64_t stats_base_bytes = 0;
static TimestampTz outage_started = 0;         // NATS unreachable since, 0: reachable
static char last_logged_error[CREEK_ERROR_LEN];
static TimestampTz last_logged_error_at = 0;

// Settings the worker started with: a reload that changes one restarts it.
static char *started_settings = nullptr;


static char *settings_fingerprint()
{
    uint64_t secrets = 0;
    try {
        secrets = creek_secrets_hash();
    } catch (...) {
    }
    return psprintf("%d|%d|%d|%d|%d|%llx|%s|%s|%s|%d|%d|%d|%d|%d|%d|%d|%s|%s|%s|%s|%s|%s|%d|%s|%s|%s|%d",
                    (int) creek_snapshot_service, (int) creek_ordered_publish,
                    creek_stream_max_bytes_mb, creek_nats_connect_timeout_ms, creek_nats_reconnect_wait_ms,
                    (unsigned long long) secrets, creek_nats_url,
                    creek_namespace, creek_producer_name, creek_max_in_flight, creek_ack_every, creek_ack_timeout_ms,
                    creek_stream_storage, creek_stream_replicas, creek_stream_max_age_s,
                    creek_stream_duplicate_window_s, creek_nats_user, creek_nats_password,
                    creek_nats_token, creek_nats_creds_file, creek_nats_nkey,
                    creek_nats_nkey_seed_file, creek_nats_tls, creek_nats_tls_ca_file,
                    creek_nats_tls_cert_file, creek_nats_tls_key_file, creek_nats_tls_verify);
}

#define GUARDED(stmt, action) CREEK_CXX_GUARD(stmt, "creek could not " action)

/* ---------- plain C++ helpers (no Postgres calls) ---------- */

// The worker's stream state and publisher. db_name: in UTF-8, as consumers
// see it.
static CreekStream *new_stream(CreekDbEntry *entry, const char *db_name)
{
    CreekStream *st = new CreekStream();
    st->entry = entry;
    st->db_name = db_name;
    st->producer_name = creek_producer_name;
    st->subjects = new creek::Subjects(creek_namespace, st->db_name);
    creek::PublisherConfig cfg = creek_publisher_config(std::string("creek ") + st->db_name);
    cfg.streams = {{st->subjects->wal_stream(), st->subjects->wal_filter()},
                   {st->subjects->schema_stream(), st->subjects->schema_filter()},
                   {st->subjects->snap_stream(), st->subjects->snap_filter()}};
    // this worker alone writes the wal stream, whose order consumers rely on
    if (creek_ordered_publish)
        cfg.ordered_stream = st->subjects->wal_filter();
    st->pub = new creek::Publisher(cfg);
    return st;
}

static void add_known_schema(CreekStream *st, const char *fp, const char *source, const char *json,
                             const char *created_at)
{
    if (!st->known_schemas.count(fp))
        st->known_schemas[fp] = creek::schema_message_json(fp, json, source, created_at);
    st->stored_sources.insert(std::string(fp) + "/" + source);
}

static bool connect_nats(CreekStream *st)
{
    if (st->pub->ready())
        return true;
    bool ok = st->pub->ensure_ready();
    creek_exit_without_library_teardown(1);   // nats.c is initialized now
    if (!ok)
        return false;
    st->pub->subscribe(st->subjects->schemas_service());
    if (creek_snapshot_service)
        st->pub->subscribe(st->subjects->snapshot_service());
    return true;
}

// connect_nats(), unless the last attempt failed less than its back-off ago
// (100 ms doubling to creek.nats_reconnect_wait); true when the publisher is
// ready. Used by the main loop and while a transaction waits for room.
static bool connect_when_due(CreekStream *st)
{
    TimestampTz now = GetCurrentTimestamp();
    // (nats.c reconnects by itself: once it has, do not wait for the back-off)
    if (now < st->next_connect && st->pub->state() != creek::NatsState::Connected)
        return false;
    bool ready = false;
    GUARDED(ready = connect_nats(st), "connect to NATS");
    if (!ready) {
        st->next_connect = TimestampTzPlusMilliseconds(now, st->connect_backoff_ms);
        st->connect_backoff_ms = Min(st->connect_backoff_ms * 2, creek_nats_reconnect_wait_ms);
    } else {
        st->connect_backoff_ms = 100;
    }
    return ready;
}

// {"database", "namespace", "table"} (table: "schema.table", or "table" in
// public; or "schema" and "table"). Requests for another database or
// namespace, or that are not JSON, get no reply: another producer may serve
// them.
static void parse_snapshot_request(CreekStream *st, const creek::ServiceRequest &req)
{
    std::map<std::string, std::string> f;
    std::string err;
    if (!creek::json_parse_flat_object(req.data, f, err))
        return;
    if (f["database"] != st->db_name)
        return;
    if (f.count("namespace") && f["namespace"] != st->subjects->ns)
        return;
    CreekStream::SnapshotRequest r;
    r.reply = req.reply;
    std::string table = f["table"];
    if (f.count("schema")) {
        r.schema = f["schema"];
        r.table = table;
    } else if (table.find('.') != std::string::npos) {
        r.schema = table.substr(0, table.find('.'));
        r.table = table.substr(table.find('.') + 1);
    } else {
        r.schema = "public";
        r.table = table;
    }
    if (table.empty())
        r.error = "the request names no table";
    else if (!creek_snapshot_service)
        r.error = "the snapshot service is turned off (creek.snapshot_service)";
    st->snapshot_requests.push_back(std::move(r));
}

void creek_serve_requests(CreekStream *st)
{
    try {
        creek::ServiceRequest req;
        for (int i = 0; i < 64 && st->pub->next_request(req); i++) {
            if (req.reply.empty())
                continue;
            if (req.subject == st->subjects->schemas_service()) {
                std::string fp = req.data;
                while (!fp.empty() && (fp.back() == '\n' || fp.back() == '\r' || fp.back() == ' '))
                    fp.pop_back();
                auto it = st->known_schemas.find(fp);
                if (it != st->known_schemas.end())
                    st->pub->respond(req.reply, it->second);
                // unknown fingerprint: stay silent, another producer may know it
            } else if (req.subject == st->subjects->snapshot_service()) {
                parse_snapshot_request(st, req);
            }
        }
    } catch (...) {
    }
}

void creek_pump(CreekStream *st)
{
    try {
        st->pub->pump();
    } catch (...) {
    }
}

static void copy_error(CreekStream *st, char *buf, size_t len, int64_t *at_us)
{
    buf[0] = '\0';
    try {
        strlcpy(buf, st->pub->last_error().c_str(), len);
        *at_us = st->pub->last_error_time_us();
    } catch (...) {
    }
}

/* ---------- Postgres side ---------- */

static void update_status(CreekStream *st, const char *state)
{
    CreekDbEntry *e = st->entry;
    creek_set_state(e, state);
    creek_set_nats_state(e, creek::nats_state_name(st->pub->state()));
    if (decoding_ctx)
        pg_atomic_write_u64(&e->last_decoded_lsn, decoding_ctx->reader->EndRecPtr);
    pg_atomic_write_u64(&e->confirmed_lsn, confirmed_lsn);
    uint64 spooled = 0;
    for (const auto &kv : st->spools)
        spooled += kv.second->bytes();
    pg_atomic_write_u64(&e->spooled_txns, st->spools.size());
    pg_atomic_write_u64(&e->spooled_bytes, spooled);
    if (pg_atomic_exchange_u32(&e->reset_requested, 0) != 0) {  // creek.reset_stats()
        stats_base_messages = st->pub->messages_published();
        stats_base_bytes = st->pub->bytes_published();
        creek_reset_table_stats(MyDatabaseId);
        pg_atomic_write_u64(&e->stats_reset, (uint64) GetCurrentTimestamp());
    }
    pg_atomic_write_u64(&e->messages, st->pub->messages_published() - stats_base_messages);
    pg_atomic_write_u64(&e->bytes, st->pub->bytes_published() - stats_base_bytes);
    pg_atomic_write_u64(&e->in_flight, st->pub->in_flight() + st->pub->queued());
    pg_atomic_write_u64(&e->last_acked_commit_time, (uint64) st->last_acked_commit_time);

    // The log stays short: one line when NATS becomes unreachable, one when
    // it is back, and any other error once per distinct text per minute.
    // Every error is in the view.
    bool connected = st->pub->state() == creek::NatsState::Connected;
    uint64_t gen = st->pub->error_generation();
    TimestampTz now = GetCurrentTimestamp();
    if (gen != logged_error_generation) {
        char buf[CREEK_ERROR_LEN];
        int64_t at_us = 0;
        logged_error_generation = gen;
        copy_error(st, buf, sizeof buf, &at_us);
        creek_set_error(e, buf);
        if (!connected && outage_started == 0) {
            outage_started = now;
            ereport(WARNING, (errmsg("creek cannot reach NATS: %s", buf),
                              errdetail("Changes are kept in the WAL and published when NATS is back.")));
        } else if (connected && (strcmp(buf, last_logged_error) != 0 ||
                                 TimestampDifferenceExceeds(last_logged_error_at, now, 60000))) {
            ereport(WARNING, (errmsg("creek: %s", buf)));
            strlcpy(last_logged_error, buf, sizeof last_logged_error);
            last_logged_error_at = now;
        }
    }
    if (connected && outage_started != 0) {
        long secs;
        int usecs;
        TimestampDifference(outage_started, now, &secs, &usecs);
        ereport(LOG, (errmsg("creek reached NATS again after %ld.%01d s", secs, usecs / 100000)));
        outage_started = 0;
    }
}

static bool settings_changed()
{
    char *now = settings_fingerprint();
    bool changed = strcmp(now, started_settings) != 0;
    pfree(now);
    return changed;
}

// A message was split for a larger limit than the NATS server (or stream)
// now accepts: start over from the confirmed position, so that every message
// not yet acknowledged is split again for the current limit.
static void restart_if_too_large(CreekStream *st)
{
    if (!st->pub->too_large())
        return;
    ereport(LOG, (errmsg("creek worker restarting: NATS refused a message as too large"),
                  errdetail("The server's max_payload or the stream's max_msg_size went down; "
                            "unacknowledged changes are decoded again and split for the new limit.")));
    proc_exit(1);
}

// Requests that cannot wait for the end of the transaction being decoded:
// the worker exits, and its successor (or DROP DATABASE) takes over from the
// confirmed position. Used while waiting for the publisher mid-transaction.
static void handle_requests_mid_transaction(CreekStream *st)
{
    bool drop_requested, exit_requested;
    SpinLockAcquire(&st->entry->mutex);
    drop_requested = st->entry->drop_requested;
    exit_requested = st->entry->exit_requested;
    SpinLockRelease(&st->entry->mutex);
    if (exit_requested) {
        ereport(LOG, (errmsg("creek worker exiting: its database is being dropped")));
        proc_exit(0);
    }
    if (drop_requested) {
        ereport(LOG, (errmsg("creek worker restarting: DROP EXTENSION creek was requested")));
        proc_exit(1);
    }
    restart_if_too_large(st);
    if (ConfigReloadPending && !st->pub->ready()) {
        // Reading the configuration here, inside a decoded transaction with
        // a historic catalog snapshot, could run other settings' check hooks
        // against old catalogs. While the publisher makes progress the
        // reload waits for the end of the transaction (a restart would
        // publish the whole transaction again, past JetStream's duplicate
        // window for its oldest messages); while it cannot (NATS unreachable,
        // perhaps the very setting changed), restart and read it at start.
        ereport(LOG, (errmsg("creek worker restarting to apply a configuration reload")));
        proc_exit(1);
    }
}

extern "C" void creek_wait_for_room(void)
{
    // Called after every decoded change: let the publisher send every 64
    // changes, or at once when its queue is full (the main loop pumps after
    // each batch of WAL records as well).
    static unsigned calls = 0;
    CreekStream *st = creek_stream;
    if (++calls % 64 == 0)
        creek_pump(st);
    while (!st->pub->has_room()) {
        creek_pump(st);
        if (st->pub->has_room())
            break;
        handle_requests_mid_transaction(st);
        // Streams lost (deleted, or memory streams after a nats-server
        // restart) or a connection closed for good are restored here too, as
        // in the main loop: this transaction would wait for room forever.
        if (!st->pub->ready())
            (void) connect_when_due(st);
        (void) WaitLatchOrSocket(MyLatch,
                                 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                 st->pub->wakeup_fd(), 50, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        st->pub->clear_wakeup();
        CHECK_FOR_INTERRUPTS();
        creek_pump(st);
        creek_serve_requests(st);
        update_status(st, "streaming");
    }
}

static void set_logical_decoding_flag(bool on)
{
    LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
    if (on)
        MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
    else
        MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
    ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
    LWLockRelease(ProcArrayLock);
}

// Stores new schemas in creek.schemas (inside side_transaction()).
static void store_schemas(CreekStream *st)
{
    Oid types[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
    for (size_t i = 0; i < st->to_store.size(); i++) {
        // names are UTF-8 here, and in the database's encoding in its tables
        const char *source = creek_name_from_utf8(st->to_store[i].source.c_str());
        const char *json = creek_name_from_utf8(st->to_store[i].json.c_str());
        if (source == nullptr || json == nullptr)
            elog(ERROR, "creek could not convert the schema of %s to the database encoding",
                 st->to_store[i].source.c_str());
        Datum values[4] = {
            CStringGetTextDatum(st->to_store[i].fingerprint.c_str()),
            CStringGetTextDatum(source),
            CStringGetTextDatum(json),
            CStringGetTextDatum(st->to_store[i].created_at.c_str()),
        };
        int rc = SPI_execute_with_args(
            "INSERT INTO creek.schemas (fingerprint, source, schema_json, created_at) "
            "VALUES ($1, $2, $3, $4::timestamptz) ON CONFLICT DO NOTHING",
            4, types, values, nullptr, false, 0);
        if (rc != SPI_OK_INSERT)
            elog(ERROR, "creek could not store a schema: %s", SPI_result_code_string(rc));
    }
}

static void respond_error(CreekStream *st, const char *reply, const char *msg)
{
    try {
        st->pub->respond(reply, "{\"error\":" + creek::json_string(msg) + "}");
    } catch (...) {
    }
}

// Serves the parsed NS._snapshot requests (inside side_transaction()): only
// published tables; the snapshot worker replies with the subject once the
// header is stored.
static void serve_snapshot_requests(CreekStream *st)
{
    for (size_t i = 0; i < st->snapshot_requests.size(); i++) {
        CreekStream::SnapshotRequest *r = &st->snapshot_requests[i];
        const char *reply = r->reply.c_str();
        if (!r->error.empty()) {
            respond_error(st, reply, r->error.c_str());
            continue;
        }
        // the request's names are UTF-8; the catalog's in the database's encoding
        const char *schema = creek_name_from_utf8(r->schema.c_str());
        const char *table = creek_name_from_utf8(r->table.c_str());
        char *name = quote_qualified_identifier(r->schema.c_str(), r->table.c_str());
        if (schema == nullptr || table == nullptr) {
            char *msg = psprintf("table %s is not published by creek in database \"%s\": the name is not valid "
                                 "UTF-8 or has characters the database encoding lacks",
                                 name, st->db_name.c_str());
            respond_error(st, reply, msg);
            continue;
        }
        Oid types[2] = {TEXTOID, TEXTOID};
        Datum values[2] = {CStringGetTextDatum(schema), CStringGetTextDatum(table)};
        int rc = SPI_execute_with_args(
            "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "JOIN creek.tables t ON t.relid = c.oid WHERE n.nspname = $1 AND c.relname = $2",
            2, types, values, nullptr, true, 1);
        Oid relid = InvalidOid;
        if (rc == SPI_OK_SELECT && SPI_processed == 1) {
            bool isnull;
            Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            if (!isnull)
                relid = DatumGetObjectId(d);
        }
        if (!OidIsValid(relid)) {
            char *msg = psprintf("table %s is not published by creek in database \"%s\"", name, st->db_name.c_str());
            respond_error(st, reply, msg);
            continue;
        }
        char prefix[CREEK_SUBJECT_LEN], subject[CREEK_SUBJECT_LEN];
        bool ok = false;
        try {
            std::string p = st->subjects->snap(r->schema, r->table, "");
            p.pop_back();
            strlcpy(prefix, p.c_str(), sizeof prefix);
            ok = true;
        } catch (...) {
        }
        if (!ok || !creek_snapshot_enqueue_now(MyDatabaseId, relid, schema, table,
                                               prefix, "nats", reply, subject, sizeof subject))
            respond_error(st, reply, "too many snapshots: none of the snapshots creek keeps has ended");
        else
            creek_snapshot_request_keep(subject, relid, "nats");
    }
}

// Snapshots requested over NATS that failed before their request was
// answered (see creek_snapshot_take_unanswered): the requester gets the
// error rather than a time-out. Answered by this worker, which read the
// request, since a failed snapshot worker may not be connected.
static void answer_failed_snapshot_requests(CreekStream *st)
{
    if (st->pub->state() != creek::NatsState::Connected)
        return;
    char reply[CREEK_REPLY_LEN], error[CREEK_ERROR_LEN + CREEK_SUBJECT_LEN];
    for (int i = 0; i < 8 && creek_snapshot_take_unanswered(MyDatabaseId, reply, sizeof reply, error, sizeof error);
         i++)
        respond_error(st, reply, error);
}

// Between decoding batches: one short transaction that stores new schemas and
// serves snapshot requests. The decoding context marks this process
// PROC_IN_LOGICAL_DECODING, which hides its xid from other snapshots: clear
// it for the duration of the transaction.
static void side_transaction(CreekStream *st)
{
    if (st->to_store.empty() && st->snapshot_requests.empty() && !creek_slot_recovery_due() &&
        !creek_snapshot_requests_due())
        return;
    bool had_flag = (MyProc->statusFlags & PROC_IN_LOGICAL_DECODING) != 0;
    if (had_flag)
        set_logical_decoding_flag(false);
    InvalidateSystemCaches();
    StartTransactionCommand();
    // after DROP EXTENSION committed: nothing to do, the main loop drops the slot
    if (get_extension_oid("creek", true) == extension_oid) {
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        store_schemas(st);
        serve_snapshot_requests(st);
        if (creek_snapshot_requests_due())
            creek_snapshot_requests_sweep();
        if (creek_slot_recovery_due())
            creek_slot_recovery_request_pending();
        SPI_finish();
        PopActiveSnapshot();
    }
    CommitTransactionCommand();
    InvalidateSystemCaches();
    CurrentResourceOwner = worker_owner;
    if (had_flag)
        set_logical_decoding_flag(true);
    st->to_store.clear();
    st->snapshot_requests.clear();
}

static void load_known_schemas(CreekStream *st)
{
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    int rc = SPI_execute(
        "SELECT fingerprint, source, schema_json, "
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
        "FROM creek.schemas ORDER BY created_at",
        true, 0);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "creek could not read creek.schemas: %s", SPI_result_code_string(rc));
    for (uint64 i = 0; i < SPI_processed; i++) {
        HeapTuple tup = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        char *fp = SPI_getvalue(tup, desc, 1);
        const char *source = creek_name_utf8(SPI_getvalue(tup, desc, 2));
        const char *json = creek_name_utf8(SPI_getvalue(tup, desc, 3));
        char *created = SPI_getvalue(tup, desc, 4);
        GUARDED(add_known_schema(st, fp, source, json, created), "load a stored schema");
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    CurrentResourceOwner = worker_owner;
}

static Oid current_extension_oid()
{
    StartTransactionCommand();
    Oid ext = get_extension_oid("creek", true);
    CommitTransactionCommand();
    CurrentResourceOwner = worker_owner;
    return ext;
}

static void worker_exit(int code, Datum arg)
{
    CreekStream *st = creek_stream;
    creek_exit_without_library_teardown(code);
    if (MyReplicationSlot != nullptr && confirmed_lsn != saved_lsn)
        creek_slot_save();
    if (st == nullptr)
        return;
    // The NATS connection is not closed: the process ends, and with it the
    // socket and nats.c's threads (see creek_exit_without_library_teardown).
    if (st->entry)
        creek_release_db(st->entry, code == 0);
}

// Decodes WAL up to the flush position while the publisher has room, for at
// most ~100 ms. Returns true when it stopped with more WAL to read. The
// reader never waits (see creek_slot_open): a record not flushed to its end
// is read on a later turn.
static bool decode_some(CreekStream *st)
{
    XLogRecPtr flush = GetFlushRecPtr(nullptr);
    TimestampTz start = GetCurrentTimestamp();
    int n = 0;
    while (decoding_ctx->reader->EndRecPtr < flush) {
        char *errm = nullptr;
        if (CurrentResourceOwner == nullptr)
            CurrentResourceOwner = worker_owner;
        XLogRecord *record = XLogReadRecord(decoding_ctx->reader, &errm);
        if (errm)
            ereport(ERROR, (errmsg("creek could not read WAL at %X/%X: %s",
                                   LSN_FORMAT_ARGS(decoding_ctx->reader->EndRecPtr), errm)));
        if (record == nullptr) {   // the rest of the next record is not flushed yet
            CurrentResourceOwner = worker_owner;
            return false;
        }
        LogicalDecodingProcessRecord(decoding_ctx, decoding_ctx->reader);
        CurrentResourceOwner = worker_owner;
        CHECK_FOR_INTERRUPTS();
        if (++n % 256 == 0) {
            creek_pump(st);
            if (!st->pub->has_room() || TimestampDifferenceExceeds(start, GetCurrentTimestamp(), 100))
                return true;
        }
    }
    return false;
}

static void confirm(CreekStream *st)
{
    uint64_t acked = st->pub->acked_through();
    XLogRecPtr target = InvalidXLogRecPtr;
    while (!st->pending.empty() && st->pending.front().last_position <= acked) {
        target = st->pending.front().end_lsn;
        st->last_acked_commit_time = st->pending.front().commit_time;
        st->pending.pop_front();
    }
    // Nothing decoded is waiting: everything read so far may be confirmed.
    if (st->pending.empty() && acked == st->pub->last_position())
        target = Max(target, decoding_ctx->reader->EndRecPtr);
    if (target > confirmed_lsn) {
        LogicalConfirmReceivedLocation(target);
        confirmed_lsn = target;
    }
}

static void stream_loop(CreekStream *st)
{
    TimestampTz last_save = GetCurrentTimestamp();
    TimestampTz last_ext_check = last_save;
    TimestampTz last_activity = 0;

    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            if (settings_changed()) {
                ereport(LOG, (errmsg("creek worker restarting to apply new settings")));
                proc_exit(1);
            }
        }

        TimestampTz now = GetCurrentTimestamp();
        const bool ready = connect_when_due(st);

        bool more = false;
        if (ready) {
            more = decode_some(st);
            if (decoding_ctx->reader->EndRecPtr != (XLogRecPtr) pg_atomic_read_u64(&st->entry->last_decoded_lsn))
                last_activity = now;
        }
        side_transaction(st);
        creek_pump(st);
        confirm(st);
        restart_if_too_large(st);
        creek_serve_requests(st);
        answer_failed_snapshot_requests(st);
        update_status(st, ready ? "streaming" : "waiting for NATS");

        now = GetCurrentTimestamp();
        if (confirmed_lsn != saved_lsn && TimestampDifferenceExceeds(last_save, now, 1000)) {
            creek_slot_save();
            saved_lsn = confirmed_lsn;
            last_save = now;
        }
        bool drop_requested, exit_requested;
        SpinLockAcquire(&st->entry->mutex);
        drop_requested = st->entry->drop_requested;
        exit_requested = st->entry->exit_requested;
        st->entry->drop_requested = false;
        SpinLockRelease(&st->entry->mutex);
        if (exit_requested) {
            ereport(LOG, (errmsg("creek worker exiting: its database is being dropped")));
            proc_exit(0);
        }
        if (drop_requested || TimestampDifferenceExceeds(last_ext_check, now, 2000)) {
            last_ext_check = now;
            if (current_extension_oid() != extension_oid) {
                ereport(LOG, (errmsg("creek extension dropped: dropping replication slot \"%s\"",
                                     slot_name)));
                creek_slot_drop(decoding_ctx, slot_name);
                creek_forget_table_stats(MyDatabaseId);
                decoding_ctx = nullptr;
                proc_exit(0);
            }
        }

        if (more)
            continue;
        long timeout = TimestampDifferenceExceeds(last_activity, now, 1000) ? 500 : 10;
        if (st->pub->in_flight() + st->pub->queued() > 0)
            timeout = Min(timeout, 50);
        int rc = WaitLatchOrSocket(MyLatch,
                                   WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                   st->pub->wakeup_fd(), timeout, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        st->pub->clear_wakeup();
        // A commit woke the worker: let the commits that follow it gather for
        // creek.batch_delay, then decode and publish them as one batch (one
        // wake-up, one socket write, acknowledgements read together) instead
        // of one round per commit. The latch is not watched meanwhile (every
        // commit sets it); signals are handled at the top of the loop, at
        // most batch_delay later.
        if ((rc & WL_LATCH_SET) && creek_batch_delay_ms > 0 && ready) {
            (void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, creek_batch_delay_ms,
                             PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
        }
    }
}

// Postgres 15.20 and later load only the output plugins listed in
// output_plugin_libraries (a superuser setting). The worker is a superuser
// session that uses creek's own plugin: trust it here, for this process only.
static void trust_own_output_plugin()
{
    const char *libs = GetConfigOption("output_plugin_libraries", true, false);
    if (libs == nullptr || strstr(libs, "creek") != nullptr)
        return;
    char *value = psprintf("%s%screek", libs, libs[0] ? ", " : "");
    SetConfigOption("output_plugin_libraries", value, PGC_SUSET, PGC_S_OVERRIDE);
    pfree(value);
}

static void wait_seconds(int ms)
{
    (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
}

void creek_worker_main(Datum arg)
{
    Oid dboid = DatumGetObjectId(arg);
    bool wait_for_extension = MyBgworkerEntry->bgw_extra[0] == 'w';

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    // The postmaster restarts a failed worker even when its database has been
    // dropped meanwhile: end quietly (exit code 0 unregisters the worker).
    if (creek_shared != nullptr && creek_db_dropped(dboid))
        proc_exit(0);
    BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
    pgstat_report_appname("creek worker");

    // CREATE EXTENSION asks for a worker before it commits: give it time.
    worker_owner = ResourceOwnerCreate(nullptr, "creek worker");
    CurrentResourceOwner = worker_owner;
    // (A restarted worker finds its slot: it has nothing to wait for.)
    creek_slot_name(dboid, slot_name, sizeof slot_name);
    if (creek_slot_exists(slot_name))
        wait_for_extension = false;
    for (int i = 0;; i++) {
        extension_oid = current_extension_oid();
        if (OidIsValid(extension_oid) || !wait_for_extension || i >= 40)
            break;
        wait_seconds(250);
    }
    if (!OidIsValid(extension_oid)) {
        // creek was dropped while this database's worker was busy: its slot
        // is left behind. Drop it, or it would hold WAL forever.
        creek_slot_name(dboid, slot_name, sizeof slot_name);
        if (creek_slot_exists(slot_name)) {
            ereport(LOG, (errmsg("creek extension dropped: dropping replication slot \"%s\"", slot_name)));
            creek_slot_drop(nullptr, slot_name);
            if (creek_shared != nullptr)
                creek_forget_table_stats(dboid);
        }
        // (the entry a restarting predecessor left, shown as "restarting")
        if (creek_shared != nullptr)
            creek_forget_db(dboid);
        proc_exit(0);
    }
    if (creek_shared == nullptr)
        proc_exit(0);
    CreekDbEntry *entry = creek_claim_db(dboid);
    if (entry == nullptr)
        proc_exit(0);  // another worker streams this database, or no entry is free
    creek_slot_name(dboid, slot_name, sizeof slot_name);
    SpinLockAcquire(&entry->mutex);
    strlcpy(entry->slot_name, slot_name, sizeof entry->slot_name);
    SpinLockRelease(&entry->mutex);

    MemoryContextSwitchTo(TopMemoryContext);
    started_settings = settings_fingerprint();
    StartTransactionCommand();
    char *db_name = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
    char *db_name_utf8 = MemoryContextStrdup(TopMemoryContext, creek_name_utf8(db_name));
    CommitTransactionCommand();
    CurrentResourceOwner = worker_owner;
    MemoryContextSwitchTo(TopMemoryContext);

    CreekStream *st = nullptr;
    {
        // (a setup error, e.g. an unreadable secret file, goes to the view too)
        char err[CREEK_ERROR_LEN];
        err[0] = '\0';
        try {
            st = new_stream(entry, db_name_utf8);
        } catch (const std::exception &e) {
            strlcpy(err, e.what(), sizeof err);
        } catch (...) {
            strlcpy(err, "unknown C++ exception", sizeof err);
        }
        if (st == nullptr) {
            creek_set_error(entry, err);
            ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
                            errmsg("creek could not start the streaming worker: %s", err)));
        }
    }
    creek_stream = st;
    before_shmem_exit(worker_exit, 0);
    st->schema_cxt = AllocSetContextCreate(TopMemoryContext, "creek schemas", ALLOCSET_DEFAULT_SIZES);
    st->change_cxt = AllocSetContextCreate(TopMemoryContext, "creek change", ALLOCSET_DEFAULT_SIZES);

    PG_TRY();
    {
        load_known_schemas(st);
        if (wal_level < WAL_LEVEL_LOGICAL) {
            creek_set_state(entry, "waiting for wal_level");
            creek_set_error(entry, "wal_level must be \"logical\" for creek to stream changes");
            ereport(WARNING, (errmsg("creek cannot stream database \"%s\": wal_level must be \"logical\"", db_name),
                              errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
            for (;;)
                wait_seconds(10000);
        }
        trust_own_output_plugin();
        creek_slot_recovery_show_last(entry);
        creek_drop_invalidated_slot(entry, slot_name);
        if (!creek_slot_ready(slot_name)) {
            creek_set_state(entry, "creating slot");
            creek_slot_create(slot_name);
            TransactionId next_xid = ReadNextTransactionId();
            ereport(LOG, (errmsg("creek created replication slot \"%s\"", slot_name)));
            creek_slot_recovery_start(entry, slot_name, next_xid);
        }
        MemoryContextSwitchTo(TopMemoryContext);
        decoding_ctx = creek_slot_open(slot_name);
        confirmed_lsn = saved_lsn = MyReplicationSlot->data.confirmed_flush;
        CacheRegisterRelcacheCallback(creek_relcache_invalidate, (Datum) 0);
        creek_set_state(entry, "connecting");
        stream_loop(st);
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData *edata = CopyErrorData();
        creek_set_error(entry, edata->message);
        PG_RE_THROW();
    }
    PG_END_TRY();
    proc_exit(1);
}
