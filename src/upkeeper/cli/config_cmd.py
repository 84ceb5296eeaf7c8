"""``upkeeper config check|schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from upkeeper.cli._app import app, console, print_json, state
from upkeeper.core.schema import config_schema
from upkeeper.errors import ConfigError, ConfigProblem

config_app = typer.Typer(help="Check the configuration, or print its JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def check(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Validate the config file: keys, types, tasks, targets, task options, cron expressions, timezones.

    Exits 2 and names file, line and field for every problem.
    """
    try:
        setup = state.setup()
    except ConfigError as exc:
        if as_json:
            print_json(
                {
                    "ok": False,
                    "problems": [
                        {"file": p.file, "line": p.line, "path": list(p.path), "message": p.message, "hint": p.hint}
                        for p in (exc.problems or [])
                    ]
                    or [{"file": None, "line": None, "path": [], "message": exc.message, "hint": exc.hint}],
                }
            )
            raise typer.Exit(2) from None
        raise
    info = {
        "ok": True,
        "file": str(setup.source) if setup.source else None,
        "jobs": len(setup.jobs),
        "targets": len(setup.config.targets),
        "scheduled": sum(1 for j in setup.jobs.values() if j.schedule and j.enabled),
    }
    found = list(setup.notes)
    from upkeeper.config.loader import lines_for

    lines = lines_for(setup.config)
    for name, st in setup.config.storages.items():
        # valid (a volume mounted later), but every backup to it fails until it exists: said here, not at 03:00
        if st.kind == "local" and Path(st.path).is_absolute() and not Path(st.path).is_dir():
            found.append(lines.problem(("storages", name, "path"), f"{st.path} does not exist: backups to "
                                       "this storage fail until it does (upkeeper never creates it)",
                                       f"Try: mount its volume, or create it once: mkdir -p -m 700 {st.path}"))
    found += _history_exposure(setup.config.history, setup.source, lines)
    if not setup.jobs:  # an empty file, or the wrong one: valid, but nothing would ever run

        found.append(ConfigProblem("none defined: nothing runs with this config", ("jobs",),
                                   str(setup.source) if setup.source else None, None,
                                   "Try: 'upkeeper init' writes the standard schedule; or add jobs (docs/"
                                   "config-reference.md)"))
    notes = [{"file": p.file, "line": p.line, "path": list(p.path), "message": p.message, "hint": p.hint}
             for p in found]
    if as_json:
        print_json({**info, "notes": notes})
        return
    console.print(
        f"[ok]OK[/ok] {info['file']}: {info['jobs']} job(s) ({info['scheduled']} scheduled), "
        f"{info['targets']} target(s)"
    )
    for n in found:
        where = f"{n.file}:{n.line}: " if n.file and n.line else ""
        text = escape(f"{where}{' -> '.join(map(str, n.path))}: {n.message}")
        console.print(f"[warn]note[/warn] {text}", highlight=False)
        if n.hint:
            console.print(f"  {n.hint}", markup=False, highlight=False)


def _history_exposure(setting: str | None, source: Path | None, lines: Any) -> list[ConfigProblem]:
    """A note when the SQLite history (or its -wal/-shm) is readable by every user: one made before upkeeper
    made them 0600 (0644 under the usual umask) holds every run's findings, log excerpts, host and table names."""
    import os
    import stat

    from upkeeper.core.history import history_url

    url = history_url(setting, source.parent if source else None)
    if not url.startswith("sqlite:///"):
        return []
    db = url.removeprefix("sqlite:///")
    exposed = []
    for p in (db, f"{db}-wal", f"{db}-shm"):
        try:
            mode = stat.S_IMODE(os.stat(p).st_mode)
        except OSError:
            continue
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            exposed.append(f"{p} ({mode:04o})")
    if not exposed:
        return []
    where: tuple[str | int, ...] = ("history",)
    message = (f"{'' if setting else '(default) '}readable by every user: {', '.join(exposed)} -- it holds every run's findings, "
               "log excerpts, host and table names")
    hint = f"Try: chmod 600 {db}*  (upkeeper makes a new history 0600; 0640 lets a group read it)"
    if setting:
        problem: ConfigProblem = lines.problem(where, message, hint)
        return [problem]
    return [ConfigProblem(message, where, str(source) if source else None, None, hint)]


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of upkeeper.yaml (point your editor's YAML plug-in at it)."""
    sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
