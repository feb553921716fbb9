"""Helpers for creek's end-to-end tests (test_streaming, test_faults,
test_lifecycle).

  PgConn        a minimal PostgreSQL client (simple query protocol over TCP,
                trust auth, stdlib only): a session that stays open, so tests
                can interleave transactions and know exactly which COMMIT
                returned before a crash.
  read_stream   every message of a JetStream stream, fast (an ephemeral pull
                consumer; natsclient.stream_messages does one request per
                message).
  CreekDb       one database with creek installed: SQL, pg_stat_creek, its
                streams, and the decoded row messages it published.
"""

import datetime
import io
import json
import os
import threading
import time
import uuid as uuidlib

import avro.io

import avrocheck
from helpers import wait_until
from natsclient import NatsClient
from pgwire import PgConn, PgError  # noqa: F401 (tests import them from here)
from servers import quote_ident

NAMESPACE = "CREEK"


# ---------------------------------------------------------------------------
# LSNs and subject tokens

def lsn_int(text):
    """'16/B374D848' -> int."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(v):
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


def subject_token(name):
    """protocol.md, "Subject tokens"."""
    out = []
    for b in name.encode("utf-8"):
        c = chr(b)
        if ("A" <= c <= "Z") or ("a" <= c <= "z") or ("0" <= c <= "9") or c in "_-":
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


# ---------------------------------------------------------------------------
# Reading JetStream streams

class StreamMsg:
    __slots__ = ("subject", "headers", "data", "seq", "ts_ns")

    def __init__(self, subject, headers, data, seq, ts_ns):
        self.subject = subject
        self.headers = headers
        self.data = data
        self.seq = seq
        self.ts_ns = ts_ns

    @property
    def msg_id(self):
        return self.headers.get("Nats-Msg-Id")

    def __repr__(self):
        return "StreamMsg(seq=%r, subject=%r, id=%r, %d bytes)" % (
            self.seq, self.subject, self.msg_id, len(self.data))


def read_stream(client, stream, start_seq=1, filter_subject=None, batch=1000, timeout=60):
    """Every message of `stream` from start_seq on, in stream order, through an
    ephemeral pull consumer (ack none). Returns [] when the stream is absent."""
    if "%" in stream:
        # nats-server builds a consumer's ack reply subjects with the stream
        # name inside a printf template: a '%' in the name breaks them (the
        # messages arrive without a reply subject, see test_streaming's
        # test_escaped_database_name_consumers_can_ack). Read one by one.
        out = []
        for m in client.stream_messages(stream, filter_subject):
            if m.seq >= start_seq:
                out.append(StreamMsg(m.subject, m.headers, m.data, m.seq, None))
        return out
    deadline = time.monotonic() + timeout
    while True:
        info = client.stream_info(stream)
        if info is None:
            return []
        state = info["state"]
        if state.get("last_seq", 0) < start_seq or state.get("messages", 0) == 0:
            return []
        out = _read_once(client, stream, start_seq, filter_subject, batch, state["last_seq"], deadline)
        # An ephemeral consumer of a replicated stream reads one replica; a
        # replica that is catching up after a restart may not hold the
        # stream's first messages yet. Read again when a read from the
        # stream's start began past its first message and got fewer
        # messages than the stream holds.
        first = state.get("first_seq", 1)
        unchecked = filter_subject is not None or start_seq > first
        if unchecked or (out and out[0].seq <= first) or len(out) >= stream_count(client, stream):
            return out
        assert time.monotonic() < deadline, "reading stream %s: %d of %d messages after %ds" % (
            stream, len(out), stream_count(client, stream), timeout)
        time.sleep(0.2)


def _read_once(client, stream, start_seq, filter_subject, batch, last, deadline):
    cfg = {"ack_policy": "none", "inactive_threshold": 60 * 10**9,
           "replay_policy": "instant"}
    if start_seq > 1:
        cfg.update(deliver_policy="by_start_sequence", opt_start_seq=start_seq)
    else:
        cfg["deliver_policy"] = "all"
    if filter_subject:
        cfg["filter_subject"] = filter_subject
    r = client.js_api("CONSUMER.CREATE." + stream, {"stream_name": stream, "config": cfg})
    assert r is not None and "error" not in r, "cannot create a consumer on %s: %r" % (stream, r)
    name = r["name"]
    inbox = "_INBOX.creek-e2e-" + uuidlib.uuid4().hex
    sid = client.subscribe(inbox)
    out = []
    try:
        while True:
            client.publish("$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (stream, name),
                           json.dumps({"batch": batch, "no_wait": True}).encode(), reply=inbox)
            n = 0
            done = False
            while n < batch:
                left = deadline - time.monotonic()
                assert left > 0, "reading stream %s timed out after %d messages" % (stream, len(out))
                m = client.next_msg(sid, min(left, 10))
                assert m is not None, "no reply from the consumer of %s" % stream
                if m.status is not None:
                    # 404 / 408: nothing more right now. An ephemeral
                    # consumer of a replicated stream reads one replica,
                    # which may lag behind the leader's last_seq: done only
                    # once it has delivered that (or, with a filter, has
                    # nothing pending).
                    if filter_subject is None:
                        done = bool(out) and out[-1].seq >= last
                    else:
                        done = consumer_pending(client, stream, name) == 0
                    if not done:
                        time.sleep(0.05)
                    break
                assert m.reply, "unexpected reply from the consumer of %s: %r" % (stream, m)
                tok = m.reply.split(".")
                # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                seq, ts, pending = int(tok[-4]), int(tok[-2]), int(tok[-1])
                out.append(StreamMsg(m.subject, m.headers, m.data, seq, ts))
                n += 1
                if seq >= last and pending == 0:
                    done = True
                    break
            if done:
                break
    finally:
        try:
            client.unsubscribe(sid)
            client.js_api("CONSUMER.DELETE.%s.%s" % (stream, name), timeout=2)
        except Exception:
            pass
    return out


def consumer_pending(client, stream, consumer):
    """Messages of the stream the consumer has not delivered yet (None: no answer)."""
    r = client.js_api("CONSUMER.INFO.%s.%s" % (stream, consumer), timeout=5)
    return None if r is None or "error" in r else r.get("num_pending")


def stream_count(client, stream):
    info = client.stream_info(stream)
    return 0 if info is None else info["state"].get("messages", 0)


# ---------------------------------------------------------------------------
# Decoded row messages

class RowMsg:
    """A decoded row change and where it came from."""

    def __init__(self, smsg, body, schema_json):
        self.raw = smsg
        self.subject = smsg.subject
        self.seq = smsg.seq
        self.msg_id = smsg.msg_id
        self.body = body
        self.schema_json = schema_json
        self.op = body["op"]
        self.source = body["source"]
        self.before = body["before"]
        self.after = body["after"]

    @property
    def commit_lsn(self):
        return lsn_int(self.source["last_lsn"])

    @property
    def index(self):
        return int(self.msg_id.rsplit("/", 1)[1])

    def __repr__(self):
        return "RowMsg(seq=%d, id=%s, %s.%s op=%s before=%r after=%r)" % (
            self.seq, self.msg_id, self.source["schema"], self.source["table"], self.op,
            _short(self.before), _short(self.after))


def _short(v):
    s = repr(v)
    return s if len(s) < 200 else s[:200] + "..."


def payload_fingerprint_b64(payload):
    return avrocheck.b64url(payload[2:10])


# ---------------------------------------------------------------------------
# A database with creek installed

_db_counter = [0]


def unique_db_name(prefix):
    _db_counter[0] += 1
    return "%s_%d_%d" % (prefix, os.getpid() % 10000, _db_counter[0])


class CreekDb:
    """A database of `pg` with the creek extension, and its streams on `nats`."""

    def __init__(self, pg, nats_url, name, create=True, start_timeout=15, before_extension=None):
        self.pg = pg
        self.nats_url = nats_url
        self.name = name
        self.client = NatsClient(nats_url, timeout=10)
        self.schemas = {}   # fingerprint b64 -> schema JSON text
        self._readers = {}  # fingerprint b64 -> (fingerprint bytes, DatumReader)
        if create:
            pg.psql("CREATE DATABASE %s" % quote_ident(name))
            if before_extension:
                self.sql(before_extension)
            self.sql("CREATE EXTENSION creek")
            self.wait_streaming(start_timeout)
        self.oid = int(pg.scalar("SELECT oid FROM pg_database WHERE datname = '%s'" % name))

    # -- names ----------------------------------------------------------------
    @property
    def token(self):
        return subject_token(self.name)

    @property
    def stream_token(self):
        # stream names carry the subject token with '=' for '%' (README)
        return self.token.replace("%", "=")

    @property
    def wal_stream(self):
        return "%s_%s_wal" % (NAMESPACE, self.stream_token)

    @property
    def schema_stream(self):
        return "%s_%s_schema" % (NAMESPACE, self.stream_token)

    @property
    def snap_stream(self):
        return "%s_%s_snap" % (NAMESPACE, self.stream_token)

    @property
    def slot_name(self):
        return "creek_%d" % self.oid

    def wal_subject(self, schema, table):
        return "%s.%s.wal.%s.%s" % (NAMESPACE, self.token, subject_token(schema),
                                    subject_token(table))

    def schema_subject(self, schema, table):
        return "%s.%s.schema.%s.%s" % (NAMESPACE, self.token, subject_token(schema),
                                       subject_token(table))

    # -- SQL --------------------------------------------------------------------
    def sql(self, sql, check=True):
        return self.pg.psql(sql, db=self.name, check=check)

    def query(self, sql):
        return self.pg.query(sql, db=self.name)

    def scalar(self, sql):
        return self.pg.scalar(sql, db=self.name)

    def connect(self, **kw):
        return PgConn(self.pg.port, self.name, **kw)

    def add_table(self, tbl):
        self.sql("SELECT creek.add_table(%s)" % _literal(tbl))

    def remove_table(self, tbl):
        self.sql("SELECT creek.remove_table(%s)" % _literal(tbl))

    def stat(self):
        """This database's row of creek.pg_stat_creek as a dict, or None."""
        rows = self.pg.query(
            "SELECT datid, datname, pid, state, nats_state, slot_name, last_decoded_lsn, "
            "confirmed_lsn, messages_published, bytes_published, messages_in_flight, "
            "coalesce(last_error, ''), last_error_at, started_at "
            "FROM creek.pg_stat_creek WHERE datname = current_database()", db=self.name)
        if not rows:
            return None
        keys = ("datid", "datname", "pid", "state", "nats_state", "slot_name",
                "last_decoded_lsn", "confirmed_lsn", "messages_published", "bytes_published",
                "messages_in_flight", "last_error", "last_error_at", "started_at")
        return dict(zip(keys, rows[0]))

    def caught_up(self):
        """Everything committed so far is acknowledged by JetStream."""
        return self.scalar("SELECT messages_in_flight = 0 AND confirmed_lsn >= pg_current_wal_lsn() "
                           "FROM creek.pg_stat_creek WHERE datname = current_database()") == "t"

    def wait_caught_up(self, timeout=60):
        return wait_until(self.caught_up, timeout, 0.2, lambda: (
            "the change stream of %s caught up (WAL at %s; worker: %r; last creek log lines: %s)"
            % (self.name, _safe(lambda: self.scalar("SELECT pg_current_wal_lsn()")), _safe(self.stat),
               [l for l in self.pg.log().splitlines() if "creek" in l][-10:])))

    def wait_streaming(self, timeout=15):
        def ok():
            s = self.stat()
            return s if s and s["state"] == "streaming" and s["nats_state"] == "connected" \
                and s["pid"] not in (None, "0") else None
        return wait_until(ok, timeout, 0.1, "creek worker of %s streaming (last: %r)"
                          % (self.name, _safe(self.stat)))

    def slot(self):
        rows = self.pg.query("SELECT slot_name, plugin, active, confirmed_flush_lsn "
                             "FROM pg_replication_slots WHERE slot_name = '%s'" % self.slot_name)
        return rows[0] if rows else None

    # -- streams ---------------------------------------------------------------
    def wal_count(self):
        return stream_count(self.client, self.wal_stream)

    def wait_wal_count(self, n, timeout=30, exact=True):
        """Wait until the wal stream holds n messages; with exact, check it
        does not go past n (settles for a moment)."""
        wait_until(lambda: self.wal_count() >= n, timeout, 0.1,
                   "%d messages in %s (have %d)" % (n, self.wal_stream, _safe(self.wal_count)))
        if exact:
            time.sleep(0.3)
            got = self.wal_count()
            assert got == n, "%s holds %d messages, expected %d" % (self.wal_stream, got, n)

    def schema_messages(self):
        return read_stream(self.client, self.schema_stream)

    def load_schemas(self):
        for m in self.schema_messages():
            doc = json.loads(m.data.decode("utf-8"))
            self.schemas[doc["fingerprint"]] = doc["schema"]
        return self.schemas

    def lookup_schema(self, fp_b64, timeout=5):
        """Asks the schema service (NS._schemas); the reply's JSON or None."""
        r = self.client.request(NAMESPACE + "._schemas", fp_b64.encode(), timeout=timeout)
        return None if r is None else json.loads(r.decode("utf-8"))

    def decode(self, smsg):
        fp = payload_fingerprint_b64(smsg.data)
        if fp not in self.schemas:
            self.load_schemas()
        assert fp in self.schemas, "no schema with fingerprint %s in %s (message %r; the stream: %r)" % (
            fp, self.schema_stream, smsg, _safe(lambda: self.client.stream_info(self.schema_stream)["state"]))
        schema = self.schemas[fp]
        ent = self._readers.get(fp)
        if ent is None:
            # the same checks as avrocheck.decode_single_object, with the
            # fingerprint and the parsed schema computed once per schema
            fp_bytes = avrocheck.fingerprint(schema)
            assert avrocheck.b64url(fp_bytes) == fp, \
                "schema published as %s has fingerprint %s" % (fp, avrocheck.b64url(fp_bytes))
            ent = (fp_bytes, avro.io.DatumReader(avrocheck.parse_schema(schema)))
            self._readers[fp] = ent
        payload = bytes(smsg.data)
        assert payload[:2] == avrocheck.SINGLE_OBJECT_MAGIC, \
            "bad single-object marker %s in %r" % (payload[:2].hex(), smsg)
        assert payload[2:10] == ent[0]
        buf = io.BytesIO(payload[10:])
        body = ent[1].read(avro.io.BinaryDecoder(buf))
        assert buf.tell() == len(payload) - 10, "%d bytes left over after the Avro datum of %r" % (
            len(payload) - 10 - buf.tell(), smsg)
        return RowMsg(smsg, body, schema)

    def rows(self, start_seq=1, filter_subject=None):
        """Every row message of the wal stream, decoded, in stream order (a
        message split in parts is put back together: see PartAssembler)."""
        asm = avrocheck.PartAssembler()
        out = []
        for m in read_stream(self.client, self.wal_stream, start_seq, filter_subject):
            data = asm.add(m.subject, m.headers, m.data)
            if data is None:
                continue
            if data is not m.data:
                m = StreamMsg(m.subject, dict(m.headers, **{
                    "Nats-Msg-Id": m.headers["Nats-Msg-Id"].rsplit(":", 1)[0]}), data, m.seq, m.ts_ns)
            out.append(self.decode(m))
        return out

    def reconnect_nats(self, timeout=10):
        """A new NATS connection (after the server was restarted)."""
        self.close()
        self.client = wait_until(lambda: NatsClient(self.nats_url, timeout=5), timeout, 0.2,
                                 "connecting to %s" % self.nats_url)
        return self.client

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass

    def drop(self, timeout=20):
        """Best effort: drop the extension (the worker drops its slot), then
        the database, so the shared cluster gets its slot and worker back."""
        try:
            self.sql("DROP EXTENSION IF EXISTS creek CASCADE")
            wait_until(lambda: self.slot() is None, timeout, 0.2, "slot dropped")
            self.pg.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quote_ident(self.name))
        except Exception:
            pass
        self.close()


def _literal(s):
    return "'" + s.replace("'", "''") + "'"


def _safe(fn):
    try:
        return fn()
    except Exception as e:
        return "<%s>" % e


# ---------------------------------------------------------------------------
# Assertions shared by the tests

def assert_msg_ids(rows):
    """Nats-Msg-Id is "<commit lsn>/<index>" (after a failover
    "<timeline>@<commit lsn>/<index>"), unique, indexes 0.. per transaction
    in stream order, commit LSNs never decrease, and the commit LSN equals
    source.last_lsn."""
    seen = set()
    prev_commit = -1
    expect_index = 0
    for r in rows:
        assert r.msg_id is not None, "message without Nats-Msg-Id: %r" % r
        assert r.msg_id not in seen, "duplicate Nats-Msg-Id %s" % r.msg_id
        seen.add(r.msg_id)
        prefix, idx = r.msg_id.rsplit("/", 1)
        tli, _, prefix = prefix.rpartition("@")
        assert tli == "" or (tli.isdigit() and int(tli) > 1), "bad timeline in msg id %s" % r.msg_id
        assert prefix == r.source["last_lsn"], "msg id %s but last_lsn %s" % (
            r.msg_id, r.source["last_lsn"])
        assert idx.isdigit() and str(int(idx)) == idx, "bad index in msg id %s" % r.msg_id
        commit = lsn_int(prefix)
        assert commit >= prev_commit, "commit LSN goes back at %r (previous %s)" % (
            r, lsn_text(prev_commit))
        if commit != prev_commit:
            expect_index = 0
        assert int(idx) == expect_index, "msg id %s: expected index %d" % (r.msg_id, expect_index)
        expect_index += 1
        assert lsn_int(r.source["lsn"]) < commit, "change lsn %s not before commit %s" % (
            r.source["lsn"], prefix)
        prev_commit = commit


def us_to_naive_dt(us):
    """local-timestamp-micros (decoded raw) -> naive datetime."""
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)


class BackgroundWriter(threading.Thread):
    """Inserts rows id = 1..n into `table` (id int primary key, payload text),
    one transaction per row, on its own session, at about `rate` rows/s.
    .acked holds the ids whose INSERT returned (autocommit: committed), in
    order; .error the exception that ended it early (e.g. the server
    crashed)."""

    def __init__(self, port, db, table, n, rate=300, start_id=1):
        super().__init__(daemon=True)
        self.port, self.db, self.table, self.n, self.rate = port, db, table, n, rate
        self.start_id = start_id
        self.acked = []
        self.error = None
        self.stop_flag = threading.Event()
        self.progress = threading.Event()

    def run(self):
        try:
            conn = PgConn(self.port, self.db, appname="creek-e2e-writer")
        except Exception as e:
            self.error = e
            return
        t0 = time.monotonic()
        try:
            for i in range(self.start_id, self.start_id + self.n):
                if self.stop_flag.is_set():
                    break
                conn.query("INSERT INTO %s (id, payload) VALUES (%d, 'row %d')"
                           % (self.table, i, i))
                self.acked.append(i)
                self.progress.set()
                # pace: row k at t0 + k/rate
                ahead = t0 + (i - self.start_id + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except Exception as e:
            self.error = e
        finally:
            conn.close()

    def wait_acked(self, k, timeout=30):
        wait_until(lambda: len(self.acked) >= k or self.error or not self.is_alive(), timeout,
                   0.02, "writer to insert %d rows" % k)
        assert len(self.acked) >= k, "writer stopped after %d rows: %r" % (
            len(self.acked), self.error)


# ---------------------------------------------------------------------------
# fault tests (test_faults.py, test_nats_cluster.py): rows written while something fails

def make_writer_table(db):
    db.sql("CREATE TABLE w (id int PRIMARY KEY, payload text); "
           "CREATE TABLE bulk (id int PRIMARY KEY, payload text)")
    db.add_table("w")
    db.add_table("bulk")


def check_rows(db, expect):
    """The wal stream holds exactly one insert per id of each table, in the
    order given: expect = {table: [ids...]}. Returns the rows by table."""
    total = sum(len(v) for v in expect.values())
    db.wait_wal_count(total, timeout=90)
    rows = db.rows()
    assert_msg_ids(rows)  # unique ids, commit LSNs never go back
    by_table = {}
    for r in rows:
        by_table.setdefault(r.source["table"], []).append(r)
    assert sorted(by_table) == sorted(expect), sorted(by_table)
    for table, ids in expect.items():
        got = [r.after["id"] for r in by_table[table]]
        dups = sorted(i for i in set(got) if got.count(i) > 1) if len(set(got)) != len(got) else []
        missing = sorted(set(ids) - set(got))
        assert not dups, "%s: duplicated rows: %r" % (table, dups[:20])
        assert not missing, "%s: %d rows missing, first %r" % (table, len(missing), missing[:20])
        assert got == list(ids), "%s: rows out of order" % table
        assert all(r.op == "c" for r in by_table[table])
    return by_table


def bulk_insert(db, first, n):
    """One transaction inserting ids first..first+n-1 into bulk."""
    db.sql("INSERT INTO bulk SELECT g, 'bulk ' || g FROM generate_series(%d, %d) g"
           % (first, first + n - 1))
    return list(range(first, first + n))
