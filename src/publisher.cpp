// publisher.cpp: asynchronous, ordered, at-least-once JetStream publishing
// on top of nats.c (see publisher.hpp for the contract): the send window, the
// acknowledgements and recovery. The connection, its event loop and the
// streams are in publisher_conn.cpp, the state both share in
// publisher_impl.hpp.
//
// Threads: every public method runs on the owner thread. nats.c invokes the
// connection and event loop callbacks (publisher_conn.cpp) on its own threads; they only
// touch CbState (mutexes, a few atomics, the epoll registration) and write to
// the eventfd. They never throw and never call into nats.c or Postgres.
//
// How messages travel (no nats.c thread on the path of a message):
//  * the connection runs on an external event loop (natsOptions_SetEventLoop)
//    that publisher_conn.cpp provides: an epoll instance holding the connection's
//    socket and the eventfd. nats.c then starts no read-loop thread, and with
//    natsOptions_SetSendAsap no flusher thread either. The owner thread reads
//    and writes the socket itself in pump() (natsConnection_ProcessReadEvent,
//    ProcessWriteEvent), and waits on the epoll descriptor (wakeup_fd());
//  * each message is a plain publish with the header Nats-Msg-Id and a reply
//    subject "<inbox>.<position>.<send number>"; JetStream answers there, and
//    the answers queue up in a synchronous subscription on "<inbox>.>" that
//    pump() drains: an acknowledgement is matched to its message by the
//    subject alone, and one meant for an earlier send of a message resent
//    since is recognized by the send number and ignored;
//  * an acknowledgement that does not come within ack_timeout_ms fails the
//    message (it is resent, see Recovery);
//  * calls that wait for a reply (stream management, flush) run while an
//    IoPump thread (all signals blocked) drives the event loop; the owner is
//    blocked in nats.c meanwhile, and the thread touches only nats.c.
//
// nats.c facts relied upon (nats.c 3.4.1, see conn.c/pub.c):
//  * with an event loop, nats.c calls attach (from the thread that connected
//    or reconnected) once the handshake is done, then never reads the socket
//    itself; it calls the read callback with "remove" and closes the socket
//    when the connection breaks, and detach when it is closed;
//  * with natsOptions_SetReconnectBufSize(opts, 0) a publish made while the
//    connection is reconnecting fails at once with NATS_INSUFFICIENT_BUFFER
//    (pub.c: "natsBuf_Len(nc->pending) >= reconnectBufSize"). The default
//    (8 MB) would queue it and write it to the new connection right after the
//    reconnect handshake, ahead of anything resent later. Bytes still in the
//    write buffer when the old socket dies are dropped (_processOpError), so
//    nothing published before a disconnect reaches the new connection;
//  * the connection's reconnect counter (natsStatistics "reconnects") is
//    incremented under the connection lock as soon as the new socket exists,
//    before any publish can be written to it: reading it after a publish
//    tells whether that publish could have gone to a newer connection;
//  * subscriptions are sent again on a new connection by nats.c itself;
//  * the disconnected/reconnected/closed callbacks run later on the
//    async-callback thread: they only wake the owner, they do not decide
//    anything; a connection's closed callback is the last one it posts;
//  * a server processes one connection's messages in order (nats-server 2.9
//    stores a client's JetStream message inline in the client's read loop).
//
// Ordering (see "Recovery" below): a failure of any kind (negative ack,
// timeout, local publish error, connection replaced) stops all sending until
// every in-flight message is resolved; then the unacknowledged messages are
// resent in position order, the first one alone (a probe), and pipelining
// resumes only once the probe is acknowledged.
#include "publisher_impl.hpp"
#include "nats_msg.hpp"
#include "js_answer.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>

namespace creek {

const char *nats_state_name(NatsState s) {
    switch (s) {
    case NatsState::Disconnected: return "disconnected";
    case NatsState::Connected: return "connected";
    case NatsState::Reconnecting: return "reconnecting";
    case NatsState::Closed: return "closed";
    }
    return "unknown";
}

namespace {

using namespace pub;

constexpr int kJSMessageTooLargeErr = 10054;  // JSStreamMessageExceedsMaximumErr

// JetStream's answer to one publish (src/js_answer.cpp reads it).
PubAnswer parse_answer(natsMsg *m) {
    const char *d = natsMsg_GetData(m);
    int n = natsMsg_GetDataLength(m);
    size_t len = d != nullptr && n > 0 ? size_t(n) : 0;
    const char *status = nullptr;
    if (len == 0 && natsMsgHeader_Get(m, "Status", &status) != NATS_OK) status = nullptr;
    return parse_pub_answer(d, len, status);
}

}  // namespace

using namespace pub;

void Publisher::Impl::mark_acked(Entry &e, uint64_t pos) {
    e.st = Acked;
    inflight--;
    msgs_published++;
    bytes_published += e.data.size();
    // never resent: release the memory now
    std::string().swap(e.data);
    std::string().swap(e.id);
    if (recovering && probe_pos != 0 && pos == probe_pos) {
        // The first unacknowledged message is stored: everything before it is
        // too, and nothing after it was sent. Pipelining may resume.
        recovering = false;
        probe_pos = 0;
    }
}

// The covers messages sent without a reply just before position pos (send
// number send_no), those still in flight from that same send: stored, or
// failed (resent, each with a reply: their message ids make that safe).
void Publisher::Impl::resolve_covered(uint64_t pos, uint64_t send_no, uint32_t covers, bool stored) {
    for (uint32_t i = 1; i <= covers && pos - i > acked; i++) {
        Entry &c = entry(pos - i);
        if (c.st != InFlight || c.send_no != send_no - i) continue;
        if (stored)
            mark_acked(c, pos - i);
        else
            mark_failed(c);
    }
}

// The subject filter of the configured stream that takes subject (nullptr:
// none, or one with wildcards other than a final ">").
const std::string *Publisher::Impl::stream_filter_of(const std::string &subject) const {
    for (const auto &st : cfg.streams) {
        const std::string &f = st.second;
        bool prefix = f.size() >= 2 && f.compare(f.size() - 2, 2, ".>") == 0;
        if (f.find('*') != std::string::npos || (!prefix && f.find('>') != std::string::npos)) continue;
        if (prefix ? subject.compare(0, f.size() - 1, f, 0, f.size() - 1) == 0 && subject.size() >= f.size()
                   : subject == f)
            return &st.second;
    }
    return nullptr;
}

void Publisher::Impl::mark_failed(Entry &e) {
    e.st = Failed;
    inflight--;
    failed_waiting++;
    recovering = true;   // nothing new goes out before this one is resent
}

void Publisher::Impl::apply_acks() {
    if (ack_sub == nullptr) return;
    size_t failures = 0;
    std::string first_failure;
    bool any_success = false;
    for (;;) {
        natsMsg *m = nullptr;
        natsStatus ns = natsSubscription_NextMsg(&m, ack_sub, 0);
        if (ns == NATS_NO_RESPONDERS) {
            // No stream takes a subject (nats.c swallows the 503 answer, so
            // which message it was for is unknown): every message in flight
            // is resent once ensure_ready() has created the streams again.
            // Any of them stored meanwhile is recognized by its message id.
            if (inflight > 0) {
                if (failures++ == 0)
                    first_failure = "publish failed: no responders: no stream takes the subject";
                fail_all_inflight();
            }
            streams_ok = false;
            continue;
        }
        if (ns != NATS_OK) break;   // NATS_TIMEOUT: none left
        uint64_t pos = 0, no = 0;
        bool mine = parse_reply_subject(natsMsg_GetSubject(m), inbox.size(), &pos, &no) && pos > acked &&
                    pos <= last_pos;
        if (!mine || entry(pos).st != InFlight || entry(pos).send_no != no) {
            free_nats_msg(m);   // for an earlier send, resolved already
            continue;
        }
        PubAnswer r;
        try {
            r = parse_answer(m);
        } catch (...) {
            free_nats_msg(m);
            throw;
        }
        free_nats_msg(m);
        Entry &e = entry(pos);
        if (r.ok) {
            // The messages sent without a reply before this one are stored
            // when the stream's sequence moved by exactly their number since
            // the acknowledgement of the message sent with a reply before them.
            LastAck &last = last_ack[e.stream];
            bool counted = e.covers == 0 ||
                           (e.prev_reply_no != 0 && e.prev_reply_no == last.no && !r.duplicate &&
                            r.seq == last.seq + e.covers + 1);
            // (after a restart the messages stored before are duplicates: not
            // counted, sent again, and nothing to report)
            if (!counted && !r.duplicate && last.no != 0 && failures++ == 0)
                first_failure = "could not confirm the " + std::to_string(e.covers) +
                                " messages sent before message " + e.id + " to " + *e.subject +
                                " without an acknowledgement (the stream's sequence moved by another "
                                "number); resending them";
            resolve_covered(pos, e.send_no, e.covers, counted);
            mark_acked(e, pos);
            last.no = r.duplicate ? 0 : e.send_no;
            last.seq = r.seq;
            any_success = true;
            continue;
        }
        resolve_covered(pos, e.send_no, e.covers, false);
        last_ack[e.stream].no = 0;
        if (failures++ == 0) {
            char buf[96];
            const int status = int(r.failure == PubAnswer::NoResponders ? NATS_NO_RESPONDERS : NATS_ERR);
            std::snprintf(buf, sizeof buf, " (status %d, JetStream error code %d)", status, r.err_code);
            first_failure = "publish of message " + e.id + " to " + *e.subject + " failed: " + r.text + buf;
        }
        mark_failed(e);
        if (r.err_code == kJSMessageTooLargeErr) too_large = true;
        if (r.failure == PubAnswer::NoResponders || r.err_code == 10059 /* stream not found */)
            streams_ok = false;   // let ensure_ready() (re)create the streams
    }
    if (any_success) backoff_ms = std::max<int64_t>(cfg.retry_backoff_min_ms, 0);
    if (failures > 0) {
        if (failures > 1) {
            char buf[64];
            std::snprintf(buf, sizeof buf, " (and %zu more failures)", failures - 1);
            first_failure += buf;
        }
        set_error(first_failure);
    }
}

// A message JetStream has not acknowledged within ack_timeout_ms fails (and
// is resent, see Recovery): its answer was lost, or the server is stuck.
void Publisher::Impl::check_local_deadlines(int64_t now) {
    int64_t limit = std::max<int64_t>(cfg.ack_timeout_ms, 1);
    int64_t every = std::min<int64_t>(1000, std::max<int64_t>(limit / 4, 10));
    if (inflight == 0 || now - last_deadline_scan_ms < every) return;
    last_deadline_scan_ms = now;
    size_t failures = 0;
    std::string first;
    for (size_t i = 0; i < entries.size(); i++) {
        Entry &e = entries[i];
        if (e.st != InFlight || now - e.sent_ms < limit) continue;
        if (failures++ == 0) first = "no acknowledgement for message " + e.id + " to " + *e.subject;
        mark_failed(e);
    }
    if (failures > 0) {
        char buf[128];
        std::snprintf(buf, sizeof buf, " within %lld ms (%zu messages); resending", (long long) limit, failures);
        set_error(first + buf);
    }
}

void Publisher::Impl::advance() {
    while (!entries.empty() && entries.front().st == Acked) {
        entries.pop_front();
        acked++;
    }
}

// Recovery, step 2: once nothing is in flight any more, put every failed
// message back at the front of the send queue (they are all below anything
// queued: messages are sent in position order) and schedule the probe.
void Publisher::Impl::requeue_failures(int64_t now) {
    if (!recovering || inflight > 0) return;
    if (failed_waiting == 0) {
        // Nothing failed (or it was requeued already): only the probe is
        // missing. With nothing left to send there is nothing to protect.
        if (outgoing.empty()) {
            recovering = false;
            probe_pos = 0;
        }
        return;
    }
    std::vector<uint64_t> again;
    again.reserve(failed_waiting);
    for (size_t i = 0; i < entries.size(); i++) {
        if (entries[i].st == Failed) {
            entries[i].st = Queued;
            again.push_back(acked + 1 + i);
        }
    }
    std::deque<uint64_t> merged;
    std::merge(again.begin(), again.end(), outgoing.begin(), outgoing.end(),
               std::back_inserter(merged));
    outgoing.swap(merged);
    failed_waiting = 0;
    probe_pos = 0;
    int64_t lo = std::max<int64_t>(cfg.retry_backoff_min_ms, 0);
    int64_t hi = std::max<int64_t>(cfg.retry_backoff_max_ms, lo);
    if (backoff_ms < lo) backoff_ms = lo;
    resend_after_ms = now + backoff_ms;
    backoff_ms = std::min<int64_t>(std::max<int64_t>(backoff_ms * 2, 1), hi);
}

void Publisher::Impl::send(int64_t now) {
    if (now < resend_after_ms || ack_sub == nullptr || !streams_ok || conn == nullptr || !connected() ||
        conn_status != NATS_CONN_STATUS_CONNECTED)
        return;
    // Recovery, step 1: drain. Nothing goes out while an earlier message may
    // still fail (a probe in flight counts too).
    if (recovering && inflight > 0) return;
    uint64_t epoch = conn_epoch();
    if (inflight > 0 && epoch != send_epoch) return;   // watch_connection() reclaims them
    if (inflight == 0) {
        if (epoch != send_epoch) chain_reply_no = 0;
        send_epoch = epoch;
    }
    // Recovery, step 3: the probe goes out alone.
    const size_t window = recovering ? 1 : size_t(std::max(cfg.max_in_flight, 1));
    while (inflight < window && !outgoing.empty()) {
        uint64_t pos = outgoing.front();
        Entry &e = entry(pos);
        uint64_t no = sends + 1;
        const bool first_send = e.send_no == 0;
        // Without a reply subject (see PublisherConfig::ack_every): a first
        // send, in a run of messages to one stream that a message with a
        // reply, sent right after it in this loop, closes.
        bool quiet = false;
        if (cfg.ack_every > 1 && !recovering && first_send && chain_reply_no != 0 &&
            chain_covers + 1 < uint32_t(cfg.ack_every) && inflight + 1 < window && outgoing.size() > 1 &&
            outgoing[1] == pos + 1)
            quiet = e.stream != nullptr && e.stream == chain_stream && entry(pos + 1).stream == e.stream;
        // cfg.ordered_stream: name the message before this one while it may
        // still fail (never on a probe: everything before it is stored)
        const char *expect_last = nullptr;
        const bool ordered = ordered_filter != nullptr && e.stream == ordered_filter;
        if (ordered && !recovering && ordered_last_pos > acked && ordered_last_pos < pos &&
            entry(ordered_last_pos).st == InFlight)
            expect_last = entry(ordered_last_pos).id.c_str();
        char reply[160] = "";
        if (!quiet)
            std::snprintf(reply, sizeof reply, "%s%llu.%llu", inbox.c_str(), (unsigned long long) pos,
                          (unsigned long long) no);
        natsMsg *m = nullptr;
        natsStatus s = make_nats_msg(&m, e.subject->c_str(), quiet ? nullptr : reply, e.id, e.chunk,
                                     e.data.data(), e.data.size(), scratch, expect_last);
        if (s == NATS_OK) s = natsConnection_PublishMsg(conn, m);
        free_nats_msg(m);
        if (s == NATS_OK) {
            sends = no;
            e.send_no = no;
            e.st = InFlight;
            e.sent_ms = now;
            if (quiet) {
                chain_covers++;
            } else {
                e.covers = chain_covers;
                e.prev_reply_no = chain_reply_no;
                // a resend may be a duplicate: its answer cannot anchor a count
                chain_reply_no = first_send ? no : 0;
                chain_stream = e.stream;
                chain_covers = 0;
            }
            inflight++;
            outgoing.pop_front();
            if (ordered) ordered_last_pos = pos;
            if (recovering) probe_pos = pos;
            // The reconnect counter moves before anything can be written
            // to a new connection: unchanged now means this message went
            // to the same connection as everything still in flight.
            // Otherwise (a whole disconnect/reconnect between two
            // iterations of this loop, which takes at least the reconnect
            // handshake) it may have reached the new server ahead of
            // earlier messages lost with the old connection: nothing can
            // undo that, but stop at once and resend from the oldest.
            if (conn_epoch() != send_epoch) {
                set_error("the NATS connection was replaced while publishing message " + e.id +
                          (inflight > 1 ? "; it may be stored ahead of earlier unacknowledged messages"
                                        : ""));
                recovering = true;
                chain_covers = 0;
                chain_reply_no = 0;
                return;   // watch_connection() takes the in-flight messages back
            }
            continue;
        }
        std::string why = last_nats_error(s);
        if (s == NATS_MAX_PAYLOAD) {
            too_large = true;
            char buf[160];
            std::snprintf(buf, sizeof buf, " (message of %zu bytes plus headers, server max_payload %llu bytes)",
                          e.data.size(), (unsigned long long) max_payload);
            why = std::string(natsStatus_GetText(s)) + buf;
        }
        set_error("could not publish message " + e.id + " to " + *e.subject + ": " + why);
        outgoing.pop_front();
        e.st = InFlight;   // mark_failed expects an in-flight entry
        inflight++;
        mark_failed(e);
        // (the messages sent without a reply just before it: nothing closes them)
        resolve_covered(pos, no, chain_covers, false);
        chain_covers = 0;
        chain_reply_no = 0;
        return;
    }
}


bool Publisher::ready() const {
    return impl_->js != nullptr && impl_->ack_sub != nullptr && impl_->streams_ok && impl_->connected();
}

// The largest message sent whole; larger ones are split (0: no limit known).
size_t Publisher::part_limit() const {
    uint64_t mp = max_payload();
    if (impl_->stream_max_msg > 0 && (mp == 0 || uint64_t(impl_->stream_max_msg) < mp))
        mp = uint64_t(impl_->stream_max_msg);
    if (mp == 0) return 0;
    // Headers count against max_payload: keep room for them.
    return size_t(mp > kPartHeadroom + 1024 ? mp - kPartHeadroom : 1024);
}

uint64_t Publisher::enqueue(const std::string &subject, std::string msg_id,
                            const void *data, size_t len) {
    Impl *im = impl_.get();
    const char *bytes = static_cast<const char *>(data);
    size_t limit = part_limit();
    size_t parts = (limit == 0 || len <= limit) ? 1 : (len + limit - 1) / limit;
    size_t added = 0;
    try {
        auto it = im->subjects.find(subject);
        if (it == im->subjects.end()) it = im->subjects.emplace(subject, im->stream_filter_of(subject)).first;
        for (size_t k = 1; k <= parts; k++) {
            Impl::Entry e;
            e.subject = &it->first;
            e.stream = it->second;
            if (parts == 1) {
                e.id = std::move(msg_id);
                e.data.assign(bytes, len);
            } else {
                std::string kn = std::to_string(k) + "/" + std::to_string(parts);
                e.id = msg_id + ":" + kn;
                e.chunk = kn;
                size_t off = (k - 1) * limit;
                e.data.assign(bytes + off, std::min(limit, len - off));
            }
            im->entries.push_back(std::move(e));
            added++;
            im->outgoing.push_back(im->last_pos + added);
        }
    } catch (...) {
        while (im->outgoing.size() > 0 && im->outgoing.back() > im->last_pos) im->outgoing.pop_back();
        for (; added > 0; added--) im->entries.pop_back();
        throw;
    }
    im->last_pos += parts;
    return im->last_pos;
}

bool Publisher::too_large() const { return impl_->too_large; }

void Publisher::pump() {
    Impl *im = impl_.get();
    int64_t now = monotonic_ms();
    im->poll_io();
    im->apply_acks();
    im->check_local_deadlines(now);
    im->watch_connection();
    im->advance();
    im->requeue_failures(now);
    im->send(now);
    im->poll_io();   // write what send() queued
}

uint64_t Publisher::last_position() const { return impl_->last_pos; }
uint64_t Publisher::acked_through() const { return impl_->acked; }
size_t Publisher::in_flight() const { return impl_->inflight; }
size_t Publisher::queued() const { return impl_->outgoing.size() + impl_->failed_waiting; }

bool Publisher::has_room() const {
    return queued() + in_flight() < 2 * size_t(std::max(impl_->cfg.max_in_flight, 1));
}

// The epoll instance: readable when the eventfd is (an event for the owner)
// or the connection's socket is ready (pump() services it).
int Publisher::wakeup_fd() const {
    return impl_->cb->epfd;
}

void Publisher::clear_wakeup() {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    if (impl_->cb->efd < 0) return;
    impl_->cb->wake_pending = false;
    uint64_t v;
    ssize_t r = ::read(impl_->cb->efd, &v, sizeof v);
    (void) r;  // EAGAIN: nothing to clear
}


NatsState Publisher::state() const { return NatsState(impl_->cb->state.load()); }
uint64_t Publisher::messages_published() const { return impl_->msgs_published; }
uint64_t Publisher::bytes_published() const { return impl_->bytes_published; }

// Cached (part_limit() runs for every message, and nats.c takes the
// connection's lock to answer): read at connect and after each reconnect.
uint64_t Publisher::max_payload() const { return impl_->max_payload; }

std::string Publisher::last_error() const {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    return impl_->cb->last_error;
}

int64_t Publisher::last_error_time_us() const {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    return impl_->cb->last_error_time_us;
}

uint64_t Publisher::error_generation() const {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    return impl_->cb->error_generation;
}

}  // namespace creek
