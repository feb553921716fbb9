"""Tests of the test infrastructure itself (test/lib). None of them needs the
creek extension: the Postgres clusters here never preload it."""

import base64
import datetime
import io
import json
import os
import subprocess
import sys
import time

import pytest

import avro.io
import avro.schema

import avrocheck
from helpers import wait_until
from natsclient import NatsClient, encode_headers, parse_headers, subject_matches
from servers import NatsServer, PgCluster, PsqlError, port_open

pytestmark = pytest.mark.infra

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_PY = os.path.join(HERE, "..", "lib", "servers.py")


# ---------------------------------------------------------------------------
# NATS client

def test_pub_sub_two_clients(nats):
    with NatsClient(nats.url) as a, NatsClient(nats.url) as b:
        sid = b.subscribe("infra.ps.>")
        a.publish("infra.ps.one", b"hello")
        a.publish("infra.ps.two.x", b"", headers={"Nats-Msg-Id": "m-2", "X-Other": "a b"})
        a.publish("infra.other", b"not for b")
        a.publish("infra.ps.three", b"\x00\r\n\xff" * 1000)
        m1 = b.next_msg(sid, 5)
        m2 = b.next_msg(sid, 5)
        m3 = b.next_msg(sid, 5)
        assert (m1.subject, m1.data, m1.headers) == ("infra.ps.one", b"hello", {})
        assert m2.subject == "infra.ps.two.x" and m2.data == b""
        assert m2.headers == {"Nats-Msg-Id": "m-2", "X-Other": "a b"}
        assert m2.header("nats-msg-id") == "m-2"
        assert m3.data == b"\x00\r\n\xff" * 1000
        assert b.next_msg(sid, 0.2) is None
        b.unsubscribe(sid)
        b.flush()
        a.publish("infra.ps.one", b"after unsub")
        a.flush()
        with pytest.raises(KeyError):
            b.next_msg(sid, 0.1)


def test_request_reply(nats):
    with NatsClient(nats.url) as a, NatsClient(nats.url) as b:
        sid = b.subscribe("infra.svc")
        t0 = time.monotonic()
        # no responders: None, and quickly (no waiting for the timeout)
        assert a.request("infra.nobody", b"x", timeout=5) is None
        assert time.monotonic() - t0 < 2

        import threading

        def serve(n):
            for _ in range(n):
                m = b.next_msg(sid, 5)
                if m is None:
                    return
                hdr = {"Echo": m.header("Ask")} if m.headers else None
                b.publish(m.reply, b"re:" + m.data, headers=hdr)

        th = threading.Thread(target=serve, args=(3,))
        th.start()
        assert a.request("infra.svc", b"ping", timeout=5) == b"re:ping"
        r = a.request_msg("infra.svc", b"h", timeout=5, headers={"Ask": "q1"})
        assert r.data == b"re:h" and r.headers == {"Echo": "q1"}
        many = a.request_many("infra.svc", b"many", timeout=0.5)
        assert [m.data for m in many] == [b"re:many"]
        th.join(10)
        # subscriber present but silent: None after the timeout
        t0 = time.monotonic()
        assert a.request("infra.svc", b"late", timeout=0.5) is None
        assert 0.4 < time.monotonic() - t0 < 3


def test_server_pings_answered_and_max_payload():
    with NatsServer(extra_conf={"ping_interval": "250ms", "ping_max": 1,
                                "max_payload": 4096}) as srv:
        with NatsClient(srv.url) as c:
            assert c.server_info["max_payload"] == 4096
            sid = c.subscribe("p")
            time.sleep(1.5)  # several server PINGs; the reader thread answers them
            assert not c.is_closed
            c.publish("p", b"still here")
            assert c.next_msg(sid, 2).data == b"still here"
            # a too large payload makes the server drop the connection
            c.publish("p", b"x" * 5000)
            wait_until(lambda: c.is_closed, 5, what="connection closed on max_payload")
            assert "Maximum Payload" in (c.last_error or "")


def test_header_codec_and_subject_match():
    block = encode_headers({"A": "1", "Nats-Msg-Id": "0/16B3A28:3"})
    assert block == b"NATS/1.0\r\nA: 1\r\nNats-Msg-Id: 0/16B3A28:3\r\n\r\n"
    assert parse_headers(block) == (None, None, [("A", "1"), ("Nats-Msg-Id", "0/16B3A28:3")])
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == (503, None, [])
    assert parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n")[:2] == (404, "No Messages")
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*.c", "a.b.c.d")
    assert subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    assert subject_matches("a.b", "a.b") and not subject_matches("a.b", "a.b.c")


# ---------------------------------------------------------------------------
# JetStream helpers

def test_jetstream_stream_roundtrip(client):
    name = "INFRA_JS"
    client.delete_stream(name)
    assert client.stream_info(name) is None
    r = client.create_stream({"name": name, "subjects": ["infra.js.>"], "storage": "file",
                              "duplicate_window": 60_000_000_000})
    assert "error" not in r, r
    assert name in client.stream_names()
    acks = []
    for i in range(5):
        subj = "infra.js.%s.t%d" % ("a" if i % 2 == 0 else "b", i)
        acks.append(client.js_publish(subj, b"payload-%d" % i,
                                      headers={"Nats-Msg-Id": "id-%d" % i, "K": str(i)}))
    assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
    # same Nats-Msg-Id inside the duplicate window: dropped
    dup = client.js_publish("infra.js.a.t0", b"again", headers={"Nats-Msg-Id": "id-0"})
    assert dup.get("duplicate") is True and dup["seq"] == 1
    # a message without headers
    client.js_publish("infra.js.c", b"plain")
    info = client.stream_info(name)
    assert info["state"]["messages"] == 6 and info["state"]["last_seq"] == 6

    # delete one message: stream_messages must skip it
    d = client.js_api("STREAM.MSG.DELETE." + name, {"seq": 2})
    assert d.get("success") is True, d
    msgs = client.stream_messages(name)
    assert [m.seq for m in msgs] == [1, 3, 4, 5, 6]
    m1 = msgs[0]
    assert m1.subject == "infra.js.a.t0" and m1.data == b"payload-0"
    assert m1.headers == {"Nats-Msg-Id": "id-0", "K": "0"}
    assert msgs[-1].headers == {} and msgs[-1].data == b"plain"
    assert client.stream_msg(name, 2) is None
    assert client.stream_msg(name, 99) is None
    assert client.stream_msg(name, 4).data == b"payload-3"

    only_a = client.stream_messages(name, "infra.js.a.*")
    assert [m.seq for m in only_a] == [1, 3, 5]
    assert client.stream_messages(name, "infra.nothing.>") == []

    assert client.purge_stream(name) == 5
    assert client.stream_messages(name) == []
    assert client.delete_stream(name) is True
    assert client.delete_stream(name) is False
    assert client.stream_info(name) is None
    assert client.stream_messages(name) == []


def test_nats_restart_keeps_store_and_kill():
    with NatsServer() as srv:
        port, store = srv.port, srv.store_dir
        with NatsClient(srv.url) as c:
            assert "error" not in c.create_stream({"name": "KEEP", "subjects": ["keep.>"]})
            assert c.js_publish("keep.a", b"1")["seq"] == 1
        srv.restart()
        assert srv.port == port and srv.store_dir == store
        with NatsClient(srv.url) as c:
            assert [m.data for m in c.stream_messages("KEEP")] == [b"1"]
            sid = c.subscribe("x")
            srv.kill()
            wait_until(lambda: c.is_closed, 5, what="client notices the SIGKILL")
            assert c.next_msg(sid, 0.1) is None
        assert not port_open(port)
        srv.restart()
        with NatsClient(srv.url) as c:
            assert [m.data for m in c.stream_messages("KEEP")] == [b"1"]


# ---------------------------------------------------------------------------
# Avro: CRC-64-AVRO, canonical form, fingerprints

# From the Avro project's share/test/data/schema-tests.txt (validated by the
# Java implementation): input, canonical form, signed 64-bit fingerprint.
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"null"}', '"null"', 7195948357588979594),
    ('"boolean"', '"boolean"', -6970731678124411036),
    ('{"type":"boolean"}', '"boolean"', -6970731678124411036),
    ('"int"', '"int"', 8247732601305521295),
    ('{"type":"int"}', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"float"', '"float"', 5583340709985441680),
    ('"double"', '"double"', -8181574048448539266),
    ('"bytes"', '"bytes"', 5746618253357095269),
    ('"string"', '"string"', -8142146995180207161),
    ('[  ]', '[]', -1241056759729112623),
    ('[ "int"  ]', '["int"]', -5232228896498058493),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    ('{"fields":[], "type":"record", "name":"foo"}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
     '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}',
     '{"name":"a.b.foo","type":"record","fields":[]}', -4616218487480524110),
    ('{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
     '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
     7843277075252814651),
    ('{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},\n'
     '            {"order":"descending","name":"f2","doc":"Hello","type":"int"}],\n'
     '  "type":"record", "name":"foo"\n}',
     '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
     '{"name":"f2","type":"int"}]}', -4860222112080293046),
    ('{"type":"enum", "name":"foo", "symbols":["A1"]}',
     '{"name":"foo","type":"enum","symbols":["A1"]}', -6342190197741309591),
    ('{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}',
     '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    ('{"name":"foo","type":"fixed","size":15}',
     '{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ('{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}',
     '{"name":"x.y.z.foo","type":"fixed","size":32}', -3064184465700546786),
    ('{ "items":{"type":"null"}, "type":"array"}',
     '{"type":"array","items":"null"}', -589620603366471059),
    ('{ "values":"string", "type":"map"}',
     '{"type":"map","values":"string"}', -8732877298790414990),
    ('{"name":"PigValue","type":"record",\n'
     '   "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
     '{"name":"PigValue","type":"record","fields":[{"name":"value",'
     '"type":["null","int","long","PigValue"]}]}', -1759257747318642341),
]


def test_crc64_basic():
    assert avrocheck.crc64_avro(b"") == avrocheck.EMPTY
    assert avrocheck.to_signed64(avrocheck.crc64_avro(b'"null"')) == 7195948357588979594
    assert avrocheck.to_signed64(avrocheck.crc64_avro(b'"int"')) == 8247732601305521295
    assert avrocheck.to_signed64(avrocheck.crc64_avro(b'"string"')) == -8142146995180207161


@pytest.mark.parametrize("inp,canon,fp", SPEC_VECTORS)
def test_canonical_form_spec_vectors(inp, canon, fp):
    assert avrocheck.canonical_form(inp) == canon
    assert avrocheck.to_signed64(avrocheck.fingerprint_int(inp)) == fp
    assert avrocheck.fingerprint(inp) == (fp & 0xffffffffffffffff).to_bytes(8, "little")


def test_canonical_form_logical_types_and_references():
    schema = {
        "type": "record", "name": "publish_message", "namespace": "creek", "doc": "d",
        "fields": [
            {"name": "fingerprint", "type": "string"},
            {"name": "source", "type": {"type": "record", "name": "source", "fields": [
                {"name": "tx_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "lsn", "type": "string"}]}},
            {"name": "op", "type": {"type": "enum", "name": "op", "symbols": ["c", "u"],
                                    "default": "c"}},
            {"name": "sent_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "before", "default": None, "type": ["null", {
                "type": "record", "name": "t", "namespace": "public",
                "fields": [
                    {"name": "id", "type": "int", "pgType": "int4", "pgKey": True},
                    {"name": "u", "type": ["null", {"type": "string", "logicalType": "uuid"}],
                     "pgType": "uuid", "pgKey": False, "default": None},
                    {"name": "d", "type": {"type": "int", "logicalType": "date"}},
                    {"name": "m", "type": {"type": "bytes", "logicalType": "decimal",
                                           "precision": 10, "scale": 2}},
                    {"name": "kind", "type": "creek.op"},
                    {"name": "hist", "type": {"type": "array", "items": {
                        "type": "map", "values": "creek.source"}}},
                    {"name": "f", "type": {"type": "fixed", "name": "f16", "size": 16,
                                           "logicalType": "duration"}},
                ]}]},
            {"name": "after", "type": ["null", "public.t"], "default": None},
        ]}
    expected = (
        '{"name":"creek.publish_message","type":"record","fields":['
        '{"name":"fingerprint","type":"string"},'
        '{"name":"source","type":{"name":"creek.source","type":"record","fields":['
        '{"name":"tx_at","type":"long"},{"name":"lsn","type":"string"}]}},'
        '{"name":"op","type":{"name":"creek.op","type":"enum","symbols":["c","u"]}},'
        '{"name":"sent_at","type":"long"},'
        '{"name":"before","type":["null",{"name":"public.t","type":"record","fields":['
        '{"name":"id","type":"int"},{"name":"u","type":["null","string"]},'
        '{"name":"d","type":"int"},{"name":"m","type":"bytes"},'
        '{"name":"kind","type":"creek.op"},'
        '{"name":"hist","type":{"type":"array","items":{"type":"map","values":"creek.source"}}},'
        '{"name":"f","type":{"name":"public.f16","type":"fixed","size":16}}]}]},'
        '{"name":"after","type":["null","public.t"]}]}')
    assert avrocheck.canonical_form(json.dumps(schema)) == expected
    assert avrocheck.canonical_form(schema) == expected
    # whitespace, attribute order and extra attributes do not matter
    assert avrocheck.fingerprint(json.dumps(schema, indent=3, sort_keys=True)) == \
        avrocheck.fingerprint(expected)
    assert avrocheck.fingerprint_int(expected) == avrocheck.crc64_avro(expected.encode())
    # a bare short name resolves in the enclosing namespace, then the null one
    assert avrocheck.canonical_form(
        '{"type":"record","name":"r","namespace":"n","fields":['
        '{"name":"a","type":{"type":"fixed","name":"x","size":1}},{"name":"b","type":"x"}]}'
    ) == ('{"name":"n.r","type":"record","fields":[{"name":"a","type":{"name":"n.x",'
          '"type":"fixed","size":1}},{"name":"b","type":"n.x"}]}')
    with pytest.raises(ValueError):
        avrocheck.canonical_form('{"type":"record","name":"r","fields":[{"name":"a","type":"nope"}]}')
    # python3-avro parses our expected form to the same canonical form
    assert avrocheck.canonical_form(avro.schema.parse(expected).canonical_form) == expected


def test_b64url():
    assert avrocheck.b64url(b"\xfb\xff\xfe") == "-__-"
    assert avrocheck.b64url(b"\x00" * 8) == "AAAAAAAAAAA="
    fp = avrocheck.fingerprint('"int"')
    assert base64.urlsafe_b64decode(avrocheck.b64url(fp)) == fp


# ---------------------------------------------------------------------------
# Avro: decoding

ROW_SCHEMA = json.dumps({
    "type": "record", "name": "publish_message", "fields": [
        {"name": "fingerprint", "type": "string"},
        {"name": "op", "type": {"type": "enum", "name": "op",
                                "symbols": ["c", "u", "u_pk", "d", "t", "r"]}},
        {"name": "sent_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "after", "type": ["null", {"type": "record", "name": "row", "fields": [
            {"name": "id", "type": "long", "pgType": "int8", "pgKey": True},
            {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}],
             "pgType": "date", "pgKey": False},
            {"name": "name", "type": ["null", "string"], "pgType": "text", "pgKey": False},
        ]}]},
    ]})


def _write(datum, schema_json):
    buf = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(schema_json)).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def test_decode_single_object():
    sent = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    datum = {"fingerprint": avrocheck.b64url(avrocheck.fingerprint(ROW_SCHEMA)), "op": "c",
             "sent_at": sent,
             "after": {"id": 42, "day": datetime.date(2024, 2, 29), "name": "x\u00e9"}}
    body = _write(datum, ROW_SCHEMA)
    payload = b"\xc3\x01" + avrocheck.fingerprint(ROW_SCHEMA) + body

    got = avrocheck.decode_single_object(payload, ROW_SCHEMA)
    assert got == datum
    raw = avrocheck.decode_single_object(payload, ROW_SCHEMA, raw=True)
    assert raw["sent_at"] == 1714564800123456
    assert raw["after"]["day"] == (datetime.date(2024, 2, 29) - datetime.date(1970, 1, 1)).days
    assert raw["after"]["id"] == 42 and raw["op"] == "c"
    # the library's encoder makes the same bytes
    assert avrocheck.encode_single_object(datum, ROW_SCHEMA) == payload
    assert avrocheck.decode_binary(body, ROW_SCHEMA) == datum
    assert avrocheck.decode_binary(body, ROW_SCHEMA, raw=True) == raw

    with pytest.raises(AssertionError, match="marker"):
        avrocheck.decode_single_object(b"\xc3\x02" + payload[2:], ROW_SCHEMA)
    other = ROW_SCHEMA.replace('"publish_message"', '"other_message"')
    with pytest.raises(AssertionError, match="fingerprint"):
        avrocheck.decode_single_object(payload, other)
    with pytest.raises(AssertionError, match="left over"):
        avrocheck.decode_single_object(payload + b"\x00", ROW_SCHEMA)
    with pytest.raises(AssertionError, match="left over"):
        avrocheck.decode_binary(body + b"\x02", ROW_SCHEMA)
    with pytest.raises(AssertionError):
        avrocheck.decode_single_object(b"\xc3\x01\x00", ROW_SCHEMA)


# ---------------------------------------------------------------------------
# Postgres clusters (never preloading creek)

@pytest.fixture(scope="module")
def plain_pg():
    c = PgCluster(creek=False, conf={"creek.nats_url": "nats://127.0.0.1:1"})
    c.start()
    yield c
    c.cleanup()


def test_pg_psql_and_query(plain_pg):
    pg = plain_pg
    assert pg.psql("select 1") == "1"
    assert pg.psql("show wal_level") == "logical"
    assert pg.psql("show shared_preload_libraries") == ""
    assert pg.psql("show listen_addresses") == "127.0.0.1"
    assert pg.psql("show port") == str(pg.port)
    assert pg.psql("show creek.nats_url") == "nats://127.0.0.1:1"
    assert int(pg.psql("show max_replication_slots")) >= 10
    assert pg.query("select 1 where false") == []
    assert pg.query("select ''") == [("",)]
    assert pg.query("select 1, null, 'a|b', E'x\\ny\\tz'") == [("1", None, "a|b", "x\ny\tz")]
    pg.psql("create table infra_t(id int primary key, v text); "
            "insert into infra_t values (1, 'one'), (2, null)")
    assert pg.query("select * from infra_t order by id") == [("1", "one"), ("2", None)]
    with pytest.raises(PsqlError) as ei:
        pg.psql("select no_such_column from infra_t")
    assert "no_such_column" in ei.value.stderr
    assert pg.psql("select nope", check=False) == ""
    db = pg.createdb("infra db.x")
    assert pg.query("select current_database()", db=db) == [("infra db.x",)]
    # logical decoding works (test_decoding ships with postgresql-15)
    pg.psql("select pg_create_logical_replication_slot('infra_slot', 'test_decoding')")
    pg.psql("insert into infra_t values (3, 'three')")
    changes = pg.query("select data from pg_logical_slot_get_changes('infra_slot', null, null)")
    assert any("INSERT" in c[0] and "three" in c[0] for c in changes)
    pg.psql("select pg_drop_replication_slot('infra_slot')")


def test_pg_stop_immediate_and_restart(plain_pg):
    pg = plain_pg
    pg.psql("create table if not exists infra_r(x int); insert into infra_r values (7)")
    off = pg.log_offset()
    pg.stop("immediate")
    assert not pg.running()
    with pytest.raises(PsqlError):
        pg.psql("select 1")
    pg.start()
    assert pg.query("select x from infra_r") == [("7",)]
    pg.wait_log(r"database system was (interrupted|not properly shut down)", since=off,
                timeout=5)
    pg.restart()
    assert pg.psql("select count(*) from infra_r") == "1"
    pg.set_conf(reload=True, work_mem="7MB")
    wait_until(lambda: pg.psql("show work_mem") == "7MB", 10, what="work_mem reloaded")
    assert "ready to accept connections" in pg.log()


def test_wait_until():
    n = []
    assert wait_until(lambda: n.append(1) or len(n) >= 3, timeout=5, interval=0.01) is True
    with pytest.raises(AssertionError, match="the moon"):
        wait_until(lambda: False, timeout=0.2, interval=0.05, what="the moon")
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        wait_until(lambda: 1 / 0, timeout=0.2, interval=0.05, what="division")


# ---------------------------------------------------------------------------
# CLI: servers.py up / down

def test_cli_up_down(tmp_path):
    state = tmp_path / "state.json"
    r = subprocess.run([sys.executable, SERVERS_PY, "up", "--state", str(state), "--no-creek",
                        "--pg-conf", "creek.namespace=INFRA", "--pg-conf", "work_mem=5MB"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    st = json.loads(state.read_text())
    try:
        for k in ("pg_port", "pg_dir", "nats_port", "nats_url", "nats_pid", "store_dir"):
            assert k in st
        # the CLI process is gone; the servers keep running
        q = subprocess.run(["/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-h", "127.0.0.1",
                            "-p", str(st["pg_port"]), "-U", "postgres", "-c",
                            "select current_setting('creek.namespace'), "
                            "current_setting('creek.nats_url'), current_setting('work_mem')"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert q.stdout.decode().strip() == "INFRA|%s|5MB" % st["nats_url"], q.stderr
        with NatsClient(st["nats_url"]) as c:
            assert c.account_info() is not None
    finally:
        d = subprocess.run([sys.executable, SERVERS_PY, "down", "--state", str(state)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert d.returncode == 0, d.stderr.decode()
    assert not port_open(st["pg_port"]) and not port_open(st["nats_port"])
    assert not os.path.exists(st["pg_dir"]) and not os.path.exists(st["store_dir"])


def test_cli_up_fails_cleanly_without_creek_library(tmp_path):
    """With creek preloaded but a library that does not exist, `up` must fail
    and leave nothing running. (Uses a bogus library name so the test does not
    depend on whether creek is installed.)"""
    state = tmp_path / "state.json"
    r = subprocess.run([sys.executable, SERVERS_PY, "up", "--state", str(state),
                        "--pg-conf", "shared_preload_libraries=creek_no_such_lib"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode != 0
    assert "creek_no_such_lib" in r.stderr.decode()
    assert not state.exists()
