"""PostgreSQL server logs in the csvlog and jsonlog formats (``log_destination = csvlog`` / ``jsonlog``).

Each record becomes the entries the stderr format would have logged for it — the primary message,
then its ``DETAIL``, ``HINT``, ``QUERY``, ``CONTEXT`` and ``STATEMENT`` — and goes through the
stderr parser's own aggregation (:meth:`upkeeper.logs.pglog.PgAccumulator.consume`), so the same
workload gives the same figures in the three formats (an error's position, a column of its own
here, is written after the message as the stderr format does: "… at character 15").  The SQLSTATE comes from the record's own
column (csvlog's ``sql_state_code``, jsonlog's ``state_code``), never from the message text.

csvlog columns (PostgreSQL's "Using CSV-Format Log Output"): 23 up to PostgreSQL 12, 24 from 13
(``backend_type``), 26 from 14 (``leader_pid``, ``query_id``); the columns read here are the first 21,
the same in all of them.  A record may span lines (quoted fields keep their newlines); a record cut by
a buffer boundary waits for the next buffer.  The records written as PostgreSQL writes them are read by
one regex per buffer (:func:`csv_rows`); the csv module reads on from the first record it does not match
(:meth:`PgStructAccumulator._csv_records`, the reference: both give the same rows).  jsonlog (PostgreSQL
15+) writes one object per line and leaves out empty keys.

A record that is not one — another column count, no timestamp or severity, a line that is not JSON —
is counted as unparsed, with a sample, and never stops the scan.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import ne, not_
from typing import Any, Literal

from upkeeper.logs.pgformat import SCANNERS
from upkeeper.logs.pglog import PgAccumulator, PgPartial, PgScanOptions, _earliest
from upkeeper.logs.pglog import merge as merge  # parallel.scan calls kind.merge

Format = Literal["csvlog", "jsonlog"]
# for parallel.scan: below this a helper process does not pay (measured when the csv module read every record,
# which cost more per statement than a stderr line)
MIN_PARALLEL = SCANNERS["csvlog"][1]
#: csvlog columns per PostgreSQL version: 23 (<= 12), 24 (13: backend_type), 26 (14+: leader_pid, query_id)
CSV_COLUMNS = (23, 24, 26)
#: a csvlog record still open (an unbalanced quote) after this many bytes is parsed as it is: a damaged
#: file (a stray quote) must not make the reader hold the rest of the log
MAX_RECORD = 16 << 20
#: where a csvlog record starts: its log_time ("2024-03-01 10:00:00.123 UTC,"), for cutting a file in pieces
RECORD_START = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}(?: [^,\n\"]*)?,")
_LINE_START = re.compile(rb"(?m)^" + RECORD_START.pattern)
_TS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_DURATION = re.compile(rb"duration: (\d+(?:\.\d+)?) ms  (statement|execute|parse|bind)(?: [^:\n]*)?: ", re.S)
# the rows of PgAccumulator.entry_rx for this prefix carry ts, pid, user, db, sqlstate and the command tag (the
# csvlog's command_tag column, the jsonlog's "ps": what %i writes — PARSE and BIND tell the extended protocol's
# Parse and Bind durations from the statements' own) (the prefix is not matched against anything: it only lays
# out the groups)
_ROW_PREFIX = "%m [%p] %u %d %e %i "
_LEVEL_BYTES = {name: name.encode() for name in ("DETAIL", "HINT", "QUERY", "CONTEXT", "STATEMENT")}
_ROW = ("ts", "pid", "user", "db", "sqlstate", "tag", "ms", "kind", "q", "level", "msg")
# the entries after the primary message, in the order the stderr format writes them
_CSV_EXTRA = ((14, "DETAIL"), (15, "HINT"), (16, "QUERY"), (18, "CONTEXT"), (19, "STATEMENT"))
_JSON_EXTRA = (("detail", "DETAIL"), ("hint", "HINT"), ("internal_query", "QUERY"), ("context", "CONTEXT"),
               ("statement", "STATEMENT"))
# a statement logged in one field can be longer than csv's default limit (128 KiB)
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD))


@dataclass(frozen=True)
class PgStructOptions:
    format: Format = "csvlog"
    samples: int = 5


def _e(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _b(s: str) -> bytes:
    """A field as the stderr format writes it: bytes, continuation lines indented with a tab."""
    b = s.encode("utf-8", "surrogateescape")
    return b.replace(b"\n", b"\n\t") if b"\n" in b else b


def complete_csv(buf: bytes) -> int:
    """Length of the head of ``buf`` that holds whole csvlog records: up to the last newline outside quotes
    (PostgreSQL quotes every text field and doubles the quotes in it, so an even count of quotes before a
    newline puts it outside any field)."""
    q = buf.count(b'"')
    if not q % 2 and buf.endswith(b"\n"):
        return len(buf)
    end = len(buf)
    while True:
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            return 0
        q -= buf.count(b'"', nl + 1, end)
        if not q % 2:
            return nl + 1
        end = nl


#: how far back from the end of a live csvlog :func:`complete_end` looks for the start of the last record
TAIL_WINDOW = 1 << 20


def complete_end(path: str, start: int, end: int) -> int:
    """Where reading a live csvlog from ``start`` should stop: ``end`` (after a newline), or before its last
    record when that record is not whole yet — the server writes a long record in pieces, so a newline inside
    one of its fields can be the last byte written so far; the rest waits for the next run.  Only the last
    :data:`TAIL_WINDOW` bytes are looked at: a record longer than that is read as it is."""
    lo = max(start, end - TAIL_WINDOW)
    with open(path, "rb") as fh:
        fh.seek(lo)
        tail = fh.read(end - lo)
    last = None
    for m in _LINE_START.finditer(tail):
        if m.start() > 0 or lo == start:  # (the window's first byte may be in the middle of a line)
            last = m.start()
    if last is not None and tail.count(b'"', last) % 2:  # its quotes do not balance: not whole yet
        return lo + last
    return end


class PgStructAccumulator:
    """csvlog or jsonlog records → the stderr parser's aggregation (one :class:`PgAccumulator` inside)."""

    def __init__(self, opts: PgStructOptions) -> None:
        self.opts = opts
        self.inner = PgAccumulator(PgScanOptions(log_line_prefix=_ROW_PREFIX, samples=opts.samples))
        # rows are built as literal tuples in this group order (checked here: the prefix lays it out)
        gi = self.inner.entry_rx.groupindex
        assert [gi[k] for k in _ROW] == list(range(1, len(_ROW) + 1)) == list(range(1, self.inner.entry_rx.groups + 1))
        self.carry = b""  # a csvlog record cut by the end of the last buffer
        self.carry_at: tuple[str, int, int] = ("", 0, 0)  # (source, offset of carry, offset after it)

    def sizes(self) -> dict[str, int]:
        """What the inner accumulator holds (:meth:`PgAccumulator.sizes`)."""
        return self.inner.sizes()

    # -- input -------------------------------------------------------------------------------

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        if not buf:
            return
        p = self.inner.p
        p.bytes_read += len(buf)
        if self.opts.format == "jsonlog":
            self._feed_records(self._json_records(buf), source, offset)
            return
        if self.carry:
            src, start, end = self.carry_at
            if (src, end) == (source, offset):
                buf, offset = self.carry + buf, start
            else:  # the record's end is in no buffer of this scan: it was cut (end of a damaged file)
                self._flush_carry()
            self.carry = b""
        n = complete_csv(buf)
        if n < len(buf) and len(buf) - n <= MAX_RECORD:
            self.carry, self.carry_at = buf[n:], (source, offset + n, offset + len(buf))
            buf = buf[:n]
        if buf:
            self._feed_csv(buf, source, offset)

    def start_unit(self, source: str, start: int, end: int | None) -> None:
        """See :meth:`PgAccumulator.start_unit`; a record cut by the end of the last unit is read in its piece."""
        if self.carry and self.carry_at[0::2] != (source, start):
            self._flush_carry()
        self.inner.start_unit(source, start, end)

    def _flush_carry(self) -> None:
        if self.carry:
            src, start, _ = self.carry_at
            self._feed_csv(self.carry, src, start)
            self.carry = b""

    def partial(self) -> PgPartial:
        self._flush_carry()
        return self.inner.partial()

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def _csv_records(buf: bytes) -> list[tuple[list[str] | None, str]]:
        """(fields, raw text) per record; fields None (and the text) when the record is not a csvlog one."""
        out: list[tuple[list[str] | None, str]] = []
        add = out.append
        ts_ok = _TS.match
        reader = csv.reader(io.StringIO(buf.decode("utf-8", "surrogateescape"), newline=""))
        while True:
            try:
                for rec in reader:
                    if len(rec) in CSV_COLUMNS and rec[11] and ts_ok(rec[0]):
                        add((rec, ""))
                    elif rec:  # (not an empty line)
                        add((None, ",".join(rec)))
                return out
            except csv.Error as exc:  # a NUL byte, a field over csv's size limit: one bad record, read on
                add((None, f"csv error: {exc}"))

    @staticmethod
    def _json_records(buf: bytes) -> list[tuple[list[str] | None, str]]:
        out: list[tuple[list[str] | None, str]] = []
        for line in buf.split(b"\n"):
            if not line.strip():
                continue
            try:  # (a database in another encoding than UTF-8 logs its bytes as they are: kept as they are)
                obj = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError:
                obj = None
            rec = _from_json(obj) if isinstance(obj, dict) else None
            out.append((rec, line.decode("utf-8", "replace")))
        return out

    def _feed_csv(self, buf: bytes, source: str, offset: int) -> None:
        in_order = self.inner.begin(source, offset)
        rows, bad, multiline, n = csv_rows(buf)
        self._consume(rows, bad, multiline, n, in_order, source, offset)

    def _feed_records(self, recs: list[tuple[list[str] | None, str]], source: str, offset: int) -> None:
        in_order = self.inner.begin(source, offset)
        rows: list[tuple[bytes, ...]] = []
        bad: list[tuple[int, str]] = []
        multiline = _record_rows(recs, 0, rows, bad)
        self._consume(rows, bad, multiline, len(recs), in_order, source, offset)

    def _consume(self, rows: list[tuple[bytes, ...]], bad: list[tuple[int, str]], multiline: bool, n: int,
                 in_order: bool, source: str, offset: int) -> None:
        inner, p = self.inner, self.inner.p
        p.lines += n
        inner.consume(rows, multiline=multiline, in_order=in_order)
        if bad:
            p.unparsed += len(bad)
            kept = _earliest([*zip(p.unparsed_pos, p.unparsed_samples, strict=True),
                              *(((source, offset, i), f"{source}: {raw[:300]}") for i, raw in bad[:p.samples])],
                             p.samples)
            p.unparsed_pos = [k[0] for k in kept]
            p.unparsed_samples = [k[1] for k in kept]


def _record_rows(recs: list[tuple[list[str] | None, str]], first: int, rows: list[tuple[bytes, ...]],
                 bad: list[tuple[int, str]]) -> bool:
    """The reference conversion: records (as :meth:`PgStructAccumulator._csv_records` or ``_json_records``
    give them) → rows of ``PgAccumulator.entry_rx`` appended to ``rows``; the records that are none to
    ``bad`` as (index, raw text), indices counted from ``first``.  True when a text holds a newline."""
    add = rows.append
    multiline = False
    duration = _DURATION.match
    for i, (rec, raw) in enumerate(recs, first):
        if rec is None:
            bad.append((i, raw))
            continue
        # (every column as bytes the way _b does it: a damaged record can hold any byte in any column)
        ts, pid, user, db, code, tag = rec[0][:19].encode(), _e(rec[3]), _b(rec[1]), _b(rec[2]), _e(rec[12]), _e(rec[7])
        level = rec[11]
        msg = _b(rec[13])
        at = rec[20] or rec[17]  # the error's position in the statement (or internal query)
        if at:  # the stderr format writes it after the message
            msg += b" at character " + _e(at)
        if b"\n" in msg:
            multiline = True
        dm = duration(msg) if level == "LOG" and msg[:10] == b"duration: " else None
        if dm:
            add((ts, pid, user, db, code, tag, dm.group(1), dm.group(2), msg[dm.end():], b"", b""))
        else:
            add((ts, pid, user, db, code, tag, b"", b"", b"", _e(level), msg))
        for col, name in _CSV_EXTRA:
            text = rec[col]
            if text:
                add((ts, pid, user, db, code, tag, b"", b"", b"", _LEVEL_BYTES[name], _b(text)))
                if "\n" in text:
                    multiline = True
    return multiline


# -- the csvlog fast path ------------------------------------------------------------------------------

# A csvlog record as PostgreSQL writes it, as one regex: unquoted fields (time stamps, numbers, the severity)
# hold no comma, quote, CR, LF or NUL; text fields are quoted (quotes doubled inside) or empty.  The groups
# are the columns read here; the message's "duration: X ms  statement: " head is split off by the regex.
# Fields holding NUL are left to the csv module (NUL separates the texts joined below).
# (possessive quantifiers and atomic groups: nothing to backtrack into, a quarter faster)
_U = rb'[^,"\r\n\x00]*+'
_Q = rb'"[^"\x00]*+(?:""[^"\x00]*+)*+"'
_F = rb'(?:[^,"\r\n\x00]++|' + _Q + rb"|)"
_T = rb"(" + _Q + rb"|)"
_MSG = (rb'(?:"(duration: (\d+(?:\.\d+)?) ms  (statement|execute|parse|bind)(?: (?:[^:\n"\x00]|"")*)?: )?'
        rb'([^"\x00]*+(?:""[^"\x00]*+)*+)"|)')
# columns 14-20 (detail, hint, internal query and its position, context, statement, position), mostly empty:
# one group, split by _EXTRA when not empty
_TN = rb"(?:" + _Q + rb"|)"
_EXTRA_EMPTY = b",,,,,,,"
_EXTRA = re.compile(rb"," + _T + rb"," + _T + rb"," + _T + rb",(" + _U + rb")," + _T + rb"," + _T + rb",(" + _U + rb")")
_FAST = re.compile(
    rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)" + _U + rb"," + _T + rb"," + _T + rb",(" + _U + rb")" + (rb"," + _F) * 3
    + rb",(" + _F + rb")" + (rb"," + _F) * 3  # 8 command_tag
    + rb',([^,"\r\n\x00]+),(' + _U + rb"),"  # 11 severity, 12 SQLSTATE
    + _MSG + rb"(" + _EXTRA_EMPTY + rb"|," + _TN + rb"," + _TN + rb"," + _TN + rb"," + _U + rb"," + _TN + rb"," + _TN
    + rb"," + _U + rb")"
    + rb"(?:," + _F + rb"){2}(?:," + _F + rb"(?:," + _F + rb"," + _F + rb")?)?\n")  # 23, 24 or 26 columns
_K = _FAST.groups + 1  # re.split gives the text before each match, then its groups
_EXTRA_LEVELS = tuple(_LEVEL_BYTES[name] for _, name in _CSV_EXTRA)


def _unquote(field: bytes) -> bytes:
    """A text field as the stderr format writes it (see :func:`_b`): quotes off, continuation lines indented."""
    if not field:
        return b""
    v = field[1:-1]
    if b'"' in v:
        v = v.replace(b'""', b'"')
    return v.replace(b"\n", b"\n\t") if b"\n" in v else v


def _plain(field: bytes) -> bytes:
    """A field as the csv module reads it, quoted or not (no continuation-line indent: the command tag)."""
    if field[:1] != b'"':
        return field
    v = field[1:-1]
    return v.replace(b'""', b'"') if b'"' in v else v


def csv_rows(buf: bytes) -> tuple[list[tuple[bytes, ...]], list[tuple[int, str]], bool, int]:
    """csvlog records → (rows of ``PgAccumulator.entry_rx``, (index, raw text) of the records that are none,
    whether a text holds a newline, the count of records): what :func:`_record_rows` gives for
    :meth:`PgStructAccumulator._csv_records`, faster.

    The records written as PostgreSQL writes them are read by one regex, column by column (``re.split``
    lays the groups of every match out in one list); from the first record it does not match (a damaged
    record, one of another layout, the cut end of a file) the rest of the buffer goes to the csv module.
    """
    rows: list[tuple[bytes, ...]] = []
    bad: list[tuple[int, str]] = []
    if len(buf) > csv.field_size_limit():  # the csv module refuses such a field: only it can say which
        recs = PgStructAccumulator._csv_records(buf)
        return rows, bad, _record_rows(recs, 0, rows, bad), len(recs)
    parts = _FAST.split(buf)
    gaps = parts[::_K]
    n = len(gaps) - 1
    rest = len(buf) - len(gaps[-1])
    if any(gaps[:-1]):  # a record the regex does not read: the csv module reads from there
        n = next(i for i, g in enumerate(gaps) if g)
        rest = 0
        for _ in range(n):
            m = _FAST.match(buf, rest)
            assert m is not None
            rest = m.end()
    multiline = False
    if n:
        multiline = _fast_rows(parts, n, rows)
    if rest < len(buf):
        recs = PgStructAccumulator._csv_records(buf[rest:])
        if _record_rows(recs, n, rows, bad):
            multiline = True
        n += len(recs)
    return rows, bad, multiline, n


def _fast_rows(parts: list[bytes], n: int, rows: list[tuple[bytes, ...]]) -> bool:
    """The rows of the first ``n`` records matched by :data:`_FAST` (``parts``: its ``split``) appended to
    ``rows``, in the order and with the contents :func:`_record_rows` gives them."""
    def col(g: int) -> list[bytes]:
        c = parts[g::_K]
        return c[:n] if len(c) > n else c

    ts, pids, levels, codes = col(1), col(4), col(6), col(7)
    users, dbs = ([*map(m.__getitem__, c)] for c in (col(2), col(3)) for m in [{v: _unquote(v) for v in set(c)}])
    c5 = col(5)
    tags = [*map({v: _plain(v) for v in set(c5)}.__getitem__, c5)]
    pres, mss, kinds, bodies, extra = col(8), col(9), col(10), col(11), col(12)
    if None in bodies:  # (an empty message)
        bodies = [b or b"" for b in bodies]
    joined = b"\x00".join(bodies)
    multiline = b"\n" in joined
    if b'"' in joined or multiline:
        if b'"' in joined:
            joined = joined.replace(b'""', b'"')
        if multiline:
            joined = joined.replace(b"\n", b"\n\t")
        bodies = joined.split(b"\x00")
    e = b""
    prim = list(zip(ts, pids, users, dbs, codes, tags, mss, kinds, bodies, repeat(e), repeat(e)))
    # records with something in columns 14-20; records that are no duration entry
    with_extra = list(compress(range(n), map(ne, extra, repeat(_EXTRA_EMPTY))))
    odd = set(compress(range(n), map(not_, pres)))
    odd.update(compress(range(n), map(ne, levels, repeat(b"LOG"))))
    texts: dict[int, tuple[bytes, ...]] = {}
    at: dict[int, bytes] = {}
    for i in with_extra:
        m = _EXTRA.fullmatch(extra[i])
        assert m is not None  # (it matched inside _FAST)
        detail, hint, query, ipos, context, statement, qpos = m.groups()
        texts[i] = (detail, hint, query, context, statement)
        if qpos or ipos:  # the error's position in the statement (or internal query): written after the message
            odd.add(i)
            at[i] = qpos or ipos
    duration = _DURATION.match
    for i in odd:
        msg = (_unquote(b'"' + pres[i] + b'"') if pres[i] else b"") + bodies[i]
        if i in at:
            msg += b" at character " + at[i]
        dm = duration(msg) if levels[i] == b"LOG" and msg[:10] == b"duration: " else None
        if dm:
            prim[i] = (ts[i], pids[i], users[i], dbs[i], codes[i], tags[i], dm.group(1), dm.group(2), msg[dm.end():],
                       e, e)
        else:
            prim[i] = (ts[i], pids[i], users[i], dbs[i], codes[i], tags[i], e, e, e, levels[i], msg)
    if not with_extra:
        rows += prim
        return multiline
    prev = 0
    for i in with_extra:
        rows += prim[prev:i + 1]
        prev = i + 1
        for raw, level in zip(texts[i], _EXTRA_LEVELS, strict=True):
            text = _unquote(raw)
            if text:
                rows.append((ts[i], pids[i], users[i], dbs[i], codes[i], tags[i], e, e, e, level, text))
                if b"\n" in text:
                    multiline = True
    rows += prim[prev:]
    return multiline


def _from_json(obj: dict[str, Any]) -> list[str] | None:
    """A jsonlog object as the csvlog columns read here (None: not a log record)."""
    ts, level, pid = obj.get("timestamp"), obj.get("error_severity"), obj.get("pid")
    if not isinstance(ts, str) or not _TS.match(ts) or not isinstance(level, str) or not level:
        return None
    if pid is None or isinstance(pid, bool) or not isinstance(pid, (int, str)):
        return None

    def text(key: str) -> str:
        v = obj.get(key)
        return v if isinstance(v, str) else "" if v is None else str(v)

    rec = [""] * 21
    rec[0], rec[1], rec[2], rec[3], rec[7] = ts, text("user"), text("dbname"), str(pid), text("ps")
    rec[11], rec[12], rec[13] = level, text("state_code"), text("message")
    for (col, _), (key, _) in zip(_CSV_EXTRA, _JSON_EXTRA, strict=True):
        rec[col] = text(key)
    rec[17], rec[20] = text("internal_position"), text("cursor_position")
    return rec


def speculation(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[Any, bytes, list[Any]] | None:
    """The scan of a ``logs.postgres`` run of this format, for a helper that reads ahead (see
    :func:`upkeeper.logs.pgplan.speculation`)."""
    from upkeeper.logs import pgplan

    return pgplan.speculation(__name__, options, target)


def make_accumulator(opts: PgStructOptions) -> PgStructAccumulator:
    return PgStructAccumulator(opts)
