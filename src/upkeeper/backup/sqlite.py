"""Consistent copies of the SQLite databases a files backup comes across.

A live SQLite database read byte by byte while it is written (and its ``-wal`` read at another moment) is
archived torn: the restored file fails ``PRAGMA integrity_check`` or lacks transactions that were committed
before the backup started.  A file that starts with SQLite's 16-byte header (checked on data the archive
reads anyway: no extra system call for files of up to 1 MiB, one read of 100 bytes for larger ones) is
instead archived as a point-in-time copy made in the work directory:

* through SQLite's online backup API (https://sqlite.org/backup.html), one step under one read transaction,
  on a read-only connection: a database in use (a ``-wal`` or ``-journal`` beside it), or in rollback-journal
  mode (a read-only connection creates no file there);
* by copying the file, checked unchanged meanwhile, for a database in WAL mode that no process has open (no
  ``-wal``): a read-only SQLite connection would leave a ``-wal`` and ``-shm`` beside it; if the file changed
  while it was copied, through the backup API as above.

Its ``-wal``, ``-shm`` and ``-journal`` are then not archived: the copy holds every transaction committed
before it was made, and a ``-journal`` restored beside it would roll it back to older pages.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

#: the first 16 bytes of every SQLite 3 database file (https://sqlite.org/fileformat.html#the_database_header)
MAGIC = b"SQLite format 3\0"
#: what the files of a snapshotted database next to it are called (https://sqlite.org/tempfiles.html)
SIBLINGS = ("-wal", "-shm", "-journal")
#: how long the snapshot waits for a writer's lock (rollback-journal mode) before giving up
BUSY_TIMEOUT = 30.0


@dataclass
class Snapshots:
    """What :func:`~upkeeper.backup.files.write_tar` needs to archive SQLite databases as snapshots: the
    (private) directory the copies are made in, and what it did."""

    tmpdir: Path
    #: the paths of the sibling files (``-wal``…) of the databases snapshotted, left out when the walk reaches
    #: them (it lists a directory's files in name order: ``app.db`` before ``app.db-wal``)
    skip: set[str] = field(default_factory=set)
    #: (database, how it was copied) for each snapshot
    taken: list[tuple[str, str]] = field(default_factory=list)
    #: (database, why not) for each SQLite file archived as read instead
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: sibling files left out
    skipped: list[str] = field(default_factory=list)

    def snapshot(self, path: str, fd: int, st: os.stat_result, dir_fd: int | None, name: str,
                 header: bytes) -> tuple[int, str] | None:
        """A descriptor of a consistent copy of the database ``path`` (opened as ``fd``, whose stat ``st``
        and first bytes ``header`` were read; ``name`` in ``dir_fd`` when given), unlinked already, and how it
        was made; None (the reason recorded in :attr:`failed`) when none could be made."""
        fdesc, tmp = tempfile.mkstemp(prefix="snapshot-", suffix=".sqlite", dir=self.tmpdir)
        try:
            how = self._copy(path, fd, st, dir_fd, name, header, fdesc, tmp)
        except (sqlite3.Error, OSError) as exc:
            os.close(fdesc)
            _unlink(tmp)
            self.failed.append((path, str(exc) if isinstance(exc, sqlite3.Error) else exc.strerror or str(exc)))
            return None
        except BaseException:
            os.close(fdesc)
            _unlink(tmp)
            raise
        _unlink(tmp)
        for suffix in SIBLINGS:
            self.skip.add(path + suffix)
        self.taken.append((path, how))
        os.lseek(fdesc, 0, os.SEEK_SET)
        return fdesc, how

    def _copy(self, path: str, fd: int, st: os.stat_result, dir_fd: int | None, name: str, header: bytes,
              out: int, tmp: str) -> str:
        wal_mode = header[18:20] == b"\2\2"
        if wal_mode and not _exists(name + "-wal", path + "-wal", dir_fd):
            # no process has it open: copied as it is, if it stays so (a -wal and -shm that a read-only
            # connection would create are left behind, as root owned by the database's owner)
            _copy_fd(fd, out)
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                return "copied: not in use (no -wal)"
            os.ftruncate(out, 0)
            os.lseek(out, 0, os.SEEK_SET)
        self._backup_api(path, fd, tmp)
        return "SQLite's online backup API"

    @staticmethod
    def _backup_api(path: str, fd: int, tmp: str) -> None:
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        src = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            # the walk opened this file without following links; SQLite opens it by name: the same file, or
            # nothing is read (a symlink put in its place since would lead out of the tree)
            if not _open_elsewhere(fd):
                raise OSError(0, "replaced during the backup")
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                dst.execute("PRAGMA journal_mode=OFF")
                dst.execute("PRAGMA synchronous=OFF")
                src.backup(dst)  # all pages in one step: one read transaction, a point in time
            finally:
                dst.close()
        finally:
            # (before the caller closes its descriptor of the file: closing any descriptor of a file drops
            # this process's POSIX locks on it, SQLite's included)
            src.close()


def _open_elsewhere(fd: int) -> bool:
    """Whether another descriptor of this process (SQLite's) is open on the file ``fd`` is."""
    st = os.fstat(fd)
    for n in os.listdir("/proc/self/fd"):
        if n.isdigit() and int(n) != fd:
            try:
                other = os.stat(f"/proc/self/fd/{n}")
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino) and stat.S_ISREG(other.st_mode):
                return True
    return False


def _exists(name: str, path: str, dir_fd: int | None) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd) if dir_fd is not None else os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _copy_fd(src: int, dst: int) -> None:
    offset = 0
    while True:
        b = os.pread(src, 1 << 20, offset)
        if not b:
            return
        view = memoryview(b)
        while view:
            view = view[os.write(dst, view):]
        offset += len(b)


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
