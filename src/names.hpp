// names.hpp: names as consumers see them. Database, schema, table, column,
// type names and enum labels leave Postgres in UTF-8 (Avro strings, schema
// JSON, subjects), whatever the database's encoding; names that come back
// from NATS (snapshot requests) are turned into the database's encoding.
#pragma once

#include "pg.hpp"

// Text in the database needs no conversion to UTF-8: the database is UTF-8
// or SQL_ASCII (bytes taken as they are). Also used for column values (encoder).
bool creek_database_is_utf8();

// s (in the database's encoding) in UTF-8: s itself when the database is
// UTF-8 or SQL_ASCII, else a palloc'd copy. Raises an ERROR if s cannot be
// converted.
const char *creek_name_utf8(const char *s);

// s (UTF-8, from a NATS request) in the database's encoding, palloc'd or s
// itself; nullptr when s is not valid UTF-8 or has a character the database
// encoding lacks. Raises no ERROR (catalog lookups aside).
const char *creek_name_from_utf8(const char *s);
