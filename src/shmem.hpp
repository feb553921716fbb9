// shmem.hpp: creek's shared memory: the launcher's request queue and one status
// entry per streaming database (what creek.pg_stat_creek shows).
#pragma once

#include "pg.hpp"

#define CREEK_ERROR_LEN 512
#define CREEK_MAX_REQUESTS 64
#define CREEK_MAX_DROPPED 32

typedef struct CreekDbEntry {
    slock_t mutex;              // protects the non-atomic fields
    bool in_use;
    Oid dboid;
    int pid;
    Latch *latch;
    char state[32];
    char nats_state[32];
    char slot_name[NAMEDATALEN];
    char last_error[CREEK_ERROR_LEN];
    TimestampTz last_error_at;
    // the last time the worker created its slot anew while tables were
    // published (slot_recovery.cpp), and where the new slot starts; 0: not
    // since the server started
    TimestampTz slot_lost_at;
    XLogRecPtr slot_lost_lsn;
    TimestampTz started_at;
    bool drop_requested;        // the extension is being dropped: check now
    bool exit_requested;        // DROP DATABASE: exit (the slot is dropped with the database)
    // written by the owning worker only
    pg_atomic_uint64 last_decoded_lsn;
    pg_atomic_uint64 confirmed_lsn;
    pg_atomic_uint64 messages;
    pg_atomic_uint64 bytes;
    pg_atomic_uint64 in_flight;
    pg_atomic_uint64 last_acked_commit_time;  // TimestampTz, 0: none yet
    pg_atomic_uint32 reset_requested;  // creek.reset_stats(): the worker rebases its counters
    pg_atomic_uint64 stats_reset;      // TimestampTz of the last reset
    pg_atomic_uint64 spooled_txns;     // large transactions streamed before their commit, not yet published
    pg_atomic_uint64 spooled_bytes;    // their spool files' bytes
} CreekDbEntry;

// Per published table counters (creek.pg_stat_creek_tables). Written by the
// database's worker only.
typedef struct CreekTableStat {
    slock_t mutex;              // protects the names and the fingerprint
    bool in_use;
    Oid dboid;
    Oid relid;
    NameData schemaname;
    NameData relname;
    char fingerprint[16];
    pg_atomic_uint64 inserts, updates, deletes, truncates, bytes;
    pg_atomic_uint64 last_lsn;
    pg_atomic_uint64 last_change_at;   // TimestampTz (commit time)
} CreekTableStat;

struct CreekSnapshot;  // snapshot_queue.hpp

typedef struct CreekShared {
    slock_t mutex;
    TimestampTz started_at;     // when this shared memory was set up (server start, crash restart)
    pg_atomic_uint32 snapshots_failed;  // snapshots that failed (cancelled too) since then
    int launcher_pid;
    Latch *launcher_latch;
    int nrequests;
    Oid requests[CREEK_MAX_REQUESTS];
    uint32 ndropped;            // databases dropped since start (a ring of the last ones)
    Oid dropped[CREEK_MAX_DROPPED];
    int ntables;
    CreekTableStat *tables;     // creek.max_tables entries, after dbs
    int nsnapshots;
    struct CreekSnapshot *snapshots;  // CREEK_MAX_SNAPSHOTS entries, after tables
    int ndbs;
    CreekDbEntry dbs[FLEXIBLE_ARRAY_MEMBER];
} CreekShared;

extern CreekShared *creek_shared;

// Errors (in SQL functions) when creek was not preloaded: no shared memory.
void creek_require_loaded();

// Installs shmem_request_hook and shmem_startup_hook (from _PG_init).
void creek_shmem_install_hooks();

// Claims the entry for a database in the calling worker; NULL when another
// live worker already streams it or no entry is free.
CreekDbEntry *creek_claim_db(Oid dboid);
// Releases the entry (on worker exit). Unless forget, the entry keeps the
// database and its last error, shown as "restarting" until a worker claims it.
void creek_release_db(CreekDbEntry *e, bool forget);
CreekDbEntry *creek_find_db(Oid dboid);
// Clears a database's entry that no worker holds (the extension or the
// database was dropped): creek.pg_stat_creek no longer shows it.
void creek_forget_db(Oid dboid);
// DROP DATABASE succeeded: a worker registered for it before (waiting to be
// restarted by the postmaster) exits at start instead of failing to connect.
void creek_mark_db_dropped(Oid dboid);
bool creek_db_dropped(Oid dboid);

void creek_set_state(CreekDbEntry *e, const char *state);
void creek_set_nats_state(CreekDbEntry *e, const char *state);
void creek_set_error(CreekDbEntry *e, const char *msg);

// The stats entry of a table (claimed when missing); NULL when all are taken.
CreekTableStat *creek_table_stat(Oid dboid, Oid relid);
// Zeroes the table counters of a database.
void creek_reset_table_stats(Oid dboid);
// Frees the entries of a database's tables (when its worker drops its slot).
void creek_forget_table_stats(Oid dboid);

// Queues a request to start the worker of a database and wakes the launcher.
bool creek_request_launch(Oid dboid);
// Takes every queued request (launcher side); returns how many.
int creek_take_requests(Oid *out, int max);
