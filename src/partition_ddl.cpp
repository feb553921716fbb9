// partition_ddl.cpp: the rows that partition DDL takes out of, or brings
// into, a published partitioned table, written into the WAL so that the
// streaming worker publishes them (README, "Partitioned tables").
//
// TRUNCATE (CASCADE too), DROP TABLE (DROP SCHEMA ... CASCADE, DROP OWNED)
// and DETACH PARTITION of a partition remove its rows from the partitioned
// table; ATTACH PARTITION adds the attached table's rows.
// The WAL holds none of these rows: only the DDL. In the session that runs
// the statement (a ProcessUtility hook, module.cpp), creek reads them and
// inserts them, in chunks, into the extension's table creek.partition_rows
// (deleting each chunk again in the same statement). Its decoder turns each
// inserted chunk into one 'd' (removed) or 'c' (added) message per row, on
// the subject of the table the rows leave or enter, in the transaction's
// order. Only the extension's owner can write that table, so no other role
// can make creek publish a change (a logical decoding message can be written
// by any role).
//
// Which published table a partition's changes go to (its route) is the
// decoder's rule: the partition itself when it is published, else its
// topmost published ancestor. A statement publishes rows when it changes
// that route: removals are written before it runs (the decoder reads them
// with the catalog as it was), additions after (with the catalog as it is).
//
// Rule of pg.hpp: no object with a destructor lives in these frames.
#include "partition_ddl.hpp"

#include "settings.hpp"

extern "C" {
#include "catalog/heap.h"
#include "catalog/pg_namespace.h"
#include "storage/lmgr.h"
}

// A chunk of rows: one insert into creek.partition_rows (TOASTed, not
// compressed: column storage EXTERNAL).
static const int kChunkBytes = 1024 * 1024;

struct RowsOut {
    Relation rel = nullptr;     // creek.partition_rows
    List *written = NIL;        // ItemPointer of every chunk inserted
};

bool creek_has_wal_rows(Oid relid)
{
    return get_rel_relkind(relid) == RELKIND_RELATION &&
           get_rel_persistence(relid) == RELPERSISTENCE_PERMANENT;
}

List *creek_published_relids(Oid tables_relid)
{
    List *out = NIL;
    Relation rel = table_open(tables_relid, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 0, nullptr);
    HeapTuple tup;
    while ((tup = systable_getnext(scan)) != nullptr) {
        bool isnull;
        Datum d = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);
        if (!isnull)
            out = lappend_oid(out, DatumGetObjectId(d));
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return out;
}

// The route of leaf when its ancestors are chain (parent first).
static Oid route_over(Oid leaf, List *published, List *chain)
{
    if (list_member_oid(published, leaf))
        return leaf;
    Oid target = InvalidOid;
    ListCell *lc;
    foreach (lc, chain)
        if (list_member_oid(published, lfirst_oid(lc)))
            target = lfirst_oid(lc);
    return target;
}

static Oid route_now(Oid leaf, List *published)
{
    return route_over(leaf, published, get_rel_relispartition(leaf) ? get_partition_ancestors(leaf) : NIL);
}

// leaf's ancestors up to top (included), parent first; NIL for top itself.
static List *chain_up_to(Oid leaf, Oid top)
{
    if (leaf == top)
        return NIL;
    List *out = NIL;
    ListCell *lc;
    List *all = get_partition_ancestors(leaf);
    foreach (lc, all) {
        out = lappend_oid(out, lfirst_oid(lc));
        if (lfirst_oid(lc) == top)
            break;
    }
    return out;
}

// A chunk being filled: a bytea, its length word first.
static void start_chunk(StringInfo buf)
{
    resetStringInfo(buf);
    appendStringInfoSpaces(buf, VARHDRSZ);
}

// Inserts the chunk in buf. target: the published table the rows enter, or
// InvalidOid for the decoder's route of leaf where the chunk is in the WAL.
static void write_chunk(RowsOut *out, Oid leaf, char op, Oid target, StringInfo buf)
{
    Datum values[4];
    bool nulls[4] = {false, false, false, !OidIsValid(target)};
    SET_VARSIZE(buf->data, buf->len);
    values[0] = ObjectIdGetDatum(leaf);
    values[1] = CharGetDatum(op);
    values[2] = PointerGetDatum(buf->data);
    values[3] = ObjectIdGetDatum(target);
    HeapTuple tup = heap_form_tuple(RelationGetDescr(out->rel), values, nulls);
    simple_heap_insert(out->rel, tup);
    ItemPointer tid = static_cast<ItemPointer>(palloc(sizeof(ItemPointerData)));
    *tid = tup->t_self;
    out->written = lappend(out->written, tid);
    heap_freetuple(tup);
    start_chunk(buf);
}

// Writes every row of leaf (locked by the caller) as op: 'c' the whole row,
// 'd' what the WAL keeps of a deleted row (its replica identity: the whole
// row when FULL, the key columns, or nothing). Values stored out of line are
// inlined: the decoder cannot read the partition's TOAST table.
static void write_rows_of(RowsOut *out, Oid leaf, char op, Oid target = InvalidOid)
{
    Relation rel = table_open(leaf, NoLock);
    TupleDesc desc = RelationGetDescr(rel);
    const int natts = desc->natts;
    const bool whole = op == 'c' || rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
    Bitmapset *key = whole ? nullptr : RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
    const bool nothing = !whole && (key == nullptr || rel->rd_rel->relreplident == REPLICA_IDENTITY_NOTHING);
    Datum *values = static_cast<Datum *>(palloc(sizeof(Datum) * Max(natts, 1)));
    bool *nulls = static_cast<bool *>(palloc(sizeof(bool) * Max(natts, 1)));
    MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "creek partition row",
                                                 ALLOCSET_DEFAULT_SIZES);
    // Every committed row: the statement holds (or will take) a lock that
    // keeps other writers out, and a snapshot taken earlier might miss rows
    // committed before the lock was granted.
    Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
    TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
    TupleTableSlot *slot = table_slot_create(rel, nullptr);
    StringInfoData buf;
    initStringInfo(&buf);
    start_chunk(&buf);
    const int chunks_before = list_length(out->written);
    while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
        CHECK_FOR_INTERRUPTS();
        uint32 len = 0;
        if (nothing) {
            appendBinaryStringInfo(&buf, reinterpret_cast<char *>(&len), sizeof len);
        } else {
            MemoryContext old = MemoryContextSwitchTo(rowcxt);
            slot_getallattrs(slot);
            for (int i = 0; i < natts; i++) {
                Form_pg_attribute att = TupleDescAttr(desc, i);
                nulls[i] = slot->tts_isnull[i] || att->attisdropped ||
                           (!whole && !bms_is_member(i + 1 - FirstLowInvalidHeapAttributeNumber, key));
                values[i] = nulls[i] ? (Datum) 0 : slot->tts_values[i];
                if (!nulls[i] && att->attlen == -1 && VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
                    values[i] = PointerGetDatum(
                        detoast_external_attr(reinterpret_cast<struct varlena *>(DatumGetPointer(values[i]))));
            }
            HeapTuple tup = heap_form_tuple(desc, values, nulls);
            MemoryContextSwitchTo(old);
            len = tup->t_len;
            appendBinaryStringInfo(&buf, reinterpret_cast<char *>(&len), sizeof len);
            appendBinaryStringInfo(&buf, reinterpret_cast<char *>(tup->t_data), len);
            MemoryContextReset(rowcxt);
        }
        if (buf.len >= kChunkBytes)
            write_chunk(out, leaf, op, target, &buf);
    }
    // (an empty partition gets an empty chunk: the decoder learns that
    // nothing of it was left unpublished)
    if (buf.len > VARHDRSZ || list_length(out->written) == chunks_before)
        write_chunk(out, leaf, op, target, &buf);
    ExecDropSingleTupleTableSlot(slot);
    table_endscan(scan);
    UnregisterSnapshot(snap);
    MemoryContextDelete(rowcxt);
    pfree(buf.data);
    table_close(rel, NoLock);
}

// The chunks were decoded from the WAL as inserts: the table keeps nothing.
static void finish(RowsOut *out)
{
    if (out->rel == nullptr)
        return;
    if (out->written != NIL) {
        CommandCounterIncrement();   // make the inserted chunks deletable
        ListCell *lc;
        foreach (lc, out->written)
            simple_heap_delete(out->rel, static_cast<ItemPointer>(lfirst(lc)));
        list_free_deep(out->written);
        out->written = NIL;
    }
    table_close(out->rel, NoLock);
    out->rel = nullptr;
}

static void open_out(RowsOut *out, Oid rows_relid)
{
    if (out->rel == nullptr)
        out->rel = table_open(rows_relid, RowExclusiveLock);
}

bool creek_truncates_whole_tree(Oid root, List *set)
{
    if (list_member_oid(set, root))
        return true;
    List *tree = find_all_inheritors(root, NoLock, nullptr);
    bool all = true;
    ListCell *lc;
    foreach (lc, tree)
        if (creek_has_wal_rows(lfirst_oid(lc)) && !list_member_oid(set, lfirst_oid(lc)))
            all = false;
    list_free(tree);
    return all;
}

// The partitions of tree (top and those under it) whose route changes when
// top is cut from its parent (above NIL) or put under above (its new parent
// and that one's ancestors): writes their rows now, removed from the old
// route; notes them in ddl to be written after the statement, as added to
// the new route. concurrent (DETACH ... CONCURRENTLY, whose first
// transaction makes the partition leave, the statement ending in another):
// writes the added rows now too, naming the table they enter.
static void reroute(List *tree, Oid top, List *above, List *published, RowsOut *out, Oid rows_relid,
                    CreekPartitionDdl *ddl, bool concurrent, LOCKMODE leaf_lock)
{
    ListCell *lc;
    foreach (lc, tree) {
        Oid leaf = lfirst_oid(lc);
        if (!creek_has_wal_rows(leaf))
            continue;
        Oid before = route_now(leaf, published);
        Oid after = route_over(leaf, published, list_concat(chain_up_to(leaf, top), above));
        if (before == after)
            continue;
        if (OidIsValid(before) || (OidIsValid(after) && concurrent))
            LockRelationOid(leaf, leaf_lock);   // no writer while it is read
        if (OidIsValid(before)) {
            open_out(out, rows_relid);
            write_rows_of(out, leaf, 'd');
        }
        if (OidIsValid(after) && concurrent) {
            open_out(out, rows_relid);
            write_rows_of(out, leaf, 'c', after);
        } else if (OidIsValid(after)) {
            ddl->add_after = lappend_oid(ddl->add_after, leaf);
        }
    }
}

static void before_truncate(TruncateStmt *stmt, List *published, RowsOut *out, Oid rows_relid)
{
    List *truncated = NIL;
    ListCell *lc;
    foreach (lc, stmt->relations) {
        RangeVar *rv = lfirst_node(RangeVar, lc);
        Oid relid = RangeVarGetRelid(rv, NoLock, true);
        // (a role that may not truncate it gets TRUNCATE's own error)
        if (!OidIsValid(relid) || pg_class_aclcheck(relid, GetUserId(), ACL_TRUNCATE) != ACLCHECK_OK)
            continue;
        // the locks TRUNCATE takes, in its order
        LockRelationOid(relid, AccessExclusiveLock);
        List *tree = rv->inh ? find_all_inheritors(relid, AccessExclusiveLock, nullptr) : list_make1_oid(relid);
        truncated = list_concat_unique_oid(truncated, tree);
    }
    // CASCADE: the tables referencing them by foreign key, as TRUNCATE finds them
    while (stmt->behavior == DROP_CASCADE && truncated != NIL) {
        List *more = NIL;
        List *found = heap_truncate_find_FKs(truncated);
        foreach (lc, found)
            if (!list_member_oid(truncated, lfirst_oid(lc)))
                more = lappend_oid(more, lfirst_oid(lc));
        if (more == NIL)
            break;
        foreach (lc, more)
            LockRelationOid(lfirst_oid(lc), AccessExclusiveLock);
        truncated = list_concat(truncated, more);
    }
    foreach (lc, truncated) {
        Oid leaf = lfirst_oid(lc);
        if (!creek_has_wal_rows(leaf) || !get_rel_relispartition(leaf))
            continue;
        Oid target = route_now(leaf, published);
        // a table published itself, or a whole partitioned table: 't'
        if (!OidIsValid(target) || target == leaf || creek_truncates_whole_tree(target, truncated))
            continue;
        open_out(out, rows_relid);
        write_rows_of(out, leaf, 'd');
    }
}

// The ordinary and partitioned tables whose pg_class column attnum
// (relnamespace, relowner) is value.
static List *tables_where(AttrNumber attnum, Oid value)
{
    List *out = NIL;
    ScanKeyData key;
    ScanKeyInit(&key, attnum, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(value));
    Relation rel = table_open(RelationRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 1, &key);
    HeapTuple tup;
    while ((tup = systable_getnext(scan)) != nullptr) {
        Form_pg_class c = reinterpret_cast<Form_pg_class>(GETSTRUCT(tup));
        if (c->relkind == RELKIND_RELATION || c->relkind == RELKIND_PARTITIONED_TABLE)
            out = lappend_oid(out, c->oid);
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return out;
}

// A statement that drops the tables in dropped, and their partitions: the
// rows of those partitions whose route is a published table that stays.
static void write_dropped(List *dropped, List *published, RowsOut *out, Oid rows_relid)
{
    List *all = NIL;
    ListCell *lc;
    foreach (lc, dropped)
        all = list_concat_unique_oid(all, find_all_inheritors(lfirst_oid(lc), NoLock, nullptr));
    foreach (lc, all) {
        Oid leaf = lfirst_oid(lc);
        if (!creek_has_wal_rows(leaf) || !get_rel_relispartition(leaf))
            continue;
        Oid before = route_now(leaf, published);
        if (!OidIsValid(before) || list_member_oid(all, before))
            continue;   // not published, or its published table goes too
        LockRelationOid(leaf, AccessExclusiveLock);
        if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(leaf)))
            continue;   // dropped meanwhile
        open_out(out, rows_relid);
        write_rows_of(out, leaf, 'd');
    }
}

static void before_drop(DropStmt *stmt, List *published, RowsOut *out, Oid rows_relid)
{
    List *dropped = NIL;
    ListCell *lc;
    foreach (lc, stmt->objects) {
        if (stmt->removeType == OBJECT_SCHEMA) {
            // DROP SCHEMA ... CASCADE: its tables
            Oid nsp = get_namespace_oid(strVal(lfirst(lc)), true);
            if (!OidIsValid(nsp) || !pg_namespace_ownercheck(nsp, GetUserId()))
                continue;
            // the lock DROP SCHEMA takes first: no table is created in it meanwhile
            LockDatabaseObject(NamespaceRelationId, nsp, 0, AccessExclusiveLock);
            if (SearchSysCacheExists1(NAMESPACEOID, ObjectIdGetDatum(nsp)))
                dropped = list_concat(dropped, tables_where(Anum_pg_class_relnamespace, nsp));
            continue;
        }
        RangeVar *rv = makeRangeVarFromNameList(static_cast<List *>(lfirst(lc)));
        Oid relid = RangeVarGetRelid(rv, NoLock, true);
        // (the table's or its schema's owner may drop it; others get DROP's error)
        if (!OidIsValid(relid) || !(pg_class_ownercheck(relid, GetUserId()) ||
                                    pg_namespace_ownercheck(get_rel_namespace(relid), GetUserId())))
            continue;
        if (get_rel_relispartition(relid)) {
            // the locks DROP TABLE takes: the parent, then the partition
            LockRelationOid(get_partition_parent(relid, true), AccessExclusiveLock);
            LockRelationOid(relid, AccessExclusiveLock);
        }
        dropped = lappend_oid(dropped, relid);
    }
    write_dropped(dropped, published, out, rows_relid);
}

static void before_drop_owned(DropOwnedStmt *stmt, List *published, RowsOut *out, Oid rows_relid)
{
    List *dropped = NIL;
    ListCell *lc;
    foreach (lc, stmt->roles) {
        Oid role = get_rolespec_oid(lfirst_node(RoleSpec, lc), true);
        if (OidIsValid(role) && has_privs_of_role(GetUserId(), role))
            dropped = list_concat(dropped, tables_where(Anum_pg_class_relowner, role));
    }
    write_dropped(dropped, published, out, rows_relid);
}

static void before_attach_detach(AlterTableStmt *stmt, AlterTableCmd *cmd, List *published, RowsOut *out,
                                 Oid rows_relid, CreekPartitionDdl *ddl)
{
    PartitionCmd *pc = reinterpret_cast<PartitionCmd *>(cmd->def);
    const bool detach = cmd->subtype == AT_DetachPartition;
    Oid parent = RangeVarGetRelid(stmt->relation, NoLock, true);
    Oid part = RangeVarGetRelid(pc->name, NoLock, true);
    if (!OidIsValid(parent) || !OidIsValid(part) || get_rel_relkind(parent) != RELKIND_PARTITIONED_TABLE ||
        !pg_class_ownercheck(parent, GetUserId()))
        return;   // the statement fails on its own
    if (detach ? (!get_rel_relispartition(part) || get_partition_parent(part, true) != parent)
               : get_rel_relispartition(part))
        return;
    // the locks the statement takes, in its order: the parent, its default
    // partition (whose constraint changes), the partition (and for ATTACH
    // its partitions; DETACH does not lock those: the rows read are locked
    // against writers only)
    LockRelationOid(parent, detach && !pc->concurrent ? AccessExclusiveLock : ShareUpdateExclusiveLock);
    Oid default_part = get_default_partition_oid(parent);
    if (OidIsValid(default_part) && default_part != part) {
        if (pc->concurrent)
            return;   // refused by DETACH itself
        LockRelationOid(default_part, AccessExclusiveLock);
    }
    const LOCKMODE part_lock = pc->concurrent ? ShareUpdateExclusiveLock : AccessExclusiveLock;
    LockRelationOid(part, part_lock);
    List *tree = find_all_inheritors(part, detach ? NoLock : AccessExclusiveLock, nullptr);
    List *above = detach ? NIL : lcons_oid(parent, get_partition_ancestors(parent));
    // (CONCURRENTLY: the partition's changes are no longer the partitioned
    // table's from its first transaction's commit on, when other sessions
    // may write the partition again; a ShareLock keeps them out until then)
    reroute(tree, part, above, published, out, rows_relid, ddl, pc->concurrent,
            detach ? ShareLock : AccessExclusiveLock);
}

// The ATTACH and DETACH PARTITION commands of an ALTER TABLE.
static List *attach_detach_cmds(AlterTableStmt *stmt)
{
    List *out = NIL;
    ListCell *lc;
    if (stmt->objtype != OBJECT_TABLE)
        return NIL;
    foreach (lc, stmt->cmds) {
        AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
        if (cmd->subtype == AT_AttachPartition || cmd->subtype == AT_DetachPartition)
            out = lappend(out, cmd);
    }
    return out;
}

static bool is_partition_ddl(Node *stmt)
{
    if (IsA(stmt, TruncateStmt))
        return true;
    if (IsA(stmt, DropStmt)) {
        DropStmt *drop = reinterpret_cast<DropStmt *>(stmt);
        return drop->removeType == OBJECT_TABLE ||
               (drop->removeType == OBJECT_SCHEMA && drop->behavior == DROP_CASCADE);
    }
    if (IsA(stmt, DropOwnedStmt))
        return true;
    return IsA(stmt, AlterTableStmt) && attach_detach_cmds(reinterpret_cast<AlterTableStmt *>(stmt)) != NIL;
}

// creek.partition_rows of this database, or InvalidOid (no creek here, or a
// version before it).
static Oid partition_rows_table()
{
    Oid nsp = get_namespace_oid("creek", true);
    return OidIsValid(nsp) ? get_relname_relid(CREEK_PARTITION_ROWS_TABLE, nsp) : InvalidOid;
}

void creek_partition_ddl_before(Node *stmt, CreekPartitionDdl *ddl)
{
    if (!creek_publish_partition_ddl || !XLogLogicalInfoActive() || !IsTransactionState() ||
        !is_partition_ddl(stmt))
        return;
    Oid rows_relid = partition_rows_table();
    if (!OidIsValid(rows_relid))
        return;
    Oid tables_relid = get_relname_relid("tables", get_rel_namespace(rows_relid));
    List *published = OidIsValid(tables_relid) ? creek_published_relids(tables_relid) : NIL;
    if (published == NIL)
        return;
    RowsOut out;
    if (IsA(stmt, TruncateStmt)) {
        before_truncate(reinterpret_cast<TruncateStmt *>(stmt), published, &out, rows_relid);
    } else if (IsA(stmt, DropStmt)) {
        before_drop(reinterpret_cast<DropStmt *>(stmt), published, &out, rows_relid);
    } else if (IsA(stmt, DropOwnedStmt)) {
        before_drop_owned(reinterpret_cast<DropOwnedStmt *>(stmt), published, &out, rows_relid);
    } else {
        AlterTableStmt *at = reinterpret_cast<AlterTableStmt *>(stmt);
        ListCell *lc;
        foreach (lc, attach_detach_cmds(at))
            before_attach_detach(at, static_cast<AlterTableCmd *>(lfirst(lc)), published, &out, rows_relid, ddl);
    }
    finish(&out);
}

void creek_partition_ddl_after(CreekPartitionDdl *ddl)
{
    if (ddl->add_after == NIL)
        return;
    Oid rows_relid = partition_rows_table();
    if (!OidIsValid(rows_relid))
        return;
    RowsOut out;
    open_out(&out, rows_relid);
    ListCell *lc;
    foreach (lc, ddl->add_after)
        write_rows_of(&out, lfirst_oid(lc), 'c');
    finish(&out);
    list_free(ddl->add_after);
    ddl->add_after = NIL;
}
