"""security.dependencies: vulnerable npm and Python dependencies, with the patch SLA.

``npm audit --json`` (npm 7+ report format) for Node projects, ``pip-audit --format json``
for Python environments (a site-packages path, an interpreter, or pinned requirements).
A vulnerability within its SLA is a warning (critical/high) or info (medium/low); once
overdue it escalates to critical.  Both tools query their advisory databases over the
network; when they cannot, the check says so instead of reporting a clean bill of health.

Air-gapped hosts point the tools at private mirrors: ``npm_registry`` (``npm audit --registry``;
the mirror must implement the bulk advisory endpoint ``/-/npm/v1/security/advisories/bulk``) and
``python_service: osv`` with ``osv_url`` (pip-audit ``--vulnerability-service osv --osv-url
<base>/v1/query``).  pip-audit's PyPI service has a fixed URL (pypi.org's JSON API) and no mirror
option, so an air-gapped host needs the OSV service.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from upkeeper.config.targets import AppTarget
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError, TaskError
from upkeeper.fmt import human_duration
from upkeeper.redact import redact
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security.sla import SlaOptions, Tracked, Vuln, normalize, track

NPM_AUDIT_ARGV = ("npm", "audit", "--json")
PIP_AUDIT_ARGV = ("pip-audit", "--format", "json", "--progress-spinner", "off")
#: path of the OSV query endpoint below an OSV API's base URL (pip-audit's --osv-url wants the full URL)
OSV_QUERY_PATH = "/v1/query"
#: npm error codes / messages that mean the registry could not be reached at all
NPM_NETWORK_CODES = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "ECONNRESET",
                     "EHOSTUNREACH", "ECONNABORTED", "EPROTO", "CERT_", "UNABLE_TO_", "SELF_SIGNED", "socket hang up",
                     "network", "request to ")


class AdvisoryUnavailable(TaskError):
    """The advisory database could not be reached: nothing is known, nothing is clean."""


class DependenciesOptions(TaskOptions):
    node_projects: list[str] = Field(default_factory=list, description="directories holding package-lock.json. "
            "Source: upkeeper (not set by default)")
    python_paths: list[str] = Field(
        default_factory=list, description="site-packages directories to audit (pip-audit --path). "
                "Source: upkeeper (not set by default)")
    python_envs: list[str] = Field(
        default_factory=list, description="Python interpreters whose installed packages to audit (a venv's "
        "bin/python; needs pip in that environment). Source: upkeeper (not set by default)")
    requirements: list[str] = Field(
        default_factory=list, description="requirements files whose pinned versions to audit (no install). "
                "Source: upkeeper (not set by default)")
    sla: SlaOptions = Field(default_factory=SlaOptions, description="patch SLA per severity (see below). "
            "Source: see the sla entries")
    unrated_severity: Literal["critical", "high", "medium", "low"] = Field(
        "high", description="severity given to advisories without one (pip-audit's JSON report has none, with either service). "
        "Source: upkeeper default (assume serious until known)")
    timeout: float = Field(300, gt=0, description="seconds per audit tool run. Source: upkeeper default")
    npm_registry: str | None = Field(
        None, description="registry URL for npm audit (npm audit --registry), e.g. a private mirror "
        "(Verdaccio, Nexus, Artifactory) that implements the bulk advisory endpoint "
        "/-/npm/v1/security/advisories/bulk and serves packuments; default: npm's own configuration "
        "(.npmrc, usually https://registry.npmjs.org/). Credentials belong in .npmrc, not in the URL. "
        "Source: upkeeper (not set by default)")
    python_service: Literal["pypi", "osv"] = Field(
        "pypi", description="advisory service of pip-audit (--vulnerability-service): pypi (the PyPI JSON "
        "API at pypi.org; cannot be redirected to a mirror) or osv (an OSV API, see osv_url). "
        "Default as pip-audit's. Source: upkeeper default")
    osv_url: str | None = Field(
        None, description="base URL of an OSV-compatible API for python_service: osv, e.g. "
        "https://osv.mirror.internal (pip-audit --osv-url <base>/v1/query); default: "
        "https://api.osv.dev. Credentials cannot be passed in the URL. Source: upkeeper (not set by default)")

    @field_validator("npm_registry", "osv_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            u = urlsplit(value.strip())
            u.port  # noqa: B018 -- raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid URL ({exc})") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host name")
        if u.username or u.password:
            raise ValueError("credentials must not be part of the URL (they would appear in process "
                             "listings): put a registry token in .npmrc (//host/:_authToken=...) or the "
                             "OSV mirror's credentials in ~/.netrc")
        if u.query or u.fragment:
            raise ValueError(f"{value!r}: a query string or fragment is not allowed here")
        return value.strip()

    @model_validator(mode="after")
    def _osv_url_needs_osv(self) -> DependenciesOptions:
        if self.osv_url is not None and self.python_service != "osv":
            raise ValueError("osv_url is only used by python_service: osv (pip-audit's PyPI service has no "
                             "mirror option) — add 'python_service: osv'")
        return self

    def pip_audit_service_args(self) -> list[str]:
        """pip-audit arguments selecting the advisory service."""
        if self.python_service != "osv":
            return []
        args = ["--vulnerability-service", "osv"]
        if self.osv_url:
            base = self.osv_url.rstrip("/")
            args += ["--osv-url", base if base.endswith(OSV_QUERY_PATH) else base + OSV_QUERY_PATH]
        return args

    @property
    def advisory_sources(self) -> str:
        """The advisory databases this configuration queries, for messages."""
        npm = self.npm_registry or "npm's configured registry"
        py = (self.osv_url or "https://api.osv.dev") if self.python_service == "osv" else "PyPI (pypi.org)"
        return f"npm: {npm}; Python: {py}"


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
    if not isinstance(data, dict):
        raise TaskError(f"npm audit report for {project} is not a JSON object")
    if "error" in data or ("message" in data and "vulnerabilities" not in data):
        _raise_npm_error(data, project)
    if "vulnerabilities" not in data:
        raise TaskError(f"npm audit report for {project} has no 'vulnerabilities' (auditReportVersion "
                        f"{data.get('auditReportVersion')!r}); npm 7 or later is needed",
                        "Try: upgrade npm (npm install -g npm)")
    out: list[Vuln] = []
    for name, entry in (data.get("vulnerabilities") or {}).items():
        fixed_in, remediation = npm_remediation(entry.get("fixAvailable"), str(name), project)
        for via in entry.get("via") or []:
            if not isinstance(via, dict):
                continue  # a transitive path; the advisory is listed under the package itself
            ident = via.get("url") or str(via.get("source"))
            out.append(Vuln(key=f"npm:{via.get('name', name)}:{ident}", ecosystem="npm",
                            package=str(via.get("name", name)), severity=normalize(str(via.get("severity"))),
                            title=str(via.get("title", "")), version=str(via.get("range", "")),
                            url=str(via.get("url", "")), fixed_in=fixed_in, source=project,
                            remediation=remediation))
    unique = {v.key: v for v in out}
    return list(unique.values())


def _raise_npm_error(data: dict[str, Any], project: str) -> None:
    """Turn npm's JSON error report into AdvisoryUnavailable (the advisory source did not answer) or
    TaskError (anything else, e.g. no lock file)."""
    err = data.get("error")
    err_d: dict[str, Any] = err if isinstance(err, dict) else {}
    summary = str(err_d.get("summary") or (err if isinstance(err, str) else "") or "")
    code = str(err_d.get("code") or "")
    message = str(data.get("message") or "")
    detail = redact(summary or message or str(err_d.get("detail") or "") or code or "unknown error")[:300]
    status = data.get("statusCode")
    if status:
        raise AdvisoryUnavailable(
            f"the registry answered HTTP {status} to npm audit's advisory request: {detail}",
            "Try: check that the registry implements /-/npm/v1/security/advisories/bulk (npm_registry)")
    text = " ".join((code, message, summary, str(err_d.get("detail") or ""))).lower()
    if any(marker.lower() in text for marker in NPM_NETWORK_CODES):
        raise AdvisoryUnavailable(f"npm audit could not query the advisory database: {detail}")
    raise TaskError(f"npm audit failed in {project}: {detail}",
                    "Try: 'npm install --package-lock-only' to create package-lock.json" if code == "ENOLOCK" else None)


def npm_remediation(fix: Any, name: str, project: str) -> tuple[list[str], str]:
    """(fixed versions, remediation text) from npm's ``fixAvailable``: ``true`` (a fixed version is within the
    ranges package.json allows: ``npm audit fix``), an object (only outside them: ``npm audit fix --force``
    installs ``name@version``, maybe a semver-major change) or ``false`` (no fix)."""
    if fix is True:
        return [], (f"run 'npm audit fix' in {project}: a fixed version of {name} is within the range "
                    "package.json allows")
    if isinstance(fix, dict) and fix.get("name") and fix.get("version"):
        target = f"{fix['name']}@{fix['version']}"
        kind = "a breaking (semver-major) change" if fix.get("isSemVerMajor") else \
            "outside the range package.json allows"
        return [target], f"upgrade to {target} ({kind}): 'npm audit fix --force' in {project} installs it"
    return [], f"no fixed version of {name} yet: remove or replace it, or accept the risk until one exists"


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


def npm_audit(project: str, timeout: float, registry: str | None = None) -> list[Vuln]:
    npm = shutil.which("npm")
    if npm is None:
        raise TaskError("npm not found", "Try: install Node.js/npm on this host")
    if not (Path(project) / "package-lock.json").exists():
        raise TaskError(f"{project} has no package-lock.json", "Try: 'npm install --package-lock-only' there")
    argv = [npm, *NPM_AUDIT_ARGV[1:], *(["--registry", registry] if registry else [])]
    res = proc.run(argv, cwd=project, timeout=timeout, check=False)
    # npm audit exits 0 (nothing found) or 1 (vulnerabilities found, or an error reported as JSON)
    if res.returncode not in (0, 1) or not res.text.strip():
        text = redact(res.stderr.strip())
        if any(marker.lower() in text.lower() for marker in NPM_NETWORK_CODES):
            raise AdvisoryUnavailable(f"npm audit could not reach the advisory database: {text[-300:]}")
        raise TaskError(f"npm audit failed in {project} (exit {res.returncode}): {text[-300:] or 'no output'}")
    return parse_npm_audit(res.text, project)


def pip_audit_binary() -> str:
    local = Path(sys.executable).parent / "pip-audit"
    return str(local) if local.exists() else (shutil.which("pip-audit") or "pip-audit")


NETWORK_MARKERS = ("ConnectionError", "Max retries", "Name or service not known", "NameResolutionError",
                   "Temporary failure in name resolution", "ConnectTimeout", "ProxyError", "Connection refused",
                   "Could not connect", "SSLError", "ReadTimeout")
#: pip-audit's traceback when the advisory service answered with an HTTP error (ServiceError from HTTPError)
SERVICE_ERROR_MARKERS = ("HTTPError", "ServiceError")


def pip_audit(args: list[str], source: str, timeout: float, unrated: str,
              env: dict[str, str] | None = None) -> list[Vuln]:
    res = proc.run([pip_audit_binary(), *PIP_AUDIT_ARGV[1:], *args], timeout=timeout, check=False, extra_env=env)
    try:
        data = json.loads(res.text)
    except ValueError:
        text = redact(res.stderr.strip())
        if any(s in text for s in NETWORK_MARKERS):
            raise AdvisoryUnavailable("pip-audit could not reach the advisory service: "
                                      + _explaining_line(text, NETWORK_MARKERS)) from None
        if any(s in text for s in SERVICE_ERROR_MARKERS):
            raise AdvisoryUnavailable("the advisory service answered pip-audit with an error: "
                                      + _explaining_line(text, ("HTTPError:", *SERVICE_ERROR_MARKERS))) from None
        if "unrecognized arguments: --osv-url" in text:
            raise TaskError("this pip-audit has no --osv-url option (osv_url needs pip-audit 2.10 or later)",
                            "Try: pip install -U pip-audit") from None
        raise TaskError(f"pip-audit failed for {source}: {text[-300:] or f'exit {res.returncode}'}") from None
    if res.returncode not in (0, 1):  # 0: nothing found, 1: vulnerabilities found
        raise TaskError(f"pip-audit failed for {source} (exit {res.returncode}): {redact(res.stderr.strip())[-300:]}")
    deps = data.get("dependencies", []) if isinstance(data, dict) else []
    skipped = [d for d in deps if d.get("skip_reason")]
    if deps and len(skipped) == len(deps) and any("not found on PyPI" in str(d["skip_reason"]) for d in skipped):
        raise AdvisoryUnavailable(f"pip-audit could not look up any of the {len(deps)} package(s) in the PyPI "
                                  f"advisory feed ({skipped[0]['skip_reason']})")
    vulns = parse_pip_audit(res.text, source, unrated)
    if skipped:
        raise PartialAudit(vulns, [f"{d['name']}: {d['skip_reason']}" for d in skipped])
    return vulns


def _explaining_line(text: str, markers: tuple[str, ...]) -> str:
    """The most telling line of a traceback: the last one naming a marker with a message, else the last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in markers:
        for line in reversed(lines):
            if marker in line and ": " in line and not line.startswith(("File ", "raise ")):
                return line[:300]
    return lines[-1][:300] if lines else ""


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
    svc = options.pip_audit_service_args()
    jobs: list[tuple[str, Any]] = [(p, lambda p=p: npm_audit(p, options.timeout, options.npm_registry))
                                   for p in node]
    jobs += [(p, lambda p=p: pip_audit([*svc, "--path", p], p, options.timeout, options.unrated_severity))
             for p in py_paths]
    jobs += [(py, lambda py=py: pip_audit(svc, py, options.timeout, options.unrated_severity,
                                          env={"PIPAPI_PYTHON_LOCATION": py})) for py in options.python_envs]
    jobs += [(r, lambda r=r: pip_audit([*svc, "-r", r, "--disable-pip", "--no-deps"], r, options.timeout,
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
            problems.append(Finding(
                "security.dependencies.advisories_unreachable", Severity.WARNING, source,
                redact(exc.message) + " — these dependencies were NOT checked",
                (redact(exc.hint or "").removeprefix("Try: ") or "allow this host to reach the advisory "
                 "database, or point npm_registry / osv_url at a reachable mirror") + f" ({options.advisory_sources})",
                data={"checked": False}))
        except (TaskError, ProcessError) as exc:
            problems.append(Finding("security.dependencies.audit_failed", Severity.WARNING, source,
                                    redact(exc.message) + " — these dependencies were NOT checked",
                                    redact(exc.hint or "").removeprefix("Try: "), data={"checked": False}))
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
            v.remediation or (f"upgrade {v.package}"
                              + (f" to {', '.join(v.fixed_in)}" if v.fixed_in else " (no fixed version yet)")),
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
    not_checked = sum(1 for f in problems if f.data.get("checked") is False)
    out.metrics["sources_not_checked"] = float(not_checked)
    out.summary = f"{len(tracked)} vulnerable dependenc{'y' if len(tracked) == 1 else 'ies'} " \
                  f"({overdue} past the patch SLA) in {len(audited)} audited source(s)"
    if not_checked:
        out.summary += f"; {not_checked} source(s) NOT checked"
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
        # a source whose advisories could not be fetched is unknown, not clean: the run is an error
        status = Status.ERROR if out.metrics.get("sources_not_checked") else None
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics, status=status)
