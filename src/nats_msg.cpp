// nats_msg.cpp: see nats_msg.hpp.
#include "nats_msg.hpp"

#include <dlfcn.h>

#include <cstring>
#include <mutex>

namespace creek {
namespace {

// nats.c 3.4 src/msg.c: natsMsg_create(msg, subject, subjLen, reply,
// replyLen, buf, bufLen, hdrLen): buf holds hdrLen bytes of encoded headers
// followed by the payload.
using CreateFn = natsStatus (*)(natsMsg **, const char *, int, const char *, int,
                                const char *, int, int);
using FreeFn = void (*)(void *);

// Every natsMsg starts with nats.c's garbage-collection item (src/gc.h):
// natsMsg_Destroy hands the message to the collector thread when freeCb is
// set, and frees it itself when it is not.
struct GcItem {
    void *next;
    FreeFn free_cb;
};

CreateFn g_create = nullptr;
FreeFn g_free = nullptr;
bool g_create_ok = false;
bool g_free_ok = false;
std::once_flag g_once;

const char kHdrLine[] = "NATS/1.0\r\n";

void append_headers(std::string &out, const std::string &id, const std::string &chunk,
                    const char *expect_last_id) {
    out.append(kHdrLine, sizeof kHdrLine - 1);
    if (!id.empty()) {
        out.append("Nats-Msg-Id: ");
        out.append(id);
        out.append("\r\n");
    }
    if (expect_last_id != nullptr) {
        out.append("Nats-Expected-Last-Msg-Id: ");
        out.append(expect_last_id);
        out.append("\r\n");
    }
    if (!chunk.empty()) {
        out.append("Creek-Chunk: ");
        out.append(chunk);
        out.append("\r\n");
    }
    out.append("\r\n");
}

// A message built by natsMsg_create must read back, through the public
// API, exactly like one built with natsMsg_Create and natsMsgHeader_Set.
bool probe_create() {
    const char data[] = "probe-data";
    std::string buf;
    append_headers(buf, "probe/1", "2/3", "probe/0");
    int hdr_len = int(buf.size());
    buf.append(data, sizeof data - 1);
    natsMsg *m = nullptr;
    if (g_create(&m, "probe.subject", 13, "probe.reply", 11, buf.data(), int(buf.size()), hdr_len) != NATS_OK ||
        m == nullptr)
        return false;
    const char *id = nullptr, *chunk = nullptr, *last = nullptr;
    bool ok = std::strcmp(natsMsg_GetSubject(m), "probe.subject") == 0 &&
              natsMsg_GetReply(m) != nullptr && std::strcmp(natsMsg_GetReply(m), "probe.reply") == 0 &&
              natsMsg_GetDataLength(m) == int(sizeof data - 1) &&
              std::memcmp(natsMsg_GetData(m), data, sizeof data - 1) == 0 &&
              natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr &&
              std::strcmp(id, "probe/1") == 0 &&
              natsMsgHeader_Get(m, "Creek-Chunk", &chunk) == NATS_OK && chunk != nullptr &&
              std::strcmp(chunk, "2/3") == 0 &&
              natsMsgHeader_Get(m, "Nats-Expected-Last-Msg-Id", &last) == NATS_OK && last != nullptr &&
              std::strcmp(last, "probe/0") == 0;
    natsMsg_Destroy(m);
    return ok;
}

// The internals are looked up in the very library that provides
// natsMsg_Create, whatever other objects the process has loaded.
void init() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(&natsMsg_Create), &info) == 0 || info.dli_fname == nullptr) return;
    void *lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (lib == nullptr) return;
    g_create = reinterpret_cast<CreateFn>(dlsym(lib, "natsMsg_create"));
    g_free = reinterpret_cast<FreeFn>(dlsym(lib, "natsMsg_free"));
    dlclose(lib);   // RTLD_NOLOAD took a reference on a library that stays loaded
    g_create_ok = g_create != nullptr && probe_create();
    natsMsg *m = nullptr;
    if (g_free != nullptr && natsMsg_Create(&m, "probe", nullptr, "x", 1) == NATS_OK && m != nullptr) {
        g_free_ok = reinterpret_cast<GcItem *>(m)->free_cb == g_free;
        natsMsg_Destroy(m);
    }
}

}  // namespace

natsStatus make_nats_msg(natsMsg **out, const char *subject, const char *reply,
                         const std::string &msg_id, const std::string &chunk,
                         const char *data, size_t len, std::string &scratch,
                         const char *expect_last_id) {
    std::call_once(g_once, init);
    *out = nullptr;
    if (!g_create_ok) {
        natsStatus s = natsMsg_Create(out, subject, reply, data, int(len));
        if (s == NATS_OK && !msg_id.empty()) s = natsMsgHeader_Set(*out, "Nats-Msg-Id", msg_id.c_str());
        if (s == NATS_OK && !chunk.empty()) s = natsMsgHeader_Set(*out, "Creek-Chunk", chunk.c_str());
        if (s == NATS_OK && expect_last_id != nullptr)
            s = natsMsgHeader_Set(*out, "Nats-Expected-Last-Msg-Id", expect_last_id);
        if (s != NATS_OK && *out != nullptr) {
            natsMsg_Destroy(*out);
            *out = nullptr;
        }
        return s;
    }
    if (subject == nullptr || subject[0] == '\0' || (reply != nullptr && reply[0] == '\0'))
        return NATS_INVALID_ARG;
    scratch.clear();
    append_headers(scratch, msg_id, chunk, expect_last_id);
    int hdr_len = int(scratch.size());
    scratch.append(data, len);
    return g_create(out, subject, int(std::strlen(subject)), reply, reply ? int(std::strlen(reply)) : 0,
                    scratch.data(), int(scratch.size()), hdr_len);
}

void free_nats_msg(natsMsg *m) {
    if (m == nullptr) return;
    std::call_once(g_once, init);
    // Only a message whose collector callback is nats.c's own natsMsg_free
    // (the layout checked by the comparison itself) is detached from the
    // collector: natsMsg_Destroy then frees it here.
    GcItem *gc = reinterpret_cast<GcItem *>(m);
    if (g_free_ok && gc->free_cb == g_free) gc->free_cb = nullptr;
    natsMsg_Destroy(m);
}

bool nats_msg_fast_create() {
    std::call_once(g_once, init);
    return g_create_ok;
}

bool nats_msg_fast_free() {
    std::call_once(g_once, init);
    return g_free_ok;
}

}  // namespace creek
