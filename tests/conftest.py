"""Shared fixtures: real services (tests/services.py), config files, an in-process CLI."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from ruamel.yaml import YAML

from services import *  # noqa: F403 - fixtures

# A suite started in the background by a non-interactive shell ('make test &') inherits SIGINT ignored
# (POSIX), and passes that on to every CLI it starts: the tests that stop one with Ctrl-C (SIGINT) would see it
# ignored.  Give it back its default, as in a terminal (a handled signal is reset to default in a child).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("COLUMNS", "200")

# Hypothesis: a developer's run draws new examples every time (and keeps the failing ones in .hypothesis/), to go
# on finding bugs; CI's run (.ci/run sets CI) draws the same examples for the same test every time, so that a
# commit green in a clean clone here is green there, and a new counterexample turns up on a developer's machine
# rather than as a random CI failure that keeps a submission out.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _no_s3_upload_thread_left() -> Iterator[None]:
    """Every path that writes to S3 (tasks, in-process CLI commands, storages check…) ends its uploads: a writer
    neither committed nor aborted keeps its pool's thread ('upkeeper-s3_N') and its multipart upload, which add up
    in a long-lived process (the daemon's workers, a CLI run over many backups)."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("upkeeper-s3")]
    for t in left:
        t.join(timeout=2)  # a pool being shut down right now
    alive = sorted(t.name for t in left if t.is_alive())
    assert not alive, f"S3 upload threads left running by this test (an S3 writer neither committed nor aborted, " \
                      f"or its storage not closed): {alive}"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        import json

        return json.loads(self.out)


def invoke(args: Sequence[str], env: dict[str, str] | None = None) -> CliResult:
    """Run the real CLI entry point in this process, capturing output and the exit code."""
    from upkeeper.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    old_env = dict(os.environ)
    if env:
        os.environ.update(env)
    sys.stdout, sys.stderr = out, err
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout, sys.stderr = old
        os.environ.clear()
        os.environ.update(old_env)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> Any:
    return invoke


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    yaml = YAML()
    yaml.default_flow_style = False
    with open(path, "w") as fh:
        yaml.dump(data, fh)
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Any:
    """Write a config dict (history defaults to a file in tmp_path) and return its path.

    The directories of its local storages inside tmp_path are made, as an admin would: upkeeper never creates a
    storage's directory (``storage_dirs=False`` leaves them missing)."""

    def make(data: dict[str, Any], name: str = "upkeeper.yaml", *, storage_dirs: bool = True) -> Path:
        data = {"history": str(tmp_path / "history.db"), **data}
        for st in (data.get("storages") or {}).values() if storage_dirs else ():
            path = Path(st["path"]) if isinstance(st, dict) and st.get("kind") == "local" else None
            if path is not None and path.is_absolute() and tmp_path in path.parents:
                path.mkdir(parents=True, exist_ok=True)
        return write_yaml(tmp_path / name, data)

    return make


@pytest.fixture(autouse=True)
def _isolate_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default history lives in the platform data dir: never the real one in tests."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture(autouse=True)
def _isolate_secrets() -> Iterator[None]:
    from upkeeper.redact import clear_secrets

    yield
    clear_secrets()
