// snapshot_requests.hpp: snapshot requests kept in the table
// creek.snapshot_requests (0.8.0) as well as in shared memory, so that a
// server restart, which empties shared memory, does not forget a snapshot
// that was requested and had not finished: the streaming worker finds its
// row, shows the snapshot as failed (view, WARNING) and, for one taken
// because the slot was lost, requests it again.
#pragma once

#include "pg.hpp"

// In the caller's transaction (the request is kept if it commits), with the
// rights of the table's owner. Nothing when the table does not exist (the
// extension was not updated to 0.8.0 yet).
void creek_snapshot_request_keep(const char *subject, Oid relid, const char *origin);

// A snapshot of relid that the worker must still request after losing its
// slot (origin "slot", no subject yet), kept in the caller's transaction;
// and its row deleted once it was requested.
void creek_snapshot_request_pending(Oid relid);
void creek_snapshot_request_no_longer_pending(Oid relid);

// Snapshot worker, once its snapshot finished (outside a transaction):
// deletes its row, so that a restart right after cannot show it failed.
void creek_snapshot_request_done(const char *subject);

// Streaming worker: once after it started (the side transaction
// invalidates the decoder's caches, so not periodically), then whenever a
// snapshot failed since (a finished one deletes its own row).
bool creek_snapshot_requests_due();
// Inside the worker's transaction, SPI connected: deletes the rows of
// snapshots that ended, and handles those a restart interrupted.
void creek_snapshot_requests_sweep();
