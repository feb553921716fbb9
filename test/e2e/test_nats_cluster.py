"""creek against a three-node NATS cluster (loopback), its streams replicated
three times (creek.stream_replicas = 3), creek.nats_url naming all three
nodes. While rows are written, the wal stream's leader steps down twice and
then the leader node and another node are killed (SIGKILL) and started
again, one after the other, with a large transaction published in between.
Every committed row must be in the stream exactly once, in commit order:
what a leader change refuses or loses is sent again, in order
(Nats-Expected-Last-Msg-Id, see README "Delivery guarantees").

The servers are this module's own (one cluster per test)."""

import threading
import time

import pytest

from creek_helpers import BackgroundWriter, CreekDb, bulk_insert, check_rows, make_writer_table, unique_db_name
from helpers import wait_until
from natsclient import NatsClient
from servers import NatsServer, PgCluster, free_port

NODES = 3


class ClusterNode(NatsServer):
    """A node's JetStream answers only once a quorum of nodes has elected a
    meta leader: the first start does not wait for it (wait_js False)."""
    wait_js = True

    def _wait_jetstream(self, timeout):
        if self.wait_js:
            super()._wait_jetstream(timeout)


@pytest.fixture
def nodes():
    ports = [free_port() for _ in range(NODES)]
    routes = [free_port() for _ in range(NODES)]
    servers = []
    for i in range(NODES):
        conf = {"server_name": "n%d" % (i + 1),
                "cluster": {"name": "creek-test", "listen": "127.0.0.1:%d" % routes[i],
                            "routes": ["nats-route://127.0.0.1:%d" % routes[j] for j in range(NODES) if j != i]}}
        servers.append(ClusterNode(port=ports[i], extra_conf=conf))
    try:
        # (from this thread: a server started from another thread gets its
        # parent-death signal when that thread ends)
        for s in servers:
            s.wait_js = False
            s.start(timeout=30)
        for s in servers:
            s.wait_js = True
            s._wait_jetstream(60)
        yield servers
    finally:
        for s in servers:
            s.cleanup()


@pytest.fixture
def nats(nodes):
    """The node the test's own NATS client uses (the failure report shows its log)."""
    return nodes[0]


@pytest.fixture
def pg(nodes):
    cluster = PgCluster(conf={"creek.nats_url": ",".join(n.url for n in nodes),
                              "creek.stream_replicas": NODES})
    cluster.start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def make_db(pg, nats):
    made = []

    def make(prefix, **kw):
        db = CreekDb(pg, nats.url, unique_db_name(prefix), start_timeout=60, **kw)
        made.append(db)
        return db

    yield make
    for db in made:
        db.close()


def leader(db):
    """The server name of the wal stream's leader, or None during an election."""
    try:
        info = db.client.stream_info(db.wal_stream)
    except Exception:   # the client's node is down
        return None
    return ((info or {}).get("cluster") or {}).get("leader")


def node_named(nodes, name):
    return nodes[int(name[1:]) - 1]


def kill_and_restart(db, nodes, node, pause):
    node.kill()
    time.sleep(pause)
    node.start(timeout=60)
    if node is nodes[0]:
        db.reconnect_nats(30)
    wait_until(lambda: all(replicas_current(db, s) for s in (db.wal_stream, db.schema_stream)),
               60, 0.2, "the streams' replicas to be current again")


def replicas_current(db, stream):
    """The stream has a leader, and both other replicas caught up with it."""
    cluster = (db.client.stream_info(stream) or {}).get("cluster") or {}
    replicas = cluster.get("replicas") or []
    return cluster.get("leader") and len(replicas) == NODES - 1 and all(r.get("current") for r in replicas)


def test_leader_changes_and_node_kills_lose_and_double_nothing(nodes, pg, make_db):
    db = make_db("cluster")
    make_writer_table(db)
    info = wait_until(lambda: db.client.stream_info(db.wal_stream), 30, 0.2, "the wal stream")
    assert info["config"]["num_replicas"] == NODES
    wait_until(lambda: leader(db), 30, 0.2, "a leader for the wal stream")

    writer = BackgroundWriter(pg.port, db.name, "w", 4000, rate=200)   # about 20 s
    writer.start()
    writer.wait_acked(200, timeout=60)

    # the leader hands over to another node, twice
    for _ in range(2):
        old = leader(db)
        r = db.client.js_api("STREAM.LEADER.STEPDOWN." + db.wal_stream, timeout=10)
        assert r is not None and r.get("success"), r
        wait_until(lambda: leader(db) not in (None, old), 30, 0.1, "a new leader")
        time.sleep(1.5)

    # the leader node dies; a large transaction is committed while it is down
    down = node_named(nodes, leader(db))
    bulk_ids = []
    done = threading.Event()

    def bulk():
        time.sleep(0.5)
        bulk_ids.extend(bulk_insert(db, 1, 20000))
        done.set()

    t = threading.Thread(target=bulk, daemon=True)
    t.start()
    kill_and_restart(db, nodes, down, 3.0)
    t.join(60)
    assert done.is_set(), "the large transaction did not commit"

    # then another node
    others = [n for n in nodes if n is not down and n.running()]
    kill_and_restart(db, nodes, others[-1], 2.0)

    writer.join(120)
    assert not writer.is_alive() and writer.error is None, writer.error
    check_rows(db, {"w": writer.acked, "bulk": bulk_ids})
    wait_until(db.caught_up, 60, 0.2, "creek to confirm the last commit")
    s = db.stat()
    assert s["nats_state"] == "connected", s
    assert int(s["messages_published"]) >= len(writer.acked) + len(bulk_ids), s
