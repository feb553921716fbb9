// js_ceiling: the JetStream ceiling for creek's benchmark (bench/run.sh).
//
// One nats.c connection publishes N messages of a given size asynchronously
// (js_PublishMsgAsync, at most MaxPending unacknowledged, StallWait 50 ms,
// a per-message MaxWait and a Nats-Msg-Id, as creek's publisher does) to one
// subject of an existing stream, and waits for every acknowledgement. It prints
// one JSON line: messages per second from the first publish to the last ack.
//
//   g++ -O2 -std=c++17 -o js_ceiling bench/js_ceiling.cpp -lnats
//   js_ceiling --url nats://127.0.0.1:4222 --subject CEIL.x --size 115 --count 200000
//
// The stream must exist (bench/bench.py creates it with the configuration of
// creek's own wal stream). Exit status 0 when every message was acknowledged.
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
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
                 "                  [--max-pending 4096] [--ack-timeout-ms 5000] [--id-prefix 0/1A2B3C4D]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
    std::string url = "nats://127.0.0.1:4222", subject, id_prefix = "0/1A2B3C4D";
    long size = -1, count = -1, max_pending = 4096, ack_timeout_ms = 5000;
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
        else usage();
    }
    if (subject.empty() || size < 0 || count <= 0 || max_pending <= 0) usage();

    std::vector<char> payload(size_t(size) + 1);
    std::mt19937 rng(42);
    for (auto &b : payload) b = char(rng());
    payload[0] = char(0xC3);  // looks like a single-object payload; JetStream does not care
    if (size > 1) payload[1] = 0x01;

    natsOptions *opts = nullptr;
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    Counters c;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
    if (s == NATS_OK) s = natsOptions_SetName(opts, "creek-bench-js-ceiling");
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 5000);
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
    for (long i = 0; i < count; i++) {
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
                if (now_s() > give_up) break;
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
    natsStatus cs = js_PublishAsyncComplete(js, &po);
    const double t1 = now_s();
    const double dt = t1 - t0;
    long ok = c.ok.load(), err = c.err.load() + local_errors;
    std::printf("{\"count\": %ld, \"size\": %ld, \"max_pending\": %ld, \"seconds\": %.6f, "
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
