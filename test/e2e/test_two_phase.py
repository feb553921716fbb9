"""Two-phase commit: a prepared transaction's changes are published once,
when COMMIT PREPARED commits it (in commit order, with its own commit LSN in
the message ids), and never when ROLLBACK PREPARED drops it; a prepared
transaction still open across a worker restart is published once too."""

import pytest

from creek_helpers import CreekDb, assert_msg_ids, unique_db_name
from helpers import wait_until
from servers import NatsServer, PgCluster


@pytest.fixture(scope="module")
def nats():
    server = NatsServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def pg(nats):
    cluster = PgCluster(conf={"creek.nats_url": nats.url, "max_prepared_transactions": 10})
    cluster.start()
    yield cluster
    cluster.cleanup()


def ops(db):
    return [(c.op, c.after["id"] if c.after else c.before["id"], c.after and c.after["v"])
            for c in db.rows(filter_subject=db.wal_subject("public", "t"))]


def test_commit_prepared_publishes_once_and_rollback_prepared_nothing(pg, nats):
    db = CreekDb(pg, nats.url, unique_db_name("twophase"))
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.add_table("t")
    db.sql("BEGIN; INSERT INTO t VALUES (1, 'prepared'), (2, 'prepared'); UPDATE t SET v = 'updated' WHERE id = 2;"
           "PREPARE TRANSACTION 'tx_commit'")
    db.sql("BEGIN; INSERT INTO t VALUES (3, 'rolled back'); PREPARE TRANSACTION 'tx_rollback'")
    db.sql("INSERT INTO t VALUES (4, 'plain')")
    db.wait_caught_up()
    assert ops(db) == [("c", 4, "plain")]
    db.sql("ROLLBACK PREPARED 'tx_rollback'")
    db.sql("COMMIT PREPARED 'tx_commit'")
    db.wait_caught_up()
    rows = db.rows(filter_subject=db.wal_subject("public", "t"))
    assert ops(db) == [("c", 4, "plain"), ("c", 1, "prepared"), ("c", 2, "prepared"), ("u", 2, "updated")]
    assert_msg_ids(rows)
    assert rows[1].source["tx_id"] == rows[3].source["tx_id"] != rows[0].source["tx_id"]


def test_prepared_transaction_open_across_a_worker_restart(pg, nats):
    db = CreekDb(pg, nats.url, unique_db_name("twophase_restart"))
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.add_table("t")
    db.sql("BEGIN; INSERT INTO t VALUES (1, 'prepared'); PREPARE TRANSACTION 'tx_restart'")
    db.sql("INSERT INTO t VALUES (2, 'plain')")
    db.wait_caught_up()
    pid = db.stat()["pid"]
    db.sql("SELECT pg_terminate_backend(%s)" % pid)
    wait_until(lambda: db.stat()["pid"] not in (None, pid) and db.stat()["state"] == "streaming", 30, 0.2,
               "worker restarted")
    db.sql("COMMIT PREPARED 'tx_restart'")
    db.wait_caught_up()
    assert ops(db) == [("c", 2, "plain"), ("c", 1, "prepared")]
