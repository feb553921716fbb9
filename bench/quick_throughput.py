#!/usr/bin/python3
"""A quick end-to-end figure, not the benchmark of issue 7: one 200,000-row
INSERT into a published 4-column table on a throwaway Postgres and
nats-server; prints the time from the INSERT's start until creek's slot is
confirmed past it (every message acknowledged by JetStream).

    bash scripts/build.sh && /usr/bin/python3 bench/quick_throughput.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from servers import NatsServer, PgCluster  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 200000

with NatsServer() as n, PgCluster(conf={"creek.nats_url": n.url}) as pg:
    pg.psql("CREATE DATABASE bench")
    pg.psql("CREATE EXTENSION creek", db="bench")
    pg.psql("CREATE TABLE big (id int PRIMARY KEY, a text, b int, c timestamptz DEFAULT now())", db="bench")
    pg.psql("SELECT creek.add_table('big')", db="bench")
    t0 = time.time()
    pg.psql("INSERT INTO big SELECT g, 'row ' || g, g FROM generate_series(1, %d) g" % ROWS, db="bench")
    end = pg.scalar("SELECT pg_current_wal_lsn()", db="bench")
    deadline = time.time() + 600
    while pg.scalar("SELECT confirmed_lsn >= '%s' FROM creek.pg_stat_creek "
                    "WHERE datname = 'bench'" % end, db="bench") != "t":
        if time.time() > deadline:
            sys.exit("not acknowledged within 600 s")
        time.sleep(0.05)
    dt = time.time() - t0
    print("%d rows committed and acknowledged in %.2f s: %.0f rows/s" % (ROWS, dt, ROWS / dt))
