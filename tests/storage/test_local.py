"""Local-storage faults: a full filesystem (a real 2 MiB tmpfs), a directory that cannot be read."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import local_storage_config
from upkeeper.errors import StorageError
from upkeeper.storage import open_storage
from upkeeper.storage.base import get_bytes, put_bytes

MiB = 1024 * 1024


def test_full_filesystem_is_a_clear_error_and_leaves_nothing(small_fs: Path) -> None:
    storage = open_storage("local", local_storage_config(small_fs / "backups"))
    w = storage.open_write("db/set1/dump.zst")
    with pytest.raises(StorageError) as exc:
        for _ in range(48):  # 3 MiB into a 2 MiB filesystem
            w.write(os.urandom(64 * 1024))
        w.commit()
    w.abort()
    err = exc.value
    assert "no space left on device" in str(err) and str(small_fs) in str(err)
    assert "free space" in (err.hint or "")
    assert not err.permanent  # it may succeed once space is freed
    assert list(storage.list()) == [] and storage.stat("db/set1/dump.zst") is None
    assert [p for p in small_fs.rglob("*") if p.is_file()] == []  # no partial file eats the space

    # the space really is free again: the next (smaller) run succeeds
    data = os.urandom(MiB + MiB // 2)
    put_bytes(storage, "db/set2/dump.zst", data)
    assert get_bytes(storage, "db/set2/dump.zst") == data


def test_put_bytes_on_a_full_filesystem_leaves_nothing(small_fs: Path) -> None:
    storage = open_storage("local", local_storage_config(small_fs))
    with pytest.raises(StorageError, match="no space left"):
        put_bytes(storage, "big", os.urandom(3 * MiB))
    assert list(storage.list()) == []
    assert [p for p in small_fs.rglob("*") if p.is_file()] == []


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Root reads every directory: act as 'nobody' for the block (nothing to do when we are not root)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(pwd.getpwnam("nobody").pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_directory_that_cannot_be_read_fails_the_listing() -> None:
    """os.walk skips what it cannot read unless told otherwise; a listing without that directory would let
    'backups sync' drop the catalog rows of every set in it."""
    root = Path(tempfile.mkdtemp(prefix="upk-local-locked-", dir="/tmp"))  # pytest's tmp is 0700, closed to nobody
    locked = root / "db" / "other"
    try:
        storage = open_storage("local", local_storage_config(root, fsync=False))
        put_bytes(storage, "db/app/1/manifest.json", b"{}")
        put_bytes(storage, "db/other/2/manifest.json", b"{}")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        with unprivileged():
            assert sorted(o.key for o in storage.list()) == ["db/app/1/manifest.json", "db/other/2/manifest.json"]
        locked.chmod(0)
        with unprivileged(), pytest.raises(StorageError) as exc:
            list(storage.list())
        assert exc.value.message == f"cannot list {locked}: Permission denied", exc.value
        assert exc.value.permanent
    finally:
        if locked.exists():
            locked.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
