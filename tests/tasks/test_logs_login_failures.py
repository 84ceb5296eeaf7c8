"""logs.nginx brute-force detection on form logins that answer a failed login 200 (the form shown again) and a
successful one with a redirect, as WordPress, Django and Drupal do: a real nginx in front of a tiny login app,
real HTTP requests, the real CLI."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from pydantic import ValidationError

from services import wait_for_log_lines
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.tasks.logs.nginx import NginxLogsOptions

PASSWORD = "correct horse"
ATTACKER = "198.51.100.9"  # 12 wrong passwords on /wp-login.php
ADMIN_ATTACKER = "198.51.100.10"  # 12 wrong passwords on Django's /admin/login/
USER = "192.0.2.20"  # a typo, then the right password
EVASIVE = "198.51.100.11"  # 12 wrong passwords on request lines nginx maps to /wp-login.php
EVASIVE_TARGETS = ["//wp-login.php", "/wp-login%2ephp", "http://blog.example/wp-login.php", "/./wp-admin/../wp-login.php"]


class LoginApp(BaseHTTPRequestHandler):
    """``POST`` with the right ``pwd``: 302 to the dashboard (WordPress's wp_safe_redirect, Django's
    HttpResponseRedirect); a wrong one: 200 and the form again (login_header / form_invalid)."""

    def do_GET(self) -> None:
        self._answer(200, b"<form method=post>...</form>\n")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if parse_qs(body).get("pwd") == [PASSWORD]:
            self.send_response(302)
            self.send_header("Location", "/wp-admin/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200, b"<div id=login_error>incorrect password</div><form method=post>...</form>\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def login_site(services_dir: Path) -> Iterator[NginxServer]:
    app = ThreadingHTTPServer(("127.0.0.1", 0), LoginApp)
    thread = threading.Thread(target=app.serve_forever, daemon=True)
    thread.start()
    extra = f"""\
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location /wp-login.php {{ proxy_pass http://127.0.0.1:{app.server_address[1]}; }}
        location /admin/login/ {{ proxy_pass http://127.0.0.1:{app.server_address[1]}; }}
"""
    server = NginxServer(services_dir / "login-nginx", server_extra=extra)
    server.start()
    yield server
    server.stop()
    app.shutdown()
    app.server_close()


def post_login(server: NginxServer, path: str, ip: str, password: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, urlencode({"log": "admin", "pwd": password}),
                     {"X-Forwarded-For": ip, "Content-Type": "application/x-www-form-urlencoded",
                      "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"})
        status = conn.getresponse().status
    finally:
        conn.close()
    return status


@pytest.fixture(scope="module")
def login_log(login_site: NginxServer) -> Path:
    """The access log of a real attack and a real user, as nginx wrote it."""
    statuses = [post_login(login_site, "/wp-login.php?redirect_to=%2Fwp-admin%2F", ATTACKER, f"guess{k}")
                for k in range(12)]
    statuses += [post_login(login_site, "/admin/login/?next=/admin/", ADMIN_ATTACKER, f"guess{k}")
                 for k in range(12)]
    statuses += [post_login(login_site, "/wp-login.php", USER, "correct hrose"),
                 post_login(login_site, "/wp-login.php", USER, PASSWORD)]
    # nginx decodes the path, merges slashes, resolves dot segments and takes the path of an absolute request
    # line before it picks the location: these reach the login too (and are logged as sent)
    statuses += [post_login(login_site, EVASIVE_TARGETS[k % 4], EVASIVE, f"guess{k}") for k in range(12)]
    assert statuses == [200] * 25 + [302] + [200] * 12, statuses
    assert wait_for_log_lines(login_site.access_log, 38) == 38
    return login_site.access_log


def run(cli: Any, make_config: Any, log: Path, tmp_path: Path, **options: Any) -> dict[str, Any]:
    cfg = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(log)}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": "combined_timed", "report_dir": str(tmp_path / "reports"), "incremental": False,
            **options}}},
    })
    res = cli(["--config", str(cfg), "run", "log-analysis", "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out


def brute(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["subject"]: f for f in result["findings"] if f["check"] == "logs.nginx.brute_force"}


def test_form_logins_answered_200_are_failures_by_default(cli: Any, make_config: Any, login_log: Path,
                                                          tmp_path: Path) -> None:
    """WordPress's and Django admin's failed logins are answered 200: with the default login paths both attackers
    are found, and the user who mistyped once before logging in is not."""
    r = run(cli, make_config, login_log, tmp_path)
    found = brute(r)
    assert set(found) == {ATTACKER, ADMIN_ATTACKER, EVASIVE}, r["findings"]
    assert "12 failed logins (POST /wp-login.php answered 200, 401, 403 or 429)" in found[ATTACKER]["message"]
    assert "POST /admin/login/" in found[ADMIN_ATTACKER]["message"]
    assert "12 failed logins (POST /wp-login.php answered" in found[EVASIVE]["message"]
    assert r["metrics"]["failed_logins"] == 37  # 12 + 12 + 12 + the user's typo; the 302 is no failure


def test_failure_status_per_login_path(cli: Any, make_config: Any, login_log: Path, tmp_path: Path) -> None:
    """An entry ``{path, failure_status}`` says which statuses mean a failed login on that path; plain paths keep
    their defaults (401/403 for a path of no known application)."""
    r = run(cli, make_config, login_log, tmp_path,
            login_paths=["/api/login", {"path": "/wp-login.php", "failure_status": "200"}, "/admin/*"])
    assert set(brute(r)) == {ATTACKER, EVASIVE}
    assert r["metrics"]["failed_logins"] == 25
    # a threshold above the attack: nobody
    r = run(cli, make_config, login_log, tmp_path, brute_force_threshold=13)
    assert brute(r) == {}


@pytest.mark.parametrize(("entry", "message"), [
    ({"path": "/login", "failure_status": "2xxx"}, "'2xxx' is not a status code"),
    ({"path": "/login", "failure": "200"}, "Extra inputs are not permitted"),
    ({"failure_status": "200"}, "Field required"),
    ({"path": "login", "failure_status": "200"}, "begins with /"),
])
def test_bad_login_path_entries_are_clear_errors(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NginxLogsOptions.model_validate({"login_paths": [entry]})


class ThrottledApi(BaseHTTPRequestHandler):
    """A JSON login behind a rate limiter, as rack-attack or express-rate-limit make one: a wrong password is
    answered 401, and a client's fourth failure and every later try 429 (too many requests)."""

    failures: dict[str, int] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        client = self.headers.get("X-Forwarded-For", "")
        if self.failures.get(client, 0) >= 3:
            status = 429
        elif parse_qs(body).get("pwd") == [PASSWORD]:
            status = 200
        else:
            self.failures[client] = self.failures.get(client, 0) + 1
            status = 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


THROTTLED = "2001:db8::66"  # 12 wrong passwords: 3 answered 401, then 9 answered 429


def test_tries_a_rate_limiter_refuses_are_failed_logins(services_dir: Path, cli: Any, make_config: Any,
                                                        tmp_path: Path) -> None:
    """A brute force slowed down by a rate limiter is answered 401 a few times, then 429: each try counts; a user
    who mistypes twice and then logs in does not."""
    app = ThreadingHTTPServer(("127.0.0.1", 0), ThrottledApi)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    extra = f"""\
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location /api/login {{ proxy_pass http://127.0.0.1:{app.server_address[1]}; }}
"""
    server = NginxServer(services_dir / "throttled-nginx", server_extra=extra)
    server.start()
    try:
        statuses = [post_login(server, "/api/login", THROTTLED, f"guess{k}") for k in range(12)]
        statuses += [post_login(server, "/api/login", USER, p) for p in ("typo1", "typo2", PASSWORD)]
        assert statuses == [401] * 3 + [429] * 9 + [401, 401, 200], statuses
        assert wait_for_log_lines(server.access_log, 15) == 15
        r = run(cli, make_config, server.access_log, tmp_path)
    finally:
        server.stop()
        app.shutdown()
        app.server_close()
    found = brute(r)
    assert set(found) == {THROTTLED}, r["findings"]
    assert "12 failed logins (POST /api/login answered 401, 403 or 429)" in found[THROTTLED]["message"]
    assert r["metrics"]["failed_logins"] == 14


def _nginx_job_config(tmp_path: Path, job: str, options: str) -> Path:
    """upkeeper.yaml with one logs.nginx job ``job`` whose ``options:`` block is ``options`` (YAML lines indented
    six spaces): its jobs' lines begin at line 6, its options' at line 10."""
    config = tmp_path / "upkeeper.yaml"
    config.write_text(f"""version: 1
history: {tmp_path / 'history.db'}
targets:
  web: {{kind: nginx, access_log: {tmp_path / 'access.log'}}}
jobs:
  {job}:
    task: logs.nginx
    target: web
    options:{options}
""")
    return config


def test_status_specs_given_as_numbers_pass_the_published_schema(cli: Any, tmp_path: Path) -> None:
    """``failure_status: 200`` and ``failed_statuses: 503`` (YAML numbers) are accepted by the config, so the JSON
    Schema that editors validate against (``config schema``) accepts them too; it said string only."""
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    config = _nginx_job_config(tmp_path, "log-analysis", """
      failed_statuses: 503
      login_paths: [/api/token, {path: /login, failure_status: 200}]""")
    assert cli(["--config", config, "config", "check"]).code == 0
    options = NginxLogsOptions.model_validate({"failed_statuses": 503,
                                               "login_paths": [{"path": "/login", "failure_status": 200}]})
    assert options.failed_statuses == "503" and options.login_paths[0].failure_status == "200"  # type: ignore[union-attr]
    schema = json.loads(cli(["config", "schema"]).out)
    jsonschema.validate(YAML(typ="safe").load(config.read_text()), schema)


def test_login_path_errors_name_the_yaml_path_without_union_tags(cli: Any, tmp_path: Path) -> None:
    """A bad login_paths entry's error named a path through the union's internal tags ('login_paths -> 1 -> entry
    -> path', 'login_paths -> 0 -> path' for a bare string): keys the YAML does not have."""
    config = _nginx_job_config(tmp_path, "j", """
      login_paths:
        - login
        - {failure_status: "200"}
        - {path: /x, failure_status: abc}""")
    r = cli(["--config", config, "config", "check"])
    assert r.code == 2 and "Traceback" not in r.err, r.output
    assert "upkeeper.yaml:11: jobs -> j -> options -> login_paths -> 0: 'login' is no URL path" in r.err, r.err
    assert "upkeeper.yaml:12: jobs -> j -> options -> login_paths -> 1 -> path: required key 'path'" in r.err
    assert "upkeeper.yaml:13: jobs -> j -> options -> login_paths -> 2 -> failure_status: 'abc'" in r.err
    assert "entry" not in r.err
