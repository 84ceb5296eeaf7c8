"""Rotated files, incremental cursors (rename, compression, truncation, inode reuse), byte-range units."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.errors import ConfigError
from upkeeper.logs import parallel
from upkeeper.logs.sources import GzipReader, ReadPlan, birth_time_ns, discover, finish_cursors, plan_reads


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


def test_a_symlinked_log_is_followed_through_the_rotation_of_its_file(tmp_path: Path) -> None:
    """A log given as a symbolic link (/srv/shop/logs/access.log -> /var/log/nginx/access.log): logrotate rotates
    the file it points to, beside that file, where discover did not look — the lines written to it after the last
    run were lost, with a warning that it was 'rotated away and deleted'."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.mkdir()
    (link / "access.log").symlink_to(real / "access.log")
    (real / "access.log").write_bytes(b"".join(line(i) for i in range(3)))
    got, cur = read_plan(discover(str(link / "access.log")), [])
    assert got == b"".join(line(i) for i in range(3))
    with open(real / "access.log", "ab") as fh:
        fh.write(line(3))
    (real / "access.log").rename(real / "access.log.1")
    (real / "access.log").write_bytes(line(4))
    files = discover(str(link / "access.log"))
    assert [f.path for f in files] == [str(real / "access.log.1"), str(link / "access.log")]
    plan = plan_reads(files, cur, incremental=True)
    assert not plan.notes
    got, _cur = read_plan(files, cur)
    assert got == line(3) + line(4)
    # the directory itself a link: each rotated file once
    (tmp_path / "dirlink").symlink_to(real)
    assert [f.path for f in discover(str(tmp_path / "dirlink" / "access.log"))] == [
        str(tmp_path / "dirlink" / "access.log.1"), str(tmp_path / "dirlink" / "access.log")]


def read_units(plan: ReadPlan) -> tuple[bytes, dict[str, int], list[parallel.ReadNote]]:
    """What reading ``plan`` gives, how far each compressed file was read (its cursor's offset), and the notes."""
    notes: list[parallel.ReadNote] = []
    got = b""
    gz: dict[str, int] = {}
    for u in parallel.units_for(plan.ranges):
        reader = parallel.read_unit(u, notes=notes)
        while True:
            try:
                got += next(reader)[1]
            except StopIteration as stop:
                if u.gz:
                    gz[u.path] = u.start + stop.value
                break
    return got, gz, notes


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
    assert any(n.kind == "rotated" and "truncated" in n.message for n in plan.notes)
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


# -- damaged compressed files --------------------------------------------------------------------

LOG_TEXT = b"".join(f"203.0.113.{i % 200} GET /items/{i} {i * 7919 % 100000}\n".encode() for i in range(30_000))


def zcat(path: Path) -> tuple[bytes, str]:
    """What ``zcat`` writes for ``path`` (it decodes what it can, then complains), and its complaint."""
    import subprocess

    res = subprocess.run(["zcat", str(path)], capture_output=True, timeout=60)
    return res.stdout, res.stderr.decode()


def read_gz(path: Path, size: int = 1 << 20) -> tuple[bytes, GzipReader]:
    with open(path, "rb") as fh:
        r = GzipReader(fh)
        parts = []
        while True:
            piece = r.read(size)
            assert len(piece) <= size
            if not piece:
                return b"".join(parts), r
            parts.append(piece)


def test_gzip_reader_reads_as_zcat_does(tmp_path: Path) -> None:
    """gzip.open() raised EOFError or BadGzipFile on these and dropped what the failing read() had decoded."""
    whole = gzip.compress(LOG_TEXT)
    cases = {
        "sound.gz": (whole, None, False),
        "members.gz": (gzip.compress(LOG_TEXT[:1000]) + gzip.compress(LOG_TEXT[1000:]), None, False),
        "padded.gz": (whole + b"\0" * 700, None, False),
        "garbage.gz": (whole + b"junk after the stream", "trailing garbage", False),
        "garbage-after-padding.gz": (whole + b"\0\0\0junk", "trailing garbage", False),
        "truncated.gz": (whole[:len(whole) // 2], "truncated", True),
        "truncated-trailer.gz": (whole[:-3], "truncated", True),
        "truncated-second-member.gz": (whole + gzip.compress(b"more\n" * 5000)[:-5], "truncated", True),
        "corrupt.gz": (whole[:len(whole) // 3] + b"\xff" * 64 + whole[len(whole) // 3 + 64:], "damaged", True),
    }
    for name, (blob, problem, damaged) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        ref, complaint = zcat(path)
        for size in (1 << 20, 4093, 97):
            got, r = read_gz(path, size)
            if problem is None:
                assert got == ref and r.problem is None, name
                assert not complaint or "trailing zero" in complaint, complaint
                continue
            assert r.problem is not None and r.problem.startswith(problem) and r.damaged is damaged, name
            assert complaint, name  # zcat complains too
            if not damaged:
                assert got == ref == LOG_TEXT, name  # "decompression OK, trailing garbage ignored"
            else:  # what comes before the damage, as zcat has it (give or take zcat's last block)
                assert ref.startswith(got) or got.startswith(ref), name
                assert len(got) > len(LOG_TEXT) // 4 and LOG_TEXT.startswith(got[:len(LOG_TEXT) // 4]), name
    # an empty file is an empty log (as for gzip.open; zcat calls it an unexpected end of file)
    (tmp_path / "empty.gz").write_bytes(b"")
    assert read_gz(tmp_path / "empty.gz")[0] == b"" and read_gz(tmp_path / "empty.gz")[1].problem is None
    (tmp_path / "not-gzip.gz").write_bytes(b"plain text\n")
    got, r = read_gz(tmp_path / "not-gzip.gz")
    assert got == b"" and r.damaged and r.problem is not None and "incorrect header check" in r.problem


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.binary(max_size=40))
def test_gzip_reader_never_raises_on_a_cut_or_garbage(cut: int, junk: bytes) -> None:
    import tempfile

    blob = gzip.compress(LOG_TEXT[:200_000], compresslevel=1)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.gz"
        p.write_bytes(blob[:cut] + junk)
        got, r = read_gz(p, 3000)
        assert LOG_TEXT.startswith(got) or r.problem is not None
        if cut < len(blob):
            assert r.problem is not None or got == b""


def test_damaged_rotated_files_are_read_up_to_the_damage_and_not_again(tmp_path: Path) -> None:
    """A truncated .gz used to stop the whole read (EOFError), so its cursor was never saved and every
    later run failed the same way.  Now its complete lines count, and an unchanged file is skipped."""
    log = tmp_path / "access.log"
    lines = [line(i) for i in range(3000)]
    whole = gzip.compress(b"".join(lines[:2000]))
    (tmp_path / "access.log.2.gz").write_bytes(whole[:len(whole) // 2])  # truncated
    (tmp_path / "access.log.1.gz").write_bytes(gzip.compress(b"".join(lines[2000:2999])) + b"garbage")
    log.write_bytes(lines[2999])
    plan = plan_reads(discover(str(log)), [], incremental=True)
    got, gz, notes = read_units(plan)
    cut_text, _ = zcat(tmp_path / "access.log.2.gz")
    complete = cut_text[:cut_text.rfind(b"\n") + 1]
    assert 0 < len(complete) < len(b"".join(lines[:2000]))
    assert got == complete + b"".join(lines[2000:])  # the line the damage cuts is left out
    assert [(Path(n.path).name, n.damaged) for n in notes] == [("access.log.2.gz", True), ("access.log.1.gz", False)]
    assert "truncated" in notes[0].message and "trailing garbage" in notes[1].message
    cur = finish_cursors(plan, gz)
    assert {c["path"]: c["offset"] for c in cur}[str(tmp_path / "access.log.2.gz")] == len(complete)
    # the next run: nothing new anywhere, and the damaged files are not read (nor reported) again
    again = plan_reads(discover(str(log)), cur, incremental=True)
    assert again.ranges == []
    # the truncated file turns out to have been half-written: once complete, the rest is read
    (tmp_path / "access.log.2.gz").write_bytes(whole)
    got, _ = read_plan(discover(str(log)), cur)
    assert got == b"".join(lines[:2000])[len(complete):]


def test_a_file_rotated_between_planning_and_reading_records_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """logrotate running while a run reads (copytruncate, or a rename and a new file): the reader used to
    read whatever was at the path now — the new lines — and the cursors said the old file had been read
    to its end, so its lines were lost for good and the new ones were counted again by the next run."""
    import tempfile

    from upkeeper.logs.access import ScanOptions

    scratch = tmp_path.parent / f"{tmp_path.name}-tmp"  # the scan's temp files (the helpers' results), seen alone
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(100)))
    (tmp_path / "access.log.1").write_bytes(b"".join(line(i) for i in range(100, 150)))
    files = discover(str(log))

    def copytruncate() -> None:
        (tmp_path / "access.log.1").write_bytes(log.read_bytes())
        with open(log, "r+b") as fh:
            fh.truncate(0)
            fh.write(line(200))

    def rename_and_create() -> None:
        os.rename(log, tmp_path / "access.log.1")
        log.write_bytes(line(300) * 200)  # longer than the planned range: only the inode tells

    for change in (copytruncate, rename_and_create):
        plan = plan_reads(files, [], incremental=True)
        change()
        with pytest.raises(parallel.FileChanged, match=r"access\.log(\.1)? (got shorter|was replaced)"):
            for u in parallel.units_for(plan.ranges):
                list(parallel.read_unit(u))
        # the helper processes say so too (not "a log scanning helper failed" with a traceback)
        units = parallel.units_for(plan.ranges)
        with pytest.raises(parallel.FileChanged):
            parallel.scan("upkeeper.logs.access", ScanOptions(), units + units, workers=2, min_parallel=0)
        # and the helper that went on with its units left no result behind (this process met the change first:
        # its helper's pickled result stayed in the temp directory, one more at every such run)
        assert list(scratch.iterdir()) == []
        for p in tmp_path.iterdir():
            p.unlink()
        log.write_bytes(b"".join(line(i) for i in range(100)))
        (tmp_path / "access.log.1").write_bytes(b"".join(line(i) for i in range(100, 150)))
        files = discover(str(log))
    # a file that only grew meanwhile is read as planned
    with open(log, "ab") as fh:
        fh.write(line(100))
    got, _ = read_plan(files, [])
    assert got.count(b"\n") == 150


def test_a_live_file_rotated_away_and_deleted_is_reported_lost(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(5)))
    _, cur = read_plan(discover(str(log)), [])
    # logrotate 'rotate 1', twice before the next run: the file the last run read (and the lines written to
    # it since) is deleted by the second rotation
    with open(log, "ab") as fh:
        fh.write(line(5))
    log.rename(tmp_path / "access.log.1")
    log.write_bytes(line(6))
    (tmp_path / "access.log.1").unlink()
    log.rename(tmp_path / "access.log.1")
    log.write_bytes(line(7))
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    lost = [n for n in plan.notes if n.kind == "lost"]
    assert [n.path for n in lost] == [str(log)]
    assert "35 bytes read" in lost[0].message and "is gone" in lost[0].message
    # (with the file gone, nothing tells whether anything was written to it after the last run: said so, h17's lead)
    assert "if anything" in lost[0].message and "cannot tell" in lost[0].message
    got, cur = read_plan(discover(str(log)), cur)
    assert got == line(6) + line(7)
    # the oldest rotated file going (read to its end by the last run) is logrotate's 'rotate N': no note
    (tmp_path / "access.log.1").unlink()
    assert [n.kind for n in plan_reads(discover(str(log)), cur, incremental=True).notes] == []


def test_dateext_names_with_a_dateformat_to_the_second(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(line(2))
    (tmp_path / "access.log-20261205070926").write_bytes(line(1))
    (tmp_path / "access.log-20261205065900.gz").write_bytes(gzip.compress(line(0)))
    assert [Path(f.path).name for f in discover(str(log))] == [
        "access.log-20261205065900.gz", "access.log-20261205070926", "access.log"]


def test_refilled_past_the_old_offset_with_the_same_first_lines_is_read_from_the_start(tmp_path: Path) -> None:
    # copytruncate under steady traffic: the same requests again (the same first 4 KiB), then others, and
    # the file is past the old offset before the next run: resuming there would skip the new file's middle
    log = tmp_path / "access.log"
    same = b"".join(line(0) for _ in range(1000))
    log.write_bytes(same)
    _, cur = read_plan(discover(str(log)), [])
    with open(log, "r+b") as fh:
        fh.truncate(0)
    refill = same[:5000] + b"".join(line(i) for i in range(1, 2000))
    with open(log, "ab") as fh:
        fh.write(refill)
    got, _ = read_plan(discover(str(log)), cur)
    assert got == refill


def test_a_reused_inode_of_a_file_that_moved_is_no_replacement(tmp_path: Path) -> None:
    # delaycompress: access.log.1 is compressed to access.log.2.gz and deleted, and the new access.log gets
    # its freed inode number (ext4 and tmpfs hand them out again)
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(5)))
    _, cur = read_plan(discover(str(log)), [])
    with gzip.open(tmp_path / "access.log.2.gz", "wb") as fh:
        fh.write(log.read_bytes() + line(5))
    log.unlink()
    log.write_bytes(line(6))
    cur = [{**c, "inode": os.stat(log).st_ino} for c in cur]  # the reuse, which cannot be forced
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    assert plan.notes == []
    got, _ = read_plan(discover(str(log)), cur)
    assert got == line(5) + line(6)


def _create_with_inode(path: Path, inode: int) -> bool:
    """Create ``path`` empty with the inode number ``inode`` if the filesystem hands that freed number out again
    (ext4 and tmpfs do, at once or after a few tries); False when it does not."""
    for i in range(200):
        path.write_bytes(b"")
        if os.stat(path).st_ino == inode:
            for junk in path.parent.glob("junk-*"):
                junk.unlink()
            return True
        path.rename(path.with_name(f"junk-{i}"))
    for junk in path.parent.glob("junk-*"):
        junk.unlink()
    path.write_bytes(b"")  # the last try was renamed away: the file must exist, with whatever inode it gets
    return False


@pytest.mark.parametrize("rotation", ["compress", "copytruncate"])
def test_a_cursor_is_claimed_by_one_file_when_a_reused_inode_holds_the_same_bytes(tmp_path: Path,
                                                                                   rotation: str) -> None:
    # a log_format without a time (every line alike): the old live file goes into its rotated copy, and the
    # new access.log has the old inode number (really reused when the filesystem does it, else set in the
    # cursor) and the same first bytes, longer than the old offset: the rotated copy has the cursor, the new
    # file is read from its start (it was read from the old offset: its first 100 lines lost)
    same = b"10.0.0.1:8080 200 0.001\n"
    log = tmp_path / "access.log"
    log.write_bytes(same * 100)
    _, cur = read_plan(discover(str(log)), [])
    inode = os.stat(log).st_ino
    if rotation == "compress":  # rename, compress to a new inode, delete the plain file
        with gzip.open(tmp_path / "access.log.1.gz", "wb") as fh:
            fh.write(log.read_bytes())
        log.unlink()
        reused = _create_with_inode(log, inode)
    else:  # copytruncate: the copy, then the same inode truncated
        (tmp_path / "access.log.1").write_bytes(log.read_bytes())
        log.write_bytes(b"")
        reused = True
    if not reused:
        cur = [{**c, "inode": os.stat(log).st_ino} for c in cur]
    with open(log, "ab") as fh:
        fh.write(same * 300)
    got, _ = read_plan(discover(str(log)), cur)
    assert got == same * 300


_CRASH = b"app 1.2 starting\nTraceback (most recent call last):\n  File \"/srv/a.py\", line 3, in <module>\nKeyError: 'x'\n"


@pytest.mark.parametrize("inode", ["reused", "other"])
def test_a_new_file_that_begins_as_the_old_one_did_is_read_from_its_start(tmp_path: Path, inode: str) -> None:
    # a program that fails the same way each time it starts, its log deleted and created again (a deploy, logrotate
    # with rotate 0): the new file begins with the old one's bytes, all of them (less than the 4 KiB compared), with
    # the old inode number (ext4, tmpfs hand freed ones out again) or another. Resuming at the old offset skipped
    # its first crash; its birth time tells it is a new file
    log = tmp_path / "app.log"
    log.write_bytes(_CRASH)
    os.utime(log, (log.stat().st_mtime - 60,) * 2)  # the last run read it a minute before the new one was created
    _, cur = read_plan(discover(str(log)), [])
    old = os.stat(log).st_ino
    log.unlink()
    if inode == "reused":
        if not _create_with_inode(log, old):
            pytest.skip("the filesystem did not hand the inode number out again")
        if birth_time_ns(log) is None:
            pytest.skip("the filesystem does not tell when a file was created")
        assert birth_time_ns(log) != cur[0]["btime_ns"]
    else:
        (tmp_path / "holder").write_bytes(b"")  # holds the freed number, if it is handed out at once
        log.write_bytes(b"")
    with open(log, "ab") as fh:
        fh.write(_CRASH * 2)
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    assert any(n.kind == "rotated" and "read from the start" in n.message for n in plan.notes), plan.notes
    got, cur = read_plan(discover(str(log)), cur)
    assert got == _CRASH * 2
    with open(log, "ab") as fh:  # and the next run resumes in it, as in any file
        fh.write(b"done\n")
    got, _ = read_plan(discover(str(log)), cur)
    assert got == b"done\n"


def test_the_live_log_on_another_device_number_resumes_when_it_was_born_before(tmp_path: Path) -> None:
    # the same file, another st_dev after a reboot (btrfs subvolumes, device-mapper numbers): its content and its
    # birth time, before the last run, tell it is the file the last run read. Where the filesystem does not tell
    # when a file was born, it cannot be told from a new file: read from the start, said
    log = tmp_path / "app.log"
    log.write_bytes(_CRASH)
    _, cur = read_plan(discover(str(log)), [])
    cur = [{**c, "dev": c["dev"] + 1} for c in cur]
    with open(log, "ab") as fh:
        fh.write(b"done\n")
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    got, _ = read_plan(discover(str(log)), cur)
    if birth_time_ns(log) is None:
        assert got == _CRASH + b"done\n" and any("cannot be told" in n.message for n in plan.notes)
    else:
        assert got == b"done\n" and plan.notes == []


def test_logrotate_olddir_hint(tmp_path: Path) -> None:
    """The olddir logrotate's config gives a log — only a hint for the lost_lines finding: a stanza naming it
    (globs, several paths, quotes), a relative olddir, the global one of logrotate.conf, and scripts skipped."""
    from upkeeper.logs.logrotate_hint import olddir_for

    main = tmp_path / "logrotate.conf"
    main.write_text("weekly\nolddir /var/log/archive\n")
    d = tmp_path / "logrotate.d"
    d.mkdir()
    (d / "nginx").write_text('# nginx\n"/var/log/nginx/*.log" /srv/x.log {\n daily\n postrotate\n'
                             '  olddir /nope\n  }\n endscript\n olddir old # moved\n}\n')
    (d / "app").write_text("/srv/app/app.log\n{\n rotate 4\n}\n/srv/other.log { noolddir\n}\n")
    (d / "app.dpkg-old").write_text("/srv/app/app.log { olddir /wrong\n}\n")
    configs = (str(main), str(d))
    assert olddir_for("/var/log/nginx/access.log", configs).olddir == "/var/log/nginx/old"
    assert olddir_for("/srv/x.log", configs).olddir == "/srv/old"
    got = olddir_for("/srv/app/app.log", configs)
    assert (got.olddir, got.source) == ("/var/log/archive", str(d / "app"))
    assert olddir_for("/srv/other.log", configs).olddir is None
    none = olddir_for("/elsewhere.log", configs)
    assert none.olddir is None and none.source == f"{main}, {d}" and not none.problem


def test_logrotate_olddir_hint_follows_include(tmp_path: Path) -> None:
    """logrotate.conf's ``include`` of a directory and of a file is followed where it stands (the global olddir set
    before it applies), each file once (include loops end), and an include of nothing is said."""
    from upkeeper.logs.logrotate_hint import olddir_for

    main = tmp_path / "logrotate.conf"
    confd = tmp_path / "conf.d"
    confd.mkdir()
    extra = tmp_path / "extra.conf"
    main.write_text(f"olddir /var/log/archive\ninclude {confd}\ninclude {extra}\ninclude {tmp_path / 'nope'}\n")
    (confd / "app").write_text("/srv/app/app.log {\n rotate 4\n}\n")
    (confd / "loop").write_text(f"include {confd}\ninclude {main}\n")  # loops back: read once
    (confd / "web.rpmsave").write_text("/srv/web.log { olddir /wrong\n}\n")
    extra.write_text(f"include {tmp_path}/logrotate.conf\n/srv/web.log {{\n olddir old\n}}\n")
    configs = (str(main),)
    got = olddir_for("/srv/app/app.log", configs)
    assert (got.olddir, got.source) == ("/var/log/archive", str(confd / "app"))
    got = olddir_for("/srv/web.log", configs)
    assert (got.olddir, got.source) == ("/srv/old", str(extra))
    none = olddir_for("/elsewhere.log", configs)
    assert none.olddir is None and f"include {tmp_path / 'nope'}: no such file" in none.problem


ROTATED_DIRS_JOBS = """\
targets:
  db: {kind: postgres, host: 127.0.0.1}
  web: {kind: nginx, access_log: /var/log/nginx/access.log, error_log: /var/log/nginx/error.log}
jobs:
  j:
    task: %s
    target: %s
    options: %s
"""


@pytest.mark.parametrize(("task", "target", "options", "error"), [
    ("logs.postgres", "db", "{log_file: /var/log/postgresql/postgresql-*.log, rotated_dirs: [old]}",
     "rotated_dirs is not read with a glob log_file"),
    ("logs.postgres", "db", "{rotated: false, rotated_dirs: [old]}", "rotated_dirs is not read with rotated: false"),
    ("logs.nginx", "web", "{rotated: false, rotated_dirs: [old]}", "rotated_dirs is not read with rotated: false"),
    ("logs.errors", "web", "{rotated: false, rotated_dirs: [old]}", "rotated_dirs is not read with rotated: false"),
    ("logs.postgres", "db", "{log_file: /var/log/postgresql/postgresql.log, rotated_dirs: [old]}", None),
    ("logs.nginx", "web", "{access_log: '/var/log/nginx/*.access.log', rotated_dirs: [old]}", None),
])
def test_rotated_dirs_where_it_would_be_ignored_is_a_config_error(task: str, target: str, options: str,
                                                                  error: str | None) -> None:
    """An olddir named where it is never read (a glob log_file of logs.postgres reads each match alone; rotated:
    false reads no rotated file) was silently ignored, and with it the lines it was set to save: a config error
    naming the job's options now.  (nginx's access_log glob reads each match with its rotated files: fine.)"""
    text = ROTATED_DIRS_JOBS % (task, target, options)
    if error is None:
        assert build_setup(load_text(text)).jobs["j"].options.rotated_dirs == ["old"]
        return
    with pytest.raises(ConfigError) as exc:
        build_setup(load_text(text))
    found = " ".join(p.render() for p in exc.value.problems) or exc.value.message
    assert "jobs -> j -> options" in found and error in found, found


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_a_gzip_copys_size_is_the_one_its_trailer_allows_between_the_cursor_and_the_live_size(
        low: int, true: int, high: int) -> None:
    from upkeeper.logs.sources import _copy_size

    low, true, high = sorted((low, true, high))
    got = _copy_size(true % (1 << 32), low, high)
    fits = [s for s in range(true % (1 << 32), high + 1, 1 << 32) if s >= low][:2]
    assert got == (fits[0] if len(fits) == 1 else None)
    if high - low < 1 << 32:  # (the live file grew by less than 4 GiB since the last run: always known)
        assert got == true
