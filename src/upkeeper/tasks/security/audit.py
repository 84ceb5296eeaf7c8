"""security.audit: every security check in one run, with an overall score and grade.

Host checks run once; web checks run for every http/nginx target (or those listed), the
nginx check for every nginx target, the data-store checks for every postgres and redis
target, TLS for every https URL, DNS and dependencies when configured.  Each family runs
guarded: one that fails becomes a finding and the others go on.  The score is described
in :mod:`upkeeper.tasks.security.scoring`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from pydantic import Field

from upkeeper.config.targets import (
    AppTarget,
    HttpTarget,
    NginxTarget,
    PostgresTarget,
    RedisTarget,
    TargetConfig,
)
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.tasks.network.dns import DnsOptions, check_dns
from upkeeper.tasks.network.tls import TlsOptions, check_tls, parse_endpoint
from upkeeper.tasks.security._common import CheckOutput, count_by_severity, guarded
from upkeeper.tasks.security.cors import CorsOptions, check_cors
from upkeeper.tasks.security.dependencies import DependenciesOptions, check_dependencies
from upkeeper.tasks.security.exposed import ExposedOptions, check_exposed
from upkeeper.tasks.security.firewall import FirewallOptions, check_firewall
from upkeeper.tasks.security.headers import HeadersOptions, check_headers
from upkeeper.tasks.security.logins import LoginsOptions, check_logins
from upkeeper.tasks.security.nginx import NginxOptions, check_nginx
from upkeeper.tasks.security.permissions import PermissionsOptions, check_permissions
from upkeeper.tasks.security.postgres import PostgresSecurityOptions, check_postgres
from upkeeper.tasks.security.processes import ProcessesOptions, evaluate, snapshot
from upkeeper.tasks.security.redis import RedisSecurityOptions, check_redis
from upkeeper.tasks.security.scoring import ScoringOptions, audit_score, family_of
from upkeeper.tasks.security.ssh import SshOptions, check_ssh
from upkeeper.tasks.security.updates import UpdatesOptions, check_updates

Family = Literal["ssh", "firewall", "updates", "processes", "permissions", "logins", "exposed_files", "headers",
                 "cors", "nginx", "postgres", "redis", "dependencies", "tls", "dns"]
FAMILIES: tuple[str, ...] = Family.__args__  # type: ignore[attr-defined]


class AuditOptions(TaskOptions):
    skip: list[Family] = Field(default_factory=list, description="check families not to run. "
            "Source: upkeeper (not set by default)")
    web_targets: list[str] | None = Field(
        None, description="http/nginx targets whose sites to check (default: all of them). "
                "Source: upkeeper (not set by default)")
    postgres_targets: list[str] | None = Field(None, description="postgres targets to check (default: all). "
            "Source: upkeeper (not set by default)")
    redis_targets: list[str] | None = Field(None, description="redis targets to check (default: all). "
            "Source: upkeeper (not set by default)")
    ssh: SshOptions = Field(default_factory=SshOptions, description="options of security.ssh. "
            "Source: that task's defaults")
    firewall: FirewallOptions = Field(default_factory=FirewallOptions, description="options of security.firewall. "
            "Source: that task's defaults")
    updates: UpdatesOptions = Field(default_factory=UpdatesOptions, description="options of security.updates. "
            "Source: that task's defaults")
    processes: ProcessesOptions = Field(default_factory=ProcessesOptions, description="options of security.processes. "
            "Source: that task's defaults")
    permissions: PermissionsOptions = Field(default_factory=PermissionsOptions,
                                            description="options of security.permissions. "
                                                    "Source: that task's defaults")
    logins: LoginsOptions = Field(default_factory=LoginsOptions, description="options of security.logins. "
            "Source: that task's defaults")
    exposed_files: ExposedOptions = Field(default_factory=ExposedOptions,
                                          description="options of security.exposed_files (url is per target). "
                                                  "Source: that task's defaults")
    headers: HeadersOptions = Field(default_factory=HeadersOptions, description="options of security.headers. "
            "Source: that task's defaults")
    cors: CorsOptions = Field(default_factory=CorsOptions, description="options of security.cors. "
            "Source: that task's defaults")
    nginx: NginxOptions = Field(default_factory=NginxOptions, description="options of security.nginx. "
            "Source: that task's defaults")
    postgres: PostgresSecurityOptions = Field(default_factory=PostgresSecurityOptions,
                                              description="options of security.postgres. "
                                                      "Source: that task's defaults")
    redis: RedisSecurityOptions = Field(default_factory=RedisSecurityOptions, description="options of security.redis. "
            "Source: that task's defaults")
    dependencies: DependenciesOptions = Field(default_factory=DependenciesOptions,
                                              description="options of security.dependencies. "
                                                      "Source: that task's defaults")
    tls: TlsOptions = Field(default_factory=TlsOptions, description="options of network.tls (default endpoints: "
                            "the https URLs of the web targets). Source: that task's defaults")
    dns: DnsOptions = Field(default_factory=DnsOptions, description="options of network.dns (runs when records "
                            "or zones are set). Source: that task's defaults")
    scoring: ScoringOptions = Field(default_factory=ScoringOptions, description="penalties of the overall score. "
            "Source: see the scoring entries")


def _targets(ctx: TaskContext, kinds: tuple[type, ...], names: list[str] | None) -> list[tuple[str, TargetConfig]]:
    if ctx.config is None:
        return []
    out: list[tuple[str, TargetConfig]] = []
    for name, t in ctx.config.targets.items():
        if isinstance(t, kinds) and (names is None or name in names):
            out.append((name, t))
    return out


def plan(ctx: TaskContext, o: AuditOptions) -> list[tuple[str, str, Callable[[], CheckOutput]]]:
    """(family, subject, check) for everything this audit will run."""
    now = ctx.now()
    apps = [t.root for _, t in _targets(ctx, (AppTarget,), None) if isinstance(t, AppTarget)]
    checks: list[tuple[str, str, Callable[[], CheckOutput]]] = [
        ("ssh", o.ssh.config, partial(check_ssh, o.ssh)),
        ("firewall", "host", partial(check_firewall, o.firewall)),
        ("updates", "host", partial(check_updates, o.updates, ctx.state, now)),
        ("processes", "host", lambda: evaluate(snapshot(), o.processes)),
        ("permissions", "host", partial(check_permissions, o.permissions, apps)),
        ("logins", o.logins.auth_log, partial(check_logins, o.logins, ctx.state, now)),
    ]
    web = _targets(ctx, (HttpTarget, NginxTarget), o.web_targets)
    urls: list[tuple[str, str]] = []
    for n, t in web:  # one site reached through two targets is checked once
        if isinstance(t, HttpTarget | NginxTarget) and t.url and t.url not in {u for _, u in urls}:
            urls.append((n, t.url))
    for name, url in urls:
        checks += [
            ("exposed_files", name, partial(check_exposed, url, o.exposed_files)),
            ("headers", name, partial(check_headers, url, o.headers)),
            ("cors", name, partial(check_cors, url, o.cors)),
        ]
    for name, t in web:
        if isinstance(t, NginxTarget):
            checks.append(("nginx", name, partial(check_nginx, t.config, t.binary, o.nginx)))
    for name, t in _targets(ctx, (PostgresTarget,), o.postgres_targets):
        if isinstance(t, PostgresTarget):
            checks.append(("postgres", name, partial(check_postgres, t, o.postgres, name)))
    for name, t in _targets(ctx, (RedisTarget,), o.redis_targets):
        if isinstance(t, RedisTarget):
            checks.append(("redis", name, partial(check_redis, t, o.redis, name)))
    d = o.dependencies
    if d.node_projects or d.python_paths or d.python_envs or d.requirements:
        checks.append(("dependencies", "host", partial(check_dependencies, ctx, d, None)))
    for root in apps:
        checks.append(("dependencies", root, partial(check_dependencies, ctx, d, root)))
    endpoints = [parse_endpoint(e, o.tls.server_name) for e in o.tls.endpoints] or [
        parse_endpoint(u, o.tls.server_name) for _, u in urls if u.startswith("https://")]
    if endpoints:
        checks.append(("tls", ", ".join(map(str, endpoints)), partial(check_tls, endpoints, o.tls, now)))
    if o.dns.records or o.dns.zones:
        checks.append(("dns", "dns", partial(check_dns, o.dns, ctx.state, now)))
    return [c for c in checks if c[0] not in o.skip]


@task
class SecurityAudit(Task[AuditOptions]):
    """Run every security check — SSH, firewall, OS updates, process ownership, file permissions, logins,
    exposed files, security headers, CORS, nginx, PostgreSQL, Redis, dependencies, TLS and DNS — against
    the host and the config's targets, and grade the result (score 0–100, A+ … F)."""

    name = "security.audit"
    summary = "every security check against the host and all targets, with an overall score and grade"
    target_kinds = ("host",)
    Options = AuditOptions
    category = "security"
    default_timeout = 1800

    def run(self, ctx: TaskContext, options: AuditOptions) -> Result:
        findings: list[Finding] = []
        metrics: dict[str, float] = {}
        families: dict[str, str] = {}
        ran: dict[str, int] = {}
        checks = plan(ctx, options)
        for i, (family, subject, fn) in enumerate(checks):
            ctx.progress(f"{family}: {subject}", i / max(1, len(checks)))
            res = guarded(f"security.{family}", subject, fn, ctx.log)
            for f in res.findings:
                families[f.check] = family
            findings.extend(res.findings)
            per_target = family in ("exposed_files", "headers", "cors", "nginx", "postgres", "redis")
            for k, v in res.metrics.items():
                metrics[f"{family}.{subject}.{k}" if per_target else f"{family}.{k}"] = v
            ran[family] = ran.get(family, 0) + 1
            ctx.log.info("%s (%s): %s", family, subject, res.summary or f"{len(res.findings)} finding(s)")
        score = audit_score(findings, options.scoring, families)
        counts = count_by_severity(findings)
        metrics.update({"score": score.score, **{f"findings.{k}": float(v) for k, v in counts.items()},
                        "checks_run": float(len(checks))})
        per_family = {fam: count_by_severity([f for f in findings if (families.get(f.check) or family_of(f.check)) == fam])
                      for fam in ran}
        findings.append(Finding(
            "security.audit.score", Severity.INFO, "audit",
            f"security score {score.score:g}/100 (grade {score.grade})", "fix the critical findings first",
            value=score.score, data={**score.to_dict(), "families": per_family,
                                     "skipped": [f for f in FAMILIES if f not in ran]}))
        summary = (f"score {score.score:g}/100 ({score.grade}): {counts['critical']} critical, "
                   f"{counts['warning']} warning(s) from {len(checks)} check(s) in {len(ran)} families")
        return Result(summary=summary, findings=findings, metrics=metrics)
