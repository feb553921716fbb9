// test_publisher.cpp: the Publisher against a real nats-server (JetStream).
//
// Each test starts its own nats-server (-js, loopback, a free port, a fresh
// store directory) found on PATH, and stops it at the end. Every wait is
// bounded. Needs nats-server on PATH (Debian: nats-server).
#include "check.hpp"
#include "publisher.hpp"
#include "nats_msg.hpp"

#include <nats/nats.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

using creek::NatsState;
using creek::Publisher;
using creek::PublisherConfig;

namespace {

// Keeps one Publisher alive for the whole run: the publisher library closes
// nats.c (nats_CloseAndWait, after which it cannot be reopened) when the last
// Publisher is destroyed; the tests create and destroy several.
Publisher g_keep_library_open{PublisherConfig{}};

int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

void sleep_ms(int ms) { usleep(useconds_t(ms) * 1000); }

bool contains(const std::string &hay, const std::string &needle) {
    return hay.find(needle) != std::string::npos;
}

bool in_path(const char *prog) {
    const char *path = std::getenv("PATH");
    if (!path) return false;
    std::string p(path);
    size_t start = 0;
    while (start <= p.size()) {
        size_t colon = p.find(':', start);
        if (colon == std::string::npos) colon = p.size();
        std::string dir = p.substr(start, colon - start);
        if (dir.empty()) dir = ".";
        std::string full = dir + "/" + prog;
        if (access(full.c_str(), X_OK) == 0) return true;
        start = colon + 1;
    }
    return false;
}

int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

bool port_accepts(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(uint16_t(port));
    bool ok = connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    close(fd);
    return ok;
}

int rm_entry(const char *path, const struct stat *, int, struct FTW *) {
    remove(path);
    return 0;
}

// A nats-server child process with JetStream, on 127.0.0.1:port, storing in dir.
struct NatsServer {
    int port = -1;
    std::string dir;
    pid_t pid = -1;

    NatsServer() {
        char tmpl[] = "/tmp/creek-test-nats-XXXXXX";
        if (mkdtemp(tmpl)) dir = tmpl;
        port = free_port();
    }
    ~NatsServer() {
        stop();
        if (!dir.empty()) nftw(dir.c_str(), rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    std::string url() const { return "nats://127.0.0.1:" + std::to_string(port); }

    bool start() {
        if (dir.empty() || port <= 0) return false;
        if (!in_path("nats-server")) {
            std::printf("  nats-server not found on PATH\n");
            return false;
        }
        std::string ps = std::to_string(port), log = dir + "/server.log";
        std::vector<std::string> args = {"nats-server", "-js", "-a", "127.0.0.1", "-p", ps, "-sd", dir};
        std::vector<char *> argv;
        for (auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        pid_t parent = getpid();
        pid_t child = fork();
        if (child < 0) return false;
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);   // never outlive the test
            if (getppid() != parent) _exit(127);
            int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            execvp("nats-server", argv.data());
            _exit(127);
        }
        pid = child;
        int64_t until = now_ms() + 10000;
        while (now_ms() < until) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;
                std::printf("  nats-server exited at start (see %s)\n", log.c_str());
                return false;
            }
            if (port_accepts(port)) return true;
            sleep_ms(20);
        }
        std::printf("  nats-server did not listen on %d within 10 s\n", port);
        stop();
        return false;
    }

    void wait_exit(int ms) {
        int64_t until = now_ms() + ms;
        while (pid > 0 && now_ms() < until) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = -1;
                return;
            }
            sleep_ms(10);
        }
    }
    void kill_hard() {
        if (pid <= 0) return;
        kill(pid, SIGKILL);
        wait_exit(5000);
    }
    void stop() {
        if (pid <= 0) return;
        kill(pid, SIGTERM);
        wait_exit(5000);
        kill_hard();
    }
};

// A plain nats.c client used by the tests to inspect the server.
struct Client {
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;

    explicit Client(const std::string &url) {
        natsOptions *o = nullptr;
        natsOptions_Create(&o);
        natsOptions_SetURL(o, url.c_str());
        natsOptions_SetTimeout(o, 2000);
        natsOptions_SetMaxReconnect(o, 0);
        for (int i = 0; i < 50 && nc == nullptr; i++) {
            if (natsConnection_Connect(&nc, o) != NATS_OK) {
                nc = nullptr;
                sleep_ms(100);
            }
        }
        natsOptions_Destroy(o);
        if (nc) natsConnection_JetStream(&js, nc, nullptr);
    }
    ~Client() {
        if (js) jsCtx_Destroy(js);
        if (nc) {
            natsConnection_Close(nc);
            natsConnection_Destroy(nc);
        }
    }
    bool ok() const { return nc != nullptr && js != nullptr; }

    // Stream info (nullptr if missing), retried briefly while JetStream starts.
    jsStreamInfo *info(const std::string &stream) {
        for (int i = 0; i < 30; i++) {
            jsStreamInfo *si = nullptr;
            jsErrCode e = jsErrCode(0);
            natsStatus s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &e);
            if (s == NATS_OK) return si;
            if (s == NATS_NOT_FOUND || e == JSStreamNotFoundErr) return nullptr;
            sleep_ms(100);
        }
        return nullptr;
    }

    uint64_t count(const std::string &stream) {
        jsStreamInfo *si = info(stream);
        if (!si) return uint64_t(-1);
        uint64_t n = si->State.Msgs;
        jsStreamInfo_Destroy(si);
        return n;
    }

    // Every message of the stream in stream order (payloads), read with an
    // ephemeral push consumer.
    std::vector<std::string> read_all(const std::string &stream, const std::string &subject,
                                      uint64_t expected, int timeout_ms = 20000,
                                      std::vector<std::string> *chunks = nullptr,
                                      std::vector<std::string> *ids = nullptr) {
        std::vector<std::string> out;
        auto keep = [&](natsMsg *m) {
            out.emplace_back(natsMsg_GetData(m), size_t(natsMsg_GetDataLength(m)));
            const char *h = nullptr;
            if (chunks) chunks->push_back(natsMsgHeader_Get(m, "Creek-Chunk", &h) == NATS_OK ? h : "");
            h = nullptr;
            if (ids) ids->push_back(natsMsgHeader_Get(m, "Nats-Msg-Id", &h) == NATS_OK ? h : "");
        };
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = stream.c_str();
        so.Config.DeliverPolicy = js_DeliverAll;
        so.Config.AckPolicy = js_AckNone;
        natsSubscription *sub = nullptr;
        jsErrCode e = jsErrCode(0);
        if (js_SubscribeSync(&sub, js, subject.c_str(), nullptr, &so, &e) != NATS_OK) {
            std::printf("  js_SubscribeSync failed: %s\n", nats_GetLastError(nullptr));
            return out;
        }
        natsSubscription_SetPendingLimits(sub, -1, -1);
        int64_t until = now_ms() + timeout_ms;
        while (out.size() < expected && now_ms() < until) {
            natsMsg *m = nullptr;
            if (natsSubscription_NextMsg(&m, sub, 500) != NATS_OK) continue;
            keep(m);
            natsMsg_Destroy(m);
        }
        // anything beyond the expected count shows up within a short grace period
        for (;;) {
            natsMsg *m = nullptr;
            if (natsSubscription_NextMsg(&m, sub, 300) != NATS_OK) break;
            keep(m);
            natsMsg_Destroy(m);
        }
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        return out;
    }
};

// Creates (or updates) a stream of one subject filter with a message size limit.
bool make_stream(Client &cl, const char *name, const char *subj, int32_t max_msg, bool update) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = &subj;
    sc.SubjectsLen = 1;
    sc.MaxMsgSize = max_msg;
    jsStreamInfo *si = nullptr;
    jsErrCode e = jsErrCode(0);
    natsStatus s = update ? js_UpdateStream(&si, cl.js, &sc, nullptr, &e)
                          : js_AddStream(&si, cl.js, &sc, nullptr, &e);
    if (si) jsStreamInfo_Destroy(si);
    return s == NATS_OK;
}

PublisherConfig make_config(const NatsServer &srv, const std::string &stream, const std::string &subject) {
    PublisherConfig c;
    c.urls = srv.url();
    c.connection_name = "creek-unit-test";
    c.streams = {{stream, subject}};
    c.ordered_stream = subject;   // as the streaming worker's wal stream
    c.connect_timeout_ms = 1000;
    return c;
}

// A nats-server with a stream (max_msg_size 8192) and a publisher
// configuration for it that retries quickly: for the tests that lower the
// stream's max_msg_size under a publisher.
struct LimitedStream {
    NatsServer srv;
    bool started;
    Client cl;
    PublisherConfig c;
    bool ok;
    LimitedStream(const char *name, const char *subj)
        : started(srv.start()), cl(srv.url()), c(make_config(srv, name, subj)),
          ok(started && cl.ok() && make_stream(cl, name, subj, 8192, false)) {
        c.retry_backoff_min_ms = 20;
        c.retry_backoff_max_ms = 200;
    }
};

// Drives the publisher (ensure_ready when not ready, pump, wait on the
// wakeup fd) until done() or the time limit. each() runs every iteration.
bool drive(Publisher &p, const std::function<bool()> &done, int timeout_ms,
           const std::function<void()> &each = {}) {
    int64_t until = now_ms() + timeout_ms;
    while (now_ms() < until) {
        if (each) each();
        if (!p.ready()) p.ensure_ready();
        p.pump();
        if (done()) return true;
        struct pollfd pfd = {p.wakeup_fd(), POLLIN, 0};
        poll(&pfd, 1, 5);
        p.clear_wakeup();
    }
    return done();
}

std::string payload_for(const char *prefix, uint64_t i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s-payload-%07llu|", prefix, (unsigned long long) i);
    std::string s(buf);
    s.append(64, char('a' + i % 26));
    return s;
}

std::string id_for(const char *prefix, uint64_t i) { return std::string(prefix) + "-" + std::to_string(i); }

// Enqueues messages first..last as long as the publisher has room.
struct Producer {
    Publisher &p;
    const char *prefix;
    const char *subject;
    uint64_t next, last;
    void operator()() {
        while (next <= last && p.has_room()) {
            std::string d = payload_for(prefix, next);
            p.enqueue(subject, id_for(prefix, next), d.data(), d.size());
            next++;
        }
    }
};

}  // namespace

namespace {
// SigBlk of a thread of this process, from /proc (0 if unreadable).
uint64_t blocked_mask(pid_t tid) {
    std::string path = "/proc/self/task/" + std::to_string(tid) + "/status";
    FILE *f = std::fopen(path.c_str(), "r");
    if (!f) return 0;
    char line[256];
    uint64_t mask = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "SigBlk:", 7) == 0) mask = std::strtoull(line + 7, nullptr, 16);
    std::fclose(f);
    return mask;
}

// Every signal an application can block is blocked in thread tid.
bool all_signals_blocked(pid_t tid) {
    // SIGKILL and SIGSTOP cannot be blocked; glibc keeps 32 and 33 for itself
    uint64_t m = blocked_mask(tid) | (1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1));
    // signals 1..31 and the real-time ones glibc lets applications use
    if ((m & 0x7fffffffULL) == 0x7fffffffULL && (m >> 34) == (~uint64_t(0) >> 34)) return true;
    std::printf("  thread %d has SigBlk %016llx\n", int(tid), (unsigned long long) m);
    return false;
}

std::vector<pid_t> thread_ids() {
    std::vector<pid_t> out;
    DIR *d = opendir("/proc/self/task");
    if (!d) return out;
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.') out.push_back(pid_t(std::atoi(e->d_name)));
    closedir(d);
    return out;
}
}  // namespace

// Must run first (before the tests' own nats.c clients create threads): every
// thread nats.c creates for the Publisher has all signals blocked, and the
// owner thread's mask is restored.
TEST(nats_threads_block_all_signals) {
    NatsServer srv;
    CHECK(srv.start());
    sigset_t none, before, after;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, &before);
    PublisherConfig c = make_config(srv, "CREEK_s", "CREEK.s.>");
    Publisher p(c);
    CHECK(p.subscribe("T._schemas"));
    CHECK(p.ensure_ready());
    std::string d = "x";
    p.enqueue("CREEK.s.x", "s-1", d.data(), d.size());
    CHECK(drive(p, [&] { return p.acked_through() == 1; }, 10000));
    pthread_sigmask(SIG_SETMASK, nullptr, &after);
    CHECK(!sigismember(&after, SIGTERM));
    CHECK(!sigismember(&after, SIGUSR1));
    pid_t self = getpid();
    int others = 0, unblocked = 0;
    for (pid_t tid : thread_ids()) {
        if (tid == self) continue;
        others++;
        if (!all_signals_blocked(tid)) unblocked++;
    }
    std::printf("  %d nats.c threads, %d with signals not blocked\n", others, unblocked);
    // timer, async callbacks, gc, the request multiplexer's subscription (no
    // read loop, no flusher: the publisher runs the connection's event loop)
    CHECK(others >= 3);
    CHECK_EQ(unblocked, 0);
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

// nats.c starts its reconnect thread from the owner thread, inside the read
// event that finds the connection broken: that thread must not inherit the
// owner's mask, in which Postgres' signals are not blocked.
TEST(reconnect_thread_blocks_all_signals) {
    NatsServer srv;
    CHECK(srv.start());
    sigset_t none, before;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, &before);
    Publisher p(make_config(srv, "CREEK_rt", "CREEK.rt.>"));
    CHECK(p.ensure_ready());
    std::string d = "x";
    p.enqueue("CREEK.rt.x", "rt-1", d.data(), d.size());
    CHECK(drive(p, [&] { return p.acked_through() == 1; }, 10000));
    std::vector<pid_t> old = thread_ids();
    srv.kill_hard();
    drive(p, [] { return false; }, 500);   // nats.c reconnects, on a thread of its own
    int fresh = 0, unblocked = 0;
    for (pid_t tid : thread_ids()) {
        if (std::find(old.begin(), old.end(), tid) != old.end()) continue;
        fresh++;
        if (!all_signals_blocked(tid)) unblocked++;
    }
    std::printf("  %d threads started after the connection broke, %d with signals not blocked\n", fresh,
                unblocked);
    CHECK(fresh >= 1);
    CHECK_EQ(unblocked, 0);
    CHECK(srv.start());
    p.enqueue("CREEK.rt.x", "rt-2", d.data(), d.size());
    CHECK(drive(p, [&] { return p.acked_through() == 2; }, 30000));
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

// (a) connect, streams created with the settings; an existing stream with
// other settings is used as it is; a stream that cannot be created fails.
TEST(connect_and_create_streams) {
    NatsServer srv;
    CHECK(srv.start());
    PublisherConfig c = make_config(srv, "CREEK_a_wal", "CREEK.a.wal.>");
    c.streams.push_back({"CREEK_a_meta", "CREEK.a.meta.>"});
    c.stream_settings.file_storage = true;
    c.stream_settings.max_age_ms = 3600 * 1000;
    c.stream_settings.duplicate_window_ms = 60 * 1000;
    c.stream_settings.max_bytes = int64_t(1) << 30;
    Publisher p(c);
    CHECK(p.state() == NatsState::Disconnected);
    CHECK(!p.ready());
    bool ok = p.ensure_ready();
    if (!ok) std::printf("  last_error: %s\n", p.last_error().c_str());
    CHECK(ok);
    CHECK(p.ready());
    CHECK(p.state() == NatsState::Connected);
    CHECK_EQ(std::string(creek::nats_state_name(p.state())), std::string("connected"));
    CHECK_EQ(p.max_payload(), uint64_t(1024 * 1024));

    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    for (auto &st : c.streams) {
        jsStreamInfo *si = cl.info(st.first);
        CHECK(si != nullptr);
        if (!si) continue;
        CHECK_EQ(si->Config->SubjectsLen, 1);
        if (si->Config->SubjectsLen == 1) CHECK_EQ(std::string(si->Config->Subjects[0]), st.second);
        CHECK(si->Config->Storage == js_FileStorage);
        CHECK_EQ(si->Config->MaxAge, int64_t(3600) * 1000 * 1000000);
        CHECK_EQ(si->Config->Duplicates, int64_t(60) * 1000 * 1000000);
        CHECK_EQ(si->Config->MaxBytes, int64_t(1) << 30);
        CHECK_EQ(si->Config->Replicas, int64_t(1));
        jsStreamInfo_Destroy(si);
    }
    // calling it again is cheap and still true
    CHECK(p.ensure_ready());

    // an existing stream with other settings is used as it is
    {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        const char *subj = "CREEK.a.other.>";
        sc.Name = "CREEK_a_other";
        sc.Subjects = &subj;
        sc.SubjectsLen = 1;
        sc.Storage = js_MemoryStorage;
        sc.MaxMsgs = 1000;
        jsStreamInfo *si = nullptr;
        jsErrCode e = jsErrCode(0);
        CHECK(js_AddStream(&si, cl.js, &sc, nullptr, &e) == NATS_OK);
        if (si) jsStreamInfo_Destroy(si);
    }
    PublisherConfig c2 = make_config(srv, "CREEK_a_other", "CREEK.a.other.>");
    c2.stream_settings.file_storage = true;
    c2.stream_settings.max_age_ms = 1000 * 1000;
    Publisher p2(c2);
    ok = p2.ensure_ready();
    if (!ok) std::printf("  last_error: %s\n", p2.last_error().c_str());
    CHECK(ok);
    {
        jsStreamInfo *si = cl.info("CREEK_a_other");
        CHECK(si != nullptr);
        if (si) {
            CHECK(si->Config->Storage == js_MemoryStorage);
            CHECK_EQ(si->Config->MaxMsgs, int64_t(1000));
            CHECK_EQ(si->Config->MaxAge, int64_t(0));
            jsStreamInfo_Destroy(si);
        }
    }
    // a stream that cannot be created (its subjects overlap another stream's)
    Publisher p3(make_config(srv, "CREEK_a_bad", "CREEK.a.wal.>"));
    CHECK(!p3.ensure_ready());
    CHECK(!p3.ready());
    CHECK(contains(p3.last_error(), "could not create stream CREEK_a_bad"));
    std::printf("  (expected) %s\n", p3.last_error().c_str());
    uint64_t gen = p3.error_generation();
    CHECK(gen > 0);
    CHECK(p3.last_error_time_us() > 0);
    CHECK(!p3.ensure_ready());           // retried, fails again
    CHECK(p3.error_generation() > gen);
}

namespace {
NatsServer &shared_server() {
    static std::unique_ptr<NatsServer> srv;
    if (!srv) {
        srv.reset(new NatsServer);
        if (!srv->start()) std::printf("  could not start the shared nats-server\n");
    }
    return *srv;
}
constexpr uint64_t kBulk = 20000;

// A configuration with an in-flight window of 256 messages.
PublisherConfig window_config(const NatsServer &srv, const std::string &stream, const std::string &subject,
                              int ack_every = 1) {
    PublisherConfig c = make_config(srv, stream, subject);
    c.max_in_flight = 256;
    c.ack_every = ack_every;
    return c;
}

// Enqueues prod's messages and pumps until all are acknowledged (false after
// timeout_ms, with the publisher's last error printed).
bool publish_all(Publisher &p, Producer &prod, int timeout_ms = 40000) {
    bool done = drive(p, [&] { return prod.next > prod.last && p.acked_through() == p.last_position(); },
                      timeout_ms, [&] { prod(); });
    if (!done) std::printf("  last_error: %s\n", p.last_error().c_str());
    return done;
}
}  // namespace

// (b) 20000 messages with a window of 256: all acked, in order, exactly once.
TEST(publish_20000_in_order) {
    NatsServer &srv = shared_server();
    Publisher p(window_config(srv, "CREEK_b", "CREEK.b.>"));
    CHECK(p.ensure_ready());
    Producer prod{p, "b", "CREEK.b.data", 1, kBulk};
    size_t max_inflight_seen = 0, max_pending_seen = 0;
    int64_t t0 = now_ms();
    bool done = drive(p, [&] { return prod.next > kBulk && p.acked_through() == kBulk; }, 40000,
                      [&] {
                          prod();
                          max_inflight_seen = std::max(max_inflight_seen, p.in_flight());
                          max_pending_seen = std::max(max_pending_seen, p.in_flight() + p.queued());
                      });
    int64_t dt = now_ms() - t0;
    std::printf("  published %llu messages in %lld ms (max in flight %zu)\n",
                (unsigned long long) p.acked_through(), (long long) dt, max_inflight_seen);
    if (!done) std::printf("  last_error: %s\n", p.last_error().c_str());
    CHECK(done);
    CHECK_EQ(p.last_position(), kBulk);
    CHECK_EQ(p.acked_through(), p.last_position());
    CHECK_EQ(p.in_flight(), size_t(0));
    CHECK_EQ(p.queued(), size_t(0));
    CHECK(max_inflight_seen <= 256);
    CHECK(max_pending_seen <= 2 * 256);
    CHECK_EQ(p.messages_published(), kBulk);
    uint64_t bytes = 0;
    for (uint64_t i = 1; i <= kBulk; i++) bytes += payload_for("b", i).size();
    CHECK_EQ(p.bytes_published(), bytes);

    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    CHECK_EQ(cl.count("CREEK_b"), kBulk);
    std::vector<std::string> ids;
    std::vector<std::string> all = cl.read_all("CREEK_b", "CREEK.b.>", kBulk, 20000, nullptr, &ids);
    CHECK_EQ(all.size(), size_t(kBulk));
    CHECK_EQ(ids.size(), all.size());
    size_t mismatches = 0, id_mismatches = 0;
    for (size_t i = 0; i < all.size() && i < kBulk; i++) {
        if (all[i] != payload_for("b", i + 1)) mismatches++;
        if (i < ids.size() && ids[i] != id_for("b", i + 1)) id_mismatches++;
    }
    CHECK_EQ(mismatches, size_t(0));
    CHECK_EQ(id_mismatches, size_t(0));
}

// Messages are built from encoded header bytes and freed on the publishing
// thread (src/nats_msg.cpp) with the nats.c this was built for; whichever
// way, they read back through nats.c's public API as built.
TEST(nats_msg_builds_and_frees_messages) {
    if (std::strncmp(nats_GetVersion(), "3.4", 3) == 0) {
        CHECK(creek::nats_msg_fast_create());
        CHECK(creek::nats_msg_fast_free());
    }
    std::string scratch;
    for (int k = 0; k < 2; k++) {
        natsMsg *m = nullptr;
        std::string chunk = k == 0 ? "" : "2/5";
        CHECK(creek::make_nats_msg(&m, "a.b", k == 0 ? nullptr : "_INBOX.x.1.2", "0/16B3A28/7", chunk,
                                   "payload", 7, scratch) == NATS_OK);
        if (m == nullptr) continue;
        CHECK_EQ(std::string(natsMsg_GetSubject(m)), std::string("a.b"));
        CHECK(k == 0 ? natsMsg_GetReply(m) == nullptr : std::string(natsMsg_GetReply(m)) == "_INBOX.x.1.2");
        CHECK_EQ(std::string(natsMsg_GetData(m), size_t(natsMsg_GetDataLength(m))), std::string("payload"));
        const char *id = nullptr, *ch = nullptr;
        CHECK(natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && std::string(id) == "0/16B3A28/7");
        natsStatus cs = natsMsgHeader_Get(m, "Creek-Chunk", &ch);
        CHECK(k == 0 ? cs == NATS_NOT_FOUND : (cs == NATS_OK && std::string(ch) == chunk));
        creek::free_nats_msg(m);
    }
    natsMsg *bad = nullptr;
    CHECK(creek::make_nats_msg(&bad, "", nullptr, "x", "", "p", 1, scratch) != NATS_OK);
    CHECK(bad == nullptr);
}

// (c) the same message ids again: acknowledged (as duplicates), nothing stored.
TEST(republish_same_ids_is_deduplicated) {
    NatsServer &srv = shared_server();
    Publisher p(window_config(srv, "CREEK_b", "CREEK.b.>"));
    CHECK(p.ensure_ready());
    Producer prod{p, "b", "CREEK.b.data", 1, kBulk};
    CHECK(publish_all(p, prod));
    CHECK_EQ(p.acked_through(), kBulk);
    CHECK_EQ(p.messages_published(), kBulk);
    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    jsStreamInfo *si = cl.info("CREEK_b");
    CHECK(si != nullptr);
    if (si) {
        CHECK_EQ(si->State.Msgs, kBulk);
        CHECK_EQ(si->State.LastSeq, kBulk);
        jsStreamInfo_Destroy(si);
    }
}

namespace {
// Reads the whole stream back and checks that it holds exactly the payloads
// of positions 1..n, each once, in position order (stream sequence i+1 holds
// position i+1). Prints what is wrong, if anything.
void check_stream_exact(const NatsServer &srv, const std::string &stream, const std::string &filter,
                        const char *prefix, uint64_t n) {
    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    jsStreamInfo *si = cl.info(stream);
    CHECK(si != nullptr);
    if (si) {
        CHECK_EQ(si->State.Msgs, n);
        CHECK_EQ(si->State.FirstSeq, uint64_t(1));
        CHECK_EQ(si->State.LastSeq, n);   // nothing stored and removed in between
        jsStreamInfo_Destroy(si);
    }
    std::vector<std::string> all = cl.read_all(stream, filter, n);
    CHECK_EQ(all.size(), size_t(n));
    std::map<std::string, uint64_t> pos_of;
    for (uint64_t i = 1; i <= n; i++) pos_of[payload_for(prefix, i)] = i;
    std::map<uint64_t, int> seen;
    size_t unknown = 0, out_of_place = 0;
    long first_bad = -1;
    for (size_t k = 0; k < all.size(); k++) {
        auto it = pos_of.find(all[k]);
        if (it == pos_of.end()) {
            unknown++;
            if (first_bad < 0) first_bad = long(k);
            continue;
        }
        seen[it->second]++;
        if (it->second != k + 1) {
            out_of_place++;
            if (first_bad < 0) first_bad = long(k);
        }
    }
    size_t missing = 0, dup = 0;
    for (uint64_t i = 1; i <= n; i++) {
        auto it = seen.find(i);
        if (it == seen.end()) missing++;
        else if (it->second != 1) dup++;
    }
    if (first_bad >= 0) {
        std::printf("  stream %s NOT in position order: first mismatch at stream sequence %ld; "
                    "around it:", stream.c_str(), first_bad + 1);
        for (long k = std::max(0L, first_bad - 2); k < std::min(long(all.size()), first_bad + 3); k++) {
            auto it = pos_of.find(all[size_t(k)]);
            std::printf(" %llu", it == pos_of.end() ? 0ULL : (unsigned long long) it->second);
        }
        std::printf("\n");
    } else {
        std::printf("  stream %s: positions 1..%llu, each once, in position order\n", stream.c_str(),
                    (unsigned long long) n);
    }
    CHECK_EQ(unknown, size_t(0));
    CHECK_EQ(missing, size_t(0));
    CHECK_EQ(dup, size_t(0));
    CHECK_EQ(out_of_place, size_t(0));
}

PublisherConfig outage_config(const NatsServer &srv, const std::string &stream, const std::string &subject,
                              int64_t ack_timeout_ms) {
    // (the faults also hit messages sent without a reply)
    PublisherConfig c = window_config(srv, stream, subject, 32);
    c.ack_timeout_ms = ack_timeout_ms;
    c.retry_backoff_min_ms = 50;
    c.retry_backoff_max_ms = 1000;
    return c;
}

// Keeps producing and pumping while the server is down for down_ms, then
// restarts it. Checks that nothing is acknowledged meanwhile.
void outage(NatsServer &srv, Publisher &p, Producer &prod, int down_ms, const char *what) {
    uint64_t at_kill = p.acked_through();
    size_t inflight_at_kill = p.in_flight();
    srv.kill_hard();
    std::printf("  %s: killed nats-server at acked_through=%llu in_flight=%zu\n", what,
                (unsigned long long) at_kill, inflight_at_kill);
    // acks already received may still be applied for a moment; after that
    // nothing can be acknowledged without a server
    drive(p, [] { return false; }, 100, [&] { prod(); });
    uint64_t settled = p.acked_through();
    drive(p, [] { return false; }, down_ms - 100, [&] { prod(); });
    std::printf("  while down: state=%s acked_through=%llu in_flight=%zu queued=%zu last_error=%s\n",
                creek::nats_state_name(p.state()), (unsigned long long) p.acked_through(), p.in_flight(),
                p.queued(), p.last_error().c_str());
    CHECK(p.state() != NatsState::Connected);
    CHECK_EQ(p.acked_through(), settled);
    CHECK(srv.start());
}
}  // namespace

// (b2) ack_every 32: JetStream acknowledges one message in 32 (and the last
// one sent in a row); the others are confirmed by the stream sequence. All
// acknowledged, stored once, in position order, each with its id.
TEST(publish_20000_with_an_acknowledgement_every_32) {
    NatsServer &srv = shared_server();
    Publisher p(window_config(srv, "CREEK_q", "CREEK.q.>", 32));
    CHECK(p.ensure_ready());
    Producer prod{p, "q", "CREEK.q.data", 1, kBulk};
    CHECK(publish_all(p, prod));
    CHECK_EQ(p.messages_published(), kBulk);
    CHECK_EQ(p.in_flight(), size_t(0));
    CHECK(p.last_error().empty());
    check_stream_exact(srv, "CREEK_q", "CREEK.q.>", "q", kBulk);
}

// (b3) ack_every 32 while another client publishes into the same stream: the
// stream sequence then moves by more than the messages sent without a reply,
// which are sent again with a reply each (their ids make that safe). Every
// message is stored once, in position order among creek's.
namespace {
// ordered: with cfg.ordered_stream, a foreign message without an id makes
// JetStream refuse creek's next one (it names its predecessor, no longer the
// last message): resent too, in order.
void foreign_writer_run(const char *tag, bool ordered) {
    NatsServer &srv = shared_server();
    std::string stream = std::string("CREEK_") + tag, filter = std::string("CREEK.") + tag + ".>";
    std::string data_subject = std::string("CREEK.") + tag + ".data";
    std::string foreign_subject = std::string("CREEK.") + tag + ".foreign";
    PublisherConfig c = window_config(srv, stream, filter, 32);
    if (!ordered) c.ordered_stream.clear();
    Publisher p(c);
    CHECK(p.ensure_ready());
    Client other(srv.url());
    CHECK(other.ok());
    const uint64_t n = 5000;
    Producer prod{p, tag, data_subject.c_str(), 1, n};
    int foreign = 0;
    bool done = drive(p, [&] { return prod.next > n && p.acked_through() == n; }, 40000, [&] {
        prod();
        if (other.ok() && foreign < 200 && (p.acked_through() / 20) > uint64_t(foreign))
            if (natsConnection_PublishString(other.nc, foreign_subject.c_str(), "x") == NATS_OK) foreign++;
    });
    std::printf("  %d foreign messages; last_error: %s\n", foreign, p.last_error().c_str());
    CHECK(done);
    CHECK(foreign > 0);
    CHECK(contains(p.last_error(), ordered ? "wrong last msg ID" : "could not confirm"));
    CHECK_EQ(p.messages_published(), n);
    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    std::vector<std::string> all = cl.read_all(stream, data_subject, n);
    CHECK_EQ(all.size(), size_t(n));
    size_t bad = 0;
    for (size_t i = 0; i < all.size(); i++)
        if (all[i] != payload_for(tag, i + 1)) bad++;
    CHECK_EQ(bad, size_t(0));
}
}  // namespace

TEST(ack_every_resends_what_the_stream_sequence_does_not_confirm) {
    foreign_writer_run("qf", false);
}

TEST(ordered_stream_with_a_foreign_writer) {
    foreign_writer_run("qg", true);
}

// (b4) ack_every 32, every message already stored (a restarted producer):
// every answer is a duplicate, nothing is confirmed by counting, all is sent
// again with a reply each, and the stream is unchanged.
TEST(ack_every_with_every_message_a_duplicate) {
    NatsServer &srv = shared_server();
    Publisher p(window_config(srv, "CREEK_q", "CREEK.q.>", 32));
    CHECK(p.ensure_ready());
    Producer prod{p, "q", "CREEK.q.data", 1, 5000};
    CHECK(publish_all(p, prod));
    check_stream_exact(srv, "CREEK_q", "CREEK.q.>", "q", kBulk);
}

// (b5) ack_every 32 with messages for two streams interleaved (a table's
// schema and its changes): JetStream answers for different streams out of
// send order; the counts are kept per stream, and nothing needs resending.
TEST(ack_every_with_two_streams_interleaved) {
    NatsServer &srv = shared_server();
    PublisherConfig c = window_config(srv, "CREEK_m_wal", "CREEK.m.wal.>", 32);
    c.streams.push_back({"CREEK_m_schema", "CREEK.m.schema.>"});
    Publisher p(c);
    CHECK(p.ensure_ready());
    const uint64_t n = 6000;
    uint64_t next = 1, schemas = 0;
    bool done = drive(p, [&] { return next > n && p.acked_through() == p.last_position(); }, 40000, [&] {
        while (next <= n && p.has_room()) {
            if (next % 100 == 1) {
                std::string sd = "schema " + std::to_string(next);
                p.enqueue("CREEK.m.schema.t", "schema-" + std::to_string(next), sd.data(), sd.size());
                schemas++;
            }
            std::string d = payload_for("m", next);
            p.enqueue("CREEK.m.wal.t", id_for("m", next), d.data(), d.size());
            next++;
        }
    });
    std::printf("  last_error: %s\n", p.last_error().c_str());
    CHECK(done);
    CHECK(p.last_error().empty());
    CHECK_EQ(p.messages_published(), n + schemas);
    check_stream_exact(srv, "CREEK_m_wal", "CREEK.m.wal.>", "m", n);
}

// (d) the server is killed (SIGKILL) while 5000 messages are being published
// and restarted on the same port and store: everything ends up acknowledged
// and stored exactly once, in position order.
TEST(survives_server_kill_and_restart) {
    NatsServer srv;
    CHECK(srv.start());
    Publisher p(outage_config(srv, "CREEK_d", "CREEK.d.>", 1000));
    CHECK(p.ensure_ready());
    const uint64_t n = 5000;
    Producer prod{p, "d", "CREEK.d.data", 1, n};
    // publish until about a fifth is acknowledged, then kill the server
    bool reached = drive(p, [&] { return p.acked_through() >= 1000; }, 20000, [&] { prod(); });
    CHECK(reached);
    outage(srv, p, prod, 700, "kill");
    int64_t t0 = now_ms();
    bool done = drive(p, [&] { return prod.next > n && p.acked_through() == n; }, 60000,
                      [&] { prod(); });
    std::printf("  all acknowledged %lld ms after the restart (last_error: %s)\n",
                (long long) (now_ms() - t0), p.last_error().c_str());
    CHECK(done);
    CHECK_EQ(p.acked_through(), p.last_position());
    CHECK_EQ(p.in_flight(), size_t(0));
    CHECK_EQ(p.queued(), size_t(0));
    CHECK(p.state() == NatsState::Connected);
    CHECK_EQ(p.messages_published(), n);
    check_stream_exact(srv, "CREEK_d", "CREEK.d.>", "d", n);
}

// (d2) the server is killed twice during one run; the second time just after
// the first acknowledgement following the restart, while the resent messages
// and new ones are in flight.
TEST(survives_two_server_kills) {
    NatsServer srv;
    CHECK(srv.start());
    Publisher p(outage_config(srv, "CREEK_d2", "CREEK.d2.>", 1000));
    CHECK(p.ensure_ready());
    const uint64_t n = 8000;
    Producer prod{p, "d2", "CREEK.d2.data", 1, n};
    CHECK(drive(p, [&] { return p.acked_through() >= 1000; }, 20000, [&] { prod(); }));
    outage(srv, p, prod, 500, "first kill");
    uint64_t before = p.acked_through();
    bool moved = drive(p, [&] { return p.acked_through() > before; }, 20000, [&] { prod(); });
    CHECK(moved);
    std::printf("  after the restart: acked_through=%llu in_flight=%zu\n",
                (unsigned long long) p.acked_through(), p.in_flight());
    outage(srv, p, prod, 500, "second kill");
    int64_t t0 = now_ms();
    bool done = drive(p, [&] { return prod.next > n && p.acked_through() == n; }, 60000,
                      [&] { prod(); });
    std::printf("  all acknowledged %lld ms after the second restart (last_error: %s)\n",
                (long long) (now_ms() - t0), p.last_error().c_str());
    CHECK(done);
    CHECK_EQ(p.acked_through(), n);
    CHECK_EQ(p.in_flight(), size_t(0));
    CHECK_EQ(p.messages_published(), n);
    check_stream_exact(srv, "CREEK_d2", "CREEK.d2.>", "d2", n);
}

// (d3) the server stays down four times longer than the ack timeout (500 ms):
// the in-flight messages time out while disconnected; nothing is sent until
// the server is back, then everything is stored once, in position order.
TEST(survives_outage_longer_than_ack_timeout) {
    NatsServer srv;
    CHECK(srv.start());
    Publisher p(outage_config(srv, "CREEK_d3", "CREEK.d3.>", 500));
    CHECK(p.ensure_ready());
    const uint64_t n = 5000;
    Producer prod{p, "d3", "CREEK.d3.data", 1, n};
    CHECK(drive(p, [&] { return p.acked_through() >= 1000; }, 20000, [&] { prod(); }));
    outage(srv, p, prod, 2000, "long outage");
    // the ack timeouts have fired: nothing is in flight, all is queued
    CHECK_EQ(p.in_flight(), size_t(0));
    CHECK(contains(p.last_error(), "no acknowledgement") || contains(p.last_error(), "Insufficient Buffer") ||
          contains(p.last_error(), "NATS connection"));
    int64_t t0 = now_ms();
    bool done = drive(p, [&] { return prod.next > n && p.acked_through() == n; }, 60000,
                      [&] { prod(); });
    std::printf("  all acknowledged %lld ms after the restart (last_error: %s)\n",
                (long long) (now_ms() - t0), p.last_error().c_str());
    CHECK(done);
    CHECK_EQ(p.acked_through(), n);
    CHECK_EQ(p.messages_published(), n);
    check_stream_exact(srv, "CREEK_d3", "CREEK.d3.>", "d3", n);
}

// (d4) the server is frozen (SIGSTOP) for three times the ack timeout and then
// resumed: the connection survives, the acks time out, the server then
// stores what it had received; the resends are duplicates and the stream is
// still exactly in position order.
TEST(survives_ack_timeouts_on_live_connection) {
    NatsServer srv;
    CHECK(srv.start());
    Publisher p(outage_config(srv, "CREEK_d4", "CREEK.d4.>", 500));
    CHECK(p.ensure_ready());
    const uint64_t n = 5000;
    Producer prod{p, "d4", "CREEK.d4.data", 1, n};
    CHECK(drive(p, [&] { return p.acked_through() >= 1000; }, 20000, [&] { prod(); }));
    uint64_t gen = p.error_generation();
    kill(srv.pid, SIGSTOP);
    std::printf("  froze nats-server at acked_through=%llu in_flight=%zu\n",
                (unsigned long long) p.acked_through(), p.in_flight());
    drive(p, [] { return false; }, 1500, [&] { prod(); });
    std::printf("  while frozen: state=%s acked_through=%llu in_flight=%zu last_error=%s\n",
                creek::nats_state_name(p.state()), (unsigned long long) p.acked_through(), p.in_flight(),
                p.last_error().c_str());
    CHECK(p.error_generation() > gen);   // the timeouts were reported
    kill(srv.pid, SIGCONT);
    bool done = drive(p, [&] { return prod.next > n && p.acked_through() == n; }, 60000,
                      [&] { prod(); });
    std::printf("  done: state=%s last_error=%s\n", creek::nats_state_name(p.state()),
                p.last_error().c_str());
    CHECK(done);
    CHECK_EQ(p.acked_through(), n);
    CHECK_EQ(p.messages_published(), n);
    check_stream_exact(srv, "CREEK_d4", "CREEK.d4.>", "d4", n);
}

// (e) nothing listens: ensure_ready fails fast with a useful error, then
// succeeds once a server is there.
TEST(connect_failure_then_success) {
    NatsServer srv;   // not started yet
    PublisherConfig c = make_config(srv, "CREEK_e", "CREEK.e.>");
    Publisher p(c);
    int64_t t0 = now_ms();
    CHECK(!p.ensure_ready());
    int64_t dt = now_ms() - t0;
    CHECK(dt < 3000);
    std::string err = p.last_error();
    std::printf("  (expected, %lld ms) %s\n", (long long) dt, err.c_str());
    CHECK(contains(err, "could not connect to NATS at " + srv.url()));
    CHECK(contains(err, "No server available"));
    CHECK(p.state() == NatsState::Disconnected);
    CHECK(!p.ready());
    uint64_t gen = p.error_generation();
    CHECK(!p.ensure_ready());
    CHECK(p.error_generation() > gen);
    // messages can be enqueued meanwhile; pump does not send them
    std::string d = "early";
    CHECK_EQ(p.enqueue("CREEK.e.x", "e-1", d.data(), d.size()), uint64_t(1));
    p.pump();
    CHECK_EQ(p.queued(), size_t(1));
    CHECK_EQ(p.in_flight(), size_t(0));

    CHECK(srv.start());
    bool ok = false;
    int64_t until = now_ms() + 10000;
    while (!ok && now_ms() < until) {
        ok = p.ensure_ready();
        if (!ok) sleep_ms(100);
    }
    CHECK(ok);
    CHECK(p.state() == NatsState::Connected);
    CHECK(drive(p, [&] { return p.acked_through() == 1; }, 10000));
    Client cl(srv.url());
    CHECK(cl.ok());
    if (cl.ok()) CHECK_EQ(cl.count("CREEK_e"), uint64_t(1));
}

// (f) service subscriptions: a request from another connection is received
// by next_request and answered with respond.
TEST(service_request_reply) {
    NatsServer srv;
    CHECK(srv.start());
    Publisher p(make_config(srv, "CREEK_f", "CREEK.f.>"));
    CHECK(p.subscribe("T._schemas"));       // before connecting: subscribed on connect
    CHECK(p.ensure_ready());
    CHECK(p.subscribe("T._other"));          // after connecting
    CHECK(p.subscribe("T._schemas"));       // twice: harmless
    creek::ServiceRequest req;
    CHECK(!p.next_request(req));

    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    natsInbox *inbox = nullptr;
    natsInbox_Create(&inbox);
    natsSubscription *replies = nullptr;
    CHECK(natsConnection_SubscribeSync(&replies, cl.nc, inbox) == NATS_OK);
    struct Case { const char *subject, *data, *answer; };
    for (Case k : {Case{"T._schemas", "fingerprint 42", "schema for 42"},
                   Case{"T._other", "ping", "pong"}}) {
        CHECK(natsConnection_PublishRequestString(cl.nc, k.subject, inbox, k.data) == NATS_OK);
        natsConnection_FlushTimeout(cl.nc, 2000);
        bool got = false;
        int64_t until = now_ms() + 5000;
        while (!got && now_ms() < until) {
            got = p.next_request(req);
            if (!got) sleep_ms(5);
        }
        CHECK(got);
        if (!got) continue;
        CHECK_EQ(req.subject, std::string(k.subject));
        CHECK_EQ(req.data, std::string(k.data));
        CHECK_EQ(req.reply, std::string(inbox));
        CHECK(p.respond(req.reply, k.answer));
        natsMsg *m = nullptr;
        CHECK(natsSubscription_NextMsg(&m, replies, 5000) == NATS_OK);
        if (m) {
            CHECK_EQ(std::string(natsMsg_GetData(m), size_t(natsMsg_GetDataLength(m))),
                     std::string(k.answer));
            natsMsg_Destroy(m);
        }
    }
    CHECK(!p.next_request(req));
    // a message without reply subject
    CHECK(natsConnection_PublishString(cl.nc, "T._schemas", "no reply") == NATS_OK);
    natsConnection_FlushTimeout(cl.nc, 2000);
    bool got = false;
    int64_t until = now_ms() + 5000;
    while (!got && now_ms() < until) {
        got = p.next_request(req);
        if (!got) sleep_ms(5);
    }
    CHECK(got);
    CHECK(req.reply.empty());
    CHECK_EQ(req.data, std::string("no reply"));
    natsSubscription_Destroy(replies);
    natsInbox_Destroy(inbox);
}

// (g) a message larger than the server's max_payload is split into parts
// (header Creek-Chunk: k/n) that concatenate to it, in order, between the
// messages around it.
TEST(big_message_is_split_into_parts) {
    NatsServer srv;
    CHECK(srv.start());
    PublisherConfig c = make_config(srv, "CREEK_g", "CREEK.g.>");
    Publisher p(c);
    CHECK(p.ensure_ready());
    CHECK_EQ(p.part_limit(), size_t(1024 * 1024 - Publisher::kPartHeadroom));
    std::string small = "small", big(2 * 1024 * 1024 + 5, 'x');
    for (size_t i = 0; i < big.size(); i++) big[i] = char('a' + (i * 7 + i / 1000) % 26);
    CHECK_EQ(p.enqueue("CREEK.g.x", "g-1", small.data(), small.size()), uint64_t(1));
    CHECK_EQ(p.enqueue("CREEK.g.x", "g-2", big.data(), big.size()), uint64_t(4));   // 3 parts
    CHECK_EQ(p.enqueue("CREEK.g.x", "g-3", small.data(), small.size()), uint64_t(5));
    drive(p, [&] { return p.acked_through() == 5; }, 10000);
    CHECK_EQ(p.acked_through(), uint64_t(5));
    CHECK(!p.too_large());
    Client cl(srv.url());
    CHECK(cl.ok());
    if (!cl.ok()) return;
    std::vector<std::string> chunks;
    std::vector<std::string> all = cl.read_all("CREEK_g", "CREEK.g.>", 5, 20000, &chunks);
    CHECK_EQ(all.size(), size_t(5));
    if (all.size() != 5) return;
    CHECK_EQ(all[0], small);
    CHECK_EQ(chunks[0], std::string(""));
    CHECK_EQ(chunks[1], std::string("1/3"));
    CHECK_EQ(chunks[2], std::string("2/3"));
    CHECK_EQ(chunks[3], std::string("3/3"));
    CHECK(all[1].size() <= p.part_limit());
    CHECK(all[1] + all[2] + all[3] == big);
    CHECK_EQ(all[4], small);
    CHECK_EQ(chunks[4], std::string(""));
}

// (g2) a stream that exists with a smaller max_msg_size sets the limit; when
// the limit goes down after a message was split, the publisher says so
// (too_large) and never skips the message.
TEST(stream_max_msg_size_limits_parts) {
    LimitedStream ls("CREEK_h", "CREEK.h.>");
    CHECK(ls.ok);
    if (!ls.ok) return;
    Client &cl = ls.cl;
    const PublisherConfig &c = ls.c;
    Publisher p(c);
    CHECK(p.ensure_ready());
    CHECK_EQ(p.part_limit(), size_t(8192 - Publisher::kPartHeadroom));
    std::string big(20000, 'y');
    CHECK_EQ(p.enqueue("CREEK.h.x", "h-1", big.data(), big.size()), uint64_t(3));
    drive(p, [&] { return p.acked_through() == 3; }, 10000);
    CHECK_EQ(p.acked_through(), uint64_t(3));
    // the limit goes down: the next split message is refused, not skipped
    CHECK(make_stream(cl, "CREEK_h", "CREEK.h.>", 2048, true));
    CHECK_EQ(p.enqueue("CREEK.h.x", "h-2", big.data(), big.size()), uint64_t(6));
    drive(p, [&] { return p.too_large(); }, 5000);
    drive(p, [] { return false; }, 300);
    CHECK(p.too_large());
    std::printf("  (expected) %s\n", p.last_error().c_str());
    CHECK_EQ(p.acked_through(), uint64_t(3));
    CHECK_EQ(cl.count("CREEK_h"), uint64_t(3));
    // a new publisher (the worker restarts) splits for the new limit
    Publisher p2(c);
    CHECK(p2.ensure_ready());
    CHECK_EQ(p2.part_limit(), size_t(1024));
    CHECK_EQ(p2.enqueue("CREEK.h.x", "h-2", big.data(), big.size()), uint64_t(20));
    drive(p2, [&] { return p2.acked_through() == 20; }, 10000);
    CHECK_EQ(p2.acked_through(), uint64_t(20));
    CHECK_EQ(cl.count("CREEK_h"), uint64_t(23));
}

// A message refused while later ones are in flight (here: too large for the
// stream's lowered max_msg_size) does not let them be stored ahead of it:
// with cfg.ordered_stream each names its predecessor, and JetStream refuses
// them too. Resent by a new publisher (the worker restarts), the stream holds
// every message once, in order.
TEST(ordered_stream_refused_message_stops_later_ones) {
    LimitedStream ls("CREEK_o", "CREEK.o.>");
    CHECK(ls.ok);
    if (!ls.ok) return;
    Client &cl = ls.cl;
    const PublisherConfig &c = ls.c;
    const int n = 50;
    auto payload = [](int i) { return i == 2 ? std::string(5000, 'L') : "small-" + std::to_string(i); };
    {
        Publisher p(c);
        CHECK(p.ensure_ready());
        p.enqueue("CREEK.o.x", "o-1", payload(1).data(), payload(1).size());
        drive(p, [&] { return p.acked_through() == 1; }, 5000);
        CHECK_EQ(p.acked_through(), uint64_t(1));
        // message 2 (sent whole: 5000 bytes) is now too large
        CHECK(make_stream(cl, "CREEK_o", "CREEK.o.>", 2048, true));
        for (int i = 2; i <= n; i++) {
            std::string d = payload(i);
            p.enqueue("CREEK.o.x", "o-" + std::to_string(i), d.data(), d.size());
        }
        drive(p, [&] { return p.too_large(); }, 5000);
        drive(p, [] { return false; }, 300);
        CHECK(p.too_large());
        std::printf("  (expected) %s\n", p.last_error().c_str());
        CHECK_EQ(p.acked_through(), uint64_t(1));
        CHECK_EQ(cl.count("CREEK_o"), uint64_t(1));   // none of 3..50 ahead of 2
    }
    Publisher p2(c);
    CHECK(p2.ensure_ready());
    for (int i = 1; i <= n; i++) {
        std::string d = payload(i);
        p2.enqueue("CREEK.o.x", "o-" + std::to_string(i), d.data(), d.size());
    }
    drive(p2, [&] { return p2.acked_through() == p2.last_position(); }, 10000);
    CHECK_EQ(p2.acked_through(), p2.last_position());
    std::vector<std::string> want = {"o-1"};
    for (int k = 1; k <= 5; k++) want.push_back("o-2:" + std::to_string(k) + "/5");
    for (int i = 3; i <= n; i++) want.push_back("o-" + std::to_string(i));
    std::vector<std::string> ids;
    cl.read_all("CREEK_o", "CREEK.o.>", want.size(), 20000, nullptr, &ids);
    CHECK(ids == want);
    if (ids != want)
        for (size_t k = 0; k < ids.size() && k < 12; k++) std::printf("  stored %zu: %s\n", k + 1, ids[k].c_str());
}

TEST_MAIN()
