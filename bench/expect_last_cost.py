#!/usr/bin/env python3
"""What the header Nats-Expected-Last-Msg-Id (creek's wal stream, 0.5.0)
costs nats-server: js_ceiling --mode eventloop with and without it,
alternately, on one throwaway nats-server and a file stream configured as
creek's wal stream (duplicate window 2 minutes).

    g++ -O2 -std=c++17 -Isrc -o /tmp/js_ceiling bench/js_ceiling.cpp src/nats_msg.cpp -lnats -ldl
    python3 bench/expect_last_cost.py --js-ceiling /tmp/js_ceiling [--rounds 3]

Prints msgs/s per run and the mean of each case."""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from natsclient import NatsClient  # noqa: E402
from servers import NatsServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--js-ceiling", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    nats = NatsServer()
    nats.start()
    try:
        nc = NatsClient(nats.url)
        res = {}
        run = 0
        for _ in range(args.rounds):
            for size, n in ((2031, 150000), (119, 300000)):
                for expect in (0, 1):
                    run += 1
                    nc.js_api("STREAM.DELETE.AB", None)
                    r = nc.js_api("STREAM.CREATE.AB", {"name": "AB", "subjects": ["AB.>"], "storage": "file",
                                                        "duplicate_window": 120 * 10**9})
                    if "error" in r:
                        raise SystemExit("cannot create the stream: %r" % r)
                    out = subprocess.run([args.js_ceiling, "--url", nats.url, "--subject", "AB.x",
                                          "--size", str(size), "--count", str(n), "--mode", "eventloop",
                                          "--max-pending", "4096", "--id-prefix", "0/%X" % (0x1000 + run),
                                          "--expect-last", str(expect)],
                                         capture_output=True, text=True, timeout=600)
                    j = json.loads(out.stdout.strip().splitlines()[-1])
                    res.setdefault((size, expect), []).append(j["msgs_per_s"])
                    print("%4d B %-22s %8.0f msgs/s %s" % (size, "with the header" if expect else "without",
                                                          j["msgs_per_s"], j["complete"]), flush=True)
        for (size, expect), v in sorted(res.items()):
            print("%4d B %-22s mean %8.0f msgs/s (%s)" % (size, "with the header" if expect else "without",
                                                          sum(v) / len(v), ", ".join("%.0f" % x for x in v)))
    finally:
        nats.stop()


if __name__ == "__main__":
    main()
