"""logs.postgres on a log written through syslog: a real PostgreSQL with log_destination = 'syslog', a real
rsyslogd writing its messages (tests/services.py: syslogd), the real CLI; agreement with pgBadger -f syslog."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import Syslogd
from tasks.test_logs_postgres import (
    ERROR_LEVELS,
    as_badger_class,
    assert_locks_and_deadlocks_agree,
    badger_errors,
    config,
    run,
)
from upkeeper.logs import pgsyslog
from upkeeper.logs.pglog import summarize
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.postgres import PostgresCluster

#: a statement of more than PG_SYSLOG_LIMIT (900) bytes with spaces (cut at a word boundary) and one without
LONG_WORDS = "SELECT " + ", ".join(f"{i} AS column_{i}" for i in range(120))
LONG_WORD = "SELECT '" + "x" * 1500 + "' AS one_word"
MULTILINE = "SELECT name,\n       qty\n  FROM upk_items\n WHERE id = 7"


def syslog_cluster(base: Path, prefix: str, ident: str, sequence_numbers: bool = True) -> PostgresCluster:
    conf = (pgworkload.LOGGING_CONF + f"log_destination = 'syslog'\nsyslog_ident = '{ident}'\n"
            f"syslog_sequence_numbers = {'on' if sequence_numbers else 'off'}\nlog_line_prefix = '{prefix}'\n")
    return PostgresCluster(base, extra_conf=conf)


def workload(cluster: PostgresCluster) -> dict[str, int]:
    done = pgworkload.run(lambda: cluster.connect())
    with cluster.connect() as c:
        for _ in range(3):
            c.execute(LONG_WORDS)
            c.execute(LONG_WORD)
            c.execute(MULTILINE)
        try:  # an error whose STATEMENT is chunked too
            c.execute(LONG_WORDS + "\n  FROM no_such_table_either")
        except Exception:
            done["errors"] += 1
    return done


def finish(cluster: PostgresCluster, syslogd: Syslogd, ident: str) -> None:
    """A marker statement, and wait until rsyslogd wrote it to every file."""
    marker = f"upk-end-{uuid.uuid4().hex[:8]}"
    with cluster.connect() as c:
        c.execute(f"SELECT '{marker}'")
    for path in (syslogd.file(ident), syslogd.file(ident, iso=True), syslogd.all):
        syslogd.wait_for(path, marker)


@contextlib.contextmanager
def logged(cluster: PostgresCluster, syslogd: Syslogd, ident: str, log: Path) -> Iterator[None]:
    """``cluster`` started for the block, then stopped, its syslog file (once rsyslogd wrote all of it) copied to
    ``log``."""
    cluster.start()
    try:
        yield
        finish(cluster, syslogd, ident)
    finally:
        cluster.stop()
    shutil.copy(syslogd.file(ident), log)


def badger(log: Path, prefix: str, ident: str, tmp_path: Path, fmt: str = "syslog") -> dict[str, Any]:
    exe = shutil.which("pgbadger")
    if exe is None:
        pytest.fail("pgbadger is not installed (scripts/ensure-system-deps.sh installs it)")
    out = tmp_path / f"{log.name}.{fmt}.badger.json"
    res = subprocess.run([exe, "--pid-dir", str(tmp_path), "-f", fmt, "--ident", ident, "--prefix", prefix,
                          "-x", "json", "-o", str(out), str(log)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def ours(log: Path, prefix: str, ident: str, buffer: int = 1 << 16) -> dict[str, Any]:
    """Our report of ``log``, fed in buffers of whole lines as parallel.read_unit hands them."""
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident=ident))
    acc.start_unit(str(log), 0, None)
    data = log.read_bytes()
    i = 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + buffer) + 1 or len(data)
        if j <= i:
            j = len(data)
        acc.feed(data[i:j], str(log), i)
        i = j
    return summarize(acc.partial(), top_n=1000)


def ours_whole(log: Path, prefix: str, ident: str) -> dict[str, Any]:
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident=ident))
    acc.start_unit(str(log), 0, None)
    acc.feed(log.read_bytes(), str(log), 0)
    return summarize(acc.partial(), top_n=1000)


def figures(rep: dict[str, Any]) -> dict[str, Any]:
    """The counts of a report (its examples aside: which statement is kept as an example follows where the buffers
    were cut)."""
    return {"lines": rep["lines"], "unparsed": rep["unparsed"], "statements": rep["statements"]["count"],
            "total_ms": rep["statements"]["total_ms"],
            "fingerprints": {q["fingerprint"]: q["count"] for q in rep["most_frequent"]},
            "errors": rep["errors"]["by_sqlstate"],
            "classes": {(e["level"], e["message"]): e["count"] for e in rep["errors"]["classes"]},
            "locks": (rep["locks"]["waits"], rep["locks"]["failures"], rep["locks"]["total_wait_ms"]),
            "deadlocks": rep["deadlocks"]["count"], "temp": (rep["temp_files"]["count"], rep["temp_files"]["total_bytes"]),
            "checkpoints": (rep["checkpoints"]["count"], rep["checkpoints"]["buffers"]),
            "first": rep["first"], "last": rep["last"]}


def assert_agrees_with_badger(mine: dict[str, Any], theirs: dict[str, Any], log: Path) -> None:
    overall = theirs["overall_stat"]
    assert mine["unparsed"] == 0, mine["unparsed_samples"]
    assert mine["statements"]["count"] == overall["queries_number"]
    assert abs(mine["statements"]["total_ms"] - overall["postgres"]["queries_duration"]["execute"]) < 1.0
    their_fps = {k.rstrip(";").replace("?.?", "?"): v["count"] for k, v in theirs["normalyzed_info"]["postgres"].items()}
    assert {q["fingerprint"]: q["count"] for q in mine["most_frequent"]} == their_fps
    temp = theirs["tempfile_info"]["postgres"]
    assert (mine["temp_files"]["count"], mine["temp_files"]["total_bytes"]) == (temp["count"], temp["size"])
    # the checkpointer's lines: with %q in the prefix their prefix is empty, and pgBadger 12.0's syslog formats
    # then miss them (wbuffer 0); ours are the log's own figures
    wrote = sum(int(x) for x in re.findall(r"checkpoint complete: wrote (\d+) buffers", log.read_text()))
    assert wrote and mine["checkpoints"]["buffers"] == wrote
    assert theirs["checkpoint_info"]["wbuffer"] in (0, wrote)
    theirs_err = {k: v["count"] for k, v in badger_errors(theirs).items()}
    mine_err: dict[str, int] = {}
    for e in mine["errors"]["classes"]:
        assert e["level"] in ERROR_LEVELS
        mine_err[as_badger_class(e)] = mine_err.get(as_badger_class(e), 0) + e["count"]
    assert mine_err == theirs_err
    assert_locks_and_deadlocks_agree(mine, theirs)


def started(services_dir: Path, syslogd: Syslogd, prefix: str, sequence_numbers: bool = True) -> Iterator[Any]:
    """A server of an ident of its own logging through syslog with ``prefix``, after the workload (long and
    multi-line statements) has run and rsyslogd has written it: (cluster, ident, prefix, the workload's counts)."""
    ident = f"upk{uuid.uuid4().hex[:8]}"
    cluster = syslog_cluster(services_dir / f"pg-{ident}", prefix, ident, sequence_numbers=sequence_numbers)
    cluster.start()
    try:
        done = workload(cluster)
        finish(cluster, syslogd, ident)
        yield cluster, ident, prefix, done
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def syslog_pg(services_dir: Path, syslogd: Syslogd) -> Any:
    """A server logging through syslog with a prefix of neither time nor pid (the syslog line has both), after the
    workload, long and multi-line statements; its ident is this module's own."""
    yield from started(services_dir, syslogd, "%q%u@%d ")


def test_a_syslog_log_agrees_with_pgbadger(syslog_pg: Any, syslogd: Syslogd, tmp_path: Path) -> None:
    """Chunks joined again ([SEQ-N]: multi-line statements, statements over 900 bytes cut at a space and in a
    word), the syslog line's time and pid standing in for the prefix's: the same statements, fingerprints,
    errors, lock waits, deadlock, temporary file and checkpoint as pgBadger -f syslog finds."""
    cluster, ident, prefix, done = syslog_pg
    log = tmp_path / "postgresql.log"
    shutil.copy(syslogd.file(ident), log)
    text = log.read_text()
    assert re.search(rf"^\w{{3}} [ \d]\d \d\d:\d\d:\d\d \S+ {ident}\[\d+\]: \[\d+-2\] #011", text, re.M), text[:2000]
    assert re.search(r"\[\d+-2\]  \S", text), "the long statement was not cut at a space"
    mine = ours(log, prefix, ident)
    assert mine["statements"]["count"] >= done["statements"] + 9
    fps = {q["fingerprint"]: q for q in mine["most_frequent"]}
    assert fps["select name, qty from upk_items where id = ?"]["count"] >= 3
    assert any(f.startswith("select ? as column_0, ? as column_1") and q["count"] == 3 for f, q in fps.items())
    assert fps["select ? as one_word"]["count"] == 3
    assert mine["first"] and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", mine["first"]), mine["first"]
    assert figures(mine) == figures(ours_whole(log, prefix, ident))  # (however the file is cut into buffers)
    assert_agrees_with_badger(mine, badger(log, prefix, ident, tmp_path), log)
    # the RFC 3339 form (rsyslog's RSYSLOG_FileFormat): the same report; pgBadger's syslog2 agrees too
    iso = tmp_path / "postgresql.iso.log"
    shutil.copy(syslogd.file(ident, iso=True), iso)
    mine_iso = ours(iso, prefix, ident)
    assert figures(mine_iso) == figures(mine)
    assert_agrees_with_badger(mine_iso, badger(iso, prefix, ident, tmp_path, fmt="syslog2"), iso)


def test_other_programs_lines_are_skipped_not_unparsed(syslog_pg: Any, syslogd: Syslogd, tmp_path: Path) -> None:
    """/var/log/messages: every program's lines (other servers' too, other tests' idents) — only the ident's are
    read, the others neither parsed nor counted unparsed; the report is the one of the ident's own file."""
    _cluster, ident, prefix, _done = syslog_pg
    everything = tmp_path / "messages"
    shutil.copy(syslogd.all, everything)
    with open(everything, "a") as fh:
        fh.write("Dec  7 08:00:00 db1 kernel: [12345.678] eth0: link up\nDec  7 08:00:00 db1 CRON[99]: (root) CMD "
                 "(run-parts /etc/cron.hourly)\n")
    mine = ours(everything, prefix, ident)
    own = ours(syslogd.file(ident), prefix, ident)
    assert figures(mine) == figures(own)
    others = [ln for ln in everything.read_text().splitlines() if f" {ident}[" not in ln]
    assert mine["syslog_other"]["lines"] == len(others) >= 2


def test_the_task_reads_a_syslog_file_told_by_its_lines(cli: Any, make_config: Any, syslog_pg: Any,
                                                      syslogd: Syslogd, tmp_path: Path) -> None:
    """format auto (a file named .log, its first lines syslog lines), log_line_prefix and syslog_ident asked of
    the server: the whole report; forced stderr says the file is syslog's and to set format: syslog; the server
    asked where it logs says it logs to syslog and what to set."""
    cluster, ident, prefix, done = syslog_pg
    log = tmp_path / "postgresql.log"
    shutil.copy(syslogd.file(ident), log)
    r = run(cli, config(make_config, cluster, tmp_path, log_file=str(log), incremental=False))
    m = r["metrics"]
    assert m["unparsed_pct"] == 0 and m["statements"] >= done["statements"], r["summary"]
    assert m["deadlocks"] == 1 and m["lock_waits"] >= 1 and m["temp_files"] >= 1 and m["checkpoints"] >= 1
    checks = {f["check"]: f for f in r["findings"]}
    for code in ("42P01", "22012", "23505", "42601", "42703", "40P01"):
        assert f"logs.postgres.error.{code}" in checks, code
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    assert (data["format"], data["log_line_prefix"], data["syslog_ident"]) == ("syslog", prefix, ident)
    # format: stderr on it: the old warning, now pointing at format: syslog
    r = run(cli, config(make_config, cluster, tmp_path, "stderr.yaml", log_file=str(log), format="stderr",
                        log_line_prefix="%m [%p] ", incremental=False))
    checks = {f["check"]: f for f in r["findings"]}
    assert "format: syslog" in checks["logs.postgres.syslog"]["remediation"], list(checks)
    # a wrong ident: nothing read, and said which programs the file holds
    r = run(cli, config(make_config, cluster, tmp_path, "ident.yaml", log_file=str(log), format="syslog",
                        syslog_ident="postgres", incremental=False))
    checks = {f["check"]: f for f in r["findings"]}
    assert ident in checks["logs.postgres.syslog_ident"]["message"], list(checks)
    # no log_file: the server has no log file of its own to tell
    res = cli(["--config", str(config(make_config, cluster, tmp_path, "nofile.yaml")), "run", "pg-logs", "--json"])
    assert "sends its log to syslog (log_destination = 'syslog')" in res.json()[0]["summary"], res.output


def test_incremental_runs_never_read_half_a_message(cli: Any, make_config: Any, syslog_pg: Any, syslogd: Syslogd,
                                                    tmp_path: Path) -> None:
    """A live syslog file whose last message has only its first chunk written yet (rsyslog writes chunk by chunk):
    the run reads up to that message and the next run reads it whole — every statement once, with its whole text
    (its fingerprint), as one read of the whole file counts them."""
    cluster, ident, prefix, _done = syslog_pg
    lines = syslogd.file(ident).read_bytes().splitlines(keepends=True)
    # cut after the first chunk of the last statement over 900 bytes (its next chunk, cut at a space, not written)
    cut = max(i for i, ln in enumerate(lines) if re.search(rb"\]: \[\d+-2\]  \S", ln))
    assert re.search(rb"\]: \[\d+-1\] .* statement: SELECT", lines[cut - 1]), lines[cut - 1]
    # the lines before it a minute older (the workload took a few seconds, all of which a live file's last
    # seconds hold back): the run reads up to the messages among the file's last lines
    for i in range(cut - 1):
        stamp = datetime.datetime.strptime(lines[i][:15].decode(), "%b %d %H:%M:%S")
        lines[i] = (stamp - datetime.timedelta(minutes=1)).strftime("%b %e %H:%M:%S").encode() + lines[i][15:]
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"".join(lines[:cut]))
    cfg = config(make_config, cluster, tmp_path, log_file=str(log), format="syslog", log_line_prefix=prefix,
                 syslog_ident=ident, rotated=False)

    def counts(r: dict[str, Any]) -> Counter[str]:
        data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
        assert data["unparsed"] == 0, data["unparsed_samples"]
        return Counter({q["fingerprint"]: q["count"] for q in data["most_frequent"]})

    first = run(cli, cfg)  # (the file was just written: its last messages may have more to come)
    with open(log, "ab") as fh:
        fh.write(b"".join(lines[cut:]))
    old = time.time() - 60  # the daemon wrote the rest, and nothing since: the file is quiet, read to its end
    os.utime(log, (old, old))
    second = run(cli, cfg)
    whole = ours(log, prefix, ident)
    assert first["metrics"]["statements"] > 0 and second["metrics"]["statements"] > 0
    # (read without its last chunks, the message would count its statement cut short — another fingerprint — and
    # the next run its last chunks as unparsed lines)
    assert counts(first) + counts(second) == Counter({q["fingerprint"]: q["count"] for q in whole["most_frequent"]})
    assert first["metrics"]["errors"] + second["metrics"]["errors"] == whole["errors"]["total"]
    assert run(cli, cfg)["metrics"]["lines"] == 0


@pytest.fixture(scope="module")
def syslog_pg_plain(services_dir: Path, syslogd: Syslogd) -> Any:
    """syslog_sequence_numbers = off ([N] chunks, no bracket on a message of one line) and a prefix with its own
    time and pid and %e (each error's SQLSTATE)."""
    yield from started(services_dir, syslogd, "%m [%p] %e %q%u@%d ", sequence_numbers=False)


def test_sequence_numbers_off_and_sqlstates_agree_with_pgbadger(syslog_pg_plain: Any, syslogd: Syslogd,
                                                              tmp_path: Path) -> None:
    cluster, ident, prefix, done = syslog_pg_plain
    log = tmp_path / "postgresql.log"
    shutil.copy(syslogd.file(ident), log)
    text = log.read_text()
    assert re.search(rf"{ident}\[\d+\]: \[2\] #011", text) and not re.search(rf"{ident}\[\d+\]: \[\d+-\d+\]", text)
    mine = ours(log, prefix, ident)
    assert mine["statements"]["count"] >= done["statements"] + 9
    assert {"42P01", "22012", "23505", "42601", "42703", "40P01"} <= set(mine["errors"]["by_sqlstate"])
    assert mine["errors"]["inferred_sqlstates"] == 0  # (%e gave each)
    theirs = badger(log, prefix, ident, tmp_path)
    assert_agrees_with_badger(mine, theirs, log)
    assert theirs["checkpoint_info"]["wbuffer"] == mine["checkpoints"]["buffers"]  # (a prefix of its own here)


def test_a_client_cannot_forge_messages_through_the_syslog_transform(services_dir: Path, syslogd: Syslogd,
                                                                      tmp_path: Path) -> None:
    """Text a client writes into a statement cannot become a message of its own in the report: "#012" (rsyslog's
    escape of a newline, which the server never sends while it cuts its messages) followed by a fake error or
    a fake slow statement, nor the text after a word long enough for write_syslog() to cut it at 900 bytes.
    (The old reader counted each fake as an error and a statement of its own.)"""
    ident = f"upk{uuid.uuid4().hex[:8]}"
    prefix = "%q%u@%d "
    cluster = syslog_cluster(services_dir / f"pg-{ident}", prefix, ident)
    log = tmp_path / "postgresql.log"
    with logged(cluster, syslogd, ident, log):
        fake_error = "postgres@postgres ERROR:  forged error"
        fake_slow = "postgres@postgres LOG:  duration: 99999.000 ms  statement: SELECT forged"
        with cluster.connect() as c:
            c.execute(f"SELECT '#012{fake_error}#012{fake_slow}' AS escaped")
            # " 'xxx…" is the second chunk: 900 bytes without a blank after its first, cut inside the word, so
            # the third chunk starts with the client's text
            c.execute("SELECT '" + "x" * 898 + fake_error + "' AS in_a_word")
            c.execute("SELECT 1 AS after")
    text = log.read_text()
    assert f"#012{fake_error}" in text
    assert re.search(rf"\]: \[\d+-3\] {re.escape(fake_error)}'", text), "the word was not cut where the test needs"
    for mine in (ours(log, prefix, ident), ours(syslogd.file(ident, iso=True), prefix, ident)):
        assert mine["unparsed"] == 0, mine["unparsed_samples"]
        assert mine["errors"]["total"] == 0, mine["errors"]
        fps = {q["fingerprint"]: q for q in mine["most_frequent"]}
        assert "select forged" not in fps and max(q["max_ms"] for q in fps.values()) < 99999
        assert fps["select ? as escaped"]["count"] == 1 and fps["select ? as in_a_word"]["count"] == 1



#: a private rsyslogd's configuration (the session's owns /dev/log, where PostgreSQL writes): a socket of its own,
#: repeated messages reduced (Ubuntu's rsyslog.conf: $RepeatedMsgReduction on), three of rsyslog's file formats
PRIVATE_RSYSLOG_CONF = """\
global(workDirectory="{d}/work")
$RepeatedMsgReduction on
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/log.sock" RateLimit.Interval="0")
action(type="omfile" file="{d}/out/traditional.log" template="RSYSLOG_TraditionalFileFormat")
action(type="omfile" file="{d}/out/rfc5424.log" template="RSYSLOG_SyslogProtocol23Format")
action(type="omfile" file="{d}/out/rfc3339.log" template="RSYSLOG_FileFormat")
"""


def test_rsyslog_formats_and_repeated_messages(tmp_path: Path) -> None:
    """A real rsyslogd with repeated-message reduction (Ubuntu's default), writing RSYSLOG_TraditionalFileFormat,
    RSYSLOG_SyslogProtocol23Format (RFC 5424: '<13>1 2026-…T…+00:00 host postgres 4001 - - …') and
    RSYSLOG_FileFormat; fed as syslog(3) feeds /dev/log the messages of a server with syslog_sequence_numbers =
    off (the only setting where two messages can be alike): the same statements from each file — one logged three
    times in a row is one line and 'message repeated 2 times: [ …]' (its text cut at 800 bytes when longer), and
    counts 3 (the old reader counted it once, and the repeat line as a statement of user 'message repeated 2
    times: [ app'); RFC 5424 lines were all unparsed."""
    exe = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if exe is None:
        pytest.fail("rsyslogd is not installed (scripts/ensure-system-deps.sh installs the rsyslog package)")
    (tmp_path / "work").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "rsyslog.conf").write_text(PRIVATE_RSYSLOG_CONF.format(d=tmp_path))
    daemon = subprocess.Popen([exe, "-n", "-f", str(tmp_path / "rsyslog.conf"), "-i", str(tmp_path / "pid")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "log.sock").exists():
            assert daemon.poll() is None and time.monotonic() < deadline, "rsyslogd did not start"
            time.sleep(0.05)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(str(tmp_path / "log.sock"))

        def send(pid: int, msg: str) -> None:  # as glibc's syslog(3) with LOG_PID (PostgreSQL's openlog)
            sock.send(f"<134>{time.strftime('%b %e %H:%M:%S')} postgres[{pid}]: {msg}".encode())
            time.sleep(0.002)

        short = "app@shop LOG:  duration: 0.010 ms  statement: SELECT 1"
        long = "app@shop LOG:  duration: 0.020 ms  statement: SELECT " + ", ".join(["2"] * 400)
        for msg in (short, short, short, long, long, long):
            send(4001, msg)
        send(4001, "[1] app@shop LOG:  duration: 0.030 ms  statement: SELECT 3")
        send(4001, "[2] \tFROM upk_items")
        send(4002, short)
        send(4001, "app@shop LOG:  statement: SELECT 'upk-end'")
        sock.close()
        for name in ("traditional", "rfc5424", "rfc3339"):
            Syslogd(tmp_path).wait_for(tmp_path / "out" / f"{name}.log", "upk-end")
    finally:
        daemon.terminate()
        daemon.wait(10)
    trad = (tmp_path / "out" / "traditional.log").read_text()
    assert "postgres[4001]: message repeated 2 times: [ app@shop LOG:  duration: 0.010 ms" in trad, trad
    assert re.search(r"message repeated 2 times: \[ app@shop LOG:  duration: 0.020 ms .{700,800}\]$", trad, re.M)
    assert re.search(r"^<134>1 \S+ \S+ postgres 4001 - - ", (tmp_path / "out" / "rfc5424.log").read_text(), re.M)
    for name in ("traditional", "rfc5424", "rfc3339"):
        rep = ours(tmp_path / "out" / f"{name}.log", "%u@%d ", "postgres")
        assert rep["unparsed"] == 0, (name, rep["unparsed_samples"])
        fps = {q["fingerprint"]: q["count"] for q in rep["most_frequent"]}
        assert fps == {"select ?": 4, "select " + ", ".join(["?"] * 400): 3, "select ? from upk_items": 1}, name
        assert list(rep["by_user"]) == ["app"] and rep["statements"]["count"] == 8, (name, rep["by_user"])


def test_a_busy_servers_log_read_in_pieces_gives_the_one_process_report(services_dir: Path, syslogd: Syslogd,
                                                                        tmp_path: Path) -> None:
    """A dozen backends logging multi-line statements at once: rsyslogd writes hundreds, at times thousands, of
    other lines between two chunks of one message.  Read in pieces by two processes, cut anywhere a message
    starts, each piece reads its messages' last chunks past its end and the next skips them: the report of one
    process reading it all.  (Before: each cut split the messages in flight there — on such a log, 180 pieces,
    1,590 lines unparsed and as many statements of a fingerprint cut short.)"""
    import threading

    from upkeeper.logs import parallel

    ident = f"upk{uuid.uuid4().hex[:8]}"
    prefix = "%q%u@%d "
    cluster = syslog_cluster(services_dir / f"pg-{ident}", prefix, ident)
    log = tmp_path / "postgresql.log"
    with logged(cluster, syslogd, ident, log):
        def client(k: int) -> None:
            with cluster.connect() as c:
                for i in range(600):
                    c.execute(f"SELECT {k} AS a,\n       {i} AS b\n  FROM generate_series(1, 1)\n WHERE true")

        clients = [threading.Thread(target=client, args=(k,)) for k in range(12)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
    one = ours(log, prefix, ident)
    assert one["unparsed"] == 0 and one["statements"]["count"] >= 7200
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=32 << 10,
                                 record_start=pgsyslog.RECORD_START)
    assert len(units) > 20
    partial, _ = parallel.scan("upkeeper.logs.pgsyslog", pgsyslog.PgSyslogOptions(log_line_prefix=prefix,
                                                                                   ident=ident),
                               units, workers=2, min_parallel=0)
    pieces = summarize(partial, top_n=1000)
    assert pieces["unparsed"] == 0, pieces["unparsed_samples"]
    assert figures(pieces) == figures(one)


def test_a_pid_only_prefix_keeps_each_backends_statement_with_its_duration(services_dir: Path, syslogd: Syslogd,
                                                                         tmp_path: Path) -> None:
    """log_line_prefix '%q%p ' (a pid and no time: the syslog line's stands in), log_statement = 'all' and
    log_duration = on, a slow statement of one backend around another backend's: the joiner writes the syslog
    line's time without a zone ('2026-12-07 08:00:01 4001 LOG:  …'), and the parser's %t took the pid for that zone
    — the lines had no pid, and the slow statement's duration was paired with the other backend's statement."""
    import threading

    ident = f"upk{uuid.uuid4().hex[:8]}"
    prefix = "%q%p "
    conf = (f"log_destination = 'syslog'\nsyslog_ident = '{ident}'\nlog_line_prefix = '{prefix}'\n"
            "log_statement = 'all'\nlog_duration = on\nlog_min_duration_statement = -1\n")
    cluster = PostgresCluster(services_dir / f"pg-{ident}", extra_conf=conf)
    log = tmp_path / "postgresql.log"
    with logged(cluster, syslogd, ident, log), cluster.connect() as slow, cluster.connect() as quick:
        for _ in range(3):
            t = threading.Thread(target=slow.execute, args=("SELECT pg_sleep(0.4) AS slow",))
            t.start()
            time.sleep(0.15)  # (its statement logged: the quick one comes within the slow one's sleep)
            quick.execute("SELECT 1 AS quick")
            t.join()
    text = log.read_text()
    assert re.search(r"LOG:  statement: SELECT pg_sleep.*\n.*LOG:  statement: SELECT 1 AS quick.*\n.*LOG:  duration",
                     text), "the backends' lines did not interleave as the test needs"
    for mine in (ours(log, prefix, ident), ours(syslogd.file(ident, iso=True), prefix, ident)):
        assert mine["unparsed"] == 0, mine["unparsed_samples"]
        fps = {q["fingerprint"]: q for q in mine["most_frequent"]}
        assert fps["select pg_sleep(?) as slow"]["count"] == 3 and fps["select ? as quick"]["count"] == 3, fps
        assert fps["select pg_sleep(?) as slow"]["total_ms"] >= 1200 and fps["select ? as quick"]["max_ms"] < 400, fps
        assert "(statement not in the log window)" not in fps, fps
