// encode_cost.cpp: what writing creek's row messages costs, with creek's
// direct encoder (src/avro_writer.hpp) and with avro-c's generic value API.
//
// For the benchmark's two row shapes (bench.py: narrow, 4 columns; wide, 30
// columns of about 2 KB) it builds the writer schema creek publishes for an
// insert (record publish_message: fingerprint, source, op, sent_at, before,
// after, every column a union with null, variable-length ones with
// "unchanged"), fills one message per row with values that change from row
// to row, and writes the Avro binary body both ways:
//   direct  creek::AvroWriter, the calls creek's decoder and encoder make;
//   avro-c  avro_generic_value_new once, then per message the fields set by
//           index (avro_value_set_branch, avro_value_set_string_len...) and
//           avro_value_write into a memory writer.
// It checks that both give the same bytes for every message, then times each
// way (best of --rounds) and prints ns per message. Only the Avro writing is
// measured: turning Postgres datums into values (numeric's text, for one) is
// the same work either way.
//
//   bash bench/encode_cost.sh [--rows N] [--rounds R]
#include "avro_writer.hpp"

#include <avro.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

enum class Kind { Long, Int, Bool, Text };

struct Column {
    std::string name;
    Kind kind;
};

struct Shape {
    const char *label;
    const char *table;
    std::vector<Column> cols;
    size_t text_len;
};

Shape narrow()
{
    return {"narrow (id bigint, a text, b int, c timestamptz)", "narrow",
            {{"id", Kind::Long}, {"a", Kind::Text}, {"b", Kind::Int}, {"c", Kind::Long}}, 12};
}

Shape wide()
{
    Shape s{"wide (30 columns: id, 5 int, 3 bigint, timestamptz, numeric, boolean, 18 text of 102)", "wide", {}, 102};
    s.cols.push_back({"id", Kind::Long});
    for (int i = 1; i <= 5; i++) s.cols.push_back({"i" + std::to_string(i), Kind::Int});
    for (int i = 1; i <= 3; i++) s.cols.push_back({"l" + std::to_string(i), Kind::Long});
    s.cols.push_back({"ts", Kind::Long});
    s.cols.push_back({"num", Kind::Text});   // numeric: its text
    s.cols.push_back({"flag", Kind::Bool});
    for (int i = 1; i <= 18; i++) s.cols.push_back({"t" + std::to_string(i), Kind::Text});
    return s;
}

const char *avro_type(Kind k)
{
    switch (k) {
    case Kind::Long: return "\"long\"";
    case Kind::Int: return "\"int\"";
    case Kind::Bool: return "\"boolean\"";
    case Kind::Text: return "\"string\"";
    }
    return "";
}

std::string schema_json(const Shape &s)
{
    std::string j =
        "{\"type\":\"record\",\"name\":\"publish_message\",\"fields\":["
        "{\"name\":\"fingerprint\",\"type\":\"string\"},"
        "{\"name\":\"source\",\"type\":{\"type\":\"record\",\"name\":\"source\",\"fields\":["
        "{\"name\":\"name\",\"type\":\"string\"},"
        "{\"name\":\"tx_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}},"
        "{\"name\":\"db\",\"type\":\"string\"},{\"name\":\"schema\",\"type\":\"string\"},"
        "{\"name\":\"table\",\"type\":\"string\"},{\"name\":\"tx_id\",\"type\":\"long\"},"
        "{\"name\":\"last_lsn\",\"type\":\"string\"},{\"name\":\"lsn\",\"type\":\"string\"}]}},"
        "{\"name\":\"op\",\"type\":{\"type\":\"enum\",\"name\":\"op\",\"symbols\":[\"c\",\"u\",\"u_pk\",\"d\",\"t\",\"r\"]}},"
        "{\"name\":\"sent_at\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}},"
        "{\"name\":\"before\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"key\",\"fields\":["
        "{\"name\":\"id\",\"type\":[\"null\",\"long\"]}]}]},"
        "{\"name\":\"after\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"row\",\"fields\":[";
    bool unchanged_defined = false;
    for (size_t i = 0; i < s.cols.size(); i++) {
        const Column &c = s.cols[i];
        j += i ? "," : "";
        j += "{\"name\":\"" + c.name + "\",\"type\":[\"null\"," + avro_type(c.kind);
        if (c.kind == Kind::Text) {
            j += unchanged_defined ? ",\"unchanged\"" : ",{\"type\":\"record\",\"name\":\"unchanged\",\"fields\":[]}";
            unchanged_defined = true;
        }
        j += "]}";
    }
    return j + "]}]}]}";
}

// The values of message n.
struct Values {
    std::string fingerprint = "1wRSXoD9j2E=", producer = "creek", db = "bench", schema = "public", table;
    int64_t tx_at = 0, tx_id = 0, sent_at = 0;
    std::string last_lsn, lsn;
    std::vector<int64_t> nums;          // Long, Int, Bool columns
    std::vector<std::string> texts;     // Text columns
};

void fill(const Shape &s, long n, Values &v)
{
    v.table = s.table;
    v.tx_at = 1796601600000000LL + n;
    v.tx_id = 740 + n / 1000;
    v.sent_at = v.tx_at + 3000;
    char lsn[32];
    snprintf(lsn, sizeof lsn, "0/%lX", 0x1970000L + 104 * n);
    v.lsn = lsn;
    v.last_lsn = "0/9F3B2C10";
    v.nums.clear();
    v.texts.clear();
    for (size_t i = 0; i < s.cols.size(); i++) {
        switch (s.cols[i].kind) {
        case Kind::Long: v.nums.push_back(n * 7919 + int64_t(i)); break;
        case Kind::Int: v.nums.push_back(int32_t(n * 31 + int64_t(i))); break;
        case Kind::Bool: v.nums.push_back(n & 1); break;
        case Kind::Text: {
            std::string t = s.cols[i].name == "num" ? std::to_string(n) + ".25" : "row " + std::to_string(n) + " ";
            while (s.cols[i].name != "num" && t.size() < s.text_len) t += char('a' + (t.size() + i) % 26);
            v.texts.push_back(t);
            break;
        }
        }
    }
}

void write_direct(creek::AvroWriter &w, const Shape &s, const Values &v)
{
    w.clear();
    w.put_string(v.fingerprint);
    w.put_string(v.producer);
    w.put_long(v.tx_at);
    w.put_string(v.db);
    w.put_string(v.schema);
    w.put_string(v.table);
    w.put_long(v.tx_id);
    w.put_string(v.last_lsn);
    w.put_string(v.lsn);
    w.put_enum(0);
    w.put_long(v.sent_at);
    w.put_union_branch(0);      // before: null (an insert)
    w.put_union_branch(1);      // after: the row
    size_t ni = 0, ti = 0;
    for (const Column &c : s.cols) {
        w.put_union_branch(1);
        switch (c.kind) {
        case Kind::Long: w.put_long(v.nums[ni++]); break;
        case Kind::Int: w.put_int(int32_t(v.nums[ni++])); break;
        case Kind::Bool: w.put_bool(v.nums[ni++] != 0); break;
        case Kind::Text: w.put_string(v.texts[ti++]); break;
        }
    }
}

struct AvroC {
    avro_schema_t schema = nullptr;
    avro_value_iface_t *iface = nullptr;
    avro_value_t value;
    avro_writer_t writer = nullptr;
    std::vector<char> buf = std::vector<char>(1 << 16);

    explicit AvroC(const std::string &json) {
        if (avro_schema_from_json_length(json.data(), json.size(), &schema) != 0) die("schema");
        iface = avro_generic_class_from_schema(schema);
        if (iface == nullptr || avro_generic_value_new(iface, &value) != 0) die("generic value");
        writer = avro_writer_memory(buf.data(), int64_t(buf.size()));
    }
    ~AvroC() {
        avro_writer_free(writer);
        avro_value_decref(&value);
        avro_value_iface_decref(iface);
        avro_schema_decref(schema);
    }
    static void die(const char *what) {
        fprintf(stderr, "avro-c: %s: %s\n", what, avro_strerror());
        exit(1);
    }
    static void set_str(avro_value_t *f, const std::string &s) {
        if (avro_value_set_string_len(f, s.c_str(), s.size() + 1) != 0) die("string");
    }
    static avro_value_t field(avro_value_t *rec, size_t i) {
        avro_value_t f;
        if (avro_value_get_by_index(rec, i, &f, nullptr) != 0) die("field");
        return f;
    }

    // The message's bytes: [data, data + returned length).
    int64_t write(const Shape &s, const Values &v) {
        avro_value_t f = field(&value, 0), src, br, row, col;
        set_str(&f, v.fingerprint);
        src = field(&value, 1);
        f = field(&src, 0); set_str(&f, v.producer);
        f = field(&src, 1); avro_value_set_long(&f, v.tx_at);
        f = field(&src, 2); set_str(&f, v.db);
        f = field(&src, 3); set_str(&f, v.schema);
        f = field(&src, 4); set_str(&f, v.table);
        f = field(&src, 5); avro_value_set_long(&f, v.tx_id);
        f = field(&src, 6); set_str(&f, v.last_lsn);
        f = field(&src, 7); set_str(&f, v.lsn);
        f = field(&value, 2); avro_value_set_enum(&f, 0);
        f = field(&value, 3); avro_value_set_long(&f, v.sent_at);
        f = field(&value, 4); avro_value_set_branch(&f, 0, &br); avro_value_set_null(&br);
        f = field(&value, 5); avro_value_set_branch(&f, 1, &row);
        size_t ni = 0, ti = 0;
        for (size_t i = 0; i < s.cols.size(); i++) {
            col = field(&row, i);
            avro_value_set_branch(&col, 1, &br);
            switch (s.cols[i].kind) {
            case Kind::Long: avro_value_set_long(&br, v.nums[ni++]); break;
            case Kind::Int: avro_value_set_int(&br, int32_t(v.nums[ni++])); break;
            case Kind::Bool: avro_value_set_boolean(&br, v.nums[ni++] != 0); break;
            case Kind::Text: set_str(&br, v.texts[ti++]); break;
            }
        }
        avro_writer_memory_set_dest(writer, buf.data(), int64_t(buf.size()));
        if (avro_value_write(writer, &value) != 0) die("write");
        return avro_writer_tell(writer);
    }
};

double now_s()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of rounds, ns per message; the values of every message are made
// beforehand so that only the writing is timed.
template <typename F>
double time_best(const std::vector<Values> &vals, long rows, int rounds, F write_one)
{
    double best = 1e30;
    for (int r = 0; r < rounds; r++) {
        double t0 = now_s();
        for (long n = 0; n < rows; n++)
            write_one(vals[size_t(n) % vals.size()]);
        best = std::min(best, (now_s() - t0) * 1e9 / double(rows));
    }
    return best;
}

}  // namespace

int main(int argc, char **argv)
{
    long rows = 1000000;
    int rounds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows")) rows = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else { fprintf(stderr, "usage: encode_cost [--rows N] [--rounds R]\n"); return 2; }
    }
    printf("| rows | message body | creek direct | avro-c generic value | avro-c / direct |\n|---|---|---|---|---|\n");
    for (const Shape &s : {narrow(), wide()}) {
        const std::string json = schema_json(s);
        AvroC ac(json);
        creek::AvroWriter w;
        std::vector<Values> vals(4096);
        for (size_t n = 0; n < vals.size(); n++) fill(s, long(n), vals[n]);
        // Same bytes, message by message.
        size_t bytes = 0;
        for (const Values &v : vals) {
            write_direct(w, s, v);
            int64_t len = ac.write(s, v);
            if (size_t(len) != w.size() || memcmp(ac.buf.data(), w.data().data(), w.size()) != 0) {
                fprintf(stderr, "%s: direct and avro-c bytes differ (%zu against %lld bytes)\n", s.label, w.size(),
                        (long long) len);
                return 1;
            }
            bytes += w.size();
        }
        size_t sink = 0;
        double direct = time_best(vals, rows, rounds, [&](const Values &v) { write_direct(w, s, v); sink += w.size(); });
        double avroc = time_best(vals, rows, rounds, [&](const Values &v) { sink += size_t(ac.write(s, v)); });
        printf("| %s | %zu bytes | %.0f ns | %.0f ns | %.1fx |\n", s.label, bytes / vals.size(), direct, avroc,
               avroc / direct);
        if (sink == 0) return 1;
    }
    printf("(%ld messages per way and shape, best of %d; the same bytes both ways, checked for %d messages)\n", rows,
           rounds, 4096);
    return 0;
}
