"""logs.errors end to end: a real nginx error log, application logs written by Python's logging."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import services
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.traffic import Request, TrafficPlan, drive


def run(cli: Any, cfg: Path, job: str) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", job, "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out


def test_nginx_error_log(cli: Any, make_config: Any, site_nginx: NginxServer, tmp_path: Path) -> None:
    cfg = make_config({"targets": {"web": site_nginx.target()},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r"), "incremental": False}}}})
    drive(site_nginx.url, TrafficPlan([Request("GET", f"/no/such/file{i}.php", "192.0.2.5", "ua") for i in range(4)]
                                      + [Request("GET", "/upstream/x", "192.0.2.5", "ua")]))
    r = run(cli, cfg, "errors")
    checks = {f["check"]: f for f in r["findings"]}
    assert "logs.errors.nginx_upstream" in checks
    assert "connect() failed (<n>: Connection refused)" in checks["logs.errors.nginx_upstream"]["message"]
    assert r["metrics"]["nginx_errors"] >= 5
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    classes = {c["class"]: c["count"] for c in data["nginx"]["classes"]}
    assert classes['open() "…" failed (<n>: No such file or directory)'] >= 4


def write_app_log(path: Path, exceptions: list[type[Exception]]) -> None:
    services.write_app_log(path, [exc(f"order {i} failed") for i, exc in enumerate(exceptions)])


def test_new_exception_groups_are_findings(cli: Any, make_config: Any, tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "logs").mkdir(parents=True)
    log = root / "logs" / "production.log"
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(root)}},  # default logs: logs/*.log
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app",
                                               "options": {"report_dir": str(tmp_path / "r")}}}})
    write_app_log(log, [ValueError, ValueError, KeyError])
    first = run(cli, cfg, "app-errors")
    assert [f["check"] for f in first["findings"]] == ["logs.errors.exceptions_baseline"]
    assert first["metrics"]["exceptions"] == 3 and first["metrics"]["exception_groups"] == 2
    # the baseline flags nothing as new: not in the summary, the metric or the report (it said "2 new")
    assert first["metrics"]["new_exception_groups"] == 0, first["metrics"]
    assert "3 exceptions in 2 groups (first run: recorded as known)" in first["summary"], first["summary"]
    report = json.loads(next(Path(a["path"]) for a in first["artifacts"] if a.get("format") == "json").read_text())
    assert report["app"]["baseline_groups"] == 2 and not any(g["new"] for g in report["app"]["exception_groups"])
    # more of the known ones, and one new kind
    write_app_log(log, [ValueError, TimeoutError, KeyError])
    second = run(cli, cfg, "app-errors")
    new = [f for f in second["findings"] if f["check"] == "logs.errors.new_exception"]
    assert [f["subject"] for f in new] == ["TimeoutError"]
    assert "order <n> failed" in new[0]["message"]
    assert "Traceback (most recent call last)" in new[0]["data"]["example"]
    assert second["status"] == "warn"
    assert second["metrics"]["exceptions"] == 3  # only the new lines were read
    page = Path(next(a["path"] for a in second["artifacts"] if a["format"] == "html")).read_text()
    new_chart = page[page.index("<h3>New since the last run</h3>"):page.index("<h3>Exception groups</h3>")]
    assert 'aria-label="new exception groups"' in new_chart
    assert "TimeoutError: order &lt;n&gt; failed: 1" in new_chart and "ValueError" not in new_chart
    third = run(cli, cfg, "app-errors")
    assert third["metrics"]["exceptions"] == 0 and third["status"] == "ok"


def test_an_app_target_whose_logs_match_nothing_is_said(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The app target's logs (default logs/*.log) matching no file at all: the job read nothing, run after run,
    and said 'ok app: 0 exceptions'. One pattern of several matching nothing stays unsaid."""
    root = tmp_path / "app"
    root.mkdir()
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(root), "logs": ["logs/*.log", "log/*.json"]}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app",
                                               "options": {"report_dir": str(tmp_path / "r")}}}})
    first = run(cli, cfg, "app-errors")
    assert first["status"] == "warn", first["summary"]
    missing = [f for f in first["findings"] if f["check"] == "logs.errors.missing"]
    assert len(missing) == 1 and f"{root}/logs/*.log, {root}/log/*.json" in missing[0]["message"]
    (root / "logs").mkdir()
    write_app_log(root / "logs" / "production.log", [ValueError])
    second = run(cli, cfg, "app-errors")
    assert not [f for f in second["findings"] if f["check"] == "logs.errors.missing"], second["findings"]
    assert second["metrics"]["exceptions"] == 1


def test_first_exceptions_after_clean_runs_are_new(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A first run that saw no exception is no baseline to fill later: what appears next is new."""
    log = tmp_path / "app" / "production.log"
    log.parent.mkdir()
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path / "app")}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    # before the application wrote its log: nothing was read, so the first run is still to come
    missing = run(cli, cfg, "app-errors")
    assert [f["check"] for f in missing["findings"]] == ["logs.errors.missing"]
    logger = logging.getLogger("upk-app-clean")
    logger.propagate = False
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        logger.warning("slow request: 850 ms")
    finally:
        handler.close()
        logger.removeHandler(handler)
    clean = run(cli, cfg, "app-errors")
    assert clean["findings"] == [] and clean["metrics"]["exceptions"] == 0 and clean["metrics"]["app_error_lines"] == 0
    assert run(cli, cfg, "app-errors")["findings"] == []  # a second clean run changes nothing
    write_app_log(log, [TimeoutError, TimeoutError])
    r = run(cli, cfg, "app-errors")
    new = [f for f in r["findings"] if f["check"] == "logs.errors.new_exception"]
    assert [f["subject"] for f in new] == ["TimeoutError"], r["findings"]
    assert new[0]["value"] == 2 and r["status"] == "warn"
    assert not any(f["check"] == "logs.errors.exceptions_baseline" for f in r["findings"])
    assert r["metrics"]["new_exception_groups"] == 1


def test_exceptions_in_a_log_that_appears_later_are_the_baseline(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Runs that found no application log read nothing: the first one that does records the baseline."""
    log = tmp_path / "app" / "production.log"
    log.parent.mkdir()
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path / "app")}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    assert [f["check"] for f in run(cli, cfg, "app-errors")["findings"]] == ["logs.errors.missing"]
    write_app_log(log, [ValueError, KeyError])
    r = run(cli, cfg, "app-errors")
    assert [f["check"] for f in r["findings"]] == ["logs.errors.exceptions_baseline"]
    assert r["metrics"]["exception_groups"] == 2


def test_truncated_rotated_app_log_is_read_up_to_the_damage(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A truncated production.log.1.gz stopped the run with 'internal error: EOFError'; now its exceptions
    before the damage count, it is named in a warning, and the next run does not read it again."""
    import gzip

    root = tmp_path / "app"
    root.mkdir()
    log = root / "production.log"
    text = "".join(f'{{"level": "error", "message": "job {i} failed", "error": {{"type": "KeyError", '
                   f'"message": "k{i % 7}"}}}}\n' for i in range(3000)).encode()
    blob = gzip.compress(text)
    (root / "production.log.1.gz").write_bytes(blob[:len(blob) // 2])
    log.write_text('{"level": "error", "message": "x", "error": {"type": "ValueError", "message": "v"}}\n')
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(root)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    first = run(cli, cfg, "app-errors")
    damaged = [f for f in first["findings"] if f["check"] == "logs.errors.damaged_file"]
    assert [(f["subject"], f["severity"]) for f in damaged] == [(str(root / "production.log.1.gz"), "warning")]
    assert 1000 < first["metrics"]["exceptions"] < 3001
    second = run(cli, cfg, "app-errors")
    assert second["metrics"]["exceptions"] == 0 and second["findings"] == []


def test_upstream_finding_names_only_upstream_failures(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The upstream warning lists the failures it counts: not nginx's [warn] about buffering a large
    upstream response to a temporary file, which mentions 'upstream' but is no error."""
    log = tmp_path / "error.log"
    buffered = ('2024/03/01 10:00:0{i} [warn] 7#7: *{i} an upstream response is buffered to a temporary file '
                '/var/cache/nginx/proxy_temp/1/00/000000000{i} while reading upstream, client: 192.0.2.{i}, '
                'server: shop, request: "GET /big HTTP/1.1", upstream: "http://127.0.0.1:8000/big", host: "shop"\n')
    timeout = ('2024/03/01 10:00:09 [error] 7#7: *9 upstream timed out (110: Connection timed out) while reading '
               'response header from upstream, client: 192.0.2.9, server: shop, request: "GET / HTTP/1.1", '
               'upstream: "http://127.0.0.1:8000/", host: "shop"\n')
    log.write_text("".join(buffered.format(i=i) for i in range(5)) + timeout)
    cfg = make_config({"targets": {"web": {"kind": "nginx", "error_log": str(log)}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r"), "incremental": False}}}})
    r = run(cli, cfg, "errors")
    [finding] = [f for f in r["findings"] if f["check"] == "logs.errors.nginx_upstream"]
    assert finding["message"].startswith("1 upstream error(s): upstream timed out"), finding["message"]
    assert "buffered" not in finding["message"]


def real_errors(inputs: list[str], files: list[str], users: list[str]) -> list[BaseException]:
    """The exceptions Python itself raises for bad input, missing files and unknown users."""
    out: list[BaseException] = []
    for v in inputs:
        try:
            int(v)
        except ValueError as exc:
            out.append(exc)
    for f in files:
        try:
            Path(f).read_bytes()  # a relative name, as an application opens its files
        except FileNotFoundError as exc:
            out.append(exc)
    for u in users:
        out.append(LookupError(f"user {u!r} not found"))
    return out


def test_quoted_data_does_not_make_new_exception_groups(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A value that looks like a name but is data — the bad input in "invalid literal for int() with base
    10: 'abc'", the file in "No such file or directory: 'logo.png'", the user in "user 'alice' not found" —
    made a group per value, so every run flagged the same bugs as new exceptions.  A quoted name in the
    code (KeyError: 'DATABASE_URL') still tells a new failure apart."""
    log = tmp_path / "app" / "production.log"
    log.parent.mkdir()
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path / "app")}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    services.write_app_log(log, real_errors(["abc", "xyz"], ["upk_logo.png", "upk_report.csv"], ["alice", "bob"]))
    first = run(cli, cfg, "app-errors")
    assert first["metrics"]["exceptions"] == 6 and first["metrics"]["exception_groups"] == 3
    services.write_app_log(log, [*real_errors(["true"], ["upk_banner.jpg"], ["carol"]), KeyError("DATABASE_URL")])
    second = run(cli, cfg, "app-errors")
    new = [f for f in second["findings"] if f["check"] == "logs.errors.new_exception"]
    assert [(f["subject"], f["message"].split(" (")[0]) for f in new] == [
        ("KeyError", "new exception: KeyError: 'DATABASE_URL'")]
    assert second["metrics"]["exception_groups"] == 4


def test_a_multi_line_message_is_one_log_line_with_all_its_text(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A message logged over several lines kept only its first line, and its further lines were read as
    log lines of their own: a level word in them ("ERROR code: …", a dumped "level: ERROR") counted an
    error line each, with a message class of its own."""
    log = tmp_path / "app.log"
    logger = logging.getLogger("upk-app-multiline")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    try:
        logger.info("settings:\n  log_level: ERROR\n  retries: 3")
        for order in (17, 18):
            logger.error("payment failed for order %d\n  provider: stripe\n  ERROR code: card_declined", order)
        logger.warning("slow request: 850 ms")
    finally:
        handler.close()
        logger.removeHandler(handler)
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    r = run(cli, cfg, "app-errors")
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    assert data["app"]["levels"] == {"error": 2, "info": 1, "warning": 1}
    assert r["metrics"]["app_error_lines"] == 2
    msgs = {m["message"]: m for m in data["app"]["messages"]}
    assert set(msgs) == {"upk-app-multiline: payment failed for order <n>", "upk-app-multiline: slow request: <n> ms"}
    example = msgs["upk-app-multiline: payment failed for order <n>"]["example"]
    assert example.endswith("payment failed for order 17\n  provider: stripe\n  ERROR code: card_declined")
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "payment failed for order 17\n  provider: stripe\n  ERROR code: card_declined" in page


def _ping(depth: int, order: int) -> None:  # two functions: a traceback repeating one frame is shortened
    if depth:
        _pong(depth - 1, order)
    raise ValueError(f"order {order} failed")


def _pong(depth: int, order: int) -> None:
    _ping(depth, order)


def test_exception_example_shows_where_it_was_raised_and_the_exception(cli: Any, make_config: Any,
                                                                        tmp_path: Path) -> None:
    """The HTML column "first line of an example" showed the example's last line, and the finding's
    example was the first 1,500 characters, which cut a deep Python traceback before its exception line.
    Both now show the trace's first lines and its last ones (the frame that raised, the exception)."""
    log = tmp_path / "app.log"
    services.write_app_log(log, [KeyError("k")])
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    run(cli, cfg, "app-errors")  # the baseline
    errors: list[BaseException] = []
    try:
        _ping(20, 7)
    except ValueError as exc:
        errors.append(exc)
    services.write_app_log(log, errors)
    r = run(cli, cfg, "app-errors")
    (new,) = [f for f in r["findings"] if f["check"] == "logs.errors.new_exception"]
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    (group,) = data["app"]["exception_groups"]
    assert len(group["example"]) > 1500 and group["example"].endswith("ValueError: order 7 failed")
    excerpt = new["data"]["example"]
    assert excerpt.startswith("Traceback (most recent call last):") and "more lines …" in excerpt
    last = excerpt.splitlines()[-3:]
    assert last[0].strip().startswith('File "') and last[0].endswith("in _ping")
    assert last[2] == "ValueError: order 7 failed"
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "first line of an example" not in page
    assert "example (a long trace: its first and last lines)" in page
    assert html.escape(excerpt) in page
    res = cli(["logs", "errors", str(log), "--json"])
    assert res.code == 0, res.output
    (cli_group,) = [g for g in res.json()["app"]["exceptions"] if g["type"] == "ValueError"]
    assert cli_group["example"] == group["example"]


def test_an_error_line_dated_9999_does_not_fail_the_run(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A wrong clock or a forged line dated 9999: the report's chart of lines per hour was stretched to it
    and failed the run with an OverflowError (the last hour Python knows plus one)."""
    log = tmp_path / "error.log"
    log.write_text('2024/03/01 10:00:00 [error] 12#12: *1 open() "/srv/a" failed (2: No such file or directory)\n'
                   '9999/12/31 23:00:00 [error] 12#12: *2 open() "/srv/b" failed (2: No such file or directory)\n')
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(tmp_path / "access.log"),
                                           "error_log": str(log)}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r")}}}})
    r = run(cli, cfg, "errors")
    assert r["status"] in ("ok", "warn") and r["metrics"]["nginx_errors"] == 2, r["summary"]
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "1 dated in the future left out" in page


def test_a_glob_reads_a_dateext_rotated_file_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """app_logs: 'logs/*.log*' matched logrotate's dateext file (app.log-20240301, uncompressed with
    delaycompress) as a log of its own and read it again as a rotated file of app.log: its exceptions
    counted twice."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_app_log(logs / "app.log-20240301", [ValueError])
    write_app_log(logs / "app.log.1", [ValueError])
    write_app_log(logs / "app.log", [KeyError])
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "report_dir": str(tmp_path / "r"), "app_logs": [str(logs / "*.log*")]}}}})
    r = run(cli, cfg, "app-errors")
    assert r["metrics"]["exceptions"] == 3, r["summary"]


def test_new_groups_do_not_hide_the_biggest_known_ones(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A run with at least ``top`` new exception groups listed only those: a report of 230 exceptions showed
    30 new groups of one each and left out the known group of 200 that outnumbered them all."""
    log = tmp_path / "app.log"
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log)], "top": 20, "report_dir": str(tmp_path / "r")}}}})
    services.write_app_log(log, [KeyError("session")] * 5)
    run(cli, cfg, "app-errors")
    kinds = [type(f"Route{a}{b}Error", (LookupError,), {}) for a in "BCDFGHJK" for b in "aeiou"][:30]
    services.write_app_log(log, [KeyError("session")] * 200 + [kind("no route") for kind in kinds])
    r = run(cli, cfg, "app-errors")
    rep = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())["app"]
    assert rep["exceptions_total"] == 230 and rep["new_groups"] == 30
    listed = {(g["type"], g["count"], g["new"]) for g in rep["exception_groups"]}
    assert ("KeyError", 200, False) in listed
    assert sum(1 for g in rep["exception_groups"] if g["new"]) == 30  # every new group is still listed
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "KeyError" in page


def test_pm2_log_after_a_deploy_and_a_rotation_flags_no_known_group(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A Node app under PM2 with ``--time``: every line starts with PM2's time stamp, and no exception was
    found at all. After a deploy (other line numbers in every frame) and a
    rotation, the same exceptions are known groups, not new ones."""
    corpus = (Path(__file__).parents[1] / "logs" / "applogs" / "pm2-time-error.log").read_text()
    log = tmp_path / "pm2" / "app-error.log"
    log.parent.mkdir()
    log.write_text(corpus)
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"errs": {"task": "logs.errors", "target": "app",
                                         "options": {"app_logs": [str(log)], "report_dir": str(tmp_path / "r")}}}})
    first = run(cli, cfg, "errs")
    assert first["metrics"]["exceptions"] == 5 and first["metrics"]["exception_groups"] == 2, first["metrics"]
    deployed = re.sub(r":(\d+):(\d+)\)", lambda m: f":{int(m[1]) + 40}:{int(m[2]) + 3})", corpus)
    deployed = deployed.replace("2026-12-05T00:04", "2026-12-06T09:31").replace("offset 276", "offset 9")
    assert deployed != corpus
    log.rename(log.with_name("app-error.log.1"))
    log.write_text(deployed)
    second = run(cli, cfg, "errs")
    assert second["metrics"]["exceptions"] == 5 and second["metrics"]["new_exception_groups"] == 0, second["metrics"]
    assert not [f for f in second["findings"] if f["check"] == "logs.errors.new_exception"], second["findings"]


def test_real_logrotate_olddir_counts_each_exception_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The real logrotate moves the app log into an olddir (compress, no delaycompress), rotated_dirs naming it.
    An empty log compressed there with no new live file (nocreate) was said to be lost, and the files rotated
    after that empty one were never read (an empty compressed file was not recognised): lines silently missed."""
    import shutil
    import subprocess

    import pytest

    binary = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(binary).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    log = logs / "production.log"
    log.touch()
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(tmp_path)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "report_dir": str(tmp_path / "r"), "html": False, "app_logs": [str(log)],
                           "rotated_dirs": ["old"]}}}})

    def rotate(create: str = "create") -> None:
        conf = tmp_path / "logrotate.conf"
        conf.write_text(f"{log} {{\n rotate 3\n missingok\n {create}\n olddir old\n compress\n}}\n")
        res = subprocess.run([binary, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr

    def job() -> tuple[int, list[str]]:
        r = run(cli, cfg, "app-errors")
        return int(r["metrics"]["exceptions"]), [f["check"] for f in r["findings"] if "lost" in f["check"]]

    assert job() == (0, [])
    rotate("nocreate")  # the empty log compressed into old/ (the application writes a new one later)
    assert job() == (0, [])  # nothing was written to it: nothing lost
    write_app_log(log, [ValueError, KeyError])
    rotate()
    write_app_log(log, [TypeError])
    rotate()  # twice between two runs: the last run's file is old/production.log.3.gz, the new log is empty
    assert (logs / "old" / "production.log.3.gz").exists()
    assert job() == (3, [])  # old/production.log.2.gz and .1.gz, all written after the last run


def test_php_fpm_exceptions_in_the_nginx_error_log_are_groups(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """PHP-FPM relays PHP's errors into nginx's error log (``FastCGI sent in stderr: "PHP message: PHP Fatal error:
    Uncaught …"``, a real PHP 8.2 + nginx log, see tests/logs/applogs/README.md): its uncaught exceptions are
    exception groups, so one never seen before is a finding (they were nginx message classes only). The first
    run that sees PHP's messages is the baseline; the exceptions relayed after it are new."""
    entries = re.split(r"\n(?=\d{4}/)", (Path(__file__).parents[1] / "logs" / "applogs" /
                                         "nginx-php-fpm-error.log").read_text().rstrip("\n"))
    log = tmp_path / "error.log"
    log.write_text("\n".join(entries[:2]) + "\n")  # the two InvalidArgumentExceptions
    cfg = make_config({"targets": {"web": {"kind": "nginx", "error_log": str(log)}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r")}}}})
    first = run(cli, cfg, "errors")
    checks = [f["check"] for f in first["findings"]]
    assert "logs.errors.exceptions_baseline" in checks and "logs.errors.new_exception" not in checks, checks
    with log.open("a") as f:
        f.write("\n".join(entries[2:]) + "\n")
    r = run(cli, cfg, "errors")
    new = sorted(f["subject"] for f in r["findings"] if f["check"] == "logs.errors.new_exception")
    assert new == ["Error", "PHP Fatal error", "RuntimeException"], r["findings"]
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    groups = {(g["type"], g["message"], g["cause"]): (g["count"], g["sources"]) for g in data["app"]["exception_groups"]}
    assert groups[("RuntimeException", "cannot load order <n>", "PDOException")] == (2, [str(log)])
    assert data["nginx"]["unparsed"] == 0


def test_reads_on_through_the_rotation_app_cleanup_makes(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """app.cleanup names its rotated logs ``app.log.20261206-113037.gz``, a name logs.errors did not take for a
    rotated file: after a rotation between two runs the exception written before it was lost, with a
    ``lost_lines`` warning.  Now the rotated copy is read on from the last run's offset."""
    root = tmp_path / "shop"
    (root / "logs").mkdir(parents=True)
    log = root / "logs" / "app.log"
    log.write_text("".join(f"2026-12-06 10:00:{i:02d} INFO ok {i}\n" for i in range(50)))
    config = make_config({
        "targets": {"shop": {"kind": "app", "root": str(root)}},
        "jobs": {"app-errors": {"task": "logs.errors", "target": "shop"},
                 "cleanup": {"task": "app.cleanup", "target": "shop",
                             "options": {"rotate_size": 100, "rotate_method": "copytruncate"}}},
    })

    def run(job: str) -> dict[str, Any]:
        res = cli(["--config", config, "run", job, "--json"])
        assert res.code in (0, 1), res.output
        return dict(res.json()[0])

    assert run("app-errors")["status"] == "ok"
    with log.open("a") as fh:
        fh.write("2026-12-06 10:01:00 ERROR checkout failed\nTraceback (most recent call last):\n"
                 '  File "/srv/shop/app.py", line 10, in checkout\n    total = order.total\n'
                 "AttributeError: 'NoneType' object has no attribute 'total'\n")
    assert "rotated 1 of 1 log(s)" in run("cleanup")["summary"]
    rotated = [p.name for p in log.parent.iterdir() if p.name != "app.log"]
    assert len(rotated) == 1 and re.fullmatch(r"app\.log\.\d{8}-\d{6}\.gz", rotated[0]), rotated
    with log.open("a") as fh:
        fh.write("2026-12-06 10:02:00 INFO after\n")
    r = run("app-errors")
    checks = [f["check"] for f in r["findings"]]
    assert "logs.errors.lost_lines" not in checks and "logs.errors.rotation" not in checks, r["findings"]
    new = [f for f in r["findings"] if f["check"] == "logs.errors.new_exception"]
    assert len(new) == 1 and "AttributeError" in new[0]["message"] and rotated[0] in new[0]["message"]
    assert run("app-errors")["findings"] == []  # read once: nothing again


def test_an_error_log_that_is_no_nginx_error_log_is_said(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """error_log pointed at the access log: none of its lines is an error-log line, and the run said 'ok nginx: 0
    error-log lines' — an error log that never shows an error. A warning says the lines are not nginx's."""
    log = tmp_path / "error.log"
    log.write_text("".join(f'192.0.2.{i} - - [06/Dec/2026:10:00:{i:02d} +0000] "GET /p/{i} HTTP/1.1" 200 5 "-" "ua"\n'
                           for i in range(20)))
    cfg = make_config({"targets": {"web": {"kind": "nginx", "error_log": str(log)}},
                       "jobs": {"errors": {"task": "logs.errors", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r")}}}})
    r = run(cli, cfg, "errors")
    assert r["status"] == "warn", r["summary"]
    (f,) = [f for f in r["findings"] if f["check"] == "logs.errors.nginx_unparsed"]
    assert f["message"].startswith("20 of the 20 lines read are not nginx error-log lines") and "GET /p/0" in f["message"]
    # an error log with a stray line among its entries is no such case
    log.write_text("".join(f"2026/12/06 10:00:{i:02d} [error] 7#7: *{i} open() \"/srv/x{i}\" failed (2: No such file "
                           "or directory), client: 192.0.2.1, server: x, request: \"GET /x HTTP/1.1\", host: \"x\"\n"
                           for i in range(20)) + "Segmentation fault\n")
    r = run(cli, cfg, "errors")
    assert not [f for f in r["findings"] if f["check"] == "logs.errors.nginx_unparsed"], r["findings"]
    assert r["metrics"]["nginx_errors"] == 20


def test_an_app_log_two_app_logs_entries_match_is_read_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """app_logs [/srv/app/production.log, /srv/app/*.log]: the log was read once per entry, every exception
    counted twice (and a symbolic link beside it, which the glob matches too, a third time)."""
    root = tmp_path / "app"
    root.mkdir()
    log = root / "production.log"
    (root / "current.log").symlink_to("production.log")
    cfg = make_config({"targets": {"app": {"kind": "app", "root": str(root)}},
                       "jobs": {"app-errors": {"task": "logs.errors", "target": "app", "options": {
                           "app_logs": [str(log), str(root / "*.log")], "report_dir": str(tmp_path / "r")}}}})
    write_app_log(log, [ValueError, KeyError])
    first = run(cli, cfg, "app-errors")
    assert first["metrics"]["exceptions"] == 2, first["metrics"]
    assert not [f for f in first["findings"] if f["check"] != "logs.errors.exceptions_baseline"], first["findings"]
    write_app_log(log, [TimeoutError])
    second = run(cli, cfg, "app-errors")
    assert second["metrics"]["exceptions"] == 1, second["metrics"]
    assert [f["check"] for f in second["findings"]] == ["logs.errors.new_exception"], second["findings"]
