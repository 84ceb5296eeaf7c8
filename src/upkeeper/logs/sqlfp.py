"""Query fingerprints: SQL with literals replaced, so that the same query shape groups together.

Follows pgBadger's ``normalize_query``: comments dropped, string, dollar-quoted and
numeric literals and ``$n`` parameters become ``?``, ``IN (…)`` and ``VALUES (…), (…)``
lists collapse, whitespace collapses, everything but quoted identifiers is lower-cased and a
trailing ``;`` goes.  Block comments nest as in PostgreSQL (``/* a /* b */ c */`` is one comment; pgBadger ends it at
the first ``*/``).  Comments and strings (``'…'``, ``E'…'``, ``$tag$…$tag$``) are found in one
pass, left to right, as PostgreSQL's lexer does: a ``--`` or a ``$$`` in a string, a quote in a
comment, never cut the statement elsewhere (a quote in a quoted identifier still does, as in pgBadger).
A quoted identifier is kept as written (``"Users"`` is not ``users``, ``"Tab 1"`` not ``"Tab 2"``:
other tables, as in pgBadger; ``"users"`` stays apart from ``users``, as there); every
way of writing a number (``1``, ``-1``, ``.5``, ``5.``, ``1e-3``, ``0x1F``, ``0o17``, ``0b101``,
``1_000``) is a ``?``.  Works on many statements at once: one regex pass per rule over the
statements joined with NUL (which SQL text never contains), and a rule runs only
when the text holds the character it is about.  Each distinct text is normalized once
(and, with a caller's cache, once per scan).
"""

from __future__ import annotations

import functools
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
    ((b"$",), re.compile(rb"\$\d+"), b"?"),
    # numbers (a minus sign that is not an operator goes too, as in pgBadger): 1, 1.5, .5, 5., 1e-3, 1_000,
    # 0x1F, 0o17, 0b101 (PostgreSQL 16's integer literals)
    ((), re.compile(rb"[-\d.](?:(?<=-)(?<![\w$.\"?-]-)(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|"
                    rb"(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
                    rb"|(?<=0)(?<![\w$.\"?]0)(?:[xX][\da-fA-F_]+|[oO][0-7_]+|[bB][01_]+)"
                    rb"|(?<=\d)(?<![\w$.\"?]\d)[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?"
                    rb"|(?<=\.)(?<![\w$.\"?]\.)\d[\d_]*(?:[eE][+-]?\d+)?)"
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
_LITERAL_RULES = _RULES[:2]
_SHAPE_RULES = _RULES[2:]


def _apply(buf: bytes, rules: tuple[tuple[tuple[bytes, ...], re.Pattern[bytes], bytes], ...] = _RULES) -> bytes:
    for guards, rx, repl in rules:
        if guards and not any(g in buf for g in guards):
            continue
        buf = rx.sub(repl, buf)
    return buf


# Comments and strings: one alternation, so that whichever begins first wins (a ``--`` in a string is no
# comment, a quote in a comment no string), each branch beginning with a literal for the regex engine to skip
# quickly to where a match can start; a pattern holds the branches whose guards occur in the text (``e`` begins
# few matches and would stop the engine at every e).  A text with one kind of them only (the usual case) needs
# no order, and takes the constant replacements of _ONE_KIND (no callback: faster)
_LEX_BRANCHES: tuple[tuple[tuple[bytes, ...], bytes], ...] = (
    ((b"/*",), rb"/\*[^\x00]*?\*/"),
    ((b"--",), rb"--[^\n\x00]*"),
    ((b"$",), rb"\$([A-Za-z_]\w*|)\$[^\x00]*?\$\1\$"),
    ((b"e'",), rb"e(?<![\w$]e)'(?:[^'\\\x00]|''|\\[^\x00])*'"),
    ((b"E'",), rb"E(?<![\w$]E)'(?:[^'\\\x00]|''|\\[^\x00])*'"),
    ((b"'",), rb"'(?:[^'\x00]|'')*'"),
)
_ONE_KIND: tuple[tuple[tuple[bytes, ...], re.Pattern[bytes], bytes], ...] = (
    ((b"/*",), re.compile(_LEX_BRANCHES[0][1]), b" "),
    ((b"--",), re.compile(_LEX_BRANCHES[1][1]), b" "),
    ((b"$",), re.compile(_LEX_BRANCHES[2][1]), b"?"),
    ((b"'",), re.compile(_LEX_BRANCHES[5][1]), b"?"),
)
_DOLLAR_QUOTE = re.compile(rb"\$(?:[A-Za-z_]\w*)?\$")

#: a quoted identifier stands for itself while the rules run: ``"\x01<index in letters a-p>\x01"`` (no
#: digit, white space or capital for them to change); a text holding \x01 is taken alone, \x01 as a blank
MARK = b"\x01"
_IDENT = re.compile(rb'"(?:[^"\x00]|"")*"')
_IDENT_REF = re.compile(rb'"\x01[a-p]+\x01"')
#: a text whose quoted identifiers the literal rules leave alone matches whole: each is a letter, then letters,
#: digits and _ (a digit after an ASCII letter, digit or _ is no number); it stops at another one (``"Tab 1"``, ``"a$1"``) or at
#: one not closed.  Possessive: one pass, no backtracking
_PLAIN_IDENTS = re.compile(rb'(?:[^"]++|"[A-Za-z_\x80-\xff](?:[A-Za-z_\x80-\xff]|(?<=[0-9A-Za-z_])[0-9])*+")*+')


@functools.cache
def _lex_pattern(present: tuple[bool, ...]) -> re.Pattern[bytes]:
    """The pattern of the branches ``present`` says the text may hold."""
    return re.compile(b"|".join(rx for (_g, rx), on in zip(_LEX_BRANCHES, present, strict=True) if on))


def _lex_one(m: re.Match[bytes]) -> bytes:
    return b" " if m.group()[:1] in (b"/", b"-") else b"?"


def _comment_end(buf: bytes, start: int) -> int:
    """Where the block comment opened at ``start`` ends, nested ones counted as PostgreSQL's lexer does
    (``/* a /* b */ c */``: one comment); -1 if it does not end in its text."""
    stop = buf.find(SEP, start)
    if stop < 0:
        stop = len(buf)
    depth, i = 1, start + 2
    while True:
        close = buf.find(b"*/", i, stop)
        if close < 0:
            return -1
        opening = buf.find(b"/*", i, close + 1)  # (left to right: "/*/" opens, "*/*" closes)
        if opening >= 0:
            depth, i = depth + 1, opening + 2
            continue
        depth, i = depth - 1, close + 2
        if depth == 0:
            return i


def _lex_nested(buf: bytes, rx: re.Pattern[bytes]) -> bytes:
    """:func:`_lex` for a text whose block comments may nest: each comment runs to its own ``*/`` (one not closed
    in its text ends where the pattern's did, at the first ``*/``)."""
    out: list[bytes] = []
    pos = 0
    while (m := rx.search(buf, pos)) is not None:
        out.append(buf[pos:m.start()])
        if buf.startswith(b"/*", m.start()):
            end = _comment_end(buf, m.start())
            out.append(b" ")
            pos = end if end >= 0 else m.end()
        else:
            out.append(_lex_one(m))
            pos = m.end()
    out.append(buf[pos:])
    return b"".join(out)


def _lex(buf: bytes) -> bytes:
    """Comments become a blank, strings (``'…'``, ``E'…'``, ``$tag$…$tag$``) a ``?``.  Block comments nest, as in
    PostgreSQL: ``/* outer /* inner */ still comment */`` is one comment."""
    on = [any(g in buf for g in guards) for guards, _rx in _LEX_BRANCHES]
    on[2] = on[2] and _DOLLAR_QUOTE.search(buf) is not None  # ($1 is no dollar quote)
    if not any(on):
        return buf
    # a comment may hold another when some "/*" began no comment (one in a comment, a string, or a comment not
    # closed): then the text is read again, a match at a time (rare; counting them costs little)
    if sum(on) == 1 and not on[3] and not on[4]:
        rx, repl = next((rx, repl) for (_g, rx, repl), one in zip(_ONE_KIND, (on[0], on[1], on[2], on[5]),
                                                                  strict=True) if one)
        out, n = rx.subn(repl, buf)
        if on[0] and n != buf.count(b"/*"):
            return _lex_nested(buf, _lex_pattern(tuple(on)))
        return out
    comments = 0

    def one(m: re.Match[bytes]) -> bytes:
        nonlocal comments
        first = m.group()[:1]
        if first == b"/":
            comments += 1
            return b" "
        return b" " if first == b"-" else b"?"

    out = _lex_pattern(tuple(on)).sub(one, buf)
    if on[0] and comments != buf.count(b"/*"):
        return _lex_nested(buf, _lex_pattern(tuple(on)))
    return out


def _letters(n: int) -> bytes:
    out = bytearray()
    while True:
        n, r = divmod(n, 16)
        out.append(0x61 + r)
        if not n:
            return bytes(out)


def _protect(buf: bytes, names: dict[bytes, bytes]) -> bytes:
    """``buf`` with its quoted identifiers marked (``names``: identifier → mark, the same identifier the same
    mark, so that texts that differ in literals only stay equal)."""
    if b'"' not in buf:
        return buf

    def one(m: re.Match[bytes]) -> bytes:
        tok = m.group()
        mark = names.get(tok)
        if mark is None:
            mark = names[tok] = b'"' + MARK + _letters(len(names)) + MARK + b'"'
        return mark

    return _IDENT.sub(one, buf)


def _unmark(buf: bytes, names: dict[bytes, bytes]) -> bytes:
    """``buf`` with its quoted identifiers as written."""
    if not names:
        return buf
    by_mark = {mark: name for name, mark in names.items()}
    return _IDENT_REF.sub(lambda m: by_mark[m.group()], buf)


def _literals(buf: bytes) -> bytes:
    """Comments, strings, parameters and numbers replaced; quoted identifiers as they are."""
    buf = _lex(buf)
    if b'"' in buf and _PLAIN_IDENTS.match(buf).end() < len(buf):  # type: ignore[union-attr] # (it always matches)
        names: dict[bytes, bytes] = {}
        return _unmark(_apply(_protect(buf, names), _LITERAL_RULES), names)
    return _apply(buf, _LITERAL_RULES)  # (plain identifiers only: nothing there for them to change)


def _shape(buf: bytes) -> bytes:
    """White space and lists collapsed, lower-cased but for quoted identifiers."""
    names: dict[bytes, bytes] = {}
    return _unmark(_apply(_protect(buf, names), _SHAPE_RULES).lower(), names)


#: a DO block (after any comments) whose code is dollar-quoted: the code is no literal — two blocks that do different
#: things are two fingerprints, its own literals made ``?`` (as pgBadger keeps it: ``do $$begin … end$$``)
_DO_BLOCK = re.compile(rb"(?is)\s*(?:(?:/\*.*?\*/|--[^\n]*(?:\n|\Z))\s*)*do\s+(?:language\s+(\w+)\s+)?"
                       rb"\$((?:[A-Za-z_]\w*)?)\$((?:(?!\$\2\$).)*)\$\2\$\s*(?:language\s+(\w+))?[\s;]*")


def _do_block(query: bytes) -> bytes | None:
    """The fingerprint of a DO block: its code's between ``$$``, white space around it kept as one blank, as pgBadger
    writes it (None: not a dollar-quoted DO block)."""
    m = _DO_BLOCK.fullmatch(query)
    if m is None:
        return None
    lang1, _tag, body, lang2 = m.groups()
    return (b"do " + (b"language " + lang1.lower() + b" " if lang1 else b"") + b"$$" + _shape(_literals(body.replace(SEP, b" ").replace(MARK, b" "))) + b"$$"
            + (b" language " + lang2.lower() if lang2 else b""))


_DO_WORD = re.compile(rb"(?i)\bdo\b")


CACHE_MAX = 200_000  # statement texts a cache keeps (then it starts over): bounded memory
CACHE_TEXT_MAX = 4096  # longer statements are not kept (seldom repeated, and they would take the memory)


def _normalize_many(todo: list[bytes]) -> list[bytes] | None:
    """Fingerprints of distinct statements, all rules applied to them joined with NUL (None: one holds NUL, or
    the MARK of quoted identifiers).

    Between the literal rules and the others the texts are deduplicated again: the rules never cross a
    separator, so each text's result depends on that text alone."""
    buf = SEP.join(todo)
    if buf.count(SEP) != len(todo) - 1 or MARK in buf:
        return None
    mid = _literals(buf).split(SEP)
    shapes = list(dict.fromkeys(mid))
    done = _shape(SEP.join(shapes)).split(SEP)
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
        blocks = {q for q in todo if b"$" in q and _DO_WORD.search(q[:200]) and _DO_BLOCK.fullmatch(q)}
        rest = [q for q in todo if q not in blocks] if blocks else todo  # (DO blocks, few: one at a time)
        many = _normalize_many(rest) if rest else []
        if many is None:  # a statement holds NUL itself: one at a time
            many = [fingerprint(q) for q in rest]
        if blocks:
            by_text = dict(zip(rest, many, strict=True))
            out = [by_text[q] if q in by_text else fingerprint(q) for q in todo]
        else:
            out = many
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
    if b"$" in query and _DO_WORD.search(query[:200]):
        block = _do_block(query)
        if block is not None:
            return block
    return _shape(_literals(query.replace(SEP, b" ").replace(MARK, b" "))).strip(_TRIM)


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
