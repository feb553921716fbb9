"""End-to-end tests of the rows that partition DDL takes out of or brings
into a published partitioned table (README, "Partitioned tables"): DROP
TABLE, TRUNCATE and DETACH PARTITION of a partition publish a 'd' for each of
its rows, ATTACH PARTITION a 'c' (test_partitions.py has TRUNCATE's and
DETACH's interplay with other changes). A consumer that applies the messages
holds what the partitioned table holds.

Each test creates its own database (make_db) in the session cluster."""

import datetime

import pytest

from creek_helpers import assert_msg_ids, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:Unknown local-timestamp-micros")

SMALL_WORK_MEM = ("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = "
                  "''64kB''', current_database()); END $$")

# a value stored out of line (TOAST), not compressible
BIG = "(SELECT string_agg(md5(g::text || %s), '') FROM generate_series(1, 600) g)"


def state(db, table, cols):
    """{(id, at): row} of what Postgres holds, as creek publishes it."""
    out = {}
    for r in db.query("SELECT %s FROM %s" % (", ".join(cols), table)):
        row = dict(zip(cols, r))
        row["id"] = int(row["id"])
        row["at"] = datetime.date.fromisoformat(row["at"])
        out[(row["id"], row["at"])] = row
    return out


def replay(rows):
    copy = {}
    for r in rows:
        if r.op == "d":
            del copy[(r.before["id"], r.before["at"])]
        elif r.op == "t":
            copy.clear()
        else:
            copy[(r.after["id"], r.after["at"])] = r.after
    return copy


def streamed_txns(db):
    return int(db.pg.scalar("SELECT coalesce(max(stream_txns), 0) FROM pg_stat_replication_slots "
                            "WHERE slot_name = '%s'" % db.slot_name))


def by_tx(rows):
    groups = []
    for r in rows:
        if not groups or groups[-1][0].commit_lsn != r.commit_lsn:
            groups.append([])
        groups[-1].append(r)
    return groups


def test_drop_detach_attach(make_db):
    """DROP TABLE of a partition (one with partitions of its own too) and
    DETACH PARTITION publish a 'd' per row (the key, as a DELETE would), on the
    partitioned table's subject; ATTACH PARTITION of a table with rows, with
    its columns in another order and a value stored out of line, a 'c' per row
    with every value; DETACH ... CONCURRENTLY a 'd' per row once detached.
    With creek.publish_partition_ddl off, nothing is published."""
    db = make_db("pd_ddl")
    db.sql("""
        CREATE TABLE ev (id int NOT NULL, at date NOT NULL, v text, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
        CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')
            PARTITION BY HASH (id);
        CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
        CREATE TABLE ev_2b PARTITION OF ev_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
        CREATE TABLE ev_3 PARTITION OF ev FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
        CREATE TABLE other (id int PRIMARY KEY);
    """)
    db.add_table("ev")
    db.sql("INSERT INTO ev SELECT g, make_date(2021 + (g - 1) / 4, 1 + g % 12, 1), 'v' || g "
           "FROM generate_series(1, 12) g")
    db.sql("INSERT INTO other VALUES (1)")
    rows_of = {p: sorted(int(x[0]) for x in db.query("SELECT id FROM %s" % p))
               for p in ("ev_1", "ev_2", "ev_3")}
    assert [len(v) for v in rows_of.values()] == [4, 4, 4], rows_of
    # rolled back to a savepoint: nothing
    db.sql("BEGIN; SAVEPOINT s; DROP TABLE ev_1; ROLLBACK TO s; "
           "SAVEPOINT t; ALTER TABLE ev DETACH PARTITION ev_3; ROLLBACK TO t; COMMIT")
    db.sql("DROP TABLE ev_1")
    db.sql("BEGIN; DROP TABLE other, ev_2; INSERT INTO ev VALUES (100, '2023-06-06', 'x'); COMMIT")
    db.sql("CREATE TABLE ev_4 (v text, at date NOT NULL, junk int, id int NOT NULL); "
           "ALTER TABLE ev_4 DROP COLUMN junk; "
           "INSERT INTO ev_4 (id, at, v) VALUES (200, '2024-02-02', %s), (201, '2024-03-03', 'small')"
           % (BIG % "'a'"))
    db.sql("ALTER TABLE ev ATTACH PARTITION ev_4 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    attached = state(db, "ev", ["id", "at", "v"])
    db.sql("ALTER TABLE ev DETACH PARTITION ev_3")
    # CONCURRENTLY: the rows are read in its second transaction, once detached
    db.sql("ALTER TABLE ev DETACH PARTITION ev_4 CONCURRENTLY")
    assert db.scalar("SELECT count(*) FROM ev_4") == "2"
    db.sql("CREATE TABLE ev_5 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); "
           "INSERT INTO ev VALUES (300, '2025-07-07', 'kept'), (301, '2025-08-08', 'kept')")
    db.sql("SET creek.publish_partition_ddl = off; ALTER TABLE ev DETACH PARTITION ev_5 CONCURRENTLY")
    db.sql("CREATE TABLE ev_6 PARTITION OF ev FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); "
           "INSERT INTO ev VALUES (400, '2026-01-01', 'last')")
    assert db.scalar("SELECT count(*) FROM ev") == "1"
    assert db.scalar("SELECT count(*) FROM creek.partition_rows") == "0"

    db.wait_wal_count(12 + 4 + 5 + 2 + 5 + 2 + 2 + 1)
    rows = db.rows()
    assert_msg_ids(rows)
    assert all(r.subject == db.wal_subject("public", "ev") for r in rows)
    txs = by_tx(rows)
    ops = [[(r.op, r.before and r.before["id"], r.after and r.after["id"]) for r in g] for g in txs]
    year = datetime.date(2022, 1, 1)
    assert ops[0] == [("c", None, i) for i in range(1, 13)]
    # DROP TABLE ev_1: its rows, keys only
    assert sorted(ops[1]) == [("d", i, None) for i in rows_of["ev_1"]]
    assert all(set(r.before) == {"id", "at"} and r.before["at"].year == 2021 for r in txs[1])
    # DROP TABLE other, ev_2 (both of its partitions), then an insert
    assert sorted(ops[2][:-1]) == [("d", i, None) for i in rows_of["ev_2"]]
    assert all(r.before["at"] >= year for r in txs[2][:-1])
    assert ops[2][-1] == ("c", None, 100)
    # ATTACH PARTITION: every value, in ev's columns, the big one too
    assert ops[3] == [("c", None, 200), ("c", None, 201)]
    for r in txs[3]:
        assert r.after == attached[(r.after["id"], r.after["at"])]
    assert len(txs[3][0].after["v"]) == 600 * 32
    # DETACH PARTITION ev_3 (row 100 included)
    assert sorted(ops[4]) == [("d", i, None) for i in sorted(rows_of["ev_3"] + [100])]
    # DETACH PARTITION ev_4 CONCURRENTLY: its rows, keys only, in its own (second) transaction
    assert ops[5] == [("d", 200, None), ("d", 201, None)]
    assert all(set(r.before) == {"id", "at"} for r in txs[5])
    # the concurrent detach with the setting off: nothing; then the inserts
    assert ops[6] == [("c", None, 300), ("c", None, 301)]
    assert ops[7] == [("c", None, 400)] and len(txs) == 8
    # a consumer holds what ev holds, but for the rows detached with the setting off
    now = state(db, "ev", ["id", "at", "v"])
    assert list(now) == [(400, datetime.date(2026, 1, 1))]
    assert set(replay(rows)) == set(now) | {(300, datetime.date(2025, 7, 7)), (301, datetime.date(2025, 8, 8))}


def test_replica_identity_full_and_a_streamed_transaction(make_db):
    """Under REPLICA IDENTITY FULL the 'd' of a truncated partition carries
    the whole row, out-of-line values included; a partition that is not FULL
    gives its key only, as its DELETEs do. Many rows (several chunks of
    creek.partition_rows) in a transaction Postgres streams to creek before
    its commit: every row once, in order with the transaction's other
    changes."""
    db = make_db("pd_full", before_extension=SMALL_WORK_MEM)
    db.sql("""
        CREATE TABLE f (id int NOT NULL, at date NOT NULL, big text, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        ALTER TABLE f REPLICA IDENTITY FULL;
        CREATE TABLE f_1 PARTITION OF f FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
        ALTER TABLE f_1 REPLICA IDENTITY FULL;
        CREATE TABLE f_2 PARTITION OF f FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
    """)
    db.sql("SET client_min_messages = error; SELECT creek.add_table('f')")   # (f_2 is not FULL: a warning)
    n = 60000
    db.sql("INSERT INTO f VALUES (1, '2021-01-01', %s), (2, '2021-02-02', 'small')" % (BIG % "'b'"))
    db.sql("INSERT INTO f SELECT g, '2022-01-01', 'r' || g FROM generate_series(1, %d) g" % n)
    full = state(db, "f_1", ["id", "at", "big"])
    db.wait_wal_count(2 + n, timeout=120)
    streamed0 = streamed_txns(db)
    db.sql("TRUNCATE f_1")
    db.sql("BEGIN; INSERT INTO f VALUES (7, '2021-07-07', 'before'); DROP TABLE f_2; "
           "INSERT INTO f VALUES (8, '2021-08-08', 'after'); COMMIT")
    db.wait_wal_count(2 + n + 2 + 1 + n + 1, timeout=120)
    rows = db.rows()
    assert_msg_ids(rows)
    txs = by_tx(rows)
    assert [len(g) for g in txs] == [2, n, 2, n + 2]
    # TRUNCATE f_1: whole rows
    assert sorted((r.op, r.before["id"]) for r in txs[2]) == [("d", 1), ("d", 2)]
    for r in txs[2]:
        assert r.before == full[(r.before["id"], r.before["at"])] and r.after is None
    assert len(txs[2][0].before["big"]) + len(txs[2][1].before["big"]) == 600 * 32 + 5
    # DROP TABLE f_2 between two inserts: keys only (f_2 is not FULL), each row once
    big = txs[3]
    assert (big[0].op, big[0].after["id"]) == ("c", 7) and (big[-1].op, big[-1].after["id"]) == ("c", 8)
    assert {r.op for r in big[1:-1]} == {"d"}
    assert sorted(r.before["id"] for r in big[1:-1]) == list(range(1, n + 1))
    assert all(r.before["big"] is None for r in big[1:-1])
    # Postgres streamed it to creek before the commit
    wait_until(lambda: streamed_txns(db) > streamed0, 10, 0.2, "the DROP's transaction streamed")
    assert replay(rows) == state(db, "f", ["id", "at", "big"])


def test_attach_and_detach_move_rows_between_published_tables(make_db):
    """A partitioned table published on its own and attached under another
    published one: its changes go to the topmost one from then on, and so do
    its rows ('d' on its own subject, 'c' on the other's); DETACH moves them
    back."""
    db = make_db("pd_move")
    db.sql("""
        CREATE TABLE top (id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE sub (id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY HASH (id);
        CREATE TABLE sub_0 PARTITION OF sub FOR VALUES WITH (MODULUS 1, REMAINDER 0);
    """)
    db.add_table("top")
    db.add_table("sub")
    db.sql("INSERT INTO sub VALUES (1, '2021-01-01'), (2, '2021-02-02')")
    db.sql("ALTER TABLE top ATTACH PARTITION sub FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')")
    db.sql("INSERT INTO top VALUES (3, '2021-03-03')")
    db.sql("ALTER TABLE top DETACH PARTITION sub")
    db.sql("ALTER TABLE top ATTACH PARTITION sub FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')")
    db.sql("ALTER TABLE top DETACH PARTITION sub CONCURRENTLY")
    db.sql("INSERT INTO sub VALUES (4, '2021-04-04')")
    db.wait_wal_count(2 + 4 + 1 + 6 + 6 + 6 + 1)
    rows = db.rows()
    assert_msg_ids(rows)
    got = [[(r.source["table"], r.op, (r.before or r.after)["id"]) for r in g] for g in by_tx(rows)]
    there = [("top", "d", 1), ("top", "d", 2), ("top", "d", 3), ("sub", "c", 1), ("sub", "c", 2), ("sub", "c", 3)]
    back = [("sub", "d", 1), ("sub", "d", 2), ("sub", "d", 3), ("top", "c", 1), ("top", "c", 2), ("top", "c", 3)]
    assert got == [
        [("sub", "c", 1), ("sub", "c", 2)],
        [("sub", "d", 1), ("sub", "d", 2), ("top", "c", 1), ("top", "c", 2)],
        [("top", "c", 3)],
        there,
        back,
        there,   # CONCURRENTLY: in its first transaction
        [("sub", "c", 4)],
    ]
    assert all(r.subject == db.wal_subject("public", r.source["table"]) for r in rows)


def test_truncate_cascade(make_db):
    """TRUNCATE ... CASCADE empties the tables that reference the truncated
    one by foreign key: a partition of a published table emptied that way
    publishes its rows as 'd'; a partitioned table emptied whole, one 't'."""
    db = make_db("pd_cascade")
    db.sql("""
        CREATE TABLE ref (id int PRIMARY KEY);
        CREATE TABLE ref2 (id int PRIMARY KEY);
        INSERT INTO ref VALUES (1); INSERT INTO ref2 VALUES (1);
        CREATE TABLE g (id int NOT NULL, r int, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE g_1 PARTITION OF g FOR VALUES FROM (0) TO (10);
        CREATE TABLE g_2 PARTITION OF g FOR VALUES FROM (10) TO (20);
        ALTER TABLE g_1 ADD FOREIGN KEY (r) REFERENCES ref;
        CREATE TABLE h (id int NOT NULL, r int REFERENCES ref2, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE h_1 PARTITION OF h FOR VALUES FROM (0) TO (10);
    """)
    db.add_table("g")
    db.add_table("h")
    log_from = db.pg.log_offset()
    db.sql("INSERT INTO g VALUES (1, 1), (2, 1), (11, NULL); INSERT INTO h VALUES (1, 1)")
    db.sql("SET client_min_messages = warning; TRUNCATE ref CASCADE")
    db.sql("SET client_min_messages = warning; TRUNCATE ref2 CASCADE")
    db.wait_wal_count(4 + 2 + 1)
    rows = db.rows()
    got = [[(r.source["table"], r.op, r.before and r.before["id"]) for r in g] for g in by_tx(rows)]
    assert got[2:] == [[("g", "d", 1), ("g", "d", 2)], [("h", "t", None)]], got
    assert db.scalar("SELECT count(*) FROM g") == "1"
    assert "creek does not publish the TRUNCATE" not in db.pg.log(log_from)


def test_drop_schema_cascade_and_drop_owned(make_db):
    """DROP SCHEMA ... CASCADE and DROP OWNED drop partitions too: the rows
    of those whose published table stays are published as 'd'; nothing for a
    published table dropped with its partitions."""
    db = make_db("pd_owned")
    role = "pd_owner_%s" % db.name
    db.sql("""
        CREATE SCHEMA parts;
        CREATE ROLE %(r)s;
        CREATE TABLE m (id int NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE parts.m_1 PARTITION OF m FOR VALUES FROM (0) TO (10);
        CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (10) TO (20);
        CREATE TABLE m_3 PARTITION OF m FOR VALUES FROM (20) TO (30);
        ALTER TABLE m_2 OWNER TO %(r)s;
        CREATE TABLE parts.gone (id int NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE gone_1 PARTITION OF parts.gone FOR VALUES FROM (0) TO (10);
    """ % {"r": role})
    db.add_table("m")
    db.add_table("parts.gone")
    db.sql("INSERT INTO m VALUES (1), (2), (11), (21); INSERT INTO parts.gone VALUES (3)")
    db.sql("SET client_min_messages = warning; DROP SCHEMA parts CASCADE")
    db.sql("DROP OWNED BY %s; DROP ROLE %s" % (role, role))
    db.wait_wal_count(5 + 2 + 1)
    rows = db.rows()
    got = [sorted((r.source["table"], r.op, (r.before or r.after)["id"]) for r in g) for g in by_tx(rows)]
    assert got[-2:] == [[("m", "d", 1), ("m", "d", 2)], [("m", "d", 11)]], got
    assert db.scalar("SELECT count(*) FROM m") == "1"


def test_default_partition_and_schema_owner(make_db):
    """With a DEFAULT partition (locked first by ATTACH and DETACH), rows
    still move in and out; a schema owner who does not own the partition
    drops it, and its rows are published."""
    db = make_db("pd_default")
    role = "pd_schema_owner_%s" % db.name
    db.sql("""
        CREATE ROLE %(r)s;
        CREATE SCHEMA s AUTHORIZATION %(r)s;
        CREATE TABLE m (id int NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE m_def PARTITION OF m DEFAULT;
        CREATE TABLE s.m_1 PARTITION OF m FOR VALUES FROM (0) TO (10);
        CREATE TABLE m_2 (id int NOT NULL);
        INSERT INTO m_2 VALUES (11), (12);
    """ % {"r": role})
    db.add_table("m")
    db.sql("INSERT INTO m VALUES (1), (100)")
    db.sql("ALTER TABLE m ATTACH PARTITION m_2 FOR VALUES FROM (10) TO (20)")
    db.sql("ALTER TABLE m DETACH PARTITION m_2")
    db.sql("SET ROLE %s; DROP TABLE s.m_1" % role)
    db.sql("DROP SCHEMA s; DROP ROLE %s" % role)
    db.wait_wal_count(2 + 2 + 2 + 1)
    got = [sorted((r.op, (r.before or r.after)["id"]) for r in g) for g in by_tx(db.rows())]
    assert got == [[("c", 1), ("c", 100)], [("c", 11), ("c", 12)], [("d", 11), ("d", 12)], [("d", 1)]], got


def test_detach_concurrently_with_a_writer_in_between(make_db):
    """DETACH ... CONCURRENTLY: the partition's rows leave the table ('d') in
    its first transaction, whose commit makes the partition's changes no
    longer the table's; a row written straight into the partition while the
    detach waits for older transactions is not the table's and is not
    published. A consumer's copy stays equal to the table."""
    import threading
    import time
    db = make_db("pd_conc")
    db.sql("""
        CREATE TABLE m (id int NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM (0) TO (10);
        CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM (10) TO (20);
    """)
    db.add_table("m")
    db.sql("INSERT INTO m VALUES (1), (11)")
    with db.connect() as a:
        a.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        a.query("SELECT count(*) FROM m")   # a snapshot the detach must wait for
        detach = threading.Thread(target=db.sql, args=("ALTER TABLE m DETACH PARTITION m_1 CONCURRENTLY",))
        detach.start()
        wait_until(lambda: db.scalar("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == "1",
                   10, 0.05, "the detach's first transaction committed")
        a.query("INSERT INTO m_1 VALUES (2)")
        time.sleep(0.3)
        assert detach.is_alive()   # it waits for this transaction
        a.query("COMMIT")
        detach.join(30)
    assert not detach.is_alive()
    assert db.scalar("SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == "0"
    db.sql("INSERT INTO m VALUES (12)")
    db.wait_wal_count(2 + 1 + 1)
    rows = db.rows()
    got = [[(r.op, (r.before or r.after)["id"]) for r in g] for g in by_tx(rows)]
    assert got == [[("c", 1), ("c", 11)], [("d", 1)], [("c", 12)]], got
    assert sorted(k[0] for k in replay_ids(rows)) == [int(x[0]) for x in db.query("SELECT id FROM m ORDER BY 1")]


def replay_ids(rows):
    keys = set()
    for r in rows:
        if r.op == "d":
            keys.discard((r.before["id"],))
        else:
            keys.add((r.after["id"],))
    return keys
