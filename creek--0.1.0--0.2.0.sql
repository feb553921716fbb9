-- creek 0.1.0 -> 0.2.0: snapshots
\echo Use "ALTER EXTENSION creek UPDATE TO '0.2.0'" to load this file. \quit

-- add_table gains snapshot => true (a snapshot once the table is published)
DROP FUNCTION creek.add_table(regclass);
CREATE FUNCTION creek.add_table(tbl regclass, snapshot boolean DEFAULT false) RETURNS void
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_add_table';
COMMENT ON FUNCTION creek.add_table(regclass, boolean) IS
    'publish the committed changes of a table on NATS (and, with snapshot => true, a snapshot of it)';

CREATE FUNCTION creek.snapshot(tbl regclass) RETURNS text
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_snapshot';
COMMENT ON FUNCTION creek.snapshot(regclass) IS
    'publish a snapshot of a table on NATS once this transaction commits; returns its subject';

CREATE FUNCTION creek.cancel_snapshot(subject text) RETURNS boolean
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_cancel_snapshot';
COMMENT ON FUNCTION creek.cancel_snapshot(text) IS 'stop a waiting or running snapshot of this database';

CREATE FUNCTION creek._snapshots(
    OUT datid oid, OUT datname name, OUT subject text, OUT relid oid, OUT schemaname name,
    OUT relname name, OUT state text, OUT origin text, OUT rows_sent bigint,
    OUT approx_rows bigint, OUT requested_at timestamptz, OUT started_at timestamptz,
    OUT finished_at timestamptz, OUT error text)
RETURNS SETOF record
LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'creek_snapshots';

CREATE VIEW creek.pg_stat_creek_snapshots AS SELECT * FROM creek._snapshots();
COMMENT ON VIEW creek.pg_stat_creek_snapshots IS
    'snapshots requested, waiting, running, finished and failed (the latest 64)';

REVOKE ALL ON FUNCTION creek.add_table(regclass, boolean), creek.snapshot(regclass),
    creek.cancel_snapshot(text), creek._snapshots() FROM PUBLIC;
REVOKE ALL ON creek.pg_stat_creek_snapshots FROM PUBLIC;
GRANT EXECUTE ON FUNCTION creek.add_table(regclass, boolean), creek.snapshot(regclass),
    creek.cancel_snapshot(text), creek._snapshots() TO creek_admin;
GRANT SELECT ON creek.pg_stat_creek_snapshots TO creek_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION creek._snapshots() TO pg_monitor;
