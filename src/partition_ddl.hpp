// partition_ddl.hpp: the rows that partition DDL takes out of, or brings
// into, a published partitioned table (TRUNCATE, DROP TABLE, DROP SCHEMA ...
// CASCADE, DROP OWNED, DETACH and ATTACH PARTITION of its partitions),
// written into the WAL for the streaming worker to publish as 'd' and 'c'
// (README, "Partitioned tables").
#pragma once

#include "pg.hpp"

// What the statement needs after it ran: the partitions whose rows to write
// as additions (ATTACH PARTITION, DETACH of a table with published
// partitions of its own).
struct CreekPartitionDdl {
    List *add_after = nullptr;   // leaf partition OIDs
};

// Before the statement: writes the rows it will remove from a published
// partitioned table; notes those it will add.
void creek_partition_ddl_before(Node *stmt, CreekPartitionDdl *ddl);

// After the statement succeeded: writes the rows it added.
void creek_partition_ddl_after(CreekPartitionDdl *ddl);

// Are relid's changes in the WAL (an ordinary, permanent table)?
bool creek_has_wal_rows(Oid relid);

// Does a TRUNCATE of the relations in set (OIDs) empty the partitioned table
// root whole: root is in set, or every partition of its tree whose changes
// are in the WAL? (Then its one message is a 't'.)
bool creek_truncates_whole_tree(Oid root, List *set);

// The members of creek.tables (tables_relid), read with the catalog snapshot
// (the historic one while decoding: it is a user catalog table).
List *creek_published_relids(Oid tables_relid);

// The table of the extension that carries these rows in the WAL.
#define CREEK_PARTITION_ROWS_TABLE "partition_rows"
