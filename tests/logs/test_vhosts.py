"""Several sites in one access log ($host in the log_format), written by a real nginx with two server blocks.

Each site's "/" is its own path, each site has its own figures and is held to the objectives on its own, and
the GoAccess numbers stay GoAccess's (its requests panel does merge the sites' paths; its vhosts panel is
what upkeeper's per-site requests equal).
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logs.goaccess_helpers import SCAN_PATHS, assert_all_paths_same_as_goaccess, goaccess, ours
from services import wait_for_log_lines
from upkeeper.logs.nginx_format import to_goaccess
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer

VHOSTS = ('$host $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
          '"$http_user_agent" $request_time')
SERVERS = """
    log_format vhosts '{fmt}';
    server {{
        listen 127.0.0.1:{port};
        server_name shop.example;
        root {base}/www;
        access_log {base}/access.log vhosts;
        location = /api/cart {{ return 503; }}
        location = /search {{ proxy_pass http://127.0.0.1:{app}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name blog.example;
        root {base}/www;
        access_log {base}/access.log vhosts;
    }}
"""


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def _get(port: int, host: str, path: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host, "User-Agent": "x"})
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as exc:
        exc.read()


@pytest.fixture(scope="module")
def vhosts_log(services_dir: Path) -> Iterator[Path]:
    """blog.example: 400 quick pages and 5 404s; shop.example: 30 pages, 10 503s, 15 searches taking 0.3 s."""
    base = services_dir / "vhosts-nginx"
    port, app = free_port(), free_port()
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", app), _Slow)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    server = NginxServer(base, port=port, servers=SERVERS.format(fmt=VHOSTS, port=port, base=base, app=app))
    server.start()
    try:
        for _ in range(400):
            _get(port, "blog.example", "/")
        for _ in range(5):
            _get(port, "blog.example", "/missing")
        for _ in range(30):
            _get(port, "shop.example", "/")
        for _ in range(10):
            _get(port, "shop.example", "/api/cart")
        searches = [threading.Thread(target=_get, args=(port, "shop.example", "/search")) for _ in range(15)]
        for t in searches:
            t.start()
        for t in searches:
            t.join()
        wait_for_log_lines(server.access_log, 460)
    finally:
        server.stop()
        backend.shutdown()
        backend.server_close()
    yield server.access_log


@pytest.mark.parametrize("path", list(SCAN_PATHS))
def test_each_site_has_its_own_paths_and_figures(vhosts_log: Path, path: str) -> None:
    rep = ours(vhosts_log, fmt=VHOSTS, **SCAN_PATHS[path])
    assert rep["top"]["paths"][:2] == [{"host": "blog.example", "path": "/", "hits": 400},
                                       {"host": "shop.example", "path": "/", "hits": 30}]
    sites = {v["host"]: v for v in rep["vhosts"]}
    assert (sites["blog.example"]["requests"], sites["blog.example"]["4xx"]) == (405, 5)
    shop = sites["shop.example"]
    assert (shop["requests"], shop["5xx"], shop["failed"], shop["timed"]) == (55, 10, 10, 55)
    assert shop["p95"] >= 300 and rep["latency"]["overall"]["p95"] < 200  # the busy blog hides the slow shop
    assert [x["path"] for x in shop["paths"]] == ["/", "/search", "/api/cart"]


def test_goaccess_numbers_stay_goaccess_and_its_vhosts_panel_equals_the_sites(vhosts_log: Path,
                                                                               tmp_path: Path) -> None:
    assert_all_paths_same_as_goaccess(vhosts_log, tmp_path, VHOSTS)
    data = goaccess(vhosts_log, tmp_path, to_goaccess(VHOSTS).argv())
    panel = {v["data"]: v["hits"]["count"] for v in data["vhosts"]["data"]}
    assert panel == {v["host"]: v["requests"] for v in ours(vhosts_log, fmt=VHOSTS)["vhosts"]}
    assert {r["data"]: r["hits"]["count"] for r in data["requests"]["data"]}["/"] == 430  # GoAccess merges them


def test_job_holds_each_site_to_the_objectives(cli: Any, make_config: Any, vhosts_log: Path, tmp_path: Path) -> None:
    cfg = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(vhosts_log)}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": VHOSTS, "report_dir": str(tmp_path / "reports")}}},
    })
    res = cli(["--config", str(cfg), "run", "log-analysis", "--json"])
    out = res.json()[0]
    sites = [f for f in out["findings"] if f["check"] == "logs.nginx.site_objectives"]
    assert [f["subject"] for f in sites] == ["shop.example"], out["findings"]
    assert "18.182 % failed (10), objective < 0.1 %; p95 " in sites[0]["message"]
    assert sites[0]["message"].endswith(" ms, objective < 200 ms") and sites[0]["data"]["p95"] >= 300
    assert not [f for f in out["findings"] if f["check"] == "logs.nginx.latency_p95"]
    html = (tmp_path / "reports" / "log-analysis" / "latest.html").read_text()
    assert "<h3>Sites</h3>" in html and "shop.example/api/cart" in html
