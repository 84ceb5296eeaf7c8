"""Host checks on this machine's real state: firewall, apt updates, process ownership, file permissions.

Where this container cannot show a condition (no firewall tool installed, no reboot pending) the
parsers are tested on the tools' real output formats and the live check asserts what is true here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from upkeeper.core.task import MemoryState, Severity
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.redis import RedisServer
from upkeeper.tasks.security.firewall import (
    FirewallOptions,
    check_firewall,
    parse_iptables_s,
    parse_nft_json,
    parse_ufw_status,
)
from upkeeper.tasks.security.permissions import PermissionsOptions, check_permissions
from upkeeper.tasks.security.processes import (
    Proc,
    ProcessesOptions,
    evaluate,
    evaluate_settled,
    snapshot,
)
from upkeeper.tasks.security.updates import (
    UpdatesOptions,
    check_updates,
    parse_apt_simulation,
    sla_findings,
    unattended_enabled,
)


def test_firewall_live_state_and_unexpected_listener() -> None:
    with socket.socket() as public, socket.socket() as local:
        public.bind(("0.0.0.0", 0))
        public.listen()
        local.bind(("127.0.0.1", 0))
        local.listen()
        pport, lport = public.getsockname()[1], local.getsockname()[1]
        out = check_firewall(FirewallOptions())
    listeners = {f.value for f in out.findings if f.check == "security.firewall.unexpected_listener"}
    assert pport in listeners and lport not in listeners
    tools = [t for t in ("nft", "iptables", "ufw") if shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")]
    if not tools:  # this container: no packet filter at all
        assert "security.firewall.missing" in {f.check for f in out.findings}
    allowed = check_firewall(FirewallOptions(allowed_ports=[pport], require_firewall=False))
    assert pport not in {f.value for f in allowed.findings}


_FIREWALL_CHILD = """
import json
from upkeeper.tasks.security.firewall import FirewallOptions, check_firewall
out = check_firewall(FirewallOptions(allowed_processes=["python3", "python3.11", "python"], allowed_ports=list(range(1, 65536))))
print(json.dumps({"summary": out.summary, "findings": [[f.check, f.severity.value, f.message] for f in out.findings]}))
"""


def test_a_firewall_that_cannot_be_read_is_unknown_not_inactive() -> None:
    """The real nft, as root and as root without CAP_NET_ADMIN (a container, a capability-less unit): that
    nft's "Operation not permitted" was reported "firewall present but inactive", a critical false alarm."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs nft (nftables), root and setpriv")
    if {shutil.which("iptables", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")),
            shutil.which("ufw", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))} != {None}:
        pytest.skip("iptables or ufw is installed too: this test wants nft alone")
    import json

    def run(*prefix: str) -> dict[str, Any]:
        res = subprocess.run([*prefix, sys.executable, "-c", _FIREWALL_CHILD], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert res.returncode == 0, res.stderr
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    as_root = run()
    listing = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True)
    if listing.returncode != 0:  # a container whose root has no CAP_NET_ADMIN either
        assert [c for c, _s, _m in as_root["findings"]] == ["security.firewall.unreadable"], as_root
    elif '"hook": "input"' not in listing.stdout:  # this machine filters nothing: inactive, and said so
        assert [c for c, _s, _m in as_root["findings"]] == ["security.firewall.inactive"], as_root
    no_cap = run("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    assert [(c, sev) for c, sev, _m in no_cap["findings"]] == [("security.firewall.unreadable", "warning")], no_cap
    assert "Operation not permitted" in no_cap["findings"][0][2]
    assert "unknown (could not be read)" in no_cap["summary"]


def test_firewall_parsers() -> None:
    ufw = "Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing), disabled (routed)\n"
    s = parse_ufw_status(ufw)
    assert (s.active, s.input_policy) == (True, "deny")
    assert parse_ufw_status("Status: inactive\n").active is False
    ipt = "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n"
    assert parse_iptables_s(ipt).active is False
    ipt2 = "-P INPUT DROP\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
    s2 = parse_iptables_s(ipt2)
    assert (s2.active, s2.input_policy) == (True, "drop")
    nft = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "filter"}},'
           '{"chain": {"family": "inet", "table": "filter", "name": "input", "type": "filter", "hook": "input",'
           ' "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table": "filter", "chain": "input"}}]}')
    s3 = parse_nft_json(nft)
    assert (s3.active, s3.input_policy) == (True, "drop")


def test_updates_against_real_apt_state() -> None:
    if not shutil.which("apt-get"):
        pytest.skip("not a Debian/Ubuntu host")
    out = check_updates(UpdatesOptions())
    checks = {f.check: f for f in out.findings}
    assert 0 <= out.metrics["security"] <= out.metrics["pending"]
    assert ("security.updates.security_pending" in checks) == (out.metrics["security"] > 0)
    if out.metrics["security"]:
        # cross-check one reported package with apt-cache: its candidate differs from the installed version
        pkg = checks["security.updates.security_pending"].data["packages"][0]
        policy = subprocess.run(["apt-cache", "policy", pkg["name"]], capture_output=True, text=True,
                                env={**os.environ, "LC_ALL": "C"}, check=True).stdout
        installed = policy.split("Installed:", 1)[1].split()[0]
        candidate = policy.split("Candidate:", 1)[1].split()[0]
        assert installed != candidate and candidate == pkg["candidate"]
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "unattended-upgrades"], capture_output=True,
                               text=True).stdout
    if "install ok installed" not in installed:
        assert "security.updates.unattended_upgrades" in checks
    assert ("security.updates.reboot_required" in checks) == Path("/var/run/reboot-required").exists()


def test_apt_simulation_parser_and_unattended_setting(tmp_path: Path) -> None:
    text = ("Inst libssl3 [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])\n"
            "Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])\n"
            "Conf libssl3 (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])\n")
    plan = parse_apt_simulation(text)
    assert [p["name"] for p in plan.packages] == ["libssl3", "tzdata"]
    assert [p["name"] for p in plan.security] == ["libssl3"]
    (tmp_path / "20auto-upgrades").write_text('APT::Periodic::Update-Package-Lists "1";\n'
                                              'APT::Periodic::Unattended-Upgrade "1";\n')
    assert unattended_enabled(tmp_path)[0] is True
    (tmp_path / "99off").write_text('APT::Periodic::Unattended-Upgrade "0";\n')
    assert unattended_enabled(tmp_path)[0] is False


def test_pending_security_updates_escalate_past_the_sla() -> None:
    from datetime import UTC, datetime, timedelta

    plan = parse_apt_simulation(
        "Inst libssl3 [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])\n"
        "Inst openssh-server [1:9.2p1-2+deb12u2] (1:9.2p1-2+deb12u3 Debian-Security:12/stable-security [amd64])\n")
    state, now, opts = MemoryState(), datetime(2025, 5, 1, tzinfo=UTC), UpdatesOptions()
    first = sla_findings(plan.security, opts, state, now)
    assert [(f.check, f.severity, f.value) for f in first.findings] == [
        ("security.updates.security_pending", Severity.WARNING, 2)]
    later = sla_findings(plan.security, opts, state, now + timedelta(hours=73))  # high: 72 h
    assert [(f.check, f.severity, f.value) for f in later.findings] == [
        ("security.updates.security_overdue", Severity.CRITICAL, 2)]
    done = sla_findings([], opts, state, now + timedelta(hours=80))
    assert done.findings == [] and all(e["fixed_at"] for e in state.get("vulns").values())


def test_processes_live(nginx: NginxServer, redis_server: RedisServer) -> None:
    out = evaluate_settled(snapshot, ProcessesOptions())
    root = {f.subject.split(" ")[0] for f in out.findings}
    # nginx: master as root, workers as nobody — a privilege-dropping master is fine.  Only this fixture's
    # master is judged: the snapshot is of the whole machine, where other tests start and stop nginx servers
    # at the same time (a master caught before its workers exist, or after they left, runs as root alone).
    # Two snapshots a second apart: an earlier test's reload forks workers as root that drop privileges a
    # moment later (CI once caught exactly that with a single snapshot)
    master = int((nginx.base / "nginx.pid").read_text())
    assert master in {p.pid for p in snapshot() if p.name == "nginx"}
    assert not [f for f in out.findings if f.data.get("pid") == master]
    if os.geteuid() == 0:  # the suite starts redis-server as root here: a real finding
        assert "redis-server" in root
        f = next(f for f in out.findings if f.subject.startswith("redis-server"))
        assert f.severity is Severity.CRITICAL
    allowed = evaluate_settled(snapshot, ProcessesOptions(allow_root=["redis-server"]))
    assert "redis-server" not in {f.subject.split(" ")[0] for f in allowed.findings}


def test_processes_worker_as_root_is_critical() -> None:
    procs = [Proc(10, "nginx", "root", 1, "nginx: master"), Proc(11, "nginx", "root", 10, "nginx: worker"),
             Proc(20, "php-fpm8.2", "root", 1, "php-fpm: master"), Proc(21, "php-fpm8.2", "www-data", 20, "pool")]
    out = evaluate(procs, ProcessesOptions())
    assert [(f.subject, f.severity) for f in out.findings] == [
        ("nginx (pid 10)", Severity.WARNING), ("nginx (pid 11)", Severity.CRITICAL)]


def test_processes_root_seen_once_is_not_reported() -> None:
    """A worker caught between fork and setuid (a reload) is root in one snapshot only: not a finding; a
    worker still root a second later is."""
    settling = [Proc(10, "nginx", "root", 1, "nginx: master"), Proc(11, "nginx", "root", 10, "nginx: worker"),
                Proc(12, "nginx", "root", 10, "nginx: worker")]
    settled = [Proc(10, "nginx", "root", 1, "nginx: master"), Proc(11, "nginx", "nobody", 10, "nginx: worker"),
               Proc(12, "nginx", "root", 10, "nginx: worker")]
    snaps = iter([settling, settled])
    out = evaluate_settled(lambda: next(snaps), ProcessesOptions(), settle=0)
    assert [f.subject for f in out.findings] == ["nginx (pid 10)", "nginx (pid 12)"]
    assert out.metrics["root_processes"] == 2 and "1 seen as root only briefly" in out.summary
    fine = [Proc(10, "nginx", "root", 1, "nginx: master"), Proc(11, "nginx", "nobody", 10, "nginx: worker")]
    snaps = iter([settling, fine])
    out = evaluate_settled(lambda: next(snaps), ProcessesOptions(), settle=0)
    assert out.findings == [] and "running as root" in out.summary
    calls: list[int] = []

    def once() -> list[Proc]:
        calls.append(1)
        return fine
    assert evaluate_settled(once, ProcessesOptions(), settle=0).findings == [] and len(calls) == 1


def test_permissions_planted_files(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "node_modules" / "x").mkdir(parents=True)
    env = app / ".env"
    env.write_text("DB_PASSWORD=hunter2\n")
    os.chmod(env, 0o644)
    key = app / "config" / "tls.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    os.chmod(key, 0o666)
    age = tmp_path / "backup-identity.txt"
    age.write_text("# created: 2025-01-01\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n")
    os.chmod(age, 0o640)
    ok = app / "config" / "good.pem"
    ok.write_text("-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n")
    os.chmod(ok, 0o600)
    ignored = app / "node_modules" / "x" / ".env"
    ignored.write_text("A=1\n")
    os.chmod(ignored, 0o644)
    opts = PermissionsOptions(paths=[str(age)], scan_dirs=[])
    out = check_permissions(opts, [str(app)])
    got = {f.subject: f for f in out.findings}
    assert set(got) == {str(env), str(key)}
    assert got[str(key)].value == "0666" and "writable by every user" in got[str(key)].message
    assert got[str(env)].data["kind"] == "environment file"
    assert out.metrics["secrets_checked"] == 4  # .env, tls.key, good.pem, the age identity
    strict = check_permissions(PermissionsOptions(paths=[str(age)], group_readable_warns=True), [])
    assert [(f.subject, f.severity) for f in strict.findings] == [(str(age), Severity.WARNING)]
    assert "hunter2" not in repr(out.findings)


def test_a_scan_cut_short_by_max_files_says_so(tmp_path: Path) -> None:
    """A scan that reached max_files stopped without a word: an exposed .env after the limit went unchecked and the
    run said '0 secret file(s) checked, 0 readable by others' and passed."""
    app = tmp_path / "app"
    (app / "uploads").mkdir(parents=True)
    for i in range(40):
        (app / "uploads" / f"photo{i}.jpg").write_text("x")
    env = app / ".env"
    env.write_text("DB_PASSWORD=hunter2\n")
    os.chmod(env, 0o644)
    full = check_permissions(PermissionsOptions(paths=[], max_files=1000), [str(app)])
    assert [f.check for f in full.findings] == ["security.permissions.secret_readable"]
    cut = check_permissions(PermissionsOptions(paths=[], max_files=10), [str(app / "uploads"), str(app)])
    f = [f for f in cut.findings if f.check == "security.permissions.scan_incomplete"]
    assert len(f) == 1 and f[0].severity is Severity.WARNING and f[0].subject == str(app / "uploads")
    assert "max_files" in cut.summary and cut.metrics["exposed"] == 0


def test_permissions_run_unprivileged_says_what_it_could_not_look_into(request: pytest.FixtureRequest) -> None:
    """Run as an unprivileged user (say 'upkeeper'), glob and os.walk passed over the directories it cannot
    search without a word, and a secret it could stat but not read (a host key, 0600 root) was dropped: the run
    said '0 secret file(s) checked, 0 readable by others' and passed, where root checked them all.  Now a key
    it cannot read is judged by its mode all the same, and an info finding names the directories it could not
    look into (and says how to check them)."""
    import json
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="upkeeper-perms-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"
    for d in ("vault", "app/private"):
        (base / d).mkdir(parents=True)
        (base / d).chmod(0o700)
        (base / d / ".env").write_text("A=1\n")
    (base / "app").chmod(0o755)
    (base / "vault" / "tls.key").write_text(pem)
    (base / "ssh_host_ed25519_key").write_text(pem)
    (base / "ssh_host_ed25519_key").chmod(0o600)
    (base / "app" / ".env").write_text("DB_PASSWORD=hunter2\n")
    (base / "app" / ".env").chmod(0o644)
    script = f"""
import json
from upkeeper.tasks.security.permissions import PermissionsOptions, check_permissions
opts = PermissionsOptions(paths=[{str(base / "vault" / "*.key")!r}, {str(base / "ssh_host_*_key")!r}])
out = check_permissions(opts, [{str(base / "app")!r}])
print(json.dumps({{"metrics": out.metrics, "summary": out.summary,
                  "findings": [[f.check, f.severity.value, f.subject, f.message, f.data] for f in out.findings]}}))
"""
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                          script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              sys.path)}, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    by = {f[0]: f for f in out["findings"]}
    assert set(by) == {"security.permissions.secret_readable", "security.permissions.not_looked"}, out
    assert by["security.permissions.secret_readable"][2] == str(base / "app" / ".env")
    check, severity, _subject, message, data = by["security.permissions.not_looked"]
    assert severity == "info" and data == {"directories": [str(base / "vault"), str(base / "app" / "private")],
                                           "user": "nobody"}, by
    assert "could not look into 2 director(y/ies) as nobody" in message
    assert out["metrics"]["secrets_checked"] == 2  # the host key (by its mode) and app/.env
    assert out["summary"].endswith("; 2 director(y/ies) not readable by this user (not checked)")


def test_a_public_listener_of_another_user_seen_unprivileged_says_why_its_process_is_unknown() -> None:
    """Run as an unprivileged user, psutil cannot name another user's socket's process: the finding said "a process
    (pid ?) listens on …" -- and a listener of an allowed process (allowed_processes) was reported as unexpected
    with no word on why.  It now says the process is another user's, which only root may name, and to run the
    check as root when it may be one of allowed_processes."""
    import json

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    script = """
import json, sys
from upkeeper.tasks.security.firewall import FirewallOptions, check_firewall
out = check_firewall(FirewallOptions(allowed_processes=["python3", "python3.11", "python"], require_firewall=False))
print(json.dumps({str(f.value): [f.message, f.remediation] for f in out.findings
                  if f.check == "security.firewall.unexpected_listener"}))
"""
    with socket.socket() as public:  # root's, as nginx's master is
        public.bind(("0.0.0.0", 0))
        public.listen()
        port = public.getsockname()[1]
        res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                              script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  sys.path)}, timeout=60)
    assert res.returncode == 0, res.stderr
    message, fix = json.loads(res.stdout)[str(port)]
    assert message == (f"a process nobody cannot see (another user's: only root may name it) listens on public "
                       f"address 0.0.0.0:{port}, which is not an allowed port"), message
    assert fix.endswith("; if it is one of allowed_processes, run this check as root (nobody cannot tell which "
                        "process it is)"), fix
