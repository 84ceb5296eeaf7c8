"""A damaged manifest.json, as copy, restore and sync report it: each names the storage once, then the path."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .test_prune import fabricate


def _setup(make_config: Any, tmp_path: Path, cli: Any) -> tuple[Path, str, Path]:
    store, other = tmp_path / "store", tmp_path / "other"
    other.mkdir()
    bid = fabricate(store, datetime.now(UTC) - timedelta(days=1))
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},
                       "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False},
                                    "local2": {"kind": "local", "path": str(other), "fsync": False}},
                       "jobs": {"db-backup": {"task": "postgres.backup", "target": "db"}}})
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0, r.output
    (store / "db" / "app" / bid / "manifest.json").write_text(json.dumps({"id": bid}))  # no 'kind'
    return store, bid, cfg


def _once(text: str, bid: str) -> None:
    text = " ".join(text.split())
    assert f"local1: db/app/{bid}/manifest.json: malformed manifest: no 'kind'" in text, text
    assert not re.search(r"local1: (storage )?local1:", text), text  # the storage named once


def test_copy_names_the_storage_of_a_damaged_manifest_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    _, bid, cfg = _setup(make_config, tmp_path, cli)
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "local2", "--json"])
    assert r.code == 1, r.output
    _once(r.output, bid)
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "local2"])
    assert r.code == 1, r.output
    _once(r.err + r.out, bid)


def test_restore_names_the_storage_of_a_damaged_manifest_once(cli: Any, make_config: Any, tmp_path: Path) -> None:
    _, bid, cfg = _setup(make_config, tmp_path, cli)
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", "x"])
    assert r.code != 0, r.output
    _once(r.err + r.out, bid)
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", "x", "--storage", "local1"])
    assert r.code != 0, r.output
    _once(r.err + r.out, bid)
