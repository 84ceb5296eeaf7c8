"""security.updates: pending and security updates (apt), unattended-upgrades, reboot required."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, StateStore, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError
from upkeeper.fmt import human_duration
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security.sla import SlaOptions, Vuln, track

#: simulate an upgrade; needs no lock and changes nothing
APT_SIMULATE_ARGV = ("apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade")
DPKG_QUERY_ARGV = ("dpkg-query", "-W", "-f=${Status}", "unattended-upgrades")
INST_RE = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) ([^\[\)]*)")


@dataclass
class AptPlan:
    packages: list[dict[str, str]] = field(default_factory=list)

    @property
    def security(self) -> list[dict[str, str]]:
        return [p for p in self.packages if "-security" in p["origin"] or "Security" in p["origin"]]


def parse_apt_simulation(text: str) -> AptPlan:
    plan = AptPlan()
    for line in text.splitlines():
        m = INST_RE.match(line)
        if m:
            plan.packages.append({"name": m.group(1), "installed": m.group(2) or "", "candidate": m.group(3),
                                  "origin": m.group(4).strip()})
    return plan


def unattended_enabled(conf_dir: Path) -> tuple[bool, str]:
    """APT::Periodic::Unattended-Upgrade "1" in apt.conf.d (the setting dpkg-reconfigure writes)."""
    value = None
    where = ""
    if conf_dir.is_dir():
        for f in sorted(conf_dir.iterdir()):
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            for m in re.finditer(r'APT::Periodic::Unattended-Upgrade\s+"(\d+)"', text):
                value, where = m.group(1), str(f)
    return value not in (None, "0"), where


class UpdatesOptions(TaskOptions):
    sla: SlaOptions = Field(default_factory=SlaOptions, description="patch SLA (pending security updates are "
                            "tracked from their first sighting like vulnerable dependencies). "
                            "Source: see the sla entries")
    severity: Literal["critical", "high", "medium", "low"] = Field(
        "high", description="SLA class of a pending security update (apt does not rate them). Source: upkeeper "
        "default (Debian security updates fix high-impact issues as a rule)")
    lists_max_age_days: float = Field(
        7, gt=0, description="warn when apt's package lists are older (results may be stale). Source: upkeeper "
        "default (apt's periodic update is daily)")
    apt_conf_dir: str = Field("/etc/apt/apt.conf.d", description="where the APT::Periodic settings live. "
            "Source: APT's configuration directory")
    reboot_file: str = Field("/var/run/reboot-required", description="flag file written when a reboot is needed. "
            "Source: Debian/Ubuntu (the flag file packages write)")


def sla_findings(sec: list[dict[str, str]], options: UpdatesOptions, state: StateStore, now: datetime
                 ) -> CheckOutput:
    """Pending security updates against the patch SLA: warning while due, critical once overdue."""
    out = CheckOutput()
    tracked = track(state, [Vuln(key=f"apt:{p['name']}:{p['candidate']}", ecosystem="apt", package=p["name"],
                                 severity=options.severity, title=f"security update {p['candidate']}",
                                 version=p["installed"], fixed_in=[p["candidate"]], source="apt")
                            for p in sec], now, options.sla, audited_sources={"apt"})
    overdue = [t for t in tracked if t.overdue(now)]
    within = [t for t in tracked if not t.overdue(now)]
    out.metrics["security_overdue"] = float(len(overdue))
    if overdue:
        oldest = min(t.first_seen for t in overdue)
        out.findings.append(Finding(
            "security.updates.security_overdue", Severity.CRITICAL, "host",
            f"{len(overdue)} security update(s) pending past the patch SLA "
            f"({human_duration(options.sla.due(options.severity))}), oldest seen {oldest:%Y-%m-%d %H:%M} UTC: "
            + ", ".join(t.vuln.package for t in overdue[:15]) + (" …" if len(overdue) > 15 else ""),
            "apt-get update && apt-get upgrade now (or enable unattended-upgrades)", value=len(overdue),
            threshold=0, data={"packages": [t.vuln.package for t in overdue][:200]}))
    if within:
        due = min(t.due for t in within if t.due) if any(t.due for t in within) else None
        out.findings.append(Finding(
            "security.updates.security_pending", Severity.WARNING, "host",
            f"{len(within)} security update(s) pending"
            + (f", due by {due:%Y-%m-%d %H:%M} UTC" if due else "") + ": "
            + ", ".join(t.vuln.package for t in within[:15]) + (" …" if len(within) > 15 else ""),
            "apt-get update && apt-get upgrade in the next maintenance window (or enable unattended-upgrades)",
            value=len(within), threshold=0, data={"packages": [p for p in sec if p["name"] in
                                                              {t.vuln.package for t in within}][:200]}))
    return out


def check_updates(options: UpdatesOptions, state: StateStore | None = None, now: datetime | None = None
                  ) -> CheckOutput:
    out = CheckOutput()
    apt = shutil.which("apt-get")
    if apt is None:
        out.findings.append(Finding("security.updates.unsupported", Severity.INFO, "host",
                                    "apt-get not found: update checks support Debian/Ubuntu", ""))
        return out
    try:
        res = proc.run([apt, *APT_SIMULATE_ARGV[1:]], timeout=300, extra_env={"LC_ALL": "C"})
    except ProcessError as exc:
        out.findings.append(Finding("security.updates.apt_failed", Severity.WARNING, "host",
                                    f"apt-get simulation failed: {exc.message}", "run 'apt-get -s upgrade' by hand"))
        return out
    plan = parse_apt_simulation(res.text)
    sec = plan.security
    out.metrics.update({"pending": float(len(plan.packages)), "security": float(len(sec))})
    if state is not None:
        out.extend(sla_findings(sec, options, state, now or datetime.now(UTC)))
    elif sec:
        out.findings.append(Finding(
            "security.updates.security_pending", Severity.WARNING, "host",
            f"{len(sec)} security update(s) pending: " + ", ".join(p["name"] for p in sec[:15])
            + (" …" if len(sec) > 15 else ""), "apt-get update && apt-get upgrade (or enable unattended-upgrades)",
            value=len(sec), threshold=0, data={"packages": sec[:200]}))
    other = len(plan.packages) - len(sec)
    if other:
        out.findings.append(Finding(
            "security.updates.pending", Severity.INFO, "host", f"{other} non-security update(s) pending",
            "apt-get upgrade in the next maintenance window", value=other,
            data={"packages": [p["name"] for p in plan.packages if p not in sec][:200]}))
    lists = Path("/var/lib/apt/lists")
    newest = max((p.stat().st_mtime for p in lists.glob("*_Packages*")), default=0.0) if lists.is_dir() else 0.0
    age_days = (time.time() - newest) / 86400 if newest else float("inf")
    out.metrics["lists_age_days"] = round(age_days, 2) if newest else -1.0
    if age_days > options.lists_max_age_days:
        out.findings.append(Finding(
            "security.updates.stale_lists", Severity.WARNING, "/var/lib/apt/lists",
            "apt package lists were never downloaded" if not newest else
            f"apt package lists are {age_days:.0f} days old: pending updates may be missing from this check",
            "run 'apt-get update' regularly (APT::Periodic::Update-Package-Lists \"1\")",
            value=round(age_days, 1) if newest else None, threshold=options.lists_max_age_days))
    try:
        installed = "install ok installed" in proc.run(list(DPKG_QUERY_ARGV), timeout=30, check=False).text
    except ProcessError:
        installed = False
    enabled, where = unattended_enabled(Path(options.apt_conf_dir))
    if not installed or not enabled:
        out.findings.append(Finding(
            "security.updates.unattended_upgrades", Severity.WARNING, "host",
            "unattended-upgrades is " + ("not installed" if not installed else "installed but not enabled"),
            "apt-get install unattended-upgrades && dpkg-reconfigure -plow unattended-upgrades",
            data={"installed": installed, "enabled": enabled, "file": where}))
    reboot = Path(options.reboot_file)
    if reboot.exists():
        pkgs = Path(str(reboot) + ".pkgs")
        names = pkgs.read_text().split() if pkgs.exists() else []
        out.findings.append(Finding(
            "security.updates.reboot_required", Severity.WARNING, "host",
            "a reboot is required to finish updates" + (f" ({', '.join(names[:10])})" if names else ""),
            "reboot in the next maintenance window", data={"packages": names}))
    out.metrics["reboot_required"] = 1.0 if reboot.exists() else 0.0
    out.summary = f"{len(plan.packages)} update(s) pending, {len(sec)} security"
    return out


@task
class SecurityUpdates(Task[UpdatesOptions]):
    """Simulate an apt upgrade to count pending and security updates — each security update is tracked from its
    first sighting and escalates to critical when it outlives the patch SLA — and check that unattended-upgrades
    is installed and enabled, that the package lists are fresh, and whether a reboot is required."""

    name = "security.updates"
    summary = "pending and security updates (apt), unattended-upgrades, reboot required"
    target_kinds = ("host",)
    Options = UpdatesOptions
    category = "security"
    default_timeout = 600

    def run(self, ctx: TaskContext, options: UpdatesOptions) -> Result:
        out = check_updates(options, ctx.state, ctx.now())
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
