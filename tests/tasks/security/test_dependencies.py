"""security.dependencies: a Node project with an old lodash and a Python environment with old requests and
urllib3, audited by the real npm audit and pip-audit.  When the advisory databases cannot be reached
(this sandbox's npm registry refuses the bulk-advisory POST; its PyPI mirror has no JSON API) the
tests skip with the reason — and a separate test proves such a run is reported as *not checked*,
never as clean.  The patch SLA is tested on the tools' report formats with a moving clock."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from upkeeper.core.task import MemoryState, Severity, TaskContext
from upkeeper.sandbox._util import free_port
from upkeeper.tasks.security.dependencies import (
    DependenciesOptions,
    check_dependencies,
    parse_npm_audit,
    parse_pip_audit,
    sla_findings,
)
from upkeeper.tasks.security.sla import SlaOptions, compliance, track

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)

#: the npm 7+ audit report (auditReportVersion 2) for lodash 4.17.11, as npm prints it
NPM_REPORT = {
    "auditReportVersion": 2,
    "vulnerabilities": {"lodash": {
        "name": "lodash", "severity": "critical", "isDirect": True,
        "via": [
            {"source": 1096305, "name": "lodash", "dependency": "lodash", "title": "Prototype Pollution in lodash",
             "url": "https://github.com/advisories/GHSA-p6mc-m468-83gw", "severity": "high", "range": "<4.17.19"},
            {"source": 1096307, "name": "lodash", "dependency": "lodash", "title": "Command Injection in lodash",
             "url": "https://github.com/advisories/GHSA-35jh-r3h4-6jhm", "severity": "high", "range": "<4.17.21"},
            {"source": 1096996, "name": "lodash", "dependency": "lodash", "title": "Prototype Pollution in lodash",
             "url": "https://github.com/advisories/GHSA-jf85-cpcp-j695", "severity": "critical", "range": "<4.17.12"},
            {"source": 1094499, "name": "lodash", "dependency": "lodash",
             "title": "Regular Expression Denial of Service (ReDoS) in lodash",
             "url": "https://github.com/advisories/GHSA-29mw-wpgm-hmr9", "severity": "moderate",
             "range": "<4.17.21"}],
        "effects": [], "range": "<=4.17.20", "nodes": ["node_modules/lodash"],
        "fixAvailable": {"name": "lodash", "version": "4.17.21", "isSemVerMajor": False}}},
    "metadata": {"vulnerabilities": {"info": 0, "low": 0, "moderate": 1, "high": 2, "critical": 1, "total": 4}},
}
PIP_REPORT = {"dependencies": [
    {"name": "requests", "version": "2.19.0", "vulns": [
        {"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
         "description": "The Requests package before 2.20.0 sends an HTTP Authorization header to an http URI "
                        "upon receiving a same-hostname https-to-http redirect"}]},
    {"name": "idna", "version": "3.7", "vulns": []}], "fixes": []}


def ctx_at(state: MemoryState, now: datetime) -> TaskContext:
    return TaskContext(job="deps", task="security.dependencies", state=state, clock=lambda: now)


def test_npm_report_parsed_per_advisory() -> None:
    vulns = parse_npm_audit(json.dumps(NPM_REPORT), "/srv/shop")
    assert sorted(v.severity for v in vulns) == ["critical", "high", "high", "medium"]
    assert {v.fixed_in[0] for v in vulns} == {"lodash@4.17.21"}
    assert all(v.key.startswith("npm:lodash:https://github.com/advisories/GHSA-") for v in vulns)


def test_pip_report_parsed() -> None:
    vulns = parse_pip_audit(json.dumps(PIP_REPORT), "/srv/shop/.venv", "high")
    assert [(v.package, v.severity, v.fixed_in) for v in vulns] == [("requests", "high", ["2.20.0"])]
    assert vulns[0].aliases == ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"]


def test_patch_sla_escalates_and_records_fixes() -> None:
    state = MemoryState()
    sla = SlaOptions()
    vulns = parse_npm_audit(json.dumps(NPM_REPORT), "/srv/shop")

    def run(at: datetime, current: list) -> dict[str, Severity]:
        tracked = track(state, current, at, sla, audited_sources={"/srv/shop"})
        found, _ = sla_findings(tracked, at, sla)
        return {f.data["key"].rsplit("/", 1)[-1]: f.severity for f in found}

    first = run(NOW, vulns)
    assert first == {"GHSA-jf85-cpcp-j695": Severity.WARNING, "GHSA-p6mc-m468-83gw": Severity.WARNING,
                     "GHSA-35jh-r3h4-6jhm": Severity.WARNING, "GHSA-29mw-wpgm-hmr9": Severity.INFO}
    day2 = run(NOW + timedelta(hours=25), vulns)  # critical: 24 h SLA passed
    assert day2["GHSA-jf85-cpcp-j695"] is Severity.CRITICAL and day2["GHSA-p6mc-m468-83gw"] is Severity.WARNING
    day4 = run(NOW + timedelta(hours=73), vulns)  # high: 72 h passed
    assert day4["GHSA-p6mc-m468-83gw"] is Severity.CRITICAL and day4["GHSA-29mw-wpgm-hmr9"] is Severity.INFO
    # lodash upgraded on day 5: everything disappears and is recorded as fixed (late, for three of them)
    assert run(NOW + timedelta(days=5), []) == {}
    ledger = state.get("vulns")
    assert all(e["fixed_at"] for e in ledger.values())
    c = compliance(ledger, sla, NOW - timedelta(days=1), NOW + timedelta(days=30))
    assert (c["fixed_in_time"], c["fixed_late"], c["open_overdue"]) == (1, 3, 0)
    assert c["compliance_pct"] == 25.0


def test_unreachable_source_never_marks_fixed() -> None:
    state = MemoryState()
    vulns = parse_npm_audit(json.dumps(NPM_REPORT), "/srv/shop")
    track(state, vulns, NOW, SlaOptions(), audited_sources={"/srv/shop"})
    track(state, [], NOW + timedelta(hours=1), SlaOptions(), audited_sources=set())  # npm audit failed
    assert not any(e["fixed_at"] for e in state.get("vulns").values())


def test_unreachable_advisories_are_reported_not_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real npm and pip-audit pointed at a closed port: the run says what was not checked."""
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    proj = tmp_path / "node"
    proj.mkdir()
    (proj / "package.json").write_text('{"name": "x", "version": "1.0.0", "dependencies": {}}')
    (proj / "package-lock.json").write_text('{"name": "x", "version": "1.0.0", "lockfileVersion": 3, '
                                            '"requires": true, "packages": {"": {"name": "x", "version": "1.0.0"}}}')
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.19.0\n")
    closed = f"http://127.0.0.1:{free_port()}"
    for k, v in {"npm_config_registry": closed + "/", "HTTPS_PROXY": closed, "HTTP_PROXY": closed,
                 "https_proxy": closed, "http_proxy": closed, "NO_PROXY": "", "no_proxy": ""}.items():
        monkeypatch.setenv(k, v)
    out = check_dependencies(ctx_at(MemoryState(), NOW),
                             DependenciesOptions(node_projects=[str(proj)], requirements=[str(req)], timeout=120))
    problems = {f.subject: f for f in out.findings if f.check.startswith("security.dependencies.")}
    # npm with an empty lock file may legitimately have nothing to ask; pip-audit must have failed
    assert problems[str(req)].severity is Severity.WARNING
    assert problems[str(req)].check in ("security.dependencies.advisories_unreachable",
                                        "security.dependencies.audit_failed")
    assert out.metrics["vulnerabilities"] == 0 and out.metrics["sources_audited"] <= 1
    assert "NOT checked" in problems[str(req)].message or "failed" in problems[str(req)].message


def _skip_if_unreachable(out) -> None:
    for f in out.findings:
        if f.check == "security.dependencies.advisories_unreachable":
            pytest.skip(f"advisory database unreachable from here, so this cannot be checked: {f.message}")


def test_node_project_with_old_lodash(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    proj = tmp_path / "shop"
    proj.mkdir()
    (proj / "package.json").write_text(json.dumps({"name": "shop", "version": "1.0.0",
                                                   "dependencies": {"lodash": "4.17.11"}}))
    res = subprocess.run([npm, "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
                         cwd=proj, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        pytest.skip(f"npm registry unreachable, cannot build the lock file: {res.stderr.strip()[-200:]}")
    out = check_dependencies(ctx_at(MemoryState(), NOW), DependenciesOptions(node_projects=[str(proj)]))
    _skip_if_unreachable(out)
    vul = [f for f in out.findings if f.check == "security.dependencies.vulnerable"]
    assert vul and all(f.subject.startswith("lodash (npm") for f in vul)
    assert any("4.17.21" in f.remediation or "lodash@" in f.remediation for f in vul)


def test_python_environment_with_old_requests(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "--no-deps",
                          "requests==2.19.0", "urllib3==1.24.1"], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"PyPI unreachable, cannot install the old packages: {res.stderr.strip()[-200:]}")
    out = check_dependencies(ctx_at(MemoryState(), NOW), DependenciesOptions(python_paths=[str(site)]))
    _skip_if_unreachable(out)
    vulnerable = {f.subject.split(" ")[0].lower() for f in out.findings if f.check.endswith("vulnerable")}
    assert {"requests", "urllib3"} <= vulnerable
