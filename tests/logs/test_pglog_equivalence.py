"""The optimized PostgreSQL log scanner gives the same results as the frozen reference (tests/logs/pgref).

Logs are generated (seeded) with varied ``log_line_prefix`` values, multi-line statements, errors with
and without SQLSTATE, deadlocks, lock waits, temporary files, checkpoints, log_statement/log_duration
pairs and bad lines; a hypothesis fuzz mixes fragments of all of these with garbage.  The whole report
(``summarize`` with every row kept) must be equal, and so must the result of scanning the same log in
chunks with several accumulators and merging them (what ``parallel.scan`` does).

Deliberate differences from the reference, tested on their own below (nested block comments in tests/logs/test_sqlfp.py): examples (a fingerprint's
example and slowest statement, an error class's statements, unparsed-line and deadlock samples) are the
earliest in the log whatever the chunking, and ``first``/``last`` are the earliest and latest timestamps
of all entries (the reference looked only at the first and last duration entry of each buffer).  The
generated logs have timestamps in order and keep log_statement/log_duration pairs to queries of their
own, where both answers agree.  One semantic fix was made to the reference too (marked CHANGED there): a
backend's remembered ``statement:`` is forgotten at its ERROR/FATAL/PANIC (a failed statement logs no
duration); the bare durations a backend holds at its error, or at the end of the log, are counted unpaired
(before_error, not_logged), never dropped.  The extended protocol's ``execute <name>:`` lines with log_duration (which the reference does
not pair) are not generated here; tests/logs/test_pglog.py and tests/tasks/test_logs_postgres.py test them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from logs.pgref import pglog as ref
from logs.pgref import sqlfp as ref_sqlfp
from upkeeper.logs import parallel, pglog, sqlfp
from upkeeper.redact import redact_obj

ALL = 10**6  # top_n: keep every row of every list
#: a "/*" and another one before the next "*/": a block comment that may nest, which PostgreSQL (and now sqlfp) reads
#: as one comment and the reference ended at the first "*/" (tests/logs/test_sqlfp.py tests them): left out here
NESTED_COMMENT = re.compile(rb"/\*(?:(?!\*/)[^\x00])*?/\*")

PREFIXES = [
    "%m [%p] ",
    "%t [%p] %e ",
    "%m [%p] %q%u@%d ",
    "%n [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ",
    "%t [%p]: [%l-1] %quser=%u,db=%d ",
    "%m %u %d %p %e ",
]

TABLES = ["pgbench_accounts", "pgbench_tellers", "orders", "Users", '"Mixed Case"', "s.t"]
QUERIES = [
    "SELECT abalance FROM {t} WHERE aid = {n};",
    "UPDATE {t} SET abalance = abalance + {m} WHERE aid = {n};",
    "INSERT INTO {t} (a, b, c) VALUES ({n}, 'x{n}', {m}.5), ({m}, 'it''s', -{n});",
    "select * from {t} where id in ({n}, {m}, {n})",
    "SELECT *\n\tFROM {t}\n\tWHERE name = E'a\\'{n}' -- trailing comment {n}\n\tAND x = $1",
    "/* app:{n} */ DELETE FROM {t} WHERE created < now() - interval '{n} days'",
    "SELECT $${n} body$$ || $tag$x{m}$tag$ FROM {t} WHERE a = 1e{m} AND b = {n}.25",
    "BEGIN",
    "COMMIT;",
    "WITH x AS (SELECT {n} AS v) SELECT v FROM x WHERE v > -{m}",
    "execute_me({n})",
]
BARE_QUERIES = [  # log_statement + log_duration pairs: a query pool of their own (see test_example_position)
    "DELETE FROM audit WHERE id = {n}",
    "VACUUM audit_{m}",
]
ERRORS = [
    ("ERROR", None, 'relation "nope_{n}" does not exist at character 15'),
    ("ERROR", None, 'duplicate key value violates unique constraint "k_{m}"'),
    ("ERROR", "22012", "division by zero"),
    ("ERROR", None, "canceling statement due to statement timeout"),
    ("FATAL", None, 'password authentication failed for user "bob{m}"'),
    ("FATAL", None, "terminating connection due to administrator command"),
    ("ERROR", None, "something nobody has seen {n}"),
    ("PANIC", None, "could not read block {n} in file \"base/1/2\""),
    ("WARNING", None, "there is no transaction in progress"),
]
#: lock failures (the locks section), written instead of some of the errors above: chosen by the backend's
#: pid, so that the random stream, and so the rest of the log, stays as it was
LOCK_ERRORS = [
    ("ERROR", "55P03", "canceling statement due to lock timeout"),
    ("ERROR", None, 'could not obtain lock on row in relation "orders"'),
]


class LogWriter:
    def __init__(self, prefix: str, rng: random.Random) -> None:
        self.prefix = prefix
        self.rng = rng
        self.t = 1709287200 + rng.randrange(0, 86400)
        self.lineno = 0

    def head(self, pid: int, sqlstate: str = "00000") -> str:
        self.t += self.rng.choice((0, 0, 1, 7, 1800))
        self.lineno += 1
        import time as _time

        tm = _time.gmtime(self.t)
        ts = _time.strftime("%Y-%m-%d %H:%M:%S", tm)
        ms = self.rng.randrange(1000)
        out: list[str] = []
        i = 0
        p = self.prefix
        background = pid % 5 == 0  # a process without a session: %q stops the prefix
        while i < len(p):
            if p[i] == "%" and i + 1 < len(p):
                e = p[i + 1]
                i += 2
                if e == "q":
                    if background:
                        break
                    continue
                out.append({"m": f"{ts}.{ms:03d} UTC", "t": f"{ts} UTC", "n": f"{self.t}.{ms:03d}",
                            "p": str(pid), "e": sqlstate, "u": self.rng.choice(["app", "bob", ""]),
                            "d": self.rng.choice(["prod", "test", ""]), "a": "psql", "h": "10.0.0.1",
                            "l": str(self.lineno)}[e])
                continue
            out.append(p[i])
            i += 1
        return "".join(out)

    def fill(self, template: str) -> str:
        return template.format(t=self.rng.choice(TABLES), n=self.rng.randrange(1, 10**6),
                               m=self.rng.randrange(0, 50))

    def group(self) -> list[str]:
        """One entry group: lines that belong together (an error and its STATEMENT, …)."""
        r = self.rng
        pid = r.randrange(100, 130)
        h = self.head
        kind = r.choices(["dur", "bare", "error", "deadlock", "lock", "acquired", "temp", "checkpoint", "misc",
                          "bad"], weights=[60, 6, 10, 2, 3, 2, 3, 3, 4, 5])[0]
        if kind == "dur":
            q = self.fill(r.choice(QUERIES))
            verb = r.choice(["statement", "statement", "execute <unnamed>", "execute S_1", "parse <unnamed>",
                             "bind S_2"])
            ms = f"{r.randrange(0, 5000)}.{r.randrange(1000):03d}"
            return [f"{h(pid)}LOG:  duration: {ms} ms  {verb}: {q}"]
        if kind == "bare":
            q = self.fill(r.choice(BARE_QUERIES))
            return [f"{h(pid)}LOG:  statement: {q}", f"{h(pid)}LOG:  duration: {r.randrange(0, 90)}.{r.randrange(10)} ms"]
        if kind == "error":
            level, code, msg = r.choice(ERRORS)
            if pid % 10 == 0 and level != "WARNING":  # (a warning would keep the statement to pair)
                level, code, msg = LOCK_ERRORS[pid // 10 % 2]
            msg = self.fill(msg)
            if code and r.random() < 0.5:
                msg = f"{code}: {msg}"
            out = [f"{h(pid, code or 'XX000')}{level}:  {msg}"]
            if r.random() < 0.3:
                out.append(f"{h(pid)}HINT:  try again")
            if r.random() < 0.8:
                out.append(f"{h(pid)}STATEMENT:  {self.fill(r.choice(QUERIES))}")
            return out
        if kind == "deadlock":
            return [f"{h(pid, '40P01')}ERROR:  deadlock detected",
                    f"{h(pid)}DETAIL:  Process {pid} waits for ShareLock on transaction {r.randrange(999)}; blocked "
                    f"by process 7.\n\tProcess 7 waits for ShareLock on transaction 2; blocked by process {pid}.",
                    f"{h(pid)}HINT:  See server log for query details.",
                    f"{h(pid)}STATEMENT:  UPDATE a SET x = {r.randrange(99)} WHERE id = 7"]
        if kind == "lock":
            # each wait on a lock of its own: a backend's "still waiting" for the lock it already waits for is
            # the same wait logged again, counted once (tests/tasks/test_logs_postgres.py), which pieces of
            # the log scanned apart cannot tell
            obj = r.choice([f"transaction {self.lineno + 1}", f"relation {self.lineno + 1} of database 5"])
            return [f"{h(pid)}LOG:  process {pid} still waiting for {r.choice(['ShareLock', 'AccessExclusiveLock'])} "
                    f"on {obj} after {r.randrange(9999)}.5 ms",
                    f"{h(pid)}DETAIL:  Process holding the lock: 6. Wait queue: {pid}.",
                    f"{h(pid)}STATEMENT:  {self.fill(r.choice(QUERIES))}"]
        if kind == "acquired":
            return [f"{h(pid)}LOG:  process {pid} acquired ShareLock on transaction 9 after {r.randrange(9999)}.25 ms"]
        if kind == "temp":
            return [f'{h(pid)}LOG:  temporary file: path "base/pgsql_tmp/pgsql_tmp{pid}.{r.randrange(9)}", size '
                    f"{r.randrange(10**9)}",
                    f"{h(pid)}STATEMENT:  {self.fill(r.choice(QUERIES))}"]
        if kind == "checkpoint":
            point = "restartpoint" if pid % 4 == 0 else "checkpoint"  # a standby's checkpoint: a restartpoint
            if r.random() < 0.5:
                return [f"{h(pid)}LOG:  {point} starting: {r.choice(['time', 'wal', 'immediate force wait'])}"]
            if r.random() < 0.2:
                return [f"{h(pid)}LOG:  checkpoints are occurring too frequently ({r.randrange(1, 30)} seconds apart)"]
            return [f"{h(pid)}LOG:  {point} complete: wrote {r.randrange(9999)} buffers (1.2%); 0 WAL file(s) "
                    f"added, {r.randrange(3)} removed, 1 recycled; write={r.randrange(99)}.{r.randrange(999):03d} s, "
                    f"sync=0.0{r.randrange(9)} s, total={r.randrange(99)}.5 s; sync files=3, longest=0.001 s, "
                    f"average=0.001 s; distance={r.randrange(99999)} kB, estimate=1 kB"]
        if kind == "misc":
            return [r.choice([f"{h(pid)}LOG:  automatic vacuum of table \"db.public.t\": index scans: 0",
                              f"{h(pid)}LOG:  automatic analyze of table \"db.public.t\"",
                              f"{h(pid)}LOG:  connection authorized: user=app database=prod",
                              f"{h(pid)}LOG:  statement: SET x = {r.randrange(9)}",
                              f"{h(pid)}LOG:  duration: 1.5 ms",
                              f"{h(pid)}LOG:  duration: oops ms",
                              f"{h(pid)}NOTICE:  relation exists, skipping",
                              f"{h(pid)}CONTEXT:  SQL function",
                              f"{h(pid)}LOG:  process {pid} still waiting for nothing"])]
        return [r.choice(["garbage line", "", "2024-03-01 10:00:00 no pid here", "\x00\x01 binary",
                          "2024-13-45 99:99:99.1 UTC [x] LOG:  duration: 5 ms  statement: SELECT 1",
                          f"{h(pid)}BOGUS:  level", "\tcontinuation without an entry",
                          "Ω invalid utf-8 follows: \udcff"])]


def generate(seed: int, groups: int, prefix: str) -> list[bytes]:
    """Entry groups, each one or more complete lines (bytes, with newlines)."""
    rng = random.Random(seed)
    w = LogWriter(prefix, rng)
    return [("\n".join(w.group()) + "\n").encode("utf-8", "surrogateescape") for _ in range(groups)]


def scan_new(buf: bytes, prefix: str, pieces: list[bytes] | None = None, *, untimed: bool = False) -> dict[str, Any]:
    """The report; ``untimed``: with the statements logged without a duration (``statements.untimed``), which the
    reference did not count (left out by default, to compare with it)."""
    rep = _scan_new(buf, prefix, pieces)
    if not untimed:
        del rep["statements"]["untimed"]
    return rep


def _scan_new(buf: bytes, prefix: str, pieces: list[bytes] | None = None) -> dict[str, Any]:
    opts = pglog.PgScanOptions(log_line_prefix=prefix)
    if pieces is None:
        acc = pglog.make_accumulator(opts)
        acc.feed(buf, "log", 0)
        return pglog.summarize(acc.partial(), top_n=ALL)
    parts = []
    off = 0
    for piece in pieces:  # each piece in an accumulator of its own, as parallel.scan's processes do
        acc = pglog.make_accumulator(opts)
        acc.feed(piece, "log", off)
        off += len(piece)
        parts.append(acc.partial())
    parts.reverse()  # merged out of order, as helpers' results may arrive
    return pglog.summarize(pglog.merge(parts), top_n=ALL)


def scan_ref(buf: bytes, prefix: str) -> dict[str, Any]:
    acc = ref.make_accumulator(ref.PgScanOptions(log_line_prefix=prefix))
    acc.feed(buf, "log", 0)
    return ref.summarize(acc.partial(), top_n=ALL)


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def assert_same(new: dict[str, Any], old: dict[str, Any], tol: float = 0.0) -> None:
    """Equal reports.  ``tol``: pieces merged add durations in another order, and a rounded sum or mean
    can then differ in its last digit (0.0005 boundaries); within one pass they must be identical.
    Reports mask secrets (``pass=…``, ``PASSWORD '…'``) in their text; the frozen reference does not, so
    both sides are compared masked (masking is idempotent: what the new scanner masked stays as it is)."""
    new, old = redact_obj(new), redact_obj(old)
    assert new.keys() == old.keys()
    for k in old:
        if tol:
            assert _close(new[k], old[k], tol), k
        else:
            assert new[k] == old[k], k


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("seed", [1, 2])
def test_same_report_as_reference(prefix: str, seed: int) -> None:
    groups = generate(seed, 3000, prefix)
    buf = b"".join(groups)
    old = scan_ref(buf, prefix)
    assert old["statements"]["count"] > 1000 and old["errors"]["total"] > 100 and old["deadlocks"]["count"]
    assert old["locks"]["waits"] and old["temp_files"]["count"] and old["checkpoints"]["count"]
    assert old["locks"]["failures"] and old["locks"]["failed_queries"] and old["checkpoints"]["restartpoints"]
    assert old["unparsed"] > 10
    new = scan_new(buf, prefix)
    if "%n" in prefix:  # the reference never turned a %n time into one: no first/last, nothing per hour
        assert old["first"] is None and not old["by_hour"] and not old["errors"]["by_hour"]
        assert new["first"] and new["last"] and new["by_hour"] and new["errors"]["by_hour"]
        new["first"], new["last"], new["by_hour"] = None, None, {}
        new["errors"]["by_hour"] = {}
        for rep in (new, old):  # (ties in duration ordered by time, then pid: compared by duration only)
            rep["statements"]["unpaired"]["slowest"] = [o["ms"] for o in rep["statements"]["unpaired"]["slowest"]]
    assert_same(new, old)


@pytest.mark.parametrize("prefix", PREFIXES[:3])
def test_chunked_and_merged_same_as_one_pass(prefix: str) -> None:
    groups = generate(7, 3000, prefix)
    buf = b"".join(groups)
    old = scan_ref(buf, prefix)
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(groups)), 6))
    pieces = [b"".join(groups[a:b]) for a, b in zip([0, *cuts], [*cuts, len(groups)], strict=True)]
    assert_same(scan_new(buf, prefix, pieces), old, tol=0.011)
    # the statements logged without a duration too, wherever the log is cut
    one = scan_new(buf, prefix, untimed=True)["statements"]["untimed"]
    assert one["count"] > 10 and one == scan_new(buf, prefix, pieces, untimed=True)["statements"]["untimed"]


def test_parallel_scan_with_helpers_same_as_reference(tmp_path: Path) -> None:
    """Real helper processes, many small units handed out biggest first: the same report."""
    prefix = PREFIXES[2]
    buf = b"".join(generate(13, 4000, prefix))
    log = tmp_path / "postgresql.log"
    log.write_bytes(buf)
    units = parallel.split_units(str(log), 0, len(buf), final=True, label=str(log), continuation=b"\t",
                                 unit=len(buf) // 9)
    assert len(units) >= 8
    part, _ = parallel.scan("upkeeper.logs.pglog", pglog.PgScanOptions(log_line_prefix=prefix), units, workers=2,
                            continuation=b"\t", min_parallel=0)
    new = pglog.summarize(part, top_n=ALL)
    assert new["statements"].pop("untimed") == scan_new(buf, prefix, untimed=True)["statements"]["untimed"]
    acc = ref.make_accumulator(ref.PgScanOptions(log_line_prefix=prefix))
    acc.feed(buf, str(log), 0)
    old = ref.summarize(acc.partial(), top_n=ALL)
    # the pieces are cut between entries, but an ERROR's STATEMENT may land in the next piece: not paired
    lost = sum(len(c["statements"]) for c in old["errors"]["classes"]) - sum(
        len(c["statements"]) for c in new["errors"]["classes"])
    assert 0 <= lost <= len(units)
    for k in old:
        if k not in ("errors", "locks", "temp_files", "deadlocks"):
            assert _close(new[k], old[k], 0.011), k
    assert new["errors"]["by_sqlstate"] == old["errors"]["by_sqlstate"]
    assert new["temp_files"]["total_bytes"] == old["temp_files"]["total_bytes"]


def test_example_position_is_chunking_independent() -> None:
    """The example of a fingerprint is its earliest statement in the log, the slowest one the earliest of
    the slowest, however the log was cut into pieces."""
    log = (
        b"2024-03-01 10:00:00.001 UTC [1] LOG:  duration: 5.000 ms  statement: SELECT 1\n"
        b"2024-03-01 10:00:00.002 UTC [1] LOG:  duration: 9.000 ms  statement: SELECT 2\n"
        b"2024-03-01 10:00:00.003 UTC [1] LOG:  duration: 9.000 ms  statement: SELECT 3\n"
        b"2024-03-01 10:00:00.004 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 4\n"
    )
    lines = log.splitlines(keepends=True)
    for cut in range(1, 4):
        rep = scan_new(log, "%m [%p] ", [b"".join(lines[:cut]), b"".join(lines[cut:])])
        (row,) = rep["slowest_total"]
        assert (row["example"], row["slowest"], row["count"]) == ("SELECT 1", "SELECT 2", 4)


def test_first_and_last_are_min_and_max_timestamps() -> None:
    log = (
        b"2024-03-01 10:00:05.001 UTC [1] LOG:  duration: 5.000 ms  statement: SELECT 1\n"
        b"2024-03-01 10:00:01.002 UTC [2] LOG:  duration: 9.000 ms  statement: SELECT 2\n"
        b"2024-03-01 10:00:09.003 UTC [1] LOG:  duration: 9.000 ms  statement: SELECT 3\n"
        b"2024-03-01 10:00:02.004 UTC [1] LOG:  duration: 1.000 ms  statement: SELECT 4\n"
    )
    rep = scan_new(log, "%m [%p] ")
    assert (rep["first"], rep["last"]) == ("2024-03-01 10:00:01", "2024-03-01 10:00:09")


def test_samples_are_the_earliest_whatever_the_chunking() -> None:
    groups = generate(5, 2000, PREFIXES[0])
    buf = b"".join(groups)
    one = scan_new(buf, PREFIXES[0])
    assert len(one["unparsed_samples"]) == 5 and len(one["deadlocks"]["details"]) == 5
    assert any(len(c["statements"]) == 2 for c in one["errors"]["classes"])
    for n in (2, 5, 13):
        cuts = [len(groups) * k // n for k in range(n + 1)]
        pieces = [b"".join(groups[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        assert_same(scan_new(buf, PREFIXES[0], pieces), one, tol=0.011)
        # one accumulator fed out of order (parallel.scan's main process takes the biggest piece first), each
        # piece a unit of its own as parallel.scan tells it (bare durations with no statement are held per
        # backend, and counted unpaired by what the backend logs next: in log order, not feeding order)
        acc = pglog.make_accumulator(pglog.PgScanOptions(log_line_prefix=PREFIXES[0]))
        offs = [sum(len(x) for x in pieces[:k]) for k in range(len(pieces))]
        for off, piece in sorted(zip(offs, pieces, strict=True), key=lambda t: -len(t[1])):
            acc.start_unit("log", off, off + len(piece))
            acc.feed(piece, "log", off)
        out = pglog.summarize(acc.partial(), top_n=ALL)
        for k in ("unparsed_samples", "deadlocks", "slowest_total", "errors"):
            assert out[k] == one[k], k


# ---------------------------------------------------------------------------------------------
# fuzz
# ---------------------------------------------------------------------------------------------

_FRAGMENTS = [g.decode("utf-8", "surrogateescape") for p in PREFIXES[:2] for g in generate(11, 400, p)]
_fragment = st.sampled_from(_FRAGMENTS)
_noise = st.text(alphabet=st.sampled_from(list("0123456789 :.[]-'\"$;()\t\nLOGERRduration msstatement:E/*")),
                 max_size=60)


_binary = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_fragment, _fragment, _noise, _binary), max_size=40), st.sampled_from(PREFIXES[:2]))
@example(["&pass=\x00"], "%m [%p] ")  # an unparsed line the report masks and the reference does not
def test_fuzz_same_as_reference(parts: list[str], prefix: str) -> None:
    buf = "".join(parts).encode("utf-8", "surrogateescape")
    assume(not NESTED_COMMENT.search(buf))
    new, old = scan_new(buf, prefix), scan_ref(buf, prefix)
    # fragments out of time order: the reference's first/last saw only some entries, ours all of them
    assert (new["first"] is None) == (old["first"] is None) and (new["last"] is None) == (old["last"] is None)
    if old["first"] is not None:
        assert new["first"] <= old["first"] and new["last"] >= old["last"]
    new["first"], new["last"] = old["first"], old["last"]
    assert_same(new, old)


_sql_alphabet = st.sampled_from(list("abcSELECTinvalues(),? 0123456789.-+eE'\"$_;/*\n\t\\xy") + [
    "$$", "$1", "$tag$", "--", "/*", "*/", "E'", "''", "IN (", "VALUES (", " in(", "1.5e3", "\x00", "\r", "\x0b",
    "\x0c", "  ", "-1", "x-1", "?-2", "a.1", "in (1, 2)", "values (1), (2)", "é", ".5", "5.", "0x1F", "0o7", "0b1",
    "1_0", '"', '"A 1"', '""', "e'", "'--'", "$$'$$", "\x01", "\x01a\x01"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.lists(_sql_alphabet, max_size=30).map("".join), min_size=1, max_size=6))
def test_fingerprints_same_as_reference(queries: list[str]) -> None:
    qs = [q.encode() for q in queries]
    assume(not any(NESTED_COMMENT.search(q) for q in qs))
    assert sqlfp.fingerprints(qs) == ref_sqlfp.fingerprints(qs)
    assert [sqlfp.fingerprint(q) for q in qs] == [ref_sqlfp.fingerprint(q) for q in qs]
    assert sqlfp.fingerprints(qs + qs) == ref_sqlfp.fingerprints(qs + qs)  # repeated texts
    cache: dict[bytes, bytes] = {}
    first = sqlfp.fingerprints(qs[:2], cache)
    assert first == ref_sqlfp.fingerprints(qs[:2])
    assert sqlfp.fingerprints(qs[::-1] + qs, cache) == ref_sqlfp.fingerprints(qs[::-1] + qs)  # partly cached


def test_fingerprint_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlfp, "CACHE_MAX", 10)
    cache: dict[bytes, bytes] = {}
    qs = [f"SELECT {i} FROM t{i % 3}".encode() for i in range(8)]
    long_q = b"SELECT " + b"x, " * 3000 + b"1"
    assert sqlfp.fingerprints([*qs, long_q], cache) == ref_sqlfp.fingerprints([*qs, long_q])
    assert len(cache) == 8 and long_q not in cache  # long texts are not kept
    more = [f"UPDATE t SET a = {i}".encode() for i in range(5)]
    assert sqlfp.fingerprints(more + qs[:1], cache) == ref_sqlfp.fingerprints(more + qs[:1])
    assert len(cache) <= 10


def test_no_samples_kept() -> None:
    buf = b"".join(generate(3, 500, PREFIXES[0]))
    acc = pglog.make_accumulator(pglog.PgScanOptions(samples=0))
    acc.feed(buf, "log", 0)
    acc.feed(buf, "log", -len(buf))  # a piece before the first one: examples are compared, nothing breaks
    none = pglog.summarize(acc.partial(), top_n=ALL)
    assert none["unparsed_samples"] == [] and none["deadlocks"]["details"] == []
    assert none["deadlocks"]["count"] > 0 and none["unparsed"] > 0
    acc = pglog.make_accumulator(pglog.PgScanOptions(samples=5))
    acc.feed(buf, "log", 0)
    acc.feed(buf, "log", -len(buf))
    some = pglog.summarize(acc.partial(), top_n=ALL)
    assert none["unparsed"] == some["unparsed"] and none["entries"] == some["entries"]


def test_same_report_with_a_small_fingerprint_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlfp, "CACHE_MAX", 50)  # the cache starts over many times
    buf = b"".join(generate(21, 3000, PREFIXES[2]))
    cut = buf.index(b"\n", len(buf) // 3) + 1
    while buf[cut:cut + 1] == b"\t":  # between entries, as parallel.scan cuts (not inside a multi-line one)
        cut = buf.index(b"\n", cut) + 1
    pieces = [buf[:cut], buf[cut:]]
    old = scan_ref(buf, PREFIXES[2])
    assert_same(scan_new(buf, PREFIXES[2]), old)
    acc = pglog.make_accumulator(pglog.PgScanOptions(log_line_prefix=PREFIXES[2]))
    acc.feed(pieces[0], "log", 0)
    acc.feed(pieces[1], "log", len(pieces[0]))
    assert len(acc.fp_cache) <= 50 + 3000
    assert pglog.summarize(acc.partial(), top_n=ALL)["slowest_total"] == old["slowest_total"]
