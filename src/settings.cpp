// settings.cpp: defines the creek.* configuration parameters.
#include "pg.hpp"
#include "settings.hpp"

extern "C" {
char *creek_nats_url = nullptr;
char *creek_namespace = nullptr;
char *creek_producer_name = nullptr;
int creek_max_in_flight = 4096;
int creek_ack_every = 32;
int creek_ack_timeout_ms = 5000;
char *creek_nats_user = nullptr;
char *creek_nats_password = nullptr;
char *creek_nats_token = nullptr;
char *creek_nats_creds_file = nullptr;
char *creek_nats_nkey = nullptr;
char *creek_nats_nkey_seed_file = nullptr;
bool creek_nats_tls = false;
char *creek_nats_tls_ca_file = nullptr;
char *creek_nats_tls_cert_file = nullptr;
char *creek_nats_tls_key_file = nullptr;
bool creek_nats_tls_verify = true;
int creek_max_databases = 16;
int creek_max_tables = 1024;
int creek_stream_storage = 0;
int creek_stream_replicas = 1;
int creek_stream_max_age_s = 0;
int creek_stream_duplicate_window_s = 120;
int creek_stream_max_bytes_mb = -1;
int creek_nats_connect_timeout_ms = 2000;
int creek_nats_reconnect_wait_ms = 2000;
int creek_max_snapshots = 2;
bool creek_snapshot_service = true;
bool creek_ordered_publish = true;
bool creek_publish_partition_ddl = true;
int creek_batch_delay_ms = 5;
bool creek_snapshot_on_slot_loss = true;
}

static const struct config_enum_entry storage_options[] = {
    {"file", 0, false},
    {"memory", 1, false},
    {nullptr, 0, false},
};

// A NATS subject token may not hold '.', '*', '>', white space or be empty.
static bool check_namespace(char **newval, void **extra, GucSource source)
{
    const char *s = *newval;
    if (s == nullptr || *s == '\0') {
        GUC_check_errdetail("creek.namespace must not be empty.");
        return false;
    }
    for (const char *p = s; *p; p++) {
        unsigned char c = static_cast<unsigned char>(*p);
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok) {
            GUC_check_errdetail("creek.namespace may hold only letters, digits, \"_\" and \"-\".");
            return false;
        }
    }
    return true;
}

static bool check_nats_url(char **newval, void **extra, GucSource source)
{
    const char *s = *newval;
    if (s == nullptr || *s == '\0') {
        GUC_check_errdetail("creek.nats_url must name at least one NATS server.");
        return false;
    }
    // each comma-separated URL: [scheme://]host[:port], no credentials
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        char one[1024];
        if (len >= sizeof one) {
            GUC_check_errdetail("A NATS URL in creek.nats_url is too long.");
            return false;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        char *u = one;
        while (*u == ' ')
            u++;
        char *sep = strstr(u, "://");
        if (*u == '\0') {
            GUC_check_errdetail("creek.nats_url has an empty entry.");
            return false;
        }
        if (sep != nullptr) {
            *sep = '\0';
            if (strcmp(u, "nats") != 0 && strcmp(u, "tls") != 0 && strcmp(u, "ws") != 0 &&
                strcmp(u, "wss") != 0) {
                GUC_check_errdetail("\"%s\" is not a NATS URL scheme (nats, tls, ws, wss).", u);
                return false;
            }
            u = sep + 3;
            if (*u == '\0' || *u == ':' || *u == '/') {
                GUC_check_errdetail("creek.nats_url has an entry with no host.");
                return false;
            }
        }
        if (strchr(u, '@') != nullptr) {
            GUC_check_errdetail("creek.nats_url must not hold credentials: Postgres logs settings.");
            GUC_check_errhint("Use creek.nats_user with creek.nats_password_file, or creek.nats_token_file.");
            return false;
        }
        if (!end)
            break;
        p = end + 1;
        if (*p == '\0') {  // a trailing comma
            GUC_check_errdetail("creek.nats_url has an empty entry.");
            return false;
        }
    }
    return true;
}

// File settings name absolute paths (the worker does not run in the
// directory a session does). Readability is checked when connecting.
static bool check_file_path(char **newval, void **extra, GucSource source)
{
    const char *s = *newval;
    if (s != nullptr && s[0] != '\0' && s[0] != '/') {
        GUC_check_errdetail("The file must be given by an absolute path.");
        return false;
    }
    return true;
}

void creek_define_settings()
{
    DefineCustomStringVariable(
        "creek.nats_url", "NATS servers to publish to (comma-separated URLs).", nullptr,
        &creek_nats_url, "nats://127.0.0.1:4222", PGC_SIGHUP, 0, check_nats_url, nullptr, nullptr);
    DefineCustomStringVariable(
        "creek.namespace", "First token of every subject and prefix of every stream name.",
        nullptr, &creek_namespace, "CREEK", PGC_SIGHUP, 0, check_namespace, nullptr, nullptr);
    DefineCustomStringVariable(
        "creek.producer_name", "Producer name written in every message's source.name.", nullptr,
        &creek_producer_name, "creek", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.max_in_flight", "Messages sent to JetStream and not yet acknowledged, at most.",
        nullptr, &creek_max_in_flight, 4096, 1, 1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.ack_every", "Ask JetStream to acknowledge one message in this many.",
        "The messages between are confirmed by the stream sequence of the next acknowledgement, "
        "and sent again with an acknowledgement each when it does not add up. 1: every message.",
        &creek_ack_every, 32, 1, 4096, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.ack_timeout", "How long to wait for a JetStream acknowledgement before resending.",
        nullptr, &creek_ack_timeout_ms, 5000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr,
        nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.max_databases", "Databases that can stream at once (shared memory slots).",
        nullptr, &creek_max_databases, 16, 1, 1024, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.stream_max_bytes", "Maximum size of each stream creek creates (-1: no limit).",
        nullptr, &creek_stream_max_bytes_mb, -1, -1, INT_MAX, PGC_SIGHUP, GUC_UNIT_MB, nullptr,
        nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.nats_connect_timeout", "How long one attempt to connect to NATS may take.", nullptr,
        &creek_nats_connect_timeout_ms, 2000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "creek.nats_reconnect_wait", "Longest wait between two attempts to reach NATS.",
        "After a connection is lost, attempts start 250 ms apart and back off to this.",
        &creek_nats_reconnect_wait_ms, 2000, 10, 600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "creek.batch_delay", "How long the worker lets commits gather before it decodes them.",
        "A commit wakes the worker, which waits this long and then decodes and publishes every "
        "transaction committed meanwhile in one batch; 0 decodes each commit at once.",
        &creek_batch_delay_ms, 5, 0, 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.max_snapshots", "Snapshots that run at once; further ones wait their turn.",
        "Each running snapshot is a background worker (max_worker_processes).",
        &creek_max_snapshots, 2, 1, CREEK_MAX_SNAPSHOTS_RUNNING, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "creek.snapshot_service", "Serve snapshot requests on NATS (NS._snapshot).",
        "A snapshot sends a whole published table to whoever can read the snapshot stream.",
        &creek_snapshot_service, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "creek.snapshot_on_slot_loss",
        "Take a snapshot of every published table when creek's replication slot was lost.",
        "A slot goes missing after a failover to a standby, pg_upgrade or pg_drop_replication_slot(), "
        "or is invalidated by max_slot_wal_keep_size: the changes committed before the new slot "
        "exists are not published, and a snapshot lets consumers catch up.",
        &creek_snapshot_on_slot_loss, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "creek.ordered_publish", "Keep row changes in order in JetStream whatever fails.",
        "A row change sent while the one before it is unanswered names that one in the header "
        "Nats-Expected-Last-Msg-Id, and JetStream refuses it unless that one is stored. Turn off "
        "only if other clients publish into creek's wal stream.",
        &creek_ordered_publish, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "creek.publish_partition_ddl",
        "Publish the rows that partition DDL takes out of or brings into a published partitioned table.",
        "TRUNCATE, DROP TABLE and DETACH PARTITION of a partition publish a 'd' for each of its rows, "
        "ATTACH PARTITION a 'c'. Off: these rows leave or enter without a message.",
        &creek_publish_partition_ddl, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.max_tables", "Published tables whose statistics are kept (shared memory).",
        nullptr, &creek_max_tables, 1024, 16, 1000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomEnumVariable(
        "creek.stream_storage", "Storage of the JetStream streams creek creates.", nullptr,
        &creek_stream_storage, 0, storage_options, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.stream_replicas", "Replicas of the JetStream streams creek creates.", nullptr,
        &creek_stream_replicas, 1, 1, 5, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "creek.stream_max_age", "Maximum age of messages in the streams creek creates (0: no limit).",
        nullptr, &creek_stream_max_age_s, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "creek.stream_duplicate_window", "Duplicate window of the streams creek creates.", nullptr,
        &creek_stream_duplicate_window_s, 120, 1, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
        nullptr);
    // Credentials. Secrets live in files named here: Postgres logs every
    // setting changed by a reload with its value, so a secret must never be
    // a setting's value. Only superusers can read these settings.
    struct { const char *name, *desc; char **var; int flags; GucStringCheckHook check; } strs[] = {
        {"creek.nats_user", "User name for NATS.", &creek_nats_user, 0, nullptr},
        {"creek.nats_password_file", "File holding the NATS password.", &creek_nats_password,
         GUC_SUPERUSER_ONLY, check_file_path},
        {"creek.nats_token_file", "File holding the NATS authentication token.", &creek_nats_token,
         GUC_SUPERUSER_ONLY, check_file_path},
        {"creek.nats_creds_file", "NATS .creds file (user JWT and NKey seed).", &creek_nats_creds_file,
         GUC_SUPERUSER_ONLY, check_file_path},
        {"creek.nats_nkey", "Public NKey for NATS (with creek.nats_nkey_seed_file).", &creek_nats_nkey, 0, nullptr},
        {"creek.nats_nkey_seed_file", "File holding the NKey seed.", &creek_nats_nkey_seed_file,
         GUC_SUPERUSER_ONLY, check_file_path},
        {"creek.nats_tls_ca_file", "CA certificates to verify the NATS server.", &creek_nats_tls_ca_file, 0, check_file_path},
        {"creek.nats_tls_cert_file", "Client certificate for NATS (TLS).", &creek_nats_tls_cert_file, 0, check_file_path},
        {"creek.nats_tls_key_file", "Client certificate key for NATS (TLS).", &creek_nats_tls_key_file,
         GUC_SUPERUSER_ONLY, check_file_path},
    };
    for (auto &g : strs)
        DefineCustomStringVariable(g.name, g.desc, nullptr, g.var, "", PGC_SIGHUP, g.flags, g.check,
                                   nullptr, nullptr);
    DefineCustomBoolVariable("creek.nats_tls", "Require TLS to NATS.", nullptr, &creek_nats_tls, false,
                             PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable("creek.nats_tls_verify", "Verify the NATS server's certificate.", nullptr,
                             &creek_nats_tls_verify, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("creek");
}
