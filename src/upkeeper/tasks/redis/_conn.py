"""Connecting to a Redis target (every Redis client upkeeper makes, and the TLS arguments of
``redis-cli --rdb``), reading INFO, and Redis's glob semantics (for the eviction guard)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.errors import BackupError, TaskError
from upkeeper.redact import redact

if TYPE_CHECKING:
    import socket
    import ssl

    import redis
    import redis.backoff
    import redis.connection
    import redis.retry
else:
    redis = lazy.module("redis", "backoff", "retry", "connection")

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _driver() -> dict[str, Any]:
    """redis-py >= 7: resolved once, so that it does not read package metadata per client (~4 ms each)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # pragma: no cover - older redis-py
        return {}
    return {"driver_info": DriverInfo()}


def _readable(target: RedisTarget, field: str, path: str, what: str = "a readable PEM file") -> str:
    """``path`` (of the target's ``field``) with ~ expanded, checked readable now: a typo must not read
    as an unreachable server."""
    import os

    full = os.path.expanduser(path)
    try:
        with open(full, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TaskError(f"Redis {target.display()}: cannot read {field} {full}: {exc.strerror or exc}",
                        f"Try: point {field} at {what}", permanent=True) from None
    return full


#: OpenSSL's names in a CA directory: the subject hash, a dot, a counter (``.r0``: a CRL, not a CA)
_HASHED = re.compile(r"[0-9a-f]{8}\.\d+")


def _ca_dir(target: RedisTarget, path: str) -> str:
    """``tls_ca_dir`` with ~ expanded, checked now: a readable directory holding at least one certificate
    under OpenSSL's hashed name (``<hash>.0``).  OpenSSL itself skips a missing or unhashed directory
    silently, and the handshake would then fail as if the server's CA were unknown."""
    import os

    full = os.path.expanduser(path)
    fix = ("Try: point tls_ca_dir at a directory of PEM CA certificates and run `openssl rehash DIR` (or "
           "c_rehash) on it, which names them <subject hash>.0; or give the CA's PEM file as tls_ca_file")
    try:
        names = os.listdir(full)
    except OSError as exc:
        raise TaskError(f"Redis {target.display()}: cannot read tls_ca_dir {full}: {exc.strerror or exc}", fix,
                        permanent=True) from None
    if not any(_HASHED.fullmatch(n) for n in names):
        raise TaskError(f"Redis {target.display()}: tls_ca_dir {full} holds no CA certificate under a hashed "
                        f"name (<hash>.0), the only names OpenSSL looks up there ({len(names)} other entries)",
                        fix, permanent=True)
    return full


def _key_password(target: RedisTarget) -> Callable[[], bytes]:
    """The passphrase of the client key, as ``load_cert_chain`` takes it: the content of
    ``tls_key_password_file`` without its trailing newline, read now.  Without that field, an empty one: an
    encrypted key must fail at once, not make OpenSSL ask for a passphrase on the terminal (a hang under the
    daemon).  The passphrase is never shown: errors name the file only."""
    from upkeeper.redact import register_secret

    if not target.tls_key_password_file:
        return lambda: b""
    full = _readable(target, "tls_key_password_file", target.tls_key_password_file,
                     "a readable file holding the key's passphrase")
    with open(full, "rb") as fh:
        secret = fh.read().rstrip(b"\r\n")
    if not secret:
        raise TaskError(f"Redis {target.display()}: tls_key_password_file {full} is empty",
                        "Try: write the passphrase of tls_key_file into it, or remove tls_key_password_file if "
                        "the key is not encrypted", permanent=True)
    register_secret(secret.decode("utf-8", errors="surrogateescape"))
    return lambda: secret


def _encrypted_pem(path: str) -> bool:
    """The PEM key file is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY``, or a traditional key with
    ``Proc-Type: 4,ENCRYPTED``): only its headers are looked at."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in head or b"Proc-Type: 4,ENCRYPTED" in head


def tls_context(target: RedisTarget) -> ssl.SSLContext:
    """The target's TLS settings as an SSL context: its CAs (``tls_ca_file`` and/or ``tls_ca_dir``; default:
    the system's CA bundle), its client certificate (its key decrypted with ``tls_key_password_file``), the
    certificate and the host name checked unless ``tls_verify`` is false.  A missing or malformed file is a
    permanent TaskError naming the field; the key's content and its passphrase are never shown."""
    import ssl

    ca = _readable(target, "tls_ca_file", target.tls_ca_file) if target.tls_ca_file else None
    ca_dir = _ca_dir(target, target.tls_ca_dir) if target.tls_ca_dir else None
    try:
        ctx = ssl.create_default_context(cafile=ca, capath=ca_dir)
    except ssl.SSLError as exc:
        raise TaskError(f"Redis {target.display()}: tls_ca_file {ca} holds no PEM certificate ({exc.reason})",
                        "Try: point tls_ca_file at the PEM file of the CA that signed the server's certificate "
                        "('-----BEGIN CERTIFICATE-----')", permanent=True) from None
    if not target.tls_verify:
        log.warning("Redis %s: the server's TLS certificate is not checked (tls_verify: false)", target.display())
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if target.tls_cert_file and target.tls_key_file:
        cert = _readable(target, "tls_cert_file", target.tls_cert_file)
        key = _readable(target, "tls_key_file", target.tls_key_file)
        password = _key_password(target)
        try:
            ctx.load_cert_chain(cert, key, password=password)
        except (ssl.SSLError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else None
            fix = ("Try: give the client certificate and the key it was issued for, both PEM; for a key that has "
                   "a passphrase, set tls_key_password_file to a file holding it (mode 0600)")
            if reason is None and _encrypted_pem(key):  # OpenSSL 3 gives a wrong passphrase no reason
                if target.tls_key_password_file:
                    raise TaskError(
                        f"Redis {target.display()}: the passphrase in tls_key_password_file "
                        f"{target.tls_key_password_file} does not decrypt tls_key_file {key}",
                        "Try: write the key's passphrase into tls_key_password_file (one line), or point "
                        "tls_key_file at the key it protects", permanent=True) from None
                raise TaskError(f"Redis {target.display()}: tls_key_file {key} is encrypted (has a passphrase) and "
                                "no tls_key_password_file is set: it is not an unencrypted private key", fix,
                                permanent=True) from None
            raise TaskError(
                f"Redis {target.display()}: tls_cert_file {cert} and tls_key_file {key} are not a PEM certificate "
                f"and its private key ({reason or 'unreadable'})", fix, permanent=True) from None
    return ctx


@lru_cache(maxsize=1)
def _tls_connection_class() -> type[redis.connection.Connection]:
    class TlsConnection(redis.connection.Connection):
        """A TCP connection wrapped in the SSL context the target's settings make, with its server name
        (redis-py's own SSLConnection always sends and checks the host it connects to)."""

        def __init__(self, *, tls_context: ssl.SSLContext, server_name: str, **kw: Any) -> None:
            super().__init__(**kw)  # type: ignore[no-untyped-call]
            self.tls_context = tls_context
            self.server_name = server_name

        def _connect(self) -> socket.socket:
            sock = super()._connect()  # type: ignore[no-untyped-call]
            try:
                return self.tls_context.wrap_socket(sock, server_hostname=self.server_name)
            except BaseException:
                sock.close()
                raise

    return TlsConnection


def client_for(target: RedisTarget, *, timeout: float | None = None, retries: bool = False) -> redis.Redis:
    """A redis-py client for the target (bytes responses: key names need not be UTF-8), over TLS when the
    target says so.  This is the only place upkeeper makes one.  Without ``retries`` (the default) a failed
    command is reported as the server answers it now: no silent reconnect-and-retry with backoff (the job
    has retries; a frozen server would otherwise hold each command for four socket timeouts)."""
    sock_timeout = timeout if timeout is not None else target.socket_timeout.total_seconds()
    kw: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password.get_secret_value() if target.password else None,
        "socket_timeout": sock_timeout,
        **_driver(),
    }
    if not retries:
        kw["retry"] = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    if target.unix_socket:
        return redis.Redis(unix_socket_path=target.unix_socket, **kw)
    kw.update(host=target.host, port=target.port, socket_connect_timeout=sock_timeout)
    if not target.tls:
        return redis.Redis(**kw)
    pool = redis.ConnectionPool(connection_class=_tls_connection_class(), tls_context=tls_context(target),
                                server_name=target.tls_server_name or target.host, **kw)
    return redis.Redis.from_pool(pool)  # the client owns the pool: close() disconnects it


def cli_args(target: RedisTarget, *, relay: str | None = None) -> list[str]:
    """redis-cli's arguments that reach the target, TLS included (not the password: REDISCLI_AUTH).  With
    ``relay`` (the unix socket of :func:`tls_relay`), redis-cli talks plain text to that socket instead: the
    way for a key with a passphrase, which redis-cli cannot take (it would ask on the terminal)."""
    if relay is not None:
        return ["-s", relay, *(["--user", target.username] if target.username else [])]
    if target.tls_key_password_file:
        raise TaskError(f"Redis {target.display()}: redis-cli cannot use tls_key_file with a passphrase "
                        "(tls_key_password_file): it has no option for one",
                        "Try: this path must go through tls_relay", permanent=True)
    argv = ["-s", target.unix_socket] if target.unix_socket else ["-h", target.host, "-p", str(target.port)]
    if target.username:
        argv += ["--user", target.username]
    if target.tls:
        argv.append("--tls")
        for flag, field in (("--cacert", "tls_ca_file"), ("--cert", "tls_cert_file"), ("--key", "tls_key_file")):
            path = getattr(target, field)
            if path:
                argv += [flag, _readable(target, field, path)]
        if target.tls_ca_dir:
            argv += ["--cacertdir", _ca_dir(target, target.tls_ca_dir)]
        name = target.tls_server_name or (None if _is_ip(target.host) else target.host)
        if name:
            argv += ["--sni", name]  # as Python's ssl does: an IP address is never sent as a server name
        if not target.tls_verify:
            argv.append("--insecure")
    return argv


@dataclass
class TlsRelay:
    """The unix socket of :func:`tls_relay` (``path``) and, once the server's side ended first, how
    (``server_end``): a client of the relay (redis-cli) sees only that its connection ended."""

    path: str
    server_end: str | None = None

    def explain(self, exc: BackupError) -> BackupError:
        """``exc`` (the relay's client failed) with how the server's side ended, when it did first."""
        if self.server_end is None:
            return exc
        if self.server_end in exc.message:  # said already (from redis-cli's own words): confirmed, not repeated
            return BackupError(f"{exc.message} (confirmed by upkeeper's TLS relay)", exc.hint)
        return BackupError(f"{exc.message} ({self.server_end}, seen by upkeeper's TLS relay)", exc.hint)


@contextlib.contextmanager
def tls_relay(target: RedisTarget) -> Iterator[TlsRelay]:
    """A unix socket, in a private (0700) temp directory, whose first connection is forwarded to the target
    over a TLS connection made here with :func:`tls_context` — for redis-cli, which cannot decrypt a key with
    a passphrase: the passphrase and the decrypted key stay in this process, never on disk or in an argv.
    The TLS connection is made (and the server's certificate checked, name included) before this yields, so
    that its failure is the same TaskError as a client's.  Yields the :class:`TlsRelay` (the socket's path); at
    the end, the relay's thread and both connections are closed."""
    import os
    import select
    import shutil
    import socket
    import ssl
    import tempfile
    import threading

    context = tls_context(target)
    timeout = target.socket_timeout.total_seconds()
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        raise connection_error(target, exc) from None
    try:
        upstream = context.wrap_socket(raw, server_hostname=target.tls_server_name or target.host)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        raise connection_error(target, exc) from None
    directory = tempfile.mkdtemp(prefix="upkeeper-tls-relay-")
    path = os.path.join(directory, "redis.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stop = threading.Event()
    failed: list[str] = []
    relay = TlsRelay(path)

    def pump() -> None:
        conn: socket.socket | None = None
        try:
            while conn is None and not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
            if conn is None:
                return
            conn.settimeout(None)
            while not stop.is_set():
                ready = [upstream] if upstream.pending() else \
                    select.select([conn, upstream], [], [], 0.5)[0]
                if upstream in ready:
                    # not blocking: what made the socket readable may be no data (a TLS 1.3 session ticket,
                    # part of a record), and redis-cli's next command must not wait for the server meanwhile
                    upstream.setblocking(False)
                    try:
                        data: bytes | None = upstream.recv(1 << 16)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        data = None
                    except (OSError, ssl.SSLError) as exc:
                        relay.server_end = f"the TLS connection to the server failed: {describe_redis_error(exc)}"
                        raise
                    finally:
                        upstream.settimeout(timeout)
                    if data == b"":  # redis-cli sees the end of its connection
                        relay.server_end = "the server closed the connection"
                        return
                    if data:
                        conn.sendall(data)
                if conn in ready:
                    data = conn.recv(1 << 16)
                    if not data:
                        return  # redis-cli is done (or was killed)
                    try:
                        upstream.sendall(data)
                    except (OSError, ssl.SSLError) as exc:
                        relay.server_end = f"the TLS connection to the server failed: {describe_redis_error(exc)}"
                        raise
        except (OSError, ssl.SSLError) as exc:
            failed.append(describe_redis_error(exc))
        finally:
            if conn is not None:
                conn.close()

    thread = threading.Thread(target=pump, name="redis-tls-relay", daemon=True)
    try:
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(0.5)
        thread.start()
        yield relay
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5)
        listener.close()
        upstream.close()
        shutil.rmtree(directory, ignore_errors=True)
        if failed:
            log.warning("Redis %s: the TLS relay of redis-cli ended on an error: %s", target.display(), failed[0])


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def describe_redis_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def _tls_problem(target: RedisTarget, exc: BaseException) -> TaskError | None:
    """A failed TLS handshake, said in the target's terms: which check failed and which field fixes it."""
    import ssl

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    text = str(cause) if cause is not None else str(exc)
    where = f"Redis {target.display()}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        cas = [f"{f} {getattr(target, f)}" for f in ("tls_ca_file", "tls_ca_dir") if getattr(target, f)]
        against = " and ".join(cas) or "the system's CA bundle"
        fix = ("put the certificate of the CA that signed the server's certificate into tls_ca_dir and run "
               "`openssl rehash` on it (OpenSSL finds a CA there only under its <subject hash>.0 name), or set "
               "tls_ca_file to its PEM file") if target.tls_ca_dir else \
            "set tls_ca_file to the PEM file of the CA that signed the server's certificate (or tls_ca_dir)"
        return TaskError(
            f"{where}: the server's TLS certificate failed the check against {against}: "
            f"{cause.verify_message or cause.reason}",
            f"Try: {fix}; if it names another host than the one configured, set tls_server_name to that name",
            permanent=True)
    # TLS 1.3: the server checks the client after the handshake and hangs up; the client sees it as an EOF
    # on its first write (the alert, CERTIFICATE_REQUIRED, only when it reads first)
    cut = isinstance(cause, ssl.SSLEOFError) or "EOF occurred in violation of protocol" in text
    if "CERTIFICATE_REQUIRED" in text or (not target.tls_cert_file and (cut or "HANDSHAKE_FAILURE" in text)):
        return TaskError(f"{where}: the server ended the TLS connection: it requires a client certificate "
                         f"(tls-auth-clients yes) and none was given ({describe_redis_error(exc)})",
                         "Try: set tls_cert_file and tls_key_file to a client certificate signed by a CA in the "
                         "server's tls-ca-cert-file", permanent=True)
    if cut or any(alert in text for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                                                "DECRYPT_ERROR")):
        return TaskError(f"{where}: the server rejected the client certificate tls_cert_file "
                         f"{target.tls_cert_file} ({describe_redis_error(exc)})",
                         "Try: use a client certificate signed by a CA in the server's tls-ca-cert-file",
                         permanent=True)
    if cause is not None or "WRONG_VERSION_NUMBER" in text:
        return TaskError(f"{where}: the TLS handshake failed: {describe_redis_error(exc)}",
                         "Try: check that port is the server's tls-port (not a plain-text port), and its TLS "
                         "settings (tls-protocols, tls-ciphers)")
    return None


def connection_error(target: RedisTarget, exc: BaseException) -> TaskError:
    """The TaskError for a failed first round trip to the target: credentials, TLS, or reachability."""
    if isinstance(exc, redis.AuthenticationError):
        return TaskError(
            f"Redis {target.display()} refused the credentials: {describe_redis_error(exc)}",
            "Try: check the target's username and password (or password_file)",
        )
    if target.tls:
        tls = _tls_problem(target, exc)
        if tls is not None:
            return tls
    return TaskError(
        f"cannot connect to Redis {target.display()}: {describe_redis_error(exc)}",
        "Try: check host, port (or unix_socket) and tls of the target, and that redis-server is running",
    )


@contextlib.contextmanager
def connect(target: RedisTarget, *, timeout: float | None = None) -> Iterator[redis.Redis]:
    """Open a connection and PING it; failures become a TaskError naming the server."""
    client = client_for(target, timeout=timeout)
    try:
        probe(client)
    except redis.RedisError as exc:
        client.close()
        raise connection_error(target, exc) from None
    try:
        # named after connecting: a server refusing writes (MISCONF) refuses CLIENT SETNAME too
        client.client_setname("upkeeper")
    except redis.RedisError:
        pass
    try:
        yield client
    finally:
        client.close()


def probe(client: redis.Redis) -> None:
    """One round trip.  PING, except that a primary whose last save failed refuses PING (MISCONF,
    so that Sentinel notices): then ECHO, which it still answers."""
    try:
        client.ping()
    except redis.ResponseError as exc:
        if not str(exc).startswith("MISCONF"):
            raise
        client.echo("upkeeper")


def key_text(key: bytes | str) -> str:
    """A key name for people: undecodable bytes shown as escapes."""
    if isinstance(key, str):
        return key
    return key.decode("utf-8", errors="backslashreplace")


def glob_match(pattern: str | bytes, key: bytes) -> bool:
    """Redis's own glob matching (``stringmatchlen`` in util.c), ported byte for byte.

    ``*`` any run, ``?`` one byte, ``[abc]`` / ``[^abc]`` / ``[a-z]`` classes, ``\\x`` a literal x.
    Used as a second guard beside the server's ``SCAN MATCH`` so that eviction never touches
    a key outside the configured patterns, whatever path a key name took through our code.
    """
    return matcher(pattern)(key)


@lru_cache(maxsize=256)
def matcher(pattern: str | bytes) -> Callable[[bytes], bool]:
    """A compiled :func:`glob_match` for one pattern: a regex for literals, ``*`` and ``?`` (``cache:*``),
    the byte-level port for patterns with classes or escapes."""
    p = pattern.encode("utf-8", errors="surrogateescape") if isinstance(pattern, str) else pattern
    rx = _simple_regex(p)
    if rx is not None:
        search = rx.match
        # stringmatchlen: an empty key matches only the empty pattern
        return lambda key: (search(key) is not None) if key else not p
    return lambda key: _match(p, 0, key, 0, [False]) if key else not p


def _simple_regex(p: bytes) -> re.Pattern[bytes] | None:
    if b"[" in p or b"\\" in p:
        return None
    parts = [b".*" if c == 0x2A else b"." if c == 0x3F else re.escape(bytes([c])) for c in p]
    return re.compile(b"".join(parts) + b"\\Z", re.DOTALL)


def _at(b: bytes, i: int) -> int:
    return b[i] if i < len(b) else 0  # C strings: reading past the end sees the NUL terminator


def _match(p: bytes, pi: int, s: bytes, si: int, skip_longer: list[bool]) -> bool:
    plen, slen = len(p) - pi, len(s) - si
    while plen and slen:
        c = p[pi]
        if c == 0x2A:  # '*'
            while plen and _at(p, pi + 1) == 0x2A:
                pi += 1
                plen -= 1
            if plen == 1:
                return True
            while slen:
                if _match(p, pi + 1, s, si, skip_longer):
                    return True
                if skip_longer[0]:
                    return False
                si += 1
                slen -= 1
            skip_longer[0] = True
            return False
        elif c == 0x3F:  # '?'
            si += 1
            slen -= 1
        elif c == 0x5B:  # '['
            pi += 1
            plen -= 1
            negate = _at(p, pi) == 0x5E
            if negate:
                pi += 1
                plen -= 1
            matched = False
            ch = s[si]
            while True:
                if _at(p, pi) == 0x5C and plen >= 2:
                    pi += 1
                    plen -= 1
                    if _at(p, pi) == ch:
                        matched = True
                elif _at(p, pi) == 0x5D:
                    break
                elif plen == 0:
                    pi -= 1
                    plen += 1
                    break
                elif plen >= 3 and _at(p, pi + 1) == 0x2D:
                    lo, hi = _at(p, pi), _at(p, pi + 2)
                    if lo > hi:
                        lo, hi = hi, lo
                    pi += 2
                    plen -= 2
                    if lo <= ch <= hi:
                        matched = True
                elif _at(p, pi) == ch:
                    matched = True
                pi += 1
                plen -= 1
            if negate:
                matched = not matched
            if not matched:
                return False
            si += 1
            slen -= 1
        else:
            if c == 0x5C and plen >= 2:  # backslash escapes the next byte
                pi += 1
                plen -= 1
            if p[pi] != s[si]:
                return False
            si += 1
            slen -= 1
        pi += 1
        plen -= 1
        if slen == 0:
            while _at(p, pi) == 0x2A and plen > 0:
                pi += 1
                plen -= 1
            break
    return plen == 0 and slen == 0
