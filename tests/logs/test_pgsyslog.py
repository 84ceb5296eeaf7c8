"""The syslog transform (upkeeper.logs.pgsyslog): PostgreSQL's messages as its write_syslog() cuts them and rsyslog
writes them, joined back into the stderr lines the server would have written."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.logs import pgsyslog
from upkeeper.logs.pglog import summarize

PG_SYSLOG_LIMIT = 900


def write_syslog(line: bytes, seq: int, sequence_numbers: bool, split: bool = True) -> list[bytes]:
    """What PostgreSQL's write_syslog() (src/backend/utils/error/elog.c) passes to syslog() for ``line`` (one
    message's whole text, as send_message_to_server_log() builds it: ending with a newline)."""
    out: list[bytes] = []
    if split and (len(line) > PG_SYSLOG_LIMIT or b"\n" in line):
        chunk_nr = 0
        while line:
            if line[:1] == b"\n":
                line = line[1:]
                continue
            nl = line.find(b"\n")
            buflen = min(nl if nl >= 0 else len(line), PG_SYSLOG_LIMIT)
            while 0 < buflen < len(line) and (line[buflen] & 0xC0) == 0x80:  # pg_mbcliplen: a character boundary
                buflen -= 1
            if buflen < len(line) and not line[buflen:buflen + 1].isspace():
                i = buflen - 1  # try to divide at a word boundary
                while i > 0 and not line[i:i + 1].isspace():
                    i -= 1
                if i > 0:
                    buflen = i
            chunk_nr += 1
            buf = line[:buflen]
            out.append(b"[%d-%d] %s" % (seq, chunk_nr, buf) if sequence_numbers else b"[%d] %s" % (chunk_nr, buf))
            line = line[buflen:]
    else:
        out.append(b"[%d] %s" % (seq, line) if sequence_numbers else line)
    return out


def rsyslog_escape(msg: bytes) -> bytes:
    """rsyslog's $EscapeControlCharactersOnReceive: a control character as '#' and its three octal digits."""
    return re.sub(rb"[\x00-\x1f]", lambda m: b"#%03o" % m[0][0], msg)


def header(ident: str, pid: int, second: int) -> bytes:
    return f"Dec  7 08:{second // 60 % 60:02d}:{second % 60:02d} db1 {ident}[{pid}]: ".encode()


def interleave(per_pid: dict[int, list[bytes]], order: Any, foreign: int = 0) -> bytes:
    """Each backend's syslog lines in its order, the backends' interleaved at random (``order``: a
    random.Random), and with ``foreign`` (non-zero) other programs' lines between."""
    queues = {pid: list(lines) for pid, lines in per_pid.items()}
    log = b""
    while queues:
        pid = order.choice(sorted(queues))
        log += header("postgres", pid, 1) + queues[pid].pop(0) + b"\n"
        if not queues[pid]:
            del queues[pid]
        if foreign and order.random() < 0.2:
            log += header("postgres-exporter", 77, 1) + b"[1-1] LOG:  not ours\n"
            log += b"Dec  7 08:00:01 db1 kernel: [1.2] eth0: link up\n"
    return log


words = st.text(alphabet="abcdefxyz0123456789é(),'*=", min_size=1, max_size=40)
long_word = st.integers(min_value=850, max_value=1300).map(lambda n: "w" * n)
sql_line = st.lists(st.one_of(words, words, words, long_word), min_size=1, max_size=40).map(" ".join)
statement = st.lists(sql_line, min_size=1, max_size=4).map("\n".join)


def stderr_form(prefix_values: bytes, sql: str, detail: str | None) -> bytes:
    """The message as send_message_to_server_log() builds it (append_with_tabs: a tab after each newline)."""
    msg = prefix_values + b"LOG:  duration: 1.500 ms  statement: " + sql.encode().replace(b"\n", b"\n\t") + b"\n"
    if detail is not None:
        msg += prefix_values + b"DETAIL:  " + detail.encode().replace(b"\n", b"\n\t") + b"\n"
    return msg


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.tuples(st.integers(min_value=1, max_value=3), statement,
                                   st.one_of(st.none(), statement)), min_size=1, max_size=8),
       sequence_numbers=st.booleans(), order=st.randoms(use_true_random=False), foreign=st.integers(0, 3),
       split=st.booleans(), native=st.booleans())
def test_messages_are_joined_back_as_the_server_writes_them(messages: list[tuple[int, str, str | None]],
                                                            sequence_numbers: bool, order: object, foreign: int,
                                                            split: bool, native: bool) -> None:
    """Any messages — lines longer than 900 bytes cut at spaces or inside a word (and before a multibyte
    character), multi-line statements, DETAIL lines — of backends whose lines interleave, with other programs'
    lines between, sequence numbers on or off, split or not (syslog_split_messages): each backend's messages come
    back whole, in order, as the server writes them to stderr (the syslog line's time and pid before each line of
    a prefix that has neither) — with the plain lines joined in C or every line in Python."""
    import random

    assert isinstance(order, random.Random)
    per_pid: dict[int, list[bytes]] = {}
    expected: dict[int, list[bytes]] = {}
    seqs: dict[int, int] = {}
    for pid, sql, detail in messages:
        seqs[pid] = seqs.get(pid, 0) + 1
        text = stderr_form(b"app@shop ", sql, detail)
        ts = b"2026-12-07 08:00:01 "
        expected.setdefault(pid, []).append(b"".join(
            ln if ln.startswith(b"\t") else ts + b"[%d] " % pid + ln for ln in text.splitlines(keepends=True)))
        per_pid.setdefault(pid, []).extend(rsyslog_escape(c) for c in
                                           write_syslog(text, seqs[pid], sequence_numbers, split))
    # interleave the backends' lines (each backend's in its order), and other programs' lines
    log = interleave(per_pid, order, foreign)
    j = pgsyslog.Joiner("%u@%d ", "postgres", native=native)
    j.year = (2026, 12)
    j.source = "x"
    out = j.feed(log, 0) + j.flush()
    got: dict[int, list[bytes]] = {}
    for block in re.split(rb"(?m)^(?=2026-12-07 08:00:01 \[\d+\] app@shop LOG:  )", out):
        if block:
            pid = int(re.match(rb"\S+ \S+ \[(\d+)\]", block)[1])  # type: ignore[index]
            got.setdefault(pid, []).append(block)
    assert got == expected


def test_rsyslog_escapes_are_undone_as_pgbadger_does() -> None:
    assert pgsyslog.unescape(b"#011SELECT 1#012#011FROM t") == b"\tSELECT 1\n\tFROM t"
    assert pgsyslog.unescape(b"a #0111") == b"a \t1"  # (always three digits)
    assert pgsyslog.unescape(b"#015 #043") == b"#015 #043"  # (others are left as they are)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("prefix", ["[%p] %u@%d ", "%q[%p] %u@%d "])
def test_a_prefix_with_a_bracket_is_not_taken_for_the_sequence_number(prefix: str, native: bool) -> None:
    """log_line_prefix '[%p] ' and syslog_sequence_numbers = off: '[4001] LOG: …' is the prefix, not a chunk.  So
    with '%q[%p] ' (%q: a session's lines go on past it): the bracket was taken for chunk 4001 and dropped."""
    j = pgsyslog.Joiner(prefix, "postgres", native=native)
    j.year = (2026, 12)
    j.source = "x"
    log = (b"Dec  7 08:00:01 db1 postgres[4001]: [4001] app@shop LOG:  duration: 1.0 ms  statement: SELECT 1\n"
           b"Dec  7 08:00:01 db1 postgres[4001]: [4001] app@shop LOG:  duration: 2.0 ms  statement: SELECT 2\n")
    assert j.feed(log, 0) + j.flush() == (b"2026-12-07 08:00:01 [4001] app@shop LOG:  duration: 1.0 ms  statement: "
                                          b"SELECT 1\n2026-12-07 08:00:01 [4001] app@shop LOG:  duration: 2.0 ms  "
                                          b"statement: SELECT 2\n")


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(("prefix", "bracket", "pid"), [
    ("%q[%p-%l] %u@%d ", "[4001-{n}]", ""), ("%q[%p-%l] ", "[4001-{n}]", ""),
    ("%q[%l-%p] %u@%d ", "[{n}-4001]", ""), ("%q[%l-%p] ", "[{n}-4001]", ""), ("%q[%l] %u@%d ", "[{n}]", "[4001] "),
])
def test_other_q_brackets_are_not_taken_for_the_sequence_number(prefix: str, bracket: str, pid: str,
                                                               native: bool) -> None:
    """Brackets after %q that look like PostgreSQL's [SEQ-N] or [N] (syslog_sequence_numbers = off): '[4001-3]'
    of '%q[%p-%l] ' was taken for chunk 3 of a message whose first chunks were missing, and each line was handed on
    as the syslog line it was, unparsed; '[3]' of '%q[%l] %u@%d ' for chunk 3 and dropped.  With sequence numbers on,
    the [SEQ-N] before the prefix is still PostgreSQL's, also when SEQ happens to equal the pid."""
    j = pgsyslog.Joiner(prefix, "postgres", native=native)
    j.year = (2026, 12)
    j.source = "x"
    session = prefix.endswith("%u@%d ")

    def line(sec: int, head: str, n: int, ms: int) -> bytes:
        return (f"Dec  7 08:00:0{sec} db1 postgres[4001]: {head}{bracket.format(n=n)} "
                f"{'app@shop ' if session else ''}LOG:  duration: {ms}.0 ms  statement: SELECT {ms}\n").encode()

    log = (line(1, "", 3, 1) + line(1, "", 4, 2) + b"Dec  7 08:00:02 db1 postgres[3999]: LOG:  checkpoint starting: time\n"
           + line(3, "[4001-1] ", 5, 3) + line(3, "[17-1] ", 6, 4))

    def want(sec: int, n: int, ms: int) -> bytes:
        return (f"2026-12-07 08:00:0{sec} {pid}{bracket.format(n=n)} {'app@shop ' if session else ''}LOG:  "
                f"duration: {ms}.0 ms  statement: SELECT {ms}\n").encode()

    checkpoint = f"2026-12-07 08:00:02 {'[3999] ' if pid else ''}LOG:  checkpoint starting: time\n".encode()
    assert j.feed(log, 0) + j.flush() == (want(1, 3, 1) + want(1, 4, 2) + checkpoint + want(3, 5, 3)
                                          + want(3, 6, 4))


def test_the_year_of_a_traditional_time_is_the_files_unless_its_month_is_later(tmp_path: Path) -> None:
    """Dec 31 lines in a file last written on Jan 1 2027 are of 2026; Jan 1 lines of 2027."""
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"Dec 31 23:59:59 db1 postgres[1]: [1-1] LOG:  duration: 1.0 ms  statement: SELECT 1\n"
                    b"Jan  1 00:00:01 db1 postgres[2]: [1-1] LOG:  duration: 1.0 ms  statement: SELECT 2\n")
    when = time.mktime((2027, 1, 1, 0, 0, 5, 0, 0, -1))
    os.utime(log, (when, when))
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix="", ident="postgres"))
    acc.start_unit(str(log), 0, None)
    acc.feed(log.read_bytes(), str(log), 0)
    rep = summarize(acc.partial())
    assert (rep["first"], rep["last"]) == ("2026-12-31 23:59:59", "2027-01-01 00:00:01")
    assert rep["statements"]["count"] == 2 and rep["unparsed"] == 0


def test_auto_tells_a_syslog_file_by_its_first_lines() -> None:
    assert pgsyslog.looks_like_syslog(b"Dec  7 08:00:01 db1 postgres[1]: [1-1] LOG:  x\n"
                                      b"2026-12-07T08:00:01.5+01:00 db1 kernel: y\n")
    assert pgsyslog.looks_like_syslog(b"<134>1 2026-12-07T08:00:01.5+01:00 db1 postgres 4001 - -  [1-1] LOG:  x\n")
    assert pgsyslog.looks_like_syslog(b"Dec 07 08:00:01.123456 db1 postgres[1]: [1-1] LOG:  x\n")
    assert not pgsyslog.looks_like_syslog(b"2026-12-07 08:00:01.123 UTC [4001] LOG:  x\n\tmore\n")


def test_a_prefix_without_time_or_pid_is_for_a_syslog_file_only(cli: object, make_config: Any,
                                                                  tmp_path: Path) -> None:
    """The syslog line's time and pid stand in for a prefix's (users of syslog often drop %t and %p, pgBadger's
    recommended syslog prefix is 'user=%u,db=%d '): accepted with format: syslog, refused with stderr, whose lines
    have only the prefix to tell them.  With format: auto (the default) the file decides: the option's check used
    to refuse such a prefix before the run could look at the file (the CLI already let the file decide)."""
    import pytest

    from upkeeper.tasks.logs.postgres import PostgresLogsOptions

    for fmt in ("syslog", "auto"):
        assert PostgresLogsOptions.model_validate({"format": fmt, "log_line_prefix": "%u@%d "})
    with pytest.raises(ValueError, match="has no %p"):
        PostgresLogsOptions.model_validate({"format": "stderr", "log_line_prefix": "%u@%d "})
    # (named as written: it was '%t [%p] %Z ', the syslog time and pid put before it)
    with pytest.raises(ValueError, match=r"log_line_prefix '%Z ': unknown escape %Z"):
        PostgresLogsOptions.model_validate({"format": "syslog", "log_line_prefix": "%Z "})
    with pytest.raises(ValueError, match=r"log_line_prefix '%Z ': unknown escape %Z"):
        PostgresLogsOptions.model_validate({"log_line_prefix": "%Z "})

    def job(log: Path, name: str) -> dict[str, Any]:
        cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                           "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db", "options": {
                               "log_file": str(log), "log_line_prefix": "user=%u,db=%d ", "syslog_ident": "postgres",
                               "incremental": False, "report_dir": str(tmp_path / "r")}}}}, name)
        res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])  # type: ignore[operator]
        assert res.code in (0, 1), res.output
        out: dict[str, Any] = res.json()[0]
        return out

    log = tmp_path / "postgresql.log"
    log.write_bytes(b"Dec  7 08:00:01 db1 postgres[4001]: [7-1] user=app,db=shop LOG:  duration: 12.5 ms  "
                    b"statement: SELECT 1\n"
                    b"Dec  7 08:00:02 db1 postgres[4001]: [8-1] user=app,db=shop ERROR:  division by zero\n")
    r = job(log, "syslog.yaml")
    assert r["status"] != "error" and r["metrics"]["statements"] == 1 and r["metrics"]["errors"] == 1, r
    # the same prefix on a log the server writes itself: the run says why it cannot read it
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"user=app,db=shop LOG:  duration: 12.5 ms  statement: SELECT 1\n")
    r = job(plain, "plain.yaml")
    assert r["status"] == "error", r
    assert "has no %p" in r["summary"] and f"{plain} reads as a stderr log (format: auto)" in r["summary"], r


def test_the_cli_reads_a_syslog_file(cli: object, tmp_path: Path) -> None:
    """upkeeper logs postgres FILE --format syslog --prefix '%u@%d ' --ident …; a wrong ident says which programs
    the file holds."""

    log = tmp_path / "messages"
    log.write_bytes(b"Dec  7 08:00:00 db1 kernel: [1.0] eth0: link up\n"
                    b"Dec  7 08:00:01 db1 pg15[4001]: [7-1] app@shop LOG:  duration: 12.5 ms  statement: SELECT *\n"
                    b"Dec  7 08:00:01 db1 pg15[4001]: [7-2] #011FROM orders WHERE id = 42\n"
                    b"Dec  7 08:00:02 db1 pg15[4001]: [8-1] app@shop ERROR:  relation \"ordres\" does not exist at "
                    b"character 15\n"
                    b"Dec  7 08:00:02 db1 pg15[4001]: [8-2] app@shop STATEMENT:  SELECT * FROM ordres\n")
    run: Any = cli
    r = run(["logs", "postgres", str(log), "--format", "syslog", "--prefix", "%u@%d ", "--ident", "pg15", "--json"])
    assert r.code == 0, r.output
    rep = r.json()
    assert rep["statements"]["count"] == 1 and rep["most_frequent"][0]["fingerprint"] == \
        "select * from orders where id = ?"
    assert rep["errors"]["by_sqlstate"] == {"42P01": 1} and rep["unparsed"] == 0
    assert rep["syslog_other"] == {"lines": 1, "idents": {"kernel": 1}}
    r = run(["logs", "postgres", str(log), "--format", "syslog", "--prefix", "%u@%d "])
    assert "none of the 5 syslog lines is of the program 'postgres'" in r.err and "pg15 (4)" in r.err, r.err
    # --format auto (the default) tells the file by its lines: pgBadger's syslog prefix, without %p or a time, is
    # accepted for it (it was refused before the file was looked at: "add [%p] to log_line_prefix")
    r = run(["logs", "postgres", str(log), "--prefix", "%u@%d ", "--ident", "pg15", "--json"])
    assert r.code == 0 and r.json()["format"] == "syslog" and r.json()["statements"]["count"] == 1, r.output
    stderr_log = tmp_path / "postgresql.log"
    stderr_log.write_bytes(b"app@shop LOG:  duration: 12.5 ms  statement: SELECT 1\n")
    r = run(["logs", "postgres", str(stderr_log), "--prefix", "%u@%d "])
    assert r.code != 0 and "has no %p" in r.err and "--format syslog" in r.err, r.err


def test_backends_that_logged_once_are_not_held_without_bound() -> None:
    """A server without connection pooling: a new pid per connection, each logging one message and leaving.  Their
    messages do not all wait for the end of the read: past MAX_PENDING the oldest are written."""
    j = pgsyslog.Joiner("%m [%p] ", "postgres")
    n = pgsyslog.MAX_PENDING + 10
    log = b"".join(b"Dec  7 08:00:01 db1 postgres[%d]: [1-1] 2026-12-07 08:00:01.000 UTC [%d] LOG:  connection "
                   b"received: host=[local]\n" % (pid, pid) for pid in range(1, n + 1))
    out = j.feed(log, 0)
    assert len(j.pending) <= pgsyslog.MAX_PENDING
    assert out.count(b"\n") == n - len(j.pending) and out.startswith(b"2026-12-07 08:00:01.000 UTC [1] LOG:")
    assert (out + j.flush()).count(b"\n") == n


def test_lines_of_no_program_are_skipped_and_lines_of_no_syslog_form_unparsed() -> None:
    """/var/log/messages: the daemon's own "last message repeated" lines (no tag) are skipped as other programs'
    lines are, and so are journalctl's markers in its output saved to a file (``-- Boot … --``: they were counted
    unparsed); a line that is no syslog line at all (a truncated write) is unparsed."""
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix="%u@%d ", ident="postgres"))
    acc.start_unit("x", 0, None)
    acc.feed(b"-- Logs begin at Mon 2026-12-07 07:00:00 UTC, end at Mon 2026-12-07 08:10:00 UTC. --\n"
             b"Dec  7 08:00:00 db1 last message repeated 3 times\n"
             b"Dec  7 08:00:01 db1 postgres[7]: [1-1] app@shop LOG:  duration: 1.0 ms  statement: SELECT 1\n"
             b"-- Boot 4f0e62a1b2c34d5e8f9a0b1c2d3e4f50 --\n"
             b"Dec  7 08:05:01 db1 postgres[9]: [1-1] app@shop LOG:  duration: 2.0 ms  statement: SELECT 2\n"
             b"garbage\n", "x", 0)
    rep = summarize(acc.partial())
    assert rep["statements"]["count"] == 2 and rep["unparsed"] == 1 and rep["lines"] == 3
    assert rep["syslog_other"] == {"lines": 3, "idents": {"(no tag)": 1, "(journalctl)": 2}}


def joined(log: bytes, prefix: str) -> bytes:
    j = pgsyslog.Joiner(prefix, "postgres")
    j.year = (2026, 12)
    j.source = "x"
    return j.feed(log, 0) + j.flush()


def test_a_chunk_without_its_message_is_unparsed_not_another_backends() -> None:
    """A chunk whose message's first chunks are not in the file (rsyslog dropped one under load; a UDP relay
    lost it) or not in the piece read: its own syslog line, unparsed — not a continuation line glued to the
    message written before it, another backend's (whose statement it changed: 'select b from t1')."""
    log = (b"Dec  7 08:00:01 db1 postgres[2]: [7-1] 2026-12-07 08:00:01.000 UTC [2] LOG:  duration: 2.000 ms  "
           b"statement: SELECT b\n"
           b"Dec  7 08:00:01 db1 postgres[1]: [6-3] #011FROM t1\n"
           b"Dec  7 08:00:01 db1 postgres[1]: [6-4] 2026-12-07 08:00:01.000 UTC [1] DETAIL:  parameters: $1 = '1'\n")
    out = joined(log, "%m [%p] ")
    assert out.split(b"\n")[0] + b"\n" in log
    assert b"2026-12-07 08:00:01.000 UTC [2] LOG:  duration: 2.000 ms  statement: SELECT b\n" in out
    assert b"\n\tFROM" not in out and b"\n2026-12-07 08:00:01.000 UTC [1] DETAIL" not in out
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix="%m [%p] ", ident="postgres"))
    acc.start_unit("x", 0, None)
    acc.feed(log, "x", 0)
    rep = summarize(acc.partial())
    assert [q["fingerprint"] for q in rep["most_frequent"]] == ["select b"] and rep["unparsed"] == 2
    # sequence numbers off: [N] of a message whose [1] is missing
    plain = (b"Dec  7 08:00:01 db1 postgres[2]: 2026-12-07 08:00:01.000 UTC [2] LOG:  duration: 2.000 ms  "
             b"statement: SELECT b\n"
             b"Dec  7 08:00:01 db1 postgres[1]: [2] #011FROM t1\n")
    assert joined(plain, "%m [%p] ").endswith(b"SELECT b\nDec  7 08:00:01 db1 postgres[1]: [2] #011FROM t1\n")


def test_a_prefix_that_starts_with_a_bracket_and_a_dash_is_not_a_chunk_number() -> None:
    """log_line_prefix '[%l-1] user=%u ' with syslog_sequence_numbers = off: '[5-1] user=app LOG: …' starts with
    the prefix, not PostgreSQL's [SEQ-N] (read so, every line was unparsed)."""
    log = (b"Dec  7 08:00:01 db1 postgres[1]: [5-1] user=app LOG:  duration: 1.000 ms  statement: SELECT 1\n"
           b"Dec  7 08:00:01 db1 postgres[1]: [6-1] user=app LOG:  duration: 2.000 ms  statement: SELECT 2\n"
           b"Dec  7 08:00:01 db1 postgres[1]: [1] [7-1] user=app ERROR:  division by zero\n"
           b"Dec  7 08:00:01 db1 postgres[1]: [2] [7-2] user=app STATEMENT:  SELECT 1/0\n")
    assert joined(log, "[%l-1] user=%u ") == (
        b"2026-12-07 08:00:01 [1] [5-1] user=app LOG:  duration: 1.000 ms  statement: SELECT 1\n"
        b"2026-12-07 08:00:01 [1] [6-1] user=app LOG:  duration: 2.000 ms  statement: SELECT 2\n"
        b"2026-12-07 08:00:01 [1] [7-1] user=app ERROR:  division by zero\n"
        b"2026-12-07 08:00:01 [1] [7-2] user=app STATEMENT:  SELECT 1/0\n")


def test_escaped_newlines_are_read_only_where_a_message_can_hold_one() -> None:
    """syslog_split_messages = off sends a message whole, its newlines as rsyslog's #012: read as newlines before
    a continuation line or a DETAIL … line; never before a line that would be a message of its own (a client's
    '#012… ERROR:' in a statement), and not at all in a log whose messages are cut into chunks."""
    whole = b"Dec  7 08:00:01 db1 postgres[1]: [5] app@shop ERROR:  boom#012app@shop STATEMENT:  SELECT 1#012#011FROM t#012\n"
    assert joined(whole, "%u@%d ") == (b"2026-12-07 08:00:01 [1] app@shop ERROR:  boom\n"
                                       b"2026-12-07 08:00:01 [1] app@shop STATEMENT:  SELECT 1\n\tFROM t\n")
    forged = b"Dec  7 08:00:01 db1 postgres[1]: [6] app@shop LOG:  statement: SELECT '#012app@shop ERROR:  x'\n"
    assert joined(forged, "%u@%d ").count(b"\n") == 1
    chunked = (b"Dec  7 08:00:01 db1 postgres[2]: [4-1] app@shop LOG:  statement: SELECT 1\n"
               b"Dec  7 08:00:01 db1 postgres[2]: [4-2] #011FROM t\n")
    assert joined(chunked + whole, "%u@%d ").count(b"\n") == 3  # (the #012 of a client's statement, then)


def test_other_daemons_forms_of_a_syslog_line() -> None:
    """Forms rsyslog here does not write (so built by hand): syslog-ng's frac_digits and journalctl's
    short-precise (fractions of a second on a traditional time), busybox syslogd's facility.priority before the
    tag.  Each line was skipped as a line of no program before."""
    for head in (b"Dec 07 08:00:01.123456 db1 postgres[1]: ", b"Dec  7 08:00:01.123 db1 postgres[1]: ",
                 b"Dec  7 08:00:01 db1 local0.info postgres[1]: "):
        out = joined(head + b"[3-1] app@shop LOG:  duration: 1.000 ms  statement: SELECT 1\n", "%u@%d ")
        assert out == b"2026-12-07 08:00:01 [1] app@shop LOG:  duration: 1.000 ms  statement: SELECT 1\n", head


def test_pieces_read_in_parallel_read_their_messages_last_chunks_past_their_end(tmp_path: Path) -> None:
    """A busy server: other backends' lines come between the chunks of a multi-line statement.  A big file is
    read in pieces by several processes; a piece starting at a line that starts a message split the messages in
    flight there — each read as a statement cut short and unparsed lines (2 workers on a synthetic 15 MB file, 64
    backends interleaving their chunks: 186 statements of the wrong fingerprint, 289 lines unparsed).  Each piece
    now reads its messages' last chunks past its end, the next skips them: the one-process report."""
    import random

    from upkeeper.logs import parallel
    from upkeeper.logs.pglog import PgPartial

    rnd = random.Random(7)
    seq: dict[int, int] = {}
    lines: list[bytes] = []
    for i in range(6000):
        pid = 100 + i % 40
        seq[pid] = seq.get(pid, 0) + 1
        h = b"Dec  7 08:00:01 db1 postgres[%d]: " % pid
        chunks = [b"[%d-1] app@shop LOG:  duration: 1.000 ms  statement: SELECT name," % seq[pid],
                  b"[%d-2] #011       qty" % seq[pid], b"[%d-3] #011  FROM upk_items WHERE id = %d" % (seq[pid], i)]
        for c in chunks:
            lines.append(h + c + b"\n")
            if rnd.random() < 0.3:  # another backend's one-line message between
                other = 200 + rnd.randrange(40)
                seq[other] = seq.get(other, 0) + 1
                lines.append(b"Dec  7 08:00:01 db1 postgres[%d]: [%d] app@shop LOG:  duration: 2.000 ms  "
                             b"statement: SELECT 1\n" % (other, seq[other]))
    log = tmp_path / "postgresql.log"
    log.write_bytes(b"".join(lines))
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=32 << 10,
                                 record_start=pgsyslog.RECORD_START)
    assert len(units) > 10
    opts = pgsyslog.PgSyslogOptions(log_line_prefix="%u@%d ", ident="postgres")
    partial, _ = parallel.scan("upkeeper.logs.pgsyslog", opts, units, workers=2, min_parallel=0)
    assert isinstance(partial, PgPartial)
    rep = summarize(partial)
    assert rep["unparsed"] == 0, rep["unparsed_samples"]
    assert {q["fingerprint"]: q["count"] for q in rep["most_frequent"]} == {
        "select name, qty from upk_items where id = ?": 6000, "select ?": len(lines) - 18000}


def test_a_live_file_of_every_program_does_not_hold_postgres_messages_back_for_hours(tmp_path: Path) -> None:
    """/var/log/messages, written every second by other programs, PostgreSQL logging an error an hour: the
    error's message was held back (left for the next run) while fewer than 200 lines *of PostgreSQL* followed it
    — for as many hours, run after run.  Only a message among the file's last lines may have chunks to come."""
    log = tmp_path / "messages"
    pg = b"Dec  7 08:00:01 db1 postgres[7]: [3-1] app@shop ERROR:  deadlock detected\n"
    others = b"".join(b"Dec  7 08:%02d:%02d db1 CRON[%d]: (root) CMD (true)\n" % (i // 60 % 60, i % 60, i)
                      for i in range(300))
    log.write_bytes(pg + others)  # (just written: the file is live)
    size = log.stat().st_size
    assert pgsyslog.complete_end(str(log), 0, size, "%u@%d ", "postgres") == size
    log.write_bytes(others + pg)  # the message among the last lines: its next chunk may come
    assert pgsyslog.complete_end(str(log), 0, size, "%u@%d ", "postgres") == len(others)


def test_a_live_files_message_whose_backend_was_descheduled_is_held_back(tmp_path: Path) -> None:
    """A busy server: a backend descheduled between two syslog() calls, rsyslogd wrote hundreds of other
    backends' lines (up to 2,900 seen) before its message's next chunk.  Its first chunk, 500 lines from the end
    of a file written a moment ago but within the last seconds of its lines' times, may have more to come: held
    back (it was read cut short, its rest then unparsed in the next run)."""
    log = tmp_path / "postgresql.log"
    head = b"Dec  7 08:00:01 db1 postgres[7]: [3-1] app@shop LOG:  duration: 1.000 ms  statement: SELECT a,\n"
    busy = b"".join(b"Dec  7 08:00:02 db1 postgres[%d]: [1] app@shop LOG:  duration: 1.000 ms  statement: SELECT 1\n"
                    % (100 + i) for i in range(500))
    log.write_bytes(head + busy)
    assert pgsyslog.complete_end(str(log), 0, len(head + busy), "%u@%d ", "postgres") == 0
    # a minute later in the file's own times: whole (its backend would have sent its next chunk by then)
    later = busy.replace(b"08:00:02", b"08:01:02")
    log.write_bytes(head + later)
    assert pgsyslog.complete_end(str(log), 0, len(head + later), "%u@%d ", "postgres") == len(head + later)


def test_a_live_file_with_a_line_of_no_real_time_is_read_not_a_traceback(tmp_path: Path) -> None:
    """The hold-back compares the lines' times: a line whose time is no time ('Jan 45 99:99:99', a damaged
    write) holds nothing back for its time, and raises nothing."""
    log = tmp_path / "postgresql.log"
    busy = b"".join(b"Dec  7 08:00:02 db1 postgres[%d]: [1] app@shop LOG:  duration: 1.000 ms  statement: SELECT 1\n"
                    % (100 + i) for i in range(300))
    log.write_bytes(b"Dec  7 08:00:01 db1 postgres[7]: [3-1] app@shop LOG:  statement: SELECT a,\n" + busy
                    + b"Jan 45 99:99:99 db1 postgres[8]: [1] app@shop LOG:  statement: SELECT 2\n")
    size = log.stat().st_size
    assert pgsyslog.complete_end(str(log), 0, size, "%u@%d ", "postgres") == size  # (pid 7: 301 lines back)


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.tuples(st.integers(min_value=1, max_value=4), statement,
                                   st.one_of(st.none(), statement)), min_size=2, max_size=10),
       sequence_numbers=st.booleans(), order=st.randoms(use_true_random=False),
       cuts=st.lists(st.floats(min_value=0.05, max_value=0.95), min_size=1, max_size=3),
       prefix=st.sampled_from(("%u@%d ", "%u@%d ", "%q[%p-%l] %u@%d ", "%q[%p] ", "%q%p ")))
def test_pieces_cut_anywhere_a_message_starts_give_the_whole_files_report(
        messages: list[tuple[int, str, str | None]], sequence_numbers: bool, order: object,
        cuts: list[float], prefix: str) -> None:
    """Interleaved backends' messages cut into pieces at lines where a message may start (as parallel.split_units
    cuts), each piece read by an accumulator of its own (as by another process): merged, the same statements
    and lines as one read of the file (also with a prefix's bracket, where a [SEQ-N] may equal the pid)."""
    import random
    import tempfile

    from upkeeper.logs.pglog import merge

    assert isinstance(order, random.Random)
    seqs: dict[int, int] = {}
    queues: dict[int, list[bytes]] = {}
    for pid, sql, detail in messages:
        seqs[pid] = seqs.get(pid, 0) + 1
        queues.setdefault(pid, []).extend(rsyslog_escape(c) for c in write_syslog(
            stderr_form(_prefix_values(prefix, True, pid, seqs[pid]), sql, detail), seqs[pid], sequence_numbers))
    log = interleave(queues, order)
    with tempfile.NamedTemporaryFile(suffix=".log") as fh:
        fh.write(log)
        fh.flush()
        opts = pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident="postgres")

        def report(bounds: list[int]) -> dict[str, object]:
            parts = []
            for a, b in zip(bounds, bounds[1:], strict=False):
                acc = pgsyslog.make_accumulator(opts)
                acc.start_unit(fh.name, a, b if b < len(log) else None)
                acc.feed(log[a:b], fh.name, a)
                parts.append(acc.partial())
            rep = summarize(merge(parts), top_n=1000)
            return {"statements": rep["statements"]["count"], "unparsed": rep["unparsed"],
                    "fps": {q["fingerprint"]: q["count"] for q in rep["most_frequent"]}}

        starts = [m.start() for m in re.finditer(rb"(?m)^", log) if 0 < m.start() < len(log)
                  and pgsyslog.RECORD_START.match(log, m.start())]
        bounds = sorted({starts[int(c * len(starts))] for c in cuts} if starts else set())
        assert report([0, *bounds, len(log)]) == report([0, len(log)])


# -- the join of the plain lines in C (upkeeper.logs._cut.syslog_join) against the Python's ----------------------

_HEADERS = ("Dec  7 08:00:0{s} db1 {ident}[{pid}]: ", "Dec 17 08:00:01.123 db1 {ident}[{pid}]: ",
            "Dec  7 08:00:0{s} db1 {ident}[{pid}]:", "2026-12-07T08:00:0{s}.5+01:00 db1 {ident}[{pid}]: ",
            "2026-12-07T08:00:01Z h {ident}[{pid}]: ", "2026-12-07T08:00:01+0100 h {ident}: ",
            "Dec  7 08:00:01 db1 {ident}: ", "Dec  7 08:00:01 db1 user.info {ident}[{pid}]: ",
            "Dec  7 08:00:01 db1  {ident}[{pid}]: ", "Dec 7 08:00:01 db1 {ident}[{pid}]: ",
            "Dec  7 08:00:01.5x db1 {ident}[{pid}]: ", "2026-12-07T08:00:01+01 h {ident}[{pid}]: ")
_IDENTS = ("postgres", "postgres", "postgres", "postgres-exporter", "kernel", "post:gres", "postgrex")
_PIDS = ("4001", "4001", "4002", "4003", "007", "0", "40x1", "")
_TEXTS = ("{p}LOG:  duration: 1.500 ms  statement: SELECT 1", "{p}ERROR:  boom", "#011FROM t WHERE a = 1",
          "{p}DETAIL:  parameters: $1 = '1'", "{p}STATEMENT:  SELECT 1/0", " AND b = 2", "\v c", "",
          "{p}LOG:  statement: SELECT '#012{p}ERROR:  x'", "{p}LOG:  a#012#011b", "#0111 x #01 #0#011",
          "w" * 900, "w" * 897 + "é", "x" * 1000 + " y", "{p}CONTEXT:  SQL function", "\tab", "message repeated")
_MSGS = ("[{seq}-{n}] {text}", "[{seq}-{n}] {text}", "[{seq}-{n}] {text}", "[{seq}] {text}", "[{seq}-{n}]",
         "[{seq}-0{n}] {text}", "[{seq}-{n}]#011{text}", "{text}", "message repeated 2 times: [ [{seq}-1] {text}]",
         " [{seq}-{n}] {text}", "[{seq}-{n}]  {text}", "[{seq}-1{n}0000000000] {text}")


@st.composite
def syslog_lines(draw: st.DrawFn, prefix_values: str) -> list[bytes]:
    """Lines of a syslog file: mostly a few backends' messages, one chunk or more, of every form the Python reads
    (other programs, no pid, facility.priority, repeated, [SEQ], escapes, long words …) and some mutated (NUL,
    a newline, a byte not UTF-8 …); half the time the backends' lines interleaved, each message's chunks in order
    (a join that took a chunk for the last message's, not its backend's, passed when chunks were always
    consecutive)."""
    groups: list[list[bytes]] = []  # a message's lines (or a line of no message)
    # (messages of one chunk only: no message is cut, so a "#012" may be a newline; else it never is)
    most = draw(st.sampled_from((1, 3, 3)))
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            groups.append([draw(st.sampled_from((b"", b"garbage", b"-- Boot 4f0e --",
                                                 b"Dec  7 08:00:00 db1 last message repeated 3 times")))])
            continue
        lines: list[bytes] = []
        groups.append(lines)
        head = draw(st.sampled_from(_HEADERS)).format(s=draw(st.integers(1, 3)), ident=draw(st.sampled_from(_IDENTS)),
                                                      pid=draw(st.sampled_from(_PIDS)))
        if kind < 6:  # the common case: a backend's message, its chunks in order
            head = _HEADERS[0].format(s=1, ident="postgres", pid=draw(st.sampled_from(_PIDS[:4])))
            seq = draw(st.integers(1, 3))
            first = draw(st.sampled_from((1, 1, 1, 1, 0)))  # ([SEQ-0]: its next chunk is [SEQ-1])
            bodies = [f"[{seq}-{n}] " + draw(st.sampled_from(_TEXTS if n > 1 or most == 1 else _TEXTS[:1])).format(
                p=prefix_values) for n in range(first, draw(st.integers(1, most)) + 1)]
        else:
            text = draw(st.sampled_from(_TEXTS)).format(p=prefix_values)
            bodies = [draw(st.sampled_from(_MSGS)).format(seq=draw(st.integers(1, 3)),
                                                          n=draw(st.sampled_from((1, 1, 1, 2, 3))), text=text)]
        for body in bodies:
            line = bytearray((head + body).encode())
            if draw(st.integers(0, 9)) == 0:
                at = draw(st.integers(0, len(line)))
                line[at:at] = draw(st.sampled_from((b" ", b"#011", b"#012", b"[", b"]", b":", b"-", b"0", b"\t",
                                                    b"\r", b"\x00", b"\xff", b"\n")))
            lines.append(bytes(line))
    if not draw(st.booleans()):
        return [ln for g in groups for ln in g]
    # backends' messages logged at once: other lines between a message's chunks (each message's in order)
    order = draw(st.randoms(use_true_random=False))
    out: list[bytes] = []
    while left := [g for g in groups if g]:
        out.append(order.choice(left).pop(0))
    return out


def _same_joins(log: bytes, prefix: str = "%u@%d ") -> bytes:
    """``log`` joined with the C join and in Python: the same text and state; the text."""
    out = []
    for native in (True, False):
        j = pgsyslog.Joiner(prefix, "postgres", native=native)
        j.year, j.source = (2026, 12), "x"
        j._times[b"Dec  7 08:00:01"] = b"2026-12-07 08:00:01"
        out.append((j.feed(log, 0), _state(j), j.flush(), j.native_lines))
    assert out[0][:3] == out[1][:3] and out[0][3] > 0
    return out[0][0] + out[0][2]


def test_the_c_join_equals_the_pythons_where_only_the_python_reads_a_line() -> None:
    """Lines the C join must leave to the Python, each after lines it takes: a "#012" in a log whose messages are
    not cut (a newline there), the next chunk of a [SEQ-0] chunk, a program whose name is as long as the ident,
    more than 20 other programs (counted as the Python counts them)."""
    head = b"Dec  7 08:00:01 db1 postgres[4001]: "
    out = _same_joins(head + b"[1-1] app@shop LOG:  x\n" + head + b"[2-1] app@shop LOG:  a#012#011b\n" + head +
                      b"[3-1] app@shop LOG:  c\n")
    assert b"LOG:  a\n2026-12-07 08:00:01 [4001] \tb\n" not in out and b"LOG:  a\n\tb\n" in out
    out = _same_joins(head + b"[1-1] app@shop LOG:  x\n" + head + b"[2-0] app@shop LOG:  y\n" + head +
                      b"[2-1] #011FROM t\n" + head + b"[3-1] app@shop LOG:  z\n")
    assert b"LOG:  y\n\tFROM t\n" in out
    _same_joins(head + b"[1-1] app@shop LOG:  x\n" + b"Dec  7 08:00:01 db1 postgrex[4001]: [2-1] app@shop LOG:  y\n")
    _same_joins(head + b"[1-1] app@shop LOG:  x\n" + b"".join(
        b"Dec  7 08:00:01 db1 prog%d[1]: hello\n" % k for k in range(30)) + b"Dec  7 08:00:01 db1 prog3[1]: x\n")


def _state(j: pgsyslog.Joiner) -> dict[str, Any]:
    return {k: getattr(j, k) for k in ("pending", "seq_on", "split", "seen", "skipped", "idents", "last", "_times",
                                       "first_offset")}


@settings(max_examples=500, deadline=None)
@given(data=st.data(), prefix=st.sampled_from(("%m [%p] %q%u@%d ", "%u@%d ", "%m ", "[%p] ", "%q[%p] %u@%d ",
                                                "%q[%l] %u@%d ", "[%l-1] %u@%d ")),
       cuts=st.lists(st.integers(0, 60), max_size=4), skip=st.integers(-1, 3000),
       max_pending=st.sampled_from((2, 3, 10_000)), warm=st.booleans())
def test_the_c_join_of_plain_lines_equals_the_pythons(data: st.DataObject, prefix: str, cuts: list[int], skip: int,
                                                      max_pending: int, warm: bool) -> None:
    """Whatever the lines, fed in whatever buffers: the same text, at the same offset, and the same state (waiting
    messages in the same order, backends seen, other programs' lines, the last line, the times' cache) with the
    C join of the plain lines as with every line read in Python.  (The times' cache warm or not: the C join leaves
    a line whose time is not in it to the Python.)"""
    values = {"%m [%p] %q%u@%d ": "2026-12-07 08:00:01.000 UTC [4001] app@shop ", "%u@%d ": "app@shop ",
              "%m ": "2026-12-07 08:00:01.000 UTC ", "[%p] ": "[4001] ", "%q[%p] %u@%d ": "[4001] app@shop ",
              "%q[%l] %u@%d ": "[3] app@shop ", "[%l-1] %u@%d ": "[3-1] app@shop "}[prefix]
    lines = data.draw(syslog_lines(values))
    eol = data.draw(st.sampled_from((b"\n", b"\n", b"\r\n")))
    log = eol.join(lines) + data.draw(st.sampled_from((eol, b"")))
    starts = sorted({0, *(sum(len(ln) + len(eol) for ln in lines[:c]) for c in cuts if c < len(lines))})
    if data.draw(st.booleans()):  # (a piece's skip_before just at a line: before it, or at it)
        skip = 1000 + sum(len(ln) + len(eol) for ln in lines[:data.draw(st.integers(0, len(lines)))])
    joiners = [pgsyslog.Joiner(prefix, "postgres", native=native) for native in (True, False)]
    assert (joiners[0].native is not None) == (prefix != "[%l-1] %u@%d ") and joiners[1].native is None
    saved = pgsyslog.MAX_PENDING
    pgsyslog.MAX_PENDING = max_pending
    try:
        for j in joiners:
            j.year, j.source, j.skip_before = (2026, 12), "x", skip
            if warm:  # (the common times converted: each line's first is the Python's else)
                j._times.update({b"Dec  7 08:00:0%d" % s: b"2026-12-07 08:00:0%d" % s for s in (1, 2, 3)})
        for a, b in zip(starts, [*starts[1:], len(log)], strict=True):
            got = [j.feed(log[a:b], 1000 + a) for j in joiners]
            assert got[0] == got[1]
            assert _state(joiners[0]) == _state(joiners[1])
            for j in joiners:
                j.first_offset = -1
        assert joiners[0].flush() == joiners[1].flush()
    finally:
        pgsyslog.MAX_PENDING = saved


def test_the_c_join_takes_the_common_lines_and_leaves_the_others() -> None:
    """A bench-like log (one chunk per message, a few in two) is read in C but for the lines only the Python reads:
    an RFC 5424 file, a prefix with a bracket, or the extension turned off read every line in Python."""
    log = b"".join(b"Dec  7 08:00:01 db1 postgres[%d]: [%d-1] 2026-12-07 08:00:01.000 UTC [%d] app@shop LOG:  "
                   b"duration: 0.1 ms  statement: SELECT %d\n" % (4000 + i % 4, i, 4000 + i % 4, i) for i in range(1, 1000))
    log += (b"Dec  7 08:00:01 db1 postgres[4001]: [300-1] 2026-12-07 08:00:01.000 UTC [4001] app@shop LOG:  "
            b"duration: 0.1 ms  statement: SELECT 1\n"
            b"Dec  7 08:00:01 db1 postgres[4001]: [300-2] #011FROM t\n")
    j = pgsyslog.Joiner("%m [%p] %q%u@%d ", "postgres")
    j.year, j.source = (2026, 12), "x"
    out = j.feed(log, 0) + j.flush()
    assert out.count(b"\n") == 1001 and out.endswith(b"SELECT 1\n\tFROM t\n")
    # (the first line: its time is not cached yet, the Python reads it)
    assert j.native_lines == 1000
    assert pgsyslog.Joiner("[%l-1] %u@%d ", "postgres").native is None
    assert pgsyslog.Joiner("%q[%p-%l] %u@%d ", "postgres").native is None
    assert pgsyslog.Joiner("%m [%p] ", "postgres", native=False).native is None
    # (a prefix's bracket of one number is never taken for a [SEQ-N], the C join's only lines: the bench's log with
    # '%q[%l] %u@%d ' was joined in Python since 0c67a5ee, 1.7x slower)
    log = b"".join(b"Dec  7 08:00:01 db1 postgres[%d]: [%d-1] [%d] app@shop LOG:  duration: 0.1 ms  statement: "
                   b"SELECT %d\n" % (4000 + i % 4, i, i, i) for i in range(1, 1000))
    j = pgsyslog.Joiner("%q[%l] %u@%d ", "postgres")
    j.year, j.source = (2026, 12), "x"
    assert (j.feed(log, 0) + j.flush()).count(b"\n2026-12-07 08:00:01 [4003] [7] app@shop LOG:  ") == 1
    assert j.native_lines == 998


@pytest.mark.skipif(pgsyslog._syslog_join is None, reason="built without the C extension")
def test_the_c_join_counts_another_programs_line_from_a_count_of_0_without_a_reference_too_many() -> None:
    """The C join adds 1 to the count of another program's lines; from a count of 0 (none so: counts start at 1)
    the sum is the cached 1 object, which it took one reference too many to (a leak: found in review)."""
    j = pgsyslog.Joiner("%u@%d ", "postgres")
    j.year = (2026, 12)
    j.source = "x"
    head = b"Dec  7 08:00:01 db1 postgres[4001]: [1-1] app@shop LOG:  duration: 1.500 ms  statement: SELECT 1\n"
    j.feed(head, 0)  # (the Python reads the first line of a time: the C join takes the next ones)
    line = b"Dec  7 08:00:01 db1 kernel[1]: hello\n"
    before = sys.getrefcount(1)
    for _ in range(2000):
        j.idents[b"kernel"] = 0
        j.feed(line, 0)
        assert j.idents[b"kernel"] == 1
    assert j.native_lines >= 2000
    assert sys.getrefcount(1) - before < 500


@pytest.mark.parametrize("bracket", ["[%p]", "[%p-%l]"])
def test_a_q_pid_prefix_keeps_each_backends_statement_with_its_duration(bracket: str) -> None:
    """log_line_prefix '%q[%p] %u@%d ' with log_statement and log_duration, two backends' lines interleaved: their
    '[PID]' was taken for a chunk number and dropped, with it the lines' only pid (the prefix has %p: none is put in),
    and half the durations were paired with the other backend's statement or none ('statement not in the log
    window').  A [SEQ] that happens to equal the pid (sequence numbers on) is still the sequence number.  So with
    '%q[%p-%l] ', whose lines were all handed on unparsed."""
    lines = []
    for i in range(5):
        for pid in (4001, 4002):
            b = bracket.replace("%p", str(pid)).replace("%l", str(10 * i + 3))
            lines.append(f"Dec  7 08:00:0{i} db1 postgres[{pid}]: {b} app@shop LOG:  statement: "
                         f"SELECT {pid - 4000}, {i}".encode())
        for pid in (4002, 4001):
            b = bracket.replace("%p", str(pid)).replace("%l", str(10 * i + 5))
            lines.append(f"Dec  7 08:00:0{i} db1 postgres[{pid}]: {b} app@shop LOG:  duration: {pid - 4000}.0 ms"
                         .encode())
    seq = bracket.replace("%p", "4003").replace("%l", "1")  # (sequence numbers on: [SEQ] or [SEQ-1], here 4003)
    lines.append(f"Dec  7 08:00:06 db1 postgres[4003]: {seq} {bracket.replace('%p', '4003').replace('%l', '7')} "
                 f"app@shop LOG:  duration: 9.0 ms  statement: SELECT 3".encode())
    prefix = f"%q{bracket} %u@%d "
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident="postgres"))
    acc.start_unit("x", 0, None)
    acc.feed(b"\n".join(lines) + b"\n", "x", 0)
    rep = summarize(acc.partial())
    assert rep["statements"]["count"] == 11 and rep["statements"]["total_ms"] == 24.0
    assert [(q["fingerprint"], q["count"], q["total_ms"]) for q in rep["slowest_total"]] == [
        ("select ?, ?", 10, 15.0), ("select ?", 1, 9.0)]
    assert rep["unparsed"] == 0


@pytest.mark.parametrize("prefix", ["%q%p ", "%q%p-%l "])
def test_the_syslog_time_has_no_zone_to_take_a_pid_for(prefix: str) -> None:
    """log_line_prefix '%q%p ' (a pid, no time: the syslog line's stands in) with log_statement and log_duration, two
    backends' lines interleaved: the joiner writes the header's time without a zone, '2026-12-07 08:00:01 4001 LOG:  …',
    and the parser's %t took the pid for that zone (%q: what follows may be missing) — the lines had no pid, and
    each duration was paired with the last statement of either backend."""
    lines = []
    for i in range(5):
        for pid in (4001, 4002):
            b = prefix.replace("%q", "").replace("%p", str(pid)).replace("%l", str(i + 1))
            lines.append(f"Dec  7 08:00:0{i} db1 postgres[{pid}]: [{2 * i + 1}-1] {b}LOG:  statement: "
                         f"SELECT {pid - 4000}, {i}".encode())
        for pid in (4002, 4001):
            b = prefix.replace("%q", "").replace("%p", str(pid)).replace("%l", str(i + 2))
            lines.append(f"Dec  7 08:00:0{i} db1 postgres[{pid}]: [{2 * i + 2}-1] {b}LOG:  duration: {pid - 4000}.0 ms"
                         .encode())
    lines.append(b"Dec  7 08:00:06 db1 postgres[3999]: [1-1] LOG:  checkpoint starting: time")
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident="postgres"))
    acc.start_unit("x", 0, None)
    acc.feed(b"\n".join(lines) + b"\n", "x", 0)
    rep = summarize(acc.partial())
    assert rep["statements"]["count"] == 10 and rep["statements"]["total_ms"] == 15.0
    assert [(q["fingerprint"], q["count"], q["total_ms"]) for q in rep["slowest_total"]] == [("select ?, ?", 10, 15.0)]
    assert rep["unparsed"] == 0


def test_the_syslog_times_escape_is_upkeepers_own() -> None:
    """The zoneless time the joiner writes has an escape of its own (pglog.SYSLOG_TIME, first in the effective prefix
    only): a user's prefix holding it is refused, and a message about the effective prefix shows it as the %t it is."""
    from upkeeper.logs import pglog
    from upkeeper.tasks.logs.postgres import PostgresLogsOptions

    for fmt in ("stderr", "syslog", "auto"):
        with pytest.raises(ValueError, match="NUL"):
            PostgresLogsOptions.model_validate({"format": fmt, "log_line_prefix": "%\0 [%p] "})
    with pytest.raises(pglog.PrefixError, match="unknown escape"):
        pglog.compile_prefix("[%p] %\0 ")
    with pytest.raises(pglog.PrefixError, match=r"^log_line_prefix '%t \[%p\] %Z ': unknown escape %Z$"):
        pglog.compile_prefix(pgsyslog.effective_prefix("%Z "))
    m = re.fullmatch(pglog.compile_prefix(pgsyslog.effective_prefix("%q%p ")), b"2026-12-07 08:00:01 4001 ")
    assert m is not None and m["pid"] == b"4001" and m["ts"] == b"2026-12-07 08:00:01"


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize(("prefix", "bracket"), [("%q[%p-%l] ", "[3-{n}] "), ("%q[%p-%l] %u@%d ", "[3-{n}] app@shop "),
                                                 ("%q[%l-%p] ", "[{n}-3] "), ("%q[%p] ", "[3] ")])
def test_a_chunk_whose_number_equals_the_pid_is_still_a_chunk(prefix: str, bracket: str, seq: bool,
                                                              native: bool) -> None:
    """A backend's message number SEQ of [SEQ-N] (or a chunk number N) that happens to equal its pid — a pooled
    connection logging every statement reaches it — is PostgreSQL's, also on the chunks after the first, which no
    prefix follows: '[3-2] #011FROM t' (sequence numbers off: '[3] #011WHERE b = 1') of backend 3 was taken for the
    prefix's bracket, the statement cut there and its next lines handed on as messages of their own (unparsed).
    The prefix's bracket starts a line of a message."""
    head = b"Dec  7 08:00:01 db1 postgres[3]: "
    p, q = bracket.format(n=9).encode(), bracket.format(n=10).encode()

    def pg(s: int, n: int) -> bytes:
        return head + (b"[%d-%d] " % (s, n) if seq else b"[%d] " % n)

    log = (pg(3, 1) + p + b"LOG:  statement: SELECT a\n" + pg(3, 2) + b"#011FROM t\n" + pg(3, 3)
           + b"#011WHERE b = 1\n" + pg(4, 1) + q + b"LOG:  duration: 1.0 ms\n" + pg(5, 1) + b"LOG:  x\n"
           + pg(5, 2) + b"#011y\n" + pg(5, 3) + b"#011z\n")
    j = pgsyslog.Joiner(prefix, "postgres", native=native)
    j.year, j.source = (2026, 12), "x"
    assert j.feed(log, 0) + j.flush() == (
        b"2026-12-07 08:00:01 " + p + b"LOG:  statement: SELECT a\n\tFROM t\n\tWHERE b = 1\n2026-12-07 08:00:01 "
        + q + b"LOG:  duration: 1.0 ms\n2026-12-07 08:00:01 LOG:  x\n\ty\n\tz\n")


def _prefix_values(prefix: str, session: bool, pid: int, line: int) -> bytes:
    """What PostgreSQL's log_line_prefix() writes for ``prefix`` (the escapes of _JOIN_PREFIXES; %q: a process of
    no session stops there)."""
    values = {"p": str(pid), "l": str(line), "u": "app", "d": "shop", "m": "2026-12-07 08:00:01.000 UTC"}
    out = ""
    for lit, esc in re.findall(r"([^%]*)(?:%(.))?", prefix):
        out += lit
        if esc == "q" and not session:
            break
        out += values.get(esc, "")
    return out.encode()


def _interleaves(out: bytes, expected: dict[int, list[bytes]]) -> bool:
    """``out`` is each backend's messages in its order, the backends' interleaved."""
    queues = list(expected.values())
    tried: set[tuple[int, ...]] = set()

    def rest(taken: tuple[int, ...], pos: int) -> bool:  # (taken: how many of each backend's messages are out)
        if pos == len(out):
            return all(n == len(q) for n, q in zip(taken, queues, strict=True))
        if taken in tried:
            return False
        tried.add(taken)
        return any(n < len(q) and out.startswith(q[n], pos)
                   and rest((*taken[:i], n + 1, *taken[i + 1:]), pos + len(q[n]))
                   for i, (n, q) in enumerate(zip(taken, queues, strict=True)))

    return rest((0,) * len(queues), 0)


#: statements with words like a bracket of PostgreSQL's or a prefix's
bracketed = st.lists(st.one_of(sql_line, st.sampled_from(("[4001]", "[3] x", "[4001-2]", "[1-4001] app@shop", "a@b"))),
                     min_size=1, max_size=4).map(lambda ws: " ".join(ws) if len(ws) % 2 else "\n".join(ws))
_JOIN_PREFIXES = ("%u@%d ", "%m [%p] %q%u@%d ", "[%p] %u@%d ", "%q[%p] ", "%q[%p] %u@%d ", "%q[%p-%l] ",
                  "%q[%p-%l] %u@%d ", "%q[%l-%p] ", "%q[%l-%p] %u@%d ", "%q[%l] %u@%d ", "%q%p ", "%q%p-%l ", "%p ",
                  "%q%u@%d %p ")


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(_JOIN_PREFIXES),
       messages=st.lists(st.tuples(st.sampled_from((4001, 4002, 4003)), st.booleans(), bracketed,
                                   st.one_of(st.none(), bracketed)), min_size=1, max_size=8),
       sequence_numbers=st.booleans(), split=st.booleans(), order=st.randoms(use_true_random=False),
       native=st.booleans(), rfc5424=st.booleans())
def test_every_prefix_is_joined_back_and_read_with_its_backends_pid(
        prefix: str, messages: list[tuple[int, bool, str, str | None]], sequence_numbers: bool, split: bool,
        order: object, native: bool, rfc5424: bool) -> None:
    """Prefixes of every kind (with and without %p and a time, starting with '[' or '%q[', with %q: processes of no
    session write only what comes before it), sequence numbers on or off, messages cut or sent whole: each
    backend's messages come back as the server writes them to stderr (the syslog line's time and pid before each
    line of a prefix without them), and the stderr parser reads each line with its backend's pid and the time."""
    from upkeeper.logs import pglog

    per_pid: dict[int, list[bytes]] = {}
    expected: dict[int, list[bytes]] = {}
    seqs: dict[int, int] = {}
    need_time, need_pid = pgsyslog.synthesized(prefix)
    line = re.compile(rb"^" + pglog.compile_prefix(pgsyslog.effective_prefix(prefix)) + rb"(?:LOG|DETAIL):  ")
    for pid, session, sql, detail in messages:
        seqs[pid] = seqs.get(pid, 0) + 1
        text = stderr_form(_prefix_values(prefix, session, pid, seqs[pid]), sql, detail)
        synth = (b"2026-12-07 08:00:01 " if need_time else b"") + (b"[%d] " % pid if need_pid else b"")
        expected.setdefault(pid, []).append(b"".join(
            ln if ln.startswith(b"\t") else synth + ln for ln in text.splitlines(keepends=True)))
        per_pid.setdefault(pid, []).extend(rsyslog_escape(c) for c in
                                           write_syslog(text, seqs[pid], sequence_numbers, split))
        # the stderr parser reads each line's time and pid (none: a process of no session, whose only %p is after %q)
        for ln in expected[pid][-1].splitlines():
            if not ln.startswith(b"\t"):
                m = line.match(ln)
                assert m is not None and m["ts"] == b"2026-12-07 08:00:01", ln
                has_pid = session or need_pid or "%q" not in prefix.split("%p")[0]
                assert m["pid"] == (b"%d" % pid if has_pid else None), ln
    j = pgsyslog.Joiner(prefix, "postgres", native=native)
    j.year, j.source = (2026, 12), "x"
    log = interleave(per_pid, order)
    if rfc5424:  # (rsyslog's RSYSLOG_SyslogProtocol23Format)
        log = re.sub(rb"(?m)^Dec  7 (08:00:01) db1 postgres\[(\d+)\]: ", rb"<134>1 2026-12-07T\1.5+01:00 db1 postgres \2 - - ",
                     log)
        assert log.startswith(b"<134>1 ")
    out = j.feed(log, 0) + j.flush()
    assert _interleaves(out, expected), out


@pytest.mark.parametrize("native", [True, False])
def test_a_whole_message_of_no_session_is_told_from_the_next_line_of_the_one_before(native: bool) -> None:
    """syslog_split_messages = off, Debian's log_line_prefix '%m [%p] %q%u@%d ': a logical replication worker (no
    session: nothing after %q) logs a conflict whose DETAIL holds an '@'.  Its [SEQ] (2, after the worker's [1]:
    read as [N] until a message cut into chunks says sequence numbers are on) was taken for the next chunk of the
    worker's message before — its first line no message's start: the prefix's %u@%d reached over the escaped
    newline into the DETAIL line ('ERROR:  … (ann' @ 'example.com) … [4001] ' DETAIL) — and the error was glued to
    it, not counted."""
    h = b"Dec  7 08:00:01 db1 postgres[4001]: "
    p = b"2026-12-07 08:00:01.000 UTC [4001] "
    err = (p + b'ERROR:  duplicate key value violates unique constraint "users_email_key"\n' + p
           + b"DETAIL:  Key (email)=(ann@example.com) already exists.\n" + p
           + b'CONTEXT:  processing remote data for replication origin "pg_16395" during message type "INSERT" for '
             b'replication target relation "public.users" in transaction 740, finished at 0/1575A70\n')
    started = p + b'LOG:  logical replication apply worker for subscription "sub" has started\n'
    log = (h + b"[1] " + started.replace(b"\n", b"#012") + b"\n" + h + b"[2] " + err.replace(b"\n", b"#012") + b"\n")
    j = pgsyslog.Joiner("%m [%p] %q%u@%d ", "postgres", native=native)
    j.year, j.source = (2026, 12), "x"
    assert j.feed(log, 0) + j.flush() == started + err
    acc = pgsyslog.make_accumulator(pgsyslog.PgSyslogOptions(log_line_prefix="%m [%p] %q%u@%d ", ident="postgres"))
    acc.start_unit("x", 0, None)
    acc.feed(log, "x", 0)
    assert summarize(acc.partial())["errors"]["by_sqlstate"] == {"23505": 1}


@pytest.mark.parametrize("native", [True, False])
def test_a_prefix_value_holding_an_escaped_newline_still_starts_a_message(native: bool) -> None:
    """A message sent whole is told from the next line of the message before by its first line — but a client's
    application_name may hold '#012' itself (rsyslog leaves a '#' as it is): where the first line up to it starts
    no message, the whole text is looked at, as before (else the backend's messages were glued together)."""
    h = b"Dec  7 08:00:01 db1 postgres[4001]: "
    p = b"2026-12-07 08:00:01.000 UTC [4001] etl#012job "
    log = (h + b"[1] " + p + b"LOG:  statement: SELECT 1#012\n" + h + b"[2] " + p + b"LOG:  duration: 1.0 ms#012\n")
    j = pgsyslog.Joiner("%m [%p] %a ", "postgres", native=native)
    j.year, j.source = (2026, 12), "x"
    assert j.feed(log, 0) + j.flush() == p + b"LOG:  statement: SELECT 1\n" + p + b"LOG:  duration: 1.0 ms\n"
