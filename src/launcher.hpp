// launcher.hpp: the launcher worker and starting per-database workers.
#pragma once

#include "pg.hpp"

// Registers the launcher (from _PG_init, while preloading).
void creek_register_launcher();
// Registers a dynamic streaming worker for a database. False when no
// background worker slot is free.
bool creek_start_worker(Oid dboid, bool wait_for_extension);
