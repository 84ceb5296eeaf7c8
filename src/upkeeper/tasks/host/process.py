"""host.process: resident memory of named processes over time; steady growth is a leak warning.

Each run samples the RSS of every matching process (``samples_per_run`` times,
``sample_interval`` apart) and keeps the recent samples per process (pid and
start time, so a restart starts a new series) in the job's state.  A process
whose last ``leak_samples`` samples rise along a straight line (least squares:
slope above ``leak_slope`` per hour, r² at least ``leak_min_r2``) gets a
memory-leak warning; one above ``rss_warning`` gets a size warning.

A pid file left behind by a daemon that died names a pid the kernel may give to any later process.  Each run
remembers, per pid file, the file (inode, mtime), the pid and when that process started (clock ticks since boot,
which no clock step moves) on which boot: when the file is unchanged but the process with its pid started at
another moment, or on another boot, the daemon that wrote it is gone and the pid belongs to someone else — the
selector is missing, and the finding names the process that holds the pid now.  With no such memory (the
first run, or a file written since the last), a process that started more than 2 s after the file was last
written cannot be the daemon that wrote it (a daemon writes its pid file once it runs), nor can a kernel
thread: see :mod:`upkeeper.core.pidfile` (and its word on clocks stepped forward).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Container
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from upkeeper import lazy
from upkeeper.config.types import ByteSize, Duration, StrictModel
from upkeeper.core import pidfile
from upkeeper.core.pidfile import read_pid_file, start_ticks
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.host._trend import fit

if TYPE_CHECKING:
    import psutil
else:  # the run's, not the CLI's that validates the job (~10 ms): the worker loads it before the run
    psutil = lazy.module("psutil")


class ProcessSelector(StrictModel):
    """Which processes one entry watches: by name, by command line, or by pid file (combined: all must hold)."""

    label: str | None = Field(None, description="name in findings and metrics (default: the name, pattern or pid file). "
            "Source: upkeeper (not set by default)")
    name: str | None = Field(None, description="process name or executable basename, e.g. node, gunicorn. "
            "Source: upkeeper (not set by default)")
    cmdline: str | None = Field(None, description="regular expression searched in the full command line. "
            "Source: upkeeper (not set by default)")
    pid_file: str | None = Field(None, description="file holding the pid of the process. A pid file left behind "
            "by a process that died, whose pid another process has taken since, is reported missing: the process "
            "holding the pid started more than 2 s after the file was last written (a daemon writes it once it "
            "runs), or is a kernel thread, or started at another moment or on another boot than when a previous "
            "run saw the file unchanged. "
            "Source: upkeeper (not set by default)")
    required: bool = Field(True, description="warn when no process matches. Source: upkeeper default")

    @model_validator(mode="after")
    def _some(self) -> ProcessSelector:
        if not (self.name or self.cmdline or self.pid_file):
            raise ValueError("give at least one of name, cmdline, pid_file")
        return self

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and "/" in v:
            raise ValueError(f"name {v!r} is a path, and is matched against process names and executable "
                             f"basenames only (it would never match): use name: {v.rstrip('/').rsplit('/', 1)[-1]!r}, "
                             f"or cmdline: '^{re.escape(v)}'")
        return v

    @field_validator("cmdline")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"cmdline is not a valid regular expression: {exc}") from None
        return v

    @property
    def key(self) -> str:
        return self.label or self.name or self.cmdline or self.pid_file or "?"


class ProcessOptions(TaskOptions):
    processes: list[ProcessSelector] = Field(..., min_length=1, description="the processes to watch. "
            "Source: none (required)")
    rss_warning: ByteSize = Field(
        default="1GB", validate_default=True, description="warn when one process's resident memory exceeds this. Source: the maintenance "
        "procedures (1 GB per process)",
    )
    leak_samples: int = Field(6, ge=3, le=1000, description="samples (N) a growth trend is judged over. "
            "Source: upkeeper default")
    leak_slope: ByteSize = Field(
        default="10MiB", validate_default=True, description="growth per hour above which steady growth is a leak. Source: upkeeper default",
    )
    leak_min_r2: float = Field(
        0.9, ge=0, le=1, description="how steady (r² of the linear fit) the growth must be to call it a leak. "
                "Source: upkeeper default"
    )
    samples_per_run: int = Field(1, ge=1, le=600, description="samples taken in one run. "
            "Source: upkeeper default")
    sample_interval: Duration = Field(default="1s", validate_default=True, description="time between samples in one run. "
            "Source: upkeeper default")
    keep_samples: int = Field(200, ge=3, le=10_000, description="samples kept per process between runs. "
            "Source: upkeeper default")

    @model_validator(mode="after")
    def _enough(self) -> ProcessOptions:
        if self.keep_samples < self.leak_samples:
            raise ValueError("keep_samples must be at least leak_samples")
        return self


def pid_from_file(path: str) -> int | None:
    return read_pid_file(path)[0]


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_file_record(path: str) -> dict[str, Any] | None:
    """What a pid file and the process it names are now: the file (inode, mtime), its pid, that process's start
    and the boot; None when the file names no live process (said elsewhere, see :func:`read_pid_file`)."""
    pid = pid_from_file(path)
    if pid is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    # v 2: recorded by a run that also checked the process against the file's mtime (:func:`stale_pid_file`)
    return {"file": [st.st_ino, st.st_mtime_ns], "pid": pid, "start": ticks, "boot": boot_id(), "v": 2}


def _point(p: Any) -> bool:
    return (isinstance(p, list) and len(p) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in p))


def usable_samples(saved: Any) -> dict[str, Any]:
    """The memory samples a run saved, by process identity, that can be used: read back from history (damaged,
    another version's), they may be anything.  A series with a point that is not ``[time, bytes]`` starts again."""
    if not isinstance(saved, dict):
        return {}
    return {k: v for k, v in saved.items()
            if isinstance(v, dict) and isinstance(v.get("points"), list) and all(_point(p) for p in v["points"])}


def stale_pid_file(path: str, before: dict[str, Any] | None, now: dict[str, Any] | None) -> str:
    """Why the pid file at ``path`` no longer names the process that wrote it ("" when it may).  The file is
    the one a previous run saw, with the same pid, but the process holding that pid started at another moment
    or on another boot (the daemon died, its pid went to another process).  Or, when no run of this version
    saw this file with this process yet (the first run, or the file was rewritten since): that process cannot
    have written the file -- a kernel thread, or one that started after the file was last written
    (:func:`upkeeper.core.pidfile.stranger`)."""
    if now is None:
        return ""
    if before is not None and before.get("file") == now["file"] and before.get("pid") == now["pid"]:
        if before.get("boot") != now["boot"] or before.get("start") != now["start"]:
            holder = pidfile.comm(now["pid"])
            when = "since the last reboot" if before.get("boot") != now["boot"] else "since the previous run"
            return (f"pid file {path} is left over: it has not changed {when}, but pid {now['pid']} now belongs "
                    f"to another process ({holder!r}, started later): the process that wrote it is gone")
        if before.get("v") == 2:  # judged by its mtime already, the clock as it read then: a step since moves
            return ""             # the process's start on the wall clock, not the process
    odd = pidfile.stranger(path, now["pid"], now["file"][1] / 1e9)
    return odd.describe(path) if odd else ""


def select(sel: ProcessSelector, me: int, zombies: list[int] | None = None,
           stale: Container[str] = ()) -> list[psutil.Process]:
    """The running processes the selector matches; the pids of matching zombies (exited, not yet reaped by
    their parent: no longer running) go to ``zombies``.  A pid file in ``stale`` names no process of ours."""
    wanted_pid = pid_from_file(sel.pid_file) if sel.pid_file else None
    if sel.pid_file and (wanted_pid is None or sel.pid_file in stale):
        return []
    rx = re.compile(sel.cmdline) if sel.cmdline else None
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.pid == me:
            continue
        if wanted_pid is not None and p.pid != wanted_pid:
            continue
        cmd: list[str] = p.info.get("cmdline") or []
        if sel.name and p.info.get("name") != sel.name and (not cmd or os.path.basename(cmd[0]) != sel.name):
            continue
        if rx is not None and not rx.search(" ".join(cmd)):
            continue
        if p.info.get("status") in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            if zombies is not None:
                zombies.append(p.pid)
            continue
        found.append(p)
    return found


@dataclass
class Sample:
    label: str
    pid: int
    identity: str
    name: str
    rss: int


@dataclass
class Missing:
    """A selector that matched no running process: the pids of matching zombies, and what else explains it."""

    zombies: list[int]
    why: str = ""


def sample_once(selectors: list[ProcessSelector], stale: dict[str, str] | None = None,
                ) -> tuple[list[Sample], dict[str, Missing]]:
    """RSS of every matching running process; and the labels that matched none (with why).  ``stale``: the
    left-over pid files (:func:`stale_pid_file`) and why."""
    me = os.getpid()
    out: list[Sample] = []
    missing: dict[str, Missing] = {}
    stale = stale or {}
    for sel in selectors:
        zombies: list[int] = []
        procs = select(sel, me, zombies, stale)
        got = 0
        for p in procs:
            try:
                with p.oneshot():
                    rss = int(p.memory_info().rss)
                    ident = f"{p.pid}:{p.create_time():.2f}"
                    name = p.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            out.append(Sample(sel.key, p.pid, ident, name, rss))
            got += 1
        if got == 0 and sel.required:
            why = (stale.get(sel.pid_file) or read_pid_file(sel.pid_file)[1]) if sel.pid_file else ""
            missing[sel.key] = Missing(zombies, why)
    return out, missing


@task
class HostProcess(Task[ProcessOptions]):
    """Resident memory of named processes sampled over time: leak and size warnings."""

    name = "host.process"
    summary = "RSS of named processes over time: steady growth → leak warning, above 1 GB → warning"
    target_kinds = ("host",)
    Options = ProcessOptions
    category = "monitoring"
    default_timeout = 600
    metrics_retention: ClassVar[timedelta] = timedelta(days=90)

    @staticmethod
    def _pid_files(ctx: TaskContext, options: ProcessOptions) -> dict[str, str]:
        """The left-over pid files, and why (:func:`stale_pid_file`); remembers the others for the next run.  A
        left-over file's record stays as it was, so it is said again at every run until the file changes."""
        saved = ctx.state.get("pid_files")  # (read back from history: damaged, another version's: anything)
        known: dict[str, Any] = {p: r for p, r in saved.items() if isinstance(r, dict)} if isinstance(saved, dict) \
            else {}
        stale: dict[str, str] = {}
        paths = {sel.pid_file for sel in options.processes if sel.pid_file}
        for path in sorted(paths):
            now = pid_file_record(path)
            why = stale_pid_file(path, known.get(path), now)
            if why:
                stale[path] = why
            elif now is not None:
                known[path] = now
        ctx.state.set("pid_files", {p: r for p, r in known.items() if p in paths})
        return stale

    def run(self, ctx: TaskContext, options: ProcessOptions) -> Result:
        history = usable_samples(ctx.state.get("samples"))
        pid_files = self._pid_files(ctx, options)
        seen: set[str] = set()
        last: dict[str, Sample] = {}
        round_samples: list[Sample] = []
        missing: dict[str, Missing] = {}
        for i in range(options.samples_per_run):
            if i:
                time.sleep(options.sample_interval.total_seconds())
            ts = ctx.now().timestamp()
            samples, missing = sample_once(options.processes, pid_files)
            # what is running now is what the last round found: a process that exited (a restart, a recycled
            # worker) between the rounds of this run is neither counted nor judged
            last, round_samples = {}, samples
            for s in samples:
                # one process may match several selectors (name: node, and the app's pid file): one series, judged
                # once (under the first selector's label) and counted under each label
                if s.identity in last:
                    continue
                entry = history.setdefault(s.identity, {"label": s.label, "pid": s.pid, "name": s.name, "points": []})
                entry["points"] = (entry["points"] + [[ts, s.rss]])[-options.keep_samples:]
                seen.add(s.identity)
                last[s.identity] = s
        # forget processes that are gone: a restarted process starts a new series
        history = {k: v for k, v in history.items() if k in seen}
        ctx.state.set("samples", history)

        findings: list[Finding] = []
        metrics: dict[str, float] = {}
        per_label: dict[str, list[Sample]] = {}
        for s in round_samples:
            per_label.setdefault(s.label, []).append(s)
        for label, group in sorted(per_label.items()):
            metrics[f"proc.{label}.rss_bytes"] = float(sum(s.rss for s in group))
            metrics[f"proc.{label}.max_rss_bytes"] = float(max(s.rss for s in group))
            metrics[f"proc.{label}.count"] = float(len(group))
        for ident, s in sorted(last.items(), key=lambda kv: (kv[1].label, kv[1].pid)):
            subject = f"{s.label} (pid {s.pid})"
            if s.rss > options.rss_warning:
                findings.append(Finding(
                    "host.process_memory", Severity.WARNING, subject,
                    f"{s.name} uses {human_bytes(s.rss)} resident memory (threshold {human_bytes(options.rss_warning)})",
                    "check the process for leaks or oversized caches; cap it (systemd MemoryMax, PM2 max_memory_restart)",
                    value=s.rss, threshold=options.rss_warning,
                ))
            points = history[ident]["points"][-options.leak_samples:]
            if len(points) < options.leak_samples:
                continue
            trend = fit([(float(t), float(v)) for t, v in points])
            if trend is None:
                continue
            per_hour = trend.per_hour()
            metrics[f"proc.{s.label}.{s.pid}.growth_bytes_per_hour"] = round(per_hour, 1)
            if per_hour > options.leak_slope and trend.r2 >= options.leak_min_r2:
                grown = points[-1][1] - points[0][1]
                findings.append(Finding(
                    "host.memory_leak", Severity.WARNING, subject,
                    f"{s.name} grew steadily by {human_bytes(grown)} over {len(points)} samples "
                    f"({human_duration(trend.span_s)}): {human_bytes(per_hour)}/h, r² {trend.r2:.2f} "
                    f"(threshold {human_bytes(options.leak_slope)}/h)",
                    "a memory leak is likely: take a heap snapshot, or schedule restarts until it is fixed",
                    value=round(per_hour), threshold=options.leak_slope,
                    data={"r2": round(trend.r2, 4), "samples": len(points), "rss_now": s.rss,
                          "rss_first": points[0][1]},
                ))
        for label, miss in sorted(missing.items(), key=lambda kv: kv[0]):
            zombies = sorted(miss.zombies)
            why = [f"only a zombie: pid {', '.join(map(str, zombies))} exited and was not reaped by its parent"
                   ] if zombies else []
            why += [miss.why] if miss.why else []
            findings.append(Finding(
                "host.process_missing", Severity.WARNING, label,
                f"no running process matches {label!r}" + (f" ({'; '.join(why)})" if why else ""),
                "start it, or fix the selector (name, cmdline, pid_file) in the job's options"
                + ("; let upkeeper's user read the pid file" if "cannot be read" in miss.why else ""),
                data={"zombies": zombies} if zombies else {},
            ))
        parts = [f"{label} {human_bytes(metrics[f'proc.{label}.rss_bytes'])} ({int(metrics[f'proc.{label}.count'])})"
                 for label in sorted(per_label)]
        summary = "RSS: " + (", ".join(parts) if parts else "no matching process")
        return Result(summary=summary, findings=findings, metrics=metrics)
