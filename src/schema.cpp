// schema.cpp: builds the publish_message writer schema of a table (plain C++).
#include "schema.hpp"

#include <set>
#include <stdexcept>

#include "fingerprint.hpp"
#include "json_text.hpp"

namespace creek {

static bool avro_name_char(unsigned char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_')
        return true;
    return !first && c >= '0' && c <= '9';
}

void assign_avro_names(std::vector<ColumnInfo> &columns)
{
    std::set<std::string> used;
    // Names that are already valid keep their spelling and win over renamed ones.
    std::vector<bool> valid(columns.size());
    for (size_t i = 0; i < columns.size(); i++) {
        const std::string &n = columns[i].pg_name;
        bool ok = !n.empty();
        for (size_t k = 0; ok && k < n.size(); k++)
            ok = avro_name_char(static_cast<unsigned char>(n[k]), k == 0);
        valid[i] = ok;
        if (ok) {
            columns[i].avro_name = n;
            used.insert(n);
        }
    }
    for (size_t i = 0; i < columns.size(); i++) {
        if (valid[i])
            continue;
        std::string base;
        for (unsigned char c : columns[i].pg_name)
            base.push_back(avro_name_char(c, false) ? static_cast<char>(c) : '_');
        if (base.empty() || !avro_name_char(static_cast<unsigned char>(base[0]), true))
            base.insert(base.begin(), '_');
        std::string name = base;
        for (int suffix = 2; used.count(name); suffix++)
            name = base + "_" + std::to_string(suffix);
        columns[i].avro_name = name;
        used.insert(name);
    }
}

namespace {

struct Builder {
    std::string out;
    bool unchanged_defined = false;

    void value_type(const ColumnInfo &c)
    {
        if (c.kind == ValueKind::Array) {
            out += "{\"type\":\"array\",\"items\":[\"null\",";
            out += avro_type_json(c.elem_kind);
            out += "]}";
        } else {
            out += avro_type_json(c.kind);
        }
    }

    void field(const ColumnInfo &c)
    {
        out += "{\"name\":";
        json_append_string(out, c.avro_name);
        out += ",\"type\":[\"null\",";
        value_type(c);
        if (c.toastable) {
            if (unchanged_defined) {
                out += ",\"unchanged\"";
            } else {
                out += ",{\"type\":\"record\",\"name\":\"unchanged\",\"fields\":[]}";
                unchanged_defined = true;
            }
        }
        out += "],\"pgType\":";
        json_append_string(out, c.pg_type);
        out += ",\"pgKey\":";
        out += c.is_key ? "true" : "false";
        if (c.pg_name != c.avro_name) {
            out += ",\"pgName\":";
            json_append_string(out, c.pg_name);
        }
        out += "}";
    }

    void record(const char *name, const TableInfo &t, const std::vector<int> &cols)
    {
        out += "{\"type\":\"record\",\"name\":\"";
        out += name;
        out += "\",\"fields\":[";
        for (size_t i = 0; i < cols.size(); i++) {
            if (i)
                out += ",";
            field(t.columns[cols[i]]);
        }
        out += "]}";
    }
};

}  // namespace

WriterSchema build_writer_schema(const TableInfo &table)
{
    WriterSchema ws;
    std::vector<int> all;
    for (size_t i = 0; i < table.columns.size(); i++) {
        all.push_back(static_cast<int>(i));
        if (table.columns[i].is_key)
            ws.before_cols.push_back(static_cast<int>(i));
    }
    ws.before_is_row = table.replica_identity == 'f';
    if (ws.before_is_row)
        ws.before_cols = all;

    Builder b;
    b.out =
        "{\"type\":\"record\",\"name\":\"publish_message\",\"fields\":["
        "{\"name\":\"fingerprint\",\"type\":\"string\"},"
        "{\"name\":\"source\",\"type\":{\"type\":\"record\",\"name\":\"source\",\"fields\":["
        "{\"name\":\"name\",\"type\":\"string\"},"
        "{\"name\":\"tx_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}},"
        "{\"name\":\"db\",\"type\":\"string\"},"
        "{\"name\":\"schema\",\"type\":\"string\"},"
        "{\"name\":\"table\",\"type\":\"string\"},"
        "{\"name\":\"tx_id\",\"type\":\"long\"},"
        "{\"name\":\"last_lsn\",\"type\":\"string\"},"
        "{\"name\":\"lsn\",\"type\":\"string\"}]}},"
        "{\"name\":\"op\",\"type\":{\"type\":\"enum\",\"name\":\"op\","
        "\"symbols\":[\"c\",\"u\",\"u_pk\",\"d\",\"t\",\"r\"]}},"
        "{\"name\":\"sent_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}},"
        "{\"name\":\"before\",\"type\":[\"null\",";
    if (ws.before_is_row) {
        b.record("row", table, all);
        b.out += "]},{\"name\":\"after\",\"type\":[\"null\",\"row\"]}]}";
    } else {
        b.record("key", table, ws.before_cols);
        b.out += "]},{\"name\":\"after\",\"type\":[\"null\",";
        b.record("row", table, all);
        b.out += "]}]}";
    }
    ws.json = std::move(b.out);
    ws.fingerprint = crc64_avro(canonical_form(ws.json));
    ws.fingerprint_b64 = base64url_encode(fingerprint_bytes(ws.fingerprint));
    ws.header = single_object_header(ws.fingerprint);
    return ws;
}

std::string schema_message_json(const std::string &fingerprint_b64, const std::string &schema_json,
                                const std::string &source, const std::string &created_at_rfc3339)
{
    std::string out = "{\"fingerprint\":";
    json_append_string(out, fingerprint_b64);
    out += ",\"schema\":";
    json_append_string(out, schema_json);
    out += ",\"source\":";
    json_append_string(out, source);
    out += ",\"created_at\":";
    json_append_string(out, created_at_rfc3339);
    out += "}";
    return out;
}

}  // namespace creek
