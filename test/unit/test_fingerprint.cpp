// test_fingerprint.cpp: Parsing Canonical Form, CRC-64-AVRO, single-object
// header and base64url.
#include "check.hpp"
#include "fingerprint.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>

using namespace creek;

namespace {

struct Vector {
    const char *input;
    const char *canonical;
    bool has_fp;
    int64_t fp;
};

// apache/avro share/test/data/schema-tests.txt (some entries have no
// fingerprint line there). All entries but 016, the empty union "[  ]", which
// avro-c's parser rejects ("Union type must have at least one branch"), so
// canonical_form throws std::invalid_argument for it.
const Vector kVectors[] = {
    {"\"null\"", "\"null\"", true, 7195948357588979594LL},
    {"{\"type\":\"null\"}", "\"null\"", false, 0},
    {"\"boolean\"", "\"boolean\"", true, -6970731678124411036LL},
    {"{\"type\":\"boolean\"}", "\"boolean\"", false, 0},
    {"\"int\"", "\"int\"", true, 8247732601305521295LL},
    {"{\"type\":\"int\"}", "\"int\"", false, 0},
    {"\"long\"", "\"long\"", true, -3434872931120570953LL},
    {"{\"type\":\"long\"}", "\"long\"", false, 0},
    {"\"float\"", "\"float\"", true, 5583340709985441680LL},
    {"{\"type\":\"float\"}", "\"float\"", false, 0},
    {"\"double\"", "\"double\"", true, -8181574048448539266LL},
    {"{\"type\":\"double\"}", "\"double\"", false, 0},
    {"\"bytes\"", "\"bytes\"", true, 5746618253357095269LL},
    {"{\"type\":\"bytes\"}", "\"bytes\"", false, 0},
    {"\"string\"", "\"string\"", true, -8142146995180207161LL},
    {"{\"type\":\"string\"}", "\"string\"", false, 0},
    {"[ \"int\"  ]", "[\"int\"]", true, -5232228896498058493LL},
    {"[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]", true, 5392556393470105090LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}", true, 5916914534497305771LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", \"namespace\":\"x.y\"}",
     "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}", true, -4616218487480524110LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"Useful info\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", \"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", true, -4824392279771201922LL},
    {"{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"}]}", true,
     7843277075252814651LL},
    {"{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", \"default\":\"true\"},\n"
     "            {\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\",\"type\":\"int\"}],\n"
     "  \"type\":\"record\", \"name\":\"foo\"\n}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\",\"type\":\"boolean\"},"
     "{\"name\":\"f2\",\"type\":\"int\"}]}",
     true, -4860222112080293046LL},
    {"{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}", true, -6342190197741309591LL},
    {"{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", \"doc\":\"foo bar\", \"symbols\":[\"A1\", \"A2\"]}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\",\"A2\"]}", true, -4448647247586288245LL},
    {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", true,
     1756455273707447556LL},
    {"{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", \"doc\":\"foo bar\", \"size\":32}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}", true, -3064184465700546786LL},
    {"{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}", "{\"type\":\"array\",\"items\":\"null\"}", true,
     -589620603366471059LL},
    {"{ \"values\":\"string\", \"type\":\"map\"}", "{\"type\":\"map\",\"values\":\"string\"}", true,
     -8732877298790414990LL},
    {"  {\"name\":\"PigValue\",\"type\":\"record\",\n"
     "   \"fields\":[{\"name\":\"value\", \"type\":[\"null\", \"int\", \"long\", \"PigValue\"]}]}",
     "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":\"value\",\"type\":[\"null\",\"int\",\"long\","
     "\"PigValue\"]}]}",
     true, -1759257747318642341LL},
};

std::string hex(const std::string &s) {
    std::string r;
    char b[4];
    for (unsigned char c : s) {
        std::snprintf(b, sizeof b, "%02x", c);
        r += b;
    }
    return r;
}

bool throws_invalid(const std::string &json) {
    try {
        canonical_form(json);
    } catch (const std::invalid_argument &) {
        return true;
    }
    return false;
}

// Runs a shell command and returns its standard output; status in *rc.
std::string run(const std::string &cmd, int *rc) {
    std::string out;
    FILE *p = popen(cmd.c_str(), "r");
    if (!p) {
        *rc = -1;
        return out;
    }
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    *rc = pclose(p);
    return out;
}

}  // namespace

TEST(spec_vectors) {
    for (const Vector &v : kVectors) {
        std::string c;
        try {
            c = canonical_form(v.input);
        } catch (const std::exception &e) {
            check::fail(__FILE__, __LINE__, std::string("canonical_form threw for ") + v.input + ": " + e.what());
            continue;
        }
        if (c != v.canonical)
            check::fail(__FILE__, __LINE__, std::string("canonical_form(") + v.input + ") = " + c +
                                                ", expected " + v.canonical);
        // The fingerprint is checked on the expected canonical form so that a
        // CRC bug and a canonicalisation bug are reported separately.
        if (v.has_fp && static_cast<int64_t>(crc64_avro(v.canonical)) != v.fp)
            check::fail(__FILE__, __LINE__, std::string("crc64_avro(") + v.canonical + ") = " +
                                                std::to_string(static_cast<int64_t>(crc64_avro(v.canonical))) +
                                                ", expected " + std::to_string(v.fp));
    }
}

TEST(crc64_empty_and_known) {
    CHECK_EQ(crc64_avro(""), 0xc15d213aa4d7a795ULL);
    CHECK_EQ(static_cast<int64_t>(crc64_avro("\"int\"")), 8247732601305521295LL);
    // Fingerprint of the canonical form, end to end.
    CHECK_EQ(static_cast<int64_t>(crc64_avro(canonical_form("{\"type\":\"map\", \"values\":{\"type\":\"string\"}}"))),
             -8732877298790414990LL);
}

TEST(logical_types_stripped) {
    CHECK_EQ(canonical_form("{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}"), std::string("\"long\""));
    CHECK_EQ(canonical_form("{\"type\":\"int\",\"logicalType\":\"date\"}"), std::string("\"int\""));
    CHECK_EQ(canonical_form("{\"type\":\"string\",\"logicalType\":\"uuid\"}"), std::string("\"string\""));
    CHECK_EQ(canonical_form("{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":10,\"scale\":2}"),
             std::string("\"bytes\""));
    const char *rec =
        "{\"type\":\"record\",\"name\":\"row\",\"namespace\":\"creek.public\",\"doc\":\"a table\","
        "\"fields\":["
        "{\"name\":\"id\",\"type\":\"int\",\"pgType\":\"int4\",\"pgKey\":true},"
        "{\"name\":\"at\",\"type\":[\"null\",{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}],"
        "\"default\":null,\"pgType\":\"timestamptz\"},"
        "{\"name\":\"amount\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":12,"
        "\"scale\":2},\"pgType\":\"numeric\"}"
        "],\"pgRelation\":\"public.row\"}";
    CHECK_EQ(canonical_form(rec),
             std::string("{\"name\":\"creek.public.row\",\"type\":\"record\",\"fields\":["
                         "{\"name\":\"id\",\"type\":\"int\"},"
                         "{\"name\":\"at\",\"type\":[\"null\",\"long\"]},"
                         "{\"name\":\"amount\",\"type\":\"bytes\"}]}"));
}

TEST(inherited_namespace) {
    const char *s =
        "{\"type\":\"record\",\"name\":\"outer\",\"namespace\":\"n.s\",\"fields\":["
        "{\"name\":\"a\",\"type\":{\"type\":\"record\",\"name\":\"inner\",\"fields\":["
        "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\",\"Y\"]}}]}},"
        "{\"name\":\"b\",\"type\":[\"null\",\"inner\"]},"
        "{\"name\":\"c\",\"type\":\"n.s.E\"},"
        "{\"name\":\"d\",\"type\":{\"type\":\"fixed\",\"name\":\"other.F\",\"size\":4}},"
        "{\"name\":\"f\",\"type\":{\"type\":\"record\",\"name\":\"G\",\"namespace\":\"m\",\"fields\":["
        "{\"name\":\"h\",\"type\":{\"type\":\"enum\",\"name\":\"H\",\"symbols\":[\"Z\"]}}]}},"
        "{\"name\":\"g\",\"type\":{\"type\":\"array\",\"items\":\"m.H\"}},"
        "{\"name\":\"i\",\"type\":{\"type\":\"map\",\"values\":\"other.F\"}}"
        "]}";
    CHECK_EQ(canonical_form(s),
             std::string("{\"name\":\"n.s.outer\",\"type\":\"record\",\"fields\":["
                         "{\"name\":\"a\",\"type\":{\"name\":\"n.s.inner\",\"type\":\"record\",\"fields\":["
                         "{\"name\":\"e\",\"type\":{\"name\":\"n.s.E\",\"type\":\"enum\",\"symbols\":[\"X\",\"Y\"]}}]}},"
                         "{\"name\":\"b\",\"type\":[\"null\",\"n.s.inner\"]},"
                         "{\"name\":\"c\",\"type\":\"n.s.E\"},"
                         "{\"name\":\"d\",\"type\":{\"name\":\"other.F\",\"type\":\"fixed\",\"size\":4}},"
                         "{\"name\":\"f\",\"type\":{\"name\":\"m.G\",\"type\":\"record\",\"fields\":["
                         "{\"name\":\"h\",\"type\":{\"name\":\"m.H\",\"type\":\"enum\",\"symbols\":[\"Z\"]}}]}},"
                         "{\"name\":\"g\",\"type\":{\"type\":\"array\",\"items\":\"m.H\"}},"
                         "{\"name\":\"i\",\"type\":{\"type\":\"map\",\"values\":\"other.F\"}}]}"));
}

TEST(whitespace_and_key_order_do_not_matter) {
    std::string a = canonical_form(
        "{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"x\",\"type\":\"int\"}]}");
    std::string b = canonical_form(
        "  {\n \"fields\" : [ { \"type\" : { \"type\" : \"int\" } , \"name\" : \"x\" } ] ,\n"
        "  \"name\" : \"r\" , \"type\" : \"record\" }\n");
    CHECK_EQ(a, b);
    CHECK_EQ(crc64_avro(a), crc64_avro(b));
}

TEST(invalid_schema_throws) {
    CHECK(throws_invalid(""));
    CHECK(throws_invalid("{"));
    CHECK(throws_invalid("not json"));
    CHECK(throws_invalid("\"no_such_type\""));
    CHECK(throws_invalid("{\"type\":\"record\",\"name\":\"r\"}"));
    CHECK(throws_invalid("{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"x\",\"type\":\"Unknown\"}]}"));
    CHECK(throws_invalid("{\"type\":\"enum\",\"name\":\"e\"}"));
    CHECK(throws_invalid("{\"type\":\"fixed\",\"name\":\"f\"}"));
    try {
        canonical_form("{\"type\":\"bogus\"}");
        CHECK(!"no exception");
    } catch (const std::invalid_argument &e) {
        CHECK(std::string(e.what()).size() > 0);
    }
}

TEST(fingerprint_bytes_little_endian) {
    std::string b = fingerprint_bytes(0x0102030405060708ULL);
    CHECK_EQ(b, std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8));
    CHECK_EQ(fingerprint_bytes(0).size(), size_t(8));
}

TEST(single_object_header_layout) {
    uint64_t fp = crc64_avro("\"string\"");
    std::string h = single_object_header(fp);
    CHECK_EQ(h.size(), size_t(10));
    CHECK_EQ(static_cast<unsigned char>(h[0]), 0xC3);
    CHECK_EQ(static_cast<unsigned char>(h[1]), 0x01);
    CHECK_EQ(h.substr(2), fingerprint_bytes(fp));
    uint64_t back = 0;
    for (int i = 0; i < 8; i++) back |= uint64_t(static_cast<unsigned char>(h[2 + i])) << (8 * i);
    CHECK_EQ(back, fp);
}

TEST(base64url_known) {
    CHECK_EQ(base64url_encode(""), std::string(""));
    CHECK_EQ(base64url_encode("f"), std::string("Zg=="));
    CHECK_EQ(base64url_encode("fo"), std::string("Zm8="));
    CHECK_EQ(base64url_encode("foo"), std::string("Zm9v"));
    CHECK_EQ(base64url_encode("foob"), std::string("Zm9vYg=="));
    CHECK_EQ(base64url_encode("fooba"), std::string("Zm9vYmE="));
    CHECK_EQ(base64url_encode("foobar"), std::string("Zm9vYmFy"));
    CHECK_EQ(base64url_encode(std::string("\xFB\xFF", 2)), std::string("-_8="));
    CHECK_EQ(base64url_encode(std::string("\xFB\xEF\xFF", 3)), std::string("--__"));
}

TEST(base64url_round_trip) {
    for (size_t len = 0; len <= 10; len++) {
        for (int seed = 0; seed < 16; seed++) {
            std::string s;
            for (size_t i = 0; i < len; i++) s.push_back(static_cast<char>((i * 97 + seed * 31 + 251) & 0xff));
            std::string e = base64url_encode(s);
            CHECK_EQ(e.size() % 4, size_t(0));
            CHECK(e.find('+') == std::string::npos && e.find('/') == std::string::npos);
            std::string d;
            CHECK(base64url_decode(e, d));
            if (d != s) check::fail(__FILE__, __LINE__, "round trip mismatch for " + hex(s) + " via " + e);
        }
    }
    // Every byte value.
    std::string all;
    for (int i = 0; i < 256; i++) all.push_back(static_cast<char>(i));
    std::string d;
    CHECK(base64url_decode(base64url_encode(all), d));
    CHECK(d == all);
    // The single-object header as it would travel in a header.
    std::string h = single_object_header(crc64_avro("\"long\""));
    CHECK(base64url_decode(base64url_encode(h), d));
    CHECK(d == h);
}

TEST(base64url_rejects_garbage) {
    std::string d = "untouched";
    CHECK(!base64url_decode("Zg=", d));        // length not a multiple of 4
    CHECK(!base64url_decode("Z", d));
    CHECK(!base64url_decode("Zm9vY", d));
    CHECK(!base64url_decode("Zm+v", d));       // standard alphabet
    CHECK(!base64url_decode("Zm/v", d));
    CHECK(!base64url_decode("Zm9 ", d));       // space
    CHECK(!base64url_decode("Zm9\n", d));
    CHECK(!base64url_decode("Zm!v", d));
    CHECK(!base64url_decode("====", d));
    CHECK(!base64url_decode("Z===", d));
    CHECK(!base64url_decode("Zg==Zm9v", d));   // padding in the middle
    CHECK(!base64url_decode("Z=g=", d));
    CHECK(!base64url_decode("Zh==", d));       // non-zero unused bits
    CHECK(!base64url_decode("Zm9=", d));
    CHECK(!base64url_decode(std::string("Zm9\0", 4), d));
    CHECK(!base64url_decode("Zm9v\xC3\xA9==", d));
    CHECK_EQ(d, std::string("untouched"));
    CHECK(base64url_decode("", d));
    CHECK_EQ(d, std::string(""));
    CHECK(base64url_decode("-_8=", d));
    CHECK_EQ(d, std::string("\xFB\xFF", 2));
}

// Independent implementation: python3-avro's canonical_form, on a schema
// without logical types (python-avro 1.11 keeps {"type":"long"} for those).
TEST(cross_check_python_avro) {
    int rc = 0;
    run("/usr/bin/python3 -c 'import avro.schema' >/dev/null 2>&1", &rc);
    if (rc != 0) {
        std::printf("  NOTE cross_check_python_avro: /usr/bin/python3 cannot import avro; skipped\n");
        return;
    }
    const std::string schema =
        "{\"type\":\"record\",\"name\":\"publish_message\",\"namespace\":\"creek.test\",\"doc\":\"x\","
        "\"fields\":["
        "{\"name\":\"subject\",\"type\":\"string\",\"doc\":\"where\"},"
        "{\"name\":\"op\",\"type\":{\"type\":\"enum\",\"name\":\"op_kind\",\"symbols\":[\"insert\",\"update\","
        "\"delete\"]}},"
        "{\"name\":\"source\",\"type\":{\"type\":\"record\",\"name\":\"source_info\",\"fields\":["
        "{\"name\":\"db\",\"type\":\"string\"},{\"name\":\"xid\",\"type\":\"long\"},"
        "{\"name\":\"tags\",\"type\":{\"type\":\"map\",\"values\":\"string\"}}]}},"
        "{\"name\":\"before\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"row\",\"namespace\":\"creek.rows\","
        "\"fields\":[{\"name\":\"id\",\"type\":\"int\"},{\"name\":\"blob\",\"type\":[\"null\",\"bytes\"]},"
        "{\"name\":\"hash\",\"type\":{\"type\":\"fixed\",\"name\":\"md5\",\"size\":16}},"
        "{\"name\":\"kind\",\"type\":\"creek.test.op_kind\"}]}],\"default\":null},"
        "{\"name\":\"after\",\"type\":[\"null\",\"creek.rows.row\"]},"
        "{\"name\":\"scores\",\"type\":{\"type\":\"array\",\"items\":[\"null\",\"double\",\"float\",\"boolean\"]}},"
        "{\"name\":\"commit_time\",\"type\":\"long\",\"order\":\"ignore\"}"
        "]}";
    char path[] = "/tmp/creek_fp_schemaXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    ssize_t w = write(fd, schema.data(), schema.size());
    close(fd);
    CHECK_EQ(w, static_cast<ssize_t>(schema.size()));
    std::string cmd = std::string("/usr/bin/python3 -c 'import sys, avro.schema; "
                                  "sys.stdout.write(avro.schema.parse(open(sys.argv[1]).read()).canonical_form)' ") +
                      path;
    std::string py = run(cmd, &rc);
    unlink(path);
    CHECK_EQ(rc, 0);
    std::string ours = canonical_form(schema);
    if (py != ours) check::fail(__FILE__, __LINE__, "python-avro: " + py + "\n  ours:        " + ours);
    CHECK(!py.empty());
}

TEST_MAIN()
