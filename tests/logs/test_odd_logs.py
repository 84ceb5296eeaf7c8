"""Real-world oddities in access logs: each is read as GoAccess 1.7 reads it (the real binary runs) and alike on
every scanning path (pyarrow, the Python split, the line parser, several processes over small buffers).

Where GoAccess is not the reference (a line starting with NUL bytes: docs/logs.md, "Exactly GoAccess's numbers")
the test says what GoAccess does and what upkeeper does instead.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any

import pytest

from logs.goaccess_helpers import (
    SCAN_PATHS,
    assert_all_paths_same_as_goaccess,
    goaccess,
    goaccess_numbers,
    ours,
)
from upkeeper.logs import access, parallel
from upkeeper.logs.access import ScanOptions, summarize
from upkeeper.logs.nginx_format import COMBINED_TIMED, to_goaccess

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def line(ip: str | bytes = "1.2.3.4", req: str | bytes = "GET /a HTTP/1.1", st: str = "200", ref: str | bytes = "-",
         ua: str | bytes = "ua", t: str = "01/Mar/2024:10:00:00 +0000", rt: str | bytes = "0.010",
         end: bytes = b"\n") -> bytes:
    def b(x: str | bytes) -> bytes:
        return x if isinstance(x, bytes) else x.encode()
    return (b(ip) + b" - - [" + b(t) + b'] "' + b(req) + b'" ' + b(st) + b' 5 "' + b(ref) + b'" "' + b(ua) + b'" '
            + b(rt) + end)


#: ordinary lines around the odd ones, enough that the fast paths (not only the line parser) read the file
GOOD = b"".join(line(ip=f"10.0.{i % 7}.{i}", req=f"GET /p{i % 13} HTTP/1.1", st=str([200, 301, 404, 500][i % 4]),
                     ua=f"ua{i % 5}") for i in range(60))

JSON_FMT = ("""log_format api escape=json '{"ip":"$remote_addr","time":"$time_local","request":"$request",' """
            """'"status":$status,"agent":"$http_user_agent"}';""")
NONE_FMT = ("""log_format raw escape=none '$remote_addr - $remote_user [$time_local] "$request" $status """
            """$body_bytes_sent "$http_referer" "$http_user_agent" $request_time';""")


def jline(ip: str = "1.1.1.1", req: str = "GET /a HTTP/1.1", st: int = 200, ua: str | bytes = "ua") -> bytes:
    agent = ua if isinstance(ua, bytes) else ua.encode()
    return (f'{{"ip":"{ip}","time":"01/Mar/2024:10:00:00 +0000","request":"{req}","status":{st},"agent":"'
            .encode() + agent + b'"}\n')


JGOOD = b"".join(jline(ip=f"10.0.0.{i}", req=f"GET /p{i % 9} HTTP/1.1", st=[200, 404, 500][i % 3], ua=f"u{i % 4}")
                 for i in range(60))

CASES: dict[str, tuple[str, bytes]] = {
    # zone ids (inet_pton refuses them), v4-mapped and differently written v6 (distinct, not normalised)
    "ipv6": (COMBINED_TIMED, b"".join(line(ip=ip) for ip in (
        "::1", "2001:db8::1", "2001:DB8::1", "2001:0db8:0:0:0:0:0:1", "fe80::1%eth0", "fe80::1%25eth0",
        "::ffff:1.2.3.4", "1.2.3.4", "[::1]", "::", "::ffff:1.2.3.256", "2001:db8::1::2", "1:2:3:4:5:6:1.2.3.4"))),
    # nginx's default escaping; a TLS handshake on a plain port, an empty request, "-" (400/408)
    "escape_default": (COMBINED_TIMED, line(req=r"GET /x\x22y HTTP/1.1") + line(ua=r"Mozilla \x22q\x22")
                       + line(ref=r"http://a/\x22b") + line(req=r"GET /b\x5Cs HTTP/1.1") + line(ua="ua\\")
                       + line(req=r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03", st="400", ua="-")
                       + line(req="-", st="400", ua="-") + line(req="", st="400") + line(req="-", st="408")),
    # escape=none: raw quotes, raw binary and control bytes, bytes that are not UTF-8
    "escape_none": (NONE_FMT, line(req='GET /x"y HTTP/1.1') + line(ua='a "b" c') + line(ref='"')
                    + line(req=b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", st="400") + line(ua=b"\x1b[2J")
                    + line(req=b"GET /\xff\xfe HTTP/1.1") + line(ua=b"caf\xe9 \xff") + line(ref=b"http://x/\xc3\x28")
                    + line(ua=b"tab\there") + line(ua=b"cr\rhere") + line(ua="a\\")),
    "escape_json": (JSON_FMT, jline(req=r'GET /q?x=\"y\" HTTP/1.1') + jline(ua=r'Mozilla \"x\"') + jline(ua="e \\\\")
                    + jline(req=r"\u0016\u0003\u0001\u0000", st=400) + jline(req="", st=400, ua="")
                    + jline(ua=b"caf\xc3\xa9 \xff") + jline(ua=r"\u001b[31m") + jline(ip="2001:db8::1")
                    + jline(req=r"GET /\\\" HTTP/1.1") + jline(ua='x\\\\\\"y')),
    "protocols": (COMBINED_TIMED, b"".join(line(req=f"GET /h HTTP/{v}") for v in (
        "2.0", "3.0", "2", "3", "1.0", "0.9", "4.0")) + line(req="GET /h http/1.1") + line(req="PRI * HTTP/2.0", st="400")),
    "absolute_and_connect": (COMBINED_TIMED, b"".join(line(req=r) for r in (
        "GET http://example.com/path?q=1 HTTP/1.1", "GET https://example.com:8443/x HTTP/1.1",
        "CONNECT example.com:443 HTTP/1.1", "CONNECT [2001:db8::1]:443 HTTP/1.1", "OPTIONS * HTTP/1.1",
        "GET //double HTTP/1.1", "PROPFIND /dav HTTP/1.1"))),
    # CRLF endings (GoAccess keeps the CR: the last field reads up to it), a bare CR, a CR-only line
    "crlf": (COMBINED_TIMED, GOOD.replace(b"\n", b"\r\n") + line(rt="-", end=b"\r\n") + line(end=b"\r")
             + b"\r\n" + line(end=b"")[:-6] + b"\r\n"),
    "non_utf8": (COMBINED_TIMED, line(ua=b"\xff\xfe\xfd") + line(ua=b"Mozilla \xc3\xa9") + line(ua=b"M%FF%C3%A9")
                 + line(ref=b"http://\xff/") + line(req=b"GET /\xe9t\xe9 HTTP/1.1") + line(req=b"GET /%e9 HTTP/1.1")),
    # DST changes and lines out of order: the clock time as written, the offset only checked
    "time_offsets": (COMBINED_TIMED, b"".join(line(ip=f"10.9.0.{i}", t=t) for i, t in enumerate([
        "31/Mar/2024:01:59:59 +0100", "31/Mar/2024:03:00:00 +0200", "27/Oct/2024:02:30:00 +0200",
        "27/Oct/2024:02:30:00 +0100", "01/Mar/2024:23:59:59 -0500", "02/Mar/2024:00:00:01 +0000",
        "28/Feb/2024:10:00:00 +0000", "29/Feb/2023:00:00:00 +0000", "01/Mar/2024:10:00:00 +2500"] * 3))),
    # NUL bytes inside a line: GoAccess reads up to the first one (the line fails where it is cut)
    "nul_inside": (COMBINED_TIMED, line(req=b"GET /n\x00ul HTTP/1.1") + line(ua=b"u\x00a") + line(rt=b"0.0\x0010")
                   + line(ip=b"1.2.3.4\x00")),
    "last_line_without_newline": (COMBINED_TIMED, line(req="GET /last HTTP/1.1", end=b"")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_odd_lines_match_goaccess_on_every_path(tmp_path: Path, case: str) -> None:
    fmt, odd = CASES[case]
    good = JGOOD if fmt == JSON_FMT else GOOD
    log = tmp_path / f"{case}.log"
    log.write_bytes(good + odd + (good if odd.endswith(b"\n") else b""))
    ga = assert_all_paths_same_as_goaccess(log, tmp_path, fmt)
    assert ga["valid"] >= 120 or case in ("crlf", "last_line_without_newline")
    mine = ours(log, fmt=fmt, arrow_min_buffer=0)
    assert mine["fast_path_lines"] >= 60 or fmt == JSON_FMT  # not only the line parser (\" sends JSON there)
    for s in mine["invalid_samples"]:  # samples never carry control characters (a terminal shows them)
        assert not CONTROL.search(s["line"]), s


def scan(log: Path, fmt: str = COMBINED_TIMED, *, workers: int = 1, unit: int = 1 << 20, **kw: Any) -> dict[str, Any]:
    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=unit)
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=fmt, **kw), units, workers=workers,
                               min_parallel=0)
    rep: dict[str, Any] = summarize(partial, top_n=10, log_format=fmt)
    return rep


def comparable(rep: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in rep.items() if k not in ("fast_path_lines", "bytes_read")},
            "invalid_samples": [{**s, "offset": None} for s in rep["invalid_samples"]]}  # offsets: the line path's


def test_nul_padding_long_lines_and_buffer_edges_read_alike_on_every_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line starting with NUL bytes (what a crash leaves) is a failed request with its own reason and an
    escaped sample, where GoAccess 1.7 skips it silently as empty (with the request written after the padding);
    lines of 70 and 300 KB, CRLF and a last line without newline, read in small buffers cut anywhere
    and by two processes, give the same report as one process reading large buffers."""
    pad = b"\x00" * 100 + line(ip="7.7.7.7", req="GET /after-crash HTTP/1.1")
    long = [line(req="GET /q?" + "q" * 70_000 + " HTTP/1.1"), line(ref="http://r/" + "R" * 300_000)]
    parts = [GOOD, pad, b"\x00\x00\n", GOOD, long[0], GOOD, long[1], line(end=b"\r\n") * 30, GOOD,
             line(req="GET /end HTTP/1.1", end=b"")]
    log = tmp_path / "odd.log"
    log.write_bytes(b"".join(parts))
    small = tmp_path / "small.log"  # GoAccess cuts lines of 4 KB and more: compare it without the long ones
    small.write_bytes(b"".join(p for p in parts if p not in long))
    ga = goaccess_numbers(goaccess(small, tmp_path, to_goaccess(COMBINED_TIMED).argv()))
    g = ours(small)["goaccess"]
    assert (g["total_requests"], g["valid_requests"], g["failed_requests"]) == (ga["total"] + 2, ga["valid"],
                                                                               ga["failed"] + 2)
    reports = {name: scan(log, **kw) for name, kw in SCAN_PATHS.items()}
    monkeypatch.setattr(access.Accumulator, "chunk", 65521)  # buffers end inside lines, also inside long ones
    reports["small buffers"] = scan(log, arrow_min_buffer=0)
    reports["2 processes"] = scan(log, workers=2, unit=400_000, arrow_min_buffer=0)
    first = comparable(reports["arrow"])
    for name, rep in reports.items():
        assert comparable(rep) == first, name
    assert first["invalid_reasons"]["starts with NUL"] == 2
    samples = [s for s in reports["line"]["invalid_samples"] if s["reason"].startswith("the line starts with NUL")]
    assert len(samples) == 2 and all(s["line"].startswith("\\x00\\x00") for s in samples)
    assert "/after-crash" in samples[1]["line"]  # in byte order: the bare "\0\0" line first
    assert first["goaccess"]["total_requests"] == first["lines"] == 60 * 4 + 2 + 1 + 1 + 30 + 1


def test_rotated_gzip_plain_and_empty_files_match_goaccess(tmp_path: Path, cli: Any) -> None:
    """Rotated files compressed and not, empty ones (plain, a 0-byte .gz, a .gz of nothing) and files whose last
    line has no newline: the numbers of GoAccess reading the same files decompressed (it reads no gzip)."""
    def lines(tag: int, n: int) -> bytes:
        return b"".join(line(ip=f"10.{tag}.0.{i}", req=f"GET /{tag}/{i % 5} HTTP/1.1", ua=f"u{i % 3}",
                             t=f"0{tag}/Mar/2024:10:00:{i % 60:02d} +0000", st=str(200 + 100 * (i % 4)))
                        for i in range(n))
    files = {"access.log.6": lines(6, 20), "access.log.5.gz": gzip.compress(lines(5, 30)[:-1]),
             "access.log.4.gz": gzip.compress(b""), "access.log.3.gz": b"", "access.log.2.gz": gzip.compress(lines(2, 40)),
             "access.log.1": b"", "access.log": lines(1, 50)[:-1]}
    plain = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        text = tmp_path / f"{name}.txt"
        text.write_bytes(gzip.decompress(data) if name.endswith(".gz") and data else data)
        plain.append(str(text))
    out = tmp_path / "ga.json"
    import json
    import shutil
    import subprocess

    exe = shutil.which("goaccess")
    assert exe is not None
    res = subprocess.run([exe, *plain, *to_goaccess(COMBINED_TIMED).argv(), "-o", str(out), "--no-progress"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    ga = json.loads(out.read_text())["general"]
    r = cli(["logs", "nginx", str(tmp_path / "access.log"), "--format", "combined_timed", "--json"])
    assert r.code == 0, r.output
    g = r.json()["goaccess"]
    for k in ("total_requests", "valid_requests", "failed_requests", "unique_visitors", "bandwidth"):
        assert g[k] == ga[k], k
    assert g["valid_requests"] == 140 and len(r.json()["files"]) == 7


def test_log_text_never_reaches_the_terminal_as_control_sequences(tmp_path: Path, cli: Any) -> None:
    """A client sends GET /%1B[2J (nginx logs it escaped; the URL is percent-decoded to ESC) and, with
    escape=none, raw ESC in a line that does not parse: the tables and the warning used to print them raw."""
    log = tmp_path / "esc.log"
    log.write_bytes(line(req="GET /%1B%5B31mRED%1B%5D0;pwned%07 HTTP/1.1", ua="a%1B%5B2Jb")
                    + b"x\x1b[31mRED\x1b]0;pwned\x07 \x1b[2J\x00z\n")
    r = cli(["logs", "nginx", str(log), "--format", "combined_timed"])
    assert r.code == 0, r.output
    assert "RED" in r.out and "\\x1B" in r.out and "\\x1B[31mRED" in r.err  # shown, escaped
    # (Rich writes no styles when not on a terminal: any control character but newlines came from the log)
    assert not CONTROL.search(r.output.replace("\n", "")), r.output


def test_wrong_format_gives_up_only_a_file_none_of_whose_first_lines_parse(tmp_path: Path) -> None:
    """access.wrong_format (the probe logs.nginx runs before its scan): None as soon as one of the first lines
    parses (after blank lines and comments, which do not count), or one of the last lines of a plain file, or when
    the range is shorter than the lines tried; the rest of a compressed file from an offset is not tried."""
    opts = ScanOptions(log_format=COMBINED_TIMED)
    bad = b'{"not": "an access log line"}\n'
    log = tmp_path / "a.log"

    def probe(data: bytes, *, start: int = 0, gz: bool = False) -> access.WrongFormat | None:
        log.write_bytes(gzip.compress(data) if gz else data)
        end = None if gz else len(data)
        return access.wrong_format(opts, parallel.Unit(str(log), start, end, gz, True), lines=50, tail=5)

    w = probe(b"\n# a comment\n" + bad * 60)
    assert w is not None and w.lines == 50 and w.reasons == {"invalid %h": 50} and w.start == 0
    assert [s["offset"] for s in w.samples] == [13, 13 + len(bad), 13 + 2 * len(bad)]
    assert probe(bad * 60, gz=True) is not None
    assert probe(bad * 60, start=len(bad), gz=True) is None  # the rest of a compressed file: not tried
    assert probe(bad * 60, start=10 * len(bad)) is not None  # from a cursor
    assert probe(bad * 49 + b"\n" * 5) is None  # too few lines to tell
    assert probe(bad * 49 + line() + bad * 60) is None  # a line among the first parses
    assert probe(bad * 200 + line()) is None  # the last lines parse: the format changed within the file
    assert probe(bad * 200 + line() + bad * 5) is not None  # (not among the last 5)


def test_suggest_format_names_the_format_that_reads_lines_with_more_fields() -> None:
    """Lines written with nginx's 'main' (a quoted X-Forwarded-For at the end), or with the docs' upstream timing
    format, read with combined: the suggested format reads them field for field; lines that fit get none."""
    from upkeeper.logs.access import suggest_format

    base = '203.0.113.{ip} - - [01/Mar/2024:10:00:{s:02d} +0000] "GET /p/{i} HTTP/1.1" 200 {b} "-" "Mozilla/5.0"'
    main = "".join(base.format(ip=i % 250 + 1, i=i, s=i % 60, b=100 + i) + ' "10.0.0.1"\n' for i in range(300)).encode()
    timing = "".join(base.format(ip=i % 250 + 1, i=i, s=i % 60, b=100 + i) + f' rt=0.{i:03d} uct="0.001" uht="0.0{i % 10}2" '
                     f'urt="0.0{i % 10}3"\n' for i in range(300)).encode()
    plain = "".join(base.format(ip=i % 250 + 1, i=i, s=i % 60, b=100 + i) + "\n" for i in range(300)).encode()
    hint = suggest_format(main, "combined")
    assert hint is not None and hint.log_format == "main" and hint.fits == 300 and hint.current_fits == 0, hint
    assert hint.tail == '"10.0.0.1"'
    hint = suggest_format(timing, "combined")
    assert hint is not None and "urt=\"$upstream_response_time\"" in hint.log_format, hint
    assert suggest_format(plain, "combined") is None
    assert suggest_format(main, "main") is None
    # what the configured format does to them: more fields (parsed), or not parsed at all (another order)
    from upkeeper.logs.access import format_mismatch

    hint = suggest_format(main, "combined")
    assert hint is not None and hint.current_parsed == 300
    told = format_mismatch(hint.lines, hint.current_parsed, hint.current_fits, hint.tail, "combined")
    assert told.startswith("300 of the first 300 lines have more fields") and "do not parse" not in told, told
    other = '$remote_addr [$time_local] "$request" $status'
    hint = suggest_format(plain, other)
    assert hint is not None and hint.log_format == "combined" and hint.current_parsed == hint.current_fits == 0, hint
    told = format_mismatch(hint.lines, hint.current_parsed, hint.current_fits, hint.tail, other)
    assert told == f"300 of the first 300 lines do not parse with the log_format {other!r} (counted as unparsed: " \
                   "nothing of them is read)", told
    assert suggest_format(b"", "combined") is None


def test_wrong_format_reads_the_last_lines_of_a_compressed_file_too(tmp_path: Path) -> None:
    """A rotated .gz file whose log_format changed within it (the old lines first, then those the job's format
    parses) was given up whole after its first lines, its last ones never tried as a plain file's are: the lines
    after the change were never read, by this run or any later one (its format is already the right one). Now a
    compressed file is decompressed to its end (far faster than parsing it) and its last lines tried too."""
    opts = ScanOptions(log_format=COMBINED_TIMED)
    bad = b'{"not": "an access log line"}\n'
    log = tmp_path / "access.log.2.gz"

    def probe(data: bytes, tail_bytes: int = access.PROBE_TAIL_BYTES) -> access.WrongFormat | None:
        log.write_bytes(gzip.compress(data))
        return access.wrong_format(opts, parallel.Unit(str(log), 0, None, True, True), lines=50, tail=5,
                                   tail_bytes=tail_bytes)

    assert probe(bad * 200 + line() * 3) is None  # the format changed within the file: read it
    assert probe(bad * 200 + line()) is None
    assert probe(bad * 2000 + line() + b"\n") is None  # (bigger than a buffer of the probe's)
    assert probe(bad * 200 + line() + bad * 5) is not None  # (not among the last 5)
    assert probe(bad * 200) is not None
    w = probe(bad * 20000 + line(), tail_bytes=4 * len(bad))  # the window: whole lines, from a line start
    assert w is None
    assert probe(bad * 20000 + line()[:-1]) is None  # a last line without its newline
