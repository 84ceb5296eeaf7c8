"""The Observatory reproduction: test results and modifiers as in mdn-http-observatory, the extra-credit
rule, the grade chart, and parsers that never crash on hostile headers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.core.task import Finding, Severity
from upkeeper.tasks.security.observatory import (
    SCORE_TABLE,
    Outcome,
    Response,
    Retrieval,
    evaluate,
    score,
)
from upkeeper.tasks.security.scoring import GRADE_CHART, ScoringOptions, audit_score, grade_for


def https_site(headers: list[tuple[str, str]], body: str = "<html><body>x</body></html>",
               cookies: list[str] | None = None) -> Retrieval:
    resp = Response("https://shop.example/", 200, [("content-type", "text/html"), *headers], body)
    route = [Response("http://shop.example/", 301, [("location", "https://shop.example/")]), resp]
    return Retrieval(auto=resp, https=resp, http_route=route, cors=None,
                     set_cookies=[("https", c) for c in cookies or []])


def result(r: Retrieval, test: str) -> str:
    return next(t.result for t in evaluate(r).tests if t.name == test)


def test_csp_results() -> None:
    cases = {
        "default-src 'none'": "csp-implemented-with-no-unsafe-default-src-none",
        "default-src 'self'": "csp-implemented-with-no-unsafe",
        "default-src 'self'; script-src 'self' 'unsafe-inline'": "csp-implemented-with-unsafe-inline",
        "default-src 'self'; script-src 'self' 'nonce-abc' 'unsafe-inline'": "csp-implemented-with-no-unsafe",
        "default-src 'self'; script-src 'self' 'unsafe-eval'": "csp-implemented-with-unsafe-eval",
        "default-src 'self'; style-src 'self' 'unsafe-inline'": "csp-implemented-with-unsafe-inline-in-style-src-only",
        "default-src 'self'; img-src http:": "csp-implemented-with-insecure-scheme-in-passive-content-only",
        "default-src 'self'; script-src http://cdn.example": "csp-implemented-with-insecure-scheme",
        "img-src 'self'": "csp-implemented-with-unsafe-inline",  # script-src/object-src not restricted
        "default-src 'self'; script-src 'strict-dynamic'": "csp-header-invalid",
        "default-src 'self'; default-src 'none'": "csp-header-invalid",
    }
    for header, expected in cases.items():
        assert result(https_site([("content-security-policy", header)]), "content-security-policy") == expected, header
    assert result(https_site([]), "content-security-policy") == "csp-not-implemented"
    meta = '<html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'"></head></html>'
    assert result(https_site([], meta), "content-security-policy") == "csp-implemented-with-no-unsafe-default-src-none"


def test_frame_ancestors_only_counts_from_the_header() -> None:
    hdr = https_site([("content-security-policy", "default-src 'self'; frame-ancestors 'none'")])
    assert result(hdr, "x-frame-options") == "x-frame-options-implemented-via-csp"
    assert result(https_site([("x-frame-options", "ALLOWALL")]), "x-frame-options") == "x-frame-options-header-invalid"


def test_referrer_policy_last_valid_value_wins() -> None:
    assert result(https_site([("referrer-policy", "no-referrer, unsafe-url")]), "referrer-policy") == \
        "referrer-policy-unsafe"
    assert result(https_site([("referrer-policy", "unsafe-url, bogus, strict-origin")]), "referrer-policy") == \
        "referrer-policy-private"
    assert result(https_site([("referrer-policy", "no-referrer-when-downgrade")]), "referrer-policy") == \
        "referrer-policy-unsafe"  # MDN's current table counts it as unsafe
    assert result(https_site([("referrer-policy", "whatever")]), "referrer-policy") == "referrer-policy-header-invalid"


def test_hsts_and_cookies() -> None:
    hsts = ("strict-transport-security", "max-age=15552000")
    assert result(https_site([hsts]), "strict-transport-security") == "hsts-implemented-max-age-at-least-six-months"
    assert result(https_site([("strict-transport-security", "max-age=86400")]), "strict-transport-security") == \
        "hsts-implemented-max-age-less-than-six-months"
    assert result(https_site([("strict-transport-security", "includeSubDomains")]), "strict-transport-security") == \
        "hsts-header-invalid"
    assert result(https_site([hsts], cookies=["csrftoken=a; Secure"]), "cookies") == \
        "cookies-anticsrf-without-samesite-flag"
    assert result(https_site([hsts], cookies=["sessionid=a; Secure"]), "cookies") == \
        "cookies-session-without-httponly-flag"
    assert result(https_site([hsts], cookies=["theme=dark"]), "cookies") == \
        "cookies-without-secure-flag-but-protected-by-hsts"
    assert result(https_site([], cookies=["theme=dark; SameSite=Bogus; Secure"]), "cookies") == \
        "cookies-samesite-flag-invalid"
    assert result(https_site([hsts], cookies=["sessionid=a; Secure; HttpOnly; SameSite=Strict"]), "cookies") == \
        "cookies-secure-with-httponly-sessions-and-samesite"


def test_sri_cases() -> None:
    page = '<script src="{}"{}></script>'
    def sri(src: str, integrity: bool) -> str:
        body = "<html><head>" + page.format(src, ' integrity="sha384-x"' if integrity else "") + "</head></html>"
        return result(https_site([], body), "subresource-integrity")
    assert sri("/app.js", False) == "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"
    assert sri("/app.js", True) == "sri-implemented-and-all-scripts-loaded-securely"
    assert sri("https://cdn.other.net/x.js", False) == "sri-not-implemented-but-external-scripts-loaded-securely"
    assert sri("https://cdn.other.net/x.js", True) == "sri-implemented-and-external-scripts-loaded-securely"
    assert sri("http://cdn.other.net/x.js", True) == "sri-implemented-but-external-scripts-not-loaded-securely"
    assert sri("//cdn.other.net/x.js", False) == "sri-not-implemented-and-external-scripts-not-loaded-securely"
    assert sri("https://static.shop.example/x.js", False) == \
        "sri-not-implemented-but-all-scripts-loaded-from-secure-origin"  # same registrable domain


def test_extra_credit_only_from_an_a() -> None:
    def t(*mods: str) -> list[Outcome]:
        return [Outcome("x", m, True) for m in mods]
    # 100 - 5 (XCTO) = 95 ≥ 90: the +10 of default-src 'none' counts
    assert score(t("x-content-type-options-not-implemented", "csp-implemented-with-no-unsafe-default-src-none")) \
        == (105, "A+")
    # 100 - 20 (XFO) = 80 < 90: the bonus is dropped
    assert score(t("x-frame-options-not-implemented", "csp-implemented-with-no-unsafe-default-src-none")) == (80, "B+")
    assert score(t("csp-not-implemented", "sri-not-implemented-and-external-scripts-not-loaded-securely",
                   "cross-origin-resource-sharing-implemented-with-universal-access")) == (0, "F")


def test_grade_chart_boundaries() -> None:
    expected = {100: "A+", 99: "A", 90: "A", 89: "A-", 85: "A-", 84: "B+", 80: "B+", 79: "B", 70: "B", 69: "B-",
                65: "B-", 64: "C+", 60: "C+", 59: "C", 50: "C", 49: "C-", 45: "C-", 44: "D+", 40: "D+", 39: "D",
                30: "D", 29: "D-", 25: "D-", 24: "F", 0: "F", 135: "A+"}
    for s, g in expected.items():
        assert grade_for(s) == g, s
    assert set(GRADE_CHART.values()) == {"A+", "A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D+", "D", "D-", "F"}


@given(st.integers(min_value=-500, max_value=500), st.integers(min_value=-500, max_value=500))
def test_grade_is_monotonic(a: int, b: int) -> None:
    order = ["F", "D-", "D", "D+", "C-", "C", "C+", "B-", "B", "B+", "A-", "A", "A+"]
    lo, hi = sorted((a, b))
    assert order.index(grade_for(lo)) <= order.index(grade_for(hi))


header_names = st.sampled_from(["content-security-policy", "strict-transport-security", "referrer-policy",
                                "x-frame-options", "x-content-type-options", "cross-origin-resource-policy",
                                "set-cookie", "access-control-allow-origin"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_names, st.text(max_size=80)), max_size=8), st.text(max_size=300))
def test_evaluate_never_crashes(headers: list[tuple[str, str]], body: str) -> None:
    r = https_site(headers, body, cookies=[v for k, v in headers if k == "set-cookie"])
    card = evaluate(r)
    assert 0 <= card.score <= 135
    assert all(t.result in SCORE_TABLE for t in card.tests)
    assert len(card.tests) == 10


def test_audit_score_caps_each_family() -> None:
    f = [Finding(f"security.ssh.opt{i}", Severity.CRITICAL, "x", "m") for i in range(10)]
    f += [Finding("network.tls_expiry", Severity.WARNING, "x", "m"), Finding("security.headers.grade",
                                                                             Severity.WARNING, "x", "restated")]
    s = audit_score(f)
    assert s.penalties == {"ssh": 30, "tls": 3} and s.score == 67 and s.grade == "B-"
    assert audit_score([], ScoringOptions()).grade == "A+"
