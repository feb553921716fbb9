// nats_config.cpp: the publisher configuration of the creek.* settings.
#include "nats_config.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <unistd.h>

#include "settings.hpp"

std::string creek_read_secret_file(const char *setting, const char *path)
{
    if (path == nullptr || path[0] == '\0')
        return std::string();
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error(std::string("could not read ") + setting + " \"" + path +
                                 "\": " + std::strerror(errno));
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    return s;
}

uint64_t creek_secrets_hash()
{
    std::string all;
    try {
        all = creek_read_secret_file("creek.nats_password_file", creek_nats_password) + "\x01" +
              creek_read_secret_file("creek.nats_token_file", creek_nats_token);
    } catch (...) {
        all = "unreadable";
    }
    return std::hash<std::string>()(all);
}

creek::PublisherConfig creek_publisher_config(const std::string &connection_name)
{
    creek::PublisherConfig cfg;
    cfg.urls = creek_nats_url;
    cfg.connection_name = connection_name;
    cfg.stream_settings.file_storage = creek_stream_storage == 0;
    cfg.stream_settings.replicas = creek_stream_replicas;
    cfg.stream_settings.max_age_ms = int64_t(creek_stream_max_age_s) * 1000;
    cfg.stream_settings.duplicate_window_ms = int64_t(creek_stream_duplicate_window_s) * 1000;
    if (creek_stream_max_bytes_mb > 0)
        cfg.stream_settings.max_bytes = int64_t(creek_stream_max_bytes_mb) * 1024 * 1024;
    cfg.security.user = creek_nats_user;
    cfg.security.password = creek_read_secret_file("creek.nats_password_file", creek_nats_password);
    cfg.security.token = creek_read_secret_file("creek.nats_token_file", creek_nats_token);
    cfg.security.creds_file = creek_nats_creds_file;
    cfg.security.nkey = creek_nats_nkey;
    cfg.security.nkey_seed_file = creek_nats_nkey_seed_file;
    cfg.security.tls = creek_nats_tls;
    cfg.security.tls_ca_file = creek_nats_tls_ca_file;
    cfg.security.tls_cert_file = creek_nats_tls_cert_file;
    cfg.security.tls_key_file = creek_nats_tls_key_file;
    cfg.security.tls_verify = creek_nats_tls_verify;
    cfg.max_in_flight = creek_max_in_flight;
    cfg.ack_every = creek_ack_every;
    cfg.connect_timeout_ms = creek_nats_connect_timeout_ms;
    cfg.reconnect_wait_max_ms = creek_nats_reconnect_wait_ms;
    cfg.ack_timeout_ms = creek_ack_timeout_ms;
    return cfg;
}

// Registered after nats.c (and, through it, OpenSSL) registered their own
// exit handlers, so it runs before them: by then Postgres has finished its
// cleanup (proc_exit runs every callback before exit()), and tearing those
// libraries down in a process that is ending only risks a crash (OpenSSL's
// cleanup crashes after a TLS connection of nats.c).
static int exit_code = 1;
static void exit_now() { _exit(exit_code); }

void creek_exit_without_library_teardown(int code)
{
    static bool registered = false;
    exit_code = code;
    if (!registered) {
        atexit(exit_now);
        registered = true;
    }
}
