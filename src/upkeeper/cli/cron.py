"""``upkeeper cron export [--systemd]``: for people who keep cron or systemd timers."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import typer

from upkeeper.cli._app import app, check_output_file, console, err_console, state, write_output_file
from upkeeper.core.cronexport import crontab, systemd_units
from upkeeper.errors import UsageError

cron_app = typer.Typer(help="Export jobs to crontab or systemd timers.", no_args_is_help=True)
app.add_typer(cron_app, name="cron")


def upkeeper_command() -> list[str]:
    """How cron/systemd should invoke this upkeeper (absolute paths; no PATH assumptions)."""
    beside = Path(sys.executable).with_name("upkeeper")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("upkeeper")
    return [found] if found else [sys.executable, "-m", "upkeeper"]


@cron_app.command("export")
def export(
    systemd: bool = typer.Option(False, "--systemd", help="write systemd .timer/.service units instead"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file for the crontab lines, or with --systemd "
                                       "the directory for the units, made if missing (its parent must exist; default: print)"),
) -> None:
    """Print crontab lines (or systemd units) that call 'upkeeper run' for every scheduled job."""
    if output is not None and not systemd:
        check_output_file(output)
    elif output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is not a directory: --systemd writes a directory of units",
                         "Try: --output a directory (e.g. units/), or leave out --systemd to write crontab lines")
    elif output is not None and not output.exists() and not output.absolute().parent.is_dir():
        # only the directory itself is made: a typo (/nonexist/units) must not create directories anywhere
        parent = output.absolute().parent
        raise UsageError(f"--output {output}: the directory {parent} does not exist",
                         f"Try: create it (mkdir -p {shlex.quote(str(parent))}) or write the units elsewhere")
    setup = state.setup()
    cmd = upkeeper_command()
    if setup.source is not None:
        cmd += ["--config", str(setup.source.resolve())]
    if not systemd:
        text = crontab(setup, cmd)
        if output:
            write_output_file(output, text.encode())
            console.print(f"wrote {output}")
        else:
            sys.stdout.write(text)
        return
    notes: list[str] = []
    units = systemd_units(setup, cmd, notes)
    for note in notes:
        err_console.print(note, markup=False)
    if output:
        try:
            output.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {output}: cannot make the directory ({exc.strerror or exc})",
                             "Try: --output a directory you can write to") from None
        for name, body in units.items():
            write_output_file(output / name, body.encode())
        timers = " ".join(n for n in units if n.endswith(".timer"))
        console.print(f"wrote {len(units)} unit(s) to {output}. Enable with:\n"
                      f"  cp {output}/upkeeper-* /etc/systemd/system/ && systemctl daemon-reload && "
                      f"systemctl enable --now {timers}")
        return
    for name, body in units.items():
        sys.stdout.write(f"# --- {name} ---\n{body}\n")
