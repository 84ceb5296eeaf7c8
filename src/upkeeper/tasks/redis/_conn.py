"""Connecting to a Redis target, reading INFO, and Redis's glob semantics (for the eviction guard)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.errors import TaskError
from upkeeper.redact import redact

if TYPE_CHECKING:
    import redis
    import redis.backoff
    import redis.retry
else:
    redis = lazy.module("redis", "backoff", "retry")



@lru_cache(maxsize=1)
def _driver() -> dict[str, Any]:
    """redis-py >= 7: resolved once, so that it does not read package metadata per client (~4 ms each)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # pragma: no cover - older redis-py
        return {}
    return {"driver_info": DriverInfo()}


def client_for(target: RedisTarget, *, timeout: float | None = None) -> redis.Redis:
    """A redis-py client for the target (bytes responses: key names need not be UTF-8)."""
    sock_timeout = timeout if timeout is not None else target.socket_timeout.total_seconds()
    kw: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password.get_secret_value() if target.password else None,
        "socket_timeout": sock_timeout,
        "socket_connect_timeout": sock_timeout,
        # report what the server does now: no silent reconnect-and-retry with backoff (the job has retries)
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        **_driver(),
    }
    if target.unix_socket:
        return redis.Redis(unix_socket_path=target.unix_socket, **kw)
    return redis.Redis(host=target.host, port=target.port, ssl=target.tls, **kw)


def describe_redis_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


@contextlib.contextmanager
def connect(target: RedisTarget, *, timeout: float | None = None) -> Iterator[redis.Redis]:
    """Open a connection and PING it; failures become a TaskError naming the server."""
    client = client_for(target, timeout=timeout)
    try:
        probe(client)
    except redis.AuthenticationError as exc:
        client.close()
        raise TaskError(
            f"Redis {target.display()} refused the credentials: {describe_redis_error(exc)}",
            "Try: check the target's username and password (or password_file)",
        ) from None
    except redis.RedisError as exc:
        client.close()
        raise TaskError(
            f"cannot connect to Redis {target.display()}: {describe_redis_error(exc)}",
            "Try: check host, port (or unix_socket) and tls of the target, and that redis-server is running",
        ) from None
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
