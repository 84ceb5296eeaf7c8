"""Helpers for tests that watch upkeeper's processes from outside (through /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def worker_with_open(parent: int, path: Path) -> int | None:
    """The pid of ``parent``'s worker process (a child) while it has ``path`` open, else None."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return int(pid)
        except OSError:
            continue
    return None
