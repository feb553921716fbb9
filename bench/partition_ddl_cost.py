#!/usr/bin/python3
"""What publishing the rows of a dropped partition costs (README,
"Partitioned tables"): on a throwaway Postgres and nats-server, DROP TABLE of
a partition of a published partitioned table (4 columns, a 2-column primary
key) holding N rows, with creek.publish_partition_ddl on and off; prints the
statement's duration, the WAL it wrote, and the messages creek published for
it and how soon.

    bash scripts/build.sh && /usr/bin/python3 bench/partition_ddl_cost.py [N ...]
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "lib"))
from servers import NatsServer, PgCluster  # noqa: E402

SIZES = [int(a) for a in sys.argv[1:]] or [60000, 1000000]

with NatsServer() as n, PgCluster(conf={"creek.nats_url": n.url}) as pg:
    pg.psql("CREATE DATABASE bench")
    pg.psql("CREATE EXTENSION creek", db="bench")

    def q(sql):
        return pg.scalar(sql, db="bench")

    def wait_caught_up():
        deadline = time.time() + 600
        while q("SELECT confirmed_lsn >= pg_current_wal_lsn() FROM creek.pg_stat_creek "
                "WHERE datname = 'bench'") != "t":
            if time.time() > deadline:
                sys.exit("creek did not catch up within 600 s")
            time.sleep(0.1)

    for rows in SIZES:
        for setting in ("on", "off"):
            pg.psql("DROP TABLE IF EXISTS f; "
                    "CREATE TABLE f (id int NOT NULL, at date NOT NULL, v text, c timestamptz DEFAULT now(), "
                    "PRIMARY KEY (id, at)) PARTITION BY RANGE (at); "
                    "CREATE TABLE f_1 PARTITION OF f FOR VALUES FROM ('2021-01-01') TO ('2022-01-01'); "
                    "CREATE TABLE f_2 PARTITION OF f FOR VALUES FROM ('2022-01-01') TO ('2023-01-01'); "
                    "SELECT creek.add_table('f')", db="bench")
            pg.psql("INSERT INTO f SELECT g, '2022-01-01', 'row ' || g FROM generate_series(1, %d) g" % rows,
                    db="bench")
            pg.psql("CHECKPOINT", db="bench")
            wait_caught_up()
            m0 = int(q("SELECT messages_published FROM creek.pg_stat_creek WHERE datname = 'bench'"))
            w0 = q("SELECT pg_current_wal_lsn()")
            t0 = time.time()
            pg.psql("SET creek.publish_partition_ddl = %s; DROP TABLE f_2" % setting, db="bench")
            dt = time.time() - t0
            wal = int(float(q("SELECT pg_current_wal_lsn() - '%s'" % w0)))
            t1 = time.time()
            wait_caught_up()
            m1 = int(q("SELECT messages_published FROM creek.pg_stat_creek WHERE datname = 'bench'"))
            print("DROP TABLE of a %d-row partition, creek.publish_partition_ddl %-3s: %.3f s, %.1f MB of WAL, "
                  "%d messages, all acknowledged %.1f s after the commit"
                  % (rows, setting, dt, wal / 1e6, m1 - m0, time.time() - t1))
            pg.psql("SELECT creek.remove_table('f')", db="bench")
