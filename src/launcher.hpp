// launcher.hpp: the launcher worker and starting per-database workers.
#pragma once

#include "pg.hpp"

// Registers the launcher (from _PG_init, while preloading).
void creek_register_launcher();
// Registers a snapshot worker for entry (snapshot_queue.hpp) of the given
// generation; the launcher is notified when it stops. NULL when no
// background worker slot is free.
BackgroundWorkerHandle *creek_start_snapshot_worker(Oid dboid, int entry, uint32 generation);
