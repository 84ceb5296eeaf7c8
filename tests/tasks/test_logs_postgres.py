"""logs.postgres end to end: a real cluster logging every statement, the real CLI; agreement with pgBadger."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from upkeeper.logs import pgstruct
from upkeeper.logs.pglog import PgAccumulator, PgScanOptions, summarize
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.postgres import PostgresCluster


def config(make_config: Any, cluster: PostgresCluster, tmp_path: Path, name: str = "upkeeper.yaml",
           **options: Any) -> Path:
    path: Path = make_config({
        "targets": {"db": cluster.target("postgres")},
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db",
                             "options": {"report_dir": str(tmp_path / "reports"), **options}}},
    }, name)
    return path


def run(cli: Any, cfg: Path) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out


def test_report_from_the_server_log(cli: Any, make_config: Any, logging_pg: tuple[PostgresCluster, dict[str, int]],
                                    tmp_path: Path) -> None:
    cluster, done = logging_pg
    # no log_file, no prefix: both come from the server (pg_current_logfile(), SHOW log_line_prefix)
    r = run(cli, config(make_config, cluster, tmp_path))
    assert r["status"] == "warn", r["summary"]
    m = r["metrics"]
    assert m["statements"] >= done["statements"]
    assert m["deadlocks"] == 1 and m["lock_waits"] >= 1 and m["temp_files"] >= 1 and m["checkpoints"] >= 1
    assert m["unparsed_pct"] == 0
    checks = {f["check"]: f for f in r["findings"]}
    for code in ("42P01", "22012", "23505", "42601", "42703", "40P01"):
        assert f"logs.postgres.error.{code}" in checks, code
    assert "SELECT 1/0" in checks["logs.postgres.error.22012"]["message"]
    assert "logs.postgres.deadlocks" in checks and "logs.postgres.lock_waits" in checks
    assert checks["logs.postgres.temp_files"]["severity"] == "info"
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    assert data["log_line_prefix"] == pgworkload.LOG_LINE_PREFIX
    fps = {q["fingerprint"]: q for q in data["most_frequent"]}
    assert fps["update upk_items set qty = qty + ? where id = ?"]["count"] == done["statements"] // 3
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "<svg" in page and "errors by SQLSTATE" in page
    # incremental: the next run reads only what is new — a statement sent after the first run (waited for in the
    # log), and the runs' own settings queries: the first run's unless that run read it already, the second's
    # unless the logging collector had not written it yet when the run read the log (the lower bound was those
    # settings queries alone: 0 once, under load)
    with cluster.connect() as c:
        c.execute("SELECT 'upk-between-runs'")
    log = cluster.data / "log" / "postgresql.log"
    deadline = time.monotonic() + 20
    while b"upk-between-runs" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    again = run(cli, config(make_config, cluster, tmp_path))
    assert 1 <= again["metrics"]["statements"] <= 3 < done["statements"]
    # an application that retries deadlocks and lives with some lock waits sets how many are usual
    waits = m["lock_waits"]
    within = run(cli, config(make_config, cluster, tmp_path, incremental=False, deadlocks_warn=1,
                             lock_waits_warn=waits))
    over = run(cli, config(make_config, cluster, tmp_path, incremental=False, deadlocks_warn=0,
                           lock_waits_warn=waits - 1))
    assert (within["metrics"]["deadlocks"], within["metrics"]["lock_waits"]) == (1, waits)
    assert not {"logs.postgres.deadlocks", "logs.postgres.lock_waits"} & {f["check"] for f in within["findings"]}
    over_checks = {f["check"]: f for f in over["findings"]}
    assert (over_checks["logs.postgres.deadlocks"]["value"], over_checks["logs.postgres.deadlocks"]["threshold"]) \
        == (1, 0)
    assert (over_checks["logs.postgres.lock_waits"]["value"], over_checks["logs.postgres.lock_waits"]["threshold"]) \
        == (waits, waits - 1)


def test_slow_queries_against_the_objective(cli: Any, make_config: Any, services_dir: Path, tmp_path: Path) -> None:
    cluster = PostgresCluster(services_dir / "pg-slow", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        with cluster.connect() as c:
            for _ in range(3):
                c.execute("SELECT pg_sleep(0.15)")
            for i in range(20):
                c.execute(f"SELECT {i}")
        r = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log)))
    finally:
        cluster.stop()
    checks = {f["check"]: f for f in r["findings"]}
    assert checks["logs.postgres.query_p95"]["value"] > 100
    assert checks["logs.postgres.slow_query"]["subject"] == "select pg_sleep(?)"


def test_log_file_needed_when_the_server_cannot_tell(cli: Any, make_config: Any, pg: PostgresCluster,
                                                     tmp_path: Path) -> None:
    r = cli(["--config", str(config(make_config, pg, tmp_path)), "run", "pg-logs", "--json"])
    out = r.json()[0]
    assert out["status"] == "error" and "logging collector is off" in out["summary"]


def test_a_server_that_cannot_be_asked_is_not_said_to_have_its_collector_off(cli: Any, make_config: Any,
                                                                             pg: PostgresCluster, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for fmt in ("auto", "csvlog"):
        path: Path = make_config({
            "targets": {"db": {**pg.target("postgres"), "port": port}},
            "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db",
                                 "options": {"report_dir": str(tmp_path / "reports"), "format": fmt}}}})
        out = cli(["--config", str(path), "run", "pg-logs", "--json"]).json()[0]
        assert out["status"] == "error", out
        assert "cannot ask" in out["summary"] and "refused" in out["summary"], out["summary"]
        assert "collector" not in out["summary"], out["summary"]


def test_csvlog_needed_in_log_destination(cli: Any, make_config: Any,
                                          logging_pg: tuple[PostgresCluster, dict[str, int]], tmp_path: Path) -> None:
    """format: csvlog on a server whose logging collector writes only the stderr log: said so, not "collector off"."""
    cluster, _ = logging_pg
    r = cli(["--config", str(config(make_config, cluster, tmp_path, format="csvlog")), "run", "pg-logs", "--json"])
    out = r.json()[0]
    assert out["status"] == "error", out["summary"]
    assert "pg_current_logfile('csvlog') is empty: csvlog is not in log_destination" in out["summary"]


def pgbadger(log: Path, prefix: str, tmp_path: Path, fmt: str = "") -> dict[str, Any]:
    """pgBadger's JSON report (``-x json`` by the .json extension) of ``log`` (``fmt``: csv or jsonlog, else a
    stderr log with ``prefix``)."""
    exe = shutil.which("pgbadger")
    if exe is None:
        pytest.fail("pgbadger is not installed (scripts/ensure-system-deps.sh installs it)")
    out = tmp_path / f"{log.stem}{log.suffix}.badger.json"
    how = ["-f", fmt] if fmt else ["--prefix", prefix]
    res = subprocess.run([exe, "--pid-dir", str(tmp_path),  # not /tmp/pgbadger.pid: other runs may hold it
                          *how, "-x", "json", "-o", str(out), str(log)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def ours(log: Path, prefix: str) -> dict[str, Any]:
    acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
    acc.feed(log.read_bytes())
    return summarize(acc.partial(), top_n=1000)


ERROR_LEVELS = ("ERROR", "FATAL", "PANIC")


def badger_errors(badger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """pgBadger's error classes of level ERROR/FATAL/PANIC (its error_info also holds LOG events such as
    "still waiting" and "database system was shut down", all keyed "ERROR:  ...")."""
    return {k: v for k, v in badger["error_info"]["postgres"].items()
            if v["error"][0].split(":", 1)[0] in ERROR_LEVELS}


def as_badger_class(e: dict[str, Any]) -> str:
    """Our error class in pgBadger's spelling: its placeholder is "...", and it drops " at character N"."""
    msg = re.sub(r" at character \?$", "", e["message"]).replace("?", "...")
    return f"ERROR:  {msg}"


def assert_locks_and_deadlocks_agree(mine: dict[str, Any], badger: dict[str, Any], longest: bool = True) -> None:
    """``longest``: pgBadger lists each wait with its duration (its jsonlog reader, in 12.0, does not)."""
    # lock waits: pgBadger lists each "still waiting" line as an event, and sums the "acquired ... after"
    # lines per lock type and object in lock_info (its top_locked_info keeps each wait's duration)
    events = badger["error_info"]["postgres"]
    waiting: dict[str, int] = {}  # "ShareLock on transaction" -> waits, from pgBadger's event keys
    for k, v in events.items():
        m = re.fullmatch(r"ERROR:  process \.\.\. still waiting for (\w+) on (\w+) .*", k)
        if m and v["error"][0].startswith("LOG:  "):
            waiting[f"{m.group(1)} on {m.group(2)}"] = waiting.get(f"{m.group(1)} on {m.group(2)}", 0) + v["count"]
    locks = mine["locks"]
    assert sum(waiting.values()) >= 1  # the workload's lock wait is in the log
    assert locks["waits"] == sum(waiting.values())
    assert locks["types"] == waiting
    acquired = 0
    total_ms = 0.0
    for by_object in badger["lock_info"]["postgres"].values():
        total_ms += by_object["duration"]
        acquired += by_object["count"]
    assert locks["acquired_after_wait"] == acquired >= 1
    assert locks["total_wait_ms"] == pytest.approx(total_ms, abs=1e-3)
    if longest:
        most = max(float(row[0]) for row in badger["top_locked_info"]["postgres"])
        assert locks["max_wait_ms"] == pytest.approx(most, abs=1e-3)
    # deadlocks: pgBadger counts the "deadlock detected" errors
    assert mine["deadlocks"]["count"] == events["ERROR:  deadlock detected"]["count"] == 1


def test_agrees_with_pgbadger(logging_pg: tuple[PostgresCluster, dict[str, int]], tmp_path: Path) -> None:
    cluster, _ = logging_pg
    log = cluster.data / "log" / "postgresql.log"
    copy = tmp_path / "pg.log"
    shutil.copy(log, copy)
    badger = pgbadger(copy, pgworkload.LOG_LINE_PREFIX, tmp_path)
    mine = ours(copy, pgworkload.LOG_LINE_PREFIX)
    overall = badger["overall_stat"]
    assert mine["statements"]["count"] == overall["queries_number"]
    assert abs(mine["statements"]["total_ms"] - overall["postgres"]["queries_duration"]["execute"]) < 1.0
    # pgBadger keeps the trailing ';' and writes decimals as ?.?; otherwise the same grouping and counts
    theirs = {k.rstrip(";").replace("?.?", "?"): v["count"] for k, v in badger["normalyzed_info"]["postgres"].items()}
    assert {q["fingerprint"]: q["count"] for q in mine["most_frequent"]} == theirs
    temp = badger["tempfile_info"]["postgres"]
    assert (mine["temp_files"]["count"], mine["temp_files"]["total_bytes"]) == (temp["count"], temp["size"])
    assert mine["checkpoints"]["buffers"] == badger["checkpoint_info"]["wbuffer"]
    assert mine["checkpoints"]["reasons"] == badger["checkpoint_info"]["starting"]
    # errors by message class (this prefix has no %e: pgBadger's sqlstate is null, it groups by message)
    theirs_err = {k: v["count"] for k, v in badger_errors(badger).items()}
    assert len(theirs_err) >= len(pgworkload.ERRORS) + 1  # the workload's errors and the deadlock
    mine_err: dict[str, int] = {}
    for e in mine["errors"]["classes"]:
        assert e["level"] in ERROR_LEVELS
        mine_err[as_badger_class(e)] = mine_err.get(as_badger_class(e), 0) + e["count"]
    assert mine_err == theirs_err
    assert mine["errors"]["total"] == sum(theirs_err.values())
    assert_locks_and_deadlocks_agree(mine, badger)


def test_do_blocks_are_told_apart_as_pgbadger_does(services_dir: Path, tmp_path: Path) -> None:
    """A DO block's code was taken for a string literal: every anonymous block of a server — a migration's, a
    cron job's — was one fingerprint, "do ?", their runs and time summed.  pgBadger keeps each block's code (its
    literals made ?): so do we now, with the same fingerprints."""
    cluster = PostgresCluster(services_dir / "pg-do-blocks", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        with cluster.connect() as c:
            for s in (0.01, 0.02):
                c.execute(f"DO $$BEGIN PERFORM pg_sleep({s}); END$$")
            c.execute("DO $$\nBEGIN\n  PERFORM count(*) FROM pg_class WHERE relname = 'x';\nEND\n$$;")
            c.execute("DO $$\nBEGIN\n  PERFORM count(*) FROM pg_class WHERE relname = 'y';\nEND\n$$;")
            c.execute("/* migration 42 */ DO LANGUAGE plpgsql $m$ BEGIN CREATE TEMP TABLE upk_do (id int); END $m$")
    finally:
        cluster.stop()
    log = tmp_path / "pg.log"
    shutil.copy(cluster.log, log)
    mine = {q["fingerprint"]: q["count"] for q in ours(log, pgworkload.LOG_LINE_PREFIX)["most_frequent"]
            if q["fingerprint"].startswith("do ")}
    assert mine == {"do $$begin perform pg_sleep(?); end$$": 2,
                    "do $$ begin perform count(*) from pg_class where relname = ?; end $$": 2,
                    "do language plpgsql $$ begin create temp table upk_do (id int); end $$": 1}
    badger = pgbadger(log, pgworkload.LOG_LINE_PREFIX, tmp_path)
    theirs = {k.rstrip(";").replace("?.?", "?"): v["count"] for k, v in badger["normalyzed_info"]["postgres"].items()
              if k.startswith("do $$")}
    assert theirs == {k: v for k, v in mine.items() if k.startswith("do $$")}


def test_errors_by_sqlstate_agree_with_pgbadger(services_dir: Path, tmp_path: Path) -> None:
    """With %e in log_line_prefix pgBadger reports each error's SQLSTATE: ours must be the same counts."""
    prefix = "%m [%p] %e %q%u@%d "
    cluster = PostgresCluster(services_dir / "pg-sqlstate",
                              extra_conf=pgworkload.LOGGING_CONF + f"log_line_prefix = '{prefix}'\n")
    cluster.start()
    try:
        pgworkload.run(lambda: cluster.connect())
    finally:
        cluster.stop()
    copy = tmp_path / "pg-e.log"
    shutil.copy(cluster.log, copy)
    badger = pgbadger(copy, prefix, tmp_path)
    mine = ours(copy, prefix)
    theirs: dict[str, int] = {}
    for v in badger_errors(badger).values():
        (code,) = set(v["sqlstate"])  # one SQLSTATE per message class here
        theirs[code] = theirs.get(code, 0) + v["count"]
    assert set(theirs) >= {code for _sql, code in pgworkload.ERRORS} | {"40P01"}
    assert mine["errors"]["by_sqlstate"] == theirs
    assert mine["errors"]["inferred_sqlstates"] == 0  # every one read from the log, none guessed
    assert_locks_and_deadlocks_agree(mine, badger)


def stderr_and_csvlog_cluster(base: Path) -> PostgresCluster:
    """A started cluster logging every statement (pgworkload's settings) to log/postgresql.log and, the same
    entries, to log/postgresql.csv: what a SQLSTATE told from the stderr log's message is checked against."""
    cluster = PostgresCluster(base, extra_conf=pgworkload.LOGGING_CONF + (
        "log_destination = 'stderr,csvlog'\nlogging_collector = on\nlog_directory = 'log'\n"
        "log_filename = 'postgresql.log'\nlog_rotation_size = 0\n"))
    cluster.start()
    return cluster


#: statements that fail (or warn) with SQLSTATEs a log without %e must tell from the message
INFERRED_ERRORS = (
    "COMMIT", "BEGIN", "BEGIN", "ROLLBACK",  # warnings: 25P01, then 25001
    "SELECT (SELECT g FROM generate_series(1, 2) g)", "EXECUTE upk_nope", "PREPARE upk_p AS SELECT 1",
    "PREPARE upk_p AS SELECT 1", "SELECT 12345.678::numeric(5,2)", "SELECT 'z'::upk_mood",
    "INSERT INTO upk_oc VALUES (1) ON CONFLICT (id) DO NOTHING", "SELECT E'\\xff'", "FETCH 1 FROM upk_nocursor",
    "CREATE TABLE upk_dup (a int, a int)", "SELECT 1 LIMIT -1", "SELECT $1", "SELECT 1::int::bool::date",
    "SELECT 'x'::timestamp", "SELECT '2024-02-30'::date", "SELECT to_timestamp(1e20)", "DROP TABLE upk_oc",
    "CREATE SCHEMA public", "DO $$DECLARE x int; BEGIN SELECT g INTO STRICT x FROM generate_series(1, 2) g; END$$",
    "DO $$DECLARE x int; BEGIN SELECT 1 INTO STRICT x WHERE false; END$$",
    "SET default_transaction_read_only = on", "CREATE TABLE upk_ro ()", "SET default_transaction_read_only = off",
)


def test_sqlstates_told_by_the_message_are_the_servers(services_dir: Path, tmp_path: Path) -> None:
    """Without %e (and log_error_verbosity = default) an error's SQLSTATE is told by its message.  A real server's
    common ones — a failed parallel query's workers ('terminating background worker "parallel worker" due to
    administrator command', 57P01), 'prepared statement "S_1" already exists' (42P05: pgbouncer's transaction
    pooling), 'cannot execute … in a read-only transaction' (25006: a standby), a date out of range (22008, was
    counted 22003), … — were '-----', and every warning 01000 ('there is no transaction in progress' is 25P01).
    The stderr log's SQLSTATEs must be those the same server wrote in its csvlog."""
    cluster = stderr_and_csvlog_cluster(services_dir / "pg-inferred")
    try:
        with cluster.connect() as c:
            c.execute("CREATE TYPE upk_mood AS ENUM ('a')")
            c.execute("CREATE TABLE upk_oc (id int)")
            c.execute("CREATE VIEW upk_ocv AS SELECT * FROM upk_oc")
            c.execute("CREATE TABLE upk_big AS SELECT g FROM generate_series(1, 300000) g")
            c.execute("ANALYZE upk_big")
            for sql in INFERRED_ERRORS:
                try:
                    c.execute(sql.encode())
                except psycopg.Error:
                    pass
            c.execute("SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; "
                      "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0")
            with pytest.raises(psycopg.errors.DivisionByZero):  # a parallel query fails: its workers are ended
                c.execute("SELECT sum(1 / (g % 100000)) FROM upk_big")
    finally:
        cluster.stop()
    stderr = ours(cluster.data / "log" / "postgresql.log", pgworkload.LOG_LINE_PREFIX)
    acc = pgstruct.make_accumulator(pgstruct.PgStructOptions(format="csvlog"))
    acc.feed((cluster.data / "log" / "postgresql.csv").read_bytes())
    truth = summarize(acc.partial(), top_n=1000)["errors"]
    mine = stderr["errors"]
    assert truth["inferred_sqlstates"] == 0 and len(truth["by_sqlstate"]) >= 20, truth["by_sqlstate"]
    assert mine["by_sqlstate"] == truth["by_sqlstate"], (
        sorted({(e["sqlstate"], e["message"]) for e in mine["classes"]}
               ^ {(e["sqlstate"], e["message"]) for e in truth["classes"]}))
    assert mine["inferred_sqlstates"] == truth["total"]  # every one told by its message


LOG_DURATION_CONF = f"""
log_duration = on
log_statement = 'all'
session_preload_libraries = 'auto_explain'
auto_explain.log_min_duration = 0
lc_messages = 'C'
log_line_prefix = '{pgworkload.LOG_LINE_PREFIX}'
"""


def test_log_duration_pairs_with_extended_protocol_executes(services_dir: Path, tmp_path: Path) -> None:
    """log_duration + log_statement = 'all' (no log_min_duration_statement): a statement sent with the extended
    protocol (pgbench -M extended/prepared, psycopg with and without prepared statements, in a pipeline) is
    logged as "execute <name>: …" and its duration on a bare "duration:" line after it; its Parse and Bind
    each log a bare duration before it.  Every statement that ran is counted once, with its own duration.
    auto_explain logs each plan (text, then JSON) as "duration: X ms  plan:" between a statement and its bare
    duration: not a statement, and the statement still gets its duration (pgBadger 12 counts each plan as a
    query of its own: it is not the reference here)."""
    cluster = PostgresCluster(services_dir / "pg-log-duration", extra_conf=LOG_DURATION_CONF)
    cluster.start()
    try:
        env = {**os.environ, **cluster.env()}
        pgbench = str(cluster.bin / "pgbench")
        subprocess.run([pgbench, "-i", "-s", "1", "-q", "postgres"], env=env, check=True, capture_output=True)
        start = cluster.log.stat().st_size  # the log from here on: the runs below
        for mode in ("extended", "prepared"):  # the built-in TPC-B-like script: 7 statements a transaction
            subprocess.run([pgbench, "-n", "-M", mode, "-t", "20", "postgres"], env=env, check=True,
                           capture_output=True)
        with cluster.connect() as c:
            c.execute("SET auto_explain.log_format = 'json'")
            c.execute("CREATE TABLE upk_ext (id int PRIMARY KEY, v text)")  # no parameters: simple protocol
            for i in range(10):
                c.execute("INSERT INTO upk_ext VALUES (%s, %s)", (i, f"v{i}"), prepare=True)  # named: Bind only
            for i in range(10):
                c.execute("SELECT v FROM upk_ext WHERE id = %s", (i,), prepare=False)  # unnamed: Parse + Bind
            with pytest.raises(Exception, match="duplicate key"):  # logged, failed: no duration
                c.execute("INSERT INTO upk_ext VALUES (%s, %s)", (1, "dup"), prepare=False)
            c.execute("SELECT pg_sleep(%s)", (0.2,), prepare=False)  # right after the error
            with c.pipeline():
                for i in range(10):
                    c.execute("UPDATE upk_ext SET v = %s WHERE id = %s", ("x", i), prepare=False)
    finally:
        cluster.stop()
    log = tmp_path / "pg.log"
    log.write_bytes(cluster.log.read_bytes()[start:])
    text = log.read_text()
    assert "LOG:  execute <unnamed>: UPDATE pgbench_accounts" in text and "LOG:  execute P_1: UPDATE" in text
    assert "plan:\n\tQuery Text: UPDATE pgbench_accounts" in text and 'plan:\n\t{\n\t  "Query Text": "SELECT v' in text
    mine = ours(log, pgworkload.LOG_LINE_PREFIX)
    fps = {q["fingerprint"]: q for q in mine["most_frequent"]}
    counts = {fp: q["count"] for fp, q in fps.items()}
    for fp in ("begin", "end", "select abalance from pgbench_accounts where aid = ?",
               "update pgbench_accounts set abalance = abalance + ? where aid = ?",
               "update pgbench_tellers set tbalance = tbalance + ? where tid = ?",
               "update pgbench_branches set bbalance = bbalance + ? where bid = ?",
               "insert into pgbench_history (tid, bid, aid, delta, mtime) values (?, ?, ?, ?, current_timestamp)"):
        assert counts.pop(fp) == 2 * 20, fp
    assert counts.pop("insert into upk_ext values (...)") == 10  # not the one that failed
    assert counts.pop("select v from upk_ext where id = ?") == 10
    assert counts.pop("update upk_ext set v = ? where id = ?") == 10
    assert counts.pop("select pg_sleep(?)") == 1
    assert counts.pop("create table upk_ext (id int primary key, v text)") == 1
    # what is left are pgbench's own start-up queries (simple protocol: "statement:" lines)
    assert sum(counts.values()) == text.count("LOG:  statement: ") - 1
    st_ = mine["statements"]
    ran = text.count("LOG:  statement: ") + text.count("LOG:  execute ") - 1  # every statement logged, one failed
    assert st_["count"] == ran == 7 * 2 * 20 + 10 + 10 + 10 + 1 + 1 + sum(counts.values())
    # each duration is its own statement's: pg_sleep's 200 ms are not its Parse's, nor the failed INSERT's
    assert fps["select pg_sleep(?)"]["max_ms"] >= 200
    assert fps["insert into upk_ext values (...)"]["max_ms"] < 200
    # every other bare duration is a Parse or a Bind, logged before its "execute" line
    bare = [float(m) for m in re.findall(r"LOG:  duration: ([\d.]+) ms$", text, re.M)]
    assert len(bare) == st_["count"] + st_["prepare_bind"]["count"]
    assert st_["prepare_bind"]["count"] >= 7 * 20 * 2 + 10 * 2  # pgbench -M extended and unnamed psycopg: 2 each
    assert st_["total_ms"] + st_["prepare_bind"]["total_ms"] == pytest.approx(sum(bare), abs=0.01)
    assert st_["prepare_bind"]["total_ms"] < 200
    assert st_["unpaired"]["count"] == 0  # every statement logged: no duration left without its statement


def test_azure_prefix_with_the_session_id_and_no_pid(cli: Any, make_config: Any, services_dir: Path,
                                                     tmp_path: Path) -> None:
    """Azure Database for PostgreSQL's default log_line_prefix is '%t-%c-': no %p, the session id %c
    ("6b162e3c.47a6": start time and pid in hex) instead.  The run failed: "log_line_prefix '%t-%c-' has no %p".
    %c tells backends apart as well: with log_statement = 'all' + log_duration and three pgbench clients at once
    (their statement and duration lines interleaved), every statement is paired with its own duration."""
    prefix = "%t-%c-"
    cluster = PostgresCluster(services_dir / "pg-azure-prefix",
                              extra_conf=f"log_statement = 'all'\nlog_duration = on\nlc_messages = 'C'\n"
                                         f"log_line_prefix = '{prefix}'\n")
    cluster.start()
    try:
        env = {**os.environ, **cluster.env()}
        pgbench = str(cluster.bin / "pgbench")
        subprocess.run([pgbench, "-i", "-s", "1", "-q", "postgres"], env=env, check=True, capture_output=True)
        start = cluster.log.stat().st_size
        for mode in ("simple", "extended", "prepared"):
            subprocess.run([pgbench, "-n", "-M", mode, "-c", "3", "-t", "10", "postgres"], env=env, check=True,
                           capture_output=True)
    finally:
        cluster.stop()
    log = tmp_path / "pg.log"
    log.write_bytes(cluster.log.read_bytes()[start:])
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC-[0-9a-f]+\.[0-9a-f]+-LOG:  execute P_1: ", log.read_text(), re.M)
    r = run(cli, config(make_config, cluster, tmp_path, log_file=str(log), log_line_prefix=prefix,
                        incremental=False))
    assert r["status"] != "error", r["summary"]
    rep = report_of(r)
    assert rep["unparsed"] == 0 and rep["statements"]["unpaired"]["count"] == 0, rep["statements"]["unpaired"]
    counts = {q["fingerprint"]: q["count"] for q in rep["most_frequent"]}
    for fp in ("begin", "end", "select abalance from pgbench_accounts where aid = ?",
               "update pgbench_accounts set abalance = abalance + ? where aid = ?",
               "update pgbench_tellers set tbalance = tbalance + ? where tid = ?",
               "update pgbench_branches set bbalance = bbalance + ? where bid = ?",
               "insert into pgbench_history (tid, bid, aid, delta, mtime) values (?, ?, ?, ?, current_timestamp)"):
        assert counts[fp] == 3 * 3 * 10, fp  # three modes, three clients, ten transactions each


def test_lines_a_wrong_log_line_prefix_could_not_parse_are_read_again_once_it_is_fixed(
        cli: Any, make_config: Any, logging_pg: tuple[PostgresCluster, dict[str, int]], tmp_path: Path) -> None:
    """A wrong log_line_prefix option parses none of the lines; its run used to move the cursor past them all the
    same, so once the prefix was fixed those statements were never analysed."""
    cluster, _done = logging_pg
    text = (cluster.data / "log" / "postgresql.log").read_bytes()  # what the real server wrote, cut in two
    cut = text.index(b"\n20", len(text) // 2) + 1
    log = tmp_path / "postgresql.log"
    log.write_bytes(text[:cut])

    def cfg(prefix: str, name: str, **options: Any) -> Path:
        path: Path = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                                  "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                                      "log_file": str(log), "log_line_prefix": prefix, "rotated": False,
                                      "report_dir": str(tmp_path / "r"), **options}}}}, name)
        return path

    wrong = cfg("%t %p %u ", "wrong.yaml")
    first = run(cli, wrong)
    assert first["metrics"]["unparsed_pct"] == 100
    unparsed = next(f for f in first["findings"] if f["check"] == "logs.postgres.unparsed")
    assert "the next run with another log_line_prefix reads these lines again" in unparsed["message"]
    with open(log, "ab") as fh:
        fh.write(text[cut:])
    fixed = run(cli, cfg(pgworkload.LOG_LINE_PREFIX, "fixed.yaml"))
    whole = run(cli, cfg(pgworkload.LOG_LINE_PREFIX, "whole.yaml", incremental=False))
    assert whole["metrics"]["statements"] > 0 and whole["metrics"]["unparsed_pct"] == 0
    for name in ("statements", "errors", "deadlocks", "lock_waits", "temp_files"):
        assert fixed["metrics"][name] == whole["metrics"][name], name
    assert any(f["check"] == "logs.postgres.reread" for f in fixed["findings"])
    assert run(cli, cfg(pgworkload.LOG_LINE_PREFIX, "fixed.yaml"))["metrics"]["statements"] == 0


def test_a_default_prefix_used_because_the_server_was_unreachable_is_said(
        cli: Any, make_config: Any, logging_pg: tuple[PostgresCluster, dict[str, int]], tmp_path: Path) -> None:
    """log_file set, log_line_prefix not, and the server down: the log was read with upkeeper's default prefix and
    the warning blamed 'the log_line_prefix' as if it were the job's or the server's; a second finding said the
    log 'has no statement durations' — it has hundreds, hardly any of its lines was parsed."""
    cluster, _done = logging_pg
    log = tmp_path / "postgresql.log"
    log.write_bytes((cluster.data / "log" / "postgresql.log").read_bytes())  # '%m [%p] %q%u@%d ' lines
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # nobody there
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(log), "report_dir": str(tmp_path / "r")}}}})
    r = run(cli, cfg)
    by = {f["check"]: f for f in r["findings"]}
    # (the background processes' lines, without user@db, do parse; the continuation lines of the multi-line
    # statements the other tests' runs sent to this server, asking for its settings, count in the lines too)
    assert r["metrics"]["unparsed_pct"] > 80
    msg = by["logs.postgres.unparsed"]["message"]
    assert "log_line_prefix '%m [%p] ' (upkeeper's default: the server could not be asked for its own: " in msg, msg
    assert "port 1" in msg
    assert "logs.postgres.no_durations" not in by
    # the job's own prefix, wrong: no word of a default
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(log), "log_line_prefix": "%t [%p] ", "incremental": False,
                           "report_dir": str(tmp_path / "r")}}}}, "own.yaml")
    own = {f["check"]: f for f in run(cli, cfg)["findings"]}
    assert "default" not in own["logs.postgres.unparsed"]["message"]


def test_a_log_written_through_syslog_is_said_to_be(cli: Any, make_config: Any,
                                                    logging_pg: tuple[PostgresCluster, dict[str, int]],
                                                    tmp_path: Path) -> None:
    """log_destination = syslog: the daemon writes each message after its own time, host and "postgres[PID]:"
    (with syslog_sequence_numbers, "[N-1]" and then the log_line_prefix). Every line was unparsed and the warning
    blamed log_line_prefix, whose fix (set it to the server's) cannot help. Now format auto reads it (see
    test_logs_postgres_syslog.py), and format stderr forced on it says it is syslog's form and to set format: syslog.
    (The server's own log, each line written as rsyslog writes a message.)"""
    cluster, _done = logging_pg
    lines = (cluster.data / "log" / "postgresql.log").read_text().splitlines()
    log = tmp_path / "postgresql"
    with open(log, "w") as fh:
        for i, line in enumerate(lines[:400], 1):
            fh.write(f"Dec  7 04:{i // 60 % 60:02d}:{i % 60:02d} db1 postgres[{4000 + i % 7}]: [{i}-1] {line}\n")
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(log), "log_line_prefix": pgworkload.LOG_LINE_PREFIX,
                           "format": "stderr", "report_dir": str(tmp_path / "r")}}}})
    by = {f["check"]: f for f in run(cli, cfg)["findings"]}
    assert "logs.postgres.syslog" in by and "logs.postgres.unparsed" not in by, list(by)
    assert "set format: syslog" in by["logs.postgres.syslog"]["remediation"]
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(log), "log_line_prefix": pgworkload.LOG_LINE_PREFIX,
                           "report_dir": str(tmp_path / "r")}}}}, "auto.yaml")
    r = run(cli, cfg)
    assert "logs.postgres.syslog" not in {f["check"] for f in r["findings"]} and r["metrics"]["statements"] > 300
    # the same lines as the server writes them: no word of syslog
    (tmp_path / "plain.log").write_text("".join(x + "\n" for x in lines[:400]))
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(tmp_path / "plain.log"), "log_line_prefix": "%t [%p] ",
                           "report_dir": str(tmp_path / "r")}}}}, "plain.yaml")
    by = {f["check"]: f for f in run(cli, cfg)["findings"]}
    assert "logs.postgres.unparsed" in by and "logs.postgres.syslog" not in by, list(by)


def test_padded_log_line_prefix_read_from_the_server(cli: Any, make_config: Any, services_dir: Path,
                                                     tmp_path: Path) -> None:
    """PostgreSQL documents padded escapes (%-10u: left-aligned in 10 characters, %5p: right-aligned); the
    job reads such a prefix from the server (SHOW log_line_prefix) and parses every line it wrote."""
    prefix = "%m [%-7p] %10u@%-10d %e "
    cluster = PostgresCluster(services_dir / "pg-padded",
                              extra_conf=pgworkload.LOGGING_CONF + f"log_line_prefix = '{prefix}'\n")
    cluster.start()
    try:
        done = pgworkload.run(lambda: cluster.connect())
        assert re.search(r"^\S+ \S+ UTC \[\d+ *\]   postgres@postgres   [0-9A-Z]{5} LOG:  ",
                         cluster.log.read_text(), re.M)  # the padding is really there
        r = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log)))
    finally:
        cluster.stop()
    assert r["status"] != "error", r["summary"]
    m = r["metrics"]
    assert m["unparsed_pct"] == 0 and m["statements"] >= done["statements"] and m["deadlocks"] == 1
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    assert data["log_line_prefix"] == prefix
    assert set(data["by_user"]) == {"postgres"} and set(data["by_database"]) == {"postgres"}  # no padding kept
    assert set(data["errors"]["by_sqlstate"]) >= {code for _sql, code in pgworkload.ERRORS}
    assert data["errors"]["inferred_sqlstates"] == 0  # every SQLSTATE read from %e, none guessed
    fps = {q["fingerprint"]: q for q in data["most_frequent"]}
    assert fps["update upk_items set qty = qty + ? where id = ?"]["count"] == done["statements"] // 3

def test_a_log_in_another_language_says_so(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """lc_messages = 'fr_FR.UTF-8' (lines as PostgreSQL 15 wrote them in this audit's run): nothing is understood
    (neither by pgBadger), so the finding names lc_messages instead of blaming log_line_prefix, and the report does
    not pass for a quiet server."""
    log = tmp_path / "postgresql.log"
    log.write_text(
        "2026-12-05 06:24:41.071 UTC [10741] postgres@postgres LOG:  durée : 0.040 ms, instruction : SELECT 1\n"
        "2026-12-05 06:24:41.072 UTC [10741] postgres@postgres LOG:  durée : 0.065 ms  exécute <unnamed>: "
        "UPDATE t SET v = $1 WHERE id = $2\n"
        "2026-12-05 06:24:41.072 UTC [10741] postgres@postgres DÉTAIL:  paramètres : $1 = 'x', $2 = '0'\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres ERREUR:  division par zéro\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres INSTRUCTION :  SELECT 1/0\n")
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # never contacted
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
            "log_file": str(log), "log_line_prefix": "%m [%p] %q%u@%d ", "report_dir": str(tmp_path / "r")}}},
    })
    out = run(cli, cfg)
    checks = {f["check"]: f for f in out["findings"]}
    assert "logs.postgres.unparsed" not in checks
    f = checks["logs.postgres.lc_messages"]
    assert f["severity"] == "warning" and "2 durations" in f["message"] and "lc_messages = 'C'" in f["remediation"]


@pytest.mark.parametrize("lang", ["ja_JP", "ru_RU"])
def test_a_real_server_logging_in_japanese_or_russian_says_so(cli: Any, make_config: Any, services_dir: Path,
                                                              tmp_path: Path, lang: str) -> None:
    """A real PostgreSQL 15 with lc_messages in Japanese or Russian, every statement logged.  Japanese keeps LOG in
    English but writes durations in ミリ秒 ("期間: 0.307 ミリ秒  文: SELECT 0"): the run said "no statement
    durations: set log_min_duration_statement" — already set — and reported an idle server.  Russian translates the
    severities too ("СООБЩЕНИЕ:  продолжительность: 0.036 мс, оператор: …"): every line unparsed, and the finding
    blamed log_line_prefix, which is right; its csvlog's records were read as nothing at all.  Now each says that
    the server logs in another language and to set lc_messages."""
    locales = services_dir / "locales-logs"
    locales.mkdir(exist_ok=True)
    res = subprocess.run(["localedef", "-i", lang, "-f", "UTF-8", str(locales / f"{lang}.UTF-8")],
                         capture_output=True, text=True)
    assert (locales / f"{lang}.UTF-8" / "LC_MESSAGES").exists(), res.stderr
    cluster = PostgresCluster(services_dir / f"pg-lang-{lang}",
                              extra_conf=THREE_CONF + f"lc_messages = '{lang}.UTF-8'\n",
                              extra_env={"LOCPATH": str(locales)})
    cluster.start()
    try:
        with cluster.connect() as c:
            for i in range(20):
                c.execute(f"SELECT {i}")
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("SELECT 1/0")
            c.execute("CHECKPOINT")
    finally:
        cluster.stop()
    text = (cluster.data / "log" / "postgresql.log").read_text()
    assert ("ミリ秒" if lang == "ja_JP" else "СООБЩЕНИЕ:  продолжительность") in text  # the server did translate
    for name in ("postgresql.log", "postgresql.csv"):
        out = run(cli, config(make_config, cluster, tmp_path / name, log_file=str(cluster.data / "log" / name),
                              log_line_prefix=THREE_PREFIX, incremental=False))
        checks = {f["check"]: f for f in out["findings"]}
        assert "logs.postgres.lc_messages" in checks, (name, out["summary"], list(checks))
        f = checks["logs.postgres.lc_messages"]
        assert f["severity"] == "warning" and "lc_messages = 'C'" in f["remediation"], f
        assert not {"logs.postgres.unparsed", "logs.postgres.no_durations"} & set(checks), (name, list(checks))


def test_a_german_server_logging_errors_only_is_said_to_log_in_german(cli: Any, make_config: Any,
                                                                     services_dir: Path, tmp_path: Path) -> None:
    """lc_messages = 'de_DE.UTF-8' keeps LOG in English; a server that logs no durations leaves its errors
    ("FEHLER:  Division durch Null") as the only unparsed lines, too few in the log for the scan to look at them:
    the warning blamed log_line_prefix (right), not the language.  The earliest unparsed lines, sampled, tell."""
    locales = services_dir / "locales-logs"
    locales.mkdir(exist_ok=True)
    res = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(locales / "de_DE.UTF-8")],
                         capture_output=True, text=True)
    assert (locales / "de_DE.UTF-8" / "LC_MESSAGES").exists(), res.stderr
    cluster = PostgresCluster(services_dir / "pg-lang-de-errors", extra_conf=(
        "log_checkpoints = on\nlc_messages = 'de_DE.UTF-8'\n"
        f"log_line_prefix = '{pgworkload.LOG_LINE_PREFIX}'\n"), extra_env={"LOCPATH": str(locales)})
    cluster.start()
    try:
        with cluster.connect() as c:
            for _ in range(5):
                with pytest.raises(psycopg.errors.DivisionByZero):
                    c.execute("SELECT 1/0")
            c.execute("CHECKPOINT")
    finally:
        cluster.stop()
    assert "FEHLER:  Division durch Null" in cluster.log.read_text()  # the server did write German
    out = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log), incremental=False,
                          log_line_prefix=pgworkload.LOG_LINE_PREFIX))
    checks = {f["check"]: f for f in out["findings"]}
    assert "logs.postgres.lc_messages" in checks and "logs.postgres.unparsed" not in checks, list(checks)
    assert "logs.postgres.no_durations" in checks  # (right: this server logs none, in any language)


def test_truncated_rotated_server_log_is_read_up_to_the_damage(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A truncated postgresql.log.1.gz failed every run ('cannot read …: None', the cursor never saved);
    now its entries before the damage count, the file is named in a warning, and it is not read twice."""
    import gzip

    log = tmp_path / "postgresql.log"
    text = "".join(f"2024-03-01 10:{i // 60 % 60:02d}:{i % 60:02d}.000 UTC [{100 + i % 5}] LOG:  duration: "
                   f"{i % 90 + 1}.000 ms  statement: SELECT * FROM t{i % 3} WHERE id = {i}\n"
                   for i in range(3000)).encode()
    blob = gzip.compress(text)
    (tmp_path / "postgresql.log.1.gz").write_bytes(blob[:len(blob) // 2])
    log.write_text("2024-03-01 11:00:00.000 UTC [7] LOG:  duration: 5.000 ms  statement: SELECT 1\n")
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # never contacted
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
            "log_file": str(log), "log_line_prefix": "%m [%p] ", "report_dir": str(tmp_path / "reports")}}},
    })
    first = run(cli, cfg)
    damaged = [f for f in first["findings"] if f["check"] == "logs.postgres.damaged_file"]
    assert [(f["subject"], f["severity"]) for f in damaged] == [(str(tmp_path / "postgresql.log.1.gz"), "warning")]
    assert 1000 < first["metrics"]["statements"] < 3001
    assert first["metrics"]["unparsed_pct"] == 0  # the entry the damage cuts is not a bad line
    second = run(cli, cfg)
    assert second["metrics"]["statements"] == 0
    assert not [f for f in second["findings"] if f["check"] == "logs.postgres.damaged_file"]


def test_verbose_error_verbosity_agrees_with_pgbadger(services_dir: Path, tmp_path: Path) -> None:
    """log_error_verbosity = verbose writes the SQLSTATE before every message, LOG ones too ("LOG:  00000:
    checkpoint starting: …", "LOG:  00000: process N still waiting for …"): lock waits, temporary files,
    checkpoints and connections were all counted 0 on such a server.  Now they agree with pgBadger."""
    cluster = PostgresCluster(services_dir / "pg-verbose",
                              extra_conf=pgworkload.LOGGING_CONF + "log_error_verbosity = verbose\n")
    cluster.start()
    try:
        pgworkload.run(lambda: cluster.connect())
        with cluster.connect() as c:
            c.execute("COMMIT")  # WARNING:  25P01: there is no transaction in progress
    finally:
        cluster.stop()
    copy = tmp_path / "pg-verbose.log"
    shutil.copy(cluster.log, copy)
    assert "LOG:  00000: checkpoint complete: " in copy.read_text()
    badger = pgbadger(copy, pgworkload.LOG_LINE_PREFIX, tmp_path)
    mine = ours(copy, pgworkload.LOG_LINE_PREFIX)
    assert mine["unparsed"] == 0
    temp = badger["tempfile_info"]["postgres"]
    assert (mine["temp_files"]["count"], mine["temp_files"]["total_bytes"]) == (temp["count"], temp["size"]) != (0, 0)
    assert mine["temp_files"]["queries"][0]["fingerprint"].startswith("select g from generate_series")
    cp = badger["checkpoint_info"]
    assert mine["checkpoints"]["buffers"] == cp["wbuffer"] and mine["checkpoints"]["reasons"] == cp["starting"]
    assert mine["checkpoints"]["count"] >= 1
    assert_locks_and_deadlocks_agree(mine, badger)
    assert mine["connections"] >= 4
    assert mine["errors"]["by_sqlstate"]["25P01"] == 1  # the warning's own SQLSTATE, as logged
    assert mine["errors"]["inferred_sqlstates"] == 0
    assert not any(e["message"].startswith("?:") for e in mine["errors"]["classes"])


def test_a_lock_wait_logged_again_counts_once(services_dir: Path, tmp_path: Path) -> None:
    """PostgreSQL logs "still waiting for …" again each time a waiting backend wakes up before it gets the lock
    (any signal wakes it; here pg_log_backend_memory_contexts): one wait was counted as four."""
    cluster = PostgresCluster(services_dir / "pg-rewait", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        with cluster.connect() as a, cluster.connect() as b, cluster.connect() as x:
            a.execute("CREATE TABLE upk_w (id int PRIMARY KEY, v text)")
            a.execute("INSERT INTO upk_w VALUES (1, 'a')")
            a.execute("BEGIN")
            a.execute("UPDATE upk_w SET v = 'held' WHERE id = 1")
            (pid,) = b.execute("SELECT pg_backend_pid()").fetchone()
            t = threading.Thread(target=lambda: b.execute("UPDATE upk_w SET v = 'waiter' WHERE id = 1"))
            t.start()
            time.sleep(0.5)  # past deadlock_timeout (200 ms): "still waiting" is logged
            for _ in range(3):
                x.execute("SELECT pg_log_backend_memory_contexts(%s)", (pid,))
                time.sleep(0.2)
            a.execute("COMMIT")
            t.join(10)
    finally:
        cluster.stop()
    text = cluster.log.read_text()
    assert text.count(f"process {pid} still waiting for ShareLock on transaction") >= 2  # the same wait, again
    rep = ours(cluster.log, pgworkload.LOG_LINE_PREFIX)
    locks = rep["locks"]
    assert (locks["waits"], locks["acquired_after_wait"]) == (1, 1)
    assert locks["types"] == {"ShareLock on transaction": 1}
    assert locks["queries"] == [{"fingerprint": "update upk_w set v = ? where id = ?", "count": 1}]
    assert locks["max_wait_ms"] > 700


def test_lock_timeouts_and_nowait_are_lock_failures(cli: Any, make_config: Any, services_dir: Path,
                                                     tmp_path: Path) -> None:
    """A statement cancelled by lock_timeout, or refused a lock by NOWAIT (SQLSTATE 55P03), counted only as
    an error: the locks section, the findings and the metrics did not see it."""
    import psycopg

    cluster = PostgresCluster(services_dir / "pg-locktimeout", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        with cluster.connect() as a, cluster.connect() as b:
            a.execute("CREATE TABLE upk_lt (id int PRIMARY KEY, v text)")
            a.execute("INSERT INTO upk_lt VALUES (1, 'a'), (2, 'b')")
            a.execute("BEGIN")
            a.execute("UPDATE upk_lt SET v = 'held' WHERE id = 1")
            b.execute("SET lock_timeout = '100ms'")
            for sql in ("UPDATE upk_lt SET v = 'x' WHERE id = 1",  # canceling statement due to lock timeout
                        "UPDATE upk_lt SET v = 'y' WHERE id = 1",
                        "SELECT * FROM upk_lt WHERE id = 1 FOR UPDATE NOWAIT"):  # could not obtain lock on row
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    b.execute(sql)
            a.execute("COMMIT")
        r = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log)))
        # an application that uses NOWAIT and lock_timeout on purpose sets how many failures are usual
        within = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log), incremental=False,
                                 lock_failures_warn=3))
        over = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log), incremental=False,
                               lock_failures_warn=2))
    finally:
        cluster.stop()
    assert within["metrics"]["lock_failures"] == 3
    assert [f for f in within["findings"] if f["check"] == "logs.postgres.lock_failures"] == []
    (f,) = [f for f in over["findings"] if f["check"] == "logs.postgres.lock_failures"]
    assert (f["value"], f["threshold"]) == (3, 2)
    text = cluster.log.read_text()
    assert text.count("ERROR:  canceling statement due to lock timeout") == 2
    assert 'ERROR:  could not obtain lock on row in relation "upk_lt"' in text
    rep = ours(cluster.log, pgworkload.LOG_LINE_PREFIX)
    assert rep["locks"]["failures"] == 3 and rep["errors"]["by_sqlstate"]["55P03"] == 3
    assert rep["locks"]["failed_queries"] == [
        {"fingerprint": "update upk_lt set v = ? where id = ?", "count": 2},
        {"fingerprint": "select * from upk_lt where id = ? for update nowait", "count": 1}]
    assert r["metrics"]["lock_failures"] == 3
    (f,) = [f for f in r["findings"] if f["check"] == "logs.postgres.lock_failures"]
    assert f["severity"] == "warning" and f["value"] == 3
    assert "update upk_lt set v = ? where id = ? (2)" in f["message"]
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "queries that failed for a lock" in page


def test_restartpoints_on_a_standby_are_checkpoints(services_dir: Path, tmp_path: Path) -> None:
    """A standby logs its checkpoints as "restartpoint starting: …" / "restartpoint complete: …" (with
    log_checkpoints, which it takes from the primary's configuration): none of them was counted. pgBadger
    counts them with the checkpoints ("point complete: wrote …"); so do we, and say how many were
    restartpoints."""
    primary = PostgresCluster(services_dir / "pg-rp-primary", extra_conf=pgworkload.LOGGING_CONF)
    primary.start()
    try:
        standby = primary.create_replica(services_dir / "pg-rp-standby")
        try:
            primary.execute("CREATE TABLE upk_rp AS SELECT g AS id FROM generate_series(1, 10000) g")
            primary.execute("CHECKPOINT")  # a checkpoint record for the standby to restart from
            (lsn,) = primary.execute("SELECT pg_current_wal_lsn()::text")[0]
            deadline = time.monotonic() + 30
            while not standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", params=(lsn,))[0][0]:
                assert time.monotonic() < deadline, "the standby did not replay the checkpoint"
                time.sleep(0.1)
            standby.execute("CHECKPOINT")  # on a standby: a restartpoint
        finally:
            standby.stop()
    finally:
        primary.stop()
    log = tmp_path / "standby.log"
    shutil.copy(standby.log, log)
    text = log.read_text()
    assert "LOG:  restartpoint starting: immediate wait" in text and "LOG:  restartpoint complete: wrote" in text
    mine = ours(log, pgworkload.LOG_LINE_PREFIX)
    cp = mine["checkpoints"]
    assert cp["restartpoints"] == text.count("LOG:  restartpoint complete: wrote") >= 1
    assert cp["count"] == cp["restartpoints"] + text.count("LOG:  checkpoint complete: wrote")
    assert cp["reasons"].get("immediate wait", 0) >= 1 and cp["total_s"] > 0
    badger = pgbadger(log, pgworkload.LOG_LINE_PREFIX, tmp_path)
    assert cp["buffers"] == badger["checkpoint_info"]["wbuffer"]
    assert cp["reasons"] == badger["checkpoint_info"]["starting"]


def test_a_glob_that_matches_a_dangling_symlink_reads_the_other_files(cli: Any, make_config: Any,
                                                                      tmp_path: Path) -> None:
    """log_file: a glob whose matches were sorted by a stat() that raised for a match gone since (removed by
    the rotation, or a dangling symlink): the run failed with a bare FileNotFoundError."""
    logs = tmp_path / "pglog"
    logs.mkdir()
    (logs / "postgresql-Mon.log").write_text(
        "2024-03-01 10:00:00.002 UTC [11] ERROR:  relation \"x\" does not exist at character 15\n")
    (logs / "postgresql-current.log").symlink_to(logs / "postgresql-Tue.log")  # not written yet
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # not asked: both options set
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
            "report_dir": str(tmp_path / "reports"), "log_file": str(logs / "postgresql-*.log"),
            "log_line_prefix": "%m [%p] "}}},
    })
    r = run(cli, cfg)
    assert r["status"] in ("ok", "warn") and r["metrics"]["errors"] == 1, r["summary"]


# ---------------------------------------------------------------------------------------------
# csvlog and jsonlog: the same workload logged in the three formats at once
# ---------------------------------------------------------------------------------------------

THREE_PREFIX = "%m [%p] %e %q%u@%d "
THREE_CONF = pgworkload.LOGGING_CONF + (
    f"log_line_prefix = '{THREE_PREFIX}'\nlog_destination = 'stderr,csvlog,jsonlog'\nlogging_collector = on\n"
    "log_directory = 'log'\nlog_filename = 'postgresql.log'\nlog_rotation_size = 0\n")
THREE = ("postgresql.log", "postgresql.csv", "postgresql.json")
#: report keys about the input itself (lines, bytes, where it was read, how long it took), not what it holds
INPUT_KEYS = ("lines", "entries", "bytes_read", "unparsed_pct", "files", "scan_seconds", "format", "log_line_prefix",
              "log_line_prefix_from",
              "findings", "metrics")
INPUT_METRICS = ("lines", "bytes_read", "scan_seconds", "unparsed_pct")


@pytest.fixture(scope="module")
def three_logs(services_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Any:
    """A cluster with log_destination = 'stderr,csvlog,jsonlog' after the workload, and copies of its three logs
    taken while it was stopped (so they hold the same records); the cluster runs again for the tests."""
    cluster = PostgresCluster(services_dir / "pg-three-formats", extra_conf=THREE_CONF)
    cluster.start()
    try:
        done = pgworkload.run(lambda: cluster.connect())
    finally:
        cluster.stop()
    copies = tmp_path_factory.mktemp("three-formats")
    for name in THREE:
        shutil.copy(cluster.data / "log" / name, copies / name)
    cluster.start()
    yield cluster, copies, done
    cluster.stop()


def report_of(r: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json"))
                                      .read_text())
    return data


def test_stderr_csvlog_and_jsonlog_give_the_same_figures(cli: Any, make_config: Any, three_logs: Any,
                                                         tmp_path: Path) -> None:
    cluster, copies, done = three_logs
    reports, results = {}, {}
    for name in THREE:  # the format from the file name (auto), the stderr prefix from the server
        r = run(cli, config(make_config, cluster, tmp_path / name, log_file=str(copies / name), incremental=False))
        results[name], reports[name] = r, report_of(r)
    assert [reports[n]["format"] for n in THREE] == ["stderr", "csvlog", "jsonlog"]
    want = reports["postgresql.log"]
    assert want["unparsed"] == 0 and want["errors"]["inferred_sqlstates"] == 0
    assert want["statements"]["count"] >= done["statements"] and want["deadlocks"]["count"] == 1
    assert want["locks"]["waits"] >= 1 and want["temp_files"]["count"] >= 1 and want["checkpoints"]["count"] >= 1
    assert set(want["errors"]["by_sqlstate"]) >= {code for _sql, code in pgworkload.ERRORS} | {"40P01"}
    for name in THREE[1:]:
        got = reports[name]
        assert got["unparsed"] == 0, got["unparsed_samples"]
        for key in want:
            if key not in INPUT_KEYS:
                assert got[key] == want[key], (name, key)
        assert {k: v for k, v in results[name]["metrics"].items() if k not in INPUT_METRICS} == \
            {k: v for k, v in results["postgresql.log"]["metrics"].items() if k not in INPUT_METRICS}
        assert [(f["check"], f["severity"], f["message"]) for f in results[name]["findings"]] == \
            [(f["check"], f["severity"], f["message"]) for f in results["postgresql.log"]["findings"]]


@pytest.mark.parametrize("fmt", ["csv", "jsonlog"])
def test_csvlog_and_jsonlog_agree_with_pgbadger(three_logs: Any, tmp_path: Path, fmt: str) -> None:
    from upkeeper.logs import pgstruct

    _cluster, copies, _done = three_logs
    log = copies / ("postgresql.csv" if fmt == "csv" else "postgresql.json")
    badger = pgbadger(log, "", tmp_path, fmt=fmt)
    acc = pgstruct.make_accumulator(pgstruct.PgStructOptions(format="csvlog" if fmt == "csv" else "jsonlog"))
    acc.feed(log.read_bytes())
    mine = summarize(acc.partial(), top_n=1000)
    overall = badger["overall_stat"]
    assert mine["statements"]["count"] == overall["queries_number"]
    assert abs(mine["statements"]["total_ms"] - overall["postgres"]["queries_duration"]["execute"]) < 1.0
    theirs = {k.rstrip(";").replace("?.?", "?"): v["count"] for k, v in badger["normalyzed_info"]["postgres"].items()}
    assert {q["fingerprint"]: q["count"] for q in mine["most_frequent"]} == theirs
    temp = badger["tempfile_info"]["postgres"]
    assert (mine["temp_files"]["count"], mine["temp_files"]["total_bytes"]) == (temp["count"], temp["size"])
    assert mine["checkpoints"]["buffers"] == badger["checkpoint_info"]["wbuffer"]
    # errors by message class (pgBadger 12 leaves the SQLSTATE of csvlog/jsonlog records out of its report)
    theirs_err = {k: v["count"] for k, v in badger_errors(badger).items()}
    mine_err: dict[str, int] = {}
    for e in mine["errors"]["classes"]:
        mine_err[as_badger_class(e)] = mine_err.get(as_badger_class(e), 0) + e["count"]
    assert mine_err == theirs_err and len(theirs_err) >= len(pgworkload.ERRORS) + 1
    # ours come from the records' SQLSTATE column, none guessed from the message
    assert set(mine["errors"]["by_sqlstate"]) == {code for _sql, code in pgworkload.ERRORS} | {"40P01"}
    assert mine["errors"]["inferred_sqlstates"] == 0
    assert_locks_and_deadlocks_agree(mine, badger, longest=fmt == "csv")


def test_csvlog_from_the_server_read_incrementally_and_after_rotation(cli: Any, make_config: Any, three_logs: Any,
                                                                     tmp_path: Path) -> None:
    """format: csvlog and no log_file: the server tells its csvlog (pg_current_logfile('csvlog')); the next run
    reads only the new records, and a rotated file (renamed .1) is read on where the last run stopped."""
    cluster, _copies, _done = three_logs
    csvlog = cluster.data / "log" / "postgresql.csv"
    cfg = config(make_config, cluster, tmp_path, format="csvlog", unparsed_warn_pct=0)
    first = run(cli, cfg)
    assert report_of(first)["files"][-1]["path"] == str(csvlog)
    assert first["metrics"]["statements"] >= 400 and first["metrics"]["unparsed_pct"] == 0

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 10
        while text.encode() not in csvlog.read_bytes():
            assert time.monotonic() < deadline, f"{text} never reached {csvlog}"
            time.sleep(0.05)

    with cluster.connect() as c:
        for i in range(7):
            c.execute(f"SELECT 'new\nline', {i} AS upk_new")
    wait_for("6 AS upk_new")
    again = report_of(run(cli, cfg))
    fps = {q["fingerprint"]: q["count"] for q in again["most_frequent"]}
    assert fps["select ?, ? as upk_new"] == 7 and again["unparsed"] == 0
    # logrotate-style rotation: the file is renamed; the server keeps writing the renamed file until told to
    # reopen (pg_rotate_logfile), then writes a new one under the old name
    with cluster.connect() as c:
        c.execute("SELECT 'before rotation' AS upk_rot_1")
        wait_for("upk_rot_1")
        csvlog.rename(csvlog.with_name("postgresql.csv.1"))
        c.execute("SELECT 'renamed, not reopened' AS upk_rot_2")
        c.execute("SELECT pg_rotate_logfile()")
        deadline = time.monotonic() + 10
        while not csvlog.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.execute("SELECT 'after rotation' AS upk_rot_3")
    wait_for("upk_rot_3")
    third = report_of(run(cli, cfg))
    fps = {q["fingerprint"]: q["count"] for q in third["most_frequent"]}
    assert third["unparsed"] == 0
    assert {fp: n for fp, n in fps.items() if "upk_rot" in fp} == {  # each once: none lost, none read twice
        "select ? as upk_rot_1": 1, "select ? as upk_rot_2": 1, "select ? as upk_rot_3": 1}, fps
    assert "select ?, ? as upk_new" not in fps


def test_a_csvlog_record_half_written_waits_for_the_next_run(cli: Any, make_config: Any, three_logs: Any,
                                                             tmp_path: Path) -> None:
    """The server writes a long record in pieces: a newline inside its statement can be the last byte written
    when the job reads.  That record is left for the next run, which reads it whole: never two bad halves."""
    cluster, copies, _done = three_logs
    records = (copies / "postgresql.csv").read_bytes()
    log = tmp_path / "live" / "postgresql.csv"
    log.parent.mkdir()
    whole = (b'2024-03-01 10:00:00.123 UTC,"app","shop",42,"10.0.0.5:51000",65e1a2b3.2a,7,"SELECT",'
             b'2024-03-01 09:59:00 UTC,3/7,0,LOG,00000,"duration: 1.500 ms  statement: SELECT *\n'
             b'  FROM upk_half\n WHERE id = 1",,,,,,,,,"psql","client backend",,0\n')
    cut = whole.index(b"\n") + 1  # up to the first newline inside the statement
    log.write_bytes(records + whole[:cut])
    cfg = config(make_config, cluster, tmp_path, log_file=str(log))
    first = report_of(run(cli, cfg))
    assert first["format"] == "csvlog" and first["unparsed"] == 0, first["unparsed_samples"]
    assert first["files"][0]["to"] == len(records)
    assert "select * from upk_half where id = ?" not in {q["fingerprint"] for q in first["most_frequent"]}
    with log.open("ab") as fh:
        fh.write(whole[cut:])
    second = report_of(run(cli, cfg))
    assert second["unparsed"] == 0, second["unparsed_samples"]
    assert [(q["fingerprint"], q["count"]) for q in second["most_frequent"]] == [("select * from upk_half where id = ?", 1)]


def test_format_told_by_the_file_names(cli: Any, make_config: Any, three_logs: Any, tmp_path: Path) -> None:
    import gzip

    from upkeeper.tasks.logs.postgres import format_of

    assert [format_of(p) for p in ("/l/postgresql.csv", "/l/postgresql.csv.1", "/l/postgresql-2024-03-01.csv.gz",
                                    "/l/postgresql.json.2.gz", "/l/postgresql.log", "/l/postgresql-Mon.log")] == [
        "csvlog", "csvlog", "csvlog", "jsonlog", "stderr", "stderr"]
    cluster, copies, done = three_logs
    logs = tmp_path / "logs"
    logs.mkdir()
    # a rotated, compressed csvlog and its live file: read together, as csvlog
    (logs / "postgresql.csv.1.gz").write_bytes(gzip.compress((copies / "postgresql.csv").read_bytes()))
    (logs / "postgresql.csv").write_bytes(b"")
    r = run(cli, config(make_config, cluster, tmp_path, log_file=str(logs / "postgresql.csv")))
    rep = report_of(r)
    assert rep["format"] == "csvlog" and rep["unparsed"] == 0 and rep["statements"]["count"] >= done["statements"]
    # a glob over logs of two formats would count every statement twice: refused
    shutil.copy(copies / "postgresql.log", logs / "postgresql.log")
    r = run(cli, config(make_config, cluster, tmp_path, log_file=str(logs / "postgresql.*")))
    assert r["status"] == "error" and "several formats: csvlog, stderr" in r["summary"], r["summary"]


# ---------------------------------------------------------------------------------------------
# rotation: the server's own (log_filename with %-escapes), and logrotate's into an olddir
# ---------------------------------------------------------------------------------------------


def test_rotations_by_the_server_and_by_logrotate_lose_nothing(cli: Any, make_config: Any, services_dir: Path,
                                                               tmp_path: Path) -> None:
    """The server's rotation (pg_rotate_logfile, as log_rotation_age/size do) with log_filename naming each file
    after the time: the job asks pg_current_logfile(), which names the new file; what the server wrote to the
    file before it since the last run was lost (and said to be).  Then logrotate into an olddir with compress
    and delaycompress, rotated twice between two runs, with rotated_dirs naming it: each statement once."""
    import gzip

    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    cluster = PostgresCluster(services_dir / "pg-rotation", extra_conf=(
        "log_min_duration_statement = 0\nlogging_collector = on\nlog_directory = 'log'\n"
        "log_filename = 'postgresql-%Y-%m-%d_%H%M%S.%%.log'\nlog_rotation_size = 0\nlog_rotation_age = 0\n"))
    cluster.start()
    try:
        logs = cluster.data / "log"
        # old history the server wrote before: never read (not the continuation of anything)
        (logs / "postgresql-2020-01-01_000000.%.log").write_text(
            "2020-01-01 00:00:00.000 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 1 AS upk_history\n")
        os.utime(logs / "postgresql-2020-01-01_000000.%.log", (0, 0))
        cfg = config(make_config, cluster, tmp_path, rotated_dirs=["old"], html=False)
        counts: dict[str, int] = {}

        def query(marker: str, n: int = 1) -> None:
            with cluster.connect() as c:
                for i in range(n):
                    c.execute(f"SELECT {i} AS {marker}")
            counts[f"select ? as {marker}"] = n

        def current() -> Path:
            with cluster.connect() as c:
                row = c.execute("SELECT pg_current_logfile()").fetchone()
            assert row is not None
            return cluster.data / row[0]

        def wait_for(marker: str) -> None:
            deadline = time.monotonic() + 10
            while marker.encode() not in current().read_bytes():
                assert time.monotonic() < deadline, f"{marker} never reached {current()}"
                time.sleep(0.05)

        def rotate_server() -> None:
            before = current()
            deadline = time.monotonic() + 10
            while current() == before:  # a new name each second: within the same one, the same file reopened
                assert time.monotonic() < deadline, "the server did not rotate its log"
                with cluster.connect() as c:
                    c.execute("SELECT pg_rotate_logfile()")
                time.sleep(0.1)

        def job() -> tuple[dict[str, int], dict[str, Any]]:
            r = run(cli, cfg)
            rep = report_of(r)
            seen = {q["fingerprint"]: q["count"] for q in rep["most_frequent"] if "upk_" in q["fingerprint"]}
            return seen, r

        query("upk_before")
        wait_for("upk_before")
        seen, r = job()
        assert seen == counts, seen
        counts.clear()
        # the server's rotation twice between two runs: the file of the last run (and the lines it got since),
        # the one after it, and the new one, each read once
        query("upk_a", 2)
        wait_for("upk_a")
        rotate_server()
        query("upk_b", 3)
        wait_for("upk_b")
        rotate_server()
        query("upk_c", 4)
        wait_for("upk_c")
        seen, r = job()
        assert seen == counts and not [f for f in r["findings"] if f["check"] == "logs.postgres.lost_lines"], (
            seen, r["findings"])
        counts.clear()
        # logrotate: the log under one name, rotated into log/old (compress, delaycompress) twice between two runs
        with cluster.connect() as c:
            c.execute("ALTER SYSTEM SET log_filename = 'postgresql.log'")
            c.execute("SELECT pg_reload_conf()")  # a new log_filename: the server rotates to it by itself
        deadline = time.monotonic() + 10
        while current() != logs / "postgresql.log":
            assert time.monotonic() < deadline, "the server did not switch to the new log_filename"
            time.sleep(0.05)
        query("upk_d")
        wait_for("upk_d")
        job()  # (reads the file the escapes named since, too)
        counts.clear()
        (logs / "old").mkdir()
        conf = tmp_path / "logrotate.conf"
        conf.write_text(f"{logs / 'postgresql.log'} {{\n rotate 3\n create\n olddir {logs / 'old'}\n compress\n"
                        " delaycompress\n}\n")

        def rotate_logrotate() -> None:
            res = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            query(f"upk_after_rename_{len(counts)}")  # still to the renamed file: the server has not reopened
            with cluster.connect() as c:
                c.execute("SELECT pg_rotate_logfile()")  # logrotate's postrotate

        query("upk_e", 2)
        rotate_logrotate()
        query("upk_f", 3)
        rotate_logrotate()
        query("upk_g", 4)
        wait_for("upk_g")
        assert gzip.decompress((logs / "old" / "postgresql.log.2.gz").read_bytes())
        seen, r = job()
        assert seen == counts and not [f for f in r["findings"] if f["check"] == "logs.postgres.lost_lines"], (
            seen, r["findings"])
    finally:
        cluster.stop()


def test_a_glob_log_file_reads_a_linked_file_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """log_file /var/log/postgresql/*.log with a symbolic link to the server's log beside it (a stable name for
    the current file): each statement counted once per name."""
    log = tmp_path / "postgresql-2024-03-01.log"
    log.write_text("".join(f"2024-03-01 10:00:0{i}.000 UTC [42] LOG:  duration: 1.000 ms  statement: SELECT {i}\n"
                           for i in range(5)))
    (tmp_path / "postgresql-current.log").symlink_to(log.name)
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # never contacted
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
            "log_file": str(tmp_path / "postgresql-*.log"), "log_line_prefix": "%m [%p] ",
            "report_dir": str(tmp_path / "r")}}},
    })
    assert run(cli, cfg)["metrics"]["statements"] == 5
    assert run(cli, cfg)["metrics"]["statements"] == 0


def test_the_p95_says_only_slow_statements_are_timed_only_when_they_are(cli: Any, make_config: Any,
                                                                        services_dir: Path, tmp_path: Path) -> None:
    """log_min_duration_statement = 50ms alone times only the statements slower than that: the p95 over them says
    so.  With log_duration on as well (and log_statement = 'all'), every statement is timed (the fast ones on bare
    "duration:" lines): the p95 is over all of them, and the note that only slow ones are logged was false."""
    cluster = PostgresCluster(services_dir / "pg-p95-note", extra_conf=(
        "log_min_duration_statement = 50\nlc_messages = 'C'\n"
        f"log_line_prefix = '{pgworkload.LOG_LINE_PREFIX}'\n"))
    cluster.start()
    try:
        cfg = config(make_config, cluster, tmp_path, query_p95_ms=0.001, html=False, log_file=str(cluster.log))

        def workload() -> None:
            with cluster.connect() as c:
                for i in range(20):
                    c.execute(f"SELECT {i} AS upk_fast")
                c.execute("SELECT pg_sleep(0.06) AS upk_slow")

        def p95_message() -> str:
            deadline = time.monotonic() + 15
            while b"upk_slow" not in cluster.log.read_bytes()[-4000:]:
                assert time.monotonic() < deadline, "the slow statement never reached the log"
                time.sleep(0.05)
            r = run(cli, cfg)
            found = [f for f in r["findings"] if f["check"] == "logs.postgres.query_p95"]
            assert len(found) == 1, (r["summary"], r["findings"])
            return str(found[0]["message"])

        workload()
        assert "(only statements slower than 50ms are logged)" in p95_message()
        with cluster.connect() as c:
            c.execute("ALTER SYSTEM SET log_duration = on")
            c.execute("ALTER SYSTEM SET log_statement = 'all'")
            c.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 15
        while True:
            with cluster.connect() as c:
                row = c.execute("SHOW log_duration").fetchone()
            if row is not None and row[0] == "on":
                break
            assert time.monotonic() < deadline, "the server did not take log_duration = on"
            time.sleep(0.05)
        workload()
        message = p95_message()  # over every statement since (the fast ones, and the settings' own)
        got = re.search(r"over ([\d,]+) statements", message)
        assert got is not None and int(got[1]) >= 21 and "slower than" not in message, message
    finally:
        cluster.stop()


@pytest.mark.parametrize(("conf", "sampled"), [
    ("log_min_duration_statement = 250\nlog_min_duration_sample = 0\nlog_statement_sample_rate = 0.5\n",
     "log_statement_sample_rate = 0.5"),
    ("log_min_duration_statement = 250\nlog_transaction_sample_rate = 0.5\n", "log_transaction_sample_rate = 0.5"),
    ("log_min_duration_statement = 0\nlog_min_duration_sample = 0\nlog_statement_sample_rate = 0.5\n", ""),
])
def test_a_server_that_logs_a_sample_of_its_statements_is_said_to(cli: Any, make_config: Any, services_dir: Path,
                                                                   tmp_path: Path, conf: str, sampled: str) -> None:
    """log_min_duration_sample + log_statement_sample_rate, or log_transaction_sample_rate, make a real server log
    about half of 200 fast statements: the report counted ~100 runs and said nothing — a DBA read a sample as the
    whole.  Now an INFO finding names the sampling settings (and the p95 note says it is over a sample).  With
    log_min_duration_statement = 0 every statement is logged whatever the sampling: nothing is said."""
    cluster = PostgresCluster(services_dir / f"pg-sampled-{len(sampled)}", extra_conf=(
        conf + f"lc_messages = 'C'\nlog_line_prefix = '{pgworkload.LOG_LINE_PREFIX}'\n"))
    cluster.start()
    try:
        with cluster.connect() as c:
            for i in range(200):
                c.execute(f"SELECT {i} AS upk_sampled")
            c.execute("SELECT pg_sleep(0.3) AS upk_marker")  # slower than every threshold: always logged
        deadline = time.monotonic() + 15
        while b"upk_marker" not in cluster.log.read_bytes():
            assert time.monotonic() < deadline, "the marker statement never reached the log"
            time.sleep(0.05)
        r = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log), html=False, incremental=False,
                            query_p95_ms=0.001))
    finally:
        cluster.stop()
    counts = {q["fingerprint"]: q["count"] for q in report_of(r)["most_frequent"]}
    checks = {f["check"]: f for f in r["findings"]}
    p95 = checks["logs.postgres.query_p95"]["message"]
    if not sampled:
        assert counts["select ? as upk_sampled"] == 200
        assert "logs.postgres.sampled" not in checks and "sample" not in p95, p95
        return
    assert 0 < counts.get("select ? as upk_sampled", 0) < 200  # the server did log a sample (P(all 200) = 2^-200)
    f = checks["logs.postgres.sampled"]
    assert f["severity"] == "info" and sampled in f["message"], f["message"]
    assert "only a sample of the statements is logged" in p95 and sampled in p95, p95


def test_log_statement_without_durations_counts_as_pgbadger(cli: Any, make_config: Any, services_dir: Path,
                                                            tmp_path: Path) -> None:
    """log_statement = 'all' (or 'mod') and nothing that times statements: logs.postgres counted no statement at
    all, while pgBadger lists every one (by kind, and its most frequent queries by fingerprint).  Now each logged
    statement that gets no duration counts once, per fingerprint and kind, its time unknown (None, never 0 ms) —
    the same counts as pgBadger's on a real server's log (pgbench with the three protocols, failing statements,
    a lock wait, a deadlock).  With log_min_duration_statement = 0 as well, each statement is logged when it starts
    and its duration on a bare line after it: counted once, timed (pgBadger 12 counts it twice there).
    The untimed statements were in no by-hour/database/user figure (pgBadger's per-hour, per-database and per-user
    query counts hold them): now statements.untimed has them, pgBadger's counts (a second database and user too)."""
    cluster = PostgresCluster(services_dir / "pg-log-statement", extra_conf=(
        f"lc_messages = 'C'\nlog_line_prefix = '{pgworkload.LOG_LINE_PREFIX}'\ndeadlock_timeout = '200ms'\n"))
    cluster.start()
    slices: dict[str, bytes] = {}
    try:
        env = {**os.environ, **cluster.env()}
        pgbench = str(cluster.bin / "pgbench")
        subprocess.run([pgbench, "-i", "-s", "1", "-q", "postgres"], env=env, check=True, capture_output=True)
        cluster.execute("CREATE ROLE upk_app LOGIN")
        cluster.create_database("upk_other")
        cluster.execute("CREATE TABLE upk_notes (id int, note text); GRANT ALL ON upk_notes TO upk_app",
                        dbname="upk_other")
        for name, settings in (("all", {"log_statement": "all"}), ("mod", {"log_statement": "mod"}),
                               ("both", {"log_statement": "all", "log_min_duration_statement": "0"})):

            def connect(settings: dict[str, str] = settings) -> Any:
                c = cluster.connect()
                for k, v in settings.items():
                    c.execute(f"SET {k} = '{v}'")
                return c

            start = cluster.log.stat().st_size
            opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
            for mode in ("simple", "extended", "prepared"):
                subprocess.run([pgbench, "-n", "-M", mode, "-c", "2", "-t", "10", "postgres"],
                               env={**env, "PGOPTIONS": opts}, check=True, capture_output=True)
            pgworkload.run(connect, statements=60)
            with connect() as c:
                c.execute("DELETE FROM upk_items WHERE id > %s", (1990,))
            # another user on another database: 5 SELECTs, 3 INSERTs, 1 UPDATE
            cluster.execute("ALTER ROLE upk_app RESET ALL")
            for k, v in settings.items():  # (set by a superuser: upk_app may not)
                cluster.execute(f"ALTER ROLE upk_app SET {k} = '{v}'")
            with psycopg.connect(cluster.conninfo("upk_other").replace("user=postgres", "user=upk_app"),
                                 autocommit=True) as c:
                for i in range(5):
                    c.execute("SELECT count(*) FROM upk_notes WHERE id > %s", (i,))
                for i in range(3):
                    c.execute("INSERT INTO upk_notes VALUES (%s, 'x')", (i,))
                c.execute("UPDATE upk_notes SET note = 'y'")
            time.sleep(0.3)  # (the last lines reach the file)
            slices[name] = cluster.log.read_bytes()[start:]
    finally:
        cluster.stop()
    for name, text in slices.items():
        log = tmp_path / f"{name}.log"
        log.write_bytes(text)
        logged = len(re.findall(rb"LOG:  (?:statement|execute [^:\n]*): ", text))
        mine = ours(log, pgworkload.LOG_LINE_PREFIX)
        st_ = mine["statements"]
        badger = pgbadger(log, pgworkload.LOG_LINE_PREFIX, tmp_path)
        theirs: dict[str, int] = {}
        for k, v in badger["normalyzed_info"]["postgres"].items():
            # (our VALUES lists collapse, pgBadger's do not: the failed INSERT's "values (?, ?)")
            k = re.sub(r"values \(\?(?:, \?)*\)", "values (...)", k.rstrip(";").replace("?.?", "?"))
            theirs[k] = theirs.get(k, 0) + v["count"]
        untimed = st_["untimed"]
        mine_fp = {q["fingerprint"]: q["count"] for q in untimed["most_frequent"]}
        for q in mine["most_frequent"]:
            mine_fp[q["fingerprint"]] = mine_fp.get(q["fingerprint"], 0) + q["count"]
        assert mine_fp == theirs, name  # the same statements, the same fingerprints and counts
        assert st_["count"] + untimed["count"] == logged > 100, name  # each logged statement once
        assert st_["unpaired"]["count"] == 0, name
        # each logged statement once in the by-hour/database/user figures: the timed ones' plus the untimed ones'
        for key in ("by_hour", "by_database", "by_user"):
            both = {k: mine[key].get(k, 0) + untimed[key].get(k, 0) for k in {*mine[key], *untimed[key]}}
            assert sum(both.values()) == logged and sum(untimed[key].values()) == untimed["count"], (name, key)
        if name == "both":  # timed, each once: pgBadger counts each statement and its bare duration apart
            assert badger["overall_stat"]["queries_number"] > logged
            assert 0 < untimed["count"] < 20, untimed  # the statements that failed: no duration
            continue
        assert untimed["by_user"]["upk_app"] == untimed["by_database"]["upk_other"] == (9 if name == "all" else 4)
        # pgBadger's queries per hour, database and user: the untimed statements' (no statement is timed here)
        per_hour: dict[str, int] = {}
        for day, hours in badger["per_minute_info"]["postgres"].items():
            for hour, minutes in hours.items():
                n = sum(m.get("query", {}).get("count", 0) for m in minutes.values())
                if n:
                    per_hour[f"{day[:4]}-{day[4:6]}-{day[6:]} {hour}:00"] = n
        assert untimed["by_hour"] == per_hour, name
        for key, info in (("by_database", "database_info"), ("by_user", "user_info")):
            assert untimed[key] == {k: v["count"] for k, v in badger[info]["postgres"].items()}, (name, key)
        assert st_["count"] == 0 and st_["percentiles"] == {} and st_["total_ms"] == 0
        assert untimed["count"] == badger["overall_stat"]["queries_number"]
        kinds = badger["overall_stat"]["postgres"]
        for kind in ("select", "insert", "update", "delete"):
            assert untimed["by_kind"].get(kind, 0) == kinds.get(kind, 0), (name, kind)
        assert untimed["by_kind"]["update"] >= 60 and untimed["by_kind"]["delete"] == 1
        assert all(q["total_ms"] is None and q["mean_ms"] is None and q["max_ms"] is None
                   for q in untimed["most_frequent"])
        if name == "mod":
            assert "select" not in untimed["by_kind"]
    # the job: the statements counted, and the p95 objective said not to be judged (and how to time them)
    r = run(cli, config(make_config, cluster, tmp_path, log_file=str(tmp_path / "all.log"), incremental=False,
                        log_line_prefix=pgworkload.LOG_LINE_PREFIX))
    assert r["metrics"]["statements"] == 0 and r["metrics"]["statements_untimed"] >= 100
    assert "logged without their duration" in r["summary"]
    (f,) = [f for f in r["findings"] if f["check"] == "logs.postgres.no_durations"]
    assert "query p95 objective (< 100 ms) cannot be judged" in f["message"], f["message"]
    assert "log_min_duration_statement = 0" in f["remediation"]
    assert not [f for f in r["findings"] if f["check"] == "logs.postgres.query_p95"]
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    untimed_html = page[page.index("Logged without their duration"):]
    assert "statements without a duration per hour" in untimed_html
    assert "<td>upk_other</td>" in untimed_html and "<td>upk_app</td>" in untimed_html
    res = cli(["logs", "postgres", "--prefix", pgworkload.LOG_LINE_PREFIX, str(tmp_path / "all.log")])
    assert res.code == 0, res.output
    assert "statements logged without their duration" in res.output and "upk_other" in res.output, res.output


#: errors raised in PL/pgSQL: (statement, the SQLSTATE the csvlog gives) — a RAISE's own message and code
PLPGSQL_RAISES = (
    ("DO $$BEGIN RAISE EXCEPTION 'order % is locked', 42; END$$", "P0001"),
    ("DO $$BEGIN RAISE EXCEPTION 'custom code' USING ERRCODE = '23505'; END$$", "23505"),
    ("DO $$BEGIN RAISE EXCEPTION 'named' USING ERRCODE = 'unique_violation'; END$$", "23505"),
    ("DO $$BEGIN RAISE division_by_zero; END$$", "22012"),
    ("DO $$BEGIN RAISE SQLSTATE '22012'; END$$", "22012"),
    ("DO $$BEGIN RAISE EXCEPTION 'division by zero'; END$$", "P0001"),  # the function's words, no division
    ("DO $$BEGIN RAISE EXCEPTION 'relation \"upk_x\" does not exist'; END$$", "P0001"),
    ("DO $$BEGIN PERFORM 1/0; EXCEPTION WHEN division_by_zero THEN RAISE; END$$", "22012"),  # re-raised
    ("DO $$BEGIN ASSERT false, 'upk assert'; END$$", "P0004"),
    ("DO $$BEGIN ASSERT 1 = 2; END$$", "P0004"),
    ("SELECT upk_f()", "P0001"),
    ("SELECT upk_g()", "P0001"),  # upk_f's RAISE, called by upk_g
    ("DO $$BEGIN PERFORM 1/0; END$$", "22012"),  # an error in a PL/pgSQL statement: no RAISE
    ("DO $$BEGIN RAISE WARNING 'upk warning'; END$$", "01000"),
    ("DO $$BEGIN RAISE WARNING 'division by zero'; END$$", "01000"),
    ("DO $$BEGIN RAISE WARNING 'upk coded warning' USING ERRCODE = '22012'; END$$", "22012"),
    ("DO $$BEGIN RAISE WARNING 'upk deprecated' USING ERRCODE = '01P01'; END$$", "01P01"),
)


def test_errors_raised_by_plpgsql_get_no_wrong_sqlstate(services_dir: Path, tmp_path: Path) -> None:
    """Without %e, an error a PL/pgSQL RAISE raised had its SQLSTATE told by its message — the function's own
    words: RAISE EXCEPTION 'division by zero' was counted 22012 (it is P0001), and an ASSERT's was unknown (always
    P0004).  Now the CONTEXT tells: "… at ASSERT" is P0004; "… at RAISE" (the innermost frame: a re-raised error
    keeps where it was raised) is P0001 unless the RAISE named another condition, which the log does not tell — so
    it stays unknown ('-----'), and the class says it was raised (its finding says P0001 unless …).  A RAISE
    WARNING's was given 01000, a warning's default, but RAISE WARNING … USING ERRCODE = '22012' logs 22012: it stays
    unknown too, 01000 named as likely (as P0001 is for an error's).  Checked against the csvlog of the same server:
    a code we give is the server's; unknown stays unknown."""
    cluster = stderr_and_csvlog_cluster(services_dir / "pg-plpgsql-raise")
    try:
        with cluster.connect() as c:
            c.execute("CREATE FUNCTION upk_f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'from upk_f "
                      "%', 7 USING HINT = 'a hint', DETAIL = 'a detail'; END$$")
            c.execute("CREATE FUNCTION upk_g() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN upk_f(); END$$")
            for sql, code in PLPGSQL_RAISES:
                try:
                    c.execute(sql.encode())
                except psycopg.Error as exc:
                    assert exc.sqlstate == code, (sql, exc.sqlstate)
                else:  # a warning: the server's code is the csvlog's (checked below)
                    assert "WARNING" in sql, sql
    finally:
        cluster.stop()
    whole = ours(cluster.data / "log" / "postgresql.log", pgworkload.LOG_LINE_PREFIX)
    stderr = whole["errors"]
    from upkeeper.logs.report_html import postgres_report

    page = postgres_report(whole, [], title="t", subtitle="s", trends={}, objectives={}, history=False)
    assert "----- (a RAISE: likely 01000)" in page and "----- (a RAISE: likely P0001)" in page
    acc = pgstruct.make_accumulator(pgstruct.PgStructOptions(format="csvlog"))
    acc.feed((cluster.data / "log" / "postgresql.csv").read_bytes())
    truth = summarize(acc.partial(), top_n=1000)["errors"]
    assert truth["inferred_sqlstates"] == 0 and "raised_by_plpgsql" not in str(truth)  # csvlog: every code logged
    real: dict[tuple[str, str], dict[str, int]] = {}  # (level, message) -> the server's SQLSTATEs, counted
    for e in truth["classes"]:
        real.setdefault((e["level"], e["message"]), {})[e["sqlstate"]] = e["count"]
    told: dict[tuple[str, str], dict[str, int]] = {}
    for e in stderr["classes"]:
        told.setdefault((e["level"], e["message"]), {})[e["sqlstate"]] = e["count"]
        if e.get("raised_by_plpgsql"):
            assert e["sqlstate"] == "-----" and e["raised_by_plpgsql"] == e["count"], e
            assert e["likely_sqlstate"] == ("01000" if e["level"] == "WARNING" else "P0001"), e
    assert told.keys() == real.keys() and len(real) == len(PLPGSQL_RAISES) - 3  # (upk_f twice, division by zero thrice)
    for k, codes in told.items():
        assert sum(codes.values()) == sum(real[k].values()), k
        for code, n in codes.items():  # a code told is the server's (unknown stays unknown, said raised)
            assert code == "-----" or n <= real[k].get(code, 0), (k, codes, real[k])
    by_msg = {e["message"]: e for e in stderr["classes"] if e["message"] != "division by zero"}
    assert told[("ERROR", "division by zero")] == {"22012": 2, "-----": 1}  # PERFORM 1/0 and re-raised; RAISE'd
    assert by_msg["upk assert"]["sqlstate"] == by_msg["assertion failed"]["sqlstate"] == "P0004"
    assert by_msg["from upk_f ?"]["raised_by_plpgsql"] == 2 and by_msg["from upk_f ?"]["sqlstate"] == "-----"
    assert by_msg['relation "?" does not exist']["sqlstate"] == "-----"
    raised = sum(e.get("raised_by_plpgsql", 0) for e in stderr["classes"])
    assert raised == 13  # every RAISE but the re-raise; the warnings' too
    assert stderr["by_sqlstate"]["-----"] == 13 and "01000" not in stderr["by_sqlstate"]
    # the server's codes of the four warnings: 01000 twice (no condition named), 22012, 01P01
    warned = {e["message"]: e["sqlstate"] for e in truth["classes"] if e["level"] == "WARNING"}
    assert warned == {"upk warning": "01000", "division by zero": "01000", "upk coded warning": "22012",
                      "upk deprecated": "01P01"}, warned
    from upkeeper.tasks.logs.postgres import PostgresLogs, PostgresLogsOptions

    rep = {"errors": stderr}
    (f,) = [f for f in PostgresLogs._errors(PostgresLogsOptions(), rep, {}, "log") if "from upk_f" in f.message]
    assert "raised by a PL/pgSQL RAISE: SQLSTATE P0001 (raise_exception) unless" in f.message
    assert "%e" in f.remediation


def test_nested_comments_are_one_comment_where_pgbadger_ends_them_early(tmp_path: Path) -> None:
    """PostgreSQL nests block comments; pgBadger 12 ends one at its first '*/' and keeps the rest of it in the
    fingerprint (what docs/logs.md says of it): two statements that differ in a comment only are two of its
    fingerprints, one of ours."""
    log = tmp_path / "nested.log"
    log.write_bytes(b"2024-03-01 10:00:00.000 UTC [1] LOG:  duration: 1.000 ms  statement: "
                    b"/* outer /* inner */ still comment */ SELECT 1\n"
                    b"2024-03-01 10:00:01.000 UTC [1] LOG:  duration: 2.000 ms  statement: "
                    b"/* o /* i */ other words */ SELECT 2\n")
    assert {q["fingerprint"]: q["count"] for q in ours(log, "%m [%p] ")["most_frequent"]} == {"select ?": 2}
    theirs = set(pgbadger(log, "%m [%p] ", tmp_path)["normalyzed_info"]["postgres"])
    assert theirs == {"still comment */ select ?;", "other words */ select ?;"}


def test_a_log_of_too_many_distinct_statements_stops_at_the_memory_limit(cli: Any, make_config: Any,
                                                                         pg: PostgresCluster, tmp_path: Path) -> None:
    """Generated SQL (a table per tenant, literals an ORM inlines) makes every logged statement a new fingerprint:
    past memory_limit_mb the run stops with an error that names them, records nothing, and a run with room reads
    them all; `upkeeper logs postgres` stops the same way."""
    log = tmp_path / "postgresql.log"
    with log.open("w") as fh:
        for i in range(80_000):
            fh.write(f"2024-03-01 10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000:03d} UTC [{1000 + i % 40}] "
                     f"LOG:  duration: {i % 97}.{i % 1000:03d} ms  statement: SELECT id, name FROM tenant_{i}.items_{i} "
                     f"WHERE owner_{i} = $1 AND kind_{i} IS NOT NULL ORDER BY created_{i} DESC\n")
    r = run(cli, config(make_config, pg, tmp_path, log_file=str(log), log_line_prefix="%m [%p] ", workers=1,
                        memory_limit_mb=2))
    assert r["status"] == "error", r
    assert "memory_limit_mb: 2" in r["summary"] and "statement fingerprints" in r["summary"], r["summary"]
    assert "nothing of this run was recorded" in r["summary"]
    again = run(cli, config(make_config, pg, tmp_path, log_file=str(log), log_line_prefix="%m [%p] ", workers=1,
                            memory_limit_mb=2000))
    assert again["status"] != "error", again["summary"]
    assert again["metrics"]["statements"] == 80_000, again["metrics"]
    res = cli(["logs", "postgres", "--prefix", "%m [%p] ", "--workers", "1", "--memory-limit-mb", "2", str(log)])
    assert res.code == 1 and "statement fingerprints" in res.output and "Traceback" not in res.output, res.output
