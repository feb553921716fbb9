// publisher.hpp: asynchronous, ordered, at-least-once JetStream publishing.
//
// Plain C++ (no Postgres headers). Used from exactly one thread, the owner
// (the streaming worker's main thread), which also reads and writes the NATS
// socket itself in pump(): the connection runs on the publisher's own event
// loop, so no nats.c thread handles a message. nats.c still calls back on its
// own threads for connection events (and a short-lived helper thread drives
// the socket during calls that wait for a reply); those only touch the
// mutex-guarded/atomic state and wake the owner. They never call into Postgres.
//
// Delivery contract:
//  * enqueue() assigns each message a position (1, 2, 3, ...), in call order.
//  * Messages are sent in position order with their Nats-Msg-Id header, at most
//    max_in_flight unacknowledged at once.
//  * acked_through() is the highest position P such that every position <= P
//    has been acknowledged by JetStream (a duplicate ack counts as success),
//    directly or, with ack_every > 1, by a later acknowledgement whose stream
//    sequence proves it stored (see PublisherConfig::ack_every).
//  * A message whose publish fails (timeout, no responders, stream error,
//    disconnect) is sent again, in position order, after a back-off; nothing
//    is ever skipped and acked_through() never passes an unacknowledged message.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace creek {

struct StreamSettings {
    bool file_storage = true;      // false: memory storage
    int replicas = 1;
    int64_t max_age_ms = 0;        // 0: unlimited
    int64_t max_bytes = -1;        // -1: unlimited
    int64_t duplicate_window_ms = 120000;
};

// Credentials and TLS (all optional). Secrets never appear in errors.
struct NatsSecurity {
    std::string user, password;     // user and password
    std::string token;              // or a token
    std::string creds_file;         // or a .creds file (JWT and NKey seed)
    std::string nkey, nkey_seed_file;  // or an NKey: public key and seed file
    bool tls = false;               // require TLS
    std::string tls_ca_file, tls_cert_file, tls_key_file;
    bool tls_verify = true;         // verify the server's certificate
};

struct PublisherConfig {
    std::string urls;              // comma-separated nats:// URLs
    std::string connection_name;   // shown by the NATS server
    NatsSecurity security;
    // streams the publisher creates (if missing) before anything is sent:
    // each pair is (stream name, subject filter), e.g. ("CREEK_db_wal", "CREEK.db.wal.>")
    std::vector<std::pair<std::string, std::string>> streams;
    StreamSettings stream_settings;
    int max_in_flight = 1024;      // unacknowledged messages at once
    int64_t ack_timeout_ms = 5000; // an unanswered message fails after this (and is resent)
    // Ask JetStream for an acknowledgement on one message in ack_every (and on
    // the last one sent in a row, and on every resend); the ones between are
    // confirmed by the next acknowledgement when the stream's sequence moved
    // by exactly their number, and sent again (with an acknowledgement each)
    // otherwise. 1: an acknowledgement for every message.
    int ack_every = 1;
    // The subject filter (one of streams) of a stream only this publisher
    // writes, whose messages must be stored in position order whatever fails
    // (empty: none). A message sent while the previous message to that stream
    // is still unanswered carries Nats-Expected-Last-Msg-Id naming it:
    // JetStream refuses it unless that one is the last stored. A failed
    // message can then not be resent after later ones stored meanwhile (a
    // stream leader change with replicas, a message refused as too large).
    std::string ordered_stream;
    int64_t connect_timeout_ms = 2000;
    int64_t reconnect_wait_max_ms = 2000;  // reconnect back-off: 250 ms doubling up to this
    int64_t retry_backoff_min_ms = 100;
    int64_t retry_backoff_max_ms = 5000;
};

enum class NatsState { Disconnected, Connected, Reconnecting, Closed };
const char *nats_state_name(NatsState s);

// A request received on a service subscription (e.g. NS._schemas).
struct ServiceRequest {
    std::string subject;
    std::string reply;   // empty when the sender expects no reply
    std::string data;
};

class Publisher {
public:
    explicit Publisher(PublisherConfig cfg);
    ~Publisher();        // destroys subscriptions, js context, connection
    Publisher(const Publisher &) = delete;
    Publisher &operator=(const Publisher &) = delete;

    // Connects (if not connected) and ensures the configured streams exist.
    // Returns true when ready to publish. Never throws for NATS errors: it
    // returns false and sets last_error(). Call it again later to retry; it
    // does not block longer than about connect_timeout_ms per call.
    // All signals are blocked while nats.c may create threads.
    bool ensure_ready();
    bool ready() const;

    // Appends a message to the send queue (copies data). Returns its position
    // (the position of its last part). Never blocks, never sends: pump() does.
    //
    // A message larger than part_limit() is split into n parts, each a NATS
    // message on the same subject, sent one after the other, with the header
    // "Creek-Chunk: k/n" (k = 1..n) and the message id "<msg_id>:k/n". A
    // consumer concatenates the payloads of parts 1..n, in stream order, to
    // get the message; a part 1 starts a new message (an incomplete one before
    // it, left by a producer restart, is discarded).
    // (msg_id by value: a temporary id is moved into the queue, not copied)
    uint64_t enqueue(const std::string &subject, std::string msg_id,
                     const void *data, size_t len);
    // Largest payload sent as one message: the server's max_payload (or the
    // streams' smaller max_msg_size) minus room for headers; 0 when unknown
    // (not connected yet: nothing is split).
    size_t part_limit() const;
    static constexpr size_t kPartHeadroom = 1024;
    // True once a message was refused as too large (the server's limit went
    // down after it was split): the caller should start over from its source
    // so that it is split again for the new limit. It is retried meanwhile.
    bool too_large() const;

    // Sends queued messages while the in-flight window has room, applies the
    // acknowledgements received so far, and schedules resends of failures.
    // Never blocks for long (at most one short stall). Safe to call often.
    void pump();

    uint64_t last_position() const;   // last position handed out by enqueue()
    uint64_t acked_through() const;   // see the contract above
    size_t in_flight() const;         // sent, not yet acknowledged
    size_t queued() const;            // enqueued, not yet sent (including resends)
    // True when queued()+in_flight() < 2 * max_in_flight: the caller should
    // stop producing (and wait on wakeup_fd()) while this is false.
    bool has_room() const;

    // A file descriptor (an epoll instance) that becomes readable when the
    // NATS socket has data or room for pump(), or a connection event arrived.
    // Wait on it, then call clear_wakeup() and pump().
    int wakeup_fd() const;
    void clear_wakeup();

    // Service subscriptions (synchronous, polled by the owner thread).
    bool subscribe(const std::string &subject);   // false + last_error() on failure
    // Returns true and fills req when a request is waiting (never blocks).
    bool next_request(ServiceRequest &req);
    // Plain (core NATS) publish, used for replies. False on failure.
    bool respond(const std::string &reply, const std::string &data);

    // The last sequence number of a stream (0 when it is empty or does not
    // exist), or -1 with last_error() set. Needs ensure_ready().
    int64_t stream_last_seq(const std::string &stream);

    NatsState state() const;
    uint64_t messages_published() const;  // acknowledged messages
    uint64_t bytes_published() const;     // payload bytes of acknowledged messages
    uint64_t max_payload() const;         // server's max_payload, 0 when unknown

    // The most recent error (empty when none since construction), and when it
    // happened (microseconds since the Unix epoch). Errors are sticky: a later
    // success does not clear them; error_generation() increments on each new one.
    std::string last_error() const;
    int64_t last_error_time_us() const;
    uint64_t error_generation() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace creek
