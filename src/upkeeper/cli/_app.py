"""The Typer app, global options and helpers shared by the command modules.

Command modules stay thin: parse arguments, call core, render.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from upkeeper import __version__
from upkeeper.cli._styles import STYLES
from upkeeper.redact import redact_obj

if TYPE_CHECKING:
    from upkeeper.cli._console import SafeConsole
    from upkeeper.core.history import History
    from upkeeper.core.jobs import Setup

    #: stdout and stderr: made on first use (module ``__getattr__`` below)
    console: SafeConsole
    err_console: SafeConsole


def __getattr__(name: str) -> Any:
    """``console`` and ``err_console`` (and ``SafeConsole``, ``THEME``), made on first use: importing Rich's
    console costs ~17 ms, and ``upkeeper run --json`` (or ``-q``) prints nothing through it."""
    if name in ("console", "err_console"):
        from upkeeper.cli._console import make_console

        made = globals().setdefault(name, make_console(stderr=name == "err_console"))
        return made
    if name in ("SafeConsole", "THEME"):
        from upkeeper.cli import _console

        return getattr(_console, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

    # (the config's and history's modules are imported by the commands that use them: pydantic and SQLAlchemy
    # are ~0.25 s that 'upkeeper --version' need not pay)
    def setup(self) -> Setup:
        if self._setup is None:
            from upkeeper.core.jobs import load_setup

            self._setup = load_setup(self.config)
        return self._setup

    def history(self) -> History:
        if self._history is None:
            from upkeeper.core.history import History

            self._history = History(self.history_url())
        return self._history

    def close(self) -> None:
        """End the command's history: its engine's pooled connections closed now (a PostgreSQL history's sessions
        otherwise stayed open in the server, in a process running several commands — the tests, a program
        embedding the CLI — until the garbage collector found them, psycopg warning of each)."""
        history, self._history = self._history, None
        if history is not None:
            history.close()

    def history_url(self) -> str:
        from upkeeper.core.history import history_url

        setup = self.setup()
        base = setup.source.parent if setup.source else None
        return history_url(setup.config.history, base)


state = State()


def _version(value: bool) -> None:
    if value:
        __getattr__("console").print(f"upkeeper {__version__}")
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
    state.close()  # (a command that did not end through main(): an embedding program calling app directly)


#: DEL and the C1 controls, which JSON may carry raw (it escapes only U+0000–U+001F); U+009B is a CSI
_JSON_RAW_CONTROL = re.compile("[\x7f-\x9f]")


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, secrets redacted.  The values are exact; no control character
    reaches the terminal raw (JSON escapes U+0000–U+001F itself, and DEL and C1 are written ``\\u009b``)."""
    text = json.dumps(redact_obj(data), indent=2, default=str, ensure_ascii=False)
    sys.stdout.write(_JSON_RAW_CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n")
    sys.stdout.flush()


def check_output_file(path: Path, flag: str = "--output") -> None:
    """A usage error unless ``path`` can be a file this command writes: not a directory, in a directory that
    exists.  Checked before the work, so that a long command does not fail at its last step."""
    import shlex

    from upkeeper.errors import UsageError

    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory",
                         f"Try: give a file name, e.g. {flag} {shlex.quote(str(path / 'FILE'))}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the directory {parent} does not exist",
                         f"Try: create it (mkdir -p {shlex.quote(str(parent))}) or write the file elsewhere")


def write_output_file(path: Path, data: bytes, flag: str = "--output") -> None:
    """Write a file a command was asked for (``--output``) whole or not at all: a temporary file beside it,
    renamed over it, so that a reader (a web server serving the feed, cron, the admin) never sees half of it.
    An existing file keeps its owner, group and permissions; a symbolic link is written through; a device or a
    pipe (/dev/stdout) is written as it is.  Where the new file could not be the old one exactly (another
    owner or group than this user can give, another hard link to it, a directory this user cannot create files
    in) the file is rewritten in place, as a plain write does.  What cannot be written is a usage error naming
    the path."""
    from upkeeper.core.artifacts import atomic_write_bytes
    from upkeeper.errors import UsageError

    check_output_file(path, flag)
    try:
        if path.exists() and not path.is_file():
            path.write_bytes(data)
            return
        target = Path(os.path.realpath(path))
        st = target.stat() if target.exists() else None
        uid = os.geteuid()
        if st is not None and (st.st_nlink > 1 or not os.access(target.parent, os.W_OK | os.X_OK) or (
                uid != 0 and (st.st_uid != uid or st.st_gid not in {os.getegid(), *os.getgroups()}))):
            target.write_bytes(data)
        else:
            atomic_write_bytes(target, data, st.st_mode & 0o7777 if st else None,
                               (st.st_uid, st.st_gid) if st else None)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write ({exc.strerror or exc})",
                         "Try: write it to a directory you can write to") from None


def status_text(status: str) -> str:
    return f"[{status}]{status}[/{status}]" if status in STYLES else status


def run_status_text(status: str, stopped: bool) -> str:
    """A run's status as ``status`` and ``history`` show it: ``stopped`` for one interrupted because upkeeper was
    asked to stop (:func:`upkeeper.core.history.stopped_on_request`)."""
    return status_text("stopped" if stopped else status)


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
