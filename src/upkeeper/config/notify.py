"""The ``notifications`` section: channels, routes, escalation, missed runs and backup alerts.

Pure models; the engine lives in :mod:`upkeeper.notify`.  Cross-references
(channel names used by routes, escalation levels, windows) are checked by
:func:`check_references` with located messages, like job targets.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from upkeeper.config.types import Duration, FileSecrets, Name, StrictModel

if TYPE_CHECKING:
    from upkeeper.config.loader import LineMap
    from upkeeper.config.models import Config
    from upkeeper.errors import ConfigProblem

EventSeverity = Literal["info", "warning", "error", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}
Topic = Literal[
    "run", "finding", "missed", "backup.size", "backup.success_rate", "escalation", "window", "emergency",
    "planned", "test",
]
TOPICS: tuple[str, ...] = (
    "run", "finding", "missed", "backup.size", "backup.success_rate", "escalation", "window", "emergency",
    "planned", "test",
)
#: Topics that are announcements (sent to stakeholder channels, never to paging channels).
ANNOUNCEMENTS = ("window", "emergency", "planned")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class _Channel(FileSecrets):
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")
    timeout: Duration = Field(default=timedelta(seconds=10), description="give up one delivery attempt after this long. "
            "Source: upkeeper default")


class AppriseChannel(_Channel):
    """Any apprise URL: ``slack://…``, ``mailto://…``, ``msteams://…``, ``discord://…``, ``tgram://…``,
    ``json://…`` and about a hundred more (https://github.com/caronc/apprise/wiki)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)
    kind: Literal["apprise"] = Field("apprise", description="the kind of this entry. Source: none (fixed value)")
    url: SecretStr | None = Field(None, description="the apprise URL (it usually holds a token: kept secret). "
            "Source: upkeeper (not set by default)")
    url_file: str | None = Field(None,
        description="file whose content is `url` (instead of giving it inline). Source: upkeeper (not set by default)")

    @model_validator(mode="after")
    def _need_url(self) -> AppriseChannel:
        if self.url is None:
            raise ValueError("an apprise channel needs 'url' (or 'url_file')")
        if "://" not in self.url.get_secret_value():
            raise ValueError("'url' must look like SCHEME://…, e.g. mailto://user:pass@smtp.example.com?to=ops@example.com")
        return self


class SlackChannel(_Channel):
    """A Slack incoming webhook (``https://hooks.slack.com/services/…``), posted in Slack's own format."""

    secret_fields: ClassVar[tuple[str, ...]] = ("webhook_url",)
    kind: Literal["slack"] = Field(description="the kind of this entry. Source: none (required)")
    webhook_url: SecretStr | None = Field(None, description="the incoming-webhook URL Slack gave you. "
            "Source: upkeeper (not set by default)")
    webhook_url_file: str | None = Field(None,
        description="file whose content is `webhook_url` (instead of giving it inline). Source: upkeeper (not set by default)")

    @model_validator(mode="after")
    def _need_url(self) -> SlackChannel:
        if self.webhook_url is None:
            raise ValueError("a slack channel needs 'webhook_url' (or 'webhook_url_file')")
        if not self.webhook_url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("'webhook_url' must start with https:// (the URL Slack gave you: "
                             "https://hooks.slack.com/services/…)")
        return self


#: RFC 9110 § 5.1: a header name is a token
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: header names whose values are credentials (Authorization, X-Api-Key, X-Gitlab-Token, DD-API-KEY, Cookie …)
_CREDENTIAL_HEADER = re.compile(r"auth|token|key|secret|passw|session|cookie|signature|credential", re.IGNORECASE)


class WebhookChannel(_Channel):
    """POSTs upkeeper's JSON payload (schema in docs/notifications.md, 'upkeeper notify schema')."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url", "signing_secret")
    kind: Literal["webhook"] = Field(description="the kind of this entry. Source: none (required)")
    url: SecretStr | None = Field(None, description="where to POST (may hold a token: kept secret). "
            "Source: upkeeper (not set by default)")
    url_file: str | None = Field(None,
        description="file whose content is `url` (instead of giving it inline). Source: upkeeper (not set by default)")
    signing_secret: SecretStr | None = Field(
        None, description="if set, each request carries X-Upkeeper-Signature: sha256=HMAC-SHA256(secret, body). "
                "Source: upkeeper (not set by default)"
    )
    signing_secret_file: str | None = Field(None,
        description="file whose content is `signing_secret` (instead of giving it inline). Source: upkeeper (not set by default)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers. The value of a header "
            "whose name suggests a credential (Authorization, Cookie, or a name with token, key, secret, auth, "
            "password, session or signature in it, such as X-Gitlab-Token or DD-API-KEY) is kept out of logs, "
            "history and --json like any secret. Source: upkeeper (not set by default)")

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, v: dict[str, str]) -> dict[str, str]:
        # checked here, with the header named and its value never shown: the HTTP library refused such a header only
        # when sending, with its value in the error (recorded in the delivery log)
        for name, value in v.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name (letters, digits and "
                                 "!#$%&'*+-.^_`|~ only)")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"the value of header {name!r} holds a line break or NUL (a file or ${{VARIABLE}} "
                                 "with a trailing newline?): give it on one line")
        return v

    def secret_values(self) -> list[str]:
        """The values of the headers that carry credentials, and their parts after an auth scheme ("Bearer …")."""
        out: list[str] = []
        for name, value in self.headers.items():
            if _CREDENTIAL_HEADER.search(name):
                out.append(value.strip())
                scheme, _, rest = value.strip().partition(" ")
                if rest.strip():
                    out.append(rest.strip())
        return out

    @model_validator(mode="after")
    def _need_url(self) -> WebhookChannel:
        if self.url is None:
            raise ValueError("a webhook channel needs 'url' (or 'url_file')")
        if not self.url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https://")
        return self


class PagerDutyChannel(_Channel):
    """PagerDuty Events API v2: problems trigger, recoveries resolve (same dedup_key per job and check)."""

    secret_fields: ClassVar[tuple[str, ...]] = ("routing_key",)
    kind: Literal["pagerduty"] = Field(description="the kind of this entry. Source: none (required)")
    routing_key: SecretStr | None = Field(None, description="the integration (routing) key of a PagerDuty service. "
            "Source: upkeeper (not set by default)")
    routing_key_file: str | None = Field(None,
        description="file whose content is `routing_key` (instead of giving it inline). Source: upkeeper (not set by default)")
    url: str = Field(PAGERDUTY_EVENTS_URL, description="Events API v2 endpoint. Source: PagerDuty Events API v2")
    source: str | None = Field(None, description="the event's 'source' (default: the config's node). "
            "Source: upkeeper (not set by default)")

    @model_validator(mode="after")
    def _need_key(self) -> PagerDutyChannel:
        if self.routing_key is None:
            raise ValueError("a pagerduty channel needs 'routing_key' (or 'routing_key_file')")
        return self


def _channel_shorthand(value: Any) -> Any:
    """``name: "slack://…"`` is short for ``name: {kind: apprise, url: "slack://…"}``."""
    if isinstance(value, str):
        return {"kind": "apprise", "url": value}
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "apprise", **value}
    return value


_ChannelKinds = Annotated[AppriseChannel | SlackChannel | WebhookChannel | PagerDutyChannel, Field(discriminator="kind")]

ChannelConfig = Annotated[
    AppriseChannel | SlackChannel | WebhookChannel | PagerDutyChannel,
    Field(discriminator="kind"),
    # the JSON Schema ('upkeeper config schema', for editors) takes the shorthand too: an apprise URL as a string
    BeforeValidator(_channel_shorthand, json_schema_input_type=str | _ChannelKinds),
]


class _Match(StrictModel):
    """Which events a rule applies to.  Every given criterion must match; lists match any member."""

    events: list[Topic] | None = Field(
        None, description="topics: run, finding, missed, backup.size, backup.success_rate, window, emergency, planned. "
                "Source: upkeeper (not set by default)"
    )
    severity: list[EventSeverity] | None = Field(None, description="exact severities (info, warning, error, critical). "
            "Source: upkeeper (not set by default)")
    min_severity: EventSeverity | None = Field(None, description="this severity or worse. "
            "Source: upkeeper (not set by default)")
    jobs: list[str] | None = Field(None, description="job names; shell-style patterns like 'db-*' work. "
            "Source: upkeeper (not set by default)")
    categories: list[str] | None = Field(
        None, description="job categories: maintenance, backup, monitoring, security, critical. "
                "Source: upkeeper (not set by default)"
    )
    tags: list[str] | None = Field(None, description="a job with any of these tags. "
            "Source: upkeeper (not set by default)")


class Route(_Match):
    """Send matching events to channels.  Every matching route applies (the channels add up)."""

    channels: list[Name] = Field(..., min_length=1, description="channel names (from 'channels'). "
            "Source: none (required)")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")


class EscalationLevel(StrictModel):
    """One escalation level: who is told, and when."""

    name: str | None = Field(None, description="e.g. 'on-call', 'team lead'. "
            "Source: upkeeper (not set by default)")
    channels: list[Name] = Field(default_factory=list, description="who is told when this level is reached. "
            "Source: upkeeper (not set by default)")
    after: Duration | None = Field(None, description="reached when the problem is unresolved this long. "
            "Source: upkeeper (not set by default)")
    after_failures: int | None = Field(
        None, ge=1, description="reached after this many consecutive failures (whichever of the two comes first). "
                "Source: upkeeper (not set by default)"
    )


DEFAULT_LEVEL_NAMES = ("automatic retry or fix", "on-call", "team lead", "management")


class Escalation(_Match):
    """Escalation policy for problems (failed runs, missed runs, findings) that match it.

    Level 1 is reached when the problem appears (the job's own retries are the automatic fix);
    each later level when its ``after`` or ``after_failures`` is reached.  Resolution stops it.
    Source: the maintenance procedures' four levels (automatic, on-call, team lead, management).
    """

    min_severity: EventSeverity | None = Field("error", description="escalate problems this severe or worse. "
            "Source: upkeeper default")
    levels: list[EscalationLevel] = Field(..., min_length=1, max_length=10,
        description="escalation levels, in order (1 to 10). Source: none (required)")

    @model_validator(mode="after")
    def _check_levels(self) -> Escalation:
        last = timedelta(0)
        for i, lv in enumerate(self.levels):
            if i == 0:
                continue
            if lv.after is None and lv.after_failures is None:
                raise ValueError(f"level {i + 1} needs 'after' (a duration) or 'after_failures'")
            if lv.after is not None:
                if lv.after < last:
                    raise ValueError(f"level {i + 1}: 'after' must not be shorter than an earlier level's")
                last = lv.after
        return self

    def level_name(self, level: int) -> str:
        lv = self.levels[level - 1]
        if lv.name:
            return lv.name
        return DEFAULT_LEVEL_NAMES[level - 1] if level <= len(DEFAULT_LEVEL_NAMES) else f"level {level}"


class BackupAlerts(StrictModel):
    """Alerts computed from the run history of backup-category jobs."""

    size_change_pct: float = Field(
        20.0, gt=0, description="alert when a backup's size differs from the previous one's by more than this "
        "percentage. Source: the maintenance procedures"
    )
    size_metrics: list[str] = Field(
        default_factory=lambda: ["size_bytes", "backup_bytes", "bytes", "total_bytes"],
        description="metric names a backup run's size is read from (the first one present; else the sum of "
        "'size' over its artifacts). Source: upkeeper default",
    )
    success_rate_pct: float = Field(
        99.9, gt=0, le=100, description="alert when fewer backups than this percentage succeeded over "
        "success_rate_window. Source: the maintenance procedures",
    )
    success_rate_window: Duration = Field(default=timedelta(days=30), description="window of the success rate; "
            "history_retention -> runs must keep runs at least this long (config check error otherwise). "
            "Source: upkeeper default")


class Delivery(StrictModel):
    """How failed deliveries are retried (never blocking a run)."""

    retry_delay: Duration = Field(default=timedelta(minutes=1), description="first retry after this; doubles. "
            "Source: upkeeper default")
    retry_max_delay: Duration = Field(default=timedelta(hours=1), description="longest wait between retries. "
            "Source: upkeeper default")
    give_up_after: Duration = Field(default=timedelta(hours=24), description="stop retrying a delivery this old. "
            "Source: upkeeper default")


class NotificationsConfig(StrictModel):
    """Where notifications go and when."""

    channels: dict[Name, ChannelConfig] = Field(
        default_factory=dict,
        description="named channels: an apprise URL, or kind slack / webhook / pagerduty. "
                "Source: upkeeper (not set by default)",
    )
    routes: list[Route] | None = Field(
        None,
        description="rules sending events to channels (default: every non-PagerDuty channel gets every event, "
        "PagerDuty channels get problems of severity error or critical; channels an escalation level 2+ names "
        "are left to that level). Source: upkeeper (not set by default)",
    )
    stakeholders: list[Name] | None = Field(
        None, description="channels for announcements: window notices, emergency and planned runs "
        "(default: every non-PagerDuty channel not reserved for escalation). "
        "Source: upkeeper (not set by default)",
    )
    escalation: Escalation | None = Field(None, description="escalation levels for unresolved problems. "
            "Source: upkeeper (not set by default)")
    repeat_interval: Duration = Field(
        default=timedelta(hours=4), description="re-notify an unresolved problem this often (repeats in between "
        "are counted and summarized). Source: Alertmanager repeat_interval",
    )
    missed_runs: bool = Field(True, description="alert when no run of a job started by the occurrence due after "
                                                "its last run + grace (a dead-man's switch). Source: upkeeper default")
    missed_grace: Duration = Field(
        default=timedelta(hours=1), description="default grace of the missed-run alarm (a job may set its own). "
        "Source: healthchecks.io default grace",
    )
    backup: BackupAlerts = Field(default_factory=BackupAlerts,
        description="alerts from the history of backup jobs (see 'notifications -> backup'). Source: see its own options")
    delivery: Delivery = Field(default_factory=Delivery,
        description="retries of failed deliveries (see 'notifications -> delivery'). Source: see its own options")
    dedup_prefix: str = Field("upkeeper", description="prefix of PagerDuty dedup keys: PREFIX:JOB:CHECK. "
            "Source: upkeeper default")
    check_every: Duration = Field(
        default=timedelta(seconds=30), description="how often the daemon checks escalations, missed runs, window "
        "notices and delivery retries. Source: upkeeper default",
    )

    @field_validator("dedup_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or ":" in v:
            raise ValueError("dedup_prefix must be non-empty and contain no ':'")
        return v


def escalation_only(cfg: NotificationsConfig) -> set[str]:
    """Channels named by escalation levels 2 and up: told when a problem escalates, not before."""
    if cfg.escalation is None:
        return set()
    return {c for lv in cfg.escalation.levels[1:] for c in lv.channels}


def default_routes(cfg: NotificationsConfig) -> list[Route]:
    """The procedures' defaults: every channel gets every event, PagerDuty only error/critical problems.

    Channels an escalation level (2 and up) names are left to that level.
    """
    reserved = escalation_only(cfg)
    channels = {n: c for n, c in cfg.channels.items() if n not in reserved}
    plain = [n for n, c in channels.items() if c.kind != "pagerduty"]
    paging = [n for n, c in channels.items() if c.kind == "pagerduty"]
    routes = []
    if plain:
        routes.append(Route(channels=plain, description="all outcomes"))
    if paging:
        routes.append(Route(channels=paging, min_severity="error", description="critical failures"))
    return routes


def stakeholder_channels(cfg: NotificationsConfig) -> list[str]:
    if cfg.stakeholders is not None:
        return list(cfg.stakeholders)
    reserved = escalation_only(cfg)
    return [n for n, c in cfg.channels.items() if c.kind != "pagerduty" and n not in reserved]


def check_references(config: Config, lines: LineMap) -> list[ConfigProblem]:
    """Unknown channel or window names, as located problems."""
    problems: list[ConfigProblem] = []
    n = config.notifications
    known = list(n.channels)

    def check(path: tuple[str | int, ...], names: list[str] | None) -> None:
        for i, name in enumerate(names or []):
            if name not in n.channels:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"Try: {close[0]!r}" if close else (
                    f"Try: one of the channels ({', '.join(known)})" if known
                    else "Try: define it under 'notifications -> channels'")
                problems.append(lines.problem((*path, i), f"unknown channel {name!r}", hint))

    for i, route in enumerate(n.routes or []):
        check(("notifications", "routes", i, "channels"), route.channels)
    check(("notifications", "stakeholders"), n.stakeholders)
    if n.escalation is not None:
        for i, lv in enumerate(n.escalation.levels):
            check(("notifications", "escalation", "levels", i, "channels"), lv.channels)
    for wname, w in config.windows.items():
        check(("windows", wname, "notify"), w.notify)
    windows = list(config.windows)
    for jname, jc in config.jobs.items():
        if jc.window is not None and jc.window not in config.windows:
            close = difflib.get_close_matches(jc.window, windows, n=1)
            hint = f"Try: {close[0]!r}" if close else (
                f"Try: one of the windows ({', '.join(windows)})" if windows
                else "Try: define it under 'windows'")
            problems.append(lines.problem(("jobs", jname, "window"), f"unknown maintenance window {jc.window!r}",
                                          hint))
    return problems
