"""``upkeeper daemon``: run jobs on their schedules until stopped (SIGTERM/SIGINT)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from upkeeper.cli._app import app, err_console, state
from upkeeper.cli._wiring import build_listeners, build_periodic, build_policies, stop_listeners
from upkeeper.core.daemon import Daemon
from upkeeper.core.executor import WorkerPool
from upkeeper.core.history import process_identity
from upkeeper.core.runner import Runner
from upkeeper.fmt import human_duration, printable_lines
from upkeeper.redact import RedactingFilter


class _PrintableFormatter(logging.Formatter):
    """Log records quote log lines and server errors: their control characters (but newlines and tabs) are
    written ``\\x1B``, as the other commands print them, for whoever tails the daemon's output."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))


@app.command("daemon")
def daemon_cmd(
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, max=256,
                                           help="runs at once (default: daemon.concurrency)"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Run every scheduled job on time, with catch-up, jitter, locks, timeouts and retries.

    Several daemons may share one history database (PostgreSQL): each occurrence fires once.
    SIGTERM stops claiming, lets running runs finish within daemon.shutdown_grace, and marks
    the rest interrupted. SIGHUP does not reload the config (restart to apply changes): it is
    logged and ignored.
    """
    setup = state.setup()
    history = state.history()
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
    runner = Runner(setup=setup, history=history, executor=pool,
                    owner=owner, node=setup.config.node, history_url=state.history_url(),
                    listeners=listeners)
    daemon = Daemon(setup, history, runner, concurrency=conc, policies=build_policies(setup, history),
                    periodic=build_periodic(setup, history, listeners))
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            return
        stop_requested.set()
        logging.getLogger("upkeeper.daemon").info("%s received: no new runs; letting running ones finish",
                                                  signal.Signals(signum).name)
        daemon.stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # SIGHUP's default action ends the process at once: no drain, runs left 'running' until a daemon's orphan
        # recovery, workers cut off. Reloading is not supported (a changed schedule, window or target would need
        # every job, policy and channel rebuilt), so say so and keep running.
        logging.getLogger("upkeeper.daemon").warning(
            "SIGHUP received: the daemon does not reload its configuration; it keeps running with the one it "
            "started with. Restart it (systemctl restart) to apply a changed config")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    scheduled = sum(1 for j in setup.jobs.values() if j.schedule and j.enabled)
    err_console.print(f"upkeeper daemon: {scheduled} scheduled job(s), concurrency {conc}, "
                      f"history {history.dialect}, node {setup.config.node}")
    try:
        daemon.run_forever()
    finally:
        grace = setup.config.daemon.shutdown_grace
        interrupted = daemon.drain(grace)
        runner.executor.shutdown()
        stop_listeners(listeners, 30.0)
        runner.close()
        if interrupted:
            # stopped with the daemon (a cgroup's SIGTERM reaches their workers too), or still running after
            # daemon.shutdown_grace
            err_console.print(f"stopped; {len(interrupted)} run(s) interrupted (runs "
                              f"{', '.join(map(str, interrupted))}; shutdown grace {human_duration(grace)})")
        else:
            err_console.print("stopped cleanly")
