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
  while it was copied, through the backup API as above;
* by copying the file and its hot ``-journal`` (a writer died mid-transaction: the file holds part of it),
  both under SQLite's own SHARED lock (no process can write the file or roll the journal back meanwhile), and
  rolling the journal back in the copy, as SQLite does on open: when this process cannot write the file, so
  SQLite will not roll it back in place (``SQLITE_READONLY_ROLLBACK``: a backup user with read access, a
  read-only mount).

A database locked by a writer longer than :attr:`Snapshots.lock_wait`, or a file that starts with SQLite's header but
is no well-formed database (SQLite could not read it, or would copy it short: its size is not a whole number
of its pages), is archived as read instead, with a warning (:attr:`Snapshots.failed`) naming why (the
processes holding a lock on it, from ``/proc/locks``).

Its ``-wal``, ``-shm`` and ``-journal`` are then not archived: the copy holds every transaction committed
before it was made, and a ``-journal`` restored beside it would roll it back to older pages.

The backup's manifest lists each file archived as read (:attr:`Snapshots.as_read`) under :data:`MANIFEST_KEY`
in its ``files`` details (``{"archive", "path", "reason"}`` each), so that ``backups show``, verify and restore
can tell a consistent copy from a possibly torn one later (:func:`recorded_as_read`; a manifest written before
upkeeper recorded it has no such key: nothing is known of its files).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the first 16 bytes of every SQLite 3 database file (https://sqlite.org/fileformat.html#the_database_header)
MAGIC = b"SQLite format 3\0"
#: what the files of a snapshotted database next to it are called (https://sqlite.org/tempfiles.html)
SIBLINGS = ("-wal", "-shm", "-journal")
#: how long the snapshot waits for a writer's lock (rollback-journal mode) before giving up, by default
BUSY_TIMEOUT = 30.0
#: the bytes SQLite's unix VFS locks (https://sqlite.org/lockingv3.html; os_unix.c): a SHARED lock is a read
#: lock of the SHARED range, taken under a read lock of PENDING; RESERVED a write lock of its byte
PENDING_BYTE = 0x40000000
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2
SHARED_SIZE = 510
#: the key of a files backup's details (in its manifest) listing the SQLite files archived as read
MANIFEST_KEY = "sqlite_not_snapshotted"


class NotADatabase(Exception):
    """A file that starts with SQLite's header but is no well-formed database."""


class Locked(Exception):
    """A database a writer kept locked longer than the snapshot waits."""


@dataclass
class Snapshots:
    """What :func:`~upkeeper.backup.files.write_tar` needs to archive SQLite databases as snapshots: the
    (private) directory the copies are made in, and what it did."""

    tmpdir: Path
    #: seconds to wait for a writer's lock before giving up (files.backup's sqlite_lock_wait)
    lock_wait: float = BUSY_TIMEOUT
    #: the paths of the sibling files (``-wal``…) of the databases snapshotted, left out when the walk reaches
    #: them (it lists a directory's files in name order: ``app.db`` before ``app.db-wal``)
    skip: set[str] = field(default_factory=set)
    #: (database, how it was copied) for each snapshot
    taken: list[tuple[str, str]] = field(default_factory=list)
    #: (database, why not) for each SQLite file archived as read instead: locked, unreadable for SQLite…
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: (file, why) for each file that starts with SQLite's header but is no well-formed database (archived
    #: as read, byte for byte)
    malformed: list[tuple[str, str]] = field(default_factory=list)
    #: sibling files left out
    skipped: list[str] = field(default_factory=list)
    #: (name in the archive, why) for each file of :attr:`failed` and :attr:`malformed`: what the manifest
    #: records (:data:`MANIFEST_KEY`); taken and emptied by the caller after each archive
    as_read: list[tuple[str, str]] = field(default_factory=list)

    def snapshot(self, path: str, fd: int, st: os.stat_result, dir_fd: int | None, name: str,
                 header: bytes, arcname: str | None = None) -> tuple[int, str] | None:
        """A descriptor of a consistent copy of the database ``path`` (opened as ``fd``, whose stat ``st``
        and first bytes ``header`` were read; ``name`` in ``dir_fd`` when given), unlinked already, and how it
        was made; None (the reason recorded in :attr:`failed` or :attr:`malformed`, and with ``arcname``, its
        name in the archive, in :attr:`as_read`) when none could be made."""
        fdesc, tmp = tempfile.mkstemp(prefix="snapshot-", suffix=".sqlite", dir=self.tmpdir)
        try:
            how = self._copy(path, fd, st, dir_fd, name, header, fdesc, tmp)
        except NotADatabase as exc:
            os.close(fdesc)
            _unlink(tmp, tmp + "-journal")
            self.malformed.append((path, str(exc)))
            self.as_read.append((arcname or path, f"no well-formed SQLite database: {exc}"))
            return None
        except (sqlite3.Error, OSError, Locked) as exc:
            os.close(fdesc)
            _unlink(tmp, tmp + "-journal")
            why = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            self.failed.append((path, why))
            self.as_read.append((arcname or path, f"no consistent copy could be made: {why}"))
            return None
        except BaseException:
            os.close(fdesc)
            _unlink(tmp, tmp + "-journal")
            raise
        _unlink(tmp, tmp + "-journal")
        for suffix in SIBLINGS:
            self.skip.add(path + suffix)
        self.taken.append((path, how))
        os.lseek(fdesc, 0, os.SEEK_SET)
        return fdesc, how

    def _copy(self, path: str, fd: int, st: os.stat_result, dir_fd: int | None, name: str, header: bytes,
              out: int, tmp: str) -> str:
        _check_header(header, fd, st)
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
        try:
            self._backup_api(path, fd, tmp, self.lock_wait)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_READONLY_ROLLBACK:
                os.ftruncate(out, 0)
                os.lseek(out, 0, os.SEEK_SET)
                return _rolled_back_copy(path, fd, dir_fd, name, out, tmp, self.lock_wait)
            if code is not None and code & 0xff == sqlite3.SQLITE_BUSY:
                raise Locked(_locked(st, self.lock_wait)) from None
            if code is not None and code & 0xff == sqlite3.SQLITE_NOTADB:
                raise NotADatabase(str(exc)) from None
            raise
        return "SQLite's online backup API"

    @staticmethod
    def _backup_api(path: str, fd: int, tmp: str, wait: float) -> None:
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        src = sqlite3.connect(uri, uri=True, timeout=wait, isolation_level=None)
        try:
            # the walk opened this file without following links; SQLite opens it by name: the same file, or
            # nothing is read (a symlink put in its place since would lead out of the tree)
            if not _open_elsewhere(fd):
                raise OSError(0, "replaced during the backup")
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                dst.execute("PRAGMA journal_mode=OFF")
                dst.execute("PRAGMA synchronous=OFF")
                deadline = time.monotonic() + wait

                def waited(status: int, remaining: int, total: int) -> None:
                    # Python's backup() retries a step that found the database locked, every 0.25 s, forever
                    # (a writer holding EXCLUSIVE for an hour held the backup as long): not past the deadline
                    if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
                        raise Locked(_locked(os.fstat(fd), wait))

                # all pages in one step: one read transaction, a point in time
                src.backup(dst, progress=waited, sleep=0.05)
            finally:
                dst.close()
        finally:
            # (before the caller closes its descriptor of the file: closing any descriptor of a file drops
            # this process's POSIX locks on it, SQLite's included)
            src.close()


def recorded_as_read(details: dict[str, Any]) -> list[dict[str, str]]:
    """The SQLite files a files backup's manifest (its ``files`` ``details``) records as archived as read, not
    as consistent copies: ``{"archive", "path", "reason"}`` each; none for a manifest written before upkeeper
    recorded them (or one whose record is not a list of such objects: nothing is made up)."""
    listed = details.get(MANIFEST_KEY)
    if not isinstance(listed, list):
        return []
    return [{k: str(item.get(k) or "") for k in ("archive", "path", "reason")}
            for item in listed if isinstance(item, dict) and item.get("path")]


def as_read_note(items: list[dict[str, str]], limit: int = 3) -> str:
    """One line naming the files of :func:`recorded_as_read` (the first ``limit``), for verify and restore."""
    named = ", ".join(i["path"] for i in items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit
                                                           else "")
    return (f"{len(items)} SQLite file(s) archived as read, not as consistent copies (possibly torn if written "
            f"meanwhile; the backup's manifest says why): {named}; after a restore, check each with "
            "sqlite3 FILE 'PRAGMA integrity_check'")


def _check_header(header: bytes, fd: int, st: os.stat_result) -> None:
    """Raises :class:`NotADatabase` unless ``header`` (the first 100 bytes of the file ``fd``, of stat ``st``) is
    one of a database SQLite would copy whole (https://sqlite.org/fileformat.html#the_database_header): a
    page size of 512 to 65536 (a power of two; 1 for 65536), file format versions 1 or 2, payload fractions
    64, 32, 32, and a file of whole pages (SQLite's copy of one that is not leaves out its last bytes; unless
    it is being written)."""
    size = st.st_size
    if len(header) < 100:
        raise NotADatabase(f"{size} bytes: shorter than SQLite's 100-byte header")
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        raise NotADatabase(f"page size {page} in its header: not a power of two from 512 to 65536")
    if header[18] not in (1, 2) or header[19] not in (1, 2) or header[21:24] != b"\x40\x20\x20":
        raise NotADatabase("its header's file format fields are not SQLite's")
    if size % page:
        time.sleep(0.01)  # (a writer extending it has, by now, written the page it was writing)
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns, now.st_ctime_ns) == (size, st.st_mtime_ns, st.st_ctime_ns):
            raise NotADatabase(f"{size} bytes: not a whole number of its {page}-byte pages")


def _rolled_back_copy(path: str, fd: int, dir_fd: int | None, name: str, out: int, tmp: str, wait: float) -> str:
    """Copies the database ``fd`` to ``out`` (the file ``tmp``) and its hot journal to ``tmp``-journal under
    SQLite's SHARED lock, then rolls the journal back in the copy; how it was made."""
    _shared_lock(fd, path, wait)
    try:
        # a writer holding RESERVED has a live journal, not a hot one: it has not written the file yet (that
        # takes EXCLUSIVE, which the SHARED lock held keeps off): the file alone is the last commit
        if _try_lock(fd, fcntl.LOCK_SH, 1, RESERVED_BYTE):
            try:
                jfd = _open_sibling(name + "-journal", path + "-journal", dir_fd)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, RESERVED_BYTE)
        else:
            jfd = None
        try:
            _copy_fd(fd, out)
            if jfd is not None:
                j = os.open(tmp + "-journal", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    _copy_fd(jfd, j)
                finally:
                    os.close(j)
        finally:
            if jfd is not None:
                os.close(jfd)
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, SHARED_SIZE, SHARED_FIRST)
    if jfd is None:
        return "copied under SQLite's SHARED lock: its -journal is no hot one"
    # SQLite rolls the hot journal back on the first read of the copy, then deletes it
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        con.close()
    if os.path.lexists(tmp + "-journal"):
        raise OSError(0, "SQLite did not roll back the copy of its hot journal")
    return ("copied with its hot -journal (a writer stopped mid-transaction) under SQLite's SHARED lock, "
            "the journal rolled back in the copy")


def _try_lock(fd: int, kind: int, length: int, start: int) -> bool:
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, length, start)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _shared_lock(fd: int, path: str, wait: float) -> None:
    """Takes SQLite's SHARED lock on the database ``fd`` as its unix VFS does, waiting up to ``wait`` seconds
    for a writer's; raises :class:`Locked` past it.  (POSIX locks: any descriptor of the
    file this process closes drops them, so no other may be open meanwhile.)"""
    deadline = time.monotonic() + wait
    while True:
        if _try_lock(fd, fcntl.LOCK_SH, 1, PENDING_BYTE):
            try:
                if _try_lock(fd, fcntl.LOCK_SH, SHARED_SIZE, SHARED_FIRST):
                    return
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, PENDING_BYTE)
        if time.monotonic() > deadline:
            raise Locked(_locked(os.fstat(fd), wait))
        time.sleep(0.05)


def _locked(st: os.stat_result, wait: float) -> str:
    holders = lock_holders(st)
    return (f"database is locked: a writer held its lock over the {wait:g} s the backup waits (sqlite_lock_wait)"
            + (f" (locked by {', '.join(holders)})" if holders else ""))


def lock_holders(st: os.stat_result) -> list[str]:
    """'pid N (command)' for each other process holding a lock on the file of stat ``st``, from /proc/locks
    (empty where it cannot be read)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                f = line.split()
                if "->" in f or len(f) < 6 or f[5] != want or not f[4].lstrip("-").isdigit():
                    continue
                pid = int(f[4])
                if pid > 0 and pid != os.getpid() and pid not in pids:
                    pids.append(pid)
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
                comm = fh.read().strip()
        except OSError:
            comm = ""
        out.append(f"pid {pid}" + (f" ({comm})" if comm else ""))
    return out


def _open_sibling(name: str, path: str, dir_fd: int | None) -> int | None:
    """A descriptor of the regular file ``name`` in ``dir_fd`` (``path`` without it), None if there is none."""
    try:
        fd = os.open(name if dir_fd is not None else path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, f"{path} is no regular file")
    return fd


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


def _unlink(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
