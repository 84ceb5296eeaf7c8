"""A seeded week of logs as a Debian host writes and rotates them, for tests of incremental log analysis.

:class:`Week` writes, hour by hour, an nginx access log (combined_timed) and error log, a JSON-lines
application log and a PostgreSQL server log, and rotates them at midnight as Debian's logrotate
configurations do:

- nginx (``/etc/logrotate.d/nginx``): daily, rotate 14, compress, delaycompress, create, and nginx reopens
  on USR1 — a few lines still land in ``access.log.1`` after the rename (the signal is handled later);
- the error log: the same with ``dateext`` (``error.log-YYYYMMDD``, then ``…-YYYYMMDD.gz``);
- the application log: daily, rotate 14, compress, delaycompress, ``copytruncate`` (copied to ``app.log.1``,
  the live file truncated in place: same inode);
- PostgreSQL (``/etc/logrotate.d/postgresql-common``): ``copytruncate`` with ``dateext``, compress,
  delaycompress.

Every line written is also kept in :attr:`written` (per log, in order), so a test knows the truth.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

PATHS = ["/", "/api/v1/users/{n}", "/api/v1/orders/{n}", "/login", "/static/app.{h}.js", "/search?q={w}",
         "/api/v1/payments", "/health", "/favicon.ico", "/docs/{w}"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", "Mozilla/5.0 (Macintosh) Safari/605.1.15",
          "curl/8.5.0", "Googlebot/2.1 (+http://www.google.com/bot.html)", "python-requests/2.31.0"]
WORDS = ["alpha", "beta", "gamma", "delta", "kappa"]
STATUSES = [200] * 30 + [301, 304, 304, 404, 404, 401, 500, 502]
ERR_CLASSES = [
    ("error", "connect() failed (111: Connection refused) while connecting to upstream, client: {ip}, server: _, "
              "request: \"GET /api/v1/users/{n} HTTP/1.1\", upstream: \"http://127.0.0.1:8000/\""),
    ("error", "open() \"/srv/www/{w}.php\" failed (2: No such file or directory), client: {ip}, server: _"),
    ("warn", "an upstream response is buffered to a temporary file /var/cache/nginx/{n}.tmp while reading upstream"),
    ("crit", "SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking"),
]
EXCEPTIONS = [("ValueError", "invalid order {n}"), ("KeyError", "'user_{n}'"),
              ("TimeoutError", "upstream timed out after {n} ms"), ("PermissionError", "denied for {w}")]
PG_ERRORS = [("23505", 'duplicate key value violates unique constraint "orders_pkey"',
              "INSERT INTO orders (id) VALUES ({n})"),
             ("42P01", 'relation "missing_{w}" does not exist', "SELECT * FROM missing_{w}"),
             ("57014", "canceling statement due to statement timeout", "SELECT pg_sleep({n})")]
PG_QUERIES = ["SELECT * FROM users WHERE id = {n}", "UPDATE orders SET state = 'paid' WHERE id = {n}",
              "SELECT count(*) FROM events WHERE kind = '{w}'", "DELETE FROM sessions WHERE expires < now() - "
              "interval '{n} minutes'"]


@dataclass
class Week:
    root: Path
    seed: int = 7
    start: datetime = field(default_factory=lambda: (datetime.now().astimezone().replace(
        hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)))
    per_hour: int = 12  # access lines per hour (on average)
    written: dict[str, list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)
        for d in ("nginx", "app", "postgresql"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.access = self.root / "nginx" / "access.log"
        self.error = self.root / "nginx" / "error.log"
        self.app = self.root / "app" / "app.log"
        self.pg = self.root / "postgresql" / "postgresql-16-main.log"
        for p in (self.access, self.error, self.app, self.pg):
            p.touch()
            self.written[p.name] = []
        self.ips = [f"198.51.100.{i}" for i in range(1, 40)] + [f"2001:db8::{i:x}" for i in range(1, 6)]

    # -- lines ---------------------------------------------------------------------------------

    def _fill(self, template: str) -> str:
        r = self.rnd
        return template.format(n=r.randint(1, 5000), w=r.choice(WORDS), h=f"{r.getrandbits(32):08x}",
                               ip=r.choice(self.ips))

    def access_line(self, t: datetime) -> bytes:
        r = self.rnd
        method = "POST" if r.random() < 0.1 else "GET"
        path = self._fill(r.choice(PATHS))
        status = r.choice(STATUSES)
        size = 0 if status == 304 else r.randint(100, 60000)
        ref = r.choice(["-", "https://example.org/", "https://www.google.com/"])
        return (f'{r.choice(self.ips)} - - [{t:%d/%b/%Y:%H:%M:%S %z}] "{method} {path} HTTP/1.1" {status} {size} '
                f'"{ref}" "{r.choice(AGENTS)}" {r.randint(1, 900) / 1000:.3f}\n').encode()

    def error_line(self, t: datetime) -> bytes:
        level, msg = self.rnd.choice(ERR_CLASSES)
        return f"{t:%Y/%m/%d %H:%M:%S} [{level}] {self.rnd.randint(100, 999)}#0: *{self.rnd.randint(1, 9999)} " \
               f"{self._fill(msg)}\n".encode()

    def app_line(self, t: datetime) -> bytes:
        r = self.rnd
        rec: dict[str, object] = {"timestamp": t.isoformat(), "logger": "shop"}
        if r.random() < 0.4:
            exc, msg = r.choice(EXCEPTIONS)
            rec |= {"level": "error", "message": "request failed", "exc_info": (
                f"Traceback (most recent call last):\n  File \"/srv/shop/views.py\", line {r.randint(10, 90)}, "
                f"in handle\n    return work()\n{exc}: {self._fill(msg)}")}
        else:
            rec |= {"level": r.choice(["info", "info", "warning"]), "message": self._fill("served order {n}")}
        return (json.dumps(rec) + "\n").encode()

    def pg_entry(self, t: datetime) -> bytes:
        r = self.rnd
        pid = r.randint(1000, 9999)
        pre = f"{t:%Y-%m-%d %H:%M:%S}.{r.randint(0, 999):03d} UTC [{pid}] "
        if r.random() < 0.2:
            code, msg, stmt = r.choice(PG_ERRORS)
            stmt = self._fill(stmt)
            return (f"{pre}{code} ERROR:  {self._fill(msg)}\n{pre}{code} STATEMENT:  {stmt}\n").encode()
        q = self._fill(r.choice(PG_QUERIES))
        return f"{pre}00000 LOG:  duration: {r.randint(1, 400000) / 1000:.3f} ms  statement: {q}\n".encode()

    # -- writing ---------------------------------------------------------------------------------

    def _append(self, path: Path, lines: list[bytes]) -> None:
        with open(path, "ab") as fh:
            fh.write(b"".join(lines))
        self.written[path.name] += lines

    def write_hour(self, hour: int, *, scale: int = 1) -> None:
        """The lines of hour ``hour`` of the week (0 … 167), in time order within each log."""
        t0 = self.start + timedelta(hours=hour)

        def times(n: int) -> list[datetime]:
            return sorted(t0 + timedelta(seconds=self.rnd.randrange(3600)) for _ in range(n))

        r = self.rnd
        self._append(self.access, [self.access_line(t) for t in times(r.randint(1, 2 * self.per_hour) * scale)])
        self._append(self.error, [self.error_line(t) for t in times(r.randint(0, 4))])
        self._append(self.app, [self.app_line(t) for t in times(r.randint(1, 6) * scale)])
        self._append(self.pg, [self.pg_entry(t) for t in times(r.randint(2, 10) * scale)])

    def burst(self, hour: int, access: int = 0, app: int = 0) -> None:
        """A busy stretch in hour ``hour``: ``access`` more access lines, ``app`` more application lines."""
        t0 = self.start + timedelta(hours=hour, minutes=59)
        self._append(self.access, [self.access_line(t0) for _ in range(access)])
        self._append(self.app, [self.app_line(t0) for _ in range(app)])

    def late_access_lines(self, when: datetime, n: int = 3) -> None:
        """Lines nginx writes to the renamed ``access.log.1`` before it handles USR1 and reopens."""
        lines = [self.access_line(when) for _ in range(n)]
        with open(self.access.with_name("access.log.1"), "ab") as fh:
            fh.write(b"".join(lines))
        self.written[self.access.name] += lines

    # -- logrotate ---------------------------------------------------------------------------------

    def rotate(self, day: datetime) -> None:
        """Midnight: logrotate's daily run (``day``: the date the dateext names carry)."""
        stamp = f"{day:%Y%m%d}"
        _rotate_numeric(self.access, keep=14, copytruncate=False)
        self.late_access_lines(day - timedelta(seconds=1))
        _compress_delayed_numeric(self.access)
        _rotate_numeric(self.app, keep=14, copytruncate=True)
        _compress_delayed_numeric(self.app)
        _rotate_dateext(self.error, stamp, keep=14, copytruncate=False)
        _rotate_dateext(self.pg, stamp, keep=10, copytruncate=True)


def _gzip_file(src: Path) -> None:
    """``gzip`` as logrotate runs it: a new file ``src.gz``, then ``src`` removed."""
    with open(src, "rb") as fin, gzip.open(src.with_name(src.name + ".gz"), "wb") as fout:
        shutil.copyfileobj(fin, fout)
    os.unlink(src)


def _rotate_numeric(live: Path, *, keep: int, copytruncate: bool) -> None:
    d, name = live.parent, live.name
    (d / f"{name}.{keep}.gz").unlink(missing_ok=True)
    for i in range(keep - 1, 1, -1):
        if (d / f"{name}.{i}.gz").exists():
            os.rename(d / f"{name}.{i}.gz", d / f"{name}.{i + 1}.gz")
    if (d / f"{name}.1").exists():
        os.rename(d / f"{name}.1", d / f"{name}.2")
    if copytruncate:
        shutil.copyfile(live, d / f"{name}.1")
        with open(live, "r+b") as fh:
            fh.truncate(0)
    else:
        os.rename(live, d / f"{name}.1")
        live.touch()  # create


def _compress_delayed_numeric(live: Path) -> None:
    older = live.with_name(live.name + ".2")
    if older.exists():
        _gzip_file(older)


def _rotate_dateext(live: Path, stamp: str, *, keep: int, copytruncate: bool) -> None:
    d, name = live.parent, live.name
    olds = sorted(p for p in d.iterdir() if p.name.startswith(name + "-"))
    for p in olds:
        if not p.name.endswith(".gz"):
            _gzip_file(p)  # delaycompress: the previous rotation's file is compressed now
    olds = sorted(p for p in d.iterdir() if p.name.startswith(name + "-"))
    for p in olds[: max(0, len(olds) - keep + 1)]:
        p.unlink()
    dest = d / f"{name}-{stamp}"
    if copytruncate:
        shutil.copyfile(live, dest)
        with open(live, "r+b") as fh:
            fh.truncate(0)
    else:
        os.rename(live, dest)
        live.touch()
