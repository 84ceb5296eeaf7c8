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
from operator import methodcaller

SEP = b"\x00"

# (guard, pattern, replacement): the rule runs only if ``guard`` occurs in the text
_WS = (b"  ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")
_RULES: tuple[tuple[bytes, re.Pattern[bytes], bytes], ...] = (
    (b"/*", re.compile(rb"/\*[^\x00]*?\*/"), b" "),
    (b"--", re.compile(rb"--[^\n\x00]*"), b" "),
    (b"$", re.compile(rb"\$([A-Za-z_]\w*|)\$[^\x00]*?\$\1\$"), b"?"),
    (b"'", re.compile(rb"[eE](?<![\w$][eE])'(?:[^'\\\x00]|''|\\[^\x00])*'"), b"?"),
    (b"'", re.compile(rb"'(?:[^'\x00]|'')*'"), b"?"),
    (b"$", re.compile(rb"\$\d+"), b"?"),
    # numbers (a minus sign that is not an operator goes too, as in pgBadger)
    (b"", re.compile(rb"(?:(?<![\w$.\"?-])-)?(?<![\w$.\"?])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])"), b"?"),
    (b"", re.compile(rb"[ \t\r\n\f\v]{2,}|[\t\r\n\f\v]"), b" "),
    (b"(", re.compile(rb"(?i)\bin ?\( ?\?(?: ?, ?\?)* ?\)"), b"in (...)"),
    (b"(", re.compile(rb"(?i)\bvalues ?\( ?\?(?: ?, ?\?)* ?\)(?: ?, ?\( ?\?(?: ?, ?\?)* ?\))*"),
     b"values (...)"),
)
_TRIM = b" ;\t\n\r"


def _apply(buf: bytes) -> bytes:
    for guard, rx, repl in _RULES:
        if guard and guard not in buf:
            continue
        if rx.pattern.startswith(rb"[ \t") and not any(w in buf for w in _WS):
            continue
        buf = rx.sub(repl, buf)
    return buf.lower()


def fingerprints(queries: list[bytes]) -> list[bytes]:
    """The fingerprint of each query (same order)."""
    if not queries:
        return []
    buf = SEP.join(queries)
    if buf.count(SEP) != len(queries) - 1:
        return [fingerprint(q) for q in queries]
    out = list(map(methodcaller("strip", _TRIM), _apply(buf).split(SEP)))
    if len(out) != len(queries):  # pragma: no cover - a rule never adds or removes a separator
        return [fingerprint(q) for q in queries]
    return out


def fingerprint(query: bytes) -> bytes:
    return _apply(query.replace(SEP, b" ")).strip(_TRIM)


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
