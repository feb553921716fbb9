-- creek 0.7.0 -> 0.8.0: what shared memory forgets at a server restart is
-- kept in tables. creek.snapshot_requests keeps each requested
-- snapshot until it ends, so that a server restart (which empties shared
-- memory, where the queue of snapshots lives) does not forget one silently:
-- the streaming worker shows it as failed and, for a snapshot taken because
-- the replication slot was lost, requests it again. Written with its
-- owner's rights by creek.snapshot() and the worker; emptied by the worker.
-- A row without subject is a snapshot the worker must still request after
-- losing its slot (every snapshot entry was busy).
\echo Use "ALTER EXTENSION creek UPDATE TO '0.8.0'" to load this file. \quit

CREATE TABLE creek.snapshot_requests (
    subject text UNIQUE,          -- NS.DB.snap.SCHEMA.TABLE.<time>_<id>; NULL: not requested yet
    relid oid NOT NULL,           -- the table
    origin text NOT NULL,         -- 'sql', 'nats' or 'slot'
    requested_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON creek.snapshot_requests FROM PUBLIC;
GRANT SELECT ON creek.snapshot_requests TO creek_admin;

-- creek.slot_losses: each time the worker created its replication slot anew
-- while tables were published (the changes committed before it were not
-- published as changes). The latest one is what pg_stat_creek shows as
-- slot_lost_at and slot_lost_lsn, also after a server restart.
CREATE TABLE creek.slot_losses (
    lost_at timestamptz NOT NULL,   -- when the new slot was created
    slot_lsn pg_lsn NOT NULL,       -- where it starts
    tables integer NOT NULL         -- how many tables were published then
);
REVOKE ALL ON creek.slot_losses FROM PUBLIC;
GRANT SELECT ON creek.slot_losses TO creek_admin;
