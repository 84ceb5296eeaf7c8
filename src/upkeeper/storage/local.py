"""Local directory storage: temp name, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from upkeeper.config.storage import LocalStorageConfig
from upkeeper.errors import StorageError
from upkeeper.storage.base import ObjectInfo, check_key

TMP_SUFFIX = ".upkeeper-partial"


def _oserror(action: str, path: Path, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{action} {path}: no space left on device",
                            "Try: free space on the backup volume or tighten retention", permanent=False)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"{action} {path}: {exc.strerror}", "Try: check the directory's permissions",
                            permanent=True)
    return StorageError(f"{action} {path}: {exc.strerror or exc}")


class LocalWriter:
    def __init__(self, storage: LocalStorage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.final = storage.path_for(key)
        self.tmp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.fh: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        except OSError as exc:
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

    def commit(self) -> ObjectInfo:
        if self.fh is None:
            raise StorageError(f"cannot commit {self.final}: commit after commit/abort", permanent=True)
        try:
            self.fh.flush()
            if self.storage.config.fsync:
                os.fsync(self.fh.fileno())
            self.fh.close()
            self.fh = None
            os.replace(self.tmp, self.final)
            if self.storage.config.fsync:
                _fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise _oserror("cannot commit", self.final, exc) from None
        return ObjectInfo(self.key, self.size, datetime.now(UTC))

    def abort(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


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
        self.root = Path(config.path).expanduser()
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
            raise StorageError(f"{self.describe()}: no object {key!r}", permanent=True) from None
        except OSError as exc:
            raise _oserror("cannot read", p, exc) from None

    def stat(self, key: str) -> ObjectInfo | None:
        p = self.path_for(key)
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):  # a directory is a key prefix, not an object
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``.  A root that does not exist, is not a directory, or has a directory we
        cannot read is an error, never an empty or partial listing: an unmounted volume or a wrong path must not
        look like "no backups" (``backups sync`` would drop their catalog rows)."""
        base = self.root
        self._check_root()

        def failed(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else base
            if where == base:
                self._check_root()  # gone (or replaced) since we looked: say so
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

    def _check_root(self) -> None:
        try:
            st = self.root.stat()
        except FileNotFoundError:
            raise StorageError(
                f"{self.describe()}: the storage directory does not exist",
                "Try: mount the volume or correct the path; a new storage's directory is created by its first "
                "backup (mkdir it to start with an empty one)", permanent=True) from None
        except OSError as exc:
            raise _oserror("cannot list", self.root, exc) from None
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"{self.describe()}: {self.root} is not a directory", permanent=True)

    def delete(self, key: str) -> None:
        p = self.path_for(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _oserror("cannot delete", p, exc) from None
        # remove empty parent directories up to the root
        parent = p.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def clean_partials(self, older_than: timedelta = timedelta(hours=24)) -> int:
        """Remove temporary files of crashed writers not modified for ``older_than``."""
        if not self.root.exists():
            return 0
        cutoff = time.time() - older_than.total_seconds()
        n = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                if not f.endswith(TMP_SUFFIX):
                    continue
                p = Path(dirpath) / f
                try:
                    if p.stat().st_mtime <= cutoff:
                        p.unlink()
                        n += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _oserror("cannot remove", p, exc) from None
        return n

    def describe(self) -> str:
        return f"local:{self.root}"

    def close(self) -> None:
        pass
