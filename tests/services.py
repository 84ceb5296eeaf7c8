"""Real services for the test suite, started by the suite itself.

Session-scoped fixtures start one server of each kind (per xdist worker) on free
loopback ports; function-scoped fixtures hand each test a clean database or key
space.  Nothing here is a mock: these are the real PostgreSQL, Redis and nginx.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """A directory the service users (postgres, nobody) can reach; pytest's own tmp is 0700."""
    d = Path(tempfile.mkdtemp(prefix="upk-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(services_dir: Path) -> Iterator[PostgresCluster]:
    """A real PostgreSQL 15 cluster for the whole session."""
    cluster = PostgresCluster(services_dir / "pg")
    cluster.start()
    yield cluster
    cluster.stop()


_db_counter = 0


@pytest.fixture
def pg_db(pg: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session cluster; dropped afterwards."""
    global _db_counter
    _db_counter += 1
    name = f"t{_db_counter}_{os_pid()}"
    pg.create_database(name)
    yield name
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def os_pid() -> int:
    import os

    return os.getpid()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(services_dir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_clean(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session Redis with an empty key space, and no background save or rewrite an earlier test started still
    running (a SAVE or BGSAVE of the next test failed with 'Background save already in progress')."""
    _redis_persistence_idle(redis_server)
    redis_server.client().flushall()
    yield redis_server
    redis_server.client().flushall()


def _redis_persistence_idle(server: RedisServer, timeout: float = 120.0) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        if not info.get("rdb_bgsave_in_progress") and not info.get("aof_rewrite_in_progress"):
            return
        assert time.monotonic() < deadline, f"Redis still saving after {timeout:g} s: {info}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def nginx(services_dir: Path) -> Iterator[NginxServer]:
    server = NginxServer(services_dir / "nginx")
    server.start()
    yield server
    server.stop()


# --- PostgreSQL streaming replication (postgres.maintenance replication checks) ---------------------


@pytest.fixture(scope="session")
def pg_primary_replica(services_dir: Path) -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    """A primary of its own and a streaming replica of it (pg_basebackup -R -X stream, slot 'replica1')."""
    primary = PostgresCluster(services_dir / "pg-primary")
    primary.start()
    replica = primary.create_replica(services_dir / "pg-replica", slot="replica1")
    yield primary, replica
    replica.stop()
    primary.stop()


# -- notification receivers (issue 5) -------------------------------------------------------
# A real SMTP server (aiosmtpd) and HTTP receivers for Slack-format webhooks and PagerDuty
# Events API v2.  Session-scoped servers; the function-scoped fixtures hand each test an
# empty inbox.

from upkeeper.sandbox.receivers import HttpReceiver, PagerDutyReceiver  # noqa: E402
from upkeeper.sandbox.smtp import SmtpServer  # noqa: E402


@pytest.fixture(scope="session")
def smtp_session() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_session: SmtpServer) -> Iterator[SmtpServer]:
    """The session SMTP server with an empty inbox."""
    smtp_session.clear()
    yield smtp_session
    smtp_session.clear()


@pytest.fixture
def webhook_receiver() -> Iterator[HttpReceiver]:
    """A fresh HTTP receiver (its own port, so a test may stop and restart it)."""
    r = HttpReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyReceiver]:
    r = PagerDutyReceiver().start()
    yield r
    r.stop()


# --- storage: S3 (SeaweedFS), SFTP (sshd), a tiny filesystem -------------------------------------------------
# Owned by the storage layer (tests/storage/); the backup tests use them too.

import os  # noqa: E402
import pwd  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from upkeeper.config.storage import LocalStorageConfig, S3StorageConfig, SftpStorageConfig  # noqa: E402
from upkeeper.sandbox._util import free_port  # noqa: E402
from upkeeper.sandbox.s3 import SeaweedS3  # noqa: E402
from upkeeper.sandbox.sshd import SshServer  # noqa: E402


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS ``weed mini``) with authentication on, for the whole session."""
    server = SeaweedS3(services_dir / "s3")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> Iterator[str]:
    """A fresh, empty bucket on the session S3 server; emptied and deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    yield name
    if s3_server.running:
        s3_server.delete_bucket(name)


S3_TLS_PROXY = """\
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{port};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
"""


@dataclass
class TlsS3:
    """The session S3 server behind nginx terminating TLS with a private CA (how MinIO often runs)."""

    server: SeaweedS3
    endpoint: str
    ca_file: Path

    def storage_config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        return self.server.storage_config(bucket, **{"endpoint_url": self.endpoint, "ca_file": str(self.ca_file),
                                                     **extra})


def start_tls_proxy(base: Path, upstream_port: int, name: str, hosts: list[str]) -> tuple[NginxServer, Path]:
    """nginx on a free port terminating TLS (a self-signed certificate for ``hosts``) in front of
    ``upstream_port``; returns the started server and the certificate (its own CA)."""
    from upkeeper.sandbox.nginx import server_block
    from upkeeper.sandbox.tls import self_signed

    cert = self_signed(base / "pki", name, hosts=hosts, stem="proxy")
    port = free_port()
    proxy = NginxServer(base, port, servers=server_block(base, port, base / "www", cert=cert.cert, key=cert.key,
                                                         extra=S3_TLS_PROXY.format(port=upstream_port)))
    return proxy.start(), cert.cert


@pytest.fixture(scope="session")
def s3_tls(s3_server: SeaweedS3, services_dir: Path) -> Iterator[TlsS3]:
    proxy, ca = start_tls_proxy(services_dir / "s3-tls", s3_server.port, "localhost", ["localhost", "127.0.0.1"])
    yield TlsS3(s3_server, f"https://127.0.0.1:{proxy.port}", ca)
    proxy.stop()


def s3_storage_config(server: SeaweedS3, bucket: str, **extra: Any) -> S3StorageConfig:
    """A validated ``kind: s3`` storage config for ``bucket`` on ``server`` (extra fields override)."""
    return S3StorageConfig.model_validate(server.storage_config(bucket, **extra))


@pytest.fixture(scope="session")
def sftp_server(services_dir: Path) -> Iterator[SshServer]:
    """A real OpenSSH server (internal-sftp, key auth) for the whole session; see ``sftp_storage_config``."""
    server = SshServer(services_dir / "sshd")
    server.start()
    yield server
    server.stop()


def sftp_storage_config(server: SshServer, path: str | None = None, *, create: bool = True,
                        **extra: Any) -> SftpStorageConfig:
    """A validated ``kind: sftp`` storage config; ``path`` defaults to a fresh directory in the server's home.
    The server runs on this machine: its directory is made there first and given to the SSH user (as the server's
    admin would: upkeeper never creates it) unless ``create`` is false."""
    path = path or str(server.home / f"t-{uuid.uuid4().hex[:12]}")
    if create and not Path(path).is_dir():
        Path(path).mkdir(mode=0o700, parents=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(server.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)
    data: dict[str, Any] = {
        "kind": "sftp", "host": "127.0.0.1", "port": server.port, "user": server.user,
        "key_file": str(server.client_key), "known_hosts": str(server.known_hosts), "path": path,
    }
    return SftpStorageConfig.model_validate({**data, **extra})


def local_storage_config(path: Path, *, create: bool = True, **extra: Any) -> LocalStorageConfig:
    """A ``kind: local`` storage config; its directory is made first (as an admin would: upkeeper never creates
    it) unless ``create`` is false."""
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return LocalStorageConfig.model_validate({"kind": "local", "path": str(path), **extra})


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted fresh for this test: the "local storage full" fault.  Needs root."""
    if os.geteuid() != 0:
        pytest.skip("small_fs mounts a 2 MiB tmpfs, which needs root")
    mnt = Path(tempfile.mkdtemp(prefix="upk-small-fs-", dir="/tmp"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs for small_fs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Log analysis (issue 7): an nginx whose site answers with a mix of statuses and trusts
# X-Forwarded-For from 127.0.0.1, so test traffic can come from many client addresses.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site_nginx(services_dir: Path) -> Iterator[NginxServer]:
    from upkeeper.sandbox.traffic import SITE_EXTRA, prepare_docroot

    server = NginxServer(services_dir / "site-nginx", server_extra=SITE_EXTRA)
    server.docroot.mkdir(parents=True, exist_ok=True)
    prepare_docroot(server.docroot)
    server.start()
    yield server
    server.stop()


def nginx_reopen(server: NginxServer, timeout: float = 15.0) -> None:
    """``nginx -s reopen``: what logrotate's postrotate does.  Returns once nginx's master and every worker write
    to the file now at ``access_log`` (they reopen asynchronously: the master on the signal, the workers when it
    tells them; on a loaded machine that took longer than a fixed pause, and lines went to the old file).  The
    signal is sent again every 2 s until then; after ``timeout`` the failure names what nginx had open."""
    import os
    import subprocess
    import time

    import psutil

    def signal_reopen() -> None:
        subprocess.run([server.binary, "-c", str(server.conf), "-p", f"{server.base}/", "-e",
                        str(server.error_log), "-s", "reopen"], check=True, capture_output=True)

    def holders() -> dict[int, list[str]]:
        """nginx's processes (the master from the pid file, its workers) → the files they hold open."""
        master = psutil.Process(int((server.base / "nginx.pid").read_text().split()[0]))
        out: dict[int, list[str]] = {}
        for proc in [master, *master.children()]:
            try:
                out[proc.pid] = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
            except (FileNotFoundError, ProcessLookupError):
                continue
        return out

    def reopened() -> bool:
        try:
            st = server.access_log.stat()
        except FileNotFoundError:
            return False
        for pid in holders():
            inodes = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    s = os.stat(f"/proc/{pid}/fd/{fd}")
                except FileNotFoundError:
                    continue
                inodes.add((s.st_dev, s.st_ino))
            if (st.st_dev, st.st_ino) not in inodes:
                return False
        return True

    signal_reopen()
    deadline = time.monotonic() + timeout
    resend = time.monotonic() + 2
    while not reopened():
        if time.monotonic() > deadline:
            tail = server.error_log.read_text(errors="replace")[-2000:] if server.error_log.exists() else "(none)"
            raise AssertionError(f"nginx did not reopen {server.access_log} within {timeout:.0f} s; its processes "
                                 f"hold {holders()}; error.log ends:\n{tail}")
        if time.monotonic() > resend:
            signal_reopen()
            resend = time.monotonic() + 2
        time.sleep(0.05)


@pytest.fixture
def fresh_site_log(site_nginx: NginxServer, tmp_path: Path) -> Iterator[NginxServer]:
    """The site nginx with an empty access log (the old one is moved away and nginx reopens)."""
    log = site_nginx.access_log
    if log.exists():
        log.rename(tmp_path / "previous-access.log")
    for old in site_nginx.base.glob("access.log.*"):
        old.unlink()
    nginx_reopen(site_nginx)
    yield site_nginx


@pytest.fixture(scope="session")
def logging_pg(services_dir: Path) -> Iterator[tuple[PostgresCluster, dict[str, int]]]:
    """A cluster that logs every statement (logging collector on) after a workload ran on it."""
    from upkeeper.sandbox import pgworkload

    conf = pgworkload.LOGGING_CONF + ("logging_collector = on\nlog_directory = 'log'\n"
                                      "log_filename = 'postgresql.log'\nlog_rotation_size = 0\n")
    cluster = PostgresCluster(services_dir / "pg-logging", extra_conf=conf)
    cluster.start()
    done = pgworkload.run(lambda: cluster.connect())
    yield cluster, done
    cluster.stop()


def wait_for_log_lines(path: Path, n: int, timeout: float = 10.0) -> int:
    """nginx writes an access-log line after the response: wait until ``n`` lines are there (returns how many
    there are).  Fewer after ``timeout`` fails the test here, naming the file, rather than later in a way that
    hides why."""
    import time

    deadline = time.monotonic() + timeout
    count = 0
    while True:
        count = path.read_bytes().count(b"\n") if path.exists() else 0
        if count >= n:
            return count
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {count} line(s) after {timeout:.0f} s, expected {n}"
                                 + ("" if path.exists() else " (the file does not exist)"))
        time.sleep(0.05)


def write_app_log(path: Path, errors: list[BaseException], message: str = "request failed") -> None:
    """An application log as Python's logging writes it: one ``logger.exception`` traceback per error."""
    import logging

    logger = logging.getLogger(f"upk-app-{path}")
    logger.propagate = False
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        for err in errors:
            try:
                raise err
            except BaseException:
                logger.exception(message)
    finally:
        handler.close()
        logger.removeHandler(handler)


def pid_namespace_argv() -> list[str]:
    """The argv prefix that runs a command in a PID namespace of its own (a container's view of the pids: its
    first process is pid 1); skips the test where one cannot be made."""
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux)")
    cmd = [unshare, "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        cmd[1:1] = ["--user", "--map-root-user"]
    if subprocess.run([*cmd, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a PID namespace here")
    return cmd


# ---------------------------------------------------------------------------------------------
# rsyslogd: PostgreSQL's log_destination = 'syslog' (logs.postgres' syslog format)
# ---------------------------------------------------------------------------------------------

#: one rsyslogd for the test session, shared by the xdist workers (and by concurrent sessions): its own config,
#: pid file and work directory here, the system's /dev/log as its only input
SYSLOG_DIR = Path("/tmp/upk-test-rsyslog")
RSYSLOG_CONF = """\
global(workDirectory="{d}/work")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
template(name="upk_prog" type="string" string="{d}/out/%programname%.log")
template(name="upk_prog_iso" type="string" string="{d}/out/%programname%.iso.log")
action(type="omfile" dynaFile="upk_prog" template="RSYSLOG_TraditionalFileFormat")
action(type="omfile" dynaFile="upk_prog_iso" template="RSYSLOG_FileFormat")
action(type="omfile" file="{d}/out/all.log" template="RSYSLOG_TraditionalFileFormat")
"""


class Syslogd:
    """The session's rsyslogd: what a program logs through syslog(3) lands in ``file(ident)`` (the traditional
    form, ``Dec  7 08:00:00 host ident[pid]: …``), ``file(ident, iso=True)`` (RFC 3339 times) and ``all`` (every
    program's lines, as /var/log/messages)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.all = base / "out" / "all.log"

    def file(self, ident: str, iso: bool = False) -> Path:
        return self.base / "out" / f"{ident}{'.iso' if iso else ''}.log"

    def wait_for(self, path: Path, text: str, timeout: float = 20.0) -> None:
        """Until ``text`` is in ``path`` (rsyslog writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and text.encode() in path.read_bytes():
                return
            time.sleep(0.05)
        pytest.fail(f"rsyslogd did not write {text!r} to {path} within {timeout} s")


def _our_rsyslogd(base: Path) -> int | None:
    try:
        pid = int((base / "rsyslogd.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm.startswith("rsyslogd") and state != "Z" else None


def _dev_log_listened() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect("/dev/log")
    except OSError:
        return False
    finally:
        s.close()
    return True


@pytest.fixture(scope="session")
def syslogd() -> Iterator[Syslogd]:
    """A real rsyslogd reading /dev/log (where PostgreSQL's syslog(3) writes) into a file per program.  Started
    once under a file lock and reused by the other workers; the last worker using it stops it.  When a syslog
    daemon of the system owns /dev/log the tests are skipped: PostgreSQL writes to that one, whose files this
    suite does not know."""
    exe = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if exe is None:
        pytest.fail("rsyslogd is not installed (scripts/ensure-system-deps.sh installs the rsyslog package)")
    base = SYSLOG_DIR
    base.mkdir(mode=0o755, exist_ok=True)
    (base / "work").mkdir(exist_ok=True)
    (base / "out").mkdir(exist_ok=True)
    users = base / "users"
    with open(base / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            live = [p for p in (int(x) for x in users.read_text().split()) if psutil.pid_exists(p)] if users.exists() else []
            if _our_rsyslogd(base) is None:
                if _dev_log_listened():
                    pytest.skip("a syslog daemon of the system owns /dev/log: PostgreSQL's syslog messages go to "
                                "it, not to this suite's rsyslogd")
                Path("/dev/log").unlink(missing_ok=True)  # (a socket left by a daemon that died)
                shutil.rmtree(base / "out", ignore_errors=True)  # (an earlier session's files)
                (base / "out").mkdir()
                (base / "rsyslog.conf").write_text(RSYSLOG_CONF.format(d=base))
                subprocess.run([exe, "-f", str(base / "rsyslog.conf"), "-i", str(base / "rsyslogd.pid")],
                               check=True, timeout=30, capture_output=True)  # (it forks into the background)
                deadline = time.monotonic() + 10
                while not (_our_rsyslogd(base) and _dev_log_listened()):
                    if time.monotonic() > deadline:
                        pytest.fail("rsyslogd did not start listening on /dev/log within 10 s")
                    time.sleep(0.05)
            users.write_text(" ".join(str(p) for p in {*live, os.getpid()}))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield Syslogd(base)
    with open(base / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            live = [p for p in (int(x) for x in users.read_text().split()) if psutil.pid_exists(p) and p != os.getpid()]
            users.write_text(" ".join(map(str, live)))
            pid = _our_rsyslogd(base)
            if not live and pid is not None:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while _our_rsyslogd(base) is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
