// slot_recovery.cpp: a lost replication slot (see slot_recovery.hpp).
//
// Rule of pg.hpp: no object with a destructor lives in these frames.
#include "slot_recovery.hpp"

#include "owner_spi.hpp"
#include "settings.hpp"
#include "slot.hpp"
#include "snapshot_requests.hpp"
#include "snapshot_sql.hpp"

// Published tables still waiting for their snapshot request (TopMemoryContext).
static List *pending = NIL;
static TimestampTz last_try = 0;

void creek_drop_invalidated_slot(CreekDbEntry *entry, const char *slot_name)
{
    if (!creek_slot_invalidated(slot_name))
        return;
    ereport(WARNING,
            (errmsg("creek's replication slot \"%s\" was invalidated: dropping it to create it anew", slot_name),
             errdetail("Postgres removed WAL that the slot still needed (max_slot_wal_keep_size), so the "
                       "changes in that WAL can no longer be decoded."),
             errhint("Raise max_slot_wal_keep_size, or restore NATS sooner, so that the slot is not "
                     "invalidated again.")));
    char *msg = psprintf("replication slot \"%s\" was invalidated by Postgres (max_slot_wal_keep_size) "
                         "and is created anew", slot_name);
    creek_set_error(entry, msg);
    pfree(msg);
    creek_slot_drop(nullptr, slot_name);
}

// Requests a snapshot of relid in a subtransaction. false: every snapshot
// entry is busy (try again later); true: requested, or failed for good
// (WARNING).
static bool request_one(Oid relid)
{
    MemoryContext cxt = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    bool done = true;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(cxt);
    PG_TRY();
    {
        // (a table dropped meanwhile has left creek.tables: nothing to catch up on)
        if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid))) {
            char *subject = creek_request_snapshot(relid, "slot");
            ereport(LOG, (errmsg("creek requested snapshot %s of table %s after its slot was lost", subject,
                                 get_rel_name(relid))));
        }
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(cxt);
        CurrentResourceOwner = owner;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(cxt);
        ErrorData *edata = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(cxt);
        CurrentResourceOwner = owner;
        if (edata->sqlerrcode == ERRCODE_CONFIGURATION_LIMIT_EXCEEDED)
            done = false;
        else
            ereport(WARNING, (errmsg("creek could not request a snapshot of table with OID %u after its slot "
                                     "was lost: %s", relid, edata->message),
                              errhint("Take one with creek.snapshot().")));
        FreeErrorData(edata);
    }
    PG_END_TRY();
    // requested, or given up (the WARNING above): no longer kept for a later worker
    if (done)
        creek_snapshot_request_no_longer_pending(relid);
    return done;
}

void creek_slot_recovery_request_pending()
{
    last_try = GetCurrentTimestamp();
    List *left = NIL;
    ListCell *lc;
    foreach (lc, pending) {
        Oid relid = lfirst_oid(lc);
        if (left != NIL || !request_one(relid)) {
            MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
            left = lappend_oid(left, relid);
            MemoryContextSwitchTo(old);
        }
    }
    list_free(pending);
    pending = left;
}

void creek_slot_recovery_add(Oid relid)
{
    if (list_member_oid(pending, relid))
        return;
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    pending = lappend_oid(pending, relid);
    MemoryContextSwitchTo(old);
}

bool creek_slot_recovery_due()
{
    return pending != NIL && TimestampDifferenceExceeds(last_try, GetCurrentTimestamp(), 1000);
}

// In creek.slot_losses (0.8.0), inside the caller's transaction.
static void record_loss(TimestampTz at, XLogRecPtr start, int tables)
{
    if (!OidIsValid(creek_own_table("slot_losses")))
        return;
    Oid types[3] = {TIMESTAMPTZOID, PG_LSNOID, INT4OID};
    Datum values[3] = {TimestampTzGetDatum(at), LSNGetDatum(start), Int32GetDatum(tables)};
    int rc = SPI_execute_with_args("INSERT INTO creek.slot_losses (lost_at, slot_lsn, tables) VALUES ($1, $2, $3)",
                                   3, types, values, nullptr, false, 0);
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "creek could not record the slot loss: %s", SPI_result_code_string(rc));
}

void creek_slot_recovery_show_last(CreekDbEntry *entry)
{
    MemoryContext cxt = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    StartTransactionCommand();
    if (OidIsValid(creek_own_table("slot_losses"))) {
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        int rc = SPI_execute("SELECT lost_at, slot_lsn FROM creek.slot_losses ORDER BY lost_at DESC LIMIT 1", true, 1);
        if (rc != SPI_OK_SELECT)
            elog(ERROR, "creek could not read creek.slot_losses: %s", SPI_result_code_string(rc));
        if (SPI_processed == 1) {
            bool null1, null2;
            TimestampTz at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null1));
            XLogRecPtr lsn = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null2));
            SpinLockAcquire(&entry->mutex);
            if (entry->slot_lost_at < at) {
                entry->slot_lost_at = at;
                entry->slot_lost_lsn = lsn;
            }
            SpinLockRelease(&entry->mutex);
        }
        SPI_finish();
        PopActiveSnapshot();
    }
    CommitTransactionCommand();
    MemoryContextSwitchTo(cxt);
    CurrentResourceOwner = owner;
}

void creek_slot_recovery_start(CreekDbEntry *entry, const char *slot_name, TransactionId next_xid)
{
    MemoryContext cxt = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    // age() orders transaction ids across wraparound; a frozen row is the oldest
    Oid types[1] = {XIDOID};
    Datum values[1] = {TransactionIdGetDatum(next_xid)};
    int rc = SPI_execute_with_args("SELECT relid::oid FROM creek.tables "
                                   "WHERE pg_catalog.age(xmin) > pg_catalog.age($1) ORDER BY relid::text",
                                   1, types, values, nullptr, true, 0);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "creek could not read creek.tables: SPI error %d", rc);
    List *lost = NIL;
    for (uint64 i = 0; i < SPI_processed; i++) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull) {
            MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
            lost = lappend_oid(lost, DatumGetObjectId(d));
            MemoryContextSwitchTo(old);
        }
    }
    if (lost != NIL) {
        XLogRecPtr start = creek_slot_confirmed_lsn(slot_name);
        int n = list_length(lost);
        char *msg = psprintf("replication slot \"%s\" was lost and created anew at %X/%X while %d table%s "
                             "published: changes committed before it were not published%s",
                             slot_name, LSN_FORMAT_ARGS(start), n, n == 1 ? " was" : "s were",
                             creek_snapshot_on_slot_loss ? "; a snapshot of each is taken" : "");
        ereport(WARNING,
                (errmsg("creek's %s", msg),
                 errdetail("A slot goes missing after a failover to a standby, pg_upgrade, a restore or "
                           "pg_drop_replication_slot(), and is created anew after Postgres invalidated it."),
                 creek_snapshot_on_slot_loss
                     ? errhint("Consumers catch up by merging each snapshot with the changes that follow it "
                               "(README, \"Snapshots\").")
                     : errhint("Take a snapshot of each published table with creek.snapshot(), or turn "
                               "creek.snapshot_on_slot_loss on.")));
        creek_set_error(entry, msg);
        pfree(msg);
        TimestampTz now = GetCurrentTimestamp();
        record_loss(now, start, n);
        SpinLockAcquire(&entry->mutex);
        entry->slot_lost_at = now;
        entry->slot_lost_lsn = start;
        SpinLockRelease(&entry->mutex);
        if (creek_snapshot_on_slot_loss) {
            ListCell *lc;
            foreach (lc, lost)
                creek_snapshot_request_pending(lfirst_oid(lc));
            pending = lost;
            creek_slot_recovery_request_pending();
        } else {
            list_free(lost);
        }
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(cxt);
    CurrentResourceOwner = owner;
}
