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
# an example cut short in the middle of a URL's password (log examples are cut at a few hundred
# characters): "postgresql://app:s3cr" at the very end; an all-digit tail is taken for a port
_URL_PASSWORD_CUT = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>(?!\d+$)[^@\s/]+)$")
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|secret|token|api_key|apikey|routing_key|integration_key)\s*[=:]\s*)"
    # a bind placeholder (?, $1) is no secret: query fingerprints such as "where token = ?" stay as they are
    r"(?P<pw>'[^']*'|\"[^\"]*\"|(?!(?:\?|\$\d+)(?:[\s&,;)]|$))[^\s&,;]+)",
    re.IGNORECASE,
)
# SQL: CREATE/ALTER ROLE … PASSWORD 'literal' (also E'…'; a literal cut short masks the rest)
_SQL_PASSWORD = re.compile(
    r"(?P<pre>\bPASSWORD\s+)(?P<pw>(?:E'(?:[^'\\]|\\[\s\S]|'')*|'(?:[^']|'')*)(?:'|$))", re.IGNORECASE)
# a URL's query parameter whose name looks like a credential: ?access_token=…, &X-Amz-Signature=…
_QUERY_PARAM = re.compile(r"(?P<pre>[?&;](?P<name>[A-Za-z0-9_.\-\[\]]{1,80})=)(?P<pw>[^&#\s\"'<>;]+)")
# the same inside a percent-encoded URL (a redirect target: ?next=%2Freset%3Ftoken%3D…)
_QUERY_PARAM_ENCODED = re.compile(
    r"(?P<pre>(?:%3[Ff]|%26|%3[Bb])(?P<name>[A-Za-z0-9_.\-]{1,80})%3[Dd])(?P<pw>(?:(?!%26|%23)[^&#\s\"'<>;])+)")
# a parameter name containing one of these is sensitive (access_token, client_secret, apikey)
_PARAM_STRONG = ("token", "secret", "passw", "apikey", "api_key", "signature", "credential", "sessid",
                 "sessionid", "privatekey", "private_key")
# … or having one of these as a word of its name (key, api-key, sessionKey, sig, auth, pwd), but not
# merely containing it: keyword, author, passenger stay visible
_PARAM_WORDS = frozenset({"key", "sig", "auth", "pass", "pwd", "pw", "session", "jwt", "otp", "sid",
                          "passcode", "pin"})
_NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# an OAuth 2.0 authorization code (RFC 6749 § 4.1.2: ``/callback?code=…&state=…``, also ``auth_code``,
# ``device_code``) is a credential until redeemed; a short value (``?code=US``, ``?code=404``) is not one
_CODE_WORDS = frozenset({"code"})
_CODE_MIN_LEN = 16


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
    """Mask registered secrets, URL passwords, ``password=…`` pairs, the values of credential-like URL
    query parameters (``?access_token=…``, ``&sig=…``) and SQL ``PASSWORD '…'`` literals in ``text``."""
    if not text:
        return text
    pat = _pattern
    if pat is not None:
        text = pat.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
    if "://" in text:
        text = _URL_PASSWORD_CUT.sub(lambda m: m.group("pre") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_query_param, text)
    if "%3" in text:
        text = _QUERY_PARAM_ENCODED.sub(_query_param, text)
    if "'" in text:
        text = _SQL_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    return text


def sensitive_param(name: str, value: str = "") -> bool:
    """Does a URL query parameter called ``name`` (with ``value``) look like it carries a credential?"""
    low = name.lower()
    if any(s in low for s in _PARAM_STRONG):
        return True
    words = {w.lower() for w in _NAME_WORD.findall(name)}
    if words & _PARAM_WORDS:
        return True
    return bool(words & _CODE_WORDS) and len(value) >= _CODE_MIN_LEN


def _query_param(m: re.Match[str]) -> str:
    return m.group("pre") + MASK if sensitive_param(m.group("name"), m.group("pw")) else m.group(0)


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
