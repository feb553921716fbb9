// schema.cpp: builds the publish_message writer schema of a table (plain C++).
#include "schema.hpp"

#include <cstdio>
#include <functional>
#include <map>
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

const char *primitive_json(ValueKind kind)
{
    switch (kind) {
    case ValueKind::Bool: return "\"boolean\"";
    case ValueKind::Int2:
    case ValueKind::Int4: return "\"int\"";
    case ValueKind::Int8:
    case ValueKind::Oid: return "\"long\"";
    case ValueKind::Float4: return "\"float\"";
    case ValueKind::Float8: return "\"double\"";
    case ValueKind::Bytea: return "\"bytes\"";
    case ValueKind::Date: return "{\"type\":\"int\",\"logicalType\":\"date\"}";
    case ValueKind::Time: return "{\"type\":\"long\",\"logicalType\":\"time-micros\"}";
    case ValueKind::Timestamp: return "{\"type\":\"long\",\"logicalType\":\"local-timestamp-micros\"}";
    case ValueKind::TimestampTz: return "{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}";
    case ValueKind::Uuid: return "{\"type\":\"string\",\"logicalType\":\"uuid\"}";
    default: return "\"string\"";
    }
}

struct Builder {
    // Named types already defined in the schema: name -> signature.
    std::map<std::string, std::string> named;

    // A string that identifies a type's structure (not its spelling).
    static std::string sig(const TypeInfo &t)
    {
        std::string s = std::to_string(int(t.kind)) + ":" + t.name + ":" + t.pg_type + "(";
        for (const auto &f : t.fields)
            s += f.avro_name + "/" + f.pg_name + "=" + sig(f.type) + ",";
        for (const auto &e : t.elem)
            s += sig(e);
        for (const auto &l : t.enum_labels)
            s += l + ",";
        return s + ")";
    }

    // Defines a named record the first time (renamed when another type took
    // its name), else refers to it by name. body() writes what follows the name.
    std::string named_type(const std::string &name, const std::string &signature,
                           const std::function<std::string()> &body)
    {
        std::string candidate = name;
        for (int k = 2;; k++) {
            auto it = named.find(candidate);
            if (it == named.end()) {
                named[candidate] = signature;
                std::string out = "{\"type\":\"record\",\"name\":";
                json_append_string(out, candidate);
                return out + body();
            }
            if (it->second == signature)
                return json_string(candidate);
            candidate = name + "_" + std::to_string(k);
        }
    }

    std::string union_of(const TypeInfo &t, bool unchanged)
    {
        std::string out = "[\"null\",";
        if (t.kind == ValueKind::Array) {
            out += array_type(t);
            if (unchanged)
                out += "," + unchanged_type();
            out += "," + md_array_type(t);
        } else {
            out += type(t);
            if (unchanged)
                out += "," + unchanged_type();
        }
        return out + "]";
    }

    std::string unchanged_type()
    {
        return named_type("unchanged", "unchanged", [] { return std::string(",\"fields\":[]}"); });
    }

    std::string array_type(const TypeInfo &t)
    {
        return "{\"type\":\"array\",\"items\":" + union_of(t.elem[0], false) + "}";
    }

    std::string md_array_type(const TypeInfo &t)
    {
        return named_type(t.name, "md" + sig(t), [&] {
            return ",\"fields\":[{\"name\":\"dims\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
                   "{\"name\":\"lower_bounds\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
                   "{\"name\":\"elements\",\"type\":{\"type\":\"array\",\"items\":" +
                   union_of(t.elem[0], false) + "}}]}";
        });
    }

    std::string type(const TypeInfo &t)
    {
        switch (t.kind) {
        case ValueKind::Array:
            return array_type(t);
        case ValueKind::TimeTz:
            return named_type("timetz", "timetz", [] {
                return std::string(",\"fields\":[{\"name\":\"time\",\"type\":{\"type\":\"long\",\"logicalType\":\"time-micros\"}},"
                                   "{\"name\":\"utc_offset_s\",\"type\":\"int\"}]}");
            });
        case ValueKind::Interval:
            return named_type("interval", "interval", [] {
                return std::string(",\"fields\":[{\"name\":\"months\",\"type\":\"int\"},{\"name\":\"days\",\"type\":\"int\"},"
                                   "{\"name\":\"micros\",\"type\":\"long\"}]}");
            });
        case ValueKind::Enum: {
            std::string out = "{\"type\":\"string\",\"pgEnumLabels\":[";
            for (size_t i = 0; i < t.enum_labels.size(); i++) {
                if (i)
                    out += ",";
                json_append_string(out, t.enum_labels[i]);
            }
            return out + "]}";
        }
        case ValueKind::Composite:
            return named_type(t.name, sig(t), [&] {
            std::string body = ",\"fields\":[";
            for (size_t i = 0; i < t.fields.size(); i++) {
                const TypeInfo::Field &f = t.fields[i];
                if (i)
                    body += ",";
                body += "{\"name\":";
                json_append_string(body, f.avro_name);
                body += ",\"type\":" + union_of(f.type, false) + ",\"pgType\":";
                json_append_string(body, f.type.pg_type);
                if (f.avro_name != f.pg_name) {
                    body += ",\"pgName\":";
                    json_append_string(body, f.pg_name);
                }
                body += "}";
            }
            return body + "]}";
            });
        case ValueKind::Range:
            return named_type(t.name, sig(t), [&] {
                std::string body = ",\"fields\":[{\"name\":\"lower\",\"type\":" + union_of(t.elem[0], false) + "},";
                body += "{\"name\":\"upper\",\"type\":" + union_of(t.elem[0], false) + "},";
                body += "{\"name\":\"lower_inc\",\"type\":\"boolean\"},{\"name\":\"upper_inc\",\"type\":\"boolean\"},"
                        "{\"name\":\"empty\",\"type\":\"boolean\"}]}";
                return body;
            });
        case ValueKind::Multirange:
            return "{\"type\":\"array\",\"items\":" + type(t.elem[0]) + "}";
        default:
            return primitive_json(t.kind);
        }
    }

    std::string out;

    void field(const ColumnInfo &c)
    {
        out += "{\"name\":";
        json_append_string(out, c.avro_name);
        out += ",\"type\":" + union_of(c.type, c.toastable);
        out += ",\"pgType\":";
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

// Gives the top record of json (named record_name) its namespace, then the
// fingerprint and the single-object header. Logical types and attributes
// (pgType, pgKey...) are not part of the canonical form: two tables whose
// columns differ only there (timestamp and timestamptz, text and varchar)
// would share a fingerprint and so a schema. A namespace derived from the
// whole JSON makes the fingerprint name exactly one schema text, the same in
// every database and run.
static void finish_schema(WriterSchema &ws, const std::string &json, const char *record_name)
{
    char ns[40];
    snprintf(ns, sizeof ns, "creek.s%016llx", static_cast<unsigned long long>(crc64_avro(json)));
    const std::string head = std::string("{\"type\":\"record\",\"name\":\"") + record_name + "\",";
    ws.json = head + "\"namespace\":\"" + ns + "\"," + json.substr(head.size());
    ws.fingerprint = crc64_avro(canonical_form(ws.json));
    ws.fingerprint_b64 = base64url_encode(fingerprint_bytes(ws.fingerprint));
    ws.header = single_object_header(ws.fingerprint);
}

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
    for (const char *fixed : {"publish_message", "source", "op", "key", "row"})
        b.named[fixed] = "#fixed";
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
    finish_schema(ws, b.out, "publish_message");
    return ws;
}

WriterSchema build_row_schema(const TableInfo &table)
{
    WriterSchema ws;
    std::vector<int> all;
    for (size_t i = 0; i < table.columns.size(); i++)
        all.push_back(static_cast<int>(i));
    Builder b;
    b.named["row"] = "#fixed";
    b.record("row", table, all);
    finish_schema(ws, b.out, "row");
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
