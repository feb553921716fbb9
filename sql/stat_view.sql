-- creek.pg_stat_creek: one row per database worker.
-- Polls a condition for up to 30 s; true once it holds.
CREATE FUNCTION wait_until(cond text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE
    ok boolean;
BEGIN
    FOR i IN 1..300 LOOP
        EXECUTE 'SELECT ' || cond INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END
$f$;

-- The worker of this database starts within seconds of CREATE EXTENSION.
SELECT wait_until($$EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND state = 'streaming')$$);

SELECT datname = current_database() AS this_db, pid IS NOT NULL AS has_pid, state,
       slot_name LIKE 'creek\_%' AS slot_named, confirmed_lsn IS NOT NULL AS confirms,
       messages_published >= 0 AS counts, lag_bytes >= 0 AS lag_known,
       wal_status, retained_wal_bytes >= 0 AS retains_wal
FROM creek.pg_stat_creek WHERE datname = current_database();

-- once a change is acknowledged and nothing is pending, lag_seconds is 0
CREATE TABLE lag_probe (id int PRIMARY KEY);
SELECT creek.add_table('lag_probe');
INSERT INTO lag_probe VALUES (1);
SELECT wait_until($$EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND lag_seconds = 0)$$);
SELECT lag_seconds >= 0 AND lag_seconds < 60 AS lag_small FROM creek.pg_stat_creek WHERE datname = current_database();

-- creek.pg_stat_creek_tables: per table counters
UPDATE lag_probe SET id = 2;
DELETE FROM lag_probe;
TRUNCATE lag_probe;
SELECT wait_until($$EXISTS (SELECT 1 FROM creek.pg_stat_creek_tables
                          WHERE datname = current_database() AND relname = 'lag_probe'
                            AND truncates = 1)$$);
SELECT schemaname, relname, relid = 'lag_probe'::regclass AS same_oid, inserts, updates, deletes,
       truncates, bytes > 0 AS has_bytes, last_lsn IS NOT NULL AS has_lsn,
       last_change_at > now() - interval '1 minute' AS recent, length(fingerprint) AS fp_len
FROM creek.pg_stat_creek_tables WHERE datname = current_database();

-- creek.reset_stats() zeroes this database's counters
SELECT wait_until($$EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND messages_in_flight = 0)$$);
SELECT creek.reset_stats();
SELECT wait_until($$EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND stats_reset IS NOT NULL)$$);
SELECT messages_published, bytes_published FROM creek.pg_stat_creek WHERE datname = current_database();
SELECT relname, inserts, updates, deletes, truncates, bytes
FROM creek.pg_stat_creek_tables WHERE datname = current_database();

-- the worker's slot is a persistent logical slot of this database
SELECT s.slot_type, s.database = current_database() AS this_db, s.temporary
FROM pg_replication_slots s JOIN creek.pg_stat_creek c USING (slot_name)
WHERE c.datname = current_database();

-- the worker shows a clear name in pg_stat_activity
SELECT backend_type, application_name FROM pg_stat_activity
WHERE pid = (SELECT pid FROM creek.pg_stat_creek WHERE datname = current_database());

SELECT count(*) AS launchers FROM pg_stat_activity WHERE backend_type = 'creek launcher';

-- the view's columns
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'creek.pg_stat_creek'::regclass AND attnum > 0
ORDER BY attnum;
