"""A minimal PostgreSQL client (simple query protocol, trust authentication),
used by the end-to-end tests and the benchmark."""

import socket
import struct

HOST = "127.0.0.1"


class PgError(Exception):
    """An ErrorResponse: .fields maps the field codes ('S', 'C', 'M', 'D', ...)."""

    def __init__(self, fields):
        self.fields = fields
        self.sqlstate = fields.get("C")
        self.message = fields.get("M", "")
        super().__init__("%s: %s (%s)%s" % (fields.get("S", "ERROR"), self.message, self.sqlstate,
                                             ("\nDETAIL: " + fields["D"]) if "D" in fields else ""))


class PgConn:
    """One session to Postgres (user postgres, trust auth, 127.0.0.1).

    query(sql) runs sql (several statements allowed, simple query protocol)
    and returns the rows of the last statement that returned rows, as tuples
    of str (None for NULL), i.e. the text output of each type. Raises PgError
    on an SQL error (the session stays usable) and ConnectionError when the
    server goes away."""

    def __init__(self, port, db="postgres", user="postgres", host=HOST, timeout=60,
                 appname="creek-e2e"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.notices = []
        self.params = {}
        self.backend_pid = None
        body = struct.pack("!i", 196608)
        for k, v in (("user", user), ("database", db), ("application_name", appname),
                     ("client_encoding", "UTF8")):
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            t, payload = self._read_msg()
            if t == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code != 0:
                    raise ConnectionError("server wants authentication method %d" % code)
            elif t == b"E":
                raise PgError(self._fields(payload))
            elif t == b"Z":
                return
            else:
                self._other(t, payload)

    def _recv(self):
        try:
            chunk = self.sock.recv(1 << 16)
        except OSError as e:
            raise ConnectionError("connection to postgres lost: %s" % e)
        if not chunk:
            raise ConnectionError("connection to postgres closed")
        self.buf += chunk

    def _read_msg(self):
        while len(self.buf) < 5:
            self._recv()
        t = bytes(self.buf[:1])
        n = struct.unpack("!i", self.buf[1:5])[0]
        while len(self.buf) < 1 + n:
            self._recv()
        payload = bytes(self.buf[5:1 + n])
        del self.buf[:1 + n]
        return t, payload

    @staticmethod
    def _fields(payload):
        out = {}
        for part in payload.split(b"\0"):
            if part:
                out[chr(part[0])] = part[1:].decode("utf-8", "replace")
        return out

    def _other(self, t, payload):
        if t == b"S":
            k, v = payload.split(b"\0")[:2]
            self.params[k.decode()] = v.decode()
        elif t == b"K":
            self.backend_pid = struct.unpack("!i", payload[:4])[0]
        elif t == b"N":
            self.notices.append(self._fields(payload))
        # 'A' (notification) and anything else: ignored

    def query(self, sql):
        data = sql.encode("utf-8") + b"\0"
        try:
            self.sock.sendall(b"Q" + struct.pack("!i", len(data) + 4) + data)
        except OSError as e:
            raise ConnectionError("connection to postgres lost: %s" % e)
        rows = None
        cur = None
        error = None
        while True:
            t, payload = self._read_msg()
            if t == b"T":
                cur = []
            elif t == b"D":
                n = struct.unpack("!h", payload[:2])[0]
                pos = 2
                row = []
                for _ in range(n):
                    ln = struct.unpack("!i", payload[pos:pos + 4])[0]
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + ln].decode("utf-8"))
                        pos += ln
                cur.append(tuple(row))
            elif t == b"C":
                if cur is not None:
                    rows = cur
                cur = None
            elif t == b"E":
                error = PgError(self._fields(payload))
            elif t == b"Z":
                self.txn_status = payload[:1]
                if error is not None:
                    raise error
                return rows if rows is not None else []
            elif t == b"I":
                pass
            else:
                self._other(t, payload)

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def close(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
