"""Local stand-ins for the advisory SaaS endpoints that security.dependencies' tools query.

The tools driven against them are the real ``npm`` and ``pip-audit``; only the endpoints are
fakes, and they speak the wire formats those tools use (read from their sources):

* npm registry (``@npmcli/arborist`` lib/audit-report.js, ``@npmcli/metavuln-calculator``):
  ``POST /-/npm/v1/security/advisories/bulk`` with a gzip-compressed JSON body
  ``{name: [version, ...]}``, answered with ``{name: [{id, url, title, severity,
  vulnerable_versions, cwe, cvss}]}`` — only the advisories that affect one of the versions sent;
  and the packument ``GET /<name>`` (``{name, dist-tags, versions: {v: manifest}}``) from which
  npm computes ``fixAvailable``.
* OSV API (pip-audit ``_service/osv.py``): ``POST /v1/query`` with ``{"package": {"name",
  "ecosystem"}, "version"}``, answered with ``{"vulns": [OSV record, ...]}`` or ``{}`` when nothing
  is known.  pip-audit sends one query per package and never uses ``/v1/querybatch``, so that
  endpoint is not imitated.

Each server records the requests it received so a test can prove the tool really asked it.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from packaging.version import InvalidVersion, Version

# --- npm semver ranges (the subset advisories use: comparator sets joined by "||") -----------------

_CMP = re.compile(r"^(<=|>=|<|>|=)?v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def _semver_key(text: str) -> tuple[int, int, int, int, str]:
    m = _CMP.match(text)
    if not m:
        raise ValueError(f"not a semver version: {text!r}")
    pre = m.group(5) or ""
    return int(m.group(2)), int(m.group(3)), int(m.group(4)), 0 if pre else 1, pre


def semver_satisfies(version: str, range_: str) -> bool:
    """True when ``version`` is in the npm range ``range_`` (``*``, ``<1.2.3``, ``>=1.0.0 <2.0.0 || =3.0.0``)."""
    v = _semver_key(version)
    for alternative in range_.split("||"):
        parts = alternative.split()
        ok = True
        for part in parts:
            if part in ("*", "x", ""):
                continue
            m = _CMP.match(part)
            if not m:
                raise ValueError(f"unsupported range part {part!r} in {range_!r}")
            op = m.group(1) or "="
            bound = _semver_key(part.lstrip("<>="))
            ok = ok and {"<": v < bound, "<=": v <= bound, ">": v > bound, ">=": v >= bound, "=": v == bound}[op]
        if ok:
            return True
    return False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any


@dataclass
class _Server:
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[Recorded] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"


def _serve(handler: type[BaseHTTPRequestHandler]) -> _Server:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return _Server(httpd, thread)


class _Handler(BaseHTTPRequestHandler):
    server_ref: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _body(self) -> bytes:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def _json(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any) -> None:
        self.server_ref.requests.append(Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))


# --- npm registry --------------------------------------------------------------------------------


@dataclass
class NpmAdvisory:
    """One entry of the bulk advisory response (the fields npm's metavuln-calculator reads)."""

    id: int
    name: str
    title: str
    severity: str  # info | low | moderate | high | critical
    vulnerable_versions: str
    url: str = ""
    cwe: list[str] = field(default_factory=list)
    cvss: dict[str, Any] = field(default_factory=lambda: {"score": 0, "vectorString": None})

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url or f"https://github.com/advisories/GHSA-test-{self.id}",
                "title": self.title, "severity": self.severity, "vulnerable_versions": self.vulnerable_versions,
                "cwe": self.cwe, "cvss": self.cvss}


class FakeNpmRegistry:
    """A private npm registry's audit-relevant endpoints: bulk advisories and packuments."""

    def __init__(self, advisories: list[NpmAdvisory], versions: dict[str, list[str]]) -> None:
        self.advisories = advisories
        self.versions = versions
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url + "/"

    @property
    def requests(self) -> list[Recorded]:
        return self._server.requests if self._server else []

    def packument(self, name: str) -> dict[str, Any] | None:
        versions = self.versions.get(name)
        if versions is None:
            return None
        base = self.url.rstrip("/")
        return {
            "name": name,
            "dist-tags": {"latest": max(versions, key=_semver_key)},
            "versions": {v: {"name": name, "version": v,
                             "dist": {"tarball": f"{base}/{name}/-/{name.split('/')[-1]}-{v}.tgz"}}
                         for v in versions},
            "modified": "2024-01-01T00:00:00.000Z",
        }

    def bulk(self, query: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, versions in query.items():
            hits = [a.to_wire() for a in self.advisories if a.name == name
                    and any(semver_satisfies(v, a.vulnerable_versions) for v in versions)]
            if hits:
                out[name] = hits
        return out

    def __enter__(self) -> FakeNpmRegistry:
        registry = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                body = self._body()
                if self.path.split("?")[0] != "/-/npm/v1/security/advisories/bulk":
                    self._record(body.decode(errors="replace"))
                    self._json(404, {"error": "Not found"})
                    return
                try:
                    query = json.loads(body)
                    if not isinstance(query, dict) or not all(isinstance(v, list) for v in query.values()):
                        raise ValueError("expected {name: [versions]}")
                except ValueError as exc:
                    self._record(body.decode(errors="replace"))
                    self._json(400, {"error": f"Invalid payload: {exc}"})
                    return
                self._record(query)
                self._json(200, registry.bulk(query))

            def do_GET(self) -> None:
                self._record(None)
                name = unquote(self.path.split("?")[0].lstrip("/"))
                doc = registry.packument(name)
                if doc is None:
                    self._json(404, {"error": "Not found"})
                else:
                    self._json(200, doc)

        self._server = _serve(Handler)
        Handler.server_ref = self._server
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.httpd.shutdown()
            self._server.httpd.server_close()


# --- OSV API -------------------------------------------------------------------------------------


def osv_record(vid: str, package: str, introduced: str, fixed: str | None, summary: str,
               aliases: list[str] | None = None, ecosystem: str = "PyPI") -> dict[str, Any]:
    """An OSV schema 1.x record with one ECOSYSTEM range."""
    events: list[dict[str, str]] = [{"introduced": introduced}]
    if fixed:
        events.append({"fixed": fixed})
    return {
        "schema_version": "1.6.0", "id": vid, "modified": "2024-01-01T00:00:00Z",
        "published": "2018-10-29T00:00:00Z", "aliases": aliases or [], "summary": summary,
        "details": summary + "\n\nMore details.",
        "affected": [{"package": {"ecosystem": ecosystem, "name": package,
                                  "purl": f"pkg:pypi/{package}"},
                      "ranges": [{"type": "ECOSYSTEM", "events": events}]}],
        "references": [{"type": "WEB", "url": f"https://osv.dev/vulnerability/{vid}"}],
    }


def _osv_affects(record: dict[str, Any], ecosystem: str, name: str, version: str) -> bool:
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    for aff in record.get("affected", []):
        pkg = aff.get("package", {})
        if pkg.get("ecosystem") != ecosystem or pkg.get("name", "").lower().replace("_", "-") != name:
            continue
        if version in aff.get("versions", []):
            return True
        for rng in aff.get("ranges", []):
            if rng.get("type") != "ECOSYSTEM":
                continue
            affected = False
            for ev in rng.get("events", []):  # events in order: introduced / fixed pairs
                if "introduced" in ev:
                    affected = affected or ev["introduced"] == "0" or v >= Version(ev["introduced"])
                if "fixed" in ev and v >= Version(ev["fixed"]):
                    affected = False
            if affected:
                return True
    return False


class FakeOsv:
    """An OSV-compatible API (``POST /v1/query``) serving the given records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    @property
    def requests(self) -> list[Recorded]:
        return self._server.requests if self._server else []

    def query(self, q: dict[str, Any]) -> dict[str, Any]:
        pkg = q["package"]
        name = str(pkg["name"]).lower().replace("_", "-")
        hits = [r for r in self.records if _osv_affects(r, str(pkg.get("ecosystem", "")), name, str(q["version"]))]
        return {"vulns": hits} if hits else {}

    def __enter__(self) -> FakeOsv:
        osv = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                body = self._body()
                if self.path.split("?")[0] != "/v1/query":
                    self._record(body.decode(errors="replace"))
                    self._json(404, {"code": 5, "message": "Not Found"})
                    return
                try:
                    q = json.loads(body)
                    if not isinstance(q.get("package"), dict) or "name" not in q["package"] or "version" not in q:
                        raise ValueError("package name and version are required")
                except (ValueError, AttributeError) as exc:
                    self._record(body.decode(errors="replace"))
                    self._json(400, {"code": 3, "message": f"Invalid query: {exc}"})
                    return
                self._record(q)
                self._json(200, osv.query(q))

        self._server = _serve(Handler)
        Handler.server_ref = self._server
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.httpd.shutdown()
            self._server.httpd.server_close()


@contextmanager
def npm_registry(advisories: list[NpmAdvisory], versions: dict[str, list[str]]) -> Iterator[FakeNpmRegistry]:
    with FakeNpmRegistry(advisories, versions) as reg:
        yield reg


@contextmanager
def osv_api(records: list[dict[str, Any]]) -> Iterator[FakeOsv]:
    with FakeOsv(records) as osv:
        yield osv
