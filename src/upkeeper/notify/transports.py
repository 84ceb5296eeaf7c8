"""One tiny class per transport (healthchecks style).

``send(payload)`` delivers one message (see :class:`upkeeper.notify.events.Payload`)
or raises :class:`TransportError`; ``permanent`` tells whether retrying could
help (a rejected request) or not worth it.  Nothing here knows about routing,
state or retries.
"""

from __future__ import annotations

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
            color = SLACK_RESOLVED if e["state"] == "resolved" else SLACK_COLORS.get(e["severity"], "#439fe0")
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


class Apprise(Transport):
    """Any apprise URL.  Apprise reports only success or failure, so failures count as transient,
    except a URL apprise does not understand."""

    kind = "apprise"

    def __init__(self, name: str, cfg: AppriseChannel) -> None:
        super().__init__(name)
        self.cfg = cfg
        # apprise's debug and info lines quote the service's URL with its token ("Telegram POST URL:
        # https://api.telegram.org/bot<token>/…", a Slack or Discord webhook's path): only the whole apprise URL
        # is a registered secret, so with the daemon at --log-level debug they reached the log unmasked.  Its
        # warnings (what a failed delivery reports) name the service, not the URL.
        apprise_log = logging.getLogger("apprise")
        if apprise_log.level < logging.WARNING:
            apprise_log.setLevel(logging.WARNING)
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
        ntype = (apprise.NotifyType.SUCCESS if resolved else
                 apprise.NotifyType.FAILURE if sev in ("critical", "error") else
                 apprise.NotifyType.WARNING if sev == "warning" else apprise.NotifyType.INFO)
        app = apprise.Apprise()
        app.add(obj)
        with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            # the body is plain text quoting log lines: apprise escapes it for HTML (email) and Markdown
            # services, so a quoted "<img onerror=…>" or "*bold*" is shown, not rendered
            ok = app.notify(title=payload["title"], body=payload["text"], notify_type=ntype,
                            body_format=apprise.NotifyFormat.TEXT)
        if not ok:
            detail = " ".join(captured.getvalue().split())[-400:]
            raise TransportError(f"apprise channel {self.name!r} failed" + (f": {detail}" if detail else ""))
        return "sent"


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
