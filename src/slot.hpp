// slot.hpp: the worker's persistent logical replication slot.
#pragma once

#include "pg.hpp"

// "creek_<database oid>"
void creek_slot_name(Oid dboid, char *out, size_t len);
// Is there a slot of that name (of this database)?
bool creek_slot_exists(const char *name);
// Is there a persistent (fully created) slot of that name?
bool creek_slot_ready(const char *name);
// Is there a slot of that name (of this database) that Postgres invalidated
// (its WAL was removed: max_slot_wal_keep_size)? It can never be read again.
bool creek_slot_invalidated(const char *name);
// The confirmed position of the slot (InvalidXLogRecPtr: no such slot).
XLogRecPtr creek_slot_confirmed_lsn(const char *name);
// Creates the slot with creek's output plugin (waits for a consistent point).
void creek_slot_create(const char *name);
// Acquires the slot and returns a decoding context reading from its restart_lsn.
LogicalDecodingContext *creek_slot_open(const char *name);
// Frees ctx, releases and drops the slot.
void creek_slot_drop(LogicalDecodingContext *ctx, const char *name);
// Persists the slot's confirmed position (cheap when nothing changed).
void creek_slot_save();
