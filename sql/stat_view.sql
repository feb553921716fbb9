-- creek.pg_stat_creek: one row per database worker.
-- The worker of this database starts within seconds of CREATE EXTENSION.
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND state = 'streaming');
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

SELECT datname = current_database() AS this_db, pid IS NOT NULL AS has_pid, state,
       slot_name LIKE 'creek\_%' AS slot_named, confirmed_lsn IS NOT NULL AS confirms,
       messages_published >= 0 AS counts, lag_bytes >= 0 AS lag_known,
       wal_status, retained_wal_bytes >= 0 AS retains_wal
FROM creek.pg_stat_creek WHERE datname = current_database();

-- once a change is acknowledged and nothing is pending, lag_seconds is 0
CREATE TABLE lag_probe (id int PRIMARY KEY);
SELECT creek.add_table('lag_probe');
INSERT INTO lag_probe VALUES (1);
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM creek.pg_stat_creek
                          WHERE datname = current_database() AND lag_seconds = 0);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT lag_seconds >= 0 AND lag_seconds < 60 AS lag_small FROM creek.pg_stat_creek WHERE datname = current_database();

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
