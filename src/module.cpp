// module.cpp: creek's entry point: settings, shared memory, the launcher, and
// a commit hook that wakes the database's worker as soon as a transaction
// commits.
#include "pg.hpp"

#include "launcher.hpp"
#include "settings.hpp"
#include "shmem.hpp"

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

// Wakes the streaming worker of this database at commit, for low latency.
static void creek_xact_callback(XactEvent event, void *arg)
{
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

void _PG_init(void)
{
    creek_define_settings();
    if (!process_shared_preload_libraries_in_progress)
        return;
    creek_shmem_install_hooks();
    creek_register_launcher();
    RegisterXactCallback(creek_xact_callback, nullptr);
}
