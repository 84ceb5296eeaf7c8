"""The fast :func:`is_bot` and :func:`scanner_name` give the same answers as the frozen reference (tests/logs/agentref).

They cost 100-300 µs per distinct agent (case-insensitive patterns that ``re`` tries alternative by alternative at
every byte): 1.7 s of ``summarize`` for a log of 10k distinct agents.  Now the agent is lower-cased once, the
patterns (all lower-case) run without ``re.IGNORECASE``, and only on the agents where a literal pre-filter finds one
of the words each of their alternatives needs.  Checked here: a realistic corpus of 20k distinct agents, a
hypothesis fuzz of agents built from its pieces (random case, random bytes, blanks, the 8 KiB classified prefix's
edge), and, structurally, that every alternative of both patterns needs one of its pre-filter's words and that no
pattern depends on upper case.
"""

from __future__ import annotations

import functools
import re
import re._constants as C  # CPython's own regex parser (Python 3.11+, the project's minimum)
import re._parser as _parser
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logs import agent_corpus as ac
from logs.agentref import classify as ref
from upkeeper.logs import classify as new

AGENTS = ac.corpus(20000)


@functools.cache
def ref_bots() -> tuple[bool, ...]:
    return tuple(map(ref.is_bot, AGENTS))


def assert_same(agent: bytes) -> None:
    assert new.is_bot(agent) is ref.is_bot(agent), agent
    assert new.scanner_name(agent) == ref.scanner_name(agent), agent


def test_the_corpus_is_realistic() -> None:
    """Many distinct agents, bots and scanners among them, every scanner of SCANNER_AGENTS named at least once."""
    assert len(set(AGENTS)) == len(AGENTS) == 20000
    bots = sum(ref_bots())
    assert 0.05 * len(AGENTS) < bots < 0.4 * len(AGENTS)
    names = {ref.scanner_name(a) for a in AGENTS}
    missing = {n for n, _rx in new.SCANNER_AGENTS} - names
    assert not missing, f"add an agent of {missing} to tests/logs/agent_corpus.py's SCANNERS"
    assert {c + "_in_agent" for c in new._AGENT_ATTACKS} <= names


def test_same_answers_on_the_corpus() -> None:
    for a in AGENTS:
        assert_same(a)


def test_same_answers_in_any_case() -> None:
    """Upper-cased and case-swapped: the old patterns were case-insensitive, the new ones see the lower-cased agent."""
    for a in AGENTS[::7]:
        assert_same(a.upper())
        assert_same(a.swapcase())


PIECES = [*ac.WORDS, *ac.JUNK, *(w for w in new._BOT_WORDS), *(w for w in new._SCANNER_WORDS),
          *(_t.split(b" ")[0] for _t in ac.BOTS + ac.SCANNERS)]
WHOLE = ac.BOTS + ac.SCANNERS + ac.APPS + ac.JUNK


@st.composite
def agents(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            parts.append(draw(st.sampled_from(PIECES)))
        elif kind == 1:
            parts.append(draw(st.sampled_from(WHOLE)))
        elif kind == 2:
            parts.append(draw(st.binary(max_size=8)))
        else:
            parts.append(draw(st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\x0b", b"; ", b"/", b"(", b")", b"-"])))
    a = b"".join(parts)
    flips = draw(st.lists(st.integers(0, max(len(a) - 1, 0)), max_size=8))
    b = bytearray(a)
    for i in flips:
        if i < len(b) and 65 <= (b[i] | 0x20) - 32 <= 90:
            b[i] ^= 0x20
    return bytes(b)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agents())
@example(b"okhttp/3.12.1\n")
@example(b" ab/2")
@example(b"CuBot 1")
@example(b"() {:;};")
@example(b"${JNDI:ldap://x}")
def test_same_answers_on_agents_built_from_the_pieces(agent: bytes) -> None:
    assert_same(agent)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(-20, 4), st.sampled_from(PIECES + [b"okhttp/3.1.2", b"okhttp/3.1.2\n", b"\nab/"]),
       st.sampled_from([b" ", b"x", b"\n", b"M"]), st.booleans())
def test_same_answers_at_the_edge_of_the_classified_bytes(shift: int, piece: bytes, pad: bytes, upper: bool) -> None:
    """Only the first AGENT_CLASSIFIED_BYTES are classified: a word cut there, an ``okhttp/3.x.y`` ending there
    (``$``), blanks stripped before the cut."""
    if upper:
        piece = piece.upper()
    start = new.AGENT_CLASSIFIED_BYTES - len(piece) + shift
    agent = pad * start + piece + b" tail"
    assert_same(agent)
    assert_same(b"  " + agent)


# -- structure: what makes the answers the same ------------------------------------------------

def needs_word(seq: Any, words: tuple[bytes, ...], before: bytes = b"") -> bool:
    """Whether every match of the parsed sequence ``seq`` (after the literal bytes ``before``) holds one of ``words``:
    a run of literal bytes holding one, or a group, repetition (at least once) or alternation (each alternative)
    that needs one (the parser factors out the common prefix of alternatives: ``l9(?:explore|tcpid)``)."""
    run = bytearray(before)
    for op, av in seq:
        if op is C.LITERAL:
            run.append(av)
            continue
        if any(w in run for w in words):
            return True
        if op is C.SUBPATTERN and needs_word(av[3], words, bytes(run)):
            return True
        if op is C.BRANCH and all(needs_word(alt, words, bytes(run)) for alt in av[1]):
            return True
        run = bytearray()
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1 and needs_word(av[2], words):
            return True
        if op is C.ATOMIC_GROUP and needs_word(av, words):
            return True
    return any(w in run for w in words)


def case_blind(seq: Any) -> list[str]:
    """The parts of a parsed pattern that match upper-case letters (a pattern without any matches the same
    lower-cased text without IGNORECASE as the text in any case with it)."""
    bad: list[str] = []
    for op, av in seq:
        if op in (C.LITERAL, C.NOT_LITERAL) and 65 <= av <= 90:
            bad.append(f"{op} {chr(av)}")
        elif op is C.IN:
            for iop, iav in av:
                if iop is C.LITERAL and 65 <= iav <= 90 or iop is C.RANGE and iav[0] <= 90 and iav[1] >= 65:
                    bad.append(f"class {iop} {iav}")
        elif op is C.SUBPATTERN:
            bad += case_blind(av[3])
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            bad += case_blind(av[2])
        elif op is C.BRANCH:
            for alt in av[1]:
                bad += case_blind(alt)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            bad += case_blind(av[1])
        elif op is C.ATOMIC_GROUP:
            bad += case_blind(av)
        elif op in (C.GROUPREF, C.GROUPREF_EXISTS):
            bad.append("back reference")
    return bad


PREFILTERED = [(new._BOT_RX, new._BOT_WORDS, new._BOT_WORDS_RX), (new._SCANNER_RX, new._SCANNER_WORDS,
                                                                  new._SCANNER_WORDS_RX)]


@pytest.mark.parametrize(("rx", "words", "words_rx"), PREFILTERED, ids=["bots", "scanners"])
def test_each_alternative_needs_a_word_of_its_prefilter(rx: re.Pattern[bytes], words: tuple[bytes, ...],
                                                        words_rx: re.Pattern[bytes]) -> None:
    assert not rx.flags & re.IGNORECASE
    parsed = _parser.parse(rx.pattern)
    assert needs_word(parsed, words)
    top = list(parsed)
    alts = top[0][1][1] if len(top) == 1 and top[0][0] is C.BRANCH else [parsed]
    assert len(alts) > 30
    assert all(w == w.lower() for w in words)
    for w in words:  # the grouped search finds each word
        assert words_rx.search(b"x" + w + b"x")
    assert not words_rx.search(b"mozilla/5.0 (x11; linux x86_64; rv:125.0) gecko/20100101 firefox/125.0")


def test_the_checks_catch_a_missing_word_and_upper_case() -> None:
    """The structural checks are not vacuous."""
    assert not needs_word(_parser.parse(rb"(?<!cu)bot\b|crawl"), (b"bot",))
    assert needs_word(_parser.parse(rb"(?<!cu)bot\b|cr(?:a|aa)wl"), (b"bot", b"cr"))
    assert not needs_word(_parser.parse(rb"health.?check"), (b"healthcheck",))
    assert not needs_word(_parser.parse(rb"\$\{\s*(?:jndi|x)?"), (b"${j",))
    assert needs_word(_parser.parse(rb"l9explore|l9tcpid"), (b"l9explore", b"l9tcpid"))
    assert not needs_word(_parser.parse(rb"l9explore|l9tcpid"), (b"l9explore",))
    assert case_blind(_parser.parse(rb"a[A-Z]b")) and case_blind(_parser.parse(rb"(?:x|(?<!Q)y)"))
    assert not case_blind(_parser.parse(rb"\S\B[^}]{0,20}\w(?P<abc>[0-9a-z])"))


@pytest.mark.parametrize("rx", [new._BOT_RX, new._SCANNER_RX], ids=["bots", "scanners"])
def test_the_patterns_match_no_upper_case(rx: re.Pattern[bytes]) -> None:
    """Case-insensitive patterns that are lower-case give the same answers on the lower-cased agent without
    IGNORECASE (bytes patterns fold ASCII only, as bytes.lower() does)."""
    assert case_blind(_parser.parse(rx.pattern)) == []


def test_browsers_and_apps_rarely_reach_the_patterns() -> None:
    """What makes it fast: the agents of people (most distinct agents) seldom hold a pre-filter's word, so the
    patterns run on few of them (a word common in browsers' agents, ``mozilla`` or ``mobile``, would undo it).
    The corpus's ``CUBOT`` phones hold ``bot``."""
    people = [a.lower() for a, bot in zip(AGENTS, ref_bots(), strict=True) if not bot]
    assert len(people) > 0.6 * len(AGENTS)
    bot_words = sum(1 for a in people if new._BOT_WORDS_RX.search(a))
    scanner_words = sum(1 for a in people if new._SCANNER_WORDS_RX.search(a))
    assert bot_words < 0.1 * len(people), bot_words
    assert scanner_words < 0.01 * len(people), scanner_words
