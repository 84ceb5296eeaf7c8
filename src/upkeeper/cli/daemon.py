"""``upkeeper daemon``: run jobs on their schedules until stopped (SIGTERM/SIGINT); SIGHUP reloads the config."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import typer

from upkeeper.cli._app import app, err_console, state
from upkeeper.cli._wiring import build_listeners, build_periodic, build_policies, stop_listeners
from upkeeper.config.loader import find_config
from upkeeper.core.daemon import Daemon
from upkeeper.core.executor import WorkerPool
from upkeeper.core.history import History, clock_skew_warning, history_url, process_identity
from upkeeper.core.jobs import Setup, load_setup
from upkeeper.core.runner import Runner
from upkeeper.core.sdnotify import Notifier
from upkeeper.errors import ConfigError, UpkeeperError
from upkeeper.fmt import human_duration, printable_lines
from upkeeper.redact import Redacted, RedactingFilter, redact

log = logging.getLogger("upkeeper.daemon")
#: On a stop, how long (seconds) the notification channels may take to send what the last runs raised.
LISTENERS_STOP_WAIT = 30.0


class _PrintableFormatter(logging.Formatter):
    """Log records quote log lines and server errors: their control characters (but newlines and tabs) are
    written ``\\x1B``, as the other commands print them, for whoever tails the daemon's output."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))


def _error_text(exc: UpkeeperError) -> str:
    """An error as the CLI prints it: the message, each located problem (file:line: path: what), the hint."""
    # redacted part by part, as the CLI prints it (render_error): joined, 'password: environment variable NOPE is not
    # set' read as a password ('password: *** variable NOPE …'); Redacted, the log and the history keep it whole
    if not isinstance(exc, ConfigError):
        return Redacted(redact("\n".join([exc.message, *([exc.hint] if exc.hint else [])])))
    lines = [exc.message_text(redact)]
    if len(exc.problems) > 1:
        lines += [f"  - {p.render(redact)}" for p in exc.problems]
    if exc.hint:
        lines.append(redact(exc.hint))
    return Redacted("\n".join(lines))


def _say_clock_skew(history: History) -> None:
    """Say once, as the daemon starts, when this node's clock is off the PostgreSQL history's server's by more
    than :data:`~upkeeper.core.history.CLOCK_SKEW_WARN` (leases and heartbeats are on the server's clock; this
    node's schedules and run times are not).  A history it cannot read now is the loop's to report."""
    try:
        warning = clock_skew_warning(history.clock_skew())
    except Exception as exc:  # the history down at start: the scheduling loop retries and says so
        log.debug("clock skew not measured: %s", exc)
        return
    if warning:
        log.warning("clock: %s", warning)


def _url(setup: Setup) -> str:
    return history_url(setup.config.history, setup.source.parent if setup.source else None)


@app.command("daemon")
def daemon_cmd(
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, max=256,
                                           help="runs at once (default: daemon.concurrency)"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Run every scheduled job on time, with catch-up, jitter, locks, timeouts and retries.

    Several daemons may share one history database (PostgreSQL): each occurrence fires once.
    SIGTERM stops claiming, lets running runs finish within daemon.shutdown_grace, and marks
    the rest interrupted. SIGHUP (systemctl reload) re-reads the config file: an invalid one is
    refused (logged, shown by 'upkeeper status') and the daemon keeps the config it had; a valid
    one applies between two scheduling decisions — runs under way finish as they started, added
    jobs and changed schedules start at their next occurrence. 'history' and 'node' need a
    restart (such a reload is refused), and so does daemon.concurrency (kept until then).
    Under systemd (Type=notify, $NOTIFY_SOCKET) it reports READY, RELOADING, STOPPING and a
    STATUS line, extends the stop timeout to what its drain may take (EXTEND_TIMEOUT_USEC), and
    with WatchdogSec= its scheduling loop pings the watchdog: a stalled loop stops the pings and
    systemd restarts it.
    """
    # read (and removed from the environment) before any worker or task process starts: they must not speak to
    # systemd on the daemon's behalf
    notifier = Notifier.from_env()
    setup = state.setup()
    history = state.history()
    # a reload reads the file the daemon started from, wherever --config, $UPKEEPER_CONFIG or the search found it
    config_file = setup.source if setup.source is not None else find_config(state.config)
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("upkeeper")
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    conc = concurrency or setup.config.daemon.concurrency
    owner = process_identity()
    listeners = build_listeners(setup, history, background=True)
    pool = WorkerPool(size=conc, max_runs=setup.config.daemon.worker_max_runs)
    pool.prestart(conc, config=setup.config)  # warm workers (imports, config, secrets) before the first run
    url = state.history_url()
    runner = Runner(setup=setup, history=history, executor=pool,
                    owner=owner, node=setup.config.node, history_url=url,
                    listeners=listeners)
    daemon = Daemon(setup, history, runner, concurrency=conc, policies=build_policies(setup, history),
                    periodic=build_periodic(setup, history, listeners), notifier=notifier)
    stop_requested = threading.Event()

    def reload() -> None:
        """In the daemon's loop, between two ticks: read, check and apply the config file again."""
        at = datetime.now(UTC)
        current = daemon.setup

        def refuse(why: str) -> None:
            log.error("SIGHUP: %s not reloaded; the daemon keeps running with the config it had. %s",
                      config_file, why)
            daemon.record_reload({"at": at.isoformat(), "ok": False, "file": str(config_file), "message": why})

        try:
            new = load_setup(config_file)
        except UpkeeperError as exc:
            refuse(_error_text(exc))
            return
        except Exception as exc:  # an unreadable file (permissions), a bug: said, never the end of the daemon
            refuse(redact(f"{type(exc).__name__}: {exc}"))
            return
        fixed = [f"{name} changed ({old!r} → {now!r})" for name, old, now in (
            ("history", url, _url(new)), ("node", current.config.node, new.config.node)) if old != now]
        if fixed:
            refuse(f"{'; '.join(redact(f) for f in fixed)}: a running daemon cannot change that. Try: restart it "
                   f"(systemctl restart upkeeper) to apply this config, or undo the change and reload again")
            return
        notes = []
        if concurrency is None and new.config.daemon.concurrency != current.config.daemon.concurrency:
            notes.append(f"daemon.concurrency changed ({current.config.daemon.concurrency} → "
                         f"{new.config.daemon.concurrency}): it stays {conc} until the daemon is restarted")
        try:
            new_listeners = build_listeners(new, history, background=True)
            policies = build_policies(new, history)
            periodic = build_periodic(new, history, new_listeners)
        except UpkeeperError as exc:
            refuse(_error_text(exc))
            return
        old_listeners = runner.listeners
        pool.max_runs = new.config.daemon.worker_max_runs
        applied = daemon.apply(new, policies=policies, periodic=periodic)
        runner.listeners = new_listeners  # a run finishing from now on is notified under the new settings
        state._setup = new
        # the old engine sends what it has queued, in the background: the loop goes on meanwhile
        threading.Thread(target=stop_listeners, args=(old_listeners, 30.0), daemon=True,
                         name="notify-retire").start()
        for note in notes:
            log.warning("SIGHUP: %s", note)
        message = applied.describe() + "".join(f"; {n}" for n in notes)
        scheduled = len(daemon.jobs)
        log.info("SIGHUP: %s reloaded: %d scheduled job(s); %s", config_file, scheduled, message)
        daemon.record_reload({"at": at.isoformat(), "ok": True, "file": str(config_file), "message": message,
                              "added": applied.added, "removed": applied.removed,
                              "rescheduled": applied.rescheduled, "changed": applied.changed})

    daemon.reloader = reload

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            return
        stop_requested.set()
        log.info("%s received: no new runs; letting running ones finish", signal.Signals(signum).name)
        daemon.stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # only a flag: the loop reloads between two ticks, never in the middle of a scheduling decision
        # (SIGHUP's default action would end the process at once: no drain, runs left 'running')
        if stop_requested.is_set():
            log.info("SIGHUP received while stopping: not reloaded")
            return
        log.info("SIGHUP received: reloading %s", config_file)
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    scheduled = sum(1 for j in setup.jobs.values() if j.schedule and j.enabled)
    err_console.print(f"upkeeper daemon: {scheduled} scheduled job(s), concurrency {conc}, "
                      f"history {history.dialect}, node {setup.config.node}")
    _say_clock_skew(history)
    if notifier.enabled:
        log.info("systemd: notifying %s%s", notifier.address,
                 f"; watchdog {human_duration(notifier.watchdog)}, pinged from the scheduling loop"
                 if notifier.watchdog else "")
    notifier.ready(f"starting: {scheduled} scheduled job(s)")  # config loaded, history open: the loop starts
    try:
        daemon.run_forever()
    finally:
        grace = daemon.setup.config.daemon.shutdown_grace
        interrupted = daemon.drain(grace)
        runner.executor.shutdown()
        notifier.extend_timeout(LISTENERS_STOP_WAIT + 15)  # the notifications of the last runs may still be sent
        stop_listeners(runner.listeners, LISTENERS_STOP_WAIT)
        runner.close()
        if interrupted:
            # stopped with the daemon (a cgroup's SIGTERM reaches their workers too), or still running after
            # daemon.shutdown_grace
            err_console.print(f"stopped; {len(interrupted)} run(s) interrupted (runs "
                              f"{', '.join(map(str, interrupted))}; shutdown grace {human_duration(grace)})")
        else:
            err_console.print("stopped cleanly")
        notifier.close()
