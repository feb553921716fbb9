-- creek 0.4.0 -> 0.5.0: no SQL object changes. The library of 0.5.0 writes
-- names (schema, table, column and type names, enum labels) in UTF-8 in
-- subjects, row changes, schemas and snapshot headers whatever the database
-- encoding (0.4.0 wrote them in the database's encoding), and answers a NATS
-- snapshot request whose snapshot fails before it starts.
\echo Use "ALTER EXTENSION creek UPDATE TO '0.5.0'" to load this file. \quit
