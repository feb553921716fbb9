"""Avro checks for creek tests: CRC-64-AVRO, Parsing Canonical Form (written
here independently from the spec, not taken from any Avro library),
fingerprints, single-object decoding (python3-avro for the binary body).

Spec: https://avro.apache.org/docs/1.11.1/specification/
  "Parsing Canonical Form for Schemas", "Schema Fingerprints",
  "Single-object encoding".
"""

import base64
import io
import json
import struct

__all__ = ["EMPTY", "crc64_avro", "to_signed64", "canonical_form", "fingerprint",
           "fingerprint_int", "b64url", "strip_logical_types", "parse_schema",
           "decode_single_object", "decode_binary", "encode_single_object",
           "encode_binary", "SINGLE_OBJECT_MAGIC"]

EMPTY = 0xc15d213aa4d7a795
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_MASK = 0xffffffffffffffff


def _make_table():
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp & _MASK)
    return table


_FP_TABLE = _make_table()


def crc64_avro(data):
    """CRC-64-AVRO (Rabin) fingerprint of bytes, as an unsigned 64-bit int."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xff]
    return fp


def to_signed64(v):
    """Unsigned 64-bit -> signed (Java long) interpretation."""
    return v - (1 << 64) if v >= (1 << 63) else v


# --------------------------------------------------------------------------
# Parsing Canonical Form

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_NAMED = ("record", "error", "enum", "fixed")
_ORDER = ("name", "type", "fields", "symbols", "items", "values", "size")


def _split_fullname(name, namespace):
    """(fullname, namespace for nested definitions)."""
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    if namespace:
        return namespace + "." + name, namespace
    return name, None


class _Canon:
    def __init__(self):
        self.defined = set()

    def ref(self, name, namespace):
        if "." in name:
            full = name
        else:
            full = (namespace + "." + name) if namespace else name
            # like Java's Names.get: fall back to the null namespace
            if full not in self.defined and name in self.defined:
                full = name
        if full not in self.defined:
            raise ValueError("unknown type %r (namespace %r)" % (name, namespace))
        return json.dumps(full, ensure_ascii=False)

    def conv(self, s, namespace):
        if isinstance(s, str):
            if s in PRIMITIVES:
                return json.dumps(s)
            return self.ref(s, namespace)
        if isinstance(s, list):
            return "[" + ",".join(self.conv(b, namespace) for b in s) + "]"
        if not isinstance(s, dict):
            raise ValueError("bad schema node %r" % (s,))
        t = s.get("type")
        if isinstance(t, (dict, list)):
            # {"type": {...}} : the nested schema is the schema
            return self.conv(t, namespace)
        if t in PRIMITIVES:
            # [PRIMITIVES] (also drops logicalType etc. on primitives)
            return json.dumps(t)
        if t in _NAMED:
            name = s.get("name")
            if not isinstance(name, str):
                raise ValueError("named type without name: %r" % (s,))
            ns = (s["namespace"] or None) if "namespace" in s else namespace
            full, inner_ns = _split_fullname(name, ns)
            if full in self.defined:
                # a repeated named type is written as its full name
                return json.dumps(full, ensure_ascii=False)
            self.defined.add(full)
            parts = ['"name":' + json.dumps(full, ensure_ascii=False),
                     '"type":' + json.dumps(t)]
            if t in ("record", "error"):
                fields = []
                for f in s.get("fields", []):
                    fields.append('{"name":' + json.dumps(f["name"], ensure_ascii=False)
                                  + ',"type":' + self.conv(f["type"], inner_ns) + "}")
                parts.append('"fields":[' + ",".join(fields) + "]")
            elif t == "enum":
                parts.append('"symbols":' + json.dumps(list(s.get("symbols", [])),
                                                       ensure_ascii=False,
                                                       separators=(",", ":")))
            else:  # fixed
                parts.append('"size":' + str(int(s["size"])))
            return "{" + ",".join(parts) + "}"
        if t == "array":
            return '{"type":"array","items":' + self.conv(s["items"], namespace) + "}"
        if t == "map":
            return '{"type":"map","values":' + self.conv(s["values"], namespace) + "}"
        if isinstance(t, str):
            # a reference written as {"type": "some.Name"}
            return self.ref(t, namespace)
        raise ValueError("bad schema node %r" % (s,))


def _load(schema_json):
    if isinstance(schema_json, (bytes, bytearray)):
        schema_json = schema_json.decode("utf-8")
    if isinstance(schema_json, str):
        try:
            return json.loads(schema_json)
        except ValueError:
            # a bare primitive name such as  int  (not JSON)
            return schema_json
    return schema_json


def canonical_form(schema_json):
    """Parsing Canonical Form of a schema (JSON text, or already-parsed JSON)."""
    return _Canon().conv(_load(schema_json), None)


def fingerprint_int(schema_json):
    """CRC-64-AVRO of the canonical form, unsigned int."""
    return crc64_avro(canonical_form(schema_json).encode("utf-8"))


def fingerprint(schema_json):
    """8-byte little-endian CRC-64-AVRO fingerprint of the canonical form."""
    return struct.pack("<Q", fingerprint_int(schema_json))


def b64url(data):
    """base64url with padding."""
    return base64.urlsafe_b64encode(bytes(data)).decode("ascii")


# --------------------------------------------------------------------------
# Decoding with python3-avro

def strip_logical_types(schema):
    """Copy of the (parsed JSON) schema without logicalType annotations, so
    python3-avro yields the raw underlying values (longs, ints, strings...)."""
    if isinstance(schema, list):
        return [strip_logical_types(b) for b in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k == "logicalType":
            continue
        if k in ("type", "items", "values"):
            out[k] = strip_logical_types(v)
        elif k == "fields" and isinstance(v, list):
            out[k] = [dict(f, type=strip_logical_types(f["type"])) if isinstance(f, dict) and "type" in f else f
                      for f in v]
        else:
            out[k] = v
    return out


_parse_cache = {}


def parse_schema(schema_json, raw=False):
    """avro.schema.Schema for JSON text or parsed JSON (raw=True: logical types removed)."""
    import avro.schema
    key = (json.dumps(_load(schema_json), sort_keys=True), raw)
    s = _parse_cache.get(key)
    if s is None:
        j = _load(schema_json)
        if raw:
            j = strip_logical_types(j)
        s = avro.schema.parse(json.dumps(j))
        _parse_cache[key] = s
    return s


def decode_binary(body, schema_json, raw=False):
    """Decode a plain Avro binary datum; asserts that every byte is consumed."""
    import avro.io
    body = bytes(body)
    buf = io.BytesIO(body)
    reader = avro.io.DatumReader(parse_schema(schema_json, raw))
    datum = reader.read(avro.io.BinaryDecoder(buf))
    left = len(body) - buf.tell()
    assert left == 0, "%d bytes left over after the Avro datum" % left
    return datum


def decode_single_object(payload, schema_json, raw=False):
    """Check the single-object header (C3 01 + fingerprint of schema_json) and
    decode the body. Raises AssertionError on any mismatch."""
    payload = bytes(payload)
    assert len(payload) >= 10, "single-object payload too short: %d bytes" % len(payload)
    assert payload[:2] == SINGLE_OBJECT_MAGIC, \
        "bad single-object marker %s" % payload[:2].hex()
    want = fingerprint(schema_json)
    got = payload[2:10]
    assert got == want, "fingerprint %s in payload, schema has %s" % (got.hex(), want.hex())
    return decode_binary(payload[10:], schema_json, raw)


def encode_binary(datum, schema_json, raw=False):
    import avro.io
    buf = io.BytesIO()
    avro.io.DatumWriter(parse_schema(schema_json, raw)).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def encode_single_object(datum, schema_json, raw=False):
    return SINGLE_OBJECT_MAGIC + fingerprint(schema_json) + encode_binary(datum, schema_json, raw)


class PartAssembler:
    """Puts split messages back together (creek's rule for messages larger
    than the NATS server's max_payload): a message with the header
    `Creek-Chunk: k/n` is part k of n; the payloads of parts 1..n, in stream
    order on the same subject, concatenate to the message. A part 1 starts a
    new message: an incomplete one before it is discarded.

    add() returns the whole payload when a message is complete (at once for an
    unsplit message), else None."""

    def __init__(self):
        self._open = {}   # subject -> (n, next k, [payloads])

    def add(self, subject, headers, data):
        part = (headers or {}).get("Creek-Chunk")
        if not part:
            return data
        k, n = (int(x) for x in part.split("/"))
        if k == 1:
            self._open[subject] = (n, 2, [data])
        else:
            cur = self._open.get(subject)
            if cur is None or cur[0] != n or cur[1] != k:
                self._open.pop(subject, None)   # a part without its beginning
                return None
            cur[2].append(data)
            self._open[subject] = (n, k + 1, cur[2])
        n_, nxt, parts = self._open[subject]
        if nxt > n_:
            del self._open[subject]
            return b"".join(parts)
        return None
