"""security.exposed_files: sensitive files reachable over HTTP, confirmed by their content.

Like nuclei's exposure templates (``http/exposures/configs/git-config.yaml``,
``laravel-env.yaml``, ``backups/sql-dump.yaml``, ``backups/zip-backup-files.yaml``,
``files/ds-store-file.yaml``), a file counts only when its *content* matches what such a
file looks like — a 200 status alone never does, so a single-page app that answers 200
with its index page for every path gives no false positive.  As a second guard the body
of a random, surely-missing path is fetched first: a probe whose body equals it is ignored.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from pydantic import Field

from upkeeper import lazy
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, task
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security._http import client
from upkeeper.tasks.security._web import WebOptions, web_url

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy.module("httpx")

Matcher = Callable[[bytes, dict[str, str]], bool]

HTML_RE = re.compile(rb"<html|<body|<!doctype html", re.I)
ENV_LINE = re.compile(rb"(?m)^\s*(?:export\s+)?[A-Z][A-Z0-9_]{1,63}=")
ENV_KNOWN = re.compile(rb"(?mi)^(?:APP_(?:NAME|ENV|KEY|DEBUG|URL|PASSWORD)|DB_(?:HOST|PASSWORD|DATABASE|USERNAME)|"
                       rb"DATABASE_URL|SECRET_KEY|REDIS_URL|AWS_SECRET_ACCESS_KEY|MAIL_PASSWORD)=")
SQL_RE = re.compile(rb"(?:DROP|CREATE|(?:UN)?LOCK) TABLE|INSERT INTO|-- PostgreSQL database dump|-- MySQL dump")
#: magic numbers of archives and databases (nuclei zip-backup-files), plus pg_dump's custom format
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"BZh", b"\xfd7zXZ\x00", b"Rar!\x1a\x07",
                 b"SQLite format 3\x00", b"PGDMP", b"\x28\xb5\x2f\xfd", b"\x1f\x9d", b"\x1f\xa0", b"LZIP")


def _not_html(body: bytes) -> bool:
    return not HTML_RE.search(body[:4096])


def env_file(body: bytes, headers: dict[str, str]) -> bool:
    return _not_html(body) and (bool(ENV_KNOWN.search(body)) or len(ENV_LINE.findall(body)) >= 3)


def git_config(body: bytes, headers: dict[str, str]) -> bool:
    return _not_html(body) and (b"[core]" in body or b"[credentials]" in body)


def git_head(body: bytes, headers: dict[str, str]) -> bool:
    return bool(re.match(rb"^(ref: refs/|[0-9a-f]{40}\s*$)", body.strip()[:200]))


def sql_dump(body: bytes, headers: dict[str, str]) -> bool:
    return body.startswith(b"PGDMP") or bool(SQL_RE.search(body[:65536]))


def archive(body: bytes, headers: dict[str, str]) -> bool:
    ctype = headers.get("content-type", "")
    if body[257:262] == b"ustar":
        return True
    return any(body.startswith(m) for m in ARCHIVE_MAGIC) and not ctype.startswith("text/html")


def ds_store(body: bytes, headers: dict[str, str]) -> bool:
    return body.startswith(b"\x00\x00\x00\x01Bud1") or (b"\x00@\x00" in body[:64] and b"Bud1" in body[:64])


def htpasswd(body: bytes, headers: dict[str, str]) -> bool:
    return _not_html(body) and bool(re.search(rb"(?m)^[\w.@-]+:(\$apr1\$|\$2[aby]\$|\{SHA\}|\$[156]\$)", body))


def server_status(body: bytes, headers: dict[str, str]) -> bool:
    return b"Apache Server Status for" in body or (b"Active connections:" in body and b"server accepts" in body)


@dataclass
class Fetched:
    status: int
    content: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Probe:
    id: str
    paths: tuple[str, ...]
    matcher: Matcher
    kind: str
    severity: Severity
    remediation: str


DENY_DOTFILES = "deny dotfiles in the web server (nginx: location ~ /\\.(?!well-known) { deny all; }) and remove " \
                "the file from the document root"
PROBES: tuple[Probe, ...] = (
    Probe("env", ("/.env", "/.env.local", "/.env.production", "/.env.prod", "/.env.dev", "/.env.development",
           "/.env.backup", "/.env.bak", "/.env.old", "/.env.save", "/api/.env"),
          env_file, "environment file (.env)", Severity.CRITICAL, DENY_DOTFILES + "; rotate every secret in it"),
    Probe("git_config", ("/.git/config",), git_config, "git repository config", Severity.CRITICAL,
          DENY_DOTFILES + "; deploy without the .git directory (the whole history is downloadable)"),
    Probe("git_head", ("/.git/HEAD",), git_head, "git repository HEAD", Severity.CRITICAL,
          DENY_DOTFILES + "; deploy without the .git directory"),
    Probe("sql_dump", ("/backup.sql", "/dump.sql", "/db.sql", "/database.sql", "/data.sql", "/db_backup.sql", "/{host}.sql",
           "/backup.dump", "/db.dump"),
          sql_dump, "database dump", Severity.CRITICAL,
          "remove dumps from the document root; keep backups outside it (upkeeper encrypts them)"),
    Probe("archive", ("/backup.zip", "/backup.tar.gz", "/backup.tgz", "/backup.tar", "/site.zip", "/www.zip", "/{host}.zip",
           "/{host}.tar.gz", "/db.sql.gz", "/backup.sql.gz", "/dump.sql.gz", "/db.sqlite", "/database.sqlite"),
          archive, "archive or database file", Severity.CRITICAL,
          "remove archives and database files from the document root"),
    Probe("ds_store", ("/.DS_Store",), ds_store, ".DS_Store listing", Severity.WARNING,
          DENY_DOTFILES + "; it lists the directory's file names"),
    Probe("htpasswd", ("/.htpasswd",), htpasswd, "password file (.htpasswd)", Severity.CRITICAL,
          DENY_DOTFILES + "; change the passwords in it"),
    Probe("server_status", ("/server-status", "/nginx_status", "/status"), server_status, "server status page", Severity.WARNING,
          "restrict the status page to localhost (allow 127.0.0.1; deny all;)"),
)


class ExposedOptions(WebOptions):
    extra_paths: list[str] = Field(
        default_factory=list, description="more paths to fetch; any of them answering 200 with a body other than "
        "the site's catch-all page is reported as a warning. Source: upkeeper (not set by default)",
    )
    range_bytes: int = Field(65536, gt=0, description="bytes fetched of each candidate (Range request). "
            "Source: upkeeper default")


def check_exposed(url: str, options: ExposedOptions) -> CheckOutput:
    out = CheckOutput()
    host = urlsplit(url).hostname or "site"
    base = url if url.endswith("/") else url + "/"
    probed = 0
    failed: list[tuple[str, str]] = []  # (path, why): no answer, or a server error instead of the file or a 404
    with client(options.verify, options.timeout) as c:
        def get(path: str) -> Fetched | None:
            """At most ``range_bytes`` of the body, even from a server that ignores Range (a 5 GB dump)."""
            nonlocal probed
            probed += 1
            try:
                with c.stream("GET", urljoin(base, path.lstrip("/")),
                              headers={"Range": f"bytes=0-{options.range_bytes - 1}"}) as r:
                    body = bytearray()
                    for chunk in r.iter_bytes():
                        body.extend(chunk)
                        if len(body) >= options.range_bytes:
                            break
                    if r.status_code >= 500:
                        failed.append((path, f"HTTP {r.status_code}"))
                    return Fetched(r.status_code, bytes(body[:options.range_bytes]),
                                   {k.lower(): v for k, v in r.headers.items()})
            except httpx.HTTPError as exc:
                failed.append((path, f"{type(exc).__name__}: {exc}"[:200]))
                return None

        catch_all = get(f"/upkeeper-{secrets.token_hex(8)}.txt")
        baseline = catch_all.content if catch_all is not None and catch_all.status in (200, 206) else None
        for probe in PROBES:
            for path in probe.paths:
                path = path.replace("{host}", host)
                r = get(path)
                if r is None or r.status not in (200, 206) or not r.content:
                    continue
                if baseline is not None and r.content == baseline:
                    continue
                headers = r.headers
                if not probe.matcher(r.content, headers):
                    continue
                out.findings.append(Finding(
                    f"security.exposed_files.{probe.id}",
                    probe.severity, urljoin(base, path.lstrip("/")),
                    f"{probe.kind} is publicly downloadable ({r.status}, {len(r.content)} bytes read; "
                    "content confirms it)", probe.remediation,
                    data={"status": r.status, "content_type": headers.get("content-type"),
                          "head": r.content[:80].decode("latin-1").replace("\n", "\\n")[:80] if probe.severity
                          is Severity.WARNING else "(withheld: may contain secrets)"},
                ))
                break  # one hit per kind is enough
        for path in options.extra_paths:
            r = get(path)
            if r is not None and r.status in (200, 206) and r.content and r.content != baseline:
                out.findings.append(Finding("security.exposed_files.extra", Severity.WARNING,
                                            urljoin(base, path.lstrip("/")),
                                            f"{path} answers {r.status} with its own content",
                                            "remove it or deny access in the web server"))
    exposed = len(out.findings)
    if failed:  # a path that got no answer was not checked: said, not passed
        out.findings.append(Finding(
            "security.exposed_files.unreachable", Severity.WARNING, base,
            f"{len(failed)} of {probed} path(s) got no usable answer, so they were not checked (first: "
            f"{failed[0][0]}: {failed[0][1]})", "check that the site is up and reachable from this host, then run "
            "the check again", value=len(failed), data={"paths": [{"path": p, "error": e} for p, e in failed[:50]]}))
    out.metrics["paths_probed"] = float(probed)
    out.metrics["paths_unchecked"] = float(len(failed))
    out.metrics["exposed"] = float(exposed)
    out.summary = f"{exposed} exposed file(s) among {probed} path(s) probed" + (
        f"; {len(failed)} got no usable answer" if failed else "")
    return out


@task
class SecurityExposedFiles(Task[ExposedOptions]):
    """Fetch well-known sensitive paths (.env variants, .git/config, .git/HEAD, database dumps and archives,
    .DS_Store, .htpasswd, server-status); a file counts only when its content confirms it."""

    name = "security.exposed_files"
    summary = "sensitive files reachable over HTTP (.env, .git, dumps …), confirmed by content"
    target_kinds = ("http", "nginx")
    Options = ExposedOptions
    category = "security"
    default_timeout = 180

    def run(self, ctx: TaskContext, options: ExposedOptions) -> Result:
        out = check_exposed(web_url(ctx, options.url), options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
