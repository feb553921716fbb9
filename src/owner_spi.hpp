// owner_spi.hpp: SQL on one of creek's own tables, run with the rights of
// the table's owner (the extension's, a superuser). Roles that may call a
// creek function but not write its tables (creek_admin) go through checks
// in C first; a plain INSERT of theirs is refused.
#pragma once

#include "pg.hpp"

// The oid of creek.<table>; InvalidOid when it does not exist (a table that
// a later version of the SQL objects adds, before ALTER EXTENSION UPDATE).
Oid creek_own_table(const char *table);

// Runs sql (SPI, its own connection) as the owner of creek.<table>; returns
// the number of rows processed. Errors when the statement fails.
int creek_execute_as_owner(const char *table, const char *sql, int nargs, Oid *types, Datum *values);
