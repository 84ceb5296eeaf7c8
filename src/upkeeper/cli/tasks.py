"""``upkeeper tasks``: the task types this version knows."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from upkeeper.cli._app import app, console, print_json
from upkeeper.core.task import REGISTRY


@app.command("tasks")
def tasks_cmd(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List the available tasks with their targets and one-line summaries."""
    rows: list[dict[str, Any]] = [
        {
            "name": cls.name,
            "summary": cls.summary,
            "category": cls.category,
            "target_kinds": list(cls.target_kinds),
            "exclusive": cls.exclusive,
            "options": sorted(cls.Options.model_fields),
        }
        for cls in REGISTRY
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(title="Tasks", title_justify="left")
    table.add_column("task", style="bold", overflow="fold")
    table.add_column("category", overflow="fold")
    table.add_column("targets", overflow="fold")
    table.add_column("summary", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["category"], ", ".join(r["target_kinds"]) or "-", r["summary"])
    console.print(table)
    console.print("Options of each task: docs/tasks.md, or 'upkeeper config schema'.", style="dim")
