"""Examples kept from a log (attack requests, unparsable lines, untrusted addresses) do not depend on how the log
was cut among processes: the same report, samples included, with one process or two, large or small pieces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logs.test_stats import imported_after
from upkeeper.logs import parallel
from upkeeper.logs.access import ScanOptions, summarize
from upkeeper.logs.nginx_format import COMBINED_TIMED
from upkeeper.logs.samples import keep_first, merge_first


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=4)), st.integers(1, 6), st.lists(st.integers(0, 5)), st.randoms())
def test_the_kept_values_are_the_first_in_order_however_the_values_are_shared_out(
        values: list[bytes], cap: int, owners: list[int], rnd: Any) -> None:
    parts: list[list[bytes]] = [[] for _ in range(6)]
    for i, v in enumerate(values):  # each value goes to some process, in any order
        keep_first(parts[owners[i % len(owners)] if owners else 0], v, cap)
    rnd.shuffle(parts)
    merged: list[bytes] = []
    for p in parts:
        merged = merge_first(merged, p, cap)
    assert merged == sorted(set(values))[:cap]
    assert all(len(p) <= cap for p in parts)


def _line(i: int, req: str, status: int = 404) -> bytes:
    return (f'198.51.100.{i % 200 + 1} - - [04/Mar/2024:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] "{req}" {status} 12 '
            f'"-" "Mozilla/5.0" 0.010\n').encode()


def _log(path: Path) -> None:
    """Ordinary lines, with attack requests (more distinct ones than the samples kept) and unparsable lines spread
    through the file, the smallest ones (in byte order) near its end."""
    out = []
    for i in range(24_000):
        if i % 400 == 7:
            n = 100 - i // 400  # distinct probes, later ones sort first
            out.append(_line(i, f"GET /search?q={n}%27%20OR%201=1-- HTTP/1.1", 500))
            out.append(_line(i, f"GET /files/{n}/..%2F..%2F..%2Fetc%2Fpasswd HTTP/1.1"))
        elif i % 900 == 13:
            out.append(f"garbage line {60 - i // 900} here\n".encode())
        else:
            out.append(_line(i, f"GET /items/{i % 300} HTTP/1.1", 200))
    path.write_bytes(b"".join(out))


def _report(log: Path, *, workers: int, unit: int, reverse: bool = False) -> dict[str, Any]:
    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=unit)
    if reverse:
        units.reverse()
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0),
                               units, workers=workers, min_parallel=0)
    rep: dict[str, Any] = summarize(partial, log_format=COMBINED_TIMED)
    rep.pop("fast_path_lines")
    rep["invalid_samples"] = [{**s, "offset": None} for s in rep["invalid_samples"]]  # the line path's alone
    return rep


def test_the_report_and_its_samples_are_the_same_whatever_the_cut(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _log(log)
    one = _report(log, workers=1, unit=1 << 30)
    attacks = {a["category"]: a for a in one["security"]["attacks"]}
    # the first distinct requests in byte order, not the first seen
    assert attacks["sql_injection"]["samples"][:2] == ["GET /search?q=100%27%20OR%201=1-- HTTP/1.1",
                                                       "GET /search?q=41%27%20OR%201=1-- HTTP/1.1"]
    assert one["invalid"] == 27 and len(one["invalid_samples"]) == 10
    assert one["invalid_samples"][0]["line"] == "garbage line 34 here"
    for kw in ({"workers": 2, "unit": 200_000}, {"workers": 1, "unit": 150_000, "reverse": True},
               {"workers": 2, "unit": 90_000, "reverse": True}):
        assert _report(log, **kw) == one, kw  # type: ignore[arg-type]


def test_the_access_and_postgres_workers_do_not_import_the_error_log_parser() -> None:
    """:func:`~upkeeper.logs.samples.trace_excerpt` lives here: the HTML reports imported the error-log parser for
    it, ~10 ms of every access and PostgreSQL run's worker (what it imports before a run: its task's libraries)."""
    code = ("from upkeeper import lazy\n"
            "import upkeeper.tasks.logs.nginx, upkeeper.tasks.logs.postgres\n"
            "lazy.load_all(first=['upkeeper.tasks.logs.nginx', 'upkeeper.tasks.logs.postgres'])\n")
    assert imported_after(code, ("upkeeper.logs.report_html", "upkeeper.logs.access", "upkeeper.logs.errorlog")) \
        == ["upkeeper.logs.access", "upkeeper.logs.report_html"]
