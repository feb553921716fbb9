// launcher.cpp: the launcher background worker. At server start it starts a
// worker for every database (a worker exits at once where creek is not
// installed); afterwards it starts workers on request (CREATE EXTENSION).
#include "pg.hpp"

#include <cstdio>


#include "launcher.hpp"
#include "settings.hpp"
#include "shmem.hpp"
#include "snapshot_queue.hpp"

extern "C" {
PGDLLEXPORT void creek_launcher_main(Datum arg);
}

#define MAX_PENDING 256

typedef struct PendingLaunch {
    Oid dboid;
    bool wait_for_extension;
    int tries;
} PendingLaunch;

static PendingLaunch pending[MAX_PENDING];
static int npending = 0;

// The streaming workers this launcher started that may not have claimed
// their database yet (creek_find_db does not show them): a request for the
// same database meanwhile (CREATE EXTENSION, then creek.add_table() at once)
// must not start a second one.
typedef struct Launched {
    Oid dboid;
    BackgroundWorkerHandle *handle;
} Launched;

static Launched launched[MAX_PENDING];
static int nlaunched = 0;

static void forget_launched(int i)
{
    pfree(launched[i].handle);
    launched[i] = launched[--nlaunched];
}

// Forgets the workers that have claimed their database or are gone.
static void forget_settled()
{
    for (int i = 0; i < nlaunched;) {
        pid_t pid;
        bool claimed;
        SpinLockAcquire(&creek_shared->mutex);
        claimed = creek_find_db(launched[i].dboid) != nullptr;
        SpinLockRelease(&creek_shared->mutex);
        if (claimed || GetBackgroundWorkerPid(launched[i].handle, &pid) == BGWH_STOPPED)
            forget_launched(i);   // (the last entry moved to i)
        else
            i++;
    }
}

// Has a worker this launcher started for dboid not claimed it and not
// exited yet (as of the last forget_settled)?
static bool starting(Oid dboid)
{
    for (int i = 0; i < nlaunched; i++)
        if (launched[i].dboid == dboid)
            return true;
    return false;
}

static void add_pending(Oid dboid, bool wait)
{
    for (int i = 0; i < npending; i++)
        if (pending[i].dboid == dboid) {
            pending[i].wait_for_extension |= wait;
            pending[i].tries = 0;
            return;
        }
    if (npending < MAX_PENDING)
        pending[npending++] = {dboid, wait, 0};
}

static bool start_worker(Oid dboid, bool wait_for_extension, BackgroundWorkerHandle **handle)
{
    BackgroundWorker w;
    memset(&w, 0, sizeof w);
    w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    w.bgw_start_time = BgWorkerStart_RecoveryFinished;
    w.bgw_restart_time = 5;
    snprintf(w.bgw_library_name, BGW_MAXLEN, "creek");
    snprintf(w.bgw_function_name, BGW_MAXLEN, "creek_worker_main");
    snprintf(w.bgw_name, BGW_MAXLEN, "creek worker for database %u", dboid);
    snprintf(w.bgw_type, BGW_MAXLEN, "creek worker");
    w.bgw_main_arg = ObjectIdGetDatum(dboid);
    w.bgw_extra[0] = wait_for_extension ? 'w' : 'p';
    w.bgw_notify_pid = 0;
    return RegisterDynamicBackgroundWorker(&w, handle);
}

// Starts a streaming worker for dboid and remembers it.
static bool launch(Oid dboid, bool wait_for_extension)
{
    BackgroundWorkerHandle *handle = nullptr;
    if (!start_worker(dboid, wait_for_extension, &handle))
        return false;
    if (nlaunched < MAX_PENDING)
        launched[nlaunched++] = {dboid, handle};
    else
        pfree(handle);
    return true;
}

BackgroundWorkerHandle *creek_start_snapshot_worker(Oid dboid, int entry, uint32 generation)
{
    BackgroundWorker w;
    BackgroundWorkerHandle *handle = nullptr;
    memset(&w, 0, sizeof w);
    w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    w.bgw_start_time = BgWorkerStart_RecoveryFinished;
    w.bgw_restart_time = BGW_NEVER_RESTART;
    snprintf(w.bgw_library_name, BGW_MAXLEN, "creek");
    snprintf(w.bgw_function_name, BGW_MAXLEN, "creek_snapshot_main");
    snprintf(w.bgw_name, BGW_MAXLEN, "creek snapshot for database %u", dboid);
    snprintf(w.bgw_type, BGW_MAXLEN, "creek snapshot");
    w.bgw_main_arg = Int32GetDatum(entry);
    memcpy(w.bgw_extra, &generation, sizeof generation);
    w.bgw_notify_pid = MyProcPid;
    if (!RegisterDynamicBackgroundWorker(&w, &handle))
        return nullptr;
    return handle;
}

void creek_register_launcher()
{
    BackgroundWorker w;
    memset(&w, 0, sizeof w);
    w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    w.bgw_start_time = BgWorkerStart_RecoveryFinished;
    w.bgw_restart_time = 10;
    snprintf(w.bgw_library_name, BGW_MAXLEN, "creek");
    snprintf(w.bgw_function_name, BGW_MAXLEN, "creek_launcher_main");
    snprintf(w.bgw_name, BGW_MAXLEN, "creek launcher");
    snprintf(w.bgw_type, BGW_MAXLEN, "creek launcher");
    RegisterBackgroundWorker(&w);
}

static void probe_all_databases()
{
    StartTransactionCommand();
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
    HeapTuple tup;
    while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
        Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
        if (db->datallowconn && !db->datistemplate)
            add_pending(db->oid, false);
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    CommitTransactionCommand();
}

void creek_launcher_main(Datum arg)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);

    SpinLockAcquire(&creek_shared->mutex);
    creek_shared->launcher_pid = MyProcPid;
    creek_shared->launcher_latch = MyLatch;
    SpinLockRelease(&creek_shared->mutex);

    probe_all_databases();

    for (;;) {
        Oid req[CREEK_MAX_REQUESTS];
        int n = creek_take_requests(req, CREEK_MAX_REQUESTS);
        for (int i = 0; i < n; i++)
            add_pending(req[i], true);

        forget_settled();
        // Start what can be started; a database whose old worker still runs
        // (DROP and CREATE EXTENSION in quick succession) waits for it to exit.
        int kept = 0;
        for (int i = 0; i < npending; i++) {
            PendingLaunch p = pending[i];
            bool busy;
            SpinLockAcquire(&creek_shared->mutex);
            busy = creek_find_db(p.dboid) != nullptr;
            SpinLockRelease(&creek_shared->mutex);
            bool done = false;
            // One it started has not claimed the database yet: ask again
            // once it has claimed it or is gone, rather than start a second
            // one now.
            if (!busy && starting(p.dboid))
                done = false;
            else if (!busy || !p.wait_for_extension)
                done = busy || launch(p.dboid, p.wait_for_extension);
            if (!done && ++p.tries < 120)
                pending[kept++] = p;
        }
        npending = kept;
        bool held = creek_snapshot_launch_waiting(creek_max_snapshots);

        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                         npending > 0 || held ? 1000 : 5000, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
    }
}
