-- Partitioned tables: creek.add_table() on a partitioned table publishes the
-- changes of all its partitions, present and future, through it.
CREATE SCHEMA part;
CREATE TABLE part.m (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE part.m_2023 PARTITION OF part.m FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE part.m_2024 PARTITION OF part.m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')
    PARTITION BY HASH (id);
CREATE TABLE part.m_2024_0 PARTITION OF part.m_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE part.m_2024_1 PARTITION OF part.m_2024 FOR VALUES WITH (MODULUS 2, REMAINDER 1);

SELECT creek.add_table('part.m');
SELECT relid FROM creek.tables WHERE relid::text LIKE 'part.%' ORDER BY relid::text;

-- already published
SELECT creek.add_table('part.m');
-- its partitions, at every level, are published through it
SELECT creek.add_table('part.m_2023');
SELECT creek.add_table('part.m_2024');
SELECT creek.add_table('part.m_2024_1');
-- a partition attached later too
CREATE TABLE part.m_2025 (v text, at date NOT NULL, id int NOT NULL);
ALTER TABLE part.m ATTACH PARTITION part.m_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT creek.add_table('part.m_2025');
-- a partition is not published on its own, so it cannot be removed on its own
SELECT creek.remove_table('part.m_2024_1');
-- the partitioned index is an index
SELECT creek.add_table('part.m_pkey');

-- a partitioned table one of whose partitions is published on its own
CREATE TABLE part.e (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE part.e_1 PARTITION OF part.e FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
CREATE TABLE part.e_1_1 PARTITION OF part.e_1 FOR VALUES FROM (0) TO (10);
SELECT creek.add_table('part.e_1_1');
SELECT creek.add_table('part.e');
SELECT creek.add_table('part.e_1');
-- removing the partition first lets the partitioned table be published
SELECT creek.remove_table('part.e_1_1');
SELECT creek.add_table('part.e');
SELECT relid FROM creek.tables WHERE relid::text LIKE 'part.%' ORDER BY relid::text;

-- a partitioned table without a key is published, with a warning
CREATE TABLE part.nokey (a int, b text) PARTITION BY LIST (a);
SELECT creek.add_table('part.nokey');
-- REPLICA IDENTITY FULL of a partitioned table does not recurse: a warning
CREATE TABLE part.f (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE part.f_1 PARTITION OF part.f FOR VALUES FROM (0) TO (10);
ALTER TABLE part.f REPLICA IDENTITY FULL;
SELECT creek.add_table('part.f');
-- none once every partition is FULL too
CREATE TABLE part.g (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE part.g_1 PARTITION OF part.g FOR VALUES FROM (0) TO (10);
ALTER TABLE part.g REPLICA IDENTITY FULL;
ALTER TABLE part.g_1 REPLICA IDENTITY FULL;
SELECT creek.add_table('part.g');

-- a temporary partitioned table is refused like a temporary table
CREATE TEMP TABLE ptmp (id int) PARTITION BY RANGE (id);
SELECT creek.add_table('ptmp');

-- a dropped partitioned table stops being published
DROP TABLE part.e;
-- once the partitioned table is removed, a partition can be published on its own
SELECT creek.remove_table('part.m');
SELECT creek.add_table('part.m_2023');
SELECT creek.add_table('part.m');
SELECT relid FROM creek.tables WHERE relid::text LIKE 'part.%' ORDER BY relid::text;
