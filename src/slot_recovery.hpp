// slot_recovery.hpp: what the streaming worker does when its replication
// slot was lost while tables were published (README, "When the slot is
// lost"): a failover to a standby, pg_upgrade, a restore and
// pg_drop_replication_slot() leave no slot; Postgres invalidates one whose
// WAL it removed (max_slot_wal_keep_size). The changes committed before the
// new slot exists are not in the change stream: creek says so (log, view)
// and takes a snapshot of each published table.
#pragma once

#include "pg.hpp"
#include "shmem.hpp"

// Before the worker opens its slot: drops it (with a WARNING) when Postgres
// invalidated it, so that the worker creates it anew.
void creek_drop_invalidated_slot(CreekDbEntry *entry, const char *slot_name);

// Right after the worker created its slot, outside a transaction. next_xid:
// ReadNextTransactionId() once the slot was created. The tables of
// creek.tables whose row is older were published before the slot existed
// (creek.add_table() waits for the slot): WARNING, last_error and, with
// creek.snapshot_on_slot_loss, a snapshot of each.
void creek_slot_recovery_start(CreekDbEntry *entry, const char *slot_name, TransactionId next_xid);

// Adds a table to those whose snapshot is still to request (one taken
// because the slot was lost, that a server restart interrupted).
void creek_slot_recovery_add(Oid relid);

// At the worker's start, outside a transaction: the latest loss recorded in
// creek.slot_losses, for the view (shared memory forgets it at a restart).
void creek_slot_recovery_show_last(CreekDbEntry *entry);

// Snapshots still to request (creek's snapshot entries were all busy), and
// at least a second since the last try.
bool creek_slot_recovery_due();
// Requests them, inside the caller's transaction.
void creek_slot_recovery_request_pending();
