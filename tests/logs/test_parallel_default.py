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
