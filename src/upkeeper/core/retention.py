"""History retention: delete old runs (with their findings and log excerpts), old notification events and
deliveries, and old audit entries — never what something still reads.

Kept whatever its age (each reason mirrors a reader):

* runs still ``pending`` (retries, deferred and planned runs), ``queued`` or ``running``: only finished runs
  are candidates;
* per job, the latest run (``upkeeper status``: :meth:`History.last_runs`), the latest successful run
  (:meth:`History.last_success`), the latest finished run (the missed-run alarm:
  :func:`upkeeper.notify.checks.last_run_start`) and the latest scheduled occurrence (catch-up after a
  restart: :meth:`History.last_scheduled` — without it a daemon would take the job for a new one);
* the run that made each backup still in the catalog (the catalog itself, job state, notification state
  and undelivered notifications are never touched);
* a job's current failure streak survives as a count: deleted failed runs that finished after the job's
  latest successful run are counted in ``run_streaks`` (one row per job, in the deleting transaction), which
  :meth:`History.failure_streaks` adds to the failures still in ``runs`` while that success is the latest;
* emergency runs, and notification events of open problems or of emergency runs, follow the audit
  retention (the audit trail says who ran them and why; the run says what happened).

Deletion goes in batches of :data:`BATCH` runs, each its own short transaction followed on SQLite by a pause
(:data:`SQLITE_PAUSE`), so a running job's history writes wait for a batch, not the whole prune.  Old rows are found through ``ix_runs_finished``:
an hourly prune reads the old rows, not the whole table.

On SQLite, deleted rows leave free pages that new rows reuse (the file stops growing).  A database created
by this version uses ``auto_vacuum=INCREMENTAL``: pruning also hands the free pages back to the file system
(the file shrinks), a few MB per transaction.  An older database is switched by ``upkeeper history prune
--vacuum`` (one ``VACUUM``: it rewrites the file and holds the write lock meanwhile).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, or_, select, update

from upkeeper.core import tables
from upkeeper.core.history import (
    RETENTION_STATE,
    SCHEDULED_TRIGGERS,
    History,
    read_deleted_marker,
    stopped_on_request,
)
from upkeeper.core.models import AuditRow, FindingRow, MetricRow, RunRow, StateRow, StreakRow

log = logging.getLogger(__name__)

#: runs per delete transaction (with their findings): ~0.06 s of write lock on SQLite (measured, 20,000-run
#: history), short enough for a running job's writes to wait
BATCH = 500
#: free SQLite pages handed back to the file system per transaction (4 KiB each: 8 MiB)
VACUUM_PAGES = 2048
#: SQLite: the pause after each of a prune's write transactions.  Every transaction takes the write lock, and a
#: process waiting for it (SQLite's busy handler) tries again every 100 ms at most: back to back, the batches
#: left it a free moment only by chance -- a daemon's or an ``upkeeper run``'s writes waited up to 18 s during a
#: 100,000-run prune (and past the busy timeout, failed).  With the pause they wait for one batch at most.
SQLITE_PAUSE = 0.12
FINAL = ("ok", "warn", "fail", "error", "skipped", "interrupted")
SUCCESS = ("ok", "warn")
FAILURE = ("fail", "error", "interrupted")
FINISHED = ("ok", "warn", "fail", "error", "interrupted")
SCHEDULED = SCHEDULED_TRIGGERS
EMERGENCY = "emergency"


@dataclass
class PruneReport:
    """What a prune deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    runs_before: datetime | None
    audit_before: datetime | None
    runs: int = 0
    findings: int = 0
    notify_events: int = 0
    notify_deliveries: int = 0
    audit: int = 0
    metric_samples: int = 0
    #: rows of daemons that ended before ``runs_before`` (see :func:`_prune_daemons`)
    daemons: int = 0
    #: of the deleted runs, failed ones of their job's current failure streak, now counted in ``run_streaks``
    streak_runs: int = 0
    #: old runs kept, by reason
    kept: dict[str, int] = field(default_factory=dict)
    #: SQLite only: file size before and after, pages freed back to the file system, free pages left
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    free_pages: int | None = None
    vacuum: str | None = None
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "runs_before": self.runs_before.isoformat() if self.runs_before else None,
            "audit_before": self.audit_before.isoformat() if self.audit_before else None,
            "deleted" if not self.dry_run else "would_delete": {
                "runs": self.runs, "findings": self.findings, "notify_events": self.notify_events,
                "notify_deliveries": self.notify_deliveries, "audit": self.audit,
                "metric_samples": self.metric_samples, "daemons": self.daemons,
            },
            "kept": dict(sorted(self.kept.items())),
            "streak_runs": self.streak_runs,
            "sqlite": None if self.file_bytes_before is None else {
                "file_bytes_before": self.file_bytes_before, "file_bytes_after": self.file_bytes_after,
                "free_pages": self.free_pages, "vacuum": self.vacuum,
            },
        }


def _pause(history: History) -> None:
    """Between two write transactions of a prune: let the writers waiting for SQLite's lock in (:data:`SQLITE_PAUSE`;
    the threads of this process too, which take turns through :meth:`History.session`)."""
    if history.dialect == "sqlite":
        time.sleep(SQLITE_PAUSE)


def _t(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _latest(runs: Table, col: Any, cond: ColumnElement[bool]) -> Any:
    """Ids of each job's run(s) with the greatest ``col`` among those matching ``cond``."""
    sub = select(runs.c.job.label("j"), func.max(col).label("m")).where(cond).group_by(runs.c.job).subquery()
    return select(runs.c.id).join(sub, and_(runs.c.job == sub.c.j, col == sub.c.m)).where(cond)


def protected_runs(conn: Connection) -> dict[int, str]:
    """Run id → why it must stay, whatever its age."""
    runs = _t(RunRow)
    backups = tables.backups
    queries: list[tuple[str, Any]] = [
        ("latest run of its job", select(func.max(runs.c.id)).where(runs.c.status != "pending")
         .group_by(runs.c.job)),
        ("latest successful run of its job", _latest(runs, runs.c.finished_at, runs.c.status.in_(SUCCESS))),
        ("latest finished run of its job (missed-run alarm)",
         _latest(runs, runs.c.scheduled_for, runs.c.status.in_(FINISHED))),
        ("latest scheduled occurrence of its job (catch-up)",
         _latest(runs, runs.c.scheduled_for, runs.c.trigger.in_(SCHEDULED))),
        ("made a backup still in the catalog",
         select(backups.c.run_id).where(backups.c.run_id.is_not(None))),
    ]
    out: dict[int, str] = {}
    for reason, q in queries:
        for (rid,) in conn.execute(q):
            if rid is not None:
                out.setdefault(int(rid), reason)
    return out


def _old_runs(history: History, before: datetime, cond: ColumnElement[bool], upto: int) -> Iterator[list[int]]:
    """Batches of ids of finished runs older than ``before`` (oldest first), keyset-paginated on
    ``(finished_at, id)`` so kept rows are read once."""
    runs = _t(RunRow)
    last: tuple[datetime, int] | None = None
    while True:
        q = (select(runs.c.id, runs.c.finished_at)
             .where(runs.c.finished_at < before, runs.c.status.in_(FINAL), runs.c.id <= upto, cond)
             .order_by(runs.c.finished_at, runs.c.id).limit(BATCH))
        if last is not None:
            q = q.where(or_(runs.c.finished_at > last[0], and_(runs.c.finished_at == last[0], runs.c.id > last[1])))
        with history.session() as s:
            rows = s.execute(q).all()
        if not rows:
            return
        last = (rows[-1][1], int(rows[-1][0]))
        yield [int(r[0]) for r in rows]


def prune_history(history: History, *, runs_before: datetime | None, audit_before: datetime | None,
                  metric_cutoffs: dict[str, datetime] | None = None, dry_run: bool = False,
                  vacuum: bool = False, stop: Callable[[], bool] = lambda: False) -> PruneReport:
    """Apply history retention; see the module docstring for what is kept.

    ``runs_before`` / ``audit_before``: delete what finished before these instants (None: keep forever).
    ``metric_cutoffs``: per job, delete metric samples older than this (the jobs' ``metrics_retention``).
    ``vacuum`` (SQLite): rewrite the file once with ``VACUUM``, switching it to incremental auto-vacuum.
    ``stop``: checked between batches (a daemon shutting down); what was deleted so far stays deleted,
    and ``stopped`` says the prune did not finish.
    """
    from upkeeper.notify.store import NotifyDeliveryRow, NotifyEventRow, NotifyStateRow

    rep = PruneReport(dry_run=dry_run, runs_before=runs_before, audit_before=audit_before)
    path = history.sqlite_path if history.dialect == "sqlite" else None
    if path is not None and path.exists():
        rep.file_bytes_before = _file_bytes(path)
    runs, findings, metrics = _t(RunRow), _t(FindingRow), _t(MetricRow)
    with history.session() as s:
        conn = s.connection()
        protected = protected_runs(conn)
        upto = int(conn.execute(select(func.coalesce(func.max(runs.c.id), 0))).scalar_one())
        open_problems = {(j, c) for j, c in conn.execute(
            select(_t(NotifyStateRow).c.job, _t(NotifyStateRow).c.check)
            .where(_t(NotifyStateRow).c.state == "problem"))}

    passes: list[tuple[datetime, ColumnElement[bool]]] = []
    if runs_before is not None:
        passes.append((runs_before, runs.c.trigger != EMERGENCY))
        if audit_before is not None:
            passes.append((audit_before, runs.c.trigger == EMERGENCY))
    for before, cond in passes:
        for ids in _old_runs(history, before, cond, upto):
            if stop():
                rep.stopped = True
                return rep
            doomed = [i for i in ids if i not in protected]
            for i in ids:
                if i in protected:
                    rep.kept[protected[i]] = rep.kept.get(protected[i], 0) + 1
            if not doomed:
                continue
            with history.session() as s:
                conn = s.connection()
                if dry_run:
                    rep.findings += int(conn.execute(select(func.count()).select_from(findings)
                                                     .where(findings.c.run_id.in_(doomed))).scalar_one())
                    rep.runs += len(doomed)
                    rows = conn.execute(select(runs.c.id, runs.c.job, runs.c.status, runs.c.finished_at,
                                               runs.c.details).where(runs.c.id.in_(doomed))).all()
                    rep.streak_runs += sum(len(m) for _a, m in _streak_failures(conn, rows).values())
                    continue
                rep.findings += _count(conn.execute(delete(findings).where(findings.c.run_id.in_(doomed))))
                # the samples stay (they have their own retention), detached from the run
                conn.execute(update(metrics).where(metrics.c.run_id.in_(doomed)).values(run_id=None))
                gone = conn.execute(delete(runs).where(runs.c.id.in_(doomed))
                                    .returning(runs.c.id, runs.c.job, runs.c.status, runs.c.finished_at,
                                               runs.c.details)).all()
                rep.runs += len(gone)
                rep.streak_runs += _carry_streaks(conn, gone)
                _note_deleted_through(conn, [r.finished_at for r in gone if r.finished_at is not None])
            _pause(history)
    if runs_before is not None:
        events = _t(NotifyEventRow)
        ev_cond = and_(events.c.ts < runs_before, events.c.topic != EMERGENCY)
        if audit_before is not None:
            ev_cond = or_(ev_cond, and_(events.c.ts < audit_before, events.c.topic == EMERGENCY))
        rep.notify_events = _prune_by_id(
            history, events, ev_cond, dry_run,
            keep=lambda row: (row.job, row.check) in open_problems,
            cols=(events.c.job, events.c.check))
        dl = _t(NotifyDeliveryRow)
        rep.notify_deliveries = _prune_by_id(
            history, dl, and_(dl.c.created_at < runs_before, dl.c.status.in_(("sent", "dead", "superseded"))), dry_run)
        rep.daemons = _prune_daemons(history, runs_before, dry_run)
    if audit_before is not None:
        audit = _t(AuditRow)
        rep.audit = _prune_by_id(history, audit, audit.c.ts < audit_before, dry_run)
    if metric_cutoffs:
        rep.metric_samples = _prune_metrics(history, metric_cutoffs, dry_run)
    if path is not None and path.exists():
        _sqlite_space(history, rep, vacuum and not dry_run)
        rep.file_bytes_after = _file_bytes(path)
    return rep


def _streak_failures(conn: Connection, rows: Sequence[Any]) -> dict[str, tuple[int, list[tuple[datetime, int]]]]:
    """Of ``rows`` (id, job, status, finished_at, details), per job the failed runs that finished after its latest
    successful run, with that run's id (0: none).  A run stopped on request is no failure."""
    runs = _t(RunRow)
    by_job: dict[str, list[tuple[datetime, int]]] = {}
    for rid, job, status, finished, details in rows:
        if status in FAILURE and finished is not None and not stopped_on_request(status, details):
            by_job.setdefault(job, []).append((finished, int(rid)))
    out: dict[str, tuple[int, list[tuple[datetime, int]]]] = {}
    for job, fails in by_job.items():
        ok = conn.execute(
            select(runs.c.id, runs.c.finished_at)
            .where(runs.c.job == job, runs.c.status.in_(SUCCESS), runs.c.finished_at.is_not(None))
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc()).limit(1)
        ).first()
        after = 0 if ok is None else int(ok.id)
        mine = [f for f in fails if ok is None or f > (ok.finished_at, after)]
        if mine:
            out[job] = (after, mine)
    return out


def _carry_streaks(conn: Connection, gone: Sequence[Any]) -> int:
    """Count the deleted failed runs that belong to their job's current failure streak in ``run_streaks``.

    Part of the deleting transaction, and from the rows it deleted (``RETURNING``): two prunes at once
    (daemons sharing a PostgreSQL history) never count a run twice.  The jobs' rows are locked in the order of
    their names, not of the deleted rows: two prunes deleting different runs of the same jobs wait for each
    other instead of deadlocking (PostgreSQL aborted one).  A streak is the failed runs that
    finished after the job's latest successful run (which retention keeps); its row names that run, and a
    row naming an older success is replaced, not added to.  Returns how many runs were counted.
    """
    streaks = _t(StreakRow)
    n = 0
    now = datetime.now(UTC)
    for job, (after, mine) in sorted(_streak_failures(conn, gone).items(), key=lambda kv: kv[0]):
        since = min(f[0] for f in mine)
        # the row exists (a prune of another daemon may be creating it now: no duplicate-key error), then
        # locked, so a concurrent prune's addition waits for this one's
        ins: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as ins
        else:
            from sqlalchemy.dialects.sqlite import insert as ins
        conn.execute(ins(streaks).values(job=job, after_run_id=after, failures=0, since=since, updated_at=now)
                     .on_conflict_do_nothing(index_elements=["job"]))
        row = conn.execute(select(streaks.c.after_run_id, streaks.c.failures, streaks.c.since)
                           .where(streaks.c.job == job).with_for_update()).one()
        if row.after_run_id == after:
            values = {"failures": row.failures + len(mine), "since": min(row.since, since)}
        else:  # counted after a success that is no longer the latest: a new streak
            values = {"after_run_id": after, "failures": len(mine), "since": since}
        conn.execute(update(streaks).where(streaks.c.job == job).values(**values, updated_at=now))
        n += len(mine)
    return n


def _note_deleted_through(conn: Connection, finished: Sequence[datetime]) -> None:
    """Record the newest end of a deleted run (:meth:`History.runs_deleted_through`), in the deleting
    transaction, never moving it back (the row locked: a concurrent prune of another daemon waits)."""
    if not finished:
        return
    latest = max(finished).astimezone(UTC)
    state = _t(StateRow)
    job, key = RETENTION_STATE
    ins: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as ins
    else:
        from sqlalchemy.dialects.sqlite import insert as ins
    now = datetime.now(UTC)
    conn.execute(ins(state).values(job=job, key=key, value=latest.isoformat(), updated_at=now)
                 .on_conflict_do_nothing(index_elements=["job", "key"]))
    old = conn.execute(select(state.c.value, state.c.updated_at)
                       .where(state.c.job == job, state.c.key == key).with_for_update()).one()
    if old.value == latest.isoformat():  # just inserted (or already there)
        return
    prev = read_deleted_marker(old.value, old.updated_at)
    if prev.exact and prev.through >= latest:
        return
    if not prev.exact:
        # damaged (hand edit, bad restore): the runs deleted before had finished by its last write, so that
        # instant (when later than this prune's) keeps its readers from claiming them: repaired, never moved back
        latest = max(latest, prev.through)
        log.warning("history retention: the marker %s/%s was damaged (%r); repaired to %s", job, key,
                    str(old.value)[:80], latest.isoformat())
    conn.execute(update(state).where(state.c.job == job, state.c.key == key)
                 .values(value=latest.isoformat(), updated_at=now))


def _count(result: Any) -> int:
    return int(result.rowcount or 0)


def _prune_by_id(history: History, table: Table, cond: ColumnElement[bool], dry_run: bool, *,
                 keep: Any = None, cols: tuple[Any, ...] = ()) -> int:
    """Delete rows matching ``cond`` (and not ``keep(row)``) in batches by id; returns how many."""
    n, after = 0, 0
    while True:
        with history.session() as s:
            conn = s.connection()
            rows = conn.execute(select(table.c.id, *cols).where(cond, table.c.id > after)
                                .order_by(table.c.id).limit(BATCH)).all()
            if not rows:
                return n
            after = int(rows[-1][0])
            ids = [int(r[0]) for r in rows if keep is None or not keep(r)]
            if ids and not dry_run:
                n += _count(conn.execute(delete(table).where(table.c.id.in_(ids))))
            elif dry_run:
                n += len(ids)
        if ids and not dry_run:
            _pause(history)


def _prune_daemons(history: History, before: datetime, dry_run: bool) -> int:
    """Delete the rows of daemons that ended before ``before`` (asked to stop then, or last heard of then: died).

    Every daemon start adds a row (its instance name holds its pid).  Kept whatever their age:

    * the rows catch-up still reads (:meth:`History.daemon_lifetimes`, ``Daemon._served_through``): a daemon that
      served a job past that job's last recorded occurrence (a schedule changed with a restart: the occurrences
      it ran through were its own, not downtime to catch up).  A lifetime that ended at or before the last
      occurrence of every job it served is never read again (occurrences only move forward);
    * each node's newest daemon row: ``upkeeper status`` says when that node's daemon last ran.
    """
    d = tables.daemons
    with history.session() as s:
        conn = s.connection()
        rows = conn.execute(select(d.c.instance, d.c.node, d.c.started_at, d.c.stopped_at, d.c.last_seen,
                                   d.c.job_names)).all()
    if not rows:
        return 0
    newest: dict[str, Any] = {}
    for r in rows:
        if r.node not in newest or r.started_at > newest[r.node].started_at:
            newest[r.node] = r
    last = history.last_scheduled()

    def ended(r: Any) -> datetime:
        t = r.stopped_at or r.last_seen
        return cast(datetime, t if t.tzinfo is not None else t.replace(tzinfo=UTC))

    def read_by_catch_up(r: Any) -> bool:
        names = r.job_names if isinstance(r.job_names, list) else []
        end = ended(r)
        return any(j in last and end > last[j] for j in names)

    doomed = [r.instance for r in rows
              if ended(r) < before and newest[r.node] is not r and not read_by_catch_up(r)]
    if dry_run or not doomed:
        return len(doomed)
    n = 0
    for i in range(0, len(doomed), BATCH):
        with history.session() as s:
            n += _count(s.connection().execute(delete(d).where(d.c.instance.in_(doomed[i:i + BATCH]))))
        _pause(history)
    return n


def _prune_metrics(history: History, cutoffs: dict[str, datetime], dry_run: bool) -> int:
    if not dry_run:
        return history.prune_metrics_bulk(cutoffs)
    metrics = _t(MetricRow)
    n = 0
    with history.session() as s:
        for job, cutoff in cutoffs.items():
            n += int(s.execute(select(func.count()).select_from(metrics)
                               .where(metrics.c.job == job, metrics.c.ts < cutoff)).scalar_one())
    return n


def _file_bytes(path: os.PathLike[str]) -> int:
    """The database file and its write-ahead log."""
    total = 0
    for p in (str(path), str(path) + "-wal"):
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


def _sqlite_space(history: History, rep: PruneReport, vacuum: bool) -> None:
    """Hand free pages back to the file system (incremental auto-vacuum), or rewrite the file (``vacuum``)."""
    # the threads of this process take turns on the history (History.session); so does this, a step at a time
    with history._unlocked(), history.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        with history._turn:
            mode = int(raw.execute("PRAGMA auto_vacuum").fetchone()[0])
        if vacuum:
            with history._turn:
                raw.execute("PRAGMA auto_vacuum=INCREMENTAL")
                raw.execute("VACUUM")  # outside any transaction: the connection is in autocommit (history.py)
                mode = int(raw.execute("PRAGMA auto_vacuum").fetchone()[0])
            rep.vacuum = "vacuum"
        elif mode == 2 and not rep.dry_run:
            freed = 0
            while True:
                with history._turn:
                    free = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
                    if free == 0:
                        break
                    raw.execute("BEGIN IMMEDIATE")
                    try:
                        # one page per step; Python's sqlite3 steps a PRAGMA once, so one statement per page
                        for _ in range(min(free, VACUUM_PAGES)):
                            raw.execute("PRAGMA incremental_vacuum(1)")
                        raw.execute("COMMIT")
                    except BaseException:
                        raw.execute("ROLLBACK")
                        raise
                freed += min(free, VACUUM_PAGES)
                _pause(history)
            rep.vacuum = f"incremental: {freed} page(s) returned to the file system"
        elif mode != 2:
            rep.vacuum = ("none: free pages are reused by new rows (the file stops growing); "
                          "'upkeeper history prune --vacuum' shrinks it once and turns on incremental vacuum")
        with history._turn:
            rep.free_pages = int(raw.execute("PRAGMA freelist_count").fetchone()[0])
            if not rep.dry_run:
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.rollback()
