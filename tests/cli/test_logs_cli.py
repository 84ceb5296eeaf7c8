"""``upkeeper logs …``: ad-hoc analysis from the command line."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

from upkeeper.logs.synth import write_access_log


def test_nginx_summary_json_and_html(cli: Any, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    n = write_access_log(str(log), 400_000, seed=2)
    gz = tmp_path / "access.log.1.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    r = cli(["logs", "nginx", str(log), str(gz), "--format", "combined_timed", "--json", "--html",
             str(tmp_path / "r.html")])
    assert r.code == 0, r.output
    rep = r.json()
    assert rep["requests"] == 2 * n and rep["invalid"] == 0
    assert rep["goaccess"]["log_format_flags"][1] == "--date-format=%d/%b/%Y"
    assert "<svg" in (tmp_path / "r.html").read_text()
    text = cli(["logs", "nginx", str(log), "-f", "combined_timed"])
    assert text.code == 0 and "unique visitors" in text.out and "slowest endpoints" in text.out


def test_postgres_and_errors(cli: Any, tmp_path: Path) -> None:
    pg = tmp_path / "pg.log"
    pg.write_text("2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 250.000 ms  statement: SELECT * FROM t WHERE id = 1\n"
                  "2024-03-01 10:00:00.002 UTC [11] ERROR:  relation \"x\" does not exist at character 15\n"
                  "2024-03-01 10:00:00.002 UTC [11] STATEMENT:  SELECT * FROM x\n")
    r = cli(["logs", "postgres", str(pg), "--json"])
    assert r.code == 0, r.output
    rep = r.json()
    assert rep["statements"]["count"] == 1 and rep["errors"]["by_sqlstate"] == {"42P01": 1}
    app = tmp_path / "app.log"
    app.write_text('{"level":"error","msg":"x","err":{"type":"TypeError","message":"boom","stack":"TypeError: boom"}}\n')
    r = cli(["logs", "errors", str(app), "--json"])
    assert r.json()["app"]["exceptions"] == [{"type": "TypeError", "message": "boom", "count": 1,
                                              "example": "TypeError: boom", "sources": [str(app)]}]


def test_usage_errors(cli: Any, tmp_path: Path) -> None:
    r = cli(["logs", "nginx", str(tmp_path / "missing.log")])
    assert r.code == 2 and "no such file" in r.err
    r = cli(["logs", "nginx", str(tmp_path), "--format", '"$request"'])
    assert r.code == 2 and "$remote_addr" in r.err
    r = cli(["logs", "postgres", str(tmp_path), "--prefix", "%m", "--format", "stderr"])
    assert r.code == 2 and "%p" in r.err  # (said before the files are looked for)
    (tmp_path / "postgresql.log").write_text("2024-03-01 10:00:00.000 UTC LOG:  checkpoint starting: time\n")
    r = cli(["logs", "postgres", str(tmp_path / "postgresql.log"), "--prefix", "%m"])
    assert r.code == 2 and "%p" in r.err  # (format auto: once the file's lines tell it is no syslog file)
    r = cli(["logs", "goaccess-format", "--format", "combined"])
    assert r.code == 0 and "--log-format=%h %^[%d:%t %^]" in r.out


def test_text_output_masks_tokens_and_credentials(cli: Any, tmp_path: Path) -> None:
    """The plain console tables (not only --json and --html) mask query-string tokens and DSN passwords."""
    log = tmp_path / "access.log"
    line = ('203.0.113.9 - - [01/Mar/2024:10:00:{s:02d} +0000] "GET /reset?token=tok-9f8e7d6c&lang=en HTTP/1.1" '
            '200 12 "-" "curl/8.0"\n')
    attack = ('203.0.113.7 - - [01/Mar/2024:10:01:00 +0000] "GET /items?id=1%27%20union%20select%20password'
              '&api_key=key-5a4b3c2d HTTP/1.1" 200 12 "-" "sqlmap/1.7"\n')
    log.write_text("".join(line.format(s=i) for i in range(30)) + attack * 3)
    r = cli(["logs", "nginx", str(log)])
    assert r.code == 0, r.output
    assert "tok-9f8e7d6c" not in r.out and "key-5a4b3c2d" not in r.out
    assert "/reset" in r.out
    app = tmp_path / "app.log"
    app.write_text('{"level":"error","msg":"x","err":{"type":"OperationalError","message":'
                   '"could not connect to postgresql://app:pw-77aa66bb@db:5432/app","stack":"OperationalError"}}\n')
    r = cli(["logs", "errors", str(app)])
    assert r.code == 0, r.output
    assert "pw-77aa66bb" not in r.out and "OperationalError" in r.out


def test_bursts_across_a_clock_boundary_are_not_split(cli: Any, tmp_path: Path) -> None:
    """25 probes from 10:00:50 to 10:01:14 (13 + 12 per clock minute) are one burst of 25; 12 failed logins
    over two login paths, six before and six after 10:10, are one brute force of 12."""
    lines = []
    for i in range(25):
        t = 50 + i
        lines.append(f'198.51.100.4 - - [01/Mar/2024:10:{t // 60:02d}:{t % 60:02d} +0000] "GET /probe{i}.php HTTP/1.1" '
                     f'404 0 "-" "Mozilla/5.0"\n')
    for i in range(12):
        mm, path = (9, "/login") if i < 6 else (11, "/api/token")
        lines.append(f'198.51.100.8 - - [01/Mar/2024:10:{mm:02d}:{10 + i:02d} +0000] "POST {path} HTTP/1.1" '
                     f'401 0 "-" "Mozilla/5.0"\n')
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    r = cli(["logs", "nginx", str(log), "--json"])
    assert r.code == 0, r.output
    sec = r.json()["security"]
    assert [(b["ip"], b["max_in_window"], b["from"]) for b in sec["not_found_bursts"]] == [
        ("198.51.100.4", 25, "2024-03-01 10:00")]
    [brute] = sec["brute_force"]
    assert (brute["ip"], brute["max_per_window"], sorted(brute["paths"])) == ("198.51.100.8", 12,
                                                                            ["/api/token", "/login"])


def test_errors_reads_a_big_application_log_in_pieces_without_cutting_a_trace(cli: Any, tmp_path: Path) -> None:
    """The app log is streamed in 4 MiB pieces cut at line ends: a traceback across a piece boundary is whole."""
    trace = ('Traceback (most recent call last):\n  File "/srv/app/app.py", line 3, in handler\n    pay()\n'
             'ValueError: card declined\n')
    filler = "2024-03-01 10:00:00 INFO request served\n"
    before = ((4 << 20) - 40) // len(filler)  # the trace starts just before the 4 MiB mark
    app = tmp_path / "app.log"
    app.write_text(filler * before + trace + filler * 1000 + trace)
    r = cli(["logs", "errors", str(app), "--json"])
    assert r.code == 0, r.output
    assert r.json()["app"]["exceptions"] == [{"type": "ValueError", "message": "card declined", "count": 2,
                                              "example": trace.rstrip("\n"), "sources": [str(app)]}]  # the whole trace


def test_errors_reads_a_trace_cut_by_rotation_whole(cli: Any, tmp_path: Path) -> None:
    """A traceback whose head is at the end of app.log.1 and whose end starts app.log is one exception with its
    frames, as the logs.errors task reads it (each file was read on its own: the exception line alone)."""
    (tmp_path / "app.log.1").write_text('2026-12-07 10:00:00 ERROR payment failed\nTraceback (most recent call last):\n'
                                        '  File "/srv/app/app.py", line 3, in handler\n    pay()\n')
    (tmp_path / "app.log").write_text("ValueError: card 5 declined\n2026-12-07 10:00:01 INFO ok\n")
    r = cli(["logs", "errors", str(tmp_path / "app.log"), "--json"])
    assert r.code == 0, r.output
    [exc] = r.json()["app"]["exceptions"]
    assert (exc["type"], exc["count"], exc["sources"]) == ("ValueError", 1, [str(tmp_path / "app.log.1")])
    assert exc["example"].startswith("Traceback (most recent call last):") and "    pay()" in exc["example"]


def test_upstream_time_of_retried_requests_adds_up(cli: Any, tmp_path: Path) -> None:
    """nginx writes one $upstream_response_time per upstream tried ("0.010, 0.020"; " : " across internal
    redirects): the request waited for all of them, so they count as their sum, not as no sample."""
    log = tmp_path / "access.log"
    head = '192.0.2.1 - - [01/Mar/2024:10:00:0{s} +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8" '
    log.write_text(head.format(s=0) + "0.012 0.010\n" + head.format(s=1) + "0.032 0.010, 0.020\n"
                   + head.format(s=2) + "0.016 0.004 : 0.010\n" + head.format(s=3) + "0.001 -\n")
    fmt = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
           '"$http_user_agent" $request_time $upstream_response_time')
    r = cli(["logs", "nginx", str(log), "--format", fmt, "--json"])
    assert r.code == 0, r.output
    rep = r.json()
    assert rep["requests"] == 4 and rep["invalid"] == 0
    ups = rep["latency"]["upstream"]
    assert (ups["count"], ups["max"], ups["p50"], ups["mean"]) == (3, 30.0, 14.0, 18.0)  # 10, 30, 14 ms


NGINX_ERRORS = ("2024/03/01 10:00:00 [error] 11#11: *1 upstream timed out (110: Connection timed out) while "
                "reading response header from upstream, client: 192.0.2.1\n"
                "2024/03/01 10:00:01 [crit] 11#11: *2 open() \"/srv/x\" failed (13: Permission denied)\n")


def test_errors_rejects_a_missing_file_or_a_directory_with_a_usage_error(cli: Any, tmp_path: Path) -> None:
    """'logs errors' said 'internal error: FileNotFoundError/IsADirectoryError' (exit 1)."""
    for args, what in (([str(tmp_path / "gone.log")], "no such file"),
                       (["--nginx", str(tmp_path / "gone.log")], "no such file"),
                       ([str(tmp_path)], "is a directory"), (["--nginx", str(tmp_path)], "is a directory")):
        r = cli(["logs", "errors", *args])
        assert r.code == 2, (args, r.output)
        assert "internal error" not in r.err and what in r.err and "Error:" in r.err, r.err


def test_errors_reads_a_compressed_nginx_error_log(cli: Any, tmp_path: Path) -> None:
    """--nginx err.log.gz was analyzed as compressed bytes: no levels, no classes, exit 0."""
    gz = tmp_path / "error.log.1.gz"
    gz.write_bytes(gzip.compress(NGINX_ERRORS.encode()))
    app = tmp_path / "app.log.gz"
    app.write_bytes(gzip.compress(b'{"level":"error","msg":"x","err":{"type":"TypeError","message":"boom"}}\n'))
    r = cli(["logs", "errors", "--nginx", str(gz), str(app), "--json"])
    assert r.code == 0, r.output
    rep = r.json()
    assert rep["nginx"]["levels"] == {"error": 1, "crit": 1} and rep["nginx"]["upstream"] == 1
    assert (rep["nginx"]["lines"], rep["nginx"]["unparsed"]) == (2, 0)
    assert rep["app"]["exceptions"] == [{"type": "TypeError", "message": "boom", "count": 1,
                                         "example": '{"level":"error","msg":"x","err":{"type":"TypeError",'
                                                    '"message":"boom"}}', "sources": [str(app)]}]
    text = cli(["logs", "errors", "--nginx", str(gz)])
    assert text.code == 0 and "2 lines" in text.out


PHP_FPM_LOG = Path(__file__).parents[1] / "logs" / "applogs" / "nginx-php-fpm-error.log"


def test_errors_shows_the_php_exceptions_php_fpm_relayed_into_nginx_error_log(cli: Any, tmp_path: Path) -> None:
    """PHP 8.2's uncaught exceptions, relayed by PHP-FPM into nginx's error log (real output, see
    tests/logs/applogs/README.md), are exception groups for the logs.errors task; `upkeeper logs errors --nginx`
    showed message classes only.  A log that ends inside such an entry (its closing quote never came) keeps it."""
    r = cli(["logs", "errors", "--nginx", str(PHP_FPM_LOG), "--json"])
    assert r.code == 0, r.output
    groups = {(g["type"], g["message"]): g["count"] for g in r.json()["app"]["exceptions"]}
    assert groups[("InvalidArgumentException", "order id <n> is not valid")] == 2, groups
    assert groups[("RuntimeException", "cannot load order <n>")] == 2, groups  # its cause a PDOException
    assert all(g["sources"] == [str(PHP_FPM_LOG)] for g in r.json()["app"]["exceptions"])
    text = cli(["logs", "errors", "--nginx", str(PHP_FPM_LOG)])
    assert text.code == 0 and "application exceptions" in text.out and "PDOException" in text.out, text.out
    # the log cut inside the first entry's stack trace: that exception is still read
    cut = tmp_path / "error.log"
    raw = PHP_FPM_LOG.read_bytes()
    cut.write_bytes(raw[:raw.index(b"#1 {main}")])
    got = cli(["logs", "errors", "--nginx", str(cut), "--json", "--no-rotated"]).json()
    assert [(g["type"], g["count"]) for g in got["app"]["exceptions"]] == [("InvalidArgumentException", 1)], got


def test_html_path_and_directories_are_usage_errors(cli: Any, tmp_path: Path) -> None:
    """--html into a missing directory or onto a directory was an internal error after the whole scan;
    a directory given as the log was 'no such file'."""
    log = tmp_path / "access.log"
    log.write_text('192.0.2.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"\n')
    pg = tmp_path / "pg.log"
    pg.write_text("2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 1.000 ms  statement: SELECT 1\n")
    app = tmp_path / "app.log"
    app.write_text("2024-03-01 10:00:00,000 ERROR shop: x\n")
    # a long name: the message is one line whatever its length (Rich broke it at the console's width — the
    # suite's COLUMNS, 200 — inside the path or between "does not" and "exist", depending on how long the
    # test's temporary directory was)
    missing = tmp_path / ("nonexistdir-" + "x" * 90)
    for cmd, f in (("nginx", log), ("postgres", pg), ("errors", app)):
        r = cli(["logs", cmd, str(f), "--html", str(missing / "x.html")])
        assert r.code == 2 and "internal error" not in r.err, r.output
        assert f"the directory {missing} does not exist" in r.err.splitlines()[0]
        r = cli(["logs", cmd, str(f), "--html", str(tmp_path)])
        assert r.code == 2 and "internal error" not in r.err and "is a directory" in r.err, r.output
        # a file on the way: "the directory … does not exist, Try: mkdir -p" named a file, and mkdir -p fails there
        for under in (f / "x.html", f / "sub" / "x.html"):
            r = cli(["logs", cmd, str(f), "--html", str(under)])
            assert r.code == 2, r.output
            assert f"{f} is a file, not a directory" in r.err.splitlines()[0] and "mkdir" not in r.err, r.err
        r = cli(["logs", cmd, str(tmp_path)])
        assert r.code == 2 and "is a directory" in r.err and "no such file" not in r.err, r.output


def test_a_report_path_is_printed_on_one_line_to_copy(cli: Any, tmp_path: Path) -> None:
    """Rich broke printed lines at the console's width (80 columns when stdout is not a terminal), inside the
    report's path (and the demo's ``upkeeper --config …`` commands): copied, it named no file.  Plain lines are
    never broken now."""
    log = tmp_path / "access.log"
    log.write_text('192.0.2.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"\n')
    out = tmp_path / ("reports-" + "y" * 200)  # longer than the suite's COLUMNS (200)
    out.mkdir()
    html = out / "access.html"
    r = cli(["logs", "nginx", str(log), "--html", str(html)])
    assert r.code == 0, r.output
    assert f"report: {html}" in r.out.splitlines() and html.is_file()


def test_a_replaced_report_keeps_its_owner_and_group(cli: Any, tmp_path: Path) -> None:
    """--html replaced an existing report with a new file of the writer's (root:root): a report the web server's
    user owns, published from cron, changed hands (and a group-readable one its group) with each run."""
    log = tmp_path / "access.log"
    log.write_text('192.0.2.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"\n')
    html = tmp_path / "report.html"
    html.write_text("old")
    html.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(html, 65534, 65534)
    before = html.stat()
    assert cli(["logs", "nginx", str(log), "--html", str(html)]).code == 0
    after = html.stat()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (before.st_uid, before.st_gid, 0o640)
    assert html.read_text().startswith("<!doctype html>")


def test_nginx_reads_globs_and_rotated_files_as_the_task_does(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """``upkeeper logs nginx`` took each argument as one file: a quoted glob was 'no such file', and a log's
    rotated files (read by the logs.nginx task) were left out.  Now every form reads what the task reads."""
    line = '192.0.2.{i} - - [01/Mar/2024:10:00:00 +0000] "GET /{name} HTTP/1.1" 200 5 "-" "curl/8"\n'
    for site in ("shop", "blog"):
        (tmp_path / f"{site}.access.log").write_text(line.format(i=1, name=site) * 3)
        (tmp_path / f"{site}.access.log.1").write_text(line.format(i=2, name=site) * 2)
        (tmp_path / f"{site}.access.log.2.gz").write_bytes(gzip.compress(line.format(i=3, name=site).encode()))
    (tmp_path / "error.log").write_text("not an access log\n")
    pattern = str(tmp_path / "*.access.log")
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": pattern}},
                       "jobs": {"access": {"task": "logs.nginx", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r"), "incremental": False}}}})
    task = cli(["--config", str(cfg), "run", "access", "--json"])
    assert task.code in (0, 1) and task.json()[0]["metrics"]["requests"] == 12, task.output

    def requests(*args: str) -> int:
        r = cli(["logs", "nginx", *args, "--json"])
        assert r.code == 0, r.output
        n: int = r.json()["requests"]
        return n

    everything = sorted(str(p) for p in tmp_path.glob("*.access.log*"))
    assert requests(pattern) == 12  # quoted: upkeeper expands it
    assert requests(str(tmp_path / "*.access.log*")) == 12  # a rotated match stands for its live log
    assert requests(*everything) == 12  # what a shell makes of *.access.log*: each file once
    assert requests(*sorted(str(p) for p in tmp_path.glob("*.access.log"))) == 12  # and of *.access.log
    assert requests(str(tmp_path / "shop.access.log")) == 6
    assert requests(str(tmp_path / "shop.access.log"), "--no-rotated") == 3
    assert requests(str(tmp_path / "shop.access.log.1")) == 2  # a rotated file named alone: that file
    r = cli(["logs", "nginx", str(tmp_path / "*.acess.log")])
    assert r.code == 2 and "no file matches" in r.err, r.output


def test_a_log_under_two_names_is_read_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A symbolic or hard link beside a log (a compatibility name, what a glob or a shell's *.log also matches)
    was read as a second log: every request counted twice, by 'upkeeper logs' and by the logs.nginx task."""
    (tmp_path / "access.log").write_text('192.0.2.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "c"\n' * 3)
    (tmp_path / "current.log").symlink_to("access.log")
    os.link(tmp_path / "access.log", tmp_path / "hard.log")
    r = cli(["logs", "nginx", *(str(tmp_path / n) for n in ("access.log", "current.log", "hard.log")), "--json"])
    assert r.code == 0 and r.json()["requests"] == 3, r.output
    assert [f["path"] for f in r.json()["files"]] == [str(tmp_path / "access.log")]
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(tmp_path / "*.log")}},
                       "jobs": {"access": {"task": "logs.nginx", "target": "web",
                                           "options": {"report_dir": str(tmp_path / "r")}}}})
    task = cli(["--config", str(cfg), "run", "access", "--json"])
    assert task.code == 0 and task.json()[0]["metrics"]["requests"] == 3, task.output


def test_a_wrong_format_or_prefix_is_said_with_a_sample_and_how_to_fix_it(cli: Any, tmp_path: Path) -> None:
    """A log read with the wrong --format or --prefix came out as an empty report ('0 requests', 'unparsed 19
    lines') with exit 0 and no word on why.  Over 1 % unparsed (the tasks' threshold), stderr says so, shows
    the first line (masked) and names the option to fix; the JSON on stdout stays as it was."""
    log = tmp_path / "access.log"
    write_access_log(str(log), 20_000, seed=3)
    with log.open("a") as fh:
        fh.write('1.2.3.4 - - [04/Mar/2024:09:00:00 +0000] "GET /reset?token=Sup3rSecretT0ken HTTP/1.1" 200 5 "-" "x"\n')
    wrong = '$remote_addr [$time_local] "$request" $status'
    r = cli(["logs", "nginx", str(log), "--format", wrong, "--json"])
    assert r.code == 0 and r.json()["requests"] == 0, r.output
    err = " ".join(r.err.split())
    assert f"Warning: 100.00 % of lines ({r.json()['invalid']:,}) could not be parsed with the log_format " \
        f"'{wrong}'" in err and "the first: " in err, err
    assert "Try: --format with your nginx.conf 'log_format'" in err, err
    r = cli(["logs", "nginx", str(log), "--format", "combined_timed"])
    assert r.code == 0 and "Warning" not in r.err, r.output
    log.write_text('1.2.3.4 - - [04/Mar/2024:09:00:00 +0000] "GET /reset?token=Sup3rSecretT0ken HTTP/1.1" 200 5\n')
    r = cli(["logs", "nginx", str(log), "--format", wrong + " $foo"])
    assert "token=***" in r.err and "Sup3rSecretT0ken" not in r.output, r.output

    pg = tmp_path / "pg.log"
    pg.write_text("2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 250.000 ms  statement: SELECT 1\n" * 19)
    r = cli(["logs", "postgres", str(pg), "--prefix", "%t [%p]: "])
    err = " ".join(r.err.split())
    assert r.code == 0 and "Warning: 100.00 % of lines (19) do not start with the log_line_prefix '%t [%p]: '" \
        in err and "Try: --prefix with the server's log_line_prefix (SHOW log_line_prefix)" in err, r.output
    assert "Warning" not in cli(["logs", "postgres", str(pg)]).err
    # an unknown escape is named in the prefix as written, and is wrong through syslog too: no hint to try it
    # (it was "log_line_prefix '%t [%p] %Z '", the syslog line's time and pid put before it, with that hint)
    r = cli(["logs", "postgres", str(pg), "--prefix", "%Z "])
    err = " ".join(r.err.split())
    assert r.code == 2 and "log_line_prefix '%Z ': unknown escape %Z" in err and "syslog" not in err, r.output


def test_postgres_and_errors_find_their_files_as_nginx_does(cli: Any, tmp_path: Path) -> None:
    """`logs postgres` and `logs errors` took literal files only: a quoted glob was 'no such file' (exit 2) and
    a log's rotated files were left out, where `logs nginx` (and the tasks) read both."""
    import gzip

    d = tmp_path / "pg"
    d.mkdir()
    (d / "postgresql.log").write_text("2024-03-01 10:00:00.000 UTC [12] LOG:  duration: 5.000 ms  statement: select 1\n")
    (d / "postgresql.log.1.gz").write_bytes(gzip.compress(
        b"2024-02-29 10:00:00.000 UTC [12] LOG:  duration: 7.000 ms  statement: select 2\n"))
    r = cli(["logs", "postgres", str(d / "postgresql.log"), "--json"])
    assert r.code == 0 and r.json()["statements"]["count"] == 2, r.output
    assert [f["path"] for f in r.json()["files"]] == [str(d / "postgresql.log.1.gz"), str(d / "postgresql.log")]
    r = cli(["logs", "postgres", str(d / "postgresql.log"), "--no-rotated", "--json"])
    assert r.json()["statements"]["count"] == 1
    r = cli(["logs", "postgres", str(d / "postgresql*.log"), "--json"])  # as logs.postgres reads a glob
    assert r.code == 0 and r.json()["statements"]["count"] == 1, r.output

    a = tmp_path / "app"
    a.mkdir()
    trace = 'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n{}\n'
    (a / "shop.log").write_text(trace.format("ValueError: bad"))
    (a / "shop.log.1").write_text(trace.format("KeyError: 'x'"))
    (a / "other.log").write_text(trace.format("TypeError: no"))
    r = cli(["logs", "errors", str(a / "*.log"), "--json"])
    assert r.code == 0, r.output
    assert sorted(g["type"] for g in r.json()["app"]["exceptions"]) == ["KeyError", "TypeError", "ValueError"]
    assert len(r.json()["files"]) == 3
    r = cli(["logs", "errors", str(a / "shop.log"), "--no-rotated", "--json"])
    assert [g["type"] for g in r.json()["app"]["exceptions"]] == ["ValueError"]
    r = cli(["logs", "errors", str(a / "*.nope")])
    assert r.code == 2 and "no file matches" in r.err


def test_postgres_csvlog_and_jsonlog(cli: Any, tmp_path: Path) -> None:
    """--format auto tells csvlog and jsonlog from the file names; files of two formats are refused."""
    csv_ = tmp_path / "pg.csv"
    csv_.write_text('2024-03-01 10:00:00.001 UTC,"app","shop",10,,65e1.a,1,"SELECT",2024-03-01 09:00:00 UTC,3/1,0,'
                    'ERROR,42P01,"relation ""x"" does not exist",,,,,,"SELECT * FROM x",15,,"",'
                    '"client backend",,0\n')
    js = tmp_path / "pg.json"
    js.write_text('{"timestamp":"2024-03-01 10:00:00.001 UTC","pid":10,"error_severity":"LOG",'
                  '"message":"duration: 250.000 ms  statement: SELECT 1"}\n')
    r = cli(["logs", "postgres", str(csv_), "--json"])
    assert r.code == 0, r.output
    assert (r.json()["format"], r.json()["errors"]["by_sqlstate"]) == ("csvlog", {"42P01": 1})
    r = cli(["logs", "postgres", str(js), "--json"])
    assert r.code == 0 and (r.json()["format"], r.json()["statements"]["count"]) == ("jsonlog", 1)
    r = cli(["logs", "postgres", str(csv_), str(js)])
    assert r.code == 2 and "several formats: csvlog, jsonlog" in r.err
    r = cli(["logs", "postgres", str(js), "--format", "csvlog"])  # the wrong format: said, with a hint
    assert r.code == 0 and "are not csvlog records" in r.err and "--format" in r.err


def test_html_of_logs_commands_claims_no_checks_it_did_not_run(cli: Any, tmp_path: Path) -> None:
    """``upkeeper logs nginx|postgres --html`` runs none of the job's checks (docs/logs.md: "which has no
    findings"), yet its report said "No findings: every check passed" — over a log whose failed rate is ten times
    the objective — and promised trends "after a few runs", which it never has."""
    log = tmp_path / "access.log"
    log.write_text("".join(f'192.0.2.{i} - - [01/Mar/2024:10:00:{i:02d} +0000] "GET /x HTTP/1.1" '
                           f'{500 if i % 2 else 200} 5 "-" "curl/8"\n' for i in range(40)))
    pg = tmp_path / "pg.log"
    pg.write_text("2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 2500.000 ms  statement: SELECT pg_sleep(2.5)\n")
    for cmd, f in (("nginx", log), ("postgres", pg)):
        html = tmp_path / f"{cmd}.html"
        r = cli(["logs", cmd, str(f), "--html", str(html)])
        assert r.code == 0, r.output
        page = html.read_text()
        assert "every check passed" not in page and "Trends" not in page, cmd
        assert "only reads the files" in page and "upkeeper run" in page, cmd
    # logs errors runs the nginx error-log checks, but none on application logs alone
    app = tmp_path / "app.log"
    app.write_text("2024-03-01 10:00:00 ERROR boom\nTraceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
                   "ValueError: bad\n")
    html = tmp_path / "errors.html"
    assert cli(["logs", "errors", str(app), "--html", str(html)]).code == 0
    assert "every check passed" not in html.read_text() and "only reads the files" in html.read_text()


def test_postgres_pairs_a_statement_and_its_duration_across_a_rotated_file(cli: Any, tmp_path: Path) -> None:
    """log_statement + log_duration: the statement at the end of the rotated file, its bare duration at the
    start of the live one — read in log order (oldest first), they are one timed statement."""
    (tmp_path / "postgresql.log.1").write_text(
        "2024-03-01 10:00:00.000 UTC [7] LOG:  statement: SELECT pg_sleep(5)\n")
    (tmp_path / "postgresql.log").write_text(
        "2024-03-01 10:00:05.000 UTC [7] LOG:  duration: 5000.500 ms\n")
    r = cli(["logs", "postgres", str(tmp_path / "postgresql.log"), "--json"])
    assert r.code == 0, r.output
    st = r.json()["statements"]
    assert (st["count"], st["total_ms"]) == (1, 5000.5)
