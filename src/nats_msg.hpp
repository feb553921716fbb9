// nats_msg.hpp: building and freeing nats.c messages cheaply (plain C++, no
// Postgres). Used by the publisher for every message it sends and every
// JetStream answer it reads, and by bench/js_ceiling.cpp.
//
// nats.c's public API costs two things per message that a publisher sending
// tens of thousands of messages a second notices:
//  - natsMsgHeader_Set builds a hash map (several allocations) for one
//    header, which natsConnection_PublishMsg then walks to encode it;
//  - natsMsg_Destroy does not free the message: it queues it for nats.c's
//    garbage-collector thread (a mutex, a condition signal, and a free() on
//    another thread that contends for malloc's arena).
// nats.c 3.4 exports two internal functions that avoid both:
// natsMsg_create (a message from already encoded header bytes, sent as they
// are) and natsMsg_free. They are looked up at run time and used only after
// a probe shows they behave as expected; otherwise the public API is used.
#pragma once

#include <nats/nats.h>

#include <cstddef>
#include <string>

namespace creek {

// A message to subject with reply subject reply (may be null), the header
// Nats-Msg-Id: msg_id, the header Creek-Chunk: chunk when chunk is not empty,
// the header Nats-Expected-Last-Msg-Id: expect_last_id when it is not null,
// and data. scratch is a buffer reused between calls.
natsStatus make_nats_msg(natsMsg **out, const char *subject, const char *reply,
                         const std::string &msg_id, const std::string &chunk,
                         const char *data, size_t len, std::string &scratch,
                         const char *expect_last_id = nullptr);

// Frees m at once, on this thread (natsMsg_Destroy when that is not possible).
void free_nats_msg(natsMsg *m);

// Whether the fast paths are in use (both nats.c internals found and checked).
bool nats_msg_fast_create();
bool nats_msg_fast_free();

}  // namespace creek
