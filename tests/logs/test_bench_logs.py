"""bench/logs.py reports the figures of one run: the scan time is that of the run whose wall time it reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "logs.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_logs", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_scan_figure_comes_from_the_fastest_run() -> None:
    """On a loaded machine the runs differ by seconds: with the last run's scan time next to the fastest run's
    wall time, the benchmark printed a scan slower than the whole run (42 MB/s 'scan alone', 48 MB/s end to end)."""
    bench = load_bench()

    def run(seconds: float, scan: float) -> dict[str, object]:
        return {"seconds": seconds, "stdout": json.dumps([{"metrics": {"scan_seconds": scan}}]).encode()}

    runs = [run(3.0, 2.4), run(2.05, 1.3), run(4.1, 2.38)]
    assert bench.fastest_metrics(runs)["scan_seconds"] == 1.3
    assert bench.best(runs)["seconds"] == 2.05
