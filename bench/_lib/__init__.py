"""Helpers shared by the benchmark scripts (a package, so ``make bench`` does not run it as a benchmark)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


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
