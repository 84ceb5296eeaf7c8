"""logs.nginx: analyze nginx access logs — traffic, status, latency, top lists, security signals."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from upkeeper import lazy
from upkeeper.config.targets import NginxTarget
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes
from upkeeper.logs.clientip import DEFAULT_TRUSTED_PROXIES, check_networks
from upkeeper.logs.goaccess import STATIC_EXTENSIONS
from upkeeper.logs.logins import DEFAULT_LOGIN_PATHS, LoginPath, attempts_only, parse_statuses
from upkeeper.logs.nginx_format import (
    NAMED_FORMATS,
    LogFormatError,
    check_client_ip,
    client_header,
    client_mode,
    has_variable,
    header_name,
    parse_format,
    to_goaccess,
)
from upkeeper.redact import redact_obj
from upkeeper.tasks.logs._common import (
    REPORT_KEEP_DEFAULT,
    HtmlReport,
    KeepReports,
    MemoryLimitMb,
    ReportDir,
    RotatedDirs,
    check_report_dir,
    check_rotated_dirs,
    ends_head_start,
    log_processes,
    memory_limit,
    memory_limit_error,
    not_a_log,
    nothing_read,
    plan_findings,
    read_findings,
    remember_unparsed,
    report_dir,
    reread_message,
    trends,
    unparsed_note,
    unparsed_restart,
    unread_text,
    with_current,
    write_reports,
)

if TYPE_CHECKING:
    import statistics

    from upkeeper.logs import access, parallel, report_html, sources
    from upkeeper.logs.access import ScanOptions
    from upkeeper.logs.sources import PlanNote, ReadPlan
else:
    # the scan (the access-log parser and its request classes, the parallel reader, the HTML report) is the
    # worker's: 'upkeeper run' imports this module in the CLI for the job's options, and these modules would add
    # ~40 ms to its start before the run is sent (the worker loads them while it waits for the run: lazy.load_all)
    access = lazy.module("upkeeper.logs.access")
    parallel = lazy.module("upkeeper.logs.parallel")
    report_html = lazy.module("upkeeper.logs.report_html")
    sources = lazy.module("upkeeper.logs.sources")
    statistics = lazy.module("statistics")  # (the trends' median: ~3 ms to import)

CURSORS_KEY = "access_cursors"
TAIL_KEY = "access_security_tail"  # the last minutes' 404s and failed logins, for bursts across runs
#: what to check first, for the attack categories whose answer 2xx means something particular
ATTACK_REMEDIATION = {
    "ssrf": "make sure the application fetches no URL its clients name on link-local or metadata addresses (an "
            "allow-list of hosts, an egress firewall, AWS IMDSv2 with a hop limit of 1); ",
    "open_proxy": "a 2xx to an absolute request line for another site must be this site's own page, not that "
                  "site's (curl -x http://THIS-SERVER http://example.com/): no proxy_pass to $host or $http_host; a host "
                  "that is this site's own name belongs in the job's server_names; ",
}
PAGES_KEY = "access_page_sizes"  # body sizes of a catch-all's answers (GET /, probes), for the runs that read none
PAGES_KEPT = 50
#: the hosts the referers of several clients named (the site's own, without server_names), for the runs that read few
HOSTS_KEY = "access_own_hosts"
HOSTS_KEPT = 50
UNPARSED_KEY = "access_unparsed_from"  # where the runs began that could parse none of their lines (their format)
#: compressed files (their identity, size and the format) none of whose first and last lines parsed: a later run
#: tries their first lines only (access.wrong_format decompresses a file to its end for its last ones: 1.4 s a GB,
#: for each rotated file written before nginx's log_format changed, at every run until it is deleted)
WRONG_GZ_KEY = "access_wrong_gz"
HOURS_KEY = "access_hours"  # requests per hour of log time over the runs, so an hour split between runs is whole
HOURS_KEPT_DAYS = 35  # days of hourly counts kept in the job's state
SPIKE_BASELINE_DAYS = 7  # a spike is judged against the busiest hours of this many earlier days
FUTURE_SLACK = timedelta(days=1)  # log time may run ahead of UTC (a local time zone); more is a wrong clock
TREND_METRICS = ["requests", "visitors", "latency_p95_ms", "failed_pct"]


#: a status spec as the schema shows it: text ('5xx', '401-403,422'), or one code as YAML reads 200 unquoted
StatusSpec = Annotated[str, WithJsonSchema({"anyOf": [{"type": "string"},
                                                      {"type": "integer", "minimum": 100, "maximum": 999}]})]


class LoginPathOption(TaskOptions):
    path: str = Field(description="the login path: exact, or with '*' wildcards (/auth/*); the query string is "
                      "ignored. Source: upkeeper (required)")
    failure_status: StatusSpec | None = Field(
        None, description="which answers to a POST there mean a failed login: codes (200), classes (4xx), ranges "
        "(401-403) or a comma-separated list of these; not set: those of a bare path (401/403/429, or the known "
        "application's). A form login that shows the form again on a failure and redirects on a success: '200'. "
        "Source: issue 7 (401/403); 429: rate limiters' answer to too many attempts")

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        return _url_path(v)

    @field_validator("failure_status", mode="before")
    @classmethod
    def _check_statuses(cls, v: Any) -> str | None:
        return None if v is None else _status_spec(v)

    def login_path(self) -> LoginPath:
        default = LoginPath.of(self.path)
        return default if self.failure_status is None else LoginPath(self.path, self.failure_status)


def _url_path(v: str) -> str:
    """A login, public or free-text path as requests are matched: one without its leading / would never match any,
    nor one with a query string (``/search?q=*``: requests are matched by their path, without theirs)."""
    if not v.startswith(("/", "*")):
        raise ValueError(f"{v!r} is no URL path, so no request would match it: a path begins with / (or a '*' "
                         f"wildcard), e.g. /{v}")
    if "?" in v:
        raise ValueError(f"{v!r} has a query string, so no request would match it: requests are matched by their "
                         f"path alone (any query string), e.g. {v.split('?', 1)[0] or '/'}")
    return v


#: a path requests are matched against, checked to begin with / (or *)
UrlPath = Annotated[str, AfterValidator(_url_path)]


def _status_spec(v: Any) -> str:
    """A status spec from YAML (text, or one number) checked and normalised by :func:`parse_statuses`."""
    if isinstance(v, int) and not isinstance(v, bool):  # failure_status: 200 in YAML
        v = str(v)
    if not isinstance(v, str):
        raise ValueError(f"expected text such as '5xx' or '500,502-504', got {type(v).__name__}")
    return parse_statuses(v)  # its ValueError names the bad part and the accepted forms


#: a login path, or a mapping with its failure statuses (told apart by type, so a bad mapping's error is its own)
LoginPathEntry = Annotated[
    Annotated[UrlPath, Tag("path")] | Annotated[LoginPathOption, Tag("entry")],
    Discriminator(lambda v: "path" if isinstance(v, str) else "entry"),
]


#: a run that read at least this many lines, at most half of them field for field, looks for a better log_format
FORMAT_HINT_MIN_LINES = 200


def _format_hint(plan: ReadPlan, options: NginxLogsOptions, rep: dict[str, Any]) -> dict[str, Any] | None:
    """A log_format that reads the log's lines field for field where the job's does not
    (:func:`upkeeper.logs.access.suggest_format`, on the first lines of the first plain file read), as data."""
    if rep["lines"] < FORMAT_HINT_MIN_LINES or rep["fast_path_lines"] * 2 > rep["lines"]:
        return None
    for r in plan.ranges:
        if r.file.gz or r.end is None or r.end - r.start < 1:
            continue
        try:
            with open(r.file.path, "rb") as fh:
                fh.seek(r.start)
                sample = fh.read(min(access.SUGGEST_SAMPLE, r.end - r.start))
        except OSError:
            continue
        hint = access.suggest_format(sample, options.log_format, options.client_ip)
        return dataclasses.asdict(hint) if hint is not None else None
    return None


class NginxLogsOptions(TaskOptions):
    access_log: str | None = Field(None, description="access log to read (default: the target's access_log): a "
            "path or a glob such as /var/log/nginx/*.access.log (one report over every log it matches, each read "
            "with its rotated files). Source: upkeeper (not set by default)")
    log_format: str = Field(
        "combined",
        description="the nginx log_format of that log: its format string, or the whole 'log_format NAME "
        "[escape=…] ...;' line from nginx.conf, or a name: combined, combined_timed (combined + $request_time), "
        "main. $request_time and $upstream_response_time give latency. Source: nginx's predefined 'combined' "
        "format",
    )
    client_ip: str = Field(
        "remote_addr", description="where the client address comes from: remote_addr ($remote_addr: right when "
        "nginx faces the clients, or uses the realip module behind a proxy), or, behind a load balancer or CDN, "
        "the variable of the log_format holding the client it passed on: x_forwarded_for "
        "($http_x_forwarded_for: when $remote_addr is one of trusted_proxies, the client is the right-most "
        "address of the header that is not, as nginx's real_ip_recursive finds it), x_real_ip ($http_x_real_ip, "
        "set by proxy_set_header X-Real-IP $remote_addr), proxy_protocol ($proxy_protocol_addr, with listen "
        "… proxy_protocol behind HAProxy or a network load balancer) or header:NAME, any request header logged "
        "as $http_name (header:CF-Connecting-IP for $http_cf_connecting_ip behind Cloudflare, "
        "header:True-Client-IP behind Akamai, header:Fastly-Client-IP behind Fastly: nginx's real_ip_header "
        "NAME): the same rule; a line whose value is '-' or no address keeps $remote_addr, and the report "
        "counts such lines (a format without $remote_addr: the variable is the client, and a line without one "
        "is unparsed). Source: nginx ngx_http_realip_module (real_ip_header)")
    trusted_proxies: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TRUSTED_PROXIES),
        description="with client_ip other than remote_addr, the addresses or CIDR networks of your proxies (nginx's "
        "set_real_ip_from; add your CDN's ranges, e.g. Cloudflare's from https://www.cloudflare.com/ips/). Source: the private and loopback ranges (RFC 1918, RFC 4193), "
        "where load balancers usually are")
    rotated: bool = Field(True, description="also read rotated files: access.log.1, access.log.2.gz (or .zst, .xz, .bz2), access.log-DATE. "
            "Source: upkeeper default")
    max_files: int = Field(30, ge=1, le=1000, description="at most this many files per log (newest first). "
            "Source: upkeeper default")
    rotated_dirs: RotatedDirs = []
    incremental: bool = Field(
        True, description="read only what is new since the last run (a cursor per file: inode, offset, first bytes). "
                "Source: upkeeper default"
    )
    workers: int = Field(0, ge=0, le=64, description="processes that scan in parallel (0: one per CPU, at "
            "most 2 — each holds about 150 MB at its peak; raise it on a big machine for speed). "
            "Source: upkeeper default")
    memory_limit_mb: MemoryLimitMb = 0
    latency_p95_ms: float = Field(
        200, gt=0, description="warn when the p95 response time (overall or of an endpoint) exceeds this. "
        "Source: the maintenance procedures' API objective (p95 < 200 ms)")
    failed_rate_pct: float = Field(
        0.1, ge=0, description="warn when failed requests exceed this % of requests. Source: the maintenance "
        "procedures' objective (failed requests < 0.1 %)")
    failed_statuses: StatusSpec = Field(
        "5xx", description="which statuses count as failed: a class (5xx), a code (429), a range (502-504) or a "
        "comma-separated list of these: '5xx', '500,502-504', '429,5xx'. Source: upkeeper default")
    unparsed_warn_pct: float = Field(
        1.0, ge=0, description="warn when more than this % of lines cannot be parsed. Source: Netdata "
        "web_log_1m_unmatched (warn > 1 %)")
    min_endpoint_requests: int = Field(
        20, ge=1, description="an endpoint needs this many timed requests before its p95 is judged (a site of a "
                "multi-site log this many requests before its failed rate and p95 are). "
                "Source: upkeeper default")
    top: int = Field(10, ge=1, le=1000, description="length of the top lists. Source: upkeeper default")
    not_found_burst: int = Field(
        20, ge=1, description="flag a client with at least this many 404s within two consecutive clock minutes "
        "(scanning; a burst is never split by a minute boundary; 404s for page assets — styles, scripts, images, "
        "fonts, media — do not count: a page's missing images are asked for by every visitor at once). "
        "Source: upkeeper default; fail2ban's nginx-botsearch is stricter (2 probes)")
    brute_force_threshold: int = Field(
        10, ge=1, description="flag a client with at least this many failed logins (POSTs to any login path "
        "answered one of that path's failure statuses; on /xmlrpc.php every POST, an attempt) within two "
        "consecutive 10-minute periods, or twice as many within an hour (a brute force paced under the threshold); "
        "a client with a successful login for every two failed ones is reported as an info (many users behind one "
        "address); all clients together with 10 times this many within 20 minutes, from 10 clients or more and 3 "
        "times the logins that succeeded, are credential stuffing. Source: fail2ban "
        "nginx-http-auth uses 5 in 10 minutes")
    login_paths: list[LoginPathEntry] = Field(
        default_factory=lambda: list[LoginPathEntry](DEFAULT_LOGIN_PATHS),
        description="paths of login forms and token endpoints ('*' wildcards allowed; a trailing slash does not "
        "matter), for brute-force detection: a path, or {path, failure_status} to say which statuses mean a failed "
        "login there. A bare path's failed logins are those answered 401/403/429, except on the known applications' "
        "paths (docs/logs.md): /xmlrpc.php 200 (every POST counts: XML-RPC answers a failure 200 too), "
        "/wp-login.php, /admin/login, /accounts/login, /user/login 200/401/403 (the form shown again), /users/sign_in "
        "200/401/403/422, /oauth/token and /api/token 400/401/403, each with 429 too (a rate limiter's answer to too "
        "many attempts). Source: issue 7 (401/403); WordPress, Django, Drupal, Devise and RFC 6749 for the known "
        "paths")
    public_paths: list[UrlPath] = Field(
        default_factory=list,
        description="paths of sensitive-looking files the site serves on purpose ('*' wildcards allowed; letter case "
        "ignored, as for the sensitive files), e.g. "
        "/downloads/*.sql, /info.php, /actuator/*, /dav/*: no logs.nginx.exposed_file finding for them, and a "
        "request for one is no scanner probe (an attack payload in it still counts). Source: upkeeper (none by "
        "default)")
    free_text_paths: list[UrlPath] = Field(
        default_factory=list,
        description="paths whose query string carries what people type ('*' wildcards allowed; letter case "
        "ignored), e.g. /search, /api/search, /admin/sql: SQL- or script-looking text only in the query string of "
        "a request for one (a search for 'select * from users where id') is counted apart when answered 2xx "
        "(free_text in the report) and raises no logs.nginx.attack warning; a payload in the path, every other "
        "attack category and the answers other than 2xx count as before. Source: upkeeper (none by default; "
        "CrowdSec and ModSecurity take per-path exclusions alike)")
    server_names: list[str] = Field(
        default_factory=list,
        description="the site's own host names, written as nginx's server_name (example.com, *.example.com, "
        ".example.com for both): an absolute request line (GET http://HOST/…) naming any other host is an "
        "open-proxy probe. Not set: a host that the referers of 3 or more different clients name is the site's own (its "
        "pages refer to each other; a prober sending its target as its own referer is one client); localhost and loopback addresses are always the site's, the IP-echo and proxy-judge sites and "
        "search engines of docs/logs.md (azenv.net, www.google.com, example.com …) never. Source: upkeeper (none by "
        "default)")
    static_extensions: list[str] = Field(
        default_factory=lambda: list(STATIC_EXTENSIONS),
        description="extensions of static files, left out of GoAccess's 'requested files' list. Source: "
        "GoAccess 1.7 goaccess.conf")
    spike_factor: float = Field(
        3.0, gt=1, description="warn when an hour the run read has this many times the requests of the usual "
        "busiest hour of a day (the median of the 7 days before, the busiest of them while fewer are known; hours "
        "split between runs are counted whole). "
                "Source: upkeeper default")
    spike_min_runs: int = Field(3, ge=1, description="earlier runs needed before spikes are judged (and a whole "
            "earlier day of counts). "
            "Source: upkeeper default")
    report_dir: ReportDir = None
    keep_reports: KeepReports = REPORT_KEEP_DEFAULT
    html: HtmlReport = True

    @model_validator(mode="after")
    def _check_rotated_dirs(self) -> NginxLogsOptions:
        check_rotated_dirs(self.rotated_dirs, self.rotated)
        return self

    @field_validator("log_format")
    @classmethod
    def _check_format(cls, v: str) -> str:
        try:
            parse_format(v)
        except LogFormatError as exc:
            raise ValueError(f"{exc.message}. {exc.hint or ''}".strip()) from None
        return v

    @field_validator("failed_statuses", mode="before")
    @classmethod
    def _check_statuses(cls, v: Any) -> str:
        return _status_spec(v)

    @field_validator("client_ip")
    @classmethod
    def _check_client_ip_mode(cls, v: str) -> str:
        return check_client_ip(v)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        return check_networks(v)

    @model_validator(mode="after")
    def _check_client_ip(self) -> NginxLogsOptions:
        var = client_header(self.client_ip)
        if var is not None and not has_variable(self.log_format, var):
            raise ValueError(f"client_ip: {self.client_ip} needs ${var} in the log_format"
                             + (" (as in nginx's 'main' format)" if var == "http_x_forwarded_for" else "")
                             + f"; add \"${var}\" to the nginx log_format and to log_format here, or use nginx's "
                             f"realip module ({realip_directives(var)}) and client_ip: remote_addr")
        return self

    def scan_options(self) -> ScanOptions:
        return access.ScanOptions(log_format=self.log_format, static_extensions=tuple(self.static_extensions),
                           login_paths=self.login_entries(), client_ip=self.client_ip,
                           trusted_proxies=tuple(self.trusted_proxies), public_paths=tuple(self.public_paths),
                           free_text_paths=tuple(self.free_text_paths))

    def login_entries(self) -> tuple[str | LoginPath, ...]:
        return tuple(p if isinstance(p, str) else p.login_path() for p in self.login_paths)


def _either(codes: set[int]) -> str:
    """``{200, 401, 403}`` → "200, 401 or 403"."""
    words = [str(c) for c in sorted(codes)] or ["a failure status"]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


@task
class NginxLogs(Task[NginxLogsOptions]):
    """Traffic, visitors, status codes, latency per endpoint, top lists and security signals
    from nginx access logs, with an offline HTML report and GoAccess-identical counts."""

    name = "logs.nginx"
    summary = "access-log report: traffic, errors, p95 latency, top lists, attacks (GoAccess-exact counts)"
    target_kinds = ("nginx",)
    Options = NginxLogsOptions
    category = "monitoring"
    default_timeout = 3600

    @classmethod
    def head_start(cls, options: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Before the run is sent (see :meth:`Task.head_start <upkeeper.core.task.Task.head_start>`), on a machine
        with more than one CPU: a log big enough for large buffers gets pyarrow imported in a thread of its own
        (~0.1 s the scan would spend at its first buffer: :func:`upkeeper.logs.access.warm`; the run's first steps
        need not wait for it, the scan waits for what is left of it), and a read of the whole log
        (``incremental: false``) big enough for helper processes gets them started
        (:func:`upkeeper.logs.parallel.prestart`), each importing the same while this process does.  An
        incremental run does not know how much is new before it reads its cursors: it starts its helpers when it
        scans.  On one CPU both would only slow the CLI down."""
        from upkeeper.logs import access, ahead, parallel  # (the modules: a lazy stand-in holds copies)

        helpers, size = ahead.access_plan(options, target)
        if helpers:  # (none more when ``upkeeper run`` started them before it forked this worker: ahead.start)
            parallel.prestart(ahead.ACCESS, helpers)
        if size >= access.ARROW_MIN_BUFFER:  # in the background: the run, when it comes, is not held up by it
            threading.Thread(target=access.warm, daemon=True, name="warm-pyarrow").start()

    @ends_head_start
    def run(self, ctx: TaskContext, options: NginxLogsOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, NginxTarget)
        check_report_dir(ctx, options.report_dir)
        path = options.access_log or target.access_log
        if sources.is_glob(path):
            files = sources.discover_glob(path, rotated=options.rotated, max_files=options.max_files,
                                          rotated_dirs=options.rotated_dirs)
        else:
            files = sources.discover(path, rotated=options.rotated, max_files=options.max_files,
                                     rotated_dirs=options.rotated_dirs)
        if not files:
            why = f"no file matches {path}" if sources.is_glob(path) else not_a_log(path)
            return Result(status=Status.FAIL, summary=f"no access log at {path}", findings=[Finding(
                "logs.nginx.missing", Severity.CRITICAL, path, f"the access log: {why}",
                "set the target's access_log (or the job's access_log option) to the file nginx writes, or to "
                "a glob such as /var/log/nginx/*access.log")])
        cursors = ctx.state.get(CURSORS_KEY, []) if options.incremental else []
        parsing = f"{options.log_format}\n{options.client_ip}"  # what decides which lines parse
        restarted = None
        if options.incremental:  # a format changed after runs that could parse none of their lines: read them again
            cursors, restarted = unparsed_restart(ctx, UNPARSED_KEY, parsing, cursors)
        plan = sources.plan_reads(files, cursors, incremental=options.incremental)
        opts = options.scan_options()
        t0 = time.monotonic()

        def progress(done: int, total: int) -> None:
            ctx.progress(f"scanned {human_bytes(done)} of {human_bytes(total)}", done / total if total else None)

        # what the report needs of history, read while this process waits for the scan's helpers (it has no result
        # of the scan to work on then): the trends' queries were ~7 ms of the 100 MB run's end
        early: dict[str, Any] = {}

        def prefetch() -> None:
            try:
                early["hours"] = ctx.state.get(HOURS_KEY, {})
                if not ctx.dry_run:
                    early["trends"] = trends(ctx, TREND_METRICS)
            except Exception:  # (read again, and failing there if it must, where it is needed)
                early.clear()

        read_notes: list[parallel.ReadNote] = []
        wrong: list[access.WrongFormat] = []  # the files whose first lines none parse: not read on
        known_wrong = set(ctx.state.get(WRONG_GZ_KEY, [])) if options.incremental else set()
        wrong_gz: list[str] = []
        try:
            for r in list(plan.ranges):
                gz = f"{parsing}\n{r.file.dev}:{r.file.inode}:{r.file.size}" if r.file.gz else ""
                w = access.wrong_format(opts, parallel.unit_of(r),
                                        tail=0 if gz in known_wrong else access.PROBE_TAIL_LINES)
                if w is not None:
                    wrong.append(w)
                    sources.hold_back(plan, r)  # (its cursor stays where this run began reading it)
                    if gz:
                        wrong_gz.append(gz)
            units = access.units(plan.ranges, options.workers)
            ctx.log.info("reading %s from %d file(s)", human_bytes(plan.bytes_planned), len(plan.ranges))
            processes: dict[str, int] = {}
            partial, gz_read = parallel.scan("upkeeper.logs.access", opts, units, workers=options.workers,
                                             progress=progress, notes=read_notes,
                                             memory_limit=memory_limit(options.memory_limit_mb), processes=processes,
                                             idle=prefetch)
            log_processes(ctx, processes)
        except parallel.FileChanged as exc:
            raise TaskError(f"{exc}; nothing of this run was recorded",
                            "Try: run the job again: it reads the rotated file where the last run left off") from None
        except parallel.MemoryLimit as exc:
            raise memory_limit_error(ctx, exc, options.memory_limit_mb, "upkeeper logs nginx FILE") from None
        except OSError as exc:
            raise TaskError(f"cannot read {exc.filename or path}: {exc.strerror or exc}",
                            "Try: run upkeeper as a user that can read the nginx logs (group adm)") from None
        seconds = time.monotonic() - t0
        earlier = access.SecurityTail.from_json(ctx.state.get(TAIL_KEY)) if options.incremental else None
        page_sizes = _sizes(ctx.state.get(PAGES_KEY)) if options.incremental else []
        known_hosts = _hosts(ctx.state.get(HOSTS_KEY)) if options.incremental else []
        not_after = ctx.now() + FUTURE_SLACK  # later log times are a wrong clock or forged lines
        # redacted before anything is built from it: request lines and referrers carry ?token=…, and the
        # findings (history, --json), the HTML and the JSON report all show parts of them
        rep: dict[str, Any] = redact_obj(access.summarize(
            partial, top_n=options.top, failed_statuses=options.failed_statuses,
            min_endpoint_requests=options.min_endpoint_requests, not_found_burst=options.not_found_burst,
            brute_force=options.brute_force_threshold, earlier=earlier, log_format=options.log_format,
            page_sizes=page_sizes, public_paths=options.public_paths, client_ip=options.client_ip,
            server_names=options.server_names, known_hosts=known_hosts))
        rep["files"] = [{"path": r.file.path, "from": r.start, "to": r.end, "compressed": r.file.gz}
                        for r in plan.ranges]
        rep["scan_seconds"] = round(seconds, 3)
        rep["format_hint"] = _format_hint(plan, options, rep)
        latest = hour_key(not_after)
        rep["future_hours"] = {h: c for h, c in rep["hourly"].items() if h > latest}
        rep["future_after"] = latest
        hours = merge_hours(early["hours"] if "hours" in early else ctx.state.get(HOURS_KEY, {}), rep["hourly"],
                            incremental=options.incremental, not_after=latest)
        # an hour older than the kept days (a first run over a long log) is whole as this run read it
        rep["hourly_whole"] = {h: hours.get(h, c) for h, c in rep["hourly"].items() if h <= latest}
        rep["usual_peak_hour"] = usual_peak_hour(hours, rep["hourly_whole"])
        rep["log_format"] = options.log_format
        rep["goaccess"]["log_format_flags"] = to_goaccess(options.log_format, client_ip=options.client_ip).argv()
        rep["not_read"] = redact_obj([{"path": w.path, "from": w.start, "lines": w.lines, "reasons": w.reasons,
                                       "samples": w.samples} for w in wrong])
        reread = reread_message("log_format", restarted)
        findings = ([Finding("logs.nginx.reread", Severity.INFO, path, reread)] if reread else []) \
            + self._wrong_format(ctx, options, rep, wrong) \
            + read_findings("nginx", read_notes) + self._findings(ctx, options, rep, plan.notes, path)
        if plan.unreadable and not plan.readable:
            findings = nothing_read("nginx", findings)
        metrics = self._metrics(rep, seconds)
        rep["findings"] = [f.to_dict() for f in findings]
        rep["metrics"] = metrics

        artifacts: list[dict[str, Any]] = []
        if not ctx.dry_run:
            # the finished report redacted whole, once, for the HTML and the JSON alike (each walked it again): the
            # summary was before anything was built from it, this covers what was added since (files, findings …)
            shown: dict[str, Any] = redact_obj(rep)
            tr = with_current(early["trends"] if "trends" in early else trends(ctx, TREND_METRICS), metrics, ctx.now())
            html = report_html.access_report(
                shown, shown["findings"], title=f"Access log report — {ctx.target_name or path}",
                subtitle=f"{path} · {rep['first'] or '—'} → {rep['last'] or '—'} · job {ctx.job}",
                trends=tr, objectives={"latency_p95_ms": options.latency_p95_ms,
                                       "failed_pct": options.failed_rate_pct,
                                       "unparsed_pct": options.unparsed_warn_pct},
                footer=f"upkeeper logs.nginx · {rep['bytes_read']:,} bytes in {seconds:.2f}s · "
                       f"generated {ctx.now():%Y-%m-%d %H:%M UTC}", redacted=True) if options.html else None
            artifacts = write_reports(ctx, report_dir(ctx, options.report_dir), "access", shown, html,
                                      options.keep_reports, redacted=True)
            if options.incremental:
                ctx.state.set(CURSORS_KEY, sources.finish_cursors(plan, gz_read))
                ctx.state.set(WRONG_GZ_KEY, wrong_gz)
                remember_unparsed(ctx, UNPARSED_KEY, parsing, cursors, restarted, parsed=rep["requests"],
                                  unparsed=rep["invalid"])
                ctx.state.set(TAIL_KEY, access.security_tail(partial, earlier, not_after=not_after).to_json())
                # the front page's sizes, and those a catch-all answered to several probes of paths the site lacks
                fresh = [sz for sz, _c in partial.page_sizes.most_common(PAGES_KEPT)] + sorted(access.shared_sizes(partial))
                ctx.state.set(PAGES_KEY, list(dict.fromkeys(fresh + page_sizes))[:PAGES_KEPT])
                # the site's own hosts by its referers: a quiet run (few visitors) still knows them
                ctx.state.set(HOSTS_KEY, list(dict.fromkeys(access.referred_hosts(partial) + known_hosts))[:HOSTS_KEPT])
            ctx.state.set(HOURS_KEY, hours)
        summary = self._summary(rep, artifacts, since_last=bool(cursors), files=plan.readable - len(wrong),
                                unreadable=plan.unreadable)
        if wrong:  # (what was read, if anything, after it)
            summary = (f"{len(wrong)} file(s) not read: their first lines do not match the log_format "
                       f"({', '.join(w.path for w in wrong)})" + (f"; {summary}" if rep["lines"] else ""))
        return Result(summary=summary,
                      findings=findings, metrics=metrics, artifacts=artifacts)

    # -- pieces --------------------------------------------------------------------------------

    @staticmethod
    def _summary(rep: dict[str, Any], artifacts: list[dict[str, Any]], *, since_last: bool, files: int,
                 unreadable: list[str]) -> str:
        """``since_last``: this run read on from an earlier run's cursors (else it read the ``files`` whole);
        ``files`` could be read, ``unreadable`` could not."""
        if unreadable and not files:
            text = f"nothing read: the access log could not be read ({unread_text(unreadable)})"
        elif not rep["lines"]:
            text = "no new log lines since the last run" if since_last else f"no log lines in {files} file(s)"
        else:
            p95 = rep["latency"]["overall"].get("p95")
            failed = rep["failed_pct"]  # (None, as the bandwidth: the log_format has no $status / bytes sent)
            text = (f"{rep['requests']:,} requests, {rep['visitors']:,} visitors, "
                    + (f"{human_bytes(rep['bandwidth'])}, " if rep["bandwidth"] is not None else "")
                    + (f"failed {failed:.3f} %" if failed is not None else "failed n/a (no $status in the format)")
                    + (f", p95 {p95:.0f} ms" if p95 is not None else "")
                    + (f", {rep['invalid']:,} unparsed" if rep["invalid"] else ""))
        if unreadable and files:
            text += f"; {len(unreadable)} file(s) could not be read: {unread_text(unreadable)}"
        html = next((a["path"] for a in artifacts if a.get("format") == "html"), None)
        return text + (f" — report: {html}" if html else "")

    @staticmethod
    def _metrics(rep: dict[str, Any], seconds: float) -> dict[str, float]:
        lat = rep["latency"]["overall"]
        hours = list(rep["hourly"].values())
        whole = list(rep.get("hourly_whole", rep["hourly"]).values())
        m: dict[str, float] = {
            "lines": float(rep["lines"]), "requests": float(rep["requests"]), "invalid": float(rep["invalid"]),
            "unparsed_pct": float(rep["unparsed_pct"]), "visitors": float(rep["visitors"]),
            "bytes_read": float(rep["bytes_read"]),
            "scan_seconds": round(seconds, 3),
            "attacks": float(sum(a["hits"] for a in rep["security"]["attacks"])),
            "failed_logins": float(rep["security"]["failed_logins"]),
        }
        if rep["bots"]["bot_pct"] is not None:  # (None: the log_format has no $http_user_agent)
            m["bots_pct"] = float(rep["bots"]["bot_pct"])
        for name, key in (("bandwidth_bytes", "bandwidth"), ("rate_4xx_pct", "rate_4xx_pct"),
                          ("rate_5xx_pct", "rate_5xx_pct"), ("failed_pct", "failed_pct")):
            if rep[key] is not None:  # (None: the log_format has no $status, or no bytes sent)
                m[name] = float(rep[key])
        if hours:
            m["requests_per_hour"] = round(sum(hours) / len(hours), 2)
        if whole:
            m["peak_hour_requests"] = float(max(whole))
        for p in ("p50", "p95", "p99"):
            if p in lat:
                m[f"latency_{p}_ms"] = float(lat[p])
        return m

    def _findings(self, ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], notes: list[PlanNote],
                  subject: str) -> list[Finding]:
        out = plan_findings("nginx", notes, o.rotated_dirs)
        if not rep["lines"]:
            return out
        checks = (self._unparsed, self._format, self._failed, self._latency, self._sites, self._security,
                  self._exposed, self._future, self._spike, self._proxy, self._passed_on, self._pruned)
        for check in checks:
            try:
                out += check(ctx, o, rep, subject)
            except Exception as exc:  # one failing check never stops the others
                out.append(Finding("logs.nginx.check_failed", Severity.WARNING, check.__name__.strip("_"),
                                   f"the check failed: {exc}"))
        return out

    @staticmethod
    def _format(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        if not (h := rep.get("format_hint")):
            return []
        timed = has_variable(NAMED_FORMATS.get(h["log_format"], h["log_format"]), "request_time")
        gains = timed and not rep["latency"]["available"]
        where = f"jobs -> {ctx.job} -> options -> log_format" if ctx.job else "the job's log_format option"
        parsed = h.get("current_parsed", h["lines"])
        longer = parsed > h["current_fits"]
        return [Finding(
            "logs.nginx.log_format_hint", Severity.WARNING if gains else Severity.INFO, subject,
            access.format_mismatch(h["lines"], parsed, h["current_fits"], h["tail"], o.log_format)
            + (" — their $request_time among it, so latency and the p95 objective are not judged"
               if gains and longer else "")
            + (", and such lines take the line-by-line parser, about 4x slower" if longer else "")
            + f"; log_format {h['log_format']!r} reads {h['fits']:,} of them field for field",
            f"set {where} to {h['log_format']!r} after checking it against the nginx log_format line that writes "
            "this log (docs/logs.md)", data=h)]

    @staticmethod
    def _pruned(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        if not (pruned := rep["goaccess"].get("requests_pruned")):
            return []
        return [Finding("logs.nginx.requests_pruned", Severity.INFO, subject,
                        f"more distinct request URLs than a scanning process keeps ({access.REQUESTS_KEPT:,}): "
                        f"{pruned['hits']:,} hits of the least seen were left out of the requested-files list, "
                        f"whose counts may each miss up to {pruned['max_error']:,} (the totals, the top paths and "
                        "the endpoints are whole)",
                        "nothing to do for the figures; so many distinct URLs come from cache-busting query "
                        "strings (?_=<time>) or a scanner: see the top clients and paths", value=pruned["hits"])]

    @staticmethod
    def _wrong_format(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any],
                      wrong: list[access.WrongFormat]) -> list[Finding]:
        """A file whose first lines none parse (:func:`upkeeper.logs.access.wrong_format`) was not read: critical
        when no line of the run parsed (the log_format is not this log's), a warning when other lines did (a file
        written before nginx's log_format changed, another site's log with a format of its own)."""
        out = []
        others = rep["requests"] > 0
        where = f"jobs.{ctx.job}.options.log_format" if ctx.job else "the job's log_format option"
        for w, data in zip(wrong, rep["not_read"], strict=True):
            reasons = ", ".join(f"{k} ({v:,})" for k, v in data["reasons"].items())
            first = data["samples"][0]["line"] if data["samples"] else ""
            kept = ("its read position is kept: once the log_format matches, it is read from there"
                    if o.incremental else "")
            out.append(Finding(
                "logs.nginx.wrong_format", Severity.WARNING if others else Severity.CRITICAL, w.path,
                f"{w.path}: none of the first {w.lines:,} lines read (from byte {w.start:,}) parse with the "
                f"log_format {o.log_format!r} ({reasons}), so the file was not read on"
                + (" — the other files' lines parse: was it written before nginx's log_format changed?"
                   if others else "") + (f"; {kept}" if kept else "") + f". First line: {first}",
                f"set {where} to the format string of the nginx 'log_format' directive that writes this log "
                "(or combined, combined_timed, main; see docs/logs.md)",
                value=w.lines, data={"log_format": o.log_format, "from": w.start, "lines": w.lines,
                                     "reasons": data["reasons"], "samples": data["samples"]}))
        return out

    @staticmethod
    def _unparsed(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        if rep["unparsed_pct"] <= o.unparsed_warn_pct:
            return []
        reasons = ", ".join(f"{k} ({v})" for k, v in rep["invalid_reasons"].items())
        sample = rep["invalid_samples"][0]["line"] if rep["invalid_samples"] else ""
        return [Finding("logs.nginx.unparsed", Severity.WARNING, subject,
                        f"{rep['unparsed_pct']:.2f} % of lines ({rep['invalid']:,}) could not be parsed: {reasons}"
                        + (unparsed_note("log_format", rep["requests"], rep["invalid"]) if o.incremental else ""),
                        "check that log_format matches the nginx 'log_format' of this log; the report lists samples",
                        value=rep["unparsed_pct"], threshold=o.unparsed_warn_pct,
                        data={"reasons": rep["invalid_reasons"], "sample": sample})]

    @staticmethod
    def _failed(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        if rep["failed_pct"] is None:
            if not rep["requests"]:
                return []
            return [Finding("logs.nginx.no_status", Severity.INFO, subject,
                            "the log format has no $status, so the failed-request rate (and the 4xx/5xx rates) "
                            "cannot be checked",
                            "add $status to the nginx log_format (and to the job's log_format)")]
        if rep["failed_pct"] <= o.failed_rate_pct:
            return []
        worst = rep["failing_endpoints"][:5]
        where = ", ".join(f"{e['endpoint']} ({e['failed']})" for e in worst)
        return [Finding("logs.nginx.failed_rate", Severity.WARNING, subject,
                        f"{rep['failed_pct']:.3f} % of requests failed ({rep['failed']:,} with {o.failed_statuses}), "
                        f"objective < {o.failed_rate_pct:g} %" + (f"; most from {where}" if where else ""),
                        "look at the application and upstream error logs for these endpoints (logs.errors)",
                        value=rep["failed_pct"], threshold=o.failed_rate_pct, data={"endpoints": worst})]

    @staticmethod
    def _latency(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        lat = rep["latency"]["overall"]
        if not rep["latency"]["available"]:
            if (h := rep.get("format_hint")) and has_variable(NAMED_FORMATS.get(h["log_format"], h["log_format"]),
                                                              "request_time"):
                return []  # the log has it: the format hint says which log_format reads it (_format)
            return [Finding("logs.nginx.no_latency", Severity.INFO, subject,
                            "the log format has no $request_time, so latency cannot be checked",
                            "add $request_time to the nginx log_format (and set log_format: combined_timed)")]
        timed = rep["requests"] - rep["latency"].get("untimed_upgrades", 0)
        if not lat and timed > 0:  # the format has $request_time, and not one line reached it
            return [Finding("logs.nginx.no_latency", Severity.WARNING, subject,
                            f"none of the {timed:,} requests read had a $request_time value (their lines end before it, "
                            "or hold no number there): the log_format is not the one nginx writes this log with, and "
                            "latency cannot be checked",
                            "set log_format to the format of the access_log's nginx log_format line (combined "
                            "when it names none)", value=0, data={"requests": timed})]
        out = []
        if lat.get("p95", 0.0) > o.latency_p95_ms:
            out.append(Finding("logs.nginx.latency_p95", Severity.WARNING, subject,
                               f"p95 response time {lat['p95']:.0f} ms (p50 {lat['p50']:.0f}, p99 {lat['p99']:.0f}), "
                               f"objective < {o.latency_p95_ms:g} ms",
                               "see the slowest endpoints in the report; check slow queries (logs.postgres)",
                               value=lat["p95"], threshold=o.latency_p95_ms))
        for e in rep["slowest_endpoints"]:
            if e.get("p95", 0.0) <= o.latency_p95_ms:
                break
            out.append(Finding("logs.nginx.slow_endpoint", Severity.WARNING, e["endpoint"],
                               f"p95 {e['p95']:.0f} ms over {e['hits']:,} requests (p50 {e['p50']:.0f}, max "
                               f"{e['max']:.0f}), objective < {o.latency_p95_ms:g} ms",
                               "profile this endpoint; cache or move slow work to a background job",
                               value=e["p95"], threshold=o.latency_p95_ms))
        return out

    @staticmethod
    def _sites(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        """With several sites in one log, each is held to the objectives on its own: a small site that fails
        disappears in the figures of a busy one."""
        sites = rep["vhosts"]
        if len(sites) < 2:
            return []
        out = []
        for v in sites:
            if v["requests"] < o.min_endpoint_requests:
                continue
            missed = []
            if v["failed_pct"] is not None and v["failed_pct"] > o.failed_rate_pct:
                missed.append(f"{v['failed_pct']:.3f} % failed ({v['failed']:,}), objective < {o.failed_rate_pct:g} %")
            if v.get("p95", 0.0) > o.latency_p95_ms and v["timed"] >= o.min_endpoint_requests:
                missed.append(f"p95 {v['p95']:.0f} ms, objective < {o.latency_p95_ms:g} ms")
            if missed:
                out.append(Finding("logs.nginx.site_objectives", Severity.WARNING, v["host"],
                                   f"site {v['host']} ({v['requests']:,} requests): " + "; ".join(missed),
                                   "see the site's paths in the report; check its application and upstream logs",
                                   data={k: v[k] for k in ("requests", "failed", "failed_pct") if k in v}
                                   | {k: v[k] for k in ("p50", "p95", "p99") if k in v}))
        return out

    @staticmethod
    def _security(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        sec = rep["security"]
        out = []
        for a in sec["attacks"]:
            sev = Severity.WARNING if a["ok"] and a["category"] != "scanner_probe" else Severity.INFO
            out.append(Finding(
                f"logs.nginx.attack.{a['category']}", sev, a["category"],
                f"{a['hits']:,} {a['category'].replace('_', ' ')} request(s) from {a['clients']} client(s), "
                f"{a['ok']} answered 2xx"
                + (f" ({a['catch_all']} more with the site's catch-all page, its answer to any path)"
                   if a.get("catch_all") else "")
                + (f" ({a['free_text']} more answered 2xx on free_text_paths, text in their query string)"
                   if a.get("free_text") else "")
                + f"; e.g. {a['samples'][0] if a['samples'] else ''}",
                ATTACK_REMEDIATION.get(a["category"], "")
                + (f"the {a['ok']} request(s) answered 2xx deserve a look at the application; " if a["ok"] else
                   "none was answered 2xx; ")
                + "block persistent clients (fail2ban, nginx deny, WAF)", value=a["hits"],
                data={"clients": a["top_clients"]}))
        for s in sec["scanners"]:
            out.append(Finding("logs.nginx.scanner_agent", Severity.INFO, s["scanner"],
                               f"{s['hits']:,} request(s) with "
                               + (f"a {s['scanner'].removesuffix('_in_referer')} exploit as the referer"
                                  if s["scanner"].endswith("_in_referer") else f"the {s['scanner']} user agent")
                               + " from "
                               f"{s['client_count']} client(s): {', '.join(s['clients'][:5])}",
                               "known vulnerability scanners: block them or make sure you ordered the scan",
                               value=s["hits"], data={"clients": s["clients"]}))
        for b in sec["not_found_bursts"][:o.top]:
            out.append(Finding("logs.nginx.not_found_burst", Severity.WARNING, b["ip"],
                               f"{b['max_in_window']} requests answered 404 within two minutes (from "
                               f"{b['from']}), {b['total']} in the lines this run read — probing for files",
                               "block the client (fail2ban nginx-botsearch, nginx deny)",
                               value=b["max_in_window"], threshold=o.not_found_burst))
        if (d := sec.get("distributed_logins")) is not None:
            out.append(Finding(
                "logs.nginx.credential_stuffing", Severity.WARNING, "logins",
                f"{d['failed']:,} failed logins from {d['clients']:,} clients within 20 minutes (from {d['from']}), "
                f"{d['succeeded']:,} login(s) succeeded: credential stuffing spread over many addresses (each under "
                "the brute-force threshold), or a login that fails for everyone",
                "if the application's logins work, rate-limit the login path globally (nginx limit_req on the path, "
                "a CAPTCHA or a WAF rule), watch for accounts taken over, and block the networks most of the "
                "attempts come from; if they fail for everyone, check the application",
                value=float(d["failed"]),
                threshold=float(o.brute_force_threshold * access.DISTRIBUTED_FACTOR),
                data={k: d[k] for k in ("clients", "succeeded", "from")}))
        logins = access.LoginMatcher(o.login_entries())
        for b in sec["brute_force"][:o.top]:
            answered = _either(set().union(*(logins.failure_codes(x.encode()) or () for x in b["paths"])))
            attempts = [x for x in b["paths"] if attempts_only(x)]
            noun = ("login attempts" if len(attempts) == len(b["paths"]) else
                    "failed logins and login attempts" if attempts else "failed logins")
            why = ("; XML-RPC answers a wrong password 200 as it does a right one, and one system.multicall POST "
                   "can try hundreds of passwords" if attempts else "")
            ok = int(b.get("succeeded", 0))
            shared = bool(b.get("shared")) and not attempts
            minutes = int(b.get("window_minutes", 20))
            slow = minutes > 20  # under the threshold in every 20 minutes, over twice it in an hour
            # many people behind one address (a NAT, an office, a carrier's CGNAT) who now and then mistype: their
            # logins mostly succeed, a brute force's or credential stuffing's almost never — an info, not a page
            out.append(Finding("logs.nginx.brute_force", Severity.INFO if shared else Severity.WARNING, b["ip"],
                               f"{b['max_per_window']} {noun} (POST {', '.join(b['paths'])} answered "
                               f"{answered}{why}) within {minutes} minutes (from {b['from']}), {b['total']} in the "
                               "lines this run read"
                               + (f", paced under {o.brute_force_threshold} in 20 minutes: a slow brute force or "
                                  "credential stuffing" if slow else "")
                               + (f"; {ok} login(s) from the same address succeeded in those {minutes} minutes: "
                                  "likely many users behind one address (NAT, office, mobile carrier) mistyping, not "
                                  "a brute force" if shared else
                                  f"; {ok} login(s) from the same address succeeded in those {minutes} minutes" if ok
                                  else ""),
                               "if that address is a shared one (a NAT, an office, a proxy), nothing to do; else "
                               "rate-limit the login (nginx limit_req) and check the accounts it tried" if shared else
                               "rate-limit the login (nginx limit_req), ban the client (fail2ban), check the "
                               "accounts it tried", value=b["max_per_window"],
                               threshold=o.brute_force_threshold * (access.SLOW_LOGIN_FACTOR if slow else 1),
                               data={"succeeded": ok, "window_minutes": minutes}))
        return out

    @staticmethod
    def _exposed(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        out = []
        for e in rep["security"]["exposed"]:
            clients = ", ".join(e["clients"][:5]) + (" …" if e["client_count"] > 5 else "")
            statuses = _either(set(e["statuses"]))
            sizes = " or ".join(f"{b:,}" for b in e["bytes"][:3]) + (" …" if len(e["bytes"]) > 3 else "")
            what = ("the file was likely handed out: treat every secret in it as leaked" if e["secret"] else
                    "it discloses the server's or the application's inside")
            fix = (f"deny it in nginx (location ~ /\\. {{ deny all; }} for dotfiles, or location = {e['path']} "
                   "{ deny all; }) and move it out of the docroot; then rotate every secret it holds (passwords, "
                   "API keys, tokens) and check the clients' other requests"
                   if e["secret"] else
                   f"deny it in nginx (location = {e['path']} {{ deny all; }}, or allow only 127.0.0.1) or remove "
                   "the file; if it is public on purpose, list it in public_paths")
            out.append(Finding(
                "logs.nginx.exposed_file", Severity.CRITICAL if e["secret"] else Severity.WARNING, e["path"],
                f"{e['path']} ({e['file'].replace('_', ' ')}) answered {statuses} with {sizes} bytes, {e['hits']:,} "
                f"time(s) to {e['client_count']} client(s) ({clients}), first at {e['first']}: {what}",
                fix, value=float(e["hits"]),
                data={"file": e["file"], "statuses": e["statuses"], "bytes": e["bytes"], "clients": e["clients"],
                      "client_count": e["client_count"], "first": e["first"]}))
        return out

    @staticmethod
    def _future(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        future = rep["future_hours"]
        if not future:
            return []
        n = sum(future.values())
        return [Finding("logs.nginx.future_lines", Severity.WARNING, subject,
                        f"{n:,} line(s) dated after {rep['future_after']} (a day past this run's clock), up to "
                        f"{max(future)}: left out of the hourly counts and the spike check",
                        "a wrong clock on the web server, or forged log lines: check the server's time (NTP) "
                        "and who can write to the log", value=float(n), data={"hours": future})]

    @staticmethod
    def _spike(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        # the busiest hour this run read, counted whole (with the earlier runs' lines of that hour), against
        # the usual busiest hour of a day: like for like whatever the schedule — a job every 15 minutes
        # reads quarters of hours, and a run after a gap whole ones — and against the mean hour instead, an
        # ordinary afternoon peak would stand out from the quiet nights every time
        hourly, usual_peak = rep["hourly_whole"], rep["usual_peak_hour"]
        if not hourly or usual_peak is None:
            return []
        try:
            runs = len(ctx.metrics.series("requests", last=o.spike_min_runs))
        except Exception:  # history unavailable: nothing to judge against
            return []
        if runs < o.spike_min_runs:
            return []
        usual, days = usual_peak["requests"], usual_peak["days"]
        peak_hour, peak = max(hourly.items(), key=lambda kv: kv[1])
        if usual <= 0 or peak <= o.spike_factor * usual:
            return []
        return [Finding("logs.nginx.traffic_spike", Severity.WARNING, peak_hour,
                        f"{peak:,} requests in the hour {peak_hour}, {peak / usual:.1f}x the usual {usual:,.0f} in "
                        f"the busiest hour of a day ("
                        + (f"the busiest of the {days} day(s) before: fewer than {SPIKE_BASELINE_DAYS} known yet"
                           if usual_peak.get("of") == "busiest" else
                           f"median of the {days} {usual_peak.get('weekday')}s before, higher than the last "
                           f"{SPIKE_BASELINE_DAYS} days'" if usual_peak.get("of") == "weekday" else
                           f"median of the {days} day(s) before") + ")",
                        "check the top clients and paths of that hour: a crawler, an attack or a campaign?",
                        value=float(peak), threshold=round(o.spike_factor * usual, 1))]


    @staticmethod
    def _proxy(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        proxy = rep["clients"]["proxy"]
        if proxy is None:
            return []
        return [proxy_finding(proxy, o.client_ip, subject)]

    @staticmethod
    def _passed_on(ctx: TaskContext, o: NginxLogsOptions, rep: dict[str, Any], subject: str) -> list[Finding]:
        return passed_on_findings(rep["clients"], o.client_ip, subject, invalid_warn_pct=o.unparsed_warn_pct)


def _sizes(data: Any) -> list[int]:
    """The catch-all body sizes kept in the job's state; anything else (no state yet, another shape) is none."""
    if not isinstance(data, list):
        return []
    return [int(x) for x in data if isinstance(x, int) and not isinstance(x, bool)][:PAGES_KEPT]


def _hosts(data: Any) -> list[str]:
    """The site's own hosts kept in the job's state; anything else (no state yet, another shape) is none."""
    if not isinstance(data, list):
        return []
    return [x for x in data if isinstance(x, str)][:HOSTS_KEPT]


#: the realip directives that make nginx log the client passed on in each variable as $remote_addr
REALIP_HEADER = {"http_x_forwarded_for": "real_ip_header X-Forwarded-For; real_ip_recursive on;",
                 "http_x_real_ip": "real_ip_header X-Real-IP;", "proxy_protocol_addr": "real_ip_header proxy_protocol;"}


def realip_directives(var: str) -> str:
    """The ``real_ip_header`` directive(s) that make nginx take the client from ``var`` itself."""
    return REALIP_HEADER.get(var) or f"real_ip_header {header_name(var)};"


def passed_on_findings(clients: dict[str, Any], client_ip: str, subject: str, *,
                       invalid_warn_pct: float) -> list[Finding]:
    """With ``client_ip`` other than remote_addr: ``logs.nginx.client_ip_untrusted`` when the passed-on client
    was ignored on most requests that carry one because ``$remote_addr`` is not in trusted_proxies (a CDN whose
    ranges are missing: nothing changed, silently), ``logs.nginx.client_ip_invalid`` when more than
    ``invalid_warn_pct`` % of requests came from a trusted proxy with no address in it (both fall back to
    ``$remote_addr``, as nginx's realip module does).  ``clients``: the report's ``clients`` part."""
    po, var = clients.get("passed_on"), client_header(client_ip)
    if not po or var is None:
        return []
    out = []
    carried = po["used"] + po["untrusted"] + po["invalid"]
    total = carried + po["absent"]
    # a private balancer that is every client: proxy_finding says it already
    if clients.get("proxy") is None and po["untrusted"] >= access.PROXY_MIN_REQUESTS and 2 * po["untrusted"] >= carried:
        examples = ", ".join(po["untrusted_examples"][:3])
        ranges = (" (Cloudflare's are at https://www.cloudflare.com/ips/)" if var == "http_cf_connecting_ip"
                  else "")
        out.append(Finding(
            "logs.nginx.client_ip_untrusted", Severity.WARNING, subject,
            f"${var} was ignored on {po['untrusted']:,} of the {carried:,} requests that carry it "
            f"({100.0 * po['untrusted'] / carried:.1f} %): they came from addresses that are not in trusted_proxies "
            f"(such as {examples}), so unique visitors, top clients, 404 bursts and brute force count those "
            "addresses, not the clients",
            f"if they are your CDN's or proxies' addresses, add their networks to trusted_proxies{ranges} (nginx: "
            f"set_real_ip_from); if not, clients reach nginx without the proxy and can write any ${var}",
            value=float(po["untrusted"]), data=po))
    pct = 100.0 * po["invalid"] / total if total else 0.0
    if po["invalid"] and pct > invalid_warn_pct:
        examples = ", ".join(repr(x) for x in po["invalid_examples"][:3])
        out.append(Finding(
            "logs.nginx.client_ip_invalid", Severity.WARNING, subject,
            f"{po['invalid']:,} requests ({pct:.2f} %) came from a trusted proxy with no address in ${var} (such as "
            f"{examples}): each is counted under the proxy's $remote_addr, as nginx's realip module does",
            f"check what the proxy writes in {header_name(var) if var.startswith('http_') else '$' + var}: an "
            "address, optionally with a port ('203.0.113.7', '[2001:db8::7]:443'), or a list ending with one",
            value=round(pct, 3), threshold=invalid_warn_pct, data=po))
    return out


def proxy_finding(proxy: dict[str, Any], client_ip: str, subject: str) -> Finding:
    """``logs.nginx.proxy_address``: nearly every request comes from one private address (see clients_summary)."""
    what = (f"{proxy['share_pct']:.1f} % of requests come from {proxy['ip']}, a private address — a load balancer or "
            "reverse proxy in front of nginx")
    wrong = "so unique visitors, top clients, 404 bursts and brute force count the proxy, not the clients"
    var = proxy.get("forwarded_variable") or client_header(client_ip) or "http_x_forwarded_for"
    if client_header(client_ip) is not None:
        return Finding("logs.nginx.proxy_address", Severity.WARNING, subject,
                       f"{what}, even after reading ${var}: {proxy['ip']} is not in trusted_proxies, {wrong}",
                       f"add {proxy['ip']} (or its network) to trusted_proxies", data=proxy)
    if proxy["forwarded_for_distinct"] > 1:
        mode = client_mode(var)
        return Finding("logs.nginx.proxy_address", Severity.WARNING, subject,
                       f"{what}, while ${var} holds {proxy['forwarded_for_distinct']}"
                       f"{'+' if proxy['forwarded_for_distinct'] >= access.FORWARDED_KEEP else ''} different values: {wrong}",
                       f"set client_ip: {mode} (and trusted_proxies to the proxies' addresses), or make nginx "
                       f"log the client: set_real_ip_from <proxy network>; {realip_directives(var)}", data=proxy)
    return Finding("logs.nginx.proxy_address", Severity.INFO, subject,
                   f"{proxy['share_pct']:.1f} % of requests come from {proxy['ip']}, a private address, and the log "
                   "has no $http_x_forwarded_for, $http_x_real_ip or $proxy_protocol_addr: if that is a load balancer "
                   "or reverse proxy in front of nginx, unique visitors, top clients, 404 bursts and brute force "
                   "count it, not the clients",
                   "behind a proxy, use nginx's realip module (set_real_ip_from, real_ip_header X-Forwarded-For, "
                   "X-Real-IP or proxy_protocol), or log the header (\"$http_x_forwarded_for\") and set client_ip: "
                   "x_forwarded_for (x_real_ip, proxy_protocol)", data=proxy)


def hour_key(when: datetime) -> str:
    """The ``YYYY-MM-DD HH:00`` key of the hour holding ``when``."""
    return f"{when:%Y-%m-%d %H}:00"


def _hour(h: Any) -> bool:
    """Is ``h`` an hour as :func:`merge_hours` keeps them (``YYYY-MM-DD HH:00``)?"""
    if not isinstance(h, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00", h):
        return False
    try:
        date.fromisoformat(h[:10])
    except ValueError:
        return False
    return True


def merge_hours(earlier: dict[str, int], now: dict[str, int], *, incremental: bool,
                not_after: str) -> dict[str, int]:
    """Requests per hour (``YYYY-MM-DD HH:00``, log time) over the runs: an incremental run adds its lines
    to the hour's count, a run that read everything replaces it; the last :data:`HOURS_KEPT_DAYS` days
    before the newest hour kept.  Hours after ``not_after`` (a wrong clock, forged lines) are never kept:
    one line dated 2099 would otherwise push every real hour out."""
    # (read back from history: an hour that is not 'YYYY-MM-DD HH:00' with a whole number -- damaged, another
    # version's -- is dropped)
    out = {h: c for h, c in earlier.items() if _hour(h) and type(c) is int} if isinstance(earlier, dict) else {}
    for h, c in now.items():
        out[h] = out.get(h, 0) + c if incremental else c
    out = {h: c for h, c in out.items() if h <= not_after}
    if not out:
        return out
    oldest = (date.fromisoformat(max(out)[:10]) - timedelta(days=HOURS_KEPT_DAYS)).isoformat()
    return {h: out[h] for h in sorted(out) if h[:10] > oldest}


def usual_peak_hour(hours: dict[str, int], judged: dict[str, int]) -> dict[str, Any] | None:
    """The median of the busiest hour of each of the :data:`SPIKE_BASELINE_DAYS` days before the date of the
    busiest ``judged`` hour, or of each same day of the week before it in the kept counts when that is higher (two
    or more of them: after a quiet week), and how many days that is (None if there is none).  The first date of ``hours``
    is left out: the log, or the kept counts, may begin in the middle of it.  With fewer days known than that
    (a job's first week) the busiest of them instead: the median of a Friday, a Saturday and a Sunday is a weekend
    day's, and an ordinary Monday of a site busy on weekdays was three or four times that, a spike."""
    if not judged:
        return None
    day = max(judged.items(), key=lambda kv: kv[1])[0][:10]
    peaks: dict[str, int] = {}
    first = min(hours)[:10]
    for h, c in hours.items():
        if first < h[:10] < day:
            peaks[h[:10]] = max(peaks.get(h[:10], 0), c)
    recent = [peaks[d] for d in sorted(peaks)[-SPIKE_BASELINE_DAYS:]]
    if not recent:
        return None
    if len(recent) < SPIKE_BASELINE_DAYS:
        return {"requests": max(recent), "days": len(recent), "of": "busiest"}
    usual = statistics.median(recent)
    # the same day of the week in the kept weeks: after a quiet week (a holiday, an outage) the median of the 7
    # days before is a quiet day's, and the first ordinary workday would be a spike
    weekday = date.fromisoformat(day).weekday()
    same = [c for d, c in sorted(peaks.items()) if date.fromisoformat(d).weekday() == weekday]
    if len(same) >= 2 and statistics.median(same) > usual:
        return {"requests": statistics.median(same), "days": len(same), "of": "weekday",
                "weekday": date.fromisoformat(day).strftime("%A")}
    return {"requests": usual, "days": len(recent), "of": "median"}
