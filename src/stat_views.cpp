// stat_views.cpp: the set-returning functions behind creek's status views, and
// creek._launch().
#include "pg.hpp"

#include "shmem.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(creek_stat);
PG_FUNCTION_INFO_V1(creek_launch);
PG_FUNCTION_INFO_V1(creek_stat_tables);
PG_FUNCTION_INFO_V1(creek_reset_stats);
}

extern "C" Datum creek_stat(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    creek_require_loaded();
    InitMaterializedSRF(fcinfo, 0);

    for (int i = 0; i < creek_shared->ndbs; i++) {
        CreekDbEntry *e = &creek_shared->dbs[i];
        CreekDbEntry copy;
        SpinLockAcquire(&e->mutex);
        memcpy(&copy, e, offsetof(CreekDbEntry, last_decoded_lsn));
        SpinLockRelease(&e->mutex);
        if (copy.dboid == InvalidOid)
            continue;
        // (a 0.2.0 install declares the first 16 columns, 0.3.0 to 0.6.0 the
        // first 18: the rest is not stored)
        Datum values[20];
        bool nulls[20] = {false};
        char *datname = get_database_name(copy.dboid);
        if (datname == nullptr && !copy.in_use)
            continue;   // the entry of a dropped database that no worker holds
        values[0] = ObjectIdGetDatum(copy.dboid);
        values[1] = datname ? DirectFunctionCall1(namein, CStringGetDatum(datname)) : (Datum) 0;
        nulls[1] = datname == nullptr;
        values[2] = Int32GetDatum(copy.pid);
        nulls[2] = copy.pid == 0;
        values[3] = CStringGetTextDatum(copy.state);
        values[4] = CStringGetTextDatum(copy.nats_state);
        values[5] = DirectFunctionCall1(namein, CStringGetDatum(copy.slot_name));
        nulls[5] = copy.slot_name[0] == '\0';
        uint64 decoded = pg_atomic_read_u64(&e->last_decoded_lsn);
        uint64 confirmed = pg_atomic_read_u64(&e->confirmed_lsn);
        values[6] = LSNGetDatum(decoded);
        nulls[6] = decoded == 0;
        values[7] = LSNGetDatum(confirmed);
        nulls[7] = confirmed == 0;
        values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&e->messages));
        values[9] = Int64GetDatum((int64) pg_atomic_read_u64(&e->bytes));
        values[10] = Int64GetDatum((int64) pg_atomic_read_u64(&e->in_flight));
        values[11] = CStringGetTextDatum(copy.last_error);
        nulls[11] = copy.last_error[0] == '\0';
        values[12] = TimestampTzGetDatum(copy.last_error_at);
        nulls[12] = copy.last_error_at == 0;
        values[13] = TimestampTzGetDatum(copy.started_at);
        nulls[13] = copy.started_at == 0;
        TimestampTz acked_at = (TimestampTz) pg_atomic_read_u64(&e->last_acked_commit_time);
        values[14] = TimestampTzGetDatum(acked_at);
        nulls[14] = acked_at == 0;
        TimestampTz reset_at = (TimestampTz) pg_atomic_read_u64(&e->stats_reset);
        values[15] = TimestampTzGetDatum(reset_at);
        nulls[15] = reset_at == 0;
        values[16] = Int64GetDatum((int64) pg_atomic_read_u64(&e->spooled_txns));
        values[17] = Int64GetDatum((int64) pg_atomic_read_u64(&e->spooled_bytes));
        values[18] = TimestampTzGetDatum(copy.slot_lost_at);
        nulls[18] = copy.slot_lost_at == 0;
        values[19] = LSNGetDatum(copy.slot_lost_lsn);
        nulls[19] = copy.slot_lost_lsn == InvalidXLogRecPtr;
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}

extern "C" Datum creek_launch(PG_FUNCTION_ARGS)
{
    creek_require_loaded();
    if (!creek_request_launch(MyDatabaseId))
        ereport(WARNING, (errmsg("creek could not queue a request to start this database's worker"),
                          errhint("The launcher starts it at the next server start.")));
    PG_RETURN_VOID();
}

extern "C" Datum creek_stat_tables(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    creek_require_loaded();
    InitMaterializedSRF(fcinfo, 0);
    for (int i = 0; i < creek_shared->ntables; i++) {
        CreekTableStat *t = &creek_shared->tables[i];
        NameData schemaname, relname;
        char fingerprint[16];
        bool in_use;
        Oid dboid, relid;
        SpinLockAcquire(&t->mutex);
        in_use = t->in_use;
        dboid = t->dboid;
        relid = t->relid;
        schemaname = t->schemaname;
        relname = t->relname;
        memcpy(fingerprint, t->fingerprint, sizeof fingerprint);
        SpinLockRelease(&t->mutex);
        if (!in_use)
            continue;
        fingerprint[sizeof fingerprint - 1] = '\0';
        Datum values[13];
        bool nulls[13] = {false};
        char *datname = get_database_name(dboid);
        values[0] = ObjectIdGetDatum(dboid);
        values[1] = datname ? DirectFunctionCall1(namein, CStringGetDatum(datname)) : (Datum) 0;
        nulls[1] = datname == nullptr;
        values[2] = ObjectIdGetDatum(relid);
        values[3] = NameGetDatum(&schemaname);
        values[4] = NameGetDatum(&relname);
        values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&t->inserts));
        values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&t->updates));
        values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&t->deletes));
        values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&t->truncates));
        values[9] = Int64GetDatum((int64) pg_atomic_read_u64(&t->bytes));
        uint64 lsn = pg_atomic_read_u64(&t->last_lsn);
        values[10] = LSNGetDatum(lsn);
        nulls[10] = lsn == 0;
        TimestampTz at = (TimestampTz) pg_atomic_read_u64(&t->last_change_at);
        values[11] = TimestampTzGetDatum(at);
        nulls[11] = at == 0;
        values[12] = CStringGetTextDatum(fingerprint);
        nulls[12] = fingerprint[0] == '\0';
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}

extern "C" Datum creek_reset_stats(PG_FUNCTION_ARGS)
{
    creek_require_loaded();
    CreekDbEntry *e;
    SpinLockAcquire(&creek_shared->mutex);
    e = creek_find_db(MyDatabaseId);
    if (e != nullptr) {
        pg_atomic_write_u32(&e->reset_requested, 1);
        if (e->latch)
            SetLatch(e->latch);
    }
    SpinLockRelease(&creek_shared->mutex);
    if (e == nullptr)
        creek_reset_table_stats(MyDatabaseId);
    PG_RETURN_VOID();
}
