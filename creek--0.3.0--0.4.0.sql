-- creek 0.3.0 -> 0.4.0: creek_admin members publish tables only through
-- creek.add_table(), which checks that they may read the table
\echo Use "ALTER EXTENSION creek UPDATE TO '0.4.0'" to load this file. \quit

-- (creek.add_table() and creek.remove_table() write creek.tables with the
-- rights of its owner)
REVOKE INSERT, DELETE ON creek.tables FROM creek_admin;
