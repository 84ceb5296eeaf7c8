"""The notification engine: state changes → events → routes → deliveries, escalation, notices.

It is a :class:`~upkeeper.core.runner.RunListener` (told about every finished
run) and has a :meth:`NotificationEngine.tick` the daemon calls periodically
(escalation timers, missed runs, window notices, delivery retries).

* One notification per state change of (job, check); repeats are counted and
  re-notified every ``repeat_interval`` with the count.
* Every message is a delivery row; a failed delivery is retried with backoff
  and never breaks a run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper.config.notify import SEVERITY_RANK, Escalation
from upkeeper.core.history import History
from upkeeper.core.jobs import Job, Setup
from upkeeper.core.runner import FinishedRun
from upkeeper.core.task import Finding
from upkeeper.fmt import ago, human_bytes, human_duration, local_time
from upkeeper.notify import checks
from upkeeper.notify.calendar import Period
from upkeeper.notify.events import MAX_FINDINGS, Event, build_payload
from upkeeper.notify.policy import Calendar, Window, describe
from upkeeper.notify.routing import Router, matches
from upkeeper.notify.store import Busy, Change, NotifyStateRow, NotifyStore
from upkeeper.notify.transports import Transport, TransportError, build_transport
from upkeeper.redact import redact, redact_obj

log = logging.getLogger(__name__)

RUN_CHECK = "run"
MISSED_CHECK = "missed"
SIZE_CHECK = "backup.size"
RATE_CHECK = "backup.success_rate"
RESERVED = (RUN_CHECK, MISSED_CHECK, SIZE_CHECK, RATE_CHECK)
DELIVERY_LEASE = timedelta(minutes=2)
END_NOTICE_MAX_AGE = timedelta(days=1)

RUN_SEVERITY = {"fail": "critical", "error": "error", "interrupted": "error"}
RUN_VERB = {"fail": "failed", "error": "errored", "interrupted": "was interrupted"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _event_of(data: dict[str, Any]) -> Event:
    """An event back from its payload form (:meth:`Event.to_payload`)."""
    fields = {k: v for k, v in data.items() if k in Event.__dataclass_fields__}
    fields["tags"] = tuple(fields.get("tags") or ())
    for key in ("ts", "since"):
        if fields.get(key):
            fields[key] = datetime.fromisoformat(fields[key])
    return Event(**fields)


@dataclass
class DeliveryResult:
    delivery_id: int
    channel: str
    ok: bool
    detail: str
    #: not sent: the state it reported is over (see :meth:`NotificationEngine._superseded`), or another process
    #: is sending it (:meth:`NotificationEngine.deliver`)
    skipped: bool = False


class NotificationEngine:
    def __init__(self, setup: Setup, history: History, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.setup = setup
        self.config = setup.config
        self.cfg = setup.config.notifications
        self.history = history
        self.node = setup.config.node
        self.store = NotifyStore(history, self.node)
        self.clock = clock
        self.router = Router(self.cfg)
        self.calendar = Calendar(setup.config)
        self.transports: dict[str, Transport] = {
            name: build_transport(name, ch, self.node) for name, ch in self.cfg.channels.items()
        }
        self.last_results: list[DeliveryResult] = []
        self._local = threading.local()  # escalation steps collected while one thread builds its events
        #: (delivery id, channel, payload, attempts so far, created at, end of the lease we hold)
        self._outbox: queue.Queue[tuple[int, str, dict[str, Any], int, datetime, datetime] | None] | None = None
        self._sender: threading.Thread | None = None

    # -- background sending (the daemon) ------------------------------------------------------

    def start_background_sending(self) -> None:
        """First attempts go out from one sender thread instead of the thread that finished the run.

        The daemon's run slots then never wait on a slow channel (a webhook timing out holds
        a slot for its whole timeout otherwise).  Deliveries are rows in history, leased to us
        when created: if the process dies before sending, the lease expires and the retry
        path sends them.
        """
        if self._sender is not None:
            return
        if self._outbox is None:
            self._outbox = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="notify-sender")
        self._sender.start()

    def stop_background_sending(self, timeout: float = 30.0) -> bool:
        """Send what is queued (within ``timeout``), then stop.  True when the queue was emptied."""
        sender, outbox = self._sender, self._outbox
        if sender is None or outbox is None:
            return True
        outbox.put(None)
        sender.join(timeout)
        self._sender = self._outbox = None
        return not sender.is_alive()

    def _send_loop(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        while True:
            item = outbox.get()
            if item is None:
                return
            did, channel, payload, attempts, created, leased_until = item
            try:
                # queued longer than the lease: a retry may have taken it; send only if it is still ours
                now = self.clock()
                until = self.store.renew_lease(did, leased_until, now, DELIVERY_LEASE, attempts=attempts)
                if until is not None:
                    self._attempt(did, channel, payload, attempts, created, now, until)
            except Exception as exc:  # history unavailable: the lease expires and a retry sends it
                log.warning("notification %s to %s not sent: %s", did, channel, redact(str(exc)))

    @property
    def active(self) -> bool:
        return bool(self.cfg.channels)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _pending_steps(self) -> list[Event]:
        steps: list[Event] | None = getattr(self._local, "steps", None)
        if steps is None:
            steps = self._local.steps = []
        return steps

    def _take_steps(self) -> list[Event]:
        steps = self._pending_steps
        self._local.steps = []
        return steps

    def dedup_key(self, job: str | None, check: str | None) -> str | None:
        if job is None or check is None:
            return None
        return f"{self.cfg.dedup_prefix}:{job}:{check}"

    def _job(self, name: str | None) -> Job | None:
        return self.setup.jobs.get(name) if name else None

    def _fmt(self, ts: datetime | None) -> str:
        return local_time(ts, self.config.timezone, "%Y-%m-%d %H:%M %Z")

    def _base(self, job: Job, check: str, topic: str, change: Change, now: datetime, **kw: Any) -> Event:
        return Event(topic=topic, state=change.kind if change.kind != "quiet" else "repeat",
                     severity=change.severity, title="", ts=now, job=job.name, check=check, task=job.task_name,
                     target=job.target_name, category=job.category, tags=job.tags, since=change.since,
                     count=change.count, repeats=change.repeats, dedup_key=self.dedup_key(job.name, check),
                     level=change.level or None, **kw)

    # -- the listener -------------------------------------------------------------------------

    def run_finished(self, run: FinishedRun) -> None:
        if not self.active or run.status in ("skipped", "pending", "queued", "running"):
            return
        if run.stopped:
            # interrupted because upkeeper was asked to stop (systemctl stop, Ctrl-C): no failure to page anyone
            # about, nor a recovery; the job's problems stay as they were, and a backup the stop left undone is
            # reported by the missed-run alarm (checks.last_run_start does not count this run)
            log.info("run %s of %s was stopped with upkeeper: not notified", run.run_id, run.job.name)
            return
        now = run.finished_at
        job = run.job
        events: list[Event] = []
        repeat = self.cfg.repeat_interval
        failed = run.status in RUN_SEVERITY
        sev = RUN_SEVERITY.get(run.status, "info")
        change = self.store.update(job.name, RUN_CHECK, "run", problem=failed, severity=sev, now=now,
                                   summary=run.result.summary, run_id=run.run_id, repeat_interval=repeat)
        findings = [f for f in run.result.findings if f.severity.value in ("warning", "critical")]
        top = sorted(findings, key=lambda f: -f.severity.rank)[:MAX_FINDINGS]
        if change is not None:
            ev = self._run_event(job, run, change, top, now)
            if ev is not None:
                events.append(ev)
        # findings: only runs that produced results change their state
        if run.status in ("ok", "warn", "fail"):
            events += self._finding_events(job, run, findings, now)
        events += self._resolve(job, MISSED_CHECK, "missed", now, run.run_id, f"run {run.run_id}: {run.status}",
                                "ran again")
        if job.category == "backup":
            events += self._backup_events(job, run, now)
        self.dispatch(events, now)

    def _run_event(self, job: Job, run: FinishedRun, change: Change, top: list[Finding], now: datetime) -> Event | None:
        if change.kind == "quiet":
            self._escalate_by_count(job, RUN_CHECK, change, now, run)
            return None
        cmd = f"upkeeper show {run.run_id}"
        lines = []
        if run.result.summary:
            lines.append(redact(run.result.summary))
        for f in top:
            lines.append(redact(f"• {f.severity.value} {f.subject}: {f.message}".rstrip(": ")))
        facts = [f"task {job.task_name}"] + ([f"target {job.target_name}"] if job.target_name else [])
        facts.append(f"run {run.run_id} ({run.trigger}, attempt {run.attempt})")
        lines.append(" · ".join(facts))
        if change.kind == "resolved":
            down = human_duration((now - change.since).total_seconds())
            title = (f"{job.name} recovered: {run.status} after {change.count} failed run(s) "
                     f"(down {down})")
        else:
            verb = RUN_VERB.get(run.status, run.status)
            if change.kind == "problem":
                title = f"{job.name} {verb}"
            elif change.kind == "changed":
                title = f"{job.name} {verb} (was {change.previous_severity})"
            else:
                title = (f"{job.name} still failing: {change.count} failed runs since {self._fmt(change.since)}"
                         f" ({change.repeats} since the last notice)")
            if run.retry_at is not None:
                lines.append(f"Automatic retry (attempt {run.attempt + 1} of {job.retries + 1}) at "
                             f"{self._fmt(run.retry_at)}")
        lines.append(f"More: {cmd}")
        ev = self._base(job, RUN_CHECK, "run", change, now, run_id=run.run_id, status=run.status,
                        summary=redact(run.result.summary), command=cmd,
                        findings=[{"check": f.check, "severity": f.severity.value, "subject": redact(str(f.subject)),
                                   "message": redact(f.message), "remediation": redact(f.remediation)} for f in top])
        ev.title = title
        ev.text = "\n".join(lines)
        self._after_change(ev, change, job, now, run)
        return ev

    def _finding_events(self, job: Job, run: FinishedRun, findings: list[Finding], now: datetime) -> list[Event]:
        by_check: dict[str, list[Finding]] = {}
        for f in findings:
            by_check.setdefault(f.check, []).append(f)
        events = []
        for check, fs in by_check.items():
            if check in RESERVED:
                continue
            fs.sort(key=lambda f: -f.severity.rank)
            sev = fs[0].severity.value
            summary = "; ".join(f"{f.subject}: {f.message}" for f in fs[:MAX_FINDINGS])
            change = self.store.update(job.name, check, "finding", problem=True, severity=sev, now=now,
                                       summary=summary, run_id=run.run_id, repeat_interval=self.cfg.repeat_interval)
            if change is None:
                continue
            if change.kind == "quiet":
                self._escalate_by_count(job, check, change, now, run)
                continue
            lines = [f"• {f.subject}: {f.message}" + (f" — {f.remediation}" if f.remediation else "")
                     for f in fs[:MAX_FINDINGS]]
            if len(fs) > MAX_FINDINGS:
                lines.append(f"… and {len(fs) - MAX_FINDINGS} more")
            lines.append(f"More: upkeeper show {run.run_id}")
            where = f"{job.name}" + (f" ({job.target_name})" if job.target_name else "")
            title = {"problem": f"{check}: {sev} on {where}",
                     "changed": f"{check}: now {sev} on {where} (was {change.previous_severity})",
                     "repeat": f"{check}: still {sev} on {where} ({change.count} runs)"}[change.kind]
            ev = self._base(job, check, "finding", change, now, run_id=run.run_id, status=run.status,
                            summary=redact(summary), command=f"upkeeper show {run.run_id}",
                            findings=[{"check": f.check, "severity": f.severity.value,
                                       "subject": redact(str(f.subject)), "message": redact(f.message),
                                       "remediation": redact(f.remediation)} for f in fs[:MAX_FINDINGS]])
            ev.title, ev.text = title, redact("\n".join(lines))
            self._after_change(ev, change, job, now, run)
            events.append(ev)
        for st in self.store.problems(job=job.name, topic="finding"):
            if st.check not in by_check:
                events += self._resolve(job, st.check, "finding", now, run.run_id,
                                        f"no {st.check} finding in run {run.run_id}",
                                        f"cleared on {job.name}")
        return events

    def _resolve(self, job: Job, check: str, topic: str, now: datetime, run_id: int | None, text: str,
                 what: str) -> list[Event]:
        change = self.store.update(job.name, check, topic, problem=False, severity="info", now=now, run_id=run_id)
        if change is None or change.kind != "resolved":
            return []
        ev = self._base(job, check, topic, change, now, run_id=run_id,
                        command=f"upkeeper show {run_id}" if run_id else None)
        lasted = human_duration((now - change.since).total_seconds())
        if topic == "missed":
            ev.title = f"{job.name} {what} (overdue since {self._fmt(change.since)})"
        else:
            ev.title = f"{check}: {what} (after {lasted})"
        ev.text = text
        self._after_change(ev, change, job, now, None)
        return [ev]

    # -- backups ----------------------------------------------------------------------------

    def _backup_events(self, job: Job, run: FinishedRun, now: datetime) -> list[Event]:
        events: list[Event] = []
        bcfg = self.cfg.backup
        if run.status in checks.SUCCESS:
            sc = checks.size_change(self.history, job.name, run.run_id, bcfg)
            if sc is not None:
                problem = abs(sc.pct) > bcfg.size_change_pct
                text = (f"{human_bytes(sc.previous)} (run {sc.previous_run}) → {human_bytes(sc.size)} "
                        f"(run {run.run_id}): {sc.pct:+.1f}%, threshold ±{bcfg.size_change_pct:g}%")
                change = self.store.update(job.name, SIZE_CHECK, "backup.size", problem=problem, severity="warning",
                                           now=now, summary=text, run_id=run.run_id,
                                           repeat_interval=self.cfg.repeat_interval)
                if change is not None and change.kind != "quiet":
                    ev = self._base(job, SIZE_CHECK, "backup.size", change, now, run_id=run.run_id,
                                    status=run.status, command=f"upkeeper show {run.run_id}",
                                    details={"size": sc.size, "previous": sc.previous, "change_pct": round(sc.pct, 2)})
                    ev.title = (f"{job.name} backup size back within ±{bcfg.size_change_pct:g}%"
                                if change.kind == "resolved"
                                else f"{job.name} backup size changed {sc.pct:+.0f}%")
                    ev.text = text
                    self._after_change(ev, change, job, now, None)
                    events.append(ev)
        rate = checks.success_rate(self.history, job.name, now, bcfg.success_rate_window)
        if rate is not None:
            problem = rate.pct < bcfg.success_rate_pct
            window = human_duration(bcfg.success_rate_window)
            over = f"the last {window}"
            if rate.kept_since is not None:  # retention deleted runs inside the window: say what is counted
                window = human_duration(now - rate.kept_since)
                over = (f"the last {window} (runs that finished before {rate.kept_since:%Y-%m-%d %H:%M} UTC, inside "
                        f"the {human_duration(bcfg.success_rate_window)} success_rate_window, "
                        + ("were deleted by history retention)" if rate.kept_since_exact else
                           "may have been deleted by history retention: its record of what it deleted is damaged)"))
            text = (f"{rate.succeeded} of {rate.total} backups succeeded over {over}: "
                    f"{rate.pct:.2f}% (target {bcfg.success_rate_pct:g}%)")
            change = self.store.update(job.name, RATE_CHECK, "backup.success_rate", problem=problem,
                                       severity="warning", now=now, summary=text, run_id=run.run_id,
                                       repeat_interval=self.cfg.repeat_interval)
            if change is not None and change.kind != "quiet":
                ev = self._base(job, RATE_CHECK, "backup.success_rate", change, now, run_id=run.run_id,
                                status=run.status, command=f"upkeeper history {job.name}",
                                details={"rate_pct": round(rate.pct, 3), "succeeded": rate.succeeded,
                                         "total": rate.total,
                                         **({"counted_since": rate.kept_since.isoformat()}
                                            if rate.kept_since is not None else {})})
                ev.title = (f"{job.name} backup success rate back to {rate.pct:.2f}%" if change.kind == "resolved"
                            else f"{job.name} backup success rate {rate.pct:.2f}% over {window} "
                                 f"(below {bcfg.success_rate_pct:g}%)")
                ev.text = text
                self._after_change(ev, change, job, now, None)
                events.append(ev)
        return events

    # -- escalation -------------------------------------------------------------------------

    def _escalation_for(self, ev: Event) -> Escalation | None:
        esc = self.cfg.escalation
        if esc is None or ev.topic in ("window", "emergency", "planned", "test", "escalation"):
            return None
        return esc if matches(esc, ev) else None

    def _after_change(self, ev: Event, change: Change, job: Job, now: datetime, run: FinishedRun | None) -> None:
        """Escalation bookkeeping for a notified change (new problem → level 1; resolution → stop)."""
        if change.kind == "resolved":
            ev.extra_channels = tuple(change.channels)
            if change.level:
                esc = self.cfg.escalation
                name = esc.level_name(change.level) if esc and change.level <= len(esc.levels) else ""
                self._pending_steps.append(Event(
                    topic="escalation", state="resolved", severity=ev.severity, ts=now, job=job.name,
                    check=ev.check, level=change.level, level_name=name, only_channels=(),
                    title=f"escalation of {job.name} ({ev.check}) stopped at level {change.level} ({name}): resolved",
                    text=ev.title, dedup_key=ev.dedup_key, category=job.category, tags=job.tags))
            return
        # a problem that worsened into the escalation's severities (an error run now failing under
        # ``min_severity: critical``, a warning finding now critical) starts escalating then: it had not
        if change.kind == "problem" or (change.kind == "changed" and not change.level):
            esc = self._escalation_for(ev)
            if esc is not None and self.store.set_level(job.name, ev.check or "", 1, 0):
                lv = esc.levels[0]
                if run is not None and run.retry_at is not None:
                    how = f"automatic retry at {self._fmt(run.retry_at)}"
                elif run is not None:
                    how = f"no automatic retry left (retries: {job.retries})"
                else:
                    how = "waiting for the next run"
                ev.level, ev.level_name = 1, esc.level_name(1)
                ev.extra_channels = tuple(lv.channels)
                self._pending_steps.append(Event(
                    topic="escalation", state="problem", severity=ev.severity, ts=now, job=job.name, check=ev.check,
                    level=1, level_name=esc.level_name(1), only_channels=(), dedup_key=ev.dedup_key,
                    title=f"escalation level 1 ({esc.level_name(1)}) for {job.name} ({ev.check}): {how}",
                    text=ev.title, category=job.category, tags=job.tags))
        self._escalate_by_count(job, ev.check or "", change, now, run)

    def _escalate_by_count(self, job: Job, check: str, change: Change, now: datetime, run: FinishedRun | None) -> None:
        esc = self.cfg.escalation
        if esc is None:
            return
        st = self.store.get(job.name, check)
        if st is None or st.state != "problem" or st.level < 1:
            return
        self._climb(esc, job, st, now, by_time=False)

    def _climb(self, esc: Escalation, job: Job, st: NotifyStateRow, now: datetime, *, by_time: bool) -> None:
        """Step ``st`` (an open problem's state) up to the highest level whose own ``after_failures`` (or, with
        ``by_time``, ``after``) is met, through every level below it: a level is reached when its condition is
        met, whether or not an earlier level's is -- a team lead at 3 consecutive failures hears at the third
        even when on-call's level is 30 minutes (and on-call is paged with it); it used to wait for those 30."""
        reasons: dict[int, str] = {}
        for k in range(st.level + 1, len(esc.levels) + 1):
            lv = esc.levels[k - 1]
            if by_time and lv.after is not None and now - st.since >= lv.after:
                reasons[k] = f"unresolved for {human_duration(now - st.since)} (≥ {human_duration(lv.after)})"
            elif lv.after_failures is not None and st.count >= lv.after_failures:
                reasons[k] = f"{st.count} consecutive failures (≥ {lv.after_failures})"
        if not reasons:
            return
        top = max(reasons)
        level = st.level
        for k in range(level + 1, top + 1):
            reason = reasons.get(k) or f"level {top} ({esc.level_name(top)}) is due: {reasons[top]}"
            self._step(esc, k, level, job, st.check, st.topic, st.severity, st.since, st.count, st.summary, now,
                       reason)
            level = k
        st.level = level

    def _step(self, esc: Escalation, level: int, expect: int, job: Job, check: str, topic: str, severity: str,
              since: datetime, count: int, summary: str, now: datetime, reason: str) -> None:
        if not self.store.set_level(job.name, check, level, expect):
            return  # someone else escalated it
        lv = esc.levels[level - 1]
        name = esc.level_name(level)
        ev = Event(topic="escalation", state="problem", severity=severity, ts=now, job=job.name, check=check,
                   task=job.task_name, target=job.target_name, category=job.category, tags=job.tags, since=since,
                   count=count, level=level, level_name=name, dedup_key=self.dedup_key(job.name, check),
                   only_channels=tuple(lv.channels), summary=summary,
                   title=f"ESCALATED to level {level} ({name}): {job.name} {check} unresolved since "
                         f"{self._fmt(since)}",
                   text="\n".join([f"Reason: {reason}", *( [summary] if summary else []),
                                   f"Problem: {topic} on {job.name}, {count} occurrence(s)",
                                   f"More: upkeeper history {job.name}"]),
                   details={"reason": reason, "problem_topic": topic})
        self._pending_steps.append(ev)

    def check_escalations(self, now: datetime) -> list[Event]:
        esc = self.cfg.escalation
        if esc is None:
            return []
        self._take_steps()
        for st in self.store.problems():
            job = self._job(st.job)
            if job is None or st.level < 1:
                continue
            self._climb(esc, job, st, now, by_time=True)
        steps = self._take_steps()
        self.dispatch(steps, now)
        return steps

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch(self, events: Sequence[Event], now: datetime, *, once_key: str | None = None) -> list[Event]:
        """Record events, route them, create one delivery per channel (per event for PagerDuty), send.

        Escalation steps collected while building ``events`` go out with them.
        """
        events = [*events, *self._take_steps()]
        recorded: list[Event] = []
        for ev in events:
            ev.ts = ev.ts or now
            ev.bound()
            data = ev.to_payload()
            eid = self.store.add_event(ts=ev.ts, topic=ev.topic, state=ev.state, severity=ev.severity, title=ev.title,
                                       text=ev.text, data=data, job=ev.job, check=ev.check, run_id=ev.run_id,
                                       level=ev.level, once_key=once_key)
            if eid is None:
                continue
            ev.id = eid
            recorded.append(ev)
        per_channel: dict[str, list[Event]] = {}
        for ev in recorded:
            chans = self.router.channels_for(ev)
            for c in chans:
                t = self.transports[c]
                if not t.announcements and ev.topic != "test" and (
                        ev.dedup_key is None or ev.state == "notice" or SEVERITY_RANK.get(ev.severity, 0) == 0):
                    continue
                per_channel.setdefault(c, []).append(ev)
            if ev.is_problem and ev.job and ev.check and chans:
                self.store.add_channels(ev.job, ev.check, chans)
        created: list[tuple[int, str, dict[str, Any]]] = []
        for channel, evs in per_channel.items():
            groups = [[e] for e in evs] if self.transports[channel].per_event else [evs]
            for group in groups:
                # what a retry sends is the stored (redacted) payload: the first attempt sends the same
                payload = redact_obj(build_payload(group, self.node, now))
                did = self.store.add_delivery(channel, [e.id for e in group if e.id], payload, now, DELIVERY_LEASE)
                created.append((did, channel, payload))
        for did, channel, payload in created:  # leased to us at creation: nobody else sends them meanwhile
            if self._outbox is not None:
                self._outbox.put((did, channel, payload, 0, now, now + DELIVERY_LEASE))
            else:
                self._attempt(did, channel, payload, 0, now, now, now + DELIVERY_LEASE)
        return recorded

    def deliver(self, delivery_id: int, now: datetime) -> DeliveryResult | None:
        """Attempt one unsent delivery now, whatever its schedule (``upkeeper notify retry``) — unless another
        process is sending it at this moment (it holds its lease): then it is left to that process and the result
        says so (``skipped``).  None: no such delivery, or sent (or given up) meanwhile."""
        row = self.store.claim_one(delivery_id, now, DELIVERY_LEASE)
        if isinstance(row, Busy):
            return DeliveryResult(delivery_id, row.channel, True,
                                  f"being sent by another process right now (leased until {self._fmt(row.until)}): "
                                  "left to it", skipped=True)
        if row is None or row.next_attempt_at is None:
            return None
        return self._attempt(row.id, row.channel, row.payload, row.attempts, row.created_at, now,
                             row.next_attempt_at)

    def _attempt(self, did: int, channel: str, payload: dict[str, Any], attempts: int, created: datetime,
                 now: datetime, leased_until: datetime) -> DeliveryResult:
        """Send a delivery we hold the lease of (until ``leased_until``) and record the outcome — unless the
        lease ran out meanwhile (a slow channel, a stalled process) and another claim took the delivery: its
        outcome is then the delivery's (it may have sent it), ours is only logged."""
        transport = self.transports.get(channel)
        try:
            if transport is None:
                raise TransportError(f"channel {channel!r} is no longer configured", permanent=True)
            # a first attempt may be late too (its creator died, a queue)
            stale, dropped, trimmed = self._superseded(payload)
            if trimmed is not None and stale is not None:
                # what is sent is what is stored (notify log, a retry); not ours any more: the holder decides
                if self.store.trim(did, trimmed, dropped, stale, now, leased_until=leased_until):
                    log.info("notification %s to %s: %d event(s) left out, %s", did, channel,
                             len(payload["events"]) - len(trimmed["events"]), stale)
                payload, stale = trimmed, None
            if stale is not None:
                if self.store.mark_superseded(did, stale, leased_until=leased_until):
                    log.info("notification %s to %s not sent: %s", did, channel, stale)
                res = DeliveryResult(did, channel, True, stale, skipped=True)
                self.last_results.append(res)
                return res
            receipt = transport.send(payload)
        except Exception as exc:  # a transport must never break a run or the daemon
            permanent = isinstance(exc, TransportError) and exc.permanent
            msg = str(exc) if isinstance(exc, TransportError) else f"{type(exc).__name__}: {exc}"
            d = self.cfg.delivery
            delay = min(d.retry_delay * (2 ** attempts), d.retry_max_delay)
            if isinstance(exc, TransportError) and exc.retry_after is not None:  # 429/503 Retry-After: not sooner
                delay = max(delay, exc.retry_after)
            nxt = None if permanent or now + delay - created > d.give_up_after else now + delay
            if self.store.mark_failed(did, msg, nxt, leased_until=leased_until):
                log.warning("notification to %s failed (%s): %s", channel,
                            "giving up" if nxt is None else f"retry at {nxt.isoformat()}", redact(msg))
            else:
                log.warning("notification %s to %s failed (%s), not recorded: its lease ran out meanwhile and "
                            "another attempt took it over", did, channel, redact(msg))
            res = DeliveryResult(did, channel, False, redact(msg))
        else:
            if not self.store.mark_sent(did, now, leased_until=leased_until):
                log.warning("notification %s to %s sent, not recorded: its lease ran out meanwhile and another "
                            "attempt took it over (it may arrive twice)", did, channel)
            res = DeliveryResult(did, channel, True, receipt)
        self.last_results.append(res)
        del self.last_results[:-200]
        return res

    def _superseded(self, payload: dict[str, Any]) -> tuple[str | None, list[int], dict[str, Any] | None]:
        """What a late delivery must send, given what is current now: ``(reason, ids, None)`` when nothing —
        every event it carries reports a state that is over; ``(reason, ids, trimmed)`` when only some do (their
        ids): the payload without them; ``(None, [], None)``: all of it.

        A problem retried after its recovery (the problem's first attempt failed, the recovery went out) read as
        the job failing again — and opened an incident for a job that was fine again, on a channel keeping state
        by dedup key (PagerDuty) or a webhook consumer doing so; a resolution retried after the problem came back
        read as the failing job being fine — and closed its open incident.  A PagerDuty delivery carries one
        event."""
        events = payload.get("events") or []
        reasons = [self._stale(e) for e in events]
        if not any(reasons):
            return None, [], None
        reason = "; ".join(dict.fromkeys(r for r in reasons if r is not None))
        dropped = [int(e["id"]) for e, r in zip(events, reasons, strict=True) if r is not None and e.get("id")]
        if all(reasons):
            return reason, dropped, None
        try:
            current = [_event_of(e) for e, r in zip(events, reasons, strict=True) if r is None]
            sent_at = datetime.fromisoformat(payload["sent_at"]) if payload.get("sent_at") else self.clock()
            trimmed = redact_obj(build_payload(current, payload.get("node") or self.node, sent_at))
        except (TypeError, ValueError) as exc:  # a payload this version cannot read back: sent whole, as it was
            log.warning("notification payload not trimmed of the events that are over: %s", redact(str(exc)))
            return None, [], None
        return reason, dropped, trimmed

    def _stale(self, e: dict[str, Any]) -> str | None:
        """Why this event of a late delivery reports a state that is over (None: still current)."""
        job, check, state = e.get("job"), e.get("check"), e.get("state")
        if not job or not check or e.get("topic") == "test":
            return None
        st = self.store.get(job, check)
        if state in ("problem", "repeat", "changed"):
            since = datetime.fromisoformat(e["since"]) if e.get("since") else None
            if st is None or st.state != "problem" or (since is not None
                                                       and abs(st.since - since) > timedelta(milliseconds=1)):
                return (f"superseded: {job} {check} is no longer the problem this reported"
                        f"{' (resolved since)' if st is None or st.state != 'problem' else ' (a newer one)'}")
        elif state == "resolved" and st is not None and st.state == "problem" and e.get("ts") \
                and st.since > datetime.fromisoformat(e["ts"]):
            return f"superseded: {job} {check} became a problem again after this resolution"
        return None

    def retry_due(self, now: datetime) -> list[DeliveryResult]:
        """Send the deliveries due for a retry (or whose creator's lease ran out).  With the sender thread
        running (the daemon), they are handed to it and ``[]`` is returned: the daemon calls this from its
        scheduling loop, which a channel timing out (once per due delivery) would otherwise hold."""
        out = []
        background = self._sender is not None and self._outbox is not None
        for row in self.store.claim_due(now, DELIVERY_LEASE):
            assert row.next_attempt_at is not None  # the claim: its lease's end
            if background and self._outbox is not None:
                self._outbox.put((row.id, row.channel, row.payload, row.attempts, row.created_at,
                                  row.next_attempt_at))
                continue
            out.append(self._attempt(row.id, row.channel, row.payload, row.attempts, row.created_at, now,
                                     row.next_attempt_at))
        return out

    # -- periodic ---------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> None:
        """Escalation timers, missed runs, window notices, delivery retries.  Never raises."""
        now = now or self.clock()
        if not self.active:
            return
        for name, fn in (("removed jobs", self.close_removed), ("escalation", self.check_escalations),
                         ("missed runs", self.check_missed),
                         ("window notices", self.window_notices), ("delivery retries", self.retry_due)):
            try:
                fn(now)
            except Exception as exc:
                log.warning("notifications: %s check failed: %s", name, redact(str(exc)))

    # -- jobs removed from the config -------------------------------------------------------

    def close_removed(self, now: datetime) -> list[Event]:
        """Close the open problems of jobs no longer in the config (removed or renamed) that this node recorded.

        Nothing would ever resolve them: no run, no missed-run check, and their escalation and PagerDuty incident
        stayed open.  The channels told about the problem get a ``resolved`` event saying the job was removed
        (``details.closed``), not that it recovered.  A problem recorded by another node sharing the history is
        left to that node: its config may still have the job."""
        events: list[Event] = []
        for ch in self.store.close_removed(sorted(self.setup.jobs), now):
            key = self.dedup_key(ch.job, ch.check)
            ev = Event(topic=ch.topic, state="resolved", severity=ch.severity, ts=now, job=ch.job, check=ch.check,
                       since=ch.since, count=ch.count, repeats=ch.repeats, level=ch.level or None, dedup_key=key,
                       only_channels=tuple(ch.channels),
                       details={"closed": "job removed from the config", "node": self.node},
                       title=f"{ch.job} {ch.check}: closed, job no longer in the config of {self.node} "
                             "(not recovered)",
                       text=f"The {ch.severity} {ch.topic} problem open since {self._fmt(ch.since)} "
                            f"({ch.count} occurrence(s)) is closed: node {self.node}'s config has no job "
                            f"{ch.job!r} any more (removed or renamed).")
            events.append(ev)
            if ch.level:
                esc = self.cfg.escalation
                name = esc.level_name(ch.level) if esc and ch.level <= len(esc.levels) else ""
                events.append(Event(
                    topic="escalation", state="resolved", severity=ch.severity, ts=now, job=ch.job, check=ch.check,
                    level=ch.level, level_name=name, only_channels=(), dedup_key=key,
                    title=f"escalation of {ch.job} ({ch.check}) stopped at level {ch.level} ({name}): job removed "
                          "from the config", text=ev.title))
        if events:
            log.info("notifications: closed %d problem(s) of jobs no longer in the config", len(events))
            self.dispatch(events, now)
        return events

    # -- missed runs ------------------------------------------------------------------------

    def missed(self, now: datetime) -> list[checks.Missed]:
        jobs = [j for j in self.setup.jobs.values() if j.enabled and j.schedule is not None]
        first_seen = self.store.first_seen([j.name for j in jobs], MISSED_CHECK, "missed", now)
        # a daemon is taken for dead as 'upkeeper status' does: no heartbeat for 3 of them (2 minutes at least)
        stale = max(timedelta(minutes=2), 3 * self.config.daemon.heartbeat)
        return checks.find_missed(jobs, self.history, now, self.cfg.missed_grace, self.calendar, first_seen, stale)

    def check_missed(self, now: datetime) -> list[Event]:
        if not self.cfg.missed_runs:
            return []
        missed = {m.job: m for m in self.missed(now)}
        events: list[Event] = []
        for m in missed.values():
            job = self.setup.jobs[m.job]
            change = self.store.update(m.job, MISSED_CHECK, "missed", problem=True, severity="critical", now=now,
                                       summary=f"no run since {self._fmt(m.reference)}",
                                       repeat_interval=self.cfg.repeat_interval, count=False)
            if change is None or change.kind == "quiet":
                continue
            what = "has not run since upkeeper started watching it" if m.never_ran else \
                f"last ran {self._fmt(m.reference)} ({ago(m.reference, now)})"
            ev = self._base(job, MISSED_CHECK, "missed", change, now, command="upkeeper status --check",
                            details={"reference": m.reference.isoformat(), "deadline": m.deadline.isoformat()})
            ev.title = (f"{job.name} MISSED: no run for {human_duration(now - m.reference)}"
                        if change.kind == "problem" else
                        f"{job.name} still missing: no run for {human_duration(now - m.reference)}")
            ev.text = "\n".join([
                f"{job.name} ({job.task_name}) {what}.",
                f"Its next run was due {self._fmt(m.expected or m.deadline - m.grace)} + "
                f"{human_duration(m.grace)} grace; overdue since {self._fmt(m.deadline)}.",
                "Is the daemon running? Check: upkeeper status --check",
            ])
            self._after_change(ev, change, job, now, None)
            events.append(ev)
        # a job whose deadline moved (a success on another node, a blackout, a changed config) is no longer late
        for st in self.store.problems(topic="missed"):
            known = self._job(st.job)
            if known is not None and st.job not in missed:
                events += self._resolve(known, MISSED_CHECK, "missed", now, None, "no longer overdue",
                                        "is no longer overdue")
        self.dispatch(events, now)
        return events

    # -- maintenance windows ----------------------------------------------------------------

    def planned_in(self, window: Window, period: Period) -> list[tuple[str, str]]:
        """(job, how) pairs planned inside ``period``: bound jobs due by its end, and pending runs."""
        out: list[tuple[str, str]] = []
        prev = window.rec.last_end_before(period.start)
        for job in self.setup.jobs.values():
            if not job.enabled or job.window != window.name or job.schedule is None:
                continue
            after = prev.end if prev is not None else period.start - job.schedule.period()
            occ = job.schedule.next_after(after - timedelta(seconds=1))
            if occ < period.end:
                out.append((job.name, f"{job.task_name} (schedule {job.schedule.text})"))
        for r in self.history.runs(statuses=["pending"], limit=500):
            if r.due_at is not None and period.start <= r.due_at < period.end and r.trigger == "planned":
                out.append((r.job, f"planned run at {local_time(r.due_at, window.tz, '%H:%M %Z')}"))
        return out

    def outcomes_in(self, window: Window, period: Period) -> list[tuple[str, int, str, str]]:
        """(job, run id, status, summary) for runs that started inside ``period``; a run stopped on request
        (``systemctl stop``) has the status ``stopped``: no failure."""
        bound = sorted(j.name for j in self.setup.jobs.values() if j.window == window.name)
        # by start: a deferred run keeps its occurrence, weeks before the opening
        out = [(r.job, r.id, "stopped" if checks.stopped_on_request(r) else r.status, r.summary)
               for r in self.store.runs_started(period.start, period.end, bound, ("planned", "deferred"))]
        return sorted(out, key=lambda t: t[1])

    def window_notices(self, now: datetime) -> list[Event]:
        sent: list[Event] = []
        for window in self.calendar.windows.values():
            w = window.cfg
            horizon = max(w.notices, default=timedelta(0))
            chans = tuple(w.notify) if w.notify is not None else None
            for p in window.rec.periods(now - END_NOTICE_MAX_AGE, now + horizon + timedelta(minutes=1)):
                key = f"window:{window.name}:{p.start.isoformat()}"
                when = describe(p, window.tz)
                if now < p.start:
                    due = [n for n in w.notices if now >= p.start - n]
                    if not due:
                        continue
                    lead = min(due)
                    planned = self.planned_in(window, p)
                    lines = [f"Maintenance window {window.name!r}: {when}" +
                             (f" — {w.description}" if w.description else "")]
                    lines += [f"• {j}: {how}" for j, how in planned] or ["• no jobs planned"]
                    lines.append("Calendar: upkeeper windows --ics")
                    ev = Event(topic="window", state="notice", severity="info", ts=now,
                               title=f"Maintenance window {window.name} in {human_duration(p.start - now)}: {when}",
                               text="\n".join(lines), only_channels=chans,
                               details={"window": window.name, "start": p.start.isoformat(),
                                        "end": p.end.isoformat(), "notice": "advance",
                                        "lead_seconds": lead.total_seconds(), "planned": [j for j, _ in planned]})
                    sent += self.dispatch([ev], now, once_key=f"{key}:notice:{int(lead.total_seconds())}")
                elif p.start <= now < p.end:
                    planned = self.planned_in(window, p)
                    ev = Event(topic="window", state="notice", severity="info", ts=now,
                               title=f"Maintenance window {window.name} started: {when}",
                               text="\n".join([f"• {j}: {how}" for j, how in planned] or ["no jobs planned"]),
                               only_channels=chans,
                               details={"window": window.name, "start": p.start.isoformat(),
                                        "end": p.end.isoformat(), "notice": "start",
                                        "planned": [j for j, _ in planned]})
                    sent += self.dispatch([ev], now, once_key=f"{key}:start")
                elif now >= p.end and self.store.has_once(f"{key}:start") and not self.store.has_once(f"{key}:end"):
                    outcomes = self.outcomes_in(window, p)
                    bad = [o for o in outcomes if o[2] in checks.FAILURE]
                    lines = [f"• {j}: {st} (run {rid}) {summ[:120]}".rstrip() for j, rid, st, summ in outcomes]
                    ev = Event(topic="window", state="notice", severity="warning" if bad else "info", ts=now,
                               title=f"Maintenance window {window.name} ended: {len(outcomes)} run(s), "
                                     f"{len(bad)} failed",
                               text="\n".join(lines or ["nothing ran"]), only_channels=chans,
                               details={"window": window.name, "start": p.start.isoformat(),
                                        "end": p.end.isoformat(), "notice": "end",
                                        "runs": [{"job": j, "run_id": rid, "status": st} for j, rid, st, _ in
                                                 outcomes]})
                    sent += self.dispatch([ev], now, once_key=f"{key}:end")
        return sent

    # -- announcements ----------------------------------------------------------------------

    def announce(self, topic: str, title: str, text: str, now: datetime, *, about: Job | None = None,
                 details: dict[str, Any] | None = None, severity: str = "info") -> list[Event]:
        ev = Event(topic=topic, state="notice", severity=severity, ts=now, title=title, text=text,
                   job=about.name if about else None, task=about.task_name if about else None,
                   target=about.target_name if about else None, category=about.category if about else None,
                   tags=about.tags if about else (), details=details or {})
        return self.dispatch([ev], now)

    def send_test(self, channel: str, now: datetime) -> DeliveryResult | None:
        """A test message to ``channel``.  A channel that takes no announcements (PagerDuty) gets an ``info``
        alert resolved at once — a notice never reached it, so its test always failed ("not sent")."""
        title = f"upkeeper test notification from {self.node}"
        text = f"Channel {channel!r} works. Sent by 'upkeeper notify test {channel}'."
        key = self.dedup_key("upkeeper", "test")
        transport = self.transports.get(channel)
        if transport is not None and not transport.announcements:
            events = [Event(topic="test", state=state, severity="info", ts=now, only_channels=(channel,),
                            title=title if state == "problem" else f"{title}: resolved", text=text, dedup_key=key)
                      for state in ("problem", "resolved")]
        else:
            events = [Event(topic="test", state="notice", severity="info", ts=now, only_channels=(channel,),
                            title=title, text=text, dedup_key=key)]
        self.last_results = []
        recorded = self.dispatch(events, now)
        if not recorded or not self.last_results:
            return None
        failed = next((r for r in self.last_results if not r.ok), None)
        if failed is not None:
            return failed
        last = self.last_results[-1]
        return DeliveryResult(last.delivery_id, channel, True, "; ".join(r.detail for r in self.last_results))
