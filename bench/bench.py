#!/usr/bin/python3
"""creek's benchmark (issue 7). Run it through bench/run.sh, which builds the
JetStream ceiling publisher (bench/js_ceiling.cpp) and passes --js-ceiling.

On a throwaway nats-server and PostgreSQL 15 cluster (test/lib/servers.py) it
measures, in one run:

 1. the JetStream ceiling: js_ceiling publishes messages of creek's sizes
    asynchronously (MaxPending = creek.max_in_flight, and 1024) with
    Nats-Msg-Id headers into a file stream configured like creek's, with
    nats.c's js_PublishMsgAsync and the way creek publishes (an event loop,
    answers on one synchronous subscription); the faster is the ceiling;
 2. the decoding ceiling: a test_decoding slot created before each workload,
    drained with pg_logical_slot_get_changes after creek has acknowledged it;
 3. creek end to end: rows/s until creek.pg_stat_creek.confirmed_lsn passes
    the workload's commit, for narrow (4 columns) and wide (30 columns, ~2 KB)
    rows, one big transaction and many single-row transactions;
 4. commit-to-acknowledgement latency at a steady rate (pgbench -R): the
    stored time of each JetStream message minus the row's commit time
    (source.tx_at in the Avro message);
 5. pgbench TPC-B-like TPS without and with creek streaming the pgbench tables
    (and with creek decoding but publishing nothing, and with no creek but a
    plain publisher sending creek's message rate to nats-server);
 6. the creek worker's peak memory during the big transactions.

It writes report.md, chart.png and results.json to --out (default
bench/results, bench/results/quick with --quick) and prints a summary whose
last line is "bench quick: ok" / "bench full: ok".
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "lib"))
sys.path.insert(0, HERE)

from servers import NatsServer, PgCluster, PG_BIN, NATS_SERVER, cleanup_all, free_port  # noqa: E402
from natsclient import NatsClient  # noqa: E402
from pgwire import PgConn  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
from creek_helpers import read_stream  # noqa: E402  (a pull consumer; messages carry their stored time)
import avrocheck  # noqa: E402

DB = "bench"
TPCB_DB = "tpcb"
NAMESPACE = "CREEK"
WAL_STREAM = "%s_%s_wal" % (NAMESPACE, DB)
CEIL_STREAM = "BENCHCEIL"

FULL = dict(big_rows=1000000, small_txns=100000, ceiling_msgs=1000000,
            lat_rate=2000, lat_secs=20, lat_clients=4,
            tps_secs=30, tps_warmup=5, tps_scale=10, tps_clients=4, tps_rounds=2)
QUICK = dict(big_rows=50000, small_txns=5000, ceiling_msgs=50000,
             lat_rate=2000, lat_secs=5, lat_clients=4,
             tps_secs=5, tps_warmup=2, tps_scale=1, tps_clients=4, tps_rounds=1)

PHASES = ("ceiling", "workloads", "latency", "tps")

TARGETS = {
    "e2e_vs_js_ceiling": 0.70,
    "p99_ms": 20.0,
    "tps_ratio": 0.90,
    "worker_mem_mb": 256.0,
}

PG_CONF = {
    "shared_buffers": "256MB",
    "max_wal_size": "16GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "max_connections": 50,
    "log_min_messages": "warning",
}

OTHERS_WARN = 10.0   # % of the machine's CPU used by processes outside the benchmark

T0 = time.time()


class BenchError(RuntimeError):
    pass


def log(msg):
    sys.stdout.write("[%6.1fs] %s\n" % (time.time() - T0, msg))
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# tables and workloads

NARROW_COLS = "id bigint PRIMARY KEY, a text, b int, c timestamptz DEFAULT now()"
WIDE_COLS = ("id bigint PRIMARY KEY, i1 int, i2 int, i3 int, i4 int, i5 int, "
             "b1 bigint, b2 bigint, b3 bigint, ts timestamptz, amount numeric(12,2), flag boolean, "
             + ", ".join("t%02d text" % i for i in range(1, 19)))
TEXT_LEN = 102   # 18 text columns of 102 characters: a ~2 KB message, a heap tuple below TOAST's threshold


def narrow_values(g):
    return "%s, 'row ' || %s, (%s %% 2000000000)::int" % (g, g, g)


def wide_values(g, s):
    """30 values from the bigint expression g and s, a 128-character text."""
    vals = [g, "(%s %% 1000)::int" % g, "(%s %% 7)::int" % g, "(%s %% 2000000000)::int" % g,
            "(%s * 3 %% 2000000000)::int" % g, "(-%s %% 2000000000)::int" % g,
            "%s * 100000" % g, "%s * 7" % g, "-%s" % g, "now()", "(%s * 1.01)::numeric(12,2)" % g,
            "%s %% 2 = 0" % g]
    vals += ["substr(%s, %d, %d)" % (s, i, TEXT_LEN) for i in range(1, 19)]
    assert len(vals) == 30
    return ", ".join(vals)


def big_insert_sql(kind, table, first, last):
    if kind == "narrow":
        return ("INSERT INTO %s (id, a, b) SELECT %s FROM generate_series(%d::bigint, %d) g"
                % (table, narrow_values("g"), first, last))
    return ("INSERT INTO %s SELECT %s FROM (SELECT g, repeat(md5(g::text), 4) AS s "
            "FROM generate_series(%d::bigint, %d) g) x" % (table, wide_values("g", "s"), first, last))


SETUP_SQL = """
CREATE TABLE narrow_big ({narrow}) WITH (autovacuum_enabled = off);
CREATE TABLE narrow_small ({narrow}) WITH (autovacuum_enabled = off);
CREATE TABLE wide_big ({wide}) WITH (autovacuum_enabled = off);
CREATE TABLE wide_small ({wide}) WITH (autovacuum_enabled = off);
CREATE TABLE lat (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, a text, b int,
                  c timestamptz DEFAULT now()) WITH (autovacuum_enabled = off);
CREATE PROCEDURE bench_small_narrow(p_first bigint, p_last bigint) LANGUAGE plpgsql AS $$
DECLARE g bigint := p_first;
BEGIN
  WHILE g <= p_last LOOP
    INSERT INTO narrow_small (id, a, b) VALUES ({nvals});
    COMMIT;
    g := g + 1;
  END LOOP;
END $$;
CREATE PROCEDURE bench_small_wide(p_first bigint, p_last bigint) LANGUAGE plpgsql AS $$
DECLARE g bigint := p_first; s text;
BEGIN
  WHILE g <= p_last LOOP
    s := repeat(md5(g::text), 4);
    INSERT INTO wide_small VALUES ({wvals});
    COMMIT;
    g := g + 1;
  END LOOP;
END $$;
""".format(narrow=NARROW_COLS, wide=WIDE_COLS, nvals=narrow_values("g"), wvals=wide_values("g", "s"))


# ---------------------------------------------------------------------------
# /proc

def per_msg_us(j):
    """nats-server CPU µs per message of a js_ceiling run, as text."""
    return "%.1f" % (1e6 * j["nats_cpu_s"] / j["acked"]) if j.get("nats_cpu_s") and j.get("acked") else "-"


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmPeak", "VmSize"):
                    out[k] = int(v.split()[0]) * 1024
                elif k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class MemSampler(threading.Thread):
    """Samples VmRSS / RssAnon of a process every `interval` seconds."""

    def __init__(self, pid, interval=0.02):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.max_rss = 0
        self.max_anon = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            st = proc_status(self.pid)
            if st:
                self.samples += 1
                self.max_rss = max(self.max_rss, st.get("VmRSS", 0))
                self.max_anon = max(self.max_anon, st.get("RssAnon", 0))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)


class CpuAudit:
    """CPU time used on the machine during an interval, split between the
    benchmark's processes (this process and its descendants, the postmaster and
    its children, nats-server) and the others. Processes that start and exit
    within the interval are missed; /proc/stat's machine-wide busy time is not."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, roots, worker_pid=None):
        self.roots = roots      # callable: pids whose process trees are ours
        self.worker_pid = worker_pid

    def label(self, pid, comm):
        if pid == self.worker_pid:
            return "creek worker"
        if comm in ("nats-server", "js_ceiling", "pg_recvlogical"):
            return comm
        if comm.startswith("python"):
            return "bench.py"
        return "postgres"   # backends (and pgbench, psql) 

    @staticmethod
    def machine_busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice
        return sum(v[:8]) - v[3] - v[4]

    @staticmethod
    def processes():
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    s = f.read()
            except OSError:
                continue
            comm = s[s.index("(") + 1:s.rindex(")")]
            fields = s.rsplit(")", 1)[1].split()
            # utime + stime + cutime + cstime: the time of reaped children counts too (a build's
            # short-lived compilers show up in make's cutime, exited backends in the postmaster's)
            out[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), comm, int(fields[19]))
        return out

    def ours(self, procs):
        children = {}
        for pid, (ppid, _, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo = [p for p in set(self.roots()) | {os.getpid()} if p]
        seen = set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            todo.extend(children.get(p, []))
        return seen

    def start(self):
        self.t0 = time.time()
        self.busy0 = self.machine_busy()
        self.p0 = self.processes()
        return self

    def stop(self):
        wall = max(time.time() - self.t0, 1e-6)
        busy = self.machine_busy() - self.busy0
        p1 = self.processes()
        ours = self.ours(p1) | self.ours(self.p0)
        others = {}
        ours_ticks = 0
        kernel_ticks = 0
        by = {}
        for pid, (ppid, ticks, comm, started) in p1.items():
            old = self.p0.get(pid)
            d = ticks - (old[1] if old and old[3] == started else 0)
            if d <= 0:
                continue
            if pid in ours:
                ours_ticks += d
                lab = self.label(pid, comm)
                by[lab] = by.get(lab, 0) + d
            elif pid == 2 or ppid == 2:   # kernel threads (writeback of our files, mostly)
                kernel_ticks += d
            else:
                others[comm] = others.get(comm, 0) + d
        cap = wall * self.TICK * (os.cpu_count() or 1)
        # (a child reaped within the interval brings all its lifetime: never more than the machine did)
        other_ticks = min(sum(others.values()), max(busy - kernel_ticks, 0))
        # Processes that exited within the interval (pgbench and its backends, psql) are
        # not in p1: the benchmark's share is what the machine did minus the others.
        bench_ticks = max(busy - other_ticks - kernel_ticks, ours_ticks)
        by["postgres"] = by.get("postgres", 0) + (bench_ticks - ours_ticks)
        return {
            "wall_s": wall,
            "machine_busy_pct": 100.0 * busy / cap,
            "bench_pct": 100.0 * bench_ticks / cap,
            "kernel_threads_pct": 100.0 * kernel_ticks / cap,
            "bench_by_process": {k: round(100.0 * v / cap, 1) for k, v in sorted(by.items(), key=lambda x: -x[1])},
            "others_pct": 100.0 * other_ticks / cap,
            "others_top": sorted(((c, round(100.0 * t / cap, 1)) for c, t in others.items()),
                                 key=lambda x: -x[1])[:5],
        }


def short_symbol(sym, width=110):
    """A C++ symbol without its template arguments, cut to width."""
    prev = None
    while prev != sym:
        prev = sym
        sym = re.sub(r"<[^<>]*>", "", sym)
    return sym if len(sym) <= width else sym[:width - 3] + "..."


def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def mb(b):
    return None if b is None else b / (1024.0 * 1024.0)


# ---------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.cfg = dict(QUICK if args.quick else FULL)
        for k in self.cfg:
            v = getattr(args, k, None)
            if v is not None:
                self.cfg[k] = v
        self.mode = "quick" if args.quick else "full"
        self.out = args.out
        self.report_path = args.report or os.path.join(self.out, "report.md")
        self.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        for p in self.phases:
            if p not in PHASES:
                raise BenchError("unknown phase %r (phases: %s)" % (p, ", ".join(PHASES)))
        self.tmp = tempfile.mkdtemp(prefix="creek-bench-")
        self.retries = args.retries if args.retries is not None else (0 if args.quick else 1)
        self.next_id = {}
        self.r = {"mode": self.mode, "config": self.cfg, "targets": TARGETS,
                  "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        self.nats = None
        self.pg = None
        self.conn = None
        self.nc = None

    # -- servers --------------------------------------------------------
    def start(self):
        log("starting nats-server and PostgreSQL")
        self.nats_store = tempfile.mkdtemp(prefix="creek-bench-nats-", dir=self.args.nats_store) \
            if self.args.nats_store else None
        self.nats = NatsServer(store_dir=self.nats_store)
        self.nats.start()
        conf = dict(PG_CONF)
        conf["creek.nats_url"] = self.nats.url
        for kv in self.args.pg_conf or []:
            k, _, v = kv.partition("=")
            conf[k.strip()] = v
        self.pg_conf = conf
        self.pg = PgCluster(conf=conf)
        self.pg.start()
        self.pg.psql("CREATE DATABASE %s" % DB)
        self.conn = PgConn(self.pg.port, DB, timeout=1800, appname="creek-bench")
        self.conn.query("CREATE EXTENSION creek")
        self.conn.query(SETUP_SQL)
        for t in ("narrow_big", "narrow_small", "wide_big", "wide_small", "lat"):
            self.conn.query("SELECT creek.add_table('%s')" % t)
        self.nc = NatsClient(self.nats.url, timeout=10)
        self.wait_streaming(DB)
        self.max_in_flight = int(self.conn.scalar("SHOW creek.max_in_flight"))
        self.r["logical_decoding_work_mem"] = self.conn.scalar("SHOW logical_decoding_work_mem")
        self.r["environment"] = self.environment()

    def stop(self):
        for c in (self.conn, self.nc):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
        cleanup_all()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if getattr(self, "nats_store", None):
            shutil.rmtree(self.nats_store, ignore_errors=True)

    def environment(self):
        def cmd(args):
            try:
                return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      timeout=20).stdout.decode(errors="replace").strip()
            except Exception as e:
                return "(%s)" % e
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        try:
            with open("/proc/meminfo") as f:
                mem_kb = int(f.readline().split()[1])
        except (OSError, ValueError, IndexError):
            mem_kb = 0
        so = os.path.join(cmd([os.path.join(PG_BIN, "pg_config"), "--pkglibdir"]), "creek.so")
        so_info = "?"
        try:
            h = hashlib.sha256()
            with open(so, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            so_info = "%s (sha256 %s, installed %s)" % (so, h.hexdigest()[:12], datetime.datetime.fromtimestamp(
                os.path.getmtime(so), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        except OSError:
            pass
        git = cmd(["git", "-C", ROOT, "log", "-1", "--format=%h %s"])
        dirty = cmd(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Makefile", "creek--0.1.0.sql"])
        return {
            "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024.0 / 1024.0, 1),
            "kernel": platform.release(),
            "postgres": self.conn.scalar("SELECT version()"),
            "nats_server": cmd([NATS_SERVER, "--version"]),
            "libnats": cmd(["dpkg-query", "-W", "-f=${Version}", "libnats-dev"]),
            "creek_git": git + (" (src/ has uncommitted changes)" if dirty else ""),
            "creek_so": so_info,
            "max_in_flight": self.max_in_flight,
            "pg_conf": {k: v for k, v in self.pg_conf.items() if k != "creek.nats_url"},
            "pg_conf_servers_py": {k: PgCluster.DEFAULTS[k] for k in ("fsync", "synchronous_commit")},
            "nats_store": self.args.nats_store,
        }

    # -- helpers --------------------------------------------------------
    def audit_start(self, worker_pid=None):
        return CpuAudit(lambda: [self.pg.postmaster_pid() if self.pg else None,
                                 self.nats.pid if self.nats else None], worker_pid).start()

    def with_retries(self, fn, retries=None):
        """Runs one measurement (fn calls audit_stop); measures again, up to
        --retries times, when other processes used more than OTHERS_WARN% of
        the CPU during it. The result (a dict) gets others_pct."""
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            n0 = len(self.r.get("interference", []))
            res = fn()
            audits = self.r.get("interference", [])[n0:]
            noisy = [a for a in audits if a["others_pct"] > OTHERS_WARN]
            if isinstance(res, dict):
                res["others_pct"] = max([a["others_pct"] for a in audits] or [0.0])
            if not noisy or attempt == retries:
                return res
            for a in audits:
                a["discarded"] = True
            log("  other processes disturbed this measurement: waiting for a quiet machine, then measuring "
                "again (%d/%d)" % (attempt + 1, retries))
            wait_idle(120)
        return res

    def alloc_ids(self, table, n):
        first = self.next_id.get(table, 1)
        self.next_id[table] = first + n
        return first

    def audit_stop(self, audit, what):
        r = audit.stop()
        r["what"] = what
        self.r.setdefault("interference", []).append(r)
        if r["others_pct"] > OTHERS_WARN:
            log("  warning: other processes used %.0f%% of the machine's CPU during this measurement (%s)"
                % (r["others_pct"], ", ".join("%s %.0f%%" % x for x in r["others_top"])))
        return r

    def wait_streaming(self, db, timeout=60):
        deadline = time.time() + timeout
        with PgConn(self.pg.port, db, timeout=1800, appname="creek-bench") as c:
            while True:
                st = c.query("SELECT state, nats_state FROM creek.pg_stat_creek WHERE datname = current_database()")
                if st and st[0] == ("streaming", "connected"):
                    return
                if time.time() > deadline:
                    raise BenchError("creek's worker for %s is not streaming after %ss: %r" % (db, timeout, st))
                time.sleep(0.05)

    def worker_pid(self, db=DB):
        # (creek's view: the worker that has claimed the database, once it has)
        with PgConn(self.pg.port, db, timeout=1800, appname="creek-bench") as c:
            pid = c.scalar("SELECT pid FROM creek.pg_stat_creek WHERE datname = current_database()")
        return int(pid) if pid else None

    def flush_lsn(self, conn=None):
        return (conn or self.conn).scalar("SELECT pg_current_wal_flush_lsn()")

    def wait_confirmed(self, lsn, timeout, conn=None, what="workload"):
        """Polls (every 5 ms) until creek's confirmed_lsn >= lsn; returns time.time() then."""
        c = conn or self.conn
        sql = ("SELECT confirmed_lsn >= '%s'::pg_lsn FROM creek.pg_stat_creek "
               "WHERE datname = current_database()" % lsn)
        deadline = time.time() + timeout
        while True:
            if c.scalar(sql) == "t":
                return time.time()
            if time.time() > deadline:
                st = c.query("SELECT state, nats_state, confirmed_lsn, last_decoded_lsn, messages_in_flight, "
                             "last_error FROM creek.pg_stat_creek WHERE datname = current_database()")
                raise BenchError("creek did not acknowledge the %s (up to %s) within %ss: %r"
                                 % (what, lsn, timeout, st))
            time.sleep(0.005)

    def table_stats(self, conn=None):
        rows = (conn or self.conn).query(
            "SELECT relname, inserts + updates + deletes + truncates, bytes FROM creek.pg_stat_creek_tables "
            "WHERE datname = current_database()")
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def creek_counters(self, conn=None):
        r = (conn or self.conn).query("SELECT messages_published, bytes_published FROM creek.pg_stat_creek "
                                      "WHERE datname = current_database()")
        return (int(r[0][0]), int(r[0][1])) if r else (0, 0)

    def run(self, args, timeout, what):
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode != 0:
            raise BenchError("%s failed (%d): %s%s" % (what, r.returncode, r.stdout.decode(errors="replace")[-2000:],
                                                       r.stderr.decode(errors="replace")[-2000:]))
        return r.stdout.decode(errors="replace")

    def pgbench(self, args, db, timeout):
        env_args = [os.path.join(PG_BIN, "pgbench"), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "postgres"]
        return self.run(env_args + args + [db], timeout, "pgbench " + " ".join(args))

    # -- 0. message sizes (and warm-up) -----------------------------------
    def probe_sizes(self):
        log("warm-up and message sizes (2,000 rows per table)")
        before = self.table_stats()
        for kind in ("narrow", "wide"):
            self.conn.query(big_insert_sql(kind, kind + "_big", -2000, -1))
        self.wait_confirmed(self.flush_lsn(), 120, what="warm-up")
        after = self.table_stats()
        sizes = {}
        for kind in ("narrow", "wide"):
            t = kind + "_big"
            n = after[t][0] - before.get(t, (0, 0))[0]
            b = after[t][1] - before.get(t, (0, 0))[1]
            if n <= 0:
                raise BenchError("creek published nothing for %s (table stats %r)" % (t, after))
            sizes[kind] = int(round(b / float(n)))
        self.sizes = sizes
        self.r["message_bytes"] = sizes
        log("creek's messages: narrow %d bytes, wide %d bytes (Avro payload)" % (sizes["narrow"], sizes["wide"]))

    # -- 1. JetStream ceiling ---------------------------------------------
    def ceiling_stream_base(self):
        """The configuration of creek's stream, for the ceiling's streams."""
        info = self.nc.stream_info(WAL_STREAM)
        if info is None:
            raise BenchError("creek's stream %s does not exist" % WAL_STREAM)
        return dict(info["config"])

    def phase_ceiling(self):
        base = self.ceiling_stream_base()
        runs = [("async", self.max_in_flight), ("eventloop", self.max_in_flight)]
        if self.max_in_flight != 1024:
            runs.append(("async", 1024))
        res = []
        for kind in ("narrow", "wide"):
            for mode, mp in runs:
                res.append(self.with_retries(lambda: self.one_ceiling(base, kind, mp, mode),
                                             retries=self.retries * 3))
        self.nc.delete_stream(CEIL_STREAM)
        self.r["js_ceiling"] = res

    def fresh_ceiling_stream(self, base):
        """A new, empty CEIL_STREAM configured as base; a message id prefix no
        earlier js_ceiling run used."""
        self.nc.delete_stream(CEIL_STREAM)
        cr = self.nc.create_stream(dict(base, name=CEIL_STREAM, subjects=[CEIL_STREAM + ".>"]))
        if cr is None or "error" in cr:
            raise BenchError("cannot create stream %s: %r" % (CEIL_STREAM, cr))
        self.ceiling_runs = getattr(self, "ceiling_runs", 0) + 1
        return "0/%X" % (0x1A2B3C4D + self.ceiling_runs)

    def one_ceiling(self, base, kind, mp, mode="async", n=None, when=""):
        n = n or self.cfg["ceiling_msgs"]
        id_prefix = self.fresh_ceiling_stream(base)
        audit = self.audit_start()
        ncpu0 = proc_cpu_seconds(self.nats.pid)
        out = self.run([self.args.js_ceiling, "--url", self.nats.url,
                        "--subject", "%s.%s.wal.public.%s_big" % (CEIL_STREAM, DB, kind),
                        "--size", str(self.sizes[kind]), "--count", str(n),
                        "--max-pending", str(mp), "--ack-timeout-ms", "5000", "--mode", mode,
                        "--id-prefix", id_prefix],
                       900, "js_ceiling")
        j = json.loads(out.strip().splitlines()[-1])
        ncpu1 = proc_cpu_seconds(self.nats.pid)
        j["kind"] = kind
        j["nats_cpu_s"] = None if ncpu0 is None or ncpu1 is None else ncpu1 - ncpu0
        self.audit_stop(audit, "JetStream ceiling%s, %s, %s, MaxPending %d" % (when, kind, mode, mp))
        log("%sJetStream ceiling%s, %s (%d B), %s, MaxPending %d: %.0f msgs/s (%.1f MB/s), "
            "nats-server %s µs/msg" % ("  " if when else "", when, kind, j["size"], mode, mp,
                                       j["msgs_per_s"], j["mb_per_s"], per_msg_us(j)))
        return j

    def ceiling_runs_of(self, kind, mp=None):
        mp = mp or self.max_in_flight
        return [j for j in self.r.get("js_ceiling", []) if j["kind"] == kind and j["max_pending"] == mp]

    @staticmethod
    def ceiling_after_insert(w):
        """JetStream's rate right after the workload's insert (None: not measured)."""
        j = (w.get("backlog") or {}).get("js_ceiling_after_insert")
        return j["msgs_per_s"] if j else None

    def js_ceiling(self, kind, mp=None):
        """The faster publishing mode at creek's in-flight window."""
        runs = self.ceiling_runs_of(kind, mp)
        return max(j["msgs_per_s"] for j in runs) if runs else None

    # -- 2, 3, 6. workloads ---------------------------------------------
    def phase_workloads(self):
        res = []
        for kind in ("narrow", "wide"):
            for shape in ("big", "small"):
                w = {"kind": kind, "shape": shape, "table": "%s_%s" % (kind, shape)}
                rows = self.cfg["big_rows"] if shape == "big" else self.cfg["small_txns"]
                w["rows"] = rows
                w["label"] = ("%s rows, 1 transaction of %d rows" % (kind, rows) if shape == "big"
                              else "%s rows, %d single-row transactions" % (kind, rows))
                w["live"] = self.with_retries(lambda: self.run_live(w, self.alloc_ids(w["table"], rows)))
                w["backlog"] = self.with_retries(lambda: self.run_backlog(w, self.alloc_ids(w["table"], rows)))
                # creek's own rate, comparable with the ceilings (creek alone on the machine):
                # one big transaction: from its commit (before it nothing may be published:
                # creek decodes the streamed changes into its spool); single-row transactions: draining a backlog written while creek
                # could not reach NATS (live, creek shares the CPU with the workload).
                w["creek_rows_per_s"] = (w["live"]["rows_per_s_commit_to_ack"] if shape == "big"
                                         else w["backlog"]["rows_per_s"])
                w["creek_rate_source"] = "live, commit to ack" if shape == "big" else "backlog drain"
                res.append(w)
        self.r["workloads"] = res

    def workload_sql(self, w, first):
        last = first + w["rows"] - 1
        if w["shape"] == "big":
            return big_insert_sql(w["kind"], w["table"], first, last)
        return "CALL bench_small_%s(%d, %d)" % (w["kind"], first, last)

    def start_workload(self, w, kind):
        """Logs, checkpoints and waits until creek has acknowledged everything
        before; returns rows, label, table and the session."""
        log("workload, %s: %s" % (kind, w["label"]))
        self.conn.query("CHECKPOINT")
        os.sync()
        self.wait_confirmed(self.flush_lsn(), 60, what="previous work")
        # JetStream takes messages more slowly into a stream that already holds
        # gigabytes (measured: 2 KB messages, 66,000/s into an empty file
        # stream, 40,000/s once it holds 1 million): every run, creek's and
        # the ceiling's, publishes into an empty stream
        if self.nc.purge_stream(WAL_STREAM) is None:
            raise BenchError("cannot purge stream %s" % WAL_STREAM)
        return w["rows"], w["label"], w["table"], self.conn

    def end_measure(self, sampler, pid, stats0, table, rows, label):
        """Stops the memory sampler; the worker's status, CPU seconds of the
        worker and nats-server, and the messages and bytes published (one per row)."""
        sampler.stop()
        st = proc_status(pid)
        cpu1, ncpu1 = proc_cpu_seconds(pid), proc_cpu_seconds(self.nats.pid)
        msgs, nbytes = self.published_since(stats0, table)
        if msgs != rows:
            raise BenchError("%s: creek published %d messages for %d rows" % (label, msgs, rows))
        return st, cpu1, ncpu1, msgs, nbytes

    def run_live(self, w, first):
        """creek streaming while the workload runs: rows/s until acknowledged."""
        rows, label, table, c = self.start_workload(w, "live")
        pid = self.worker_pid()
        if pid is None:
            raise BenchError("no creek worker in creek.pg_stat_creek")
        stats0 = self.table_stats()
        cpu0, ncpu0 = proc_cpu_seconds(pid), proc_cpu_seconds(self.nats.pid)
        sampler = MemSampler(pid)
        sampler.start()
        perf = self.perf_start(pid, table) if self.args.perf and w["shape"] == "big" else None
        audit = self.audit_start(pid)
        t0 = time.time()
        c.query(self.workload_sql(w, first))
        t1 = time.time()
        end = self.flush_lsn()
        t2 = self.wait_confirmed(end, max(600, rows / 500.0), what=label)
        self.audit_stop(audit, "live: " + label)
        perf_out = self.perf_stop(perf, table) if perf else None
        st, cpu1, ncpu1, msgs, nbytes = self.end_measure(sampler, pid, stats0, table, rows, label)
        if self.worker_pid() != pid:
            raise BenchError("%s: creek's worker restarted during the workload" % label)
        r = {
            "insert_s": t1 - t0, "ack_after_commit_s": t2 - t1, "total_s": t2 - t0,
            "rows_per_s_start_to_ack": rows / (t2 - t0),
            "rows_per_s_commit_to_ack": rows / (t2 - t1) if w["shape"] == "big" else None,
            "workload_rows_per_s": rows / (t1 - t0),
            "msg_bytes": nbytes / float(msgs),
            "worker_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "nats_cpu_s": None if ncpu0 is None or ncpu1 is None else ncpu1 - ncpu0,
            "mem_peak_rss": sampler.max_rss, "mem_peak_anon": sampler.max_anon,
            "mem_hwm": st.get("VmHWM"), "mem_samples": sampler.samples, "worker_pid": pid,
        }
        if perf_out:
            r["perf"] = perf_out
        log("  insert %.2fs, acknowledged %.2fs after commit: %.0f rows/s from the start%s; "
            "worker peak RSS %.0f MB (anon %.0f MB); worker CPU %.1fs, nats-server CPU %.1fs"
            % (r["insert_s"], r["ack_after_commit_s"], r["rows_per_s_start_to_ack"],
               ", %.0f rows/s from the commit" % r["rows_per_s_commit_to_ack"] if r["rows_per_s_commit_to_ack"] else "",
               mb(r["mem_peak_rss"]), mb(r["mem_peak_anon"]), r["worker_cpu_s"] or 0, r["nats_cpu_s"] or 0))
        return r

    def published_since(self, stats0, table):
        stats1 = self.table_stats()
        return (stats1[table][0] - stats0.get(table, (0, 0))[0],
                stats1[table][1] - stats0.get(table, (0, 0))[1])

    def worker_state(self):
        r = self.conn.query("SELECT a.pid, extract(epoch FROM a.backend_start), s.state, s.nats_state "
                            "FROM pg_stat_activity a LEFT JOIN creek.pg_stat_creek s ON s.pid = a.pid "
                            "WHERE a.backend_type = 'creek worker' AND a.datname = current_database()")
        return r[0] if r else None

    def wait_worker(self, old_pid, want_state, timeout=60):
        """Waits for a worker other than old_pid in want_state; returns its row."""
        deadline = time.time() + timeout
        while True:
            r = self.worker_state()
            if r and int(r[0]) != old_pid and (want_state is None or r[2] == want_state):
                return r
            if time.time() > deadline:
                raise BenchError("no new creek worker (%s) within %ss: %r" % (want_state or "any state", timeout, r))
            time.sleep(0.005)

    def run_backlog(self, w, first):
        """The workload written while creek cannot reach NATS (creek.nats_url
        points at a closed port), then creek reconnected: rows/s from the new
        worker's start until acknowledged, creek alone on the machine. The
        test_decoding slot reads the same WAL, drained afterwards."""
        rows, label, table, c = self.start_workload(w, "backlog")
        old = self.worker_state()
        dead = "nats://127.0.0.1:%d" % free_port()
        c.query("ALTER SYSTEM SET creek.nats_url = '%s'" % dead)
        c.query("SELECT pg_reload_conf()")
        parked = self.wait_worker(int(old[0]) if old else -1, "waiting for NATS")
        c.query("SELECT pg_create_logical_replication_slot('bench_td', 'test_decoding')")
        stats0 = self.table_stats()
        audit = self.audit_start()
        t0 = time.time()
        c.query(self.workload_sql(w, first))
        t1 = time.time()
        end = self.flush_lsn()
        # The machine right after this insert (Postgres' dirty heap and WAL
        # being written back) stores messages more slowly than a quiet one:
        # the ceiling of a big transaction's publishing is measured here too,
        # with creek idle, before creek drains the backlog.
        after_insert = None
        if w["shape"] == "big":
            after_insert = self.one_ceiling(self.ceiling_stream_base(), w["kind"], self.max_in_flight,
                                            "eventloop", n=rows, when=" right after the insert")
            self.nc.delete_stream(CEIL_STREAM)
        c.query("ALTER SYSTEM RESET creek.nats_url")
        c.query("SELECT pg_reload_conf()")
        t_reload = time.time()
        new = self.wait_worker(int(parked[0]), None)
        pid, t_up = int(new[0]), float(new[1])
        sampler = MemSampler(pid)
        sampler.start()
        cpu0, ncpu0 = proc_cpu_seconds(pid), proc_cpu_seconds(self.nats.pid)
        t2 = self.wait_confirmed(end, max(600, rows / 500.0), what=label + " (backlog)")
        st, cpu1, ncpu1, msgs, nbytes = self.end_measure(sampler, pid, stats0, table, rows,
                                                         label + " (backlog)")
        # decoding ceiling: the same WAL through test_decoding, creek idle
        c.query("CHECKPOINT")
        d0 = time.time()
        n = int(c.scalar("SELECT count(*) FROM pg_logical_slot_get_changes('bench_td', NULL, NULL, "
                         "'skip-empty-xacts', '1', 'include-xids', '0') WHERE data LIKE 'table public.%s:%%'" % table))
        d1 = time.time()
        c.query("SELECT pg_drop_replication_slot('bench_td')")
        self.audit_stop(audit, "backlog and test_decoding: " + label)
        if n != rows:
            raise BenchError("%s: test_decoding returned %d row changes, expected %d" % (label, n, rows))
        r = {
            "insert_s": t1 - t0, "worker_restart_s": t_up - t_reload, "drain_s": t2 - t_up,
            "rows_per_s": rows / (t2 - t_up), "msg_bytes": nbytes / float(msgs),
            "worker_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "nats_cpu_s": None if ncpu0 is None or ncpu1 is None else ncpu1 - ncpu0,
            "mem_peak_rss": sampler.max_rss, "mem_peak_anon": sampler.max_anon, "mem_hwm": st.get("VmHWM"),
            "test_decoding_s": d1 - d0, "test_decoding_rows_per_s": rows / (d1 - d0),
            "js_ceiling_after_insert": after_insert,
        }
        log("  written in %.2fs without creek; new worker drained it in %.2fs: %.0f rows/s (VmHWM %.0f MB); "
            "test_decoding drained it in %.2fs: %.0f rows/s"
            % (r["insert_s"], r["drain_s"], r["rows_per_s"], mb(r["mem_hwm"] or 0),
               r["test_decoding_s"], r["test_decoding_rows_per_s"]))
        return r

    def perf_start(self, pid, name):
        data = os.path.join(self.tmp, "perf-%s.data" % name)
        p = subprocess.Popen(["perf", "record", "-g", "-F", "499", "-p", str(pid), "-o", data],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return p, data

    def perf_stop(self, perf, name):
        p, data = perf
        interrupt(p, 60)
        return self.perf_report(data, name)

    def perf_report(self, data, name):
        os.makedirs(self.out, exist_ok=True)
        outs = {}
        for mode, extra in (("self", ["--no-children"]), ("children", ["--children"])):
            path = os.path.join(self.out, "perf-%s-%s.txt" % (name, mode))
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.5",
                                "-g", "none", "--sort", "dso,sym"] + extra,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
            with open(path, "wb") as f:
                f.write(r.stdout)
            outs[mode] = os.path.relpath(path, self.out)
            if mode == "self":
                top = []
                for line in r.stdout.decode(errors="replace").splitlines():
                    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.kH]\]\s+(.*)", line)
                    if m:
                        top.append((float(m.group(1)), m.group(2), short_symbol(m.group(3).strip())))
                outs["top_self"] = top[:15]
        # samples per thread: the worker's main thread vs nats.c's threads
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", "pid"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=300)
        threads = []
        for line in r.stdout.decode(errors="replace").splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\d+):", line)
            if m:
                threads.append((int(m.group(2)), float(m.group(1))))
        outs["threads"] = threads[:6]
        return outs

    # -- 4. latency -------------------------------------------------------
    def phase_latency(self):
        rate, secs, clients = self.cfg["lat_rate"], self.cfg["lat_secs"], self.cfg["lat_clients"]
        log("latency: pgbench -R %d for %d s, single-row inserts" % (rate, secs))
        c = self.conn
        # the gigabytes the workloads left in creek's stream and in the page cache must not
        # be flushed during this measurement (nats-server syncs its files every 2 minutes)
        self.nc.purge_stream(WAL_STREAM)
        c.query("CHECKPOINT")
        os.sync()
        c.query("INSERT INTO lat (a, b) VALUES ('warm-up', 0)")
        self.wait_confirmed(self.flush_lsn(), 60, what="warm-up row")
        start_seq = self.nc.stream_info(WAL_STREAM)["state"]["last_seq"] + 1
        script = os.path.join(self.tmp, "lat.sql")
        with open(script, "w") as f:
            self.lat_attempt = getattr(self, "lat_attempt", 0) + 1
            tag = "row-%d" % self.lat_attempt
            f.write("INSERT INTO lat (a, b) VALUES ('%s', :client_id);\n" % tag)
        os.chmod(self.tmp, 0o755)
        os.chmod(script, 0o644)
        pid = self.worker_pid()
        cpu0 = proc_cpu_seconds(pid)
        ctx0 = proc_status(pid).get("voluntary_ctxt_switches")
        audit = self.audit_start(pid)
        out = self.pgbench(["-n", "-f", script, "-R", str(rate), "-T", str(secs), "-c", str(clients),
                            "-j", str(min(2, clients))], DB, secs + 120)
        end = self.flush_lsn()
        self.wait_confirmed(end, 120, what="latency workload")
        self.audit_stop(audit, "latency")
        cpu1 = proc_cpu_seconds(pid)
        ctx1 = proc_status(pid).get("voluntary_ctxt_switches")
        subject = "%s.%s.wal.public.lat" % (NAMESPACE, DB)
        msgs = read_stream(self.nc, WAL_STREAM, start_seq, subject, timeout=300)
        lat = []
        commits = []
        schemas = {}
        for m in msgs:
            fp = base64.urlsafe_b64encode(m.data[2:10]).decode()
            if fp not in schemas:
                schemas[fp] = c.scalar("SELECT schema_json FROM creek.schemas WHERE fingerprint = '%s' LIMIT 1" % fp)
                if schemas[fp] is None:
                    raise BenchError("no schema %s in creek.schemas" % fp)
            rec = avrocheck.decode_single_object(m.data, schemas[fp], raw=True)
            tx_at_us = rec["source"]["tx_at"]
            lat.append((m.ts_ns / 1000.0 - tx_at_us) / 1000.0)
            commits.append(tx_at_us / 1e6)
        tps = re.search(r"tps = ([\d.]+)", out)
        n_expected = int(c.scalar("SELECT count(*) FROM lat WHERE a = '%s'" % tag))
        if len(lat) != n_expected:
            raise BenchError("latency: %d messages in the stream for %d rows" % (len(lat), n_expected))
        s = sorted(lat)
        res = {"rate": rate, "seconds": secs, "clients": clients, "messages": len(s),
               "achieved_rows_per_s": float(tps.group(1)) if tps else None,
               "p50_ms": pct(s, 50), "p90_ms": pct(s, 90), "p99_ms": pct(s, 99), "p999_ms": pct(s, 99.9),
               "max_ms": s[-1], "min_ms": s[0], "mean_ms": sum(s) / len(s),
               "worker_cpu_pct": None if cpu0 is None or cpu1 is None else 100.0 * (cpu1 - cpu0) / secs}
        # where the slow ones are: per second of the run, the count, p99 and max
        t_first = min(commits)
        per_s = {}
        for t, v in zip(commits, lat):
            per_s.setdefault(int(t - t_first), []).append(v)
        res["per_second"] = [[k, len(v), round(pct(sorted(v), 99), 2), round(max(v), 2)]
                             for k, v in sorted(per_s.items())]
        res["slow_ms_threshold"] = 10.0
        res["slow_count"] = sum(1 for v in lat if v > 10.0)
        res["worker_wakeups_per_s"] = None if ctx0 is None or ctx1 is None else (ctx1 - ctx0) / secs
        self.r["latency"] = res
        log("  %d messages at %.0f rows/s: p50 %.2f ms, p99 %.2f ms, max %.2f ms"
            % (len(s), res["achieved_rows_per_s"] or 0, res["p50_ms"], res["p99_ms"], res["max_ms"]))
        return res

    # -- 5. pgbench TPS ---------------------------------------------------
    def phase_tps(self):
        cfg = self.cfg
        # the "nats-only" runs publish into a stream configured as creek's
        self.load_stream_base = self.ceiling_stream_base()
        self.ack_every = int(self.conn.scalar("SHOW creek.ack_every"))
        # (it sends what is due every creek.batch_delay, at least every millisecond, as the worker does)
        bd = re.match(r"(\d+)\s*(ms|s)?$", self.conn.scalar("SHOW creek.batch_delay").strip())
        self.batch_delay_ms = int(bd.group(1)) * (1000 if bd.group(2) == "s" else 1) if bd else 5
        # no other creek worker may decode the WAL during this phase
        self.conn.query("DROP EXTENSION creek")
        self.wait_no_worker(DB)
        self.conn.close()
        self.conn = None
        for st in self.nc.stream_names():
            if st.startswith("%s_%s_" % (NAMESPACE, DB)):
                self.nc.delete_stream(st)
        self.pg.psql("CREATE DATABASE %s" % TPCB_DB)
        # "nats-only" (right after "with": it replays that run's message rate) needs no creek
        conditions = ["without", "with", "nats-only"] + (["decode-only", "pg_recvlogical"]
                                                        if not self.args.quick else [])
        if self.args.tps_conditions:
            conditions = [x for x in conditions if x in self.args.tps_conditions.split(",")]
        runs = []
        self.r_tps_runs = []   # every run so far, retried ones too (nats-only reads "with"'s rate)
        for rnd in range(cfg["tps_rounds"]):
            for cond in conditions:
                runs.append(self.with_retries(lambda: self.tps_run(cond, rnd)))
        self.r["tps_runs"] = runs
        summ = {}
        for cond in conditions:
            v = [r["tps"] for r in runs if r["condition"] == cond]
            summ[cond] = sum(v) / len(v)
        self.r["tps"] = summ
        log("  TPS: " + ", ".join("%s %.0f" % (k, v) for k, v in summ.items()))

    def wait_no_walsender(self, c, timeout=30):
        deadline = time.time() + timeout
        while c.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_rl' AND active") != "0":
            if time.time() > deadline:
                raise BenchError("pg_recvlogical's walsender still active after %ss" % timeout)
            time.sleep(0.05)

    def wait_no_worker(self, db, timeout=60):
        deadline = time.time() + timeout
        with PgConn(self.pg.port, "postgres", timeout=1800, appname="creek-bench") as c:
            while True:
                n = c.scalar("SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'creek worker' "
                             "AND datname = '%s') + (SELECT count(*) FROM pg_replication_slots WHERE database = '%s')"
                             % (db, db))
                if n == "0":
                    return
                if time.time() > deadline:
                    raise BenchError("creek's worker or slot for %s still there %ss after DROP EXTENSION" % (db, timeout))
                time.sleep(0.1)

    @staticmethod
    def cond_label(cond):
        return cond if cond in ("pg_recvlogical", "nats-only") else cond + " creek"

    def start_nats_load(self, rnd):
        """nats-only: a plain nats.c publisher (js_ceiling --rate) sends, during the
        measured pgbench run, as many messages per second as creek published in this
        round's "with" run, of the same mean size, with a reply on one in ack_every,
        in one burst every creek.batch_delay, into a stream configured as creek's.
        No creek: what JetStream's own work at creek's message rate costs pgbench
        on this machine."""
        w = [x for x in self.r_tps_runs if x["condition"] == "with" and x["round"] == rnd + 1][-1]
        rate, size = w["messages_per_s"], w["message_bytes"]
        secs = self.cfg["tps_secs"]
        id_prefix = self.fresh_ceiling_stream(self.load_stream_base)
        args = [self.args.js_ceiling, "--url", self.nats.url, "--subject", "%s.%s.wal.public.pgbench" % (
                    CEIL_STREAM, TPCB_DB), "--size", str(size), "--count", str(max(int(rate * secs), 1)),
                "--rate", "%.1f" % rate, "--tick-ms", str(max(1, self.batch_delay_ms)),
                "--ack-every", str(self.ack_every), "--mode", "eventloop",
                "--max-pending", str(self.max_in_flight), "--id-prefix", id_prefix]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def end_nats_load(proc, timeout):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError("js_ceiling --rate failed (%s): %s%s" % (proc.returncode, out.decode(errors="replace"),
                                                                       err.decode(errors="replace")))
        return json.loads(out.decode().strip().splitlines()[-1])

    def tps_run(self, cond, rnd):
        cfg = self.cfg
        log("pgbench TPC-B-like, %s (round %d): init scale %d" % (self.cond_label(cond), rnd + 1, cfg["tps_scale"]))
        self.pgbench(["-i", "-q", "-s", str(cfg["tps_scale"])], TPCB_DB, 900)
        with PgConn(self.pg.port, TPCB_DB, timeout=1800, appname="creek-bench") as c:
            pid = None
            if cond in ("with", "decode-only"):
                c.query("CREATE EXTENSION creek")
                if cond == "with":
                    for t in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
                        c.query("SELECT creek.add_table('%s')" % t)
                self.wait_streaming(TPCB_DB)
                pid = self.worker_pid(TPCB_DB)
            # Same starting point for every run: fresh tables, vacuumed, checkpointed, in
            # shared_buffers (pgbench -i loads them through a ring buffer: without this the
            # first seconds of a run read them in and TPS climbs for ~10 s), and a short
            # warm-up run (with creek streaming already, for "with").
            c.query("VACUUM ANALYZE")
            c.query("CHECKPOINT")
            os.sync()
            c.query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            c.query("SELECT pg_prewarm(c.oid) FROM pg_class c WHERE c.relname LIKE 'pgbench%' AND c.relkind IN ('r', 'i')")
            recv = None
            if cond == "pg_recvlogical":
                # the reference: Postgres' own logical decoding consumer (walsender + test_decoding)
                c.query("SELECT pg_create_logical_replication_slot('bench_rl', 'test_decoding')")
                recv = subprocess.Popen([os.path.join(PG_BIN, "pg_recvlogical"), "-h", "127.0.0.1", "-p",
                                         str(self.pg.port), "-U", "postgres", "-d", TPCB_DB, "-S", "bench_rl",
                                         "--start", "-f", "/dev/null"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.pgbench(["-n", "-c", str(cfg["tps_clients"]), "-j", "2", "-T", str(cfg["tps_warmup"])], TPCB_DB, 300)
            if recv is not None and recv.poll() is not None:
                raise BenchError("pg_recvlogical exited: %s" % recv.stderr.read().decode(errors="replace"))
            if pid:
                self.wait_confirmed(self.flush_lsn(c), 300, conn=c, what="pgbench warm-up")
            cpu0 = proc_cpu_seconds(pid) if pid else None
            ctx0 = proc_status(pid).get("voluntary_ctxt_switches") if pid else None
            ncpu0 = proc_cpu_seconds(self.nats.pid)
            stats0 = self.creek_counters(c) if cond == "with" else None
            load = self.start_nats_load(rnd) if cond == "nats-only" else None
            audit = self.audit_start(pid)
            t0 = time.time()
            out = self.pgbench(["-n", "-c", str(cfg["tps_clients"]), "-j", "2", "-T", str(cfg["tps_secs"])],
                               TPCB_DB, cfg["tps_secs"] + 300)
            t1 = time.time()
            ctx1 = proc_status(pid).get("voluntary_ctxt_switches") if pid else None
            # (before js_ceiling is reaped: its CPU would count as bench.py's children)
            run_audit = self.audit_stop(audit, "pgbench %s, round %d" % (self.cond_label(cond), rnd + 1))
            load_result = self.end_nats_load(load, 120) if load is not None else None
            if recv is not None:
                interrupt(recv, 30)
                self.wait_no_walsender(c)
                c.query("SELECT pg_drop_replication_slot('bench_rl')")
            m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
            if not m:
                raise BenchError("no tps in pgbench's output:\n" + out)
            lat = re.search(r"latency average = ([\d.]+) ms", out)
            run = {"condition": cond, "round": rnd + 1, "tps": float(m.group(1)),
                   "cpu": run_audit["bench_by_process"], "machine_busy_pct": run_audit["machine_busy_pct"],
                   "latency_avg_ms": float(lat.group(1)) if lat else None,
                   "transactions": int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))}
            if pid:
                end = self.flush_lsn(c)
                t2 = self.wait_confirmed(end, 600, conn=c, what="pgbench run")
                cpu1 = proc_cpu_seconds(pid)
                run["catch_up_s"] = t2 - t1
                run["worker_cpu_pct"] = None if cpu0 is None or cpu1 is None else 100.0 * (cpu1 - cpu0) / (t1 - t0)
                run["worker_wakeups_per_s"] = None if ctx0 is None or ctx1 is None else (ctx1 - ctx0) / (t1 - t0)
                if cond == "with":
                    run["messages"] = sum(v[0] for v in self.table_stats(c).values())
                    # what this run published (the warm-up's messages were acknowledged before it)
                    m1, b1 = self.creek_counters(c)
                    run["messages_per_s"] = (m1 - stats0[0]) / (t1 - t0)
                    run["message_bytes"] = int(round((b1 - stats0[1]) / float(max(m1 - stats0[0], 1))))
                c.query("DROP EXTENSION creek")
            if load_result is not None:
                run["nats_load"] = load_result
                self.nc.delete_stream(CEIL_STREAM)
            ncpu1 = proc_cpu_seconds(self.nats.pid)
            run["nats_cpu_pct"] = None if ncpu0 is None or ncpu1 is None else 100.0 * (ncpu1 - ncpu0) / (t1 - t0)
        if pid:
            self.wait_no_worker(TPCB_DB)
        log("  %.0f TPS%s%s" % (run["tps"], "" if not pid else ", creek caught up %.2fs after the run, worker CPU %.0f%%"
                                % (run["catch_up_s"], run["worker_cpu_pct"] or 0),
                                "" if not load_result else ", a plain publisher sent %d messages of %d B at %.0f/s"
                                % (load_result["acked"], load_result["size"], load_result["rate"])))
        self.r_tps_runs.append(run)
        return run

    # -- report -----------------------------------------------------------
    @staticmethod
    def disturbed(*measurements):
        """' (disturbed: ...)' when other processes used the CPU during one of them."""
        worst = max([m.get("others_pct", 0.0) for m in measurements if m] or [0.0])
        if worst > OTHERS_WARN:
            return " (unreliable: other processes used %.0f%% of the CPU during it)" % worst
        return ""

    def verdicts(self):
        v = []
        for w in self.r.get("workloads", []):
            ceil = self.js_ceiling(w["kind"])
            if ceil:
                ratio = w["creek_rows_per_s"] / ceil
                j = self.ceiling_runs_of(w["kind"])
                src = w["live"] if w["shape"] == "big" else w["backlog"]
                v.append(("creek / JetStream ceiling: %s (%s)" % (w["label"], w["creek_rate_source"]),
                          "%.0f / %.0f = %.0f%%%s" % (w["creek_rows_per_s"], ceil, 100 * ratio,
                                                      self.disturbed(src, *j)),
                          ">= %.0f%%" % (100 * TARGETS["e2e_vs_js_ceiling"]), ratio >= TARGETS["e2e_vs_js_ceiling"]))
            after = self.ceiling_after_insert(w)
            if after:
                ratio = w["creek_rows_per_s"] / after
                v.append(("creek / JetStream ceiling right after the same insert: %s (%s)"
                          % (w["label"], w["creek_rate_source"]),
                          "%.0f / %.0f = %.0f%%%s" % (w["creek_rows_per_s"], after, 100 * ratio,
                                                      self.disturbed(w["live"], w["backlog"])),
                          ">= %.0f%%" % (100 * TARGETS["e2e_vs_js_ceiling"]), ratio >= TARGETS["e2e_vs_js_ceiling"]))
        if "latency" in self.r:
            p99 = self.r["latency"]["p99_ms"]
            v.append(("commit-to-ack p99 at %d rows/s" % self.r["latency"]["rate"],
                      "%.2f ms%s" % (p99, self.disturbed(self.r["latency"])),
                      "< %.0f ms" % TARGETS["p99_ms"], p99 < TARGETS["p99_ms"]))
        if "tps" in self.r:
            t = self.r["tps"]
            ratio = t["with"] / t["without"]
            runs = [x for x in self.r["tps_runs"] if x["condition"] in ("with", "without")]
            v.append(("pgbench TPS with creek / without", "%.0f / %.0f = %.1f%%%s" % (
                t["with"], t["without"], 100 * ratio, self.disturbed(*runs)),
                      ">= %.0f%%" % (100 * TARGETS["tps_ratio"]), ratio >= TARGETS["tps_ratio"]))
        peak = self.peak_memory()
        if peak:
            v.append(("creek worker peak memory (VmHWM) in the 1-transaction workloads", "%.0f MB" % mb(peak),
                      "< %.0f MB" % TARGETS["worker_mem_mb"], mb(peak) < TARGETS["worker_mem_mb"]))
        return v

    def peak_memory(self):
        vals = []
        for w in self.r.get("workloads", []):
            if w["shape"] == "big":
                for run in (w["live"], w["backlog"]):
                    vals += [run["mem_hwm"] or 0, run["mem_peak_rss"] or 0]
        return max(vals) if vals else None

    def collect_server_log(self):
        """creek's warnings and notable log lines from the Postgres log, with their phase: a resend after
        an ack timeout or a reconnect explains a slow figure. The backlog phases cut NATS on purpose."""
        if self.pg is None:
            return
        rx = re.compile(r"^(\S+ \S+) \S+ \[\d+\] \S* ?(WARNING|LOG|ERROR|FATAL):\s+(.*)$")
        keep = []
        for line in self.pg.log().splitlines():
            m = rx.match(line)
            if not m or not (m.group(3).startswith("creek") or "signal" in m.group(3)) or \
                    "replication slot" in m.group(3) or "to apply new settings" in m.group(3):
                continue
            keep.append({"at": m.group(1), "level": m.group(2), "text": m.group(3)[:300]})
        self.r["server_log"] = keep[:200]
        self.r["server_log_lines"] = len(keep)

    def write_outputs(self):
        self.collect_server_log()
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(os.path.dirname(os.path.abspath(self.report_path)), exist_ok=True)
        self.r["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.r["duration_s"] = round(time.time() - T0, 1)
        self.r["verdicts"] = [{"what": a, "value": b, "target": c, "met": d} for a, b, c, d in self.verdicts()]
        chart = os.path.join(os.path.dirname(os.path.abspath(self.report_path)), "chart.png")
        self.chart(chart)
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(self.r, f, indent=1, default=str)
            f.write("\n")
        with open(self.report_path, "w") as f:
            f.write(self.markdown(os.path.basename(chart)))
        log("wrote %s, %s and %s" % (self.report_path, chart, os.path.join(self.out, "results.json")))

    @staticmethod
    def short(w):
        return "%s %s" % (w["kind"], "1 txn" if w["shape"] == "big" else "1-row txns")

    def chart_rows(self):
        rows = []  # (label, ratio, target or 0)
        for w in self.r.get("workloads", []):
            ceil = self.js_ceiling(w["kind"])
            if ceil:
                rows.append(("creek/JetStream\\n%s" % self.short(w), w["creek_rows_per_s"] / ceil,
                             TARGETS["e2e_vs_js_ceiling"]))
            after = self.ceiling_after_insert(w)
            if after:
                rows.append(("creek/JetStream after\\nthe insert, %s" % self.short(w), w["creek_rows_per_s"] / after,
                             TARGETS["e2e_vs_js_ceiling"]))
        for w in self.r.get("workloads", []):
            b = w["backlog"]
            rows.append(("creek/test_decoding\\n%s" % self.short(w), b["rows_per_s"] / b["test_decoding_rows_per_s"], 0))
        t = self.r.get("tps")
        if t:
            rows.append(("TPS with/without\\ncreek", t["with"] / t["without"], TARGETS["tps_ratio"]))
            if "nats-only" in t:
                rows.append(("TPS nats-only\\n/without creek", t["nats-only"] / t["without"], 0))
            if "decode-only" in t:
                rows.append(("TPS decode-only\\n/without creek", t["decode-only"] / t["without"], 0))
            if "pg_recvlogical" in t:
                rows.append(("TPS pg_recvlogical\\n/without creek", t["pg_recvlogical"] / t["without"], 0))
        return rows

    def chart(self, path):
        rows = self.chart_rows()
        if not rows:
            return
        dat = os.path.join(self.tmp, "chart.dat")
        with open(dat, "w") as f:
            for i, (lab, ratio, target) in enumerate(rows):
                lab = lab.replace("_", "\\\\_")   # gnuplot's enhanced text: no subscripts
                f.write('%d "%s" %.4f %s\n' % (i, lab, ratio, ("%.4f" % target) if target else "NaN"))
        ymax = 100 * max(1.2, max(r[1] for r in rows) * 1.15)
        gp = os.path.join(self.tmp, "chart.gp")
        with open(gp, "w") as f:
            f.write("""set terminal pngcairo size 1500,640 font "sans,10"
set output "{out}"
set title "creek benchmark ({mode}): creek's rate as a percentage of the ceilings, and pgbench TPS with/without creek (red dots: targets)"
set style fill solid 0.8 border -1
set boxwidth 0.6
set bmargin 5
set yrange [0:{ymax}]
set xrange [-0.6:{xmax}]
set ylabel "percent"
set grid ytics
set key off
set xtics font ",8"
plot "{dat}" using 1:($3*100):xtic(2) with boxes lc rgb "#4477aa", \\
     "" using 1:($3*100):(sprintf("%.0f%%", $3*100)) with labels offset 0,0.8, \\
     "" using 1:($4*100) with points pt 7 ps 1.6 lc rgb "#cc3311", \\
     100 with lines dt 2 lc rgb "#666666"
""".format(out=path, mode=self.mode, ymax=ymax, xmax=len(rows) - 0.4, dat=dat))
        self.run(["gnuplot", gp], 60, "gnuplot")

    def markdown(self, chart_name):
        r = self.r
        env = r.get("environment", {})
        L = []
        a = L.append
        a("# creek benchmark (%s mode)\n" % self.mode)
        a("Generated by `bash bench/run.sh%s` on %s in %.0f s. Every figure is from one run on "
          "throwaway local servers (`test/lib/servers.py`): noisy, especially on a %s-core machine where "
          "Postgres, creek's worker, nats-server and the load generator share the CPUs.\n"
          % (" --quick" if self.mode == "quick" else "", r["started_at"], r["duration_s"], env.get("cores", "?")))
        a("## Targets\n")
        a("| what | measured | target | met |")
        a("|---|---|---|---|")
        for v in r["verdicts"]:
            a("| %s | %s | %s | %s |" % (v["what"], v["value"], v["target"], "yes" if v["met"] else "**no**"))
        a("")
        noisy = [x for x in r.get("interference", []) if x["others_pct"] > OTHERS_WARN and not x.get("discarded")]
        if noisy:
            a("**Warning: other processes used more than %.0f%% of the machine's CPU during %d of the %d "
              "measurements** (see \"Other load on the machine\"): those figures are lower than this machine "
              "can do.\n" % (OTHERS_WARN, len(noisy), len([x for x in r["interference"] if not x.get("discarded")])))
        a("![ratios](%s)\n" % chart_name)
        if r.get("workloads"):
            a("## Throughput\n")
            a("Rows per second until JetStream has acknowledged every row (creek's `confirmed_lsn` past the "
              "workload's commit). **live**: creek streams while the workload runs; **backlog**: the workload "
              "is written while creek cannot reach NATS, then creek reconnects and drains it alone (from the new "
              "worker's start); the test_decoding slot drains the same WAL afterwards.\n")
            a("| workload | msg bytes | live: from start | live: from commit | backlog drain | "
              "JetStream ceiling msgs/s | creek / JS ceiling | test_decoding | backlog / test_decoding |")
            a("|---|---|---|---|---|---|---|---|---|")
            for w in r["workloads"]:
                lv, bl = w["live"], w["backlog"]
                ceil = self.js_ceiling(w["kind"])
                a("| %s | %.0f | %.0f | %s | %.0f | %s | %s | %.0f | %.0f%% |" % (
                    w["label"], lv["msg_bytes"], lv["rows_per_s_start_to_ack"],
                    "%.0f" % lv["rows_per_s_commit_to_ack"] if lv["rows_per_s_commit_to_ack"] else "-",
                    bl["rows_per_s"], "%.0f" % ceil if ceil else "-",
                    "%.0f%% (%s)" % (100 * w["creek_rows_per_s"] / ceil, w["creek_rate_source"]) if ceil else "-",
                    bl["test_decoding_rows_per_s"], 100 * bl["rows_per_s"] / bl["test_decoding_rows_per_s"]))
            a("")
            a("Timings (seconds) and CPU (seconds of CPU time used by the process during the interval):\n")
            a("| workload | live: insert | live: ack after commit | live: worker CPU | live: nats-server CPU | "
              "backlog: insert (no creek) | backlog: worker restart | backlog: drain | backlog: worker CPU | "
              "backlog: nats-server CPU | backlog: nats-server CPU µs/msg | test_decoding drain |")
            a("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for w in r["workloads"]:
                lv, bl = w["live"], w["backlog"]
                a("| %s | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f |" % (
                    w["label"], lv["insert_s"], lv["ack_after_commit_s"], lv["worker_cpu_s"] or 0,
                    lv["nats_cpu_s"] or 0, bl["insert_s"], bl["worker_restart_s"], bl["drain_s"],
                    bl["worker_cpu_s"] or 0, bl["nats_cpu_s"] or 0, 1e6 * (bl["nats_cpu_s"] or 0) / w["rows"],
                    bl["test_decoding_s"]))
            a("")
        after = [w for w in r.get("workloads", []) if self.ceiling_after_insert(w)]
        if after:
            a("JetStream ceiling right after a big transaction's insert (js_ceiling, eventloop, MaxPending %d, "
              "as many messages as rows, run in the backlog workload after the insert commits, creek idle): "
              "the machine is writing back Postgres' new heap and WAL then, and JetStream stores messages "
              "more slowly than on a quiet machine.\n" % self.max_in_flight)
            a("| workload | msgs/s | nats-server CPU µs/msg | quiet ceiling msgs/s | creek live, from commit | "
              "creek / ceiling after insert |")
            a("|---|---|---|---|---|---|")
            for w in after:
                j = w["backlog"]["js_ceiling_after_insert"]
                ceil = self.js_ceiling(w["kind"])
                a("| %s | %.0f | %s | %s | %.0f | %.0f%% |" % (
                    w["label"], j["msgs_per_s"], per_msg_us(j), "%.0f" % ceil if ceil else "-",
                    w["creek_rows_per_s"], 100 * w["creek_rows_per_s"] / j["msgs_per_s"]))
            a("")
        if r.get("js_ceiling"):
            a("JetStream ceiling runs (js_ceiling, %d messages each, a new stream each time):\n" % self.cfg["ceiling_msgs"])
            a("| message | bytes | publisher | MaxPending | msgs/s | MB/s | seconds | nats-server CPU µs/msg |")
            a("|---|---|---|---|---|---|---|---|")
            for j in r["js_ceiling"]:
                a("| %s | %d | %s | %d | %.0f | %.1f | %.2f | %s |" % (
                    j["kind"], j["size"], j.get("mode", "async"), j["max_pending"], j["msgs_per_s"],
                    j["mb_per_s"], j["seconds"],
                    per_msg_us(j)))
            a("")
        if "latency" in r:
            l = r["latency"]
            a("## Commit-to-acknowledgement latency\n")
            a("pgbench `-R %d -T %d -c %d`, one single-row INSERT per transaction into a 4-column table; "
              "%d messages (achieved %.0f rows/s).\n" % (l["rate"], l["seconds"], l["clients"], l["messages"],
                                                         l["achieved_rows_per_s"] or 0))
            a("| p50 | p90 | p99 | p99.9 | max | mean | creek worker CPU | creek worker wake-ups/s |")
            a("|---|---|---|---|---|---|---|---|")
            a("| %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.0f%% of a core | %s |" % (
                l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"], l["mean_ms"], l["worker_cpu_pct"] or 0,
                "%.0f" % l["worker_wakeups_per_s"] if l.get("worker_wakeups_per_s") is not None else "-"))
            a("")
            if l.get("per_second"):
                a("%d messages (%.2f%%) took more than %.0f ms. Per second of the run (by commit time): "
                  "\n" % (l["slow_count"], 100.0 * l["slow_count"] / l["messages"],
                                                      l["slow_ms_threshold"]))
                a("| second | messages | p99 | max |")
                a("|---|---|---|---|")
                for x in l["per_second"]:
                    a("| %d | %d | %.1f ms | %.1f ms |" % tuple(x))
                a("")
        if "tps" in r:
            a("## pgbench TPC-B-like TPS\n")
            a("Scale %d, `-c %d -j 2 -T %d`, a fresh `pgbench -i` before every run, same cluster and settings. "
              "**without**: creek is preloaded but no database has the extension (no worker, no slot); "
              "**with**: `CREATE EXTENSION creek` and `creek.add_table()` of the four pgbench tables, the worker "
              "streaming to nats-server; **nats-only**: no creek, a plain nats.c publisher (`js_ceiling --rate`) "
              "sends, during the run, as many messages per second as creek published in that round's \"with\" "
              "run, of the same mean size, with a reply subject on one in `creek.ack_every`, what is due sent "
              "every `creek.batch_delay`, into a stream "
              "configured as creek's: what JetStream's own work at creek's message rate costs pgbench on this "
              "machine%s. The \"with\" vs \"without\" comparison charges creek with everything "
              "it costs: logical decoding of all WAL, encoding and publishing, and nats-server's work on the "
              "same machine.\n" % (
                  self.cfg["tps_scale"], self.cfg["tps_clients"], self.cfg["tps_secs"],
                  "; **decode-only**: the extension is installed, so its worker decodes every transaction, "
                  "but no table is published; **pg_recvlogical**: no creek, Postgres' own logical decoding "
                  "consumer instead (a walsender with test_decoding, `pg_recvlogical --start -f /dev/null`), "
                  "the cost of plain logical decoding on this machine" if "decode-only" in r["tps"] else ""))
            a("| run | condition | TPS | latency avg | creek caught up after the run | creek worker CPU | "
              "creek worker wake-ups/s | nats-server CPU |")
            a("|---|---|---|---|---|---|---|---|")
            for x in r["tps_runs"]:
                a("| %d | %s | %.0f | %.2f ms | %s | %s | %s | %.0f%% |" % (
                    x["round"], x["condition"], x["tps"], x["latency_avg_ms"] or 0,
                    "%.2f s" % x["catch_up_s"] if "catch_up_s" in x else "-",
                    "%.0f%% of a core" % x["worker_cpu_pct"] if x.get("worker_cpu_pct") is not None else "-",
                    "%.0f" % x["worker_wakeups_per_s"] if x.get("worker_wakeups_per_s") is not None else "-",
                    x["nats_cpu_pct"] or 0))
            a("")
            a("Where the CPU went during each run (percent of the whole machine, %s cores; \"postgres\" is every "
              "other process of the benchmark: backends, pgbench, checkpointer, walwriter...):\n" % env.get("cores", "?"))
            labs = []
            for x in r["tps_runs"]:
                for k in x.get("cpu", {}):
                    if k not in labs:
                        labs.append(k)
            a("| run | condition | machine busy | " + " | ".join(labs) + " |")
            a("|---|---|---|" + "---|" * len(labs))
            for x in r["tps_runs"]:
                a("| %d | %s | %.0f%% | " % (x["round"], x["condition"], x.get("machine_busy_pct", 0)) +
                  " | ".join("%.0f%%" % x.get("cpu", {}).get(k, 0) for k in labs) + " |")
            a("")
            a("Mean TPS: " + ", ".join("%s %.0f" % (k, v) for k, v in r["tps"].items()) +
              "; with/without %.1f%%%s.\n" % (
                  100 * r["tps"]["with"] / r["tps"]["without"],
                  "; nats-only/without %.1f%%, with/nats-only %.1f%%" % (
                      100 * r["tps"]["nats-only"] / r["tps"]["without"], 100 * r["tps"]["with"] / r["tps"]["nats-only"])
                  if "nats-only" in r["tps"] else ""))
            loads = [x for x in r["tps_runs"] if x.get("nats_load")]
            if loads:
                a("The nats-only runs' publisher: " + "; ".join(
                    "round %d: %d messages of %d B at %.0f/s, %d answers" % (
                        x["round"], x["nats_load"]["acked"], x["nats_load"]["size"], x["nats_load"]["rate"],
                        x["nats_load"]["answers"]) for x in loads) + ".\n")
        mems = [w for w in r.get("workloads", []) if w["shape"] == "big"]
        if mems:
            a("## creek worker memory\n")
            a("`/proc/<pid>/status` of the `creek worker` backend, sampled every 20 ms during each one-transaction "
              "workload (live: from before the INSERT until acknowledged; backlog: the new worker, from its start "
              "until acknowledged, so its VmHWM is that drain's peak). RSS includes the shared memory the worker "
              "touched; RssAnon is its private memory. `logical_decoding_work_mem` is %s (past it, Postgres streams "
              "the transaction to creek, which keeps the encoded changes in its spool file until the commit).\n" % r.get("logical_decoding_work_mem", "?"))
            a("| workload | run | peak VmRSS | peak RssAnon | VmHWM at the end |")
            a("|---|---|---|---|---|")
            for w in mems:
                for name in ("live", "backlog"):
                    x = w[name]
                    a("| %s | %s | %.0f MB | %.0f MB | %.0f MB |" % (w["label"], name, mb(x["mem_peak_rss"]),
                                                                  mb(x["mem_peak_anon"]), mb(x["mem_hwm"] or 0)))
            a("")
        profs = [w for w in r.get("workloads", []) if w["live"].get("perf")]
        if profs:
            a("## Profile of the creek worker (perf record -g, 499 Hz, live one-transaction runs)\n")
            for w in profs:
                p = w["live"]["perf"]
                a("%s, self time, top entries (full reports: `%s`, `%s`). Samples by thread: %s (the first "
                  "is the worker's main thread when it is %d, the others are nats.c's threads).\n" % (
                      w["label"], p["self"], p["children"],
                      ", ".join("%d: %.0f%%" % t for t in p.get("threads", [])), w["live"].get("worker_pid", 0)))
                a("| self % | object | symbol |")
                a("|---|---|---|")
                for pc, dso, sym in p["top_self"]:
                    a("| %.1f | %s | `%s` |" % (pc, dso, sym))
                a("")
        if r.get("interference"):
            a("## Other load on the machine\n")
            a("CPU time during each measurement, as a percentage of the whole machine (%s cores): the benchmark's "
              "processes (Postgres, nats-server, pgbench, js_ceiling, this script), kernel threads (mostly the "
              "writeback of the benchmark's own files) and every other process (with the time of the children "
              "it reaped: a build's compilers count under make).\n" % env.get("cores", "?"))
            a("| measurement | seconds | machine busy | benchmark | kernel threads | others | top others |")
            a("|---|---|---|---|---|---|---|")
            for x in r["interference"]:
                a("| %s%s | %.1f | %.0f%% | %.0f%% | %.0f%% | %s%.0f%%%s | %s |" % (
                    x["what"], " (discarded, measured again)" if x.get("discarded") else "", x["wall_s"], x["machine_busy_pct"], x["bench_pct"], x["kernel_threads_pct"],
                    "**" if x["others_pct"] > OTHERS_WARN else "", x["others_pct"],
                    "**" if x["others_pct"] > OTHERS_WARN else "",
                    ", ".join("%s %.0f%%" % y for y in x["others_top"]) or "-"))
            a("")
        if "server_log" in r:
            a("## creek in the server log\n")
            a("creek's WARNING, ERROR and LOG lines from the Postgres log during the run (%d lines; restarts to "
              "apply a new `creek.nats_url` left out). The backlog runs point creek at a closed port on purpose, so \"cannot reach NATS\" and \"reached NATS again\" are "
              "expected there; a resend after an acknowledgement timeout or an unexpected reconnect explains a "
              "slow figure.\n" % r.get("server_log_lines", 0))
            if r["server_log"]:
                a("```")
                for x in r["server_log"][:60]:
                    a("%s %s: %s" % (x["at"], x["level"], x["text"]))
                a("```")
            a("")
        a(self.method_text(env))
        a("## Environment\n")
        for k in ("cpu", "cores", "memory_gb", "kernel", "postgres", "nats_server", "libnats", "creek_git", "creek_so"):
            a("- %s: %s" % (k, env.get(k)))
        a("- sizes: " + ", ".join("%s=%s" % kv for kv in sorted(self.cfg.items())))
        a("")
        return "\n".join(L)

    def method_text(self, env):
        return """## Method

- **Servers**: one `nats-server -js` (file store in %s) and one PostgreSQL 15
  cluster from `test/lib/servers.py`, both on 127.0.0.1. servers.py sets `fsync = off` (throwaway
  cluster; commits still write WAL, nothing waits for the disk): the workloads are CPU-bound, the
  harshest case for creek's share of the CPU. `--pg-conf fsync=on` changes it, `--nats-store DIR`
  puts nats-server's store elsewhere. The bench adds: %s.
- **Message sizes**: 2,000 warm-up rows per table; creek's Avro payload bytes per message from
  `creek.pg_stat_creek_tables` (bytes / messages). Narrow: `%s`. Wide: 30 columns (id, 5 int,
  3 bigint, timestamptz, numeric, boolean, 18 text of %d characters), a heap tuple just below
  TOAST's threshold. These tables are insert-only and have autovacuum off, so that no background
  vacuum of gigabytes of rows disturbs the later phases.
- **JetStream ceiling** (`bench/js_ceiling.cpp`, nats.c): one connection publishes N messages of
  creek's size, each with a `Nats-Msg-Id` shaped like creek's, to a new stream with the
  configuration of creek's `%s` (file storage, 2-minute duplicate window); msgs/s from the first
  publish to the last acknowledgement. Two publishers: **async**, nats.c's `js_PublishMsgAsync`
  (MaxPending = `creek.max_in_flight` = %s, and 1024; StallWait 50 ms; MaxWait 5 s), and
  **eventloop**, the way creek publishes (the connection on the publisher's own epoll loop with
  `natsOptions_SetEventLoop` and SendAsap, plain publishes with a reply subject, JetStream's
  answers read from one synchronous subscription, at most `creek.max_in_flight` unanswered).
  The ceiling is the faster of the two at creek's window.
- **creek end to end**: until `creek.pg_stat_creek.confirmed_lsn` >= `pg_current_wal_flush_lsn()`
  read right after the workload (polled every 5 ms over one connection): the slot's confirmed
  position passes a transaction only when JetStream has acknowledged all its messages.
  One big transaction: one `INSERT ... SELECT generate_series`. Single-row transactions: a plpgsql
  procedure that COMMITs after each INSERT (the fastest way to make many commits here). In the
  *live* runs creek streams while the workload runs; single-row transactions are then bounded by
  the workload's own rate and share the CPUs with it. The *backlog* runs point `creek.nats_url` at
  a closed port (ALTER SYSTEM, reload: the worker restarts and waits for NATS), write the
  workload, restore the URL and time from the new worker's `backend_start` to the acknowledgement
  (including its start-up and connection). The figure compared with the JetStream ceiling is
  creek alone on the machine: live from the COMMIT for one big transaction (creek cannot send
  anything of it before), the backlog drain for single-row transactions.
- **Decoding ceiling**: a `test_decoding` slot created before each backlog workload, drained with
  `pg_logical_slot_get_changes(..., 'skip-empty-xacts', '1')` after creek has acknowledged the
  workload (they do not share the CPU); rows / drain time. Same WAL as creek's backlog drain, same
  `logical_decoding_work_mem` (past it, test_decoding's reorder buffer spills big transactions to
  disk and reads them back at the commit; creek's are streamed to it and spooled, already encoded).
- **Latency**: pgbench `-R` (Poisson arrivals) with single-row inserts. For each message: the time
  JetStream stored it (nanoseconds, from the reply subject of a pull consumer,
  `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`) minus `source.tx_at`,
  the commit time Postgres wrote in the commit record (decoded with python3-avro and the writer
  schema from `creek.schemas`). Same machine, same clock. JetStream stores a message right before
  it sends the acknowledgement, so this is commit-to-acknowledgement minus the ack's trip back.
- **pgbench**: before every measured run a fresh `pgbench -i`, `VACUUM ANALYZE`, `CHECKPOINT`,
  `pg_prewarm` of the pgbench tables and indexes (pgbench -i loads them through a ring buffer, and
  TPS otherwise climbs for the first ~10 s) and a short warm-up run with the condition already in
  place. Conditions alternate within each round. Wake-ups/s: voluntary context switches of the
  worker's main thread per second (creek's commit hook sets the worker's latch at every commit).
- **Memory**: `/proc/<pid>/status` of the backend whose `pg_stat_activity.backend_type` is
  `creek worker`.
- **Other load**: CPU time of every process (with its reaped children's) from `/proc` at the start and end of each measurement;
  a measurement during which other processes used more than %.0f%% of the machine is discarded and
  measured again once (`--retries`).
""" % ("a temporary directory under `%s`" % env["nats_store"] if env.get("nats_store") else "a temporary directory",
       ", ".join("`%s = %s`" % (k, v) for k, v in env.get("pg_conf", {}).items()),
       NARROW_COLS, TEXT_LEN, WAL_STREAM, env.get("max_in_flight", "?"), OTHERS_WARN)

    def summary(self):
        lines = ["", "== creek benchmark (%s) ==" % self.mode]
        for j in self.r.get("js_ceiling", []):
            lines.append("JetStream ceiling %-6s %5d B %-9s MaxPending %4d: %8.0f msgs/s"
                         % (j["kind"], j["size"], j.get("mode", "async"), j["max_pending"], j["msgs_per_s"]))
        for w in self.r.get("workloads", []):
            lv, bl = w["live"], w["backlog"]
            lines.append("%-42s live %7.0f rows/s%s  backlog %7.0f rows/s  test_decoding %7.0f rows/s"
                         % (w["label"], lv["rows_per_s_start_to_ack"],
                            " (%7.0f from commit)" % lv["rows_per_s_commit_to_ack"] if lv["rows_per_s_commit_to_ack"]
                            else " " * 20, bl["rows_per_s"], bl["test_decoding_rows_per_s"]))
        if "latency" in self.r:
            l = self.r["latency"]
            lines.append("latency at %d rows/s: p50 %.2f ms  p99 %.2f ms  max %.2f ms"
                         % (l["rate"], l["p50_ms"], l["p99_ms"], l["max_ms"]))
        if "tps" in self.r:
            lines.append("pgbench TPS: " + "  ".join("%s %.0f" % kv for kv in self.r["tps"].items()))
        if self.mode == "quick" and self.r.get("verdicts"):
            lines.append("(quick: small sizes, to check that the benchmark runs; measurements this short "
                         "are not judged against the targets, the full run is)")
        for v in self.r.get("verdicts", []):
            lines.append("target %-4s %s: %s (%s)" % ("met" if v["met"] else "MISS", v["what"], v["value"], v["target"]))
        odd = [x for x in self.r.get("server_log", []) if "resending" in x["text"] or x["level"] in ("ERROR", "FATAL")]
        for x in odd[:10]:
            lines.append("server log: %s %s: %s" % (x["at"], x["level"], x["text"][:160]))
        lines.append("report: %s" % self.report_path)
        print("\n".join(lines))
        sys.stdout.flush()


def interrupt(p, timeout):
    """SIGINT to a child process; SIGKILL when it has not exited in time."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


def wait_idle(limit):
    if limit <= 0:
        return
    deadline = time.time() + limit
    while True:
        a = CpuAudit(lambda: []).start()
        time.sleep(3)
        r = a.stop()
        if r["others_pct"] < OTHERS_WARN:
            log("the machine is quiet (other processes: %.0f%% of the CPU)" % r["others_pct"])
            return
        if time.time() > deadline:
            log("warning: other processes still use %.0f%% of the CPU (%s); starting anyway"
                % (r["others_pct"], ", ".join("%s %.0f%%" % x for x in r["others_top"])))
            return
        log("waiting for a quiet machine: other processes use %.0f%% of the CPU (%s)"
            % (r["others_pct"], ", ".join("%s %.0f%%" % x for x in r["others_top"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (~1-2 minutes), for CI")
    ap.add_argument("--out", help="output directory (default bench/results, or bench/results/quick)")
    ap.add_argument("--report", help="report path (default OUT/report.md; the chart goes next to it)")
    ap.add_argument("--js-ceiling", required=True, help="the js_ceiling binary (run.sh builds it)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    ap.add_argument("--perf", action="store_true", help="perf record the worker during the big transactions")
    ap.add_argument("--retries", type=int, help="measure again when other processes disturbed a measurement "
                    "(default 1, quick: 0)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for other processes to use < %.0f%%%% of the CPU" % OTHERS_WARN)
    ap.add_argument("--nats-store", metavar="DIR", help="nats-server's store directory (default: a new "
                    "directory under /tmp), e.g. on another disk than Postgres' WAL")
    ap.add_argument("--tps-conditions", metavar="LIST", help="pgbench conditions to run, a comma-separated "
                    "subset of without,with,nats-only,decode-only,pg_recvlogical (without and with are needed; "
                    "default: all, the first three with --quick)")
    ap.add_argument("--pg-conf", action="append", metavar="KEY=VALUE", help="extra postgresql.conf setting")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=int, dest=k, help="default %s (quick: %s)" % (v, QUICK[k]))
    args = ap.parse_args()
    if args.tps_conditions is not None:
        conds = args.tps_conditions.split(",")
        known = ("without", "with", "nats-only", "decode-only", "pg_recvlogical")
        if "without" not in conds or "with" not in conds or any(c not in known for c in conds):
            ap.error("--tps-conditions: a comma-separated subset of %s, with both without and with" % ",".join(known))
    if args.out is None:
        args.out = os.path.join(HERE, "results", "quick") if args.quick else os.path.join(HERE, "results")
    b = Bench(args)
    try:
        wait_idle(args.wait_idle)
        b.start()
        if "ceiling" in b.phases or "workloads" in b.phases:
            b.probe_sizes()
        if "ceiling" in b.phases:
            b.phase_ceiling()
        if "workloads" in b.phases:
            b.phase_workloads()
        if "latency" in b.phases:
            b.with_retries(b.phase_latency)
        if "tps" in b.phases:
            b.phase_tps()
        b.write_outputs()
        b.summary()
    finally:
        b.stop()
    print("bench %s: ok" % b.mode)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        sys.stderr.write("bench: %s\n" % e)
        sys.exit(1)
