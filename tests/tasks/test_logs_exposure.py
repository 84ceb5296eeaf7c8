"""logs.nginx: sensitive files answered 2xx (a leaked .env, .git/config …) and XML-RPC brute force, on a real nginx."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import pytest

from services import wait_for_log_lines
from upkeeper.logs.access import LoginPath
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.traffic import SITE_EXTRA

from .test_logs_nginx import checks, config, run

LEAKY_ENV = "APP_KEY=base64:0123456789abcdef\nDB_PASSWORD=hunter2-but-longer\nAWS_SECRET_ACCESS_KEY=abc/def\n" * 20
SPA_EXTRA = """\
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location / { try_files $uri /index.html; }
"""


def send(server: NginxServer, reqs: list[tuple[str, str, str]], body: bytes | None = None) -> None:
    """(method, path, client address) requests, each on its own connection; waits for their log lines."""
    before = server.access_log.read_bytes().count(b"\n") if server.access_log.exists() else 0
    for method, path, ip in reqs:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"})
        conn.getresponse().read()
        conn.close()
    wait_for_log_lines(server.access_log, before + len(reqs))


@pytest.fixture
def leaky_nginx(services_dir: Path, tmp_path: Path) -> Any:
    """A site whose docroot holds a real .env and a .git/config, served as static files (the misconfiguration)."""
    server = NginxServer(services_dir / f"leaky-{tmp_path.name}", server_extra=SITE_EXTRA)
    server.docroot.mkdir(parents=True)
    (server.docroot / ".env").write_text(LEAKY_ENV)
    (server.docroot / ".git").mkdir(mode=0o755)
    (server.docroot / ".git" / "config").write_text("[remote \"origin\"]\n\turl = https://tok:x@git.example/app\n")
    for f in (server.docroot / ".env", server.docroot / ".git" / "config"):
        f.chmod(0o644)
    with server:
        yield server


@pytest.fixture
def spa_nginx(services_dir: Path, tmp_path: Path) -> Any:
    """A single-page app: every unknown path answered 200 with index.html (try_files … /index.html)."""
    server = NginxServer(services_dir / f"spa-{tmp_path.name}", server_extra=SPA_EXTRA)
    server.docroot.mkdir(parents=True)
    (server.docroot / "index.html").write_text("<html><body><div id=app></div><script src=/app.js></script>"
                                               "</body></html>\n")
    with server:
        yield server


def test_a_served_env_file_is_a_critical_finding_and_fails_the_run(cli: Any, make_config: Any,
                                                                    leaky_nginx: NginxServer, tmp_path: Path) -> None:
    send(leaky_nginx, [("GET", "/", "192.0.2.10"), ("GET", "/.env", "198.51.100.7"),
                       ("GET", "/.env", "198.51.100.8"), ("GET", "/.git/config", "198.51.100.7"),
                       ("GET", "/.aws/credentials", "198.51.100.7"), ("GET", "/backup.sql", "198.51.100.7")])
    r = run(cli, config(make_config, leaky_nginx, tmp_path))
    assert r["status"] == "fail", r["summary"]
    by = checks(r)
    exposed = {f["subject"]: f for f in by["logs.nginx.exposed_file"]}
    assert set(exposed) == {"/.env", "/.git/config"}  # the others were answered 404: probed, not leaked
    env = exposed["/.env"]
    assert env["severity"] == "critical"
    size = len(LEAKY_ENV.encode())
    assert f"answered 200 with {size:,} bytes" in env["message"], env["message"]
    assert "198.51.100.7" in env["message"] and "198.51.100.8" in env["message"]
    assert env["data"]["clients"] == ["198.51.100.7", "198.51.100.8"]
    assert env["data"]["first"] and env["data"]["bytes"] == [size]
    assert "deny" in env["remediation"] and "rotate" in env["remediation"], env
    # the probes stay counted as probes too
    assert by["logs.nginx.attack.scanner_probe"][0]["value"] == 5


def test_a_single_page_app_answering_every_path_200_is_no_leak(cli: Any, make_config: Any,
                                                                spa_nginx: NginxServer, tmp_path: Path) -> None:
    """Its /.env is index.html: the same bytes as its / — no exposed file, the run is not failed."""
    send(spa_nginx, [("GET", "/", "192.0.2.10"), ("GET", "/.env", "198.51.100.7"),
                     ("GET", "/wp-config.php.bak", "198.51.100.7")])
    r = run(cli, config(make_config, spa_nginx, tmp_path))
    assert "logs.nginx.exposed_file" not in checks(r), r["findings"]
    assert r["status"] != "fail"


def test_a_catch_all_answering_many_sensitive_paths_with_one_size_is_no_leak(
        cli: Any, make_config: Any, spa_nginx: NginxServer, tmp_path: Path) -> None:
    """Without a request for / in the lines read (an incremental run), the same body for three different sensitive
    paths is a catch-all's (or a soft 404's) page, not three files."""
    send(spa_nginx, [("GET", "/.env", "198.51.100.7"), ("GET", "/.git/config", "198.51.100.7"),
                     ("GET", "/.aws/credentials", "198.51.100.7")])
    r = run(cli, config(make_config, spa_nginx, tmp_path))
    assert "logs.nginx.exposed_file" not in checks(r), r["findings"]


def test_a_catch_all_is_recognised_by_its_answer_to_probes_of_paths_the_site_lacks(
        cli: Any, make_config: Any, spa_nginx: NginxServer, tmp_path: Path) -> None:
    """No GET / and a single sensitive path answered with index.html: the same size answered 2xx to probes of
    paths the site does not have (/wp-login.php, /phpmyadmin/) is the catch-all's page; a real .env it serves
    (another size) is still a leak."""
    (spa_nginx.docroot / ".env").write_text(LEAKY_ENV)
    (spa_nginx.docroot / ".env").chmod(0o644)
    send(spa_nginx, [("GET", "/api/.env", "198.51.100.7"), ("GET", "/wp-login.php", "198.51.100.7"),
                     ("GET", "/phpmyadmin/", "198.51.100.7"), ("GET", "/.env", "198.51.100.8")])
    cfg = config(make_config, spa_nginx, tmp_path)
    exposed = checks(run(cli, cfg))["logs.nginx.exposed_file"]
    assert [f["subject"] for f in exposed] == ["/.env"], exposed
    # the next (incremental) run reads one sensitive path only: the size is remembered from this run's probes
    send(spa_nginx, [("GET", "/laravel/.env", "198.51.100.9")])
    r = run(cli, cfg)
    assert "logs.nginx.exposed_file" not in checks(r), r["findings"]


def test_a_catch_all_is_recognised_from_an_earlier_runs_front_page(cli: Any, make_config: Any,
                                                                   spa_nginx: NginxServer, tmp_path: Path) -> None:
    """An incremental run that read no GET / judges the catch-all by the front page's size an earlier run saw;
    a path listed in public_paths is never a finding."""
    cfg = config(make_config, spa_nginx, tmp_path)
    send(spa_nginx, [("GET", "/", "192.0.2.10")])
    run(cli, cfg)
    send(spa_nginx, [("GET", "/.env", "198.51.100.7")])
    r = run(cli, cfg)
    assert "logs.nginx.exposed_file" not in checks(r), r["findings"]
    (spa_nginx.docroot / "dump.sql").write_text("INSERT INTO users VALUES ('a', 'hash');\n")
    (spa_nginx.docroot / "dump.sql").chmod(0o644)
    send(spa_nginx, [("GET", "/dump.sql", "198.51.100.7")])
    assert checks(run(cli, cfg))["logs.nginx.exposed_file"][0]["subject"] == "/dump.sql"
    send(spa_nginx, [("GET", "/dump.sql", "198.51.100.7")])
    r = run(cli, config(make_config, spa_nginx, tmp_path, public_paths=["/dump.*"]))
    assert "logs.nginx.exposed_file" not in checks(r), r["findings"]


# -- WordPress XML-RPC brute force: system.multicall, answered 200 whatever the passwords ----------------------

MULTICALL = ("<?xml version=\"1.0\"?><methodCall><methodName>system.multicall</methodName><params><param><value>"
             "<array><data>" + "".join(
                 "<value><struct><member><name>methodName</name><value><string>wp.getUsersBlogs</string></value>"
                 f"</member><member><name>params</name><value><array><data><value><string>admin</string></value>"
                 f"<value><string>guess{k}</string></value></data></array></value></member></struct></value>"
                 for k in range(200)) + "</data></array></value></param></params></methodCall>").encode()
XMLRPC_EXTRA = SITE_EXTRA + """\
        location = /xmlrpc.php {
            if ($request_method != POST) { return 405 "XML-RPC server accepts POST requests only.\\n"; }
            return 200 "<?xml version=\\"1.0\\"?><methodResponse><params><param><value><array><data><value><struct>
<member><name>faultCode</name><value><int>403</int></value></member><member><name>faultString</name>
<value><string>Incorrect username or password.</string></value></member></struct></value></data></array>
</value></param></params></methodResponse>\\n";
        }
"""


@pytest.fixture
def wordpress_nginx(services_dir: Path, tmp_path: Path) -> Any:
    server = NginxServer(services_dir / f"wp-{tmp_path.name}", server_extra=XMLRPC_EXTRA)
    with server:
        yield server


def test_xmlrpc_multicall_brute_force_is_flagged_as_login_attempts(cli: Any, make_config: Any,
                                                                     wordpress_nginx: NginxServer,
                                                                     tmp_path: Path) -> None:
    """12 system.multicall POSTs of 200 passwords each, all answered 200, from one client: a brute force of login
    attempts; a pingback (one POST) from another client is not."""
    send(wordpress_nginx, [("POST", "/xmlrpc.php", "203.0.113.77")] * 12 + [("POST", "/xmlrpc.php", "192.0.2.44")],
         body=MULTICALL)
    r = run(cli, config(make_config, wordpress_nginx, tmp_path))
    (f,) = checks(r)["logs.nginx.brute_force"]
    assert f["subject"] == "203.0.113.77" and f["value"] == 12
    assert "12 login attempts (POST /xmlrpc.php answered 200" in f["message"], f["message"]
    assert "system.multicall" in f["message"]
    assert r["metrics"]["failed_logins"] == 13
    assert r["status"] == "warn"


def test_an_xmlrpc_login_path_in_a_sub_directory_counts_every_post() -> None:
    assert LoginPath.of("/blog/xmlrpc.php").codes() == {200, 429}
    assert LoginPath.of("/xmlrpc.php").codes() == {200, 429}
    assert LoginPath.of("/login").codes() == {401, 403, 429}


def test_public_and_login_paths_without_a_leading_slash_are_config_errors(cli: Any, make_config: Any) -> None:
    """`public_paths: [downloads/*.sql]` and a bare `login_paths: [login]` were accepted and never matched a
    request (paths are matched from their leading /): the exposed-file finding stayed, the brute force went
    unseen. They are located config errors now, with the path to write instead.  So is a path with a query
    string (`free_text_paths: [/search?q=*]` left every search warned about)."""
    for options, field, fix in (({"public_paths": ["/ok.sql", "downloads/*.sql"]}, "public_paths -> 1", "/downloads/*.sql"),
                                ({"public_paths": [".env.example"]}, "public_paths -> 0", "/.env.example"),
                                ({"login_paths": ["login"]}, "login_paths -> 0", "/login"),
                                # (a query string: requests are matched by their path alone)
                                ({"free_text_paths": ["/search?q=*"]}, "free_text_paths -> 0", "/search"),
                                ({"public_paths": ["/dl?file=*.sql"]}, "public_paths -> 0", "/dl")):
        cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": "/tmp/none.log"}},
                           "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": options}}})
        r = cli(["--config", cfg, "config", "check"])
        err = " ".join(r.err.split())
        assert r.code == 2 and f"jobs -> la -> options -> {field}" in err, r.output
        assert ("is no URL path" in err or "has a query string, so no request would match it" in err) \
            and f"e.g. {fix}" in err, r.output
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": "/tmp/none.log"}},
                       "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": {
                           "public_paths": ["/downloads/*.sql", "*.bak"], "login_paths": ["/login", "*/signin"]}}}})
    assert cli(["--config", cfg, "config", "check"]).code == 0


def test_a_single_page_apps_routes_tell_its_page_and_absolute_lines_are_judged_by_server_names(
        cli: Any, make_config: Any, spa_nginx: NginxServer, tmp_path: Path) -> None:
    """No GET / and a single probe: the routes visitors asked for (/pricing, /login …), all answered with the app's
    index.html, tell its size, so the /.env the scanner got (that page) is no leak and its SQL injection answered 200
    with that page is no 2xx worth a warning.  An absolute request line for the site's own name (server_names) is
    no open-proxy probe; one for another host is."""
    routes = ["/pricing", "/login", "/docs/intro", "/account/settings", "/blog/hello-world"]
    send(spa_nginx, [("GET", r, f"192.0.2.{k}") for k, r in enumerate(routes)]
         + [("GET", "/.env", "198.51.100.7"), ("GET", "/pricing?id=1%27%20or%201%3D1--", "198.51.100.7"),
            ("GET", "http://proxy-judge.example/azenv.php", "198.51.100.8"),
            ("GET", "http://shop.example.net/pricing", "192.0.2.9")])
    r = run(cli, config(make_config, spa_nginx, tmp_path, server_names=["shop.example.net"]))
    by = checks(r)
    assert "logs.nginx.exposed_file" not in by, by.get("logs.nginx.exposed_file")
    (sqli,) = by["logs.nginx.attack.sql_injection"]
    assert sqli["severity"] == "info" and "0 answered 2xx (1 more with the site's catch-all page" in sqli["message"], sqli
    (proxy,) = by["logs.nginx.attack.open_proxy"]
    assert proxy["value"] == 1 and "proxy-judge.example" in proxy["message"], proxy


def send_raw(server: NginxServer, reqs: list[tuple[str, str, str, str]]) -> None:
    """(method, target, client address, referer) requests on a real connection each; waits for their log lines."""
    before = server.access_log.read_bytes().count(b"\n") if server.access_log.exists() else 0
    for method, target, ip, referer in reqs:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, target, headers={"X-Forwarded-For": ip, "Referer": referer,
                                              "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"})
        conn.getresponse().read()
        conn.close()
    wait_for_log_lines(server.access_log, before + len(reqs))


def test_a_prober_naming_its_target_as_its_own_referer_is_still_an_open_proxy_probe(
        cli: Any, make_config: Any, spa_nginx: NginxServer, tmp_path: Path) -> None:
    """Without server_names a referer's host is the site's own only when three or more clients sent it: one prober
    that sends ``Referer: http://evil.example/`` (with its proxy probe, and on requests of its own before it) cannot
    make evil.example the site's, while the site's host, in the referers of its visitors' page views, is."""
    site = "http://shop.example.net/"
    send_raw(spa_nginx, [("GET", p, f"192.0.2.{k}", site) for k, p in enumerate(["/pricing", "/login", "/docs"])]
             + [("GET", "/", "198.51.100.7", "http://evil.example/"),
                ("GET", "/pricing", "198.51.100.7", "http://evil.example/a"),
                ("GET", "http://evil.example/", "198.51.100.7", "http://evil.example/"),
                ("GET", "http://shop.example.net/pricing", "192.0.2.9", site)])
    by = checks(run(cli, config(make_config, spa_nginx, tmp_path)))
    (proxy,) = by["logs.nginx.attack.open_proxy"]
    assert proxy["value"] == 1 and "evil.example" in proxy["message"], proxy


PROBE_SITE_EXTRA = SITE_EXTRA + """\
        location = /actuator/health { default_type application/json; return 200 '{"status":"UP"}'; }
        location /remote.php/dav/ {
            if ($http_authorization = "") { return 401; }
            if ($request_method = PROPFIND) { return 207 "<d:multistatus xmlns:d='DAV:'/>"; }
            return 405;
        }
"""


@pytest.fixture
def php_nginx(services_dir: Path, tmp_path: Path) -> Any:
    """A site with a phpinfo() page left at /info.php, a Spring-style health endpoint and a WebDAV share (an
    authentication challenge, then 207 Multi-Status): what scanners probe for, and what its own clients use."""
    server = NginxServer(services_dir / f"php-{tmp_path.name}", server_extra=PROBE_SITE_EXTRA)
    server.docroot.mkdir(parents=True)
    (server.docroot / "index.html").write_text("<html><body>home</body></html>\n")
    (server.docroot / "info.php").write_text("<table><tr><td>PHP Version</td><td>8.2.7</td></tr></table>\n" * 40)
    for f in server.docroot.iterdir():
        f.chmod(0o644)
    with server:
        yield server


def send_methods(server: NginxServer, reqs: list[tuple[str, str, str, dict[str, str]]]) -> list[int]:
    """(method, path, client address, headers) requests; their statuses, once nginx logged them."""
    before = server.access_log.read_bytes().count(b"\n") if server.access_log.exists() else 0
    out = []
    for method, path, ip, headers in reqs:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path, headers={"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0 Firefox/125.0",
                                            **headers})
        resp = conn.getresponse()
        resp.read()
        out.append(resp.status)
        conn.close()
    wait_for_log_lines(server.access_log, before + len(reqs))
    return out


def test_phpinfo_pages_webdav_and_debug_methods_and_actuator_are_probes_but_not_the_sites_own_use(
        cli: Any, make_config: Any, php_nginx: NginxServer, tmp_path: Path) -> None:
    """A scanner's PROPFIND/MKCOL/DEBUG (answered 405 by a site without WebDAV), /test.php, /actuator/metrics, /.svn,
    /server-info and /wp-config.php.save (answered 404) are scanner probes, and the phpinfo page it found at /info.php
    (answered 200 with a body) is an exposed file; the site's monitoring reading its /actuator/health (200) and a
    WebDAV client's PROPFIND (401, then 207) are neither."""
    auth = {"Authorization": "Basic dTpw"}
    own = [("GET", "/", "192.0.2.10", {}), ("GET", "/actuator/health", "192.0.2.50", {}),
           ("PROPFIND", "/remote.php/dav/files/u/", "192.0.2.60", {"Depth": "1"}),
           ("PROPFIND", "/remote.php/dav/files/u/", "192.0.2.60", {"Depth": "1", **auth})]
    probes = [("PROPFIND", "/", "198.51.100.7", {}), ("MKCOL", "/davtest/", "198.51.100.7", {}),
              ("DEBUG", "/default.aspx", "198.51.100.7", {"Command": "stop-debug"}),
              ("GET", "/test.php", "198.51.100.7", {}), ("GET", "/actuator/metrics", "198.51.100.7", {}),
              ("GET", "/.svn", "198.51.100.7", {}), ("GET", "/server-info", "198.51.100.7", {}),
              ("GET", "/wp-config.php.save", "198.51.100.7", {})]
    statuses = send_methods(php_nginx, [*own, *probes, ("GET", "/info.php", "198.51.100.7", {})])
    assert statuses == [200, 200, 401, 207, 405, 405, 405, 404, 404, 404, 404, 404, 200], statuses
    by = checks(run(cli, config(make_config, php_nginx, tmp_path)))
    (probe,) = by["logs.nginx.attack.scanner_probe"]
    assert probe["value"] == len(probes) and probe["data"]["clients"] == ["198.51.100.7"], probe
    assert not [c for c in by if c.startswith("logs.nginx.attack.") and c != "logs.nginx.attack.scanner_probe"], by
    (info,) = by["logs.nginx.exposed_file"]
    assert (info["subject"], info["severity"], info["data"]["file"]) == ("/info.php", "warning", "php_test_page"), info


def test_public_paths_reach_the_scan_so_the_sites_own_paths_are_no_probes() -> None:
    from upkeeper.tasks.logs.nginx import NginxLogsOptions

    opts = NginxLogsOptions.model_validate({"public_paths": ["/info.php", "/actuator/*"]}).scan_options()
    assert opts.public_paths == ("/info.php", "/actuator/*")


def test_the_sites_own_host_is_remembered_for_a_quiet_incremental_run(
        cli: Any, make_config: Any, spa_nginx: NginxServer, tmp_path: Path) -> None:
    """The host three visitors' referers named in one run is still the site's own in the next run, which reads one
    absolute request line for it and none of those referers; another host is still a probe."""
    site = "http://shop.example.net/"
    send_raw(spa_nginx, [("GET", p, f"192.0.2.{k}", site) for k, p in enumerate(["/pricing", "/login", "/docs"])])
    cfg = config(make_config, spa_nginx, tmp_path)
    assert "logs.nginx.attack.open_proxy" not in checks(run(cli, cfg))
    send_raw(spa_nginx, [("GET", "http://shop.example.net/pricing", "192.0.2.9", "-"),
                         ("GET", "http://evil.example/", "198.51.100.7", "http://evil.example/")])
    (proxy,) = checks(run(cli, cfg))["logs.nginx.attack.open_proxy"]
    assert proxy["value"] == 1 and "evil.example" in proxy["message"], proxy
