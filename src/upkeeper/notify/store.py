"""Notification state in the history database: per (job, check) state, events, deliveries.

* ``notify_state`` — one row per (job, check): ok or problem, since when, how
  many consecutive occurrences, the escalation level reached, when it was last
  notified, which channels were told (so a resolution reaches all of them).
* ``notify_events`` — every notification-worthy event and every escalation
  step, with the text that was sent.  ``once_key`` makes announcements (window
  notices) idempotent across daemons.
* ``notify_deliveries`` — one row per message to one channel: sending (leased to
  the process sending it), sent, failed (with the error and the next attempt),
  dead (gave up), or superseded (not sent: what it reported is over).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from upkeeper.core import tables
from upkeeper.core.history import History, dialect_insert
from upkeeper.core.models import Base, JSONType, RunRow, UTCDateTime
from upkeeper.redact import redact, redact_obj

#: a delivery leased to the process sending it (at creation, or claimed for a retry) until ``next_attempt_at``
SENDING = "sending"
#: what rows written before ``sending`` existed called a delivery leased to its creator: never one waiting for a
#: backoff (a failed attempt makes it ``failed``), so leased too while its ``next_attempt_at`` is ahead
LEGACY_PENDING = "pending"
#: not sent yet: leased (``sending``, ``pending``) or waiting for the next attempt (``failed``)
UNSENT = (SENDING, LEGACY_PENDING, "failed")
LEASED = (SENDING, LEGACY_PENDING)


class NotifyStateRow(Base):
    __tablename__ = "notify_state"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    check: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(32), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # ok | problem
    severity: Mapped[str] = mapped_column(String(16), nullable=False, default="info")
    since: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    level: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_id: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(Text, default="")
    channels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: the node whose observation last updated it (``config.node``): only that node closes the problem when its
    #: job leaves the config (:meth:`NotifyStore.close_removed`)
    node: Mapped[str | None] = mapped_column(String(255))


class NotifyEventRow(Base):
    __tablename__ = "notify_events"
    __table_args__ = (
        UniqueConstraint("once_key", name="uq_notify_events_once"),
        Index("ix_notify_events_ts", "ts"),
        Index("ix_notify_events_job_check", "job", "check"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    topic: Mapped[str] = mapped_column(String(32), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    job: Mapped[str | None] = mapped_column(String(100))
    check: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[int | None] = mapped_column(Integer)
    level: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    once_key: Mapped[str | None] = mapped_column(String(255))


class NotifyDeliveryRow(Base):
    __tablename__ = "notify_deliveries"
    __table_args__ = (Index("ix_notify_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    channel: Mapped[str] = mapped_column(String(100), nullable=False)
    #: sending (leased until ``next_attempt_at``) | sent | failed (next attempt at ``next_attempt_at``) | dead |
    #: superseded; ``pending`` (leased) in rows written before ``sending``
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    event_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


@dataclass
class Busy:
    """A delivery (to ``channel``) another process holds leased — it is sending it now — until ``until``."""

    channel: str
    until: datetime


@dataclass
class Change:
    """What a state update decided: notify a new problem, a repeat, a severity change, a resolution."""

    kind: str  # problem | repeat | changed | resolved | quiet (a repeat not notified yet)
    job: str
    check: str
    topic: str
    severity: str
    since: datetime
    count: int
    repeats: int = 0
    level: int = 0
    channels: list[str] = field(default_factory=list)
    previous_severity: str | None = None


class NotifyStore:
    """Notification tables, on the history database (SQLite or PostgreSQL)."""

    def __init__(self, history: History, node: str | None = None) -> None:
        self.history = history
        #: recorded on every (job, check) state this store updates
        self.node = node
        self._shared = False  # another node was seen in the history (see _single_node)

    # -- (job, check) state ------------------------------------------------------------------

    def _row(self, s: Session, job: str, check: str, topic: str, now: datetime) -> NotifyStateRow:
        """The (job, check) row, locked; created (state ok) when missing."""
        q = select(NotifyStateRow).where(NotifyStateRow.job == job, NotifyStateRow.check == check).with_for_update()
        row = s.execute(q).scalar_one_or_none()
        if row is None:
            self._create(s, [job], check, topic, now)
            row = s.execute(q).scalar_one()
        return row

    def _create(self, s: Session, jobs: Sequence[str], check: str, topic: str, now: datetime) -> None:
        """Rows (state ok, since ``now``) for these jobs' ``check``, unless another daemon has just created them
        (two daemons see no row at once: the second must not fail on the key)."""
        t = NotifyStateRow.__table__
        s.execute(dialect_insert(self.history.dialect)(t).values([
            {"job": job, "check": check, "topic": topic, "state": "ok", "severity": "info", "since": now, "count": 0,
             "suppressed": 0, "level": 0, "channels": [], "summary": "", "updated_at": now, "node": self.node}
            for job in jobs
        ]).on_conflict_do_nothing(index_elements=["job", "check"]))

    def update(
        self, job: str, check: str, topic: str, *, problem: bool, severity: str, now: datetime,
        summary: str = "", run_id: int | None = None, repeat_interval: timedelta = timedelta(hours=4),
        count: bool = True,
    ) -> Change | None:
        """Apply one observation of (job, check); return what changed (None: nothing, still ok).

        ``count=False`` for conditions polled on a timer (missed runs): polling is not a repeat.
        """
        with self.history.session() as s:
            row = self._row(s, job, check, topic, now)
            row.updated_at = now
            if self.node is not None:
                row.node = self.node
            if run_id is not None:
                row.last_run_id = run_id
            if problem:
                row.summary = redact(summary)[:2000]
                if row.state != "problem":
                    row.state, row.severity, row.since, row.count = "problem", severity, now, 1
                    row.suppressed, row.level, row.channels, row.last_notified_at = 0, 0, [], now
                    return Change("problem", job, check, topic, severity, now, 1)
                if count:
                    row.count += 1
                if severity != row.severity:
                    prev, row.severity = row.severity, severity
                    repeats, row.suppressed, row.last_notified_at = row.suppressed, 0, now
                    return Change("changed", job, check, topic, severity, row.since, row.count, repeats,
                                  row.level, list(row.channels), previous_severity=prev)
                if row.last_notified_at is None or now - row.last_notified_at >= repeat_interval:
                    repeats = row.suppressed + 1
                    row.suppressed, row.last_notified_at = 0, now
                    return Change("repeat", job, check, topic, severity, row.since, row.count, repeats, row.level,
                                  list(row.channels))
                if count:
                    row.suppressed += 1
                return Change("quiet", job, check, topic, severity, row.since, row.count, row.suppressed, row.level,
                              list(row.channels))
            if row.state == "problem":
                change = Change("resolved", job, check, topic, row.severity, row.since, row.count, row.suppressed,
                                row.level, list(row.channels))
                row.state, row.count, row.suppressed, row.level, row.channels = "ok", 0, 0, 0, []
                row.since, row.last_notified_at, row.summary = now, now, redact(summary)[:2000]
                return change
            return None

    def close_removed(self, jobs: Sequence[str], now: datetime) -> list[Change]:
        """Close the open problems of jobs missing from this node's config (any job not in ``jobs``) that this
        node recorded (``node``); a kind ``resolved`` change each.  A problem another node recorded is that
        node's: nodes sharing a history may run different configs.  A problem recorded before nodes were (node
        NULL: the ``notify_state_node`` migration found no run telling it) is closed too when no other node ever
        wrote to the history (:meth:`_single_node`): no other node's config may still have its job."""
        if self.node is None:
            return []
        q = (select(NotifyStateRow).where(NotifyStateRow.state == "problem",
                                          or_(NotifyStateRow.node == self.node, NotifyStateRow.node.is_(None)))
             .order_by(NotifyStateRow.job, NotifyStateRow.check))
        if jobs:
            q = q.where(NotifyStateRow.job.not_in(list(jobs)))
        out = []
        with self.history.session() as s:
            rows = list(s.scalars(q.with_for_update()))
            if any(row.node is None for row in rows) and not self._single_node(s):
                rows = [row for row in rows if row.node is not None]
            for row in rows:
                out.append(Change("resolved", row.job, row.check, row.topic, row.severity, row.since, row.count,
                                  row.suppressed, row.level, list(row.channels)))
                row.state, row.count, row.suppressed, row.level, row.channels = "ok", 0, 0, 0, []
                row.since, row.last_notified_at, row.updated_at = now, now, now
                row.summary = "job removed from the config"
                row.node = self.node
        return out

    def _single_node(self, s: Session) -> bool:
        """Whether no node but this one appears in the history: in a run, a daemon, a lock, the audit log or a
        notification state.  Once another node is seen it is remembered (a history stays shared)."""
        if self._shared:
            return False
        for table in (tables.runs, tables.daemons, tables.locks, tables.audit, NotifyStateRow.__table__):
            col = table.c.node
            if s.execute(select(col).where(col.is_not(None), col != self.node).limit(1)).first() is not None:
                self._shared = True
                return False
        return True

    def add_channels(self, job: str, check: str, channels: Sequence[str]) -> None:
        with self.history.session() as s:
            row = s.get(NotifyStateRow, (job, check), with_for_update=True)  # two daemons adding at once: both kept
            if row is not None:
                row.channels = sorted(set(row.channels or []) | set(channels))

    def set_level(self, job: str, check: str, level: int, expect: int) -> bool:
        """Move a problem to escalation ``level`` if it is still at ``expect`` (compare-and-set)."""
        with self.history.session() as s:
            res = s.execute(
                update(NotifyStateRow)
                .where(NotifyStateRow.job == job, NotifyStateRow.check == check, NotifyStateRow.state == "problem",
                       NotifyStateRow.level == expect)
                .values(level=level)
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def get(self, job: str, check: str) -> NotifyStateRow | None:
        with self.history.session() as s:
            return s.get(NotifyStateRow, (job, check))

    def first_seen(self, jobs: Sequence[str], check: str, topic: str, now: datetime) -> dict[str, datetime]:
        """Per job, ``since`` of its (job, check) row; rows are created (state ok, since now) when missing."""
        q = select(NotifyStateRow.job, NotifyStateRow.since).where(NotifyStateRow.check == check,
                                                                   NotifyStateRow.job.in_(list(jobs)))
        with self.history.session() as s:
            out: dict[str, datetime] = {job: since for job, since in s.execute(q)}
            missing = sorted(set(jobs) - set(out))
            if missing:
                self._create(s, missing, check, topic, now)
                out.update({job: since for job, since in s.execute(q.where(NotifyStateRow.job.in_(missing)))})
        return out

    def problems(self, job: str | None = None, topic: str | None = None) -> list[NotifyStateRow]:
        q = select(NotifyStateRow).where(NotifyStateRow.state == "problem")
        if job is not None:
            q = q.where(NotifyStateRow.job == job)
        if topic is not None:
            q = q.where(NotifyStateRow.topic == topic)
        with self.history.session() as s:
            return list(s.scalars(q.order_by(NotifyStateRow.since, NotifyStateRow.job, NotifyStateRow.check)))

    # -- events --------------------------------------------------------------------------------

    def add_event(self, *, ts: datetime, topic: str, state: str, severity: str, title: str, text: str,
                  data: dict[str, Any], job: str | None = None, check: str | None = None,
                  run_id: int | None = None, level: int | None = None, once_key: str | None = None) -> int | None:
        """Record an event; None when ``once_key`` was recorded before (someone else sent it)."""
        row = NotifyEventRow(ts=ts, topic=topic, state=state, severity=severity, job=job, check=check,
                             run_id=run_id, level=level, title=redact(title), text=redact(text),
                             data=redact_obj(data), once_key=once_key)
        try:
            with self.history.session() as s:
                s.add(row)
                s.flush()
                return int(row.id)
        except IntegrityError:
            return None

    def events(self, *, limit: int = 50, job: str | None = None, topic: str | None = None) -> list[NotifyEventRow]:
        q = select(NotifyEventRow)
        if job:
            q = q.where(NotifyEventRow.job == job)
        if topic:
            q = q.where(NotifyEventRow.topic == topic)
        with self.history.session() as s:
            return list(s.scalars(q.order_by(NotifyEventRow.id.desc()).limit(limit)))

    def has_once(self, once_key: str) -> bool:
        with self.history.session() as s:
            return s.scalar(select(func.count()).where(NotifyEventRow.once_key == once_key)) != 0

    def runs_started(self, start: datetime, end: datetime, jobs: Sequence[str], triggers: Sequence[str],
                     limit: int = 2000) -> list[RunRow]:
        """Runs that started in ``[start, end)`` (of ``jobs``, or with one of ``triggers``), first started first.

        By start, not by occurrence: a run deferred to a maintenance window keeps its occurrence, weeks before
        the opening, so the runs of newest occurrence (:meth:`History.runs`) miss it on a busy history."""
        q = (select(RunRow).where(RunRow.started_at >= start, RunRow.started_at < end,
                                  or_(RunRow.job.in_(list(jobs)), RunRow.trigger.in_(list(triggers))))
             .order_by(RunRow.started_at, RunRow.id).limit(limit))
        with self.history.session() as s:
            return list(s.scalars(q))

    # -- deliveries ----------------------------------------------------------------------------

    def add_delivery(self, channel: str, event_ids: list[int], payload: dict[str, Any], now: datetime,
                     lease: timedelta) -> int:
        """A new delivery, leased to its creator (who sends it right away) until ``now + lease``; if the creator
        dies, the lease expires and whoever retries deliveries picks it up.

        A lease is held by whoever set ``next_attempt_at`` to its end (the claim): every claim moves it, and
        :meth:`mark_sent` / :meth:`mark_failed` record an attempt only while it is still the holder's.  A leased
        delivery's status is ``sending``, told apart from a ``failed`` one waiting for its next attempt: only an
        expired lease (its holder died or is stuck) may be taken over (:meth:`claim_one`)."""
        with self.history.session() as s:
            row = NotifyDeliveryRow(created_at=now, channel=channel, status=SENDING, attempts=0,
                                    next_attempt_at=now + lease, event_ids=event_ids, payload=redact_obj(payload),
                                    last_error="")
            s.add(row)
            s.flush()
            return int(row.id)

    def renew_lease(self, delivery_id: int, leased_until: datetime, now: datetime,
                    lease: timedelta, *, attempts: int = 0) -> datetime | None:
        """Keep a delivery we leased (at creation, or by a claim after ``attempts`` attempts), unless its lease
        ran out and another claim took it meanwhile.  Returns the renewed lease's end (None: no longer ours)."""
        until = now + lease
        with self.history.session() as s:
            res = s.execute(
                update(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.id == delivery_id, NotifyDeliveryRow.status.in_(UNSENT),
                       NotifyDeliveryRow.attempts == attempts, NotifyDeliveryRow.next_attempt_at == leased_until)
                .values(next_attempt_at=until)
            )
            return until if res.rowcount == 1 else None  # type: ignore[attr-defined]

    def claim_due(self, now: datetime, lease: timedelta, limit: int = 50) -> list[NotifyDeliveryRow]:
        """Deliveries whose (next) attempt is due; each is leased so another daemon skips it.  A returned row's
        ``next_attempt_at`` is its lease's end (the claim :meth:`mark_sent` / :meth:`mark_failed` check): later
        than the due instant it replaced, so no two claims of a delivery are alike."""
        until = now + lease
        with self.history.session() as s:
            rows = s.scalars(
                select(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.status.in_(UNSENT), NotifyDeliveryRow.next_attempt_at <= now)
                .order_by(NotifyDeliveryRow.next_attempt_at)
                .limit(limit)
            ).all()
            out = []
            for row in rows:
                res = s.execute(
                    update(NotifyDeliveryRow)
                    .where(NotifyDeliveryRow.id == row.id, NotifyDeliveryRow.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=until, status=SENDING)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    out.append(row)
        for row in out:  # detached now: what the claim wrote
            row.next_attempt_at, row.status = until, SENDING
        return out

    def claim_one(self, delivery_id: int, now: datetime, lease: timedelta) -> NotifyDeliveryRow | Busy | None:
        """Take one unsent delivery now, whatever its schedule (compare-and-set: one taker wins) — unless another
        process holds it leased (``sending`` until a ``next_attempt_at`` still ahead: it is sending it right now):
        :class:`Busy` then.  A ``failed`` delivery waiting for its backoff, and one whose lease expired (its
        holder died), are taken.  The returned row's ``next_attempt_at`` is the lease's end, never the one it
        replaced (the claim is told apart).  None: no such delivery, or not unsent any more."""
        until = now + lease
        with self.history.session() as s:
            row = s.get(NotifyDeliveryRow, delivery_id)
            if row is None or row.status not in UNSENT:
                return None
            if row.status in LEASED and row.next_attempt_at is not None and row.next_attempt_at > now:
                return Busy(row.channel, row.next_attempt_at)
            if row.next_attempt_at == until:  # taken from a holder who claimed it at this very instant
                until += timedelta(microseconds=1)
            res = s.execute(
                update(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.id == delivery_id, NotifyDeliveryRow.status == row.status,
                       NotifyDeliveryRow.next_attempt_at == row.next_attempt_at,
                       NotifyDeliveryRow.attempts == row.attempts)
                .values(next_attempt_at=until, status=SENDING)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]  # another process took it at this very moment
                cur = s.execute(select(NotifyDeliveryRow.status, NotifyDeliveryRow.next_attempt_at)
                                 .where(NotifyDeliveryRow.id == delivery_id)).first()
                if cur is not None and cur[0] in LEASED and cur[1] is not None and cur[1] > now:
                    return Busy(row.channel, cur[1])
                return None
        row.next_attempt_at, row.status = until, SENDING
        return row

    def _attempted(self, delivery_id: int, leased_until: datetime, values: dict[str, Any]) -> bool:
        """Record an attempt if the delivery is still claimed by whoever holds the lease ending ``leased_until``
        (compare-and-set).  False: the lease ran out and another claim took the delivery meanwhile (it may
        have sent it already): that claim's outcome is the delivery's, this attempt's is not recorded."""
        with self.history.session() as s:
            res = s.execute(
                update(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.id == delivery_id, NotifyDeliveryRow.status.in_(UNSENT),
                       NotifyDeliveryRow.next_attempt_at == leased_until)
                .values(**values, attempts=NotifyDeliveryRow.attempts + 1)
            )
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def mark_sent(self, delivery_id: int, now: datetime, *, leased_until: datetime) -> bool:
        """Record a delivery sent by the holder of the lease ending ``leased_until``; False: not its holder
        any more (see :meth:`_attempted`)."""
        return self._attempted(delivery_id, leased_until, {"status": "sent", "sent_at": now, "next_attempt_at": None})

    def mark_superseded(self, delivery_id: int, reason: str, *, leased_until: datetime) -> bool:
        """Record a delivery left unsent because what it reported is over (a trigger whose problem resolved);
        False: not the lease's holder any more (see :meth:`_attempted`)."""
        with self.history.session() as s:
            res = s.execute(
                update(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.id == delivery_id, NotifyDeliveryRow.status.in_(UNSENT),
                       NotifyDeliveryRow.next_attempt_at == leased_until)
                .values(status="superseded", last_error=redact(reason)[:2000], next_attempt_at=None)
            )
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def trim(self, delivery_id: int, payload: dict[str, Any], dropped: list[int], reason: str, now: datetime, *,
             leased_until: datetime) -> bool:
        """Leave events whose state is over out of an unsent delivery (by the holder of the lease ending
        ``leased_until``): it will send ``payload`` (the others), and the events ``dropped`` get a delivery of
        their own, ``superseded`` with ``reason`` (what ``notify log`` shows for them).  False: not its holder
        any more."""
        with self.history.session() as s:
            row = s.get(NotifyDeliveryRow, delivery_id)
            if row is None:
                return False
            keep = [i for i in row.event_ids or [] if i not in set(dropped)]
            res = s.execute(
                update(NotifyDeliveryRow)
                .where(NotifyDeliveryRow.id == delivery_id, NotifyDeliveryRow.status.in_(UNSENT),
                       NotifyDeliveryRow.next_attempt_at == leased_until)
                .values(payload=redact_obj(payload), event_ids=keep)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
            s.add(NotifyDeliveryRow(created_at=now, channel=row.channel, status="superseded", attempts=0,
                                    next_attempt_at=None, event_ids=list(dropped), payload={},
                                    last_error=redact(reason)[:2000]))
            return True

    def mark_failed(self, delivery_id: int, error: str, next_attempt_at: datetime | None, *,
                    leased_until: datetime) -> bool:
        """Record a failed attempt (``next_attempt_at`` None: given up, ``dead``) by the holder of the lease
        ending ``leased_until``; False: not its holder any more (see :meth:`_attempted`)."""
        return self._attempted(delivery_id, leased_until, {
            "status": "failed" if next_attempt_at is not None else "dead", "last_error": redact(error)[:2000],
            "next_attempt_at": next_attempt_at})

    def deliveries(self, *, limit: int = 50, statuses: Sequence[str] | None = None,
                   since: datetime | None = None) -> list[NotifyDeliveryRow]:
        q = select(NotifyDeliveryRow)
        if statuses:
            q = q.where(NotifyDeliveryRow.status.in_(list(statuses)))
        if since is not None:
            q = q.where(NotifyDeliveryRow.created_at >= since)
        with self.history.session() as s:
            return list(s.scalars(q.order_by(NotifyDeliveryRow.id.desc()).limit(limit)))

    def get_delivery(self, delivery_id: int) -> NotifyDeliveryRow | None:
        with self.history.session() as s:
            return s.get(NotifyDeliveryRow, delivery_id)
