// js_answer.cpp: JetStream's answers to publishes (see js_answer.hpp).
#include "js_answer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace creek {

namespace {

// Where needle starts in the len bytes at d, or nullptr (no allocation).
const char *find(const char *d, size_t len, const char *needle) {
    return static_cast<const char *>(memmem(d, len, needle, std::strlen(needle)));
}

// The ':' after key k (nullptr when there is none).
const char *after_colon(const char *k, const char *end) {
    return static_cast<const char *>(std::memchr(k, ':', size_t(end - k)));
}

}  // namespace

bool parse_reply_subject(const char *subj, size_t prefix_len, uint64_t *pos, uint64_t *no) {
    if (subj == nullptr || std::strlen(subj) <= prefix_len) return false;
    char *end = nullptr;
    errno = 0;
    unsigned long long p = std::strtoull(subj + prefix_len, &end, 10);
    if (errno != 0 || end == nullptr || end == subj + prefix_len || *end != '.') return false;
    const char *rest = end + 1;
    unsigned long long n = std::strtoull(rest, &end, 10);
    if (errno != 0 || end == rest || *end != '\0') return false;
    *pos = p;
    *no = n;
    return true;
}

PubAnswer parse_pub_answer(const char *d, size_t len, const char *status) {
    PubAnswer a;
    if (d == nullptr || len == 0) {
        if (status != nullptr && std::strncmp(status, "503", 3) == 0) {
            a.failure = PubAnswer::NoResponders;
            a.text = "no responders: no stream takes the subject";
        } else {
            a.failure = PubAnswer::Other;
            a.text = "empty answer from the server";
        }
        return a;
    }
    const char *end = d + len;
    if (find(d, len, "\"error\"") == nullptr) {
        const char *k = find(d, len, "\"seq\"");
        const char *colon = k != nullptr ? after_colon(k, end) : nullptr;
        a.ok = colon != nullptr;
        if (a.ok) {
            a.seq = std::strtoull(colon + 1, nullptr, 10);
            // nats-server 2.9 writes `"duplicate": true`
            if (const char *dk = find(d, len, "\"duplicate\"")) {
                const char *v = dk + 11;
                while (v < end && (*v == ':' || *v == ' ')) v++;
                a.duplicate = end - v >= 4 && std::memcmp(v, "true", 4) == 0;
            }
            return a;
        }
        a.failure = PubAnswer::Other;
        a.text = "unexpected answer: " + std::string(d, std::min<size_t>(len, 200));
        return a;
    }
    a.failure = PubAnswer::Other;
    if (const char *k = find(d, len, "\"err_code\"")) {
        if (const char *colon = after_colon(k, end)) a.err_code = int(std::strtol(colon + 1, nullptr, 10));
    }
    if (const char *k = find(d, len, "\"description\"")) {
        const char *colon = after_colon(k, end);
        const char *q = colon ? static_cast<const char *>(std::memchr(colon, '"', size_t(end - colon))) : nullptr;
        const char *e = q ? static_cast<const char *>(std::memchr(q + 1, '"', size_t(end - q - 1))) : nullptr;
        if (q != nullptr) a.text.assign(q + 1, e ? e : end);
    }
    if (a.text.empty()) a.text.assign(d, std::min<size_t>(len, 200));
    return a;
}

}  // namespace creek
