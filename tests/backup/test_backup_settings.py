"""backup settings that change what is written: zstd level and threads, and 'encryption: none' to remote storage."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
import zstandard

from upkeeper.backup.sets import SetWriter, open_env
from upkeeper.config.loader import load_text
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.s3 import SeaweedS3


def _dump_object(store: Path, db: str) -> Path:
    [obj] = list(store.rglob(f"{db}.dump.zst"))
    return obj


def test_compression_level_is_applied(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                      backup_config: Any, tmp_path: Path) -> None:
    """Level 19 writes a smaller object than level 1 of the same dump, and both decompress to it."""
    db, _ = app_db
    sizes = {}
    raws = {}
    for level in (1, 19):
        store = tmp_path / f"level{level}"
        cfg = backup_config(db, encrypt=False, storages={"local1": {"kind": "local", "path": str(store),
                                                                     "fsync": False}},
                            backup={"compression_level": level, "compression_threads": 1})
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0, r.output
        obj = _dump_object(store, db)
        sizes[level] = obj.stat().st_size
        raws[level] = subprocess.run(["zstd", "-d", "-c", str(obj)], check=True, capture_output=True).stdout
    assert sizes[19] < sizes[1] * 0.95, sizes
    assert raws[1].startswith(b"PGDMP") and raws[19].startswith(b"PGDMP")
    assert abs(len(raws[1]) - len(raws[19])) < 512  # the same dump (its header holds a timestamp)


def test_encryption_none_allows_remote_storage(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                               s3_server: SeaweedS3, s3_bucket: str) -> None:
    """Remote storage without encryption is refused unless the config says 'encryption: none' explicitly;
    then the objects on S3 are plain zstd that the standard tools read."""
    db, _ = app_db
    s3 = s3_server.storage_config(s3_bucket)
    cfg = backup_config(db, encrypt=False, storages={"offsite": s3}, backup={"encryption": "none"})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok", r.json()[0]
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    [key] = [k for k in keys if k.endswith(f"{db}.dump.zst")]
    body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    assert raw.startswith(b"PGDMP")


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_compression_threads_are_applied(tmp_path: Path, threads: int) -> None:
    """backup -> compression_threads reaches zstd: compressing starts exactly that many native worker
    threads (0 = one per CPU, as 'zstd -T0'), counted in /proc while an object is being written."""
    (tmp_path / "store").mkdir()  # upkeeper never creates a storage's directory
    config = load_text(json.dumps({
        "storages": {"here": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"compression_threads": threads},
    }))
    gc.collect()  # an earlier test's compressor frees its threads when collected
    env = open_env(config, None, None)
    try:
        writer = SetWriter(env, "files", "t", "d")
        writer.hold_lease()  # (its refresh thread, started by the first upload, is not the compressor's)
        before = _native_threads()
        upload = writer.upload("data.bin")
        upload.write(os.urandom(1 << 20) * 4)
        during = _native_threads()
        record = upload.finish()
        del upload
        gc.collect()
    finally:
        env.close()
    expected = threads or os.cpu_count()
    assert during - before == expected, (before, during)
    assert record.raw_size == 4 << 20
