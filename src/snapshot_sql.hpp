// snapshot_sql.hpp: requesting a snapshot from SQL (creek.snapshot() and
// creek.add_table(..., snapshot => true)).
#pragma once

#include "pg.hpp"

// Checks the table and the caller's SELECT privilege, reserves a snapshot
// (queued when the transaction commits) and returns its subject (palloc'd).
char *creek_request_snapshot(Oid relid, const char *origin);
