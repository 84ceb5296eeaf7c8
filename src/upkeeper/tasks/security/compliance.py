"""security.compliance: the monthly evidence report (Markdown and HTML) for PCI-DSS, GDPR and SOC 2 reviews.

It reads the run history — nothing here is taken on trust from the jobs' own claims:

* **Backups** — runs of backup-category jobs in the period (taken, failed), and verification
  runs (tasks named ``*.verify``, or backup-category runs that record a ``restore`` metric) with
  their measured restore times (that metric, else the run's duration).
* **Patch SLA** — the ledgers kept by ``security.dependencies``, ``security.updates`` and
  ``security.audit`` jobs (vulnerable dependencies, pending OS security updates): fixed in time,
  fixed late, open and overdue.
* **Findings opened and closed** — per job, a warning/critical finding (check + subject)
  that appears in a run is *opened*, one that disappears from the next run is *closed*.
* **Database access review** — every PostgreSQL target's roles, read live: superusers,
  CREATEROLE/CREATEDB/REPLICATION/BYPASSRLS, memberships, expiry.
* **Maintenance windows** — maintenance-category runs in the period by trigger and status
  (deferred to a window, skipped, failed), and for jobs bound to a window (``window: NAME``)
  whether each run started inside it, checked with the window engine (``window_open_at``).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import format_duration
from upkeeper.core.artifacts import REPORT_MODE, atomic_write_bytes, make_report_dir
from upkeeper.core.history import History, history_url, stopped_on_request
from upkeeper.core.task import REGISTRY, Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError, UnknownTaskError
from upkeeper.notify.policy import window_open_at
from upkeeper.tasks.security.postgres import access_review
from upkeeper.tasks.security.report import Document, Section, Table, to_html, to_markdown
from upkeeper.tasks.security.sla import SlaOptions
from upkeeper.tasks.security.sla import compliance as sla_compliance

MAX_RUNS = 5000
#: how far back each period can reach from the day the report is made (the previous month, made on the last
#: day of a 31-day month that follows a 31-day month: 62 days): history retention must keep runs this long
LOOKBACK = {"previous_month": timedelta(days=62), "current_month": timedelta(days=31),
            "last_30_days": timedelta(days=30)}


class ComplianceOptions(TaskOptions):
    period: Literal["previous_month", "last_30_days", "current_month"] = Field(
        "previous_month", description="the period reported on (run it on the 1st for the month just ended); it reaches "
        "back up to 62 days (previous_month), 31 (current_month) or 30 (last_30_days), and history_retention -> runs "
        "must keep runs that long (config check error otherwise). Source: upkeeper default")
    output_dir: str | None = Field(
        None, description="where the report files go; a relative path is relative to the config file's directory "
                "(default: 'reports' beside the config file). Source: upkeeper (not set by default)")
    organization: str = Field("", description="name printed on the report. "
            "Source: upkeeper (not set by default)")
    frameworks: list[str] = Field(["PCI-DSS", "GDPR", "SOC 2"], description="frameworks the evidence is for. "
            "Source: upkeeper default (the audits upkeeper's design names)")
    access_review: bool = Field(True, description="list the roles of every PostgreSQL target (live). "
            "Source: upkeeper default")


def retention_problem(period: str, runs: timedelta | None) -> tuple[str, str] | None:
    """``(message, hint)`` when ``history_retention -> runs`` deletes runs the period can reach back to."""
    need = LOOKBACK[period]
    if runs is None or runs >= need:
        return None
    return (f"period {period!r} reads up to {need.days} days of runs back, but history_retention -> runs "
            f"keeps them {format_duration(runs)}: the report would take the deleted runs for runs that never "
            "happened (backups missing, findings opened)",
            f"Try: history_retention -> runs: {need.days}d (or longer; null keeps runs forever)"
            + "".join(f", or period: {p} (needs {d.days} days)" for p, d in LOOKBACK.items() if d <= runs))


def period_bounds(kind: str, now: datetime) -> tuple[datetime, datetime]:
    now = now.astimezone(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if kind == "current_month":
        return first, now
    if kind == "last_30_days":
        return now - timedelta(days=30), now
    prev_last = first - timedelta(days=1)
    start = prev_last.replace(day=1)
    return start, first


def open_history(ctx: TaskContext) -> History:
    if ctx.config is None:
        raise TaskError("security.compliance needs the configuration (history location)")
    base = ctx.config.source.parent if ctx.config.source else None
    return History(history_url(ctx.config.history, base), migrate=False)


def _category(ctx: TaskContext, job: str) -> str:
    assert ctx.config is not None
    jc = ctx.config.jobs.get(job)
    if jc is None:
        return ""
    if jc.category:
        return jc.category
    try:
        return REGISTRY.get(jc.task).category
    except UnknownTaskError:
        return ""


def _runs(hist: History, job: str, start: datetime, end: datetime) -> list[Any]:
    """The job's runs scheduled in [start, end): bounded on both sides in the query, so the runs after a past
    period never take the places of its own."""
    return hist.runs(job=job, since=start, before=end, limit=MAX_RUNS)


def _pruned_note(pruned: datetime | None, exact: bool = True) -> list[str]:
    """The paragraph a section reading runs opens with when retention deleted some of the period's (``exact``
    False: its record of up to when is damaged, ``pruned`` is the latest that can be)."""
    if pruned is None:
        return []
    if not exact:
        return [f"Possibly incomplete: history retention deleted runs and its record of up to when is damaged: runs "
                f"that finished up to {pruned:%Y-%m-%d %H:%M} UTC may be missing; the figures below count only the "
                "runs recorded after that."]
    return [f"Incomplete: history retention deleted runs that finished up to {pruned:%Y-%m-%d %H:%M} UTC, inside "
            f"this period; the figures below count only the runs recorded after that."]


def backups_section(ctx: TaskContext, hist: History, start: datetime, end: datetime,
                    pruned: datetime | None = None, exact: bool = True) -> tuple[Section, list[Finding]]:
    """``pruned``: the end of the newest run retention deleted, when inside the period (its runs before then
    may be gone: never reported as "no run")."""
    assert ctx.config is not None
    findings: list[Finding] = []
    since = (f" after {pruned:%Y-%m-%d %H:%M} UTC (runs before "
             + ("were deleted by history retention)" if exact else
                "may have been deleted by history retention: its record of what it deleted is damaged)")
             if pruned else "")
    whole_period_gone = pruned is not None and pruned >= end
    rows, verify_rows = [], []
    taken = failed = verified = 0
    for job, jc in ctx.config.jobs.items():
        if _category(ctx, job) != "backup" and not jc.task.endswith(".verify"):
            continue
        runs = _runs(hist, job, start, end)
        st = Counter(r.status for r in runs)
        is_verify = jc.task.endswith(".verify") or any("restore" in k for r in runs for k in (r.metrics or {}))
        if is_verify:
            for r in runs:
                restore = next((v for k, v in (r.metrics or {}).items() if "restore" in k and isinstance(v, int | float)),
                               r.duration)
                verify_rows.append([job, r.scheduled_for.strftime("%Y-%m-%d %H:%M"), r.status, restore, r.summary[:120]])
                verified += r.status in ("ok", "warn")
            continue
        ok = st.get("ok", 0) + st.get("warn", 0)
        # a run stopped with upkeeper (systemctl stop) is no failed backup
        bad = sum(1 for r in runs if r.status in ("fail", "error", "interrupted")
                  and not stopped_on_request(r.status, r.details))
        taken += ok
        failed += bad
        sizes = [v for r in runs for k, v in (r.metrics or {}).items() if k.endswith("size_bytes")]
        last_ok = max((r.finished_at for r in runs if r.status in ("ok", "warn") and r.finished_at), default=None)
        rows.append([job, jc.target or "—", len(runs), ok, bad, st.get("skipped", 0),
                     last_ok.strftime("%Y-%m-%d %H:%M") if last_ok else None,
                     f"{max(sizes) / 1e6:.1f} MB" if sizes else None])
        if bad:
            findings.append(Finding("security.compliance.backup_failures", Severity.WARNING, job,
                                    f"{bad} failed backup run(s) in the period", "see 'upkeeper history " + job + "'"))
        if not runs and not whole_period_gone:
            findings.append(Finding("security.compliance.backup_missing", Severity.WARNING, job,
                                    "no backup run " + (f"recorded{since}" if pruned else "in the period"),
                                    "check the job's schedule and the daemon"))
    sec = Section("Backups taken and verified",
                  [*_pruned_note(pruned, exact),
                   f"{taken} successful backup run(s), {failed} failed; {verified} successful restore "
                   "verification(s). Restore time is the verification's measured restore (seconds)."])
    sec.tables.append(Table(["job", "target", "runs", "ok", "failed", "skipped", "last success", "largest"], rows))
    if verify_rows:
        sec.tables.append(Table(["verification job", "when (UTC)", "status", "restore time (s)", "summary"],
                                verify_rows))
    else:
        sec.paragraphs.append("No restore verification " + (f"recorded{since}." if pruned else "ran in the period."))
        if rows and not whole_period_gone:
            findings.append(Finding("security.compliance.no_restore_test", Severity.WARNING, "backups",
                                    "backups were taken but none was test-restored "
                                    + (f"in the period{since}" if pruned else "in the period"),
                                    "schedule backup.verify (weekly)"))
    sec.verdict = "attention" if findings else ("ok" if rows else None)
    if not rows:
        sec.paragraphs.append("No backup job is configured.")
    return sec, findings


def patch_section(ctx: TaskContext, hist: History, start: datetime, end: datetime) -> tuple[Section, list[Finding]]:
    assert ctx.config is not None
    findings: list[Finding] = []
    summary_rows, detail_rows = [], []
    for job, jc in ctx.config.jobs.items():
        if jc.task not in ("security.dependencies", "security.audit", "security.updates"):
            continue
        raw_sla = (jc.options.get("sla") if jc.task in ("security.dependencies", "security.updates")
                   else (jc.options.get("dependencies") or {}).get("sla")) or {}
        sla = SlaOptions.model_validate(raw_sla)
        ledger = hist.get_state(job, "vulns", {}) or {}
        c = sla_compliance(ledger, sla, start, end)
        summary_rows.append([job, c["fixed_in_time"], c["fixed_late"], c["open_within_sla"], c["open_overdue"],
                             f"{c['compliance_pct']}%"])
        detail_rows += [[job, r["package"], r["severity"], r["first_seen"][:16], (r["due"] or "—")[:16],
                         (r["fixed_at"] or "—")[:16], r["status"]] for r in c["rows"]]
        if c["fixed_late"] or c["open_overdue"]:
            findings.append(Finding("security.compliance.patch_sla", Severity.WARNING, job,
                                    f"patch SLA missed: {c['fixed_late']} fixed late, {c['open_overdue']} open and "
                                    "overdue", "upgrade the listed packages"))
    sec = Section("Patch-SLA compliance", [
        "SLA: critical 24 h, high 72 h, medium 1 week unless a job configures otherwise; first sighting to fix."])
    if summary_rows:
        sec.tables.append(Table(["job", "fixed in time", "fixed late", "open within SLA", "open overdue",
                                 "compliance"], summary_rows))
        if detail_rows:
            sec.tables.append(Table(["job", "package", "severity", "first seen", "due", "fixed", "status"],
                                    detail_rows[:500]))
    else:
        sec.paragraphs.append("No dependency audit job is configured (security.dependencies or security.audit).")
    sec.verdict = "attention" if findings else ("ok" if summary_rows else None)
    return sec, findings


def findings_section(ctx: TaskContext, hist: History, start: datetime, end: datetime,
                     pruned: datetime | None = None, exact: bool = True) -> Section:
    assert ctx.config is not None
    rows = []
    totals = Counter[str]()
    for job in ctx.config.jobs:
        # what was open when the period started: the newest run scheduled before it (not the newest overall:
        # a past period's job kept running after it)
        before = hist.runs(job=job, before=start, limit=1, statuses=["ok", "warn", "fail", "error"])
        runs = sorted([r for r in _runs(hist, job, start, end) if r.status in ("ok", "warn", "fail", "error")],
                      key=lambda r: r.scheduled_for)
        if not runs:
            continue
        prev: set[tuple[str, str]] = set()
        if before:
            prev = {(f.check, f.subject) for f in hist.findings_for(before[0].id) if f.severity != "info"}
        opened = closed = 0
        for r in runs:
            cur = {(f.check, f.subject) for f in hist.findings_for(r.id) if f.severity != "info"}
            opened += len(cur - prev)
            closed += len(prev - cur)
            prev = cur
        totals.update(opened=opened, closed=closed, still_open=len(prev))
        if opened or closed or prev:
            rows.append([job, len(runs), opened, closed, len(prev)])
    sec = Section("Findings opened and closed", [*_pruned_note(pruned, exact),
        f"{totals['opened']} finding(s) opened and {totals['closed']} closed in the period; {totals['still_open']} "
        "open at its end (warnings and critical findings, by check and subject)."])
    sec.tables.append(Table(["job", "runs", "opened", "closed", "open at end"], rows))
    return sec


def access_section(ctx: TaskContext) -> tuple[Section, list[Finding]]:
    assert ctx.config is not None
    sec = Section("Database superusers and access review")
    findings: list[Finding] = []
    for name, t in ctx.config.targets.items():
        if not isinstance(t, PostgresTarget):
            continue
        try:
            roles = access_review(t)
        except Exception as exc:  # one unreachable server must not stop the report
            sec.paragraphs.append(f"{name}: could not be reviewed ({exc}).")
            findings.append(Finding("security.compliance.access_review_failed", Severity.WARNING, name,
                                    f"access review failed: {exc}", "check the target's credentials"))
            continue
        supers = [r["role"] for r in roles if r["superuser"]]
        sec.paragraphs.append(f"{name}: {len(roles)} role(s), superusers: {', '.join(supers) or 'none'}.")
        sec.tables.append(Table(["role", "login", "superuser", "createrole", "createdb", "replication", "bypassrls",
                                 "member of", "valid until"],
                                [[r["role"], r["login"], r["superuser"], r["createrole"], r["createdb"],
                                  r["replication"], r["bypassrls"], r["member_of"], r["valid_until"]] for r in roles]))
    if not sec.tables and not sec.paragraphs:
        sec.paragraphs.append("No PostgreSQL target is configured.")
    return sec, findings


def windows_section(ctx: TaskContext, hist: History, start: datetime, end: datetime,
                    pruned: datetime | None = None, exact: bool = True) -> tuple[Section, list[Finding]]:
    """Maintenance runs by trigger and status; for jobs bound to a window, whether each run started inside it."""
    assert ctx.config is not None
    rows = []
    findings: list[Finding] = []
    total = Counter[str]()
    bound = 0
    for job, jc in ctx.config.jobs.items():
        if _category(ctx, job) != "maintenance" and not jc.window:
            continue
        runs = _runs(hist, job, start, end)
        if not runs:
            continue
        trig = Counter(r.trigger for r in runs)
        st = Counter(r.status for r in runs)
        ok = st.get("ok", 0) + st.get("warn", 0)
        inside = outside = 0
        outside_scheduled: list[str] = []
        if jc.window:
            bound += 1
            for r in runs:
                if r.started_at is None:
                    continue
                if window_open_at(ctx.config, job, r.started_at):
                    inside += 1
                else:
                    outside += 1
                    if r.trigger != "manual":
                        outside_scheduled.append(f"{r.started_at:%Y-%m-%d %H:%M}")
        total.update(runs=len(runs), ok=ok, deferred=trig.get("deferred", 0), skipped=st.get("skipped", 0),
                     failed=st.get("fail", 0) + st.get("error", 0), inside=inside, outside=outside)
        rows.append([job, jc.window or "—", len(runs), ok, trig.get("deferred", 0), st.get("skipped", 0),
                     st.get("fail", 0) + st.get("error", 0), inside if jc.window else None,
                     outside if jc.window else None, trig.get("manual", 0)])
        if outside_scheduled:
            findings.append(Finding(
                "security.compliance.window_not_kept", Severity.WARNING, job,
                f"{len(outside_scheduled)} run(s) of {job} started outside window {jc.window}: "
                + ", ".join(outside_scheduled[:10]), "check the job's window and the daemon's clock",
                value=len(outside_scheduled)))
    sec = Section("Maintenance windows kept", [*_pruned_note(pruned, exact),
        f"{total['runs']} maintenance run(s): {total['ok']} succeeded, {total['deferred']} were deferred to their "
        f"maintenance window, {total['skipped']} skipped (blackouts, overlap), {total['failed']} failed. "
        + (f"Of the runs of the {bound} window-bound job(s), {total['inside']} started inside the window and "
           f"{total['outside']} outside (manual runs included). " if bound else
           "No maintenance job is bound to a window ('window: NAME' on a job). ")
        + "Source: run history (trigger, status and start time of every maintenance run) checked against the "
        "configured windows."])
    sec.tables.append(Table(["job", "window", "runs", "ok", "deferred to window", "skipped", "failed",
                             "started in window", "started outside", "manual"], rows))
    sec.verdict = "attention" if findings else ("ok" if bound else None)
    return sec, findings


def build(ctx: TaskContext, options: ComplianceOptions, hist: History) -> tuple[Document, list[Finding]]:
    now = ctx.now()
    start, end = period_bounds(options.period, now)
    findings: list[Finding] = []
    sections = []
    assert ctx.config is not None
    # runs retention deleted are not runs that never happened: when it reached into the period, say so
    deleted = hist.deleted_runs()
    pruned = deleted.through if deleted is not None and deleted.through >= start else None
    # a damaged marker: retention deleted runs, when up to is unknown (at the latest its last write)
    damaged = deleted is not None and not deleted.exact
    if pruned is not None:
        need = LOOKBACK[options.period]
        findings.append(Finding(
            "security.compliance.history_incomplete", Severity.WARNING, "history",
            (f"the period starts {start:%Y-%m-%d} but history retention deleted runs and its record of up to when "
             f"is damaged: runs that finished up to {pruned:%Y-%m-%d %H:%M} UTC may be missing from this report"
             if damaged else
             f"the period starts {start:%Y-%m-%d} but history retention deleted runs that finished up to "
             f"{pruned:%Y-%m-%d %H:%M} UTC: backups, verifications, findings and maintenance runs before then "
             "are missing from this report"),
            f"keep runs at least {need.days} days (history_retention -> runs: {need.days}d) for period "
            f"{options.period!r}; runs already deleted cannot be reported on",
            data={"period_start": start.isoformat(), "runs_deleted_through": pruned.isoformat(),
                  **({"marker_damaged": True} if damaged else {})}))
    sec, f = backups_section(ctx, hist, start, end, pruned, not damaged)
    sections.append(sec)
    findings += f
    sec, f = patch_section(ctx, hist, start, end)
    sections.append(sec)
    findings += f
    sections.append(findings_section(ctx, hist, start, end, pruned, not damaged))
    if options.access_review:
        sec, f = access_section(ctx)
        sections.append(sec)
        findings += f
    sec, f = windows_section(ctx, hist, start, end, pruned, not damaged)
    sections.append(sec)
    findings += f
    meta = [("Organization", options.organization or "—"), ("Node", ctx.config.node),
            ("Period", f"{start:%Y-%m-%d} to {(end - timedelta(seconds=1)):%Y-%m-%d} (UTC)"),
            ("Generated", now.strftime("%Y-%m-%d %H:%M UTC")), ("Frameworks", ", ".join(options.frameworks)),
            ("Source", "upkeeper run history (every run recorded with findings and metrics)"
             + ("" if pruned is None else
                f"; possibly incomplete: runs that finished up to {pruned:%Y-%m-%d %H:%M} UTC may have been deleted "
                "by history retention (its record of what it deleted is damaged)" if damaged else
                f"; incomplete: runs that finished up to {pruned:%Y-%m-%d %H:%M} UTC were deleted by history "
                "retention"))]
    label = f"{start:%Y-%m}" if options.period != "last_30_days" else f"{start:%Y-%m-%d}"
    return Document(f"Maintenance and security evidence — {label}", meta, sections), findings


@task
class SecurityCompliance(Task[ComplianceOptions]):
    """Write the monthly evidence report (Markdown and HTML) from the run history: backups taken and verified
    with restore times, patch-SLA compliance, findings opened and closed, the database access review and
    the maintenance windows kept."""

    name = "security.compliance"
    summary = "monthly evidence report (Markdown + HTML): backups, patch SLA, findings, access review, windows"
    target_kinds = ("host",)
    Options = ComplianceOptions
    category = "security"
    default_timeout = 600

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        if not isinstance(options, ComplianceOptions):
            return []
        problem = retention_problem(options.period, config.history_retention.runs)
        return [("period", *problem)] if problem else []

    def run(self, ctx: TaskContext, options: ComplianceOptions) -> Result:
        hist = open_history(ctx)
        try:
            doc, findings = build(ctx, options, hist)
        finally:
            hist.close()
        assert ctx.config is not None
        # beside the config file: a relative output_dir too (not wherever the run started: cron's $HOME, systemd's /)
        base = ctx.config.source.absolute().parent if ctx.config.source else Path.cwd()
        out_dir = base / Path(options.output_dir).expanduser() if options.output_dir else base / "reports"
        make_report_dir(out_dir, "output_dir")
        stem = "compliance-" + doc.title.rsplit("— ", 1)[-1]
        md, htm = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
        for path, text in ((md, to_markdown(doc)), (htm, to_html(doc))):
            # whole or not at all (never a half-written report), and not readable by every local user
            atomic_write_bytes(path, text.encode("utf-8"), new_mode=REPORT_MODE)
        findings.append(Finding("security.compliance.report", Severity.INFO, str(md),
                                f"evidence report written: {md} and {htm}", "", data={"sections": len(doc.sections)}))
        return Result(summary=f"{doc.title}: {md.name} and {htm.name} ({len(findings) - 1} point(s) need attention)",
                      findings=findings, metrics={"sections": float(len(doc.sections))},
                      artifacts=[{"kind": "report", "format": "markdown", "path": str(md)},
                                 {"kind": "report", "format": "html", "path": str(htm)}])


__all__ = ["ComplianceOptions", "SecurityCompliance", "build", "period_bounds"]
