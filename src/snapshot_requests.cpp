// snapshot_requests.cpp: snapshot requests kept in creek.snapshot_requests
// (see snapshot_requests.hpp).
//
// Rule of pg.hpp: no object with a destructor lives in these frames.
#include "snapshot_requests.hpp"

#include "owner_spi.hpp"
#include "shmem.hpp"
#include "slot_recovery.hpp"
#include "snapshot_queue.hpp"

static bool swept = false;
static uint32 failures_seen = 0;   // creek_shared->snapshots_failed at the last sweep

static Oid requests_table()
{
    return creek_own_table("snapshot_requests");
}

void creek_snapshot_request_keep(const char *subject, Oid relid, const char *origin)
{
    // (a read-only transaction may request a snapshot: it is not kept then)
    if (XactReadOnly || !OidIsValid(requests_table()))
        return;
    Oid types[3] = {TEXTOID, OIDOID, TEXTOID};
    Datum values[3] = {CStringGetTextDatum(subject), ObjectIdGetDatum(relid), CStringGetTextDatum(origin)};
    creek_execute_as_owner("snapshot_requests",
                           "INSERT INTO creek.snapshot_requests (subject, relid, origin) VALUES ($1, $2, $3)", 3,
                           types, values);
}

void creek_snapshot_request_done(const char *subject)
{
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    if (OidIsValid(requests_table())) {
        Oid types[1] = {TEXTOID};
        Datum values[1] = {CStringGetTextDatum(subject)};
        creek_execute_as_owner("snapshot_requests", "DELETE FROM creek.snapshot_requests WHERE subject = $1", 1,
                               types, values);
    }
    PopActiveSnapshot();
    CommitTransactionCommand();
}

static void run_for(const char *sql, Oid relid)
{
    if (!OidIsValid(requests_table()))
        return;
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    creek_execute_as_owner("snapshot_requests", sql, 1, types, values);
}

void creek_snapshot_request_pending(Oid relid)
{
    run_for("INSERT INTO creek.snapshot_requests (relid, origin) VALUES ($1, 'slot')", relid);
}

void creek_snapshot_request_no_longer_pending(Oid relid)
{
    run_for("DELETE FROM creek.snapshot_requests WHERE relid = $1 AND subject IS NULL", relid);
}

bool creek_snapshot_requests_due()
{
    return !swept || pg_atomic_read_u32(&creek_shared->snapshots_failed) != failures_seen;
}

// A request whose snapshot shared memory does not know, made before shared
// memory was set up: the server restarted (or crashed) before it finished.
static void interrupted(const char *subject, Oid relid, const char *origin, TimestampTz requested_at)
{
    char *relname = get_rel_name(relid);
    char *nspname = relname ? get_namespace_name(get_rel_namespace(relid)) : nullptr;
    if (relname == nullptr || nspname == nullptr)
        return;   // dropped since: nothing to take
    bool again = strcmp(origin, "slot") == 0;
    char *error = psprintf("the server restarted before the snapshot finished%s",
                           again ? "; creek takes a new one" : "");
    ereport(WARNING,
            (errmsg("creek's snapshot %s of table %s was interrupted: %s", subject,
                    quote_qualified_identifier(nspname, relname), error),
             errdetail("A snapshot that does not finish never gets its EOF; consumers discard what they read of it."),
             again ? 0 : errhint("Request it again with creek.snapshot().")));
    creek_snapshot_record_failed(MyDatabaseId, relid, nspname, relname, subject, origin, requested_at, error);
    if (again) {
        creek_snapshot_request_pending(relid);
        creek_slot_recovery_add(relid);
    }
}

// The first sweep of this worker: the snapshots that an earlier worker still
// had to request after losing its slot.
static void load_pending()
{
    int rc = SPI_execute("SELECT relid FROM creek.snapshot_requests WHERE subject IS NULL ORDER BY requested_at",
                         true, 0);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "creek could not read creek.snapshot_requests: %s", SPI_result_code_string(rc));
    for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull)
            creek_slot_recovery_add(DatumGetObjectId(d));
    }
}

void creek_snapshot_requests_sweep()
{
    bool first = !swept;
    swept = true;
    failures_seen = pg_atomic_read_u32(&creek_shared->snapshots_failed);
    if (!OidIsValid(requests_table()))
        return;
    if (first)
        load_pending();
    int rc = SPI_execute("SELECT subject, relid, origin, requested_at FROM creek.snapshot_requests "
                         "WHERE subject IS NOT NULL ORDER BY requested_at", true, 0);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "creek could not read creek.snapshot_requests: %s", SPI_result_code_string(rc));
    SPITupleTable *tt = SPI_tuptable;
    uint64 n = SPI_processed;
    for (uint64 i = 0; i < n; i++) {
        bool isnull;
        char *subject = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
        Oid relid = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
        char *origin = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
        TimestampTz requested_at = DatumGetTimestampTz(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull));
        int state = creek_snapshot_state_of(MyDatabaseId, subject);
        if (state == SNAP_WAITING || state == SNAP_STARTING || state == SNAP_RUNNING || state == SNAP_RESERVED)
            continue;   // still on its way
        // not known: ended and its entry reused since, or forgotten by a restart
        if (state < 0 && requested_at < creek_shared->started_at)
            interrupted(subject, relid, origin, requested_at);
        Oid types[1] = {TEXTOID};
        Datum values[1] = {CStringGetTextDatum(subject)};
        rc = SPI_execute_with_args("DELETE FROM creek.snapshot_requests WHERE subject = $1", 1, types, values,
                                   nullptr, false, 0);
        if (rc != SPI_OK_DELETE)
            elog(ERROR, "creek could not delete from creek.snapshot_requests: %s", SPI_result_code_string(rc));
    }
}
