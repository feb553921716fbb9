"""A minimal NATS client (text protocol over a plain socket), stdlib only.

Enough for tests: PUB/HPUB, SUB/UNSUB, MSG/HMSG with NATS/1.0 headers,
request/reply through a shared inbox subscription, and a few JetStream helpers
that talk to the JSON API ($JS.API.*).

A background thread reads the socket, answers server PINGs and queues incoming
messages per subscription, so an idle client is never dropped as stale.

    c = NatsClient("nats://127.0.0.1:4222")
    sid = c.subscribe("foo.>")
    c.publish("foo.bar", b"hi", headers={"Nats-Msg-Id": "1"})
    m = c.next_msg(sid, timeout=2)      # Msg or None
    c.request("svc", b"ping", timeout=1)  # bytes or None (timeout / no responders)
    c.close()
"""

import base64
import json
import os
import queue
import socket
import threading
import time
from urllib.parse import urlparse

__all__ = ["NatsClient", "Msg", "NatsError", "encode_headers", "parse_headers",
           "subject_matches"]

_CRLF = b"\r\n"


class NatsError(Exception):
    """Protocol-level error (-ERR from the server, connection lost, ...)."""


class Msg:
    """A received message.

    subject, reply (str or None), headers (dict str->str, last value wins for a
    repeated key; all pairs in header_list), data (bytes), sid, status (int or
    None: the code on the NATS/1.0 status line, e.g. 503 for no responders),
    description (text after the status code), seq (stream sequence for
    messages read from a stream, else None), time (stored time string, stream
    messages only).
    """

    __slots__ = ("subject", "reply", "headers", "header_list", "data", "sid",
                 "status", "description", "seq", "time")

    def __init__(self, subject, reply=None, headers=None, data=b"", sid=None,
                 status=None, description=None, header_list=None, seq=None,
                 time=None):
        self.subject = subject
        self.reply = reply
        self.headers = headers if headers is not None else {}
        self.header_list = header_list if header_list is not None else list(self.headers.items())
        self.data = data
        self.sid = sid
        self.status = status
        self.description = description
        self.seq = seq
        self.time = time

    def header(self, name, default=None):
        """Case-insensitive header lookup (last value)."""
        low = name.lower()
        val = default
        for k, v in self.header_list:
            if k.lower() == low:
                val = v
        return val

    def json(self):
        return json.loads(self.data.decode("utf-8"))

    def __repr__(self):
        d = self.data if len(self.data) <= 64 else self.data[:64] + b"..."
        return ("Msg(subject=%r, seq=%r, reply=%r, headers=%r, status=%r, data=%r)"
                % (self.subject, self.seq, self.reply, self.headers, self.status, d))


def encode_headers(headers):
    """dict (or list of pairs) -> NATS/1.0 header block bytes (ends with CRLFCRLF)."""
    items = headers.items() if isinstance(headers, dict) else headers
    out = [b"NATS/1.0\r\n"]
    for k, v in items:
        k = str(k)
        v = str(v)
        if any(c in k for c in ":\r\n ") or any(c in v for c in "\r\n"):
            raise ValueError("invalid header %r: %r" % (k, v))
        out.append(("%s: %s\r\n" % (k, v)).encode("utf-8"))
    out.append(b"\r\n")
    return b"".join(out)


def parse_headers(block):
    """NATS/1.0 header block -> (status or None, description or None, list of (k, v))."""
    text = block.decode("utf-8", errors="replace")
    lines = text.split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise NatsError("bad header block: %r" % block[:80])
    status = None
    desc = None
    rest = first[len("NATS/1.0"):].strip()
    if rest:
        parts = rest.split(" ", 1)
        try:
            status = int(parts[0])
        except ValueError:
            status = None
        desc = parts[1] if len(parts) > 1 else None
    pairs = []
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        pairs.append((k.strip(), v.strip()))
    return status, desc, pairs


def subject_matches(pattern, subject):
    """NATS subject matching with '*' and '>' wildcards."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)


def _nuid(n=22):
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[b % 62] for b in os.urandom(n))


class NatsClient:
    def __init__(self, url="nats://127.0.0.1:4222", timeout=5, name="creek-tests",
                 connect=True):
        self.url = url
        self.timeout = timeout
        self.name = name
        self.server_info = None
        self.last_error = None          # last -ERR text from the server
        self._sock = None
        self._wlock = threading.Lock()
        self._lock = threading.Lock()
        self._subs = {}                 # sid -> (subject, queue.Queue)
        self._next_sid = 1
        self._pong_cv = threading.Condition(self._lock)
        self._pings_sent = 0
        self._pongs_recv = 0
        self._closed = True
        self._reader = None
        self._inbox_prefix = None
        self._inbox_sid = None
        self._resp = {}                 # token -> queue.Queue
        if connect:
            self.connect()

    # -- connection ---------------------------------------------------------
    def connect(self):
        u = urlparse(self.url if "://" in self.url else "nats://" + self.url)
        host = u.hostname or "127.0.0.1"
        port = u.port or 4222
        sock = socket.create_connection((host, port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = b""
        deadline = time.monotonic() + self.timeout
        while _CRLF not in f:
            if time.monotonic() > deadline:
                sock.close()
                raise NatsError("no INFO from server")
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise NatsError("connection closed before INFO")
            f += chunk
        line, rest = f.split(_CRLF, 1)
        if not line.startswith(b"INFO "):
            sock.close()
            raise NatsError("expected INFO, got %r" % line[:100])
        self.server_info = json.loads(line[5:].decode("utf-8"))
        connect = {
            "verbose": False, "pedantic": False, "tls_required": False,
            "name": self.name, "lang": "python-tests", "version": "0.1",
            "protocol": 1, "headers": True, "no_responders": True,
        }
        if u.username:
            connect["user"] = u.username
            connect["pass"] = u.password or ""
        sock.settimeout(None)
        self._sock = sock
        self._closed = False
        self._buf = bytearray(rest)
        self._send(b"CONNECT " + json.dumps(connect).encode() + _CRLF)
        self._reader = threading.Thread(target=self._read_loop, name="nats-reader",
                                        daemon=True)
        self._reader.start()
        self.flush(self.timeout)
        if self.last_error:
            raise NatsError("server error on connect: %s" % self.last_error)
        # shared request inbox
        self._inbox_prefix = "_INBOX." + _nuid()
        self._inbox_sid = self._subscribe_raw(self._inbox_prefix + ".*", None, inbox=True)
        return self

    def close(self):
        if self._closed and self._sock is None:
            return
        self._closed = True
        s = self._sock
        self._sock = None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2)
        with self._lock:
            self._pong_cv.notify_all()

    @property
    def is_closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _send(self, data):
        with self._wlock:
            if self._closed or self._sock is None:
                raise NatsError("connection closed")
            try:
                self._sock.sendall(data)
            except OSError as e:
                self._closed = True
                raise NatsError("send failed: %s" % e)

    # -- reader -------------------------------------------------------------
    def _read_exact_line(self):
        while True:
            i = self._buf.find(_CRLF)
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def _read_n(self, n):
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _fill(self):
        s = self._sock
        if s is None:
            raise EOFError
        chunk = s.recv(1 << 16)
        if not chunk:
            raise EOFError
        self._buf += chunk

    def _read_loop(self):
        try:
            while not self._closed:
                line = self._read_exact_line()
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    self._handle_msg(line)
                elif line == b"PING":
                    try:
                        self._send(b"PONG\r\n")
                    except NatsError:
                        break
                elif line == b"PONG":
                    with self._lock:
                        self._pongs_recv += 1
                        self._pong_cv.notify_all()
                elif line.startswith(b"INFO "):
                    try:
                        self.server_info = json.loads(line[5:].decode("utf-8"))
                    except ValueError:
                        pass
                elif line.startswith(b"-ERR"):
                    self.last_error = line[4:].strip().decode("utf-8", "replace").strip("'")
                elif line == b"+OK" or line == b"":
                    pass
                else:
                    self.last_error = "unexpected line: %r" % line[:100]
        except (EOFError, OSError):
            pass
        finally:
            self._closed = True
            with self._lock:
                self._pong_cv.notify_all()

    def _handle_msg(self, line):
        parts = line.decode("utf-8").split()
        if parts[0] == "MSG":
            # MSG <subject> <sid> [reply] <#bytes>
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 5 else None
            n = int(parts[-1])
            hlen = 0
        else:
            # HMSG <subject> <sid> [reply] <#hdr bytes> <#total bytes>
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 6 else None
            hlen = int(parts[-2])
            n = int(parts[-1])
        payload = self._read_n(n + 2)[:n]
        headers = {}
        header_list = []
        status = desc = None
        if hlen:
            status, desc, header_list = parse_headers(payload[:hlen])
            headers = dict(header_list)
        data = payload[hlen:]
        msg = Msg(subject, reply, headers, data, sid, status, desc, header_list)
        with self._lock:
            if sid == self._inbox_sid:
                token = subject[len(self._inbox_prefix) + 1:]
                q = self._resp.get(token)
            else:
                ent = self._subs.get(sid)
                q = ent[1] if ent else None
        if q is not None:
            q.put(msg)

    # -- core API -----------------------------------------------------------
    def flush(self, timeout=None):
        """PING and wait for the PONG; True on success."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            self._pings_sent += 1
            want = self._pings_sent
        self._send(b"PING\r\n")
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pongs_recv < want:
                if self._closed:
                    raise NatsError("connection closed (last error: %s)" % self.last_error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NatsError("flush timeout")
                self._pong_cv.wait(left)
        return True

    def publish(self, subject, data=b"", headers=None, reply=None):
        if isinstance(data, str):
            data = data.encode("utf-8")
        data = bytes(data)
        r = (" " + reply) if reply else ""
        if headers:
            hb = encode_headers(headers)
            cmd = ("HPUB %s%s %d %d\r\n" % (subject, r, len(hb), len(hb) + len(data))).encode()
            self._send(cmd + hb + data + _CRLF)
        else:
            cmd = ("PUB %s%s %d\r\n" % (subject, r, len(data))).encode()
            self._send(cmd + data + _CRLF)

    def _subscribe_raw(self, subject, queue_group, inbox=False):
        with self._lock:
            sid = str(self._next_sid)
            self._next_sid += 1
            if not inbox:
                self._subs[sid] = (subject, queue.Queue())
        q = (" " + queue_group) if queue_group else ""
        self._send(("SUB %s%s %s\r\n" % (subject, q, sid)).encode())
        return sid

    def subscribe(self, subject, queue_group=None):
        """Subscribe; returns the sid. The SUB is flushed before returning."""
        sid = self._subscribe_raw(subject, queue_group)
        self.flush()
        return sid

    def unsubscribe(self, sid, max_msgs=None):
        m = (" %d" % max_msgs) if max_msgs else ""
        self._send(("UNSUB %s%s\r\n" % (sid, m)).encode())
        if not max_msgs:
            with self._lock:
                self._subs.pop(sid, None)

    def next_msg(self, sid, timeout=None):
        """Next message of a subscription, or None after timeout seconds."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            ent = self._subs.get(sid)
        if ent is None:
            raise KeyError("unknown sid %r" % sid)
        try:
            return ent[1].get(timeout=max(0, timeout))
        except queue.Empty:
            return None

    def pending(self, sid):
        with self._lock:
            ent = self._subs.get(sid)
        return ent[1].qsize() if ent else 0

    def drain_msgs(self, sid, timeout=0.2):
        """All messages until none arrived for `timeout` seconds."""
        out = []
        while True:
            m = self.next_msg(sid, timeout)
            if m is None:
                return out
            out.append(m)

    def _new_inbox(self):
        token = _nuid(12)
        q = queue.Queue()
        with self._lock:
            self._resp[token] = q
        return token, q

    def request_msg(self, subject, data=b"", timeout=None, headers=None):
        """Request; returns the reply Msg, or None on timeout or no responders."""
        msgs = self.request_many(subject, data, timeout, headers, max_msgs=1)
        return msgs[0] if msgs else None

    def request(self, subject, data=b"", timeout=None, headers=None):
        """Request; returns the reply data (bytes), or None on timeout / no responders."""
        m = self.request_msg(subject, data, timeout, headers)
        return None if m is None else m.data

    def request_many(self, subject, data=b"", timeout=None, headers=None, max_msgs=None):
        """Collect replies until timeout (or max_msgs). A no-responders status
        reply ends the wait at once and is not returned."""
        timeout = self.timeout if timeout is None else timeout
        token, q = self._new_inbox()
        out = []
        try:
            self.publish(subject, data, headers=headers,
                         reply=self._inbox_prefix + "." + token)
            deadline = time.monotonic() + timeout
            while max_msgs is None or len(out) < max_msgs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    m = q.get(timeout=left)
                except queue.Empty:
                    break
                if m.status == 503 and not m.data:
                    break
                out.append(m)
        finally:
            with self._lock:
                self._resp.pop(token, None)
        return out

    # -- JetStream ----------------------------------------------------------
    def js_api(self, api, payload=None, timeout=None):
        """Request $JS.API.<api> with a JSON payload; returns the decoded JSON
        reply, or None on timeout / no responders (JetStream not enabled)."""
        body = b"" if payload is None else json.dumps(payload).encode()
        r = self.request("$JS.API." + api, body, timeout)
        if r is None:
            return None
        return json.loads(r.decode("utf-8"))

    def account_info(self):
        return self.js_api("INFO")

    def stream_info(self, name):
        """Stream info dict (config, state, ...) or None if absent / no JetStream."""
        r = self.js_api("STREAM.INFO." + name)
        if r is None or "error" in r:
            return None
        return r

    def stream_names(self, subject=None):
        names = []
        offset = 0
        while True:
            req = {"offset": offset}
            if subject:
                req["subject"] = subject
            r = self.js_api("STREAM.NAMES", req)
            if r is None or "error" in r:
                return names
            page = r.get("streams") or []
            names.extend(page)
            offset += len(page)
            if not page or offset >= r.get("total", 0):
                return names

    def create_stream(self, config):
        """$JS.API.STREAM.CREATE.<name>; returns the reply dict (may hold "error")."""
        if isinstance(config, str):
            config = {"name": config, "subjects": [config + ".>"]}
        return self.js_api("STREAM.CREATE." + config["name"], config)

    def update_stream(self, config):
        return self.js_api("STREAM.UPDATE." + config["name"], config)

    def delete_stream(self, name):
        """True if deleted, False if it did not exist / error, None on no JetStream."""
        r = self.js_api("STREAM.DELETE." + name)
        if r is None:
            return None
        return bool(r.get("success"))

    def purge_stream(self, name, subject=None):
        """Returns the number of purged messages, or None on error."""
        r = self.js_api("STREAM.PURGE." + name, {"filter": subject} if subject else None)
        if r is None or "error" in r:
            return None
        return r.get("purged", 0)

    def js_publish(self, subject, data=b"", headers=None, timeout=None):
        """Publish expecting a JetStream PubAck; returns the ack dict
        ({"stream", "seq", "duplicate"?} or {"error": ...}) or None."""
        r = self.request(subject, data, timeout, headers)
        if r is None:
            return None
        return json.loads(r.decode("utf-8"))

    def stream_msg(self, stream, seq=None, last_by_subj=None, next_by_subj=None):
        """One stored message ($JS.API.STREAM.MSG.GET) as a Msg with .seq, or None
        (deleted, absent, error)."""
        req = {}
        if seq is not None:
            req["seq"] = seq
        if last_by_subj is not None:
            req["last_by_subj"] = last_by_subj
        if next_by_subj is not None:
            req["next_by_subj"] = next_by_subj
        r = self.js_api("STREAM.MSG.GET." + stream, req)
        if r is None or "error" in r or "message" not in r:
            return None
        m = r["message"]
        data = base64.b64decode(m.get("data") or "")
        headers = {}
        header_list = []
        status = desc = None
        if m.get("hdrs"):
            status, desc, header_list = parse_headers(base64.b64decode(m["hdrs"]))
            headers = dict(header_list)
        return Msg(m.get("subject"), None, headers, data, None, status, desc,
                   header_list, seq=m.get("seq"), time=m.get("time"))

    def stream_messages(self, stream, subject_filter=None):
        """Every stored message of a stream, first_seq..last_seq, skipping deleted
        ones, optionally only those whose subject matches subject_filter."""
        info = self.stream_info(stream)
        if info is None:
            return []
        st = info["state"]
        first, last = st.get("first_seq", 0), st.get("last_seq", 0)
        out = []
        if st.get("messages", 0) == 0 or last < first:
            return out
        seq = max(first, 1)
        while seq <= last:
            m = self.stream_msg(stream, seq)
            seq += 1
            if m is None:
                continue
            if subject_filter and not subject_matches(subject_filter, m.subject):
                continue
            out.append(m)
        return out
