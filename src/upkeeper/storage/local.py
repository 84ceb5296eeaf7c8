"""Local directory storage: temp name, fsync, rename.

The configured ``path`` is never created: it must exist (made once by the admin, or by
``upkeeper init``), so an unmounted volume or a typo is an error instead of backups written
onto whatever filesystem holds the empty mount point.  Directories below it (``prefix``,
``<target>/<database>/<id>/``) are created as needed.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import re
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from upkeeper.config.storage import LocalStorageConfig
from upkeeper.errors import StorageError
from upkeeper.shield import shielded
from upkeeper.storage.base import ObjectInfo, check_key, replace_by_rename

log = logging.getLogger(__name__)

TMP_SUFFIX = ".upkeeper-partial"
#: where the mount points that should be mounted are declared, and what is mounted now
FSTAB = Path("/etc/fstab")
MOUNTINFO = Path("/proc/self/mountinfo")


def _oserror(action: str, path: Path, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{action} {path}: no space left on device",
                            "Try: free space on the backup volume or tighten retention", permanent=False)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"{action} {path}: {exc.strerror}", _access_hint(path), permanent=True)
    if exc.errno == errno.EROFS:
        return StorageError(f"{action} {path}: {exc.strerror}", "Try: mount the backup volume read-write",
                            permanent=True)
    return StorageError(f"{action} {path}: {exc.strerror or exc}")


def _access_hint(path: Path) -> str:
    """What to do when ``path`` could not be written or read: whose the directory (or file) in the way is, and
    the user upkeeper runs as -- a storage made by root for a daemon that runs as user 'upkeeper', say."""
    def name(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"

    def group(gid: int) -> str:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return f"gid {gid}"

    me = name(os.geteuid())
    if path.exists() and not path.is_dir() and not os.access(path, os.R_OK):
        blocker, need = path, "read"
    else:
        blocker = path.parent
        while not blocker.exists() and blocker != blocker.parent:
            blocker = blocker.parent
        need = "write"
        if os.access(blocker, os.W_OK | os.X_OK):
            return "Try: check the permissions of the storage directory and the directories in it"
    try:
        st = blocker.stat()
    except OSError:
        return "Try: check the permissions of the storage directory and the directories in it"
    owner = name(st.st_uid)
    return (f"Try: {blocker} is {owner}:{group(st.st_gid)} mode {stat.S_IMODE(st.st_mode):04o}, and {me}, whom "
            f"upkeeper runs as, may not {need} it: 'chown -R {me} {blocker}' (a storage is best owned by the user "
            f"upkeeper's daemon runs as), or run upkeeper as {owner}")


class LocalWriter:
    def __init__(self, storage: LocalStorage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.final = storage.path_for(key)
        self.tmp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        #: the directories this writer made (outermost first): an abort removes them again while empty, so a
        #: failed backup leaves no empty ``<target>/<database>/<id>/`` behind
        self.created: list[Path] = []
        self.fh: BinaryIO | None = None
        base = storage.check_path()
        self.file_mode, dir_mode = _private_modes(base)
        self.owner = _owner_for(base)
        for attempt in range(3):
            try:
                self.created += storage.makedirs(self.final.parent, dir_mode, self.owner)
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
                self.fh = os.fdopen(fd, "wb")
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
                break
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    storage.check_path()  # the storage directory vanished (unmounted) since we looked: say so
                    if attempt < 2:  # another writer's abort, or a delete, removed an empty directory of our
                        continue     # path between our mkdir and open: make it again
                self._remove_created()
                raise _oserror("cannot create", self.tmp, exc) from None
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.fh is None:
            raise StorageError(f"cannot write {self.final}: write after commit/abort", permanent=True)
        try:
            n = self.fh.write(data)
        except OSError as exc:
            self.abort()
            raise _oserror("cannot write", self.tmp, exc) from None
        self.size += n
        return n

    def _finish_file(self) -> None:
        """The temporary file flushed (and fsynced when configured) and closed, before it goes into place."""
        if self.fh is None:
            raise StorageError(f"cannot commit {self.final}: commit after commit/abort", permanent=True)
        self.fh.flush()
        if self.storage.config.fsync:
            os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None

    def commit(self) -> ObjectInfo:
        try:
            self._finish_file()
            os.replace(self.tmp, self.final)
            if self.storage.config.fsync:
                _fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise _oserror("cannot commit", self.final, exc) from None
        return ObjectInfo(self.key, self.size, datetime.now(UTC))

    def commit_exclusive(self) -> bool:
        """Like :meth:`commit`, but only where no object is under the key: the temporary file is hard-linked
        into place (``link`` never replaces a name: of two writers, one gets EEXIST — also on NFS), then
        removed.  False (and nothing written) when an object was there.  A filesystem without hard links gets an
        ``O_CREAT|O_EXCL`` file written in place instead (exclusive too, but readable half-written for an
        instant)."""
        try:
            self._finish_file()
            try:
                os.link(self.tmp, self.final)
            except FileExistsError:
                self.abort()
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
                    raise
                if not self._create_in_place():
                    self.abort()
                    return False
            self.created.clear()  # the object is there: its directories stay
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            if self.storage.config.fsync:
                _fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise _oserror("cannot commit", self.final, exc) from None
        return True

    def _create_in_place(self) -> bool:
        try:
            fd = os.open(self.final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            out.write(self.tmp.read_bytes())
            if self.storage.config.fsync:
                out.flush()
                os.fsync(out.fileno())
        return True

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self._remove_created()

    def _remove_created(self) -> None:
        """rmdir the directories this writer made, innermost first, stopping at one that is not empty: another
        object (of this set or another) written there meanwhile keeps it, and anything older is never touched."""
        while self.created:
            try:
                self.created[-1].rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                self.created.clear()
                return
            self.created.pop()


def _unescape_fstab(field: str) -> str:
    """fstab writes a space in a path as ``\\040`` (and tab, newline, backslash likewise)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fstab_mount_points(fstab: Path) -> list[Path]:
    """The mount points /etc/fstab declares (swap and the root filesystem left out); none if it is unreadable."""
    try:
        lines = fstab.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#") or fields[2] == "swap":
            continue
        mp = _unescape_fstab(fields[1])
        if mp.startswith("/") and mp != "/":
            out.append(Path(os.path.normpath(mp)))
    return out


def _is_mounted(mount_point: Path) -> bool:
    """Whether something is mounted on ``mount_point`` (a bind mount of the same filesystem included)."""
    try:
        lines = MOUNTINFO.read_text(errors="replace").splitlines()
    except OSError:
        return os.path.ismount(mount_point)
    return any(len(f := line.split()) > 4 and Path(_unescape_fstab(f[4])) == mount_point for line in lines)


def _private_modes(storage_dir: os.stat_result) -> tuple[int, int]:
    """The modes of the objects and directories a local storage gets: 0600 and 0700 -- a backup is data, and a
    manifest names the tables and their row counts -- or 0640 and 0750 where the admin made the storage
    directory itself readable by its group and not by others (0750: say for an offsite copy run as another user;
    restic does the same), as a 0755 or 0775 directory is just what the usual umask makes.  Never readable by
    others, whatever the umask."""
    m = storage_dir.st_mode
    if m & stat.S_IRGRP and m & stat.S_IXGRP and not m & (stat.S_IROTH | stat.S_IXOTH):
        return 0o640, 0o750
    return 0o600, 0o700


def _owner_for(storage_dir: os.stat_result) -> tuple[int, int] | None:
    """Run as root on a storage directory another user owns (the user upkeeper's daemon runs as, say, when an
    admin runs one 'upkeeper run' or 'backups copy' as root): the ``(uid, gid)`` to give what is written there,
    so that the storage's user can still list, verify and prune it -- its 0600 objects and 0700 directories
    would be root's otherwise (SQLite does the same for a database's -wal).  None otherwise."""
    if os.geteuid() != 0 or storage_dir.st_uid == 0:
        return None
    return storage_dir.st_uid, storage_dir.st_gid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    kind = "local"

    def __init__(self, name: str, config: LocalStorageConfig) -> None:
        self.name = name
        self.config = config
        #: the configured directory: never created by upkeeper (see the module's docstring)
        self.base = Path(config.path).expanduser()
        self.root = self.base
        if config.prefix:
            self.root = self.root / config.prefix.strip("/")

    def path_for(self, key: str) -> Path:
        return self.root / check_key(key)

    def open_write(self, key: str) -> LocalWriter:
        return LocalWriter(self, key)

    def open_read(self, key: str) -> BinaryIO:
        p = self.path_for(key)
        try:
            return open(p, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.check_path()  # an unmounted volume is not "no such object"
            raise StorageError(f"{self.describe()}: no object {key!r}", permanent=True) from None
        except OSError as exc:
            raise _oserror("cannot read", p, exc) from None

    def stat(self, key: str) -> ObjectInfo | None:
        p = self.path_for(key)
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            self.check_path()
            return None
        if not stat.S_ISREG(st.st_mode):  # a directory is a key prefix, not an object
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``.  A root that does not exist, is not a directory, or has a directory we
        cannot read is an error, never an empty or partial listing: an unmounted volume or a wrong path must not
        look like "no backups" (``backups sync`` would drop their catalog rows)."""
        base = self.root
        self.check_path()
        if base != self.base and not base.exists():
            return  # the storage directory is there; nothing was written under the prefix yet

        def failed(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else base
            if where == base:
                self.check_path()  # gone (or replaced) since we looked: say so
                if isinstance(exc, FileNotFoundError) and base != self.base:
                    return  # the prefix directory was emptied and removed meanwhile
            elif isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                return  # a set deleted while we walk (prune in another process) is simply not listed
            raise _oserror("cannot list", where, exc) from None

        for dirpath, _dirs, files in os.walk(base, onerror=failed):
            for f in sorted(files):
                if f.endswith(TMP_SUFFIX):
                    continue
                p = Path(dirpath) / f
                key = p.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _oserror("cannot list", p, exc) from None
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def check_path(self) -> os.stat_result:
        """The configured directory exists, is a directory, and is not an unmounted mount point.

        upkeeper never creates it: a missing directory is a volume not mounted or a wrong path, and
        a mount point listed in /etc/fstab with nothing mounted on it is an empty directory on the
        root filesystem — writing there would fill the wrong disk and the backups would vanish
        behind the volume once it is mounted again.
        """
        path = self.base
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StorageError(
                f"local:{path}: the storage directory does not exist (upkeeper never creates it, so that an "
                "unmounted volume or a wrong path gets no backups)",
                f"Try: mount the volume, or correct 'path' of storage {self.name!r}; for a new storage, create "
                f"the directory once: mkdir -p -m 700 {path}", permanent=True) from None
        except OSError as exc:
            raise _oserror("cannot access", path, exc) from None
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"local:{path}: the storage path is not a directory",
                               f"Try: point 'path' of storage {self.name!r} at a directory", permanent=True)
        real = Path(os.path.realpath(path))
        for mp in fstab_mount_points(FSTAB):
            if (mp == real or mp in real.parents) and not _is_mounted(mp):
                raise StorageError(
                    f"local:{path}: {mp} is a mount point in {FSTAB} but nothing is mounted on it; backups "
                    "written there would go to the filesystem below and vanish when the volume is mounted",
                    f"Try: mount {mp}, or correct 'path' of storage {self.name!r}", permanent=True)
        return st

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """See ``base.Storage.create_exclusive`` (a hard link of a temporary file)."""
        w = LocalWriter(self, key)
        w.write(data)
        return w.commit_exclusive()

    def replace_if(self, key: str, data: bytes, current: bytes) -> bool:
        """See ``base.Storage.replace_if`` (compared, then a temporary file renamed into place: not atomic)."""
        return replace_by_rename(self, key, data, current)

    def delete_if(self, key: str, current: bytes) -> bool:
        """See ``base.Storage.delete_if`` (renamed aside, compared, deleted or renamed back)."""
        p = self.path_for(key)
        aside = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.aside{TMP_SUFFIX}")  # (a partial: never listed)
        try:
            os.rename(p, aside)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _oserror("cannot delete", p, exc) from None
        try:
            there = aside.read_bytes()
        except OSError as exc:
            self._put_back(aside, p)
            raise _oserror("cannot read", aside, exc) from None
        if there != current:
            self._put_back(aside, p)
            return False
        try:
            aside.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _oserror("cannot delete", aside, exc) from None
        self._remove_empty_parents(p)
        return True

    def _put_back(self, aside: Path, p: Path) -> None:
        """``aside`` back at ``p``, unless an object was written there meanwhile (a newer one: then it is dropped)."""
        try:
            try:
                os.link(aside, p)  # (never replaces a name)
            except FileExistsError:
                log.warning("%s: written again while it was set aside to be compared; the version set aside is "
                            "dropped", p)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
                    raise
                if p.exists():  # (a filesystem without hard links: look, then rename)
                    log.warning("%s: written again while it was set aside to be compared; the version set aside "
                                "is dropped", p)
                else:
                    os.rename(aside, p)
                    return
            aside.unlink()
        except OSError as exc:
            raise _oserror("cannot put back", p, exc) from None

    def delete(self, key: str) -> None:
        p = self.path_for(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _oserror("cannot delete", p, exc) from None
        self._remove_empty_parents(p)

    def _remove_empty_parents(self, p: Path) -> None:
        """rmdir the directories above ``p`` while they are empty, up to the root (never that one)."""
        parent = p.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                break
            parent = parent.parent

    def partial_activity(self, prefix: str) -> datetime | None:
        """The newest modification of a temporary file of a write in progress under ``prefix`` (see
        ``base.SeesPartials``)."""
        self.check_path()
        top = self.root / prefix if prefix else self.root
        latest: float | None = None
        for dirpath, _dirs, files in os.walk(top):
            for f in files:
                if f.endswith(TMP_SUFFIX):
                    try:
                        m = (Path(dirpath) / f).stat().st_mtime
                    except FileNotFoundError:
                        continue  # committed or removed meanwhile
                    latest = m if latest is None else max(latest, m)
        return None if latest is None else datetime.fromtimestamp(latest, UTC)

    def clean_partials(self, older_than: timedelta = timedelta(hours=24), prefix: str = "") -> int:
        """Remove temporary files of crashed writers under ``prefix`` not modified for ``older_than``, and the
        directories above them left empty."""
        self.check_path()
        top = self.root / prefix if prefix else self.root
        if not top.is_dir():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        n = 0
        for dirpath, _dirs, files in os.walk(top):
            for f in files:
                if not f.endswith(TMP_SUFFIX):
                    continue
                p = Path(dirpath) / f
                try:
                    if p.stat().st_mtime > cutoff:
                        continue
                    p.unlink()
                    n += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _oserror("cannot remove", p, exc) from None
                self._remove_empty_parents(p)  # the directories made for it, now empty
        return n

    def makedirs(self, directory: Path, mode: int = 0o700,
                 owner: tuple[int, int] | None = None) -> tuple[Path, ...]:
        """Create ``directory`` and its missing parents below the storage directory (never that one itself);
        return the directories created, outermost first.

        With ``fsync``, the parent of each directory created is fsynced too: a commit fsyncs only the
        object's own directory, and a power cut could otherwise lose a new set's directory (and the
        manifest in it) from its parent.
        """
        d = self.base
        created: tuple[Path, ...] = ()
        for part in directory.relative_to(self.base).parts:
            d = d / part
            try:
                d.mkdir(mode)
            except FileExistsError:
                continue
            created += (d,)
            if owner is not None:  # (never through a symlink the storage's user put in its place meanwhile)
                os.chown(d, *owner, follow_symlinks=False)
            if self.config.fsync:
                _fsync_dir(d.parent)
        return created

    def describe(self) -> str:
        return f"local:{self.root}"

    def close(self) -> None:
        pass
