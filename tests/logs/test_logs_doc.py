"""docs/logs.md: the jobs example is a valid config, and every command of "Try it" runs as written (with /tmp
and /var/log moved into the test's directory)."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup

DOC = Path(__file__).resolve().parents[2] / "docs" / "logs.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
ERROR_LINE = ('2024/03/01 10:00:00 [error] 1234#1234: *5 open() "/srv/www/favicon.ico" failed (2: No such file or '
              'directory), client: 10.0.0.1, server: example.com, request: "GET /favicon.ico HTTP/1.1"\n')


def test_jobs_example_is_a_valid_config() -> None:
    (block,) = [b for k, b in BLOCK.findall(DOC.read_text().split("## Jobs", 1)[1].split("\n## ", 1)[0])
                if k == "yaml"]
    setup = build_setup(load_text(block, file=str(DOC)))
    assert {"log-analysis", "error-log", "app-errors", "db-log-analysis"} == set(setup.jobs)


def test_try_it_commands_run_as_written(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = DOC.read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for k, b in BLOCK.findall(section) if k == "sh"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "error.log.2.gz").write_bytes(gzip.compress(ERROR_LINE.encode()))
    (tmp_path / "app.log").write_text("2024-03-01 10:00:00 ERROR request failed\nTraceback (most recent call "
                                      "last):\n  File \"a.py\", line 1, in f\nKeyError: 'id'\n")
    ran = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        line = line.replace("/tmp/", f"{tmp_path}/").replace("/var/log/nginx/", f"{tmp_path}/")
        command, _, pipe = line.partition(" | ")
        argv = shlex.split(command)
        if argv[0] == "python":
            subprocess.run([sys.executable, *argv[1:]], check=True)
            ran.append("python")
            continue
        assert argv[0] == "upkeeper", line
        res = cli(argv[1:])
        assert res.code == 0, f"{line}\n{res.output}"
        if "--json" in argv:
            assert pipe.startswith("python -m json.tool") or not pipe, line
            data = json.loads(res.out)
            if argv[2] == "errors":  # the .gz nginx log and the text application log were both read
                assert data["nginx"]["lines"] == 1 and data["app"]["exceptions"][0]["type"] == "KeyError", data
            else:
                assert data["requests"] > 50_000 and data["invalid"] == 0, line
        ran.append(argv[2])
    assert ran == ["python", "nginx", "nginx", "goaccess-format", "errors", "errors"], ran
    assert "<svg" in (tmp_path / "access.html").read_text()
    assert 'aria-label="exceptions by type"' in (tmp_path / "errors.html").read_text()


def test_csvlog_example_runs_as_written(cli: Any, tmp_path: Path) -> None:
    """The csvlog section's shell block: the here-document is the file, each upkeeper line runs and reads it."""
    section = DOC.read_text().split("### csvlog and jsonlog", 1)[1].split("\n## ", 1)[0]
    (yaml_block,) = [b for k, b in BLOCK.findall(section) if k == "yaml"]
    config = ("targets:\n  db: {kind: postgres, host: 127.0.0.1}\n" + yaml_block)
    assert build_setup(load_text(config, file=str(DOC))).jobs["db-log-analysis"].options.format == "csvlog"
    (block,) = [b for k, b in BLOCK.findall(section) if k == "sh"]
    head, body = block.split("\n", 1)
    assert head == "cat > /tmp/postgresql.csv <<'EOF'", head
    data, rest = body.split("\nEOF\n", 1)
    log = tmp_path / "postgresql.csv"
    log.write_text(data + "\n")
    ran = 0
    for line in rest.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line:
            continue
        command, _, _pipe = line.partition(" | ")
        argv = [a.replace("/tmp/", f"{tmp_path}/") for a in shlex.split(command)]
        assert argv[0] == "upkeeper", line
        res = cli(argv[1:])
        assert res.code == 0, f"{line}\n{res.output}"
        if "--json" in argv:
            rep = json.loads(res.out)
            assert rep["format"] == "csvlog" and rep["lines"] == 2 and rep["unparsed"] == 0
            assert [(q["fingerprint"], q["max_ms"]) for q in rep["slowest_total"]] == [
                ("select * from orders where id = ?", 12.5)]
            (err,) = rep["errors"]["classes"]
            assert (err["sqlstate"], err["message"], err["statements"]) == (
                "42P01", 'relation "?" does not exist at character ?', ["SELECT * FROM ordres"])
        ran += 1
    assert ran == 2


def test_cdn_example_options_are_valid() -> None:
    """The CDN example (client_ip: header:CF-Connecting-IP) is a valid logs.nginx job whose format logs the header."""
    from ruamel.yaml import YAML

    from upkeeper.logs.nginx_format import client_header, has_variable
    from upkeeper.tasks.logs.nginx import NginxLogsOptions

    section = DOC.read_text().split("**Behind a CDN", 1)[1].split("\n**", 1)[0]
    (block,) = [b for k, b in BLOCK.findall(section) if k == "yaml"]
    opts = NginxLogsOptions(**YAML(typ="safe").load(block)["jobs"]["log-analysis"]["options"])
    assert opts.client_ip == "header:CF-Connecting-IP" and len(opts.trusted_proxies) == 3
    assert has_variable(opts.log_format, str(client_header(opts.client_ip)))


def test_every_finding_is_documented() -> None:
    """docs/logs.md names every check id the logs tasks report, an f-string's placeholder as '<…>'
    (logs.errors.exceptions_baseline and the check_failed findings were nowhere)."""
    src = Path(__file__).resolve().parents[2] / "src" / "upkeeper" / "tasks" / "logs"
    ids: set[str] = set()
    for path in src.glob("*.py"):
        for found in re.findall(r'Finding\(\s*f?"(logs\.[^"]+)"', path.read_text()):
            ids.update(found.replace("{task}", t) for t in ("nginx", "errors", "postgres")) if "{task}" in found \
                else ids.add(found)
    assert {"logs.nginx.unparsed", "logs.errors.lost_lines", "logs.postgres.error.{e['sqlstate']}"} <= ids
    text = DOC.read_text()
    missing = sorted(i for i in ids if not re.search("`" + re.sub(r"\\\{[^}]*\\\}", "<[A-Za-z]+>", re.escape(i)) + "`",
                                                   text))
    assert not missing


def test_syslog_example_loads() -> None:
    """The syslog section's job: format syslog, the file rsyslog writes."""
    section = DOC.read_text().split("### syslog\n", 1)[1].split("\n### ", 1)[0]
    (yaml_block,) = [b for k, b in BLOCK.findall(section) if k == "yaml"]
    config = ("targets:\n  db: {kind: postgres, host: 127.0.0.1}\n" + yaml_block)
    options = build_setup(load_text(config, file=str(DOC))).jobs["db-log-analysis"].options
    assert (options.format, options.log_file, options.syslog_ident) == ("syslog", "/var/log/messages", None)
