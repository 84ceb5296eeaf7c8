"""README's examples run: the quickstart block is executed literally against a real PostgreSQL."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from conftest import invoke
from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.sandbox.postgres import PostgresCluster

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str, lang: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no {lang} block after {heading!r}"
    return m.group(1)


def test_quickstart_runs_as_written(pg: PostgresCluster, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    ran = 0
    for line in _block_after("## Five-minute quickstart", "sh").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        argv = shlex.split(line)
        if argv[0] == "export":
            env.update(dict(a.split("=", 1) for a in argv[1:]))
            env["PGPORT"] = str(pg.port)  # our throwaway cluster instead of 5432
            continue
        assert argv[0] == "upkeeper", line
        res = invoke(argv[1:], env=env)
        assert res.code == 0, f"{line}\n{res.output}"
        ran += 1
    assert ran >= 6
    history = (tmp_path / "upkeeper.yaml").read_text()
    assert "vacuum" in history


def test_config_example_is_valid(tmp_path: Path) -> None:
    text = _block_after("## A config file", "yaml")
    text = text.replace("/var/lib/upkeeper/history.db", str(tmp_path / "h.db"))
    pw = tmp_path / "pg.pass"
    pw.write_text("secret-password")
    text = text.replace("/etc/upkeeper/pg.pass", str(pw))
    setup = build_setup(load_text(text))
    assert set(setup.jobs) == {"vacuum", "disk"}


def test_error_example_is_what_config_check_prints(tmp_path: Path, monkeypatch: Any) -> None:
    """The README shows the error for 'lock_timout' in its own config example: file, line, field and hint as
    'config check' prints them (it said line 17, and listed the vacuum options of an older version)."""
    monkeypatch.chdir(tmp_path)
    text = _block_after("## A config file", "yaml")
    (tmp_path / "pg.pass").write_text("secret-password")
    text = (text.replace("/var/lib/upkeeper/history.db", str(tmp_path / "h.db"))
            .replace("/etc/upkeeper/pg.pass", str(tmp_path / "pg.pass")).replace("lock_timeout:", "lock_timout:"))
    (tmp_path / "upkeeper.yaml").write_text(text)
    shown = README.read_text().split("Mistakes get one clear message each", 1)[1]
    example = re.search(r"```\n\$ (upkeeper .*?)\n(.*?)```", shown, re.S)
    assert example, "no error example after 'Mistakes get one clear message each'"
    res = invoke(shlex.split(example.group(1))[1:])
    assert res.code == 2
    assert " ".join(res.err.split()) == " ".join(example.group(2).split())


def test_commands_table_names_every_backups_and_logs_subcommand() -> None:
    """The commands table's 'upkeeper backups a|b|…' and 'upkeeper logs …' rows name every subcommand (copy and
    rekey, and logs goaccess-format, were missing)."""
    import typer.main

    import upkeeper.cli.main  # noqa: F401  (registers every command)
    from upkeeper.cli.backups import backups_app
    from upkeeper.cli.logs import logs_app

    text = README.read_text()
    for name, typer_app in (("backups", backups_app), ("logs", logs_app)):
        row = next(line for line in text.splitlines() if line.startswith(f"| `upkeeper {name} "))
        cell = row.split(" | ", 1)[0]
        named = set(re.findall(rf"`upkeeper {name} ([a-z|\\-]+)", cell)[0].replace("\\", "").split("|"))
        named |= set(re.findall(rf"/ `{name} ([a-z-]+)", cell))
        assert named == set(typer.main.get_group(typer_app).commands), row
