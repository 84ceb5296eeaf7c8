"""The pyarrow path (upkeeper.logs.arrowscan) gives exactly the numbers of the pure-Python paths —
the line-by-line GoAccess port is the reference — and GoAccess's own totals."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logs.goaccess_helpers import assert_same_as_goaccess, goaccess, goaccess_numbers
from logs.test_access_parse import GOOD, comparable, feed_in_chunks, mutated_log
from logs.test_goaccess_exact import EDGE_CASES
from upkeeper.logs import access, parallel
from upkeeper.logs.access import Accumulator, LoginPath, ScanOptions, SecurityTail, security_tail, summarize
from upkeeper.logs.arrowscan import arrow_plan
from upkeeper.logs.nginx_format import COMBINED, COMBINED_TIMED, MAIN
from upkeeper.logs.synth import write_access_log

#: why a test of the C paths fails where upkeeper.logs._cut is missing
NOT_BUILT = "the C extension upkeeper.logs._cut is not built here: 'make venv' (pip install -e .) builds it"
ISO_UPSTREAM = ('$remote_addr - $remote_user [$time_iso8601] $host "$request" $status $body_bytes_sent '
                '"$http_referer" "$http_user_agent" $request_time $upstream_response_time')


def scan(data: bytes, *, chunk: int = 1 << 20, fmt: str = COMBINED_TIMED, **kw: Any) -> tuple[dict[str, Any], int]:
    """The comparable report and the number of lines the pyarrow path aggregated."""
    acc = Accumulator(ScanOptions(log_format=fmt, arrow_min_buffer=0, **kw))
    feed_in_chunks(acc, data, chunk)
    arrow_lines = acc.arrow.lines if acc.arrow is not None else 0
    return comparable(summarize(acc.partial(), top_n=50)), arrow_lines


def assert_equivalent(data: bytes, *, fmt: str = COMBINED_TIMED, chunk: int = 1 << 20) -> tuple[dict[str, Any], int]:
    fast, arrow_lines = scan(data, fmt=fmt, chunk=chunk)  # the line cut in C where the format allows
    kernels, kernel_lines = scan(data, fmt=fmt, chunk=chunk, native_cut=False)  # the pyarrow cut
    python_fast, none = scan(data, fmt=fmt, chunk=chunk, arrow=False)
    reference, _ = scan(data, fmt=fmt, chunk=chunk, fast=False)
    assert none == 0
    assert fast == reference
    assert kernels == reference
    # the same lines on both cuts, but the lines with lists of upstream values: the C cut takes them collapsed
    # (access.Accumulator._collapsed), the pyarrow cut leaves them to the line parser
    assert kernel_lines == arrow_lines or kernel_lines < arrow_lines and (b", " in data or b" : " in data)
    assert python_fast == reference
    return fast, arrow_lines


ODD = [
    # truncated lines: a static file without status, a request cut inside its quotes, no agent
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /x.css HTTP/1.1"',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /x.css HTTP/1.1" 200',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /cut',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 10 "-"',
    # odd quoting: escaped quotes, empty values, blanks inside the quotes, a trailing backslash
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /q\\"x HTTP/1.1" 200 10 "-" "a\\"b" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "" 400 0 "" "" 0.000',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] " GET /sp HTTP/1.1 " 200 10 "-" " ua " 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /bs HTTP/1.1" 200 10 "-" "ua\\" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /tab\tx HTTP/1.1" 200 10 "-" "u\ta" 0.1',
    # non-UTF-8 bytes in the request, the agent, the referer and the address
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /\xff\xfe HTTP/1.1" 200 10 "\xc3\x28" "\x80ua" 0.1',
    b'1.1.1.\xb9 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 10 "-" "ua" 0.1',
    # CRLF, a NUL, brackets where GoAccess skips, big and odd sizes, odd times and statuses
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /crlf HTTP/1.1" 200 10 "-" "ua" 0.1\r',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /nul\x00 HTTP/1.1" 200 10 "-" "ua" 0.1',
    b'1.1.1.9 - [x] [01/Mar/2024:10:00:00 +0000] "GET /br HTTP/1.1" 200 10 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /big HTTP/1.1" 200 99999999999999999999 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /neg HTTP/1.1" 200 -5 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 -0700] "GET /tz HTTP/1.1" 200 1 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:60 +0000] "GET /sec60 HTTP/1.1" 200 1 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:62 +0000] "GET /sec62 HTTP/1.1" 200 1 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /s HTTP/1.1" 0404 1 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /s HTTP/1.1" 4O4 1 "-" "ua" 0.1',
    b'1.1.1.9  - - [01/Mar/2024:10:00:00 +0000] "GET /two-spaces HTTP/1.1" 200 1 "-" "ua" 0.1',
    b'1.1.1.9 - - [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 1 "-" "ua" 0.1 extra',
    # attacks, scanners, failed logins and 404 bursts take per-row detours
    b'6.6.6.6 - - [01/Mar/2024:10:00:00 +0000] "GET /../../etc/passwd HTTP/1.1" 404 1 "-" "sqlmap/1.8" 0.1',
    b'6.6.6.6 - - [01/Mar/2024:10:00:00 +0000] "POST /login HTTP/1.1" 401 1 "-" "Nikto" 0.1',
    b'6.6.6.6 - - [01/Mar/2024:10:00:00 +0000] "POST /wp-login.php HTTP/1.1" 403 1 "-" "x" 0.1',
    b'6.6.6.8 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "${jndi:ldap://x.oast.fun/a}" "Mozilla/5.0" 0.1',
    # form logins: a failure shows the form again (200), a success redirects (302)
    b'6.6.6.7 - - [01/Mar/2024:10:00:00 +0000] "POST /wp-login.php?redirect_to=%2F HTTP/1.1" 200 1 "-" "x" 0.1',
    b'6.6.6.7 - - [01/Mar/2024:10:00:00 +0000] "POST /admin/login/?next=/admin/ HTTP/1.1" 200 1 "-" "x" 0.1',
    b'6.6.6.7 - - [01/Mar/2024:10:00:00 +0000] "POST /wp-login.php HTTP/1.1" 302 0 "-" "x" 0.1',
    b'6.6.6.7 - - [01/Mar/2024:10:00:00 +0000] "POST /oauth/token HTTP/1.1" 400 1 "-" "x" 0.1',
    b"# a comment",
    b"",
    b"garbage",
]


def test_edge_cases_are_exact() -> None:
    lines = GOOD * 30 + ODD + EDGE_CASES.split(b"\n") + GOOD * 30
    data = b"\n".join(lines) + b"\n"
    for chunk in (1 << 20, 700, 97):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        assert rep["invalid"] > 10 and rep["ignored"] == 4  # two here, two in EDGE_CASES
        assert arrow_lines <= rep["requests"] < rep["lines"]


def test_a_buffer_of_many_short_lines_is_cut_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C cut's working space is ~25 bytes per line and field: a buffer of empty lines (4 MB: 4 million lines)
    took 640 MB in one call, and a 20 MB file of them 0.94 GB.  Past CUT_MAX_LINES the buffer is cut in pieces at
    line ends: the same figures, the same line numbers of the samples."""
    from upkeeper.logs import arrowscan

    data = b"".join(g + b"\n" + b"\n" * (i % 5) for i, g in enumerate(GOOD * 40)) + b"\n" * 300 + b"".join(ODD) + b"\n"
    whole, whole_lines = scan(data)
    assert whole_lines > 0
    seen: list[int] = []
    real = arrowscan.ArrowScanner._feed_cut

    def counting(self: Any, buf: bytes, source: str, offset: int) -> None:
        if buf.count(b"\n") <= arrowscan.CUT_MAX_LINES:
            seen.append(buf.count(b"\n"))
        real(self, buf, source, offset)

    monkeypatch.setattr(arrowscan.ArrowScanner, "_feed_cut", counting)
    for limit in (1, 7, 50):
        monkeypatch.setattr(arrowscan, "CUT_MAX_LINES", limit)
        seen.clear()
        pieces, piece_lines = scan(data)
        assert pieces == whole and piece_lines == whole_lines
        # (every line but the empty ones, which are counted and taken out before the cut)
        assert seen and max(seen) <= limit and sum(seen) == sum(1 for x in data.split(b"\n")[:-1] if x)


def test_a_file_of_empty_lines_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """The whole CLI on 12 MB of empty lines (three 4 MB buffers of 4 million lines each): ~0.65 GB before."""
    import subprocess

    log = tmp_path / "blank.log"
    log.write_bytes(b"\n" * 12_000_000)
    # the peak of this process image: VmHWM (getrusage's ru_maxrss keeps the pytest worker's peak across the exec,
    # 0.6 GB in a CI run); the CLI ends with os._exit, after the atexit handlers
    code = ("import atexit, runpy, sys\n"
            "def peak():\n"
            "    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0].split()[1]\n"
            "    sys.stderr.write(f'PEAK {hwm}\\n')\n"
            "atexit.register(peak)\n"
            "sys.argv = ['upkeeper', 'logs', 'nginx', sys.argv[1], '--workers', '1', '--json']\n"
            "runpy.run_module('upkeeper', run_name='__main__')\n")
    res = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, timeout=300)
    assert res.returncode in (0, 1), res.stderr[-2000:]
    peak_mb = int(res.stderr.decode().rsplit("PEAK ", 1)[1].split()[0]) / 1024
    assert peak_mb < 300, peak_mb


def test_generated_log_is_exact_and_mostly_vectorized(tmp_path: Path) -> None:
    log = tmp_path / "gen.log"
    write_access_log(str(log), 3_000_000, seed=5, invalid_ratio=0.003)
    data = log.read_bytes()
    rep, arrow_lines = assert_equivalent(data, chunk=300_000)
    assert rep["invalid"] > 0
    assert arrow_lines >= 0.99 * rep["requests"]


def test_request_line_cache_starting_over_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the cache of request lines is full it starts over, keeping the entries of the buffer at hand."""
    monkeypatch.setattr(access, "CACHE_MAX", 150)
    log = tmp_path / "gen.log"
    write_access_log(str(log), 400_000, seed=9, invalid_ratio=0.003)
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, log.read_bytes(), 40_000)  # ~140 lines, ~100 distinct request lines a buffer
    assert len(acc.ep_of) <= 150 and acc.arrow is not None and acc.arrow.lines > 1000
    rep = comparable(summarize(acc.partial(), top_n=50))
    reference, _ = scan(log.read_bytes(), chunk=40_000, fast=False)
    assert rep == reference


@pytest.mark.parametrize("fmt", [COMBINED, MAIN])
def test_other_formats_are_exact(fmt: str) -> None:
    plain = [g.rsplit(b" ", 1)[0] for g in GOOD]  # combined: no request time
    lines = plain if fmt == COMBINED else [g + b' "10.0.0.1, 10.0.0.2"' for g in plain]
    data = b"\n".join(lines * 20 + ODD) + b"\n"
    rep, arrow_lines = assert_equivalent(data, fmt=fmt)
    assert arrow_lines > 0 and rep["requests"] > 0


def test_iso_time_host_and_upstream_format_is_exact() -> None:
    good = [
        b'1.2.3.4 - - [2024-03-01T10:00:00+00:00] a.example "GET /x?y=1 HTTP/1.1" 200 5 "-" "ua" 0.250 0.200',
        b'1.2.3.5 - bob [2024-03-01T10:01:00+00:00] b.example "POST /login HTTP/2.0" 401 5 "-" "curl/8" 1.5 1.4',
        b'1.2.3.5 - - [2024-03-01T10:01:00+00:00] b.example "GET /up HTTP/1.1" 502 5 "-" "ua" 1.5 1.2, 0.3',
        b'1.2.3.5 - - [2024-03-01T10:01:00-05:00] b.example "GET /tz HTTP/1.1" 200 5 "-" "ua" 1.5 -',
        b'1.2.3.6 - - [2024-02-30T10:01:00+00:00] b.example "GET /bad-date HTTP/1.1" 200 5 "-" "ua" 1.5 -',
    ]
    assert arrow_plan(ISO_UPSTREAM) is not None
    rep, arrow_lines = assert_equivalent(b"\n".join(good * 10) + b"\n", fmt=ISO_UPSTREAM)
    # lines 1, 2, 4 (a negative UTC offset) and 5 (strptime takes Feb 30, as in GoAccess); 3 with its list of
    # upstream times collapsed (access.Accumulator._collapsed; it went to the line parser before)
    assert arrow_lines == 50 and rep["requests"] == 50
    # upstream samples: 200 ms, 1400 ms and 1200 + 300 ms (a retry: the sum), ten each; "-" is no sample
    assert rep["latency"]["upstream"]["p50"] == 1400.0 and rep["latency"]["upstream"]["count"] == 30


def test_unsupported_formats_stay_on_the_python_path() -> None:
    prefixed = ('$remote_addr [$time_local] "$request" $status $body_bytes_sent rt=$request_time '
                '"$http_user_agent"')
    repeated = '$remote_addr - $remote_user [$time_local] "$request" $status $status "$http_user_agent"'
    no_status = '$remote_addr [$time_local] "$request" $body_bytes_sent'
    msec = '$remote_addr $msec "$request" $status'
    for fmt in (prefixed, repeated, no_status, msec):
        assert arrow_plan(fmt) is None, fmt
    assert arrow_plan(COMBINED) is not None and arrow_plan(COMBINED_TIMED) is not None
    line = b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 200 5 rt=0.250 "ua"\n' * 5
    rep, arrow_lines = assert_equivalent(line, fmt=prefixed)
    assert arrow_lines == 0 and rep["requests"] == 5


def test_without_pyarrow_the_python_path_does_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.compute", None)
    data = b"\n".join(GOOD * 50) + b"\n"
    rep, arrow_lines = scan(data)
    assert arrow_lines == 0
    assert rep == scan(data, fast=False)[0]
    assert rep["requests"] == 250


def test_small_buffers_do_not_import_pyarrow() -> None:
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED))
    acc.feed(b"\n".join(GOOD) + b"\n")
    assert acc.arrow is None and not acc.arrow_tried
    acc.feed(b"\n".join(GOOD * 3000) + b"\n")  # > 256 KB
    assert acc.arrow is not None and acc.arrow.lines == len(GOOD) * 3000


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_log(), st.sampled_from([64, 300, 1 << 20]))
def test_fuzz_arrow_equals_line_parser(data: bytes, chunk: int) -> None:
    fast, _ = scan(data, chunk=chunk)
    assert fast == scan(data, chunk=chunk, fast=False)[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(GOOD + ODD), min_size=1, max_size=80), st.sampled_from([150, 1 << 20]))
def test_fuzz_mixed_odd_lines(lines: list[bytes], chunk: int) -> None:
    data = b"\n".join(lines) + b"\n"
    assert scan(data, chunk=chunk)[0] == scan(data, chunk=chunk, fast=False)[0]


def test_arrow_path_matches_goaccess(tmp_path: Path) -> None:
    log = tmp_path / "gen.log"
    write_access_log(str(log), 4_000_000, seed=17, invalid_ratio=0.003)
    # a size beyond 2**64 - 1 is invalid to upkeeper, 0 bytes to GoAccess: the documented exception, tested in
    # test_goaccess_exact.py
    odd = [line for line in ODD if b" 99999999999999999999 " not in line]
    assert len(odd) == len(ODD) - 1
    with open(log, "ab") as fh:
        fh.write(b"\n".join(odd) + b"\n" + b"\n".join(GOOD * 20) + b"\n")
    ga = goaccess_numbers(goaccess(log, tmp_path))
    assert ga["failed"] > 0
    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=1 << 20)
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0),
                               units, workers=1)
    mine = summarize(partial, top_n=10)
    assert_same_as_goaccess(mine, ga)
    assert mine["fast_path_lines"] >= 0.99 * mine["requests"]


def test_partial_result_leaves_no_per_line_cache_behind(tmp_path: Path) -> None:
    """Building the partial result frees every cache the scan kept per distinct value (request lines, referers,
    addresses, agents, statuses), the scanner's too, and the raw request-line counter: in a scanning process
    they are dead weight while the other processes still scan (tens of MB on a 1 GB log); the result stays
    exact."""
    log = tmp_path / "gen.log"
    write_access_log(str(log), 400_000, seed=31, invalid_ratio=0.003)
    data = log.read_bytes()
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, data, 100_000)
    scanner = acc.arrow
    assert scanner is not None and acc.ref_host and acc.ref_exploit and acc.ip_ok and scanner.ips
    rep = comparable(summarize(acc.partial(), top_n=50))
    caches = {name: getattr(acc, name) for name in (
        "c_req", "ep_of", "static_of", "ep_intern", "login_of", "ip_ok", "status_ok", "ref_exploit", "ref_host",
        "ua_scanner", "attack_of", "sensitive_of", "probe_path_of", "route_ok", "page_of", "visitors")}
    caches |= {f"scanner.{name}": getattr(scanner, name) for name in ("ips", "agents", "ep_ids", "ep_list")}
    assert {name: len(c) for name, c in caches.items() if c} == {}
    reference, _ = scan(data, chunk=100_000, fast=False)
    assert rep == reference


def test_helper_processes_hand_back_their_results_in_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    log = tmp_path / "gen.log"
    write_access_log(str(log), 2_000_000, seed=23, invalid_ratio=0.003)
    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=300_000)
    opts = ScanOptions(log_format=COMBINED_TIMED)
    alone, _ = parallel.scan("upkeeper.logs.access", opts, units, workers=1)
    calls: list[str] = []
    real_load = parallel.pickle.load

    def load(fh: Any) -> Any:
        calls.append(fh.name)
        return real_load(fh)

    monkeypatch.setattr(parallel.pickle, "load", load)
    # min_parallel=0: a helper process even for this small log
    shared, _ = parallel.scan("upkeeper.logs.access", opts, units, workers=2, min_parallel=0)
    assert len(calls) == 1  # one helper's result came through a file …
    result = Path(calls[0])
    assert result.name.startswith("upkeeper-scan-") and str(result.parent) == tempfile.gettempdir()
    assert not result.exists()  # … which is gone (not a glob of the temp dir: other scans may run meanwhile)
    assert comparable(summarize(shared)) == comparable(summarize(alone))
    assert shared.lines == alone.lines > 5000


def test_minimal_format_without_agent_referer_or_size_is_exact() -> None:
    fmt = '$remote_addr [$time_local] "$request" $status $upstream_response_time'
    assert arrow_plan(fmt) is not None
    lines = [b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /a?x=1 HTTP/1.1" 200 0.010',
             b'1.2.3.5 [01/Mar/2024:10:00:09 +0000] "GET /../etc/passwd HTTP/1.1" 404 -',
             b'1.2.3.6 [01/Mar/2024:10:01:00 +0000] "POST /login HTTP/1.1" 401 0.2',
             b'1.2.3.6 [01/Mar/2024:10:01:00 +0000] "GET /x.js HTTP/1.1" 200',
             b'1.2.3.7 [01/Mar/2024:10:01:00 +0000] "GET /b HTTP/1.1" 999 0.1']
    rep, arrow_lines = assert_equivalent(b"\n".join(lines * 15) + b"\n", fmt=fmt)
    # the line that ends after its status and the status 999 fall back and are invalid (as in GoAccess)
    assert arrow_lines == rep["requests"] == 45 and rep["invalid"] == 30
    assert rep["visitors"] == 1  # the 401 and the 404 do not count; no agent means "-"


def test_importing_the_scanner_does_not_import_pyarrow() -> None:
    import subprocess

    code = ("import sys, upkeeper.logs.access, upkeeper.logs.arrowscan, upkeeper.tasks.logs.nginx; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_scanning_helper_does_not_load_openssl() -> None:
    """A helper process imports what scanning needs, not hashlib (OpenSSL, ~4 MB of RSS in every scanning
    process): cursors' digests are the calling process's business."""
    import subprocess

    code = ("import sys, upkeeper.logs.scanworker, upkeeper.logs.parallel, upkeeper.logs.access, "
            "upkeeper.logs.arrowscan; print(sorted(m for m in sys.modules if 'hashlib' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- lists of upstream values -------------------------------------------------------------------

UPSTREAM_FMT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
                '"$http_user_agent" $upstream_addr $upstream_status $upstream_response_time $request_time')
UPSTREAM_GOOD = [
    b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "Mozilla/5.0 (KHTML, like Gecko)" '
    b'10.0.0.1:80 200 0.020 0.030',
    b'1.2.3.5 - - [01/Mar/2024:10:00:01 +0000] "GET /b HTTP/1.1" 502 5 "-" "curl/8" 10.0.0.1:80 502 0.300 0.310',
    b'1.2.3.6 - - [01/Mar/2024:10:00:02 +0000] "POST /c HTTP/1.1" 404 5 "-" "ua" - - - 0.001',
]
UPSTREAM_LISTS = [
    # a retry within the upstream group, an internal redirect to another group, both
    b'1.2.3.7 - - [01/Mar/2024:10:00:03 +0000] "GET /retry HTTP/1.1" 200 5 "-" "ua" '
    b'10.0.0.1:80, 10.0.0.2:80 502, 200 0.800, 0.100 0.950',
    b'1.2.3.8 - - [01/Mar/2024:10:00:04 +0000] "GET /redirect HTTP/1.1" 200 5 "-" "ua" '
    b'10.0.0.1:80 : unix:/run/app.sock 200 : 200 0.004 : 0.010 0.020',
    b'1.2.3.9 - - [01/Mar/2024:10:00:05 +0000] "GET /both HTTP/1.1" 504 5 "-" "ua" '
    b'10.0.0.1:80, 10.0.0.2:80 : 10.0.1.1:80 504, 504 : 504 1.000, - : 2.000 3.100',
]


def test_lists_of_upstream_values_are_read_whole_on_every_path() -> None:
    """nginx writes one upstream value per server contacted ("0.800, 0.100"); an unquoted list before
    $request_time shifted the tokens: the request time was lost (or the next value taken for it)."""
    data = b"\n".join(UPSTREAM_GOOD * 40 + UPSTREAM_LISTS + UPSTREAM_GOOD * 40) + b"\n"
    for chunk in (1 << 20, 500):
        rep, arrow_lines = assert_equivalent(data, fmt=UPSTREAM_FMT, chunk=chunk)
        assert rep["requests"] == 243 and rep["invalid"] == 0
        assert arrow_lines >= 200 or chunk == 500  # the lines without a list stay vectorized
        lat = rep["latency"]
        assert lat["overall"]["count"] == 243 and lat["overall"]["max"] == 3100.0
        # 0.800 + 0.100, 0.004 + 0.010, 1.000 + 2.000 ("-": no response from that one)
        ups = {e["endpoint"]: e for e in rep["endpoints"]}
        assert ups["GET /retry"]["max"] == 950.0 and ups["GET /both"]["max"] == 3100.0
        assert lat["upstream"]["max"] == 3000.0 and lat["upstream"]["count"] == 2 * 80 + 3  # "-" is no time
    python_fast, _ = scan(data, fmt=UPSTREAM_FMT, arrow=False)
    assert python_fast["requests"] == 243


def test_a_format_that_writes_a_list_separator_itself_is_read_line_by_line() -> None:
    fmt = '$remote_addr [$time_local] "$request" $status $upstream_status : $upstream_response_time $request_time'
    assert arrow_plan(fmt) is None
    lines = [b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 200 : 0.020 0.030',
             b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /b HTTP/1.1" 200 502, 200 : 0.2, 0.1 0.4']
    rep, arrow_lines = assert_equivalent(b"\n".join(lines * 30) + b"\n", fmt=fmt)
    assert arrow_lines == 0 and rep["requests"] == 60
    assert rep["latency"]["overall"]["max"] == 400.0 and rep["latency"]["upstream"]["max"] == 300.0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(UPSTREAM_GOOD + UPSTREAM_LISTS + ODD), min_size=1, max_size=120),
       st.sampled_from([150, 1 << 20]))
def test_fuzz_upstream_lists_agree_on_every_path(lines: list[bytes], chunk: int) -> None:
    data = b"\n".join(lines) + b"\n"
    fast, _ = scan(data, chunk=chunk, fmt=UPSTREAM_FMT)
    assert fast == scan(data, chunk=chunk, fmt=UPSTREAM_FMT, arrow=False)[0]
    assert fast == scan(data, chunk=chunk, fmt=UPSTREAM_FMT, fast=False)[0]
    # every line with a list has its request time read
    timed = {e["endpoint"]: e["timed"] for e in fast["endpoints"]}
    for line, endpoint in zip(UPSTREAM_LISTS, ("GET /retry", "GET /redirect", "GET /both"), strict=True):
        assert timed.get(endpoint, 0) == lines.count(line)


def test_lines_with_lists_of_upstream_values_take_the_fast_paths() -> None:
    """Every line with a list of upstream values went to the line parser (10–40 µs a line: a log of a site whose
    upstreams retry all day was read at a fifth of the speed).  Their lists are collapsed into single tokens now
    (access.Accumulator._collapsed): the C cut and the Python split take them, with the line parser's figures."""
    data = b"\n".join(UPSTREAM_LISTS * 100 + UPSTREAM_GOOD * 100) + b"\n"
    rep, arrow_lines = assert_equivalent(data, fmt=UPSTREAM_FMT)
    assert rep["requests"] == 600 and arrow_lines == 600
    assert rep["latency"]["upstream"]["max"] == 3000.0  # 1.000 + 2.000 of "1.000, - : 2.000"
    acc = Accumulator(ScanOptions(log_format=UPSTREAM_FMT, arrow=False))
    feed_in_chunks(acc, data, 1 << 20)
    assert acc.partial().fast_lines == 600


def test_a_line_holding_the_collapse_s_byte_leaves_the_others_lists_on_the_fast_paths() -> None:
    """The collapse makes its blanks 0xA0, so a buffer holding that byte already (raw with escape=none: UTF-8's à,
    Р, a no-break space) was not collapsed at all: one "café" agent in a 4 MB buffer sent all its lines with
    lists to the line parser (39 MB, lists on half the lines, "à" on one line in 1,000: 10.4 s, not 0.5). Now
    only the lines holding the byte are read as they are, with the line parser's figures still."""
    odd = [b'1.2.3.9 - - [01/Mar/2024:10:00:06 +0000] "GET /caf\xc3\xa9 HTTP/1.1" 200 5 "-" "caf\xc3\xa0" '
           b'10.0.0.1:80, 10.0.0.2:80 502, 200 0.800, 0.100 0.950',
           b'1.2.3.9 - - [01/Mar/2024:10:00:06 +0000] "GET /nbsp HTTP/1.1" 200 5 "-" "a\xc2\xa0b" 10.0.0.1:80 200 '
           b'0.020 0.030']
    data = b"\n".join(UPSTREAM_LISTS * 50 + odd + UPSTREAM_GOOD * 50 + odd[::-1] + UPSTREAM_LISTS * 50 + odd[:1]
                      ) + b"\n"
    rep, arrow_lines = assert_equivalent(data, fmt=UPSTREAM_FMT)
    assert rep["requests"] == 455 and arrow_lines == 452  # (all but the lines with lists and 0xA0)
    acc = Accumulator(ScanOptions(log_format=UPSTREAM_FMT, arrow=False))
    feed_in_chunks(acc, data, 1 << 20)
    assert acc.partial().fast_lines == 450  # all but the lines holding 0xA0 (each alone: the line parser)
    dense = b"\n".join((UPSTREAM_LISTS + odd) * 50) + b"\n"  # (many: the buffer read whole, as before)
    assert assert_equivalent(dense, fmt=UPSTREAM_FMT)[0]["requests"] == 250
    assert access._lines_apart(b"a\n\xa0\nb\xa0\nc\n\xa0d\n", b"\xa0") == [(0, 2), (2, 7), (7, 9), (9, 12)]
    assert access._lines_apart(b"\xa0\n", b"\xa0") == [(0, 2)]
    assert access._lines_apart(b"a\nb\n", b"\xa0") == [(0, 4)]


#: the upstream time last: the line parser reads it to the line's end (no list then: the whole rest)
UPSTREAM_LAST = UPSTREAM_FMT.removesuffix(" $request_time")
_UPSTREAM_VALUES = (b"0.037", b"0.106", b"-", b"10.0.0.1:80", b"unix:/run/app.sock", b"502", b",", b":", b"0.1,",
                    b"a,b", b",x", b":y", b"1.000", b"\xa0", b'"', b"0.2\xa0")
_UPSTREAM_SEPS = (b", ", b" : ", b", ", b" : ", b",", b" ", b"  ", b" ,", b": ", b", , ", b" : : ", b", : ")


@st.composite
def upstream_value(draw: st.DrawFn) -> bytes:
    """A value of an upstream variable as nginx writes it (a list after retries and redirects), or not quite."""
    n = draw(st.integers(0, 3))
    out = draw(st.sampled_from(_UPSTREAM_VALUES[:7]))
    for _ in range(n):
        out += draw(st.sampled_from(_UPSTREAM_SEPS)) + draw(st.sampled_from(_UPSTREAM_VALUES))
    return out


@st.composite
def upstream_line(draw: st.DrawFn) -> bytes:
    """A line of UPSTREAM_FMT (or, ``ingress``, of UPSTREAMINFO) with generated upstream values."""
    head = draw(st.sampled_from([b'1.2.3.4 - - [01/Mar/2024:10:00:03 +0000] "GET /r/1 HTTP/1.1" 200 5 "-" "ua, x : y"',
                                 b'1.2.3.5 - - [01/Mar/2024:10:00:04 +0000] "POST /login HTTP/1.1" 502 9 "-" "ua"']))
    addr, status, urt = draw(upstream_value()), draw(upstream_value()), draw(upstream_value())
    rt = draw(st.sampled_from([b" 0.950", b" 0.020", b"", b" 0.1 extra"]))
    return head + b" " + addr + b" " + status + b" " + urt + rt


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(upstream_line(), st.sampled_from(UPSTREAM_GOOD + UPSTREAM_LISTS + ODD)), min_size=1,
                max_size=80), st.sampled_from([120, 1 << 20]))
def test_fuzz_collapsed_lists_give_the_line_parser_s_figures(lines: list[bytes], chunk: int) -> None:
    """Lines whose upstream values are lists, odd ones too (a separator at a value's end, two in a row, a bare ':',
    the byte a collapsed blank becomes, a quote, a line that ends after the list): the fast paths, which now take
    the lines with lists collapsed, count what the line parser counts."""
    data = b"\n".join(lines) + b"\n"
    for fmt in (UPSTREAM_FMT, UPSTREAM_LAST):
        reference, _ = scan(data, chunk=chunk, fmt=fmt, fast=False)
        assert scan(data, chunk=chunk, fmt=fmt)[0] == reference
        assert scan(data, chunk=chunk, fmt=fmt, arrow=False)[0] == reference
    ingress = [_HEAD % (4, 4, 4) + b"0.950 [default-web-80] [] " + ln.split(b'"ua" ', 1)[-1] + b" 200 aa"
               for ln in lines if ln.startswith(b"1.2.3.5")]
    if ingress:
        more = b"\n".join(ingress) + b"\n"
        reference, _ = scan(more, chunk=chunk, fmt=UPSTREAMINFO, fast=False)
        assert scan(more, chunk=chunk, fmt=UPSTREAMINFO)[0] == reference
        assert scan(more, chunk=chunk, fmt=UPSTREAMINFO, arrow=False)[0] == reference


#: ingress-nginx's default format: variables upkeeper does not know ($proxy_upstream_name, $req_id), in brackets
#: or not, next to unquoted lists of upstream values
UPSTREAMINFO = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
                '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
                '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time '
                '$upstream_status $req_id')
_HEAD = b'1.2.3.%d - - [01/Mar/2024:10:00:%02d +0000] "GET /p/%d HTTP/1.1" 200 5 "-" "Mozilla/5.0 (X11)" 310 '
INGRESS_GOOD = [
    _HEAD % (1, 1, 1) + b"0.020 [default-web-80] [] 10.0.0.1:80 5 0.019 200 5d41402abc4b2a76b9719d911017c592",
    _HEAD % (2, 2, 2) + b"0.500 [default-api-8080] [default-api-canary-8080] 10.0.0.2:8080 5 0.499 200 0123abcd",
    _HEAD % (3, 3, 3) + b"0.001 [upstream-default-backend] [] - - - - 9f86d081884c7d659a2feaa0c55ad015",
]
INGRESS_ODD = [
    # a retry, an internal redirect: lists of values (the line parser reads them)
    _HEAD % (4, 4, 4) + b"0.950 [default-web-80] [] 10.0.0.1:80, 10.0.0.2:80 0, 5 0.800, 0.100 502, 200 aa",
    _HEAD % (5, 5, 5) + b"0.030 [default-web-80] [] 10.0.0.1:80 : 10.0.1.1:80 0 : 5 0.004 : 0.010 404 : 200 bb",
    # values of the unknown variables with a blank, a bracket, empty, ':' alone after a list variable
    _HEAD % (6, 6, 6) + b"0.040 [default web] [] 10.0.0.1:80 5 0.039 200 cc",
    _HEAD % (7, 7, 7) + b"0.050 [default]web] [] 10.0.0.1:80 5 0.049 200 dd",
    _HEAD % (8, 8, 8) + b"0.060 [] [] 10.0.0.1:80 5 0.059 200 ",
    _HEAD % (9, 9, 9) + b"0.070 [default-web-80] [] 10.0.0.1:80 5 0.069 200 :",
    _HEAD % (10, 10, 10) + b"0.080 [default-web-80] [] 10.0.0.1:80, 5 0.079 200 ee",
    # a blank in one line's value and a token missing from the next line: no field may move across lines
    _HEAD % (11, 11, 11) + b"0.090 [default-web-80] [] 10.0.0.1:80 5 0.089 200 ff 9.9.9.9",
    b'- - [01/Mar/2024:10:00:12 +0000] "GET /p/12 HTTP/1.1" 200 5 "-" "Mozilla/5.0 (X11)" 310 0.100 '
    b"[default-web-80] [] 10.0.0.1:80 5 0.099 200 gg",
]


def test_ingress_upstreaminfo_takes_the_fast_paths_and_agrees_with_the_line_parser() -> None:
    """ingress-nginx's format was read line by line only (four times the CPU of combined): its unknown
    variables are skipped as tokens now, and each line whose values do not fit goes to the line parser alone."""
    data = b"\n".join(INGRESS_GOOD * 60 + INGRESS_ODD + INGRESS_GOOD * 60) + b"\n"
    for chunk in (1 << 20, 700):
        rep, arrow_lines = assert_equivalent(data, fmt=UPSTREAMINFO, chunk=chunk)
        assert rep["requests"] == 360 + len(INGRESS_ODD) - 1 and rep["invalid"] == 1  # the line without address
        # every line that fits (one with an empty $req_id) and the two with lists of upstream values, no more
        assert arrow_lines == 363 or chunk == 700
        assert rep["latency"]["overall"]["max"] == 950.0 and rep["latency"]["overall"]["count"] == 368
        # ('10.0.0.1:80,' and the next value make a list for the line parser: 200 is its upstream time, in seconds)
        assert rep["latency"]["upstream"]["max"] == 200000.0
    acc = Accumulator(ScanOptions(log_format=UPSTREAMINFO, arrow=False))
    feed_in_chunks(acc, data, 1 << 20)
    assert acc.partial().fast_lines >= 360  # the Python split takes them too


def test_an_unknown_value_holding_the_character_after_it_goes_to_the_line_parser() -> None:
    """The line parser's %^ stops at the first '>' of '<a>bc>': the value must not hold it on the fast paths."""
    fmt = '$remote_addr [$time_local] "$request" $status <$proxy_upstream_name> $request_time'
    line = b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 <%s> 0.100'
    data = b"\n".join([line % b"web"] * 60 + [line % b"a>bc"]) + b"\n"
    for chunk in (1 << 20, 500):
        rep, arrow_lines = assert_equivalent(data, fmt=fmt, chunk=chunk)
        assert arrow_lines == 60 or chunk == 500
        assert rep["latency"]["overall"]["count"] == 60  # 'c> 0.100' is no request time


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(INGRESS_GOOD + INGRESS_ODD + ODD), min_size=1, max_size=120),
       st.sampled_from([150, 1 << 20]))
def test_fuzz_upstreaminfo_agrees_on_every_path(lines: list[bytes], chunk: int) -> None:
    data = b"\n".join(lines) + b"\n"
    fast, _ = scan(data, chunk=chunk, fmt=UPSTREAMINFO)
    assert fast == scan(data, chunk=chunk, fmt=UPSTREAMINFO, arrow=False)[0]
    assert fast == scan(data, chunk=chunk, fmt=UPSTREAMINFO, fast=False)[0]


def login_traffic() -> list[bytes]:
    """Form-login brute force answered 200 (WordPress, Django admin), a token endpoint's 400s, a user who mistyped
    once, and a JSON login whose successes are 200 (no failures), among ordinary lines, over 40 minutes."""

    def line(ip: str, minute: int, request: str, status: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{minute:02d}:{minute % 60:02d} +0000] "{request}" {status} 5 "-" '
                f'"Mozilla/5.0" 0.050').encode()

    out: list[bytes] = []
    for k in range(40):
        out += [line(f"10.0.0.{k % 7}", k, f"GET /a/{k}?x={k % 3} HTTP/1.1", 200), line("10.0.1.1", k, "GET /wp-login.php"
                " HTTP/1.1", 200), line("10.0.1.2", k, "GET /app.css HTTP/1.1", 304 if k % 2 else 404)]
        out.append(line("203.0.113.5", k, "POST /wp-login.php?redirect_to=%2Fwp-admin%2F HTTP/1.1", 200))
        if k < 12:
            target = ["/admin/login/?next=/admin/", "//admin/login/", "/admin/%6cogin/", "http://x.example/admin/login/"]
            out.append(line("203.0.113.6", k, f"POST {target[k % 4]} HTTP/1.1", 200))  # nginx routes all four alike
            out.append(line("203.0.113.8", k, "POST /oauth/token HTTP/1.1", 400))
        out.append(line("203.0.113.9", k, "POST /api/login HTTP/1.1", 200))  # 401/403 only: these succeeded
    out += [line("192.0.2.7", 39, "POST /wp-login.php HTTP/1.1", 200), line("192.0.2.7", 39, "POST /wp-login.php "
                                                                                "HTTP/1.1", 302)]
    return out


def test_form_login_brute_force_is_the_same_on_every_path() -> None:
    """Failed logins answered 200/400 count the same on the line parser, the Python fast path and pyarrow."""
    data = b"\n".join(login_traffic()) + b"\n"
    for chunk in (1 << 20, 2000, 300):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        brute = {b["ip"]: b for b in rep["security"]["brute_force"]}
        assert set(brute) == {"203.0.113.5", "203.0.113.6", "203.0.113.8"}
        assert brute["203.0.113.5"]["total"] == 40 and brute["203.0.113.5"]["paths"] == ["/wp-login.php"]
        assert brute["203.0.113.6"]["paths"] == ["/admin/login/"]
        assert rep["security"]["failed_logins"] == 40 + 12 + 12 + 1


def test_failure_statuses_per_login_path_are_the_same_on_every_path() -> None:
    data = b"\n".join(login_traffic()) + b"\n"
    paths = (LoginPath("/api/login", "2xx"), "/wp-login.php", LoginPath("/admin/*", "401"))
    reps = [scan(data, chunk=2000, login_paths=paths, **kw)[0] for kw in ({}, {"arrow": False}, {"fast": False})]
    assert reps[0] == reps[1] == reps[2]
    assert {b["ip"] for b in reps[0]["security"]["brute_force"]} == {"203.0.113.5", "203.0.113.9"}


def test_brute_force_across_runs_and_workers_is_the_same_on_every_path(tmp_path: Path) -> None:
    """Incremental runs: the first reads up to 10:14 (the SecurityTail carries its last two 10-minute periods),
    the second the rest; both scan paths, one or two workers, give the same findings as one run over all."""
    lines = login_traffic()
    cut = next(i for i, x in enumerate(lines) if b"10:15:" in x)
    first, second = (b"\n".join(part) + b"\n" for part in (lines[:cut], lines[cut:]))
    log = tmp_path / "second.log"
    log.write_bytes(second)
    units = parallel.split_units(str(log), 0, len(second), final=True, unit=1500)
    results = []
    for kw in ({}, {"arrow": False}, {"fast": False}):
        acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, **kw))
        feed_in_chunks(acc, first, 1000)
        part = acc.partial()
        tail = SecurityTail.from_json(security_tail(part).to_json())  # as the job state keeps it
        for workers in (1, 2):
            p2, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0,
                                                                      **kw), units, workers=workers, min_parallel=0)
            results.append((summarize(part)["security"], comparable(summarize(p2, earlier=tail))["security"]))
    assert all(r == results[0] for r in results), results
    sec1, sec2 = results[0]
    assert {b["ip"] for b in sec1["brute_force"]} == {"203.0.113.5", "203.0.113.6", "203.0.113.8"}
    # still going on: reported again, 20 in the worst 20 minutes (10:00-10:19, across the runs), 25 in the lines the
    # second run read; the attacks that ended before the first run are not reported again
    (brute,) = sec2["brute_force"]
    assert (brute["ip"], brute["max_per_window"], brute["total"]) == ("203.0.113.5", 20, 25)
    assert sec2["failed_logins"] == 25 + 1


def shared_address_traffic() -> list[bytes]:
    """Over 20 minutes: an office behind one address (NAT) whose people log in 40 times and mistype 12 times, a
    brute force (15 failures), credential stuffing with one hit (30 failures, 1 success), among page views."""

    def line(ip: str, minute: int, second: int, request: str, status: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{minute:02d}:{second:02d} +0000] "{request}" {status} 5 "-" '
                f'"Mozilla/5.0" 0.050').encode()

    out: list[bytes] = []
    for k in range(40):
        m, sec = k // 2, 30 * (k % 2)
        out += [line("198.51.100.20", m, sec, "POST /login HTTP/1.1", 302), line("198.51.100.20", m, sec, "GET /home "
                "HTTP/1.1", 200), line(f"10.0.0.{k % 5}", m, sec, f"GET /p/{k} HTTP/1.1", 200)]
        if k % 10 < 3:  # 12 mistyped passwords
            out.append(line("198.51.100.20", m, sec + 1, "POST /login HTTP/1.1", 401))
        if k < 15:
            out.append(line("203.0.113.30", m, sec + 2, "POST /login HTTP/1.1", 401))
        if k < 30:
            out += [line("203.0.113.31", m, sec + 3, "POST /users/sign_in HTTP/1.1", 200),
                    line("203.0.113.31", m, sec + 4, "POST /users/sign_in HTTP/1.1", 422)]
    out.append(line("203.0.113.31", 19, 50, "POST /users/sign_in HTTP/1.1", 302))
    return out


def test_failed_logins_among_many_successful_ones_are_a_shared_address_on_every_path(tmp_path: Path) -> None:
    """Many people behind one address (a NAT, an office, a carrier's CGNAT) who mistype now and then made 10 failed
    logins in 20 minutes like a brute force did: the logins that succeeded are now counted per client, on every scan
    path and across runs, so that such a client is told apart from a brute force or credential stuffing."""
    data = b"\n".join(shared_address_traffic()) + b"\n"
    for chunk in (1 << 20, 1500):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        brute = {b["ip"]: (b["max_per_window"], b["succeeded"], b["shared"]) for b in rep["security"]["brute_force"]}
        assert brute == {"198.51.100.20": (12, 40, True), "203.0.113.30": (15, 0, False),
                         "203.0.113.31": (60, 1, False)}
    # a run that begins at 10:10 counts the earlier run's successes of its last two 10-minute periods (the job state)
    lines = shared_address_traffic()
    cut = next(i for i, x in enumerate(lines) if b"10:10:" in x)
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, b"\n".join(lines[:cut]) + b"\n", 1000)
    tail = SecurityTail.from_json(security_tail(acc.partial()).to_json())
    acc2 = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc2, b"\n".join(lines[cut:]) + b"\n", 1000)
    brute = {b["ip"]: (b["max_per_window"], b["succeeded"], b["shared"])
             for b in summarize(acc2.partial(), earlier=tail)["security"]["brute_force"]}
    assert brute["198.51.100.20"] == (12, 40, True)
    # a tail kept by an older version (no successes in it) still reads
    assert SecurityTail.from_json({"not_found": [], "logins": [["192.0.2.1", "/login", 20240301, 10, 0, 3]]}
                                  ).auth_failures[(b"192.0.2.1", b"/login", (20240301, 10, 0))] == 3


def slow_login_traffic() -> list[bytes]:
    """Over an hour: credential stuffing paced at one try every 150 s (24 failures, at most 8 in any 20 minutes), a
    slower one (one every 4 minutes: 15), a user who mistypes 3 times twice, among page views."""

    def line(ip: str, second: int, request: str, status: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:{10 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d} +0000] '
                f'"{request}" {status} 5 "-" "Mozilla/5.0" 0.050').encode()

    out: list[bytes] = []
    for sec in range(0, 3600, 30):
        out.append(line(f"10.0.0.{sec % 7}", sec, f"GET /p/{sec} HTTP/1.1", 200))
        if sec % 150 == 0:
            out.append(line("203.0.113.40", sec + 1, "POST /login HTTP/1.1", 401))
        if sec % 240 == 0:
            out.append(line("203.0.113.41", sec + 2, "POST /login HTTP/1.1", 401))
        if sec in (60, 90, 120, 2400, 2430, 2460):
            out.append(line("192.0.2.60", sec + 3, "POST /login HTTP/1.1", 401))
    return out


def test_a_brute_force_paced_under_the_threshold_is_caught_over_an_hour_on_every_path() -> None:
    """Credential stuffing at one try every 150 s never made 10 failed logins in 20 minutes and was never reported;
    an hour with twice the threshold now is (the 20-minute window first: a client over it is judged there)."""
    data = b"\n".join(slow_login_traffic()) + b"\n"
    for chunk in (1 << 20, 1500):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        brute = {b["ip"]: (b["max_per_window"], b["window_minutes"]) for b in rep["security"]["brute_force"]}
        assert brute == {"203.0.113.40": (24, 60)}  # 15 in an hour (203.0.113.41) and the user's 6 are not


def missing_assets_traffic() -> list[bytes]:
    """A catalogue page whose 30 product images are gone, loaded by two visitors (each browser asks for all 30 within
    a second, 404 after 404, and for the page's script, also gone); a directory scanner's 30 paths in the same minute,
    some of them asset-like, and its probes of source maps and archives."""

    def line(ip: str, second: int, request: str, status: int, referer: str = "-") -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{second // 60:02d}:{second % 60:02d} +0000] "{request}" {status} 5 '
                f'"{referer}" "Mozilla/5.0" 0.010').encode()

    out: list[bytes] = []
    for ip, at in (("198.51.100.30", 5), ("198.51.100.31", 70)):
        out.append(line(ip, at, "GET /catalogue?page=2 HTTP/1.1", 200))
        out += [line(ip, at + 1, f"GET /media/products/{k}.JPG?w=300 HTTP/1.1", 404, "https://shop.example/catalogue")
                for k in range(30)]
        out.append(line(ip, at + 1, "GET /static/gallery.js HTTP/1.1", 404, "https://shop.example/catalogue"))
        out.append(line(ip, at + 2, "HEAD /favicon.ico HTTP/1.1", 404))
    words = ["admin", "backup", "old", "test", "api/v1", "cgi-bin/", "config", "db", "dev", "private"]
    for k in range(30):
        out.append(line("203.0.113.50", 10 + k, f"GET /{words[k % 10]}{k // 10 or ''} HTTP/1.1", 404))
    out += [line("203.0.113.50", 45, f"GET /{x} HTTP/1.1", 404) for x in ("app.js.map", "site.zip", "logo.png")]
    return out


def test_a_page_with_missing_images_is_no_404_burst_on_every_path() -> None:
    """Every visitor of a page whose images are gone asked for 30 of them within a second: a
    logs.nginx.not_found_burst warning ("probing for files") per visitor. 404s for page assets (images, styles,
    scripts, fonts, media) are no longer counted in a burst, on every scan path; a scanner's paths still are, and
    its source maps and archives too."""
    data = b"\n".join(missing_assets_traffic()) + b"\n"
    for chunk in (1 << 20, 1500):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        bursts = {b["ip"]: b["max_in_window"] for b in rep["security"]["not_found_bursts"]}
        assert bursts == {"203.0.113.50": 32}  # its 30 paths and its .js.map and .zip, not its logo.png
        assert rep["status"]["404"] == 2 * 32 + 33  # (every 404 is still counted as one)


def distributed_login_traffic(failures: int, successes: int, *, path: str = "/login", status: int = 401) -> list[bytes]:
    """``failures`` failed logins from as many addresses (one each: none near the brute-force threshold) and
    ``successes`` logins that succeeded, spread over 15 minutes from 10:00, among page views."""

    def line(ip: str, second: int, request: str, status: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{second // 60:02d}:{second % 60:02d} +0000] "{request}" {status} 5 "-" '
                f'"Mozilla/5.0" 0.050').encode()

    out = [line(f"10.1.{k // 250}.{k % 250}", k * 900 // max(failures, 1), f"POST {path} HTTP/1.1", status)
           for k in range(failures)]
    out += [line(f"10.2.{k // 250}.{k % 250}", k * 900 // max(successes, 1), f"POST {path} HTTP/1.1", 302)
            for k in range(successes)]
    out += [line(f"10.3.0.{k % 50}", k * 9, f"GET /p/{k} HTTP/1.1", 200) for k in range(100)]
    return sorted(out, key=lambda x: x.split(b"[", 1)[1][:26])


def test_credential_stuffing_spread_over_many_addresses_is_caught_on_every_path() -> None:
    """150 failed logins in 15 minutes, one from each of 150 addresses (residential proxies), were no finding: no
    client came near the brute-force threshold. All clients' failed logins together now are, when they are ten times
    the threshold in 20 minutes, from 10 clients or more, and outnumber the logins that succeeded three to one — a
    busy site whose users mistype now and then is none, nor are XML-RPC's attempts (a pingback flood)."""
    data = b"\n".join(distributed_login_traffic(150, 5)) + b"\n"
    for chunk in (1 << 20, 1500):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        assert rep["security"]["brute_force"] == []
        assert rep["security"]["distributed_logins"] == {"failed": 150, "succeeded": 5, "clients": 150,
                                                         "from": "2024-03-01 10:00"}
    for failures, successes, path, status in ((120, 800, "/login", 401), (90, 5, "/login", 401),
                                              (300, 0, "/xmlrpc.php", 200)):  # (XML-RPC: 300 attempts)
        rep = scan(b"\n".join(distributed_login_traffic(failures, successes, path=path, status=status)) + b"\n")[0]
        assert rep["security"]["distributed_logins"] is None, (failures, successes, path)
        assert rep["security"]["failed_logins"] == failures


def exposure_traffic() -> list[bytes]:
    """Sensitive files answered 200 (a leak), 404 (a probe), by a catch-all (the front page's size) and to HEAD."""

    def line(ip: str, minute: int, request: str, status: int, size: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{minute:02d}:00 +0000] "{request}" {status} {size} "-" '
                f'"Mozilla/5.0" 0.010').encode()

    out: list[bytes] = []
    for k in range(30):
        out += [line(f"10.0.0.{k % 5}", k, f"GET /?utm={k % 4} HTTP/1.1", 200, 5120),
                line(f"10.0.0.{k % 5}", k, f"GET /a/{k} HTTP/1.1", 200, 300)]
    out += [line("198.51.100.7", 3, "GET /.env HTTP/1.1", 200, 1432),
            line("198.51.100.8", 9, "GET //%2eenv?x HTTP/1.1", 200, 1432),
            line("198.51.100.7", 4, "GET /.git/config HTTP/1.1", 200, 92),
            line("198.51.100.7", 4, "GET /backup.sql HTTP/1.1", 404, 150),
            line("198.51.100.7", 5, "GET /.aws/credentials HTTP/1.1", 200, 5120),
            line("198.51.100.7", 5, "HEAD /.DS_Store HTTP/1.1", 200, 6148),
            # a catch-all's page for probes of paths the site lacks, then for one sensitive path: no leak
            line("198.51.100.9", 6, "GET /wp-login.php HTTP/1.1", 200, 777),
            line("198.51.100.9", 6, "GET /phpmyadmin/index.php?lang=en HTTP/1.1", 200, 777),
            line("198.51.100.9", 7, "GET /api/.env HTTP/1.1", 200, 777)]
    return out


def test_exposed_files_are_the_same_on_every_path() -> None:
    """A sensitive file answered 2xx with a body is counted alike by the line parser, the Python fast path and
    pyarrow; the catch-all's answer (the size of GET /) and HEAD are not."""
    data = b"\n".join(exposure_traffic()) + b"\n"
    for chunk in (1 << 20, 2000, 300):
        rep, arrow_lines = assert_equivalent(data, chunk=chunk)
        assert arrow_lines > 0
        exposed = {e["path"]: e for e in rep["security"]["exposed"]}
        assert set(exposed) == {"/.env", "/.git/config"}
        env = exposed["/.env"]
        assert (env["hits"], env["statuses"], env["bytes"]) == (2, [200], [1432])
        assert env["clients"] == ["198.51.100.7", "198.51.100.8"] and env["first"] == "2024-03-01 10:03"
        assert env["secret"] and env["file"] == "dotenv"
        assert 5120 in rep["security"]["catch_all_sizes"] and 777 in rep["security"]["catch_all_sizes"]


def test_sensitive_prefilter_picks_every_line_classify_would() -> None:
    """The pyarrow path looks for sensitive files only in the new request lines its one RE2 pass picks: it must
    pick every line classify's own hints pick (any case, percent-encoded or escaped paths, bytes not UTF-8)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upkeeper.logs.arrowscan import _sensitive_prefilter
    from upkeeper.logs.classify import _SENSITIVE_HINTS, _lines_with

    raws = [b"GET /.env HTTP/1.1", b"GET /.ENV.Local HTTP/1.1", b"GET //%2eenv?x HTTP/1.1", b"GET /a\\b HTTP/1.1",
            b"GET /Backup.SQL.GZ HTTP/1.1", b"GET /ID_RSA HTTP/1.1", b"GET /WP-Config.php~ HTTP/1.1",
            b"GET /server-status HTTP/1.1", b"GET /x.tar HTTP/1.1", b"GET /db.DUMP HTTP/1.1", b"GET /\xff\xfe/.git/HEAD",
            b"GET /\xc3\xa9t\xc3\xa9.log HTTP/1.1", b"GET /actuator/env HTTP/1.1", b"GET /a/b?c=d HTTP/1.1",
            b"GET / HTTP/1.1", b"POST /api/v1/users/42 HTTP/2.0", b"GET /static/app.js HTTP/1.1", b"-",
            b"GET /\xe2\x84\xaa HTTP/1.1", b"GET /caf\xe9 HTTP/1.1"]
    arr = pa.array(raws, pa.large_binary())
    picked = set(pc.indices_nonzero(pc.match_substring_regex(arr, _sensitive_prefilter(), ignore_case=True)).to_pylist())
    expected = _lines_with(raws, _SENSITIVE_HINTS)
    assert expected == set(range(13))  # the first 13 lines hold a hint, the others none
    assert picked == expected


#: request lines whose endpoint, static path, login path, front page or GoAccess key is easy to get wrong: numbers
#: next to each other or to a delimiter, UUIDs, hashes and tokens, e-mail addresses, long paths, queries and
#: fragments, static extensions in any case or in the query, odd methods, blanks and protocols, non-ASCII bytes
TRICKY_REQUESTS = [
    b"GET /1/2/3 HTTP/1.1", b"GET /12/34.5;/6,7 HTTP/1.1", b"GET /a/1/ HTTP/2.0", b"GET /a/1x/2 HTTP/2",
    b"GET /v1/1234567890/9 HTTP/3.0", b"GET /x/123?id=5/6 HTTP/1.0", b"GET /x/5#frag/7 HTTP/1.1",
    b"GET /u/ed2662e9-17e0-41b7-b810-238303c72ba8/1 HTTP/1.1", b"GET /u/ED2662E9-17E0-41B7-B810-238303C72BA8x HTTP/1.1",
    b"GET /a/deadbeef12/b HTTP/1.1", b"GET /t/abcdefghij0123456789KLMN HTTP/1.1", b"GET /w/ab-cd_ef9gh HTTP/1.1",
    b"GET /m/john@example.org/2 HTTP/1.1", b"GET /m/a@b@c HTTP/1.1", b"GET /" + b"x/" * 100 + b"9 HTTP/1.1",
    b"GET /" + b"y" * 170 + b" HTTP/1.1", b"GET /app.JS HTTP/1.1", b"GET /app.js?v=1.2 HTTP/1.1",
    b"GET /img/a.PnG?x HTTP/2.0", b"GET /a.css/ HTTP/1.1", b"GET /.js HTTP/1.1", b"HEAD /style.css HTTP/1.1",
    b"GET / HTTP/1.1", b"GET /index.html HTTP/2.0", b"GET /index.htm?x=1 HTTP/1.1", b"GET /?q=1 HTTP/1.1",
    b"POST /login HTTP/1.1", b"POST /api/v1/items/4 HTTP/2.0", b"post /login HTTP/1.1", b" POST /login HTTP/1.1",
    b"GET  /double HTTP/1.1", b"GET /a%2F1 HTTP/1.1", b"GET /a HTTP/1.2", b"GET /a HTTP/2.1", b"get /lower HTTP/1.1",
    b"PROPFIND /dav/1 HTTP/1.1", b"GET http://host/a/1 HTTP/1.1", b"GET * HTTP/1.1", b"GET /tab\t1 HTTP/1.1",
    b"GET /caf\xe9/1 HTTP/1.1", b"GET /\xc3\xa9t\xc3\xa9/2.JS HTTP/1.1", b"GET /k\xe2\x84\xaa.js HTTP/1.1",
    b"GET /a HTTP/1.1 extra", b"GET /a", b"-", b"", b"GET /x.min.js HTTP/1.1", b"OPTIONS /api/9 HTTP/1.1",
    b"DELETE /api/v2/users/77/roles/8 HTTP/1.1", b"PUT /a/1;2 HTTP/1.1", b"PATCH /p/00000000 HTTP/1.1",
    # placeholders next to each other: a UUID with more hex after it, before a number, inside a longer hex run, a
    # UUID that is a number's digits, slashes doubled, numbers at the end and before every delimiter
    b"GET /u/ed2662e9-17e0-41b7-b810-238303c72ba8ed HTTP/1.1", b"GET /ed2662e9-17e0-41b7-b810-238303c72ba8/7 HTTP/1.1",
    b"GET /aed2662e9-17e0-41b7-b810-238303c72ba8 HTTP/1.1", b"GET /12345678-1234-1234-1234-123456789012 HTTP/1.1",
    b"GET //1//2 HTTP/1.1", b"GET /1 HTTP/1.1", b"GET /1.json HTTP/1.1", b"GET /9;x/8,y/7.z HTTP/1.1",
    b"GET /x/" + b"1/" * 90 + b" HTTP/1.1", b"GET /a1b2c3d4/e5f6a7b8c9 HTTP/1.1", b"GET /-_-_-_-9 HTTP/1.1",
    # a hash of exactly 8 characters alone; a UUID one hex digit short before a number
    b"GET /x/a1b2c3d4 HTTP/1.1", b"GET /u/ed2662e9-17e0-41b7-b810-238303c72ba/1 HTTP/1.1",
    # protocols GoAccess keys as they are or shortened, or not at all
    b"GET /p HTTP/2.0", b"GET /p HTTP/3", b"GET /p HTTP/3.0", b"GET /p HTTP/1.0", b"GET /p HTTP/2.00",
    b"GET /p HTTP/3.1", b"GET /p HTTP/1.1 ", b"GET /p  HTTP/1.1", b"GET /p\x00 HTTP/1.1", b"GET /p\x0b HTTP/1.1",
    b"OPTIONS * HTTP/1.1", b"POST /p%20q HTTP/1.1", b"DELETE /p?x=%41 HTTP/2",
    b"GET /p\x0c HTTP/1.1", b"GET /p\r HTTP/1.1", b"GET /p\tq HTTP/1.1",
]


def _learned(raws: list[bytes], arrow: bool, native: bool = True) -> tuple[Any, ...]:
    """``native``: the arrow path's endpoints in C (upkeeper.logs._cut.endpoints), else with RE2 kernels."""
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0,
                                  login_paths=("/login", "/api/v1/items/*"), native_cut=native))
    scanner = acc._arrow_scanner()
    assert scanner is not None
    assert (scanner.endpoints is not None) == native, NOT_BUILT
    if arrow:
        scanner._learn_requests(scanner.pa.array(raws, scanner.pa.large_binary()), raws)
    else:
        acc._learn_requests(raws, scanner._word_lines)
    return acc.ep_of, acc.static_of, acc.page_of, acc.login_of


def _ga_keys(raws: list[bytes], arrow: bool, native: bool = True) -> dict[bytes, int]:
    """``native``: the arrow path's keys made in C (upkeeper.logs._cut.request_keys), else with RE2 kernels."""
    from upkeeper.logs.goaccess import parse_requests

    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, native_cut=native))
    scanner = acc._arrow_scanner()
    assert scanner is not None and (scanner.keys_of is not None) == native, NOT_BUILT
    lines = list(dict.fromkeys(raws))
    hits = [i + 1 for i in range(len(lines))]
    rest, rest_hits = acc._request_keys(lines, hits, scanner.request_keys) if arrow else (lines, hits)
    for c, (url, meth, proto) in zip(rest_hits, parse_requests(rest), strict=True):
        if acc.is_static(url):
            acc.p.ga_static_hits += c
        else:
            acc.p.ga_requests[url + b"\0" + (meth or b"") + b"\0" + (proto or b"")] += c
    return {**acc.p.ga_requests, b"static": acc.p.ga_static_hits}


def test_request_lines_learned_with_re2_equal_the_reference() -> None:
    """The pyarrow path learns most request lines with RE2 kernels (ArrowScanner._learn_requests) and takes
    GoAccess's keys from their tokens (request_keys): the same endpoints, static paths, login paths, front pages
    and keys as the reference (classify, goaccess.parse_requests), line by line."""
    _assert_learned_as_the_reference(TRICKY_REQUESTS)


def _assert_learned_as_the_reference(raws: list[bytes]) -> None:
    """The arrow path, in C and with kernels, learns ``raws`` and keys them as the reference does."""
    reference = _learned(raws, False)
    assert _learned(raws, True) == reference
    assert _learned(raws, True, native=False) == reference
    keys = _ga_keys(raws, False)
    assert _ga_keys(raws, True) == keys
    assert _ga_keys(raws, True, native=False) == keys


_path_piece = st.sampled_from(["/", "1", "23", "0", ".", ";", ",", "-", "?", "#", "@", "a", "F", "x9", "deadbeef", "//",
                               "12345678", "ed2662e9-17e0-41b7-b810-238303c72ba8e", "1234abcd-", "-1234-",
                               "ed2662e9-17e0-41b7-b810-238303c72ba8", "ABCDEFGHIJ1234567890ab", ".js", ".CSS",
                               "%2e", " ", "\t", "é", "K", "\xff", "index.html", "_"])
_request = st.builds(lambda m, parts, proto: (m + "".join(parts) + proto).encode("latin-1"),
                     st.sampled_from(["GET /", "HEAD /", "POST /", "PUT /", "DELETE /", "GET ", "get /", "PATCH /",
                                      "OPTIONS /", "FOO /", " GET /"]),
                     st.lists(_path_piece, max_size=12),
                     st.sampled_from([" HTTP/1.1", " HTTP/1.0", " HTTP/2.0", " HTTP/2", " HTTP/3", " HTTP/3.0",
                                      " HTTP/1.2", "", " HTTP/1.1 x"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_request, min_size=1, max_size=40, unique=True))
def test_fuzz_request_lines_learned_with_re2_equal_the_reference(raws: list[bytes]) -> None:
    _assert_learned_as_the_reference(raws)


def test_static_extensions_re2_pattern() -> None:
    """The static-file pattern matches as StaticMatcher does; extensions it cannot express leave it to Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upkeeper.logs.arrowscan import static_pattern
    from upkeeper.logs.goaccess import StaticMatcher

    exts = (b".js", b".css", b".tar+gz", b".", b".a-b")
    matcher = StaticMatcher(exts)
    rx = static_pattern(matcher.simple)
    assert rx
    urls = [b".js", b"x.js", b"/a.js", b"/a.JS", b"/a.jS?x", b"/a.js?x=1.2", b"/b.tar+gz", b"/b.tarxgz", b"/c.", b"/d.A-B", b"/e.ab",
            b"/f.js/", b"/g.\xe9js", b"/h.j\xc5\xbf", b"/k.cs", b"/l.xcss", b"/m.css.map"]
    got = pc.match_substring_regex(pa.array(urls, pa.large_binary()), rx).to_pylist()
    assert got == [matcher(u) for u in urls]
    assert static_pattern(StaticMatcher((b".js", b"min.js")).simple) is None
    assert static_pattern(StaticMatcher(("é".encode(),)).simple) is None
    assert static_pattern(frozenset()) == ""


def test_list_elements_taken_from_the_values_equal_list_element() -> None:
    """The cut takes a list's i-th element from the flattened values when every non-null list has the same
    length (null lists stay null); lists of different lengths go to list_element itself."""
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    sc = acc._arrow_scanner()
    assert sc is not None
    pa, pc = sc.pa, sc.pc
    lists = pa.array([[b"a", b"b", b"c"], [b"d", b"e"], [b"f", b"g", b"h"], [b"i"]], pa.list_(pa.large_binary()))
    assert sc._width(lists) is None
    assert sc._element(lists, 0, None).to_pylist() == [b"a", b"d", b"f", b"i"]
    # the short lists as null rows (as the cut makes the lines the strict pattern rejects)
    valid = pa.array([True, False, True, False]).buffers()[1]
    rows = pa.Array.from_buffers(lists.type, 4, [valid, lists.buffers()[1]], children=[lists.values])
    assert sc._width(rows) == 3
    for i in range(3):
        assert sc._element(rows, i, 3).to_pylist() == pc.list_element(rows, i).to_pylist()
    assert sc._element(rows, 2, 3).to_pylist() == [b"c", None, b"h", None]


def catch_all_traffic(env_size: int) -> bytes:
    """A single-page app's routes (all its index.html, 1,870 bytes; no GET / among them), a scanner's /.env (answered
    ``env_size`` bytes) and SQL injection answered 200 with the app's page, and absolute request lines: for the
    site's own host (its pages' referers name it) and for a proxy judge."""

    def line(ip: str, minute: int, request: str, status: int, size: int, referer: str = "-") -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:{minute:02d}:00 +0000] "{request}" {status} {size} "{referer}" '
                f'"Mozilla/5.0" 0.010').encode()

    routes = ["/pricing", "/login", "/docs/getting-started", "/account/settings", "/blog/hello-world"]
    out = [line(f"10.0.0.{k}", k, f"GET {r} HTTP/1.1", 200, 1870, "https://app.example.net/")
           for k, r in enumerate(routes * 2)]
    out += [line("10.0.0.1", 11, "GET /api/items?page=2 HTTP/1.1", 200, 4211),
            line("10.0.0.1", 11, "GET /api/items?page=3 HTTP/1.1", 200, 3990),
            line("198.51.100.7", 12, "GET /.env HTTP/1.1", 200, env_size),
            line("198.51.100.7", 12, "GET /pricing?id=1%27%20or%201=1-- HTTP/1.1", 200, 1870),
            line("198.51.100.7", 12, "GET /api/items?id=1%27%20or%201=1-- HTTP/1.1", 200, 512),
            line("198.51.100.8", 13, "GET http://proxy-judge.example/azenv.php HTTP/1.1", 200, 1870),
            line("192.0.2.4", 14, "GET http://app.example.net/pricing HTTP/1.1", 200, 1870)]
    return b"\n".join(out) + b"\n"


def referer_game_traffic(prober: str) -> bytes:
    """An absolute request line for evil.example from ``prober``, which also sent evil.example as its referer on its
    other requests (from other IPv6 addresses of its /64 too), and one for the site's host, which the referers of
    three visitors name (one of them twice, one of them split between the chunks)."""

    def line(ip: str, request: str, referer: str) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:00:00 +0000] "{request}" 200 512 "{referer}" "Mozilla/5.0" 0.010').encode()

    v6 = prober.endswith("::7")
    out = [line(ip, "GET /pricing HTTP/1.1", "https://Shop.Example.net./")
           for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "2001:db8:1::5")]
    out += [line(prober.replace("::7", f"::{k}") if v6 else prober, f"GET /p{k} HTTP/1.1", f"http://evil.example/{k}")
            for k in range(1, 6)]
    out += [line(prober, "GET http://evil.example/ HTTP/1.1", "http://evil.example/"),
            line("192.0.2.2", "GET http://shop.example.net/pricing HTTP/1.1", "-")]
    return b"\n".join(out) + b"\n"


@pytest.mark.parametrize("prober", ["198.51.100.7", "2001:db8:bad::7"])
def test_a_referer_host_is_the_sites_own_only_when_several_clients_name_it(prober: str) -> None:
    """Without server_names, the host a prober sends as its own referer (on the probe and on requests before it, from
    as many addresses of its IPv6 /64 as it likes) stays another host: its absolute request line is an open-proxy
    probe; the site's host, which three clients' referers name, is the site's own.  The same on every scan path, and
    when the counts of two workers are merged."""
    data = referer_game_traffic(prober)
    for chunk in (1 << 20, 300):
        rep, _ = assert_equivalent(data, chunk=chunk)
        (proxy,) = [a for a in rep["security"]["attacks"] if a["category"] == "open_proxy"]
        assert (proxy["hits"], proxy["top_client"]) == (1, prober), proxy
    lines = data.splitlines(keepends=True)
    parts = []
    for half in (lines[:3], lines[3:]):
        acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
        acc.feed(b"".join(half))
        parts.append(acc.partial())
    merged = access.merge(parts)
    assert {a["category"]: a["hits"] for a in summarize(merged)["security"]["attacks"]}["open_proxy"] == 1


def test_public_paths_are_no_probes_but_payloads_sent_to_them_are_attacks() -> None:
    """A Spring Boot admin server reading the app's /actuator/env and /actuator/loggers, and visitors reading the
    site's own /info.php page, are no scanner probes once the job lists those paths in public_paths (nor exposed
    files: the summary's public_paths, tests/tasks/test_logs_exposure.py); an XSS payload sent to one of them is still an attack, and a probe for /.env still a probe.  The
    same on every scan path."""

    def line(ip: str, request: str, status: int, size: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:00:00 +0000] "{request}" {status} {size} "-" "Mozilla/5.0" 0.010').encode()

    data = b"\n".join([line("10.1.0.5", "GET /actuator/env HTTP/1.1", 200, 5120),
                       line("10.1.0.5", "GET /actuator/loggers HTTP/1.1", 200, 2048),
                       line("192.0.2.7", "GET /info.php HTTP/1.1", 200, 3300),
                       line("198.51.100.7", "GET /actuator/env?q=<script>alert(1)</script> HTTP/1.1", 200, 5120),
                       line("198.51.100.7", "GET /.env HTTP/1.1", 404, 153)]) + b"\n"
    plain = scan(data)[0]["security"]  # without public_paths: /info.php answered 2xx is no probe, but exposed
    assert {a["category"]: a["hits"] for a in plain["attacks"]} == {"scanner_probe": 3, "xss": 1}
    assert sorted(e["path"] for e in plain["exposed"]) == ["/actuator/env", "/info.php"]
    for chunk in (1 << 20, 200):
        fast, _ = scan(data, chunk=chunk, public_paths=("/actuator/*", "/info.php"))
        python_fast, _ = scan(data, chunk=chunk, arrow=False, public_paths=("/actuator/*", "/info.php"))
        reference, _ = scan(data, chunk=chunk, fast=False, public_paths=("/actuator/*", "/info.php"))
        assert fast == python_fast == reference
        sec = fast["security"]
        assert {a["category"]: (a["hits"], a["top_client"]) for a in sec["attacks"]} == {
            "scanner_probe": (1, "198.51.100.7"), "xss": (1, "198.51.100.7")}


def test_public_paths_written_with_capitals_match_as_the_paths_are_compared() -> None:
    """Sensitive-file and probe paths are compared lower-cased: a public path written as the site spells it
    (/Info.php, /DAV/*) matched none of them, so its requests stayed scanner probes and exposed files."""

    def line(ip: str, request: str, status: int, size: int) -> bytes:
        return (f'{ip} - - [01/Mar/2024:10:00:00 +0000] "{request}" {status} {size} "-" "Mozilla/5.0" 0.010').encode()

    data = b"\n".join([line("10.1.0.5", "GET /Actuator/env HTTP/1.1", 200, 5120),
                       line("192.0.2.7", "GET /Info.php HTTP/1.1", 200, 3300),
                       line("198.51.100.7", "GET /.env HTTP/1.1", 404, 153)]) + b"\n"
    plain = scan(data)[0]["security"]
    assert {a["category"]: a["hits"] for a in plain["attacks"]} == {"scanner_probe": 2}, plain["attacks"]
    assert sorted(e["path"] for e in plain["exposed"]) == ["/actuator/env", "/info.php"], plain["exposed"]
    for arrow, fast in ((True, True), (False, True), (True, False)):
        sec = scan(data, arrow=arrow, fast=fast, public_paths=("/Actuator/*", "/Info.php"))[0]["security"]
        assert {a["category"]: (a["hits"], a["top_client"]) for a in sec["attacks"]} == {
            "scanner_probe": (1, "198.51.100.7")}, (arrow, fast, sec["attacks"])
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, data, 1 << 20)
    assert summarize(acc.partial(), public_paths=["/Actuator/*", "/Info.php"])["security"]["exposed"] == []


@pytest.mark.parametrize("env_size", [1870, 1432])
def test_a_catch_all_is_known_by_its_routes_and_absolute_lines_by_the_sites_hosts(env_size: int) -> None:
    """Five routes answered 2xx with one size, and no other, are a catch-all's page: a /.env of that size is no
    leak and an attack answered with it is no 2xx worth a warning (an attack answered with another size is); a
    /.env of another size is a leak.  An absolute request line is an open-proxy probe unless it names a host of
    the site's referers.  The same on every scan path."""
    rep, _ = assert_equivalent(catch_all_traffic(env_size), chunk=700)
    sec = rep["security"]
    assert 1870 in sec["catch_all_sizes"] and 4211 not in sec["catch_all_sizes"]
    assert [e["path"] for e in sec["exposed"]] == ([] if env_size == 1870 else ["/.env"])
    attacks = {a["category"]: a for a in sec["attacks"]}
    assert set(attacks) == {"sql_injection", "open_proxy", "scanner_probe"}
    assert attacks["scanner_probe"]["ok"] == (0 if env_size == 1870 else 1)  # /.env
    assert (attacks["sql_injection"]["hits"], attacks["sql_injection"]["ok"]) == (2, 1)  # /api/items's 512 bytes
    assert attacks["open_proxy"]["hits"] == 1
    # the site's names given: its own host by name, any other is a probe
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, catch_all_traffic(env_size), 1 << 20)
    named = summarize(acc.partial(), server_names=["*.example.org", "app.example.net"])["security"]
    (proxy,) = [a for a in named["attacks"] if a["category"] == "open_proxy"]
    assert (proxy["hits"], proxy["samples"]) == (1, ["GET http://proxy-judge.example/azenv.php HTTP/1.1"])
    other = summarize(acc.partial(), server_names=["example.org"])["security"]
    assert {a["category"]: a["hits"] for a in other["attacks"]}["open_proxy"] == 2


def crawler_farm(lines: int) -> bytes:
    """A log whose every user agent differs (a crawler farm, a DDoS with random agents), every 7th a scanner's
    (each with its own agent too), from IPv6 clients of a few /64s."""
    scanners = ("sqlmap/1.7.{}#stable (https://sqlmap.org)", "Mozilla/5.0 zgrab/0.x {}",
                "Nuclei - Open-source project (github.com/projectdiscovery/nuclei) {}")
    out = []
    for i in range(lines):
        ua = scanners[i % 3].format(i) if i % 7 == 0 else f"Mozilla/5.0 (X11; Linux x86_64) Crawler/{i}"
        out.append(f'2001:db8:{i % 5:x}::{i:x} - - [01/Mar/2024:10:{i // 600 % 60:02d}:00 +0000] '
                   f'"GET /p/{i % 40} HTTP/1.1" {404 if i % 7 == 0 else 200} 10 "-" "{ua}" 0.0{i % 10}\n')
    return "".join(out).encode()


@pytest.mark.parametrize("arrow", [True, False])
def test_scanner_agents_cache_stays_bounded_when_every_agent_differs(arrow: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each distinct agent was judged once and remembered for good, and the pyarrow path read every agent seen so
    far at each buffer: memory as large as the log's agents, and time quadratic in a log whose agents all differ.
    The cache now starts over past CACHE_MAX (as the referer caches) and each buffer reads only its own agents;
    the scanners found are exactly the reference parser's."""
    monkeypatch.setattr(access, "CACHE_MAX", 300)
    data = crawler_farm(6000)
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, arrow=arrow))
    feed_in_chunks(acc, data, 20_000)  # ~150 lines a buffer, 40 buffers
    assert (acc.arrow is not None and acc.arrow.lines == 6000) if arrow else acc.arrow is None
    assert len(acc.ua_scanner) <= 300
    part = acc.partial()
    ref = Accumulator(ScanOptions(log_format=COMBINED_TIMED, fast=False))
    feed_in_chunks(ref, data, 20_000)
    want = ref.partial()
    assert sum(part.scanners.values()) == 6000 // 7 + 1 and part.scanners == want.scanners
    assert comparable(summarize(part, top_n=50)) == comparable(summarize(want, top_n=50))


@pytest.mark.parametrize("arrow", [True, False])
def test_client_address_cache_stays_bounded_when_every_client_differs(arrow: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache of client addresses checked valid (Accumulator.ip_ok) kept every distinct address for good: a
    million clients (a DDoS, a crawler farm on IPv6 /64s) made it as large as the log's clients on top of the
    hosts counted.  It now starts over past CACHE_MAX; the counts are the reference parser's."""
    monkeypatch.setattr(access, "CACHE_MAX", 300)
    data = crawler_farm(6000) + b'999.1.1.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "x" 0.1\n'
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, arrow=arrow))
    feed_in_chunks(acc, data, 20_000)
    assert len(acc.ip_ok) <= 300
    part = acc.partial()
    ref = Accumulator(ScanOptions(log_format=COMBINED_TIMED, fast=False))
    feed_in_chunks(ref, data, 20_000)
    want = ref.partial()
    assert len(part.hosts) == 6000 and part.invalid == 1 and part.hosts == want.hosts
    assert comparable(summarize(part, top_n=50)) == comparable(summarize(want, top_n=50))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=70), max_size=40), st.sampled_from([1, 7, 64, 1 << 20]))
def test_fuzz_djb2_many_equals_goaccess_djb2(values: list[bytes], batch: int) -> None:
    """The vectorized agent hash is GoAccess's djb2 value for value: empty values, values longer than a batch,
    batches cut anywhere."""
    from upkeeper.logs import arrowscan
    from upkeeper.logs.goaccess import djb2

    old = arrowscan.DJB2_BATCH
    arrowscan.DJB2_BATCH = batch
    try:
        assert arrowscan.djb2_many(values) == [djb2(v) for v in values]
    finally:
        arrowscan.DJB2_BATCH = old


def test_visitors_of_a_million_agents_are_not_hashed_byte_by_byte_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """GoAccess keys a visitor on djb2(agent); hashing each distinct agent with a Python loop over its bytes cost
    ~20 µs an agent (4 s of a 50 MB log whose agents all differ, the largest part of its scan).  Many agents are
    now hashed with pyarrow kernels; the unique visitors are the same as with the loop."""
    from upkeeper.logs import goaccess

    data = crawler_farm(6000)
    calls = []

    def counted(b: bytes) -> int:
        calls.append(b)
        return goaccess.djb2(b)

    monkeypatch.setattr(access, "djb2", counted)
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    feed_in_chunks(acc, data, 20_000)
    part = acc.partial()
    assert len(calls) < 100
    monkeypatch.setattr(access, "DJB2_MANY", 10**9)  # the loop, as before
    ref = Accumulator(ScanOptions(log_format=COMBINED_TIMED, fast=False))
    feed_in_chunks(ref, data, 20_000)
    want = ref.partial()
    assert len(calls) > 5000 and len(want.visitors) == 6000 - 6000 // 7 - 1
    assert part.visitors == want.visitors


def test_free_text_paths_count_typed_sql_and_script_in_their_query_strings_apart() -> None:
    """A site search answers 200 to whatever is typed: a search for 'select * from users where id=1' or
    '<script>' read as an injection answered 2xx (a warning every week, h19's lead). Listed in free_text_paths,
    such requests count apart (``free_text``), not as ``ok``; a payload in the path of the same page, a
    traversal in its query string, and the same text sent to another path count as before. The same on every scan
    path, and merged from two workers' partial results."""

    def line(ip: str, request: str, status: int = 200) -> bytes:  # (each its own size: no catch-all page)
        size = 900 + len(request)
        return (f'{ip} - - [01/Mar/2024:10:00:00 +0000] "{request}" {status} {size} "-" "Mozilla/5.0" 0.010').encode()

    data = b"\n".join([
        line("192.0.2.1", "GET /search?q=select+*+from+users+where+id%3D1 HTTP/1.1"),
        line("192.0.2.2", "GET /Search?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1"),
        line("192.0.2.3", "GET /api/search?term=1%27+or+%271%27%3D%271 HTTP/1.1"),
        line("192.0.2.3", "GET /api/search?term=1%27+or+%271%27%3D%271&x=2 HTTP/1.1", 500),
        line("198.51.100.7", "GET /search/%27%20or%201=1--?q=a HTTP/1.1"),  # in the path: an injection
        line("198.51.100.7", "GET /search?q=../../../../etc/passwd HTTP/1.1"),  # another category
        line("198.51.100.7", "GET /products?id=1%27+or+%271%27%3D%271 HTTP/1.1"),  # not a free-text path
    ]) + b"\n"
    plain = {a["category"]: (a["hits"], a["ok"], a["free_text"]) for a in scan(data)[0]["security"]["attacks"]}
    assert plain == {"sql_injection": (5, 4, 0), "xss": (1, 1, 0), "path_traversal": (1, 1, 0)}, plain
    free = ("/search", "/api/*")
    for chunk in (1 << 20, 200):
        fast, _ = scan(data, chunk=chunk, free_text_paths=free)
        python_fast, _ = scan(data, chunk=chunk, arrow=False, free_text_paths=free)
        reference, _ = scan(data, chunk=chunk, fast=False, free_text_paths=free)
        assert fast == python_fast == reference
        got = {a["category"]: (a["hits"], a["ok"], a["free_text"]) for a in fast["security"]["attacks"]}
        assert got == {"sql_injection": (5, 2, 2), "xss": (1, 0, 1), "path_traversal": (1, 1, 0)}, got
        (sqli,) = [a for a in fast["security"]["attacks"] if a["category"] == "sql_injection"]
        assert "/search?q=select" not in sqli["samples"][0]  # the example shown is one that was not typed
    lines = data.splitlines(keepends=True)
    parts = []
    for half in (lines[:2], lines[2:]):
        acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, free_text_paths=free))
        acc.feed(b"".join(half))
        parts.append(acc.partial())
    merged = {a["category"]: (a["ok"], a["free_text"]) for a in summarize(access.merge(parts))["security"]["attacks"]}
    assert merged == {"sql_injection": (2, 2), "xss": (0, 1), "path_traversal": (1, 0)}, merged


def test_free_text_paths_match_the_path_of_an_absolute_request_line() -> None:
    """``GET http://shop.example/search?q=…`` (an absolute-form request line, RFC 9112 3.2.2: nginx takes it and logs
    it as sent) to a path listed in free_text_paths counted as an attack answered 2xx, while ``GET /search?q=…``
    did not: what was left of the line without its query string was an absolute request line (``absolute_uri:``),
    which looked like more than typed text.  Now the listed paths are matched against the path of an http(s)
    target too, and its typed text counts apart when the host is the site's own (here: its visitors' referers name
    it); for another host, with another scheme, or to another path it counts as before.  The same on every scan
    path (the C cut, the pyarrow cut, Python, the line parser), and merged from two workers' partial results."""

    def line(ip: str, request: str, status: int = 200, referer: str = "-") -> bytes:
        size = 900 + len(request)
        return (f'{ip} - - [01/Mar/2024:10:00:00 +0000] "{request}" {status} {size} "{referer}" "Mozilla/5.0" '
                "0.010").encode()

    visitors = [line(f"203.0.113.{k}", "GET / HTTP/1.1", referer="https://shop.example/cart") for k in range(1, 4)]
    data = b"\n".join([
        *visitors,
        line("192.0.2.1", "GET http://shop.example/search?q=select+*+from+users+where+id%3D1 HTTP/1.1"),
        line("192.0.2.2", "GET HTTPS://Shop.Example:443/Search?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1"),
        line("192.0.2.3", "GET http://shop.example/search?q=1%27+or+%271%27%3D%271 HTTP/1.1"),
        line("198.51.100.7", "GET http://other.test/search?q=1%27+or+%271%27%3D%271 HTTP/1.1"),  # not its host
        line("198.51.100.7", "GET ftp://shop.example/search?q=1%27+or+%271%27%3D%271 HTTP/1.1"),  # not http(s)
        line("198.51.100.7", "GET http://shop.example/products?id=1%27+or+%271%27%3D%271 HTTP/1.1"),  # not listed
        line("198.51.100.7", "GET http://shop.example/search/%27%20or%201=1--?q=a HTTP/1.1"),  # in the path
    ]) + b"\n"

    def attacks(rep: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
        return {a["category"]: (a["hits"], a["ok"], a["free_text"]) for a in rep["security"]["attacks"]}

    assert attacks(scan(data)[0]) == {"sql_injection": (6, 6, 0), "xss": (1, 1, 0)}
    free = ("/search",)
    for chunk in (1 << 20, 200):
        fast, _ = scan(data, chunk=chunk, free_text_paths=free)
        kernels, _ = scan(data, chunk=chunk, native_cut=False, free_text_paths=free)
        python_fast, _ = scan(data, chunk=chunk, arrow=False, free_text_paths=free)
        reference, _ = scan(data, chunk=chunk, fast=False, free_text_paths=free)
        assert fast == kernels == python_fast == reference
        assert attacks(fast) == {"sql_injection": (6, 4, 2), "xss": (1, 0, 1)}, attacks(fast)
    lines = data.splitlines(keepends=True)
    for cut in (2, 4, 6):  # the referers (which tell the host is the site's own) in one part or both
        parts = []
        for half in (lines[:cut], lines[cut:]):
            acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, free_text_paths=free))
            acc.feed(b"".join(half))
            parts.append(acc.partial())
        assert attacks(summarize(access.merge(parts))) == {"sql_injection": (6, 4, 2), "xss": (1, 0, 1)}, cut
    # the site's names told (server_names): the same without referers
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, free_text_paths=free))
    acc.feed(b"".join(lines[3:]))
    assert attacks(summarize(acc.partial(), server_names=["shop.example"])) == {
        "sql_injection": (6, 4, 2), "xss": (1, 0, 1)}
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, free_text_paths=free))
    acc.feed(b"".join(lines[3:]))
    assert attacks(summarize(acc.partial())) == {"sql_injection": (6, 6, 0), "xss": (1, 1, 0)}  # not known as its own

def _requests_traffic(seed: int, n: int, vhost: bool = False) -> bytes:
    """A few popular URLs among many seen once (cache-busting ``?_=<ms>``, ids), some 404s and static files."""
    import random

    rnd = random.Random(seed)
    out = []
    for i in range(n):
        x = rnd.random()
        if x < 0.4:
            req, st = f"GET /popular/{rnd.randrange(5)} HTTP/1.1", 200
        elif x < 0.7:
            req, st = f"GET /api/poll?_={1700000000000 + i} HTTP/1.1", 200
        elif x < 0.8:
            req, st = f"GET /missing/{rnd.randrange(10**6)}?v={i} HTTP/1.1", 404
        elif x < 0.9:
            req, st = f"GET /static/app.css?v={rnd.randrange(40)} HTTP/1.1", 200
        else:
            req, st = f"POST /items/{rnd.randrange(3000)} HTTP/2.0", 201
        host = f"site{rnd.randrange(3)}.example " if vhost else ""
        out.append(f'{host}10.0.{i % 50}.{i % 200} - - [01/Mar/2024:10:{i // 600 % 60:02d}:00 +0000] "{req}" {st} '
                   f'{200 + i % 700} "-" "Mozilla/5.0" 0.0{i % 90:02d}')
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("path", ["arrow", "python", "lines"])
def test_requests_folded_and_pruned_in_the_middle_of_a_scan_keep_every_total_and_bound_the_list(
        monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """A log of cache-busting query strings held every distinct request line until the scan ended, twice (raw,
    then as GoAccess's key): 1 GB of them took 1.5 GB. Now the raw lines are turned into keys every REQUESTS_FOLD,
    and past REQUESTS_KEPT keys the least seen are left out. Every total, the top paths, the 404 paths and the
    vhosts' paths stay exact; each requested file still listed misses at most ``max_error`` hits, and the report
    says so; the popular ones are exact. The same merged from two workers."""
    kw: dict[str, Any] = {"arrow": path == "arrow", "fast": path != "lines", "arrow_min_buffer": 0}
    for vhost in (False, True):
        data = _requests_traffic(7, 6000, vhost)
        fmt = ("$host " + COMBINED_TIMED) if vhost else COMBINED_TIMED

        def run(fold: int, kept: int, parts: int = 1, data: bytes = data, fmt: str = fmt
                ) -> tuple[access.AccessPartial, dict[str, Any]]:
            monkeypatch.setattr(access, "REQUESTS_FOLD", fold)
            monkeypatch.setattr(access, "REQUESTS_KEPT", kept)
            lines = data.splitlines(keepends=True)
            partials = []
            for k in range(parts):
                acc = Accumulator(ScanOptions(log_format=fmt, **kw))
                feed_in_chunks(acc, b"".join(lines[k::parts]), 1 << 14)
                partials.append(acc.partial())
            merged = access.merge(partials) if parts > 1 else partials[0]
            return merged, summarize(merged, top_n=10)

        exact_p, exact = run(10**9, 10**9)
        assert "requests_pruned" not in exact["goaccess"] and exact_p.ga_pruned_hits == 0
        for parts in (1, 2):
            p, rep = run(300, 400, parts)
            pruned = rep["goaccess"]["requests_pruned"]
            assert pruned["hits"] > 1000 and pruned["max_error"] >= 1, pruned
            assert len(p.ga_requests) <= 2 * (400 + 300)
            for k, c in p.ga_requests.items():
                assert exact_p.ga_requests[k] - pruned["max_error"] <= c <= exact_p.ga_requests[k], k
            assert sum(p.ga_requests.values()) + p.ga_pruned_hits == sum(exact_p.ga_requests.values())
            assert p.ga_static_hits == exact_p.ga_static_hits
            for name in ("requests", "visitors", "status", "top", "endpoints", "hourly", "latency", "vhosts"):
                assert rep[name] == exact[name], (name, parts, vhost)
            assert {r["data"]: r["hits"] for r in rep["goaccess"]["requests"][:5]} == {
                r["data"]: r["hits"] for r in exact["goaccess"]["requests"][:5]}  # the popular ones: exact
            assert {k: v for k, v in rep["goaccess"].items() if k not in ("requests", "requests_pruned")} == {
                k: v for k, v in exact["goaccess"].items() if k != "requests"}


@pytest.mark.parametrize("path", ["arrow", "python", "lines"])
def test_a_memory_limit_s_message_counts_the_request_lines_folded_mid_scan(monkeypatch: pytest.MonkeyPatch,
                                                                          path: str) -> None:
    """The memory limit's message names what a scanning process holds (Accumulator.sizes): past REQUESTS_FOLD
    its distinct request lines are GoAccess keys, and the message said it held only those counted since the last
    fold (a flood of 1 million distinct URLs from one client stopped with '12,345 distinct request lines')."""
    monkeypatch.setattr(access, "REQUESTS_FOLD", 1000)
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow=path == "arrow", fast=path != "lines",
                                  arrow_min_buffer=0))
    data = b"".join(b'10.0.0.1 - - [01/Mar/2024:10:00:00 +0000] "GET /api/poll?_=%d HTTP/1.1" 200 5 "-" "ua" 0.001\n'
                    % (1700000000000 + i) for i in range(6000))
    feed_in_chunks(acc, data, 1 << 14)
    held = acc.sizes()
    assert held["lines"] == 6000 and held["distinct request lines"] >= 6000, held
    budget = parallel.Budget(1, base=0)
    with pytest.raises(parallel.MemoryLimit, match=r"\(6,\d\d\d distinct request lines"):
        budget.check(acc, "access.log")
