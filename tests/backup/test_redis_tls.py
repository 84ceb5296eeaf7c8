"""Redis over TLS against a real redis-server on its tls-port (private CA, mutual TLS): redis.backup (network
download through redis-cli --rdb, and auto), redis.check and security.redis, and the errors of a wrong CA, a
missing client certificate, a wrong server name."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from ops_support import checks
from ops_support import run_task as _run_task
from upkeeper.config.targets import RedisTarget
from upkeeper.core.task import Status
from upkeeper.errors import TaskError
from upkeeper.sandbox.redis import RedisServer, RedisTls
from upkeeper.sandbox.tls import Certificate, issued, self_signed

from .conftest import AgeKey

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: these tests are about TLS, not latency: a loaded CI machine's PING p99 reached 315 ms and made
#: redis.check warn (threshold 100 ms), so latency and slowlog thresholds are set out of the way
_NOT_LATENCY = {"latency_warning_ms": 60_000, "slowlog_warning_ms": 60_000}


def run_task(name: str, target: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> Any:
    if name == "redis.check":
        options = {**_NOT_LATENCY, **(options or {})}
    return _run_task(name, target, options)


@dataclass
class Pki:
    ca: Certificate
    other_ca: Certificate  # trusted by nobody here
    client: Certificate


@pytest.fixture(scope="module")
def pki(services_dir: Path) -> Pki:
    d = Path(tempfile.mkdtemp(prefix="redis-pki-", dir=services_dir))
    ca = self_signed(d, "upkeeper test CA", stem="ca", hosts=["ca.invalid"])
    return Pki(ca, self_signed(d, "another CA", stem="other", hosts=["other.invalid"]),
               issued(d, ca, "upkeeper", stem="client", client=True))


@pytest.fixture(scope="module")
def tls_redis(services_dir: Path, pki: Pki) -> Iterator[RedisServer]:
    """One server for the module: TLS only (--port 0), a certificate of the private CA for 127.0.0.1 and
    localhost, clients must show a certificate of that CA (tls-auth-clients yes)."""
    base = Path(tempfile.mkdtemp(prefix="redis-tls-", dir=services_dir))
    server_cert = issued(base / "pki", pki.ca, "localhost", stem="server", hosts=["localhost", "127.0.0.1"])
    server = RedisServer(base, tls=RedisTls(server_cert, pki.ca.cert, pki.client, auth_clients=True))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_clean(tls_redis: RedisServer) -> Iterator[RedisServer]:
    with tls_redis.client() as c:  # closed now: a dropped client's connection may last until the cyclic GC
        c.flushall()
    yield tls_redis
    with tls_redis.client() as c:
        c.config_set("tls-auth-clients", "yes")


@pytest.fixture
def tls_probe(tls_clean: RedisServer) -> Iterator[Any]:
    """A client of the server that watches its connections; closed at the end of the test (a test's locals can
    outlive it in a reference cycle — a traceback of pytest.raises — and its connection with them)."""
    with tls_clean.client() as probe:
        yield probe


def _client_ids(probe: Any) -> set[int]:
    return {int(c["id"]) for c in probe.client_list()}


def _without_client_cert(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in target.items() if k not in ("tls_cert_file", "tls_key_file")}


def _config(make_config: Any, tmp_path: Path, target: dict[str, Any], age_key: AgeKey, method: str) -> Path:
    return make_config({
        "targets": {"cache": target},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": method}},
                 "cache-verify": {"task": "backup.verify", "target": "cache"},
                 "cache-check": {"task": "redis.check", "target": "cache"}},
    })


@pytest.mark.parametrize(("method", "used"), [("network", "network"), ("auto", "bgsave")])
def test_backup_over_mutual_tls_verifies(cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer,
                                         age_key: AgeKey, method: str, used: str) -> None:
    c = tls_clean.client()
    for i in range(300):
        c.set(f"session:{i}", f"user-{i}")
    cfg = _config(make_config, tmp_path, tls_clean.target(), age_key, method)
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok", r.json()
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    assert m["redis"]["method"] == used and m["redis"]["keys"]["db0"] == 300
    r = cli(["--config", cfg, "run", "cache-verify", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok"


def test_health_and_security_tasks_over_mutual_tls(tls_clean: RedisServer) -> None:
    tls_clean.client().set("k", "v")
    res = run_task("redis.check", tls_clean.target())
    assert res.final_status is Status.OK, res.findings
    assert res.metrics["keys"] == 1
    assert "redis.unreachable" not in checks(res)
    sec = run_task("security.redis", tls_clean.target())
    assert "security.redis.no_password" in checks(sec)  # it got in and looked


def test_private_ca_without_client_certificates(tls_clean: RedisServer) -> None:
    """The usual managed Redis: TLS with a private CA, no client certificates."""
    tls_clean.client().config_set("tls-auth-clients", "no")
    res = run_task("redis.check", _without_client_cert(tls_clean.target()))
    assert res.final_status is Status.OK, res.findings


def test_wrong_ca_is_one_clear_error(cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer,
                                     pki: Pki, age_key: AgeKey) -> None:
    target = {**tls_clean.target(), "tls_ca_file": str(pki.other_ca.cert)}
    res = run_task("redis.check", target)
    [f] = checks(res)["redis.unreachable"]
    assert "rediss://127.0.0.1" in f.message and f"tls_ca_file {pki.other_ca.cert}" in f.message
    assert "self-signed certificate in certificate chain" in f.message, f.message
    assert "tls_ca_file" in (f.remediation or "")
    cfg = _config(make_config, tmp_path, target, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 1 and "Traceback" not in r.output
    [run] = r.json()
    assert run["status"] == "error" and "certificate failed the check" in run["summary"], run
    # the system's CAs do not know the private CA either
    res = run_task("redis.check", {**_without_client_cert(target), "tls_ca_file": None})
    assert "against the system's CA bundle" in checks(res)["redis.unreachable"][0].message


def test_mutual_tls_needs_the_client_certificate(cli: Any, make_config: Any, tmp_path: Path,
                                                 tls_clean: RedisServer, pki: Pki, age_key: AgeKey) -> None:
    target = _without_client_cert(tls_clean.target())
    [f] = checks(run_task("redis.check", target))["redis.unreachable"]
    assert "requires a client certificate" in f.message, f.message
    assert "tls_cert_file" in (f.remediation or "")
    cfg = _config(make_config, tmp_path, target, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 1 and "requires a client certificate" in r.json()[0]["summary"], r.output
    # a certificate of a CA the server does not trust
    target = {**target, "tls_cert_file": str(pki.other_ca.cert), "tls_key_file": str(pki.other_ca.key)}
    [f] = checks(run_task("redis.check", target))["redis.unreachable"]
    assert "rejected the client certificate" in f.message, f.message


def test_server_name(tls_clean: RedisServer) -> None:
    """Reached by IP, the certificate is checked against tls_server_name."""
    ok = run_task("redis.check", {**tls_clean.target(), "tls_server_name": "localhost"})
    assert ok.final_status is Status.OK, ok.findings
    [f] = checks(run_task("redis.check", {**tls_clean.target(), "tls_server_name": "redis.example"}))[
        "redis.unreachable"]
    assert "Hostname mismatch" in f.message and "tls_server_name" in (f.remediation or ""), f.message


def test_unusable_key_files_are_named_and_never_shown(tls_clean: RedisServer, pki: Pki, tmp_path: Path) -> None:
    from upkeeper.tasks.redis._conn import client_for

    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    body = re.sub(r"-----[A-Z ]+-----|\s", "", encrypted.read_text())[:40]
    for path, expected in ((encrypted, "unencrypted private key"), (pki.other_ca.key, "KEY_VALUES_MISMATCH"),
                           (tmp_path / "missing.key", "cannot read tls_key_file")):
        target = RedisTarget.model_validate({**tls_clean.target(), "tls_key_file": str(path)})
        with pytest.raises(TaskError) as exc:  # at once, not a passphrase prompt
            client_for(target)
        assert expected in exc.value.message and str(path) in exc.value.message, exc.value.message
        assert body not in exc.value.message
        [f] = checks(run_task("redis.check", target.model_dump(mode="json")))["redis.unreachable"]
        assert expected in f.message


@pytest.mark.parametrize(("fields", "message"), [
    ({"tls_ca_file": "/ca.pem"}, "tls_ca_file is set but tls is false"),
    ({"tls_verify": False}, "tls_verify is set but tls is false"),
    ({"tls": True, "tls_cert_file": "/c.pem"}, "tls_cert_file is set without tls_key_file"),
    ({"tls": True, "tls_key_file": "/k.pem"}, "tls_key_file is set without tls_cert_file"),
    ({"tls": True, "tls_ca_file": "/ca.pem", "tls_verify": False}, "tls_ca_file is set but tls_verify is false"),
    ({"tls": True, "unix_socket": "/run/redis.sock"}, "Redis speaks TLS only on its TCP tls-port"),
    ({"tls_ca_dir": "/etc/ssl/certs"}, "tls_ca_dir is set but tls is false"),
    ({"tls": True, "tls_ca_dir": "/etc/ssl/certs", "tls_verify": False}, "tls_ca_dir is set but tls_verify is false"),
    ({"tls": True, "tls_key_password_file": "/k.pass"}, "tls_key_password_file is set without tls_key_file"),
])
def test_contradicting_tls_settings_are_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RedisTarget.model_validate({"kind": "redis", **fields})


def test_docs_tls_example_runs(cli: Any, tmp_path: Path, tls_clean: RedisServer, pki: Pki) -> None:
    [text] = [b for b in re.findall(r"```yaml\n(.*?)```", (DOCS / "redis.md").read_text(), re.S)
              if "tls_ca_file" in b]
    own = tls_clean.target()
    for old, new in (("redis-prod.internal.example.com", "127.0.0.1"), ("6380", str(tls_clean.port)),
                     ("/etc/upkeeper/redis-ca.pem", own["tls_ca_file"]),
                     ("/etc/upkeeper/redis-client.crt", own["tls_cert_file"]),
                     ("/etc/upkeeper/redis-client.key", own["tls_key_file"]),
                     ("# tls_server_name", "tls_server_name")):
        assert old in text
        text = text.replace(old, new)
    text = text.replace("redis-prod.example.com", "localhost")
    config = tmp_path / "upkeeper.yaml"
    config.write_text(f"history: {tmp_path / 'history.db'}\n" + text)
    r = cli(["--config", config, "run", "sessions-check", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


def test_closing_a_tls_client_closes_its_connection(tls_clean: RedisServer, tls_probe: Any) -> None:
    from upkeeper.tasks.redis._conn import client_for

    target = RedisTarget.model_validate(tls_clean.target())
    before = _client_ids(tls_probe)
    c = client_for(target)
    c.ping()
    assert len(_client_ids(tls_probe) - before) == 1
    c.close()  # the object stays referenced: nothing but close() may drop the connection
    deadline = time.monotonic() + 3
    while _client_ids(tls_probe) - before and time.monotonic() < deadline:
        time.sleep(0.05)  # the server sees the hang-up a moment later
    assert not _client_ids(tls_probe) - before
    del c


def test_tls_verify_false_connects_unchecked_and_says_so(tls_clean: RedisServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """tls_verify: false trusts any certificate (here: no CA given, the system's bundle does not know the
    private CA) and warns that nothing was checked, as verify_tls: false does for S3."""
    target = {**tls_clean.target(), "tls_ca_file": None, "tls_verify": False}
    with caplog.at_level("WARNING", logger="upkeeper.tasks.redis._conn"):
        res = run_task("redis.check", target)
    assert res.final_status is Status.OK, res.findings
    assert "TLS certificate is not checked (tls_verify: false)" in caplog.text


def _hashed_dir(directory: Path, *certs: Path) -> Path:
    """A CA directory as `openssl rehash` makes it: each certificate under ``<subject hash>.0``."""
    import subprocess

    directory.mkdir()
    for cert in certs:
        digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)], check=True,
                                capture_output=True, text=True).stdout.strip()
        (directory / f"{digest}.0").symlink_to(cert)
    return directory


def test_ca_directory(cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer, pki: Pki,
                      age_key: AgeKey) -> None:
    """tls_ca_dir (redis-cli --cacertdir, capath): alone, beside tls_ca_file, and its three ways to fail."""
    tls_clean.client().set("k", "v")
    good = _hashed_dir(tmp_path / "certs", pki.other_ca.cert, pki.ca.cert)
    target = {**tls_clean.target(), "tls_ca_file": None, "tls_ca_dir": str(good)}
    # the download goes through redis-cli --cacertdir
    cfg = _config(make_config, tmp_path, target, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    both = {**target, "tls_ca_file": str(pki.other_ca.cert)}  # either may hold the server's CA
    assert run_task("redis.check", both).final_status is Status.OK

    wrong = _hashed_dir(tmp_path / "other", pki.other_ca.cert)
    [f] = checks(run_task("redis.check", {**target, "tls_ca_dir": str(wrong)}))["redis.unreachable"]
    assert f"the check against tls_ca_dir {wrong}:" in f.message, f.message
    assert "tls_ca_dir" in (f.remediation or "") and "openssl rehash" in (f.remediation or "")
    unhashed = tmp_path / "unhashed"
    unhashed.mkdir()
    (unhashed / "ca.crt").symlink_to(pki.ca.cert)
    for path, expected in ((unhashed, f"tls_ca_dir {unhashed} holds no CA certificate under a hashed name"),
                           (tmp_path / "missing", f"cannot read tls_ca_dir {tmp_path / 'missing'}")):
        [f] = checks(run_task("redis.check", {**target, "tls_ca_dir": str(path)}))["redis.unreachable"]
        assert expected in f.message and "openssl rehash" in (f.remediation or ""), f.message


def test_key_with_passphrase(cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer, pki: Pki,
                             age_key: AgeKey) -> None:
    """An encrypted client key with tls_key_password_file: the checks connect with it, and the network
    download (redis-cli, which cannot take a passphrase) goes through upkeeper's own TLS connection; the
    passphrase is in no argv, output or history."""
    import shutil

    passphrase = "correct horse battery staple"
    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), password=None)
    encrypted = tmp_path / "client.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(passphrase.encode())))
    secret = tmp_path / "key.pass"
    secret.write_text(passphrase + "\n")
    target = {**tls_clean.target(), "tls_key_file": str(encrypted), "tls_key_password_file": str(secret)}
    c = tls_clean.client()
    for i in range(200):
        c.set(f"session:{i}", f"user-{i}")
    assert run_task("redis.check", target).final_status is Status.OK

    # the real redis-cli, behind a script that writes down its arguments
    bindir, argv_log = tmp_path / "bin", tmp_path / "redis-cli.argv"
    bindir.mkdir()
    (bindir / "redis-cli").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {argv_log}\n"
                                      f"exec {shutil.which('redis-cli')} \"$@\"\n")
    (bindir / "redis-cli").chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    cfg = _config(make_config, tmp_path, target, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"], env=env)
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    download = argv_log.read_text().splitlines()
    assert "--rdb" in download and "-s" in download, download
    assert "--key" not in download and "--tls" not in download and str(encrypted) not in download
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    assert json.loads(mpath.read_text())["redis"]["keys"]["db0"] == 200  # checked by redis-check-rdb too

    secret.write_text("not the passphrase")
    [f] = checks(run_task("redis.check", target))["redis.unreachable"]
    assert f"tls_key_password_file {secret} does not decrypt tls_key_file {encrypted}" in f.message, f.message
    r = cli(["--config", cfg, "run", "cache-backup", "--json"], env=env)
    assert r.code == 1 and "does not decrypt" in r.json()[0]["summary"], r.output
    history = (tmp_path / "history.db").read_bytes()
    for text in (r.output, f.message, argv_log.read_text()):
        assert passphrase not in text and "not the passphrase" not in text
    assert passphrase.encode() not in history and b"not the passphrase" not in history


# --- the TLS relay of redis-cli (a client key with a passphrase) and its failures --------------------------------

def _passphrase_target(tmp_path: Path, server: RedisServer, pki: Pki, passphrase: str = "relay pass"
                       ) -> dict[str, Any]:
    """The server's target with the client key encrypted and tls_key_password_file holding ``passphrase``:
    redis.backup's network download then goes through the relay (tls_relay)."""
    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), password=None)
    encrypted = tmp_path / "relay-client.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"relay pass")))
    secret = tmp_path / "relay-key.pass"
    secret.write_text(passphrase + "\n")
    return {**server.target(), "tls_key_file": str(encrypted), "tls_key_password_file": str(secret)}


@dataclass(frozen=True)
class _Held:
    """What this process holds that a relay could leave behind: its threads, sockets, temp directories and child
    processes, and the server's client connections (by id).  Compared as "nothing new": a connection or socket of
    an earlier test that ends meanwhile (a client the cyclic GC closes late) is no leak of this one."""

    threads: tuple[str, ...]
    sockets: frozenset[str]
    relay_dirs: frozenset[str]
    children: frozenset[int]
    server_clients: frozenset[int]

    @staticmethod
    def now(probe: Any) -> _Held:
        import threading

        me = str(os.getpid())
        sockets = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/self/fd/{fd}")
                if link.startswith("socket:"):
                    sockets.add(link)
        children = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat[stat.rindex(")") + 2:].split()[1] == me:
                    children.add(int(pid))
        return _Held(tuple(sorted(t.name for t in threading.enumerate() if "relay" in t.name)), frozenset(sockets),
                     frozenset(p.name for p in Path(tempfile.gettempdir()).glob("upkeeper-tls-relay-*")),
                     frozenset(children), frozenset(_client_ids(probe)))

    def new_since(self, before: _Held) -> dict[str, Any]:
        """What is held now that ``before`` did not hold (empty: nothing left behind)."""
        from collections import Counter

        new = {"threads": sorted((Counter(self.threads) - Counter(before.threads)).elements()),
               "sockets": sorted(self.sockets - before.sockets),
               "relay_dirs": sorted(self.relay_dirs - before.relay_dirs),
               "children": sorted(self.children - before.children),
               "server_clients": sorted(self.server_clients - before.server_clients)}
        return {k: v for k, v in new.items() if v}


def _nothing_left(probe: Any, before: _Held) -> None:
    """Nothing held that ``before`` did not (``probe``: a client of the server) within a few seconds (the server
    sees a hang-up a moment later)."""
    deadline = time.monotonic() + 15  # generous: under a loaded machine a worker process ends slowly
    while (new := _Held.now(probe).new_since(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new, (new, [(c.get("id"), c.get("addr"), c.get("name"), c.get("cmd"), c.get("age"))
                           for c in probe.client_list()])


def _failed_run(cli: Any, cfg: Path, tmp_path: Path, status: str = "fail") -> dict[str, Any]:
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 1 and "Traceback" not in r.output, r.output
    [run] = r.json()
    assert run["status"] == status, run
    assert not list((tmp_path / "store").rglob("manifest.json"))
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    return dict(run)


def test_relay_failures_before_the_download_end_clearly_and_leave_nothing(
        cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer, pki: Pki, age_key: AgeKey,
        tls_probe: Any) -> None:
    """The relay's own TLS connection fails — the server's certificate not signed by a CA of tls_ca_dir, the
    passphrase wrong, nothing listening: a TaskError naming the cause, and neither its thread, socket nor temp
    directory is left, nor a connection to the server.  A backup run fails the same way (at its client's first
    round trip, before the relay), listing no backup."""
    from upkeeper.tasks.redis._conn import tls_relay

    target = _passphrase_target(tmp_path, tls_clean, pki)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    (tmp_path / "wrong.pass").write_text("not it\n")
    cases = [
        ({"tls_ca_file": None, "tls_ca_dir": str(_hashed_dir(tmp_path / "other", pki.other_ca.cert))},
         "the server's TLS certificate failed the check against tls_ca_dir", True),
        ({"tls_key_password_file": str(tmp_path / "wrong.pass")}, "does not decrypt tls_key_file", False),
        ({"port": closed_port}, f"cannot connect to Redis rediss://127.0.0.1:{closed_port}", True),
    ]
    probe = tls_probe
    probe.ping()
    before = _Held.now(probe)
    for fields, cause, as_run in cases:  # (a wrong passphrase's run: test_key_with_passphrase)
        with pytest.raises(TaskError) as exc, tls_relay(RedisTarget.model_validate({**target, **fields})):
            pytest.fail("the relay yielded")
        assert cause in exc.value.message, exc.value.message
        _nothing_left(probe, before)
        if as_run:
            run = _failed_run(cli, _config(make_config, tmp_path, {**target, **fields}, age_key, "network"),
                              tmp_path, "error")
            assert cause in run["summary"], run


def test_relay_server_ending_or_refusing_the_transfer_fails_the_run_and_ends_the_relay(
        cli: Any, make_config: Any, tmp_path: Path, tls_clean: RedisServer, pki: Pki, age_key: AgeKey,
        tls_probe: Any) -> None:
    """Through the relay, the server ends the download's connection once the transfer is under way (CLIENT KILL
    of the replica redis-cli --rdb is to it, while the server waits repl-diskless-sync-delay), or refuses SYNC
    (ACL): the download fails naming the cause, the relay's thread ends, its socket, temp directory and the
    server's connection are gone, redis-cli has exited; the run fails listing no backup."""
    import threading

    from upkeeper.errors import BackupError
    from upkeeper.tasks.backup.redis import RedisBackup, _cli_argv
    from upkeeper.tasks.redis._conn import tls_relay

    target = _passphrase_target(tmp_path, tls_clean, pki)
    probe = tls_probe
    probe.set("k", "v")
    before = _Held.now(probe)
    killed: list[int] = []

    def kill_the_transfer() -> None:
        deadline = time.monotonic() + 10
        while not killed and time.monotonic() < deadline:
            if probe.client_list(_type="replica"):
                killed.append(probe.client_kill_filter(_type="replica"))
            time.sleep(0.05)

    probe.config_set("repl-diskless-sync-delay", 3)
    try:
        killer = threading.Thread(target=kill_the_transfer)
        killer.start()
        t = RedisTarget.model_validate(target)
        dest = tmp_path / "dump.rdb"
        t0 = time.monotonic()
        with pytest.raises(BackupError) as exc, tls_relay(t) as relay:
            argv, env = _cli_argv(t, relay.path)
            try:
                RedisBackup._download([*argv, "--rdb", str(dest)], env, dest, t, 10)
            except BackupError as failed:
                raise relay.explain(failed) from None
        killer.join()
        assert killed == [1] and time.monotonic() - t0 < 6, killed  # not the 10 s stall timeout
        cause = "exited with code 1: Error reading bulk length while SYNCing — the server closed the connection " \
                "before the whole RDB arrived (confirmed by upkeeper's TLS relay)"
        assert cause in exc.value.message, exc.value.message
        _nothing_left(probe, before)

        killed.clear()
        killer = threading.Thread(target=kill_the_transfer)
        killer.start()
        cfg = _config(make_config, tmp_path, target, age_key, "network")
        run = _failed_run(cli, cfg, tmp_path)
        killer.join()
        assert killed == [1] and cause in run["summary"], run
    finally:
        probe.config_set("repl-diskless-sync-delay", 0)
    probe.execute_command("ACL", "SETUSER", "default", "-sync", "-psync")
    try:
        run = _failed_run(cli, cfg, tmp_path)
    finally:
        probe.execute_command("ACL", "SETUSER", "default", "+@all")
    assert "NOPERM" in run["summary"] and "+sync" in run["findings"][0]["remediation"], run
    _nothing_left(probe, before)
