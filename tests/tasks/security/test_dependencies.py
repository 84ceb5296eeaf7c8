"""security.dependencies: a Node project with an old lodash and a Python environment with old requests and
urllib3, audited by the real npm audit and pip-audit.

Against the public advisory databases (registry.npmjs.org, PyPI) the two tests skip with the reason when
those cannot be reached (this sandbox's npm registry refuses the bulk-advisory POST; its PyPI mirror has no
JSON API).  The same real tools are also driven against private mirrors started by the tests
(tests/advisory_servers.py: an npm registry's bulk advisory endpoint and packuments, an OSV API), which
always run: seeded advisories are found with the right severity and remediation, and refused connections
or error answers are reported as *not checked*, never as clean.  The patch SLA is tested on the tools'
report formats with a moving clock."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from advisory_servers import NpmAdvisory, npm_registry, osv_api, osv_record
from conftest import invoke
from upkeeper.core.jobs import load_setup
from upkeeper.core.task import Finding, MemoryState, Result, Severity, Status, TaskContext
from upkeeper.errors import ConfigError, TaskError
from upkeeper.sandbox._util import free_port
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security.dependencies import (
    AdvisoryUnavailable,
    DependenciesOptions,
    SecurityDependencies,
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
    assert problems[str(req)].check == "security.dependencies.advisories_unreachable", problems[str(req)].message
    assert out.metrics["vulnerabilities"] == 0 and out.metrics["sources_audited"] <= 1
    assert out.metrics["sources_not_checked"] >= 1
    assert "NOT checked" in problems[str(req)].message


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


# --- private mirrors: the real npm and pip-audit against local advisory endpoints (tests/advisory_servers.py)

LODASH_ADVISORIES = [
    NpmAdvisory(1096996, "lodash", "Prototype Pollution in lodash", "critical", "<4.17.12",
                url="https://github.com/advisories/GHSA-jf85-cpcp-j695", cwe=["CWE-1321"],
                cvss={"score": 9.1, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:H"}),
    NpmAdvisory(1096307, "lodash", "Command Injection in lodash", "high", "<4.17.21",
                url="https://github.com/advisories/GHSA-35jh-r3h4-6jhm", cwe=["CWE-77"]),
    NpmAdvisory(1, "lodash", "Seeded advisory of a version nobody uses", "low", ">=5.0.0 <5.0.1"),
]
LODASH_VERSIONS = {"lodash": ["4.17.11", "4.17.12", "4.17.20", "4.17.21"]}
REQUESTS_OSV = osv_record("PYSEC-2018-28", "requests", "0", "2.20.0",
                          "Requests sends an HTTP Authorization header to an http URI upon a https-to-http redirect",
                          aliases=["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"])
URLLIB3_OSV = osv_record("PYSEC-2019-132", "urllib3", "0", "1.24.2",
                         "urllib3 mishandles certain cases where the desired set of CA certificates differs",
                         aliases=["CVE-2019-11324"])


@pytest.fixture
def npm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npm with its own cache (npm caches computed advisories by id) and no proxy or retries."""
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: scripts/ensure-system-deps.sh installs it (make bootstrap)")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_update_notifier", "false")
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "npm_config_proxy", "npm_config_https_proxy"):
        monkeypatch.delenv(k, raising=False)


def node_project(root: Path, spec: str, installed: str = "4.17.11") -> Path:
    """A Node project depending on lodash ``spec`` with ``installed`` locked (as npm 7+ writes the lock)."""
    root.mkdir(parents=True, exist_ok=True)
    deps = {"lodash": spec}
    (root / "package.json").write_text(json.dumps({"name": "shop", "version": "1.0.0", "dependencies": deps}))
    (root / "package-lock.json").write_text(json.dumps({
        "name": "shop", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {"": {"name": "shop", "version": "1.0.0", "dependencies": deps},
                     "node_modules/lodash": {"version": installed,
                                             "resolved": f"https://npm.invalid/lodash/-/lodash-{installed}.tgz"}}}))
    return root


def seeded_venv(venv: Path) -> Path:
    """A real venv (with pip) in which urllib3 1.24.1 is installed as pip records it; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the distribution's metadata as pip writes it (installing the wheel itself would need the network)
    dist = site / "urllib3-1.24.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: urllib3\nVersion: 1.24.1\n")
    (dist / "INSTALLER").write_text("pip\n")
    (dist / "RECORD").write_text("urllib3-1.24.1.dist-info/METADATA,,\n")
    return venv / "bin" / "python"


def vulnerable(out: CheckOutput) -> dict[str, Finding]:
    return {f.data["url"].rsplit("/", 1)[-1]: f for f in out.findings if f.check == "security.dependencies.vulnerable"}


def run_task(options: DependenciesOptions) -> Result:
    return SecurityDependencies().run(ctx_at(MemoryState(), NOW), options)


def test_npm_audit_through_private_registry_pinned_dependency(tmp_path: Path, npm_env: None) -> None:
    """lodash pinned to 4.17.11: npm finds both advisories; the fix (4.17.21) is outside the pinned range."""
    proj = node_project(tmp_path / "shop", "4.17.11")
    with npm_registry(LODASH_ADVISORIES, LODASH_VERSIONS) as reg:
        res = run_task(DependenciesOptions(node_projects=[str(proj)], npm_registry=reg.url))
        bulk = [r for r in reg.requests if r.path == "/-/npm/v1/security/advisories/bulk"]
    assert bulk and bulk[0].method == "POST" and bulk[0].headers.get("content-encoding") == "gzip"
    assert bulk[0].body == {"lodash": ["4.17.11"]}
    found = vulnerable(CheckOutput(findings=res.findings))
    assert set(found) == {"GHSA-jf85-cpcp-j695", "GHSA-35jh-r3h4-6jhm"}
    crit, high = found["GHSA-jf85-cpcp-j695"], found["GHSA-35jh-r3h4-6jhm"]
    assert (crit.value, crit.severity, high.value) == ("critical", Severity.WARNING, "high")  # within the 24 h SLA
    assert crit.subject == f"lodash (npm, {proj})"
    assert crit.data["fixed_in"] == ["lodash@4.17.21"]
    assert "'npm audit fix --force'" in crit.remediation and "lodash@4.17.21" in crit.remediation
    assert "outside the range package.json allows" in crit.remediation
    assert res.final_status is Status.WARN and res.metrics["severity.critical"] == 1
    assert res.metrics["sources_audited"] == 1 and res.metrics["sources_not_checked"] == 0


def test_npm_fix_within_semver_range_says_npm_audit_fix(tmp_path: Path, npm_env: None) -> None:
    """^4.17.11 allows 4.17.21: npm reports fixAvailable: true, so the advice is plain `npm audit fix`."""
    proj = node_project(tmp_path / "shop", "^4.17.11")
    with npm_registry(LODASH_ADVISORIES, LODASH_VERSIONS) as reg:
        out = check_dependencies(ctx_at(MemoryState(), NOW),
                                 DependenciesOptions(node_projects=[str(proj)], npm_registry=reg.url))
    found = vulnerable(out)
    assert set(found) == {"GHSA-jf85-cpcp-j695", "GHSA-35jh-r3h4-6jhm"}
    for f in found.values():
        assert f.remediation.startswith(f"run 'npm audit fix' in {proj}"), f.remediation
        assert "--force" not in f.remediation and "no fixed version" not in f.remediation


def test_npm_semver_major_fix_and_no_fix(tmp_path: Path, npm_env: None) -> None:
    """Only 5.x fixes the ^4 range: a breaking change; a package with no fixed release says so."""
    advisories = [NpmAdvisory(7, "lodash", "Everything before 5", "moderate", "<5.0.0"),
                  NpmAdvisory(8, "left-pad", "Unfixed", "low", "<=1.3.0")]
    versions = {"lodash": ["4.17.11", "4.17.21", "5.0.0"], "left-pad": ["1.3.0"]}
    proj = node_project(tmp_path / "shop", "^4.17.11")
    lock = json.loads((proj / "package-lock.json").read_text())
    lock["packages"][""]["dependencies"]["left-pad"] = "^1.3.0"
    lock["packages"]["node_modules/left-pad"] = {"version": "1.3.0"}
    (proj / "package-lock.json").write_text(json.dumps(lock))
    (proj / "package.json").write_text(json.dumps({"name": "shop", "version": "1.0.0",
                                                   "dependencies": lock["packages"][""]["dependencies"]}))
    with npm_registry(advisories, versions) as reg:
        out = check_dependencies(ctx_at(MemoryState(), NOW),
                                 DependenciesOptions(node_projects=[str(proj)], npm_registry=reg.url))
    found = vulnerable(out)
    assert "a breaking (semver-major) change" in found["GHSA-test-7"].remediation
    assert found["GHSA-test-7"].data["fixed_in"] == ["lodash@5.0.0"] and found["GHSA-test-7"].value == "medium"
    assert found["GHSA-test-8"].remediation.startswith("no fixed version of left-pad yet")
    assert found["GHSA-test-8"].severity is Severity.INFO  # low: no SLA


def test_pip_audit_osv_mirror_requirements(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.19.0\nurllib3==1.24.2\nidna==2.7\n")
    with osv_api([REQUESTS_OSV, URLLIB3_OSV]) as osv:
        res = run_task(DependenciesOptions(requirements=[str(req)], python_service="osv", osv_url=osv.url))
        asked = {(r.body["package"]["name"], r.body["version"]) for r in osv.requests if r.path == "/v1/query"}
    assert asked == {("requests", "2.19.0"), ("urllib3", "1.24.2"), ("idna", "2.7")}
    found = vulnerable(CheckOutput(findings=res.findings))
    assert set(found) == {"PYSEC-2018-28"}  # urllib3 1.24.2 is the fixed version
    f = found["PYSEC-2018-28"]
    assert f.subject == f"requests (PyPI, {req})" and f.value == "high"  # OSV via pip-audit: unrated -> high
    assert f.data["fixed_in"] == ["2.20.0"] and f.remediation == "upgrade requests to 2.20.0"
    assert res.final_status is Status.WARN and res.metrics["sources_audited"] == 1


def test_pip_audit_osv_mirror_installed_venv(tmp_path: Path) -> None:
    """python_envs: pip-audit lists what pip sees installed in a real venv and asks the OSV mirror."""
    py = seeded_venv(tmp_path / "venv")
    with osv_api([REQUESTS_OSV, URLLIB3_OSV]) as osv:
        out = check_dependencies(ctx_at(MemoryState(), NOW), DependenciesOptions(
            python_envs=[str(py)], python_service="osv", osv_url=osv.url + "/"))
        asked = {r.body["package"]["name"] for r in osv.requests}
    assert "urllib3" in asked and "pip" in asked  # pip itself is installed in the venv
    found = vulnerable(out)
    assert set(found) == {"PYSEC-2019-132"}
    assert found["PYSEC-2019-132"].subject == f"urllib3 (PyPI, {py})"
    assert found["PYSEC-2019-132"].data["fixed_in"] == ["1.24.2"]


def test_unreachable_mirrors_are_not_checked_never_clean(tmp_path: Path, npm_env: None) -> None:
    """Connection refused by the npm registry and by the OSV API: the run is an error naming both sources."""
    proj = node_project(tmp_path / "shop", "4.17.11")
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.19.0\n")
    closed = f"http://127.0.0.1:{free_port()}"
    res = run_task(DependenciesOptions(node_projects=[str(proj)], requirements=[str(req)], npm_registry=closed,
                                       python_service="osv", osv_url=closed, timeout=120))
    problems = {f.subject: f for f in res.findings}
    assert set(problems) == {str(proj), str(req)}
    for f in problems.values():
        assert f.check == "security.dependencies.advisories_unreachable", f.message
        assert "NOT checked" in f.message and f.data == {"checked": False}
    assert "ECONNREFUSED" in problems[str(proj)].message
    assert "Connection refused" in problems[str(req)].message
    assert closed in problems[str(req)].remediation
    assert res.final_status is Status.ERROR
    assert res.metrics["sources_audited"] == 0 and res.metrics["sources_not_checked"] == 2
    assert res.metrics["vulnerabilities"] == 0 and res.summary.endswith("2 source(s) NOT checked")


def test_mirrors_answering_errors_are_not_checked(tmp_path: Path, npm_env: None) -> None:
    """A registry answering 404 to the bulk request (it does not implement audit) and an OSV URL answering 404
    are not clean results."""
    proj = node_project(tmp_path / "shop", "4.17.11")
    req = tmp_path / "requirements.txt"
    req.write_text("requests==2.19.0\n")
    with osv_api([]) as other:  # answers 404 to every npm path and to /elsewhere/v1/query
        res = run_task(DependenciesOptions(node_projects=[str(proj)], npm_registry=other.url, requirements=[str(req)],
                                           python_service="osv", osv_url=other.url + "/elsewhere"))
        assert [r.path for r in other.requests if r.method == "POST"] == [
            "/-/npm/v1/security/advisories/bulk", "/elsewhere/v1/query"]
    problems = {f.subject: f for f in res.findings}
    npm, pip = problems[str(proj)], problems[str(req)]
    assert npm.check == "security.dependencies.advisories_unreachable" and "HTTP 404" in npm.message
    assert "/-/npm/v1/security/advisories/bulk" in npm.remediation
    assert pip.check == "security.dependencies.advisories_unreachable"
    assert "404 Client Error" in pip.message and "NOT checked" in pip.message
    assert res.final_status is Status.ERROR and res.metrics["sources_not_checked"] == 2


def test_npm_error_report_classification() -> None:
    """npm's JSON error object for a refused connection (as npm 11 prints it) is 'unreachable', not clean."""
    refused = {"message": "request to http://127.0.0.1:9/-/npm/v1/security/advisories/bulk failed, reason: "
                          "connect ECONNREFUSED 127.0.0.1:9", "error": {"summary": "", "detail": ""}}
    with pytest.raises(AdvisoryUnavailable, match="ECONNREFUSED"):
        parse_npm_audit(json.dumps(refused), "/srv/shop")
    no_lock = {"error": {"code": "ENOLOCK", "summary": "This command requires an existing lockfile.",
                         "detail": "Try creating one first with: npm i --package-lock-only"}}
    with pytest.raises(TaskError, match="requires an existing lockfile") as info:
        parse_npm_audit(json.dumps(no_lock), "/srv/shop")
    assert not isinstance(info.value, AdvisoryUnavailable)
    with pytest.raises(TaskError, match="no 'vulnerabilities'"):
        parse_npm_audit(json.dumps({"advisories": {}}), "/srv/shop")  # npm 6 format


@pytest.mark.parametrize(("options", "field", "message"), [
    ({"npm_registry": "ftp://mirror.internal/"}, "npm_registry", "not an http:// or https:// URL"),
    ({"npm_registry": "registry.internal"}, "npm_registry", "not an http:// or https:// URL"),
    ({"npm_registry": "https://bob:s3cret@npm.internal/"}, "npm_registry", "credentials must not be part"),
    ({"python_service": "osv", "osv_url": "file:///srv/osv"}, "osv_url", "not an http:// or https:// URL"),
    ({"python_service": "osv", "osv_url": "http://osv.internal:99999"}, "osv_url", "not a valid URL"),
    ({"osv_url": "https://osv.internal"}, "", "add 'python_service: osv'"),
    ({"python_service": "snyk"}, "python_service", "'pypi' or 'osv'"),
])
def test_option_validation_names_the_field(tmp_path: Path, options: dict[str, str], field: str,
                                           message: str) -> None:
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"version: 1\nhistory: {tmp_path / 'h.db'}\njobs:\n  deps:\n    task: security.dependencies\n"
                   f"    options: {json.dumps(options)}\n")
    with pytest.raises(ConfigError) as info:
        load_setup(cfg)
    text = str(info.value) + str(info.value.hint or "")
    assert f"upkeeper.yaml:6: jobs -> deps -> options{' -> ' + field if field else ''}: " in text, text
    assert message in text, text
    assert "s3cret" not in text


def test_docs_air_gapped_example_runs(tmp_path: Path, npm_env: None) -> None:
    """The docs/security.md air-gapped example, with its mirrors replaced by local ones, runs end to end."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    section = doc.split("#### Air-gapped hosts / private mirrors", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    root = tmp_path / "srv" / "shop"
    node_project(root, "4.17.11")
    (root / "requirements.txt").write_text("requests==2.19.0\n")
    seeded_venv(root / ".venv")
    with npm_registry(LODASH_ADVISORIES, LODASH_VERSIONS) as reg, osv_api([REQUESTS_OSV, URLLIB3_OSV]) as osv:
        text = (example.group(1).replace("https://npm.internal.example/", reg.url)
                .replace("https://osv.internal.example", osv.url).replace("/srv/shop", str(root)))
        assert reg.url in text and osv.url in text
        cfg = tmp_path / "upkeeper.yaml"
        cfg.write_text(f"history: {tmp_path / 'h.db'}\n" + text)
        result = invoke(["--config", str(cfg), "run", "deps-offline", "--json"])
    assert result.code == 0, result.output
    (run,) = result.json()
    assert run["status"] == "warn", run
    keys = {f["data"]["key"] for f in run["findings"] if f["check"] == "security.dependencies.vulnerable"}
    assert "pypi:requests:PYSEC-2018-28" in keys and "pypi:urllib3:PYSEC-2019-132" in keys
    assert "npm:lodash:https://github.com/advisories/GHSA-jf85-cpcp-j695" in keys


_ledger_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6)
    | st.sampled_from(["2025-03-01T10:00:00+00:00", "2025-03-01T10:00:00", "high"]),
    lambda c: st.lists(c, max_size=2) | st.dictionaries(
        st.sampled_from(["first_seen", "fixed_at", "severity", "source", "package"]), c, max_size=4), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_ledger_value, st.dictionaries(st.sampled_from(["npm:/srv/shop/lodash/GHSA-jf85-cpcp-j695", "old"]),
                                                 _ledger_value, max_size=2)))
@example({"old": 5})  # 'int' object has no attribute 'get'
@example({"old": {"first_seen": "2025-03-01T10:00:00+00:00", "fixed_at": 5}})  # fromisoformat(5)
@example({"old": {"first_seen": "2025-03-01T10:00:00"}})  # naive: can't compare with an aware time
@example(["x"])  # dict(['x'])
def test_a_damaged_vulnerability_ledger_is_tracked_anew(ledger: object) -> None:
    """The vulnerability ledger (first seen, fixed at) kept in history, read back damaged or from another version,
    made security.dependencies/audit/updates and the compliance report fail at every run (TypeError, ValueError).
    Entries that cannot be used are left out; a vulnerability still reported is first seen again."""
    state = MemoryState()
    state.set("vulns", ledger)
    vulns = parse_npm_audit(json.dumps(NPM_REPORT), "/srv/shop")
    tracked = track(state, vulns, NOW, SlaOptions(), audited_sources={"/srv/shop"})
    assert {t.vuln.key for t in tracked} == {v.key for v in vulns}
    sla_findings(tracked, NOW, SlaOptions())
    compliance(ledger if isinstance(ledger, dict) else {}, SlaOptions(), NOW - timedelta(days=30), NOW)
    compliance(state.get("vulns"), SlaOptions(), NOW - timedelta(days=30), NOW)
