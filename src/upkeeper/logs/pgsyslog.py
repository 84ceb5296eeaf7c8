"""PostgreSQL's log as a syslog daemon writes it (``log_destination = 'syslog'``), read by the stderr parser.

PostgreSQL's ``write_syslog()`` (src/backend/utils/error/elog.c) sends each message — the whole text the server
would write to stderr for one report: its log_line_prefix, ``LOG:  …``, and the DETAIL, HINT, CONTEXT and STATEMENT
lines with theirs — as one or more ``syslog()`` calls:

* ``[SEQ-N] chunk``, SEQ counting the backend's messages (``syslog_sequence_numbers = on``, the default): the
  message cut at each newline (the newline dropped, empty lines skipped) and a line longer than ``PG_SYSLOG_LIMIT``
  (900) bytes at its last whitespace before that (the whitespace starts the next chunk; a word too long is cut
  where it is); ``[N] chunk`` with ``syslog_sequence_numbers = off``.  Every message is cut so — its text ends with
  a newline: one of a short line is ``[SEQ-1] message``;
* ``[SEQ] message`` with ``syslog_split_messages = off``: the message whole, its newlines in it (``message`` alone
  with ``syslog_sequence_numbers = off``).

A syslog daemon writes each call as a line of its own after its time, the host and ``ident[pid]:``
(``Dec  7 08:00:00 db1 postgres[4001]: [12-1] …``, or an RFC 3339 time: ``2026-12-07T08:00:00.123+01:00``), other
processes' lines in between, and rsyslog writes control characters as ``#`` and three octal digits (a tab, which
PostgreSQL puts at the start of every continuation line, as ``#011``).

:class:`Joiner` undoes all that: it joins each message's chunks again (per pid: chunks of one message are
consecutive calls of one backend), turns ``#011`` back into a tab (and ``#012`` into a newline, written so with
``syslog_split_messages = off``) as pgBadger does, and writes the message as the server writes it to stderr, with
the syslog header's time and pid in front of each line when log_line_prefix has none (:func:`effective_prefix`),
so that :mod:`upkeeper.logs.pglog` reads it as it reads a stderr log — every part of its report.  Lines of other
programs (another ident: ``/var/log/messages``) are skipped and not counted; lines that are no syslog lines at all
are handed on as they are (unparsed).
"""

from __future__ import annotations

import calendar
import functools
import itertools
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from upkeeper.logs import pglog
from upkeeper.logs.pgformat import SCANNERS, looks_like_syslog  # noqa: F401 - (its home was here)

_syslog_join: Callable[..., tuple[int, int, int, int, bytes | None, bytes | None, int]] | None
try:  # the plain lines' join in C (built at install where a compiler is; without it all in Python: the same text)
    from upkeeper.logs._cut import syslog_join as _syslog_join
except ImportError:  # pragma: no cover - an install without a C compiler
    _syslog_join = None

#: smaller than the stderr parser's: joining chunks costs more than parsing them
MIN_PARALLEL = SCANNERS["syslog"][1]
#: backends whose last message waits for their next (only then is it known to have no more chunks): past this
#: many (a server without connection pooling has a new pid per connection), the half whose message waits longest
#: are taken as whole — the chunks of a message come within microseconds of each other
MAX_PENDING = 10_000

_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}

#: a syslog line: the time (traditional, without a year — with fractions of a second as syslog-ng's frac_digits
#: and journalctl's short-precise write it — or RFC 3339), the host, a facility.priority some daemons write
#: (busybox syslogd), the tag (ident and pid), the message.  (pgBadger's syslog and syslog2 formats)
LINE_RX = re.compile(
    rb"(?m)^(?P<tt>(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d+)?"
    rb"|(?P<date>\d{4}-\d\d-\d\d)T(?P<ihms>\d\d:\d\d:\d\d)(?P<frac>\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    rb" (?P<host>\S+) (?:[a-z0-9]+\.[a-z]+ )?(?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>[^\n]*)$")
#: an RFC 5424 line (rsyslog's RSYSLOG_SyslogProtocol23Format, syslog-ng's flags(syslog-protocol)):
#: ``<PRI>1 TIME HOST APP PROCID MSGID STRUCTURED-DATA MSG`` (the groups of :data:`LINE_RX`; PROCID "-": none)
RFC5424_RX = re.compile(
    rb"(?m)^<\d{1,3}>1 (?P<tt>(?P<date>\d{4}-\d\d-\d\d)T(?P<ihms>\d\d:\d\d:\d\d)(?P<frac>\.\d+)?"
    rb"(?:Z|[+-]\d\d:\d\d))(?P<mon>(?!))?(?P<day>(?!))?(?P<hms>(?!))? (?P<host>\S+) (?P<ident>\S+) "
    rb"(?:(?P<pid>\d+)|\S+) \S+ (?:-|(?:\[(?:[^\]\\\n]|\\.)*\])+) {0,2}(?P<msg>[^\n]*)$")
#: a syslog line's time and host (a line of no program: the daemon's "last message repeated 3 times")
_TIME_HOST = re.compile(rb"(?:[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) \S+ ")
#: journalctl's own lines in its output saved to a file (``journalctl -u postgresql > pg.log``): ``-- Boot 4f0e… --``,
#: ``-- Reboot --``, ``-- Logs begin at …, end at … --``, ``-- Journal begins at … --``, ``-- No entries --``
_JOURNAL_MARK = re.compile(rb"-- [^\n]{1,300} --\r?")
#: rsyslog's line for the same message again and again (RepeatedMsgReduction, on in Ubuntu's rsyslog.conf): it
#: stands for that many more of the program's last message (the text in brackets is cut at 800 bytes)
_REPEATED = re.compile(rb" ?message repeated (\d+) times: \[")


def line_rx(buf: bytes) -> re.Pattern[bytes]:
    """The form of the syslog lines of ``buf`` (lines of whole lines of one file): RFC 5424, else traditional."""
    return RFC5424_RX if buf[:1] == b"<" else LINE_RX


#: PostgreSQL's bracket: [SEQ], [SEQ-N] or [N]
_BRACKET = re.compile(rb"\[(\d+)(?:-(\d+))?\](?: |$)")
#: a line of a live file where a piece of the log may start (for parallel.split_units): not a chunk after a
#: message's first one that says so ([SEQ-N] with N > 1, or a continuation line's tab).  Other backends' messages
#: may be in flight there: each piece reads its messages' last chunks past its end, the next skips them
#: (:meth:`Joiner.read_ahead`)
RECORD_START = re.compile(rb"(?![^\n]*? \[\d+(?:-(?:[2-9]|[1-9]\d+)\]|\] #011))")
#: how far past the end of a piece of the log its messages' last chunks are looked for (and how far into the next
#: piece they are skipped): rsyslog, fed by a dozen busy backends, wrote up to 2,900 other lines (300 KB) between
#: two chunks of one message
READ_AHEAD = 1 << 20
_ESCAPED = re.compile(rb"#01[12]")
_SECONDARY = frozenset((b"DETAIL", b"HINT", b"CONTEXT", b"QUERY", b"STATEMENT", b"LOCATION"))


#: the whitespace write_syslog() cuts a long line at (isspace()), a tab aside: it starts a continuation line
_BLANKS = frozenset((b" ", b"\v", b"\f", b"\r"))
#: how a chunk after a message's first may start: a blank write_syslog() cut at, a continuation line's tab
_CONTINUED = frozenset((*_BLANKS, b"\t"))
_SPACE = re.compile(rb"[ \t\n\v\f\r]")
PG_SYSLOG_LIMIT = 900


def _in_word(chunk: bytes) -> bool:
    """Was ``chunk`` cut inside a word?  Such a chunk is 900 bytes (a few fewer when a multibyte character would
    have been cut), with no whitespace after its first byte for write_syslog() to cut at."""
    return len(chunk) >= PG_SYSLOG_LIMIT - 3 and _SPACE.search(chunk, 1) is None


def unescape(text: bytes) -> bytes:
    """rsyslog's escapes of a tab (``#011``) and a newline (``#012``) undone (all of them: see
    :meth:`Joiner.newlines` for the newlines a message may hold)."""
    if b"#01" not in text:
        return text
    return _ESCAPED.sub(lambda m: b"\t" if m[0] == b"#011" else b"\n", text)


def _has(prefix: str, escapes: str) -> bool:
    return re.search(r"%-?\d*[" + escapes + "]", prefix.replace("%%", "")) is not None


def synthesized(prefix: str) -> tuple[bool, bool]:
    """Whether the syslog header's time and pid must stand in for log_line_prefix's (it has no %m/%t/%n, no %p)."""
    return not _has(prefix, "mtn"), not _has(prefix, "p")


def effective_prefix(prefix: str) -> str:
    """The log_line_prefix of the lines :class:`Joiner` writes: ``prefix`` after the syslog header's time (as %t
    writes it, without a zone: :data:`upkeeper.logs.pglog.SYSLOG_TIME`) and pid (as [%p]) when it has none of its
    own."""
    need_time, need_pid = synthesized(prefix)
    return (pglog.SYSLOG_TIME + " " if need_time else "") + ("[%p] " if need_pid else "") + prefix


def compile_syslog_prefix(prefix: str) -> bytes:
    """:func:`upkeeper.logs.pglog.compile_prefix` of :func:`effective_prefix`, its errors naming ``prefix`` as written
    (an unknown escape in '%Z ' was said of '%t [%p] %Z ', a prefix the user never wrote)."""
    return pglog.compile_prefix(effective_prefix(prefix), shown=prefix)


@dataclass
class _Message:
    seq: bytes | None  # SEQ of [SEQ-N]; None for [N] (sequence numbers off, or a one-line [SEQ] message)
    chunk: int
    parts: list[bytes]
    time: bytes  # the header's time of its first line, as %t writes it
    offset: int  # where its first line starts in the file
    #: its last chunk may have been cut inside a word: as long as a chunk can be, with no whitespace to cut at
    in_word: bool = False
    last: int = 0  # where its last chunk's line starts in the file


class Joiner:
    """Turns the lines of a syslog file into the stderr lines of ``ident``'s messages (see the module's doc).

    ``feed`` takes whole lines (a buffer ending at a line end) at an offset of a file and returns the stderr text
    of the messages complete by then; a message waits until its backend's next message (or :meth:`flush`): only
    then is it known to have no more chunks.  ``native``: the plain lines are joined in C where the extension is
    built (:meth:`feed`; False: every line in Python, the same text)."""

    def __init__(self, log_line_prefix: str, ident: str, *, native: bool = True) -> None:
        self.ident = ident.encode()
        self.need_time, self.need_pid = synthesized(log_line_prefix)
        eff = effective_prefix(log_line_prefix)
        pglog.compile_prefix(eff)  # (PrefixError: said by the caller)
        # a line of a message (not a continuation line): the prefix and a severity, DETAIL, STATEMENT …
        # (write_syslog() may have cut the line after "DETAIL: ", its second space starting the next chunk)
        self.line_start = re.compile(rb"^" + pglog.compile_prefix(eff) + rb"(?P<lvl>" + pglog.LEVELS + rb"): ?(?: |$)")
        # a prefix starting with "[" (e.g. '[%p] ', '%q[%l] %u@%d ') is told from a bracket by what follows: the line
        # is a line start with the bracket, and not without it
        self.bracket_prefix = log_line_prefix.startswith(("[", "%q["))
        # '%q[%p] ', '%q[%p-%l] ', '%q[%l-%p] ' (%q prints nothing: a session's lines go on past it): their bracket
        # is also told from a chunk number by the pid the syslog line gives (what follows cannot tell when the
        # prefix ends there): (which of its numbers is the pid, whether it has two)
        self.pid_bracket: tuple[int, bool] | None = None
        if log_line_prefix.startswith(("%q[%p]", "%q[%p-")):
            self.pid_bracket = (1, log_line_prefix[5] == "-")
        elif re.match(r"%q\[%[a-zA-Z]-%p\]", log_line_prefix):
            self.pid_bracket = (2, True)
        #: the join of the plain lines in C (:meth:`_native_lines`), or None (not built, ``native=False``, or a
        #: prefix starting with "[" or "%q[", which only the Python tells from a bracket): every line in Python —
        #: but for a bracket of one number, '[%p] ', '%q[%l] ' …: the C join takes none but PostgreSQL's [SEQ-N],
        #: which such a bracket never looks like (nor does the Python take a [SEQ-N] for it)
        one = re.match(r"(?:%q)?\[%[pl]\] ", log_line_prefix) is not None
        self.native = _syslog_join if native and (one or not self.bracket_prefix) else None
        self.native_lines = 0  # lines the C join took
        self.pending: dict[bytes, _Message] = {}
        #: a [SEQ-N] was seen: syslog_sequence_numbers is on, and a [SEQ] is a whole message of one line
        self.seq_on = False
        #: a message cut into chunks was seen: syslog_split_messages is on, so no message holds a newline (its
        #: "#012" is text a client wrote, not an escaped newline)
        self.split = False
        self.out: list[bytes] = []
        self.first_offset = -1  # of the earliest message written into ``out``
        self.source = ""
        now = time.localtime()
        self.year: tuple[int, int] = (now.tm_year, now.tm_mon)  # (year, month) of the source's last write: years for its lines
        self._times: dict[bytes, bytes] = {}  # a header's time -> as %t writes it
        #: the piece read starts before this offset, after other pieces: a chunk there of a message begun before
        #: it is the piece before's (:meth:`read_ahead`), unless the backend started another message since
        self.skip_before = -1
        self.seen: set[bytes] = set()  # (those backends)
        self.skipped = 0  # lines of other idents
        self.last: tuple[bytes, bytes] | None = None  # (pid, message) of the last line of ``ident``
        self.idents: dict[bytes, int] = {}  # ... by ident (a few)

    # -- the header's time ------------------------------------------------------------------------------

    def set_source(self, source: str) -> None:
        """The file the next lines come from: its last write's year stands for the year traditional times lack
        (the year before for a month after that write's month: the lines were written before it)."""
        if source == self.source:
            return
        self.source = source
        self._times.clear()
        try:
            t = time.localtime(os.stat(source).st_mtime)
        except OSError:
            t = time.localtime()
        self.year = (t.tm_year, t.tm_mon)

    def _time(self, m: re.Match[bytes]) -> bytes:
        mon = m["mon"]
        if mon is None:
            return m["date"] + b" " + m["ihms"]
        month = _MONTHS.get(mon, 1)
        year = self.year[0] - (1 if month > self.year[1] else 0)
        return b"%d-%02d-%02d %s" % (year, month, int(m["day"]), m["hms"])

    # -- joining ---------------------------------------------------------------------------------------------

    def feed(self, buf: bytes, offset: int) -> bytes:
        """The stderr text of the messages ``buf`` completes (lines of no syslog form are handed on as they are)."""
        rx = line_rx(buf)
        n = len(buf)
        if self.native is None or rx is not LINE_RX:
            self._lines(buf, offset, rx, 0, n)
            return self.take()
        # the plain lines in C (the common case: each line is the ident's, one chunk per message or its chunks in
        # order), each line it does not take in Python; after 4 calls in a row that took no line, more lines at a
        # time (a file of a form it does not take)
        pos, idle = 0, 0
        while pos < n:
            pos, took = self._native_lines(buf, pos, offset)
            if pos >= n:
                break
            idle = 0 if took else idle + 1
            end = pos
            for _ in range(1 if idle < 4 else min(1 << (idle - 3), 256)):
                nl = buf.find(b"\n", end)
                end = n if nl < 0 else nl + 1
                if end >= n:
                    break
            while end < n and rx.match(buf, end) is None:  # (lines of no syslog form: one text, at its start)
                nl = buf.find(b"\n", end)
                end = n if nl < 0 else nl + 1
            self._lines(buf, offset, rx, pos, end)
            pos = end
        return self.take()

    def _native_lines(self, buf: bytes, pos: int, offset: int) -> tuple[int, bool]:
        """The lines from ``pos`` on that the C join takes (see upkeeper.logs._cut.syslog_join): where it stopped
        (a line it leaves to :meth:`_lines`), and whether it took any."""
        assert self.native is not None
        at, self.first_offset, skipped, split, pid, msg, took = self.native(
            buf, pos, offset, self.ident, self.need_time | self.need_pid << 1 | self.split << 2, self.skip_before,
            self.first_offset, MAX_PENDING, self._times, self.pending, self.seen, self.idents, self.out,
            self._native_emit, _Message)
        self.skipped += skipped
        self.split = bool(split)
        if pid is not None:
            assert msg is not None
            self.seq_on = True  # (a [SEQ-N])
            self.last = (pid, msg)
        self.native_lines += took
        return at, took > 0

    def _native_emit(self, pid: bytes, first_offset: int, split: int) -> int:
        """The C join's call for a waiting message of :attr:`pending` that a line ends."""
        self.first_offset = first_offset
        self.split = bool(split)
        self._emit(pid)
        return self.first_offset

    def _lines(self, buf: bytes, offset: int, rx: re.Pattern[bytes], start: int, end: int) -> None:
        """The lines of ``buf[start:end]`` (whole lines), each in Python."""
        pos = start
        ident = self.ident
        times = self._times
        last = self.last  # (pid, message) of the last line of ``ident``
        for m in rx.finditer(buf, start, end):
            if m.start() > pos:
                self._foreign_text(buf[pos:m.start()], offset + pos)
            pos = m.end() + 1
            if m["ident"] != ident:
                self.skipped += 1
                if len(self.idents) < 20 or m["ident"] in self.idents:
                    self.idents[m["ident"]] = self.idents.get(m["ident"], 0) + 1
                continue
            ts = times.get(m["tt"])
            if ts is None:
                if len(times) > 100_000:
                    times.clear()
                ts = times[m["tt"]] = self._time(m)
            pid, msg = m["pid"] or b"0", m["msg"]
            if msg[:1] in b" m" and (rep := _REPEATED.match(msg)) and msg.endswith(b"]") and last is not None \
                    and last[0] == pid and last[1].startswith(msg[rep.end():-1].removeprefix(b" ")):
                # the backend's last message (the text in brackets may be cut short), so many more times
                for _ in range(int(rep[1])):
                    self.line(pid, ts, last[1], offset + m.start(), m[0])
                continue
            last = (pid, msg)
            self.line(pid, ts, msg, offset + m.start(), m[0])
        self.last = last
        if pos < end:
            self._foreign_text(buf[pos:end], offset + pos)

    def _foreign_text(self, text: bytes, offset: int) -> None:
        """Lines of no program's form: a syslog daemon's own without a tag ("last message repeated 3 times") and
        journalctl's markers (``-- Boot … --``) are skipped as other programs' are; lines that are no syslog lines at
        all are handed on as they are (the parser counts them unparsed)."""
        keep = []
        for ln in text.strip(b"\n").split(b"\n"):
            if _TIME_HOST.match(ln):
                self.skipped += 1
                self.idents[b"(no tag)"] = self.idents.get(b"(no tag)", 0) + 1
            elif _JOURNAL_MARK.fullmatch(ln):
                self.skipped += 1
                self.idents[b"(journalctl)"] = self.idents.get(b"(journalctl)", 0) + 1
            elif ln:
                keep.append(ln)
        if keep:
            self._write(b"\n".join(keep) + b"\n", offset)

    def _whole(self, pid: bytes, cur: _Message | None, text: bytes, ts: bytes, offset: int, early: bool) -> None:
        """A message of one line (no chunks follow): the backend's waiting message first, then this one."""
        if cur is not None:
            self._emit(pid)
        self._emit_one(_Message(None, 0, [text], ts, offset), pid)
        if early:
            self.seen.add(pid)

    def line(self, pid: bytes, ts: bytes, body: bytes, offset: int, raw: bytes = b"") -> None:
        """One syslog line of ``ident`` (``body``: its message, escapes not undone; ``raw``: the whole line)."""
        if b"#011" in body:
            body = body.replace(b"#011", b"\t")
        early = offset < self.skip_before
        b = self._bracket(body, pid)
        cur = self.pending.get(pid)
        if b is None:  # a whole message (syslog_sequence_numbers = off)
            self._whole(pid, cur, body, ts, offset, early)
            return
        text = body[b.end():]
        n = int(b[2] or b[1])
        seq = b[1] if b[2] is not None else None
        if seq is not None:
            self.seq_on = True
        elif self.seq_on:  # [SEQ]: a whole message
            self._whole(pid, cur, text, ts, offset, early)
            return
        if cur is not None:
            if self._continues(cur, seq, n, text):
                self._append(cur, text, n, offset)
                return
            self._emit(pid)
        if n > 1 and early and pid not in self.seen and (seq is not None or not self._starts(text, primary=True)):
            return  # a chunk of a message begun before this piece: the piece before read it whole (read_ahead)
        if n > 1 and (seq is not None or text[:1] in _CONTINUED or self._starts(text, secondary=True)):
            # a chunk after a message's first whose first chunks are not here (the syslog daemon dropped one, or
            # the read starts after them): handed on as the syslog line it is, counted unparsed — as a line of its
            # own it would be taken for the continuation of whatever message came before, another backend's
            self._write((raw or body) + b"\n", offset)
            return
        if early:
            self.seen.add(pid)
        self.pending[pid] = _Message(seq, n, [text], ts, offset, _in_word(text), offset)
        if len(self.pending) > MAX_PENDING:  # the backends that logged nothing for longest: their messages are whole
            for old in list(itertools.islice(self.pending, len(self.pending) - MAX_PENDING // 2)):
                self._emit(old)

    def _bracket(self, body: bytes, pid: bytes) -> re.Match[bytes] | None:
        """PostgreSQL's [SEQ-N], [SEQ] or [N] at the start of ``body`` (a line of backend ``pid``), if it has one."""
        b = _BRACKET.match(body)
        if b is None or not self.bracket_prefix or not self._starts(body):
            return b  # (the prefix's bracket starts a line of a message)
        if not self._starts(body[b.end():]):
            return None  # the prefix's bracket ('[%p] ', '[%l-1] '), not PostgreSQL's
        if self.pid_bracket is not None:
            k, pair = self.pid_bracket
            if b[k] == pid and (b[2] is not None) == pair:
                # the prefix's [PID], [PID-N] or [N-PID]: PostgreSQL's [SEQ], [SEQ-N] whose number equals the pid is
                # followed by it (its chunks after the first, by none: no line start)
                nb = _BRACKET.match(body, b.end())
                if nb is None or nb[k] != pid or (nb[2] is not None) != pair:
                    return None
        return b

    def _continues(self, cur: _Message, seq: bytes | None, n: int, text: bytes) -> bool:
        """Is chunk ``[seq-n] text`` (``[n] text``: seq None) the next of ``cur``, its backend's waiting message?"""
        if seq is not None:
            return cur.seq == seq and n == cur.chunk + 1
        # [N] of sequence numbers off, unless it is the next [SEQ] (a new message: sequence numbers on, none of its
        # messages cut yet); a chunk cut at a blank or inside a word continues the line whatever it says
        return cur.seq is None and n == cur.chunk + 1 and (
            text[:1] in _CONTINUED or cur.in_word or not self._starts(text, primary=True))

    def read_ahead(self, buf: bytes, pids: set[bytes]) -> None:
        """The lines after the end of the piece read (``buf``: whole lines): the next chunks of the waiting
        messages of ``pids`` — other backends' lines came between a message's chunks, and the piece ended among
        them — until each backend's message is whole (its next line is no chunk of it).  The piece after skips
        those chunks (see :attr:`skip_before`)."""
        for m in line_rx(buf).finditer(buf):
            pid = m["pid"] or b"0"
            if pid not in pids or m["ident"] != self.ident:
                continue
            cur = self.pending.get(pid)
            if cur is not None:
                body = m["msg"].replace(b"#011", b"\t")
                b = self._bracket(body, pid)
                if b is not None and (b[2] is not None or not self.seq_on):
                    text = body[b.end():]
                    n = int(b[2] or b[1])
                    if self._continues(cur, b[1] if b[2] is not None else None, n, text):
                        self._append(cur, text, n, cur.last)
                        continue
                self._emit(pid)
            pids.discard(pid)
            if not pids:
                return

    def newlines(self, text: bytes) -> bytes:
        """``text`` (a whole message, not cut into chunks) with rsyslog's ``#012`` turned into the newlines it
        stands for: where the server sends a message whole (syslog_split_messages = off) its newlines are escaped
        so.  Not in a log where messages are cut (no newline is sent then), and never before a line that starts
        a message (the next line of a message is a continuation, tab first, or its DETAIL, HINT, CONTEXT, QUERY,
        STATEMENT or LOCATION): "#012" written by a client (a statement, a user name in a failed login's
        message) must not forge a message of its own, an error or a statement with a duration."""
        if b"#012" not in text or self.split:
            return text
        parts = text.split(b"#012")
        out = [parts[0]]
        for part in parts[1:]:
            nl = part == b"" or part[:1] == b"\t" or self._starts(part, secondary=True)
            out.append((b"\n" if nl else b"#012") + part)
        return b"".join(out)

    def _starts(self, text: bytes, primary: bool = False, secondary: bool = False) -> bool:
        """``text`` starts a line of a message (``primary``: a message itself, not its DETAIL, STATEMENT …;
        ``secondary``: one of those)."""
        # (its first line, to the first escaped newline of a message sent whole: the prefix's text fields after %q,
        # absent in a process of no session, would reach into the next line for a severity — %u@%d, its '@' a
        # DETAIL's, to the DETAIL line's — unless that line starts none: then a "#012" of a prefix's value, a
        # client's application_name, was cut; and the time as it is written, without a zone: the prefix's has none
        # for a first word to be taken for, 'app@shop' of 'app@shop LOG:  …' — '%q[%p] %u@%d ' without its bracket)
        synth = self._synth(b"1970-01-01 00:00:00", b"1")
        nl = text.find(b"#012")
        m = self.line_start.match(synth + (text if nl < 0 else text[:nl]))
        if m is None and nl >= 0:
            m = self.line_start.match(synth + text)
        if m is None:
            return False
        return not (primary and m["lvl"] in _SECONDARY) and not (secondary and m["lvl"] not in _SECONDARY)

    def _append(self, cur: _Message, text: bytes, n: int, offset: int) -> None:
        """Add chunk ``text`` to ``cur``: the rest of a line write_syslog() cut at 900 bytes (at a whitespace, which
        starts this chunk; or inside a word, when the last chunk had no whitespace to cut at), else the next line
        (cut at its newline: a continuation line's tab, or the prefix of a DETAIL, STATEMENT … line).  After a
        chunk that may have been cut inside a word, only a DETAIL, STATEMENT … line is taken for a new line: a
        message has no second LOG or ERROR line, and the text after such a cut is a client's to choose."""
        self.split = True
        cur.chunk = n
        cur.last = offset
        first = text[:1]
        if first in _BLANKS or (first != b"\t" and cur.in_word and not self._starts(text, secondary=True)):
            cur.parts.append(text)
        else:
            cur.parts.append(b"\n" + text)
        cur.in_word = _in_word(text)

    def _synth(self, ts: bytes, pid: bytes) -> bytes:
        return (ts + b" " if self.need_time else b"") + (b"[" + pid + b"] " if self.need_pid else b"")

    def _emit(self, pid: bytes) -> None:
        self._emit_one(self.pending.pop(pid), pid)

    def _emit_one(self, msg: _Message, pid: bytes) -> None:
        # (a message sent whole: its newlines, with syslog_split_messages = off, and its last one, as #012)
        text = (self.newlines(msg.parts[0]) if len(msg.parts) == 1 else b"".join(msg.parts)).rstrip(b"\n")
        synth = self._synth(msg.time, pid)
        if synth:
            text = (synth + text if b"\n" not in text else
                    b"\n".join(ln if ln[:1] == b"\t" else synth + ln for ln in text.split(b"\n")))
        self._write(text + b"\n", msg.offset)

    def _write(self, text: bytes, offset: int) -> None:
        if self.first_offset < 0:
            self.first_offset = offset
        self.out.append(text)

    def flush(self) -> bytes:
        """Every message still waiting, as complete (the end of the read)."""
        for pid in list(self.pending):
            self._emit(pid)
        return self.take()

    def take(self) -> bytes:
        out = b"".join(self.out)
        self.out = []
        return out


@dataclass(frozen=True)
class PgSyslogOptions:
    log_line_prefix: str = ""
    ident: str = "postgres"
    samples: int = 5


class PgSyslogAccumulator:
    """:class:`upkeeper.logs.pglog.PgAccumulator` fed the stderr lines a :class:`Joiner` makes of syslog lines (for
    :func:`upkeeper.logs.parallel.scan`; its partial is pglog's)."""

    def __init__(self, opts: PgSyslogOptions) -> None:
        self.inner = pglog.PgAccumulator(pglog.PgScanOptions(log_line_prefix=effective_prefix(opts.log_line_prefix),
                                                             samples=opts.samples))
        self.joiner = Joiner(opts.log_line_prefix, opts.ident)
        self._unit_end: tuple[str, int | None] | None = None
        self._last: tuple[str, int] = ("", 0)

    def sizes(self) -> dict[str, int]:
        return {**self.inner.sizes(), "syslog messages waiting": len(self.joiner.pending)}

    def start_unit(self, source: str, start: int, end: int | None) -> None:
        if self._unit_end != (source, start):  # not the rest of the last unit: its waiting messages are whole
            self._finish_unit()
            # (a piece after another: the chunks at its start of messages begun before are the other's)
            self.joiner.skip_before = start + READ_AHEAD if start > 0 else -1
            self.joiner.seen.clear()
        self._unit_end = (source, end)
        self.inner.start_unit(source, start, end)

    def _finish_unit(self) -> None:
        """The waiting messages of the piece read are whole — once their chunks after its end are read."""
        source, end = self._unit_end or ("", None)
        if end is not None and self.joiner.pending:
            pids = {pid for pid, msg in self.joiner.pending.items() if msg.last >= end - READ_AHEAD}
            if pids:
                try:
                    with open(source, "rb") as fh:
                        fh.seek(end)
                        data = fh.read(READ_AHEAD)
                except OSError:
                    data = b""
                self.joiner.read_ahead(data[:data.rfind(b"\n") + 1], pids)
        self._unit_end = None
        self._flush()

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        j = self.joiner
        j.set_source(source)
        out = j.feed(buf, offset)
        self._last = (source, offset)
        self._hand_on(out, source, offset, len(buf))

    def _hand_on(self, out: bytes, source: str, offset: int, read: int) -> None:
        j = self.joiner
        at = j.first_offset if j.first_offset >= 0 else offset
        j.first_offset = -1
        p = self.inner.p
        before = p.bytes_read
        if out:
            self.inner.feed(out, source, at)
        p.bytes_read = before + read  # the file's bytes, not the text made of them

    def _flush(self) -> None:
        out = self.joiner.flush()
        if out:
            self._hand_on(out, *self._last, 0)

    def partial(self) -> pglog.PgPartial:
        self._finish_unit()
        p = self.inner.partial()
        p.syslog_skipped += self.joiner.skipped
        for k, v in self.joiner.idents.items():
            p.syslog_idents[k.decode("utf-8", "replace")] += v
        return p


def speculation(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[Any, bytes, list[Any]] | None:
    """The scan of a ``logs.postgres`` run of this format, for a helper that reads ahead (see
    :func:`upkeeper.logs.pgplan.speculation`)."""
    from upkeeper.logs import pgplan

    return pgplan.speculation(__name__, options, target)


def make_accumulator(opts: PgSyslogOptions) -> PgSyslogAccumulator:
    return PgSyslogAccumulator(opts)


def merge(parts: list[Any]) -> pglog.PgPartial:
    return pglog.merge(parts)


#: the lines at the end of a live syslog file (of every program: /var/log/messages is written every second by
#: others while PostgreSQL may log a line an hour) among which a message's last chunk may be followed by more: a
#: backend sends its message's chunks in one loop of syslog() calls, so only the lines other processes logged
#: meanwhile come between (or the daemon's write ended between them) …
TAIL_LINES = 200
#: … or written in the file's last seconds (by its lines' times): a busy server's backend, descheduled between two
#: syslog() calls, had rsyslogd write up to 2,900 other lines between two chunks of its message
TAIL_SECONDS = 2


def complete_end(path: str, start: int, end: int, log_line_prefix: str, ident: str, *, quiet: float = 5.0,
                 window: int = 1 << 20) -> int:
    """Where to stop reading [start, end) of a live syslog file so that no message is read without its last chunks:
    ``end``, unless the file was written less than ``quiet`` seconds ago — then the start of the earliest message
    whose last chunk is among the file's last :data:`TAIL_LINES` lines or :data:`TAIL_SECONDS` seconds and its
    backend logged nothing after it (more chunks may come).  The next run reads from there."""
    try:
        st = os.stat(path)
    except OSError:
        return end
    if time.time() - st.st_mtime > quiet or end <= start:
        return end
    at = max(start, end - window)
    with open(path, "rb") as fh:
        fh.seek(at)
        data = fh.read(end - at)
    if at > start:  # from a line start
        nl = data.find(b"\n")
        if nl < 0:
            return end
        data, at = data[nl + 1:], at + nl + 1
    j = Joiner(log_line_prefix, ident)
    j.set_source(path)
    last: dict[bytes, tuple[int, bytes]] = {}  # pid -> its last line's number and time
    n, newest = 0, b""
    for n, m in enumerate(line_rx(data).finditer(data), 1):  # (every program's lines: see TAIL_LINES)
        newest = m["tt"]
        if m["ident"] != j.ident:
            continue
        pid = m["pid"] or b"0"
        j.line(pid, b"", m["msg"], at + m.start())
        last[pid] = (n, m["tt"])
    if not newest:
        return end

    @functools.cache
    def seconds(tt: bytes) -> float:  # (a line's time as UTC: they are compared with each other only)
        m = LINE_RX.match(tt + b" h p: ")
        try:
            return calendar.timegm(time.strptime(j._time(m).decode(), "%Y-%m-%d %H:%M:%S")) if m else math.nan
        except ValueError:  # ("Jan 45 99:99:99": no time, no message held for it)
            return math.nan

    recent = seconds(newest) - TAIL_SECONDS
    held = [msg.offset for pid, msg in j.pending.items()
            if n - last[pid][0] < TAIL_LINES or seconds(last[pid][1]) >= recent]
    return min(held, default=end)
