"""Mask the credential fields of an access-log line that did not parse, before it is kept as a sample.

A line that fails to parse is kept (cut at 500 bytes) as a sample for the report.  When the
``log_format`` logs a credential — ``$http_authorization``, ``$http_cookie``, ``$cookie_NAME``,
``$http_x_api_key`` … — that value is in the sample too.  :func:`upkeeper.redact.redact` masks the
usual shapes (``Basic …``, ``Bearer …``, ``sessionid=…``) wherever they are; this module also masks
the fields themselves, whatever their value looks like, when the line can be cut by the format:

* a quoted field (``"$http_authorization"``): nginx escapes ``"`` inside values (``\\x22``), so a line
  written with the format has as many quotes as the format; the fields between the right quotes are
  masked;
* a credential variable outside quotes: the whole unquoted stretch around it is masked (its value may
  hold spaces, so where it ends is not known).

A line with another number of quotes (not written with this format) is left to ``redact`` alone.
"""

from __future__ import annotations

from upkeeper.logs.nginx_format import Var, parse_format, split_on_quotes
from upkeeper.redact import MASK, sensitive_param

_MASK = MASK.encode()
#: request and response headers (``$http_…``, ``$sent_http_…``, ``$upstream_http_…``) that carry credentials
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy_authorization", "cookie", "set_cookie"})


def sensitive_variable(name: str) -> bool:
    """Is the nginx variable ``name`` a credential: a cookie (``cookie_NAME``), an Authorization, Cookie
    or Set-Cookie header, or a header or query argument whose name looks like one (``http_x_api_key``,
    ``arg_access_token`` — the rules of :func:`upkeeper.redact.sensitive_param`)?"""
    n = name.lower()
    if n.startswith(("cookie_", "upstream_cookie_")):
        return True
    for pre in ("http_", "sent_http_", "upstream_http_", "arg_"):
        if n.startswith(pre):
            rest = n[len(pre):]
            return rest in _CREDENTIAL_HEADERS or sensitive_param(rest)
    return False


def quote_mask(log_format: str) -> tuple[int, frozenset[int]] | None:
    """For lines of ``log_format``: (the number of ``"``-separated segments of such a line, the indexes
    of the segments that hold a credential variable), or None when the format logs no credential."""
    segs = split_on_quotes(parse_format(log_format))
    hit = frozenset(k for k, seg in enumerate(segs)
                    if any(isinstance(it, Var) and sensitive_variable(it.name) for it in seg))
    return (len(segs), hit) if hit else None


def mask_line(line: bytes, mask: tuple[int, frozenset[int]] | None) -> bytes:
    """``line`` with the segments ``mask`` names replaced by ``***`` (unchanged when its quotes do not
    match the format's)."""
    if mask is None:
        return line
    n, hit = mask
    parts = line.split(b'"')
    if len(parts) != n:
        return line
    for k in hit:
        part = parts[k]
        body = part.strip()
        if not body or body == b"-":  # "-": nginx's empty value, no credential
            continue
        if k % 2:  # between quotes: the whole value
            parts[k] = _MASK
        else:  # the stretch between two quoted fields, keeping the spaces that separate it from them
            start = part.index(body[:1])
            parts[k] = part[:start] + _MASK + part[start + len(body):]
    return b'"'.join(parts)
