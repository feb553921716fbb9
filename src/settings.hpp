// settings.hpp: creek.* configuration parameters (GUCs).
#pragma once

extern "C" {
extern char *creek_nats_url;
extern char *creek_namespace;
extern char *creek_producer_name;
extern int creek_max_in_flight;
extern int creek_ack_every;
extern int creek_ack_timeout_ms;
extern char *creek_nats_user;
extern char *creek_nats_password;   // creek.nats_password_file: a path
extern char *creek_nats_token;      // creek.nats_token_file: a path
extern char *creek_nats_creds_file;
extern char *creek_nats_nkey;
extern char *creek_nats_nkey_seed_file;
extern bool creek_nats_tls;
extern char *creek_nats_tls_ca_file;
extern char *creek_nats_tls_cert_file;
extern char *creek_nats_tls_key_file;
extern bool creek_nats_tls_verify;
extern int creek_max_databases;
extern int creek_max_tables;
extern int creek_stream_storage;      // 0 file, 1 memory
extern int creek_stream_replicas;
extern int creek_stream_max_age_s;    // 0: unlimited
extern int creek_stream_duplicate_window_s;
extern int creek_stream_max_bytes_mb;
extern int creek_nats_connect_timeout_ms;
extern int creek_nats_reconnect_wait_ms;
extern int creek_max_snapshots;
extern bool creek_snapshot_service;
extern bool creek_ordered_publish;
extern bool creek_publish_partition_ddl;
extern int creek_batch_delay_ms;
extern bool creek_snapshot_on_slot_loss;
}

#define CREEK_MAX_SNAPSHOTS_RUNNING 32

// Defines every creek.* setting; called from _PG_init.
void creek_define_settings();
