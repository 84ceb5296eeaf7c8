"""The Typer app, global options and helpers shared by the command modules.

Command modules stay thin: parse arguments, call core, render.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.theme import Theme

from upkeeper import __version__
from upkeeper.core.history import History, history_url
from upkeeper.core.jobs import Setup, load_setup
from upkeeper.redact import redact_obj

THEME = Theme(
    {
        "ok": "green",
        "warn": "yellow",
        "fail": "bold red",
        "error": "bold red",
        "skipped": "dim",
        "interrupted": "magenta",
        "running": "cyan",
        "queued": "cyan",
        "pending": "blue",
        "critical": "bold red",
        "warning": "yellow",
        "info": "dim",
    }
)

console = Console(theme=THEME, highlight=False)
err_console = Console(theme=THEME, stderr=True, highlight=False)

app = typer.Typer(
    name="upkeeper",
    help="Maintenance of a web stack (PostgreSQL, Redis, nginx, an app) from one declarative file, "
    "with every run recorded.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    config: Path | None = None
    debug: bool = False
    _setup: Setup | None = None
    _history: History | None = None

    def setup(self) -> Setup:
        if self._setup is None:
            self._setup = load_setup(self.config)
        return self._setup

    def history(self) -> History:
        if self._history is None:
            setup = self.setup()
            base = setup.source.parent if setup.source else None
            self._history = History(history_url(setup.config.history, base))
        return self._history

    def history_url(self) -> str:
        setup = self.setup()
        base = setup.source.parent if setup.source else None
        return history_url(setup.config.history, base)


state = State()


def _version(value: bool) -> None:
    if value:
        console.print(f"upkeeper {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="config file (default: $UPKEEPER_CONFIG, ./upkeeper.yaml, /etc/upkeeper/)",
        envvar="UPKEEPER_CONFIG", show_envvar=True,
    ),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks for unexpected errors"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    state.config = config
    state.debug = debug
    state._setup = None
    state._history = None


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, secrets redacted."""
    sys.stdout.write(json.dumps(redact_obj(data), indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def status_text(status: str) -> str:
    return f"[{status}]{status}[/{status}]" if status in THEME.styles else status


def severity_text(sev: str) -> str:
    return f"[{sev}]{sev}[/{sev}]"


def reflow_help(typer_app: typer.Typer | None = None) -> None:
    """Join the lines of each paragraph of every command's help (its docstring), as ``--help`` shows it.

    Typer's rich mode keeps a docstring's line breaks, so ``--help`` showed lines cut where the source is
    (mid-sentence, at the source's width) inside the lines Rich wraps.  Paragraphs (blank lines) stay."""
    import inspect

    def flow(text: str | None) -> str | None:
        if not text:
            return text
        return "\n\n".join(" ".join(line.strip() for line in p.splitlines() if line.strip())
                           for p in inspect.cleandoc(text).split("\n\n"))

    t = app if typer_app is None else typer_app
    for c in t.registered_commands:
        c.help = flow(c.help if c.help is not None else inspect.getdoc(c.callback))
    for g in t.registered_groups:
        sub = g.typer_instance
        if sub is None:
            continue
        info = sub.info
        if isinstance(info.help, str):
            info.help = flow(info.help)
        elif info.callback is not None:
            info.help = flow(inspect.getdoc(info.callback))
        reflow_help(sub)
