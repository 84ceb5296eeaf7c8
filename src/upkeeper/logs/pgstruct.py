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
a buffer boundary waits for the next buffer.  jsonlog (PostgreSQL 15+) writes one object per line and
leaves out empty keys.

A record that is not one — another column count, no timestamp or severity, a line that is not JSON —
is counted as unparsed, with a sample, and never stops the scan.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from upkeeper.logs.pglog import PgAccumulator, PgPartial, PgScanOptions, Pos, _earliest
from upkeeper.logs.pglog import merge as merge  # parallel.scan calls kind.merge

Format = Literal["csvlog", "jsonlog"]
# for parallel.scan: below this a helper process does not pay (the records cost more than stderr lines)
MIN_PARALLEL = 8 << 20
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
# the rows of PgAccumulator.entry_rx for this prefix carry ts, pid, user, db, sqlstate (the prefix is not
# matched against anything: it only lays out the groups)
_ROW_PREFIX = "%m [%p] %u %d %e "
_LEVEL_BYTES = {name: name.encode() for name in ("DETAIL", "HINT", "QUERY", "CONTEXT", "STATEMENT")}
_ROW = ("ts", "pid", "user", "db", "sqlstate", "ms", "kind", "q", "level", "msg")
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

    # -- input -------------------------------------------------------------------------------

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        if not buf:
            return
        p = self.inner.p
        p.bytes_read += len(buf)
        if self.opts.format == "jsonlog":
            self._feed_records(self._json_records(buf), buf, source, offset)
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
            self._feed_records(self._csv_records(buf), buf, source, offset)

    def _flush_carry(self) -> None:
        if self.carry:
            src, start, _ = self.carry_at
            self._feed_records(self._csv_records(self.carry), self.carry, src, start)
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

    def _feed_records(self, recs: list[tuple[list[str] | None, str]], buf: bytes, source: str, offset: int) -> None:
        inner, p = self.inner, self.inner.p
        in_order = inner.begin(source, offset)
        rows: list[tuple[bytes, ...]] = []
        add = rows.append
        bad: list[tuple[Pos, str]] = []
        multiline = False
        duration = _DURATION.match
        for i, (rec, raw) in enumerate(recs):
            if rec is None:
                bad.append(((source, offset, i), f"{source}: {raw[:300]}"))
                continue
            ts, pid, user, db, code = rec[0][:19].encode(), rec[3].encode(), _b(rec[1]), _b(rec[2]), rec[12].encode()
            level = rec[11]
            msg = _b(rec[13])
            at = rec[20] or rec[17]  # the error's position in the statement (or internal query)
            if at:  # the stderr format writes it after the message
                msg += b" at character " + at.encode()
            if b"\n" in msg:
                multiline = True
            dm = duration(msg) if level == "LOG" and msg[:10] == b"duration: " else None
            if dm:
                add((ts, pid, user, db, code, dm.group(1), dm.group(2), msg[dm.end():], b"", b""))
            else:
                add((ts, pid, user, db, code, b"", b"", b"", level.encode(), msg))
            for col, name in _CSV_EXTRA:
                text = rec[col]
                if text:
                    add((ts, pid, user, db, code, b"", b"", b"", _LEVEL_BYTES[name], _b(text)))
                    if "\n" in text:
                        multiline = True
        p.lines += len(recs)
        inner.consume(rows, multiline=multiline, in_order=in_order)
        if bad:
            p.unparsed += len(bad)
            kept = _earliest([*zip(p.unparsed_pos, p.unparsed_samples, strict=True), *bad[:p.samples]], p.samples)
            p.unparsed_pos = [k[0] for k in kept]
            p.unparsed_samples = [k[1] for k in kept]


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
    rec[0], rec[1], rec[2], rec[3] = ts, text("user"), text("dbname"), str(pid)
    rec[11], rec[12], rec[13] = level, text("state_code"), text("message")
    for (col, _), (key, _) in zip(_CSV_EXTRA, _JSON_EXTRA, strict=True):
        rec[col] = text(key)
    rec[17], rec[20] = text("internal_position"), text("cursor_position")
    return rec


def make_accumulator(opts: PgStructOptions) -> PgStructAccumulator:
    return PgStructAccumulator(opts)
