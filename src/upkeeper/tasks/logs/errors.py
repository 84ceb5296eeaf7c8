"""logs.errors: the nginx error log by level and message class; application exceptions by type and
message, with the groups not seen before as findings."""

from __future__ import annotations

import glob
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from upkeeper import lazy
from upkeeper.config.targets import AppTarget, NginxTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.logs.samples import trace_excerpt
from upkeeper.redact import redact, redact_obj
from upkeeper.tasks.logs._common import (
    REPORT_KEEP_DEFAULT,
    HtmlReport,
    KeepReports,
    ReportDir,
    RotatedDirs,
    check_report_dir,
    check_rotated_dirs,
    not_a_log,
    nothing_read,
    plan_findings,
    read_findings,
    report_dir,
    trends,
    unread_text,
    with_current,
    write_reports,
)

if TYPE_CHECKING:
    from upkeeper.logs import errorlog, parallel, report_html, sources
    from upkeeper.logs.errorlog import AppLogStats, NginxErrorStats
    from upkeeper.logs.sources import LogFile, PlanNote, ReadPlan
else:
    # the reading (the error-log and exception parsers, the parallel reader, the HTML report) is the worker's:
    # 'upkeeper run' imports this module in the CLI for the job's options, and these modules would add ~20 ms to
    # its start before the run is sent (the worker loads them while it waits for the run: lazy.load_all)
    errorlog = lazy.module("upkeeper.logs.errorlog")
    parallel = lazy.module("upkeeper.logs.parallel")
    report_html = lazy.module("upkeeper.logs.report_html")
    sources = lazy.module("upkeeper.logs.sources")

GROUPS_KEY = "exception_groups"
CURSORS_KEY = "error_cursors"


def usable_groups(saved: Any) -> dict[str, dict[str, Any]]:
    """The exception groups a run saved (read back from history: damaged, another version's, may be anything)
    that can be used: by id, each a dict whose ``count`` is a number and ``last_seen`` a time's text."""
    if not isinstance(saved, dict):
        return {}
    return {gid: g for gid, g in saved.items()
            if isinstance(g, dict) and type(g.get("count", 0)) is int and isinstance(g.get("last_seen", ""), str)}


class ErrorLogsOptions(TaskOptions):
    error_log: str | None = Field(None, description="nginx error log (default: the nginx target's error_log). "
            "Source: upkeeper (not set by default)")
    app_logs: list[str] = Field(
        default_factory=list, description="application logs, files or globs, JSON lines or text (default for an "
        "app target: its logs setting). Source: upkeeper (not set by default)")
    rotated: bool = Field(True, description="also read rotated files (x.log.1, x.log.2.gz — or .zst, .xz, .bz2 —, x.log-DATE). "
            "Source: upkeeper default")
    max_files: int = Field(30, ge=1, le=1000, description="at most this many files per log path. "
            "Source: upkeeper default")
    rotated_dirs: RotatedDirs = []
    incremental: bool = Field(True, description="read only what is new since the last run. "
            "Source: upkeeper default")
    remember_groups: int = Field(5000, ge=10, description="exception groups remembered to tell new ones from known. "
            "Source: upkeeper default")
    max_new_findings: int = Field(20, ge=1, description="findings for at most this many new exception groups per run. "
            "Source: upkeeper default")
    top: int = Field(20, ge=1, le=500, description="length of the message and exception lists (the exception list "
            "also shows every new group). "
            "Source: upkeeper default")
    report_dir: ReportDir = None
    keep_reports: KeepReports = REPORT_KEEP_DEFAULT
    html: HtmlReport = True

    @model_validator(mode="after")
    def _check_rotated_dirs(self) -> ErrorLogsOptions:
        check_rotated_dirs(self.rotated_dirs, self.rotated)
        return self


#: the nginx error log is taken for another file when more than half of its lines, and at least this many, are not
#: error-log lines (a stray line or two — a crash's output — is no such sign)
UNPARSED_MIN_LINES = 3


@task
class ErrorLogs(Task[ErrorLogsOptions]):
    """nginx error-log lines by level and message class, and application exceptions grouped by type
    and normalized message; exception groups not seen in earlier runs are findings."""

    name = "logs.errors"
    summary = "nginx error log by level/class; app exceptions grouped, new groups flagged"
    target_kinds = ("nginx", "app")
    Options = ErrorLogsOptions
    category = "monitoring"
    default_timeout = 1800

    def run(self, ctx: TaskContext, options: ErrorLogsOptions) -> Result:
        target = ctx.require_target()
        findings: list[Finding] = []
        check_report_dir(ctx, options.report_dir)
        error_log = options.error_log or (target.error_log if isinstance(target, NginxTarget) else None)
        patterns = list(options.app_logs)
        if not patterns and isinstance(target, AppTarget):
            patterns = [str(target.path(p)) for p in target.logs]
        saved_cursors = ctx.state.get(CURSORS_KEY, {}) if options.incremental else {}

        def cursors_of(path: str) -> Any:
            # (saved state that is not a dict of lists of cursors -- damaged, another version's -- is handed on as
            # it is: plan_reads says it cannot use it, and reads the files from the start)
            return saved_cursors.get(path) if isinstance(saved_cursors, dict) else saved_cursors

        new_cursors: dict[str, list[dict[str, Any]]] = {}
        t0 = time.monotonic()
        rep: dict[str, Any] = {"files": []}
        read_notes: list[parallel.ReadNote] = []
        plan_notes: list[PlanNote] = []  # files that cannot be read, truncated or replaced since the last run
        # per log (nginx's error log, the application's): the files that could be read, and those that could not
        readable = {"nginx": 0, "app": 0}
        unreadable: dict[str, list[str]] = {"nginx": [], "app": []}

        ng: NginxErrorStats | None = None
        if error_log:
            files = sources.discover(error_log, rotated=options.rotated, max_files=options.max_files,
                                     rotated_dirs=options.rotated_dirs)
            if not files:
                findings.append(Finding("logs.errors.missing", Severity.WARNING, error_log,
                                        f"the nginx error log: {not_a_log(error_log)}",
                                        "set the target's error_log or the job's error_log option to the file "
                                        "nginx writes"))
            else:
                ng = errorlog.NginxErrorStats()
                plan = sources.plan_reads(files, cursors_of(error_log), incremental=options.incremental)
                plan_notes += plan.notes
                readable["nginx"] += plan.readable
                unreadable["nginx"] += plan.unreadable
                gz = self._read(plan, lambda buf, src: ng.feed(buf, src) if ng else None, read_notes)
                ng.finish()
                new_cursors[error_log] = sources.finish_cursors(plan, gz)
                rep["files"] += [r.file.path for r in plan.ranges]

        app: AppLogStats | None = None
        matched = False
        if patterns:
            app = errorlog.AppLogStats()
            unmatched: list[str] = []
            seen: set[tuple[int, int]] = set()  # a file two patterns match (or linked twice) is read once
            for pat in patterns:
                found = self._app_files(pat, options, seen)
                if not found:
                    unmatched.append(pat)
                for path, files in found:
                    matched = True
                    if not files:  # read under another name already (its cursor is that name's)
                        continue
                    plan = sources.plan_reads(files, cursors_of(path), incremental=options.incremental)
                    plan_notes += plan.notes
                    readable["app"] += plan.readable
                    unreadable["app"] += plan.unreadable
                    gz = self._read(plan, lambda buf, src: app.feed(buf, src) if app else None, read_notes)
                    app.finish()
                    new_cursors[path] = sources.finish_cursors(plan, gz)
                    rep["files"] += [r.file.path for r in plan.ranges]
            # each pattern that finds nothing is named: one of several that does not match is a log
            # that is not read (the app target's default patterns may well find nothing)
            if options.app_logs:
                for pat in unmatched:
                    findings.append(Finding("logs.errors.missing", Severity.WARNING, pat, self._no_match(pat),
                                            "set app_logs to the files your application writes"))
            elif not matched:  # none of them: the job reads no application log at all, run after run
                findings.append(Finding(
                    "logs.errors.missing", Severity.WARNING, ", ".join(patterns),
                    f"no application log matches the target's logs ({', '.join(patterns)}): none was read",
                    "set the app target's logs (globs relative to its root) or the job's app_logs option to the "
                    "files your application writes"))
        if ng is not None:
            # PHP-FPM's uncaught exceptions, relayed into nginx's error log: exception groups as in PHP's own log
            app = ng.php_into(app)
        seconds = time.monotonic() - t0
        findings += plan_findings("errors", plan_notes, options.rotated_dirs) + read_findings("errors", read_notes)
        saved = ctx.state.get(GROUPS_KEY)
        # "never read an application log" (no state: record a baseline) is not "read it, no exceptions"
        # (an empty dict: whatever appears next is new)
        known = usable_groups(saved)
        if saved is not None and (not isinstance(saved, dict) or len(known) < len(saved)):
            ctx.log.warning("the exception groups the last run saved cannot all be understood (written by another "
                            "version of upkeeper, or damaged): %s", "the ones that can are kept" if known else
                            "starting over, this run's groups recorded as known")
        first_run = saved is None or not isinstance(saved, dict) or (not known and bool(saved))
        # the report is redacted before findings, HTML and JSON are made of it: exception messages and
        # error-log lines carry DSNs with passwords and request lines with ?token=…
        if ng is not None:
            rep["nginx"] = redact_obj(self.nginx_report(ng, options))
            findings += self.nginx_findings(rep["nginx"], error_log or "")
        if app is not None:
            app_rep, new = self.app_report(app, options, known, ctx.now())
            if first_run and new:  # the baseline: every group is recorded as known, none is flagged as new
                app_rep["baseline_groups"], app_rep["new_groups"] = len(new), 0
                for g in app_rep["exception_groups"]:
                    g["new"] = False
            rep["app"] = redact_obj(app_rep)
            findings += self._app_findings(rep["app"], new, first_run, options)
        if not any(readable.values()) and any(unreadable.values()):  # files there, and not one could be read
            findings = nothing_read("errors", findings)
        metrics = self._metrics(rep, seconds)
        rep["findings"] = [f.to_dict() for f in findings]
        rep["metrics"] = metrics
        artifacts: list[dict[str, Any]] = []
        if not ctx.dry_run:
            html = report_html.errors_report(rep, rep["findings"], title=f"Error log report — {ctx.target_name or ''}",
                                 subtitle=f"{len(rep['files'])} file(s) · job {ctx.job}",
                                 trends=with_current(trends(ctx, ["exceptions", "nginx_errors"]), metrics, ctx.now()),
                                 footer="upkeeper logs.errors") if options.html else None
            artifacts = write_reports(ctx, report_dir(ctx, options.report_dir), "errors", rep, html,
                                      options.keep_reports)
            if options.incremental:
                ctx.state.set(CURSORS_KEY, new_cursors)
            # no log read yet: the next run that reads one is the first (an nginx error log with PHP-FPM's messages
            # is one: its exceptions are groups)
            # (an application log that could not be read was not read: its exceptions are not known, and the run
            # that first reads it records them as its baseline rather than flag each one as new)
            if (app is not None and readable["app"]) or (ng is not None and ng.php is not None):
                ctx.state.set(GROUPS_KEY, known)
        parts = []
        if ng is not None:
            parts.append(self._unread_part("nginx", "error log", readable["nginx"], unreadable["nginx"])
                         or f"nginx: {sum(ng.levels.values()):,} error-log lines, {ng.upstream} upstream errors"
                         + self._unread_tail(unreadable["nginx"]))
        if app is not None:
            a = rep["app"]
            parts.append(self._unread_part("app", "application log", readable["app"], unreadable["app"])
                         or f"app: {a['exceptions_total']:,} exceptions in {a['groups']} groups "
                         + ("(first run: recorded as known)" if a.get("baseline_groups") else f"({a['new_groups']} new)")
                         + self._unread_tail(unreadable["app"]))
        summary = "; ".join(parts) or "no logs to read"
        html_path = next((a["path"] for a in artifacts if a.get("format") == "html"), None)
        if html_path:
            summary += f" — report: {html_path}"
        return Result(summary=summary, findings=findings, metrics=metrics, artifacts=artifacts)

    @staticmethod
    def _unread_part(name: str, what: str, readable: int, unreadable: list[str]) -> str:
        """The summary's part for a log none of whose files could be read ("" when one could)."""
        return f"{name}: nothing read, the {what} could not be read ({unread_text(unreadable)})" \
            if unreadable and not readable else ""

    @staticmethod
    def _unread_tail(unreadable: list[str]) -> str:
        return f" ({len(unreadable)} file(s) could not be read: {unread_text(unreadable)})" if unreadable else ""

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _read(plan: ReadPlan, feed: Any, notes: list[parallel.ReadNote]) -> dict[str, int]:
        gz: dict[str, int] = {}
        for r in plan.ranges:
            u = parallel.Unit(r.file.path, r.start, r.end, r.file.gz, r.final, r.file.path)
            reader = parallel.read_unit(u, notes=notes)
            while True:
                try:
                    _off, buf = next(reader)
                except StopIteration as stop:  # how many bytes it handed out or skipped (a cut line
                    n = int(stop.value)  # stands for more bytes than its buffer holds)
                    break
                feed(buf, r.file.path)
            if r.file.gz:
                gz[r.file.path] = r.start + n
        return gz

    @staticmethod
    def _no_match(pattern: str) -> str:
        if any(c in pattern for c in "*?["):
            return f"no application log matches {pattern}"
        if Path(pattern).is_file():  # x.log.1, x.log.2.gz: _app_files leaves rotated files to their live log
            return (f"application log {pattern} looks like a rotated file: it is read with its live log, "
                    "not on its own (give the live log's path)")
        reason = not_a_log(pattern)
        if reason.endswith("is a directory, not a log file"):
            reason += f" (for the logs in it: {pattern.rstrip('/')}/*.log)"
        return f"application log: {reason}"

    @staticmethod
    def _app_files(pattern: str, options: ErrorLogsOptions, seen: set[tuple[int, int]]
                   ) -> list[tuple[str, list[LogFile]]]:
        # a rotated match (x.log.1, x.log-20240301: logrotate's dateext) stands for its live log, with which it
        # is read: once, whatever else the pattern matches; a file already read under another name (``seen``:
        # matched by an earlier pattern, a link) is not read again
        paths = sorted({sources.live_log(p) for p in glob.glob(pattern)}) if any(c in pattern for c in "*?[") else [pattern]
        out = []
        for p in paths:
            found = sources.discover(p, rotated=options.rotated, max_files=options.max_files,
                                     rotated_dirs=options.rotated_dirs)
            files = sources.drop_seen(found, seen)
            if files:
                out.append((p, files))
            elif found:
                out.append((p, []))  # matched (no missing warning), nothing of its own to read
        return out

    # -- report and findings -------------------------------------------------------------------

    @staticmethod
    def nginx_report(ng: NginxErrorStats, o: ErrorLogsOptions) -> dict[str, Any]:
        order = {lv: i for i, lv in enumerate(("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"))}
        classes = sorted(ng.classes.items(), key=lambda kv: (order.get(kv[0][0], 9), -kv[1], kv[0][1]))
        return {
            "lines": ng.lines, "unparsed": ng.unparsed, "unparsed_samples": ng.unparsed_samples,
            "levels": dict(sorted(ng.levels.items(), key=lambda kv: order.get(kv[0], 9))),
            "upstream": ng.upstream, "first": ng.first, "last": ng.last,
            "by_hour": dict(sorted(ng.by_hour.items())),
            "classes": [{"level": lv, "class": cl, "count": c, "example": ng.examples[(lv, cl)]}
                        for (lv, cl), c in classes[: o.top]],
        }

    @staticmethod
    def nginx_findings(r: dict[str, Any], path: str) -> list[Finding]:
        out = []
        if r["unparsed"] >= UNPARSED_MIN_LINES and r["unparsed"] * 2 > r["lines"]:
            # an access log or an application's log given as the error log: no error line is ever found in it
            sample = r["unparsed_samples"][0] if r["unparsed_samples"] else ""
            out.append(Finding("logs.errors.nginx_unparsed", Severity.WARNING, path,
                               f"{r['unparsed']:,} of the {r['lines']:,} lines read are not nginx error-log lines "
                               f"('YYYY/MM/DD HH:MM:SS [level] pid#tid: …'), e.g. {sample[:200]}",
                               "check that error_log (the target's or the job's) is the file nginx's error_log "
                               "directive writes", value=r["unparsed"], data={"sample": sample}))
        severe = {k: v for k, v in r["levels"].items() if k in ("crit", "alert", "emerg")}
        if severe:
            worst = next(c for c in r["classes"] if c["level"] in severe)
            out.append(Finding("logs.errors.nginx_critical", Severity.CRITICAL, path,
                               f"{sum(severe.values())} line(s) at {'/'.join(severe)} level, e.g. {worst['example'][:200]}",
                               "nginx reports a serious problem (out of files, disk, memory, or a crash)",
                               value=sum(severe.values())))
        if r["upstream"]:
            up = [c for c in r["classes"] if errorlog.is_upstream_failure(c["level"], c["class"])][:3]
            out.append(Finding("logs.errors.nginx_upstream", Severity.WARNING, path,
                               f"{r['upstream']} upstream error(s): " + "; ".join(f"{c['class']} ({c['count']})" for c in up),
                               "the application behind nginx timed out, refused or crashed: check it and its logs",
                               value=r["upstream"]))
        errs = [c for c in r["classes"] if c["level"] == "error"]
        if errs:
            out.append(Finding("logs.errors.nginx_errors", Severity.INFO, path,
                               f"{sum(c['count'] for c in errs)} error line(s) in {len(errs)} class(es); most: "
                               f"{errs[0]['class'][:160]} ({errs[0]['count']})", value=sum(c["count"] for c in errs)))
        return out

    @staticmethod
    def app_report(app: AppLogStats, o: ErrorLogsOptions, known: dict[str, dict[str, Any]], when: datetime
                   ) -> tuple[dict[str, Any], list[str]]:
        """The application part of the report, and the ids of the groups not in ``known`` (which it
        updates: seen at ``when``)."""
        now = when.isoformat(timespec="seconds")
        new = [gid for gid in app.exceptions if gid not in known]
        for gid, g in app.exceptions.items():
            k = known.setdefault(gid, {"type": g.kind, "message": redact(g.message), "first_seen": now, "count": 0,
                                       **({"cause": g.cause} if g.cause else {})})
            k["last_seen"] = now
            k["count"] = int(k.get("count", 0)) + g.count
        if len(known) > o.remember_groups:  # forget the groups seen longest ago
            for gid in sorted(known, key=lambda g: known[g].get("last_seen", ""))[: len(known) - o.remember_groups]:
                del known[gid]
        # the ``top`` biggest groups and every new one (each may be a finding), new ones first: many new
        # groups must not crowd the biggest known ones out of the report
        biggest = {gid for gid, _g in sorted(app.exceptions.items(), key=lambda kv: (-kv[1].count, kv[1].kind))[:o.top]}
        groups = sorted(((gid, g) for gid, g in app.exceptions.items() if gid in biggest or gid in new),
                        key=lambda kv: (kv[0] not in new, -kv[1].count, kv[1].kind))
        by_type: Counter[str] = Counter()
        for g in app.exceptions.values():
            by_type[g.kind] += g.count
        order = {"critical": 0, "error": 1, "warning": 2}
        msgs = sorted(app.messages.items(), key=lambda kv: (order.get(kv[0][0], 3), -kv[1]))
        return {
            "lines": app.lines, "json_lines": app.json_lines, "levels": dict(app.levels.most_common()),
            "exceptions_total": sum(g.count for g in app.exceptions.values()), "groups": len(app.exceptions),
            "new_groups": len(new),
            # every group's exceptions by type (the list below has only the biggest groups and the new ones)
            "by_type": dict(by_type.most_common(o.top)),
            "exception_groups": [{"id": gid, "type": g.kind, "message": g.message, "cause": g.cause, "count": g.count,
                                  "new": gid in new, "example": g.example, "sources": sorted(g.sources)}
                                 for gid, g in groups],
            "messages": [{"level": lv, "message": m, "count": c, "example": app.message_examples[(lv, m)]}
                         for (lv, m), c in msgs[: o.top]],
        }, new

    @staticmethod
    def _app_findings(r: dict[str, Any], new: list[str], first_run: bool, o: ErrorLogsOptions) -> list[Finding]:
        out = []
        groups = {g["id"]: g for g in r["exception_groups"]}
        if first_run and new:
            out.append(Finding("logs.errors.exceptions_baseline", Severity.INFO, "application",
                               f"first run: {len(new)} exception group(s) recorded as known "
                               f"({r['exceptions_total']:,} exceptions); later runs flag groups not seen before",
                               value=len(new)))
            return out
        for gid in new[: o.max_new_findings]:
            g = groups.get(gid)
            if g is None:
                continue
            out.append(Finding("logs.errors.new_exception", Severity.WARNING, g["type"],
                               f"new exception: {g['type']}: {g['message']}"
                               + (f" (caused by {g['cause']})" if g.get("cause") else "") + f" ({g['count']}x, in "
                               f"{', '.join(Path(s).name for s in g['sources'][:3])})",
                               "a new kind of failure since the last run: look at the example in the report",
                               value=g["count"], data={"example": trace_excerpt(g["example"]), "id": gid}))
        if len(new) > o.max_new_findings:
            out.append(Finding("logs.errors.new_exception", Severity.WARNING, "more",
                               f"{len(new) - o.max_new_findings} more new exception group(s): see the report",
                               value=len(new) - o.max_new_findings))
        return out

    @staticmethod
    def _metrics(rep: dict[str, Any], seconds: float) -> dict[str, float]:
        m: dict[str, float] = {"scan_seconds": round(seconds, 3)}
        if "nginx" in rep:
            lv = rep["nginx"]["levels"]
            m["nginx_lines"] = float(sum(lv.values()))
            m["nginx_errors"] = float(sum(v for k, v in lv.items() if k in ("error", "crit", "alert", "emerg")))
            m["nginx_upstream_errors"] = float(rep["nginx"]["upstream"])
        if "app" in rep:
            a = rep["app"]
            m["exceptions"] = float(a["exceptions_total"])
            m["exception_groups"] = float(a["groups"])
            m["new_exception_groups"] = float(a["new_groups"])
            m["app_error_lines"] = float(a["levels"].get("error", 0) + a["levels"].get("critical", 0))
        return m
