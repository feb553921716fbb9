// Unit tests of the schema builder, Avro names and subject tokens.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "check.hpp"
#include <map>

#include "fingerprint.hpp"
#include "json_text.hpp"
#include "schema.hpp"
#include "subjects.hpp"

using namespace creek;

static ColumnInfo col(int attnum, const std::string &name, ValueKind kind, const std::string &pg_type,
                      bool key = false, bool toastable = false)
{
    ColumnInfo c;
    c.attnum = attnum;
    c.pg_name = name;
    c.type.kind = kind;
    c.type.pg_type = pg_type;
    c.pg_type = pg_type;
    c.is_key = key;
    c.toastable = toastable;
    return c;
}

static TableInfo orders(char identity)
{
    TableInfo t;
    t.schema_name = "public";
    t.table_name = "orders";
    t.replica_identity = identity;
    t.columns = {col(1, "id", ValueKind::Int4, "integer", identity != 'f' && identity != 'n'),
                 col(2, "note", ValueKind::Text, "text", false, true),
                 col(3, "at", ValueKind::TimestampTz, "timestamp with time zone")};
    if (identity == 'f')
        for (auto &c : t.columns) c.is_key = true;
    assign_avro_names(t.columns);
    return t;
}

TEST(schema_is_valid_and_fingerprinted)
{
    WriterSchema ws = build_writer_schema(orders('d'));
    std::string canon = canonical_form(ws.json);
    CHECK_EQ(ws.fingerprint, crc64_avro(canon));
    CHECK_EQ(ws.header.size(), size_t(10));
    CHECK_EQ(ws.header.substr(2), fingerprint_bytes(ws.fingerprint));
    CHECK_EQ(ws.fingerprint_b64, base64url_encode(fingerprint_bytes(ws.fingerprint)));
    CHECK(canon.find("{\"name\":\"creek.s") == 0);
    CHECK(canon.find(".publish_message\",\"type\":\"record\"") != std::string::npos);
    // the before record holds the key columns only
    CHECK_EQ(ws.before_cols.size(), size_t(1));
    CHECK(!ws.before_is_row);
    // the toastable column can be "unchanged", the others cannot
    CHECK(ws.json.find("[\"null\",\"string\",{\"type\":\"record\",\"name\":\"unchanged\",\"fields\":[]}]") != std::string::npos);
    CHECK(ws.json.find("\"pgType\":\"integer\",\"pgKey\":true") != std::string::npos);
}

TEST(full_identity_uses_row_for_before)
{
    WriterSchema ws = build_writer_schema(orders('f'));
    CHECK(ws.before_is_row);
    CHECK_EQ(ws.before_cols.size(), size_t(3));
    CHECK(ws.json.find("{\"name\":\"after\",\"type\":[\"null\",\"row\"]}") != std::string::npos);
    canonical_form(ws.json);  // valid
}

// A snapshot row's schema: the record "row" alone, with its own fingerprint.
TEST(row_schema_is_the_row_record)
{
    WriterSchema rs = build_row_schema(orders('d'));
    std::string canon = canonical_form(rs.json);
    CHECK(canon.find(".row\",\"type\":\"record\"") != std::string::npos);
    CHECK(canon.find("publish_message") == std::string::npos);
    CHECK_EQ(rs.fingerprint, crc64_avro(canon));
    CHECK(rs.fingerprint != build_writer_schema(orders('d')).fingerprint);
    CHECK(rs.json.find("\"pgKey\":true") != std::string::npos);
}

TEST(flat_json_objects)
{
    std::map<std::string, std::string> f;
    std::string err;
    CHECK(json_parse_flat_object(" {\"database\": \"shop\", \"table\":\"public.t\\u00e9\\\"x\", \"n\": 12, \"b\": true} ", f, err));
    CHECK_EQ(f["database"], std::string("shop"));
    CHECK_EQ(f["table"], std::string("public.t\xc3\xa9\"x"));
    CHECK_EQ(f["n"], std::string("12"));
    CHECK_EQ(f["b"], std::string("true"));
    CHECK(json_parse_flat_object("{}", f, err));
    CHECK(f.empty());
    CHECK(!json_parse_flat_object("orders please", f, err));
    CHECK(!json_parse_flat_object("{\"a\": {\"b\": 1}}", f, err));
    CHECK(!json_parse_flat_object("{\"a\": \"x\"} trailing", f, err));
    CHECK(!json_parse_flat_object("{\"a\" \"x\"}", f, err));
    CHECK(!json_parse_flat_object("{\"a\": \"x", f, err));
    CHECK(!err.empty());
}

TEST(fingerprint_is_stable_and_structural)
{
    WriterSchema a = build_writer_schema(orders('d'));
    WriterSchema b = build_writer_schema(orders('d'));
    CHECK_EQ(a.fingerprint, b.fingerprint);
    CHECK_EQ(a.json, b.json);
    TableInfo t = orders('d');
    t.columns[0].type.kind = ValueKind::Int8;
    CHECK(build_writer_schema(t).fingerprint != a.fingerprint);
    // a change of logical type or of pgType alone also yields a new fingerprint
    TableInfo u = orders('d');
    u.columns[2].type.kind = ValueKind::Timestamp;
    CHECK(build_writer_schema(u).fingerprint != a.fingerprint);
    TableInfo v = orders('d');
    v.columns[1].pg_type = "character varying";
    CHECK(build_writer_schema(v).fingerprint != a.fingerprint);
    CHECK(build_writer_schema(orders('n')).fingerprint != a.fingerprint);
}

TEST(avro_names_are_valid_and_unique)
{
    std::vector<ColumnInfo> cols = {col(1, "ok_name", ValueKind::Int4, "integer"),
                                    col(2, "has space", ValueKind::Int4, "integer"),
                                    col(3, "has_space", ValueKind::Int4, "integer"),
                                    col(4, "1st", ValueKind::Int4, "integer"),
                                    col(5, "dash-ed", ValueKind::Int4, "integer"),
                                    col(6, "\xc3\xa9t\xc3\xa9", ValueKind::Int4, "integer")};
    assign_avro_names(cols);
    CHECK_EQ(cols[0].avro_name, std::string("ok_name"));
    CHECK_EQ(cols[2].avro_name, std::string("has_space"));
    CHECK_EQ(cols[1].avro_name, std::string("has_space_2"));
    CHECK_EQ(cols[3].avro_name, std::string("_1st"));
    CHECK_EQ(cols[4].avro_name, std::string("dash_ed"));
    CHECK_EQ(cols[5].avro_name, std::string("__t__"));
    TableInfo t;
    t.schema_name = "s";
    t.table_name = "t";
    t.columns = cols;
    WriterSchema ws = build_writer_schema(t);
    CHECK(ws.json.find("\"pgName\":\"has space\"") != std::string::npos);
    canonical_form(ws.json);
}

TEST(nested_named_types_are_defined_once)
{
    TypeInfo iv;
    iv.kind = ValueKind::Interval;
    iv.pg_type = "interval";
    TypeInfo comp;
    comp.kind = ValueKind::Composite;
    comp.pg_type = "pair";
    comp.name = "pg_pair";
    comp.fields.resize(2);
    comp.fields[0].pg_name = comp.fields[0].avro_name = "a";
    comp.fields[0].type = iv;
    comp.fields[1].pg_name = "b c";
    comp.fields[1].avro_name = "b_c";
    comp.fields[1].type.kind = ValueKind::Int4;
    TypeInfo arr;
    arr.kind = ValueKind::Array;
    arr.name = "pg_md_pair";
    arr.pg_type = "pair[]";
    arr.elem = {comp};
    TableInfo t;
    t.schema_name = "s";
    t.table_name = "t";
    t.replica_identity = 'f';
    t.columns = {col(1, "p", ValueKind::Composite, "pair", true, true),
                 col(2, "ps", ValueKind::Array, "pair[]", true, true),
                 col(3, "i", ValueKind::Interval, "interval", true)};
    t.columns[0].type = comp;
    t.columns[1].type = arr;
    t.columns[2].type = iv;
    assign_avro_names(t.columns);
    WriterSchema ws = build_writer_schema(t);
    std::string canon = canonical_form(ws.json);  // valid: every name defined once
    auto count = [&](const std::string &needle) {
        size_t n = 0;
        for (size_t p = ws.json.find(needle); p != std::string::npos; p = ws.json.find(needle, p + 1)) n++;
        return n;
    };
    CHECK_EQ(count("\"name\":\"pg_pair\",\"fields\""), size_t(1));
    CHECK_EQ(count("\"name\":\"interval\",\"fields\""), size_t(1));
    CHECK_EQ(count("\"name\":\"pg_md_pair\",\"fields\""), size_t(1));
    CHECK(ws.json.find("\"pgName\":\"b c\"") != std::string::npos);
    // array column: null, array, unchanged, multi-dimensional record
    CHECK(ws.json.find("[\"null\",{\"type\":\"array\",\"items\":[\"null\",\"pg_pair\"]},\"unchanged\",") != std::string::npos);
}

TEST(subject_tokens)
{
    CHECK_EQ(subject_token("orders"), std::string("orders"));
    CHECK_EQ(subject_token("my.table"), std::string("my%2Etable"));
    CHECK_EQ(subject_token("a b*>"), std::string("a%20b%2A%3E"));
    CHECK_EQ(subject_token("\xc3\xa9"), std::string("%C3%A9"));
    CHECK_EQ(subject_token("100%"), std::string("100%25"));
    std::string back;
    for (const char *s : {"orders", "my.table", "a b*>", "\xc3\xa9", "100%", "", "A-Z_0"}) {
        CHECK(subject_token_decode(subject_token(s), back));
        CHECK_EQ(back, std::string(s));
    }
    CHECK(!subject_token_decode("a%2", back));
    CHECK(!subject_token_decode("a%41", back));  // 'A' must not be escaped
    CHECK(!subject_token_decode("a.b", back));
    Subjects sj("CREEK", "my db");
    CHECK_EQ(sj.wal("public", "Or.ders"), std::string("CREEK.my%20db.wal.public.Or%2Eders"));
    CHECK_EQ(sj.wal_stream(), std::string("CREEK_my=20db_wal"));
    CHECK_EQ(sj.wal_filter(), std::string("CREEK.my%20db.wal.>"));
    CHECK_EQ(sj.schemas_service(), std::string("CREEK._schemas"));
}

TEST_MAIN()
