"""Reading units: a line that never ends (NUL padding, a binary file) is cut, not held whole."""

from __future__ import annotations

import gzip
import os
import tempfile
import threading
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.logs import parallel
from upkeeper.logs.access import Accumulator, ScanOptions, summarize
from upkeeper.logs.nginx_format import COMBINED_TIMED
from upkeeper.logs.pglog import PgScanOptions
from upkeeper.logs.pglog import summarize as pg_summarize


def good(i: int) -> bytes:
    return (f'203.0.113.{i % 250 + 1} - - [04/Mar/2024:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] '
            f'"GET /items/{i} HTTP/1.1" 200 {100 + i} "-" "curl/8.5.0" 0.0{i % 10}\n').encode()


def read_all(u: parallel.Unit, **kw: Any) -> tuple[list[tuple[int, bytes]], int]:
    """Every (offset, buffer) of ``u`` and the byte count read_unit returns."""
    out: list[tuple[int, bytes]] = []
    reader = parallel.read_unit(u, **kw)
    while True:
        try:
            out.append(next(reader))
        except StopIteration as stop:
            return out, stop.value


def check_reading(data: bytes, out: list[tuple[int, bytes]], n: int, *, max_line: int, keep: int, chunk: int,
                  final: bool, continuation: bytes = b"") -> None:
    """``out`` is ``data`` line by line from offset 0, long lines cut to ``keep`` (at most ``max_line``) bytes."""
    pos = 0
    for off, buf in out:
        assert off == pos
        for piece in buf.splitlines(keepends=True):
            end = data.find(b"\n", pos) + 1 or len(data)
            line = data[pos:end]
            body = line.rstrip(b"\n")
            if len(body) > max_line + chunk:
                assert piece != line  # always cut
            if piece != line:
                assert len(body) > max_line  # lines up to max_line come whole
                assert piece == body[:min(keep, max_line)] + line[len(body):]
            pos = end
    assert n == pos  # what the cursor of a compressed file is set from
    if final:
        assert pos == len(data)
    elif continuation:  # a half-written last line is left for the next run, with the entry it may continue
        assert all(ln.startswith(continuation) for ln in data[pos:].split(b"\n")[1:])
    else:
        assert b"\n" not in data[pos:]  # only a half-written last line is left for the next run


@st.composite
def log_bytes(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(st.integers(0, 300), st.sampled_from(b"a\0\t")), max_size=25))
    body = b"\n".join(bytes([c]) * k for k, c in lines)
    return body + draw(st.sampled_from([b"", b"\n"]))


@settings(max_examples=300, deadline=None)
@given(log_bytes(), st.integers(1, 64), st.integers(1, 100), st.integers(1, 120), st.booleans(), st.booleans(),
       st.sampled_from([b"", b"\t"]))
# an entry whose next line has begun (and is no continuation) is complete: it used to wait a run
@example(b"\n\na", 3, 1, 1, False, False, b"\t")
# an entry whose continuation line is half-written waits for the next run, whole
@example(b"\n\n\t", 3, 1, 1, False, False, b"\t")
def test_read_unit_cuts_only_long_lines_and_accounts_for_every_byte(
        data: bytes, chunk: int, max_line: int, keep: int, final: bool, gz: bool, continuation: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.log"
        if gz:
            with gzip.open(path, "wb") as fh:
                fh.write(data)
        else:
            path.write_bytes(data)
        u = parallel.Unit(str(path), 0, None if gz else len(data), gz, final or gz, str(path))
        out, n = read_all(u, chunk=chunk, continuation=continuation, max_line=max_line, keep=keep)
    check_reading(data, out, n, max_line=max_line, keep=keep, chunk=chunk, final=final or gz,
                  continuation=continuation)
    if not continuation:  # (whole multi-line entries may take up to two reads more)
        assert all(len(buf) <= max_line + chunk for _off, buf in out)


def test_read_unit_from_an_offset(tmp_path: Path) -> None:
    data = good(1) + b"x" * 5000 + b"\n" + good(2) + b"\0" * 3000
    path = tmp_path / "x.log"
    path.write_bytes(data)
    start = len(good(1))
    out, n = read_all(parallel.Unit(str(path), start, len(data), False, False), chunk=256, max_line=1000, keep=10)
    assert out == [(start, b"x" * 10 + b"\n"), (start + 5001, good(2))]
    assert n == 5001 + len(good(2))  # the unfinished NUL line waits (not final)
    out, n = read_all(parallel.Unit(str(path), start, len(data), False, True), chunk=256, max_line=1000, keep=10)
    assert out[-1] == (start + 5001 + len(good(2)), b"\0" * 10) and n == len(data) - start


NUL_RUN = 50 << 20


def nul_log(path: Path, lines: int, *, glued: bool) -> None:
    """``lines`` good lines, 50 MB of NUL bytes (a crash), then good lines again.

    ``glued``: the first line after the NULs follows them directly, as when nginx appends to a
    file whose end was padded; else the NULs end with a newline.
    """
    with open(path, "wb") as fh:
        fh.write(b"".join(good(i) for i in range(lines)))
        zeros = b"\0" * (1 << 20)
        for _ in range(NUL_RUN >> 20):
            fh.write(zeros)
        if not glued:
            fh.write(b"\n")
        fh.write(b"".join(good(i) for i in range(lines, 2 * lines)))


@pytest.mark.parametrize("glued", [False, True])
def test_nul_padding_is_one_invalid_line_and_memory_stays_bounded(tmp_path: Path, glued: bool) -> None:
    log = tmp_path / "access.log"
    nul_log(log, 1000, glued=glued)
    size = log.stat().st_size
    units = [parallel.Unit(str(log), 0, size, False, True, str(log))]
    opts = ScanOptions(log_format=COMBINED_TIMED)
    tracemalloc.start()
    try:
        partial, _ = parallel.scan("upkeeper.logs.access", opts, units, workers=1)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a few buffers' and one line's worth (4 MB buffers: ~13 MB), not the 50 MB run (read whole, it
    # was copied at every buffer: twice its size at the peak)
    assert peak < 3 * Accumulator.chunk + (4 << 20), peak
    rep = summarize(partial)
    assert rep["invalid"] == 1
    assert rep["requests"] == 2000 - glued  # the line glued to the NULs goes with them
    assert rep["lines"] == 2000 + (not glued)
    [sample] = rep["invalid_samples"]
    assert sample["offset"] == sum(len(good(i)) for i in range(1000))  # where the NULs start
    assert sample["line"].startswith("\\x00\\x00") and len(sample["line"]) <= 500  # escaped: a terminal shows it


def test_nul_padding_in_a_compressed_log_counts_every_byte(tmp_path: Path) -> None:
    plain = tmp_path / "access.log.1"
    nul_log(plain, 50, glued=False)
    data = plain.read_bytes()
    gz = tmp_path / "access.log.2.gz"
    with gzip.open(gz, "wb", compresslevel=1) as fh:
        fh.write(data)
    fed: list[tuple[int, bytes]] = []

    class Recorder:
        chunk = 1 << 20

        def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
            fed.append((offset, buf))

        def partial(self) -> None:
            return None

    n = parallel.scan_unit(Recorder(), parallel.Unit(str(gz), 0, None, True, True, str(gz)))
    assert n == len(data)  # the cursor of a .gz file is its uncompressed bytes read: all of them
    nul_at = sum(len(good(i)) for i in range(50))
    assert (nul_at, b"\0" * parallel.LONG_LINE_HEAD + b"\n") in fed
    assert max(len(b) for _o, b in fed) <= parallel.MAX_LINE + Recorder.chunk
    assert b"".join(b for o, b in fed if o != nul_at) == data[:nul_at] + data[nul_at + NUL_RUN + 1:]


def test_postgres_log_with_a_long_statement_and_garbage(tmp_path: Path) -> None:
    """A statement over MAX_LINE is cut yet counted with its duration; a NUL run is one bad line."""
    log = tmp_path / "postgresql.log"
    values = ",".join(f"({i},'row {i}')" for i in range(300_000)).encode()
    assert len(values) > parallel.MAX_LINE + (4 << 20)
    with open(log, "wb") as fh:
        fh.write(b"2024-03-01 10:00:00.000 UTC [42] LOG:  duration: 1.500 ms  statement: SELECT 1\n")
        fh.write(b"2024-03-01 10:00:01.000 UTC [42] LOG:  duration: 950.000 ms  statement: INSERT INTO t VALUES "
                 + values + b"\n")
        fh.write(b"\0" * (8 << 20) + b"\n")
        fh.write(b"2024-03-01 10:00:02.000 UTC [42] LOG:  duration: 2.500 ms  statement: SELECT 1\n")
    units = [parallel.Unit(str(log), 0, log.stat().st_size, False, True, str(log))]
    partial, _ = parallel.scan("upkeeper.logs.pglog", PgScanOptions(log_line_prefix="%m [%p] "), units, workers=1,
                               continuation=b"\t")
    rep = pg_summarize(partial)
    assert rep["statements"]["count"] == 3
    assert rep["statements"]["total_ms"] == 954.0
    assert rep["unparsed"] == 1
    assert rep["lines"] == 4


def test_damaged_compressed_files_are_noted_by_helper_processes_too(tmp_path: Path) -> None:
    """A truncated .gz raised EOFError out of parallel.scan (from a helper: 'a log scanning helper failed');
    now every process reads such files up to the damage and the notes come back with the results."""
    text = b"".join(good(i) for i in range(6000))
    blob = gzip.compress(text)
    units = []
    for k in range(4):
        p = tmp_path / f"access.log.{k + 1}.gz"
        p.write_bytes(blob[:len(blob) // 2] if k % 2 else blob + b"trailing junk")
        units.append(parallel.Unit(str(p), 0, None, True, True, str(p)))
    cut = zlib.decompressobj(31).decompress(blob[:len(blob) // 2])  # what can be decompressed
    complete = cut[:cut.rfind(b"\n") + 1]
    for workers in (1, 2):
        notes: list[parallel.ReadNote] = []
        partial, gz_read = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED), units,
                                         workers=workers, min_parallel=0, notes=notes)
        assert partial.lines == 2 * 6000 + 2 * complete.count(b"\n") and partial.invalid == 0
        assert [(n.path, n.damaged) for n in notes] == [(u.path, k % 2 == 1) for k, u in enumerate(units)]
        assert gz_read == {u.path: len(complete) if k % 2 else len(text) for k, u in enumerate(units)}


def test_idle_is_called_once_while_the_helpers_finish_and_never_without_helpers(tmp_path: Path) -> None:
    """``idle`` (logs.nginx reads history there, with nothing of the scan to work on while its helpers finish): called
    once this process has scanned its units, from the calling thread, before the scan returns; not at all when no
    helper scans (``workers: 1``: there is no wait to fill, so the caller does that work itself afterwards)."""
    text = b"".join(good(i) for i in range(6000))
    units = []
    for k in range(4):
        p = tmp_path / f"access-{k}.log"
        p.write_bytes(text)
        units.append(parallel.Unit(str(p), 0, len(text), False, True, str(p)))
    for workers in (1, 2):
        calls: list[str] = []
        partial, _gz = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED), units,
                                     workers=workers, min_parallel=0,
                                     idle=lambda calls=calls: calls.append(threading.current_thread().name))
        assert partial.lines == 4 * 6000 and partial.invalid == 0
        assert calls == ([threading.current_thread().name] if workers == 2 else [])


_DYING_KIND = '''
import os, signal, time
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401

def make_accumulator(opts):
    acc = _make(opts)
    if os.getpid() == int(os.environ["UPK_TEST_SCANNER"]):
        feed = acc.feed
        def slow(buf, source="", offset=0):  # (the helper surely gets a unit)
            time.sleep(0.3)
            feed(buf, source, offset)
        acc.feed = slow
    else:
        acc.feed = lambda buf, source="", offset=0: os.kill(os.getpid(), signal.SIGKILL)
    return acc
'''


def test_a_helper_killed_mid_scan_is_said_to_be_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scanning helper killed (the OOM killer, kill -9) failed the run with "a log scanning helper failed: Ran
    out of input" (pickle's words for a pipe that closed); now it names the helper and how it ended."""
    import os

    (tmp_path / "dying_kind.py").write_text(_DYING_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("UPK_TEST_SCANNER", str(os.getpid()))
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(good(i) for i in range(20000)))
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=1 << 18)
    with pytest.raises(RuntimeError, match=r"helper process \d+ killed by SIGKILL before it answered") as exc:
        parallel.scan("dying_kind", ScanOptions(log_format=COMBINED_TIMED), units, workers=2, min_parallel=0)
    assert "Ran out of input" not in str(exc.value)


_IDLE_MAIN_KIND = '''
import os, time
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401

FED = []

def make_accumulator(opts):
    acc = _make(opts)
    if os.getpid() == int(os.environ["UPK_TEST_SCANNER"]):  # the calling process reads, slowly, and keeps nothing
        def idle(buf, source="", offset=0):
            FED.append(offset)
            time.sleep(0.2)  # (the helper, however slow to start, gets units)
        acc.feed = idle
    return acc
'''


def test_a_helper_past_its_share_of_the_memory_limit_stops_the_scan_saying_what_it_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory limit is checked in the helper processes too: one that outgrows its share answers so, the scan
    raises MemoryLimit with what that helper held, the calling process stops reading too (it read on to the end),
    and no helper is left running."""
    import os

    import psutil

    (tmp_path / "idle_main_kind.py").write_text(_IDLE_MAIN_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("UPK_TEST_SCANNER", str(os.getpid()))
    monkeypatch.setattr(parallel, "MIN_SHARE", 1 << 20)  # (a helper for a limit this small)
    log = tmp_path / "access.log"
    with log.open("w") as fh:
        for i in range(60_000):  # every request line and client distinct
            fh.write(f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [01/Mar/2024:10:00:00 +0000] '
                     f'"GET /p?_={i}&v={i * 7919:032x} HTTP/1.1" 200 {100 + i % 900} "-" "Mozilla/5.0" 0.010\n')
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=1 << 18)
    with pytest.raises(parallel.MemoryLimit, match=r"after [\d,]+ lines of .*access\.log the 2 scanning processes "
                                                   r"held \d+ MB more than when they began \(this one \d+ MB: "
                                                   r"[\d,]+ distinct request lines.*\), past the limit of 8 MB$"):
        parallel.scan("idle_main_kind", ScanOptions(log_format=COMBINED_TIMED), units, workers=2, min_parallel=0,
                      memory_limit=8 << 20)
    assert not [p for p in psutil.Process().children(recursive=True) if "scanworker" in " ".join(p.cmdline())]
    import idle_main_kind  # type: ignore[import-not-found]

    # it stopped early too (it read 27 of 32 units when it read on to the end; 4 since)
    assert len(idle_main_kind.FED) < len(units) // 2, (len(idle_main_kind.FED), len(units))
    partial, _ = parallel.scan("idle_main_kind", ScanOptions(log_format=COMBINED_TIMED), units, workers=2,
                               min_parallel=0, memory_limit=0)  # no limit: the helper reads all it is given
    assert partial.lines > 0


_PIDS_KIND = '''
import os
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401

def make_accumulator(opts):
    with open(os.environ["UPK_TEST_PIDS"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return _make(opts)
'''


def test_a_memory_limit_starts_no_more_processes_than_get_a_useful_share_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scanning process got memory_limit / processes, however small: 16 processes within 512 MB (32 MB
    each) stopped on the benchmark's 1 GB log, 4 within 128 MB on 36 MB of distinct request lines (the calling
    process read half of them: 45 MB, the helpers 12-15 MB each, 86 MB together) — the run failed, saying the
    log held more than the limit lets it count. Now fewer helpers start, each process getting at least MIN_SHARE."""

    (tmp_path / "pids_kind.py").write_text(_PIDS_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    pids = tmp_path / "pids"
    monkeypatch.setenv("UPK_TEST_PIDS", str(pids))
    log = tmp_path / "access.log"
    n = 200_000
    with log.open("w") as fh:
        for i in range(n):  # every request line and client distinct
            fh.write(f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [01/Mar/2024:10:00:00 +0000] '
                     f'"GET /api/v1/items?_={1700000000000 + i}&v={i * 7919:032x} HTTP/1.1" 200 5 "-" "Mozilla/5.0" '
                     '0.010\n')
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=2 << 20)
    opts = ScanOptions(log_format=COMBINED_TIMED)

    def scanners(workers: int, limit: int) -> int:
        pids.unlink(missing_ok=True)
        partial, _ = parallel.scan("pids_kind", opts, units, workers=workers, min_parallel=0, memory_limit=limit)
        assert partial.lines == n
        return len(set(pids.read_text().split()))

    assert scanners(4, 0) > 1  # no limit: helpers
    assert scanners(4, 128 << 20) == 1  # 128 MB: one process (~85 MB of growth); 4 stopped at 32 MB
    assert scanners(4, 192 << 20) == 2  # one per 96 MB (parallel.MIN_SHARE)


_IDLE_HELPERS_KIND = '''
import os, time
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401

def make_accumulator(opts):
    acc = _make(opts)
    if os.getpid() != int(os.environ["UPK_TEST_SCANNER"]):  # the helpers read slowly, and keep nothing
        acc.feed = lambda buf, source="", offset=0: time.sleep(1.0)  # (slower than the calling process under load)
    return acc
'''


def test_the_memory_limit_is_for_the_scanning_processes_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process was checked against its share of the limit (limit / processes): the one that read more than
    its part (a whole compressed file; the pieces it took before the helpers started: half of them, of 4) stopped
    the scan while the others held next to nothing — 86 MB together of a 128 MB limit. Now each process says
    what it added in a shared file and checks the sum, and every process stops once the sum is past the limit."""
    import os

    (tmp_path / "idle_helpers_kind.py").write_text(_IDLE_HELPERS_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("UPK_TEST_SCANNER", str(os.getpid()))
    monkeypatch.setattr(parallel, "MIN_SHARE", 16 << 20)
    log = tmp_path / "access.log"
    n = 80_000
    with log.open("w") as fh:
        for i in range(n):  # every request line and client distinct: ~35 MB in the calling process
            fh.write(f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [01/Mar/2024:10:00:00 +0000] '
                     f'"GET /p?_={i}&v={i * 7919:032x} HTTP/1.1" 200 {100 + i % 900} "-" "Mozilla/5.0" 0.010\n')
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=1 << 20)
    opts = ScanOptions(log_format=COMBINED_TIMED)
    partial, _ = parallel.scan("idle_helpers_kind", opts, units, workers=4, min_parallel=0, memory_limit=64 << 20)
    assert n // 2 < partial.lines < n  # (the calling process read most of it, the helpers a little, kept nothing)
    scratch = tmp_path / "tmp"  # the scan's temp files, apart from other tests' scans
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(parallel, "MIN_SHARE", 4 << 20)
    with pytest.raises(parallel.MemoryLimit, match=r"the 4 scanning processes held \d+ MB more than when they "
                                                   r"began \(this one \d+ MB: .*\), past the limit of 16 MB$"):
        parallel.scan("idle_helpers_kind", opts, units, workers=4, min_parallel=0, memory_limit=16 << 20)
    assert list(scratch.iterdir()) == []  # (the shared file: removed; no helper's result left)


_FAILING_HERE_KIND = '''
import os
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401
from upkeeper.logs.parallel import FileChanged

def make_accumulator(opts):
    acc = _make(opts)
    if os.getpid() == int(os.environ["UPK_TEST_SCANNER"]):  # the calling process meets a changed file
        def feed(buf, source="", offset=0):
            raise FileChanged(f"{source} was replaced while it was read")
        acc.feed = feed
    return acc
'''


def test_a_scan_that_fails_in_the_calling_process_leaves_no_helper_result_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that changed under the calling process (or a stop, or its accumulator's failure) ended the scan
    there while its helper went on with the other units to their end and wrote its result to a temp file that
    nothing removed: one more ``upkeeper-scan-*.pickle`` in /tmp at every such run."""
    import os

    (tmp_path / "failing_here_kind.py").write_text(_FAILING_HERE_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("UPK_TEST_SCANNER", str(os.getpid()))
    scratch = tmp_path / "tmp"  # the scan's temp files, apart from other tests' scans
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(b'10.0.0.%d - - [01/Mar/2024:10:00:00 +0000] "GET /p/%d HTTP/1.1" 200 5 "-" "a"\n'
                             % (i % 250, i) for i in range(20_000)))
    units = parallel.split_units(str(log), 0, log.stat().st_size, final=True, unit=64 << 10)
    assert len(units) > 8
    with pytest.raises(parallel.FileChanged, match="was replaced"):
        parallel.scan("failing_here_kind", ScanOptions(), units, workers=2, min_parallel=0)
    for t in threading.enumerate():  # (a helper left going on: its end, whenever that is)
        if t.name.startswith("scan-helper-"):
            t.join(timeout=60)
    assert list(scratch.iterdir()) == []


_WHO_KIND = '''
import os
from upkeeper.logs.access import make_accumulator as _make, merge  # noqa: F401

def make_accumulator(opts):
    acc = _make(opts)
    def start_unit(source, start, end):
        with open(os.environ["UPK_TEST_WHO"], "a") as fh:
            fh.write(f"{os.getpid()} {start}\\n")
    acc.start_unit = start_unit
    return acc
'''


def test_the_helpers_leave_the_last_pieces_to_the_calling_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper's end costs more than the calling process's own (its partial result is pickled, and unpickled by
    the caller), and the caller waited for it, idle: the helpers take no piece once what is left in the queue is at
    most 1/HELPERS_LEAVE of the scan's bytes.  Here 1/4: the last 4 of 16 equal pieces are the caller's."""
    (tmp_path / "who_kind.py").write_text(_WHO_KIND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    who = tmp_path / "who"
    monkeypatch.setenv("UPK_TEST_WHO", str(who))
    monkeypatch.setattr(parallel, "HELPERS_LEAVE", 4)
    log = tmp_path / "access.log"
    with log.open("wb") as fh:
        for i in range(16 * 2000):
            fh.write(good(i))
    size = log.stat().st_size
    units = parallel.split_units(str(log), 0, size, final=True, unit=-(-size // 16))
    assert len(units) == 16
    partial, _ = parallel.scan("who_kind", ScanOptions(log_format=COMBINED_TIMED), units, workers=2,
                               min_parallel=0)
    assert partial.lines == 16 * 2000
    scanned = [line.split() for line in who.read_text().splitlines()]
    assert sorted(int(start) for _pid, start in scanned) == sorted(u.start for u in units)
    last = {u.start for u in parallel.queue_order(units)[-4:]}
    mine = {int(start) for pid, start in scanned if int(pid) == os.getpid()}
    assert last <= mine, (sorted(last), sorted(mine))
    assert len({pid for pid, _s in scanned}) == 2  # (the helper scanned some)


def test_the_helpers_look_at_what_is_left_without_a_stat_of_every_compressed_file_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed piece's size_hint is a stat of its file; the helpers look at the bytes left in the queue before
    each piece they take (:data:`~upkeeper.logs.parallel.HELPERS_LEAVE`): summed again there, that was a stat of every
    file left for each piece taken, under the queue's lock (3000 rotated .gz files: 3.2-3.9 s instead of 1.9-2.3)."""
    n = 300
    paths = []
    for i in range(n):
        p = tmp_path / f"access.log.{i}.gz"
        p.write_bytes(gzip.compress(b"".join(good(i * 1000 + k) for k in range(1000))))
        paths.append(str(p))
    stats: dict[str, int] = {}
    getsize = os.path.getsize

    def counted(path: Any) -> int:
        stats[str(path)] = stats.get(str(path), 0) + 1
        return getsize(path)

    monkeypatch.setattr(os.path, "getsize", counted)
    units = [parallel.Unit(p, 0, None, True, True, p, None) for p in paths]
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED), units, workers=2,
                               min_parallel=0)
    assert partial.lines == n * 1000
    assert sum(stats.get(p, 0) for p in paths) <= 8 * n, sum(stats.values())
