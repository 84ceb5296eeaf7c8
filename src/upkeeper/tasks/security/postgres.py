"""security.postgres: roles, authentication rules, network exposure, schema privileges, version.

Each check is one small unit with its SQL beside it (postgres_exporter style); one failing
check (e.g. no permission to read pg_authid) becomes a finding and the others go on.
"""

from __future__ import annotations

import re
import shutil
from typing import TYPE_CHECKING, Any

from pydantic import Field

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError
from upkeeper.tasks.postgres._conn import connect
from upkeeper.tasks.security._common import CheckOutput, guarded, is_loopback

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy.module("psycopg")

SUPERUSERS_SQL = """
SELECT rolname, oid = 10 AS bootstrap FROM pg_roles WHERE rolsuper ORDER BY rolname
"""
PASSWORDS_SQL = """
SELECT rolname,
       CASE WHEN rolpassword IS NULL THEN 'none'
            WHEN rolpassword LIKE 'md5%%' THEN 'md5'
            WHEN rolpassword LIKE 'SCRAM-SHA-256$%%' THEN 'scram'
            ELSE 'other' END AS kind
FROM pg_authid WHERE rolcanlogin ORDER BY rolname
"""
HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number
"""
NETWORK_SQL = "SELECT current_setting('listen_addresses'), current_setting('ssl')"
PUBLIC_CREATE_SQL = """
SELECT n.nspname FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'
"""
DATABASES_SQL = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname LIMIT 50"
VERSION_SQL = "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
ROLES_REVIEW_SQL = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication, r.rolbypassrls,
       r.rolvaliduntil, ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
                              WHERE m.member = r.oid ORDER BY 1) AS member_of
FROM pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY r.rolname
"""

#: newest minor release per major version known to this upkeeper release (postgresql.org/support/versioning,
#: 2025-08-14 releases).  Override with the 'latest_minor' option; a local server also compares with apt.
KNOWN_LATEST_MINOR = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


class PostgresSecurityOptions(TaskOptions):
    allowed_superusers: list[str] = Field(
        default_factory=list, description="superusers besides the bootstrap role that are expected. "
                "Source: upkeeper (not set by default)")
    databases: list[str] | None = Field(
        None, description="databases whose public schema to check (default: every database, up to 50). "
                "Source: upkeeper (not set by default)")
    latest_minor: dict[int, int] = Field(
        default_factory=dict, description="newest minor release per major, e.g. {15: 15} for 15.15 (default: apt's "
        "candidate for a local server, else the table shipped with upkeeper). "
        "Source: upkeeper (not set by default)")
    minor_lag_allowed: int = Field(
        1, ge=0, description="minor releases a server may be behind before it is reported. Source: the "
        "maintenance procedures ('more than one minor release behind'); check_postgres new_version_pg warns at any "
        "newer revision (0)")


def _hba(conn: psycopg.Connection[Any], subject: str) -> CheckOutput:
    out = CheckOutput()
    rows = conn.execute(HBA_SQL).fetchall()
    trust: dict[str, list[tuple[int, str]]] = {"network": [], "loopback": [], "local": []}
    for line, typ, dbs, users, address, netmask, method, error in rows:
        where = f"pg_hba.conf line {line}"
        rule = f"{typ} {','.join(dbs or [])} {','.join(users or [])} {address or ''} {netmask or ''} {method}"
        rule = re.sub(r"\s+", " ", rule).strip()
        if error:
            out.findings.append(Finding("security.postgres.hba_error", Severity.WARNING, f"{subject} {where}",
                                        f"invalid rule: {error}", "fix the line and reload"))
            continue
        local = typ == "local" or (address is not None and is_loopback(str(address)))
        if method == "trust":
            kind = "local" if typ == "local" else ("loopback" if local else "network")
            trust[kind].append((line, rule))
        elif method in ("password",) and not local:
            out.findings.append(Finding(
                "security.postgres.hba_cleartext", Severity.WARNING, f"{subject} {where}",
                f"cleartext password authentication over the network ({rule})", "use scram-sha-256",
                value=method, data={"line": line}))
        elif method == "md5":
            out.findings.append(Finding(
                "security.postgres.hba_md5", Severity.INFO, f"{subject} {where}",
                f"md5 authentication ({rule}); scram-sha-256 resists replay and hash theft better",
                "switch to scram-sha-256 once all passwords are SCRAM", value=method, data={"line": line}))
    fix = "use scram-sha-256 (or peer for local sockets) and reload: SELECT pg_reload_conf()"
    for line, rule in trust["network"]:  # each is its own exposure
        out.findings.append(Finding(
            "security.postgres.hba_trust", Severity.CRITICAL, f"{subject} pg_hba.conf line {line}",
            f"trust for network connections: anyone who reaches the port logs in as any role ({rule})", fix,
            value="trust", threshold="scram-sha-256", data={"lines": [line], "rules": [rule]}))
    for kind, sev, msg in (("loopback", Severity.WARNING,
                            "trust on loopback: any local process may connect as any role without a password"),
                           ("local", Severity.INFO,
                            "trust for local socket connections: any OS user may connect as any role")):
        if trust[kind]:
            lines = [ln for ln, _ in trust[kind]]
            out.findings.append(Finding(
                "security.postgres.hba_trust", sev, f"{subject} pg_hba.conf line{'s' if len(lines) > 1 else ''} "
                + ", ".join(map(str, lines)), f"{msg} ({'; '.join(r for _, r in trust[kind])})", fix,
                value="trust", threshold="scram-sha-256",
                data={"lines": lines, "rules": [r for _, r in trust[kind]]}))
    out.metrics["hba_rules"] = float(len(rows))
    return out


def _roles(conn: psycopg.Connection[Any], subject: str, options: PostgresSecurityOptions) -> CheckOutput:
    out = CheckOutput()
    supers = conn.execute(SUPERUSERS_SQL).fetchall()
    extra = [r for r, boot in supers if not boot and r not in options.allowed_superusers]
    out.metrics["superusers"] = float(len(supers))
    for role in extra:
        out.findings.append(Finding(
            "security.postgres.extra_superuser", Severity.WARNING, f"{subject} role {role}",
            f"role {role} is a superuser (besides the bootstrap role)",
            f"ALTER ROLE \"{role}\" NOSUPERUSER; grant only what it needs (or list it in allowed_superusers)",
            value=role, data={"superusers": [r for r, _ in supers]}))
    return out


def _passwords(conn: psycopg.Connection[Any], subject: str) -> CheckOutput:
    out = CheckOutput()
    try:
        rows = conn.execute(PASSWORDS_SQL).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        out.findings.append(Finding("security.postgres.passwords_unreadable", Severity.INFO, subject,
                                    "cannot read pg_authid (not a superuser): password types not checked",
                                    "run the check as a superuser"))
        return out
    for role, kind in rows:
        if kind == "md5":
            out.findings.append(Finding(
                "security.postgres.md5_password", Severity.WARNING, f"{subject} role {role}",
                f"role {role} has an md5 password hash", "SET password_encryption = 'scram-sha-256'; then reset "
                "the password (\\password in psql)", value="md5", threshold="scram"))
        elif kind == "none":
            out.findings.append(Finding(
                "security.postgres.no_password", Severity.INFO, f"{subject} role {role}",
                f"login role {role} has no password (it can log in only through trust/peer/cert rules)",
                "give it a password or make sure no trust rule matches it", value="none"))
    return out


def _network(conn: psycopg.Connection[Any], subject: str) -> CheckOutput:
    out = CheckOutput()
    row = conn.execute(NETWORK_SQL).fetchone()
    assert row is not None
    listen, ssl = str(row[0]), str(row[1])
    addrs = [a.strip() for a in listen.split(",") if a.strip()]
    public = [a for a in addrs if not is_loopback(a)]
    if public and ssl != "on":
        out.findings.append(Finding(
            "security.postgres.listen_without_ssl", Severity.CRITICAL, subject,
            f"listens on {', '.join(public)} without SSL: passwords and data cross the network in clear",
            "set ssl = on with a certificate, or listen_addresses = 'localhost'",
            value=listen, data={"ssl": ssl}))
    out.metrics["ssl"] = 1.0 if ssl == "on" else 0.0
    return out


def _public_schema(target: PostgresTarget, subject: str, options: PostgresSecurityOptions) -> CheckOutput:
    out = CheckOutput()
    with connect(target) as conn:
        dbs = options.databases or [r[0] for r in conn.execute(DATABASES_SQL).fetchall()]
    for db in dbs:
        try:
            with connect(target, db) as conn:
                if conn.execute(PUBLIC_CREATE_SQL).fetchone():
                    out.findings.append(Finding(
                        "security.postgres.public_create", Severity.WARNING, f"{subject} database {db}",
                        f"every role may CREATE in schema public of {db} (search_path attacks, CVE-2018-1058)",
                        f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; (in {db})"))
        except Exception as exc:
            out.findings.append(Finding("security.postgres.database_unreachable", Severity.INFO,
                                        f"{subject} database {db}", f"not checked: {exc}", ""))
    return out


def apt_candidate_minor(major: int) -> int | None:
    exe = shutil.which("apt-cache")
    if exe is None:
        return None
    try:
        res = proc.run([exe, "policy", f"postgresql-{major}"], timeout=30, extra_env={"LC_ALL": "C"})
    except ProcessError:
        return None
    m = re.search(rf"Candidate:\s*{major}\.(\d+)", res.text)
    return int(m.group(1)) if m else None


def _version(conn: psycopg.Connection[Any], target: PostgresTarget, subject: str,
             options: PostgresSecurityOptions) -> CheckOutput:
    out = CheckOutput()
    row = conn.execute(VERSION_SQL).fetchone()
    assert row is not None
    num, text = int(row[0]), str(row[1])
    major, minor = num // 10000, num % 10000
    out.metrics.update({"server_major": float(major), "server_minor": float(minor)})
    latest: int | None = options.latest_minor.get(major)
    source = "option latest_minor"
    if latest is None and (target.host in (None, "", "localhost", "127.0.0.1", "::1") or
                           str(target.host or "").startswith("/")):
        latest, source = apt_candidate_minor(major), "apt candidate of this host"
    if latest is None:
        latest, source = KNOWN_LATEST_MINOR.get(major), "upkeeper's release table"
    if latest is None:
        return out
    latest = max(latest, minor)
    out.metrics["latest_minor"] = float(latest)
    if latest - minor > options.minor_lag_allowed:
        out.findings.append(Finding(
            "security.postgres.outdated_minor", Severity.WARNING, subject,
            f"PostgreSQL {text} is {latest - minor} minor releases behind {major}.{latest} ({source}); minor "
            "releases fix security bugs and are safe to apply", f"upgrade to {major}.{latest} (a restart)",
            value=f"{major}.{minor}", threshold=f"{major}.{latest - options.minor_lag_allowed}",
            data={"source": source}))
    return out


def check_postgres(target: PostgresTarget, options: PostgresSecurityOptions, subject: str | None = None
                   ) -> CheckOutput:
    subject = subject or target.display()
    out = CheckOutput()
    with connect(target) as conn:
        for name, fn in (("roles", lambda: _roles(conn, subject, options)),
                         ("passwords", lambda: _passwords(conn, subject)),
                         ("hba", lambda: _hba(conn, subject)),
                         ("network", lambda: _network(conn, subject)),
                         ("version", lambda: _version(conn, target, subject, options))):
            out.extend(guarded(f"security.postgres.{name}", subject, fn))
    out.extend(guarded("security.postgres.public_schema", subject, lambda: _public_schema(target, subject, options)))
    out.summary = f"PostgreSQL {subject}: {len(out.findings)} finding(s)"
    return out


def access_review(target: PostgresTarget) -> list[dict[str, Any]]:
    """Every role with its attributes and memberships (the compliance report's access review)."""
    with connect(target) as conn:
        rows = conn.execute(ROLES_REVIEW_SQL).fetchall()
    keys = ["role", "superuser", "createrole", "createdb", "login", "replication", "bypassrls", "valid_until",
            "member_of"]
    return [dict(zip(keys, r, strict=True)) for r in rows]


@task
class SecurityPostgres(Task[PostgresSecurityOptions]):
    """Superusers besides the bootstrap role, md5 or missing passwords, ``trust`` rules in pg_hba.conf
    (critical for network connections), listening beyond loopback without SSL, CREATE on schema public,
    and a server more than one minor release behind."""

    name = "security.postgres"
    summary = "PostgreSQL: superusers, md5/no passwords, trust rules, SSL, public schema, minor version"
    target_kinds = ("postgres",)
    Options = PostgresSecurityOptions
    category = "security"
    default_timeout = 120

    def run(self, ctx: TaskContext, options: PostgresSecurityOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        out = check_postgres(target, options, ctx.target_name)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
