"""What a real nginx logs for IPv6 clients, HTTP/2, WebSocket upgrades (101) and clients that hang up (499).

A WebSocket's $request_time is the connection's lifetime, so the 101s must not count as response times; the
rest is counted as GoAccess counts it (HTTP/3 request lines, which nginx 1.22 here cannot serve, are in
test_goaccess_exact's edge cases).
"""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logs.goaccess_helpers import SCAN_PATHS, assert_all_paths_same_as_goaccess, ours
from services import wait_for_log_lines
from upkeeper.logs.nginx_format import COMBINED_TIMED
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer, server_block

WS_HOLD = 1.5  # seconds each WebSocket stays open
PROXY = """
        location /ws {{ proxy_pass http://127.0.0.1:{app}; proxy_http_version 1.1;
                        proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; }}
        location /slow {{ proxy_pass http://127.0.0.1:{app}; }}
"""


class _App(socketserver.BaseRequestHandler):
    """The application: /ws upgrades and holds the connection, /slow answers after 3 s."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        if head.startswith(b"GET /ws"):
            self.request.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            time.sleep(WS_HOLD)
        else:
            time.sleep(3)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def _raw(host: str, port: int, request: bytes, *, hang_up_after: float | None = None) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(request)
        if hang_up_after is not None:
            time.sleep(hang_up_after)
            return
        while s.recv(4096):
            pass


@pytest.fixture(scope="module")
def protocols_log(services_dir: Path) -> Iterator[Path]:
    base = services_dir / "protocols-nginx"
    web, h2, app = free_port(), free_port(), free_port()
    backend = socketserver.ThreadingTCPServer(("127.0.0.1", app), _App)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    extra = PROXY.format(app=app)
    servers = (server_block(base, web, base / "www", extra=f"        listen [::1]:{web};\n{extra}")
               + server_block(base, h2, base / "www").replace(f"listen 127.0.0.1:{h2};",
                                                               f"listen 127.0.0.1:{h2} http2;"))
    server = NginxServer(base, port=web, servers=servers)
    server.start()
    try:
        for i in range(60):  # IPv6 clients, HTTP/1.1
            _raw("::1", web, f"GET /?v={i} HTTP/1.1\r\nHost: x\r\nUser-Agent: six\r\nConnection: close\r\n\r\n".encode())
        for i in range(20):  # h2c (curl 7.88 fails reusing the connection: one curl per request)
            subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", "-A", "two",
                            f"http://127.0.0.1:{h2}/index.html?h2={i}"], check=True, timeout=30)
        upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nUser-Agent: ws\r\n\r\n"
        slow = b"GET /slow HTTP/1.1\r\nHost: x\r\nUser-Agent: impatient\r\n\r\n"
        threads = [threading.Thread(target=_raw, args=("127.0.0.1", web, upgrade)) for _ in range(8)]
        threads += [threading.Thread(target=_raw, args=("127.0.0.1", web, slow), kwargs={"hang_up_after": 0.3})
                    for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for_log_lines(server.access_log, 91)
    finally:
        server.stop()
        backend.shutdown()
        backend.server_close()
    yield server.access_log


def test_nginx_lines_of_ipv6_http2_upgrades_and_hang_ups_are_counted_as_goaccess_counts(protocols_log: Path,
                                                                                       tmp_path: Path) -> None:
    text = protocols_log.read_text()
    assert "::1 - - [" in text and '"GET /index.html?h2=0 HTTP/2.0" 200' in text
    ga = assert_all_paths_same_as_goaccess(protocols_log, tmp_path, COMBINED_TIMED)
    assert ga["valid"] == 91 and ga["failed"] == 0
    assert {k: ga["status"][k] for k in ("101", "200", "499")} == {"101": 8, "200": 80, "499": 3}
    assert {r[2] for r in ga["requests"]} == {"HTTP/1.1", "HTTP/2"}


@pytest.mark.parametrize("path", list(SCAN_PATHS))
def test_websocket_lifetimes_are_no_response_times(protocols_log: Path, path: str) -> None:
    """Eight WebSockets held 1.5 s among 83 quick requests made the p95 1.5 s (the 200 ms objective missed by a
    chat page); a 101 is left out of the latency, overall and for its endpoint, and still counted as a request."""
    rep = ours(protocols_log, fmt=COMBINED_TIMED, **SCAN_PATHS[path])
    lat = rep["latency"]
    assert lat["untimed_upgrades"] == 8 and lat["overall"]["count"] == 83
    assert lat["overall"]["p95"] < 200
    assert lat["overall"]["max"] >= 250  # the hang-ups (499) stay: the client waited that long
    (ws,) = [e for e in rep["endpoints"] if e["endpoint"] == "GET /ws"]
    assert ws["hits"] == 8 and ws["timed"] == 0 and "p95" not in ws
