"""security.audit over real services through the CLI, and the compliance evidence report from history."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from upkeeper.core.history import RETENTION_STATE, History, NewRun, history_url
from upkeeper.core.models import StateRow
from upkeeper.core.retention import prune_history
from upkeeper.core.task import Finding, Result, Severity
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer
from upkeeper.tasks.security.compliance import period_bounds


def test_audit_runs_every_family_and_grades(cli, make_config, pg: PostgresCluster, redis_server: RedisServer,
                                            nginx: NginxServer, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    t = datetime.now(UTC) - timedelta(hours=1)  # the first run reads the last day of the log
    log.write_text("".join(f"{t:%b} {t.day:>2} {t:%H:%M}:{i:02d} web1 sshd[9]: Failed password for root from "
                           f"203.0.113.9 port {i} ssh2\n" for i in range(12)))
    cfg = make_config({
        "targets": {"db": pg.target(), "cache": redis_server.target(), "site": nginx.target(),
                    "gone": {"kind": "postgres", "host": "127.0.0.1", "port": free_port(), "user": "postgres",
                             "connect_timeout": 2}},
        "jobs": {"audit": {"task": "security.audit", "options": {
            "logins": {"source": "file", "auth_log": str(log)},
            "exposed_files": {"timeout": 5}, "skip": ["updates"]}}},
    })
    res = cli(["--config", cfg, "run", "audit", "--json"])
    run = res.json()[0]
    assert run["status"] == "fail", run["summary"]  # e.g. no firewall here, loopback trust, redis nopass
    score = next(f for f in run["findings"] if f["check"] == "security.audit.score")
    assert run["metrics"]["score"] == score["value"]
    assert re.match(r"score [\d.]+/100 \([A-F][+-]?\)", run["summary"])
    families = score["data"]["families"]
    assert {"ssh", "firewall", "processes", "permissions", "logins", "exposed_files", "headers", "cors", "nginx",
            "postgres", "redis"} <= set(families)
    assert "updates" in score["data"]["skipped"]
    checks = {f["check"] for f in run["findings"]}
    assert "security.redis.no_password" in checks
    assert "security.logins.bruteforce" in checks
    assert "security.nginx.server_tokens" in checks
    # the unreachable server is one finding; every other family still ran
    failed = [f for f in run["findings"] if f["check"] == "security.postgres.check_failed"]
    assert len(failed) == 1 and failed[0]["subject"] == "gone"
    assert any(f["check"] == "security.postgres.hba_trust" and f["subject"].startswith("db ")
               for f in run["findings"])
    assert families["postgres"]["warning"] >= 2


def _run(h: History, job: str, task: str, when: datetime, status: str, findings: list[Finding] | None = None,
         metrics: dict[str, float] | None = None, trigger: str = "schedule") -> None:
    rid = h.create_run(NewRun(job=job, task=task, target="db", scheduled_for=when, due_at=when, trigger=trigger),
                       "test", "node1")
    assert rid is not None
    h.finish_run(rid, status=status, result=Result(summary=f"{job} {status}", findings=findings or [],
                                                   metrics=metrics or {}),
                 finished_at=when + timedelta(minutes=2), started_at=when)


def test_compliance_report_from_history(cli, make_config, pg: PostgresCluster, tmp_path: Path) -> None:
    out_dir = tmp_path / "evidence"
    cfg = make_config({
        "targets": {"db": pg.target()},
        "windows": {"nightly": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": "02:00-05:00"}},
        "jobs": {
            # stand-ins with the backup category until postgres.backup/backup.verify land: compliance reads
            # categories, statuses and metrics from history, not the tasks' internals
            "db-backup": {"task": "postgres.ping", "target": "db", "category": "backup", "schedule": "0 0 * * *"},
            "backup-verify": {"task": "postgres.ping", "target": "db", "category": "backup"},
            "vacuum": {"task": "postgres.vacuum", "target": "db", "schedule": "0 3 * * *", "window": "nightly"},
            "deps": {"task": "security.dependencies"},
            "compliance": {"task": "security.compliance", "options": {"output_dir": str(out_dir),
                                                                      "organization": "Shop & Co <Ltd>"}},
        }})
    start, end = period_bounds("previous_month", datetime.now(UTC))
    h = History(history_url(str(tmp_path / "history.db")))
    for day in range(1, 6):
        _run(h, "db-backup", "postgres.ping", start + timedelta(days=day), "ok" if day != 3 else "fail",
             metrics={"db.app.size_bytes": 5e6 + day})
    _run(h, "backup-verify", "postgres.ping", start + timedelta(days=6), "ok", metrics={"restore_seconds": 42.5})
    x = Finding("postgres.dead_tuples", Severity.WARNING, "public.bookings", "bloat")
    y = Finding("postgres.unused_index", Severity.WARNING, "idx_old", "unused")
    _run(h, "vacuum", "postgres.vacuum", start + timedelta(days=1, hours=3), "warn", [x])
    _run(h, "vacuum", "postgres.vacuum", start + timedelta(days=2, hours=3), "warn", [x, y])
    _run(h, "vacuum", "postgres.vacuum", start + timedelta(days=3, hours=3), "warn", [y], trigger="deferred")
    _run(h, "vacuum", "postgres.vacuum", start + timedelta(days=4, hours=12), "ok")  # outside the window
    first = start + timedelta(days=2)
    h.set_state("deps", "vulns", {
        "npm:lodash:GHSA-jf85": {"first_seen": first.isoformat(), "severity": "critical", "package": "lodash",
                                 "fixed_at": (first + timedelta(hours=30)).isoformat()},
        "pypi:requests:PYSEC-2018-28": {"first_seen": first.isoformat(), "severity": "high", "package": "requests",
                                        "fixed_at": None}})
    h.close()

    res = cli(["--config", cfg, "run", "compliance", "--json"])
    run = res.json()[0]
    assert run["status"] == "warn", run["summary"]
    paths = {a["format"]: Path(a["path"]) for a in run["artifacts"]}
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    assert paths["markdown"].parent == out_dir and paths["markdown"].name == f"compliance-{start:%Y-%m}.md"
    assert "4 successful backup run(s), 1 failed; 1 successful restore verification(s)" in md
    assert "| backup-verify |" in md and "| 42.5 |" in md
    assert "| deps | 0 | 1 | 0 | 1 | 0.0% |" in md  # lodash fixed after 30 h (SLA 24 h), requests still open
    assert "| vacuum | 4 | 2 | 2 | 0 |" in md  # opened x then y, closed x then y: nothing open at the end
    assert "deferred to their maintenance window" in md
    assert "| vacuum | nightly | 4 | 4 | 1 | 0 | 0 | 3 | 1 | 0 |" in md  # 3 runs inside 02:00-05:00, 1 outside
    assert "superusers: postgres" in md
    assert "Shop &amp; Co &lt;Ltd&gt;" in html and "<table>" in html
    checks = {f["check"] for f in run["findings"]}
    assert {"security.compliance.backup_failures", "security.compliance.patch_sla", "security.compliance.report",
            "security.compliance.window_not_kept"} <= checks
    late = next(f for f in run["findings"] if f["check"] == "security.compliance.window_not_kept")
    assert late["value"] == 1 and f"{start + timedelta(days=4, hours=12):%Y-%m-%d} 12:00" in late["message"]


def test_compliance_findings_of_a_past_period_start_from_the_run_before_it(cli, make_config, tmp_path: Path) -> None:
    """The findings open when the period starts are those of the job's newest run *before* the period, not of its
    newest run overall (the job kept running after the period: a previous month's report)."""
    out_dir = tmp_path / "evidence"
    cfg = make_config({"jobs": {
        "vacuum": {"task": "debug.noop", "category": "maintenance", "schedule": "0 3 * * *"},
        "db-backup": {"task": "debug.noop", "category": "backup", "schedule": "0 0 * * *"},
        "compliance": {"task": "security.compliance", "options": {"output_dir": str(out_dir),
                                                                  "access_review": False}}}})
    start, end = period_bounds("previous_month", datetime.now(UTC))
    x = Finding("postgres.dead_tuples", Severity.WARNING, "public.bookings", "bloat")
    y = Finding("postgres.unused_index", Severity.WARNING, "idx_old", "unused")
    h = History(history_url(str(tmp_path / "history.db")))
    _run(h, "vacuum", "debug.noop", start - timedelta(days=2), "warn", [y])  # older: not the baseline
    _run(h, "vacuum", "debug.noop", start - timedelta(days=1), "warn", [x])  # open when the period starts
    _run(h, "vacuum", "debug.noop", start + timedelta(days=1), "warn", [x])
    _run(h, "vacuum", "debug.noop", start + timedelta(days=2), "warn", [x, y])  # y opened
    _run(h, "vacuum", "debug.noop", end + timedelta(hours=1), "ok")  # after the period: neither baseline nor counted
    _run(h, "db-backup", "debug.noop", start + timedelta(days=1), "ok")
    _run(h, "db-backup", "debug.noop", end + timedelta(hours=1), "ok")
    h.close()

    def report() -> tuple[str, set[str], list[dict[str, str]]]:
        run = cli(["--config", cfg, "run", "compliance", "--json"]).json()[0]
        md = Path(next(a["path"] for a in run["artifacts"] if a["format"] == "markdown")).read_text()
        return md, {f["check"] for f in run["findings"]}, run["findings"]

    md, checks, _ = report()
    assert "| vacuum | 2 | 1 | 0 | 2 |" in md, md  # 2 runs in the period, y opened, none closed, x and y open
    assert "1 finding(s) opened and 0 closed in the period; 2 open at its end" in md
    assert "Incomplete" not in md and "security.compliance.history_incomplete" not in checks

    # a shorter retention (an earlier config, another node's) deleted the period's first runs: the report says
    # so instead of taking them for runs that never happened
    h = History(history_url(str(tmp_path / "history.db")))
    assert prune_history(h, runs_before=start + timedelta(days=1, hours=1), audit_before=None).runs == 4
    h.close()
    md, checks, findings = report()
    deleted = f"{start + timedelta(days=1, minutes=2):%Y-%m-%d %H:%M} UTC"
    assert "security.compliance.history_incomplete" in checks
    gap = next(f for f in findings if f["check"] == "security.compliance.history_incomplete")
    assert f"deleted runs that finished up to {deleted}" in gap["message"]
    assert "history_retention -> runs: 62d" in gap["remediation"]
    assert f"Incomplete: history retention deleted runs that finished up to {deleted}" in md
    missing = next(f for f in findings if f["check"] == "security.compliance.backup_missing")
    assert missing["message"] == f"no backup run recorded after {deleted} (runs before were deleted by history retention)"
    assert "no backup run in the period" not in md

    # the marker of what retention deleted damaged (a hand edit, a bad restore, the row's time left as the prune
    # wrote it): the report neither fails nor claims the period complete; it says runs up to the marker's last
    # write may be missing
    hist = History(history_url(str(tmp_path / "history.db")))
    hist.set_state(*RETENTION_STATE, "garbage")
    written = start + timedelta(days=1, minutes=2)
    with hist.session() as s:
        s.execute(update(StateRow).where(StateRow.job == RETENTION_STATE[0], StateRow.key == RETENTION_STATE[1])
                  .values(updated_at=written))
    hist.close()
    md, checks, findings = report()
    gap = next(f for f in findings if f["check"] == "security.compliance.history_incomplete")
    assert gap["message"] == (f"the period starts {start:%Y-%m-%d} but history retention deleted runs and its record "
                              f"of up to when is damaged: runs that finished up to {deleted} may be missing from this "
                              "report"), gap["message"]
    assert gap["data"]["marker_damaged"] is True
    assert f"; possibly incomplete: runs that finished up to {deleted} may have been deleted" in md
    assert "Possibly incomplete: history retention deleted runs and its record of up to when is damaged" in md
    assert "Incomplete: history retention deleted runs that finished" not in md  # no exact claim either
    missing = next(f for f in findings if f["check"] == "security.compliance.backup_missing")
    assert missing["message"] == (f"no backup run recorded after {deleted} (runs before may have been deleted by "
                                  "history retention: its record of what it deleted is damaged)"), missing["message"]
    # a marker damaged just now: every run of the period may be gone, and the report says so (no crash)
    hist = History(history_url(str(tmp_path / "history.db")))
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    hist.set_state(*RETENTION_STATE, 42)
    after = datetime.now(UTC)
    hist.close()
    md, checks, findings = report()
    gap = next(f for f in findings if f["check"] == "security.compliance.history_incomplete")
    up_to = re.search(r"finished up to (\d{4}-\d\d-\d\d \d\d:\d\d) UTC may be missing", gap["message"])
    assert up_to, gap["message"]
    assert before <= datetime.strptime(up_to[1], "%Y-%m-%d %H:%M").replace(tzinfo=UTC) <= after
    assert "possibly incomplete" in md


def test_a_relative_output_dir_is_relative_to_the_config_file(cli, make_config, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch) -> None:
    """A relative output_dir put the report under wherever the run started (cron's $HOME, systemd's /): it is
    beside the config file now, as the default 'reports' and a log task's report_dir are."""
    cfg = make_config({"jobs": {"compliance": {"task": "security.compliance", "options": {"output_dir": "evidence"}}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = cli(["--config", str(cfg), "run", "compliance", "--json"]).json()[0]
    paths = [Path(a["path"]) for a in run["artifacts"]]
    assert paths and all(p.parent == tmp_path / "evidence" and p.is_file() for p in paths), paths
    assert not (elsewhere / "evidence").exists()
