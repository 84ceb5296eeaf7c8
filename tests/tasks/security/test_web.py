"""Web checks against real nginx servers with planted faults: one misconfigured, one hardened.

The misconfigured server serves .env, .git/config, .git/HEAD and a SQL dump, reflects any Origin
with credentials, lists a directory, sets a session cookie without flags and sends no security
headers.  The hardened one serves the same planted files behind a dotfile rule, answers every other
path with its SPA index (status 200), redirects HTTP to HTTPS and sends every header.  The
findings must differ exactly as expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from upkeeper.core.task import Severity
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer, server_block
from upkeeper.sandbox.tls import self_signed
from upkeeper.tasks.security.cors import CorsOptions, check_cors
from upkeeper.tasks.security.exposed import ExposedOptions, check_exposed
from upkeeper.tasks.security.headers import HeadersOptions, check_headers
from upkeeper.tasks.security.nginx import NginxOptions, check_nginx

BAD_EXTRA = """
        max_ranges 0;
        add_header Access-Control-Allow-Origin $http_origin always;
        add_header Access-Control-Allow-Credentials true always;
        add_header Set-Cookie "sessionid=s3cr3t; Path=/" always;
        location /files/ { autoindex on; }
"""
HARDENED_HEADERS = """
        server_tokens off;
        ssl_protocols TLSv1.2 TLSv1.3;
        add_header Content-Security-Policy "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'" always;
        add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;
        add_header X-Content-Type-Options nosniff always;
        add_header X-Frame-Options DENY always;
        add_header Referrer-Policy strict-origin-when-cross-origin always;
        add_header Cross-Origin-Resource-Policy same-origin always;
        add_header Set-Cookie "sessionid=s3cr3t; Path=/; Secure; HttpOnly; SameSite=Lax" always;
        location ~ /\\.(?!well-known) { deny all; }
        location / { try_files $uri /index.html; }
"""

ENV = "APP_NAME=shop\nAPP_KEY=base64:Zm9vYmFy\nDB_HOST=10.0.0.5\nDB_PASSWORD=hunter2\n"
GIT_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n[remote \"origin\"]\n\turl = git@example.com:shop.git\n"
DUMP = "--\n-- PostgreSQL database dump\n--\nCREATE TABLE public.users (id integer);\nINSERT INTO users VALUES (1);\n"


def plant(docroot: Path, index: str) -> None:
    (docroot / ".git").mkdir(parents=True, exist_ok=True)
    (docroot / "files").mkdir(exist_ok=True)
    (docroot / "index.html").write_text(index)
    (docroot / ".env").write_text(ENV)
    (docroot / ".git" / "config").write_text(GIT_CONFIG)
    (docroot / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (docroot / "files" / "report.txt").write_text("quarterly numbers\n")
    for root, _dirs, files in os.walk(docroot):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


@dataclass
class Sites:
    nginx: NginxServer
    bad_url: str
    good_url: str
    good_http_url: str
    ca: Path


@pytest.fixture(scope="module")
def sites(services_dir: Path) -> Iterator[Sites]:
    base = services_dir / "web-sec"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    bad_root, good_root = base / "bad", base / "good"
    plant(bad_root, '<html><head><script src="http://cdn.example.net/lib.js"></script></head><body>shop</body></html>')
    # a 4 MB dump from a server that ignores Range: the probe must still read only its first 64 KiB
    (bad_root / "backup.sql").write_text(DUMP + "INSERT INTO users VALUES (2);\n" * 140_000)
    os.chmod(bad_root / "backup.sql", 0o644)
    plant(good_root, '<html><head><script src="/app.js"></script></head><body>spa</body></html>')
    cert = self_signed(base / "tls", "localhost", days=365, hosts=["localhost", "127.0.0.1"])
    bad_port, good_port, redirect_port = free_port(), free_port(), free_port()
    servers = (
        server_block(base, bad_port, bad_root, extra=BAD_EXTRA)
        + server_block(base, good_port, good_root, extra=HARDENED_HEADERS, cert=cert.cert, key=cert.key)
        + server_block(base, redirect_port, good_root,
                       extra=f"        server_tokens off;\n        return 301 https://127.0.0.1:{good_port}$request_uri;\n")
    )
    server = NginxServer(base, port=bad_port, servers=servers)
    server.start()
    yield Sites(server, f"http://127.0.0.1:{bad_port}/", f"https://127.0.0.1:{good_port}/",
                f"http://127.0.0.1:{redirect_port}/", cert.cert)
    server.stop()


def checks(findings: list) -> set[str]:
    return {f.check for f in findings}


def test_exposed_files_found_only_when_content_confirms(sites: Sites) -> None:
    bad = check_exposed(sites.bad_url, ExposedOptions())
    assert checks(bad.findings) == {"security.exposed_files.env", "security.exposed_files.git_config",
                                    "security.exposed_files.git_head", "security.exposed_files.sql_dump"}
    assert all(f.severity is Severity.CRITICAL for f in bad.findings)
    dump = next(f for f in bad.findings if f.check.endswith(".sql_dump"))
    assert dump.subject.endswith("/backup.sql") and "(200, 65536 bytes read" in dump.message
    env = next(f for f in bad.findings if f.check.endswith(".env"))
    assert env.subject.endswith("/.env") and "hunter2" not in str(env.data)  # evidence never leaks the secret
    # the hardened SPA answers 200 with its index for /dump.sql, /backup.zip … and 403 for dotfiles
    good = check_exposed(sites.good_url, ExposedOptions(verify=str(sites.ca)))
    assert good.findings == []
    assert good.metrics["paths_probed"] > 40


def test_exposed_files_of_a_site_that_does_not_answer_are_not_passed() -> None:
    """A site that refused every connection passed: '0 exposed file(s) among 41 path(s) probed', status ok."""
    port = free_port()  # nothing listens there
    out = check_exposed(f"http://127.0.0.1:{port}/", ExposedOptions(timeout=2))
    f = [f for f in out.findings if f.check == "security.exposed_files.unreachable"]
    assert len(f) == 1 and f[0].severity is Severity.WARNING and f[0].value == out.metrics["paths_probed"] > 40
    assert "ConnectError" in f[0].message and out.metrics["exposed"] == 0 and "no usable answer" in out.summary


def test_headers_scored_like_the_observatory(sites: Sites) -> None:
    bad = check_headers(sites.bad_url, HeadersOptions())
    assert bad.metrics["observatory_score"] == 0
    by_check = {f.check: f for f in bad.findings}
    assert set(by_check) == {
        "security.headers.content-security-policy", "security.headers.cookies",
        "security.headers.cross-origin-resource-sharing", "security.headers.redirection",
        "security.headers.strict-transport-security", "security.headers.subresource-integrity",
        "security.headers.x-content-type-options", "security.headers.x-frame-options", "security.headers.grade"}
    assert by_check["security.headers.cookies"].data["result"] == "cookies-session-without-secure-flag"
    assert by_check["security.headers.cookies"].severity is Severity.CRITICAL  # -40
    assert by_check["security.headers.cross-origin-resource-sharing"].value == -50
    assert by_check["security.headers.subresource-integrity"].value == -50
    assert by_check["security.headers.strict-transport-security"].data["result"] == "hsts-not-implemented-no-https"
    assert by_check["security.headers.content-security-policy"].severity is Severity.WARNING
    assert by_check["security.headers.grade"].data["grade"] == "F"

    good = check_headers(sites.good_url, HeadersOptions(http_url=sites.good_http_url, verify=str(sites.ca)))
    assert [f.check for f in good.findings] == ["security.headers.grade"]
    card = good.findings[0].data
    assert card["grade"] == "A+"
    # 100 + CSP default-src 'none' 10 + cookies 5 + referrer 5 + XFO via CSP 5 + CORP 10 = 135, the maximum
    assert card["score"] == 135
    results = {t["test"]: t["result"] for t in card["tests"]}
    assert results["redirection"] == "redirection-to-https"
    assert results["strict-transport-security"] == "hsts-implemented-max-age-at-least-six-months"


def test_unverifiable_certificate_costs_hsts(sites: Sites) -> None:
    # without trusting the self-signed CA the same site loses HSTS (hsts-invalid-cert) and redirection
    out = check_headers(sites.good_url, HeadersOptions(http_url=sites.good_http_url))
    results = {t["test"]: t["result"] for t in out.findings[-1].data["tests"]}
    assert results["strict-transport-security"] == "hsts-invalid-cert"
    assert results["redirection"] == "redirection-invalid-cert"
    assert out.metrics["observatory_score"] == 60  # 100 - 20 - 20, no bonus below 90


def test_cors_reflection_with_credentials_is_critical(sites: Sites) -> None:
    bad = check_cors(sites.bad_url, CorsOptions())
    assert {(f.check, f.data["origin"]) for f in bad.findings} == {
        ("security.cors.reflected_credentials", "https://evil-upkeeper-probe.example"),
        ("security.cors.reflected_credentials", "null")}
    assert all(f.severity is Severity.CRITICAL for f in bad.findings)
    good = check_cors(sites.good_url, CorsOptions(verify=str(sites.ca)))
    assert good.findings == []


def test_nginx_config_findings_per_server(sites: Sites) -> None:
    out = check_nginx(str(sites.nginx.conf), sites.nginx.binary, NginxOptions())
    bad_port = sites.bad_url.rsplit(":", 1)[1].strip("/")
    assert sorted(f.check for f in out.findings) == [
        "security.nginx.autoindex", "security.nginx.dotfiles", "security.nginx.server_tokens"]
    # the hardened TLS server and the redirect-only server give nothing; every finding is the bad server's
    for f in out.findings:
        if f.check == "security.nginx.autoindex":
            assert f.data["file"] == str(sites.nginx.conf)
        else:
            assert f"127.0.0.1:{bad_port}" in f.subject
    assert out.metrics["servers"] == 3


def test_nginx_snippet_included_in_every_server_counts_in_every_server(sites: Sites, tmp_path: Path) -> None:
    """A hardening snippet included in each server block (the usual layout) was parsed for the first server only:
    the second one was reported with server_tokens on and no dotfile rule, which nginx -T shows it has."""
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "hardening.conf").write_text(
        "server_tokens off;\nlocation ~ /\\.(?!well-known) { deny all; }\n")
    servers = "".join(f"  server {{\n    listen 80;\n    server_name {name};\n    include snippets/hardening.conf;\n"
                      f"    location / {{ root /srv/{name}; }}\n  }}\n" for name in ("a.example", "b.example"))
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n" + servers + "}\n")
    out = check_nginx(str(conf), sites.nginx.binary, NginxOptions())
    assert out.findings == [] and out.metrics["servers"] == 2


def test_nginx_default_protocols_of_old_nginx_are_weak(sites: Sites, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "shop.conf").write_text(
        "server { listen 443 ssl; server_name shop.example; server_tokens off;\n"
        "  location ~ /\\. { return 404; } }\n")
    conf.write_text("events {}\nhttp {\n  include sites/*.conf;\n}\n")
    out = check_nginx(str(conf), sites.nginx.binary, NginxOptions())
    assert [f.check for f in out.findings] == ["security.nginx.ssl_protocols"]
    assert "TLSv1, TLSv1.1" in out.findings[0].message and "default" in out.findings[0].message
    assert out.findings[0].data["where"].startswith(str(tmp_path / "sites" / "shop.conf"))


def test_headers_task_through_the_cli(sites: Sites, cli, make_config) -> None:
    cfg = make_config({"targets": {"shop": {"kind": "http", "url": sites.bad_url}},
                       "jobs": {"headers": {"task": "security.headers", "target": "shop"},
                                "exposed": {"task": "security.exposed_files", "target": "shop"}}})
    res = cli(["--config", cfg, "run", "headers", "exposed", "--json"])
    assert res.code == 1, res.output  # critical findings fail the run
    runs = {r["job"]: r for r in res.json()}
    assert runs["headers"]["status"] == "fail" and runs["headers"]["metrics"]["observatory_score"] == 0
    assert runs["exposed"]["metrics"]["exposed"] == 4
