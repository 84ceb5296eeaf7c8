"""``upkeeper logs …``: analyze log files now, without a config — a Rich summary, JSON or an HTML report.

The scheduled jobs (logs.nginx, logs.postgres, logs.errors) do the same with history,
incremental reading and findings; these commands are for a look at any file.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from upkeeper.cli._app import app, console, err_console, print_json
from upkeeper.errors import UpkeeperError, UsageError
from upkeeper.fmt import human_bytes, printable
from upkeeper.redact import redact_obj

logs_app = typer.Typer(help="Analyze nginx access logs, PostgreSQL logs and error logs now (no config needed).",
                       no_args_is_help=True)
app.add_typer(logs_app, name="logs")


def _units_of(files: list[Any], continuation: bytes, workers: int, record_start: Any = None,
              per_process: int = 3) -> list[Any]:
    from upkeeper.logs import parallel
    from upkeeper.logs.sources import ReadRange

    ranges = [ReadRange(lf, 0, None if lf.gz else lf.size, final=True) for lf in files]
    return parallel.units_for(ranges, continuation=continuation, workers=workers, record_start=record_start,
                              per_process=per_process)


def _find_logs(args: list[str], *, rotated: bool, max_files: int, example: str = "'/var/log/nginx/*access.log'",
               expand: Callable[[str], list[Any]] | None = None) -> list[Any]:
    """The files the arguments name, found as the logs.* tasks find theirs: a path with its rotated files,
    a glob (quoted, so that the shell leaves it alone) with those of each log it matches (``expand``: the
    task's own way to expand one).  A file named twice (or under two names: a link) is read once: a shell that
    expands ``*.log*`` names the rotated files the live log brings along."""
    from upkeeper.logs.sources import discover, discover_glob, is_glob

    out: dict[tuple[int, int], Any] = {}  # by device and inode: a link to a file named too is that file
    for arg in args:
        if is_glob(arg) and not Path(arg).exists():
            found = (expand or (lambda g: discover_glob(g, rotated=rotated, max_files=max_files)))(arg)
            if not found:
                raise UsageError(f"{arg}: no file matches", f"Try: check the pattern, e.g. {example} (quoted, "
                                 "so that upkeeper expands it)")
        else:
            _check_log(Path(arg))
            found = discover(arg, rotated=rotated, max_files=max_files)
        for lf in found:
            _check_log(Path(lf.path))
            out.setdefault((lf.dev, lf.inode), lf)
    return list(out.values())


def _check_log(p: Path) -> None:
    """A usage error unless ``p`` is a log file this user can read: missing, a directory, unreadable."""
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, not a log file",
                         f"Try: give the log files in it, e.g. {shlex.quote(str(p).rstrip('/'))}/*.log")
    if not p.is_file():
        raise UsageError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file",
                         "Try: give the path of a log file")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{p}: cannot read ({exc.strerror or exc})",
                         "Try: run as a user that can read it (the adm group reads /var/log/nginx)") from None


def _check_html(html: Path | None) -> None:
    """Refuse an --html path that cannot be written before any log is read."""
    if html is None:
        return
    if html.is_dir():
        raise UsageError(f"--html {html}: is a directory",
                         f"Try: give a file name, e.g. --html {shlex.quote(str(html).rstrip('/'))}/report.html")
    parent = html.parent
    if not parent.is_dir():
        # a file on the way (--html access.log/report.html): no mkdir -p makes that a directory
        blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise UsageError(f"--html {html}: {blocker} is a file, not a directory",
                             f"Try: write the report elsewhere, e.g. --html {shlex.quote(str(blocker))}.html")
        raise UsageError(f"--html {html}: the directory {parent} does not exist",
                         f"Try: create it (mkdir -p {shlex.quote(str(parent))}) or write the report elsewhere")


def _write_html(html: Path, text: str) -> None:
    """Write the report whole or not at all (a file beside it, renamed over it, with the old one's owner, group
    and permissions): an interrupted run never leaves a half-written report under the name asked for.  A device
    or a pipe (/dev/stdout) is written as it is; a symbolic link is written through."""
    from upkeeper.cli._app import write_output_file

    write_output_file(html, text.encode("utf-8"), "--html")


def _warn_read_notes(notes: list[Any]) -> list[str]:
    """Say on stderr which files were damaged (read up to the damage) or had trailing garbage; the messages."""
    for n in notes:
        err_console.print(f"Warning: {n.message}", style="yellow", markup=False)
    return [n.message for n in notes]


#: more unparsed lines than this (%) is worth a warning: Netdata's threshold, the tasks' unparsed_warn_pct default
UNPARSED_WARN_PCT = 1.0


def _warn_unparsed(pct: float, count: int, what: str, sample: str, hint: str) -> None:
    """Say on stderr that many lines did not parse (a wrong --format/--prefix reads as an empty log), with the
    first one and how to fix it."""
    if pct <= UNPARSED_WARN_PCT:
        return
    err_console.print(f"Warning: {pct:.2f} % of lines ({count:,}) {what}" + (f"; the first: {printable(sample)}"
                      if sample else ""), style="yellow", markup=False)
    err_console.print(hint, markup=False)


CLIENT_IP_HELP = ("remote_addr, or behind a load balancer or CDN x_forwarded_for, x_real_ip, proxy_protocol or "
                  "header:NAME (needs $http_x_forwarded_for, $http_x_real_ip, $proxy_protocol_addr or $http_name in "
                  "the format; header:CF-Connecting-IP reads $http_cf_connecting_ip): as the logs.nginx option")
TRUSTED_PROXY_HELP = ("with --client-ip other than remote_addr: a proxy's address or CIDR network, repeatable "
                      "(default: the private and loopback ranges)")


def _as_flags(remediation: str) -> str:
    """A log task's remediation in the words of this command line: its options, not the config's keys."""
    return remediation.replace("set client_ip: ", "--client-ip ").replace("trusted_proxies", "--trusted-proxy")


def _client_options(log_format: str, client_ip: str, trusted_proxies: list[str] | None) -> Any:
    """The logs.nginx options for these (validated as the task validates them: the same errors)."""
    from pydantic import ValidationError

    from upkeeper.tasks.logs.nginx import NginxLogsOptions

    try:
        return NginxLogsOptions(log_format=log_format, client_ip=client_ip, **(
            {"trusted_proxies": trusted_proxies} if trusted_proxies else {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--client-ip/--trusted-proxy: {err['msg'].removeprefix('Value error, ')}",
                         "Try: --client-ip remote_addr, or x_forwarded_for with --format holding "
                         "$http_x_forwarded_for (x_real_ip: $http_x_real_ip, proxy_protocol: $proxy_protocol_addr, "
                         "header:CF-Connecting-IP: $http_cf_connecting_ip) and --trusted-proxy 10.0.0.0/8") from None


def _table(title: str, cols: list[str], rows: list[list[Any]], numeric: tuple[int, ...] = ()) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(cols):
        t.add_column(c, justify="right" if i in numeric else "left", overflow="fold")
    for r in rows:  # cells quote log lines (paths, user agents): text, never Rich markup nor terminal controls
        t.add_row(*[Text("-" if v is None else f"{v:,}" if isinstance(v, int) else
                         (f"{v:,.1f}" if isinstance(v, float) else printable(str(v)))) for v in r])
    return t


def _note_format(found: list[Any], log_format: str, client_ip: str) -> None:
    """Name a format that reads the lines field for field where ``log_format`` does not (see the logs.nginx
    task's logs.nginx.log_format_hint), from the first lines of the first plain file."""
    from upkeeper.logs.access import SUGGEST_SAMPLE, format_mismatch, suggest_format

    for lf in found:
        if lf.gz:
            continue
        try:
            with open(lf.path, "rb") as fh:
                sample = fh.read(SUGGEST_SAMPLE)
        except OSError:
            continue
        hint = suggest_format(sample, log_format, client_ip)
        if hint is not None:
            longer = hint.current_parsed > hint.current_fits
            err_console.print("Note: " + format_mismatch(hint.lines, hint.current_parsed, hint.current_fits, hint.tail,
                                                         log_format)
                              + (", and such lines are read about 4x slower" if longer else ""),
                              style="yellow", markup=False)
            err_console.print(f"Try: --format {shlex.quote(hint.log_format)}", markup=False)
        return


MEMORY_LIMIT_HELP = ("megabytes the scanning processes may add to their memory together before the command stops "
                     "saying what filled it (0: a quarter of the machine's memory, at least 512 MB)")


def _scan_within(memory_limit_mb: int, kind: str, opts: Any, units: list[Any], **kw: Any) -> tuple[Any, dict[str, int]]:
    """parallel.scan within the memory limit (see the tasks' memory_limit_mb), its passing a clear error."""
    from upkeeper.logs import parallel
    from upkeeper.tasks.logs._common import memory_limit

    try:
        return parallel.scan(kind, opts, units, memory_limit=memory_limit(memory_limit_mb), **kw)
    except parallel.MemoryLimit as exc:
        limit = memory_limit(memory_limit_mb) >> 20
        raise UpkeeperError(f"stopped: the logs hold more distinct values than {limit:,} MB of memory lets this "
                            f"command count — {exc}",
                            "Try: --memory-limit-mb with more, or read a part of the log (head -c 100M FILE > "
                            "part.log) to see what it holds most of") from None


@logs_app.command("nginx")
def nginx_cmd(
    files: list[str] = typer.Argument(..., help="access logs (plain or .gz) or quoted globs such as "
                                      "'/var/log/nginx/*access.log', each read with its rotated files "
                                      "(access.log.1, .2.gz, -DATE) as the logs.nginx task reads its access_log"),
    log_format: str = typer.Option("combined", "--format", "-f",
                                   help="nginx log_format string, or combined | combined_timed | main"),
    rotated: bool = typer.Option(True, "--rotated/--no-rotated",
                                 help="also read the rotated files of each log (those named are always read)"),
    max_files: int = typer.Option(30, "--max-files", min=1, max=1000,
                                  help="at most this many files per log, newest first"),
    as_json: bool = typer.Option(False, "--json", help="the whole report as JSON"),
    html: Path | None = typer.Option(None, "--html", help="also write the offline HTML report here"),
    top: int = typer.Option(10, "--top", min=1, help="length of the top lists"),
    workers: int = typer.Option(0, "--workers", min=0, help="processes (0: one per CPU, at most 2)"),
    client_ip: str = typer.Option("remote_addr", "--client-ip", help=CLIENT_IP_HELP),
    trusted_proxies: list[str] = typer.Option(None, "--trusted-proxy", help=TRUSTED_PROXY_HELP),
    memory_limit_mb: int = typer.Option(0, "--memory-limit-mb", min=0, help=MEMORY_LIMIT_HELP),
) -> None:
    """Traffic, status codes, latency and security signals of access logs (GoAccess-identical counts)."""
    from upkeeper.logs import parallel
    from upkeeper.logs.access import ScanOptions, summarize
    from upkeeper.logs.nginx_format import LogFormatError, parse_format, to_goaccess
    from upkeeper.tasks.logs.nginx import passed_on_findings, proxy_finding

    try:
        parse_format(log_format)
    except LogFormatError as exc:
        raise UsageError(exc.message, exc.hint) from None
    task_opts = _client_options(log_format, client_ip, trusted_proxies)
    _check_html(html)
    found = _find_logs(files, rotated=rotated, max_files=max_files)
    notes: list[parallel.ReadNote] = []
    opts = ScanOptions(log_format=log_format, client_ip=task_opts.client_ip,
                       trusted_proxies=tuple(task_opts.trusted_proxies))
    units = _units_of(found, b"", workers, per_process=parallel.ACCESS_PIECES)
    partial, _ = _scan_within(memory_limit_mb, "upkeeper.logs.access", opts, units, workers=workers, notes=notes)
    # tokens in query strings, credentials in samples
    rep = redact_obj(summarize(partial, top_n=top, log_format=log_format, client_ip=task_opts.client_ip))
    rep["read_notes"] = _warn_read_notes(notes)
    rep["files"] = [{"path": lf.path, "compressed": lf.gz} for lf in found]
    rep["log_format"] = log_format
    rep["goaccess"]["log_format_flags"] = to_goaccess(log_format, client_ip=task_opts.client_ip).argv()
    said = [proxy_finding(rep["clients"]["proxy"], task_opts.client_ip, "")] if rep["clients"]["proxy"] else []
    said += passed_on_findings(rep["clients"], task_opts.client_ip, "", invalid_warn_pct=task_opts.unparsed_warn_pct)
    for f in said:
        err_console.print(f"{'Warning' if f.severity.value == 'warning' else 'Note'}: {f.message}", style="yellow",
                          markup=False)
        err_console.print(f"Try: {_as_flags(f.remediation)}", markup=False)
    _warn_unparsed(rep["unparsed_pct"], rep["invalid"], "could not be parsed with the log_format "
                   f"{log_format!r} (" + ", ".join(f"{k}: {v:,}" for k, v in rep["invalid_reasons"].items()) + ")",
                   rep["invalid_samples"][0]["line"] if rep["invalid_samples"] else "",
                   "Try: --format with your nginx.conf 'log_format' (its format string, or combined, "
                   "combined_timed, main)")
    if rep["lines"] >= 200 and rep["fast_path_lines"] * 2 <= rep["lines"]:
        _note_format(found, log_format, task_opts.client_ip)
    if html is not None:
        from upkeeper.logs.report_html import access_report

        _write_html(html, access_report(rep, [], title=f"Access log report — {Path(files[0]).name}",
                                        subtitle=", ".join(files), trends={}, objectives={}, history=False))
    if as_json:
        print_json(rep)
        return
    lat = rep["latency"]["overall"]
    console.print(f"[bold]{rep['requests']:,}[/] requests, [bold]{rep['visitors']:,}[/] unique visitors, "
                  + (f"{human_bytes(rep['bandwidth'])}, " if rep["bandwidth"] is not None else
                     "bandwidth n/a (no $body_bytes_sent in the format), ")
                  + f"{rep['first'] or '-'} → {rep['last'] or '-'}, {len(found)} file(s)")
    bots = rep["bots"]["bot_pct"]
    console.print((f"status 4xx {rep['rate_4xx_pct']:.2f} %, 5xx {rep['rate_5xx_pct']:.3f} %, bots "
                   if rep["rate_4xx_pct"] is not None else "status n/a (no $status in the format), bots ")
                  + (f"{bots:.1f} %" if bots is not None else "n/a (no $http_user_agent in the format)")
                  + f", unparsed {rep['invalid']:,} ({rep['unparsed_pct']:.2f} %)"
                  + (f", p50/p95/p99 {lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms" if lat else ""))
    console.print(_table("status codes", ["code", "hits"], [[k, v] for k, v in rep["status"].items()], (1,)))
    if len(rep["vhosts"]) > 1:
        console.print(_table("sites", ["host", "requests", "4xx", "5xx", "failed %", "p95 ms"],
                             [[v["host"], v["requests"], v["4xx"], v["5xx"], v["failed_pct"], v.get("p95", "-")]
                              for v in rep["vhosts"]], (1, 2, 3, 4, 5)))
    console.print(_table("top paths", ["path", "hits"], [[x.get("host", "") + x["path"], x["hits"]]
                                                         for x in rep["top"]["paths"]], (1,)))
    if lat:
        console.print(_table("slowest endpoints (p95)", ["endpoint", "hits", "p50 ms", "p95 ms", "p99 ms"],
                             [[e["endpoint"], e["hits"], e["p50"], e["p95"], e["p99"]]
                              for e in rep["slowest_endpoints"]], (1, 2, 3, 4)))
    console.print(_table("top clients", ["ip", "hits"], [[x["ip"], x["hits"]] for x in rep["top"]["hosts"]], (1,)))
    sec = rep["security"]
    rows = [[a["category"], a["hits"], a["clients"], a["samples"][0] if a["samples"] else ""] for a in sec["attacks"]]
    rows += [[f"scanner: {s['scanner']}", s["hits"], len(s["clients"]), ""] for s in sec["scanners"]]
    rows += [[f"404 burst: {b['ip']}", b["total"], 1, f"{b['max_in_window']} in 2 min from {b['from']}"]
             for b in sec["not_found_bursts"]]
    rows += [[f"brute force: {b['ip']}", b["total"], 1, ", ".join(b["paths"])] for b in sec["brute_force"]]
    rows += [[f"exposed file ({'critical' if e['secret'] else 'warning'}): {e['path']}", e["hits"], e["client_count"],
              f"{e['file'].replace('_', ' ')} answered {', '.join(map(str, e['statuses']))} with "
              f"{' or '.join(f'{b:,}' for b in e['bytes'][:3])} bytes, first at {e['first']}"]
             for e in sec["exposed"]]
    console.print(_table("security signals", ["signal", "requests", "clients", "example"], rows, (1, 2)))
    console.print("GoAccess-identical numbers: goaccess FILE " + " ".join(
        shlex.quote(a) for a in rep["goaccess"]["log_format_flags"]), style="dim", markup=False)
    if html is not None:
        console.print(f"report: {html}", markup=False)


def _syslog_prefix_ok(prefix: str) -> bool:
    """Whether ``prefix`` is a log_line_prefix a syslog file's lines can be read with (their time and pid stand in
    for the prefix's)."""
    from upkeeper.logs import pgsyslog
    from upkeeper.logs.pglog import PrefixError

    try:
        pgsyslog.compile_syslog_prefix(prefix)
    except PrefixError:
        return False
    return True


@logs_app.command("postgres")
def postgres_cmd(
    files: list[str] = typer.Argument(..., help="PostgreSQL server logs (stderr, csvlog, jsonlog or syslog; plain or "
                                      ".gz) or quoted globs such as '/var/log/postgresql/postgresql-*.log', as the logs.postgres "
                                      "task reads its log_file: a path with its rotated files (postgresql.log.1, "
                                      ".2.gz), a glob's newest --max-files matches"),
    prefix: str = typer.Option("%m [%p] ", "--prefix", "-p", help="the server's log_line_prefix (stderr and "
                               "syslog formats)"),
    rotated: bool = typer.Option(True, "--rotated/--no-rotated",
                                 help="also read the rotated files of each log (those named are always read)"),
    max_files: int = typer.Option(30, "--max-files", min=1, max=1000,
                                  help="at most this many files per log (of a glob's matches), newest first"),
    fmt: str = typer.Option("auto", "--format", "-f", help="stderr, csvlog, jsonlog or syslog (auto: from the "
                            "files' names — .csv is csvlog, .json jsonlog — else syslog when the first lines are "
                            "syslog lines, else stderr)"),
    ident: str = typer.Option("postgres", "--ident", help="syslog format: the server's syslog_ident (other "
                              "programs' lines are skipped)"),
    as_json: bool = typer.Option(False, "--json", help="the whole report as JSON"),
    html: Path | None = typer.Option(None, "--html", help="also write the offline HTML report here"),
    top: int = typer.Option(10, "--top", min=1, help="length of the query and error lists"),
    workers: int = typer.Option(0, "--workers", min=0, help="processes (0: one per CPU, at most 2)"),
    memory_limit_mb: int = typer.Option(0, "--memory-limit-mb", min=0, help=MEMORY_LIMIT_HELP),
) -> None:
    """Slow statements by fingerprint, errors by SQLSTATE, locks, temp files, checkpoints (pgBadger's core)."""
    from upkeeper.logs import parallel, pgstruct, pgsyslog
    from upkeeper.logs.pgformat import format_of, syslog_file
    from upkeeper.logs.pglog import (
        MIN_PARALLEL,
        PgScanOptions,
        PrefixError,
        compile_prefix,
        message_start,
        resolve,
        summarize,
    )
    from upkeeper.tasks.logs.postgres import PostgresLogs, PostgresLogsOptions

    if fmt not in ("auto", "stderr", "csvlog", "jsonlog", "syslog"):
        raise UsageError(f"--format {fmt}: unknown format", "Try: --format stderr, csvlog, jsonlog or syslog")
    def check_prefix() -> None:
        try:  # (syslog, or auto before the files tell: the syslog line's time and pid stand in for the prefix's)
            pgsyslog.compile_syslog_prefix(prefix) if fmt in ("syslog", "auto") else compile_prefix(prefix)
        except PrefixError as exc:
            hint = exc.hint
            if given == "auto" and fmt == "stderr" and _syslog_prefix_ok(prefix):  # (what only a stderr log lacks)
                hint = (f"{hint or ''} (or, if the server logs through syslog, --format syslog: the files' first "
                        "lines were not syslog lines)").strip()
            raise UsageError(exc.message, hint) from None

    given = fmt
    # before the files are looked for: a bad option is said first (a prefix without %p or a time is one of a
    # syslog file only: said once the files tell their format)
    if fmt in ("stderr", "syslog") or (fmt == "auto" and all(format_of(f) == "stderr" for f in files)):
        check_prefix()
    _check_html(html)
    task_opts = PostgresLogsOptions(rotated=rotated, max_files=max_files)
    found = _find_logs(files, rotated=rotated, max_files=max_files,
                       example="'/var/log/postgresql/postgresql-*.log'",
                       expand=lambda g: PostgresLogs._files(g, task_opts))
    if fmt == "auto":
        formats = sorted({format_of(lf.path) for lf in found})
        if len(formats) > 1:
            raise UsageError(f"the files are logs of several formats: {', '.join(formats)} (told by their names: "
                             ".csv is csvlog, .json jsonlog, any other stderr)",
                             "Try: one format per command, or --format to read them all as one")
        fmt = formats[0] if formats else "stderr"
        if fmt == "stderr" and syslog_file(found):
            fmt = "syslog"
    if fmt in ("stderr", "syslog"):
        check_prefix()
    notes: list[parallel.ReadNote] = []
    if fmt == "stderr":
        partial, _ = _scan_within(memory_limit_mb, "upkeeper.logs.pglog", PgScanOptions(log_line_prefix=prefix),
                                  _units_of(found, b"\t", workers, message_start(prefix)), workers=workers,
                                  continuation=b"\t", min_parallel=MIN_PARALLEL, notes=notes)
    elif fmt == "syslog":
        partial, _ = _scan_within(memory_limit_mb, "upkeeper.logs.pgsyslog",
                                  pgsyslog.PgSyslogOptions(log_line_prefix=prefix, ident=ident),
                                  _units_of(found, b"", workers, pgsyslog.RECORD_START), workers=workers,
                                  min_parallel=pgsyslog.MIN_PARALLEL, notes=notes)
    else:
        partial, _ = _scan_within(
            memory_limit_mb, "upkeeper.logs.pgstruct", pgstruct.PgStructOptions(format="csvlog" if fmt == "csvlog" else "jsonlog"),
            _units_of(found, b"", workers, pgstruct.RECORD_START if fmt == "csvlog" else None), workers=workers,
            min_parallel=pgstruct.MIN_PARALLEL, notes=notes)
    # statements and their durations paired in the files' order; no later read: what still waits is counted
    resolve(partial, [lf.path for lf in found], final=True)
    rep = redact_obj(summarize(partial, top_n=top))
    rep["read_notes"] = _warn_read_notes(notes)
    rep["format"] = fmt
    rep["log_line_prefix"] = prefix if fmt in ("stderr", "syslog") else None
    if fmt == "syslog":
        rep["syslog_ident"] = ident
    rep["files"] = [{"path": lf.path, "compressed": lf.gz} for lf in found]
    if fmt in ("stderr", "syslog"):
        _warn_unparsed(rep["unparsed_pct"], rep["unparsed"], f"do not start with the log_line_prefix {prefix!r}",
                       rep["unparsed_samples"][0] if rep["unparsed_samples"] else "",
                       "Try: --prefix with the server's log_line_prefix (SHOW log_line_prefix); for a csvlog, "
                       "jsonlog or syslog file, --format csvlog, jsonlog or syslog")
    else:
        _warn_unparsed(rep["unparsed_pct"], rep["unparsed"], f"are not {fmt} records",
                       rep["unparsed_samples"][0] if rep["unparsed_samples"] else "",
                       "Try: --format with the file's format (stderr, csvlog or jsonlog)")
    other = rep.get("syslog_other") or {}
    if fmt == "syslog" and other.get("lines") and not rep["lines"]:
        err_console.print(f"Warning: none of the {other['lines']:,} syslog lines is of the program {ident!r}; the "
                          "file holds lines of: " + ", ".join(f"{k} ({v:,})" for k, v in other["idents"].items())
                          + "\nTry: --ident with the server's syslog_ident (SHOW syslog_ident)", markup=False)
    if html is not None:
        from upkeeper.logs.report_html import postgres_report

        _write_html(html, postgres_report(rep, [], title=f"PostgreSQL log report — {Path(files[0]).name}",
                                          subtitle=", ".join(files), trends={}, objectives={}, history=False))
    if as_json:
        print_json(rep)
        return
    st = rep["statements"]
    pct = st["percentiles"]
    console.print(f"[bold]{st['count']:,}[/] statements ({st['fingerprints']:,} distinct), "
                  + (f"p50/p95/p99 {pct['p50']:.2f}/{pct['p95']:.2f}/{pct['p99']:.2f} ms, " if pct else "")
                  + f"{rep['errors']['total']:,} errors, {rep['deadlocks']['count']} deadlocks, "
                  f"{rep['locks']['waits']} lock waits, {rep['locks']['failures']} lock failures, "
                  f"{rep['temp_files']['count']} temp files "
                  f"({human_bytes(rep['temp_files']['total_bytes'])}), {rep['checkpoints']['count']} checkpoints "
                  f"({rep['checkpoints']['restartpoints']} restartpoints), "
                  f"unparsed {rep['unparsed']:,} lines")
    console.print(f"read as {fmt}" + (f" (ident {ident})" if fmt == "syslog" else "")
                  + (f" with the log_line_prefix {prefix!r}" if fmt in ("stderr", "syslog") else "") + ", "
                  f"{len(found)} file(s)", markup=False)
    untimed = st["untimed"]
    if untimed["count"]:  # log_statement's statements with no duration: counted apart, their time unknown
        console.print(f"{untimed['count']:,} statements logged without their duration, their time unknown", markup=False)
        console.print(_table("logged without their duration, by database and user", ["database", "user", "statements"],
                             [*[[k, "", v] for k, v in untimed["by_database"].items()],
                              *[["", k, v] for k, v in untimed["by_user"].items()]], (2,)))
    console.print(_table("most time-consuming queries", ["query", "count", "total ms", "mean ms", "max ms"],
                         [[q["fingerprint"][:120], q["count"], q["total_ms"], q["mean_ms"], q["max_ms"]]
                          for q in rep["slowest_total"]], (1, 2, 3, 4)))
    console.print(_table("errors", ["level", "SQLSTATE", "message", "count"],
                         [[e["level"], e["sqlstate"] + (f" (a RAISE: likely {e['likely_sqlstate']})"
                                                        if e.get("likely_sqlstate") else ""), e["message"][:100],
                           e["count"]]
                          for e in rep["errors"]["classes"]], (3,)))
    if html is not None:
        console.print(f"report: {html}", markup=False)


@logs_app.command("errors")
def errors_cmd(
    nginx_error_log: str | None = typer.Option(None, "--nginx", help="an nginx error.log (with its rotated files)"),
    app_logs: list[str] = typer.Argument(None, help="application logs (JSON lines or text) or quoted globs such as "
                                         "'/srv/shop/log/*.log', each read with its rotated files (app.log.1, "
                                         ".2.gz, -DATE) as the logs.errors task reads its app_logs"),
    rotated: bool = typer.Option(True, "--rotated/--no-rotated",
                                 help="also read the rotated files of each log (those named are always read)"),
    max_files: int = typer.Option(30, "--max-files", min=1, max=1000,
                                  help="at most this many files per log, newest first"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    html: Path | None = typer.Option(None, "--html", help="also write the offline HTML report here"),
) -> None:
    """nginx error-log classes and application exceptions grouped by type and message (plain or .gz)."""
    from upkeeper.logs import parallel
    from upkeeper.logs.errorlog import AppLogStats, NginxErrorStats

    if nginx_error_log is None and not app_logs:
        raise UsageError("which logs?", "Try: upkeeper logs errors --nginx /var/log/nginx/error.log app.log")
    _check_html(html)
    ng_files = (_find_logs([nginx_error_log], rotated=rotated, max_files=max_files,
                           example="'/var/log/nginx/*error.log'") if nginx_error_log is not None else [])
    app_files = _find_logs(list(app_logs), rotated=rotated, max_files=max_files,
                           example="'/srv/shop/log/*.log'") if app_logs else []
    notes: list[parallel.ReadNote] = []
    out: dict[str, Any] = {}
    ng: NginxErrorStats | None = None
    app_stats: AppLogStats | None = None
    if nginx_error_log is not None:
        ng = NginxErrorStats()
        for lf in ng_files:
            _feed_file(lf, ng.feed, notes)
            ng.finish()  # an entry never goes on in the next file: one the file ends inside is read as it is
        out["nginx"] = {"lines": ng.lines, "unparsed": ng.unparsed, "levels": dict(ng.levels),
                        "upstream": ng.upstream,
                        "classes": [{"level": lv, "class": c, "count": n} for (lv, c), n in ng.classes.most_common(20)]}
    if app_logs:
        from upkeeper.logs.sources import live_log

        app_stats = AppLogStats()
        for i, lf in enumerate(app_files):
            _feed_file(lf, app_stats.feed, notes)  # streamed: an application log can be gigabytes
            # a log's files (oldest first, the live one last) are read as one, as the task reads them: a trace that
            # goes on from app.log.1 into app.log is read whole
            if i + 1 == len(app_files) or live_log(app_files[i + 1].path) != live_log(lf.path):
                app_stats.finish()
    if ng is not None:
        # PHP-FPM's uncaught exceptions relayed into nginx's error log are exception groups, as the task counts them
        app_stats = ng.php_into(app_stats)
    if app_stats is not None:
        out["app"] = {"lines": app_stats.lines, "levels": dict(app_stats.levels), "exceptions": [
            {"type": g.kind, "message": g.message, "count": g.count, "example": g.example,
             "sources": sorted(g.sources)}
            for g in sorted(app_stats.exceptions.values(), key=lambda g: -g.count)]}
    out["read_notes"] = _warn_read_notes(notes)
    out["files"] = [{"path": lf.path, "compressed": lf.gz} for lf in ng_files + app_files]
    out = redact_obj(out)  # exception messages can hold DSNs and tokens
    if html is not None:
        _write_html(html, _errors_html(ng, app_stats, out["files"], [nginx_error_log or "", *(app_logs or [])]))
    if as_json:
        print_json(out)
        return
    if "nginx" in out:
        console.print(f"nginx error log: {out['nginx']['lines']:,} lines, {out['nginx']['unparsed']:,} not in "
                      "nginx's error-log format", markup=False)
        console.print(_table("nginx error log", ["level", "message class", "count"],
                             [[c["level"], c["class"], c["count"]] for c in out["nginx"]["classes"]], (2,)))
    if "app" in out:
        console.print(_table("application exceptions", ["type", "message", "count"],
                             [[g["type"], g["message"], g["count"]] for g in out["app"]["exceptions"]], (2,)))
    if html is not None:
        console.print(f"report: {html}", markup=False)


def _errors_html(ng: Any, app: Any, files: list[dict[str, Any]], args: list[str]) -> str:
    """The logs.errors task's HTML report of these figures, with its findings on the nginx error log (``args[0]``;
    those on new exception groups need earlier runs: here no group is new)."""
    from datetime import UTC, datetime

    from upkeeper.logs.report_html import errors_report
    from upkeeper.tasks.logs.errors import ErrorLogs, ErrorLogsOptions

    opts = ErrorLogsOptions()
    rep: dict[str, Any] = {"files": [f["path"] for f in files]}
    findings: list[dict[str, Any]] = []
    if ng is not None:
        rep["nginx"] = redact_obj(ErrorLogs.nginx_report(ng, opts))
        findings += [f.to_dict() for f in ErrorLogs.nginx_findings(rep["nginx"], args[0])]
    if app is not None:
        rep["app"], _new = ErrorLogs.app_report(app, opts, {}, datetime.now(UTC))
        rep["app"]["new_groups"] = 0
        for g in rep["app"]["exception_groups"]:
            g["new"] = False
    named = [a for a in args if a]
    return errors_report(redact_obj(rep), findings, title=f"Error log report — {Path(named[0]).name}",
                         subtitle=", ".join(named), trends={}, history=False)


def _feed_file(lf: Any, feed: Callable[[bytes, str], Any], notes: list[Any]) -> None:
    """Hand ``feed`` the whole file (a LogFile) in buffers of complete lines, as the scheduled tasks read it: a
    .gz decompressed (as zcat does: damage is noted in ``notes``), a big file streamed."""
    from upkeeper.logs import parallel

    reader = parallel.read_unit(parallel.Unit(lf.path, 0, None if lf.gz else lf.size, lf.gz, True, lf.path),
                                notes=notes)
    for _off, buf in reader:
        feed(buf, lf.path)


@logs_app.command("goaccess-format")
def goaccess_format_cmd(
    log_format: str = typer.Option("combined", "--format", "-f", help="nginx log_format string or name"),
    client_ip: str = typer.Option("remote_addr", "--client-ip", help=CLIENT_IP_HELP),
    trusted_proxies: list[str] = typer.Option(None, "--trusted-proxy", help=TRUSTED_PROXY_HELP + "; checked "
                                              "only: GoAccess has no trusted proxies"),
) -> None:
    """Print the GoAccess flags that read this nginx log_format (to compare numbers with GoAccess), with the
    client taken where the logs.nginx job's client_ip takes it."""
    from upkeeper.logs.nginx_format import LogFormatError, client_header, parse_format, to_goaccess

    try:
        parse_format(log_format)
    except LogFormatError as exc:
        raise UsageError(exc.message, exc.hint) from None
    opts = _client_options(log_format, client_ip, trusted_proxies)
    flags = to_goaccess(log_format, client_ip=opts.client_ip).argv()
    console.print(" ".join(shlex.quote(f) for f in flags), markup=False)
    var = client_header(opts.client_ip)
    if var is not None:
        err_console.print(f"Note: GoAccess takes the client from ${var} on every line: it has no trusted proxies, "
                          "and counts a line whose value is '-' or no address as failed, where upkeeper (as nginx's "
                          "realip module) counts $remote_addr; its numbers equal upkeeper's when every line comes "
                          "from a trusted proxy with an address there", markup=False)
