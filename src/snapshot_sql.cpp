// snapshot_sql.cpp: creek.snapshot(), creek.cancel_snapshot() and the rows of
// creek.pg_stat_creek_snapshots.
#include "pg.hpp"

#include <cstring>

#include "names.hpp"
#include "settings.hpp"
#include "snapshot_queue.hpp"
#include "snapshot_requests.hpp"
#include "snapshot_sql.hpp"
#include "subjects.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(creek_snapshot);
PG_FUNCTION_INFO_V1(creek_cancel_snapshot);
PG_FUNCTION_INFO_V1(creek_snapshots);
}

// NS.DB.snap.SCHEMA.TABLE (plain C++, no Postgres call inside the try).
static bool subject_prefix(const char *db, const char *schema, const char *table, char *out, size_t len)
{
    try {
        creek::Subjects s(creek_namespace, db);
        std::string p = s.snap(schema, table, "");
        p.pop_back();   // the '.' before the (empty) suffix
        strlcpy(out, p.c_str(), len);
        return true;
    } catch (...) {
        return false;
    }
}

char *creek_request_snapshot(Oid relid, const char *origin)
{
    creek_require_loaded();
    Relation rel = try_relation_open(relid, AccessShareLock);
    if (rel == nullptr)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation with OID %u does not exist", relid)));
    char *nspname = get_namespace_name(RelationGetNamespace(rel));
    char *relname = pstrdup(RelationGetRelationName(rel));
    char *name = quote_qualified_identifier(nspname, relname);
    char relkind = rel->rd_rel->relkind;
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("\"%s\" is not a table", name),
                        errdetail("Snapshots are taken of ordinary and partitioned tables.")));
    if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot take a snapshot of temporary table \"%s\"", name),
                        errdetail("A snapshot is read by a background worker, which cannot see temporary tables.")));
    if (IsCatalogRelation(rel))
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("cannot take a snapshot of system table \"%s\"", name)));
    if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied to take a snapshot of table \"%s\"", name),
                        errdetail("A snapshot sends every row of the table to NATS: it requires the SELECT privilege on it.")));
    relation_close(rel, AccessShareLock);

    char prefix[CREEK_SUBJECT_LEN];
    char *db = get_database_name(MyDatabaseId);
    if (!subject_prefix(creek_name_utf8(db), creek_name_utf8(nspname), creek_name_utf8(relname), prefix,
                        sizeof prefix))
        ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
    char *subject = (char *) palloc(CREEK_SUBJECT_LEN);
    if (!creek_snapshot_reserve(MyDatabaseId, relid, nspname, relname, prefix, origin, "", subject,
                                CREEK_SUBJECT_LEN))
        ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                        errmsg("too many snapshots"),
                        errdetail("creek keeps %d snapshots, and none of them has ended.", CREEK_MAX_SNAPSHOTS),
                        errhint("Wait for a snapshot to end, or cancel one with creek.cancel_snapshot().")));
    creek_snapshot_request_keep(subject, relid, origin);
    return subject;
}

extern "C" Datum creek_snapshot(PG_FUNCTION_ARGS)
{
    PG_RETURN_TEXT_P(cstring_to_text(creek_request_snapshot(PG_GETARG_OID(0), "sql")));
}

extern "C" Datum creek_cancel_snapshot(PG_FUNCTION_ARGS)
{
    creek_require_loaded();
    char *subject = text_to_cstring(PG_GETARG_TEXT_PP(0));
    PG_RETURN_BOOL(creek_snapshot_cancel(subject));
}

extern "C" Datum creek_snapshots(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    creek_require_loaded();
    InitMaterializedSRF(fcinfo, 0);
    for (int i = 0; i < creek_shared->nsnapshots; i++) {
        CreekSnapshot *s = &creek_shared->snapshots[i];
        CreekSnapshot c;
        SpinLockAcquire(&s->mutex);
        memcpy(&c, s, sizeof c);
        SpinLockRelease(&s->mutex);
        if (c.state == SNAP_FREE)
            continue;
        Datum v[14];
        bool n[14] = {false};
        char *datname = get_database_name(c.dboid);
        v[0] = ObjectIdGetDatum(c.dboid);
        v[1] = datname ? DirectFunctionCall1(namein, CStringGetDatum(datname)) : (Datum) 0;
        n[1] = datname == nullptr;
        v[2] = CStringGetTextDatum(c.subject);
        v[3] = ObjectIdGetDatum(c.relid);
        v[4] = NameGetDatum(&c.schemaname);
        v[5] = NameGetDatum(&c.relname);
        v[6] = CStringGetTextDatum(creek_snap_state_name(c.state));
        v[7] = CStringGetTextDatum(c.origin);
        v[8] = Int64GetDatum(c.rows_sent);
        v[9] = Int64GetDatum(c.approx_rows);
        n[9] = c.approx_rows < 0;
        v[10] = TimestampTzGetDatum(c.requested_at);
        v[11] = TimestampTzGetDatum(c.started_at);
        n[11] = c.started_at == 0;
        v[12] = TimestampTzGetDatum(c.finished_at);
        n[12] = c.finished_at == 0;
        v[13] = CStringGetTextDatum(c.error);
        n[13] = c.error[0] == '\0';
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
    }
    return (Datum) 0;
}
