"""Reading a child's stdout that it writes in small pieces (pg_dump's stdio buffer of 4-8 KiB): gathered in the
pipe and read in large chunks, whole and in order, never keeping the writer waiting."""

from __future__ import annotations

import fcntl
import hashlib
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.core import proc

PIECE = 4096
PIECES = 4096  # 16 MiB

# Writes PIECES pieces of PIECE bytes, each its own write(2), at most ~100 MB/s (pg_dump's pace at pgbench's
# data: slower than a reader that keeps up, so each piece would be a read of its own); on stderr: the longest
# single write in seconds (a write waits only for room in the pipe).
WRITER = f"""
import os, time
piece = bytearray({PIECE})
longest = 0.0
next_at = time.monotonic()
for i in range({PIECES}):
    piece[:8] = i.to_bytes(8, "big")
    t = time.monotonic()
    os.write(1, piece)
    longest = max(longest, time.monotonic() - t)
    next_at += {PIECE} / 100e6
    while time.monotonic() < next_at:
        pass
os.write(2, repr(longest).encode())
"""


def _expected() -> str:
    sha = hashlib.sha256()
    piece = bytearray(PIECE)
    for i in range(PIECES):
        piece[:8] = i.to_bytes(8, "big")
        sha.update(piece)
    return sha.hexdigest()


def _read(gather: bool, pipe: int | None = None) -> tuple[int, str, float]:
    """(reads, SHA-256 of what was read, the writer's longest write)."""
    with proc.spawn([sys.executable, "-c", WRITER]) as sp:
        if pipe is None:
            proc.widen_pipe(sp.popen.stdout)
        else:
            fcntl.fcntl(sp.stdout.fileno(), fcntl.F_SETPIPE_SZ, pipe)
        sha = hashlib.sha256()
        reads = 0
        for view in sp.iter_views(gather=gather):
            reads += 1
            sha.update(view)
        res = sp.wait()
    return reads, sha.hexdigest(), float(res.stderr)


def _record_pauses(monkeypatch: Any, pause: bool) -> list[float]:
    """The pauses this thread (the reader) makes from now on; it pauses for real only if ``pause``.  Other threads
    sleep as before and are not recorded: one left running by an earlier test in this worker (a server's poll loop)
    sleeps through the same patched module (CI saw a 0.05 s pause from one)."""
    pauses: list[float] = []
    real_sleep = time.sleep
    reader = threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() != reader:
            real_sleep(seconds)
            return
        pauses.append(seconds)
        if pause:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return pauses


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="Linux pipes")
def test_small_writes_are_gathered_into_large_reads_whole_and_in_order(monkeypatch: Any) -> None:
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < proc.STREAM_PIPE_SIZE:
        pytest.skip("pipes cannot be widened here")
    pauses = _record_pauses(monkeypatch, pause=True)
    reads, digest, longest = _read(gather=True)
    assert digest == _expected()
    # ~4096 pieces, read one by one by a reader that keeps up; gathered: a fraction of that (at 100 MB/s a 2 ms
    # pause gathers ~50 pieces)
    assert reads <= PIECES // 8, reads
    assert pauses and max(pauses) <= proc.GATHER_PAUSE_MAX
    # the writer never waited for the pipe to empty for longer than a loaded machine's scheduling hiccup
    assert longest < 0.5, longest


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="Linux pipes")
def test_a_narrow_pipe_is_read_as_the_data_comes(monkeypatch: Any) -> None:
    """On a pipe the system would not widen (64 KiB), pausing would keep the writer waiting: no pause."""
    pauses = _record_pauses(monkeypatch, pause=False)
    _reads, digest, _longest = _read(gather=True, pipe=64 << 10)
    assert digest == _expected()
    assert pauses == []
