-- creek 0.1.0: install script
\echo Use "CREATE EXTENSION creek" to load this file. \quit

-- The tables whose changes are published. A user catalog table, so that the
-- streaming worker reads it with the historic snapshot of each decoded
-- transaction: membership follows the WAL exactly, in commit order.
CREATE TABLE creek.tables (
    relid    regclass    PRIMARY KEY,
    added_at timestamptz NOT NULL DEFAULT now()
) WITH (user_catalog_table = true);
SELECT pg_catalog.pg_extension_config_dump('creek.tables', '');

-- Every Avro writer schema ever used, so that NS._schemas can serve it after a
-- restart.
CREATE TABLE creek.schemas (
    fingerprint text        NOT NULL,
    source      text        NOT NULL,
    schema_json text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, source)
);
SELECT pg_catalog.pg_extension_config_dump('creek.schemas', '');

CREATE FUNCTION creek.add_table(tbl regclass) RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_add_table';
COMMENT ON FUNCTION creek.add_table(regclass) IS 'publish the committed changes of a table on NATS';

CREATE FUNCTION creek.remove_table(tbl regclass) RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_remove_table';
COMMENT ON FUNCTION creek.remove_table(regclass) IS 'stop publishing the changes of a table';

CREATE FUNCTION creek._stat(
    OUT datid oid, OUT datname name, OUT pid integer, OUT state text,
    OUT nats_state text, OUT slot_name name, OUT last_decoded_lsn pg_lsn,
    OUT confirmed_lsn pg_lsn, OUT messages_published bigint,
    OUT bytes_published bigint, OUT messages_in_flight bigint,
    OUT last_error text, OUT last_error_at timestamptz, OUT started_at timestamptz,
    OUT last_acked_commit_at timestamptz, OUT stats_reset timestamptz)
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
       s.last_error, s.last_error_at, s.started_at, s.stats_reset
FROM creek._stat() s
LEFT JOIN pg_catalog.pg_replication_slots r ON r.slot_name = s.slot_name;
COMMENT ON VIEW creek.pg_stat_creek IS 'one row per database streaming worker';

CREATE FUNCTION creek._stat_tables(
    OUT datid oid, OUT datname name, OUT relid oid, OUT schemaname name, OUT relname name,
    OUT inserts bigint, OUT updates bigint, OUT deletes bigint, OUT truncates bigint,
    OUT bytes bigint, OUT last_lsn pg_lsn, OUT last_change_at timestamptz,
    OUT fingerprint text)
RETURNS SETOF record
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_stat_tables';

CREATE VIEW creek.pg_stat_creek_tables AS SELECT * FROM creek._stat_tables();
COMMENT ON VIEW creek.pg_stat_creek_tables IS 'one row per published table with its message counters';

CREATE FUNCTION creek.reset_stats() RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_reset_stats';
COMMENT ON FUNCTION creek.reset_stats() IS 'zeroes the counters of this database in creek''s views';

-- Asks the launcher to start this database's streaming worker now.
CREATE FUNCTION creek._launch() RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_launch';

-- A dropped table stops being published.
-- (SECURITY DEFINER: whoever drops a published table may not write creek.tables)
CREATE FUNCTION creek._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM creek.tables t
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass
       AND d.objsubid = 0
       AND d.objid = t.relid::oid;
END
$$;
CREATE EVENT TRIGGER creek_sql_drop ON sql_drop
    EXECUTE FUNCTION creek._on_sql_drop();

REVOKE ALL ON ALL TABLES IN SCHEMA creek FROM PUBLIC;
REVOKE ALL ON FUNCTION creek.add_table(regclass), creek.remove_table(regclass),
    creek._stat(), creek._launch(), creek._on_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION creek._on_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION creek._stat_tables(), creek.reset_stats() FROM PUBLIC;

-- creek_admin: may publish the tables it can read, and watch creek.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'creek_admin') THEN
        CREATE ROLE creek_admin NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA creek TO creek_admin;
GRANT EXECUTE ON FUNCTION creek.add_table(regclass), creek.remove_table(regclass),
    creek._stat(), creek._stat_tables(), creek.reset_stats() TO creek_admin;
GRANT SELECT, INSERT, DELETE ON creek.tables TO creek_admin;
GRANT SELECT ON creek.schemas, creek.pg_stat_creek, creek.pg_stat_creek_tables TO creek_admin;

GRANT USAGE ON SCHEMA creek TO pg_monitor;
GRANT SELECT ON creek.pg_stat_creek, creek.pg_stat_creek_tables TO pg_monitor;
GRANT EXECUTE ON FUNCTION creek._stat(), creek._stat_tables() TO pg_monitor;

SELECT creek._launch();
