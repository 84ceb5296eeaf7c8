"""Entry point of the ``upkeeper`` console script.

Expected problems print ``Error: …`` and ``Try: …`` and exit 2 (usage or
configuration) or 1; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

# One module per command (group); importing registers it on the app.  Modules whose
# names start with "_" are helpers.
import upkeeper.cli as _pkg
from upkeeper.cli._app import app, err_console, state
from upkeeper.errors import ConfigError, UpkeeperError
from upkeeper.redact import redact

for _mod in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda m: m.name):
    if not _mod.name.startswith("_") and _mod.name != "main":
        importlib.import_module(f"upkeeper.cli.{_mod.name}")


def render_error(exc: UpkeeperError) -> None:
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        err_console.print(f"[bold red]Error:[/] {redact(exc.message)}", markup=True)
        for p in exc.problems:
            err_console.print(f"  - {redact(p.render())}", markup=False)
            if p.hint:
                err_console.print(f"    {redact(p.hint)}", markup=False)
        return
    err_console.print("[bold red]Error:[/] ", end="")
    err_console.print(redact(exc.message), markup=False)
    if exc.hint:
        hint = exc.hint if exc.hint.startswith("Try:") else f"Try: {exc.hint}"
        err_console.print(redact(hint), markup=False)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(args=argv, prog_name="upkeeper")
    except UpkeeperError as exc:
        if debug or state.debug:
            raise
        render_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug or state.debug:
            raise
        err_console.print("[bold red]Error:[/] ", end="")
        err_console.print(f"internal error: {type(exc).__name__}: {redact(str(exc))}", markup=False)
        err_console.print("Try: run again with --debug and report the traceback", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
