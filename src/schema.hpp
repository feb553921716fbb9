// schema.hpp: the Avro writer schema of a published table (publish_message,
// protocol.md) and the per-column plan the encoder follows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "type_map.hpp"

namespace creek {

// One column, as the schema builder found it in the catalog.
struct ColumnInfo {
    int attnum = 0;               // 1-based attribute number in the tuple
    std::string pg_name;          // the column's name in Postgres (UTF-8)
    std::string avro_name;        // a valid, unique Avro name
    std::string pg_type;          // format_type() of the column's type
    TypeInfo type;                // how its values are encoded
    bool is_key = false;          // belongs to the replica identity
    bool toastable = false;       // may be an unchanged TOASTed value
};

struct TableInfo {
    std::string schema_name, table_name;  // Postgres names, in the database's encoding
    std::string schema_utf8, table_utf8;  // the same in UTF-8 (what consumers see)
    char replica_identity = 'd';          // d, n, f, i (pg_class.relreplident)
    std::vector<ColumnInfo> columns;      // non-dropped columns in attnum order
};

// A writer schema, ready to use.
struct WriterSchema {
    std::string json;              // the Avro schema, JSON text
    uint64_t fingerprint = 0;      // CRC-64-AVRO of its canonical form
    std::string fingerprint_b64;   // base64url of the 8 bytes
    std::string header;            // single-object encoding header (10 bytes)
    std::vector<int> before_cols;  // indexes into TableInfo::columns of the before record
    bool before_is_row = false;    // REPLICA IDENTITY FULL: before uses the row record
};

// Turns column names into valid Avro names: invalid characters become '_',
// a leading digit gets a '_' prefix, and collisions get a numeric suffix.
void assign_avro_names(std::vector<ColumnInfo> &columns);

// Builds the publish_message schema for a table. Throws std::invalid_argument
// if the result is not a valid Avro schema (a bug).
WriterSchema build_writer_schema(const TableInfo &table);

// The schema of a snapshot row: the record `row` of the table's writer
// schema (the same fields and types as a change's `after`), standalone.
WriterSchema build_row_schema(const TableInfo &table);

// The JSON message published on the schema subject and served on NS._schemas.
std::string schema_message_json(const std::string &fingerprint_b64, const std::string &schema_json,
                                const std::string &source, const std::string &created_at_rfc3339);

}  // namespace creek
