"""A test restore of an RDB: a throw-away ``redis-server`` (no TCP port: a unix socket in a private temp dir, no
saves, no AOF) loads it, as backup verification runs it; shut down at the end, even on failure."""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.core import proc
from upkeeper.errors import BackupError, SetupError
from upkeeper.redact import redact, redact_redis_command, redis_command_secrets, register_secret

if TYPE_CHECKING:
    import redis
else:
    redis = lazy.module("redis")

#: Redis' default number of databases; a scratch server gets more when the RDB selects a higher one
DEFAULT_DATABASES = 16
#: seconds the scratch server may take to start (create its socket) and to stop
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: a unix socket path longer than this does not fit sockaddr_un (108 bytes with its NUL)
SOCKET_PATH_MAX = 100
_VERSION = re.compile(r"v=(\d+)\.(\d+)(?:\.(\d+))?")
_FATAL = ("# ", "Fatal", "FATAL", "Can't", "Short read", "Bad file format", "Wrong RDB checksum", "error")


@dataclass
class Loaded:
    """What the scratch server loaded: the keys it kept, those it dropped as already expired, the keys of each
    database (INFO keyspace), and the seconds the load took."""

    keys_loaded: int
    keys_expired: int
    db_keys: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def server_binary() -> str | None:
    return shutil.which("redis-server")


def server_version(binary: str) -> tuple[int, int, int] | None:
    """``redis-server --version`` ("Redis server v=7.0.15 sha=…"): (7, 0, 15), or None when it does not say."""
    res = proc.run([binary, "--version"], check=False, timeout=30)
    m = _VERSION.search(res.text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def check_server_version(binary: str, made_by: str | None) -> str:
    """This host's redis-server can load an RDB of the Redis ``made_by``: the same major.minor release or a newer
    one (each minor release may bring a new RDB format version, which an older server refuses).  Its version
    ("7.0.15"); a :class:`SetupError` naming both when it is older — this host's setup, not the backup's."""
    have = server_version(binary)
    want = parse_version(made_by)
    shown = ".".join(map(str, have)) if have else "?"
    if have is not None and want is not None and have[:2] < want[:2]:
        raise SetupError(
            f"this host's redis-server {shown} ({binary}) is older than the Redis {made_by} that made the backup: "
            "it need not load its RDB (a newer RDB format version), so the backup was not test-restored",
            "Try: install redis-server of the backed-up server's version or newer on the verifying host")
    return shown


def _socket_dir(work: Path) -> contextlib.AbstractContextManager[str]:
    """Where the scratch server's socket goes: ``work`` itself unless its path is too long for a socket."""
    if len(str(work / "redis.sock")) <= SOCKET_PATH_MAX:
        return contextlib.nullcontext(str(work))
    return tempfile.TemporaryDirectory(prefix="upkeeper-verify-sock-")


@contextlib.contextmanager
def load_rdb(binary: str, rdb: Path, databases: int, timeout: float = 3600.0) -> Iterator[tuple[Any, Loaded]]:
    """Start ``binary`` on ``rdb`` (its directory holds the server's files: nothing else may be in it) and wait
    until the RDB is loaded; yields a client on the server's socket and what it loaded.  The server is shut
    down when the block ends, even on failure.  A server that exits while loading raises :class:`BackupError`
    with the error from its log, or :class:`SetupError` when it cannot read the RDB's format version."""
    work = rdb.parent
    log_path = work / "redis-server.log"
    log_path.unlink(missing_ok=True)  # its lines explain a failed load: only this server's
    with _socket_dir(work) as sock_dir:
        sock = str(Path(sock_dir) / "redis.sock")
        argv = [binary, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "",
                "--appendonly", "no", "--dir", str(work), "--dbfilename", rdb.name, "--logfile", str(log_path),
                "--daemonize", "no", "--databases", str(max(databases, DEFAULT_DATABASES)),
                "--protected-mode", "yes", "--maxmemory", "0"]
        t0 = time.monotonic()
        with proc.spawn(argv, stdout=subprocess.DEVNULL) as p:
            box: list[Any] = []
            try:
                loaded = _wait_loaded(p, box, sock, log_path, timeout, t0)
                yield box[0], loaded
            finally:
                for client in box:
                    client.close()
                if p.popen.poll() is None:
                    p.popen.terminate()  # SIGTERM: with no save points and no AOF it exits without saving
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.popen.wait(timeout=STOP_TIMEOUT)


def _wait_loaded(p: proc.Spawned, box: list[Any], sock: str, log_path: Path, timeout: float, t0: float) -> Loaded:
    """Wait until the server has loaded the RDB; its client is put in ``box`` (one connection: a smoke check's
    SELECT holds for the checks after it), made once the socket accepts connections."""
    deadline = t0 + timeout
    while True:
        if (rc := p.popen.poll()) is not None:
            raise _load_failed(rc, log_path)
        if time.monotonic() > deadline:
            raise BackupError(f"the scratch redis-server did not finish loading the RDB within {timeout:g}s")
        if Path(sock).exists():
            persistence = None
            try:
                if not box:
                    box.append(redis.Redis(unix_socket_path=sock, socket_timeout=60, single_connection_client=True))
                persistence = box[0].info("persistence")
            except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                pass
            if persistence is not None and not persistence.get("loading"):
                keyspace = box[0].info("keyspace")
                return Loaded(int(persistence.get("rdb_last_load_keys_loaded", -1)),
                              int(persistence.get("rdb_last_load_keys_expired", 0)),
                              {db: int(v.get("keys", 0)) for db, v in keyspace.items()
                               if db.startswith("db") and isinstance(v, dict)},
                              time.monotonic() - t0)
        elif time.monotonic() - t0 > START_TIMEOUT:
            raise SetupError(f"the scratch redis-server did not open its socket within {START_TIMEOUT:g}s")
        time.sleep(0.05)


def _load_failed(code: int, log_path: Path) -> BackupError | SetupError:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    # the log's lines look like "1234:M 04 Dec 2026 23:35:10.169 # Short read or OOM loading DB..."
    texts = [ln.split(" ", 5)[-1].lstrip("#*-. ") for ln in lines if ln.strip()]
    errors = [t for t in texts if any(k in t for k in _FATAL)] or texts
    text = "; ".join(dict.fromkeys(errors[-3:]))[-500:] or "no log"
    m = re.search(r"Can't handle RDB format version (\d+)", text)
    if m:
        return SetupError(f"the scratch redis-server cannot read RDB format version {m.group(1)}: {text}",
                          "Try: install redis-server of the backed-up server's version or newer on the verifying host")
    if "module" in text.lower():
        return SetupError(f"the scratch redis-server cannot load the RDB: {text}",
                          "Try: the RDB holds module data types: load the same modules on the verifying host")
    return BackupError(f"redis-server could not load the RDB ({proc.describe_exit(code)}): {text}")


def compare_keys(loaded: Loaded, expected: dict[str, int], total: int | None) -> list[str]:
    """Problems between what the scratch server holds and what the backup recorded of its RDB: ``expected``
    per database (the RDB's own counts, taken when it was made), ``total`` the keys in the file.

    Keys whose TTL ran out since the snapshot was taken are dropped while loading (``keys expired``): every
    key of the file must be either loaded or expired (exact), and each database may hold fewer keys than
    recorded, by no more than the expired keys altogether — never more."""
    problems: list[str] = []
    if total is not None and loaded.keys_loaded >= 0 and loaded.keys_loaded + loaded.keys_expired != total:
        problems.append(f"the RDB holds {total} key(s), the server loaded {loaded.keys_loaded} and dropped "
                        f"{loaded.keys_expired} as expired")
    missing = 0
    for db in sorted(set(expected) | set(loaded.db_keys), key=lambda d: int(d[2:]) if d[2:].isdigit() else 0):
        want, got = expected.get(db, 0), loaded.db_keys.get(db, 0)
        if got > want:
            problems.append(f"{db}: {got} key(s) restored, the backup recorded {want}")
        missing += want - got if got < want else 0
    if missing > loaded.keys_expired:
        short = [f"{db}: {loaded.db_keys.get(db, 0)} of {n}" for db, n in sorted(expected.items())
                 if loaded.db_keys.get(db, 0) < n]
        problems.append(f"{missing} key(s) missing, only {loaded.keys_expired} expired while loading "
                        f"({', '.join(short[:4])})")
    return problems


def redis_check_problem(check: str) -> str | None:
    """Why ``check`` is no Redis command line (empty, or quotes that do not close), its password masked; None
    when it is one.  Said by config check and the CLI, so a typo is not taken for a broken backup."""
    try:
        argv = shlex.split(check)
    except ValueError as exc:
        words = check.split()
        for secret in redis_command_secrets(words):
            register_secret(secret)
        return f"{redact_redis_command(words)!r} is no Redis command line: {exc}"
    if not argv:
        return "an empty check runs nothing: give a Redis command such as 'EXISTS config:site'"
    return None


def smoke(client: Any, checks: Sequence[str]) -> None:
    """Each check is a Redis command line ("EXISTS config:site", "SELECT 3"), run in order on one connection
    to the restored data; its reply must be true: a non-zero number, a non-empty string or list, OK.  A check's
    password (``AUTH user pass``, ``CONFIG SET requirepass …``) is registered as a secret and never shown."""
    for check in checks:
        try:
            argv = shlex.split(check)
        except ValueError as exc:
            words = check.split()
            for secret in redis_command_secrets(words):
                register_secret(secret)
            raise BackupError(f"smoke check {redact_redis_command(words)!r} cannot be parsed: {exc}") from None
        if not argv:
            continue
        for secret in redis_command_secrets(argv):
            register_secret(secret)
        shown = redact_redis_command(argv)
        try:
            reply = client.execute_command(*argv)
        except redis.exceptions.RedisError as exc:  # also AUTH's AuthenticationError, a server gone (SHUTDOWN)
            raise BackupError(f"smoke check {shown!r} failed: {redact(str(exc) or type(exc).__name__)}") from None
        if not reply or reply in (b"0", "0"):
            raise BackupError(f"smoke check {shown!r} returned {reply!r}, expected a true reply")
