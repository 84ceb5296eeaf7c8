"""CLI option values parsed by hand (``history --since``, ``run --at``) give a usage error naming the option and how
to write it -- never "internal error" with a traceback -- and ``--since`` reads a duration as the config does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.cli._gate import parse_at
from upkeeper.cli.history import parse_since
from upkeeper.config.types import parse_duration
from upkeeper.errors import UsageError

#: characters dates and durations are made of, and a few that are not
option_text = st.text(alphabet=st.sampled_from(list("0123456789-+:T .,smhdwkyaysecWZ\x00é")), max_size=30)

#: durations as a config may write them: '14 days', '1h30m', '2 weeks 3d', '90'
_UNITS = [("w", "weeks", 7 * 86400), ("d", "days", 86400), ("h", "hours", 3600), ("m", "minutes", 60),
          ("s", "seconds", 1)]


@st.composite
def config_durations(draw: Any) -> str:
    picked = draw(st.lists(st.sampled_from(range(len(_UNITS))), min_size=1, max_size=3, unique=True))
    parts = []
    for i in sorted(picked):
        short, long, _ = _UNITS[i]
        n = draw(st.integers(0, 50))
        parts.append(f"{n}{draw(st.sampled_from(['', ' ']))}{draw(st.sampled_from([short, long]))}")
    return draw(st.sampled_from(["", " "])).join(parts)


@settings(max_examples=300, deadline=None)
@given(option_text)
@example("99999999d")  # a duration past 10 years: was DurationError, "internal error"
@example("0001-01-01T00:00+01:00")  # before year 1 in UTC: was OverflowError, "internal error"
@example("9999-12-31T23:59-01:00")
def test_since_is_a_time_or_a_usage_error_naming_the_option(text: str) -> None:
    try:
        ts = parse_since(text)
    except UsageError as exc:
        assert "--since" in str(exc) and exc.hint and "Try:" in exc.hint
        return
    assert ts is None or ts.tzinfo is not None


@settings(max_examples=200, deadline=None)
@given(config_durations())
@example("14 days")  # was refused: "neither a duration nor a date"
@example("1h30m")
def test_since_accepts_every_duration_the_config_accepts(text: str) -> None:
    expected = parse_duration(text)
    before = datetime.now(UTC)
    got = parse_since(text)
    after = datetime.now(UTC)
    assert got is not None and before - expected <= got <= after - expected


@settings(max_examples=300, deadline=None)
@given(option_text, st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles", "Pacific/Kiritimati"]))
@example("0001-01-01 00:00", "Europe/Berlin")  # was OverflowError, "internal error"
@example("9999-12-31 23:59", "America/Los_Angeles")
@example("0001-01-01T00:00+01:00", "UTC")
def test_at_is_a_time_or_a_usage_error_naming_the_option(text: str, tz: str) -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    try:
        when = parse_at(text, tz, now)
    except UsageError as exc:
        assert "--at" in str(exc) and exc.hint and "Try:" in exc.hint
        return
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)


def test_history_since_takes_a_config_duration_and_says_what_is_wrong(cli: Any, make_config: Any) -> None:
    """'history --since "14 days"' was refused ("neither a duration nor a date") although 'retention: 14 days'
    is a valid config; '--since 99999999d' and '--since 0001-01-01T00:00+01:00' ended in "internal error: ...
    run again with --debug and report the traceback"."""
    cfg = make_config({"jobs": {"nap": {"task": "debug.fail", "options": {"mode": "error", "message": "planned"}}}})
    cli(["--config", cfg, "run", "nap", "--no-retry"])
    for since in ("14 days", "1h30m", "2 weeks"):
        res = cli(["--config", cfg, "history", "--since", since, "--json"])
        assert res.code == 0, res.err
        assert [r["job"] for r in res.json()] == ["nap"]
    for since, says in (("99999999d", "too large"), ("0001-01-01T00:00+01:00", "out of range"),
                        ("yesterdayish", "neither a date nor a duration")):
        res = cli(["--config", cfg, "history", "--since", since])
        assert res.code == 2, res.output
        assert "internal error" not in res.err and f"--since {since!r}" in res.err and says in res.err, res.err
        assert "Try:" in res.err


def test_a_run_id_past_any_database_integer_is_no_run(cli: Any, make_config: Any) -> None:
    """'upkeeper show 99999999999999999999' and 'upkeeper cancel ...' with such an id (a mistyped or pasted
    number) ended in "internal error: OverflowError: Python int too large to convert to SQLite INTEGER"; it is
    'no run with id ...' (exit 2) like any other unknown id."""
    cfg = make_config({"jobs": {"nap": {"task": "debug.fail", "options": {"mode": "error", "message": "planned"}}}})
    for argv in (["show", "99999999999999999999"], ["cancel", "99999999999999999999"], ["show", "--", "-" + "9" * 20],
                 ["show", str(2**63)]):
        res = cli(["--config", cfg, *argv])
        assert res.code == 2, res.output
        assert "internal error" not in res.err and "no run with id" in res.err, res.err


@settings(max_examples=100, deadline=None)
@given(st.integers())
@example(2**63)  # was OverflowError
@example(-(2**63) - 1)
def test_any_integer_is_a_run_or_none(tmp_path_factory: pytest.TempPathFactory, run_id: int) -> None:
    from upkeeper.core.history import History

    h = History(f"sqlite:///{tmp_path_factory.getbasetemp() / 'ids.db'}")
    try:
        assert h.get_run(run_id) is None
    finally:
        h.close()
