"""security.ssh: weak and hardened sshd configuration files evaluated by ``sshd -T -f FILE``, the
file-reading fallback, and the banner/algorithm probe against a running sshd."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.core.task import Severity
from upkeeper.errors import TaskError
from upkeeper.sandbox.sshd import SshServer
from upkeeper.tasks.security._sshproto import ProbeError, parse_kexinit
from upkeeper.tasks.security.ssh import (
    LYNIS_SSH_7408,
    SshOptions,
    check_config,
    check_probe,
    evaluate_value,
    read_config_file,
)

WEAK = """\
HostKey {key}
PermitRootLogin yes
PasswordAuthentication yes
PermitEmptyPasswords yes
MaxAuthTries 10
X11Forwarding yes
AllowAgentForwarding yes
AllowTcpForwarding yes
LogLevel QUIET
"""
HARDENED = """\
HostKey {key}
PermitRootLogin no
PasswordAuthentication no
PermitEmptyPasswords no
KbdInteractiveAuthentication no
MaxAuthTries 3
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
LogLevel VERBOSE
ClientAliveInterval 300
ClientAliveCountMax 2
"""


@pytest.fixture(scope="module")
def hostkey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sshkeys")
    key = d / "host_ed25519"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {key}")  # noqa: S605 - test setup, fixed argv
    return key


@pytest.fixture(scope="module")
def sshd_t_available() -> None:
    # as root, sshd -T insists on its privilege-separation directory (it exists wherever sshd runs)
    if os.geteuid() == 0 and not Path("/run/sshd").exists():
        Path("/run/sshd").mkdir(mode=0o755)


def write(tmp_path: Path, text: str, key: Path) -> str:
    p = tmp_path / "sshd_config"
    p.write_text(text.format(key=key))
    return str(p)


def test_weak_config_via_sshd_t(tmp_path: Path, hostkey: Path, sshd_t_available: None) -> None:
    out = check_config(SshOptions(config=write(tmp_path, WEAK, hostkey)))
    sev = {f.check: f.severity for f in out.findings}
    assert sev == {
        "security.ssh.permitrootlogin": Severity.CRITICAL,
        "security.ssh.passwordauthentication": Severity.CRITICAL,  # passwords with root login allowed
        "security.ssh.permitemptypasswords": Severity.CRITICAL,
        "security.ssh.maxauthtries": Severity.WARNING,
        "security.ssh.x11forwarding": Severity.WARNING,
        "security.ssh.allowagentforwarding": Severity.WARNING,
        "security.ssh.allowtcpforwarding": Severity.WARNING,
        "security.ssh.loglevel": Severity.WARNING,
        "security.ssh.clientaliveinterval": Severity.WARNING,  # default 0: no idle timeout
    }
    assert all(f.data["source"] == "sshd -T" for f in out.findings)
    # sshd -T reports its own reading of the file: QUIET is an alias it prints as SILENT
    assert next(f for f in out.findings if f.check.endswith("loglevel")).value == "SILENT"


def test_hardened_config_via_sshd_t(tmp_path: Path, hostkey: Path, sshd_t_available: None) -> None:
    out = check_config(SshOptions(config=write(tmp_path, HARDENED, hostkey)))
    assert out.findings == []
    assert out.metrics["options_good"] == out.metrics["options_checked"] == 9
    full = check_config(SshOptions(config=write(tmp_path, HARDENED, hostkey), options=["all"]))
    # the full Lynis table also flags what the hardened file leaves at OpenSSH defaults (e.g. Port 22)
    assert "security.ssh.port" in {f.check for f in full.findings}


def test_fallback_reads_includes_first_value_wins(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-hard.conf").write_text("PasswordAuthentication no\nPermitRootLogin no\n")
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/conf.d/*.conf\nPasswordAuthentication yes\nX11Forwarding yes\n"
                    "Match User backup\n  PermitRootLogin yes\n")
    values = read_config_file(str(main))
    assert values["passwordauthentication"] == "no"  # the include came first
    assert values["permitrootlogin"] == "no"  # Match blocks do not change the global value
    out = check_config(SshOptions(config=str(main), sshd="/nonexistent/sshd"))
    checks = {f.check for f in out.findings}
    assert "security.ssh.x11forwarding" in checks and "security.ssh.passwordauthentication" not in checks
    assert "security.ssh.source" in checks


def test_fallback_reads_settings_after_match_all_as_global(tmp_path: Path) -> None:
    """'Match all' closes a Match block: the fallback parser kept skipping to the end of the file, so a
    'PermitRootLogin yes' after it was read as OpenSSH's default and the critical finding went missing."""
    main = tmp_path / "sshd_config"
    main.write_text("X11Forwarding no\nMatch User backup\n  ForceCommand internal-sftp\n  PermitRootLogin no\n"
                    "Match all\nPermitRootLogin yes\n")
    assert read_config_file(str(main))["permitrootlogin"] == "yes"
    out = check_config(SshOptions(config=str(main), sshd="/nonexistent/sshd"))
    root = [f for f in out.findings if f.check == "security.ssh.permitrootlogin"]
    assert root and root[0].severity is Severity.CRITICAL
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd:  # OpenSSH's own evaluation agrees
        key = tmp_path / "hostkey"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        real = tmp_path / "with_key"
        real.write_text(f"HostKey {key}\n" + main.read_text())
        res = subprocess.run([sshd, "-T", "-f", str(real)], capture_output=True, text=True)
        if res.returncode == 0:
            assert "permitrootlogin yes" in res.stdout


def test_lynis_comparisons() -> None:
    rules = {r.option: r for r in LYNIS_SSH_7408}
    assert evaluate_value(rules["MaxAuthTries"], "3") == "GOOD"
    assert evaluate_value(rules["MaxAuthTries"], "5") == "MIDSCORED"
    assert evaluate_value(rules["MaxAuthTries"], "7") == "WEAK"
    assert evaluate_value(rules["PermitRootLogin"], "prohibit-password") == "GOOD"
    assert evaluate_value(rules["PermitRootLogin"], "yes") == "WEAK"
    assert evaluate_value(rules["LogLevel"], "INFO") == "MIDSCORED"
    assert evaluate_value(rules["AllowTcpForwarding"], "local") == "MIDSCORED"
    assert evaluate_value(rules["Port"], "2222") == "GOOD"


@pytest.mark.parametrize("extra,weak", [
    ("", {"security.ssh.weak_mac"}),  # OpenSSH's default list still ends with hmac-sha1, which ssh-audit fails
    ("MACs -hmac-sha1,hmac-sha1-etm@openssh.com\n", set()),
    ("Ciphers +3des-cbc\nMACs +hmac-sha1\nKexAlgorithms +diffie-hellman-group14-sha1\n",
     {"security.ssh.weak_enc", "security.ssh.weak_mac", "security.ssh.weak_kex"}),
])
def test_probe_running_sshd(services_dir: Path, extra: str, weak: set[str]) -> None:
    server = SshServer(services_dir / f"sshd-probe-{len(extra)}", extra_config=extra).start()
    proc = server.proc
    try:
        out = check_probe(f"127.0.0.1:{server.port}", 10)
    finally:
        server.stop()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
    banner = next(f for f in out.findings if f.check == "security.ssh.banner")
    assert banner.value.startswith("SSH-2.0-OpenSSH_")
    warned = {f.check for f in out.findings if f.severity is Severity.WARNING}
    assert warned == weak
    if "security.ssh.weak_enc" in weak:
        enc = next(f for f in out.findings if f.check == "security.ssh.weak_enc" and f.severity is Severity.WARNING)
        assert "3des-cbc" in enc.message and "Ciphers -3des-cbc" in enc.remediation


def test_kexinit_parser_rejects_garbage() -> None:
    with pytest.raises(ProbeError):
        parse_kexinit(b"\x15" + b"\x00" * 40)
    with pytest.raises(ProbeError):
        parse_kexinit(b"\x14" + b"\x00" * 16 + b"\x00\x00\x10\x00abc")


@pytest.mark.parametrize("case", ["missing", "directory", "included directory", "included unreadable"])
def test_fallback_names_an_unreadable_config_or_include(tmp_path: Path, case: str) -> None:
    """Without 'sshd -T' the config is read by hand: a missing config, a directory, or an Include whose glob
    matches a directory ('Include /etc/ssh/sshd_config.d') or a file that cannot be read (a dangling link, one
    upkeeper's user may not read) ended the check
    in 'could not run: IsADirectoryError: [Errno 21] ...' without saying which Include.  Now the message names the
    file, the Include line, and how to fix it."""
    (tmp_path / "conf.d").mkdir()
    secret = tmp_path / "conf.d" / "gone.conf"
    secret.symlink_to(tmp_path / "removed.conf")  # (unreadable even by root: os.access cannot fake that)
    main = tmp_path / "sshd_config"
    include = {"included directory": f"{tmp_path}/conf.d", "included unreadable": f"{tmp_path}/conf.d/*.conf"}
    main.write_text(f"X11Forwarding no\nInclude {include.get(case, '/nonexistent-dir/*.conf')}\n")
    config = {"missing": str(tmp_path / "nope"), "directory": str(tmp_path)}.get(case, str(main))
    out = check_config_guarded(SshOptions(config=config, sshd="/nonexistent/sshd"))
    (failed,) = [f for f in out.findings if f.check == "security.ssh.check_failed"]
    named = {"missing": config, "directory": config, "included directory": f"{tmp_path}/conf.d",
             "included unreadable": str(secret)}[case]
    assert f"cannot read the sshd config {named}" in failed.message and "Error" not in failed.message
    if case.startswith("included"):
        assert f"(included at {main}:2)" in failed.message
    assert "set 'config'" in failed.remediation


def check_config_guarded(options: SshOptions) -> Any:
    from upkeeper.tasks.security._common import guarded

    return guarded("security.ssh", options.config, lambda: check_config(options))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.text(alphabet=st.sampled_from(list("abcPermitRootLogin =#\t\"'yesno*?[]")), max_size=30),
    st.sampled_from(["Match all", "Match User x", "Include DIR", "Include DIR/*.conf", "Include DIR/none*",
                     "Include", "=", "= x", "PermitRootLogin", "Include DIR/sshd_config"])), max_size=8))
@example(["Include DIR"])  # the directory itself: IsADirectoryError
@example(["Include DIR/sshd_config"] * 3)  # itself, three times: 3**8 readings
def test_fallback_reader_returns_values_or_names_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                         lines: list[str]) -> None:
    d = tmp_path_factory.mktemp("sshd")
    (d / "a.conf").write_text("PasswordAuthentication no\n")
    main = d / "sshd_config"
    main.write_text("\n".join(ln.replace("DIR", str(d)) for ln in lines) + "\n")  # (it may include itself)
    try:
        values = read_config_file(str(main))
    except TaskError as exc:
        assert "cannot read the sshd config" in exc.message and str(d) in exc.message
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


def test_fallback_reads_a_file_included_again_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config whose Include glob matches the config itself (or includes one file several times) was read
    again at every level, 8 deep: three such Includes made 3**8 = 6561 readings of the file.  Now once: first
    value wins, so a second reading adds nothing."""
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/*\nInclude {main}\nInclude {tmp_path}/sshd_*\nPermitRootLogin yes\n")
    reads: list[str] = []
    real = Path.read_text

    def counting(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    assert read_config_file(str(main))["permitrootlogin"] == "yes"
    assert reads == [str(main)]
