"""``upkeeper init``: detect local services and write a commented ``upkeeper.yaml``."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from upkeeper.config.standard import StandardJob, standard_jobs
from upkeeper.core.task import REGISTRY
from upkeeper.logs.nginx_format import (
    CDN_HEADERS,
    CLIENT_HEADERS,
    NAMED_FORMATS,
    LogFormatError,
    client_variables,
    format_variables,
)

PG_SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
#: the local backup storage's directory in the written config (``init`` creates it: upkeeper itself never does)
BACKUP_DIR = "/var/backups/upkeeper"
NGINX_CONF = "/etc/nginx/nginx.conf"
NGINX_ACCESS_LOG = "/var/log/nginx/access.log"
REDIS_SOCKETS = ("/var/run/redis/redis-server.sock", "/run/redis/redis-server.sock", "/run/redis/redis.sock")


@dataclass
class Detected:
    postgres: dict[str, object] | None = None
    redis: dict[str, object] | None = None
    nginx: dict[str, object] | None = None
    notes: list[str] = field(default_factory=list)
    #: options found for a job (e.g. the nginx log_format of the access log), written active
    job_options: dict[str, dict[str, object]] = field(default_factory=dict)
    #: commented option lines for a job, with why (e.g. client_ip when the log_format logs X-Forwarded-For)
    job_hints: dict[str, list[str]] = field(default_factory=dict)
    #: PostgreSQL was found while PGPASSWORD is set: this shell reaches it with that password, a daemon will not
    pg_password_from_env: bool = False
    #: PostgreSQL was found while a password file of this shell is there (PGPASSFILE, else ~/.pgpass): this shell
    #: may reach it with a password from it, a daemon under systemd or another user will not (its path; the file
    #: is never read)
    pg_passfile: str | None = None
    #: how the password file was found: "PGPASSFILE" or "~/.pgpass"
    pg_passfile_from: str = ""


def _detect_passfile(d: Detected, env: dict[str, str]) -> None:
    """The password file libpq reads for this shell (PGPASSFILE, else ~/.pgpass), when there: noted, never read."""
    if env.get("PGPASSFILE"):
        path, source = Path(env["PGPASSFILE"]).expanduser(), "PGPASSFILE"
    else:
        home = env.get("HOME") or str(Path.home())
        path, source = Path(home, ".pgpass"), "~/.pgpass"
    try:
        there = path.is_file()
    except OSError:  # (a directory of it not searchable: libpq cannot read it either)
        there = False
    if not there:
        return
    d.pg_passfile, d.pg_passfile_from = str(path), source
    who = ("PGPASSFILE is set in this shell" if source == "PGPASSFILE" else
           f"this user has a password file {path}")
    d.notes.append(f"PostgreSQL: {who} ({path}); the daemon (systemd, cron) will not read it unless it runs as this "
                   "user with the same environment: set password_file in the 'db' target")


def _tcp_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(timeout)
        try:
            return s.connect_ex((host, port)) == 0
        except OSError:
            return False


def detect(env: dict[str, str] | None = None) -> Detected:
    env = dict(os.environ if env is None else env)
    d = Detected()
    # PostgreSQL: PG* variables, then the default socket, then localhost:5432
    port = int(env.get("PGPORT", "5432") or 5432)
    if env.get("PGHOST") or env.get("PGDATABASE") or env.get("PGUSER"):
        d.postgres = {"host": env.get("PGHOST") or "localhost", "port": port, "user": env.get("PGUSER") or "postgres",
                      "dbname": env.get("PGDATABASE") or "postgres"}
        d.notes.append("PostgreSQL: from PG* environment variables")
    else:
        for sd in PG_SOCKET_DIRS:
            if Path(sd, f".s.PGSQL.{port}").exists():
                d.postgres = {"host": sd, "port": port, "user": "postgres", "dbname": "postgres"}
                d.notes.append(f"PostgreSQL: socket in {sd}")
                break
        else:
            if _tcp_open("127.0.0.1", port):
                d.postgres = {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"}
                d.notes.append(f"PostgreSQL: listening on 127.0.0.1:{port}")
    if d.postgres is None:
        d.notes.append("PostgreSQL: not found (set PGHOST/PGPORT/PGUSER, or edit the target below)")
    elif env.get("PGPASSWORD"):  # its value is never written: only that it is there
        d.pg_password_from_env = True
        d.notes.append("PostgreSQL: PGPASSWORD is set in this shell; the daemon (systemd, cron) will not have it: "
                       "set password_file in the 'db' target")
    else:
        _detect_passfile(d, env)
    # Redis
    for sock in REDIS_SOCKETS:
        if Path(sock).exists():
            d.redis = {"unix_socket": sock}
            d.notes.append(f"Redis: socket {sock}")
            break
    else:
        if _tcp_open("127.0.0.1", 6379):
            d.redis = {"host": "127.0.0.1", "port": 6379}
            d.notes.append("Redis: listening on 127.0.0.1:6379")
        else:
            d.notes.append("Redis: not found")
    # nginx
    if Path(NGINX_CONF).exists() or shutil.which("nginx"):
        d.nginx = {"config": NGINX_CONF, "access_log": NGINX_ACCESS_LOG, "error_log": "/var/log/nginx/error.log"}
        d.notes.append("nginx: found" + _detect_log_format(d))
    else:
        d.notes.append("nginx: not found")
    return d


def _nginx_statements(conf: Path) -> list[str]:
    """The directives of ``conf`` and of the files its ``include`` lines name (nginx's syntax: ``;``, ``{`` and
    ``}`` end a directive outside quotes, ``#`` starts a comment); empty when nothing can be read."""
    statements: list[str] = []
    todo: list[Path] = [conf]
    seen: set[Path] = set()
    while todo:
        path = todo.pop(0)
        if path in seen or len(seen) > 200:
            continue
        seen.add(path)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for stmt in _split_directives(text):
            if stmt.startswith("include ") or stmt.startswith("include\t"):
                pattern = stmt.split(None, 1)[1].strip().strip("'\"")
                full = pattern if os.path.isabs(pattern) else str(conf.parent / pattern)
                todo += [Path(p) for p in sorted(glob.glob(full))]
            statements.append(stmt)
    return statements


def _split_directives(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif c in ";{}":
            stmt = "".join(cur).strip()
            if stmt and c == ";":
                out.append(stmt)
            cur = []
        else:
            cur.append(c)
        i += 1
    return out


def _detect_log_format(d: Detected) -> str:
    """Find the access log's ``log_format`` in nginx.conf: logs.nginx reads the log with it (a custom format
    read as 'combined' is a log of unparsed lines).  Returns a note for the user."""
    from upkeeper.logs.nginx_format import _conf_args

    formats: dict[str, str] = {}
    logs: list[tuple[str, str]] = []
    realip = False  # real_ip_header: nginx's realip module already puts the client in $remote_addr
    for stmt in _nginx_statements(Path(NGINX_CONF)):
        args = _conf_args(stmt)
        if not args or len(args) < 2:
            continue
        words = [a for a, _q in args]
        realip = realip or words[0] == "real_ip_header"
        if words[0] == "log_format" and len(words) >= 3:
            escape = words[2] if words[2].startswith("escape=") and not args[2][1] else ""
            fmt = "".join(words[3:] if escape else words[2:])
            formats[words[1]] = f"{escape} {fmt}" if escape else fmt
        elif words[0] == "access_log" and words[1] != "off" and not words[1].startswith("syslog:"):
            logs.append((words[1], words[2] if len(words) > 2 and "=" not in words[2] else "combined"))
    if not logs:
        return ""
    path, name = next((log for log in logs if log[0] == NGINX_ACCESS_LOG), logs[0])
    if d.nginx is not None and "$" not in path:
        d.nginx["access_log"] = path
    found = formats.get(name) or NAMED_FORMATS.get(name)
    if found is None:
        return f"; access log {path} (log_format {name} not found: set log-analysis's log_format)"
    try:
        names = format_variables(found)
    except LogFormatError:
        return f"; access log {path} (log_format {name} not readable: set log-analysis's log_format)"
    options: dict[str, object] = {"log_format": found} if name != "combined" else {}
    address, _passed = client_variables(names)
    logged = [v for v in (*CLIENT_HEADERS.values(), *CDN_HEADERS) if v in names and v != address]
    trusted = ("trusted_proxies: [10.0.0.0/8, 203.0.113.0/24]   # your proxies and CDN (default: the private and "
               "loopback ranges; nginx's set_real_ip_from)")
    if realip or address != "remote_addr" or not logged:
        pass  # $remote_addr is the client already (realip module), or the format has no other client to take
    elif logged[0] == "http_x_forwarded_for":  # nginx.org's 'main' logs it, proxy or not: a hint
        d.job_hints["log-analysis"] = [
            "client_ip: x_forwarded_for   # behind a load balancer or CDN ($remote_addr is the proxy): clients "
            "from $http_x_forwarded_for", trusted]
    elif logged[0] in CDN_HEADERS:  # a CDN's header: useless until its ranges are in trusted_proxies
        d.job_hints["log-analysis"] = [
            f"client_ip: header:{CDN_HEADERS[logged[0]]}   # behind the CDN ($remote_addr is its edge): clients "
            f"from ${logged[0]}", trusted]
    else:  # no browser sends X-Real-IP, and $proxy_protocol_addr is set on a proxy_protocol listener only
        options["client_ip"] = next(m for m, v in CLIENT_HEADERS.items() if v == logged[0])
        d.job_hints["log-analysis"] = [trusted]
    if options:
        d.job_options["log-analysis"] = options
    return (f"; access log {path} in log_format {name}" + "".join(f" (logs ${v})" for v in logged)
            + (" (nginx's realip module sets $remote_addr)" if realip and logged else ""))


def _yaml_value(v: object) -> str:
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    s = str(v)
    if s.startswith(("*", ".", "-")) or not s:
        return '"' + s + '"'
    return s if s.replace("/", "").replace(".", "").replace("-", "").replace("_", "").isalnum() else f'"{s}"'


def _option_value(v: object) -> str:
    """A job option's value: a string that is not a plain word (a log_format) double-quoted, escapes and all."""
    if isinstance(v, str) and _yaml_value(v) != v:
        return json.dumps(v)
    return _yaml_value(v)


def _block(lines: list[str], commented: bool) -> list[str]:
    return [("# " + ln if ln.strip() else ln) if commented else ln for ln in lines]


def _passfile_comment(detected: Detected) -> list[str]:
    """The 'db' target's comment when this shell has a password file (its path only: never its content)."""
    how = (f"PGPASSFILE={detected.pg_passfile} from your environment" if detected.pg_passfile_from == "PGPASSFILE"
           else f"the password file {detected.pg_passfile} of the user who ran init")
    return [f"    # detected with {how}: a daemon (systemd, cron) under",
            "    # another user or environment will not read it.  Set password_file (the password alone in a file",
            "    # of mode 0600, readable by the daemon's user):",
            "    # password_file: /etc/upkeeper/pg.pass"]


def render(detected: Detected, known_tasks: list[str] | None = None, timezone: str = "UTC",
           backup_dir: str | None = None) -> str:
    known = known_tasks if known_tasks is not None else REGISTRY.names()
    have = {"postgres": detected.postgres is not None, "redis": detected.redis is not None,
            "nginx": detected.nginx is not None, "host": True, "app": False, "http": False}
    out = [
        "# upkeeper configuration — written by 'upkeeper init'.",
        "# Check it with 'upkeeper config check'; see the jobs with 'upkeeper jobs'.",
        "# Reference: docs/config-reference.md and docs/tasks.md; editor completion: 'upkeeper config schema'.",
        "#",
        "# Detected on this machine:",
        *[f"#   - {n}" for n in detected.notes],
        "",
        "version: 1",
        f"timezone: {timezone}          # default timezone of job schedules",
        "# history: /var/lib/upkeeper/history.db   # default: the platform data dir; postgresql://… to share",
        "",
        "defaults:",
        "  timeout: 1h            # a run is killed (with all its subprocesses) after this long",
        "  retries: 1             # retry failed runs once, after retry_delay (doubling each time)",
        "  retry_delay: 5m",
        "  catch_up: latest       # after downtime, run the newest missed occurrence once",
        "",
    ]
    targets: list[str] = []
    pg = detected.postgres or {"host": "localhost", "port": 5432, "user": "postgres", "dbname": "postgres"}
    password = (["    # detected with PGPASSWORD from your environment: a daemon (systemd, cron) will not have it.",
                 "    # Set password_file (the password alone in a file of mode 0600), or password: ${PGPASSWORD}",
                 "    # only where the daemon's environment sets it:",
                 "    # password_file: /etc/upkeeper/pg.pass"] if detected.pg_password_from_env else
                _passfile_comment(detected) if detected.pg_passfile else
                ["    # password: ${PGPASSWORD}        # or password_file: /etc/upkeeper/pg.pass"])
    targets += _block(["  db:", "    kind: postgres", *[f"    {k}: {_yaml_value(v)}" for k, v in pg.items()],
                       *password], detected.postgres is None)
    rd = detected.redis or {"host": "127.0.0.1", "port": 6379}
    targets += _block(["  cache:", "    kind: redis", *[f"    {k}: {_yaml_value(v)}" for k, v in rd.items()],
                   "    # password_file: /etc/upkeeper/redis.pass"], detected.redis is None)
    ng = detected.nginx or {"config": "/etc/nginx/nginx.conf"}
    targets += _block(["  web:", "    kind: nginx", *[f"    {k}: {_yaml_value(v)}" for k, v in ng.items()],
                   "    # url: https://example.com"], detected.nginx is None)
    targets += _block(["  app:", "    kind: app", "    root: /srv/app", "    # health_url: http://127.0.0.1:3000/health"],
                  True)
    targets += _block(["  site:", "    kind: http", "    url: https://example.com/"], True)
    out += _section("targets", targets)
    out.append("")
    if any(r.task.endswith(".backup") for r in standard_jobs(known)):
        out += [
            "storages:                # where backups go (several at once is fine: s3, sftp, local)",
            "  local:",
            "    kind: local",
            f"    path: {_yaml_value(backup_dir or BACKUP_DIR)}",
            "",
            "backup:",
            "  # Encrypt every backup with age (required for s3/sftp storages). Make a key with 'age-keygen -o",
            "  # key.txt', put its public key here and keep key.txt somewhere safe, off this host.",
            "  # encryption:",
            "  #   recipients: [age1...]",
            "  #   identity_file: /etc/upkeeper/backup-key.txt   # only where verify/restore run",
            "  retention:",
            "    keep_daily: 14",
            "    keep_weekly: 4",
            "    keep_monthly: 12",
            "",
        ]
    jobs: list[str] = []
    target_name = {"postgres": "db", "redis": "cache", "nginx": "web", "app": "app", "http": "site", "host": None}
    rows: list[StandardJob] = standard_jobs(known)
    for r in rows:
        commented = not have.get(r.target_kind or "host", False)
        lines = [f"  {r.job}:                # {r.comment}" if not commented else
                 f"  {r.job}:                # {r.comment} (enable once its target is set)",
                 f"    task: {r.task}", f'    schedule: "{r.schedule}"']
        tname = target_name.get(r.target_kind or "host")
        if tname:
            lines.append(f"    target: {tname}")
        options = {**r.options, **(detected.job_options.get(r.job, {}) if not commented else {})}
        hints = detected.job_hints.get(r.job, []) if not commented else []
        example = r.example if r.example.split(":")[0] not in options else ""
        if options or hints:
            lines.append("    options:")
            lines += [f"      {k}: {_option_value(v)}" for k, v in options.items()]
            # more options, commented: each works once its '#' is removed
            lines += [f"      # {h}" for h in [*hints, *([example] if example else [])]]
        elif example:
            lines.append(_example_line(r.example))
        jobs += _block(lines, commented)
    out += _section("jobs", jobs)
    out += ["", *NOTIFY_EXAMPLE]
    return "\n".join(out) + "\n"


#: Written commented out: the procedures' defaults (docs/notifications.md, docs/windows.md).
NOTIFY_EXAMPLE = [
    "# Notifications (docs/notifications.md) — the procedures' defaults: Slack and email for every outcome,",
    "# PagerDuty for critical failures (escalation level 2), then team lead and management.",
    "# notifications:",
    "#   channels:",
    "#     slack: {kind: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\"}",
    "#     email: \"mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?to=ops@example.com\"   # any apprise URL",
    "#     pagerduty: {kind: pagerduty, routing_key: \"${PAGERDUTY_ROUTING_KEY}\"}",
    "#     lead: \"mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?to=lead@example.com\"",
    "#     management: \"mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?to=cto@example.com\"",
    "#   escalation:",
    "#     levels:",
    "#       - {name: automatic retry or fix}                   # the job's own retries",
    "#       - {name: on-call, after_failures: 3, after: 30m, channels: [pagerduty]}",
    "#       - {name: team lead, after: 2h, channels: [lead]}",
    "#       - {name: management, after: 8h, channels: [management]}",
    "#",
    "# Maintenance windows and blackouts (docs/windows.md); bind a job with 'window: monthly'.",
    "# windows:",
    "#   monthly: {rrule: \"FREQ=MONTHLY;BYDAY=1SU\", start: \"02:00\", duration: 4h, timezone: UTC}",
    "# blackouts:",
    "#   business-hours: {days: [mon, tue, wed, thu, fri], hours: \"09:00-18:00\", timezone: Europe/Berlin}",
]


def _example_line(example: str) -> str:
    """``# options: {…}`` with the example's note after the closing brace, so the line works once uncommented."""
    value, _, note = example.partition("   # ")
    return f"    # options: {{ {value} }}" + (f"   # {note}" if note else "")


def _section(key: str, lines: list[str]) -> list[str]:
    """``key:`` with its lines; ``key: {}`` when every entry is commented out."""
    active = any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines)
    return [f"{key}:" if active else f"{key}: {{}}", *lines]


def make_backup_dir(text: str, backup_dir: str | None = None) -> str | None:
    """Create the local storage directory ``text`` (a rendered config) points to (``backup_dir``, by default
    :data:`BACKUP_DIR`), mode 0700.

    upkeeper never creates a storage's directory (an unmounted volume must not receive backups),
    so ``init`` — the explicit setup step — makes the one it writes.  Returns a note for the user.
    """
    if f"path: {_yaml_value(backup_dir or BACKUP_DIR)}" not in text:
        return None
    path = Path(backup_dir or BACKUP_DIR)
    if path.is_dir():
        return f"backup storage directory {path} exists"
    try:
        path.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        return (f"could not create the backup storage directory {path} ({exc.strerror or exc}): "
                f"create it as the user the backups run as: mkdir -p -m 700 {path}")
    return f"created the backup storage directory {path} (mode 0700)"
