// publisher.cpp: asynchronous, ordered, at-least-once JetStream publishing
// on top of nats.c (see publisher.hpp for the contract).
//
// Threads: every public method runs on the owner thread. nats.c invokes the
// callbacks below on its own threads; they only touch CbState (a mutex, a few
// atomics, a vector of acknowledgements) and write to the eventfd. They never
// throw and never call anything outside this file except the nats.c functions
// they must call (natsMsgHeader_Get, natsMsg_Destroy, natsStatus_GetText).
//
// nats.c facts relied upon (nats.c 3.4.1, see js.c/conn.c):
//  * the ack handler receives the original message and must destroy it;
//  * with jsPubOptions.MaxWait every asynchronous publish is resolved exactly
//    once by the ack handler (ack, error, or NATS_TIMEOUT from the js timer);
//  * js_PublishMsgAsync keeps ownership of the message on failure (the pointer
//    is only cleared on success) and returns NATS_TIMEOUT when it stalled on
//    a full MaxPending window;
//  * the reply subscription (and its delivery thread) is created by the first
//    asynchronous publish of a jsCtx;
//  * natsConnection_Request (used by js_AddStream) creates the response
//    multiplexer subscription, also with a thread;
//  * a connection's closed callback is the last callback it posts; pending
//    callbacks keep the connection object alive, so a stale callback never sees
//    the address of a newer connection.
//  * with natsOptions_SetReconnectBufSize(opts, 0) a publish made while the
//    connection is reconnecting fails at once with NATS_INSUFFICIENT_BUFFER
//    (pub.c: "natsBuf_Len(nc->pending) >= reconnectBufSize"), and
//    js_PublishMsgAsync then leaves the message with the caller. The default
//    (8 MB) would queue it and write it to the new connection right after the
//    reconnect handshake, ahead of anything resent later. Bytes still in the
//    write buffer when the old socket dies are dropped (_processOpError), so
//    nothing published before a disconnect reaches the new connection;
//  * the connection's reconnect counter (natsStatistics "reconnects") is
//    incremented under the connection lock as soon as the new socket exists,
//    before any publish can be written to it: reading it after a publish
//    tells whether that publish could have gone to a newer connection;
//  * the disconnected/reconnected callbacks run later on the async-callback
//    thread: they only wake the owner, they do not decide anything;
//  * js_PublishAsyncGetPendingList takes every unresolved message back from
//    the context; acks or timeouts that arrive for them afterwards are dropped;
//  * a server processes one connection's messages in order (nats-server 2.9
//    stores a client's JetStream message inline in the client's read loop).
//
// Ordering (see "Recovery" below): a failure of any kind (negative ack,
// timeout, local publish error, connection replaced) stops all sending until
// every in-flight message is resolved; then the unacknowledged messages are
// resent in position order, the first one alone (a probe), and pipelining
// resumes only once the probe is acknowledged.
#include "publisher.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

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

constexpr const char *kMsgIdHeader = "Nats-Msg-Id";
constexpr const char *kChunkHeader = "Creek-Chunk";
constexpr int kJSMessageTooLargeErr = 10054;  // JSStreamMessageExceedsMaximumErr
constexpr int kJSStreamNameExistErr = 10058;  // JSStreamNameExistErr

int64_t realtime_us() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

int64_t monotonic_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Blocks every signal for the lifetime of the object, so threads nats.c
// creates meanwhile inherit a fully blocked mask (Postgres handlers must
// only ever run on the worker's own thread).
class SignalBlock {
public:
    explicit SignalBlock(bool active = true) : active_(active) {
        if (!active_) return;
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old_);
    }
    ~SignalBlock() {
        if (active_) pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SignalBlock(const SignalBlock &) = delete;
    SignalBlock &operator=(const SignalBlock &) = delete;

private:
    bool active_;
    sigset_t old_;
};

// Library-wide state: nats_Open is called once per process; the library is
// closed (nats_CloseAndWait) only if this file opened it, when the last
// Publisher goes away. After that nats.c cannot be reopened.
std::mutex g_lib_mu;
bool g_lib_opened_by_us = false;
bool g_lib_closed = false;
int g_live_publishers = 0;

// nats.c registers an atexit handler (natsLib_Destructor) the first time it is
// initialized; after it ran, any nats.c call may crash. Ours is registered
// right after nats_Open, so it runs before nats.c's: a Publisher destroyed
// later in exit() (static object, late exit callback) then leaves nats.c alone.
std::atomic<bool> g_process_exiting{false};

struct CbState;
// CbStates of destroyed Publishers that a nats.c thread might still touch
// (guarded by g_lib_mu). Freed once nats_CloseAndWait has stopped the threads.
std::vector<CbState *> *g_retired = new std::vector<CbState *>;
void on_process_exit() { g_process_exiting.store(true); }

// An acknowledgement (or failure) of one message, identified by the message
// itself: on_ack hands it over instead of destroying it, so its address
// cannot be reused before the owner has looked it up (the owner destroys it).
struct AckRecord {
    natsMsg *msg = nullptr;
    bool ok = false;
    bool duplicate = false;
    int status = 0;      // natsStatus on failure
    int err_code = 0;    // jsErrCode on failure
    std::string text;    // error text on failure
};

// State shared with nats.c threads. Allocated separately from Impl so that it
// can outlive the Publisher when nats.c threads might still be running (it is
// then leaked on purpose: a few hundred bytes, once per Publisher).
struct CbState {
    std::mutex mu;
    bool dead = false;               // guarded by mu: the Publisher is gone
    int efd = -1;                    // guarded by mu once threads exist
    bool wake_pending = false;       // guarded by mu: efd written, not yet cleared
    std::vector<AckRecord> acks;     // guarded by mu
    uint64_t lost_acks = 0;          // guarded by mu (allocation failures)
    std::string last_error;          // guarded by mu
    int64_t last_error_time_us = 0;  // guarded by mu
    uint64_t error_generation = 0;   // guarded by mu

    std::atomic<int> state{int(NatsState::Disconnected)};
    std::atomic<natsConnection *> current{nullptr};
    std::atomic<bool> closed_seen{false};

    // Caller holds mu.
    // One write per wake-up, however many acknowledgements arrive before the
    // owner clears it (a write is a system call, and may switch threads).
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

// ---- nats.c callbacks (run on nats.c threads; must never throw) ----------

void on_ack(jsCtx *, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    CbState *st = static_cast<CbState *>(closure);
    {
        std::lock_guard<std::mutex> g(st->mu);
        if (!st->dead) {
            try {
                AckRecord r;
                r.msg = msg;
                if (pa != nullptr) {
                    r.ok = true;
                    r.duplicate = pa->Duplicate;
                } else {
                    r.ok = false;
                    if (pae != nullptr) {
                        r.status = int(pae->Err);
                        r.err_code = int(pae->ErrCode);
                        if (pae->ErrText) r.text = pae->ErrText;
                    }
                }
                st->acks.push_back(std::move(r));
                msg = nullptr;   // the owner destroys it
            } catch (...) {
                st->lost_acks++;  // the owner's local deadline resends it
            }
            st->wake_locked();
        }
    }
    if (msg != nullptr) natsMsg_Destroy(msg);
}

void on_disconnected(natsConnection *nc, void *closure) {
    CbState *st = static_cast<CbState *>(closure);
    if (nc != st->current.load()) return;
    st->state.store(int(NatsState::Reconnecting));
    st->set_error("NATS connection lost, reconnecting");
    st->wake();
}

void on_reconnected(natsConnection *nc, void *closure) {
    CbState *st = static_cast<CbState *>(closure);
    if (nc != st->current.load()) return;
    st->state.store(int(NatsState::Connected));
    st->wake();
}

void on_closed(natsConnection *nc, void *closure) {
    CbState *st = static_cast<CbState *>(closure);
    if (nc != st->current.load()) return;
    st->state.store(int(NatsState::Closed));
    st->wake();
    st->closed_seen.store(true);  // last access to st (the destructor waits for it)
}

void on_async_error(natsConnection *nc, natsSubscription *, natsStatus err, void *closure) {
    CbState *st = static_cast<CbState *>(closure);
    if (nc != st->current.load()) return;
    // The server's own text (e.g. "Permissions Violation for Publish to ...")
    // says more than the status.
    const char *text = nullptr;
    natsConnection_GetLastError(nc, &text);
    if (text != nullptr && *text != '\0')
        st->set_error("NATS error: ", text);
    else
        st->set_error("NATS asynchronous error: ", natsStatus_GetText(err));
    st->wake();
}

// Reconnect delay: 250 ms after the first failed pass over the server list,
// doubling up to the configured maximum (the closure holds it, in ms). Pure
// function (runs on the reconnect thread).
int64_t reconnect_delay(natsConnection *, int attempts, void *closure) {
    int64_t max = std::max<int64_t>(int64_t(reinterpret_cast<intptr_t>(closure)), 10);
    int64_t d = std::min<int64_t>(250, max);
    for (int i = 1; i < attempts && d < max; i++) d *= 2;
    return std::min<int64_t>(d, max);
}

std::string trim(const std::string &s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return std::string();
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

std::string last_nats_error(natsStatus s) {
    natsStatus ls = NATS_OK;
    const char *t = nats_GetLastError(&ls);
    if (t == nullptr || *t == '\0') return natsStatus_GetText(s);
    // drop nats.c's "(file.c:123): " location prefix
    std::string e(t);
    if (e[0] == '(') {
        size_t end = e.find("): ");
        if (end != std::string::npos) e.erase(0, end + 3);
    }
    return e.empty() ? std::string(natsStatus_GetText(s)) : e;
}

}  // namespace

// ---------------------------------------------------------------------------

struct Publisher::Impl {
    enum EntryState : uint8_t { Queued, InFlight, Acked, Failed };
    struct Entry {
        std::string subject, id, data;
        std::string chunk;     // "k/n" for a part of a split message, else empty
        natsMsg *sent = nullptr;   // while in flight: the message nats.c holds
        EntryState st = Queued;
        int64_t sent_ms = 0;
    };

    PublisherConfig cfg;
    CbState *cb = nullptr;

    natsConnection *conn = nullptr;
    jsCtx *js = nullptr;
    bool async_started = false;   // the first js_PublishMsgAsync on js done
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
    std::deque<uint64_t> outgoing;          // positions to send, ascending
    // the message handed to nats.c -> its position, while in flight
    std::unordered_map<natsMsg *, uint64_t> inflight_ids;
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

    uint64_t last_pos = 0;
    uint64_t acked = 0;
    uint64_t msgs_published = 0;
    uint64_t bytes_published = 0;

    std::vector<AckRecord> ack_batch;

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

bool Publisher::Impl::open_library() {
    std::lock_guard<std::mutex> g(g_lib_mu);
    if (g_lib_closed) {
        set_error("the NATS library was already shut down in this process");
        return false;
    }
    if (g_lib_opened_by_us) return true;
    natsStatus s;
    {
        SignalBlock sb;
        s = nats_Open(-1);
    }
    if (s != NATS_OK) {
        set_error(std::string("could not initialize the NATS library: ") + natsStatus_GetText(s));
        return false;
    }
    g_lib_opened_by_us = true;
    atexit(on_process_exit);
    return true;
}

bool Publisher::Impl::connect() {
    std::vector<std::string> urls;
    {
        size_t start = 0;
        const std::string &u = cfg.urls;
        while (start <= u.size()) {
            size_t comma = u.find(',', start);
            if (comma == std::string::npos) comma = u.size();
            std::string one = trim(u.substr(start, comma - start));
            if (!one.empty()) urls.push_back(one);
            start = comma + 1;
        }
    }
    // URLs as errors show them: without user:password@
    auto redact = [](const std::string &u) {
        size_t scheme = u.find("://");
        size_t at = u.find('@');
        if (scheme == std::string::npos || at == std::string::npos || at < scheme) return u;
        return u.substr(0, scheme + 3) + "***@" + u.substr(at + 1);
    };
    std::string shown = urls.empty() ? std::string("(no URL)") : redact(urls[0]);
    for (size_t i = 1; i < urls.size(); i++) shown += "," + redact(urls[i]);
    if (urls.empty()) {
        set_error("could not connect to NATS: no server URL configured");
        return false;
    }
    std::vector<const char *> url_ptrs;
    for (auto &s : urls) url_ptrs.push_back(s.c_str());

    natsOptions *opts = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetServers(opts, url_ptrs.data(), int(url_ptrs.size()));
    if (s == NATS_OK && !cfg.connection_name.empty())
        s = natsOptions_SetName(opts, cfg.connection_name.c_str());
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(
            opts, reconnect_delay, reinterpret_cast<void *>(intptr_t(cfg.reconnect_wait_max_ms)));
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, cfg.connect_timeout_ms > 0 ? cfg.connect_timeout_ms : 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, 5000);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, 2);
    // No reconnect buffer: while reconnecting a publish fails at once instead
    // of being queued and sent ahead of the resends (see the top of this file).
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 0);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, on_async_error, cb);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, on_disconnected, cb);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, on_reconnected, cb);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, on_closed, cb);
    const NatsSecurity &sec = cfg.security;
    if (s == NATS_OK && !sec.user.empty())
        s = natsOptions_SetUserInfo(opts, sec.user.c_str(), sec.password.c_str());
    if (s == NATS_OK && !sec.token.empty()) s = natsOptions_SetToken(opts, sec.token.c_str());
    if (s == NATS_OK && !sec.creds_file.empty())
        s = natsOptions_SetUserCredentialsFromFiles(opts, sec.creds_file.c_str(), nullptr);
    if (s == NATS_OK && !sec.nkey.empty())
        s = natsOptions_SetNKeyFromSeed(opts, sec.nkey.c_str(), sec.nkey_seed_file.c_str());
    bool want_tls = sec.tls || !sec.tls_ca_file.empty() || !sec.tls_cert_file.empty();
    if (s == NATS_OK && want_tls) s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && !sec.tls_ca_file.empty())
        s = natsOptions_LoadCATrustedCertificates(opts, sec.tls_ca_file.c_str());
    if (s == NATS_OK && !sec.tls_cert_file.empty())
        s = natsOptions_LoadCertificatesChain(opts, sec.tls_cert_file.c_str(), sec.tls_key_file.c_str());
    if (s == NATS_OK && want_tls && !sec.tls_verify) s = natsOptions_SkipServerVerification(opts, true);
    if (s != NATS_OK) {
        std::string e = last_nats_error(s);
        natsOptions_Destroy(opts);
        set_error("could not set up the NATS connection options: " + e);
        return false;
    }

    if (stats == nullptr) {
        natsStatus ss = natsStatistics_Create(&stats);
        if (ss != NATS_OK) {
            stats = nullptr;
            natsOptions_Destroy(opts);
            set_error("could not set up the NATS connection: " + last_nats_error(ss));
            return false;
        }
    }
    cb->state.store(int(NatsState::Disconnected));
    cb->closed_seen.store(false);
    ever_connected = true;  // even a failed attempt hands cb to nats.c
    natsConnection *nc = nullptr;
    {
        SignalBlock sb;
        s = natsConnection_Connect(&nc, opts);
    }
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        if (nc != nullptr) natsConnection_Destroy(nc);
        set_error("could not connect to NATS at " + shown + ": " + natsStatus_GetText(s));
        return false;
    }
    conn = nc;
    send_epoch = 0;                 // a new connection counts reconnects from 0
    conn_status = natsConnection_Status(nc);
    cb->current.store(nc);
    int expected = int(NatsState::Disconnected);
    int now_state = natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED
                        ? int(NatsState::Connected) : int(NatsState::Reconnecting);
    cb->state.compare_exchange_strong(expected, now_state);
    int64_t mp = natsConnection_GetMaxPayload(nc);
    max_payload = mp > 0 ? uint64_t(mp) : 0;
    return true;
}

bool Publisher::Impl::create_js() {
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = std::max<int64_t>(cfg.connect_timeout_ms, 500);
    o.PublishAsync.MaxPending = std::max(cfg.max_in_flight, 1);
    o.PublishAsync.AckHandler = on_ack;
    o.PublishAsync.AckHandlerClosure = cb;
    o.PublishAsync.StallWait = 50;
    natsStatus s = natsConnection_JetStream(&js, conn, &o);
    if (s != NATS_OK) {
        js = nullptr;
        set_error("could not create the JetStream context: " + last_nats_error(s));
        return false;
    }
    async_started = false;
    return true;
}

bool Publisher::Impl::ensure_streams() {
    const StreamSettings &ss = cfg.stream_settings;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = std::max<int64_t>(cfg.connect_timeout_ms, 500);
    stream_max_msg = 0;
    for (auto &st : cfg.streams) {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        const char *subj = st.second.c_str();
        sc.Name = st.first.c_str();
        sc.Subjects = &subj;
        sc.SubjectsLen = 1;
        sc.Storage = ss.file_storage ? js_FileStorage : js_MemoryStorage;
        sc.Replicas = ss.replicas > 0 ? ss.replicas : 1;
        sc.MaxAge = ss.max_age_ms > 0 ? ss.max_age_ms * 1000000 : 0;          // ns
        sc.MaxBytes = ss.max_bytes > 0 ? ss.max_bytes : -1;
        if (ss.duplicate_window_ms > 0) sc.Duplicates = ss.duplicate_window_ms * 1000000;  // ns

        jsStreamInfo *si = nullptr;
        jsErrCode jerr = jsErrCode(0);
        natsStatus s;
        {
            SignalBlock sb;  // the first request creates the resp-mux thread
            s = js_AddStream(&si, js, &sc, &o, &jerr);
        }
        if (s != NATS_OK && int(jerr) == kJSStreamNameExistErr) {
            // It exists with other settings: use it as it is, but learn its
            // message size limit (messages are split below it).
            if (si != nullptr) jsStreamInfo_Destroy(si);
            si = nullptr;
            jsErrCode e2 = jsErrCode(0);
            if (js_GetStreamInfo(&si, js, sc.Name, &o, &e2) != NATS_OK) si = nullptr;
            s = NATS_OK;
        }
        if (s == NATS_OK) {
            if (si != nullptr && si->Config != nullptr && si->Config->MaxMsgSize > 0 &&
                (stream_max_msg == 0 || si->Config->MaxMsgSize < stream_max_msg))
                stream_max_msg = si->Config->MaxMsgSize;
            if (si != nullptr) jsStreamInfo_Destroy(si);
            continue;
        }
        if (si != nullptr) jsStreamInfo_Destroy(si);
        std::string e = last_nats_error(s);
        char code[64];
        std::snprintf(code, sizeof code, " (JetStream error code %d)", int(jerr));
        set_error("could not create stream " + st.first + " for subject " + st.second + ": " + e +
                  (jerr != 0 ? std::string(code) : std::string()));
        return false;
    }
    return true;
}

bool Publisher::Impl::subscribe_one(size_t i) {
    if (subs[i] != nullptr) return true;
    natsSubscription *sub = nullptr;
    natsStatus s;
    {
        SignalBlock sb;
        s = natsConnection_SubscribeSync(&sub, conn, sub_subjects[i].c_str());
    }
    if (s != NATS_OK) {
        set_error("could not subscribe to " + sub_subjects[i] + ": " + last_nats_error(s));
        return false;
    }
    subs[i] = sub;
    // Make sure the server registered the interest before anyone relies on it.
    natsConnection_FlushTimeout(conn, std::min<int64_t>(std::max<int64_t>(cfg.connect_timeout_ms, 100), 1000));
    return true;
}

void Publisher::Impl::fail_all_inflight() {
    for (auto &e : entries) {
        if (e.st == InFlight) mark_failed(e);
    }
    inflight_ids.clear();
    probe_pos = 0;
}

// The connection's reconnect counter (0 without a connection).
uint64_t Publisher::Impl::conn_epoch() {
    if (conn == nullptr || stats == nullptr) return 0;
    uint64_t reconnects = 0;
    if (natsConnection_GetStats(conn, stats) != NATS_OK) return 0;
    natsStatistics_GetCounts(stats, nullptr, nullptr, nullptr, nullptr, &reconnects);
    return reconnects;
}

// Takes every unresolved message back from nats.c and marks it failed: the
// connection it was written to is gone, so its ack (if any) will not come on
// this one. A late ack for one of them is dropped by nats.c; one that was
// already on its way to on_ack either matches nothing or the resent copy
// (same message id, so the same stored message).
void Publisher::Impl::reclaim_inflight(const char *why) {
    if (js != nullptr) {
        natsMsgList pending;
        std::memset(&pending, 0, sizeof pending);
        if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK) natsMsgList_Destroy(&pending);
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, "; resending %zu unacknowledged messages in position order", inflight);
    set_error(std::string(why) + buf);
    fail_all_inflight();
}

// Looks at the connection itself (the callbacks come later, on another
// thread). In-flight messages written to a connection that is closed or was
// replaced by a reconnect are taken back and will be resent.
void Publisher::Impl::watch_connection() {
    if (conn == nullptr) {
        conn_status = NATS_CONN_STATUS_DISCONNECTED;
        return;
    }
    natsConnStatus prev = conn_status;
    conn_status = natsConnection_Status(conn);
    if (conn_status == NATS_CONN_STATUS_CONNECTED && prev != NATS_CONN_STATUS_CONNECTED) {
        // the server may be another one, with another max_payload
        int64_t mp = natsConnection_GetMaxPayload(conn);
        if (mp > 0) max_payload = uint64_t(mp);
        // A fresh connection: resend at once, whatever the back-off reached
        // while the server was away.
        backoff_ms = std::max<int64_t>(cfg.retry_backoff_min_ms, 0);
        resend_after_ms = 0;
    }
    if (inflight == 0) return;
    if (conn_status == NATS_CONN_STATUS_CLOSED) {
        reclaim_inflight("the NATS connection was closed");
        return;
    }
    if (conn_status != NATS_CONN_STATUS_CONNECTED) {
        recovering = true;   // nothing new before the in-flight ones are resolved
        return;
    }
    if (conn_epoch() != send_epoch) reclaim_inflight("the NATS connection was re-established");
}

// Destroys subscriptions, the js context and the connection. wait_closed:
// the connection may not be closed yet, wait (bounded) for its closed callback.
void Publisher::Impl::teardown(bool wait_closed) {
    for (auto &s : subs) {
        if (s != nullptr) natsSubscription_Destroy(s);
        s = nullptr;
    }
    if (js != nullptr) {
        jsCtx_Destroy(js);
        js = nullptr;
    }
    if (conn != nullptr) {
        natsConnection_Close(conn);
        if (wait_closed) {
            int64_t until = monotonic_ms() + 2000;
            while (!cb->closed_seen.load() && monotonic_ms() < until) usleep(2000);
        }
        natsConnection_Destroy(conn);
        conn = nullptr;
    }
    cb->current.store(nullptr);
    cb->state.store(int(NatsState::Disconnected));
    conn_status = NATS_CONN_STATUS_DISCONNECTED;
    async_started = false;
    streams_ok = false;
    fail_all_inflight();
}

void Publisher::Impl::mark_acked(Entry &e, uint64_t pos) {
    e.st = Acked;
    inflight--;
    msgs_published++;
    bytes_published += e.data.size();
    // never resent: release the memory now
    std::string().swap(e.data);
    std::string().swap(e.subject);
    std::string().swap(e.id);
    if (recovering && probe_pos != 0 && pos == probe_pos) {
        // The first unacknowledged message is stored: everything before it is
        // too, and nothing after it was sent. Pipelining may resume.
        recovering = false;
        probe_pos = 0;
    }
}

void Publisher::Impl::mark_failed(Entry &e) {
    e.st = Failed;
    inflight--;
    failed_waiting++;
    recovering = true;   // nothing new goes out before this one is resent
}

void Publisher::Impl::apply_acks() {
    ack_batch.clear();
    uint64_t lost = 0;
    {
        std::lock_guard<std::mutex> g(cb->mu);
        ack_batch.swap(cb->acks);
        lost = cb->lost_acks;
        cb->lost_acks = 0;
    }
    if (lost > 0) {
        char buf[128];
        std::snprintf(buf, sizeof buf,
                      "%llu JetStream acknowledgements were lost (out of memory); "
                      "the messages will be resent", (unsigned long long) lost);
        set_error(buf);
    }
    size_t failures = 0;
    std::string first_failure;
    bool any_success = false;
    for (auto &r : ack_batch) {
        auto it = inflight_ids.find(r.msg);
        if (it == inflight_ids.end()) continue;  // resolved already (local deadline, reclaimed)
        uint64_t pos = it->second;
        inflight_ids.erase(it);
        if (pos <= acked || pos > last_pos) continue;
        Entry &e = entry(pos);
        if (e.st != InFlight) continue;
        if (r.ok) {
            mark_acked(e, pos);
            any_success = true;
        } else {
            if (failures++ == 0) {
                char buf[96];
                std::snprintf(buf, sizeof buf, " (status %d, JetStream error code %d)", r.status,
                              r.err_code);
                first_failure = "publish of message " + e.id + " to " + e.subject +
                                " failed: " + (r.text.empty() ? std::string("unknown error") : r.text) +
                                buf;
            }
            mark_failed(e);
            if (r.err_code == kJSMessageTooLargeErr) too_large = true;
            if (r.status == int(NATS_NO_RESPONDERS) || r.err_code == 10059 /* stream not found */)
                streams_ok = false;   // let ensure_ready() (re)create the streams
        }
    }
    for (auto &r : ack_batch) natsMsg_Destroy(r.msg);   // handed over by on_ack
    ack_batch.clear();
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

// Safety net: every publish carries MaxWait, so nats.c resolves it; if an
// acknowledgement got lost anyway (e.g. memory shortage in the callback),
// give up on it well after the nats.c deadline and resend.
void Publisher::Impl::check_local_deadlines(int64_t now) {
    if (inflight == 0 || now - last_deadline_scan_ms < 1000) return;
    last_deadline_scan_ms = now;
    int64_t limit = 2 * std::max<int64_t>(cfg.ack_timeout_ms, 1) + 5000;
    for (size_t i = 0; i < entries.size(); i++) {
        Entry &e = entries[i];
        if (e.st != InFlight || now - e.sent_ms < limit) continue;
        uint64_t pos = acked + 1 + i;
        auto it = inflight_ids.find(e.sent);
        if (it != inflight_ids.end() && it->second == pos) inflight_ids.erase(it);
        set_error("no acknowledgement for message " + e.id + " to " + e.subject +
                  " within the publish deadline; resending");
        mark_failed(e);
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
    if (now < resend_after_ms || js == nullptr || !streams_ok || conn == nullptr || !connected() ||
        conn_status != NATS_CONN_STATUS_CONNECTED)
        return;
    // Recovery, step 1: drain. Nothing goes out while an earlier message may
    // still fail (a probe in flight counts too).
    if (recovering && inflight > 0) return;
    uint64_t epoch = conn_epoch();
    if (inflight > 0 && epoch != send_epoch) return;   // watch_connection() reclaims them
    if (inflight == 0) send_epoch = epoch;
    // Recovery, step 3: the probe goes out alone.
    const size_t window = recovering ? 1 : size_t(std::max(cfg.max_in_flight, 1));
    while (inflight < window && !outgoing.empty()) {
        uint64_t pos = outgoing.front();
        Entry &e = entry(pos);
        natsMsg *m = nullptr;
        natsStatus s = natsMsg_Create(&m, e.subject.c_str(), nullptr, e.data.data(), int(e.data.size()));
        if (s == NATS_OK && !e.chunk.empty()) s = natsMsgHeader_Set(m, kChunkHeader, e.chunk.c_str());
        if (s != NATS_OK && m != nullptr) {
            natsMsg_Destroy(m);
            m = nullptr;
        }
        if (s == NATS_OK) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MaxWait = std::max<int64_t>(cfg.ack_timeout_ms, 1);
            if (!e.id.empty()) po.MsgId = e.id.c_str();
            natsMsg *sent = m;   // js_PublishMsgAsync clears m once it owns it
            {
                SignalBlock sb(!async_started);  // first one creates the ack thread
                s = js_PublishMsgAsync(js, &m, &po);
            }
            if (s == NATS_OK) {
                async_started = true;
                inflight_ids[sent] = pos;
                e.sent = sent;
                e.st = InFlight;
                e.sent_ms = now;
                inflight++;
                outgoing.pop_front();
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
                    return;   // watch_connection() takes the in-flight messages back
                }
                continue;
            }
            natsMsg_Destroy(m);  // still ours on failure
            if (s == NATS_TIMEOUT) return;  // stalled on a full window: not a failure
        }
        std::string why = last_nats_error(s);
        if (s == NATS_MAX_PAYLOAD) {
            too_large = true;
            char buf[160];
            std::snprintf(buf, sizeof buf, " (message of %zu bytes plus headers, server max_payload %llu bytes)",
                          e.data.size(), (unsigned long long) max_payload);
            why = std::string(natsStatus_GetText(s)) + buf;
        }
        set_error("could not publish message " + e.id + " to " + e.subject + ": " + why);
        outgoing.pop_front();
        e.st = InFlight;   // mark_failed expects an in-flight entry
        inflight++;
        mark_failed(e);
        return;
    }
}

// ---------------------------------------------------------------------------

Publisher::Publisher(PublisherConfig cfg) : impl_(new Impl) {
    impl_->cfg = std::move(cfg);
    impl_->backoff_ms = std::max<int64_t>(impl_->cfg.retry_backoff_min_ms, 0);
    impl_->cb = new CbState;
    impl_->cb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (impl_->cb->efd < 0)
        impl_->cb->set_error("could not create the publisher's eventfd: ", std::strerror(errno));
    std::lock_guard<std::mutex> g(g_lib_mu);
    g_live_publishers++;
}

Publisher::~Publisher() {
    Impl *im = impl_.get();
    if (g_process_exiting.load()) {
        // exit() is running and nats.c tears itself down: do not touch it.
        std::lock_guard<std::mutex> g(im->cb->mu);
        im->cb->dead = true;
        if (im->cb->efd >= 0) ::close(im->cb->efd);
        im->cb->efd = -1;
        std::lock_guard<std::mutex> lg(g_lib_mu);
        try { g_retired->push_back(im->cb); } catch (...) {}
        im->cb = nullptr;  // left to the exiting process
        return;
    }
    im->teardown(true);
    if (im->stats != nullptr) natsStatistics_Destroy(im->stats);
    im->stats = nullptr;
    bool close_lib = false;
    {
        std::lock_guard<std::mutex> g(g_lib_mu);
        g_live_publishers--;
        if (g_live_publishers == 0 && g_lib_opened_by_us && !g_lib_closed) {
            g_lib_closed = true;
            close_lib = true;
        }
    }
    bool threads_gone = false;
    if (close_lib) threads_gone = (nats_CloseAndWait(5000) == NATS_OK);
    {
        std::lock_guard<std::mutex> g(im->cb->mu);
        im->cb->dead = true;
        if (im->cb->efd >= 0) ::close(im->cb->efd);
        im->cb->efd = -1;
        // (messages of unprocessed acknowledgements are left allocated: nats.c
        // may be closed already)
        std::vector<AckRecord>().swap(im->cb->acks);
    }
    // Without nats_CloseAndWait a nats.c thread (the ack subscription's
    // delivery thread, mostly) may still be about to run a callback with this
    // CbState: keep it allocated (it is small) until the library is closed.
    std::lock_guard<std::mutex> g(g_lib_mu);
    if (threads_gone) {
        for (CbState *r : *g_retired) delete r;
        g_retired->clear();
        delete im->cb;
    } else if (!im->ever_connected) {
        delete im->cb;
    } else {
        try { g_retired->push_back(im->cb); } catch (...) {}
    }
    im->cb = nullptr;
}

bool Publisher::ensure_ready() {
    Impl *im = impl_.get();
    if (!im->open_library()) return false;
    if (im->conn != nullptr && im->cb->state.load() == int(NatsState::Closed)) im->teardown(false);
    if (im->conn == nullptr && !im->connect()) return false;
    if (!im->connected()) return false;   // nats.c is reconnecting by itself
    if (im->js == nullptr && !im->create_js()) return false;
    if (!im->streams_ok) {
        if (!im->ensure_streams()) return false;
        im->streams_ok = true;
    }
    bool subs_ok = true;
    for (size_t i = 0; i < im->sub_subjects.size(); i++)
        if (!im->subscribe_one(i)) subs_ok = false;
    (void) subs_ok;  // a failed service subscription does not stop publishing
    return true;
}

bool Publisher::ready() const {
    return impl_->js != nullptr && impl_->streams_ok && impl_->connected();
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

uint64_t Publisher::enqueue(const std::string &subject, const std::string &msg_id,
                            const void *data, size_t len) {
    Impl *im = impl_.get();
    const char *bytes = static_cast<const char *>(data);
    size_t limit = part_limit();
    size_t parts = (limit == 0 || len <= limit) ? 1 : (len + limit - 1) / limit;
    size_t added = 0;
    try {
        for (size_t k = 1; k <= parts; k++) {
            Impl::Entry e;
            e.subject = subject;
            if (parts == 1) {
                e.id = msg_id;
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
    im->apply_acks();
    im->check_local_deadlines(now);
    im->watch_connection();
    im->advance();
    im->requeue_failures(now);
    im->send(now);
}

uint64_t Publisher::last_position() const { return impl_->last_pos; }
uint64_t Publisher::acked_through() const { return impl_->acked; }
size_t Publisher::in_flight() const { return impl_->inflight; }
size_t Publisher::queued() const { return impl_->outgoing.size() + impl_->failed_waiting; }

bool Publisher::has_room() const {
    return queued() + in_flight() < 2 * size_t(std::max(impl_->cfg.max_in_flight, 1));
}

int Publisher::wakeup_fd() const {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    return impl_->cb->efd;
}

void Publisher::clear_wakeup() {
    std::lock_guard<std::mutex> g(impl_->cb->mu);
    if (impl_->cb->efd < 0) return;
    impl_->cb->wake_pending = false;
    uint64_t v;
    ssize_t r = ::read(impl_->cb->efd, &v, sizeof v);
    (void) r;  // EAGAIN: nothing to clear
}

bool Publisher::subscribe(const std::string &subject) {
    Impl *im = impl_.get();
    for (size_t i = 0; i < im->sub_subjects.size(); i++) {
        if (im->sub_subjects[i] == subject)
            return im->conn == nullptr || im->subscribe_one(i);
    }
    im->sub_subjects.push_back(subject);
    try {
        im->subs.push_back(nullptr);
    } catch (...) {
        im->sub_subjects.pop_back();
        throw;
    }
    // Not connected yet: ensure_ready() subscribes once it has a connection.
    if (im->conn == nullptr) return true;
    return im->subscribe_one(im->subs.size() - 1);
}

bool Publisher::next_request(ServiceRequest &req) {
    Impl *im = impl_.get();
    size_t n = im->subs.size();
    for (size_t k = 0; k < n; k++) {
        size_t i = (im->next_sub + k) % n;
        natsSubscription *sub = im->subs[i];
        if (sub == nullptr) continue;
        natsMsg *m = nullptr;
        natsStatus s = natsSubscription_NextMsg(&m, sub, 0);
        if (s == NATS_TIMEOUT) continue;
        if (s != NATS_OK) {
            if (s == NATS_SLOW_CONSUMER)
                im->set_error("service subscription " + im->sub_subjects[i] +
                              " dropped requests (slow consumer)");
            continue;
        }
        im->next_sub = (i + 1) % n;
        try {
            const char *subj = natsMsg_GetSubject(m);
            const char *reply = natsMsg_GetReply(m);
            const char *data = natsMsg_GetData(m);
            int len = natsMsg_GetDataLength(m);
            req.subject = subj ? subj : "";
            req.reply = reply ? reply : "";
            req.data.assign(data ? data : "", data ? size_t(len) : 0);
        } catch (...) {
            natsMsg_Destroy(m);
            throw;
        }
        natsMsg_Destroy(m);
        return true;
    }
    return false;
}

bool Publisher::respond(const std::string &reply, const std::string &data) {
    Impl *im = impl_.get();
    if (reply.empty()) return false;
    if (im->conn == nullptr) {
        im->set_error("could not respond on " + reply + ": not connected to NATS");
        return false;
    }
    natsStatus s = natsConnection_Publish(im->conn, reply.c_str(), data.data(), int(data.size()));
    if (s != NATS_OK) {
        im->set_error("could not respond on " + reply + ": " + last_nats_error(s));
        return false;
    }
    return true;
}

int64_t Publisher::stream_last_seq(const std::string &stream) {
    Impl *im = impl_.get();
    if (im->js == nullptr) {
        im->set_error("could not read stream " + stream + ": not connected to NATS");
        return -1;
    }
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = std::max<int64_t>(im->cfg.connect_timeout_ms, 500);
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = jsErrCode(0);
    natsStatus s;
    {
        SignalBlock sb;
        s = js_GetStreamInfo(&si, im->js, stream.c_str(), &o, &jerr);
    }
    if (s == NATS_NOT_FOUND || int(jerr) == 10059 /* stream not found */) return 0;
    if (s != NATS_OK || si == nullptr) {
        im->set_error("could not read stream " + stream + ": " + last_nats_error(s));
        return -1;
    }
    int64_t last = int64_t(si->State.LastSeq);
    jsStreamInfo_Destroy(si);
    return last;
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
