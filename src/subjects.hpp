// subjects.hpp: NATS subject tokens and stream names of protocol.md (plain C++).
#pragma once

#include <string>

namespace creek {

// Keeps A-Z a-z 0-9 _ - and writes every other byte as %XX (upper-case hex).
std::string subject_token(const std::string &name);
// The inverse; false when text is not a valid token.
bool subject_token_decode(const std::string &token, std::string &out);

// The database token as it stands in stream names: the subject token with
// '=' for '%' (nats-server 2.9 formats consumer ack subjects with the stream
// name as a printf template, so a '%' there breaks acknowledgements).
std::string stream_token(const std::string &name);

struct Subjects {
    std::string ns, db;  // ns as configured; db already a token
    std::string db_stream;  // db as a stream name part
    Subjects(const std::string &ns_, const std::string &db_name);
    std::string wal(const std::string &schema, const std::string &table) const;
    std::string schema(const std::string &schema, const std::string &table) const;
    // NS.DB.snap.SCHEMA.TABLE.<suffix> (suffix: <YYYYMMDDHHMMSS_MS>_<id>)
    std::string snap(const std::string &schema, const std::string &table, const std::string &suffix) const {
        return ns + "." + db + ".snap." + subject_token(schema) + "." + subject_token(table) + "." + suffix;
    }
    std::string wal_stream() const { return ns + "_" + db_stream + "_wal"; }
    std::string schema_stream() const { return ns + "_" + db_stream + "_schema"; }
    std::string snap_stream() const { return ns + "_" + db_stream + "_snap"; }
    std::string wal_filter() const { return ns + "." + db + ".wal.>"; }
    std::string schema_filter() const { return ns + "." + db + ".schema.>"; }
    std::string snap_filter() const { return ns + "." + db + ".snap.>"; }
    std::string schemas_service() const { return ns + "._schemas"; }
    std::string snapshot_service() const { return ns + "._snapshot"; }
};

}  // namespace creek
