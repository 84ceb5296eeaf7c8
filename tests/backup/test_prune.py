"""'backups prune' on real storage: GFS per series, reasons printed, incomplete leftovers cleaned after 24 h,
and 'backups sync' rebuilding the catalog from manifests alone."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services import sftp_storage_config
from upkeeper.backup.catalog import Catalog
from upkeeper.backup.manifest import Manifest, new_backup_id, write_manifest
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.config.storage import LocalStorageConfig
from upkeeper.core.history import History
from upkeeper.sandbox.sshd import SshServer
from upkeeper.storage import Storage, open_storage
from upkeeper.storage.base import put_bytes
from upkeeper.storage.local import LocalStorage


def put_set(s: Storage, when: datetime, *, database: str = "app", kind: str = "postgres", complete: bool = True,
            target: str = "db") -> Manifest:
    """A small but real set on any storage: one object, then (optionally) its manifest."""
    rec = ObjectRecord(name="data.zst", size=5, sha256="0" * 64, raw_size=5)
    m = Manifest(id=new_backup_id(when), kind=kind, target=target, database=database, started_at=when,
                 finished_at=when, objects=[rec])
    put_bytes(s, m.prefix + "data.zst", b"hello")
    if complete:
        write_manifest([s], m)
    return m


def fabricate(store: Path, when: datetime, *, database: str = "app", kind: str = "postgres",
              complete: bool = True, target: str = "db") -> str:
    """A small but real set on local storage, its files dated ``when``."""
    store.mkdir(exist_ok=True)  # as the admin would: upkeeper never creates a storage's directory
    s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
    m = put_set(s, when, database=database, kind=kind, complete=complete, target=target)
    for f in (store / m.prefix).iterdir():  # written then, as a real set would have been
        os.utime(f, (when.timestamp(), when.timestamp()))
    return m.id


def _config(make_config: Any, store: Path, retention: dict[str, Any] | None = None) -> Path:
    jobs = {"db-backup": {"task": "postgres.backup", "target": "db",
                          "options": {"retention": retention} if retention else {}}}
    return make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                        "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
                        "jobs": jobs})


def test_prune_dry_run_explains_then_prune_deletes(cli: Any, make_config: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [fabricate(store, now - timedelta(days=d, hours=1)) for d in range(10)]  # newest first
    other = fabricate(store, now - timedelta(days=3), database="other")
    old_leftover = fabricate(store, now - timedelta(days=2), complete=False)
    fresh_leftover = fabricate(store, now - timedelta(hours=1), complete=False)
    cfg = _config(make_config, store, {"keep_daily": 3, "keep_weekly": 0, "keep_monthly": 0})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    assert len(cli(["--config", cfg, "backups", "list", "--json"]).json()) == 11

    r = cli(["--config", cfg, "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    series = {(s["database"], s["kind"]): s for s in r.json()}
    app = series[("app", "postgres")]
    kept = [b["id"] for b in app["backups"] if b["keep"]]
    assert kept == ids[:3]
    assert all(b["reasons"] and b["reasons"][0].startswith("daily") for b in app["backups"] if b["keep"])
    assert app["incomplete_deleted"] == [old_leftover] and app["incomplete_kept"] == [fresh_leftover]
    why = app["incomplete_kept_why"][fresh_leftover]
    assert why.startswith("written 1h ago, less than 1d: its backup may still be running"), why
    assert [b["id"] for b in series[("other", "postgres")]["backups"]] == [other]
    # the human table names every backup and its reason
    text = cli(["--config", cfg, "backups", "prune", "--dry-run"]).out
    for bid in ids:
        assert bid in text
    assert "daily" in text and "would delete" in text
    assert "incomplete (no manifest): written 1h ago, less than 1d" in " ".join(text.split()), text
    # a dry run deleted nothing
    assert len(list(store.rglob("manifest.json"))) == 11

    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    left = sorted(p.parent.name for p in store.rglob("manifest.json"))
    assert left == sorted([*ids[:3], other])
    assert not (store / "db" / "app" / old_leftover).exists()
    assert (store / "db" / "app" / fresh_leftover).exists()
    listed = {b["id"] for b in cli(["--config", cfg, "backups", "list", "--json"]).json()}
    assert listed == {*ids[:3], other}


def test_list_and_prune_print_each_id_whole_in_a_narrow_terminal(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The tables of 'backups list' and 'backups prune' folded the id column below ~130 columns
    (``20261206T092126Z`` / ``-bf0029``): the id is what 'backups show|verify|restore ID' take, copied from there."""
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [fabricate(store, now - timedelta(days=d, hours=1)) for d in range(2)]
    cfg = _config(make_config, store)
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (["backups", "list"], ["backups", "prune", "--dry-run"]):
        out = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), *args], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert max(len(line) for line in out.splitlines()) <= 100, out
        for bid in ids:
            assert bid in out, (args, out)


def test_newest_complete_survives_any_policy(cli: Any, make_config: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(3)]
    cfg = _config(make_config, store, {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, "keep_last": 0,
                                       "keep_hourly": 0, "keep_within": "1h"})
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert [p.parent.name for p in store.rglob("manifest.json")] == [ids[0]]


def test_sync_rebuilds_catalog_from_manifests_alone(cli: Any, make_config: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = {fabricate(store, now - timedelta(days=d)) for d in range(4)}
    fabricate(store, now, complete=False)
    cfg = _config(make_config, store)
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["added"] == 4
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert {x["id"] for x in rows} == ids and all(x["status"] == "complete" for x in rows)
    # a set that vanished from storage leaves the catalog on the next sync
    gone = sorted(ids)[0]
    for p in sorted((store / "db" / "app" / gone).iterdir()):
        p.unlink()
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.json()["removed"] == 1
    assert {x["id"] for x in cli(["--config", cfg, "backups", "list", "--json"]).json()} == ids - {gone}


def test_sync_keeps_a_set_recorded_while_it_listed_storage(cli: Any, make_config: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup finishes (manifest written, row recorded) just after sync listed storage: its row stays (sync read
    the catalog after listing, took the row for one whose set had vanished, and removed it)."""
    from upkeeper.backup.prune import index_sets

    store = tmp_path / "store"
    now = datetime.now(UTC)
    old = fabricate(store, now - timedelta(days=1))
    cfg = _config(make_config, store)
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    fresh: list[str] = []
    def index_then_a_backup_finishes(*args: Any, **kwargs: Any) -> Any:
        got = index_sets(*args, **kwargs)
        s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
        m = put_set(s, now)
        with catalog_of(tmp_path) as cat:
            cat.record(m, ["local1"])
        fresh.append(m.id)
        return got

    monkeypatch.setattr("upkeeper.cli.backups.index_sets", index_then_a_backup_finishes)
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["removed"] == 0, r.output
    monkeypatch.undo()
    assert {x["id"] for x in cli(["--config", cfg, "backups", "list", "--json"]).json()} == {old, *fresh}


@contextmanager
def catalog_of(tmp_path: Path) -> Iterator[Catalog]:
    """The catalog in the history database the test configs use (make_config: tmp_path/history.db)."""
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        yield Catalog(h)
    finally:
        h.close()


def catalog_rows(cli: Any, cfg: Path) -> dict[str, dict[str, Any]]:
    """Every row as 'backups list --json' shows it: status, verification, restore time, storages, manifest hash."""
    r = cli(["--config", cfg, "backups", "list", "--json"])
    assert r.code == 0, r.output
    return {x["id"]: x for x in r.json()}


def sync(cli: Any, cfg: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    r = cli(["--config", cfg, "backups", "sync", "--json", *extra])
    return r.code, r.json()


def two_synced_sets(cli: Any, make_config: Any, tmp_path: Path) -> tuple[Path, list[str], Path, dict[str, Any]]:
    """Two sets on a local storage, synced into the catalog, one verified and one verify-failed: the store,
    their ids, the config and the catalog rows."""
    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(2)]
    cfg = _config(make_config, store)
    assert sync(cli, cfg)[1]["added"] == 2
    with catalog_of(tmp_path) as cat:
        cat.mark_verified(ids[0], True, "restored 1 table, row counts match", 12.5)
        cat.mark_verified(ids[1], False, "row counts differ", None)
    return store, ids, cfg, catalog_rows(cli, cfg)


def test_sync_keeps_the_rows_of_a_storage_that_is_not_there(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """An unmounted disk or a wrong path is not "every backup is gone": sync says it cannot list the storage,
    exits 1 and leaves its rows as they were — status, verification, restore time and the manifest's SHA-256 — so
    they are all still there when the storage is back (no remove-then-re-add as merely 'complete')."""
    store, ids, cfg, before = two_synced_sets(cli, make_config, tmp_path)
    assert before[ids[0]]["status"] == "verified" and before[ids[0]]["manifest_sha256"]

    away = tmp_path / "store.away"
    store.rename(away)
    code, res = sync(cli, cfg)
    assert code == 1, res
    [error] = res["errors"]
    assert error.startswith(f"local1: local:{store}: the storage directory does not exist"), error
    assert (res["added"], res["updated"], res["removed"], res["kept"]) == (0, 0, 0, 2)
    assert catalog_rows(cli, cfg) == before
    r = cli(["--config", cfg, "backups", "sync"])  # the human output names the storage and the way out
    err = " ".join(r.err.split())
    assert r.code == 1 and f"local1: local:{store}: the storage directory does not exist" in err, r.output
    assert "mount the volume" in err and "2 left as they were" in " ".join(r.out.split()), r.output

    # while it was away, someone edited a manifest: the hash recorded when it was written still stands
    mpath = away / "db" / "app" / ids[0] / "manifest.json"
    mpath.write_bytes(mpath.read_bytes() + b" ")
    away.rename(store)
    code, res = sync(cli, cfg)
    assert code == 0, res
    assert (res["added"], res["updated"], res["removed"], res["kept"], res["errors"]) == (0, 2, 0, 0, [])
    assert catalog_rows(cli, cfg) == before


def test_sync_keeps_the_rows_of_a_storage_that_lists_nothing_unless_forced(cli: Any, make_config: Any,
                                                                           tmp_path: Path) -> None:
    """A mount point without its disk is an empty directory: a storage that lists no backups at all while the
    catalog has some there keeps its rows (exit 1, saying why) until --force says they really are gone."""
    store, _ids, cfg, before = two_synced_sets(cli, make_config, tmp_path)
    store.rename(tmp_path / "store.away")
    store.mkdir()
    code, res = sync(cli, cfg)
    assert code == 1, res
    [err] = res["errors"]
    assert err.startswith("local1: lists no backups, but the catalog has 2 there; their rows are kept"), err
    assert "'upkeeper backups sync --force'" in err
    assert (res["removed"], res["kept"]) == (0, 2)
    assert catalog_rows(cli, cfg) == before

    code, res = sync(cli, cfg, "--force")
    assert code == 0 and (res["removed"], res["kept"], res["errors"]) == (2, 0, []), res
    assert catalog_rows(cli, cfg) == {}


def test_sync_keeps_the_rows_of_an_sftp_storage_it_cannot_list(cli: Any, make_config: Any, tmp_path: Path,
                                                                sftp_server: SshServer) -> None:
    """The same over SFTP: the storage's directory gone (a volume not mounted on the server), then a directory the
    SSH user may not read — exit 1 naming it, every row kept with its verification."""
    config = sftp_storage_config(sftp_server)
    storage = open_storage("vault", config)
    try:
        now = datetime.now(UTC)
        ids = [put_set(storage, now - timedelta(days=d)).id for d in range(2)]
        where = storage.describe()
    finally:
        storage.close()
    cfg = make_config({"storages": {"vault": config.model_dump(mode="json", exclude_none=True)}})
    assert sync(cli, cfg)[1]["added"] == 2
    with catalog_of(tmp_path) as cat:
        cat.mark_verified(ids[1], True, "ok", 4.0)
    before = catalog_rows(cli, cfg)
    assert all(r["storages"] == ["vault"] for r in before.values())

    root = Path(config.path)  # the server runs on this machine: take its directory away on its disk
    root.rename(root.with_name(root.name + ".away"))
    try:
        code, res = sync(cli, cfg)
    finally:
        root.with_name(root.name + ".away").rename(root)
    assert code == 1, res
    assert len(res["errors"]) == 1, res
    assert res["errors"][0].startswith(f"vault: {where}: the storage directory does not exist (upkeeper never"), res
    assert (res["removed"], res["kept"]) == (0, 2)
    assert catalog_rows(cli, cfg) == before

    if pwd.getpwnam(sftp_server.user).pw_uid != 0:  # root would read it anyway
        locked = root / "db" / "app"
        locked.chmod(0)
        try:
            code, res = sync(cli, cfg)
        finally:
            locked.chmod(0o755)
        assert code == 1, res
        assert res["errors"] == [f"vault: cannot list {sftp_server.user}@127.0.0.1:{locked}: permission denied"]
        assert (res["removed"], res["kept"]) == (0, 2)
        assert catalog_rows(cli, cfg) == before

    code, res = sync(cli, cfg)
    assert code == 0 and (res["updated"], res["removed"], res["errors"]) == (2, 0, []), res
    assert catalog_rows(cli, cfg) == before


def test_sync_records_every_readable_set_and_names_each_unreadable_manifest(cli: Any, make_config: Any,
                                                                            tmp_path: Path) -> None:
    """One corrupt manifest must not stop the rebuild: every readable set is recorded, each unreadable manifest is
    named (storage and path), exit 1 — and a row the catalog has for an unreadable set stays as it was."""
    store = tmp_path / "store"
    now = datetime.now(UTC)
    known_bad, known_good = fabricate(store, now - timedelta(days=4)), fabricate(store, now - timedelta(days=3))
    cfg = _config(make_config, store)
    assert sync(cli, cfg)[1]["added"] == 2
    with catalog_of(tmp_path) as cat:
        cat.mark_verified(known_bad, True, "ok", 2.0)
    before = catalog_rows(cli, cfg)
    new_good, new_bad = fabricate(store, now - timedelta(days=2)), fabricate(store, now - timedelta(days=1))
    (store / "db" / "app" / known_bad / "manifest.json").write_bytes(b'{"id": "truncated')
    (store / "db" / "app" / new_bad / "manifest.json").write_text(json.dumps({"id": new_bad}))

    code, res = sync(cli, cfg)
    assert code == 1, res
    assert (res["added"], res["updated"], res["removed"], res["kept"]) == (1, 1, 0, 1)
    assert sorted(res["errors"]) == [
        f"local1: db/app/{known_bad}/manifest.json: not valid JSON (Unterminated string starting at: line 1 "
        "column 8 (char 7))",
        f"local1: db/app/{new_bad}/manifest.json: malformed manifest: no 'kind'",
    ]
    rows = catalog_rows(cli, cfg)
    assert set(rows) == {known_bad, known_good, new_good}
    assert rows[known_bad] == before[known_bad]  # verified, with its recorded manifest hash
    r = cli(["--config", cfg, "backups", "sync"])
    err = " ".join(r.err.split())
    assert r.code == 1 and f"local1: db/app/{new_bad}/manifest.json: malformed manifest" in err, r.output


def test_newest_verified_backup_survives_retention(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Failed verifications of newer backups must not cost the last copy known to restore."""
    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(4)]  # newest first
    cfg = _config(make_config, store, {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        cat = Catalog(h)
        cat.mark_verified(ids[2], True, "ok", 1.0)
        cat.mark_verified(ids[0], False, "row counts differ", None)
        cat.mark_verified(ids[1], False, "row counts differ", None)
    finally:
        h.close()
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    reasons = {b["id"]: b["reasons"] for b in r.json()[0]["backups"]}
    assert reasons[ids[0]] == ["last"] and reasons[ids[2]] == ["newest verified"]
    assert sorted(p.parent.name for p in store.rglob("manifest.json")) == sorted([ids[0], ids[2]])


def test_backup_commands_work_when_a_job_is_broken(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A typo in some job must not stand between you and your backups."""
    store = tmp_path / "store"
    bid = fabricate(store, datetime.now(UTC))
    cfg = make_config({"storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
                       "jobs": {"oops": {"task": "postgres.vacum"}}})
    assert cli(["--config", cfg, "jobs"]).code == 2
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    r = cli(["--config", cfg, "backups", "list", "--json"])
    assert r.code == 0 and [x["id"] for x in r.json()] == [bid]


def test_prune_applies_each_series_own_job_retention(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Several backup jobs on one target: each series is pruned with the retention its own job applies."""
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    series = [("web", "files", "files"), ("web", "files", "nginx"), ("db", "postgres", "app"),
              ("db", "postgres", "other"), ("db", "postgres", "scratch")]
    for target, kind, database in series:
        for d in range(8):
            fabricate(store, now - timedelta(days=d, hours=1), database=database, kind=kind, target=target)
    daily = lambda n: {"keep_daily": n, "keep_weekly": 0, "keep_monthly": 0}  # noqa: E731
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1},
                    "web": {"kind": "app", "root": str(tmp_path)}},
        "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
        "backup": {"retention": daily(5)},
        "jobs": {
            "app-backup": {"task": "files.backup", "target": "web"},  # set "files", backup.retention
            "nginx-backup": {"task": "files.backup", "target": "web",
                             "options": {"preset": "nginx", "retention": daily(2)}},
            "db-all": {"task": "postgres.backup", "target": "db",
                       "options": {"exclude_databases": ["scratch"], "retention": daily(4)}},
            "db-app": {"task": "postgres.backup", "target": "db",
                       "options": {"databases": ["app"], "retention": daily(1)}},
        }})
    r = cli(["--config", cfg, "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    kept = {(s["target"], s["database"]): sum(b["keep"] for b in s["backups"]) for s in r.json()}
    assert kept == {("web", "files"): 5, ("web", "nginx"): 2, ("db", "app"): 1, ("db", "other"): 4,
                    ("db", "scratch"): 5}


def test_incomplete_set_still_receiving_objects_is_not_cleaned(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A set begun two days ago (a directory-format dump of a huge database) whose last object arrived an hour
    ago is still being written: leftovers are judged by their last activity, not by when they began."""
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    fabricate(store, now - timedelta(days=1))
    busy = fabricate(store, now - timedelta(days=2), complete=False)
    [obj] = (store / "db" / "app" / busy).iterdir()
    fresh = (now - timedelta(hours=1)).timestamp()
    os.utime(obj, (fresh, fresh))
    dead = fabricate(store, now - timedelta(days=3), complete=False)
    cfg = _config(make_config, store)
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    [app] = r.json()
    assert app["incomplete_kept"] == [busy] and app["incomplete_deleted"] == [dead]
    assert (store / "db" / "app" / busy).is_dir() and not (store / "db" / "app" / dead).exists()


def test_prune_of_one_target_leaves_the_other_targets_partial_files(cli: Any, make_config: Any,
                                                                    tmp_path: Path) -> None:
    """'backups prune --target db' cleans the temporary files crashed writers left under db's sets only: another
    target's (possibly a long upload of a slow job there, or evidence someone is looking at) is not its business."""
    store = tmp_path / "store"
    now = datetime.now(UTC)
    fabricate(store, now - timedelta(days=1))
    fabricate(store, now - timedelta(days=1), target="cache")
    old = (now - timedelta(days=3)).timestamp()
    partials = {}
    for target in ("db", "cache"):
        p = store / target / "app" / new_backup_id(now - timedelta(days=3)) / ".dump.zst.1a2b3c4d.upkeeper-partial"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"half a dump")
        os.utime(p, (old, old))
        partials[target] = p
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1},
                                   "cache": {"kind": "redis", "host": "127.0.0.1", "port": 1}},
                       "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}}})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    r = cli(["--config", cfg, "backups", "prune", "--target", "db", "--json"])
    assert r.code == 0, r.output
    assert not partials["db"].exists()
    assert partials["cache"].exists(), "prune --target db removed a partial file of target cache"
    r = cli(["--config", cfg, "backups", "prune", "--json"])  # no --target: the whole storage
    assert r.code == 0, r.output
    assert not partials["cache"].exists()


def test_a_missing_local_storage_directory_fails_every_command_and_is_never_created(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """An unmounted volume or a wrong path: sync, prune, list-based commands and a backup all exit 1 naming the
    storage and the directory, and none of them creates it (backups there would land on the root filesystem)."""
    store = tmp_path / "mnt" / "backup"
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.js").write_text("ok\n")
    cfg = make_config({"targets": {"web": {"kind": "app", "root": str(app)}},
                       "storages": {"disk": {"kind": "local", "path": str(store), "fsync": False}},
                       "backup": {"encryption": "none"},
                       "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": {}}}},
                      storage_dirs=False)
    where = f"local:{store}: the storage directory does not exist"
    for argv in (["backups", "sync"], ["backups", "prune"], ["storages", "check"], ["run", "app-backup", "--json"]):
        r = cli(["--config", cfg, *argv])
        text = " ".join(r.output.split())
        if argv[0] == "run":  # the run's summary and its finding's remediation
            [run] = r.json()
            text = " ".join([run["summary"], *(f["message"] + " " + f["remediation"] for f in run["findings"])])
            assert run["status"] in ("fail", "error") and "storage disk:" in run["summary"], run
        assert r.code == 1, (argv, r.output)
        assert where in text and f"mkdir -p -m 700 {store}" in text and "'disk'" in text, (argv, r.output)
        assert not store.exists() and not store.parent.exists(), argv
    store.mkdir(parents=True)  # created once by the admin: everything works
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    assert list(store.rglob("manifest.json"))


def test_sync_and_prune_see_storages_beyond_backup_storages(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A job with its own 'storages' writes beyond backup.storages: sync must not drop those rows (and their
    verification), prune must prune them, and restore/verify must find them."""
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    now = datetime.now(UTC)
    elsewhere = fabricate(s1, now - timedelta(hours=3), database="other")
    ids = [fabricate(s2, now - timedelta(days=d, hours=1)) for d in range(5)]  # newest first
    data: dict[str, Any] = {
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
        "storages": {"s1": {"kind": "local", "path": str(s1), "fsync": False},
                     "s2": {"kind": "local", "path": str(s2), "fsync": False}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {
            "storages": ["s2"], "retention": {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}}}}}
    assert sync(cli, make_config(data, name="all.yaml"))[1]["added"] == 6
    with catalog_of(tmp_path) as cat:
        cat.mark_verified(ids[2], True, "restored, row counts match", 3.0)
    cfg = make_config({**data, "backup": {"storages": ["s1"]}})
    code, res = sync(cli, cfg)
    assert code == 0 and res["storages"] == ["s1", "s2"] and res["removed"] == 0, res
    rows = catalog_rows(cli, cfg)
    assert set(rows) == {elsewhere, *ids} and rows[ids[2]]["status"] == "verified"

    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert sorted(p.parent.name for p in s2.rglob("manifest.json")) == sorted([ids[0], ids[2]])
    assert [p.parent.name for p in s1.rglob("manifest.json")] == [elsewhere]

    r = cli(["--config", cfg, "backups", "verify", ids[0], "--no-restore"])
    assert r.code == 1 and "data.zst" in r.out and "not found" not in r.out, r.output  # found; the fake hash fails
    r = cli(["--config", cfg, "backups", "restore", ids[0]])  # found on s2; then no server at port 1
    assert r.code == 1 and "not found" not in r.output and "127.0.0.1" in r.err, r.output
    for cmd in (["verify", ids[0]], ["restore", ids[0]]):
        r = cli(["--config", cfg, "backups", *cmd, "--storage", "nope"])
        assert r.code == 2 and "unknown storage 'nope'" in r.err and "s1, s2" in r.err, r.output


def test_verify_names_an_unknown_scratch_target(cli: Any, make_config: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    bid = fabricate(store, datetime.now(UTC))
    cfg = _config(make_config, store)
    assert sync(cli, cfg)[0] == 0
    r = cli(["--config", cfg, "backups", "verify", bid, "--scratch-target", "nope"])
    err = " ".join(r.err.split())
    assert r.code == 2 and "--scratch-target 'nope' is not a target in the config" in err and "Try: one of db" in err, \
        r.output


def test_retention_never_empties_a_storage_that_missed_the_newest_backup(cli: Any, make_config: Any,
                                                                         tmp_path: Path) -> None:
    """The newest backup reached s1 only. keep_last 1 on the union of the storages deleted every copy on s2;
    now s2 keeps its own newest copy (shown as a reason) until a newer backup reaches it."""
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    now = datetime.now(UTC)
    both = [fabricate(s1, now - timedelta(days=d)) for d in (3, 2, 1)]  # oldest first
    for bid in both:
        shutil.copytree(s1 / "db" / "app" / bid, s2 / "db" / "app" / bid)
    only_s1 = fabricate(s1, now - timedelta(hours=1))
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
        "storages": {"s1": {"kind": "local", "path": str(s1), "fsync": False},
                     "s2": {"kind": "local", "path": str(s2), "fsync": False}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {
            "retention": {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}}}}})
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    [series] = r.json()
    reasons = {b["id"]: b["reasons"] for b in series["backups"] if b["keep"]}
    assert reasons == {only_s1: ["last"], both[2]: ["newest on s2"]}
    assert sorted(p.parent.name for p in s1.rglob("manifest.json")) == sorted([both[2], only_s1])
    assert [p.parent.name for p in s2.rglob("manifest.json")] == [both[2]]


def test_backup_verify_task_finds_backups_beyond_backup_storages(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The scheduled backup.verify read backup.storages only: a job writing to its own storage was never
    verified, and 'scope: unverified' said OK 'no unverified backups'."""
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    s1.mkdir()
    bid = fabricate(s2, datetime.now(UTC) - timedelta(hours=1))  # its data.zst does not match its SHA-256
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
        "storages": {"s1": {"kind": "local", "path": str(s1), "fsync": False},
                     "s2": {"kind": "local", "path": str(s2), "fsync": False}},
        "backup": {"storages": ["s1"]},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {"storages": ["s2"]}},
                 "verify": {"task": "backup.verify", "target": "db", "options": {"scope": "unverified"}}}})
    r = cli(["--config", cfg, "run", "verify", "--json"])
    assert r.code == 1, r.output
    [run] = r.json() if isinstance(r.json(), list) else [r.json()]
    assert "data.zst" in json.dumps(run) and bid in json.dumps(run), run


def test_list_says_when_its_limit_hides_backups_and_show_uses_the_config_timezone(cli: Any, make_config: Any,
                                                                                   tmp_path: Path) -> None:
    """'backups list' stopped at --limit (200) in silence; 'show' printed UTC while 'list' used the config's zone."""
    store = tmp_path / "store"
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(3)]  # newest first
    cfg = make_config({"timezone": "Europe/Berlin",
                       "targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}}})
    assert sync(cli, cfg)[0] == 0
    r = cli(["--config", cfg, "backups", "list", "--limit", "2", "--json"])
    assert r.code == 0 and [x["id"] for x in r.json()] == ids[:2], r.output
    assert "showing the newest 2 backups; there are more" in " ".join(r.err.split()), r.err
    r = cli(["--config", cfg, "backups", "list", "--limit", "3"])
    assert r.code == 0 and "there are more" not in r.output, r.output
    r = cli(["--config", cfg, "backups", "show", ids[0]])
    assert r.code == 0, r.output
    assert "taken 2026-01-15 13:00:00 CET" in r.output, r.output


def test_retention_takes_the_catalog_copy_of_a_manifest_only_while_the_stored_bytes_are_those(
        tmp_path: Path) -> None:
    """Retention reads each set's manifest for its kind, time and objects; one the catalog recorded (with the
    SHA-256 of manifest.json as written) is not parsed again while the storage holds those very bytes (a files
    set's manifest lists every file: 39 MB for 200,000 files).  One changed since counts as stored: here no
    longer valid JSON, so named and never pruned, whatever the catalog's copy says."""
    from upkeeper.backup.prune import prune_series
    from upkeeper.config.backup import RetentionPolicy

    store = tmp_path / "store"
    store.mkdir()
    s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
    now = datetime.now(UTC)
    sets = [put_set(s, now - timedelta(days=d)) for d in (3, 2, 1, 0)]  # oldest first
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        cat = Catalog(h)
        for m in sets:
            cat.record(m, ["local1"])
        edited, gone_wrong = sets[1], sets[2]
        (store / edited.prefix / "manifest.json").write_bytes(b'{"id": "truncated')
        # valid, but another kind than recorded: not this series' any more, so not pruned with it
        d = json.loads((store / gone_wrong.prefix / "manifest.json").read_bytes())
        (store / gone_wrong.prefix / "manifest.json").write_text(json.dumps({**d, "kind": "redis"}))
        report = prune_series([s], "db", "app", "postgres",
                              RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0),
                              default_tz="UTC", now=now, incomplete_after=timedelta(hours=24), catalog=cat,
                              known=sets[3])
    finally:
        h.close()
    assert report.deleted == [sets[0].id]
    assert [d.item.id for d in report.decisions] == [sets[3].id, sets[0].id]
    assert report.errors == [f"local1: db/app/{edited.id}/manifest.json: not valid JSON (Unterminated string "
                             "starting at: line 1 column 8 (char 7))"]
    assert all((store / m.prefix / "manifest.json").exists() for m in sets[1:])


def test_cli_prune_reads_no_manifest_the_catalog_holds_as_stored(
        cli: Any, make_config: Any, tmp_path: Path, s3_server: Any, s3_bucket: str, age_key: Any,
        s3_reads: list[str]) -> None:
    """'backups prune' lists the storage (which sets exist, with which objects) but takes each set's manifest
    from the catalog while the listing shows manifest.json at the size recorded for it: no GET of an
    unchanged manifest (the automatic retention after a backup does the same).  One rewritten since (another
    size) is read again, and its stored content counts."""
    from upkeeper.config.storage import S3StorageConfig

    entry = s3_server.storage_config(s3_bucket, prefix="bk")
    s3 = open_storage("offsite", S3StorageConfig.model_validate(entry))
    now = datetime.now(UTC)
    try:
        sets = [put_set(s3, now - timedelta(days=d)) for d in (3, 2, 1, 0)]  # oldest first
    finally:
        s3.close()
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "storages": {"offsite": entry},
                       "backup": {"encryption": {"recipients": [age_key.recipient],
                                                 "identity_file": str(age_key.identity)}},
                       "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {"retention": {
                           "keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}}}}})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    s3_reads.clear()  # count from here
    r = cli(["--config", cfg, "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    assert [b["id"] for b in r.json()[0]["backups"] if not b["keep"]] == [sets[1].id, sets[0].id]
    assert s3_reads == []
    # rewritten (another size, another kind): read, and no longer in the series
    s3 = open_storage("offsite", S3StorageConfig.model_validate(entry))
    try:
        d = json.loads(s3.open_read(sets[2].prefix + "manifest.json").read())
        put_bytes(s3, sets[2].prefix + "manifest.json", json.dumps({**d, "kind": "redis"}).encode())
    finally:
        s3.close()
    s3_reads.clear()
    r = cli(["--config", cfg, "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    assert s3_reads == [sets[2].prefix + "manifest.json"]
    series = {s["kind"]: s for s in r.json()}
    assert [b["id"] for b in series["postgres"]["backups"] if not b["keep"]] == [sets[0].id]
    assert [b["id"] for b in series["redis"]["backups"]] == [sets[2].id]


def test_sync_does_not_bring_back_a_set_pruned_while_it_ran(cli: Any, make_config: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup job's retention deletes a set (from storage, then its row) just after sync listed storage: sync
    recorded the set again, and 'backups list' listed as complete a backup no storage holds."""
    from upkeeper.backup.prune import index_sets, prune_series
    from upkeeper.config.backup import RetentionPolicy

    store = tmp_path / "store"
    now = datetime.now(UTC)
    old = fabricate(store, now - timedelta(days=2))
    new = fabricate(store, now - timedelta(days=1))
    cfg = _config(make_config, store)
    assert cli(["--config", cfg, "backups", "sync"]).code == 0

    def index_then_a_prune_runs(*args: Any, **kwargs: Any) -> Any:
        got = index_sets(*args, **kwargs)
        s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
        with catalog_of(tmp_path) as cat:
            report = prune_series([s], "db", "app", "postgres", RetentionPolicy(keep_last=1, keep_daily=0,
                                                                                keep_weekly=0, keep_monthly=0),
                                  default_tz="UTC", now=now, incomplete_after=timedelta(hours=24), catalog=cat)
        assert report.deleted == [old], report
        return got

    monkeypatch.setattr("upkeeper.cli.backups.index_sets", index_then_a_prune_runs)
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    monkeypatch.undo()
    assert r.code == 0, r.output
    assert set(catalog_rows(cli, cfg)) == {new}


def test_a_set_directory_copied_by_hand_is_not_taken_for_the_set_its_manifest_names(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """``cp -r`` of a set's directory to another id (or target) holds a manifest naming the original: sync recorded
    it as the original (its row then naming a storage whose copy lives elsewhere) and retention counted it as a
    backup of that series.  It is named and left alone, like a manifest that cannot be read."""
    store = tmp_path / "store"
    now = datetime.now(UTC)
    orig = fabricate(store, now - timedelta(days=1))
    cfg = _config(make_config, store)
    assert sync(cli, cfg)[1]["added"] == 1
    shutil.copytree(store / "db" / "app" / orig, store / "db" / "other" / orig)
    dup = new_backup_id(now)
    shutil.copytree(store / "db" / "app" / orig, store / "db" / "app" / dup)
    code, res = sync(cli, cfg)
    assert code == 1, res
    assert sorted(e.split(": ")[1] for e in res["errors"]) == [f"db/app/{dup}/manifest.json",
                                                               f"db/other/{orig}/manifest.json"], res
    assert {k: v["storages"] for k, v in catalog_rows(cli, cfg).items()} == {orig: ["local1"]}
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert [[b["id"] for b in s["backups"]] for s in r.json()] == [[orig], []], r.output
    assert (store / "db" / "app" / dup / "manifest.json").exists()


def test_list_says_when_no_storage_holds_a_backup_whole(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A backup whose only copy lost an object keeps its row (its verification history), with no storage: list
    and show say there is no complete copy instead of an empty column after 'complete'."""
    store = tmp_path / "store"
    bid = fabricate(store, datetime.now(UTC) - timedelta(days=1))
    cfg = _config(make_config, store)
    assert sync(cli, cfg)[1]["added"] == 1
    (store / "db" / "app" / bid / "data.zst").unlink()
    assert sync(cli, cfg)[0] == 1
    assert catalog_rows(cli, cfg)[bid]["storages"] == []
    for cmd in (["backups", "list"], ["backups", "show", bid]):
        r = cli(["--config", cfg, *cmd])
        assert r.code == 0 and "no complete copy" in " ".join(r.out.split()), r.output


def _prune_stopped_at(cfg: Path, point: str, sig: int, tmp_path: Path) -> tuple[int, bytes]:
    """``backups prune --json`` stopped with ``sig`` once it reaches the fault point ``point`` (paused 1 s)."""
    mark = tmp_path / f"mark-{point}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "UPKEEPER_FAULT_PAUSE": f"{point}:1",
           "UPKEEPER_FAULT_MARK": str(mark)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "prune", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), p.communicate(timeout=30)
        p.send_signal(sig)
        out, _err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out


def test_a_prune_stopped_by_sigterm_finishes_the_set_under_way_and_says_what_it_did_not_delete(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """SIGTERM (``timeout``, systemd) while prune deletes the first of three sets: that set goes whole — from
    the storage and from the catalog — then the command stops (exit 143) and --json says what it deleted and
    what not (the two other sets, the series not reached).  It used to print nothing, and a stop between the
    storage's deletion and the catalog's left 'backups list' listing a set no storage holds."""
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [fabricate(store, now - timedelta(days=d, hours=1)) for d in range(4)]  # newest first
    other = fabricate(store, now - timedelta(days=1), database="zother")  # pruned after 'app'
    cfg = _config(make_config, store, {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    code, out = _prune_stopped_at(cfg, "prune-set-deleted", signal.SIGTERM, tmp_path)
    assert code == 143, out
    app, rest = json.loads(out)
    assert app["interrupted"] and rest["interrupted"], out
    assert app["deleted"] == [ids[1]] and app["not_deleted"] == ids[2:], app
    assert [b["id"] for b in app["backups"] if not b["keep"]] == ids[1:]
    assert rest["database"] == "zother" and rest["deleted"] == [] and "before it reached" in rest["errors"][0]
    on_storage = {p.parent.name for p in store.rglob("manifest.json")}
    assert on_storage == {ids[0], *ids[2:], other}
    assert not (store / "db" / "app" / ids[1]).exists()
    assert {b["id"] for b in cli(["--config", cfg, "backups", "list", "--json"]).json()} == on_storage


def test_the_next_prune_forgets_a_set_a_killed_prune_left_half_deleted(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """kill -9 of prune just after it deleted a set's manifest (its objects and the catalog's row not yet): the
    set is incomplete on storage.  The next prune deletes it as a leftover and the catalog's row with it — it
    used to stay, 'backups list' showing a backup no storage holds until a 'backups sync'."""
    store = tmp_path / "store"
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [fabricate(store, now - timedelta(days=d, hours=1)) for d in range(2)]
    cfg = _config(make_config, store, {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0})
    assert cli(["--config", cfg, "backups", "sync"]).code == 0
    code, _out = _prune_stopped_at(cfg, "set-manifest-deleted", signal.SIGKILL, tmp_path)
    assert code == -signal.SIGKILL
    assert (store / "db" / "app" / ids[1] / "data.zst").exists()
    assert not (store / "db" / "app" / ids[1] / "manifest.json").exists()
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    [series] = r.json()
    assert series["incomplete_deleted"] == [ids[1]], series
    assert not (store / "db" / "app" / ids[1]).exists()
    assert [b["id"] for b in cli(["--config", cfg, "backups", "list", "--json"]).json()] == [ids[0]]


def test_a_set_whose_object_is_still_being_written_is_no_leftover(tmp_path: Path) -> None:
    """A set whose listed objects are days old may still be receiving one (a dump streaming for longer than
    incomplete_after: its temporary file is not listed).  Prune leaves it while that write makes progress —
    it deleted the set's finished objects, and the run then committed a manifest naming objects that were
    gone — and deletes it once the write is idle too."""
    from upkeeper.backup.prune import prune_series
    from upkeeper.config.backup import RetentionPolicy

    store = tmp_path / "store"
    now = datetime.now(UTC)
    fabricate(store, now - timedelta(days=3))
    s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
    started = now - timedelta(days=2)
    prefix = f"db/app/{new_backup_id(started)}/"
    put_bytes(s, prefix + "globals.zst", b"glob")
    os.utime(store / prefix / "globals.zst", (started.timestamp(), started.timestamp()))
    w = s.open_write(prefix + "dump.zst")
    w.write(b"x" * 1000)  # and more to come
    try:
        def prune() -> Any:
            return prune_series([s], "db", "app", "postgres", RetentionPolicy(keep_last=5), default_tz="UTC",
                                now=now, incomplete_after=timedelta(hours=24))

        report = prune()
        assert report.incomplete_kept == [prefix.split("/")[2]] and not report.incomplete_deleted, report
        assert (store / prefix / "globals.zst").exists()
        [partial] = (store / prefix).glob("*.upkeeper-partial")
        os.utime(partial, (started.timestamp(), started.timestamp()))  # the writer died long ago
        report = prune()
        assert report.incomplete_deleted == [prefix.split("/")[2]], report
        assert not (store / prefix / "globals.zst").exists()
    finally:
        w.abort()


def test_a_backup_that_lost_an_object_while_it_was_written_is_never_committed(tmp_path: Path) -> None:
    """A set's object deleted before its manifest is written (a prune elsewhere took the set for a leftover):
    the commit fails naming the object, and neither a manifest nor a catalog row says the backup is complete."""
    from upkeeper.backup.sets import open_env
    from upkeeper.config.loader import load_text
    from upkeeper.errors import BackupError

    store = tmp_path / "store"
    store.mkdir()
    config = load_text(json.dumps({"storages": {"here": {"kind": "local", "path": str(store), "fsync": False}}}))
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    env = open_env(config, None, Catalog(h))
    try:
        from upkeeper.backup.sets import SetWriter

        writer = SetWriter(env, "postgres", "db", "app")
        for name in ("globals.zst", "dump.zst"):
            put_bytes(env.storages[0], writer.prefix + name, b"hello")
            writer.add(ObjectRecord(name=name, size=5, sha256="0" * 64, raw_size=5))
        env.storages[0].delete(writer.prefix + "globals.zst")
        with pytest.raises(BackupError, match=r"lost objects on storage here while it was written: "
                                              r"globals.zst \(missing\)"):
            writer.commit({})
        assert not (store / writer.prefix / "manifest.json").exists()
        assert Catalog(h).list() == []
    finally:
        env.close()
        h.close()


def test_a_set_deleted_from_one_storage_only_is_not_reported_deleted(cli: Any, make_config: Any, tmp_path: Path,
                                                                     sftp_server: SshServer) -> None:
    """Retention deletes a set from local1, but the SFTP server refuses (a directory the SSH user may not
    write): the set is not reported deleted (it was, while its copy stayed), the catalog names the storage that
    still holds it, and the next prune finishes the job."""
    if pwd.getpwnam(sftp_server.user).pw_uid == 0:
        pytest.skip("the SSH user is root: no directory refuses it")
    store = tmp_path / "store"
    store.mkdir()
    local = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
    sftp_config = sftp_storage_config(sftp_server)
    vault = open_storage("vault", sftp_config)
    now = datetime.now(UTC)
    try:
        old, new = (put_set(local, now - timedelta(days=d)) for d in (2, 1))
        for m in (old, new):
            put_bytes(vault, m.prefix + "data.zst", b"hello")
            write_manifest([vault], m)
    finally:
        vault.close()
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False},
                                    "vault": sftp_config.model_dump(mode="json", exclude_none=True)},
                       "backup": {"encryption": "none"},
                       "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                                              "options": {"retention": {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0,
                                                                        "keep_monthly": 0}}}}})
    assert sync(cli, cfg)[1]["added"] == 2
    locked = Path(sftp_config.path) / old.prefix
    locked.chmod(0o555)
    try:
        r = cli(["--config", cfg, "backups", "prune", "--json"])
    finally:
        locked.chmod(0o755)
    assert r.code == 1, r.output
    [series] = r.json()
    assert series["deleted"] == [] and series["delete_failed"] == [old.id], series
    assert [e.split(":")[0] for e in series["errors"]] == ["vault"], series
    assert not (store / old.prefix).exists()
    assert catalog_rows(cli, cfg)[old.id]["storages"] == ["vault"]
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["deleted"] == [old.id]
    assert old.id not in catalog_rows(cli, cfg)


def test_a_set_whose_storage_fails_after_its_manifest_went_is_not_listed_as_complete(
        cli: Any, make_config: Any, tmp_path: Path, sftp_server: SshServer) -> None:
    """Retention deletes a set from the SFTP server: its manifest goes, then the server refuses the rest (here a
    directory the SSH user may no longer write).  The catalog still named the server for it: 'backups list'
    showed a complete backup whose only copy had no manifest (a restore from it failed), until the next prune.
    Now the error says the manifest went and what is left is no backup; the set is neither reported deleted nor
    listed; the next prune deletes the remains as a leftover."""
    if pwd.getpwnam(sftp_server.user).pw_uid == 0:
        pytest.skip("the SSH user is root: no directory refuses it")
    sftp_config = sftp_storage_config(sftp_server)
    vault = open_storage("vault", sftp_config)
    now = datetime.now(UTC)
    try:
        old, new = (put_set(vault, now - timedelta(days=d)) for d in (2, 1))
    finally:
        vault.close()
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "storages": {"vault": sftp_config.model_dump(mode="json", exclude_none=True)},
                       "backup": {"encryption": "none"},
                       "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                                              "options": {"retention": {"keep_last": 1, "keep_daily": 0,
                                                                        "keep_weekly": 0, "keep_monthly": 0}}}}})
    assert sync(cli, cfg)[1]["added"] == 2
    set_dir = Path(sftp_config.path) / old.prefix
    for f in set_dir.iterdir():  # written then (so that its remains are an old leftover)
        os.utime(f, (old.started_at.timestamp(), old.started_at.timestamp()))
    mark = tmp_path / "mark"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "UPKEEPER_FAULT_PAUSE": "set-manifest-deleted:5",
           "UPKEEPER_FAULT_MARK": str(mark)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "prune", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), p.communicate(timeout=30)
        assert not (set_dir / "manifest.json").exists()  # the manifest went; the objects are next
        set_dir.chmod(0o555)  # and the server refuses them (the 5 s pause leaves time to do this)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        set_dir.chmod(0o755)
    assert p.returncode == 1, out + err
    assert (set_dir / "data.zst").exists()  # what is left: no backup
    assert list(catalog_rows(cli, cfg)) == [new.id]  # not listed as a backup any more
    [series] = json.loads(out)
    assert series["deleted"] == [] and series["delete_failed"] == [old.id], series
    [error] = series["errors"]
    assert error.startswith(f"vault: deleting {old.id}: ") and "its manifest was deleted there first" in error
    assert "no backup" in error and "next prune" in error
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["incomplete_deleted"] == [old.id]
    assert not set_dir.exists()


def _lease_env(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A backup env whose one storage, "there", is of ``kind`` (real servers for s3 and sftp)."""
    from upkeeper.backup.sets import open_env
    from upkeeper.config.loader import load_text

    if kind == "local":
        (tmp_path / "store").mkdir()
        conf: dict[str, Any] = {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}
    elif kind == "s3":
        conf = request.getfixturevalue("s3_server").storage_config(request.getfixturevalue("s3_bucket"),
                                                                   prefix="backups")
    else:
        conf = sftp_storage_config(request.getfixturevalue("sftp_server")).model_dump(mode="json",
                                                                                     exclude_none=True)
    config = load_text(json.dumps({"storages": {"there": conf}, "backup": {"encryption": "none"}}))
    return open_env(config, None, None)


@pytest.mark.parametrize("kind", ["local", "s3", "sftp"])
def test_a_set_whose_writer_holds_a_fresh_lease_is_no_leftover(kind: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    """A set whose writer is alive but has uploaded nothing for longer than incomplete_after (pg_dump busy for
    hours on a huge table before its next object): its lease — refreshed on the storage itself, so that a prune
    on another node sees it — keeps prune from deleting its first objects.  A stale lease (the writer died)
    protects nothing, and the lease is never taken for an object of the set."""
    from upkeeper.backup.manifest import scan_sets
    from upkeeper.backup.prune import index_sets, prune_series
    from upkeeper.backup.sets import SetWriter
    from upkeeper.config.backup import RetentionPolicy

    env = _lease_env(kind, request, tmp_path)
    s = env.storages[0]
    try:
        writer = SetWriter(env, "postgres", "db", "app")
        up = writer.upload("globals.zst")
        up.write(b"CREATE ROLE app;\n")
        writer.add(up.finish())
        bid = writer.id

        def prune(now: datetime) -> Any:  # incomplete_after 0: every listed object counts as idle long enough
            return prune_series([s], "db", "app", "postgres", RetentionPolicy(keep_last=5), default_tz="UTC",
                                now=now, incomplete_after=timedelta(0))

        report = prune(datetime.now(UTC))
        assert report.incomplete_kept == [bid] and not report.incomplete_deleted and not report.errors, report
        assert s.stat(writer.prefix + "globals.zst") is not None
        from upkeeper.backup.manifest import LEASE, LEASE_TTL

        [st] = scan_sets(s, "db", "app")
        assert [o.key for o in st.objects] == [writer.prefix + "globals.zst"] and st.lease is not None, st
        # the writer carries on and commits: its lease is gone, the manifest names its objects only
        up = writer.upload("dump.zst")
        up.write(b"x" * 1000)
        writer.add(up.finish())
        manifest = writer.commit({})
        assert sorted(o.key for o in s.list(writer.prefix)) == [writer.prefix + n for n in
                                                                ("dump.zst", "globals.zst", "manifest.json")]
        assert [o.name for o in manifest.objects] == ["globals.zst", "dump.zst"]
        # a lease left beside a complete set (its deletion failed) is no object of it: listed, indexed, kept
        put_bytes(s, writer.prefix + LEASE, b"{}")
        [st] = scan_sets(s, "db", "app")
        assert st.complete and LEASE not in {o.key.rsplit("/", 1)[1] for o in st.objects}, st
        errors: list[str] = []
        assert bid in index_sets([s], "db", "app", errors)[("db", "app")].complete and not errors
        # another set whose writer died: its lease goes stale and protects it no more
        dead = SetWriter(env, "postgres", "db", "app")
        up = dead.upload("globals.zst")
        up.write(b"CREATE ROLE app;\n")
        dead.add(up.finish())
        assert dead.lease is not None
        dead.lease.stop()  # (as kill -9 would: no refresh, no deletion)
        report = prune(datetime.now(UTC))
        assert report.incomplete_kept == [dead.id], report
        report = prune(datetime.now(UTC) + LEASE_TTL + timedelta(minutes=1))
        assert report.incomplete_deleted == [dead.id] and not report.errors, report
        assert list(s.list(dead.prefix)) == []
        assert report.decisions and [d.item.id for d in report.decisions] == [bid]
    finally:
        env.close()


def test_a_lease_is_refreshed_while_the_set_is_written_and_gone_after_an_abort(tmp_path: Path) -> None:
    """The lease is rewritten every lease_refresh from a thread of its own (while the run waits for pg_dump),
    and an aborted set leaves nothing behind: no refresh writes the lease again once the set is deleted."""
    from upkeeper.backup.manifest import LEASE
    from upkeeper.backup.sets import SetWriter, open_env
    from upkeeper.config.loader import load_text
    from upkeeper.storage.base import get_bytes

    store = tmp_path / "store"
    store.mkdir()
    config = load_text(json.dumps({"storages": {"here": {"kind": "local", "path": str(store), "fsync": False}},
                                   "node": "n1"}))
    env = open_env(config, None, None, job="db-backup", run_id=7)
    try:
        writer = SetWriter(env, "postgres", "db", "app", lease_refresh=timedelta(seconds=0.1))
        writer.hold_lease()
        first = json.loads(get_bytes(env.storages[0], writer.prefix + LEASE))
        assert (first["backup"], first["pid"], first["job"], first["run_id"], first["node"]) == (
            writer.id, os.getpid(), "db-backup", 7, "n1"), first
        deadline = time.monotonic() + 5
        while json.loads(get_bytes(env.storages[0], writer.prefix + LEASE))["refreshed_at"] == \
                first["refreshed_at"]:
            assert time.monotonic() < deadline, "the lease was never refreshed"
            time.sleep(0.05)
        writer.abort()
        time.sleep(0.3)  # (three refresh intervals: none may bring the lease back)
        assert not (store / writer.prefix).exists() or list((store / writer.prefix).iterdir()) == []
        assert list(env.storages[0].list("db/")) == []
    finally:
        env.close()


def test_installations_sharing_a_storage_never_prune_each_others_backups(cli: Any, make_config: Any,
                                                                         tmp_path: Path) -> None:
    """Two installations with histories of their own (one config copied to two web servers) back up a target of
    the same name to one storage: each one's retention counted the other's backups as its own (keep_last 2
    left each node one backup).  Now each keeps its own, warns, and `backups sync` adopts the other's."""
    store = tmp_path / "store"
    cfgs: dict[str, Path] = {}
    for node in ("web-a", "web-b"):
        src = tmp_path / f"src-{node}"
        src.mkdir()
        (src / "f.txt").write_text(node)
        cfgs[node] = make_config({
            "node": node, "history": str(tmp_path / f"{node}.db"),
            "targets": {"app": {"kind": "app", "root": str(src)}},
            "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
            "backup": {"encryption": "none",
                       "retention": {"keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}},
            "jobs": {"files": {"task": "files.backup", "target": "app", "options": {"paths": [str(src)]}}},
        }, name=f"{node}.yaml")
    written: dict[str, list[str]] = {n: [] for n in cfgs}
    last: dict[str, Any] = {}
    for _ in range(2):
        for node, cfg in cfgs.items():
            r = cli(["--config", cfg, "run", "files", "--json"])
            assert r.code == 0, r.output
            last[node] = r.json()[0]
            written[node].append(last[node]["artifacts"][0]["id"])
    assert {p.parent.name for p in store.rglob("manifest.json")} == {*written["web-a"], *written["web-b"]}
    warned = [f for f in last["web-a"]["findings"] if f["check"] == "backup.foreign_sets"]
    assert len(warned) == 1 and "web-b" in warned[0]["message"] and "1 backup(s)" in warned[0]["message"], warned  # web-b's first
    r = cli(["--config", cfgs["web-a"], "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    (series,) = r.json()
    assert [b["id"] for b in series["backups"]] == written["web-a"][::-1]
    assert series["foreign"] == [{"id": i, "node": "web-b"} for i in sorted(written["web-b"])]
    # a host rebuilt under a new name takes its predecessor's backups over by a sync
    r = cli(["--config", cfgs["web-a"], "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["adopted_nodes"] == {"web-b": 2}, r.output
    r = cli(["--config", cfgs["web-a"], "backups", "prune", "--dry-run", "--json"])
    assert "foreign" not in r.json()[0] and len(r.json()[0]["backups"]) == 4


def test_a_manifest_whose_node_is_not_text_neither_fails_retention_nor_sync(cli: Any, make_config: Any,
                                                                             tmp_path: Path) -> None:
    """Another tool's (or a hand-edited) manifest names its node with a number or a list: read as text, it is
    another node's set like any other — it failed every backup run here (a TypeError joining the nodes' names for
    the backup.foreign_sets warning: the backup stored, the run 'error'), 'backups prune' (a list is unhashable)
    and 'backups sync'."""
    from upkeeper.backup.manifest import set_prefix
    from upkeeper.backup.prune import index_sets
    from upkeeper.tasks.backup._common import foreign_finding

    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(2)]
    for bid, node in zip(ids, (5, ["web", "b"]), strict=True):
        path = store / set_prefix("db", "app", bid) / "manifest.json"
        d = json.loads(path.read_text())
        path.write_text(json.dumps({**d, "node": node}))
    cfg = _config(make_config, store)
    r = cli(["--config", cfg, "backups", "prune", "--dry-run", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["foreign"] == sorted([{"id": ids[0], "node": "5"}, {"id": ids[1], "node": '["web", "b"]'}],
                                            key=lambda x: x["id"]), r.output
    errors: list[str] = []
    idx = index_sets([LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))], "db", "app", errors)
    (manifest_of,) = idx.values()
    foreign = {b: n for b in ids if (n := manifest_of.nodes[b]) is not None}
    finding = foreign_finding(Manifest(id=ids[0], kind="postgres", target="db", database="app", started_at=now,
                                       finished_at=now, objects=[]), foreign, "me")
    assert '5, ["web", "b"]' in finding.message and not errors, finding.message
    code, out = sync(cli, cfg)
    assert code == 0 and out["adopted_nodes"] == {"5": 1, '["web", "b"]': 1}, out


def test_a_container_whose_host_name_changes_at_every_start_is_told_to_set_node(cli: Any, make_config: Any,
                                                                                tmp_path: Path) -> None:
    """Docker without --hostname: every new container is another node (its id) with a new history, so the earlier
    containers' backups are 'another installation's', kept for ever.  The warning says so and gives the fix — a
    fixed 'node:' — directly; 'backups prune' says it too.  Other installations' names keep the general text."""
    store = tmp_path / "store"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("data")

    def container(node: str) -> Path:
        return Path(make_config({
            "node": node, "history": str(tmp_path / f"{node}.db"),  # (a history inside the container: new each time)
            "targets": {"app": {"kind": "app", "root": str(src)}},
            "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
            "backup": {"encryption": "none"},
            "jobs": {"files": {"task": "files.backup", "target": "app", "options": {"paths": [str(src)]}}},
        }, name=f"{node}.yaml"))

    first = container("3f2a1b9c0d4e")
    r = cli(["--config", first, "run", "files", "--json"])
    assert r.code == 0 and not [f for f in r.json()[0]["findings"] if f["check"] == "backup.foreign_sets"], r.output
    second = container("9c8d7e6f5a4b")  # the container re-created: a new id, a new host name
    r = cli(["--config", second, "run", "files", "--json"])
    assert r.code == 0, r.output
    (warned,) = [f for f in r.json()[0]["findings"] if f["check"] == "backup.foreign_sets"]
    assert "3f2a1b9c0d4e look(s) like container ids" in warned["message"], warned
    assert warned["remediation"].startswith("set 'node:' in the config to a fixed name"), warned
    assert "--hostname" in warned["remediation"] and "'upkeeper backups sync'" in warned["remediation"], warned
    r = cli(["--config", second, "backups", "prune", "--dry-run"])
    assert r.code == 0 and "set 'node:' in the config to a fixed name" in " ".join(r.err.split()), r.output
    # the fix, as the hint says: a fixed node name, and a sync that adopts the earlier containers' backups
    fixed = container("web-1")
    r = cli(["--config", fixed, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["adopted_nodes"] == {"3f2a1b9c0d4e": 1, "9c8d7e6f5a4b": 1}, r.output
    r = cli(["--config", fixed, "run", "files", "--json"])
    assert r.code == 0 and not [f for f in r.json()[0]["findings"] if f["check"] == "backup.foreign_sets"], r.output


def test_sync_and_prune_name_a_hostile_manifest_and_go_on(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A manifest.json with a size of 1e999, a start before year 1 in UTC or JSON nested 100000 deep (another
    tool's, or damaged) ended 'backups sync' and 'backups prune' in "internal error: OverflowError" /
    "RecursionError": no set recorded, none pruned.  Now each is named, the others are recorded, and the sets with
    an unreadable manifest are never deleted."""
    from upkeeper.backup.manifest import set_prefix

    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d, hours=1)) for d in range(5)]  # newest first
    bad = {ids[2]: lambda d: {**d, "objects": [{**o, "size": 1e999} for o in d["objects"]]},
           ids[3]: lambda d: {**d, "started_at": "0001-01-01T00:00+01:00"},
           ids[4]: None}
    for bid, edit in bad.items():
        path = store / set_prefix("db", "app", bid) / "manifest.json"
        if edit is None:
            path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
        else:
            path.write_text(json.dumps(edit(json.loads(path.read_text()))).replace("Infinity", "1e999"))
    cfg = _config(make_config, store, {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})

    code, res = sync(cli, cfg)
    assert code == 1 and res["added"] == 2, res
    errors = " ".join(res["errors"])
    for bid in bad:
        assert f"local1: db/app/{bid}/manifest.json: " in errors, errors
    assert "cannot convert float infinity" in errors and "date value out of range" in errors
    assert "nested too deeply" in errors
    assert set(catalog_rows(cli, cfg)) == {ids[0], ids[1]}

    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 1 and "internal error" not in r.err, r.output
    pruned_errors = " ".join(e for series in r.json() for e in series["errors"])
    assert all(f"db/app/{bid}/manifest.json" in pruned_errors for bid in bad), pruned_errors
    assert {p.parent.name for p in store.rglob("manifest.json")} == {ids[0], *bad}, r.output  # ids[1] pruned only
