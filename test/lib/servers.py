#!/usr/bin/python3
"""Throwaway nats-server and PostgreSQL 15 clusters for creek tests.

Library:
    with NatsServer() as n, PgCluster(conf={"creek.nats_url": n.url}) as pg:
        pg.psql("select 1")

Everything binds 127.0.0.1 on free ports, lives in temp dirs and is cleaned up
at exit (atexit, SIGTERM) unless detached. Postgres runs as the `postgres` OS
user (through runuser when we are root).

CLI (used by the top-level runner for pg_regress / pgTAP):
    servers.py up   --state FILE [--pg-conf key=value ...] [--no-creek]
    servers.py down --state FILE
"""

import argparse
import atexit
import ctypes
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
NATS_SERVER = os.environ.get("NATS_SERVER", shutil.which("nats-server") or "/usr/sbin/nats-server")
PG_OS_USER = "postgres"
HOST = "127.0.0.1"

__all__ = ["NatsServer", "PgCluster", "PsqlError", "ServerError", "free_port",
           "wait_port", "cleanup_all"]


class ServerError(RuntimeError):
    pass


class PsqlError(RuntimeError):
    """psql failed; .stderr, .stdout, .returncode, .sql."""

    def __init__(self, sql, returncode, stdout, stderr):
        self.sql = sql
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__("psql exited %s: %s\n-- sql: %s" % (
            returncode, stderr.strip(), sql if len(sql) < 500 else sql[:500] + "..."))


# ---------------------------------------------------------------------------
# helpers

def free_port():
    """A free TCP port on 127.0.0.1 (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port, host=HOST):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port, timeout=10.0, proc=None, what="server"):
    """Wait (bounded) until 127.0.0.1:port accepts a connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError("%s exited with %s before accepting on port %d"
                              % (what, proc.returncode, port))
        if port_open(port):
            return
        time.sleep(0.05)
    raise ServerError("%s did not accept on port %d within %ss" % (what, port, timeout))


def _pdeathsig():
    """preexec_fn: the child gets SIGKILL when this process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def _pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _wait_pid_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                return True
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _tail(path, n=60):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log at %s)" % path


_registry = []
_registry_lock = threading.Lock()
_sigterm_installed = False


def _register(obj):
    global _sigterm_installed
    with _registry_lock:
        _registry.append(obj)
    if not _sigterm_installed and threading.current_thread() is threading.main_thread():
        _sigterm_installed = True
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                def _on_term(signum, frame):
                    raise SystemExit(128 + signum)
                signal.signal(signal.SIGTERM, _on_term)
        except (ValueError, OSError):
            pass


def _unregister(obj):
    with _registry_lock:
        if obj in _registry:
            _registry.remove(obj)


def cleanup_all():
    """Stop and remove everything started (and not detached) in this process."""
    with _registry_lock:
        objs = list(reversed(_registry))
    for o in objs:
        try:
            o.cleanup()
        except Exception as e:  # keep going
            sys.stderr.write("cleanup of %r failed: %s\n" % (o, e))


atexit.register(cleanup_all)


def _render_nats_conf(conf, indent=0):
    if isinstance(conf, str):
        return conf
    pad = "  " * indent
    out = []
    for k, v in conf.items():
        if isinstance(v, dict):
            out.append("%s%s {\n%s%s}\n" % (pad, k, _render_nats_conf(v, indent + 1), pad))
        elif isinstance(v, bool):
            out.append("%s%s: %s\n" % (pad, k, "true" if v else "false"))
        elif isinstance(v, (int, float)):
            out.append("%s%s: %s\n" % (pad, k, v))
        elif isinstance(v, (list, tuple)):
            out.append("%s%s: [%s]\n" % (pad, k, ", ".join(json.dumps(x) for x in v)))
        else:
            out.append("%s%s: %s\n" % (pad, k, json.dumps(str(v))))
    return "".join(out)


# ---------------------------------------------------------------------------
# NATS

class NatsServer:
    """nats-server with JetStream on 127.0.0.1.

    extra_conf: config text, or a dict rendered as a config file
    (e.g. {"max_payload": 65536}); passed with -c, command line flags win.
    """

    def __init__(self, port=None, store_dir=None, extra_conf=None, detach=False):
        self.port = port or free_port()
        self.base_dir = tempfile.mkdtemp(prefix="creek-nats-")
        self._own_store = store_dir is None
        self.store_dir = store_dir or os.path.join(self.base_dir, "store")
        os.makedirs(self.store_dir, exist_ok=True)
        self.extra_conf = extra_conf
        self.conf_file = None
        if extra_conf:
            self.conf_file = os.path.join(self.base_dir, "nats.conf")
            with open(self.conf_file, "w") as f:
                f.write(_render_nats_conf(extra_conf))
        self.log_file = os.path.join(self.base_dir, "nats.log")
        self.detach = detach
        self.proc = None
        self._cleaned = False
        if not detach:
            _register(self)

    @property
    def url(self):
        return "nats://%s:%d" % (HOST, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __repr__(self):
        return "NatsServer(%s, store=%s)" % (self.url, self.store_dir)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        cmd = [NATS_SERVER]
        if self.conf_file:
            cmd += ["-c", self.conf_file]
        cmd += ["-js", "-a", HOST, "-p", str(self.port), "-sd", self.store_dir]
        return cmd

    def start(self, timeout=10.0):
        if self.running():
            return self
        logf = open(self.log_file, "ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, close_fds=True,
                start_new_session=self.detach,
                preexec_fn=None if self.detach else _pdeathsig)
        finally:
            logf.close()
        try:
            wait_port(self.port, timeout, self.proc, "nats-server")
            self._wait_jetstream(timeout)
        except Exception as e:
            self.kill()
            raise ServerError("%s\n--- nats log:\n%s" % (e, _tail(self.log_file)))
        return self

    def _wait_jetstream(self, timeout):
        try:
            from natsclient import NatsClient
        except ImportError:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from natsclient import NatsClient
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with NatsClient(self.url, timeout=2) as c:
                    r = c.js_api("INFO", timeout=1)
                    if r is not None and "error" not in r:
                        return
                    last = r
            except Exception as e:
                last = e
            time.sleep(0.1)
        raise ServerError("JetStream not ready within %ss: %s" % (timeout, last))

    def stop(self, timeout=10.0):
        """Graceful stop (SIGTERM), SIGKILL after timeout."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def restart(self, kill=False, timeout=10.0):
        """Stop (or SIGKILL) and start again on the same port and store dir."""
        self.kill() if kill else self.stop()
        # the port is free once the process is gone (SO_REUSEADDR); be patient
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start(timeout)

    def log(self):
        try:
            with open(self.log_file, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        _unregister(self)

    def __enter__(self):
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()


# ---------------------------------------------------------------------------
# PostgreSQL

def _as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_OS_USER, "--"] + cmd
    return cmd


def _pg_conf_value(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'" + str(v).replace("\\", "\\\\").replace("'", "''") + "'"


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(s):
    return "'" + s.replace("'", "''") + "'"


class PgCluster:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:port.

    conf: extra postgresql.conf settings (a value None removes a default).
    creek: preload the creek library (shared_preload_libraries='creek')
    unless conf sets shared_preload_libraries itself.
    """

    DEFAULTS = {
        "listen_addresses": HOST,
        "wal_level": "logical",
        "max_replication_slots": 10,
        "max_wal_senders": 10,
        "max_worker_processes": 16,
        "fsync": "off",
        "synchronous_commit": "on",
        "log_line_prefix": "%m [%p] %q%a ",
        "log_min_messages": "info",
        "lc_messages": "C",
        "timezone": "UTC",
        "max_connections": 50,
        "shared_buffers": "32MB",
    }

    def __init__(self, port=None, conf=None, creek=True, detach=False, base_dir=None):
        self.port = port or free_port()
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="creek-pg-")
        os.makedirs(self.base_dir, exist_ok=True)
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "sock")
        self.log_file = os.path.join(self.base_dir, "postgresql.log")
        self.conf_file = os.path.join(self.data_dir, "creek_test.conf")
        self.settings = dict(self.DEFAULTS)
        self.settings["port"] = self.port
        self.settings["unix_socket_directories"] = self.socket_dir
        if creek:
            self.settings["shared_preload_libraries"] = "creek"
        for k, v in (conf or {}).items():
            self.settings[k] = v
        self.detach = detach
        self._initialized = False
        self._cleaned = False
        self.last_stderr = ""
        if not detach:
            _register(self)
        self._initdb()

    def __repr__(self):
        return "PgCluster(port=%d, dir=%s)" % (self.port, self.base_dir)

    # -- setup --------------------------------------------------------------
    def _run_pg(self, cmd, timeout=120, check=True):
        r = subprocess.run(_as_pg_user(cmd), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, cwd=self.base_dir)
        if check and r.returncode != 0:
            raise ServerError("%s failed (%d):\n%s%s\n--- log:\n%s" % (
                " ".join(cmd), r.returncode, r.stdout.decode(errors="replace"),
                r.stderr.decode(errors="replace"), _tail(self.log_file)))
        return r

    def _initdb(self):
        os.makedirs(self.socket_dir, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_OS_USER)
            for d in (self.base_dir, self.socket_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base_dir, 0o755)
        self._run_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data_dir, "-A", "trust",
                      "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C",
                      "--no-instructions"])
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as f:
            f.write("\n# creek tests\ninclude_if_exists = 'creek_test.conf'\n")
        self.write_conf()
        self._initialized = True

    def write_conf(self):
        """(Re)write creek_test.conf from self.settings; needs reload/restart."""
        lines = ["# written by test/lib/servers.py\n"]
        for k, v in self.settings.items():
            if v is None:
                continue
            lines.append("%s = %s\n" % (k, _pg_conf_value(v)))
        tmp = self.conf_file + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(lines)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.replace(tmp, self.conf_file)

    def set_conf(self, reload=False, **items):
        """Change settings (None removes one); reload=True sends SIGHUP via pg_ctl."""
        for k, v in items.items():
            self.settings[k.replace("__", ".")] = v
        self.write_conf()
        if reload and self.running():
            self._run_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "reload"])

    def update_conf(self, conf, reload=False):
        """Like set_conf with a dict (keys may contain dots)."""
        self.settings.update(conf)
        self.write_conf()
        if reload and self.running():
            self._run_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "reload"])

    # -- lifecycle ----------------------------------------------------------
    def running(self):
        if not os.path.isdir(self.data_dir):
            return False
        r = self._run_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "status"],
                         timeout=30, check=False)
        return r.returncode == 0

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout=60):
        self._run_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "-l", self.log_file,
                      "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 30)
        # bounded wait until it accepts TCP (pg_ctl -w already waited)
        wait_port(self.port, 10, what="postgres")
        return self

    def stop(self, mode="fast", timeout=60):
        if not os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            return
        r = self._run_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data_dir, "-m", mode,
                          "-w", "-t", str(int(timeout)), "stop"], timeout=timeout + 30,
                         check=False)
        if r.returncode != 0 and self.running():
            raise ServerError("pg_ctl stop -m %s failed: %s" % (mode, r.stderr.decode(errors="replace")))

    def restart(self, mode="fast", timeout=60):
        self.stop(mode, timeout)
        return self.start(timeout)

    def kill(self):
        """SIGKILL the postmaster (children notice and exit)."""
        pid = self.postmaster_pid()
        if pid and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_pid_gone(pid, 10)

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
                try:
                    self.stop("immediate", timeout=30)
                except Exception:
                    pass
                pid = self.postmaster_pid()
                if pid and _pid_alive(pid) and "postgres" in _pid_cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
                    _wait_pid_gone(pid, 10)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            _unregister(self)

    def __enter__(self):
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- SQL ----------------------------------------------------------------
    def dsn(self, db="postgres"):
        return "host=%s port=%d user=postgres dbname=%s" % (HOST, self.port, db)

    def _psql_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCLIENTENCODING"] = "UTF8"
        env["PGCONNECT_TIMEOUT"] = "10"
        env["PGAPPNAME"] = "creek-tests"
        return env

    def run_psql(self, sql, db="postgres", extra_args=(), timeout=120, tuples_only=True):
        """Run psql with sql on stdin; returns (returncode, stdout, stderr)."""
        cmd = [os.path.join(PG_BIN, "psql"), "-X", "-A", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", db]
        if tuples_only:
            cmd.append("-t")
        cmd += list(extra_args)
        cmd += ["-f", "-"]
        r = subprocess.run(cmd, input=sql.encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=self._psql_env())
        out = r.stdout.decode("utf-8", errors="replace")
        err = r.stderr.decode("utf-8", errors="replace")
        self.last_stderr = err
        return r.returncode, out, err

    def psql(self, sql, db="postgres", check=True, timeout=120):
        """Run SQL (several statements allowed, each its own transaction
        unless wrapped in BEGIN/COMMIT); returns stdout stripped. Raises
        PsqlError (with .stderr) on error when check."""
        rc, out, err = self.run_psql(sql, db, timeout=timeout)
        if check and rc != 0:
            raise PsqlError(sql, rc, out, err)
        return out.strip()

    _FS = "\x1f"
    _RS = "\x1e"
    _NULL = "\x1a<NULL>\x1a"

    def query(self, sql, db="postgres", timeout=120):
        """Rows of the result as a list of tuples of str (None for NULL).

        sql may hold several statements, but only one may return rows
        (statements without a result, like INSERT, print nothing)."""
        # Without -t psql prints a header record first, so that "no rows" and
        # "one row holding one empty string" can be told apart.
        rc, out, err = self.run_psql(sql, db, extra_args=[
            "-F", self._FS, "-R", self._RS, "-P", "null=" + self._NULL,
            "-P", "footer=off"], timeout=timeout, tuples_only=False)
        if rc != 0:
            raise PsqlError(sql, rc, out, err)
        if out.endswith("\n"):
            out = out[:-1]
        if out == "":
            return []
        recs = out.split(self._RS)[1:]  # drop the header
        return [tuple(None if v == self._NULL else v for v in rec.split(self._FS))
                for rec in recs]

    def scalar(self, sql, db="postgres"):
        rows = self.query(sql, db)
        return rows[0][0] if rows else None

    def createdb(self, name, template=None):
        sql = "CREATE DATABASE " + quote_ident(name)
        if template:
            sql += " TEMPLATE " + quote_ident(template)
        self.psql(sql)
        return name

    def dropdb(self, name, force=True):
        self.psql("DROP DATABASE IF EXISTS %s%s" % (quote_ident(name),
                                                     " WITH (FORCE)" if force else ""))

    # -- logs ---------------------------------------------------------------
    def log_offset(self):
        try:
            return os.path.getsize(self.log_file)
        except OSError:
            return 0

    def log(self, since=0):
        """Server log text (from byte offset `since`)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=30, since=0):
        """Wait (bounded) until the log (from `since`) matches the regex; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("log did not match %r within %ss; tail:\n%s"
                                     % (pattern, timeout, _tail(self.log_file, 30)))
            time.sleep(0.1)


# ---------------------------------------------------------------------------
# CLI

def _cmd_up(args):
    conf = {}
    for kv in args.pg_conf or []:
        if "=" not in kv:
            sys.exit("--pg-conf wants key=value, got %r" % kv)
        k, v = kv.split("=", 1)
        conf[k.strip()] = v
    nats = NatsServer(port=args.nats_port, detach=True)
    pg = None
    try:
        nats.start()
        conf.setdefault("creek.nats_url", nats.url)
        pg = PgCluster(port=args.pg_port, conf=conf, creek=not args.no_creek, detach=True)
        pg.start()
    except Exception as e:
        sys.stderr.write("servers.py up failed: %s\n" % e)
        if pg is not None:
            pg.cleanup()
        nats.cleanup()
        return 1
    state = {
        "pg_port": pg.port, "pg_dir": pg.base_dir, "pg_data": pg.data_dir,
        "pg_log": pg.log_file, "pg_socket_dir": pg.socket_dir, "pg_host": HOST,
        "nats_port": nats.port, "nats_url": nats.url, "nats_pid": nats.pid,
        "nats_dir": nats.base_dir, "nats_log": nats.log_file, "store_dir": nats.store_dir,
    }
    tmp = args.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.state)
    print(json.dumps(state))
    return 0


def _cmd_down(args):
    try:
        with open(args.state) as f:
            st = json.load(f)
    except (OSError, ValueError) as e:
        sys.stderr.write("cannot read state %s: %s\n" % (args.state, e))
        return 1
    rc = 0
    data = st.get("pg_data") or os.path.join(st["pg_dir"], "data")
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        pg_ctl = os.path.join(PG_BIN, "pg_ctl")
        r = subprocess.run(_as_pg_user([pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"]),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if r.returncode != 0:
            subprocess.run(_as_pg_user([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30",
                                        "stop"]), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        try:
            with open(os.path.join(data, "postmaster.pid")) as f:
                pid = int(f.readline())
            if _pid_alive(pid) and "postgres" in _pid_cmdline(pid):
                os.kill(pid, signal.SIGKILL)
                _wait_pid_gone(pid, 10)
        except (OSError, ValueError):
            pass
    pid = st.get("nats_pid")
    if pid and _pid_alive(pid) and "nats-server" in _pid_cmdline(pid):
        os.kill(pid, signal.SIGTERM)
        if not _wait_pid_gone(pid, 10):
            os.kill(pid, signal.SIGKILL)
            if not _wait_pid_gone(pid, 5):
                sys.stderr.write("nats-server %d did not die\n" % pid)
                rc = 1
    for key in ("pg_dir", "store_dir", "nats_dir"):
        d = st.get(key)
        if d and os.path.isdir(d) and os.path.basename(d.rstrip("/")) != "":
            shutil.rmtree(d, ignore_errors=True)
    try:
        os.unlink(args.state)
    except OSError:
        pass
    return rc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start nats-server + postgres, detached")
    up.add_argument("--state", required=True)
    up.add_argument("--pg-conf", action="append", metavar="KEY=VALUE")
    up.add_argument("--no-creek", action="store_true", help="do not preload creek")
    up.add_argument("--pg-port", type=int)
    up.add_argument("--nats-port", type=int)
    down = sub.add_parser("down", help="stop both and remove their dirs")
    down.add_argument("--state", required=True)
    args = ap.parse_args(argv)
    return _cmd_up(args) if args.cmd == "up" else _cmd_down(args)


if __name__ == "__main__":
    sys.exit(main())
