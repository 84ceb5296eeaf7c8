"""logs.postgres: pgBadger's core on the PostgreSQL server log — slow queries, errors, locks, checkpoints."""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes
from upkeeper.logs.pgformat import SUFFIX_FORMATS, files_format, format_of
from upkeeper.tasks.logs._common import (
    REPORT_KEEP_DEFAULT,
    HtmlReport,
    KeepReports,
    MemoryLimitMb,
    ReportDir,
    RotatedDirs,
    check_report_dir,
    check_rotated_dirs,
    ends_head_start,
    log_processes,
    memory_limit,
    memory_limit_error,
    not_a_log,
    nothing_read,
    plan_findings,
    read_findings,
    remember_unparsed,
    report_dir,
    reread_message,
    trends,
    unparsed_note,
    unparsed_restart,
    unread_text,
    with_current,
    write_reports,
)

if TYPE_CHECKING:
    from upkeeper.logs import parallel, pglog, pgplan, pgstruct, pgsyslog, report_html, sources
    from upkeeper.logs.sources import LogFile, ReadPlan
else:
    # the reading (the server-log parsers, the parallel reader, the HTML report) is the worker's: 'upkeeper run'
    # imports this module in the CLI for the job's options, and these modules would add ~25 ms to its start before
    # the run is sent (the worker loads them while it waits for the run: lazy.load_all); the options' checks load
    # what they need (a log_line_prefix set: pglog, a log_file: sources)
    parallel = lazy.module("upkeeper.logs.parallel")
    pglog = lazy.module("upkeeper.logs.pglog")
    pgplan = lazy.module("upkeeper.logs.pgplan")
    pgstruct = lazy.module("upkeeper.logs.pgstruct")
    pgsyslog = lazy.module("upkeeper.logs.pgsyslog")
    report_html = lazy.module("upkeeper.logs.report_html")
    sources = lazy.module("upkeeper.logs.sources")

CURSORS_KEY = "pg_cursors"
def _in_another_language(rep: dict[str, Any]) -> bool:
    """The report is of a log in another language than English (lc_messages): more durations in another language
    than in English (an application's own RAISE LOG 'took: 5 ms' looks like one), or lines whose severity is in
    another language (a translated LOG, "СООБЩЕНИЕ:", hides every entry) make at least half of the unparsed ones
    (a csvlog or jsonlog record is never unparsed for it)."""
    lines = rep.get("translated_lines", 0)
    return bool(rep.get("translated_durations", 0) > rep["statements"]["count"]
                or (lines and 2 * lines >= rep["unparsed"]) or _translated_samples(rep))


#: a line as syslog daemons write a program's message (rsyslog's and syslog-ng's traditional and RFC 3339 time
#: stamps): the time, the host, then PostgreSQL's ident (syslog_ident, "postgres" by default) with its PID, or any
#: ident followed by PostgreSQL's sequence bracket ("[12-1] ")
_SYSLOG_LINE = re.compile(r"(?:^|: )(?:(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) \S+ "
                          r"(?:[\w.-]*postgres[\w.-]*\[\d+\]: |[^\s\[:]+\[\d+\]: \[\d+(?:-\d+)?\] )"
                          r"|<\d{1,3}>1 \d{4}-\d\d-\d\dT\S+ \S+ \S+ \S+ \S+ )")  # (RFC 5424)


def _syslog_samples(rep: dict[str, Any]) -> bool:
    """Are most of the report's unparsed samples (its first unparsed lines) PostgreSQL's messages as a syslog daemon
    writes them (log_destination = syslog)?"""
    samples = [x for x in rep.get("unparsed_samples") or [] if isinstance(x, str)]
    # (a sample is "file: line")
    return bool(samples) and 2 * sum(_SYSLOG_LINE.search(x) is not None for x in samples) > len(samples)


def _translated_samples(rep: dict[str, Any]) -> bool:
    """Most of the unparsed lines sampled (the earliest) start with the prefix and a severity in another language:
    a log whose LOG stays English (de, es, fr, it, ja) and that holds no durations — its errors ("FEHLER:  …") are
    the lines left unparsed, too few in a buffer for the scan to look for them (see PgAccumulator.feed)."""
    samples = rep.get("unparsed_samples") or []
    if not samples or rep.get("format") != "stderr" or not rep.get("log_line_prefix"):
        return False
    try:
        rx = re.compile(rb": " + pglog.compile_prefix(rep["log_line_prefix"]) + pglog.TRANSLATED_LEVEL_RX)
    except pglog.PrefixError:
        return False
    return 2 * sum(1 for x in samples if rx.search(str(x).encode())) > len(samples)


UNPARSED_KEY = "pg_unparsed_from"  # where the runs began that could parse none of their lines (their prefix)
#: the statements left waiting for their bare duration (log_statement + log_duration) where the last run stopped
OPEN_KEY = "pg_open_statements"
TREND_METRICS = ["statements", "query_p95_ms", "errors", "temp_bytes"]

SETTINGS_SQL = """
SELECT current_setting('log_line_prefix') AS prefix,
       pg_current_logfile() AS logfile,
       current_setting('data_directory') AS datadir,
       current_setting('log_min_duration_statement') AS min_duration,
       current_setting('log_filename') AS log_filename,
       current_setting('log_duration') AS log_duration,
       current_setting('log_min_duration_sample', true) AS min_duration_sample,
       current_setting('log_statement_sample_rate', true) AS sample_rate,
       current_setting('log_transaction_sample_rate', true) AS xact_sample_rate,
       current_setting('log_destination') AS destination,
       current_setting('syslog_ident', true) AS syslog_ident
"""
#: a duration setting as SHOW writes it ("-1", "0", "250ms", "1s", "2min") in ms; None if it is none of these
_UNITS_MS = {"ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}


def _ms(setting: str) -> float | None:
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?", setting.strip())
    return float(m[1]) * _UNITS_MS[m[2] or "ms"] if m else None


def sampling(server: dict[str, str]) -> str:
    """What of the statements the server logs only a sample of (log_min_duration_sample with
    log_statement_sample_rate, log_transaction_sample_rate), as PostgreSQL's check_log_duration decides; "" when it
    logs each statement it times (or cannot be asked)."""
    if server.get("log_duration") == "on":  # every statement's duration is logged, a bare one at least
        return ""
    md = _ms(server.get("min_duration", "")) if server.get("min_duration") else None
    out = []
    sample, rate = server.get("min_duration_sample") or "", server.get("sample_rate") or ""
    smd, r = _ms(sample) if sample else None, _number(rate)
    if smd is not None and smd >= 0 and r is not None and 0 < r < 1 and (md is None or md < 0 or smd < md):
        band = [f"of {sample} or more"] if smd > 0 else []
        if md is not None and md >= 0:
            band.append(f"faster than {server['min_duration']}")
        out.append(f"statements {' and '.join(band) or 'of any duration'} are logged at log_statement_sample_rate = "
                   f"{rate} only (log_min_duration_sample = {sample})")
    xr = _number(server.get("xact_sample_rate") or "")
    if xr is not None and 0 < xr < 1 and (md is None or md != 0):
        out.append(f"log_transaction_sample_rate = {server['xact_sample_rate']} logs every statement of that share of "
                   "transactions" + (f", the others' only when slower than {server['min_duration']}"
                                     if md is not None and md > 0 else ""))
    return "; ".join(out)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


LOGFILE_SQL = "SELECT pg_current_logfile(%s)"
LogFormat = Literal["auto", "stderr", "csvlog", "jsonlog", "syslog"]
def log_filename_glob(log_filename: str, current: str) -> str | None:
    """The glob of the files the server names after ``log_filename`` (its %-escapes, strftime's, as ``*``) in
    the format of ``current`` (.csv and .json replace a final .log, or are added, as the server does); None
    when ``log_filename`` has no escape (the server reopens the same file) or ``current`` does not match it."""
    if "%" not in log_filename.replace("%%", "") or "/" in log_filename:
        return None
    pattern = "".join("%" if part == "%%" else "*" if part.startswith("%") else glob.escape(part)
                      for part in re.split(r"(%.?)", log_filename) if part)
    suffix = Path(current).suffix
    if suffix in SUFFIX_FORMATS:
        pattern = (pattern[:-4] if pattern.endswith(".log") else pattern) + suffix
    return pattern if fnmatch.fnmatchcase(Path(current).name, pattern) else None


def server_rotated(path: str, log_filename: str, found: list[LogFile], options: PostgresLogsOptions
                   ) -> list[LogFile]:
    """The files the server itself rotated before ``path`` (the one it writes now) when ``log_filename`` has
    %-escapes (``postgresql-%Y-%m-%d_%H%M%S.log``): the others next to it that ``log_filename`` names, oldest
    first (by time of last write; at most ``max_files``), as a chain :func:`plan_reads` reads only from the one
    the last run's cursor matches — what the server wrote to it after the last run, and the files after it.
    Not on a first run, as for ``rotated_dirs``: older history there is not read."""
    pattern = log_filename_glob(log_filename, path) if options.rotated else None
    if pattern is None:
        return []
    seen = {(f.dev, f.inode) for f in found}
    directory = Path(path).parent
    out: list[LogFile] = []
    for p in glob.glob(str(Path(glob.escape(str(directory))) / pattern)):
        if p == path:
            continue
        lf = next((f for f in sources.discover(p, rotated=False) if f.path == p), None)
        if lf is None or (lf.dev, lf.inode) in seen:
            continue
        seen.add((lf.dev, lf.inode))
        out.append(dataclasses.replace(lf, live=False, elsewhere=f"{path}\0{directory}\0log_filename"))
    out.sort(key=lambda f: (f.mtime, f.path))
    return out[-options.max_files:]


class PostgresLogsOptions(TaskOptions):
    log_file: str | None = Field(
        None, description="the server log: a path or a glob such as /var/log/postgresql/postgresql-*.log "
        "(default: ask the server with pg_current_logfile()). Source: upkeeper (not set by default)")
    log_line_prefix: str | None = Field(
        None, description="the server's log_line_prefix (default: read from the server with SHOW, else "
        "PostgreSQL's default '%m [%p] '). Source: PostgreSQL (the server's setting, else its default)")
    format: LogFormat = Field(
        "auto", description="the log's format: stderr (with log_line_prefix), csvlog, jsonlog (log_destination), "
        "or syslog: the messages of log_destination = 'syslog' as a syslog daemon (rsyslog, syslog-ng) writes them "
        "to its file (/var/log/postgresql.log, /var/log/messages), with log_line_prefix inside each message (the "
        "syslog line's time and pid stand in for a prefix without %m/%t/%n or %p). auto: from the file, as pgBadger "
        "does — .csv is csvlog, .json jsonlog, a file whose first lines are syslog lines syslog, any other stderr; "
        "with csvlog or jsonlog and no log_file, the server is asked for that log (pg_current_logfile('csvlog')). "
        "Source: PostgreSQL (log_destination), pgBadger (--format, auto-detected; -f syslog)")
    syslog_ident: str | None = Field(
        None, min_length=1, description="with format syslog: read the lines of this program name (the syslog "
        "tag before '[pid]:'); other programs' lines in the file are skipped, not counted (default: the server's "
        "syslog_ident, asked with SHOW, else PostgreSQL's default 'postgres'). Source: PostgreSQL (syslog_ident), "
        "pgBadger (--ident, default postgres)")
    rotated: bool = Field(True, description="also read rotated files: postgresql.log.1, .2.gz (or .zst, .xz, .bz2) … "
            "Source: upkeeper default")
    max_files: int = Field(30, ge=1, le=1000, description="at most this many files per log path. "
            "Source: upkeeper default")
    rotated_dirs: RotatedDirs = []
    incremental: bool = Field(True, description="read only what is new since the last run. "
            "Source: upkeeper default")
    workers: int = Field(0, ge=0, le=64, description="processes that scan in parallel (0: one per CPU, at "
            "most 2 — each holds about 150 MB at its peak; raise it on a big machine for speed). "
            "Source: upkeeper default")
    memory_limit_mb: MemoryLimitMb = 0
    query_p95_ms: float = Field(
        100, gt=0, description="warn when the p95 statement duration exceeds this. Source: the maintenance "
        "procedures' objective (database query p95 < 100 ms)")
    slow_query_mean_ms: float = Field(
        100, gt=0, description="report queries whose mean duration exceeds this (the top ones by total time). "
                "Source: upkeeper default (the value of the 100 ms query objective)")
    deadlocks_warn: int = Field(
        0, ge=0, description="warn when the lines a run read hold more than this many deadlocks (SQLSTATE "
        "40P01, 'deadlock detected'); raise it when the application retries the aborted transactions and a "
        "few a day are known. Source: upkeeper default (any deadlock: PostgreSQL aborted a transaction)")
    lock_waits_warn: int = Field(
        0, ge=0, description="warn when the lines a run read hold more than this many lock waits longer than "
        "deadlock_timeout (the server's 'still waiting for … Lock' lines, logged with log_lock_waits = on). "
        "Source: upkeeper default (any such wait, as pgBadger lists every one)")
    lock_failures_warn: int = Field(
        0, ge=0, description="warn when more than this many statements of the lines a run read failed for a "
        "lock they could not get (SQLSTATE 55P03: lock_timeout expired, or NOWAIT); raise it when the "
        "application uses NOWAIT or a short lock_timeout on purpose and retries. Source: upkeeper default "
        "(any such failure, as for deadlocks and lock waits)")
    unparsed_warn_pct: float = Field(1.0, ge=0, description="warn when more than this % of lines cannot be "
                                     "parsed (wrong log_line_prefix?). Source: Netdata web_log (warn > 1 %)")
    top: int = Field(20, ge=1, le=500, description="length of the query and error lists. "
            "Source: upkeeper default")
    report_dir: ReportDir = None
    keep_reports: KeepReports = REPORT_KEEP_DEFAULT
    html: HtmlReport = True

    @model_validator(mode="after")
    def _check_rotated_dirs(self) -> PostgresLogsOptions:
        check_rotated_dirs(self.rotated_dirs, self.rotated,
                           self.log_file if self.log_file and sources.is_glob(self.log_file) else None)
        return self

    @field_validator("log_line_prefix")
    @classmethod
    def _check_prefix(cls, v: str | None) -> str | None:
        if v is not None:
            if "\0" in v:  # (what PostgreSQL's cannot hold; "%\0" is upkeeper's own escape, pglog.SYSLOG_TIME)
                raise ValueError(f"log_line_prefix {v!r} holds a NUL character, which no PostgreSQL's can. Try: copy "
                                 "log_line_prefix from postgresql.conf (SHOW log_line_prefix)")
            try:  # (a syslog line's time and pid stand in for a prefix's: checked for the format below)
                pgsyslog.compile_syslog_prefix(v)
            except pglog.PrefixError as exc:
                raise ValueError(f"{exc.message}. {exc.hint or ''}".strip()) from None
        return v

    @model_validator(mode="after")
    def _check_stderr_prefix(self) -> PostgresLogsOptions:
        # a stderr log's lines have only the prefix to tell their time and process; a syslog file's have the
        # syslog line's too (a prefix without them is checked by the run with format: auto, once the file's lines
        # tell which it is)
        if self.log_line_prefix is not None and self.format == "stderr":
            try:
                pglog.compile_prefix(self.log_line_prefix)
            except pglog.PrefixError as exc:
                raise ValueError(f"log_line_prefix: {exc.message}. {exc.hint or ''}".strip()) from None
        return self


@task
class PostgresLogs(Task[PostgresLogsOptions]):
    """Slow statements grouped by fingerprint, errors by SQLSTATE, lock waits, deadlocks, temporary
    files and checkpoints from the PostgreSQL server log (pgBadger's core), with an HTML report."""

    name = "logs.postgres"
    summary = "server-log report: slow queries by fingerprint, errors by SQLSTATE, locks, temp files, checkpoints"
    target_kinds = ("postgres",)
    Options = PostgresLogsOptions
    category = "monitoring"
    default_timeout = 3600

    @classmethod
    def head_start(cls, options: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Before the run is sent (see :meth:`Task.head_start <upkeeper.core.task.Task.head_start>`), on a machine
        with more than one CPU: a read of the whole log (``incremental: false``) of a ``log_file`` big enough for
        helper processes gets them started (:func:`upkeeper.logs.parallel.prestart`), importing the parser of the
        format the option or the file's name tells while the CLI still loads the config.  A run that asks the
        server where its log is, or an incremental one, starts its helpers when it scans."""
        from upkeeper.logs import ahead, parallel  # (the modules: a lazy stand-in holds copies)

        kind, helpers = ahead.postgres_plan(options, target)
        if helpers:  # (none more when ``upkeeper run`` started them before it forked this worker: ahead.start)
            parallel.prestart(kind, helpers)

    @ends_head_start
    def run(self, ctx: TaskContext, options: PostgresLogsOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        check_report_dir(ctx, options.report_dir)
        structured = options.format in ("csvlog", "jsonlog")
        need_server = (not options.log_file or not (options.log_line_prefix or structured)
                       or (options.format == "syslog" and options.syslog_ident is None))
        server = self._server_settings(ctx, target, options.format) if need_server else {}
        path = options.log_file or server.get("logfile")
        if not path and "syslog" in server.get("destination", "").lower():
            raise TaskError(
                f"{target.display()} sends its log to syslog (log_destination = '{server['destination']}'), which "
                "writes it to a file of its own configuration",
                "Try: set the job's log_file option to the file your syslog daemon writes PostgreSQL's messages to "
                "(e.g. /var/log/postgresql.log, /var/log/messages on RHEL) and format: syslog")
        if not path and "error" in server:
            raise TaskError(f"cannot ask {target.display()} where it writes its log: {server['error']}",
                            "Try: check the target's connection settings, or set the job's log_file option")
        if not path and structured:
            raise TaskError(
                f"cannot tell where {target.display()} writes its {options.format} (pg_current_logfile('"
                f"{options.format}') is empty: {options.format} is not in log_destination, or the logging "
                "collector is off)",
                f"Try: log_destination = 'stderr,{options.format}' and logging_collector = on in postgresql.conf, "
                f"or set the job's log_file option to the {options.format} file")
        if not path:
            raise TaskError(
                f"cannot tell where {target.display()} writes its log (pg_current_logfile() is empty: "
                "the logging collector is off)",
                "Try: set the job's log_file option to the server log (e.g. /var/log/postgresql/"
                "postgresql-15-main.log)")
        if not Path(path).is_absolute() and server.get("datadir"):
            path = str(Path(server["datadir"]) / path)
        files = self._files(path, options)
        if not options.log_file and files:
            # the server's own rotation (log_filename with %-escapes): the files it wrote before this one
            files = server_rotated(path, server.get("log_filename", ""), files, options) + files
        if not files:
            why = (f"no server log matches {path}" if any(c in path for c in "*?[")
                   else f"the server log: {not_a_log(path)}")
            return Result(status=Status.FAIL, summary=f"no PostgreSQL log at {path}", findings=[Finding(
                "logs.postgres.missing", Severity.CRITICAL, path, why,
                "set log_file to the file (or glob) the server writes; a non-root reader needs log_file_mode=0640")])
        fmt = self._format(options.format, files, path)
        prefix = options.log_line_prefix or server.get("prefix") or pglog.DEFAULT_PREFIX
        ident = options.syslog_ident or server.get("syslog_ident") or "postgres"
        if fmt in ("stderr", "syslog"):
            try:  # (syslog: the syslog line's time and pid stand in for the prefix's)
                pgsyslog.compile_syslog_prefix(prefix) if fmt == "syslog" else pglog.compile_prefix(prefix)
            except pglog.PrefixError as exc:
                if options.format == "auto" and fmt == "stderr":  # (the option's check left it to the file)
                    raise TaskError(f"{exc.message}, and {path} reads as a stderr log (format: auto)",
                                    f"{exc.hint}; or, if a syslog daemon writes the file, set format: syslog "
                                    "(a syslog line's time and pid stand in for the prefix's)") from None
                raise TaskError(exc.message, exc.hint) from None
        cursors = ctx.state.get(CURSORS_KEY, []) if options.incremental else []
        # what decides which lines parse
        parsing = f"{fmt}\n{prefix if fmt in ('stderr', 'syslog') else ''}" + (f"\n{ident}" if fmt == "syslog" else "")
        restarted = None
        if options.incremental:  # a prefix changed after runs that could parse none of their lines: read them again
            cursors, restarted = unparsed_restart(ctx, UNPARSED_KEY, parsing, cursors)
        started = cursors
        plan = sources.plan_reads(files, cursors, incremental=options.incremental)
        if fmt == "csvlog":
            pgplan.hold_back_open_record(plan, pgstruct.complete_end)
        elif fmt == "syslog" and options.incremental:  # a message whose last chunks are not written yet
            pgplan.hold_back_open_record(plan, lambda path, start, end: pgsyslog.complete_end(path, start, end, prefix,
                                                                                        ident))
        kind, scan_opts, cont, _start, min_parallel = pgplan.scan_setup(fmt, prefix, ident)
        # pieces begin where a message does: an error, a temporary file or a lock wait keeps its STATEMENT
        units = pgplan.units(plan.ranges, fmt, prefix, ident, options.workers)
        t0 = time.monotonic()

        def progress(done: int, total: int) -> None:
            ctx.progress(f"scanned {human_bytes(done)} of {human_bytes(total)}", done / total if total else None)

        read_notes: list[parallel.ReadNote] = []
        processes: dict[str, int] = {}
        try:
            partial, gz_read = parallel.scan(kind, scan_opts, units, workers=options.workers, progress=progress,
                                             continuation=cont, min_parallel=min_parallel, notes=read_notes,
                                             memory_limit=memory_limit(options.memory_limit_mb), processes=processes)
            log_processes(ctx, processes)
        except parallel.FileChanged as exc:
            raise TaskError(f"{exc}; nothing of this run was recorded",
                            "Try: run the job again: it reads the rotated file where the last run left off") from None
        except parallel.MemoryLimit as exc:
            raise memory_limit_error(ctx, exc, options.memory_limit_mb, "upkeeper logs postgres FILE") from None
        except OSError as exc:
            raise TaskError(f"cannot read {exc.filename or path}: {exc.strerror or exc}",
                            "Try: make the log readable (log_file_mode = 0640 and the reader in the postgres group)"
                            ) from None
        seconds = time.monotonic() - t0
        last_open = ctx.state.get(OPEN_KEY) if options.incremental else None
        # (what waits is bounded to what the next run is told about before the report: the bare durations of the
        # backends left out are counted here, as unpaired)
        # (a run that is not incremental has no next run: the bare durations still waiting for an "execute" line are
        # counted in this one, as unpaired)
        waiting = pglog.resolve(partial, [r.file.path for r in plan.ranges],
                                _open_before(last_open, files, plan) if last_open else None,
                                carry=pglog.MAX_CARRIED_PIDS, final=not options.incremental)
        rep = pglog.summarize(partial, top_n=options.top)
        rep["format"] = fmt
        rep["log_line_prefix"] = prefix if fmt in ("stderr", "syslog") else None
        # where the prefix came from: a wrong default is told apart from a wrong option or server setting
        rep["log_line_prefix_from"] = (None if fmt not in ("stderr", "syslog") else "option" if options.log_line_prefix
                                       else "server" if server.get("prefix") else "default")
        if fmt == "syslog":
            rep["syslog_ident"] = ident
        rep["files"] = [{"path": r.file.path, "from": r.start, "to": r.end} for r in plan.ranges]
        rep["scan_seconds"] = round(seconds, 3)
        reread = reread_message("log_line_prefix" if fmt in ("stderr", "syslog") else "format", restarted)
        findings = (([Finding("logs.postgres.reread", Severity.INFO, path, reread)] if reread else [])
                    + plan_findings("postgres", plan.notes, options.rotated_dirs) + read_findings("postgres", read_notes)
                    + self._findings(options, rep, server, path))
        if plan.unreadable and not plan.readable:
            findings = nothing_read("postgres", findings)
        metrics = self._metrics(rep, seconds)
        rep["findings"] = [f.to_dict() for f in findings]
        rep["metrics"] = metrics
        artifacts: list[dict[str, Any]] = []
        if not ctx.dry_run:
            html = report_html.postgres_report(
                rep, rep["findings"], title=f"PostgreSQL log report — {ctx.target_name or target.display()}",
                subtitle=f"{path} · {rep['first'] or '—'} → {rep['last'] or '—'} · "
                         + (f"prefix '{prefix}'" if fmt == "stderr" else
                            f"syslog ({ident}), prefix '{prefix}'" if fmt == "syslog" else fmt) + f" · job {ctx.job}",
                trends=with_current(trends(ctx, TREND_METRICS), metrics, ctx.now()),
                objectives={"query_p95_ms": options.query_p95_ms},
                footer=f"upkeeper logs.postgres · {rep['bytes_read']:,} bytes in {seconds:.2f}s") if options.html else None
            artifacts = write_reports(ctx, report_dir(ctx, options.report_dir), "postgres", rep, html,
                                      options.keep_reports)
            if options.incremental:
                cursors = sources.finish_cursors(plan, gz_read)
                ctx.state.set(CURSORS_KEY, cursors)
                remember_unparsed(ctx, UNPARSED_KEY, parsing, started, restarted, parsed=rep["entries"],
                                  unparsed=rep["unparsed"])
                if plan.ranges:  # where this run stopped, and what waits there for the next run
                    end = next(c for c in cursors if c["path"] == plan.ranges[-1].file.path)
                    ctx.state.set(OPEN_KEY, {"cursor": end, "pids": pglog.open_to_json(waiting)})
                # (nothing read: what the last run left waiting still waits where it stopped)
        st = rep["statements"]
        p95 = st["percentiles"].get("p95")
        if plan.unreadable and not plan.readable:
            summary = f"nothing read: the server log could not be read ({unread_text(plan.unreadable)})"
        else:
            unpaired = st.get("unpaired", {}).get("count", 0)
            untimed = st.get("untimed", {}).get("count", 0)
            summary = (f"{st['count']:,} statements ({st['fingerprints']:,} distinct"
                       + (f"; {unpaired:,} durations without their statement" if unpaired else "") + ")"
                       + (f" + {untimed:,} logged without their duration" if untimed else "")
                       + (f", p95 {p95:.1f} ms" if p95 is not None else "")
                       + f", {rep['errors']['total']:,} errors, {rep['deadlocks']['count']} deadlocks, "
                       f"{rep['locks']['waits']} lock waits, {rep['locks']['failures']} lock failures, "
                       f"{rep['temp_files']['count']} temp files")
            if plan.unreadable:
                summary += f"; {len(plan.unreadable)} file(s) could not be read: {unread_text(plan.unreadable)}"
        html_path = next((a["path"] for a in artifacts if a.get("format") == "html"), None)
        if html_path:
            summary += f" — report: {html_path}"
        return Result(summary=summary, findings=findings, metrics=metrics, artifacts=artifacts)

    @staticmethod
    def _server_settings(ctx: TaskContext, target: PostgresTarget, fmt: str = "auto") -> dict[str, str]:
        """The server's log_line_prefix, data directory, log_min_duration_statement and current log file (of
        ``fmt`` when it is csvlog or jsonlog: pg_current_logfile(fmt), empty when the server does not write it);
        only ``error`` (the first line of the reason) when they cannot be read."""
        import psycopg

        try:
            with psycopg.connect(**target.libpq_params(), autocommit=True) as conn:  # type: ignore[arg-type]
                row = conn.execute(SETTINGS_SQL).fetchone()
                if row is not None and fmt in ("csvlog", "jsonlog"):
                    got = conn.execute(LOGFILE_SQL, (fmt,)).fetchone()
                    row = (row[0], got[0] if got else None, *row[2:])
        except psycopg.Error as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ctx.log.warning("cannot read the server's log settings: %s", why)
            return {"error": why}
        if row is None:
            return {}
        return {"prefix": row[0], "logfile": row[1] or "", "datadir": row[2], "min_duration": row[3],
                "log_filename": row[4] or "", "log_duration": row[5] or "", "min_duration_sample": row[6] or "",
                "sample_rate": row[7] or "", "xact_sample_rate": row[8] or "", "destination": row[9] or "",
                "syslog_ident": row[10] or ""}

    @staticmethod
    def _format(option: str, files: list[LogFile], path: str) -> str:
        """The format to read ``files`` in: the option's, or (auto) the one their names tell — one for all."""
        if option != "auto":
            return option
        fmt = files_format(files)
        if not fmt:
            found = sorted({format_of(f.path) for f in files})
            raise TaskError(f"{path} matches logs of several formats: {', '.join(found)} (told by the file names: "
                            ".csv is csvlog, .json jsonlog, any other stderr)",
                            "Try: narrow log_file to one format's files (e.g. postgresql-*.csv), or set format")
        return fmt

    @staticmethod
    def _files(path: str, options: PostgresLogsOptions) -> list[LogFile]:
        if any(c in path for c in "*?["):
            out: list[LogFile] = []
            # a match may be gone by now (removed by the rotation) or a dangling symlink: left out
            found = [(m, p) for p in glob.glob(path) if (m := _mtime(p)) is not None]
            seen: set[tuple[int, int]] = set()  # one file under two names (a link beside it) is read once
            for _m, p in sorted(found)[-options.max_files:]:
                out += sources.drop_seen([f for f in sources.discover(p, rotated=False) if f.path == p], seen)
            if out:
                # only the newest file is still being written
                out = [dataclasses.replace(f, live=i == len(out) - 1 and not f.gz) for i, f in enumerate(out)]
            return out
        return sources.discover(path, rotated=options.rotated, max_files=options.max_files,
                                rotated_dirs=options.rotated_dirs)

    @staticmethod
    def _metrics(rep: dict[str, Any], seconds: float) -> dict[str, float]:
        st = rep["statements"]
        m: dict[str, float] = {
            "lines": float(rep["lines"]), "statements": float(st["count"]), "fingerprints": float(st["fingerprints"]),
            "statements_untimed": float(st.get("untimed", {}).get("count", 0)),
            "statement_ms_total": float(st["total_ms"]), "errors": float(rep["errors"]["total"]),
            "deadlocks": float(rep["deadlocks"]["count"]), "lock_waits": float(rep["locks"]["waits"]),
            "lock_failures": float(rep["locks"]["failures"]),
            "temp_files": float(rep["temp_files"]["count"]), "temp_bytes": float(rep["temp_files"]["total_bytes"]),
            "checkpoints": float(rep["checkpoints"]["count"]),
            "restartpoints": float(rep["checkpoints"]["restartpoints"]), "unparsed_pct": float(rep["unparsed_pct"]),
            "bytes_read": float(rep["bytes_read"]), "scan_seconds": round(seconds, 3),
        }
        for p in ("p50", "p95", "p99"):
            if p in st["percentiles"]:
                m[f"query_{p}_ms"] = float(st["percentiles"][p])
        return m

    def _findings(self, o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str
                  ) -> list[Finding]:
        out: list[Finding] = []
        for check in (self._unparsed, self._latency, self._unpaired, self._errors, self._locks, self._temp,
                      self._checkpoints):
            try:
                out += check(o, rep, server, path)
            except Exception as exc:  # one failing check never stops the others
                out.append(Finding("logs.postgres.check_failed", Severity.WARNING, check.__name__.strip("_"),
                                   f"the check failed: {exc}"))
        return out

    @staticmethod
    def _unparsed(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        other = rep.get("syslog_other") or {}
        if rep["format"] == "syslog" and other.get("lines") and not rep["lines"]:
            idents = ", ".join(f"{k} ({v:,} lines)" for k, v in other["idents"].items())
            return [Finding("logs.postgres.syslog_ident", Severity.WARNING, path,
                            f"none of the {other['lines']:,} syslog lines read is of the program "
                            f"'{rep.get('syslog_ident')}' (syslog_ident); the file holds lines of: {idents}",
                            "set syslog_ident to the server's (SHOW syslog_ident), or log_file to the file the "
                            "syslog daemon writes PostgreSQL's messages to", value=float(other["lines"]))]
        translated = rep.get("translated_durations", 0)
        lines = rep.get("translated_lines", 0)
        # (the prefix matched: the unparsed lines are translated severities, ERREUR, DÉTAIL …, not a wrong prefix)
        if _in_another_language(rep):
            return [Finding("logs.postgres.lc_messages", Severity.WARNING, path,
                            f"the server logs in another language than English: {translated:,} durations and "
                            f"{lines:,} lines with a severity in another language (of {rep['unparsed']:,} unparsed "
                            "lines) not understood, so statements, errors, lock waits, checkpoints, temporary files "
                            "and autovacuum runs are missing from the report",
                            "set lc_messages = 'C' in postgresql.conf and reload (pgBadger needs it too)",
                            value=translated, data={"samples": rep["unparsed_samples"][:3]})]
        if rep["unparsed_pct"] <= o.unparsed_warn_pct:
            return []
        if rep["format"] not in ("stderr", "syslog"):
            return [Finding("logs.postgres.unparsed", Severity.WARNING, path,
                            f"{rep['unparsed_pct']:.2f} % of records ({rep['unparsed']:,}) are not {rep['format']} "
                            "records" + (unparsed_note("format", rep["entries"], rep["unparsed"]) if o.incremental
                                         else ""), "check that the file is the server's " + rep["format"] + " log (log_destination);"
                            " for a stderr log set format: stderr", value=rep["unparsed_pct"],
                            threshold=o.unparsed_warn_pct, data={"samples": rep["unparsed_samples"][:3]})]
        if rep["format"] == "stderr" and _syslog_samples(rep):
            return [Finding("logs.postgres.syslog", Severity.WARNING, path,
                            f"{rep['unparsed_pct']:.2f} % of lines ({rep['unparsed']:,}) are PostgreSQL's messages as "
                            "syslog writes them (its own date, host and 'postgres[PID]:' before each), which "
                            "the stderr format does not read, so the report misses them",
                            "set format: syslog (or leave format: auto, which tells a syslog file by its first "
                            "lines), with syslog_ident if the server's is not 'postgres'",
                            value=rep["unparsed_pct"], threshold=o.unparsed_warn_pct,
                            data={"samples": rep["unparsed_samples"][:3]})]
        default = ""
        if rep.get("log_line_prefix_from") == "default":  # neither set in the job nor told by the server
            default = (" (upkeeper's default: the server could not be asked for its own"
                       + (f": {server['error']}" if server.get("error") else "") + ")")
        return [Finding("logs.postgres.unparsed", Severity.WARNING, path,
                        f"{rep['unparsed_pct']:.2f} % of lines ({rep['unparsed']:,}) do not start with the "
                        f"log_line_prefix '{rep['log_line_prefix']}'{default}"
                        + (unparsed_note("log_line_prefix", rep["entries"], rep["unparsed"]) if o.incremental else ""),
                        "set log_line_prefix to the server's (SHOW log_line_prefix); for a csvlog or jsonlog file "
                        "set format (a .csv or .json file name tells it); lines that are the rest of a long message "
                        "(a sample starting in the middle of a statement) mean the server's stderr goes through a "
                        "pipe (tee, svlogd, a container runtime), which cuts messages over 4 KB and interleaves "
                        "them: let the server write the file (logging_collector = on, or pg_ctl -l)",
                        value=rep["unparsed_pct"], threshold=o.unparsed_warn_pct,
                        data={"samples": rep["unparsed_samples"][:3]})]

    @staticmethod
    def _latency(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        st = rep["statements"]
        if not st["count"]:
            # (most not parsed: the unparsed warning says why; durations in another language: the lc_messages one)
            if not rep["lines"] or rep["unparsed_pct"] >= 50 or rep.get("translated_durations", 0):
                return []
            untimed = st.get("untimed", {}).get("count", 0)
            if untimed:  # log_statement logs them, nothing times them: counted, their latency unknown (never 0 ms)
                return [Finding("logs.postgres.no_durations", Severity.INFO, path,
                                f"{untimed:,} statements were logged (log_statement) without their durations: the "
                                f"query p95 objective (< {o.query_p95_ms:g} ms) cannot be judged, nor which "
                                "queries are slow — they are counted, by fingerprint and kind, their time unknown",
                                "set log_min_duration_statement = 0 (every statement with its duration; 250ms: only "
                                "slow ones), or log_duration = on next to log_statement = 'all'",
                                value=float(untimed))]
            return [Finding("logs.postgres.no_durations", Severity.INFO, path,
                            "the log has no statement durations, so query latency cannot be judged",
                            "set log_min_duration_statement (0 logs every statement; 250ms only slow ones)")]
        out = []
        p95 = st["percentiles"].get("p95", 0.0)
        md = server.get("min_duration", "")
        # only the slow statements are timed, unless log_duration times every one (its bare "duration:" lines)
        biased = md not in ("", "0", "-1") and server.get("log_duration") != "on"
        sampled = sampling(server)
        if p95 > o.query_p95_ms:
            out.append(Finding(
                "logs.postgres.query_p95", Severity.WARNING, path,
                f"p95 statement duration {p95:.1f} ms over {st['count']:,} statements, objective < "
                f"{o.query_p95_ms:g} ms" + (f" (only a sample of the statements is logged: {sampled})" if sampled
                                           else f" (only statements slower than {md} are logged)" if biased else ""),
                "see the most time-consuming queries in the report; EXPLAIN (ANALYZE, BUFFERS) them",
                value=p95, threshold=o.query_p95_ms))
        if sampled:
            out.append(Finding(
                "logs.postgres.sampled", Severity.INFO, path,
                f"the server logs a sample of its statements: {sampled} — counts and total times are those of the "
                "sample, not of every statement that ran, and the percentiles lean toward the statements logged "
                "every time", "for exact counts set log_min_duration_statement = 0 (or log_duration = on); else read "
                "the report as a sample", data={"log_min_duration_sample": server.get("min_duration_sample"),
                                                 "log_statement_sample_rate": server.get("sample_rate"),
                                                 "log_transaction_sample_rate": server.get("xact_sample_rate")}))
        slow = [q for q in rep["slowest_total"] if q["mean_ms"] > o.slow_query_mean_ms][:5]
        for q in slow:
            out.append(Finding(
                "logs.postgres.slow_query", Severity.WARNING, q["fingerprint"][:120],
                f"{q['count']:,} runs, mean {q['mean_ms']:.1f} ms, max {q['max_ms']:.1f} ms, {q['share_pct']:.1f} % "
                f"of all statement time", "EXPLAIN (ANALYZE, BUFFERS) the slowest example; an index or a rewrite?",
                value=q["mean_ms"], threshold=o.slow_query_mean_ms, data={"example": q["slowest"][:500]}))
        return out

    @staticmethod
    def _unpaired(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        """Bare durations (log_duration) whose statement upkeeper does not know: counted, and said why."""
        up = rep["statements"].get("unpaired") or {}
        if not up.get("count"):
            return []
        why = []
        if up.get("forgotten"):
            why.append(f"{up['forgotten']:,} whose statement upkeeper forgot: more backends had a statement waiting "
                       f"for its duration than it remembers (up to {pglog.MAX_WAITING:,} in a run, "
                       f"{pglog.MAX_CARRIED_PIDS:,} from one run to the next) — backends that ended without "
                       "log_disconnections, or long-running statements")
        if up.get("not_logged"):
            why.append(f"{up['not_logged']:,} with no statement logged before them (log_statement does not log "
                       "every statement, or it was logged before the part of the log read)")
        if up.get("before_error"):
            why.append(f"{up['before_error']:,} logged right before an error: the failed statement's Parse/Bind "
                       "(extended protocol) or statements log_statement does not log, which the log does not tell "
                       "apart without %i in log_line_prefix")
        slow = up.get("slowest") or []
        worst = (f"; slowest {slow[0]['ms']:,.1f} ms (pid {slow[0]['pid']}"
                 + (f" at {slow[0]['time']}" if slow[0].get("time") else "") + ")") if slow else ""
        return [Finding(
            "logs.postgres.unpaired_durations", Severity.INFO, path,
            f"{up['count']:,} statement duration(s) could not be paired with their statement: " + "; ".join(why)
            + f"; they count in the totals and percentiles as '{up['counted_as']}'{worst}",
            "set log_disconnections = on (upkeeper then forgets ended sessions at once), and add %i to "
            "log_line_prefix (it tells the extended protocol's Parse and Bind durations from the statements' own), "
            "or time statements with log_min_duration_statement instead of log_statement + log_duration (the text "
            "is logged with each duration)", value=up["count"], data={"forgotten": up.get("forgotten", 0),
                                                 "not_logged": up.get("not_logged", 0),
                                                 "before_error": up.get("before_error", 0), "slowest": slow})]

    @staticmethod
    def _errors(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        err = rep["errors"]
        out = []
        for e in err["classes"][: o.top]:
            if e["level"] == "WARNING":
                continue
            sev = {"PANIC": Severity.CRITICAL, "FATAL": Severity.WARNING}.get(e["level"], Severity.INFO)
            if e["sqlstate"] == "40P01":
                sev = Severity.WARNING
            raised = e.get("raised_by_plpgsql", 0)
            out.append(Finding(
                f"logs.postgres.error.{e['sqlstate']}", sev, e["sqlstate"],
                f"{e['count']:,} x {e['level']}: {e['message']}"
                + (f" — e.g. {e['statements'][0][:200]}" if e["statements"] else "")
                + (f" — {raised:,} raised by a PL/pgSQL RAISE: SQLSTATE P0001 (raise_exception) unless that RAISE "
                   "names another condition (USING ERRCODE, RAISE unique_violation …), which the log does not tell"
                   if raised else ""),
                "fix the query or the application code that sends it"
                + ("; add %e to log_line_prefix to log each error's SQLSTATE" if raised else ""), value=e["count"]))
        return out

    @staticmethod
    def _locks(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        out = []
        dl = rep["deadlocks"]
        if dl["count"] > o.deadlocks_warn:
            out.append(Finding("logs.postgres.deadlocks", Severity.WARNING, path,
                               f"{dl['count']} deadlock(s): " + (dl["details"][0].replace("\n", " ")[:300]
                                                                 if dl["details"] else ""),
                               "make transactions take row locks in the same order (e.g. ORDER BY id FOR UPDATE)",
                               value=dl["count"], threshold=o.deadlocks_warn))
        lk = rep["locks"]
        if lk["waits"] > o.lock_waits_warn:
            out.append(Finding("logs.postgres.lock_waits", Severity.WARNING, path,
                               f"{lk['waits']} lock wait(s) longer than deadlock_timeout, longest {lk['max_wait_ms']:.0f} "
                               f"ms; mostly {', '.join(list(lk['types'])[:3])}",
                               "shorten the transactions that hold these locks; look at the waiting queries",
                               value=lk["waits"], threshold=o.lock_waits_warn, data={"queries": lk["queries"][:5]}))
        if lk["failures"] > o.lock_failures_warn:
            q = lk["failed_queries"]
            out.append(Finding("logs.postgres.lock_failures", Severity.WARNING, path,
                               f"{lk['failures']} statement(s) failed for a lock they could not get (SQLSTATE 55P03: "
                               "lock_timeout expired or NOWAIT)" + (f"; most: {q[0]['fingerprint'][:150]} "
                                                                   f"({q[0]['count']})" if q else ""),
                               "find what holds these locks (long transactions, migrations) and shorten it; retry "
                               "the statements that use lock_timeout or NOWAIT",
                               value=lk["failures"], threshold=o.lock_failures_warn, data={"queries": q[:5]}))
        return out

    @staticmethod
    def _temp(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str) -> list[Finding]:
        tf = rep["temp_files"]
        if not tf["count"]:
            return []
        top_q = tf["queries"][0]["fingerprint"][:150] if tf["queries"] else ""
        return [Finding("logs.postgres.temp_files", Severity.INFO, path,
                        f"{tf['count']} temporary file(s), {human_bytes(tf['total_bytes'])} in total, largest "
                        f"{human_bytes(tf['max_bytes'])}" + (f"; e.g. {top_q}" if top_q else ""),
                        "sorts and hashes spill to disk: raise work_mem for these queries or add an index",
                        value=tf["total_bytes"])]

    @staticmethod
    def _checkpoints(o: PostgresLogsOptions, rep: dict[str, Any], server: dict[str, str], path: str
                     ) -> list[Finding]:
        cp = rep["checkpoints"]
        if not cp["too_frequent_warnings"]:
            return []
        return [Finding("logs.postgres.checkpoints_too_frequent", Severity.WARNING, path,
                        f"PostgreSQL warned {cp['too_frequent_warnings']} time(s) that checkpoints occur too "
                        f"frequently (as close as {cp['min_seconds_apart']} s apart)",
                        "raise max_wal_size so that checkpoints are triggered by checkpoint_timeout",
                        value=cp["too_frequent_warnings"])]


def _open_before(last: Any, files: list[LogFile], plan: ReadPlan) -> pglog.OpenState | None:
    """What the last run left waiting (statements for their bare duration, see :func:`pglog.resolve`) when this
    run reads on from where it stopped: the file it stopped in is still here (by the cursor's inode and bytes,
    perhaps renamed or compressed since), this run reads nothing before that point, and reads that file on from
    there (or nothing of it: then what comes next, in the files after it).  Else None: nothing is paired with
    what the log held before (a first run, the file lost, read again from its start)."""
    if not isinstance(last, dict) or not isinstance(last.get("cursor"), dict):
        return None
    cur = last["cursor"]
    now = {c["path"]: c for c in plan.cursors}
    order = {f.path: i for i, f in enumerate(files)}
    for lf in files:
        c = now.get(lf.path)
        if c is None or not sources.continues(lf, c, cur):
            continue
        mine = [r for r in plan.ranges if r.file.path == lf.path]
        if mine and mine[0].start != int(cur.get("offset", -1)):
            return None
        if any(order.get(r.file.path, -1) < order[lf.path] for r in plan.ranges):
            return None
        return pglog.open_from_json(last.get("pids"))
    return None


def _mtime(path: str) -> float | None:
    """When ``path`` was last written, or None if it cannot be stat'ed (gone, a dangling symlink)."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
