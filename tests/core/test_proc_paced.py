"""Writing a stream into a child that reads it in small pieces (pg_restore: its stdin 4 KiB at a time) and more
slowly than it comes: whole and in order, without a wake-up of the writer per piece, and a reader that goes away
ends the writing (BrokenPipeError), never a hang."""

from __future__ import annotations

import fcntl
import hashlib
import resource
import sys
import threading
from pathlib import Path

import pytest

from upkeeper.core import proc

PIECE = 4096
TOTAL = 16 << 20
CHUNK = 1 << 20

# Reads its stdin PIECE bytes at a time at most ~150 MB/s (slower than the writer: the pipe stays full, as in front
# of a pg_restore held back by the server's COPY); prints the SHA-256 of what it read.
READER = f"""
import hashlib, os, sys, time
sha = hashlib.sha256()
next_at = time.monotonic()
while True:
    b = os.read(0, {PIECE})
    if not b:
        break
    sha.update(b)
    next_at += len(b) / 150e6
    while time.monotonic() < next_at:
        pass
sys.stdout.write(sha.hexdigest())
"""

pytestmark = pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ") or not hasattr(resource, "RUSAGE_THREAD"),
                                reason="Linux pipes")


def _data() -> bytes:
    return b"".join(i.to_bytes(8, "big") * (CHUNK // 8) for i in range(TOTAL // CHUNK))


def _write(paced: bool) -> tuple[str, int]:
    """(the reader's SHA-256 of what it read, the writing thread's voluntary context switches while writing)."""
    data = _data()
    switches: list[int] = []
    with proc.spawn([sys.executable, "-c", READER], stdin=proc.PIPE) as sp:

        def write() -> None:
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
            out = proc.PacedPipe(sp.stdin) if paced else sp.stdin
            for i in range(0, TOTAL, CHUNK):
                out.write(data[i:i + CHUNK])
            switches.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before)
            out.close()

        t = threading.Thread(target=write)
        t.start()
        digest = sp.stdout.read().decode()
        t.join(60)
        sp.wait()
    assert switches, "the writer did not finish"
    return digest, switches[0]


def test_paced_writes_arrive_whole_without_a_wake_up_per_piece() -> None:
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < proc.STREAM_PIPE_SIZE:
        pytest.skip("pipes cannot be widened here")
    want = hashlib.sha256(_data()).hexdigest()
    digest, paced = _write(paced=True)
    assert digest == want
    # a plain write into the full pipe is woken for (nearly) every piece the reader takes: ~4,000 here
    digest, plain = _write(paced=False)
    assert digest == want
    assert plain > TOTAL // PIECE // 4, plain  # (the measure sees the difference)
    assert paced < TOTAL // PIECE // 16, (paced, plain)


def test_a_reader_that_goes_away_ends_the_writing() -> None:
    with proc.spawn([sys.executable, "-c", "import os; os.read(0, 65536)"], stdin=proc.PIPE) as sp:
        out = proc.PacedPipe(sp.stdin)
        failed: list[BaseException] = []

        def write() -> None:
            try:
                for _ in range(64):  # more than the pipe holds once the reader is gone
                    out.write(b"x" * CHUNK)
            except BrokenPipeError as exc:
                failed.append(exc)

        t = threading.Thread(target=write, daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "the writer hangs on a pipe nobody reads"
        sp.wait(check=False)
    assert failed
