-- creek 0.5.0 -> 0.6.0: creek.partition_rows carries, in the WAL, the rows
-- that partition DDL (TRUNCATE, DROP TABLE, DETACH and ATTACH PARTITION of a
-- partition) takes out of or brings into a published partitioned table. The
-- session running the statement inserts them in chunks and deletes them
-- again; the streaming worker publishes each row as a 'd' or 'c' message.
-- Only the extension's owner writes it: no other role can make creek publish.
\echo Use "ALTER EXTENSION creek UPDATE TO '0.6.0'" to load this file. \quit

CREATE TABLE creek.partition_rows (
    relid oid NOT NULL,       -- the partition the rows belong to
    op "char" NOT NULL,       -- 'd' removed, 'c' added
    rows bytea NOT NULL,      -- (uint32 length, heap tuple) per row
    target oid                -- the published table they enter, when written
                              -- before they do (NULL: the decoder's route)
);
ALTER TABLE creek.partition_rows ALTER COLUMN rows SET STORAGE EXTERNAL;
REVOKE ALL ON creek.partition_rows FROM PUBLIC;
