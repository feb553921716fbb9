"""Fault tests: NATS goes away, Postgres crashes, the worker is killed, all
while rows are being written. Afterwards every committed row must be on the
stream exactly once (JetStream drops re-published changes by Nats-Msg-Id) and
in commit order.

Every test here gets its own nats-server and Postgres cluster: the `nats` and
`pg` fixtures of conftest.py are overridden (function scope), so make_db and
the failure report's log tails use them."""

import os
import signal
import tempfile
import time

import pytest

from creek_helpers import (BackgroundWriter, CreekDb, assert_msg_ids, bulk_insert, check_rows, make_writer_table,
                           stream_count, unique_db_name)
from helpers import wait_until
from natsclient import NatsClient
from servers import NatsServer, PgCluster, port_open

ROWS = 2000
RATE = 250  # rows per second: the writer runs for about 8 s


@pytest.fixture
def nats():
    server = NatsServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def pg(nats):
    cluster = PgCluster(conf={"creek.nats_url": nats.url})
    cluster.start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def make_db(pg, nats):
    """Like conftest's make_db, without dropping anything at the end: the
    servers are thrown away with the test."""
    made = []

    def make(prefix, **kw):
        db = CreekDb(pg, nats.url, unique_db_name(prefix), **kw)
        made.append(db)
        return db

    yield make
    for db in made:
        db.close()


# ---------------------------------------------------------------------------
# 6. NATS outage

def test_nats_killed_and_restarted_while_writing(pg, nats, make_db):
    db = make_db("f_nats")
    make_writer_table(db)
    writer = BackgroundWriter(pg.port, db.name, "w", ROWS, rate=RATE)
    writer.start()
    writer.wait_acked(300)

    log_at = pg.log_offset()
    nats.kill()  # SIGKILL; same port and store dir when started again
    killed_at = time.monotonic()
    acked_at_kill = len(writer.acked)

    def outage_seen():
        s = db.stat()
        return s if s and (s["nats_state"] != "connected" or s["last_error"]) else None

    during = wait_until(outage_seen, 10, 0.1, "pg_stat_creek to show the NATS outage")
    # a large transaction during the outage: more than the publisher may
    # hold (2 * creek.max_in_flight), so the worker waits for room
    bulk_ids = bulk_insert(db, 1, 12000)
    time.sleep(max(0.0, 3.0 - (time.monotonic() - killed_at)))
    during_late = db.stat()
    acked_in_outage = len(writer.acked) - acked_at_kill
    wait_until(lambda: not port_open(nats.port), 10, 0.05, "port free")
    nats.start()
    db.reconnect_nats()

    writer.join(60)
    assert not writer.is_alive()
    assert writer.error is None, writer.error
    assert writer.acked == list(range(1, ROWS + 1))
    # Postgres kept committing while NATS was away
    assert acked_in_outage > 100, acked_in_outage

    check_rows(db, {"w": list(range(1, ROWS + 1)), "bulk": bulk_ids})
    after = db.wait_streaming(30)
    assert after["state"] == "streaming" and after["nats_state"] == "connected"
    assert during["nats_state"] != "connected" or during["last_error"], during
    print("during the outage: %r / %r" % (
        {k: during[k] for k in ("state", "nats_state", "last_error")},
        {k: during_late[k] for k in ("state", "nats_state", "last_error")}))
    wait_until(lambda: int(db.stat()["messages_in_flight"]) == 0, 10, 0.1, "nothing in flight")
    # the log has one line when the outage starts and one when it ends
    log = pg.log(log_at)
    assert log.count("creek cannot reach NATS") == 1, log
    assert log.count("creek reached NATS again") == 1, log


# ---------------------------------------------------------------------------
# 7. Postgres crash

def test_postgres_immediate_shutdown_while_writing(pg, nats, make_db):
    db = make_db("f_crash")
    make_writer_table(db)
    writer = BackgroundWriter(pg.port, db.name, "w", ROWS, rate=RATE)
    writer.start()
    writer.wait_acked(500)
    # crash while the worker is still publishing a large transaction
    base = db.wal_count()
    bulk_ids = bulk_insert(db, 1, 50000)
    wait_until(lambda: db.wal_count() >= base + 5000, 30, 0.02, "the large transaction half published")
    published_at_crash = db.wal_count()
    log_at = pg.log_offset()
    pg.stop("immediate")
    writer.join(20)
    assert not writer.is_alive()
    assert writer.error is not None, "the writer should have lost its connection"
    acked = list(writer.acked)
    assert 500 <= len(acked) < ROWS

    pg.start()
    db.wait_streaming(30)
    committed = [int(r[0]) for r in db.query("SELECT id FROM w ORDER BY id")]
    # every INSERT that returned is there (maybe one more, whose reply was lost)
    assert set(acked) <= set(committed)
    assert committed == list(range(1, len(committed) + 1))
    assert len(committed) - len(acked) <= 1

    # and the stream keeps going after the restart
    n = len(committed)
    db.sql("INSERT INTO w SELECT g, 'after ' || g FROM generate_series(%d, %d) g" % (n + 1, n + 100))
    rows = check_rows(db, {"w": list(range(1, n + 101)), "bulk": bulk_ids})["w"]
    assert all(r.after["payload"] == "after %d" % r.after["id"] for r in rows[n:])
    print("messages on the stream when Postgres crashed: %d (of %d)"
          % (published_at_crash, len(bulk_ids) + len(acked)))
    # recovery really happened
    assert "database system was interrupted" in pg.log(log_at) or \
        "not properly shut down" in pg.log(log_at)


# ---------------------------------------------------------------------------
# 8. worker killed

def test_worker_terminated_mid_stream(pg, nats, make_db):
    db = make_db("f_term")
    make_writer_table(db)
    writer = BackgroundWriter(pg.port, db.name, "w", ROWS, rate=RATE)
    writer.start()
    writer.wait_acked(500)
    old = db.stat()
    assert old["state"] == "streaming"
    # kill it while it publishes a large transaction
    base = db.wal_count()
    bulk_ids = bulk_insert(db, 1, 50000)
    wait_until(lambda: db.wal_count() >= base + 5000, 30, 0.02, "the large transaction half published")
    published_at_kill = db.wal_count()
    assert db.scalar("SELECT pg_terminate_backend(pid) FROM creek.pg_stat_creek "
                     "WHERE datname = current_database()") == "t"

    def restarted():
        s = db.stat()
        return s if s and s["pid"] not in (None, "0", old["pid"]) and s["state"] == "streaming" \
            else None

    new = wait_until(restarted, 20, 0.1, "a new creek worker (old pid %s)" % old["pid"])
    print("messages on the stream when the worker was killed: %d (of %d)"
          % (published_at_kill, base + len(bulk_ids)))
    assert new["slot_name"] == old["slot_name"]
    writer.join(60)
    assert writer.error is None, writer.error
    assert writer.acked == list(range(1, ROWS + 1))
    check_rows(db, {"w": list(range(1, ROWS + 1)), "bulk": bulk_ids})
    assert db.slot() is not None
    # the new worker still serves the schema (kept in creek.schemas)
    fp = db.rows()[0].body["fingerprint"]
    served = db.lookup_schema(fp)
    assert served is not None and served["fingerprint"] == fp


# ---------------------------------------------------------------------------
# more: a settings reload during an outage (known bug)

def test_nats_url_reload_during_an_outage_mid_transaction(pg, nats, make_db):
    """NATS dies while the worker publishes a transaction larger than
    2 * creek.max_in_flight; the operator points creek.nats_url at another
    server and reloads. The worker, waiting for the publisher inside the
    decoding callbacks, applies the reload (it restarts) and the whole
    transaction reaches the new server. (Regression: the reload used to be
    ignored until the dead server came back.)"""
    db = make_db("f_reload")
    make_writer_table(db)
    bulk_ids = bulk_insert(db, 1, 60000)
    wait_until(lambda: db.wal_count() > 3000, 30, 0.01, "publishing under way")
    nats.kill()
    wait_until(lambda: db.stat()["nats_state"] != "connected", 10, 0.1, "outage seen")
    old_pid = db.stat()["pid"]
    with NatsServer() as other:
        since = pg.log_offset()
        pg.set_conf(reload=True, creek__nats_url=other.url)
        pg.wait_log(r'parameter "creek.nats_url" changed', 10, since)
        c2 = NatsClient(other.url, timeout=5)
        try:
            wait_until(lambda: stream_count(c2, db.wal_stream) >= len(bulk_ids), 20, 0.2,
                       "the transaction on the new server")
        except AssertionError:
            st = db.stat()
            raise AssertionError(
                "20 s after pointing creek.nats_url at %s and reloading, the new server holds "
                "%d of %d messages; worker pid %s (before: %s), state %s / %s; log:\n%s" % (
                    other.url, stream_count(c2, db.wal_stream), len(bulk_ids), st["pid"],
                    old_pid, st["state"], st["nats_state"],
                    "\n".join(l for l in pg.log(since).splitlines()
                              if "creek" in l or "SIGHUP" in l)[-1500:])) from None
        finally:
            c2.close()


# ---------------------------------------------------------------------------
# Stream faults: a deleted stream, a full stream, a permission error. Each is
# shown in the view, retried with back-off, and nothing is confirmed before
# JetStream has it.

def insert_each(db, first, last):
    """One transaction per row, ids first..last."""
    db.sql("".join("INSERT INTO w VALUES (%d, 'row %d');" % (i, i) for i in range(first, last + 1)))


def wait_error(db, needle, timeout=30):
    return wait_until(lambda: (db.stat()["last_error"] if needle in db.stat()["last_error"] else None),
                      timeout, 0.2, "%r in last_error (have %r)" % (needle, db.stat()["last_error"]))


def test_deleted_stream_is_created_again(pg, nats, make_db):
    db = make_db("f_del")
    make_writer_table(db)
    insert_each(db, 1, 10)
    db.wait_wal_count(10)
    r = db.client.js_api("STREAM.DELETE." + db.wal_stream)
    assert r.get("success"), r
    insert_each(db, 11, 20)
    # the worker notices the missing stream and creates it again
    db.wait_wal_count(10, timeout=60)
    rows = db.rows()
    assert [r.after["id"] for r in rows] == list(range(11, 21))
    assert_msg_ids(rows)


def test_full_stream_waits_and_loses_nothing(pg, nats, make_db):
    name = unique_db_name("f_full")
    client = NatsClient(nats.url)
    # the stream exists before creek starts, with room for 5 messages and
    # discard "new": creek uses it as it is
    r = client.js_api("STREAM.CREATE.CREEK_%s_wal" % name, {
        "name": "CREEK_%s_wal" % name, "subjects": ["CREEK.%s.wal.>" % name], "storage": "file",
        "max_msgs": 5, "discard": "new", "duplicate_window": 120 * 10**9})
    assert "error" not in r, r
    db = CreekDb(pg, nats.url, name)
    make_writer_table(db)
    insert_each(db, 1, 5)
    db.wait_wal_count(5)
    lsn5 = db.scalar("SELECT pg_current_wal_lsn()")
    insert_each(db, 6, 10)
    err = wait_error(db, "maximum messages exceeded")
    assert "publish of message" in err, err
    time.sleep(1)
    assert db.scalar("SELECT confirmed_lsn <= '%s' FROM creek.pg_stat_creek "
                     "WHERE datname = current_database()" % lsn5) == "t"
    assert db.scalar("SELECT messages_in_flight > 0 FROM creek.pg_stat_creek "
                     "WHERE datname = current_database()") == "t"
    assert db.wal_count() == 5
    # room again: everything arrives, once, in order
    cfg = dict(client.stream_info(db.wal_stream)["config"], max_msgs=-1)
    r = client.js_api("STREAM.UPDATE." + db.wal_stream, cfg)
    assert "error" not in r, r
    check_rows(db, {"w": list(range(1, 11))})
    db.wait_caught_up(30)
    client.close()
    db.close()


class ReloadableNats(NatsServer):
    """Its store directory is in the config file, not on the command line, so
    that nats-server accepts a config reload (SIGHUP)."""

    def command(self):
        cmd = super().command()
        i = cmd.index("-sd")
        return cmd[:i] + cmd[i + 2:]


def perm_conf(store_dir, deny):
    # (the store directory is in the file too, or nats-server refuses to reload it)
    return ("jetstream { store_dir: \"%s\" }\nno_auth_user: admin\nauthorization {\n users = [\n"
            "  {user: admin, password: adminpw}\n"
            "  {user: creek, password: creekpw, permissions: {publish: {allow: [\">\"], deny: [%s]}}}\n"
            " ]\n}\n" % (store_dir, ", ".join('"%s"' % d for d in deny)))


def test_permission_error_is_shown_and_recovers():
    nats = ReloadableNats(extra_conf="# written below")
    with open(nats.conf_file, "w") as f:
        f.write(perm_conf(nats.store_dir, ["CREEK.*.wal.>"]))
    nats.start()
    fd, pw = tempfile.mkstemp(prefix="creek-pw-")
    os.write(fd, b"creekpw\n")
    os.close(fd)
    os.chmod(pw, 0o644)
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.nats_user": "creek",
                         "creek.nats_password_file": pw})
    try:
        pg.start()
        db = CreekDb(pg, nats.url, "perm")
        make_writer_table(db)
        insert_each(db, 1, 3)
        err = wait_error(db, "Permissions Violation")
        assert "CREEK.perm.wal" in err, err
        assert db.wal_count() == 0
        assert db.scalar("SELECT confirmed_lsn < pg_current_wal_lsn() FROM creek.pg_stat_creek "
                         "WHERE datname = current_database()") == "t"
        # the operator grants the permission (nats-server reloads its config)
        with open(nats.conf_file, "w") as f:
            f.write(perm_conf(nats.store_dir, ["nothing.denied"]))
        os.kill(nats.pid, signal.SIGHUP)
        check_rows(db, {"w": [1, 2, 3]})
        db.close()
    finally:
        pg.cleanup()
        nats.cleanup()


# ---------------------------------------------------------------------------
# A large transaction that cannot be spooled

def test_unwritable_spool_directory_is_shown_and_survived(pg, make_db):
    """creek cannot create the spool of a large transaction (the temporary
    files' directory is not writable): the error is in last_error, the worker
    restarts and tries again, and once the directory is writable every row
    is published, once and in order."""
    db = make_db("f_spool", before_extension=(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = "
        "''64kB''', current_database()); END $$"))
    db.sql("CREATE TABLE s (id int PRIMARY KEY, v text)")
    db.add_table("s")
    tmp = os.path.join(pg.data_dir, "base", "pgsql_tmp")
    if not os.path.isdir(tmp):
        os.mkdir(tmp, 0o700)
        st = os.stat(pg.data_dir)
        os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, 0o500)
    try:
        db.sql("INSERT INTO s SELECT g, 'row ' || g FROM generate_series(1, 20000) g")
        err = wait_error(db, "spool", timeout=60)
        print("last_error: %s" % err)
        assert "could not create a spool file" in err and "Permission denied" in err, err
        assert db.wal_count() == 0
    finally:
        os.chmod(tmp, 0o700)
    db.sql("INSERT INTO s VALUES (20001, 'after')")
    db.wait_wal_count(20001, timeout=120)
    rows = db.rows()
    assert [r.after["id"] for r in rows] == list(range(1, 20002))
    assert_msg_ids(rows)
