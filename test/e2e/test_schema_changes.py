"""Schema changes, fingerprints, replica identities and unchanged TOAST values.

  test_alter_table_under_concurrent_writers
      ALTER TABLE (add/drop/rename/retype columns, replica identity DEFAULT ->
      FULL -> USING INDEX -> NOTHING) while three sessions write single-row
      transactions: nothing lost or doubled, every message decodes with the
      schema its fingerprint names (NS._schemas, creek.schemas and the schema
      stream agree), and each change uses the schema of the table definition
      it was committed under (commit LSN order).
  test_retype_to_same_avro_type_announces_new_pgtype
      text -> varchar, timestamp -> timestamptz: same canonical form of the
      columns, yet a new fingerprint and a schema with the new pgType.
  test_shared_schema_announced_with_its_tables_source
  test_fingerprints_stable_across_databases_and_restart
  test_before_images_per_replica_identity
  test_unchanged_toast_values
  test_renamed_table_moves_to_its_new_subject

Each test creates its own database (make_db), except the restart test, which
gets its own Postgres cluster."""

import json
import random
import re
import string
import threading
import time

import pytest

import avrocheck
from creek_helpers import (CreekDb, PgConn, RowMsg, assert_msg_ids, lsn_int, lsn_text, read_stream,
                           unique_db_name)
from helpers import wait_until
from servers import PgCluster

pytestmark = pytest.mark.filterwarnings("ignore:Unknown local-timestamp-micros")


# ---------------------------------------------------------------------------
# helpers

class SchemaBook:
    """Schemas by fingerprint, each looked up through NS._schemas and checked
    against creek.schemas and the schema stream; decodes row messages with the
    schema their fingerprint names."""

    def __init__(self, db, source):
        self.db = db
        self.source = source
        self.by_fp = {}

    def schema(self, fp):
        s = self.by_fp.get(fp)
        if s is not None:
            return s
        db = self.db
        served = db.lookup_schema(fp, timeout=5)
        assert served is not None, "NS._schemas did not answer for fingerprint %s" % fp
        assert served["fingerprint"] == fp, served
        # the fingerprint is the CRC-64-AVRO of the canonical form (independent code)
        assert avrocheck.b64url(avrocheck.fingerprint(served["schema"])) == fp, \
            "served schema for %s has fingerprint %s" % (
                fp, avrocheck.b64url(avrocheck.fingerprint(served["schema"])))
        stored = db.query("SELECT source, schema_json FROM creek.schemas WHERE fingerprint = '%s'"
                          % fp)
        # (stored once, under the first table that used it: tables with the
        # same definition share it)
        assert stored, "fingerprint %s is not in creek.schemas" % fp
        for _, sj in stored:
            assert avrocheck.b64url(avrocheck.fingerprint(sj)) == fp
        schema_subject = db.schema_subject(*self.source.split(".", 1))
        docs = [json.loads(m.data) for m in db.schema_messages() if m.subject == schema_subject]
        docs = [d for d in docs if d["fingerprint"] == fp]
        assert docs, "fingerprint %s is not on %s" % (fp, schema_subject)
        # (which table "source" names: test_shared_schema_announced_with_its_tables_source)
        for d in docs:
            assert avrocheck.b64url(avrocheck.fingerprint(d["schema"])) == fp
        # one fingerprint names exactly one schema text (README: the
        # namespace is a hash of the JSON), whichever table or database
        # serves it
        texts = {served["schema"]} | {sj for _, sj in stored} | {d["schema"] for d in docs}
        assert len(texts) == 1, "fingerprint %s names %d schema texts" % (fp, len(texts))
        schema = served["schema"]
        assert re.match(r"^creek\.s[0-9a-f]{16}$", json.loads(schema).get("namespace", "")), \
            json.loads(schema).get("namespace")
        self.by_fp[fp] = schema
        return schema

    def decode(self, smsg, raw=False):
        payload = bytes(smsg.data)
        assert payload[:2] == avrocheck.SINGLE_OBJECT_MAGIC, smsg
        fp = avrocheck.b64url(payload[2:10])
        schema = self.schema(fp)
        body = avrocheck.decode_binary(payload[10:], schema, raw=raw)
        assert body["fingerprint"] == fp, (body["fingerprint"], fp)
        return Decoded(smsg, body, schema, fp)


class Decoded(RowMsg):
    """A decoded row change with its schema (parsed) and fingerprint."""

    def __init__(self, smsg, body, schema_json, fp):
        super().__init__(smsg, body, schema_json)
        self.schema = json.loads(schema_json)
        self.fp = fp


def records(schema):
    """(before record, after record, before_is_row) of a publish_message schema."""
    fields = schema["fields"]
    assert [f["name"] for f in fields[:6]] == ["fingerprint", "source", "op", "sent_at",
                                                "before", "after"], fields
    before_t, after_t = fields[4]["type"], fields[5]["type"]
    assert before_t[0] == "null" and after_t[0] == "null"
    before = before_t[1]
    if after_t[1] == before.get("name") or after_t[1] == "row":
        assert before["name"] == "row"
        return before, before, True
    return before, after_t[1], False


def non_null_type(field):
    t = field["type"]
    assert isinstance(t, list) and t[0] == "null", field
    rest = [b for b in t[1:] if b != "unchanged"
            and not (isinstance(b, dict) and b.get("name") == "unchanged")]
    assert len(rest) == 1, field
    return rest[0]


def is_unchanged(v):
    return isinstance(v, dict) and v == {}


# ---------------------------------------------------------------------------
# 1. ALTER TABLE while rows are being written

# The table's definition, as a model: columns (name, pgType, Avro type) and
# the replica identity ("default" = the primary key id, "index" = alt_key).
BASE_COLUMNS = [
    ("id", "integer", "int"),
    ("alt_key", "text", "string"),
    ("payload", "text", "string"),
    ("c_int", "integer", "int"),
    ("c_text", "text", "string"),
    ("dropme", "text", "string"),
    ("ren_a", "text", "string"),
]

DDLS = [
    ("add column", "ALTER TABLE ev ADD COLUMN add_nodef int"),
    ("add column with default", "ALTER TABLE ev ADD COLUMN add_def text DEFAULT 'dflt'"),
    ("drop column", "ALTER TABLE ev DROP COLUMN dropme"),
    ("rename column", "ALTER TABLE ev RENAME COLUMN ren_a TO ren_b"),
    ("int -> bigint", "ALTER TABLE ev ALTER COLUMN c_int TYPE bigint"),
    ("text -> varchar", "ALTER TABLE ev ALTER COLUMN c_text TYPE varchar(100)"),
    ("replica identity full", "ALTER TABLE ev REPLICA IDENTITY FULL"),
    ("replica identity using index", "ALTER TABLE ev REPLICA IDENTITY USING INDEX ev_alt_key_key"),
    ("replica identity nothing", "ALTER TABLE ev REPLICA IDENTITY NOTHING"),
]


def model_states():
    states = [{"cols": list(BASE_COLUMNS), "ident": "default"}]
    for name, _ in DDLS:
        cols = list(states[-1]["cols"])
        ident = states[-1]["ident"]
        if name == "add column":
            cols.append(("add_nodef", "integer", "int"))
        elif name == "add column with default":
            cols.append(("add_def", "text", "string"))
        elif name == "drop column":
            cols = [c for c in cols if c[0] != "dropme"]
        elif name == "rename column":
            cols = [("ren_b",) + c[1:] if c[0] == "ren_a" else c for c in cols]
        elif name == "int -> bigint":
            cols = [("c_int", "bigint", "long") if c[0] == "c_int" else c for c in cols]
        elif name == "text -> varchar":
            cols = [("c_text", "character varying(100)", "string") if c[0] == "c_text" else c
                    for c in cols]
        elif name == "replica identity full":
            ident = "full"
        elif name == "replica identity using index":
            ident = "index"
        elif name == "replica identity nothing":
            ident = "nothing"
        states.append({"cols": cols, "ident": ident})
    return states


def key_columns(state):
    return {"default": ["id"], "index": ["alt_key"], "full": [c[0] for c in state["cols"]],
            "nothing": []}[state["ident"]]


def model_row(state, rid, payload):
    """The row as Postgres holds it under `state` (defaults of the columns
    the writers never set: dropme 'x', ren_a 'r', add_def 'dflt')."""
    vals = {"id": rid, "alt_key": "k%d" % rid, "payload": payload, "c_int": rid,
            "c_text": "t%d" % rid, "dropme": "x", "ren_a": "r", "ren_b": "r",
            "add_nodef": None, "add_def": "dflt"}
    return {c[0]: vals[c[0]] for c in state["cols"]}


def check_schema_state(schema, state, where, check_pgtype=True):
    before, row, before_is_row = records(schema)
    keys = key_columns(state)
    assert before_is_row is (state["ident"] == "full"), "%s: before is %r" % (where, before)
    assert [f["name"] for f in row["fields"]] == [c[0] for c in state["cols"]], \
        "%s: columns %r" % (where, [f["name"] for f in row["fields"]])
    if not before_is_row:
        assert before["name"] == "key"
        assert [f["name"] for f in before["fields"]] == keys, \
            "%s: key record %r" % (where, [f["name"] for f in before["fields"]])
    for f, (name, pg_type, avro_type) in zip(row["fields"], state["cols"]):
        assert non_null_type(f) == avro_type, "%s: column %s: %r" % (where, name, f)
        if check_pgtype:
            assert f["pgType"] in (pg_type, pg_type.split("(")[0]), \
                "%s: column %s: pgType %r, expected %r" % (where, name, f["pgType"], pg_type)
        assert f["pgKey"] is (name in keys), "%s: column %s: pgKey %r (identity %s)" % (
            where, name, f["pgKey"], state["ident"])
        assert "pgName" not in f, f


class OpWriter(threading.Thread):
    """Single-row transactions on table ev: inserts, and now and then an
    update of the payload or a delete of one of its own rows. Each statement
    returns txid_current(), so each change can be matched with its message.
    .ops: (txid, op, id, payload) in the order they committed."""

    def __init__(self, port, dbname, wid, rate=70):
        super().__init__(daemon=True)
        self.port, self.dbname, self.wid, self.rate = port, dbname, wid, rate
        self.ops = []
        self.error = None
        self.stop_flag = threading.Event()

    def run(self):
        rnd = random.Random(self.wid)
        live = []
        try:
            conn = PgConn(self.port, self.dbname, appname="creek-e2e-ddl-writer")
        except Exception as e:
            self.error = e
            return
        t0 = time.monotonic()
        i = 0
        try:
            while not self.stop_flag.is_set():
                i += 1
                rid = (self.wid + 1) * 1000000 + i
                txid = int(conn.scalar(
                    "INSERT INTO ev (id, alt_key, payload, c_int, c_text) VALUES "
                    "(%d, 'k%d', 'p%d', %d, 't%d') RETURNING txid_current()"
                    % (rid, rid, rid, rid, rid)))
                self.ops.append((txid, "c", rid, "p%d" % rid))
                live.append(rid)
                if i % 3 == 0:
                    uid = rnd.choice(live)
                    payload = "u%d_%d" % (uid, i)
                    txid = int(conn.scalar("UPDATE ev SET payload = '%s' WHERE id = %d "
                                           "RETURNING txid_current()" % (payload, uid)))
                    self.ops.append((txid, "u", uid, payload))
                if i % 5 == 0:
                    did = live.pop(rnd.randrange(len(live)))
                    txid = int(conn.scalar("DELETE FROM ev WHERE id = %d RETURNING txid_current()"
                                           % did))
                    self.ops.append((txid, "d", did, None))
                ahead = t0 + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except Exception as e:
            self.error = e
        finally:
            conn.close()


def test_alter_table_under_concurrent_writers(make_db):
    db = make_db("sc_ddl")
    db.sql("CREATE TABLE ev (id int PRIMARY KEY, alt_key text NOT NULL UNIQUE, payload text, "
           "c_int int, c_text text, dropme text DEFAULT 'x', ren_a text DEFAULT 'r')")
    db.add_table("ev")
    states = model_states()
    writers = [OpWriter(db.pg.port, db.name, w) for w in range(3)]
    for w in writers:
        w.start()

    def progressed(marks, k):
        return all(len(w.ops) >= m + k or w.error or not w.is_alive()
                   for w, m in zip(writers, marks))

    ddl_lsns = []  # (lsn inside the DDL transaction before COMMIT, lsn after COMMIT)
    stall_waits = []
    try:
        wait_until(lambda: progressed([0, 0, 0], 10), 15, 0.02, "writers to start")
        with db.connect(appname="creek-e2e-ddl") as conn:
            for name, ddl in DDLS:
                # the explicit lock makes every writer transaction commit either
                # before `pre` or after the DDL's commit
                conn.query("BEGIN; LOCK TABLE ev IN ACCESS EXCLUSIVE MODE; " + ddl)
                pre = lsn_int(conn.scalar("SELECT pg_current_wal_insert_lsn()"))
                conn.query("COMMIT")
                post = lsn_int(conn.scalar("SELECT pg_current_wal_lsn()"))
                ddl_lsns.append((pre, post))
                marks = [len(w.ops) for w in writers]
                wait_until(lambda: progressed(marks, 6), 15, 0.02,
                           "writers to write after %r" % name)
                for w in writers:
                    assert w.error is None, "writer %d failed after %r: %r" % (w.wid, name, w.error)
                # the stream does not stall: everything committed up to the
                # DDL is published and acknowledged within a bounded time
                t0 = time.monotonic()
                wait_until(lambda: lsn_int(db.stat()["confirmed_lsn"]) >= post, 20, 0.05,
                           "creek to confirm past %s after %r (stat %r)"
                           % (lsn_text(post), name, db.stat()))
                stall_waits.append(time.monotonic() - t0)
    finally:
        for w in writers:
            w.stop_flag.set()
        for w in writers:
            w.join(15)
    for w in writers:
        assert not w.is_alive() and w.error is None, "writer %d: %r" % (w.wid, w.error)
    ops = [op for w in writers for op in w.ops]
    by_txid = {op[0]: op for op in ops}
    assert len(by_txid) == len(ops)
    print("schema changes: %d single-row transactions, %d DDLs; waits for confirmation "
          "after each DDL: %s" % (len(ops), len(DDLS), ", ".join("%.2fs" % s for s in stall_waits)))

    t0 = time.monotonic()
    db.wait_wal_count(len(ops), timeout=30)
    print("schema changes: all %d messages on the stream %.1fs after the writers stopped"
          % (len(ops), time.monotonic() - t0))
    book = SchemaBook(db, "public.ev")
    rows = [book.decode(m) for m in read_stream(db.client, db.wal_stream)]
    assert len(rows) == len(ops)
    assert_msg_ids(rows)

    # -- nothing lost or doubled --------------------------------------------
    seen_tx = {}
    for r in rows:
        assert r.source["tx_id"] in by_txid, "message of an unknown transaction: %r" % r
        assert r.source["tx_id"] not in seen_tx, "two messages for one transaction: %r, %r" % (
            seen_tx[r.source["tx_id"]], r)
        seen_tx[r.source["tx_id"]] = r
        assert r.index == 0, r
    inserted = [r.after["id"] for r in rows if r.op == "c"]
    assert len(inserted) == len(set(inserted)), "duplicated inserts"
    assert sorted(inserted) == sorted(op[2] for op in ops if op[1] == "c")
    deleted = {by_txid[r.source["tx_id"]][2] for r in rows if r.op == "d"}
    in_table = {int(x[0]) for x in db.query("SELECT id FROM ev")}
    assert set(inserted) == in_table | deleted and not (in_table & deleted), \
        "stream: %d inserted, %d deleted; table holds %d rows" % (
            len(inserted), len(deleted), len(in_table))

    # -- each change uses the schema of the definition it committed under ---
    pres = [p for p, _ in ddl_lsns]
    payloads = {}
    first_after = {}
    state_fps = {}
    for r in rows:
        k = sum(1 for p in pres if p < r.commit_lsn)
        for i, (pre, post) in enumerate(ddl_lsns):
            # committed after the DDL's commit had returned: the new schema at least
            if r.commit_lsn >= post:
                assert k > i, r
        state = states[k]
        where = "%r (committed after %d of the DDLs, last: %s)" % (
            r, k, DDLS[k - 1][0] if k else "none")
        if r.fp not in state_fps.get(k, ()):
            check_schema_state(r.schema, state, where)
            state_fps.setdefault(k, set()).add(r.fp)
        if k:
            first_after.setdefault(k, r)
        txid, op, rid, payload = by_txid[r.source["tx_id"]]
        assert r.op == op, where
        old_payload = payloads.get(rid)
        if op == "c":
            assert r.before is None, where
            assert r.after == model_row(state, rid, payload), where
            payloads[rid] = payload
        elif op == "u":
            assert r.after == model_row(state, rid, payload), where
            payloads[rid] = payload
        else:
            assert r.after is None, where
        if op in ("u", "d"):
            ident = state["ident"]
            if ident == "default":
                assert r.before == {"id": rid}, where
            elif ident == "index":
                assert r.before == {"alt_key": "k%d" % rid}, where
            elif ident == "full":
                assert r.before == model_row(state, rid, old_payload), where
            else:
                assert r.before is None, where
    # every DDL was followed by changes, the first of which used the new schema
    assert sorted(first_after) == list(range(1, len(DDLS) + 1)), sorted(first_after)
    for k, r in first_after.items():
        assert r.commit_lsn > ddl_lsns[k - 1][0]
    # a new fingerprint for every DDL (text -> varchar too: only pgType changes)
    fps = [state_fps[k] for k in range(len(states))]
    assert all(len(s) == 1 for s in fps), fps
    fps = [next(iter(s)) for s in fps]
    assert len(set(fps)) == len(fps), fps
    stored = {x[0] for x in db.query("SELECT fingerprint FROM creek.schemas WHERE source = 'public.ev'")}
    assert set(fps) <= stored


def test_retype_to_same_avro_type_announces_new_pgtype(make_db):
    """ALTER COLUMN c TYPE varchar(100) on a text column keeps the Avro type
    (string) and so the Parsing Canonical Form of the columns: the schema's
    namespace (a hash of its JSON, README) still gives it a new fingerprint,
    announced, stored and served with pgType "character varying(100)", so a
    consumer learns of the change. timestamp -> timestamptz likewise (only
    the logical type differs)."""
    db = make_db("sc_pgtype")
    db.sql("SET timezone = 'UTC'; CREATE TABLE rt (id int PRIMARY KEY, c text, ts timestamp)")
    db.add_table("rt")
    db.sql("INSERT INTO rt VALUES (1, 'a', '2024-01-01 00:00:00')")
    db.sql("ALTER TABLE rt ALTER COLUMN c TYPE varchar(100)")
    db.sql("INSERT INTO rt VALUES (2, 'b', '2024-01-01 00:00:00')")
    db.sql("SET timezone = 'UTC'; ALTER TABLE rt ALTER COLUMN ts TYPE timestamptz")
    db.sql("INSERT INTO rt VALUES (3, 'c', '2024-01-01 00:00:00+00')")
    db.wait_wal_count(3)
    book = SchemaBook(db, "public.rt")
    rs = [book.decode(m, raw=True) for m in read_stream(db.client, db.wal_stream)]
    micros = 1704067200 * 10**6
    assert [r.after for r in rs] == [{"id": i, "c": c, "ts": micros}
                                     for i, c in ((1, "a"), (2, "b"), (3, "c"))]
    assert len({r.fp for r in rs}) == 3, [r.fp for r in rs]
    want = [
        (["integer", "text", "timestamp without time zone"], "local-timestamp-micros"),
        (["integer", "character varying(100)", "timestamp without time zone"],
         "local-timestamp-micros"),
        (["integer", "character varying(100)", "timestamp with time zone"], "timestamp-micros"),
    ]
    stream_docs = {json.loads(m.data)["fingerprint"]: json.loads(m.data)
                   for m in db.schema_messages()}
    for r, (pg_types, logical) in zip(rs, want):
        for schema in (r.schema, json.loads(db.lookup_schema(r.fp)["schema"]),
                       json.loads(stream_docs[r.fp]["schema"])):
            _, row, _ = records(schema)
            got = [f["pgType"] for f in row["fields"]]
            # format_type, with or without the type modifier
            assert got in (pg_types, [t.split("(")[0] for t in pg_types]), (r, row)
            assert non_null_type(row["fields"][2]) == {"type": "long", "logicalType": logical}


def test_shared_schema_announced_with_its_tables_source(make_db):
    """Two tables with the same definition share a fingerprint and a schema
    text (README). The schema message on each table's schema subject
    (NS.DB.schema.SCHEMA.TABLE, Nats-Msg-Id schema/<fp>/SCHEMA.TABLE) names
    that table as its "source" (protocol.md: "source": "SCHEMA.TABLE")."""
    db = make_db("sc_shared")
    db.sql("CREATE TABLE sh_a (id int PRIMARY KEY, v text); "
           "CREATE TABLE sh_b (id int PRIMARY KEY, v text)")
    db.add_table("sh_a")
    db.add_table("sh_b")
    db.sql("INSERT INTO sh_a VALUES (1, 'a'); INSERT INTO sh_b VALUES (1, 'b')")
    db.wait_wal_count(2)
    fps = {avrocheck.b64url(bytes(m.data[2:10])) for m in read_stream(db.client, db.wal_stream)}
    assert len(fps) == 1, fps
    got = sorted((m.subject, m.msg_id, json.loads(m.data)["source"])
                 for m in db.schema_messages())
    fp = fps.pop()
    assert got == [
        (db.schema_subject("public", "sh_a"), "schema/%s/public.sh_a" % fp, "public.sh_a"),
        (db.schema_subject("public", "sh_b"), "schema/%s/public.sh_b" % fp, "public.sh_b"),
    ], got


# ---------------------------------------------------------------------------
# 2. fingerprints are stable

STABLE_TABLE = ("(id int PRIMARY KEY, name text NOT NULL, qty bigint, price numeric(12,2), "
                "ok boolean, at timestamptz, tags text[], blob bytea, u uuid)")


def first_fp(db, table):
    msgs = read_stream(db.client, db.wal_stream, filter_subject=db.wal_subject("public", table))
    assert msgs, "no message of %s" % table
    return [avrocheck.b64url(bytes(m.data[2:10])) for m in msgs]


def check_fp_everywhere(db, fp, source):
    """fp names the same schema in NS._schemas, creek.schemas and the schema
    stream, and is the CRC-64-AVRO of its canonical form (avrocheck)."""
    book = SchemaBook(db, source)
    schema = book.schema(fp)
    assert avrocheck.b64url(avrocheck.fingerprint(schema)) == fp
    return schema


def test_fingerprints_stable_across_databases_and_restart(nats):
    """Same definition in two databases (one of them with a dropped column
    and the columns added in another order of statements), and in another
    table of the same database: one fingerprint. After a Postgres restart the
    same table still gets it, and NS._schemas still serves it."""
    pg = PgCluster(conf={"creek.nats_url": nats.url})
    dbs = []
    try:
        pg.start()
        db1 = CreekDb(pg, nats.url, unique_db_name("sc_fp_a"))
        dbs.append(db1)
        db2 = CreekDb(pg, nats.url, unique_db_name("sc_fp_b"))
        dbs.append(db2)
        db1.sql("CREATE TABLE fp_t %s" % STABLE_TABLE)
        db1.sql("CREATE TABLE fp_other %s" % STABLE_TABLE)
        # db2: the same columns, reached another way (a dropped column in between)
        db2.sql("CREATE TABLE fp_t (id int PRIMARY KEY, name text NOT NULL, gone int, qty bigint); "
                "ALTER TABLE fp_t DROP COLUMN gone; "
                "ALTER TABLE fp_t ADD COLUMN price numeric(12,2), ADD COLUMN ok boolean, "
                "ADD COLUMN at timestamptz, ADD COLUMN tags text[], ADD COLUMN blob bytea, "
                "ADD COLUMN u uuid")
        row = ("(1, 'n', 2, 3.50, true, '2024-01-01 00:00:00+00', '{a,NULL}', '\\x00ff', "
               "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')")
        for db, tables in ((db1, ("fp_t", "fp_other")), (db2, ("fp_t",))):
            for t in tables:
                db.add_table(t)
                db.sql("INSERT INTO %s VALUES %s" % (t, row))
        db1.wait_wal_count(2)
        db2.wait_wal_count(1)
        (fp_a,) = first_fp(db1, "fp_t")
        (fp_other,) = first_fp(db1, "fp_other")
        (fp_b,) = first_fp(db2, "fp_t")
        assert fp_a == fp_b == fp_other, (fp_a, fp_b, fp_other)
        s1 = check_fp_everywhere(db1, fp_a, "public.fp_t")
        s2 = check_fp_everywhere(db2, fp_b, "public.fp_t")
        assert avrocheck.canonical_form(s1) == avrocheck.canonical_form(s2)
        # the decoded rows are equal too
        r1 = db1.rows(filter_subject=db1.wal_subject("public", "fp_t"))[0]
        r2 = db2.rows()[0]
        assert r1.after == r2.after

        # restart Postgres: the worker comes back and uses the same fingerprint
        pg.restart()
        for db in dbs:
            db.wait_streaming(30)
        db1.sql("INSERT INTO fp_t VALUES (2, 'after restart')")
        db1.wait_wal_count(3)
        fps = first_fp(db1, "fp_t")
        assert fps == [fp_a, fp_a], fps
        # served again after the restart (the worker loads creek.schemas)
        served = wait_until(lambda: db1.lookup_schema(fp_a, timeout=2), 10, 0.2,
                            "NS._schemas to serve %s after the restart" % fp_a)
        assert served["fingerprint"] == fp_a
        assert avrocheck.b64url(avrocheck.fingerprint(served["schema"])) == fp_a
        # stored once per table that uses it, not again after the restart
        stored = sorted(db1.query("SELECT fingerprint, source FROM creek.schemas"))
        assert stored == [(fp_a, "public.fp_other"), (fp_a, "public.fp_t")], stored
        assert db2.query("SELECT fingerprint, source FROM creek.schemas") == [(fp_a, "public.fp_t")]
        rows = db1.rows(filter_subject=db1.wal_subject("public", "fp_t"))
        assert rows[1].after["id"] == 2 and rows[1].after["name"] == "after restart"
    finally:
        for db in dbs:
            db.close()
        pg.cleanup()


# ---------------------------------------------------------------------------
# 3. before images per replica identity

def test_before_images_per_replica_identity(make_db):
    db = make_db("sc_ri")
    db.sql("""
        CREATE TABLE ri_default (id int PRIMARY KEY, k2 int NOT NULL UNIQUE, v text);
        CREATE TABLE ri_default2 (a int, b text, v text, PRIMARY KEY (a, b));
        CREATE TABLE ri_index (id int PRIMARY KEY, k2 int NOT NULL, v text);
        CREATE UNIQUE INDEX ri_index_k2 ON ri_index (k2);
        ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_k2;
        CREATE TABLE ri_full (id int PRIMARY KEY, k2 int NOT NULL, v text);
        ALTER TABLE ri_full REPLICA IDENTITY FULL;
        CREATE TABLE ri_full_nopk (k2 int, v text);
        ALTER TABLE ri_full_nopk REPLICA IDENTITY FULL;
        CREATE TABLE ri_nothing (id int PRIMARY KEY, k2 int NOT NULL, v text);
        ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING;
        CREATE TABLE ri_nopk (id int, k2 int, v text);
    """)
    tables = ["ri_default", "ri_default2", "ri_index", "ri_full", "ri_full_nopk", "ri_nothing",
              "ri_nopk"]
    for t in tables:
        db.add_table(t)
    three = ["ri_default", "ri_index", "ri_full", "ri_nothing", "ri_nopk"]
    script = []
    for t in three:
        script += [
            "INSERT INTO %s VALUES (1, 10, 'a')" % t,
            "UPDATE %s SET v = 'b' WHERE id = 1" % t,            # plain update
            "UPDATE %s SET id = 2 WHERE id = 1" % t,             # primary key changes
            "UPDATE %s SET k2 = 20 WHERE id = 2" % t,            # k2 changes
            "DELETE FROM %s WHERE id = 2" % t,
        ]
    script += [
        "INSERT INTO ri_default2 VALUES (1, 'x', 'a')",
        "UPDATE ri_default2 SET v = 'b'",
        "UPDATE ri_default2 SET b = 'y'",
        "DELETE FROM ri_default2",
        "INSERT INTO ri_full_nopk VALUES (1, 'a')",
        "UPDATE ri_full_nopk SET k2 = 2",
        "DELETE FROM ri_full_nopk",
    ]
    db.sql(";\n".join(script))
    db.wait_wal_count(len(script))
    book = {}
    by_table = {}
    for m in read_stream(db.client, db.wal_stream):
        t = m.subject.rsplit(".", 1)[1]
        if t not in book:
            book[t] = SchemaBook(db, "public." + t)
        by_table.setdefault(t, []).append(book[t].decode(m))

    def got(t):
        return [(r.op, r.before, r.after) for r in by_table[t]]

    full1 = {"id": 1, "k2": 10, "v": "a"}
    # DEFAULT with a primary key: the key; u: unchanged key, u_pk: the old key
    assert got("ri_default") == [
        ("c", None, full1),
        ("u", {"id": 1}, {"id": 1, "k2": 10, "v": "b"}),
        ("u_pk", {"id": 1}, {"id": 2, "k2": 10, "v": "b"}),
        ("u", {"id": 2}, {"id": 2, "k2": 20, "v": "b"}),
        ("d", {"id": 2}, None),
    ]
    assert got("ri_default2") == [
        ("c", None, {"a": 1, "b": "x", "v": "a"}),
        ("u", {"a": 1, "b": "x"}, {"a": 1, "b": "x", "v": "b"}),
        ("u_pk", {"a": 1, "b": "x"}, {"a": 1, "b": "y", "v": "b"}),
        ("d", {"a": 1, "b": "y"}, None),
    ]
    # USING INDEX: the index's columns are the key (not the primary key)
    assert got("ri_index") == [
        ("c", None, full1),
        ("u", {"k2": 10}, {"id": 1, "k2": 10, "v": "b"}),
        ("u", {"k2": 10}, {"id": 2, "k2": 10, "v": "b"}),
        ("u_pk", {"k2": 10}, {"id": 2, "k2": 20, "v": "b"}),
        ("d", {"k2": 20}, None),
    ]
    # FULL: the whole old row; u_pk when the primary key changed
    assert got("ri_full") == [
        ("c", None, full1),
        ("u", full1, {"id": 1, "k2": 10, "v": "b"}),
        ("u_pk", {"id": 1, "k2": 10, "v": "b"}, {"id": 2, "k2": 10, "v": "b"}),
        ("u", {"id": 2, "k2": 10, "v": "b"}, {"id": 2, "k2": 20, "v": "b"}),
        ("d", {"id": 2, "k2": 20, "v": "b"}, None),
    ]
    assert got("ri_full_nopk") == [
        ("c", None, {"k2": 1, "v": "a"}),
        ("u", {"k2": 1, "v": "a"}, {"k2": 2, "v": "a"}),
        ("d", {"k2": 2, "v": "a"}, None),
    ]
    # NOTHING, and DEFAULT without a primary key: no before image, never u_pk
    for t in ("ri_nothing", "ri_nopk"):
        assert got(t) == [
            ("c", None, full1),
            ("u", None, {"id": 1, "k2": 10, "v": "b"}),
            ("u", None, {"id": 2, "k2": 10, "v": "b"}),
            ("u", None, {"id": 2, "k2": 20, "v": "b"}),
            ("d", None, None),
        ], t

    # the schemas: the key record, pgKey
    expect_keys = {"ri_default": ["id"], "ri_default2": ["a", "b"], "ri_index": ["k2"],
                   "ri_nothing": [], "ri_nopk": []}
    for t in tables:
        schema = by_table[t][0].schema
        before, row, before_is_row = records(schema)
        if t.startswith("ri_full"):
            assert before_is_row, t
            assert all(f["pgKey"] is True for f in row["fields"]), (t, row)
        else:
            assert not before_is_row, t
            assert [f["name"] for f in before["fields"]] == expect_keys[t], (t, before)
            assert [f["name"] for f in row["fields"] if f["pgKey"]] == expect_keys[t], (t, row)
            for f in before["fields"]:
                assert f["pgKey"] is True
    # the published pgKey matches Postgres's replica identity
    for t in tables:
        ident = db.scalar("SELECT relreplident FROM pg_class WHERE relname = '%s'" % t)
        assert ident == {"ri_index": "i", "ri_full": "f", "ri_full_nopk": "f",
                         "ri_nothing": "n"}.get(t, "d"), (t, ident)


# ---------------------------------------------------------------------------
# 4. unchanged TOAST values

def random_text(rnd, n):
    alphabet = string.ascii_letters + string.digits
    return "".join(rnd.choice(alphabet) for _ in range(n))


def test_unchanged_toast_values(make_db):
    db = make_db("sc_toast")
    rnd = random.Random(42)
    big = random_text(rnd, 200 * 1024)
    big2 = random_text(rnd, 200 * 1024)
    blob = bytes(rnd.getrandbits(8) for _ in range(150 * 1024))
    js = json.dumps({"k": random_text(rnd, 100 * 1024), "n": [1, 2.5, None], "é": "日本"},
                    ensure_ascii=False)
    arr = [rnd.randrange(-2**31, 2**31) for _ in range(40000)]
    arr[7] = None
    arr_sql = "{%s}" % ",".join("NULL" if v is None else str(v) for v in arr)
    for t, ident in (("tp", "DEFAULT"), ("tf", "FULL")):
        db.sql("CREATE TABLE %s (id int PRIMARY KEY, small text, big text, bb bytea, jb jsonb, "
               "arr int[]); ALTER TABLE %s REPLICA IDENTITY %s" % (t, t, ident))
        db.add_table(t)
    script = []
    for t in ("tp", "tf"):
        script += [
            "INSERT INTO %s VALUES (1, 'a', '%s', '\\x%s', '%s', '%s')" % (
                t, big, blob.hex(), js.replace("'", "''"), arr_sql),
            "UPDATE %s SET small = 'b' WHERE id = 1" % t,              # 1: nothing big touched
            "UPDATE %s SET big = '%s' WHERE id = 1" % (t, big2),       # 2: big rewritten
            "UPDATE %s SET bb = NULL, small = 'c' WHERE id = 1" % t,   # 3: a real NULL
            "UPDATE %s SET id = 2 WHERE id = 1" % t,                   # 4: key changes
            "DELETE FROM %s WHERE id = 2" % t,                          # 5
        ]
    with db.connect() as conn:
        for s in script:
            conn.query(s)
        jb_text = conn.scalar("SELECT '%s'::jsonb::text" % js.replace("'", "''"))
        # the values really are stored out of line
        for t in ("tp", "tf"):
            assert int(conn.scalar("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                                   "WHERE relname = '%s'" % t)) > 300 * 1024
    db.wait_wal_count(len(script))
    rows = {}
    books = {t: SchemaBook(db, "public." + t) for t in ("tp", "tf")}
    for m in read_stream(db.client, db.wal_stream):
        t = m.subject.rsplit(".", 1)[1]
        rows.setdefault(t, []).append(books[t].decode(m))
    for t in ("tp", "tf"):
        assert [r.op for r in rows[t]] == ["c", "u", "u", "u", "u_pk", "d"], rows[t]

    U = "unchanged"

    def check(record, expect, where):
        assert record is not None, where
        assert sorted(record) == sorted(expect), (where, sorted(record))
        for k, want in expect.items():
            v = record[k]
            if want is U:
                assert is_unchanged(v), "%s: column %s should be the unchanged branch ({}), " \
                    "got %s" % (where, k, type(v).__name__ if v is not None else "None")
            else:
                assert v == want, "%s: column %s: got %r..., want %r..." % (
                    where, k, repr(v)[:60], repr(want)[:60])
                assert type(v) is type(want), (where, k, type(v))

    row0 = {"id": 1, "small": "a", "big": big, "bb": blob, "jb": jb_text, "arr": arr}
    row1 = dict(row0, small="b")
    row2 = dict(row1, big=big2)
    row3 = dict(row2, bb=None, small="c")
    row4 = dict(row3, id=2)
    for t in ("tp", "tf"):
        c, u1, u2, u3, u4, d = rows[t]
        check(c.after, row0, t + " insert")
        assert c.before is None
        # after images: untouched TOASTed columns are "unchanged" (with FULL too)
        check(u1.after, {"id": 1, "small": "b", "big": U, "bb": U, "jb": U, "arr": U},
              t + " update 1")
        check(u2.after, {"id": 1, "small": "b", "big": big2, "bb": U, "jb": U, "arr": U},
              t + " update 2")
        check(u3.after, {"id": 1, "small": "c", "big": U, "bb": None, "jb": U, "arr": U},
              t + " update 3")
        check(u4.after, {"id": 2, "small": "c", "big": U, "bb": None, "jb": U, "arr": U},
              t + " update 4")
        assert d.after is None
        if t == "tp":
            assert [r.before for r in (u1, u2, u3, u4, d)] == [
                {"id": 1}, {"id": 1}, {"id": 1}, {"id": 1}, {"id": 2}]
        else:
            # FULL: the before image carries every old value in full
            check(u1.before, row0, "tf update 1 before")
            check(u2.before, row1, "tf update 2 before")
            check(u3.before, row2, "tf update 3 before")
            check(u4.before, row3, "tf update 4 before")
            check(d.before, row4, "tf delete before")
        # the schema: varlena columns are [null, T, unchanged], fixed-size ones [null, T]
        _, row, _ = records(c.schema)
        types = {f["name"]: f["type"] for f in row["fields"]}
        assert types["id"] == ["null", "int"]
        for col, avro_type in (("small", "string"), ("big", "string"), ("bb", "bytes"),
                               ("jb", "string")):
            ft = types[col]
            assert ft[:2] == ["null", avro_type] and len(ft) == 3, (col, ft)
            assert ft[2] == "unchanged" or ft[2] == {"type": "record", "name": "unchanged",
                                                     "fields": []}, (col, ft)
        # an array column: [null, array, unchanged, the dims record]
        ft = types["arr"]
        assert ft[0] == "null" and ft[1]["type"] == "array" and ft[2] == "unchanged", ft


def test_renamed_table_moves_to_its_new_subject(make_db):
    """A table's changes go to the subject of its name when they were made:
    RENAME and SET SCHEMA move them (mid-transaction too), and the new
    subject gets its schema message first; the table stays published."""
    db = make_db("rename_table")
    db.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA s2")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1, 'a')")
    db.sql("BEGIN; INSERT INTO t VALUES (2, 'b'); ALTER TABLE t RENAME TO t2; INSERT INTO t2 VALUES (3, 'c'); COMMIT")
    db.sql("ALTER TABLE t2 SET SCHEMA s2; INSERT INTO s2.t2 VALUES (4, 'd')")
    db.wait_caught_up()
    got = [(r.subject, r.after["id"], r.source["schema"], r.source["table"]) for r in db.rows()]
    assert got == [(db.wal_subject("public", "t"), 1, "public", "t"), (db.wal_subject("public", "t"), 2, "public", "t"),
                   (db.wal_subject("public", "t2"), 3, "public", "t2"), (db.wal_subject("s2", "t2"), 4, "s2", "t2")]
    assert [m.subject for m in db.schema_messages()] == [
        db.schema_subject("public", "t"), db.schema_subject("public", "t2"), db.schema_subject("s2", "t2")]
    assert db.query("SELECT relid::text FROM creek.tables") == [("s2.t2",)]
