"""Helpers shared by the benchmark scripts (a package, so ``make bench`` does not run it as a benchmark)."""

from __future__ import annotations

import compileall
import os
import subprocess
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


def upkeeper_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment in which ``python -m upkeeper`` runs this checkout's upkeeper, as installed.

    Its ``src`` goes first on PYTHONPATH (the venv's editable install may point at another checkout),
    and its modules are byte-compiled now, as an installed package's are: with PYTHONDONTWRITEBYTECODE
    set, a stale ``.pyc`` (any module changed since the last compile) is recompiled in every process,
    the CLI's and the worker's: ~60 ms of each run's fixed cost after a merge.
    """
    compileall.compile_dir(str(SRC), quiet=1)
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = str(SRC) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    return out


def pipeline(stages: list[list[str]], out: Path, env: dict[str, str] | None = None) -> float:
    """a | b | c > out, wired in Python (no shell), as a shell expert would run it; every stage's exit status
    checked.  Returns the wall time in seconds."""
    t0 = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    prev = None
    with open(out, "wb") as fh:
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            p = subprocess.Popen(argv, stdin=prev, stdout=fh if last else subprocess.PIPE, env=env)
            if prev is not None:
                prev.close()
            prev = p.stdout
            procs.append(p)
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"{p.args!r} failed")
    return time.monotonic() - t0


def start_daemon(cfg: Path, work: Path, concurrency: int) -> subprocess.Popen[bytes] | None:
    """``upkeeper daemon`` on ``cfg`` after ``config check``, its output in ``work/daemon.log`` and its temp
    files in ``work/tmp``; None when the config does not check (the reason is printed)."""
    import sys

    env = upkeeper_env()
    env["TMPDIR"] = str(work / "tmp")
    upk = [sys.executable, "-m", "upkeeper", "--config", str(cfg)]
    check = subprocess.run([*upk, "config", "check"], capture_output=True, text=True, env=env)
    if check.returncode != 0:
        print(check.stdout, check.stderr)
        return None
    log_fd = os.open(work / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        proc = subprocess.Popen([*upk, "daemon", "--concurrency", str(concurrency)],
                                stdout=log_fd, stderr=subprocess.STDOUT, env=env)
    finally:
        os.close(log_fd)  # the daemon has its own copy
    return proc


def teardown(daemon: subprocess.Popen[bytes] | None, services: list[Any], work: Path, keep: bool) -> None:
    """End a drill: kill the daemon if it still runs, stop the services (newest first, each whatever the
    others do) and remove the work directory unless ``keep``."""
    if daemon is not None and daemon.poll() is None:
        daemon.kill()
        daemon.wait()
    for svc in reversed(services):
        try:
            svc.stop()
        except Exception:
            pass
    if not keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def drill_options(ap: Any, minutes: float, out: Path) -> None:
    """The options every soak drill takes: --minutes (at most 8: a bounded drill), --sample, --concurrency,
    --out and --keep."""
    ap.add_argument("--minutes", type=float, default=minutes,
                    help=f"how long the daemon runs (default {minutes:g}, at most 8)")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
