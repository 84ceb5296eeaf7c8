"""Run GoAccess 1.7 (from apt) exactly as SERVICES.md says and read its JSON report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs import parallel
from upkeeper.logs.access import ScanOptions, summarize
from upkeeper.logs.nginx_format import COMBINED_TIMED

GOACCESS_FORMAT = '%h %^[%d:%t %^] "%r" %s %b "%R" "%u" %T'
#: GoAccess 1.7 reads a log with fgets() into a 4096-byte buffer: a line of 4096 bytes or more (not counting
#: its newline) becomes several records, which upkeeper does not imitate (docs/logs.md, "Exactly GoAccess's
#: numbers").  Logs compared with GoAccess keep their lines at most this long; test_goaccess_exact.py tests
#: the exception itself.
GOACCESS_LINE_MAX = 4095


def longest_line(log: Path) -> int:
    """The length in bytes of the longest line of ``log``, without its newline."""
    return max(map(len, log.read_bytes().split(b"\n")))


def goaccess(log: Path, out_dir: Path, flags: list[str] | None = None, *, long_lines: bool = False) -> dict[str, Any]:
    """GoAccess's JSON report of ``log``; ``flags``: the format flags (default: SERVICES.md's, for
    combined_timed), e.g. ``to_goaccess(fmt).argv()``.  Its lines must be comparable (``long_lines``: do not
    check)."""
    exe = shutil.which("goaccess")
    if exe is None:
        pytest.fail("goaccess is not installed (scripts/ensure-system-deps.sh installs it)")
    if not long_lines:
        longest = longest_line(log)
        assert longest <= GOACCESS_LINE_MAX, f"{log} has a {longest}-byte line: GoAccess would split it"
    out = out_dir / f"{log.name}.goaccess.json"
    if flags is None:
        flags = [f"--log-format={GOACCESS_FORMAT}", "--date-format=%d/%b/%Y", "--time-format=%T"]
    res = subprocess.run([exe, str(log), *flags, "-o", str(out), "--no-progress"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    # GoAccess writes decoded URLs byte for byte, which is not always UTF-8
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8", errors="surrogateescape"))
    return data


def goaccess_numbers(data: dict[str, Any]) -> dict[str, Any]:
    g = data["general"]
    status: dict[str, int] = {}
    for group in data["status_codes"]["data"]:
        for item in group["items"]:
            status[item["data"].split(" ")[0]] = item["hits"]["count"]
    reqs = [(i["data"].encode("utf-8", "surrogateescape").decode("utf-8", "replace"), i["method"], i["protocol"],
             i["hits"]["count"]) for i in data["requests"]["data"]]
    hosts = {h["data"]: h["hits"]["count"] for h in data["hosts"]["data"]}
    # GoAccess keys a 404 by URL (with its query), method and protocol; our 404 list is by path
    not_found: dict[str, int] = {}
    for i in data["not_found"]["data"]:
        path = i["data"].encode("utf-8", "surrogateescape").decode("utf-8", "replace").split("?", 1)[0]
        not_found[path] = not_found.get(path, 0) + i["hits"]["count"]
    return {"total": g["total_requests"], "valid": g["valid_requests"], "failed": g["failed_requests"],
            "visitors": g["unique_visitors"], "bandwidth": g["bandwidth"], "status": status, "requests": reqs,
            "hosts": hosts, "not_found": not_found}


def ours(log: Path, *, workers: int = 1, fast: bool = True, fmt: str = COMBINED_TIMED, top_n: int = 10,
         **kw: Any) -> dict[str, Any]:
    import os

    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=1 << 20)
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=fmt, fast=fast, **kw), units,
                               workers=workers)
    return summarize(partial, top_n=top_n, log_format=fmt, client_ip=kw.get("client_ip", "remote_addr"))


#: the three ways a buffer can be scanned: pyarrow (even small buffers), the Python columnar split,
#: and the line-by-line GoAccess port
SCAN_PATHS: dict[str, dict[str, Any]] = {"arrow": {"arrow_min_buffer": 0}, "python": {"arrow": False},
                                         "line": {"fast": False}}


def assert_all_paths_same_as_goaccess(log: Path, out_dir: Path, fmt: str = COMBINED_TIMED) -> dict[str, Any]:
    """Every scanning path gives GoAccess's numbers for ``log`` read with the flags of ``to_goaccess(fmt)``;
    returns GoAccess's numbers."""
    from upkeeper.logs.nginx_format import to_goaccess

    ga = goaccess_numbers(goaccess(log, out_dir, to_goaccess(fmt).argv()))
    reports = {}
    for name, kw in SCAN_PATHS.items():
        mine = reports[name] = ours(log, fmt=fmt, **kw)
        try:
            assert_same_as_goaccess(mine, ga)
        except AssertionError as exc:
            raise AssertionError(f"the {name} path differs from GoAccess: {exc}") from exc
    # and they agree on everything else too (latency, top lists, security …)
    same = [{**{k: v for k, v in rep.items() if k != "fast_path_lines"},
             "invalid_samples": [{**s, "offset": None} for s in rep["invalid_samples"]]}  # the line path's alone
            for rep in reports.values()]
    assert same[0] == same[1] == same[2]
    return ga


def assert_same_as_goaccess(mine: dict[str, Any], ga: dict[str, Any]) -> None:
    g = mine["goaccess"]
    assert g["total_requests"] == ga["total"]
    assert g["valid_requests"] == ga["valid"]
    assert g["failed_requests"] == ga["failed"]
    assert g["unique_visitors"] == ga["visitors"]
    assert g["bandwidth"] == ga["bandwidth"]
    # GoAccess labels unknown codes "Unknown", so compare the counts per code we both know
    known = {k: v for k, v in ga["status"].items() if k.isdigit()}
    assert {k: g["status_codes"].get(k) for k in known} == known
    assert sorted(g["status_codes"].values()) == sorted(ga["status"].values())
    assert_top_requests(g["requests"], ga["requests"])
    assert_top([(h["ip"], h["hits"]) for h in mine["top"]["hosts"]], ga["hosts"])
    assert_top([(h["path"], h["hits"]) for h in mine["top"]["not_found"]], ga["not_found"])


def assert_top(top10: list[tuple[str, int]], ga_all: dict[str, int]) -> None:
    """Our top 10 of a panel equals GoAccess's: the same hits in order, each entry with GoAccess's hits, and
    every entry above the cut present (GoAccess orders ties its own way)."""
    ga_sorted = sorted(ga_all.values(), reverse=True)
    n = min(10, len(ga_sorted))
    assert [h for _k, h in top10] == ga_sorted[:n]
    for k, h in top10:
        assert ga_all.get(k) == h, k
    cut = ga_sorted[n - 1] if n else 0
    assert {k for k, h in ga_all.items() if h > cut} <= {k for k, _h in top10}


def assert_top_requests(top10: list[dict[str, Any]], ga_all: list[tuple[str, str, str, int]]) -> None:
    """Our top 10 equals GoAccess's: same hit counts in order, same keys (ties at the cut may differ)."""
    ga_sorted = sorted(ga_all, key=lambda r: -r[3])
    n = min(10, len(ga_sorted))
    assert [r["hits"] for r in top10] == [r[3] for r in ga_sorted[:n]]
    cut = ga_sorted[n - 1][3] if n else 0
    ga_hits = {(d, m, p): h for d, m, p, h in ga_all}
    for r in top10:
        key = (r["data"], r["method"], r["protocol"])
        assert ga_hits.get(key) == r["hits"], key
    above = {(d, m, p) for d, m, p, h in ga_sorted[:n] if h > cut}
    assert above <= {(r["data"], r["method"], r["protocol"]) for r in top10}
