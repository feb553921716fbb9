"""Snapshots: creek.snapshot() and NS._snapshot publish a header, every row
(Avro, the header's schema) and EOF; a consumer that merges the snapshot with
the change stream by the README's rule ends with exactly the table, even with
writers inserting, updating and deleting during the snapshot; the queue, the
view, cancelling and failures."""

import io
import json
import random
import re
import threading
import time

import avro.io
import pytest

import avrocheck
from creek_helpers import PgConn, PgError, read_stream
from helpers import wait_until


def snapshot_state(db, subject, timeout=120):
    """Waits until the snapshot has ended; returns its row of the view."""
    def ended():
        rows = db.query("SELECT state, rows_sent, approx_rows, error, origin FROM creek.pg_stat_creek_snapshots "
                        "WHERE subject = '%s'" % subject)
        return rows[0] if rows and rows[0][0] in ("finished", "failed") else None
    return wait_until(ended, timeout, 0.2, "snapshot %s to end" % subject)


def read_snapshot(db, subject):
    """(header dict, [row dicts], ended with EOF) as a consumer reads them."""
    msgs = read_stream(db.client, db.snap_stream, filter_subject=subject)
    assert msgs, "nothing on %s" % subject
    header = json.loads(msgs[0].data)
    assert avrocheck.b64url(avrocheck.fingerprint(header["schema"])) == header["fingerprint"]
    reader = avro.io.DatumReader(avrocheck.parse_schema(header["schema"]))
    asm = avrocheck.PartAssembler()
    rows, eof = [], False
    for m in msgs[1:]:
        data = asm.add(m.subject, m.headers, m.data)
        if data is None:
            continue
        assert not eof, "a message after EOF"
        if data == b"EOF":
            eof = True
            continue
        buf = io.BytesIO(data)
        rows.append(reader.read(avro.io.BinaryDecoder(buf)))
        assert buf.tell() == len(data)
    return header, rows, eof


def table_rows(db, sql="SELECT id, v, n FROM t"):
    return {int(r[0]): (r[1], None if r[2] is None else int(r[2])) for r in db.query(sql)}


def test_snapshot_rows_header_and_view(make_db):
    db = make_db("snap_basic")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint, ts timestamptz DEFAULT now())")
    db.sql("INSERT INTO t (id, v, n) SELECT g, 'v' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 10 END "
           "FROM generate_series(1, 3000) g")
    db.sql("ANALYZE t")
    subject = db.scalar("SELECT creek.snapshot('t')")
    assert subject.startswith("CREEK.%s.snap.public.t." % db.token)
    suffix = subject.rsplit(".", 1)[1]
    assert len(suffix) == len("20261123120501_123_ab12") and suffix[14] == "_" and suffix[18] == "_"
    state, sent, approx, err, origin = snapshot_state(db, subject)
    assert (state, sent, err, origin) == ("finished", "3000", None, "sql")
    assert int(approx) == 3000
    header, rows, eof = read_snapshot(db, subject)
    assert eof
    for k in ("topic", "fingerprint", "schema", "tx_id", "lsn", "at", "approx_rows", "xmin", "xmax", "xip",
              "wal_stream", "wal_seq"):
        assert k in header, k
    assert header["topic"] == subject and header["approx_rows"] == 3000
    assert header["wal_stream"] == db.wal_stream and header["tx_id"] == header["xmax"]
    got = {r["id"]: (r["v"], r["n"]) for r in rows}
    assert got == table_rows(db)
    assert all(r["ts"] is not None for r in rows)


def test_snapshot_of_a_table_that_is_not_published_and_errors(make_db):
    db = make_db("snap_err")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint); CREATE VIEW vw AS SELECT 1 AS x")
    db.sql("INSERT INTO t VALUES (1, 'a', 1)")
    subject = db.scalar("SELECT creek.snapshot('t')")    # SQL: any table the caller can read
    assert snapshot_state(db, subject)[0] == "finished"
    rc, out, err = db.pg.run_psql("SELECT creek.snapshot('vw')", db=db.name)
    assert rc != 0 and '"public.vw" is not a table' in err, err
    # requested in a transaction that rolls back: never runs
    db.sql("BEGIN; SELECT creek.snapshot('t'); ROLLBACK;")
    time.sleep(0.5)
    assert db.scalar("SELECT count(*) FROM creek.pg_stat_creek_snapshots "
                     "WHERE datname = current_database()") == "1"


class MixedWriter(threading.Thread):
    """Inserts, updates and deletes rows of t (id in 1..max_id), in one- to
    three-statement transactions, until stopped."""

    def __init__(self, db, seed, max_id):
        super().__init__(daemon=True)
        self.db, self.rng, self.max_id, self.seed = db, random.Random(seed), max_id, seed
        self.stop_flag = threading.Event()
        self.count = 0
        self.failed = 0
        self.error = None

    def run(self):
        try:
            conn = PgConn(self.db.pg.port, self.db.name, appname="creek-e2e-mixed")
            while not self.stop_flag.is_set():
                stmts = []
                for _ in range(self.rng.randint(1, 3)):
                    i = self.rng.randint(1, self.max_id)
                    op = self.rng.random()
                    if op < 0.4:
                        stmts.append("INSERT INTO t VALUES (%d, 'w%d', %d) ON CONFLICT (id) DO UPDATE "
                                     "SET v = excluded.v, n = t.n + 1" % (i, self.count, self.count))
                    elif op < 0.75:
                        stmts.append("UPDATE t SET v = 'u%d', n = coalesce(n, 0) + 1 WHERE id = %d" % (self.count, i))
                    elif op < 0.9:
                        stmts.append("DELETE FROM t WHERE id = %d" % i)
                    else:   # the key changes
                        j = self.rng.randint(self.max_id * self.seed + 1, self.max_id * (self.seed + 1))
                        stmts.append("UPDATE t SET id = %d WHERE id = %d AND NOT EXISTS "
                                     "(SELECT 1 FROM t WHERE id = %d)" % (j, i, j))
                try:
                    conn.query("; ".join(stmts))
                except PgError as e:   # a deadlock or a key taken by another writer: rolled back
                    self.failed += 1
                    continue
                self.count += 1
            conn.close()
        except Exception as e:
            self.error = e


def visible(header):
    xmin, xmax, xip = header["xmin"], header["xmax"], set(header["xip"])
    return lambda tx: tx < xmin or (tx < xmax and tx not in xip)


def merge(db, header, rows):
    """The README's rule: the snapshot's rows, then the changes after wal_seq
    whose transaction the snapshot does not see. Returns (state, applied, skipped)."""
    state = {r["id"]: (r["v"], r["n"]) for r in rows}
    seen = visible(header)
    applied = skipped = 0
    for c in db.rows(start_seq=header["wal_seq"] + 1, filter_subject=db.wal_subject("public", "t")):
        if seen(c.source["tx_id"]):
            skipped += 1
            continue
        applied += 1
        if c.op in ("u", "u_pk", "d") and c.before is not None:
            state.pop(c.before["id"], None)
        if c.op in ("c", "u", "u_pk"):
            state[c.after["id"]] = (c.after["v"], c.after["n"])
        if c.op == "t":
            state.clear()
    return state, applied, skipped


def test_merge_rule_with_concurrent_writers(make_db):
    db = make_db("snap_merge")
    n = 60000
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint)")
    db.add_table("t")
    db.sql("INSERT INTO t SELECT g, 'initial row ' || g, g FROM generate_series(1, %d) g" % n)
    writers = [MixedWriter(db, seed, n) for seed in (1, 2, 3)]
    for w in writers:
        w.start()
    wait_until(lambda: all(w.count > 20 for w in writers), 20, 0.05, "writers running")
    subject = db.scalar("SELECT creek.snapshot('t')")
    assert snapshot_state(db, subject)[0] == "finished"
    time.sleep(0.5)
    for w in writers:
        w.stop_flag.set()
    for w in writers:
        w.join(30)
        assert w.error is None, w.error
    db.wait_caught_up(60)
    header, rows, eof = read_snapshot(db, subject)
    assert eof
    state, applied, skipped = merge(db, header, rows)
    print("snapshot rows %d, changes applied %d, skipped %d, xip %r, writer transactions %d"
          % (len(rows), applied, skipped, header["xip"], sum(w.count for w in writers)))
    assert applied > 0
    assert state == table_rows(db)


def test_nats_snapshot_service(make_db, namespace):
    db = make_db("snap_nats")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint); CREATE TABLE hidden (id int)")
    db.sql("INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 500) g")
    db.add_table("t")
    ask = lambda body, timeout=10: db.client.request(namespace + "._snapshot", json.dumps(body).encode(),
                                                     timeout=timeout)
    reply = ask({"database": db.name, "namespace": namespace, "table": "public.t"})
    assert reply is not None
    subject = reply.decode()
    assert subject.startswith("%s.%s.snap.public.t." % (namespace, db.token))
    # the header is stored when the reply comes
    first = read_stream(db.client, db.snap_stream, filter_subject=subject)
    assert first and json.loads(first[0].data)["topic"] == subject
    assert snapshot_state(db, subject)[4] == "nats"
    header, rows, eof = read_snapshot(db, subject)
    assert eof and len(rows) == 500
    # only published tables, with a JSON error
    err = json.loads(ask({"database": db.name, "namespace": namespace, "table": "hidden"}))
    assert "not published" in err["error"], err
    err = json.loads(ask({"database": db.name, "table": "public.nope"}))
    assert "not published" in err["error"], err
    # another database, another namespace, not JSON: no reply (another producer may answer)
    assert db.client.request(namespace + "._snapshot", b"orders please", timeout=1) is None
    assert ask({"database": "no_such_db", "table": "public.t"}, timeout=1) is None
    assert ask({"database": db.name, "namespace": "OTHER", "table": "public.t"}, timeout=1) is None
    # the service can be turned off entirely (SQL snapshots still work)
    pid = db.stat()["pid"]
    db.pg.psql("ALTER SYSTEM SET creek.snapshot_service = off; SELECT pg_reload_conf()")
    try:
        wait_until(lambda: db.stat()["pid"] not in (pid, None) and db.stat()["state"] == "streaming",
                   30, 0.2, "the worker restarted without the service")
        assert ask({"database": db.name, "namespace": namespace, "table": "public.t"}, timeout=2) is None
        assert snapshot_state(db, db.scalar("SELECT creek.snapshot('t')"))[0] == "finished"
    finally:
        db.pg.psql("ALTER SYSTEM RESET creek.snapshot_service; SELECT pg_reload_conf()")


def test_queue_cancel_and_dropped_table(make_db):
    db = make_db("snap_queue")
    db.pg.psql("ALTER SYSTEM SET creek.max_snapshots = 1; SELECT pg_reload_conf()")
    try:
        db.sql("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY)")
        db.sql("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g")
        db.sql("INSERT INTO small VALUES (1)")
        time.sleep(0.5)
        a = db.scalar("SELECT creek.snapshot('big')")
        b = db.scalar("SELECT creek.snapshot('small')")
        state = lambda s: db.scalar("SELECT state FROM creek.pg_stat_creek_snapshots WHERE subject = '%s'" % s)
        wait_until(lambda: state(a) == "running", 20, 0.05, "the first snapshot running")
        assert state(b) == "waiting"
        # the table of a waiting snapshot is dropped: it fails when its turn comes
        db.sql("DROP TABLE small")
        # cancel the running one
        assert db.scalar("SELECT creek.cancel_snapshot('%s')" % a) == "t"
        st, sent, _, err, _ = snapshot_state(db, a)
        assert st == "failed" and "cancelled" in err, (st, err)
        st, _, _, err, _ = snapshot_state(db, b)
        assert st == "failed" and "no longer exists" in err, (st, err)
        # a consumer never sees EOF after a partial snapshot
        _, rows, eof = read_snapshot(db, a)
        assert not eof and len(rows) < 400000
        assert db.scalar("SELECT creek.cancel_snapshot('%s')" % a) == "f"
        assert db.scalar("SELECT creek.cancel_snapshot('no.such.subject')") == "f"
    finally:
        db.pg.psql("ALTER SYSTEM RESET creek.max_snapshots; SELECT pg_reload_conf()")


def test_nats_request_of_a_snapshot_that_fails_before_it_starts_gets_the_error(make_db, namespace):
    """A NATS request waiting in the queue whose table is dropped, or that is
    cancelled, is answered with {"error"} instead of leaving the requester to
    time out."""
    db = make_db("snap_nats_fail")
    db.pg.psql("ALTER SYSTEM SET creek.max_snapshots = 1; SELECT pg_reload_conf()")
    try:
        db.sql("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY); "
               "CREATE TABLE other (id int PRIMARY KEY)")
        db.sql("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g")
        for t in ("big", "small", "other"):
            db.add_table(t)
        a = db.scalar("SELECT creek.snapshot('big')")
        state = lambda s: db.scalar("SELECT state FROM creek.pg_stat_creek_snapshots WHERE subject = '%s'" % s)
        wait_until(lambda: state(a) == "running", 20, 0.05, "the first snapshot running")
        inboxes = {}
        for t in ("small", "other"):
            inbox = "_INBOX.creek_test_%s_%s" % (db.token, t)
            inboxes[t] = (inbox, db.client.subscribe(inbox))
            db.client.publish(namespace + "._snapshot",
                              json.dumps({"database": db.name, "namespace": namespace, "table": t}).encode(),
                              reply=inbox)
        waiting = lambda t: db.scalar("SELECT subject FROM creek.pg_stat_creek_snapshots WHERE relname = '%s' "
                                      "AND origin = 'nats' AND state = 'waiting'" % t)
        wait_until(lambda: waiting("small") and waiting("other"), 20, 0.05, "both NATS requests queued")
        other = waiting("other")
        db.sql("DROP TABLE small")
        assert db.scalar("SELECT creek.cancel_snapshot('%s')" % other) == "t"
        err = json.loads(db.client.next_msg(inboxes["other"][1], timeout=20).data)
        assert "cancelled" in err["error"] and other in err["error"], err
        assert db.scalar("SELECT creek.cancel_snapshot('%s')" % a) == "t"
        err = json.loads(db.client.next_msg(inboxes["small"][1], timeout=30).data)
        assert "no longer exists" in err["error"], err
        # one answer each
        for inbox, sid in inboxes.values():
            assert db.client.next_msg(sid, timeout=1) is None
        # a request that is served is answered once, with its subject
        inbox = "_INBOX.creek_test_%s_ok" % db.token
        sid = db.client.subscribe(inbox)
        db.client.publish(namespace + "._snapshot",
                          json.dumps({"database": db.name, "namespace": namespace, "table": "other"}).encode(),
                          reply=inbox)
        subject = db.client.next_msg(sid, timeout=30).data.decode()
        assert snapshot_state(db, subject)[0] == "finished"
        assert db.client.next_msg(sid, timeout=1) is None
    finally:
        db.pg.psql("ALTER SYSTEM RESET creek.max_snapshots; SELECT pg_reload_conf()")


def test_add_table_with_snapshot(make_db):
    db = make_db("snap_add")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint)")
    db.sql("INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g")
    rc, out, err = db.pg.run_psql("SELECT creek.add_table('t', snapshot => true)", db=db.name)
    assert rc == 0, err
    assert "creek will publish a snapshot of" in err
    subject = db.scalar("SELECT subject FROM creek.pg_stat_creek_snapshots WHERE datname = current_database()")
    assert snapshot_state(db, subject)[0] == "finished"
    header, rows, eof = read_snapshot(db, subject)
    assert eof and len(rows) == 100


def test_nats_gone_or_worker_terminated_fails_the_snapshot():
    from creek_helpers import CreekDb
    from servers import NatsServer, PgCluster
    nats = NatsServer()
    nats.start()
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.ack_timeout": "1s"})
    try:
        pg.start()
        db = CreekDb(pg, nats.url, "snapfail")
        db.sql("CREATE TABLE big (id int PRIMARY KEY, v text)")
        db.sql("INSERT INTO big SELECT g, repeat('y', 300) FROM generate_series(1, 300000) g")
        row = lambda s: db.query("SELECT state, rows_sent, error FROM creek.pg_stat_creek_snapshots "
                                 "WHERE subject = '%s'" % s)
        # the worker is terminated
        a = db.scalar("SELECT creek.snapshot('big')")
        wait_until(lambda: (row(a) or [[None, "0"]])[0][1] != "0", 30, 0.05, "rows being sent")
        db.scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'creek snapshot'")
        st, _, _, err, _ = snapshot_state(db, a)
        assert st == "failed" and "terminated" in (err or ""), (st, err, db.query("SELECT * FROM creek.pg_stat_creek_snapshots"))
        # NATS goes away
        b = db.scalar("SELECT creek.snapshot('big')")
        wait_until(lambda: (row(b) or [[None, "0"]])[0][1] != "0", 30, 0.05, "rows being sent")
        nats.stop()
        st, _, _, err, _ = snapshot_state(db, b, timeout=60)
        assert st == "failed" and ("NATS" in err or "JetStream" in err), (st, err)
        nats.start()
        db.reconnect_nats()
        for s in (a, b):
            _, rows, eof = read_snapshot(db, s)
            assert not eof and len(rows) < 300000
        db.close()
    finally:
        pg.cleanup()
        nats.cleanup()


def test_snapshots_interrupted_by_a_restart_are_shown_failed():
    """Postgres restarts (immediate) while one snapshot runs and another
    waits: their entries in shared memory are gone, but
    creek.snapshot_requests kept them; the worker shows both failed, with a
    WARNING each, and takes no new one (a consumer waits on their subjects)."""
    from creek_helpers import CreekDb
    from servers import NatsServer, PgCluster
    with NatsServer() as nats, PgCluster(conf={"creek.nats_url": nats.url, "creek.max_snapshots": 1}) as pg:
        db = CreekDb(pg, nats.url, "snaprestart")
        db.sql("CREATE TABLE big (id int PRIMARY KEY, v text)")
        db.sql("INSERT INTO big SELECT g, repeat('y', 300) FROM generate_series(1, 300000) g")
        a = db.scalar("SELECT creek.snapshot('big')")
        b = db.scalar("SELECT creek.snapshot('big')")
        wait_until(lambda: db.query("SELECT state, rows_sent > 0 FROM creek.pg_stat_creek_snapshots "
                                    "ORDER BY requested_at") == [("running", "t"), ("waiting", "f")],
                   30, 0.05, "one snapshot sending rows, one waiting")
        since = pg.log_offset()
        pg.restart("immediate")
        for s in (a, b):
            pg.wait_log(r"WARNING:  creek's snapshot %s of table public\.big was interrupted: the server "
                        r"restarted before the snapshot finished\n.*\n.*HINT:  Request it again with "
                        r"creek.snapshot\(\)" % re.escape(s), 30, since)
        rows = wait_until(lambda: db.query("SELECT subject, state, origin, error FROM creek.pg_stat_creek_snapshots "
                                           "ORDER BY requested_at") or None, 30, 0.2, "the view")
        assert rows == [(s, "failed", "sql", "the server restarted before the snapshot finished") for s in (a, b)]
        assert db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0"
        db.reconnect_nats()
        _, sent, eof = read_snapshot(db, a)
        assert not eof and 0 < len(sent) < 300000
        # a new request works as before, and its row leaves the table once it ended
        c = db.scalar("SELECT creek.snapshot('big')")
        assert db.scalar("SELECT origin FROM creek.snapshot_requests WHERE subject = '%s'" % c) == "sql"
        assert snapshot_state(db, c)[0] == "finished"
        wait_until(lambda: db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0", 30, 0.5,
                   "creek.snapshot_requests emptied")
        # a cancelled one fails, and its row goes too
        e = db.scalar("SELECT creek.snapshot('big')")
        assert db.scalar("SELECT creek.cancel_snapshot('%s')" % e) == "t"
        assert snapshot_state(db, e)[0] == "failed"
        wait_until(lambda: db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0", 30, 0.5,
                   "the cancelled snapshot's request gone")
        # a read-only transaction may still request one (it is not kept)
        db.sql("CREATE TABLE tiny (id int PRIMARY KEY); INSERT INTO tiny VALUES (1)")
        d = db.query("BEGIN READ ONLY; SELECT creek.snapshot('tiny'); COMMIT")[0][0]
        assert snapshot_state(db, d)[0] == "finished"
        db.close()


def test_upgrade_from_0_1_0(pg, nats):
    from creek_helpers import CreekDb, unique_db_name
    name = unique_db_name("snap_upgrade")
    pg.psql("CREATE DATABASE %s" % name)
    try:
        pg.psql("CREATE EXTENSION creek VERSION '0.1.0'", db=name)
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint); INSERT INTO t VALUES (1, 'a', 1)", db=name)
        pg.psql("SELECT creek.add_table('t')", db=name)
        assert pg.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'snapshot'", db=name) == "0"
        pg.psql("ALTER EXTENSION creek UPDATE TO '0.2.0'", db=name)
        assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'creek'", db=name) == "0.2.0"
        # the 0.2.0 view over the current library: its 16 columns
        assert pg.query("SELECT messages_in_flight, stats_reset FROM creek.pg_stat_creek WHERE datname = current_database()", db=name)
        pg.psql("ALTER EXTENSION creek UPDATE", db=name)
        assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'creek'", db=name) == "0.8.0"
        assert pg.scalar("SELECT count(*) FROM creek.snapshot_requests", db=name) == "0"
        assert pg.query("SELECT spooled_transactions, spooled_bytes, slot_lost_at FROM creek.pg_stat_creek "
                        "WHERE datname = current_database()", db=name) == [("0", "0", None)]
        db = CreekDb(pg, nats.url, name, create=False)
        assert db.scalar("SELECT count(*) FROM creek.tables") == "1"   # kept
        subject = db.scalar("SELECT creek.snapshot('t')")
        assert snapshot_state(db, subject)[0] == "finished"
        db.sql("INSERT INTO t VALUES (2, 'b', 2)")
        db.wait_wal_count(1)
        db.close()
    finally:
        pg.psql("DROP EXTENSION creek", db=name)
        time.sleep(1)
        pg.dropdb(name)
