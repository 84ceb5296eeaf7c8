"""nginx ``log_format`` strings: parse them, translate them for GoAccess, and plan a fast split.

A format such as ``combined`` is a sequence of literal text and ``$variables``.
From it we derive

* the equivalent GoAccess ``--log-format`` (also used by upkeeper's own
  line-by-line parser, :class:`~upkeeper.logs.goaccess.GoAccessLineParser`), and
* a :class:`SplitPlan` for the fast scanner: when every quoted part of the
  format is exactly one variable and the unquoted parts are space-separated
  tokens, a whole buffer of lines can be cut into columns with ``bytes.split``
  (nginx escapes ``"`` inside variables, so quotes only ever come from the
  format itself).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from upkeeper.errors import UpkeeperError

COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
#: combined plus ``$request_time`` — what upkeeper's sandbox nginx writes and what we recommend
COMBINED_TIMED = COMBINED + " $request_time"
#: nginx's documented ``main`` example format
MAIN = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"')

NAMED_FORMATS = {"combined": COMBINED, "combined_timed": COMBINED_TIMED, "main": MAIN}

#: nginx variable → upkeeper field (which is also the GoAccess specifier letter); the client address
#: variables (:data:`ADDRESS_VARIABLES`, :data:`CLIENT_HEADERS`) get theirs from :func:`client_variables`
VARIABLES: dict[str, str] = {
    "remote_addr": "h",
    "time_local": "time_local", "time_iso8601": "time_iso8601", "msec": "msec",
    "request": "r", "request_method": "m", "request_uri": "U", "server_protocol": "H",
    "status": "s", "body_bytes_sent": "b", "bytes_sent": "b",
    "http_referer": "R", "http_user_agent": "u",
    "request_time": "T", "upstream_response_time": "P",
    "host": "v", "server_name": "v", "http_host": "v",
    "remote_user": "e",
}  # fmt: skip
#: ``client_ip`` mode → the variable holding the client a proxy passed on: what nginx's realip module reads
#: with ``real_ip_header X-Forwarded-For``, ``real_ip_header X-Real-IP`` and ``real_ip_header proxy_protocol``
CLIENT_HEADERS: dict[str, str] = {
    "x_forwarded_for": "http_x_forwarded_for", "x_real_ip": "http_x_real_ip", "proxy_protocol": "proxy_protocol_addr",
}
CLIENT_IP_MODES = ("remote_addr", *CLIENT_HEADERS)
#: ``client_ip: header:NAME``: the client in any request header NAME, logged as ``$http_name`` — nginx's
#: ``real_ip_header NAME`` (CF-Connecting-IP behind Cloudflare, True-Client-IP behind Akamai or Cloudflare
#: Enterprise, Fastly-Client-IP behind Fastly)
HEADER_MODE = "header:"
#: a request header name nginx can make a ``$http_`` variable of (dashes become underscores)
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: the CDN headers that carry the client, by variable: a format that logs one has a passed-on client too
CDN_HEADERS: dict[str, str] = {
    "http_cf_connecting_ip": "CF-Connecting-IP", "http_true_client_ip": "True-Client-IP",
    "http_fastly_client_ip": "Fastly-Client-IP",
}


def header_variable(name: str) -> str:
    """The nginx variable of request header ``name``: ``CF-Connecting-IP`` → ``http_cf_connecting_ip``."""
    return "http_" + name.lower().replace("-", "_")


def client_header(client_ip: str) -> str | None:
    """The variable holding the client a proxy passed on in mode ``client_ip`` (``x_forwarded_for`` →
    ``http_x_forwarded_for``, ``header:CF-Connecting-IP`` → ``http_cf_connecting_ip``); None for
    ``remote_addr``."""
    if client_ip.startswith(HEADER_MODE):
        return header_variable(client_ip[len(HEADER_MODE):])
    return CLIENT_HEADERS.get(client_ip)


def client_mode(variable: str) -> str:
    """The ``client_ip`` mode that reads ``variable``: ``http_x_real_ip`` → ``x_real_ip``,
    ``http_cf_connecting_ip`` → ``header:CF-Connecting-IP``."""
    for mode, var in CLIENT_HEADERS.items():
        if var == variable:
            return mode
    return HEADER_MODE + header_name(variable)


def header_name(variable: str) -> str:
    """The request header of a ``$http_`` variable, as it is usually spelt (``CF-Connecting-IP``)."""
    known = CDN_HEADERS.get(variable)
    if known is not None:
        return known
    return "-".join(w.upper() if w in ("ip", "cf") else w.capitalize()
                    for w in variable.removeprefix("http_").split("_"))


def check_client_ip(value: str) -> str:
    """``value`` as a ``client_ip`` mode (see :data:`CLIENT_IP_MODES`, :data:`HEADER_MODE`); ValueError saying
    what is accepted."""
    v = value.strip()
    if v in CLIENT_IP_MODES:
        return v
    if v.lower().startswith(HEADER_MODE):
        name = v[len(HEADER_MODE):].strip()
        if name.lower().startswith(("$", "http_")):
            bare = header_name(name.lstrip("$").lower())
            raise ValueError(f"client_ip: {value!r} names a variable; header: takes the request header as in nginx's "
                             f"real_ip_header (header:{bare} for ${name.lstrip('$').lower()})")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"client_ip: {value!r} has no request header name (letters, digits, '-'), such as "
                             "header:CF-Connecting-IP")
        return HEADER_MODE + name
    raise ValueError(f"client_ip: {value!r} is not 'remote_addr', 'x_forwarded_for', 'x_real_ip', 'proxy_protocol' "
                     "or 'header:NAME' (any request header the log_format logs as $http_name, e.g. "
                     "header:CF-Connecting-IP)")
#: variables that can be the address of a line (field ``h``): $remote_addr, else the first of the others
ADDRESS_VARIABLES = ("remote_addr", "realip_remote_addr", "http_x_real_ip", "proxy_protocol_addr")
#: variables whose value never contains a space (safe as one token of the fast split)
SPACELESS = frozenset({
    "remote_addr", "realip_remote_addr", "http_x_real_ip", "proxy_protocol_addr", "remote_user", "time_iso8601",
    "msec", "status",
    "body_bytes_sent", "bytes_sent", "request_time", "host", "server_name", "http_host", "request_length",
    "connection", "connection_requests", "pipe", "request_method", "server_protocol", "server_port",
    "remote_port", "scheme", "https", "request_id", "upstream_cache_status",
    "gzip_ratio", "ssl_protocol", "ssl_cipher", "pid", "hostname", "server_addr",
})  # fmt: skip
#: variables with one value per upstream server contacted: after a retry nginx writes "0.800, 0.100"
#: ("10.0.0.1:80, 10.0.0.2:80"), after an internal redirect to another upstream group "0.004 : 0.010".
#: The line parser reads such a list as one value; the fast paths take a single value as one token and
#: leave the lines with a list to the line parser.
LISTS = frozenset({
    "upstream_addr", "upstream_status", "upstream_response_time", "upstream_connect_time",
    "upstream_header_time", "upstream_response_length", "upstream_bytes_received", "upstream_bytes_sent",
})  # fmt: skip
#: how nginx separates the values of a list
LIST_SEPARATORS = (", ", " : ")
#: what a blank of a list separator becomes when lists are collapsed (access.Accumulator._collapsed): a byte nginx
#: never writes raw (it escapes bytes from 0x7f on as \xHH; with escape=none it may: a buffer holding one is not
#: collapsed)
LIST_BLANK = b"\xa0"

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
#: a '$' nginx cannot read a variable name after (``$`` at the end, ``$ ``, ``${name`` without its ``}``)
_NO_VAR = re.compile(r"\$(?!\{\w+\}|\w)")


class LogFormatError(UpkeeperError):
    """The log_format string cannot be used."""


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Var:
    name: str
    #: the field of a client address variable in this format (see :func:`client_variables`)
    role: str = ""

    @property
    def field(self) -> str:
        return self.role or VARIABLES.get(self.name, "^")


Item = Lit | Var

#: the fields of the time variables; the first one in a format is its time
TIME_FIELDS = ("time_local", "time_iso8601", "msec")


#: nginx's ``log_format … escape=`` values
ESCAPES = ("default", "json", "none")
_DIRECTIVE = re.compile(r"log_format\s")
_ESCAPE = re.compile(r"escape=(\S*)")
#: a bare word without a variable: meant as a format's name
_NAME = re.compile(r"[\w.-]+")
#: nginx's configuration parser turns these backslash escapes into characters (other ones stay as written)
_CONF_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_CONF_ESCAPE = re.compile(r"\\([\"'\\trn])")


def _conf_args(text: str) -> list[tuple[str, bool]] | None:
    """The arguments of an nginx directive as nginx's configuration parser reads them: blank-separated
    words, quoted with ``'`` or ``"`` or not, backslash escapes resolved; with whether each was quoted.
    None when ``text`` is not such a list (an unbalanced quote, a closing quote followed by more text)."""
    args: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        quote = text[i] if text[i] in "'\"" else ""
        j = i + 1 if quote else i
        out: list[str] = []
        while j < n and (text[j] != quote if quote else not text[j].isspace()):
            if text[j] == "\\" and j + 1 < n and text[j + 1] in _CONF_ESCAPES:
                out.append(_CONF_ESCAPES[text[j + 1]])
                j += 2
                continue
            out.append(text[j])
            j += 1
        if quote:
            if j >= n or (j + 1 < n and not text[j + 1].isspace()):
                return None  # unbalanced, or "…"x (nginx: unexpected "x")
            j += 1
        args.append(("".join(out), bool(quote)))
        i = j
    return args


def normalize_format(fmt: str) -> str:
    """The format string of ``fmt``: a name (``combined``), a bare format, nginx's quoted multi-string
    syntax (``'…' '…'``, concatenated), optionally after ``escape=json|default|none``, or the whole
    directive as in nginx.conf: ``log_format main escape=json '…' '…';``."""
    s = fmt.strip()
    if s in NAMED_FORMATS:
        return NAMED_FORMATS[s]
    if _NAME.fullmatch(s):  # a word, no variable: meant as a name (a misspelt one, or nginx.conf's own)
        close = difflib.get_close_matches(s, list(NAMED_FORMATS), n=1)
        raise LogFormatError(
            f"unknown log_format name {s!r} (known names: {', '.join(NAMED_FORMATS)})",
            (f"Try: {close[0]!r}, or" if close else "Try:") + " the format string of your nginx.conf "
            "'log_format' line (its name alone is not enough: upkeeper does not read nginx.conf)")
    if s.endswith(";"):
        s = s[:-1].rstrip()
    directive = bool(_DIRECTIVE.match(s))
    if directive:  # log_format NAME [escape=…] STRING …
        args = _conf_args(s)
        if args is None:
            raise LogFormatError(f"cannot read the log_format directive {fmt.strip()!r}: a quote is not closed "
                                 "(or a closing quote is followed by more text)",
                                 "Try: copy the directive from nginx.conf up to its ';', or give only the format")
        args = args[2:]  # log_format, its name
        if args and not args[0][1] and (m := _ESCAPE.fullmatch(args[0][0])):
            _check_escape(m.group(1))
            args = args[1:]
        if not args:
            raise LogFormatError(f"the log_format directive {fmt.strip()!r} has no format string",
                                 "Try: log_format: combined")
        return "".join(a for a, _q in args)
    m = _ESCAPE.match(s)
    if m and (len(s) == m.end() or s[m.end()].isspace()):
        _check_escape(m.group(1))
        s = s[m.end():].strip()
    if len(s) >= 2 and s[0] in "'\"" and s[-1] == s[0]:
        # 'a' 'b' … → ab (nginx concatenates adjacent strings); a bare format that merely begins and ends
        # with a quoted variable ("$request" $status "$http_user_agent") has unquoted words between
        args = _conf_args(s)
        if args and all(quoted for _a, quoted in args):
            return "".join(a for a, _q in args)
    # the string alone, copied from between its quotes: nginx resolves the same escapes there (\t of a
    # tab-separated format, \" in a double-quoted one)
    return _CONF_ESCAPE.sub(lambda m: _CONF_ESCAPES[m.group(1)], s) if "\\" in s else s


def _check_escape(value: str) -> None:
    if value not in ESCAPES:
        raise LogFormatError(f"escape={value} is not an nginx log_format escape mode",
                             "Try: escape=default, escape=json or escape=none, as in the nginx log_format line")


def client_variables(names: list[str], client_ip: str = "remote_addr") -> tuple[str | None, str | None]:
    """Of a format's variable ``names``: the one read as each line's address (field ``h``) and the one holding
    the client a proxy passed on (field ``X``), each None when the format has none.

    The address is ``$remote_addr``; a format without it has its client in another variable
    (``'$proxy_protocol_addr - $remote_user …'``, nginx's PROXY protocol example): the ``client_ip`` one,
    else the first of :data:`ADDRESS_VARIABLES`.  The passed-on client is the ``client_ip`` variable when it
    is not the address; with ``client_ip: remote_addr`` the first of :data:`CLIENT_HEADERS` (then of
    :data:`CDN_HEADERS`) that the format
    logs (read only to see whether a proxy stands for every client)."""
    header = client_header(client_ip)
    if "remote_addr" in names:
        address: str | None = "remote_addr"
    elif header in names:
        address = header
    else:
        address = next((n for n in names if n in ADDRESS_VARIABLES), None)
    candidates = [header] if header else [*CLIENT_HEADERS.values(), *CDN_HEADERS]
    return address, next((c for c in candidates if c in names and c != address), None)


def parse_format(fmt: str, client_ip: str = "remote_addr") -> list[Item]:
    """The items of ``fmt``; ``client_ip`` (a :data:`CLIENT_IP_MODES` mode) decides which variable is the
    address (field ``h``) and which the client passed on by a proxy (``X``): see :func:`client_variables`."""
    s = normalize_format(fmt)
    if not s:
        raise LogFormatError("the log_format is empty", "Try: log_format: combined")
    bad = _NO_VAR.search(s)
    if bad:
        at = s[bad.start():bad.start() + 12]
        raise LogFormatError(
            f"in the log_format {s!r}, the '$' of {at!r} begins no variable ("
            + ("its '{' is not closed" if s[bad.start() + 1:bad.start() + 2] == "{" else "no name follows it")
            + "): nginx refuses such a format ('invalid parameter')",
            "Try: the format string of your nginx.conf 'log_format' line, its variables written $name or ${name}")
    items: list[Item] = []
    pos = 0
    for m in _VAR.finditer(s):
        if m.start() > pos:
            items.append(Lit(s[pos:m.start()]))
        items.append(Var(m.group(1) or m.group(2)))
        pos = m.end()
    if pos < len(s):
        items.append(Lit(s[pos:]))
    clients = {*ADDRESS_VARIABLES, *CLIENT_HEADERS.values(), *CDN_HEADERS, client_header(client_ip)}
    address, passed = client_variables([it.name for it in items if isinstance(it, Var)], client_ip)
    items = [Var(it.name, "h" if it.name == address else "X" if it.name == passed else "^")
             if isinstance(it, Var) and it.name in clients else it for it in items]
    for k, it in enumerate(items):
        nxt = items[k + 1] if k + 1 < len(items) else None
        if isinstance(it, Var) and it.name == "request" and isinstance(nxt, Lit) and nxt.text[:1].isspace():
            raise LogFormatError(
                f"in the log_format {s!r}, $request is followed by a blank, not by a quote: its value "
                "('GET /path HTTP/1.1') has blanks itself, so no line of this format could be read",
                "Try: the format from your nginx.conf, which quotes it: \"$request\"")
    for k in range(len(items) - 1):
        a, b = items[k], items[k + 1]
        if isinstance(a, Var) and isinstance(b, Var) and a.field != "^" and b.field != "^":
            # a line is cut into values at the text between variables: with none, where $host ends and
            # $request_uri begins cannot be told (GoAccess cannot either), and every line was 'unparsed'
            raise LogFormatError(
                f"in the log_format {s!r}, ${a.name} and ${b.name} are written together, with nothing between "
                "them: a line cannot be cut into their two values, so no line of this format could be read",
                f"Try: put a character that cannot occur in ${a.name} between them in nginx's log_format (the "
                "lines written after the change can then be read)")
    fields = [it.field for it in items if isinstance(it, Var)]
    if "h" not in fields:
        raise LogFormatError(
            f"the log_format {s!r} has no client address ($remote_addr, or $proxy_protocol_addr, "
            "$http_x_real_ip)",
            "Try: the format from your nginx.conf 'log_format' line, e.g. 'combined'")
    if not any(f in fields for f in TIME_FIELDS):
        raise LogFormatError(f"the log_format {s!r} has no time ($time_local, $time_iso8601 or $msec)",
                             "Try: add [$time_local] to the nginx log_format")
    if "r" not in fields and "U" not in fields:
        raise LogFormatError(f"the log_format {s!r} has no request ($request or $request_uri)",
                             "Try: add \"$request\" to the nginx log_format")
    return items


def format_variables(fmt: str) -> list[str]:
    """The nginx variables (without their ``$``) the log format writes, in order."""
    return [it.name for it in parse_format(fmt) if isinstance(it, Var)]


def has_variable(fmt: str, name: str) -> bool:
    """Whether the log format writes the nginx variable ``name`` (without its ``$``)."""
    return any(isinstance(it, Var) and it.name == name for it in parse_format(fmt))


@dataclass(frozen=True)
class GoAccessFormat:
    log_format: str
    date_format: str
    time_format: str

    def argv(self) -> list[str]:
        """Flags that make ``goaccess`` read this format (``--log-format=… --date-format=… --time-format=…``)."""
        return [f"--log-format={self.log_format}", f"--date-format={self.date_format}",
                f"--time-format={self.time_format}"]


def to_goaccess(fmt: str, *, internal: bool = False, client_ip: str = "remote_addr") -> GoAccessFormat:
    """The GoAccess ``--log-format`` equivalent of an nginx format.

    A format that is a JSON object as it stands has its ``{`` skipped with ``%^`` (unless ``internal``): GoAccess
    would read it in its JSON mode otherwise (see :func:`_strict_json`'s caller).

    ``internal=True`` keeps upkeeper's extension specifiers that the exported format spells ``%^``:
    ``%P`` (upstream time), ``%e`` (remote user), ``%X`` (the client passed on by a proxy:
    ``$http_x_forwarded_for`` or the ``client_ip`` variable, see :func:`client_variables`) and ``%Y`` (another
    variable of :data:`LISTS`, skipped); the line parser reads ``%P``, ``%X`` and ``%Y`` as a list of values
    (which GoAccess cannot).  ``client_ip="x_forwarded_for"``: the exported format takes the client from
    ``$http_x_forwarded_for`` (GoAccess's ``~h{, }``) and skips ``$remote_addr``; ``x_real_ip``,
    ``proxy_protocol`` and ``header:NAME`` take it with ``%h`` from ``$http_x_real_ip``,
    ``$proxy_protocol_addr`` or ``$http_name``.  GoAccess has no trusted proxies: its numbers equal ours when
    every line comes from a trusted proxy with an address in that variable.
    """
    items = parse_format(fmt, client_ip)
    header = client_header(client_ip)
    passed = not internal and header is not None and any(
        isinstance(it, Var) and it.field == "X" for it in items)
    out: list[str] = []
    date_fmt, time_fmt = "%d/%b/%Y", "%T"
    used: set[str] = set()
    first_time = next(it.field for it in items if isinstance(it, Var) and it.field in TIME_FIELDS)
    for it in items:
        if isinstance(it, Lit):
            out.append(it.text.replace("%", " "))
            continue
        f = it.field
        if f in TIME_FIELDS and f != first_time:  # the first time variable is the time; skip the others
            out.append("%^ %^" if f == "time_local" else "%^")  # 01/Mar/2024:10:00:00 +0000 has a blank
            continue
        if f in used and f != "^":
            f = "^"  # GoAccess keeps the first value and would not even consume a second one
        used.add(f)
        if f == "^" and it.name in LISTS:
            f = "Y"
        if f == "time_local":
            out.append("%d:%t %^")
        elif f == "time_iso8601":  # 2024-03-01T10:00:00-05:00: the offset is read (+ or -) by strptime's %z
            out.append("%dT%t")
            date_fmt, time_fmt = "%Y-%m-%d", "%T%z"
        elif f == "msec":  # 1709287200.123: strptime's %s takes the seconds (local time), the rest is skipped
            out.append("%x.%^")
            date_fmt = time_fmt = "%s"
        elif f == "X" and passed:
            out.append("~h{, }" if header == "http_x_forwarded_for" else "%h")
        elif f == "h" and passed:
            out.append("%^")
        elif f in ("P", "e", "Y", "X"):
            out.append("%" + f if internal else "%^")
        else:
            out.append("%" + f)
    ga = "".join(out)
    # GoAccess's own COMBINED spelling skips "- $remote_user " up to the bracket
    for head in ("%h - %e [", "%h - %^ ["):
        if ga.startswith(head):
            ga = "%h %^[" + ga[len(head):]
    if not internal and _strict_json(ga):
        # a format that is a JSON object as it stands ('{"ip":"%h","request":"%r","status":"%s"}') puts GoAccess
        # in its JSON mode, which reads other lines than nginx writes and upkeeper reads: it drops lines with an
        # empty value ("request":"" of a connection closed unanswered, "method":"") or bytes that are not UTF-8
        # (escape=json writes them raw), takes "protocol":"" (HTTP/0.9) and undoes \" in URLs.  Its "{" skipped
        # with %^ makes it text again, read as a line of any other format is, as upkeeper reads it.
        ga = "%^" + ga[1:]
    return GoAccessFormat(ga, date_fmt, time_fmt)


def _strict_json(text: str) -> bool:
    """Whether ``text`` is one JSON object, which GoAccess (``is_json_log_format``) reads in its JSON mode."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# The fast split plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSpec:
    """One space-separated token position of an unquoted template."""

    kind: str  # "empty" | "lit" | "var"
    text: str = ""  # literal text (kind lit)
    var: str = ""  # nginx variable (kind var); time_local is split into time_local_dt / time_local_tz
    prefix: str = ""
    suffix: str = ""
    #: the character after the value in the format (its suffix's first, else a blank or the end of the line):
    #: where the line parser's ``%^`` stops, so a skipped value must not hold it
    stop: str = " "
    #: an :func:`opaque` variable: its value may be empty
    opaque: bool = False


@dataclass(frozen=True)
class SplitPlan:
    """How to cut a buffer of complete lines into columns.

    ``quotes`` is the number of quoted fields per line, ``quoted`` their variables in order;
    ``glue`` is the token template of the unquoted text around the line break (tail of one
    line + head of the next); ``middle[j]`` the template of the text between quoted fields
    ``j`` and ``j+1`` (joined with single spaces).  ``middle_literal[j]`` is set when that
    text has no variable, so it can be compared as a whole.
    """

    quotes: int
    quoted: tuple[str, ...]
    glue: tuple[TokenSpec, ...]
    middle: tuple[tuple[TokenSpec, ...], ...]
    middle_literal: tuple[str | None, ...]
    time_var: str
    #: field letter -> (where, segment index, token index); where ∈ {"q", "g", "m"}
    fields: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    #: (where, segment, token) of the variables GoAccess skips with ``%^``: each must hold its literal prefix
    #: and suffix, and between them no ``[``, ``]`` nor the character that ends it (:attr:`TokenSpec.stop`)
    skipped: tuple[tuple[str, int, int], ...] = ()
    #: the number of blanks in each line's unquoted text around the line break (head and tail of the line),
    #: and in each text between quoted fields: the split checks them line by line, so a value with a blank
    #: (an :func:`opaque` variable's) can never shift another line's fields
    glue_blanks: int = 0
    middle_blanks: tuple[int, ...] = ()
    #: when a :data:`LISTS` variable is unquoted: the separators that mark a line holding a list of
    #: values (which the split cannot take: it goes to the line parser)
    list_marks: tuple[bytes, ...] = ()


def _expand(items: list[Item]) -> list[Item]:
    """Split ``$time_local`` (which contains a space) into two spaceless pseudo-variables."""
    out: list[Item] = []
    for it in items:
        if isinstance(it, Var) and it.name == "time_local":
            out += [Var("time_local_dt"), Lit(" "), Var("time_local_tz")]
        else:
            out.append(it)
    return out


def opaque(items: list[Item]) -> frozenset[str]:
    """The variables of ``items`` whose value the report does not read (GoAccess's ``%^``) and that upkeeper
    knows nothing about (ingress-nginx's ``$proxy_upstream_name``, ``$req_id``): the fast paths take them
    unquoted as a token that may be empty, and leave a line where one holds a blank (or a bracket, a quote,
    the character after it in the format) to the line parser."""
    return frozenset(it.name for it in items if isinstance(it, Var) and it.field == "^"
                     and it.name not in SPACELESS and it.name not in LISTS)


def _tokens(items: list[Item], opaque_vars: frozenset[str] = frozenset()) -> tuple[TokenSpec, ...] | None:
    """Template tokens of an unquoted segment (items) followed by one space; None if not splittable."""
    # Render with placeholders, split on single spaces.
    toks: list[list[Item]] = [[]]
    for it in [*items, Lit(" ")]:
        if isinstance(it, Lit):
            pieces = it.text.split(" ")
            for k, piece in enumerate(pieces):
                if k:
                    toks.append([])
                if piece:
                    toks[-1].append(Lit(piece))
        else:
            if (it.name not in SPACELESS and it.name not in LISTS and it.name not in opaque_vars
                    and it.name not in ("time_local_dt", "time_local_tz")):
                return None
            toks[-1].append(it)
    toks = toks[:-1]  # the trailing space produces a final empty token shared with the next copy
    specs: list[TokenSpec] = []
    for t in toks:
        vars_ = [x for x in t if isinstance(x, Var)]
        if len(vars_) > 1:
            return None  # two variables without a separator
        if not t:
            specs.append(TokenSpec("empty"))
        elif not vars_:
            specs.append(TokenSpec("lit", text="".join(x.text for x in t if isinstance(x, Lit))))
        else:
            vi = t.index(vars_[0])
            pre = "".join(x.text for x in t[:vi] if isinstance(x, Lit))
            suf = "".join(x.text for x in t[vi + 1:] if isinstance(x, Lit))
            stop = suf[:1] or " "
            specs.append(TokenSpec("var", var=vars_[0].name, prefix=pre, suffix=suf, stop=stop,
                                   opaque=vars_[0].name in opaque_vars))
    return tuple(specs)


def split_on_quotes(items: list[Item]) -> list[list[Item]]:
    """Cut a format's items at literal quote characters: even segments are unquoted text, odd ones
    one quoted value (an even number of segments means unbalanced quotes)."""
    segs: list[list[Item]] = [[]]
    for it in items:
        if isinstance(it, Lit) and '"' in it.text:
            for k, piece in enumerate(it.text.split('"')):
                if k:
                    segs.append([])
                if piece:
                    segs[-1].append(Lit(piece))
        else:
            segs[-1].append(it)
    return segs


def split_plan(fmt: str, client_ip: str = "remote_addr") -> SplitPlan | None:
    """The fast plan for ``fmt`` (read with ``client_ip``), or None when lines must be parsed one by one."""
    parsed = parse_format(fmt, client_ip)
    field_of = {it.name: it.field for it in parsed if isinstance(it, Var)}
    items = _expand(parsed)
    segs = split_on_quotes(items)
    if len(segs) % 2 == 0:
        return None  # unbalanced quotes
    q = (len(segs) - 1) // 2
    quoted: list[str] = []
    for k in range(q):
        seg = segs[2 * k + 1]
        if len(seg) != 1 or not isinstance(seg[0], Var):
            return None
        quoted.append(seg[0].name)
    unq = [segs[2 * k] for k in range(q + 1)]
    if any(isinstance(it, Lit) and ("\n" in it.text or "\\" in it.text or "%" in it.text)
           for seg in unq for it in seg):
        return None  # ('%' is a blank in the line parser's format: it would not stop where the value ends)
    skippable = opaque(parsed)
    glue = _tokens(unq[0] + unq[-1], skippable) if q else _tokens(unq[0], skippable)
    if glue is None:
        return None
    middle: list[tuple[TokenSpec, ...]] = []
    middle_lit: list[str | None] = []
    for seg in unq[1:-1]:
        toks = _tokens(seg, skippable)
        if toks is None:
            return None
        middle.append(toks)
        middle_lit.append("".join(it.text for it in seg if isinstance(it, Lit))
                          if all(isinstance(it, Lit) for it in seg) else None)
    fields: dict[str, tuple[str, int, int]] = {}
    skipped: list[tuple[str, int, int]] = []

    def claim(name: str, where: str, seg: int, tok: int) -> None:
        f = {"time_local_dt": "time", "time_local_tz": "tz", "time_iso8601": "time", "msec": "time"}.get(
            name, field_of.get(name, "^"))
        if f in ("e", "^") or f in fields:
            if where != "q":  # (a quoted value ends at its quote, which no value holds)
                skipped.append((where, seg, tok))
            return
        fields[f] = (where, seg, tok)

    # two variables of one field ($body_bytes_sent and $bytes_sent, $host and $server_name): the first in the
    # format is the field, as in GoAccess and the line parser; the others are skipped
    order = {it.name: k for k, it in reversed(list(enumerate(items))) if isinstance(it, Var)}
    order["time_local_dt"] = order["time_local_tz"] = order.get("time_local_dt", -1)
    places = [(name, "q", k, 0) for k, name in enumerate(quoted)]
    places += [(spec.var, "g", 0, t) for t, spec in enumerate(glue) if spec.kind == "var"]
    places += [(spec.var, "m", j, t) for j, toks in enumerate(middle) for t, spec in enumerate(toks)
               if spec.kind == "var"]
    for name, where, at, tok in sorted(places, key=lambda p: order.get(p[0], -1)):
        claim(name, where, at, tok)
    if "time" not in fields or "h" not in fields or "r" not in fields:
        return None
    times = [it.field for it in parsed if isinstance(it, Var) and it.field in TIME_FIELDS]
    if len(times) != 1:
        return None  # two time variables: the first one counts, which the line parser sorts out
    time_var = times[0]
    list_marks: tuple[bytes, ...] = ()
    if any(isinstance(it, Var) and it.name in LISTS for seg in unq for it in seg):
        unquoted_text = " ".join(it.text for seg in unq for it in seg if isinstance(it, Lit))
        if any(sep in unquoted_text for sep in LIST_SEPARATORS):
            return None  # the format's own text looks like a list separator: cannot tell lines with lists
        list_marks = tuple(sep.encode() for sep in LIST_SEPARATORS)
    return SplitPlan(quotes=q, quoted=tuple(quoted), glue=glue, middle=tuple(middle),
                     middle_literal=tuple(middle_lit), time_var=time_var, fields=fields,
                     skipped=tuple(sorted(skipped)), list_marks=list_marks, glue_blanks=len(glue) - 1,
                     middle_blanks=tuple(len(m) - 1 for m in middle))
