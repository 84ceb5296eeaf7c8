"""csvlog and jsonlog: the same records give the same report as the stderr format; bad records never crash.

Records are written here as PostgreSQL writes them (write_csvlog / write_jsonlog / send_message_to_server_log):
the fuzz renders random records in the three formats and compares the reports.  A real server's three logs
are compared in tests/tasks/test_logs_postgres.py.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upkeeper.logs import pgstruct
from upkeeper.logs.pglog import PgAccumulator, PgScanOptions, summarize
from upkeeper.logs.pgstruct import PgStructOptions, complete_csv, make_accumulator

PREFIX = "%m [%p] %e %q%u@%d "
#: report keys that count the input itself (lines, entries, bytes), not what is in it
OWN = ("lines", "entries", "bytes_read", "unparsed_pct")


@dataclass
class Rec:
    level: str
    message: str
    sqlstate: str = "00000"
    detail: str = ""
    hint: str = ""
    context: str = ""
    statement: str = ""
    position: int = 0
    pid: int = 100
    user: str = "app"
    db: str = "shop"
    ts: str = "2024-03-01 10:00:00.123 UTC"


def csv_line(r: Rec, columns: int = 26) -> str:
    """A csvlog record as write_csvlog writes it (text fields quoted, empty ones left empty)."""
    def lit(s: str) -> str:
        return '"' + s.replace('"', '""') + '"' if s else ""

    cols = [r.ts, lit(r.user), lit(r.db), str(r.pid), '"127.0.0.1:5000"', "65e1a2b3.64", "7", '"SELECT"',
            "2024-03-01 09:00:00 UTC", "3/7", "0", r.level, r.sqlstate, lit(r.message), lit(r.detail), lit(r.hint),
            "", "", lit(r.context), lit(r.statement), str(r.position) if r.position else "", "", '""',
            '"client backend"', "", "0"]
    return ",".join(cols[:columns]) + "\n"


def json_line(r: Rec) -> str:
    obj: dict[str, Any] = {"timestamp": r.ts, "user": r.user, "dbname": r.db, "pid": r.pid,
                           "error_severity": r.level, "state_code": r.sqlstate, "message": r.message}
    for key, v in (("detail", r.detail), ("hint", r.hint), ("context", r.context), ("statement", r.statement)):
        if v:
            obj[key] = v
    if r.position:
        obj["cursor_position"] = r.position
    obj["backend_type"] = "client backend"
    return json.dumps(obj) + "\n"


def stderr_lines(r: Rec) -> str:
    head = f"{r.ts} [{r.pid}] {r.sqlstate} {r.user}@{r.db} "

    def entry(level: str, text: str) -> str:
        return f"{head}{level}:  " + text.replace("\n", "\n\t") + "\n"

    out = entry(r.level, r.message + (f" at character {r.position}" if r.position else ""))
    for level, text in (("DETAIL", r.detail), ("HINT", r.hint), ("CONTEXT", r.context), ("STATEMENT", r.statement)):
        if text:
            out += entry(level, text)
    return out


def report_stderr(text: str) -> dict[str, Any]:
    acc = PgAccumulator(PgScanOptions(log_line_prefix=PREFIX))
    acc.feed(text.encode("utf-8", "surrogateescape"), "log", 0)
    return summarize(acc.partial(), top_n=1000)


def report(fmt: str, pieces: list[bytes]) -> dict[str, Any]:
    acc = make_accumulator(PgStructOptions(format=fmt))  # type: ignore[arg-type]
    off = 0
    for p in pieces:
        acc.feed(p, "log", off)
        off += len(p)
    return summarize(acc.partial(), top_n=1000)


def figures(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rep.items() if k not in OWN}


def sample_log() -> list[Rec]:
    return [
        Rec("LOG", "duration: 1.500 ms  statement: SELECT * FROM t WHERE id = 1"),
        Rec("LOG", 'duration: 2.500 ms  statement: SELECT *\n  FROM "t"\n WHERE note = \'a,b\n"c"\''),
        Rec("LOG", "duration: 300.000 ms  execute <unnamed>: UPDATE t SET x = $1", detail="parameters: $1 = '5'",
            pid=101),
        Rec("ERROR", 'relation "nope" does not exist', "42P01", statement="SELECT * FROM nope", position=15),
        Rec("ERROR", "deadlock detected", "40P01", pid=102, detail="Process 102 waits for ShareLock on transaction 7; "
            "blocked by process 103.\nProcess 103 waits for ShareLock on transaction 8; blocked by process 102.",
            hint="See server log for query details.", context="while updating tuple (0,2) in relation \"t\"",
            statement="UPDATE t SET x = 2 WHERE id = 3"),
        Rec("LOG", "process 104 still waiting for ShareLock on transaction 9 after 200.100 ms", pid=104,
            detail="Process holding the lock: 105. Wait queue: 104.", statement="UPDATE t SET y = 1 WHERE id = 1"),
        Rec("LOG", "process 104 acquired ShareLock on transaction 9 after 500.200 ms", pid=104,
            statement="UPDATE t SET y = 1 WHERE id = 1"),
        Rec("LOG", 'temporary file: path "base/pgsql_tmp/pgsql_tmp104.0", size 1400000', pid=104,
            statement="SELECT g FROM generate_series(1, 100000) g ORDER BY g DESC"),
        Rec("LOG", "checkpoint starting: immediate force wait", user="", db="", pid=50),
        Rec("LOG", "checkpoint complete: wrote 66 buffers (0.4%); 0 WAL file(s) added, 0 removed, 0 recycled; "
            "write=0.002 s, sync=0.001 s, total=0.010 s; sync files=20, longest=0.001 s, average=0.001 s; "
            "distance=300 kB, estimate=300 kB", user="", db="", pid=50),
        Rec("ERROR", "division by zero", "22012", statement="SELECT 1/0", ts="2024-03-01 11:00:00.001 UTC"),
        Rec("WARNING", "there is no transaction in progress", "25P01"),
        Rec("FATAL", 'password authentication failed for user "app"', "28P01",
            detail='Connection matched pg_hba.conf line 90: "host all all 0.0.0.0/0 md5"'),
    ]


def test_csvlog_and_jsonlog_give_the_stderr_report() -> None:
    recs = sample_log()
    want = report_stderr("".join(map(stderr_lines, recs)))
    assert want["unparsed"] == 0 and want["statements"]["count"] == 3 and want["deadlocks"]["count"] == 1
    for cols in pgstruct.CSV_COLUMNS:  # PostgreSQL <= 12, 13, 14+
        got = report("csvlog", ["".join(csv_line(r, cols) for r in recs).encode()])
        assert got["unparsed"] == 0 and got["lines"] == len(recs)
        assert figures(got) == figures(want), cols
    got = report("jsonlog", ["".join(map(json_line, recs)).encode()])
    assert got["unparsed"] == 0 and figures(got) == figures(want)
    # SQLSTATEs come from the records' own column, never guessed from the message
    assert got["errors"]["by_sqlstate"] == {"42P01": 1, "40P01": 1, "22012": 1, "28P01": 1, "25P01": 1}
    assert got["errors"]["inferred_sqlstates"] == 0


def test_a_record_cut_between_buffers_is_joined() -> None:
    """read_unit hands out buffers that end at a newline: one may end inside a quoted multi-line field."""
    text = "".join(csv_line(r) for r in sample_log()).encode()
    whole = report("csvlog", [text])
    lines = text.splitlines(keepends=True)
    for k in range(1, len(lines)):
        assert figures(report("csvlog", [b"".join(lines[:k]), b"".join(lines[k:])])) == figures(whole), k
    assert report("csvlog", [text])["unparsed"] == 0


def test_complete_csv_stops_outside_quotes() -> None:
    one = b'2024-03-01 10:00:00.123 UTC,"a",,1,"x\ny\n",z\n'
    assert complete_csv(one + one) == 2 * len(one)
    assert complete_csv(one + one[:30]) == len(one)
    assert complete_csv(one[:35]) == 0  # inside the quoted field, after its first line


def test_bad_records_are_counted_with_a_sample() -> None:
    good = csv_line(sample_log()[0])
    text = (good + "not a csvlog record\n" + good + '2024-03-01 10:00:00.123 UTC,"only","three"\n'
            + "\x00\x01garbage\n" + good)
    rep = report("csvlog", [text.encode()])
    assert rep["statements"]["count"] == 3
    assert rep["unparsed"] == 3 and rep["lines"] == 6
    assert rep["unparsed_samples"][0] == "log: not a csvlog record"
    jl = json_line(sample_log()[0])
    rep = report("jsonlog", [(jl + "{not json\n" + "[1, 2]\n" + '{"message": "no time"}\n' + jl).encode()])
    assert rep["statements"]["count"] == 2 and rep["unparsed"] == 3
    # a file that ends inside a record (a crash while writing): the rest is one bad record
    rep = report("csvlog", [(good + good[:60]).encode()])
    assert rep["statements"]["count"] == 1 and rep["unparsed"] == 1


def test_a_stray_quote_does_not_hold_the_rest_of_the_log(monkeypatch: Any) -> None:
    """A damaged csvlog (a stray quote outside any field) is parsed on once MAX_RECORD bytes are pending."""
    monkeypatch.setattr(pgstruct, "MAX_RECORD", 2000)
    good = csv_line(sample_log()[0]).encode()
    pieces = [good, b'garbage "quote\n'] + [good] * 100
    rep = report("csvlog", pieces)
    assert rep["statements"]["count"] >= 95 and rep["unparsed"] >= 1


# ---------------------------------------------------------------------------------------------
# fuzz: random records in the three formats give the same report
# ---------------------------------------------------------------------------------------------

_text = st.lists(st.sampled_from(list("ab ,\"'\n\t\\é$();:0123456789") + ["SELECT ", "\r\n", "  "]),
                max_size=25).map("".join)
_sql = st.builds(lambda a, b: f"SELECT {a} FROM t WHERE x = '{b}'", _text, _text)
_record = st.one_of(
    st.builds(lambda ms, q, pid: Rec("LOG", f"duration: {ms:.3f} ms  statement: {q}", pid=pid),
              st.floats(0, 5000), _sql, st.integers(1, 5)),
    st.builds(lambda code, msg, q, pos, pid: Rec("ERROR", msg.split("\n")[0] or "x", code, statement=q,
                                                 position=pos, pid=pid),
              st.sampled_from(["42P01", "22012", "23505", "XX000"]), _text, _sql, st.integers(0, 30),
              st.integers(1, 5)),
    st.builds(lambda d, q, pid: Rec("ERROR", "deadlock detected", "40P01", detail=d or "x", statement=q, pid=pid),
              _text, _sql, st.integers(1, 5)),
    st.builds(lambda n, q, pid: Rec("LOG", f'temporary file: path "base/pgsql_tmp/t{pid}.0", size {n}', statement=q,
                                    pid=pid), st.integers(0, 10**9), _sql, st.integers(1, 5)),
    st.builds(lambda ms, pid: Rec("LOG", f"process {pid} still waiting for ShareLock on transaction 9 after "
                                  f"{ms:.3f} ms", pid=pid), st.floats(0, 1000), st.integers(1, 5)),
    st.builds(lambda m, h: Rec("LOG", m or "x", detail=h), _text, _text),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record, max_size=25), st.sampled_from(pgstruct.CSV_COLUMNS), st.randoms(use_true_random=False))
def test_fuzz_three_formats_same_report(recs: list[Rec], columns: int, rnd: random.Random) -> None:
    want = figures(report_stderr("".join(map(stderr_lines, recs))))
    text = "".join(csv_line(r, columns) for r in recs).encode()
    lines = text.splitlines(keepends=True)
    cuts = sorted(rnd.sample(range(len(lines) + 1), min(3, len(lines) + 1)))
    pieces = [b"".join(lines[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    got = report("csvlog", pieces)
    assert got["unparsed"] == 0 and got["lines"] == len(recs)
    assert figures(got) == want
    assert figures(report("jsonlog", ["".join(map(json_line, recs)).encode()])) == want


_garbage = st.one_of(st.binary(max_size=60), st.sampled_from([b'"', b'""', b"\n", b",", b'",\n"', b"\x00"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_garbage, st.sampled_from([csv_line(r).encode() for r in sample_log()])), max_size=30),
       st.sampled_from(["csvlog", "jsonlog"]))
def test_fuzz_bad_input_never_crashes(parts: list[bytes], fmt: str) -> None:
    rep = report(fmt, [b"".join(parts)])
    assert rep["unparsed"] <= rep["lines"]
    assert len(rep["unparsed_samples"]) <= 5


def test_csv_writer_agrees_with_the_hand_written_records() -> None:
    """csv_line quotes as PostgreSQL does; Python's csv module reads back the same fields."""
    r = sample_log()[1]
    (row,) = list(csv.reader(io.StringIO(csv_line(r), newline="")))
    assert row[13] == r.message and len(row) == 26


def test_parallel_scan_cuts_a_csvlog_between_records(tmp_path: Any) -> None:
    """Helper processes and many units: pieces begin at record starts, never inside a multi-line field."""
    from upkeeper.logs import parallel

    rnd = random.Random(5)
    recs = []
    for i in range(6000):
        q = "SELECT *\n" + "\n".join(f"  -- line {k}\n  AND c{k} = {rnd.randint(0, 9)}" for k in range(rnd.randint(0, 6)))
        recs.append(Rec("LOG", f"duration: {rnd.random():.3f} ms  statement: {q}", pid=i % 50))
        if i % 100 == 0:
            recs.append(Rec("ERROR", "division by zero", "22012", statement="SELECT 1/0\n-- from the job", pid=i % 50))
    buf = "".join(csv_line(r) for r in recs).encode()
    log = tmp_path / "postgresql.csv"
    log.write_bytes(buf)
    units = parallel.split_units(str(log), 0, len(buf), final=True, label=str(log), unit=len(buf) // 9,
                                 record_start=pgstruct.RECORD_START)
    assert len(units) >= 8
    assert all(pgstruct.RECORD_START.match(buf, u.start) for u in units)
    part, _ = parallel.scan("upkeeper.logs.pgstruct", PgStructOptions(format="csvlog"), units, workers=2,
                            min_parallel=0)
    got = summarize(part, top_n=1000)
    want = report("csvlog", [buf])
    assert got["unparsed"] == 0 and got["lines"] == len(recs)
    assert got["statements"]["count"] == want["statements"]["count"] == 6000
    assert got["statements"]["fingerprints"] == want["statements"]["fingerprints"]
    assert got["errors"]["by_sqlstate"] == want["errors"]["by_sqlstate"] == {"22012": 60}


def test_bytes_of_another_encoding_are_kept() -> None:
    """A LATIN1 or SQL_ASCII database logs its statements' bytes as they are, not UTF-8: still records."""
    r = Rec("LOG", "duration: 2.000 ms  statement: SELECT 'caf\udce9' AS x")  # b"caf\xe9": latin-1 e acute
    for fmt, line in (("csvlog", csv_line(r)), ("jsonlog", json_line(r).replace("\\udce9", "\udce9"))):
        rep = report(fmt, [line.encode("utf-8", "surrogateescape")])
        assert rep["unparsed"] == 0 and rep["statements"]["count"] == 1, fmt
        assert rep["slowest_total"][0]["example"] == "SELECT 'caf\ufffd' AS x", fmt


_pw = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e, blacklist_characters="'$\\"),
              min_size=3, max_size=20)


@settings(max_examples=150, deadline=None)
@given(pw=_pw, form=st.sampled_from(["'{}'", "E'{}'", "U&'{}'", "$${}$$", "$pw${}$pw$"]),
       place=st.sampled_from(["duration", "error", "detail", "context"]), fmt=st.sampled_from(["csvlog", "jsonlog"]),
       cut=st.booleans())
def test_fuzz_a_password_in_a_record_never_reaches_the_report(pw: str, form: str, place: str, fmt: str,
                                                              cut: bool) -> None:
    """A role's password, in whichever string-constant form, wherever the record holds the statement (a
    duration line, an error's STATEMENT, DETAIL or CONTEXT) or in a damaged record kept as a sample, is not in
    the report (redact_obj: what the task and the CLI apply to it)."""
    from upkeeper.redact import redact_obj

    pw = "Zq#" + pw  # (no text of the record holds "Zq#")
    stmt = f"ALTER ROLE app PASSWORD {form.format(pw)} VALID UNTIL 'infinity'"
    rec = {"duration": Rec("LOG", f"duration: 1.5 ms  statement: {stmt}"),
           "error": Rec("ERROR", "role \"app\" does not exist", "42704", statement=stmt),
           "detail": Rec("ERROR", "x", "XX000", detail=stmt),
           "context": Rec("ERROR", "x", "XX000", context=f"SQL statement \"{stmt}\"")}[place]
    line = csv_line(rec) if fmt == "csvlog" else json_line(rec)
    if cut:  # the record cut short inside the literal: unparsed, kept as a sample
        line = line[:line.index("Zq#") + 4]
    rep = redact_obj(report(fmt, [line.encode()]))
    assert "Zq#" not in json.dumps(rep), rep


# ---------------------------------------------------------------------------------------------
# the csvlog fast path (one regex per buffer) gives what the csv module gives, whatever the input
# ---------------------------------------------------------------------------------------------

_raw = st.lists(st.sampled_from([b"a", b" ", b",", b'"', b'""', b"\n", b"\r", b"\r\n", b"\t", b":", b"5",
                                 b"\xe9", b"\xc3\xa9", b"\xff", b"duration: ", b"1.5 ms  ", b"statement: ",
                                 b"execute S_1: ", b"execute a\"b: ", b"SELECT 1"]), max_size=12).map(b"".join)


def _quoted(v: bytes) -> bytes:
    return b'"' + v.replace(b'"', b'""') + b'"'


_msg = st.one_of(
    _raw.map(_quoted), st.just(b""),
    st.builds(lambda ms, kind, name, q: _quoted(b"duration: " + ms + b" ms  " + kind + name + b": " + q),
              st.sampled_from([b"0.5", b"12", b"1.", b"x"]),
              st.sampled_from([b"statement", b"execute", b"parse", b"bind", b"plan"]),
              st.sampled_from([b"", b" <unnamed>", b" S_1", b' a"b', b" a\nb"]), _raw))
_text_col = st.one_of(st.just(b""), st.just(b'""'), _raw.map(_quoted), _raw.map(_quoted))
_off_text = st.sampled_from([b'"a\x00b"', b"unquoted", b'"a"b', b'"a', b"a\x00"])
_num_col = st.sampled_from([b"", b"0", b"15", b"x", b'"7"'])


@st.composite
def _csv_record(draw: st.DrawFn) -> bytes:
    """A csvlog record as PostgreSQL writes it (random texts), or now and then one a little off: another column
    count, a quoted field where PostgreSQL writes none, no severity, a bad time stamp, CR LF, no newline."""
    def pick(good: list[Any], off: list[Any], rate: int = 30) -> Any:
        return draw(st.sampled_from(good + off if draw(st.integers(0, rate)) == 0 else good))

    def text(often_empty: bool = False) -> bytes:
        if often_empty and draw(st.integers(0, 3)):
            return b""
        return draw(_off_text if draw(st.integers(0, 80)) == 0 else _text_col)

    cols = [pick([b"2024-03-01 10:00:00.123 UTC", b"2024-03-01 10:00:01.5"],
                 [b"2024-03-01 10:00", b"", b'"2024-03-01 10:00:00.123 UTC"', "２０２４-03-01 10:00:00".encode()]),
            text(), text(), pick([b"100", b"101"], [b"", b'"100"', b"1 0", b"1\r0"]),
            b'"127.0.0.1:5000"', b"65e1a2b3.64", b"7", text(), b"2024-03-01 09:00:00 UTC", b"3/7", b"0",
            pick([b"LOG", b"LOG", b"ERROR", b"DETAIL"], [b"", b'"LOG"']),
            pick([b"00000", b"42P01", b""], [b'"XX000"']), draw(_msg),
            *(text(True) for _ in range(3)), pick([b"", b"", b"", b"15"], [b'"7"']), text(True),
            text(True), pick([b"", b"", b"", b"3"], [b"x", b'"7"']), b"", text(), b'"client backend"', b"",
            b"0"]
    n: int = pick(list(pgstruct.CSV_COLUMNS), [21, 22, 25, 27], 8)
    end: bytes = pick([b"\n"], [b"\r\n", b""])
    return b",".join(cols[:n] + [b""] * (n - len(cols))) + end


def _reference_rows(buf: bytes) -> tuple[Any, ...]:
    rows: list[tuple[bytes, ...]] = []
    bad: list[tuple[int, str]] = []
    recs = pgstruct.PgStructAccumulator._csv_records(buf)
    multiline = pgstruct._record_rows(recs, 0, rows, bad)
    return rows, bad, multiline, len(recs)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_csv_record(), max_size=12), st.one_of(st.none(), _garbage), st.integers(0, 12), st.integers(0, 400))
def test_fuzz_fast_csvlog_reader_same_as_the_csv_module(parts: list[bytes], garbage: bytes | None, where: int,
                                                        cut: int) -> None:
    """Records as PostgreSQL writes them, now and then a little off, maybe garbage among them: the rows, bad
    records and counts of the fast reader (regex) are those of the reference one (csv module)."""
    if garbage is not None:
        parts.insert(where, garbage)
    buf = b"".join(parts)
    assert pgstruct.csv_rows(buf) == _reference_rows(buf)
    assert pgstruct.csv_rows(buf[:cut]) == _reference_rows(buf[:cut])  # (a record cut anywhere)


def test_fast_csvlog_reader_reads_the_records_postgresql_writes() -> None:
    """The regex reads every record of a log as PostgreSQL writes it (else the fast path would silently
    never be taken), and stops at a damaged one, the csv module reading on from there."""
    recs = [*sample_log(), *sample_log()]
    for cols in pgstruct.CSV_COLUMNS:
        buf = "".join(csv_line(r, cols) for r in recs).encode()
        parts = pgstruct._FAST.split(buf)
        assert len(parts) == len(recs) * pgstruct._K + 1 and not any(parts[::pgstruct._K])
        assert pgstruct.csv_rows(buf) == _reference_rows(buf)
        broken = buf.replace(b'"SELECT 1/0"', b'"SELECT 1/0"x', 1)
        assert pgstruct.csv_rows(broken) == _reference_rows(broken)
    one = csv_line(recs[0], 26).encode()
    for cols in range(20, 28):  # another column count: a bad record, as the csv module reads it
        rec = b",".join((one[:-1].split(b",") + [b""])[:cols]) + b"\n"
        buf = one + rec + one
        assert pgstruct.csv_rows(buf) == _reference_rows(buf)
        assert len(pgstruct.csv_rows(buf)[1]) == (cols not in pgstruct.CSV_COLUMNS)
    # a CR in an unquoted field or before the newline, NUL, a stray quote, bytes of another encoding, a doubled
    # quote in a prepared statement's name, an empty message, a "duration" that is no LOG entry, a cut record: as
    # the csv module reads them
    for a, b in ((b",LOG,", b",ERROR,"), (b",100,", b",1\r0,"), (b"\n", b"\r\n"), (b"SELECT *", b"SELECT\x00*"), (b'"SELECT"', b'"SEL"ECT"'),
                 (b"SELECT *", b"SELECT '\xe9\xff'"), (b"statement: ", b'execute a""b: '),
                 (b'"duration: 1.500 ms  statement: SELECT * FROM t WHERE id = 1"', b""), (one, one[:50])):
        buf = one + one.replace(a, b, 1) + one
        assert pgstruct.csv_rows(buf) == _reference_rows(buf), b


def test_bytes_of_another_encoding_in_any_column_do_not_crash() -> None:
    """A damaged record can put any byte in the severity, pid, SQLSTATE or position column (and a jsonlog any
    escaped code point): the record is read or counted unparsed, the scan goes on (it raised UnicodeEncodeError)."""
    good = csv_line(sample_log()[0]).encode()
    odd = (b'2024-03-01 10:00:00.123 UTC,,,1\xe9,,,,,,,,L\xe9,0\xe90,"x",,,,7\xe9,,,,\n'
           b'2024-03-01 10:00:00.123 UTC,,,100,,,,,,,,ERROR,XX000,"y",,,,,,,\xff,\n')
    rep = report("csvlog", [good + odd + good])
    assert rep["statements"]["count"] == 2 and rep["lines"] == 4
    jl = json_line(sample_log()[0])
    rep = report("jsonlog", [(jl + '{"timestamp": "2024-03-01 10:00:00.123 UTC", "pid": 1, '
                              '"error_severity": "\\udce9", "message": "x"}\n' + jl).encode()])
    assert rep["statements"]["count"] == 2 and rep["lines"] == 3
