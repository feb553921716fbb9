// snapshot_worker.cpp: one background worker per snapshot. It takes a
// REPEATABLE READ snapshot of the table, publishes the header (with what a
// consumer needs to merge the snapshot with the change stream), every row,
// then EOF on NS.DB.snap.SCHEMA.TABLE.<time>_<id>. Streaming never waits
// for it: it has its own NATS connection and its own transaction.
//
// Merge rule (README, "Snapshots"): the header gives the snapshot's xmin,
// xmax and xip (64-bit transaction ids, as source.tx_id) and wal_seq, the
// last sequence of the change stream read *before* the snapshot was taken.
// A change at a later sequence belongs to the snapshot when its tx_id is
// visible to it (tx_id < xmin, or tx_id < xmax and not in xip); the others
// come after it. Every change before wal_seq is visible: a transaction
// published before the snapshot was taken has committed (its commit record
// was decoded), and the only way it can still be invisible is to be in the
// procarray between its commit and its removal (a synchronous-replication
// wait, for example). The worker sees that case (an xip transaction that
// pg_xact_status reports committed) and takes the snapshot again.
//
// Frames that call Postgres hold no C++ objects with destructors: the C++
// state lives in SnapRun (on the heap), and C++ work runs inside SNAP_CXX,
// which turns exceptions into ereport(ERROR) after the try block.
#include "pg.hpp"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "encoder.hpp"
#include "json_text.hpp"
#include "names.hpp"
#include "nats_config.hpp"
#include "publisher.hpp"
#include "settings.hpp"
#include "snapshot_queue.hpp"
#include "snapshot_requests.hpp"
#include "subjects.hpp"
#include "table_info.hpp"

extern "C" {
PGDLLEXPORT void creek_snapshot_main(Datum arg);
}

#define SNAP_CXX(stmt, action) CREEK_CXX_GUARD(stmt, "creek snapshot could not " action)

namespace {

struct SnapRun {
    creek::Publisher *pub = nullptr;
    creek::Subjects *subjects = nullptr;
    creek::TableInfo info;
    creek::WriterSchema schema;
    creek::AvroWriter writer;
    std::vector<int> cols;
    std::string subject, token, header, wal_stream;
};

SnapRun *run = nullptr;
CreekSnapshot *snap = nullptr;
uint32 snap_generation = 0;

// Everything the merge rule needs, from the snapshot's transaction.
struct SnapPoint {
    char snapshot[1024];   // pg_current_snapshot() text: xmin:xmax:xip,...
    char lsn[32];
    int64 wal_seq;
    int64 approx_rows;
};

}  // namespace

static void snap_exit(int code, Datum arg)
{
    if (snap == nullptr)
        return;
    bool cancelled;
    SpinLockAcquire(&snap->mutex);
    cancelled = snap->cancel_requested;
    SpinLockRelease(&snap->mutex);
    creek_snapshot_fail(snap, cancelled ? "cancelled by creek.cancel_snapshot()"
                                        : "the snapshot worker was terminated");
    creek_exit_without_library_teardown(code);
}

static void check_cancel()
{
    CHECK_FOR_INTERRUPTS();
    bool cancelled;
    SpinLockAcquire(&snap->mutex);
    cancelled = snap->cancel_requested;
    SpinLockRelease(&snap->mutex);
    if (cancelled)
        ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED), errmsg("cancelled by creek.cancel_snapshot()")));
}

static void wait_a_little(long ms)
{
    int fd = -1;
    try {
        fd = run->pub->wakeup_fd();
    } catch (...) {
    }
    (void) WaitLatchOrSocket(MyLatch,
                             WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | (fd >= 0 ? WL_SOCKET_READABLE : 0),
                             fd, ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    try {
        run->pub->clear_wakeup();
    } catch (...) {
    }
    check_cancel();
}

static void nats_error(const char *what)
{
    char err[CREEK_ERROR_LEN];
    err[0] = '\0';
    try {
        strlcpy(err, run->pub->last_error().c_str(), sizeof err);
    } catch (...) {
    }
    ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE), errmsg("%s: %s", what, err)));
}

static void connect_nats()
{
    TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);
    for (;;) {
        bool ok = false;
        SNAP_CXX(ok = run->pub->ensure_ready(), "connect to NATS");
        creek_exit_without_library_teardown(1);
        if (ok)
            return;
        if (GetCurrentTimestamp() > until)
            nats_error("could not reach NATS within 30 s");
        wait_a_little(200);
    }
}

// Pumps until the publisher has room (or, with all, until everything is
// acknowledged). Fails when JetStream acknowledges nothing for a while.
static void pump_until(bool all)
{
    long limit_ms = Max(5000L, 3L * creek_ack_timeout_ms);
    uint64 last_acked = 0;
    TimestampTz progress_at = GetCurrentTimestamp();
    for (;;) {
        bool done = false;
        uint64 acked = 0;
        SNAP_CXX({
            run->pub->pump();
            acked = run->pub->acked_through();
            done = all ? acked == run->pub->last_position() : run->pub->has_room();
        }, "publish");
        if (done)
            return;
        TimestampTz now = GetCurrentTimestamp();
        if (acked != last_acked) {
            last_acked = acked;
            progress_at = now;
        } else if (TimestampDifferenceExceeds(progress_at, now, (int) limit_ms)) {
            nats_error("JetStream acknowledged no snapshot message for 3 times creek.ack_timeout");
        }
        wait_a_little(50);
    }
}

static void set_progress(int64 rows)
{
    SpinLockAcquire(&snap->mutex);
    snap->rows_sent = rows;
    SpinLockRelease(&snap->mutex);
}

static void publish(const char *msg_id_suffix, const char *data, size_t len)
{
    SNAP_CXX(run->pub->enqueue(run->subject, run->token + "/" + msg_id_suffix, data, len),
             "queue a message");
}

// Takes the REPEATABLE READ snapshot (the transaction stays open) and fills
// *pt. Retries while a transaction of xip has already committed.
static void take_snapshot(SnapPoint *pt, Oid relid)
{
    for (int attempt = 0;; attempt++) {
        int64 seq = -1;
        SNAP_CXX(seq = run->pub->stream_last_seq(run->wal_stream), "read the change stream");
        if (seq < 0)
            nats_error("could not read the change stream's last sequence");

        StartTransactionCommand();
        XactIsoLevel = XACT_REPEATABLE_READ;
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        int rc = SPI_execute(
            "SELECT pg_catalog.pg_current_snapshot()::text, pg_catalog.pg_current_wal_lsn()::text, "
            "(SELECT count(*) FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) x "
            "  WHERE pg_catalog.pg_xact_status(x) = 'committed')",
            true, 1);
        if (rc != SPI_OK_SELECT || SPI_processed != 1)
            elog(ERROR, "creek snapshot could not read its snapshot: %s", SPI_result_code_string(rc));
        char *snaptext = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
        char *lsn = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
        char *committed = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
        if (strcmp(committed, "0") != 0) {
            SPI_finish();
            PopActiveSnapshot();
            AbortCurrentTransaction();
            if (attempt >= 3000)
                ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                                errmsg("could not take a snapshot without committed transactions still in progress"),
                                errdetail("Transactions kept committing without leaving the process array "
                                          "(synchronous replication waits?) for 30 s.")));
            wait_a_little(10);
            continue;
        }
        strlcpy(pt->snapshot, snaptext, sizeof pt->snapshot);
        strlcpy(pt->lsn, lsn, sizeof pt->lsn);
        pt->wal_seq = seq;

        Oid types[1] = {OIDOID};
        Datum values[1] = {ObjectIdGetDatum(relid)};
        rc = SPI_execute_with_args(
            "SELECT (sum(c.reltuples) FILTER (WHERE c.reltuples >= 0 AND c.relkind = 'r'))::int8 "
            "FROM pg_catalog.pg_class c WHERE c.oid = $1 "
            "OR c.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree($1))",
            1, types, values, nullptr, true, 1);
        pt->approx_rows = -1;
        if (rc == SPI_OK_SELECT && SPI_processed == 1) {
            bool isnull;
            Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            if (!isnull)
                pt->approx_rows = DatumGetInt64(d);
        }
        return;
    }
}

static std::string header_json(const SnapPoint &pt, const char *db_name, const char *at)
{
    // pg_current_snapshot() text: xmin:xmax:xip1,xip2,...
    std::string s(pt.snapshot);
    size_t c1 = s.find(':'), c2 = s.find(':', c1 + 1);
    std::string xmin = s.substr(0, c1), xmax = s.substr(c1 + 1, c2 - c1 - 1), xip = s.substr(c2 + 1);
    std::string out = "{\"topic\":" + creek::json_string(run->subject);
    out += ",\"fingerprint\":" + creek::json_string(run->schema.fingerprint_b64);
    out += ",\"schema\":" + creek::json_string(run->schema.json);
    out += ",\"tx_id\":" + xmax;
    out += ",\"lsn\":" + creek::json_string(pt.lsn);
    out += ",\"at\":" + creek::json_string(at);
    out += ",\"approx_rows\":" + std::to_string(pt.approx_rows);
    out += ",\"database\":" + creek::json_string(db_name);
    out += ",\"schema_name\":" + creek::json_string(run->info.schema_utf8);
    out += ",\"table\":" + creek::json_string(run->info.table_utf8);
    out += ",\"xmin\":" + xmin + ",\"xmax\":" + xmax + ",\"xip\":[" + xip + "]";
    out += ",\"wal_stream\":" + creek::json_string(run->wal_stream);
    out += ",\"wal_seq\":" + std::to_string(pt.wal_seq);
    out += "}";
    return out;
}

static void rfc3339(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

static void start_run(const char *db_name)
{
    run = new SnapRun();
    run->subjects = new creek::Subjects(creek_namespace, db_name);
    creek::PublisherConfig cfg = creek_publisher_config(std::string("creek snapshot ") + db_name);
    cfg.streams = {{run->subjects->snap_stream(), run->subjects->snap_filter()}};
    // A reply on every message: up to creek.max_snapshots workers write this
    // database's snapshot stream at once, so the stream sequence cannot
    // vouch for messages sent without one (creek.ack_every counts on a
    // single writer).
    cfg.ack_every = 1;
    run->pub = new creek::Publisher(cfg);
    run->wal_stream = run->subjects->wal_stream();
}

static void run_snapshot(Oid relid, const char *db_name, const char *reply)
{
    SNAP_CXX(start_run(db_name), "start");
    SpinLockAcquire(&snap->mutex);
    char subject[CREEK_SUBJECT_LEN];
    strlcpy(subject, snap->subject, sizeof subject);
    SpinLockRelease(&snap->mutex);
    SNAP_CXX({
        run->subject = subject;
        run->token = run->subject.substr(run->subject.rfind('.') + 1);
    }, "start");

    connect_nats();
    SnapPoint pt;
    take_snapshot(&pt, relid);

    Relation rel = try_relation_open(relid, AccessShareLock);
    if (rel == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("the table of the snapshot no longer exists")));
    char relkind = rel->rd_rel->relkind;
    creek_read_table_info(rel, &run->info);
    relation_close(rel, NoLock);   // the lock stays until the end
    SNAP_CXX({
        // SELECT * returns the columns TableInfo lists, in the same order
        for (size_t i = 0; i < run->info.columns.size(); i++) {
            run->info.columns[i].attnum = int(i) + 1;
            run->cols.push_back(int(i));
        }
        run->schema = creek::build_row_schema(run->info);
    }, "build the row schema");
    MemoryContext keep = AllocSetContextCreate(TopMemoryContext, "creek snapshot", ALLOCSET_DEFAULT_SIZES);
    CreekColumnCodec *codecs = creek_prepare_codecs(run->info, keep);

    SpinLockAcquire(&snap->mutex);
    snap->approx_rows = pt.approx_rows;
    namestrcpy(&snap->schemaname, run->info.schema_name.c_str());
    namestrcpy(&snap->relname, run->info.table_name.c_str());
    SpinLockRelease(&snap->mutex);

    char at[64];
    rfc3339(at, sizeof at);
    SNAP_CXX(run->header = header_json(pt, db_name, at), "build the header");
    SNAP_CXX(run->pub->enqueue(run->subject, run->token + "/header", run->header.data(), run->header.size()),
             "queue the header");
    pump_until(true);
    if (reply[0] != '\0') {
        bool ok = false;
        SNAP_CXX(ok = run->pub->respond(reply, run->subject), "reply");
        creek_snapshot_answered(snap);
        if (!ok)
            ereport(LOG, (errmsg("creek snapshot %s could not reply to its NATS request", subject)));
    }

    char *query = psprintf("SELECT * FROM %s%s", relkind == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
                           quote_qualified_identifier(run->info.schema_name.c_str(),
                                                      run->info.table_name.c_str()));
    SPIPlanPtr plan = SPI_prepare(query, 0, nullptr);
    if (plan == nullptr)
        elog(ERROR, "creek snapshot could not prepare \"%s\": %s", query, SPI_result_code_string(SPI_result));
    Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
    MemoryContext rowcxt = AllocSetContextCreate(TopMemoryContext, "creek snapshot rows", ALLOCSET_DEFAULT_SIZES);
    int64 rows = 0;
    for (;;) {
        SPI_cursor_fetch(portal, true, 1000);
        if (SPI_processed == 0)
            break;
        SPITupleTable *tt = SPI_tuptable;
        uint64 n = SPI_processed;
        MemoryContext old = MemoryContextSwitchTo(rowcxt);
        for (uint64 i = 0; i < n; i++) {
            run->writer.clear();
            SNAP_CXX(creek_encode_record(&run->writer, run->info, codecs, run->cols, tt->tupdesc,
                                         tt->vals[i], true),
                     "encode a row");
            char id[32];
            snprintf(id, sizeof id, "%lld", (long long) ++rows);
            publish(id, run->writer.data().data(), run->writer.size());
            bool room = true;
            SNAP_CXX(room = run->pub->has_room(), "publish");
            if (!room) {
                MemoryContextSwitchTo(old);
                pump_until(false);
                set_progress(rows);
                old = MemoryContextSwitchTo(rowcxt);
            }
        }
        MemoryContextSwitchTo(old);
        MemoryContextReset(rowcxt);
        SPI_freetuptable(tt);
        SNAP_CXX(run->pub->pump(), "publish");
        set_progress(rows);
        check_cancel();
    }
    SPI_cursor_close(portal);
    pump_until(true);
    publish("eof", "EOF", 3);
    pump_until(true);

    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();

    SpinLockAcquire(&snap->mutex);
    snap->rows_sent = rows;
    snap->state = SNAP_FINISHED;
    snap->finished_at = GetCurrentTimestamp();
    SpinLockRelease(&snap->mutex);
    ereport(LOG, (errmsg("creek snapshot %s finished: %lld rows", subject, (long long) rows)));
    creek_snapshot_request_done(subject);
}

void creek_snapshot_main(Datum arg)
{
    int idx = DatumGetInt32(arg);
    memcpy(&snap_generation, MyBgworkerEntry->bgw_extra, sizeof snap_generation);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    if (creek_shared == nullptr || idx < 0 || idx >= creek_shared->nsnapshots)
        proc_exit(0);
    CreekSnapshot *s = &creek_shared->snapshots[idx];
    Oid dboid, relid;
    char reply[CREEK_REPLY_LEN];
    SpinLockAcquire(&s->mutex);
    bool mine = s->generation == snap_generation && s->state == SNAP_STARTING;
    if (mine) {
        s->state = SNAP_RUNNING;
        s->pid = MyProcPid;
        s->started_at = GetCurrentTimestamp();
    }
    dboid = s->dboid;
    relid = s->relid;
    strlcpy(reply, s->reply, sizeof reply);
    SpinLockRelease(&s->mutex);
    if (!mine)
        proc_exit(0);
    snap = s;
    before_shmem_exit(snap_exit, 0);

    BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
    pgstat_report_appname("creek snapshot");
    StartTransactionCommand();
    // in UTF-8, as consumers see it (subjects, header)
    char *db_name = MemoryContextStrdup(TopMemoryContext, creek_name_utf8(get_database_name(MyDatabaseId)));
    CommitTransactionCommand();

    PG_TRY();
    {
        run_snapshot(relid, db_name, reply);
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(TopMemoryContext);
        ErrorData *edata = CopyErrorData();
        creek_snapshot_fail(snap, edata->message);
        PG_RE_THROW();
    }
    PG_END_TRY();
    proc_exit(0);
}
