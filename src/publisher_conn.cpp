// publisher_conn.cpp: creek::Publisher's side that talks to nats.c: the
// library (opened once per process), the connection on the publisher's own
// event loop and its callbacks, the JetStream streams, the service
// subscriptions and requests. publisher.cpp's opening comment tells how
// messages travel and which nats.c facts this file relies on.
#include "publisher_impl.hpp"
#include "nats_msg.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <thread>

namespace creek {
namespace pub {

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

namespace {

constexpr int kJSStreamNameExistErr = 10058;  // JSStreamNameExistErr

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

// CbStates of destroyed Publishers that a nats.c thread might still touch
// (guarded by g_lib_mu). Freed once nats_CloseAndWait has stopped the threads.
std::vector<CbState *> *g_retired = new std::vector<CbState *>;
void on_process_exit() { g_process_exiting.store(true); }

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
        // A broken connection makes nats.c start its reconnect thread from
        // here; a thread inherits the signal mask: Postgres' signals must
        // reach only the owner thread.
        SignalBlock sb;
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

}  // namespace
}  // namespace pub

using namespace pub;

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
    // of being queued and sent ahead of the resends (see the top of publisher.cpp).
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 0);
    // The event loop is this file's (see the top of publisher.cpp): no read-loop or flusher
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


// ---------------------------------------------------------------------------

Publisher::Publisher(PublisherConfig cfg) : impl_(new Impl) {
    impl_->cfg = std::move(cfg);
    for (const auto &st : impl_->cfg.streams)
        if (!impl_->cfg.ordered_stream.empty() && st.second == impl_->cfg.ordered_stream) {
            impl_->ordered_filter = &st.second;   // what stream_filter_of() returns for it
            break;
        }
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
        im->mark_dead();
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
    im->mark_dead();
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

}  // namespace creek
