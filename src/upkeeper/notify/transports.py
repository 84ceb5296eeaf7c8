"""One tiny class per transport (healthchecks style).

``send(payload)`` delivers one message (see :class:`upkeeper.notify.events.Payload`)
or raises :class:`TransportError`; ``permanent`` tells whether retrying could
help (a rejected request) or not worth it.  Nothing here knows about routing,
state or retries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

from upkeeper import __version__, lazy
from upkeeper.config.notify import (
    AppriseChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from upkeeper.errors import UpkeeperError
from upkeeper.fmt import printable_lines
from upkeeper.redact import redact, register_secret

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy.module("httpx")

log = logging.getLogger(__name__)
USER_AGENT = f"upkeeper/{__version__}"


class TransportError(UpkeeperError):
    """A delivery failed.  ``permanent``: the endpoint rejected it and a retry would not help.
    ``retry_after``: the endpoint asked not to be retried before this long (HTTP ``Retry-After``)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: timedelta | None = None) -> None:
        super().__init__(redact(message))
        self.permanent = permanent
        self.retry_after = retry_after


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """An HTTP ``Retry-After`` (RFC 9110 § 10.2.3): delay-seconds or an HTTP-date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def _check_response(resp: httpx.Response, what: str) -> None:
    if resp.is_success:
        return
    body = resp.text[:300].strip()
    permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
    wait = retry_after(resp.headers.get("Retry-After"), datetime.now(UTC)) if not permanent else None
    raise TransportError(f"{what} answered HTTP {resp.status_code}" + (f": {body}" if body else "")
                         + (f" (Retry-After: {wait.total_seconds():g} s)" if wait is not None else ""),
                         permanent=permanent, retry_after=wait)


async def _apost(url: str, timeout: float, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT}) as client:
        return await client.post(url, content=content, headers={"Content-Type": "application/json", **headers})


def _post(url: str, what: str, timeout: float, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST and read the whole answer within ``timeout`` seconds in all.  httpx's own timeout bounds each
    network operation, not the request: an endpoint dribbling its answer a byte at a time held the sender
    (and the daemon's retries) for as long as it liked; the whole request is cancelled at the deadline."""
    import asyncio  # only when something is sent (~10 ms)

    try:
        resp = asyncio.run(asyncio.wait_for(_apost(url, timeout, content, headers), timeout))
    except TimeoutError:
        raise TransportError(f"{what} gave no complete answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise TransportError(f"{what} unreachable: {type(exc).__name__}: {exc}") from None
    _check_response(resp, what)
    return resp


class Transport:
    kind: ClassVar[str] = ""
    #: whether this transport takes announcements and info events (PagerDuty does not)
    announcements: ClassVar[bool] = True
    #: one message per event (PagerDuty), or several events in one message
    per_event: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, payload: dict[str, Any]) -> str:
        """Deliver; return a short receipt (HTTP status, dedup key …)."""
        raise NotImplementedError


class Webhook(Transport):
    kind = "webhook"

    def __init__(self, name: str, cfg: WebhookChannel) -> None:
        super().__init__(name)
        self.cfg = cfg

    def send(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()
        headers = dict(self.cfg.headers)
        secret = self.cfg.secret("signing_secret")
        if secret:
            sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Upkeeper-Signature"] = f"sha256={sig}"
        url = self.cfg.secret("url") or ""
        resp = _post(url, f"webhook {self.name}", self.cfg.timeout.total_seconds(), content=body, headers=headers)
        return f"HTTP {resp.status_code}"


SLACK_COLORS = {"critical": "#d40e0d", "error": "#d40e0d", "warning": "#f2c744", "info": "#439fe0"}
SLACK_RESOLVED = "#2eb886"
SLACK_CLOSED = "#9e9e9e"  # a problem closed without recovering (its job left the config)


def slack_text(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` escaped as Slack asks
    (https://api.slack.com/reference/surfaces/formatting#escaping), so a request path ``/<!channel>`` or
    ``<https://evil|login>`` quoted in a finding neither notifies everyone nor becomes a disguised link;
    control characters escaped (``\\x1B``)."""
    return printable_lines(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Slack(Transport):
    """Slack incoming webhook: ``text`` for notifications, one attachment per event for the channel."""

    kind = "slack"

    def __init__(self, name: str, cfg: SlackChannel) -> None:
        super().__init__(name)
        self.cfg = cfg

    @staticmethod
    def message(payload: dict[str, Any]) -> dict[str, Any]:
        attachments = []
        for e in payload["events"]:
            color = ((SLACK_CLOSED if (e.get("details") or {}).get("closed") else SLACK_RESOLVED)
                     if e["state"] == "resolved" else SLACK_COLORS.get(e["severity"], "#439fe0"))
            fields = [{"title": k, "value": str(e[k]), "short": True} for k in ("job", "target", "status")
                      if e.get(k)]
            attachments.append({
                "fallback": e["title"], "color": color, "title": e["title"], "text": slack_text(e["text"]),
                "fields": fields, "footer": f"upkeeper on {payload['node']}",
                "ts": int(datetime.fromisoformat(e["ts"]).timestamp()) if e.get("ts") else None,
            })
        return {"text": slack_text(payload["title"]), "attachments": attachments}

    def send(self, payload: dict[str, Any]) -> str:
        url = self.cfg.secret("webhook_url") or ""
        body = json.dumps(self.message(payload), ensure_ascii=False).encode()
        resp = _post(url, f"slack {self.name}", self.cfg.timeout.total_seconds(), content=body, headers={})
        return f"HTTP {resp.status_code}"


class PagerDuty(Transport):
    """PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview/).

    Problems ``trigger``, resolutions ``resolve``; the dedup_key is stable per
    (job, check), so a repeat updates the open incident instead of opening another.
    """

    kind = "pagerduty"
    announcements = False
    per_event = True

    def __init__(self, name: str, cfg: PagerDutyChannel, node: str) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.node = node

    def body(self, event: dict[str, Any]) -> dict[str, Any]:
        key = self.cfg.secret("routing_key") or ""
        if event["state"] == "resolved":
            return {"routing_key": key, "event_action": "resolve", "dedup_key": event["dedup_key"]}
        custom = {k: event[k] for k in ("job", "check", "task", "status", "summary", "count", "repeats", "since",
                                        "level", "command") if event.get(k) not in (None, "", [])}
        if event.get("findings"):
            custom["findings"] = event["findings"]
        if event.get("text"):
            custom["message"] = event["text"]
        body: dict[str, Any] = {
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": event["dedup_key"],
            "payload": {
                "summary": event["title"][:1024],
                "source": self.cfg.source or self.node,
                "severity": event["severity"],
                "timestamp": event.get("ts"),
                "component": event.get("target") or event.get("job"),
                "group": event.get("job"),
                "class": event.get("check"),
                "custom_details": custom,
            },
            "client": "upkeeper",
        }
        for optional in ("timestamp", "component", "group", "class"):  # absent rather than null
            if body["payload"][optional] is None:
                del body["payload"][optional]
        return body

    def send(self, payload: dict[str, Any]) -> str:
        receipts = []
        for event in payload["events"]:
            if not event.get("dedup_key"):
                raise TransportError("PagerDuty needs a (job, check) event; this one has no dedup key",
                                     permanent=True)
            body = json.dumps(self.body(event)).encode()
            resp = _post(self.cfg.url, f"PagerDuty ({self.name})", self.cfg.timeout.total_seconds(), content=body,
                         headers={})
            try:
                answer = resp.json()
            except ValueError:
                answer = {}
            receipts.append(f"{event['state'] == 'resolved' and 'resolve' or 'trigger'} "
                            f"{answer.get('dedup_key', event['dedup_key'])}: {answer.get('status', resp.status_code)}")
        return "; ".join(receipts)


_APPRISE_LOCK = threading.Lock()
_URL_PARTS = re.compile(r"[/?#&=@:;,+]")
#: an SMTP reply in what apprise logs of a failed mail: ``Socket Exception: (550, b'5.7.1 …')`` (an
#: ``SMTPResponseException``) or ``{'ops@example.com': (550, b'…')}`` (``SMTPRecipientsRefused``)
_SMTP_REPLY = re.compile(r"\((\d{3}), b?['\"]([^'\"]{0,200})")
#: an HTTP status in apprise's warning for a failed request: "Failed to send … notification: Bad Request - error=400."
_HTTP_STATUS = re.compile(r"error=(\d{3})\b")


class _Dropped(logging.NullHandler):
    """Takes apprise's records, so that they never reach Python's last-resort handler (stderr) or the log: what a
    delivery logs is reported by :meth:`Apprise.send` -- in its error when it fails (the engine logs that), as
    warnings of its own when it was sent with some."""


def _isolate_apprise_log() -> None:
    """apprise's debug and info lines quote the service's URL with its token ("Telegram POST URL:
    https://api.telegram.org/bot<token>/…", a Slack or Discord webhook's path): only the whole apprise URL is a
    registered secret, so with the daemon at --log-level debug they reached the log unmasked.  They never
    propagate now, nor do its warnings, which a delivery reports itself (they were on stderr twice more than
    that in 'notify test', once forwarded to the log and once in the failure's own line).  The logger itself
    stays at debug so that a failed delivery's own capture (``notify(log_level=DEBUG)``) sees the line carrying
    the SMTP reply, which tells a permanent rejection (5xx) from a temporary one (see :func:`apprise_failure`)."""
    with _APPRISE_LOCK:
        apprise_log = logging.getLogger("apprise")
        if any(isinstance(h, _Dropped) for h in apprise_log.handlers):
            return
        apprise_log.addHandler(_Dropped())
        apprise_log.propagate = False
        apprise_log.setLevel(logging.DEBUG)


def apprise_failure(lines: list[str]) -> tuple[bool, str]:
    """Whether what apprise logged of a failed delivery shows a permanent failure, and the reply that tells.

    Permanent: an SMTP 5xx reply (RFC 5321 § 4.2.1: "permanent negative completion" — a rejected recipient or
    sender, a refused message, failed authentication), or an HTTP 4xx other than 408 and 429 (as for our own
    HTTP channels).  Everything else (4xx SMTP replies, 5xx HTTP statuses, timeouts, connection errors, a
    failure apprise does not describe) is temporary and retried."""
    for line in lines:
        m = _SMTP_REPLY.search(line)
        if m is not None:
            code = int(m.group(1))
            reply = f"SMTP {code} {m.group(2)}".strip()
            if 500 <= code < 600:
                return True, reply
            if 400 <= code < 500:
                return False, reply
        m = _HTTP_STATUS.search(line)
        if m is not None:
            code = int(m.group(1))
            return 400 <= code < 500 and code not in (408, 429), f"HTTP {code}"
    return False, ""


class Apprise(Transport):
    """Any apprise URL.  A failure is permanent when what apprise logged of it says so (an SMTP 5xx reply, an
    HTTP 4xx: :func:`apprise_failure`) or apprise does not understand the URL; otherwise it is retried."""

    kind = "apprise"

    def __init__(self, name: str, cfg: AppriseChannel) -> None:
        super().__init__(name)
        self.cfg = cfg
        _isolate_apprise_log()  # its debug lines quote the URL with its token: never logged
        # … and the libraries under it log the request path (urllib3 at debug: "POST /bot<token>/sendMessage"):
        # the URL's token-like parts are secrets of their own
        for part in _URL_PARTS.split((cfg.secret("url") or "").partition("://")[2]):
            if len(part) >= 16 and "." not in part and (not part.isalpha() or part != part.lower()):
                register_secret(part)

    def send(self, payload: dict[str, Any]) -> str:
        import apprise

        url = self.cfg.secret("url") or ""
        with _APPRISE_LOCK:  # apprise's plugin registry is loaded lazily and not thread-safe
            obj = apprise.Apprise.instantiate(url)
        if obj is None:
            scheme = url.split("://", 1)[0]
            raise TransportError(f"apprise does not understand the URL of channel {self.name!r} "
                                 f"(scheme {scheme}://)", permanent=True)
        # the channel's timeout, unless the URL sets apprise's own (?cto=, ?rto=): apprise's defaults otherwise
        query = url.partition("?")[2].lower()
        timeout = self.cfg.timeout.total_seconds()
        if not any(p.startswith("cto=") for p in query.split("&")) and hasattr(obj, "socket_connect_timeout"):
            obj.socket_connect_timeout = timeout
        if not any(p.startswith("rto=") for p in query.split("&")) and hasattr(obj, "socket_read_timeout"):
            obj.socket_read_timeout = timeout
        sev = payload.get("severity", "info")
        resolved = all(e["state"] == "resolved" for e in payload["events"])
        closed = any((e.get("details") or {}).get("closed") for e in payload["events"])  # not recovered
        ntype = (apprise.NotifyType.INFO if resolved and closed else apprise.NotifyType.SUCCESS if resolved else
                 apprise.NotifyType.FAILURE if sev in ("critical", "error") else
                 apprise.NotifyType.WARNING if sev == "warning" else apprise.NotifyType.INFO)
        app = apprise.Apprise()
        app.add(obj)
        # apprise ≥ 2.3 returns each attempt's log lines, captured at the level asked for here: the debug line
        # with a failed mail's SMTP reply tells a permanent rejection from a temporary one
        extra: dict[str, Any] = {"log_level": logging.DEBUG} if _takes_log_level() else {}
        # the message alone: a delivery's error (status, notify log) is no place for a log line's time and level
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:  # type: ignore[no-untyped-call]
            # the body is plain text quoting log lines: apprise escapes it for HTML (email) and Markdown
            # services, so a quoted "<img onerror=…>" or "*bold*" is shown, not rendered
            ok = app.notify(title=payload["title"], body=payload["text"], notify_type=ntype,
                            body_format=apprise.NotifyFormat.TEXT, **extra)
        # this call's own lines when apprise returns them, at debug level and up (the LogCapture buffer also gets
        # the warnings of another thread's delivery sent meanwhile)
        entries = [e for result in (ok if extra and hasattr(ok, "__iter__") else ())
                   for attempt in getattr(result, "attempts", ()) for e in getattr(attempt, "logs", ())]
        if ok:  # sent, with apprise's warnings if it had any (never its debug lines: they quote the URL)
            warned = ([str(getattr(e, "message", "")) for e in entries
                       if str(getattr(e, "level", "")).upper() in ("WARNING", "ERROR", "CRITICAL")]
                      if extra else captured.getvalue().splitlines())
            for line in filter(None, warned):
                log.warning("apprise channel %r: %s", self.name, line)
        else:
            lines = [str(getattr(e, "message", "")) for e in entries] or captured.getvalue().splitlines()
            permanent, reply = apprise_failure(lines)
            detail = " ".join(captured.getvalue().split())[-400:]
            if reply and reply not in detail:
                detail = f"{detail} ({reply})" if detail else reply
            raise TransportError(f"apprise channel {self.name!r} failed" + (f": {detail}" if detail else ""),
                                 permanent=permanent)
        return "sent"


@functools.cache
def _takes_log_level() -> bool:
    """Whether this apprise's ``notify`` takes ``log_level`` (and returns the attempts' log lines): ≥ 2.3."""
    import inspect

    import apprise

    return "log_level" in inspect.signature(apprise.Apprise.__init__).parameters


def build_transport(name: str, cfg: Any, node: str) -> Transport:
    if isinstance(cfg, PagerDutyChannel):
        return PagerDuty(name, cfg, node)
    if isinstance(cfg, SlackChannel):
        return Slack(name, cfg)
    if isinstance(cfg, WebhookChannel):
        return Webhook(name, cfg)
    if isinstance(cfg, AppriseChannel):
        return Apprise(name, cfg)
    raise TypeError(f"unknown channel kind {type(cfg).__name__}")
