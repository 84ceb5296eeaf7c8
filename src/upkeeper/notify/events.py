"""Events, the human text of a message, and the JSON payload webhooks receive.

The payload's schema is :class:`Payload` (``upkeeper notify schema`` prints it
as JSON Schema; docs/notifications.md shows an example).  Its ``version`` is
bumped only for incompatible changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from upkeeper.config.notify import SEVERITY_RANK
from upkeeper.fmt import printable, printable_lines

PAYLOAD_VERSION = 1
MAX_FINDINGS = 3
#: a message quotes what a run produced (a summary with a command's stderr, a finding quoting a log line) at
#: most this long per field or line: a huge one made a request that endpoints reject (PagerDuty: 512 KB), as
#: permanent, so the alarm was lost.  The whole text is in the run: ``upkeeper show RUN_ID``.
MAX_TITLE = 300
MAX_FIELD = 1000
MAX_TEXT = 8000


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def clip_lines(text: str, line_limit: int = MAX_FIELD, limit: int = MAX_TEXT) -> str:
    """Each line clipped to ``line_limit``; then lines past ``limit`` characters in all left out (the last line,
    the command to see more, kept)."""
    lines = [clip(line, line_limit) for line in text.split("\n")]
    if sum(len(line) + 1 for line in lines) <= limit:
        return "\n".join(lines)
    last, kept, size = lines[-1], [], len(lines[-1]) + 1
    for line in lines[:-1]:
        if size + len(line) + 1 > limit - 40:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join([*kept, f"… ({len(lines) - 1 - len(kept)} more lines)", last])

State = Literal["problem", "repeat", "changed", "resolved", "notice"]


@dataclass
class Event:
    """Something worth telling people.  ``(job, check)`` identifies a condition; ``state`` what happened."""

    topic: str
    state: str
    severity: str
    title: str
    text: str = ""
    ts: datetime | None = None
    job: str | None = None
    check: str | None = None
    task: str | None = None
    target: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    run_id: int | None = None
    status: str | None = None
    summary: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    since: datetime | None = None
    count: int = 0
    repeats: int = 0
    level: int | None = None
    level_name: str | None = None
    dedup_key: str | None = None
    command: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    #: channels this event goes to besides the routes (escalation levels, resolutions)
    extra_channels: tuple[str, ...] = ()
    #: channels it goes to instead of the routes (announcements, escalation steps)
    only_channels: tuple[str, ...] | None = None

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)

    @property
    def is_problem(self) -> bool:
        return self.state in ("problem", "repeat", "changed")

    def bound(self) -> None:
        """Clip what the event quotes (see :data:`MAX_FIELD`)."""
        self.title = clip(self.title, MAX_TITLE)
        self.summary = clip(self.summary, MAX_FIELD)
        self.text = clip_lines(self.text)
        self.findings = [{k: clip(v, MAX_FIELD) if isinstance(v, str) else v for k, v in f.items()}
                         for f in self.findings]

    def to_payload(self) -> dict[str, Any]:
        return EventPayload(
            id=self.id, topic=self.topic, state=self.state, severity=self.severity,
            title=self.title, text=self.text, ts=self.ts, job=self.job, check=self.check, task=self.task,
            target=self.target, category=self.category, tags=list(self.tags), run_id=self.run_id,
            status=self.status, summary=self.summary, findings=[FindingPayload(**f) for f in self.findings],
            since=self.since, count=self.count, repeats=self.repeats, level=self.level, level_name=self.level_name,
            dedup_key=self.dedup_key, command=self.command, details=self.details,
        ).model_dump(mode="json")


# -- payload schema -------------------------------------------------------------------------


class FindingPayload(BaseModel):
    # built when a notification is first sent, not by every command that imports the engine (~5 ms)
    model_config = ConfigDict(defer_build=True)

    check: str
    severity: Literal["info", "warning", "critical"]
    subject: str = ""
    message: str = ""
    remediation: str = ""


class EventPayload(BaseModel):
    """One event.  ``(job, check)`` names the condition; ``dedup_key`` is stable for it."""

    model_config = ConfigDict(defer_build=True)

    id: int | None = Field(None, description="event id in upkeeper's history ('upkeeper notify log')")
    topic: Literal["run", "finding", "missed", "backup.size", "backup.success_rate", "escalation", "window",
                   "emergency", "planned", "test"]
    state: State = Field(description="problem (new), repeat (still there), changed (severity changed), "
                                     "resolved, or notice (an announcement)")
    severity: Literal["info", "warning", "error", "critical"]
    title: str
    text: str = Field("", description="the human message body")
    ts: datetime | None = Field(None, description="when it happened (UTC)")
    job: str | None = None
    check: str | None = Field(None, description="'run', 'missed', 'backup.size', 'backup.success_rate' or a "
                                                "finding's check id")
    task: str | None = None
    target: str | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    run_id: int | None = None
    status: str | None = Field(None, description="the run's status: ok, warn, fail, error, interrupted")
    summary: str = ""
    findings: list[FindingPayload] = Field(default_factory=list, description=f"top findings (at most {MAX_FINDINGS})")
    since: datetime | None = Field(None, description="when the problem started")
    count: int = Field(0, description="consecutive occurrences of the problem")
    repeats: int = Field(0, description="occurrences since the previous notification (summarized)")
    level: int | None = Field(None, description="escalation level (1–4 by default)")
    level_name: str | None = None
    dedup_key: str | None = Field(None, description="stable per (job, check): PREFIX:JOB:CHECK")
    command: str | None = Field(None, description="a command that shows more")
    details: dict[str, Any] = Field(default_factory=dict)


class Payload(BaseModel):
    """What a ``webhook`` channel POSTs (Content-Type: application/json)."""

    model_config = ConfigDict(defer_build=True)

    version: Literal[1] = 1
    source: Literal["upkeeper"] = "upkeeper"
    node: str = Field(description="the node that sent it")
    sent_at: datetime
    title: str = Field(description="one line summarizing every event in this message")
    text: str = Field(description="the whole message as human text")
    severity: Literal["info", "warning", "error", "critical"] = Field(description="the worst event's severity")
    events: list[EventPayload] = Field(min_length=1)


# -- human text ----------------------------------------------------------------------------

ICON = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_ICON = "✅"
#: a problem closed without recovering (its job left the config)
CLOSED_ICON = "⚪"


def headline(events: list[Event]) -> str:
    """One line for a message carrying ``events`` (the most important first)."""
    top = events[0]
    more = f" (+{len(events) - 1} more)" if len(events) > 1 else ""
    return printable(f"{top.title}{more}")  # one line, whatever it quotes (a mail's Subject)


def order(events: list[Event]) -> list[Event]:
    """Problems before resolutions before notices; worse severity first; stable otherwise."""
    weight = {"problem": 0, "changed": 0, "repeat": 1, "resolved": 2, "notice": 3}
    return sorted(events, key=lambda e: (weight.get(e.state, 4), -e.rank))


def render_text(events: list[Event]) -> str:
    """The human message: its control characters but newlines and tabs escaped (``\\x1B``), as the CLI shows
    them (finding messages quote log lines; a mail read in a terminal is a terminal).  The events' fields
    (``summary``, ``findings``) carry the exact values."""
    blocks = []
    for e in events:
        icon = (CLOSED_ICON if e.details.get("closed") else RESOLVED_ICON) if e.state == "resolved" else \
            ICON.get(e.severity, "")
        lines = [f"{icon} {e.title}".strip()]
        if e.text:
            lines.append(e.text)
        blocks.append("\n".join(lines))
    return printable_lines("\n\n".join(blocks))


def worst(events: list[Event]) -> str:
    problems = [e for e in events if e.state != "resolved"] or events
    return max(problems, key=lambda e: e.rank).severity


def build_payload(events: list[Event], node: str, sent_at: datetime) -> dict[str, Any]:
    events = order(events)
    return Payload(node=node, sent_at=sent_at, title=headline(events), text=render_text(events),
                   severity=worst(events),
                   events=[EventPayload.model_validate(e.to_payload()) for e in events]).model_dump(mode="json")


def payload_schema() -> dict[str, Any]:
    return Payload.model_json_schema()
