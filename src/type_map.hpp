// type_map.hpp: the one place that maps Postgres types to Avro types and to
// the way their values are encoded. The README's type table follows this file.
#pragma once

#include <cstdint>
#include <string>

namespace creek {

// How a value of a column is encoded (see encoder.cpp).
enum class ValueKind : uint8_t {
    Bool,         // boolean
    Int2,         // int
    Int4,         // int
    Int8,         // long
    Float4,       // float
    Float8,       // double
    Text,         // string: text, varchar, bpchar, json (varlena text)
    Name,         // string: name
    Bytea,        // bytes
    Date,         // int, logicalType date (days since 1970-01-01)
    Time,         // long, logicalType time-micros
    Timestamp,    // long, logicalType local-timestamp-micros
    TimestampTz,  // long, logicalType timestamp-micros
    Uuid,         // string, logicalType uuid
    OutputText,   // string: the type's text output (numeric, jsonb, "char", any other type)
    Array,        // array of ["null", element]
};

// The Avro type (JSON text) of a non-array kind.
const char *avro_type_json(ValueKind kind);

}  // namespace creek

#if defined(CREEK_PG) && defined(PG_VERSION_NUM)
// Postgres side: classify a type by oid. For arrays, *elem_kind receives the
// element's kind and *elem_type the element type (0 otherwise).
creek::ValueKind creek_classify_type(Oid typid, creek::ValueKind *elem_kind, Oid *elem_type);
#endif
