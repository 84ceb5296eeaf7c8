"""Reusable field types for config models: durations, byte sizes, names, secrets from files."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

_DURATION_UNITS: dict[str, tuple[float, str]] = {}
for _seconds, _label, _spellings in (
    (604800, "w", ("w", "wk", "week", "weeks")),
    (86400, "d", ("d", "day", "days")),
    (3600, "h", ("h", "hr", "hrs", "hour", "hours")),
    (60, "m", ("m", "min", "mins", "minute", "minutes")),
    (1, "s", ("s", "sec", "secs", "second", "seconds")),
    (0.001, "ms", ("ms",)),
):
    for _spelling in _spellings:
        _DURATION_UNITS[_spelling] = (_seconds, _label)

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER_RE = re.compile(rf"\s*{_NUMBER}\s*")
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*([a-z]+)\s*")
MAX_DURATION = timedelta(days=3650)
DURATION_HINT = "Try: '30s', '15m', '2h', '1d', '1h30m', or a plain number of seconds such as '90'"


def parse_unit_parts(text: str) -> tuple[timedelta, bool] | str:
    """Parse ``'1h30m'``-style text (larger units first, each once).

    Returns ``(duration, had_units)`` or a description of what is wrong.
    """
    lowered = text.strip().lower()
    if not lowered:
        return "it is empty"
    if lowered.startswith("-"):
        return "it must not be negative"
    if _PLAIN_NUMBER_RE.fullmatch(lowered):
        return timedelta(seconds=float(lowered)), False
    position = 0
    total = timedelta(0)
    seen: list[tuple[float, str]] = []
    while position < len(lowered):
        match = _DURATION_PART_RE.match(lowered, position)
        if match is None:
            return f"cannot read {lowered[position:].strip()!r}"
        number, unit = match.groups()
        if unit not in _DURATION_UNITS:
            return f"unknown unit {unit!r} (use s, m, h, d or w)"
        size, label = _DURATION_UNITS[unit]
        if seen and size >= seen[-1][0]:
            if size == seen[-1][0]:
                return f"unit {label!r} appears twice"
            return f"write larger units first ({label!r} after {seen[-1][1]!r})"
        seen.append((size, label))
        total += timedelta(seconds=float(number) * size)
        position = match.end()
    return total, True


class DurationError(ValueError):
    hint = DURATION_HINT


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``30s``, ``15m``, ``2h``, ``1d``, ``1w``, ``1h30m`` or a number of seconds (at most 10 years).

    Raises :class:`DurationError` (a ValueError) saying what is wrong.
    """

    def error(problem: str) -> DurationError:
        return DurationError(f"invalid duration {value!r}: {problem}")

    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, bool):
        raise error("expected a number of seconds or text like '15m'")
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise error("it must be a finite number")
        if value < 0:
            raise error("it must not be negative")
        try:
            td = timedelta(seconds=value)
        except OverflowError:
            raise error("it is too large") from None
    elif isinstance(value, str):
        try:
            parsed = parse_unit_parts(value)
        except OverflowError:
            raise error("it is too large") from None
        if isinstance(parsed, str):
            raise error(parsed)
        td = parsed[0]
    else:
        raise error(f"expected text or a number, got {type(value).__name__}")
    if td < timedelta(0):
        raise error("it must not be negative")
    if td > MAX_DURATION:
        raise error("it is too large (at most 10 years)")
    return td


def format_duration(td: timedelta) -> str:
    """Render a timedelta compactly: ``1h30m``, ``45s``, ``2d``."""
    secs = int(td.total_seconds())
    if secs == 0:
        return f"{td.total_seconds():g}s" if td.total_seconds() else "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$|^\d+(\.\d+)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "duration: '30s', '15m', '2h', '1d', '1h30m' or seconds",
        }
    ),
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_MULT = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(value: str | int | float) -> int:
    """Parse ``100MB``, ``1GiB``, ``512k`` or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or text like '100MB', '1GiB'")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):  # (YAML's .inf, .nan)
            raise ValueError(f"invalid size {value!r}: use bytes or a unit, like '100MB', '512KiB', '1GB'")
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    m = _SIZE.match(str(value))
    if not m or (m.group(2) or "").lower() not in _SIZE_MULT:
        raise ValueError(f"invalid size {value!r}: use bytes or a unit, like '100MB', '512KiB', '1GB'")
    size = float(m.group(1)) * _SIZE_MULT[(m.group(2) or "").lower()]
    if not math.isfinite(size):  # 400 digits: no disk or memory is that large
        raise ValueError(f"invalid size {str(value)[:40]!r}…: too large; use bytes or a unit, like '100MB', '1TB'")
    return int(size)


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "description": "size: bytes, or '100MB', '1GiB'",
        }
    ),
]

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"),
]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors."""

    # defer_build: schemas are built on first use, so loading the config does not pay for
    # every model of every feature (upkeeper starts faster)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class FileSecrets(StrictModel):
    """Mixin: each field named in ``secret_fields`` may instead be given as ``<field>_file``.

    The file's content (without its trailing newline) becomes the value.  Giving
    both is an error, and so is an empty secret (an empty file, or ``${VAR}`` of an
    empty variable): it would silently mean "no secret" (S3, for one, would fall
    back to AWS_SECRET_ACCESS_KEY).  Models declare the ``*_file`` field themselves
    so that it appears in the JSON schema.
    """

    secret_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in cls.secret_fields:
            fkey = f"{name}_file"
            path = data.get(fkey)
            if path is None:
                if isinstance(data.get(name), str) and not data[name].strip():
                    raise ValueError(f"{name} is empty (an empty ${{VARIABLE}}?): give the secret, or remove {name}")
                continue
            if data.get(name) is not None:
                raise ValueError(f"give either {name} or {fkey}, not both")
            try:
                content = Path(str(path)).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read {fkey} {path}: {exc.strerror or exc}") from None
            if not content.strip():
                raise ValueError(f"{fkey} {path} is empty: write the secret into it, or remove {fkey}")
            data = {**data, name: content.rstrip("\r\n")}
        return data

    def secret(self, name: str) -> str | None:
        value = getattr(self, name, None)
        if value is None:
            return None
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)
