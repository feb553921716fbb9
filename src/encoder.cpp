// encoder.cpp: Postgres values -> Avro binary, following type_map.hpp and the
// schema that schema.cpp writes for the same TypeInfo.
//
// Called from the output plugin callbacks. No C++ object with a destructor is
// alive in these frames while Postgres functions run (see pg.hpp).
#include "encoder.hpp"

#include "names.hpp"

using creek::TypeInfo;
using creek::ValueKind;

// Microseconds and days between 1970-01-01 and 2000-01-01.
static const int64 kUnixToPgMicros = INT64CONST(946684800000000);
static const int32 kUnixToPgDays = 10957;

static void put_server_text(creek::AvroWriter *w, const char *s, int len)
{
    if (creek_database_is_utf8()) {
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

/* ---------- preparation ---------- */

static void prepare(const TypeInfo &t, CreekCodec *cc, MemoryContext mcxt)
{
    memset(cc, 0, sizeof *cc);
    get_typlenbyvalalign(t.base_oid, &cc->typlen, &cc->typbyval, &cc->typalign);
    if (t.kind == ValueKind::OutputText || t.kind == ValueKind::Enum) {
        Oid fn;
        bool varlena;
        getTypeOutputInfo(t.oid, &fn, &varlena);
        fmgr_info_cxt(fn, &cc->out_fn, mcxt);
        cc->has_out_fn = true;
    }
    if (!t.elem.empty()) {
        cc->elem = (CreekCodec *) MemoryContextAlloc(mcxt, sizeof(CreekCodec));
        prepare(t.elem[0], cc->elem, mcxt);
    }
    if (t.kind == ValueKind::Range)
        cc->typcache = lookup_type_cache(t.base_oid, TYPECACHE_RANGE_INFO);
    if (t.kind == ValueKind::Multirange)
        cc->typcache = lookup_type_cache(t.base_oid, TYPECACHE_MULTIRANGE_INFO);
    if (t.kind == ValueKind::Composite) {
        MemoryContext old = MemoryContextSwitchTo(mcxt);
        cc->tupdesc = lookup_rowtype_tupdesc_copy(t.base_oid, -1);
        MemoryContextSwitchTo(old);
        cc->fields = (CreekCodec *) MemoryContextAlloc(mcxt, sizeof(CreekCodec) * Max(t.fields.size(), 1));
        for (size_t i = 0; i < t.fields.size(); i++)
            prepare(t.fields[i].type, &cc->fields[i], mcxt);
    }
}

CreekColumnCodec *creek_prepare_codecs(const creek::TableInfo &info, MemoryContext mcxt)
{
    CreekColumnCodec *codecs =
        (CreekColumnCodec *) MemoryContextAllocZero(mcxt, sizeof(CreekColumnCodec) * Max(info.columns.size(), 1));
    for (size_t i = 0; i < info.columns.size(); i++)
        prepare(info.columns[i].type, &codecs[i], mcxt);
    return codecs;
}

/* ---------- values ---------- */

static void encode_union(creek::AvroWriter *w, const TypeInfo &t, const CreekCodec *cc, bool isnull,
                         Datum d, bool has_unchanged);

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

static void encode_elements(creek::AvroWriter *w, const TypeInfo &t, const CreekCodec *cc, ArrayType *arr)
{
    Datum *elems;
    bool *nulls;
    int n;
    deconstruct_array(arr, ARR_ELEMTYPE(arr), cc->elem->typlen, cc->elem->typbyval, cc->elem->typalign,
                      &elems, &nulls, &n);
    if (n > 0) {
        w->put_array_block(n);
        for (int i = 0; i < n; i++)
            encode_union(w, t.elem[0], cc->elem, nulls[i], elems[i], false);
    }
    w->put_array_end();
}

static void encode_range(creek::AvroWriter *w, const TypeInfo &t, const CreekCodec *cc, RangeType *r)
{
    RangeBound lower, upper;
    bool empty;
    range_deserialize(cc->typcache, r, &lower, &upper, &empty);
    encode_union(w, t.elem[0], cc->elem, empty || lower.infinite, lower.val, false);
    encode_union(w, t.elem[0], cc->elem, empty || upper.infinite, upper.val, false);
    w->put_bool(!empty && lower.inclusive);
    w->put_bool(!empty && upper.inclusive);
    w->put_bool(empty);
}

static void encode_value(creek::AvroWriter *w, const TypeInfo &t, const CreekCodec *cc, Datum d)
{
    switch (t.kind) {
    case ValueKind::Bool: w->put_bool(DatumGetBool(d)); break;
    case ValueKind::Int2: w->put_int(DatumGetInt16(d)); break;
    case ValueKind::Int4: w->put_int(DatumGetInt32(d)); break;
    case ValueKind::Int8: w->put_long(DatumGetInt64(d)); break;
    case ValueKind::Oid: w->put_long((int64) DatumGetObjectId(d)); break;
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
    case ValueKind::TimeTz: {
        TimeTzADT *v = DatumGetTimeTzADTP(d);
        w->put_long(v->time);
        w->put_int(-v->zone);  // Postgres keeps seconds west of UTC
        break;
    }
    case ValueKind::Timestamp:
    case ValueKind::TimestampTz: {
        int64 v = DatumGetInt64(d);
        // Microseconds since 1970 overflow a long after 294247-01-10, before
        // Postgres' last timestamp (294276-12-31): clamp, below infinity.
        if (!TIMESTAMP_NOT_FINITE(v))
            v = v > PG_INT64_MAX - 1 - kUnixToPgMicros ? PG_INT64_MAX - 1 : v + kUnixToPgMicros;
        w->put_long(v);
        break;
    }
    case ValueKind::Interval: {
        Interval *v = DatumGetIntervalP(d);
        w->put_int(v->month);
        w->put_int(v->day);
        w->put_long(v->time);
        break;
    }
    case ValueKind::Uuid: encode_uuid(w, d); break;
    case ValueKind::Money: {
        Datum num = DirectFunctionCall1(cash_numeric, d);
        char *s = DatumGetCString(DirectFunctionCall1(numeric_out, num));
        w->put_string(s, strlen(s));
        break;
    }
    case ValueKind::Enum:
    case ValueKind::OutputText: {
        char *s = OutputFunctionCall(const_cast<FmgrInfo *>(&cc->out_fn), d);
        put_server_text(w, s, strlen(s));
        break;
    }
    case ValueKind::Composite: {
        HeapTupleHeader th = DatumGetHeapTupleHeader(d);
        HeapTupleData tmp;
        tmp.t_len = HeapTupleHeaderGetDatumLength(th);
        ItemPointerSetInvalid(&tmp.t_self);
        tmp.t_tableOid = InvalidOid;
        tmp.t_data = th;
        for (size_t i = 0; i < t.fields.size(); i++) {
            bool isnull;
            Datum v = heap_getattr(&tmp, t.fields[i].attnum, cc->tupdesc, &isnull);
            encode_union(w, t.fields[i].type, &cc->fields[i], isnull, v, false);
        }
        break;
    }
    case ValueKind::Range:
        encode_range(w, t, cc, DatumGetRangeTypeP(d));
        break;
    case ValueKind::Multirange: {
        MultirangeType *mr = DatumGetMultirangeTypeP(d);
        int32 n;
        RangeType **ranges;
        multirange_deserialize(cc->typcache->rngtype, mr, &n, &ranges);
        if (n > 0) {
            w->put_array_block(n);
            for (int i = 0; i < n; i++)
                encode_range(w, t.elem[0], cc->elem, ranges[i]);
        }
        w->put_array_end();
        break;
    }
    case ValueKind::Array:
        encode_elements(w, t, cc, DatumGetArrayTypeP(d));
        break;
    }
}

// A union ["null", T] (+ "unchanged" when has_unchanged; arrays also have a
// last branch for multi-dimensional values or other lower bounds).
static void encode_union(creek::AvroWriter *w, const TypeInfo &t, const CreekCodec *cc, bool isnull,
                         Datum d, bool has_unchanged)
{
    if (isnull) {
        w->put_union_branch(0);
        return;
    }
    if (t.kind == ValueKind::Array) {
        ArrayType *arr = DatumGetArrayTypeP(d);
        int ndim = ARR_NDIM(arr);
        if (ndim == 0 || (ndim == 1 && ARR_LBOUND(arr)[0] == 1)) {
            w->put_union_branch(1);
            encode_elements(w, t, cc, arr);
        } else {
            w->put_union_branch(has_unchanged ? 3 : 2);
            w->put_array_block(ndim);
            for (int i = 0; i < ndim; i++)
                w->put_int(ARR_DIMS(arr)[i]);
            w->put_array_end();
            w->put_array_block(ndim);
            for (int i = 0; i < ndim; i++)
                w->put_int(ARR_LBOUND(arr)[i]);
            w->put_array_end();
            encode_elements(w, t, cc, arr);
        }
        return;
    }
    w->put_union_branch(1);
    encode_value(w, t, cc, d);
}

void creek_encode_record(creek::AvroWriter *w, const creek::TableInfo &info,
                         const CreekColumnCodec *codecs, const std::vector<int> &cols,
                         TupleDesc desc, HeapTuple tuple, bool detoast)
{
    // Several columns: deform the tuple once. heap_getattr finds a column
    // behind a variable-length or null one by walking the tuple from its
    // start, once per column (nocachegetattr: 8% of the worker's CPU for the
    // benchmark's 30-column rows). One or two (a key): heap_getattr.
    Datum values[MaxTupleAttributeNumber];
    bool nulls[MaxTupleAttributeNumber];
    const bool deformed = cols.size() > 2;
    if (deformed)
        heap_deform_tuple(tuple, desc, values, nulls);
    for (int idx : cols) {
        const creek::ColumnInfo &c = info.columns[idx];
        bool isnull = true;
        Datum d = (Datum) 0;
        if (c.attnum <= desc->natts) {
            if (deformed) {
                d = values[c.attnum - 1];
                isnull = nulls[c.attnum - 1];
            } else {
                d = heap_getattr(tuple, c.attnum, desc, &isnull);
            }
        }
        if (!isnull && c.toastable && !detoast && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(d))) {
            w->put_union_branch(2);  // "unchanged": an empty record
            continue;
        }
        encode_union(w, c.type, &codecs[idx], isnull, d, c.toastable);
    }
}
