// sql_api.cpp: creek.add_table() and creek.remove_table().
#include "pg.hpp"


#include "owner_spi.hpp"
#include "shmem.hpp"
#include "slot.hpp"
#include "snapshot_sql.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(creek_add_table);
PG_FUNCTION_INFO_V1(creek_remove_table);
}

static const char *relkind_noun(char relkind)
{
    switch (relkind) {
    case RELKIND_VIEW: return "a view";
    case RELKIND_MATVIEW: return "a materialized view";
    case RELKIND_INDEX:
    case RELKIND_PARTITIONED_INDEX: return "an index";
    case RELKIND_SEQUENCE: return "a sequence";
    case RELKIND_FOREIGN_TABLE: return "a foreign table";
    case RELKIND_COMPOSITE_TYPE: return "a composite type";
    case RELKIND_TOASTVALUE: return "a TOAST table";
    case RELKIND_PARTITIONED_TABLE: return "a partitioned table";
    default: return "not a table";
    }
}

static char *qualified_name_of(Oid nsp, const char *relname)
{
    if (isAnyTempNamespace(nsp))
        return pstrdup(quote_identifier(relname));
    return quote_qualified_identifier(get_namespace_name(nsp), relname);
}

static char *qualified_name(Relation rel)
{
    return qualified_name_of(RelationGetNamespace(rel), RelationGetRelationName(rel));
}

// Checks that rel can be published; errors otherwise.
static void check_publishable(Relation rel)
{
    char *name = qualified_name(rel);
    char relkind = rel->rd_rel->relkind;
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
        ereport(ERROR,
                (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                 errmsg("\"%s\" is not a table", name),
                 errdetail("creek publishes the changes of ordinary tables; \"%s\" is %s.", name,
                           relkind_noun(relkind))));
    if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("cannot publish temporary table \"%s\"", name),
                 errdetail("Changes to temporary tables are not decoded from the WAL.")));
    if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED)
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("cannot publish unlogged table \"%s\"", name),
                 errdetail("Changes to unlogged tables are not written to the WAL, so logical decoding cannot see them."),
                 errhint("Make it a logged table with ALTER TABLE %s SET LOGGED.", name)));
    if (IsCatalogRelation(rel) || RelationGetNamespace(rel) == get_namespace_oid("creek", true))
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("cannot publish system table \"%s\"", name),
                 errdetail("Only user tables can be published.")));
}

static void warn_without_identity(Relation rel)
{
    char ident = rel->rd_rel->relreplident;
    bool none = ident == REPLICA_IDENTITY_NOTHING;
    if (ident == REPLICA_IDENTITY_DEFAULT) {
        Oid pk = RelationGetPrimaryKeyIndex(rel);
        none = !OidIsValid(pk);
    }
    if (none)
        ereport(WARNING,
                (errmsg("table \"%s\" has no replica identity", qualified_name(rel)),
                 errdetail("Its updates and deletes are published with \"before\" set to null: consumers cannot tell which row changed."),
                 errhint("Add a primary key, or use ALTER TABLE ... REPLICA IDENTITY FULL.")));
}

static bool extension_created_in_this_transaction()
{
    ScanKeyData key;
    bool mine = false;
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                CStringGetDatum("creek"));
    SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
    HeapTuple tup = systable_getnext(scan);
    if (tup != nullptr)
        mine = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data));
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return mine;
}

// A table can be added only once the worker's slot exists, so that no change
// committed after creek.add_table() returns can be missed. Waits for it.
static void wait_for_slot()
{
    char name[NAMEDATALEN];
    if (creek_shared == nullptr)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("creek is not loaded"),
                 errdetail("creek streams changes only when loaded at server start."),
                 errhint("Add creek to shared_preload_libraries in postgresql.conf and restart the server.")));
    if (wal_level < WAL_LEVEL_LOGICAL)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("creek requires wal_level = logical"),
                 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
    creek_slot_name(MyDatabaseId, name, sizeof name);
    if (creek_slot_ready(name))
        return;
    // The worker's slot waits for every transaction with an xid to end: this
    // one must not hold one while it waits for the slot.
    if (extension_created_in_this_transaction())
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("cannot publish a table in the transaction that created the creek extension"),
                 errdetail("creek's worker creates its replication slot once CREATE EXTENSION has committed."),
                 errhint("Commit, then call creek.add_table().")));
    if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("creek's replication slot \"%s\" does not exist yet", name),
                 errdetail("The slot cannot be created while this transaction, which has written data, is open."),
                 errhint("Call creek.add_table() in a transaction of its own.")));
    for (int i = 0; !creek_slot_ready(name); i++) {
        if (i == 0)
            (void) creek_request_launch(MyDatabaseId);
        if (i >= 300)
            ereport(ERROR,
                    (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                     errmsg("creek's streaming worker has not created its replication slot yet"),
                     errdetail("A table is published only once slot \"%s\" exists, so that none of its changes can be missed.", name),
                     errhint("Commit CREATE EXTENSION before adding tables, check creek.pg_stat_creek and the server log, and try again.")));
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
}

static int run_one(const char *sql, Oid relid)
{
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    SPI_connect();
    int rc = SPI_execute_with_args(sql, 1, types, values, nullptr, false, 0);
    if (rc < 0)
        elog(ERROR, "creek: SPI_execute failed: %s", SPI_result_code_string(rc));
    int n = (int) SPI_processed;
    SPI_finish();
    return n;
}

// Writes to creek.tables run with the rights of its owner (the extension's,
// a superuser): creek_admin members may only read it, so that the checks of
// creek.add_table() (SELECT on the table, a table that can be published)
// cannot be skipped with a plain INSERT.
static int run_as_tables_owner(const char *sql, Oid relid)
{
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    return creek_execute_as_owner("tables", sql, 1, types, values);
}

// Runs sql with $1 = relid; the first column (an oid) of its first row, or
// InvalidOid when it returns no row.
static Oid first_oid(const char *sql, Oid relid)
{
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    Oid result = InvalidOid;
    SPI_connect();
    int rc = SPI_execute_with_args(sql, 1, types, values, nullptr, true, 1);
    if (rc < 0)
        elog(ERROR, "creek: SPI_execute failed: %s", SPI_result_code_string(rc));
    if (SPI_processed > 0) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull)
            result = DatumGetObjectId(d);
    }
    SPI_finish();
    return result;
}

static char *qualified_name_of_oid(Oid relid)
{
    char *relname = get_rel_name(relid);
    if (relname == nullptr)
        return psprintf("%u", relid);
    return qualified_name_of(get_rel_namespace(relid), relname);
}

// Partitioned tables: the changes of every partition are published on the
// topmost published partitioned table's subject (decoder.cpp). A table is
// published either on its own or through one partitioned table, never both.

// The topmost published ancestor of partition relid, or InvalidOid.
static Oid published_ancestor(Oid relid)
{
    return first_oid("SELECT a.relid::oid"
                     "  FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, n)"
                     "  JOIN creek.tables t ON t.relid = a.relid"
                     " WHERE a.relid::oid <> $1"
                     " ORDER BY a.n DESC LIMIT 1",
                     relid);
}

// A published partition of partitioned table relid (at any level), or InvalidOid.
static Oid published_partition(Oid relid)
{
    return first_oid("SELECT p.relid::oid"
                     "  FROM pg_catalog.pg_partition_tree($1) p"
                     "  JOIN creek.tables t ON t.relid = p.relid"
                     " WHERE p.relid::oid <> $1"
                     " ORDER BY p.level, p.relid::text LIMIT 1",
                     relid);
}

// A leaf partition of a REPLICA IDENTITY FULL partitioned table that is not
// FULL itself (REPLICA IDENTITY does not recurse to partitions), or InvalidOid.
static Oid partition_without_full_identity(Oid relid)
{
    return first_oid("SELECT p.relid::oid"
                     "  FROM pg_catalog.pg_partition_tree($1) p"
                     "  JOIN pg_catalog.pg_class c ON c.oid = p.relid"
                     " WHERE c.relkind = 'r' AND c.relreplident <> 'f'"
                     " ORDER BY p.level, p.relid::text LIMIT 1",
                     relid);
}

static void check_partition_membership(Relation rel, const char *name)
{
    Oid relid = RelationGetRelid(rel);
    if (rel->rd_rel->relispartition) {
        Oid anc = published_ancestor(relid);
        if (OidIsValid(anc)) {
            char *ancname = qualified_name_of_oid(anc);
            ereport(ERROR,
                    (errcode(ERRCODE_DUPLICATE_OBJECT),
                     errmsg("table \"%s\" is already published through its partitioned table \"%s\"",
                            name, ancname),
                     errdetail("creek publishes the changes of every partition of \"%s\" on that table's subject.",
                               ancname),
                     errhint("See creek.tables for the published tables.")));
        }
    }
    if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE) {
        Oid part = published_partition(relid);
        if (OidIsValid(part)) {
            char *partname = qualified_name_of_oid(part);
            ereport(ERROR,
                    (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                     errmsg("cannot publish partitioned table \"%s\": its partition \"%s\" is published on its own",
                            name, partname),
                     errdetail("The partition's changes would be published twice, on its own subject and on the partitioned table's."),
                     errhint("Remove the partition first with creek.remove_table(%s), then add the partitioned table.",
                             quote_literal_cstr(partname))));
        }
    }
}

static void warn_partition_identity(Relation rel, const char *name)
{
    if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE ||
        rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL)
        return;
    Oid part = partition_without_full_identity(RelationGetRelid(rel));
    if (OidIsValid(part))
        ereport(WARNING,
                (errmsg("partition \"%s\" of table \"%s\" is not REPLICA IDENTITY FULL",
                        qualified_name_of_oid(part), name),
                 errdetail("The WAL holds what each partition's own replica identity logs of an old row: "
                           "the before images of this partition's updates and deletes are null or carry only the key columns."),
                 errhint("Run ALTER TABLE ... REPLICA IDENTITY FULL on every partition: it does not recurse.")));
}

extern "C" Datum creek_add_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    Relation rel = try_relation_open(relid, AccessShareLock);
    if (rel == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation with OID %u does not exist", relid)));
    check_publishable(rel);
    char *name = qualified_name(rel);
    // Publishing a table sends its rows to everyone on the NATS server: only
    // for those who may read it.
    if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("permission denied to publish table \"%s\"", name),
                 errdetail("Publishing a table requires the SELECT privilege on it."),
                 errhint("Ask the table's owner for SELECT, or a superuser to publish it.")));
    if (run_one("SELECT 1 FROM creek.tables WHERE relid = $1", relid) > 0)
        ereport(ERROR,
                (errcode(ERRCODE_DUPLICATE_OBJECT),
                 errmsg("table \"%s\" is already published by creek", name),
                 errhint("See creek.tables for the published tables.")));
    check_partition_membership(rel, name);
    warn_without_identity(rel);
    warn_partition_identity(rel, name);
    relation_close(rel, NoLock);
    wait_for_slot();
    run_as_tables_owner("INSERT INTO creek.tables (relid) VALUES ($1)", relid);
    // snapshot => true: taken once this transaction commits, so that every
    // change it misses is published (membership starts at the same commit)
    if (PG_NARGS() > 1 && PG_GETARG_BOOL(1)) {
        char *subject = creek_request_snapshot(relid, "sql");
        ereport(NOTICE, (errmsg("creek will publish a snapshot of \"%s\" on %s", name, subject)));
    }
    PG_RETURN_VOID();
}

extern "C" Datum creek_remove_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    if (run_as_tables_owner("DELETE FROM creek.tables WHERE relid = $1", relid) == 0) {
        char *relname = get_rel_name(relid);
        char *name = relname ? qualified_name_of(get_rel_namespace(relid), relname)
                             : psprintf("%u", relid);
        Oid anc = relname && get_rel_relispartition(relid) ? published_ancestor(relid) : InvalidOid;
        if (OidIsValid(anc)) {
            char *ancname = qualified_name_of_oid(anc);
            ereport(ERROR,
                    (errcode(ERRCODE_UNDEFINED_OBJECT),
                     errmsg("table \"%s\" is not published by creek", name),
                     errdetail("Its changes are published through its partitioned table \"%s\"; remove that table to stop them.",
                               ancname),
                     errhint("See creek.tables for the published tables.")));
        }
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("table \"%s\" is not published by creek", name),
                 errhint("See creek.tables for the published tables.")));
    }
    PG_RETURN_VOID();
}
