"""Real ``upkeeper daemon`` processes for the tests: started on a config, waited for, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: what systemd hands a service (core/sdnotify.py): never inherited from the environment the tests run in
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def wait_for(what: str, cond: Callable[[], bool], log: Path | None = None, timeout: float = 40.0,
             poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}" + (f"; daemon log:\n{log.read_text()}" if log else ""))


@contextmanager
def daemon_process(cfg: Path, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``upkeeper --config cfg daemon`` in a session of its own, its output in ``log``, started (``env``: extra
    variables); killed with its whole group at the end unless stopped."""
    base = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
    with open(log, "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "daemon"], stdout=out,
                             stderr=out, env={**base, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True)
    try:
        wait_for("the daemon to start", lambda: "upkeeper daemon:" in log.read_text() or p.poll() is not None, log)
        assert p.poll() is None, log.read_text()
        yield p
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def stop_daemon(p: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, and the daemon ends cleanly."""
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 0, log.read_text()
