"""``redis-check-rdb``, as redis.backup, backup verification and ``backups restore`` run it."""

from __future__ import annotations

import re
import shutil

from upkeeper.core import proc
from upkeeper.errors import BackupError, SetupError

_TOO_NEW = re.compile(r"Can't handle RDB format version (\d+)")


def checker_version(checker: str) -> str:
    """``redis-check-rdb --version`` ("redis-check-rdb 7.0.15"): the version, or "?" when it does not say."""
    res = proc.run([checker, "--version"], check=False, timeout=30)
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", res.text)
    return m.group(1) if m else "?"


def require_checker() -> str:
    """The path of ``redis-check-rdb``; a :class:`SetupError` when this host has none (checked before a snapshot is
    taken, so that a missing tool costs no download)."""
    checker = shutil.which("redis-check-rdb")
    if not checker:
        raise SetupError("redis-check-rdb not found", "Try: apt-get install redis-tools")
    return checker


def check_rdb(path: str, what: str = "the RDB", made_by: str | None = None) -> int | None:
    """Run redis-check-rdb on ``path``; the number of keys it read (None when it does not say).  ``made_by``
    is the version of the Redis that wrote it, when known.

    A redis-check-rdb older than the Redis that wrote the file cannot read its format version: that is this
    host's setup (:class:`SetupError`, naming both versions), not a damaged RDB (:class:`BackupError`)."""
    checker = require_checker()
    res = proc.run([checker, path], check=False, timeout=3600)
    out = res.text + res.stderr
    if res.returncode == 0 and "RDB looks OK" in res.text:
        m = re.search(r"(\d+) keys read", res.text)
        return int(m.group(1)) if m else None
    too_new = _TOO_NEW.search(out)
    if too_new:
        raise SetupError(
            f"this host's redis-check-rdb {checker_version(checker)} ({checker}) cannot read RDB format version "
            f"{too_new.group(1)}: {what} was written by "
            f"{f'Redis {made_by}' if made_by else 'a newer Redis than these Redis tools'}",
            "Try: install the Redis tools (redis-check-rdb) of the server's Redis version or newer on this host")
    raise BackupError(f"redis-check-rdb rejects {what}: {_error_of(out)}")


def _error_of(out: str) -> str:
    """The error redis-check-rdb reports ("[offset 998] Unexpected EOF reading RDB file"), with what it was
    reading; its last lines are only counters ("[info] 0 expires")."""
    lines = out.strip().splitlines()
    if "--- RDB ERROR DETECTED ---" in lines:
        after = lines[lines.index("--- RDB ERROR DETECTED ---") + 1:]
        found = [ln for ln in after if not ln.startswith(("[info]", "[additional info] Reading key"))][:3]
        if found:
            return "; ".join(found)
    return " ".join(lines[-2:]) or "no output"
