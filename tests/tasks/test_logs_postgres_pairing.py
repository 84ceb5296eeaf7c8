"""logs.postgres: bare durations (log_duration) with log_statement other than 'all', on a real server.

Every bare duration the server logs is counted somewhere — as its statement's, as parse/bind time, or unpaired —
never dropped: not those logged right before an error, not those of a session that ends, not those still waiting
for an "execute" line at the end of a run that has no next run.  With %i in log_line_prefix (the command tag:
PARSE and BIND while the extended protocol's Parse and Bind run) a statement sent with the extended protocol
counts once, its Parse and Bind as parse/bind time, whatever log_statement logs.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from upkeeper.logs.pglog import PgAccumulator, PgScanOptions, summarize
from upkeeper.sandbox.postgres import PostgresCluster

PLAIN = "%m [%p] "
TAGGED = "%m [%p] %i "
#: what the workload runs (and succeeds with): statements, and Parse/Bind messages that log a duration
STATEMENTS = 1 + 5 + 5 + 6 + 1 + 1 + 5
PARSE_BIND = 10 + 10 + 7 + 2 + 1 + 2 + 10
#: the statements log_statement = 'mod' logs that succeed: CREATE TABLE (DDL), the INSERTs and the UPDATEs
MOD_LOGGED = 1 + 5 + 5


def workload(c: psycopg.Connection[Any]) -> None:
    """Simple and extended protocol (unnamed and named statements, a pipeline), and statements failing at
    Parse, Bind and Execute right after statements that log_statement does not log."""
    c.execute("CREATE TABLE w (id int PRIMARY KEY, v text)")  # simple protocol: one duration
    for i in range(5):  # unnamed: Parse, Bind, Execute each log one
        c.execute("INSERT INTO w VALUES (%s, %s)", (i, "x"), prepare=False)
    for i in range(5):
        c.execute("SELECT v FROM w WHERE id = %s", (i,), prepare=False)
    for i in range(6):  # named: Parse once, then Bind and Execute
        c.execute("SELECT v FROM w WHERE id = %s AND v = %s", (i, "x"), prepare=True)
    c.execute("SELECT pg_sleep(0.05)")  # simple, and right before a simple statement that fails
    with pytest.raises(psycopg.errors.DivisionByZero):
        c.execute("SELECT 1/0")
    c.execute("SELECT pg_sleep(%s)", (0.05,), prepare=False)  # extended, right before a failure at Bind
    with pytest.raises(psycopg.errors.DivisionByZero):  # planned at Bind: its Parse logs a duration
        c.execute("SELECT 1/%s", (0,), prepare=False)
    with pytest.raises(psycopg.errors.UniqueViolation):  # fails in Execute: Parse and Bind log durations
        c.execute("INSERT INTO w VALUES (%s, %s)", (1, "dup"), prepare=False)
    with pytest.raises(psycopg.errors.UndefinedTable):  # fails at Parse: nothing logged before it
        c.execute("SELECT * FROM nosuch WHERE a = %s", (1,), prepare=False)
    with c.pipeline():
        for i in range(5):
            c.execute("UPDATE w SET v = %s WHERE id = %s", ("y", i), prepare=False)


@pytest.fixture(scope="module", params=[("none", PLAIN), ("none", TAGGED), ("mod", TAGGED), ("all", PLAIN),
                                        ("all", TAGGED)], ids=lambda p: f"{p[0]}-{'tag' if '%i' in p[1] else 'plain'}")
def logged(request: Any, services_dir: Path) -> tuple[str, str, Path, Path]:
    """(log_statement, prefix, the log while a session that ran a last statement is still open — read then —,
    the whole log once that session ended)."""
    mode, prefix = request.param
    cluster = PostgresCluster(services_dir / f"pg-pairing-{mode}-{len(prefix)}", extra_conf=f"""
log_duration = on
log_statement = '{mode}'
log_disconnections = on
lc_messages = 'C'
log_line_prefix = '{prefix}'
""")
    cluster.start()
    try:
        start = cluster.log.stat().st_size
        with cluster.connect() as c:
            workload(c)
        with cluster.connect() as c:  # a session still open when the log is read: its last durations wait
            c.execute("SELECT 42")
            c.execute("SELECT 43 + %s", (1,), prepare=False)
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            # (PostgreSQL logs a statement's duration before it answers: it is in the log by now)
            live = cluster.log.read_bytes()[start:]
        deadline = time.monotonic() + 30  # the session's end is logged once the server has seen the client go
        while not re.search(rb"\[%d\] [^\n]*LOG:  disconnection: " % pid, cluster.log.read_bytes()):
            assert time.monotonic() < deadline, "the session's end never reached the log"
            time.sleep(0.05)
        whole = cluster.log.read_bytes()[start:]
    finally:
        cluster.stop()
    d = services_dir / f"pairing-{mode}-{len(prefix)}"
    d.mkdir()
    (d / "live.log").write_bytes(live)
    (d / "whole.log").write_bytes(whole)
    return mode, prefix, d / "live.log", d / "whole.log"


def bare(log: Path) -> list[tuple[str, float]]:
    """The bare durations of the log: (the line's text before "LOG:", ms)."""
    return [(m.group(1).decode(), float(m.group(2)))
            for m in re.finditer(rb"(?m)^(.*?)LOG:  duration: ([\d.]+) ms$", log.read_bytes())]


def ours(log: Path, prefix: str) -> dict[str, Any]:
    acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
    acc.feed(log.read_bytes(), str(log), 0)
    return summarize(acc.partial(), top_n=1000)


def test_every_bare_duration_counts_once(logged: tuple[str, str, Path, Path]) -> None:
    """The durations logged right before an error (a simple statement's own, an extended one's Parse, a
    statement's Parse and Bind), and those of a session that ended, were dropped: now each counts, as its
    statement's, as parse/bind time or unpaired, and the totals are the log's."""
    mode, prefix, _live, whole = logged
    durs = bare(whole)
    assert len(durs) == STATEMENTS + PARSE_BIND + 5  # and the last session's: 3 statements, a Parse, a Bind
    st = ours(whole, prefix)["statements"]
    assert st["count"] + st["prepare_bind"]["count"] == len(durs)
    assert st["total_ms"] + st["prepare_bind"]["total_ms"] == pytest.approx(sum(ms for _, ms in durs), abs=0.01)
    # the two pg_sleep(0.05) right before a failing statement are statements, whatever log_statement logs
    assert sum(1 for q in st["unpaired"]["slowest"] if q["ms"] >= 50) == (0 if mode == "all" else 2)
    if mode == "all":
        sleeps = [q for q in ours(whole, prefix)["most_frequent"] if q["fingerprint"] == "select pg_sleep(?)"]
        assert sleeps[0]["count"] == 2 and sleeps[0]["max_ms"] >= 50


def test_the_command_tag_tells_parse_and_bind_from_statements(logged: tuple[str, str, Path, Path]) -> None:
    """With %i in log_line_prefix, a statement that log_statement does not log counts once (its Execute's
    duration), its Parse and Bind as parse/bind time: before, each of the three was an unpaired "statement"
    (3x the count, and the totals and p95 off).  Without %i nothing in the log tells them apart: all count."""
    mode, prefix, _live, whole = logged
    rep = ours(whole, prefix)
    st = rep["statements"]
    ran = STATEMENTS + 3  # the workload's and the last session's
    if "%i" in prefix:
        assert st["count"] == ran
        assert st["prepare_bind"]["count"] == PARSE_BIND + 2
        tags = bare(whole)
        assert st["prepare_bind"]["total_ms"] == pytest.approx(
            sum(ms for head, ms in tags if head.endswith(("PARSE ", "BIND "))), abs=0.01)
        logged_ok = {"none": 0, "mod": MOD_LOGGED, "all": ran}[mode]
        assert st["unpaired"]["count"] == ran - logged_ok
        assert st["unpaired"]["before_error"] == 0
    elif mode == "all":  # every statement logged: paired; the failed one's Parse (no "execute" line) is unpaired
        assert st["count"] == ran + 1
        assert st["unpaired"]["count"] == st["unpaired"]["before_error"] == 1
    else:
        assert st["count"] == ran + PARSE_BIND + 2 and st["prepare_bind"]["count"] == 0
        assert st["unpaired"]["before_error"] > 0


def test_a_run_that_is_not_incremental_counts_what_waits_at_the_end(cli: Any, make_config: Any,
                                                                    logged: tuple[str, str, Path, Path],
                                                                    tmp_path: Path) -> None:
    """The log read while a session is open: its last bare durations wait for an "execute" line that may come.
    An incremental run carries them to the next run, which counts them; a run with incremental: false (and
    `upkeeper logs postgres`) has no next run, and left them out of its totals.  Now it counts them."""
    mode, prefix, live, whole = logged
    durs = bare(live)

    def run(**options: Any) -> dict[str, Any]:
        cfg = make_config({
            "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # never contacted
            "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                "log_file": str(live), "log_line_prefix": prefix, "report_dir": str(tmp_path / "reports"),
                "html": False, **options}}}})
        res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
        assert res.code in (0, 1), res.output
        path = next(a["path"] for a in res.json()[0]["artifacts"] if a["format"] == "json")
        rep: dict[str, Any] = json.loads(Path(path).read_text())
        return rep

    rep = run(incremental=False)
    st = rep["statements"]
    checks = {f["check"]: f for f in rep["findings"]}
    assert "logs.postgres.check_failed" not in checks
    if st["unpaired"]["count"]:  # said, and why
        said = checks["logs.postgres.unpaired_durations"]
        assert said["data"]["before_error"] == st["unpaired"]["before_error"]
        assert ("logged right before an error" in said["message"]) == (st["unpaired"]["before_error"] > 0)
    assert st["count"] + st["prepare_bind"]["count"] == len(durs)
    assert st["total_ms"] + st["prepare_bind"]["total_ms"] == pytest.approx(sum(ms for _, ms in durs), abs=0.01)
    res = cli(["logs", "postgres", str(live), "--prefix", prefix, "--json"])
    assert res.code == 0, res.output
    one = res.json()["statements"]
    assert one["count"] + one["prepare_bind"]["count"] == len(durs)
    # incremental: the first run keeps them for the next one, which reads the session's end and counts them
    first = run()["statements"]
    live.write_bytes(whole.read_bytes())
    second = run()["statements"]
    assert first["count"] + first["prepare_bind"]["count"] + second["count"] + second["prepare_bind"]["count"] \
        == len(bare(whole))
    if mode != "all" and "%i" not in prefix:  # (waiting: the last two, with nothing telling what they are)
        assert first["count"] + first["prepare_bind"]["count"] == len(durs) - 2


def _figures(rep: dict[str, Any]) -> tuple[Any, ...]:
    st = rep["statements"]
    return (st["count"], st["prepare_bind"]["count"], {k: v for k, v in st["unpaired"].items() if k != "slowest"},
            {q["fingerprint"]: q["count"] for q in rep["most_frequent"]})


def test_the_same_figures_wherever_the_log_is_cut(logged: tuple[str, str, Path, Path]) -> None:
    """Two pieces scanned apart (parallel.scan's processes, fed out of order) or read by two runs (what waits
    carried in the job's state) give the one read's figures, at every cut between lines: the durations held at
    the cut are counted by what the backend logs after it (an error, its session's end, a statement)."""
    from upkeeper.logs import pglog

    _mode, prefix, _live, whole = logged
    buf = whole.read_bytes()
    one = summarize_pieces(prefix, [buf])
    cuts = [i + 1 for i, b in enumerate(buf) if b == 0x0A and buf[i + 1:i + 2] not in (b"\t", b"")]
    assert len(cuts) > 80
    for cut in cuts:
        pieces = [buf[:cut], buf[cut:]]
        assert _figures(summarize_pieces(prefix, pieces)) == _figures(one), cut
        # two runs: the first carries what waits at its end to the second
        reps = []
        before = None
        for k, piece in enumerate(pieces):
            acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
            acc.feed(piece, "log", 0 if k == 0 else cut)
            part = acc.partial()
            waiting = pglog.resolve(part, ["log"], before, carry=pglog.MAX_CARRIED_PIDS, final=k == 1)
            before = pglog.open_from_json(json.loads(json.dumps(pglog.open_to_json(waiting))))
            reps.append(summarize(part, top_n=1000))
        for key in ("count", "prepare_bind"):
            a, b = (r["statements"][key] for r in reps)
            total = one["statements"][key]
            assert (a + b if key == "count" else a["count"] + b["count"]) == (
                total if key == "count" else total["count"]), (cut, key)
        assert sum(r["statements"]["unpaired"]["count"] for r in reps) == one["statements"]["unpaired"]["count"], cut


def summarize_pieces(prefix: str, pieces: list[bytes]) -> dict[str, Any]:
    """One accumulator fed the pieces last first, each a unit of its own (as parallel.scan's main process)."""
    acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
    offs = [sum(len(x) for x in pieces[:k]) for k in range(len(pieces))]
    for off, piece in reversed(list(zip(offs, pieces, strict=True))):
        acc.start_unit("log", off, off + len(piece))
        acc.feed(piece, "log", off)
    return summarize(acc.partial(), top_n=1000)


@pytest.mark.parametrize("mode", ["none", "mod"])
def test_csvlog_and_jsonlog_tell_parse_and_bind_by_their_command_tag(services_dir: Path, mode: str) -> None:
    """csvlog and jsonlog records carry the command tag (command_tag, "ps": what %i writes) whatever the
    log_line_prefix: a statement log_statement does not log counts once there, its Parse and Bind as parse/bind
    time — where the stderr log of the same run, its prefix without %i, cannot tell them apart."""
    from upkeeper.logs import pgstruct

    cluster = PostgresCluster(services_dir / f"pg-pairing-structured-{mode}", extra_conf=f"""
log_duration = on
log_statement = '{mode}'
lc_messages = 'C'
log_line_prefix = '{PLAIN}'
log_destination = 'stderr,csvlog,jsonlog'
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql.log'
log_rotation_size = 0
""")
    cluster.start()
    try:
        with cluster.connect() as c:
            workload(c)
    finally:
        cluster.stop()  # (the collector writes every record before it exits)
    logs = cluster.data / "log"
    durs = bare(logs / "postgresql.log")
    assert len(durs) == STATEMENTS + PARSE_BIND
    for fmt, name in (("csvlog", "postgresql.csv"), ("jsonlog", "postgresql.json")):
        acc = pgstruct.make_accumulator(pgstruct.PgStructOptions(format=fmt))  # type: ignore[arg-type]
        acc.feed((logs / name).read_bytes(), name, 0)
        st = summarize(acc.partial(), top_n=1000)["statements"]
        assert (st["count"], st["prepare_bind"]["count"]) == (STATEMENTS, PARSE_BIND), fmt
        assert st["unpaired"]["count"] == STATEMENTS - (MOD_LOGGED if mode == "mod" else 0), fmt
        assert st["total_ms"] + st["prepare_bind"]["total_ms"] == pytest.approx(sum(ms for _, ms in durs), abs=0.01)
    plain = ours(logs / "postgresql.log", PLAIN)["statements"]
    assert plain["count"] + plain["prepare_bind"]["count"] == len(durs)
    assert plain["count"] > STATEMENTS
