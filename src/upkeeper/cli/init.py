"""``upkeeper init``: write a commented upkeeper.yaml for this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from upkeeper.cli._app import app, console
from upkeeper.core.initgen import detect, make_backup_dir, render
from upkeeper.errors import UsageError


@app.command("init")
def init_cmd(
    output: Path = typer.Option(Path("upkeeper.yaml"), "--output", "-o", help="where to write the config"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
    timezone: str = typer.Option("UTC", "--timezone", help="default timezone of the schedules"),
) -> None:
    """Detect local PostgreSQL, Redis and nginx and write the standard maintenance schedule.

    What cannot be found is written commented out, ready to fill in.
    """
    if output.exists() and not force:
        raise UsageError(f"{output} already exists", "Try: --force to overwrite it, or --output OTHER.yaml")
    from upkeeper.core.schedule import ScheduleError, validate_timezone

    try:
        validate_timezone(timezone)
    except ScheduleError as exc:
        raise UsageError(exc.args[0], exc.hint) from None
    detected = detect()
    text = render(detected, timezone=timezone)
    output.write_text(text)
    console.print(f"wrote [bold]{output}[/bold]")
    notes = [*detected.notes, make_backup_dir(text)]
    for note in notes:
        if note:
            console.print(f"  {note}")
    console.print(f"Next: 'upkeeper --config {output} config check', then 'upkeeper --config {output} jobs'.")
