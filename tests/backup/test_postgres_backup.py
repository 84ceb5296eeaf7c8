"""postgres.backup against a real PostgreSQL: the set on storage decrypts with age, decompresses with zstd
and restores with pg_restore; failures are failed runs with nothing listed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from upkeeper.sandbox.postgres import PostgresCluster

from .conftest import AgeKey


def _sets(store: Path) -> list[Path]:
    return sorted(p.parent for p in store.rglob("manifest.json"))


def test_backup_streams_to_two_storages_and_restores_with_standard_tools(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, age_key: AgeKey,
        tmp_path: Path) -> None:
    db, counts = app_db
    cfg = backup_config(db, storages=2, options={"globals": True})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run
    [art] = run["artifacts"]
    sets1, sets2 = _sets(tmp_path / "store1"), _sets(tmp_path / "store2")
    assert [p.name for p in sets1] == [p.name for p in sets2] == [art["id"]]
    set_dir = sets1[0]
    assert set_dir.relative_to(tmp_path / "store1").parts[:2] == ("db", db)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["kind"] == "postgres" and manifest["database"] == db and manifest["target"] == "db"
    assert manifest["postgres"]["row_counts"] == {f"public.{t}": n for t, n in counts.items()}
    assert manifest["postgres"]["server_version"].startswith("15")
    names = {o["name"]: o for o in manifest["objects"]}
    assert set(names) == {f"{db}.dump.zst.age", "globals.sql.zst.age"}
    # both copies identical byte for byte, matching the manifest's SHA-256
    import hashlib
    for o in manifest["objects"]:
        a = (set_dir / o["name"]).read_bytes()
        b = (sets2[0] / o["name"]).read_bytes()
        assert a == b and hashlib.sha256(a).hexdigest() == o["sha256"] and len(a) == o["size"]
        assert a.startswith(b"age-encryption.org/v1")
    # no plaintext, no temp files left behind
    assert not list((tmp_path / "store1").rglob("*.upkeeper-partial"))
    # standard tools only: age -d | zstd -d | pg_restore
    dump = tmp_path / "plain.dump"
    enc = set_dir / f"{db}.dump.zst.age"
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(enc)], check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    assert raw.startswith(b"PGDMP") and len(raw) == names[f"{db}.dump.zst.age"]["raw_size"]
    dump.write_bytes(raw)
    listing = subprocess.run([str(pg.bin / "pg_restore"), "--list", str(dump)], check=True, capture_output=True,
                             text=True).stdout
    assert "TABLE DATA public users" in listing
    # the catalog lists it
    r = cli(["--config", cfg, "backups", "list", "--json"])
    assert r.code == 0, r.output
    [row] = r.json()
    assert row["id"] == art["id"] and row["status"] == "complete" and sorted(row["storages"]) == ["local1", "local2"]


def test_unencrypted_local_backup_is_plain_zstd(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                               tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db, encrypt=False)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    [set_dir] = _sets(tmp_path / "store1")
    obj = set_dir / f"{db}.dump.zst"
    raw = subprocess.run(["zstd", "-d", "-c", str(obj)], check=True, capture_output=True).stdout
    assert raw.startswith(b"PGDMP")
