"""Rows larger than the NATS server's max_payload: split into parts that a
consumer puts back together (README, "Messages larger than max_payload"),
never dropped and never a stalled stream, also when the limit goes down while
creek runs."""

import pytest

from creek_helpers import CreekDb, read_stream
from helpers import wait_until
from servers import NatsServer, PgCluster

MAX_PAYLOAD = 65536


@pytest.fixture(scope="module")
def small_nats():
    n = NatsServer(extra_conf="jetstream: enabled\nmax_payload: %d\n" % MAX_PAYLOAD)
    n.start()
    yield n
    n.cleanup()


@pytest.fixture(scope="module")
def small_pg(small_nats):
    pg = PgCluster(conf={"creek.nats_url": small_nats.url})
    pg.start()
    yield pg
    pg.cleanup()


def big_text(seed, kb):
    """SQL for an incompressible-looking text of about kb kilobytes."""
    return ("(SELECT string_agg(md5('%s' || g), '') FROM generate_series(1, %d) g)"
            % (seed, kb * 1024 // 32))


def test_big_row_is_split_and_reassembled(small_pg, small_nats):
    db = CreekDb(small_pg, small_nats.url, "bigrows")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, body text)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1, 'small')")
    db.sql("INSERT INTO t VALUES (2, %s)" % big_text("a", 300))
    db.sql("UPDATE t SET body = %s WHERE id = 1" % big_text("b", 200))
    db.sql("INSERT INTO t VALUES (3, 'after')")
    want = dict(db.query("SELECT id, body FROM t"))
    db.wait_caught_up(30)
    raw = read_stream(db.client, db.wal_stream)
    parts = [m for m in raw if m.headers.get("Creek-Chunk")]
    assert len(parts) >= 5 + 4, [m.headers for m in raw]
    assert all(len(m.data) <= MAX_PAYLOAD - 1024 for m in raw)
    assert parts[0].headers["Creek-Chunk"].startswith("1/")
    assert all(m.msg_id.endswith(":" + m.headers["Creek-Chunk"]) for m in parts)
    rows = db.rows()
    assert [(r.op, (r.after or {}).get("id")) for r in rows] == [("c", 1), ("c", 2), ("u", 1), ("c", 3)]
    assert rows[1].after["body"] == want["2"]
    assert rows[2].after["body"] == want["1"]
    assert rows[1].msg_id.endswith("/0") and ":" not in rows[1].msg_id
    assert db.stat()["last_error"] == ""
    db.close()


def test_limit_going_down_restarts_and_resplits(small_pg, small_nats):
    db = CreekDb(small_pg, small_nats.url, "bigrows2")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, body text)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1, %s)" % big_text("c", 100))
    db.wait_wal_count(2, exact=False)
    pid = db.stat()["pid"]
    # the stream's own message size limit goes down behind creek's back
    info = db.client.stream_info(db.wal_stream)
    cfg = dict(info["config"], max_msg_size=8192)
    r = db.client.js_api("STREAM.UPDATE." + db.wal_stream, cfg)
    assert "error" not in r, r
    since = small_pg.log_offset()
    # small changes committed right after it travel with its refused parts:
    # none is stored ahead of it (Nats-Expected-Last-Msg-Id)
    db.sql("INSERT INTO t VALUES (2, %s); INSERT INTO t VALUES (3, 'x'); INSERT INTO t VALUES (4, 'y')"
           % big_text("d", 100))
    small_pg.wait_log("creek worker restarting: NATS refused a message as too large", 30, since)
    wait_until(lambda: db.stat()["pid"] != pid and db.stat()["state"] == "streaming", 60, 0.3,
               "a new worker")
    db.wait_caught_up(60)
    rows = db.rows()
    assert [(r.op, r.after["id"]) for r in rows] == [("c", 1), ("c", 2), ("c", 3), ("c", 4)]
    assert rows[1].after["body"] == db.scalar("SELECT body FROM t WHERE id = 2")
    raw = read_stream(db.client, db.wal_stream)
    assert all(len(m.data) <= 8192 - 1024 for m in raw if m.seq > 2)
    db.close()
