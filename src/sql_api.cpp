// sql_api.cpp: creek.add_table() and creek.remove_table().
#include "pg.hpp"


#include "shmem.hpp"
#include "slot.hpp"

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
    if (relkind != RELKIND_RELATION)
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

extern "C" Datum creek_add_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    Relation rel = try_relation_open(relid, AccessShareLock);
    if (rel == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation with OID %u does not exist", relid)));
    check_publishable(rel);
    char *name = qualified_name(rel);
    if (run_one("SELECT 1 FROM creek.tables WHERE relid = $1", relid) > 0)
        ereport(ERROR,
                (errcode(ERRCODE_DUPLICATE_OBJECT),
                 errmsg("table \"%s\" is already published by creek", name),
                 errhint("See creek.tables for the published tables.")));
    warn_without_identity(rel);
    relation_close(rel, NoLock);
    wait_for_slot();
    run_one("INSERT INTO creek.tables (relid) VALUES ($1)", relid);
    PG_RETURN_VOID();
}

extern "C" Datum creek_remove_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    if (run_one("DELETE FROM creek.tables WHERE relid = $1", relid) == 0) {
        char *relname = get_rel_name(relid);
        char *name = relname ? qualified_name_of(get_rel_namespace(relid), relname)
                             : psprintf("%u", relid);
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("table \"%s\" is not published by creek", name),
                 errhint("See creek.tables for the published tables.")));
    }
    PG_RETURN_VOID();
}
