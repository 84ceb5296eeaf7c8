"""logs.nginx end to end: real nginx, real traffic, the real CLI and history."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from logs.test_access_arrow import distributed_login_traffic, shared_address_traffic, slow_login_traffic
from logs.test_access_numbers import crafted_log
from services import nginx_reopen, wait_for_log_lines
from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.errors import ConfigError
from upkeeper.logs.access import _status_in
from upkeeper.logs.svg import _fmt
from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.traffic import Request, TrafficPlan, drive, plan
from upkeeper.tasks.logs.nginx import NginxLogsOptions


def config(make_config: Any, server: NginxServer, tmp_path: Path, **options: Any) -> Path:
    path: Path = make_config({
        "targets": {"web": server.target()},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": "combined_timed", "report_dir": str(tmp_path / "reports"), **options}}},
    })
    return path


def run(cli: Any, cfg: Path) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", "log-analysis", "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out


def checks(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for f in result["findings"]:
        by.setdefault(f["check"], []).append(f)
    return by


def test_report_findings_and_artifacts(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                       tmp_path: Path) -> None:
    tp = plan(n_visitors=60, seed=5)
    sent = drive(fresh_site_log.url, tp)
    assert not sent.errors
    wait_for_log_lines(fresh_site_log.access_log, sent.sent)
    r = run(cli, config(make_config, fresh_site_log, tmp_path))
    assert r["status"] == "warn", r["summary"]
    assert r["metrics"]["requests"] == sent.sent
    assert r["metrics"]["invalid"] == 0
    assert r["metrics"]["visitors"] > 40
    assert 0 < r["metrics"]["failed_pct"] < 10
    by = checks(r)
    brute = by["logs.nginx.brute_force"]
    assert [f["subject"] for f in brute] == [tp.brute_force_ip]
    assert "15 failed logins" in brute[0]["message"]
    assert [f["subject"] for f in by["logs.nginx.not_found_burst"]] == [tp.scanner_ip]
    assert "logs.nginx.attack.sql_injection" in by
    assert "logs.nginx.attack.path_traversal" in by
    assert by["logs.nginx.scanner_agent"][0]["subject"] == "sqlmap"
    assert "logs.nginx.failed_rate" in by  # /api/v1/payments answers 500
    assert "/api/v1/payments" in by["logs.nginx.failed_rate"][0]["message"]
    # reports
    html = next(a["path"] for a in r["artifacts"] if a["format"] == "html")
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    page = Path(html).read_text()
    assert "<svg" in page and "http://" not in page.split("<body>")[0]  # no network resources
    assert "requests per hour" in page and "GET /api/v1/messages/:uuid" in page
    assert data["requests"] == sent.sent
    assert data["goaccess"]["log_format_flags"][0].startswith("--log-format=%h %^[%d:%t %^]")
    assert {e["endpoint"] for e in data["endpoints"]} >= {"GET /api/v1/listings/:id", "POST /api/v1/bookings"}
    assert html in r["summary"]


def test_incremental_runs_and_rotation(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                       tmp_path: Path) -> None:
    cfg = config(make_config, fresh_site_log, tmp_path)
    small = TrafficPlan([Request("GET", f"/api/v1/listings/{i}", "192.0.2.9", "Mozilla/5.0") for i in range(30)])
    assert drive(fresh_site_log.url, small).sent == 30
    wait_for_log_lines(fresh_site_log.access_log, 30)
    assert run(cli, cfg)["metrics"]["requests"] == 30
    second = run(cli, cfg)
    assert second["metrics"]["requests"] == 0 and "no new log lines" in second["summary"]
    assert drive(fresh_site_log.url, small).sent == 30
    # logrotate: rename, more lines reach the old file, then nginx reopens and writes the new one
    log = fresh_site_log.access_log
    log.rename(log.with_name("access.log.1"))
    assert drive(fresh_site_log.url, TrafficPlan(small.requests[:10])).sent == 10
    nginx_reopen(fresh_site_log)
    assert drive(fresh_site_log.url, TrafficPlan(small.requests[:5])).sent == 5
    wait_for_log_lines(log, 5)
    wait_for_log_lines(log.with_name("access.log.1"), 70)
    third = run(cli, cfg)
    assert third["metrics"]["requests"] == 45
    assert run(cli, cfg)["metrics"]["requests"] == 0


def logrotate(server: NginxServer, tmp_path: Path, directives: str, olddir: Path | None = None) -> None:
    """Run the real logrotate (forced) on the server's access log, reopening nginx as its postrotate
    (``olddir``: the directory the directives move the rotated files to)."""
    import shutil
    import subprocess

    binary = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(binary).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    reopen = f"{server.binary} -c {server.conf} -p {server.base}/ -e {server.error_log} -s reopen"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{server.access_log} {{\n{directives}\n sharedscripts\n postrotate\n  {reopen}\n endscript\n}}\n")
    res = subprocess.run([binary, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # 'nginx -s reopen' only signals the master; its workers reopen a moment later, and a request they log
    # before that goes to the rotated file: wait until no process holds the log under another name
    import os
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = set()
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            try:
                held.update(os.readlink(fd) for fd in fd_dir.iterdir())
            except OSError:
                continue
        old = {h for h in held if h.startswith(f"{server.access_log}.") or h == f"{server.access_log} (deleted)"
               or (olddir is not None and h.startswith(f"{olddir / server.access_log.name}"))}
        if not old and str(server.access_log) in held:
            return
        time.sleep(0.02)
    pytest.fail(f"nginx did not reopen {server.access_log}: still held as {sorted(old)}")


def test_real_logrotate_counts_each_request_once_and_says_when_lines_are_lost(
        cli: Any, make_config: Any, fresh_site_log: NginxServer, tmp_path: Path) -> None:
    cfg = config(make_config, fresh_site_log, tmp_path)
    log = fresh_site_log.access_log
    sent = [0]

    def send(n: int) -> None:
        # every request distinct: a new file whose first lines equal, byte for byte, those of a deleted one
        # read before (same paths, same second) and that got its inode back is the same file to any reader
        reqs = [Request("GET", f"/api/v1/listings/{sent[0] + i}", "192.0.2.9", "Mozilla/5.0") for i in range(n)]
        sent[0] += n
        assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == n

    send(20)
    wait_for_log_lines(log, 20)
    assert run(cli, cfg)["metrics"]["requests"] == 20
    # compress + delaycompress, rotated twice between two runs: every line once, none lost
    keep = " rotate 3\n create\n compress\n delaycompress"
    send(4)
    logrotate(fresh_site_log, tmp_path, keep)
    send(3)
    logrotate(fresh_site_log, tmp_path, keep)  # access.log.1 → access.log.2.gz
    send(2)
    wait_for_log_lines(log, 2)
    assert (log.parent / "access.log.2.gz").exists()
    r = run(cli, cfg)
    assert r["metrics"]["requests"] == 9 and "logs.nginx.lost_lines" not in checks(r)
    # 'rotate 1', twice between two runs: the file holding the last run's end (and 5 lines more) is deleted
    send(5)
    logrotate(fresh_site_log, tmp_path, " rotate 1\n create")
    send(6)
    logrotate(fresh_site_log, tmp_path, " rotate 1\n create")
    send(7)
    wait_for_log_lines(log, 7)
    r = run(cli, cfg)
    assert r["metrics"]["requests"] == 13, r["summary"]
    lost = checks(r)["logs.nginx.lost_lines"]
    assert [(f["severity"], f["subject"]) for f in lost] == [("warning", str(log))]
    assert "is gone" in lost[0]["message"] and "rotate" in lost[0]["message"]
    assert run(cli, cfg)["metrics"]["requests"] == 0


def test_real_logrotate_olddir_counts_each_request_once(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                                      tmp_path: Path) -> None:
    """logrotate's olddir moves the rotated files away from the log: with rotated_dirs naming it, the lines
    written between a run and a rotation are read (plain, compress + delaycompress rotated twice between two
    runs, dateext + compress), each once, and no other file there; without it they are lost, and the warning
    names the option (and, as a hint, the olddir of the logrotate config that rotated it)."""
    import gzip
    import os

    from upkeeper.logs.logrotate_hint import olddir_for

    log = fresh_site_log.access_log
    olddir = fresh_site_log.base / f"old-{tmp_path.name}"  # logrotate wants the olddir on the log's device
    olddir.mkdir()
    # not the predecessor of anything: never read (an older numbered file, an older dated one)
    (olddir / "access.log.9").write_text(crafted_log())
    with gzip.open(olddir / "access.log-20200101.gz", "wt") as fh:
        fh.write(crafted_log())
    for decoy in olddir.iterdir():
        os.utime(decoy, (0, 0))
    cfg: Path = make_config({
        "targets": {"web": fresh_site_log.target()},
        "jobs": {name: {"task": "logs.nginx", "target": "web", "options": {
            "log_format": "combined_timed", "report_dir": str(tmp_path / "reports"), "html": False, **extra}}
            for name, extra in (("log-analysis", {"rotated_dirs": [olddir.name]}), ("no-olddir", {}))},
    })
    sent = [0]

    def send(n: int) -> None:
        reqs = [Request("GET", f"/api/v1/listings/{sent[0] + i}", "192.0.2.9", "Mozilla/5.0") for i in range(n)]
        sent[0] += n
        assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == n

    def rotate(directives: str) -> None:
        logrotate(fresh_site_log, tmp_path, f" rotate 3\n create\n olddir {olddir}\n{directives}", olddir)

    def job(name: str = "log-analysis") -> dict[str, Any]:
        res = cli(["--config", str(cfg), "run", name, "--json"])
        assert res.code in (0, 1), res.output
        out: dict[str, Any] = res.json()[0]
        return out

    try:
        send(20)
        wait_for_log_lines(log, 20)
        assert job()["metrics"]["requests"] == 20  # the olddir's files are not the continuation of anything
        assert job("no-olddir")["metrics"]["requests"] == 20
        # plain rename into the olddir: lines written before the rotation are in old/access.log.1
        send(4)
        rotate("")
        send(3)
        wait_for_log_lines(log, 3)
        r = job()
        assert r["metrics"]["requests"] == 7 and "logs.nginx.lost_lines" not in checks(r), r["findings"]
        r = job("no-olddir")
        assert r["metrics"]["requests"] == 3
        lost = checks(r)["logs.nginx.lost_lines"]
        assert [(f["severity"], f["subject"]) for f in lost] == [("warning", str(log))]
        assert "name that directory in the job's rotated_dirs option" in lost[0]["remediation"]
        # the hint, from the config logrotate just ran (the job reads /etc/logrotate.d, which the test cannot write)
        hint = olddir_for(str(log), (str(tmp_path / "logrotate.conf"),))
        assert (hint.olddir, hint.source, hint.problem) == (str(olddir), str(tmp_path / "logrotate.conf"), "")
        # compress + delaycompress, rotated twice between two runs: the last run's file is old/access.log.2.gz
        send(4)
        rotate(" compress\n delaycompress")
        send(3)
        rotate(" compress\n delaycompress")
        send(2)
        wait_for_log_lines(log, 2)
        assert (olddir / "access.log.2.gz").exists()
        r = job()
        assert r["metrics"]["requests"] == 9 and "logs.nginx.lost_lines" not in checks(r), r["findings"]
        # dateext + compress: old/access.log-<date>.gz
        send(5)
        rotate(" compress\n dateext\n dateformat -%Y%m%d%H%M%S")
        send(6)
        wait_for_log_lines(log, 6)
        assert any(p.name.startswith("access.log-2") for p in olddir.iterdir() if p.name != "access.log-20200101.gz")
        r = job()
        assert r["metrics"]["requests"] == 11 and "logs.nginx.lost_lines" not in checks(r), r["findings"]
        assert job()["metrics"]["requests"] == 0
        files = {f["path"] for f in json.loads(Path(next(
            a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())["files"]}
        assert not {str(olddir / "access.log.9"), str(olddir / "access.log-20200101.gz")} & files
    finally:
        for p in olddir.iterdir():
            p.unlink()
        olddir.rmdir()


def test_unparsed_lines_warn_with_samples(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                          tmp_path: Path) -> None:
    drive(fresh_site_log.url, TrafficPlan([Request("GET", "/", "192.0.2.1", "ua")] * 50))
    wait_for_log_lines(fresh_site_log.access_log, 50)
    with open(fresh_site_log.access_log, "ab") as fh:
        fh.write(b"this is not an access log line\n" * 3)
    r = run(cli, config(make_config, fresh_site_log, tmp_path))
    f = checks(r)["logs.nginx.unparsed"][0]
    assert f["severity"] == "warning" and f["value"] > 1.0
    assert "not an access log line" in f["data"]["sample"]
    assert r["metrics"]["invalid"] == 3 and r["metrics"]["requests"] == 50


def test_lines_a_wrong_log_format_could_not_parse_are_read_again_once_it_is_fixed(
        cli: Any, make_config: Any, fresh_site_log: NginxServer, tmp_path: Path) -> None:
    # a first run with a log_format that is not the log's parses nothing; its cursors used to move past the lines
    # all the same, so after the fix the next run said "no new log lines" and those requests were never analysed
    wrong = '$remote_addr [$time_local] "$request" $status'
    reqs = [Request("GET", f"/api/v1/items/{i}", "192.0.2.7", "Mozilla/5.0") for i in range(20)]
    log = fresh_site_log.access_log
    assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == 20
    wait_for_log_lines(log, 20)
    first = run(cli, config(make_config, fresh_site_log, tmp_path, log_format=wrong))
    assert first["metrics"]["requests"] == 0 and first["metrics"]["invalid"] == 20
    assert "the next run with another log_format reads these lines again" in checks(first)["logs.nginx.unparsed"][0][
        "message"]
    # more traffic, a second run with the same wrong format, then logrotate's rename before the fix
    assert drive(fresh_site_log.url, TrafficPlan(reqs[:7])).sent == 7
    wait_for_log_lines(log, 27)
    assert run(cli, config(make_config, fresh_site_log, tmp_path, log_format=wrong))["metrics"]["invalid"] == 7
    log.rename(log.with_name("access.log.1"))
    nginx_reopen(fresh_site_log)
    assert drive(fresh_site_log.url, TrafficPlan(reqs[:5])).sent == 5
    wait_for_log_lines(log, 5)
    third = run(cli, config(make_config, fresh_site_log, tmp_path))
    assert third["metrics"]["requests"] == 32 and third["metrics"]["invalid"] == 0, third["summary"]
    reread = checks(third)["logs.nginx.reread"][0]
    assert reread["severity"] == "info" and "2 run(s)" in reread["message"] and "27 lines" in reread["message"]
    # read once: the next run reads on from there; a wrong format again later loses nothing and re-counts nothing
    assert run(cli, config(make_config, fresh_site_log, tmp_path))["metrics"]["requests"] == 0
    assert drive(fresh_site_log.url, TrafficPlan(reqs[:3])).sent == 3
    wait_for_log_lines(log, 8)
    assert run(cli, config(make_config, fresh_site_log, tmp_path, log_format=wrong))["metrics"]["invalid"] == 3
    assert run(cli, config(make_config, fresh_site_log, tmp_path))["metrics"]["requests"] == 3
    assert run(cli, config(make_config, fresh_site_log, tmp_path))["metrics"]["requests"] == 0


def test_a_job_moved_to_another_log_does_not_say_the_old_one_is_gone(cli: Any, make_config: Any,
                                                                     fresh_site_log: NginxServer,
                                                                     tmp_path: Path) -> None:
    """The job's access_log set to another file (the site's own vhost log instead of the default one): the next
    run warned that the log the last run read 'is gone … whatever was written to it after the last run is
    missing' although it was right there, unchanged.  Nothing is said of it now; a log still written to after the
    last run read it (lines that are not read) is still a warning."""
    drive(fresh_site_log.url, TrafficPlan([Request("GET", f"/p/{i}", "192.0.2.3", "Mozilla/5.0") for i in range(12)]))
    wait_for_log_lines(fresh_site_log.access_log, 12)
    first_log = tmp_path / "first-access.log"
    # (another client: a copy of the same bytes would be taken for the same file, moved)
    first_log.write_bytes(fresh_site_log.access_log.read_bytes().replace(b"192.0.2.3", b"192.0.2.4"))
    assert run(cli, file_config(make_config, first_log, tmp_path))["metrics"]["requests"] == 12
    moved = run(cli, config(make_config, fresh_site_log, tmp_path))
    assert moved["metrics"]["requests"] == 12
    assert "logs.nginx.lost_lines" not in checks(moved), checks(moved)["logs.nginx.lost_lines"][0]["message"]
    # the other way round, and the log the last run read gets more lines before this run: those are not read
    with first_log.open("ab") as fh:
        fh.write(fresh_site_log.access_log.read_bytes().splitlines(keepends=True)[0])
    drive(fresh_site_log.url, TrafficPlan([Request("GET", "/q", "192.0.2.3", "Mozilla/5.0")]))
    wait_for_log_lines(fresh_site_log.access_log, 13)
    back = run(cli, file_config(make_config, first_log, tmp_path))
    assert back["metrics"]["requests"] == 13
    left = checks(back)["logs.nginx.lost_lines"][0]
    assert left["subject"] == str(fresh_site_log.access_log) and "is not among the files this run reads" in left[
        "message"] and "is gone" not in left["message"], left


def _site_with_format(cli: Any, make_config: Any, services_dir: Path, tmp_path: Path, name: str, fmt: str,
                      reqs: list[Request]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A real nginx writing its access log in ``fmt``, sent ``reqs``: the job's run over it (a whole read), and
    ``upkeeper logs nginx`` over it as text and as JSON."""
    from upkeeper.sandbox._util import free_port
    from upkeeper.sandbox.traffic import prepare_docroot

    base, port = services_dir / f"nginx-{name}", free_port()  # (a directory nginx's workers may enter)
    servers = (f"    log_format {name} '{fmt}';\n    server {{\n        listen 127.0.0.1:{port};\n"
               f"        root {base}/www;\n        access_log {base}/access.log {name};\n    }}\n")
    server = NginxServer(base, port=port, servers=servers)
    server.docroot.mkdir(parents=True, exist_ok=True)
    prepare_docroot(server.docroot)
    server.start()
    try:
        assert drive(server.url, TrafficPlan(reqs)).sent == len(reqs)
        wait_for_log_lines(server.access_log, len(reqs))
        r = run(cli, file_config(make_config, server.access_log, tmp_path, log_format=fmt, incremental=False))
        cli_out = cli(["logs", "nginx", str(server.access_log), "--format", fmt])
        cli_json = cli(["logs", "nginx", str(server.access_log), "--format", fmt, "--json"]).json()
    finally:
        server.stop()
    return r, cli_out, cli_json


LEAN = '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time'  # no $http_user_agent


def test_a_format_without_user_agents_reports_no_bot_share(cli: Any, make_config: Any, services_dir: Path,
                                                           tmp_path: Path) -> None:
    """A lean log_format without $http_user_agent (common on APIs) made every request a bot: 'bots 100.0 %' in the
    summary, the HTML and the bots_pct history metric, of traffic from browsers (and one crawler) alike. No agent
    is logged, so there is no split to report: the JSON says bots.available false, the HTML and CLI 'n/a'."""
    reqs = [Request("GET", "/", f"192.0.2.{i}", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0") for i in range(9)]
    reqs.append(Request("GET", "/", "192.0.2.99", "Googlebot/2.1 (+http://www.google.com/bot.html)"))
    r, cli_out, cli_json = _site_with_format(cli, make_config, services_dir, tmp_path, "lean", LEAN, reqs)
    assert r["metrics"]["requests"] == 10 and "bots_pct" not in r["metrics"], r["metrics"]
    html = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "bot requests (the log format has no $http_user_agent)" in html
    assert "n/a (no $http_user_agent in the format)" in cli_out.out and "bots 100.0 %" not in cli_out.out
    assert cli_json["bots"] == {"requests": None, "humans": None, "bot_pct": None, "available": False}


NO_STATUS = '$remote_addr [$time_local] "$request" $request_time "$http_user_agent"'  # no $status, no bytes sent


def test_a_format_without_status_measures_no_failed_rate(cli: Any, make_config: Any, services_dir: Path,
                                                         tmp_path: Path) -> None:
    """A log_format without $status reported 'failed 0.000 %' (the 0.1 % objective met by nothing measured), 4xx
    and 5xx rates of 0, and without $body_bytes_sent '0 B'. Nothing says whether a request failed: the rates are
    null in the JSON and not recorded as metrics, the summary, the HTML and the CLI say n/a, and an info finding
    says why — however many of the requests failed (here half of them were 404s)."""
    reqs = [Request("GET", "/" if i % 2 else f"/missing-{i}", f"192.0.2.{i}", "Mozilla/5.0") for i in range(10)]
    r, cli_out, cli_json = _site_with_format(cli, make_config, services_dir, tmp_path, "nostatus", NO_STATUS, reqs)
    m = r["metrics"]
    assert m["requests"] == 10 and not {"failed_pct", "rate_4xx_pct", "rate_5xx_pct", "bandwidth_bytes"} & set(m), m
    assert "failed n/a (no $status in the format)" in r["summary"] and "0 B" not in r["summary"], r["summary"]
    assert checks(r)["logs.nginx.no_status"][0]["severity"] == "info"
    assert "logs.nginx.failed_rate" not in checks(r)
    html = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "failed (the log format has no $status)" in html and "bandwidth (the log format has no" in html
    assert "status n/a (no $status in the format)" in cli_out.out and "0.000 %" not in cli_out.out, cli_out.out
    assert (cli_json["failed_pct"], cli_json["rate_4xx_pct"], cli_json["status_available"]) == (None, None, False)
    assert (cli_json["bandwidth"], cli_json["bandwidth_available"]) == (None, False)


def test_missing_log_fails_clearly(cli: Any, make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(tmp_path / "nope" / "access.log")}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web"}},
    })
    r = cli(["--config", str(cfg), "run", "log-analysis", "--json"])
    assert r.code == 1
    out = r.json()[0]
    assert out["status"] == "fail" and out["findings"][0]["check"] == "logs.nginx.missing"


def test_bad_log_format_is_a_config_error(cli: Any, make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({
        "targets": {"web": {"kind": "nginx"}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web",
                                  "options": {"log_format": '"$request" $status'}}},
    })
    r = cli(["--config", str(cfg), "jobs"])
    assert r.code == 2
    assert "log_format" in r.output and "$remote_addr" in r.output


# -- failed_statuses ---------------------------------------------------------------------------

FORMS = ("use a class such as 5xx, a code such as 429, a range such as 502-504, or a comma-separated list of "
         "these such as '429,5xx'")


def statuses_config(value: str) -> str:
    return ("targets:\n  web: {kind: nginx}\njobs:\n  log-analysis:\n    task: logs.nginx\n    target: web\n"
            f"    options:\n      failed_statuses: {value}\n")


@pytest.mark.parametrize(("value", "message"), [
    ("500-5xx", f"'500-5xx' is not a status code, class or range; {FORMS}"),
    ("'429,5x'", f"'5x' (in '429,5x') is not a status code, class or range; {FORMS}"),
    ("'5xx,'", f"'5xx,' has an empty entry (a stray comma); {FORMS}"),
    ("''", f"no statuses given; {FORMS}"),
    ("504-500", "the range '504-500' runs backwards: write 500-504"),
    ("[5xx]", "expected text such as '5xx' or '500,502-504', got list"),
])
def test_bad_failed_statuses_is_a_located_config_error(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_setup(load_text(statuses_config(value), "u.yaml"))
    assert [p.render() for p in err.value.problems] == [
        f"u.yaml:8: jobs -> log-analysis -> options -> failed_statuses: {message}"]


@pytest.mark.parametrize(("value", "normalised"), [
    ("5XX", "5xx"), ("' 429 , 5Xx '", "429,5xx"), ("'500, 502 - 504'", "500,502-504"), ("500", "500"),
])
def test_failed_statuses_are_normalised(value: str, normalised: str) -> None:
    setup = build_setup(load_text(statuses_config(value), "u.yaml"))
    assert setup.jobs["log-analysis"].options.failed_statuses == normalised  # type: ignore[attr-defined]


SPEC_CHARS = st.text(alphabet="0123456789xX-, \t", max_size=14)


@settings(max_examples=400, deadline=None)
@given(spec=st.one_of(st.text(max_size=20), SPEC_CHARS))
def test_any_failed_statuses_validates_or_is_a_clear_error(spec: str) -> None:
    try:
        opts = NginxLogsOptions(failed_statuses=spec)
    except ValidationError as exc:
        (e,) = exc.errors()
        assert e["loc"] == ("failed_statuses",)
        assert e["msg"].startswith("Value error, ")
        assert FORMS in e["msg"] or "runs backwards" in e["msg"], e["msg"]
        return
    norm = opts.failed_statuses
    assert norm == norm.strip().lower() and " " not in norm
    assert NginxLogsOptions(failed_statuses=norm).failed_statuses == norm  # a fixed point
    for code in ("100", "200", "404", "429", "499", "500", "503", "599", "-", "0"):
        assert isinstance(_status_in(code, norm), bool)


def test_failed_statuses_in_upper_case_count(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                            tmp_path: Path) -> None:
    """'5XX' used to match nothing: the failed rate stayed 0 while the endpoint answered 500."""
    reqs = ([Request("GET", "/api/v1/payments", "192.0.2.7", "ua")] * 4
            + [Request("GET", "/api/v1/listings/1", "192.0.2.7", "ua")] * 4
            + [Request("GET", "/nothing-here", "192.0.2.7", "ua")] * 2)
    assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == 10
    wait_for_log_lines(fresh_site_log.access_log, 10)
    r = run(cli, config(make_config, fresh_site_log, tmp_path, failed_statuses="404, 5XX"))
    assert r["metrics"]["failed_pct"] == 60.0
    f = checks(r)["logs.nginx.failed_rate"][0]
    assert "(6 with 404,5xx)" in f["message"]


# -- the latency objective and the trend charts -------------------------------------------------


def file_config(make_config: Any, log: Path, tmp_path: Path, **options: Any) -> Path:
    path: Path = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(log)}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": "combined_timed", "report_dir": str(tmp_path / "reports"), **options}}},
    })
    return path


def test_p95_objective_is_judged_above_200_ms_and_not_at_it(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Nearest-rank percentiles of crafted request times (see tests/logs/test_access_numbers.py).

    Run 1: 20 item requests, 10 … 180, 200 and 250 ms: p50 = 10th = 100, p95 = 19th = 200 (not above the
    objective: no finding), p99 = 20th = 250.  Run 2 reads only what was appended: 20 bookings (18 at 50 ms,
    2 at 900 ms) and 10 health checks (1000, 1500, … 5500 ms).  Of those 30, p50 = 15th = 50,
    p95 = 29th = 5000, p99 = 30th = 5500; the bookings' p95 is their 19th, 900 ms, a slow endpoint; /health
    (p95 5500) has fewer than min_endpoint_requests (20) requests and is not judged."""
    log = tmp_path / "access.log"
    lines = crafted_log().splitlines(keepends=True)
    log.write_text("".join(lines[:20]))
    cfg = file_config(make_config, log, tmp_path)
    first = run(cli, cfg)
    assert first["metrics"]["requests"] == 20
    m = first["metrics"]
    assert (m["latency_p50_ms"], m["latency_p95_ms"], m["latency_p99_ms"]) == (100.0, 200.0, 250.0)
    by = checks(first)
    assert "logs.nginx.latency_p95" not in by and "logs.nginx.slow_endpoint" not in by, by
    with open(log, "a") as fh:
        fh.write("".join(lines[20:50]))
    second = run(cli, cfg)
    m = second["metrics"]
    assert m["requests"] == 30
    assert (m["latency_p50_ms"], m["latency_p95_ms"], m["latency_p99_ms"]) == (50.0, 5000.0, 5500.0)
    by = checks(second)
    (p95,) = by["logs.nginx.latency_p95"]
    assert (p95["value"], p95["threshold"]) == (5000.0, 200.0)
    assert "p95 response time 5000 ms (p50 50, p99 5500), objective < 200 ms" in p95["message"]
    assert [(f["subject"], f["value"]) for f in by["logs.nginx.slow_endpoint"]] == [("POST /api/v1/bookings", 900.0)]
    assert "p95 900 ms over 20 requests (p50 50, max 900)" in by["logs.nginx.slow_endpoint"][0]["message"]
    assert second["status"] == "warn"
    # a stricter objective judges the first run's 200 ms p95 (and the items endpoint) too
    strict = run(cli, file_config(make_config, log, tmp_path / "strict", latency_p95_ms=199, incremental=False))
    assert strict["metrics"]["latency_p95_ms"] == 4500.0  # all 50 lines: p95 = 48th = the 8th health check
    assert {f["subject"] for f in checks(strict)["logs.nginx.slow_endpoint"]} == {
        "POST /api/v1/bookings", "GET /api/v1/items/:id"}


def chart_points(page: str, title: str) -> list[str]:
    """The point titles ("label: value") of the line chart called ``title`` in an HTML report."""
    m = re.search(r'<svg class="chart"[^>]*aria-label="' + re.escape(title) + r'".*?</svg>', page, re.S)
    assert m, f"no chart {title!r}"
    return re.findall(r"<circle [^>]*><title>([^<]*)</title></circle>", m.group(0))


def test_second_report_has_trend_charts_per_run(cli: Any, make_config: Any, fresh_site_log: NginxServer,
                                                tmp_path: Path) -> None:
    cfg = config(make_config, fresh_site_log, tmp_path)
    reqs = [Request("GET", f"/api/v1/listings/{i}", f"192.0.2.{i % 3 + 1}", "Mozilla/5.0") for i in range(30)]
    assert drive(fresh_site_log.url, TrafficPlan(reqs)).sent == 30
    wait_for_log_lines(fresh_site_log.access_log, 30)
    first = run(cli, cfg)
    page1 = Path(next(a["path"] for a in first["artifacts"] if a["format"] == "html")).read_text()
    assert "Trends appear after a few runs" in page1 and "requests per run" not in page1
    more = [Request("GET", f"/api/v1/listings/{i}", f"198.51.100.{i % 5 + 1}", "Mozilla/5.0") for i in range(50)]
    assert drive(fresh_site_log.url, TrafficPlan(more)).sent == 50
    wait_for_log_lines(fresh_site_log.access_log, 80)
    second = run(cli, cfg)
    assert second["metrics"]["requests"] == 50
    page2 = Path(next(a["path"] for a in second["artifacts"] if a["format"] == "html")).read_text()
    requests = chart_points(page2, "requests per run")
    assert len(requests) == 2
    assert requests[0].endswith(": 30") and requests[1].endswith(" (now): 50")
    visitors = chart_points(page2, "unique visitors per run")
    assert [v.rsplit(": ", 1)[1] for v in visitors] == ["3", "5"]  # one agent, 3 then 5 addresses
    p95 = chart_points(page2, "p95 latency per run")
    assert len(p95) == 2 and p95[1].endswith(" (now): " + _fmt(second["metrics"]["latency_p95_ms"]) + " ms")
    assert p95[0].endswith(": " + _fmt(first["metrics"]["latency_p95_ms"]) + " ms")
    assert len(chart_points(page2, "failed requests per run")) == 2


def test_requests_chart_shows_the_quiet_hours_as_zeros(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The requests-per-hour chart had a point only for hours with requests: an outage from 11:00 to 14:00
    was drawn as a straight line from the 11:00 point to the 14:00 one, as if traffic had gone on."""
    log = tmp_path / "access.log"
    log.write_text("".join(f'192.0.2.{i} - - [01/Mar/2024:{h}:00:0{i} +0000] "GET /x HTTP/1.1" 200 10 "-" "ua" 0.010\n'
                           for h in (10, 11, 14) for i in range(5)))
    r = run(cli, file_config(make_config, log, tmp_path))
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert chart_points(page, "requests per hour") == [
        "03/01 10h: 5", "03/01 11h: 5", "03/01 12h: 0", "03/01 13h: 0", "03/01 14h: 5"]
    assert "requests per hour" in page


# -- damaged rotated files -----------------------------------------------------------------------


def access_line(i: int) -> bytes:
    return (f'192.0.2.{i % 200 + 1} - - [01/Mar/2024:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] '
            f'"GET /items/{i} HTTP/1.1" 200 {i % 900} "-" "Mozilla/5.0" 0.0{i % 10}\n').encode()


def test_damaged_rotated_gz_files_do_not_fail_the_runs(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A truncated access.log.2.gz made every run fail ('cannot read …: None'; trailing garbage: an internal
    error) and its cursor was never saved.  Now the lines before the damage count, the file is named in a
    warning, trailing garbage is ignored as zcat does (a note), and later runs read only what is new."""
    import gzip

    logs = tmp_path / "logs"
    logs.mkdir()
    whole = gzip.compress(b"".join(access_line(i) for i in range(4000)))
    (logs / "access.log.2.gz").write_bytes(whole[:len(whole) // 2])
    (logs / "access.log.1.gz").write_bytes(gzip.compress(b"".join(access_line(i) for i in range(5000, 5100)))
                                           + b"junk")
    live = logs / "access.log"
    live.write_bytes(b"".join(access_line(i) for i in range(6000, 6010)))
    cfg = file_config(make_config, live, tmp_path)
    complete = gzip.decompress(whole).count(b"\n")
    with open(logs / "access.log.2.gz", "rb") as fh:  # what zcat gets out of the truncated file
        cut = __import__("zlib").decompressobj(31).decompress(fh.read())
    first = run(cli, cfg)
    assert first["metrics"]["requests"] == cut.count(b"\n") + 100 + 10 < complete + 110
    assert first["metrics"]["invalid"] == 0  # the line the damage cuts is not counted as a bad line
    damaged = {f["subject"]: f for f in checks(first)["logs.nginx.damaged_file"]}
    assert set(damaged) == {str(logs / "access.log.2.gz"), str(logs / "access.log.1.gz")}
    trunc = damaged[str(logs / "access.log.2.gz")]
    assert trunc["severity"] == "warning" and "truncated" in trunc["message"]
    garbage = damaged[str(logs / "access.log.1.gz")]
    assert garbage["severity"] == "info" and "trailing garbage" in garbage["message"]
    assert first["status"] == "warn"
    second = run(cli, cfg)  # the cursors were saved: nothing new, no repeated warning
    assert second["metrics"]["requests"] == 0 and "logs.nginx.damaged_file" not in checks(second)
    with open(live, "ab") as fh:
        fh.write(access_line(7))
    assert run(cli, cfg)["metrics"]["requests"] == 1


# -- log_format as written in nginx.conf ---------------------------------------------------------


def format_config(block: str) -> str:
    return ("targets:\n  web: {kind: nginx}\njobs:\n  web-logs:\n    task: logs.nginx\n    target: web\n"
            "    options:\n      log_format: " + block)


def test_pasted_log_format_directive_and_escape_are_accepted() -> None:
    pasted = ("|\n        log_format  main  escape=json '{\"ip\":\"$remote_addr\",\"time\":\"$time_local\",'\n"
              "                                   '\"request\":\"$request\",\"status\":$status}';\n")
    setup = build_setup(load_text(format_config(pasted), "u.yaml"))
    from upkeeper.logs.nginx_format import normalize_format

    fmt = setup.jobs["web-logs"].options.log_format  # type: ignore[attr-defined]
    assert normalize_format(fmt) == '{"ip":"$remote_addr","time":"$time_local","request":"$request","status":$status}'


@pytest.mark.parametrize(("value", "message"), [
    ("'$remote_addr [$time_local] $request $status'",
     "$request is followed by a blank, not by a quote: its value ('GET /path HTTP/1.1') has blanks itself"),
    ("\"escape=xml '$remote_addr [$time_local] \\\"$request\\\"'\"", "escape=xml is not an nginx log_format escape"),
])
def test_log_format_that_cannot_work_is_a_located_config_error(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_setup(load_text(format_config(value + "\n"), "u.yaml"))
    (problem,) = [p.render() for p in err.value.problems]
    assert problem.startswith("u.yaml:8: jobs -> web-logs -> options -> log_format: ")
    assert message in problem


def test_bursts_split_by_the_boundary_between_runs_are_counted_whole(cli: Any, make_config: Any,
                                                                      tmp_path: Path) -> None:
    """Each run reads only the new lines: 14 failed logins in 280 s, or 24 404s in two minutes, cut in half by
    the time the runs happened to start, were 7 + 7 and 12 + 12, under both thresholds, and never reported.
    The next run now counts the previous run's last minutes too, and a burst already judged whole is not
    reported again by a run that brings nothing new from that client."""
    def lines(k0: int, k1: int) -> str:
        out = []
        for k in range(k0, k1):
            out.append(f'203.0.113.7 - - [01/Mar/2024:10:{k * 20 // 60:02d}:{k * 20 % 60:02d} +0000] '
                       f'"POST /login HTTP/1.1" 401 5 "-" "Mozilla/5.0" 0.010\n')
            for j in range(2):  # 404s from 10:00:30 to 10:01:16 for k < 12
                s = 30 + 2 * (2 * k + j)
                out.append(f'198.51.100.9 - - [01/Mar/2024:10:{s // 60:02d}:{s % 60:02d} +0000] '
                           f'"GET /probe{k}-{j}.php HTTP/1.1" 404 5 "-" "Mozilla/5.0" 0.010\n')
        return "".join(out)

    log = tmp_path / "access.log"
    log.write_text(lines(0, 6))
    cfg = file_config(make_config, log, tmp_path)
    first = run(cli, cfg)
    assert first["metrics"]["failed_logins"] == 6 and checks(first) == {}, checks(first)
    with open(log, "a") as fh:
        fh.write(lines(6, 12) + lines(12, 14).replace("198.51.100.9", "192.0.2.50"))
    by = checks(run(cli, cfg))
    (brute,) = by["logs.nginx.brute_force"]
    assert (brute["subject"], brute["value"]) == ("203.0.113.7", 14)
    assert "14 failed logins" in brute["message"] and "8 in the lines this run read" in brute["message"]
    (burst,) = by["logs.nginx.not_found_burst"]
    assert (burst["subject"], burst["value"]) == ("198.51.100.9", 24)
    # another client's lines only: the bursts above were judged whole and are not reported again
    with open(log, "a") as fh:
        fh.write(lines(14, 15).replace("203.0.113.7", "192.0.2.51").replace("198.51.100.9", "192.0.2.51"))
    third = run(cli, cfg)
    assert third["metrics"]["requests"] == 3 and checks(third) == {}, checks(third)



def test_a_line_dated_in_the_future_does_not_cut_the_burst_kept_between_runs(cli: Any, make_config: Any,
                                                                            tmp_path: Path) -> None:
    """The 404s and failed logins kept for the next run were those of the last minutes before the newest log
    time: one line dated 9999 (a wrong clock, a forged line) made that 9999 and dropped them all (and the
    HTML chart of requests per hour, stretched to 9999, failed the run with an OverflowError)."""
    def probes(k0: int, k1: int) -> str:
        return "".join(f'198.51.100.9 - - [01/Mar/2024:10:{s // 60:02d}:{s % 60:02d} +0000] '
                       f'"GET /probe{s}.php HTTP/1.1" 404 5 "-" "Mozilla/5.0" 0.010\n' for s in range(k0, k1, 3))

    log = tmp_path / "access.log"
    log.write_text(probes(30, 66) + '192.0.2.9 - - [31/Dec/9999:23:59:59 +0000] "GET / HTTP/1.1" 200 5 "-" '
                   '"curl/8" 0.010\n')
    cfg = file_config(make_config, log, tmp_path)
    r = run(cli, cfg)
    assert r["status"] == "warn", r["summary"]
    first = checks(r)
    assert "logs.nginx.not_found_burst" not in first, first
    with open(log, "a") as fh:
        fh.write(probes(66, 102))
    (burst,) = checks(run(cli, cfg))["logs.nginx.not_found_burst"]
    assert (burst["subject"], burst["value"]) == ("198.51.100.9", 24)
    assert first["logs.nginx.future_lines"][0]["value"] == 1


def test_a_first_run_over_more_days_than_are_kept_reports_them_all(cli: Any, make_config: Any,
                                                                   tmp_path: Path) -> None:
    """A first run over a log of 40 days failed with a KeyError: the hours older than the kept days were
    dropped from the counts and then looked up."""
    log = tmp_path / "access.log"
    log.write_text("".join(timed_lines(datetime(2024, 1, 1, 12) + timedelta(days=d), 1, 2) for d in range(40)))
    r = run(cli, file_config(make_config, log, tmp_path))
    assert r["status"] in ("ok", "warn") and r["metrics"]["requests"] == 80, r
    assert r["metrics"]["peak_hour_requests"] == 2


# -- traffic spikes on sub-hourly schedules --------------------------------------------------------


def timed_lines(start: datetime, minutes: int, per_minute: int, ip: str = "192.0.2.20") -> str:
    """``per_minute`` requests in each minute from ``start`` on, as nginx writes them (combined_timed)."""
    out = []
    for m in range(minutes):
        t = start + timedelta(minutes=m)
        for k in range(per_minute):
            out.append(f'{ip} - - [{t:%d/%b/%Y:%H:%M}:{k * 60 // per_minute:02d} +0000] '
                       f'"GET /items/{k} HTTP/1.1" 200 5 "-" "Mozilla/5.0" 0.010\n')
    return "".join(out)


def test_traffic_spike_compares_whole_hours_whatever_the_schedule(cli: Any, make_config: Any,
                                                                   tmp_path: Path) -> None:
    """A job every 15 minutes read a quarter of an hour per run, so its 'busiest hour' was a quarter of one;
    after a gap (the machine was down two hours) the run that caught up read whole hours of the same steady
    traffic and reported them as a 4x traffic spike.  Hours are now counted whole across runs (the job's
    state) and judged against the usual busiest hour of earlier days: steady traffic raises nothing, a real
    spike does — inside a quarter-hour run too."""
    log = tmp_path / "access.log"
    t0 = datetime(2024, 3, 1, 12, 0)
    log.write_text(timed_lines(t0, 36 * 60, 2))  # a day and a half of steady traffic: 120 requests an hour
    cfg = file_config(make_config, log, tmp_path, spike_min_runs=3)
    first = run(cli, cfg)
    assert first["metrics"]["requests"] == 36 * 60 * 2 and "logs.nginx.traffic_spike" not in checks(first)
    t = t0 + timedelta(hours=36)  # 3 March, 00:00
    for _ in range(4):  # every 15 minutes
        with open(log, "a") as fh:
            fh.write(timed_lines(t, 15, 2))
        t += timedelta(minutes=15)
        r = run(cli, cfg)
        assert r["metrics"]["requests"] == 30 and "logs.nginx.traffic_spike" not in checks(r), checks(r)
    with open(log, "a") as fh:  # down for two hours: the next run reads them whole
        fh.write(timed_lines(t, 120, 2))
    t += timedelta(minutes=120)
    caught_up = run(cli, cfg)
    assert caught_up["metrics"]["requests"] == 240
    assert "logs.nginx.traffic_spike" not in checks(caught_up), checks(caught_up)
    assert caught_up["metrics"]["peak_hour_requests"] == 120
    # a real spike within a quarter of an hour: 15 + 400 requests in that hour
    with open(log, "a") as fh:
        fh.write(timed_lines(t, 15, 1) + timed_lines(t + timedelta(minutes=1), 1, 400, ip="198.51.100.30"))
    (spike,) = checks(run(cli, cfg))["logs.nginx.traffic_spike"]
    assert spike["subject"] == "2024-03-03 03:00" and spike["value"] == 415
    assert "3.5x the usual 120" in spike["message"], spike["message"]


def test_hour_counts_add_up_over_incremental_runs_and_are_replaced_by_full_reads() -> None:
    from upkeeper.tasks.logs.nginx import HOURS_KEPT_DAYS, merge_hours

    earlier = {"2024-01-01 10:00": 5, "2024-03-01 10:00": 30}
    now = "2026-01-01 00:00"
    assert merge_hours(earlier, {"2024-03-01 10:00": 12, "2024-03-01 11:00": 3}, incremental=True,
                       not_after=now) == {
        "2024-03-01 10:00": 42, "2024-03-01 11:00": 3}  # January is more than HOURS_KEPT_DAYS old
    assert HOURS_KEPT_DAYS < 60
    assert merge_hours(earlier, {"2024-03-01 10:00": 31}, incremental=False, not_after=now)["2024-03-01 10:00"] == 31
    # an hour past not_after (a wrong clock) is not kept, and the kept days are counted back from the real ones
    assert merge_hours(earlier, {"2099-01-01 00:00": 1}, incremental=True, not_after=now) == {"2024-03-01 10:00": 30}


# -- access_log as a glob ---------------------------------------------------------------------------


def test_access_log_glob_reads_every_matching_log_with_its_rotated_files(cli: Any, make_config: Any,
                                                                          tmp_path: Path) -> None:
    """A glob (one access log per site) was taken for a file name and reported as 'does not exist', where
    logs.errors and logs.postgres accept globs.  Each log it matches is read with its rotated files, a
    rotated match stands for its live log (so '*.log*' reads each line once), and cursors are per file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "shop.access.log").write_bytes(b"".join(access_line(i) for i in range(0, 30)))
    (logs / "shop.access.log.1").write_bytes(b"".join(access_line(i) for i in range(100, 110)))
    (logs / "blog.access.log").write_bytes(b"".join(access_line(i) for i in range(200, 205)))
    (logs / "error.log").write_text("2024/03/01 10:00:00 [error] 1#1: *1 open() failed\n")
    cfg = file_config(make_config, logs / "*.access.log*", tmp_path)
    first = run(cli, cfg)
    assert first["status"] == "ok", first["findings"]
    assert (first["metrics"]["requests"], first["metrics"]["invalid"]) == (45, 0)
    with open(logs / "blog.access.log", "ab") as fh:
        fh.write(access_line(7))
    assert run(cli, cfg)["metrics"]["requests"] == 1
    missing = run(cli, file_config(make_config, logs / "*.nope.log", tmp_path))
    assert missing["status"] == "fail"
    (f,) = checks(missing)["logs.nginx.missing"]
    assert f["message"] == f"the access log: no file matches {logs}/*.nope.log"


@pytest.mark.parametrize(("log_format", "available"), [("combined_timed", True), ("combined", False)])
def test_report_of_a_log_without_requests_tells_why_there_is_no_latency(
        cli: Any, make_config: Any, tmp_path: Path, log_format: str, available: bool) -> None:
    """No request read (an empty log, then only lines that do not parse) is not a format without
    $request_time: the report, the JSON and the findings say which of the two it is."""
    log = tmp_path / "access.log"
    log.write_text("")
    no_rt = "The log format has no $request_time"
    no_requests = "No request with a response time was read (yet)"
    for content in ("", "garbage that is no access-log line\n" * 3):
        log.write_text(content)
        r = run(cli, file_config(make_config, log, tmp_path / str(len(content)), log_format=log_format,
                                 incremental=False))
        page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
        data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
        assert data["latency"]["available"] is available
        assert (no_rt in page, no_requests in page) == (not available, available)
        assert ("logs.nginx.no_latency" in checks(r)) == (bool(content) and not available)
    res = cli(["logs", "nginx", str(log), "--format", log_format, "--json", "--html", str(tmp_path / "cli.html")])
    assert res.code == 0, res.output
    assert res.json()["latency"]["available"] is available
    assert (no_rt in (tmp_path / "cli.html").read_text()) is not available



def test_requests_without_their_format_s_request_time_are_said(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """nginx writing 'combined' read as 'combined_timed': every line ends before $request_time, GoAccess counts the
    requests all the same, and the run said 'ok' (no latency finding: the format has $request_time) while the
    report said 'No request with a response time was read (yet)' over 100 requests. A warning says so now."""
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(access_line(i).rsplit(b" ", 1)[0] + b"\n" for i in range(100)))  # no request time
    r = run(cli, file_config(make_config, log, tmp_path))
    assert r["metrics"]["requests"] == 100 and r["status"] == "warn", r["summary"]
    (f,) = checks(r)["logs.nginx.no_latency"]
    assert f["severity"] == "warning" and "none of the 100 requests read had a $request_time" in f["message"]
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "None of the 100 requests read had a response time" in page and "(yet)" not in page
    # with the request times there, no such finding
    log.write_bytes(b"".join(access_line(i) for i in range(100)))
    r = run(cli, file_config(make_config, log, tmp_path / "timed"))
    assert "logs.nginx.no_latency" not in checks(r) and r["metrics"]["requests"] == 100

CORPUS = Path(__file__).parents[1] / "logs" / "corpus"  # real nginx lines of real tools (its README.md)


def test_real_attack_traffic_findings(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """sqlmap, wfuzz and nmap requests as a real nginx logged them, among ordinary traffic: one finding per
    category counting each attack line, none for the ordinary lines, each scanner under its own name."""
    attacks = ("sql_injection", "path_traversal", "scanner_probe", "xss", "ssrf", "open_proxy", "command_injection")
    files = ("benign", *attacks, "exploit_agents")
    data = {f: (CORPUS / f"{f}.log").read_bytes() for f in files}
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(data.values()))
    r = run(cli, file_config(make_config, log, tmp_path))
    by = checks(r)
    want = {c: data[c].count(b"\n") for c in attacks}
    want["scanner_probe"] += 1  # nmap's Shellshock probe asks for /cgi-bin/test.cgi
    got = {k.rsplit(".", 1)[1]: f[0]["value"] for k, f in by.items() if k.startswith("logs.nginx.attack.")}
    assert got == want
    assert r["metrics"]["attacks"] == sum(want.values())
    assert {f["subject"] for f in by["logs.nginx.scanner_agent"]} == {
        "sqlmap", "wfuzz", "nmap", "shellshock", "sql_injection_in_agent", "log4shell", "shellshock_in_referer",
        "log4shell_in_referer"}
    assert "a log4shell exploit as the referer" in {f["subject"]: f for f in by["logs.nginx.scanner_agent"]}[
        "log4shell_in_referer"]["message"]
    assert "IMDSv2" in by["logs.nginx.attack.ssrf"][0]["remediation"]
    proxy = by["logs.nginx.attack.open_proxy"][0]
    assert "proxy_pass" in proxy["remediation"] and proxy["severity"] == "warning"  # GET http://azenv.net/ got 200


def test_scanner_finding_counts_every_client(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The finding names the number of clients, not the length of its list of the top ten."""
    line = (CORPUS / "sql_injection.log").read_bytes().splitlines()[0]
    assert b'"sqlmap/1.7.2#stable (https://sqlmap.org)"' in line
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(b"203.0.113.%d" % i + line[line.index(b" "):] + b"\n" for i in range(1, 13)))
    r = run(cli, file_config(make_config, log, tmp_path))
    (f,) = checks(r)["logs.nginx.scanner_agent"]
    assert f["subject"] == "sqlmap"
    assert "12 request(s) with the sqlmap user agent from 12 client(s): 203.0.113." in f["message"], f["message"]


def test_an_attack_finding_asks_to_look_at_the_application_only_for_what_it_answered_2xx() -> None:
    """The hint said 'requests answered 2xx deserve a look at the application' of categories none of whose requests
    was answered 2xx (h17's lead): it now names how many were, or says none was."""
    from upkeeper.tasks.logs.nginx import NginxLogs

    def attack(ok: int) -> dict[str, Any]:
        return {"category": "sql_injection", "ok": ok, "hits": 12, "clients": 2, "samples": ["GET /?id=1' or '1'='1"],
                "top_clients": []}

    rep = {"security": {"attacks": [attack(0), attack(3)], "scanners": [], "not_found_bursts": [], "brute_force": [],
                        "exposed": []}}
    none, some = NginxLogs._security(None, NginxLogsOptions(), rep, "access.log")  # type: ignore[arg-type]
    assert "deserve a look" not in none.remediation and "none was answered 2xx" in none.remediation, none.remediation
    assert "the 3 request(s) answered 2xx deserve a look at the application" in some.remediation, some.remediation


def test_failed_logins_of_many_people_behind_one_address_are_no_brute_force_warning(cli: Any, make_config: Any,
                                                                                        tmp_path: Path) -> None:
    """An office or a mobile carrier's CGNAT puts many users behind one address: 12 mistyped passwords among 40
    logins that succeeded, in 20 minutes, were a logs.nginx.brute_force warning like a real brute force's. Such a
    client is now an info that says why; the brute force and the credential stuffing (one hit in 61 tries) stay
    warnings."""
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join(shared_address_traffic()) + b"\n")
    by = checks(run(cli, file_config(make_config, log, tmp_path)))
    brute = {f["subject"]: f for f in by["logs.nginx.brute_force"]}
    assert {ip: f["severity"] for ip, f in brute.items()} == {
        "198.51.100.20": "info", "203.0.113.30": "warning", "203.0.113.31": "warning"}
    assert "12 failed logins" in brute["198.51.100.20"]["message"]
    assert "40 login(s) from the same address succeeded" in brute["198.51.100.20"]["message"]
    assert "many users behind one address" in brute["198.51.100.20"]["message"]
    assert "1 login(s) from the same address succeeded" in brute["203.0.113.31"]["message"]
    assert "behind one address" not in brute["203.0.113.31"]["message"]
    assert "succeeded" not in brute["203.0.113.30"]["message"]
    assert any("198.51.100.20 (shared address?)" in page.read_text() for page in (tmp_path / "reports").rglob("*.html"))


def test_a_slow_brute_force_is_caught_across_runs_every_quarter_of_an_hour(cli: Any, make_config: Any,
                                                                           tmp_path: Path) -> None:
    """Credential stuffing at one try every 150 s, read by a run every 15 minutes: no run saw 10 failed logins in 20
    minutes, and none was reported. The job's state now carries the last hour's logins, so the run that completes
    an hour of 20 failures reports it (a warning, with the hour's threshold), and a run after it that brings no new
    try from that client does not report it again."""
    lines = [x for x in slow_login_traffic() if b"203.0.113.41" not in x]
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    cfg = file_config(make_config, log, tmp_path)
    found = []
    for quarter in range(4):
        with open(log, "ab") as fh:
            fh.write(b"".join(x + b"\n" for x in lines if f"10:{15 * quarter:02d}:".encode() <= x.split(b"[", 1)[1][12:18]
                              < f"10:{15 * quarter + 15:02d}:".encode()))
        found.append(checks(run(cli, cfg)).get("logs.nginx.brute_force", []))
    assert found[:3] == [[], [], []]  # at most 8 in any 20 minutes; 18 in the 45 minutes up to 10:44
    (last,) = found[3]  # the hour: 24 failed logins, the previous runs' carried in the job's state
    assert (last["subject"], last["severity"], last["value"], last["threshold"]) == ("203.0.113.40", "warning", 24, 20)
    assert "within 60 minutes" in last["message"] and "slow brute force or credential stuffing" in last["message"]
    assert "6 in the lines this run read" in last["message"]
    # a run that brings no new try from that client does not report the hour again
    with open(log, "ab") as fh:
        fh.write(b'10.0.0.1 - - [01/Mar/2024:11:00:05 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozilla/5.0" 0.050\n')
    assert "logs.nginx.brute_force" not in checks(run(cli, cfg))


def test_visitors_of_a_page_with_missing_images_are_no_404_burst(cli: Any, make_config: Any,
                                                                 fresh_site_log: NginxServer, tmp_path: Path) -> None:
    """Real nginx, real 404s: three browsers load a page whose 25 images and stylesheet are gone (each asks for all of
    them at once), and a directory scanner tries 25 paths. Each visitor was a logs.nginx.not_found_burst warning
    ("probing for files"); now only the scanner is."""
    page = "http://127.0.0.1/about.html"
    reqs: list[Request] = []
    for ip in ("198.51.100.41", "198.51.100.42", "2001:db8::43"):
        reqs.append(Request("GET", "/about.html", ip, "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"))
        reqs += [Request("GET", f"/img/gone/photo-{k}.webp?v=3", ip, "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
                         page) for k in range(25)]
        reqs.append(Request("GET", "/static/gone.css", ip, "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0", page))
    reqs += [Request("GET", f"/{w}", "203.0.113.77", "Mozilla/5.0 (compatible; gobuster-like)")
             for w in ("admin", "backup", "oldsite", "dev", "test", "wp", "api", "private", "config", "db",
                       "uploads", "tmp", "logs", "data", "panel", "manager", "console", "staging", "beta", "v1",
                       "v2", "cms", "shop", "login.bak", "site.tar.gz")]
    sent = drive(fresh_site_log.url, TrafficPlan(reqs), concurrency=1)
    assert not sent.errors and sent.status[404] == 3 * 26 + 25, sent.status
    wait_for_log_lines(fresh_site_log.access_log, sent.sent)
    r = run(cli, config(make_config, fresh_site_log, tmp_path))
    bursts = checks(r)["logs.nginx.not_found_burst"]
    assert [(f["subject"], f["value"]) for f in bursts] == [("203.0.113.77", 25)]


def test_credential_stuffing_from_many_addresses_is_a_warning(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """One failed login from each of 150 addresses in 15 minutes (5 logins succeeded) was no finding at all."""
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join(distributed_login_traffic(150, 5)) + b"\n")
    by = checks(run(cli, file_config(make_config, log, tmp_path)))
    assert "logs.nginx.brute_force" not in by
    (f,) = by["logs.nginx.credential_stuffing"]
    assert (f["severity"], f["value"], f["threshold"]) == ("warning", 150, 100)
    assert f["message"].startswith("150 failed logins from 150 clients within 20 minutes (from 2024-03-01 10:00), "
                                   "5 login(s) succeeded")


def test_a_site_search_listed_in_free_text_paths_raises_no_attack_warning(cli: Any, make_config: Any,
                                                                         fresh_site_log: NginxServer,
                                                                         tmp_path: Path) -> None:
    """People type SQL and markup into a site search, which answers 200 to anything: real nginx logged searches for
    'select * from users where id=1' and '<script>', and each run warned of injections answered 2xx. With /search in
    free_text_paths they are counted apart and the findings are infos that say so; the same text sent to an API
    path stays a warning."""
    import httpx

    typed = ["/search?q=select+*+from+users+where+id%3D1", "/search?q=1%27+or+%271%27%3D%271",
             "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"]
    with httpx.Client(base_url=fresh_site_log.url, timeout=10) as client:
        for path in typed:
            assert client.get(path).status_code == 200
    wait_for_log_lines(fresh_site_log.access_log, len(typed))
    cfg = config(make_config, fresh_site_log, tmp_path, incremental=False)
    before = checks(run(cli, cfg))
    assert before["logs.nginx.attack.sql_injection"][0]["severity"] == "warning"
    assert before["logs.nginx.attack.xss"][0]["severity"] == "warning"

    cfg = config(make_config, fresh_site_log, tmp_path, incremental=False, free_text_paths=["/search"])
    after = checks(run(cli, cfg))
    sqli, xss = after["logs.nginx.attack.sql_injection"][0], after["logs.nginx.attack.xss"][0]
    assert (sqli["severity"], xss["severity"]) == ("info", "info"), (sqli, xss)
    assert "0 answered 2xx (2 more answered 2xx on free_text_paths" in sqli["message"], sqli["message"]

    with httpx.Client(base_url=fresh_site_log.url, timeout=10) as client:
        assert client.get("/api/items?id=1%27+or+%271%27%3D%271").status_code == 200
    wait_for_log_lines(fresh_site_log.access_log, len(typed) + 1)
    again = checks(run(cli, cfg))["logs.nginx.attack.sql_injection"][0]
    assert again["severity"] == "warning", again
    assert "1 answered 2xx (2 more answered 2xx on free_text_paths" in again["message"], again["message"]
    assert "/api/items" in again["message"]  # the example shown is the one that was not typed

    # an absolute request line (RFC 9112 3.2.2), which nginx takes and logs as sent: the same search, by the site's
    # own name, is typed text too (it was an injection answered 2xx); by another host's, an attack as before
    import socket

    for host in ("shop.example", "other.test"):
        with socket.create_connection(("127.0.0.1", fresh_site_log.port), timeout=10) as sock:
            sock.sendall(f"GET http://{host}/search?q=1%27+or+%271%27%3D%271 HTTP/1.1\r\nHost: {host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 200"), host
    wait_for_log_lines(fresh_site_log.access_log, len(typed) + 3)
    assert b'"GET http://shop.example/search?q=' in fresh_site_log.access_log.read_bytes()  # logged as sent
    cfg = config(make_config, fresh_site_log, tmp_path, incremental=False, free_text_paths=["/search"],
                 server_names=["shop.example"])
    absolute = checks(run(cli, cfg))["logs.nginx.attack.sql_injection"][0]
    assert "2 answered 2xx (3 more answered 2xx on free_text_paths" in absolute["message"], absolute["message"]


def distinct_requests_log(path: Path, lines: int) -> int:
    """``lines`` requests whose request lines and clients are all distinct (cache-busting query strings from a
    flood of addresses): what makes a scan's memory grow with the log."""
    with path.open("w") as fh:
        for i in range(lines):
            fh.write(f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [01/Mar/2024:10:{i // 6000 % 60:02d}:{i // 100 % 60:02d} '
                     f'+0000] "GET /api/v1/items?_={1700000000000 + i}&v={i * 7919:032x} HTTP/1.1" 200 {100 + i % 900} '
                     f'"-" "Mozilla/5.0" 0.{i % 1000:03d}\n')
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_a_log_of_too_many_distinct_values_stops_at_the_memory_limit_and_records_nothing(
        cli: Any, make_config: Any, tmp_path: Path, workers: int) -> None:
    """A flood of distinct request lines and clients grew a scan's memory with the log (1 GB of them: 1.5 GB, on
    a host that also runs the database). Past memory_limit_mb the run now stops with an error that says what
    filled it, its helper processes end, and nothing is recorded: a run with room for it then reads every line."""
    import psutil

    log = tmp_path / "access.log"
    n = distinct_requests_log(log, 120_000)  # ~20 MB: over parallel.MIN_PARALLEL, so two processes scan
    cfg = file_config(make_config, log, tmp_path, workers=workers, memory_limit_mb=8)
    r = run(cli, cfg)
    assert r["status"] == "error", r
    assert "memory_limit_mb: 8" in r["summary"] and "distinct request lines" in r["summary"], r["summary"]
    assert "nothing of this run was recorded" in r["summary"]
    assert not r["metrics"]
    me = psutil.Process()
    assert not [p for p in me.children(recursive=True) if "scanworker" in " ".join(p.cmdline())]

    again = run(cli, file_config(make_config, log, tmp_path, workers=workers, memory_limit_mb=2000))
    assert again["status"] != "error", again["summary"]
    assert again["metrics"]["requests"] == n  # the failed run's cursor was not recorded


def test_the_logs_nginx_command_stops_at_its_memory_limit_with_a_clear_error(cli: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    distinct_requests_log(log, 60_000)
    res = cli(["logs", "nginx", "-f", "combined_timed", "--workers", "1", "--memory-limit-mb", "4", str(log)])
    assert res.code == 1, res.output
    assert "stopped: the logs hold more distinct values than 4 MB of memory" in res.output, res.output
    assert "distinct request lines" in res.output and "--memory-limit-mb" in res.output
    assert "Traceback" not in res.output
    ok = cli(["logs", "nginx", "-f", "combined_timed", "--json", str(log)])
    assert ok.code == 0 and ok.json()["requests"] == 60_000


def test_a_log_with_more_fields_than_its_log_format_gets_the_format_that_fits(cli: Any, make_config: Any,
                                                                             fresh_site_log: NginxServer,
                                                                             tmp_path: Path) -> None:
    """The job's default log_format is combined; nginx here writes combined plus $request_time. Every line parsed
    (as GoAccess reads them: what follows the format's last field is ignored), so nothing was said — while every
    line took the line-by-line parser (~5x slower) and latency was "not in the log format". Now a warning names
    the format that reads them field for field, and that format, once set, is quiet."""
    tp = plan(n_visitors=40, seed=11)
    sent = drive(fresh_site_log.url, tp)
    assert not sent.errors and sent.sent >= 200, sent.sent
    wait_for_log_lines(fresh_site_log.access_log, sent.sent)
    r = run(cli, config(make_config, fresh_site_log, tmp_path, log_format="combined", incremental=False))
    assert r["metrics"]["requests"] == sent.sent
    (hint,) = checks(r)["logs.nginx.log_format_hint"]
    assert hint["severity"] == "warning", hint
    assert "log_format 'combined_timed' reads" in hint["message"], hint["message"]
    assert "latency and the p95 objective are not judged" in hint["message"]
    assert re.search(r"they go on with '\d+\.\d{3}'", hint["message"]), hint["message"]
    assert "jobs -> log-analysis -> options -> log_format" in hint["remediation"]
    assert "logs.nginx.no_latency" not in checks(r)  # ("add $request_time to the nginx log_format": it is there)
    fixed = run(cli, config(make_config, fresh_site_log, tmp_path, log_format="combined_timed", incremental=False))
    assert "logs.nginx.log_format_hint" not in checks(fixed)
    assert fixed["metrics"]["requests"] == sent.sent and "latency_p95_ms" in fixed["metrics"]


def test_the_logs_nginx_command_names_the_format_that_fits_lines_with_more_fields(cli: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(
        f'203.0.113.{i % 250 + 1} - - [01/Mar/2024:10:00:{i % 60:02d} +0000] "GET /p/{i} HTTP/1.1" 200 {100 + i} '
        f'"-" "Mozilla/5.0" 0.{i % 1000:03d}\n'.encode() for i in range(400)))
    res = cli(["logs", "nginx", str(log)])
    assert res.code == 0, res.output
    assert "400 of the first 400 lines have more fields than the log_format 'combined'" in res.output, res.output
    assert "Try: --format combined_timed" in res.output
    assert "more fields" not in cli(["logs", "nginx", "--format", "combined_timed", str(log)]).output


def test_the_logs_nginx_command_says_lines_the_format_does_not_parse_at_all(cli: Any, tmp_path: Path) -> None:
    """A log_format that parses none of the lines (another order of fields) has no "more fields" to speak of: the
    note says the lines do not parse (it said "400 of the first 400 lines have more fields than the log_format")."""
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(
        f'203.0.113.{i % 250 + 1} - - [01/Mar/2024:10:00:{i % 60:02d} +0000] "GET /p/{i} HTTP/1.1" 200 {100 + i} '
        f'"-" "Mozilla/5.0"\n'.encode() for i in range(400)))
    other = '$remote_addr [$time_local] "$request" $status'
    res = cli(["logs", "nginx", "--format", other, str(log)])
    assert f"400 of the first 400 lines do not parse with the log_format {other!r}" in res.output, res.output
    assert "more fields" not in res.output and "4x slower" not in res.output
    assert "Try: --format combined" in res.output
