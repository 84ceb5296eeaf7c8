"""nginx error logs and application logs: messages by level and class, exceptions by type and message.

* nginx ``error.log`` lines (``2024/03/01 10:00:00 [error] 12#12: *5 message, client: …``)
  are counted by level and by *message class*: the message with connection ids,
  quoted strings, addresses and numbers replaced, and the ``client:``/``request:``
  context cut off (kept as an example); what an upstream wrote (``FastCGI sent in stderr: "…"``) is
  normalized inside its quotes, and its further lines (a PHP stack trace) are joined to the entry.
* application logs, JSON lines or text, in the same file or not:

  - JSON objects: the level (``level``, ``levelname``, ``severity``, ``log.level``,
    pino/bunyan numbers), the message (``message``, ``msg``, ``event``) and an
    exception from structured fields (``exc_type``/``exc_info``, ``error.type``/
    ``error.message``/``error.stack_trace`` (ECS), ``err.type``/``err.name``/
    ``err.message``/``err.stack`` (pino, bunyan; pino's message with its causes' appended: the stack's own;
    causes as objects, ``err.cause``, written after the stack as ``Caused by:``),
    log4j2's ``JsonLayout`` ``thrown`` object, ``exception``/``stack``/``traceback``
    text, structlog's ``dict_tracebacks`` list, logback's ``JsonEncoder`` ``throwable``, Datadog's ``error.kind``, an
    error object under ``err``/``error``/``exception`` with its type or only its stack; .NET's Serilog (``@l``,
    ``@mt``, ``@x``; ``Level``, ``MessageTemplate``, ``Exception``) and Microsoft.Extensions.Logging (``LogLevel``,
    ``Message``, ``Exception``)) — one adapter per way of writing it, ``_JSON_EXC_ADAPTERS``;
    a traceback inside a message of several lines (Google Cloud) is the exception too;
    a Go error string (``error``, zap, logrus) at level error or worse is an exception of type ``error``;
  - logfmt lines (``level=error msg="…" error="…"``: logrus's text format, Go's slog) are read as these fields;
  - text: a level word near the start of the line (a logger's ``[thread]`` field no part of the class), Python tracebacks
    (``Traceback (most recent call last):`` … ``KeyError: 'x'``), Java/JVM stack traces
    (``java.lang.IllegalStateException: …`` then ``\\tat …``, ``Caused by:``; ``java.lang.Exception``,
    ``Exception in thread "main" …``, ``Terminating due to java.lang.OutOfMemoryError: …``; root cause first, then
    ``Wrapped by:``), Node/JS (``TypeError: …`` or ``Error: …`` then ``    at …``; a thrown value that is no Error,
    type ``Uncaught``; an uncaught Error without its stack, ``[TypeError: …]``; V8's ``FATAL ERROR: …``; an unhandled
    rejection Node warned of, ``(node:1234) UnhandledPromiseRejectionWarning: …``),
    Go crashes (``panic: …``/``fatal error: …`` then ``goroutine 1 [running]:``; net/http's ``http: panic
    serving …``), Rust panics (``thread 'main' panicked at src/main.rs:5:10:`` then the message), .NET
    (``System.InvalidOperationException: …`` then ``   at …``; an inner exception after
    `` ---> ``, the innermost the root cause; Serilog's ``[WRN]``, the simple console's ``fail:``),
    Ruby (``…:in `m': message (NoMethodError)``; Logger's ``E, [… #1234] ERROR -- : message (Class)`` and
    Rails' ``Class (message):``, then the backtrace), PHP (``PHP Fatal error:  Uncaught PDOException: … in
    /app/db.php:22`` then ``Stack trace:``);
  - a container runtime's log of the program's output (Docker's json-file ``{"log":"…","stream":"stderr",…}``, the
    CRI format's ``2024-03-01T10:00:00.123Z stderr F …``) is read as that output, per stream, split lines joined;
  - a process manager's time stamp before every line (PM2's ``2024-03-01T10:00:00: ``) is taken off first;
    lines whose prefix names their process (syslog's ``app[1234]: ``, ``pm2 logs``' ``0|api | ``, ``docker compose
    logs``' ``web-1  | ``) are read per process, so that processes writing one file line by line do not cut each
    other's traces; terminal colours are taken off every line;
  - Node's ``console.error('payment failed', err)``: the message, then the error and its stack (an exception
    after a message on a line, followed by frames); an error of any name (``PaymentDeclined: …``, ``DOMException
    [AbortError]: …``) when a frame follows its line;
  - an exception's message of several lines (before a JVM's or Node's frames, after Python's exception line, in
    a JSON field): grouped by its first line, the rest in the example (after Python's, only a few: what a
    program printed after a traceback looks the same; a Python traceback's chain is only what Python's own
    sentences join, so a ``caused by: …`` printed after it is no cause).

  - Monolog (Laravel, Symfony): an exception in the context (``{"exception":"[object] (Class(code: 0): …``),
    Laravel's ``[stacktrace]`` and ``[previous exception]`` lines after it.

  Exceptions are grouped by (type, normalized message) of the outermost exception of a chain and the type of
  its first (root cause; Node's innermost ``[cause]:``, an ``AggregateError``'s first error); the task reports
  groups not seen in earlier runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# message normalization
# ---------------------------------------------------------------------------------------------

#: a quoted value that names the problem (an attribute, a module, a key, a column, a constraint):
#: dotted identifiers whose parts end in at most two digits (``psycopg2``, ``utf8``, ``db.users``), or a call
#: (``Object.toString()``: the JVM's "Cannot invoke …")
_NAME = re.compile(r"[A-Za-z_][A-Za-z_]*\d{0,2}(?:\.[A-Za-z_][A-Za-z_]*\d{0,2})*(?:\(\))?")


#: the extension of a file name ('logo.png', 'report.csv'): data, however much it looks like a dotted name
_FILE_EXTENSIONS = frozenset((
    "txt", "csv", "tsv", "json", "jsonl", "xml", "yaml", "yml", "toml", "ini", "cfg", "conf", "log", "md", "html",
    "htm", "css", "js", "mjs", "py", "rb", "php", "java", "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp",
    "tif", "tiff", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "zip", "gz", "tgz", "bz2", "xz",
    "zst", "tar", "rar", "mp3", "mp4", "wav", "avi", "mov", "webm", "bak", "tmp", "pem", "crt", "sqlite"))


def _quoted(m: re.Match[str]) -> str:
    """A quoted value: kept when it is a name (it tells problems apart), masked when it is data
    (a file name is data: ``No such file or directory: 'logo.png'``)."""
    q, v = m.group(1), m.group(2)
    if len(v) <= 60 and _NAME.fullmatch(v) and v.rpartition(".")[2].lower() not in _FILE_EXTENSIONS - {v.lower()}:
        return m.group(0)
    return f"{q}…{q}"


def _hex(m: re.Match[str]) -> str:
    """Sixteen or more hex digits; or a hex id (a request id, a short hash): eight or more, with a
    digit and a letter among them (not 12345678, not deadbeef)."""
    v = m.group(0)
    if len(v) >= 16 or (not v.isdigit() and any(c.isdigit() for c in v)):
        return "<hex>"
    return v


def _always(m: str) -> bool:
    return True


def _opaque(m: re.Match[str]) -> str:
    """A run of eight or more letters and digits (both) that is an opaque id, not a name: ``<id>`` when letters
    and digits alternate three times or more (``abc123XYZdef456``, ``ORD2024X001``, a request id ``8f3a2b1c9d``
    after ``req_``), or, ten or more long, when its character class (digit, lower, upper) changes more often than
    at every other character (base62: Stripe's ``cus_NffrFeUfNV2Hib``, a JWT's parts).  Names keep their few
    changes: ``psycopg2``, ``utf8mb4``, ``Http2ServerException``, ``OAuth2Client``, ``getUTF8String``, ``G1YoungGen``."""
    v = m.group(0)
    kinds = [0 if c.isdigit() else 1 if c.islower() else 2 for c in v]
    pairs = list(zip(kinds, kinds[1:], strict=False))
    if sum(1 for a, b in pairs if (a == 0) != (b == 0)) >= 3:
        return "<id>"
    if len(v) >= 10 and 1 in kinds and 2 in kinds and 2 * sum(1 for a, b in pairs if a != b) > len(v):
        return "<id>"
    return v


#: the words before an HTTP status in a message (axios' ``Request failed with status code 503``, Go's ``unexpected
#: status code: 401``, ``status=404``)
_STATUS_BEFORE = re.compile(r"(?i)\b(?:status(?:[ _-]?code)?|response code)\s*[:=]?\s*$")


def _number(m: re.Match[str]) -> str:
    """A number is ``<n>``, but an HTTP status after words naming it (``status code 401``): a 401 (the credentials
    stopped working) and a 503 (the service is down) are two failures, not one group."""
    v = m.group(0)
    if len(v) == 3 and v[0] in "12345" and _STATUS_BEFORE.search(m.string, max(0, m.start() - 24), m.start()):
        return v
    return "<n>"


_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_MONTH_HINT = re.compile(_MONTH)


def _identity_hash(m: re.Match[str]) -> str:
    """A JVM object's default ``toString()``, its class name then ``@`` and its identity hash code in hex of one to
    eight digits (``Order@1b6d3586``, ``com.shop.Order@5b0fbc1``, ``[Ljava.lang.String;@7a81197d``, a lambda's
    ``Main$$Lambda$14/0x0000000800c03000@4e25154f``): the hash code is ``<hex>`` whatever its digits — seven of
    them, or only decimal ones, made a group per object."""
    cls = m.group(1)
    last = cls.rpartition(".")[2]
    if last[:1].isupper() or cls.startswith("[") or "/0x" in cls:
        return cls + "@<hex>"
    return m.group(0)


#: (pattern, replacement, a cheap test that the pattern can match at all — it saves most of the time)
_NORM: tuple[tuple[re.Pattern[str], Any, Any], ...] = (
    (re.compile(r"(?<![\w$.;/])((?:\[+L)?[A-Za-z_$][\w$]*(?:[./][\w$]+)*;?|\[+[BCDFIJSZ])@([0-9a-f]{1,8})(?![\w.@-])"),
     _identity_hash, lambda m: "@" in m),
    # a class loader's name and id in the JVM's messages (ClassCastException, LinkageError): ``of loader 'plugin-0'
    # @4e0e2f2a``, ``of loader java.net.URLClassLoader @5b0fbc1`` — its identity hash code after a space
    (re.compile(r"(\bloader (?:'[^'\n]{0,200}'|[\w$.]+)) @[0-9a-f]{1,8}(?![\w.@-])"), r"\1 @<hex>",
     lambda m: " @" in m),
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>",
     lambda m: "-" in m),
    # ISO-8601 date-times (2024-03-01T10:00:00Z, 2024-03-01 10:00:00,123+01:00): else the hour after T stays
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+-]\d\d(?::?\d\d)?)?(?![\w:])"),
     "<time>", lambda m: "-" in m and ":" in m),
    (re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), "<email>", lambda m: "@" in m),
    # IPv6 (2001:db8::a1, ::1, fe80::1:2:3:4, ::ffff:10.0.0.1): a "::", or six or more groups; a digit in it
    (re.compile(r"(?<![\w:.])(?=[0-9a-fA-F:.]*\d)(?=[0-9a-fA-F:]*::|(?:[0-9a-fA-F]{1,4}:){5})"
                r"(?:[0-9a-fA-F]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]{0,4})(?![\w:])"), "<ip>",
     lambda m: "::" in m or m.count(":") >= 5),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>", lambda m: "0x" in m),
    (re.compile(r"\b[0-9a-fA-F]{8,}\b"), _hex, _always),
    # opaque ids of letters and digits (request, payment, customer ids, tokens), also after a prefix such as
    # ``req_`` or ``cus_``: each a group of its own, a "new exception" every run, made the same failure page anew
    (re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z]*[0-9])(?=[0-9]*[A-Za-z])[A-Za-z0-9]{8,}(?![A-Za-z0-9])"), _opaque,
     _always),
    # date-times with a month's name: C's ctime and Java's Date.toString() (``Mon Dec  7 03:46:35 UTC 2026``),
    # RFC 1123 (``Mon, 07 Dec 2026 03:46:35 GMT``), the common log format (``07/Dec/2026:03:46:35 +0000``),
    # syslog (``Dec  7 03:46:35``): else the weekday and the month made a new group every day
    (re.compile(rf"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +)?(?:{_MONTH} +\d{{1,2}}|\d{{1,2}}[ /-]{_MONTH})"
                r"(?:,? \d{4}|[/-]\d{4})?[ :T]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?"
                r"(?: ?(?:UTC|GMT|Z|[ECMP][SD]T|CES?T|BST|IST|JST|[+-]\d\d:?\d\d))?(?: \d{4})?(?![\w:])"),
     "<time>", lambda m: _MONTH_HINT.search(m) is not None),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>", lambda m: "." in m),
    # the values of a URL's query string (``…/users?token=abc&page=2``): data; the names are kept
    (re.compile(r"(?<=[?&])([\w.\[\]%-]+=)[^&\s#\"'<>]+"), r"\1…", lambda m: "?" in m and "=" in m),
    # quoted values that are data wherever they look like names: the value a message ends with after a
    # colon (``invalid literal for int() with base 10: 'abc'``, ``Unknown currency: 'XYZ'``), and the one
    # after a word naming a record (``user 'alice' not found``, ``tenant "acme" suspended``)
    (re.compile(r"(?<=: )([\"'])[^\"'\n]{0,300}\1$"), r"\1…\1", lambda m: m.endswith(("'", '"'))),
    (re.compile(r"(?i)(?<![\w.-])(user(?:name)?|login|customer|account|tenant|order|invoice|product|"
                r"file(?:name)?|session|token)(\s+)([\"'])[^\"'\n]{1,300}\3(?!\w)"), r"\1\2\3…\3",
     lambda m: "'" in m or '"' in m),
    # quotes that open and close outside a word: the apostrophes of "couldn't … it's" are not quotes
    (re.compile(r"(?<!\w)(\")([^\"]{0,300})\"(?!\w)"), _quoted, lambda m: '"' in m),
    (re.compile(r"(?<!\w)(')([^']{0,300})'(?!\w)"), _quoted, lambda m: "'" in m),
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)?"), _number, _always),
    (re.compile(r"\s+"), " ", _always),
)


def normalize(msg: str, limit: int = 240) -> str:
    """A message with its variable parts replaced, so that occurrences group together."""
    m = msg.strip()
    for rx, repl, can in _NORM:
        if can(m):
            m = rx.sub(repl, m)
    return m[:limit]


def group_id(kind: str, message: str, cause: str = "") -> str:
    """A group's id: its type, normalized message and the type its chain starts with (``cause``, "" for an
    exception raised alone: the id it always had)."""
    key = f"{kind}\0{message}" + (f"\0{cause}" if cause else "")
    return hashlib.sha1(key.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# nginx error.log
# ---------------------------------------------------------------------------------------------

NGINX_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
_NGINX_LINE = re.compile(
    rb"^(\d{4}/\d\d/\d\d) (\d\d):\d\d:\d\d \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$", re.M)
_NGINX_CONTEXT = re.compile(r", (?:client|server|request|upstream|host|referrer|subrequest): ")
#: an upstream failure (the application behind nginx refused, timed out, crashed or sent garbage), at
#: level error or worse; "an upstream response is buffered to a temporary file" [warn] is none.  Whatever nginx says
#: the upstream sent at that level is garbage to it ("upstream sent too big header", "… no valid HTTP/1.0 header",
#: "… unexpected FastCGI record", "… duplicate header line"), as are its TLS certificate ("upstream SSL certificate
#: verify error", "… does not match") and a FastCGI stream cut short ("upstream closed prematurely FastCGI stdout")
_UPSTREAM = re.compile(r"\bupstream\b.*(?:timed out|failed|refused|no live upstreams|prematurely closed|"
                       r"closed prematurely|invalid|reset by peer)|(?:timed out|failed|refused|no live upstreams|"
                       r"prematurely closed|invalid|reset by peer).*\bupstream\b|\bupstream (?:sent|SSL certificate) ")
_UPSTREAM_LEVELS = frozenset(("error", "crit", "alert", "emerg"))
#: what an upstream wrote, quoted: ``FastCGI sent in stderr: "PHP message: …"``, ``upstream sent invalid
#: header: "…"``; the class keeps the text normalized instead of one "…" for every PHP error
_NGINX_PAYLOAD = re.compile(r'^((?:FastCGI |uwsgi |SCGI )?sent in stderr: |upstream sent [^"]*?: )"(.*)$', re.S)
_NGINX_PAYLOAD_END = re.compile(r'^(.*)"((?: while [^"]*)?)$', re.S)
#: a continuation line that closes a multi-line payload: its quote, then "while …" or the context
_NGINX_PAYLOAD_CLOSE = re.compile(rb'"(?:$| while |, (?:client|server|request|upstream|host): )')
#: the messages PHP-FPM sends in one FastCGI stderr record: ``PHP message: …; PHP message: …``
_PHP_MESSAGE_SPLIT = re.compile(r"(?:^|; )PHP message: ")


#: ModSecurity's (libmodsecurity 3's nginx connector) line: ``[client IP] ModSecurity: Access denied with code 403
#: (phase 2). Matched "…" [file "…"] [line "80"] [id "949110"] [rev ""] [msg "Inbound Anomaly Score Exceeded (Total
#: Score: 5)"] … [uri "/x"] [unique_id "…"] [ref ""]``: its class is the action and the rule (id and message) — every
#: rule's lines were one class, their bracketed values all "…"
_MODSEC = re.compile(r"ModSecurity: (?P<action>[^.\[]*)")
#: the rule's fields, in the order ModSecurity writes them: a client's value quoted before them (``Matched "… (Value:
#: `…' )"``) or after them (``[data "…"]``) is no rule of its own unless it forges this whole sequence
_MODSEC_RULE = re.compile(r'\[file "[^"]*"\] \[line "\d+"\] \[id "(?P<id>\d+)"\](?: \[rev "[^"]*"\])?'
                          r'(?: \[msg "(?P<msg>[^"]*)"\])?')


def _modsec_class(core: str) -> str | None:
    m = _MODSEC.search(core)
    rule = _MODSEC_RULE.search(core, m.end()) if m is not None else None
    if m is None or rule is None:
        return None
    return (f'ModSecurity: {normalize(m["action"])} [id "{rule["id"]}"]'
            + (f' [msg "{normalize(rule["msg"], 160)}"]' if rule["msg"] else ""))


def _nginx_class(core: str) -> tuple[str, str, bool]:
    """(class, the class without the upstream's own text, whether the quoted text goes on in the next lines)."""
    if "ModSecurity: " in core and (c := _modsec_class(core)) is not None:
        return c, c, False
    m = _NGINX_PAYLOAD.match(core) if "sent " in core else None
    if not m:
        c = normalize(core)
        return c, c, False
    end = _NGINX_PAYLOAD_END.match(m.group(2))
    inner, tail = (end.group(1), end.group(2)) if end else (m.group(2), "")
    prefix, rest = normalize(m.group(1)), (" " + normalize(tail) if tail.strip() else "")
    return f'{prefix} "{normalize(inner, 200)}"{rest}', prefix + rest, not end


def is_upstream_failure(level: str, cls: str) -> bool:
    """Whether an nginx message class (at ``level``) is an upstream failure — the rule behind
    ``NginxErrorStats.upstream``, for picking the classes a report shows for it."""
    return level in _UPSTREAM_LEVELS and bool(_UPSTREAM.search(_nginx_class(cls)[1]))


@dataclass
class NginxErrorStats:
    lines: int = 0
    unparsed: int = 0
    unparsed_samples: list[str] = field(default_factory=list)
    levels: Counter[str] = field(default_factory=Counter)
    classes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (level, class)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    by_hour: Counter[str] = field(default_factory=Counter)
    upstream: int = 0
    first: str | None = None
    last: str | None = None
    #: what PHP-FPM relayed (``FastCGI sent in stderr: "PHP message: PHP Fatal error:  Uncaught …"``), read as PHP's
    #: own error log is: its uncaught exceptions and fatal errors are in ``php.exceptions``; None when there was none
    php: AppLogStats | None = None
    #: the last entry's quoted upstream text goes on in the next lines (a multi-line FastCGI message)
    _open: tuple[str, tuple[str, str], bool] | None = None  # (source, class key, whether it set the example)
    #: the lines of the open entry's PHP messages so far
    _php_text: list[str] | None = None

    def php_into(self, app: AppLogStats | None) -> AppLogStats | None:
        """``app`` with the exception groups of what PHP-FPM relayed added (the same group as in PHP's own log,
        when both are read): a new AppLogStats when ``app`` is None and there are some; ``app`` unchanged when
        there are none."""
        if self.php is None or not self.php.exceptions:
            return app
        app = app if app is not None else AppLogStats()
        for gid, g in self.php.exceptions.items():
            mine = app.exceptions.setdefault(gid, ExceptionGroup(g.kind, g.message, example=g.example, cause=g.cause))
            mine.count += g.count
            mine.sources |= g.sources
        return app

    def finish(self) -> None:
        """Read the PHP messages of an entry whose closing line never came (the log ends inside it)."""
        if self._php_text is not None:
            text, self._php_text = "\n".join(self._php_text), None
            self._php_payload(text, self._open[0] if self._open else "")

    def _php_payload(self, text: str, source: str) -> None:
        """Read the PHP messages of one entry's upstream text (``PHP message: …; PHP message: …``)."""
        if self.php is None:
            self.php = AppLogStats()
        for part in _PHP_MESSAGE_SPLIT.split(text):
            if part.strip():
                self.php.feed(part.encode("utf-8", "replace") + b"\n", source)
                self.php.finish()

    def _continued(self, gap: bytes, source: str, samples: int) -> int:
        """The lines between two entries: those that continue a multi-line entry are joined to it (their
        number is returned); the others are unparsed samples."""
        joined = 0
        if gap == b"\n":  # the usual case: the next entry follows at once
            return 0
        parts = gap.split(b"\n")
        for i, ln in enumerate(parts):
            if not ln:
                # a blank line inside a quoted payload (PHP's blank line before "Next …" of a chained exception) is
                # the entry's; the empty ends of the split are no lines
                if 0 < i < len(parts) - 1 and self._open and self._open[0] == source:
                    joined += 1
                    if self._php_text is not None:
                        self._php_text.append("")
                continue
            if self._open and self._open[0] == source:
                joined += 1
                _, key, own = self._open
                if own and len(self.examples[key]) < 500:
                    self.examples[key] = (self.examples[key] + "\n" + ln.decode("utf-8", "replace"))[:500]
                close = _NGINX_PAYLOAD_CLOSE.search(ln)
                if self._php_text is not None:
                    self._php_text.append(ln[:close.start() if close else None].decode("utf-8", "replace"))
                if close:
                    self._open = None
                    if self._php_text is not None:
                        text, self._php_text = "\n".join(self._php_text), None
                        self._php_payload(text, source)
            elif len(self.unparsed_samples) < samples:
                self.unparsed_samples.append(f"{source}: {ln[:300].decode('utf-8', 'replace')}")
        return joined

    def feed(self, buf: bytes, source: str = "", samples: int = 5) -> None:
        n = buf.count(b"\n") + (0 if buf.endswith(b"\n") or not buf else 1)
        self.lines += n
        matched = joined = pos = 0
        for m in _NGINX_LINE.finditer(buf):
            joined += self._continued(buf[pos:m.start()], source, samples)
            pos = m.end()
            matched += 1
            day, hour, level_b, msg_b = m.groups()
            level = level_b.decode("ascii", "replace")
            msg = msg_b.decode("utf-8", "replace")
            stamp = day.decode().replace("/", "-") + " " + hour.decode()
            self.levels[level] += 1
            self.by_hour[stamp + ":00"] += 1
            self.first = stamp if self.first is None or stamp < self.first else self.first
            self.last = stamp if self.last is None or stamp > self.last else self.last
            core = _NGINX_CONTEXT.split(msg, 1)[0]
            cls, outer, open_ = _nginx_class(core)
            key = (level, cls)
            self.classes[key] += 1
            own = key not in self.examples
            if own:
                self.examples[key] = msg[:500]
            self._open = (source, key, own) if open_ else None
            if self._php_text is not None:  # an entry left open (its closing line never came): read what it had
                text, self._php_text = "\n".join(self._php_text), None
                self._php_payload(text, source)
            if "PHP message: " in core:
                pm = _NGINX_PAYLOAD.match(core)
                if pm:
                    end = None if open_ else _NGINX_PAYLOAD_END.match(pm.group(2))
                    inner = end.group(1) if end else pm.group(2)
                    if open_:
                        self._php_text = [inner]
                    else:
                        self._php_payload(inner, source)
            # read without quoted paths and without what the upstream wrote (a PHP "Connection refused")
            if level in _UPSTREAM_LEVELS and "upstream" in outer and _UPSTREAM.search(outer):
                self.upstream += 1
        joined += self._continued(buf[pos:], source, samples)
        missed = n - matched - joined
        if missed > 0:
            self.unparsed += missed


# ---------------------------------------------------------------------------------------------
# application logs
# ---------------------------------------------------------------------------------------------

LEVEL_WORDS = {
    "trace": "debug", "debug": "debug", "info": "info", "information": "info", "notice": "info",
    "warn": "warning", "warning": "warning", "error": "error", "err": "error", "severe": "error",
    "critical": "critical", "crit": "critical", "fatal": "critical", "alert": "critical", "emerg": "critical",
    "emergency": "critical", "panic": "critical", "dpanic": "critical",
    "deprecated": "warning",  # PHP's E_DEPRECATED ("PHP Deprecated:  …"), a warning as Sentry's PHP SDK has it
    # .NET: Serilog's levels (Verbose … Fatal; ``[VRB]`` … ``[FTL]`` in its text output's ``{Level:u3}``) and those of
    # Microsoft.Extensions.Logging's simple console format (``trce:`` … ``fail:``, ``crit:``)
    "verbose": "debug", "vrb": "debug", "dbg": "debug", "inf": "info", "wrn": "warning", "ftl": "critical",
    "trce": "debug", "dbug": "debug", "fail": "error",
}  # fmt: skip
_PINO_LEVELS = {10: "debug", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "critical"}
#: a level word: not part of a word or a path (``/error/``), but Celery's ``ERROR/MainProcess``,
#: ``WARNING/ForkPoolWorker-1`` is one (a slash then a capital letter)
#: Serilog's three letters are levels at a bracket's end only (``[WRN]``, its file sink's ``[{Level:u3}]``; ``[10:00:00
#: WRN]``, its console sink's ``[{Timestamp:HH:mm:ss} {Level:u3}]``: after a time's digit; ``[A, B, FTL]`` is a
#: list), and the simple console format's ``fail:`` at the start of a line before its category and event id only
#: (``fail: Microsoft.AspNetCore.Diagnostics[1]``; ``fail: 3 of 10 checks`` is text)
_TEXT_LEVEL = re.compile(r"(?<![\w/])(TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|ERR|SEVERE|CRIT(?:ICAL)?|FATAL|"
                         r"ALERT|EMERG|PANIC|(?<=PHP )DEPRECATED|(?:(?<=\[)|(?<=\d ))(?-i:VRB|DBG|INF|WRN|FTL)(?=\])|"
                         r"^(?-i:trce|dbug|fail)(?=: \S+\[\d+\]))(?!\w)(?!/(?-i:[^A-Z]))", re.I)
#: what follows the level word in Celery's ``[… ERROR/ForkPoolWorker-1] message``: the process, no part of the message
_LEVEL_PROCESS = re.compile(r"^/[\w-]+")
_PY_TRACEBACK = "Traceback (most recent call last):"
#: loguru's mark of the frame where the exception was caught, in the tracebacks it writes (``backtrace=True``, its
#: default for a file): ``> File "/app/x.py", line 15, in <module>``; it puts a blank line between frames too
_LOGURU_CAUGHT = '> File "'
_PY_GROUP_TRACEBACK = "Exception Group Traceback (most recent call last):"  # printed as "  + Exception Group …"
#: the sentences that join the tracebacks of a chained exception (``raise … from …``, or raised while handling)
_PY_CHAIN = ("During handling of the above exception, another exception occurred:",
             "The above exception was the direct cause of the following exception:")
_PY_EXC = re.compile(r"^([\w.]+)(?:: (.*))?$")
_EXC_SUFFIX = r"(?:Error|Exception|Exit|Interrupt|Warning|Fault|Throwable|Failure|Timeout|NotFound|Invalid\w*|Denied|Rejection)"
#: an exception line: a (dotted) type name ending in one of the suffixes — the name may be the suffix
#: alone, as in Node's ``Error: connect ECONNREFUSED …`` and ``java.lang.Exception: …``
#: Node's system and internal errors carry their code after the name (``TypeError [ERR_INVALID_ARG_TYPE]: …``,
#: ``SystemError [ERR_SYSTEM_ERROR]: …``), and an error whose ``name`` is not its class's carries the name
#: (``DOMException [AbortError]: …``, ``class Timeout extends Error`` prints ``Timeout [Error]: …``): the type is
#: the class, as for Node's JSON loggers (pino's ``err.type``) and a ``[cause]:``
#: .NET writes some exceptions' error code after the type (``System.Net.Sockets.SocketException (111): Connection
#: refused``, ``Npgsql.PostgresException (0x80004005): 23505: …``): no part of the type or the message
_EXC_LINE = re.compile(rf"^((?:[A-Za-z_$][\w$]*\.)*(?:[A-Za-z_$][\w$]*)?{_EXC_SUFFIX})(?: \[[A-Za-z_$][\w$]*\])?"
                       r"(?: \((?:0x[0-9A-Fa-f]{8}|-?\d{1,10})\))?"
                       r"(?:: ?(.*))?$")
_BARE_EXC = re.compile(_EXC_SUFFIX)
#: an exception after a message on the same line, as ``console.error('payment failed', err)`` prints it (util.format:
#: the message, a space, then the error's stack — ``payment failed TypeError: …``), or a logger's line that ends
#: with the error (``… ERROR c.e.App - payment failed java.lang.IllegalStateException: …``): an exception only
#: when a frame (``    at …``) follows; its type's name ends in Error or Exception
_EMBEDDED_TAIL = re.compile(r"(?:Error|Exception)(?: \[[A-Za-z_$][\w$]*\])?(?:: |$)")
#: an error of any name, which only the frames (``    at …``) after it show to be one: Node's ``class PaymentDeclined
#: extends Error`` with its ``name`` set, ``Timeout [Error]``; a JVM class named otherwise (``java.lang.ThreadDeath``)
#: — at the start of a line (``console.error(e)``, uncaught), or after a message (``console.error('payment failed',
#: e)``: the first capitalized word followed by ``: ``, its bracket between)
_NAMED_HEAD = re.compile(r"^((?:[A-Za-z_$][\w$]*\.)*[A-Z][\w$]*)(?: \[[A-Za-z_$][\w$]*\])?(?:: (.*))?$")
_NAMED_EMBEDDED = re.compile(r"(?<=[ \t])((?:[A-Za-z_$][\w$]*\.)*[A-Z][\w$]*)(?: \[[A-Za-z_$][\w$]*\])?: (.*)$")
#: a level word used as a label (``ERROR:``, ``[WARN]``, ``Internal Server Error: /x``), or starting a line: a log
#: line, no further line of an exception's message (SQLAlchemy's ``(Background on this error at: …)`` is one)
_LEVEL_LABEL = re.compile(r"(?i)^\W{0,2}(?:TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|ERR|SEVERE|CRIT(?:ICAL)?|FATAL)"
                          r"(?!\w)|(?<![\w/])(?:WARN(?:ING)?|ERROR|SEVERE|CRIT(?:ICAL)?|FATAL)\]?:(?:\s|$)")
#: a time stamp a little into a line: an access log's (``127.0.0.1 - - [05/Dec/2026:12:00:00 +0000] "GET …``, werkzeug's
#: ``[05/Dec/2026 12:00:00]``) or one after a host or a pid: a log record, no further line of a message
_RECORD_TIME = re.compile(r"^.{0,60}?\[\d\d/[A-Z][a-z]{2}/\d{4}[: ]\d\d:\d\d|^.{0,24}?\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
#: the thread's name in a message class — it would make one class per thread of the same message — where the format
#: shows the field to be the thread: logback's and log4j2's ``%-5level [%thread] %logger - %msg`` (the bracket between
#: the level and a logger's name followed by `` - ``), Spring Boot's ``%5p ${PID} --- [%t] %-40.40logger{39} : %m``
#: (the bracket after ``---`` and an application's name, before the logger padded and `` : ``).  Spring Boot 3.2+
#: puts the request's correlation (``${LOG_CORRELATION_PATTERN}``) between the thread and the logger — per request, so
#: out of the class too: after an application's name and the thread, any bracket (Micrometer's ``[traceId-spanId]``,
#: 49 blanks outside a span, a custom ``[cid=… tx=…]``); after the thread alone, only Spring Boot's own forms
#: (CorrelationIdFormatter: 32 and 16 characters, a missing span blank or dots; a second bracket of another shape is
#: the thread, the first the application's name)
_BRACKET = r"\[[^\]\n]{0,200}\] "
_LOGGER_AHEAD = r"(?=[A-Za-z_$][\w$.]*\s+: )"
_THREAD_FIELD = re.compile(r"^\[[^\]\n]{1,200}\] (?=[A-Za-z_$][\w$.]* - )|"
                           rf"^(\d+ --- {_BRACKET}){_BRACKET}{_BRACKET}{_LOGGER_AHEAD}|"
                           rf"^(\d+ --- ){_BRACKET}\[(?: {{49}}|[0-9a-fA-F]{{32}}[-|](?:[0-9a-fA-F]{{16}}| {{16}}|\.{{16}}))\] "
                           rf"{_LOGGER_AHEAD}|"
                           rf"^(\d+ --- (?:{_BRACKET})?){_BRACKET}{_LOGGER_AHEAD}")
#: a level word right after a bracket that holds another one (``10:00:00.123 [error-reporter] WARN  c.e.App - …``: the
#: thread's name, logback's default pattern)
_LEVEL_AFTER_BRACKET = re.compile(r"\] +(?=(?:TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|ERR|SEVERE|CRIT(?:ICAL)?|FATAL)"
                                  r"(?!\w))")
#: the further lines of an exception's message kept before its frames (a JVM's or Node's) or after its line
#: (Python's) — at most this many
_MAX_MESSAGE_LINES = 100
#: of the lines read after a Python exception's line as its message, those its example shows (SQLAlchemy's
#: DETAIL, [SQL: …], [parameters: …] and "Background on this error" are four)
_EXAMPLE_MESSAGE_LINES = 4


def _text_level(line: str) -> re.Match[str] | None:
    """The level word of a text log line (``_TEXT_LEVEL`` in its first 120 characters); one inside a bracket with more
    in it, followed by a level word after the bracket, is part of a name (a thread's: ``[error-reporter] WARN  …``)."""
    head = line[:120]
    m = _TEXT_LEVEL.search(head)
    if m is None or "[" not in head[:m.start()]:
        return m
    o = head.rfind("[", 0, m.start())
    c = head.find("]", m.end())
    if c < 0 or head.rfind("]", 0, m.start()) > o or head[o + 1:c].strip() == m.group(1):
        return m
    return _TEXT_LEVEL.search(head, c) if _LEVEL_AFTER_BRACKET.match(head, c) else m


def _message_class_text(msg: str) -> str:
    """A text record's message without its thread's name (see ``_THREAD_FIELD``), for its class."""
    if msg[:1] == "[" or " --- [" in msg[:40]:
        return _THREAD_FIELD.sub(lambda m: m.group(1) or m.group(2) or m.group(3) or "", msg, 1)
    return msg


def _embedded_exc(s: str) -> re.Match[str] | None:
    """The exception line (``_EXC_LINE``) that ends ``s`` after a message and a space, or None: the first word
    whose type name ends in Error or Exception followed by ``: `` (or the line's end) and that starts an exception
    line. (Found from the suffix back: one pattern searched from every word's start took 30 µs a line.)"""
    for t in _EMBEDDED_TAIL.finditer(s):
        start = max(s.rfind(" ", 0, t.start()), s.rfind("\t", 0, t.start())) + 1
        if start > 0:
            m = _EXC_LINE.match(s[start:])
            if m:
                return m
    return None


_AT_FRAME = re.compile(r"^\s+at \S")
#: a link of a chain, inside a trace: read outside one (the trace cut before it), no exception of its own (.NET's
#: inner exception: ``---> …``, see ``_DOTNET_INNER``)
_CHAIN_LINK = re.compile(r"^(?:(?:Caused by|Suppressed|\[cause\]|Wrapped by): |---> [A-Za-z_])")
#: a JVM trace printed root cause first (logback's ``%rootException``, logstash-logback-encoder's ``rootCauseFirst``):
#: each exception that wrapped the one before, ``Wrapped by: java.lang.RuntimeException: …``, the last one outermost
_WRAPPED = re.compile(r"^Wrapped by: ((?:[\w$]+\.)*[\w$]+)(?:: (.*))?$", re.M)
#: a JVM class's name: in a package, lower case, itself capitalized (``java.util.ConcurrentModificationException``)
_JVM_CLASS = re.compile(r"(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*")
#: the JVM's prefix of an uncaught exception: ``Exception in thread "main" java.lang.…: …``; and of the out-of-memory
#: error that ends the JVM with ``-XX:+ExitOnOutOfMemoryError`` (``Terminating due to java.lang.OutOfMemoryError: Java
#: heap space``, the only line it prints) or ``-XX:+CrashOnOutOfMemoryError`` (``Aborting due to …``)
_JVM_THREAD = re.compile(r'^(?:Exception in thread "[^"]*" |(?:Terminating|Aborting) due to (?=[\w$]+\.))')


#: Node's ``util.inspect`` of an error whose stack has no frames, with properties after it: ``[AggregateError: All
#: promises were rejected] {`` (``Promise.any``), then ``  [errors]: [`` …
_NODE_BRACKET = re.compile(rf"^\[((?:[A-Za-z_$][\w$]*\.)*(?:[A-Za-z_$][\w$]*)?{_EXC_SUFFIX})(?:: (.*?))?\] \{{$")


def _exc_line(s: str) -> re.Match[str] | None:
    if s.startswith("["):
        return _NODE_BRACKET.match(s)
    return _EXC_LINE.match(_JVM_THREAD.sub("", s, 1))
#: an uncaught Ruby exception: ``app.rb:12:in `m': message (NoMethodError)`` (Ruby 3.4: ``in 'C#m'``)
_RUBY = re.compile(r":in [`'][^']*': (.*) \(([A-Z][\w:]*)\)$")
#: Ruby's Logger prefix (``E, [2024-03-01T10:00:00.123456 #1234] ERROR -- progname: ``) and Rails' tags
_RUBY_HEAD = r"(?:[A-Z], \[[^\]]*\]\s+[A-Z]+ -- [^:]*: )"
_RUBY_TAGS = r"(?:\[[^\]]*\] )*"
#: a line of Ruby's Logger, and the tags (``[request-id]``, Rails' log_tags) its message begins with
_RUBY_HEAD_LINE = re.compile(_RUBY_HEAD)
_RUBY_TAG_PREFIX = re.compile(r"^(?:\[[^\]]*\](?: |$))+")
_RUBY_CLASS = r"[A-Z]\w*(?:::[A-Z]\w*)*"
#: an exception logged by Ruby's Logger (``logger.error(e)``: ``E, [… #1234] ERROR -- : message (Class)`` then
#: the backtrace), or by Rails (``ActiveRecord::RecordNotFound (Couldn't find User with 'id'=1):`` inside
#: a FATAL record, after the request's tags, then ``  `` and the backtrace)
_RUBY_LOGGED = re.compile(rf"^{_RUBY_HEAD}{_RUBY_TAGS}(?P<msg>.*) \((?P<cls>{_RUBY_CLASS})\)$|"
                          rf"^{_RUBY_HEAD}?{_RUBY_TAGS}(?P<cls2>{_RUBY_CLASS}) \((?P<msg2>.*)\):$")
#: Rails' exception line when the message has further lines (Ruby 3.1+'s error_highlight code and caret, up to
#: the line that ends with ``):``): ``NoMethodError (undefined method `name' for nil:NilClass``
_RAILS_OPEN = re.compile(rf"^{_RUBY_TAGS}(?P<cls>{_RUBY_CLASS}) \((?P<msg>.*)$")
_RAILS_OPEN_LINES = 20
#: the caret Ruby 3.1's error_highlight puts under the code in an exception's message, then the exception's class,
#: as ``Logger#error(e)`` writes it (``message (Class)``, the message's further lines before the class)
_RUBY_CARET_CLASS = re.compile(rf"^\s*\^+ \(({_RUBY_CLASS})\)$")
_RUBY_MSG_LINES = 6
#: a line of a Ruby backtrace (``app/models/order.rb:12:in `total'``, ``\tfrom …``), or Rails' blank line
#: between the exception and its backtrace, after the request's tags
_RUBY_FRAME = re.compile(rf"^{_RUBY_TAGS}(?:\s*$|\s*(?:from )?\S+:\d+:in )")
#: where a line of a Ruby backtrace, or an exception's line, was: ``app.rb:12:in `m'`` (Ruby 3.4: ``in 'C#m'``)
_RUBY_PLACE = re.compile(r"^(?:\[[^\]]*\] )*\s*(?:from )?(\S+:\d+:in [`'][^']*')")


#: an exception logged in two records by a Ruby program's error handler (Sidekiq's, whose default logs a job's failure
#: as ``WARN: PaymentGateway::Declined: card declined`` and then ``WARN: app/jobs/charge_job.rb:5:in `perform'`` and
#: the rest of the backtrace): a warning or worse whose message is ``Class: message`` followed, in the same thread's
#: next record (``tid=…``), by one whose message is a frame
_RUBY_EXC_MSG = re.compile(rf"^({_RUBY_CLASS}): (.*)$")
_RUBY_FRAME_MSG = re.compile(r"^\S+:\d+:in [`']")
_RECORD_TID = re.compile(r" tid=(\S+) ")
_MAX_RUBY_CANDIDATES = 256


def _ruby_head(line: str) -> bool:
    """An uncaught exception's line (``app.rb:12:in `m': message (Class)``), not a frame."""
    s = line.lstrip()
    return not s.startswith("from ") and _RUBY.search(s) is not None


def _ruby_chain_end(block: list[str]) -> int:
    """Where a Ruby exception's block ends (one logged by Logger or Rails: before an uncaught exception after its
    backtrace). An uncaught exception's: Ruby prints its causes after its backtrace, as it prints an
    exception (``app.rb:3:in `charge': declined (Declined)``, then ``\tfrom`` lines); a cause was raised on the
    same stack, so its backtrace ends where the exception's does. An exception whose backtrace ends elsewhere, or
    that is the exception again (the same class raised at the same place: the program crashed twice), is the next
    crash: the block ends before it."""
    heads = [i for i, ln in enumerate(block) if i and ln[:1] not in " \t" and _ruby_head(ln)]
    if not heads:
        return len(block)
    if not _RUBY.search(block[0]):  # Logger and Rails print no causes: an uncaught exception after their frames
        return heads[0]

    def place(ln: str) -> str:
        m = _RUBY_PLACE.match(ln)
        return m.group(1) if m else ""

    def bottom(start: int, end: int) -> str:
        return next((p for p in map(place, reversed(block[start:end])) if p), "")

    def head(i: int) -> tuple[str, str]:
        m = _RUBY.search(block[i])
        return place(block[i]), m.group(2) if m else ""

    ends = [*heads, len(block)]
    last = bottom(0, ends[0])
    for k, start in enumerate(heads):
        if bottom(start, ends[k + 1]) != last or head(start) == head(0):
            return start
    return len(block)


def _rust_continues(block: list[str], line: str) -> bool:
    """Whether ``line`` goes on a Rust panic's report (see ``_RUST_PANIC``): its message's lines (after a head line that
    ends with the place), its backtrace, the ``note: …`` that ends it."""
    if line.startswith("note: ") or _RUST_FRAME.match(line):
        return True
    if not block[0].endswith(":") or any(_RUST_FRAME.match(ln) for ln in block[1:]):
        return False
    return len(block) == 1 or (len(block) <= _MAX_MESSAGE_LINES and bool(line.strip()) and _continues_message(line))


def _rails_open(block: list[str]) -> bool:
    """Whether a Rails exception line's message (see ``_RAILS_OPEN``) is still open: its further lines follow."""
    return (len(block) < _RAILS_OPEN_LINES and not any(ln.endswith("):") for ln in block)
            and _RAILS_OPEN.match(block[0]) is not None
            and _RUBY_LOGGED.match(block[0]) is None and not _RUBY.search(block[0]))


def _ruby_highlight(block: list[str], line: str) -> bool:
    """The code and caret Ruby 3.1+'s error_highlight prints under an uncaught exception's first line, after a
    blank line (its backtrace follows them)."""
    if len(block) == 2 and block[1] == "":
        return line.startswith("  ") and bool(_RUBY.search(block[0]))
    return len(block) == 3 and block[1] == "" and bool(_NODE_CARET.match(line)) and bool(_RUBY.search(block[0]))


#: the time stamp a text log record starts with: 2024-03-01 10:00:00 / 2024-03-01T10:00:00Z (in brackets
#: too), 2024/03/01 10:00:00 (Go), 10:00:00.123 (logback), Mar  1 10:00:00 (syslog), E, [2024-03-01T… (Ruby)
_TIME_HEAD = re.compile(r"^(?:[A-Z], )?\W{0,2}(?:\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d|\d\d:\d\d:\d\d|"
                        r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)")
#: a Go program's crash (printed to stderr): ``panic: …`` or a runtime ``fatal error: …``, then its goroutines;
#: or a handler's panic that net/http recovered and logged (``2024/03/01 10:00:00 http: panic serving
#: 10.0.0.1:5000: …`` then the goroutine)
_GO_PANIC = re.compile(r"^(?:(panic|fatal error): |.*?\bhttp: (panic) serving \S+: )(.*?)(?: \[recovered[^\]]*\])?$")
#: the further lines of a Go crash: ``[signal SIGSEGV …]``, ``goroutine 1 [running]:``, a frame's function
#: (``main.main()``, ``net/http.(*conn).serve(0xc000…)``) and file (tab-indented), ``created by …``, blank
#: lines between goroutines, ``exit status 2`` (go run)
_GO_STACK = re.compile(r"^(?:\s*$|\[signal |goroutine \d+ |\t|created by |exit status \d+$|[\w./*()\[\]{}-]+\(.*\)$)")
#: a Rust panic as the standard library prints it: ``thread 'main' panicked at src/main.rs:5:10:`` then the message
#: (Rust 1.73 and later; 1.83+ writes the thread's id too, ``thread 'main' (1234) panicked …``), or before 1.73 the
#: message on the line, ``thread 'main' panicked at 'called `Option::unwrap()` on a `None` value', src/main.rs:5:10``;
#: then ``stack backtrace:`` and its frames (``RUST_BACKTRACE=1``), and a ``note: …`` line that ends it
_RUST_PANIC = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at (?:'(.*)', \S+:\d+:\d+|\S+:\d+:\d+:)$")
_RUST_FRAME = re.compile(r"^(?:stack backtrace:$|\s+\d+: \S|\s+at \S)")
#: the time stamp a process manager writes before every line of a program's output, a colon after it: PM2's
#: ``--time`` (``2024-03-01T10:00:00: ``) and ``--log-date-format`` (``2024-03-01 10:00:00.123 +00:00: ``);
#: the line after it is the program's own
_MANAGER_STAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?(?:Z|[+-]\d\d:?\d\d))?: ")
#: a prefix naming the process that wrote the line, on every line (so one process's trace can be told from the
#: lines another writes between its lines): syslog's and ``journalctl``'s (``Mar  1 10:00:00 host app[1234]: ``,
#: ``-o short-iso``: ``2024-03-01T10:00:00+0000 host app[1234]: ``), ``pm2 logs``' (``0|api      | ``), and
#: ``docker compose logs``' (``web-1  | ``; docker-compose 1.x: ``web_1  | ``): the container's name padded, then
#: `` | `` — a name ending in its replica's number, so that a ``LEVEL | message`` format's start is none
_PROC_PREFIX = re.compile(r"^(?:(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?"
                          r"(?:Z|[+-]\d\d:?\d\d)?) \S+ ([\w.@/-]+\[\d+\]):(?: |$)|(\d+\|[\w.@-]+)\s*\| |"
                          r"([A-Za-z][\w.-]{0,100}[-_]\d+) +\|(?: |$))")
#: PHP-FPM's log of what a worker wrote (``catch_workers_output = yes``): ``[05-Dec-2026 10:00:00] WARNING: [pool www]
#: child 123 said into stderr: "…"``, one line of the worker's output each (its end ``", pipe is closed`` when the
#: worker exited)
_FPM_CHILD = re.compile(r'^\[\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d(?:\.\d+)?\] WARNING: \[pool ([^\]]+)\] child (\d+) '
                        r'said into std(?:err|out): "(.*?)"(?:, pipe is closed)?$')
#: the level and ``PHP message: `` PHP-FPM writes before PHP's own message (``NOTICE: PHP message: PHP Warning:  …``)
#: when the worker's output is logged: PHP's level is the message's
_FPM_PHP_MESSAGE = re.compile(r"^(?:(?:DEBUG|NOTICE|WARNING|ERROR|ALERT): )?PHP message: (?=PHP )")
#: ``docker compose logs`` with colours (a terminal, ``--ansi always``): the prefix in its service's colour, the
#: colour reset after `` | `` (Compose 2) or after ``|`` (1.x) — coloured, any container name is one
#: (``container_name: shop``)
_COMPOSE_COLORED = re.compile(r"^\x1b\[[\d;]*m([\w.-]{1,128}) +\|(?: \x1b\[0m|\x1b\[0m(?: |$))")
#: the time stamp ``docker compose logs --timestamps`` (and ``docker logs -t``) writes after the prefix
#: (RFC 3339 with nanoseconds, always nine digits: Go's RFC3339NanoFixed)
_DOCKER_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(?:Z|[+-]\d\d:\d\d) ")
#: terminal escape sequences (colours: Node's grey frames on a terminal, a pretty-printer's levels, Compose's
#: prefixes): no part of a message
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_MAX_PROCS = 256
#: a container runtime's own log file holds the program's output one line a record: Docker's json-file driver
#: (``{"log":"…\n","stream":"stderr","time":"…"}``, /var/lib/docker/containers/ID/ID-json.log) and the CRI format of
#: containerd and CRI-O (``2026-12-07T10:00:00.123456789Z stderr F …``, Kubernetes' /var/log/containers/*.log: ``F``
#: a whole line, ``P`` a part of one the runtime split, as Docker's record without its newline is); the lines are read
#: per stream (stdout and stderr interleave), a split line joined (up to this many characters)
_CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) (stdout|stderr) ([FP])(?: (.*))?$")
_MAX_PARTIAL = 1 << 20
#: the first two lines of Node's report of an uncaught exception: where it was thrown (``/app/server.js:12``,
#: ``node:internal/process/promises:389``, ``file:///app/server.mjs:3``, ``<anonymous_script>:1``), then the
#: source line there, then a line of carets under it
_NODE_PLACE = re.compile(r"^(?:/|file://|node:|[A-Za-z]:\\|<anonymous|\[eval\]|\[worker eval\])\S*:\d+$")
_NODE_CARET = re.compile(r"^\s*\^+\s*$")
#: Node's hint after a thrown value that is no Error (``throw 'declined'``), printed under the caret
_NODE_TRACE_UNCAUGHT = "(Use `node --trace-uncaught ...` to show where the exception was thrown)"
#: V8's report of a fatal error that ends a Node process (``FATAL ERROR: Reached heap limit Allocation failed -
#: JavaScript heap out of memory``), then its native stack: ``----- Native stack trace -----``, `` 1: 0xb78db3 node::…``
_V8_FATAL = "FATAL ERROR: "
_V8_STACK = re.compile(r"^(?:-{5} Native stack trace -{5}$|\s*$|\s*\d+: 0x[0-9a-fA-F]+\b)")
#: a line of that stack that shows the ``FATAL ERROR:`` line to be V8's (a logger's line so worded is a message only)
_V8_PROOF = re.compile(r"^(?:-{5} Native stack trace -{5}$|\s*\d+: 0x[0-9a-fA-F]+\b)")
#: Node's uncaught error printed without a stack (its ``stack`` deleted or emptied), under the caret and a blank line:
#: ``[TypeError: order 5 has no total]``, its properties after it (``[Error: refused] { code: 'E1' }``, or ``{`` and
#: one a line)
_NODE_STACKLESS = re.compile(r"^\[((?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*)(?: \[[A-Za-z_$][\w$]*\])?(?:: (.*?))?\]"
                             r"(?: \{.*)?$")
#: an unhandled rejection under ``--unhandled-rejections=warn`` (or ``warn-with-error-code``): ``(node:1234)
#: UnhandledPromiseRejectionWarning: RangeError: bad offset 5`` then the error's frames, or what the promise was
#: rejected with (``oops``, ``#<Object>``, an error without a stack), then Node's hint (once a process) and its
#: sentence (``… Unhandled promise rejection. This error originated … (rejection id: 1)``), which ends it
_NODE_WARN_REJECTION = re.compile(r"^\(node:\d+\) UnhandledPromiseRejectionWarning: (.*)$")
_NODE_REJECTION_SENTENCE = "Unhandled promise rejection. "
#: the hint Node prints after a process's first warning: no record of its own
_NODE_TRACE_WARNINGS = "(Use `node --trace-warnings ...` to show where the warning was created)"
#: what an unhandled rejection's promise was rejected with, in Node's message of it (Node 15 and later)
_NODE_REJECTED = re.compile(r'The promise rejected with the reason "(.*)"\.$')
#: a PHP fatal error (its error_log, php-fpm's, Apache's): ``PHP Fatal error:  Uncaught PDOException: …
#: in /app/db.php:22`` (an exception: its class and message) or ``PHP Fatal error:  Allowed memory size …
#: in /app/report.php on line 88``; where it happened is no part of the message (Apache writes the stack
#: on the same line, ``\nStack trace:\n#0 …``)
_PHP_FATAL = re.compile(r"\bPHP (?P<what>Fatal error|Parse error|Catchable fatal error):\s+(?:Uncaught "
                        r"(?P<cls>[A-Za-z_\\][\w\\]*): )?(?P<msg>.*?)(?: in \S+?(?::\d+| on line \d+))?"
                        r"(?:\\nStack trace:.*)?(?:, referer: \S+)?$")
#: the further lines of a PHP uncaught exception: ``Stack trace:``, ``#0 /app/x.php(22): f()``, ``  thrown in …``
#: and the exceptions chained to it (``Next RuntimeException: …``, each with its stack), blank lines between them
_PHP_FRAME = re.compile(r"^(?:Stack trace:$|#\d+ |\s+thrown in |Next [A-Za-z_\\][\w\\]*: |$)")
#: an exception in the context of a Monolog line (Laravel's log, Symfony's): ``[2024-03-01 10:00:00]
#: production.ERROR: message {"exception":"[object] (Illuminate\\\\Database\\\\QueryException(code: 2002): message
#: at /app/x.php:712)`` — the class and message of the exception logged, then (Laravel) its ``[stacktrace]``
#: and ``[previous exception]`` on the lines after, up to the ``"}`` that closes the context
_MONOLOG_EXC = re.compile(r' \{.*?"exception":"\[object\] \(([\w\\]+)\(code: [^)]*\): (.*?)'
                          r'(?: at (?:[A-Za-z]:)?[^ ]*:\d+\)(?:\\n|"|$)|$)')
_MONOLOG_FRAME = re.compile(r'^(?:\[stacktrace\]$|#\d+ |\[previous exception\] |"[},]|\s*$)')  # "}, or ",… more context
_PHP_NEXT = re.compile(r"^Next ([A-Za-z_\\][\w\\]*): (.*?)(?: in \S+?:\d+)?$")
_STACK_FRAME = re.compile(r"^(?:\s+at |Emitted '[\w-]+' event |\s+File \"|\t|\s{2,}\S|Caused by: |Wrapped by: |"
                          r"\s*\.\.\. \d+ more| ---> [A-Za-z_])")


def _named_exc(s: str) -> str | None:
    """The kind of block (``_flush_block``) of an error of any name that ``s`` is, when a frame follows it: "named"
    at the start of the line, "embedded" after a message; None when it is no error's line."""
    if _CHAIN_LINK.match(s):
        return None
    m = _NAMED_HEAD.match(s) or (_NAMED_EMBEDDED.search(s) if ": " in s else None)
    if m is None or (m.group(1).isupper() and m.group(1).lower() in LEVEL_WORDS):  # ``ERROR: …``: a label
        return None
    if m.group(1) == "Trace":  # Node's console.trace(): ``Trace: message`` and the frames where it was called
        return None
    return "named" if m.start() == 0 else "embedded"


def _continues_message(line: str) -> bool:
    """Whether ``line`` may be a further line of an exception's message (a JVM's ``new
    IllegalStateException("a\\nb")`` prints ``b`` before the frames, Python ``b`` after ``ValueError: a``;
    psycopg's ``DETAIL:  Key (email)=(…) already exists.``, SQLAlchemy's ``[SQL: …]``): no line that starts
    a record (a time stamp, a level label, a JSON object) or another exception or traceback."""
    s = line.strip()
    if not s or _TIME_HEAD.match(line) or (s[0] == "{" and s[-1] == "}") or _LEVEL_LABEL.search(s[:120]):
        return False
    if ("/" in s or "-" in s) and _RECORD_TIME.search(s):
        return False
    if _py_header(line) or s in _PY_CHAIN or s.startswith(("panic: ", "fatal error: ")) or "PHP " in s:
        return False
    if s[:1] == "(" and (s == _NODE_TRACE_WARNINGS or _NODE_WARN_REJECTION.match(s)):  # Node's warning: a record
        return False
    em = _exc_line(s)
    if em and (em.group(2) is not None or "." in em.group(1)):
        return False
    return not (("Error" in s or "Exception" in s) and _embedded_exc(s))


@dataclass
class ExceptionGroup:
    kind: str
    message: str
    count: int = 0
    example: str = ""
    sources: set[str] = field(default_factory=set)
    #: the type of the first exception of its chain (its root cause), "" for an exception raised alone
    cause: str = ""


#: lines of one stack trace kept while it is read (its first and last half; the middle is dropped)
MAX_TRACE_LINES = 400


@dataclass
class AppLogStats:
    lines: int = 0
    json_lines: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)  # (level, normalized) warning+
    message_examples: dict[tuple[str, str], str] = field(default_factory=dict)
    exceptions: dict[str, ExceptionGroup] = field(default_factory=dict)
    _pending: list[str] = field(default_factory=list)
    _pending_source: str = ""
    #: the pending block is a Python traceback: 1 while its frames are read, 2 once its exception line
    #: was read (a chained traceback may still follow)
    _pending_py: int = 0
    #: the pending block is a Go crash (``panic: …`` then its goroutines' stacks): "go"; a Ruby exception
    #: and its backtrace: "ruby"; an exception after a message ("embedded") or of any name ("named"), which only
    #: frames show to be one; "" for a JVM's or Node's exception line
    _pending_kind: str = ""
    #: the last lines of the pending block that no frame has shown to be part of it yet (the further lines of a
    #: message, before the frames): read again as the lines they are when no frame follows
    _unconfirmed: int = 0
    #: a frame (``at …``) was read since the pending exception's line or its last cause's (``Caused by: …``)
    _framed: bool = False
    #: the further lines of a Python exception's message read after its line
    _py_message_lines: int = 0
    #: the last line read as an ordinary line, when it started no block: an error of any name when a frame follows it
    _prev: str | None = None
    #: the text record being read, when it started with a time stamp: (source, its warning+ message key or
    #: None, whether its example is this record's); a following line without a time stamp continues it
    _record: tuple[str, tuple[str, str] | None, bool] | None = None
    #: a Ruby Logger record of warning or worse whose message is its tags alone, as Rails' FATAL record
    #: of an exception is (the exception on the next line): (level, the line, its tags, source), counted
    #: with the next line's exception as its message, or with its tags as the message when no such line follows
    _tags_only: tuple[str, str, str, str] | None = None
    #: the line that named the tags-only record was Rails' exception line with its message still open (see
    #: ``_RAILS_OPEN``): it starts the exception's block
    _rails_open: bool = False
    #: a Ruby Logger record and its further lines (source, lines), while they may be an exception's message whose
    #: class comes after error_highlight's caret (``Logger#error(e)`` of a NoMethodError on Ruby 3.1)
    _ruby_msg: tuple[str, list[str]] | None = None
    #: Node's crash report starts with the place (``/app/server.js:12``, ``node:events:502``), the source
    #: line there and a caret under it: the line after a place is held (source, line) until the next one
    #: shows whether it is that source line — code, no log line of its own
    _after_place: bool = False
    _held: tuple[str, str] | None = None
    #: the last place read (see ``_held``), and once its source line and caret were read: (source, the three lines) —
    #: a line right under the caret (no blank line between, as before an Error) is a thrown value that is no Error
    #: (``throw 'payment declined'``, ``throw {code: 42}``), the three lines the start of its example
    _place: str = ""
    _after_caret: tuple[str, list[str]] | None = None
    #: lines that name the process that wrote them (see ``_PROC_PREFIX``) are read by a reader of their own per
    #: (source, process), counting into this one's groups: one process's trace is not cut by another's lines
    _procs: dict[str, AppLogStats] = field(default_factory=dict)
    #: per (source, thread): a record whose message may be an exception's ``Class: message`` (see ``_RUBY_EXC_MSG``):
    #: (class, message, its line)
    _ruby_cands: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: the class and message of the pending "rubytrace" block's exception
    _ruby_exc: tuple[str, str] = ("", "")
    #: the part of a line a container runtime split (see ``_CRI_LINE``) read so far, per stream: (source, text)
    #: (parts are kept in a list, joined once: a line cut into many small parts is read in linear time)
    _partial: dict[str, tuple[str, list[str], int]] = field(default_factory=dict)

    # -- input -------------------------------------------------------------------------------

    def feed(self, buf: bytes, source: str = "") -> None:
        text = buf.decode("utf-8", "replace")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        for line in lines:
            self.lines += 1
            self._line(line.rstrip("\r"), source)

    def finish(self) -> None:
        for key, (source, parts, _n) in list(self._partial.items()):  # the log ends inside a split line: what there is
            del self._partial[key]
            self._to_proc(key, "".join(parts), source)
        for proc in self._procs.values():
            proc.finish()
            self.json_lines += proc.json_lines
        self._procs.clear()
        if self._held is not None:
            held, self._held = self._held, None
            self._read_line(held[1], held[0])
        self._after_place = False
        self._count_tags_only("")
        self._flush()

    def _count_message(self, level: str, msg: str, example: str) -> tuple[tuple[str, str], bool]:
        """Count a warning-or-worse message in its class; the class, and whether ``example`` is its example."""
        key = (level, normalize(msg))
        self.messages[key] += 1
        own = key not in self.message_examples
        if own:
            self.message_examples[key] = example[:500]
        return key, own

    def _count_tags_only(self, line: str, source: str = "") -> bool:
        """Count the pending tags-only Ruby record (see ``_tags_only``): its message is ``line``'s exception
        (``RecordNotFound (Couldn't find User with 'id'=1):``, tags and all) when ``line`` is Rails' line of
        one in the same log; True then."""
        if self._tags_only is None:
            return False
        level, head, tags, src = self._tags_only
        self._tags_only = None
        rails = (src == source and line.endswith("):") and not _TIME_HEAD.match(line)
                 and _RUBY_LOGGED.match(line) is not None)
        opened = (None if rails or src != source or _TIME_HEAD.match(line) or self._pending
                  else _RAILS_OPEN.match(line))
        if rails:
            self._count_message(level, _RUBY_TAG_PREFIX.sub("", line).strip().removesuffix(":"), head + "\n" + line)
        elif opened:  # the exception's message goes on in the next lines: its first line names it
            self._count_message(level, f"{opened.group('cls')} ({opened.group('msg')})", head + "\n" + line)
            self._rails_open = True
        else:  # nothing to name: the tags are the message
            self._count_message(level, tags, head)
        return rails

    def _keep(self, line: str) -> None:
        self._pending.append(line)
        if len(self._pending) > MAX_TRACE_LINES:  # a runaway trace: keep its head and its end
            del self._pending[MAX_TRACE_LINES // 2]

    def _proc(self, line: str, source: str) -> bool:
        """Read a line whose prefix names the process that wrote it with that process's reader; True then."""
        p = _PROC_PREFIX.match(line)
        if p is None:
            return False
        rest = line[p.end():]
        if p.group(3):  # docker compose: the time stamp of --timestamps is no part of the line
            rest = _DOCKER_STAMP.sub("", rest, 1) if rest[:1].isdigit() else rest
        # not by source: a trace goes on from a rotated file into the next
        self._to_proc(p.group(1) or p.group(2) or p.group(3), rest, source)
        return True

    def _to_proc(self, key: str, rest: str, source: str) -> None:
        """Read ``rest``, a line without its prefix, with the reader of the process ``key`` named."""
        proc = self._procs.get(key)
        if proc is None:
            if len(self._procs) >= _MAX_PROCS:  # pids come and go: the idle readers are dropped
                for k in [k for k, r in self._procs.items() if not (r._pending or r._held or r._tags_only)]:
                    self._procs.pop(k).finish()
            proc = self._procs[key] = AppLogStats(levels=self.levels, messages=self.messages,
                                                  message_examples=self.message_examples, exceptions=self.exceptions)
        before = proc.json_lines
        proc._line(rest, source)
        self.json_lines += proc.json_lines - before
        proc.json_lines = 0

    def _line(self, line: str, source: str) -> None:
        if line[:1] == "\ufeff":  # the byte order mark a file starts with (.NET's, PowerShell's UTF-8): no part of it
            line = line[1:]
        if line[:8] == '{"log":"' and self._docker_json(line, source):
            return
        if line[:1].isdigit() and line[19:20] in (".", "Z", "+", "-"):
            cri = _CRI_LINE.match(line)
            if cri:
                self._container(f"container {cri.group(1)}", cri.group(3) or "", cri.group(2) == "P", source)
                return
        if "\x1b" in line:
            colored = _COMPOSE_COLORED.match(line)
            line = _ANSI.sub("", line[colored.end():] if colored else line)
            if colored:
                self._to_proc(colored.group(1), _DOCKER_STAMP.sub("", line, 1) if line[:1].isdigit() else line, source)
                return
        first = line[:1]
        if (first.isdigit() or first.isupper() or (first.islower() and "| " in line)) and self._proc(line, source):
            return
        if first == "[" and " said into " in line:
            fpm = _FPM_CHILD.match(line)
            if fpm:  # PHP-FPM's catch_workers_output: each line a child wrote, read per child
                self._to_proc(f"php-fpm {fpm.group(1)} {fpm.group(2)}", fpm.group(3), source)
                return
        if "PHP message: " in line[:30]:
            line = _FPM_PHP_MESSAGE.sub("", line, 1)
        if line[:1].isdigit():
            line = _MANAGER_STAMP.sub("", line, 1)
        if self._held is not None:
            held, self._held = self._held, None
            if held[0] == source and _NODE_CARET.match(line):  # Node's source excerpt and its caret
                self._after_caret = (source, [self._place, held[1], line])
                return
            self._read_line(held[1], held[0])
        elif self._after_place and line.strip() and not self._pending:
            self._after_place = False
            self._held = (source, line)
            return
        elif self._after_caret is not None:
            after, self._after_caret = self._after_caret, None
            if after[0] == source:
                if not line.strip() and len(after[1]) == 3:
                    # an Error's stack follows a blank line; so does one printed without its stack
                    self._after_caret = (source, [*after[1], ""])
                elif self._thrown_value(line, source, after[1]):
                    return
        self._after_place = bool(_NODE_PLACE.match(line))
        if self._after_place:
            self._place = line
        self._read_line(line, source)

    def _docker_json(self, line: str, source: str) -> bool:
        """Read a record of Docker's json-file log (see ``_CRI_LINE``): the line of the program's output in it; True
        then (False for a JSON line of any other shape, read as the line it is)."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return False
        if not isinstance(obj, dict) or not isinstance(obj.get("log"), str) or not isinstance(obj.get("stream"), str):
            return False
        text: str = obj["log"]
        whole = text.endswith("\n")
        self._container(f"container {obj['stream']}", text[:-1].rstrip("\r") if whole else text, not whole, source)
        return True

    def _container(self, key: str, text: str, partial: bool, source: str) -> None:
        """Read a line of a program's output that a container runtime logged, with the reader of its stream: a part of
        a line (``partial``) is held until the rest comes."""
        held = self._partial.get(key)
        if held is None:
            if partial and len(text) < _MAX_PARTIAL:
                self._partial[key] = (source, [text], len(text))
            else:
                self._to_proc(key, text, source)
            return
        first, parts, n = held
        parts.append(text)
        n += len(text)
        if partial and n < _MAX_PARTIAL:
            self._partial[key] = (first, parts, n)
            return
        del self._partial[key]
        self._to_proc(key, "".join(parts), first)

    def _thrown_value(self, line: str, source: str, excerpt: list[str]) -> bool:
        """Start the block of a value that is no Error thrown and not caught (``line``, right under the caret of
        Node's report: an Error's stack follows a blank line, and a worker's report its own place), after the
        ``excerpt`` (the place, its source line and the caret); True then."""
        s = line.strip()
        if len(excerpt) > 3:  # after the blank line: an Error printed without its stack (``[TypeError: …]``), or none
            if self._pending or not _NODE_STACKLESS.match(line):
                return False
            self._pending, self._pending_source, self._pending_kind = [*excerpt, line], source, "stackless"
            return True
        if not s or self._pending or _NODE_PLACE.match(line) or _exc_line(s) or _TIME_HEAD.match(line):
            return False
        if s.startswith("{") and s.endswith("}") and len(s) > 2 and '"' in s:  # a JSON log line
            return False
        self._pending, self._pending_source, self._pending_kind = [*excerpt, line], source, "thrown"
        return True

    def _read_line(self, line: str, source: str) -> None:
        if self._tags_only is not None and not self._count_tags_only(line, source) and self._rails_open:
            self._rails_open = False
            self._pending, self._pending_source, self._pending_kind = [line], source, "ruby"
            return
        if self._pending:
            if self._pending_kind == "go":
                # "fatal error: …" is printed once per goroutine that hit it, one line after the other; the same
                # line after the stack is the next crash (the same bug in the next run of the program)
                if _GO_STACK.match(line) or line == self._pending[-1] == self._pending[0]:
                    self._keep(line)
                    return
            elif self._pending_kind == "rubytrace":
                if _RUBY_FRAME.match(line) and line.strip():
                    self._keep(line)
                    return
            elif self._pending_kind == "rust":
                if _rust_continues(self._pending, line):
                    self._keep(line)
                    if line.startswith("note: "):  # the last line of Rust's report
                        self._flush()
                    return
            elif self._pending_kind == "ruby":
                if _RUBY_FRAME.match(line) or _ruby_highlight(self._pending, line) or _rails_open(self._pending):
                    self._keep(line)
                    return
                end = _ruby_chain_end(self._pending)
                if end < len(self._pending):
                    # the block ends before the next crash's exception, whose block this line may go on
                    tail, self._pending = self._pending[end:], self._pending[:end]
                    self._flush()
                    self._pending, self._pending_source, self._pending_kind = tail, source, "ruby"
                    self._read_line(line, source)
                    return
            elif self._pending_kind == "monolog":
                if _MONOLOG_FRAME.match(line):
                    self._keep(line)
                    return
            elif self._pending_kind == "php":
                if _PHP_FRAME.match(line):
                    self._keep(line)
                    return
            elif self._pending_kind == "v8":
                if _V8_STACK.match(line):
                    self._keep(line)
                    return
            elif self._pending_kind == "stackless":
                # its properties over several lines (``[Error: …] {``, one a line, ``}``)
                if (self._pending[4].endswith(" {") and self._pending[-1] != "}" and (line[:1] == " " or line == "}")
                        and len(self._pending) <= _MAX_MESSAGE_LINES):
                    self._keep(line)
                    return
            elif self._pending_kind == "rejection":
                w = _NODE_WARN_REJECTION.match(line) if line[:6] == "(node:" else None
                if line == _NODE_TRACE_WARNINGS or (w and w.group(1).startswith(_NODE_REJECTION_SENTENCE)):
                    # Node's hint and its sentence end the warning: the lines read since its first are its own
                    self._keep(line)
                    self._unconfirmed = 0
                    if w:
                        self._flush()
                    return
                if w is None and self._trace_line(line):
                    return
            elif self._pending_kind == "thrown":
                # the value's further lines (an object inspected over several), and Node's hint after it
                if line.strip() and not line.startswith("Node.js v") and len(self._pending) <= _MAX_MESSAGE_LINES:
                    self._keep(line)
                    return
            elif self._pending_py == 2:
                # after the exception line: the further lines of its message, the blank lines and the sentence
                # of a chained exception, then the next traceback of the chain; anything else ends the traceback
                last = self._pending[-1].strip()
                chained = next((ln for ln in reversed(self._pending) if ln.strip()), "").strip() in _PY_CHAIN
                header = _py_header(line) if chained else ""
                if header or not line.strip() or line.strip() in _PY_CHAIN:
                    self._keep(header or line)
                    self._py_message_lines = 0
                    if header:
                        self._pending_py = 1
                    return
                if (last and last not in _PY_CHAIN and self._py_message_lines < _MAX_MESSAGE_LINES
                        and _continues_message(line)):
                    self._keep(line)
                    self._py_message_lines += 1
                    return
            elif not self._pending_py:
                if self._trace_line(line):
                    return
            elif _STACK_FRAME.match(line) or line.startswith(" ") or not line or line.startswith(_LOGURU_CAUGHT):
                # (loguru's traceback: a blank line between its frames, "> File …" where the exception was caught)
                self._keep(line)
                return
            elif _py_exception(line.strip()):
                # the exception line ends a Python traceback (a chained one may follow)
                self._keep(line)
                self._pending_py = 2
                return
            # any other line ends the block, and is read as the ordinary line it is
            self._flush()
        if line[:1] == "(" and self._node_warning(line, source):
            return
        s = line.lstrip()
        rm = self._ruby_msg
        if rm is not None:
            if rm[0] != source or len(rm[1]) >= _RUBY_MSG_LINES or _TIME_HEAD.match(line):
                self._ruby_msg = None
            elif _RUBY_CARET_CLASS.match(line):
                # the exception's class after error_highlight's caret: the Logger record is that exception
                self._ruby_msg = self._record = self._prev = None
                self._pending, self._pending_source, self._pending_kind = [*rm[1], line], source, "ruby"
                return
            else:
                rm[1].append(line)
        prev, self._prev = self._prev, None
        if prev is not None and line[:1] in " \t" and _AT_FRAME.match(line):  # across a rotation too
            # a frame after a line read as no exception: an error of another name (see ``_NAMED_HEAD``)
            named = _named_exc(prev)
            if named is not None:
                self._pending, self._pending_source, self._pending_kind = [prev, line], source, named
                self._framed, self._record = True, None
                return
        record, self._record = self._record, None
        if s.startswith("{") and s.endswith("}") and self._json(s, source):
            return
        fields = _logfmt(s) if "level=" in s else None
        if fields:
            self._structured(fields, s, source)
            return
        header = _py_header(line)
        if header:
            self._pending = [header]
            self._pending_source = source
            self._pending_py = 1
            return
        if line[:8] == "thread '" and _RUST_PANIC.match(line):
            self._pending, self._pending_source, self._pending_kind = [line], source, "rust"
            return
        rb = _RUBY.search(line) or (_RUBY_LOGGED.match(line) if line.endswith(")") or line.endswith("):") else None)
        go = _GO_PANIC.match(line) if "panic" in line or line.startswith("fatal error: ") else None
        v8 = line.startswith(_V8_FATAL) and len(line) > len(_V8_FATAL)
        php = _PHP_FATAL.search(line) if "PHP " in line and not (rb or go) else None
        mono = _MONOLOG_EXC.search(line) if '"exception":"[object] (' in line and not (rb or go or php) else None
        em = None if rb or go or php or mono or v8 else _exc_line(s)
        exc = bool(rb or go or php or mono or v8) or bool(em and (em.group(2) is not None or "." in em.group(1)))
        # an exception after a message on the line (see _embedded_exc): held until a frame shows it is one
        emb = (_embedded_exc(s) if not exc and ("Error" in s or "Exception" in s) and not _CHAIN_LINK.match(s)
               else None)
        stamped = bool(_TIME_HEAD.match(line))
        if rb and not stamped and rb.re is not _RUBY:
            # Rails' exception line inside its FATAL record: no log line of its own
            self._pending, self._pending_source, self._pending_kind = [line], source, "ruby"
            return
        if record and record[0] == source and not stamped and not exc and line.strip():
            # a further line of a multi-line message: part of its example, not a log line of its own (a
            # level word in it — a dumped setting "level: ERROR" — counts nothing)
            _, open_key, open_own = record
            if open_key is not None and open_own and len(self.message_examples[open_key]) < 2000:
                self.message_examples[open_key] = (self.message_examples[open_key] + "\n" + line)[:2000]
            self._record = record
            if emb:
                self._pending, self._pending_source, self._pending_kind = [s], source, "embedded"
            else:
                self._prev = s
            return
        m = _text_level(line)
        level = LEVEL_WORDS.get(m.group(1).lower(), "info") if m else None
        key: tuple[str, str] | None = None
        own = False
        if level:
            self.levels[level] += 1
            if level in ("warning", "error", "critical"):
                msg = _LEVEL_PROCESS.sub("", line[m.end():mono.start() if mono else None], 1).lstrip(" :-]|") if m else line
                if m and m.group(1).lower() == "fatal" and msg.startswith("error:"):
                    msg = msg[6:].lstrip()  # Go's "fatal error: …", PHP's "PHP Fatal error:  …": not "error: …"
                if go:
                    msg = go.group(3)  # net/http's "http: panic serving <client>: …" classed as the panic is
                ruby = _RUBY_HEAD_LINE.match(line)
                if ruby:  # the request's tags are no part of the message: [<uuid>] made one class of all
                    msg = _RUBY_TAG_PREFIX.sub("", line[ruby.end():]).strip()
                if ruby and not msg and not rb and not go:
                    self._tags_only = (level, line, line[ruby.end():], source)
                else:
                    key, own = self._count_message(level, _message_class_text(msg), line)
                    tid = _RECORD_TID.search(line, 0, 200) if stamped else None
                    head = self._ruby_record(msg, source, tid.group(1) if tid else "", line) if stamped else None
                    if head is not None:  # the backtrace of the exception the record before was
                        self._ruby_exc = (head[0], head[1])
                        self._pending, self._pending_source, self._pending_kind = [head[2], line], source, "rubytrace"
                        return
        if stamped:
            self._record = (source, key, own)
            if not (em and exc) and not (go or rb or php or mono or v8) and _RUBY_HEAD_LINE.match(line):
                self._ruby_msg = (source, [line])
        if (em and exc) or go or rb or php or mono or v8:
            self._pending = [line if rb or php or mono else s]
            self._pending_source = source
            self._pending_kind = ("go" if go else "ruby" if rb else "php" if php else "monolog" if mono
                                  else "v8" if v8 else "")
        elif emb:
            self._pending, self._pending_source, self._pending_kind = [s], source, "embedded"
        else:
            self._prev = s

    def _ruby_record(self, msg: str, source: str, tid: str, example: str) -> tuple[str, str, str] | None:
        """A warning-or-worse record's part in an exception a Ruby error handler logs in two records (see
        ``_RUBY_EXC_MSG``): when its message is the backtrace's first frame after the same thread's ``Class:
        message``, that record's (class, message, example); a ``Class: message`` is kept for the thread's next one
        (``example``: what this record shows)."""
        key = f"{source}\0{tid}"
        cand = self._ruby_cands.pop(key, None)
        if cand is not None and _RUBY_FRAME_MSG.match(msg):
            return cand
        exc = _RUBY_EXC_MSG.match(msg) if ": " in msg else None
        if exc is not None:
            if len(self._ruby_cands) >= _MAX_RUBY_CANDIDATES:
                self._ruby_cands.pop(next(iter(self._ruby_cands)))
            self._ruby_cands[key] = (exc.group(1), exc.group(2), example)
        return None

    def _node_warning(self, line: str, source: str) -> bool:
        """Start the block of an unhandled rejection Node warned of (see ``_NODE_WARN_REJECTION``); Node's hint after a
        warning and the sentence after a rejection's, when read alone, are no record: True for these lines."""
        w = _NODE_WARN_REJECTION.match(line)
        if w is None and line != _NODE_TRACE_WARNINGS:
            return False
        self._prev = self._record = None
        if w is not None and not w.group(1).startswith(_NODE_REJECTION_SENTENCE):
            self._pending, self._pending_source, self._pending_kind = [line], source, "rejection"
        return True

    def _trace_line(self, line: str) -> bool:
        """Keep ``line`` in the pending JVM or Node trace if it is one of its lines (a frame, a cause, the further
        lines of a message before the frames, held as unconfirmed until a frame follows); True then."""
        if _AT_FRAME.match(line):
            self._keep(line)
            self._unconfirmed, self._framed = 0, True
            return True
        if _STACK_FRAME.match(line):
            self._keep(line)
            if self._unconfirmed or (not self._framed and self._pending_kind == "embedded"):
                self._unconfirmed += 1
            if _CHAIN_LINK.match(line.lstrip()):
                self._framed = False  # its message may go on over lines too
            return True
        if line == "}" and self._pending[-1].startswith(" ") and not self._unconfirmed:
            # the brace that closes the properties Node prints after an error's frames (``{`` … ``[cause]:``)
            self._keep(line)
            self._flush()
            return True
        if (not self._framed and self._unconfirmed < _MAX_MESSAGE_LINES
                and (not line.strip() or _continues_message(line))):
            self._keep(line)
            self._unconfirmed += 1
            return True
        return False

    def _flush(self) -> None:
        """Count the pending block; its unconfirmed lines (no frame followed them) are read again as the lines
        they are."""
        held: list[str] = []
        if self._pending_kind == "ruby" and not self._unconfirmed:
            self._unconfirmed = len(self._pending) - _ruby_chain_end(self._pending)
        if self._unconfirmed:
            held = self._pending[-self._unconfirmed:]
            del self._pending[-self._unconfirmed:]
        self._unconfirmed, self._framed, self._py_message_lines = 0, False, 0
        source = self._pending_source
        self._flush_block()
        for ln in held:
            self._read_line(ln, source)
        if held and self._pending:
            self._flush()

    def _flush_block(self) -> None:
        block, self._pending = self._pending, []
        py, self._pending_py = self._pending_py, 0
        kind, self._pending_kind = self._pending_kind, ""
        if not block:
            return
        if kind == "ruby":
            self._ruby_exception(block)
            return
        if kind == "monolog":
            while block and not block[-1].strip():
                block.pop()
            mono = _MONOLOG_EXC.search(block[0])
            if mono:
                cls = mono.group(1).replace("\\\\", "\\")
                self._exception(cls, mono.group(2), "\n".join(block), self._pending_source, _chain_root(block, cls))
            return
        if kind == "php":
            m = _PHP_FATAL.search(block[0])
            if m:
                kind, msg, cause = m.group("cls") or f"PHP {m.group('what')}", m.group("msg"), ""
                # PHP prints the chain from its first exception: each "Next …" is the one raised after it
                for ln in block[1:]:
                    nxt = _PHP_NEXT.match(ln)
                    if nxt:
                        kind, msg, cause = nxt.group(1), nxt.group(2), cause or m.group("cls") or ""
                self._exception(kind, msg, "\n".join(block).rstrip(), self._pending_source, cause)
            return
        if kind == "v8":
            while block and not block[-1].strip():
                block.pop()
            if not any(_V8_PROOF.match(ln) for ln in block[1:]):
                return
            self._exception(_V8_FATAL[:-2], block[0][len(_V8_FATAL):], "\n".join(block), self._pending_source)
            return
        if kind == "stackless":
            m = _NODE_STACKLESS.match(block[4])
            if m:
                self._exception(m.group(1), m.group(2) or "", "\n".join(block), self._pending_source,
                                _chain_root(block[4:], m.group(1)))
            return
        if kind == "rejection":
            self._rejection(block)
            return
        if kind == "thrown":
            # after the place, its code and caret (the hint alone: the value was that text)
            value = [ln for ln in block[3:] if ln != _NODE_TRACE_UNCAUGHT] or block[3:]
            # an object inspected over several lines (``{`` … ``}``) is grouped whole, as Node prints a short one
            msg = " ".join(ln.strip() for ln in value) if value[0].rstrip().endswith(("{", "[")) else value[0]
            self._exception("Uncaught", msg, "\n".join(block), self._pending_source)
            return
        if kind == "rust":
            self._rust_panic(block)
            return
        if kind == "rubytrace":
            self._exception(*self._ruby_exc, "\n".join(block), self._pending_source)
            return
        if kind == "go":
            while block and not block[-1].strip():
                block.pop()
            m = _GO_PANIC.match(block[0])
            if m:
                self._exception(m.group(1) or m.group(2), m.group(3), "\n".join(block), self._pending_source)
            return
        if py:
            while block and not block[-1].strip():
                block.pop()
            exc, at = _py_final(block)
            if exc:
                self._exception(exc[0], exc[1], _py_example(block, at), self._pending_source,
                                _chain_root(block, exc[0]))
            return
        if kind in ("embedded", "named"):
            m = (_NAMED_HEAD.match(block[0]) if kind == "named"
                 else _embedded_exc(block[0]) or _NAMED_EMBEDDED.search(block[0]))
            if m and any(_AT_FRAME.match(ln) for ln in block[1:]):
                self._exception(m.group(1), m.group(2) or "", "\n".join(block), self._pending_source,
                                _chain_root(block, m.group(1)))
            return
        head = block[0].strip()
        em = _exc_line(head)
        # a bare "Error: …" (no package, no name before the suffix) is an exception only with a stack
        if em and (len(block) > 1 or (em.group(2) is not None and not _BARE_EXC.fullmatch(em.group(1)))):
            kind, msg = em.group(1), em.group(2) or ""
            self._exception(kind, msg, "\n".join(block), self._pending_source, _chain_root(block, kind))

    def _rust_panic(self, block: list[str]) -> None:
        """A Rust panic (see ``_RUST_PANIC``): an exception of type ``panic``, as a Go program's is, grouped by its
        message; a line at level critical, its message class the panic's message."""
        m = _RUST_PANIC.match(block[0])
        if m is None:
            return
        if m.group(1) is not None:
            msg = m.group(1)
        else:
            end = next((i for i, ln in enumerate(block[1:], 1) if _RUST_FRAME.match(ln) or ln.startswith("note: ")),
                       len(block))
            msg = "\n".join(block[1:end])
        self.levels["critical"] += 1
        self._count_message("critical", msg.split("\n", 1)[0], "\n".join(block)[:500])
        self._exception("panic", msg, "\n".join(block), self._pending_source)

    def _rejection(self, block: list[str]) -> None:
        """An unhandled rejection Node warned of (see ``_NODE_WARN_REJECTION``): an error with its frames is of the
        error's type, as when the rejection ends the process; what else the promise was rejected with (a string, an
        object, an error without a stack) is an ``UnhandledPromiseRejection`` of that text, as Node names it then."""
        w = _NODE_WARN_REJECTION.match(block[0])
        if w is None:
            return
        body = [w.group(1), *(ln for ln in block[1:] if ln != _NODE_TRACE_WARNINGS and not ln.startswith("(node:"))]
        head = _exc_line(body[0]) or _NAMED_HEAD.match(body[0])
        if head is not None and any(_AT_FRAME.match(ln) for ln in body[1:]):
            kind = head.group(1)
            self._exception(kind, head.group(2) or "", "\n".join(block), self._pending_source, _chain_root(body, kind))
        else:
            self._exception("UnhandledPromiseRejection", w.group(1), "\n".join(block), self._pending_source)

    def _ruby_exception(self, block: list[str]) -> None:
        """A Ruby exception line and the backtrace after it. One logged by Logger or Rails is an exception
        when a backtrace follows, or its class is namespaced (``PG::UniqueViolation``) or named like one
        (``…Error``): ``Connected (PostgreSQL)`` is none."""
        while block and not block[-1].strip():
            block.pop()
        m = _RUBY.search(block[0])
        cause = ""
        if m:
            kind, msg = m.group(2), m.group(1)
            # the causes Ruby prints after an uncaught exception's backtrace, each with its own: the last the root
            cause = next((c.group(2) for c in map(_RUBY.search, reversed(block[1:])) if c and _ruby_head(c.string)
                          and c.string[:1] not in " \t"), "")
        else:
            m = _RUBY_LOGGED.match(block[0])
            o = None if m else _RAILS_OPEN.match(block[0])
            caret = next(filter(None, map(_RUBY_CARET_CLASS.match, block[1:_RUBY_MSG_LINES + 1])), None)
            head = _RUBY_HEAD_LINE.match(block[0])
            if o and any(ln.endswith("):") for ln in block[1:_RAILS_OPEN_LINES]):
                kind, msg = o.group("cls"), o.group("msg")
            elif caret and head and not m:
                kind, msg = caret.group(1), _RUBY_TAG_PREFIX.sub("", block[0][head.end():]).strip()
            elif not m:
                return
            else:
                kind, msg = m.group("cls") or m.group("cls2"), m.group("msg") or m.group("msg2") or ""
            if not (any(":in " in ln for ln in block[1:]) or "::" in kind or re.search(_EXC_SUFFIX + "$", kind)):
                return
        self._exception(kind, msg, "\n".join(block), self._pending_source, cause)

    def _json(self, s: str, source: str) -> bool:
        try:
            obj = json.loads(s)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser's recursion limit
            return False
        if not isinstance(obj, dict):
            return False
        self.json_lines += 1
        self._structured(obj, s, source)
        return True

    def _structured(self, obj: dict[str, Any], s: str, source: str) -> None:
        """A record of fields (a JSON line, a logfmt line): its level, message and exception."""
        obj = _loguru_record(obj) or obj
        level = _json_level(obj)
        # a record with no message (zerolog's log.Error().Err(err).Send()) is classed by its error
        msg = _first_str(obj, _JSON_MESSAGE) or _go_error(obj) or ""
        at = _trace_in_message(msg)
        trace, msg = (msg[at:], msg[:at].rstrip() or msg[at:].split("\n", 1)[0]) if at >= 0 else ("", msg)
        if level:
            self.levels[level] += 1
            if level in ("warning", "error", "critical"):
                key = (level, normalize(msg))
                self.messages[key] += 1
                self.message_examples.setdefault(key, s[:500])
                tid = obj.get("tid")
                head = self._ruby_record(msg, source, tid if isinstance(tid, str) else "", f"{msg}")
                if head is not None:  # the backtrace of the exception the record before was
                    self._exception(head[0], head[1], f"{head[2]}\n{msg}", source)
                    return
        exc = _json_exception(obj)
        if exc is None and trace:
            kind, emsg = _exception_from_text(trace)
            exc = (kind, emsg, trace.rstrip()) if kind else None
        if exc is not None:
            kind, emsg, trace = exc
            self._exception(kind, emsg, trace or s[:2000], source, _chain_root(trace.split("\n"), kind))

    def _exception(self, kind: str, message: str, example: str, source: str, cause: str = "") -> None:
        """Count an exception in its group: the outermost exception's ``kind`` and ``message`` (the one raised
        last, that the log is about: Sentry's issue title) and ``cause``, the type of the first exception of
        its chain (a JVM's last ``Caused by:``, Python's first traceback, PHP's first ``previous``), "" for
        none: a wrapper (``RuntimeException: request failed``) around two causes makes two groups."""
        # printed root cause first: the last "Wrapped by:" is the one raised (a JVM's trace; in a Python traceback
        # it is a line of a message, or of what was printed after it)
        # ("Wrapped by: " then no type — "Wrapped by: (see above)" — is no link)
        wrapped = (_WRAPPED.findall(example) if "\nWrapped by: " in example
                   and not _py_header(example.partition("\n")[0]) else None)
        if wrapped:
            cause, (kind, message) = kind, wrapped[-1]
        # a message of several lines (a JVM's, Python's, a JSON field's): grouped by its first line, as
        # the text formats print it before the frames or after the exception's type
        message = message.strip().split("\n", 1)[0]
        if " ---> " in message and _DOTNET_INNER.search(message):  # .NET before Core 3.0: the inner exception after it
            message = message[:message.index(" ---> ")]
        if message == "null" and _JVM_CLASS.fullmatch(kind):
            # logback and log4j2 print an exception without a message as ``…Exception: null`` (its getMessage()), the
            # JVM as the class alone (uncaught, printStackTrace()): one group
            message = ""
        if kind == "UnhandledPromiseRejection":  # Node's sentence around what the promise was rejected with
            reason = _NODE_REJECTED.search(message)
            message = reason.group(1) if reason else message
        elif kind.endswith("ExceptionGroup"):  # "(1 sub-exception)" and "(2 sub-exceptions)": one group
            message = message.replace(" sub-exception)", " sub-exceptions)")
        nm = normalize(message)
        gid = group_id(kind, nm, cause)
        g = self.exceptions.get(gid)
        if g is None:
            g = self.exceptions[gid] = ExceptionGroup(kind, nm, example=example[:3000], cause=cause)
        g.count += 1
        if source:
            g.sources.add(source)


#: the fields a record's message is in: .NET's too — Serilog's compact format (CLEF: ``@mt``, the message template, the
#: class every rendering of it belongs to; ``@m``, the rendered message, when there is no template), its
#: ``JsonFormatter`` (``MessageTemplate``, ``RenderedMessage``) and Microsoft.Extensions.Logging's JSON console
#: format (``Message``)
_JSON_MESSAGE = ("message", "msg", "event", "@message", "text", "@mt", "@m", "MessageTemplate", "RenderedMessage",
                 "Message")


def _loguru_record(obj: dict[str, Any]) -> dict[str, Any] | None:
    """loguru's JSON (``serialize=True``): ``{"text": the line as its text sink writes it, traceback and all,
    "record": {"level": {"name": …}, "message": …, "exception": {"type", "value", "traceback"} or null, …}}``, as
    the fields the other loggers write (``level``, ``message``, ``exc_type``/``exc_message``/``exc_info``: the
    traceback, from ``text``); None for any other record — an application's own with a ``record`` and a ``text``
    (``{"level": "error", "message": …, "record": {"id": 5}, "text": …}``): loguru's level is an object with its
    ``name``."""
    rec, text = obj.get("record"), obj.get("text")
    if not isinstance(rec, dict) or not isinstance(text, str):
        return None
    level = rec.get("level")
    if not isinstance(level, dict) or not isinstance(level.get("name"), str):
        return None
    out: dict[str, Any] = {"level": level["name"], "message": rec.get("message")}
    exc = rec.get("exception")
    if isinstance(exc, dict) and isinstance(exc.get("type"), str) and exc["type"]:
        at = text.find(_PY_TRACEBACK)
        out.update(exc_type=exc["type"], exc_message=exc.get("value"), exc_info=text[at:] if at >= 0 else "")
    return out


def _first_str(obj: dict[str, Any], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str) and v:
            return v
    return ""


#: a logfmt pair: key=value, the value bare or quoted with backslash escapes
_LOGFMT_PAIR = re.compile(r'(?:^|\s)([\w.@/-]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def _logfmt(line: str) -> dict[str, Any] | None:
    """The fields of a logfmt line (``time=… level=error msg="…" error="…"``: logrus's text format, Go's
    slog TextHandler, Heroku) with a known level and a message, or None."""
    obj: dict[str, Any] = {}
    for k, v in _LOGFMT_PAIR.findall(line):
        if v.startswith('"'):
            try:
                v = json.loads(v)
            except ValueError:  # a Go escape JSON lacks (\x01): the text between the quotes
                v = v[1:-1]
        obj[k] = v
    if ("msg" in obj or "message" in obj) and _json_level(obj):
        return obj
    return None


def _get(obj: Any, path: str) -> Any:
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return obj.get(path) if isinstance(obj, dict) else None
    return cur


def _json_level(obj: dict[str, Any]) -> str | None:
    # .NET: Serilog's compact format (``@l``), its JsonFormatter (``Level``), Microsoft.Extensions.Logging's JSON
    # console format (``LogLevel``)
    # (Monolog's JSON: ``level`` a number of its own, 400 for ERROR, its name in ``level_name``)
    for k in ("level", "levelname", "severity", "log.level", "loglevel", "lvl", "@level", "@l", "Level", "LogLevel",
              "level_name"):
        v = _get(obj, k)
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            pino = _PINO_LEVELS.get(v - v % 10 if v >= 10 else v)
            if pino:
                return pino
            continue
        if isinstance(v, str) and v:
            # winston's colorize() before json() writes the level in its terminal colours: "\x1b[31merror\x1b[39m"
            return LEVEL_WORDS.get((_ANSI.sub("", v) if "\x1b" in v else v).lower())
    if "@t" in obj and ("@mt" in obj or "@m" in obj):  # Serilog's compact format leaves out Information, its default
        return "info"
    return None


#: (type, message, stack) paths of the exception fields structured loggers write, one row per logger
_JSON_EXC_FIELDS = (
    ("error.type", "error.message", "error.stack_trace"),  # Elastic ECS (ecs-logging, logstash)
    ("err.type", "err.message", "err.stack"),  # pino
    ("err.name", "err.message", "err.stack"),  # bunyan
    ("exception.type", "exception.message", "exception.stacktrace"),  # OpenTelemetry
    # log4j2 JsonTemplateLayout's LogstashJsonEventLayoutV1 template
    ("exception.exception_class", "exception.exception_message", "exception.stacktrace"),
    ("exc_type", "exc_message", "exc_info"),
    ("error.kind", "error.message", "error.stack"),  # Datadog's standard attributes
)
#: fields holding a stack trace or traceback as text (python-json-logger's exc_info, structlog's
#: format_exc_info, winston's stack, logstash-logback-encoder's stack_trace; .NET's ``Exception.ToString()``:
#: Serilog's compact ``@x``, its JsonFormatter's and Microsoft.Extensions.Logging's ``Exception``)
_JSON_EXC_TEXT = ("exc_info", "exception", "stack", "stack_trace", "stacktrace", "traceback", "error", "@x",
                  "Exception")

_Exc = tuple[str, str, str]  # (type, message, stack text or "")


def _exc_fields(obj: dict[str, Any]) -> _Exc | None:
    """The exception's type, message and stack in fields of their own (ECS, pino, bunyan, OpenTelemetry)."""
    for tpath, mpath, spath in _JSON_EXC_FIELDS:
        t = _get(obj, tpath)
        if isinstance(t, str) and t:
            m = _get(obj, mpath)
            st = _get(obj, spath)
            m, st = m if isinstance(m, str) else "", st.rstrip() if isinstance(st, str) else ""
            # pino (pino-std-serializers 7) writes an error's message followed by its causes' (``request 1 failed:
            # connect ECONNREFUSED …``), and its causes in the stack (``caused by: DbError: …``): the error's own
            # message is the one its stack starts with, as bunyan and Node's own print of it have it
            own = st.split("\n", 1)[0].partition(": ")[2]
            if own and m.startswith(own + ": "):
                m = own
            return t, m, _with_causes(st, _get(obj, tpath.rpartition(".")[0]) if "." in tpath else None)
    return None


_TYPE_NAME = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")


def _with_causes(stack: str, err: Any) -> str:
    """An error's stack with its causes written in fields of their own (``err.cause``: pino's ``errWithCause``
    serializer, a VError serialized as it is; ``{type|name, message, stack, cause}`` each) after it, as bunyan
    prints a VError's (``Caused by: DbError: …`` and its frames): the last is the chain's root, as for the
    causes a stack already shows (pino's ``caused by:``, bunyan's ``Caused by:``), which are not added again.
    A cause that is no error (``cause: 'timeout'``) is none."""
    cur = err.get("cause") if isinstance(err, dict) else None
    if not isinstance(cur, dict) or any(_JVM_CAUSE.match(ln) for ln in stack.split("\n")):
        return stack
    parts = [stack] if stack else []
    while isinstance(cur, dict) and len(parts) < MAX_TRACE_LINES:
        name = cur.get("type") or cur.get("name")
        if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
            break
        msg, st = cur.get("message"), cur.get("stack")
        head = f"{name}: {msg}" if isinstance(msg, str) and msg else name
        st = st.rstrip() if isinstance(st, str) and st.strip() else head
        parts.append("Caused by: " + (st if st.split("\n", 1)[0].startswith(name) else head + "\n" + st))
        cur = cur.get("cause")
    return "\n".join(parts)


def _exc_log4j2_thrown(obj: dict[str, Any]) -> _Exc | None:
    """log4j2's ``JsonLayout``: ``thrown`` is ``{name, message, extendedStackTrace, cause: {…}}``, the stack a
    list of frames (``{class, method, file, line}``) or, with ``stacktraceAsString``, the text the JVM prints;
    the example is that text, the frames and causes (``Caused by: …``) written as the JVM does."""
    thrown = obj.get("thrown")
    kind = thrown.get("name") if isinstance(thrown, dict) else None
    if not isinstance(thrown, dict) or not isinstance(kind, str) or not kind:
        return None
    msg = thrown.get("message")
    stack = thrown.get("extendedStackTrace")
    if isinstance(stack, str) and stack.strip():
        return kind, msg if isinstance(msg, str) else "", stack.rstrip()
    parts: list[str] = []
    cur: Any = thrown
    while isinstance(cur, dict) and len(parts) < MAX_TRACE_LINES:
        name, m = cur.get("name", "?"), cur.get("message")
        parts.append(("Caused by: " if parts else "") + (f"{name}: {m}" if isinstance(m, str) else str(name)))
        frames = cur.get("extendedStackTrace") or cur.get("stackTrace")
        for fr in frames if isinstance(frames, list) else ():
            if isinstance(fr, dict):
                parts.append(f"\tat {fr.get('class', '?')}.{fr.get('method', '?')}({fr.get('file', '?')}:"
                             f"{fr.get('line', '?')})")
        cur = cur.get("cause")
    return kind, msg if isinstance(msg, str) else "", "\n".join(parts)


def _exc_logback_throwable(obj: dict[str, Any]) -> _Exc | None:
    """logback's own ``JsonEncoder`` (1.3.8 and later): ``throwable`` is ``{className, message, stepArray: [{className,
    methodName, fileName, lineNumber}], commonFramesCount, cause: {…}, suppressed: […]}``; the example is the text the
    JVM prints, the frames and causes (``Caused by: …``, ``... N more``) written as it does."""
    thrown = obj.get("throwable")
    kind = thrown.get("className") if isinstance(thrown, dict) else None
    if not isinstance(thrown, dict) or not isinstance(kind, str) or not kind:
        return None
    msg = thrown.get("message")
    parts: list[str] = []
    cur: Any = thrown
    while isinstance(cur, dict) and len(parts) < MAX_TRACE_LINES:
        name, m = cur.get("className", "?"), cur.get("message")
        parts.append(("Caused by: " if parts else "") + (f"{name}: {m}" if isinstance(m, str) else str(name)))
        frames = cur.get("stepArray")
        for fr in frames if isinstance(frames, list) else ():
            if isinstance(fr, dict):
                parts.append(f"\tat {fr.get('className', '?')}.{fr.get('methodName', '?')}({fr.get('fileName', '?')}:"
                             f"{fr.get('lineNumber', '?')})")
        common = cur.get("commonFramesCount")
        if type(common) is int and common > 0:
            parts.append(f"\t... {common} more")
        cur = cur.get("cause")
    return kind, msg if isinstance(msg, str) else "", "\n".join(parts)


#: a type that names an exception's class by itself (an error object with no message nor stack is one only so)
_CLASS_LIKE = re.compile(_EXC_SUFFIX + "$")


def _exc_error_object(obj: dict[str, Any]) -> _Exc | None:
    """An error written as an object under a name of its own (``error``, ``err``, ``exception``, ``exc``) — a logger
    configured so (pino's ``errorKey``), an application's serializer — with its type (``type``, ``name``, ``kind``,
    ``class``) and message, or only a stack trace as text (``stack``, ``stack_trace``, ``stacktrace``, ``backtrace``,
    ``trace``) to read them from; its causes (``cause``) read as pino's are. A type with neither a message nor a
    stack is an exception only when it reads as a class's name (``TimeoutError``, ``RecordNotFound``): ``{"name":
    "not_found", "code": 404}``, a job's ``{"kind": "user", "id": 7}`` are an application's results."""
    for key in ("error", "err", "exception", "exc"):
        err = obj.get(key)
        if not isinstance(err, dict):
            continue
        stack = next((v for k in ("stack", "stack_trace", "stacktrace", "backtrace", "trace")
                      if isinstance(v := err.get(k), str) and v.strip()), "").rstrip()
        kind = next((v for k in ("type", "name", "kind", "class") if isinstance(v := err.get(k), str)
                     and _TYPE_NAME.fullmatch(v)), "")
        msg = next((v for k in ("message", "msg") if isinstance(v := err.get(k), str)), "")
        if not kind and stack:
            kind, own = _exception_from_text(stack)
            msg = msg or own
        if kind and not msg and not stack and not _CLASS_LIKE.search(kind):
            continue  # {"error": {"name": "not_found", "code": 404}}, {"err": {"kind": "user"}}: a result
        if kind:
            return kind, msg, _with_causes(stack, err)
    return None


def _exc_monolog(obj: dict[str, Any]) -> _Exc | None:
    """Monolog's ``JsonFormatter`` (Laravel, Symfony): the exception logged as ``context.exception``, ``{class,
    message, code, file, trace: ["file:line", …], previous: {…}}``; the example written as its ``LineFormatter``
    writes it (``[object] (Class(code: 0): message at file:line)``, ``[stacktrace]``, ``#0 …``, ``[previous
    exception] …``), the last previous exception the chain's root."""
    ctx = obj.get("context")
    exc = ctx.get("exception") if isinstance(ctx, dict) else None
    kind = exc.get("class") if isinstance(exc, dict) else None
    if not isinstance(exc, dict) or not isinstance(kind, str) or not kind:
        return None
    msg = exc.get("message")
    parts: list[str] = []
    cur: Any = exc
    while isinstance(cur, dict) and len(parts) < MAX_TRACE_LINES:
        parts.append(("[previous exception] " if parts else "")
                     + f"[object] ({cur.get('class', '?')}(code: {cur.get('code', 0)}): {cur.get('message', '')} at "
                       f"{cur.get('file', '?')})")
        trace = cur.get("trace")
        if isinstance(trace, list) and trace:
            parts += ["[stacktrace]", *(f"#{i} {fr}" for i, fr in enumerate(trace) if isinstance(fr, str))]
        cur = cur.get("previous")
    return kind, msg if isinstance(msg, str) else "", "\n".join(parts)


def _exc_structlog_dicts(obj: dict[str, Any]) -> _Exc | None:
    """structlog's ``dict_tracebacks``: ``exception`` is a list of ``{exc_type, exc_value, frames}``, the
    exception raised first and its causes after it; the example is the traceback Python would print."""
    stacks = obj.get("exception")
    if not (isinstance(stacks, list) and stacks and isinstance(stacks[0], dict)):
        return None
    kind, value = stacks[0].get("exc_type"), stacks[0].get("exc_value")
    if not isinstance(kind, str) or not kind:
        return None
    parts: list[str] = []
    prev_cause = False
    for i, st in enumerate(reversed([s for s in stacks if isinstance(s, dict)])):
        if i:  # the one before it in print is its cause, or was being handled when it was raised
            parts.append("\n" + _PY_CHAIN[1 if prev_cause else 0] + "\n")
        prev_cause = bool(st.get("is_cause"))
        parts.append(_PY_TRACEBACK)
        frames = st.get("frames")
        for fr in frames if isinstance(frames, list) else ():
            if isinstance(fr, dict):
                parts.append(f'  File "{fr.get("filename", "?")}", line {fr.get("lineno", "?")}, '
                             f'in {fr.get("name", "?")}')
        parts.append(f"{st.get('exc_type', '?')}: {st.get('exc_value', '')}")
    return kind, value if isinstance(value, str) else "", "\n".join(parts)


def _exc_text(obj: dict[str, Any]) -> _Exc | None:
    """A traceback or stack trace as text, in one of the fields loggers put it in."""
    for k in _JSON_EXC_TEXT:
        v = obj.get(k)
        if isinstance(v, str) and ("\n" in v or "Error" in v or "Exception" in v):
            kind, msg = _exception_from_text(v)
            if kind:
                return kind, msg, v.rstrip()
    return None


def _go_error(obj: dict[str, Any]) -> str | None:
    """The error string a Go logger wrote in ``error`` (``err``), or None."""
    err = obj.get("error")
    err = err if isinstance(err, str) else obj.get("err")
    return err if isinstance(err, str) and err.strip() else None


def _go_stack(obj: dict[str, Any]) -> str:
    """The stack a Go logger wrote with an error, as text: zap's ``stacktrace``, a ``stack`` of text
    (``debug.Stack()``), or zerolog's ``stack`` of frames (``pkgerrors.MarshalStack``: func, source, line)."""
    for k in ("stacktrace", "stack"):
        st = obj.get(k)
        if isinstance(st, str) and st.strip():
            return st.rstrip()
        if isinstance(st, list) and st and all(isinstance(fr, dict) for fr in st):
            return "\n".join(f"{fr.get('func', '?')}\n\t{fr.get('source', '?')}:{fr.get('line', '?')}" for fr in st)
    return ""


def _exc_go_panic(obj: dict[str, Any]) -> _Exc | None:
    """A Go handler's panic that a recover() logged (``Interface("panic", r)``, ``Bytes("stack",
    debug.Stack())``): in a record at level error or worse, an exception of type ``panic``, as the crash
    Go prints for one it did not recover is."""
    value = obj.get("panic")
    if not isinstance(value, str) or not value.strip() or _json_level(obj) not in ("error", "critical"):
        return None
    st = _go_stack(obj)
    return "panic", value, f"panic: {value}\n\n{st}" if st else ""


def _exc_error_string(obj: dict[str, Any]) -> _Exc | None:
    """Go loggers (zap, logrus, zerolog) write an error as its string — Go errors have no type — in
    ``error`` (``err``): in a record at level error or worse it is an exception of type ``error``, with
    its stack (zap's ``stacktrace``, zerolog's ``stack``) in its example."""
    err = _go_error(obj)
    if err is None or _json_level(obj) not in ("error", "critical"):
        return None
    st = _go_stack(obj)
    return "error", err, f"{err}\n{st}" if st else ""


#: adapters from a JSON log record to its exception, tried in turn: one per way loggers write exceptions
_JSON_EXC_ADAPTERS = (_exc_fields, _exc_log4j2_thrown, _exc_logback_throwable, _exc_monolog, _exc_structlog_dicts,
                      _exc_go_panic, _exc_text, _exc_error_object, _exc_error_string)


def _json_exception(obj: dict[str, Any]) -> _Exc | None:
    """(type, message, stack text) from the structured exception fields loggers write."""
    for adapter in _JSON_EXC_ADAPTERS:
        exc = adapter(obj)
        if exc is not None:
            return exc
    return None


def _trace_in_message(msg: str) -> int:
    """Where a stack trace starts in a message of several lines, or -1: Google Cloud's structured logging
    (``severity``, ``message``) and loggers that format the exception into the message put it there — a
    Python traceback, or an exception line followed by a frame (JVM, Node)."""
    if "\n" not in msg:
        return -1
    lines = msg.split("\n")
    pos = 0
    for i, ln in enumerate(lines):
        if _py_header(ln) or (i + 1 < len(lines) and _exc_line(ln.strip()) and _STACK_FRAME.match(lines[i + 1])):
            return pos
        pos += len(ln) + 1
    return -1


def _py_header(line: str) -> str:
    """The header of a Python traceback (an exception group's too) that starts or ends ``line``, or ''."""
    s = line.lstrip()
    if s.startswith(_PY_TRACEBACK) or line.endswith(_PY_TRACEBACK):
        return _PY_GROUP_TRACEBACK if line.endswith(_PY_GROUP_TRACEBACK) else _PY_TRACEBACK
    if s.startswith("+ " + _PY_GROUP_TRACEBACK):
        return _PY_GROUP_TRACEBACK
    return ""


def _py_exception(s: str) -> tuple[str, str] | None:
    """(type, message) of a Python exception line (``KeyError: 'x'``, ``mod.Error: …``, ``StopIteration``)."""
    m = _EXC_LINE.match(s) or _PY_EXC.match(s)
    return (m.group(1), m.group(2) or "") if m else None


def _py_final_exception(lines: list[str]) -> tuple[str, str] | None:
    """The exception a Python traceback ends with — of a chain, the last one (the one raised); of an
    exception group, the group (``  | ExceptionGroup: many (2 sub-exceptions)``)."""
    exc, _at = _py_final(lines)
    return exc


def _py_final(lines: list[str]) -> tuple[tuple[str, str] | None, int]:
    """The exception a Python traceback ends with (see ``_py_final_exception``) and the index of its line when
    what follows that line is the further lines of its message (-1 for an exception group)."""
    # the last traceback of the chain: a header inside an exception group's box (``    | Traceback …``, a
    # sub-exception's) is none
    start = max((i for i, ln in enumerate(lines) if _py_header(ln) and not ln.lstrip().startswith("|")), default=0)
    seg = lines[start:]
    if seg and _py_header(seg[0]) == _PY_GROUP_TRACEBACK:
        for ln in seg[1:]:
            s = ln.lstrip()
            if s.startswith("| ") and not s[2:3].isspace():
                exc = _py_exception(s[2:].rstrip())
                if exc:
                    return exc, -1
        return None, -1
    # the first line after the frames (its message, and a note, may go on over further lines)
    for i, ln in enumerate(seg[1:], start + 1):
        if ln.strip() and not ln[0].isspace() and ln.strip() not in _PY_CHAIN and not ln.startswith(_LOGURU_CAUGHT):
            return _py_exception(ln.strip()), i
    return None, -1


def _py_example(block: list[str], at: int) -> str:
    """A Python traceback's example: the traceback (its start and its end when long) through its exception
    line ``at``, and at most ``_EXAMPLE_MESSAGE_LINES`` of the lines read after it as its message, each cut at
    300 characters — they may be output some program wrote after it (a ``print()``, a subprocess), which
    cannot be told from a message of many lines: a hundred of them would take the exception's place."""
    tail = block[at + 1:] if at >= 0 else []
    trace = block[:at + 1] if at >= 0 else block
    example = "\n".join(trace)
    if len(example) > 3000:  # a long chain: its start and the final exception
        example = example[:1000] + "\n…\n" + example[-1990:]
    shown = [ln if len(ln) <= 300 else ln[:300] + "…" for ln in tail[:_EXAMPLE_MESSAGE_LINES]]
    if len(tail) > len(shown):
        shown.append(f"… {len(tail) - len(shown)} more lines after the exception (its message, or output "
                     "written after it)")
    return "\n".join([example, *shown])


def _exception_from_text(text: str) -> tuple[str, str]:
    lines = [ln for ln in text.strip().split("\n") if ln.strip()]
    if not lines:
        return "", ""
    if _py_header(lines[0]):
        return _py_final_exception(lines) or ("", "")
    first = _JVM_THREAD.sub("", lines[0].strip(), 1)
    m = _EXC_LINE.match(first) or re.match(r"^([\w.$]+): (.*)$", first)
    return (m.group(1), m.group(2) or "") if m else ("", "")


#: a JVM cause of the trace itself (``Caused by:`` at the start of a line; an indented one is the cause of a
#: ``Suppressed:`` exception; pino writes ``caused by:``); Monolog's (Laravel, Symfony) ``[previous exception] [object] (PDOException(code: …``
_JVM_CAUSE = re.compile(r"^[Cc]aused by: ([\w.$]+)")
#: Node's ``util.inspect`` of an error's ``cause`` (Node 16.9 and later; ``console.error(e)``, an uncaught error):
#: ``  [cause]: DbError: …`` after the error's frames, two spaces deeper for each cause of a cause; an error with
#: no frames is in brackets (``[cause]: [Error: …]``); a cause that is no error (``[cause]: 'timeout'``) is none
_NODE_CAUSE = re.compile(r"^( *)\[cause\]: \[?([A-Za-z_$][\w$.]*)(?::|\]| \{| \[[A-Z]|$)")
#: an ``AggregateError``'s errors (``Promise.any``): ``  [errors]: [`` then each error four spaces in
_NODE_ERRORS = "  [errors]: ["
_NODE_ERRORS_FIRST = re.compile(r"^    \[?([A-Za-z_$][\w$.]*)(?::|\]| \{|,?$)")
_MONOLOG_PREVIOUS = re.compile(r"\[previous exception\] \[object\] \(([\w\\]+)\(code: ")
#: .NET's ``Exception.ToString()`` of an exception with an inner one: ``Class: message``, then the inner exception's
#: after `` ---> `` (on a line of its own since .NET Core 3.0, on the same line before), its inner one's the same
#: way, all before the first frame (``   at …``; each inner exception's frames end with ``   --- End of inner
#: exception stack trace ---``); an ``AggregateException``'s others are ``---> (Inner Exception #1) …``
_DOTNET_INNER = re.compile(r"(?:^| )---> ((?:[A-Za-z_][\w`]*\.)*[A-Za-z_][\w`]*)(?: \((?:0x[0-9A-Fa-f]{8}|-?\d{1,10})\))?"
                           r"(?::|$)")


def _chain_root(lines: list[str], kind: str) -> str:
    """The type of the first exception of the chain an exception's stack shows (see ``_exception``), or ""
    when it has none: a JVM's last ``Caused by:``, Monolog's last ``[previous exception]``, a Python
    traceback's first (chained by ``raise … from`` or raised while handling it; an exception group's
    sub-exceptions are no chain); Node's innermost ``[cause]:``, or for an ``AggregateError`` without one the
    type of its first error (``[errors]: [``)."""
    if _py_header(next((ln for ln in lines if ln.strip()), "")):
        # a Python traceback: its chain is what Python's sentences join; a "Caused by: …" or "[cause]: …" line is
        # one of an exception's message (or, in a text log, of what a program printed after it), no link
        return _py_chain_root(lines)
    if any("[cause]: " in ln or ln == _NODE_ERRORS for ln in lines):
        return _node_chain_root(lines)
    root = ""
    for ln in lines:
        c = _JVM_CAUSE.match(ln)
        if c:
            root = c.group(1)
        elif "[previous exception]" in ln:
            for p in _MONOLOG_PREVIOUS.findall(ln):
                root = p.replace("\\\\", "\\")  # a JSON string's escaped backslashes
    return root or _dotnet_chain_root(lines) or _py_chain_root(lines)


def _dotnet_chain_root(lines: list[str]) -> str:
    """The type of the innermost exception of a .NET exception's text (see ``_DOTNET_INNER``), "" for none."""
    root = ""
    for ln in lines:
        if _AT_FRAME.match(ln):
            break
        if "---> " in ln:
            found = _DOTNET_INNER.findall(ln)
            root = found[-1] if found else root
    return root


def _py_chain_root(lines: list[str]) -> str:
    """The type of the first exception of a chained Python traceback (the one its first sentence joining two
    tracebacks follows), "" for a traceback of one exception."""
    first_chain = next((i for i, ln in enumerate(lines) if ln.strip() in _PY_CHAIN and not ln[:1].isspace()), -1)
    if first_chain > 0:
        exc = _py_final_exception(lines[:first_chain])
        return exc[0] if exc else ""
    return ""


def _node_chain_root(lines: list[str]) -> str:
    """The root of a Node error chain as ``util.inspect`` prints it (see ``_NODE_CAUSE``): the ``[cause]:``
    two spaces deeper than the one before it, down to the last (a ``[cause]:`` deeper still is the cause of
    an error inside ``[errors]``, no link of this chain); an ``AggregateError`` without a cause: its first error."""
    root, depth = "", 2
    for ln in lines:
        c = _NODE_CAUSE.match(ln) if "[cause]: " in ln else None
        # a value (``[cause]: null``, ``[cause]: 42``) is no error: a bare name must be named like one
        if c and len(c.group(1)) == depth and (not c.group(0).endswith(c.group(2)) or _BARE_EXC.search(c.group(2))):
            root, depth = c.group(2), depth + 2
    if root:
        return root
    if _NODE_ERRORS in lines:
        i = lines.index(_NODE_ERRORS)
        first = _NODE_ERRORS_FIRST.match(lines[i + 1]) if i + 1 < len(lines) else None
        return first.group(1) if first else ""
    return ""
