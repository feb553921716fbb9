-- creek.add_table() and creek.remove_table(): bad input gets a clear error.
CREATE TABLE t (id int PRIMARY KEY);
SELECT creek.add_table('t');

-- already published
SELECT creek.add_table('t');
-- not published
CREATE TABLE u (id int PRIMARY KEY);
SELECT creek.remove_table('u');
-- no such table
SELECT creek.add_table('does_not_exist');
SELECT creek.add_table(4000000000::oid::regclass);

-- not tables
CREATE VIEW v AS SELECT 1 AS x;
SELECT creek.add_table('v');
CREATE SEQUENCE s;
SELECT creek.add_table('s');
CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x;
SELECT creek.add_table('mv');
SELECT creek.add_table('t_pkey');
CREATE TYPE comp AS (a int);
SELECT creek.add_table('comp');

-- tables whose changes logical decoding cannot see
CREATE TEMP TABLE tmp (id int);
SELECT creek.add_table('tmp');
CREATE UNLOGGED TABLE unl (id int);
SELECT creek.add_table('unl');

-- system tables and creek's own tables
SELECT creek.add_table('pg_class');
SELECT creek.add_table('creek.tables');

-- nothing above changed the published set
SELECT relid FROM creek.tables ORDER BY relid::text;
