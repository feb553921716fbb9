// type_map.hpp: the one place that maps Postgres types to Avro types and to
// the way their values are encoded. The README's type table follows this file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace creek {

// How a value is encoded (encoder.cpp) and which Avro type it has (schema.cpp).
enum class ValueKind : uint8_t {
    Bool,         // boolean
    Int2,         // int
    Int4,         // int
    Int8,         // long
    Oid,          // long
    Float4,       // float
    Float8,       // double
    Text,         // string: text, varchar, bpchar, json, xml (varlena text)
    Name,         // string: name
    Bytea,        // bytes
    Date,         // int, logicalType date (days since 1970-01-01)
    Time,         // long, logicalType time-micros
    TimeTz,       // record timetz {time: time-micros, utc_offset_s: int}
    Timestamp,    // long, logicalType local-timestamp-micros
    TimestampTz,  // long, logicalType timestamp-micros
    Interval,     // record interval {months: int, days: int, micros: long}
    Uuid,         // string, logicalType uuid
    Money,        // string: the amount as a numeric ("-1234.56")
    Enum,         // string: the label; the type carries pgEnumLabels
    OutputText,   // string: the type's text output (numeric, jsonb, inet, bit, ...)
    Composite,    // record pg_<type>: one ["null", T] field per attribute
    Range,        // record pg_<type>: lower, upper (null: unbounded), lower_inc, upper_inc, empty
    Multirange,   // array of the range record
    Array,        // array of ["null", element]; other shapes: record pg_md_<element>
};

// A Postgres type as creek encodes it (a tree for arrays, composites, ranges).
struct TypeInfo {
    ValueKind kind = ValueKind::OutputText;
    unsigned oid = 0;               // the type (for domains: the domain)
    unsigned base_oid = 0;          // domains: the base type; else oid
    unsigned relid = 0;             // composites: the type's pg_class entry
    std::string pg_type;            // format_type() of the type
    std::string name;               // Avro name of a named record type
    std::vector<std::string> enum_labels;
    struct Field;
    std::vector<Field> fields;      // composite attributes
    std::vector<TypeInfo> elem;     // array element, range subtype, multirange's range (0 or 1)
};

struct TypeInfo::Field {
    std::string pg_name, avro_name;
    int attnum = 0;
    TypeInfo type;
};

// Does t (or a type inside it) depend on the composite type of pg_class relid?
bool type_uses_relid(const TypeInfo &t, unsigned relid);

// A valid Avro name made of a Postgres name: invalid bytes become '_', a
// leading digit gets a '_' prefix.
std::string avro_name_of(const std::string &pg_name);

}  // namespace creek

#if defined(CREEK_PG) && defined(PG_VERSION_NUM)
// Postgres side: describes a type (recursing into arrays, composites, ranges).
void creek_describe_type(Oid typid, creek::TypeInfo *out);
#endif
