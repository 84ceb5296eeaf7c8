"""Rotated files, incremental cursors (rename, compression, truncation, inode reuse), byte-range units."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.logs import parallel
from upkeeper.logs.sources import discover, finish_cursors, plan_reads


def line(i: int) -> bytes:
    return f"line {i}\n".encode()


def read_plan(files: list, cursors: list, incremental: bool = True) -> tuple[bytes, list]:
    plan = plan_reads(files, cursors, incremental=incremental)
    got = b""
    gz: dict[str, int] = {}
    for u in parallel.units_for(plan.ranges):
        n = 0
        for _off, buf in parallel.read_unit(u):
            got += buf
            n += len(buf)
        if u.gz:
            gz[u.path] = u.start + n
    return got, finish_cursors(plan, gz)


def test_discover_orders_rotated_files_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(line(5))
    (tmp_path / "access.log.1").write_bytes(line(4))
    with gzip.open(tmp_path / "access.log.2.gz", "wb") as fh:
        fh.write(line(3))
    with gzip.open(tmp_path / "access.log.10.gz", "wb") as fh:
        fh.write(line(1))
    (tmp_path / "access.log.bak").write_bytes(b"not a rotation\n")
    (tmp_path / "other.log.1").write_bytes(b"x\n")
    names = [Path(f.path).name for f in discover(str(log))]
    assert names == ["access.log.10.gz", "access.log.2.gz", "access.log.1", "access.log"]
    assert [Path(f.path).name for f in discover(str(log), rotated=False)] == ["access.log"]
    assert [Path(f.path).name for f in discover(str(log), max_files=2)] == ["access.log.1", "access.log"]
    # dateext
    (tmp_path / "access.log-20240301.gz").write_bytes(gzip.compress(line(0)))
    assert Path(discover(str(log))[0].path).name == "access.log-20240301.gz"


def test_incremental_follows_rename_and_compression(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(3)) + b"half a li")
    got, cur = read_plan(discover(str(log)), [])
    assert got == b"".join(line(i) for i in range(3))  # the half-written line waits
    # nginx finishes the line and writes more
    with open(log, "ab") as fh:
        fh.write(b"ne\n" + line(3))
    got, cur = read_plan(discover(str(log)), cur)
    assert got == b"half a line\n" + line(3)
    # logrotate: rename, then nginx writes a little more to the old inode before reopening
    os.rename(log, tmp_path / "access.log.1")
    with open(tmp_path / "access.log.1", "ab") as fh:
        fh.write(line(4))
    log.write_bytes(line(5))
    got, cur = read_plan(discover(str(log)), cur)
    assert got == line(4) + line(5)
    # the next rotation compresses access.log.1 (delaycompress); nothing is read twice
    data = (tmp_path / "access.log.1").read_bytes()
    with gzip.open(tmp_path / "access.log.2.gz", "wb") as fh:
        fh.write(data)
    os.unlink(tmp_path / "access.log.1")
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(line(6))
    got, cur = read_plan(discover(str(log)), cur)
    assert got == line(6)
    got, cur = read_plan(discover(str(log)), cur)
    assert got == b""


def test_compressed_file_resumes_where_the_plain_file_stopped(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(5)))
    _, cur = read_plan(discover(str(log)), [])
    # rotated while we were away, more lines appended before compression
    with open(log, "ab") as fh:
        fh.write(line(5) + line(6))
    data = log.read_bytes()
    with gzip.open(tmp_path / "access.log.1.gz", "wb") as fh:
        fh.write(data)
    log.unlink()
    log.write_bytes(line(7))
    got, _ = read_plan(discover(str(log)), cur)
    assert got == line(5) + line(6) + line(7)


def test_truncation_and_inode_reuse_read_from_start(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(10)))
    _, cur = read_plan(discover(str(log)), [])
    # copytruncate: same inode, shorter file
    with open(log, "r+b") as fh:
        fh.truncate(0)
    with open(log, "ab") as fh:
        fh.write(line(100))
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    assert any("truncated" in n for n in plan.notes)
    got, cur = read_plan(discover(str(log)), cur)
    assert got == line(100)
    # truncated and refilled past the old offset before we looked: the first bytes differ
    with open(log, "r+b") as fh:
        fh.truncate(0)
    with open(log, "ab") as fh:
        fh.write(b"".join(f"other {i}\n".encode() for i in range(20)))
    got, _ = read_plan(discover(str(log)), cur)
    assert got.startswith(b"other 0\n") and got.count(b"\n") == 20


def test_not_incremental_reads_everything(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(line(1) + line(2))
    _, cur = read_plan(discover(str(log)), [])
    got, _ = read_plan(discover(str(log)), cur, incremental=False)
    assert got == line(1) + line(2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=300),
       st.integers(64, 4096))
def test_units_cover_every_line_exactly_once(lines: list[bytes], unit: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.log"
        data = b"\n".join(lines) + b"\n"
        p.write_bytes(data)
        units = parallel.split_units(str(p), 0, len(data), final=True, unit=unit)
        got = b"".join(buf for u in units for _o, buf in parallel.read_unit(u, chunk=97))
        assert got == data


def test_units_respect_continuation_lines(tmp_path: Path) -> None:
    entries = [f"2024-03-01 10:00:{i % 60:02d} UTC [1] LOG:  statement: SELECT {i}\n\tFROM t\n\tWHERE x = {i}\n"
               for i in range(500)]
    data = "".join(entries).encode()
    p = tmp_path / "pg.log"
    p.write_bytes(data)
    units = parallel.split_units(str(p), 0, len(data), final=True, unit=2000, continuation=b"\t")
    assert len(units) > 5
    bufs = [buf for u in units for _o, buf in parallel.read_unit(u, chunk=333, continuation=b"\t")]
    assert b"".join(bufs) == data
    for buf in bufs:
        assert not buf.startswith(b"\t")  # every buffer starts with a whole entry
