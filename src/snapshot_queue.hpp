// snapshot_queue.hpp: snapshots in shared memory: requested (SQL or NATS),
// waiting for a free worker, running, finished or failed. What
// creek.pg_stat_creek_snapshots shows. The launcher starts waiting ones,
// at most creek.max_snapshots at once.
#pragma once

#include "pg.hpp"
#include "shmem.hpp"

#define CREEK_MAX_SNAPSHOTS 64      // entries kept (finished ones are reused, oldest first)
#define CREEK_SUBJECT_LEN 512
#define CREEK_REPLY_LEN 256

typedef enum CreekSnapState {
    SNAP_FREE = 0,
    SNAP_RESERVED,     // requested in a transaction that has not committed yet
    SNAP_WAITING,      // queued for a worker
    SNAP_STARTING,     // a worker was registered
    SNAP_RUNNING,
    SNAP_FINISHED,
    SNAP_FAILED
} CreekSnapState;

typedef struct CreekSnapshot {
    slock_t mutex;
    CreekSnapState state;
    uint32 generation;          // changes each time the entry is reused
    Oid dboid;
    Oid relid;
    int reserved_by;            // SNAP_RESERVED: the backend's pid
    int pid;                    // the worker (0 when none)
    bool cancel_requested;
    char origin[8];             // "sql" or "nats"
    NameData schemaname;
    NameData relname;
    char subject[CREEK_SUBJECT_LEN];
    char reply[CREEK_REPLY_LEN];   // NATS inbox not answered yet: with the subject once
                                   // the header is stored, or with the error if it fails first
    int64 rows_sent;
    int64 approx_rows;
    TimestampTz requested_at;
    TimestampTz started_at;
    TimestampTz finished_at;
    char error[CREEK_ERROR_LEN];
} CreekSnapshot;

const char *creek_snap_state_name(CreekSnapState s);

// Reserves an entry for a snapshot of relid (state SNAP_RESERVED), made
// visible to the launcher when the calling transaction commits (dropped if
// it aborts). Fills subject (NS.DB.snap.SCHEMA.TABLE.<time>_<id>). Returns
// false when every entry is busy.
bool creek_snapshot_reserve(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                            const char *subject_prefix, const char *origin, const char *reply,
                            char *subject_out, size_t subject_len);
// Queues at once (no transaction to wait for: the streaming worker's NATS
// requests). Same arguments.
bool creek_snapshot_enqueue_now(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                                const char *subject_prefix, const char *origin, const char *reply,
                                char *subject_out, size_t subject_len);
// Transaction end (from the XactCallback): queue or drop this backend's reservations.
void creek_snapshot_xact_end(bool commit);

// The state of the current database's snapshot with that subject, -1 when
// no entry holds it.
int creek_snapshot_state_of(Oid dboid, const char *subject);
// Shows a snapshot that a server restart interrupted as failed (an entry of
// its own, if one is free or has ended).
void creek_snapshot_record_failed(Oid dboid, Oid relid, const char *schemaname, const char *relname,
                                  const char *subject, const char *origin, TimestampTz requested_at,
                                  const char *error);

// Cancels a waiting or running snapshot of the current database; false when
// there is none with that subject (or it has ended).
bool creek_snapshot_cancel(const char *subject);

// Launcher side: starts waiting snapshots while fewer than max run, and marks
// failed those whose worker died without saying so. true when a waiting
// snapshot taken because the slot was lost waits for its database's worker
// to reach NATS (look again soon).
bool creek_snapshot_launch_waiting(int max_running);

// Worker side.
void creek_snapshot_fail(CreekSnapshot *s, const char *error);
// The NATS request of s was answered (with the snapshot's subject).
void creek_snapshot_answered(CreekSnapshot *s);

// Streaming worker side: a snapshot of database dboid requested over NATS
// that failed before its request was answered (cancelled or its table
// dropped while waiting, its worker failed before the header was stored).
// Copies the inbox and the error, and marks the request answered; false when
// there is none.
bool creek_snapshot_take_unanswered(Oid dboid, char *reply, size_t reply_len, char *error,
                                    size_t error_len);
