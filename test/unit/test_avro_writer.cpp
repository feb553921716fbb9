// test_avro_writer.cpp: the direct encoder (avro_writer.hpp) checked against
// avro-c: its output must decode with avro-c's generic reader to the same
// values, and must be byte-identical to what avro-c's own writer produces.
#include "avro_writer.hpp"
#include "check.hpp"

#include <avro.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

using creek::AvroWriter;

namespace {

const char *kRecordSchema =
    "{\"type\":\"record\",\"name\":\"r\",\"fields\":["
    "{\"name\":\"i\",\"type\":\"int\"},"
    "{\"name\":\"l\",\"type\":\"long\"},"
    "{\"name\":\"f\",\"type\":\"float\"},"
    "{\"name\":\"d\",\"type\":\"double\"},"
    "{\"name\":\"b\",\"type\":\"boolean\"},"
    "{\"name\":\"s\",\"type\":\"string\"},"
    "{\"name\":\"y\",\"type\":\"bytes\"},"
    "{\"name\":\"u\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"a\",\"type\":{\"type\":\"array\",\"items\":[\"null\",\"int\"]}},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"x\",\"y\",\"z\"]}}"
    "]}";

struct Row {
    int32_t i = 0;
    int64_t l = 0;
    float f = 0;
    double d = 0;
    bool b = false;
    std::string s;
    std::string y;
    std::optional<std::string> u;
    std::vector<std::optional<int32_t>> a;
    int e = 0;
};

std::string hex(const std::string &s) {
    std::string r;
    char b[4];
    for (unsigned char c : s) {
        std::snprintf(b, sizeof b, "%02x ", c);
        r += b;
    }
    return r;
}

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
uint64_t double_bits(double d) {
    uint64_t u;
    std::memcpy(&u, &d, 8);
    return u;
}

// Owns a parsed schema and its generic value class.
struct Schema {
    avro_schema_t schema = nullptr;
    avro_value_iface_t *iface = nullptr;
    explicit Schema(const char *json) {
        if (avro_schema_from_json_length(json, std::strlen(json), &schema) != 0) {
            std::printf("  schema error: %s\n", avro_strerror());
            schema = nullptr;
            return;
        }
        iface = avro_generic_class_from_schema(schema);
    }
    ~Schema() {
        if (iface) avro_value_iface_decref(iface);
        if (schema) avro_schema_decref(schema);
    }
    bool ok() const { return schema && iface; }
};

// An avro-c generic value, freed on scope exit.
struct Value {
    avro_value_t v;
    bool live = false;
    explicit Value(Schema &s) { live = avro_generic_value_new(s.iface, &v) == 0; }
    ~Value() {
        if (live) avro_value_decref(&v);
    }
};

#define AVRO_OK(expr) do { if ((expr) != 0) { \
    check::fail(__FILE__, __LINE__, std::string(#expr ": ") + avro_strerror()); return false; } } while (0)

// --- the direct encoder ---------------------------------------------------

void encode_direct(AvroWriter &w, const Row &r, size_t block = 0) {
    w.put_int(r.i);
    w.put_long(r.l);
    w.put_float(r.f);
    w.put_double(r.d);
    w.put_bool(r.b);
    w.put_string(r.s);
    w.put_bytes(r.y.data(), r.y.size());
    if (r.u) {
        w.put_union_branch(1);
        w.put_string(*r.u);
    } else {
        w.put_union_branch(0);
    }
    // block == 0: one block with every item (what avro-c writes); otherwise
    // blocks of at most `block` items.
    size_t n = r.a.size(), at = 0;
    while (at < n) {
        size_t cnt = block ? std::min(block, n - at) : n;
        w.put_array_block(cnt);
        for (size_t k = 0; k < cnt; k++, at++) {
            if (r.a[at]) {
                w.put_union_branch(1);
                w.put_int(*r.a[at]);
            } else {
                w.put_union_branch(0);
            }
        }
    }
    w.put_array_end();
    w.put_enum(r.e);
}

// --- avro-c as the reference ----------------------------------------------

bool fill_value(avro_value_t *rec, const Row &r) {
    avro_value_t f, br, item;
    AVRO_OK(avro_value_reset(rec));
    AVRO_OK(avro_value_get_by_name(rec, "i", &f, NULL));
    AVRO_OK(avro_value_set_int(&f, r.i));
    AVRO_OK(avro_value_get_by_name(rec, "l", &f, NULL));
    AVRO_OK(avro_value_set_long(&f, r.l));
    AVRO_OK(avro_value_get_by_name(rec, "f", &f, NULL));
    AVRO_OK(avro_value_set_float(&f, r.f));
    AVRO_OK(avro_value_get_by_name(rec, "d", &f, NULL));
    AVRO_OK(avro_value_set_double(&f, r.d));
    AVRO_OK(avro_value_get_by_name(rec, "b", &f, NULL));
    AVRO_OK(avro_value_set_boolean(&f, r.b));
    AVRO_OK(avro_value_get_by_name(rec, "s", &f, NULL));
    // The length given to avro-c counts the terminating NUL.
    AVRO_OK(avro_value_set_string_len(&f, r.s.c_str(), r.s.size() + 1));
    AVRO_OK(avro_value_get_by_name(rec, "y", &f, NULL));
    AVRO_OK(avro_value_set_bytes(&f, const_cast<char *>(r.y.data()), r.y.size()));
    AVRO_OK(avro_value_get_by_name(rec, "u", &f, NULL));
    if (r.u) {
        AVRO_OK(avro_value_set_branch(&f, 1, &br));
        AVRO_OK(avro_value_set_string_len(&br, r.u->c_str(), r.u->size() + 1));
    } else {
        AVRO_OK(avro_value_set_branch(&f, 0, &br));
        AVRO_OK(avro_value_set_null(&br));
    }
    AVRO_OK(avro_value_get_by_name(rec, "a", &f, NULL));
    for (const auto &x : r.a) {
        AVRO_OK(avro_value_append(&f, &item, NULL));
        if (x) {
            AVRO_OK(avro_value_set_branch(&item, 1, &br));
            AVRO_OK(avro_value_set_int(&br, *x));
        } else {
            AVRO_OK(avro_value_set_branch(&item, 0, &br));
            AVRO_OK(avro_value_set_null(&br));
        }
    }
    AVRO_OK(avro_value_get_by_name(rec, "e", &f, NULL));
    AVRO_OK(avro_value_set_enum(&f, r.e));
    return true;
}

bool write_with_avroc(avro_value_t *v, std::string &out) {
    size_t size = 0;
    AVRO_OK(avro_value_sizeof(v, &size));
    std::vector<char> buf(size + 16);
    avro_writer_t w = avro_writer_memory(buf.data(), static_cast<int64_t>(buf.size()));
    if (!w) {
        check::fail(__FILE__, __LINE__, "avro_writer_memory failed");
        return false;
    }
    int rc = avro_value_write(w, v);
    int64_t n = avro_writer_tell(w);
    avro_writer_free(w);
    if (rc != 0) {
        check::fail(__FILE__, __LINE__, std::string("avro_value_write: ") + avro_strerror());
        return false;
    }
    if (static_cast<size_t>(n) != size) check::fail(__FILE__, __LINE__, "avro_value_sizeof disagrees with writer");
    out.assign(buf.data(), static_cast<size_t>(n));
    return true;
}

bool encode_avroc(Schema &s, const Row &r, std::string &out) {
    Value v(s);
    if (!v.live) {
        check::fail(__FILE__, __LINE__, "avro_generic_value_new failed");
        return false;
    }
    return fill_value(&v.v, r) && write_with_avroc(&v.v, out);
}

bool value_to_row(avro_value_t *rec, Row &r) {
    avro_value_t f, br, item;
    AVRO_OK(avro_value_get_by_name(rec, "i", &f, NULL));
    AVRO_OK(avro_value_get_int(&f, &r.i));
    AVRO_OK(avro_value_get_by_name(rec, "l", &f, NULL));
    AVRO_OK(avro_value_get_long(&f, &r.l));
    AVRO_OK(avro_value_get_by_name(rec, "f", &f, NULL));
    AVRO_OK(avro_value_get_float(&f, &r.f));
    AVRO_OK(avro_value_get_by_name(rec, "d", &f, NULL));
    AVRO_OK(avro_value_get_double(&f, &r.d));
    AVRO_OK(avro_value_get_by_name(rec, "b", &f, NULL));
    int b = 0;
    AVRO_OK(avro_value_get_boolean(&f, &b));
    r.b = b != 0;
    const char *p = nullptr;
    const void *q = nullptr;
    size_t size = 0;
    AVRO_OK(avro_value_get_by_name(rec, "s", &f, NULL));
    AVRO_OK(avro_value_get_string(&f, &p, &size));
    r.s.assign(p ? p : "", size ? size - 1 : 0);  // size counts the NUL
    AVRO_OK(avro_value_get_by_name(rec, "y", &f, NULL));
    AVRO_OK(avro_value_get_bytes(&f, &q, &size));
    r.y.assign(static_cast<const char *>(q), size);
    AVRO_OK(avro_value_get_by_name(rec, "u", &f, NULL));
    int disc = -1;
    AVRO_OK(avro_value_get_discriminant(&f, &disc));
    AVRO_OK(avro_value_get_current_branch(&f, &br));
    if (disc == 1) {
        AVRO_OK(avro_value_get_string(&br, &p, &size));
        r.u = std::string(p ? p : "", size ? size - 1 : 0);
    } else if (disc == 0) {
        AVRO_OK(avro_value_get_null(&br));
        r.u.reset();
    } else {
        check::fail(__FILE__, __LINE__, "bad discriminant for u");
        return false;
    }
    AVRO_OK(avro_value_get_by_name(rec, "a", &f, NULL));
    size_t n = 0;
    AVRO_OK(avro_value_get_size(&f, &n));
    r.a.clear();
    for (size_t k = 0; k < n; k++) {
        AVRO_OK(avro_value_get_by_index(&f, k, &item, NULL));
        AVRO_OK(avro_value_get_discriminant(&item, &disc));
        AVRO_OK(avro_value_get_current_branch(&item, &br));
        if (disc == 1) {
            int32_t x = 0;
            AVRO_OK(avro_value_get_int(&br, &x));
            r.a.emplace_back(x);
        } else if (disc == 0) {
            r.a.emplace_back(std::nullopt);
        } else {
            check::fail(__FILE__, __LINE__, "bad discriminant in a");
            return false;
        }
    }
    AVRO_OK(avro_value_get_by_name(rec, "e", &f, NULL));
    AVRO_OK(avro_value_get_enum(&f, &r.e));
    return true;
}

// Decodes every row in `bytes` with avro-c's generic reader; fails if bytes
// are left over or missing.
bool decode_avroc(Schema &s, const std::string &bytes, size_t count, std::vector<Row> &rows) {
    avro_reader_t rd = avro_reader_memory(bytes.data(), static_cast<int64_t>(bytes.size()));
    if (!rd) {
        check::fail(__FILE__, __LINE__, "avro_reader_memory failed");
        return false;
    }
    bool ok = true;
    for (size_t k = 0; k < count && ok; k++) {
        Value v(s);
        if (!v.live || avro_value_read(rd, &v.v) != 0) {
            check::fail(__FILE__, __LINE__, std::string("avro_value_read: ") + avro_strerror());
            ok = false;
            break;
        }
        Row r;
        ok = value_to_row(&v.v, r);
        rows.push_back(std::move(r));
    }
    if (ok) {
        char extra;
        if (avro_read(rd, &extra, 1) == 0) {
            check::fail(__FILE__, __LINE__, "trailing bytes after the last row");
            ok = false;
        }
    }
    avro_reader_free(rd);
    return ok;
}

bool same_row(const Row &x, const Row &y, std::string &why) {
    if (x.i != y.i) why += " i";
    if (x.l != y.l) why += " l";
    if (float_bits(x.f) != float_bits(y.f)) why += " f";
    if (double_bits(x.d) != double_bits(y.d)) why += " d";
    if (x.b != y.b) why += " b";
    if (x.s != y.s) why += " s";
    if (x.y != y.y) why += " y";
    if (x.u != y.u) why += " u";
    if (x.a != y.a) why += " a";
    if (x.e != y.e) why += " e";
    return why.empty();
}

std::vector<Row> edge_rows() {
    std::vector<Row> rows;
    Row r;
    rows.push_back(r);  // all zero / empty, null union, empty array

    r = Row();
    r.i = std::numeric_limits<int32_t>::min();
    r.l = std::numeric_limits<int64_t>::min();
    r.f = -std::numeric_limits<float>::infinity();
    r.d = -std::numeric_limits<double>::infinity();
    r.b = true;
    r.s = "";
    r.y = "";
    r.u = std::string("");
    r.a = {std::nullopt};
    r.e = 2;
    rows.push_back(r);

    r = Row();
    r.i = std::numeric_limits<int32_t>::max();
    r.l = std::numeric_limits<int64_t>::max();
    r.f = std::numeric_limits<float>::infinity();
    r.d = std::numeric_limits<double>::infinity();
    r.s = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC \xF0\x9F\x90\x98 \xE6\x97\xA5\xE6\x9C\xAC";
    r.y = std::string("\x00\x01\xFF\xFE\x00", 5);
    r.u = std::string("\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82");
    r.a = {std::numeric_limits<int32_t>::min(), std::nullopt, 0, -1, std::numeric_limits<int32_t>::max()};
    r.e = 1;
    rows.push_back(r);

    r = Row();
    r.i = -1;
    r.l = -1;
    r.f = std::numeric_limits<float>::quiet_NaN();
    r.d = std::numeric_limits<double>::quiet_NaN();
    r.s = std::string(300, 'q');  // two-byte length varint
    r.y = std::string(200, '\x80');
    r.u.reset();
    for (int k = 0; k < 200; k++) r.a.push_back(k % 7 == 0 ? std::optional<int32_t>() : std::optional<int32_t>(k * 1000 - 70000));
    rows.push_back(r);

    r = Row();
    r.i = 64;
    r.l = -64;
    r.f = -0.0f;
    r.d = -0.0;
    r.b = true;
    r.s = "\"quoted\"\\\n\t";
    r.u = std::string("x");
    r.a = {1};
    rows.push_back(r);

    r = Row();
    r.i = -65;
    r.l = 1LL << 40;
    r.f = std::numeric_limits<float>::denorm_min();
    r.d = std::numeric_limits<double>::denorm_min();
    r.s = "a";
    r.y = "b";
    rows.push_back(r);

    r = Row();
    r.f = std::numeric_limits<float>::max();
    r.d = std::numeric_limits<double>::lowest();
    r.l = -(1LL << 62);
    r.i = 1 << 30;
    r.e = 0;
    rows.push_back(r);

    r = Row();
    r.f = 3.14159265f;
    r.d = 2.718281828459045;
    r.s = std::string(70000, 'z');  // three-byte length varint
    rows.push_back(r);
    return rows;
}

}  // namespace

TEST(zigzag_varint_known_bytes) {
    struct { int64_t v; const char *bytes; size_t n; } cases[] = {
        {0, "\x00", 1},
        {-1, "\x01", 1},
        {1, "\x02", 1},
        {-2, "\x03", 1},
        {2, "\x04", 1},
        {-64, "\x7f", 1},
        {64, "\x80\x01", 2},
        {63, "\x7e", 1},
        {-65, "\x81\x01", 2},
        {8191, "\xfe\x7f", 2},
        {8192, "\x80\x80\x01", 3},
        {std::numeric_limits<int64_t>::max(), "\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10},
        {std::numeric_limits<int64_t>::min(), "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10},
        {std::numeric_limits<int32_t>::max(), "\xfe\xff\xff\xff\x0f", 5},
        {std::numeric_limits<int32_t>::min(), "\xff\xff\xff\xff\x0f", 5},
    };
    for (const auto &c : cases) {
        AvroWriter w;
        w.put_long(c.v);
        if (w.data() != std::string(c.bytes, c.n))
            check::fail(__FILE__, __LINE__, "put_long(" + std::to_string(c.v) + ") = " + hex(w.data()));
    }
    AvroWriter w;
    w.put_int(std::numeric_limits<int32_t>::min());
    CHECK_EQ(w.data(), std::string("\xff\xff\xff\xff\x0f", 5));
}

TEST(primitives_match_avroc) {
    // Every power of two and its neighbours, positive and negative, as long
    // and (when in range) as int; floats and doubles too.
    Schema sl("\"long\""), si("\"int\""), sf("\"float\""), sd("\"double\"");
    CHECK(sl.ok() && si.ok() && sf.ok() && sd.ok());
    if (!(sl.ok() && si.ok() && sf.ok() && sd.ok())) return;
    std::vector<int64_t> vals = {0, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
    for (int b = 0; b < 63; b++) {
        int64_t p = int64_t(1) << b;
        for (int64_t d : {-1, 0, 1}) {
            vals.push_back(p + d);
            vals.push_back(-(p + d));
        }
    }
    for (int64_t v : vals) {
        AvroWriter w;
        w.put_long(v);
        Value lv(sl);
        std::string ref;
        if (avro_value_set_long(&lv.v, v) != 0 || !write_with_avroc(&lv.v, ref)) continue;
        if (w.data() != ref) check::fail(__FILE__, __LINE__, "long " + std::to_string(v) + ": " + hex(w.data()) + "vs " + hex(ref));
        if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
            AvroWriter wi;
            wi.put_int(static_cast<int32_t>(v));
            Value iv(si);
            if (avro_value_set_int(&iv.v, static_cast<int32_t>(v)) != 0 || !write_with_avroc(&iv.v, ref)) continue;
            if (wi.data() != ref) check::fail(__FILE__, __LINE__, "int " + std::to_string(v) + ": " + hex(wi.data()) + "vs " + hex(ref));
        }
    }
    for (double d : {0.0, -0.0, 1.0, -1.5, 1e-300, 1e300, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max()}) {
        AvroWriter w;
        w.put_double(d);
        Value v(sd);
        std::string ref;
        if (avro_value_set_double(&v.v, d) != 0 || !write_with_avroc(&v.v, ref)) continue;
        if (w.data() != ref) check::fail(__FILE__, __LINE__, "double: " + hex(w.data()) + "vs " + hex(ref));
        float f = static_cast<float>(d);
        AvroWriter wf;
        wf.put_float(f);
        Value fv(sf);
        if (avro_value_set_float(&fv.v, f) != 0 || !write_with_avroc(&fv.v, ref)) continue;
        if (wf.data() != ref) check::fail(__FILE__, __LINE__, "float: " + hex(wf.data()) + "vs " + hex(ref));
    }
    AvroWriter w;
    w.put_double(1.0);
    CHECK_EQ(w.data(), std::string("\x00\x00\x00\x00\x00\x00\xf0\x3f", 8));
    w.clear();
    w.put_float(1.0f);
    CHECK_EQ(w.data(), std::string("\x00\x00\x80\x3f", 4));
}

TEST(records_decode_with_avroc) {
    Schema s(kRecordSchema);
    CHECK(s.ok());
    if (!s.ok()) return;
    std::vector<Row> rows = edge_rows();
    for (size_t k = 0; k < rows.size(); k++) {
        AvroWriter w;
        encode_direct(w, rows[k]);
        std::vector<Row> back;
        if (!decode_avroc(s, w.data(), 1, back)) {
            check::fail(__FILE__, __LINE__, "row " + std::to_string(k) + " did not decode");
            continue;
        }
        std::string why;
        if (!same_row(rows[k], back[0], why))
            check::fail(__FILE__, __LINE__, "row " + std::to_string(k) + " differs in" + why);
    }
}

TEST(records_byte_identical_to_avroc) {
    Schema s(kRecordSchema);
    CHECK(s.ok());
    if (!s.ok()) return;
    std::vector<Row> rows = edge_rows();
    for (size_t k = 0; k < rows.size(); k++) {
        AvroWriter w;
        encode_direct(w, rows[k]);
        std::string ref;
        if (!encode_avroc(s, rows[k], ref)) {
            check::fail(__FILE__, __LINE__, "avro-c could not encode row " + std::to_string(k));
            continue;
        }
        if (w.data() != ref) {
            std::string a = w.data().size() > 64 ? w.data().substr(0, 64) : w.data();
            std::string b = ref.size() > 64 ? ref.substr(0, 64) : ref;
            check::fail(__FILE__, __LINE__, "row " + std::to_string(k) + " (" + std::to_string(w.size()) + " vs " +
                                                std::to_string(ref.size()) + " bytes)\n    ours:  " + hex(a) +
                                                "\n    avro-c: " + hex(b));
        }
    }
}

TEST(stream_of_rows_and_clear) {
    Schema s(kRecordSchema);
    CHECK(s.ok());
    if (!s.ok()) return;
    std::vector<Row> rows = edge_rows();
    AvroWriter w;
    w.put_string("garbage to be cleared");
    w.clear();
    CHECK_EQ(w.size(), size_t(0));
    std::string ref_all;
    for (const Row &r : rows) {
        encode_direct(w, r);
        std::string ref;
        if (encode_avroc(s, r, ref)) ref_all += ref;
    }
    CHECK(w.data() == ref_all);
    std::vector<Row> back;
    CHECK(decode_avroc(s, w.data(), rows.size(), back));
    CHECK_EQ(back.size(), rows.size());
    for (size_t k = 0; k < back.size() && k < rows.size(); k++) {
        std::string why;
        if (!same_row(rows[k], back[k], why))
            check::fail(__FILE__, __LINE__, "stream row " + std::to_string(k) + " differs in" + why);
    }
}

TEST(array_in_several_blocks_decodes) {
    // Not byte-identical to avro-c (which writes a single block), but a valid
    // encoding that any reader must accept.
    Schema s(kRecordSchema);
    CHECK(s.ok());
    if (!s.ok()) return;
    std::vector<Row> rows = edge_rows();
    for (size_t block : {size_t(1), size_t(2), size_t(3), size_t(64)}) {
        for (size_t k = 0; k < rows.size(); k++) {
            AvroWriter w;
            encode_direct(w, rows[k], block);
            std::vector<Row> back;
            if (!decode_avroc(s, w.data(), 1, back)) {
                check::fail(__FILE__, __LINE__, "blocked row " + std::to_string(k) + " did not decode");
                continue;
            }
            std::string why;
            if (!same_row(rows[k], back[0], why))
                check::fail(__FILE__, __LINE__, "blocked row " + std::to_string(k) + " differs in" + why);
        }
    }
}

TEST(truncated_output_is_rejected_by_avroc) {
    // Sanity check of the checker itself: a row cut short must not decode.
    Schema s(kRecordSchema);
    CHECK(s.ok());
    if (!s.ok()) return;
    Row r = edge_rows()[2];
    AvroWriter w;
    encode_direct(w, r);
    std::string cut = w.data().substr(0, w.size() - 1);
    avro_reader_t rd = avro_reader_memory(cut.data(), static_cast<int64_t>(cut.size()));
    Value v(s);
    CHECK(avro_value_read(rd, &v.v) != 0);
    avro_reader_free(rd);
}

TEST_MAIN()
