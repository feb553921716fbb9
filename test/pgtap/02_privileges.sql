-- Who can do what: superusers manage creek; pg_monitor reads the view;
-- PUBLIC gets nothing.
BEGIN;
SELECT plan(16);

CREATE ROLE creek_tap_plain NOLOGIN;
CREATE ROLE creek_tap_monitor NOLOGIN IN ROLE pg_monitor;
CREATE TABLE public.tap_t (id int PRIMARY KEY);
GRANT ALL ON public.tap_t TO creek_tap_plain;

SELECT function_privs_are('creek', 'add_table', ARRAY['regclass'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.add_table');
SELECT function_privs_are('creek', 'remove_table', ARRAY['regclass'], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek.remove_table');
SELECT function_privs_are('creek', '_launch', ARRAY[]::text[], 'public', ARRAY[]::text[],
                          'PUBLIC cannot execute creek._launch');
SELECT table_privs_are('creek', 'tables', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.tables');
SELECT table_privs_are('creek', 'schemas', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.schemas');
SELECT table_privs_are('creek', 'pg_stat_creek', 'public', ARRAY[]::text[], 'PUBLIC cannot read creek.pg_stat_creek');
SELECT table_privs_are('creek', 'pg_stat_creek', 'pg_monitor', ARRAY['SELECT'], 'pg_monitor reads creek.pg_stat_creek');

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
SELECT throws_ok($$SELECT * FROM creek.tables$$, '42501', NULL, 'a pg_monitor member cannot read creek.tables');
RESET ROLE;

-- the superuser can
SELECT lives_ok($$SELECT creek.add_table('public.tap_t')$$, 'a superuser adds a table');
SELECT lives_ok($$SELECT creek.remove_table('public.tap_t')$$, 'a superuser removes a table');

SELECT * FROM finish();
ROLLBACK;
