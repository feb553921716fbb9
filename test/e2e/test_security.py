"""NATS credentials and TLS: each kind of credential works, a wrong password
shows in the view (never the password itself) and is fixed by a reload, and
secrets are readable by superusers only."""

import os
import subprocess
import tempfile

import pytest

from helpers import wait_until
from servers import NatsServer, PgCluster


class AuthNats(NatsServer):
    """A nats-server whose JetStream check needs no credentials of ours."""

    def _wait_jetstream(self, timeout):
        return


def stat(pg, column, db="sec"):
    """A column of this database's row of creek.pg_stat_creek."""
    return pg.scalar("SELECT %s FROM creek.pg_stat_creek WHERE datname = current_database()" % column, db=db)


def streamed(pg, db, n_rows):
    """Inserts n_rows and waits until creek has them acknowledged."""
    pg.psql("INSERT INTO t SELECT g FROM generate_series((SELECT count(*) FROM t) + 1, "
            "(SELECT count(*) FROM t) + %d) g" % n_rows, db=db)
    return wait_until(lambda: stat(
        pg, "messages_in_flight = 0 AND messages_published > 0 AND nats_state = 'connected'", db) == "t",
        30, 0.2, "rows acknowledged over the secured connection")


def setup_db(pg, db="sec"):
    pg.psql("CREATE DATABASE %s" % db)
    pg.psql("CREATE EXTENSION creek", db=db)
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)", db=db)
    pg.psql("SELECT creek.add_table('t')", db=db)


def secret_file(content):
    fd, path = tempfile.mkstemp(prefix="creek-secret-")
    os.write(fd, (content + "\n").encode())
    os.close(fd)
    os.chmod(path, 0o644)
    return path


def test_user_password_wrong_password_and_reload():
    nats = AuthNats(extra_conf="jetstream: enabled\nauthorization { user: creek, password: \"s3cr3t-pw\" }\n")
    nats.start()
    pw_file = secret_file("wrong-pw-123")
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.nats_user": "creek",
                         "creek.nats_password_file": pw_file})
    try:
        pg.start()
        setup_db(pg)
        pg.psql("INSERT INTO t VALUES (1)", db="sec")
        err = wait_until(lambda: stat(pg, "last_error"),
                         20, 0.2, "the authorization error in the view")
        assert "Authentication Violation" in err or "uthorization" in err, err
        assert "wrong-pw-123" not in err
        assert stat(pg, "nats_state") != "connected"
        # fixed by a reload, nothing lost
        with open(pw_file, "w") as f:
            f.write("s3cr3t-pw\n")
        pg.psql("SELECT pg_reload_conf()")
        streamed(pg, "sec", 5)
        assert int(stat(pg, "messages_published")) >= 6
        assert "wrong-pw-123" not in pg.log() and "s3cr3t-pw" not in pg.log()
        # only superusers read the secret
        pg.psql("CREATE ROLE plain LOGIN")
        rc, out, err = pg.run_psql("SET ROLE plain; SHOW creek.nats_password_file", db="sec")
        assert rc != 0 and pw_file not in out, (out, err)
    finally:
        pg.cleanup()
        nats.cleanup()


def test_token():
    nats = AuthNats(extra_conf="jetstream: enabled\nauthorization { token: \"tok-42-secret\" }\n")
    nats.start()
    pg = PgCluster(conf={"creek.nats_url": nats.url,
                         "creek.nats_token_file": secret_file("tok-42-secret")})
    try:
        pg.start()
        setup_db(pg)
        streamed(pg, "sec", 3)
        assert "tok-42-secret" not in pg.log()
    finally:
        pg.cleanup()
        nats.cleanup()


def make_certs(d):
    def run(*args):
        subprocess.run(args, check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=creek test CA")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    os.chmod(d, 0o755)


def test_tls_with_verified_server():
    d = tempfile.mkdtemp(prefix="creek-tls-")
    make_certs(d)
    nats = AuthNats(extra_conf="jetstream: enabled\ntls {\n  cert_file: \"%s/server.pem\"\n"
                               "  key_file: \"%s/server.key\"\n}\n" % (d, d))
    nats.start()
    pg = PgCluster(conf={"creek.nats_url": nats.url.replace("nats://", "tls://"),
                         "creek.nats_tls": "on", "creek.nats_tls_ca_file": d + "/ca.pem"})
    try:
        pg.start()
        setup_db(pg)
        streamed(pg, "sec", 3)
        # without the CA the server cannot be verified: a clear error in the view
        pg.psql("ALTER SYSTEM SET creek.nats_tls_ca_file = ''")
        pg.psql("SELECT pg_reload_conf()")
        pg.psql("INSERT INTO t VALUES (1000)", db="sec")
        err = wait_until(lambda: (stat(pg, "last_error") or "")
                         if stat(pg, "nats_state") != "connected"
                         else "", 30, 0.2, "a TLS verification error")
        assert err, err
    finally:
        pg.cleanup()
        nats.cleanup()


def test_nkey():
    from nkeys import nkey_conf, user_nkey
    d = tempfile.mkdtemp(prefix="creek-nkey-")
    pub, seed_file = user_nkey(d, owner="postgres")
    _, other_seed = user_nkey(d, owner="postgres")
    nats = AuthNats(extra_conf=nkey_conf(pub))
    nats.start()
    # first a seed that does not match the public key: refused, shown in the view
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.nats_nkey": pub,
                         "creek.nats_nkey_seed_file": other_seed})
    try:
        pg.start()
        setup_db(pg)
        err = wait_until(lambda: stat(pg, "last_error"),
                         20, 0.2, "the authentication error in the view")
        assert "uthori" in err or "uthentication" in err, err
        pg.psql("ALTER SYSTEM SET creek.nats_nkey_seed_file = '%s'" % seed_file)
        pg.psql("SELECT pg_reload_conf()")
        streamed(pg, "sec", 3)
        with open(seed_file) as f:
            assert f.read().strip() not in pg.log()
    finally:
        pg.cleanup()
        nats.cleanup()


def test_creds_file_operator_mode():
    from nkeys import operator_setup
    d = tempfile.mkdtemp(prefix="creek-creds-")
    op = operator_setup(d, owner="postgres")
    nats = AuthNats(extra_conf=op["conf"])
    nats.start()
    pg = PgCluster(conf={"creek.nats_url": nats.url, "creek.nats_creds_file": op["creds_file"]})
    try:
        pg.start()
        setup_db(pg)
        streamed(pg, "sec", 3)
        assert op["user_seed"] not in pg.log()
    finally:
        pg.cleanup()
        nats.cleanup()
