// type_map.cpp: Postgres type -> Avro type and value encoding (one table).
// The Postgres half is compiled only into the extension (CREEK_PG, set by the
// Makefile); the unit tests use the Avro half alone.
#ifdef CREEK_PG
#include "pg.hpp"
#endif
#include "type_map.hpp"

namespace creek {

const char *avro_type_json(ValueKind kind)
{
    switch (kind) {
    case ValueKind::Bool: return "\"boolean\"";
    case ValueKind::Int2:
    case ValueKind::Int4: return "\"int\"";
    case ValueKind::Int8: return "\"long\"";
    case ValueKind::Float4: return "\"float\"";
    case ValueKind::Float8: return "\"double\"";
    case ValueKind::Bytea: return "\"bytes\"";
    case ValueKind::Date: return "{\"type\":\"int\",\"logicalType\":\"date\"}";
    case ValueKind::Time: return "{\"type\":\"long\",\"logicalType\":\"time-micros\"}";
    case ValueKind::Timestamp: return "{\"type\":\"long\",\"logicalType\":\"local-timestamp-micros\"}";
    case ValueKind::TimestampTz: return "{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}";
    case ValueKind::Uuid: return "{\"type\":\"string\",\"logicalType\":\"uuid\"}";
    case ValueKind::Text:
    case ValueKind::Name:
    case ValueKind::OutputText:
    case ValueKind::Array:  // never asked: arrays are built by the schema builder
        return "\"string\"";
    }
    return "\"string\"";
}

}  // namespace creek

#ifdef CREEK_PG
static creek::ValueKind classify_scalar(Oid typid)
{
    using creek::ValueKind;
    switch (typid) {
    case BOOLOID: return ValueKind::Bool;
    case INT2OID: return ValueKind::Int2;
    case INT4OID: return ValueKind::Int4;
    case INT8OID: return ValueKind::Int8;
    case FLOAT4OID: return ValueKind::Float4;
    case FLOAT8OID: return ValueKind::Float8;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
    case JSONOID: return ValueKind::Text;
    case NAMEOID: return ValueKind::Name;
    case BYTEAOID: return ValueKind::Bytea;
    case DATEOID: return ValueKind::Date;
    case TIMEOID: return ValueKind::Time;
    case TIMESTAMPOID: return ValueKind::Timestamp;
    case TIMESTAMPTZOID: return ValueKind::TimestampTz;
    case UUIDOID: return ValueKind::Uuid;
    default: return ValueKind::OutputText;  // numeric, jsonb, "char" and every other type
    }
}

creek::ValueKind creek_classify_type(Oid typid, creek::ValueKind *elem_kind, Oid *elem_type)
{
    *elem_type = InvalidOid;
    *elem_kind = creek::ValueKind::OutputText;
    Oid elem = get_element_type(typid);
    if (OidIsValid(elem)) {
        creek::ValueKind ek = classify_scalar(getBaseType(elem));
        *elem_kind = ek;
        *elem_type = elem;
        return creek::ValueKind::Array;
    }
    return classify_scalar(getBaseType(typid));
}
#endif  // CREEK_PG
