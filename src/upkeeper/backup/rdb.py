"""``redis-check-rdb``, as redis.backup, backup verification and ``backups restore`` run it."""

from __future__ import annotations

import re
import shutil
import signal
from dataclasses import dataclass, field
from typing import BinaryIO

from upkeeper.core import proc
from upkeeper.errors import BackupError, SetupError, TaskError

_TOO_NEW = re.compile(r"Can't handle RDB format version (\d+)")
_SELECT_DB = re.compile(r"^\[offset (\d+)\] Selecting DB ID (\d+)$", re.MULTILINE)
RDB_OPCODE_RESIZEDB = 0xFB
#: signals that stop redis-check-rdb from outside, whatever the file holds (a crash of its own, SIGSEGV or SIGABRT on
#: a damaged file, is the file's verdict)
_STOPPED_BY = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


@dataclass
class RdbCheck:
    """What redis-check-rdb read: the keys of the file (already expired ones included), and per database the
    key count the RDB's RESIZEDB record gives (the size of that database when it was saved), when it has one."""

    keys: int | None = None
    db_keys: dict[str, int] = field(default_factory=dict)
    rdb_version: int | None = None


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


def check_rdb(path: str, what: str = "the RDB", made_by: str | None = None) -> RdbCheck:
    """Run redis-check-rdb on ``path``: the number of keys it read (None when it does not say) and the key count
    of each database.  ``made_by`` is the version of the Redis that wrote it, when known.

    A redis-check-rdb older than the Redis that wrote the file cannot read its format version: that is this
    host's setup (:class:`SetupError`, naming both versions), not a damaged RDB (:class:`BackupError`)."""
    checker = require_checker()
    res = proc.run([checker, path], check=False, timeout=3600)
    out = res.text + res.stderr
    if res.returncode == 0 and "RDB looks OK" in res.text:
        m = re.search(r"(\d+) keys read", res.text)
        return RdbCheck(int(m.group(1)) if m else None, _db_keys(path, res.text), rdb_version(path))
    if -res.returncode in _STOPPED_BY:  # killed from outside (the OOM killer, a person): no verdict on the file
        raise TaskError(f"redis-check-rdb was {proc.describe_exit(res.returncode)} while it read {what}: nothing is "
                        "known of the file", "Try: run it again; a redis-check-rdb killed by SIGKILL is most often the "
                        "OOM killer (see 'dmesg' and the memory available on this host)")
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


def rdb_version(path: str) -> int | None:
    """The RDB format version in the file's header ("REDIS0010" → 10), None when it has none."""
    with open(path, "rb") as f:
        head = f.read(9)
    return int(head[5:]) if head[:5] == b"REDIS" and head[5:].isdigit() else None


def _db_keys(path: str, out: str) -> dict[str, int]:
    """Per database ("db3"), the size the RDB's RESIZEDB record gives; redis-check-rdb names the offset just
    after each SELECTDB, where Redis writes that record.  Empty when a database has none (RDBs of Redis < 3.2)."""
    found: dict[str, int] = {}
    with open(path, "rb") as f:
        for m in _SELECT_DB.finditer(out):
            f.seek(int(m.group(1)))
            if f.read(1) != bytes([RDB_OPCODE_RESIZEDB]):
                return {}
            size = _read_length(f)
            if size is None:
                return {}
            found[f"db{m.group(2)}"] = found.get(f"db{m.group(2)}", 0) + size
    return found


def _read_length(f: BinaryIO) -> int | None:
    """One RDB length (6, 14, 32 or 64 bits), None for an encoded value or a cut file."""
    first = f.read(1)
    if not first:
        return None
    kind, low = first[0] >> 6, first[0] & 0x3F
    if kind == 0:
        return low
    if kind == 1:
        nxt = f.read(1)
        return (low << 8) | nxt[0] if nxt else None
    if first[0] in (0x80, 0x81):
        width = 4 if first[0] == 0x80 else 8
        raw = f.read(width)
        return int.from_bytes(raw, "big") if len(raw) == width else None
    return None
