"""REFERENCE COPY (tests only, frozen at 0a6635e): Query fingerprints: SQL with literals replaced, so that the same query shape groups together.

Follows pgBadger's ``normalize_query``: comments dropped, string, dollar-quoted and
numeric literals and ``$n`` parameters become ``?``, ``IN (…)`` and ``VALUES (…), (…)``
lists collapse, whitespace collapses, everything is lower-cased and a trailing
``;`` goes.  Works on many statements at once: one regex pass per rule over the
statements joined with NUL (which SQL text never contains), and a rule runs only
when the text holds the character it is about.
"""

from __future__ import annotations

import re

SEP = b"\x00"

# CHANGED (not in the frozen original, the same semantic fix as in upkeeper.logs.sqlfp): comments and strings
# are found in one left-to-right pass (a ``--`` or ``$$`` in a string, a quote in a comment no longer cut the
# statement); quoted identifiers (paired in what is left) keep their case and digits; and every way of writing
# a number (.5, 5., 0x1F, 0o17, 0b101, 1_000) is a ``?``.  Written the plain way: one statement at a time,
# each quoted identifier set aside in a list while the other rules run.
_LEX = re.compile(rb"/\*[^\x00]*?\*/|--[^\n\x00]*|\$([A-Za-z_]\w*|)\$[^\x00]*?\$\1\$"
                  rb"|[eE](?<![\w$][eE])'(?:[^'\\\x00]|''|\\[^\x00])*'|'(?:[^'\x00]|'')*'")

# (guard, pattern, replacement): the rule runs only if ``guard`` occurs in the text
_WS = (b"  ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")
_RULES: tuple[tuple[bytes, re.Pattern[bytes], bytes], ...] = (
    (b"$", re.compile(rb"\$\d+"), b"?"),
    # numbers (a minus sign that is not an operator goes too, as in pgBadger)
    (b"", re.compile(rb"(?:(?<![\w$.\"?-])-)?(?<![\w$.\"?])"
                     rb"(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)"
                     rb"(?:[eE][+-]?\d+)?)(?![\w.])"), b"?"),
    (b"", re.compile(rb"[ \t\r\n\f\v]{2,}|[\t\r\n\f\v]"), b" "),
    (b"(", re.compile(rb"(?i)\bin ?\( ?\?(?: ?, ?\?)* ?\)"), b"in (...)"),
    (b"(", re.compile(rb"(?i)\bvalues ?\( ?\?(?: ?, ?\?)* ?\)(?: ?, ?\( ?\?(?: ?, ?\?)* ?\))*"),
     b"values (...)"),
)
_TRIM = b" ;\t\n\r"


def _apply(query: bytes) -> bytes:
    buf = _LEX.sub(lambda m: b" " if m.group()[:1] in (b"/", b"-") else b"?", query)
    names: list[bytes] = []

    def aside(m: re.Match[bytes]) -> bytes:
        names.append(m.group())
        return b'"\x01' + b"q" * len(names) + b'\x01"'

    buf = re.sub(rb'"(?:[^"\x00]|"")*"', aside, buf)
    for guard, rx, repl in _RULES:
        if guard and guard not in buf:
            continue
        if rx.pattern.startswith(rb"[ \t") and not any(w in buf for w in _WS):
            continue
        buf = rx.sub(repl, buf)
    return re.sub(rb'"\x01(q+)\x01"', lambda m: names[len(m.group(1)) - 1], buf.lower())


def fingerprints(queries: list[bytes]) -> list[bytes]:
    """The fingerprint of each query (same order)."""
    return [fingerprint(q) for q in queries]


def fingerprint(query: bytes) -> bytes:
    return _apply(query.replace(SEP, b" ").replace(b"\x01", b" ")).strip(_TRIM)


def statement_kind(fp: bytes) -> str:
    """select, insert, update, delete, copy, ddl, tcl (begin/commit/…) or other."""
    word = fp.lstrip(b"( ").split(b" ", 1)[0]
    if word in (b"select", b"with", b"values", b"table", b"show"):
        return "select"
    if word in (b"insert", b"update", b"delete", b"copy", b"merge"):
        return word.decode()
    if word in (b"create", b"alter", b"drop", b"truncate", b"comment", b"grant", b"revoke"):
        return "ddl"
    if word in (b"begin", b"commit", b"rollback", b"end", b"savepoint", b"release", b"start", b"set", b"reset"):
        return "tcl"
    return "other"
