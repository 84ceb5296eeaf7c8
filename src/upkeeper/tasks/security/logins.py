"""security.logins: SSH login activity from auth.log or the systemd journal.

Failed and successful logins, brute-force sources (at least ``bruteforce_failures``
failures from one IP within ``bruteforce_window``, fail2ban's ``maxretry``/``findtime``
idea), root logins, and source IPs that logged in successfully for the first time since
upkeeper started watching (kept in the job's state).  Each run reads only what is new
since the last one (the file's inode and offset, or the journal cursor, in the job state).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import stat
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from upkeeper.config.types import Duration
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, StateStore, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError, TaskError
from upkeeper.tasks.security._common import CheckOutput

SYSLOG_TS = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) (?P<prog>sshd)(?:\[\d+\])?: "
                       r"(?P<msg>.*)$")
ISO_TS = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) (?P<host>\S+) "
                    r"(?P<prog>sshd)(?:\[\d+\])?: (?P<msg>.*)$")
IP = r"(?P<ip>[0-9a-fA-F:.]+)"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("accepted", re.compile(rf"^Accepted (?P<method>\S+) for (?P<user>\S+) from {IP} port \d+")),
    ("failed", re.compile(rf"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S*) from {IP} port \d+")),
    ("invalid", re.compile(rf"^Invalid user (?P<user>\S*) from {IP}(?: port \d+)?")),
    ("failed", re.compile(rf"^Disconnecting (?:authenticating|invalid) user (?P<user>\S+) {IP} port \d+: "
                          r"Too many authentication failures")),
    ("failed", re.compile(rf"^error: maximum authentication attempts exceeded for (?:invalid user )?(?P<user>\S+) "
                          rf"from {IP}")),
)


@dataclass
class LoginEvent:
    ts: datetime
    kind: str  # accepted | failed | invalid
    user: str
    ip: str
    method: str = ""


def parse_line(line: str, year: int, now: datetime) -> LoginEvent | None:
    m = SYSLOG_TS.match(line) or ISO_TS.match(line)
    if not m:
        return None
    ts_text = m.group("ts")
    try:
        if "T" in ts_text:
            ts = datetime.fromisoformat(ts_text.replace("Z", "+00:00")).astimezone(UTC)
        else:
            ts = datetime.strptime(f"{year} {ts_text}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
            if ts > now + timedelta(days=2):  # a December line read in January
                ts = ts.replace(year=year - 1)
    except ValueError:
        return None
    return parse_message(m.group("msg"), ts)


def parse_message(msg: str, ts: datetime) -> LoginEvent | None:
    for kind, pat in PATTERNS:
        pm = pat.match(msg)
        if pm:
            d = pm.groupdict()
            return LoginEvent(ts, kind, d.get("user") or "?", d["ip"], d.get("method") or "")
    return None


class LoginsOptions(TaskOptions):
    source: Literal["auto", "file", "journal"] = Field(
        "auto", description="'file' reads auth_log, 'journal' reads journalctl, 'auto' the file if it exists. "
        "Source: upkeeper default")
    auth_log: str = Field("/var/log/auth.log", description="syslog file with sshd's messages (RHEL: /var/log/secure). "
            "Source: Debian's rsyslog (auth facility)")
    journal_units: list[str] = Field(["ssh.service", "sshd.service"], description="units read from the journal. "
            "Source: the sshd unit names of Debian (ssh.service) and RHEL (sshd.service)")
    bruteforce_failures: int = Field(
        5, ge=1, description="failures from one IP within the window that make a brute-force source. "
        "Source: fail2ban maxretry (5)")
    bruteforce_window: Duration = Field(
        default=timedelta(minutes=10), description="window of the brute-force count. Source: fail2ban findtime (10m)")
    first_run_lookback: Duration = Field(
        default=timedelta(days=1), description="on the first run, how far back to read. "
                "Source: upkeeper default")
    known_ips: list[str] = Field(default_factory=list, description="source IPs never reported as new. "
            "Source: upkeeper (not set by default)")
    max_bytes: int = Field(256 * 1024 * 1024, gt=0, description="read at most this much of the log per run. "
            "Source: upkeeper default")


def _read_file(path: Path, state: StateStore, options: LoginsOptions, now: datetime) -> tuple[list[str], str]:
    try:
        st = path.stat()
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc.strerror}", "Try: set 'auth_log' or source: journal") from None
    pos = state.get("authlog_pos")
    offset = 0
    note = "from the start"
    # (read back from history -- damaged, another version's -- a position that is not a whole number of bytes
    # inside the file is none: read from the start)
    if (isinstance(pos, dict) and pos.get("inode") == st.st_ino and type(pos.get("offset")) is int
            and 0 <= pos["offset"] <= st.st_size):
        offset = pos["offset"]
        note = f"from offset {offset}"
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(options.max_bytes)
    except PermissionError:
        raise TaskError(f"cannot read {path} as {_user()}: permission denied (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}, group {_group(st.st_gid)}): no login was checked",
                        f"Try: add {_user()} to the group {_group(st.st_gid)} that may read it (usermod -aG "
                        f"{_group(st.st_gid)} {_user()}; Debian's syslog files are root:adm 0640), or run this check "
                        "as root") from None
    # only whole lines: a line still being written (or cut by max_bytes) is read next time, in one piece
    data = data[: data.rfind(b"\n") + 1]
    state.set("authlog_pos", {"inode": st.st_ino, "offset": offset + len(data)})
    return data.decode("utf-8", errors="replace").splitlines(), note


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


#: where journald keeps the system journal (persistent, volatile): ``<dir>/<machine-id>/system*.journal``
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")


def closed_journals(dirs: Sequence[str] | None = None) -> list[str]:
    """The system journal files (or their machine directories) this user cannot read.  journalctl then shows
    only the user's own journal and, with ``-q``, says nothing: sshd's messages are not among them.  (Members of
    the groups systemd-journal, adm and wheel may read them all: journalctl(1).)"""
    closed: list[str] = []
    for d in JOURNAL_DIRS if dirs is None else dirs:
        try:
            machines = [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for m in machines:
            if not os.access(m, os.R_OK | os.X_OK):
                closed.append(m)
                continue
            try:
                names = os.listdir(m)
            except OSError:
                closed.append(m)
                continue
            closed += [os.path.join(m, n) for n in sorted(names)
                       if n.startswith("system") and n.endswith(".journal") and not os.access(os.path.join(m, n),
                                                                                               os.R_OK)]
    return closed


def _read_journal(state: StateStore, options: LoginsOptions, now: datetime) -> tuple[list[LoginEvent], str]:
    closed = closed_journals()
    if closed:
        who = _user()
        raise TaskError(
            f"cannot read the system journal as {who}: {', '.join(closed[:5])}" + (" …" if len(closed) > 5 else "")
            + " (journalctl would show only the user's own entries, without sshd's): no login was checked",
            f"Try: add {who} to the group systemd-journal (usermod -aG systemd-journal {who}; adm works too), or "
            "run this check as root")
    exe = shutil.which("journalctl")
    if exe is None:
        raise TaskError("journalctl not found", "Try: source: file")
    argv = [exe, "-o", "json", "--no-pager", "-q"]
    for u in options.journal_units:
        argv += ["-u", u]
    cursor = state.get("journal_cursor")
    if cursor:
        argv += ["--after-cursor", str(cursor)]
    else:
        argv += ["--since", (now - options.first_run_lookback).strftime("%Y-%m-%d %H:%M:%S")]
    try:
        res = proc.run(argv, timeout=120, extra_env={"TZ": "UTC"})
    except ProcessError as exc:
        raise TaskError(f"journalctl failed: {exc.message}", "Try: source: file") from None
    events, last = parse_journal_json(res.text)
    if last:
        state.set("journal_cursor", last)
    return events, "journal"


def parse_journal_json(text: str) -> tuple[list[LoginEvent], str | None]:
    """``journalctl -o json`` lines → login events and the last cursor."""
    events: list[LoginEvent] = []
    last = None
    for line in text.splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        last = entry.get("__CURSOR") or last
        try:
            ts = datetime.fromtimestamp(int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6, UTC)
        except (TypeError, ValueError, OverflowError):
            continue
        message = entry.get("MESSAGE", "")
        if isinstance(message, list):  # journald stores non-UTF-8 messages as byte arrays
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        ev = parse_message(str(message), ts)
        if ev:
            events.append(ev)
    return events, last


def analyse(events: list[LoginEvent], options: LoginsOptions, known: set[str]) -> CheckOutput:
    out = CheckOutput()
    failures = [e for e in events if e.kind in ("failed", "invalid")]
    accepted = [e for e in events if e.kind == "accepted"]
    by_ip: dict[str, list[datetime]] = defaultdict(list)
    for e in failures:
        if e.kind == "failed" or not any(f.kind == "failed" and f.ip == e.ip and f.ts == e.ts for f in failures):
            by_ip[e.ip].append(e.ts)
    window = options.bruteforce_window
    for ip, stamps in sorted(by_ip.items()):
        stamps.sort()
        best, j = 0, 0
        for i in range(len(stamps)):
            while stamps[i] - stamps[j] > window:
                j += 1
            best = max(best, i - j + 1)
        if best >= options.bruteforce_failures:
            users = Counter(e.user for e in failures if e.ip == ip)
            success = [e for e in accepted if e.ip == ip]
            out.findings.append(Finding(
                "security.logins.bruteforce", Severity.CRITICAL if success else Severity.WARNING, ip,
                f"brute force from {ip}: {len(stamps)} failed logins ({best} within {int(window.total_seconds() // 60)}"
                f" min), users tried: {', '.join(u for u, _ in users.most_common(5))}"
                + (f"; then logged in successfully as {success[0].user}!" if success else ""),
                "ban the source (fail2ban), disable password authentication, keep MaxAuthTries low",
                value=len(stamps), threshold=options.bruteforce_failures,
                data={"first": stamps[0].isoformat(), "last": stamps[-1].isoformat(), "max_in_window": best,
                      "users": dict(users.most_common(20))}))
    for e in accepted:
        if e.user == "root":
            out.findings.append(Finding(
                "security.logins.root_login", Severity.CRITICAL if e.method == "password" else Severity.WARNING,
                e.ip, f"root logged in over SSH from {e.ip} ({e.method}) at {e.ts.isoformat()}",
                "log in as a named user and use sudo (PermitRootLogin no)", value=e.method,
                data={"ts": e.ts.isoformat()}))
    new_ips: dict[str, LoginEvent] = {}
    for e in accepted:
        if e.ip not in known and e.ip not in options.known_ips and e.ip not in new_ips:
            new_ips[e.ip] = e
    for ip, e in new_ips.items():
        out.findings.append(Finding(
            "security.logins.new_source", Severity.WARNING if known else Severity.INFO, ip,
            f"first successful login from {ip} (user {e.user}, {e.method}) at {e.ts.isoformat()}"
            + ("" if known else " — first run, every source is new"),
            "confirm with the user that this login was theirs", data={"user": e.user, "method": e.method}))
    out.metrics.update({"failed": float(len(failures)), "accepted": float(len(accepted)),
                        "failed_ips": float(len(by_ip)), "new_sources": float(len(new_ips))})
    out.summary = (f"{len(accepted)} successful and {len(failures)} failed SSH login(s), "
                   f"{sum(1 for f in out.findings if f.check.endswith('bruteforce'))} brute-force source(s)")
    return out


def check_logins(options: LoginsOptions, state: StateStore, now: datetime) -> CheckOutput:
    path = Path(options.auth_log)
    source = options.source
    if source == "auto":
        source = "file" if path.exists() else "journal"
    if source == "file":
        lines, note = _read_file(path, state, options, now)
        since = now - options.first_run_lookback if note == "from the start" else None
        events = [e for e in (parse_line(ln, now.year, now) for ln in lines) if e is not None]
        if since is not None and not isinstance(state.get("known_ips"), list):
            events = [e for e in events if e.ts >= since]
    else:
        events, note = _read_journal(state, options, now)
    saved = state.get("known_ips")  # (read back from history: not a list of addresses is a first run's)
    first_run = not isinstance(saved, list)
    known = {ip for ip in saved if isinstance(ip, str)} if isinstance(saved, list) else set()
    out = analyse(events, options, known if not first_run else set())
    if first_run:  # the first run learns the sources; it does not call them new
        for f in out.findings:
            if f.check == "security.logins.new_source":
                f.severity = Severity.INFO
    known |= {e.ip for e in events if e.kind == "accepted"}
    state.set("known_ips", sorted(known)[-5000:])
    out.metrics["lines_source"] = 1.0 if source == "file" else 2.0
    out.summary += f" ({source} {note})"
    return out


@task
class SecurityLogins(Task[LoginsOptions]):
    """Read sshd's messages since the last run (auth.log or the journal): failed and successful logins,
    brute-force sources, root logins and source IPs never seen before."""

    name = "security.logins"
    summary = "SSH logins: failures, brute-force sources, root logins, new source IPs"
    target_kinds = ("host",)
    Options = LoginsOptions
    category = "security"
    default_timeout = 300

    def run(self, ctx: TaskContext, options: LoginsOptions) -> Result:
        out = check_logins(options, ctx.state, ctx.now())
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)


