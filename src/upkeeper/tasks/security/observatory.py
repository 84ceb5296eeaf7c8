"""The Mozilla HTTP Observatory's header tests and scoring, reproduced.

Source: MDN HTTP Observatory (``mdn/mdn-http-observatory``, ``src/analyzer/tests/*.js`` and
``src/grader/charts.js``; algorithm version 2, the successor of ``mozilla/http-observatory``).
Ten tests, each yields one *result* with a score *modifier*:

==============================  ===========================================================
test                            results (modifier)
==============================  ===========================================================
content-security-policy         no-unsafe-default-src-none (+10), no-unsafe (+5),
                                unsafe-inline-in-style-src-only (0), insecure-scheme-in-
                                passive-content-only (-10), unsafe-eval (-10), unsafe-inline
                                (-20), insecure-scheme (-20), header-invalid (-25),
                                not-implemented (-25)
cookies                         secure-with-httponly-sessions-and-samesite (+5), secure-with-
                                httponly-sessions (0), not-found (0), without-secure-flag-but-
                                protected-by-hsts (-5), session-without-secure-flag-but-
                                protected-by-hsts (-10), without-secure-flag (-20), samesite-
                                flag-invalid (-20), anticsrf-without-samesite-flag (-20),
                                session-without-httponly-flag (-30), session-without-secure-
                                flag (-40)
cross-origin-resource-sharing   not-implemented / public-access / restricted-access (0),
                                universal-access (-50)
redirection                     all-redirects-preloaded / to-https / not-needed-no-http (0),
                                off-host-from-http (-5), not-to-https-on-initial-redirection
                                (-10), not-to-https / missing / invalid-cert (-20)
referrer-policy                 private (+5), not-implemented (0), unsafe / header-invalid (-5)
strict-transport-security       preloaded (+5), max-age-at-least-six-months (0), less-than-six-
                                months (-10), not-implemented / header-invalid / no-https /
                                invalid-cert (-20)
subresource-integrity           implemented-and-… (+5), not-needed (0), external-scripts-loaded-
                                securely without SRI (-5), … not loaded securely (-20 / -50)
x-content-type-options          nosniff (0), not-implemented / header-invalid (-5)
x-frame-options                 implemented-via-csp (+5), sameorigin-or-deny / allow-from (0),
                                not-implemented / header-invalid (-20)
cross-origin-resource-policy    same-origin / same-site (+10), cross-origin / not-implemented
                                (0), header-invalid (-5)
==============================  ===========================================================

The score starts at 100; bonuses count only when the score without them is at least 90;
it never drops below 0; the grade comes from :func:`upkeeper.tasks.security.scoring.grade_for`.
HSTS preloading is not looked up (that needs Chromium's preload list): ``hsts-preloaded``
is never awarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from upkeeper.tasks.security.scoring import grade_for

MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90

#: result → (modifier, description).  Source: mdn-http-observatory src/grader/charts.js SCORE_TABLE
SCORE_TABLE: dict[str, tuple[int, str]] = {
    "csp-implemented-with-no-unsafe-default-src-none": (10, "CSP implemented with default-src 'none' and no 'unsafe'"),
    "csp-implemented-with-no-unsafe": (5, "CSP implemented without 'unsafe-inline' or 'unsafe-eval'"),
    "csp-implemented-with-unsafe-inline-in-style-src-only": (0, "CSP implemented with unsafe sources inside style-src"),
    "csp-implemented-with-insecure-scheme-in-passive-content-only": (
        -10, "CSP implemented, but secure site allows images or media to be loaded over HTTP"),
    "csp-implemented-with-unsafe-eval": (-10, "CSP implemented, but allows 'unsafe-eval'"),
    "csp-implemented-with-unsafe-inline": (
        -20, "CSP implemented unsafely: 'unsafe-inline' or data: in script-src, overly broad sources in "
             "object-src or script-src, or those not restricted"),
    "csp-implemented-with-insecure-scheme": (-20, "CSP implemented, but secure site allows resources over HTTP"),
    "csp-header-invalid": (-25, "Content Security Policy (CSP) header cannot be parsed successfully"),
    "csp-not-implemented": (-25, "Content Security Policy (CSP) header not implemented"),
    "cookies-secure-with-httponly-sessions-and-samesite": (
        5, "All cookies use the Secure flag, session cookies use HttpOnly, and SameSite is set"),
    "cookies-secure-with-httponly-sessions": (0, "All cookies use Secure and all session cookies use HttpOnly"),
    "cookies-not-found": (0, "No cookies detected"),
    "cookies-without-secure-flag-but-protected-by-hsts": (
        -5, "Cookies set without the Secure flag, but transmission over HTTP prevented by HSTS"),
    "cookies-session-without-secure-flag-but-protected-by-hsts": (
        -10, "Session cookie set without the Secure flag, but transmission over HTTP prevented by HSTS"),
    "cookies-without-secure-flag": (-20, "Cookies set without using the Secure flag or set over HTTP"),
    "cookies-samesite-flag-invalid": (-20, "Cookies use SameSite, but set to something other than Strict or Lax"),
    "cookies-anticsrf-without-samesite-flag": (-20, "Anti-CSRF tokens set without using the SameSite flag"),
    "cookies-session-without-httponly-flag": (-30, "Session cookie set without using the HttpOnly flag"),
    "cookies-session-without-secure-flag": (-40, "Session cookie set without the Secure flag or set over HTTP"),
    "cross-origin-resource-sharing-not-implemented": (0, "Content is not visible via CORS headers"),
    "cross-origin-resource-sharing-implemented-with-public-access": (
        0, "Public content is visible via the CORS Access-Control-Allow-Origin header"),
    "cross-origin-resource-sharing-implemented-with-restricted-access": (
        0, "Content is visible via CORS, but restricted to specific domains"),
    "cross-origin-resource-sharing-implemented-with-universal-access": (
        -50, "Content is visible via CORS to any origin, and credentials can be sent"),
    "redirection-all-redirects-preloaded": (0, "All hosts redirected to are in the HSTS preload list"),
    "redirection-to-https": (0, "Initial redirection is to HTTPS on same host, final destination is HTTPS"),
    "redirection-not-needed-no-http": (0, "Not able to connect via HTTP, so no redirection necessary"),
    "redirection-off-host-from-http": (-5, "Initial redirection from HTTP to HTTPS is to a different host"),
    "redirection-not-to-https-on-initial-redirection": (
        -10, "Redirects to HTTPS eventually, but initial redirection is to another HTTP URL"),
    "redirection-not-to-https": (-20, "Redirects, but final destination is not an HTTPS URL"),
    "redirection-missing": (-20, "Does not redirect to an HTTPS site"),
    "redirection-invalid-cert": (-20, "Invalid certificate chain encountered during redirection"),
    "referrer-policy-private": (
        5, "Referrer-Policy set to no-referrer, same-origin, strict-origin or strict-origin-when-cross-origin"),
    "referrer-policy-not-implemented": (0, "Referrer-Policy header not implemented"),
    "referrer-policy-unsafe": (
        -5, "Referrer-Policy set unsafely to origin, origin-when-cross-origin, unsafe-url or "
            "no-referrer-when-downgrade"),
    "referrer-policy-header-invalid": (-5, "Referrer-Policy header cannot be recognized"),
    "hsts-preloaded": (5, "Preloaded via the HSTS preloading process"),
    "hsts-implemented-max-age-at-least-six-months": (0, "HSTS header set to a minimum of six months (15768000)"),
    "hsts-implemented-max-age-less-than-six-months": (-10, "HSTS header set to less than six months (15768000)"),
    "hsts-not-implemented": (-20, "HSTS header not implemented"),
    "hsts-header-invalid": (-20, "HSTS header cannot be recognized"),
    "hsts-not-implemented-no-https": (-20, "HSTS header cannot be set for sites not available over HTTPS"),
    "hsts-invalid-cert": (-20, "HSTS header cannot be set, as site contains an invalid certificate chain"),
    "sri-implemented-and-all-scripts-loaded-securely": (
        5, "SRI is implemented and all scripts are loaded from a similar origin"),
    "sri-implemented-and-external-scripts-loaded-securely": (5, "SRI is implemented and all scripts load securely"),
    "sri-not-implemented-response-not-html": (0, "SRI is only needed for HTML resources"),
    "sri-not-implemented-but-no-scripts-loaded": (0, "SRI is not needed since the site contains no script tags"),
    "sri-not-implemented-but-all-scripts-loaded-from-secure-origin": (
        0, "SRI not implemented, but all scripts are loaded from a similar origin"),
    "sri-not-implemented-but-external-scripts-loaded-securely": (
        -5, "SRI not implemented, but all external scripts are loaded over HTTPS"),
    "sri-implemented-but-external-scripts-not-loaded-securely": (
        -20, "SRI implemented, but external scripts are loaded over HTTP or protocol-relative URLs"),
    "sri-not-implemented-and-external-scripts-not-loaded-securely": (
        -50, "SRI not implemented, and external scripts are loaded over HTTP or protocol-relative URLs"),
    "x-content-type-options-nosniff": (0, "X-Content-Type-Options header set to nosniff"),
    "x-content-type-options-not-implemented": (-5, "X-Content-Type-Options header not implemented"),
    "x-content-type-options-header-invalid": (-5, "X-Content-Type-Options header cannot be recognized"),
    "x-frame-options-implemented-via-csp": (5, "X-Frame-Options implemented via the CSP frame-ancestors directive"),
    "x-frame-options-sameorigin-or-deny": (0, "X-Frame-Options header set to SAMEORIGIN or DENY"),
    "x-frame-options-allow-from-origin": (0, "X-Frame-Options header uses the ALLOW-FROM uri directive"),
    "x-frame-options-not-implemented": (-20, "X-Frame-Options header not implemented"),
    "x-frame-options-header-invalid": (-20, "X-Frame-Options header cannot be recognized"),
    "cross-origin-resource-policy-implemented-with-same-origin": (
        10, "Cross-Origin-Resource-Policy implemented, prevents leaks into cross-origin contexts"),
    "cross-origin-resource-policy-implemented-with-same-site": (
        10, "Cross-Origin-Resource-Policy implemented, prevents leaks into cross-site contexts"),
    "cross-origin-resource-policy-implemented-with-cross-origin": (
        0, "Cross-Origin-Resource-Policy implemented, but allows cross-origin sharing"),
    "cross-origin-resource-policy-not-implemented": (0, "Cross-Origin-Resource-Policy not implemented"),
    "cross-origin-resource-policy-header-invalid": (-5, "Cross-Origin-Resource-Policy header cannot be recognized"),
    "html-not-parsable": (-20, "Claims to be HTML, but cannot be parsed"),
}

#: what to do about each failing result (upkeeper's wording, after the Observatory's recommendations)
REMEDIATION: dict[str, str] = {
    "content-security-policy": "send a Content-Security-Policy without 'unsafe-inline'/'unsafe-eval' in script-src, "
                               "ideally starting from default-src 'none' (nginx: add_header Content-Security-Policy … always)",
    "cookies": "set Secure on every cookie, HttpOnly on session cookies and SameSite=Lax or Strict",
    "cross-origin-resource-sharing": "never reflect the Origin header together with Access-Control-Allow-Credentials; "
                                     "allow-list specific origins",
    "redirection": "redirect http:// to https:// on the same host first (nginx: return 301 https://$host$request_uri)",
    "referrer-policy": "send Referrer-Policy: strict-origin-when-cross-origin (or stricter)",
    "strict-transport-security": "serve HTTPS with a valid certificate and send Strict-Transport-Security: "
                                 "max-age=63072000 (at least 15768000, six months)",
    "subresource-integrity": "load external scripts over HTTPS with integrity= hashes (Subresource Integrity)",
    "x-content-type-options": "send X-Content-Type-Options: nosniff",
    "x-frame-options": "send X-Frame-Options: DENY or a CSP frame-ancestors directive",
    "cross-origin-resource-policy": "send Cross-Origin-Resource-Policy: same-origin or same-site",
}

DANGEROUSLY_BROAD = frozenset({"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"})
UNSAFE_INLINE = frozenset({"'unsafe-inline'", "data:"})
PASSIVE_DIRECTIVES = ("img-src", "media-src")
NONCES_HASHES = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
SIX_MONTHS = 15552000  # the Observatory accepts 180 days (its "white lie" for 15768000)
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


# -- what the tests look at -----------------------------------------------------------------


@dataclass
class Response:
    """One HTTP response as the tests need it."""

    url: str
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    verified: bool = True
    request_headers: dict[str, str] = field(default_factory=dict)

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def first(self, name: str) -> str | None:
        vals = self.get_all(name)
        return vals[0] if vals else None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


@dataclass
class Retrieval:
    """Everything one scan retrieved (like the Observatory's ``requests`` object).

    ``auto`` is the HTTPS response when the site answers over HTTPS, else the HTTP one;
    ``http_route`` the responses along the redirect chain that started at http:// (None
    when nothing answers over HTTP); ``cors`` a response to a request with a foreign Origin.
    """

    auto: Response | None
    https: Response | None = None
    http_route: list[Response] | None = None
    cors: Response | None = None
    set_cookies: list[tuple[str, str]] = field(default_factory=list)  # (set over scheme, header value)


@dataclass
class Outcome:
    name: str
    result: str
    passed: bool
    data: Any = None

    @property
    def modifier(self) -> int:
        return SCORE_TABLE[self.result][0]

    @property
    def description(self) -> str:
        return SCORE_TABLE[self.result][1]

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.name, "result": self.result, "pass": self.passed, "modifier": self.modifier,
                "description": self.description, "data": self.data}


@dataclass
class Scorecard:
    score: int
    grade: str
    tests: list[Outcome]

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "grade": self.grade, "tests": [t.to_dict() for t in self.tests]}


def only_if_worse(new: str, current: str | None, order: list[str]) -> str:
    if current is None or current not in order or order.index(new) > order.index(current):
        return new
    return current


# -- HTML ------------------------------------------------------------------------------------


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.http_equiv: dict[str, list[str]] = {}
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs}
        if tag == "meta" and a.get("http-equiv") and a.get("content") is not None:
            self.http_equiv.setdefault(str(a["http-equiv"]).lower(), []).append(str(a["content"]))
        elif tag == "meta" and (a.get("name") or "").lower() == "referrer" and a.get("content"):
            self.http_equiv.setdefault("referrer-policy", []).append(str(a["content"]))
        elif tag == "script":
            self.scripts.append({"src": a.get("src"), "integrity": a.get("integrity")})


@dataclass
class Page:
    is_html: bool
    parsable: bool = True
    http_equiv: dict[str, list[str]] = field(default_factory=dict)
    scripts: list[dict[str, str | None]] = field(default_factory=list)


def parse_page(resp: Response) -> Page:
    mime = (resp.first("content-type") or "").split(";")[0].strip().lower()
    if mime and mime not in HTML_TYPES:
        return Page(is_html=False)
    p = _PageParser()
    try:
        p.feed(resp.body)
        p.close()
    except Exception:
        return Page(is_html=True, parsable=False)
    return Page(is_html=True, http_equiv=p.http_equiv, scripts=p.scripts)


# -- CSP ---------------------------------------------------------------------------------------


def parse_csp(policies: list[str]) -> dict[str, set[str]]:
    """Directive → sources (lower-cased).  A repeated directive in one policy is invalid (as the Observatory)."""
    out: dict[str, set[str]] = {}
    for policy in policies:
        text = policy.replace("\r", "").replace("\n", "").strip()
        if len(text) < len("img-src") - 1 or text.isspace():
            raise ValueError("CSP policy does not meet minimum length requirements")
        seen: set[str] = set()
        for part in text.split(";"):
            entry = part.strip().split(maxsplit=1)
            if not entry:
                continue
            directive = entry[0]
            values = {s.lower() for s in entry[1].split()} if len(entry) > 1 else {"'none'"}
            if directive in seen:
                raise ValueError(f"repeated directive {directive}")
            seen.add(directive)
            out[directive] = out.get(directive, set()) | values
    return out


def _split_policies(values: list[str]) -> list[str]:
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def test_csp(r: Retrieval, page: Page) -> Outcome:
    resp = r.auto
    name = "content-security-policy"
    if resp is None:
        return Outcome(name, "csp-not-implemented", False)
    http_policies = _split_policies(resp.get_all("content-security-policy"))
    meta_policies = _split_policies(page.http_equiv.get("content-security-policy", []))
    if not http_policies and not meta_policies:
        return Outcome(name, "csp-not-implemented", False)
    try:
        csp = parse_csp(http_policies + meta_policies)
        http_only = parse_csp(http_policies) if http_policies else {}
    except ValueError as exc:
        return Outcome(name, "csp-header-invalid", False, {"error": str(exc)})
    result: str | None = None
    frame_ancestors = http_only.get("frame-ancestors") or {"*"}
    object_src = set(csp.get("object-src") or csp.get("default-src") or {"*"})
    script_src = set(csp.get("script-src") or csp.get("default-src") or {"*"})
    style_src = set(csp.get("style-src") or csp.get("default-src") or {"*"})
    for sources in (script_src, style_src):
        if any(s.startswith(NONCES_HASHES) for s in sources) and "'unsafe-inline'" in sources:
            sources.discard("'unsafe-inline'")
    strict_dynamic = False
    if any(s.startswith(NONCES_HASHES) for s in script_src) and "'strict-dynamic'" in script_src:
        for s in set(script_src):
            if s.startswith(tuple(DANGEROUSLY_BROAD)) or s in ("'self'", "'unsafe-inline'"):
                script_src.discard(s)
        strict_dynamic = True
    elif "'strict-dynamic'" in script_src:
        result = "csp-header-invalid"
    active = [s for d, srcs in csp.items() if d not in PASSIVE_DIRECTIVES and d != "script-src" for s in srcs]
    active += list(script_src)
    passive = [s for d in PASSIVE_DIRECTIVES for s in (csp.get(d) or csp.get("default-src") or set())]
    secure_site = resp.scheme == "https"
    policy = {"unsafeInline": False, "unsafeEval": False, "insecureSchemeActive": False,
              "insecureSchemePassive": False, "unsafeInlineStyle": False, "defaultNone": False,
              "strictDynamic": strict_dynamic}
    if script_src & (DANGEROUSLY_BROAD | UNSAFE_INLINE) or object_src & DANGEROUSLY_BROAD:
        result = result or "csp-implemented-with-unsafe-inline"
        policy["unsafeInline"] = True
    if secure_site and any(s.startswith(("http:", "ftp:")) for s in active):
        result = result or "csp-implemented-with-insecure-scheme"
        policy["insecureSchemeActive"] = True
    if "'unsafe-eval'" in (script_src | style_src):
        result = result or "csp-implemented-with-unsafe-eval"
        policy["unsafeEval"] = True
    if secure_site and any(s.startswith(("http:", "ftp:")) for s in passive):
        result = result or "csp-implemented-with-insecure-scheme-in-passive-content-only"
        policy["insecureSchemePassive"] = True
    if style_src & (DANGEROUSLY_BROAD | UNSAFE_INLINE):
        result = result or "csp-implemented-with-unsafe-inline-in-style-src-only"
        policy["unsafeInlineStyle"] = True
    if csp.get("default-src") == {"'none'"}:
        result = result or "csp-implemented-with-no-unsafe-default-src-none"
        policy["defaultNone"] = True
    else:
        result = result or "csp-implemented-with-no-unsafe"
    policy["antiClickjacking"] = not (frame_ancestors & DANGEROUSLY_BROAD)
    passed = result in ("csp-implemented-with-no-unsafe", "csp-implemented-with-no-unsafe-default-src-none",
                        "csp-implemented-with-unsafe-inline-in-style-src-only",
                        "csp-implemented-with-insecure-scheme-in-passive-content-only")
    return Outcome(name, result, passed, {"policy": policy, "directives": {k: sorted(v) for k, v in csp.items()}})


# -- HSTS, cookies -------------------------------------------------------------------------------


def test_hsts(r: Retrieval) -> Outcome:
    name = "strict-transport-security"
    resp = r.https
    if resp is None:
        return Outcome(name, "hsts-not-implemented-no-https", False)
    if not resp.verified:
        return Outcome(name, "hsts-invalid-cert", False)
    header = resp.first("strict-transport-security")
    if header is None:
        return Outcome(name, "hsts-not-implemented", False)
    data: dict[str, Any] = {"header": header[:1024], "max-age": None, "includeSubDomains": False, "preload": False}
    try:
        if "," in header:
            raise ValueError("set twice")
        for param in (p.strip().lower() for p in header.split(";")):
            if param.startswith("max-age="):
                data["max-age"] = int(param[8:128].strip('"'))
            elif param == "includesubdomains":
                data["includeSubDomains"] = True
            elif param == "preload":
                data["preload"] = True
        if not data["max-age"]:
            raise ValueError("no max-age")
    except ValueError:
        return Outcome(name, "hsts-header-invalid", False, data)
    if data["max-age"] < SIX_MONTHS:
        return Outcome(name, "hsts-implemented-max-age-less-than-six-months", False, data)
    return Outcome(name, "hsts-implemented-max-age-at-least-six-months", True, data)


COOKIE_ORDER = [
    "cookies-without-secure-flag-but-protected-by-hsts",
    "cookies-without-secure-flag",
    "cookies-session-without-secure-flag-but-protected-by-hsts",
    "cookies-samesite-flag-invalid",
    "cookies-anticsrf-without-samesite-flag",
    "cookies-session-without-httponly-flag",
    "cookies-session-without-secure-flag",
]


def parse_set_cookie(value: str) -> dict[str, Any]:
    parts = [p.strip() for p in value.split(";")]
    name = parts[0].split("=", 1)[0].strip() if parts and parts[0] else ""
    attrs: dict[str, Any] = {"name": name, "secure": False, "httponly": False, "samesite": None,
                             "samesite_raw": None}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        k = k.strip().lower()
        if k == "secure":
            attrs["secure"] = True
        elif k == "httponly":
            attrs["httponly"] = True
        elif k == "samesite":
            attrs["samesite_raw"] = v.strip()
            if v.strip().lower() in ("lax", "strict", "none"):
                attrs["samesite"] = v.strip().capitalize()
    return attrs


def test_cookies(r: Retrieval, hsts_passed: bool) -> Outcome:
    name = "cookies"
    result: str | None = None
    cookies = [(scheme, parse_set_cookie(v)) for scheme, v in r.set_cookies]
    cookies = [(s, c) for s, c in cookies if c["name"] and c["name"] != "heroku-session-affinity"]
    for _, c in cookies:
        raw = c["samesite_raw"]
        if raw is not None and raw.lower() not in ("lax", "strict", "none"):
            result = only_if_worse("cookies-samesite-flag-invalid", result, COOKIE_ORDER)
    if not cookies:
        return Outcome(name, "cookies-not-found", True)
    missing_samesite = False
    jar: dict[str, Any] = {}
    for scheme, c in cookies:
        key = c["name"].lower()
        secure = c["secure"] and scheme == "https"
        session = "login" in key or "sess" in key
        anticsrf = "csrf" in key
        jar[c["name"]] = {"secure": c["secure"], "httponly": c["httponly"], "samesite": c["samesite"]}
        if not c["secure"] and (c["samesite"] or "").lower() == "none":
            result = only_if_worse("cookies-samesite-flag-invalid", result, COOKIE_ORDER)
        if not secure and hsts_passed:
            result = only_if_worse("cookies-without-secure-flag-but-protected-by-hsts", result, COOKIE_ORDER)
        elif not secure:
            result = only_if_worse("cookies-without-secure-flag", result, COOKIE_ORDER)
        if anticsrf and not c["samesite"]:
            result = only_if_worse("cookies-anticsrf-without-samesite-flag", result, COOKIE_ORDER)
        if session and not secure and hsts_passed:
            result = only_if_worse("cookies-session-without-secure-flag-but-protected-by-hsts", result, COOKIE_ORDER)
        elif session and not secure:
            result = only_if_worse("cookies-session-without-secure-flag", result, COOKIE_ORDER)
        if session and not c["httponly"]:
            result = only_if_worse("cookies-session-without-httponly-flag", result, COOKIE_ORDER)
        if not c["samesite"]:
            missing_samesite = True
    if result is None:
        result = ("cookies-secure-with-httponly-sessions" if missing_samesite
                  else "cookies-secure-with-httponly-sessions-and-samesite")
    passed = result in ("cookies-secure-with-httponly-sessions-and-samesite", "cookies-secure-with-httponly-sessions")
    return Outcome(name, result, passed, jar)


# -- CORS, redirection, referrer, XCTO, XFO, CORP, SRI --------------------------------------------


def test_cors(r: Retrieval) -> Outcome:
    name = "cross-origin-resource-sharing"
    resp = r.cors
    acao = resp.first("access-control-allow-origin") if resp else None
    if resp is None or not acao:
        return Outcome(name, "cross-origin-resource-sharing-not-implemented", True)
    acao = acao[:256].strip()
    origin = resp.request_headers.get("origin")
    creds = (resp.first("access-control-allow-credentials") or "").strip().lower() == "true"
    if acao == "*":
        return Outcome(name, "cross-origin-resource-sharing-implemented-with-public-access", True, acao)
    if origin and acao == origin and creds:
        return Outcome(name, "cross-origin-resource-sharing-implemented-with-universal-access", False, acao)
    return Outcome(name, "cross-origin-resource-sharing-implemented-with-restricted-access", True, acao)


def test_redirection(r: Retrieval) -> Outcome:
    name = "redirection"
    route = r.http_route
    if not route:
        return Outcome(name, "redirection-not-needed-no-http", True)
    urls = [x.url for x in route]
    if not all(x.verified for x in route):
        return Outcome(name, "redirection-invalid-cert", False, urls)
    if len(route) == 1:
        return Outcome(name, "redirection-missing", False, urls)
    first, second = urlsplit(route[0].url), urlsplit(route[1].url)
    if urlsplit(route[-1].url).scheme != "https":
        return Outcome(name, "redirection-not-to-https", False, urls)
    if second.scheme == "http":
        return Outcome(name, "redirection-not-to-https-on-initial-redirection", False, urls)
    if first.scheme == "http" and second.scheme == "https" and first.hostname != second.hostname:
        return Outcome(name, "redirection-off-host-from-http", False, urls)
    return Outcome(name, "redirection-to-https", True, urls)


REFERRER_GOOD = ["no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"]
REFERRER_BAD = ["origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade"]


def test_referrer(r: Retrieval, page: Page) -> Outcome:
    name = "referrer-policy"
    resp = r.auto
    values = (resp.get_all("referrer-policy") if resp else []) + page.http_equiv.get("referrer-policy", [])
    if not values:
        return Outcome(name, "referrer-policy-not-implemented", True)
    data = ", ".join(values)
    valid = [t.strip().lower() for t in data.split(",") if t.strip().lower() in REFERRER_GOOD + REFERRER_BAD]
    policy = valid[-1] if valid else ""
    if policy in REFERRER_GOOD:
        return Outcome(name, "referrer-policy-private", True, data)
    if policy in REFERRER_BAD:
        return Outcome(name, "referrer-policy-unsafe", False, data)
    return Outcome(name, "referrer-policy-header-invalid", False, data)


def test_xcto(r: Retrieval) -> Outcome:
    name = "x-content-type-options"
    value = r.auto.first("x-content-type-options") if r.auto else None
    if value is None:
        return Outcome(name, "x-content-type-options-not-implemented", False)
    if value[:256].strip().lower() == "nosniff":
        return Outcome(name, "x-content-type-options-nosniff", True, value)
    return Outcome(name, "x-content-type-options-header-invalid", False, value)


def test_xfo(r: Retrieval, csp: Outcome) -> Outcome:
    name = "x-frame-options"
    value = r.auto.first("x-frame-options") if r.auto else None
    if value is None:
        result = "x-frame-options-not-implemented"
    elif value.strip().lower() in ("deny", "sameorigin"):
        result = "x-frame-options-sameorigin-or-deny"
    elif value.strip().lower().startswith("allow-from "):
        result = "x-frame-options-allow-from-origin"
    else:
        result = "x-frame-options-header-invalid"
    if isinstance(csp.data, dict) and "frame-ancestors" in csp.data.get("directives", {}):
        result = "x-frame-options-implemented-via-csp"
    passed = result in ("x-frame-options-allow-from-origin", "x-frame-options-sameorigin-or-deny",
                        "x-frame-options-implemented-via-csp")
    return Outcome(name, result, passed, value)


def test_corp(r: Retrieval, page: Page) -> Outcome:
    name = "cross-origin-resource-policy"
    value = r.auto.first("cross-origin-resource-policy") if r.auto else None
    if value is None and page.http_equiv.get("cross-origin-resource-policy"):
        value = page.http_equiv["cross-origin-resource-policy"][-1]
    if value is None:
        return Outcome(name, "cross-origin-resource-policy-not-implemented", True)
    v = value[:256].strip().lower()
    result = {"same-site": "cross-origin-resource-policy-implemented-with-same-site",
              "same-origin": "cross-origin-resource-policy-implemented-with-same-origin",
              "cross-origin": "cross-origin-resource-policy-implemented-with-cross-origin"}.get(
        v, "cross-origin-resource-policy-header-invalid")
    return Outcome(name, result, result != "cross-origin-resource-policy-header-invalid", v)


SRI_ORDER = [
    "sri-implemented-and-all-scripts-loaded-securely",
    "sri-implemented-and-external-scripts-loaded-securely",
    "sri-implemented-but-external-scripts-not-loaded-securely",
    "sri-not-implemented-but-external-scripts-loaded-securely",
    "sri-not-implemented-and-external-scripts-not-loaded-securely",
    "sri-not-implemented-response-not-html",
]


def registrable_domain(host: str | None) -> str:
    """Last two labels (an approximation of the public-suffix 'domain' the Observatory uses)."""
    h = (host or "").lower().rstrip(".")
    if re.fullmatch(r"[\d.]+|[0-9a-f:]+", h):
        return h
    return ".".join(h.split(".")[-2:])


def test_sri(r: Retrieval, page: Page) -> Outcome:
    name = "subresource-integrity"
    resp = r.auto
    if resp is None:
        return Outcome(name, "sri-not-implemented-but-no-scripts-loaded", True)
    if not page.is_html:
        return Outcome(name, "sri-not-implemented-response-not-html", True)
    if not page.parsable:
        return Outcome(name, "html-not-parsable", False)
    result: str | None = None
    foreign = False
    data: dict[str, Any] = {}
    site = registrable_domain(urlsplit(resp.url).hostname)
    for s in page.scripts:
        src = s.get("src")
        if not src:
            continue
        integrity = s.get("integrity")
        rel_proto = bool(re.match(r"^//[^/]", src))
        full = bool(re.match(r"^https?://", src, re.I))
        rel_origin = not rel_proto and not full
        same_sld = rel_proto or rel_origin or registrable_domain(urlsplit(src).hostname) == site
        secure_origin = rel_origin or (same_sld and not rel_proto)
        scheme = urlsplit(src).scheme.lower() if full else None
        secure_scheme = scheme == "https" or (rel_origin and resp.scheme == "https")
        if not secure_origin:
            foreign = True
            data[src] = {"integrity": integrity}
            if integrity and not secure_scheme:
                result = only_if_worse("sri-implemented-but-external-scripts-not-loaded-securely", result, SRI_ORDER)
            elif not integrity and secure_scheme:
                result = only_if_worse("sri-not-implemented-but-external-scripts-loaded-securely", result, SRI_ORDER)
            elif not integrity:
                result = only_if_worse("sri-not-implemented-and-external-scripts-not-loaded-securely", result,
                                       SRI_ORDER)
        elif integrity and secure_scheme and result is None:
            result = "sri-implemented-and-all-scripts-loaded-securely"
    if not page.scripts:
        result = "sri-not-implemented-but-no-scripts-loaded"
    elif result is None:
        result = ("sri-implemented-and-external-scripts-loaded-securely" if foreign
                  else "sri-not-implemented-but-all-scripts-loaded-from-secure-origin")
    passed = result in ("sri-implemented-and-all-scripts-loaded-securely",
                        "sri-implemented-and-external-scripts-loaded-securely",
                        "sri-not-implemented-response-not-html",
                        "sri-not-implemented-but-all-scripts-loaded-from-secure-origin",
                        "sri-not-implemented-but-no-scripts-loaded")
    return Outcome(name, result, passed, data)


# -- the scan -------------------------------------------------------------------------------------


def score(tests: list[Outcome]) -> tuple[int, str]:
    """The Observatory's total: 100 + modifiers; bonuses only if the score without them is ≥ 90."""
    with_extra = uncurved = 100
    for t in tests:
        with_extra += t.modifier
        if t.modifier < 0:
            uncurved += t.modifier
    total = with_extra if uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT else uncurved
    total = max(total, 0)
    return total, grade_for(total)


def evaluate(r: Retrieval) -> Scorecard:
    page = parse_page(r.auto) if r.auto is not None else Page(is_html=False)
    csp = test_csp(r, page)
    hsts = test_hsts(r)
    tests = [
        csp,
        test_cookies(r, hsts.passed),
        test_cors(r),
        test_redirection(r),
        test_referrer(r, page),
        hsts,
        test_sri(r, page),
        test_xcto(r),
        test_xfo(r, csp),
        test_corp(r, page),
    ]
    total, grade = score(tests)
    return Scorecard(total, grade, tests)
