// encoder.cpp: Postgres values -> Avro binary, following type_map.hpp.
//
// Called from the output plugin callbacks. No C++ object with a destructor is
// alive in these frames while Postgres functions run (see pg.hpp).
#include "encoder.hpp"


using creek::ValueKind;

// Microseconds and days between 1970-01-01 and 2000-01-01.
static const int64 kUnixToPgMicros = INT64CONST(946684800000000);
static const int32 kUnixToPgDays = 10957;

static bool server_is_utf8()
{
    int enc = GetDatabaseEncoding();
    return enc == PG_UTF8 || enc == PG_SQL_ASCII;
}

static void put_server_text(creek::AvroWriter *w, const char *s, int len)
{
    if (server_is_utf8()) {
        w->put_string(s, len);
        return;
    }
    char *conv = (char *) pg_do_encoding_conversion((unsigned char *) s, len,
                                                    GetDatabaseEncoding(), PG_UTF8);
    if (conv == s)
        w->put_string(s, len);
    else
        w->put_string(conv, strlen(conv));
}

CreekColumnCodec *creek_prepare_codecs(const creek::TableInfo &info, MemoryContext mcxt)
{
    CreekColumnCodec *codecs =
        (CreekColumnCodec *) MemoryContextAllocZero(mcxt, sizeof(CreekColumnCodec) * Max(info.columns.size(), 1));
    for (size_t i = 0; i < info.columns.size(); i++) {
        const creek::ColumnInfo &c = info.columns[i];
        CreekColumnCodec *cc = &codecs[i];
        Oid out_type = InvalidOid;
        if (c.kind == ValueKind::OutputText)
            out_type = c.type_oid;
        else if (c.kind == ValueKind::Array) {
            get_typlenbyvalalign(c.elem_oid, &cc->elem_len, &cc->elem_byval, &cc->elem_align);
            if (c.elem_kind == ValueKind::OutputText)
                out_type = c.elem_oid;
        }
        if (OidIsValid(out_type)) {
            Oid fn;
            bool varlena;
            getTypeOutputInfo(out_type, &fn, &varlena);
            fmgr_info_cxt(fn, &cc->out_fn, mcxt);
            cc->has_out_fn = true;
        }
    }
    return codecs;
}

static void encode_uuid(creek::AvroWriter *w, Datum d)
{
    static const char hex[] = "0123456789abcdef";
    pg_uuid_t *u = DatumGetUUIDP(d);
    char buf[36];
    int p = 0;
    for (int i = 0; i < UUID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[p++] = '-';
        buf[p++] = hex[u->data[i] >> 4];
        buf[p++] = hex[u->data[i] & 15];
    }
    w->put_string(buf, 36);
}

static void encode_scalar(creek::AvroWriter *w, ValueKind kind, const CreekColumnCodec *cc, Datum d)
{
    switch (kind) {
    case ValueKind::Bool: w->put_bool(DatumGetBool(d)); break;
    case ValueKind::Int2: w->put_int(DatumGetInt16(d)); break;
    case ValueKind::Int4: w->put_int(DatumGetInt32(d)); break;
    case ValueKind::Int8: w->put_long(DatumGetInt64(d)); break;
    case ValueKind::Float4: w->put_float(DatumGetFloat4(d)); break;
    case ValueKind::Float8: w->put_double(DatumGetFloat8(d)); break;
    case ValueKind::Text: {
        struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));
        put_server_text(w, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
        break;
    }
    case ValueKind::Name: {
        const char *s = NameStr(*DatumGetName(d));
        put_server_text(w, s, strlen(s));
        break;
    }
    case ValueKind::Bytea: {
        struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));
        w->put_bytes(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
        break;
    }
    case ValueKind::Date: {
        DateADT v = DatumGetDateADT(d);
        w->put_int(DATE_NOT_FINITE(v) ? v : v + kUnixToPgDays);
        break;
    }
    case ValueKind::Time: w->put_long(DatumGetTimeADT(d)); break;
    case ValueKind::Timestamp:
    case ValueKind::TimestampTz: {
        int64 v = DatumGetInt64(d);
        w->put_long(TIMESTAMP_NOT_FINITE(v) ? v : v + kUnixToPgMicros);
        break;
    }
    case ValueKind::Uuid: encode_uuid(w, d); break;
    case ValueKind::OutputText:
    case ValueKind::Array: {
        char *s = OutputFunctionCall(const_cast<FmgrInfo *>(&cc->out_fn), d);
        put_server_text(w, s, strlen(s));
        break;
    }
    }
}

static void encode_array(creek::AvroWriter *w, const creek::ColumnInfo &c, const CreekColumnCodec *cc,
                         Datum d)
{
    ArrayType *arr = DatumGetArrayTypeP(d);
    Datum *elems;
    bool *nulls;
    int n;
    deconstruct_array(arr, ARR_ELEMTYPE(arr), cc->elem_len, cc->elem_byval, cc->elem_align, &elems,
                      &nulls, &n);
    if (n > 0) {
        w->put_array_block(n);
        for (int i = 0; i < n; i++) {
            if (nulls[i]) {
                w->put_union_branch(0);
            } else {
                w->put_union_branch(1);
                encode_scalar(w, c.elem_kind, cc, elems[i]);
            }
        }
    }
    w->put_array_end();
}

void creek_encode_record(creek::AvroWriter *w, const creek::TableInfo &info,
                         const CreekColumnCodec *codecs, const std::vector<int> &cols,
                         TupleDesc desc, HeapTuple tuple)
{
    for (int idx : cols) {
        const creek::ColumnInfo &c = info.columns[idx];
        bool isnull = true;
        Datum d = (Datum) 0;
        if (c.attnum <= desc->natts)
            d = heap_getattr(tuple, c.attnum, desc, &isnull);
        if (isnull) {
            w->put_union_branch(0);
            continue;
        }
        if (c.toastable && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(d))) {
            w->put_union_branch(2);  // "unchanged": an empty record
            continue;
        }
        w->put_union_branch(1);
        if (c.kind == ValueKind::Array)
            encode_array(w, c, &codecs[idx], d);
        else
            encode_scalar(w, c.kind, &codecs[idx], d);
    }
}
