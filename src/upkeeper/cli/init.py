"""``upkeeper init``: write a commented upkeeper.yaml for this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from upkeeper.cli._app import app, check_output_file, console, write_output_file
from upkeeper.core.initgen import BACKUP_DIR, detect, make_backup_dir, render
from upkeeper.errors import UsageError


@app.command("init")
def init_cmd(
    output: Path = typer.Option(Path("upkeeper.yaml"), "--output", "-o", help="where to write the config"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
    timezone: str = typer.Option("UTC", "--timezone", help="default timezone of the schedules"),
    backup_dir: Path | None = typer.Option(None, "--backup-dir", show_default=BACKUP_DIR,
                                           help="directory of the local backup storage the config names; init "
                                           "creates it, mode 0700"),
) -> None:
    """Detect local PostgreSQL, Redis and nginx and write the standard maintenance schedule.

    What cannot be found is written commented out, ready to fill in.  The local backup storage's directory
    (--backup-dir) is created if missing: upkeeper itself never creates one.
    """
    check_output_file(output)
    if output.exists() and not force:
        raise UsageError(f"{output} already exists", "Try: --force to overwrite it, or --output OTHER.yaml")
    from upkeeper.core.schedule import ScheduleError, validate_timezone

    try:
        validate_timezone(timezone)
    except ScheduleError as exc:
        raise UsageError(exc.args[0], exc.hint) from None
    detected = detect()
    where = str(backup_dir.expanduser().absolute()) if backup_dir is not None else None
    text = render(detected, timezone=timezone, backup_dir=where)
    # whole or not at all: a failed write leaves neither half a config nor a truncated one it was to replace
    # (whose permissions the new one keeps: 0600 chosen for a file of secrets stays 0600)
    write_output_file(output, text.encode())
    console.print(f"wrote [bold]{output}[/bold]")
    notes = [*detected.notes, make_backup_dir(text, where)]
    for note in notes:
        if note:
            console.print(f"  {note}")
    console.print(f"Next: 'upkeeper --config {output} config check', then 'upkeeper --config {output} jobs'.")
