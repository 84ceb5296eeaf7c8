"""security.processes: web, app, database and cache processes must not run as root.

A root *master* whose children run as another user is fine (nginx, php-fpm, apache2
drop privileges that way); a root process that does the work itself is a finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from upkeeper import lazy
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.tasks.security._common import CheckOutput

if TYPE_CHECKING:
    import psutil
else:  # the run's, not the CLI's that validates the job (~10 ms): the worker loads it before the run
    psutil = lazy.module("psutil")

#: process name → role.  Source: the maintenance procedures' process-ownership review
WATCHED = {
    "nginx": "web server", "apache2": "web server", "httpd": "web server", "caddy": "web server",
    "php-fpm": "app", "gunicorn": "app", "uwsgi": "app", "node": "app", "puma": "app", "java": "app",
    "postgres": "database", "postmaster": "database", "mysqld": "database", "mariadbd": "database",
    "redis-server": "cache", "memcached": "cache", "valkey-server": "cache",
}
#: masters that bind as root and drop privileges in their workers
PRIVILEGE_DROPPING = ("nginx", "apache2", "httpd", "php-fpm")


@dataclass
class Proc:
    pid: int
    name: str
    user: str
    ppid: int
    cmdline: str


def _base(name: str) -> str:
    n = name.split("/")[-1]
    for w in WATCHED:
        if n == w or n.startswith(w + ":") or (w == "php-fpm" and n.startswith("php-fpm")):
            return w
    return n


def snapshot() -> list[Proc]:
    out = []
    for p in psutil.process_iter(["pid", "name", "username", "ppid", "cmdline"]):
        info = p.info
        out.append(Proc(info["pid"], info.get("name") or "", info.get("username") or "?", info.get("ppid") or 0,
                        " ".join(info.get("cmdline") or [])[:200]))
    return out


class ProcessesOptions(TaskOptions):
    watch: list[str] = Field(list(WATCHED), description="process names to check. Source: upkeeper default")
    allow_root: list[str] = Field(default_factory=list, description="process names allowed to run as root. "
            "Source: upkeeper (not set by default)")


def evaluate(procs: list[Proc], options: ProcessesOptions) -> CheckOutput:
    out = CheckOutput()
    by_parent: dict[int, list[Proc]] = {}
    for p in procs:
        by_parent.setdefault(p.ppid, []).append(p)
    watched = set(options.watch)
    checked = 0
    for p in procs:
        base = _base(p.name)
        if base not in watched:
            continue
        checked += 1
        if p.user != "root" or base in options.allow_root:
            continue
        children = [c for c in by_parent.get(p.pid, []) if _base(c.name) == base]
        if base in PRIVILEGE_DROPPING and children and all(c.user != "root" for c in children):
            continue  # a master that drops privileges
        parent = next((q for q in procs if q.pid == p.ppid), None)
        if parent is not None and _base(parent.name) == base and parent.user == "root" and base in PRIVILEGE_DROPPING:
            sev = Severity.CRITICAL  # a worker running as root
        else:
            sev = Severity.CRITICAL if WATCHED.get(base) in ("database", "cache", "app") else Severity.WARNING
        out.findings.append(Finding(
            "security.processes.root", sev, f"{base} (pid {p.pid})",
            f"{WATCHED.get(base, 'process')} {base} runs as root: a compromise of it owns the machine",
            f"run {base} as a dedicated unprivileged user (systemd User=, or the service's 'user' setting)",
            value=p.user, threshold="non-root", data={"pid": p.pid, "cmdline": p.cmdline}))
    out.metrics.update({"processes_checked": float(checked), "root_processes": float(len(out.findings))})
    out.summary = f"{checked} watched process(es), {len(out.findings)} running as root"
    return out


#: seconds between the two snapshots a finding must appear in.  nginx forks its workers as root and
#: they drop privileges a moment later, and a master is briefly alone while it starts or reloads:
#: a single snapshot taken during a reload would report a root worker that does not exist a second later
SETTLE_SECONDS = 1.0


def evaluate_settled(take: Callable[[], list[Proc]], options: ProcessesOptions,
                     settle: float = SETTLE_SECONDS) -> CheckOutput:
    """Evaluate two snapshots ``settle`` seconds apart and keep only the findings seen in both (the same
    pid, still root): a process caught between fork and its privilege drop is not a finding."""
    first = evaluate(take(), options)
    if not first.findings:
        return first
    time.sleep(settle)
    second = evaluate(take(), options)
    again = {f.data.get("pid") for f in second.findings}
    out = CheckOutput()
    out.findings = [f for f in first.findings if f.data.get("pid") in again]
    out.metrics.update(first.metrics)
    out.metrics["root_processes"] = float(len(out.findings))
    transient = len(first.findings) - len(out.findings)
    out.summary = (f"{int(first.metrics['processes_checked'])} watched process(es), {len(out.findings)} running as root"
                   + (f" ({transient} seen as root only briefly, e.g. during a reload: not reported)"
                      if transient else ""))
    return out


@task
class SecurityProcesses(Task[ProcessesOptions]):
    """List web, app, database and cache processes and report those running as root, except masters
    that drop privileges to their workers (nginx, apache2, php-fpm).  A process is reported only when two
    snapshots a second apart both show it as root, so a worker caught between fork and its privilege drop
    (a reload) is not a finding."""

    name = "security.processes"
    summary = "web, app, database and cache processes not running as root"
    target_kinds = ("host",)
    Options = ProcessesOptions
    category = "security"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: ProcessesOptions) -> Result:
        out = evaluate_settled(snapshot, options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
