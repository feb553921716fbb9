// shmem.cpp: shared memory layout and the accessors of creek's status entries.
#include "shmem.hpp"
#include "settings.hpp"
#include "snapshot_queue.hpp"

#include <cstring>

CreekShared *creek_shared = nullptr;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

static Size creek_dbs_size()
{
    return MAXALIGN(add_size(offsetof(CreekShared, dbs),
                             mul_size(sizeof(CreekDbEntry), creek_max_databases)));
}

static Size creek_tables_end()
{
    return MAXALIGN(add_size(creek_dbs_size(), mul_size(sizeof(CreekTableStat), creek_max_tables)));
}

static Size creek_shmem_size()
{
    return add_size(creek_tables_end(), mul_size(sizeof(CreekSnapshot), CREEK_MAX_SNAPSHOTS));
}

static void creek_shmem_request()
{
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(creek_shmem_size());
}

static void creek_shmem_startup()
{
    bool found;
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    creek_shared = static_cast<CreekShared *>(ShmemInitStruct("creek", creek_shmem_size(), &found));
    if (!found) {
        memset(creek_shared, 0, creek_shmem_size());
        SpinLockInit(&creek_shared->mutex);
        creek_shared->started_at = GetCurrentTimestamp();
        pg_atomic_init_u32(&creek_shared->snapshots_failed, 0);
        creek_shared->ndbs = creek_max_databases;
        creek_shared->ntables = creek_max_tables;
        creek_shared->tables = (CreekTableStat *) ((char *) creek_shared + creek_dbs_size());
        creek_shared->nsnapshots = CREEK_MAX_SNAPSHOTS;
        creek_shared->snapshots = (CreekSnapshot *) ((char *) creek_shared + creek_tables_end());
        for (int i = 0; i < CREEK_MAX_SNAPSHOTS; i++)
            SpinLockInit(&creek_shared->snapshots[i].mutex);
        for (int i = 0; i < creek_shared->ntables; i++) {
            CreekTableStat *t = &creek_shared->tables[i];
            SpinLockInit(&t->mutex);
            pg_atomic_init_u64(&t->inserts, 0);
            pg_atomic_init_u64(&t->updates, 0);
            pg_atomic_init_u64(&t->deletes, 0);
            pg_atomic_init_u64(&t->truncates, 0);
            pg_atomic_init_u64(&t->bytes, 0);
            pg_atomic_init_u64(&t->last_lsn, 0);
            pg_atomic_init_u64(&t->last_change_at, 0);
        }
        for (int i = 0; i < creek_shared->ndbs; i++) {
            CreekDbEntry *e = &creek_shared->dbs[i];
            SpinLockInit(&e->mutex);
            pg_atomic_init_u64(&e->last_decoded_lsn, 0);
            pg_atomic_init_u64(&e->confirmed_lsn, 0);
            pg_atomic_init_u64(&e->messages, 0);
            pg_atomic_init_u64(&e->bytes, 0);
            pg_atomic_init_u64(&e->in_flight, 0);
            pg_atomic_init_u64(&e->last_acked_commit_time, 0);
            pg_atomic_init_u32(&e->reset_requested, 0);
            pg_atomic_init_u64(&e->stats_reset, 0);
            pg_atomic_init_u64(&e->spooled_txns, 0);
            pg_atomic_init_u64(&e->spooled_bytes, 0);
        }
    }
    LWLockRelease(AddinShmemInitLock);
}

void creek_shmem_install_hooks()
{
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = creek_shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = creek_shmem_startup;
}

void creek_require_loaded()
{
    if (creek_shared == nullptr)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("creek is not loaded"),
                 errdetail("creek runs its workers only when loaded at server start."),
                 errhint("Add creek to shared_preload_libraries in postgresql.conf and restart the server.")));
}

CreekDbEntry *creek_find_db(Oid dboid)
{
    for (int i = 0; i < creek_shared->ndbs; i++) {
        CreekDbEntry *e = &creek_shared->dbs[i];
        if (e->in_use && e->dboid == dboid)
            return e;
    }
    return nullptr;
}

CreekDbEntry *creek_claim_db(Oid dboid)
{
    CreekDbEntry *result = nullptr;
    SpinLockAcquire(&creek_shared->mutex);
    if (creek_find_db(dboid) == nullptr) {
        // Prefer this database's previous entry (it keeps the last error), then a
        // never used one, then any free one.
        for (int pass = 0; pass < 3 && result == nullptr; pass++) {
            for (int i = 0; i < creek_shared->ndbs; i++) {
                CreekDbEntry *e = &creek_shared->dbs[i];
                if (e->in_use)
                    continue;
                if ((pass == 0 && e->dboid == dboid) || (pass == 1 && e->dboid == InvalidOid) ||
                    pass == 2) {
                    result = e;
                    break;
                }
            }
        }
        if (result != nullptr) {
            CreekDbEntry *e = result;
            bool same_db = e->dboid == dboid;
            SpinLockAcquire(&e->mutex);
            e->in_use = true;
            e->dboid = dboid;
            e->pid = MyProcPid;
            e->latch = MyLatch;
            strlcpy(e->state, "starting", sizeof(e->state));
            strlcpy(e->nats_state, "disconnected", sizeof(e->nats_state));
            e->slot_name[0] = '\0';
            if (!same_db) {
                e->last_error[0] = '\0';
                e->last_error_at = 0;
                e->slot_lost_at = 0;
                e->slot_lost_lsn = InvalidXLogRecPtr;
            }
            e->started_at = GetCurrentTimestamp();
            e->drop_requested = false;
            e->exit_requested = false;
            SpinLockRelease(&e->mutex);
            pg_atomic_write_u64(&e->last_decoded_lsn, 0);
            pg_atomic_write_u64(&e->confirmed_lsn, 0);
            pg_atomic_write_u64(&e->messages, 0);
            pg_atomic_write_u64(&e->bytes, 0);
            pg_atomic_write_u64(&e->in_flight, 0);
            pg_atomic_write_u64(&e->last_acked_commit_time, 0);
            pg_atomic_write_u64(&e->spooled_txns, 0);
            pg_atomic_write_u64(&e->spooled_bytes, 0);
        }
    }
    SpinLockRelease(&creek_shared->mutex);
    return result;
}

void creek_release_db(CreekDbEntry *e, bool forget)
{
    SpinLockAcquire(&creek_shared->mutex);
    SpinLockAcquire(&e->mutex);
    e->in_use = false;
    e->pid = 0;
    e->latch = nullptr;
    strlcpy(e->state, "restarting", sizeof(e->state));
    strlcpy(e->nats_state, "disconnected", sizeof(e->nats_state));
    pg_atomic_write_u64(&e->in_flight, 0);
    pg_atomic_write_u64(&e->spooled_txns, 0);    // the spools end with the worker
    pg_atomic_write_u64(&e->spooled_bytes, 0);
    if (forget)
        e->dboid = InvalidOid;
    SpinLockRelease(&e->mutex);
    SpinLockRelease(&creek_shared->mutex);
}

void creek_forget_db(Oid dboid)
{
    SpinLockAcquire(&creek_shared->mutex);
    for (int i = 0; i < creek_shared->ndbs; i++) {
        CreekDbEntry *e = &creek_shared->dbs[i];
        SpinLockAcquire(&e->mutex);
        if (!e->in_use && e->dboid == dboid)
            e->dboid = InvalidOid;
        SpinLockRelease(&e->mutex);
    }
    SpinLockRelease(&creek_shared->mutex);
}

// Where dboid is in the ring of dropped databases, or -1 (caller holds the mutex).
static int dropped_index(Oid dboid)
{
    int n = (int) Min(creek_shared->ndropped, (uint32) CREEK_MAX_DROPPED);
    for (int i = 0; i < n; i++)
        if (creek_shared->dropped[i] == dboid)
            return i;
    return -1;
}

void creek_mark_db_dropped(Oid dboid)
{
    SpinLockAcquire(&creek_shared->mutex);
    if (dropped_index(dboid) < 0)   // (each oid at most once in the ring)
        creek_shared->dropped[creek_shared->ndropped++ % CREEK_MAX_DROPPED] = dboid;
    SpinLockRelease(&creek_shared->mutex);
}

bool creek_db_dropped(Oid dboid)
{
    SpinLockAcquire(&creek_shared->mutex);
    bool found = dropped_index(dboid) >= 0;
    SpinLockRelease(&creek_shared->mutex);
    return found;
}

void creek_set_state(CreekDbEntry *e, const char *state)
{
    SpinLockAcquire(&e->mutex);
    strlcpy(e->state, state, sizeof(e->state));
    SpinLockRelease(&e->mutex);
}

void creek_set_nats_state(CreekDbEntry *e, const char *state)
{
    SpinLockAcquire(&e->mutex);
    strlcpy(e->nats_state, state, sizeof(e->nats_state));
    SpinLockRelease(&e->mutex);
}

void creek_set_error(CreekDbEntry *e, const char *msg)
{
    TimestampTz now = GetCurrentTimestamp();
    SpinLockAcquire(&e->mutex);
    strlcpy(e->last_error, msg, sizeof(e->last_error));
    e->last_error_at = now;
    SpinLockRelease(&e->mutex);
}

static void zero_table_stat(CreekTableStat *t)
{
    pg_atomic_write_u64(&t->inserts, 0);
    pg_atomic_write_u64(&t->updates, 0);
    pg_atomic_write_u64(&t->deletes, 0);
    pg_atomic_write_u64(&t->truncates, 0);
    pg_atomic_write_u64(&t->bytes, 0);
    pg_atomic_write_u64(&t->last_lsn, 0);
    pg_atomic_write_u64(&t->last_change_at, 0);
}

CreekTableStat *creek_table_stat(Oid dboid, Oid relid)
{
    CreekTableStat *found = nullptr, *free_one = nullptr;
    SpinLockAcquire(&creek_shared->mutex);
    for (int i = 0; i < creek_shared->ntables && found == nullptr; i++) {
        CreekTableStat *t = &creek_shared->tables[i];
        if (t->in_use && t->dboid == dboid && t->relid == relid)
            found = t;
        else if (!t->in_use && free_one == nullptr)
            free_one = t;
    }
    if (found == nullptr && free_one != nullptr) {
        found = free_one;
        SpinLockAcquire(&found->mutex);
        found->in_use = true;
        found->dboid = dboid;
        found->relid = relid;
        memset(&found->schemaname, 0, sizeof(NameData));
        memset(&found->relname, 0, sizeof(NameData));
        found->fingerprint[0] = '\0';
        SpinLockRelease(&found->mutex);
        zero_table_stat(found);
    }
    SpinLockRelease(&creek_shared->mutex);
    return found;
}

void creek_reset_table_stats(Oid dboid)
{
    for (int i = 0; i < creek_shared->ntables; i++) {
        CreekTableStat *t = &creek_shared->tables[i];
        if (t->in_use && t->dboid == dboid)
            zero_table_stat(t);
    }
}

void creek_forget_table_stats(Oid dboid)
{
    SpinLockAcquire(&creek_shared->mutex);
    for (int i = 0; i < creek_shared->ntables; i++) {
        CreekTableStat *t = &creek_shared->tables[i];
        if (t->in_use && t->dboid == dboid)
            t->in_use = false;
    }
    SpinLockRelease(&creek_shared->mutex);
}

bool creek_request_launch(Oid dboid)
{
    bool queued = false;
    Latch *latch;
    SpinLockAcquire(&creek_shared->mutex);
    for (int i = 0; i < creek_shared->nrequests; i++)
        if (creek_shared->requests[i] == dboid)
            queued = true;
    if (!queued && creek_shared->nrequests < CREEK_MAX_REQUESTS) {
        creek_shared->requests[creek_shared->nrequests++] = dboid;
        queued = true;
    }
    // (a database created later with a dropped one's oid, after oid wraparound)
    int d = dropped_index(dboid);
    if (d >= 0)
        creek_shared->dropped[d] = InvalidOid;
    latch = creek_shared->launcher_latch;
    SpinLockRelease(&creek_shared->mutex);
    if (latch)
        SetLatch(latch);
    return queued;
}

int creek_take_requests(Oid *out, int max)
{
    SpinLockAcquire(&creek_shared->mutex);
    int n = Min(max, creek_shared->nrequests);
    memcpy(out, creek_shared->requests, n * sizeof(Oid));
    memmove(creek_shared->requests, creek_shared->requests + n,
            (creek_shared->nrequests - n) * sizeof(Oid));
    creek_shared->nrequests -= n;
    SpinLockRelease(&creek_shared->mutex);
    return n;
}
