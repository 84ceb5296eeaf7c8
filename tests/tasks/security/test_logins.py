"""security.logins on a realistic auth.log with a brute-force run, read incrementally across runs."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.core.task import MemoryState, Severity
from upkeeper.tasks.security.logins import LoginsOptions, check_logins, parse_line

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ATTACKER = "203.0.113.77"


def syslog(ts: datetime, msg: str, prog: str = "sshd", pid: int = 4242) -> str:
    return f"{ts:%b} {ts.day:>2} {ts:%H:%M:%S} web1 {prog}[{pid}]: {msg}"


def generate_auth_log(path: Path, start: datetime) -> None:
    """A day of a web server's auth.log: cron sessions, sudo, key logins, scanner noise and one brute force."""
    rnd = random.Random(7)
    lines = []
    t = start
    for _ in range(60):  # background noise: cron and sudo
        t += timedelta(seconds=rnd.randint(30, 300))
        lines.append(syslog(t, "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", "CRON"))
        if rnd.random() < 0.2:
            lines.append(syslog(t, "deploy : TTY=pts/0 ; PWD=/srv/app ; USER=root ; COMMAND=/usr/bin/systemctl "
                                   "reload nginx", "sudo"))
    t = start + timedelta(hours=2)
    lines.append(syslog(t, "Accepted publickey for deploy from 198.51.100.10 port 50122 ssh2: ED25519 SHA256:abc"))
    lines.append(syslog(t, "pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"))
    for i in range(3):  # a scanner trying twice: below the threshold
        lines.append(syslog(t + timedelta(seconds=i), "Invalid user admin from 192.0.2.5 port 40000"))
    t = start + timedelta(hours=3)
    users = ["root", "admin", "ubuntu", "test", "oracle", "postgres", "git", "deploy"]
    for i in range(40):  # the brute force: 40 attempts in ~3 minutes
        ts = t + timedelta(seconds=4 * i)
        u = users[i % len(users)]
        if u in ("root", "deploy"):
            lines.append(syslog(ts, f"Failed password for {u} from {ATTACKER} port {50000 + i} ssh2"))
        else:
            lines.append(syslog(ts, f"Invalid user {u} from {ATTACKER} port {50000 + i}"))
            lines.append(syslog(ts, f"Failed password for invalid user {u} from {ATTACKER} port {50000 + i} ssh2"))
    lines.append(syslog(t + timedelta(minutes=4), f"Disconnecting authenticating user root {ATTACKER} port 50999: "
                                                   "Too many authentication failures [preauth]"))
    lines.append(syslog(start + timedelta(hours=5), "Accepted password for root from 198.51.100.10 port 50200 ssh2"))
    path.write_text("\n".join(lines) + "\n")


def test_bruteforce_root_login_and_new_sources(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    generate_auth_log(log, NOW - timedelta(hours=8))
    state = MemoryState()
    opts = LoginsOptions(source="file", auth_log=str(log))
    out = check_logins(opts, state, NOW)
    brute = [f for f in out.findings if f.check == "security.logins.bruteforce"]
    assert [f.subject for f in brute] == [ATTACKER]  # the scanner's 3 tries stay below fail2ban's 5
    assert brute[0].value == 41 and brute[0].data["max_in_window"] == 41
    assert set(brute[0].data["users"]) == {"root", "admin", "ubuntu", "test", "oracle", "postgres", "git", "deploy"}
    root = [f for f in out.findings if f.check == "security.logins.root_login"]
    assert len(root) == 1 and root[0].severity is Severity.CRITICAL  # root with a password
    assert out.metrics["accepted"] == 2
    # first run: sources are learned, reported as info only
    assert {f.severity for f in out.findings if f.check == "security.logins.new_source"} == {Severity.INFO}

    # second run: only new lines are read; a login from an unseen address is a warning
    with log.open("a") as fh:
        fh.write(syslog(NOW + timedelta(minutes=5), "Accepted publickey for deploy from 198.51.100.10 port 1 ssh2") + "\n")
        fh.write(syslog(NOW + timedelta(minutes=6), "Accepted publickey for deploy from 192.0.2.200 port 2 ssh2") + "\n")
    again = check_logins(opts, state, NOW + timedelta(minutes=10))
    assert not [f for f in again.findings if f.check == "security.logins.bruteforce"]
    new = [f for f in again.findings if f.check == "security.logins.new_source"]
    assert [(f.subject, f.severity) for f in new] == [("192.0.2.200", Severity.WARNING)]
    assert again.metrics["accepted"] == 2 and again.metrics["failed"] == 0


def test_rotated_log_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    generate_auth_log(log, NOW - timedelta(hours=8))
    state = MemoryState()
    opts = LoginsOptions(source="file", auth_log=str(log))
    check_logins(opts, state, NOW)
    shutil.move(log, tmp_path / "auth.log.1")  # logrotate: a new inode
    log.write_text(syslog(NOW + timedelta(minutes=1), f"Failed password for root from {ATTACKER} port 1 ssh2") + "\n")
    out = check_logins(opts, state, NOW + timedelta(minutes=2))
    assert out.metrics["failed"] == 1


def test_a_line_read_while_it_is_written_is_read_whole_next_time(tmp_path: Path) -> None:
    """The log is read up to its end, which may be the middle of a line sshd is writing (or where max_bytes
    cut): the offset was stored after the half line, so neither run saw the root login it announced."""
    log = tmp_path / "auth.log"
    line = syslog(NOW, "Accepted password for root from 203.0.113.9 port 2222 ssh2")
    log.write_text(syslog(NOW, "Invalid user x from 192.0.2.1 port 1") + "\n" + line[:-16])  # sshd mid-write
    state = MemoryState()
    opts = LoginsOptions(source="file", auth_log=str(log))
    check_logins(opts, state, NOW)
    with open(log, "a") as fh:
        fh.write(line[-16:] + "\n")
    out = check_logins(opts, state, NOW + timedelta(minutes=1))
    root = [f for f in out.findings if f.check == "security.logins.root_login"]
    assert root and root[0].severity is Severity.CRITICAL  # root with a password


def test_journal_source() -> None:
    if not shutil.which("journalctl"):
        pytest.skip("journalctl is not installed here")
    import subprocess

    probe = subprocess.run(["journalctl", "-n", "1", "-q", "--no-pager"], capture_output=True, text=True)
    if not probe.stdout.strip():
        pytest.skip("journalctl works but this container has no systemd journal (no journal files): "
                    "the journal path cannot be exercised here")
    out = check_logins(LoginsOptions(source="journal"), MemoryState(), datetime.now(UTC))
    assert "journal" in out.summary


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_crashes(line: str) -> None:
    parse_line(line, 2025, NOW)


@given(st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True),
       st.ip_addresses(v=4).map(str), st.integers(1, 65535))
def test_parser_reads_failed_lines(user: str, ip: str, port: int) -> None:
    ev = parse_line(syslog(NOW, f"Failed password for invalid user {user} from {ip} port {port} ssh2"), 2025, NOW)
    assert ev is not None and (ev.kind, ev.user, ev.ip) == ("failed", user, ip)


def test_iso_timestamps_of_newer_rsyslog() -> None:
    ev = parse_line("2025-03-14T11:00:00.123456+01:00 web1 sshd[1]: Accepted publickey for a from 10.0.0.1 port 2 ssh2",
                    2025, NOW)
    assert ev is not None and ev.ts == datetime(2025, 3, 14, 10, 0, 0, 123456, tzinfo=UTC)


def test_journal_json_format() -> None:
    """The lines `journalctl -u ssh -o json` prints (fields as journald stores them)."""
    from upkeeper.tasks.security.logins import parse_journal_json

    def entry(i: int, msg: object) -> str:
        import json

        return json.dumps({"__CURSOR": f"s=abc;i={i}", "__REALTIME_TIMESTAMP": str(1741946400000000 + i * 1000000),
                           "_SYSTEMD_UNIT": "ssh.service", "SYSLOG_IDENTIFIER": "sshd", "_PID": "812",
                           "MESSAGE": msg})

    text = "\n".join([entry(1, "Failed password for root from 203.0.113.77 port 50000 ssh2"),
                      entry(2, list(b"Invalid user admin from 203.0.113.77 port 50001")),
                      entry(3, "Server listening on 0.0.0.0 port 22."), "not json",
                      entry(4, "Accepted publickey for deploy from 198.51.100.10 port 50122 ssh2: ED25519 SHA256:x")])
    events, cursor = parse_journal_json(text)
    assert [(e.kind, e.ip) for e in events] == [("failed", "203.0.113.77"), ("invalid", "203.0.113.77"),
                                               ("accepted", "198.51.100.10")]
    assert cursor == "s=abc;i=4"
    assert events[0].ts == datetime(2025, 3, 14, 10, 0, 1, tzinfo=UTC)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["inode", "offset"]), c, max_size=2), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(_json, _json, st.booleans())
@example({"inode": "INODE", "offset": "x"}, None, False)  # int('x'): ValueError
@example({"inode": "INODE", "offset": -5}, None, False)  # seek(-5): ValueError
@example(None, 5, False)  # set(5): TypeError
@example(None, [[1]], False)  # unhashable
def test_a_damaged_saved_state_is_read_from_the_start(tmp_path_factory: pytest.TempPathFactory, pos: object,
                                                      known: object, known_is_list: bool) -> None:
    """The read position and the known sources security.logins keeps in history (another version's, or damaged)
    were used as read: an offset that is no number or negative, known_ips that is not a list of addresses, made
    the task fail at every run, for ever (the state was never written again).  Now such a state is a first
    run's: the log is read from the start, the sources learnt again."""
    log = tmp_path_factory.mktemp("auth") / "auth.log"
    generate_auth_log(log, NOW - timedelta(hours=8))
    if isinstance(pos, dict) and pos.get("inode") == "INODE":
        pos = {**pos, "inode": log.stat().st_ino}
    state = MemoryState()
    state.set("authlog_pos", pos)
    state.set("known_ips", [known] if known_is_list and isinstance(known, str) else known)
    out = check_logins(LoginsOptions(source="file", auth_log=str(log)), state, NOW)
    assert out.metrics["failed"] > 0 or "from offset" in out.summary
    assert state.get("authlog_pos") == {"inode": log.stat().st_ino, "offset": log.stat().st_size}
    assert all(isinstance(ip, str) for ip in state.get("known_ips"))


def test_run_unprivileged_an_unreadable_auth_log_or_journal_is_an_error_saying_which_group(
        request: pytest.FixtureRequest) -> None:
    """Run as an unprivileged user: an auth.log it may not read (Debian: root:adm 0640) failed the run with a bare
    "PermissionError: [Errno 13] …", and a system journal it may not read made journalctl -q show only the user's
    own entries, without a word: the run said 'ok 0 successful and 0 failed SSH login(s)'.  Both are now an error
    naming the file, the user and the group to add it to (or to run as root)."""
    import grp
    import json
    import os
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    adm = grp.getgrnam("adm").gr_gid  # (Debian's; the CI image is Debian)
    base = Path(tempfile.mkdtemp(prefix="upkeeper-logins-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    log = base / "auth.log"
    log.write_text("Dec  6 10:00:00 web sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2\n")
    os.chown(log, 0, adm)  # root:adm, as rsyslog makes it
    log.chmod(0o640)
    machine = base / "journal" / "0123456789abcdef0123456789abcdef"
    machine.mkdir(parents=True)
    (machine / "system.journal").write_bytes(b"LPKSHHRH")
    (machine / "system.journal").chmod(0o640)
    (base / "journal").chmod(0o755)
    machine.chmod(0o755)
    script = f"""
import json
from datetime import UTC, datetime
from upkeeper.core.task import MemoryState
from upkeeper.errors import TaskError
from upkeeper.tasks.security import logins
logins.JOURNAL_DIRS = ({str(base / "journal")!r},)
out = []
for source in ("file", "journal"):
    opts = logins.LoginsOptions(source=source, auth_log={str(log)!r})
    try:
        res = logins.check_logins(opts, MemoryState(), datetime.now(UTC))
        out.append(["ok", res.summary, ""])
    except TaskError as exc:
        out.append(["error", exc.message, exc.hint])
print(json.dumps(out))
"""
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                          script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              sys.path)}, timeout=60)
    assert res.returncode == 0, res.stderr
    (f_status, f_msg, f_hint), (j_status, j_msg, j_hint) = json.loads(res.stdout)
    assert f_status == "error" and f_msg.startswith(f"cannot read {log} as nobody: permission denied (mode 0640, "
                                                    "group adm): no login was checked"), f_msg
    assert "usermod -aG adm nobody" in f_hint and "run this check as root" in f_hint, f_hint
    assert j_status == "error", j_msg
    assert j_msg.startswith(f"cannot read the system journal as nobody: {machine / 'system.journal'} "), j_msg
    assert "usermod -aG systemd-journal nobody" in j_hint, j_hint
