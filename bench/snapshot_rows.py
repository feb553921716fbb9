#!/usr/bin/python3
"""Snapshot throughput and memory: one table of N rows (default 10 million,
4 columns), a creek.snapshot() of it on throwaway servers; prints rows per
second from the request to EOF stored in JetStream, and the snapshot worker's
peak resident memory (VmHWM).

    /usr/bin/python3 bench/snapshot_rows.py [rows]
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from servers import NatsServer, PgCluster  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000


def vm_hwm_kb(pid):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


with NatsServer() as n, PgCluster(conf={"creek.nats_url": n.url}) as pg:
    pg.psql("CREATE DATABASE bench")
    pg.psql("CREATE EXTENSION creek", db="bench")
    pg.psql("CREATE TABLE big (id int PRIMARY KEY, a text, b int, c timestamptz DEFAULT now())", db="bench")
    t0 = time.time()
    pg.psql("INSERT INTO big (id, a, b) SELECT g, 'row ' || g, g FROM generate_series(1, %d) g" % ROWS,
            db="bench", timeout=3600)
    pg.psql("ANALYZE big", db="bench", timeout=600)
    print("loaded %d rows in %.0f s" % (ROWS, time.time() - t0), flush=True)
    t0 = time.time()
    subject = pg.scalar("SELECT creek.snapshot('big')", db="bench")
    peak, state = 0, None
    while time.time() - t0 < 3600:
        pid = pg.scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'creek snapshot'", db="bench")
        if pid:
            peak = max(peak, vm_hwm_kb(pid) or 0)
        state = pg.scalar("SELECT state || ' ' || rows_sent || ' ' || coalesce(error, '') "
                          "FROM creek.pg_stat_creek_snapshots WHERE subject = '%s'" % subject, db="bench")
        if state.startswith(("finished", "failed")):
            break
        time.sleep(0.2)
    dt = time.time() - t0
    print("snapshot %s: %s in %.1f s: %.0f rows/s; worker peak RSS %.0f MB"
          % (subject, state, dt, ROWS / dt, peak / 1024.0))
