"""Lifecycle: CREATE EXTENSION starts a database's streaming worker, DROP
EXTENSION stops it and drops its slot, and creek's output plugin refuses to
be used from SQL."""

import contextlib
import time

import pytest

from creek_helpers import CreekDb, PgError, unique_db_name
from helpers import wait_until
from servers import NatsServer, PgCluster, PsqlError, quote_ident

PLUGIN_ERROR = "the creek output plugin can only be used by creek's streaming worker"


def creek_workers(pg, dbname):
    """pids of creek worker processes connected to dbname."""
    return [r[0] for r in pg.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'creek worker' "
        "AND datname = '%s'" % dbname)]


def test_create_drop_create_extension(pg, nats):
    name = unique_db_name("l_cycle")
    pg.psql("CREATE DATABASE %s" % quote_ident(name))
    db = CreekDb(pg, nats.url, name, create=False)
    try:
        assert creek_workers(pg, name) == []
        t0 = time.monotonic()
        db.sql("CREATE EXTENSION creek")
        first = db.wait_streaming(10)
        started_in = time.monotonic() - t0
        assert first["datname"] == name and int(first["datid"]) == db.oid
        assert first["slot_name"] == db.slot_name
        slot = db.slot()
        assert slot is not None and slot[1] == "creek" and slot[2] == "t", slot
        assert creek_workers(pg, name) == [first["pid"]]

        # it works: a table's change arrives
        db.sql("CREATE TABLE t (id int PRIMARY KEY)")
        db.add_table("t")
        db.sql("INSERT INTO t VALUES (1)")
        db.wait_wal_count(1)

        t0 = time.monotonic()
        db.sql("DROP EXTENSION creek")
        wait_until(lambda: db.slot() is None, 10, 0.1, "slot %s dropped" % db.slot_name)
        wait_until(lambda: creek_workers(pg, name) == [], 10, 0.1, "creek worker of %s gone" % name)
        stopped_in = time.monotonic() - t0
        # nothing comes back by itself
        time.sleep(1.0)
        assert db.slot() is None and creek_workers(pg, name) == []

        t0 = time.monotonic()
        db.sql("CREATE EXTENSION creek")
        second = db.wait_streaming(10)
        restarted_in = time.monotonic() - t0
        assert second["pid"] != first["pid"]
        assert db.slot() is not None
        # creek.tables went with the extension: t is no longer published
        assert db.scalar("SELECT count(*) FROM creek.tables") == "0"
        db.add_table("t")
        db.sql("INSERT INTO t VALUES (2)")
        db.wait_wal_count(2)  # the stream still holds the first message
        rows = db.rows()
        assert [r.after["id"] for r in rows] == [1, 2]
        print("worker started in %.1fs, stopped in %.1fs, restarted in %.1fs"
              % (started_in, stopped_in, restarted_in))
    finally:
        db.drop()


def try_plugin_from_sql(conn, slot):
    """Creates a logical slot with the creek plugin and reads it; returns
    (the PgError, where it happened). Drops the slot if it got created."""
    try:
        try:
            conn.query("SELECT pg_create_logical_replication_slot('%s', 'creek')" % slot)
        except PgError as e:
            return e, "creation"
        with pytest.raises(PgError) as ei:
            conn.query("SELECT * FROM pg_logical_slot_get_changes('%s', NULL, NULL)" % slot)
        return ei.value, "get_changes"
    finally:
        conn.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   "WHERE slot_name = '%s'" % slot)


def test_add_table_right_after_create_extension_starts_one_worker(pg, nats):
    """CREATE EXTENSION, then creek.add_table() at once (before the worker
    has claimed its database): one worker, not a second one that finds the
    database taken and exits."""
    import threading
    name = unique_db_name("l_one")
    pg.psql("CREATE DATABASE %s" % quote_ident(name))
    db = CreekDb(pg, nats.url, name, create=False)
    seen, stop = set(), threading.Event()

    def sample():
        while not stop.is_set():
            seen.update(creek_workers(pg, name))
            time.sleep(0.005)
    th = threading.Thread(target=sample)
    th.start()
    try:
        db.sql("CREATE EXTENSION creek; CREATE TABLE t (id int PRIMARY KEY); SELECT creek.add_table('t')")
        time.sleep(2)
    finally:
        stop.set()
        th.join()
    try:
        assert len(seen) == 1, "creek workers seen for %s: %s" % (name, sorted(seen))
        db.sql("INSERT INTO t VALUES (1)")
        db.wait_wal_count(1)
    finally:
        db.drop()


def test_drop_create_extension_and_add_table_at_once(pg, nats):
    """DROP EXTENSION, CREATE EXTENSION and creek.add_table() in quick
    succession, three times: each time a worker streams the new table."""
    name = unique_db_name("l_quick")
    pg.psql("CREATE DATABASE %s" % quote_ident(name))
    db = CreekDb(pg, nats.url, name, create=False)
    try:
        db.sql("CREATE EXTENSION creek")
        db.wait_streaming(10)
        for i in range(3):
            db.sql("DROP EXTENSION creek; CREATE EXTENSION creek; CREATE TABLE t%d (id int PRIMARY KEY)" % i)
            db.add_table("t%d" % i)
            db.sql("INSERT INTO t%d VALUES (%d)" % (i, i))
            wait_until(lambda: any(r.source["table"] == "t%d" % i for r in db.rows()), 30, 0.2,
                       "the change of t%d published" % i)
            assert len(creek_workers(pg, name)) == 1
    finally:
        db.drop()


def test_output_plugin_refuses_sql_use(make_db):
    db = make_db("l_plugin")
    slot = "creek_sql_probe"
    with db.connect() as conn:
        # As configured: Postgres 15.20+ may refuse to load creek as an output
        # plugin at all (output_plugin_libraries); either refusal is clear.
        err, where = try_plugin_from_sql(conn, slot)
        assert PLUGIN_ERROR in err.message or \
            err.message == 'library "creek" may not be used as an output plugin', str(err)
        print("SQL use of the plugin, default settings: %s (at %s)" % (err, where))
        assert pg_slot_absent(db, slot)

        # Allowed to load (where the setting exists): creek's own refusal.
        if conn.scalar("SELECT count(*) FROM pg_settings "
                       "WHERE name = 'output_plugin_libraries'") == "1":
            conn.query("SELECT set_config('output_plugin_libraries', "
                       "current_setting('output_plugin_libraries') || ', creek', false)")
        err, where = try_plugin_from_sql(conn, slot)
        assert PLUGIN_ERROR in err.message, str(err)
        assert err.sqlstate == "55000", str(err)  # object_not_in_prerequisite_state
        assert "NATS" in err.fields.get("D", ""), err.fields
        assert "creek.add_table" in err.fields.get("H", ""), err.fields
        print("SQL use of the plugin, creek loadable: %s (at %s)" % (err, where))
    assert pg_slot_absent(db, slot)
    # the worker is unaffected
    db.wait_streaming(5)


def pg_slot_absent(db, slot):
    return db.pg.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'"
                        % slot) == "0"


# ---------------------------------------------------------------------------
# DROP EXTENSION corner cases (known bugs)

@contextlib.contextmanager
def own_servers():
    """A nats-server and a Postgres cluster of the test's own (these tests
    may leave a replication slot behind, which must not eat the session
    cluster's max_replication_slots)."""
    with NatsServer() as n, PgCluster(conf={"creek.nats_url": n.url}) as pg:
        yield n, pg


def log_lines(pg, since, pattern=("creek", "ERROR", "worker")):
    return "\n".join(l for l in pg.log(since).splitlines() if any(p in l for p in pattern))


def test_drop_extension_with_a_tables_first_change_drops_the_slot():
    """DROP EXTENSION committed in the same transaction as the first change
    of a published table drops the slot creek_<oid>. (Regression: the worker
    used to fail storing the table's schema in the dropped creek.schemas,
    and the slot was left behind, holding WAL forever.)"""
    with own_servers() as (n, pg):
        db = CreekDb(pg, n.url, "l_dropsame")
        try:
            db.sql("CREATE TABLE t (id int PRIMARY KEY)")
            db.add_table("t")
            since = pg.log_offset()
            db.sql("BEGIN; INSERT INTO t VALUES (1); DROP EXTENSION creek; COMMIT")
            try:
                wait_until(lambda: db.slot() is None, 15, 0.2, "slot dropped")
            except AssertionError:
                raise AssertionError(
                    "slot %s still exists 15 s after DROP EXTENSION: %r\nworkers: %r\nlog:\n%s"
                    % (db.slot_name, db.slot(), creek_workers(pg, db.name),
                       log_lines(pg, since))) from None
        finally:
            db.close()


def test_drop_extension_during_a_nats_outage_mid_transaction():
    """DROP EXTENSION while the worker waits for room in the publisher (a
    transaction larger than 2 * creek.max_in_flight, NATS down) drops the
    slot within seconds: the worker restarts and its successor, finding no
    extension, drops the slot. (Regression: DROP EXTENSION used to wait for
    NATS to come back.)"""
    with own_servers() as (n, pg):
        db = CreekDb(pg, n.url, "l_dropout")
        try:
            db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
            db.add_table("t")
            db.sql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 60000) g")
            wait_until(lambda: db.wal_count() > 3000, 30, 0.01, "publishing under way")
            n.kill()
            wait_until(lambda: db.stat()["nats_state"] != "connected", 10, 0.1, "outage seen")
            since = pg.log_offset()
            db.sql("DROP EXTENSION creek")
            try:
                wait_until(lambda: db.slot() is None, 10, 0.2, "slot dropped")
            except AssertionError:
                raise AssertionError(
                    "slot %s still exists 10 s after DROP EXTENSION (NATS down): %r\n"
                    "workers: %r\nlog:\n%s" % (db.slot_name, db.slot(),
                                               creek_workers(pg, db.name),
                                               log_lines(pg, since))) from None
        finally:
            db.close()


def test_stream_settings_apply_to_created_streams(nats):
    """creek.stream_max_bytes, creek.stream_duplicate_window and
    creek.stream_storage shape the streams creek creates."""
    from servers import PgCluster
    from natsclient import NatsClient
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.namespace": "STREAMCFG",
                         "creek.stream_max_bytes": "64MB",
                         "creek.stream_duplicate_window": "5min",
                         "creek.stream_storage": "memory"})
    try:
        pg.start()
        pg.psql("CREATE DATABASE s")
        pg.psql("CREATE EXTENSION creek", db="s")
        c = NatsClient(nats.url, timeout=5)
        info = wait_until(lambda: c.stream_info("STREAMCFG_s_wal"), 20, 0.2, "the wal stream")
        cfg = info["config"]
        assert cfg["max_bytes"] == 64 * 1024 * 1024, cfg
        assert cfg["duplicate_window"] == 300 * 10**9, cfg
        assert cfg["storage"] == "memory", cfg
        assert cfg["subjects"] == ["STREAMCFG.s.wal.>"], cfg
        c.close()
    finally:
        pg.cleanup()


def test_idle_database_slot_moves_forward(pg, nats, make_db):
    """A database with nothing to publish, next to a busy one, does not hold
    WAL back: its slot's confirmed and restart positions follow the WAL."""
    busy = make_db("l_busy")
    idle = make_db("l_idle")
    busy.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    busy.add_table("t")
    start_restart = pg.scalar("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '%s'"
                              % idle.slot_name)
    busy.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    pg.psql("CHECKPOINT")
    target = pg.scalar("SELECT pg_current_wal_lsn()")

    def moved():
        return pg.scalar(
            "SELECT confirmed_flush_lsn >= '%s'::pg_lsn AND restart_lsn > '%s'::pg_lsn "
            "FROM pg_replication_slots WHERE slot_name = '%s'" % (target, start_restart, idle.slot_name)) == "t"
    wait_until(moved, 30, 0.2, "the idle database's slot to follow the WAL")
    lag = int(pg.scalar("SELECT lag_bytes FROM creek.pg_stat_creek WHERE datname = current_database()",
                        db=idle.name))
    assert lag < 16 * 1024 * 1024, lag


def test_view_forgets_a_dropped_extension_or_database(pg, make_db):
    """creek.pg_stat_creek has no row for a database whose creek extension or
    whole database was dropped while its worker was waiting to be restarted,
    and no worker keeps being started for a dropped database. (Regression:
    the restarting worker's row stayed, with its old confirmed_lsn, for as
    long as the server ran, and the postmaster tried every 5 s to start a
    worker for the dropped database.)"""
    watcher = make_db("l_watch")
    gone_ext = make_db("l_noext")
    gone_db = make_db("l_nodb")
    for db in (gone_ext, gone_db):
        assert db.scalar("SELECT pg_terminate_backend(%s)" % db.stat()["pid"]) == "t"
        wait_until(lambda: db.stat()["pid"] in (None, "0"), 10, 0.05, "the worker gone")
    since = pg.log_offset()
    gone_ext.sql("DROP EXTENSION creek")
    pg.psql("DROP DATABASE %s WITH (FORCE)" % quote_ident(gone_db.name))
    # the restarted worker of gone_ext finds no extension and drops the slot
    wait_until(lambda: gone_ext.slot() is None, 20, 0.2, "the slot of %s dropped" % gone_ext.name)
    time.sleep(6)   # past the restart interval (5 s) of the dropped database's worker
    oids = (str(gone_ext.oid), str(gone_db.oid))
    left = [r for r in watcher.query("SELECT datid::text, datname, state FROM creek.pg_stat_creek")
            if r[0] in oids]
    assert left == [], "rows of dropped databases: %r\nlog:\n%s" % (left, log_lines(pg, since))
    fatal = [l for l in pg.log(since).splitlines() if "database %d does not exist" % gone_db.oid in l]
    assert fatal == [], "\n".join(fatal)
    assert watcher.stat()["state"] == "streaming"


def test_drop_database_by_a_non_owner_leaves_the_worker_alone(make_db):
    """DROP DATABASE by a role that may not drop the database fails with
    Postgres' own error and does not stop or restart the database's worker."""
    db = make_db("l_dropown")
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    db.wait_streaming(20)
    pid = db.stat()["pid"]
    role = db.name + "_r"
    db.pg.psql("CREATE ROLE %s LOGIN" % quote_ident(role))
    try:
        with pytest.raises(PsqlError, match="must be owner of database"):
            db.pg.psql("SET ROLE %s; DROP DATABASE %s" % (quote_ident(role), quote_ident(db.name)))
        assert db.stat()["pid"] == pid
        db.sql("INSERT INTO t VALUES (1)")
        db.wait_wal_count(1)
        assert db.stat()["pid"] == pid
    finally:
        db.pg.psql("DROP ROLE %s" % quote_ident(role))


def test_failed_drop_database_keeps_streaming(make_db):
    """A DROP DATABASE that fails (another session is connected) leaves the
    database streaming from its slot, nothing lost."""
    db = make_db("l_dropfail")
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1)")
    db.wait_wal_count(1)
    other = db.connect(appname="creek-e2e-holder")
    try:
        with pytest.raises(PsqlError, match="is being accessed by other users"):
            db.pg.psql("DROP DATABASE %s" % quote_ident(db.name))
        db.sql("INSERT INTO t VALUES (2)")
        assert db.slot() is not None
        db.wait_streaming(20)
        db.wait_wal_count(2)
    finally:
        other.close()
