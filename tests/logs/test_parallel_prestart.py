"""Helpers started ahead of a scan (parallel.prestart): taken by the scan, dismissed when it needs none, replaced
when one died while waiting — and the scan's figures are the same as with helpers it starts itself."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs import parallel
from upkeeper.logs.access import ScanOptions
from upkeeper.logs.synth import write_access_log

ACCESS = "upkeeper.logs.access"


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    parallel.dismiss_prestarted()


def _units(tmp_path: Path, n: int = 2, size: int = 3 << 20) -> list[parallel.Unit]:
    units = []
    for i in range(n):
        log = tmp_path / f"access-{i}.log"
        write_access_log(str(log), size, seed=i)
        units.append(parallel.Unit(str(log), 0, log.stat().st_size, False, True, str(log)))
    return units


def _figures(p: Any) -> tuple[Any, ...]:
    return p.lines, p.valid, p.bandwidth, sorted(p.status.items()), len(p.hosts)


def _wait_gone(sp: Any, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while (rc := sp.popen.poll()) is None:
        assert time.monotonic() < deadline, "the helper did not exit"
        time.sleep(0.02)
    return int(rc)


def test_the_scan_takes_the_prestarted_helper_and_counts_the_same(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    units = _units(tmp_path)
    alone, _ = parallel.scan(ACCESS, ScanOptions(), units, workers=1)
    assert parallel.prestart(ACCESS, 1) == 1
    pre = parallel._prestarted[0][1]
    used: list[Any] = []
    real = parallel._drive_helper

    def recording(*args: Any, **kw: Any) -> None:
        used.append(args[8])  # (the helper: the argument after continuation)
        real(*args, **kw)

    monkeypatch.setattr(parallel, "_drive_helper", recording)
    together, _ = parallel.scan(ACCESS, ScanOptions(), units, workers=2, min_parallel=1)
    assert used == [pre]  # that process, not a new one
    assert parallel._prestarted == []
    assert _wait_gone(pre) == 0
    assert _figures(together) == _figures(alone) and together.lines > 0


def test_a_scan_that_needs_no_helper_dismisses_the_prestarted_one(tmp_path: Path) -> None:
    units = _units(tmp_path, n=1, size=100_000)
    assert parallel.prestart(ACCESS, 1) == 1
    pre = parallel._prestarted[0][1]
    partial, _ = parallel.scan(ACCESS, ScanOptions(), units, workers=2)  # below min_parallel: no helper
    assert partial.lines == Path(units[0].path).read_bytes().count(b"\n") > 0
    assert parallel._prestarted == []
    assert pre.popen.poll() is not None  # ended, and waited for (no zombie)


def test_a_prestarted_helper_that_died_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    units = _units(tmp_path)
    alone, _ = parallel.scan(ACCESS, ScanOptions(), units, workers=1)
    assert parallel.prestart(ACCESS, 1) == 1
    pre = parallel._prestarted[0][1]
    pre.popen.kill()
    _wait_gone(pre)
    together, _ = parallel.scan(ACCESS, ScanOptions(), units, workers=2, min_parallel=1)
    assert _figures(together) == _figures(alone)


def test_a_dismissed_helper_exits_at_once_and_cleanly() -> None:
    assert parallel.prestart(ACCESS, 2) == 2
    procs = [sp for _k, sp in parallel._prestarted]
    parallel.dismiss_prestarted()
    assert parallel._prestarted == []
    assert [sp.popen.returncode for sp in procs] == [0, 0]
    assert all(sp.collector.text.strip() == "" for sp in procs)  # no traceback on its way out


def test_a_warm_helper_loads_pyarrow_before_it_is_sent_anything() -> None:
    """``--warm KIND`` imports what KIND scans with at once (on another core, while the run is being sent)."""
    proc = subprocess.Popen([sys.executable, "-m", "upkeeper.logs.scanworker", "--warm", ACCESS],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        maps = Path(f"/proc/{proc.pid}/maps")
        while "libarrow" not in maps.read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pyarrow was not loaded"
            time.sleep(0.05)
        out, err = proc.communicate(b"", timeout=30)  # end of input before any message: exit 0, quietly
        assert (proc.returncode, out, err) == (0, b"", b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_warm_helper_nobody_takes_exits_on_its_own() -> None:
    """A head start no scan took (the worker ran another job first) holds its memory for WARM_IDLE seconds at most,
    even while its parent keeps the pipe open."""
    code = ("import sys\nfrom upkeeper.logs import scanworker\n"
            "sys.exit(scanworker.main(['--warm', 'upkeeper.logs.access'], idle=0.5))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.wait(timeout=60) == 0  # stdin still open: the idle limit ended it
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_several_head_starts_share_the_helpers() -> None:
    """``upkeeper run`` of three access-log jobs: one scan's worth of helpers, not three (a scan dismisses the
    helpers it does not take)."""
    assert parallel.prestart(ACCESS, 1) == 1
    assert parallel.prestart(ACCESS, 1) == 0
    assert parallel.prestart(ACCESS, 2) == 1
    assert len(parallel._prestarted) == 2
