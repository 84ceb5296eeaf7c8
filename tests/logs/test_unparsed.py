"""Unparsable access-log lines cost about what parsed ones cost, and give the very figures the line parser gave.

A log in another format (100 % unparsable), an nginx error log read as an access log, runs of garbage and files of
empty lines went through the line parser one line at a time: 5-9 µs a line (a 30 KB line: milliseconds), 5-40 MB/s
where good lines are read at 100-160 MB/s.  Now the C extension tells most such lines apart in one pass
(upkeeper.logs._cut.line_faults), the arrow path takes the empty lines out before its cut, and the parser's
parse_string jumps with bytes.find.  These tests hold the new paths to the code they replaced, copied here verbatim
(the reference), on any bytes.
"""

from __future__ import annotations

import time
from itertools import repeat
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logs.test_access_arrow import ISO_UPSTREAM, ODD
from logs.test_access_parse import GOOD, feed_in_chunks
from upkeeper.logs.access import (
    NL,
    SLOW_BLOCK_LINES,
    AccessPartial,
    Accumulator,
    ScanOptions,
    _has_list,
    _line_blanks_ok,
)
from upkeeper.logs.goaccess import GoAccessLineParser, LineError, fault_kind, trim
from upkeeper.logs.nginx_format import COMBINED, COMBINED_TIMED, LIST_BLANK, MAIN, to_goaccess

NOT_BUILT = "the C extension upkeeper.logs._cut is not built here: 'make venv' (pip install -e .) builds it"
SHORT = '$remote_addr [$time_local] "$request" $status'
JSON_FORMAT = ('escape=json \'{"time":"$time_iso8601","remote_addr":"$remote_addr","request":"$request",'
               '"status":$status,"body_bytes_sent":$body_bytes_sent,"request_time":$request_time}\'')
FORMATS = [
    COMBINED, COMBINED_TIMED, MAIN, SHORT, ISO_UPSTREAM, JSON_FORMAT,
    '$msec $remote_addr "$request_method $request_uri $server_protocol" $status',  # %x %m %U %H: the parser's
    '$remote_addr $host [$time_local] "$request" $status $body_bytes_sent $request_time $upstream_response_time',
    '$remote_addr - [$time_local] $status "$request" "$http_x_forwarded_for" $upstream_addr',
]  # fmt: skip
ERROR_LOG = [
    b'2024/03/04 18:04:38 [error] 7787#0: *1 connect() failed (111: Connection refused) while connecting to upstream, '
    b'client: 61.66.189.235, server: example.com, request: "GET /healthz HTTP/1.1", host: "example.com"',
    b"2024/03/04 20:55:09 [notice] 2584#0: signal process started",
]
JSON_LINES = [
    b'{"time":"2024-03-04T10:00:00+00:00","remote_addr":"1.2.3.4","request":"GET / HTTP/1.1","status":200,'
    b'"body_bytes_sent":10,"request_time":0.010}',
    b'{"time":"04/Mar/2024:10:00:00 +0000","remote_addr":"2001:db8::1","request":"GET /a\\"b HTTP/1.1"}',
]
OTHER = [
    b"", b"#", b"# a comment", b"\x00", b"\x00\x00 1.2.3.4 - - [01/Mar/2024:10:00:00 +0000]", b"-", b" ", b"\\",
    b"1.2.3.4", b"1.2.3.4 ", b"1.2.3.4 - - [", b"1.2.3.4 - - [01/Mar/2024", b"[::1] - - [01/Mar/2024:10:00:00 +0000]",
    b"1.2.3.4 - - [01/mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" +0200 -0 \"-\" \"-\"",
    b"1.2.3.4 - - [1/March/2024:1:2:3 +0000] \"\" 599 184467440737095516150 \"-\" \"-\"",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 18446744073709551616 \"-\" \"-\"",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 -18446744073709551615 \"-\" \"-\"",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 0600 1 \"-\" \"-\"",
    b"1.2.3.4 - - [2024-03-01T10:00:00+01:00] \"GET / HTTP/1.1\" 200 1",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"" + b"A" * 5000 + b"\"",
    b"01.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
    b"fe80::1%eth0 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" 0.1, 0.2 : 0.3",
    b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"ua\" \"" + LIST_BLANK + b"\"",
    "1.2.3.4 - - [01/Mär/2024:10:00:00 +0000] \"GET /ü HTTP/1.1\" 200 1".encode(),
    b"1" * 70 + b" - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1",
]  # fmt: skip
SPLIT_REQUEST = [  # for the format of $request_method $request_uri $server_protocol, and $msec
    b'1709287200.123 1.2.3.4 "GET /a HTTP/1.1" 200', b'1709287200 ::1 "get /x?y=1 http/2.0" 404',
    b'1709287200.5 1.2.3.4 "FOO / HTTP/1.1" 200', b'1709287200.5 1.2.3.4 "GET  HTTP/1.1" 200',
    b'1709287200.5 1.2.3.4 "GET / SPDY/3" 200', b'-1709287200 1.2.3.4 "GET / HTTP/1.1" 200',
    b'99999999999999999999999 1.2.3.4 "BASELINE-CONTROLX / HTTP/3" 200', b'99999999999.9 1.2.3.4 "PUT / HTTP/3" 99',
    b'00000000000.9 1.2.3.4 "MKCOL / HTTP/1" 200', b'999999999999.9 1.2.3.4 "PUT / HTTP/3" 99',
]
CORPUS = GOOD + ODD + ERROR_LOG + JSON_LINES + OTHER + SPLIT_REQUEST


# -- the reference: the code before, verbatim -------------------------------------------------------------------


def token_reference(s: bytes, pos: int, delim: bytes, cnt: int) -> tuple[bytes | None, int]:
    """GoAccessLineParser._token as it was: GoAccess's parse_string, byte by byte."""
    n = len(s)
    if delim:
        # strpbrk: the delimiter must occur somewhere in the rest of the line
        j = s.find(delim, pos)
        if j < 0:
            return None, pos
        end = delim[0]
    else:
        end = -1  # NUL: read to the end
    idx = 0
    i = pos
    while True:
        c = s[i] if i < n else -1
        if c == end:
            idx += 1
        if (c == end and cnt == idx) or c == -1:
            return trim(s[pos:i]), i
        if c == 0x5C:
            i += 1
            if i >= n:
                return None, pos
        i += 1


class ReferenceParser(GoAccessLineParser):
    _token = staticmethod(token_reference)  # type: ignore[assignment]


class ReferenceAccumulator(Accumulator):
    """The accumulator with the line parser's loop as it was: every line handed over parsed one by one, the buffer
    of the lines the fast paths hand over joined again, the Python split's bisection and sift as they were (and the
    empty lines left in the arrow path's buffers: ``native_faults=False``)."""

    def __init__(self, opts: ScanOptions) -> None:
        super().__init__(opts)
        self.parser = ReferenceParser(self.parser.fmt.decode(), self.parser.date_format, self.parser.time_format)

    def _slow_lines(self, lines: list[bytes], last: bytes, source: str, offset: int, fallback: bool = False,
                    restored: bool = False) -> None:
        self._slow(b"".join(x + NL for x in lines) + last, source, offset, fallback)

    def _fast(self, buf: bytes, source: str, offset: int, sifted: int = 0) -> None:
        n = buf.count(NL)
        cols = self._split(buf, n) if n else None
        if cols is None:
            if n <= SLOW_BLOCK_LINES:
                self._slow(buf, source, offset)
                return
            if sifted == 0 and self._sift(buf, source, offset):
                return
            if sifted < 2 and self._sift(buf, source, offset, blanks=True):
                return
            cut = buf.find(NL, len(buf) // 2) + 1
            if cut <= 0 or cut >= len(buf):
                cut = buf.rfind(NL, 0, len(buf) - 1) + 1
            self._fast(buf[:cut], source, offset, sifted)
            self._fast(buf[cut:], source, offset + cut, sifted)
            return
        self._columns(cols, n, buf, source, offset)

    def _sift(self, buf: bytes, source: str, offset: int, blanks: bool = False) -> bool:
        plan = self.plan
        assert plan is not None
        lines = buf.split(NL)
        lines.pop()  # buf ends with a newline
        want = 2 * plan.quotes
        counts = list(map(bytes.count, lines, repeat(b'"', len(lines))))
        if want:
            bad = [i for i, c in enumerate(counts) if c != want]
        else:
            bad = []
        if plan.list_marks:  # and the lines with a list of upstream values in their unquoted text
            skip = set(bad)
            bad += [i for i, ln in enumerate(lines) if i not in skip and _has_list(ln, plan.list_marks)]
            bad.sort()
        if blanks:  # blanks out of place (a value of a variable upkeeper knows nothing about, a truncated line)
            skip = set(bad)
            bad += [i for i, ln in enumerate(lines) if i not in skip and not _line_blanks_ok(ln, plan)]
            bad.sort()
        if not bad or len(bad) > len(lines) // 2:
            return False
        badset = set(bad)
        self._slow(b"".join(lines[i] + NL for i in bad), source, offset, fallback=True)
        good = b"".join(ln + NL for i, ln in enumerate(lines) if i not in badset)
        if good:
            self._fast(good, source, offset, sifted=2 if blanks else 1)
        return True

    def _slow(self, buf: bytes, source: str, offset: int, fallback: bool = False) -> None:
        if self.collapsed:  # the lines as they were written (the collapse's bytes are of the same length)
            buf = buf.replace(LIST_BLANK, b" ")
        parse = self.parser.parse
        rows: list[Any] = []
        pos = offset
        lines = buf.split(NL)
        last = lines.pop()  # b"" when buf ends with a newline, else a final line without one
        for k, line in enumerate(lines if not last else [*lines, last]):
            start = pos
            pos += len(line) + 1
            if not line or line[:1] == b"#":
                self.p.ignored += 1
                continue
            self.p.lines += 1
            try:
                rows.append(parse(line + NL if k < len(lines) else line))
            except LineError as exc:
                self._invalid(line, str(exc), exc.kind, source, start if not fallback else None)
        if not rows:
            return
        h = [x.host for x in rows]
        tk = [(x.date, x.time) for x in rows]
        tinfo: dict[Any, Any] = {}
        for key in set(tk):
            d, t = key
            tinfo[key] = (d, t[0], t[1]) if t is not None else (d, 0, 0)
        r = [x.request for x in rows]
        s = [x.status for x in rows]
        sizes = [x.size for x in rows]
        ref = [x.referer for x in rows]
        ua = [x.agent for x in rows]
        rt = [x.rt for x in rows] if any(x.rt is not None for x in rows) else None
        urt = [x.urt for x in rows] if any(x.urt is not None for x in rows) else None
        xff = [x.xff for x in rows] if self.has_passed else None
        vh = [x.vhost or b"-" for x in rows] if self.has_vhost else None
        self._aggregate(h, tk, tinfo, r, s, sum(sizes), ref, ua, rt, urt, sizes, xff, vh)


def partial_of(cls: type[Accumulator], data: bytes, chunk: int, **kw: Any) -> tuple[AccessPartial, list[Any]]:
    """The partial result, and its reasons in their order (what Counter equality leaves out)."""
    acc = cls(ScanOptions(**kw))
    feed_in_chunks(acc, data, chunk)
    p = acc.partial()
    return p, list(p.invalid_reasons.items())


# -- parse_string ---------------------------------------------------------------------------------------------

_token_text = st.one_of(st.binary(max_size=60),
                        st.lists(st.sampled_from([b"\\", b" ", b":", b"]", b"a", b"\n", b'"', b"\\\\"]),
                                 max_size=30).map(b"".join))


@settings(max_examples=3000, deadline=None)
@given(_token_text, st.integers(0, 70), st.sampled_from([b"", b" ", b":", b"]", b"\\", b'"', b"\n", b"a"]),
       st.integers(1, 3))
@example(b"a\\ b c", 0, b" ", 1)
@example(b"a b\\", 2, b" ", 2)
def test_parse_string_jumps_to_where_the_byte_loop_stops(s: bytes, pos: int, delim: bytes, cnt: int) -> None:
    pos = min(pos, len(s))
    assert GoAccessLineParser._token(s, pos, delim, cnt) == token_reference(s, pos, delim, cnt)


def test_a_long_value_costs_the_parser_no_byte_loop() -> None:
    """A 200 KB agent was parsed byte by byte (~60 ns a byte: 13 ms a line; now 0.03 ms)."""
    parser = GoAccessLineParser(to_goaccess(COMBINED, internal=True).log_format)
    line = GOOD[0].replace(b"Mozilla/5.0 (X11)", b"A" * 200_000) + NL
    t = time.process_time()
    for _ in range(20):
        assert parser.parse(line).agent == b"A" * 200_000
    assert (time.process_time() - t) / 20 < 0.004  # (a guard against the byte loop's return, not a speed claim)


# -- line_faults: the parser's verdict ---------------------------------------------------------------------------


@st.composite
def hostile_line(draw: st.DrawFn) -> bytes:
    """A line of the corpus, mutated (bytes inserted, deleted, replaced, cut), or arbitrary bytes: never a newline."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200)).replace(b"\n", b"")
    line = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(("ins", "del", "rep", "cut")))
        ch = draw(st.one_of(st.sampled_from(b' "[]\\-:/%+0x\t\r#\x00Z.'), st.integers(0, 255)))
        if ch == 0x0A:
            continue
        if op == "ins":
            line.insert(pos, ch)
        elif op == "cut":
            del line[pos:]
        elif line and pos < len(line):
            if op == "del":
                del line[pos]
            else:
                line[pos] = ch
    return bytes(line)


def _verdicts(fmt: str, lines: list[bytes]) -> list[tuple[int, str | None, str | None]]:
    """(code, the kind line_faults says, the kind parse raises) of each line."""
    ga = to_goaccess(fmt, internal=True)
    parser = GoAccessLineParser(ga.log_format, ga.date_format, ga.time_format)
    faults = parser.faults()
    if faults is None:
        pytest.fail(NOT_BUILT)
    told, pairs = faults(lines)
    assert len(told) == len(lines) and len(set(pairs)) == len(pairs)
    out = []
    for k, line in enumerate(lines):
        code, letter = pairs[told[k] - 2] if told[k] >= 2 else (told[k], 0)
        try:
            parser.parse(line + NL)
            raised = None
        except LineError as exc:
            raised = exc.kind
        out.append((code, fault_kind(code, letter) if code >= 2 else None, raised))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FORMATS), st.lists(hostile_line(), min_size=1, max_size=30))
def test_fuzz_line_faults_say_what_the_parser_raises(fmt: str, lines: list[bytes]) -> None:
    for line, (code, said, raised) in zip(lines, _verdicts(fmt, lines), strict=True):
        skipped = not line or line[:1] == b"#"
        assert (code == 0) == skipped, line
        if code >= 2:
            assert said == raised, line


def test_line_faults_tell_apart_most_lines_of_another_format() -> None:
    """Not only 'the parser reads it': the lines of another format, of the error log, of JSON are told apart."""
    for fmt, lines in ((SHORT, GOOD), (COMBINED, ERROR_LOG + JSON_LINES), (JSON_FORMAT, GOOD + ERROR_LOG),
                       (COMBINED_TIMED, OTHER[3:13] + OTHER[14:16] + OTHER[-1:]),
                       (FORMATS[6], GOOD + SPLIT_REQUEST[2:6])):
        verdicts = _verdicts(fmt, lines)
        assert all(code >= 2 and said == raised for code, said, raised in verdicts), (fmt, verdicts)


def test_line_faults_refuse_what_is_not_a_list_of_bytes() -> None:
    from upkeeper.logs import _cut

    with pytest.raises(TypeError):
        _cut.line_faults([b"x", "y"], b"%h", 1, 1, 1)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _cut.line_faults((b"x",), b"%h", 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _cut.line_faults([b"x"], b"%h", 3, 1, 1)
    assert _cut.line_faults([], b"%h %d", 1, 1, 1) == (b"", [])
    assert _cut.line_faults([b"1.2.3.4 x"], b"", 0, 0, 1) == (b"\x02", [(6, 0)])  # no specifier: no client address
    # a byte per (code, letter), in the order first seen
    fmt = b"%h %\xe9 %z [%d:%t]"
    lines = [b"1.2.3.4", b"x y", b"1.2.3.4 a", b"y", b"1.2.3.4 a b [01/Mar/2024", b"", b"# x", b"x"]
    assert _cut.line_faults(lines, fmt, 1, 1, 1) == (
        bytes((2, 3, 4, 2, 5, 0, 0, 2)), [(2, ord("h")), (3, ord("h")), (2, 0xE9), (2, ord("d"))])


# -- the scan: the same partial result as the code before -------------------------------------------------------


@st.composite
def mixed_log(draw: st.DrawFn) -> bytes:
    """Good lines and hostile ones, runs of empty lines, maybe a last line without its newline."""
    out: list[bytes] = []
    good = draw(st.sampled_from([0, 4, 4, 7]))  # (0: none, a buffer of lines of another format or empty ones)
    for _ in range(draw(st.integers(1, 120))):
        pick = draw(st.integers(good == 0, 9))
        if pick < good:
            out.append(draw(st.sampled_from(GOOD + SPLIT_REQUEST[:2])))
        elif pick <= good + 1:
            out += [b""] * draw(st.integers(1, 5))
        else:
            out.append(draw(hostile_line()))
    tail = b"\n" if draw(st.booleans()) else b""
    return b"\n".join(out) + tail


PATHS: list[dict[str, Any]] = [
    {"arrow_min_buffer": 0},  # the C cut, its lines handed to the line parser
    {"arrow_min_buffer": 0, "native_cut": False},  # the pyarrow cut
    {"arrow": False},  # the Python split, bisected, sifted
    {"fast": False},  # the line parser alone (its samples have offsets)
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mixed_log(), st.sampled_from(FORMATS), st.sampled_from([97, 400, 1 << 20]), st.sampled_from(PATHS),
       st.sampled_from([10, 2]))
def test_fuzz_unparsed_lines_give_the_figures_of_the_code_before(data: bytes, fmt: str, chunk: int,
                                                                 path: dict[str, Any], samples: int) -> None:
    kw = {"log_format": fmt, "samples": samples, **path}
    new, new_reasons = partial_of(Accumulator, data, chunk, **kw)
    old, old_reasons = partial_of(ReferenceAccumulator, data, chunk, native_faults=False, **kw)
    assert new == old
    assert new_reasons == old_reasons  # (in the order they were first seen: most_common's ties)
    assert new.invalid_samples == old.invalid_samples  # (offsets included)
    # and the switch that leaves them all to the line parser gives the same
    assert partial_of(Accumulator, data, chunk, native_faults=False, **kw) == (new, new_reasons)


_UNFIT = st.one_of(hostile_line().filter(lambda x: x.count(b'"') != 6), st.just(b""), st.sampled_from(ERROR_LOG))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(_UNFIT, min_size=SLOW_BLOCK_LINES + 1, max_size=300), st.sampled_from(PATHS[2:]), st.booleans(),
       st.sampled_from([700, 1 << 20]))
@example([b"x" * (k % 3) for k in range(200)], PATHS[2], True, 1 << 20)
@example(ERROR_LOG * 40 + JSON_LINES * 20 + [b""] * 30 + OTHER, PATHS[2], False, 1 << 20)
def test_fuzz_a_buffer_none_of_whose_lines_fits_is_read_as_its_bisection_read_it(
        lines: list[bytes], path: dict[str, Any], tail: bool, chunk: int) -> None:
    """No line with the format's quotes (empty lines, another format's): the split's bisection ended in the line
    parser for every line, its samples with their offsets; now the line parser reads the buffer at once."""
    data = b"\n".join(lines) + (b"\n" if tail else b"")
    new = partial_of(Accumulator, data, chunk, log_format=COMBINED_TIMED, **path)
    assert new == partial_of(ReferenceAccumulator, data, chunk, log_format=COMBINED_TIMED, native_faults=False, **path)
    assert new[0].invalid_samples == partial_of(ReferenceAccumulator, data, chunk, log_format=COMBINED_TIMED,
                                                native_faults=False, **path)[0].invalid_samples


@pytest.mark.parametrize("n", [100, 101])
def test_half_of_a_buffer_unfit_is_sifted_or_bisected_as_before(n: int) -> None:
    """The sift sets the lines of other quote counts aside (the line parser reads them, their samples without an
    offset) when they are at most half of the buffer, else the buffer is bisected (samples with offsets): the
    shortcuts that tell the second case at once keep that line where it was."""
    for bad in (n // 2 - 1, n // 2, n // 2 + 1):
        lines = [GOOD[k % len(GOOD)] for k in range(n - bad)] + [b"garbage %d" % k for k in range(bad)]
        for order in (lines, lines[::-1], lines[::2] + lines[1::2]):
            data = b"\n".join(order) + b"\n"
            new = partial_of(Accumulator, data, 1 << 20, arrow=False)
            assert new == partial_of(ReferenceAccumulator, data, 1 << 20, arrow=False, native_faults=False)
            assert new[0].invalid_samples == partial_of(ReferenceAccumulator, data, 1 << 20, arrow=False,
                                                        native_faults=False)[0].invalid_samples


def test_many_reasons_are_kept_in_the_order_they_first_came() -> None:
    """More than ten reasons, each as often: the report's top ten (most_common) is chosen by that order."""
    lines = [b"x" * 3, b"1.2.3.4", b"1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 2000"]
    lines += [x for x in OTHER if x][:14] + ERROR_LOG + JSON_LINES + ODD
    data = b"\n".join(GOOD * 3 + lines + lines[::-1]) + b"\n"
    for path in PATHS:
        new = partial_of(Accumulator, data, 1 << 20, **path)
        assert len(new[1]) > 10
        assert new == partial_of(ReferenceAccumulator, data, 1 << 20, native_faults=False, **path)


# -- the cost ----------------------------------------------------------------------------------------------------


def _cpu(data: bytes, fmt: str, chunk: int = 4 << 20) -> float:
    """The least CPU time of three scans of ``data`` (4 MB buffers, as the file reader's)."""
    best = float("inf")
    for _ in range(3):
        acc = Accumulator(ScanOptions(log_format=fmt))
        t = time.process_time()
        feed_in_chunks(acc, data, chunk)
        best = min(best, time.process_time() - t)
    return best


def test_unparsable_lines_cost_about_what_parsed_ones_cost(tmp_path: Any) -> None:
    """Per byte, within 10x of a good log read with its format: a guard against the cliffs coming back (empty lines
    were 20x, a file of tiny lines 60x; another format 4x: now all about 1x), with room for a loaded machine — the
    speed itself is measured in bench/, not asserted here.  The CPU time of the same process, so the machine's
    speed is taken out."""
    from upkeeper.logs.synth import write_access_log

    log = tmp_path / "good.log"
    write_access_log(str(log), 6_000_000, seed=3)
    good = log.read_bytes()
    parsed = _cpu(good, COMBINED_TIMED) / len(good)
    empty = b"\n" * 3_000_000
    error_log = b"".join(ERROR_LOG[k % 2] + b" %d\n" % k for k in range(15_000))
    for data, fmt in ((good, SHORT), (good, JSON_FORMAT), (empty, COMBINED), (error_log, COMBINED)):
        ratio = _cpu(data, fmt) / len(data) / parsed
        assert ratio < 10, (fmt, len(data), ratio)


def test_unparsable_lines_in_small_buffers_cost_about_what_parsed_ones_cost(tmp_path: Any) -> None:
    """Buffers under 256 KB (a small file, the end of each piece of a log, a run's new lines) take the Python split:
    its bisection sifted every piece of a buffer of empty lines (1 MB: 3.4 s, 100x a good log's time; lines of another
    format 1.7x), now read at once (a guard, with room for a loaded machine, as above)."""
    from upkeeper.logs.synth import write_access_log

    log = tmp_path / "good.log"
    write_access_log(str(log), 1_000_000, seed=3)
    good = log.read_bytes()
    parsed = _cpu(good, COMBINED_TIMED, 200_000) / len(good)
    for data, fmt in ((good, SHORT), (b"\n" * 1_000_000, COMBINED), (b"x\n" * 500_000, COMBINED)):
        ratio = _cpu(data, fmt, 200_000) / len(data) / parsed
        assert ratio < 10, (fmt, len(data), ratio)
