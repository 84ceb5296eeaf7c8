"""Which format a PostgreSQL log file is in, told from its name and its first lines, and which accumulator module
scans each format — light (``re`` and :mod:`upkeeper.logs.sources`, imported when used), so that ``upkeeper run``
can tell it before it imports anything else (see :mod:`upkeeper.logs.ahead`)."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upkeeper.logs.sources import LogFile

#: the format a log file's name tells (after its rotation suffix): PostgreSQL names csvlog and jsonlog files
#: after log_filename with .csv and .json for .log (or added)
SUFFIX_FORMATS = {".csv": "csvlog", ".json": "jsonlog"}

#: a line that is a syslog line (for the format's detection)
HEADER_RX = re.compile(
    rb"(?:(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) \S+ "
    rb"(?:[a-z0-9]+\.[a-z]+ )?[^\s\[:]+(?:\[\d+\])?: |<\d{1,3}>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* \S+ \S+ \S+ \S+ )")

#: the accumulator module that scans each format, and the bytes of log below which its scan starts no helper
#: process (the module's ``MIN_PARALLEL``, which says why)
SCANNERS: dict[str, tuple[str, int]] = {
    "stderr": ("upkeeper.logs.pglog", 12 << 20),
    "syslog": ("upkeeper.logs.pgsyslog", 4 << 20),
    "csvlog": ("upkeeper.logs.pgstruct", 8 << 20),
    "jsonlog": ("upkeeper.logs.pgstruct", 8 << 20),
}


def format_of(path: str) -> str:
    """csvlog, jsonlog or stderr, from the name of a log file (``postgresql.csv.1.gz`` is csvlog)."""
    from upkeeper.logs import sources

    return SUFFIX_FORMATS.get(PurePath(sources.live_log(path)).suffix, "stderr")


def looks_like_syslog(head: bytes) -> bool:
    """Are most of the first lines of a file (``head``: its first bytes) syslog lines?"""
    lines = [ln for ln in head.split(b"\n")[:20] if ln.strip()]
    if len(head) > 200 and not head.endswith(b"\n") and len(lines) > 1:
        lines = lines[:-1]  # (cut)
    return bool(lines) and 2 * sum(1 for ln in lines if HEADER_RX.match(ln)) > len(lines)


def syslog_file(files: list[LogFile]) -> bool:
    """Are most of the first lines of the newest of ``files`` that holds any (4 KB of it) syslog lines?"""
    from upkeeper.logs import sources

    for lf in reversed(files):
        try:
            with open(lf.path, "rb") as raw:
                fh: Any = sources.open_compressed(raw, lf.path) if lf.gz else raw
                head = fh.read(4096)
        except (OSError, EOFError, ValueError):
            continue
        if head.strip():
            return looks_like_syslog(head)
    return False


def files_format(files: list[LogFile]) -> str:
    """The format to read ``files`` in when the job says ``format: auto``: the one their names tell (.csv csvlog,
    .json jsonlog, any other stderr) — or syslog, when the first lines of a stderr-named file are syslog lines;
    "" when their names tell several."""
    found = sorted({format_of(f.path) for f in files})
    if len(found) != 1:
        return ""
    if found[0] == "stderr" and syslog_file(files):
        return "syslog"
    return found[0]
