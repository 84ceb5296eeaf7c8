"""A throwaway application for the sandbox: a real process that writes numbered log lines and serves /health.

``AppServer(base).start()`` lays out an app directory (logs, build cache, temp
files, releases with a ``current`` symlink) and runs ``python -m
upkeeper.sandbox.app ROOT PORT RATE``:

* appends ``line N`` to ``logs/app.log`` at RATE lines a second, one write per
  line, opened with O_APPEND like every logger;
* reopens the log on SIGUSR1 (what ``reopen_signal: USR1`` sends);
* answers ``GET /health`` with 200, or 503 while the file ``ROOT/UNHEALTHY`` exists; ``GET /moved`` with a
  redirect to /health;
* on SIGTERM writes the last line number to ``ROOT/last-line`` and exits.

Tests use it to prove that rotation loses no line; the demo uses it as the app.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import free_port, wait_for_port

DAY = 86400


class AppServer:
    def __init__(self, base: Path, *, rate: float = 200.0, port: int | None = None) -> None:
        self.root = Path(base)
        self.port = port or free_port()
        self.rate = rate
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "logs" / "app.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "app.pid"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start(self) -> AppServer:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "upkeeper.sandbox.app", str(self.root), str(self.port), str(self.rate)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=30)
        return self

    def stop(self) -> int:
        """Stop the app; returns the number of the last line it wrote (0: none)."""
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None
        last = self.root / "last-line"
        return int(last.read_text()) if last.exists() else 0

    def target(self, **extra: Any) -> dict[str, Any]:
        return {"kind": "app", "root": str(self.root), "health_url": self.health_url, **extra}


def seed_tree(root: Path, now: datetime | None = None, releases: int = 8) -> dict[str, int]:
    """Lay out what a deployed app accumulates: old rotated logs, build cache, temp files, releases."""
    now = now or datetime.now(UTC)
    t = now.timestamp()
    counts = {"old_logs": 0, "cache_files": 0, "temp_files": 0, "releases": releases}

    def write(p: Path, size: int, age_days: float) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(min(size, 4096)) * max(1, size // 4096))
        os.utime(p, (t - age_days * DAY, t - age_days * DAY))

    for i, age in enumerate((3, 12, 35, 40, 45)):  # rotated logs from an earlier tool: three past 30 days
        # real gzip files of the app's log lines (random bytes named .gz were each a damaged_file warning of the
        # demo's log jobs)
        rotated = root / "logs" / f"app.log.{i + 1}.gz"
        rotated.parent.mkdir(parents=True, exist_ok=True)
        rotated.write_bytes(gzip.compress(b"".join(b"line %d\n" % n for n in range(1, 8001)), mtime=0))
        os.utime(rotated, (t - age * DAY, t - age * DAY))
        counts["old_logs"] += 1
    for i in range(12):  # Next.js build cache: half of it stale
        write(root / ".next" / "cache" / "images" / f"img{i}.webp", 32 * 1024, 10 if i % 2 else 1)
        counts["cache_files"] += 1
    for i in range(6):
        write(root / "tmp" / f"upload-{i}.part", 16 * 1024, 3 if i < 4 else 0.01)
        counts["temp_files"] += 1
    rel = root / "releases"
    for i in range(releases):
        stamp = (now - timedelta(days=releases - i)).strftime("%Y%m%d%H%M%S")
        write(rel / stamp / "server.js", 8 * 1024, releases - i)
    newest = sorted(p.name for p in rel.iterdir())[-1]
    current = root / "current"
    if current.is_symlink():
        current.unlink()
    current.symlink_to(rel / newest)
    return counts


# -- the app process itself -------------------------------------------------------------------------

def _serve(root: Path, port: int, rate: float) -> None:
    log_path = root / "logs" / "app.log"
    reopen = threading.Event()
    stop = threading.Event()
    last = [0]

    def writer() -> None:
        fh = open(log_path, "a", buffering=1)  # noqa: SIM115 - reopened on SIGUSR1; O_APPEND, one write per line
        n = 0
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        while not stop.is_set():
            if reopen.is_set():
                reopen.clear()
                fh.close()
                fh = open(log_path, "a", buffering=1)  # noqa: SIM115
            n += 1
            fh.write(f"{datetime.now(UTC).isoformat()} line {n}\n")
            last[0] = n
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        fh.close()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/moved":  # a health URL that redirects (http -> https, a trailing slash)
                self.send_response(301)
                self.send_header("Location", "/health")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            healthy = not (root / "UNHEALTHY").exists()
            code = 200 if self.path.startswith("/health") and healthy else 503 if not healthy else 404
            body = b"ok\n" if code == 200 else b"unhealthy\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    t = threading.Thread(target=writer, daemon=True)

    def on_term(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGUSR1, lambda s, f: reopen.set())
    signal.signal(signal.SIGTERM, on_term)
    (root / "app.pid").write_text(f"{os.getpid()}\n")
    t.start()
    server.serve_forever(poll_interval=0.1)
    t.join(timeout=5)
    server.server_close()
    (root / "last-line").write_text(str(last[0]))


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
