// table_info.cpp: relation -> TableInfo (columns, types, replica identity).
#include "table_info.hpp"

#include "names.hpp"


void creek_read_table_info(Relation rel, creek::TableInfo *out)
{
    TupleDesc desc = RelationGetDescr(rel);
    Bitmapset *ident = nullptr;
    char relident = rel->rd_rel->relreplident;

    out->schema_name = get_namespace_name(RelationGetNamespace(rel));
    out->table_name = RelationGetRelationName(rel);
    out->schema_utf8 = creek_name_utf8(out->schema_name.c_str());
    out->table_utf8 = creek_name_utf8(out->table_name.c_str());
    out->replica_identity = relident;
    out->columns.clear();
    if (relident == REPLICA_IDENTITY_DEFAULT || relident == REPLICA_IDENTITY_INDEX)
        ident = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);

    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped || att->attnum <= 0)
            continue;
        out->columns.emplace_back();
        creek::ColumnInfo &c = out->columns.back();
        c.attnum = att->attnum;
        c.pg_name = creek_name_utf8(NameStr(att->attname));
        creek_describe_type(att->atttypid, &c.type);
        c.pg_type = c.type.pg_type;
        c.toastable = att->attlen == -1;
        if (relident == REPLICA_IDENTITY_FULL)
            c.is_key = true;
        else if (ident != nullptr)
            c.is_key = bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, ident);
    }
    creek::assign_avro_names(out->columns);
    if (ident)
        bms_free(ident);
}
