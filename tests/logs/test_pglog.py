"""PostgreSQL log parsing: prefixes, entry kinds, fingerprints, SQLSTATEs; bad input never crashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.logs.pglog import (
    PgAccumulator,
    PgScanOptions,
    PrefixError,
    compile_prefix,
    infer_sqlstate,
    summarize,
)
from upkeeper.logs.sqlfp import fingerprints, statement_kind


def scan(text: str, prefix: str = "%m [%p] ") -> dict:
    acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
    acc.feed(text.encode())
    return summarize(acc.partial())


def test_durations_multiline_and_fingerprints() -> None:
    log = (
        "2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 1.500 ms  statement: SELECT * FROM t WHERE id = 1\n"
        "2024-03-01 10:00:00.002 UTC [10] LOG:  duration: 2.500 ms  statement: SELECT *\n"
        "\tFROM t\n"
        "\tWHERE id = 42\n"
        "2024-03-01 10:00:00.003 UTC [11] LOG:  duration: 300.000 ms  execute <unnamed>: UPDATE t SET x = $1\n"
        "2024-03-01 10:00:00.004 UTC [11] DETAIL:  parameters: $1 = '5'\n"
        "2024-03-01 10:00:00.005 UTC [11] LOG:  duration: 0.100 ms  parse <unnamed>: UPDATE t SET x = $1\n"
        "2024-03-01 11:00:00.006 UTC [12] LOG:  statement: DELETE FROM t WHERE id IN (1, 2, 3)\n"
        "2024-03-01 11:00:00.007 UTC [12] LOG:  duration: 7.000 ms\n"
    )
    rep = scan(log)
    st_ = rep["statements"]
    assert st_["count"] == 4 and st_["fingerprints"] == 3
    top = {q["fingerprint"]: q for q in rep["slowest_total"]}
    sel = top["select * from t where id = ?"]
    assert sel["count"] == 2 and sel["total_ms"] == 4.0 and sel["max_ms"] == 2.5
    assert "WHERE id = 42" in sel["slowest"]
    assert top["update t set x = ?"]["max_ms"] == 300.0
    assert top["delete from t where id in (...)"]["count"] == 1  # log_statement + log_duration paired
    assert st_["prepare_bind"] == {"count": 1, "total_ms": 0.1}
    assert st_["percentiles"]["p50"] == 2.5 and st_["percentiles"]["max"] == 300.0
    assert rep["by_hour"] == {"2024-03-01 10:00": 3, "2024-03-01 11:00": 1}
    assert rep["unparsed"] == 0


def test_log_duration_pairs_with_execute_lines() -> None:
    """log_duration + log_statement = 'all' with the extended protocol: "execute <name>:" is the statement
    whose duration follows; the bare durations just before it are its Parse and Bind.  (A real server's log
    is tested in tests/tasks/test_logs_postgres.py.)"""
    log = (
        "2024-03-01 10:00:00.100 UTC [100] LOG:  statement: SELECT 1\n"
        "2024-03-01 10:00:00.101 UTC [100] LOG:  duration: 1.000 ms\n"
        "2024-03-01 10:00:00.200 UTC [100] LOG:  duration: 0.200 ms\n"  # Parse
        "2024-03-01 10:00:00.200 UTC [100] LOG:  duration: 0.050 ms\n"  # Bind
        "2024-03-01 10:00:00.300 UTC [100] LOG:  execute <unnamed>: SELECT * FROM orders\n"
        "\tWHERE id = $1\n"
        "2024-03-01 10:00:00.300 UTC [100] DETAIL:  parameters: $1 = '5'\n"
        "2024-03-01 10:00:00.450 UTC [100] LOG:  duration: 150.000 ms\n"
        "2024-03-01 10:00:00.500 UTC [101] LOG:  duration: 0.030 ms\n"  # Bind of a prepared statement
        "2024-03-01 10:00:00.600 UTC [101] LOG:  execute S_1: SELECT * FROM orders WHERE id = $1\n"
        "2024-03-01 10:00:00.900 UTC [101] LOG:  duration: 300.000 ms\n"
        "2024-03-01 10:00:00.910 UTC [101] LOG:  execute fetch from S_1/C_2: SELECT * FROM orders WHERE id = $1\n"
        "2024-03-01 10:00:00.920 UTC [101] LOG:  duration: 10.000 ms\n"
        # a failed statement logs no duration: the next statement's Parse is not its
        "2024-03-01 10:00:01.000 UTC [102] LOG:  duration: 0.100 ms\n"
        "2024-03-01 10:00:01.000 UTC [102] LOG:  execute <unnamed>: INSERT INTO t VALUES ($1)\n"
        "2024-03-01 10:00:01.000 UTC [102] ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n"
        "2024-03-01 10:00:01.000 UTC [102] STATEMENT:  INSERT INTO t VALUES ($1)\n"
        "2024-03-01 10:00:01.100 UTC [102] LOG:  duration: 0.400 ms\n"  # Parse
        "2024-03-01 10:00:01.100 UTC [102] LOG:  execute <unnamed>: SELECT 2\n"
        "2024-03-01 10:00:01.200 UTC [102] LOG:  duration: 2.000 ms\n"
        # log_statement = 'mod': durations of statements not logged are left out, not taken for Parse/Bind
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 9.000 ms\n"
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 9.000 ms\n"
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 9.000 ms\n"
        "2024-03-01 10:00:02.100 UTC [103] LOG:  statement: DELETE FROM t\n"
        "2024-03-01 10:00:02.200 UTC [103] LOG:  duration: 4.000 ms\n"
    )
    rep = scan(log)
    st_ = rep["statements"]
    assert st_["count"] == 9 and st_["total_ms"] == 494.0
    assert (st_["unpaired"]["count"], st_["unpaired"]["not_logged"], st_["unpaired"]["forgotten"]) == (3, 3, 0)
    rows = {q["fingerprint"]: q for q in rep["slowest_total"]}
    assert rows["(statement not in the log window)"]["total_ms"] == 27.0
    orders = rows["select * from orders where id = ?"]
    assert (orders["count"], orders["total_ms"], orders["max_ms"]) == (3, 460.0, 300.0)
    assert orders["example"] == "SELECT * FROM orders\nWHERE id = $1"
    assert "insert into t values (...)" not in rows and rows["select ?"]["count"] == 2
    assert rows["delete from t"]["total_ms"] == 4.0
    assert st_["prepare_bind"] == {"count": 5, "total_ms": 0.78}  # the failed INSERT was parsed too
    assert st_["percentiles"]["p95"] == 300.0
    assert rep["unparsed"] == 0


def test_the_html_report_shows_parse_bind_time_and_durations_without_their_statement() -> None:
    """Parse/Bind time and the durations whose statement is not known were only in the JSON report and a finding:
    the HTML report a DBA reads showed neither (the unpaired ones only as a row named by their placeholder)."""
    from upkeeper.logs.report_html import postgres_report

    log = (
        "2024-03-01 10:00:00.200 UTC [100] LOG:  duration: 0.200 ms\n"  # Parse
        "2024-03-01 10:00:00.200 UTC [100] LOG:  duration: 0.050 ms\n"  # Bind
        "2024-03-01 10:00:00.300 UTC [100] LOG:  execute <unnamed>: SELECT 1\n"
        "2024-03-01 10:00:00.450 UTC [100] LOG:  duration: 150.000 ms\n"
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 9.000 ms\n"  # statements log_statement did not log
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 7.000 ms\n"
        "2024-03-01 10:00:02.000 UTC [103] LOG:  duration: 5.000 ms\n"
        "2024-03-01 10:00:02.100 UTC [103] LOG:  statement: DELETE FROM t\n"
        "2024-03-01 10:00:02.200 UTC [103] LOG:  duration: 4.000 ms\n"
    )
    rep = scan(log)
    page = postgres_report(rep, [], title="t", subtitle="s", trends={}, objectives={}, history=False)
    assert "Durations that are no statement's run" in page
    assert "Parse and Bind of the extended protocol" in page and ">0.25<" in page
    assert "its statement was not logged (log_statement does not log it)" in page
    assert ">3<" in page and ">9<" in page  # three of them, the slowest 9 ms
    quiet = scan("2024-03-01 10:00:00.100 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 1\n")
    assert "no statement's run" not in postgres_report(quiet, [], title="t", subtitle="s", trends={},
                                                            objectives={}, history=False)


def test_errors_by_sqlstate_from_prefix_verbose_and_inference() -> None:
    log = (
        "2024-03-01 10:00:00 UTC [1] 42P01 ERROR:  relation \"nope\" does not exist at character 15\n"
        "2024-03-01 10:00:00 UTC [1] 42P01 STATEMENT:  SELECT * FROM nope\n"
        "2024-03-01 10:00:01 UTC [2] 00000 LOG:  checkpoint starting: time\n"
    )
    rep = scan(log, "%t [%p] %e ")
    assert rep["errors"]["by_sqlstate"] == {"42P01": 1} and rep["errors"]["inferred_sqlstates"] == 0
    assert rep["errors"]["classes"][0]["statements"] == ["SELECT * FROM nope"]
    verbose = "2024-03-01 10:00:00.1 UTC [1] ERROR:  22012: division by zero\n"
    assert scan(verbose)["errors"]["by_sqlstate"] == {"22012": 1}
    inferred = ("2024-03-01 10:00:00.1 UTC [1] ERROR:  duplicate key value violates unique constraint \"k\"\n"
                "2024-03-01 10:00:00.1 UTC [2] FATAL:  password authentication failed for user \"bob\"\n"
                "2024-03-01 10:00:00.1 UTC [3] ERROR:  something nobody has seen\n")
    rep = scan(inferred)
    assert rep["errors"]["by_sqlstate"] == {"23505": 1, "28P01": 1, "-----": 1}
    assert infer_sqlstate(b"canceling statement due to statement timeout") == "57014"
    # CREATE UNIQUE INDEX or REINDEX over duplicates: 23505 as PostgreSQL logs it with log_error_verbosity = verbose
    # (it was '-----', a finding logs.postgres.error.----- — the demo's workload makes one)
    assert infer_sqlstate(b'could not create unique index "coupons_code_key_ccnew"') == "23505"


def test_autovacuum_runs_of_every_kind_and_operator_errors() -> None:
    """Lines as PostgreSQL 15 wrote them (an aggressive run happened on template1 after a pgbench load): every
    autovacuum run counts, as pgBadger counts them ("automatic (aggressive )?vacuum (to prevent wraparound )?of
    table"; the wraparound wording is PostgreSQL's own, vacuumlazy.c)."""
    log = (
        '2026-12-05 06:22:18.899 UTC [8005] LOG:  automatic vacuum of table "postgres.public.t": index scans: 1\n'
        "\tpages: 0 removed, 11 remain, 11 scanned (100.00% of total)\n"
        '2026-12-05 06:22:19.530 UTC [8017] LOG:  automatic aggressive vacuum of table "template1.pg_catalog.pg_proc":'
        " index scans: 0\n"
        '2026-12-05 06:22:19.531 UTC [8017] LOG:  automatic aggressive vacuum to prevent wraparound of table '
        '"template1.pg_catalog.pg_class": index scans: 0\n'
        '2026-12-05 06:22:19.532 UTC [8017] LOG:  automatic vacuum to prevent wraparound of table "x.public.y": '
        "index scans: 0\n"
        '2026-12-05 06:22:19.533 UTC [8017] LOG:  automatic analyze of table "postgres.public.t"\n'
        "2026-12-05 06:22:19.534 UTC [8017] ERROR:  operator does not exist: text = smallint at character 32\n"
    )
    rep = scan(log)
    assert rep["autovacuum"] == {"vacuums": 4, "analyzes": 1} and rep["unparsed"] == 0
    assert rep["errors"]["by_sqlstate"] == {"42883": 1}


def test_messages_in_another_language_are_counted_not_ignored() -> None:
    """lc_messages = 'fr_FR.UTF-8' (lines as PostgreSQL 15 wrote them): neither we nor pgBadger understand
    them; the durations are counted as translated (the task says so) and the translated severities unparsed."""
    log = (
        "2026-12-05 06:24:41.072 UTC [10741] postgres@postgres LOG:  durée : 0.065 ms  exécute <unnamed>: "
        "UPDATE t SET v = $1 WHERE id = $2\n"
        "2026-12-05 06:24:41.072 UTC [10741] postgres@postgres DÉTAIL:  paramètres : $1 = 'x\n"
        "\ty', $2 = '0'\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres LOG:  durée : 121.324 ms, instruction : "
        "SELECT pg_sleep(0.12)\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres ERREUR:  division par zéro\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres INSTRUCTION :  SELECT 1/0\n"
        "2026-12-05 06:24:41.195 UTC [10741] postgres@postgres LOG:  Dauer: 0.036 ms  Anweisung: SELECT 1\n"
    )
    rep = scan(log, "%m [%p] %q%u@%d ")
    assert rep["statements"]["count"] == 0
    assert rep["translated_durations"] == 3 and rep["unparsed"] == 3
    english = scan("2026-12-05 06:24:41.195 UTC [1] LOG:  duration: 0.008 ms  plan:\n\tQuery Text: SELECT 1\n"
                   "2026-12-05 06:24:41.195 UTC [1] LOG:  duration: 0.010 ms  statement: SELECT 1\n")
    assert english["translated_durations"] == 0 and english["statements"]["count"] == 1


def test_locks_deadlocks_temp_files_checkpoints() -> None:
    log = (
        "2024-03-01 10:00:00.1 UTC [5] LOG:  process 5 still waiting for ShareLock on transaction 9 after 1000.5 ms\n"
        "2024-03-01 10:00:00.1 UTC [5] DETAIL:  Process holding the lock: 6. Wait queue: 5.\n"
        "2024-03-01 10:00:00.1 UTC [5] STATEMENT:  UPDATE a SET x = 1 WHERE id = 7\n"
        "2024-03-01 10:00:01.1 UTC [5] LOG:  process 5 acquired ShareLock on transaction 9 after 1500.25 ms\n"
        "2024-03-01 10:00:02.1 UTC [7] ERROR:  deadlock detected\n"
        "2024-03-01 10:00:02.1 UTC [7] DETAIL:  Process 7 waits for ShareLock on transaction 1; blocked by process 8.\n"
        "\tProcess 8 waits for ShareLock on transaction 2; blocked by process 7.\n"
        "2024-03-01 10:00:02.1 UTC [7] STATEMENT:  UPDATE a SET x = 2 WHERE id = 3\n"
        '2024-03-01 10:00:03.1 UTC [8] LOG:  temporary file: path "base/pgsql_tmp/pgsql_tmp8.0", size 1048576\n'
        "2024-03-01 10:00:03.1 UTC [8] STATEMENT:  SELECT * FROM big ORDER BY x\n"
        "2024-03-01 10:00:04.1 UTC [9] LOG:  checkpoint starting: wal\n"
        "2024-03-01 10:00:05.1 UTC [9] LOG:  checkpoint complete: wrote 120 buffers (0.7%); 0 WAL file(s) added, "
        "1 removed, 2 recycled; write=1.500 s, sync=0.020 s, total=1.600 s; sync files=5, longest=0.010 s, "
        "average=0.004 s; distance=16384 kB, estimate=16384 kB\n"
        "2024-03-01 10:00:05.2 UTC [9] LOG:  checkpoints are occurring too frequently (12 seconds apart)\n"
        "2024-03-01 10:00:05.2 UTC [9] HINT:  Consider increasing the configuration parameter \"max_wal_size\".\n"
    )
    rep = scan(log)
    assert rep["locks"]["waits"] == 1 and rep["locks"]["max_wait_ms"] == 1500.25
    assert rep["locks"]["queries"] == [{"fingerprint": "update a set x = ? where id = ?", "count": 1}]
    assert rep["deadlocks"]["count"] == 1 and "blocked by process 8" in rep["deadlocks"]["details"][0]
    assert rep["errors"]["by_sqlstate"] == {"40P01": 1}
    assert rep["temp_files"] == {"count": 1, "total_bytes": 1048576, "max_bytes": 1048576, "queries": [
        {"fingerprint": "select * from big order by x", "count": 1, "bytes": 1048576}]}
    cp = rep["checkpoints"]
    assert (cp["count"], cp["buffers"], cp["reasons"], cp["distance_kb"]) == (1, 120, {"wal": 1}, 16384)
    assert cp["too_frequent_warnings"] == 1 and cp["min_seconds_apart"] == 12
    assert rep["unparsed"] == 0


def test_prefixes() -> None:
    for prefix, line in (
        ("%m [%p] ", "2024-03-01 10:00:00.123 UTC [42] "),
        ("%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ", "2024-03-01 10:00:00 CET [42]: [3-1] user=bob,db=app,"
                                                             "app=psql,client=10.0.0.1 "),
        ("%m [%p] %q%u@%d ", "2024-03-01 10:00:00.123 UTC [42] "),  # %q: background processes stop here
        ("%n [%p] ", "1709287200.123 [42] "),
        ("%m [%p] %L ", "2024-03-01 10:00:00.123 UTC [42] 10.0.0.5 "),  # PostgreSQL 16's %L (local address)
        ("%m [%p] %L ", "2024-03-01 10:00:00.123 UTC [42] [local] "),
    ):
        rep = scan(line + "LOG:  duration: 5.000 ms  statement: SELECT 1\n", prefix)
        assert rep["statements"]["count"] == 1, prefix
        assert rep["unparsed"] == 0, prefix
    rep = scan("2024-03-01 10:00:00 CET [42]: [3-1] user=bob,db=app,app=psql,client=10.0.0.1 LOG:  duration: "
               "5.000 ms  statement: SELECT 1\n", "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ")
    assert rep["by_database"] == {"app": 1} and rep["by_user"] == {"bob": 1}
    with pytest.raises(PrefixError, match="%p"):
        compile_prefix("%m ")
    with pytest.raises(PrefixError, match="%p"):  # %x is no backend's key
        compile_prefix("%m %x ")
    with pytest.raises(PrefixError, match="unknown escape"):
        compile_prefix("%m [%p] %Z")


@pytest.mark.parametrize(("prefix", "head", "user", "db"), [
    # PostgreSQL pads with spaces: after the value for a negative width, before it for a positive one
    ("%m [%p] %-10u ", "2024-03-01 10:00:00.123 UTC [42] bob        ", "bob", None),
    ("%m [%5p] ", "2024-03-01 10:00:00.123 UTC [   42] ", None, None),
    ("%m [%-7p] %10u@%-10d ", "2024-03-01 10:00:00.123 UTC [42     ]        bob@app        ", "bob", "app"),
    ("%m [%-7p] %10u@%-10d ", "2024-03-01 10:00:00.123 UTC [1234567]  someone_long@a_long_database ",
     "someone_long", "a_long_database"),  # longer than the width: not cut
    ("%m [%-7p] %10u@%-10d ", "2024-03-01 10:00:00.123 UTC [42     ]           @           ", "", ""),  # no session
    ("%m [%-7p] %-u@%d ", "2024-03-01 10:00:00.123 UTC [42     ] bob@app ", "bob", "app"),  # "%-u": no padding
    ("%-30m [%p] %e ", "2024-03-01 10:00:00.123 UTC        [42] 00000 ", None, None),
])
def test_padded_prefix_escapes(prefix: str, head: str, user: str | None, db: str | None) -> None:
    rep = scan(head + "LOG:  duration: 5.000 ms  statement: SELECT 1\n", prefix)
    assert rep["statements"]["count"] == 1 and rep["unparsed"] == 0
    if user is not None:
        assert rep["by_user"] == {user or "(none)": 1}
    if db is not None:
        assert rep["by_database"] == {db or "(none)": 1}


_width = st.integers(-14, 14)
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=16)


@settings(max_examples=300, deadline=None)
@given(order=st.permutations(["m", "p", "u", "d", "e"]), widths=st.lists(_width, min_size=5, max_size=5),
       seps=st.lists(st.sampled_from([" ", "@", " [", "] ", ":", ",", "|"]), min_size=5, max_size=5),
       pid=st.integers(1, 4_194_304), user=_word, db=_word)
def test_padded_prefixes_read_as_postgresql_writes_them(order: list[str], widths: list[int], seps: list[str],
                                                        pid: int, user: str, db: str) -> None:
    """Any prefix of padded escapes, and a line written with it the way PostgreSQL's elog.c does
    (printf's %*s: a positive width pads on the left, a negative one on the right)."""
    values = {"m": "2024-03-01 10:00:00.123 UTC", "p": str(pid), "u": user, "d": db, "e": "22012"}
    prefix, head = "", ""
    for esc, w, sep in zip(order, widths, seps, strict=True):
        prefix += f"%{w or ''}{esc}{sep}"
        head += (values[esc].rjust(w) if w > 0 else values[esc].ljust(-w)) + sep
    acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
    acc.feed((head + "ERROR:  division by zero\n" + head + "LOG:  duration: 5.000 ms  statement: SELECT 1\n").encode())
    rep = summarize(acc.partial())
    assert rep["unparsed"] == 0 and rep["statements"]["count"] == 1, (prefix, head)
    assert rep["by_user"] == {user: 1} and rep["by_database"] == {db: 1}, (prefix, head)
    assert rep["errors"]["by_sqlstate"] == {"22012": 1} and rep["errors"]["inferred_sqlstates"] == 0


def test_wrong_prefix_counts_unparsed_with_samples() -> None:
    rep = scan("2024-03-01 10:00:00 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 1\n", "%m [%p] ")
    assert rep["unparsed"] == 1 and rep["statements"]["count"] == 0
    assert "SELECT 1" in rep["unparsed_samples"][0]


def test_fingerprints_like_pgbadger() -> None:
    qs = [b"UPDATE pgbench_accounts SET abalance = abalance + -3410 WHERE aid = 81421;",
          b"update pgbench_accounts set abalance = abalance + 12 where aid = 5",
          b"SELECT * FROM t WHERE name = 'O''Brien' AND id IN (1, 2, 3) -- note",
          b"INSERT INTO x (a, b) VALUES (1, $$x$$), (2, $tag$y$tag$)",
          b"select $1, t1.col2 /* c */ from t1", b"SELECT a-1, 1.5e3 FROM t"]
    fps = fingerprints(qs)
    assert fps[0] == fps[1] == b"update pgbench_accounts set abalance = abalance + ? where aid = ?"
    assert fps[2] == b"select * from t where name = ? and id in (...)"
    assert fps[3] == b"insert into x (a, b) values (...)"
    assert fps[4] == b"select ?, t1.col2 from t1"
    assert fps[5] == b"select a-?, ? from t"
    assert [statement_kind(f) for f in fps] == ["update", "update", "select", "insert", "select", "select"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=100).map(lambda s: s.replace("\n", " ")), max_size=30),
       st.sampled_from(["%m [%p] ", "%t [%p]: user=%u,db=%d ", "%m [%p] %q%u@%d "]))
def test_garbage_never_crashes(lines: list[str], prefix: str) -> None:
    rep = scan("".join(ln + "\n" for ln in lines), prefix)
    assert rep["lines"] == len(lines)
    assert rep["unparsed"] <= len(lines)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=20))
def test_fingerprints_never_crash_and_keep_order(qs: list[bytes]) -> None:
    assert len(fingerprints(qs)) == len(qs)


def test_per_backend_state_stays_bounded_on_a_long_log() -> None:
    """log_statement without log_duration on a server that starts a backend per connection: one remembered
    statement per pid would grow with the log; it is capped (MAX_WAITING statements, and past MAX_OPEN_PIDS
    WAITING_BYTES of them), and pairing still works for recent backends."""
    from upkeeper.logs.pglog import MAX_OPEN_PIDS, MAX_WAITING, WAITING_BYTES

    acc = PgAccumulator(PgScanOptions(log_line_prefix="%m [%p] "))
    chunk = 5000
    for start in range(0, 3 * MAX_WAITING, chunk):
        acc.feed("".join(f"2024-03-01 10:00:00.001 UTC [{pid}] LOG:  statement: SELECT {pid}\n"
                         for pid in range(start, start + chunk)).encode())
    acc.feed(f"2024-03-01 10:00:01.000 UTC [{3 * MAX_WAITING - 1}] LOG:  duration: 5.000 ms\n".encode())
    assert len(acc.last_statement) <= MAX_WAITING + chunk
    rep = summarize(acc.partial())
    assert rep["statements"]["count"] == 1 and rep["slowest_total"][0]["fingerprint"] == "select ?"
    # long statements: fewer, by their bytes (never fewer than MAX_OPEN_PIDS)
    acc = PgAccumulator(PgScanOptions(log_line_prefix="%m [%p] "))
    pad = "x" * 1900
    for start in range(0, 40_000, chunk):
        acc.feed("".join(f"2024-03-01 10:00:00.001 UTC [{pid}] LOG:  statement: SELECT '{pad}', {pid}\n"
                         for pid in range(start, start + chunk)).encode())
    acc.feed(b"2024-03-01 10:00:01.000 UTC [39999] LOG:  duration: 5.000 ms\n")
    held = sum(len(st[0]) for st in acc.last_statement.values())
    assert MAX_OPEN_PIDS <= len(acc.last_statement) <= WAITING_BYTES // 1900 and held <= WAITING_BYTES
    assert summarize(acc.partial())["statements"]["count"] == 1


def test_epoch_prefix_gives_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """%n (seconds since 1970) is a time like %m: the report has first/last and per-hour figures, in the
    local time of the machine (TZ), as pgBadger reads it."""
    import time

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        rep = scan("1709287200.123 [42] LOG:  duration: 5.000 ms  statement: SELECT 1\n"
                   "1709290800.456 [42] ERROR:  relation \"x\" does not exist\n"
                   "1709290801.000 [43] LOG:  checkpoint starting: time\n", "%n [%p] ")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert (rep["first"], rep["last"]) == ("2024-03-01 11:00:00", "2024-03-01 12:00:01")
    assert rep["by_hour"] == {"2024-03-01 11:00": 1}
    assert rep["errors"]["by_hour"] == {"2024-03-01 12:00": 1}
    assert rep["statements"]["count"] == 1 and rep["errors"]["total"] == 1 and rep["unparsed"] == 0


def test_log_duration_pairs_count_per_database_and_user() -> None:
    """A statement timed by log_duration (its bare "duration:" line paired with its "statement:" line) is a
    statement of the database and user of its session, as one logged by log_min_duration_statement is."""
    log = (
        "2024-03-01 10:00:00.100 UTC [100] app@shop LOG:  statement: SELECT 1\n"
        "2024-03-01 10:00:00.101 UTC [100] app@shop LOG:  duration: 1.000 ms\n"
        "2024-03-01 10:00:00.200 UTC [101] bob@crm LOG:  execute <unnamed>: SELECT 2\n"
        "2024-03-01 10:00:00.201 UTC [101] bob@crm LOG:  duration: 2.000 ms\n"
        "2024-03-01 10:00:00.300 UTC [102] app@shop LOG:  duration: 3.000 ms  statement: SELECT 3\n"
    )
    rep = scan(log, "%m [%p] %q%u@%d ")
    assert rep["statements"]["count"] == 3
    assert rep["by_database"] == {"shop": 2, "crm": 1}
    assert rep["by_user"] == {"app": 2, "bob": 1}


def test_statements_left_waiting_for_the_next_run_keep_no_secret_and_stay_bounded() -> None:
    """What a run leaves for the next one (statements waiting for their bare duration) goes into the job's
    state in the history: a password in such a statement is masked there, and at most ``limit`` backends
    (those that logged last) are kept; a damaged state is read as far as it is sound, never a crash."""
    from upkeeper.logs.pglog import open_from_json, open_to_json, resolve

    acc = PgAccumulator(PgScanOptions())
    acc.feed(b"".join(b"2024-03-01 10:00:00.000 UTC [%d] LOG:  statement: SELECT %d\n" % (pid, pid)
                      for pid in range(1, 51))
             + b"2024-03-01 10:00:00.050 UTC [98] LOG:  statement: SELECT '" + b"x" * 5000 + b"'\n"
             + b"2024-03-01 10:00:00.100 UTC [99] LOG:  statement: ALTER ROLE app PASSWORD 'sekrit-pw'\n")
    p = acc.partial()
    waiting = resolve(p)
    saved = open_to_json(waiting, limit=10)
    assert len(saved["pairs"]) == 10 and saved["pairs"][-1][0] == "99" and "sekrit-pw" not in repr(saved)
    assert len(saved["pairs"][-2][1][1]) == 500  # an example: its start
    saved["pairs"].pop(-2)
    assert open_from_json(None).pairs == {} and open_from_json({"pairs": 3, "waits": "x"}).waits == {}
    back = open_from_json({"pairs": [*saved["pairs"], "junk", [1, 2], ["7", ["fp", "q", ["src", "x", 0]], []],
                                     ["8", None, ["1.2.3"]]], "waits": [["5", "ShareLock on transaction 9"], [1]]})
    assert list(back.pairs) == [str(pid).encode() for pid in range(43, 51)] + [b"99"]
    assert back.waits == {b"5": b"ShareLock on transaction 9"}
    acc = PgAccumulator(PgScanOptions())
    acc.feed(b"2024-03-01 10:00:01.000 UTC [99] LOG:  duration: 3.000 ms\n", "log", 1000)
    p = acc.partial()
    assert resolve(p, ["log"], back).pairs == {pid: st for pid, st in back.pairs.items() if pid != b"99"}
    rep = summarize(p)
    assert rep["statements"]["count"] == 1 and rep["slowest_total"][0]["fingerprint"].startswith("alter role app")


def test_a_long_statement_keeps_its_duration_while_many_sessions_come_and_go() -> None:
    """log_statement = 'all' (durations only for slow statements) on a server without a connection pool: every
    session's last statement waits for a duration that never comes.  With log_disconnections, a session that
    ended waits for nothing: a long query's statement is not crowded out by 10,000 short sessions that
    started and ended while it ran, and gets its duration."""
    head = b"2024-03-01 10:00:00.000 UTC "
    lines = [head + b"[1] LOG:  statement: SELECT count(*) FROM big_report\n"]
    for pid in range(100, 10_200):
        lines += [head + b"[%d] LOG:  statement: SELECT 1\n" % pid,
                  head + b"[%d] LOG:  disconnection: session time: 0:00:00.003 user=app database=shop "
                  b"host=10.0.0.1 port=5000\n" % pid]
    lines.append(head + b"[1] LOG:  duration: 3600000.000 ms\n")
    acc = PgAccumulator(PgScanOptions())
    data = b"".join(lines)
    at = 0
    while at < len(data):  # in buffers of 64 kB: the state is bounded once per buffer
        end = data.index(b"\n", min(len(data) - 1, at + (64 << 10))) + 1
        acc.feed(data[at:end], "log", at)
        at = end
    rep = summarize(acc.partial())
    assert rep["statements"]["count"] == 1
    assert rep["slowest_total"][0]["fingerprint"] == "select count(*) from big_report"


def _waiting_log(pids: range, t: str = "10:00:01") -> bytes:
    """log_statement = 'all' with log_min_duration_statement: a statement per backend, none of them slow
    enough for its duration to be logged (connection-per-request clients, no log_disconnections)."""
    return b"".join(b"2024-03-01 %s.000 UTC [%d] LOG:  statement: SELECT 1\n" % (t.encode(), pid) for pid in pids)


@pytest.mark.parametrize("cut", [False, True])
@pytest.mark.parametrize("thousands", [11, 51])
def test_a_long_query_whose_statement_was_forgotten_still_counts(cut: bool, thousands: int) -> None:
    """A 5 s query's statement waits for its duration while 11,000 other backends log a statement that gets
    none: the oldest waiting statement (the long query's) was forgotten past 10,000, and its bare duration was
    dropped silently — 0 statements, no p95, the slowest query of the day invisible.  With the extended
    protocol, a forgotten execute's duration followed by the next Parse/Bind and execute was taken for
    Parse/Bind time.  Now 50,000 short statements are remembered (MAX_WAITING: they are bounded in bytes, 24
    MiB); past that (51,000 backends) both durations count as statements under a placeholder, 'forgotten', with
    their pid and time; fed in one accumulator or as pieces of the log (``cut``: units resolved in log order)."""
    from upkeeper.logs.pglog import merge, resolve

    head = (b"2024-03-01 10:00:00.000 UTC [1] LOG:  statement: SELECT pg_sleep(5)\n"
            b"2024-03-01 10:00:00.000 UTC [2] LOG:  execute <unnamed>: SELECT pg_sleep(4)\n")
    others = [_waiting_log(range(1000 + k * 1000, 2000 + k * 1000)) for k in range(thousands)]
    tail = (b"2024-03-01 10:00:05.000 UTC [1] LOG:  duration: 5000.000 ms\n"
            b"2024-03-01 10:00:05.000 UTC [2] LOG:  duration: 4000.000 ms\n"  # the forgotten execute's
            b"2024-03-01 10:00:05.001 UTC [2] LOG:  duration: 0.100 ms\n"  # Parse
            b"2024-03-01 10:00:05.002 UTC [2] LOG:  duration: 0.200 ms\n"  # Bind
            b"2024-03-01 10:00:05.003 UTC [2] LOG:  execute <unnamed>: SELECT 2\n"
            b"2024-03-01 10:00:05.004 UTC [2] LOG:  duration: 1.000 ms\n")
    bufs = [head, *others, tail]
    parts, off = [], 0
    acc = PgAccumulator(PgScanOptions())
    for buf in bufs:
        if cut:
            acc = PgAccumulator(PgScanOptions())
            acc.start_unit("log", off, off + len(buf))
        acc.feed(buf, "log", off)
        off += len(buf)
        if cut:
            parts.append(acc.partial())
    p = merge(parts[::-1]) if cut else acc.partial()
    resolve(p, ["log"])
    rep = summarize(p)
    st_ = rep["statements"]
    assert st_["count"] == 3 and st_["total_ms"] == 9001.0 and st_["percentiles"]["max"] == 5000.0
    # the forgotten statements were counted untimed, but for the two whose duration came after all (counted
    # unpaired: each statement once); the others still wait (for a next run) when the bound was not reached
    untimed = st_["untimed"]
    assert (untimed["count"], untimed["by_kind"]) == ((0, {}) if thousands == 11 else (1000, {"select": 1000}))
    assert sum(untimed["by_hour"].values()) == untimed["count"]  # (the two taken back there too)
    assert st_["prepare_bind"] == {"count": 2, "total_ms": 0.3}
    if thousands == 11:
        assert st_["unpaired"]["count"] == 0
        assert [(q["fingerprint"], q["max_ms"]) for q in rep["slowest_single"][:2]] == [
            ("select pg_sleep(?)", 5000.0), ("select ?", 1.0)]
        assert rep["slowest_single"][0]["count"] == 2  # pid 2's execute too
        return
    assert {k: v for k, v in st_["unpaired"].items() if k != "slowest"} == {
        "count": 2, "forgotten": 2, "not_logged": 0, "before_error": 0, "counted_as": "(statement not in the log window)"}
    assert st_["unpaired"]["slowest"] == [{"ms": 5000.0, "pid": "1", "time": "2024-03-01 10:00:05"},
                                          {"ms": 4000.0, "pid": "2", "time": "2024-03-01 10:00:05"}]


def test_a_statement_forgotten_at_the_run_boundary_still_counts_next_run() -> None:
    """Only MAX_CARRIED_PIDS backends' waiting statements are told to the next run: the long query's
    statement, logged before 5,000 others, was not, and the next run dropped its duration silently.  Now the
    next run knows that backend's statement was forgotten (its pid only): the duration counts, 'forgotten'; the
    bare durations of the backends left out are counted unpaired in the run that leaves them out."""
    from upkeeper.logs.pglog import MAX_CARRIED_PIDS, open_from_json, open_to_json, resolve

    acc = PgAccumulator(PgScanOptions())
    acc.feed(b"2024-03-01 10:00:00.000 UTC [1] LOG:  statement: SELECT pg_sleep(5)\n"
             b"2024-03-01 10:00:00.000 UTC [3] LOG:  duration: 0.300 ms\n"  # a Parse, its execute not logged yet
             + _waiting_log(range(1000, 6000)), "log", 0)
    p = acc.partial()
    waiting = resolve(p, ["log"], carry=MAX_CARRIED_PIDS)
    first = summarize(p)["statements"]
    assert first["unpaired"]["forgotten"] == 1  # pid 3's, left out
    # the statements left out are counted untimed in this run (5,001 waited, 1,000 are told to the next run)
    assert first["untimed"]["count"] == 5001 - MAX_CARRIED_PIDS
    state = open_from_json(open_to_json(waiting))
    assert len(state.pairs) == MAX_CARRIED_PIDS and b"1" in state.gone
    acc = PgAccumulator(PgScanOptions())
    acc.start_unit("log", 10**6, None)
    acc.feed(b"2024-03-01 10:00:05.000 UTC [1] LOG:  duration: 5000.000 ms\n"
             b"2024-03-01 10:00:05.000 UTC [5999] LOG:  duration: 2.000 ms\n", "log", 10**6)
    p = acc.partial()
    resolve(p, ["log"], state, carry=MAX_CARRIED_PIDS)
    st_ = summarize(p)["statements"]
    assert (st_["count"], st_["total_ms"], st_["unpaired"]["forgotten"]) == (2, 5002.0, 1)
    assert st_["untimed"]["count"] == 0  # (pid 1's statement: counted untimed by the run before, as it saw it)
    assert st_["unpaired"]["slowest"][0] == {"ms": 5000.0, "pid": "1", "time": "2024-03-01 10:00:05"}
    # a state saved before the durations' times were kept (a plain "ms") is read too
    old = open_from_json({"pairs": [["7", None, ["0.5"]]], "waits": []})
    assert old.pairs == {b"7": (None, [(b"0.5", None, None, None)])} and old.gone == {}


def test_waiting_statements_are_bounded_in_bytes_and_keep_the_whole_texts_fingerprint() -> None:
    """Every backend's statement waiting for its bare duration was kept whole: up to 10,000 of them, each up
    to 1 MiB of text (a 10 GB bound).  Now a long one keeps its first WAITING_TEXT bytes (all a report shows)
    and the fingerprint of its whole text, computed when it is logged: a cut text's fingerprint would differ
    (here the cut falls in a string, which then never ends, and the FROM clause is lost)."""
    import tracemalloc

    from upkeeper.logs.pglog import WAITING_TEXT

    def stmt(pid: int) -> bytes:
        return b"SELECT '" + b"x" * 64_000 + b"', %d AS n FROM big_table WHERE id = %d" % (pid, pid)

    whole_fp = fingerprints([stmt(1)])[0]
    assert fingerprints([stmt(1)[:WAITING_TEXT]])[0] != whole_fp and b"big_table" in whole_fp
    acc = PgAccumulator(PgScanOptions())
    log = b"".join(b"2024-03-01 10:00:00.000 UTC [%d] LOG:  statement: %s\n" % (pid, stmt(pid))
                   for pid in range(1, 301))  # 19 MB of statements waiting
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        acc.feed(log, "log", 0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del log
    assert held < 3_000_000, held  # 300 x (2,000 bytes + a fingerprint) and the scan's own
    acc.feed(b"2024-03-01 10:00:01.000 UTC [7] LOG:  duration: 50.000 ms\n", "log", 10**8)
    rep = summarize(acc.partial())
    row = rep["slowest_total"][0]
    assert (rep["statements"]["count"], row["fingerprint"], row["max_ms"]) == (1, whole_fp.decode(), 50.0)
    assert row["example"].startswith("SELECT 'xxx") and len(row["example"]) == 2000


def test_statements_logged_without_a_duration_are_counted_untimed() -> None:
    """log_statement = 'all' alone: a statement's duration is never logged.  Each statement counts once, untimed
    (not in the timed count, nor in the percentiles): superseded by its backend's next statement or execute, failed
    (an ERROR), its session ended, or still waiting where the log ends; one that gets its bare duration is timed,
    not untimed too (log_statement + log_duration or log_min_duration_statement: never counted twice)."""
    log = (b"2024-03-01 10:00:00.000 UTC [1] LOG:  statement: SELECT 1\n"
           b"2024-03-01 10:00:00.001 UTC [1] LOG:  statement: SELECT 2\n"
           b"2024-03-01 10:00:00.002 UTC [1] LOG:  duration: 3.000 ms\n"  # SELECT 2's
           b"2024-03-01 10:00:00.003 UTC [2] LOG:  execute <unnamed>: UPDATE t SET a = 1\n"
           b"2024-03-01 10:00:00.004 UTC [2] ERROR:  division by zero\n"
           b"2024-03-01 10:00:00.004 UTC [2] STATEMENT:  UPDATE t SET a = 1\n"
           b"2024-03-01 10:00:00.005 UTC [3] LOG:  statement: DELETE FROM t WHERE id = 7\n"
           b"2024-03-01 10:00:00.006 UTC [3] LOG:  disconnection: session time: 0:00:00.010 user=a database=b\n"
           b"2024-03-01 10:00:00.007 UTC [4] LOG:  statement: SELECT 3\n")
    lines = log.splitlines(keepends=True)
    for cut in range(len(lines)):  # in one piece, or two resolved in log order
        if cut == 0:
            acc = PgAccumulator(PgScanOptions())
            acc.feed(log, "log", 0)
            p = acc.partial()
        else:
            from upkeeper.logs.pglog import merge

            parts = []
            for off, buf in ((0, b"".join(lines[:cut])), (len(b"".join(lines[:cut])), b"".join(lines[cut:]))):
                acc = PgAccumulator(PgScanOptions())
                acc.start_unit("log", off, off + len(buf))
                acc.feed(buf, "log", off)
                parts.append(acc.partial())
            p = merge(parts[::-1])
        st_ = summarize(p)["statements"]
        assert (st_["count"], st_["total_ms"]) == (1, 3.0), cut
        untimed = st_["untimed"]
        assert untimed["count"] == 4 and untimed["by_kind"] == {"select": 2, "update": 1, "delete": 1}, cut
        assert {q["fingerprint"]: (q["count"], q["total_ms"], q["max_ms"]) for q in untimed["most_frequent"]} == {
            "select ?": (2, None, None), "update t set a = ?": (1, None, None),
            "delete from t where id = ?": (1, None, None)}, cut
        assert untimed["most_frequent"][0]["example"] == "SELECT 1"


def test_untimed_statements_count_by_hour_database_and_user_wherever_the_log_is_cut() -> None:
    """The statements logged without their duration were counted per fingerprint and kind only: a server logging
    with log_statement alone showed no statement per hour, database or user (pgBadger's per-hour, per-database and
    per-user query counts hold them).  Now statements.untimed has its own by_hour/by_database/by_user, by the
    hour, database and user of the "statement:"/"execute" line — never in the timed ones (no 0 ms) —, the same in
    one read, in two pieces resolved in log order, and across two runs (the statement left waiting by the first is
    counted by the second, under its own hour, database and user)."""
    from upkeeper.logs.pglog import merge, open_from_json, open_to_json, resolve

    prefix = "%m [%p] %q%u@%d "
    log = (b"2024-03-01 10:59:59.000 UTC [1] alice@shop LOG:  statement: SELECT 1\n"
           b"2024-03-01 11:00:00.001 UTC [1] alice@shop LOG:  statement: SELECT 2\n"
           b"2024-03-01 11:00:00.002 UTC [1] alice@shop LOG:  duration: 3.000 ms\n"  # SELECT 2's: timed
           b"2024-03-01 11:00:00.003 UTC [2] bob@crm LOG:  execute <unnamed>: UPDATE t SET a = 1\n"
           b"2024-03-01 11:00:00.004 UTC [2] bob@crm ERROR:  division by zero\n"
           b"2024-03-01 11:00:00.004 UTC [2] bob@crm STATEMENT:  UPDATE t SET a = 1\n"
           b"2024-03-01 12:00:00.005 UTC [3] bob@shop LOG:  statement: DELETE FROM t WHERE id = 7\n"
           b"2024-03-01 12:00:00.006 UTC [3] bob@shop LOG:  disconnection: session time: 0:00:00.010 user=bob "
           b"database=shop\n"
           b"2024-03-01 13:00:00.007 UTC [4] carol@crm LOG:  statement: SELECT 3\n")
    want = {"by_hour": {"2024-03-01 10:00": 1, "2024-03-01 11:00": 1, "2024-03-01 12:00": 1, "2024-03-01 13:00": 1},
            "by_database": {"crm": 2, "shop": 2}, "by_user": {"bob": 2, "alice": 1, "carol": 1}}
    lines = log.splitlines(keepends=True)
    for cut in range(len(lines)):
        head, tail = b"".join(lines[:cut]), b"".join(lines[cut:])
        pieces = [(0, log)] if cut == 0 else [(0, head), (len(head), tail)]
        parts = []
        for off, buf in pieces:
            acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
            acc.start_unit("log", off, off + len(buf))
            acc.feed(buf, "log", off)
            parts.append(acc.partial())
        p = merge(parts[::-1])
        resolve(p, ["log"], final=True)
        rep = summarize(p)
        untimed = rep["statements"]["untimed"]
        assert untimed["count"] == 4, cut
        assert {k: untimed[k] for k in want} == want, cut
        # the timed figures are the timed statement's alone
        assert (rep["by_hour"], rep["by_database"], rep["by_user"]) == (
            {"2024-03-01 11:00": 1}, {"shop": 1}, {"alice": 1}), cut
        if cut == 0:
            continue
        # two runs: the first leaves what waits for the second, which counts it
        runs = []
        state = None
        for k, (off, buf) in enumerate(pieces):
            acc = PgAccumulator(PgScanOptions(log_line_prefix=prefix))
            acc.start_unit("log", off, off + len(buf))
            acc.feed(buf, "log", off)
            p = acc.partial()
            waiting = resolve(p, ["log"], state, final=k == 1)
            state = open_from_json(json.loads(json.dumps(open_to_json(waiting))))
            runs.append(summarize(p)["statements"]["untimed"])
        for key, counts in want.items():
            got: dict[str, int] = {}
            for u in runs:
                for name, n in u[key].items():
                    got[name] = got.get(name, 0) + n
            assert got == counts, (cut, key)
