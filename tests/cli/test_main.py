"""The entry point imports only the invoked command's module."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

from upkeeper.cli._app import app
from upkeeper.cli.main import COMMANDS, command_modules, command_word
from upkeeper.core.history import History


def test_command_table_matches_the_modules() -> None:
    for name in command_modules():
        importlib.import_module(f"upkeeper.cli.{name}")
    defined: dict[str, str] = {}
    for cmd in app.registered_commands:
        assert cmd.name and cmd.callback
        defined[cmd.name] = cmd.callback.__module__.rsplit(".", 1)[1]
    for group in app.registered_groups:
        assert group.name and group.typer_instance
        callbacks = [c.callback for c in group.typer_instance.registered_commands if c.callback]
        defined[group.name] = callbacks[0].__module__.rsplit(".", 1)[1]
    assert defined == COMMANDS
    assert set(COMMANDS.values()) == set(command_modules())


def test_command_word_skips_global_options() -> None:
    assert command_word(["--config", "run.yaml", "--debug", "run", "x"]) == "run"
    assert command_word(["-c", "tasks", "jobs"]) == "jobs"
    assert command_word(["--config=a.yaml", "status"]) == "status"
    assert command_word(["--help"]) is None
    assert command_word([]) is None


def test_run_does_not_import_other_commands() -> None:
    code = ("import sys\nfrom upkeeper.cli.main import load_commands\nload_commands(['--config', 'x', 'run', 'j'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('upkeeper.cli.') and not "
            "m.split('.')[-1].startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['upkeeper.cli.main', 'upkeeper.cli.run']"



def test_run_imports_the_notification_engine_and_rich_progress_only_when_needed() -> None:
    """``upkeeper run`` builds the notification engine for planned and emergency runs, and for the runner
    when channels are configured; it shows a live progress display only on a terminal.  Loading the
    command imports neither (nor the modules only they need)."""
    assert _loaded(["--config", "x", "run", "j"], ("upkeeper.notify.engine", "upkeeper.notify.store",
                                                   "upkeeper.notify.transports", "rich.progress", "rich.table"),
                   also="import upkeeper.cli._runs") == []


def _loaded(argv: list[str], modules: tuple[str, ...], also: str = "") -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported once the CLI loaded its commands for ``argv`` (and ran
    the statement ``also``)."""
    code = (f"import sys\nsys.argv = ['upkeeper', *{argv!r}]\nfrom upkeeper.cli.main import load_commands\n"
            f"load_commands({argv!r})\n{also}\nprint(sorted(m for m in {modules!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return list(ast.literal_eval(out.strip()))


#: a well-formed age public key (the CLI checks its form only)
AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

#: libraries no command needs to be registered (nor ``upkeeper run``'s CLI process on its way to a run): each
#: costs 20-100 ms of the start of every command that imports it
HEAVY_LIBRARIES = ("boto3", "botocore", "paramiko", "apprise", "pyarrow", "cryptography", "icalendar", "psycopg",
                   "httpx", "redis", "dns", "pyrage", "sqlalchemy.orm", "alembic")


def _heavy_loaded(code: str) -> list[str]:
    """The :data:`HEAVY_LIBRARIES` (and the modules that load them) imported by ``code``, in a fresh Python."""
    probe = (f"{code}\nimport json, sys\nheavy = {HEAVY_LIBRARIES!r} + ('upkeeper.core.models', "
             "'upkeeper.notify.engine', 'upkeeper.notify.ics', 'upkeeper.sandbox.demo')\n"
             "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded: list[str] = json.loads(out.strip().rsplit("\n", 1)[-1])
    return loaded


def test_loading_every_command_imports_no_heavy_library() -> None:
    """``upkeeper --help`` (or a mistyped command) imports every command module to list the commands: none of
    them imports a library at its top that only its command's work needs — the demo's sandbox (cryptography),
    the iCalendar feed (icalendar), the notification engine and the ORM (~200 ms of ``--help`` together)."""
    assert _heavy_loaded("from upkeeper.cli.main import load_commands\nload_commands(['--help'])") == []
    assert _heavy_loaded("from upkeeper.cli.main import load_commands\nload_commands(['show', '1'])") == []


def test_run_in_the_cli_imports_no_client_library(tmp_path: Path) -> None:
    """``upkeeper run`` validates every job of the config in its CLI process, storages and backup jobs included:
    the client libraries (boto3, paramiko, psycopg, pyarrow …) are the worker's to import."""
    key = tmp_path / "id_ed25519"
    key.write_text("not read by the CLI\n")
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(json.dumps({
        "history": str(tmp_path / "history.db"),
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1, "user": "postgres"},
                    "web": {"kind": "nginx", "access_log": str(tmp_path / "access.log")}},
        "storages": {"local": {"kind": "local", "path": str(tmp_path)},
                     "s3": {"kind": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
                     "sftp": {"kind": "sftp", "host": "127.0.0.1", "user": "u", "key_file": str(key), "path": "/b"}},
        "backup": {"encryption": {"recipients": [AGE_RECIPIENT]}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                               "options": {"databases": ["x"], "storages": ["local", "s3", "sftp"]}},
                 "logs": {"task": "logs.nginx", "target": "web",
                          "options": {"incremental": False, "report_dir": str(tmp_path / "reports")}},
                 "noop": {"task": "debug.noop"}},
    }))
    (tmp_path / "access.log").write_text("")
    History(f"sqlite:///{tmp_path / 'history.db'}").close()
    for job in ("noop", "logs"):
        code = ("import contextlib, io, json\nfrom upkeeper.cli.main import main\nout = io.StringIO()\n"
                f"try:\n    with contextlib.redirect_stdout(out):\n        main(['--config', {str(cfg)!r}, 'run', "
                f"{job!r}, '--json'])\nexcept SystemExit as e:\n    assert e.code == 0, (e.code, out.getvalue())\n"
                f"assert json.loads(out.getvalue())[0]['status'] == 'ok', out.getvalue()")
        assert _heavy_loaded(code) == [], job


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "upkeeper", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in COMMANDS:
        assert name in out


def test_version_imports_no_command() -> None:
    code = ("import sys\nfrom upkeeper.cli.main import load_commands\nload_commands(['--version'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('upkeeper.cli.') and not "
            "m.split('.')[-1].startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['upkeeper.cli.main']"
    from upkeeper import __version__

    res = subprocess.run([sys.executable, "-m", "upkeeper", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"upkeeper {__version__}"


def test_version_loads_neither_the_config_nor_the_history_modules() -> None:
    """``upkeeper --version`` prints a constant: the CLI's shared module does not import pydantic, SQLAlchemy and
    the config models at its top (~0.25 s), only the commands that use them do."""
    assert _loaded(["--version"], ("sqlalchemy", "pydantic", "upkeeper.core.history", "upkeeper.core.jobs",
                                   "upkeeper.config.loader")) == []


def test_the_command_exits_at_once_with_its_status_and_output_flushed() -> None:
    """The console script skips module teardown, but not what a normal exit does: idle thread pools
    stop, atexit handlers run, buffered output is written, the exit status is kept."""
    script = (
        "import atexit, sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "sys.argv = ['/venv/bin/upkeeper', 'status']\n"
        "pool = ThreadPoolExecutor(2)\n"
        "pool.submit(print, 'from a pool thread').result()  # the pool is left open on purpose\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "from upkeeper.cli.main import _exit_now\n"
        "sys.stdout.write('buffered, no newline')\n"
        "_exit_now(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "from a pool thread\nbuffered, no newlineatexit ran\n"


def test_run_hint_names_the_config_and_the_jobs() -> None:
    from upkeeper.cli.main import run_hint

    assert run_hint(["run", "db-backup"]) == ["", "db-backup"]
    assert run_hint(["--config", "run", "--debug", "run", "a", "-q", "b"]) == ["run", "a", "b"]
    assert run_hint(["-c", "x.yaml", "run", "--json", "a"]) == ["x.yaml", "a"]
    assert run_hint(["--config=y.yaml", "run", "-p", "2", "a", "--reason", "r", "--approved-by", "me", "b"]) == [
        "y.yaml", "a", "b"]
    assert run_hint(["run", "--all"]) == [""]


def test_the_garbage_collector_is_paused_only_while_the_console_script_imports() -> None:
    import gc

    from upkeeper.cli import main

    assert gc.isenabled()
    main._pause_gc(["/usr/bin/pytest", "run"])  # imported by another program: its collector is left alone
    assert gc.isenabled()
    main._resume_gc()
    assert gc.isenabled()
    try:
        main._pause_gc(["/venv/bin/upkeeper", "run", "x"])
        assert not gc.isenabled()
        main._resume_gc()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_console_script_runs_its_command_with_the_garbage_collector_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``upkeeper`` pauses the collector for its imports only: a command (a daemon, a long run) has it."""
    probe = tmp_path / "probe.py"
    probe.write_text("import gc, sys\n"
                     "sys.argv = ['/venv/bin/upkeeper', '--version']\n"
                     "import upkeeper.cli.main as m\n"
                     "print('importing', gc.isenabled())\n"
                     "m.app = lambda **kw: print('command', gc.isenabled())\n"
                     "m._main(None)\n")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["importing False", "command True"]



def test_help_paragraphs_are_not_cut_at_the_source_lines() -> None:
    """Every command's --help shows each paragraph of its docstring as one flowing text (Rich wraps it to the
    terminal), not cut where the source lines end (Typer's rich mode keeps a docstring's line breaks)."""
    import inspect

    import typer

    from upkeeper.cli._app import reflow_help

    for name in command_modules():
        importlib.import_module(f"upkeeper.cli.{name}")
    reflow_help()
    seen = 0

    def check(t: typer.Typer) -> None:
        nonlocal seen
        for c in t.registered_commands:
            assert c.help and all("\n" not in p for p in c.help.split("\n\n")), (c.name, c.help)
            seen += 1
        for g in t.registered_groups:
            assert g.typer_instance is not None
            check(g.typer_instance)

    check(app)
    assert seen > 30
    # and the console script applies it: 'run --help' shows the second paragraph of run's docstring unbroken
    doc = inspect.cleandoc(importlib.import_module("upkeeper.cli.run").run_cmd.__doc__ or "")
    assert "\n" in doc.split("\n\n")[1]  # (the source does break it)
    out = subprocess.run([sys.executable, "-m", "upkeeper", "run", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "400", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
                         timeout=60).stdout
    assert " ".join(doc.split("\n\n")[1].split()) in out, out


def test_run_records_its_runs_without_the_orm(tmp_path: Path) -> None:
    """``upkeeper run`` records a run (claim, job and target locks, result, job state) with Core statements
    only: SQLAlchemy's ORM and the mapped classes (~70 ms of the command's start) are never imported, even
    when the config has backup jobs (validated in the CLI; their catalog is the worker's to load).  With
    ``--json`` nothing is printed through Rich, whose console is not even imported (~17 ms), and the run's
    owner identity is read from /proc, without psutil (~10 ms); a config without recurring windows or blackouts
    needs no dateutil.rrule (~3 ms)."""
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(json.dumps({
        "history": str(tmp_path / "history.db"),
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1, "user": "postgres"}},
        "storages": {"local": {"kind": "local", "path": str(tmp_path)}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {"databases": ["x"]}},
                 "noop": {"task": "debug.noop"}},
    }))
    code = ("import sys, json\nfrom upkeeper.cli.main import main\n"
            f"try:\n    main(['--config', {str(cfg)!r}, 'run', 'noop', '--json'])\nexcept SystemExit as e:\n"
            "    code = e.code\n"
            "print(json.dumps([code, sorted(m for m in ('sqlalchemy.orm', 'upkeeper.core.models',"
            " 'upkeeper.backup.catalog', 'rich.console', 'psutil', 'dateutil.rrule') if m in sys.modules)]))")
    History(f"sqlite:///{tmp_path / 'history.db'}").close()  # created (by Alembic) here: the run finds it at head
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    report, modules = out.strip().rsplit("\n", 1)
    assert [(r["job"], r["status"]) for r in json.loads(report)] == [("noop", "ok")]
    assert json.loads(modules) == [0, []]


def test_a_sigterm_during_a_shielded_cleanup_is_acted_on_when_it_ends() -> None:
    """The command's SIGTERM handler (sigterm_unwinds) raises Terminated where the main thread is — but not
    inside a shielded cleanup (nested too): there it waits for the cleanup to end; outside, it raises at once."""
    import os
    import signal
    import time

    from upkeeper.cli._signals import Terminated, sigterm_unwinds
    from upkeeper.shield import shielded

    done: list[str] = []
    try:
        with sigterm_unwinds():
            with shielded():
                with shielded():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # the handler runs here
                    done.append("inner")
                done.append("outer")
            done.append("after")  # never: the stop is raised as the outermost section ends
    except Terminated:
        done.append("terminated")
    assert done == ["inner", "outer", "terminated"]
    with sigterm_unwinds():  # no cleanup under way: at once
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
            raise AssertionError("not stopped")
        except Terminated:
            pass


def test_ctrl_c_during_a_shielded_cleanup_waits_for_it_and_a_second_one_cuts_it_short() -> None:
    """Ctrl-C (SIGINT) inside a shielded cleanup under sigterm_unwinds: KeyboardInterrupt once it ends (it used to
    be raised inside, cutting the cleanup short); pressed again meanwhile, at once.  An ignored SIGINT (a command
    started in the background) stays ignored."""
    import os
    import signal
    import time

    from upkeeper.cli._signals import sigterm_unwinds
    from upkeeper.shield import deferred, shielded

    done: list[str] = []
    try:
        with sigterm_unwinds(), shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here
            done.append("cleanup")
    except KeyboardInterrupt:
        done.append("interrupted")
    assert done == ["cleanup", "interrupted"] and not deferred()
    done.clear()
    try:
        with sigterm_unwinds(), shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("first")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("second")
    except KeyboardInterrupt:
        done.append("interrupted")
    assert done == ["first", "interrupted"] and not deferred()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigterm_unwinds():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_shielded_section_of_another_thread_neither_defers_nor_takes_the_main_threads_stop() -> None:
    """Stop signals are handled in the main thread, which runs the task; helper threads (upload drains, a verify's
    space watch) are never interrupted by them.  A helper's shielded section therefore neither delays the main
    thread's stop, nor is the stop raised in the helper when its section ends, nor is a stop left pending."""
    import os
    import signal
    import threading
    import time

    from upkeeper.cli._signals import Terminated, sigterm_unwinds
    from upkeeper.shield import deferred, shielded

    inside, leave = threading.Event(), threading.Event()
    helper: list[str] = []

    def cleanup() -> None:
        try:
            with shielded():
                inside.set()
                leave.wait(5)
            helper.append("done")
        except BaseException as exc:
            helper.append(type(exc).__name__)

    t = threading.Thread(target=cleanup)
    t.start()
    try:
        assert inside.wait(5)
        with sigterm_unwinds():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
                raise AssertionError("the main thread's stop waited for another thread's cleanup")
            except Terminated:
                pass
    finally:
        leave.set()
        t.join(5)
    assert helper == ["done"] and not deferred()


def test_an_empty_argument_is_refused_before_any_command_runs(cli, make_config) -> None:  # type: ignore[no-untyped-def]
    """An empty value (an unset shell variable in a script) was taken for the option left out, its default:
    ``backups restore --target "" --database app --force --yes`` replaced ``app`` on the backup's own server.
    Every command refuses it now, naming the option, before doing anything."""
    from upkeeper.cli.main import empty_argument

    assert empty_argument(["--config", "c.yaml", "run", "db-backup", "--reason", "x y"]) is None
    for argv, said in ((["run", ""], "an empty argument (after 'run')"),
                       (["--config", "", "run", "x"], "--config is empty"),
                       (["--config=", "run", "x"], "--config is empty"),
                       (["backups", "restore", "ID", "--target", "", "--force"], "--target is empty"),
                       (["history", "-n", ""], "-n is empty"),
                       (["cancel", "--", ""], "an empty argument (after '--')"),
                       ([""], "an empty argument")):
        exc = empty_argument(argv)
        assert exc is not None and exc.message == said, (argv, exc)
    cfg = make_config({"jobs": {"nap": {"task": "debug.noop"}}})
    for argv in (["run", ""], ["history", "--since", ""], ["run", "nap", "--reason="]):
        r = cli(["--config", cfg, *argv])
        assert r.code == 2 and ("is empty" in r.err or "an empty argument" in r.err), (argv, r.output)
        assert "Try: give " in r.err, r.output
    assert cli(["--config", cfg, "history", "--json"]).json() == []  # nothing ran


def _help_text(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}).stdout


def test_upkeeper_help_lists_the_commands_from_the_index_exactly_as_from_their_modules() -> None:
    """``upkeeper --help`` (and ``upkeeper`` alone) list the commands from the generated index, importing no command
    module (~0.3 s): the same text as from the modules themselves (docsgen keeps the index current)."""
    run = ("import sys\nimport upkeeper.cli.main as m\nm.load_commands({args}, listing={listing})\n"
           "m.reflow_help()\nloaded = sorted(n for n in sys.modules if n.startswith('upkeeper.cli.') and not "
           "n.split('.')[-1].startswith('_'))\n"
           "try:\n    m.app(args={args}, prog_name='upkeeper')\nexcept SystemExit:\n    pass\nprint(loaded)")
    listed = _help_text(run.format(args="['--help']", listing=True))
    imported = _help_text(run.format(args="['--help']", listing=False))
    assert listed.splitlines()[-1] == "['upkeeper.cli.main']"  # no command module
    assert listed.splitlines()[:-1] == imported.splitlines()[:-1]
    assert "backups" in listed and "Run jobs now." in listed


def test_a_command_line_after_the_listing_gets_the_real_commands() -> None:
    """In one process (tests), a command run after ``--help`` is the command, not the listing's stand-in."""
    code = ("import upkeeper.cli.main as m\nfrom upkeeper.cli._app import app\n"
            "m.load_commands(['--help'])\nm.load_commands(['tasks'])\n"
            "names = [c.name for c in app.registered_commands]\n"
            "assert names.count('tasks') == 1 and all(c.callback is not m._listed_only for c in app.registered_commands), names\n"
            "assert not [g for g in app.registered_groups if g.name == 'backups'], 'listing left behind'\n"
            "print('ok')")
    assert _help_text(code).strip() == "ok"
