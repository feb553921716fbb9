-- creek 0.6.0 -> 0.7.0: pg_stat_creek shows when the worker last had to
-- create its replication slot anew while tables were published (a failover
-- to a standby, pg_upgrade, a restore, a dropped or invalidated slot), and
-- where the new slot starts: the changes committed before it were not
-- published as changes.
\echo Use "ALTER EXTENSION creek UPDATE TO '0.7.0'" to load this file. \quit

DROP VIEW creek.pg_stat_creek;
DROP FUNCTION creek._stat();

CREATE FUNCTION creek._stat(
    OUT datid oid, OUT datname name, OUT pid integer, OUT state text,
    OUT nats_state text, OUT slot_name name, OUT last_decoded_lsn pg_lsn,
    OUT confirmed_lsn pg_lsn, OUT messages_published bigint,
    OUT bytes_published bigint, OUT messages_in_flight bigint,
    OUT last_error text, OUT last_error_at timestamptz, OUT started_at timestamptz,
    OUT last_acked_commit_at timestamptz, OUT stats_reset timestamptz,
    OUT spooled_transactions bigint, OUT spooled_bytes bigint,
    OUT slot_lost_at timestamptz, OUT slot_lost_lsn pg_lsn)
RETURNS SETOF record
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_stat';

CREATE VIEW creek.pg_stat_creek AS
SELECT s.datid, s.datname, s.pid, s.state, s.nats_state, s.slot_name,
       s.last_decoded_lsn, s.confirmed_lsn,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_lsn)::bigint
           AS lag_bytes,
       (CASE WHEN s.last_acked_commit_at IS NULL THEN NULL
             WHEN s.messages_in_flight = 0
                  AND s.last_decoded_lsn >= pg_catalog.pg_current_wal_flush_lsn() THEN 0
             ELSE extract(epoch FROM pg_catalog.now() - s.last_acked_commit_at)
        END)::float8 AS lag_seconds,
       r.wal_status,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn)::bigint
           AS retained_wal_bytes,
       s.messages_published, s.bytes_published, s.messages_in_flight,
       s.spooled_transactions, s.spooled_bytes,
       s.last_error, s.last_error_at, s.started_at, s.stats_reset,
       s.slot_lost_at, s.slot_lost_lsn
FROM creek._stat() s
LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name;
COMMENT ON VIEW creek.pg_stat_creek IS 'one row per database streaming worker';

REVOKE ALL ON creek.pg_stat_creek FROM PUBLIC;
REVOKE ALL ON FUNCTION creek._stat() FROM PUBLIC;
GRANT SELECT ON creek.pg_stat_creek TO creek_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION creek._stat() TO creek_admin, pg_monitor;
