"""host.health: disk and inodes (with time-to-full), memory, swap, OOM kills, CPU, load, services, clock.

Every check is one small function returning findings and metrics; a check that
raises becomes a ``host.check_failed`` finding and the others still run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from upkeeper import lazy
from upkeeper.config.types import Duration, StrictModel
from upkeeper.core import proc
from upkeeper.core.task import (
    CheckOutput,
    Finding,
    Result,
    Severity,
    Task,
    TaskContext,
    TaskOptions,
    run_checks,
    task,
)
from upkeeper.errors import ProcessError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.host._trend import fit
from upkeeper.tasks.host.disk import real_mounts

if TYPE_CHECKING:
    import psutil

    from upkeeper.tasks.host import _clock
    from upkeeper.tasks.host._clock import ClockStatus
else:  # the run's, not the CLI's that validates the job (psutil ~10 ms, ctypes ~4 ms): the worker loads them
    psutil = lazy.module("psutil")  # before the run
    _clock = lazy.module("upkeeper.tasks.host._clock")

SYSTEMCTL_IS_ACTIVE = ("systemctl", "is-active")
#: kernel log lines of an OOM kill, read from the journal since the previous run
JOURNAL_KERNEL = ("journalctl", "-k", "-q", "--no-pager", "-o", "short-iso")
DMESG_ISO = ("dmesg", "--time-format=iso")
#: CPU averages over longer gaps than this (a manual run days later) are replaced by a fresh sample
CPU_MAX_INTERVAL_S = 3600


class ServiceCheck(StrictModel):
    """One service to check: exactly one of systemd, process, tcp, http."""

    name: str | None = Field(None, description="label in findings (default: the unit, process, address or URL). "
            "Source: upkeeper (not set by default)")
    systemd: str | None = Field(None, description="systemd unit that must be active, e.g. nginx.service. "
            "Source: upkeeper (not set by default)")
    process: str | None = Field(None, description="process name (or executable basename) that must be running. "
            "Source: upkeeper (not set by default)")
    tcp: str | None = Field(None, description="host:port that must accept connections, e.g. 127.0.0.1:5432. "
            "Source: upkeeper (not set by default)")
    http: str | None = Field(None, description="URL that must answer with an expected status. "
            "Source: upkeeper (not set by default)")
    expect_status: list[int] = Field(default_factory=list, description="accepted HTTP statuses (default: any 2xx). "
            "Source: upkeeper (not set by default)")
    max_latency: Duration = Field(
        default="2s", validate_default=True,
        description="warn when a TCP connect or HTTP answer takes longer. Source: upkeeper default",
    )
    timeout: Duration = Field(default="10s", validate_default=True, description="give up after this long. "
            "Source: upkeeper default")
    verify_tls: bool = Field(True, description="check the certificate of https URLs. "
            "Source: upkeeper default")

    @model_validator(mode="after")
    def _exactly_one(self) -> ServiceCheck:
        given = [k for k in ("systemd", "process", "tcp", "http") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of systemd, process, tcp, http"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.tcp is not None:
            split_hostport(self.tcp)
        if self.http is not None and urlsplit(self.http).scheme not in ("http", "https"):
            raise ValueError(f"http: {self.http!r} is not an http:// or https:// URL")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("systemd", "process", "tcp", "http") if getattr(self, k))

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{getattr(self, self.kind)}"


def split_hostport(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p6>\d+)|(?P<h>[^:\s]+):(?P<p>\d+)", text.strip())
    if not m:
        raise ValueError(f"tcp: {text!r} is not host:port (use [addr]:port for IPv6)")
    host = m.group("h6") or m.group("h")
    port = int(m.group("p6") or m.group("p"))
    if not 1 <= port <= 65535:
        raise ValueError(f"tcp: port {port} is out of range")
    return host, port


class HealthOptions(TaskOptions):
    mounts: list[str] | None = Field(None, description="mount points to check (default: every real filesystem). "
            "Source: upkeeper (not set by default)")
    disk_warning: float = Field(80, gt=0, le=100, description="warn at this % of space used. Source: the maintenance procedures")
    disk_critical: float = Field(
        98, gt=0, le=100, description="critical above this % used. Source: Netdata disk_space_usage (critical 98 %)"
    )
    disk_critical_recovery: float = Field(
        90, gt=0, le=100,
        description="once critical, stay critical until usage falls below this %. Source: Netdata disk_space_usage "
        "hysteresis (90 %)",
    )
    inode_warning: float = Field(80, gt=0, le=100, description="warn at this % of inodes used. Source: the maintenance procedures")
    inode_critical: float = Field(98, gt=0, le=100, description="critical above this % of inodes. Source: Netdata disk_inode_usage")
    fill_warning: Duration = Field(
        default="8h", validate_default=True,
        description="warn when a disk is projected full within this time. Source: Netdata out_of_disk_space_time",
    )
    fill_critical: Duration = Field(
        default="2h", validate_default=True,
        description="critical when projected full within this time. Source: Netdata out_of_disk_space_time",
    )
    fill_window: Duration = Field(
        default="6h", validate_default=True, description="history used to project the fill rate (earlier samples). "
                "Source: upkeeper default"
    )
    fill_min_span: Duration = Field(
        default="30m", validate_default=True, description="project only from samples spanning at least this long. "
                "Source: upkeeper default"
    )
    memory_available_warning: float = Field(
        10, ge=0, le=100, description="warn when available memory falls below this %. Source: Netdata ram_available"
    )
    swap_warning: float = Field(85, gt=0, le=100, description="warn at this % of swap used. Source: the maintenance procedures")
    swap_critical: float = Field(98, gt=0, le=100, description="critical above this % of swap used. Source: Netdata used_swap")
    cpu_warning: float = Field(90, gt=0, le=100, description="warn when CPU use averages above this %. Source: the maintenance procedures")
    cpu_critical: float = Field(95, gt=0, le=100, description="critical above this %. Source: Netdata 10min_cpu_usage (95 %)")
    cpu_sample: Duration = Field(
        default="1s", validate_default=True,
        description="CPU sampling time when there is no previous run to average from. "
                "Source: upkeeper default",
    )
    cpu_min_window: Duration = Field(
        default="1m", validate_default=True,
        description="judge CPU use only when averaged over at least this long (a short sample is recorded, not "
        "judged). Source: Netdata 10min_cpu_usage averages over 10 minutes",
    )
    load_per_core_warning: float = Field(
        2.0, gt=0, description="warn when the 15-minute load per CPU exceeds this. Source: Netdata load_average_15 (200 %)"
    )
    services: list[ServiceCheck] = Field(default_factory=list, description="systemd units, processes, ports and URLs that must be up. "
            "Source: upkeeper (not set by default)")
    clock: bool = Field(True, description="check that the clock is synchronised (timedatectl, chrony, or the kernel's NTP state). "
            "Source: upkeeper default")
    clock_max_offset_ms: float = Field(
        128, gt=0, description="warn when the measured clock offset exceeds this (ms). Source: ntpd's step threshold (128 ms)"
    )

    @model_validator(mode="after")
    def _order(self) -> HealthOptions:
        if self.disk_critical < self.disk_warning:
            raise ValueError("disk_critical must not be below disk_warning")
        if self.disk_critical_recovery > self.disk_critical:
            raise ValueError("disk_critical_recovery must not exceed disk_critical")
        if self.fill_critical > self.fill_warning:
            raise ValueError("fill_critical must not exceed fill_warning")
        return self




@dataclass
class Env:
    ctx: TaskContext
    opts: HealthOptions
    host: str
    now: datetime


def _f(check: str, sev: Severity, subject: str, message: str, remediation: str,
       value: float | str | None = None, threshold: float | str | None = None, **data: Any) -> Finding:
    return Finding(check, sev, subject, message, remediation, value=value, threshold=threshold, data=data)


# -- disk ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskUsage:
    mount: str
    total: int
    used: int
    avail: int
    pct: float
    inodes_pct: float | None


def disk_usage(mount: str) -> DiskUsage:
    st = os.statvfs(mount)
    total = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    pct = 100.0 * used / (used + avail) if used + avail else 0.0  # like df and Netdata: reserved blocks excluded
    ipct = 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else None
    return DiskUsage(mount, total, used, avail, pct, ipct)


DISK_REMEDIATION = ("free space: old logs, backups and build caches (upkeeper app.maintenance rotates and prunes), "
                    "or grow the filesystem")


def check_disks(env: Env) -> CheckOutput:
    o = env.opts
    out = CheckOutput()
    saved = env.ctx.state.get("disk_critical")  # (read back from history: damaged, another version's: anything)
    was_critical = {m for m in saved if isinstance(m, str)} if isinstance(saved, list) else set()
    now_critical: set[str] = set()
    for mount in o.mounts or real_mounts():
        try:
            u = disk_usage(mount)
        except OSError as exc:
            out.findings.append(_f("host.disk_unreadable", Severity.WARNING, mount, f"cannot stat {mount}: {exc.strerror}",
                                   "fix the job's 'mounts' option"))
            continue
        key = f"disk.{mount}"
        out.metrics.update({f"{key}.used_pct": round(u.pct, 3), f"{key}.used_bytes": float(u.used),
                            f"{key}.avail_bytes": float(u.avail), f"{key}.total_bytes": float(u.total)})
        if u.inodes_pct is not None:
            out.metrics[f"{key}.inodes_used_pct"] = round(u.inodes_pct, 3)
        out.notes.append(f"{mount} {u.pct:.0f}%")
        crit_at = o.disk_critical_recovery if mount in was_critical else o.disk_critical
        if u.pct > crit_at:
            now_critical.add(mount)
            out.findings.append(_f(
                "host.disk_space", Severity.CRITICAL, mount,
                f"{u.pct:.1f}% used, {human_bytes(u.avail)} free of {human_bytes(u.total)} (critical above {crit_at:g}%)",
                DISK_REMEDIATION, value=round(u.pct, 2), threshold=crit_at, avail_bytes=u.avail,
            ))
        elif u.pct >= o.disk_warning:
            out.findings.append(_f(
                "host.disk_space", Severity.WARNING, mount,
                f"{u.pct:.1f}% used, {human_bytes(u.avail)} free of {human_bytes(u.total)} (warning at {o.disk_warning:g}%)",
                DISK_REMEDIATION, value=round(u.pct, 2), threshold=o.disk_warning, avail_bytes=u.avail,
            ))
        if u.inodes_pct is not None and u.inodes_pct >= o.inode_warning:
            sev = Severity.CRITICAL if u.inodes_pct > o.inode_critical else Severity.WARNING
            thr = o.inode_critical if sev is Severity.CRITICAL else o.inode_warning
            out.findings.append(_f(
                "host.disk_inodes", sev, mount, f"{u.inodes_pct:.1f}% of inodes used (threshold {thr:g}%)",
                "delete many small files (sessions, caches, mail queues) or recreate the filesystem with more inodes",
                value=round(u.inodes_pct, 2), threshold=thr,
            ))
        projected = project_full(env, mount, u)
        if projected is not None:
            out.metrics[f"{key}.hours_to_full"] = round(projected / 3600, 3)
            fill_sev = (Severity.CRITICAL if projected < o.fill_critical.total_seconds()
                        else Severity.WARNING if projected < o.fill_warning.total_seconds() else None)
            if fill_sev is not None:
                limit = o.fill_critical if fill_sev is Severity.CRITICAL else o.fill_warning
                out.findings.append(_f(
                    "host.disk_fill", fill_sev, mount,
                    f"at the current fill rate {mount} is full in {human_duration(projected)} "
                    f"({human_bytes(u.avail)} free; threshold {human_duration(limit)})",
                    "find what is growing (du -xh --max-depth=2 on the mount, logs, dumps) and stop or move it",
                    value=round(projected / 3600, 2), threshold=limit.total_seconds() / 3600,
                ))
    env.ctx.state.set("disk_critical", sorted(now_critical))
    return out


def project_full(env: Env, mount: str, u: DiskUsage) -> float | None:
    """Seconds until the mount is full, from the used-bytes history and this sample; None if not filling."""
    o = env.opts
    since = env.now - o.fill_window
    series = env.ctx.metrics.series(f"disk.{mount}.used_bytes", since=since)
    points = [(ts.timestamp(), v) for ts, v in series if ts < env.now]
    points.append((env.now.timestamp(), float(u.used)))
    trend = fit(points)
    if trend is None or trend.span_s < o.fill_min_span.total_seconds() or trend.slope <= 0:
        return None
    return u.avail / trend.slope


# -- memory ------------------------------------------------------------------------------------

def check_memory(env: Env) -> CheckOutput:
    o = env.opts
    vm = psutil.virtual_memory()
    avail_pct = 100.0 * vm.available / vm.total if vm.total else 100.0
    out = CheckOutput(metrics={"mem.available_pct": round(avail_pct, 3), "mem.available_bytes": float(vm.available),
                       "mem.total_bytes": float(vm.total)},
              notes=[f"memory {avail_pct:.0f}% available"])
    if avail_pct < o.memory_available_warning:
        out.findings.append(_f(
            "host.memory_available", Severity.WARNING, env.host,
            f"only {human_bytes(vm.available)} ({avail_pct:.1f}%) of {human_bytes(vm.total)} memory available",
            "find the biggest processes (ps aux --sort=-rss | head) and check them for leaks (upkeeper host.process)",
            value=round(avail_pct, 2), threshold=o.memory_available_warning,
        ))
    sw = psutil.swap_memory()
    if sw.total:
        out.metrics["swap.used_pct"] = round(sw.percent, 3)
        if sw.percent >= o.swap_warning:
            sev = Severity.CRITICAL if sw.percent > o.swap_critical else Severity.WARNING
            thr = o.swap_critical if sev is Severity.CRITICAL else o.swap_warning
            out.findings.append(_f(
                "host.swap", sev, env.host,
                f"swap {sw.percent:.1f}% used ({human_bytes(sw.used)} of {human_bytes(sw.total)})",
                "the machine is short of memory: find what grew, add memory, or lower service memory limits",
                value=round(sw.percent, 2), threshold=thr,
            ))
    return out


def read_oom_kills() -> int | None:
    try:
        with open("/proc/vmstat") as fh:
            for line in fh:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


KILLED = re.compile(r"Killed process (?P<pid>\d+) \((?P<name>[^)]*)\)")


def _victims(lines: list[str]) -> list[str]:
    out = []
    for ln in lines:
        m = KILLED.search(ln)
        if m:
            where = ", memory cgroup limit" if "Memory cgroup out of memory" in ln else ""
            out.append(f"{m.group('name')} (pid {m.group('pid')}{where})")
    return out


def oom_details(since: datetime) -> list[str] | None:
    """Victims of OOM kills since ``since`` from the kernel log (journal, else dmesg); None if unreadable."""
    readable = False
    try:
        res = proc.run([*JOURNAL_KERNEL, "--since", f"@{int(since.timestamp())}"], timeout=10, check=False)
        if res.returncode == 0:
            readable = True
            victims = _victims(res.text.splitlines())
            if victims:
                return victims[-10:]
    except ProcessError:
        pass
    try:
        res = proc.run(list(DMESG_ISO), timeout=10, check=False)
    except ProcessError:
        return [] if readable else None
    if res.returncode != 0:
        return [] if readable else None
    lines = []
    for ln in res.text.splitlines():
        stamp = ln.split(" ", 1)[0]
        try:
            ts = datetime.fromisoformat(stamp.replace(",", "."))
        except ValueError:
            continue
        if ts.timestamp() >= since.timestamp() - 2:
            lines.append(ln)
    return _victims(lines)[-10:]


def check_oom(env: Env) -> CheckOutput:
    count = read_oom_kills()
    out = CheckOutput()
    if count is None:
        return out
    prev = env.ctx.state.get("oom")
    env.ctx.state.set("oom", {"count": count, "boot": psutil.boot_time(), "at": env.now.timestamp()})
    out.metrics["oom_kills_total"] = float(count)
    if not isinstance(prev, dict) or prev.get("boot") != psutil.boot_time():
        return out  # first run (or after a reboot): a baseline, not news
    try:
        before = int(prev.get("count", 0))
        since = datetime.fromtimestamp(float(prev.get("at", env.now.timestamp())), tz=env.now.tzinfo)
    except (TypeError, ValueError, OverflowError, OSError):
        # edited by hand, a bad restore: no baseline to compare with, so this run is the new one (not a failure)
        env.ctx.log.warning("host.health: the saved OOM-kill baseline is damaged (%s); starting over from the "
                            "%d kill(s) counted now", repr(prev)[:200], count)
        return out
    delta = count - before
    out.metrics["oom_kills"] = float(max(0, delta))
    if delta > 0:
        victims = oom_details(since)
        if victims:
            detail = ": " + ", ".join(victims[-5:])
        elif victims is None:
            detail = " (the kernel log is not readable here, so the victims are unknown)"
        else:
            detail = " (the kernel log names no victim)"
        out.findings.append(_f(
            "host.oom_kill", Severity.WARNING, env.host,
            f"the kernel's OOM killer ended {delta} process(es) since the last check{detail}",
            "find the process that outgrew memory (journalctl -k | grep -i 'killed process'), cap it or add memory",
            value=delta, threshold=0, victims=victims or [],
        ))
    return out


# -- CPU ------------------------------------------------------------------------------------------

def _busy_total(t: Any) -> tuple[float, float]:
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    # guest time is already counted in user on Linux
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - idle, total


def _used_pct(busy_delta: float, total_delta: float) -> float:
    """CPU use in % between two samples, within 0–100: the idle and iowait counters of /proc/stat can step
    backwards (NOHZ accounting, more so in VMs), which made a fully busy machine read 100.00001 % — above a
    threshold of 100, which nothing can cross."""
    if total_delta <= 0:
        return 0.0
    return min(100.0, max(0.0, 100.0 * busy_delta / total_delta))


def check_cpu(env: Env) -> CheckOutput:
    o = env.opts
    prev = env.ctx.state.get("cpu")
    now_t = psutil.cpu_times()
    busy, total = _busy_total(now_t)
    pct: float | None = None
    window_s = 0.0
    if isinstance(prev, dict) and prev.get("boot") == psutil.boot_time():
        dt_total = total - float(prev["total"])
        elapsed = env.now.timestamp() - float(prev.get("at", 0))
        if dt_total > 0 and 0 < elapsed <= CPU_MAX_INTERVAL_S:
            pct = _used_pct(busy - float(prev["busy"]), dt_total)
            window_s = elapsed
    if pct is None:
        time.sleep(o.cpu_sample.total_seconds())
        busy2, total2 = _busy_total(psutil.cpu_times())
        pct = _used_pct(busy2 - busy, total2 - total)
        window_s = o.cpu_sample.total_seconds()
        busy, total = busy2, total2
    env.ctx.state.set("cpu", {"busy": busy, "total": total, "at": env.now.timestamp(), "boot": psutil.boot_time()})
    cores = psutil.cpu_count() or 1
    load1, load5, load15 = os.getloadavg()
    out = CheckOutput(metrics={"cpu.used_pct": round(pct, 3), "load.1m": load1, "load.5m": load5, "load.15m": load15,
                       "load.15m_per_core": round(load15 / cores, 3), "cpu.cores": float(cores)},
              notes=[f"CPU {pct:.0f}% over {human_duration(window_s)}", f"load {load15:.2f}/{cores} cores"])
    judged = window_s >= o.cpu_min_window.total_seconds()
    if not judged:
        out.notes[0] += " (not judged: shorter than cpu_min_window)"
    if judged and pct > o.cpu_warning:
        sev = Severity.CRITICAL if pct > o.cpu_critical else Severity.WARNING
        thr = o.cpu_critical if sev is Severity.CRITICAL else o.cpu_warning
        top = top_cpu_processes()
        out.findings.append(_f(
            "host.cpu", sev, env.host, f"CPU {pct:.0f}% busy over {human_duration(window_s)} (threshold {thr:g}%); top: {top}",
            "find what is busy (top -o %CPU); a runaway process, a missing index or a traffic spike",
            value=round(pct, 2), threshold=thr,
        ))
    if load15 / cores > o.load_per_core_warning:
        out.findings.append(_f(
            "host.load", Severity.WARNING, env.host,
            f"15-minute load {load15:.2f} on {cores} CPU(s) = {load15 / cores:.2f} per core "
            f"(threshold {o.load_per_core_warning:g})",
            "processes are waiting for CPU or disk: check top, iostat and blocked (D state) processes",
            value=round(load15 / cores, 3), threshold=o.load_per_core_warning,
        ))
    return out


def top_cpu_processes(n: int = 3, sample_s: float = 0.3) -> str:
    """The busiest processes right now (psutil needs two readings to compute a CPU %)."""
    procs = list(psutil.process_iter(["name"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            busy.append((p.cpu_percent(None), p.info.get("name") or "?", p.pid))
    busy.sort(reverse=True)
    return ", ".join(f"{name} ({pid}, {pct:.0f}%)" for pct, name, pid in busy[:n]) or "-"


# -- services ----------------------------------------------------------------------------------

def check_services(env: Env) -> CheckOutput:
    out = CheckOutput()
    up = 0
    for svc in env.opts.services:
        try:
            finding, metric = SERVICE_PROBES[svc.kind](svc)
        except Exception as exc:  # one broken probe never stops the others
            finding = _f("host.service_unknown", Severity.WARNING, svc.label, f"could not check {svc.label}: {exc}",
                         "see the run log", value="unknown")
            metric = None
        if metric is not None:
            out.metrics[f"service.{svc.label}.ms"] = round(metric, 3)
        if finding is not None:
            out.findings.append(finding)
        if finding is None or finding.check == "host.service_slow":  # slow, but up: it answered
            up += 1
            out.metrics[f"service.{svc.label}.up"] = 1.0
        elif finding.check == "host.service_down":
            out.metrics[f"service.{svc.label}.up"] = 0.0
    if env.opts.services:
        out.notes.append(f"{up}/{len(env.opts.services)} services up")
    return out


ProbeResult = tuple[Finding | None, float | None]


def probe_systemd(svc: ServiceCheck) -> ProbeResult:
    assert svc.systemd is not None
    try:
        res = proc.run([*SYSTEMCTL_IS_ACTIVE, svc.systemd], timeout=svc.timeout.total_seconds(), check=False)
    except ProcessError as exc:
        return _f("host.service_unknown", Severity.WARNING, svc.label, f"cannot ask systemd about {svc.systemd}: {exc.message}",
                  "install systemd's systemctl, or check this service by process, tcp or http instead",
                  value="unknown"), None
    state = res.text.strip()
    if res.returncode == 0 and state == "active":
        return None, None
    if not state or "not been booted with systemd" in res.stderr or "Failed to connect to bus" in res.stderr:
        return _f("host.service_unknown", Severity.WARNING, svc.label,
                  f"cannot tell whether {svc.systemd} is active: systemd is not running on this host",
                  "check this service by process, tcp or http instead", value="unknown"), None
    return _f("host.service_down", Severity.CRITICAL, svc.label, f"systemd unit {svc.systemd} is {state}",
              f"systemctl status {svc.systemd}; journalctl -u {svc.systemd} -n 50; then systemctl restart {svc.systemd}",
              value=state, threshold="active"), None


def matching_processes(name: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        exe = os.path.basename(cmd[0]) if cmd else ""
        if p.info.get("name") == name or exe == name:
            found.append(p)
    return found


def probe_process(svc: ServiceCheck) -> ProbeResult:
    assert svc.process is not None
    procs = matching_processes(svc.process)
    if procs:
        return None, None
    return _f("host.service_down", Severity.CRITICAL, svc.label, f"no process named {svc.process} is running",
              "start the service (and find out why it stopped: its log, journalctl, dmesg for OOM kills)",
              value=0, threshold=1), None


def probe_tcp(svc: ServiceCheck) -> ProbeResult:
    assert svc.tcp is not None
    host, port = split_hostport(svc.tcp)
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=svc.timeout.total_seconds()):
            ms = (time.perf_counter() - t0) * 1000
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return _f("host.service_down", Severity.CRITICAL, svc.label, f"nothing accepts connections on {svc.tcp}: {reason}",
                  "start the service listening there, or check its bind address and the firewall",
                  value="refused"), None
    return _latency(svc, ms, f"connecting to {svc.tcp}"), ms


def probe_http(svc: ServiceCheck) -> ProbeResult:
    import httpx

    assert svc.http is not None
    t0 = time.perf_counter()
    try:
        r = httpx.get(svc.http, timeout=svc.timeout.total_seconds(), verify=svc.verify_tls, follow_redirects=False)
    except httpx.HTTPError as exc:
        return _f("host.service_down", Severity.CRITICAL, svc.label, f"{svc.http} did not answer: {exc}",
                  "check that the application and its proxy are running", value="no answer"), None
    ms = (time.perf_counter() - t0) * 1000
    ok = r.status_code in svc.expect_status if svc.expect_status else 200 <= r.status_code < 300
    if not ok:
        expected = ", ".join(map(str, svc.expect_status)) or "2xx"
        return _f("host.service_down", Severity.CRITICAL, svc.label,
                  f"{svc.http} answered {r.status_code} (expected {expected}) in {ms:.0f} ms",
                  "read the application's log; restart it if it is wedged (upkeeper app.maintenance can)",
                  value=r.status_code, threshold=expected), ms
    return _latency(svc, ms, f"{svc.http} answered {r.status_code}"), ms


def _latency(svc: ServiceCheck, ms: float, what: str) -> Finding | None:
    limit = svc.max_latency.total_seconds() * 1000
    if ms <= limit:
        return None
    return _f("host.service_slow", Severity.WARNING, svc.label, f"{what} after {ms:.0f} ms (threshold {limit:.0f} ms)",
              "check the service's load and its dependencies (database, cache)", value=round(ms, 1), threshold=limit)


SERVICE_PROBES: dict[str, Callable[[ServiceCheck], ProbeResult]] = {
    "systemd": probe_systemd, "process": probe_process, "tcp": probe_tcp, "http": probe_http,
}


# -- clock ---------------------------------------------------------------------------------------

def check_clock(env: Env) -> CheckOutput:
    o = env.opts
    out = CheckOutput()
    if not o.clock:
        return out
    st: ClockStatus = _clock.clock_status()
    if st.offset_s is not None:
        out.metrics["clock.offset_ms"] = round(st.offset_s * 1000, 3)
    if st.synchronized is None:
        out.notes.append("clock sync unknown")
        out.findings.append(_f(
            "host.clock_unknown", Severity.INFO, env.host, f"cannot tell whether the clock is synchronised: {st.detail}",
            "install and enable chrony or systemd-timesyncd", source=st.source,
        ))
        return out
    out.metrics["clock.synchronized"] = 1.0 if st.synchronized else 0.0
    out.notes.append(f"clock {'synced' if st.synchronized else 'NOT synced'} ({st.source})")
    if not st.synchronized:
        out.findings.append(_f(
            "host.clock_unsynced", Severity.WARNING, env.host, f"the clock is not synchronised ({st.source}: {st.detail})",
            "enable time sync: 'timedatectl set-ntp true', or install chrony; schedules and TLS need a correct clock",
            value="unsynchronised", threshold="synchronised", source=st.source,
        ))
    elif st.offset_s is not None and abs(st.offset_s) * 1000 > o.clock_max_offset_ms:
        out.findings.append(_f(
            "host.clock_offset", Severity.WARNING, env.host,
            f"the clock is {abs(st.offset_s) * 1000:.0f} ms off ({st.source})",
            "check the NTP sources (chronyc sources); a big offset can mean a bad source or a stepping clock",
            value=round(st.offset_s * 1000, 2), threshold=o.clock_max_offset_ms,
        ))
    return out


CHECKS: tuple[tuple[str, Callable[[Env], CheckOutput]], ...] = (
    ("disks", check_disks),
    ("memory", check_memory),
    ("oom", check_oom),
    ("cpu", check_cpu),
    ("services", check_services),
    ("clock", check_clock),
)


@task
class HostHealth(Task[HealthOptions]):
    """Disk, memory, CPU, services and clock of this machine (metrics kept 90 days)."""

    name = "host.health"
    summary = "disk/inodes with time-to-full, memory, swap, OOM kills, CPU, load, services, clock sync"
    target_kinds = ("host",)
    Options = HealthOptions
    category = "monitoring"
    default_timeout = 120
    metrics_retention: ClassVar[timedelta] = timedelta(days=90)

    def run(self, ctx: TaskContext, options: HealthOptions) -> Result:
        env = Env(ctx=ctx, opts=options, host=socket.gethostname(), now=ctx.now())

        def failed(name: str, exc: Exception) -> Finding:
            return _f("host.check_failed", Severity.WARNING, f"{env.host} {name}",
                      f"the {name} check failed: {type(exc).__name__}: {exc}", "see the run log", check_name=name)

        out = run_checks(CHECKS, env, failed, ctx.log)
        return Result(summary=", ".join(out.notes), findings=out.findings, metrics=out.metrics)
