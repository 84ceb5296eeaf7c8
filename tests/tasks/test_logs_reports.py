"""write_reports: every run's report has its own file, and pruning never deletes the one just written."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import services
from proc_support import worker_with_open
from upkeeper.core.task import MemoryState, TaskContext
from upkeeper.logs.access import Accumulator, ScanOptions, summarize
from upkeeper.logs.nginx_format import COMBINED_TIMED
from upkeeper.logs.report_html import access_report, time_chart
from upkeeper.redact import redact_obj
from upkeeper.tasks.logs._common import write_reports

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def ctx() -> TaskContext:
    return TaskContext(job="j", task="logs.nginx", clock=lambda: NOW)  # a fixed clock: the same second


def test_two_runs_in_the_same_second_keep_their_own_reports(tmp_path: Path) -> None:
    """Both runs wrote access-<second>.json: run 2 overwrote run 1's report, whose artifact then held run 2's data."""
    first = write_reports(ctx(), tmp_path, "access", {"run": 1}, "<p>1</p>", keep=0)
    second = write_reports(ctx(), tmp_path, "access", {"run": 2}, "<p>2</p>", keep=0)
    paths = [a["path"] for a in first + second]
    assert len(set(paths)) == 4
    for arts, n in ((first, 1), (second, 2)):
        by = {a["format"]: Path(a["path"]) for a in arts}
        assert json.loads(by["json"].read_text()) == {"run": n}
        assert by["html"].read_text() == f"<p>{n}</p>"
    assert json.loads((tmp_path / "latest.json").read_text()) == {"run": 2}


def test_pruning_keeps_the_report_just_written(tmp_path: Path) -> None:
    """keep_reports: 1 sorted the names: the second same-second report (or any report whose name sorts
    before an older one's, e.g. after the clock was set back) was deleted right after it was written."""
    write_reports(ctx(), tmp_path, "access", {"run": 1}, "<p>1</p>", keep=1)
    second = write_reports(ctx(), tmp_path, "access", {"run": 2}, "<p>2</p>", keep=1)
    assert all(Path(a["path"]).exists() for a in second)
    assert sorted(p.name for p in tmp_path.glob("access-*")) == sorted(Path(a["path"]).name for a in second)
    # an older report whose name sorts after this run's (written when the clock was ahead)
    ahead = tmp_path / "access-20310101T000000Z.json"
    ahead.write_text("{}")
    os.utime(ahead, (1, 1))
    third = write_reports(ctx(), tmp_path, "access", {"run": 3}, None, keep=1)
    assert Path(third[0]["path"]).exists() and not ahead.exists()
    assert [p.name for p in tmp_path.glob("access-*.json")] == [Path(third[0]["path"]).name]


def test_time_chart_over_a_long_span_counts_per_day() -> None:
    """A log spanning weeks is drawn per day (a point per hour would be thousands), quiet days as zeros."""
    counts = {"2024-01-01 10:00": 3, "2024-01-01 23:00": 4, "2024-01-03 05:00": 1, "2024-02-20 00:00": 2}
    svg = time_chart(counts, what="requests")
    assert 'aria-label="requests per day"' in svg
    days = re.findall(r"<title>([^<]*)</title>", svg)
    assert days[:3] == ["01/01: 7", "01/02: 0", "01/03: 1"] and days[-1] == "02/20: 2"
    assert len(days) == 31 + 20  # every day from January 1st to February 20th


MARKUP_LOG = (  # request paths and user agents are the client's text: Rich markup in them stays text
    '127.0.0.1 - - [04/Dec/2026:19:39:12 +0000] "GET /a[/b]?id=1%27%20or%201=1-- HTTP/1.1" 200 20 "-" '
    '"sqlmap/1.7 [bold red]x[/]" 0.001\n'
    '127.0.0.1 - - [04/Dec/2026:19:39:13 +0000] "GET /[link=https://evil.example]click[/link] HTTP/1.1" 200 20 '
    '"-" "Mozilla/5.0" 0.001\n')


def test_rich_markup_in_log_lines_is_shown_as_text(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A request path holding '[/b]' made 'upkeeper logs nginx', the results table of 'upkeeper run' and
    'upkeeper show' raise MarkupError (a traceback after the run was recorded); '[link=…]' made a link."""
    log = tmp_path / "access.log"
    log.write_text(MARKUP_LOG)
    res = cli(["logs", "nginx", str(log), "--format", "combined_timed"])
    assert res.code == 0, res.output
    assert "/a[/b]" in res.out and "/[link=https://evil.example]click[/link]" in res.out
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "report_dir": str(tmp_path / "reports")}}}})
    res = cli(["--config", str(cfg), "run", "la"])
    assert res.code in (0, 1) and "MarkupError" not in res.output, res.output
    assert "/a[/b]" in res.out  # the top finding: the SQL injection, with its sample
    res = cli(["--config", str(cfg), "show", "1"])
    assert res.code == 0, res.output
    assert "/a[/b]" in res.out
    res = cli(["--config", str(cfg), "history"])
    assert res.code == 0, res.output


class _Html(HTMLParser):
    """The elements and attributes of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.charts: list[str] = []  # the titles of the SVG charts
        self.active: list[tuple[str, str, str | None]] = []  # attributes that run script or load something
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "svg":
            self.charts.append(dict(attrs).get("aria-label") or "")
        self.active += [(tag, k, v) for k, v in attrs
                        if k.startswith("on") or k in ("src", "href", "xlink:href", "srcdoc", "action", "style")]

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "|".join(c for c in self.chunks if c.strip())  # a cell or element per |


def parse_html(path: Path) -> _Html:
    p = _Html()
    p.feed(path.read_text(encoding="utf-8"))
    return p


VHOST_FORMAT = ('$host $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
                '"$http_user_agent" "$http_x_forwarded_for" $request_time')
XSS = "<script>alert(1)</script>"


def proxied_vhost_log() -> str:
    """Two sites behind a load balancer (every $remote_addr 10.0.0.5, X-Forwarded-For varies), script in paths,
    user agents, referrers and a site name; a .env and /server-status answered 200; XML-RPC brute force."""
    def line(host: str, minute: int, req: str, st: int, size: int, ref: str, ua: str, xff: str, rt: float) -> str:
        return (f'{host} 10.0.0.5 - - [04/Dec/2026:{10 + minute // 60:02d}:{minute % 60:02d}:00 +0000] "{req}" {st} '
                f'{size} "{ref}" "{ua}" "{xff}" {rt:.3f}')
    hosts = ["shop.example", "blog.example", r"x\x22><svg\x09onload=alert(3)>"]  # nginx writes " as \x22
    out = [line(hosts[i % 3], i, f"GET /p/{i % 9}" + (f"?q={XSS}" if i % 11 == 0 else "") + " HTTP/1.1", 200,
                1000 + i, 'https://r.example/\\x22><img src=x onerror=alert(2)>', f"Mozilla/5.0 {XSS}",
                f"203.0.113.{i % 50}", 0.01) for i in range(120)]
    out += [line("shop.example", 200 + i, "GET /.env HTTP/1.1", 200, 777, "-", "curl/8", "198.51.100.9", 0.001)
            for i in range(3)]
    out.append(line("shop.example", 205, "GET /server-status HTTP/1.1", 200, 555, "-", "curl/8", "198.51.100.9", 0.001))
    out += [line("blog.example", 210, "POST /xmlrpc.php HTTP/1.1", 200, 400, "-", "python", "198.51.100.7", 0.05)
            for _ in range(12)]
    return "\n".join(out) + "\n"


def test_html_and_rich_summary_show_sites_exposed_files_proxy_and_format(cli: Any, tmp_path: Path) -> None:
    """The HTML of 'upkeeper logs nginx --html' left out the exposed files (a leaked .env: the worst finding of
    the log) and the proxy warning, which were findings only, and neither report said which log_format read the
    log; the Rich summary listed no exposed file either. Script in a path, user agent, referrer or site name
    stays text."""
    log, html = tmp_path / "access.log", tmp_path / "r.html"
    log.write_text(proxied_vhost_log())
    res = cli(["logs", "nginx", str(log), "--format", VHOST_FORMAT, "--html", str(html)])
    assert res.code == 0, res.output
    assert "exposed file (critical): /.env" in res.out and "exposed file (warning): /server-status" in res.out
    data = json.loads(cli(["logs", "nginx", str(log), "--format", VHOST_FORMAT, "--json"]).out)
    assert [e["path"] for e in data["security"]["exposed"]] == ["/.env", "/server-status"]
    assert data["log_format"] == VHOST_FORMAT and data["clients"]["proxy"]["ip"] == "10.0.0.5"
    page = parse_html(html)
    assert not page.active and "script" not in page.tags, page.active
    text = page.text
    assert "|Sites|host|requests|" in text and "|shop.example|" in text and "|blog.example|" in text
    assert "|Sensitive files answered 2xx|" in text
    assert "|critical|/.env|dotenv|200|777|3|10.0.0.5|2026-12-04 13:20|" in text
    assert "|warning|/server-status|server status|200|555|1|10.0.0.5|" in text
    assert "10.0.0.5, a private address" in text
    assert f"log format |{VHOST_FORMAT}|" in text
    # shown as nginx wrote them (its \xHH escapes kept), as text
    assert f"|Mozilla/5.0 {XSS}|" in text and r"|https://r.example/\x22><img src=x onerror=alert(2)>|" in text
    assert r"|x\x22><svg\x09onload=alert(3)>|" in text


def test_attack_corpus_stays_text_in_the_html_report(cli: Any, tmp_path: Path) -> None:
    """Every line of the real attack corpus (XSS payloads of wfuzz, wapiti and PayloadsAllTheThings in paths, user
    agents and referrers) ends up as text in the report: no element or attribute of theirs."""
    corpus = Path(__file__).parent.parent / "logs" / "corpus"
    html = tmp_path / "corpus.html"
    res = cli(["logs", "nginx", *sorted(str(p) for p in corpus.glob("*.log")), "--format", "combined_timed",
               "--top", "1000", "--html", str(html)])
    assert res.code == 0, res.output
    page = parse_html(html)
    assert not page.active, page.active[:5]
    assert page.tags <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "div", "p", "b",
                         "span", "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "footer", "svg", "text",
                         "line", "rect", "circle", "polygon", "polyline"}, page.tags
    assert "<script>" in page.text and "onerror=" in page.text  # the payloads are there, as text


def test_errors_html_report_has_the_figures_offline(cli: Any, tmp_path: Path) -> None:
    """'upkeeper logs errors' had no --html, unlike 'logs nginx' and 'logs postgres'. Its report is the logs.errors
    task's (by level, by type and class, nginx findings), self-contained, without what only history knows (new
    groups, trends)."""
    app, err, html = tmp_path / "app.log", tmp_path / "error.log", tmp_path / "errors.html"
    services.write_app_log(app, [ValueError("order 1 failed"), ValueError("order 2 failed"),
                                 ValueError("order 3 failed"), KeyError("sku 9")])
    err.write_text('2024/03/01 10:00:00 [error] 11#11: *1 upstream timed out (110: Connection timed out) while '
                   'reading response header from upstream, client: 192.0.2.1\n'
                   '2024/03/01 10:00:01 [crit] 11#11: *2 open() "/srv/x" failed (13: Permission denied)\n'
                   '2024/03/01 11:00:00 [crit] 11#11: *3 open() "/srv/y" failed (13: Permission denied)\n')
    res = cli(["logs", "errors", "--nginx", str(err), str(app), "--html", str(html)])
    assert res.code == 0, res.output
    assert f"report: {html}" in res.out
    page = parse_html(html)
    assert not page.active and not page.tags & {"script", "link", "img", "iframe", "object"}, page.active
    assert "url(" not in html.read_text() and "@import" not in html.read_text()
    assert page.charts == ["exceptions by type", "lines by level", "error-log lines per hour", "lines by level",
                           "biggest message classes"], page.charts
    text = page.text
    assert "|ValueError: 3|" in text and "|KeyError: 1|" in text  # the bars' values
    assert "|ValueError|order <n> failed|3|" in text
    assert "|crit: 2|" in text and "|error: 1|" in text and "|03/01 10h: 2|" in text and "|03/01 11h: 1|" in text
    assert '|open() "…" failed (<n>: Permission denied): 2|' in text
    assert "|critical|logs.errors.nginx_critical|" in text and "|warning|logs.errors.nginx_upstream|" in text
    assert "NEW" not in text and "New since the last run" not in text and "Trends" not in text


def test_postgres_reports_say_which_format_was_read(cli: Any, tmp_path: Path) -> None:
    """'upkeeper logs postgres' read a jsonlog file (told by its name) without saying so, in the terminal and
    in its HTML: a .json file of another format reads as an empty log, and nothing told why."""
    log, html = tmp_path / "postgresql.json", tmp_path / "pg.html"
    log.write_text("".join(json.dumps({"timestamp": f"2026-12-04 10:00:0{i}.000 UTC", "user": "app", "dbname": "app",
                                       "pid": 7, "error_severity": "LOG",
                                       "message": f"duration: {i + 1}.5 ms  statement: SELECT {i}"}) + "\n"
                           for i in range(3)))
    res = cli(["logs", "postgres", str(log), "--html", str(html)])
    assert res.code == 0, res.output
    assert "3 statements" in res.out and "read as jsonlog, 1 file(s)" in res.out
    assert "|Read as |jsonlog|" in parse_html(html).text
    stderr_log = tmp_path / "postgresql.log"
    stderr_log.write_text("2026-12-04 10:00:00.000 UTC [7] LOG:  duration: 1.5 ms  statement: SELECT 1\n")
    res = cli(["logs", "postgres", str(stderr_log), "--html", str(html)])
    assert "read as stderr with the log_line_prefix '%m [%p] '" in res.out
    assert "|Read as |stderr| with the log_line_prefix |%m [%p] |" in parse_html(html).text


def test_an_empty_first_run_is_not_said_to_follow_a_last_run(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The first run over an empty log (a new site) said 'no new log lines since the last run': there was none."""
    log = tmp_path / "access.log"
    log.write_text("")
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": {
                           "report_dir": str(tmp_path / "reports")}}}})
    first = cli(["--config", str(cfg), "run", "la", "--json"]).json()[0]
    assert first["summary"].startswith("no log lines in 1 file(s) — report: "), first["summary"]
    second = cli(["--config", str(cfg), "run", "la", "--json"]).json()[0]
    assert second["summary"].startswith("no new log lines since the last run"), second["summary"]


@pytest.mark.parametrize("task", ["logs.nginx", "logs.postgres", "logs.errors"])
def test_a_relative_report_dir_is_relative_to_the_config_file(cli: Any, make_config: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    """report_dir: reports went to a directory relative to wherever the run started (cron: $HOME, systemd: /),
    so the same job's reports (and latest.html) were spread over several places, and keep_reports pruned each
    apart; the history's path is relative to the config file, and so is report_dir now."""
    log = tmp_path / "some.log"
    log.write_text("")
    target = {"logs.nginx": {"kind": "nginx", "access_log": str(log)},
              "logs.errors": {"kind": "nginx", "error_log": str(log)},
              "logs.postgres": {"kind": "postgres", "host": "127.0.0.1", "port": 1}}[task]  # never contacted
    extra = {"log_file": str(log), "log_line_prefix": "%m [%p] "} if task == "logs.postgres" else {}
    (tmp_path / "etc").mkdir()
    cfg = make_config({"targets": {"t": target},
                       "jobs": {"j": {"task": task, "target": "t", "options": {"report_dir": "reports", **extra}}}},
                      "etc/upkeeper.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = cli(["--config", str(cfg), "run", "j", "--json"])
    out = res.json()[0]
    assert out["artifacts"], out["summary"]
    for a in out["artifacts"]:
        assert Path(a["path"]).parent == tmp_path / "etc" / "reports" / "j", a["path"]
    assert not any(elsewhere.iterdir())


def _settled(directory: Path, quiet: float = 0.5, timeout: float = 30.0) -> list[str]:
    """The names in ``directory`` once some exist and none changed for ``quiet`` seconds."""
    seen: list[str] | None = None
    since = deadline = time.monotonic()
    deadline += timeout
    while time.monotonic() < deadline:
        now = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        if now != seen:
            seen, since = now, time.monotonic()
        elif now and time.monotonic() - since > quiet:
            return now
        time.sleep(0.02)
    raise AssertionError(f"{directory}: no report appeared ({seen})")


def test_a_report_appears_only_for_a_run_whose_result_was_recorded(make_config: Any, tmp_path: Path) -> None:
    """A real 'upkeeper run' killed (kill -9) after its worker wrote the report but before the result and
    the cursors were recorded left errors-<time>.html/.json and latest.* in place: a report history never
    heard of, whose lines the next run read again into a second report.  The report is now staged under a
    hidden name and renamed into place only once the run is recorded; the next run removes what a killed
    run staged, and publishes what a recorded run's dead runner did not."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"2030-01-01 10:00:{i % 60:02d},000 ERROR shop: order {i} failed\nTraceback (most "
                           f"recent call last):\n  File \"x.py\", line 1, in f\nValueError: order {i} failed\n"
                           for i in range(50)))
    reports = tmp_path / "r" / "errs"
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"errs": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = [sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "errs", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while (worker := worker_with_open(proc.pid, tmp_path / "history.db")) is None:  # it got the run
            assert proc.poll() is None and time.monotonic() < deadline, "the worker never opened the history"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGSTOP)  # the worker finishes the task; nobody records its result
        _settled(reports)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:  # it follows its parent
        time.sleep(0.02)
    assert [p.name for p in reports.iterdir() if not p.name.startswith(".")] == []
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    run = json.loads(res.stdout)[0]
    assert run["metrics"]["exceptions"] == 50, res.stdout  # the killed run's cursors were not recorded
    paths = sorted(Path(a["path"]) for a in run["artifacts"])
    assert sorted(reports.iterdir()) == sorted([*paths, reports / "latest.html", reports / "latest.json"])
    html = next(p for p in paths if p.suffix == ".html")
    assert html.read_text() == (reports / "latest.html").read_text()
    # a run recorded, its runner killed before the rename: the next run publishes its report
    lost = reports / "errors-20300101T000000.000000Z.html"
    pending = reports / f".{lost.name}.pending"
    pending.write_text("<p>recorded</p>")
    state = MemoryState()
    state.set("staged_reports", [pending.name])
    write_reports(TaskContext(job="errs", task="logs.errors", state=state), reports, "errors", {}, None, keep=0)
    assert lost.read_text() == "<p>recorded</p>" and not pending.exists()


def _modes(base: Path) -> dict[str, int]:
    return {str(p.relative_to(base)): p.stat().st_mode & 0o777 for p in base.rglob("*")}


def test_reports_are_never_readable_by_every_local_user(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Reports hold client addresses, URLs, user agents, error messages: under the usual umask (022) they were
    written 0644 in 0755 directories (latest.* too, and security.compliance's evidence), readable by every local
    user.  Now 0640 in 0750 directories (upkeeper's group, say a web server added to it, may read them), through
    the runner (staged, then published) and without it."""
    log = tmp_path / "access.log"
    log.write_text('203.0.113.9 - - [01/Jan/2030:10:00:00 +0000] "GET /account?id=42 HTTP/1.1" 200 5 "-" "x" 0.01\n')
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": {
                                    "report_dir": str(tmp_path / "reports")}},
                                "evidence": {"task": "security.compliance", "options": {
                                    "output_dir": str(tmp_path / "evidence" / "monthly")}}}})
    old = os.umask(0o022)
    try:
        for job in ("la", "evidence"):
            res = cli(["--config", str(cfg), "run", job, "--json"])
            assert res.code == 0, res.out + res.err
        write_reports(ctx(), tmp_path / "direct" / "j", "access", {"run": 1}, "<p>1</p>", keep=0)
    finally:
        os.umask(old)
    for top in ("reports", "evidence", "direct"):
        made = _modes(tmp_path / top)
        assert len(made) >= 3 and all(m == (0o750 if (tmp_path / top / p).is_dir() else 0o640)
                                      for p, m in made.items()), (top, made)
        assert (tmp_path / top).stat().st_mode & 0o777 == 0o750


def _as_nobody(cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                           "-m", "upkeeper", "--config", str(cfg), *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)


def test_a_report_directory_root_made_is_a_clear_error_for_another_user(request: Any) -> None:
    """upkeeper once ran as root (reports/<job> made root's, mode 0750), then as a user given the history: every
    log run ended 'PermissionError: [Errno 13] Permission denied: …/reports/errs' (and its traceback in the
    run's log), after reading all its logs; security.compliance (its reports/ beside the config) alike.  Now, before any log is read: the directory, its owner and mode, and
    the fix."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="upkeeper-rep-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    (base / "shop" / "logs").mkdir(parents=True)
    (base / "shop" / "logs" / "app.log").write_text('{"level": "error", "msg": "boom", "exc_type": "ValueError"}\n')
    for p in (base / "shop", base / "shop" / "logs", base / "shop" / "logs" / "app.log"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    cfg = base / "upkeeper.yaml"
    cfg.write_text(f"version: 1\nhistory: {base / 'history.db'}\ntargets:\n"
                   f"  shop: {{kind: app, root: {base / 'shop'}, logs: [logs/app.log]}}\n"
                   f"jobs:\n  errs: {{task: logs.errors, target: shop}}\n"
                   f"  mine: {{task: logs.errors, target: shop, options: {{report_dir: {base / 'mine'}}}}}\n"
                   f"  evidence: {{task: security.compliance, options: {{access_review: false}}}}\n")
    cfg.chmod(0o644)
    as_root = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "errs"],
                             capture_output=True, text=True, timeout=300)
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr
    reports = base / "reports"
    assert (reports / "errs").stat().st_uid == 0 and reports.stat().st_mode & 0o777 == 0o750
    nobody = pwd.getpwnam("nobody").pw_uid
    for p in [base, *base.glob("history.db*")]:  # the history given to the user, as its own error says
        os.chown(p, nobody, -1)
    (base / "mine").mkdir(0o750)  # a report_dir root made, the user may enter but not write
    (base / "mine").chmod(0o755)
    for job, blocked, what, option in (("errs", reports, "enter", "report_dir"),
                                       ("mine", base / "mine", "write in", "report_dir"),
                                       ("evidence", reports, "write in", "output_dir")):  # reports/ beside the config
        res = _as_nobody(cfg, "run", "--json", job)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
        (run,) = json.loads(res.stdout)
        summary = run["summary"]
        want = 0o750 if blocked == reports else 0o755
        assert run["status"] == "error" and summary.startswith("report directory "), summary
        assert f"nobody, whom upkeeper runs as, may not {what} {blocked} (root's, mode {want:04o})" in summary
        assert f"chown -R nobody {blocked}" in summary and f"set {option} to a directory of nobody's" in summary
        assert "PermissionError" not in summary and "Errno" not in summary
    os.chown(base / "mine", nobody, -1)  # the fix it says
    res = _as_nobody(cfg, "run", "--json", "mine")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (base / "mine" / "mine" / "latest.json").exists()


SECRET_LINES = [
    b'10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET /reset?token=s3cr3tTOKENvalue1 HTTP/1.1" 200 512 '
    b'"https://u:pa55word9@example.com/" "curl/8.0" 0.010',
    b'10.0.0.2 - - [10/Oct/2024:13:56:36 +0000] "GET /x?api_key=KEY1234567890 HTTP/1.1" 404 5 "-" "curl/8.0" 0.020',
    b'not a line: password=SuperSecret99',
]
SECRETS = ["s3cr3tTOKENvalue1", "pa55word9", "KEY1234567890", "SuperSecret99"]


def secret_report() -> dict[str, Any]:
    acc = Accumulator(ScanOptions(log_format=COMBINED_TIMED))
    acc.feed(b"\n".join(SECRET_LINES) + b"\n", "access.log", 0)
    rep = summarize(acc.partial(), log_format=COMBINED_TIMED)
    assert any(s in json.dumps(rep) for s in SECRETS)  # (what the report data holds before it is redacted)
    return rep


def test_a_report_its_task_redacted_whole_is_written_as_it_was_given(tmp_path: Path) -> None:
    """``redacted=True``: the caller (logs.nginx) redacted the finished data itself, once for its HTML and its JSON;
    write_reports writes it as given instead of walking it again, the same file as the data redacted here."""
    rep = secret_report()
    default = write_reports(ctx(), tmp_path / "a", "access", rep, None, keep=0)
    given = write_reports(ctx(), tmp_path / "b", "access", redact_obj(rep), None, keep=0, redacted=True)
    text = Path(default[0]["path"]).read_text()
    assert Path(given[0]["path"]).read_text() == text
    assert "***" in text and not any(s in text for s in SECRETS)
    as_given = write_reports(ctx(), tmp_path / "c", "access", {"line": "GET /?token=abc123456"}, None, keep=0,
                             redacted=True)
    assert json.loads(Path(as_given[0]["path"]).read_text()) == {"line": "GET /?token=abc123456"}


def test_an_access_page_of_data_its_caller_redacted_is_the_page_it_redacts_itself() -> None:
    rep = secret_report()
    findings = [{"check": "logs.nginx.x", "severity": "warning", "subject": "s",
                 "message": "GET /reset?token=s3cr3tTOKENvalue1", "remediation": ""}]
    kw: dict[str, Any] = {"title": "t", "subtitle": "s", "trends": {}, "objectives": {}}
    page = access_report(rep, findings, **kw)
    shown = redact_obj({**rep, "findings": findings})
    assert access_report(shown, shown["findings"], **kw, redacted=True) == page
    assert not any(s in page for s in SECRETS)
