// publisher_impl.hpp: the inside of creek::Publisher, shared by
// publisher.cpp (the send window, acknowledgements, recovery) and
// publisher_conn.cpp (nats.c: the library, the connection and its event
// loop, the streams, the service subscriptions). Not for other files.
#pragma once

#include "publisher.hpp"

#include <nats/nats.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <deque>
#include <mutex>
#include <string>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace creek {
namespace pub {

inline int64_t realtime_us() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

inline int64_t monotonic_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// State shared with nats.c threads. Allocated separately from Impl so that it
// can outlive the Publisher when nats.c threads might still be running (it is
// then leaked on purpose: a few hundred bytes, once per Publisher).
struct CbState {
    std::mutex mu;
    bool dead = false;               // guarded by mu: the Publisher is gone
    int efd = -1;                    // guarded by mu once threads exist
    bool wake_pending = false;       // guarded by mu: efd written, not yet cleared
    // The event loop: an epoll instance with efd (tag kTagWake) and the
    // connection's socket (tag kTagSocket) once nats.c attached it.
    int epfd = -1;                   // set before any thread exists
    std::mutex io_mu;                // guards sock and want_write (never held while calling nats.c)
    int sock = -1;
    bool want_write = false;
    std::string last_error;          // guarded by mu
    int64_t last_error_time_us = 0;  // guarded by mu
    uint64_t error_generation = 0;   // guarded by mu

    std::atomic<int> state{int(NatsState::Disconnected)};
    std::atomic<natsConnection *> current{nullptr};
    std::atomic<bool> closed_seen{false};

    // Caller holds mu.
    // One write per wake-up, however many events arrive before the owner
    // clears it (a write is a system call, and may switch threads).
    void wake_locked() {
        if (dead || efd < 0 || wake_pending) return;
        wake_pending = true;
        uint64_t one = 1;
        ssize_t r = ::write(efd, &one, sizeof one);
        (void) r;  // EAGAIN: counter saturated, already readable
    }
    void wake() {
        std::lock_guard<std::mutex> g(mu);
        wake_locked();
    }
    // Never throws (used from nats.c threads too).
    void set_error(const char *a, const char *b = nullptr, const char *c = nullptr) noexcept {
        std::lock_guard<std::mutex> g(mu);
        try {
            std::string s(a ? a : "");
            if (b) s += b;
            if (c) s += c;
            last_error.swap(s);
        } catch (...) {
            // keep the old text; the generation still tells a new error came
        }
        last_error_time_us = realtime_us();
        error_generation++;
    }
};

// The text of nats.c's last error for this thread, or of s (publisher_conn.cpp).
std::string last_nats_error(natsStatus s);

}  // namespace pub

using pub::CbState;

struct Publisher::Impl {
    enum EntryState : uint8_t { Queued, InFlight, Acked, Failed };
    struct Entry {
        const std::string *subject = nullptr;   // in subjects
        const std::string *stream = nullptr;    // its stream's subject filter (see stream_filter_of)
        std::string id, data;
        std::string chunk;     // "k/n" for a part of a split message, else empty
        uint64_t send_no = 0;      // while in flight: which send (its reply subject says)
        EntryState st = Queued;
        int64_t sent_ms = 0;
        // Sent with a reply subject: the messages sent just before it without
        // one (positions pos - covers .. pos - 1, send numbers send_no -
        // covers .. send_no - 1), and the send number of the message with a
        // reply sent before them (0: none).
        uint32_t covers = 0;
        uint64_t prev_reply_no = 0;
    };

    PublisherConfig cfg;
    CbState *cb = nullptr;

    natsConnection *conn = nullptr;
    jsCtx *js = nullptr;
    natsSubscription *ack_sub = nullptr;   // "<inbox>.>": JetStream's answers
    std::string inbox;                     // "<inbox>." (a new one per connection)
    uint64_t sends = 0;                    // send numbers handed out
    bool ever_connected = false;  // nats.c threads may know cb
    bool streams_ok = false;
    uint64_t max_payload = 0;
    int64_t stream_max_msg = 0;     // smallest MaxMsgSize of the streams (0: none)
    bool too_large = false;         // a queued part exceeds what the server now accepts

    std::vector<std::string> sub_subjects;
    std::vector<natsSubscription *> subs;   // parallel to sub_subjects
    size_t next_sub = 0;

    // Every message not yet covered by acked_through, in position order:
    // entries[i] has position acked_through + 1 + i.
    std::deque<Entry> entries;
    // every subject enqueued (one per table), with its stream's subject filter
    std::unordered_map<std::string, const std::string *> subjects;
    std::string scratch;                        // a message's header and payload (send())
    std::deque<uint64_t> outgoing;          // positions to send, ascending
    size_t inflight = 0;
    size_t failed_waiting = 0;              // Failed entries not yet requeued
    // Recovery: set by any failure; no new message goes out while it is set
    // and messages are in flight. Cleared when the probe (the first message
    // resent after the in-flight window drained) is acknowledged.
    bool recovering = false;
    uint64_t probe_pos = 0;                 // the probe in flight, 0: none
    uint64_t send_epoch = 0;                // conn's reconnect count when the in-flight messages were sent
    natsStatistics *stats = nullptr;
    natsConnStatus conn_status = NATS_CONN_STATUS_DISCONNECTED;  // read by watch_connection()
    int64_t resend_after_ms = 0;
    int64_t backoff_ms = 0;
    int64_t last_deadline_scan_ms = 0;

    // ack_every > 1: the last message sent with a reply subject, the messages
    // sent since without one, and the last acknowledgement applied (send
    // number and stream sequence; 0: none that can anchor a count).
    // (Answers from one stream come in send order, but not across streams.)
    uint64_t chain_reply_no = 0;                // 0: none, or a resend (maybe a duplicate)
    const std::string *chain_stream = nullptr;  // its stream's subject filter
    uint32_t chain_covers = 0;
    struct LastAck {
        uint64_t no = 0;    // send number (0: a duplicate or a failure)
        uint64_t seq = 0;
    };
    std::unordered_map<const std::string *, LastAck> last_ack;   // per stream
    // cfg.ordered_stream: its entry in cfg.streams (nullptr: none), and the
    // position of the last message sent to it (0: none)
    const std::string *ordered_filter = nullptr;
    uint64_t ordered_last_pos = 0;
    const std::string *stream_filter_of(const std::string &subject) const;
    void resolve_covered(uint64_t pos, uint64_t send_no, uint32_t covers, bool stored);

    uint64_t last_pos = 0;
    uint64_t acked = 0;
    uint64_t msgs_published = 0;
    uint64_t bytes_published = 0;


    Entry &entry(uint64_t pos) { return entries[size_t(pos - acked - 1)]; }

    void set_error(const std::string &s) { cb->set_error(s.c_str()); }

    bool connected() const {
        return conn != nullptr && cb->state.load() == int(NatsState::Connected);
    }

    // -- connection management (owner thread) --

    bool open_library();
    bool connect();
    bool create_js();
    bool ensure_streams();
    bool subscribe_one(size_t i);
    bool subscribe_acks();
    void poll_io();
    void close_epoll() {
        std::lock_guard<std::mutex> g(cb->io_mu);
        if (cb->epfd >= 0) ::close(cb->epfd);
        cb->epfd = -1;
        cb->sock = -1;
    }
    // The Publisher is going away: no more wake-ups, the event loop closed.
    void mark_dead() {
        std::lock_guard<std::mutex> g(cb->mu);
        cb->dead = true;
        if (cb->efd >= 0) ::close(cb->efd);
        cb->efd = -1;
        close_epoll();
    }
    void teardown(bool wait_closed);
    void fail_all_inflight();
    uint64_t conn_epoch();
    void reclaim_inflight(const char *why);
    void watch_connection();

    // -- publishing --
    void apply_acks();
    void mark_acked(Entry &e, uint64_t pos);
    void mark_failed(Entry &e);
    void check_local_deadlines(int64_t now);
    void advance();
    void requeue_failures(int64_t now);
    void send(int64_t now);
};

}  // namespace creek
