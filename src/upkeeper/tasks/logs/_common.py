"""Shared by the log tasks: where reports go, writing them, trends from history."""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import Field

from upkeeper.core.artifacts import (
    PENDING_SUFFIX,
    REPORT_MODE,
    STAGED,
    atomic_write_bytes,
    final_name,
    make_report_dir,
    pending_name,
    report_dir_denied,
)
from upkeeper.core.task import Finding, Result, Severity, TaskContext
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes
from upkeeper.redact import redact_obj

if TYPE_CHECKING:  # the readers are the worker's (the CLI imports the log tasks for their options)
    from upkeeper.logs.parallel import ReadNote
    from upkeeper.logs.sources import PlanNote

_TaskT = TypeVar("_TaskT")
_OptsT = TypeVar("_OptsT")

REPORT_KEEP_DEFAULT = 12

# the report options every log task declares (``report_dir: ReportDir = None`` …), described once
ReportDir = Annotated[str | None, Field(
    description="where HTML/JSON reports go, in a subdirectory named after the job; a relative path is relative "
    "to the config file's directory (default: reports/<job> beside the history database). Source: upkeeper (not "
    "set by default)")]
KeepReports = Annotated[int, Field(ge=0, description="reports kept per job (0: keep all). Source: upkeeper default")]
HtmlReport = Annotated[bool, Field(description="also write the standalone HTML report. Source: upkeeper default")]
#: the memory a run's scanning may add, when the job does not say (a quarter of the machine's, at least this)
MEMORY_LIMIT_FLOOR_MB = 512
MemoryLimitMb = Annotated[int, Field(ge=0, description=(
    "megabytes the scanning processes may add to their memory together (one process per 96 MB of it at most) "
    "before the run stops "
    "with an error that names what filled it, recording nothing: a log of millions of distinct request lines, "
    "clients or statements (a scanner, cache-busting query strings) would otherwise take gigabytes on a "
    "production host, next to its database. 0: a quarter of the machine's memory, at least "
    f"{MEMORY_LIMIT_FLOOR_MB} MB. Source: upkeeper default (GoAccess and pgBadger set no limit)"))]


def memory_limit(mb: int) -> int:
    """The scan's memory limit in bytes for the option ``memory_limit_mb`` (0: see :data:`MemoryLimitMb`)."""
    if mb > 0:
        return mb << 20
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        total = 0
    return max(MEMORY_LIMIT_FLOOR_MB << 20, total // 4)


def memory_limit_error(ctx: TaskContext, exc: Exception, mb: int, command: str) -> TaskError:
    """The run's error when its scan passed the memory limit (``exc``: parallel.MemoryLimit)."""
    limit = memory_limit(mb) >> 20
    said = (f"memory_limit_mb: {mb}" if mb > 0 else
            f"memory_limit_mb (unset: {limit:,} MB, a quarter of this machine's memory)")
    return TaskError(
        f"stopped: the log holds more distinct values than {said} lets this run count — {exc}; nothing of this "
        "run was recorded (the next run reads the same lines)",
        f"Try: raise jobs -> {ctx.job} -> options -> memory_limit_mb (the machine has room: "
        f"{_available_mb():,} MB available now), or rotate the log more often; millions of distinct values come "
        f"from a scanner, a flood or generated texts: see the top ones with `{command}` on a part of the log "
        "(head -c 100M FILE > part.log)")


def _available_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available) >> 20
    except Exception:  # (psutil is a dependency: this is only a hint)
        return 0


def report_dir(ctx: TaskContext, option: str | None) -> Path:
    """``option`` if set (a relative one is relative to the config file's directory, as the history's path is:
    not to wherever the run was started from, which cron and systemd make $HOME or /); else ``reports/<job>``
    beside the SQLite history (or in the data directory)."""
    if option:
        given = Path(option).expanduser()
        cfg_source = ctx.config.source if ctx.config is not None else None
        if not given.is_absolute() and cfg_source is not None:
            given = cfg_source.absolute().parent / given
        return given / ctx.job
    from upkeeper.core.history import default_history_path

    base = default_history_path().parent
    cfg = ctx.config
    hist = cfg.history if cfg is not None else None
    if hist and not hist.startswith(("postgres", "postgresql")):
        p = Path(hist.removeprefix("sqlite:///")).expanduser()
        if not p.is_absolute() and cfg is not None and cfg.source is not None:
            p = cfg.source.parent / p
        base = p.parent
    return base / "reports" / ctx.job


def check_report_dir(ctx: TaskContext, option: str | None) -> None:
    """Before any log is read: a TaskError at once, not after an hour of reading, when the reports could not
    be written (:func:`upkeeper.core.artifacts.report_dir_denied`: a directory an upkeeper run as root made).
    A dry run writes none."""
    if ctx.dry_run:
        return
    denied = report_dir_denied(report_dir(ctx, option))
    if denied is not None:
        raise denied


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


#: job state: the pending names of the reports a run staged — recorded with its result, so the next run
#: tells a report whose run was recorded (published late: its runner died after recording it) from one of
#: a run that was not (removed)
REPORTS_KEY = "staged_reports"
#: a temporary file of an atomic write older than this was left by a killed process
STALE_TMP_SECONDS = 3600


def write_reports(ctx: TaskContext, directory: Path, stem: str, data: dict[str, Any], html: str | None,
                  keep: int, *, redacted: bool = False) -> list[dict[str, Any]]:
    """Write ``<stem>-<time>.json`` (and ``.html``), refresh ``latest.*``, prune old ones; return artifacts.

    The name is the run's time to the microsecond, with ``-2``, ``-3`` … when a report of that name is
    there already (two runs in the same instant, or a fixed clock): a run never overwrites another's
    report, so each run's recorded artifact keeps its own data.

    Under the runner (``ctx.stage_files``) the files are written whole under hidden pending names
    (:mod:`upkeeper.core.artifacts`) and the runner renames them into place and refreshes ``latest.*``
    once the run's result is recorded: a run killed before that (whose cursors were not recorded either,
    so the next run reads its lines again) leaves no report, and no report is ever seen half-written.
    The pending files such a run left are removed here, by the job's next run.

    ``data`` is redacted here (log lines, paths and examples carry tokens and passwords); the tasks
    redact it before they build findings and the HTML, so this is the last line of defence — unless the caller
    redacted the finished ``data`` whole itself (``redacted``: logs.nginx does, once for its HTML and its JSON,
    where each walked the whole report again)."""
    if not redacted:
        data = redact_obj(data)
    make_report_dir(directory, "report_dir")
    _recover(ctx, directory, stem)
    texts = [("json", json.dumps(data, indent=1, default=str, ensure_ascii=False) + "\n")]
    if html is not None:
        texts.append(("html", html))
    base = _reserve(directory, f"{_safe(stem)}-{ctx.now().strftime('%Y%m%dT%H%M%S.%fZ')}",
                    [f".{fmt}" for fmt, _ in texts])
    artifacts: list[dict[str, Any]] = []
    pendings = [pending_name(base.with_name(f"{base.name}.{fmt}")) for fmt, _ in texts]
    try:
        for (fmt, text), pending in zip(texts, pendings, strict=True):
            final = base.with_name(f"{base.name}.{fmt}")
            with open(pending, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            latest = directory / f"latest.{fmt}"
            art: dict[str, Any] = {"kind": "report", "format": fmt, "path": str(final)}
            if ctx.stage_files:
                art[STAGED] = {"from": str(pending), "copies": [str(latest)]}
            else:  # nobody publishes it later: now
                os.replace(pending, final)
                atomic_write_bytes(latest, text.encode("utf-8"), new_mode=REPORT_MODE)
            artifacts.append(art)
        if ctx.stage_files:
            ctx.state.set(REPORTS_KEY, [p.name for p in pendings])
    except BaseException as exc:  # an error, or the SIGTERM of a timeout: no half-written file stays behind
        for p in pendings:
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # (a full disk; a directory turned unwritable since it was checked)
            raise TaskError(f"report directory {directory}: cannot write the {stem} report: "
                            f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; no report "
                            f"written") from None
        raise
    _prune(directory, stem, keep, {Path(a["path"]) for a in artifacts})
    return artifacts


def _recover(ctx: TaskContext, directory: Path, stem: str) -> None:
    """The pending reports of earlier runs of this job (none runs now: runs of a job take turns): the
    recorded run's (its runner died between recording and renaming) are published, the others (a run
    killed before its result was recorded) removed, as are temporary files of killed writes."""
    saved = ctx.state.get(REPORTS_KEY)
    # (read back from history -- damaged, another version's -- anything but a list of names records none: the
    # pending reports are then taken for a killed run's and removed, never published unrecorded; a text would
    # match any part of itself)
    recorded = {n for n in saved if isinstance(n, str)} if isinstance(saved, list) else set()
    for p in directory.glob(f".{_safe(stem)}-*{PENDING_SUFFIX}"):
        final = final_name(p)
        try:
            if final is not None and p.name in recorded:
                os.replace(p, final)
            else:
                p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            ctx.log.warning("cannot tidy the left-over report %s: %s", p, exc.strerror or exc)
    old = time.time() - STALE_TMP_SECONDS
    for p in directory.glob(".*.tmp-*"):
        try:
            if p.stat().st_mtime < old:
                p.unlink()
        except OSError:
            pass


def _reserve(directory: Path, name: str, suffixes: list[str]) -> Path:
    """``directory/name`` (or ``name-2`` …) whose files (``name`` + each of ``suffixes``) no other run has
    nor will take while this one writes them: their pending names are created empty and exclusively
    (O_EXCL), then the final names checked free (a run renames its pending file to its final name, so
    one of the two exists from the reservation on)."""
    for n in range(1, 10_000):
        base = directory / (name if n == 1 else f"{name}-{n}")
        made: list[Path] = []
        try:
            for suffix in suffixes:
                final = base.with_name(base.name + suffix)
                p = pending_name(final)
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, REPORT_MODE))
                made.append(p)
                if os.path.lexists(final):
                    raise FileExistsError(final)
        except FileExistsError:
            for p in made:
                p.unlink(missing_ok=True)
            continue
        return base
    raise FileExistsError(f"{directory / name}: 10,000 reports of that name exist")


def _prune(directory: Path, stem: str, keep: int, written: set[Path]) -> None:
    """Keep the ``keep`` newest reports of each format — newest by modification time, as names of runs
    in the same second or of a clock set back do not sort by age — counting the ones just ``written``,
    which are never deleted."""
    if keep <= 0:
        return
    for suffix in (".json", ".html"):
        olds: list[tuple[int, str, Path]] = []
        for p in directory.glob(f"{_safe(stem)}-*{suffix}"):
            if p in written:
                continue
            try:
                olds.append((p.stat().st_mtime_ns, p.name, p))
            except OSError:
                continue  # gone meanwhile
        olds.sort()
        mine = sum(1 for p in written if p.suffix == suffix)
        for _mtime, _name, old in olds[: max(0, len(olds) - max(0, keep - mine))]:
            try:
                old.unlink()
            except OSError:
                pass


def read_findings(task: str, notes: list[ReadNote]) -> list[Finding]:
    """``logs.<task>.damaged_file`` findings: a truncated or corrupt compressed file, read up to the damage
    (warning), or one with trailing garbage after its compressed data, read whole as zcat does (info)."""
    return [Finding(f"logs.{task}.damaged_file", Severity.WARNING if n.damaged else Severity.INFO, n.path,
                    n.message, "the log text after the damage is lost: restore the file from a backup if it matters, "
                    "or delete it" if n.damaged else "", data={"damaged": n.damaged}) for n in notes]


#: the option of the log tasks that names logrotate's olddir, described once
RotatedDirs = Annotated[list[Annotated[str, Field(min_length=1)]], Field(
    description="directories where the rotated files of the log are moved (logrotate's olddir, e.g. "
    "/var/log/nginx/old; a relative one is relative to the log's directory, as for logrotate): with incremental "
    "reading, the rotated file holding what the last run did not read yet is looked for there too, and it and "
    "the files rotated after it are read; nothing else there is read (not older files, nothing on a first "
    "run). Without it, lines written between a run and a rotation into an olddir are lost (a lost_lines "
    "warning). Not with rotated: false, nor (logs.postgres) with a glob log_file, whose matches are read each "
    "alone. Source: upkeeper (none by default; logrotate's config is only used to suggest it)")]


def check_rotated_dirs(rotated_dirs: list[str], rotated: bool, glob_log: str | None = None) -> None:
    """``rotated_dirs`` where it would be ignored is a configuration error, not an olddir silently left unread
    (and the ``lost_lines`` warnings it was set to prevent): with ``rotated: false`` no rotated file is read, and
    a glob ``glob_log`` (logs.postgres' ``log_file``) reads each match alone, without rotated files."""
    if not rotated_dirs:
        return
    if not rotated:
        raise ValueError("rotated_dirs is not read with rotated: false (no rotated file is); remove one of them")
    if glob_log is not None:
        raise ValueError(f"rotated_dirs is not read with a glob log_file ({glob_log!r}: each file it matches is "
                         "read alone, without rotated files); name the live log file instead (rotated_dirs "
                         "follows its rotations), or remove rotated_dirs")


def lost_fix(path: str, rotated_dirs: list[str] | None = None) -> str:
    """How to find a lost live file next time: ``rotated_dirs`` with the olddir logrotate's config gives (a hint,
    :mod:`upkeeper.logs.logrotate_hint`), or the generic advice."""
    from upkeeper.logs.logrotate_hint import olddir_for
    from upkeeper.logs.sources import live_log

    try:
        hint = olddir_for(live_log(path))
    except Exception as exc:  # a hint only: never the reason a run fails
        hint = None
        why = f"could not check logrotate's config for an olddir ({type(exc).__name__}: {exc})"
    else:
        why = ""
    looked = f" (rotated_dirs looked in: {', '.join(rotated_dirs)})" if rotated_dirs else ""
    if hint is not None and hint.olddir is not None:
        if rotated_dirs and any(str(Path(path).parent / Path(d).expanduser()) == hint.olddir
                                or Path(d).expanduser() == Path(hint.olddir) for d in rotated_dirs):
            advice = (f"logrotate ({hint.source}) moves its rotated files to {hint.olddir} (olddir), which "
                      "rotated_dirs names: the file was deleted there before this run")
        else:
            advice = (f"logrotate ({hint.source}) moves its rotated files to {hint.olddir} (olddir): add "
                      f"{hint.olddir} to the job's rotated_dirs option{looked}")
    else:
        advice = ("if logrotate moves its rotated files to another directory (olddir), name that directory in "
                  f"the job's rotated_dirs option{looked}")
        if hint is not None:
            why = (f"no olddir for it found in {hint.source} (checked only as a hint"
                   + (f"; could not read {hint.problem}" if hint.problem else "") + ")")
    return ("run the job more often than the log rotates, keep more rotated files (logrotate's 'rotate'), keep "
            "them next to the log under a name of the form log.N[.gz|.zst|.xz|.bz2] or log-YYYYMMDD[.gz|…] (any dateformat beginning with the year), or " + advice
            + (f" — {why}" if why else ""))


def plan_findings(task: str, notes: list[PlanNote], rotated_dirs: list[str] | None = None) -> list[Finding]:
    """What planning the reads noticed, as findings: a file that cannot be read is a
    ``logs.<task>.unreadable`` warning (its lines are missing from the analysis, and it is tried again
    next run); a file that got shorter or was replaced since the last run is a ``logs.<task>.rotation``
    info finding (it was read from the start); the last run's live file gone with no rotated copy found is a
    ``logs.<task>.lost_lines`` warning (what was written to it since the last run is missing), whose fix names
    the ``rotated_dirs`` option (:func:`lost_fix`)."""
    out: list[Finding] = []
    for n in notes:
        if n.kind == "unreadable":
            out.append(Finding(f"logs.{task}.unreadable", Severity.WARNING, n.path, n.message,
                               "its lines are missing from this analysis: let the user upkeeper runs as read it "
                               "(e.g. the adm group for /var/log), or remove the file"))
        elif n.kind == "lost":
            out.append(Finding(f"logs.{task}.lost_lines", Severity.WARNING, n.path, n.message,
                               lost_fix(n.path, rotated_dirs)))
        elif n.kind == "left":
            out.append(Finding(f"logs.{task}.lost_lines", Severity.WARNING, n.path, n.message,
                               n.fix or "if the job now reads another log on purpose, nothing to do; else set its "
                               "log path (or glob) back to include this file, or raise max_files"))
        else:
            out.append(Finding(f"logs.{task}.rotation", Severity.INFO, n.path, n.message))
    return out


def unread_text(paths: list[str], limit: int = 3) -> str:
    """The files a run could not read, for its summary: ``a, b, c and 2 more``."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def nothing_read(task: str, findings: list[Finding]) -> list[Finding]:
    """``findings`` of a run that could read none of its logs: its ``unreadable`` warnings are critical (nothing
    was analysed: the run fails, as when the log is missing)."""
    return [replace(f, severity=Severity.CRITICAL) if f.check == f"logs.{task}.unreadable" else f for f in findings]


def not_a_log(path: str) -> str:
    """Why ``path`` gave no log file: it is a directory, something else than a file, or missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:  # a parent that is a file, or a directory it may not enter
        return f"{path} cannot be reached ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory, not a log file"
    return f"{path} is not a regular file"


#: earlier runs a report's trend charts show (the newest; only those are read from the history)
TREND_POINTS = 60


def trends(ctx: TaskContext, names: list[str], days: int = 180) -> dict[str, list[tuple[str, float]]]:
    """Earlier runs' values of ``names`` (this job), labelled by date, for the report's trend charts."""
    since = ctx.now() - timedelta(days=days)
    out: dict[str, list[tuple[str, float]]] = {}
    for n in names:
        try:
            series = ctx.metrics.series(n, since=since, last=TREND_POINTS)
        except Exception:  # history unavailable: no trends, the report still works
            series = []
        out[n] = [(_label(ts), v) for ts, v in series[-TREND_POINTS:]]
    return out


def _label(ts: datetime) -> str:
    return ts.strftime("%m-%d %H:%M")


def with_current(tr: dict[str, list[tuple[str, float]]], metrics: dict[str, float], now: datetime
                 ) -> dict[str, list[tuple[str, float]]]:
    """Append this run's values so the trend charts end with it."""
    return {k: [*v, (_label(now) + " (now)", float(metrics[k]))] if k in metrics else v for k, v in tr.items()}


# -- lines no run could parse ------------------------------------------------------------------------------
# A run whose format (an nginx log_format, a PostgreSQL log_line_prefix) matches none of the lines it reads has
# analysed nothing, yet its cursors move past those lines: once the format is fixed they would never be read.
# So where such a run started is kept (with its format), and the first run under another format starts there.


def _record(saved: Any) -> dict[str, Any] | None:
    """``key``'s record as :func:`remember_unparsed` writes it, or None: read back from history, it may be anything
    (damaged, another version's) — a record that is not understood is dropped, never a run that fails."""
    if not isinstance(saved, dict) or not isinstance(saved.get("cursors"), list) or not isinstance(
            saved.get("format"), str):
        return None
    return {"format": saved["format"], "cursors": saved["cursors"], "lines": _count(saved.get("lines")),
            "runs": max(1, _count(saved.get("runs"))), "since": str(saved.get("since", "?"))[:40]}


def _count(v: Any) -> int:
    return v if type(v) is int and v >= 0 else 0


def unparsed_restart(ctx: TaskContext, key: str, fingerprint: str, cursors: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The cursors a run reads on from: ``cursors`` (the last run's), or, when the runs since
    ``key``'s record could parse none of their lines and this run's ``fingerprint`` (its format) is another,
    where the first of them started — with that record (``lines``, ``runs``, ``since``) to say so."""
    saved = _record(ctx.state.get(key))
    if saved is not None and saved["format"] != fingerprint:
        return list(saved["cursors"]), saved
    return cursors, None


def remember_unparsed(ctx: TaskContext, key: str, fingerprint: str, started: list[dict[str, Any]],
                      restarted: dict[str, Any] | None, *, parsed: int, unparsed: int) -> None:
    """After a run that moved its cursors on from ``started`` (``restarted``: what :func:`unparsed_restart`
    started it from, if anything): a run that parsed none of the lines it read keeps where the unparsed stretch
    began (the first such run's start), a run that parsed any forgets it; a run that read nothing changes
    nothing."""
    raw = ctx.state.get(key)
    saved = _record(raw)
    if parsed:
        if raw is not None:
            ctx.state.set(key, None)
        return
    if not unparsed:
        if raw is not None and saved is None:  # not understood: dropped
            ctx.state.set(key, None)
        return
    if saved is not None:
        # the same format again, or another that fared no better from the stretch's start (its lines were read
        # again: they are counted once)
        lines = unparsed if restarted is not None else saved["lines"] + unparsed
        ctx.state.set(key, {**saved, "format": fingerprint, "lines": lines, "runs": saved["runs"] + 1})
    else:
        ctx.state.set(key, {"format": fingerprint, "cursors": started, "lines": unparsed, "runs": 1,
                            "since": ctx.now().strftime("%Y-%m-%d %H:%M UTC")})


def reread_message(option: str, restarted: dict[str, Any] | None) -> str | None:
    """What a run says (a ``logs.<task>.reread`` info finding) when it read again the lines of runs that could parse
    none of them (``restarted``: :func:`unparsed_restart`'s record), its ``option`` (the format) having changed
    since; None when it did not."""
    if restarted is None:
        return None
    return (f"{option} changed after {restarted['runs']} run(s) (since {restarted['since']}) that could parse none "
            f"of their {restarted['lines']:,} lines: this run read them again, with the new {option}")


def unparsed_note(option: str, parsed: int, unparsed: int) -> str:
    """What a run that parsed none of its lines adds to its unparsed warning: they are read again once
    ``option`` is changed (:func:`unparsed_restart`)."""
    if parsed or not unparsed:
        return ""
    return (f"; no line parsed, so nothing was analysed: the next run with another {option} reads these lines "
            "again")


def log_processes(ctx: TaskContext, processes: dict[str, int]) -> None:
    """Say in the run's log how many processes scanned, and how many helpers were started before the scan (see
    :func:`upkeeper.logs.parallel.scan`'s ``processes``)."""
    scanning = processes.get("scanning", 1)
    if scanning > 1:
        ahead = processes.get("ahead", 0)
        read = processes.get("read_ahead", 0)
        ctx.log.info("scanned by %d processes: %d helper(s) started before the scan%s%s", scanning,
                     processes.get("prestarted", 0), f" ({ahead} by upkeeper run, before its worker)" if ahead else "",
                     f"; {read} of the {processes.get('pieces', 0)} pieces ({human_bytes(processes.get('read_ahead_bytes', 0))}) "
                     "were read before the scan began" if read else "")


def ends_head_start(run: Callable[[_TaskT, TaskContext, _OptsT], Result]) -> Callable[[_TaskT, TaskContext, _OptsT], Result]:
    """A log task's ``run``, after which the scan helpers its head start started and no scan took are ended
    (:func:`upkeeper.logs.parallel.dismiss_prestarted`; a run may fail or find no log before it scans)."""

    @functools.wraps(run)
    def wrapper(self: _TaskT, ctx: TaskContext, options: _OptsT) -> Result:
        try:
            return run(self, ctx, options)
        finally:
            parallel = sys.modules.get("upkeeper.logs.parallel")  # (not imported: nothing was started)
            if parallel is not None:
                parallel.dismiss_prestarted()

    return wrapper
