// slot.cpp: creating, opening and dropping the worker's logical slot.
#include "slot.hpp"

#include <cstdio>

// The streaming worker's page reader: only WAL that is flushed. A record whose
// end is not flushed yet (the flush position can stop inside a record) makes
// XLogReadRecord return nothing, cleanly, and the worker reads it on a later
// turn. read_local_xlog_page alone would sleep in a loop until that part is
// flushed, which can take seconds when nothing else commits, and the worker's
// publishing would stop meanwhile.
static int read_flushed_xlog_page(XLogReaderState *state, XLogRecPtr targetPagePtr, int reqLen,
                                  XLogRecPtr targetRecPtr, char *cur_page)
{
    if (targetPagePtr + reqLen > GetFlushRecPtr(nullptr))
        return XLREAD_WOULDBLOCK;
    return read_local_xlog_page(state, targetPagePtr, reqLen, targetRecPtr, cur_page);
}

// wait: read_local_xlog_page (waits for WAL; finding a new slot's start point
// needs it), else read_flushed_xlog_page.
static XLogReaderRoutine *creek_xlog_routine(bool wait)
{
    // XL_ROUTINE() is a C compound literal; set the fields one by one.
    static XLogReaderRoutine routines[2];
    XLogReaderRoutine *routine = &routines[wait ? 1 : 0];
    routine->page_read = wait ? read_local_xlog_page : read_flushed_xlog_page;
    routine->segment_open = wal_segment_open;
    routine->segment_close = wal_segment_close;
    return routine;
}

// creek's plugin writes nothing through the output plugin writer interface.
static void prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last) {}
static void do_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid, bool last) {}

void creek_slot_name(Oid dboid, char *out, size_t len)
{
    snprintf(out, len, "creek_%u", dboid);
}

// A copy of the data of the slot of that name, when it is this database's.
static bool read_slot(const char *name, ReplicationSlotPersistentData *out)
{
    bool found = false;
    LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
    ReplicationSlot *s = SearchNamedReplicationSlot(name, false);
    if (s != nullptr) {
        SpinLockAcquire(&s->mutex);
        found = s->data.database == MyDatabaseId;
        if (found)
            *out = s->data;
        SpinLockRelease(&s->mutex);
    }
    LWLockRelease(ReplicationSlotControlLock);
    return found;
}

bool creek_slot_exists(const char *name)
{
    ReplicationSlotPersistentData d;
    return read_slot(name, &d);
}

bool creek_slot_ready(const char *name)
{
    ReplicationSlotPersistentData d;
    return read_slot(name, &d) && d.persistency == RS_PERSISTENT;
}

bool creek_slot_invalidated(const char *name)
{
    ReplicationSlotPersistentData d;
    return read_slot(name, &d) && XLogRecPtrIsInvalid(d.restart_lsn) && !XLogRecPtrIsInvalid(d.invalidated_at);
}

XLogRecPtr creek_slot_confirmed_lsn(const char *name)
{
    ReplicationSlotPersistentData d;
    return read_slot(name, &d) ? d.confirmed_flush : InvalidXLogRecPtr;
}

void creek_slot_create(const char *name)
{
    CheckLogicalDecodingRequirements();
    ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
    LogicalDecodingContext *ctx = CreateInitDecodingContext(
        "creek", NIL, false, InvalidXLogRecPtr, creek_xlog_routine(true), prepare_write, do_write, nullptr);
    DecodingContextFindStartpoint(ctx);
    FreeDecodingContext(ctx);
    ReplicationSlotPersist();
    ReplicationSlotRelease();
}

LogicalDecodingContext *creek_slot_open(const char *name)
{
    ReplicationSlotAcquire(name, true);
    if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("replication slot \"%s\" has been invalidated", name),
                 errdetail("The WAL it needed was removed (max_slot_wal_keep_size); changes since its last confirmed position cannot be streamed."),
                 errhint("Drop the slot with pg_drop_replication_slot('%s'); creek creates a new one and streams from then on. Take snapshots of the published tables to resynchronize consumers.", name)));
    LogicalDecodingContext *ctx = CreateDecodingContext(
        InvalidXLogRecPtr, NIL, false, creek_xlog_routine(false), prepare_write, do_write, nullptr);
    XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
    return ctx;
}

void creek_slot_drop(LogicalDecodingContext *ctx, const char *name)
{
    if (ctx)
        FreeDecodingContext(ctx);
    if (MyReplicationSlot)
        ReplicationSlotRelease();
    ReplicationSlotDrop(name, true);
}

void creek_slot_save()
{
    if (MyReplicationSlot == nullptr)
        return;
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();
}
