"""Query fingerprints: SQL with literals replaced, so that the same query shape groups together.

Follows pgBadger's ``normalize_query``: comments dropped, string, dollar-quoted and
numeric literals and ``$n`` parameters become ``?``, ``IN (…)`` and ``VALUES (…), (…)``
lists collapse, whitespace collapses, everything is lower-cased and a trailing
``;`` goes.  Works on many statements at once: one regex pass per rule over the
statements joined with NUL (which SQL text never contains), and a rule runs only
when the text holds the character it is about.  Each distinct text is normalized once
(and, with a caller's cache, once per scan).
"""

from __future__ import annotations

import re
from operator import methodcaller

SEP = b"\x00"

# (guards, pattern, replacement): the rule runs only if one of ``guards`` occurs in the text (no guards:
# always).  Patterns begin with a literal or a character class, never with a look-behind, so that the
# regex engine skips quickly to where a match can start: the number rule, written as pgBadger's
# ``(?:(?<![\w$.\"?-])-)?(?<![\w$.\"?])\d+…`` is 6x slower (same matches: the look-behinds moved after
# the first character).
_WS_CHARS = rb"[ \t\r\n\f\v]"
_RULES: tuple[tuple[tuple[bytes, ...], re.Pattern[bytes], bytes], ...] = (
    ((b"/*",), re.compile(rb"/\*[^\x00]*?\*/"), b" "),
    ((b"--",), re.compile(rb"--[^\n\x00]*"), b" "),
    ((b"$",), re.compile(rb"\$([A-Za-z_]\w*|)\$[^\x00]*?\$\1\$"), b"?"),
    ((b"e'", b"E'"), re.compile(rb"[eE](?<![\w$][eE])'(?:[^'\\\x00]|''|\\[^\x00])*'"), b"?"),
    ((b"'",), re.compile(rb"'(?:[^'\x00]|'')*'"), b"?"),
    ((b"$",), re.compile(rb"\$\d+"), b"?"),
    # numbers (a minus sign that is not an operator goes too, as in pgBadger)
    ((), re.compile(rb"[-\d](?:(?<=-)(?<![\w$.\"?-]-)\d+|(?<=\d)(?<![\w$.\"?]\d)\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?"
                    rb"(?![\w.])"), b"?"),
    # runs of white space, and single white space other than a blank, become one blank
    ((b"  ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"),
     re.compile(_WS_CHARS + rb"(?:" + _WS_CHARS + rb"+|(?<=[\t\r\n\f\v]))"), b" "),
    ((b"(",), re.compile(rb"(?i)\bin ?\( ?\?(?: ?, ?\?)* ?\)"), b"in (...)"),
    ((b"(",), re.compile(rb"(?i)\bvalues ?\( ?\?(?: ?, ?\?)* ?\)(?: ?, ?\( ?\?(?: ?, ?\?)* ?\))*"),
     b"values (...)"),
)
_TRIM = b" ;\t\n\r"


# literals go first (the statements of a busy server differ mostly in them); white space and lists
# after, on the distinct texts left: usually very few
_LITERAL_RULES = _RULES[:7]
_SHAPE_RULES = _RULES[7:]


def _apply(buf: bytes, rules: tuple[tuple[tuple[bytes, ...], re.Pattern[bytes], bytes], ...] = _RULES) -> bytes:
    for guards, rx, repl in rules:
        if guards and not any(g in buf for g in guards):
            continue
        buf = rx.sub(repl, buf)
    return buf


CACHE_MAX = 200_000  # statement texts a cache keeps (then it starts over): bounded memory
CACHE_TEXT_MAX = 4096  # longer statements are not kept (seldom repeated, and they would take the memory)


def _normalize_many(todo: list[bytes]) -> list[bytes] | None:
    """Fingerprints of distinct statements, all rules applied to them joined with NUL (None: one holds NUL).

    Between the literal rules and the others the texts are deduplicated again: the rules never cross a
    separator, so each text's result depends on that text alone."""
    buf = SEP.join(todo)
    if buf.count(SEP) != len(todo) - 1:
        return None
    mid = _apply(buf, _LITERAL_RULES).split(SEP)
    shapes = list(dict.fromkeys(mid))
    done = _apply(SEP.join(shapes), _SHAPE_RULES).lower().split(SEP)
    if len(mid) != len(todo) or len(done) != len(shapes):  # pragma: no cover - rules keep separators
        return None
    final = dict(zip(shapes, map(methodcaller("strip", _TRIM), done), strict=True))
    return list(map(final.__getitem__, mid))


def fingerprints(queries: list[bytes], cache: dict[bytes, bytes] | None = None) -> list[bytes]:
    """The fingerprint of each query (same order).

    Each distinct text is normalized once.  With ``cache`` (raw text -> fingerprint, owned by the
    caller: one per scan), texts seen in earlier calls are looked up instead.
    """
    if not queries:
        return []
    if cache is None:
        cache = {}
    todo = [q for q in dict.fromkeys(queries) if q not in cache]
    if todo:
        if len(cache) + len(todo) > CACHE_MAX:  # start over (with every text of this call to do)
            cache.clear()
            todo = list(dict.fromkeys(queries))
        out = _normalize_many(todo)
        if out is None:  # a statement holds NUL itself: one at a time
            out = [fingerprint(q) for q in todo]
        if len(todo) == len(queries):
            if len(cache) + len(todo) <= CACHE_MAX:
                cache.update((q, fp) for q, fp in zip(todo, out, strict=True) if len(q) <= CACHE_TEXT_MAX)
            return out
        cache.update(zip(todo, out, strict=True))
        res = list(map(cache.__getitem__, queries))
        for q in todo:
            if len(q) > CACHE_TEXT_MAX:
                del cache[q]
        return res
    return list(map(cache.__getitem__, queries))


def fingerprint(query: bytes) -> bytes:
    return _apply(query.replace(SEP, b" ")).lower().strip(_TRIM)


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
