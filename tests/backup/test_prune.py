"""'backups prune' on real storage: GFS per series, reasons printed, incomplete leftovers cleaned after 24 h,
and 'backups sync' rebuilding the catalog from manifests alone."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from upkeeper.backup.manifest import Manifest, new_backup_id, write_manifest
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.config.storage import LocalStorageConfig
from upkeeper.storage.base import put_bytes
from upkeeper.storage.local import LocalStorage


def fabricate(store: Path, when: datetime, *, database: str = "app", kind: str = "postgres",
              complete: bool = True, target: str = "db") -> str:
    """A small but real set on local storage: one object, then (optionally) its manifest."""
    s = LocalStorage("local1", LocalStorageConfig(path=str(store), fsync=False))
    bid = new_backup_id(when)
    rec = ObjectRecord(name="data.zst", size=5, sha256="0" * 64, raw_size=5)
    m = Manifest(id=bid, kind=kind, target=target, database=database, started_at=when, finished_at=when,
                 objects=[rec])
    put_bytes(s, m.prefix + "data.zst", b"hello")
    if complete:
        write_manifest([s], m)
    for f in (store / m.prefix).iterdir():  # written then, as a real set would have been
        os.utime(f, (when.timestamp(), when.timestamp()))
    return bid


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
    assert [b["id"] for b in series[("other", "postgres")]["backups"]] == [other]
    # the human table names every backup and its reason
    text = cli(["--config", cfg, "backups", "prune", "--dry-run"]).out
    for bid in ids:
        assert bid in text
    assert "daily" in text and "would delete" in text
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


def test_newest_complete_survives_any_policy(cli: Any, make_config: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC)
    ids = [fabricate(store, now - timedelta(days=d)) for d in range(3)]
    cfg = _config(make_config, store, {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0, "keep_last": 0,
                                       "keep_hourly": 0, "keep_within": "1s"})
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


def test_newest_verified_backup_survives_retention(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Failed verifications of newer backups must not cost the last copy known to restore."""
    from upkeeper.backup.catalog import Catalog
    from upkeeper.core.history import History

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
