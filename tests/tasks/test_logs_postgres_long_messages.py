"""logs.postgres: long messages (64 KB statements) logged by several backends at once, on a real server.

PostgreSQL writes a message with one write(2) when it logs to stderr itself (no logging collector: pg_ctl -l, the
Debian clusters), and in chunks of PIPE_BUF (4 KB on Linux), each headed with its process id, through the
collector's pipe when logging_collector is on: the collector puts them back together per process.  Either way a message reaches the file whole: the log
upkeeper reads has no line of one backend cut by another's.  Only when the server's stderr is itself a pipe
(read by tee, svlogd, a container runtime — a write of more than PIPE_BUF, 4 KB, is not atomic there) do long
messages come in pieces, interleaved with others': what is read then is said, never silently taken for
statements (see docs/logs.md, Limits).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs.pglog import PgAccumulator, PgScanOptions, summarize
from upkeeper.sandbox.postgres import PostgresCluster

BACKENDS, ROUNDS, SIZE = 4, 40, 64 * 1024
CONF = "log_statement = 'all'\nlog_duration = on\nlc_messages = 'C'\nlog_line_prefix = '%m [%p] '\n"
STATEMENT = re.compile(rb"LOG:  statement: SELECT length\('([a-h]+)'\) -- conn (\d) round (\d+)\n")


def load(cluster: PostgresCluster) -> None:
    """BACKENDS sessions at once, each running ROUNDS statements of SIZE bytes (its own letter)."""
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with cluster.connect() as c:
                for i in range(ROUNDS):
                    c.execute(f"SELECT length('{'abcdefgh'[k] * SIZE}') -- conn {k} round {i}")
        except BaseException as exc:  # (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(BACKENDS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def intact(buf: bytes) -> tuple[int, int]:
    """(statements logged whole, statements whose text holds another's bytes)."""
    found = STATEMENT.findall(buf)
    mixed = sum(1 for text, _k, _i in found if len(set(text)) != 1 or len(text) != SIZE)
    return len(found) - mixed, mixed


def scan(buf: bytes) -> dict[str, Any]:
    acc = PgAccumulator(PgScanOptions(log_line_prefix="%m [%p] "))
    acc.feed(buf, "log", 0)
    return summarize(acc.partial(), top_n=100)


@pytest.mark.parametrize("collector", [False, True], ids=["stderr-file", "logging-collector"])
def test_long_messages_of_several_backends_reach_the_file_whole(services_dir: Path, collector: bool) -> None:
    extra = "logging_collector = on\nlog_directory = 'pglog'\nlog_filename = 'postgresql.log'\n" if collector else ""
    cluster = PostgresCluster(services_dir / f"pg-long-{int(collector)}", extra_conf=CONF + extra)
    cluster.start()
    try:
        load(cluster)
    finally:
        cluster.stop()
    buf = (cluster.data / "pglog" / "postgresql.log" if collector else cluster.log).read_bytes()
    assert intact(buf) == (BACKENDS * ROUNDS, 0)
    rep = scan(buf)
    assert rep["unparsed"] == 0
    st = rep["statements"]
    # every statement whole and paired with its own duration (and those of the session's set-up queries)
    assert {q["fingerprint"]: q["count"] for q in rep["most_frequent"]}["select length(?)"] == BACKENDS * ROUNDS
    assert st["unpaired"]["count"] == 0


def test_through_a_pipe_long_messages_come_in_pieces_and_the_report_says_so(services_dir: Path) -> None:
    """The server's stderr a pipe, copied to the file by a reader (as tee, svlogd, a container runtime): writes
    of more than 4 KB are cut and interleaved.  A line of one backend then holds pieces of another's; the rest
    of the cut message starts a line of its own, which is no entry: counted unparsed, with samples, never
    read as a statement."""
    cluster = PostgresCluster(services_dir / "pg-long-pipe", extra_conf=CONF)
    cluster.init()
    log = cluster.base / "postgresql.log"
    proc = subprocess.Popen(cluster._argv("postgres", "-D", str(cluster.data)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    assert proc.stderr is not None
    err = proc.stderr

    def pump() -> None:
        with open(log, "ab") as out:
            while chunk := os.read(err.fileno(), 65536):
                out.write(chunk)
                out.flush()

    reader = threading.Thread(target=pump)
    reader.start()
    cluster.started = True
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when it answers
            try:
                cluster.execute("SELECT 1")
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                time.sleep(0.1)
        load(cluster)
    finally:
        cluster.stop()
        proc.wait(timeout=60)
        reader.join(timeout=60)
        err.close()
    buf = log.read_bytes()
    _whole, mixed = intact(buf)
    assert mixed > 0, "no message was cut: the pipe interleaved nothing this time"
    rep = scan(buf)
    assert rep["unparsed"] >= 1 and rep["unparsed_samples"]
