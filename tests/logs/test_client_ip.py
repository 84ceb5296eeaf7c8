"""nginx behind a load balancer: every $remote_addr is the balancer's, the clients are in X-Forwarded-For.

A real nginx plays both parts: a balancer server that appends the address it got each request from
(``proxy_add_x_forwarded_for``), and the site behind it, logging nginx's ``main`` format (+ $request_time).
"""

from __future__ import annotations

import re
import shlex
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
from upkeeper.tasks.logs.nginx import passed_on_findings, proxy_finding

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


def _request(port: int, path: str, xff: str | None = None, method: str = "GET", agent: str = "Mozilla/5.0",
             client: str | None = None) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"user=a&password=b" if method == "POST" else None)
    req.add_header("User-Agent", agent)
    if xff is not None:
        req.add_header("X-Forwarded-For", xff)
    if client is not None:
        req.add_header("X-Test-Client", client)
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
    ({"client_ip": "xff"}, "'remote_addr', 'x_forwarded_for', 'x_real_ip', 'proxy_protocol' or 'header:NAME'"),
    ({"client_ip": "header:CF-Connecting-IP"},
     "needs $http_cf_connecting_ip in the log_format; add \"$http_cf_connecting_ip\" to the nginx log_format"),
    ({"client_ip": "header:$http_cf_connecting_ip"}, "header:CF-Connecting-IP for $http_cf_connecting_ip"),
    ({"client_ip": "header:"}, "has no request header name"),
    ({"client_ip": "proxy_protocol"}, "needs $proxy_protocol_addr in the log_format"),
    ({"client_ip": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/33"]}, "'10.0.0.0/33' is no address or CIDR"),
])
def test_bad_client_ip_options_are_config_errors(cli: Any, make_config: Any, tmp_path: Path,
                                                 options: dict[str, Any], message: str) -> None:
    r = cli(["--config", str(_job(make_config, tmp_path / "access.log", tmp_path, **options)), "jobs"])
    assert r.code == 2 and message in " ".join(r.output.split()), r.output


def test_cli_takes_client_ip_and_warns_about_the_balancer(cli: Any, balanced_log: Path) -> None:
    r = cli(["logs", "nginx", str(balanced_log), "-f", MAIN_TIMED, "--json"])
    assert r.code == 0 and "Warning: 100.0 % of requests come from 127.0.0.1" in " ".join(r.err.split())
    # the way out in this command's words (its options), not the config's (client_ip:, trusted_proxies)
    assert "Try: --client-ip x_forwarded_for (and --trusted-proxy to the proxies' addresses)" in r.err, r.err
    assert "client_ip:" not in r.err and "trusted_proxies" not in r.err, r.err
    r = cli(["logs", "nginx", str(balanced_log), "-f", MAIN_TIMED, "--client-ip", "x_forwarded_for",
             "--trusted-proxy", "127.0.0.1", "--json"])
    assert r.code == 0 and "Warning" not in r.err
    assert r.json()["visitors"] == 40 and "~h{, }" in r.json()["goaccess"]["log_format_flags"][0]


# -- X-Real-IP and the PROXY protocol ------------------------------------------------------------
# One nginx: a balancer that sets X-Real-IP (the client's address reaches it in X-Test-Client, which its own
# realip module takes, so each request has its client address), the site behind it logging $http_x_real_ip,
# and a site listening with proxy_protocol (the test plays HAProxy: it writes the PROXY header itself),
# logging nginx's documented '$proxy_protocol_addr - …' format and one with both addresses.

XRI_TIMED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
             '"$http_user_agent" "$http_x_real_ip" $request_time')
PP_ONLY = ('$proxy_protocol_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
           '"$http_referer" "$http_user_agent"')
PP_BOTH = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
           '"$http_user_agent" $proxy_protocol_addr $request_time')

REALIP_SERVERS = """
    log_format xri '{xri}';
    log_format pp_only '{pp_only}';
    log_format pp_both '{pp_both}';
    server {{
        listen 127.0.0.1:{lb};
        access_log off;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Test-Client;
        location / {{
            proxy_pass http://127.0.0.1:{site};
            proxy_set_header X-Real-IP $remote_addr;
        }}
    }}
    server {{
        listen 127.0.0.1:{site};
        root {base}/www;
        access_log {base}/xri.log xri;
        location = /login {{ return 401; }}
    }}
    server {{
        listen 127.0.0.1:{pp} proxy_protocol;
        root {base}/www;
        access_log {base}/pp_only.log pp_only;
        access_log {base}/pp_both.log pp_both;
        location = /login {{ return 401; }}
    }}
"""
#: PROXY protocol v2 with the LOCAL command and no address: a balancer's health check
PP2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


def _proxied(port: int, client: str, path: str = "/", method: str = "GET", header: bytes | None = None) -> None:
    """One request to a proxy_protocol listener, as HAProxy sends it: the PROXY line, then HTTP."""
    import socket

    family = "TCP6" if ":" in client else "TCP4"
    local = "::1" if ":" in client else "127.0.0.1"
    head = header if header is not None else f"PROXY {family} {client} {local} 40000 {port}\r\n".encode()
    body = b"user=a&password=b" if method == "POST" else b""
    req = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nConnection: close\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + req)
        while s.recv(65536):
            pass


@pytest.fixture(scope="module")
def realip_logs(services_dir: Path) -> Iterator[dict[str, Path]]:
    """The logs of the X-Real-IP site and of the PROXY protocol site after the same traffic: 30 visitors (one of
    them over IPv6 on the PROXY protocol site), a client probing for files, one guessing passwords, and a
    health check that carries no client (straight to the site; PROXY v2 LOCAL)."""
    base = services_dir / "realip-nginx"
    lb, site, pp = free_port(), free_port(), free_port()
    server = NginxServer(base, port=lb, servers=REALIP_SERVERS.format(
        xri=XRI_TIMED, pp_only=PP_ONLY, pp_both=PP_BOTH, lb=lb, site=site, pp=pp, base=base))
    server.start()
    clients = [f"203.0.113.{i}" for i in range(29)] + ["2001:db8::7"]
    traffic = [(c, "/", "GET") for c in clients] + [("198.51.100.7", f"/backup{i}.zip", "GET") for i in range(22)]
    traffic += [("198.51.100.8", "/login", "POST")] * 11
    try:
        for client, path, method in traffic:
            _request(lb, path, method=method, client=client)
            _proxied(pp, client, path, method)
        _request(site, "/")  # the health check: no X-Real-IP
        _proxied(pp, "", header=PP2_LOCAL)
        logs = {name: base / f"{name}.log" for name in ("xri", "pp_only", "pp_both")}
        for log in logs.values():
            wait_for_log_lines(log, 64)
    finally:
        server.stop()
    yield logs


def _same_on_every_path(log: Path, **kw: Any) -> dict[str, Any]:
    """The report of ``log``, the same from the pyarrow, the Python columnar and the line-by-line path."""
    reports = [ours(log, **kw, **extra) for extra in SCAN_PATHS.values()]
    same = [{**{k: v for k, v in rep.items() if k != "fast_path_lines"},
             "invalid_samples": [{**s, "offset": None} for s in rep["invalid_samples"]]} for rep in reports]
    assert same[0] == same[1] == same[2]
    assert reports[0]["fast_path_lines"] > 0 and reports[1]["fast_path_lines"] > 0
    return reports[0]


def _real_clients(rep: dict[str, Any], requests: int = 64) -> None:
    assert rep["requests"] == requests and rep["visitors"] == 30 + (requests - 63)
    assert rep["top"]["hosts"][:2] == [{"ip": "198.51.100.7", "hits": 22}, {"ip": "198.51.100.8", "hits": 11}]
    assert "2001:db8::7" in _clients(rep)
    assert [b["ip"] for b in rep["security"]["not_found_bursts"]] == ["198.51.100.7"]
    assert [b["ip"] for b in rep["security"]["brute_force"]] == ["198.51.100.8"]
    assert rep["clients"]["proxy"] is None


@pytest.mark.parametrize(("log", "fmt", "client_ip"), [
    ("xri", XRI_TIMED, "x_real_ip"), ("pp_both", PP_BOTH, "proxy_protocol")])
def test_x_real_ip_and_proxy_protocol_give_the_real_clients(realip_logs: dict[str, Path], log: str, fmt: str,
                                                            client_ip: str) -> None:
    """The health check without a client keeps $remote_addr (127.0.0.1), as nginx's realip module does."""
    rep = _same_on_every_path(realip_logs[log], fmt=fmt, client_ip=client_ip)
    _real_clients(rep)
    assert "127.0.0.1" in _clients(rep) and rep["invalid"] == 0
    # by default the balancer is every client, and the report names the variable and the mode to set
    rep = _same_on_every_path(realip_logs[log], fmt=fmt)
    assert _clients(rep) == {"127.0.0.1"} and rep["visitors"] == 1
    proxy = rep["clients"]["proxy"]
    assert proxy["forwarded_variable"] == fmt.split("$")[-2].split()[0].strip('"')
    f = proxy_finding(proxy, "remote_addr", "")
    assert f"client_ip: {client_ip}" in f.remediation and f"${proxy['forwarded_variable']} holds" in f.message
    # a balancer outside trusted_proxies is the client, whatever it passes on
    rep = _same_on_every_path(realip_logs[log], fmt=fmt, client_ip=client_ip, trusted_proxies=("10.0.0.0/8",))
    assert _clients(rep) == {"127.0.0.1"}


def test_proxy_protocol_address_alone_is_the_client(realip_logs: dict[str, Path], tmp_path: Path) -> None:
    """nginx's documented PROXY protocol format has no $remote_addr: $proxy_protocol_addr is the client (it
    was a configuration error), and the health check's '-' is an unparsed line, as GoAccess counts it."""
    flags = to_goaccess(PP_ONLY, client_ip="proxy_protocol").argv()
    assert flags[0].startswith("--log-format=%h %^[")
    ga = goaccess_numbers(goaccess(realip_logs["pp_only"], tmp_path, flags))
    assert ga["failed"] == 1
    for client_ip in ("remote_addr", "proxy_protocol"):
        rep = _same_on_every_path(realip_logs["pp_only"], fmt=PP_ONLY, client_ip=client_ip)
        _real_clients(rep, requests=63)
        assert rep["invalid"] == 1 and "127.0.0.1" not in _clients(rep)
        assert_same_as_goaccess(rep, ga)


def test_realip_goaccess_flags_take_the_passed_on_client() -> None:
    assert to_goaccess(XRI_TIMED, client_ip="x_real_ip").log_format.startswith('%^ - %^ [')
    assert '"%h" %T' in to_goaccess(XRI_TIMED, client_ip="x_real_ip").log_format
    assert '"%u" %h %T' in to_goaccess(PP_BOTH, client_ip="proxy_protocol").log_format
    assert '"%u" %^ %T' in to_goaccess(PP_BOTH).log_format


# -- any request header: CF-Connecting-IP behind a CDN ----------------------------------------------------
# One nginx: an edge that takes the client from X-Test-Client with its own realip module (set_real_ip_from
# 127.0.0.1; real_ip_header X-Test-Client; real_ip_recursive on) and logs the result as $remote_addr — nginx's
# answer — and passes the header's raw value on as CF-Connecting-IP to the origin, which logs it.  Reading the
# origin's log with client_ip: header:CF-Connecting-IP must find nginx's clients, whatever the value.

CDN_FMT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
           '"$http_user_agent" "$http_cf_connecting_ip" $request_time')
CDN_SERVERS = """
    log_format cdn '{fmt}';
    server {{
        listen 127.0.0.1:{edge};
        access_log {base}/edge.log combined;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Test-Client;
        real_ip_recursive on;
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_set_header CF-Connecting-IP $http_x_test_client;
        }}
    }}
    server {{
        listen 127.0.0.1:{origin};
        root {base}/www;
        access_log {base}/origin.log cdn;
        location = /login {{ return 401; }}
    }}
"""
#: header values that are no plain address: nginx (and upkeeper) read a port, a list, and fall back on the rest
ODD_CLIENTS = ["unknown", "unknown", "not an address", "203.0.113.60, 127.0.0.1", "garbage, 127.0.0.1"]


@pytest.fixture(scope="module")
def cdn_logs(services_dir: Path) -> Iterator[dict[str, Path]]:
    """The edge's and the origin's logs of 20 visitors, a client probing for files (its address with a port),
    one guessing passwords (IPv6 in brackets, with a port), odd header values and two requests without one."""
    base = services_dir / "cdn-nginx"
    edge, origin = free_port(), free_port()
    server = NginxServer(base, port=edge, servers=CDN_SERVERS.format(fmt=CDN_FMT, edge=edge, origin=origin,
                                                                     base=base))
    server.start()
    traffic = [(f"203.0.113.{i}", "/", "GET") for i in range(20)]
    traffic += [("198.51.100.7:5000", f"/backup{i}.zip", "GET") for i in range(22)]
    traffic += [("[2001:db8::8]:443", "/login", "POST")] * 11
    traffic += [(c, "/", "GET") for c in ODD_CLIENTS] + [(None, "/", "GET")] * 2
    try:
        for client, path, method in traffic:
            _request(edge, path, method=method, client=client)
        logs = {name: base / f"{name}.log" for name in ("edge", "origin")}
        for log in logs.values():
            wait_for_log_lines(log, len(traffic))
    finally:
        server.stop()
    yield logs


def test_header_mode_finds_the_clients_nginx_realip_finds(cdn_logs: dict[str, Path]) -> None:
    """client_ip: header:CF-Connecting-IP gives, on every path, the clients nginx's own realip module took
    from the same values (ports, brackets, lists, garbage and a missing header included)."""
    kw = {"fmt": CDN_FMT, "client_ip": "header:CF-Connecting-IP", "trusted_proxies": ("127.0.0.1",)}
    rep = _same_on_every_path(cdn_logs["origin"], **kw)
    nginx = ours(cdn_logs["edge"], fmt="combined", top_n=100)
    mine = ours(cdn_logs["origin"], top_n=100, **kw)
    assert mine["top"]["hosts"] == nginx["top"]["hosts"] and mine["visitors"] == nginx["visitors"]
    assert rep["top"]["hosts"][:2] == [{"ip": "198.51.100.7", "hits": 22}, {"ip": "2001:db8::8", "hits": 11}]
    assert [b["ip"] for b in rep["security"]["not_found_bursts"]] == ["198.51.100.7"]
    assert [b["ip"] for b in rep["security"]["brute_force"]] == ["2001:db8::8"]
    # the values that were no address are counted, and kept $remote_addr as nginx did
    po = rep["clients"]["passed_on"]
    assert (po["used"], po["invalid"], po["absent"], po["untrusted"]) == (55, 3, 2, 0), po
    assert sorted(po["invalid_examples"]) == ["not an address", "unknown"]
    assert {"ip": "127.0.0.1", "hits": 6} in mine["top"]["hosts"]  # 3 invalid, 2 absent, 1 list ending trusted
    f, = passed_on_findings(rep["clients"], "header:CF-Connecting-IP", "", invalid_warn_pct=1.0)
    assert f.check == "logs.nginx.client_ip_invalid" and "3 requests (5.00 %)" in f.message
    assert "$http_cf_connecting_ip" in f.message and "'unknown'" in f.message and "CF-Connecting-IP" in f.remediation


def test_header_mode_numbers_equal_goaccess_with_the_cli_flags(cli: Any, cdn_logs: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """GoAccess has no trusted proxies and fails a line without an address in the header, so it can express the
    mode on the lines of a trusted proxy with a plain address there: on those, the flags ``upkeeper logs
    goaccess-format --client-ip header:CF-Connecting-IP`` prints (the job's own) give the same numbers."""
    r = cli(["logs", "goaccess-format", "-f", CDN_FMT, "--client-ip", "header:CF-Connecting-IP",
             "--trusted-proxy", "127.0.0.1"])
    assert r.code == 0 and "no trusted proxies" in r.err
    flags = shlex.split(r.out)
    assert flags == to_goaccess(CDN_FMT, client_ip="header:CF-Connecting-IP").argv()
    assert flags[0].startswith("--log-format=%^ - %^ [") and '"%u" "%h" %T' in flags[0]
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"".join(line for line in cdn_logs["origin"].read_bytes().splitlines(keepends=True)
                               if re.search(rb'"203\.0\.113\.\d+" ', line)))
    ga = goaccess_numbers(goaccess(plain, tmp_path, flags))
    assert ga["visitors"] == 20 and ga["failed"] == 0
    for kw in SCAN_PATHS.values():
        assert_same_as_goaccess(ours(plain, fmt=CDN_FMT, client_ip="header:CF-Connecting-IP", **kw), ga)
    # without --client-ip, the flags read $remote_addr; a header the format does not log is the task's error
    r = cli(["logs", "goaccess-format", "-f", CDN_FMT])
    assert r.code == 0 and shlex.split(r.out) == to_goaccess(CDN_FMT).argv() and not r.err
    r = cli(["logs", "goaccess-format", "-f", "combined", "--client-ip", "header:True-Client-IP"])
    assert r.code == 2 and "needs $http_true_client_ip in the log_format" in " ".join(r.err.split())


def test_cdn_outside_trusted_proxies_is_reported(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Cloudflare's edges are public addresses, not in the default trusted_proxies: nginx (and upkeeper) ignore
    CF-Connecting-IP from them, and the job says so, naming the edges; with their range trusted, the clients."""
    log = tmp_path / "access.log"
    log.write_text("".join(
        f'162.158.{i % 3}.{i % 7} - - [01/Mar/2024:10:{i:02d}:00 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozilla/5.0" '
        f'"198.51.100.{i}" 0.010\n' for i in range(30)))
    cfg = _job(make_config, log, tmp_path, log_format=CDN_FMT, client_ip="header:CF-Connecting-IP")
    out, (f,) = _findings(cli, cfg, "logs.nginx.client_ip_untrusted")
    assert out["metrics"]["visitors"] == 21 and f["severity"] == "warning"
    assert "$http_cf_connecting_ip was ignored on 30 of the 30 requests" in f["message"]
    assert "162.158.0.0" in f["message"] and "https://www.cloudflare.com/ips/" in f["remediation"]
    cfg = _job(make_config, log, tmp_path, log_format=CDN_FMT, client_ip="header:CF-Connecting-IP",
               trusted_proxies=["162.158.0.0/15"], incremental=False)
    out, found = _findings(cli, cfg, "logs.nginx.client_ip_untrusted")
    assert not found and out["metrics"]["visitors"] == 30


#: IPv6 clients written in other forms than nginx prints them
IPV6_FORMS = ["2001:DB8:0:0::8", "2001:0db8:0000:0000:0000:0000:0000:0008", "[2001:DB8::8]:443",
              "2001:db8:0:1:1:1:1:1", "::FFFF:203.0.113.7"]


def test_an_ipv6_client_is_written_as_nginx_realip_writes_it(services_dir: Path) -> None:
    """nginx's realip module parses the address it takes from a header and logs it in one form (lower case, zero
    groups compressed, IPv4-mapped dotted): so must the client taken from the same value here, or one client
    written two ways counts as two visitors."""
    port, base = free_port(), services_dir / "ipv6-nginx"
    server = NginxServer(base, port=port, servers=f"""
    server {{
        listen 127.0.0.1:{port};
        access_log {base}/realip.log combined;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Test-Client;
        real_ip_recursive on;
        location / {{ return 200; }}
    }}
""")
    server.start()
    try:
        for form in IPV6_FORMS:
            _request(port, "/", client=form)
        log = base / "realip.log"
        wait_for_log_lines(log, len(IPV6_FORMS))
    finally:
        server.stop()
    nginx = [line.split(" ", 1)[0] for line in log.read_text().splitlines()]
    assert nginx[:3] == ["2001:db8::8"] * 3  # (what nginx wrote, not an assumption)
    resolve = ClientResolver(("127.0.0.1",))
    assert [resolve(b"127.0.0.1", form.encode()).decode() for form in IPV6_FORMS] == nginx
