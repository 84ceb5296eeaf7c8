"""GoAccess 1.7 semantics: how it tokenizes a line, validates it and keys its panels.

upkeeper's access-log numbers (total and valid requests, unique visitors, hits
per status code, the requested-files panel) are defined to be GoAccess's, so
this module ports the parts of GoAccess's ``src/parser.c`` that decide them:

* ``parse_string``/``parse_format``: a format is walked character by character;
  a specifier takes the text up to the next format character (its delimiter),
  literal characters are *skipped without being compared*, ``%^`` skips up to
  the next format character, and a line that ends early is still valid if the
  host, date and request were seen.  Every token is whitespace-trimmed.
* validation: ``%h`` must be an IPv4/IPv6 address (``inet_pton``), ``%d``/``%t``
  must parse with ``strptime``, ``%s`` must be an integer in 100..599.  Any
  failure makes the line *invalid* ("failed" in GoAccess's summary).
* ``parse_req``: the method is a case-insensitive *prefix* match against a fixed
  list (``GETX /a`` is a GET of ``/a``); the protocol is the text after the
  last space and must start with HTTP/1.0, HTTP/1.1, HTTP/2 or HTTP/3; a
  request without a valid protocol becomes ``-``; the URL is percent-decoded
  (``+`` is kept), cut at a decoded NUL and trimmed.  The query string stays.
* unique visitors: one per (date, IP, decoded user agent), counting only
  requests whose status does not start with ``4`` (``--4xx-to-unique-count``
  is off by default).
* the requested-files panel keys on (URL, method, protocol) and excludes
  404s and static files (the URL ends with a listed extension and is longer
  than it — case-insensitive, so ``/a.css?v=1`` is *not* static).

Verified against the ``goaccess`` 1.7 binary from Debian (see
``tests/logs/test_goaccess_exact.py``).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

#: GoAccess's methods (``extract_method``), matched case-insensitively as prefixes, in this order.
METHODS: tuple[bytes, ...] = (
    b"OPTIONS", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"TRACE", b"CONNECT", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"VERSION-CONTROL",
    b"REPORT", b"CHECKOUT", b"CHECKIN", b"UNCHECKOUT", b"MKWORKSPACE", b"UPDATE", b"LABEL", b"MERGE",
    b"BASELINE-CONTROL", b"MKACTIVITY", b"ORDERPATCH",
)  # fmt: skip
#: GoAccess's protocols (``extract_protocol``), case-insensitive prefixes; the canonical name is kept.
PROTOCOLS: tuple[bytes, ...] = (b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2", b"HTTP/3")

#: Static-file extensions of GoAccess 1.7's goaccess.conf (Debian's /etc/goaccess/goaccess.conf).
STATIC_EXTENSIONS: tuple[str, ...] = (
    ".css", ".js", ".jpg", ".png", ".gif", ".ico", ".jpeg", ".pdf", ".csv", ".mpeg", ".mpg", ".swf",
    ".woff", ".woff2", ".xls", ".xlsx", ".doc", ".docx", ".ppt", ".pptx", ".txt", ".zip", ".ogg", ".mp3",
    ".mp4", ".exe", ".iso", ".gz", ".rar", ".svg", ".bmp", ".tar", ".tgz", ".tiff", ".tif", ".ttf",
    ".flv", ".dmg", ".xz", ".zst",
)  # fmt: skip

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_FULL = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
               "october", "november", "december")
MONTH_NUMBER: dict[bytes, int] = {}
for _i, (_a, _f) in enumerate(zip(_MONTHS, _MONTH_FULL, strict=True), start=1):
    MONTH_NUMBER[_a.encode()] = _i
    MONTH_NUMBER[_f.encode()] = _i

WS = b" \t\n\v\f\r"


def trim(b: bytes) -> bytes:
    """C ``isspace`` trim on both ends (GoAccess ``trim_str``)."""
    return b.strip(WS)


def decode_url(b: bytes) -> bytes | None:
    """GoAccess ``decode_url``: %XX-decode (``+`` kept), cut at NUL, drop CR/LF, trim.  ``None`` for empty."""
    if not b:
        return None
    out = unquote_to_bytes(b) if b"%" in b else b
    if b"\0" in out:
        out = out.split(b"\0", 1)[0]
    if b"\n" in out or b"\r" in out:
        out = out.replace(b"\n", b"").replace(b"\r", b"")
    return trim(out)


def extract_method(tok: bytes) -> bytes | None:
    up = tok[:16].upper()
    for m in METHODS:
        if up.startswith(m):
            return m
    return None


def extract_protocol(tok: bytes) -> bytes | None:
    up = tok[:8].upper()
    for p in PROTOCOLS:
        if up.startswith(p):
            return p
    return None


@dataclass(frozen=True, slots=True)
class Request:
    """A request as GoAccess keys it: the decoded URL plus method and protocol (``None`` if absent)."""

    url: bytes
    method: bytes | None
    protocol: bytes | None

    @property
    def key(self) -> tuple[bytes, bytes | None, bytes | None]:
        return (self.url, self.method, self.protocol)


DASH_REQUEST = Request(b"-", None, None)


def parse_request(raw: bytes) -> Request:
    """GoAccess ``parse_req`` on the (trimmed) ``%r`` token."""
    line = trim(raw)
    meth = extract_method(line)
    if meth is None:
        request = line
        method = protocol = None
    else:
        req = line[len(meth):]
        sp = req.rfind(b" ")
        if sp < 0:
            return DASH_REQUEST
        proto = extract_protocol(req[sp + 1:])
        if proto is None:
            return DASH_REQUEST
        if sp <= 0:  # rlen = (sp + 1) - 1
            return DASH_REQUEST
        request = req[1:sp + 1]
        method, protocol = meth, proto
    dreq = decode_url(request)
    if not dreq:  # None (empty request) or empty after decoding: keep the raw text
        return Request(request, method, protocol)
    return Request(dreq, method, protocol)


def is_static(url: bytes, extensions: tuple[bytes, ...]) -> bool:
    """GoAccess ``verify_static_content``: ends with an extension (any case) and is longer than it."""
    low = url[-16:].lower()
    n = len(url)
    return any(n > len(e) and low.endswith(e) for e in extensions)


class StaticMatcher:
    """:func:`is_static` for one extension list, fast when every extension is ``.word``."""

    def __init__(self, extensions: tuple[bytes, ...]) -> None:
        self.extensions = tuple(e.lower() for e in extensions)
        simple = all(e.startswith(b".") and e.count(b".") == 1 for e in self.extensions)
        self.simple = frozenset(self.extensions) if simple else None

    def __call__(self, url: bytes) -> bool:
        if self.simple is None:
            return is_static(url, self.extensions)
        dot = url.rfind(b".")
        return dot > 0 and url[dot:].lower() in self.simple


# A request line GoAccess would take apart without surprises: a listed method in capitals, one
# space, a URL without '%' or control characters, one space, a canonical protocol.
_CANON_REQ = re.compile(
    rb"(?m)^(?:(GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS) ([^ %\n\r\t\x00\x0b\x0c]+) "
    rb"(HTTP/1\.[01]|HTTP/2(?:\.0)?|HTTP/3(?:\.0)?)|.*)$")


RequestKey = tuple[bytes, bytes | None, bytes | None]


def parse_requests(raws: list[bytes]) -> list[RequestKey]:
    """The (URL, method, protocol) keys of :func:`parse_request` for many request lines at once
    (one regex pass for the common shape, the full function for the rest)."""
    if not raws:
        return []
    buf = b"\n".join(raws)  # request tokens never contain a newline (lines are split on it)
    protos = {b"HTTP/1.1": b"HTTP/1.1", b"HTTP/1.0": b"HTTP/1.0", b"HTTP/2.0": b"HTTP/2", b"HTTP/2": b"HTTP/2",
              b"HTTP/3.0": b"HTTP/3", b"HTTP/3": b"HTTP/3"}
    return [(url, meth, protos[proto]) if meth else parse_request(raw).key
            for raw, (meth, url, proto) in zip(raws, _CANON_REQ.findall(buf), strict=True)]


def valid_ip(b: bytes) -> bool:
    """``inet_pton`` accepts it as IPv4 or IPv6 (leading zeros and zone ids are rejected)."""
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        return False
    if "\0" in s:
        return False
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, s)
            return True
        except OSError:
            continue
    return False


_DATE_DBY = re.compile(rb"\s*(\d{1,2})/([A-Za-z]+)/\s*(\d{1,4})")
_DATE_YMD = re.compile(rb"\s*(\d{1,4})-\s*(\d{1,2})-\s*(\d{1,2})")
_TIME_T = re.compile(rb"\s*(\d{1,2}):\s*(\d{1,2}):\s*(\d{1,2})")
#: glibc ``%z``: blanks, then ``Z`` or a sign and two digits, optionally two more (minutes 0-59) after
#: an optional colon: ``-05:00``, ``+0530``, ``+05``
_TZ = rb"\s*(?:Z|[+-]\d\d(?::?[0-5]\d)?)"
_TIME_TZ = re.compile(rb"\s*(\d{1,2}):\s*(\d{1,2}):\s*(\d{1,2})" + _TZ)
_OFFSET = re.compile(_TZ)


def parse_date(tok: bytes, fmt: str = "%d/%b/%Y") -> int | None:
    """glibc ``strptime`` for the date formats nginx writes; returns YYYYMMDD (GoAccess's numeric date)."""
    if fmt == "%d/%b/%Y":
        m = _DATE_DBY.fullmatch(tok)
        if not m:
            return None
        d, mon, y = int(m.group(1)), MONTH_NUMBER.get(m.group(2).lower()), int(m.group(3))
    elif fmt == "%Y-%m-%d":
        m = _DATE_YMD.fullmatch(tok)
        if not m:
            return None
        y, mon, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not 1 <= mon <= 12:
            return None
    else:  # pragma: no cover - formats are produced by nginx_format only
        raise ValueError(f"unsupported date format {fmt!r}")
    if mon is None or not 1 <= d <= 31:
        return None
    return y * 10000 + mon * 100 + d


def parse_time(tok: bytes, fmt: str = "%T") -> tuple[int, int, int] | None:
    """glibc ``strptime(%T)``: H 0-23, M 0-59, S 0-61; with ``%T%z`` (``$time_iso8601``) a UTC offset
    must follow, which is checked and not applied (GoAccess keeps the clock time as written)."""
    if fmt == "%T":
        m = _TIME_T.fullmatch(tok)
    elif fmt == "%T%z":
        m = _TIME_TZ.fullmatch(tok)
    else:  # pragma: no cover - formats are produced by nginx_format only
        raise ValueError(f"unsupported time format {fmt!r}")
    if not m:
        return None
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if h > 23 or mi > 59 or s > 61:
        return None
    return (h, mi, s)


_STATUS = re.compile(rb"[+-]?\d+")
_ULL = re.compile(rb"[+-]?\d+")


_EPOCH = re.compile(rb"\d+")
TIME_T_BITS = 64


def parse_epoch(tok: bytes) -> tuple[int, tuple[int, int, int]] | None:
    """glibc ``strptime(%s)``, which GoAccess's ``%x`` uses with ``--date-format=%s --time-format=%s``:
    digits only (no sign, no blank), seconds since 1970 in the local time zone (``TZ``, as
    ``localtime_r``; the value wraps as C's ``time_t`` does).  Returns (YYYYMMDD, (H, M, S))."""
    if not _EPOCH.fullmatch(tok):
        return None
    v = int(tok) % (1 << TIME_T_BITS)
    if v >= 1 << (TIME_T_BITS - 1):
        v -= 1 << TIME_T_BITS
    try:
        t = time.localtime(v)
    except (OverflowError, OSError, ValueError):  # beyond what localtime_r can express
        return None
    return t.tm_year * 10000 + t.tm_mon * 100 + t.tm_mday, (t.tm_hour, t.tm_min, t.tm_sec)


def valid_offset(tok: bytes) -> bool:
    """glibc ``strptime(%z)`` takes the whole of ``tok``."""
    return bool(_OFFSET.fullmatch(tok))


def valid_status(tok: bytes) -> bool:
    """``strtol`` consumes the whole token and the value is within 100..599."""
    return bool(_STATUS.fullmatch(tok)) and 100 <= int(tok) <= 599


def status_code(raw: bytes | None) -> int | None:
    """The status as a number, as GoAccess keys its status panel (``strtol``: ``+503`` and ``0503`` are
    503); None for a line without one."""
    return int(raw) if raw is not None and valid_status(raw) else None


ULL_MAX = (1 << 64) - 1


def parse_size(tok: bytes) -> int:
    """``strtoull`` of the whole (trimmed) token, else 0 (``-`` counts as 0 bytes).

    As in C, a leading ``-`` negates modulo 2**64 (GoAccess 1.7 counts ``-5`` as 2**64 - 5) and a
    value beyond 2**64 - 1 (``ERANGE``) counts as 0 — which the parsers do not let happen silently:
    such a line is invalid (:func:`size_out_of_range`).
    """
    tok = trim(tok)
    if not _ULL.fullmatch(tok):
        return 0
    neg = tok[:1] == b"-"
    v = int(tok.lstrip(b"+-"))
    if v > ULL_MAX:
        return 0
    return (-v) & ULL_MAX if neg else v


def size_out_of_range(tok: bytes) -> bool:
    """Whether a size token is a number beyond 2**64 - 1: GoAccess 1.7 counts its request as valid with 0
    bytes, dropping the number silently; upkeeper counts the line as invalid, with a sample, instead."""
    tok = trim(tok)
    return len(tok) > 19 and _ULL.fullmatch(tok) is not None and int(tok.lstrip(b"+-")) > ULL_MAX


def parse_seconds(tok: bytes | None) -> float | None:
    """A time in seconds (``$request_time``); ``None`` for ``-``, empty or garbage (no latency sample)."""
    if not tok:
        return None
    try:
        v = float(tok)
    except ValueError:
        return None
    if v != v or v < 0 or v == float("inf"):
        return None
    return v


def normalize_agent(raw: bytes) -> bytes:
    """GoAccess ``%u``: empty → ``-``, else percent-decoded and trimmed (may become empty)."""
    t = trim(raw)
    if not t:
        return b"-"
    return decode_url(t) or b""


def djb2(b: bytes) -> int:
    """GoAccess 1.7's agent hash (``djb2``, 32 bits): a unique visitor is (date, IP, djb2(agent))."""
    h = 5381
    for c in b:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def normalize_referer(raw: bytes) -> bytes:
    t = trim(raw)
    return t if t else b"-"


# --------------------------------------------------------------------------------------------
# The line tokenizer (``parse_format``), used for every line the fast scanner does not take.
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ParsedLine:
    host: bytes | None = None
    date: int | None = None
    time: tuple[int, int, int] | None = None
    request: bytes | None = None  # the trimmed %r token (or METHOD URL PROTOCOL built from %m %U %H)
    method: bytes | None = None
    url: bytes | None = None
    protocol: bytes | None = None
    status: bytes | None = None
    size: int = 0
    referer: bytes = b"-"
    agent: bytes | None = None  # raw trimmed token
    rt: bytes | None = None  # raw %T token
    urt: bytes | None = None  # raw upstream time token (upkeeper extension, letter 'P')
    vhost: bytes | None = None
    xff: bytes | None = None  # raw passed-on client, e.g. $http_x_forwarded_for (upkeeper extension, letter 'X')


class LineError(ValueError):
    """A line GoAccess would count as invalid (``failed_requests``); ``kind`` groups the reasons."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind or message


#: nginx's list of upstream values: at least two blank-free values separated by ", " or " : "
_VALUE_LIST = re.compile(rb"[^ \n]+(?:(?:, | : )[^ \n]+)+")
_VALUE_LIST_COMMAS = re.compile(rb"[^ \n]+(?:, [^ \n]+)+")


#: the LineError kind of each code :func:`upkeeper.logs._cut.line_faults` gives (``%c``: the specifier's letter); codes
#: 0 (not a line: empty or a ``#`` comment) and 1 (the parser reads it) are none
FAULT_KINDS: dict[int, str] = {2: "line ends before %{}", 3: "invalid %{}", 4: "starts with NUL", 5: "format",
                               6: "no client address", 7: "no date", 8: "no request", 9: "%b out of range",
                               10: "empty %{}"}
_DATE_KINDS = {"%d/%b/%Y": 1, "%Y-%m-%d": 2}
_TIME_KINDS = {"%T": 1, "%T%z": 2}


def fault_kind(code: int, letter: int) -> str:
    """The LineError kind of a :func:`upkeeper.logs._cut.line_faults` code (2 and more) and letter."""
    return FAULT_KINDS[code].format(chr(letter))


class GoAccessLineParser:
    """GoAccess 1.7's ``parse_format`` for one ``--log-format``, with its date and time formats.

    Supported specifiers: ``%h %d %t %x %r %m %U %H %s %b %R %u %T %D %L %v %e %^`` and the upkeeper
    extensions ``%P`` (``$upstream_response_time``), ``%X`` (``$http_x_forwarded_for`` or another passed-on client) and ``%Y``
    (another upstream variable, skipped), which GoAccess would skip with ``%^``: their value may be a list
    ("0.800, 0.100", "0.004 : 0.010", one per upstream server contacted; "203.0.113.7, 10.0.0.2"), read
    as one value even where the delimiter is a blank.
    """

    def __init__(self, log_format: str, date_format: str = "%d/%b/%Y", time_format: str = "%T") -> None:
        self.fmt = log_format.encode()  # walked byte by byte, as GoAccess walks the UTF-8 nginx writes
        self.date_format = date_format
        self.time_format = time_format
        self.date_tokens = date_format.count(" ") + 1

    def faults(self) -> Callable[[list[bytes]], tuple[bytes, list[tuple[int, int]]]] | None:
        """:func:`upkeeper.logs._cut.line_faults` for this format: why each of a list of lines (each read with its
        newline) fails :meth:`parse`, where that is sure (a byte a line: 0 not a line, 1 the parser's, else 2 + the
        index of its (code of :data:`FAULT_KINDS`, the specifier's letter) in the list given with them); None where
        the C extension is not built."""
        try:
            from upkeeper.logs._cut import line_faults
        except ImportError:  # (built without a C compiler: every line goes to parse, as it always did)
            return None
        args = (self.fmt, _DATE_KINDS.get(self.date_format, 0), _TIME_KINDS.get(self.time_format, 0),
                self.date_tokens)
        return lambda lines: line_faults(lines, *args)

    def parse(self, line: bytes) -> ParsedLine:
        """Parse one line *including* its trailing newline, if it has one (as ``fgets`` returns it).

        GoAccess 1.7 stops successfully when the input reaches the newline, fails when a specifier
        starts at the very end of a line without newline, and skips literal characters blindly.
        """
        if b"\0" in line:
            line = line.split(b"\0", 1)[0]
            if not line:  # GoAccess 1.7 skips it as an empty line, the request after the NULs with it
                raise LineError("the line starts with NUL bytes (the padding a crash leaves in a log file)",
                                "starts with NUL")
        s = line
        n = len(s)
        if n == 0:
            raise LineError("empty line", "empty")
        item = ParsedLine()
        fmt = self.fmt
        pos = 0
        perc = 0
        i = 0
        flen = len(fmt)
        while i < flen:
            ch = fmt[i]
            if ch == 0x25:  # %
                perc += 1
                i += 1
                continue
            if pos < n and s[pos] == 0x0A:
                break  # reached the newline: the rest of the format is optional
            if perc:
                if ch in WS:
                    raise LineError("whitespace after % in the format", "format")
                if pos >= n:
                    raise LineError(f"Token for '%{chr(ch)}' specifier is NULL.", f"line ends before %{chr(ch)}")
                delim = fmt[i + 1:i + 2]
                pos = self._specifier(item, s, pos, ch, delim, fmt[i + 1:i + 4])
                perc = 0
            else:
                pos += 1  # a literal: skipped without comparing
            i += 1
        if item.host is None:
            raise LineError("IPv4/6 is required.", "no client address")
        if item.date is None:
            raise LineError("A valid date is required.", "no date")
        if item.request is None:
            raise LineError("A request is required.", "no request")
        if item.agent is None:
            item.agent = b"-"
        return item

    @staticmethod
    def _token(s: bytes, pos: int, delim: bytes, cnt: int) -> tuple[bytes | None, int]:
        """GoAccess ``parse_string``: text up to the ``cnt``-th delimiter (backslash escapes), trimmed.

        GoAccess walks the line byte by byte; this jumps from one delimiter or backslash to the next with
        ``bytes.find`` (a byte loop in Python cost ~60 ns a byte: most of an unparsable line's time, and
        milliseconds for a line of 30 KB).  A backslash makes the byte after it no delimiter; one at the very
        end of the line makes the token NULL."""
        n = len(s)
        if delim:
            # strpbrk: the delimiter must occur somewhere in the rest of the line
            j = s.find(delim, pos)
            if j < 0:
                return None, pos
            if delim == b"\\":  # (the delimiter is the escape byte itself: GoAccess's loop as it is)
                return GoAccessLineParser._token_bytewise(s, pos, 0x5C, cnt)
        else:
            j = -1  # NUL: read to the end
        idx = 0
        i = pos
        while True:
            # the next delimiter (j: found from i, or -1 for none) and the first backslash before it
            k = s.find(b"\\", i, j if j >= 0 else n)
            if k >= 0:
                if k + 1 >= n:
                    return None, pos
                i = k + 2
                if j >= 0 and j < i:  # the escaped byte was the delimiter
                    j = s.find(delim, i)
                continue
            if j < 0:  # the end of the line
                return trim(s[pos:]), n
            idx += 1
            if idx == cnt:
                return trim(s[pos:j]), j
            i = j + 1
            j = s.find(delim, i)

    @staticmethod
    def _token_bytewise(s: bytes, pos: int, end: int, cnt: int) -> tuple[bytes | None, int]:
        """GoAccess ``parse_string``'s byte loop (for a delimiter ``end`` that is a backslash)."""
        n = len(s)
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

    def _specifier(self, item: ParsedLine, s: bytes, pos: int, ch: int, delim: bytes, after: bytes = b"") -> int:
        spec = chr(ch)
        if spec == "^":
            target = delim[0] if delim else None
            if target is None:
                return len(s)
            j = s.find(bytes([target]), pos)
            return j if j >= 0 else pos
        cnt = self.date_tokens if spec == "d" else 1
        if spec == "h" and s[pos:pos + 1] == b"[" and pos + 1 < len(s):
            pos += 1
            delim = b"]"  # [IPv6]
        if spec in ("P", "Y", "X") and delim == b" ":
            # " : " written by the format itself right after the value is no list separator
            m = (_VALUE_LIST_COMMAS if after == b" : " else _VALUE_LIST).match(s, pos)
            if m and s[m.end():m.end() + 1] == b" ":  # a list of values, then the blank that ends it
                if spec == "P":
                    item.urt = trim(m.group())
                elif spec == "X":
                    item.xff = trim(m.group())
                return m.end()
        tok, pos = self._token(s, pos, delim, cnt)
        if spec == "R":
            item.referer = tok if tok else b"-"
            return pos
        if spec == "u":
            item.agent = tok if tok else b"-"
            return pos
        if spec in ("P", "Y", "X") and tok is None:
            return pos
        if tok is None:
            raise LineError(f"Token for '%{spec}' specifier is NULL.", f"line ends before %{spec}")
        if spec == "h":
            if not valid_ip(tok):
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%h'", "invalid %h")
            item.host = tok
        elif spec == "d":
            d = parse_date(tok, self.date_format)
            if d is None:
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%d'", "invalid %d")
            item.date = d
        elif spec == "t":
            t = parse_time(tok, self.time_format)
            if t is None:
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%t'", "invalid %t")
            item.time = t
        elif spec == "x":
            dt = parse_epoch(tok)
            if dt is None:
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%x'", "invalid %x")
            item.date, item.time = dt
        elif spec == "r":
            item.request = tok
        elif spec == "m":
            if extract_method(tok) is None:
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%m'", "invalid %m")
            item.method = tok
            self._compose(item)
        elif spec == "U":
            if not tok:
                raise LineError("Token for '%U' specifier is NULL.", "empty %U")
            item.url = tok
            self._compose(item)
        elif spec == "H":
            if extract_protocol(tok) is None:
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%H'", "invalid %H")
            item.protocol = tok
            self._compose(item)
        elif spec == "s":
            if not valid_status(tok):
                raise LineError(f"Token '{tok.decode('latin-1')}' doesn't match specifier '%s'", "invalid %s")
            item.status = tok
        elif spec == "b":
            if size_out_of_range(tok):
                raise LineError(f"Token '{tok.decode('latin-1')}' for '%b' is beyond 2^64-1 bytes: not a size "
                                "nginx writes", "%b out of range")
            item.size = parse_size(tok)
        elif spec == "T":
            if item.rt is None:
                item.rt = tok
        elif spec == "D":
            if item.rt is None:  # microseconds → seconds text
                v = parse_seconds(tok)
                item.rt = repr(v / 1e6).encode() if v is not None else b"-"
        elif spec == "L":
            if item.rt is None:
                v = parse_seconds(tok)
                item.rt = repr(v / 1e3).encode() if v is not None else b"-"
        elif spec == "P":
            item.urt = tok
        elif spec == "v":
            item.vhost = tok
        elif spec == "X":
            item.xff = tok
        # %e (remote user) and unknown specifiers: the token is consumed and ignored
        return pos

    @staticmethod
    def _compose(item: ParsedLine) -> None:
        """``%m %U %H`` formats: build the request line GoAccess would key on."""
        if item.url is None:
            return
        parts = [p for p in (item.method, item.url, item.protocol) if p]
        item.request = b" ".join(parts) if item.method and item.protocol else item.url
