// fingerprint.cpp: Avro Parsing Canonical Form (on top of avro-c's schema
// parser), CRC-64-AVRO, single-object header and base64url.
#include "fingerprint.hpp"

#include <avro.h>

#include <array>
#include <cstdio>
#include <set>
#include <stdexcept>

namespace creek {

namespace {

// JSON string literal. Avro names and enum symbols are plain ASCII; anything
// else is written as UTF-8 (rule STRINGS), escaping only what JSON requires.
void put_json_string(std::string &out, const char *s) {
    out.push_back('"');
    for (const unsigned char *p = reinterpret_cast<const unsigned char *>(s); *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c < 0x20) {
            char tmp[8];
            std::snprintf(tmp, sizeof tmp, "\\u%04x", c);
            out.append(tmp);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

// Full name of a named schema. avro-c resolves names at parse time: a dotted
// name is split into namespace and name, an unqualified nested name inherits
// the enclosing namespace, and an empty namespace is reported as NULL.
std::string full_name(avro_schema_t s) {
    const char *name = avro_schema_name(s);
    const char *ns = avro_schema_namespace(s);
    std::string r;
    if (ns && *ns) {
        r = ns;
        r.push_back('.');
    }
    r += name ? name : "";
    return r;
}

class Canonicalizer {
public:
    std::string out;

    void write(avro_schema_t s) {
        switch (avro_typeof(s)) {
        case AVRO_NULL: out += "\"null\""; return;
        case AVRO_BOOLEAN: out += "\"boolean\""; return;
        case AVRO_INT32: out += "\"int\""; return;
        case AVRO_INT64: out += "\"long\""; return;
        case AVRO_FLOAT: out += "\"float\""; return;
        case AVRO_DOUBLE: out += "\"double\""; return;
        case AVRO_BYTES: out += "\"bytes\""; return;
        case AVRO_STRING: out += "\"string\""; return;
        case AVRO_LINK: {
            avro_schema_t target = avro_schema_link_target(s);
            if (!target) throw std::invalid_argument("avro schema: unresolved named type reference");
            put_json_string(out, full_name(target).c_str());
            return;
        }
        case AVRO_RECORD: {
            if (already_written(s)) return;
            out += "{\"name\":";
            put_json_string(out, full_name(s).c_str());
            out += ",\"type\":\"record\",\"fields\":[";
            size_t n = avro_schema_record_size(s);
            for (size_t i = 0; i < n; i++) {
                if (i) out.push_back(',');
                out += "{\"name\":";
                put_json_string(out, avro_schema_record_field_name(s, static_cast<int>(i)));
                out += ",\"type\":";
                write(avro_schema_record_field_get_by_index(s, static_cast<int>(i)));
                out.push_back('}');
            }
            out += "]}";
            return;
        }
        case AVRO_ENUM: {
            if (already_written(s)) return;
            out += "{\"name\":";
            put_json_string(out, full_name(s).c_str());
            out += ",\"type\":\"enum\",\"symbols\":[";
            int n = avro_schema_enum_number_of_symbols(s);
            for (int i = 0; i < n; i++) {
                if (i) out.push_back(',');
                put_json_string(out, avro_schema_enum_get(s, i));
            }
            out += "]}";
            return;
        }
        case AVRO_FIXED: {
            if (already_written(s)) return;
            out += "{\"name\":";
            put_json_string(out, full_name(s).c_str());
            out += ",\"type\":\"fixed\",\"size\":";
            out += std::to_string(static_cast<long long>(avro_schema_fixed_size(s)));
            out.push_back('}');
            return;
        }
        case AVRO_ARRAY:
            out += "{\"type\":\"array\",\"items\":";
            write(avro_schema_array_items(s));
            out.push_back('}');
            return;
        case AVRO_MAP:
            out += "{\"type\":\"map\",\"values\":";
            write(avro_schema_map_values(s));
            out.push_back('}');
            return;
        case AVRO_UNION: {
            out.push_back('[');
            size_t n = avro_schema_union_size(s);
            for (size_t i = 0; i < n; i++) {
                if (i) out.push_back(',');
                write(avro_schema_union_branch(s, static_cast<int>(i)));
            }
            out.push_back(']');
            return;
        }
        default:
            throw std::invalid_argument("avro schema: unsupported schema type");
        }
    }

private:
    std::set<std::string> seen_;

    // A named type already written in full is written again as its full name.
    bool already_written(avro_schema_t s) {
        std::string fn = full_name(s);
        if (!seen_.insert(fn).second) {
            put_json_string(out, fn.c_str());
            return true;
        }
        return false;
    }
};

struct SchemaRef {
    avro_schema_t s = nullptr;
    ~SchemaRef() {
        if (s) avro_schema_decref(s);
    }
};

constexpr uint64_t kEmpty = 0xc15d213aa4d7a795ULL;

constexpr std::array<uint64_t, 256> make_table() {
    std::array<uint64_t, 256> t{};
    for (int i = 0; i < 256; i++) {
        uint64_t fp = static_cast<uint64_t>(i);
        for (int j = 0; j < 8; j++) fp = (fp >> 1) ^ (kEmpty & (0 - (fp & 1ULL)));
        t[static_cast<size_t>(i)] = fp;
    }
    return t;
}

// Computed at compile time: no run-time initialisation, hence no race.
constexpr std::array<uint64_t, 256> kTable = make_table();

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

}  // namespace

std::string canonical_form(const std::string &schema_json) {
    SchemaRef ref;
    if (avro_schema_from_json_length(schema_json.data(), schema_json.size(), &ref.s) != 0 || !ref.s) {
        ref.s = nullptr;
        const char *err = avro_strerror();
        throw std::invalid_argument(std::string("invalid Avro schema: ") + (err && *err ? err : "parse error"));
    }
    Canonicalizer c;
    c.write(ref.s);
    return std::move(c.out);
}

uint64_t crc64_avro(const std::string &bytes) {
    uint64_t fp = kEmpty;
    for (unsigned char b : bytes) fp = (fp >> 8) ^ kTable[(fp ^ b) & 0xff];
    return fp;
}

std::string fingerprint_bytes(uint64_t fp) {
    std::string r(8, '\0');
    for (int i = 0; i < 8; i++) r[static_cast<size_t>(i)] = static_cast<char>((fp >> (8 * i)) & 0xff);
    return r;
}

std::string single_object_header(uint64_t fp) {
    std::string r("\xC3\x01", 2);
    r += fingerprint_bytes(fp);
    return r;
}

std::string base64url_encode(const std::string &bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0, n = bytes.size();
    auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out.push_back(kB64[(v >> 6) & 63]);
        out.push_back(kB64[v & 63]);
    }
    if (n - i == 1) {
        uint32_t v = at(i) << 16;
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out += "==";
    } else if (n - i == 2) {
        uint32_t v = (at(i) << 16) | (at(i + 1) << 8);
        out.push_back(kB64[(v >> 18) & 63]);
        out.push_back(kB64[(v >> 12) & 63]);
        out.push_back(kB64[(v >> 6) & 63]);
        out.push_back('=');
    }
    return out;
}

// Strict: the length must be a multiple of 4, '=' may only pad the last group
// (one or two of them), every other character must be in the base64url
// alphabet, and the unused bits before the padding must be zero (so every
// byte string has exactly one accepted encoding). On failure out is unchanged.
bool base64url_decode(const std::string &text, std::string &out) {
    size_t n = text.size();
    if (n % 4 != 0) return false;
    std::string r;
    r.reserve(n / 4 * 3);
    for (size_t i = 0; i < n; i += 4) {
        bool last = (i + 4 == n);
        int pad = 0;
        if (last) {
            if (text[i + 3] == '=') pad = (text[i + 2] == '=') ? 2 : 1;
        }
        int v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 - pad; k++) {
            v[k] = b64_value(static_cast<unsigned char>(text[i + static_cast<size_t>(k)]));
            if (v[k] < 0) return false;
        }
        uint32_t w = (static_cast<uint32_t>(v[0]) << 18) | (static_cast<uint32_t>(v[1]) << 12) |
                     (static_cast<uint32_t>(v[2]) << 6) | static_cast<uint32_t>(v[3]);
        r.push_back(static_cast<char>((w >> 16) & 0xff));
        if (pad == 2) {
            if (w & 0xffff) return false;
            break;
        }
        r.push_back(static_cast<char>((w >> 8) & 0xff));
        if (pad == 1) {
            if (w & 0xff) return false;
            break;
        }
        r.push_back(static_cast<char>(w & 0xff));
    }
    out = std::move(r);
    return true;
}

}  // namespace creek
