"""Local-storage faults: a full filesystem (a real 2 MiB tmpfs), a directory that cannot be read, a storage directory
that is missing or an unmounted mount point (never created, never written)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services import local_storage_config
from upkeeper.errors import StorageError
from upkeeper.storage import local, open_storage
from upkeeper.storage.base import clean_partials, get_bytes, put_bytes

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


def test_the_storage_directory_is_never_created(tmp_path: Path) -> None:
    """A missing directory is an unmounted volume or a wrong path: writing, reading, listing and cleaning all fail
    naming the storage and the directory, saying how to fix it, and nothing is created."""
    path = tmp_path / "mnt" / "backup"
    storage = open_storage("disk", local_storage_config(path, create=False))
    calls = [lambda: storage.open_write("db/app/1/dump.zst"), lambda: list(storage.list()),
             lambda: storage.stat("db/app/1/manifest.json"), lambda: storage.open_read("db/app/1/manifest.json"),
             lambda: clean_partials(storage, timedelta(0))]
    for call in calls:
        with pytest.raises(StorageError) as exc:
            call()
        assert exc.value.message.startswith(f"local:{path}: the storage directory does not exist"), exc.value
        assert exc.value.permanent and "'disk'" in (exc.value.hint or "")
        assert f"mkdir -p -m 700 {path}" in (exc.value.hint or "")
    assert not path.exists() and not path.parent.exists()

    # created once: the directories below it (prefix, sets) are upkeeper's to make
    path.mkdir(parents=True)
    prefixed = open_storage("disk", local_storage_config(path, create=False, prefix="web1"))
    assert list(prefixed.list()) == []  # the prefix directory comes with the first object
    put_bytes(prefixed, "db/app/1/dump.zst", b"data")
    assert [o.key for o in prefixed.list()] == ["db/app/1/dump.zst"]
    assert (path / "web1" / "db" / "app" / "1" / "dump.zst").read_bytes() == b"data"


@pytest.fixture
def mount_point(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory declared as a mount point in an fstab (the real one is left alone), nothing mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="upk-mnt ", dir="/tmp"))  # a space: fstab writes it as \040
    fstab = mnt.with_name(mnt.name + ".fstab")
    fstab.write_text("# test\nUUID=1234 /  ext4 defaults 0 1\n"
                     f"LABEL=backup {str(mnt).replace(' ', chr(92) + '040')} ext4 defaults,nofail 0 2\n"
                     "/swapfile none swap sw 0 0\n")
    monkeypatch.setattr(local, "FSTAB", fstab)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)
        fstab.unlink()


@pytest.mark.parametrize("sub", ["", "upkeeper"])
def test_an_unmounted_fstab_mount_point_is_refused(mount_point: Path, sub: str) -> None:
    """The path is the mount point (or a directory in it that exists on the root filesystem too): while nothing is
    mounted there, backups would go to the filesystem below and vanish behind the volume once it is mounted."""
    path = mount_point / sub if sub else mount_point
    path.mkdir(exist_ok=True)
    storage = open_storage("disk", local_storage_config(path, create=False))
    for call in (lambda: storage.open_write("db/app/1/dump.zst"), lambda: list(storage.list())):
        with pytest.raises(StorageError) as exc:
            call()
        assert f"{mount_point} is a mount point in {local.FSTAB} but nothing is mounted on it" in str(exc.value)
        assert f"mount {mount_point}" in (exc.value.hint or "") and exc.value.permanent
    assert [p for p in mount_point.rglob("*") if p != path] == []

    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    path.mkdir(exist_ok=True)
    put_bytes(storage, "db/app/1/dump.zst", b"on the volume")
    assert [o.key for o in storage.list()] == ["db/app/1/dump.zst"]


@pytest.mark.parametrize("fsync", [True, False])
def test_new_directories_are_fsynced_in_their_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fsync: bool) -> None:
    """A power cut cannot be simulated: record which files and directories are fsynced (the real os.fsync still
    runs).  Every directory created below the storage directory has its parent fsynced, so a new set's directory
    -- and the manifest in it -- survives; directories that existed are not fsynced again."""
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    base = tmp_path / "store"
    storage = open_storage("disk", local_storage_config(base, prefix="pre", fsync=fsync))

    def inode(p: Path) -> tuple[int, int]:
        st = p.stat()
        return st.st_dev, st.st_ino

    put_bytes(storage, "db/app/1/manifest.json", b"{}")
    sets = base / "pre" / "db" / "app"
    if not fsync:
        assert synced == []
        return
    dirs = [base, base / "pre", base / "pre" / "db", sets, sets / "1"]
    assert set(synced) == {inode(d) for d in dirs} | {inode(sets / "1" / "manifest.json")}

    synced.clear()
    put_bytes(storage, "db/app/2/manifest.json", b"{}")
    assert set(synced) == {inode(sets), inode(sets / "2"), inode(sets / "2" / "manifest.json")}


def test_an_aborted_write_removes_only_the_directories_it_made_while_empty(tmp_path: Path) -> None:
    """A failed backup leaves no empty ``<target>/<database>/<id>/``; a directory another writer uses (or made)
    stays, and that writer commits."""
    base = tmp_path / "store"
    base.mkdir()
    storage = open_storage("disk", local_storage_config(base))
    put_bytes(storage, "db/app/old/manifest.json", b"{}")  # an earlier backup: db/app/ is not this run's
    first = storage.open_write("db/app/new/a.zst")  # makes db/app/new/
    second = storage.open_write("db/app/new/b.zst")  # in the same directory, made by the first
    first.write(b"x")
    first.abort()
    assert (base / "db" / "app" / "new").is_dir()  # the second writer's file is in it
    second.write(b"y")
    second.commit()
    assert [o.key for o in storage.list()] == ["db/app/new/b.zst", "db/app/old/manifest.json"]
    third = storage.open_write("db/app/newer/dir/c.zst")
    third.abort()
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == [
        "db", "db/app", "db/app/new", "db/app/new/b.zst", "db/app/old", "db/app/old/manifest.json"]


@pytest.mark.parametrize(("base_mode", "file_mode", "dir_mode"), [(0o755, 0o600, 0o700), (0o775, 0o600, 0o700),
                                                                   (0o700, 0o600, 0o700), (0o750, 0o640, 0o750),
                                                                   (0o770, 0o640, 0o750)])
def test_objects_and_their_directories_are_never_readable_by_others(tmp_path: Path, base_mode: int,
                                                                    file_mode: int, dir_mode: int) -> None:
    """A backup is data (an unencrypted dump is the database itself) and a manifest names the tables and their
    row counts: under the usual umask (022) they were written 0644 in 0755 directories, readable by every local
    user.  Now 0600 in 0700 directories -- the partial file too, while it is written -- or, where the admin made
    the storage directory readable by its group and not by others (0750), 0640 in 0750; never readable by
    others."""
    base = tmp_path / "store"
    base.mkdir()
    base.chmod(base_mode)
    storage = open_storage("disk", local_storage_config(base))
    old = os.umask(0o022)
    try:
        w = storage.open_write("db/app/1/app.dump")
        w.write(b"COPY users ...")
        assert w.tmp.stat().st_mode & 0o777 == file_mode
        w.commit()
        put_bytes(storage, "db/app/1/manifest.json", b"{}")
        assert storage.create_exclusive("db/app/lock", b"me")
    finally:
        os.umask(old)
    made = {str(p.relative_to(base)): p.stat().st_mode & 0o777 for p in base.rglob("*")}
    assert made == {"db": dir_mode, "db/app": dir_mode, "db/app/1": dir_mode, "db/app/1/app.dump": file_mode,
                    "db/app/1/manifest.json": file_mode, "db/app/lock": file_mode}


def test_root_writing_into_a_storage_another_user_owns_leaves_that_user_the_owner(tmp_path: Path) -> None:
    """The daemon runs as user 'upkeeper'; an admin runs one backup as root on its storage.  The set's 0600
    objects and 0700 directories were root's: the daemon's next listing failed on them (permission denied), its
    verify could not read them and its prune not remove them.  Root now gives what it writes there the storage
    directory's owner and group; on a storage root owns, nothing changes."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    for base, owner in ((tmp_path / "users", (nobody.pw_uid, nobody.pw_gid)), (tmp_path / "roots", (0, 0))):
        base.mkdir()
        os.chown(base, *owner)
        storage = open_storage("disk", local_storage_config(base))
        w = storage.open_write("db/app/1/app.dump")
        w.write(b"data")
        assert (w.tmp.stat().st_uid, w.tmp.stat().st_gid) == owner
        w.commit()
        put_bytes(storage, "db/app/1/manifest.json", b"{}")
        assert storage.create_exclusive("db/app/lock", b"me")
        made = {str(p.relative_to(base)): (p.stat().st_uid, p.stat().st_gid) for p in base.rglob("*")}
        assert made == dict.fromkeys(["db", "db/app", "db/app/1", "db/app/1/app.dump", "db/app/1/manifest.json",
                                      "db/app/lock"], owner), made


def test_a_storage_another_user_owns_is_an_error_naming_owner_user_and_chown(request: pytest.FixtureRequest) -> None:
    """A storage directory made by root, written by the unprivileged user upkeeper's daemon runs as: the backup
    failed with 'cannot create …/.app.dump….upkeeper-partial: Permission denied' and 'Try: check the directory's
    permissions'.  The hint now names the directory in the way, its owner and mode, the user upkeeper runs as,
    and the chown (or the user to run as)."""
    import json
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="upkeeper-store-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    store = base / "backups"
    store.mkdir(mode=0o755)
    script = f"""
import json
from services import local_storage_config
from upkeeper.errors import StorageError
from upkeeper.storage import open_storage
from upkeeper.storage.base import put_bytes
try:
    put_bytes(open_storage("disk", local_storage_config(__import__("pathlib").Path({str(store)!r}))), "db/app/1/m", b"x")
    print(json.dumps(None))
except StorageError as exc:
    print(json.dumps([exc.message, exc.hint, exc.permanent]))
"""
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                          script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              sys.path)}, timeout=60)
    assert res.returncode == 0, res.stderr
    message, hint, permanent = json.loads(res.stdout)
    assert message.startswith(f"cannot create {store}/db/app/1/.m.") and message.endswith(": Permission denied")
    assert hint == (f"Try: {store} is root:root mode 0755, and nobody, whom upkeeper runs as, may not write it: "
                    f"'chown -R nobody {store}' (a storage is best owned by the user upkeeper's daemon runs as), "
                    "or run upkeeper as root"), hint
    assert permanent and list(store.iterdir()) == []
