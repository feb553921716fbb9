// table_info.hpp: reads a relation's catalog description into a TableInfo
// (Postgres side of the schema builder).
#pragma once

#include "pg.hpp"
#include "schema.hpp"

// Fills *out from rel (historic or current catalog, whichever is active).
// Keeps no C++ object alive across Postgres calls: *out is owned by the caller.
void creek_read_table_info(Relation rel, creek::TableInfo *out);
