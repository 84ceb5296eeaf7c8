"""The access-log scanner: bad lines never crash it, the fast columnar path agrees with the
line-by-line GoAccess port on any input, and results do not depend on how input is cut."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from upkeeper.logs.access import Accumulator, ScanOptions, all_paths, merge, summarize, top
from upkeeper.logs.nginx_format import (
    COMBINED,
    COMBINED_TIMED,
    MAIN,
    LogFormatError,
    normalize_format,
    parse_format,
    split_plan,
    to_goaccess,
)

GOOD = [
    b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET /a?x=1 HTTP/1.1" 200 10 "-" "Mozilla/5.0 (X11)" 0.010',
    b'2001:db8::7 - bob [01/Mar/2024:10:00:59 +0000] "POST /login HTTP/2.0" 401 99 "https://x.example/" "curl/8" 0.2',
    b'9.9.9.9 - - [02/Mar/2024:23:59:59 +0000] "GET /api/v1/users/42 HTTP/1.1" 404 0 "-" "sqlmap/1.8" 1.500',
    b'5.6.7.8 - - [02/Mar/2024:00:00:00 +0000] "GET /static/app.3f2a9b1c.js HTTP/1.1" 304 0 "-" "-" 0.000',
    b'5.6.7.8 - - [02/Mar/2024:00:00:01 +0000] "GET /search?q=1%27%20OR%201=1-- HTTP/1.1" 500 5 "-" "x y" 0.3',
]


def feed_in_chunks(acc: Accumulator, data: bytes, chunk: int) -> None:
    """Feed ``data`` in buffers of about ``chunk`` bytes cut at line ends, as the file reader does."""
    pos = 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + chunk) + 1
        if end <= pos:
            nl = data.find(b"\n", pos + chunk)
            end = len(data) if nl < 0 else nl + 1
        acc.feed(data[pos:end], "t", pos)
        pos = end


def scan(data: bytes, *, fast: bool, chunk: int = 1 << 20, fmt: str = COMBINED_TIMED) -> dict[str, Any]:
    acc = Accumulator(ScanOptions(log_format=fmt, fast=fast))
    feed_in_chunks(acc, data, chunk)
    return comparable(summarize(acc.partial(), top_n=50))


def comparable(rep: dict[str, Any]) -> dict[str, Any]:
    """The report without what differs by path or chunking: the bytes read, how many lines took the fast path, and
    an unparsed sample's offset (a line the fast path hands to the line parser has none).  The samples themselves
    (unparsed lines, attack requests) are the same: the first in byte order, whatever the chunking."""
    rep = dict(rep)
    for k in ("fast_path_lines", "bytes_read"):
        rep.pop(k)
    rep["invalid_samples"] = [{**s, "offset": None} for s in rep["invalid_samples"]]
    return rep


noise = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(noise, max_size=40))
def test_garbage_never_crashes_and_is_counted(lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    for fast in (True, False):
        rep = scan(data, fast=fast)
        expected = sum(1 for ln in lines if ln and not ln.startswith(b"#"))
        assert rep["lines"] == expected
        assert rep["requests"] + rep["invalid"] == rep["lines"]


@st.composite
def mutated_log(draw: st.DrawFn) -> bytes:
    """Mostly good lines, some mutated (characters inserted, deleted or replaced)."""
    out = []
    for _ in range(draw(st.integers(1, 60))):
        line = bytearray(draw(st.sampled_from(GOOD)))
        for _ in range(draw(st.integers(0, 3))):
            pos = draw(st.integers(0, len(line)))
            op = draw(st.sampled_from(("ins", "del", "rep")))
            ch = draw(st.sampled_from(b' "[]\\-:/%+0x\t\r#'))
            if op == "ins":
                line.insert(pos, ch)
            elif line and pos < len(line):
                if op == "del":
                    del line[pos]
                else:
                    line[pos] = ch
        out.append(bytes(line))
    tail = b"\n" if draw(st.booleans()) else b""
    return b"\n".join(out) + tail


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_log(), st.sampled_from([64, 300, 1 << 20]))
# found by hypothesis: a carriage return before the method (GoAccess trims every whitespace character)
@example(b'1.2.3.4 - -- [01/Mar/2024:10:00:00 +0000] "\rGET /a?x=1 HTTP/1.1" 200 10 "-" "Mozilla/5.0 (X11)" 0.010\n'
         b'1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET /a?x=1 HTTP/1.1" 200 10 "-" "Mozilla/5.0 (X11)" 0.010', 64)
def test_fast_path_equals_line_parser(data: bytes, chunk: int) -> None:
    fast = scan(data, fast=True, chunk=chunk)
    assert fast == scan(data, fast=False)
    # every request is in exactly one of GoAccess's panels, so the paths add up
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED))
    acc.feed(data)
    assert sum(all_paths(acc.partial()).values()) == fast["requests"]


@settings(max_examples=50, deadline=None)
@given(mutated_log())
def test_combined_without_request_time(data: bytes) -> None:
    # the same lines read with the plain combined format: the trailing time is ignored, never an error
    assert scan(data, fast=True, fmt=COMBINED) == scan(data, fast=False, fmt=COMBINED)


def test_merge_of_parts_equals_whole() -> None:
    lines = GOOD * 40
    one = Accumulator(ScanOptions(log_format=COMBINED_TIMED))
    one.feed(b"\n".join(lines) + b"\n")
    whole = comparable(summarize(one.partial()))
    a, b = (Accumulator(ScanOptions(log_format=COMBINED_TIMED)) for _ in range(2))
    a.feed(b"\n".join(lines[:77]) + b"\n")
    b.feed(b"\n".join(lines[77:]) + b"\n")
    assert comparable(summarize(merge([a.partial(), b.partial()]))) == whole
    assert whole["requests"] == len(lines)


def test_formats_have_fast_plans_and_goaccess_equivalents() -> None:
    assert split_plan(COMBINED) is not None
    assert split_plan(COMBINED_TIMED) is not None
    assert split_plan("main") is not None
    assert to_goaccess(COMBINED_TIMED).log_format == '%h %^[%d:%t %^] "%r" %s %b "%R" "%u" %T'
    assert to_goaccess("combined").log_format == '%h %^[%d:%t %^] "%r" %s %b "%R" "%u"'
    # a custom format with upstream timing and a prefixed field
    custom = ('$remote_addr [$time_local] "$request" $status $body_bytes_sent rt=$request_time '
              'urt=$upstream_response_time "$http_user_agent"')
    assert split_plan(custom) is not None
    line = (b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 200 5 rt=0.250 urt=0.200 "ua"\n'
            b'1.2.3.4 [01/Mar/2024:10:00:00 +0000] "GET /x HTTP/1.1" 502 5 rt=1.250 urt=1.200, 0.050 "ua"\n')
    fast, slow = scan(line, fast=True, fmt=custom), scan(line, fast=False, fmt=custom)
    assert fast == slow
    assert fast["requests"] == 2 and fast["latency"]["overall"]["p95"] == 1250.0
    assert fast["latency"]["upstream"]["p50"] == 200.0


def _libc_strptime() -> Any:
    import ctypes

    libc = ctypes.CDLL(None)
    fn = libc.strptime
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    buf = ctypes.create_string_buffer(256)  # a struct tm, with room to spare

    def takes_all(s: bytes, fmt: bytes) -> bool:
        rest = fn(s, fmt, buf)
        return rest is not None and rest == b""

    return takes_all


TIME_CHARS = st.text(alphabet="0123456789:+-Z \t", max_size=16).map(str.encode)


@settings(max_examples=600, deadline=None)
@given(st.one_of(TIME_CHARS, st.sampled_from([b"10:00:00-05:00", b"10:00:00+0530", b"10:00:00+05", b"10:00:00Z",
                                               b"10:00:00+05:60", b"10:00:00-5:00", b"1:2:3 -05:00", b"10:00:00"])))
@example(b"10:00:00+05:3")
def test_time_with_offset_is_glibc_strptime(tok: bytes) -> None:
    """$time_iso8601's time is read as GoAccess reads it with --time-format=%T%z: glibc strptime must take
    the whole token (the offset may be west of UTC: '-05:00' was refused)."""
    from upkeeper.logs.goaccess import parse_time

    if b"\0" in tok:
        return
    assert (parse_time(tok, "%T%z") is not None) == _libc_strptime()(tok, b"%T%z"), tok
    assert (parse_time(tok, "%T") is not None) == _libc_strptime()(tok, b"%T"), tok


def test_iso8601_west_of_utc_is_parsed_on_every_path() -> None:
    fmt = '$remote_addr - $remote_user [$time_iso8601] "$request" $status $body_bytes_sent'
    data = b"".join(b'1.2.3.%d - - [2024-03-01T10:00:00-05:00] "GET /a HTTP/1.1" 200 5\n' % i for i in range(60))
    for fast in (True, False):
        rep = scan(data, fast=fast, fmt=fmt)
        assert rep["requests"] == 60 and rep["invalid"] == 0 and rep["first"] == "2024-03-01 10:00"


MAIN_DIRECTIVE = """log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                  '$status $body_bytes_sent "$http_referer" '
                  '"$http_user_agent" "$http_x_forwarded_for"';"""


@pytest.mark.parametrize(("given", "format_string"), [
    (MAIN_DIRECTIVE, MAIN),  # pasted from nginx.conf: name, strings on several lines, the ';'
    ("log_format main escape=default '$remote_addr [$time_local] \"$request\" $status';",
     '$remote_addr [$time_local] "$request" $status'),
    ("log_format j escape=json '{\"ip\":\"$remote_addr\",' '\"t\":\"$time_local\",\"r\":\"$request\"}';",
     '{"ip":"$remote_addr","t":"$time_local","r":"$request"}'),
    ("escape=json '{\"ip\":\"$remote_addr\",\"t\":\"$time_local\",\"r\":\"$request\",\"s\":$status}'",
     '{"ip":"$remote_addr","t":"$time_local","r":"$request","s":$status}'),
    ("escape=none $remote_addr [$time_local] \"$request\"", '$remote_addr [$time_local] "$request"'),
    ("'$remote_addr [$time_local] \\\"$request\\\"\\t$status'", '$remote_addr [$time_local] "$request"\t$status'),
    ("log_format plain $remote_addr|$time_iso8601|$request_uri;", "$remote_addr|$time_iso8601|$request_uri"),
    # a bare format that begins and ends with a quoted variable is not nginx's quoted-string syntax
    ('"$http_x_real_ip" [$time_local] "$request"', '"$http_x_real_ip" [$time_local] "$request"'),
    # the string alone, copied from between its quotes: nginx's escapes resolved as nginx resolves them
    ("$remote_addr\\t[$time_local]\\t\"$request\"\\t$status", '$remote_addr\t[$time_local]\t"$request"\t$status'),
    ('$remote_addr [$time_local] \\"$request\\" $status \\x', '$remote_addr [$time_local] "$request" $status \\x'),
])
def test_log_format_directive_and_escape_are_understood(given: str, format_string: str) -> None:
    """escape=… and a pasted 'log_format NAME …;' line were taken as part of the format: 100 % 'invalid %h'."""
    assert normalize_format(given) == format_string
    parse_format(given)


@pytest.mark.parametrize(("given", "message"), [
    ("escape=xml '$remote_addr [$time_local] \"$request\"'", "escape=xml is not an nginx log_format escape mode"),
    ("log_format main '$remote_addr [$time_local] \"$request\";", "a quote is not closed"),
    ("log_format main;", "has no format string"),
    ('$remote_addr [$time_local] $request $status', "$request is followed by a blank, not by a quote"),
    ('$remote_addr [$time_local] "$request $status"', "$request is followed by a blank, not by a quote"),
    # a '$' without a variable name, as nginx refuses it; the first was "has no client address"
    ('${remote_addr [$time_local] "$request" $status', "the '$' of '${remote_add' begins no variable (its '{'"),
    ('$remote_addr [$time_local] "$request" $status $', "the '$' of '$' begins no variable (no name"),
    ('$remote_addr [$time_local] "$request" $status $ $request_time', "the '$' of '$ $request_t' begins no"),
])
def test_log_formats_that_cannot_work_are_refused(given: str, message: str) -> None:
    with pytest.raises(LogFormatError) as err:
        parse_format(given)
    assert message in err.value.message


@pytest.mark.parametrize(("given", "hint"), [
    ("combinde", "Try: 'combined', or the format string"),
    ("combined_timd", "Try: 'combined_timed', or the format string"),
    ("myformat", "Try: the format string of your nginx.conf 'log_format' line"),
])
def test_a_misspelt_or_unknown_format_name_is_named_as_such(given: str, hint: str) -> None:
    """A word without a variable is a format's name: it was refused as 'has no client address ($remote_addr)'."""
    with pytest.raises(LogFormatError) as err:
        parse_format(given)
    assert err.value.message == f"unknown log_format name {given!r} (known names: combined, combined_timed, main)"
    assert err.value.hint is not None and err.value.hint.startswith(hint), err.value.hint


def test_a_misspelt_format_name_in_a_job_is_a_located_config_error() -> None:
    from upkeeper.config.loader import load_text
    from upkeeper.core.jobs import build_setup
    from upkeeper.errors import ConfigError

    text = ("targets:\n  web: {kind: nginx, access_log: /var/log/nginx/access.log}\njobs:\n  log-analysis:\n"
            "    task: logs.nginx\n    target: web\n    options: {log_format: combined_timd}\n")
    with pytest.raises(ConfigError) as err:
        build_setup(load_text(text, file="upkeeper.yaml"))
    text = f"{err.value} {err.value.hint}"  # the suggestion is the hint ('Try: …' on its own line)
    assert "upkeeper.yaml:7: jobs -> log-analysis -> options -> log_format: unknown log_format name " \
        "'combined_timd'" in text and "Try: 'combined_timed'" in text, text


def test_escape_json_lines_are_read_on_every_path() -> None:
    fmt = "escape=json '{\"ip\":\"$remote_addr\",\"t\":\"$time_local\",\"r\":\"$request\",\"s\":$status}'"
    data = b"".join(b'{"ip":"1.2.3.%d","t":"01/Mar/2024:10:00:00 +0000","r":"GET /a?q=\\"%d\\" HTTP/1.1","s":200}\n'
                    % (i, i) for i in range(60))
    for fast in (True, False):
        rep = scan(data, fast=fast, fmt=fmt)
        assert rep["requests"] == 60 and rep["invalid"] == 0 and rep["visitors"] == 60


FORMAT_PIECES = st.sampled_from([
    "$remote_addr", "$time_local", "$time_iso8601", "$msec", "$request", "$status", "$body_bytes_sent",
    "$http_user_agent", "$request_time", "$upstream_response_time", "$upstream_addr", "$host", "$foo", "${status}",
    " ", " - ", '"', "'", "[", "]", "→", "é", "%", "\\", "\\\"", ", ", " : ", ";", "{", "}", ":", "=", "\t",
    "escape=json ", "escape=none ", "log_format main ", "rt=",
])


GAP = st.lists(FORMAT_PIECES, max_size=4).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(GAP, GAP, GAP, GAP, st.sampled_from(["$time_local", "$time_iso8601", "$msec"])),
       st.text(st.characters(blacklist_categories=("Cs",)), max_size=3))
@example(("", " ", " → ", "", "$time_local"), "")
def test_any_format_is_refused_clearly_or_scans(parts: tuple[str, str, str, str, str], extra: str) -> None:
    """A log_format either fails the config check with a LogFormatError (a message naming the problem) or
    builds every scanning path and reads any line: never another exception (a non-Latin-1 literal raised
    UnicodeEncodeError at the first run)."""
    g0, g1, g2, g3, when = parts
    fmt = f'{g0}$remote_addr{g1}{when}{g2}"$request"{g3}{extra}'
    try:
        parse_format(fmt)
    except LogFormatError as exc:
        assert exc.message
        return
    from upkeeper.logs.arrowscan import arrow_plan

    arrow_plan(fmt)
    line = ('1.2.3.4 - - [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" 0.1 → é, : '
            '2024-03-01T10:00:00-05:00 1709287200.123\n').encode()
    for kw in ({"fast": False}, {"arrow": False}, {"arrow_min_buffer": 0}):
        acc = Accumulator(ScanOptions(log_format=fmt, **kw))
        acc.feed(line * 3 + b"garbage\n" + extra.encode() + b"\n")
        summarize(acc.partial())


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(1, 6), max_size=300), n=st.integers(0, 12))
def test_top_is_the_first_n_by_count_then_key(counts: list[int], n: int) -> None:
    """The report's top lists: the n entries of highest count, ties (many, with small counts) broken by key,
    also on counters far larger than n (where top first finds the n-th highest count)."""
    from collections import Counter

    counter = Counter({f"/p/{i:03d}".encode()[::-1]: c for i, c in enumerate(counts)})
    assert top(counter, n) == sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def test_a_line_short_of_a_token_never_borrows_one_from_the_line_before() -> None:
    """The split counted the blanks of a whole buffer: a value with one blank too many (here the request time) made
    up for an address missing from the next line, which was counted as a request of that value."""
    good = b'5.5.5.5 - - [01/Mar/2024:10:00:00 +0000] "GET /ok HTTP/1.1" 200 10 "-" "ua" 0.010\n'
    extra = b'1.1.1.1 - - [01/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" 200 10 "-" "ua" 0.1 9.9.9.9\n'
    short = b'- - [01/Mar/2024:10:00:00 +0000] "GET /b HTTP/1.1" 200 10 "-" "ua" 0.2\n'
    data = good * 40 + extra + short + good * 40
    for lines in (data, good * 100 + data):  # failing buffers bisected, and sifted
        fast = Accumulator(ScanOptions(log_format=COMBINED_TIMED, arrow=False))
        fast.feed(lines)
        slow = Accumulator(ScanOptions(log_format=COMBINED_TIMED, fast=False))
        slow.feed(lines)
        assert comparable(summarize(fast.partial())) == comparable(summarize(slow.partial()))
        assert fast.partial().invalid == 1


def test_a_tab_separated_format_given_alone_reads_its_lines() -> None:
    """The string of 'log_format tsv '$remote_addr\\t…';' given alone (its \\t as nginx.conf writes it) was taken
    as a backslash and a 't': every line of the tab-separated log unparsed ('line ends before %h')."""
    fmt = "$remote_addr\\t[$time_local]\\t\"$request\"\\t$status\\t$body_bytes_sent"
    data = b"".join(b'1.2.3.%d\t[01/Mar/2024:10:00:00 +0000]\t"GET /a HTTP/1.1"\t200\t5\n' % i for i in range(60))
    for fast in (True, False):
        rep = scan(data, fast=fast, fmt=fmt)
        assert rep["requests"] == 60 and rep["invalid"] == 0, fast


def test_a_format_with_two_variables_written_together_is_refused_saying_why() -> None:
    """'$scheme://$host$request_uri' (a request line built from its parts): no line could be cut into $host and
    $request_uri, and a run reported 100 % unparsed with 'line ends before %v'. Now the format is refused."""
    import pytest

    from upkeeper.logs.nginx_format import LogFormatError, parse_format

    with pytest.raises(LogFormatError, match=r"\$host and \$request_uri are written together"):
        parse_format('$remote_addr [$time_local] "$request_method $scheme://$host$request_uri $server_protocol" '
                     '$status $body_bytes_sent')
    parse_format('$remote_addr [$time_local] "$request_method $scheme://$host $request_uri" $status $body_bytes_sent')
