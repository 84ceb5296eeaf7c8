"""Incremental reading across rotations made by the real logrotate binary (``-f -s STATE CONF`` on a scratch
directory), with a program that goes on writing the renamed file until it reopens its log."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from logs.test_sources import read_plan
from upkeeper.logs.sources import discover, plan_reads
from upkeeper.tasks.logs._common import plan_findings

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


def logrotate(log: Path, directives: str) -> None:
    if not Path(LOGROTATE).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    conf = log.parent.parent / f"logrotate-{log.name}.conf"
    conf.write_text(f"{log} {{\n{directives}\n}}\n")
    res = subprocess.run([LOGROTATE, "-f", "-s", str(conf.with_suffix(".state")), str(conf)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def entry(i: int) -> bytes:
    return f'192.0.2.{i % 250 + 1} - - [06/Dec/2026:10:00:00 +0000] "GET /item/{i} HTTP/1.1" 200 12 "-" "ua"\n'.encode()


@pytest.mark.parametrize("directives", [
    " rotate 5\n create\n compress\n delaycompress",
    " rotate 5\n create\n dateext\n dateformat -%Y%m%d%H%M%S",
    " rotate 5\n nocreate",
])
def test_a_line_half_written_to_the_renamed_file_before_the_reopen_is_read_once_whole(tmp_path: Path,
                                                                                       directives: str) -> None:
    """logrotate renames the log; the program writes the renamed file until it reopens its log (nginx's USR1 in
    the postrotate script, a moment later). A run in that window read the renamed file to its very end, as a
    rotated file is complete — a line half-written there was taken for a whole one (an unparsed line), its
    cursor moved past it, and the next run read the rest as another: the request was lost, two bogus lines
    counted. Now a plain rotated file is read, like the live one, up to its last complete line while its log
    has no byte anywhere newer (the program has not reopened); the rest once it has, or from the file
    compressed. A file of the program that moved on is still read to its end (a last line without newline)."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    log.write_bytes(b"".join(entry(i) for i in range(10)))
    got, cur = read_plan(discover(str(log)), [])
    assert got.count(b"\n") == 10
    writer = open(log, "ab", buffering=0)  # noqa: SIM115 (the program's descriptor, kept across the rename)
    try:
        writer.write(entry(10) + entry(11))
        logrotate(log, directives)
        whole = entry(12)
        writer.write(whole[:30])  # a write cut by the run: the rest comes a moment later
        got, cur = read_plan(discover(str(log)), cur)
        assert got == entry(10) + entry(11)
        writer.write(whole[30:] + entry(13)[:20])
        got2, cur = read_plan(discover(str(log)), cur)
        assert got2 == whole  # the completed line, once; the next half still waits
    finally:
        writer.close()
    # the program reopens its log (a new file: nocreate's too) and writes there: its old file is done, and a last
    # line without newline in it is a line
    with open(log, "ab") as fh:
        fh.write(entry(14))
    got3, cur = read_plan(discover(str(log)), cur)
    assert got3 == entry(13)[:20] + entry(14)
    got4, _ = read_plan(discover(str(log)), cur)
    assert got4 == b""
    assert sorted(os.listdir(log.parent))[0].startswith("access.log")


def test_logs_nginx_counts_a_request_half_written_during_the_reopen_once(cli: Any, make_config: Any,
                                                                          tmp_path: Path) -> None:
    """The same window, end to end: the run's requests and unparsed lines over the runs."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"j": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined", "report_dir": str(tmp_path / "r"), "html": False}}}})

    def run() -> tuple[float, float]:
        res = cli(["--config", str(cfg), "run", "j", "--json"])
        assert res.code in (0, 1), res.output
        m = res.json()[0]["metrics"]
        return m.get("requests", 0.0), m.get("invalid", 0.0)

    log.write_bytes(b"".join(entry(i) for i in range(10)))
    assert run() == (10, 0)
    with open(log, "ab", buffering=0) as writer:
        writer.write(entry(10))
        logrotate(log, " rotate 5\n create\n compress\n delaycompress")
        writer.write(entry(11)[:25])
        assert run() == (1, 0)
        writer.write(entry(11)[25:])
    with open(log, "ab") as fh:  # reopened
        fh.write(entry(12))
    assert run() == (2, 0)
    logrotate(log, " rotate 5\n create\n compress\n delaycompress")  # access.log.1 → .2.gz
    assert run() == (0, 0)


def logrotate_at(log: Path, directives: str, when: str) -> None:
    """logrotate as if run at ``when`` (libfaketime, preloaded: its dateext stamps, without waiting for the clock;
    not the faketime wrapper, whose sem_open name can clash with another test's)."""
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:
        pytest.skip("needs libfaketime (apt-get install faketime; scripts/ensure-system-deps.sh installs it)")
    if not Path(LOGROTATE).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    conf = log.parent.parent / f"logrotate-{log.name}.conf"
    conf.write_text(f"{log} {{\n{directives}\n}}\n")
    res = subprocess.run([LOGROTATE, "-f", "-s", str(conf.with_suffix(".state")), str(conf)],
                         env={**os.environ, "LD_PRELOAD": libs[0], "FAKETIME": f"@{when}"},
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("dateformat", ["-%Y%m%d-%s", "-%Y-%m-%d", ".%Y%m%d%H", ".%Y-%m-%d_%H%M%S", "_%Y%m%d"])
def test_every_dateformat_logrotate_takes_is_followed_line_for_line(tmp_path: Path, dateformat: str) -> None:
    """dateext with a dateformat other than -%Y%m%d[%H[%M[%S]]] (-%Y%m%d-%s, to rotate more than once a day, and
    -%Y-%m-%d are common): the rotated files were not taken for the log's, so the lines written between a run
    and the rotation were lost — a lost_lines warning every rotation — and with a '.' before the date
    (.%Y%m%d%H) the files were taken for numbered ones, newest as oldest. Now any stamp logrotate can write (the
    year first, fields of two digits or %s, -, _ or . between them) is a rotated file of the log, in date order:
    N lines written over rotations, twice between two runs, are read exactly once."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    directives = f" rotate 9\n create\n dateext\n dateformat {dateformat}\n compress\n delaycompress"
    written = 0
    total = b""
    cur: list[Any] = []

    def write(k: int) -> None:
        nonlocal written
        with open(log, "ab") as fh:
            fh.write(b"".join(entry(i) for i in range(written, written + k)))
        written += k

    day = 1
    for runs_between in (1, 2, 1, 2):
        write(5)
        got, cur = read_plan(discover(str(log)), cur)
        total += got
        for _ in range(runs_between):
            write(3)
            logrotate_at(log, directives, f"2026-12-{day:02d} 10:00:00")
            day += 1
            write(2)
    plan_lost = plan_reads(discover(str(log)), cur, incremental=True).notes
    assert [n.kind for n in plan_lost] == []
    got, cur = read_plan(discover(str(log)), cur)
    total += got
    assert total == b"".join(entry(i) for i in range(written))  # each line once, in order
    names = sorted(os.listdir(log.parent))
    assert len(names) == 7 and [Path(f.path).name for f in discover(str(log))][-1] == "access.log", names


@pytest.mark.parametrize("directives", [" rotate 40\n create", " rotate 40\n create\n compress\n delaycompress"])
def test_a_last_file_beyond_max_files_is_named_not_said_deleted(tmp_path: Path, directives: str) -> None:
    """More rotations between two runs than max_files keeps: the file the last run stopped in is still on disk,
    only older than the files read. The warning said it was "gone … rotated away and deleted" and sent the user
    to logrotate's 'rotate' and olddir; now it names the file (by inode, or by its first bytes once compressed)
    and the job's max_files."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    log.write_bytes(b"".join(entry(i) for i in range(10)))
    _, cur = read_plan(discover(str(log), max_files=4), [])
    for i in range(6):
        with open(log, "ab") as fh:
            fh.write(entry(100 + i))
        logrotate(log, directives)
    notes = [n for n in plan_reads(discover(str(log), max_files=4), cur, incremental=True).notes
             if n.kind != "rotated"]  # (the new live file may have the old one's inode number: read whole)
    assert [n.kind for n in notes] == ["left"], notes
    suffix = ".6" if "compress" not in directives else ".6.gz"
    assert f"is {log}{suffix} now" in notes[0].message and "max_files" in notes[0].message, notes[0].message
    assert "max_files" in plan_findings("nginx", notes)[0].remediation
    # within max_files: read on, nothing said
    _, cur = read_plan(discover(str(log), max_files=4), [])
    with open(log, "ab") as fh:
        fh.write(entry(200))
    logrotate(log, directives)
    got, _ = read_plan(discover(str(log), max_files=4), cur)
    assert got == entry(200)


def test_a_run_between_copytruncates_copy_and_its_truncation_counts_each_line_once(tmp_path: Path) -> None:
    """copytruncate copies the log, then truncates it. A run in between found the copy and the live file with the
    same bytes; files are matched oldest first, so the copy took the live file's cursor and the live file was read
    again from its start: 200 lines counted where 50 were new. Now the live file keeps its own cursor (same inode,
    same bytes) and the copy is known as a copy (read from the live file); after the truncation nothing is lost or
    counted twice, and no lost-lines warning is raised (logrotate truncated it)."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    log.write_bytes(b"".join(entry(i) for i in range(100)))
    got, cur = read_plan(discover(str(log)), [])
    assert got.count(b"\n") == 100
    with open(log, "ab") as fh:
        fh.write(b"".join(entry(i) for i in range(100, 150)))
    shutil.copyfile(log, tmp_path / "logs" / "access.log.1")  # copytruncate's copy …
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    got, cur = read_plan(discover(str(log)), cur)  # … a run here …
    assert got == b"".join(entry(i) for i in range(100, 150))
    assert [n.kind for n in plan.notes] == ["rotated"] and "is a copy of" in plan.notes[0].message
    with open(log, "ab") as fh:
        fh.write(entry(150))  # (written after the copy: logrotate's own loss, but this run read it)
    got, cur = read_plan(discover(str(log)), cur)
    assert got == entry(150)
    with open(log, "r+b") as fh:  # … then the truncation
        fh.truncate(0)
    with open(log, "ab") as fh:
        fh.write(b"".join(entry(i) for i in range(151, 161)))
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    assert not [f for f in plan_findings("nginx", plan.notes) if f.check == "logs.nginx.lost_lines"]
    got, cur = read_plan(discover(str(log)), cur)
    assert got == b"".join(entry(i) for i in range(151, 161))
    logrotate(log, " rotate 5\n copytruncate\n compress\n delaycompress")  # and the next rotations as ever
    with open(log, "ab") as fh:
        fh.write(entry(161))
    got, _ = read_plan(discover(str(log)), cur)
    assert got == entry(161)


@pytest.mark.parametrize("grown", [1000, 5 << 30])
def test_a_gzip_copy_of_a_live_log_of_4_gib_or_more_is_known_as_a_copy(tmp_path: Path, grown: int) -> None:
    """A gzip trailer gives the uncompressed size modulo 2**32: a compressed copy of a live log of 4 GiB or more
    (logrotate's copy, or copytruncate's before the truncation, with compress) was never taken for a copy, and its
    lines were read again.  It is now, when one size of that remainder lies between what the last run read and what
    the live file holds (a live file that grew by 4 GiB or more since: not known, read as before).  The live file
    is sparse; the copy holds its first bytes, with the trailer of a copy of all of it."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    log.write_bytes(b"".join(entry(i) for i in range(100)))
    _, cur = read_plan(discover(str(log)), [])
    with open(log, "r+b") as fh:  # the live file, past 4 GiB: a hole, then a last line
        fh.seek((4 << 30) + grown)
        fh.write(entry(100))
    size = log.stat().st_size
    with open(log, "rb") as fh:
        head = fh.read(1 << 20)
    import zlib

    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # a gzip member of the first MB, then the trailer of the whole copy
    body = c.compress(head) + c.flush()
    (tmp_path / "logs" / "access.log.1.gz").write_bytes(body[:-4] + (size % (1 << 32)).to_bytes(4, "little"))
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    copy = [c for c in plan.cursors if c.get("path", "").endswith(".gz")]
    if grown < 1 << 32:
        assert [n.kind for n in plan.notes] == ["rotated"] and "is a copy of" in plan.notes[0].message
        assert [r.file.path for r in plan.ranges] == [str(log)]  # (the new bytes, read from the live file)
        assert [c["offset"] for c in copy] == [size]
    else:  # sizes 4 GiB apart both fit: which one is not known, and the copy is read
        assert str(tmp_path / "logs" / "access.log.1.gz") in [r.file.path for r in plan.ranges]


@pytest.mark.parametrize("directives", [" rotate 5\n copy", " rotate 5\n copy\n compress\n delaycompress",
                                        " rotate 5\n copy\n compress"])
def test_logrotates_copy_directive_counts_each_line_once(tmp_path: Path, directives: str) -> None:
    """logrotate's ``copy`` leaves the live log as it is and keeps copies of it: each run after a rotation read the
    live file again from its start (its copy had taken its cursor), 178 lines counted for 50 written over a few
    rotations. Now the copies, plain or compressed, are known as such and each line is counted once."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    written, counted, cur = 0, 0, []
    for batch in range(5):
        with open(log, "ab") as fh:
            fh.write(b"".join(entry(written + i) for i in range(10)))
        written += 10
        if batch:
            logrotate(log, directives)
        got, cur = read_plan(discover(str(log)), cur)
        counted += got.count(b"\n")
        assert counted == written, (batch, counted, written)
    assert len(glob.glob(str(log) + ".*")) == 4


def test_a_half_line_left_by_a_program_that_never_wrote_again_is_read_once_the_file_is_old(tmp_path: Path) -> None:
    """A rotated file's last line without a newline is held back while its program may still be writing it
    (nothing written anywhere newer); a program that wrote half a line and died never writes again, and the line
    waited for ever. Once the file was last written to STILL_WRITTEN_FOR ago, it is read."""
    from upkeeper.logs import sources

    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "access.log"
    log.write_bytes(entry(0))
    got, cur = read_plan(discover(str(log)), [])
    with open(log, "ab") as fh:
        fh.write(entry(1) + entry(2)[:25])  # … and the program died mid-line
    logrotate(log, " rotate 5\n create")
    got, cur = read_plan(discover(str(log)), cur)
    assert got == entry(1)  # (it may still be written: held back)
    rotated = tmp_path / "logs" / "access.log.1"
    old = rotated.stat().st_mtime - sources.STILL_WRITTEN_FOR - 60
    os.utime(rotated, (old, old))
    got, cur = read_plan(discover(str(log)), cur)
    assert got == entry(2)[:25]
    got, _ = read_plan(discover(str(log)), cur)
    assert got == b""
