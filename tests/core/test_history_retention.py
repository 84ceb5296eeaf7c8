"""History retention on SQLite and PostgreSQL: what is deleted, what must stay, dry runs, file size."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from upkeeper.backup.catalog import BackupRow
from upkeeper.core import retention
from upkeeper.core.history import RETENTION_STATE, DeletedRuns, History, NewRun
from upkeeper.core.models import AuditRow, FindingRow, MetricRow, RunRow
from upkeeper.core.retention import prune_history
from upkeeper.core.task import Finding, Result, Severity
from upkeeper.notify.store import NotifyDeliveryRow, NotifyEventRow, NotifyStore

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=200)  # past the 90-day run retention, inside the 365-day audit retention
ANCIENT = NOW - timedelta(days=400)  # past both


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    if request.param == "sqlite":
        return History(f"sqlite:///{tmp_path / 'h.db'}")
    pg = request.getfixturevalue("pg")
    db: str = request.getfixturevalue("pg_db")
    h = History(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{db}")
    request.addfinalizer(h.close)
    return h


def run(h: History, job: str, at: datetime, status: str = "ok", *, trigger: str = "schedule",
        log: str = "log line\n", findings: int = 1) -> int:
    rid = h.create_run(NewRun(job, "debug.noop", None, at, trigger=trigger, status="running"), "o:1:1", "n")
    assert rid is not None
    res = Result(summary=status, metrics={"m": 1.0},
                 findings=[Finding("c", Severity.WARNING, f"s{i}", "msg") for i in range(findings)])
    h.finish_run(rid, status=status, result=res, finished_at=at + timedelta(seconds=5), started_at=at,
                 log_excerpt=log)
    return rid


def count(h: History, model: type[Any], *where: Any) -> int:
    with h.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_old_history_goes_and_what_readers_need_stays(history: History) -> None:
    h = history
    store = NotifyStore(h)
    day = timedelta(days=1)
    # "busy": old runs, then a recent one — the old ones go with their findings
    busy_old = [run(h, "busy", OLD + i * day) for i in range(3)]
    busy_new = run(h, "busy", NOW - day)
    # "quiet": ran long ago only — its latest successful/finished/scheduled run (ok) and its latest run
    # (a manual run that was skipped: kept only as "the latest run of its job") stay; the rest goes
    quiet_gone = run(h, "quiet", OLD - 2 * day)
    quiet_ok = run(h, "quiet", OLD - day)
    quiet_last = h.record_skip("quiet", "debug.noop", None, OLD, "blackout", trigger="manual", owner="o:1:1",
                               node="n")
    # a planned run still pending, created long ago, stays
    planned = h.create_run(NewRun("busy", "debug.noop", None, OLD - 5 * day, trigger="planned",
                                  status="pending", due_at=NOW + day), "o:1:1", "n")
    # emergency runs follow the audit retention
    emerg_kept = run(h, "busy", OLD + 10 * day, trigger="emergency")
    emerg_gone = run(h, "busy", ANCIENT, trigger="emergency")
    # the run that made a backup still in the catalog stays
    backup_run = run(h, "busy", OLD + 20 * day)
    with h.session() as s:
        s.add(BackupRow(id="b1", kind="postgres", target="db", database="app", run_id=backup_run, status="complete",
                        started_at=OLD, finished_at=OLD, size=1, raw_size=1, compression_ratio=1.0, storages=[],
                        encryption="none", verify_summary="", manifest={}))
        s.add(AuditRow(ts=OLD, actor="me", action="backup.restore", details={}))
        s.add(AuditRow(ts=ANCIENT, actor="me", action="emergency-run", details={}))
    store.add_event(ts=OLD, topic="run", state="problem", severity="critical", title="t", text="x", data={},
                    job="busy", check="run")
    store.update("open", "disk", "finding", problem=True, severity="critical", now=OLD)  # still open
    store.add_event(ts=OLD, topic="finding", state="problem", severity="critical", title="t", text="x", data={},
                    job="open", check="disk")
    sent = store.add_delivery("mail", [], {}, OLD, timedelta(minutes=1))
    assert store.mark_sent(sent, OLD, leased_until=OLD + timedelta(minutes=1))
    failing = store.add_delivery("mail", [], {}, OLD, timedelta(minutes=1))
    assert store.mark_failed(failing, "refused", NOW + day, leased_until=OLD + timedelta(minutes=1))
    before = {m: count(h, m) for m in (RunRow, FindingRow, MetricRow, NotifyEventRow, NotifyDeliveryRow, AuditRow)}

    cut = {"runs_before": NOW - timedelta(days=90), "audit_before": NOW - timedelta(days=365)}
    dry = prune_history(h, dry_run=True, **cut)
    assert (dry.runs, dry.findings, dry.notify_events, dry.notify_deliveries, dry.audit) == (5, 5, 1, 1, 1)
    assert before == {m: count(h, m) for m in before}  # a dry run deletes nothing
    assert h.runs_deleted_through() is None

    rep = prune_history(h, **cut)
    assert (rep.runs, rep.findings, rep.notify_events, rep.notify_deliveries, rep.audit) == (5, 5, 1, 1, 1)
    left = {r.id for r in h.runs(limit=1000)}
    gone = {*busy_old, quiet_gone, emerg_gone}
    assert not gone & left
    assert {busy_new, quiet_ok, quiet_last, planned, emerg_kept, backup_run} <= left
    assert count(h, FindingRow, FindingRow.run_id.in_(gone)) == 0
    # metric samples have their own retention: they stay, detached from the deleted runs
    assert count(h, MetricRow) == before[MetricRow]
    assert count(h, MetricRow, MetricRow.run_id.is_(None)) == 5
    # what status, the missed-run alarm and catch-up read is unchanged
    assert h.last_runs()["quiet"].id == quiet_last
    assert h.last_success("quiet").id == quiet_ok  # type: ignore[union-attr]
    assert h.last_scheduled()["quiet"] == OLD - day
    assert [e.job for e in store.events(limit=10)] == ["open"]  # the open problem's event stays
    assert [d.id for d in store.deliveries(limit=10)] == [failing]  # undelivered: kept
    assert [a.action for a in h.audit_entries()] == ["backup.restore"]
    assert count(h, BackupRow) == 1
    assert prune_history(h, **cut).runs == 0  # nothing left to do
    # readers of a window of runs learn where complete history begins: the newest end of a deleted run
    assert h.runs_deleted_through() == OLD + 2 * day + timedelta(seconds=5)
    older = run(h, "late", OLD - 50 * day)  # an older run deleted later never moves it back
    run(h, "late", NOW)
    assert prune_history(h, **cut).runs == 1 and h.get_run(older) is None
    assert h.runs_deleted_through() == OLD + 2 * day + timedelta(seconds=5)


def test_a_new_sqlite_history_shrinks_after_a_prune(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    h = History(f"sqlite:///{path}")
    for i in range(120):
        run(h, "big", OLD + timedelta(hours=i), log="a log line of some words\n" * 1200, findings=0)
    run(h, "big", NOW)
    rep = prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None)
    assert rep.runs == 120
    assert rep.file_bytes_before is not None and rep.file_bytes_before > 3_000_000
    assert path.stat().st_size < rep.file_bytes_before / 3, rep.to_dict()
    assert rep.free_pages == 0 and rep.vacuum and rep.vacuum.startswith("incremental")


def test_the_other_threads_of_a_pruning_process_write_between_its_steps(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon prunes in a thread while its loop, heartbeat and runs write to the same history: the free pages
    go back to the file system a step (a transaction) at a time, and the other threads write between two steps.
    The whole hand-back held the history: every write of the daemon waited for all of it (a first prune of a
    large history hands back hundreds of MB, a minute and more)."""
    monkeypatch.setattr(retention, "VACUUM_PAGES", 64)  # many small steps out of a small history
    path = tmp_path / "h.db"
    h = History(f"sqlite:///{path}")
    for i in range(120):
        run(h, "big", OLD + timedelta(hours=i), log="a log line of some words\n" * 1200, findings=0)
    run(h, "big", NOW)
    seen: list[int] = []  # the file's free pages after each write of the other thread
    done = threading.Event()

    def write() -> None:
        reader = sqlite3.connect(path)
        i = 0
        while not done.is_set():
            h.set_state("other", "k", i)
            i += 1
            seen.append(int(reader.execute("PRAGMA freelist_count").fetchone()[0]))
        reader.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rep = prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None)
    finally:
        done.set()
        writer.join()
    assert rep.runs == 120 and rep.free_pages == 0 and rep.vacuum and rep.vacuum.startswith("incremental")
    peak = seen.index(max(seen))
    # it wrote while the free pages went back: after at least two steps, before the last
    assert any(0 < n <= seen[peak] - 2 * 64 for n in seen[peak:]), seen


def test_an_older_sqlite_history_gets_the_indexes_and_vacuum_switches_it(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with sqlite3.connect(path) as conn:  # as an older upkeeper created it: no auto-vacuum
        conn.execute("PRAGMA journal_mode=WAL")
    h = History(f"sqlite:///{path}")
    h.close()
    with sqlite3.connect(path) as conn:  # and before the history_retention migration (and run_streaks after it)
        conn.execute("DROP INDEX ix_runs_finished")
        conn.execute("DROP INDEX ix_metrics_run")
        conn.execute("DROP TABLE run_streaks")
        conn.execute("DELETE FROM alembic_version WHERE version_num = 'run_streaks'")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    h = History(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"ix_runs_finished", "ix_metrics_run"} <= names and "run_streaks" in tables
    run(h, "j", OLD, log="a log line of some words\n" * 1200)
    run(h, "j", NOW)
    rep = prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None)
    assert rep.runs == 1 and rep.vacuum and rep.vacuum.startswith("none") and rep.free_pages
    rep = prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None, vacuum=True)
    assert rep.free_pages == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_history_prune_command(make_config: Any, cli: Any, tmp_path: Path) -> None:
    cfg = make_config({"history_retention": {"runs": "30d", "audit": None},
                       "jobs": {"j": {"task": "debug.noop", "schedule": "@daily"}}})
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    old = run(h, "j", NOW - timedelta(days=40))
    new = run(h, "j", NOW - timedelta(days=1))
    h.close()
    dry = cli(["--config", str(cfg), "history", "prune", "--dry-run", "--json"]).json()
    assert dry["would_delete"]["runs"] == 1 and dry["audit_before"] is None
    out = cli(["--config", str(cfg), "history", "prune"]).out
    assert "runs (with their log excerpts)" in out and "deleted" in out
    listed = cli(["--config", str(cfg), "history", "j", "--json"]).json()  # 'history JOB' still lists
    assert [r["id"] for r in listed] == [new] and old != new
    assert json.loads(cli(["--config", str(cfg), "history", "list", "--json"]).out)[0]["id"] == new


def occurrences(h: History, job: str, *runs: tuple[datetime, str]) -> None:
    """Finished runs of ``job`` in one INSERT (a run claimed in a final state finishes when scheduled)."""
    assert len(h.claim([NewRun(job, "debug.noop", None, at, status=st) for at, st in runs], "o:1:1", "n")) == len(runs)


def test_failure_streaks_stay_exact_when_retention_deletes_their_runs(history: History) -> None:
    h = history
    day = timedelta(days=1)
    # "streak": last success 130 days ago, then a failure every 10 days for 120 days (12 failures, 3 past 90 days)
    occurrences(h, "streak", (NOW - 130 * day, "ok"), *((NOW - (120 - 10 * i) * day, "fail") for i in range(12)))
    # "never": no success at all, failures old and new; "healed": old failures, a success, then one failure
    occurrences(h, "never", (NOW - 200 * day, "error"), (NOW - 150 * day, "interrupted"), (NOW - day, "fail"))
    occurrences(h, "healed", (NOW - 150 * day, "fail"), (NOW - 100 * day, "fail"), (NOW - 10 * day, "warn"),
                (NOW - day, "fail"))
    # "busy": more failures than one page of history (the old count stopped at 100), none of them old
    occurrences(h, "busy", *((NOW - timedelta(minutes=i + 1), "fail") for i in range(130)))
    jobs = ["streak", "never", "healed", "busy", "idle"]
    want = {"streak": (12, NOW - 120 * day, NOW - 130 * day), "never": (3, NOW - 200 * day, None),
            "healed": (1, NOW - day, NOW - 10 * day), "busy": (130, NOW - timedelta(minutes=130), None),
            "idle": (0, None, None)}
    got = {j: (s.failures, s.since, s.last_success) for j, s in h.failure_streaks(jobs).items()}
    assert got == want

    dry = prune_history(h, runs_before=NOW - 90 * day, audit_before=None, dry_run=True)
    rep = prune_history(h, runs_before=NOW - 90 * day, audit_before=None)
    # deleted: 3 of "streak" (its success stays), 2 of "never", 2 of "healed" (before its success: no streak)
    assert (rep.runs, rep.streak_runs) == (7, 5) and (dry.runs, dry.streak_runs) == (7, 5)
    got = {j: (s.failures, s.since, s.last_success) for j, s in h.failure_streaks(jobs).items()}
    assert got == want
    assert h.consecutive_failures("streak") == 12 and h.failure_streaks(["streak"])["streak"].pruned == 3
    # a later prune adds to the count; a shorter retention too
    rep = prune_history(h, runs_before=NOW - 5 * day, audit_before=None)
    # "streak": its failures 90..20 days ago (the one 10 days ago is its latest run); the others' are recent
    assert rep.streak_runs == 8 and h.failure_streaks(["streak"])["streak"].pruned == 11
    assert {j: (s.failures, s.since) for j, s in h.failure_streaks(jobs).items()} == {
        j: w[:2] for j, w in want.items()}
    # a success ends the streak (the carried count is then ignored), a new failure starts a new one
    occurrences(h, "streak", (NOW - timedelta(hours=2), "ok"), (NOW - timedelta(hours=1), "fail"))
    s = h.failure_streaks(["streak"])["streak"]
    assert (s.failures, s.since, s.last_success) == (1, NOW - timedelta(hours=1), NOW - timedelta(hours=2))
    assert prune_history(h, runs_before=NOW - 90 * day, audit_before=None).streak_runs == 0
    assert h.consecutive_failures("streak") == 1


def test_status_counts_the_failures_retention_deleted(make_config: Any, cli: Any, tmp_path: Path) -> None:
    cfg = make_config({"jobs": {"j": {"task": "debug.noop", "schedule": "@daily"}}})
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    day = timedelta(days=1)
    occurrences(h, "j", (NOW - 121 * day, "ok"), *((NOW - i * day, "fail") for i in range(120, 0, -1)))
    h.close()
    out = cli(["--config", str(cfg), "history", "prune", "--dry-run"]).out
    assert "31 of these runs failed after their job's latest success: they would stay counted" in out
    assert cli(["--config", str(cfg), "history", "prune", "--json"]).json()["streak_runs"] == 31
    job = cli(["--config", str(cfg), "status", "--json"]).json()["jobs"][0]
    assert job["consecutive_failures"] == 120
    assert job["failing_since"] == (NOW - 120 * day).isoformat()
    assert job["last_success"] == (NOW - 121 * day).isoformat()
    table = " ".join(cli(["--config", str(cfg), "status"]).out.split())
    assert re.search(r"│ 120 \(since 1[12]\dd [^)]*ago\) │", table), table


def test_a_run_stopped_on_request_is_no_failure_of_its_job(history: History) -> None:
    """An ``interrupted`` run with ``details.stopped`` (systemctl stop, Ctrl-C of 'upkeeper run') neither counts in
    the job's failure streak nor ends it — nor does retention carry it as one; an interrupted run without it (its
    worker killed alone, its owner dead) is a failure."""
    h = history
    day = timedelta(days=1)
    stop = {"stopped": True}
    assert len(h.claim([
        NewRun("a", "debug.noop", None, NOW - 100 * day, status="ok"),
        NewRun("a", "debug.noop", None, NOW - 99 * day, status="interrupted", details=stop),  # pruned below
        NewRun("a", "debug.noop", None, NOW - 98 * day, status="fail"),
        NewRun("a", "debug.noop", None, NOW - 3 * day, status="interrupted", details=stop),
        NewRun("a", "debug.noop", None, NOW - 2 * day, status="interrupted"),
        NewRun("a", "debug.noop", None, NOW - day, status="interrupted", details=stop),
        NewRun("b", "debug.noop", None, NOW - 2 * day, status="interrupted", details=stop),
    ], "o:1:1", "n")) == 7
    got = {j: (s.failures, s.since) for j, s in h.failure_streaks(["a", "b"]).items()}
    assert got == {"a": (2, NOW - 98 * day), "b": (0, None)}
    rep = prune_history(h, runs_before=NOW - 50 * day, audit_before=None)
    assert (rep.runs, rep.streak_runs) == (2, 1)  # the stopped run deleted, not counted (the success is kept)
    assert {j: (s.failures, s.since) for j, s in h.failure_streaks(["a", "b"]).items()} == got


def test_status_and_history_show_a_stopped_run_as_stopped_not_failing(
        make_config: Any, cli: Any, tmp_path: Path) -> None:
    cfg = make_config({"jobs": {"j": {"task": "debug.noop", "schedule": "@daily"}}})
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    day = timedelta(days=1)
    h.claim([NewRun("j", "debug.noop", None, NOW - 2 * day, status="ok"),
             NewRun("j", "debug.noop", None, NOW - day, status="interrupted",
                    summary="interrupted: upkeeper was asked to stop", details={"stopped": True})], "o:1:1", "n")
    h.close()
    job = cli(["--config", str(cfg), "status", "--json"]).json()["jobs"][0]
    assert job["consecutive_failures"] == 0 and job["failing_since"] is None
    assert (job["last_run"]["status"], job["last_run"]["stopped"]) == ("interrupted", True)
    table = cli(["--config", str(cfg), "status"]).out
    assert "stopped" in table and "interrupted │" not in table, table
    runs = cli(["--config", str(cfg), "history", "j", "--json"]).json()
    assert [(r["status"], r["stopped"]) for r in runs] == [("interrupted", True), ("ok", False)]
    assert "│ stopped" in cli(["--config", str(cfg), "history", "j"]).out


def test_daemon_rows_of_long_ended_daemons_go_unless_catch_up_or_status_reads_them(history: History) -> None:
    """Every daemon start adds a row to ``daemons`` (its instance name has its pid): a daemon restarted by every
    deploy, or by a restart loop, grew the table forever, and ``upkeeper status`` listed every one of them.  A prune
    deletes the rows of daemons that ended before the run retention's cutoff, except those catch-up still reads (an
    earlier daemon serving a job past that job's last recorded occurrence: a schedule changed with a restart is no
    downtime) and each node's newest daemon (``status`` says when it last ran)."""
    h = history
    cutoff = NOW - timedelta(days=90)
    day = timedelta(days=1)

    def daemon(name: str, node: str, start: datetime, end: datetime, jobs: list[str] | None, *,
               stopped: bool = True) -> None:
        h.daemon_heartbeat(name, node, 1, start, len(jobs or []), "1", job_names=jobs, at=end)
        if stopped:
            h.daemon_stopped(name, end)

    run(h, "nightly", OLD - 10 * day)  # its last recorded occurrence, long ago (its schedule changed since)
    run(h, "ping", NOW - day)
    for i in range(20):  # a restart loop, 200 days ago: 20 rows, none needed
        daemon(f"a:{i}:1", "a", OLD + i * timedelta(minutes=1), OLD + i * timedelta(minutes=1, seconds=30), ["ping"])
    daemon("a:dead:1", "a", OLD + day, OLD + 2 * day, ["ping"], stopped=False)  # died: ended at its heartbeat
    daemon("a:old-version:1", "a", OLD + 3 * day, OLD + 4 * day, None)  # recorded no job names
    # served 'nightly' past its last occurrence: catch-up reads it (the occurrences it ran through were its)
    daemon("a:served:1", "a", OLD - 5 * day, OLD - 4 * day, ["nightly", "ping"])
    daemon("b:last:1", "b", OLD + 5 * day, OLD + 6 * day, ["ping"])  # node b's newest daemon: kept
    daemon("a:recent:1", "a", cutoff + day, NOW - day, ["ping"])  # ended after the cutoff: kept
    daemon("a:alive:1", "a", NOW - day, NOW, ["ping"], stopped=False)
    assert len(h.daemons()) == 26
    before = h.daemon_lifetimes(exclude="x")

    dry = prune_history(h, runs_before=cutoff, audit_before=None, dry_run=True)
    assert dry.daemons == 22 and len(h.daemons()) == 26
    rep = prune_history(h, runs_before=cutoff, audit_before=None)
    assert rep.daemons == 22 and rep.to_dict()["deleted"]["daemons"] == 22
    assert {d.instance for d in h.daemons()} == {"a:served:1", "b:last:1", "a:recent:1", "a:alive:1"}
    after = h.daemon_lifetimes(exclude="x")
    assert {lt for lt in before if "nightly" in lt[2]} <= set(after)  # what catch-up reads for 'nightly' stays
    assert prune_history(h, runs_before=cutoff, audit_before=None).daemons == 0


@pytest.mark.parametrize("damage", ["not a time", 42, None])
def test_a_damaged_retention_marker_is_no_claim_of_a_complete_history(history: History, damage: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A marker edited by hand or restored badly neither crashes its readers and the next prune, nor reads as
    "never deleted anything": it stands for its last write (every run deleted by then had finished) until the
    next prune repairs it."""
    h = history
    run(h, "old", OLD)
    run(h, "old", NOW)  # the newest run of a job stays
    assert prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None).runs == 1
    h.set_state(*RETENTION_STATE, damage)
    written = datetime.now(UTC)
    caplog.set_level(logging.WARNING)
    d = h.deleted_runs()
    assert d is not None and not d.exact
    assert OLD + timedelta(seconds=5) < d.through <= written
    assert h.runs_deleted_through() == d.through
    h.deleted_runs()
    assert len([r for r in caplog.records if "retention marker" in r.getMessage()]) == 1  # logged once
    # the next prune repairs it, never before the damaged marker's last write
    run(h, "b", OLD + timedelta(days=1))
    run(h, "b", NOW)
    assert prune_history(h, runs_before=NOW - timedelta(days=90), audit_before=None).runs == 1
    assert h.deleted_runs() == DeletedRuns(d.through)
    assert "repaired" in caplog.text
    # a later deletion moves it on as before
    later = datetime.now(UTC) + timedelta(hours=1)
    run(h, "c", later)
    run(h, "c", later + timedelta(hours=1))
    assert prune_history(h, runs_before=later + timedelta(minutes=30), audit_before=None).runs == 1
    assert h.deleted_runs() == DeletedRuns(later + timedelta(seconds=5))
