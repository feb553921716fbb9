"""Edge values of every built-in type (and of hstore and citext), against the
type mapping of the README ("Types"):

  bool -> boolean; int2/int4 -> int; int8, oid -> long; float4 -> float;
  float8 -> double (NaN, +-Infinity, -0 kept); numeric -> string (its exact
  text); money -> string (the amount as a numeric); text, varchar, bpchar
  (padded), name, "char", json (as stored), jsonb (as jsonb prints it), xml
  -> string; bytea -> bytes; uuid -> string/uuid; date -> int/date (days,
  infinities = int max/min); time -> long/time-micros; timetz -> record
  {time, utc_offset_s (east of UTC)}; timestamp -> long/local-timestamp-micros;
  timestamptz -> long/timestamp-micros (infinities = long max/min); interval
  -> record {months, days, micros}; network, bit, text search, geometric,
  pg_lsn and extension types -> string (text output); enum -> string label;
  domain -> its base type; composite -> record of ["null", T] fields; range
  -> record {lower, upper, lower_inc, upper_inc, empty}; multirange -> array
  of range records; arrays: 1-D with lower bound 1 -> array of ["null", T],
  other shapes -> record {dims, lower_bounds, elements}.

Every value is compared with what Postgres holds, read back with SQL (text
output, extract(epoch ...), lower()/upper(), array_dims(), unnest() ...),
after decoding the message RAW (logical types stripped: dates, times and
timestamps come out as the ints on the wire). Each test creates its own
database (make_db) with one table whose first column is `id`; each row is
inserted in one transaction, plus one row with every column NULL.
"""

import json
import math
import re
import struct

import pytest

import avrocheck
from creek_helpers import read_stream

pytestmark = pytest.mark.filterwarnings("ignore:Unknown local-timestamp-micros")

AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")

INT_MAX, INT_MIN = 2147483647, -2147483648
LONG_MAX, LONG_MIN = 9223372036854775807, -9223372036854775808


class Raw(str):
    """A value given as an SQL expression (not quoted)."""


def sql_value(v):
    if v is None:
        return "NULL"
    if isinstance(v, Raw):
        return str(v)
    return "'" + v.replace("'", "''") + "'"


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


# ---------------------------------------------------------------------------
# Kinds: how a Postgres value is read back with SQL (as JSON), what the decoder
# must return for it, and which Avro type the schema must give it.
#
# jexpr(x) is an SQL expression of type json holding the value of the SQL
# expression x (SQL NULL when x is NULL); expect(j) turns that JSON into the
# value the raw Avro decoder must return; check(t, names) checks the Avro type.

_alias = [0]


def _fresh():
    _alias[0] += 1
    return "s%d" % _alias[0]


def _isnull(x):
    # num_nulls() tests the datum itself: a composite whose attributes are all
    # NULL is not NULL here (unlike "x IS NULL")
    return "num_nulls(%s) = 1" % x


def resolve(t, names):
    if isinstance(t, str) and t not in PRIMITIVES:
        key = t.rsplit(".", 1)[-1]
        assert key in names, "reference to undefined type %r" % t
        return names[key]
    return t


def collect_names(node, names):
    """Named types (records, enums, fixed) of a schema, by short name."""
    if isinstance(node, list):
        for n in node:
            collect_names(n, names)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            names[node["name"].rsplit(".", 1)[-1]] = node
        for k in ("type", "items", "values"):
            if k in node:
                collect_names(node[k], names)
        for f in node.get("fields", []) or []:
            if isinstance(f, dict):
                collect_names(f.get("type"), names)


def union_branches(u, names, unchanged_ok=True):
    """The branches of a ["null", ...] union besides null and unchanged."""
    assert isinstance(u, list) and u and u[0] == "null", "not a [\"null\", ...] union: %r" % (u,)
    out = []
    for b in u[1:]:
        rb = resolve(b, names)
        if isinstance(rb, dict) and rb.get("type") == "record" and \
                rb.get("name", "").rsplit(".", 1)[-1] == "unchanged":
            assert unchanged_ok and rb.get("fields") == [], "unexpected branch %r" % (b,)
            continue
        out.append(rb)
    return out


class Kind:
    avro = None          # the exact Avro type expected, or None
    label = "?"

    def jexpr(self, x):
        return "to_json((%s)::text)" % x

    def expect(self, j):
        return j

    def check(self, t, names):
        assert t == self.avro, "%s: Avro type %r, expected %r" % (self.label, t, self.avro)


class Prim(Kind):
    def __init__(self, label, avro, conv=None, text_sql=None):
        self.label, self.avro = label, avro
        self.conv = conv or (lambda s: s)
        self.text_sql = text_sql

    def jexpr(self, x):
        if self.text_sql:
            return "to_json((%s)::text)" % (self.text_sql % {"x": x})
        # format('%s') calls the type's output function (keeps char(n) padding)
        return "CASE WHEN %s THEN NULL ELSE to_json(format('%%s', %s)) END" % (_isnull(x), x)

    def expect(self, j):
        return self.conv(j)


class StringLike(Prim):
    """A string with no logical type (attributes such as pgEnumLabels allowed)."""

    def check(self, t, names):
        ok = t == "string" or (isinstance(t, dict) and t.get("type") == "string"
                               and "logicalType" not in t)
        assert ok, "%s: Avro type %r, expected string" % (self.label, t)


BOOL = Prim("boolean", "boolean", lambda s: s in ("t", "true"))
INT = Prim("int", "int", int)
LONG = Prim("long", "long", int)
OID = Prim("oid", "long", int)
FLOAT4 = Prim("float4", "float", lambda s: f32(float(s)))
FLOAT8 = Prim("float8", "double", float)
TEXT = StringLike("string", "string")
NUMERIC = StringLike("numeric", "string")
MONEY = StringLike("money", "string", text_sql="(%(x)s)::numeric")
BYTEA = Prim("bytea", "bytes", bytes.fromhex, text_sql="encode(%(x)s, 'hex')")
UUID = Prim("uuid", {"type": "string", "logicalType": "uuid"})
DATE = Prim("date", {"type": "int", "logicalType": "date"}, int, text_sql=(
    "CASE WHEN %(x)s = 'infinity' THEN " + str(INT_MAX) + " WHEN %(x)s = '-infinity' THEN "
    + str(INT_MIN) + " ELSE %(x)s - DATE '1970-01-01' END"))
TIME = Prim("time", {"type": "long", "logicalType": "time-micros"}, int,
            text_sql="(extract(epoch FROM %(x)s) * 1000000)::bigint")
_TS_SQL = ("CASE WHEN %(x)s = 'infinity' THEN " + str(LONG_MAX) + " WHEN %(x)s = '-infinity' THEN "
           + str(LONG_MIN) + " ELSE (extract(epoch FROM %(x)s) * 1000000)::bigint END")
TIMESTAMP = Prim("timestamp", {"type": "long", "logicalType": "local-timestamp-micros"}, int,
                 text_sql=_TS_SQL)
TIMESTAMPTZ = Prim("timestamptz", {"type": "long", "logicalType": "timestamp-micros"}, int,
                   text_sql=_TS_SQL)


class Record(Kind):
    """A record with fixed fields (name, Kind-or-Avro type, SQL of the value as json)."""

    def __init__(self, label, fields):
        self.label = label
        self.fields = fields  # (name, avro type, sql json template with %(x)s, conv)

    def jexpr(self, x):
        parts = ", ".join("'%s', %s" % (n, sql % {"x": x}) for n, _, sql, _ in self.fields)
        return "CASE WHEN %s THEN NULL ELSE json_build_object(%s) END" % (_isnull(x), parts)

    def expect(self, j):
        return {n: conv(j[n]) for n, _, _, conv in self.fields}

    def check(self, t, names):
        assert isinstance(t, dict) and t.get("type") == "record", \
            "%s: Avro type %r, expected a record" % (self.label, t)
        got = [(f["name"], resolve(f["type"], names)) for f in t["fields"]]
        want = [(n, a) for n, a, _, _ in self.fields]
        assert got == want, "%s: record fields %r, expected %r" % (self.label, got, want)


TIMETZ = Record("timetz", [
    ("time", {"type": "long", "logicalType": "time-micros"},
     "(extract(epoch FROM (%(x)s)::time) * 1000000)::bigint", int),
    ("utc_offset_s", "int", "extract(timezone FROM %(x)s)::int", int),
])
INTERVAL = Record("interval", [
    ("months", "int", "(extract(year FROM %(x)s) * 12 + extract(month FROM %(x)s))::int", int),
    ("days", "int", "extract(day FROM %(x)s)::int", int),
    ("micros", "long", "((extract(hour FROM %(x)s) * 3600 + extract(minute FROM %(x)s) * 60 "
     "+ extract(second FROM %(x)s)) * 1000000)::bigint", int),
])


class Composite(Kind):
    def __init__(self, label, attrs):
        self.label = label
        self.attrs = attrs  # (attribute name, Kind)

    def jexpr(self, x):
        parts = ", ".join("'%s', %s" % (n, k.jexpr("(%s).%s" % (x, n))) for n, k in self.attrs)
        return "CASE WHEN %s THEN NULL ELSE json_build_object(%s) END" % (_isnull(x), parts)

    def expect(self, j):
        return {n: (None if j[n] is None else k.expect(j[n])) for n, k in self.attrs}

    def check(self, t, names):
        assert isinstance(t, dict) and t.get("type") == "record", \
            "%s: Avro type %r, expected a record" % (self.label, t)
        assert [f["name"] for f in t["fields"]] == [n for n, _ in self.attrs], \
            "%s: fields %r" % (self.label, [f["name"] for f in t["fields"]])
        for f, (n, k) in zip(t["fields"], self.attrs):
            check_union(k, f["type"], names, unchanged_ok=False, where="%s.%s" % (self.label, n))


class Range(Kind):
    def __init__(self, label, sub):
        self.label, self.sub = label, sub

    def jexpr(self, x):
        return ("CASE WHEN %s THEN NULL ELSE json_build_object('lower', %s, 'upper', %s, "
                "'lower_inc', lower_inc(%s), 'upper_inc', upper_inc(%s), 'empty', isempty(%s)) END"
                % (_isnull(x), self.sub.jexpr("lower(%s)" % x), self.sub.jexpr("upper(%s)" % x),
                   x, x, x))

    def expect(self, j):
        return {"lower": None if j["lower"] is None else self.sub.expect(j["lower"]),
                "upper": None if j["upper"] is None else self.sub.expect(j["upper"]),
                "lower_inc": j["lower_inc"], "upper_inc": j["upper_inc"], "empty": j["empty"]}

    def check(self, t, names):
        assert isinstance(t, dict) and t.get("type") == "record", \
            "%s: Avro type %r, expected a record" % (self.label, t)
        fields = {f["name"]: f["type"] for f in t["fields"]}
        assert [f["name"] for f in t["fields"]] == ["lower", "upper", "lower_inc", "upper_inc",
                                                    "empty"], (self.label, t)
        for b in ("lower", "upper"):
            check_union(self.sub, fields[b], names, unchanged_ok=False, where=self.label + "." + b)
        for b in ("lower_inc", "upper_inc", "empty"):
            assert fields[b] == "boolean", (self.label, b, fields[b])


class Multirange(Kind):
    def __init__(self, label, rng):
        self.label, self.rng = label, rng

    def jexpr(self, x):
        a = _fresh()
        return ("CASE WHEN %s THEN NULL ELSE coalesce((SELECT json_agg(%s) FROM "
                "(SELECT unnest(%s) AS r) %s), '[]'::json) END"
                % (_isnull(x), self.rng.jexpr("%s.r" % a), x, a))

    def expect(self, j):
        return [self.rng.expect(r) for r in j]

    def check(self, t, names):
        assert isinstance(t, dict) and t.get("type") == "array", \
            "%s: Avro type %r, expected an array" % (self.label, t)
        items = resolve(t["items"], names)
        if isinstance(items, list):  # ["null", range] is acceptable too
            (items,) = union_branches(items, names, unchanged_ok=False)
        self.rng.check(items, names)


class Array(Kind):
    def __init__(self, elem):
        self.elem = elem
        self.label = elem.label + "[]"

    def jexpr(self, x):
        a = _fresh()
        return ("CASE WHEN %s THEN NULL ELSE json_build_object('dims', array_dims(%s), "
                "'elements', coalesce((SELECT json_agg(%s) FROM (SELECT unnest(%s) AS e) %s), "
                "'[]'::json)) END" % (_isnull(x), x, self.elem.jexpr("%s.e" % a), x, a))

    def expect(self, j):
        elements = [None if e is None else self.elem.expect(e) for e in j["elements"]]
        if j["dims"] is None:  # empty array
            return []
        bounds = [tuple(int(v) for v in m) for m in re.findall(r"\[(-?\d+):(-?\d+)\]", j["dims"])]
        assert bounds, j["dims"]
        if len(bounds) == 1 and bounds[0][0] == 1:
            return elements
        return {"dims": [hi - lo + 1 for lo, hi in bounds],
                "lower_bounds": [lo for lo, _ in bounds], "elements": elements}

    def check(self, t, names):
        raise AssertionError("arrays are checked by check_union")

    def check_branches(self, branches, names, where):
        arrays = [b for b in branches if isinstance(b, dict) and b.get("type") == "array"]
        recs = [b for b in branches if isinstance(b, dict) and b.get("type") == "record"]
        assert len(arrays) == 1 and len(recs) == 1 and len(branches) == 2, \
            "%s: expected an array and a dims record in the union, got %r" % (where, branches)
        check_union(self.elem, arrays[0]["items"], names, unchanged_ok=False,
                    where=where + " items")
        f = {x["name"]: x["type"] for x in recs[0]["fields"]}
        assert [x["name"] for x in recs[0]["fields"]] == ["dims", "lower_bounds", "elements"], \
            (where, recs[0])
        assert f["dims"] == {"type": "array", "items": "int"}, (where, f["dims"])
        assert f["lower_bounds"] == {"type": "array", "items": "int"}, (where, f["lower_bounds"])
        assert f["elements"]["type"] == "array", (where, f["elements"])
        check_union(self.elem, f["elements"]["items"], names, unchanged_ok=False,
                    where=where + " elements")


def check_union(kind, u, names, unchanged_ok=True, where=""):
    branches = union_branches(u, names, unchanged_ok)
    if isinstance(kind, Array):
        kind.check_branches(branches, names, where)
        return
    assert len(branches) == 1, "%s: union %r" % (where, u)
    kind.check(branches[0], names)


# ---------------------------------------------------------------------------
# comparison

def same(got, want):
    if isinstance(want, float):
        if not isinstance(got, float):
            return False
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, dict):
        return isinstance(got, dict) and sorted(got) == sorted(want) and \
            all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and \
            all(same(g, w) for g, w in zip(got, want))
    if want is None:
        return got is None
    return type(got) is type(want) and got == want


def short(v, n=300):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def run_type_table(db, table, columns, setup="", key="id int PRIMARY KEY"):
    """Creates `table` (id + columns: (name, SQL type, Kind, [values])),
    publishes it, inserts one row per value index and one all-NULL row,
    and compares every decoded value (raw) and every field's Avro type with
    Postgres. Returns (rows by id, schema). Collects all mismatches."""
    if setup:
        db.sql(setup)
    db.sql("CREATE TABLE %s (%s, %s)" % (table, key, ", ".join(
        "%s %s" % (c[0], c[1]) for c in columns)))
    db.add_table(table)
    n = max(len(c[3]) for c in columns)
    stmts = []
    for i in range(n + 1):
        vals = [str(i + 1)]
        for c in columns:
            vals.append(sql_value(c[3][i]) if i < len(c[3]) else "NULL")
        stmts.append("INSERT INTO %s (id, %s) VALUES (%s)" % (
            table, ", ".join(c[0] for c in columns), ", ".join(vals)))
    db.sql(";\n".join(stmts))
    try:
        db.wait_wal_count(n + 1, timeout=20)
    except AssertionError as e:
        raise AssertionError("%s; worker: %r" % (e, db.stat()))
    msgs = read_stream(db.client, db.wal_stream)
    db.load_schemas()
    decoded = {}
    schema = None
    for m in msgs:
        fp = avrocheck.b64url(bytes(m.data[2:10]))
        assert fp in db.schemas, "no schema %s on the schema stream" % fp
        schema = db.schemas[fp]
        body = avrocheck.decode_single_object(m.data, schema, raw=True)
        assert body["op"] == "c", body
        decoded[body["after"]["id"]] = body["after"]
    assert sorted(decoded) == list(range(1, n + 2))
    sch = json.loads(schema)
    names = {}
    collect_names(sch, names)
    row = resolve(sch["fields"][5]["type"][1], names)
    problems = []
    fields = {f["name"]: f for f in row["fields"]}
    # the types Postgres gives the columns (format_type with and without typmod)
    pg_types = {r[0]: (r[1], r[2]) for r in db.query(
        "SELECT attname, format_type(atttypid, atttypmod), format_type(atttypid, NULL) "
        "FROM pg_attribute WHERE attrelid = '%s'::regclass AND attnum > 0 AND NOT attisdropped"
        % table)}
    for name, _, kind, _ in columns:
        f = fields.get(name)
        if f is None:
            problems.append("%s: no field in the schema" % name)
            continue
        if f.get("pgType") not in pg_types[name]:
            problems.append("%s: pgType %r, Postgres says %r" % (name, f.get("pgType"),
                                                                 pg_types[name][0]))
        try:
            check_union(kind, f["type"], names, where=name)
        except AssertionError as e:
            problems.append("%s: schema: %s" % (name, e))
    # what Postgres holds
    sel = ", ".join("(%s)::text" % kind.jexpr(name) for name, _, kind, _ in columns)
    pg_rows = db.query("SELECT id, %s FROM %s ORDER BY id" % (sel, table))
    assert [int(r[0]) for r in pg_rows] == list(range(1, n + 2))
    for r in pg_rows:
        rid = int(r[0])
        for (name, _, kind, vals), j in zip(columns, r[1:]):
            want = None if j is None else kind.expect(json.loads(j))
            got = decoded[rid].get(name, "<missing>")
            if not same(got, want):
                v = vals[rid - 1] if rid - 1 < len(vals) else None
                problems.append("%s (row %d, %s): decoded %s, Postgres holds %s" % (
                    name, rid, short(v, 80), short(got), short(want)))
    assert not problems, "%d problems in %s:\n  " % (len(problems), table) + "\n  ".join(problems)
    return decoded, sch


# ---------------------------------------------------------------------------
# the tests

def test_bool_integer_float_numeric_money(make_db):
    db = make_db("ty_num")
    run_type_table(db, "t_num", [
        ("b", "boolean", BOOL, ["true", "false"]),
        ("i2", "int2", INT, ["-32768", "32767", "0", "-1"]),
        ("i4", "int4", INT, ["-2147483648", "2147483647", "0", "-1"]),
        ("i8", "int8", LONG, ["-9223372036854775808", "9223372036854775807", "0", "-1"]),
        ("o", "oid", OID, ["0", "4294967295", "2147483648", "1"]),
        ("f4", "float4", FLOAT4, ["NaN", "Infinity", "-Infinity", "-0", "3.4028235e38",
                                  "1e-45", "1.17549435e-38", "0.1", "-1.5"]),
        ("f8", "float8", FLOAT8, ["NaN", "Infinity", "-Infinity", "-0",
                                  "1.7976931348623157e308", "5e-324",
                                  "2.2250738585072014e-308", "0.1", "-1.5"]),
        ("n", "numeric", NUMERIC, ["NaN", "Infinity", "-Infinity", "0", "-0.00", "1.50",
                                   "1e400", "1e-400",
                                   "123456789012345678901234567890.000000000000000000001",
                                   "-99999999999999999999.990"]),
        ("n2", "numeric(10,4)", NUMERIC, ["1.5", "-999999.9999", "0", "NaN", "0.00005"]),
        ("m", "money", MONEY, ["-1234.56", "1234567.89", "0", "-92233720368547758.08",
                               "92233720368547758.07", "$1,000.5"]),
    ])


def test_character_types(make_db):
    db = make_db("ty_char")
    long_text = "x" * 5000 + "é日本😀"
    decoded, _ = run_type_table(db, "t_char", [
        ("t", "text", TEXT, ["", "é", "日本", "😀 emoji", "mixed é日本😀\ttab\nnl\r",
                             "quote ' and \\ backslash", long_text, " "]),
        ("vc", "varchar(10)", TEXT, ["", "ñandú", "日本語テキスト", "abc  "]),
        ("bp", "char(5)", TEXT, ["ab", "", "é", "日本", "abcde"]),
        ("c1", "char", TEXT, ["x", "", "é"]),
        ("nm", "name", TEXT, ["é日本😀", "a" * 63, ""]),
        ("ch", '"char"', TEXT, ["a", "", "é", "\\101"]),
    ])
    # and the exact strings, independently of the SQL read-back
    assert decoded[1]["bp"] == "ab   " and decoded[2]["bp"] == "     "
    assert decoded[4]["bp"] == "日本   " and decoded[1]["c1"] == "x"
    assert decoded[4]["t"] == "😀 emoji" and decoded[7]["t"] == long_text
    assert decoded[1]["nm"] == "é日本😀"


def test_bytea_uuid_json_jsonb_xml(make_db):
    db = make_db("ty_bin")
    every_byte = "\\x" + bytes(range(256)).hex()
    decoded, _ = run_type_table(db, "t_bin", [
        ("by", "bytea", BYTEA, ["\\x", every_byte, "\\x00"]),
        ("u", "uuid", UUID, ["00000000-0000-0000-0000-000000000000",
                             "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
                             "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}"]),
        ("js", "json", TEXT, ['{"b":1,  "a" : [1, 2.50, "é"]}', '"\\u00e9"', "null", "[]",
                              '{"dup":1,"dup":2}', "1e2"]),
        ("jb", "jsonb", TEXT, ['{"b":1,  "a" : [1, 2.50, "é"]}', '"\\u00e9"', "null", "[]",
                               '{"dup":1,"dup":2}', "1e2"]),
        ("x", "xml", TEXT, ['<a x="1">é &amp; <b/></a>', "text only", "<r>日本</r><r/>"]),
    ])
    assert decoded[2]["by"] == bytes(range(256)) and decoded[1]["by"] == b""
    assert decoded[2]["u"] == "ffffffff-ffff-ffff-ffff-ffffffffffff"
    assert decoded[1]["js"] == '{"b":1,  "a" : [1, 2.50, "é"]}'
    assert decoded[1]["jb"] == '{"a": [1, 2.50, "é"], "b": 1}'
    assert decoded[2]["jb"] == '"é"' and decoded[5]["jb"] == '{"dup": 2}'


def test_date_time_types(make_db):
    db = make_db("ty_time")
    decoded, _ = run_type_table(db, "t_time", [
        ("d", "date", DATE, ["1970-01-01", "1969-12-31", "2000-01-01", "4713-01-01 BC",
                             "5874897-12-31", "infinity", "-infinity", "2024-02-29"]),
        ("tm", "time", TIME, ["00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.5"]),
        ("tm3", "time(3)", TIME, ["12:34:56.123456"]),
        ("tz", "timetz", TIMETZ, ["00:00:00+00", "12:34:56.789012+05:30", "23:59:59.999999-15:59",
                                  "24:00:00+15:59", "01:02:03-08"]),
        ("ts", "timestamp", TIMESTAMP, ["1970-01-01 00:00:00", "1969-12-31 23:59:59.999999",
                                        "2000-01-01 00:00:00", "4713-01-01 00:00:00 BC",
                                        "294247-01-10 04:00:54.775806", "infinity", "-infinity",
                                        "2024-02-29 12:34:56.789012"]),
        ("tsz", "timestamptz", TIMESTAMPTZ, ["1970-01-01 00:00:00+00",
                                             "2024-02-29 12:34:56.789012+05:30",
                                             "4714-11-24 00:00:00+00 BC",
                                             "294247-01-10 04:00:54.775806+00", "infinity",
                                             "-infinity", "1969-12-31 23:59:59.999999+00"]),
        ("iv", "interval", INTERVAL, ["1 year 2 mons 3 days 04:05:06.789", "-1 days", "0",
                                      "178000000 years", "-178000000 years",
                                      "1 mon -1 day 00:00:00.000001",
                                      "2147483647 days 2562047788:00:54.775807",
                                      Raw("'-2147483648 days -2562047788:00:54.775807'::interval"
                                          " - interval '0.000001 sec'"),
                                      "-178000000 years -2147483648 days"]),
    ], setup="SET timezone = 'UTC'")
    # the raw ints on the wire, independently of the SQL read-back
    assert [decoded[i]["d"] for i in (1, 2, 3, 6, 7)] == [0, -1, 10957, INT_MAX, INT_MIN]
    assert [decoded[i]["ts"] for i in (1, 2, 3, 6, 7)] == [
        0, -1, 946684800000000, LONG_MAX, LONG_MIN]
    assert [decoded[i]["tsz"] for i in (1, 5, 6, 7)] == [0, LONG_MAX, LONG_MIN, -1]
    assert decoded[2]["tsz"] == 1709190296789012
    assert decoded[3]["tm"] == 86400000000
    assert decoded[2]["tz"] == {"time": 45296789012, "utc_offset_s": 19800}
    assert decoded[5]["tz"] == {"time": 3723000000, "utc_offset_s": -28800}
    assert decoded[1]["iv"] == {"months": 14, "days": 3, "micros": 14706789000}
    assert decoded[6]["iv"] == {"months": 1, "days": -1, "micros": 1}
    assert decoded[7]["iv"] == {"months": 0, "days": INT_MAX, "micros": LONG_MAX}
    assert decoded[8]["iv"] == {"months": 0, "days": INT_MIN, "micros": LONG_MIN}
    assert decoded[9]["iv"] == {"months": -2136000000, "days": INT_MIN, "micros": 0}


def test_text_output_types(make_db):
    db = make_db("ty_textout")
    run_type_table(db, "t_textout", [
        ("ip", "inet", TEXT, ["192.168.0.1/24", "::ffff:1.2.3.4", "2001:db8::1/64",
                              "0.0.0.0/0", "255.255.255.255"]),
        ("cd", "cidr", TEXT, ["10.0.0.0/8", "2001:db8::/32", "192.168.100.128/25"]),
        ("mac", "macaddr", TEXT, ["08:00:2b:01:02:03", "08-00-2B-01-02-03"]),
        ("mac8", "macaddr8", TEXT, ["08:00:2b:01:02:03:04:05", "08:00:2b:01:02:03"]),
        ("bt", "bit(8)", TEXT, ["10101010", "00000000"]),
        ("vb", "varbit", TEXT, ["", "1", "1010101010101010101"]),
        ("tv", "tsvector", TEXT, ["'a' 'fat':2A 'cat':3", "é:1 日本:2"]),
        ("tq", "tsquery", TEXT, ["fat & (rat | cat)", "!a <-> b:*"]),
        ("pt", "point", TEXT, ["(1.5,-2)", "(0.1,1e300)", "(0,-0)"]),
        ("ln", "line", TEXT, ["{1,-1,0}"]),
        ("ls", "lseg", TEXT, ["[(0,0),(1,1)]"]),
        ("bx", "box", TEXT, ["(1,1),(0,0)", "(0,0),(2,3)"]),
        ("pa", "path", TEXT, ["[(0,0),(1,1),(2,0)]", "((0,0),(1,1))"]),
        ("pg", "polygon", TEXT, ["((0,0),(1,1),(1,0))"]),
        ("ci", "circle", TEXT, ["<(0,0),5>", "<(1.5,-2.5),0.1>"]),
        ("lsn", "pg_lsn", TEXT, ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"]),
    ])


def test_extension_types_hstore_citext(make_db):
    db = make_db("ty_ext")
    decoded, _ = run_type_table(db, "t_ext", [
        ("h", "hstore", TEXT, ['"a"=>"1", "b"=>NULL', "", '"é"=>"日本"']),
        ("ci", "citext", TEXT, ["MiXeD Case", "é", ""]),
    ], setup="CREATE EXTENSION hstore; CREATE EXTENSION citext")
    assert decoded[1]["h"] == '"a"=>"1", "b"=>NULL' and decoded[1]["ci"] == "MiXeD Case"


def test_enum_and_domain_types(make_db):
    db = make_db("ty_dom")
    decoded, sch = run_type_table(db, "t_dom", [
        ("e", "mood", StringLike("enum", "string"), ["happy", 'très "ok"', "日本", "sad"]),
        ("dp", "posint", INT, ["1", "2147483647"]),
        ("dt", "dtext", TEXT, ["é", ""]),
        ("dn", "dnum", NUMERIC, ["12.5", "-0.01"]),
        ("dd", "ddate", DATE, ["2024-01-01", "infinity"]),
        ("dtz", "dts", TIMESTAMPTZ, ["2024-01-01 00:00:00+00", "-infinity"]),
        ("da", "dint8arr", Array(LONG), ["{1,NULL,-9223372036854775808}", "{}"]),
        ("de", "dmood", StringLike("enum", "string"), ["sad"]),
        ("db", "dbool", BOOL, ["false"]),
        ("dd2", "ddom", INT, ["5"]),  # a domain over a domain
    ], setup="""
        CREATE TYPE mood AS ENUM ('happy', 'sad', 'très "ok"', '日本');
        CREATE DOMAIN posint AS int CHECK (VALUE > 0);
        CREATE DOMAIN dtext AS text;
        CREATE DOMAIN dnum AS numeric(8,2);
        CREATE DOMAIN ddate AS date;
        CREATE DOMAIN dts AS timestamptz;
        CREATE DOMAIN dint8arr AS int8[];
        CREATE DOMAIN dmood AS mood;
        CREATE DOMAIN dbool AS boolean DEFAULT false;
        CREATE DOMAIN ddom AS posint;
    """)
    assert decoded[1]["e"] == "happy" and decoded[2]["e"] == 'très "ok"'
    assert decoded[1]["dn"] == "12.50" and decoded[2]["dd"] == INT_MAX
    # pgType names the domain
    fields = {f["name"]: f for f in sch["fields"][5]["type"][1]["fields"]}
    assert fields["dp"]["pgType"] == "posint" and fields["dd2"]["pgType"] == "ddom"


def test_composite_types(make_db):
    db = make_db("ty_comp")
    addr = Composite("addr", [("street", TEXT), ("no", INT), ("geo", TEXT),
                              ("tags", Array(TEXT)), ("at", TIMESTAMPTZ), ("d", DATE),
                              ("amount", NUMERIC), ("flag", BOOL), ("raw", BYTEA)])
    wrapper = Composite("wrapper", [("a", addr), ("label", TEXT), ("iv", INTERVAL),
                                    ("r", Range("int4range", INT))])
    decoded, _ = run_type_table(db, "t_comp", [
        ("ad", "addr", addr, [
            Raw("ROW('Main St é', 5, '(1,2)', '{a,NULL}', '2024-01-01 00:00:00+00', "
                "'infinity', '12.50', true, '\\x00ff')"),
            Raw("ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
            Raw("ROW('', -1, NULL, '{}', '-infinity', '1969-12-31', 'NaN', false, '\\x')"),
        ]),
        ("wr", "wrapper", wrapper, [
            Raw("ROW(ROW('x', 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL), 'lbl', '1 day', "
                "'[1,5)')"),
            Raw("ROW(NULL, NULL, NULL, 'empty')"),
        ]),
        ("ads", "addr[]", Array(addr), [
            Raw("ARRAY[ROW('s', 1, NULL, '{b}', NULL, NULL, NULL, NULL, NULL)::addr, NULL]"),
        ]),
    ], setup="""
        CREATE TYPE addr AS (street text, no int, geo point, tags text[], at timestamptz,
                             d date, amount numeric, flag boolean, raw bytea);
        CREATE TYPE wrapper AS (a addr, label varchar(10), iv interval, r int4range);
    """)
    assert decoded[1]["ad"] == {"street": "Main St é", "no": 5, "geo": "(1,2)",
                                "tags": ["a", None], "at": 1704067200000000, "d": INT_MAX,
                                "amount": "12.50", "flag": True, "raw": b"\x00\xff"}
    assert decoded[2]["ad"] == {k: None for k, _ in addr.attrs}
    assert decoded[4]["ad"] is None
    assert decoded[2]["wr"] == {"a": None, "label": None, "iv": None, "r": {
        "lower": None, "upper": None, "lower_inc": False, "upper_inc": False, "empty": True}}


def test_range_and_multirange_types(make_db):
    db = make_db("ty_range")
    i4r, i8r = Range("int4range", INT), Range("int8range", LONG)
    nr, tsr = Range("numrange", NUMERIC), Range("tsrange", TIMESTAMP)
    tzr, dr = Range("tstzrange", TIMESTAMPTZ), Range("daterange", DATE)
    decoded, _ = run_type_table(db, "t_range", [
        ("i4r", "int4range", i4r, ["[1,5)", "(1,5]", "empty", "(,5)", "[1,)", "(,)",
                                   "[-2147483648,2147483646]"]),
        ("i8r", "int8range", i8r, ["[-9223372036854775808,9223372036854775806]", "[0,0]"]),
        ("nr", "numrange", nr, ["[1.50,2.5]", "empty", "(-1e-20,1e20)", "(,0.0)"]),
        ("tsr", "tsrange", tsr, ["[2024-01-01 00:00,2024-01-02 00:00)", "[-infinity,infinity]",
                                 "(,2000-01-01)"]),
        ("tzr", "tstzrange", tzr, ["[2024-01-01 00:00+00,)",
                                   "[2024-01-01 00:00+05:30,2024-01-01 00:00+00]"]),
        ("dr", "daterange", dr, ["[2024-01-01,2024-01-10]", "[2024-01-01,infinity)", "empty"]),
        ("i4mr", "int4multirange", Multirange("int4multirange", i4r),
         ["{}", "{[1,3),[5,7)}", "{[1,3),[2,8)}", "{(,5),[10,)}"]),
        ("dmr", "datemultirange", Multirange("datemultirange", dr), ["{[2024-01-01,2024-01-05]}"]),
        ("nmr", "nummultirange", Multirange("nummultirange", nr), ["{[1.5,2.5)}"]),
        ("tzmr", "tstzmultirange", Multirange("tstzmultirange", tzr),
         ["{[2024-01-01 00:00+00,2024-01-02 00:00+00)}"]),
        ("i8mr", "int8multirange", Multirange("int8multirange", i8r),
         ["{[1,2],[-9223372036854775808,-5)}", "{}"]),
        ("tsmr", "tsmultirange", Multirange("tsmultirange", tsr),
         ["{[2024-01-01 00:00,2024-01-02 00:00),[2025-01-01,infinity]}"]),
    ], setup="SET timezone = 'UTC'")
    assert decoded[1]["i4r"] == {"lower": 1, "upper": 5, "lower_inc": True, "upper_inc": False,
                                 "empty": False}
    assert decoded[2]["i4r"] == {"lower": 2, "upper": 6, "lower_inc": True, "upper_inc": False,
                                 "empty": False}
    assert decoded[3]["i4r"] == {"lower": None, "upper": None, "lower_inc": False,
                                 "upper_inc": False, "empty": True}
    assert decoded[6]["i4r"] == {"lower": None, "upper": None, "lower_inc": False,
                                 "upper_inc": False, "empty": False}
    assert decoded[2]["tsr"]["lower"] == LONG_MIN and decoded[2]["tsr"]["upper"] == LONG_MAX
    assert decoded[1]["dr"] == {"lower": 19723, "upper": 19733, "lower_inc": True,
                                "upper_inc": False, "empty": False}
    assert decoded[1]["i4mr"] == [] and len(decoded[2]["i4mr"]) == 2
    assert decoded[1]["nr"]["lower"] == "1.50"


def test_array_types(make_db):
    db = make_db("ty_array")
    pair = Composite("pair", [("s", TEXT), ("n", INT)])
    decoded, _ = run_type_table(db, "t_array", [
        ("ai", "int4[]", Array(INT), ["{1,NULL,3}", "{}", "{{1,2},{3,4}}", "[0:2]={1,2,3}",
                                      "{{{1}},{{2}}}", "{NULL}", "[-5:-4]={7,8}",
                                      "{{NULL,NULL}}"]),
        ("ai2", "int2[]", Array(INT), ["{-32768,32767}"]),
        ("at", "text[]", Array(TEXT), ['{"é",NULL,"","日本","with,comma","NULL"}',
                                       "{{a,b},{c,NULL}}"]),
        ("ab8", "int8[]", Array(LONG), ["{-9223372036854775808,9223372036854775807}"]),
        ("aoid", "oid[]", Array(OID), ["{0,4294967295}"]),
        ("abool", "boolean[]", Array(BOOL), ["{t,NULL,f}", "[2:2]={t}"]),
        ("af4", "float4[]", Array(FLOAT4), ["{NaN,-0,Infinity,1.5,0.1}"]),
        ("af8", "float8[]", Array(FLOAT8), ["{NaN,-Infinity,-0,0.1}"]),
        ("an", "numeric[]", Array(NUMERIC), ["{1.50,NaN,-Infinity,NULL,1e-30}"]),
        ("am", "money[]", Array(MONEY), ["{-1.50,0,1000000}"]),
        ("aby", "bytea[]", Array(BYTEA), [Raw("ARRAY['\\x00ff'::bytea, NULL, '\\x']")]),
        ("au", "uuid[]", Array(UUID), ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}"]),
        ("ad", "date[]", Array(DATE), ["{1970-01-01,infinity,-infinity,NULL}",
                                       "[2:3]={2000-01-01,2000-01-02}"]),
        ("ats", "timestamp[]", Array(TIMESTAMP), ['{"1970-01-01 00:00:00",infinity}']),
        ("atz", "timestamptz[]", Array(TIMESTAMPTZ),
         ['{"2024-02-29 12:34:56.789012+05:30",-infinity}']),
        ("atm", "time[]", Array(TIME), ["{00:00,24:00}"]),
        ("atmtz", "timetz[]", Array(TIMETZ), ['{"12:00:00+05:30",NULL}']),
        ("aiv", "interval[]", Array(INTERVAL), ['{"1 day","-1 mons"}', '{{"1 day"},{"2 days"}}']),
        ("ajb", "jsonb[]", Array(TEXT), [Raw("ARRAY['{\"b\":1,\"a\":2}'::jsonb, 'null']")]),
        ("ajs", "json[]", Array(TEXT), [Raw("ARRAY['{\"b\":1,  \"a\":2}'::json]")]),
        ("amood", "mood[]", Array(StringLike("enum", "string")), ["{happy,NULL,sad}"]),
        ("ainet", "inet[]", Array(TEXT), ["{192.168.0.1/24,::1}"]),
        ("ar", "int4range[]", Array(Range("int4range", INT)), ['{"[1,5)",empty,NULL}']),
        ("ap", "pair[]", Array(pair), [Raw("ARRAY[ROW('a', 1)::pair, NULL, ROW(NULL, NULL)::pair]"),
                                       Raw("'{}'::pair[]")]),
        ("avb", "varbit[]", Array(TEXT), ['{1010,""}']),
        ("abp", "char(3)[]", Array(TEXT), ['{a,"bc "}']),
        ("axml", "xml[]", Array(TEXT), [Raw("ARRAY['<a/>'::xml]")]),
        ("anm", "name[]", Array(TEXT), ["{é,b}"]),
    ], setup="SET timezone = 'UTC'; CREATE TYPE mood AS ENUM ('happy', 'sad'); "
             "CREATE TYPE pair AS (s text, n int)")
    assert decoded[1]["ai"] == [1, None, 3] and decoded[2]["ai"] == []
    assert decoded[3]["ai"] == {"dims": [2, 2], "lower_bounds": [1, 1], "elements": [1, 2, 3, 4]}
    assert decoded[4]["ai"] == {"dims": [3], "lower_bounds": [0], "elements": [1, 2, 3]}
    assert decoded[5]["ai"] == {"dims": [2, 1, 1], "lower_bounds": [1, 1, 1], "elements": [1, 2]}
    assert decoded[7]["ai"] == {"dims": [2], "lower_bounds": [-5], "elements": [7, 8]}
    assert decoded[2]["at"] == {"dims": [2, 2], "lower_bounds": [1, 1],
                                "elements": ["a", "b", "c", None]}
    assert decoded[1]["ad"] == [0, INT_MAX, INT_MIN, None]
    assert decoded[1]["abp"] == ["a  ", "bc "]
    assert decoded[1]["ap"] == [{"s": "a", "n": 1}, None, {"s": None, "n": None}]


def test_all_types_null(make_db):
    """A row whose every column is NULL: every field decodes as None (the
    other tests have such a row for their types too)."""
    db = make_db("ty_null")
    cols = ["b boolean", "i2 int2", "i4 int4", "i8 int8", "o oid", "f4 float4", "f8 float8",
            "n numeric", "m money", "t text", "vc varchar(3)", "bp char(3)", "nm name",
            'ch "char"', "by bytea", "u uuid", "js json", "jb jsonb", "x xml", "d date",
            "tm time", "tz timetz", "ts timestamp", "tsz timestamptz", "iv interval",
            "ip inet", "cd cidr", "mac macaddr", "mac8 macaddr8", "bt bit(3)", "vb varbit",
            "tv tsvector", "tq tsquery", "pt point", "ln line", "ls lseg", "bx box", "pa path",
            "pg polygon", "ci circle", "lsn pg_lsn", "r int4range", "mr int4multirange",
            "ai int4[]", "aiv interval[]", "alsn pg_lsn[]", "e mood", "cp pair"]
    db.sql("CREATE TYPE mood AS ENUM ('a'); CREATE TYPE pair AS (s text, n int); "
           "CREATE TABLE t_null (id int PRIMARY KEY, %s)" % ", ".join(cols))
    db.add_table("t_null")
    db.sql("INSERT INTO t_null (id) VALUES (1)")
    db.wait_wal_count(1, timeout=20)
    (row,) = db.rows()
    names = [c.split()[0] for c in cols]
    assert row.after == dict({"id": 1}, **{n: None for n in names}), row.after


def test_column_names_that_are_not_avro_names(make_db):
    db = make_db("ty_names")
    pg_names = ["the id", "my col", "my_col", "a-b", "a.b", "a_b", "1st", "_1st", "é", "日本",
                "type", "record", "name", "fields", "null", "namespace", "CamelCase", "Ünï"]
    cols = ['"%s" %s' % (n, "int PRIMARY KEY" if n == "the id" else "text") for n in pg_names]
    db.sql("CREATE TABLE t_names (%s)" % ", ".join(cols))
    db.add_table("t_names")
    values = ["1"] + ["'v %d %s'" % (i, n.replace("'", "''")) for i, n in enumerate(pg_names)][1:]
    db.sql("INSERT INTO t_names VALUES (%s)" % ", ".join(values))
    db.sql('UPDATE t_names SET "type" = \'changed\', "the id" = 2')
    db.sql('DELETE FROM t_names')
    db.wait_wal_count(3, timeout=20)
    rows = db.rows()  # python3-avro parses the schema and decodes every message
    assert [r.op for r in rows] == ["c", "u_pk", "d"]
    sch = json.loads(rows[0].schema_json)
    key_rec = sch["fields"][4]["type"][1]
    row_rec = sch["fields"][5]["type"][1]
    fields = row_rec["fields"]
    avro_names = [f["name"] for f in fields]
    assert all(AVRO_NAME.match(n) for n in avro_names), avro_names
    assert len(set(avro_names)) == len(avro_names), avro_names
    # each field names its Postgres column: pgName exactly when renamed
    assert [f.get("pgName", f["name"]) for f in fields] == pg_names, fields
    for f in fields:
        if AVRO_NAME.match(f.get("pgName", f["name"])):
            assert "pgName" not in f, f
        else:
            assert "pgName" in f and f["pgName"] != f["name"], f
    # README: invalid characters become '_', a leading digit gets a '_' prefix,
    # _2, _3... on collision (valid names keep theirs)
    by_pg = {f.get("pgName", f["name"]): f["name"] for f in fields}
    assert by_pg["the id"] == "the_id"
    assert by_pg["my col"] == "my_col_2" and by_pg["my_col"] == "my_col"
    assert (by_pg["a-b"], by_pg["a.b"], by_pg["a_b"]) == ("a_b_2", "a_b_3", "a_b")
    assert (by_pg["1st"], by_pg["_1st"]) == ("_1st_2", "_1st")
    for n in ("type", "record", "name", "fields", "null", "namespace", "CamelCase"):
        assert by_pg[n] == n
    # the key record uses the same names
    assert [(f["name"], f.get("pgName")) for f in key_rec["fields"]] == [("the_id", "the id")]
    # the values arrive under the new names
    c, u, d = rows
    want = {by_pg[n]: (1 if n == "the id" else "v %d %s" % (i, n)) for i, n in enumerate(pg_names)}
    assert c.after == want
    assert u.before == {"the_id": 1}
    assert u.after == dict(want, the_id=2, type="changed")
    assert d.before == {"the_id": 2} and d.after is None


def test_timestamps_beyond_the_long_range_keep_their_order(make_db):
    """Postgres timestamps reach 294276-12-31 23:59:59.999999, but micros since
    1970 fit a long only up to 294247-01-10 04:00:54.775807 UTC. A later
    finite value has no exact Avro long; whatever creek publishes for it must
    not wrap around to a negative number (a date 290,000 years BC): it must
    not come before a smaller timestamp."""
    db = make_db("ty_tsmax")
    db.sql("SET timezone = 'UTC'; CREATE TABLE t_tsmax (id int PRIMARY KEY, ts timestamp, "
           "tsz timestamptz, tsr tsrange)")
    db.add_table("t_tsmax")
    db.sql("SET timezone = 'UTC'; INSERT INTO t_tsmax VALUES "
           "(1, '294247-01-10 04:00:54.775806', '294247-01-10 04:00:54.775806+00', "
           "'[294247-01-10 04:00:54.775806,)'), "
           "(2, '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', "
           "'[294276-12-31 23:59:59.999999,)')")
    db.wait_wal_count(2, timeout=20)
    db.load_schemas()
    rows = {}
    for m in read_stream(db.client, db.wal_stream):
        body = avrocheck.decode_single_object(m.data, db.schemas[avrocheck.b64url(
            bytes(m.data[2:10]))], raw=True)
        rows[body["after"]["id"]] = body["after"]
    assert rows[1]["ts"] == rows[1]["tsz"] == LONG_MAX - 1
    for col in ("ts", "tsz"):
        assert rows[2][col] >= rows[1][col], "%s: 294276-12-31 23:59:59.999999 published as " \
            "%d, before 294247-01-10 04:00:54.775806 (%d)" % (col, rows[2][col], rows[1][col])
    assert rows[2]["tsr"]["lower"] >= rows[1]["tsr"]["lower"], (rows[1]["tsr"], rows[2]["tsr"])


def test_alter_type_of_a_composite_column_yields_a_new_schema(make_db):
    """ALTER TYPE ... ADD/DROP ATTRIBUTE on a composite type used by a
    published table: the next change uses a schema with the new attributes."""
    db = make_db("ty_alter")
    db.sql("CREATE TYPE pt AS (x int, y int); "
           "CREATE TABLE t (id int PRIMARY KEY, p pt)")
    db.add_table("t")
    db.sql("INSERT INTO t VALUES (1, ROW(1, 2))")
    db.sql("ALTER TYPE pt ADD ATTRIBUTE label text")
    db.sql("INSERT INTO t VALUES (2, ROW(3, 4, 'four'))")
    db.sql("ALTER TYPE pt DROP ATTRIBUTE y")
    db.sql("INSERT INTO t VALUES (3, ROW(5, 'five'))")
    db.wait_wal_count(3)
    rows = db.rows()
    assert [r.after for r in rows] == [
        {"id": 1, "p": {"x": 1, "y": 2}},
        {"id": 2, "p": {"x": 3, "y": 4, "label": "four"}},
        {"id": 3, "p": {"x": 5, "label": "five"}},
    ], rows
    assert len({r.raw.data[2:10] for r in rows}) == 3, "each definition has its own fingerprint"
