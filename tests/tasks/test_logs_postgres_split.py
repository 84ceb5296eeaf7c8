"""log_statement + log_duration: a statement's line and its bare "duration:" line paired wherever the log is cut.

A real PostgreSQL 15 logs every statement (log_statement = 'all') and every duration (log_duration = on, no
log_min_duration_statement) while several pgbench clients run at once, with the simple, extended and prepared
protocols: a backend's "statement:"/"execute …:" line and its bare "duration: X ms" line have other backends'
lines between them.  Whether the log is read in two runs (cut at any entry), or in pieces by several processes,
every statement counts once, with its own duration: the same figures as one read of the whole log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs import parallel, pglog
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.postgres import PostgresCluster

PREFIX = pgworkload.LOG_LINE_PREFIX
CONF = f"""
log_duration = on
log_statement = 'all'
lc_messages = 'C'
log_line_prefix = '{PREFIX}'
"""
ALL = 10**6


@pytest.fixture(scope="module")
def pairs_log(services_dir: Path) -> bytes:
    """The server's log of concurrent pgbench clients (3 protocols), a multi-line statement and a failed one."""
    cluster = PostgresCluster(services_dir / "pg-split-pairs", extra_conf=CONF)
    cluster.start()
    try:
        env = {**os.environ, **cluster.env()}
        pgbench = str(cluster.bin / "pgbench")
        subprocess.run([pgbench, "-i", "-s", "1", "-q", "postgres"], env=env, check=True, capture_output=True)
        cluster.execute("CREATE DATABASE other")
        start = cluster.log.stat().st_size
        for mode, db in (("extended", "postgres"), ("prepared", "other"), ("simple", "postgres")):
            if db == "other":
                subprocess.run([pgbench, "-i", "-s", "1", "-q", db], env=env, check=True, capture_output=True)
            subprocess.run([pgbench, "-n", "-M", mode, "-c", "3", "-j", "3", "-t", "6", db], env=env, check=True,
                           capture_output=True)
        with cluster.connect() as c:
            c.execute("SELECT 1 AS upk_multi,\n  2 AS upk_line")
            with pytest.raises(Exception, match="division by zero"):
                c.execute("SELECT 1 / 0 AS upk_fails")
            c.execute("SELECT pg_sleep(%s) AS upk_sleep", (0.05,), prepare=False)
    finally:
        cluster.stop()
    data = cluster.log.read_bytes()[start:]
    text = data.decode()
    # what makes the test mean something: interleaved backends, both protocols, a continuation line
    assert "LOG:  execute <unnamed>: " in text and "LOG:  execute P_1: " in text and "LOG:  statement: " in text
    assert "\n\t  2 AS upk_line" in text and "ERROR:  division by zero" in text
    return data


def entry_starts(data: bytes) -> list[int]:
    """The offsets where an entry begins (a line that is no continuation line), the end excepted."""
    return [0] + [m.end() for m in re.finditer(rb"\n(?!\t)", data) if m.end() < len(data)]


def figures(rep: dict[str, Any]) -> dict[str, Any]:
    """What must add up across runs: counts exactly, times to the microsecond."""
    st = rep["statements"]
    return {"count": st["count"], "total_us": round(st["total_ms"] * 1000),
            "prepare": st["prepare_bind"]["count"], "prepare_us": round(st["prepare_bind"]["total_ms"] * 1000),
            "per_fp": Counter({q["fingerprint"]: q["count"] for q in rep["most_frequent"]}),
            "per_fp_us": Counter({q["fingerprint"]: round(q["total_ms"] * 1000) for q in rep["most_frequent"]}),
            "by_db": Counter(rep["by_database"]), "by_hour": Counter(rep["by_hour"])}


def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a[k] + b[k] for k in a}


def scan(data: bytes, off: int, before: Any) -> tuple[dict[str, Any], Any]:
    """One run over ``data`` (at ``off`` of the log), as the task does it: what the last run left waiting
    (``before``, JSON as kept in the job's state) in, what waits at the end out."""
    acc = pglog.PgAccumulator(pglog.PgScanOptions(log_line_prefix=PREFIX))
    acc.feed(data, "postgresql.log", off)
    p = acc.partial()
    waiting = pglog.resolve(p, ["postgresql.log"], pglog.open_from_json(before))
    return figures(pglog.summarize(p, top_n=ALL)), json.loads(json.dumps(pglog.open_to_json(waiting)))


def test_two_runs_cut_at_any_entry_give_the_figures_of_one(pairs_log: bytes) -> None:
    whole, _ = scan(pairs_log, 0, None)
    text = pairs_log.decode()
    ran = text.count("LOG:  statement: ") + text.count("LOG:  execute ") - 1  # one failed: no duration
    assert whole["count"] == ran and whole["prepare"] >= 3 * 6 * 7 * 2
    assert sum(whole["by_db"].values()) == whole["count"] and whole["by_db"]["other"] >= 3 * 6 * 7
    for cut in entry_starts(pairs_log)[1:]:
        first, waiting = scan(pairs_log[:cut], 0, None)
        second, _ = scan(pairs_log[cut:], cut, waiting)
        assert add(first, second) == whole, f"cut at {cut}: {pairs_log[max(0, cut - 200):cut + 200]!r}"


def test_pieces_scanned_by_several_processes_give_the_figures_of_one(pairs_log: bytes, tmp_path: Path) -> None:
    """parallel.scan hands small units out biggest first to two processes: pairs cut by a unit's end too."""
    log = tmp_path / "postgresql.log"
    log.write_bytes(pairs_log)
    whole, _ = scan(pairs_log, 0, None)
    units = parallel.split_units(str(log), 0, len(pairs_log), final=True, label=str(log), continuation=b"\t",
                                 unit=len(pairs_log) // 25)
    assert len(units) >= 20
    part, _ = parallel.scan("upkeeper.logs.pglog", pglog.PgScanOptions(log_line_prefix=PREFIX), units, workers=2,
                            continuation=b"\t", min_parallel=0)
    assert figures(pglog.summarize(part, top_n=ALL)) == whole


def config(make_config: Any, tmp_path: Path, log: Path, history: Path) -> Path:
    path: Path = make_config({
        "history": str(history),
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1, "user": "postgres"}},
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db",
                             "options": {"log_file": str(log), "log_line_prefix": PREFIX, "html": False,
                                         "report_dir": str(tmp_path / "reports")}}},
    }, name=f"{history.stem}.yaml")
    return path


def job(cli: Any, cfg: Path) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
    assert res.code in (0, 1), res.output
    r: dict[str, Any] = res.json()[0]
    data: dict[str, Any] = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json"))
                                      .read_text())
    return figures(data)


def between_pairs(data: bytes, n: int) -> Iterator[int]:
    """Cuts right after a "statement:"/"execute …:" line whose bare duration comes later: the hard ones."""
    found = 0
    for m in re.finditer(rb"^[^\n]* \[(\d+)\] [^\n]*LOG:  (?:statement|execute [^:\n]*): [^\n]*\n(?!\t)", data, re.M):
        rest = data[m.end():]
        if re.match(rb"[^\n]* \[" + m.group(1) + rb"\] [^\n]*LOG:  duration: [\d.]+ ms\n", rest):
            continue  # its duration is the very next line: cutting here is cutting between them too
        yield m.end()
        found += 1
        if found == n:
            return


def test_the_job_run_twice_counts_each_statement_once_with_its_duration(cli: Any, make_config: Any,
                                                                        pairs_log: bytes, tmp_path: Path) -> None:
    """The task itself, its second run reading on from where the first stopped: a statement logged before the
    first run and timed after it is counted by the second, with its own duration and fingerprint."""
    whole_log = tmp_path / "whole" / "postgresql.log"
    whole_log.parent.mkdir()
    whole_log.write_bytes(pairs_log)
    whole = job(cli, config(make_config, tmp_path, whole_log, tmp_path / "whole.db"))
    cuts = list(between_pairs(pairs_log, 4))
    assert len(cuts) == 4
    for cut in cuts:
        log = tmp_path / f"cut{cut}" / "postgresql.log"
        log.parent.mkdir()
        log.write_bytes(pairs_log[:cut])
        cfg = config(make_config, tmp_path, log, tmp_path / f"cut{cut}.db")
        first = job(cli, cfg)
        with open(log, "ab") as fh:
            fh.write(pairs_log[cut:])
        second = job(cli, cfg)
        assert add(first, second) == whole, cut


def test_a_statement_timed_after_a_run_and_the_servers_rotation_is_counted(cli: Any, make_config: Any,
                                                                            services_dir: Path,
                                                                            tmp_path: Path) -> None:
    """The server's own rotation (log_filename with strftime escapes, pg_rotate_logfile as log_rotation_age
    does it): a statement logged in one file before a run and timed in the next file, after the server
    rotated, is counted by the next run with its own duration — the statement was in the file the last run
    stopped in, its duration in a file that run never saw."""
    import threading
    import time

    cluster = PostgresCluster(services_dir / "pg-split-rotation", extra_conf=CONF + (
        "logging_collector = on\nlog_directory = 'log'\nlog_filename = 'postgresql-%Y-%m-%d_%H%M%S.log'\n"
        "log_rotation_size = 0\nlog_rotation_age = 0\n"))
    cluster.start()
    try:
        cfg: Path = make_config({
            "targets": {"db": cluster.target("postgres")},
            "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db",
                                 "options": {"html": False, "report_dir": str(tmp_path / "reports")}}}})

        def current() -> Path:
            (name,) = cluster.execute("SELECT pg_current_logfile()")[0]
            return cluster.data / name

        def wait_for(marker: str, path: Path) -> None:
            deadline = time.monotonic() + 30
            while marker.encode() not in path.read_bytes():
                assert time.monotonic() < deadline, f"{marker} never reached {path}"
                time.sleep(0.05)

        def counted() -> dict[str, Any]:
            res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
            assert res.code in (0, 1), res.output
            r: dict[str, Any] = res.json()[0]
            data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
            return {q["fingerprint"]: q for q in data["most_frequent"] if "upk_" in q["fingerprint"]}

        counted()  # the first run: from here on, each run reads on from the last
        with cluster.connect() as holder, cluster.connect() as waiter:
            holder.execute("SELECT pg_advisory_lock(42)")
            (pid,) = waiter.execute("SELECT pg_backend_pid()").fetchone()
            t = threading.Thread(target=lambda: waiter.execute("SELECT pg_advisory_lock(42) AS upk_across"))
            t.start()
            first = current()
            wait_for("statement: SELECT pg_advisory_lock(42) AS upk_across", first)
            assert counted() == {}  # logged, not timed yet: nothing to count
            deadline = time.monotonic() + 30
            while current() == first:  # a new name each second: within the same one, the same file reopened
                assert time.monotonic() < deadline, "the server did not rotate its log"
                cluster.execute("SELECT pg_rotate_logfile()")
                time.sleep(0.1)
            holder.execute("SELECT pg_advisory_unlock(42)")
            t.join(30)
            assert not t.is_alive()
        # the statement in the first file, its duration (the backend's next line) in the second (written by the
        # logging collector: waited for)
        timed = re.compile(rb"\[%d\] [^\n]*LOG:  duration: [\d.]+ ms\n" % pid)
        deadline = time.monotonic() + 30
        while not timed.search(current().read_bytes()):
            assert time.monotonic() < deadline, f"the duration never reached {current()}"
            time.sleep(0.05)
        assert b"upk_across" not in current().read_bytes()
        seen = counted()
        assert list(seen) == ["select pg_advisory_lock(?) as upk_across"], seen
        assert seen["select pg_advisory_lock(?) as upk_across"]["count"] == 1
        assert counted() == {}  # and once only
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def rich_log(services_dir: Path) -> bytes:
    """A server logging what pgBadger reads (every statement with its duration, errors, lock waits, a deadlock,
    temporary files, checkpoints, autovacuum, connections) after the workload, and a lock wait that the
    server logs again ("still waiting" each time the waiting backend is woken up)."""
    import threading
    import time

    cluster = PostgresCluster(services_dir / "pg-split-rich", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        pgworkload.run(lambda: cluster.connect(), statements=150)
        with cluster.connect() as a, cluster.connect() as b, cluster.connect() as x:
            a.execute("CREATE TABLE upk_rewait (id int PRIMARY KEY, v text)")
            a.execute("INSERT INTO upk_rewait VALUES (1, 'a')")
            a.execute("BEGIN")
            a.execute("UPDATE upk_rewait SET v = 'held' WHERE id = 1")
            (pid,) = b.execute("SELECT pg_backend_pid()").fetchone()
            t = threading.Thread(target=lambda: b.execute("UPDATE upk_rewait SET v = 'waiter' WHERE id = 1"))
            t.start()
            logged = f"process {pid} still waiting for ShareLock".encode()
            for n in range(1, 4):  # woken up (any signal does it): the same wait logged again, each time
                deadline = time.monotonic() + 30
                while cluster.log.read_bytes().count(logged) < n:
                    assert time.monotonic() < deadline, "the wait was not logged (again)"
                    if n > 1:
                        x.execute("SELECT pg_log_backend_memory_contexts(%s)", (pid,))
                    time.sleep(0.1)
            a.execute("COMMIT")
            t.join(30)
            assert not t.is_alive()
    finally:
        cluster.stop()
    data = cluster.log.read_bytes()
    assert data.count(b"still waiting for ShareLock") >= 4 and b"deadlock detected" in data
    assert b"temporary file: " in data and b"checkpoint complete: " in data and b"STATEMENT:  " in data
    return data


def additive(rep: dict[str, Any]) -> dict[str, Any]:
    """The report's figures that two runs over two halves of a log must add up to."""
    lk, st = rep["locks"], rep["statements"]
    return {
        "lines": rep["lines"], "entries": rep["entries"], "unparsed": rep["unparsed"],
        "statements": st["count"], "statement_us": round(st["total_ms"] * 1000),
        "per_fp": Counter({q["fingerprint"]: q["count"] for q in rep["most_frequent"]}),
        "errors": Counter(rep["errors"]["by_sqlstate"]),
        "error_classes": Counter({(e["level"], e["sqlstate"], e["message"]): e["count"]
                                  for e in rep["errors"]["classes"]}),
        "lock_waits": lk["waits"], "lock_acquired": lk["acquired_after_wait"], "lock_failures": lk["failures"],
        "lock_types": Counter(lk["types"]), "lock_queries": Counter({q["fingerprint"]: q["count"]
                                                                    for q in lk["queries"]}),
        "deadlocks": rep["deadlocks"]["count"],
        "temp": rep["temp_files"]["count"], "temp_bytes": rep["temp_files"]["total_bytes"],
        "temp_queries": Counter({q["fingerprint"]: q["count"] for q in rep["temp_files"]["queries"]}),
        "checkpoints": rep["checkpoints"]["count"], "checkpoint_buffers": rep["checkpoints"]["buffers"],
        "checkpoint_reasons": Counter(rep["checkpoints"]["reasons"]),
        "autovacuum": Counter(rep["autovacuum"]), "connections": rep["connections"],
        "by_db": Counter(rep["by_database"]), "by_hour": Counter(rep["by_hour"]),
    }


def run_over(data: bytes, off: int, before: Any, acc: Any = None,
             reduce: Callable[[dict[str, Any]], dict[str, Any]] = additive) -> tuple[dict[str, Any], Any]:
    """One run over ``data`` (starting at byte ``off``) that picks up what ``before`` left waiting: its figures
    (through ``reduce``) and what it leaves waiting, as the job state keeps it (JSON)."""
    acc = acc if acc is not None else pglog.PgAccumulator(pglog.PgScanOptions(log_line_prefix=PREFIX))
    acc.feed(data, "postgresql.log", off)
    p = acc.partial()
    waiting = pglog.resolve(p, ["postgresql.log"], pglog.open_from_json(before))
    return reduce(pglog.summarize(p, top_n=ALL)), json.loads(json.dumps(pglog.open_to_json(waiting)))


def message_starts(data: bytes) -> list[int]:
    """The entries that begin a message: PostgreSQL writes a message with its DETAIL, HINT, CONTEXT, QUERY,
    STATEMENT and LOCATION lines in one write, so a run that reads the log stops between two messages."""
    secondary = re.compile(pglog.compile_prefix(PREFIX) + rb"(?:DETAIL|HINT|CONTEXT|QUERY|STATEMENT|LOCATION):  ")
    return [at for at in entry_starts(data) if not secondary.match(data, at)]


def test_every_figure_adds_up_across_two_runs_cut_at_any_message(rich_log: bytes) -> None:
    """Nothing counted twice, nothing lost: lock waits logged again, errors, temp files, checkpoints … —
    two runs cut between any two messages give the figures of one."""
    whole, _ = run_over(rich_log, 0, None)
    assert whole["lock_waits"] >= 2 and whole["lock_types"]["ShareLock on transaction"] >= 2
    assert whole["lock_queries"]["update upk_rewait set v = ? where id = ?"] == 1  # logged 3 times, one wait
    assert whole["deadlocks"] == 1 and whole["temp"] and whole["checkpoints"] and sum(whole["errors"].values())
    for cut in message_starts(rich_log)[1:]:
        first, waiting = run_over(rich_log[:cut], 0, None)
        second, _ = run_over(rich_log[cut:], cut, waiting)
        both = {k: first[k] + second[k] for k in whole}
        assert both == whole, f"cut at {cut}: {rich_log[max(0, cut - 300):cut + 300]!r}"



@pytest.mark.parametrize("pieces", [40, 300])
def test_pieces_cut_where_messages_begin_keep_every_figure(rich_log: bytes, tmp_path: Path, pieces: int) -> None:
    """parallel.scan's pieces, cut as the task cuts a stderr log (pglog.message_start): an error keeps its
    STATEMENT, a temporary file and a lock wait their query, a lock wait logged again counts once."""
    log = tmp_path / "postgresql.log"
    log.write_bytes(rich_log)
    whole, _ = run_over(rich_log, 0, None)
    units = parallel.split_units(str(log), 0, len(rich_log), final=True, label=str(log), continuation=b"\t",
                                 unit=len(rich_log) // pieces, record_start=pglog.message_start(PREFIX))
    assert len(units) >= pieces // 2
    part, _ = parallel.scan("upkeeper.logs.pglog", pglog.PgScanOptions(log_line_prefix=PREFIX), units, workers=2,
                            continuation=b"\t", min_parallel=0)
    assert additive(pglog.summarize(part, top_n=ALL)) == whole
    assert [u.start for u in units] == [at for at in message_starts(rich_log) if at in {u.start for u in units}]


@pytest.fixture(scope="module")
def structured_logs(services_dir: Path) -> dict[str, bytes]:
    """The same statements and durations (log_statement + log_duration, concurrent pgbench clients) as the
    server writes them in its csvlog and its jsonlog."""
    cluster = PostgresCluster(services_dir / "pg-split-structured", extra_conf=CONF + (
        "logging_collector = on\nlog_destination = 'csvlog,jsonlog'\nlog_directory = 'log'\n"
        "log_filename = 'postgresql.log'\n"))
    cluster.start()
    try:
        env = {**os.environ, **cluster.env()}
        pgbench = str(cluster.bin / "pgbench")
        subprocess.run([pgbench, "-i", "-s", "1", "-q", "postgres"], env=env, check=True, capture_output=True)
        for mode in ("extended", "simple"):
            subprocess.run([pgbench, "-n", "-M", mode, "-c", "3", "-j", "3", "-t", "4", "postgres"], env=env,
                           check=True, capture_output=True)
        with cluster.connect() as c:
            c.execute("SELECT 1 AS upk_multi,\n  2 AS upk_line")
    finally:
        cluster.stop()
    return {fmt: (cluster.data / "log" / f"postgresql.{ext}").read_bytes()
            for fmt, ext in (("csvlog", "csv"), ("jsonlog", "json"))}


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_csvlog_and_jsonlog_read_in_two_runs_pair_as_one(structured_logs: dict[str, bytes], fmt: str) -> None:
    """Cut right after each record of a statement (where its duration is still to come): two runs give the
    figures of one, in a csvlog and in a jsonlog as in a stderr log."""
    from upkeeper.logs import pgstruct

    data = structured_logs[fmt]

    def run(part: bytes, off: int, before: Any) -> tuple[dict[str, Any], Any]:
        return run_over(part, off, before, pgstruct.PgStructAccumulator(pgstruct.PgStructOptions(format=fmt)),
                        figures)

    whole, _ = run(data, 0, None)
    assert whole["count"] > 100 and whole["per_fp"]["select ? as upk_multi, ? as upk_line"] == 1
    marker = b',LOG,00000,"statement: ' if fmt == "csvlog" else b'"message":"statement: '
    record = re.compile(rb"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)" if fmt == "csvlog" else rb"\n")
    cuts = [m.end() for m in record.finditer(data) if m.end() < len(data)
            and (marker in data[data.rfind(b"\n", 0, m.start()) + 1:m.start()]
                 or b"execute " in data[data.rfind(b"\n", 0, m.start()) + 1:m.start()])]
    assert len(cuts) > 100
    for cut in cuts:
        first, waiting = run(data[:cut], 0, None)
        second, _ = run(data[cut:], cut, waiting)
        assert add(first, second) == whole, cut


def test_a_long_query_timed_after_thousands_of_backends_and_a_run_is_counted(cli: Any, make_config: Any,
                                                                              tmp_path: Path) -> None:
    """The audit's case through the task: a 5 s query's statement, then 5,000 connection-per-request backends
    (a statement each, never timed: log_min_duration_statement, no log_disconnections), the run, then the
    query's bare duration.  Only 1,000 backends' statements are handed to the next run: the query's duration
    was dropped silently (0 statements).  Now the next run counts it — 'forgotten', with its pid and time —
    and the finding says why and what to set."""
    ts = "2024-03-01 10:00:00.000 UTC"
    log = tmp_path / "postgresql.log"
    log.write_bytes((f"{ts} [1] LOG:  statement: SELECT pg_sleep(5)\n"
                     + "".join(f"{ts} [{pid}] LOG:  statement: SELECT 1\n" for pid in range(1000, 6000)))
                    .encode())
    cfg = config(make_config, tmp_path, log, tmp_path / "h.db")
    res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
    assert res.code in (0, 1), res.output
    with open(log, "ab") as fh:
        fh.write(b"2024-03-01 10:00:05.000 UTC [1] LOG:  duration: 5000.000 ms\n")
    res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
    assert res.code in (0, 1), res.output
    r = res.json()[0]
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    st = data["statements"]
    assert (st["count"], st["total_ms"]) == (1, 5000.0)  # (was 0 statements)
    assert st["unpaired"]["forgotten"] == 1
    assert st["unpaired"]["slowest"] == [{"ms": 5000.0, "pid": "1", "time": "2024-03-01 10:00:05"}]
    assert "1 durations without their statement" in r["summary"]
    (f,) = [f for f in r["findings"] if f["check"] == "logs.postgres.unpaired_durations"]
    assert "forgot" in f["message"] and "log_disconnections = on" in f["remediation"]
