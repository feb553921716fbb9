"""Chaos: three sessions run random transactions on three published tables
(a plain one, a REPLICA IDENTITY FULL one with TOASTed values, a partitioned
one whose rows move between partitions) while every kind of fault hits in
turn: the worker terminated and SIGKILLed, nats-server killed and stopped,
Postgres shut down `immediate`, a column added, a partition detached and
attached again. Some transactions roll back, some roll back to a savepoint,
some are large enough to be streamed (logical_decoding_work_mem = 64kB),
some truncate the partitioned table. Snapshots of the tables are requested
between the faults, and once more after the last one.

Afterwards the wal stream, read from the start and applied in stream order
(insert, update, delete, truncate by key; an unchanged TOASTed value keeps
the value before), must give exactly the rows of the tables: nothing
committed is missing, nothing rolled back is there, nothing is applied
twice. Message ids are unique and in commit order. Every snapshot that
finished, merged with the stream by the README's rule, gives exactly its
table too; one that failed has no EOF.

The servers are this test's own (`nats`/`pg` fixtures of test_faults)."""

import os
import random
import signal
import threading
import time

from creek_helpers import CreekDb, assert_msg_ids, unique_db_name
from helpers import wait_until
from test_snapshots import read_snapshot, snapshot_state, visible
from pgwire import PgConn, PgError
from servers import NatsServer, PgCluster, port_open

SEED = int(os.environ.get("CREEK_CHAOS_SEED", "7"))
FAULTS = ["term", "sigkill", "nats_kill", "nats_stop", "pg_immediate", "add_column", "detach_attach"]
KEYS = {"acct": ("id",), "fullt": ("id",), "part": ("id", "k")}
COLS = {"acct": ("id", "bal", "note"), "fullt": ("id", "v", "big"), "part": ("id", "k", "v")}


class Writer(threading.Thread):
    """Random transactions on its own session and its own range of ids,
    until stopped; reconnects after a crash."""

    def __init__(self, port, dbname, n, stop):
        super().__init__(daemon=True)
        self.port, self.dbname, self.stop = port, dbname, stop
        self.rnd = random.Random(SEED * 100 + n)
        self.base = (n + 1) * 1000000
        self.next = 0
        self.committed = self.rolled_back = self.failed = 0

    def new_id(self):
        self.next += 1
        return self.base + self.next

    def old_id(self):
        return self.base + self.rnd.randint(1, max(1, self.next))

    def change(self):
        r = self.rnd.random()
        if r < 0.25:
            note = self.rnd.choice(["NULL", "'n'", "'note %s'" % ("x" * self.rnd.randint(0, 50))])
            return "INSERT INTO acct VALUES (%d, %d, %s)" % (self.new_id(), self.rnd.randint(0, 1000), note)
        if r < 0.35:
            return "UPDATE acct SET bal = bal + 1 WHERE id = %d" % self.old_id()
        if r < 0.40:
            return "UPDATE acct SET id = %d WHERE id = %d" % (self.new_id(), self.old_id())
        if r < 0.45:
            return "DELETE FROM acct WHERE id = %d" % self.old_id()
        if r < 0.55:
            # 400 x 32 characters: TOASTed, so updates of v leave it unchanged
            big = "repeat(md5('%d'), %d)" % (self.rnd.randint(0, 1 << 30), self.rnd.choice([1, 400]))
            return "INSERT INTO fullt VALUES (%d, 'v', %s)" % (self.new_id(), big)
        if r < 0.62:
            return "UPDATE fullt SET v = v || 'u' WHERE id = %d" % self.old_id()
        if r < 0.66:
            return "DELETE FROM fullt WHERE id = %d" % self.old_id()
        if r < 0.80:
            return "INSERT INTO part VALUES (%d, %d, 'p')" % (self.new_id(), self.rnd.randint(0, 399))
        if r < 0.90:
            # moves the row to another partition: d then c
            return "UPDATE part SET k = (k + 150) %% 400, v = v || 'm' WHERE id = %d" % self.old_id()
        return "DELETE FROM part WHERE id = %d" % self.old_id()

    def transaction(self):
        kind = self.rnd.random()
        if kind < 0.01:
            lo = self.base + self.next
            self.next += 2000
            return ["INSERT INTO acct SELECT g, g %% 7, 'bulk' FROM generate_series(%d, %d) g" % (lo + 1, lo + 2000),
                    "UPDATE acct SET bal = bal + 100 WHERE id BETWEEN %d AND %d" % (lo + 1, lo + 1000)]
        if kind < 0.015:
            return ["TRUNCATE part"]
        stmts = [self.change() for _ in range(self.rnd.randint(1, 6))]
        if self.rnd.random() < 0.2:
            stmts += ["SAVEPOINT s"] + [self.change() for _ in range(self.rnd.randint(1, 4))] + \
                ["ROLLBACK TO SAVEPOINT s"] + [self.change() for _ in range(self.rnd.randint(0, 2))]
        return stmts

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = PgConn(self.port, self.dbname, timeout=30, appname="creek-chaos")
                stmts = self.transaction()
                end = "ROLLBACK" if self.rnd.random() < 0.1 else "COMMIT"
                conn.query("BEGIN")
                for s in stmts:
                    conn.query(s)
                conn.query(end)
                if end == "COMMIT":
                    self.committed += 1
                else:
                    self.rolled_back += 1
            except (PgError, ConnectionError, OSError):
                # a crash, a partition detached for a moment, a lock timeout:
                # whatever did not commit is not in the table
                self.failed += 1
                try:
                    conn.query("ROLLBACK")
                except Exception:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                    time.sleep(0.2)
            time.sleep(self.rnd.random() * 0.01)
        if conn is not None:
            conn.close()


def inflict(fault, pg, nats, db, rnd):
    if fault == "term":
        pg.psql("SELECT pg_terminate_backend(pid) FROM creek.pg_stat_creek WHERE pid IS NOT NULL",
                db=db.name)
    elif fault == "sigkill":
        # the postmaster restarts every process: writers lose their sessions
        pid = pg.scalar("SELECT pid FROM creek.pg_stat_creek", db=db.name)
        if pid:
            os.kill(int(pid), signal.SIGKILL)
    elif fault in ("nats_kill", "nats_stop"):
        nats.kill() if fault == "nats_kill" else nats.stop()
        time.sleep(rnd.uniform(0.5, 2.5))
        wait_until(lambda: not port_open(nats.port), 10, 0.05, "nats-server's port free")
        nats.start()
    elif fault == "pg_immediate":
        pg.stop("immediate")
        time.sleep(rnd.uniform(0, 1))
        pg.start()
    elif fault == "add_column":
        n = rnd.randint(1, 10 ** 6)
        pg.psql("SET lock_timeout = '5s'; ALTER TABLE fullt ADD COLUMN c%d int DEFAULT %d" % (n, n),
                db=db.name, check=False)
    elif fault == "detach_attach":
        # publishes a d for each row of part1, then a c for each
        pg.psql("SET lock_timeout = '5s'; ALTER TABLE part DETACH PARTITION part1",
                db=db.name, check=False)
        pg.psql("SET lock_timeout = '5s'; "
                "ALTER TABLE part ATTACH PARTITION part1 FOR VALUES FROM (100) TO (200)",
                db=db.name, check=False)


def replay(rows, state=None, skip=lambda r: False):
    """The tables as the stream tells them: {table: {key: row}} (starting
    from `state`), and what went wrong applying it."""
    state = state or {t: {} for t in KEYS}
    errors = []
    for r in rows:
        if skip(r):
            continue
        table = r.source["table"]
        keys, st = KEYS[table], state[table]
        if r.op == "t":
            st.clear()
            continue
        if r.op in ("u", "u_pk", "d"):
            old_key = tuple(r.before[k] for k in keys)
            if old_key not in st:
                errors.append(("no such row", r))
                continue
        if r.op == "c":
            key = tuple(r.after[k] for k in keys)
            if key in st:
                errors.append(("inserted twice", r))
            st[key] = dict(r.after)
        elif r.op == "d":
            del st[old_key]
        else:
            old = st.pop(old_key)
            new = {c: (old.get(c) if v == {} else v) for c, v in r.after.items()}
            key = tuple(new[k] for k in keys)
            if key in st:
                errors.append(("updated onto another row", r))
            if (r.op == "u_pk") != (key != old_key):
                errors.append(("op %s but key %r -> %r" % (r.op, old_key, key), r))
            st[key] = new
    return state, errors


def table_state(db, table):
    cols = COLS[table]
    real = {}
    for row in db.query("SELECT %s FROM %s" % (", ".join(cols), table)):
        d = dict(zip(cols, row))
        real[tuple(int(d[k]) for k in KEYS[table])] = d
    return real


def assert_same(table, state, real, what):
    cols = COLS[table]
    got = {k: {c: None if v.get(c) is None else str(v[c]) for c in cols} for k, v in state.items()}
    assert sorted(got) == sorted(real), "%s: %s: keys missing %r, extra %r" % (
        table, what, sorted(set(real) - set(got))[:10], sorted(set(got) - set(real))[:10])
    bad = [k for k in real if got[k] != real[k]]
    assert not bad, "%s: %s: %d rows differ, e.g. %r: %.300r, table %.300r" % (
        table, what, len(bad), bad[0], got[bad[0]], real[bad[0]])


def request_snapshot(db, table):
    try:
        return table, db.scalar("SELECT creek.snapshot('%s')" % table)
    except Exception as e:  # Postgres is down for a moment
        print("snapshot of %s not requested: %s" % (table, e))
        return None


def check_snapshot(db, table, subject, rows, real):
    """A snapshot with its EOF, merged with the stream, gives the table; the
    view says it finished (unless Postgres restarted since and forgot it).
    One without EOF did not finish. Returns its state."""
    st = db.query("SELECT state FROM creek.pg_stat_creek_snapshots WHERE subject = '%s'" % subject)
    state = st[0][0] if st else "forgotten"
    try:
        header, snap_rows, eof = read_snapshot(db, subject)
    except AssertionError:  # nothing published: failed before its header
        eof = False
    if not eof:
        assert state != "finished", "snapshot %s finished without EOF" % subject
        return state
    assert state in ("finished", "forgotten"), "snapshot %s is %s but has its EOF" % (subject, state)
    seen = visible(header)
    start = {t: {} for t in KEYS}
    start[table] = {tuple(r[k] for k in KEYS[table]): dict(r) for r in snap_rows}
    merged, errors = replay(rows, start, lambda r: r.source["table"] != table or r.seq <= header["wal_seq"]
                            or seen(r.source["tx_id"]))
    assert not errors, (subject, errors[:10])
    assert_same(table, merged[table], real, "snapshot %s merged with the stream" % subject)
    return state + " (merged)"


def test_random_transactions_under_every_fault():
    rnd = random.Random(SEED)
    with NatsServer() as nats, PgCluster(conf={"creek.nats_url": nats.url,
                                              "logical_decoding_work_mem": "64kB"}) as pg:
        db = CreekDb(pg, nats.url, unique_db_name("chaos"))
        try:
            db.sql("CREATE TABLE acct (id int PRIMARY KEY, bal bigint, note text);"
                   "CREATE TABLE fullt (id int PRIMARY KEY, v text, big text);"
                   "ALTER TABLE fullt REPLICA IDENTITY FULL;"
                   "CREATE TABLE part (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);"
                   "CREATE TABLE part0 PARTITION OF part FOR VALUES FROM (0) TO (100);"
                   "CREATE TABLE part1 PARTITION OF part FOR VALUES FROM (100) TO (200);"
                   "CREATE TABLE part2 PARTITION OF part FOR VALUES FROM (200) TO (400);")
            for t in KEYS:
                db.add_table(t)
            stop = threading.Event()
            snapshots = []
            writers = [Writer(pg.port, db.name, n, stop) for n in range(3)]
            for w in writers:
                w.start()
            faults = FAULTS[:]
            rnd.shuffle(faults)
            try:
                for fault in faults:
                    time.sleep(rnd.uniform(3, 5))
                    print("fault:", fault)
                    inflict(fault, pg, nats, db, rnd)
                    if rnd.random() < 0.6:
                        snapshots.append(request_snapshot(db, rnd.choice(sorted(KEYS))))
                # and with the writers still running, one of each table that has time to finish
                db.wait_streaming(60)  # after a SIGKILL, Postgres is still recovering
                last = [wait_until(lambda: request_snapshot(db, t), 30, 0.5, "snapshot of " + t)
                        for t in sorted(KEYS)]
                for _, subject in last:
                    assert snapshot_state(db, subject, timeout=120)[0] == "finished"
                snapshots += last
                time.sleep(1)
            finally:
                stop.set()
                for w in writers:
                    w.join(60)
            print("transactions: %d committed, %d rolled back, %d failed" % (
                sum(w.committed for w in writers), sum(w.rolled_back for w in writers),
                sum(w.failed for w in writers)))
            assert sum(w.committed for w in writers) > 1000

            db.reconnect_nats()
            db.wait_streaming(60)
            db.wait_caught_up(180)
            rows = db.rows()
            print("messages:", len(rows))
            assert_msg_ids(rows)
            state, errors = replay(rows)
            assert not errors, errors[:10]
            real = {t: table_state(db, t) for t in KEYS}
            for table in KEYS:
                assert_same(table, state[table], real[table], "the stream")
                print("%s: %d rows" % (table, len(real[table])))
            ends = [(t, s, check_snapshot(db, t, s, rows, real[t])) for t, s in filter(None, snapshots)]
            print("snapshots:", [(t, st) for t, _, st in ends])
            # every request ended, one way or the other: none is kept any more
            wait_until(lambda: db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0", 30, 0.5,
                       "creek.snapshot_requests emptied")
        finally:
            db.close()
