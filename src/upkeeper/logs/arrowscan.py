"""The vectorized access-log path: a buffer of lines is cut (in C, or with pyarrow) and aggregated with pyarrow.

:class:`~upkeeper.logs.access.Accumulator` hands large buffers (``MIN_BUFFER`` bytes or more)
of a supported format to :class:`ArrowScanner`.  The scanner

1. splits the buffer into lines (``split_pattern``) and keeps the lines that match a strict
   RE2 pattern derived from the ``log_format`` (every literal in place, quoted values without
   quotes, control characters, surrounding blanks or a trailing backslash, unquoted values
   without blanks, brackets, quotes or backslashes, ``$body_bytes_sent`` all digits);
2. cuts the matching lines into columns with two more ``split_pattern`` calls (on ``"`` and
   on spaces), taking each field from the flattened pieces with ``take`` (every line cut the same
   way: the pattern makes it so, :meth:`ArrowScanner._width` checks it) — steps 1 and 2 are one pass of the C
   extension :mod:`upkeeper.logs._cut` where it is built and the format's pattern can be said as its program
   (:func:`cut_program`, :func:`cut_anchors`); without it the kernels named here do the same work;
3. validates addresses, times and status codes once per *distinct* value (the same checks as
   the Python fast path, :meth:`Accumulator._columns`); the rejected lines and the rows that do
   not validate stay in the columns as null rows, which the aggregation passes by; times are keyed
   by their minute (:meth:`ArrowScanner._minutes`);
4. aggregates with hash kernels (``value_counts``, ``dictionary_encode``, combined int64 keys): only
   distinct values — and the rare rows that feed per-row detail such as attacks or failed
   logins — ever become Python objects; the new distinct request lines of the common shape are
   learned (endpoint, static file) in one C pass or with RE2 kernels (:meth:`ArrowScanner._learn_requests`),
   and their GoAccess keys made the same way (:meth:`ArrowScanner.request_keys`).

Every line the pattern rejects or whose values do not validate goes to the line-by-line
reference parser (:class:`~upkeeper.logs.goaccess.GoAccessLineParser`), so the numbers are the
same as the pure-Python path's.  pyarrow is imported only when the first large buffer arrives.
Formats that repeat a field, or put a prefix/suffix on a field other than the time, stay on
the Python path (:func:`arrow_plan` returns None).
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import re
import struct
from collections import Counter
from collections.abc import Callable, Collection, Container, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_not, not_
from typing import TYPE_CHECKING, Any

from upkeeper.logs.classify import CONDITIONAL_PROBES, FRONT_PAGES, counted_category, page_assets
from upkeeper.logs.goaccess import status_code, trim
from upkeeper.logs.nginx_format import (
    LIST_BLANK,
    LISTS,
    SPACELESS,
    Lit,
    TokenSpec,
    Var,
    _expand,
    _tokens,
    opaque,
    parse_format,
    split_on_quotes,
    split_plan,
)
from upkeeper.logs.samples import keep_first

if TYPE_CHECKING:
    from upkeeper.logs.access import Accumulator, TimeInfo

#: what :func:`upkeeper.logs._cut.cut` returns: lines, validity bitmap, kept lines, rejected lines, line starts,
#: and per field (offsets, data)
CutResult = tuple[int, bytes, int, list[bytes], bytes, tuple[tuple[bytes, bytes], ...]]
#: a column as :func:`upkeeper.logs._cut.combos` takes it: its keys (code i stands for keys[i]), then an int32
#: array of codes as :func:`_int32_buffers` gives it
Coded = tuple[list[Any], Any, int, int, Any]
#: what :func:`upkeeper.logs._cut.combos` returns: per column the keys of each combination, and their counts (None
#: when it counted into a dict)
CombosResult = tuple[tuple[list[Any], ...], list[int]] | None
#: what :func:`upkeeper.logs._cut.endpoints` returns: endpoints, (index, path) of the word candidates, URL offsets
#: and data
EndpointsResult = tuple[list[bytes], list[tuple[int, bytes]], bytes, bytes]

MIN_BUFFER = 256 << 10  # smaller buffers are cheaper in plain Python
#: the endpoints of the front page (a request line is in Accumulator.page_of when its endpoint is one of these)
FRONT_ENDPOINTS = tuple(b"GET " + x for x in sorted(FRONT_PAGES))
NL = b"\n"
#: a run of newlines: all but its first end empty lines
_NEWLINES = re.compile(rb"\n\n+")
_FRONT = frozenset(FRONT_ENDPOINTS)
#: a request line whose endpoint and static path :meth:`ArrowScanner._learn_requests` finds with RE2 kernels
#: exactly as the reference (classify's endpoints, goaccess.parse_requests) does: a listed method in capitals but
#: POST (a login path's: the reference's), one space, a URL beginning with ``/`` without ``%``, ``@`` (e-mail
#: placeholders: classify's look-arounds) or blanks, one space, a canonical protocol
SIMPLE_REQUEST = (r"^(?:GET|HEAD|PUT|DELETE|PATCH|OPTIONS) /[^ %@\t\n\r\x00\x0b\x0c]* "
                  r"HTTP/(?:1\.[01]|2(?:\.0)?|3(?:\.0)?)$")
#: goaccess.parse_requests' common shape (its ``_CANON_REQ``'s first alternative), whose key it takes from the tokens
CANON_REQUEST = (r"^(?:GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS) [^ %\n\r\t\x00\x0b\x0c]+ "
                 r"(?:HTTP/1\.[01]|HTTP/2(?:\.0)?|HTTP/3(?:\.0)?)$")
#: classify's ``_UUID`` and ``_NUM`` (its look-ahead as a consumed group, put back by the replacement)
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_NUM = r"/[0-9]+([/.;,]|$)"

#: an unquoted value: no blank, quote, bracket, backslash or control character
_UNQ_CLASS = r'^ "\[\]\\\x00-\x1f\x7f'
_UNQ = f"[{_UNQ_CLASS}]+"
#: left out of the cut program's class of every unquoted value but a list variable's: the byte the blanks of a
#: collapsed list become (access.LIST_BLANK, see Accumulator._collapsed), so that a line with one elsewhere (a
#: value that is no list, read as one) goes to the line parser.  (nginx writes the byte escaped, as \xA0.)
_NOT_LISTED = r"\xa0"
#: one value of a list variable ($upstream_addr): not ending with ',' either
_UNQ_LIST = f"[{_UNQ_CLASS}]*[{_UNQ_CLASS},]"
#: a quoted value: no quote or control character, no blank at either end, no trailing backslash
_QCH = r'[^"\x00-\x1f\x7f]'
_QEND = r'[^ "\\\x00-\x1f\x7f]'
_QUOTED = rf'(?:{_QEND}|[^ "\x00-\x1f\x7f]{_QCH}*{_QEND})'
_TIME_LOCAL = r"[0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
_TIME_ISO = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-5][0-9]"
_FIELD_OF = {"time_local_dt": "time", "time_local_tz": "tz", "time_iso8601": "time"}
_RE2_SPECIAL = set("\\.^$|?*+()[]{}")


def _lit(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


#: the most elements and fields _cut.c takes (its MAX_ELEMS, MAX_FIELDS): a longer format keeps the kernels
CUT_MAX_ELEMS, CUT_MAX_FIELDS = 256, 32
#: a run's longest match in a cut program (a longer value sends its line to the reference parser, as a
#: line the pattern rejects: same figures)
RUN_MAX = (1 << 32) - 1
#: run flags of a cut program (see _cut.c): first byte not ' '; last byte neither ' ' nor '\\'; last byte
#: not ','; not exactly ':'
FIRST_NOT_BLANK, LAST_NOT_BLANK_OR_BACKSLASH, LAST_NOT_COMMA, NOT_COLON_ALONE = 1, 2, 4, 8
#: a cut program's element: a literal, or a run (class as a bracket expression, min, max, flags)
LitElem = tuple[bytes]
RunElem = tuple[str, int, int, int]
Elem = LitElem | RunElem
_D, _ALPHA, _SIGN = "[0-9]", "[A-Za-z]", "[+-]"
#: _TIME_LOCAL and _TIME_ISO as program elements
_TIME_LOCAL_PROG: tuple[Elem, ...] = (
    (_D, 2, 2, 0), (b"/",), (_ALPHA, 3, 3, 0), (b"/",), (_D, 4, 4, 0), (b":",), (_D, 2, 2, 0), (b":",),
    (_D, 2, 2, 0), (b":",), (_D, 2, 2, 0), (b" ",), (_SIGN, 1, 1, 0), (_D, 4, 4, 0))
_TIME_ISO_PROG: tuple[Elem, ...] = (
    (_D, 4, 4, 0), (b"-",), (_D, 2, 2, 0), (b"-",), (_D, 2, 2, 0), (b"T",), (_D, 2, 2, 0), (b":",),
    (_D, 2, 2, 0), (b":",), (_D, 2, 2, 0), (_SIGN, 1, 1, 0), (_D, 2, 2, 0), (b":",), ("[0-5]", 1, 1, 0),
    (_D, 1, 1, 0))


@dataclass(frozen=True)
class ArrowPlan:
    """Where each field is in a line cut on ``"`` (segment) and then on spaces (token)."""

    regex: str
    quotes: int
    #: field letter -> (segment index in the quote split, token index or -1 for a quoted value)
    fields: dict[str, tuple[int, int]]
    time_spec: TokenSpec
    time_var: str
    #: :data:`regex` as a program for :func:`upkeeper.logs._cut.cut`, or None when a greedy run could end
    #: elsewhere than the regex would (the pyarrow cut reads such formats)
    program: bytes | None = None
    #: where each field of :data:`fields` is in a line the program matched (:func:`cut_anchors`)
    anchors: tuple[tuple[int, int, int, int], ...] = ()


def _class_bits(bracket: str) -> bytes:
    """The 256-bit membership bitmap (LSB first) of a bracket expression, as RE2 reads it on bytes (Latin-1)."""
    rx = re.compile(bracket.encode("latin-1"))
    bits = bytearray(32)
    for c in range(256):
        if rx.fullmatch(bytes((c,))):
            bits[c >> 3] |= 1 << (c & 7)
    return bytes(bits)


def cut_program(elems: list[Elem]) -> bytes | None:
    """The bytes of a cut program for ``elems`` (empty literals left out), or None when a greedy run would not be
    exact: a run of variable length must be followed by a literal whose first byte is not in its class, or end the
    line."""
    out = bytearray()
    elems = _kept(elems)
    if len(elems) > CUT_MAX_ELEMS:
        return None
    for k, el in enumerate(elems):
        if len(el) == 1:
            text = el[0]
            if len(text) > 0xFFFF:
                return None
            out += b"L" + struct.pack("<H", len(text)) + text
            continue
        bracket, lo, hi, flags = el
        bits = _class_bits(bracket)
        if lo != hi and k + 1 < len(elems):
            nxt = elems[k + 1]
            if len(nxt) != 1:
                return None
            first = nxt[0][0]
            if bits[first >> 3] >> (first & 7) & 1:
                return None
        out += b"R" + bits + struct.pack("<IIB", lo, hi, flags)
    return bytes(out)


def _kept(elems: list[Elem]) -> list[Elem]:
    return [e for e in elems if len(e) != 1 or e[0]]


def cut_anchors(elems: list[Elem], fields: dict[str, tuple[int, int]]) -> list[tuple[int, int, int, int]] | None:
    """Where each field of ``fields`` (segment of the line cut on ``"``, token of it cut on blanks or -1) lies in a
    line the program of ``elems`` matched: ``(k1, o1, k2, o2)``, from ``o1`` bytes after the start of element
    ``k1`` to ``o2`` bytes after the start of element ``k2`` (``k2`` = the number of elements: the line's end).

    In a matched line quotes come only from literals (a quoted value holds none), and so do the blanks outside
    quotes (an unquoted value holds none); so the cut of the line is the cut of its literals, each run standing
    for one byte that is neither.  None when a field is not in that cut."""
    elems = _kept(elems)
    fake: list[tuple[int, int]] = []  # per byte of a stand-in line: (element, offset in it)
    text = bytearray()
    for k, el in enumerate(elems):
        if len(el) == 1:
            fake += [(k, o) for o in range(len(el[0]))]
            text += el[0]
        else:
            fake.append((k, 0))
            text += b"x"
    fake.append((len(elems), 0))
    # the spans of each segment's tokens, as pyarrow's split_pattern cuts them
    spans: dict[tuple[int, int], tuple[int, int]] = {}
    seg_start = 0
    bounds = [i for i, c in enumerate(text) if c == ord('"')] + [len(text)]
    for si, seg_end in enumerate(bounds):
        spans[(si, -1)] = (seg_start, seg_end)
        tok_start = seg_start
        ti = 0
        for i in range(seg_start, seg_end + 1):
            if i == seg_end or text[i] == ord(" "):
                spans[(si, ti)] = (tok_start, i)
                ti += 1
                tok_start = i + 1
        seg_start = seg_end + 1
    out = []
    for spot in fields.values():
        if spot not in spans:
            return None
        a, b = spans[spot]
        out.append((*fake[a], *fake[b]))
    return out


def arrow_plan(fmt: str, client_ip: str = "remote_addr") -> ArrowPlan | None:
    """The vectorized plan for ``fmt`` (read with ``client_ip``), or None when it must stay on the Python path."""
    plan = split_plan(fmt, client_ip)
    if plan is None or plan.time_var not in ("time_local", "time_iso8601"):
        return None
    items = parse_format(fmt, client_ip)
    field_of = {it.name: it.field for it in items if isinstance(it, Var)}
    skippable = opaque(items)
    seen: set[str] = set()
    rx: list[str] = []
    elems: list[Elem] | None = []  # the same pattern as a cut program (None: the program cannot say it)
    inside = False
    for k, it in enumerate(items):
        if isinstance(it, Lit):
            rx.append(_lit(it.text))
            if elems is not None:
                elems = elems + [(it.text.encode(),)] if it.text.isascii() else None
            inside = (inside + it.text.count('"')) % 2 == 1
            continue
        f = it.field
        if f not in ("^", "e"):
            if f in seen:
                return None  # GoAccess keeps the first of a repeated field: leave that to the parser
            seen.add(f)
        add: tuple[Elem, ...] | None
        if inside:
            rx.append(_QUOTED)
            add = ((_QCH, 1, RUN_MAX, FIRST_NOT_BLANK | LAST_NOT_BLANK_OR_BACKSLASH),)
        elif it.name == "time_local":
            rx.append(_TIME_LOCAL)
            add = _TIME_LOCAL_PROG
        elif it.name == "time_iso8601":
            rx.append(_TIME_ISO)
            add = _TIME_ISO_PROG
        elif it.name in ("body_bytes_sent", "bytes_sent") and f == "b":
            rx.append("[0-9]{1,15}")
            add = (("[0-9]", 1, 15, 0),)
        elif it.name in LISTS:
            # a list of upstream values has blanks: the pattern sends it to the line parser; so does a value ending
            # with ',' (the line parser would read ', ' and the next value as a list)
            rx.append(_UNQ_LIST)
            add = ((f"[{_UNQ_CLASS}]", 1, RUN_MAX, LAST_NOT_COMMA),)
        elif it.name in SPACELESS:
            rx.append(_UNQ)
            add = ((f"[{_UNQ_CLASS}{_NOT_LISTED}]", 1, RUN_MAX, 0),)
        elif it.name in skippable:
            # a value the report does not read, perhaps empty ('[]'); without the character that ends it in the
            # format (where the line parser's %^ stops), nor, right after a list variable, ':' alone (' : ' would
            # join them into a list for the line parser)
            nxt = items[k + 1] if k + 1 < len(items) else None
            stop = nxt.text[:1] if isinstance(nxt, Lit) else ""
            if stop and not stop.isascii():
                return None
            cls = _UNQ_CLASS + ("" if stop in ("", " ", '"', "[", "]", "\\") else
                                stop if stop.isalnum() else "\\" + stop)
            before, list_var = (items[k - 1], items[k - 2]) if k >= 2 else (None, None)
            after_list = (isinstance(before, Lit) and before.text == " " and isinstance(list_var, Var)
                          and list_var.name in LISTS)
            rx.append(f"(?:[{cls}:][{cls}]*|:[{cls}]+)?" if after_list else f"[{cls}]*")
            # after a list: any run of the class but ':' alone (when ':' is in the class: else no program)
            add = (None if after_list and stop == ":" else
                   ((f"[{cls}{_NOT_LISTED}]", 0, RUN_MAX, NOT_COLON_ALONE if after_list else 0),))
        else:
            return None
        elems = elems + list(add) if elems is not None and add is not None else None
    if "s" not in seen:
        return None
    # segments of the line cut on quotes: even ones are unquoted text, odd ones one quoted value
    segs = split_on_quotes(_expand(items))
    fields: dict[str, tuple[int, int]] = {}
    time_spec: TokenSpec | None = None
    for si, seg in enumerate(segs):
        if si % 2:
            var = seg[0]
            assert isinstance(var, Var)
            f = var.field
            if f not in ("^", "e"):
                fields[f] = (si, -1)
            continue
        toks = _tokens(seg, skippable) if seg else ()
        if toks is None:
            return None
        for ti, spec in enumerate(toks):
            if spec.kind != "var":
                continue
            f = _FIELD_OF.get(spec.var, field_of.get(spec.var, "^"))
            if f in ("^", "e"):
                continue
            if f == "time":
                time_spec = spec
            elif f != "tz" and (spec.prefix or spec.suffix):
                return None
            fields[f] = (si, ti)
    if time_spec is None or "h" not in fields or "r" not in fields:
        return None
    program = cut_program(elems) if elems is not None and len(fields) <= CUT_MAX_FIELDS else None
    anchors = cut_anchors(elems, fields) if elems is not None and program is not None else None
    return ArrowPlan(regex="^" + "".join(rx) + "$", quotes=len(segs) // 2, fields=fields, time_spec=time_spec,
                     time_var=plan.time_var, program=program if anchors is not None else None,
                     anchors=tuple(anchors or ()))


class ArrowScanner:
    """Feeds buffers to an accumulator's aggregates with pyarrow kernels."""

    def __init__(self, acc: Accumulator, plan: ArrowPlan) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        # malloc returns the large per-buffer blocks to the system at once; Arrow's default
        # allocator (mimalloc) keeps ~40 MB per process around (measured on a 1 GB log)
        pa.set_memory_pool(pa.system_memory_pool())
        _fixed_mmap_threshold()
        self.pa = pa
        self.pc = pc
        self.acc = acc
        self.plan = plan
        self.ep_ids: dict[bytes, int] = {}
        self.ep_list: list[bytes] = []
        self.route_skip: list[int] = []  # endpoint ids whose 2xx sizes are not kept (Accumulator._route_size)
        self.lines = 0  # lines aggregated by this path (the rest went to the reference parser)
        # one bytes object per distinct address and agent, however many buffers and keys hold it
        self.ips: dict[bytes, bytes] = {}
        self.agents: dict[bytes, bytes] = {}
        self.static_rx = static_pattern(acc.is_static.simple)
        #: the extensions of :attr:`static_rx` (None when it is None) as :func:`upkeeper.logs._cut.request_shapes`
        #: takes them
        self.static_exts = tuple(sorted(acc.is_static.simple or ())) if self.static_rx is not None else None
        #: time tokens keyed by their minute in C (upkeeper.logs._cut.minute_tokens), or None
        self.minute_tokens: Callable[[Any, Any, Any, int, int, int, int],
                                     tuple[bytes, bytes, list[bytes], list[bytes]] | None] | None = None
        #: what is learned of new distinct request lines stored in C (upkeeper.logs._cut.learn_store), or None
        self.learn_store: Callable[[list[bytes], list[bytes], dict[bytes, bytes], dict[bytes, bytes],
                                    dict[bytes, bytes | None], set[bytes], frozenset[bytes],
                                    list[tuple[int, bytes]] | None], None] | None = None
        #: the shape and static files of new distinct request lines in C (upkeeper.logs._cut.request_shapes), or None
        self.shapes: Callable[[Any, Any, int, int, tuple[bytes, ...] | None],
                              tuple[bytes, list[tuple[int, bytes]]]] | None = None
        #: the line cut in C (upkeeper.logs._cut, built at install), or None: the pyarrow cut
        self.cutter: Callable[[bytes, bytes, Sequence[tuple[int, int, int, int]]], CutResult] | None = None
        #: the endpoints of new request lines of the common shape in C (upkeeper.logs._cut.endpoints), or None
        self.endpoints: Callable[[Any, Any, int, int, int], EndpointsResult] | None = None
        #: Counter.update of a dict (its loop in C: upkeeper.logs._cut.add_counts, when built)
        self.add_counts: Callable[[Counter[Any], dict[Any, int]], None] = Counter.update
        #: Counter.update of a key per row of an int32 column in C (upkeeper.logs._cut.count_rows), or None
        self.count_rows: Callable[[dict[Any, int], list[Any], Any, int, int, Any], None] | None = None
        #: GoAccess's keys of request lines in C (upkeeper.logs._cut.request_keys), or None
        self.keys_of: Callable[[list[bytes]], tuple[list[bytes | None], list[int], bytes, bytes]] | None = None
        #: the endpoint id and static path of each distinct request line in C (upkeeper.logs._cut.request_ids), or None
        self.request_ids: Callable[[list[bytes], dict[bytes, bytes], dict[bytes, bytes | None], dict[bytes, int],
                                    list[bytes]], tuple[bytes, list[bytes | None], bool]] | None = None
        #: the distinct combinations of coded columns in one hash pass in C (upkeeper.logs._cut.combos), or None
        self.combos: Callable[[list[Coded], Any, bool, dict[Any, int] | None], CombosResult] | None = None
        if acc.opts.native_cut:
            try:
                from upkeeper.logs import _cut
            except ImportError:  # built without a C compiler: the same figures, slower
                pass
            else:
                self.cutter = _cut.cut if plan.program is not None else None
                self.endpoints = _cut.endpoints
                self.keys_of = _cut.request_keys
                self.count_rows = getattr(_cut, "count_rows", None)  # (None: an extension built before it)
                self.add_counts = _cut.add_counts
                self.combos = getattr(_cut, "combos", None)  # (None: an extension built before it)
                self.request_ids = getattr(_cut, "request_ids", None)
                self.shapes = getattr(_cut, "request_shapes", None)
                self.learn_store = getattr(_cut, "learn_store", None)
                self.minute_tokens = getattr(_cut, "minute_tokens", None)
        self.field_names = list(plan.fields)

    def release(self) -> None:
        """Forget what only the scan needs (the interned addresses and agents, the endpoint ids): the
        accumulator's partial result keeps :meth:`request_keys`, not those."""
        self.ips = {}
        self.agents = {}
        self.ep_ids = {}
        self.ep_list = []
        self.route_skip = []

    # -- helpers ---------------------------------------------------------------------------

    def _counts(self, col: Any) -> list[tuple[Any, int]]:
        """The distinct values of ``col`` but null, and how often each occurs."""
        vc = self.pc.value_counts(col)
        values, counts = vc.field(0).to_pylist(), vc.field(1).to_pylist()
        if col.null_count:
            i = values.index(None)
            del values[i], counts[i]
        return list(zip(values, counts, strict=True))

    def _distinct(self, col: Any) -> list[Any]:
        """The distinct values of ``col`` but null (a rejected row)."""
        return self.pc.drop_null(self.pc.unique(col)).to_pylist()  # type: ignore[no-any-return]

    def _width(self, lists: Any) -> int | None:
        """The length of every non-null list of ``lists`` when they all have the same (the strict pattern makes
        it so for the cut of a line on quotes and of a segment on blanks), else None."""
        if lists.offset:
            return None
        mm = self.pc.min_max(self.pc.list_value_length(lists)).as_py()
        return mm["min"] if mm["min"] is not None and mm["min"] == mm["max"] else None

    def _element(self, lists: Any, i: int, width: int | None) -> Any:
        """``list_element(lists, i)``; when every non-null list has ``width`` elements, more than ``i``, as a
        ``take`` of the lists' values (about 40 % cheaper: no check per list), null where the list is null."""
        pa, pc = self.pa, self.pc
        if width is None or i >= width:
            return pc.list_element(lists, i)
        at = pc.add(lists.offsets.slice(0, len(lists)), i)
        if lists.null_count:
            at = pa.Array.from_buffers(at.type, len(at), [lists.buffers()[0], at.buffers()[1]])
        return pc.take(lists.values, at)

    def _any(self, masks: list[Any]) -> Any:
        mask = masks[0]
        for m in masks[1:]:
            mask = self.pc.or_(mask, m)
        return mask

    def _mask_in(self, col: Any, values: list[bytes] | set[bytes]) -> Any:
        return self.pc.is_in(col, value_set=self.pa.array(list(values), col.type))

    def _word_lines(self, lines: list[bytes]) -> list[int]:
        """The indexes of the lines matching classify's :data:`~upkeeper.logs.classify.WORD_WINDOW`."""
        from upkeeper.logs.classify import WORD_WINDOW

        found = self.pc.match_substring_regex(self.pa.array(lines, self.pa.large_binary()), WORD_WINDOW)
        return self.pc.indices_nonzero(found).to_pylist()  # type: ignore[no-any-return]

    def _learn_requests(self, rdarr: Any, new: list[bytes]) -> None:
        """:meth:`Accumulator._learn_requests <upkeeper.logs.access.Accumulator._learn_requests>` of the new
        distinct request lines ``new`` (``rdarr``: the same as an array), most of them with RE2 kernels.

        A request line of the common shape (:data:`SIMPLE_REQUEST`) is cut on its blanks; its path is the URL up
        to ``?`` or ``#``, UUIDs and numeric segments become placeholders as classify's regexes make them (a
        numeric segment's look-ahead is a consumed delimiter in RE2: two passes find what one look-ahead pass
        finds, since two numeric segments of one chain are never both missed), and the few paths where RE2 finds
        a possible hash or token (:data:`~upkeeper.logs.classify.WORD_WINDOW`) get classify's ``_WORD`` in
        Python; its static path is decided on the URL with one RE2 pattern of the static extensions.  Every other
        line (a POST, which may be a login; a ``%`` or ``@``; an odd method, blank or protocol) goes to the
        reference."""
        from upkeeper.logs.classify import _WORD, ENDPOINT_MAX, WORD_WINDOW, _word

        pa, pc, acc = self.pa, self.pc, self.acc
        # (k, static path) of the k-th line of the common shape whose URL is a static file, when C found them
        statics: list[tuple[int, bytes]] | None = None
        if self.shapes is not None and rdarr.type == pa.large_binary() and not rdarr.offset \
                and not rdarr.null_count:  # in C: the lines of the common shape and (RE2's extensions) static files
            _valid, offsets, data = rdarr.buffers()
            bits, statics = self.shapes(offsets, data if data is not None else b"", 0, len(rdarr), self.static_exts)
            if self.static_exts is None:
                statics = None
            simple = pa.Array.from_buffers(pa.bool_(), len(rdarr), [None, pa.py_buffer(bits)])
        else:
            simple = pc.match_substring_regex(rdarr, SIMPLE_REQUEST)
        n = simple.true_count
        if n < len(new):
            acc._learn_requests([new[i] for i in pc.indices_nonzero(pc.invert(simple)).to_pylist()],
                                self._word_lines)
            if not n:
                return
            raws = list(compress(new, simple.to_pylist()))
            rdarr = rdarr.filter(simple)
        else:
            raws = new
        eps: list[bytes]
        if self.endpoints is not None and rdarr.type == pa.large_binary() and not rdarr.offset \
                and not rdarr.null_count:
            # in C, one pass: the same placeholders and the same word candidates as the kernels below
            _valid, offsets, data = rdarr.buffers()
            eps, cands, uo, ud = self.endpoints(offsets, data if data is not None else b"", 0, len(rdarr),
                                                ENDPOINT_MAX)
            url = pa.Array.from_buffers(pa.large_binary(), len(rdarr), [None, pa.py_buffer(uo), pa.py_buffer(ud)])
            if cands:
                done = _WORD.sub(_word, b"\n".join([p for _i, p in cands])).split(b"\n")
                for (i, _p), p in zip(cands, done, strict=True):
                    e = eps[i]
                    eps[i] = e[:e.index(b" ") + 1] + p[:ENDPOINT_MAX]
        else:
            toks = pc.split_pattern(rdarr, b" ")
            meth, url = pc.list_element(toks, 0), pc.list_element(toks, 1)
            del toks
            path = pc.replace_substring_regex(url, "[?#].*", "")
            path = pc.replace_substring_regex(path, _UUID, ":uuid")
            for _ in range(2):
                path = pc.replace_substring_regex(path, _NUM, r"/:id\1")
            eps = pc.binary_join_element_wise(meth, pc.binary_slice(path, 0, ENDPOINT_MAX),
                                              pa.scalar(b" ", path.type)).to_pylist()
            words = pc.indices_nonzero(pc.match_substring_regex(path, WORD_WINDOW))
            if len(words):
                done = _WORD.sub(_word, b"\n".join(pc.take(path, words).to_pylist())).split(b"\n")
                for i, m, p in zip(words.to_pylist(), pc.take(meth, words).to_pylist(), done, strict=True):
                    eps[i] = m + b" " + p[:ENDPOINT_MAX]
        static_of = acc.static_of
        if self.learn_store is not None:  # in C, one pass: the same entries in the same order
            self.learn_store(raws, eps, acc.ep_intern, acc.ep_of, static_of, acc.page_of, _FRONT, statics)
        else:
            intern = acc.ep_intern
            eps = list(map(intern.setdefault, eps, eps))
            acc.ep_of.update(zip(raws, eps, strict=True))
            acc.page_of.update(compress(raws, map(_FRONT.__contains__, eps)))
            static_of.update(dict.fromkeys(raws))
            for k, path in statics or ():
                static_of[raws[k]] = path
        if statics is not None:  # (stored above)
            return
        if self.static_rx is None:  # extensions RE2 is not given: the reference's matcher
            static = acc.is_static
            for raw, u in zip(raws, url.to_pylist(), strict=True):
                if static(u):
                    static_of[raw] = u.split(b"?", 1)[0]
        elif self.static_rx:
            found = pc.indices_nonzero(pc.match_substring_regex(url, self.static_rx))
            for i, u in zip(found.to_pylist(), pc.take(url, found).to_pylist(), strict=True):
                static_of[raws[i]] = u.split(b"?", 1)[0]

    def request_keys(self, raws: list[bytes]) -> tuple[list[bytes | None], list[bool | None]]:
        """GoAccess's requested-files key (``URL\\0METHOD\\0PROTOCOL``, see
        :attr:`~upkeeper.logs.access.AccessPartial.ga_requests`) of each request line of the common shape
        (:data:`CANON_REQUEST`: goaccess.parse_requests' first alternative) and whether its URL is a static file
        (only when :attr:`static_rx` is not None); None for the other lines."""
        if self.keys_of is not None:
            return self._native_keys(raws)
        pa, pc = self.pa, self.pc
        arr = pa.array(raws, pa.large_binary())
        canon = pc.match_substring_regex(arr, CANON_REQUEST)
        n = canon.true_count
        if not n:
            return [None] * len(raws), [None] * len(raws)
        if n < len(raws):
            arr = arr.filter(canon)
        toks = pc.split_pattern(arr, b" ")  # three tokens: the pattern says so
        del arr
        meth, url, proto = (pc.list_element(toks, i) for i in range(3))
        del toks
        proto = pc.replace_substring_regex(proto, r"^(HTTP/[23])\.0$", r"\1")
        keys: list[bytes | None] = pc.binary_join_element_wise(url, meth, proto,
                                                              pa.scalar(b"\0", pa.large_binary())).to_pylist()
        static: list[bool | None] = ([False] * n if not self.static_rx else
                                     pc.match_substring_regex(url, self.static_rx).to_pylist())
        if n == len(raws):
            return keys, static
        all_keys: list[bytes | None] = [None] * len(raws)
        all_static: list[bool | None] = [None] * len(raws)
        for i, k, st in zip(pc.indices_nonzero(canon).to_pylist(), keys, static, strict=True):
            all_keys[i], all_static[i] = k, st
        return all_keys, all_static

    def _native_keys(self, raws: list[bytes]) -> tuple[list[bytes | None], list[bool | None]]:
        """:meth:`request_keys` with the keys made in C (upkeeper.logs._cut.request_keys)."""
        pa, pc = self.pa, self.pc
        assert self.keys_of is not None
        keys, at, uo, ud = self.keys_of(raws)
        n = len(at)
        if not n or not self.static_rx:
            return keys, [None] * len(raws) if not n else [False if k is not None else None for k in keys]
        urls = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(uo), pa.py_buffer(ud)])
        static: list[bool | None] = pc.match_substring_regex(urls, self.static_rx).to_pylist()
        if n == len(raws):
            return keys, static
        all_static: list[bool | None] = [None] * len(raws)
        for i, st in zip(at, static, strict=True):
            all_static[i] = st
        return keys, all_static

    def _ep_id(self, e: bytes) -> int:
        i = self.ep_ids.get(e)
        if i is None:
            i = self.ep_ids[e] = len(self.ep_list)
            self.ep_list.append(e)
        return i

    # -- the buffer --------------------------------------------------------------------------

    def feed(self, buf: bytes, source: str, offset: int) -> None:
        """Aggregate ``buf`` (complete lines, ending with a newline)."""
        if self.cutter is not None:
            self._feed_cut(buf, source, offset)
            return
        pa, pc, plan = self.pa, self.pc, self.plan
        one = pa.Array.from_buffers(pa.large_binary(), 1,
                                    [None, pa.py_buffer(struct.pack("<2q", 0, len(buf))), pa.py_buffer(buf)])
        lines = pc.list_flatten(pc.split_pattern(one, NL))
        lines = lines.slice(0, len(lines) - 1)  # the empty text after the final newline
        ok = pc.match_substring_regex(lines, plan.regex)
        n_ok = ok.true_count
        rejected = None
        if n_ok < len(lines):
            rejected = pc.invert(ok)
            self._fallback(lines.filter(rejected).to_pylist(), source, offset)
            if not n_ok:
                return
        parts = pc.split_pattern(lines, b'"')
        del lines
        if rejected is not None:
            # the rejected lines become null rows instead of a filtered copy of the lines (no copy of the buffer's
            # text, which cost more in page faults than in copying while such blocks were mmapped, see
            # _fixed_mmap_threshold): the cut passes them by, and
            # _validate drops them with the rows whose values do not validate, in one filter
            assert ok.offset == 0 and not ok.null_count
            parts = pa.Array.from_buffers(parts.type, len(parts), [ok.buffers()[1], parts.buffers()[1]],
                                          children=[parts.values])
        del ok
        segs: dict[int, Any] = {}
        toks: dict[int, Any] = {}
        cols: dict[str, Any] = {}
        width = {id(parts): self._width(parts)}
        for f, (si, ti) in plan.fields.items():
            if si not in segs:
                segs[si] = self._element(parts, si, width[id(parts)])
            if ti < 0:
                cols[f] = segs[si]
                continue
            if si not in toks:
                toks[si] = pc.split_pattern(segs[si], b" ")
                width[id(toks[si])] = self._width(toks[si])
            cols[f] = self._element(toks[si], ti, width[id(toks[si])])
        del segs, toks, width
        held = [parts]  # (emptied after the check: the cut pieces are not kept through the aggregation)
        del parts
        good = self._validate(cols, lambda mask: [b'"'.join(x) for x in held[0].filter(mask).to_pylist()],
                              rejected, source, offset)
        held.clear()
        del cols
        if good:
            self._aggregate(good)

    def _feed_cut(self, buf: bytes, source: str, offset: int) -> None:
        """:meth:`feed` with the line cut in C: one pass makes the columns the pyarrow cut makes (the rejected
        lines are null rows), and hands over the lines the pattern rejects.  A buffer of more than
        :data:`CUT_MAX_LINES` lines is cut in pieces of fewer."""
        lines = buf.count(NL)
        if len(buf) < SHORT_LINES * lines and self.acc.opts.native_faults and (b"\n\n" in buf or buf[:1] == NL):
            # a buffer of short lines, empty ones among them: those are counted (skipped, as the line parser skips
            # them) and taken out before the cut.  One a byte, each cost the cut and the line parser's loop ~0.2 µs
            # (20 MB of them: 3.5 s).  (Where the lines were is not needed here: a sample of a line this path hands
            # over has no offset.  Not looked for in buffers of longer lines: the search cost a good log 10 %.)
            squeezed = _NEWLINES.sub(NL, buf)
            if squeezed[:1] == NL:
                squeezed = squeezed[1:]
            self.acc.p.ignored += len(buf) - len(squeezed)
            lines -= len(buf) - len(squeezed)
            buf = squeezed
            if not buf:
                return
        if lines > CUT_MAX_LINES:
            step = max(1, len(buf) * CUT_MAX_LINES // lines // 2)  # (half: a piece of more lines is cut again)
            pos, n = 0, len(buf)
            while pos < n:
                end = buf.rfind(NL, pos, min(n, pos + step)) + 1
                if end <= pos:  # no line end within the step: up to the next one
                    end = buf.find(NL, pos + step) + 1 or n
                self._feed_cut(buf[pos:end], source, offset + pos)
                pos = end
            return
        pa, pc = self.pa, self.pc
        assert self.cutter is not None and self.plan.program is not None
        n, valid, n_ok, rejected_lines, starts, columns = self.cutter(buf, self.plan.program, self.plan.anchors)
        self._fallback(rejected_lines, source, offset)
        if not n_ok:
            return
        nulls = n - n_ok
        vbuf = pa.py_buffer(valid) if nulls else None
        cols = {f: pa.Array.from_buffers(pa.large_binary(), n, [vbuf, pa.py_buffer(o), pa.py_buffer(d)],
                                         null_count=nulls)
                for f, (o, d) in zip(self.field_names, columns, strict=True)}
        rejected = pc.invert(pa.Array.from_buffers(pa.bool_(), n, [None, vbuf])) if nulls else None

        def lines_of(mask: Any) -> list[bytes]:
            at = pc.indices_nonzero(mask)
            st = pa.Array.from_buffers(pa.int64(), n + 1, [None, pa.py_buffer(starts)])
            return [buf[a:b - 1] for a, b in zip(pc.take(st, at).to_pylist(), pc.take(st, pc.add(at, 1)).to_pylist(),
                                                 strict=True)]

        good = self._validate(cols, lines_of, rejected, source, offset)
        del cols
        if good:
            self._aggregate(good)

    def _fallback(self, rows: list[bytes], source: str, offset: int) -> None:
        if rows:
            self.acc._slow_lines(rows, b"", source, offset, fallback=True)

    def _validate(self, cols: dict[str, Any], lines_of: Callable[[Any], list[bytes]], rejected: Any, source: str,
                  offset: int) -> dict[str, Any] | None:
        """Send to the reference parser the rows whose address, time or status does not validate, and drop them
        with the ``rejected`` rows (null: the pattern sent them to the reference parser already).

        When only rejected rows are to go, they stay in as null rows (filtering every column cost ~4 % of the
        scan): :meth:`_aggregate` passes them by."""
        from upkeeper.logs.access import TimeTokens
        from upkeeper.logs.goaccess import valid_ip, valid_status

        pc, acc = self.pc, self.acc
        bad: list[Any] = []
        h = cols["h"]
        ip_ok = acc.ip_ok
        badv = []
        one_ip = self.ips.setdefault
        ips = self._distinct(h)
        if len(ip_ok) + len(ips) > _cache_max():  # bounded memory (a million clients): start over
            ip_ok.clear()
        for ip in ips:
            okv = ip_ok.get(ip)
            if okv is None:
                okv = ip_ok[one_ip(ip, ip)] = valid_ip(ip)
            if not okv:
                badv.append(ip)
        if badv:
            bad.append(self._mask_in(h, badv))
        if acc.times is None:
            acc.times = TimeTokens(self.plan.time_spec, self.plan.time_var)
        tinfo = self._minutes(cols, bad)
        badv = [t for t, v in tinfo.items() if v is None]
        if badv:
            bad.append(self._mask_in(cols["time"], badv))
        self.tinfo: dict[bytes, TimeInfo] = {t: v for t, v in tinfo.items() if v is not None}
        tz = cols.get("tz")
        if tz is not None:
            badv = [z for z in self._distinct(tz) if not (z.endswith(b"]") and z.count(b"]") == 1 and b"[" not in z)]
            if badv:
                bad.append(self._mask_in(tz, badv))
        s = cols["s"]
        st_ok = acc.status_ok
        badv = []
        for v in self._distinct(s):
            okv = st_ok.get(v)
            if okv is None:
                okv = st_ok[v] = v.isdigit() and valid_status(v)
            if not okv:
                badv.append(v)
        if badv:
            bad.append(self._mask_in(s, badv))
        if bad:
            self._fallback(lines_of(self._any(bad)), source, offset)
        if not bad and (rejected is None or "X" not in cols):  # (the client resolver wants no null rows)
            return cols
        if rejected is not None:
            bad.append(rejected)
        keep = pc.invert(self._any(bad))
        if "X" in cols or keep.offset or keep.null_count or any(v.offset for v in cols.values()):
            out = {k: v.filter(keep) for k, v in cols.items()}
            return out if len(out["h"]) else None
        if not keep.true_count:
            return None
        # the bad rows become null rows too: ``keep``'s bits (a rejected row is null in every column already) as
        # the columns' validity, no copy
        valid = keep.buffers()[1]
        return {k: self.pa.Array.from_buffers(v.type, len(v), [valid, *v.buffers()[1:]]) for k, v in cols.items()}

    def _minutes(self, cols: dict[str, Any], bad: list[Any]) -> dict[bytes, TimeInfo | None]:
        """What each distinct time token means.

        When every token has the fixed-width shape, a token reads as its minute or is invalid (its seconds not
        00-61, see :meth:`TimeTokens.regular`): the time column becomes the tokens with ``00`` seconds (a few
        distinct values a buffer instead of one per second) and the rows of odd seconds go to ``bad``.
        """
        from upkeeper.logs.access import _SECONDS

        pa, pc, times = self.pa, self.pc, self.acc.times
        assert times is not None
        tk = cols["time"]
        sl = times.ssl
        if self.minute_tokens is not None and not times.msec and tk.type == pa.large_binary() and not tk.offset:
            # in C, one pass: the same minutes and seconds, the same column
            validity, offsets, data = tk.buffers()
            validity = validity if tk.null_count else None
            got = self.minute_tokens(offsets, data if data is not None else b"", validity, len(tk), times.width,
                                     sl.start, sl.stop)
            if got is not None:
                offs, text, mins, secs = got
                if times.regular(mins):
                    odd = [x for x in secs if x not in _SECONDS]
                    if odd:
                        bad.append(self._mask_in(pc.binary_slice(tk, sl.start, sl.stop), odd))
                    cols["time"] = pa.Array.from_buffers(pa.large_binary(), len(tk),
                                                         [validity, pa.py_buffer(offs), pa.py_buffer(text)],
                                                         null_count=tk.null_count)
                    return times.many(set(mins))
            return times.many(set(self._distinct(tk)))
        lengths = pc.min_max(pc.binary_length(tk)).as_py()
        if lengths["min"] == lengths["max"] == times.width and not times.msec:
            tm = pc.binary_replace_slice(tk, sl.start, sl.stop, b"00")
            mins = self._distinct(tm)
            if times.regular(mins):
                secs = pc.binary_slice(tk, sl.start, sl.stop)
                odd = [x for x in self._distinct(secs) if x not in _SECONDS]
                if odd:
                    bad.append(self._mask_in(secs, odd))
                cols["time"] = tm
                return times.many(set(mins))
        return times.many(set(self._distinct(tk)))

    # -- aggregation -------------------------------------------------------------------------

    def _aggregate(self, cols: dict[str, Any]) -> None:
        pa, pc, acc = self.pa, self.pc, self.acc
        p = acc.p
        xff = cols.get("X")
        if xff is not None:
            acc.forwarded(pc.unique(xff).to_pylist())
            if acc.resolver is not None:  # the client behind the trusted proxies, per distinct (address, header)
                pair = pc.binary_join_element_wise(cols["h"], xff, pa.scalar(b"\n", xff.type))  # no newline in either
                enc = pc.dictionary_encode(pair)
                hx = [v.split(b"\n", 1) for v in enc.dictionary.to_pylist()]
                weights = [0] * len(hx)  # the lines of each distinct pair, for the resolver's outcome counts
                vc = pc.value_counts(enc.indices)
                for i, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
                    weights[i] = c
                clients = acc.resolver.column([a for a, _x in hx], [x for _a, x in hx], weights)
                cols["h"] = pc.take(pa.array(clients, cols["h"].type), enc.indices)
                del pair, enc, hx
        h, tk, r, s = cols["h"], cols["time"], cols["r"], cols["s"]
        ua, ref, b, rt, urt = cols.get("u"), cols.get("R"), cols.get("b"), cols.get("T"), cols.get("P")
        if urt is not None and acc.collapsed:  # a collapsed list given back its blanks (Accumulator._collapsed)
            urt = pc.replace_substring(urt, LIST_BLANK, b" ")
        tinfo = self.tinfo
        n = len(h) - h.null_count  # null rows: the reference parser's (_validate)
        self.lines += n
        p.lines += n
        p.fast_lines += n
        p.valid += n
        bi = pc.cast(b, pa.int64()) if b is not None else None  # all digits: the pattern says so
        if bi is not None:
            total = pc.sum(bi).as_py()
            p.bandwidth += int(total or 0)
        one_ip = self.ips.setdefault
        tenc = pc.dictionary_encode(tk)
        tdict = tenc.dictionary.to_pylist()
        count_rows = self.count_rows
        # addresses, agents and referers: dictionary-encoded once (the codes serve the visitors too) and counted in C
        # where the extension is built (the same counts in the same order as value_counts': first appearance)
        coded: dict[str, Coded] = {}
        refs: Collection[bytes]
        if self.combos is not None and count_rows is not None:
            hc = self._coded(h)
            coded["h"] = hc = ([one_ip(ip, ip) for ip in hc[0]], *hc[1:])
            count_rows(p.hosts, *hc)
            refs = []
            if ref is not None:
                coded["R"] = rc = self._coded(ref)
                count_rows(acc.c_ref, *rc)
                refs = rc[0]
            if ua is not None:
                coded["u"] = uc = self._coded(ua)
                count_rows(acc.c_ua, *uc)
            coded["time"] = (tdict, *_int32_buffers(tenc.indices))
            per_time: dict[bytes, int] = {}
            count_rows(per_time, *coded["time"])
            time_counts = list(per_time.items())
        else:
            p.hosts.update({one_ip(ip, ip): c for ip, c in self._counts(h)})
            refs = dict(self._counts(ref)) if ref is not None else {}
            acc.c_ref.update(refs)
            if ua is not None:
                acc.c_ua.update(dict(self._counts(ua)))
            time_counts = self._counts(tk)
        if ua is None:
            acc.c_ua[b"-"] += n
        for t, c in time_counts:
            p.minutes[tinfo[t]] += c
        del time_counts
        status_counts = self._counts(s)
        p.status.update(dict(status_counts))
        statuses = [x for x, _ in status_counts]
        # unique visitors: (date, ip, agent) of the requests whose status is not 4xx
        keep = None
        no4 = [x for x in statuses if x[:1] == b"4"]
        if no4:
            keep = pc.invert(self._mask_in(s, no4))
        one_ua = self.agents.setdefault
        if "h" in coded:  # (in C) the dates coded by their index among this buffer's dates
            day_of = [tinfo[t][0] for t in tdict]
            days = list(dict.fromkeys(day_of))
            day_no = {d: i for i, d in enumerate(days)}
            dates = pc.take(pa.array([day_no[d] for d in day_of], pa.int32()), tenc.indices)
            del tenc
            vcols = self._native_combos([(days, *_int32_buffers(dates)), coded["h"]]
                                        + ([coded["u"]] if ua is not None else []), keep, False)
        else:
            dates = pc.take(pa.array([tinfo[t][0] for t in tdict], pa.int32()), tenc.indices)
            del tenc
            vcols, _ = self._combos([dates, h] + ([ua] if ua is not None else []), keep, count=False)
        del dates
        vips = [one_ip(ip, ip) for ip in vcols[1]]
        vuas = [one_ua(a, a) for a in vcols[2]] if ua is not None else [b"-"] * len(vips)
        one_date = {d: d for d in set(vcols[0])}.__getitem__  # one int object per date (28 bytes a visitor)
        triples = list(zip(map(one_date, vcols[0]), vips, vuas, strict=True))
        del vcols, vips, vuas
        acc.visitors.update(triples)
        del triples
        # request lines: learn the new distinct ones, then key everything per distinct line
        renc = pc.dictionary_encode(r)
        ridx = renc.indices
        rdict: list[bytes] = renc.dictionary.to_pylist()
        ep_of = acc.ep_of
        fresh = list(map(not_, map(ep_of.__contains__, rdict)))  # (map: no Python-level step per line)
        if any(fresh):
            rdarr = renc.dictionary
            if len(ep_of) + fresh.count(True) > _cache_max():
                # start over, keeping what this buffer's known lines need (learning them again cost ~15 %
                # of the learning on a log of mostly distinct request lines)
                _retain(acc, [x for x, f in zip(rdict, fresh, strict=True) if not f])
            new = list(compress(rdict, fresh))
            rdarr = rdarr.filter(pa.array(fresh))
            # the attack and sensitive-file prefilters (supersets of classify's) in one RE2 pass each instead
            # of ~60 and ~30 searches
            cand: list[int] | None = None
            hints: list[int] | None = None
            try:
                cand = pc.indices_nonzero(pc.match_substring_regex(rdarr, _prefilter(), ignore_case=True)).to_pylist()
                hints = pc.indices_nonzero(pc.match_substring_regex(rdarr, _sensitive_prefilter(),
                                                                    ignore_case=True)).to_pylist()
            except pa.ArrowInvalid:  # a pattern RE2 cannot take: classify's own prefilters
                cand = hints = None
            self._learn_requests(rdarr, new)
            acc._learn_security(new, cand, hints)
            del rdarr
        del renc
        static_of = acc.static_of
        sp_of: list[bytes | None]
        if self.request_ids is not None:  # in C: the same ids, in the same order
            ids, sp_of, any_static = self.request_ids(rdict, ep_of, static_of, self.ep_ids, self.ep_list)
            ep_per = pa.Array.from_buffers(pa.int32(), len(rdict), [None, pa.py_buffer(ids)])
        else:
            eps = list(map(ep_of.__getitem__, rdict))
            for e in dict.fromkeys(eps):  # the endpoints in order of appearance
                self._ep_id(e)
            ep_per = pa.array(list(map(self.ep_ids.__getitem__, eps)), pa.int32())
            del eps
            sp_of = list(map(static_of.__getitem__, rdict))
            any_static = any(map(is_not, sp_of, repeat(None)))
        row_ep = pc.take(ep_per, ridx)
        ep_list = self.ep_list
        code_of = {x: status_code(x) for x in statuses}  # '0503' is 503, as in the status distribution
        # hits per request line, static files (not a 404 by its text: GoAccess's not-found panel reads the text),
        # endpoint errors, 404s: the rows' request lines (or keys) fed to the Counters, which count them in C (a
        # Python step per distinct (line, status) cost more)
        if count_rows is not None:
            count_rows(acc.c_req, rdict, *_int32_buffers(ridx))
        else:
            rows = pc.drop_null(ridx) if ridx.null_count else ridx
            acc.c_req.update(map(rdict.__getitem__, rows.to_pylist()))
            del rows
        nf_text = [x for x in statuses if x[:3] == b"404"]
        nf_m = self._mask_in(s, nf_text) if nf_text else None
        if count_rows is not None:
            if any_static:
                count_rows(p.static_paths, sp_of, *_int32_buffers(ridx if nf_m is None else ridx.filter(pc.invert(nf_m))))
        else:
            static_path = {i: sp for i in compress(range(len(sp_of)), map(is_not, sp_of, repeat(None)))
                           if (sp := sp_of[i]) is not None}
            if static_path:
                m = pc.is_in(ridx, value_set=pa.array(list(static_path), ridx.type))
                if nf_m is not None:
                    m = pc.and_(m, pc.invert(nf_m))
                p.static_paths.update(map(static_path.__getitem__, ridx.filter(m).to_pylist()))
        del sp_of
        errs = [x for x in statuses if (code := code_of[x]) is not None and not 200 <= code < 300]
        if errs:
            m = self._mask_in(s, errs)
            if self.combos is not None:  # the (endpoint, status) pairs counted in C: the same counts, the same order
                self.combos([(ep_list, *_int32_buffers(row_ep)), self._coded(s)], _bool_buffers(m), True,
                            p.endpoint_errors)
            else:
                p.endpoint_errors.update(zip(map(ep_list.__getitem__, row_ep.filter(m).to_pylist()),
                                             s.filter(m).to_pylist(), strict=True))
        if nf_m is not None:
            if count_rows is not None:
                count_rows(acc.c_req404, rdict, *_int32_buffers(ridx.filter(nf_m)))
            else:
                acc.c_req404.update(map(rdict.__getitem__, ridx.filter(nf_m).to_pylist()))
        # latency per endpoint; a 101 (a WebSocket) is timed until the connection closes: no response time
        upgraded = [x for x in statuses if code_of[x] == 101]
        if upgraded and (rt is not None or urt is not None):
            m = self._mask_in(s, upgraded)
            if rt is not None:
                rt = pc.if_else(m, pa.scalar(b"-", rt.type), rt)
            if urt is not None:
                urt = pc.if_else(m, pa.scalar(b"-", urt.type), urt)
        if rt is not None:
            acc.has_rt = True
            self._add_latency(acc.c_lat, row_ep, rt)
        else:
            for e, c in self._counts(row_ep):
                p.endpoint_hits[ep_list[e]] += c
        if urt is not None:
            acc.has_urt = True
            self._add_latency(acc.c_ulat, row_ep, urt)
        vh = cols.get("v")
        if vh is not None:  # per site: the same path of two sites is two paths
            p.vhosts.update(dict(self._counts(vh)))
            for (host, ri), c in self._pair_counts(vh, ridx):
                acc.c_vreq[(host, rdict[ri])] += c
            p.vhost_status.update(dict(self._pair_counts(vh, s)))
            if rt is not None:
                acc.c_vlat.update(dict(self._pair_counts(vh, rt)))
        # 404 bursts per (client, minute), but for a page's missing images, styles, scripts (classify.page_assets)
        nfs = [x for x in statuses if code_of[x] == 404]
        if nfs:
            m = self._mask_in(s, nfs)
            seen = pc.unique(ridx.filter(m)).to_pylist()
            assets = page_assets([rdict[i] for i in seen])
            if assets:
                skip = [i for i in seen if rdict[i] in assets]
                m = pc.and_(m, pc.invert(pc.is_in(ridx, value_set=pa.array(skip, ridx.type))))
            bursts: Counter[tuple[bytes, TimeInfo]] = Counter()
            for (ip, t), c in self._pair_counts(h, tk, m, coded, "h", "time"):
                bursts[(ip, tinfo[t])] += c
            p.nf_bursts.update(bursts)
        # failed logins (a POST to a login path answered one of its failure statuses) and the logins that
        # succeeded: rare, per row
        login_of = acc.login_of
        lg = _positions(rdict, login_of) if login_of else []
        if lg:
            m = pc.is_in(ridx, value_set=pa.array(lg, ridx.type))
            for ip, ri, t, st in zip(h.filter(m).to_pylist(), ridx.filter(m).to_pylist(), tk.filter(m).to_pylist(),
                                     s.filter(m).to_pylist(), strict=True):
                path, fails = login_of[rdict[ri]]
                answer = code_of[st]
                if answer in fails:
                    d, hh, mm = tinfo[t]
                    p.auth_failures[(ip, path, (d, hh, mm - mm % 10))] += 1
                elif answer is not None and 200 <= answer < 400:  # a login that succeeded (access.AccessPartial)
                    d, hh, mm = tinfo[t]
                    p.auth_successes[(ip, (d, hh, mm - mm % 10))] += 1
        # attacks: per row (samples: the first distinct request lines in byte order)
        attack_of = acc.attack_of
        sus = _positions(rdict, attack_of) if attack_of else []
        if sus:
            m = pc.is_in(ridx, value_set=pa.array(sus, ridx.type))
            samples = p.attack_samples
            abs_ = bi.filter(m).to_pylist() if bi is not None else None
            for k, (ri, ip, st) in enumerate(zip(ridx.filter(m).to_pylist(), h.filter(m).to_pylist(),
                                                 s.filter(m).to_pylist(), strict=True)):
                raw = rdict[ri]
                cat = attack_of[raw]
                if abs_ is not None and 200 <= (code_of[st] or 0) < 300:
                    acc._probe_answer(raw, abs_[k], cat)
                if cat in CONDITIONAL_PROBES:  # only some answers: the site does not run that software
                    if (counted := counted_category(cat, status_code(st))) is None:
                        continue
                    cat = counted
                p.attacks[(cat, ip, st)] += 1
                keep_first(samples.setdefault(cat, []), trim(raw), p.samples)  # as the line parser has it
        # sensitive files answered 2xx (rare, per row), and the body sizes of the front page's 2xx answers
        ok2 = [x for x in statuses if 200 <= (code_of[x] or 0) < 300]
        ok2_m = self._mask_in(s, ok2) if ok2 else None  # (the rows answered 2xx)
        sens = _positions(rdict, acc.sensitive_of) if ok2 and acc.sensitive_of else []
        if sens:
            m = pc.and_(pc.is_in(ridx, value_set=pa.array(sens, ridx.type)), ok2_m)
            bs = bi.filter(m).to_pylist() if bi is not None else None
            for k, (ri, ip, st, t) in enumerate(zip(ridx.filter(m).to_pylist(), h.filter(m).to_pylist(),
                                                    s.filter(m).to_pylist(), tk.filter(m).to_pylist(), strict=True)):
                acc._exposure(rdict[ri], ip, code_of[st] or 0, bs[k] if bs is not None else 0, tinfo[t])
        # the front page's request lines (Accumulator.page_of) are those of its endpoints: found by endpoint id
        front = [i for e in FRONT_ENDPOINTS if (i := self.ep_ids.get(e)) is not None] if ok2 and bi is not None else []
        if front and bi is not None:
            m = pc.and_(pc.is_in(row_ep, value_set=pa.array(front, row_ep.type)), ok2_m)
            for size, c in self._counts(bi.filter(m)):
                p.page_sizes[size] += c
        if ok2_m is not None and bi is not None:  # the one body size of each GET route (a catch-all's page answers
            self._route_sizes(row_ep, bi, ok2_m)  # them all)
        del row_ep
        # scanner user agents
        if ua is not None:
            # (this buffer's agents only: all those seen so far were read at every buffer, quadratic in a log
            # whose agents all differ)
            sc = acc.scanner_agents(coded["u"][0] if "u" in coded else self._distinct(ua))
            if sc:
                m = self._mask_in(ua, list(sc))
                if m.true_count:
                    for (a, ip), c in self._pair_counts(ua, h, m, coded, "u", "h"):
                        p.scanners[(sc[a], ip)] += c
        # exploits sent as the referer
        bad = acc.referer_exploits(refs) if refs else {}
        if bad and ref is not None:
            m = self._mask_in(ref, list(bad))
            for (x, ip), c in self._pair_counts(ref, h, m, coded, "R", "h"):
                p.scanners[(bad[x], ip)] += c
        # the clients that named each host in a referer (until enough did: access.REFERER_CLIENTS)
        pending = acc.pending_referers(refs) if refs else {}
        if pending and ref is not None:
            m = self._mask_in(ref, list(pending))
            for (x, ip), _c in self._pair_counts(ref, h, m, coded, "R", "h"):
                acc.referer_client(pending[x], ip)

    def _add_latency(self, counter: Counter[tuple[bytes, bytes]], row_ep: Any, times: Any) -> None:
        """Count the (endpoint, time token) pairs."""
        if self.combos is not None:  # (the endpoint ids are codes of ep_list already)
            self.combos([(self.ep_list, *_int32_buffers(row_ep)), self._coded(times)], None, True, counter)
            return
        (es, toks), counts = self._combos([row_ep, times])
        self.add_counts(counter, dict(zip(zip(map(self.ep_list.__getitem__, es), toks, strict=True), counts,
                                          strict=True)))

    def _route_sizes(self, row_ep: Any, sizes: Any, ok2: Any) -> None:
        """:meth:`Accumulator._route_size <upkeeper.logs.access.Accumulator._route_size>` of the distinct (endpoint,
        body size) pairs of the rows ``ok2`` (answered 2xx); the endpoints found not worth it (not a GET route, or
        sizes that differ) are left out of the next buffers' pairs with one ``is_in``."""
        pa, pc = self.pa, self.pc
        skip = self.route_skip
        keep = ok2 if not skip else pc.and_(ok2, pc.invert(pc.is_in(row_ep, value_set=pa.array(skip, pa.int32()))))
        if not pc.any(keep).as_py():
            return
        if self.combos is not None:  # (the kept rows are few once the endpoints not worth it are skipped)
            es, szs = self._native_combos([self._coded(row_ep.filter(keep)), self._coded(sizes.filter(keep))], None,
                                          False)
        else:
            (es, szs), _ = self._combos([row_ep.filter(keep), sizes.filter(keep)], count=False)
        size_of = self.acc._route_size
        ep_list = self.ep_list
        dropped = {e for e, sz in zip(es, szs, strict=True) if not size_of(ep_list[e], sz)}
        if dropped:
            self.route_skip = sorted(dropped.union(skip))

    def _coded(self, col: Any) -> Coded:
        """``col`` dictionary-encoded, as :func:`upkeeper.logs._cut.combos` takes a column."""
        enc = self.pc.dictionary_encode(col)
        return (enc.dictionary.to_pylist(), *_int32_buffers(enc.indices))

    def _native_combos(self, cols: list[Coded], keep: Any, count: bool) -> list[list[Any]]:
        """:func:`upkeeper.logs._cut.combos` of coded columns: per column, the values of each combination."""
        assert self.combos is not None
        got = self.combos(cols, _bool_buffers(keep) if keep is not None else None, count, None)
        assert got is not None
        return list(got[0])

    def _pair_counts(self, a: Any, b: Any, mask: Any = None, coded: dict[str, Coded] | None = None,
                     ka: str = "", kb: str = "") -> list[tuple[tuple[Any, Any], int]]:
        """The distinct (a, b) pairs of the rows (those of ``mask`` when given) and their counts; with the columns'
        codes (``coded[ka]``, ``coded[kb]``) counted in C (upkeeper.logs._cut.combos) under the mask, without a
        filtered copy of each column or its encoding."""
        if mask is not None and coded is not None and ka in coded and kb in coded and self.combos is not None:
            got = self.combos([coded[ka], coded[kb]], _bool_buffers(mask), True, None)
            assert got is not None
            return list(zip(zip(*got[0], strict=True), got[1], strict=True))
        if mask is not None:
            a, b = a.filter(mask), b.filter(mask)
        (xs, ys), counts = self._combos([a, b])
        return list(zip(zip(xs, ys, strict=True), counts, strict=True))

    def _combos(self, cols: list[Any], keep: Any = None, count: bool = True) -> tuple[list[list[Any]], list[int]]:
        """Distinct combinations of the columns' values (rows where ``keep`` is true, no value null): one list
        per column, and the count of each combination when ``count``.

        Each column is dictionary-encoded and the codes are combined into one int64 key, so one
        hash pass finds the combinations and the keys are decoded with vector arithmetic (no Acero
        group-by: less code loaded, less memory); with the C extension, one pass of
        :func:`upkeeper.logs._cut.combos` over the codes does it all (same combinations, same order: their first
        rows').
        """
        pa, pc = self.pa, self.pc
        if self.combos is not None:
            got = self.combos([self._coded(c) for c in cols], _bool_buffers(keep) if keep is not None else None,
                              count, None)
            assert got is not None
            return list(got[0]), got[1]
        codes: list[Any] = []
        dicts: list[Any] = []
        for col in cols:
            enc = pc.dictionary_encode(col)  # (then the codes filtered: cheaper than a copy of the values)
            codes.append(pc.cast(enc.indices if keep is None else enc.indices.filter(keep), pa.int64()))
            dicts.append(enc.dictionary)
        sizes = [max(1, len(d)) for d in dicts]
        total = 1
        for z in sizes:
            total *= z
        if total >= 1 << 62:  # cannot happen with buffers of a few MB; stay exact anyway
            counted = Counter(k for k in zip(*(c.to_pylist() for c in codes), strict=True) if None not in k)
            values = [d.to_pylist() for d in dicts]
            found = list(counted)
            return ([[values[j][k[j]] for k in found] for j in range(len(cols))],
                    [counted[k] for k in found] if count else [])
        key = codes[0]
        for c, z in zip(codes[1:], sizes[1:], strict=True):
            key = pc.add(pc.multiply(key, z), c)
        del codes
        counts: list[int] = []
        nulls = key.null_count
        if count:
            vc = pc.value_counts(key)
            if nulls:
                vc = vc.filter(pc.is_valid(vc.field(0)))
            key, counts = vc.field(0), vc.field(1).to_pylist()
        else:
            key = pc.unique(key)
            if nulls:
                key = pc.drop_null(key)
        out: list[list[Any]] = []
        for d, z in zip(reversed(dicts), reversed(sizes), strict=True):
            q = pc.divide(key, z)  # integer division
            out.append(pc.take(d, pc.subtract(key, pc.multiply(q, z))).to_pylist())
            key = q
        out.reverse()
        return out, counts


#: lines of one call of the C cut at most: its working space is ~25 bytes per line and field (the fields' spans and
#: offsets: ~250 bytes a line of the combined format), nothing for a buffer of ordinary lines (4 MB: ~16,000), but
#: 640 MB for a 4 MB buffer of empty lines (a file of them took 0.94 GB for 20 MB)
CUT_MAX_LINES = 1 << 16
#: a buffer whose lines are this long on average or less is looked through for empty lines (ArrowScanner._feed_cut)
SHORT_LINES = 32

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
#: blocks this large or larger are mmapped (see _fixed_mmap_threshold)
MMAP_THRESHOLD = 8 << 20
#: free memory at the top of the heap kept for the next buffer, not given back (see _fixed_mmap_threshold)
TRIM_THRESHOLD = 16 << 20


def _fixed_mmap_threshold(size: int = MMAP_THRESHOLD) -> None:
    """Make glibc serve blocks of ``size`` bytes or more with mmap, always.

    By default glibc raises that threshold each time such a block is freed (up to 32 MB), after
    which large blocks come from the heap and their pages stay resident (the peak RSS of a scan of a
    1 GB log ~20 MB higher per process than with a threshold of 256 KB).  A block served by mmap is
    page-faulted in and unmapped each time: with 256 KB, every per-buffer column (the buffers were
    2 MB then) was, which cost ~20 % of the scan's CPU.  A threshold above the buffer size (8 MB for
    :attr:`Accumulator.chunk <upkeeper.logs.access.Accumulator.chunk>`'s 4 MB) keeps the per-buffer
    blocks on the heap, where they are reused, and still returns the large blocks of the caches and the
    report at once (with 2 MB buffers and a 4 MB threshold: single process, 100 MB log: scan CPU 1.98 →
    1.55 s, peak RSS 113 → 122 MB; whole 1 GB run, two processes: peak RSS of the tree 441–447 → 465–473 MB).

    Setting the threshold also fixes glibc's trim threshold (free memory at the top of the heap given back to the
    system) at its default 128 KB: each buffer's blocks, freed at its end, were given back and page-faulted in again
    by the next buffer.  It is raised to :data:`TRIM_THRESHOLD` (about what a buffer's work allocates: reused by the
    next, and the peak is reached within a buffer anyway).  Measured on the benchmark's logs, whole runs, two
    processes, the machine busy with other work: 100 MB, page faults of the process tree 80–104k → 73k (4 MB and
    8 MB: 74–85k; 32 MB: no fewer than 16 MB) and CPU of the tree ~0.3 s less; 1 GB, page faults 260–300k →
    198–200k, CPU 14.7–15.9 → 13.4–14.4 s, peak RSS of the tree 468–476 → 468–473 MB (32 MB: 481–484 MB).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, size)
        libc.mallopt(M_TRIM_THRESHOLD, max(TRIM_THRESHOLD, size))
    except (OSError, AttributeError):
        pass


_PREFILTER: list[str] = []


def _prefilter() -> str:
    """classify's attack prefilter (characters, ``or 1=1`` and words; case-insensitive) as one RE2 pattern."""
    if not _PREFILTER:
        from upkeeper.logs.classify import _PREFILTERS

        _PREFILTER.append("|".join(rx.pattern.decode() for rx in _PREFILTERS))
    return _PREFILTER[0]


_SENSITIVE: list[str] = []


def _sensitive_prefilter() -> str:
    """classify's sensitive-file hints (literals, case-insensitive) as one RE2 pattern."""
    if not _SENSITIVE:
        from upkeeper.logs.classify import _SENSITIVE_HINTS

        _SENSITIVE.append("|".join(rx.pattern.decode() for rx in _SENSITIVE_HINTS))
    return _SENSITIVE[0]


def static_pattern(extensions: frozenset[bytes] | None) -> str | None:
    """An RE2 pattern over a URL matching as :class:`~upkeeper.logs.goaccess.StaticMatcher` does with these
    ``.word`` extensions (lower case; the URL's last dot begins one of them, in any case), "" for none, None when
    RE2 is not to be trusted with them (not ``.word`` ones, or not ASCII: no case folding beyond ASCII's)."""
    if extensions is None or not all(e.isascii() for e in extensions):
        return None
    if not extensions:
        return ""
    alts = ["".join(f"[{chr(c).upper()}{chr(c)}]" if chr(c).isalpha() else _lit(chr(c)) for c in e)
            for e in sorted(extensions)]
    return "(?s).(?:" + "|".join(alts) + ")$"  # (StaticMatcher: the dot not the URL's first character)


def _int32_buffers(col: Any) -> tuple[Any, int, int, Any]:
    """An int32 array's data buffer, offset, length and validity bitmap (None: no null), as
    ``_cut.count_rows`` takes them."""
    validity, data = col.buffers()
    return data, col.offset, len(col), validity if col.null_count else None


def _bool_buffers(mask: Any) -> tuple[Any, int, Any]:
    """A boolean array's data buffer (its bits), offset and validity bitmap (None: no null), as
    ``_cut.combos`` takes a mask."""
    validity, data = mask.buffers()
    return data, mask.offset, validity if mask.null_count else None


def _positions(values: list[bytes], known: Container[bytes]) -> list[int]:
    """The indexes of the values in ``known`` (C-level maps: no Python-level step per value)."""
    return list(compress(range(len(values)), map(known.__contains__, values)))


def _retain(acc: Accumulator, known: list[bytes]) -> None:
    """Empty the accumulator's per-request-line caches but for the entries of ``known``."""
    ep_of, static_of, page_of = acc.ep_of, acc.static_of, acc.page_of
    eps = {x: ep_of[x] for x in known}
    statics = {x: static_of[x] for x in known}
    pages = page_of.intersection(known)
    ep_of.clear()
    static_of.clear()
    page_of.clear()
    ep_of.update(eps)
    static_of.update(statics)
    page_of.update(pages)


def _cache_max() -> int:
    from upkeeper.logs.access import CACHE_MAX

    return CACHE_MAX


def preload() -> None:
    """Import pyarrow's compute functions and the C extension now (:func:`upkeeper.logs.access.warm`): the first
    :class:`ArrowScanner` otherwise imports them (~0.1 s) on the first large buffer.  Best effort (an install
    without either reads its logs as :func:`make_scanner` says)."""
    with contextlib.suppress(ImportError):
        import pyarrow.compute  # noqa: F401
    with contextlib.suppress(ImportError):
        from upkeeper.logs import _cut  # noqa: F401


def make_scanner(acc: Accumulator) -> ArrowScanner | None:
    """A scanner for ``acc``'s format, or None (unsupported format, or pyarrow missing)."""
    plan = arrow_plan(acc.opts.log_format, acc.opts.client_ip)
    if plan is None:
        return None
    try:
        scanner = ArrowScanner(acc, plan)
        scanner.pc.match_substring_regex(scanner.pa.array([b""], scanner.pa.large_binary()), plan.regex)
    except ImportError:
        return None
    except Exception:  # RE2 refuses the pattern (pyarrow.ArrowInvalid): the Python path reads it
        return None
    return scanner


# -- GoAccess's agent hash of many agents at once ---------------------------------------------------------------
# djb2 is h = h * 33 + c (mod 2**32) from h = 5381: for a value of n bytes c_0 … c_{n-1} ending at offset E of
# their concatenation (byte i at offset g_i), h = 5381 * 33**n + sum(c_i * 33**(E - 1 - g_i)), and as 33 is odd
# (invertible mod 2**32), 33**(E - 1 - g_i) = 33**(E - 1) * inv33**g_i: one product per byte by a table of powers,
# a running sum over the concatenation, and per value the difference of the sums at its ends (all mod 2**32).

DJB2_BATCH = 1 << 20  # bytes hashed per batch (the tables of powers: 8 bytes per byte of a batch)
_M32 = (1 << 32) - 1
_INV33 = pow(33, -1, 1 << 32)
_powers_cache: dict[int, Any] = {}


def _powers(base: int, n: int) -> Any:
    """uint64 array of base**k mod 2**32 for k in 0..n-1 (n a power of two), built by doubling."""
    key = base * (1 << 40) + n
    got = _powers_cache.get(key)
    if got is None:
        import pyarrow as pa
        import pyarrow.compute as pc

        got = pa.array([1], pa.uint64())
        while len(got) < n:
            step = pa.scalar(pow(base, len(got), 1 << 32), pa.uint64())
            got = pa.concat_arrays([got, pc.bit_wise_and(pc.multiply(got, step), pa.scalar(_M32, pa.uint64()))])
        _powers_cache[key] = got
    return got


def djb2_many(values: Sequence[bytes]) -> list[int]:
    """:func:`upkeeper.logs.goaccess.djb2` of each of ``values`` (equal, value for value), with pyarrow kernels
    in batches of :data:`DJB2_BATCH` bytes: the Python loop over every byte cost ~20 µs an agent, seconds for a
    log whose agents all differ (a crawler farm, a DDoS with random agents)."""
    from upkeeper.logs.goaccess import djb2

    out: list[int] = []
    i = 0
    while i < len(values):
        j, size = i, 0
        while j < len(values) and size + len(values[j]) <= DJB2_BATCH:
            size += len(values[j])
            j += 1
        if j == i:  # one value longer than a batch: the plain loop
            out.append(djb2(values[i]))
            i += 1
            continue
        out.extend(_djb2_batch(values[i:j], size))
        i = j
    return out


def _djb2_batch(values: Sequence[bytes], size: int) -> list[int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    u64 = pa.uint64()
    mask = pa.scalar(_M32, u64)
    arr = pa.array(values, pa.large_binary())
    offs = pc.cast(pa.Array.from_buffers(pa.int64(), len(arr) + 1, [None, arr.buffers()[1]], offset=arr.offset),
                   u64)
    starts, ends = offs[:-1], offs[1:]
    first = starts[0].as_py()
    table = 1 << max(size + 1, 1).bit_length()
    if size:
        data = pa.Array.from_buffers(pa.uint8(), size, [None, arr.buffers()[2]], offset=first)
        prod = pc.bit_wise_and(pc.multiply(pc.cast(data, u64), _powers(_INV33, table).slice(0, size)), mask)
        sums = pa.concat_arrays([pa.array([0], u64), pc.cumulative_sum(prod)])  # sums[k]: of the first k bytes
    else:
        sums = pa.array([0], u64)
    rel_start = pc.subtract(starts, pa.scalar(first, u64))
    rel_end = pc.subtract(ends, pa.scalar(first, u64))
    seg = pc.bit_wise_and(pc.subtract(pc.take(sums, rel_end), pc.take(sums, rel_start)), mask)  # (wraps mod 2**64)
    # 33**(E - 1) with E the end of the value in the batch (an empty value has seg 0: any power does)
    last = pc.subtract(pc.max_element_wise(rel_end, pa.scalar(1, u64)), pa.scalar(1, u64))
    pow33 = _powers(33, table)
    tail = pc.bit_wise_and(pc.multiply(seg, pc.take(pow33, last)), mask)
    lengths = pc.subtract(rel_end, rel_start)
    head = pc.bit_wise_and(pc.multiply(pc.take(pow33, lengths), pa.scalar(5381, u64)), mask)
    return pc.bit_wise_and(pc.add(head, tail), mask).to_pylist()  # type: ignore[no-any-return]
