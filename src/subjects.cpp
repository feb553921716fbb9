// subjects.cpp: subject tokens (protocol.md, "Subject tokens").
#include "subjects.hpp"

namespace creek {

static bool keep(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

std::string subject_token(const std::string &name)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(name.size());
    for (unsigned char c : name) {
        if (keep(c)) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool subject_token_decode(const std::string &token, std::string &out)
{
    out.clear();
    for (size_t i = 0; i < token.size(); i++) {
        unsigned char c = static_cast<unsigned char>(token[i]);
        if (keep(c)) {
            out.push_back(static_cast<char>(c));
        } else if (c == '%' && i + 2 < token.size() + 0 && i + 2 <= token.size() - 1 + 0) {
            int h = hexval(token[i + 1]), l = hexval(token[i + 2]);
            if (h < 0 || l < 0)
                return false;
            unsigned char v = static_cast<unsigned char>(h * 16 + l);
            if (keep(v))
                return false;  // not canonical
            out.push_back(static_cast<char>(v));
            i += 2;
        } else {
            return false;
        }
    }
    return true;
}

std::string stream_token(const std::string &name)
{
    std::string t = subject_token(name);
    for (char &c : t)
        if (c == '%')
            c = '=';
    return t;
}

Subjects::Subjects(const std::string &ns_, const std::string &db_name)
    : ns(ns_), db(subject_token(db_name)), db_stream(stream_token(db_name))
{
}

std::string Subjects::wal(const std::string &schema, const std::string &table) const
{
    return ns + "." + db + ".wal." + subject_token(schema) + "." + subject_token(table);
}

std::string Subjects::schema(const std::string &schema, const std::string &table) const
{
    return ns + "." + db + ".schema." + subject_token(schema) + "." + subject_token(table);
}

}  // namespace creek
