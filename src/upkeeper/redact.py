"""Keep secrets out of logs, history, error messages and ``--json``.

Every secret value the configuration loads is registered here; :func:`redact`
replaces registered values and the password part of URLs / conninfo strings.
Everything upkeeper writes to history or prints passes through it.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"
_MIN_LEN = 4  # shorter values would mangle ordinary text; such passwords are refused by nobody, but rare

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<post>@)")
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|secret|token|api_key|apikey|routing_key|integration_key)\s*[=:]\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s&,;]+)",
    re.IGNORECASE,
)


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    global _pattern
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget all registered secrets (tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """Mask registered secrets, URL passwords and ``password=…`` pairs in ``text``."""
    if not text:
        return text
    pat = _pattern
    if pat is not None:
        text = pat.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    return text


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the final message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:
            return True
        record.msg = redact(msg)
        record.args = None
        return True
