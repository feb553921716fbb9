// module.cpp: creek's entry point: settings, shared memory, the launcher, and
// a commit hook that wakes the database's worker as soon as a transaction
// commits.
#include "pg.hpp"

#include "launcher.hpp"
#include "partition_ddl.hpp"
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
static void wait_for_slot_release(const char *name);

// DROP DATABASE: the database's worker holds a connection and its slot,
// either of which makes the drop fail. Ask it to exit and wait until the slot
// is free: DROP DATABASE drops it then, and keeps it if the drop fails (the
// worker is started again, from the same position). Returns the database's
// oid, or InvalidOid.
static Oid stop_worker_of(const char *dbname)
{
    Oid dboid = get_database_oid(dbname, true);
    // (a role that may not drop it gets DROP DATABASE's own error, and the
    // worker streams on undisturbed)
    if (!OidIsValid(dboid) || creek_shared == nullptr || !pg_database_ownercheck(dboid, GetUserId()))
        return InvalidOid;
    stop_worker_and_wait(dboid);
    char name[NAMEDATALEN];
    creek_slot_name(dboid, name, sizeof name);
    wait_for_slot_release(name);
    return dboid;
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

// The exiting worker releases its slot a moment after its status entry.
static void wait_for_slot_release(const char *name)
{
    for (int i = 0; i < 200; i++) {
        int active_pid = 0;
        LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
        ReplicationSlot *slot = SearchNamedReplicationSlot(name, false);
        if (slot != nullptr) {
            SpinLockAcquire(&slot->mutex);
            active_pid = slot->active_pid;
            SpinLockRelease(&slot->mutex);
        }
        LWLockRelease(ReplicationSlotControlLock);
        if (active_pid == 0)
            return;
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 50,
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
    const Oid dropping_db = IsA(stmt, DropdbStmt) ? stop_worker_of(((DropdbStmt *) stmt)->dbname)
                                                  : InvalidOid;
    if (IsA(stmt, DropStmt) && ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION) {
        ListCell *lc;
        foreach (lc, ((DropStmt *) stmt)->objects)
            if (strcmp(strVal(lfirst(lc)), "creek") == 0)
                dropping_creek = true;
    }
    // rows that partition DDL takes out of a published table: before it runs
    CreekPartitionDdl partition_ddl;
    creek_partition_ddl_before(stmt, &partition_ddl);
    PG_TRY();
    {
        if (prev_process_utility)
            prev_process_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
        else
            standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    }
    PG_CATCH();
    {
        // The database is still there (another session uses it, say): stream
        // it again from its slot.
        if (OidIsValid(dropping_db))
            (void) creek_request_launch(dropping_db);
        PG_RE_THROW();
    }
    PG_END_TRY();
    creek_partition_ddl_after(&partition_ddl);
    if (OidIsValid(dropping_db)) {
        creek_forget_db(dropping_db);
        creek_mark_db_dropped(dropping_db);
        creek_forget_table_stats(dropping_db);
    }
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
