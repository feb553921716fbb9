-- Who can do what: superusers and members of creek_admin manage creek
-- (creek_admin only for tables it can read); pg_monitor reads the view;
-- PUBLIC gets nothing.
BEGIN;
SELECT plan(54);

CREATE ROLE creek_tap_plain NOLOGIN;
CREATE ROLE creek_tap_monitor NOLOGIN IN ROLE pg_monitor;
CREATE ROLE creek_tap_admin NOLOGIN IN ROLE creek_admin;
CREATE TABLE public.tap_t (id int PRIMARY KEY);
CREATE TABLE public.tap_secret (id int PRIMARY KEY);
GRANT ALL ON public.tap_t TO creek_tap_plain;
GRANT SELECT ON public.tap_t TO creek_tap_admin;
GRANT CREATE ON SCHEMA public TO creek_tap_plain;

SELECT function_privs_are('creek', 'add_table', ARRAY['regclass', 'boolean'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.add_table');
SELECT function_privs_are('creek', 'remove_table', ARRAY['regclass'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.remove_table');
SELECT function_privs_are('creek', '_launch', ARRAY[]::text[], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek._launch');
SELECT table_privs_are('creek', 'tables', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.tables');
SELECT table_privs_are('creek', 'schemas', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.schemas');
SELECT table_privs_are('creek', 'pg_stat_creek', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.pg_stat_creek');
SELECT table_privs_are('creek', 'pg_stat_creek', 'pg_monitor', ARRAY['SELECT'], 'pg_monitor reads creek.pg_stat_creek');
SELECT table_privs_are('creek', 'pg_stat_creek_tables', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.pg_stat_creek_tables');
SELECT table_privs_are('creek', 'pg_stat_creek_tables', 'pg_monitor', ARRAY['SELECT'], 'pg_monitor reads creek.pg_stat_creek_tables');
SELECT function_privs_are('creek', 'reset_stats', ARRAY[]::text[], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.reset_stats');

-- a plain role, even owning privileges on the table, cannot publish it
SET ROLE creek_tap_plain;
SELECT throws_ok($$SELECT creek.add_table('public.tap_t')$$, '42501', NULL,
                 'a plain role cannot add a table');
SELECT throws_ok($$SELECT creek.remove_table('public.tap_t')$$, '42501', NULL,
                 'a plain role cannot remove a table');
SELECT throws_ok($$SELECT * FROM creek.tables$$, '42501', NULL, 'a plain role cannot read creek.tables');
SELECT throws_ok($$SELECT * FROM creek.pg_stat_creek$$, '42501', NULL,
                 'a plain role cannot read creek.pg_stat_creek');
RESET ROLE;

-- a pg_monitor member can watch, not manage
SET ROLE creek_tap_monitor;
SELECT lives_ok($$SELECT * FROM creek.pg_stat_creek$$, 'a pg_monitor member reads creek.pg_stat_creek');
SELECT throws_ok($$SELECT creek.add_table('public.tap_t')$$, '42501', NULL,
                 'a pg_monitor member cannot add a table');
SELECT throws_ok($$SELECT creek.reset_stats()$$, '42501', NULL,
                 'a pg_monitor member cannot reset the statistics');
SELECT throws_ok($$SELECT * FROM creek.tables$$, '42501', NULL, 'a pg_monitor member cannot read creek.tables');
RESET ROLE;

-- a creek_admin member manages the tables it can read
SELECT has_role('creek_admin', 'the extension created the creek_admin role');
SET ROLE creek_tap_admin;
SELECT lives_ok($$SELECT creek.add_table('public.tap_t')$$, 'a creek_admin member adds a table it can read');
SELECT lives_ok($$SELECT * FROM creek.pg_stat_creek$$, 'a creek_admin member reads creek.pg_stat_creek');
SELECT lives_ok($$SELECT creek.reset_stats()$$, 'a creek_admin member resets the statistics');
SELECT lives_ok($$SELECT creek.remove_table('public.tap_t')$$, 'a creek_admin member removes a table');
SELECT throws_ok($$SELECT creek.add_table('public.tap_secret')$$, '42501',
                 'permission denied to publish table "public.tap_secret"',
                 'a creek_admin member cannot publish a table it cannot read');
SELECT throws_ok($$INSERT INTO creek.tables (relid) VALUES ('public.tap_secret')$$, '42501', NULL,
                 'a creek_admin member cannot get past that check with an INSERT into creek.tables');
SELECT throws_ok($$DELETE FROM creek.tables$$, '42501', NULL,
                 'a creek_admin member removes tables only with creek.remove_table');
RESET ROLE;
SELECT table_privs_are('creek', 'tables', 'creek_admin', ARRAY['SELECT'], 'creek_admin only reads creek.tables');

-- the superuser can
SELECT lives_ok($$SELECT creek.add_table('public.tap_t')$$, 'a superuser adds a table');
SELECT lives_ok($$SELECT creek.remove_table('public.tap_t')$$, 'a superuser removes a table');

-- the owner of a published table can still drop it (the event trigger that
-- forgets it runs with the extension owner's rights)
SET ROLE creek_tap_plain;
CREATE TABLE public.tap_own (id int PRIMARY KEY);
RESET ROLE;
SELECT creek.add_table('public.tap_own');
SET ROLE creek_tap_plain;
SELECT lives_ok($$DROP TABLE public.tap_own$$, 'a plain owner drops its published table');
RESET ROLE;
SELECT is((SELECT count(*) FROM creek.tables WHERE relid::text = 'tap_own'), 0::bigint,
          'the dropped table is no longer published');

-- snapshots: like publishing, for creek_admin members and the tables they can read
SELECT function_privs_are('creek', 'snapshot', ARRAY['regclass'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.snapshot');
SELECT function_privs_are('creek', 'cancel_snapshot', ARRAY['text'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.cancel_snapshot');
SELECT table_privs_are('creek', 'pg_stat_creek_snapshots', 'public', ARRAY[]::text[],
                       'PUBLIC cannot read creek.pg_stat_creek_snapshots');
SELECT table_privs_are('creek', 'pg_stat_creek_snapshots', 'pg_monitor', ARRAY['SELECT'],
                       'pg_monitor reads creek.pg_stat_creek_snapshots');
SET ROLE creek_tap_plain;
SELECT throws_ok($$SELECT creek.snapshot('public.tap_t')$$, '42501', NULL,
                 'a plain role cannot take a snapshot');
RESET ROLE;
SET ROLE creek_tap_monitor;
SELECT lives_ok($$SELECT * FROM creek.pg_stat_creek_snapshots$$, 'a pg_monitor member reads the snapshots');
SELECT throws_ok($$SELECT creek.snapshot('public.tap_t')$$, '42501', NULL,
                 'a pg_monitor member cannot take a snapshot');
RESET ROLE;
SET ROLE creek_tap_admin;
SELECT matches(creek.snapshot('public.tap_t'), '^CREEK\.creek_tap\.snap\.public\.tap_t\.[0-9]{14}_[0-9]{3}_[a-z0-9]{4}$',
               'a creek_admin member takes a snapshot of a table it can read');
SELECT is((SELECT origin FROM creek.snapshot_requests WHERE relid = 'public.tap_t'::regclass), 'sql',
          'the request is kept in creek.snapshot_requests, which creek_admin members read');
SELECT throws_ok($$SELECT creek.snapshot('public.tap_secret')$$, '42501',
                 'permission denied to take a snapshot of table "public.tap_secret"',
                 'a creek_admin member cannot take a snapshot of a table it cannot read');
SELECT is(creek.cancel_snapshot('CREEK.x.snap.public.nope.1'), false,
          'a creek_admin member may cancel snapshots');
RESET ROLE;

-- creek.partition_rows: creek publishes what is inserted there, so no one
-- but its owner writes it; partition DDL of a plain role's table still
-- reaches it (creek writes it itself)
SELECT table_privs_are('creek', 'partition_rows', 'public', ARRAY[]::text[],
                       'PUBLIC cannot read or write creek.partition_rows');
SELECT table_privs_are('creek', 'partition_rows', 'creek_admin', ARRAY[]::text[],
                       'creek_admin cannot read or write creek.partition_rows');
SET ROLE creek_tap_admin;
SELECT throws_ok($$INSERT INTO creek.partition_rows VALUES ('public.tap_t'::regclass, 'd', '')$$, '42501', NULL,
                 'a creek_admin member cannot make creek publish a row removal');
SELECT throws_ok($$DELETE FROM creek.snapshot_requests$$, '42501', NULL,
                 'a creek_admin member cannot make creek forget a snapshot request');
RESET ROLE;
SELECT table_privs_are('creek', 'snapshot_requests', 'public', ARRAY[]::text[],
                       'PUBLIC cannot read or write creek.snapshot_requests');
SELECT table_privs_are('creek', 'snapshot_requests', 'creek_admin', ARRAY['SELECT'],
                       'creek_admin reads creek.snapshot_requests');
SELECT table_privs_are('creek', 'slot_losses', 'public', ARRAY[]::text[],
                       'PUBLIC cannot read or write creek.slot_losses');
SELECT table_privs_are('creek', 'slot_losses', 'creek_admin', ARRAY['SELECT'],
                       'creek_admin reads creek.slot_losses');
SET ROLE creek_tap_plain;
CREATE TABLE public.tap_p (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE public.tap_p1 PARTITION OF public.tap_p FOR VALUES FROM (0) TO (10);
INSERT INTO public.tap_p VALUES (1), (2);
SELECT throws_ok($$INSERT INTO creek.partition_rows VALUES ('public.tap_p1'::regclass, 'd', '')$$, '42501', NULL,
                 'a plain role cannot make creek publish a row removal');
RESET ROLE;
SELECT lives_ok($$SELECT creek.add_table('public.tap_p')$$, 'a superuser publishes the plain role''s table');
SET ROLE creek_tap_plain;
SELECT lives_ok($$DROP TABLE public.tap_p1$$, 'the plain role drops a partition of its published table');
RESET ROLE;
SELECT is((SELECT count(*) FROM creek.partition_rows), 0::bigint,
          'creek.partition_rows carried its rows and keeps nothing');

SELECT * FROM finish();
ROLLBACK;
