// js_answer.hpp: what JetStream answers to a publish, read without a JSON
// parser (it runs for every acknowledgement), and the reply subjects creek
// puts on its messages. Plain C++: no nats.c, no Postgres.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace creek {

// {"stream":..,"seq":..} (maybe with "duplicate": true, also a success),
// {"error":{"code":..,"err_code":..,"description":".."}}, or an empty message
// with header Status 503 (no stream takes the subject).
struct PubAnswer {
    enum Failure { None, NoResponders, Other };
    bool ok = false;
    bool duplicate = false;  // the message id was stored before
    uint64_t seq = 0;        // the stream sequence of the stored message
    Failure failure = None;
    int err_code = 0;        // JetStream error code on failure
    std::string text;
};

// data/len: the answer's payload; status: its Status header (nullptr: none).
PubAnswer parse_pub_answer(const char *data, size_t len, const char *status);

// Reads "<inbox><position>.<send number>" (prefix_len: the inbox's length).
bool parse_reply_subject(const char *subj, size_t prefix_len, uint64_t *pos, uint64_t *no);

}  // namespace creek
