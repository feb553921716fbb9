// json_text.cpp: JSON string literals.
#include "json_text.hpp"

#include <cstdio>

namespace creek {

void json_append_string(std::string &out, const std::string &s)
{
    out.push_back('"');
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out.push_back(static_cast<char>(c));
            }
        }
    }
    out.push_back('"');
}

namespace {

struct FlatParser {
    const std::string &t;
    size_t i = 0;
    std::string err;
    explicit FlatParser(const std::string &text) : t(text) {}

    void ws() {
        while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
    }
    bool fail(const char *why) {
        if (err.empty()) err = why;
        return false;
    }
    static void put_utf8(std::string &out, unsigned cp) {
        if (cp < 0x80) {
            out.push_back(char(cp));
        } else if (cp < 0x800) {
            out.push_back(char(0xC0 | (cp >> 6)));
            out.push_back(char(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            out.push_back(char(0xE0 | (cp >> 12)));
            out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(char(0x80 | (cp & 0x3F)));
        } else {
            out.push_back(char(0xF0 | (cp >> 18)));
            out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
            out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(char(0x80 | (cp & 0x3F)));
        }
    }
    bool hex4(unsigned &v) {
        if (i + 4 > t.size()) return fail("truncated \\u escape");
        v = 0;
        for (int k = 0; k < 4; k++) {
            char c = t[i++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= unsigned(c - '0');
            else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
            else return fail("bad \\u escape");
        }
        return true;
    }
    bool str(std::string &out) {
        if (i >= t.size() || t[i] != '"') return fail("a string was expected");
        i++;
        while (i < t.size() && t[i] != '"') {
            char c = t[i++];
            if ((unsigned char) c < 0x20) return fail("control character in a string");
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (i >= t.size()) return fail("truncated escape");
            char e = t[i++];
            switch (e) {
            case '"': out.push_back('"'); break;
            case '\\': out.push_back('\\'); break;
            case '/': out.push_back('/'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            case 'n': out.push_back('\n'); break;
            case 'r': out.push_back('\r'); break;
            case 't': out.push_back('\t'); break;
            case 'u': {
                unsigned cp;
                if (!hex4(cp)) return false;
                if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < t.size() && t[i] == '\\' && t[i + 1] == 'u') {
                    i += 2;
                    unsigned lo;
                    if (!hex4(lo)) return false;
                    if (lo < 0xDC00 || lo > 0xDFFF) return fail("bad surrogate pair");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                put_utf8(out, cp);
                break;
            }
            default: return fail("bad escape");
            }
        }
        if (i >= t.size()) return fail("unterminated string");
        i++;
        return true;
    }
    bool scalar(std::string &out) {
        if (i < t.size() && t[i] == '"') return str(out);
        size_t b = i;
        while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ' ' && t[i] != '\n' &&
               t[i] != '\t' && t[i] != '\r') {
            if (t[i] == '{' || t[i] == '[' || t[i] == '"') return fail("only flat values are accepted");
            i++;
        }
        if (i == b) return fail("a value was expected");
        out = t.substr(b, i - b);
        return true;
    }
};

}  // namespace

bool json_parse_flat_object(const std::string &text, std::map<std::string, std::string> &out,
                            std::string &err)
{
    FlatParser p(text);
    out.clear();
    p.ws();
    if (p.i >= text.size() || text[p.i] != '{') {
        err = "a JSON object was expected";
        return false;
    }
    p.i++;
    p.ws();
    if (p.i < text.size() && text[p.i] == '}') {
        p.i++;
    } else {
        for (;;) {
            std::string k, v;
            p.ws();
            if (!p.str(k)) break;
            p.ws();
            if (p.i >= text.size() || text[p.i] != ':') {
                p.fail("':' was expected");
                break;
            }
            p.i++;
            p.ws();
            if (!p.scalar(v)) break;
            out[k] = v;
            p.ws();
            if (p.i < text.size() && text[p.i] == ',') {
                p.i++;
                continue;
            }
            if (p.i < text.size() && text[p.i] == '}') {
                p.i++;
                break;
            }
            p.fail("',' or '}' was expected");
            break;
        }
    }
    if (p.err.empty()) {
        p.ws();
        if (p.i != text.size()) p.fail("text after the object");
    }
    err = p.err;
    return err.empty();
}

std::string json_string(const std::string &s)
{
    std::string out;
    json_append_string(out, s);
    return out;
}

}  // namespace creek
