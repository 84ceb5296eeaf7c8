"""``backups copy`` and ``backups rekey`` write sets as a backup run does, and hold the same lease while they do
(:data:`upkeeper.backup.manifest.LEASE`): a prune — another node's, a backup run's retention pass — that lists
one of their sets before its manifest.json is written never takes it for an idle leftover, on local, S3
(SeaweedFS) and SFTP storages alike.  Without the lease, a prune whose listing saw the set without its manifest
deleted it once complete: the copy said 'copied' of a set gone, and rekey deleted the original after it — both
copies of the backup gone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services import sftp_storage_config
from upkeeper.backup.copy import COPIED, PRESENT, copy_set
from upkeeper.backup.crypto import Encryption
from upkeeper.backup.manifest import LEASE, MANIFEST, set_prefix
from upkeeper.backup.prune import index_sets, prune_series
from upkeeper.backup.rekey import REKEYED, OldKey, rekey_set
from upkeeper.backup.sets import SetWriter, open_env
from upkeeper.config.backup import RetentionPolicy
from upkeeper.config.loader import load_text
from upkeeper.storage import Storage, open_storage

from .conftest import AgeKey

T = TypeVar("T")
KEEP_ALL = RetentionPolicy(keep_last=-1)
PAUSE = 0.6  # seconds a writer waits before its manifest: the prune lists the set meanwhile


@pytest.fixture(params=["local", "s3", "sftp"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A storages: entry of each real backend, fresh and empty."""
    if request.param == "local":
        (tmp_path / "dest").mkdir()
        return {"kind": "local", "path": str(tmp_path / "dest"), "fsync": False}
    if request.param == "s3":
        cfg: dict[str, Any] = request.getfixturevalue("s3_server").storage_config(
            request.getfixturevalue("s3_bucket"), prefix="backups")
        return cfg
    out: dict[str, Any] = sftp_storage_config(request.getfixturevalue("sftp_server")).model_dump(
        mode="json", exclude_none=True)
    return out


def _config(tmp_path: Path, storages: dict[str, Any], age_key: AgeKey) -> Any:
    return load_text(json.dumps({"storages": storages, "backup": {
        "encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}}}))


def _write_set(config: Any, names: list[str]) -> str:
    """A small complete files set of target web, database app, on ``names``."""
    env = open_env(config, names, None)
    try:
        w = SetWriter(env, "files", "web", "app")
        for name in ("a.bin", "b.bin"):
            up = w.upload(name)
            up.write(os.urandom(20_000))
            w.add(up.finish())
        return w.commit({}).id
    finally:
        env.close()


def _set_to_copy(tmp_path: Path, dest: dict[str, Any], age_key: AgeKey, opened: list[Storage]
                 ) -> tuple[Any, str, Storage, Storage]:
    """(config, set id, source, destination): a set written on a local storage ``src``, and the storage ``dest``."""
    (tmp_path / "src").mkdir(exist_ok=True)
    config = _config(tmp_path, {"src": {"kind": "local", "path": str(tmp_path / "src"), "fsync": False},
                                "dest": dest}, age_key)
    bid = _write_set(config, ["src"])
    src, dst = (open_storage(n, config.storages[n]) for n in ("src", "dest"))
    opened += [src, dst]
    return config, bid, src, dst


def _complete(storage: Storage, bid: str) -> bool:
    return storage.stat(set_prefix("web", "app", bid) + MANIFEST) is not None


def _prune_listing_while_paused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, storage: Storage,
                                work: Callable[[], T]) -> T:
    """Run ``work`` (a copy, a rekey) in a thread, paused before its manifest; list the sets meanwhile, as a prune
    does at its start, and once ``work`` is done prune with that listing (a prune of many series deletes long after
    it listed), taking every incomplete set for idle (``incomplete_after`` 0).  Returns what ``work`` returned."""
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", f"before-manifest:{PAUSE}")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    out: list[T] = []
    t = threading.Thread(target=lambda: out.append(work()))
    t.start()
    deadline = time.monotonic() + 60
    while not (mark.exists() and "before-manifest" in mark.read_text()):
        assert t.is_alive() and time.monotonic() < deadline, "the writer never reached its manifest"
        time.sleep(0.02)
    errors: list[str] = []
    index = index_sets([storage], "web", "app", errors)
    assert index[("web", "app")].incomplete, "listed too late: the set was complete already"
    t.join()
    monkeypatch.delenv("UPKEEPER_FAULT_PAUSE")
    prune_series([storage], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
                 incomplete_after=timedelta(0), index=index)
    assert not errors
    return out[0]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[Storage]]:
    storages: list[Storage] = []
    yield storages
    for s in storages:
        s.close()


def test_a_prune_that_listed_a_copy_in_progress_leaves_the_copied_set(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    rep = _prune_listing_while_paused(monkeypatch, tmp_path, dest, lambda: copy_set(
        [src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False))
    assert rep.action == COPIED, rep
    assert _complete(dest, bid), "the copy said 'copied', and a prune deleted what it copied"
    assert dest.stat(set_prefix("web", "app", bid) + LEASE) is None  # released once the manifest is there


@pytest.mark.parametrize("store", ["local", "sftp"], indirect=True)
def test_a_prune_that_listed_a_rekey_in_progress_never_costs_the_backup(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    config = _config(tmp_path, {"dest": store}, age_key)
    bid = _write_set(config, ["dest"])
    storage = open_storage("dest", config.storages["dest"])
    opened.append(storage)
    new = _new_recipient(tmp_path)
    rep = _prune_listing_while_paused(monkeypatch, tmp_path, storage, lambda: rekey_set(
        [storage], "web", "app", bid, recorded_sha256=None, catalog_storages=["dest"],
        old_key=OldKey((str(age_key.identity),)), new=new, age="age", catalog=None))
    assert rep.action == REKEYED, rep
    assert rep.new_id is not None
    assert not _complete(storage, bid)  # rekey deleted the original, as it does once the new set is complete
    assert _complete(storage, rep.new_id), "a prune deleted the re-encrypted set, rekey the original: both gone"
    assert storage.stat(set_prefix("web", "app", rep.new_id) + LEASE) is None


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # (small objects: no multipart upload shows them)
def test_a_copy_that_resumes_a_killed_copy_keeps_its_set_through_a_prune_and_refreshes_its_lease(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """A killed copy left the set's first object on the destination, long idle; the next copy checks and keeps it,
    then streams the next one slowly.  A prune meanwhile (every incomplete set idle long enough:
    ``incomplete_after`` 0) leaves the set to the copy, which completes; its lease is refreshed as it works."""
    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    with src.open_read(prefix + "a.bin") as fh:  # what the killed copy left
        w = dest.open_write(prefix + "a.bin")
        w.write(fh.read())
        w.commit()
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", "during-upload:1")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(copy_set(
        [src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False,
        lease_refresh=timedelta(seconds=0.1))))
    t.start()
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert t.is_alive() and time.monotonic() < deadline, "the copy never streamed b.bin"
        time.sleep(0.02)
    report = prune_series([dest], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(0))
    refreshed = [_lease(dest, prefix)]
    time.sleep(0.3)
    refreshed.append(_lease(dest, prefix))
    t.join()
    assert report.incomplete_kept == [bid] and not report.incomplete_deleted, report
    assert out[0].action == COPIED and out[0].reused == 1, out[0]
    assert _complete(dest, bid)
    assert refreshed[0] is not None and refreshed[1] is not None and refreshed[1] > refreshed[0], refreshed
    assert dest.stat(prefix + LEASE) is None


def _lease(storage: Storage, prefix: str) -> str | None:
    """When the set's lease was last refreshed, as it says (None: no lease)."""
    if storage.stat(prefix + LEASE) is None:
        return None
    with storage.open_read(prefix + LEASE) as fh:
        return str(json.loads(fh.read())["refreshed_at"])


def _new_recipient(tmp_path: Path) -> Encryption:
    key = tmp_path / "new.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return Encryption("x25519", (subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                                                text=True).stdout.strip(),))


def test_a_copy_or_rekey_never_touches_a_set_another_host_is_writing(
        tmp_path: Path, age_key: AgeKey, opened: list[Storage]) -> None:
    """Two hosts that share a storage but not a history database (whose locks keep two copies, or two rekeys, of
    one backup apart) copy or rekey the same backup at once: the second finds the first's fresh lease and fails,
    leaving its objects alone — it deleted them (rekey: a stopped run's partial set, it thought), and the first,
    once it had written its manifest, deleted the original."""
    from upkeeper.backup.copy import FAILED as COPY_FAILED
    from upkeeper.backup.lease import writer_info
    from upkeeper.backup.rekey import FAILED as REKEY_FAILED
    from upkeeper.backup.rekey import rekeyed_id
    from upkeeper.storage.base import put_bytes

    for d in ("src", "dest"):
        (tmp_path / d).mkdir()
    config = _config(tmp_path, {n: {"kind": "local", "path": str(tmp_path / n), "fsync": False}
                                for n in ("src", "dest")}, age_key)
    bid = _write_set(config, ["src"])
    src, dest = (open_storage(n, config.storages[n]) for n in ("src", "dest"))
    opened += [src, dest]
    new = _new_recipient(tmp_path)
    elsewhere = {**writer_info("x", datetime.now(UTC), command="backups copy"), "host": "another-host"}
    for storage, prefix in ((dest, set_prefix("web", "app", bid)),
                            (src, set_prefix("web", "app", rekeyed_id(bid, new)))):
        put_bytes(storage, prefix + "a.bin", b"the other host's")
        put_bytes(storage, prefix + LEASE, json.dumps(elsewhere).encode())
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    assert rep.action == COPY_FAILED and "backups copy on another-host" in (rep.error or ""), rep
    rk = rekey_set([src], "web", "app", bid, recorded_sha256=None, catalog_storages=["src"],
                   old_key=OldKey((str(age_key.identity),)), new=new, age="age", catalog=None)
    assert rk.action == REKEY_FAILED and "backups copy on another-host" in (rk.error or ""), rk
    for storage, prefix in ((dest, set_prefix("web", "app", bid)),
                            (src, set_prefix("web", "app", rekeyed_id(bid, new)))):
        assert sorted(o.key.removeprefix(prefix) for o in storage.list(prefix)) == [LEASE, "a.bin"]
    assert _complete(src, bid)


@pytest.mark.parametrize("store", ["local", "sftp"], indirect=True)
def test_a_leftover_taken_up_again_after_the_prune_listed_it_is_not_deleted(
        tmp_path: Path, age_key: AgeKey, store: dict[str, Any], opened: list[Storage]) -> None:
    """A killed copy's leftover, its lease long stale, is listed by a prune as a leftover; before the prune gets to
    it (series after series), the copy is run again and completes it, reusing the objects.  The prune looks again
    just before it deletes — a manifest, or a fresh lease, there now — and leaves the set; it deleted the copy just
    completed, and a rekey run again over its stopped run's leftover lost both sets the same way."""
    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    for name in ("a.bin", "b.bin"):  # what the killed copy left (its lease stale, or gone)
        with src.open_read(prefix + name) as fh:
            w = dest.open_write(prefix + name)
            w.write(fh.read())
            w.commit()
    index = index_sets([dest], "web", "app")
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    assert rep.action == COPIED and rep.reused == 2, rep
    report = prune_series([dest], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(0), index=index)
    assert not report.incomplete_deleted and report.incomplete_kept == [bid], report
    assert _complete(dest, bid), "the copy said 'copied', and a prune deleted what it copied"
    # a leftover nothing took up again still goes
    other = _write_set(config, ["dest"])
    dest.delete(set_prefix("web", "app", other) + MANIFEST)
    report = prune_series([dest], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(0))
    assert report.incomplete_deleted == [other], report


CHILD_COPY = """
import json, sys, time
from pathlib import Path
from upkeeper.backup.copy import copy_set
from upkeeper.config.loader import load_text
from upkeeper.storage import open_storage
config = load_text(sys.argv[1])
src, dest = (open_storage(n, config.storages[n]) for n in ("src", "dest"))
src.stat("warm-up"), dest.stat("warm-up")  # connected before the race
print("ready", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
rep = copy_set([src], dest, "web", "app", sys.argv[2], recorded_sha256=None, allow_unencrypted_remote=False)
print(json.dumps({"action": rep.action, "error": rep.error}), flush=True)
"""


def _two_hosts_copy(tmp_path: Path, config_text: str, bid: str) -> list[dict[str, Any]]:
    """Two processes (two hosts sharing the destination but no history database) copy ``bid`` at the same instant,
    each pausing just before it takes the set's lease (``lease-take``): both looked, found it free, and go on."""
    go = tmp_path / "go"
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": "lease-take:0.5"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD_COPY, config_text, bid, str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [json.loads(out.strip().splitlines()[-1]) for out, _err in outs]


@pytest.mark.parametrize("lease_before", ["none", "dead writer's"])
def test_two_hosts_copying_one_backup_at_the_same_instant_one_writes_the_other_fails_naming_it(
        tmp_path: Path, age_key: AgeKey, store: dict[str, Any], opened: list[Storage], lease_before: str) -> None:
    """Taking the lease was a look then a write: two hosts that looked at the same instant (no lease, or the same
    stale one: a killed copy's, its process gone) both went on and wrote the same set at once.  Now exactly one
    takes it (an exclusive create, on local, S3 and SFTP alike) and copies; the other fails naming the holder."""
    from upkeeper.backup.copy import FAILED as COPY_FAILED
    from upkeeper.backup.lease import writer_info
    from upkeeper.storage.base import put_bytes

    config, bid, _src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    if lease_before != "none":  # a copy killed (kill -9) on this host: its process is gone, its lease is not
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        put_bytes(dest, prefix + LEASE, json.dumps({**writer_info(bid, datetime.now(UTC), command="backups copy"),
                                                    "pid": int(dead.stdout)}).encode())
    text = json.dumps({"storages": {"src": {"kind": "local", "path": str(tmp_path / "src"), "fsync": False},
                                    "dest": store}})
    reports = _two_hosts_copy(tmp_path, text, bid)
    assert [r["action"] for r in reports].count(COPIED) == 1, f"both wrote the set: {reports}"
    [won] = [r for r in reports if r["action"] == COPIED]
    [other] = [r for r in reports if r is not won]
    # the loser finds the winner's lease, or (S3 may refuse a create racing another's before that one shows) takes
    # the lease once the winner is done and finds the set complete
    if other["action"] == COPY_FAILED:
        assert "is being written to dest by backups copy on" in other["error"] and "since" in other["error"], other
    else:
        assert other["action"] == PRESENT, reports
    assert _complete(dest, bid)
    assert dest.stat(prefix + LEASE) is None
    assert sorted(o.key.removeprefix(prefix) for o in dest.list(prefix)) == ["a.bin", "b.bin", MANIFEST]


def _leftover_being_pruned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dest: Storage, prefix: str,
                           objects: dict[str, bytes], point: str = "prune-leftover-deleting",
                           pause: float = 1.5) -> tuple[threading.Thread, list[Any]]:
    """``objects`` under ``prefix`` on ``dest`` (what a killed writer left), and a prune in a thread, paused at
    ``point`` while it holds the leftover's lease (every incomplete set idle: ``incomplete_after`` 0)."""
    from upkeeper.storage.base import put_bytes

    for name, data in objects.items():
        put_bytes(dest, prefix + name, data)
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", f"{point}:{pause}")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    reports: list[Any] = []
    t = threading.Thread(target=lambda: reports.append(prune_series(
        [dest], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
        incomplete_after=timedelta(0))))
    t.start()
    deadline = time.monotonic() + 60
    while not (mark.exists() and point in mark.read_text()):
        assert t.is_alive() and time.monotonic() < deadline, "the prune never got to the leftover"
        time.sleep(0.02)
    monkeypatch.delenv("UPKEEPER_FAULT_PAUSE")
    return t, reports


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_copy_run_again_over_a_leftover_a_prune_is_deleting_waits_for_the_prune_then_copies(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """A prune looked at a leftover once more (no lease, no manifest) and deletes it, holding its lease meanwhile (a
    copy that took the lease then would complete a set the prune deletes).  A copy run again over it at that moment
    failed at once naming the prune — for a lease held only the seconds of the deletion, a failed copy an operator
    had to run again.  Now it waits for the prune (up to PRUNE_WAIT), then copies the whole set afresh."""
    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    left = {name: _read(src, prefix + name) for name in ("a.bin", "b.bin")}  # what a killed copy left
    t, reports = _leftover_being_pruned(monkeypatch, tmp_path, dest, prefix, left)
    said: list[str] = []
    started = time.monotonic()
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False,
                   progress=said.append)
    waited = time.monotonic() - started
    t.join()
    assert rep.action == COPIED, rep
    assert reports[0].incomplete_deleted == [bid], reports[0]  # the prune deleted the leftover, then the copy wrote
    assert rep.objects == 2 and rep.reused == 0, rep
    assert _complete(dest, bid) and dest.stat(prefix + LEASE) is None
    assert waited >= 0.5, waited
    assert any("waiting (up to 30 s) for a prune deleting it as a leftover on" in m for m in said), said


def test_a_rekey_run_again_over_its_leftover_a_prune_is_deleting_waits_for_the_prune(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, opened: list[Storage]) -> None:
    from upkeeper.backup.rekey import rekeyed_id

    (tmp_path / "dest").mkdir()
    config = _config(tmp_path, {"dest": {"kind": "local", "path": str(tmp_path / "dest"), "fsync": False}}, age_key)
    bid = _write_set(config, ["dest"])
    storage = open_storage("dest", config.storages["dest"])
    opened.append(storage)
    new = _new_recipient(tmp_path)
    new_prefix = set_prefix("web", "app", rekeyed_id(bid, new))
    t, reports = _leftover_being_pruned(monkeypatch, tmp_path, storage, new_prefix, {"a.bin": b"a stopped rekey's"})
    rep = rekey_set([storage], "web", "app", bid, recorded_sha256=None, catalog_storages=["dest"],
                    old_key=OldKey((str(age_key.identity),)), new=new, age="age", catalog=None)
    t.join()
    assert rep.action == REKEYED, rep
    assert reports[0].incomplete_deleted == [rekeyed_id(bid, new)], reports[0]
    assert rep.new_id is not None and _complete(storage, rep.new_id) and not _complete(storage, bid)


def test_a_copy_gives_up_on_a_prune_that_holds_the_lease_longer_and_never_waits_for_another_writer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, opened: list[Storage]) -> None:
    """The wait is bounded: a prune still deleting after PRUNE_WAIT (a huge leftover) fails the copy naming it, as
    before.  Another writer's lease (a copy or rekey on another host) fails it at once, without waiting."""
    from upkeeper.backup import copy as copy_module
    from upkeeper.backup.copy import FAILED as COPY_FAILED
    from upkeeper.backup.lease import writer_info
    from upkeeper.storage.base import put_bytes

    (tmp_path / "dest").mkdir()
    config, bid, src, dest = _set_to_copy(tmp_path, {"kind": "local", "path": str(tmp_path / "dest"),
                                                     "fsync": False}, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    monkeypatch.setattr(copy_module, "PRUNE_WAIT", 0.5)
    t, reports = _leftover_being_pruned(monkeypatch, tmp_path, dest, prefix, {"a.bin": _read(src, prefix + "a.bin")},
                                        pause=3)
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    t.join()
    assert rep.action == COPY_FAILED, rep
    assert "a prune deleting it as a leftover on" in (rep.error or "") and "still there after 0.5 s" in (rep.error or "")
    assert reports[0].incomplete_deleted == [bid] and list(dest.list(prefix)) == []
    elsewhere = {**writer_info(bid, datetime.now(UTC), command="backups copy"), "host": "another-host"}
    put_bytes(dest, prefix + LEASE, json.dumps(elsewhere).encode())
    monkeypatch.setattr(copy_module, "PRUNE_WAIT", 4.0)  # a wait would be plain even on a loaded CI machine
    started = time.monotonic()
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    assert rep.action == COPY_FAILED and "backups copy on another-host" in (rep.error or ""), rep
    assert time.monotonic() - started < 2.0  # another writer's lease fails at once: no wait for it


def _read(storage: Storage, key: str) -> bytes:
    with storage.open_read(key) as fh:
        return fh.read()


def test_repairing_a_complete_set_takes_its_lease(tmp_path: Path, age_key: AgeKey, opened: list[Storage]) -> None:
    """``backups copy`` repairs a set complete on its destination (an object lost or damaged there) by writing the
    object again: it did so without a lease, beside another host writing the same set (its lease fresh).  Now it
    takes the lease, fails naming that writer, and, once it may, repairs under it and releases it."""
    from upkeeper.backup.copy import FAILED as COPY_FAILED
    from upkeeper.backup.copy import REPAIRED
    from upkeeper.backup.lease import writer_info
    from upkeeper.storage.base import get_bytes, put_bytes

    (tmp_path / "dest").mkdir()
    config, bid, src, dest = _set_to_copy(tmp_path, {"kind": "local", "path": str(tmp_path / "dest"),
                                                     "fsync": False}, age_key, opened)
    prefix = set_prefix("web", "app", bid)
    assert copy_set([src], dest, "web", "app", bid, recorded_sha256=None,
                    allow_unencrypted_remote=False).action == COPIED
    dest.delete(prefix + "b.bin")  # lost there
    elsewhere = {**writer_info(bid, datetime.now(UTC), command="backups copy"), "host": "another-host"}
    put_bytes(dest, prefix + LEASE, json.dumps(elsewhere).encode())
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    assert rep.action == COPY_FAILED and "backups copy on another-host" in (rep.error or ""), rep
    assert dest.stat(prefix + "b.bin") is None
    assert json.loads(get_bytes(dest, prefix + LEASE))["host"] == "another-host"  # left as it was
    dest.delete(prefix + LEASE)  # that writer is done
    rep = copy_set([src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False)
    assert rep.action == REPAIRED and rep.objects == 1, rep
    assert dest.stat(prefix + LEASE) is None and dest.stat(prefix + "b.bin") is not None


def test_a_writer_whose_lease_was_taken_over_does_not_commit_and_never_deletes_the_new_holders_lease(
        tmp_path: Path) -> None:
    """A lease not refreshed for LEASE_TTL (its storage unreachable that long) may be taken over; its writer's next
    refresh sees another's lease there and never writes over it; the writer refuses to commit, and its release
    leaves the other's lease alone."""
    from upkeeper.backup.lease import Lease, writer_info
    from upkeeper.errors import BackupError
    from upkeeper.storage.base import get_bytes, put_bytes

    (tmp_path / "s").mkdir()
    config = load_text(json.dumps({"storages": {"s": {"kind": "local", "path": str(tmp_path / "s"),
                                                      "fsync": False}}}))
    s = open_storage("s", config.storages["s"])
    lease = Lease.take([s], "web/app/x/", writer_info("x", datetime.now(UTC), command="backups copy"),
                       timedelta(seconds=0.05))
    other = json.dumps({**writer_info("x", datetime.now(UTC), command="backups rekey"), "host": "another-host",
                        "token": "theirs"}).encode()
    put_bytes(s, "web/app/x/" + LEASE, other)
    deadline = time.monotonic() + 10
    while lease.lost is None:
        assert time.monotonic() < deadline, "the refresh never noticed"
        time.sleep(0.02)
    assert "backups rekey on another-host" in lease.lost
    with pytest.raises(BackupError, match="taken over by backups rekey on another-host"):
        lease.check()
    lease.release()
    assert get_bytes(s, "web/app/x/" + LEASE) == other


CHILD_REKEY = """
import json, sys, time
from pathlib import Path
from upkeeper.backup.crypto import Encryption
from upkeeper.backup.rekey import OldKey, rekey_set
from upkeeper.config.loader import load_text
from upkeeper.storage import open_storage
config = load_text(sys.argv[1])
s = open_storage("dest", config.storages["dest"])
s.stat("warm-up")
print("ready", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
rep = rekey_set([s], "web", "app", sys.argv[2], recorded_sha256=None, catalog_storages=["dest"],
                old_key=OldKey((sys.argv[4],)), new=Encryption("x25519", (sys.argv[5],)), age="age", catalog=None)
print(json.dumps({"action": rep.action, "error": rep.error, "new_id": rep.new_id}), flush=True)
"""


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_two_hosts_rekeying_one_backup_at_the_same_instant_leave_one_readable_set(
        tmp_path: Path, age_key: AgeKey, store: dict[str, Any], opened: list[Storage]) -> None:
    """Two hosts re-encrypt the same backup for the same new recipient at the same instant (the new set's id is the
    same for both): both took the lease, both wrote the new set's objects (each its own encryption) and manifest,
    and both deleted the original.  Now one rekeys; the other fails, naming it, and touches nothing."""
    from upkeeper.backup.manifest import read_manifest
    from upkeeper.backup.rekey import FAILED as REKEY_FAILED

    text = json.dumps({"storages": {"dest": store}, "backup": {
        "encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}}})
    config = load_text(text)
    bid = _write_set(config, ["dest"])
    storage = open_storage("dest", config.storages["dest"])
    opened.append(storage)
    new = _new_recipient(tmp_path)
    go = tmp_path / "go"
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": "lease-take:0.5"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD_REKEY, text, bid, str(go), str(age_key.identity),
                               new.recipients[0]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _err in outs]
    assert sorted(r["action"] for r in reports) == sorted([REKEYED, REKEY_FAILED]), reports
    [done] = [r for r in reports if r["action"] == REKEYED]
    m = read_manifest(storage, set_prefix("web", "app", done["new_id"]))
    for rec in m.objects:  # the objects are the ones its manifest describes
        data = storage.open_read(set_prefix("web", "app", done["new_id"]) + rec.name)
        with data:
            assert hashlib.sha256(data.read()).hexdigest() == rec.sha256, rec.name


def test_a_stale_lease_is_taken_over_once_and_a_dead_takers_claim_goes_stale_too(tmp_path: Path) -> None:
    """A lease not refreshed for LEASE_TTL is taken over.  A taker that is taking it over right now (its claim, named
    after that very lease, is fresh) keeps others off; one that died in that instant (its claim as old as
    LEASE_TTL) does not keep the set forever."""
    from upkeeper.backup.lease import Lease, LeaseHeld, writer_info
    from upkeeper.backup.manifest import LEASE_TTL
    from upkeeper.storage.base import get_bytes, put_bytes

    root = tmp_path / "s"
    root.mkdir()
    s = open_storage("s", load_text(json.dumps({"storages": {"s": {"kind": "local", "path": str(root),
                                                                   "fsync": False}}})).storages["s"])
    prefix = "web/app/x/"
    old = json.dumps({**writer_info("x", datetime.now(UTC), command="backups copy"), "host": "gone-host"}).encode()
    put_bytes(s, prefix + LEASE, old)
    past = time.time() - LEASE_TTL.total_seconds() - 60
    os.utime(root / prefix / LEASE, (past, past))
    claim = prefix + LEASE + "." + hashlib.sha256(old).hexdigest()[:16] + ".takeover"
    put_bytes(s, claim, b"{}")  # another writer is taking it over right now
    with pytest.raises(LeaseHeld, match="another writer taking over the stale lease"):
        Lease.take([s], prefix, writer_info("x", datetime.now(UTC), command="backups copy"), None)
    assert get_bytes(s, prefix + LEASE) == old
    os.utime(root / claim, (past, past))  # ... and died doing it
    lease = Lease.take([s], prefix, writer_info("x", datetime.now(UTC), command="backups copy"), None)
    assert json.loads(get_bytes(s, prefix + LEASE))["token"] == lease.token
    assert sorted(o.key for o in s.list(prefix)) == [prefix + LEASE]  # the claims are gone
    lease.release()
    assert list(s.list()) == []


def _two_copied_one_damaged(tmp_path: Path, store: dict[str, Any], age_key: AgeKey, opened: list[Storage]
                            ) -> tuple[str, str, Storage, Storage]:
    """(old, new, source, destination): two sets copied to ``store``, the older one's b.bin damaged there (same
    size: retention still counts the copy, a read-back finds the damage)."""
    from upkeeper.storage.base import put_bytes

    config, old, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    new = _write_set(config, ["src"])
    for bid in (old, new):
        assert copy_set([src], dest, "web", "app", bid, recorded_sha256=None,
                        allow_unencrypted_remote=False).action == COPIED
    key = set_prefix("web", "app", old) + "b.bin"
    put_bytes(dest, key, bytes(len(_read(dest, key))))
    return old, new, src, dest


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_retention_never_deletes_a_set_a_copy_is_repairing_and_a_later_prune_does(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """``backups copy`` repairs a set complete on its destination under the set's lease; retention deleted complete
    sets without looking at it: the set went (manifest first) while the repair wrote, which then committed its
    object into a set no longer there — a leftover — and said 'repaired' (the catalog naming that storage).  Now
    retention takes the set's lease to delete it, and keeps a set another writer holds, saying so."""
    from upkeeper.backup.copy import REPAIRED

    old, new, src, dest = _two_copied_one_damaged(tmp_path, store, age_key, opened)
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", "during-upload:1.5")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(copy_set(
        [src], dest, "web", "app", old, recorded_sha256=None, allow_unencrypted_remote=False, check_present=True)))
    t.start()
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert t.is_alive() and time.monotonic() < deadline, "the repair never started"
        time.sleep(0.02)
    one = RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)  # a backup job pruning its own storage: the destination alone
    report = prune_series([dest], "web", "app", "files", one, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(hours=24))
    t.join()
    assert out[0].action == REPAIRED, out[0]
    kept = {d.item.id: d for d in report.decisions}
    assert kept[old].keep and not report.deleted, report
    assert any("being written by backups copy on" in r for r in kept[old].reasons), kept[old].reasons
    assert _complete(dest, old) and _complete(dest, new)
    monkeypatch.delenv("UPKEEPER_FAULT_PAUSE")
    report = prune_series([dest], "web", "app", "files", one, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(hours=24))
    assert report.deleted == [old], report
    assert list(dest.list(set_prefix("web", "app", old))) == []  # nothing left behind


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_repair_meeting_retention_deleting_the_set_waits_then_writes_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """The other order: retention holds the set's lease while it deletes it; a repair coming then waits for it, then
    finds the set gone and fails saying so, writing nothing (no leftover, no 'repaired' of a set gone)."""
    from upkeeper.backup.copy import FAILED as COPY_FAILED

    old, new, src, dest = _two_copied_one_damaged(tmp_path, store, age_key, opened)
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", "prune-set-deleting:1.5")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    reports: list[Any] = []
    t = threading.Thread(target=lambda: reports.append(prune_series(
        [dest], "web", "app", "files", RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0), default_tz="UTC", now=datetime.now(UTC),
        incomplete_after=timedelta(hours=24))))
    t.start()
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert t.is_alive() and time.monotonic() < deadline, "the prune never got to the set"
        time.sleep(0.02)
    monkeypatch.delenv("UPKEEPER_FAULT_PAUSE")
    rep = copy_set([src], dest, "web", "app", old, recorded_sha256=None, allow_unencrypted_remote=False,
                   check_present=True)
    t.join()
    assert reports[0].deleted == [old], reports[0]
    assert rep.action == COPY_FAILED and "was deleted from dest (by a prune?)" in (rep.error or ""), rep
    assert list(dest.list(set_prefix("web", "app", old))) == []
    assert _complete(dest, new)


def test_a_refresh_never_writes_over_a_lease_taken_over_after_it_looked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: dict[str, Any], opened: list[Storage]) -> None:
    """A refresh looked (its own lease), then wrote: another writer taking the lease over between the two had its
    lease written over — both then wrote the set.  Now the refresh replaces only the bytes it read (S3: If-Match
    their ETag), finds the other's lease, and its writer is told it lost the lease."""
    from upkeeper.backup.lease import Lease, writer_info
    from upkeeper.errors import BackupError
    from upkeeper.storage.base import get_bytes, put_bytes

    storage = open_storage("dest", load_text(json.dumps({"storages": {"dest": store}})).storages["dest"])
    opened.append(storage)
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", "lease-refresh:1")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    lease = Lease.take([storage], "web/app/x/", writer_info("x", datetime.now(UTC), command="backups copy"),
                       timedelta(seconds=0.05))
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline, "no refresh came"
            time.sleep(0.02)
        other = json.dumps({**writer_info("x", datetime.now(UTC), command="backups rekey"), "host": "another-host",
                            "token": "theirs"}).encode()
        put_bytes(storage, "web/app/x/" + LEASE, other)  # taken over while the refresh is between look and write
        while lease.lost is None:
            assert time.monotonic() < deadline, "the refresh never noticed"
            time.sleep(0.02)
        assert get_bytes(storage, "web/app/x/" + LEASE) == other
        with pytest.raises(BackupError, match="taken over by backups rekey on another-host"):
            lease.check()
    finally:
        monkeypatch.delenv("UPKEEPER_FAULT_PAUSE")
        lease.release()
    assert get_bytes(storage, "web/app/x/" + LEASE) == other


_TAKE_IN_A_CONTAINER = """
import json, sys
from datetime import UTC, datetime
from upkeeper.backup.lease import Lease, LeaseHeld, writer_info
from upkeeper.config.loader import load_text
from upkeeper.storage import open_storage
s = open_storage("s", load_text(json.dumps({"storages": {"s": {"kind": "local", "path": sys.argv[1],
                                                               "fsync": False}}})).storages["s"])
try:
    Lease.take([s], "web/app/x/", writer_info("x", datetime.now(UTC), command="backups copy"), None)
    print("taken")
except LeaseHeld as exc:
    print("held:", exc)
"""


def test_a_writer_in_a_container_sharing_the_hosts_name_does_not_take_a_live_writers_lease(tmp_path: Path) -> None:
    """A lease names its writer by host and PID; one of this host whose PID is gone is stale at once.  In a
    container with PIDs of its own but the host's name (``docker run --network host``, containers of one pod),
    the host's writer's PID is not there: a copy, rekey or prune in the container took the live writer's lease
    for a dead one's and took it over (a prune then deleted the set being written).  A writer in another PID
    namespace now counts as another host's: its lease is stale once not refreshed for LEASE_TTL."""

    from services import pid_namespace_argv
    from upkeeper.backup.lease import Lease, writer_info
    from upkeeper.storage.base import get_bytes

    cmd = pid_namespace_argv()
    root = tmp_path / "s"
    root.mkdir()
    s = open_storage("s", load_text(json.dumps({"storages": {"s": {"kind": "local", "path": str(root),
                                                                   "fsync": False}}})).storages["s"])
    lease = Lease.take([s], "web/app/x/", writer_info("x", datetime.now(UTC), command="backups copy"), None)
    try:
        got = subprocess.run([*cmd, sys.executable, "-c", _TAKE_IN_A_CONTAINER, str(root)], capture_output=True,
                             text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        assert got.stdout.startswith("held:"), got.stdout
        assert json.loads(get_bytes(s, "web/app/x/" + LEASE))["token"] == lease.token
    finally:
        lease.release()


class _TakenOverAsReleased:
    """A storage (real, passed through) on which another host takes the lease ``key`` over, through a client of its
    own, just as this one deletes it: after the releasing writer looked at its lease, before its deletion."""

    def __init__(self, storage: Storage, other: Storage, key: str, body: bytes) -> None:
        self._storage, self._other, self._key, self._body = storage, other, key, body
        self.taken_over = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def _take_over(self, key: str) -> None:
        from upkeeper.storage.base import put_bytes

        if key == self._key and not self.taken_over:
            self.taken_over = True
            put_bytes(self._other, key, self._body)

    def delete(self, key: str) -> None:
        self._take_over(key)
        self._storage.delete(key)

    def delete_if(self, key: str, current: bytes) -> bool:
        self._take_over(key)
        return bool(self._storage.delete_if(key, current))


def test_a_release_never_deletes_the_lease_another_writer_took_over_after_it_looked(
        tmp_path: Path, store: dict[str, Any], opened: list[Storage]) -> None:
    """A writer releasing its lease looked at it (its own), then deleted it: another host that took the lease over
    between the two (a stale lease: this writer's storage unreachable for LEASE_TTL) lost its lease — and a prune
    then took the set that host was writing for an idle leftover and deleted it under it.  Now the release deletes
    only the very bytes it read (S3: If-Match their ETag; local, SFTP: renamed aside, compared, put back): the other
    host's lease stays, and the set it writes is kept by a prune."""
    from upkeeper.backup.lease import Lease, writer_info
    from upkeeper.storage.base import get_bytes, put_bytes

    config = load_text(json.dumps({"storages": {"dest": store}}))
    mine, theirs = (open_storage("dest", config.storages["dest"]) for _ in range(2))
    opened += [mine, theirs]
    prefix = set_prefix("web", "app", "20260101T000000Z-abcdef")
    other = json.dumps({**writer_info("x", datetime.now(UTC), command="backups copy"), "host": "another-host",
                        "token": "theirs"}).encode()
    storage = _TakenOverAsReleased(mine, theirs, prefix + LEASE, other)
    lease = Lease.take([storage], prefix, writer_info("x", datetime.now(UTC), command="backups rekey"), None)  # type: ignore[list-item]
    put_bytes(theirs, prefix + "a.bin", b"the other host's object")  # the set it writes (no manifest yet)
    lease.release()
    assert storage.taken_over
    assert get_bytes(theirs, prefix + LEASE) == other
    # a prune (every incomplete set idle: incomplete_after 0) keeps the set its lease protects
    report = prune_series([theirs], "web", "app", "files", KEEP_ALL, default_tz="UTC", now=datetime.now(UTC),
                          incomplete_after=timedelta(0))
    assert report.incomplete_deleted == [] and report.incomplete_kept == ["20260101T000000Z-abcdef"], report
    assert get_bytes(theirs, prefix + "a.bin") == b"the other host's object"
    assert sorted(o.key for o in theirs.list(prefix)) == sorted([prefix + "a.bin", prefix + LEASE])
    if store["kind"] == "local":  # nothing left aside either
        assert [p.name for p in (Path(store["path"]) / prefix).iterdir() if "aside" in p.name] == []


def _mirror_of(tmp_path: Path, src: Storage, bid: str) -> Storage:
    """A local storage ``mirror`` holding a copy of ``bid`` from ``src`` (where rekey reads an intact copy)."""
    (tmp_path / "mirror").mkdir()
    mirror = open_storage("mirror", load_text(json.dumps({"storages": {"mirror": {
        "kind": "local", "path": str(tmp_path / "mirror"), "fsync": False}}})).storages["mirror"])
    assert copy_set([src], mirror, "web", "app", bid, recorded_sha256=None,
                    allow_unencrypted_remote=False).action == COPIED
    return mirror


def _copy_paused_at_first_chunk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pause: float, src: Storage,
                                dest: Storage, bid: str, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    """A ``backups copy`` of ``bid`` from ``src`` to ``dest`` in a thread, once it waits ``pause`` seconds at its
    first chunk (the fault point ``during-upload``); faults are off again for what the test runs meanwhile.
    Returns the thread and the list its CopyReport goes into."""
    mark = tmp_path / "mark"
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", f"during-upload:{pause:g}")
    monkeypatch.setenv("UPKEEPER_FAULT_MARK", str(mark))
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(copy_set(
        [src], dest, "web", "app", bid, recorded_sha256=None, allow_unencrypted_remote=False, **kw)))
    t.start()
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert t.is_alive() and time.monotonic() < deadline, "the copy never started"
        time.sleep(0.02)
    monkeypatch.setenv("UPKEEPER_FAULT_PAUSE", "")  # (what the test runs meanwhile goes at full speed)
    return t, out


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_rekey_on_another_host_never_deletes_a_set_a_copy_is_repairing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """Two hosts sharing the storages but not the history (no shared locks): one's ``backups copy`` repairs a set
    complete on its destination (an object damaged there) under the set's lease while the other's ``backups rekey``
    re-encrypts that set there.  Rekey deleted the original without its lease: the set went (manifest, objects and
    the copy's lease) under the repair, which then wrote its object into a set no longer there — a leftover — and
    said 'repaired'.  Now rekey takes the original's lease to delete it, waiting while the repair holds it: the
    repair completes, then the original goes, whole, and the re-encryption alone is left."""
    from upkeeper.backup.copy import REPAIRED

    old, _new, src, dest = _two_copied_one_damaged(tmp_path, store, age_key, opened)
    elsewhere = open_storage("dest", load_text(json.dumps({"storages": {"dest": store}})).storages["dest"])
    mirror = _mirror_of(tmp_path, src, old)  # the rekeying host's other storage, with an intact copy
    opened += [elsewhere, mirror]  # the rekeying host's own clients
    t, out = _copy_paused_at_first_chunk(monkeypatch, tmp_path, 2, src, dest, old, check_present=True)
    rep = rekey_set([elsewhere, mirror], "web", "app", old, recorded_sha256=None, catalog_storages=["dest"],
                    old_key=OldKey((str(age_key.identity),)), new=_new_recipient(tmp_path), age="age",
                    catalog=None)
    t.join()
    assert rep.action == REKEYED, rep
    assert out[0].action == REPAIRED, out[0]
    assert not t.is_alive()
    # the original went whole after the repair (no leftover of it: no object, no lease), its re-encryption stays
    assert list(dest.list(set_prefix("web", "app", old))) == []
    assert rep.new_id is not None and _complete(dest, rep.new_id) and _complete(mirror, rep.new_id)
    assert list(mirror.list(set_prefix("web", "app", old))) == []


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_rekey_says_so_when_another_host_copied_the_original_meanwhile(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """Another host (no history lock shared) copies a backup to a storage of this config while this one re-encrypts
    it: rekey waits for the copy's reader's marker on the original, then deletes the original where it found it —
    and said 'rekeyed', the copy just made, still for the old key (the key being retired), left unmentioned.  Now
    rekey looks at its other storages once done, and fails naming the storage that holds the original now, and how
    to finish (the copy there is complete: no set was lost, none mixes keys)."""
    from upkeeper.backup.manifest import read_manifest
    from upkeeper.backup.rekey import FAILED as REKEY_FAILED

    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    mine = {n: open_storage(n, config.storages[n]) for n in ("src", "dest")}  # the rekeying host's own clients
    opened += list(mine.values())
    t, out = _copy_paused_at_first_chunk(monkeypatch, tmp_path, 2, src, dest, bid)
    rep = rekey_set([mine["src"], mine["dest"]], "web", "app", bid, recorded_sha256=None,
                    catalog_storages=["src"], old_key=OldKey((str(age_key.identity),)),
                    new=_new_recipient(tmp_path), age="age", catalog=None)
    t.join()
    assert out[0].action == COPIED, out[0]
    assert rep.new_id is not None and _complete(src, rep.new_id) and not _complete(src, bid)
    # the copy on dest is whole, and of the original alone (the old key): no set mixes keys
    assert _complete(dest, bid) and not _complete(dest, rep.new_id)
    assert read_manifest(dest, set_prefix("web", "app", bid)).encryption["recipients"] == [age_key.recipient]
    # and the rekey says so, rather than 'rekeyed'
    assert rep.action == REKEY_FAILED, rep
    assert f"dest holds backup {bid} too" in (rep.error or "") and "old key" in (rep.error or ""), rep
    assert f"rekey {bid}" in (rep.hint or "") and rep.replaced, rep


@pytest.mark.parametrize("store", ["local", "s3"], indirect=True)
def test_a_copy_whose_source_another_hosts_rekey_deleted_unseen_says_so(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, store: dict[str, Any],
        opened: list[Storage]) -> None:
    """The copy's reader's marker not seen (not written: read-only credentials; or a rekey of an older version): a
    rekey of another host deletes the source set while the copy reads it.  The copy fails, as it must, writing
    nothing — and says the backup was deleted while it was copied, rather than that an object 'could not be copied
    from any storage' (Try: verify each storage), which sent the user looking for damage that was not there."""
    from upkeeper.backup.copy import FAILED as COPY_FAILED

    config, bid, src, dest = _set_to_copy(tmp_path, store, age_key, opened)
    mine = open_storage("src", config.storages["src"])  # the rekeying host's own client
    opened.append(mine)
    # the copy waits at its first chunk while the rekey runs to its end (ample on a loaded machine: the copy
    # must not reach its second object before the rekey deleted it)
    t, out = _copy_paused_at_first_chunk(monkeypatch, tmp_path, 8, src, dest, bid)
    for o in list(mine.list(set_prefix("web", "app", bid))):
        if "/.reading-" in o.key:
            mine.delete(o.key)  # as if never written
    rep = rekey_set([mine], "web", "app", bid, recorded_sha256=None, catalog_storages=["src"],
                    old_key=OldKey((str(age_key.identity),)), new=_new_recipient(tmp_path), age="age", catalog=None)
    t.join()
    assert rep.action == REKEYED, rep
    assert out[0].action == COPY_FAILED, out[0]
    assert f"backup {bid} was deleted from src while it was copied" in (out[0].error or ""), out[0]
    assert "backups sync" in (out[0].hint or ""), out[0]
    assert list(dest.list(set_prefix("web", "app", bid))) == []


def test_a_copy_meeting_a_rekey_deleting_the_original_names_the_re_encryption(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, age_key: AgeKey, opened: list[Storage]) -> None:
    """Two hosts sharing a storage, not the history: one's ``backups rekey`` holds the original's lease to delete it
    (here while a verify of a third host still reads it) when the other's ``backups copy`` comes to repair that
    original.  The copy failed saying the set 'is being written … by backups rekey', Try: 'copy it again once that
    is done' — which would bring back, for the key being retired, the set the rekey just deleted.  Now it says the
    set is being deleted, re-encrypted as which backup, and to copy that one instead."""
    from upkeeper.backup import rekey as rekey_module
    from upkeeper.backup.copy import FAILED as COPY_FAILED
    from upkeeper.backup.manifest import READING
    from upkeeper.backup.rekey import rekeyed_id
    from upkeeper.storage.base import put_bytes

    (tmp_path / "dest").mkdir()
    old, _new, src, dest = _two_copied_one_damaged(tmp_path, {"kind": "local", "path": str(tmp_path / "dest"),
                                                              "fsync": False}, age_key, opened)
    elsewhere = open_storage("dest", load_text(json.dumps({"storages": {"dest": {
        "kind": "local", "path": str(tmp_path / "dest"), "fsync": False}}})).storages["dest"])
    mirror = _mirror_of(tmp_path, src, old)  # the rekeying host's other storage, with an intact copy
    opened += [elsewhere, mirror]  # the rekeying host's own clients
    prefix = set_prefix("web", "app", old)
    marker = prefix + READING + "verify-elsewhere"
    put_bytes(dest, marker, json.dumps({"backup": old, "host": "third-host", "pid": 7, "command": "backups verify",
                                        "started_at": datetime.now(UTC).isoformat()}).encode())
    monkeypatch.setattr(rekey_module, "READER_POLL", 0.2)
    new = _new_recipient(tmp_path)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(rekey_set(
        [elsewhere, mirror], "web", "app", old, recorded_sha256=None, catalog_storages=["dest"],
        old_key=OldKey((str(age_key.identity),)), new=new, age="age", catalog=None)))
    t.start()
    try:
        deadline = time.monotonic() + 120
        while b"rekeyed_as" not in (_read(dest, prefix + LEASE) if dest.stat(prefix + LEASE) else b""):
            assert t.is_alive() and time.monotonic() < deadline, out
            time.sleep(0.05)
        rep = copy_set([src], dest, "web", "app", old, recorded_sha256=None, allow_unencrypted_remote=False,
                       check_present=True)
    finally:
        dest.delete(marker)  # the verify ends: the rekey deletes the original
        t.join()
    new_id = rekeyed_id(old, new)
    assert rep.action == COPY_FAILED, rep
    assert f"is being deleted by backups rekey (re-encrypted as {new_id}) on " in (rep.error or ""), rep
    assert f"'upkeeper backups copy {new_id} --to dest'" in (rep.hint or ""), rep
    assert out[0].action == REKEYED and out[0].new_id == new_id, out[0]
    assert list(dest.list(prefix)) == [] and _complete(dest, new_id)
