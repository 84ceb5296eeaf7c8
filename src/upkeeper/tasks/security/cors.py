"""security.cors: probe CORS with a foreign Origin and with ``null``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urljoin

from pydantic import Field

from upkeeper import lazy
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, task
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security._http import fetch
from upkeeper.tasks.security._web import WebOptions, web_url

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy.module("httpx")

REMEDIATION = ("answer only allow-listed origins in Access-Control-Allow-Origin; never echo the request's "
               "Origin (or 'null') together with Access-Control-Allow-Credentials: true")


class CorsOptions(WebOptions):
    paths: list[str] = Field(["/"], description="paths to probe (API endpoints are the interesting ones). "
            "Source: upkeeper default")
    origin: str = Field(
        "https://evil-upkeeper-probe.example", description="the foreign Origin sent. Source: upkeeper default"
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="origins that may legitimately be allowed (never reported). "
                "Source: upkeeper (not set by default)"
    )


def classify(sent: str, acao: str | None, creds: bool, allowed: list[str]) -> tuple[Severity, str, str] | None:
    """(severity, check, message) for one probe, None when nothing is wrong."""
    if not acao:
        return None
    acao = acao.strip()
    if acao in allowed and acao != "null":
        return None
    if acao == "*":
        if creds:
            return (Severity.CRITICAL, "security.cors.wildcard_credentials",
                    "Access-Control-Allow-Origin: * together with Access-Control-Allow-Credentials: true")
        return (Severity.INFO, "security.cors.public",
                "Access-Control-Allow-Origin: * (public, without credentials)")
    if acao == sent:
        what = "the 'null' origin" if sent == "null" else f"the foreign origin {sent}"
        if creds:
            return (Severity.CRITICAL, "security.cors.reflected_credentials",
                    f"{what} is allowed with credentials (Access-Control-Allow-Credentials: true): any site can "
                    "read authenticated responses")
        return (Severity.WARNING, "security.cors.reflected_origin", f"{what} is reflected in "
                "Access-Control-Allow-Origin (without credentials)")
    return None


def check_cors(url: str, options: CorsOptions) -> CheckOutput:
    out = CheckOutput()
    probes = 0
    for path in options.paths:
        target = urljoin(url, path)
        for origin in (options.origin, "null"):
            for method, extra in (("GET", {}), ("OPTIONS", {"Access-Control-Request-Method": "GET"})):
                try:
                    resp = fetch(target, options.verify, options.timeout, method=method,
                                 headers={"Origin": origin, **extra})
                except httpx.HTTPError as exc:
                    out.findings.append(Finding("security.cors.unreachable", Severity.WARNING, target,
                                                f"CORS probe failed: {exc}", "check the URL"))
                    break
                probes += 1
                acao = resp.first("access-control-allow-origin")
                creds = (resp.first("access-control-allow-credentials") or "").strip().lower() == "true"
                verdict = classify(origin, acao, creds, options.allowed_origins)
                if verdict is None:
                    continue
                sev, check, msg = verdict
                if any(f.check == check and f.subject == target and f.data.get("origin") == origin
                       for f in out.findings):
                    continue
                out.findings.append(Finding(check, sev, target, f"{msg} ({method})", REMEDIATION,
                                            value=acao, data={"origin": origin, "method": method,
                                                              "allow_origin": acao, "allow_credentials": creds}))
    out.metrics["probes"] = float(probes)
    bad = [f for f in out.findings if f.severity is not Severity.INFO]
    out.summary = f"CORS: {len(bad)} problem(s) in {probes} probe(s)"
    return out


@task
class SecurityCors(Task[CorsOptions]):
    """Send requests (GET and a preflight) with a foreign Origin and with ``Origin: null``: an origin reflected
    with credentials, or ``*`` with credentials, is critical; a reflected origin without credentials warns."""

    name = "security.cors"
    summary = "CORS probes with a foreign and a null Origin (reflection with credentials is critical)"
    target_kinds = ("http", "nginx")
    Options = CorsOptions
    category = "security"
    default_timeout = 120

    def run(self, ctx: TaskContext, options: CorsOptions) -> Result:
        out = check_cors(web_url(ctx, options.url), options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
