"""Connecting to a Redis target (every Redis client upkeeper makes, and the TLS arguments of
``redis-cli --rdb``), reading INFO, and Redis's glob semantics (for the eviction guard)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.errors import TaskError
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


def _readable(target: RedisTarget, field: str, path: str) -> str:
    """``path`` (of the target's ``field``) with ~ expanded, checked readable now: a typo must not read
    as an unreachable server."""
    import os

    full = os.path.expanduser(path)
    try:
        with open(full, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TaskError(f"Redis {target.display()}: cannot read {field} {full}: {exc.strerror or exc}",
                        f"Try: point {field} at a readable PEM file", permanent=True) from None
    return full


def _no_passphrase() -> bytes:
    # an encrypted key would otherwise make OpenSSL ask for its passphrase on the terminal (a hang under the
    # daemon); redis-cli --rdb cannot take one either
    return b""


def tls_context(target: RedisTarget) -> ssl.SSLContext:
    """The target's TLS settings as an SSL context: its CA (default: the system's CA bundle), its client
    certificate, the certificate and the host name checked unless ``tls_verify`` is false.  A missing or
    malformed file is a permanent TaskError naming the field; the key's content is never shown."""
    import ssl

    ca = _readable(target, "tls_ca_file", target.tls_ca_file) if target.tls_ca_file else None
    try:
        ctx = ssl.create_default_context(cafile=ca)
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
        try:
            ctx.load_cert_chain(cert, key, password=_no_passphrase)
        except ssl.SSLError as exc:
            raise TaskError(
                f"Redis {target.display()}: tls_cert_file {cert} and tls_key_file {key} are not a PEM certificate "
                f"and its unencrypted private key ({exc.reason or 'unreadable'})",
                "Try: give the client certificate and the key it was issued for, both PEM; decrypt a key that "
                "has a passphrase (openssl pkey -in KEY -out KEY.plain), keeping it mode 0600", permanent=True,
            ) from None
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


def cli_args(target: RedisTarget) -> list[str]:
    """redis-cli's arguments that reach the target, TLS included (not the password: REDISCLI_AUTH)."""
    argv = ["-s", target.unix_socket] if target.unix_socket else ["-h", target.host, "-p", str(target.port)]
    if target.username:
        argv += ["--user", target.username]
    if target.tls:
        argv.append("--tls")
        for flag, field in (("--cacert", "tls_ca_file"), ("--cert", "tls_cert_file"), ("--key", "tls_key_file")):
            path = getattr(target, field)
            if path:
                argv += [flag, _readable(target, field, path)]
        name = target.tls_server_name or (None if _is_ip(target.host) else target.host)
        if name:
            argv += ["--sni", name]  # as Python's ssl does: an IP address is never sent as a server name
        if not target.tls_verify:
            argv.append("--insecure")
    return argv


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
        against = f"tls_ca_file {target.tls_ca_file}" if target.tls_ca_file else "the system's CA bundle"
        return TaskError(
            f"{where}: the server's TLS certificate failed the check against {against}: "
            f"{cause.verify_message or cause.reason}",
            "Try: set tls_ca_file to the PEM file of the CA that signed the server's certificate; if it names "
            "another host than the one configured, set tls_server_name to that name", permanent=True)
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
