-- creek.add_table() and creek.remove_table(): the normal path.
CREATE TABLE orders (id int PRIMARY KEY, note text);
CREATE TABLE "Mixed Case" (id int PRIMARY KEY);
CREATE SCHEMA app;
CREATE TABLE app.items (id bigint PRIMARY KEY, name text);

SELECT creek.add_table('orders');
SELECT creek.add_table('"Mixed Case"');
SELECT creek.add_table('app.items');
SELECT relid FROM creek.tables ORDER BY relid::text;

SELECT creek.remove_table('"Mixed Case"');
SELECT relid FROM creek.tables ORDER BY relid::text;

-- adding again after removing works
SELECT creek.add_table('"Mixed Case"');
SELECT count(*) FROM creek.tables;

-- a table without replica identity is published, with a warning
CREATE TABLE no_key (a int, b text);
SELECT creek.add_table('no_key');
CREATE TABLE nothing_ident (id int PRIMARY KEY);
ALTER TABLE nothing_ident REPLICA IDENTITY NOTHING;
SELECT creek.add_table('nothing_ident');
-- REPLICA IDENTITY FULL needs no key
CREATE TABLE full_ident (a int, b text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
SELECT creek.add_table('full_ident');

-- a dropped table stops being published
DROP TABLE no_key;
SELECT relid FROM creek.tables ORDER BY relid::text;

-- NULL argument: the functions are strict
SELECT creek.add_table(NULL);
SELECT creek.remove_table(NULL);
