"""What a ``logs.postgres`` run's scan is made of, per log format: the accumulator module, its scan options, the
continuation of a message's lines and where the log may be cut into pieces — shared by the task and by a helper
that reads the log ahead of the run (:mod:`upkeeper.logs.speculate`), so that both plan the same scan."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from upkeeper.logs import parallel, pgformat, sources


def scan_setup(fmt: str, prefix: str, ident: str) -> tuple[str, Any, bytes, re.Pattern[bytes] | None, int]:
    """For a log in format ``fmt`` (stderr, syslog, csvlog, jsonlog) with that ``log_line_prefix`` and syslog
    ``ident``: the accumulator module, its scan options, the continuation of a message's lines (stderr's tab), the
    start of a line a piece may begin at (an error keeps its STATEMENT, a record its lines), and the bytes below
    which the scan starts no helper."""
    if fmt == "stderr":
        from upkeeper.logs import pglog

        return ("upkeeper.logs.pglog", pglog.PgScanOptions(log_line_prefix=prefix), b"\t", pglog.message_start(prefix),
                pglog.MIN_PARALLEL)
    if fmt == "syslog":
        from upkeeper.logs import pgsyslog

        return ("upkeeper.logs.pgsyslog", pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident=ident), b"",
                pgsyslog.RECORD_START, pgsyslog.MIN_PARALLEL)
    from upkeeper.logs import pgstruct

    return ("upkeeper.logs.pgstruct", pgstruct.PgStructOptions(format="csvlog" if fmt == "csvlog" else "jsonlog"), b"",
            pgstruct.RECORD_START if fmt == "csvlog" else None, pgstruct.MIN_PARALLEL)


def units(ranges: list[Any], fmt: str, prefix: str, ident: str, workers: int) -> list[parallel.Unit]:
    """The pieces of a read of ``ranges`` (see :func:`scan_setup`; :func:`upkeeper.logs.parallel.units_for`)."""
    _kind, _opts, cont, record_start, _min = scan_setup(fmt, prefix, ident)
    return parallel.units_for(ranges, continuation=cont, workers=workers, record_start=record_start)


def hold_back_open_record(plan: sources.ReadPlan, complete_end: Callable[[str, int, int], int]) -> None:
    """A live csvlog's last record may not be whole yet (a newline inside a field was the last byte written), nor
    a live syslog file's last messages (their last chunks not written yet): leave it for the next run, whose read
    starts there (the range and the cursor end before it; ``complete_end(path, start, end)`` tells where)."""
    for i, r in enumerate(plan.ranges):
        if r.end is None or r.final or r.file.gz:
            continue
        end = complete_end(r.file.path, r.start, r.end)
        if end == r.end:
            continue
        plan.ranges[i] = dataclasses.replace(r, end=end)
        for c in plan.cursors:
            if c["path"] == r.file.path and c["offset"] == r.end:
                sources.move_cursor(c, end)
    plan.ranges[:] = [r for r in plan.ranges if r.end is None or r.end > r.start]


def speculation(kind: str, options: Mapping[str, Any], target: Mapping[str, Any]
                ) -> tuple[Any, bytes, list[parallel.Unit]] | None:
    """For a helper of accumulator module ``kind`` that reads ahead: the scan options, continuation and pieces of a
    ``logs.postgres`` run that reads its whole ``log_file`` (``incremental: false``) without asking the server (its
    ``log_line_prefix`` given, and for syslog its ``syslog_ident``), guessed from the job's options as written; None
    when that cannot be told (a glob, a server to ask, options it does not know how to read).  Only a guess: the scan uses what was read ahead only when its own plan
    is equal."""
    path = options.get("log_file")
    prefix = options.get("log_line_prefix")
    ident = options.get("syslog_ident")
    workers = options.get("workers", 0)
    max_files = options.get("max_files", 30)
    if (options.get("incremental") is not False or not isinstance(path, str) or not path or sources.is_glob(path)
            or options.get("rotated_dirs") or not all(type(v) is int for v in (workers, max_files))
            or not all(v is None or isinstance(v, str) for v in (prefix, ident))):
        return None
    files = sources.discover(path, rotated=options.get("rotated", True) is not False, max_files=max_files)
    fmt = options.get("format", "auto")
    if fmt == "auto" and files:
        fmt = pgformat.files_format(files)
    if (fmt not in pgformat.SCANNERS or not files or (fmt in ("stderr", "syslog") and not prefix)
            or (fmt == "syslog" and ident is None)):
        return None
    got_kind, opts, cont, _start, _min = scan_setup(fmt, prefix or "", ident or "")
    if got_kind != kind:
        return None
    plan = sources.plan_reads(files, [], incremental=False)
    if fmt == "csvlog":  # (as the run does: a live csvlog's last record may not be whole yet)
        from upkeeper.logs import pgstruct

        hold_back_open_record(plan, pgstruct.complete_end)
    return opts, cont, units(plan.ranges, fmt, prefix or "", ident or "", workers)
