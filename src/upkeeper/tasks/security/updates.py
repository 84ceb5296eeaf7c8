"""security.updates: pending and security updates (apt), unattended-upgrades, reboot required."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError
from upkeeper.tasks.security._common import CheckOutput

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
    security_critical_count: int = Field(
        1, ge=1, description="pending security updates from which the finding is critical. Source: upkeeper "
        "default (the patch SLA: critical fixes within 24 h)")
    lists_max_age_days: float = Field(
        7, gt=0, description="warn when apt's package lists are older (results may be stale). Source: upkeeper "
        "default (apt's periodic update is daily)")
    apt_conf_dir: str = Field("/etc/apt/apt.conf.d", description="where the APT::Periodic settings live")
    reboot_file: str = Field("/var/run/reboot-required", description="flag file written when a reboot is needed")


def check_updates(options: UpdatesOptions) -> CheckOutput:
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
    if sec:
        sev = Severity.CRITICAL if len(sec) >= options.security_critical_count else Severity.WARNING
        out.findings.append(Finding(
            "security.updates.security_pending", sev, "host",
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
    """Simulate an apt upgrade to count pending and security updates, check that unattended-upgrades is
    installed and enabled, that the package lists are fresh, and whether a reboot is required."""

    name = "security.updates"
    summary = "pending and security updates (apt), unattended-upgrades, reboot required"
    target_kinds = ("host",)
    Options = UpdatesOptions
    category = "security"
    default_timeout = 600

    def run(self, ctx: TaskContext, options: UpdatesOptions) -> Result:
        out = check_updates(options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
