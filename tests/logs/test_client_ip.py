"""nginx behind a load balancer: every $remote_addr is the balancer's, the clients are in X-Forwarded-For.

A real nginx plays both parts: a balancer server that appends the address it got each request from
(``proxy_add_x_forwarded_for``), and the site behind it, logging nginx's ``main`` format (+ $request_time).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logs.goaccess_helpers import SCAN_PATHS, assert_same_as_goaccess, goaccess, goaccess_numbers, ours
from services import wait_for_log_lines
from upkeeper.logs.clientip import DEFAULT_TRUSTED_PROXIES, ClientResolver
from upkeeper.logs.nginx_format import to_goaccess
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer

MAIN_TIMED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" "$http_x_forwarded_for" $request_time')

LB_SERVERS = """
    log_format main_timed '{fmt}';
    server {{
        listen 127.0.0.1:{lb};
        access_log off;
        location / {{
            proxy_pass http://127.0.0.1:{site};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
    server {{
        listen 127.0.0.1:{site};
        root {base}/www;
        access_log {base}/access.log main_timed;
        location = /login {{ return 401; }}
    }}
"""


def _request(port: int, path: str, xff: str | None = None, method: str = "GET", agent: str = "Mozilla/5.0") -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"user=a&password=b" if method == "POST" else None)
    req.add_header("User-Agent", agent)
    if xff is not None:
        req.add_header("X-Forwarded-For", xff)
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as exc:
        exc.read()


@pytest.fixture(scope="module")
def balanced_log(services_dir: Path) -> Iterator[Path]:
    """The site's access log after traffic from 42 clients, all of it through the balancer."""
    base = services_dir / "balanced-nginx"
    lb, site = free_port(), free_port()
    server = NginxServer(base, port=lb, servers=LB_SERVERS.format(fmt=MAIN_TIMED, lb=lb, site=site, base=base))
    server.start()
    try:
        for i in range(40):  # visitors, each behind the client's own address
            _request(lb, "/", f"203.0.113.{i}")
        for i in range(25):  # one client probing for files
            _request(lb, f"/backup{i}.zip", "198.51.100.7")
        for _ in range(12):  # another one guessing passwords
            _request(lb, "/login", "198.51.100.8", method="POST")
        wait_for_log_lines(server.access_log, 77)
    finally:
        server.stop()
    yield server.access_log


def _clients(rep: dict[str, Any]) -> set[str]:
    return {h["ip"] for h in rep["top"]["hosts"]}


def test_by_default_the_balancer_is_every_client_and_that_is_reported(balanced_log: Path) -> None:
    rep = ours(balanced_log, fmt=MAIN_TIMED)
    assert rep["visitors"] == 1 and _clients(rep) == {"127.0.0.1"}
    proxy = rep["clients"]["proxy"]
    assert proxy is not None and proxy["ip"] == "127.0.0.1" and proxy["share_pct"] == 100.0
    assert proxy["forwarded_for_distinct"] == 42


@pytest.mark.parametrize("path", list(SCAN_PATHS))
def test_x_forwarded_for_gives_the_real_clients_on_every_path(balanced_log: Path, path: str) -> None:
    rep = ours(balanced_log, fmt=MAIN_TIMED, client_ip="x_forwarded_for", **SCAN_PATHS[path])
    assert rep["requests"] == 77 and rep["visitors"] == 40  # the prober and the guesser got 4xx only
    assert rep["top"]["hosts"][:2] == [{"ip": "198.51.100.7", "hits": 25}, {"ip": "198.51.100.8", "hits": 12}]
    assert [b["ip"] for b in rep["security"]["not_found_bursts"]] == ["198.51.100.7"]
    assert [b["ip"] for b in rep["security"]["brute_force"]] == ["198.51.100.8"]
    assert rep["clients"]["proxy"] is None


def test_x_forwarded_for_numbers_equal_goaccess_with_its_xff_specifier(balanced_log: Path, tmp_path: Path) -> None:
    """The flags upkeeper prints for client_ip: x_forwarded_for (``~h{, }`` for the header, ``%^`` for
    $remote_addr) make GoAccess count the same visitors and clients."""
    flags = to_goaccess(MAIN_TIMED, client_ip="x_forwarded_for").argv()
    assert '"~h{, }"' in flags[0] and flags[0].startswith("--log-format=%^ ")
    ga = goaccess_numbers(goaccess(balanced_log, tmp_path, flags))
    assert ga["visitors"] == 40
    for kw in SCAN_PATHS.values():
        assert_same_as_goaccess(ours(balanced_log, fmt=MAIN_TIMED, client_ip="x_forwarded_for", **kw), ga)


def test_untrusted_balancer_keeps_remote_addr(balanced_log: Path) -> None:
    rep = ours(balanced_log, fmt=MAIN_TIMED, client_ip="x_forwarded_for", trusted_proxies=("10.0.0.0/8",))
    assert rep["visitors"] == 1 and rep["clients"]["proxy"]["ip"] == "127.0.0.1"


@pytest.mark.parametrize(("remote", "xff", "client"), [
    (b"10.0.0.2", b"203.0.113.7", b"203.0.113.7"),
    (b"10.0.0.2", b"203.0.113.7, 10.0.0.9", b"203.0.113.7"),  # two proxies of ours
    (b"10.0.0.2", b"1.1.1.1, 203.0.113.7", b"203.0.113.7"),  # the left part is what the client sent: forgeable
    (b"198.51.100.1", b"203.0.113.7", b"198.51.100.1"),  # not from a trusted proxy: the header is the client's
    (b"10.0.0.2", b"-", b"10.0.0.2"),  # no header: the balancer's own request (a health check)
    (b"10.0.0.2", b"", b"10.0.0.2"),
    (b"10.0.0.2", b"unknown, 203.0.113.7", b"203.0.113.7"),
    (b"10.0.0.2", b"203.0.113.7, unknown", b"10.0.0.2"),  # a malformed entry stops the walk, as in nginx
    (b"10.0.0.2", b"10.0.0.3, 10.0.0.4", b"10.0.0.3"),  # all trusted: the left-most
    (b"10.0.0.2", b"203.0.113.7:5123", b"203.0.113.7"),
    (b"::1", b"[2001:db8::7]:443, fd00::2", b"2001:db8::7"),
    (b"fd00::1", b"2001:db8::7", b"2001:db8::7"),
])
def test_client_is_the_right_most_untrusted_address(remote: bytes, xff: bytes, client: bytes) -> None:
    resolve = ClientResolver(DEFAULT_TRUSTED_PROXIES)
    assert resolve(remote, xff) == client
    assert resolve.column([remote, remote], [xff, xff]) == [client, client]


# -- the logs.nginx job and the CLI ------------------------------------------------------------


def _job(make_config: Any, log: Path, tmp_path: Path, **options: Any) -> Path:
    path: Path = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(log)}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": MAIN_TIMED, "report_dir": str(tmp_path / "reports"), **options}}},
    })
    return path


def _findings(cli: Any, cfg: Path, check: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    res = cli(["--config", str(cfg), "run", "log-analysis", "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out, [f for f in out["findings"] if f["check"] == check]


def test_job_warns_when_the_balancer_is_every_client(cli: Any, make_config: Any, balanced_log: Path,
                                                     tmp_path: Path) -> None:
    out, (f,) = _findings(cli, _job(make_config, balanced_log, tmp_path), "logs.nginx.proxy_address")
    assert f["severity"] == "warning" and out["metrics"]["visitors"] == 1
    assert "100.0 % of requests come from 127.0.0.1" in f["message"] and "42 different values" in f["message"]
    assert "client_ip: x_forwarded_for" in f["remediation"] and "real_ip_header" in f["remediation"]


def test_job_with_client_ip_counts_the_clients(cli: Any, make_config: Any, balanced_log: Path, tmp_path: Path) -> None:
    cfg = _job(make_config, balanced_log, tmp_path, client_ip="x_forwarded_for")
    out, found = _findings(cli, cfg, "logs.nginx.proxy_address")
    assert not found and out["metrics"]["visitors"] == 40
    subjects = {f["check"]: f["subject"] for f in out["findings"]}
    assert subjects["logs.nginx.not_found_burst"] == "198.51.100.7"
    assert subjects["logs.nginx.brute_force"] == "198.51.100.8"
    # a balancer outside trusted_proxies: still the one client, and the finding says what to add
    cfg = _job(make_config, balanced_log, tmp_path, client_ip="x_forwarded_for", trusted_proxies=["10.0.0.0/8"],
               incremental=False)
    _out, (f,) = _findings(cli, cfg, "logs.nginx.proxy_address")
    assert "not in trusted_proxies" in f["message"] and "add 127.0.0.1" in f["remediation"]


@pytest.mark.parametrize(("options", "message"), [
    ({"client_ip": "x_forwarded_for", "log_format": "combined"}, "needs $http_x_forwarded_for in the log_format"),
    ({"client_ip": "xff"}, "'remote_addr' or 'x_forwarded_for'"),
    ({"client_ip": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/33"]}, "'10.0.0.0/33' is no address or CIDR"),
])
def test_bad_client_ip_options_are_config_errors(cli: Any, make_config: Any, tmp_path: Path,
                                                 options: dict[str, Any], message: str) -> None:
    r = cli(["--config", str(_job(make_config, tmp_path / "access.log", tmp_path, **options)), "jobs"])
    assert r.code == 2 and message in " ".join(r.output.split()), r.output


def test_cli_takes_client_ip_and_warns_about_the_balancer(cli: Any, balanced_log: Path) -> None:
    r = cli(["logs", "nginx", str(balanced_log), "-f", MAIN_TIMED, "--json"])
    assert r.code == 0 and "Warning: 100.0 % of requests come from 127.0.0.1" in " ".join(r.err.split())
    r = cli(["logs", "nginx", str(balanced_log), "-f", MAIN_TIMED, "--client-ip", "x_forwarded_for",
             "--trusted-proxy", "127.0.0.1", "--json"])
    assert r.code == 0 and "Warning" not in r.err
    assert r.json()["visitors"] == 40 and "~h{, }" in r.json()["goaccess"]["log_format_flags"][0]
