// snapshot_queue.cpp: the shared memory entries of snapshots (see
// snapshot_queue.hpp) and the launcher's part: starting waiting snapshots.
#include "snapshot_queue.hpp"

#include <cstdio>
#include <cstring>

#include "launcher.hpp"

const char *creek_snap_state_name(CreekSnapState s)
{
    switch (s) {
    case SNAP_FREE: return "free";
    case SNAP_RESERVED: return "requested";
    case SNAP_WAITING: return "waiting";
    case SNAP_STARTING: return "starting";
    case SNAP_RUNNING: return "running";
    case SNAP_FINISHED: return "finished";
    case SNAP_FAILED: return "failed";
    }
    return "unknown";
}

static CreekSnapshot *entries()
{
    return creek_shared->snapshots;
}

static void wake_launcher()
{
    SpinLockAcquire(&creek_shared->mutex);
    Latch *l = creek_shared->launcher_latch;
    SpinLockRelease(&creek_shared->mutex);
    if (l != nullptr)
        SetLatch(l);
}

// <YYYYMMDDHHMMSS_MS>_<4 characters of [a-z0-9]>
static void subject_suffix(char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    TimestampTz now = GetCurrentTimestamp();
    pg_time_t t = timestamptz_to_time_t(now);
    struct pg_tm *tm = pg_gmtime(&t);
    int ms = (int) ((now % USECS_PER_SEC + USECS_PER_SEC) % USECS_PER_SEC / 1000);
    char id[5];
    for (int i = 0; i < 4; i++)
        id[i] = alphabet[pg_prng_uint64(&pg_global_prng_state) % 36];
    id[4] = '\0';
    snprintf(out, len, "%04d%02d%02d%02d%02d%02d_%03d_%s", tm->tm_year + 1900, tm->tm_mon + 1,
             tm->tm_mday, tm->tm_hour, tm->tm_min, tm->tm_sec, ms, id);
}

// A free entry, or else the one that ended first; nullptr when every entry
// is busy. Under creek_shared->mutex.
static CreekSnapshot *free_entry()
{
    CreekSnapshot *best = nullptr;
    for (int i = 0; i < creek_shared->nsnapshots; i++) {
        CreekSnapshot *s = &entries()[i];
        if (s->state == SNAP_FREE)
            return s;
        if ((s->state == SNAP_FINISHED || s->state == SNAP_FAILED) &&
            (best == nullptr || s->finished_at < best->finished_at))
            best = s;
    }
    return best;
}

// What an entry is claimed with.
struct Claim {
    CreekSnapState state;
    Oid dboid, relid;
    const char *schemaname, *relname, *subject, *origin, *reply;
    TimestampTz requested_at, finished_at;
    const char *error;
};

// Fills a free (or the oldest ended) entry; false when every entry is busy.
static bool claim_entry(const Claim &c)
{
    SpinLockAcquire(&creek_shared->mutex);   // serializes claims
    CreekSnapshot *s = free_entry();
    if (s != nullptr) {
        SpinLockAcquire(&s->mutex);
        s->state = c.state;
        s->generation++;
        s->dboid = c.dboid;
        s->relid = c.relid;
        s->reserved_by = MyProcPid;
        s->pid = 0;
        s->cancel_requested = false;
        strlcpy(s->origin, c.origin, sizeof s->origin);
        namestrcpy(&s->schemaname, c.schemaname);
        namestrcpy(&s->relname, c.relname);
        strlcpy(s->subject, c.subject, sizeof s->subject);
        strlcpy(s->reply, c.reply ? c.reply : "", sizeof s->reply);
        s->rows_sent = 0;
        s->approx_rows = -1;
        s->requested_at = c.requested_at;
        s->started_at = 0;
        s->finished_at = c.finished_at;
        strlcpy(s->error, c.error ? c.error : "", sizeof s->error);
        SpinLockRelease(&s->mutex);
    }
    SpinLockRelease(&creek_shared->mutex);
    return s != nullptr;
}

static bool claim(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                  const char *subject_prefix, const char *origin, const char *reply,
                  CreekSnapState state, char *subject_out, size_t subject_len)
{
    char suffix[64];
    subject_suffix(suffix, sizeof suffix);
    char subject[CREEK_SUBJECT_LEN];
    snprintf(subject, sizeof subject, "%s.%s", subject_prefix, suffix);
    if (!claim_entry({state, dboid, relid, schemaname, relname, subject, origin, reply, GetCurrentTimestamp(), 0,
                      nullptr}))
        return false;
    strlcpy(subject_out, subject, subject_len);
    return true;
}

// Reservations this backend made in its current transaction (so that other
// transactions' commits do not scan the entries).
static int my_reservations = 0;

bool creek_snapshot_reserve(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                            const char *subject_prefix, const char *origin, const char *reply,
                            char *subject_out, size_t subject_len)
{
    my_reservations++;
    return claim(dboid, relid, schemaname, relname, subject_prefix, origin, reply, SNAP_RESERVED,
                 subject_out, subject_len);
}

bool creek_snapshot_enqueue_now(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                                const char *subject_prefix, const char *origin, const char *reply,
                                char *subject_out, size_t subject_len)
{
    bool ok = claim(dboid, relid, schemaname, relname, subject_prefix, origin, reply, SNAP_WAITING,
                    subject_out, subject_len);
    if (ok)
        wake_launcher();
    return ok;
}

void creek_snapshot_xact_end(bool commit)
{
    if (creek_shared == nullptr || my_reservations == 0)
        return;
    my_reservations = 0;
    bool queued = false;
    for (int i = 0; i < creek_shared->nsnapshots; i++) {
        CreekSnapshot *s = &entries()[i];
        SpinLockAcquire(&s->mutex);
        if (s->state == SNAP_RESERVED && s->reserved_by == MyProcPid) {
            if (commit) {
                s->state = SNAP_WAITING;
                s->requested_at = GetCurrentTimestamp();
                queued = true;
            } else {
                s->state = SNAP_FREE;
            }
        }
        SpinLockRelease(&s->mutex);
    }
    if (queued)
        wake_launcher();
}

int creek_snapshot_state_of(Oid dboid, const char *subject)
{
    int state = -1;
    for (int i = 0; i < creek_shared->nsnapshots && state < 0; i++) {
        CreekSnapshot *s = &entries()[i];
        SpinLockAcquire(&s->mutex);
        if (s->state != SNAP_FREE && s->dboid == dboid && strcmp(s->subject, subject) == 0)
            state = s->state;
        SpinLockRelease(&s->mutex);
    }
    return state;
}

void creek_snapshot_record_failed(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                                  const char *subject, const char *origin, TimestampTz requested_at,
                                  const char *error)
{
    (void) claim_entry({SNAP_FAILED, dboid, relid, schemaname, relname, subject, origin, nullptr, requested_at,
                        GetCurrentTimestamp(), error});
}

bool creek_snapshot_cancel(const char *subject)
{
    bool found = false;
    int pid = 0;
    for (int i = 0; i < creek_shared->nsnapshots && !found; i++) {
        CreekSnapshot *s = &entries()[i];
        SpinLockAcquire(&s->mutex);
        if (s->dboid == MyDatabaseId && strcmp(s->subject, subject) == 0) {
            if (s->state == SNAP_WAITING || s->state == SNAP_RESERVED) {
                s->state = SNAP_FAILED;
                s->finished_at = GetCurrentTimestamp();
                strlcpy(s->error, "cancelled by creek.cancel_snapshot() before it started", sizeof s->error);
                pg_atomic_fetch_add_u32(&creek_shared->snapshots_failed, 1);
                found = true;
            } else if (s->state == SNAP_STARTING || s->state == SNAP_RUNNING) {
                s->cancel_requested = true;
                pid = s->pid;
                found = true;
            }
        }
        SpinLockRelease(&s->mutex);
    }
    if (pid != 0)
        kill(pid, SIGUSR1);   // the worker's latch: it checks cancel_requested
    return found;
}

void creek_snapshot_fail(CreekSnapshot *s, const char *error)
{
    SpinLockAcquire(&s->mutex);
    if (s->state == SNAP_STARTING || s->state == SNAP_RUNNING) {
        s->state = SNAP_FAILED;
        s->finished_at = GetCurrentTimestamp();
        strlcpy(s->error, error, sizeof s->error);
        pg_atomic_fetch_add_u32(&creek_shared->snapshots_failed, 1);
    }
    SpinLockRelease(&s->mutex);
    wake_launcher();
}

void creek_snapshot_answered(CreekSnapshot *s)
{
    SpinLockAcquire(&s->mutex);
    s->reply[0] = '\0';
    SpinLockRelease(&s->mutex);
}

bool creek_snapshot_take_unanswered(Oid dboid, char *reply, size_t reply_len, char *error,
                                    size_t error_len)
{
    for (int i = 0; i < creek_shared->nsnapshots; i++) {
        CreekSnapshot *s = &entries()[i];
        bool found = false;
        SpinLockAcquire(&s->mutex);
        if (s->state == SNAP_FAILED && s->dboid == dboid && s->reply[0] != '\0') {
            strlcpy(reply, s->reply, reply_len);
            snprintf(error, error_len, "snapshot %s failed: %s", s->subject, s->error);
            s->reply[0] = '\0';
            found = true;
        }
        SpinLockRelease(&s->mutex);
        if (found)
            return true;
    }
    return false;
}

// The launcher's handles of the workers it started, by entry.
static BackgroundWorkerHandle *handles[CREEK_MAX_SNAPSHOTS];
static uint32 handle_generation[CREEK_MAX_SNAPSHOTS];

// A snapshot taken because the slot was lost ("slot") waits until its
// database's streaming worker reaches NATS: it would fail before, and its
// request would be gone (the slot is there again, nothing asks anew).
static bool may_start(CreekSnapshot *s)
{
    if (strcmp(s->origin, "slot") != 0)
        return true;
    bool connected = false;
    SpinLockAcquire(&creek_shared->mutex);
    CreekDbEntry *e = creek_find_db(s->dboid);
    SpinLockRelease(&creek_shared->mutex);
    if (e != nullptr) {
        SpinLockAcquire(&e->mutex);
        connected = e->in_use && e->dboid == s->dboid && strcmp(e->nats_state, "connected") == 0;
        SpinLockRelease(&e->mutex);
    }
    return connected;
}

bool creek_snapshot_launch_waiting(int max_running)
{
    bool held = false;
    int running = 0;
    for (int i = 0; i < creek_shared->nsnapshots; i++) {
        CreekSnapshot *s = &entries()[i];
        SpinLockAcquire(&s->mutex);
        CreekSnapState st = s->state;
        uint32 gen = s->generation;
        SpinLockRelease(&s->mutex);
        if (st != SNAP_STARTING && st != SNAP_RUNNING)
            continue;
        pid_t pid;
        if (handles[i] != nullptr && handle_generation[i] == gen &&
            GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED) {
            creek_snapshot_fail(s, "the snapshot worker exited unexpectedly");
            continue;
        }
        running++;
    }
    while (running < max_running) {
        CreekSnapshot *next = nullptr;
        int idx = -1;
        for (int i = 0; i < creek_shared->nsnapshots; i++) {
            CreekSnapshot *s = &entries()[i];
            if (s->state != SNAP_WAITING)
                continue;
            if (!may_start(s)) {
                held = true;
                continue;
            }
            if (next == nullptr || s->requested_at < next->requested_at) {
                next = s;
                idx = i;
            }
        }
        if (next == nullptr)
            return held;
        SpinLockAcquire(&next->mutex);
        bool still = next->state == SNAP_WAITING;
        uint32 gen = next->generation;
        Oid dboid = next->dboid;
        if (still)
            next->state = SNAP_STARTING;
        SpinLockRelease(&next->mutex);
        if (!still)
            continue;
        BackgroundWorkerHandle *h = creek_start_snapshot_worker(dboid, idx, gen);
        if (h == nullptr) {
            // no free background worker slot: try again later
            SpinLockAcquire(&next->mutex);
            if (next->state == SNAP_STARTING && next->generation == gen)
                next->state = SNAP_WAITING;
            SpinLockRelease(&next->mutex);
            return held;
        }
        handles[idx] = h;
        handle_generation[idx] = gen;
        running++;
    }
    return held;
}
