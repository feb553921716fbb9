// shmem.cpp: shared memory layout and the accessors of creek's status entries.
#include "shmem.hpp"
#include "settings.hpp"

#include <cstring>

CreekShared *creek_shared = nullptr;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

static Size creek_shmem_size()
{
    return add_size(offsetof(CreekShared, dbs),
                    mul_size(sizeof(CreekDbEntry), creek_max_databases));
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
        creek_shared->ndbs = creek_max_databases;
        for (int i = 0; i < creek_shared->ndbs; i++) {
            CreekDbEntry *e = &creek_shared->dbs[i];
            SpinLockInit(&e->mutex);
            pg_atomic_init_u64(&e->last_decoded_lsn, 0);
            pg_atomic_init_u64(&e->confirmed_lsn, 0);
            pg_atomic_init_u64(&e->messages, 0);
            pg_atomic_init_u64(&e->bytes, 0);
            pg_atomic_init_u64(&e->in_flight, 0);
            pg_atomic_init_u64(&e->last_acked_commit_time, 0);
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
    if (forget)
        e->dboid = InvalidOid;
    SpinLockRelease(&e->mutex);
    SpinLockRelease(&creek_shared->mutex);
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
