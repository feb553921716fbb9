"""End-to-end tests of partitioned tables (README, "Partitioned tables").

creek.add_table() on a partitioned table publishes the changes of all its
partitions, present and future, on the partitioned table's subject with its
writer schema, in commit order; rows are converted to its columns even where
a partition's attribute numbers differ. A TRUNCATE that empties the whole
partitioned table is published as 't'; one of some partitions, and DETACH /
ATTACH PARTITION, as a 'd' / 'c' per row they take out or bring in
(test_partition_ddl.py has more of these).

Each test creates its own database (make_db) in the session cluster."""

import datetime
import json

import pytest

from creek_helpers import assert_msg_ids

pytestmark = pytest.mark.filterwarnings("ignore:Unknown local-timestamp-micros")

# The partitioned table m, partitioned by range of `at`:
#   m_2023     PARTITION OF m                        (same attribute numbers)
#   m_2024     created on its own, other column order and a dropped column,
#              then ATTACH PARTITION                 (attribute numbers differ)
#   m_2025     PARTITION OF m, itself partitioned by hash of id:
#     m_2025_0 PARTITION OF m_2025
#     m_2025_1 created on its own, other order, ATTACH PARTITION to m_2025
#   (after creek.add_table('m'))
#   m_2026     created on its own, other order, ATTACH PARTITION
#   m_2027     PARTITION OF m
# m and m_2023 have a dropped column (dropped after m_2023 was created).
SETUP = """
CREATE TABLE m (id int NOT NULL, gone int, at date NOT NULL, v text, n numeric,
                PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE m_2023 PARTITION OF m FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
ALTER TABLE m DROP COLUMN gone;
CREATE TABLE m_2024 (n numeric, junk text, v text, at date NOT NULL, id int NOT NULL);
ALTER TABLE m_2024 DROP COLUMN junk;
ALTER TABLE m ATTACH PARTITION m_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY HASH (id);
CREATE TABLE m_2025_0 PARTITION OF m_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE m_2025_1 (v text, id int NOT NULL, n numeric, at date NOT NULL);
ALTER TABLE m_2025 ATTACH PARTITION m_2025_1 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE notpub (id int PRIMARY KEY);
CREATE TABLE other (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE other_1 PARTITION OF other FOR VALUES FROM ('2000-01-01') TO ('3000-01-01');
"""

AFTER_ADD = """
CREATE TABLE m_2026 (at date NOT NULL, n numeric, id int NOT NULL, v text);
ALTER TABLE m ATTACH PARTITION m_2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE m_2027 PARTITION OF m FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
"""

BIG = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 1000) g)"


def lit(v):
    return "NULL" if v is None else "'" + str(v).replace("'", "''") + "'"


def pg_state(db, table="m"):
    """{(id, at text): row as creek publishes it} of what Postgres holds."""
    cols = [r[0] for r in db.query(
        "SELECT attname FROM pg_attribute WHERE attrelid = '%s'::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum" % table)]
    out = {}
    for r in db.query("SELECT %s FROM %s" % (", ".join(cols), table)):
        row = dict(zip(cols, r))
        key = (int(row["id"]), row["at"])
        row["id"] = int(row["id"])
        row["at"] = datetime.date.fromisoformat(row["at"])
        if row.get("extra") is not None:
            row["extra"] = int(row["extra"])
        out[key] = row
    return out


def key_of(record):
    return (record["id"], record["at"].isoformat())


def leaf_of(db, id_, at):
    return db.scalar("SELECT tableoid::regclass::text FROM m WHERE id = %d AND at = '%s'" % (id_, at))


class Recorder:
    """Runs transactions on one session and remembers, per transaction, the
    messages expected (op, before key, after key, unchanged columns) and what
    Postgres holds after it."""

    def __init__(self, db):
        self.db = db
        self.conn = db.connect()
        self.txs = []

    def tx(self, stmts, events):
        self.conn.query("BEGIN; %s; COMMIT" % "; ".join(stmts))
        self.txs.append((events, pg_state(self.db)))

    def close(self):
        self.conn.close()


def c(key):
    return ("c", None, key, ())


def u(key, unchanged=()):
    return ("u", key, key, tuple(unchanged))


def u_pk(old, new):
    return ("u_pk", old, new, ())


def d(key):
    return ("d", key, None, ())


def t(table="m"):
    return ("t", None, None, (), table)


def on(table, event):
    """event, published on table's subject rather than m's."""
    return event[:4] + (table,)


def check_messages(db, rows, txs):
    """rows (every message of the wal stream) against the recorded
    transactions; each event is published on m's subject unless it names
    another table."""
    groups = []
    for r in rows:
        if not groups or groups[-1][0].commit_lsn != r.commit_lsn:
            groups.append([])
        groups[-1].append(r)
    expected = [(ev, state) for ev, state in txs if ev]
    assert len(groups) == len(expected), "%d transactions published, expected %d: %r" % (
        len(groups), len(expected), [[(r.op, r.before, r.after) for r in g] for g in groups])
    for g, (events, state) in zip(groups, expected):
        assert [(r.op, r.before and key_of(r.before), r.after and key_of(r.after)) for r in g] == \
            [ev[:3] for ev in events], g
        for r, ev in zip(g, events):
            op, b, a, unchanged = ev[:4]
            table = ev[4] if len(ev) > 4 else "m"
            where = repr(r)
            assert r.subject == db.wal_subject("public", table), where
            assert (r.source["schema"], r.source["table"]) == ("public", table), where
            if op == "t":
                assert r.before is None and r.after is None, where
                continue
            if b is not None:
                assert r.before == {"id": b[0], "at": datetime.date.fromisoformat(b[1])}, where
            else:
                assert r.before is None, where
            if a is None:
                assert r.after is None, where
                continue
            if a not in state:
                continue  # gone by the end of its transaction: its key was checked
            want = dict(state[a])
            for col in unchanged:
                assert r.after[col] == {}, "%s: %s should be unchanged" % (where, col)
                want[col] = {}
            assert r.after == want, "%s: Postgres holds %r" % (where, want)


def replay(rows, initial=None):
    """A consumer's copy of the table: apply c/u/u_pk/d/t in order."""
    copy = dict(initial or {})
    for r in rows:
        if r.op == "t":
            copy.clear()
        elif r.op == "d":
            del copy[key_of(r.before)]
        else:
            if r.op == "u_pk":
                del copy[key_of(r.before)]
            old = copy.get(key_of(r.after), {})
            copy[key_of(r.after)] = {k: (old[k] if v == {} else v) for k, v in r.after.items()}
    return copy


def test_partition_changes_published_on_root_subject(make_db):
    """Inserts, updates (unchanged TOASTed values included), key changes,
    rows moved between partitions and deletes, on every partition, through m
    and straight on partitions: all on m's subject, with m's schema, values as
    Postgres holds them, in commit order."""
    db = make_db("p_changes")
    db.sql(SETUP)
    db.add_table("m")
    db.sql(AFTER_ADD)

    # the partitions' attribute numbers really differ from m's
    attnums = dict(db.query(
        "SELECT attrelid::regclass::text, string_agg(attnum::text, ',' ORDER BY attname) "
        "FROM pg_attribute WHERE attrelid::regclass::text IN "
        "('m', 'm_2023', 'm_2024', 'm_2025_1', 'm_2026') AND attname IN ('id', 'at', 'v', 'n') "
        "GROUP BY 1"))
    assert attnums["m"] == attnums["m_2023"]
    for p in ("m_2024", "m_2025_1", "m_2026"):
        assert attnums[p] != attnums["m"], attnums

    rec = Recorder(db)
    # three rows in each hash partition of m_2025
    ids_2025 = [hash_id(db, 0, 21, k) for k in range(3)] + [hash_id(db, 1, 21, k) for k in range(3)]
    rows_2025 = [(i, at_2025(i)) for i in ids_2025]
    ins = [(1, "2023-03-01", "a", "1.5"), (13, "2023-12-31", "x", "3"),
           (2, "2024-04-01", "b", "2.25")] + \
        [(i, at, "h%d" % i, str(i)) for i, at in rows_2025] + \
        [(9, "2026-06-01", None, "-0.001"), (10, "2027-07-01", "z", None)]
    rec.tx(["INSERT INTO m (id, at, v, n) VALUES (%d, %s, %s, %s)" % (i, lit(at), lit(v), lit(n))
            for i, at, v, n in ins]
           + ["INSERT INTO notpub VALUES (1)", "INSERT INTO other VALUES (1, '2020-01-01')",
              # straight into a partition whose columns are in another order
              "INSERT INTO m_2024 (n, v, at, id) VALUES (11.5, 'direct', '2024-11-11', 11)",
              "INSERT INTO m_2024 (id, at, v, n) VALUES (12, '2024-12-12', %s, 0)" % BIG],
           [c((i, at)) for i, at, _, _ in ins] + [c((11, "2024-11-11")), c((12, "2024-12-12"))])
    # every leaf holds rows, both hash partitions of m_2025 included
    leaves = {r[0] for r in db.query("SELECT DISTINCT tableoid::regclass::text FROM m")}
    assert leaves == {"m_2023", "m_2024", "m_2025_0", "m_2025_1", "m_2026", "m_2027"}, leaves
    assert int(db.scalar("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                         "WHERE relname = 'm_2024'")) > 0

    # an update on every partition; through m and straight on a partition
    keys = [(i, at) for i, at, _, _ in ins]
    rec.tx(["UPDATE m SET v = coalesce(v, '') || '+', n = coalesce(n, 0) * 2 "
            "WHERE id = %d" % i for i, _ in keys]
           + ["UPDATE other SET at = '2021-01-01' WHERE id = 1"],
           [u(k) for k in keys])
    rec.tx(["UPDATE m_2026 SET v = 'straight' WHERE id = 9",
            # a TOASTed value the update does not touch
            "UPDATE m SET n = n + 1 WHERE id = 12"],
           [u((9, "2026-06-01")), u((12, "2024-12-12"), ["v"])])
    # the key changes within a partition: u_pk
    rec.tx(["UPDATE m SET id = 102 WHERE id = 2", "UPDATE m_2026 SET id = 109 WHERE id = 9"],
           [u_pk((2, "2024-04-01"), (102, "2024-04-01")),
            u_pk((9, "2026-06-01"), (109, "2026-06-01"))])
    # rows move between partitions: a delete on one, an insert on the other.
    # Within m_2025 (hash of id), a new id moves a row to the other hash
    # partition (d + c) or keeps it in its own (u_pk).
    a, b = ids_2025[0], ids_2025[3]
    rem_a, rem_b = int(leaf_of(db, a, at_2025(a))[-1]), int(leaf_of(db, b, at_2025(b))[-1])
    new_a = hash_id(db, 1 - rem_a, 1000)
    new_b = hash_id(db, rem_b, 2000)
    rec.tx(["UPDATE m SET at = '2026-01-15' WHERE id = 1",
            "UPDATE m SET at = '2023-02-02', v = 'moved' WHERE id = 102",
            "UPDATE m SET id = %d WHERE id = %d" % (new_a, a),
            "UPDATE m SET id = %d WHERE id = %d" % (new_b, b)],
           [d((1, "2023-03-01")), c((1, "2026-01-15")),
            d((102, "2024-04-01")), c((102, "2023-02-02")),
            d((a, at_2025(a))), c((new_a, at_2025(a))),
            u_pk((b, at_2025(b)), (new_b, at_2025(b)))])
    assert (leaf_of(db, 1, "2026-01-15"), leaf_of(db, 102, "2023-02-02"),
            leaf_of(db, new_a, at_2025(a)), leaf_of(db, new_b, at_2025(b))) == (
        "m_2026", "m_2023", "m_2025_%d" % (1 - rem_a), "m_2025_%d" % rem_b)

    # deletes on every partition, through m and straight on partitions
    rec.tx(["DELETE FROM m WHERE id = 1", "DELETE FROM m_2023 WHERE id = 102",
            "DELETE FROM m WHERE id = %d" % new_a,
            "DELETE FROM m_2025_%d WHERE id = %d" % (rem_b, new_b),
            "DELETE FROM m WHERE id = 109", "DELETE FROM m_2027 WHERE id = 10",
            "DELETE FROM m_2023 WHERE id = 13",
            "DELETE FROM notpub", "DELETE FROM other"],
           [d((1, "2026-01-15")), d((102, "2023-02-02")), d((new_a, at_2025(a))),
            d((new_b, at_2025(b))), d((109, "2026-06-01")), d((10, "2027-07-01")),
            d((13, "2023-12-31"))])
    # a transaction that touches only unpublished tables publishes nothing
    rec.tx(["INSERT INTO notpub VALUES (2)", "INSERT INTO other VALUES (2, '2022-02-02')"], [])
    # a column added to m (it recurses to every partition): a new schema
    rec.tx(["ALTER TABLE m ADD COLUMN extra int DEFAULT 7",
            "INSERT INTO m_2026 (id, at, v) VALUES (20, '2026-02-20', 'with extra')",
            "UPDATE m SET extra = 8 WHERE id = %d" % ids_2025[1]],
           [c((20, "2026-02-20")), u((ids_2025[1], at_2025(ids_2025[1])))])
    final = pg_state(db)
    rec.close()

    n = sum(len(ev) for ev, _ in rec.txs)
    db.wait_wal_count(n)
    rows = db.rows()
    assert_msg_ids(rows)
    check_messages(db, rows, rec.txs)
    # one schema per shape of m, none for the partitions: on m's schema subject
    fps = []
    for r in rows:
        if not fps or fps[-1] != r.body["fingerprint"]:
            fps.append(r.body["fingerprint"])
    assert len(fps) == 2, fps
    msgs = db.schema_messages()
    docs = [json.loads(m.data) for m in msgs]
    assert [(m.subject, doc["source"], doc["fingerprint"]) for m, doc in zip(msgs, docs)] == [
        (db.schema_subject("public", "m"), "public.m", fp) for fp in fps]
    fields = [[f["name"] for f in json.loads(doc["schema"])["fields"][5]["type"][1]["fields"]]
              for doc in docs]
    assert fields == [["id", "at", "v", "n"], ["id", "at", "v", "n", "extra"]]
    key_fields = [f["name"] for f in json.loads(docs[0]["schema"])["fields"][4]["type"][1]["fields"]]
    assert key_fields == ["id", "at"]
    # a consumer applying the messages holds what Postgres holds (rows not
    # written since ADD COLUMN lack the new column's default)
    copy = replay(rows)
    assert set(copy) == set(final)
    for k, row in copy.items():
        assert row == {col: final[k][col] for col in row}, k


# one row in every leaf partition of m: (id, at, leaf)
FILL = [(1, "2023-05-05", "m_2023"), (2, "2024-05-05", "m_2024"), (3, "2025-05-05", None),
        (4, "2025-06-06", None), (6, "2026-05-05", "m_2026"), (7, "2027-05-05", "m_2027")]


def fill(db, rec, base):
    """Inserts a row in every leaf of m (ids base + 1...): one transaction."""
    ids = [(base + i, at) for i, at, _ in FILL]
    # the two m_2025 rows: one per hash partition
    ids[2] = (hash_id(db, 0, base + 10), ids[2][1])
    ids[3] = (hash_id(db, 1, base + 10), ids[3][1])
    rec.tx(["INSERT INTO m (id, at, v) VALUES (%d, '%s', 'fill')" % k for k in ids],
           [c(k) for k in ids])
    assert {leaf_of(db, *k) for k in ids} == {
        "m_2023", "m_2024", "m_2025_0", "m_2025_1", "m_2026", "m_2027"}
    return ids


def test_truncate(make_db):
    """A TRUNCATE that empties the whole partitioned table publishes one 't'
    on its subject; one that truncates only some of its partitions publishes
    a 'd' for each row it removes (before the statement's other messages),
    and nothing when creek.publish_partition_ddl is off (the server log says
    so)."""
    db = make_db("p_trunc")
    db.sql(SETUP)
    db.add_table("m")
    db.sql(AFTER_ADD + "CREATE TABLE solo (id int PRIMARY KEY)")
    db.add_table("solo")
    log_from = db.pg.log_offset()
    rec = Recorder(db)
    k = fill(db, rec, 0)
    # some partitions only: their rows, as deletes
    rec.tx(["TRUNCATE m_2023"], [d(k[0])])
    rec.tx(["INSERT INTO m VALUES (50, '2023-01-02')"], [c((50, "2023-01-02"))])
    rec.tx(["TRUNCATE m_2025"], [d(k[2]), d(k[3])])  # a partition with partitions of its own
    rec.tx(["TRUNCATE m_2024, m_2026, m_2023"], [d(k[1]), d(k[4]), d((50, "2023-01-02"))])
    rec.tx(["TRUNCATE m_2027"], [d(k[5])])
    rec.tx(["TRUNCATE m_2023"], [])           # already empty
    k = fill(db, rec, 50)
    # every partition, in one statement: the table is empty
    rec.tx(["TRUNCATE m_2023, m_2024, m_2025_0, m_2025_1, m_2026, m_2027"], [t()])
    assert db.scalar("SELECT count(*) FROM m") == "0"
    fill(db, rec, 100)
    # TRUNCATE m truncates every partition as well: one message
    rec.tx(["TRUNCATE m"], [t()])
    fill(db, rec, 200)
    # with other tables, published or not; twice in one transaction
    rec.tx(["TRUNCATE notpub, m, solo", "INSERT INTO m VALUES (300, '2024-03-03')",
            "TRUNCATE other, m"],
           [t(), t("solo"), c((300, "2024-03-03")), t()])
    k = fill(db, rec, 400)
    rec.tx(["TRUNCATE m_2023, solo"], [d(k[0]), t("solo")])
    # rolled back: nothing
    rec.tx(["TRUNCATE m_2024", "ROLLBACK", "BEGIN"], [])
    # creek.publish_partition_ddl off: the rows leave without a message
    rec.tx(["SET LOCAL creek.publish_partition_ddl = off", "TRUNCATE m_2024"], [])
    ghost = k[1]
    final = pg_state(db)
    rec.close()

    n = sum(len(ev) for ev, _ in rec.txs)
    db.wait_wal_count(n)
    rows = db.rows()
    assert_msg_ids(rows)
    check_messages(db, rows, rec.txs)
    # the consumer's copy is the table, but for the row truncated with the setting off
    copy = replay([r for r in rows if r.source["table"] == "m"])
    assert set(copy) - set(final) == {ghost}
    assert set(final) <= set(copy)
    log = db.pg.log(log_from)
    assert log.count("creek does not publish the TRUNCATE of partition") == 1, log
    assert 'creek does not publish the TRUNCATE of partition "public.m_2024" of table "public.m"' in log
    # creek.partition_rows carried them and keeps nothing
    assert db.scalar("SELECT count(*) FROM creek.partition_rows") == "0"


def test_attach_detach_and_membership(make_db):
    """Which table a partition's changes are published through follows
    ATTACH/DETACH PARTITION and creek.add_table/remove_table in commit order,
    also within a transaction."""
    db = make_db("p_attach")
    db.sql(SETUP)
    db.add_table("m")
    db.sql(AFTER_ADD + "CREATE TABLE solo (v text, n numeric, at date NOT NULL, "
           "id int NOT NULL, PRIMARY KEY (id, at))")
    db.add_table("solo")
    r0, r1 = hash_id(db, 0, 1), hash_id(db, 1, 1)
    rec = Recorder(db)
    rec.tx(["INSERT INTO m_2027 VALUES (1, '2027-01-01')"], [c((1, "2027-01-01"))])
    # detached: its rows leave m ('d'), its changes are no longer m's, from
    # the next statement on
    rec.tx(["INSERT INTO m_2027 VALUES (2, '2027-01-02')",
            "ALTER TABLE m DETACH PARTITION m_2027",
            "INSERT INTO m_2027 VALUES (3, '2027-01-03')",
            "INSERT INTO m VALUES (4, '2026-01-04')"],
           [c((2, "2027-01-02")), d((1, "2027-01-01")), d((2, "2027-01-02")), c((4, "2026-01-04"))])
    rec.tx(["INSERT INTO m_2027 VALUES (5, '2027-01-05')"], [])
    # attached: its rows enter m ('c')
    rec.tx(["ALTER TABLE m ATTACH PARTITION m_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')",
            "INSERT INTO m_2027 VALUES (6, '2027-01-06')"],
           [c((i, "2027-01-0%d" % i)) for i in (1, 2, 3, 5, 6)])
    # a partition with partitions of its own takes them along
    rec.tx(["INSERT INTO m_2025_0 VALUES (%d, '2025-01-01')" % r0], [c((r0, "2025-01-01"))])
    rec.tx(["ALTER TABLE m DETACH PARTITION m_2025"], [d((r0, "2025-01-01"))])
    rec.tx(["INSERT INTO m_2025 VALUES (%d, '2025-01-02'), (%d, '2025-01-02')" % (r0, r1)], [])
    rec.tx(["ALTER TABLE m ATTACH PARTITION m_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
            "INSERT INTO m_2025_1 (id, at) VALUES (%d, '2025-01-03')" % r1],
           [c((r0, "2025-01-01")), c((r0, "2025-01-02")), c((r1, "2025-01-02")), c((r1, "2025-01-03"))])
    # a table published on its own keeps its own subject once attached
    rec.tx(["ALTER TABLE m ATTACH PARTITION solo FOR VALUES FROM ('2030-01-01') TO ('2031-01-01')",
            "INSERT INTO m (id, at, v, n) VALUES (7, '2030-01-07', 'solo', 7)",
            "INSERT INTO m VALUES (8, '2023-01-08')"],
           [on("solo", c((7, "2030-01-07"))), c((8, "2023-01-08"))])
    # membership: removing m stops its partitions; a partition can then be
    # published on its own, and m again once it is removed
    rec.tx(["SELECT creek.remove_table('m')", "INSERT INTO m VALUES (9, '2023-01-09')"], [])
    rec.tx(["SELECT creek.add_table('m_2023')", "INSERT INTO m VALUES (10, '2023-01-10')",
            "INSERT INTO m VALUES (11, '2024-01-11')"],
           [on("m_2023", c((10, "2023-01-10")))])
    rec.tx(["SELECT creek.remove_table('m_2023')", "SELECT creek.remove_table('solo')",
            "SELECT creek.add_table('m')", "INSERT INTO m VALUES (12, '2023-01-12')",
            "INSERT INTO solo (id, at) VALUES (13, '2030-01-13')"],
           [c((12, "2023-01-12")), c((13, "2030-01-13"))])
    rec.close()

    n = sum(len(ev) for ev, _ in rec.txs)
    db.wait_wal_count(n)
    rows = db.rows()
    assert_msg_ids(rows)
    check_messages(db, rows, rec.txs)


def hash_id(db, remainder, start, skip=0):
    """The first id from start on (after skip others) that m_2025 puts in
    its hash partition remainder."""
    return int(db.scalar("SELECT g FROM generate_series(%d, %d) g WHERE "
                         "satisfies_hash_partition('m_2025'::regclass, 2, %d, g) "
                         "ORDER BY g OFFSET %d LIMIT 1" % (start, start + 200, remainder, skip)))


def at_2025(i):
    return (datetime.date(2025, 1, 1) + datetime.timedelta(days=i)).isoformat()
