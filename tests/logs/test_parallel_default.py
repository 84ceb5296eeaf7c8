"""The default number of scanning processes is capped, so memory does not grow with the machine's CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from upkeeper.logs import parallel
from upkeeper.logs.access import ScanOptions
from upkeeper.logs.synth import write_access_log


def test_workers_zero_means_one_per_cpu_but_at_most_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    units = []
    for i in range(4):  # four files, one unit each: enough work for up to four processes
        log = tmp_path / f"access-{i}.log"
        write_access_log(str(log), 50_000, seed=i)
        units.append(parallel.Unit(str(log), 0, log.stat().st_size, False, True, str(log)))
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 16)
    started: list[str] = []
    real = parallel._drive_helper

    def counting(*args: object, **kw: object) -> None:
        started.append("helper")
        real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(parallel, "_drive_helper", counting)
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(), units, workers=0, min_parallel=1)
    assert len(started) == 1  # the calling process and one helper, not 16 processes
    assert parallel.default_workers() == 2
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 1)
    assert parallel.default_workers() == 1
    assert partial.valid > 0


def test_a_big_log_is_cut_into_several_pieces_per_process(tmp_path: Path) -> None:
    """Each process gets about eight pieces of a big access log (at least 4 MB each): the one that finishes last
    scans its last piece alone, and a piece of a sixth of a 100 MB log left the other process idle for a third
    of a second; the pieces still cover the file exactly, cut at line starts.  A PostgreSQL log keeps three
    pieces a process (a cut may split a statement from its duration line)."""
    from upkeeper.logs.sources import discover, plan_reads

    log = tmp_path / "access.log"
    write_access_log(str(log), 48_000_000, seed=3)
    size = log.stat().st_size
    plan = plan_reads(discover(str(log), rotated=False), [], incremental=False)
    units = parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES)
    assert len(units) >= 10 and max(u.size_hint for u in units) <= 1.5 * (4 << 20)  # the last takes the rest
    assert units[0].start == 0 and units[-1].end == size
    assert all(a.end == b.start for a, b in zip(units, units[1:], strict=False))
    with open(log, "rb") as fh:
        for u in units[1:]:
            fh.seek(u.start - 1)
            assert fh.read(1) == b"\n"
    # (three a process: 45.8 MiB / 6 is 7.6 MiB, sized in whole MiB: 7, and 3.8 MiB are left for a seventh)
    assert [round(u.size_hint / 2**20) for u in parallel.units_for(plan.ranges, workers=2)] == [7] * 6 + [4]


def test_the_last_pieces_of_an_access_log_are_quarters_handed_out_last(tmp_path: Path) -> None:
    """The last piece per process is cut again into quarters: handed out last (the biggest first), they leave
    the processes out of work within a small piece of each other (with pieces of one size, the process that took the
    last one scanned it alone while the other waited: 20-55 ms of the 100 MB log's tail in most runs)."""
    from upkeeper.logs.sources import discover, plan_reads

    log = tmp_path / "access.log"
    write_access_log(str(log), 48_000_000, seed=3)
    size = log.stat().st_size
    plan = plan_reads(discover(str(log), rotated=False), [], incremental=False)
    whole = parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES)
    units = parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES, tail=parallel.ACCESS_TAIL)
    assert parallel.ACCESS_TAIL >= 1 and len(units) == len(whole) + 2 * 3 * parallel.ACCESS_TAIL
    assert units[:-8] == whole[:-2] and units[-8].start == whole[-2].start  # the last two pieces, in quarters
    small = units[-8:]
    assert max(u.size_hint for u in small) <= 0.4 * min(u.size_hint for u in whole[:-2])
    assert units[0].start == 0 and units[-1].end == size and units[-1].final == whole[-1].final
    assert all(a.end == b.start for a, b in zip(units, units[1:], strict=False))
    with open(log, "rb") as fh:
        for u in units[1:]:
            fh.seek(u.start - 1)
            assert fh.read(1) == b"\n"
    order = sorted(units, key=lambda u: -u.size_hint)  # the order scan hands them out in
    assert order[-8:] == sorted(small, key=lambda u: -u.size_hint)
    assert parallel.units_for(plan.ranges, workers=1, per_process=parallel.ACCESS_PIECES,
                              tail=parallel.ACCESS_TAIL) == parallel.units_for(plan.ranges, workers=1,
                                                                                per_process=parallel.ACCESS_PIECES)



def test_the_pieces_of_a_big_access_log_keep_their_size_to_the_end(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Past TAIL_MAX_UNIT a piece (a log of more than ~256 MB for two processes), the last pieces are not cut
    again: the processes' staggered end keeps the peak of the process tree where it was (a 1 GB log)."""
    from upkeeper.logs.sources import discover, plan_reads

    log = tmp_path / "access.log"
    write_access_log(str(log), 12_000_000, seed=3)
    plan = plan_reads(discover(str(log), rotated=False), [], incremental=False)
    whole = parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES)
    assert len(whole) == 3 and parallel.TAIL_MAX_UNIT >= 4 << 20  # (4 MB pieces, the least)
    cut = parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES, tail=parallel.ACCESS_TAIL)
    assert len(cut) >= 1 + 3 + 3 and cut[0] == whole[0]  # the last two pieces in quarters (or thirds: 1 MB at least)
    monkeypatch.setattr(parallel, "TAIL_MAX_UNIT", 2 << 20)
    assert parallel.units_for(plan.ranges, workers=2, per_process=parallel.ACCESS_PIECES,
                              tail=parallel.ACCESS_TAIL) == whole
