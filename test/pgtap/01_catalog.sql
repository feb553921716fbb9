-- creek's catalog objects: schema, tables, functions, view.
BEGIN;
SELECT plan(54);

SELECT has_extension('creek');
SELECT has_schema('creek');
SELECT is((SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'creek'), 'creek', 'creek lives in schema creek');

SELECT has_table('creek', 'tables', 'creek.tables exists');
SELECT columns_are('creek', 'tables', ARRAY['relid', 'added_at']);
SELECT col_type_is('creek', 'tables', 'relid', 'regclass', 'creek.tables.relid is a regclass');
SELECT col_is_pk('creek', 'tables', 'relid', 'creek.tables is keyed by relid');
SELECT ok((SELECT 'user_catalog_table=true' = ANY (reloptions) FROM pg_class
           WHERE oid = 'creek.tables'::regclass),
          'creek.tables is a user catalog table (read with the historic snapshot while decoding)');

SELECT has_table('creek', 'schemas', 'creek.schemas exists');
SELECT columns_are('creek', 'schemas', ARRAY['fingerprint', 'source', 'schema_json', 'created_at']);
SELECT col_is_pk('creek', 'schemas', ARRAY['fingerprint', 'source'], 'creek.schemas is keyed by fingerprint and source');

SELECT has_table('creek', 'partition_rows', 'creek.partition_rows exists');
SELECT columns_are('creek', 'partition_rows', ARRAY['relid', 'op', 'rows', 'target']);
SELECT is((SELECT attstorage FROM pg_attribute WHERE attrelid = 'creek.partition_rows'::regclass
           AND attname = 'rows'), 'e', 'partition_rows.rows is stored out of line, uncompressed');
SELECT is((SELECT relacl FROM pg_class WHERE oid = 'creek.partition_rows'::regclass),
          ARRAY[format('%s=arwdDxt/%s', current_user, current_user)]::aclitem[],
          'only the extension owner may write creek.partition_rows');

SELECT has_table('creek', 'snapshot_requests', 'creek.snapshot_requests exists');
SELECT columns_are('creek', 'snapshot_requests', ARRAY['subject', 'relid', 'origin', 'requested_at']);
SELECT col_is_unique('creek', 'snapshot_requests', 'subject', 'a snapshot request is kept once');
SELECT has_table('creek', 'slot_losses', 'creek.slot_losses exists');
SELECT columns_are('creek', 'slot_losses', ARRAY['lost_at', 'slot_lsn', 'tables']);

SELECT has_view('creek', 'pg_stat_creek', 'creek.pg_stat_creek exists');
SELECT columns_are('creek', 'pg_stat_creek', ARRAY[
    'datid', 'datname', 'pid', 'state', 'nats_state', 'slot_name', 'last_decoded_lsn',
    'confirmed_lsn', 'lag_bytes', 'lag_seconds', 'wal_status', 'retained_wal_bytes',
    'messages_published', 'bytes_published', 'messages_in_flight',
    'spooled_transactions', 'spooled_bytes',
    'last_error', 'last_error_at', 'started_at', 'stats_reset', 'slot_lost_at', 'slot_lost_lsn']);
SELECT has_view('creek', 'pg_stat_creek_tables', 'creek.pg_stat_creek_tables exists');
SELECT columns_are('creek', 'pg_stat_creek_tables', ARRAY[
    'datid', 'datname', 'relid', 'schemaname', 'relname', 'inserts', 'updates', 'deletes',
    'truncates', 'bytes', 'last_lsn', 'last_change_at', 'fingerprint']);
SELECT has_function('creek', 'reset_stats', ARRAY[]::text[]);

SELECT has_function('creek', 'add_table', ARRAY['regclass', 'boolean']);
SELECT function_returns('creek', 'add_table', ARRAY['regclass', 'boolean'], 'void');
SELECT is_strict('creek', 'add_table', ARRAY['regclass', 'boolean']);
SELECT has_function('creek', 'snapshot', ARRAY['regclass']);
SELECT function_returns('creek', 'snapshot', ARRAY['regclass'], 'text');
SELECT has_function('creek', 'cancel_snapshot', ARRAY['text']);
SELECT function_returns('creek', 'cancel_snapshot', ARRAY['text'], 'boolean');
SELECT has_view('creek', 'pg_stat_creek_snapshots', 'creek.pg_stat_creek_snapshots exists');
SELECT columns_are('creek', 'pg_stat_creek_snapshots', ARRAY[
    'datid', 'datname', 'subject', 'relid', 'schemaname', 'relname', 'state', 'origin',
    'rows_sent', 'approx_rows', 'requested_at', 'started_at', 'finished_at', 'error']);
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'creek'), '0.8.0',
          'a new install is version 0.8.0 (0.1.0 and the upgrade scripts)');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.1.0' AND target = '0.2.0'
           AND path IS NOT NULL), 1::bigint, '0.1.0 upgrades to 0.2.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.2.0' AND target = '0.3.0'
           AND path IS NOT NULL), 1::bigint, '0.2.0 upgrades to 0.3.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.3.0' AND target = '0.4.0'
           AND path IS NOT NULL), 1::bigint, '0.3.0 upgrades to 0.4.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.4.0' AND target = '0.5.0'
           AND path IS NOT NULL), 1::bigint, '0.4.0 upgrades to 0.5.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.5.0' AND target = '0.6.0'
           AND path IS NOT NULL), 1::bigint, '0.5.0 upgrades to 0.6.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.6.0' AND target = '0.7.0'
           AND path IS NOT NULL), 1::bigint, '0.6.0 upgrades to 0.7.0');
SELECT is((SELECT count(*) FROM pg_extension_update_paths('creek') WHERE source = '0.7.0' AND target = '0.8.0'
           AND path IS NOT NULL), 1::bigint, '0.7.0 upgrades to 0.8.0');
SELECT has_function('creek', 'remove_table', ARRAY['regclass']);
SELECT function_returns('creek', 'remove_table', ARRAY['regclass'], 'void');
SELECT is_strict('creek', 'remove_table', ARRAY['regclass']);

SELECT ok(EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'creek_sql_drop' AND evtevent = 'sql_drop'),
          'an event trigger forgets dropped tables');

-- every object belongs to the extension (DROP EXTENSION removes them)
SELECT ok(NOT EXISTS (
    SELECT 1 FROM pg_class c
    WHERE c.relnamespace = 'creek'::regnamespace AND c.relkind IN ('r', 'v')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')),
    'every creek table and view is a member of the extension');
SELECT ok(NOT EXISTS (
    SELECT 1 FROM pg_proc p
    WHERE p.pronamespace = 'creek'::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')),
    'every creek function is a member of the extension');

-- the configuration tables are dumped by pg_dump
SELECT ok((SELECT 'creek.tables'::regclass::oid = ANY (extconfig) FROM pg_extension WHERE extname = 'creek'),
          'creek.tables is dumped with the database');
SELECT ok((SELECT 'creek.schemas'::regclass::oid = ANY (extconfig) FROM pg_extension WHERE extname = 'creek'),
          'creek.schemas is dumped with the database');

-- settings are defined and the prefix is reserved
SELECT is(current_setting('creek.namespace'), 'CREEK', 'creek.namespace defaults to CREEK');
SELECT ok(current_setting('creek.max_in_flight')::int > 0, 'creek.max_in_flight is positive');
SELECT is(current_setting('creek.batch_delay'), '5ms', 'creek.batch_delay defaults to 5ms');
SELECT throws_ok($$SET creek.typo_setting = 1$$, '42602', NULL, 'unknown creek.* settings are refused');

SELECT * FROM finish();
ROLLBACK;
