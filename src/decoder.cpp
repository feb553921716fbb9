// decoder.cpp: creek's logical decoding output plugin. It runs only inside the
// streaming worker: each committed change of a published table becomes one
// Avro message handed to the publisher, in commit order.
//
// The callbacks are C functions called by the reorder buffer, which catches
// Postgres errors with PG_TRY. Their frames hold no C++ objects with
// destructors while Postgres functions run; C++ exceptions are caught here and
// turned into ereport(ERROR).
#include "stream_state.hpp"

#include <cstdio>
#include <ctime>
#include <stdexcept>


#include "partition_ddl.hpp"
#include "table_info.hpp"

CreekStream *creek_stream = nullptr;

static const int64 kUnixToPgMicros = INT64CONST(946684800000000);

enum CreekOp { OP_C = 0, OP_U = 1, OP_U_PK = 2, OP_D = 3, OP_T = 4, OP_R = 5 };

extern "C" {
PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);
}

static std::string rfc3339_now()
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    return buf;
}

// Reads creek.tables with the current (historic) snapshot.
static void load_membership(CreekStream *st)
{
    st->published.clear();
    st->tables_relid = InvalidOid;
    Oid nsp = get_namespace_oid("creek", true);
    st->creek_nsp = nsp;
    if (OidIsValid(nsp))
        st->tables_relid = get_relname_relid("tables", nsp);
    if (OidIsValid(st->tables_relid)) {
        List *relids = creek_published_relids(st->tables_relid);
        ListCell *lc;
        foreach (lc, relids)
            st->published.insert(lfirst_oid(lc));
        list_free(relids);
    }
    // which ancestor a partition publishes through depends on membership
    st->partition_routes.clear();
    st->route_ancestors.clear();
    st->membership_valid = true;
}

// Pure C++ part of a schema rebuild: build, register, announce.
static void adopt_schema(CreekStream *st, CreekTable *t)
{
    t->schema = creek::build_writer_schema(t->info);
    t->source = t->info.schema_utf8 + "." + t->info.table_utf8;
    t->wal_subject = st->subjects->wal(t->info.schema_utf8, t->info.table_utf8);
    t->schema_subject = st->subjects->schema(t->info.schema_utf8, t->info.table_utf8);
    const std::string &fp = t->schema.fingerprint_b64;
    std::string key = fp + "/" + t->source;
    if (st->announced.count(key))
        return;
    // Tables with the same definition share a fingerprint: each gets the
    // schema message (and the creek.schemas row) with its own source.
    std::string created = rfc3339_now();
    std::string msg = creek::schema_message_json(fp, t->schema.json, t->source, created);
    if (!st->known_schemas.count(fp))
        st->known_schemas[fp] = msg;
    if (!st->stored_sources.count(key)) {
        st->to_store.push_back({fp, t->source, t->schema.json, created});
        st->stored_sources.insert(key);
    }
    st->pub->enqueue(t->schema_subject, "schema/" + key, msg.data(), msg.size());
    st->announced.insert(key);
}

// Names and fingerprint of the table's statistics entry (no C++ objects
// alive across Postgres calls here).
static void update_table_stat_names(CreekTable *t)
{
    if (t->stat == nullptr)
        t->stat = creek_table_stat(MyDatabaseId, t->relid);
    if (t->stat == nullptr)
        return;  // creek.max_tables entries are all taken
    SpinLockAcquire(&t->stat->mutex);
    strlcpy(NameStr(t->stat->schemaname), t->info.schema_name.c_str(), NAMEDATALEN);
    strlcpy(NameStr(t->stat->relname), t->info.table_name.c_str(), NAMEDATALEN);
    strlcpy(t->stat->fingerprint, t->schema.fingerprint_b64.c_str(), sizeof t->stat->fingerprint);
    SpinLockRelease(&t->stat->mutex);
}

static void rebuild_table(CreekStream *st, CreekTable *t, Relation rel)
{
    creek_read_table_info(rel, &t->info);
    t->pk_cols.clear();
    Bitmapset *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
    for (size_t i = 0; i < t->info.columns.size(); i++)
        if (pk && bms_is_member(t->info.columns[i].attnum - FirstLowInvalidHeapAttributeNumber, pk))
            t->pk_cols.push_back(static_cast<int>(i));
    if (t->codecs)
        pfree(t->codecs);
    t->codecs = creek_prepare_codecs(t->info, st->schema_cxt);
    t->all_cols.clear();
    for (size_t i = 0; i < t->info.columns.size(); i++)
        t->all_cols.push_back(static_cast<int>(i));
    adopt_schema(st, t);
    update_table_stat_names(t);
    t->stale = false;
}

static CreekTable *get_table(CreekStream *st, Relation rel)
{
    Oid relid = RelationGetRelid(rel);
    auto it = st->tables.find(relid);
    if (it == st->tables.end()) {
        it = st->tables.emplace(relid, CreekTable()).first;
        it->second.relid = relid;
    }
    CreekTable *t = &it->second;
    if (t->stale)
        rebuild_table(st, t, rel);
    return t;
}

// Do old and new tuples differ in any of cols?
static bool columns_differ(const CreekTable *t, const std::vector<int> &cols, TupleDesc desc,
                           HeapTuple a, HeapTuple b)
{
    for (int idx : cols) {
        int attnum = t->info.columns[idx].attnum;
        Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
        bool na, nb;
        Datum da = heap_getattr(a, attnum, desc, &na);
        Datum db = heap_getattr(b, attnum, desc, &nb);
        if (na != nb)
            return true;
        if (na)
            continue;
        if (!datum_image_eq(da, db, att->attbyval, att->attlen))
            return true;
    }
    return false;
}

// What a change's message holds after its envelope: the before and after rows.
static void put_rows(creek::AvroWriter *w, CreekTable *t, TupleDesc desc, HeapTuple before, HeapTuple after)
{
    if (before) {
        w->put_union_branch(1);
        creek_encode_record(w, t->info, t->codecs, t->schema.before_cols, desc, before);
    } else {
        w->put_union_branch(0);
    }
    if (after) {
        w->put_union_branch(1);
        creek_encode_record(w, t->info, t->codecs, t->all_cols, desc, after);
    } else {
        w->put_union_branch(0);
    }
}

static void count_change(CreekTableStat *stat, int op, size_t bytes, XLogRecPtr lsn, int64_t commit_unix_us)
{
    if (stat == nullptr)
        return;
    pg_atomic_uint64 *counter = op == OP_C ? &stat->inserts
                                : op == OP_D ? &stat->deletes
                                : op == OP_T ? &stat->truncates
                                             : &stat->updates;
    pg_atomic_fetch_add_u64(counter, 1);
    pg_atomic_fetch_add_u64(&stat->bytes, bytes);
    pg_atomic_write_u64(&stat->last_lsn, lsn);
    pg_atomic_write_u64(&stat->last_change_at, (uint64) (commit_unix_us - kUnixToPgMicros));
}

// The fields of a message that follow its table's part (source.db, schema,
// table): the transaction's, the change's, the time it is sent.
static void put_txn_fields(CreekStream *st, creek::AvroWriter *w, XLogRecPtr lsn, int op)
{
    char lsn_text[32];
    snprintf(lsn_text, sizeof lsn_text, "%X/%X", LSN_FORMAT_ARGS(lsn));
    w->put_long(st->txn_full_xid);
    w->put_string(st->txn_commit_lsn_text, strlen(st->txn_commit_lsn_text));
    w->put_string(lsn_text, strlen(lsn_text));
    w->put_enum(op);
    w->put_long(GetCurrentTimestamp() + kUnixToPgMicros);
}

// A spooled change (a streamed transaction's, see spool.hpp): this header,
// the subject, the message up to the commit time (schema header,
// fingerprint, producer), the table's part (db, schema, table), the rows.
// The commit time, commit LSN and message number are known at the commit.
struct SpooledChange {
    XLogRecPtr lsn;
    Oid relid;
    int32 op;
    uint32 subject_len, head_len, table_len;
};

static void spool_change(CreekStream *st, CreekTable *t, int op, XLogRecPtr lsn, TupleDesc desc,
                         HeapTuple before, HeapTuple after)
{
    creek::AvroWriter *w = &st->writer;
    SpooledChange h;
    memset(&h, 0, sizeof h);
    w->clear();
    w->put_raw(&h, sizeof h);
    w->put_raw(t->wal_subject.data(), t->wal_subject.size());
    size_t head0 = w->size();
    w->put_raw(t->schema.header.data(), t->schema.header.size());
    w->put_string(t->schema.fingerprint_b64);
    w->put_string(st->producer_name);
    size_t table0 = w->size();
    w->put_string(st->db_name);
    w->put_string(t->info.schema_utf8);
    w->put_string(t->info.table_utf8);
    size_t rows0 = w->size();
    put_rows(w, t, desc, before, after);
    h.lsn = lsn;
    h.relid = t->relid;
    h.op = op;
    h.subject_len = uint32(head0 - sizeof h);
    h.head_len = uint32(table0 - head0);
    h.table_len = uint32(rows0 - table0);
    memcpy(&w->data()[0], &h, sizeof h);
    st->spool->add(w->data().data(), w->size());
}

static void emit(CreekStream *st, CreekTable *t, int op, XLogRecPtr lsn, TupleDesc desc,
                 HeapTuple before, HeapTuple after)
{
    if (st->spool != nullptr) {
        spool_change(st, t, op, lsn, desc, before, after);
        return;
    }
    creek::AvroWriter *w = &st->writer;
    char msg_id[64];
    snprintf(msg_id, sizeof msg_id, "%s/%u", st->txn_msg_id_base, st->txn_index++);

    w->clear();
    w->put_raw(t->schema.header.data(), t->schema.header.size());
    w->put_string(t->schema.fingerprint_b64);
    w->put_string(st->producer_name);
    w->put_long(st->txn_commit_unix_us);
    w->put_string(st->db_name);
    w->put_string(t->info.schema_utf8);
    w->put_string(t->info.table_utf8);
    put_txn_fields(st, w, lsn, op);
    put_rows(w, t, desc, before, after);
    st->pub->enqueue(t->wal_subject, msg_id, w->data().data(), w->size());
    st->last_decoded_lsn = lsn;
    count_change(t->stat, op, w->size(), lsn, st->txn_commit_unix_us);
}

// Publishes the next change of the committing streamed transaction's spool;
// false when none is left.
static bool publish_spooled(CreekStream *st, creek::Spool *spool)
{
    const char *rec;
    size_t len;
    if (!spool->next(&rec, &len))
        return false;
    SpooledChange h;
    if (len < sizeof h)
        throw std::runtime_error("a spooled change is truncated");
    memcpy(&h, rec, sizeof h);
    const char *p = rec + sizeof h;
    size_t parts = sizeof h + size_t(h.subject_len) + h.head_len + h.table_len;
    if (parts > len)
        throw std::runtime_error("a spooled change is truncated");
    st->spool_subject.assign(p, h.subject_len);
    p += h.subject_len;
    creek::AvroWriter *w = &st->writer;
    w->clear();
    w->put_raw(p, h.head_len);
    p += h.head_len;
    w->put_long(st->txn_commit_unix_us);
    w->put_raw(p, h.table_len);
    p += h.table_len;
    put_txn_fields(st, w, h.lsn, h.op);
    w->put_raw(p, len - parts);
    char msg_id[64];
    snprintf(msg_id, sizeof msg_id, "%s/%u", st->txn_msg_id_base, st->txn_index++);
    st->pub->enqueue(st->spool_subject, msg_id, w->data().data(), w->size());
    st->last_decoded_lsn = h.lsn;
    auto it = st->tables.find(h.relid);
    if (it != st->tables.end())
        count_change(it->second.stat, h.op, w->size(), h.lsn, st->txn_commit_unix_us);
    return true;
}

// Partitioned tables. The reorder buffer hands over changes of the partition
// that holds the row (a leaf). A partition that is not published itself is
// published through its topmost published ancestor: on that table's subject,
// with its writer schema, its tuples converted to that table's columns.

// The topmost published ancestor of partition relid, or InvalidOid; read with
// the historic catalog snapshot, cached until an invalidation (stream_state.hpp).
static Oid published_ancestor(CreekStream *st, Oid relid)
{
    auto it = st->partition_routes.find(relid);
    if (it != st->partition_routes.end())
        return it->second;
    List *ancestors = get_partition_ancestors(relid);  // parent first, root last
    Oid target = InvalidOid;
    for (int i = 0; i < list_length(ancestors); i++) {
        Oid anc = list_nth_oid(ancestors, i);
        st->route_ancestors.insert(anc);
        if (st->published.count(anc))
            target = anc;
    }
    list_free(ancestors);
    st->partition_routes[relid] = target;
    return target;
}

static Relation open_target(Oid relid)
{
    Relation rel = RelationIdGetRelation(relid);
    if (!RelationIsValid(rel))
        elog(ERROR, "creek could not open relation with OID %u", relid);
    return rel;
}

// Publishes one change of rel (action, old and new tuples in rel's
// columns): as a change of target, rel's published partitioned ancestor,
// when target is not null, with map converting rel's tuples to its columns.
static void publish_row(CreekStream *st, Relation rel, Relation target, TupleConversionMap *map,
                        ReorderBufferChangeType action, XLogRecPtr lsn, HeapTuple oldt, HeapTuple newt)
{
    if (target != nullptr) {
        if (map != nullptr) {
            if (oldt)
                oldt = execute_attr_map_tuple(oldt, map);
            if (newt)
                newt = execute_attr_map_tuple(newt, map);
        }
        rel = target;
    }
    CreekTable *t = get_table(st, rel);
    TupleDesc desc = RelationGetDescr(rel);

    switch (action) {
    case REORDER_BUFFER_CHANGE_INSERT:
        emit(st, t, OP_C, lsn, desc, nullptr, newt);
        break;
    case REORDER_BUFFER_CHANGE_UPDATE: {
        int op = OP_U;
        HeapTuple before = oldt;
        if (t->schema.before_is_row) {
            if (oldt && newt && columns_differ(t, t->pk_cols, desc, oldt, newt))
                op = OP_U_PK;
        } else if (oldt && newt) {
            if (columns_differ(t, t->schema.before_cols, desc, oldt, newt))
                op = OP_U_PK;
        } else if (!t->schema.before_cols.empty()) {
            before = newt;  // key unchanged: the new tuple holds it
        }
        emit(st, t, op, lsn, desc, before, newt);
        break;
    }
    case REORDER_BUFFER_CHANGE_DELETE:
        emit(st, t, OP_D, lsn, desc, oldt, nullptr);
        break;
    default:
        break;
    }
}

// attribute numbers may differ (dropped columns, ATTACH PARTITION of a table
// created with another column order): map by name
static TupleConversionMap *map_to(Relation rel, Relation target)
{
    return target ? convert_tuples_by_name(RelationGetDescr(rel), RelationGetDescr(target)) : nullptr;
}

static void publish_change(CreekStream *st, Relation rel, Relation target,
                           ReorderBufferChange *change)
{
    publish_row(st, rel, target, map_to(rel, target), change->action, change->lsn,
                change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : nullptr,
                change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : nullptr);
}

// A chunk of creek.partition_rows (partition_ddl.cpp): rows that partition
// DDL took out of ('d') or brought into ('c') the table partition relid is
// published through; each becomes a delete or an insert of that partition.
static void publish_partition_rows(CreekStream *st, Relation chunk_rel, HeapTuple chunk, XLogRecPtr lsn)
{
    TupleDesc cdesc = RelationGetDescr(chunk_rel);
    bool null1, null2, null3;
    Oid relid = DatumGetObjectId(heap_getattr(chunk, 1, cdesc, &null1));
    char op = DatumGetChar(heap_getattr(chunk, 2, cdesc, &null2));
    Datum rows_datum = heap_getattr(chunk, 3, cdesc, &null3);
    if (null1 || null2 || null3 || (op != 'c' && op != 'd'))
        return;
    // the table the rows enter, when the chunk names it (DETACH ...
    // CONCURRENTLY writes them before the partition has left)
    bool null4 = true;
    Oid named = cdesc->natts >= 4 ? DatumGetObjectId(heap_getattr(chunk, 4, cdesc, &null4)) : InvalidOid;
    Relation rel = RelationIdGetRelation(relid);
    if (!RelationIsValid(rel))
        return;
    Oid target_id = InvalidOid;
    if (!null4)
        target_id = st->published.count(named) ? named : InvalidOid;
    else if (st->published.count(relid))
        target_id = relid;
    else if (rel->rd_rel->relispartition)
        target_id = published_ancestor(st, relid);
    if (!OidIsValid(target_id)) {
        RelationClose(rel);
        return;
    }
    if (op == 'd')
        st->ddl_removed.insert(relid);
    Relation target = target_id == relid ? nullptr : open_target(target_id);
    TupleConversionMap *map = map_to(rel, target);
    bytea *rows = DatumGetByteaPP(rows_datum);
    const char *p = VARDATA_ANY(rows);
    const char *end = p + VARSIZE_ANY_EXHDR(rows);
    MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "creek partition row",
                                                 ALLOCSET_DEFAULT_SIZES);
    while (p < end) {
        uint32 len;
        if (end - p < (ptrdiff_t) sizeof len)
            elog(ERROR, "creek found a malformed chunk of creek.partition_rows");
        memcpy(&len, p, sizeof len);
        p += sizeof len;
        if ((size_t) (end - p) < len)
            elog(ERROR, "creek found a malformed chunk of creek.partition_rows");
        MemoryContext old = MemoryContextSwitchTo(rowcxt);
        HeapTuple tup = nullptr;
        if (len > 0) {   // (0: a removed row of which the WAL would keep nothing)
            tup = static_cast<HeapTuple>(palloc(HEAPTUPLESIZE + len));
            tup->t_len = len;
            ItemPointerSetInvalid(&tup->t_self);
            tup->t_tableOid = relid;
            tup->t_data = reinterpret_cast<HeapTupleHeader>(reinterpret_cast<char *>(tup) + HEAPTUPLESIZE);
            memcpy(tup->t_data, p, len);
        }
        p += len;
        if (op == 'c')
            publish_row(st, rel, target, map, REORDER_BUFFER_CHANGE_INSERT, lsn, nullptr, tup);
        else
            publish_row(st, rel, target, map, REORDER_BUFFER_CHANGE_DELETE, lsn, tup, nullptr);
        MemoryContextSwitchTo(old);
        MemoryContextReset(rowcxt);
        creek_wait_for_room();
    }
    MemoryContextDelete(rowcxt);
    if (target != nullptr)
        RelationClose(target);
    RelationClose(rel);
}

static void change_impl(CreekStream *st, Relation rel, ReorderBufferChange *change)
{
    Oid relid = RelationGetRelid(rel);
    if (st->membership_valid && relid == st->tables_relid) {
        st->membership_valid = false;  // creek.add_table/remove_table: reread
        return;
    }
    if (!st->membership_valid)
        load_membership(st);
    if (relid == st->tables_relid)
        return;
    if (rel->rd_rel->relnamespace == st->creek_nsp &&
        strcmp(RelationGetRelationName(rel), CREEK_PARTITION_ROWS_TABLE) == 0) {
        if (change->action == REORDER_BUFFER_CHANGE_INSERT && change->data.tp.newtuple != nullptr)
            publish_partition_rows(st, rel, &change->data.tp.newtuple->tuple, change->lsn);
        return;
    }
    if (st->published.count(relid)) {
        publish_change(st, rel, nullptr, change);
        return;
    }
    if (!rel->rd_rel->relispartition)
        return;
    Oid target_id = published_ancestor(st, relid);
    if (!OidIsValid(target_id))
        return;
    Relation target = open_target(target_id);
    publish_change(st, rel, target, change);
    RelationClose(target);
}

#define CREEK_GUARD(stmt) CREEK_CXX_GUARD(stmt, "creek could not encode a change")

static void startup_cb(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
    if (creek_stream == nullptr)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("the creek output plugin can only be used by creek's streaming worker"),
                 errdetail("creek publishes changes to NATS itself; its plugin produces no output for SQL or replication clients."),
                 errhint("Use creek.add_table() to publish a table and read its changes from NATS.")));
    opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
    opt->receive_rewrites = false;
    ctx->output_plugin_private = creek_stream;
    // After a failover the new primary's WAL (a new timeline) reuses the LSNs
    // that the old primary had written past the standby's last replayed
    // position: the timeline keeps a message id from naming a change the old
    // primary published. A primary's timeline does not change while it runs,
    // and on Postgres 15 a slot never outlives a timeline switch (it is not
    // copied to standbys).
    TimeLineID tli = GetWALInsertionTimeLine();
    creek_stream->msg_id_prefix[0] = '\0';
    if (tli > 1)
        snprintf(creek_stream->msg_id_prefix, sizeof creek_stream->msg_id_prefix, "%u@", tli);
}

static void shutdown_cb(LogicalDecodingContext *ctx) {}

// The current transaction's fields of every message (begin, or the commit of
// a streamed transaction).
static void set_txn(CreekStream *st, ReorderBufferTXN *txn)
{
    st->txn_commit_lsn = txn->final_lsn;
    st->txn_end_lsn = txn->end_lsn;
    st->txn_commit_unix_us = txn->xact_time.commit_time + kUnixToPgMicros;
    st->txn_index = 0;
    snprintf(st->txn_msg_id_base, sizeof st->txn_msg_id_base, "%s%X/%X", st->msg_id_prefix,
             LSN_FORMAT_ARGS(txn->final_lsn));
    st->txn_commit_lsn_text = st->txn_msg_id_base + strlen(st->msg_id_prefix);
    // 64-bit id as txid_current() reports it: the xid is older than the next one.
    FullTransactionId next = ReadNextFullTransactionId();
    uint32 epoch = EpochFromFullTransactionId(next);
    if (txn->xid > XidFromFullTransactionId(next))
        epoch--;
    st->txn_full_xid = ((int64) epoch << 32) | txn->xid;
}

static void begin_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    set_txn(st, txn);
    st->ddl_removed.clear();
}

static void change_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
                      ReorderBufferChange *change)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    MemoryContext old = MemoryContextSwitchTo(st->change_cxt);
    CREEK_GUARD(change_impl(st, rel, change));
    MemoryContextSwitchTo(old);
    MemoryContextReset(st->change_cxt);
    creek_wait_for_room();
}

// A partition that this TRUNCATE emptied, whose changes go to target, and
// whose rows the transaction did not publish as removed (creek.partition_rows)
// before; or InvalidOid.
static Oid unpublished_truncated_leaf(CreekStream *st, Oid target, int nrelations, Relation relations[])
{
    for (int i = 0; i < nrelations; i++) {
        Relation rel = relations[i];
        Oid relid = RelationGetRelid(rel);
        if (rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rel->relispartition &&
            !st->published.count(relid) && published_ancestor(st, relid) == target &&
            !st->ddl_removed.count(relid))
            return relid;
    }
    return InvalidOid;
}

static char *qualified_relname(Oid relid)
{
    char *relname = get_rel_name(relid);
    if (relname == nullptr)
        return psprintf("%u", relid);
    return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), relname);
}

// One TRUNCATE statement. A published ordinary table gets a 't' message. A
// published partitioned table gets one 't' message when the statement
// emptied it whole (TRUNCATE of it or of an ancestor, or of all of its
// partitions); a TRUNCATE of only some of its partitions publishes nothing
// (README, "Partitioned tables") and is logged.
static void truncate_impl(CreekStream *st, int nrelations, Relation relations[],
                          ReorderBufferChange *change)
{
    if (!st->membership_valid)
        load_membership(st);
    Oid *handled = static_cast<Oid *>(palloc(sizeof(Oid) * (nrelations + 1)));
    List *truncated = NIL;   // the statement's relations, as OIDs (when needed)
    int nhandled = 0;
    for (int i = 0; i < nrelations; i++) {
        Relation rel = relations[i];
        Oid relid = RelationGetRelid(rel);
        if (relid == st->tables_relid) {
            st->membership_valid = false;
            continue;
        }
        bool partitioned = rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;
        if (st->published.count(relid) && !partitioned) {
            CreekTable *t = get_table(st, rel);
            emit(st, t, OP_T, change->lsn, RelationGetDescr(rel), nullptr, nullptr);
            continue;
        }
        // a partition, or a partitioned table: the topmost published table
        // among its ancestors and itself
        Oid target_id = rel->rd_rel->relispartition ? published_ancestor(st, relid) : InvalidOid;
        if (!OidIsValid(target_id) && partitioned && st->published.count(relid))
            target_id = relid;
        if (!OidIsValid(target_id))
            continue;
        bool seen = false;
        for (int j = 0; j < nhandled; j++)
            seen = seen || handled[j] == target_id;
        if (seen)
            continue;  // one message per partitioned table and statement
        handled[nhandled++] = target_id;
        if (truncated == NIL)
            for (int j = 0; j < nrelations; j++)
                truncated = lappend_oid(truncated, RelationGetRelid(relations[j]));
        if (!creek_truncates_whole_tree(target_id, truncated)) {
            Oid leaf = unpublished_truncated_leaf(st, target_id, nrelations, relations);
            if (OidIsValid(leaf))
                ereport(LOG,
                        (errmsg("creek does not publish the TRUNCATE of partition \"%s\" of table \"%s\"",
                                qualified_relname(leaf), qualified_relname(target_id)),
                         errdetail("Its rows leave the table without messages: it was truncated with "
                                   "creek.publish_partition_ddl off, by a logical replication subscription, "
                                   "or before ALTER EXTENSION creek UPDATE to 0.6.0."),
                         errhint("A snapshot of the table (creek.snapshot()) lets consumers catch up.")));
            continue;
        }
        Relation target = target_id == relid ? rel : open_target(target_id);
        CreekTable *t = get_table(st, target);
        emit(st, t, OP_T, change->lsn, RelationGetDescr(target), nullptr, nullptr);
        if (target != rel)
            RelationClose(target);
    }
}

static void truncate_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
                        Relation relations[], ReorderBufferChange *change)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    MemoryContext old = MemoryContextSwitchTo(st->change_cxt);
    CREEK_GUARD(truncate_impl(st, nrelations, relations, change));
    MemoryContextSwitchTo(old);
    MemoryContextReset(st->change_cxt);
    creek_wait_for_room();
}

static void commit_impl(CreekStream *st, ReorderBufferTXN *txn)
{
    st->ddl_removed.clear();
    uint64_t last = st->pub->last_position();
    // Transactions that published nothing new merge into the previous entry.
    if (!st->pending.empty() && st->pending.back().last_position == last)
    {
        st->pending.back().end_lsn = txn->end_lsn;
        st->pending.back().commit_time = txn->xact_time.commit_time;
    }
    else
        st->pending.push_back({last, txn->end_lsn, txn->xact_time.commit_time});
}

static void commit_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    CREEK_GUARD(commit_impl(st, txn));
}

// Large transactions. When a transaction's changes outgrow
// logical_decoding_work_mem, Postgres streams them before the commit, in
// blocks (stream_start .. stream_stop), instead of spilling them to its own
// files and reading them back at the commit. creek encodes each change at
// once into the transaction's spool (spool.hpp) and publishes the spool at
// the commit: the same messages, ids and order as for a transaction decoded
// at its commit. An abort drops the spool, or cuts off an aborted
// subtransaction's changes.
static const char *const kSpoolDir = "base/pgsql_tmp";   // Postgres' own temporary files' directory

static void open_spool(CreekStream *st, TransactionId xid)
{
    std::unique_ptr<creek::Spool> &sp = st->spools[xid];
    if (!sp)
        sp.reset(new creek::Spool(kSpoolDir));
    st->spool = sp.get();
}

static void stream_start_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    (void) MakePGDirectory(kSpoolDir);   // exists already, except in a new cluster
    CREEK_GUARD(open_spool(st, txn->xid));
}

static void stream_stop_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    creek::Spool *sp = st->spool;
    st->spool = nullptr;
    if (sp != nullptr)
        CREEK_GUARD(sp->flush());
}

// Before a streamed change goes to the ordinary callbacks (whose emit()
// writes to st->spool): note where its subtransaction's changes begin. The
// callbacks' txn is the toplevel transaction; the change knows its own.
static void before_streamed_change(LogicalDecodingContext *ctx, ReorderBufferChange *change)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    if (st->spool == nullptr)
        elog(ERROR, "creek received a streamed change outside a stream block");
    if (change->txn != nullptr && change->txn->toptxn != nullptr)
        CREEK_GUARD(st->spool->mark_subxact(change->txn->xid));
}

static void stream_change_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel,
                             ReorderBufferChange *change)
{
    before_streamed_change(ctx, change);
    change_cb(ctx, txn, rel, change);
}

static void stream_truncate_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
                               Relation relations[], ReorderBufferChange *change)
{
    before_streamed_change(ctx, change);
    truncate_cb(ctx, txn, nrelations, relations, change);
}

static void abort_impl(CreekStream *st, ReorderBufferTXN *txn)
{
    if (txn->toptxn == nullptr) {
        auto it = st->spools.find(txn->xid);
        if (it != st->spools.end()) {
            if (st->spool == it->second.get())
                st->spool = nullptr;   // (aborts come outside stream blocks; never left dangling)
            st->spools.erase(it);
        }
        return;
    }
    auto it = st->spools.find(txn->toptxn->xid);
    if (it != st->spools.end())
        it->second->abort_subxact(txn->xid);
}

static void stream_abort_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr abort_lsn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    CREEK_GUARD(abort_impl(st, txn));
}

static creek::Spool *committing_spool(CreekStream *st, TransactionId xid)
{
    auto it = st->spools.find(xid);
    if (it == st->spools.end())
        return nullptr;
    it->second->rewind();
    return it->second.get();
}

static void stream_commit_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
    CreekStream *st = static_cast<CreekStream *>(ctx->output_plugin_private);
    creek::Spool *sp = nullptr;
    set_txn(st, txn);
    CREEK_GUARD(sp = committing_spool(st, txn->xid));
    bool more = sp != nullptr;
    while (more) {
        CREEK_GUARD(more = publish_spooled(st, sp));
        if (more)
            creek_wait_for_room();
    }
    CREEK_GUARD(st->spools.erase(txn->xid));
    CREEK_GUARD(commit_impl(st, txn));
}

void _PG_output_plugin_init(OutputPluginCallbacks *cb)
{
    cb->startup_cb = startup_cb;
    cb->begin_cb = begin_cb;
    cb->change_cb = change_cb;
    cb->truncate_cb = truncate_cb;
    cb->commit_cb = commit_cb;
    cb->shutdown_cb = shutdown_cb;
    cb->stream_start_cb = stream_start_cb;
    cb->stream_stop_cb = stream_stop_cb;
    cb->stream_change_cb = stream_change_cb;
    cb->stream_truncate_cb = stream_truncate_cb;
    cb->stream_abort_cb = stream_abort_cb;
    cb->stream_commit_cb = stream_commit_cb;
}

// Relcache invalidation: the table's definition, or a partition's place in
// its tree, may have changed.
void creek_relcache_invalidate(Datum arg, Oid relid)
{
    CreekStream *st = creek_stream;
    if (st == nullptr)
        return;
    if (!OidIsValid(relid)) {
        for (auto &kv : st->tables)
            kv.second.stale = true;
        st->membership_valid = false;
        st->partition_routes.clear();
        st->route_ancestors.clear();
        return;
    }
    auto it = st->tables.find(relid);
    if (it != st->tables.end())
        it->second.stale = true;
    // ALTER TYPE of a composite type used by a published table's columns
    for (auto &kv : st->tables)
        for (const auto &c : kv.second.info.columns)
            if (creek::type_uses_relid(c.type, relid))
                kv.second.stale = true;
    // a partition's ancestors may have changed (ATTACH/DETACH PARTITION)
    if (st->partition_routes.count(relid) || st->route_ancestors.count(relid)) {
        st->partition_routes.clear();
        st->route_ancestors.clear();
    }
}
