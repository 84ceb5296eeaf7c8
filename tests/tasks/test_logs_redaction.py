"""Secrets in the logs never reach what the log tasks write: the JSON and HTML reports, the run's
--json output and the history database (findings, details, job state).

Each test runs the real task through the real CLI on logs written by real services (nginx, a
Python application's logging, PostgreSQL) and then looks for the secret values everywhere.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import services
from services import wait_for_log_lines
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.traffic import Request, TrafficPlan, drive


def run(cli: Any, cfg: Path, job: str) -> tuple[dict[str, Any], str]:
    res = cli(["--config", str(cfg), "run", job, "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out, res.output


def reports(result: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The run's JSON report (parsed and as text) and its HTML report; latest.* must be the same files."""
    jpath = Path(next(a["path"] for a in result["artifacts"] if a["format"] == "json"))
    hpath = Path(next(a["path"] for a in result["artifacts"] if a["format"] == "html"))
    jtext, html = jpath.read_text(), hpath.read_text()
    assert (jpath.parent / "latest.json").read_text() == jtext
    assert (hpath.parent / "latest.html").read_text() == html
    return json.loads(jtext), jtext, html


def history_text(db: Path) -> str:
    """Every value of every row of every table of the SQLite history, as one text."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"runs", "findings", "job_state"} <= set(tables), tables
        return "\n".join(repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))
    finally:
        con.close()


def run_app_log(cli: Any, make_config: Any, tmp_path: Path, log: Path) -> tuple[dict[str, Any], str, str, str]:
    """A logs.errors job over application log ``log`` run: its JSON report (read and as text), HTML report and the
    run's --json output."""
    cfg = make_config({"targets": {"web": {"kind": "nginx", "error_log": str(tmp_path / "none.log")}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web", "options": {
                           "error_log": str(log), "app_logs": [str(log)], "report_dir": str(tmp_path / "reports")}}}})
    r, out = run(cli, cfg, "errors")
    data, jtext, html = reports(r)
    return data, jtext, html, out


def assert_hidden(secrets: list[str], **places: str) -> None:
    leaks = [(s, where) for s in secrets for where, text in places.items() if s in text]
    assert not leaks, f"secret values written out: {leaks}"


# -- logs.nginx --------------------------------------------------------------------------------

NGINX_SECRETS = ["TOKplain1111", "TOKaccess2222", "TOKsig3333", "TOKapikey4444", "TOKpw5555", "TOKattack6666",
                 "TOKreferer7777", "TOKunparsed8888"]


def test_access_log_secrets_stay_out_of_reports_json_and_history(
        cli: Any, make_config: Any, fresh_site_log: NginxServer, tmp_path: Path) -> None:
    ip, ua = "192.0.2.44", "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"
    reqs = [Request("GET", "/api/v1/reset?token=TOKplain1111&lang=en", ip, ua)] * 3 + [
        Request("GET", "/api/oauth/callback?access_token=TOKaccess2222&state=abc", ip, ua),
        Request("GET", "/api/download?X-Amz-Signature=TOKsig3333&X-Amz-Expires=60", ip, ua),
        Request("GET", "/api/v1/me?apiKey=TOKapikey4444", ip, ua),
        Request("GET", "/search?q=x&password=TOKpw5555", ip, ua),
        Request("GET", "/search?q=1%27%20OR%201%3D1--&access_token=TOKattack6666", "198.51.100.9", ua),
        Request("GET", "/about.html", ip, ua, referer="https://partner.example/cb?access_token=TOKreferer7777"),
        Request("GET", "/search?q=beach+house&page=2", ip, ua),
        Request("GET", "/search?keyword=loft&author=ann", ip, ua),
    ]
    sent = drive(fresh_site_log.url, TrafficPlan(reqs))
    assert not sent.errors and sent.sent == len(reqs)
    wait_for_log_lines(fresh_site_log.access_log, len(reqs))
    with open(fresh_site_log.access_log, "ab") as fh:  # a line nginx did not write: kept as a sample
        fh.write(b"corrupted GET /reset?access_token=TOKunparsed8888 entry\n")
    cfg = make_config({"targets": {"web": fresh_site_log.target()},
                       "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "report_dir": str(tmp_path / "reports")}}}})
    r, out = run(cli, cfg, "log-analysis")
    data, jtext, html = reports(r)
    assert_hidden(NGINX_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    # the findings that quote those lines are still there, with the secret masked
    checks = {f["check"]: f for f in r["findings"]}
    assert "access_token=***" in checks["logs.nginx.attack.sql_injection"]["message"]
    assert "/reset?access_token=***" in checks["logs.nginx.unparsed"]["data"]["sample"]
    # counts and grouping are untouched; the paths and the other parameters are still shown
    assert data["requests"] == len(reqs) and data["invalid"] == 1
    requested = {x["data"]: x["hits"] for x in data["goaccess"]["requests"]}
    assert requested["/api/v1/reset?token=***&lang=en"] == 3
    assert "/api/oauth/callback?access_token=***&state=abc" in requested
    assert "/api/download?X-Amz-Signature=***&X-Amz-Expires=60" in requested
    assert "/api/v1/me?apiKey=***" in requested
    assert requested["/search?q=beach+house&page=2"] == 1  # no credential-like parameter: as logged
    assert requested["/search?keyword=loft&author=ann"] == 1
    assert {x["path"]: x["hits"] for x in data["top"]["paths"]}["/api/v1/reset"] == 3
    assert "https://partner.example/cb?access_token=***" in {x["referer"] for x in data["top"]["referers"]}
    assert "/api/v1/reset?token=***&amp;lang=en" in html and "/search?q=beach+house&amp;page=2" in html


def test_urls_that_differ_only_in_a_masked_credential_are_one_row_of_the_html(
        cli: Any, make_config: Any, fresh_site_log: NginxServer, tmp_path: Path) -> None:
    """Five password-reset links (one token each) showed in the HTML's requested files as five identical rows
    '/api/v1/reset?token=***&lang=en … 1' once masked; they are one row now, with its 5 hits and 5 URLs."""
    ip, ua = "192.0.2.45", "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"
    reqs = [Request("GET", f"/api/v1/reset?token=TOKrow{i}x&lang=en", ip, ua) for i in range(5)]
    reqs += [Request("GET", "/about.html", ip, ua)] * 2
    assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == len(reqs)
    wait_for_log_lines(fresh_site_log.access_log, len(reqs))
    cfg = make_config({"targets": {"web": fresh_site_log.target()},
                       "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "report_dir": str(tmp_path / "reports")}}}})
    r, _out = run(cli, cfg, "log-analysis")
    data, _jtext, html = reports(r)
    assert len(data["goaccess"]["requests"]) == 6  # the JSON keeps GoAccess's rows (masked)
    section = html[html.index("Requested files"):html.index("Security signals")]
    rows = [re.sub(r"<[^>]+>", "|", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    reset = [row for row in rows if "/api/v1/reset?token=***&amp;lang=en" in row]
    assert len(reset) == 1, rows
    assert re.search(r"\|5\|+5\|", reset[0]), reset[0]  # 5 URLs, 5 hits
    assert "5 URLs that differ only in a masked credential" in section


# the format of a site that logs its clients' credentials: nginx escapes '"' inside values (\x22)
CREDENTIAL_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
                     '"$http_user_agent" "$http_authorization" "$http_cookie" "$http_x_api_key"')
CREDENTIAL_SECRETS = ["YWRtaW46aHVudGVyMg==", "LEAKEDSESSION1", "XKEYsecret1", "opaqueAUTH2value", "LEAKEDSESSION2",
                      "TOKbearer3", "LEAKEDCSRF3", "LEAKEDSESSION3", "TOKvalid", "SESSvalid", "XKEYvalid",
                      "admin:hunter2"]


def test_credentials_in_unparsed_lines_stay_out(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Lines that do not parse are kept as samples (report, finding data); with a log_format that logs
    $http_authorization and $http_cookie, the credentials in them must be masked: by the format's fields
    when the line can be cut by its quotes (so an opaque API key or Authorization value is hidden too),
    else by their shape (Basic/Bearer values, session cookies)."""
    head = '192.0.2.50 - - [01/Mar/2024:10:00:{s:02d} +0000] "GET /a HTTP/1.1"'
    good = [f'{head.format(s=i)} 200 5 "-" "ua" "Bearer TOKvalid{i:04d}" "SESSvalid{i}=x; sessionid=SESSvalid{i}" '
            f'"XKEYvalid{i}"' for i in range(40)]
    bad = [  # a status that is no number: not a request GoAccess counts
        f'{head.format(s=50)} 2OO 5 "-" "ua" "Basic YWRtaW46aHVudGVyMg==" "sessionid=LEAKEDSESSION1; lang=en" '
        '"XKEYsecret1"',
        f'{head.format(s=51)} 2OO 5 "-" "ua" "opaqueAUTH2value" "lang=en; PHPSESSID=LEAKEDSESSION2" "-"',
        # cut short (no closing quote): the fields cannot be told apart, the values' shapes are masked
        f'{head.format(s=52)} 2OO 5 "-" "ua" "Bearer eyJhbGciOiJIUzI1NiJ9.TOKbearer3.c2ln" '
        '"csrftoken=LEAKEDCSRF3; sessionid=LEAKEDSESSION3',
    ]
    log = tmp_path / "access.log"
    log.write_text("\n".join(good[:20] + bad + good[20:]) + "\n")
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": CREDENTIAL_FORMAT, "report_dir": str(tmp_path / "reports")}}}})
    r, out = run(cli, cfg, "log-analysis")
    data, jtext, html = reports(r)
    assert_hidden(CREDENTIAL_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    # the lines are still counted and shown, with the credentials masked
    assert data["requests"] == 40 and data["invalid"] == 3
    samples = [x["line"] for x in data["invalid_samples"]]
    assert samples[0] == f'{head.format(s=50)} 2OO 5 "-" "ua" "***" "***" "***"'
    assert samples[1] == f'{head.format(s=51)} 2OO 5 "-" "ua" "***" "***" "-"'
    assert samples[2] == (f'{head.format(s=52)} 2OO 5 "-" "ua" "Bearer ***" "csrftoken=***; sessionid=***')
    unparsed = next(f for f in r["findings"] if f["check"] == "logs.nginx.unparsed")
    assert unparsed["data"]["sample"] == samples[0]


# -- logs.errors -------------------------------------------------------------------------------

def write_app_log(path: Path, messages: list[str]) -> None:
    services.write_app_log(path, [ConnectionError(m) for m in messages], "cannot reach the database")


ERROR_SECRETS = ["DsnPassFirst", "DsnPassSecond", "TOKupstream1212"]


def test_error_log_and_exception_secrets_stay_out(cli: Any, make_config: Any, site_nginx: NginxServer,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "app" / "production.log"
    log.parent.mkdir()
    # the nginx error log quotes the request line: "GET /upstream/…?access_token=… HTTP/1.1"; the
    # lines nginx writes for this request are read from a copy (the session's log has other tests' lines)
    start = site_nginx.error_log.stat().st_size if site_nginx.error_log.exists() else 0
    sent = drive(site_nginx.url, TrafficPlan([Request("GET", "/upstream/export?access_token=TOKupstream1212&fmt=csv",
                                                      "192.0.2.45", "ua")]))
    assert sent.sent == 1
    deadline = time.monotonic() + 10
    while b"TOKupstream1212" not in (new := site_nginx.error_log.read_bytes()[start:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    error_log = tmp_path / "error.log"
    error_log.write_bytes(new[: new.rindex(b"\n") + 1])
    assert b"access_token=TOKupstream1212" in error_log.read_bytes()
    write_app_log(log, ["could not connect to postgresql://shop:DsnPassFirst@db.internal/shop"])
    cfg = make_config({"targets": {"web": site_nginx.target()},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web", "options": {
                           "error_log": str(error_log), "app_logs": [str(log)],
                           "report_dir": str(tmp_path / "reports")}}}})
    first, out1 = run(cli, cfg, "errors")
    data1, jtext1, html1 = reports(first)
    # a second run, where the exception group is new: its finding carries the traceback as an example
    write_app_log(log, ["broker redis://:DsnPassSecond@cache.internal:6379/0 refused the connection"])
    second, out2 = run(cli, cfg, "errors")
    data2, jtext2, html2 = reports(second)
    assert_hidden(ERROR_SECRETS, json_report=jtext1 + jtext2, html_report=html1 + html2, run_json=out1 + out2,
                  history=history_text(tmp_path / "history.db"))
    assert any("/upstream/export?access_token=***&fmt=csv" in c["example"] for c in data1["nginx"]["classes"])
    assert "postgresql://shop:***@db.internal/shop" in data1["app"]["exception_groups"][0]["example"]
    new = [f for f in second["findings"] if f["check"] == "logs.errors.new_exception"]
    assert len(new) == 1 and "redis://:***@cache.internal:6379/0" in new[0]["data"]["example"]



PHP_SECRETS = ["FpmPdoPw9", "LaravelPw7", "MysqliPw5"]


def test_php_stack_frame_passwords_stay_out(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """PHP writes the arguments of each stack frame (zend.exception_ignore_args off: no php.ini, as in the
    official Docker images), so a failed database connection's trace holds its password — in the PHP-FPM
    message nginx relays into its error log and in Laravel's log; the password argument is masked."""
    error_log = tmp_path / "error.log"
    error_log.write_text(
        '2026/12/06 10:00:08 [error] 1234#1234: *12 FastCGI sent in stderr: "PHP message: PHP Fatal error:  Uncaught '
        "PDOException: SQLSTATE[HY000] [1045] Access denied for user 'app'@'localhost' in /var/www/db.php:5\n"
        "Stack trace:\n#0 /var/www/db.php(5): PDO->__construct('mysql:host=loca...', 'app', 'FpmPdoPw9')\n"
        '#1 {main}\n  thrown in /var/www/db.php on line 5" while reading response header from upstream, client: '
        '192.0.2.1, server: x, request: "GET / HTTP/1.1", upstream: "fastcgi://unix:/run/php/fpm.sock:", host: "x"\n')
    app_log = tmp_path / "laravel.log"
    app_log.write_text(
        "[2026-12-06 10:00:09] production.ERROR: SQLSTATE[HY000] [2002] Connection refused "
        '{"exception":"[object] (PDOException(code: 2002): SQLSTATE[HY000] [2002] Connection refused at '
        "/var/www/vendor/laravel/framework/src/Illuminate/Database/Connectors/Connector.php:70)\n"
        "[stacktrace]\n"
        "#0 /var/www/vendor/laravel/framework/src/Illuminate/Database/Connectors/Connector.php(70): "
        "PDO->__construct('mysql:host=127....', 'forge', 'LaravelPw7', Array)\n"
        "#1 /var/www/vendor/laravel/framework/src/Illuminate/Database/Connectors/Connector.php(46): "
        "Illuminate\\Database\\Connectors\\Connector->createPdoConnection('mysql:host=127....', 'forge', "
        "'LaravelPw7', Array)\n"
        "#2 /var/www/app/Legacy.php(12): mysqli_real_connect(Object(mysqli), 'db', 'root', 'MysqliPw5')\n"
        "#3 {main}\n"
        '"} \n')
    cfg = make_config({"targets": {"web": {"kind": "nginx", "error_log": str(error_log)}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web", "options": {
                           "app_logs": [str(app_log)], "report_dir": str(tmp_path / "reports")}}}})
    r, out = run(cli, cfg, "errors")
    data, jtext, html = reports(r)
    assert_hidden(PHP_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    examples = "\n".join(g["example"] for g in data["app"]["exception_groups"])
    assert "PDO->__construct('mysql:host=loca...', 'app', '***')" in examples
    assert "PDO->__construct('mysql:host=127....', 'forge', '***', Array)" in examples
    assert "mysqli_real_connect(Object(mysqli), 'db', 'root', '***')" in examples


KEYED_SECRETS = ["JsonFieldPw1", "DictClientSec2", "DictApiKey3", "AwsSecretKey4"]


def test_credentials_under_a_key_in_application_logs_stay_out(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """An application logging a request body or a settings dict writes its credentials under a key: a JSON line's
    "password" field, a Python dict's 'client_secret' in an exception's message, aws_secret_access_key=… in
    text. They reached the exception examples and messages of the reports whole."""
    log = tmp_path / "app.log"
    log.write_text(
        '{"level":"error","msg":"login failed","user":"bob","password":"JsonFieldPw1","err":"invalid credentials"}\n'
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
        "ValueError: bad payload {'client_secret': 'DictClientSec2', 'api_key': 'DictApiKey3'}\n"
        "2026-12-06 10:00:00,000 ERROR boto: upload failed\nTraceback (most recent call last):\n"
        "  File \"b.py\", line 2, in g\nRuntimeError: signing with aws_secret_access_key=AwsSecretKey4 failed\n")
    data, jtext, html, out = run_app_log(cli, make_config, tmp_path, log)
    assert_hidden(KEYED_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    messages = {g["message"] for g in data["app"]["exception_groups"]}
    assert "bad payload {'client_secret': '***', 'api_key': '***'}" in messages, messages
    res = cli(["logs", "errors", str(log), "--json"])
    assert res.code == 0 and not [s for s in KEYED_SECRETS if s in res.output], res.output

SHAPED_SECRETS = ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJleHAiOjE3OTY2OTA0MDB9.Sgn4tUrEx9QkP2ZbF0mVcRyW",
                  "ghp_Tk9x4Qz2Lm8Rv6Wp3Ys1Nb7Hc5Jd0Fg2Ka4M", "sk_live_51HqTkx9Zy8Wv7Ut6Sr5Qp4On",
                  "AKIAZQ3DRSX4EXAMPLE7", "CliPassword9"]


def test_tokens_of_a_known_shape_stay_out(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """An exception's message with a bare token in it — jsonwebtoken's ``jwt malformed``-style messages, a URL
    path, a client's error quoting its key, a command line's ``--password VALUE`` — no ``token=`` or
    ``password:`` before it: they reached the examples of the reports, the run's --json and the history whole."""
    jwt, ghp, stripe, aws, cli_pw = SHAPED_SECRETS
    log = tmp_path / "app.log"
    log.write_text(
        f'{{"level":50,"msg":"auth failed","err":{{"type":"JsonWebTokenError","message":"invalid signature",'
        f'"stack":"JsonWebTokenError: invalid signature for {jwt}\\n    at verify (/app/auth.js:9:11)"}}}}\n'
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
        f"RuntimeError: GET https://api.github.com/repos/x with {ghp} returned 401\n"
        "Traceback (most recent call last):\n  File \"b.py\", line 2, in g\n"
        f"stripe.error.AuthenticationError: Invalid API Key provided: {stripe}\n"
        "Traceback (most recent call last):\n  File \"c.py\", line 3, in h\n"
        f"botocore.exceptions.ClientError: The security token for {aws} is invalid\n"
        "Traceback (most recent call last):\n  File \"d.py\", line 4, in i\n"
        f"subprocess.CalledProcessError: Command 'mysqldump --password {cli_pw} shop' returned non-zero exit "
        "status 2.\n")
    data, jtext, html, out = run_app_log(cli, make_config, tmp_path, log)
    assert_hidden(SHAPED_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    assert len(data["app"]["exception_groups"]) == 5
    examples = "\n".join(g["example"] for g in data["app"]["exception_groups"])
    assert "with ghp_*** returned 401" in examples and "Invalid API Key provided: sk_live_***" in examples
    res = cli(["logs", "errors", str(log), "--json"])
    assert res.code == 0 and not [s for s in SHAPED_SECRETS if s in res.output], res.output


# -- logs.postgres -----------------------------------------------------------------------------

PG_SECRETS = ["PgCreatePw", "PgAlterPw", "PgErrorPw", "PgDsnPw", "PgTypoPw"]


@contextlib.contextmanager
def _running_cluster(path: Path, conf: str) -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of its own, logging with ``conf``, stopped when the block ends."""
    cluster = PostgresCluster(path, extra_conf=conf)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _run_pg_logs(cli: Any, make_config: Any, cluster: PostgresCluster, tmp_path: Path) -> Any:
    """A logs.postgres job over ``cluster``'s log, run: what :func:`run` returns."""
    cfg = make_config({"targets": {"db": cluster.target("postgres")},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(cluster.log), "report_dir": str(tmp_path / "reports")}}}})
    return run(cli, cfg, "pg-logs")


def test_statement_secrets_stay_out(cli: Any, make_config: Any, services_dir: Path, tmp_path: Path) -> None:
    with _running_cluster(services_dir / "pg-redact", pgworkload.LOGGING_CONF) as cluster:
        with cluster.connect() as c:
            c.execute("DROP ROLE IF EXISTS upk_redact")
            c.execute("CREATE ROLE upk_redact LOGIN PASSWORD 'PgCreatePw'")
            c.execute("ALTER ROLE upk_redact WITH PASSWORD 'PgAlterPw'")
            c.execute("SELECT 'postgresql://app:PgDsnPw@db.internal/app' AS dsn")
        with cluster.connect() as c:
            try:
                c.execute("CREATE ROLE upk_redact PASSWORD 'PgErrorPw'")  # 42710: the role exists
            except Exception as exc:
                assert "already exists" in str(exc)
            else:
                raise AssertionError("CREATE ROLE of an existing role succeeded")
        with cluster.connect() as c, pytest.raises(Exception, match="unrecognized role option"):
            c.execute("ALTER ROLE upk_redact PASSWRD 'PgTypoPw'")  # 42601: logged whole, with the password
        assert "PgTypoPw" in cluster.log.read_text()
        r, out = _run_pg_logs(cli, make_config, cluster, tmp_path)
    data, jtext, html = reports(r)
    assert_hidden(PG_SECRETS, json_report=jtext, html_report=html, run_json=out,
                  history=history_text(tmp_path / "history.db"))
    # the statements are still there and grouped as before, only the literals are masked
    fps = {q["fingerprint"]: q for q in data["most_frequent"]}
    assert fps["alter role upk_redact with password ?"]["example"] == "ALTER ROLE upk_redact WITH PASSWORD ***"
    assert fps["create role upk_redact login password ?"]["count"] == 1
    assert fps["select ? as dsn"]["example"] == "SELECT 'postgresql://app:***@db.internal/app' AS dsn"
    dup = next(e for e in data["errors"]["classes"] if e["sqlstate"] == "42710")
    assert dup["statements"] == ["CREATE ROLE upk_redact PASSWORD ***"]
    typo = next(e for e in data["errors"]["classes"] if e["message"].startswith("unrecognized role option"))
    assert typo["statements"] == ["ALTER ROLE upk_redact PASSWRD '***'"]
    assert "ALTER ROLE upk_redact WITH PASSWORD ***" in html


CRYPTO_SECRETS = ["PgCryptLogin", "PgCryptNew", "PgSymKey", "PgHmacKey", "PgCryptFailed"]


def test_pgcrypto_passwords_and_keys_stay_out(cli: Any, make_config: Any, services_dir: Path, tmp_path: Path) -> None:
    """An application that checks its users' passwords in SQL, as pgcrypto's documentation shows
    (crypt('entered password', pswhash)), had each user's password in plain text in the examples of the report,
    --json and the HTML (log_min_duration_statement = 0 logs every statement); pgp_sym_encrypt's and hmac's keys
    the same."""
    with _running_cluster(services_dir / "pg-redact-crypto", pgworkload.LOGGING_CONF) as cluster:
        with cluster.connect() as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            c.execute("CREATE TABLE IF NOT EXISTS upk_users (name text PRIMARY KEY, pswhash text, note bytea)")
            c.execute("INSERT INTO upk_users VALUES ('bob', crypt('PgCryptNew', gen_salt('bf', 4)), "
                      "pgp_sym_encrypt('note', 'PgSymKey')) ON CONFLICT (name) DO NOTHING")
            c.execute("SELECT pswhash = crypt('PgCryptLogin', pswhash) AS ok FROM upk_users WHERE name = 'bob'")
            c.execute("SELECT encode(hmac('payload', 'PgHmacKey', 'sha256'), 'hex')")
            with pytest.raises(Exception, match="upk_nope"):
                c.execute("SELECT crypt('PgCryptFailed', pswhash) FROM upk_nope")
        r, out = _run_pg_logs(cli, make_config, cluster, tmp_path)
        cli_out = cli(["logs", "postgres", str(cluster.log), "--json", "--prefix", pgworkload.LOG_LINE_PREFIX]).output
    assert all(s in cluster.log.read_text() for s in CRYPTO_SECRETS)  # the server did log them
    data, jtext, html = reports(r)
    assert_hidden(CRYPTO_SECRETS, json_report=jtext, html_report=html, run_json=out, cli_json=cli_out,
                  history=history_text(tmp_path / "history.db"))
    examples = {q["example"] for q in data["most_frequent"]}
    assert "SELECT pswhash = crypt('***', pswhash) AS ok FROM upk_users WHERE name = 'bob'" in examples, examples


STRUCT_SECRETS = ["PgStCreatePw", "PgStDollarPw", "PgStTagPw", "PgStUnicodePw", "PgStKvPw", "PgStDsnPw",
                  "PgStErrorPw", "PgStBadRecordPw"]
STRUCT_CONF = pgworkload.LOGGING_CONF + (
    "log_destination = 'stderr,csvlog,jsonlog'\nlogging_collector = on\nlog_directory = 'log'\n"
    "log_filename = 'postgresql.log'\nlog_rotation_size = 0\n")


@pytest.mark.parametrize("fmt", ["stderr", "csvlog", "jsonlog"])
def test_statement_secrets_stay_out_of_every_log_format(cli: Any, make_config: Any, services_dir: Path,
                                                        tmp_path: Path, fmt: str) -> None:
    """Every form of string constant PostgreSQL takes as a password — '…', E'…', U&'…', $$…$$, $tag$…$tag$ — and
    conninfo/URL passwords are masked in the report of each log format, also in an error's statement and in a
    damaged record kept as an unparsed sample."""
    with _running_cluster(services_dir / f"pg-redact-{fmt}", STRUCT_CONF) as cluster, cluster.connect() as c:
        c.execute("DROP ROLE IF EXISTS upk_redact")
        c.execute("CREATE ROLE upk_redact LOGIN PASSWORD E'PgStCreatePw'")
        c.execute("ALTER ROLE upk_redact PASSWORD $$PgStDollarPw$$ VALID UNTIL 'infinity'")
        c.execute("ALTER ROLE upk_redact PASSWORD $pw$PgStTagPw$pw$")
        c.execute("ALTER ROLE upk_redact PASSWORD U&'PgStUnicodePw'")
        c.execute("SELECT 'host=db user=app password=PgStKvPw' AS conninfo, "
                  "'postgresql://app:PgStDsnPw@db.internal/app' AS dsn")
        with pytest.raises(Exception, match="timestamp"):
            c.execute("ALTER ROLE upk_redact PASSWORD $$PgStErrorPw$$ VALID UNTIL 'bogus'")
    name = {"stderr": "postgresql.log", "csvlog": "postgresql.csv", "jsonlog": "postgresql.json"}[fmt]
    log = cluster.data / "log" / name
    with log.open("a") as fh:  # a record cut short (a crash while writing): kept as an unparsed sample
        fh.write({"stderr": "2026-12-05 00:00:00.000 UTC [1] LOG  statement: ALTER ROLE x PASSWORD $$PgStBadRecordPw\n",
                  "csvlog": '2026-12-05 00:00:00.000 UTC,"app","db",1,,,,,,,,"LOG","00000","statement: ALTER ROLE x '
                            "PASSWORD $$PgStBadRecordPw$$\"\n",
                  "jsonlog": '{"timestamp":"2026-12-05 00:00:00.000 UTC","message":"statement: ALTER ROLE x PASSWORD '
                             "$$PgStBadRecordPw$$\n"}[fmt])
    opts: dict[str, Any] = {"log_file": str(log), "report_dir": str(tmp_path / "reports"), "unparsed_warn_pct": 0}
    if fmt == "stderr":
        opts["log_line_prefix"] = pgworkload.LOG_LINE_PREFIX
    else:
        opts["format"] = fmt
    cfg = make_config({"targets": {"db": cluster.target("postgres")},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": opts}}})
    r, out = run(cli, cfg, "pg-logs")
    data, jtext, html = reports(r)
    assert data["unparsed"] >= 1, data
    cli_out = cli(["logs", "postgres", str(log), "--json", "--format", fmt,
                   *(["--prefix", pgworkload.LOG_LINE_PREFIX] if fmt == "stderr" else [])]).output
    assert_hidden(STRUCT_SECRETS, json_report=jtext, html_report=html, run_json=out, cli_json=cli_out,
                  history=history_text(tmp_path / "history.db"))
    examples = {q["example"] for q in data["most_frequent"]}
    assert "ALTER ROLE upk_redact PASSWORD *** VALID UNTIL 'infinity'" in examples, examples
    assert "ALTER ROLE upk_redact PASSWORD ***" in examples, examples
