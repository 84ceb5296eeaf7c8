"""Entry point of the ``upkeeper`` console script.

Expected problems print ``Error: …`` and ``Try: …`` and exit 2 (usage or
configuration) or 1; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

#: Global options that take a value (the command word comes after them).
_VALUE_OPTIONS = ("--config", "-c")


def command_word(argv: list[str]) -> str | None:
    """The command named on a command line, skipping the global options before it."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
        elif arg in ("--help", "-h", "--version"):
            return None
    return None


def _is_console_script(argv: list[str]) -> bool:
    """Started as the ``upkeeper`` command (or ``python -m upkeeper``), not imported by another program."""
    prog = argv[0] if argv else ""
    return os.path.basename(prog) == "upkeeper" or prog.endswith(os.path.join("upkeeper", "__main__.py"))


def _early_worker_wanted(argv: list[str]) -> bool:
    """``upkeeper run`` (a run now, not ``--at`` or ``--help``) as the console script: the task's worker
    process is forked from this one (:func:`_fork_worker_early`)."""
    if not _is_console_script(argv):
        return False  # imported by something else (tests, an embedding program)
    args = argv[1:]
    return command_word(args) == "run" and not any(
        a in ("--help", "-h", "--at") or a.startswith("--at=") for a in args)


def _fork_worker_early(argv: list[str]) -> None:
    """Import what the worker needs as well (pydantic, SQLAlchemy, the config models, history, the named
    jobs' task modules, the history database's driver), then fork it.

    The worker starts with those modules instead of importing them a second time in a process
    of its own (~40% of a short run's CPU time); it imports the jobs' task modules and client
    libraries while this process imports what only the CLI needs (Typer, Rich, the command),
    loads the config and claims the runs.  The run's pool adopts it.
    """
    from upkeeper.core.worker import preload, start_ahead

    hint = run_hint(argv[1:])
    # first of all, the named log jobs' scan helpers: they import their parsers on the other core while this process
    # imports what follows (~0.4 s on one core), and the worker forked below drives them
    ahead = start_ahead(hint)
    import upkeeper.core.execute
    import upkeeper.core.history  # noqa: F401
    from upkeeper.core.spawn import fork_early

    preload(hint)  # the named jobs' task modules and the history's database driver, imported once for both
    if not ahead:
        fork_early(hint)
        return
    from upkeeper.logs import parallel

    parallel.release_forked(fork_early(hint, keep_fds=parallel.fork_fds(), in_child=parallel.adopt_forked))


#: Options of ``upkeeper run`` that take a value (not a job name).
_RUN_VALUE_OPTIONS = ("--parallel", "-p", "--reason", "--approved-by")


def run_hint(args: list[str]) -> list[str]:
    """``[config, job…]`` named on an ``upkeeper run`` command line (config "" when not given), so the
    early worker can import those jobs' task modules while this process does its own imports."""
    config = ""
    jobs: list[str] = []
    skip: str | None = None
    seen_command = False
    for arg in args:
        if skip is not None:
            if skip in _VALUE_OPTIONS:
                config = arg
            skip = None
        elif arg in _VALUE_OPTIONS or arg in _RUN_VALUE_OPTIONS:
            skip = arg
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            continue
        elif not seen_command:
            seen_command = True  # "run"
        else:
            jobs.append(arg)
    return [config, *jobs]


_gc_paused: list[bool] = []


def _pause_gc(argv: list[str]) -> None:
    """Hold the cyclic garbage collector while the command's modules are imported (~5-10% of start-up).

    Importing creates some 80,000 long-lived objects and no garbage, yet trips ~200 collections
    that traverse them all; :func:`_resume_gc` turns it back on once the command is loaded.
    """
    if _is_console_script(argv) and gc.isenabled():
        gc.disable()
        _gc_paused.append(True)


def _resume_gc() -> None:
    """Move the imported modules' objects out of the collector's sight (they live as long as the
    process) and turn it back on."""
    if _gc_paused:
        _gc_paused.clear()
        gc.freeze()
        gc.enable()


_pause_gc(sys.argv)
if _early_worker_wanted(sys.argv):
    _fork_worker_early(sys.argv)

import upkeeper.cli as _pkg  # noqa: E402 - after the early worker's fork, on purpose
from upkeeper.cli import _app  # noqa: E402
from upkeeper.cli._app import app, reflow_help, state  # noqa: E402
from upkeeper.cli._signals import TERMINATED_EXIT, Terminated, sigterm_unwinds  # noqa: E402
from upkeeper.errors import ConfigError, UpkeeperError, UsageError  # noqa: E402
from upkeeper.redact import redact  # noqa: E402

#: Top-level command (or command group) → the module of ``upkeeper.cli`` that defines it.  Only the
#: invoked command's module is imported (``upkeeper run`` need not import the demo or the backup
#: browser); anything else (``--help``, a typo) imports them all.  tests/cli/test_main.py checks that
#: this table and the modules agree.
COMMANDS: dict[str, str] = {
    "backups": "backups", "cancel": "cancel", "config": "config_cmd", "cron": "cron", "daemon": "daemon", "demo": "demo",
    "history": "history", "show": "history", "init": "init", "jobs": "jobs", "logs": "logs",
    "notify": "notify", "run": "run", "status": "status", "storages": "storages", "tasks": "tasks",
    "windows": "windows",
}  # fmt: skip


def command_modules() -> list[str]:
    """Every command module (one per command or group; names starting with "_" are helpers)."""
    import pkgutil  # only here (--help, a typo): ~10 ms of every command's start otherwise

    return sorted(m.name for m in pkgutil.iter_modules(_pkg.__path__) if not m.name.startswith("_")
                  and m.name != "main")


def load_commands(argv: list[str] | None = None, *, listing: bool = True) -> None:
    """Register the command the command line names, or every command when that is unclear.

    With no command named (``upkeeper --help``, ``upkeeper``), no command runs: the commands are only listed, from
    :data:`upkeeper.cli._help_index.COMMANDS_HELP` (each command's help, written by ``upkeeper.docsgen``), without
    importing their modules (~0.3 s); ``listing=False`` imports them instead (tests compare both)."""
    args = sys.argv[1:] if argv is None else argv
    word = command_word(args)
    if word is None and "--version" in args and not {"--help", "-h"} & set(args):
        return  # the version callback lives in _app: no command is needed
    if word is None and listing and not (app.registered_commands or app.registered_groups):
        _list_commands()
        return
    _unlist_commands()  # (a process that runs several command lines: tests)
    for name in [COMMANDS[word]] if word in COMMANDS else command_modules():
        importlib.import_module(f"upkeeper.cli.{name}")


def _listed_only() -> None:  # pragma: no cover - never called: no command is named on such a command line
    raise RuntimeError("a command registered only for the listing of upkeeper --help ran")


_LISTED: list[object] = []  # the sub-apps _list_commands registered


def _list_commands() -> None:
    """Register each command as its help only (a command nothing can run)."""
    import typer

    from upkeeper.cli._help_index import COMMANDS_HELP

    for kind, name, text in COMMANDS_HELP:
        if kind == "group":
            sub = typer.Typer(help=text)
            _LISTED.append(sub)
            app.add_typer(sub, name=name)
        else:
            app.command(name, help=text)(_listed_only)


def _unlist_commands() -> None:
    """Take back what :func:`_list_commands` registered, before the real commands are."""
    if _LISTED or any(c.callback is _listed_only for c in app.registered_commands):
        app.registered_commands[:] = [c for c in app.registered_commands if c.callback is not _listed_only]
        app.registered_groups[:] = [g for g in app.registered_groups
                                    if not any(g.typer_instance is sub for sub in _LISTED)]
        _LISTED.clear()


def empty_argument(args: list[str]) -> UsageError | None:
    """An empty value on the command line (``--target ""``, ``--to=``, a positional ``""``): what an unset shell
    variable in a script gives.  Taken as given, it was taken for the option left out, its default --
    ``backups restore --target "" --database app --force --yes`` replaced ``app`` on the backup's own server."""
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:
            flag = arg[:-1]
        elif arg == "":
            prev = args[i - 1] if i else ""
            if not prev.startswith("-") or prev == "--" or "=" in prev:
                where = f" (after {prev!r})" if prev else ""
                return UsageError(f"an empty argument{where}",
                                  "Try: give it a value (is a shell variable unset?), or leave it out")
            flag = prev
        else:
            continue
        return UsageError(f"{flag} is empty", f"Try: give {flag} a value (is a shell variable unset?), or leave "
                          f"{flag} out for its default")
    return None


def render_error(exc: UpkeeperError) -> None:
    """``Error: …`` and ``Try: …`` on stderr, each one line however long (the console's ``soft_wrap``: see
    :func:`upkeeper.cli._console.make_console`)."""
    err_console = _app.err_console  # made on first use (importing Rich's console is ~17 ms of every start)
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        err_console.print("[bold red]Error:[/] ", end="")
        err_console.print(redact(exc.message), markup=False)
        for p in exc.problems:
            err_console.print(f"  - {p.render(redact)}", markup=False)
            if p.hint:
                err_console.print(f"    {redact(p.hint)}", markup=False)
        return
    err_console.print("[bold red]Error:[/] ", end="")
    err_console.print(exc.message_text(redact) if isinstance(exc, ConfigError) else redact(exc.message), markup=False)
    if exc.hint:
        hint = exc.hint if exc.hint.startswith("Try:") else f"Try: {exc.hint}"
        err_console.print(redact(hint), markup=False)


def main(argv: list[str] | None = None) -> None:
    if argv is not None or not _is_console_script(sys.argv):
        _main(argv)
        return
    try:
        _main(None)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    _exit_now(code)


def _exit_now(code: object) -> None:
    """End the ``upkeeper`` process without the interpreter's teardown of every module (~0.1 s).

    Exactly what a normal exit does that matters: wait for non-daemon threads, run the atexit
    handlers (logging's flush among them), flush stdout and stderr.
    """
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter itself calls at exit:
    if shutdown is not None:  # it also stops idle thread pools (concurrent.futures) before joining
        shutdown()
    else:  # pragma: no cover - not CPython
        for t in threading.enumerate():
            if t is not threading.current_thread() and not t.daemon:
                t.join()
    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        status = status or 1  # stdout closed or a broken pipe: as Python itself reports it
    os._exit(status & 0xFF)


def _main(argv: list[str] | None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv)
    with sigterm_unwinds() as term:  # SIGTERM (timeout, kill, systemd) unwinds as Ctrl-C does: cleanup runs
        try:
            _run_app(argv, debug)
        except SystemExit as exc:
            if term.received and exc.code == 130:  # Typer's exit code for a KeyboardInterrupt (Terminated is one)
                sys.exit(TERMINATED_EXIT)
            raise


def _run_app(argv: list[str] | None, debug: bool) -> None:
    try:
        try:
            empty = empty_argument(sys.argv[1:] if argv is None else argv)
            if empty is not None:
                raise empty
            load_commands(argv)
            reflow_help()
            _resume_gc()
            app(args=argv, prog_name="upkeeper")
        finally:
            _close_history()
    except UpkeeperError as exc:
        if debug or state.debug:
            raise
        render_error(exc)
        sys.exit(exc.exit_code)
    except Terminated:
        _app.err_console.print("terminated (SIGTERM)")
        sys.exit(TERMINATED_EXIT)
    except KeyboardInterrupt:
        _app.err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if debug or state.debug:
            raise
        out = _app.err_console
        out.print("[bold red]Error:[/] ", end="")
        out.print(f"internal error: {type(exc).__name__}: {redact(str(exc))}", markup=False)
        out.print("Try: run again with --debug and report the traceback", markup=False)
        sys.exit(1)


def _close_history() -> None:
    """The command's history closed as it ends (:meth:`upkeeper.cli._app.State.close`); a failure to close it
    changes neither the command's output nor its exit code."""
    try:
        state.close()
    except Exception as exc:
        _app.err_console.print(f"warning: could not close the history database: {redact(str(exc))}", markup=False)


if __name__ == "__main__":
    main()
