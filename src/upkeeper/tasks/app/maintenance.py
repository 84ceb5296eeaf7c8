"""app.maintenance (weekly) and app.cleanup (daily): caches, logs, temp files, releases, commands, health.

``app.cleanup`` runs the rotation, temp and release policies; ``app.maintenance``
adds build caches, configured commands (PM2's log rotation, anything else) and
a health check that restarts the app — only when the check fails, at most once
per cooldown, and recorded.  Each step is independent: one that fails becomes
an ``app.step_failed`` finding and the others still run.  A dry run (the ``dry_run`` option, or
a dry-run request) reports every action without doing it.
"""

from __future__ import annotations

import glob
import math
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from upkeeper.config.targets import AppTarget
from upkeeper.config.types import ByteSize, Duration
from upkeeper.core import pidfile, proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError
from upkeeper.fmt import ago, human_bytes, human_duration
from upkeeper.tasks.app import _housekeeping as hk
from upkeeper.tasks.app._rotate import (
    ReopenFailed,
    compress_file,
    copytruncate,
    reopen_rotate,
    rotated_name,
    writers_of,
)

#: files a log glob may also match that are rotated copies, not live logs (every name _housekeeping.ROTATED_SUFFIX
#: takes for a rotated copy)
#: (logrotate's dateext: any dateformat it takes, the year first — -%Y%m%d, -%Y-%m-%d, .%Y%m%d-%s …, as
#: upkeeper.logs.sources reads them)
NOT_A_LIVE_LOG = re.compile(r"\.(\d+|\d{8}-\d{6}(-\d+)?)(\.(gz|zst|bz2|xz))?$|\.(gz|zst|bz2|xz|partial)$"
                            r"|[-._]\d{4}([-_.]?\d{2})+(\.(gz|zst|bz2|xz))?$")
#: rotated files we made and may compress later (after the app let go of them)
OURS_UNCOMPRESSED = re.compile(r"\.\d{8}-\d{6}(-\d+)?$")
MAX_ARTIFACT_ACTIONS = 200
RUNUSER = "runuser"


class CleanupOptions(TaskOptions):
    rotate: bool = Field(True, description="rotate the target's logs. Source: upkeeper default")
    rotate_size: ByteSize = Field(
        default="10MB", validate_default=True, description="rotate a log once it is this big. Source: pm2-logrotate max_size (10M)"
    )
    rotate_age: Duration = Field(
        default="1d", validate_default=True,
        description="rotate a log this long after its previous rotation. Source: pm2-logrotate rotateInterval (daily)",
    )
    rotate_method: Literal["auto", "reopen", "copytruncate"] = Field(
        "auto", description="auto: reopen when the target has reopen_signal or reopen_command, else copytruncate. "
        "Source: upkeeper default"
    )
    copytruncate_freeze: bool = Field(
        True, description="pause the writing processes (SIGSTOP/SIGCONT) for the final copy and truncate, so no line "
        "is lost; false: logrotate's copytruncate, which may lose the lines written in that instant. "
        "Source: upkeeper default",
    )
    compress: bool = Field(True, description="gzip rotated logs. Source: logrotate compress")
    keep_rotated: int = Field(30, ge=0, description="rotated copies kept per log. Source: pm2-logrotate retain (30)")
    log_max_age: Duration = Field(
        default="30d", validate_default=True,
        description="remove rotated logs older than this. Source: the maintenance procedures",
    )
    reopen_wait: Duration = Field(
        default="10s", validate_default=True,
        description="how long to wait for the app to let go of a renamed log before compressing it. "
                "Source: upkeeper default",
    )
    temp_max_age: Duration = Field(
        default="1d", validate_default=True,
        description="remove temp files not modified or accessed for this long. Source: upkeeper default",
    )
    keep_releases: int = Field(5, ge=1, description="releases kept (the live one, and any a running process uses, always). Source: the maintenance procedures")
    dry_run: bool = Field(False, description="report every action, change nothing. Source: upkeeper default")


class MaintenanceOptions(CleanupOptions):
    cache_max_age: Duration = Field(
        default="7d", validate_default=True,
        description="remove build-cache files (e.g. .next/cache) not modified for this long. Source: upkeeper default",
    )
    commands: list[list[str]] = Field(
        default_factory=list,
        description="commands run in the app directory as the app's user, e.g. [[pm2, flush]]; argv lists, no shell. "
                "Source: upkeeper (not set by default)",
    )
    @field_validator("commands")
    @classmethod
    def _commands(cls, v: list[list[str]]) -> list[list[str]]:
        for argv in v:
            if not argv or not argv[0].strip():
                raise ValueError("each command is a non-empty list: program first, then its arguments")
        return v

    command_timeout: Duration = Field(default="10m", validate_default=True, description="limit for each command. "
            "Source: upkeeper default")
    health_check: bool = Field(True, description="check the target's health_url; restart the app only if it fails. "
            "Source: upkeeper default")
    health_timeout: Duration = Field(default="10s", validate_default=True, description="health check timeout. "
            "Source: upkeeper default")
    health_expect_status: list[int] = Field(default_factory=list, description="healthy HTTP statuses (default: any 2xx). "
            "Source: upkeeper (not set by default)")
    restart_cooldown: Duration = Field(
        default="30m", validate_default=True,
        description="never restart more often than this; a failing check inside it is reported, not restarted. "
        "Source: upkeeper default",
    )
    restart_wait: Duration = Field(
        default="60s", validate_default=True, description="how long to wait for the app to become healthy after a restart. "
                "Source: upkeeper default"
    )


@dataclass
class Env:
    ctx: TaskContext
    target: AppTarget
    opts: CleanupOptions
    acts: hk.Actions
    now: float
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def dry(self) -> bool:
        return self.acts.dry_run

    def finding(self, check: str, sev: Severity, subject: str, message: str, remediation: str, **kw: Any) -> None:
        value, threshold = kw.pop("value", None), kw.pop("threshold", None)
        self.findings.append(Finding(check, sev, subject, message, remediation, value=value, threshold=threshold, data=kw))



def _number(v: Any) -> bool:
    """A finite number (a time, in the state read back from history)?"""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

def as_app_user(argv: list[str], user: str | None, euid: int | None = None) -> list[str]:
    """Run as the app's user when one is set and upkeeper runs as root; as upkeeper's own user when that is the
    app's.  ProcessError when it is another user and upkeeper is not root: the command (``pm2 flush``, a cache
    clear) would run as the wrong user — against another PM2, files it cannot touch — and look fine."""
    euid = os.geteuid() if euid is None else euid
    if not user:
        return list(argv)
    if euid == 0:
        return [RUNUSER, "-u", user, "--", *argv]
    import pwd

    try:
        me = pwd.getpwuid(euid).pw_name
    except KeyError:
        me = str(euid)
    if user not in (me, str(euid)):
        raise ProcessError(argv[0], f"not run: it must run as the app's user {user}, and upkeeper runs as {me}, "
                                    "not root (it cannot switch users)",
                           hint=f"run upkeeper as root or as {user}, or remove the target's user")
    return list(argv)


# -- logs -------------------------------------------------------------------------------------------

def live_logs_and_links(target: AppTarget) -> tuple[list[Path], list[Path]]:
    """The live logs the globs name, and the symlinks they name to a log that is not one of those (not rotated:
    renaming or truncating a link is not rotating its file)."""
    seen: dict[str, Path] = {}
    links: list[Path] = []
    for pattern in target.logs:
        for name in sorted(glob.glob(str(target.path(pattern)))):
            p = Path(name)
            if NOT_A_LIVE_LOG.search(p.name):
                continue
            if p.is_symlink():
                if p.is_file():
                    links.append(p)
            elif p.is_file():
                seen.setdefault(str(p), p)
    real = {os.path.realpath(p) for p in seen.values()}
    return list(seen.values()), [p for p in links if os.path.realpath(p) not in real]


def pid_from_file(target: AppTarget) -> int:
    """The running process ``pid_file`` names (relative to root); ValueError saying why when there is none, or
    when that process cannot be the one that wrote the file (:func:`upkeeper.core.pidfile.stranger`: it
    started after the file was last written, or is a kernel thread -- the app died, its number went to another
    program, which reopen_signal would kill when no process has the logs open to tell them apart)."""
    assert target.pid_file
    path = target.path(target.pid_file)
    pid, why = pidfile.read_pid_file(str(path))
    if pid is None:  # (1 is the app itself when it is the init of its container)
        raise ValueError(why)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:  # the file went between the read and the stat
        raise ValueError(f"cannot read pid_file {path}: {exc.strerror or exc}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ValueError(f"pid_file {path} names process {pid}, which is not running (a stale pid file)") from None
    except PermissionError:
        pass  # it exists; whether it may be signalled is for the reopen to tell
    odd = pidfile.stranger(str(path), pid, mtime)
    if odd is not None:
        raise ValueError(f"{odd.describe(str(path))}. Not signalled")
    return pid


def _ancestors(pid: int) -> set[int]:
    """``pid`` and its parents, up to init."""
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        if pid == 1:
            break
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return seen


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _check_signal_target(pid: int, logs: list[Path], target: AppTarget) -> None:
    """ValueError when processes write the logs and ``pid`` is neither one of them nor a parent of one: a pid file
    left by an app that died, its number since reused by another program, which reopen_signal (USR1's default
    action: terminate) would kill."""
    writers = {w for log in logs for w in writers_of(log)}
    if not writers or any(pid in _ancestors(w) for w in writers):
        return
    name = _comm(pid)
    raise ValueError(f"pid_file {target.path(target.pid_file or '')} names process {pid} ({name}), which neither "
                     f"writes the logs nor is a parent of a process that does ({', '.join(map(str, sorted(writers)))}):"
                     " a stale pid file whose number was reused? Not signalled")


def signal_disposition(pid: int, sig: signal.Signals) -> str:
    """What process ``pid`` does with ``sig``: "caught" (it has a handler), "ignored" (SIG_IGN: ``nohup`` sets it
    for HUP) or "default" (USR1, USR2 and HUP then terminate it), from ``SigCgt``/``SigIgn`` in /proc/PID/status;
    "unknown" when that cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        bit = 1 << (int(sig) - 1)
        if int(fields["SigCgt"].strip(), 16) & bit:
            return "caught"
        return "ignored" if int(fields["SigIgn"].strip(), 16) & bit else "default"
    except (OSError, KeyError, ValueError):
        return "unknown"


def _reopener(env: Env, pid: int | None) -> Callable[[list[int]], None]:
    t = env.target

    def reopen(writers: list[int]) -> None:
        if t.reopen_command:
            proc.run(as_app_user(t.reopen_command, t.user), cwd=t.root, timeout=60)
        if t.reopen_signal:
            sig = signal.Signals[f"SIG{t.reopen_signal}"]
            pids = [pid] if pid is not None else list(writers)
            # a process with no handler for it dies of it (a `tee` or a shell writing the log beside the app, an
            # app that never installed one): none is signalled then, and the rotation is undone
            how = {p: signal_disposition(p, sig) for p in pids}
            doomed = [p for p in pids if how[p] == "default"]
            deaf = [p for p in pids if how[p] == "ignored"]
            if doomed or deaf:
                why = [f"{', '.join(f'{_comm(p)} (pid {p})' for p in doomed)} would be killed by {sig.name}: no "
                       "handler for it"] if doomed else []
                why += [f"{', '.join(f'{_comm(p)} (pid {p})' for p in deaf)} ignores {sig.name} (started with "
                        "nohup?): it would go on writing to the renamed log"] if deaf else []
                raise ValueError("; ".join(why) + (
                    "" if pid is not None else " (without pid_file every process writing the log gets the signal)")
                    + "; set pid_file to the app's process, use reopen_command, or rotate_method: copytruncate")
            for pid_ in pids:
                try:
                    os.kill(pid_, sig)
                except ProcessLookupError:
                    continue

    return reopen


def step_rotate(env: Env) -> None:
    o, t = env.opts, env.target
    if not o.rotate:
        return
    method = o.rotate_method
    can_reopen = bool(t.reopen_signal or t.reopen_command)
    if method == "auto":
        method = "reopen" if can_reopen else "copytruncate"
    if method == "reopen" and not can_reopen:
        env.finding("app.rotate_failed", Severity.WARNING, t.root,
                    "rotate_method is 'reopen' but the target has neither reopen_signal nor reopen_command",
                    "set reopen_signal (and pid_file) or reopen_command on the target, or use copytruncate")
        return
    logs, links = live_logs_and_links(t)
    for link in links:
        env.finding("app.rotate_note", Severity.WARNING, str(link),
                    f"{link.name} is a symlink (to {os.path.realpath(link)}): not rotated, nor pruned",
                    "list the file it points to in the target's logs")
    to_rotate = logs
    signal_pid: int | None = None
    if method == "reopen" and t.reopen_signal and t.pid_file and not env.dry:
        # before any rename: a log renamed for an app that is never told keeps being written under the new name
        try:
            signal_pid = pid_from_file(t)
            _check_signal_target(signal_pid, logs, t)
        except ValueError as exc:
            env.finding("app.rotate_failed", Severity.WARNING, str(t.path(t.pid_file)), f"no log rotated: {exc}",
                        "point pid_file at the app's pid file (relative to root, or absolute)")
            to_rotate = []
    saved_at = env.ctx.state.get("rotated_at")  # (read back from history: damaged, another version's: anything)
    rotated_at: dict[str, float] = {k: v for k, v in saved_at.items() if _number(v)} if isinstance(saved_at, dict) \
        else {}
    rotated = 0
    rotated_bytes = 0
    for log in to_rotate:
        try:
            size = log.stat().st_size
        except OSError:
            continue
        last = rotated_at.get(str(log))
        if last is None:
            rotated_at[str(log)] = env.now  # first seen: the age clock starts now (logrotate's state file)
        why = ("size" if size >= o.rotate_size
               else "age" if last is not None and env.now - last >= o.rotate_age.total_seconds() else None)
        if size == 0 or why is None:
            continue
        dest = rotated_name(log, datetime.fromtimestamp(env.now, UTC))
        if env.dry:
            env.acts.record("rotate", log, method=method, bytes=size, reason=why)
            rotated += 1
            rotated_bytes += size
            continue
        try:
            paused_ms = 0.0
            if method == "copytruncate":
                final, n, notes, paused_ms = copytruncate(log, dest, compress=o.compress, freeze=o.copytruncate_freeze)
            else:
                final, n, notes = reopen_rotate(log, dest, reopen=_reopener(env, signal_pid), compress=o.compress,
                                               wait_s=o.reopen_wait.total_seconds())
        except ReopenFailed as exc:
            env.finding("app.rotate_failed", Severity.WARNING, str(log), f"{log.name}: {exc}",
                        "check the target's reopen_command / reopen_signal and pid_file")
            continue
        except (OSError, ProcessError) as exc:
            msg = exc.message if isinstance(exc, ProcessError) else (exc.strerror or str(exc))
            env.finding("app.rotate_failed", Severity.WARNING, str(log), f"could not rotate {log.name}: {msg}",
                        "check permissions on the log directory and the reopen settings of the target")
            continue
        rotated_at[str(log)] = env.now
        env.acts.record("rotate", log, method=method, bytes=n, reason=why, to=str(final),
                        **({"writers_paused_ms": round(paused_ms, 3)} if paused_ms else {}))
        rotated += 1
        rotated_bytes += n
        for note in notes:
            env.finding("app.rotate_note", Severity.WARNING if note.warning else Severity.INFO, str(log), note.text,
                        note.remedy)
    if not env.dry:  # a dry run changes nothing, not even when the age clock of a new log starts
        env.ctx.state.set("rotated_at", {k: v for k, v in rotated_at.items() if Path(k).exists()})
    # compress what an earlier run had to leave, then prune by count and age
    for log in logs:
        for sib in hk.rotated_siblings(log):
            if o.compress and OURS_UNCOMPRESSED.search(sib.name) and not env.dry and not writers_of(sib):
                try:
                    size = sib.stat().st_size
                    compress_file(sib)
                except OSError as exc:  # a full disk: the pruning below is what frees space, so it still runs
                    env.finding("app.rotate_note", Severity.WARNING, str(sib),
                                f"could not compress {sib.name}: {exc.strerror or exc}; it stays uncompressed",
                                "free space in the log directory; a later run compresses it")
                    continue
                env.acts.record("compress", sib, bytes=size, to=f"{sib}.gz")
        held = hk.prune_rotated(log, o.keep_rotated, o.log_max_age.total_seconds(), env.now, env.acts, writers_of)
        for copy, pid in held.items():
            env.finding("app.rotate_note", Severity.WARNING, copy,
                        f"{Path(copy).name} is past keep_rotated/log_max_age but kept: process {pid} still writes to "
                        "it (the app has not reopened its log)",
                        "make the app reopen its logs (reopen_signal, reopen_command) or use copytruncate")
    hk.stale_partials(logs, env.now, env.acts)
    env.metrics.update({"rotated_logs": float(rotated), "rotated_bytes": float(rotated_bytes), "logs": float(len(logs))})
    verb = "would rotate" if env.dry else "rotated"
    env.notes.append(f"{verb} {rotated} of {len(logs)} log(s)" + (f" ({human_bytes(rotated_bytes)})" if rotated else ""))


# -- temp, caches, releases ----------------------------------------------------------------------------

def _prune_dirs(env: Env, dirs: list[str], max_age_s: float, reason: str, use_atime: bool, metric: str) -> None:
    before_n, before_b = env.acts.count("remove"), env.acts.freed
    root = Path(env.target.root)
    for rel in dirs:
        d = env.target.path(rel)
        problem = hk.unsafe_dir(d, root)
        if problem:
            env.finding("app.unsafe_path", Severity.WARNING, str(d), f"not pruned: {problem}",
                        "point the target's caches/temp_dirs at directories inside the app")
            continue
        held = hk.prune_old_files(d, max_age_s, env.now, env.acts, reason, use_atime, hk.InUse.scan())
        if held:
            shown = ", ".join(f"{Path(f).name} (pid {pid})" for f, pid in sorted(held.items())[:5])
            env.notes.append(f"{len(held)} old file(s) in {rel} kept: still in use — held open, or the pid file "
                             f"of a running process ({shown}"
                             + (", …)" if len(held) > 5 else ")"))
    env.metrics[f"{metric}_removed"] = float(env.acts.count("remove") - before_n)
    env.metrics[f"{metric}_freed_bytes"] = float(env.acts.freed - before_b)


def step_temp(env: Env) -> None:
    _prune_dirs(env, env.target.temp_dirs, env.opts.temp_max_age.total_seconds(),
                f"temp file unused for {human_duration(env.opts.temp_max_age)}", True, "temp")


def step_caches(env: Env) -> None:
    assert isinstance(env.opts, MaintenanceOptions)
    _prune_dirs(env, env.target.caches, env.opts.cache_max_age.total_seconds(),
                f"cache file older than {human_duration(env.opts.cache_max_age)}", False, "cache")


def step_releases(env: Env) -> None:
    t = env.target
    if not t.releases_dir:
        return
    releases_dir = t.path(t.releases_dir)
    _live, problem = hk.live_release(releases_dir, t.path(t.current_link))
    if problem and releases_dir.is_dir():
        # without it an old release that is live (a rollback) looks like any other old one
        env.finding("app.release_unknown", Severity.WARNING, str(releases_dir),
                    f"no release pruned: the live release cannot be told ({problem})",
                    "set the target's current_link to the symlink that points to the live release")
        return
    kept, live, busy = hk.prune_releases(t.path(t.releases_dir), t.path(t.current_link), env.opts.keep_releases,
                                         env.acts, hk.InUse.scan())
    env.metrics["releases_kept"] = float(kept)
    in_use = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(busy.items()))
    env.notes.append(f"{kept} release(s) kept" + (f" (live: {live})" if live else "")
                     + (f"; still in use, kept: {in_use}" if busy else ""))


# -- commands and health --------------------------------------------------------------------------------

def step_commands(env: Env) -> None:
    assert isinstance(env.opts, MaintenanceOptions)
    failed = 0
    for argv in env.opts.commands:
        shown = " ".join(argv)
        if env.dry:
            env.acts.record("command", shown, dry_run=True)
            continue
        t0 = time.monotonic()
        try:
            proc.run(as_app_user(argv, env.target.user), cwd=env.target.root,
                     timeout=env.opts.command_timeout.total_seconds())
            env.acts.record("command", shown, seconds=round(time.monotonic() - t0, 3), ok=True)
        except ProcessError as exc:
            failed += 1
            env.acts.record("command", shown, ok=False)
            env.finding("app.command_failed", Severity.WARNING, shown, f"{shown}: {exc.message}",
                        "run the command by hand as the app's user to see why", stderr=(exc.stderr or "")[-2000:])
    env.metrics["commands_failed"] = float(failed)
    if env.opts.commands:
        env.notes.append(f"{len(env.opts.commands) - failed}/{len(env.opts.commands)} command(s) ok")


def health(url: str, opts: MaintenanceOptions) -> tuple[bool, str]:
    ok, what, _redirect = health_redirect(url, opts)
    return ok, what


def health_redirect(url: str, opts: MaintenanceOptions) -> tuple[bool, str, str | None]:
    """(healthy, what it answered, where it redirects when the answer is an unexpected redirect)."""
    import httpx

    try:
        r = httpx.get(url, timeout=opts.health_timeout.total_seconds(), follow_redirects=False)
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__}: {exc})", None
    ok = r.status_code in opts.health_expect_status if opts.health_expect_status else 200 <= r.status_code < 300
    redirect = r.headers.get("location") if not ok and r.is_redirect else None
    return ok, f"HTTP {r.status_code}", redirect


def step_health(env: Env) -> None:
    o, t = env.opts, env.target
    assert isinstance(o, MaintenanceOptions)
    if not o.health_check or not t.health_url:
        return
    ok, what, redirect = health_redirect(t.health_url, o)
    env.metrics["healthy"] = 1.0 if ok else 0.0
    if ok:
        env.notes.append(f"healthy ({what})")
        return
    subject = t.health_url
    if redirect is not None:
        # the app answered: a redirect (http -> https, a trailing slash, a login page) says the URL is wrong, not
        # that the app is down, and restarting it would change nothing
        env.finding("app.health_redirect", Severity.WARNING, subject,
                    f"the health URL answers {what}, a redirect to {redirect}: not a health answer; not restarted",
                    "point health_url at the address it redirects to, or list the status in health_expect_status",
                    value=what, location=redirect)
        return
    if not t.restart_command:
        env.finding("app.unhealthy", Severity.CRITICAL, subject, f"the health check failed: {what}",
                    "set restart_command on the target so upkeeper can restart it, and read the app's log",
                    value=what)
        return
    saved = env.ctx.state.get("restarts")  # (read back from history: a restart without a time is none known)
    restarts: list[dict[str, Any]] = [r for r in saved if isinstance(r, dict) and _number(r.get("at"))] \
        if isinstance(saved, list) else []
    last = restarts[-1]["at"] if restarts else None
    if last is not None and env.now - float(last) < o.restart_cooldown.total_seconds():
        since = datetime.fromtimestamp(float(last)).astimezone()
        env.finding("app.unhealthy", Severity.CRITICAL, subject,
                    f"the health check failed ({what}); not restarting: the last restart was {ago(since)}, "
                    f"inside the {human_duration(o.restart_cooldown)} cooldown",
                    "restarting did not help: read the app's log; fix it by hand",
                    value=what, last_restart=last)
        return
    shown = " ".join(t.restart_command)
    if env.dry:
        env.acts.record("restart", shown, reason=what, dry_run=True)
        env.finding("app.unhealthy", Severity.CRITICAL, subject, f"the health check failed ({what}); would run {shown}",
                    "run without dry_run to restart it", value=what)
        return
    env.ctx.log.warning("health check of %s failed (%s): running %s", subject, what, shown)
    record: dict[str, Any] = {"at": env.now, "reason": what, "command": shown}
    try:
        proc.run(list(t.restart_command), cwd=t.root, timeout=o.restart_wait.total_seconds() + 60)
    except ProcessError as exc:
        record["ok"] = False
        restarts.append(record)
        env.ctx.state.set("restarts", restarts[-20:])
        env.acts.record("restart", shown, reason=what, ok=False)
        env.finding("app.restart_failed", Severity.CRITICAL, subject,
                    f"the health check failed ({what}) and the restart command failed: {exc.message}",
                    "restart the app by hand and fix restart_command", value=what)
        return
    deadline = time.monotonic() + o.restart_wait.total_seconds()
    ok, after = health(t.health_url, o)
    while not ok and time.monotonic() < deadline:
        time.sleep(1.0)
        ok, after = health(t.health_url, o)
    record.update({"ok": ok, "after": after})
    restarts.append(record)
    env.ctx.state.set("restarts", restarts[-20:])
    env.acts.record("restart", shown, reason=what, healthy_after=ok)
    env.metrics["restarted"] = 1.0
    env.metrics["healthy"] = 1.0 if ok else 0.0
    if ok:
        env.finding("app.restarted", Severity.WARNING, subject,
                    f"the health check failed ({what}); restarted with {shown}, healthy again ({after})",
                    "find out why it stopped answering: the app's log around this time", value=what)
        env.notes.append("restarted (health check failed), healthy again")
    else:
        env.finding("app.unhealthy", Severity.CRITICAL, subject,
                    f"the health check failed ({what}); restarted with {shown}, still unhealthy after "
                    f"{human_duration(o.restart_wait)} ({after})",
                    "read the app's log; the restart did not help", value=after)


Step = tuple[str, Callable[[Env], None]]
CLEANUP_STEPS: tuple[Step, ...] = (("rotate", step_rotate), ("temp", step_temp), ("releases", step_releases))
MAINTENANCE_STEPS: tuple[Step, ...] = (
    ("caches", step_caches), ("rotate", step_rotate), ("temp", step_temp), ("releases", step_releases),
    ("commands", step_commands), ("health", step_health),
)


def run_steps(ctx: TaskContext, options: CleanupOptions, steps: tuple[Step, ...]) -> Result:
    target = ctx.require_target()
    assert isinstance(target, AppTarget)
    root = Path(target.root)
    acts = hk.Actions(dry_run=ctx.dry_run or options.dry_run)
    env = Env(ctx=ctx, target=target, opts=options, acts=acts, now=ctx.now().timestamp())
    if not root.is_dir():
        env.finding("app.root_missing", Severity.CRITICAL, str(root), f"the application directory {root} does not exist",
                    "fix the target's root")
        return Result(summary=f"{root} does not exist", findings=env.findings)
    for name, fn in steps:
        try:
            fn(env)
        except Exception as exc:  # one failing step never stops the others
            ctx.log.warning("step %s failed: %s: %s", name, type(exc).__name__, exc)
            env.finding("app.step_failed", Severity.WARNING, f"{root} {name}", f"the {name} step failed: {exc}",
                        "see the run log", step=name)
    for err in acts.errors:
        env.finding("app.remove_failed", Severity.WARNING, err.split(": ", 1)[0].removeprefix("cannot remove "), err,
                    "check the file's permissions and owner")
    env.metrics.update({"removed": float(acts.count("remove")), "freed_bytes": float(acts.freed)})
    parts = ([hk.describe(acts)] if acts.count("remove") or not env.notes else []) + env.notes
    summary = ("dry run: " if acts.dry_run else "") + "; ".join(parts)
    artifacts = [{"kind": "app_actions", "dry_run": acts.dry_run, "actions": acts.done[:MAX_ARTIFACT_ACTIONS],
                  "total": len(acts.done)}] if acts.done else []
    return Result(summary=summary, findings=env.findings, metrics=env.metrics, artifacts=artifacts)


@task
class AppMaintenance(Task[MaintenanceOptions]):
    """Weekly app upkeep: build caches, log rotation and retention, temp files, releases, commands, health."""

    name = "app.maintenance"
    summary = "clear old build caches, rotate/compress/prune logs, temp files, keep 5 releases, commands, health+restart"
    target_kinds = ("app",)
    Options = MaintenanceOptions
    category = "maintenance"
    exclusive = True  # never two rotations of the same logs at once (maintenance and cleanup share a target)
    default_timeout = 1800

    def run(self, ctx: TaskContext, options: MaintenanceOptions) -> Result:
        return run_steps(ctx, options, MAINTENANCE_STEPS)


@task
class AppCleanup(Task[CleanupOptions]):
    """Daily app cleanup: log rotation and retention, temp files and releases only."""

    name = "app.cleanup"
    summary = "rotate/compress/prune logs, remove old temp files, keep the last 5 releases"
    target_kinds = ("app",)
    Options = CleanupOptions
    category = "maintenance"
    exclusive = True
    default_timeout = 900

    def run(self, ctx: TaskContext, options: CleanupOptions) -> Result:
        return run_steps(ctx, options, CLEANUP_STEPS)
