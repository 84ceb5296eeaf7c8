"""HTTP(S) retrieval for the web checks (httpx), with the TLS-verification choices users need.

``verify`` is True (system CAs), False, or a path to a CA bundle (a private CA or a
self-signed certificate you trust).  A certificate that fails verification is retried
without verification so the headers can still be graded, and the response is marked
``verified=False`` (the Observatory's ``hsts-invalid-cert``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit

from upkeeper import __version__, lazy
from upkeeper.tasks.security.observatory import Response, Retrieval

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy.module("httpx")

USER_AGENT = f"upkeeper/{__version__} (security audit)"
BODY_LIMIT = 1 << 20
MAX_REDIRECTS = 10


def ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    if verify is False:
        return False
    if verify is True:
        return True
    return ssl.create_default_context(cafile=str(verify))


@contextmanager
def client(verify: bool | str = True, timeout: float = 10.0) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl_context(verify), timeout=timeout, follow_redirects=False,
                      headers={"User-Agent": USER_AGENT}) as c:
        yield c


def _to_response(r: httpx.Response, verified: bool, body_limit: int = BODY_LIMIT) -> Response:
    body = r.content[:body_limit].decode(r.encoding or "utf-8", errors="replace")
    return Response(url=str(r.url), status=r.status_code, headers=list(r.headers.multi_items()), body=body,
                    verified=verified, request_headers={k.lower(): v for k, v in r.request.headers.items()})


def fetch(url: str, verify: bool | str = True, timeout: float = 10.0,
          headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """One request without following redirects.  Raises httpx.HTTPError when nothing answers."""
    try:
        with client(verify, timeout) as c:
            r = c.request(method, url, headers=headers)
            return _to_response(r, verified=not url.startswith("https:") or verify is not False)
    except httpx.ConnectError as exc:
        if not url.startswith("https:") or verify is False or "CERTIFICATE" not in str(exc).upper():
            raise
    with client(False, timeout) as c:
        r = c.request(method, url, headers=headers)
        return _to_response(r, verified=False)


def follow(url: str, verify: bool | str = True, timeout: float = 10.0,
           headers: dict[str, str] | None = None) -> list[Response]:
    """The responses along the redirect chain starting at ``url`` (at most MAX_REDIRECTS hops)."""
    route = [fetch(url, verify, timeout, headers)]
    while route[-1].status in (301, 302, 303, 307, 308) and len(route) <= MAX_REDIRECTS:
        loc = route[-1].first("location")
        if not loc:
            break
        try:
            route.append(fetch(urljoin(route[-1].url, loc), verify, timeout, headers))
        except httpx.HTTPError:
            break
    return route


def http_url_for(url: str) -> str:
    """The http:// twin of an https:// URL (default port); an http:// URL stays as it is."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(("http", host, parts.path or "/", parts.query, ""))


def retrieve(url: str, *, http_url: str | None = None, verify: bool | str = True, timeout: float = 10.0,
             origin: str = "https://upkeeper-cors-probe.example") -> Retrieval:
    """Everything the Observatory tests look at, for ``url`` (https:// or http://)."""
    https: Response | None = None
    set_cookies: list[tuple[str, str]] = []
    if url.startswith("https:"):
        try:
            chain = follow(url, verify, timeout)
            https = chain[-1]
            for resp in chain:
                set_cookies += [(resp.scheme, v) for v in resp.get_all("set-cookie")]
        except httpx.HTTPError:
            https = None
    http_start = http_url or http_url_for(url)
    route: list[Response] | None
    try:
        route = follow(http_start, verify, timeout)
    except httpx.HTTPError:
        route = None
    auto = https
    if auto is None and route:
        auto = route[-1]
    if https is None and route:
        for resp in route:
            set_cookies += [(resp.scheme, v) for v in resp.get_all("set-cookie")]
    cors: Response | None = None
    if auto is not None:
        try:
            cors = fetch(auto.url, verify, timeout, headers={"Origin": origin})
        except httpx.HTTPError:
            cors = None
    return Retrieval(auto=auto, https=https, http_route=route, cors=cors, set_cookies=set_cookies)
