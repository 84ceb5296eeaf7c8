"""security.headers: HTTP security headers graded with the Mozilla HTTP Observatory scoring."""

from __future__ import annotations

from pydantic import Field

from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, task
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security._http import retrieve
from upkeeper.tasks.security._web import WebOptions, web_url
from upkeeper.tasks.security.observatory import REMEDIATION, evaluate
from upkeeper.tasks.security.scoring import GRADE_ORDER, grade_at_least


class HeadersOptions(WebOptions):
    http_url: str | None = Field(
        None, description="http:// URL whose redirect to HTTPS is checked (default: the URL's host on port 80). "
                "Source: upkeeper (not set by default)"
    )
    min_grade: str = Field(
        "B", description="grade below which the check warns. Source: upkeeper default (Observatory grades A+…F)"
    )
    critical_modifier: int = Field(
        -40, description="a failed Observatory test whose modifier is this or lower is critical, other failed "
        "tests with a penalty are warnings. Source: upkeeper default (session cookies without Secure -40, "
        "universal CORS -50, insecure external scripts -50)",
    )


def check_headers(url: str, options: HeadersOptions) -> CheckOutput:
    if options.min_grade not in GRADE_ORDER:
        options.min_grade = "B"
    r = retrieve(url, http_url=options.http_url, verify=options.verify, timeout=options.timeout)
    if r.auto is None:
        return CheckOutput([Finding("security.headers.unreachable", Severity.CRITICAL, url,
                                    f"nothing answered at {url}", "check the URL and that the site is up")],
                           summary="unreachable")
    card = evaluate(r)
    out = CheckOutput(metrics={"observatory_score": float(card.score)})
    for t in card.tests:
        if t.passed or t.modifier >= 0:
            continue
        sev = Severity.CRITICAL if t.modifier <= options.critical_modifier else Severity.WARNING
        out.findings.append(Finding(
            f"security.headers.{t.name}", sev, url, f"{t.description} ({t.result}, {t.modifier:+d})",
            REMEDIATION.get(t.name, ""), value=t.modifier, threshold=0,
            data={"result": t.result, "evidence": t.data},
        ))
    low = not grade_at_least(card.grade, options.min_grade)
    out.findings.append(Finding(
        "security.headers.grade", Severity.WARNING if low else Severity.INFO, url,
        f"Mozilla Observatory score {card.score} ({card.grade})"
        + (f", below the minimum grade {options.min_grade}" if low else ""),
        "fix the failed header tests listed above" if low else "",
        value=card.score, threshold=options.min_grade, data=card.to_dict(),
    ))
    out.summary = f"Observatory score {card.score} ({card.grade}) for {url}"
    return out


@task
class SecurityHeaders(Task[HeadersOptions]):
    """Fetch the site over HTTPS and HTTP and grade its security headers exactly as the Mozilla HTTP
    Observatory does (CSP, cookies, CORS, redirection, Referrer-Policy, HSTS, SRI,
    X-Content-Type-Options, X-Frame-Options, CORP); every failed test becomes a finding."""

    name = "security.headers"
    summary = "security headers scored and graded like the Mozilla HTTP Observatory"
    target_kinds = ("http", "nginx")
    Options = HeadersOptions
    category = "security"
    default_timeout = 120

    def run(self, ctx: TaskContext, options: HeadersOptions) -> Result:
        out = check_headers(web_url(ctx, options.url), options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
