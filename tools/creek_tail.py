#!/usr/bin/python3
"""creek_tail: print creek's row changes from JetStream, decoded, one JSON line each.

    tools/creek_tail.py --url nats://127.0.0.1:4222 --db mydb [--namespace CREEK]
                        [--from-seq 1] [--seconds 0] [--follow]
    tools/creek_tail.py --url ... --db mydb --snapshot CREEK.mydb.snap.public.t.<time>_<id>

Reads the stream NS_DB_wal from the given sequence, fetches every writer schema
from the NS._schemas service by the fingerprint in the message header, decodes
the Avro body with python3-avro (an implementation independent of creek), and
prints {"subject", "msg_id", "op", "before", "after", "source"} per message.
"""

import argparse
import base64
import datetime
import decimal
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))

from avrocheck import PartAssembler, decode_binary, decode_single_object  # noqa: E402
from natsclient import NatsClient  # noqa: E402


def token(name):
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    return "".join(chr(b) if b in keep else "%%%02X" % b for b in name.encode())


def plain(v):
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return v


def print_snapshot(args):
    """The header (without its schema), each row decoded with the header's
    schema, and whether EOF arrived."""
    client = NatsClient(args.url, timeout=5, name="creek_tail")
    stream = "%s_%s_snap" % (args.namespace, token(args.db).replace("%", "="))
    parts = PartAssembler()
    header = None
    for msg in client.stream_messages(stream, args.snapshot):
        data = parts.add(msg.subject, msg.headers, msg.data)
        if data is None:
            continue
        if header is None:
            header = json.loads(data)
            print(json.dumps({k: v for k, v in header.items() if k != "schema"}), flush=True)
        elif data == b"EOF":
            print("EOF", flush=True)
        else:
            print(json.dumps(plain(decode_binary(data, header["schema"])), ensure_ascii=False), flush=True)
    client.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="nats://127.0.0.1:4222")
    ap.add_argument("--db", required=True)
    ap.add_argument("--namespace", default="CREEK")
    ap.add_argument("--from-seq", type=int, default=1)
    ap.add_argument("--follow", action="store_true", help="keep waiting for new messages")
    ap.add_argument("--seconds", type=float, default=0, help="with --follow: stop after this long (0: never)")
    ap.add_argument("--snapshot", metavar="SUBJECT", help="print the snapshot published on SUBJECT instead")
    args = ap.parse_args()
    if args.snapshot:
        return print_snapshot(args)

    client = NatsClient(args.url, timeout=5, name="creek_tail")
    stream = "%s_%s_wal" % (args.namespace, token(args.db).replace("%", "="))
    schemas = {}
    parts = PartAssembler()   # messages over max_payload arrive in parts
    seq = args.from_seq
    deadline = time.time() + args.seconds if args.seconds else None
    while True:
        info = client.stream_info(stream)
        last = info["state"]["last_seq"] if info else 0
        while seq <= last:
            msg = client.stream_msg(stream, seq)
            seq += 1
            if msg is None:
                continue
            data = parts.add(msg.subject, msg.headers, msg.data)
            if data is None:
                continue
            fp = base64.urlsafe_b64encode(data[2:10]).decode()
            if fp not in schemas:
                reply = client.request(args.namespace + "._schemas", fp.encode(), 5)
                if reply is None:
                    print(json.dumps({"subject": msg.subject, "error": "unknown schema " + fp}), flush=True)
                    continue
                schemas[fp] = json.loads(reply)["schema"]
            rec = decode_single_object(data, schemas[fp])
            msg_id = msg.header("Nats-Msg-Id")
            if msg.header("Creek-Chunk"):
                msg_id = msg_id.rsplit(":", 1)[0]
            out = {"subject": msg.subject, "msg_id": msg_id, "op": rec["op"],
                   "before": plain(rec["before"]), "after": plain(rec["after"]),
                   "source": plain(rec["source"])}
            print(json.dumps(out, ensure_ascii=False), flush=True)
        if not args.follow or (deadline and time.time() > deadline):
            break
        time.sleep(0.2)
    client.close()


if __name__ == "__main__":
    main()
