// module.cpp: creek's entry point: settings, shared memory, the launcher, and
// a commit hook that wakes the database's worker as soon as a transaction
// commits.
#include "pg.hpp"

#include "launcher.hpp"
#include "settings.hpp"
#include "shmem.hpp"
#include "slot.hpp"
#include "snapshot_queue.hpp"

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

// Wakes the streaming worker of this database at commit, for low latency.
static void creek_xact_callback(XactEvent event, void *arg)
{
    // snapshots requested in this transaction start once it commits
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
        creek_snapshot_xact_end(true);
    else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
        creek_snapshot_xact_end(false);
    if (event != XACT_EVENT_COMMIT || creek_shared == nullptr || !OidIsValid(MyDatabaseId))
        return;
    if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
        return;  // wrote nothing
    for (int i = 0; i < creek_shared->ndbs; i++) {
        CreekDbEntry *e = &creek_shared->dbs[i];
        Latch *latch = e->latch;
        if (e->in_use && e->dboid == MyDatabaseId && latch != nullptr && e->pid != MyProcPid) {
            SetLatch(latch);
            break;
        }
    }
}

static ProcessUtility_hook_type prev_process_utility = nullptr;
static void stop_worker_and_wait(Oid dboid);

// DROP DATABASE: the database's worker holds a connection and a slot, either
// of which makes the drop fail. Ask it to drop its slot and exit first.
static void stop_worker_of(const char *dbname)
{
    Oid dboid = get_database_oid(dbname, true);
    if (!OidIsValid(dboid) || creek_shared == nullptr)
        return;
    stop_worker_and_wait(dboid);
    // The worker leaves its slot to us: drop it, or DROP DATABASE fails.
    char name[NAMEDATALEN];
    creek_slot_name(dboid, name, sizeof name);
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    bool exists = SearchNamedReplicationSlot(name, false) != nullptr;
    LWLockRelease(ReplicationSlotControlLock);
    if (exists)
        ReplicationSlotDrop(name, false);
    creek_forget_table_stats(dboid);
}

static void stop_worker_and_wait(Oid dboid)
{
    for (int i = 0; i < 150; i++) {
        CreekDbEntry *e = nullptr;
        SpinLockAcquire(&creek_shared->mutex);
        e = creek_find_db(dboid);
        if (e != nullptr) {
            SpinLockAcquire(&e->mutex);
            e->exit_requested = true;
            if (e->latch)
                SetLatch(e->latch);
            SpinLockRelease(&e->mutex);
        }
        SpinLockRelease(&creek_shared->mutex);
        if (e == nullptr)
            return;
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
                         PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
}

// DROP EXTENSION creek: tell the database's worker to check soon (a busy
// worker restarts, and its successor drops the slot once the drop commits).
static void request_extension_check(Oid dboid)
{
    if (creek_shared == nullptr)
        return;
    SpinLockAcquire(&creek_shared->mutex);
    CreekDbEntry *e = creek_find_db(dboid);
    if (e != nullptr) {
        SpinLockAcquire(&e->mutex);
        e->drop_requested = true;
        if (e->latch)
            SetLatch(e->latch);
        SpinLockRelease(&e->mutex);
    }
    SpinLockRelease(&creek_shared->mutex);
}

static void creek_process_utility(PlannedStmt *pstmt, const char *query, bool read_only_tree,
                                  ProcessUtilityContext context, ParamListInfo params,
                                  QueryEnvironment *env, DestReceiver *dest, QueryCompletion *qc)
{
    Node *stmt = pstmt->utilityStmt;
    bool dropping_creek = false;
    if (IsA(stmt, DropdbStmt))
        stop_worker_of(((DropdbStmt *) stmt)->dbname);
    if (IsA(stmt, DropStmt) && ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION) {
        ListCell *lc;
        foreach (lc, ((DropStmt *) stmt)->objects)
            if (strcmp(strVal(lfirst(lc)), "creek") == 0)
                dropping_creek = true;
    }
    if (prev_process_utility)
        prev_process_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    else
        standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    if (dropping_creek)
        request_extension_check(MyDatabaseId);
}

void _PG_init(void)
{
    creek_define_settings();
    if (!process_shared_preload_libraries_in_progress)
        return;
    creek_shmem_install_hooks();
    creek_register_launcher();
    RegisterXactCallback(creek_xact_callback, nullptr);
    prev_process_utility = ProcessUtility_hook;
    ProcessUtility_hook = creek_process_utility;
}
