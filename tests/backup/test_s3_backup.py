"""Backups to S3 (SeaweedFS) and local storage at once; the S3 server stopped mid-upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.s3 import SeaweedS3

from .conftest import AgeKey


def _config(make_config: Any, pg: PostgresCluster, db: str, tmp_path: Path, s3: SeaweedS3, bucket: str,
            age_key: AgeKey) -> Path:
    return make_config({
        "targets": {"db": pg.target(db)},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False},
                     "offsite": s3.storage_config(bucket, prefix="backups")},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                               "options": {"databases": [db], "globals": True}},
                 "backup-verify": {"task": "backup.verify", "target": "db", "options": {"storage": "offsite"}}},
    })


def _s3_keys(s3: SeaweedS3, bucket: str) -> list[str]:
    c = s3.client()
    return sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_backup_to_s3_and_local_at_once_and_verify_from_s3(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, age_key: AgeKey, make_config: Any) -> None:
    db, counts = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, age_key)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    keys = _s3_keys(s3_server, s3_bucket)
    prefix = f"backups/db/{db}/{bid}/"
    assert keys == sorted(prefix + n for n in ("manifest.json", f"{db}.dump.zst.age", "globals.sql.zst.age"))
    local = json.loads(next((tmp_path / "store1").rglob("manifest.json")).read_text())
    remote = json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "manifest.json")["Body"].read())
    assert remote == local  # the same set, byte for byte the same objects (hashes in the manifest)
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["storages"] == ["local1", "offsite"]
    # verify reads from S3 and restores
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    art = r.json()[0]["artifacts"][0]
    assert art["ok"] and art["tables"] == len(counts)
    # the catalog can be rebuilt from S3 alone
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["removed"] == 0


def test_s3_stopped_mid_upload_fails_clearly_and_retry_succeeds(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, age_key: AgeKey, make_config: Any) -> None:
    db, _ = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, age_key)
    mark = tmp_path / "at-fault-point"
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": "during-upload:4", "UPKEEPER_FAULT_MARK": str(mark)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "db-backup", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), "the backup never reached its upload"
        s3_server.kill()  # mid-upload: the writers are open, bytes are flowing
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
        if not s3_server.running:
            s3_server.start()
    assert p.returncode == 1, err.decode()
    run = json.loads(out)[0]
    assert run["status"] == "fail"
    assert "offsite" in run["summary"], run["summary"]  # names the storage that failed
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert not list((tmp_path / "store1").rglob("manifest.json"))
    # S3 is back: a retry succeeds and lands on both storages
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    assert any(k.endswith(f"{bid}/manifest.json") for k in _s3_keys(s3_server, s3_bucket))
    assert [x["id"] for x in cli(["--config", cfg, "backups", "list", "--json"]).json()] == [bid]


def test_backup_to_sftp_and_verify_from_it(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                           tmp_path: Path, sftp_server: Any, age_key: AgeKey,
                                           make_config: Any) -> None:
    from services import sftp_storage_config

    db, counts = app_db
    sftp = sftp_storage_config(sftp_server).model_dump(mode="json", exclude_none=True)
    cfg = make_config({
        "targets": {"db": pg.target(db)},
        "storages": {"vault": sftp},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {"databases": [db]}},
                 "backup-verify": {"task": "backup.verify", "target": "db"}},
    })
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    on_server = Path(sftp["path"]) / "db" / db / bid
    assert sorted(p.name for p in on_server.iterdir()) == ["globals.sql.zst.age", "manifest.json",
                                                           f"{db}.dump.zst.age"]
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["artifacts"][0]["tables"] == len(counts)


def test_sync_reads_each_manifest_from_s3_once(cli: Any, make_config: Any, tmp_path: Path, s3_server: SeaweedS3,
                                               s3_bucket: str, age_key: AgeKey,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`backups sync` read every manifest.json twice from each storage (listing the sets, then once more to
    record it) and asked S3 for its size in between: the requests it sends are counted, and each manifest is
    fetched once, never HEAD-ed; the catalog it rebuilds is the one the backups wrote."""
    from collections import Counter

    import upkeeper.storage.s3 as s3mod

    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<h1>hi</h1>\n")
    cfg = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"offsite": s3_server.storage_config(s3_bucket, prefix="backups")},
        "backup": {"encryption": {"recipients": [age_key.recipient]}},
        "jobs": {"site-backup": {"task": "files.backup", "target": "web", "options": {"paths": ["index.html"]}}},
    })
    for _ in range(2):
        assert cli(["--config", cfg, "run", "site-backup", "--json"]).code == 0
    written = {row["id"]: cli(["--config", cfg, "backups", "show", row["id"], "--json"]).json()
               for row in cli(["--config", cfg, "backups", "list", "--json"]).json()}
    assert len(written) == 2, written
    (tmp_path / "history.db").unlink()  # a lost catalog, rebuilt from storage
    requests: Counter[tuple[str, str]] = Counter()
    real_session = s3mod._botocore_session

    def counting_session() -> Any:
        session = real_session()
        session.register("before-parameter-build.s3", lambda model, params, **_: requests.update(
            [(model.name, str(params.get("Key", "")))]))
        return session

    monkeypatch.setattr(s3mod, "_botocore_session", counting_session)
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["added"] == 2, r.output
    manifests = {k: n for (op, k), n in requests.items() if k.endswith("/manifest.json")}
    assert len(manifests) == 2 and all(k.startswith("backups/web/") for k in manifests), requests
    assert {(op, k): n for (op, k), n in requests.items() if k in manifests} == \
        {("GetObject", k): 1 for k in manifests}, requests
    for bid, row in written.items():  # as the backup recorded it, but for the run that made it
        shown = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
        assert {**shown, "run_id": None} == {**row, "run_id": None}, (shown, row)
