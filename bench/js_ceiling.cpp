// js_ceiling: the JetStream ceiling for creek's benchmark (bench/run.sh).
//
// One nats.c connection publishes N messages of a given size asynchronously
// (js_PublishMsgAsync, at most MaxPending unacknowledged, StallWait 50 ms,
// a per-message MaxWait and a Nats-Msg-Id, as creek's publisher does) to one
// subject of an existing stream, and waits for every acknowledgement. It prints
// one JSON line: messages per second from the first publish to the last ack.
//
//   g++ -O2 -std=c++17 -Isrc -o js_ceiling bench/js_ceiling.cpp src/nats_msg.cpp -lnats -ldl
//   js_ceiling --url nats://127.0.0.1:4222 --subject CEIL.x --size 115 --count 200000
//
// --mode eventloop publishes the way creek's publisher does (src/publisher*.cpp):
// the connection on an event loop of its own (epoll, natsOptions_SetEventLoop,
// SendAsap), plain publishes with a Nats-Msg-Id header and a reply subject,
// and JetStream's answers read from one synchronous subscription: no nats.c
// thread on the path of a message. Messages are built and freed with creek's
// src/nats_msg.cpp (encoded header bytes, freed on the publishing thread).
// The ceiling is the faster of the two modes.
//
// --rate R (eventloop only) paces it: every 5 ms (--tick-ms) it sends what is due at R
// messages per second. --ack-every K puts a reply subject on one message in K
// and on the last of each burst, as creek.ack_every does. The pgbench phase
// uses both to load nats-server with creek's messages, without creek.
// --expect-last (eventloop only) puts on every message but the first the
// header Nats-Expected-Last-Msg-Id naming the message before it, as creek
// does on its wal stream while that one is unanswered.
//
// The stream must exist (bench/bench.py creates it with the configuration of
// creek's own wal stream). Exit status 0 when every message was acknowledged;
// a lost connection ends the run at once (no reconnect), with status 1.
#include <nats/nats.h>
#include <sys/epoll.h>

#include "nats_msg.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct Counters {
    std::atomic<long> ok{0};
    std::atomic<long> dup{0};
    std::atomic<long> err{0};
    std::atomic<int> last_err{0};
};

void on_ack(jsCtx *, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    Counters *c = static_cast<Counters *>(closure);
    if (pa != nullptr) {
        c->ok++;
        if (pa->Duplicate) c->dup++;
    } else {
        c->err++;
        if (pae != nullptr) c->last_err = int(pae->Err);
    }
    natsMsg_Destroy(msg);  // the ack handler owns the message
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: js_ceiling --url URL --subject SUBJECT --size BYTES --count N\n"
                 "                  [--max-pending 4096] [--ack-timeout-ms 5000] [--id-prefix 0/1A2B3C4D]\n"
                 "                  [--mode async|eventloop]\n"
                 "                  [--rate MSGS_PER_S] [--ack-every K] [--tick-ms MS] [--expect-last 0|1]\n"
                 "                  (the last four: eventloop only)\n");
    std::exit(2);
}

// -- --mode eventloop ---------------------------------------------------
struct Loop {
    int ep = -1;
    int fd = -1;
    bool want_write = false;
};

void watch(Loop *l, int op) {
    epoll_event ev{};
    ev.events = uint32_t(EPOLLIN) | (l->want_write ? uint32_t(EPOLLOUT) : 0u);
    ev.data.fd = l->fd;
    epoll_ctl(l->ep, op, l->fd, &ev);
}
natsStatus ev_attach(void **user, void *loop, natsConnection *, natsSock sock) {
    Loop *l = static_cast<Loop *>(loop);
    *user = l;
    l->fd = int(sock);
    l->want_write = false;
    watch(l, EPOLL_CTL_ADD);
    return NATS_OK;
}
natsStatus ev_read(void *user, bool add) {
    Loop *l = static_cast<Loop *>(user);
    if (!add && l->fd >= 0) {
        epoll_ctl(l->ep, EPOLL_CTL_DEL, l->fd, nullptr);
        l->fd = -1;
    }
    return NATS_OK;
}
natsStatus ev_write(void *user, bool add) {
    Loop *l = static_cast<Loop *>(user);
    if (l->fd < 0 || l->want_write == add) return NATS_OK;
    l->want_write = add;
    watch(l, EPOLL_CTL_MOD);
    return NATS_OK;
}
natsStatus ev_detach(void *user) { return ev_read(user, false); }

int run_eventloop(const std::string &url, const std::string &subject, const std::vector<char> &payload,
                  long size, long count, long max_pending, const std::string &id_prefix, double rate,
                  long ack_every, double tick_s, bool expect_last) {
    Loop loop;
    loop.ep = epoll_create1(EPOLL_CLOEXEC);
    natsOptions *opts = nullptr;
    natsConnection *nc = nullptr;
    natsSubscription *sub = nullptr;
    natsInbox *inbox = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
    if (s == NATS_OK) s = natsOptions_SetName(opts, "creek-bench-js-ceiling");
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 5000);
    if (s == NATS_OK) s = natsOptions_SetEventLoop(opts, &loop, ev_attach, ev_read, ev_write, ev_detach);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK) s = natsOptions_SetIOBufSize(opts, 256 * 1024);
    // a lost connection ends the run (no reconnect buffer to fill, no loop on a dead socket)
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, false);
    if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK) s = natsInbox_Create(&inbox);
    std::string prefix = std::string(inbox ? inbox : "") + ".";
    if (s == NATS_OK) s = natsConnection_SubscribeSync(&sub, nc, (prefix + "*").c_str());
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
    if (s != NATS_OK) {
        std::fprintf(stderr, "js_ceiling: cannot connect to %s: %s\n", url.c_str(), natsStatus_GetText(s));
        return 1;
    }
    // answered, ok, dup, err count answers (one per message sent with a reply);
    // done: messages up to the last one answered, for the in-flight window.
    long sent = 0, replies = 0, answered = 0, done = 0, ok = 0, dup = 0, err = 0;
    char reply[160];
    std::string id, prev_id, scratch;
    const double t0 = now_s();
    const double give_up = t0 + 600;  // bounded: never more than 10 minutes
    while ((sent < count || answered < replies) && now_s() < give_up && !natsConnection_IsClosed(nc)) {
        // --rate: what is due by now, sent in one go every --tick-ms (default 5, creek's batch_delay)
        const double tick = tick_s * std::floor((now_s() - t0) / tick_s);
        const long due = rate > 0 ? std::min(count, long(tick * rate)) : count;
        while (sent < due && sent - done < max_pending) {
            id = id_prefix + "/" + std::to_string(sent);
            // --ack-every: a reply on one message in K and on the last one of each burst
            const bool with_reply = ack_every <= 1 || (sent + 1) % ack_every == 0 || sent + 1 == due;
            std::snprintf(reply, sizeof reply, "%s%ld", prefix.c_str(), sent);
            natsMsg *m = nullptr;
            s = creek::make_nats_msg(&m, subject.c_str(), with_reply ? reply : nullptr, id, std::string(),
                                     payload.data(), size, scratch,
                                     expect_last && sent > 0 ? prev_id.c_str() : nullptr);
            prev_id.swap(id);
            if (s == NATS_OK) s = natsConnection_PublishMsg(nc, m);
            creek::free_nats_msg(m);
            if (s != NATS_OK) {
                std::fprintf(stderr, "js_ceiling: publish: %s\n", natsStatus_GetText(s));
                return 1;
            }
            sent++;
            if (with_reply) replies++;
        }
        epoll_event evs[2];
        int n = epoll_wait(loop.ep, evs, 2, rate > 0 && sent < count ? std::max(1, int(tick_s * 1000)) : 100);
        for (int i = 0; i < n; i++) {
            if (evs[i].events & EPOLLOUT) natsConnection_ProcessWriteEvent(nc);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) natsConnection_ProcessReadEvent(nc);
        }
        for (;;) {
            natsMsg *m = nullptr;
            s = natsSubscription_NextMsg(&m, sub, 0);
            if (s == NATS_TIMEOUT) break;
            if (s != NATS_OK) {  // the connection is closed: the outer loop ends too
                err++;
                break;
            }
            answered++;
            const char *subj = natsMsg_GetSubject(m);
            if (subj != nullptr && std::strncmp(subj, prefix.c_str(), prefix.size()) == 0)
                done = std::max(done, std::atol(subj + prefix.size()) + 1);
            const char *d = natsMsg_GetData(m);
            if (d == nullptr || std::strstr(d, "\"error\"") != nullptr) err++;
            else {
                ok++;
                if (std::strstr(d, "\"duplicate\"") != nullptr) dup++;
            }
            creek::free_nats_msg(m);
        }
    }
    const double dt = now_s() - t0;
    // with --ack-every, one answer stands for the messages since the previous one
    const bool complete = sent == count && answered == replies && ok == replies && err == 0;
    const long stored = complete ? count : (ack_every <= 1 ? ok : 0);
    std::printf("{\"mode\": \"eventloop\", \"count\": %ld, \"size\": %ld, \"max_pending\": %ld, "
                "\"rate\": %.1f, \"ack_every\": %ld, \"answers\": %ld, "
                "\"seconds\": %.6f, \"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"acked\": %ld, "
                "\"duplicates\": %ld, \"errors\": %ld, \"stalls\": 0, \"complete\": \"%s\"}\n",
                count, size, max_pending, rate, ack_every, answered, dt, stored / dt,
                double(stored) * double(size) / dt / 1e6, stored, dup, err, complete ? "OK" : "incomplete");
    std::fflush(stdout);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_CloseAndWait(5000);
    return complete ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
    std::string url = "nats://127.0.0.1:4222", subject, id_prefix = "0/1A2B3C4D", mode = "async";
    long size = -1, count = -1, max_pending = 4096, ack_timeout_ms = 5000, ack_every = 1;
    double rate = 0, tick_ms = 5;
    bool expect_last = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (a == "--url") url = v;
        else if (a == "--subject") subject = v;
        else if (a == "--size") size = std::atol(v);
        else if (a == "--count") count = std::atol(v);
        else if (a == "--max-pending") max_pending = std::atol(v);
        else if (a == "--ack-timeout-ms") ack_timeout_ms = std::atol(v);
        else if (a == "--id-prefix") id_prefix = v;
        else if (a == "--mode") mode = v;
        else if (a == "--rate") rate = std::atof(v);
        else if (a == "--ack-every") ack_every = std::atol(v);
        else if (a == "--tick-ms") tick_ms = std::atof(v);
        else if (a == "--expect-last") expect_last = std::atol(v) != 0;
        else usage();
    }
    if (subject.empty() || size < 0 || count <= 0 || max_pending <= 0) usage();
    if (mode != "async" && mode != "eventloop") usage();
    if ((rate > 0 || ack_every > 1 || expect_last) && mode != "eventloop") usage();
    if (tick_ms < 1) usage();

    std::vector<char> payload(size_t(size) + 1);
    std::mt19937 rng(42);
    for (auto &b : payload) b = char(rng());
    payload[0] = char(0xC3);  // looks like a single-object payload; JetStream does not care
    if (size > 1) payload[1] = 0x01;
    if (mode == "eventloop") return run_eventloop(url, subject, payload, size, count, max_pending, id_prefix, rate,
                                                       ack_every, tick_ms / 1000.0, expect_last);

    natsOptions *opts = nullptr;
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    Counters c;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
    if (s == NATS_OK) s = natsOptions_SetName(opts, "creek-bench-js-ceiling");
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 5000);
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, false);  // a lost connection ends the run
    if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
    if (s != NATS_OK) {
        std::fprintf(stderr, "js_ceiling: cannot connect to %s: %s\n", url.c_str(), natsStatus_GetText(s));
        return 1;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = max_pending;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = &c;
    jo.PublishAsync.StallWait = 50;
    s = natsConnection_JetStream(&js, nc, &jo);
    if (s != NATS_OK) {
        std::fprintf(stderr, "js_ceiling: no JetStream context: %s\n", natsStatus_GetText(s));
        return 1;
    }

    char id[96];
    long stalls = 0, local_errors = 0;
    const double t0 = now_s();
    const double give_up = t0 + 600;  // bounded: never more than 10 minutes
    for (long i = 0; i < count && !natsConnection_IsClosed(nc); i++) {
        natsMsg *m = nullptr;
        s = natsMsg_Create(&m, subject.c_str(), nullptr, payload.data(), int(size));
        if (s != NATS_OK) {
            std::fprintf(stderr, "js_ceiling: natsMsg_Create: %s\n", natsStatus_GetText(s));
            return 1;
        }
        std::snprintf(id, sizeof id, "%s/%ld", id_prefix.c_str(), i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        po.MaxWait = ack_timeout_ms;
        for (;;) {
            s = js_PublishMsgAsync(js, &m, &po);
            if (s == NATS_OK) break;           // m now belongs to the library
            if (s == NATS_TIMEOUT) {            // stalled on a full window: try again
                stalls++;
                if (now_s() > give_up || natsConnection_IsClosed(nc)) break;
                continue;
            }
            break;
        }
        if (s != NATS_OK) {
            local_errors++;
            natsMsg_Destroy(m);
            if (now_s() > give_up) break;
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 120000;
    natsStatus cs = natsConnection_IsClosed(nc) ? NATS_CONNECTION_CLOSED : js_PublishAsyncComplete(js, &po);
    const double t1 = now_s();
    const double dt = t1 - t0;
    long ok = c.ok.load(), err = c.err.load() + local_errors;
    std::printf("{\"mode\": \"async\", \"count\": %ld, \"size\": %ld, \"max_pending\": %ld, \"seconds\": %.6f, "
                "\"msgs_per_s\": %.1f, \"mb_per_s\": %.3f, \"acked\": %ld, \"duplicates\": %ld, "
                "\"errors\": %ld, \"stalls\": %ld, \"complete\": \"%s\"}\n",
                count, size, max_pending, dt, ok / dt, double(ok) * double(size) / dt / 1e6, ok,
                c.dup.load(), err, stalls, natsStatus_GetText(cs));
    std::fflush(stdout);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_CloseAndWait(5000);
    return (ok == count && err == 0 && cs == NATS_OK) ? 0 : 1;
}
