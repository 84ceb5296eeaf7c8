"""Real HTTP traffic against a sandbox nginx, so its access and error logs hold genuine lines.

The site (``SITE_EXTRA`` inside the server block) trusts ``X-Forwarded-For`` from
127.0.0.1 (``realip``), so one test machine can appear as many clients, IPv4 and
IPv6.  :func:`drive` replays a seeded mix: visitors browsing pages, static files
and API calls with ids, UUIDs and query strings; crawlers; a scanner probing for
``/.env`` and friends (a burst of 404s); SQL injection and traversal attempts; a
client brute-forcing ``POST /login`` (answered 401); a failing endpoint (500).
"""

from __future__ import annotations

import http.client
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SITE_EXTRA = """\
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location = /login { if ($request_method = POST) { return 401 "bad credentials\\n"; } return 200 "form\\n"; }
        location /api/ { default_type application/json; return 200 '{"ok":true}\\n'; }
        location = /api/v1/payments { return 500; }
        location = /old { return 301 /; }
        location = /search { return 200 "results\n"; }
        location /private/ { return 403; }
        location /upstream/ { proxy_pass http://127.0.0.1:9; proxy_connect_timeout 2s; }
"""

STATIC_FILES = {
    "static/app.css": "body{margin:0}\n" * 40,
    "static/app.js": "console.log('app');\n" * 60,
    "img/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "about.html": "<html><body>about us</body></html>\n",
    "robots.txt": "User-agent: *\nDisallow: /private/\n",
}

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    'Mozilla/5.0 (compatible; "quoted" agent) Test/1.0',
)  # fmt: skip
BOTS = ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "curl/8.5.0")
SCANNER = "sqlmap/1.8.4#stable (https://sqlmap.org)"


def prepare_docroot(docroot: Path) -> None:
    for rel, text in STATIC_FILES.items():
        p = docroot / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(0o644)
        p.parent.chmod(0o755)


@dataclass
class Request:
    method: str
    path: str
    ip: str
    agent: str
    referer: str | None = None


@dataclass
class TrafficPlan:
    requests: list[Request] = field(default_factory=list)
    brute_force_ip: str = "203.0.113.66"
    scanner_ip: str = "198.51.100.7"


def plan(n_visitors: int = 60, seed: int = 1) -> TrafficPlan:
    """A deterministic list of requests (the order is the order they are sent in)."""
    rng = random.Random(seed)
    tp = TrafficPlan()
    reqs = tp.requests
    pages = ["/", "/about.html", "/search?q=beach+house", "/search?q=loft&page=2", "/old"]
    for v in range(n_visitors):
        ip = f"2001:db8::{v + 1:x}" if v % 7 == 0 else f"192.0.2.{v % 250 + 1}"
        agent = AGENTS[v % len(AGENTS)]
        for k in range(1 + v % 4):
            page = pages[(v + k) % len(pages)]
            reqs.append(Request("GET", page, ip, agent, "https://www.example.org/" if k == 0 else None))
            reqs.append(Request("GET", "/static/app.css", ip, agent))
            reqs.append(Request("GET", "/static/app.js", ip, agent))
            reqs.append(Request("GET", f"/api/v1/listings/{rng.randint(1, 40)}", ip, agent))
            reqs.append(Request("GET", f"/api/v1/messages/{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                                ip, agent))
            if (v + k) % 3 == 0:
                reqs.append(Request("POST", "/api/v1/bookings", ip, agent))
            if (v + k) % 11 == 0:
                reqs.append(Request("GET", "/api/v1/payments", ip, agent))  # 500
            if (v + k) % 9 == 0:
                reqs.append(Request("GET", f"/missing/{v}", ip, agent))  # 404
            if (v + k) % 13 == 0:
                reqs.append(Request("HEAD", "/", ip, agent))
    for i, bot in enumerate(BOTS):
        for k in range(8):
            reqs.append(Request("GET", "/robots.txt" if k == 0 else f"/api/v1/listings/{k}", f"66.249.66.{i + 1}",
                                bot))
    for probe in ("/.env", "/.git/config", "/wp-login.php", "/phpmyadmin/index.php", "/backup.sql",
                  "/config.php.bak", "/actuator/env", "/server-status", "/vendor/phpunit/x.php", "/cgi-bin/test",
                  "/admin.php", "/shell.php", "/wp-admin/install.php", "/xmlrpc.php", "/.aws/credentials",
                  "/db.sql", "/dump.sql", "/.svn/entries", "/setup.php", "/install.php", "/console/",
                  "/manager/html", "/solr/admin/", "/HNAP1/", "/boaform/admin/formLogin"):
        reqs.append(Request("GET", probe, tp.scanner_ip, SCANNER))
    reqs.append(Request("GET", "/search?q=1%27%20OR%201%3D1--", tp.scanner_ip, SCANNER))
    reqs.append(Request("GET", "/search?q=x%27%20UNION%20SELECT%20password%20FROM%20users--", tp.scanner_ip,
                        SCANNER))
    reqs.append(Request("GET", "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", tp.scanner_ip, SCANNER))
    for _ in range(15):
        reqs.append(Request("POST", "/login", tp.brute_force_ip, AGENTS[0], "https://shop.example/login"))
    reqs.append(Request("GET", "/private/report", "192.0.2.200", AGENTS[1]))
    for k in range(3):  # an application that is down: 502 and "connect() failed" in the error log
        reqs.append(Request("GET", f"/upstream/orders/{k}", "192.0.2.201", AGENTS[2]))
    return tp


@dataclass
class TrafficResult:
    sent: int = 0
    status: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def drive(base_url: str, tp: TrafficPlan, *, concurrency: int = 4) -> TrafficResult:
    """Send the planned requests (keep-alive connections, ``concurrency`` at once)."""
    u = urlsplit(base_url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    res = TrafficResult()
    lock = threading.Lock()
    chunks = [tp.requests[i::concurrency] for i in range(concurrency)]

    def worker(reqs: list[Request]) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for r in reqs:
            headers = {"User-Agent": r.agent, "X-Forwarded-For": r.ip}
            if r.referer:
                headers["Referer"] = r.referer
            body = b"user=a&password=b" if r.method == "POST" else None
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            try:
                conn.request(r.method, r.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    res.sent += 1
                    res.status[resp.status] += 1
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=10)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    res.errors.append(f"{r.method} {r.path}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in chunks if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return res
