// test_js_answer.cpp: reading JetStream's answers to publishes and creek's
// reply subjects (src/js_answer.cpp). The answers are those nats-server 2.9
// sends; the publisher's tests cover them again against a real server.
#include "check.hpp"
#include "js_answer.hpp"

#include <cstring>
#include <string>

using creek::PubAnswer;

namespace {

PubAnswer parse(const std::string &s, const char *status = nullptr) {
    return creek::parse_pub_answer(s.data(), s.size(), status);
}

}  // namespace

TEST(stored_message) {
    PubAnswer a = parse("{\"stream\":\"CREEK_db_wal\",\"seq\":1234567890123}");
    CHECK(a.ok);
    CHECK(!a.duplicate);
    CHECK_EQ(a.seq, uint64_t(1234567890123ULL));
    CHECK_EQ(a.failure, PubAnswer::None);
}

TEST(duplicate_as_nats_server_2_9_writes_it) {
    PubAnswer a = parse("{\"stream\":\"S\",\"seq\":7,\"duplicate\": true}");
    CHECK(a.ok);
    CHECK(a.duplicate);
    CHECK_EQ(a.seq, uint64_t(7));
    CHECK(parse("{\"stream\":\"S\",\"seq\":7,\"duplicate\":true}").duplicate);
    CHECK(!parse("{\"stream\":\"S\",\"seq\":7,\"duplicate\": false}").duplicate);
}

TEST(jetstream_error_keeps_code_and_description) {
    PubAnswer a = parse("{\"error\":{\"code\":400,\"err_code\":10054,\"description\":\"message size exceeds maximum allowed\"}}");
    CHECK(!a.ok);
    CHECK_EQ(a.failure, PubAnswer::Other);
    CHECK_EQ(a.err_code, 10054);
    CHECK_EQ(a.text, std::string("message size exceeds maximum allowed"));
}

TEST(no_responders_and_empty_answers) {
    PubAnswer a = creek::parse_pub_answer(nullptr, 0, "503");
    CHECK(!a.ok);
    CHECK_EQ(a.failure, PubAnswer::NoResponders);
    PubAnswer b = creek::parse_pub_answer("", 0, nullptr);
    CHECK(!b.ok);
    CHECK_EQ(b.failure, PubAnswer::Other);
    CHECK_EQ(b.text, std::string("empty answer from the server"));
}

TEST(unexpected_answer_is_a_failure_with_its_text) {
    PubAnswer a = parse("+OK");
    CHECK(!a.ok);
    CHECK_EQ(a.failure, PubAnswer::Other);
    CHECK(a.text.find("+OK") != std::string::npos);
    CHECK(!parse("{\"stream\":\"S\",\"seq\"}").ok);   // a key without a value
}

TEST(reply_subjects) {
    const std::string inbox = "_INBOX.abc.";
    uint64_t pos = 0, no = 0;
    CHECK(creek::parse_reply_subject((inbox + "42.7").c_str(), inbox.size(), &pos, &no));
    CHECK_EQ(pos, uint64_t(42));
    CHECK_EQ(no, uint64_t(7));
    CHECK(!creek::parse_reply_subject((inbox + "42").c_str(), inbox.size(), &pos, &no));
    CHECK(!creek::parse_reply_subject((inbox + "42.").c_str(), inbox.size(), &pos, &no));
    CHECK(!creek::parse_reply_subject((inbox + ".7").c_str(), inbox.size(), &pos, &no));
    CHECK(!creek::parse_reply_subject((inbox + "42.7x").c_str(), inbox.size(), &pos, &no));
    CHECK(!creek::parse_reply_subject(inbox.c_str(), inbox.size(), &pos, &no));
    CHECK(!creek::parse_reply_subject(nullptr, inbox.size(), &pos, &no));
}

TEST_MAIN()
