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

    def counting(*args: object) -> None:
        started.append("helper")
        real(*args)  # type: ignore[arg-type]

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
    assert len(parallel.units_for(plan.ranges, workers=2)) == 6
