"""app.maintenance and app.cleanup against a real running app: rotation loses no line while the app writes,
old files go, the live release stays, and a failing health check restarts the app once per cooldown."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops_support import checks, run_task
from upkeeper.core.task import MemoryState, Severity, Status
from upkeeper.sandbox.app import AppServer, seed_tree


@pytest.fixture
def app(services_dir: Path, request: pytest.FixtureRequest) -> Iterator[AppServer]:
    server = AppServer(Path(tempfile.mkdtemp(prefix="app-", dir=services_dir)), rate=3000)
    server.start()
    yield server
    server.stop()


def line_numbers(log_dir: Path) -> Counter[int]:
    """Every 'line N' in the live log and in every rotated (gzip or plain) copy."""
    seen: Counter[int] = Counter()
    for p in log_dir.iterdir():
        if not p.name.startswith("app.log"):
            continue
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for line in data.decode().splitlines():
            seen[int(line.rsplit(" ", 1)[1])] += 1
    return seen


def _last_line_number(app: AppServer) -> int:
    """The number of the last whole line in the live log (0 when none can be read)."""
    try:
        with open(app.log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 400))
            tail = fh.read()
        return int(tail[:tail.rfind(b"\n")].rsplit(b"\n", 1)[-1].rsplit(b" ", 1)[1])
    except (OSError, ValueError, IndexError):
        return 0


def assert_every_line_once(app: AppServer) -> int:
    # enough lines for the test to mean something, however slow a loaded machine makes the app
    wait_until(lambda: _last_line_number(app) > 1200)
    last = app.stop()
    seen = line_numbers(app.log.parent)
    assert last > 1000, "the app wrote too little for the test to mean anything"
    dupes = [n for n, c in seen.items() if c > 1]
    missing = sorted(set(range(1, last + 1)) - set(seen))
    assert not dupes, f"duplicated lines: {dupes[:10]}"
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:10]}"
    assert max(seen) == last
    return last


@pytest.mark.parametrize("method", ["copytruncate", "reopen"])
def test_rotation_loses_no_line_while_the_app_writes(app: AppServer, method: str) -> None:
    target = app.target(reopen_signal="USR1", pid_file=str(app.pid_file)) if method == "reopen" else app.target()
    state = MemoryState()
    results = []
    for _ in range(5):
        time.sleep(0.25)
        results.append(run_task("app.cleanup", target, {"rotate_size": 1, "rotate_method": method}, state=state))
    time.sleep(0.2)  # the app keeps writing into the fresh log
    assert all(r.final_status is Status.OK for r in results), [r.findings for r in results]
    assert all(r.metrics["rotated_logs"] == 1 for r in results)
    rotated = sorted(app.log.parent.glob("app.log.*"))
    assert len(rotated) == 5 and all(p.suffix == ".gz" for p in rotated)  # compressed, nothing partial left
    last = assert_every_line_once(app)
    assert app.log.stat().st_size > 0 and last > 0


def test_an_app_that_does_not_reopen_keeps_its_lines_and_is_compressed_later(app: AppServer) -> None:
    target = app.target(reopen_command=["true"])  # a reopen that does nothing: the app keeps the old file
    state = MemoryState()
    time.sleep(0.3)
    res = run_task("app.cleanup", target, {"rotate_size": 1, "reopen_wait": "0.3s"}, state=state)
    note = checks(res)["app.rotate_note"][0]
    assert note.severity is Severity.WARNING and "still writes" in note.message
    pending = [p for p in app.log.parent.glob("app.log.*") if p.suffix != ".gz"]
    assert len(pending) == 1
    last = app.stop()
    # the next run compresses the copy the app has now let go of
    res = run_task("app.cleanup", target, {"rotate_size": 1}, state=state)
    assert not [p for p in app.log.parent.glob("app.log.*") if p.suffix != ".gz"]
    assert any(a["action"] == "compress" for a in res.artifacts[0]["actions"])
    seen = line_numbers(app.log.parent)
    assert sorted(seen) == list(range(1, last + 1)) and set(seen.values()) == {1}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    seed_tree(root)
    (root / "logs" / "app.log").write_text("live\n")
    return root


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``cond`` until it holds (a process started, a line written); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _target(root: Path, **kw: object) -> dict[str, object]:
    return {"kind": "app", "root": str(root), "releases_dir": "releases", **kw}


def test_cleanup_prunes_logs_temp_and_releases_but_not_caches(tree: Path) -> None:
    releases = sorted(p.name for p in (tree / "releases").iterdir())
    dry = run_task("app.cleanup", _target(tree), dry_run=True)
    assert dry.summary.startswith("dry run")
    assert len(list((tree / "logs").iterdir())) == 6 and len(list((tree / "releases").iterdir())) == 8
    planned = {a["path"] for a in dry.artifacts[0]["actions"] if a["action"] == "remove"}

    res = run_task("app.cleanup", _target(tree))
    assert res.final_status is Status.OK, res.findings
    removed = {a["path"] for a in res.artifacts[0]["actions"] if a["action"] == "remove"}
    assert removed == planned  # the dry run told the truth
    # rotated logs older than 30 days are gone; the live log and the recent ones stay
    assert sorted(p.name for p in (tree / "logs").iterdir()) == ["app.log", "app.log.1.gz", "app.log.2.gz"]
    # temp files unused for a day are gone, fresh ones stay
    assert sorted(p.name for p in (tree / "tmp").iterdir()) == ["upload-4.part", "upload-5.part"]
    # the newest five releases stay, and 'current' still resolves
    assert sorted(p.name for p in (tree / "releases").iterdir()) == releases[-5:]
    assert (tree / "current").resolve().name == releases[-1]
    # build caches are app.maintenance's business
    assert len(list((tree / ".next" / "cache" / "images").iterdir())) == 12
    assert res.metrics["releases_kept"] == 5 and res.metrics["freed_bytes"] > 0


def test_maintenance_clears_old_caches_and_keeps_a_rolled_back_live_release(tree: Path) -> None:
    releases = sorted(p.name for p in (tree / "releases").iterdir())
    (tree / "current").unlink()
    (tree / "current").symlink_to(tree / "releases" / releases[0])  # rolled back to the oldest release
    res = run_task("app.maintenance", _target(tree), {"health_check": False})
    assert res.final_status is Status.OK, res.findings
    assert len(list((tree / ".next" / "cache" / "images").iterdir())) == 6  # the stale half is gone
    assert res.metrics["cache_removed"] == 6
    left = sorted(p.name for p in (tree / "releases").iterdir())
    assert left == [releases[0], *releases[-5:]]
    assert "live: " + releases[0] in res.summary


def test_unsafe_directories_are_refused(tree: Path) -> None:
    # real system directories, so only ever as a dry run: a regression must not prune them (the old code, run
    # for real to see this test fail, deleted every file older than a day in /opt, /var/cache and /run of the
    # development machine)
    system = ["/etc", "/var/tmp", "/var/www", "/srv", "/opt", "/var/cache", "/run"]  # every program's files
    res = run_task("app.cleanup", _target(tree, temp_dirs=[".", *system], releases_dir=None), dry_run=True)
    unsafe = {f.subject for f in checks(res)["app.unsafe_path"]}
    assert unsafe == {str(tree / "."), *system}
    assert not [a for a in res.metrics if a.startswith("temp_removed") and res.metrics[a]], res.metrics
    assert (tree / "server.js").exists() or (tree / "releases").exists()


def test_commands_run_as_argv_and_a_failing_one_is_reported(tree: Path) -> None:
    cmds = [[sys.executable, "-c", "open('ran-1', 'w').write('ok')"], ["false"],
            [sys.executable, "-c", "open('ran-2', 'w').write('ok')"]]
    res = run_task("app.maintenance", _target(tree), {"commands": cmds, "health_check": False})
    assert (tree / "ran-1").exists() and (tree / "ran-2").exists()
    f = checks(res)["app.command_failed"][0]
    assert f.subject == "false" and "exited with code 1" in f.message
    assert res.metrics["commands_failed"] == 1 and res.metrics["cache_removed"] == 6  # the other steps ran


def test_failed_health_check_restarts_once_per_cooldown(app: AppServer, tmp_path: Path) -> None:
    marker = tmp_path / "restarts"
    unhealthy = app.root / "UNHEALTHY"
    restart = [sys.executable, "-c",
               "import pathlib, sys; pathlib.Path(sys.argv[1]).unlink(missing_ok=True); "
               "open(sys.argv[2], 'a').write('restart\\n')", str(unhealthy), str(marker)]
    target = app.target(restart_command=restart)
    opts = {"rotate": False, "restart_wait": "5s"}
    state = MemoryState()
    now = datetime.now(UTC)

    res = run_task("app.maintenance", target, opts, state=state, clock=lambda: now)
    assert res.metrics["healthy"] == 1.0 and not marker.exists()  # healthy: no restart

    unhealthy.touch()
    res = run_task("app.maintenance", target, opts, state=state, clock=lambda: now)
    f = checks(res)["app.restarted"][0]
    assert f.severity is Severity.WARNING and "503" in f.message
    assert marker.read_text() == "restart\n" and res.metrics["healthy"] == 1.0
    assert state.get("restarts")[-1]["ok"] is True  # recorded

    unhealthy.touch()  # fails again ten minutes later: inside the cooldown, reported but not restarted
    later = now + timedelta(minutes=10)
    res = run_task("app.maintenance", target, opts, state=state, clock=lambda: later)
    f = checks(res)["app.unhealthy"][0]
    assert f.severity is Severity.CRITICAL and "cooldown" in f.message
    assert marker.read_text() == "restart\n" and res.final_status is Status.FAIL

    much_later = now + timedelta(hours=1)
    res = run_task("app.maintenance", target, opts, state=state, clock=lambda: much_later)
    assert "app.restarted" in checks(res) and marker.read_text() == "restart\n" * 2


def test_unhealthy_without_restart_command_and_missing_root(app: AppServer, tmp_path: Path) -> None:
    (app.root / "UNHEALTHY").touch()
    res = run_task("app.maintenance", app.target(), {"rotate": False})
    f = checks(res)["app.unhealthy"][0]
    assert f.severity is Severity.CRITICAL and "restart_command" in f.remediation
    res = run_task("app.cleanup", {"kind": "app", "root": str(tmp_path / "nope")})
    assert checks(res)["app.root_missing"][0].severity is Severity.CRITICAL


def test_target_validation() -> None:
    from pydantic import TypeAdapter, ValidationError

    from upkeeper.config.targets import TargetConfig

    ta: TypeAdapter[object] = TypeAdapter(TargetConfig)
    with pytest.raises(ValidationError, match="unknown signal"):
        ta.validate_python({"kind": "app", "root": "/srv/a", "reopen_signal": "USR9"})
    for stopping in ("TERM", "SIGKILL", "int", "STOP", "QUIT"):  # sent at every rotation: would stop the app
        with pytest.raises(ValidationError, match="does not make a program reopen its logs"):
            ta.validate_python({"kind": "app", "root": "/srv/a", "reopen_signal": stopping})
    assert ta.validate_python({"kind": "app", "root": "/srv/a", "reopen_signal": "sighup"}).reopen_signal == "HUP"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="non-empty list"):
        ta.validate_python({"kind": "app", "root": "/srv/a", "restart_command": []})
    assert os.path.isabs(str(ta.validate_python({"kind": "app", "root": "/srv/a"}).path("logs")))  # type: ignore[attr-defined]


def test_commands_for_another_user_are_not_run_as_upkeepers_own() -> None:
    """Not root, upkeeper cannot switch to the target's user: its commands (pm2 flush, a reopen_command) ran as
    upkeeper's own user — against another PM2, on files it may not touch — and were reported ok. (The suite runs
    as root: the non-root cases are given the uid they would have.)"""
    from upkeeper.errors import ProcessError
    from upkeeper.tasks.app.maintenance import RUNUSER, as_app_user

    assert as_app_user(["pm2", "flush"], "www-data", euid=0) == [RUNUSER, "-u", "www-data", "--", "pm2", "flush"]
    assert as_app_user(["pm2", "flush"], "nobody", euid=65534) == ["pm2", "flush"]  # upkeeper runs as the app's user
    assert as_app_user(["pm2", "flush"], None, euid=65534) == ["pm2", "flush"]
    with pytest.raises(ProcessError, match="must run as the app's user www-data, and upkeeper runs as nobody"):
        as_app_user(["pm2", "flush"], "www-data", euid=65534)


def test_numbered_releases_are_ordered_as_numbers(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    for n in range(1, 13):  # build numbers: 10, 11 and 12 are the newest, though "10" < "9" as text
        (root / "releases" / str(n)).mkdir(parents=True)
        (root / "releases" / str(n) / "server.js").write_text(f"build {n}\n")
    (root / "current").symlink_to("releases/12")
    res = run_task("app.cleanup", _target(root, logs=[]))
    assert res.final_status is Status.OK, res.findings
    assert sorted(int(p.name) for p in (root / "releases").iterdir()) == [8, 9, 10, 11, 12]
    assert res.metrics["releases_kept"] == 5


@pytest.mark.parametrize("method", ["copytruncate", "reopen"])
def test_rotated_copies_keep_the_logs_mode_and_owner(tmp_path: Path, method: str) -> None:
    """A log only its owner and group may read (it holds customers' data, tokens) stays so once rotated."""
    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"secret line {n}\n" for n in range(1000)))
    log.chmod(0o640)
    owner = (1000, 1000) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(log, *owner)
    extra = {"reopen_command": ["true"]} if method == "reopen" else {}
    res = run_task("app.cleanup", _target(root, releases_dir=None, **extra),
                   {"rotate_size": 1, "rotate_method": method})
    assert res.final_status is Status.OK, res.findings
    (rotated,) = log.parent.glob("app.log.*")
    assert rotated.suffix == ".gz"
    st = rotated.stat()
    assert oct(st.st_mode & 0o7777) == oct(0o640), "the rotated copy is readable by more users than the log was"
    assert (st.st_uid, st.st_gid) == owner
    assert gzip.decompress(rotated.read_bytes()).decode().count("secret line") == 1000


def test_the_recreated_log_keeps_the_group_write_bit() -> None:
    """reopen: an app that writes its log through its group (0660) can open the fresh log after the reopen."""
    import shutil

    base = Path(tempfile.mkdtemp(prefix="app-mode-"))  # not under pytest's 0700 directory: other users reach it
    base.chmod(0o755)
    try:
        _recreated_log_keeps_the_group_write_bit(base / "shop")
    finally:
        shutil.rmtree(base)


def _recreated_log_keeps_the_group_write_bit(root: Path) -> None:
    import subprocess

    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    log.parent.chmod(0o755)
    log.write_text("before\n")
    log.chmod(0o660)
    if os.geteuid() == 0:
        os.chown(log, 1000, 1000)
    res = run_task("app.cleanup", _target(root, releases_dir=None, reopen_command=["true"]), {"rotate_size": 1})
    assert res.final_status is Status.OK, res.findings
    assert oct(log.stat().st_mode & 0o7777) == oct(0o660)
    if os.geteuid() == 0:  # another user of the app's group, as the app's workers may be
        assert (log.stat().st_uid, log.stat().st_gid) == (1000, 1000)
        subprocess.run(["tee", "-a", str(log)], input=b"after\n", user=1001, group=1000, extra_groups=[],
                       check=True, capture_output=True)
        assert log.read_text() == "after\n"


def test_reopen_signal_with_a_pid_file_relative_to_root(app: AppServer) -> None:
    """pid_file: app.pid is inside root, like every other relative path of the target."""
    target = app.target(reopen_signal="USR1", pid_file="app.pid")
    time.sleep(0.3)
    res = run_task("app.cleanup", target, {"rotate_size": 1, "reopen_wait": "1s"})
    assert res.final_status is Status.OK and res.metrics["rotated_logs"] == 1, res.findings
    wait_until(lambda: app.log.stat().st_size > 0)  # the app was told: it writes to the fresh log
    assert [p.suffix for p in app.log.parent.glob("app.log.*")] == [".gz"]
    assert_every_line_once(app)


@pytest.mark.parametrize("pid_text", ["", "not a pid\n", "stale"])
def test_a_bad_pid_file_renames_nothing(app: AppServer, pid_text: str) -> None:
    if pid_text == "stale":
        done = subprocess_pid_of_an_exited_process()
        pid_text = f"{done}\n"
    (app.root / "bad.pid").write_text(pid_text)
    time.sleep(0.6)
    res = run_task("app.cleanup", app.target(reopen_signal="USR1", pid_file="bad.pid"), {"rotate_size": 1})
    f = checks(res)["app.rotate_failed"][0]
    assert "no log rotated" in f.message and "bad.pid" in f.message
    assert not list(app.log.parent.glob("app.log.*"))  # the app's log was left where the app writes it
    time.sleep(0.2)
    assert_every_line_once(app)


def subprocess_pid_of_an_exited_process() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_writer_without_a_handler_for_the_reopen_signal_is_not_killed(app: AppServer) -> None:
    """Without pid_file, reopen_signal goes to every process writing the log: a second writer that has no
    handler for USR1 (a `tee`, a shell redirect) died of it at every rotation. Nothing is signalled then and the
    log is put back."""
    import subprocess

    with open(app.log, "ab") as fh:
        bystander = subprocess.Popen(["sleep", "60"], stdout=fh)  # holds the log open for writing, no USR1 handler
    try:
        time.sleep(0.3)
        res = run_task("app.cleanup", app.target(reopen_signal="USR1"), {"rotate_size": 1})
        f = checks(res)["app.rotate_failed"][0]
        assert f"sleep (pid {bystander.pid}) would be killed by SIGUSR1" in f.message, f.message
        assert "put back" in f.message
        assert bystander.poll() is None  # alive
        assert not list(app.log.parent.glob("app.log.*"))
        time.sleep(0.2)
        assert_every_line_once(app)
    finally:
        bystander.kill()
        bystander.wait()
    # one that ignores it (nohup, for HUP) would not reopen: it would write to the renamed log for ever
    with open(app.log, "ab") as fh:
        deaf = subprocess.Popen(["nohup", "sleep", "60"], stdout=fh, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        res = run_task("app.cleanup", app.target(reopen_signal="HUP"), {"rotate_size": 1})
        f = checks(res)["app.rotate_failed"][0]
        assert f"sleep (pid {deaf.pid}) ignores SIGHUP (started with nohup?)" in f.message, f.message
        assert deaf.poll() is None and not list(app.log.parent.glob("app.log.*"))
    finally:
        deaf.kill()
        deaf.wait()


def test_a_failing_reopen_command_puts_the_log_back(app: AppServer) -> None:
    time.sleep(0.3)
    res = run_task("app.cleanup", app.target(reopen_command=["false"]), {"rotate_size": 1})
    f = checks(res)["app.rotate_failed"][0]
    assert "the reopen failed" in f.message and "put back" in f.message, f.message
    assert not list(app.log.parent.glob("app.log.*"))
    size = app.log.stat().st_size
    wait_until(lambda: app.log.stat().st_size > size)  # the app still writes to app.log, not to a renamed copy
    assert_every_line_once(app)


def test_a_temp_dir_symlinked_out_of_the_app_is_refused(tree: Path, tmp_path: Path) -> None:
    """tmp -> another program's directory: its old files are not the app's temp files."""
    elsewhere = tmp_path / "var-lib-db"
    elsewhere.mkdir()
    data = elsewhere / "base.dat"
    data.write_text("another program's data\n")
    old = time.time() - 10 * 86400
    os.utime(data, (old, old))
    (tree / "scratch").symlink_to(elsewhere)
    (tree / "cache-link").symlink_to(tree / ".next" / "cache")  # a symlink that stays inside the app is fine
    res = run_task("app.maintenance", _target(tree, temp_dirs=["scratch"], caches=["cache-link"]),
                   {"health_check": False})
    f = checks(res)["app.unsafe_path"][0]
    assert f.subject == str(tree / "scratch") and "symlink" in f.message
    assert data.exists()
    assert res.metrics["cache_removed"] == 6


def test_copytruncate_that_cannot_finish_its_copy_keeps_the_log(tmp_path: Path) -> None:
    """The copy fails to complete (the disk fills up): the log must not have been truncated already.

    A real limit on the size of the files upkeeper writes (RLIMIT_FSIZE: writes beyond it fail with EFBIG, as on
    a full disk): the bulk of the copy fits, the end of the gzip stream does not.
    """
    import io
    import json
    import resource
    import subprocess
    import zlib

    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    data = "".join(f"2026-12-06T04:00:00 request {n} served in {n % 97} ms\n" for n in range(20000)).encode()
    log.write_bytes(data)
    st = log.stat()
    buf = io.BytesIO()  # what the copy holds once the bulk is written and flushed, before the end of the stream
    gz = gzip.GzipFile(filename=log.name, mode="wb", fileobj=buf, mtime=int(st.st_mtime), compresslevel=6)
    gz.write(data)
    gz.flush()
    limit = len(buf.getvalue())
    assert zlib.decompressobj(31).decompress(buf.getvalue()) == data
    script = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from ops_support import run_task; "
              "res = run_task('app.cleanup', {'kind': 'app', 'root': sys.argv[2]}, "
              "{'rotate_size': 1, 'rotate_method': 'copytruncate'}); "
              "print(json.dumps([f.message for f in res.findings]))")
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sys.path), str(root)], capture_output=True, text=True, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    messages = json.loads(out.stdout)
    assert any("could not rotate" in m for m in messages), messages
    complete = [p for p in log.parent.iterdir() if p.name.endswith(".gz")]
    kept = log.read_bytes() + b"".join(gzip.decompress(p.read_bytes()) for p in complete)
    assert kept == data, f"{len(data) - len(kept)} bytes of the log lost"
    assert not [p for p in log.parent.iterdir() if p.name.endswith(".partial")]  # no half copy left behind


def test_a_release_a_process_still_runs_from_is_kept(tree: Path) -> None:
    """An old worker (a graceful reload, a long job started before the deploy) runs in an old release."""
    import subprocess

    releases = sorted(p.name for p in (tree / "releases").iterdir())
    worker = subprocess.Popen(["sleep", "60"], cwd=tree / "releases" / releases[0])
    try:
        res = run_task("app.cleanup", _target(tree))
    finally:
        worker.kill()
        worker.wait()
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in (tree / "releases").iterdir()) == [releases[0], *releases[-5:]]
    assert f"{releases[0]} (pid {worker.pid})" in res.summary
    res = run_task("app.cleanup", _target(tree))  # once it has stopped, the release goes
    assert sorted(p.name for p in (tree / "releases").iterdir()) == releases[-5:]


def test_an_old_temp_file_a_process_still_writes_is_kept(tree: Path) -> None:
    """A stalled upload: untouched for days, but its writer still holds it open."""
    import subprocess

    upload = tree / "tmp" / "upload-0.part"
    before = upload.stat()
    with open(upload, "ab") as fh:
        writer = subprocess.Popen(["sleep", "60"], stdout=fh)
    os.utime(upload, (before.st_atime, before.st_mtime))  # three days old, as seeded
    try:
        res = run_task("app.cleanup", _target(tree, releases_dir=None))
    finally:
        writer.kill()
        writer.wait()
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in (tree / "tmp").iterdir()) == ["upload-0.part", "upload-4.part", "upload-5.part"]
    assert f"upload-0.part (pid {writer.pid})" in res.summary


def test_the_pid_file_of_a_running_server_is_kept_however_old(tree: Path) -> None:
    """tmp/pids/server.pid is written when the server starts and never touched again, nor held open: it was
    deleted as an old temp file a day later, leaving the server unmanageable (its stop/restart scripts, a pid_file
    reopen). A pid file of a process that is gone is old like any file."""
    import subprocess

    pids = tree / "tmp" / "pids"
    pids.mkdir()
    server = subprocess.Popen(["sleep", "60"])
    try:
        (pids / "server.pid").write_text(f"{server.pid}\n")
        (pids / "gone.pid").write_text("999999999\n")  # no such process
        (pids / "notes.pid").write_text("not a pid\n")
        old = time.time() - 3 * 86400
        for p in pids.iterdir():
            os.utime(p, (old, old))
        res = run_task("app.cleanup", _target(tree, releases_dir=None))
    finally:
        server.kill()
        server.wait()
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in pids.iterdir()) == ["server.pid"]
    assert f"server.pid (pid {server.pid})" in res.summary and "pid file of a running process" in res.summary


def test_reopen_rotation_whose_compression_fails_is_reported_as_rotated(tmp_path: Path) -> None:
    """gzip fails half-way (a real file-size limit: EFBIG, as on a full disk): the log was rotated all the same,
    its lines are in the uncompressed copy, no half .gz stays, and the pruning still runs."""
    import json
    import resource
    import subprocess

    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    data = os.urandom(200_000).hex().encode() + b"\n"  # compresses to ~half: far beyond the limit
    (logs / "app.log").write_bytes(data)
    leftover = logs / "app.log.20261101-000000"  # left uncompressed by an earlier run
    leftover.write_bytes(data)
    expired = logs / "app.log.7.gz"  # past log_max_age: the pruning must still remove it
    expired.write_bytes(gzip.compress(b"old\n"))
    old = time.time() - 60 * 86400
    os.utime(expired, (old, old))
    script = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from ops_support import run_task; "
              "res = run_task('app.cleanup', {'kind': 'app', 'root': sys.argv[2], 'reopen_command': ['true']}, "
              "{'rotate_size': 1}); "
              "print(json.dumps([[f.check, f.message] for f in res.findings] + [res.metrics['rotated_logs']]))")
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sys.path), str(root)], capture_output=True, text=True, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000)),
    )
    *findings, rotated = json.loads(out.stdout)
    checks_ = {c for c, _ in findings}
    assert rotated == 1 and checks_ == {"app.rotate_note"}, findings
    assert any("rotated to app.log." in m and "compressing it failed" in m for _, m in findings), findings
    assert any("could not compress app.log.20261101-000000" in m for _, m in findings), findings
    assert not expired.exists()
    names = sorted(p.name for p in logs.iterdir())
    assert not [n for n in names if n.endswith((".gz", ".partial"))], names
    assert (logs / "app.log").read_bytes() == b""
    assert sorted(p.read_bytes() for p in logs.iterdir() if p.name != "app.log") == [data, data]


def test_copytruncate_warns_about_a_writer_that_does_not_append(tmp_path: Path) -> None:
    """'node server.js > app.log': the writer keeps its offset after the truncation; the log fills with NULs."""
    import subprocess

    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    writer_code = ("import sys, time\n"
                   "for n in range(1, 100000):\n"
                   "    sys.stdout.write(f'line {n}\\n'); sys.stdout.flush(); time.sleep(0.001)\n")
    with open(log, "wb") as out:  # O_TRUNC, no O_APPEND: a shell's '>'
        writer = subprocess.Popen([sys.executable, "-c", writer_code], stdout=out)
    try:
        wait_until(lambda: log.stat().st_size > 0)  # the writer has started (slow on a loaded machine)
        res = run_task("app.cleanup", _target(root, releases_dir=None), {"rotate_size": 1})
        wait_until(lambda: log.stat().st_size > 0)  # it wrote again, at its old offset
        head = log.read_bytes()[:1]
    finally:
        writer.kill()
        writer.wait()
    note = checks(res)["app.rotate_note"][0]
    assert note.severity is Severity.WARNING and "O_APPEND" in note.message and str(writer.pid) in note.message
    assert head == b"\0"  # what the warning says


def test_each_thing_a_rotation_says_is_its_own_finding_with_its_own_remedy(tmp_path: Path) -> None:
    """copytruncate without the pause (information) of a log written without O_APPEND (a warning): both were
    one message whose severity and remedy were chosen by the words in it, so one of the two remedies was lost."""
    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    with open(log, "wb") as out:  # O_TRUNC, no O_APPEND: a shell's '>'
        writer = subprocess.Popen([sys.executable, "-c", "import sys, time\nprint('up', flush=True)\n"
                                   "time.sleep(60)"], stdout=out)
    try:
        wait_until(lambda: log.stat().st_size > 0)
        res = run_task("app.cleanup", _target(root, releases_dir=None),
                       {"rotate_size": 1, "rotate_method": "copytruncate", "copytruncate_freeze": False})
    finally:
        writer.kill()
        writer.wait()
    notes = sorted(((f.severity, f.message, f.remediation) for f in checks(res)["app.rotate_note"]),
                   key=lambda n: n[0] is Severity.INFO)
    assert len(notes) == 2, notes
    (sev1, msg1, fix1), (sev2, msg2, fix2) = notes
    assert sev1 is Severity.WARNING and "without O_APPEND" in msg1 and "append to its log" in fix1
    assert sev2 is Severity.INFO and msg2.startswith("copytruncate without pausing") and "copytruncate_freeze" in fix2


def test_a_health_url_no_client_can_fetch_is_refused_at_load(tree: Path) -> None:
    """'localhost:3000/health' failed every check as 'no answer', and each failure ran restart_command."""
    from pydantic import TypeAdapter, ValidationError

    from upkeeper.config.targets import TargetConfig
    from upkeeper.tasks.app.maintenance import MaintenanceOptions

    ta: TypeAdapter[object] = TypeAdapter(TargetConfig)
    for bad in ("localhost:3000/health", "http://[::1/health", "http://127.0.0.1:99999/health", "ftp://host/x",
                "http:///health"):
        with pytest.raises(ValidationError, match="health_url"):
            ta.validate_python({"kind": "app", "root": str(tree), "health_url": bad})
    for good in ("http://127.0.0.1:3000/health", "https://shop.example/health?deep=1", "http://[::1]:3000/"):
        ta.validate_python({"kind": "app", "root": str(tree), "health_url": good})
    with pytest.raises(ValidationError, match="non-empty list"):
        MaintenanceOptions.model_validate({"commands": [["pm2", "flush"], []]})


def test_a_log_that_is_a_symlink_is_reported_not_silently_skipped(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    (root / "logs").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "shop.log").write_text("line 1\n" * 1000)
    (root / "logs" / "app.log").symlink_to("../var/shop.log")
    res = run_task("app.cleanup", _target(root, releases_dir=None), {"rotate_size": 1})
    f = checks(res)["app.rotate_note"][0]
    assert f.severity is Severity.WARNING and "symlink" in f.message and "var/shop.log" in f.message
    assert (root / "var" / "shop.log").read_text() == "line 1\n" * 1000 and (root / "logs" / "app.log").is_symlink()
    # the file itself listed as well: rotated once, no note about the link
    res = run_task("app.cleanup", _target(root, releases_dir=None, logs=["logs/*.log", "var/*.log"]),
                   {"rotate_size": 1})
    assert "app.rotate_note" not in checks(res) and res.metrics["rotated_logs"] == 1


def _pid_namespaces_available() -> bool:
    import shutil
    import subprocess

    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _pid_namespaces_available(), reason="needs unshare/nsenter with PID namespaces (root)")
def test_copytruncate_says_so_when_a_writer_cannot_be_paused(tmp_path: Path) -> None:
    """The app is PID 1 of its container and upkeeper runs inside it (docker exec): SIGSTOP is ignored there.

    The run used to report a clean copytruncate with writers_paused_ms of 2000 and no word that the writer had
    never stopped.
    """
    import json
    import subprocess

    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    writer_code = ("import os, sys, time\n"
                   "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
                   "n = 0\n"
                   "while True:\n"
                   "    n += 1; os.write(fd, b'line %d\\n' % n); time.sleep(0.001)\n")
    container = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", writer_code,
                                  str(log)])
    try:
        deadline = time.monotonic() + 10
        init = ""
        while not init and time.monotonic() < deadline:
            time.sleep(0.05)
            init = Path(f"/proc/{container.pid}/task/{container.pid}/children").read_text().strip()
        wait_until(lambda: log.exists() and log.stat().st_size > 0)  # it writes (slow to start on a loaded machine)
        script = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from ops_support import run_task; "
                  "res = run_task('app.cleanup', {'kind': 'app', 'root': sys.argv[2]}, {'rotate_size': 1}); "
                  "print(json.dumps([[f.check, f.severity.value, f.message] for f in res.findings]))")
        out = subprocess.run(["nsenter", "-t", init, "--pid", "--mount", sys.executable, "-c", script,
                              json.dumps(sys.path), str(root)], capture_output=True, text=True, check=True)
    finally:
        if init:
            os.kill(int(init), 9)  # the namespace's init: only SIGKILL reaches it from here
        container.kill()
        container.wait()
    findings = json.loads(out.stdout)
    assert [(c, sev) for c, sev, _ in findings] == [("app.rotate_note", "warning")], findings
    assert "could not pause process 1" in findings[0][2] and "may be lost" in findings[0][2]


def test_retention_removes_only_rotated_files_not_links_or_directories(tmp_path: Path) -> None:
    """A dangling symlink named like a rotated copy ended the whole rotate step; a directory so named was
    rmtree'd by the retention."""
    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    (logs / "app.log").write_text("live\n")
    (logs / "app.log.1").symlink_to("/nonexistent")
    outside = tmp_path / "elsewhere.gz"
    outside.write_bytes(gzip.compress(b"not ours\n"))
    (logs / "app.log.2.gz").symlink_to(outside)
    (logs / "app.log.3").mkdir()
    (logs / "app.log.3" / "keep.txt").write_text("a directory, not a rotated log\n")
    (logs / "stray.partial").symlink_to("/nonexistent")
    (logs / "app.log.4.gz").write_bytes(gzip.compress(b"line 1\n"))
    res = run_task("app.cleanup", _target(root, releases_dir=None), {"keep_rotated": 0})
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in logs.iterdir()) == ["app.log", "app.log.1", "app.log.2.gz", "app.log.3",
                                                       "stray.partial"]
    assert (logs / "app.log.3" / "keep.txt").exists() and outside.exists()


def test_retention_keeps_a_rotated_copy_the_app_still_writes(tmp_path: Path) -> None:
    """logrotate renamed app.log to app.log.1 and the app has not reopened yet: its newest lines go to app.log.1.
    keep_rotated: 0 (or an old mtime) deleted it under the writer, and those lines with it."""
    import subprocess

    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    (logs / "app.log").write_text("")
    (logs / "app.log.1").write_text("line 1\n")
    (logs / "app.log.2").write_text("old\n")
    with open(logs / "app.log.1", "ab") as fh:
        writer = subprocess.Popen(["sleep", "60"], stdout=fh)
    try:
        res = run_task("app.cleanup", _target(root, releases_dir=None), {"keep_rotated": 0, "rotate": True})
    finally:
        writer.kill()
        writer.wait()
    assert sorted(p.name for p in logs.iterdir()) == ["app.log", "app.log.1"]  # app.log.2, written by none: gone
    f = checks(res)["app.rotate_note"]
    assert [x.subject for x in f] == [str(logs / "app.log.1")] and f"process {writer.pid} still writes" in f[0].message


def test_an_old_directory_emptied_by_the_pruning_goes_in_the_same_run(tmp_path: Path) -> None:
    """Deleting its files set the directory's mtime to now, so a directory of old files stayed, empty, until a
    run a temp_max_age later; the docs say the directories that became empty are removed."""
    root = tmp_path / "shop"
    old_dir = root / "tmp" / "uploads" / "session-1"
    old_dir.mkdir(parents=True)
    (old_dir / "a.part").write_text("x")
    (old_dir / "b.part").write_text("y")
    young = root / "tmp" / "uploads" / "session-2"
    young.mkdir()
    (young / "c.part").write_text("z")
    old = time.time() - 3 * 86400
    for p in (old_dir / "a.part", old_dir / "b.part", old_dir, young / "c.part"):
        os.utime(p, (old, old))
    res = run_task("app.cleanup", _target(root, releases_dir=None, temp_dirs=["tmp"]))
    assert res.final_status is Status.OK, res.findings
    assert not old_dir.exists()
    assert young.exists() and not (young / "c.part").exists()  # emptied now, but the directory itself is new


def test_stale_partial_copies_of_ours_are_removed_and_nobody_elses(tmp_path: Path) -> None:
    """A compression killed half-way leaves app.log.<stamp>.gz.partial: removed after an hour. Any other
    *.partial in the log directory (a download, another tool's upload) was removed with them."""
    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    (logs / "app.log").write_text("live\n")
    ours = [logs / "app.log.20261123-031500.gz.partial", logs / "app.log.1.gz.partial"]
    theirs = [logs / "backup-2026.tar.partial", logs / "report.pdf.partial", logs / "other.log.1.gz.partial"]
    old = time.time() - 2 * 3600
    for p in ours + theirs:
        p.write_bytes(b"\x1f\x8b half")
        os.utime(p, (old, old))
    res = run_task("app.cleanup", _target(root, releases_dir=None))
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in logs.iterdir()) == sorted(["app.log", *(p.name for p in theirs)])


def test_reopen_rotation_of_a_log_the_app_opens_for_each_line(tmp_path: Path) -> None:
    """PHP's error_log, a cron job's '>>': the app recreates the log between the rename and upkeeper's create.

    About half of such rotations were reported 'could not rotate app.log: File exists' although the log had
    been renamed.
    """
    import subprocess

    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    writer_code = ("import os, sys\n"
                   "n = 0\n"
                   "while True:\n"
                   "    n += 1\n"
                   "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
                   "    os.write(fd, b'line %d\\n' % n)\n"
                   "    os.close(fd)\n")
    writer = subprocess.Popen([sys.executable, "-c", writer_code, str(log)])
    state = MemoryState()
    results = []
    try:
        time.sleep(0.3)
        for _ in range(10):
            results.append(run_task("app.cleanup", _target(root, releases_dir=None, reopen_command=["true"]),
                                    {"rotate_size": 1, "reopen_wait": "1s"}, state=state))
            time.sleep(0.05)
    finally:
        writer.terminate()
        writer.wait()
    assert not [f.message for r in results for f in r.findings], [f.message for r in results for f in r.findings]
    assert sum(r.metrics["rotated_logs"] for r in results) == 10
    seen = line_numbers(log.parent)  # every line up to the last one written, each once
    assert sorted(seen) == list(range(1, max(seen) + 1)) and set(seen.values()) == {1}


@pytest.mark.parametrize("current", ["missing", "elsewhere"])
def test_no_release_is_pruned_when_the_live_one_cannot_be_told(tree: Path, current: str) -> None:
    """current_link misnamed (the deploy tool calls it 'live'): the live release, rolled back to the oldest,
    was deleted with the other old ones."""
    releases = sorted(p.name for p in (tree / "releases").iterdir())
    (tree / "current").unlink()
    (tree / "live").symlink_to(tree / "releases" / releases[0])  # the real pointer, under another name
    if current == "elsewhere":
        (tree / "current").symlink_to(tree / "tmp")
    res = run_task("app.cleanup", _target(tree))
    f = checks(res)["app.release_unknown"][0]
    assert f.severity is Severity.WARNING and "no release pruned" in f.message
    assert sorted(p.name for p in (tree / "releases").iterdir()) == releases
    res = run_task("app.cleanup", _target(tree, current_link="live"))
    assert sorted(p.name for p in (tree / "releases").iterdir()) == [releases[0], *releases[-5:]]


def test_a_dry_run_does_not_start_the_rotation_clock(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    log.write_text("small\n")
    state = MemoryState()
    t0 = datetime.now(UTC)
    dry = run_task("app.cleanup", _target(root, releases_dir=None), {"dry_run": True}, state=state, clock=lambda: t0)
    assert dry.metrics["rotated_logs"] == 0 and state.get("rotated_at") is None
    later = t0 + timedelta(days=2)  # the first real run: the log is seen for the first time, not rotated by age
    res = run_task("app.cleanup", _target(root, releases_dir=None), state=state, clock=lambda: later)
    assert res.metrics["rotated_logs"] == 0 and log.read_text() == "small\n"
    res = run_task("app.cleanup", _target(root, releases_dir=None), state=state, clock=lambda: later + timedelta(days=1))
    assert res.metrics["rotated_logs"] == 1


def test_temp_pruning_cannot_be_led_out_of_the_tree_by_a_swapped_directory(tree: Path, tmp_path: Path) -> None:
    """upkeeper prunes as root in a directory the app's user owns: that user can swap a subdirectory for a
    symlink between the listing and the deletion.  A path-based unlink then followed the link and deleted the
    files of the same names wherever it led (tmpreaper's old hole)."""
    import subprocess

    victim = tmp_path / "victim"  # another user's directory, or /etc
    victim.mkdir()
    sub = tree / "tmp" / "a"
    sub.mkdir()
    old = time.time() - 10 * 86400
    for n in range(1000):
        (victim / f"f{n}").write_text("not the app's\n")
        (sub / f"f{n}").write_text("an old temp file\n")
        os.utime(sub / f"f{n}", (old, old))
        os.utime(victim / f"f{n}", (old, old))  # as old as anything in /etc
    swapper_code = ("import os, sys, time\n"
                    "a, real, victim = sys.argv[1], sys.argv[1] + '.real', sys.argv[2]\n"
                    "while True:\n"
                    "    try:\n"
                    "        os.rename(a, real); os.symlink(victim, a); time.sleep(0.0005)\n"
                    "        os.unlink(a); os.rename(real, a); time.sleep(0.0005)\n"
                    "    except OSError:\n"
                    "        pass\n")
    swapper = subprocess.Popen([sys.executable, "-c", swapper_code, str(sub), str(victim)])
    try:
        time.sleep(0.2)
        for _ in range(5):
            run_task("app.cleanup", _target(tree, releases_dir=None))
    finally:
        swapper.kill()
        swapper.wait()
    left = len(list(victim.iterdir()))
    assert left == 1000, f"{1000 - left} files outside the temp directory deleted"


def test_a_file_that_cannot_be_removed_is_not_counted_as_removed(tree: Path) -> None:
    import shutil
    import subprocess

    stuck = tree / "tmp" / "upload-0.part"
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (root, a file system with attributes)")
    try:
        res = run_task("app.cleanup", _target(tree, releases_dir=None))
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert stuck.exists()
    assert checks(res)["app.remove_failed"][0].subject == str(stuck)
    assert res.metrics["temp_removed"] == 3 and res.metrics["temp_freed_bytes"] == 3 * 16 * 1024
    assert "removed 6 item(s)" in res.summary  # 3 temp files and the 3 rotated logs past 30 days, not the stuck one


def test_logrotates_hourly_dateext_copy_is_not_taken_for_a_live_log(tmp_path: Path) -> None:
    """logrotate with 'dateformat -%Y%m%d%H' and delaycompress leaves app.log-2026112303 uncompressed: with
    logs: ['logs/*'] it was rotated again as a log of its own (and pruned as a copy of app.log as well)."""
    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    (logs / "app.log").write_text("live\n")
    (logs / "app.log-2026112303").write_text("rotated by logrotate\n")
    res = run_task("app.cleanup", _target(root, releases_dir=None, logs=["logs/*"]), {"rotate_size": 1})
    assert res.metrics["logs"] == 1 and res.metrics["rotated_logs"] == 1
    assert (logs / "app.log-2026112303").read_text() == "rotated by logrotate\n"


@pytest.mark.parametrize("dateformat", ["-%Y-%m-%d", ".%Y-%m-%d", "-%Y%m%d%H%M%S", "_%Y%m%d"])
def test_logrotates_dateext_copy_of_any_dateformat_is_not_taken_for_a_live_log(tmp_path: Path,
                                                                             dateformat: str) -> None:
    """The real logrotate (dateext, delaycompress) with a dateformat other than -%Y%m%d[%H]: app.cleanup with
    logs: ['logs/*'] took its uncompressed copy (app.log-2026-12-07) for a log of its own and rotated it again
    (app.log-2026-12-07.20261207-040346.gz), which log analysis then read as another log: its lines counted
    twice."""
    import shutil

    binary = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(binary).exists():
        pytest.skip("logrotate is not installed (scripts/ensure-system-deps.sh installs it)")
    root = tmp_path / "shop"
    logs = root / "logs"
    logs.mkdir(parents=True)
    log = logs / "app.log"
    log.write_text("before the rotation\n")
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n rotate 5\n create\n dateext\n dateformat {dateformat}\n compress\n delaycompress\n}}\n")
    res = subprocess.run([binary, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    copy = next(p for p in logs.iterdir() if p.name != "app.log")
    log.write_text("live\n")
    result = run_task("app.cleanup", _target(root, releases_dir=None, logs=["logs/*"]), {"rotate_size": 1})
    assert result.metrics["logs"] == 1 and result.metrics["rotated_logs"] == 1, result.summary
    assert copy.read_text() == "before the rotation\n"
    assert sorted(p.name for p in logs.iterdir() if p.name.startswith(copy.name)) == [copy.name]


def test_a_pid_file_naming_another_program_is_not_signalled(app: AppServer) -> None:
    """The app died and came back without rewriting its pid file; the old number now belongs to another program,
    which reopen_signal: USR1 killed (USR1's default action) while the app was never told."""
    import subprocess

    other = subprocess.Popen(["sleep", "60"])
    try:
        (app.root / "old.pid").write_text(f"{other.pid}\n")
        time.sleep(0.6)
        res = run_task("app.cleanup", app.target(reopen_signal="USR1", pid_file="old.pid"), {"rotate_size": 1})
        assert other.poll() is None, "the other program was killed by the reopen signal"
    finally:
        other.kill()
        other.wait()
    f = checks(res)["app.rotate_failed"][0]
    assert "no log rotated" in f.message and f"process {other.pid} (sleep)" in f.message
    assert not list(app.log.parent.glob("app.log.*"))
    assert_every_line_once(app)


def test_a_health_url_that_redirects_does_not_restart_the_app(app: AppServer, tmp_path: Path) -> None:
    """http:// -> https://, a missing trailing slash: the app answers, the URL is wrong; each run restarted it."""
    marker = tmp_path / "restarts"
    restart = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('restart\\n')", str(marker)]
    target = {**app.target(restart_command=restart), "health_url": app.health_url.replace("/health", "/moved")}
    res = run_task("app.maintenance", target, {"rotate": False, "restart_wait": "2s"})
    assert not marker.exists(), "the app was restarted"
    f = checks(res)["app.health_redirect"][0]
    assert f.severity is Severity.WARNING and "HTTP 301" in f.message and "/health" in f.message
    assert "app.unhealthy" not in checks(res)


@pytest.mark.skipif(not _pid_namespaces_available(), reason="needs unshare/nsenter with PID namespaces (root)")
def test_reopen_signal_to_an_app_that_is_pid_1_of_its_container(tmp_path: Path) -> None:
    """Inside a container the app's pid file says 1: a real pid, which was refused as 'no process id'."""
    import json
    import subprocess

    root = tmp_path / "shop"
    (root / "logs").mkdir(parents=True)
    from upkeeper.sandbox._util import free_port

    container = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                                  "upkeeper.sandbox.app", str(root), str(free_port()), "2000"],
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    init = ""
    try:
        deadline = time.monotonic() + 20
        while not (root / "app.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        init = Path(f"/proc/{container.pid}/task/{container.pid}/children").read_text().strip()
        assert (root / "app.pid").read_text().strip() == "1"
        live = root / "logs" / "app.log"
        wait_until(lambda: live.exists() and live.stat().st_size > 0)
        script = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from ops_support import run_task; "
                  "res = run_task('app.cleanup', {'kind': 'app', 'root': sys.argv[2], 'reopen_signal': 'USR1', "
                  "'pid_file': 'app.pid'}, {'rotate_size': 1}); "
                  "print(json.dumps([[f.check, f.message] for f in res.findings] + [res.metrics['rotated_logs']]))")
        out = subprocess.run(["nsenter", "-t", init, "--pid", "--mount", sys.executable, "-c", script,
                              json.dumps(sys.path), str(root)], capture_output=True, text=True, check=True)
        *findings, rotated = json.loads(out.stdout)
        assert findings == [] and rotated == 1, findings
        wait_until(lambda: (root / "logs" / "app.log").stat().st_size > 0)  # it reopened: it writes to the fresh log
    finally:
        if init:
            os.kill(int(init), 9)
        container.kill()
        container.wait()
    assert [p.suffix for p in (root / "logs").glob("app.log.*")] == [".gz"]


@pytest.fixture
def container_view(tmp_path: Path) -> Iterator[Callable[[Path, str], tuple[subprocess.Popen[bytes], str]]]:
    """Starts a process in a mount namespace of its own that sees a directory bind-mounted at another path (a
    container given the app's directory) and runs a shell command there, ``$M`` the mount point: its /proc links
    name its own paths, not ours.  Returns (the process, the mount point); it is killed afterwards."""
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a mount namespace needs root and unshare(1)")
    started: list[subprocess.Popen[bytes]] = []

    def start(source: Path, command: str) -> tuple[subprocess.Popen[bytes], str]:
        mnt = tmp_path / f"container-view-{len(started)}"  # outside the app's tree, empty in our namespace
        mnt.mkdir()
        script = f'mount --bind "$1" "$2" && M="$2" && cd "$M" && {command}'
        started.append(subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                                         "sh", str(source), str(mnt)]))
        return started[-1], str(mnt)

    yield start
    for p in started:
        p.kill()
        p.wait()


def test_a_release_a_process_in_another_mount_namespace_runs_from_is_kept(
        tree: Path, container_view: Callable[[Path, str], tuple[subprocess.Popen[bytes], str]]) -> None:
    """A container running the old release through a bind mount names its working directory by the
    container's path: the path comparison missed it and the release it runs from was deleted."""
    releases = sorted(p.name for p in (tree / "releases").iterdir())
    worker, mnt = container_view(tree / "releases" / releases[0], "exec sleep 60")
    wait_until(lambda: _readlink(f"/proc/{worker.pid}/cwd") == mnt)
    res = run_task("app.cleanup", _target(tree))
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in (tree / "releases").iterdir()) == [releases[0], *releases[-5:]]
    assert f"{releases[0]} (pid {worker.pid})" in res.summary


def test_an_old_temp_file_a_process_in_another_mount_namespace_writes_is_kept(
        tree: Path, container_view: Callable[[Path, str], tuple[subprocess.Popen[bytes], str]]) -> None:
    """A stalled upload written by a container through a bind mount of the app's tmp directory."""
    upload = tree / "tmp" / "upload-0.part"
    before = upload.stat()
    writer, mnt = container_view(tree / "tmp", 'exec sleep 60 >> "$M/upload-0.part"')
    wait_until(lambda: _readlink(f"/proc/{writer.pid}/fd/1") == f"{mnt}/upload-0.part")
    os.utime(upload, (before.st_atime, before.st_mtime))  # three days old, as seeded
    res = run_task("app.cleanup", _target(tree, releases_dir=None))
    assert res.final_status is Status.OK, res.findings
    assert sorted(p.name for p in (tree / "tmp").iterdir()) == ["upload-0.part", "upload-4.part", "upload-5.part"]
    assert f"upload-0.part (pid {writer.pid})" in res.summary


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_a_log_written_from_another_mount_namespace_is_not_compressed_under_its_writer(
        tmp_path: Path, container_view: Callable[[Path, str], tuple[subprocess.Popen[bytes], str]]) -> None:
    """A container appends to the app's log through a bind mount of the logs directory.  Its descriptor reads
    as the container's path, so the writer was not seen: after the rename and the reopen signal the rotated file
    was compressed and deleted at once while the container still wrote to it, and its next lines were lost.  Now
    the writer is found by what its descriptor is, and the rotated file waits for it to let go."""
    from upkeeper.tasks.app._rotate import reopen_rotate, writers_of

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("before the rotation\n")
    writer, mnt = container_view(logs, 'exec sleep 60 >> "$M/app.log"')
    wait_until(lambda: _readlink(f"/proc/{writer.pid}/fd/1") == f"{mnt}/app.log")
    assert writers_of(log) == [writer.pid]
    dest = logs / "app.log.1"
    rotated, size, notes = reopen_rotate(log, dest, reopen=lambda pids: None, compress=True, wait_s=0.3)
    assert rotated == dest and dest.exists() and size == len("before the rotation\n")
    assert len(notes) == 1 and "still writes to app.log.1" in notes[0].text and notes[0].warning
    assert writers_of(dest) == [writer.pid]


@pytest.mark.parametrize("saved", [5, "x", [1], {"LOG": "x"}, {"LOG": [1]}, {"LOG": None}])
def test_a_damaged_rotation_clock_starts_again(tmp_path: Path, saved: Any) -> None:
    """The 'rotated_at' state read back from history (another version's, or damaged) crashed log rotation at every
    run ('dict' of an int, float - 'str'): no log was rotated, for ever.  What cannot be used is dropped: the age
    clock of that log starts again, as for a log seen for the first time."""
    root = tmp_path / "shop"
    log = root / "logs" / "app.log"
    log.parent.mkdir(parents=True)
    log.write_text("small\n")
    state = MemoryState()
    state.set("rotated_at", {str(log) if k == "LOG" else k: v for k, v in saved.items()}
              if isinstance(saved, dict) else saved)
    t0 = datetime.now(UTC)
    res = run_task("app.cleanup", _target(root, releases_dir=None), state=state, clock=lambda: t0)
    assert res.metrics["rotated_logs"] == 0 and not [f for f in res.findings if "failed" in f.message]
    assert state.get("rotated_at") == {str(log): t0.timestamp()}  # first seen now
    res = run_task("app.cleanup", _target(root, releases_dir=None), state=state, clock=lambda: t0 + timedelta(days=2))
    assert res.metrics["rotated_logs"] == 1  # by age, from then


@pytest.mark.parametrize("saved", [5, ["x"], [{"at": "x"}], [{"ok": True}], {"at": 1}])
def test_a_damaged_restart_record_does_not_stop_the_restart(app: AppServer, tmp_path: Path, saved: Any) -> None:
    """A 'restarts' state that is not a list of restarts with their time (another version's, or damaged) crashed
    app.maintenance exactly when the app was down: no restart, at every run.  Now unusable records are dropped."""
    marker = tmp_path / "restarts"
    unhealthy = app.root / "UNHEALTHY"
    restart = [sys.executable, "-c",
               "import pathlib, sys; pathlib.Path(sys.argv[1]).unlink(missing_ok=True); "
               "open(sys.argv[2], 'a').write('restart\\n')", str(unhealthy), str(marker)]
    state = MemoryState()
    state.set("restarts", saved)
    unhealthy.touch()
    try:
        res = run_task("app.maintenance", app.target(restart_command=restart), {"rotate": False, "restart_wait": "5s"},
                       state=state)
    finally:
        unhealthy.unlink(missing_ok=True)
    assert "app.restarted" in checks(res) and marker.read_text() == "restart\n"
    assert [r["ok"] for r in state.get("restarts")] == [True]


HANDLES_USR1 = ("import signal, sys\n"
                "signal.signal(signal.SIGUSR1, lambda *_: print('signalled', flush=True))\n"
                "print('ready', flush=True)\n"
                "sys.stdin.readline()\n")  # until told to end (after any signal sent before: PEP 475)


def _handles_usr1() -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HANDLES_USR1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def _signals_seen(p: subprocess.Popen[str]) -> str:
    out, _ = p.communicate("end\n", timeout=60)
    return out


def test_a_pid_file_older_than_its_process_is_not_signalled_when_nobody_writes_the_logs(tmp_path: Path) -> None:
    """An app that opens its log for each line (PHP, a cron job's '>>') or is stopped has no process holding its
    logs, so nothing told its pid file's process from another program's: the app died days ago, its number went
    to another program since, and reopen_signal went to that program (USR1: Node starts its inspector; one
    without a handler was spared, it would die).  A process that started after the pid file was last written
    cannot be the one that wrote it: not signalled, nothing renamed."""
    root = tmp_path / "shop"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "app.log").write_text("a line\n" * 100)
    pid_file = root / "app.pid"
    target = _target(root, releases_dir=None, reopen_signal="USR1", pid_file="app.pid")
    other = _handles_usr1()
    try:
        pid_file.write_text(f"{other.pid}\n")
        days_ago = time.time() - 3 * 86400  # written by the app, days ago: before the other program started
        os.utime(pid_file, (days_ago, days_ago))
        res = run_task("app.cleanup", target, {"rotate_size": 1, "reopen_wait": "1s"})
    finally:
        seen = _signals_seen(other)
    assert seen == "", "the other program got the reopen signal"
    (f,) = checks(res)["app.rotate_failed"]
    assert "no log rotated" in f.message and f"pid {other.pid} now belongs to another process ('python" in f.message
    assert "Not signalled" in f.message
    assert sorted(p.name for p in (root / "logs").iterdir()) == ["app.log"]  # left where the app writes it
    live = _handles_usr1()  # the same kind of process, with a pid file written after it started: its own
    try:
        pid_file.write_text(f"{live.pid}\n")
        res = run_task("app.cleanup", target, {"rotate_size": 1, "reopen_wait": "1s"})
    finally:
        seen = _signals_seen(live)
    assert seen == "signalled\n"  # as configured
    assert "app.rotate_failed" not in checks(res), res.findings
