"""security.dependencies: vulnerable npm and Python dependencies, with the patch SLA.

``npm audit --json`` (npm 7+ report format) for Node projects, ``pip-audit --format json``
for Python environments (a site-packages path, an interpreter, or pinned requirements).
A vulnerability within its SLA is a warning (critical/high) or info (medium/low); once
overdue it escalates to critical.  Both tools query their advisory databases over the
network; when they cannot, the check says so instead of reporting a clean bill of health.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from upkeeper.config.targets import AppTarget
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError, TaskError
from upkeeper.fmt import human_duration
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security.sla import SlaOptions, Tracked, Vuln, normalize, track

NPM_AUDIT_ARGV = ("npm", "audit", "--json")
PIP_AUDIT_ARGV = ("pip-audit", "--format", "json", "--progress-spinner", "off")


class AdvisoryUnavailable(TaskError):
    """The advisory database could not be reached: nothing is known, nothing is clean."""


class DependenciesOptions(TaskOptions):
    node_projects: list[str] = Field(default_factory=list, description="directories holding package-lock.json")
    python_paths: list[str] = Field(
        default_factory=list, description="site-packages directories to audit (pip-audit --path)")
    python_envs: list[str] = Field(
        default_factory=list, description="Python interpreters whose installed packages to audit (a venv's "
        "bin/python; needs pip in that environment)")
    requirements: list[str] = Field(
        default_factory=list, description="requirements files whose pinned versions to audit (no install)")
    sla: SlaOptions = Field(default_factory=SlaOptions, description="patch SLA per severity (see below)")
    unrated_severity: Literal["critical", "high", "medium", "low"] = Field(
        "high", description="severity given to advisories without one (pip-audit's PyPI feed has none). "
        "Source: upkeeper default (assume serious until known)")
    timeout: float = Field(300, gt=0, description="seconds per audit tool run")


def parse_npm_audit(text: str, project: str) -> list[Vuln]:
    """Vulnerabilities of an ``npm audit --json`` report (npm 7+); a malformed report is a TaskError."""
    try:
        return _parse_npm_audit(text, project)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise TaskError(f"npm audit report for {project} has an unexpected shape: {exc}") from None


def _parse_npm_audit(text: str, project: str) -> list[Vuln]:
    try:
        data: dict[str, Any] = json.loads(text or "{}")
    except ValueError as exc:
        raise TaskError(f"npm audit printed no JSON for {project}: {exc}") from None
    if "error" in data:
        err = data["error"]
        summary = err.get("summary") if isinstance(err, dict) else str(err)
        code = err.get("code", "") if isinstance(err, dict) else ""
        status = data.get("statusCode")
        detail = summary or data.get("message") or code or "unknown error"
        if code in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "ECONNRESET") or status \
                or "network" in str(detail).lower() or "fetch" in str(detail).lower() or "advisories" in str(
                data.get("uri", "")):
            raise AdvisoryUnavailable(f"npm audit could not query the advisory database: {str(detail)[:200]}")
        raise TaskError(f"npm audit failed in {project}: {summary}",
                        "Try: 'npm install --package-lock-only' to create package-lock.json")
    out: list[Vuln] = []
    for name, entry in (data.get("vulnerabilities") or {}).items():
        fix = entry.get("fixAvailable")
        fixed_in = [f"{fix.get('name')}@{fix.get('version')}"] if isinstance(fix, dict) else []
        for via in entry.get("via") or []:
            if not isinstance(via, dict):
                continue  # a transitive path; the advisory is listed under the package itself
            ident = via.get("url") or str(via.get("source"))
            out.append(Vuln(key=f"npm:{via.get('name', name)}:{ident}", ecosystem="npm",
                            package=str(via.get("name", name)), severity=normalize(str(via.get("severity"))),
                            title=str(via.get("title", "")), version=str(via.get("range", "")),
                            url=str(via.get("url", "")), fixed_in=fixed_in, source=project))
    unique = {v.key: v for v in out}
    return list(unique.values())


def parse_pip_audit(text: str, source: str, unrated: str) -> list[Vuln]:
    """Vulnerabilities of a ``pip-audit --format json`` report; a malformed report is a TaskError."""
    try:
        return _parse_pip_audit(text, source, unrated)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise TaskError(f"pip-audit report for {source} has an unexpected shape: {exc}") from None


def _parse_pip_audit(text: str, source: str, unrated: str) -> list[Vuln]:
    try:
        data = json.loads(text or "{}")
    except ValueError as exc:
        raise TaskError(f"pip-audit printed no JSON for {source}: {exc}") from None
    deps = data.get("dependencies", data if isinstance(data, list) else [])
    out = []
    for dep in deps:
        for v in dep.get("vulns") or []:
            aliases = [a for a in v.get("aliases") or [] if a.startswith(("CVE-", "GHSA-"))]
            out.append(Vuln(key=f"pypi:{dep['name'].lower()}:{v['id']}", ecosystem="PyPI", package=dep["name"],
                            severity=unrated, title=(v.get("description") or v["id"]).split("\n")[0][:200],
                            version=str(dep.get("version", "")),
                            url=f"https://osv.dev/vulnerability/{v['id']}", fixed_in=list(v.get("fix_versions") or []),
                            source=source, aliases=aliases))
    return out


def npm_audit(project: str, timeout: float) -> list[Vuln]:
    npm = shutil.which("npm")
    if npm is None:
        raise TaskError("npm not found", "Try: install Node.js/npm on this host")
    if not (Path(project) / "package-lock.json").exists():
        raise TaskError(f"{project} has no package-lock.json", "Try: 'npm install --package-lock-only' there")
    res = proc.run([npm, *NPM_AUDIT_ARGV[1:]], cwd=project, timeout=timeout, check=False)
    if res.returncode not in (0, 1) and not res.text.strip():
        text = res.stderr.strip()
        if any(code in text for code in ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED")):
            raise AdvisoryUnavailable(f"npm audit could not reach the advisory database: {text[-300:]}")
        raise TaskError(f"npm audit failed in {project}: {text[-300:]}")
    return parse_npm_audit(res.text, project)


def pip_audit_binary() -> str:
    local = Path(sys.executable).parent / "pip-audit"
    return str(local) if local.exists() else (shutil.which("pip-audit") or "pip-audit")


NETWORK_MARKERS = ("ConnectionError", "Max retries", "Name or service not known", "NameResolutionError",
                   "Temporary failure in name resolution", "ConnectTimeout", "ProxyError", "Connection refused")


def pip_audit(args: list[str], source: str, timeout: float, unrated: str,
              env: dict[str, str] | None = None) -> list[Vuln]:
    res = proc.run([pip_audit_binary(), *PIP_AUDIT_ARGV[1:], *args], timeout=timeout, check=False, extra_env=env)
    try:
        data = json.loads(res.text)
    except ValueError:
        text = res.stderr.strip()
        if any(s in text for s in NETWORK_MARKERS):
            raise AdvisoryUnavailable("pip-audit could not reach the advisory service: "
                                      + text.splitlines()[-1][:200]) from None
        raise TaskError(f"pip-audit failed for {source}: {text[-300:] or f'exit {res.returncode}'}") from None
    deps = data.get("dependencies", []) if isinstance(data, dict) else []
    skipped = [d for d in deps if d.get("skip_reason")]
    if deps and len(skipped) == len(deps) and any("not found on PyPI" in str(d["skip_reason"]) for d in skipped):
        raise AdvisoryUnavailable(f"pip-audit could not look up any of the {len(deps)} package(s) in the PyPI "
                                  f"advisory feed ({skipped[0]['skip_reason']})")
    vulns = parse_pip_audit(res.text, source, unrated)
    if skipped:
        raise PartialAudit(vulns, [f"{d['name']}: {d['skip_reason']}" for d in skipped])
    return vulns


class PartialAudit(Exception):
    """Some packages could not be audited; the vulnerabilities of the others are in ``vulns``."""

    def __init__(self, vulns: list[Vuln], skipped: list[str]) -> None:
        super().__init__(f"{len(skipped)} package(s) not audited")
        self.vulns = vulns
        self.skipped = skipped


def collect(options: DependenciesOptions, app_root: str | None = None
            ) -> tuple[list[Vuln], list[Finding], list[str]]:
    """(vulnerabilities, problems, sources audited successfully)."""
    vulns: list[Vuln] = []
    problems: list[Finding] = []
    audited: list[str] = []
    node = list(options.node_projects)
    py_paths = list(options.python_paths)
    if app_root and not (node or py_paths or options.python_envs or options.requirements):
        if (Path(app_root) / "package-lock.json").exists():
            node.append(app_root)
        for venv in (".venv", "venv"):
            for sp in sorted((Path(app_root) / venv).glob("lib/python3*/site-packages")):
                py_paths.append(str(sp))
    jobs: list[tuple[str, Any]] = [(p, lambda p=p: npm_audit(p, options.timeout)) for p in node]
    jobs += [(p, lambda p=p: pip_audit(["--path", p], p, options.timeout, options.unrated_severity))
             for p in py_paths]
    jobs += [(py, lambda py=py: pip_audit([], py, options.timeout, options.unrated_severity,
                                          env={"PIPAPI_PYTHON_LOCATION": py})) for py in options.python_envs]
    jobs += [(r, lambda r=r: pip_audit(["-r", r, "--disable-pip", "--no-deps"], r, options.timeout,
                                       options.unrated_severity)) for r in options.requirements]
    for source, fn in jobs:
        try:
            vulns += fn()
            audited.append(source)
        except PartialAudit as exc:
            vulns += exc.vulns
            audited.append(source)
            problems.append(Finding("security.dependencies.not_audited", Severity.WARNING, source,
                                    f"{len(exc.skipped)} package(s) could not be audited: "
                                    + "; ".join(exc.skipped[:5]), "check that the packages come from PyPI"))
        except AdvisoryUnavailable as exc:
            problems.append(Finding("security.dependencies.advisories_unreachable", Severity.WARNING, source,
                                    exc.message + " — these dependencies were NOT checked",
                                    "allow this host to reach the npm registry / PyPI, then rerun"))
        except (TaskError, ProcessError) as exc:
            problems.append(Finding("security.dependencies.audit_failed", Severity.WARNING, source,
                                    exc.message, (exc.hint or "").removeprefix("Try: ")))
    return vulns, problems, audited


def sla_findings(tracked: list[Tracked], now: datetime, sla: SlaOptions) -> tuple[list[Finding], int]:
    """One finding per open vulnerability: warning/info within its SLA, critical once overdue."""
    out: list[Finding] = []
    overdue = 0
    for t in sorted(tracked, key=lambda t: (t.due or now, t.vuln.package)):
        v = t.vuln
        age = now - t.first_seen
        if t.overdue(now):
            overdue += 1
            sev = Severity.CRITICAL
            sla_text = f"OVERDUE: open {human_duration(age)}, SLA {human_duration(sla.due(v.severity))}"
        else:
            sev = Severity.WARNING if v.severity in ("critical", "high", "unknown") else Severity.INFO
            sla_text = (f"due {t.due.isoformat(timespec='minutes')}" if t.due else "no SLA for this severity")
        out.append(Finding(
            "security.dependencies.vulnerable", sev, f"{v.package} ({v.ecosystem}, {v.source})",
            f"{v.severity} vulnerability: {v.title} — {sla_text}",
            f"upgrade {v.package}" + (f" to {', '.join(v.fixed_in)}" if v.fixed_in else " (no fixed version yet)"),
            value=v.severity, data={"key": v.key, "url": v.url, "version": v.version, "fixed_in": v.fixed_in,
                                    "first_seen": t.first_seen.isoformat(),
                                    "due": t.due.isoformat() if t.due else None}))
    return out, overdue


def check_dependencies(ctx: TaskContext, options: DependenciesOptions, app_root: str | None = None) -> CheckOutput:
    now = ctx.now()
    vulns, problems, audited = collect(options, app_root)
    out = CheckOutput(findings=problems)
    if not audited and not problems:
        out.findings.append(Finding(
            "security.dependencies.nothing_configured", Severity.INFO, app_root or "host",
            f"no package-lock.json or virtualenv (.venv, venv) found in {app_root}" if app_root else
            "no Node project or Python environment configured",
            "set node_projects / python_paths / python_envs / requirements"))
    tracked = track(ctx.state, vulns, now, options.sla, audited_sources=set(audited))
    vuln_findings, overdue = sla_findings(tracked, now, options.sla)
    out.findings += vuln_findings
    counts = {s: float(sum(1 for t in tracked if t.vuln.severity == s)) for s in ("critical", "high", "medium", "low")}
    out.metrics.update({"vulnerabilities": float(len(tracked)), "overdue": float(overdue),
                        "sources_audited": float(len(audited)), **{f"severity.{k}": v for k, v in counts.items()}})
    out.summary = f"{len(tracked)} vulnerable dependenc{'y' if len(tracked) == 1 else 'ies'} " \
                  f"({overdue} past the patch SLA) in {len(audited)} audited source(s)"
    return out


@task
class SecurityDependencies(Task[DependenciesOptions]):
    """Run ``npm audit`` for Node projects and ``pip-audit`` for Python environments; each vulnerability is
    tracked from its first sighting and escalates to critical when it outlives its patch SLA."""

    name = "security.dependencies"
    summary = "npm audit / pip-audit vulnerabilities with patch-SLA escalation (24 h / 72 h / 1 week)"
    target_kinds = ("host", "app")
    Options = DependenciesOptions
    category = "security"
    default_timeout = 900

    def run(self, ctx: TaskContext, options: DependenciesOptions) -> Result:
        root = ctx.target.root if isinstance(ctx.target, AppTarget) else None
        out = check_dependencies(ctx, options, root)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
