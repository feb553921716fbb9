// type_map.cpp: Postgres type -> creek::TypeInfo (the encoding of its values
// and, through schema.cpp, its Avro type). One table: classify_base().
//
// The Postgres half is compiled only into the extension (CREEK_PG, set by the
// Makefile); the unit tests use the plain half alone.
#ifdef CREEK_PG
#include "pg.hpp"
#include "names.hpp"
#endif
#include "type_map.hpp"

namespace creek {

bool type_uses_relid(const TypeInfo &t, unsigned relid)
{
    if (t.relid == relid)
        return true;
    for (const auto &f : t.fields)
        if (type_uses_relid(f.type, relid))
            return true;
    for (const auto &e : t.elem)
        if (type_uses_relid(e, relid))
            return true;
    return false;
}

std::string avro_name_of(const std::string &pg_name)
{
    std::string out;
    for (unsigned char c : pg_name) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        out.push_back(ok ? static_cast<char>(c) : '_');
    }
    if (out.empty() || (out[0] >= '0' && out[0] <= '9'))
        out.insert(out.begin(), '_');
    return out;
}

}  // namespace creek

#ifdef CREEK_PG
using creek::ValueKind;

// Built-in types with an Avro mapping of their own; every other type (and
// every type of another extension) is encoded as its text output.
static ValueKind classify_base(Oid typid)
{
    switch (typid) {
    case BOOLOID: return ValueKind::Bool;
    case INT2OID: return ValueKind::Int2;
    case INT4OID: return ValueKind::Int4;
    case INT8OID: return ValueKind::Int8;
    case OIDOID: return ValueKind::Oid;
    case FLOAT4OID: return ValueKind::Float4;
    case FLOAT8OID: return ValueKind::Float8;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
    case JSONOID:
    case XMLOID: return ValueKind::Text;
    case NAMEOID: return ValueKind::Name;
    case BYTEAOID: return ValueKind::Bytea;
    case DATEOID: return ValueKind::Date;
    case TIMEOID: return ValueKind::Time;
    case TIMETZOID: return ValueKind::TimeTz;
    case TIMESTAMPOID: return ValueKind::Timestamp;
    case TIMESTAMPTZOID: return ValueKind::TimestampTz;
    case INTERVALOID: return ValueKind::Interval;
    case UUIDOID: return ValueKind::Uuid;
    case CASHOID: return ValueKind::Money;
    default: return ValueKind::OutputText;  // numeric, jsonb, inet, bit, geometric, ...
    }
}

static void describe(Oid typid, creek::TypeInfo *out, int depth)
{
    if (depth > 32)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("type %s is nested too deeply for creek", format_type_be(typid))));
    Oid base = getBaseType(typid);
    out->oid = typid;
    out->base_oid = base;
    out->relid = 0;
    out->pg_type = creek_name_utf8(format_type_be(typid));
    out->name.clear();
    out->fields.clear();
    out->elem.clear();
    out->enum_labels.clear();

    char typtype = get_typtype(base);
    Oid elem = get_element_type(base);
    if (OidIsValid(elem) && get_typlen(base) == -1) {
        out->kind = ValueKind::Array;
        out->elem.emplace_back();
        describe(elem, &out->elem.back(), depth + 1);
        out->name = "pg_md_" + creek::avro_name_of(creek_name_utf8(format_type_be(getBaseType(elem))));
        return;
    }
    switch (typtype) {
    case TYPTYPE_ENUM: {
        out->kind = ValueKind::Enum;
        // labels in sort order
        CatCList *list = SearchSysCacheList1(ENUMTYPOIDNAME, ObjectIdGetDatum(base));
        int n = list->n_members;
        float4 *orders = (float4 *) palloc(sizeof(float4) * Max(n, 1));
        char **labels = (char **) palloc(sizeof(char *) * Max(n, 1));
        for (int i = 0; i < n; i++) {
            Form_pg_enum e = (Form_pg_enum) GETSTRUCT(&list->members[i]->tuple);
            orders[i] = e->enumsortorder;
            labels[i] = pstrdup(creek_name_utf8(NameStr(e->enumlabel)));
        }
        ReleaseSysCacheList(list);
        for (int i = 1; i < n; i++)  // insertion sort by sort order
            for (int j = i; j > 0 && orders[j - 1] > orders[j]; j--) {
                float4 of = orders[j]; orders[j] = orders[j - 1]; orders[j - 1] = of;
                char *ol = labels[j]; labels[j] = labels[j - 1]; labels[j - 1] = ol;
            }
        for (int i = 0; i < n; i++)
            out->enum_labels.push_back(labels[i]);
        return;
    }
    case TYPTYPE_COMPOSITE: {
        out->kind = ValueKind::Composite;
        out->relid = get_typ_typrelid(base);
        out->name = "pg_" + creek::avro_name_of(creek_name_utf8(format_type_be(base)));
        TupleDesc desc = lookup_rowtype_tupdesc(base, -1);
        for (int i = 0; i < desc->natts; i++) {
            Form_pg_attribute att = TupleDescAttr(desc, i);
            if (att->attisdropped)
                continue;
            out->fields.emplace_back();
            creek::TypeInfo::Field &f = out->fields.back();
            f.pg_name = creek_name_utf8(NameStr(att->attname));
            f.attnum = att->attnum;
            describe(att->atttypid, &f.type, depth + 1);
        }
        ReleaseTupleDesc(desc);
        // valid, unique field names
        for (size_t i = 0; i < out->fields.size(); i++) {
            std::string n = creek::avro_name_of(out->fields[i].pg_name);
            std::string candidate = n;
            for (int k = 2;; k++) {
                bool used = false;
                for (size_t j = 0; j < i; j++)
                    used |= out->fields[j].avro_name == candidate;
                if (!used)
                    break;
                candidate = n + "_" + std::to_string(k);
            }
            out->fields[i].avro_name = candidate;
        }
        return;
    }
    case TYPTYPE_RANGE: {
        out->kind = ValueKind::Range;
        out->name = "pg_" + creek::avro_name_of(creek_name_utf8(format_type_be(base)));
        out->elem.emplace_back();
        describe(get_range_subtype(base), &out->elem.back(), depth + 1);
        return;
    }
    case TYPTYPE_MULTIRANGE: {
        out->kind = ValueKind::Multirange;
        out->elem.emplace_back();
        describe(get_multirange_range(base), &out->elem.back(), depth + 1);
        return;
    }
    default:
        out->kind = classify_base(base);
        return;
    }
}

void creek_describe_type(Oid typid, creek::TypeInfo *out)
{
    describe(typid, out, 0);
}
#endif  // CREEK_PG
