#!/usr/bin/python3
"""NATS NKeys, JWTs and .creds files for creek tests (stdlib only).

Ed25519 is done by the `openssl` command (OpenSSL 3); the NKey encoding
(prefix byte, CRC16-XMODEM little-endian, base32 without padding) and the
JWTs (header {"typ":"JWT","alg":"ed25519-nkey"}, base64url without padding,
signed by the issuer's seed over "header.payload") are implemented here.

NKey user (server config users = [{nkey: U...}]), with creek.nats_nkey and
creek.nats_nkey_seed_file:

    from nkeys import user_nkey, nkey_conf
    pub, seed_file = user_nkey(tmpdir, owner="postgres")   # owner: see below
    with AuthNats(extra_conf=nkey_conf(pub)) as n, PgCluster(conf={
            "creek.nats_url": n.url,
            "creek.nats_nkey": pub,
            "creek.nats_nkey_seed_file": seed_file}) as pg:
        ...

Operator / JWT mode (memory resolver preloaded with the account, JetStream
enabled for it), with creek.nats_creds_file:

    from nkeys import operator_setup
    op = operator_setup(tmpdir, owner="postgres")
    with AuthNats(extra_conf=op["conf"]) as n, PgCluster(conf={
            "creek.nats_url": n.url,
            "creek.nats_creds_file": op["creds_file"]}) as pg:
        ...

op["conf"] is a dict that servers.NatsServer renders itself; op["conf_text"]
is the same as nats-server config text, which extra_conf also takes.

AuthNats is the NatsServer subclass of test_security.py that skips the
JetStream readiness check: NatsServer.start() checks JetStream with
natsclient.NatsClient, which connects without credentials, and a server with
authorization refuses that (a plain NatsServer fails to start with
"JetStream not ready ... connection closed").

Reading the streams from the test: with nkey_conf(pub, extra_users=[{"user":
"t", "password": "pw"}]) NatsClient("nats://t:pw@127.0.0.1:%d" % n.port)
works as is (same $G account). Operator mode allows no such user: a client
must send "jwt" and "sig" in CONNECT. creds_connect_fields(creds_file) and
nkey_connect_fields(pub, seed_file) return fn(server_info) -> those CONNECT
fields (signed nonce); they need a NatsClient(auth=...) parameter that
natsclient.py does not have yet (see the report that came with this module).

Wrong credentials (they must be refused):
    _, other_seed_file = user_nkey(tmpdir, owner="postgres")  # right key, wrong seed
    bad = write_creds(tmpdir, op["user_jwt"], new_keypair("user").seed,
                      name="wrong.creds", owner="postgres")   # right JWT, wrong seed

Files: seeds and .creds are written with mode 0600. Postgres (hence creek and
nats.c) runs as the `postgres` OS user: when the tests run as root pass
owner="postgres" (a user name or uid) to chown the files to it; tmpdir then
gets its execute bits set (o+x) so that user can reach the files, and its
parents must be searchable too (tempfile.mkdtemp() under /tmp is fine once
o+x is set).
"""

import base64
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time

__all__ = [
    "KeyPair", "new_keypair", "crc16", "encode_public_key", "encode_seed",
    "decode_public_key", "decode_seed", "ed25519_sign", "ed25519_verify",
    "ed25519_public_key", "encode_jwt", "decode_jwt", "format_creds",
    "write_creds", "write_seed_file", "user_nkey", "nkey_conf", "operator_setup",
    "user_jwt", "account_jwt", "operator_jwt", "render_conf", "sign_nonce",
    "nkey_connect_fields", "creds_connect_fields", "public_key_kind", "PREFIXES",
    "NKeyError", "UNLIMITED_JETSTREAM",
]

OPENSSL = os.environ.get("OPENSSL", shutil.which("openssl") or "/usr/bin/openssl")

# NKey prefix bytes (the first base32 character of the encoded key)
PREFIX_SEED = 18 << 3       # 'S'
PREFIX_PRIVATE = 15 << 3    # 'P'
PREFIX_SERVER = 13 << 3     # 'N'
PREFIX_CLUSTER = 2 << 3     # 'C'
PREFIX_OPERATOR = 14 << 3   # 'O'
PREFIX_ACCOUNT = 0          # 'A'
PREFIX_USER = 20 << 3       # 'U'
PREFIX_CURVE = 23 << 3      # 'X'

PREFIXES = {"operator": PREFIX_OPERATOR, "account": PREFIX_ACCOUNT, "user": PREFIX_USER,
            "server": PREFIX_SERVER, "cluster": PREFIX_CLUSTER}

_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")  # + 32-byte seed
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")           # + 32-byte key


class NKeyError(ValueError):
    pass


# ---------------------------------------------------------------------------
# encoding

def crc16(data):
    """CRC-16/XMODEM (poly 0x1021, init 0) of bytes."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _b32(raw):
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _unb32(s):
    s = s.strip()
    return base64.b32decode(s + "=" * (-len(s) % 8))


def _with_crc(raw):
    return raw + crc16(raw).to_bytes(2, "little")


def _check_crc(raw, what):
    if len(raw) < 3 or crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise NKeyError("bad checksum in %s" % what)
    return raw[:-2]


def _prefix(kind):
    if isinstance(kind, int):
        return kind
    try:
        return PREFIXES[kind]
    except KeyError:
        raise NKeyError("unknown key kind %r" % (kind,))


def encode_public_key(kind, raw_public):
    """kind: "user"/"account"/"operator"/... or a prefix byte; raw_public: 32 bytes."""
    if len(raw_public) != 32:
        raise NKeyError("an Ed25519 public key has 32 bytes")
    return _b32(_with_crc(bytes([_prefix(kind)]) + raw_public))


def encode_seed(kind, raw_seed):
    """The seed string ("SU...", "SA...", "SO...") of a 32-byte Ed25519 seed."""
    if len(raw_seed) != 32:
        raise NKeyError("an Ed25519 seed has 32 bytes")
    p = _prefix(kind)
    head = bytes([PREFIX_SEED | (p >> 5), (p & 31) << 3])
    return _b32(_with_crc(head + raw_seed))


def decode_public_key(key):
    """(prefix byte, raw 32 bytes) of an encoded public key; checks the CRC."""
    raw = _check_crc(_unb32(key), "public key")
    if len(raw) != 33:
        raise NKeyError("bad public key length")
    return raw[0], raw[1:]


def decode_seed(seed):
    """(prefix byte of the public key kind, raw 32-byte seed); checks the CRC."""
    if isinstance(seed, bytes):
        seed = seed.decode("ascii")
    raw = _check_crc(_unb32(seed), "seed")
    if len(raw) != 34:
        raise NKeyError("bad seed length")
    if raw[0] & 0xF8 != PREFIX_SEED:
        raise NKeyError("not a seed")
    kind = ((raw[0] & 7) << 5) | (raw[1] >> 3)
    return kind, raw[2:]


# ---------------------------------------------------------------------------
# Ed25519 through the openssl command

def _openssl(args, input=None, pass_fds=(), timeout=30):
    r = subprocess.run([OPENSSL] + args, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, pass_fds=pass_fds, timeout=timeout)
    return r


def ed25519_public_key(raw_seed):
    """Raw 32-byte public key of a raw 32-byte seed."""
    r = _openssl(["pkey", "-inform", "DER", "-pubout", "-outform", "DER"],
                 input=_PKCS8_ED25519 + raw_seed)
    if r.returncode != 0 or not r.stdout.startswith(_SPKI_ED25519) or len(r.stdout) != 44:
        raise NKeyError("openssl pkey failed: %s" % r.stderr.decode(errors="replace"))
    return r.stdout[len(_SPKI_ED25519):]


def _key_pipe(der):
    """A pipe whose read end yields der (the key never touches the disk)."""
    rfd, wfd = os.pipe()
    try:
        os.write(wfd, der)  # < 100 bytes: fits the pipe buffer
    finally:
        os.close(wfd)
    return rfd


def ed25519_sign(raw_seed, data):
    """64-byte Ed25519 signature of data (bytes) with a raw 32-byte seed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    # openssl's one-shot EdDSA needs -in to be a regular file (it stats it)
    with tempfile.NamedTemporaryFile(prefix="nkeys-data-") as f:
        f.write(data)
        f.flush()
        rfd = _key_pipe(_PKCS8_ED25519 + raw_seed)
        try:
            r = _openssl(["pkeyutl", "-sign", "-rawin", "-keyform", "DER",
                          "-inkey", "/dev/fd/%d" % rfd, "-in", f.name], pass_fds=(rfd,))
        finally:
            os.close(rfd)
    if r.returncode != 0 or len(r.stdout) != 64:
        raise NKeyError("openssl pkeyutl -sign failed: %s" % r.stderr.decode(errors="replace"))
    return r.stdout


def ed25519_verify(raw_public, data, sig):
    """True if sig is a valid Ed25519 signature of data by raw_public."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with tempfile.NamedTemporaryFile(prefix="nkeys-data-") as f, \
            tempfile.NamedTemporaryFile(prefix="nkeys-sig-") as s:
        f.write(data)
        f.flush()
        s.write(sig)
        s.flush()
        r = _openssl(["pkeyutl", "-verify", "-rawin", "-pubin", "-keyform", "DER",
                      "-inkey", "/dev/stdin", "-in", f.name, "-sigfile", s.name],
                     input=_SPKI_ED25519 + raw_public)
    return r.returncode == 0


# ---------------------------------------------------------------------------
# key pairs

class KeyPair:
    """An NKey pair: .public_key ("U...", "A...", "O..."), .seed ("SU..."), .kind."""

    def __init__(self, seed):
        if isinstance(seed, bytes):
            seed = seed.decode("ascii")
        self.seed = seed.strip()
        self.prefix, self.raw_seed = decode_seed(self.seed)
        self.raw_public = ed25519_public_key(self.raw_seed)
        self.public_key = encode_public_key(self.prefix, self.raw_public)
        self.kind = next((k for k, v in PREFIXES.items() if v == self.prefix), None)

    def sign(self, data):
        return ed25519_sign(self.raw_seed, data)

    def verify(self, data, sig):
        return ed25519_verify(self.raw_public, data, sig)

    def __repr__(self):
        return "KeyPair(%s %s)" % (self.kind, self.public_key)


def new_keypair(kind="user"):
    """A fresh random key pair of that kind ("user", "account", "operator")."""
    return KeyPair(encode_seed(kind, os.urandom(32)))


def _keypair(k):
    return k if isinstance(k, KeyPair) else KeyPair(k)


def public_key_kind(key):
    p, _ = decode_public_key(key)
    return next((k for k, v in PREFIXES.items() if v == p), None)


# ---------------------------------------------------------------------------
# JWTs

def _b64url(b):
    return base64.urlsafe_b64encode(b).decode("ascii").rstrip("=")


def _unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


_JWT_HEADER = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"},
                                 separators=(",", ":")).encode())


def encode_jwt(issuer, subject, name, nats, expires=None, now=None):
    """A JWT signed by issuer (KeyPair or seed) about subject (public key).

    nats: the "nats" claim (must hold "type"); "version": 2 is added."""
    issuer = _keypair(issuer)
    nats = dict(nats)
    nats.setdefault("version", 2)
    claims = {"jti": "", "iat": int(now if now is not None else time.time()),
              "iss": issuer.public_key, "name": name, "sub": subject}
    if expires is not None:
        claims["exp"] = int(expires)
    # like the Go library: jti is a hash of the claims without jti (unique enough)
    claims["jti"] = _b32(hashlib.sha256(json.dumps(
        claims, sort_keys=True, separators=(",", ":")).encode()).digest())
    claims["nats"] = nats
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = _JWT_HEADER + "." + payload
    return signing_input + "." + _b64url(issuer.sign(signing_input.encode("ascii")))


def decode_jwt(token, verify=True):
    """The claims of a JWT (dict); with verify, checks the header and that the
    issuer's (iss) signature is valid, raising NKeyError otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise NKeyError("a JWT has 3 parts")
    header = json.loads(_unb64url(parts[0]))
    claims = json.loads(_unb64url(parts[1]))
    if verify:
        if header.get("typ", "").upper() != "JWT" or header.get("alg") != "ed25519-nkey":
            raise NKeyError("unexpected JWT header %r" % header)
        _, raw_pub = decode_public_key(claims["iss"])
        if not ed25519_verify(raw_pub, (parts[0] + "." + parts[1]).encode("ascii"),
                              _unb64url(parts[2])):
            raise NKeyError("JWT signature does not verify")
    return claims


UNLIMITED_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def operator_jwt(operator, system_account=None, name="creek-test-operator"):
    operator = _keypair(operator)
    nats = {"type": "operator"}
    if system_account:
        nats["system_account"] = system_account
    return encode_jwt(operator, operator.public_key, name, nats)


def account_jwt(operator, account_public_key, name, jetstream=True, limits=None):
    """An account JWT signed by the operator.

    jetstream: True for unlimited file and memory storage, streams and
    consumers; False for none; or a dict of JetStream limits (mem_storage,
    disk_storage, streams, consumer, max_ack_pending, mem_max_stream_bytes,
    disk_max_stream_bytes, max_bytes_required). limits: more entries for the
    "limits" claim (subs, data, payload, imports, exports, wildcards, conn, leaf)."""
    lim = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
           "wildcards": True, "conn": -1, "leaf": -1}
    if jetstream is True:
        lim.update(UNLIMITED_JETSTREAM)
    elif jetstream:
        lim.update(jetstream)
    lim.update(limits or {})
    nats = {"limits": lim, "default_permissions": {"pub": {}, "sub": {}}, "type": "account"}
    return encode_jwt(operator, account_public_key, name, nats)


def user_jwt(account, user_public_key, name, pub_allow=None, pub_deny=None,
             sub_allow=None, sub_deny=None, bearer_token=False, expires=None):
    """A user JWT signed by the account (KeyPair or seed): no limits, and
    permissions only when given (lists of subjects)."""
    perm = lambda allow, deny: dict(([("allow", list(allow))] if allow else []) +
                                    ([("deny", list(deny))] if deny else []))
    nats = {"pub": perm(pub_allow, pub_deny), "sub": perm(sub_allow, sub_deny),
            "subs": -1, "data": -1, "payload": -1, "type": "user"}
    if bearer_token:
        nats["bearer_token"] = True
    return encode_jwt(account, user_public_key, name, nats, expires=expires)


def format_creds(jwt, seed):
    """The text of a .creds file (user JWT and user seed), as nsc writes it."""
    return ("-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n"
            % (jwt.strip(), seed.strip()))


# ---------------------------------------------------------------------------
# files

def _owner_ids(owner):
    if owner is None:
        return None
    if isinstance(owner, int):
        return owner, pwd.getpwuid(owner).pw_gid
    pw = pwd.getpwnam(owner)
    return pw.pw_uid, pw.pw_gid


def _write_secret(tmpdir, name, text, owner=None, mode=0o600):
    """Writes text to tmpdir/name with mode (created so, never wider), chowned
    to owner; returns the absolute path."""
    path = os.path.abspath(os.path.join(tmpdir, name))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode & 0o600)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    ids = _owner_ids(owner)
    if ids is not None:
        os.chown(tmp, *ids)
        d = os.path.dirname(path)
        os.chmod(d, os.stat(d).st_mode & 0o7777 | 0o111)
    os.replace(tmp, path)
    return path


def write_seed_file(tmpdir, seed, name=None, owner=None, mode=0o600):
    """Writes the seed (one line) to a file; returns its absolute path."""
    return _write_secret(tmpdir, name or "nkey-%s.seed" % os.urandom(4).hex(),
                         seed.strip() + "\n", owner, mode)


def write_creds(tmpdir, jwt, seed, name=None, owner=None, mode=0o600):
    """Writes a .creds file; returns its absolute path."""
    return _write_secret(tmpdir, name or "user-%s.creds" % os.urandom(4).hex(),
                         format_creds(jwt, seed), owner, mode)


# ---------------------------------------------------------------------------
# what the tests use

def user_nkey(tmpdir, owner=None, name=None):
    """A fresh user NKey: (public_key "U...", absolute path of its seed file).

    The seed file holds the "SU..." seed on one line, mode 0600, chowned to
    owner (user name or uid) when given. For creek.nats_nkey and
    creek.nats_nkey_seed_file; the server side is nkey_conf(public_key)."""
    kp = new_keypair("user")
    return kp.public_key, write_seed_file(tmpdir, kp.seed, name, owner)


def nkey_conf(*public_keys, extra_users=()):
    """extra_conf for NatsServer: authorization by these user NKeys (all in
    the global account, which -js gives JetStream). extra_users: more entries
    for the users list, e.g. {"user": "t", "password": "pw"} for a test client."""
    users = [{"nkey": k} for k in public_keys] + [dict(u) for u in extra_users]
    return {"authorization": {"users": users}}


def render_conf(conf):
    """nats-server config text of a dict (servers.py renders it the same way)."""
    from servers import _render_nats_conf
    return _render_nats_conf(conf)


def operator_setup(tmpdir, owner=None, account_name="CREEK", user_name="creek",
                   jetstream=True, user_permissions=None):
    """An operator, a system account and a JetStream account with one user.

    Returns a dict:
      conf               extra_conf dict for NatsServer: operator (JWT file),
                         system_account, resolver MEMORY, resolver_preload
                         (system account and account JWTs)
      conf_text          the same as config text
      creds_file         the user's .creds file (0600, chowned to owner): for
                         creek.nats_creds_file
      user_public_key, user_seed, user_jwt
      account_public_key, account_seed, account_jwt, account (KeyPair)
      system_account, system_account_seed, system_account_jwt,
      system_creds_file  a user of the system account
      operator_public_key, operator_seed, operator_jwt, operator_jwt_file
      new_user(name, filename=None, owner=owner, **perms) -> (creds path, user
                         KeyPair, user jwt): another user of the account
                         (perms: pub_allow, pub_deny, sub_allow, sub_deny,
                         bearer_token, expires; see user_jwt)
    jetstream: see account_jwt. user_permissions: dict of user_jwt keyword
    arguments for the first user.
    """
    op = new_keypair("operator")
    sys_acc = new_keypair("account")
    acc = new_keypair("account")
    op_jwt = operator_jwt(op, system_account=sys_acc.public_key)
    sys_jwt = account_jwt(op, sys_acc.public_key, "SYS", jetstream=False)
    acc_jwt = account_jwt(op, acc.public_key, account_name, jetstream=jetstream)
    op_file = os.path.abspath(os.path.join(tmpdir, "operator-%s.jwt" % os.urandom(4).hex()))
    with open(op_file, "w") as f:
        f.write(op_jwt + "\n")

    def new_user(name, filename=None, owner=owner, account=acc, **perms):
        ukp = new_keypair("user")
        ujwt = user_jwt(account, ukp.public_key, name, **perms)
        return write_creds(tmpdir, ujwt, ukp.seed, filename, owner), ukp, ujwt

    creds, ukp, ujwt = new_user(user_name, **(user_permissions or {}))
    sys_creds, _, _ = new_user("sys", owner=None, account=sys_acc)
    conf = {
        "operator": op_file,
        "system_account": sys_acc.public_key,
        "resolver": "MEMORY",
        "resolver_preload": {sys_acc.public_key: sys_jwt, acc.public_key: acc_jwt},
    }
    return {
        "conf": conf,
        "conf_text": render_conf(conf),
        "creds_file": creds,
        "user_public_key": ukp.public_key, "user_seed": ukp.seed, "user_jwt": ujwt,
        "account_public_key": acc.public_key, "account_seed": acc.seed,
        "account_jwt": acc_jwt, "account": acc,
        "system_account": sys_acc.public_key, "system_account_seed": sys_acc.seed,
        "system_account_jwt": sys_jwt, "system_creds_file": sys_creds,
        "operator_public_key": op.public_key, "operator_seed": op.seed,
        "operator_jwt": op_jwt, "operator_jwt_file": op_file,
        "new_user": new_user,
    }


# ---------------------------------------------------------------------------
# client side (CONNECT fields), for a Python client

def sign_nonce(seed, nonce):
    """base64url (no padding) Ed25519 signature of the server's INFO nonce."""
    return _b64url(_keypair(seed).sign(nonce.encode("ascii") if isinstance(nonce, str) else nonce))


def _read_seed(seed_or_file):
    if os.path.exists(seed_or_file):
        with open(seed_or_file) as f:
            for line in f:
                if line.strip().startswith("S"):
                    return line.strip()
        raise NKeyError("no seed in %s" % seed_or_file)
    return seed_or_file


def _creds_parts(path):
    with open(path) as f:
        lines = [l.strip() for l in f]
    items = [lines[i + 1] for i in range(len(lines) - 1)
             if lines[i].startswith("-----BEGIN") and lines[i].endswith("-----")]
    if len(items) < 2:
        raise NKeyError("%s is not a .creds file" % path)
    return items[0], items[1]


def nkey_connect_fields(public_key, seed_or_seed_file):
    """fn(server_info) -> {"nkey": ..., "sig": ...} to merge into CONNECT."""
    seed = _read_seed(seed_or_seed_file)
    return lambda info: {"nkey": public_key, "sig": sign_nonce(seed, info["nonce"])}


def creds_connect_fields(creds_file):
    """fn(server_info) -> {"jwt": ..., "sig": ...} to merge into CONNECT."""
    jwt, seed = _creds_parts(creds_file)
    return lambda info: {"jwt": jwt, "sig": sign_nonce(seed, info["nonce"])}


if __name__ == "__main__":
    # quick self-check: python3 nkeys.py
    kp = new_keypair("user")
    assert kp.public_key.startswith("U") and kp.seed.startswith("SU"), kp
    assert KeyPair(kp.seed).public_key == kp.public_key
    sig = kp.sign(b"nonce")
    assert kp.verify(b"nonce", sig) and not kp.verify(b"nonc3", sig)
    d = tempfile.mkdtemp(prefix="nkeys-selftest-")
    try:
        o = operator_setup(d)
        for t in (o["operator_jwt"], o["account_jwt"], o["system_account_jwt"], o["user_jwt"]):
            decode_jwt(t)
        print(o["conf_text"], end="")
        print("ok")
    finally:
        shutil.rmtree(d, ignore_errors=True)
