"""End-to-end streaming tests: row changes written in Postgres arrive on NATS
JetStream, in commit order, encoded as protocol.md says, with the values
Postgres holds.

Each test creates its own database (make_db) in the session cluster."""

import datetime
import json
import math
import random
import struct
import time

import pytest

import avrocheck

pytestmark = pytest.mark.filterwarnings("ignore:Unknown local-timestamp-micros")
from creek_helpers import (NAMESPACE, assert_msg_ids, lsn_int, read_stream, us_to_naive_dt)
from helpers import wait_until


# ---------------------------------------------------------------------------
# 1. types, ops, metadata

# column, SQL type, how to compare (see check_value), expected pgType
TYPED_COLUMNS = [
    ("id", "int PRIMARY KEY", "int", "integer"),
    ("b", "boolean", "bool", "boolean"),
    ("i2", "int2", "int", "smallint"),
    ("i4", "int4", "int", "integer"),
    ("i8", "int8", "int", "bigint"),
    ("f4", "float4", "float4", "real"),
    ("f8", "float8", "float8", "double precision"),
    ("n", "numeric", "text", "numeric"),
    ("n2", "numeric(12,3)", "text", "numeric(12,3)"),
    ("t", "text", "text", "text"),
    ("vc", "varchar(20)", "text", "character varying(20)"),
    ("bp", "char(5)", "text", "character(5)"),
    ("js", "json", "text", "json"),
    ("jb", "jsonb", "text", "jsonb"),
    ("by", "bytea", "bytea", "bytea"),
    ("d", "date", "date", "date"),
    ("tm", "time", "time", "time without time zone"),
    ("ts", "timestamp", "timestamp", "timestamp without time zone"),
    ("tstz", "timestamptz", "timestamptz", "timestamp with time zone"),
    ("u", "uuid", "uuid", "uuid"),
    ("ai", "int4[]", "json", "integer[]"),
    ("ab8", "int8[]", "json", "bigint[]"),
    ("atx", "text[]", "json", "text[]"),
    ("an", "numeric[]", "json_str", "numeric[]"),
    ("abool", "boolean[]", "json", "boolean[]"),
    ("iv", "interval", "interval", "interval"),
    ("ip", "inet", "text", "inet"),
    ("m", "mood", "text", "mood"),
    ("pt", "point", "text", "point"),
]

TYPED_ROWS = [
    # positive extremes, non-ASCII
    dict(id=1, b="true", i2="32767", i4="2147483647", i8="9223372036854775807",
         f4="1.5e38", f8="1.7976931348623157e308",
         n="12345678901234567890.123456789012345678901234567890", n2="123456789.125",
         t="héllo wörld ✓ 日本語 😀", vc="ñandú", bp="ab", js='{"a": [1, 2.50, "x"],  "b": null}',
         jb='{"b": 2, "a": [1, "ü", 1.50]}', by="\\xdeadbeef00ff", d="2024-02-29",
         tm="23:59:59.999999", ts="2024-02-29 12:34:56.789012",
         tstz="2024-02-29 12:34:56.789012+05:30", u="a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
         ai="{1,NULL,-3,2147483647}", ab8="{-9223372036854775808,NULL,9223372036854775807}",
         atx='{"a",NULL,"","日本","with,comma","NULL"}', an="{1.50,NULL,-0.001}",
         abool="{t,NULL,f}", iv="1 year 2 mons 3 days 04:05:06.789", ip="192.168.0.1/24",
         m="happy", pt="(1.5,-2)"),
    # negative extremes, empty values, times before 1970
    dict(id=2, b="false", i2="-32768", i4="-2147483648", i8="-9223372036854775808",
         f4="-0.1", f8="-2.2250738585072014e-308", n="-0.000000001", n2="-0.5",
         t="", vc="", bp="", js="[]", jb="{}", by="\\x", d="0001-01-01", tm="00:00:00",
         ts="1969-12-31 23:59:59.999999", tstz="1900-01-01 00:00:00+00",
         u="00000000-0000-0000-0000-000000000000", ai="{}", ab8="{}", atx="{NULL}",
         an="{}", abool="{}", iv="-1 days", ip="::1", m="sad", pt="(0,0)"),
    # every column NULL but the key
    dict(id=3),
    # special floats, control characters, quotes
    dict(id=4, f4="NaN", f8="-Infinity", n="NaN", t="line1\nline2\t\"q\" \\ 's\r",
         bp="é", i4="0", i8="0", i2="0", js='"\\u00e9"'),
    dict(id=5, f4="-Infinity", f8="Infinity", n="-Infinity", t=" ", tstz="2262-04-11 23:47:16+00"),
]


def sql_literal(v):
    if v is None:
        return "NULL"
    return "'" + str(v).replace("'", "''") + "'"


def typed_select_list():
    out = []
    for name, _, kind, _ in TYPED_COLUMNS:
        if kind in ("json", "json_str"):
            out.append("array_to_json(%s)::text" % name)
        else:
            out.append(name)
    return ", ".join(out)


def pg_rows(db, table, where="true"):
    """{id: {column: text output or None}} of the typed table."""
    rows = db.query("SELECT %s FROM %s WHERE %s ORDER BY id" % (typed_select_list(), table, where))
    names = [c[0] for c in TYPED_COLUMNS]
    return {int(r[0]): dict(zip(names, r)) for r in rows}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check_value(kind, pg_text, value, where):
    """Asserts that the decoded Avro value equals the value whose Postgres
    text output is pg_text."""
    if pg_text is None:
        assert value is None, "%s: expected null, got %r" % (where, value)
        return
    assert value is not None, "%s: got null, Postgres has %r" % (where, pg_text)
    if kind == "bool":
        assert value is (pg_text == "t"), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "int":
        assert type(value) is int and value == int(pg_text), "%s: %r vs %r" % (where, value, pg_text)
    elif kind in ("float4", "float8"):
        assert isinstance(value, float), "%s: %r is not a float" % (where, value)
        want = float(pg_text)
        if kind == "float4":
            want = f32(want)
        if math.isnan(want):
            assert math.isnan(value), "%s: %r vs %r" % (where, value, pg_text)
        else:
            assert value == want, "%s: %r vs %r (%r)" % (where, value, pg_text, want)
    elif kind == "text":
        assert value == pg_text, "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "interval":
        # record {months, days, micros}: test_types.py checks the values
        assert isinstance(value, dict) and set(value) == {"months", "days", "micros"}, \
            "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "bytea":
        assert pg_text.startswith("\\x")
        assert value == bytes.fromhex(pg_text[2:]), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "date":
        assert value == datetime.date.fromisoformat(pg_text), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "time":
        assert value == datetime.time.fromisoformat(pg_text), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "timestamp":
        # local-timestamp-micros: python3-avro 1.11 does not know it, gives the long
        got = us_to_naive_dt(value) if isinstance(value, int) else value
        assert got == datetime.datetime.fromisoformat(pg_text), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "timestamptz":
        want = datetime.datetime.fromisoformat(pg_text)
        assert isinstance(value, datetime.datetime) and value == want, \
            "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "uuid":
        assert str(value) == pg_text, "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "json":
        assert value == json.loads(pg_text), "%s: %r vs %r" % (where, value, pg_text)
    elif kind == "json_str":  # numeric[]: elements as their text output
        want = json.loads(pg_text, parse_float=str, parse_int=str)
        assert value == want, "%s: %r vs %r" % (where, value, pg_text)
    else:
        raise AssertionError("unknown kind " + kind)


def check_row(record, pg_row, where):
    names = [c[0] for c in TYPED_COLUMNS]
    assert sorted(record) == sorted(names), "%s: columns %r" % (where, sorted(record))
    for name, _, kind, _ in TYPED_COLUMNS:
        check_value(kind, pg_row[name], record[name], "%s column %s" % (where, name))


def run_tx(conn, sql):
    """Runs sql in one transaction on a PgConn; returns (txid, lsn before,
    lsn after, time before, time after)."""
    t0 = datetime.datetime.now(datetime.timezone.utc)
    lsn0 = lsn_int(conn.scalar("SELECT pg_current_wal_insert_lsn()"))
    txid = int(conn.scalar("BEGIN; %s; SELECT txid_current()" % sql))
    conn.query("COMMIT")
    lsn1 = lsn_int(conn.scalar("SELECT pg_current_wal_insert_lsn()"))
    t1 = datetime.datetime.now(datetime.timezone.utc)
    return txid, lsn0, lsn1, t0, t1


def test_types_and_ops_in_commit_order(make_db):
    db = make_db("s_types")
    db.sql("CREATE TYPE mood AS ENUM ('happy', 'sad')")
    db.sql("CREATE TABLE typed (%s)" % ", ".join("%s %s" % (c[0], c[1]) for c in TYPED_COLUMNS))
    db.add_table("typed")
    wal_subject = db.wal_subject("public", "typed")
    schema_subject = db.schema_subject("public", "typed")
    assert wal_subject == "CREEK.%s.wal.public.typed" % db.name

    live = db.client.subscribe("%s.%s.>" % (NAMESPACE, db.token))
    names = [c[0] for c in TYPED_COLUMNS]
    values = []
    for r in TYPED_ROWS:
        values.append("(%s)" % ", ".join(sql_literal(r.get(n)) for n in names))
    txs = []
    with db.connect() as conn:
        txs.append(run_tx(conn, "INSERT INTO typed (%s) VALUES %s" % (", ".join(names), ", ".join(values))))
        after_insert = pg_rows(db, "typed")
        txs.append(run_tx(conn, "UPDATE typed SET t = 'ñ', i4 = NULL, ai = '{NULL}', "
                                "jb = 'null', by = NULL, f8 = -0.0 WHERE id = 1; "
                                "UPDATE typed SET id = 20, t = 'moved' WHERE id = 2"))
        after_update = pg_rows(db, "typed", "id IN (1, 20)")
        txs.append(run_tx(conn, "DELETE FROM typed WHERE id = 3"))
        txs.append(run_tx(conn, "TRUNCATE typed"))

    n_rows = len(TYPED_ROWS)
    expected = ([("c", i, None, r["id"]) for i, r in enumerate(TYPED_ROWS)]
                + [("u", 0, 1, 1), ("u_pk", 1, 2, 20)] + [("d", 0, 3, None)] + [("t", 0, None, None)])
    tx_of = [0] * n_rows + [1, 1, 2, 3]
    db.wait_wal_count(len(expected))
    rows = db.rows()
    assert len(rows) == len(expected)

    # the schema is announced (core NATS order) before the first row change
    live_msgs = db.client.drain_msgs(live, 1.0)
    subjects = [m.subject for m in live_msgs]
    assert schema_subject in subjects and wal_subject in subjects, subjects
    assert subjects.index(schema_subject) < subjects.index(wal_subject), subjects

    # schema stream: one message, JSON; fingerprint consistent everywhere
    schema_msgs = db.schema_messages()
    assert [m.subject for m in schema_msgs] == [schema_subject]
    doc = json.loads(schema_msgs[0].data.decode("utf-8"))
    assert set(doc) >= {"fingerprint", "schema", "source", "created_at"}
    assert doc["source"] == "public.typed"
    datetime.datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00"))
    assert doc["fingerprint"] == avrocheck.b64url(avrocheck.fingerprint(doc["schema"]))
    served = db.lookup_schema(doc["fingerprint"])
    assert served is not None, "the schema service did not answer for " + doc["fingerprint"]
    assert served["fingerprint"] == doc["fingerprint"] and served["schema"] == doc["schema"]
    assert db.lookup_schema("AAAAAAAAAAA=", timeout=1) is None  # unknown: no reply

    schema = json.loads(doc["schema"])
    assert schema["name"] == "publish_message"
    assert [f["name"] for f in schema["fields"][:6]] == [
        "fingerprint", "source", "op", "sent_at", "before", "after"]
    row_rec = schema["fields"][5]["type"][1]
    key_rec = schema["fields"][4]["type"][1]
    assert [f["name"] for f in row_rec["fields"]] == names
    assert [f["name"] for f in key_rec["fields"]] == ["id"]
    for f, (name, _, _, pg_type) in zip(row_rec["fields"], TYPED_COLUMNS):
        # the type name, with or without its modifier ("numeric(12,3)")
        assert f["pgType"] in (pg_type, pg_type.split("(")[0]), f
        assert f["pgKey"] is (name == "id"), f

    assert_msg_ids(rows)
    for r, (op, index, before_id, after_id), txi in zip(rows, expected, tx_of):
        where = repr(r)
        txid, lsn0, lsn1, t0, t1 = txs[txi]
        assert r.subject == wal_subject, where
        assert r.op == op, where
        assert r.index == index, where
        assert r.body["fingerprint"] == doc["fingerprint"], where
        assert avrocheck.b64url(r.raw.data[2:10]) == r.body["fingerprint"], where
        src = r.source
        assert (src["name"], src["db"], src["schema"], src["table"]) == (
            "creek", db.name, "public", "typed"), where
        assert src["tx_id"] == txid, "%s: tx_id %d, txid_current() said %d" % (where, src["tx_id"], txid)
        assert lsn0 < r.commit_lsn < lsn1, where
        assert lsn0 <= lsn_int(src["lsn"]) < r.commit_lsn, where
        slack = datetime.timedelta(seconds=1)
        assert t0 - slack <= src["tx_at"] <= t1 + slack, (where, src["tx_at"], t0, t1)
        assert src["tx_at"] <= r.body["sent_at"] <= datetime.datetime.now(datetime.timezone.utc) + slack
        if op == "c":
            assert r.before is None, where
            check_row(r.after, after_insert[after_id], where)
        elif op in ("u", "u_pk"):
            assert r.before == {"id": before_id}, where
            check_row(r.after, after_update[after_id], where)
        elif op == "d":
            assert r.before == {"id": before_id} and r.after is None, where
        else:
            assert r.before is None and r.after is None, where
    # one transaction per commit LSN, in the order they were committed
    commits = [rows[i].commit_lsn for i in (0, n_rows, n_rows + 2, n_rows + 3)]
    assert commits == sorted(set(commits))


# ---------------------------------------------------------------------------
# 2. interleaved transactions on several tables

def test_interleaved_transactions_keep_commit_order(make_db):
    db = make_db("s_interleave")
    db.sql("CREATE SEQUENCE gseq; "
           "CREATE TABLE ta (id bigint PRIMARY KEY, who text); "
           "CREATE TABLE tb (id bigint PRIMARY KEY, who text, extra int)")
    db.add_table("ta")
    db.add_table("tb")
    rnd = random.Random(1234)
    sessions = [db.connect(), db.connect()]
    open_tx = [None, None]      # per session: {"txid", "rows": [(table, id)]}
    committed = []              # transactions in the order COMMIT returned
    ntx = 0
    try:
        while ntx < 40 or any(open_tx):
            s = rnd.randrange(2)
            conn = sessions[s]
            if open_tx[s] is None:
                if ntx >= 40:
                    s = 1 - s
                    conn = sessions[s]
                else:
                    txid = int(conn.scalar("BEGIN; SELECT txid_current()"))
                    open_tx[s] = {"txid": txid, "rows": []}
                    ntx += 1
            tx = open_tx[s]
            if tx is None:
                continue
            action = rnd.random()
            if action < 0.7 or not tx["rows"]:
                table = rnd.choice(["ta", "tb"])
                cols = "id, who" if table == "ta" else "id, who, extra"
                vals = "nextval('gseq'), 's%d'" % s + ("" if table == "ta" else ", %d" % len(tx["rows"]))
                new_id = int(conn.scalar("INSERT INTO %s (%s) VALUES (%s) RETURNING id" % (table, cols, vals)))
                tx["rows"].append((table, new_id))
            else:
                conn.query("COMMIT")
                committed.append(tx)
                open_tx[s] = None
    finally:
        for c in sessions:
            c.close()

    expected = [(tx["txid"], table, i) for tx in committed for table, i in tx["rows"]]
    db.wait_wal_count(len(expected))
    rows = db.rows()
    assert_msg_ids(rows)
    got = [(r.source["tx_id"], r.source["table"], r.after["id"]) for r in rows]
    assert got == expected, "global commit order differs"
    for table in ("ta", "tb"):
        subj = db.wal_subject("public", table)
        assert [g for g, r in zip(got, rows) if r.subject == subj] == \
            [e for e in expected if e[1] == table]
        assert all(r.subject == db.wal_subject("public", r.source["table"]) for r in rows)
    # every transaction has its own commit LSN, increasing in commit order
    commit_lsns = []
    for r in rows:
        if not commit_lsns or commit_lsns[-1][0] != r.source["tx_id"]:
            commit_lsns.append((r.source["tx_id"], r.commit_lsn))
    assert [c[0] for c in commit_lsns] == [tx["txid"] for tx in committed if tx["rows"]]
    assert [c[1] for c in commit_lsns] == sorted(set(c[1] for c in commit_lsns))
    # the per-table streams by subject filter give the same order (JetStream view)
    ta_only = read_stream(db.client, db.wal_stream, filter_subject=db.wal_subject("public", "ta"))
    assert [db.decode(m).after["id"] for m in ta_only] == [e[2] for e in expected if e[1] == "ta"]


def test_ordered_publish_names_the_message_before(make_db):
    """Row changes sent while the one before them is unanswered carry
    Nats-Expected-Last-Msg-Id naming it (the wal stream's order is kept
    whatever fails); creek.ordered_publish = off leaves the header out."""
    db = make_db("s_ordered")
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    db.sql("INSERT INTO t SELECT g FROM generate_series(1, 3000) g")
    db.wait_wal_count(3000)
    msgs = read_stream(db.client, db.wal_stream)
    named = [(prev.msg_id, m.headers.get("Nats-Expected-Last-Msg-Id"))
             for prev, m in zip(msgs, msgs[1:]) if "Nats-Expected-Last-Msg-Id" in m.headers]
    # pipelined: most messages name their predecessor, and always the right one
    assert len(named) > 1000, len(named)
    assert all(prev == want for prev, want in named), [x for x in named if x[0] != x[1]][:3]
    assert "Nats-Expected-Last-Msg-Id" not in msgs[0].headers
    pid = db.stat()["pid"]
    db.pg.psql("ALTER SYSTEM SET creek.ordered_publish = off; SELECT pg_reload_conf()")
    try:
        wait_until(lambda: db.stat()["pid"] not in (pid, None) and db.stat()["state"] == "streaming",
                   30, 0.2, "the worker restarted with the new setting")
        db.sql("INSERT INTO t SELECT g FROM generate_series(3001, 6000) g")
        db.wait_wal_count(6000)
        later = read_stream(db.client, db.wal_stream, start_seq=3001)
        assert [db.decode(m).after["id"] for m in later] == list(range(3001, 6001))
        assert not any("Nats-Expected-Last-Msg-Id" in m.headers for m in later)
    finally:
        db.pg.psql("ALTER SYSTEM RESET creek.ordered_publish; SELECT pg_reload_conf()")


def test_batch_delay_applies_at_reload(make_db):
    """creek.batch_delay: a commit wakes the worker, which waits that long and
    publishes everything committed meanwhile at once. Changing it takes effect
    at reload without a worker restart, and nothing is lost either way."""
    db = make_db("s_batch")
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    pid = db.stat()["pid"]

    def lags(first_id, n):
        # n commits, each alone: seconds from COMMIT to creek encoding it
        for i in range(first_id, first_id + n):
            db.sql("INSERT INTO t VALUES (%d)" % i)
            time.sleep(0.6)
        db.wait_wal_count(first_id + n - 1)
        rows = db.rows()[first_id - 1:]
        assert [r.after["id"] for r in rows] == list(range(first_id, first_id + n))
        return [(r.body["sent_at"] - r.source["tx_at"]).total_seconds() for r in rows]

    try:
        db.pg.psql("ALTER SYSTEM SET creek.batch_delay = '400ms'; SELECT pg_reload_conf()")
        wait_until(lambda: db.scalar("SELECT setting FROM pg_settings WHERE name = 'creek.batch_delay'") == "400",
                   10, 0.1, "the reload")
        time.sleep(1)   # the worker has read the reloaded file too
        slow = lags(1, 5)
        # (a commit right as the worker wakes for something else is sent at once)
        assert sum(1 for x in slow if x >= 0.3) >= 4, slow
        db.pg.psql("ALTER SYSTEM SET creek.batch_delay = 0; SELECT pg_reload_conf()")
        time.sleep(1.5)
        fast = lags(6, 5)
        assert sum(1 for x in fast if x < 0.3) >= 4, fast
        # a burst of commits within one delay is published, in order, as usual
        db.pg.psql("ALTER SYSTEM RESET creek.batch_delay; SELECT pg_reload_conf()")
        time.sleep(1)
        db.sql("DO $$ BEGIN FOR i IN 11..210 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$")
        db.wait_wal_count(210)
        assert [r.after["id"] for r in db.rows()] == list(range(1, 211))
        assert db.stat()["pid"] == pid, "a batch_delay change must not restart the worker"
    finally:
        db.pg.psql("ALTER SYSTEM RESET creek.batch_delay; SELECT pg_reload_conf()")


def test_reload_while_a_large_transaction_is_published(make_db):
    """A configuration reload that arrives while the worker publishes a large
    transaction waits for its end: no restart, so nothing of it is published
    twice (a restart would send it again from its first change, and JetStream
    drops duplicates only within its window)."""
    db = make_db("s_reload_big")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.add_table("t")
    pid = db.stat()["pid"]
    log0 = len(db.pg.log())
    n = 300000
    db.sql("INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, %d) i" % n)
    # the commit is published now, from the worker's spool: reload meanwhile
    wait_until(lambda: int(db.stat()["messages_published"]) > 1000, 30, 0.01, "publishing to start")
    db.pg.psql("SELECT pg_reload_conf()")
    assert int(db.stat()["messages_published"]) < n, "the transaction was published before the reload"
    db.wait_caught_up(120)
    assert db.stat()["pid"] == pid, "a reload during a large transaction must not restart the worker"
    assert db.wal_count() == n
    assert not [l for l in db.pg.log()[log0:].splitlines() if "to apply a configuration reload" in l]


# ---------------------------------------------------------------------------
# 3. membership and subject escaping

def test_membership_and_escaped_subjects(make_db):
    db = make_db("s_members")
    db.sql('CREATE TABLE pub (id int PRIMARY KEY, v text); '
           'CREATE TABLE notpub (id int PRIMARY KEY, v text); '
           'CREATE SCHEMA "sch ema"; '
           'CREATE TABLE "sch ema"."My.Table" (id int PRIMARY KEY, "weird col" text, "0lead" int); '
           'CREATE TABLE "café" (id int PRIMARY KEY)')
    db.add_table("pub")
    db.add_table('"sch ema"."My.Table"')
    db.add_table('"café"')

    db.sql("INSERT INTO notpub VALUES (1, 'never')")
    db.sql("BEGIN; INSERT INTO notpub VALUES (2, 'never'); INSERT INTO pub VALUES (1, 'one'); COMMIT")
    db.sql('INSERT INTO "sch ema"."My.Table" VALUES (1, \'w\', 7)')
    db.sql('INSERT INTO "café" VALUES (1)')
    db.remove_table("pub")
    db.sql("INSERT INTO pub VALUES (2, 'while removed'); UPDATE pub SET v = 'x' WHERE id = 1")
    db.add_table("pub")
    db.sql("INSERT INTO pub VALUES (3, 'after re-adding'); INSERT INTO notpub VALUES (3, 'never')")
    db.sql("BEGIN; INSERT INTO notpub VALUES (4, 'never'); TRUNCATE notpub, pub; COMMIT")
    db.sql("ALTER TABLE pub RENAME TO pub2; INSERT INTO pub2 VALUES (5, 'renamed')")

    db.wait_wal_count(6)
    rows = db.rows()
    assert_msg_ids(rows)
    # TRUNCATE of a published and an unpublished table: one message, index 0
    assert (rows[4].subject, rows[4].op, rows[4].index) == (db.wal_subject("public", "pub"), "t", 0)
    # a renamed table is published under its new name
    assert (rows[5].subject, rows[5].source["table"], rows[5].after) == (
        db.wal_subject("public", "pub2"), "pub2", {"id": 5, "v": "renamed"})
    rows = rows[:4]
    got = [(r.subject, r.op, r.after) for r in rows]
    esc = "CREEK.%s.wal.sch%%20ema.My%%2ETable" % db.name
    assert esc == db.wal_subject("sch ema", "My.Table")
    assert got == [
        (db.wal_subject("public", "pub"), "c", {"id": 1, "v": "one"}),
        (esc, "c", {"id": 1, "weird_col": "w", "_0lead": 7}),
        ("CREEK.%s.wal.public.caf%%C3%%A9" % db.name, "c", {"id": 1}),
        (db.wal_subject("public", "pub"), "c", {"id": 3, "v": "after re-adding"}),
    ]
    # the pub change after a notpub change in the same transaction is index 0
    assert rows[0].index == 0
    assert (rows[1].source["schema"], rows[1].source["table"]) == ("sch ema", "My.Table")
    assert rows[2].source["table"] == "café"
    # the schemas are on the escaped subjects too, and name the Postgres columns
    by_subject = {m.subject: json.loads(m.data) for m in db.schema_messages()}
    esc_schema = "CREEK.%s.schema.sch%%20ema.My%%2ETable" % db.name
    assert esc_schema in by_subject, sorted(by_subject)
    assert by_subject[esc_schema]["source"] == "sch ema.My.Table"
    fields = json.loads(by_subject[esc_schema]["schema"])["fields"][5]["type"][1]["fields"]
    assert [(f["name"], f.get("pgName")) for f in fields] == [
        ("id", None), ("weird_col", "weird col"), ("_0lead", "0lead")]
    # no stream subject of notpub ever
    assert not [r for r in rows if r.source["table"] == "notpub"]


# ---------------------------------------------------------------------------
# 4. unchanged TOASTed values

def test_unchanged_toast_and_replica_identity_full(make_db):
    db = make_db("s_toast")
    db.sql("CREATE TABLE toasty (id int PRIMARY KEY, small text, big text); "
           "CREATE TABLE toasty_full (id int PRIMARY KEY, small text, big text); "
           "ALTER TABLE toasty_full REPLICA IDENTITY FULL")
    db.add_table("toasty")
    db.add_table("toasty_full")
    big_sql = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 3200) g)"
    for t in ("toasty", "toasty_full"):
        db.sql("INSERT INTO %s VALUES (1, 'a', %s)" % (t, big_sql))
        db.sql("UPDATE %s SET small = 'b' WHERE id = 1" % t)          # big not carried
        db.sql("UPDATE %s SET big = NULL, small = 'c' WHERE id = 1" % t)  # a real NULL
        db.sql("INSERT INTO %s VALUES (2, 'd', %s)" % (t, big_sql))
        db.sql("UPDATE %s SET id = 3 WHERE id = 2" % t)               # key changed, big kept
        db.sql("DELETE FROM %s WHERE id = 3" % t)
    assert db.scalar("SELECT big FROM toasty WHERE id = 1") is None
    # the values inserted are gone now; read them back from the insert messages
    db.wait_wal_count(12)
    rows = db.rows()
    assert_msg_ids(rows)
    plain = [r for r in rows if r.source["table"] == "toasty"]
    full = [r for r in rows if r.source["table"] == "toasty_full"]
    assert [r.op for r in plain] == ["c", "u", "u", "c", "u_pk", "d"]
    assert [r.op for r in full] == ["c", "u", "u", "c", "u_pk", "d"]

    for rs in (plain, full):
        for ins in (rs[0].after, rs[3].after):
            assert isinstance(ins["big"], str) and len(ins["big"]) == 3200 * 32
    # the values really were TOASTed out of line: check the sizes on disk
    for t in ("toasty", "toasty_full"):
        assert int(db.scalar("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                             "WHERE relname = '%s'" % t)) > 0

    # plain (replica identity default): key only, big unchanged -> {}
    u1 = plain[1]
    assert u1.before == {"id": 1}
    assert u1.after == {"id": 1, "small": "b", "big": {}}, u1
    u2 = plain[2]
    assert u2.after == {"id": 1, "small": "c", "big": None}
    # key changed: before is the old key, the untouched big value is not carried
    assert plain[4].before == {"id": 2}
    assert plain[4].after == {"id": 3, "small": "d", "big": {}}, plain[4]
    assert plain[5].before == {"id": 3} and plain[5].after is None

    # full: the before image carries the whole old row, big included
    inserted = full[0].after["big"]
    f1 = full[1]
    assert f1.before == {"id": 1, "small": "a", "big": inserted}, repr(f1)[:300]
    assert f1.after["small"] == "b" and f1.after["big"] == {}, repr(f1)[:300]
    f2 = full[2]
    assert f2.before == {"id": 1, "small": "b", "big": inserted}
    assert f2.after == {"id": 1, "small": "c", "big": None}
    inserted2 = full[3].after["big"]
    assert full[4].before == {"id": 2, "small": "d", "big": inserted2}, repr(full[4])[:300]
    assert full[4].after == {"id": 3, "small": "d", "big": {}}, repr(full[4])[:300]
    # a delete's before image (FULL) carries the TOASTed value in full
    assert full[5].before == {"id": 3, "small": "d", "big": inserted2}, repr(full[5])[:300]
    assert full[5].after is None
    # the schema (FULL): before is the row record, after refers to it; the
    # toastable columns are unions of null, their type and "unchanged"
    sch = json.loads(f1.schema_json)
    before_rec = sch["fields"][4]["type"][1]
    assert before_rec["name"] == "row" and sch["fields"][5]["type"] == ["null", "row"]
    big_field = [f for f in before_rec["fields"] if f["name"] == "big"][0]
    assert big_field["type"][:2] == ["null", "string"]
    assert big_field["type"][2] in ({"type": "record", "name": "unchanged", "fields": []},
                                    "unchanged")


# ---------------------------------------------------------------------------
# 5. one large transaction

SMALL_WORK_MEM = ("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = "
                  "''64kB''', current_database()); END $$")


def slot_stream_stats(db):
    """pg_stat_replication_slots' (stream_txns, stream_bytes, spill_txns, spill_bytes) of db's slot."""
    rows = db.pg.query("SELECT stream_txns, stream_bytes, spill_txns, spill_bytes FROM pg_stat_replication_slots "
                       "WHERE slot_name = '%s'" % db.slot_name)
    return tuple(int(v) for v in rows[0]) if rows else None


def test_large_transaction(make_db):
    n = 100_000
    # a small logical_decoding_work_mem for the worker (it takes the
    # database's settings): Postgres streams the transaction to creek before
    # it commits, creek spools it (src/spool.cpp) and publishes it at commit
    db = make_db("s_large", before_extension=SMALL_WORK_MEM)
    db.sql("CREATE TABLE big (id int PRIMARY KEY, v text)")
    db.add_table("big")
    db.sql("INSERT INTO big VALUES (0, 'before')")
    spooled = ("SELECT spooled_transactions, spooled_bytes FROM creek.pg_stat_creek "
               "WHERE datname = current_database()")
    with db.connect() as conn:
        txid = int(conn.scalar("BEGIN; INSERT INTO big SELECT g, 'row ' || g "
                               "FROM generate_series(1, %d) g; SELECT txid_current()" % n))
        # before the commit: spooled by the worker, nothing published
        sp = wait_until(lambda: (lambda r: r if r and r[0][0] == "1" and int(r[0][1]) > 1000000 else None)(
            db.query(spooled)), 30, 0.1, "the open transaction spooled")
        print("spooled before the commit: %r" % (sp,))
        assert db.wal_count() == 1
        conn.query("COMMIT")
        end = lsn_int(conn.scalar("SELECT pg_current_wal_lsn()"))
    db.sql("INSERT INTO big VALUES (%d, 'after')" % (n + 1))
    t0 = time.monotonic()
    db.wait_wal_count(n + 2, timeout=120)
    publish_s = time.monotonic() - t0
    msgs = read_stream(db.client, db.wal_stream)
    assert len(msgs) == n + 2
    ids = [m.msg_id for m in msgs]
    assert len(set(ids)) == len(ids), "duplicate Nats-Msg-Id"
    rows = [db.decode(m) for m in msgs]
    assert [r.after["id"] for r in rows] == list(range(n + 2)), "rows out of order or missing"
    big_tx = rows[1:-1]
    commit = big_tx[0].source["last_lsn"]
    assert all(r.source["tx_id"] == txid and r.source["last_lsn"] == commit for r in big_tx)
    assert [r.msg_id for r in big_tx] == ["%s/%d" % (commit, i) for i in range(n)]
    assert all(r.after["v"] == "row %d" % r.after["id"] for r in big_tx)
    lsns = [lsn_int(r.source["lsn"]) for r in big_tx]
    assert lsns == sorted(lsns) and len(set(lsns)) == n
    assert rows[0].commit_lsn < big_tx[0].commit_lsn < rows[-1].commit_lsn
    tx_at = {r.source["tx_at"] for r in big_tx}
    assert len(tx_at) == 1
    assert rows[0].source["tx_at"] <= min(tx_at) <= rows[-1].source["tx_at"]
    # the slot is confirmed past the transaction's end
    wait_until(lambda: lsn_int(db.slot()[3]) >= end, 30, 0.2,
               "confirmed_flush_lsn past %X/%X (slot %r)" % (end >> 32, end & 0xFFFFFFFF, db.slot()))
    st = db.stat()
    assert lsn_int(st["confirmed_lsn"]) >= end
    wait_until(lambda: db.query(spooled) == [("0", "0")], 10, 0.1, "the spool gone after the commit")
    # and the transaction was streamed to creek before its commit, not spilled
    stats = wait_until(lambda: (lambda s: s if s and s[0] > 0 else None)(slot_stream_stats(db)), 10, 0.2,
                       "stream statistics")
    print("large transaction: stream_txns, stream_bytes, spill_txns, spill_bytes = %r" % (stats,))
    assert stats[3] == 0, "the reorder buffer spilled %d bytes" % stats[3]
    assert int(st["messages_published"]) >= n + 2
    print("large transaction: %d rows published in %.1fs after commit" % (n, publish_s))


def test_streamed_transaction_savepoints_ddl_and_aborts(make_db):
    """A transaction streamed in many blocks before its commit: its
    subtransactions rolled back after they were streamed, released ones, a
    column added half way, updates of the key, deletes and a TRUNCATE, with
    other transactions committing meanwhile and a streamed transaction
    rolled back whole. What arrives is what a transaction decoded at its
    commit gives: the committed changes, in order, numbered from 0."""
    db = make_db("s_streamed", before_extension=SMALL_WORK_MEM)
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY)")
    db.add_table("t")
    db.add_table("u")
    fill = "INSERT INTO t SELECT g, repeat('x', 40) || g FROM generate_series(%d, %d) g"
    expected = []   # (table, op, id)
    with db.connect() as big, db.connect() as other, db.connect() as doomed:
        big.query("BEGIN")
        big.query(fill % (1, 3000))
        expected += [("t", "c", i) for i in range(1, 3001)]
        other.query("INSERT INTO u VALUES (1)")             # commits first
        small = [("u", "c", 1)]
        big.query("SAVEPOINT a")
        big.query(fill % (10001, 13000))
        big.query("SAVEPOINT a2")
        big.query(fill % (14001, 15000))
        big.query("ROLLBACK TO a")                          # both rolled back, after being streamed
        doomed.query("BEGIN")
        doomed.query(fill % (50001, 56000))                 # streamed, then rolled back whole
        big.query("SAVEPOINT b")
        big.query(fill % (20001, 22000))
        big.query("RELEASE b")
        expected += [("t", "c", i) for i in range(20001, 22001)]
        doomed.query("ROLLBACK")
        big.query("UPDATE t SET id = id + 100000 WHERE id <= 5")
        expected += [("t", "u_pk", i + 100000) for i in range(1, 6)]
        big.query("ALTER TABLE t ADD COLUMN w int DEFAULT 7")
        big.query("INSERT INTO t SELECT g, 'w', g FROM generate_series(30001, 32000) g")
        expected += [("t", "c", i) for i in range(30001, 32001)]
        big.query("DELETE FROM t WHERE id BETWEEN 20001 AND 20010")
        expected += [("t", "d", i) for i in range(20001, 20011)]
        big.query("SAVEPOINT c")
        big.query("TRUNCATE t")
        big.query("ROLLBACK TO c")
        big.query("TRUNCATE t")
        expected += [("t", "t", None)]
        big.query("INSERT INTO t VALUES (99999, 'last', 1)")
        expected += [("t", "c", 99999)]
        big.query("COMMIT")
    db.sql("INSERT INTO u VALUES (2)")
    expected = small + expected + [("u", "c", 2)]
    db.wait_wal_count(len(expected), timeout=120)
    rows = db.rows()
    got = [(r.source["table"], r.op, (r.after or r.before or {}).get("id")) for r in rows]
    assert len(got) == len(expected)
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not diff, "first difference: %r" % (diff[0],)
    assert_msg_ids(rows)
    big_rows = rows[1:-1]
    assert len({r.source["tx_id"] for r in big_rows}) == 1
    # the column added half way: in the messages after it, with its value
    assert all(r.after["w"] == r.after["id"] for r in big_rows if r.op == "c" and 30001 <= r.after["id"] <= 32000)
    assert all("w" not in r.after for r in big_rows if r.op == "c" and r.after["id"] < 30001)
    assert big_rows[-1].after == {"id": 99999, "v": "last", "w": 1}
    stats = wait_until(lambda: (lambda s: s if s and s[0] >= 2 else None)(slot_stream_stats(db)), 10, 0.2,
                       "stream statistics (both large transactions streamed)")
    print("stream_txns, stream_bytes, spill_txns, spill_bytes = %r" % (stats,))


def test_streamed_transaction_with_toasted_values(make_db):
    """TOASTed values (inserted, updated, left unchanged) in a transaction
    streamed before its commit arrive whole, or as "unchanged"."""
    db = make_db("s_streamtoast", before_extension=SMALL_WORK_MEM)
    db.sql("CREATE TABLE d (id int PRIMARY KEY, n int, body text)")
    db.sql("ALTER TABLE d ALTER COLUMN body SET STORAGE EXTERNAL")   # out of line, uncompressed
    db.add_table("d")
    body = "(SELECT string_agg(md5('a' || %s || '-' || g), '') FROM generate_series(1, 300) g)"   # 9.6 kB
    with db.connect() as conn:
        conn.query("BEGIN")
        for i in range(1, 201):
            conn.query("INSERT INTO d VALUES (%d, 0, %s)" % (i, body % i))
        conn.query("UPDATE d SET n = 1 WHERE id <= 100")                     # body unchanged
        conn.query("UPDATE d SET body = body || 'x' WHERE id > 190")          # body rewritten
        conn.query("COMMIT")
        first = {int(r[0]): r[1] for r in conn.query(
            "SELECT i, %s FROM generate_series(1, 200) i" % (body % "i"))}
    n = 200 + 100 + 10
    db.wait_wal_count(n, timeout=60)
    rows = db.rows()
    assert len(rows) == n
    assert_msg_ids(rows)
    inserts, upd1, upd2 = rows[:200], rows[200:300], rows[300:]
    assert [r.after["id"] for r in inserts] == list(range(1, 201))
    assert all(r.op == "c" and r.after["body"] == first[r.after["id"]] for r in inserts)
    assert len(first[1]) == 9600
    assert all(r.op == "u" and r.after["n"] == 1 and r.after["body"] == {} for r in upd1), upd1[0].after
    assert [r.after["id"] for r in upd2] == list(range(191, 201))
    assert all(r.after["body"] == first[r.after["id"]] + "x" for r in upd2)
    stats = slot_stream_stats(db)
    print("stream_txns, stream_bytes, spill_txns, spill_bytes = %r" % (stats,))
    assert stats[0] >= 1


def test_worker_killed_while_publishing_a_streamed_transaction(make_db):
    """The worker killed half way through publishing a streamed transaction:
    the new worker decodes (and streams) it again, and every message is on
    the stream once (same ids, JetStream drops the duplicates)."""
    n = 60_000
    db = make_db("s_streamkill", before_extension=SMALL_WORK_MEM)
    db.sql("CREATE TABLE k (id int PRIMARY KEY, v text)")
    db.add_table("k")
    old = db.stat()
    db.sql("INSERT INTO k SELECT g, 'row ' || g FROM generate_series(1, %d) g" % n)
    wait_until(lambda: db.wal_count() >= 2000, 60, 0.01, "the transaction partly published")
    at_kill = db.wal_count()
    assert db.scalar("SELECT pg_terminate_backend(pid) FROM creek.pg_stat_creek "
                     "WHERE datname = current_database()") == "t"
    wait_until(lambda: (lambda s: s if s and s["pid"] not in (None, "0", old["pid"]) and
                        s["state"] == "streaming" else None)(db.stat()), 30, 0.1, "a new creek worker")
    db.sql("INSERT INTO k VALUES (%d, 'after')" % (n + 1))
    db.wait_wal_count(n + 1, timeout=120)
    print("messages on the stream when the worker was killed: %d of %d" % (at_kill, n))
    rows = db.rows()
    assert [r.after["id"] for r in rows] == list(range(1, n + 2))
    assert_msg_ids(rows)


# ---------------------------------------------------------------------------
# more: schema changes, savepoints and rollbacks

def test_schema_changes_savepoints_and_rollbacks(make_db):
    db = make_db("s_evolve")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
    db.add_table("t")
    live = db.client.subscribe("%s.%s.>" % (NAMESPACE, db.token))
    db.sql("INSERT INTO t VALUES (1, 'a')")
    db.sql("BEGIN; INSERT INTO t VALUES (2, 'b'); ALTER TABLE t ADD COLUMN w int DEFAULT 5; "
           "INSERT INTO t VALUES (3, 'c', 7); COMMIT")
    db.sql("ALTER TABLE t DROP COLUMN v; INSERT INTO t VALUES (4, 8); "
           "ALTER TABLE t ALTER COLUMN w TYPE bigint; INSERT INTO t VALUES (5, 9); "
           "UPDATE t SET w = w + 1 WHERE id = 1")
    db.sql("BEGIN; INSERT INTO t VALUES (10); SAVEPOINT a; INSERT INTO t VALUES (11); "
           "ROLLBACK TO a; INSERT INTO t VALUES (12); SAVEPOINT b; INSERT INTO t VALUES (13); "
           "RELEASE b; UPDATE t SET w = 0 WHERE id = 12; COMMIT")
    db.sql("BEGIN; INSERT INTO t VALUES (20); ROLLBACK")
    db.sql("INSERT INTO t VALUES (21)")

    expected = [
        ("c", {"id": 1, "v": "a"}),
        ("c", {"id": 2, "v": "b"}),
        ("c", {"id": 3, "v": "c", "w": 7}),
        ("c", {"id": 4, "w": 8}),
        ("c", {"id": 5, "w": 9}),
        ("u", {"id": 1, "w": 6}),
        ("c", {"id": 10, "w": 5}),
        ("c", {"id": 12, "w": 5}),
        ("c", {"id": 13, "w": 5}),
        ("u", {"id": 12, "w": 0}),
        ("c", {"id": 21, "w": 5}),
    ]
    db.wait_wal_count(len(expected))
    rows = db.rows()
    assert_msg_ids(rows)
    assert [(r.op, r.after) for r in rows] == expected
    # one transaction for 10, 12, 13 and the update, the top-level xid
    assert len({r.source["tx_id"] for r in rows[6:10]}) == 1
    assert [r.index for r in rows[6:10]] == [0, 1, 2, 3]
    # four schemas: v; v,w int; w int; w bigint; each announced before its first use
    fps = []
    for r in rows:
        if not fps or fps[-1] != r.body["fingerprint"]:
            fps.append(r.body["fingerprint"])
    assert len(fps) == 4 and len(set(fps)) == 4, fps
    schema_msgs = db.schema_messages()
    docs = [json.loads(m.data) for m in schema_msgs]
    assert [d["fingerprint"] for d in docs] == fps
    w_types = []
    for d in docs:
        fields = {f["name"]: f for f in json.loads(d["schema"])["fields"][5]["type"][1]["fields"]}
        w_types.append((sorted(fields), fields["w"]["type"][1] if "w" in fields else None,
                        fields["w"]["pgType"] if "w" in fields else None))
    assert w_types == [(["id", "v"], None, None), (["id", "v", "w"], "int", "integer"),
                       (["id", "w"], "int", "integer"), (["id", "w"], "long", "bigint")]
    live_msgs = db.client.drain_msgs(live, 1.0)
    first_use = {}
    for i, m in enumerate(live_msgs):
        if m.subject.startswith("%s.%s.wal." % (NAMESPACE, db.token)):
            fp = avrocheck.b64url(m.data[2:10])
            first_use.setdefault(fp, i)
    announced = {}
    for i, m in enumerate(live_msgs):
        if ".schema." in m.subject:
            announced.setdefault(json.loads(m.data)["fingerprint"], i)
    for fp in fps:
        assert announced[fp] < first_use[fp], (fp, announced, first_use)
        served = db.lookup_schema(fp)
        assert served is not None and served["fingerprint"] == fp
    # every schema is kept in creek.schemas
    stored = {r[0] for r in db.query("SELECT fingerprint FROM creek.schemas WHERE source = 'public.t'")}
    assert stored == set(fps)


# ---------------------------------------------------------------------------
# more: a database whose name needs escaping

ODD_DB = "Odd.Db name"


def test_escaped_database_name(make_db):
    db = make_db(ODD_DB)
    assert db.token.startswith("Odd%2EDb%20name_")
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1)")
    db.wait_wal_count(1)
    names = set(db.client.stream_names())
    assert {db.wal_stream, db.schema_stream, db.snap_stream} <= names
    rows = db.rows()  # read with direct gets
    assert [(r.subject, r.source["db"], r.after) for r in rows] == [
        ("CREEK.%s.wal.public.t" % db.token, db.name, {"id": 1})]


def test_escaped_database_name_consumers_can_ack(make_db):
    """A database name that needs escaping still gives streams whose
    consumers can acknowledge messages. nats-server builds each consumer's
    ack reply subject with fmt.Sprintf from a template that contains the
    stream name, so a '%' in a stream name would garble it: creek writes '='
    in stream names where subject tokens have '%' (README)."""
    db = make_db(ODD_DB)
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1)")
    db.wait_wal_count(1)
    c = db.client
    r = c.js_api("CONSUMER.CREATE." + db.wal_stream, {"stream_name": db.wal_stream, "config": {
        "ack_policy": "explicit", "deliver_policy": "all", "ack_wait": 10 * 10**9,
        "inactive_threshold": 60 * 10**9}})
    assert r is not None and "error" not in r, r
    inbox = "_INBOX.creek-e2e-ack"
    sid = c.subscribe(inbox)
    c.publish("$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (db.wal_stream, r["name"]),
              b'{"batch": 1, "expires": 2000000000}', reply=inbox)
    m = c.next_msg(sid, 5)
    assert m is not None and m.status is None, m
    assert m.subject == db.wal_subject("public", "t")
    assert m.reply and m.reply.startswith("$JS.ACK.%s." % db.wal_stream), \
        "message of stream %r delivered without an ack subject (reply=%r): it cannot be " \
        "acknowledged" % (db.wal_stream, m.reply)


def latin1_db(pg, nats, prefix):
    """A new LATIN1 database with creek streaming."""
    import creek_helpers
    name = creek_helpers.unique_db_name(prefix)
    pg.psql("CREATE DATABASE %s ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'" % name)
    db = creek_helpers.CreekDb(pg, nats.url, name, create=False)
    try:
        db.sql("CREATE EXTENSION creek")
        db.wait_streaming()
    except Exception:
        db.drop()
        raise
    return db


def test_latin1_database_publishes_utf8(pg, nats):
    """Avro strings are UTF-8: a database in another encoding is converted."""
    db = latin1_db(pg, nats, "latin1")
    try:
        db.sql("CREATE TABLE t (id int PRIMARY KEY, s text, v varchar(10), j jsonb, n name)")
        db.add_table("t")
        db.sql("INSERT INTO t VALUES (1, 'caf\u00e9 \u00fcber', '\u00e0\u00e9\u00ee', '{\"k\": \"\u00f1\"}', '\u00df')")
        db.wait_wal_count(1)
        (row,) = db.rows()
        assert row.after == {"id": 1, "s": "caf\u00e9 \u00fcber", "v": "\u00e0\u00e9\u00ee",
                             "j": '{"k": "\u00f1"}', "n": "\u00df"}
    finally:
        db.drop()


def test_latin1_database_names_are_utf8(pg, nats, namespace):
    """Schema, table, column and type names and enum labels of a database
    whose encoding is not UTF-8 reach consumers in UTF-8: in `source`, the
    subject, the schema JSON, snapshots, and after a worker restart (schemas
    read back from creek.schemas); the views show them in the database."""
    db = latin1_db(pg, nats, "latin1_names")
    try:
        db.sql('CREATE SCHEMA "sch\u00e9ma"; '
               'CREATE TYPE "sch\u00e9ma".humeur AS ENUM (\'gait\u00e9\', \'ennui\'); '
               'CREATE TABLE "sch\u00e9ma"."tabl\u00e9" (id int PRIMARY KEY, "pr\u00e9nom" text, '
               'h "sch\u00e9ma".humeur)')
        db.sql('SELECT creek.add_table(\'"sch\u00e9ma"."tabl\u00e9"\')')
        db.sql('INSERT INTO "sch\u00e9ma"."tabl\u00e9" VALUES (1, \'Ren\u00e9e\', \'gait\u00e9\')')
        db.wait_wal_count(1)
        (row,) = db.rows()
        assert row.subject == db.wal_subject("sch\u00e9ma", "tabl\u00e9")
        assert row.subject.endswith(".wal.sch%C3%A9ma.tabl%C3%A9")
        assert (row.source["schema"], row.source["table"]) == ("sch\u00e9ma", "tabl\u00e9")
        schema = json.loads(row.schema_json)
        row_fields = [f for f in schema["fields"] if f["name"] == "after"][0]["type"][1]["fields"]
        by_pg_name = {f.get("pgName", f["name"]): f for f in row_fields}
        assert set(by_pg_name) == {"id", "pr\u00e9nom", "h"}, by_pg_name
        assert row.after[by_pg_name["pr\u00e9nom"]["name"]] == "Ren\u00e9e"
        assert by_pg_name["h"]["pgType"] == '"sch\u00e9ma".humeur'
        (enum_type,) = [t for t in by_pg_name["h"]["type"] if isinstance(t, dict)]
        assert enum_type["pgEnumLabels"] == ["gait\u00e9", "ennui"]
        assert row.after["h"] == "gait\u00e9"
        (sm,) = db.schema_messages()
        assert json.loads(sm.data.decode("utf-8"))["source"] == "sch\u00e9ma.tabl\u00e9"
        # in the database, the names read as they were written
        assert db.query("SELECT schemaname, relname FROM creek.pg_stat_creek_tables "
                        "WHERE datname = current_database()") == \
            [("sch\u00e9ma", "tabl\u00e9")]
        assert db.scalar("SELECT source FROM creek.schemas") == "sch\u00e9ma.tabl\u00e9"
        assert '"pr\u00e9nom"' in db.scalar("SELECT schema_json FROM creek.schemas")
        # a snapshot requested over NATS by its UTF-8 name
        reply = db.client.request(namespace + "._snapshot", json.dumps(
            {"database": db.name, "namespace": namespace, "table": "sch\u00e9ma.tabl\u00e9"}).encode(), timeout=20)
        subject = reply.decode()
        assert subject.startswith("%s.%s.snap.sch%%C3%%A9ma.tabl%%C3%%A9." % (namespace, db.token)), subject
        msgs = read_stream(db.client, db.snap_stream, filter_subject=subject)
        header = json.loads(msgs[0].data.decode("utf-8"))
        assert (header["schema_name"], header["table"]) == ("sch\u00e9ma", "tabl\u00e9")
        wait_until(lambda: db.scalar("SELECT state FROM creek.pg_stat_creek_snapshots WHERE subject = '%s'"
                                     % subject) == "finished", 30, 0.2, "the snapshot to finish")
        assert db.query("SELECT schemaname, relname FROM creek.pg_stat_creek_snapshots "
                        "WHERE datname = current_database()") == \
            [("sch\u00e9ma", "tabl\u00e9")]
        # a name the database encoding cannot hold is not published, with a JSON error
        err = json.loads(db.client.request(namespace + "._snapshot", json.dumps(
            {"database": db.name, "namespace": namespace, "table": "\u4e2d"}).encode(), timeout=20))
        assert "not published" in err["error"], err
        # after a restart the schema service serves the stored schema, in UTF-8
        pid = db.stat()["pid"]
        db.pg.psql("SELECT pg_terminate_backend(%s)" % pid)
        wait_until(lambda: db.stat()["pid"] not in (pid, None) and db.stat()["state"] == "streaming",
                   30, 0.2, "the worker restarted")
        fp = json.loads(sm.data.decode("utf-8"))["fingerprint"]
        doc = json.loads(db.client.request(namespace + "._schemas", fp.encode(), timeout=10).decode("utf-8"))
        assert doc["source"] == "sch\u00e9ma.tabl\u00e9" and json.loads(doc["schema"]) == schema
    finally:
        db.drop()