// nats_config.hpp: the publisher configuration the creek.* settings describe,
// shared by the streaming worker and the snapshot workers. Reads settings
// variables and secret files only; throws std::runtime_error, never calls a
// Postgres function that can raise an error.
#pragma once

#include <cstdint>
#include <string>

#include "publisher.hpp"

// The content of a secret file without its trailing newline; "" for no file.
std::string creek_read_secret_file(const char *setting, const char *path);
// A hash of the secret files' contents (to notice a changed secret at reload).
uint64_t creek_secrets_hash();
// Connection, security, stream and flow settings (streams left empty).
creek::PublisherConfig creek_publisher_config(const std::string &connection_name);
// Makes exit() skip nats.c's and OpenSSL's own teardown: call once nats.c has
// been initialized (see nats_config.cpp).
void creek_exit_without_library_teardown(int code);
