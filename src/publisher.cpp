// publisher.cpp: asynchronous, ordered, at-least-once JetStream publishing
// on top of nats.c (see publisher.hpp for the contract).
//
// Threads: every public method runs on the owner thread. nats.c invokes the
// connection and event loop callbacks below on its own threads; they only
// touch CbState (mutexes, a few atomics, the epoll registration) and write to
// the eventfd. They never throw and never call into nats.c or Postgres.
//
// How messages travel (no nats.c thread on the path of a message):
//  * the connection runs on an external event loop (natsOptions_SetEventLoop)
//    that this file provides: an epoll instance holding the connection's
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
#include "publisher.hpp"
#include "nats_msg.hpp"
#include "js_answer.hpp"

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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

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

// ---- nats.c callbacks (run on nats.c threads; must never throw) ----------

// ---- the event loop callbacks (from whichever thread connects, publishes,
// or breaks the connection; they never call nats.c) ----

constexpr uint32_t kTagWake = 0;
constexpr uint32_t kTagSocket = 1;

void io_watch_locked(CbState *st, int op) {
    epoll_event ev;
    std::memset(&ev, 0, sizeof ev);
    ev.events = uint32_t(EPOLLIN) | (st->want_write ? uint32_t(EPOLLOUT) : 0u);
    ev.data.u32 = kTagSocket;
    (void) epoll_ctl(st->epfd, op, st->sock, &ev);
}

natsStatus ev_attach(void **user, void *loop, natsConnection *, natsSock sock) {
    CbState *st = static_cast<CbState *>(loop);
    *user = st;
    {
        std::lock_guard<std::mutex> g(st->io_mu);
        if (st->sock >= 0 && st->sock != int(sock)) (void) epoll_ctl(st->epfd, EPOLL_CTL_DEL, st->sock, nullptr);
        bool known = st->sock == int(sock);
        st->sock = int(sock);
        st->want_write = false;
        io_watch_locked(st, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD);
    }
    st->wake();
    return NATS_OK;
}

natsStatus ev_read(void *user, bool add) {
    CbState *st = static_cast<CbState *>(user);
    std::lock_guard<std::mutex> g(st->io_mu);
    if (!add && st->sock >= 0) {
        // nats.c closes the socket next (the connection broke)
        (void) epoll_ctl(st->epfd, EPOLL_CTL_DEL, st->sock, nullptr);
        st->sock = -1;
        st->want_write = false;
    }
    return NATS_OK;
}

natsStatus ev_write(void *user, bool add) {
    CbState *st = static_cast<CbState *>(user);
    std::lock_guard<std::mutex> g(st->io_mu);
    if (st->sock < 0 || st->want_write == add) return NATS_OK;
    st->want_write = add;
    io_watch_locked(st, EPOLL_CTL_MOD);
    return NATS_OK;
}

natsStatus ev_detach(void *user) {
    return ev_read(user, false);
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

// Reads and writes the connection's socket as far as the event loop reports
// it ready, waiting up to timeout_ms. True when the socket was serviced.
bool drive_io(CbState *st, natsConnection *nc, int timeout_ms) {
    if (nc == nullptr || st->epfd < 0) return false;
    epoll_event evs[2];
    int n = epoll_wait(st->epfd, evs, 2, timeout_ms);
    bool did = false;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 != kTagSocket) continue;
        {
            std::lock_guard<std::mutex> g(st->io_mu);
            if (st->sock < 0) continue;   // stale: the socket broke meanwhile
        }
        if (evs[i].events & EPOLLOUT) natsConnection_ProcessWriteEvent(nc);
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) natsConnection_ProcessReadEvent(nc);
        did = true;
    }
    return did;
}

// Drives the event loop on a thread of its own (all signals blocked) while
// the owner thread is blocked in a nats.c call that waits for a reply. The
// thread calls nothing but nats.c's event functions.
class IoPump {
public:
    IoPump(CbState *st, natsConnection *nc) : st_(st), nc_(nc) {
        if (nc_ == nullptr) return;
        SignalBlock sb;
        try {
            t_ = std::thread([this] {
                while (!stop_.load()) {
                    // (a pending wake-up of the owner keeps the epoll
                    // descriptor readable: do not spin on it)
                    if (!drive_io(st_, nc_, 10)) usleep(1000);
                }
            });
        } catch (...) {
            // no thread: the call times out, and the caller reports it
        }
    }
    ~IoPump() {
        stop_.store(true);
        if (t_.joinable()) t_.join();
    }
    IoPump(const IoPump &) = delete;
    IoPump &operator=(const IoPump &) = delete;

private:
    CbState *st_;
    natsConnection *nc_;
    std::atomic<bool> stop_{false};
    std::thread t_;
};

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

// ---------------------------------------------------------------------------

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
    // The event loop is this file's (see the top): no read-loop or flusher
    // thread; the owner reads and writes the socket in pump().
    if (s == NATS_OK) s = natsOptions_SetEventLoop(opts, cb, ev_attach, ev_read, ev_write, ev_detach);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK) s = natsOptions_SetIOBufSize(opts, 256 * 1024);
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
    if (cb->epfd < 0) {
        natsOptions_Destroy(opts);
        set_error("could not set up the NATS connection: no event loop (epoll)");
        return false;
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
    natsStatus s = natsConnection_JetStream(&js, conn, &o);
    if (s != NATS_OK) {
        js = nullptr;
        set_error("could not create the JetStream context: " + last_nats_error(s));
        return false;
    }
    return true;
}

bool Publisher::Impl::subscribe_acks() {
    if (ack_sub != nullptr) return true;
    natsInbox *ib = nullptr;
    natsStatus s = natsInbox_Create(&ib);
    if (s == NATS_OK) {
        inbox = std::string(ib) + ".";
        natsInbox_Destroy(ib);
        s = natsConnection_SubscribeSync(&ack_sub, conn, (inbox + ">").c_str());
    }
    // no limit: the in-flight window bounds the answers waiting
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(ack_sub, -1, -1);
    if (s != NATS_OK) {
        if (ack_sub != nullptr) natsSubscription_Destroy(ack_sub);
        ack_sub = nullptr;
        set_error("could not subscribe to JetStream's acknowledgements: " + last_nats_error(s));
        return false;
    }
    return true;
}

// The owner's turn of the event loop: everything the socket has to give and
// take right now (bounded).
void Publisher::Impl::poll_io() {
    for (int i = 0; i < 64 && drive_io(cb, conn, 0); i++) {
    }
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
            IoPump io(cb, conn);
            s = js_AddStream(&si, js, &sc, &o, &jerr);
        }
        if (s != NATS_OK && int(jerr) == kJSStreamNameExistErr) {
            // It exists with other settings: use it as it is, but learn its
            // message size limit (messages are split below it).
            if (si != nullptr) jsStreamInfo_Destroy(si);
            si = nullptr;
            jsErrCode e2 = jsErrCode(0);
            IoPump io(cb, conn);
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
    IoPump io(cb, conn);
    natsConnection_FlushTimeout(conn, std::min<int64_t>(std::max<int64_t>(cfg.connect_timeout_ms, 100), 1000));
    return true;
}

void Publisher::Impl::fail_all_inflight() {
    for (auto &e : entries) {
        if (e.st == InFlight) mark_failed(e);
    }
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

// Marks every unresolved message failed: the connection it was written to is
// gone, so its ack (if any) will not come on this one. A late answer for one
// of them names an old send number and is ignored.
void Publisher::Impl::reclaim_inflight(const char *why) {
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
    if (ack_sub != nullptr) natsSubscription_Destroy(ack_sub);
    ack_sub = nullptr;
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
        char reply[160] = "";
        if (!quiet)
            std::snprintf(reply, sizeof reply, "%s%llu.%llu", inbox.c_str(), (unsigned long long) pos,
                          (unsigned long long) no);
        natsMsg *m = nullptr;
        natsStatus s = make_nats_msg(&m, e.subject->c_str(), quiet ? nullptr : reply, e.id, e.chunk,
                                     e.data.data(), e.data.size(), scratch);
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

// ---------------------------------------------------------------------------

Publisher::Publisher(PublisherConfig cfg) : impl_(new Impl) {
    impl_->cfg = std::move(cfg);
    impl_->backoff_ms = std::max<int64_t>(impl_->cfg.retry_backoff_min_ms, 0);
    impl_->cb = new CbState;
    CbState *cb = impl_->cb;
    cb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cb->efd < 0)
        cb->set_error("could not create the publisher's eventfd: ", std::strerror(errno));
    cb->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (cb->epfd < 0) {
        cb->set_error("could not create the publisher's epoll instance: ", std::strerror(errno));
    } else if (cb->efd >= 0) {
        epoll_event ev;
        std::memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.u32 = kTagWake;
        (void) epoll_ctl(cb->epfd, EPOLL_CTL_ADD, cb->efd, &ev);
    }
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
        im->close_epoll();
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
        im->close_epoll();
    }
    // Without nats_CloseAndWait a nats.c thread (a reconnect thread, or the
    // async-callback thread) may still be about to run a callback with this
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
    if (!im->subscribe_acks()) return false;
    bool subs_ok = true;
    for (size_t i = 0; i < im->sub_subjects.size(); i++)
        if (!im->subscribe_one(i)) subs_ok = false;
    (void) subs_ok;  // a failed service subscription does not stop publishing
    return true;
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
    im->poll_io();   // requests that reached the socket
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
            free_nats_msg(m);
            throw;
        }
        free_nats_msg(m);
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
    im->poll_io();   // send it now
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
        IoPump io(im->cb, im->conn);
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
