"""A lost replication slot: after a failover to a standby, after
pg_drop_replication_slot(), after Postgres invalidated the slot
(max_slot_wal_keep_size), creek creates its slot anew, says so (WARNING,
last_error) and takes a snapshot of each published table, so that a consumer
that merges the snapshot with the changes after it (README's rule) ends with
exactly the table, although the changes committed while the slot was missing
were never published as changes.

Every test here gets its own nats-server and Postgres cluster."""

import os
import re
import shutil
import subprocess

from creek_helpers import CreekDb, assert_msg_ids, read_stream, unique_db_name
from helpers import wait_until
from servers import PG_BIN, PgCluster, _as_pg_user
from test_faults import nats, pg  # noqa: F401 (fixtures: a nats-server and a cluster of the test's own)
from test_snapshots import merge, read_snapshot, snapshot_state, table_rows

LOST = r"creek's replication slot \"creek_\d+\" was lost and created anew at [0-9A-F]+/[0-9A-F]+ while %d tables were published"


def drop_slot(db):
    """Once the worker has released it (it comes back after 5 s, bgw_restart_time)."""
    def dropped():
        db.sql("SELECT pg_drop_replication_slot('%s')" % db.slot_name, check=False)
        return db.slot() is None
    wait_until(dropped, 4, 0.05, "slot %s dropped" % db.slot_name)


def make_tables(db):
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint)")
    db.sql("CREATE TABLE u (id int PRIMARY KEY)")
    db.add_table("t")
    db.add_table("u")
    db.sql("INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g")
    db.sql("INSERT INTO u SELECT generate_series(1, 5)")
    db.wait_caught_up()


def change_while_lost(db):
    """Changes that no slot decodes: never published as changes."""
    db.sql("UPDATE t SET v = 'changed while lost' WHERE id <= 10")
    db.sql("DELETE FROM t WHERE id > 90")
    db.sql("INSERT INTO t VALUES (101, 'inserted while lost', 101)")
    db.sql("INSERT INTO u VALUES (6)")


def recovery_snapshots(db, n=2, timeout=60):
    """The snapshots creek took because its slot was lost: {table: subject}."""
    def all_there():
        rows = db.query("SELECT relname, subject FROM creek.pg_stat_creek_snapshots WHERE origin = 'slot' "
                        "AND state <> 'failed'")
        return dict(rows) if len(rows) == n else None
    return wait_until(all_there, timeout, 0.2, "%d snapshots with origin 'slot'" % n)


def check_consumer_catches_up(db):
    """After the recovery: one more change, then the consumer's merge of
    each snapshot with the changes after it is exactly the table."""
    subjects = recovery_snapshots(db)
    for table, subject in subjects.items():
        assert snapshot_state(db, subject)[0] == "finished", table
    db.sql("UPDATE t SET v = 'after' WHERE id = 50")
    db.sql("INSERT INTO t VALUES (102, 'after', 102)")
    db.wait_caught_up()
    header, rows, eof = read_snapshot(db, subjects["t"])
    assert eof
    state, applied, skipped = merge(db, header, rows)
    assert applied >= 2
    assert state == table_rows(db)
    assert state[5] == ("changed while lost", 5) and 95 not in state and 101 in state
    header, rows, eof = read_snapshot(db, subjects["u"])
    assert eof and sorted(r["id"] for r in rows) == [1, 2, 3, 4, 5, 6]
    # the changes committed while the slot was missing were not published as changes
    published = [c.after["id"] for c in db.rows(filter_subject=db.wal_subject("public", "t")) if c.op == "c"]
    assert 101 not in published and 102 in published


def test_dropped_slot_is_created_anew_with_a_snapshot_of_each_table(pg, nats):
    db = CreekDb(pg, nats.url, unique_db_name("slot_drop"))
    make_tables(db)
    # creek.add_table() after the slot exists takes no snapshot
    assert db.scalar("SELECT count(*) FROM creek.pg_stat_creek_snapshots") == "0"
    since = pg.log_offset()
    pid = db.stat()["pid"]
    db.sql("SELECT pg_terminate_backend(%s)" % pid)
    drop_slot(db)
    change_while_lost(db)
    pg.wait_log(LOST % 2, 30, since)
    db.wait_streaming(30)
    assert "was lost and created anew" in db.stat()["last_error"]
    assert db.query("SELECT slot_lost_at > started_at - interval '1 minute', slot_lost_lsn <= confirmed_lsn "
                    "FROM creek.pg_stat_creek WHERE datname = current_database()") == [("t", "t")]
    check_consumer_catches_up(db)


def test_restart_before_the_snapshots_finish_takes_them_again(pg, nats):
    """The slot's snapshots wait for NATS; Postgres restarts meanwhile (its
    shared memory, where the snapshots wait, is gone, and the new slot is
    there: nothing else would ask for them again). creek.snapshot_requests
    kept them: the worker shows them failed and takes new ones."""
    db = CreekDb(pg, nats.url, unique_db_name("slot_restart"))
    make_tables(db)
    nats.stop()
    since = pg.log_offset()
    db.sql("SELECT pg_terminate_backend(%s)" % db.stat()["pid"])
    drop_slot(db)
    change_while_lost(db)
    pg.wait_log(LOST % 2, 30, since)
    wait_until(lambda: db.query("SELECT state FROM creek.pg_stat_creek_snapshots WHERE origin = 'slot'")
               == [("waiting",), ("waiting",)], 30, 0.2, "2 waiting snapshots")
    old = dict(db.query("SELECT relname, subject FROM creek.pg_stat_creek_snapshots"))
    lost = db.query("SELECT slot_lost_at, slot_lost_lsn FROM creek.pg_stat_creek")
    assert lost[0][0] is not None
    assert db.query("SELECT lost_at, slot_lsn, tables FROM creek.slot_losses") == [lost[0] + ("2",)]
    assert db.query("SELECT subject, origin FROM creek.snapshot_requests ORDER BY subject") == \
        sorted((s, "slot") for s in old.values())
    since = pg.log_offset()
    pg.restart("immediate")
    nats.start()
    db.reconnect_nats()
    for table in ("t", "u"):
        pg.wait_log(r"WARNING:  creek's snapshot %s of table public\.%s was interrupted: the server restarted "
                    r"before the snapshot finished; creek takes a new one" % (re.escape(old[table]), table),
                    30, since)
    failed = wait_until(lambda: db.query(
        "SELECT relname, subject, origin, error FROM creek.pg_stat_creek_snapshots WHERE state = 'failed' "
        "ORDER BY relname") or None, 30, 0.2, "the interrupted snapshots in the view")
    assert failed == [(t, old[t], "slot", "the server restarted before the snapshot finished; creek takes a new one")
                      for t in ("t", "u")]
    check_consumer_catches_up(db)
    assert not set(recovery_snapshots(db).values()) & set(old.values())
    # the view still shows the loss (kept in creek.slot_losses)
    assert db.query("SELECT slot_lost_at, slot_lost_lsn FROM creek.pg_stat_creek") == lost
    # what ended leaves creek.snapshot_requests (a finished snapshot deletes its row)
    wait_until(lambda: db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0", 30, 0.5,
               "creek.snapshot_requests emptied")


def test_failover_to_a_standby(pg, nats):
    """The standby has no slot (Postgres 15 does not copy slots to standbys):
    after its promotion, creek streams from it with a new slot."""
    name = unique_db_name("slot_failover")
    db = CreekDb(pg, nats.url, name)
    make_tables(db)
    standby = PgCluster(conf={"creek.nats_url": nats.url, "hot_standby": "on"})
    try:
        shutil.rmtree(standby.data_dir)
        r = subprocess.run(_as_pg_user([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                                        str(pg.port), "-U", "postgres", "-D", standby.data_dir, "-R",
                                        "-X", "stream", "-c", "fast"]),
                           capture_output=True, text=True, env=pg._psql_env(), timeout=120)
        assert r.returncode == 0, r.stderr
        standby.write_conf()
        standby.start()
        # no worker on a standby: nothing in its view, no error in its log
        assert standby.query("SELECT count(*) FROM creek.pg_stat_creek", db=name) == [("0",)]
        # NATS goes away, the primary takes changes that creek cannot publish, then fails
        nats.stop()
        change_while_lost(db)
        lsn = db.scalar("SELECT pg_current_wal_lsn()")
        wait_until(lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= '%s'" % lsn, db=name) == "t",
                   30, 0.1, "standby replayed %s" % lsn)
        pg.stop(mode="immediate")
        since = standby.log_offset()
        r = subprocess.run(_as_pg_user([os.path.join(PG_BIN, "pg_ctl"), "-D", standby.data_dir, "promote", "-w"]),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        standby.wait_log(LOST % 2, 30, since)
        # the snapshots wait for NATS
        wait_until(lambda: standby.query("SELECT state FROM creek.pg_stat_creek_snapshots WHERE origin = 'slot'",
                                         db=name) == [("waiting",), ("waiting",)], 30, 0.2, "2 waiting snapshots")
        nats.start()
        new = CreekDb(standby, nats.url, name, create=False)
        new.wait_streaming(30)
        # last_error is NATS's by now; slot_lost_at stays
        assert new.scalar("SELECT slot_lost_at IS NOT NULL FROM creek.pg_stat_creek") == "t"
        check_consumer_catches_up(new)
        # the new primary's WAL is timeline 2: its message ids say so, and
        # cannot be taken for ids of changes the old primary published
        rows = new.rows()
        old_ids = [r.msg_id for r in rows if "@" not in r.msg_id]
        new_ids = [r for r in rows if r.msg_id.startswith("2@")]
        assert len(old_ids) == 105 and len(new_ids) == 2 and len(rows) == 107
        assert_msg_ids(new_ids)
    finally:
        standby.cleanup()


def test_invalidated_slot_is_dropped_and_created_anew(nats):
    pg = PgCluster(conf={"creek.nats_url": nats.url, "max_slot_wal_keep_size": "1MB"})
    try:
        pg.start()
        db = CreekDb(pg, nats.url, unique_db_name("slot_invalid"))
        make_tables(db)
        nats.stop()
        since = pg.log_offset()
        change_while_lost(db)
        # WAL past max_slot_wal_keep_size: the checkpoint invalidates the slot
        for _ in range(3):
            db.sql("INSERT INTO u SELECT generate_series(1000, 1100); DELETE FROM u WHERE id >= 1000;"
                   "SELECT pg_switch_wal()")
        db.sql("CHECKPOINT")
        pg.wait_log(r"creek's replication slot \"creek_\d+\" was invalidated: dropping it to create it anew",
                    30, since)
        pg.wait_log(LOST % 2, 30, since)
        assert db.query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '%s'"
                        % db.slot_name) == [("reserved",)]
        assert db.query("SELECT state FROM creek.pg_stat_creek_snapshots WHERE origin = 'slot'") == \
            [("waiting",), ("waiting",)]
        nats.start()
        db.reconnect_nats()
        db.wait_streaming(30)
        check_consumer_catches_up(db)
    finally:
        pg.cleanup()


def test_setting_off_warns_and_takes_no_snapshot(pg, nats):
    db = CreekDb(pg, nats.url, unique_db_name("slot_off"))
    make_tables(db)
    pg.psql("ALTER SYSTEM SET creek.snapshot_on_slot_loss = off; SELECT pg_reload_conf()")
    since = pg.log_offset()
    db.sql("SELECT pg_terminate_backend(%s)" % db.stat()["pid"])
    drop_slot(db)
    m = pg.wait_log(LOST % 2 + r": changes committed before it were not published\n.*\n.*HINT:  (.*)", 30, since)
    assert "creek.snapshot()" in m.group(1)
    db.wait_streaming(30)
    assert db.scalar("SELECT count(*) FROM creek.pg_stat_creek_snapshots") == "0"


def test_pg_dump_and_restore_keep_the_published_tables(pg, nats):
    """creek.tables is an extension configuration table: pg_dump carries it,
    and the restored database publishes the same tables under its own name."""
    src = CreekDb(pg, nats.url, unique_db_name("dump_src"))
    make_tables(src)
    dump = os.path.join(pg.base_dir, "src.dump")
    for cmd in (["pg_dump", "-Fc", "-f", dump, src.name],
                ["createdb", "-T", "template0", src.name + "_restored"],
                ["pg_restore", "-d", src.name + "_restored", dump]):
        r = subprocess.run(_as_pg_user([os.path.join(PG_BIN, cmd[0]), "-h", "127.0.0.1", "-p", str(pg.port),
                                        "-U", "postgres"] + cmd[1:]),
                           capture_output=True, text=True, env=pg._psql_env(), timeout=120)
        assert r.returncode == 0, r.stderr
    db = CreekDb(pg, nats.url, src.name + "_restored", create=False)
    db.wait_streaming(30)
    assert sorted(db.query("SELECT relid::text FROM creek.tables")) == [("t",), ("u",)]
    db.sql("INSERT INTO t VALUES (200, 'restored', 200)")
    db.wait_caught_up()
    got = [(c.op, c.after["id"]) for c in db.rows(filter_subject=db.wal_subject("public", "t"))]
    assert got[-1] == ("c", 200) and db.wal_stream != src.wal_stream


def test_more_tables_than_snapshot_entries(pg, nats):
    """creek keeps 64 snapshot entries: past them, the snapshots of a lost
    slot are requested as entries free up, until every table has one, also
    when the worker restarts before (creek.snapshot_requests keeps them)."""
    n = 70
    db = CreekDb(pg, nats.url, unique_db_name("slot_many"))
    db.sql("".join("CREATE TABLE m%d (id int PRIMARY KEY); INSERT INTO m%d VALUES (%d);" % (i, i, i)
                   for i in range(n)))
    for i in range(n):
        db.add_table("m%d" % i)
    db.wait_caught_up()
    nats.stop()   # the first 64 snapshots wait for NATS; 6 wait for an entry
    since = pg.log_offset()
    db.sql("SELECT pg_terminate_backend(%s)" % db.stat()["pid"])
    drop_slot(db)
    pg.wait_log(LOST % n, 30, since)
    wait_until(lambda: db.query("SELECT count(*) FILTER (WHERE subject IS NULL), count(subject) "
                                "FROM creek.snapshot_requests") == [("6", "64")], 30, 0.2,
               "64 snapshot requests and 6 to make")
    db.sql("SELECT pg_terminate_backend(%s)" % db.stat()["pid"])
    nats.start()
    db.reconnect_nats()

    def requested():
        return len(re.findall(r"creek requested snapshot \S+ of table m\d+ after its slot was lost", pg.log(since)))
    wait_until(lambda: requested() == n, 180, 0.5, "%d snapshots requested (have %s)" % (n, requested()))

    def ended():
        subjects = set(m.subject for m in read_stream(db.client, db.snap_stream) if m.data == b"EOF")
        return len(subjects) == n
    wait_until(ended, 180, 1, "%d snapshots ended with EOF" % n)
    assert requested() == n
    wait_until(lambda: db.scalar("SELECT count(*) FROM creek.snapshot_requests") == "0", 30, 0.5,
               "creek.snapshot_requests emptied")
