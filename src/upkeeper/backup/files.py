"""Streaming tar archives of configured paths, with a file list (sizes, SHA-256) for the manifest.

Symlinks are stored as symlinks and never followed, so nothing outside the
configured trees is read; sockets, FIFOs and devices are skipped.  Entry names
are the real absolute paths (symlinked directories above a configured path resolved) without the leading
``/`` (as GNU tar writes them).
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import hashlib
import os
import pwd
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upkeeper.errors import BackupError

BUFFER = 1 << 20


@dataclass
class Entry:
    path: Path  # absolute, on disk
    arcname: str
    kind: str  # file | dir | symlink
    #: the path with every symlinked directory above the entry resolved (the entry itself is not):
    #: one name for one file however it was reached, e.g. through an app root that is a symlink
    real: str = ""
    #: the walk's lstat of the entry: a file is read only if what is opened is still this inode
    st: os.stat_result | None = None
    #: a symlink's target, read by the walk
    target: str | None = None


@dataclass
class Walk:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: (path, what happened) for entries that changed while the tree was listed: warnings
    changed: list[tuple[str, str]] = field(default_factory=list)


def excluded(rel: str, patterns: Sequence[str], absolute: Sequence[str] = ()) -> bool:
    """``node_modules`` matches that name anywhere; ``*.log`` any file name; ``a/b/*`` or ``/cache`` a path from
    the root; an absolute path (``/srv/app/storage/cache``) that path, by any of the names in ``absolute``
    (the entry's path as configured, as walked, and with symlinks resolved).  A trailing ``/`` is ignored."""
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        anchored = pat.startswith("/")
        pat = pat.strip("/")
        if not pat:
            continue
        if anchored or "/" in pat:
            if _path_match(rel, pat) or (anchored and any(_path_match(a.lstrip("/"), pat) for a in absolute)):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def _path_match(path: str, pat: str) -> bool:
    return fnmatch.fnmatchcase(path, pat) or path.startswith(pat + "/")


def walk(roots: Sequence[Path], exclude: Sequence[str], skip: Callable[[str], bool] = lambda real: False) -> Walk:
    """Every entry under ``roots`` (which must exist), not following symlinks.

    ``skip`` is asked with each entry's :attr:`Entry.real` path, so a file reached through a
    symlinked directory (``/srv/app`` → ``/srv/releases/42``) is recognised under either name.

    Each directory is listed through a descriptor that is checked to be the directory found when its parent
    was listed, and its entries are stat'ed relative to it: a directory swapped for a symlink meanwhile is
    never walked into, so every inode listed is inside the tree (:func:`write_tar` reads only those inodes).
    An unreadable directory raises :class:`BackupError` naming it.
    """
    out = Walk()
    seen: set[str] = set()
    real_root = given_root = ""

    def add(p: Path, rel_for_exclude: str, st: os.stat_result | None = None, target: str | None = None) -> bool:
        arc = str(p).lstrip("/")
        real = os.path.join(real_root, rel_for_exclude) if rel_for_exclude else real_root
        if arc in seen or skip(real) or (rel_for_exclude and excluded(
                rel_for_exclude, exclude, (os.path.join(given_root, rel_for_exclude), str(p), real))):
            return False
        if st is None:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _walk_error(p, exc) from None
        if stat.S_ISLNK(st.st_mode):
            kind = "symlink"
        elif stat.S_ISDIR(st.st_mode):
            kind = "dir"
        elif stat.S_ISREG(st.st_mode):
            kind = "file"
        else:
            out.skipped.append(f"{p} (not a regular file)")
            return False
        if kind == "symlink" and target is None:
            try:
                target = os.readlink(p)
            except FileNotFoundError:
                return False
            except OSError:  # replaced since the lstat: the archive takes it as found then, or not at all
                out.changed.append((str(p), "replaced while being listed; not archived"))
                return False
        seen.add(arc)
        out.entries.append(Entry(p, arc, kind, real, st, target))
        return kind == "dir"

    def listing(d: Path, expect: os.stat_result) -> list[tuple[str, os.stat_result, str | None]] | None:
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # removed since it was listed: recorded as it was
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # O_NOFOLLOW|O_DIRECTORY on a symlink: ENOTDIR
                out.changed.append((str(d), "replaced while being listed; its contents not archived"))
                return None
            raise _walk_error(d, exc, "cannot list") from None  # not backed up as empty
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):  # it, or a directory above, swapped
                out.changed.append((str(d), "replaced while being listed; its contents not archived"))
                return None
            items: list[tuple[str, os.stat_result, str | None]] = []
            try:
                with os.scandir(fd) as it:
                    names = [de.name for de in it]
            except OSError as exc:
                raise _walk_error(d, exc, "cannot list") from None
            for name in names:
                try:
                    est = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(est.st_mode) else None
                except FileNotFoundError:
                    continue  # vanished since the listing
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # no longer a symlink
                        out.changed.append((str(d / name), "replaced while being listed; not archived"))
                        continue
                    raise _walk_error(d / name, exc) from None
                items.append((name, est, target))
            return items
        finally:
            os.close(fd)

    for root in roots:
        given_root = os.path.abspath(root)
        # archived under its real path: a configured path that is a link (releases/current) or lies below one
        # (/srv/app/.env, app → releases/42) is named as what it is, so no member ever lies below a symlink
        # member (which a restore would have to write through) and two names for one file are archived once
        real_root = os.path.realpath(given_root)  # the walk below never follows links, so entries extend it
        root = Path(real_root)
        if not add(root, ""):
            continue
        stack: list[tuple[Path, os.stat_result]] = [(root, out.entries[-1].st or os.lstat(root))]
        while stack:  # depth first, a directory's entries before its subdirectories' (as os.walk top-down)
            d, dst = stack.pop()
            items = listing(d, dst)
            if items is None:
                continue
            subdirs: list[tuple[Path, os.stat_result]] = []
            for name, est, target in sorted(items, key=lambda i: (not stat.S_ISDIR(i[1].st_mode), i[0])):
                p = d / name
                if add(p, str(p.relative_to(root)), est, target):
                    subdirs.append((p, est))  # real directories only: a symlinked dir is stored as a link
            stack.extend(reversed(subdirs))
    return out


def _walk_error(p: Path, exc: OSError, what: str = "cannot read") -> BackupError:
    if exc.errno == errno.ENAMETOOLONG:
        hint = "Try: exclude it, or shorten the path (it is longer than the system allows)"
    else:
        hint = "Try: run the job as a user that can read it, or exclude it"
    return BackupError(f"{what} {p}: {exc.strerror or exc}", hint)


class _Buffered:
    """Collects tarfile's 10 KiB records into larger writes."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self.buf = bytearray()

    def write(self, b: bytes) -> int:
        self.buf += b
        if len(self.buf) >= BUFFER:
            self._write(bytes(self.buf))
            self.buf.clear()
        return len(b)

    def flush(self) -> None:
        if self.buf:
            self._write(bytes(self.buf))
            self.buf.clear()


_NAMES: dict[tuple[str, int], str] = {}


def _owner(kind: str, ident: int) -> str:
    key = (kind, ident)
    if key not in _NAMES:
        try:
            _NAMES[key] = pwd.getpwuid(ident).pw_name if kind == "u" else grp.getgrgid(ident).gr_name
        except (KeyError, OverflowError):
            _NAMES[key] = ""
    return _NAMES[key]


def _tarinfo(arcname: str, st: os.stat_result, type_: bytes, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    """A header from stat data already taken (never a fresh lstat of the path, which may have changed since).

    Every name of a hard-linked file is a regular member with its own data: the manifest lists each name with
    its size and hash, and a restore of any subset of the names gets the content.
    """
    ti = tarfile.TarInfo(arcname)
    ti.type = type_
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname, ti.gname = _owner("u", st.st_uid), _owner("g", st.st_gid)
    ti.mtime = st.st_mtime
    ti.size = size
    ti.linkname = linkname
    return ti


class _HashingReader:
    """Hands tarfile the file's data, hashing it.  A file that ends before the size its header declares (it
    shrank while being read: a log truncated by logrotate) is padded with zeros to that size, as GNU tar does
    ("File shrank by N bytes; padding with zeros"): the archive stays sound and the hash is of what it holds."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.n = 0  # bytes read from the file
        self.padded = 0  # zero bytes handed out after the file ended early

    def read(self, size: int = -1) -> bytes:
        b = b"" if self.padded else bytes(self.fh.read(size))
        if size > 0 and len(b) < size:  # tarfile asks for exactly the declared size: anything short is a shrink
            pad = size - len(b)
            self.n += len(b)
            self.padded += pad
            b += bytes(pad)
        else:
            self.n += len(b)
        self.sha.update(b)
        return b


def _changed(changed: list[tuple[str, str]] | None, e: Entry, what: str) -> None:
    if changed is not None:
        changed.append((str(e.path), what))


def write_tar(entries: Sequence[Entry], write: Callable[[bytes], Any], *, hashes: bool = True,
              changed: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Stream a tar of ``entries`` into ``write``; returns the file list for the manifest.

    A file that is no longer the regular file the walk found (replaced by a symlink, a FIFO, another file, or
    reached through a directory swapped since) is not read: it is left out and named in ``changed`` as
    ``(path, what happened)``, for a warning.  A file modified while it was read is archived as read and
    named there too; one that shrank is padded with zeros to its size at the start (its manifest line says
    how many bytes in ``padded``, which a restore cuts off).
    """
    out = _Buffered(write)
    listed: list[dict[str, Any]] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for e in entries:
            if e.kind == "file":
                try:
                    # never through a symlink put in its place, never blocking on a FIFO put in its place
                    fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # vanished since the walk (a rotated log, a pruned release)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        _changed(changed, e, "replaced by a symlink during the backup; not archived")
                        continue
                    raise BackupError(f"cannot read {e.path}: {exc.strerror or exc}",
                                      "Try: run the job as a user that can read it, or exclude it") from None
                fh = os.fdopen(fd, "rb")
                with fh:
                    st = os.fstat(fd)  # of what we read: consistent
                    if not stat.S_ISREG(st.st_mode):
                        _changed(changed, e, "replaced by a special file during the backup; not archived")
                        continue
                    if e.st is not None and (st.st_dev, st.st_ino) != (e.st.st_dev, e.st.st_ino):
                        # replaced, or a directory above it was: what was opened is not what the walk found
                        _changed(changed, e, "replaced during the backup; not archived")
                        continue
                    ti = _tarinfo(e.arcname, st, tarfile.REGTYPE, st.st_size)
                    reader = _HashingReader(fh)
                    try:
                        tf.addfile(ti, reader)
                    except OSError as exc:
                        raise BackupError(f"cannot read {e.path}: {exc.strerror or exc}",
                                          "Try: check the disk (dmesg), or exclude the file") from None
                    after = os.fstat(fd)
                    if reader.padded:
                        _changed(changed, e, f"shrank by {reader.padded} bytes while being read (truncated, e.g. "
                                             f"by logrotate); archived as read ({reader.n} bytes), padded with "
                                             f"zeros to its size at the start ({ti.size} bytes)")
                    elif (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                            st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                        # as GNU tar's "file changed as we read it": the manifest's hash is of what was archived,
                        # which may be neither the old nor the new content
                        _changed(changed, e, "changed while being read; archived as read, possibly inconsistent")
                item: dict[str, Any] = {"path": e.arcname, "type": "file", "mode": ti.mode, "size": ti.size}
                if hashes:
                    item["sha256"] = reader.sha.hexdigest()
                if reader.padded:  # size and hash are of the member; its last `padded` bytes are not the file's
                    item["padded"] = reader.padded
                listed.append(item)
                continue
            # a directory or symlink as the walk found it: a fresh lstat could find a regular file put in its
            # place since, and a header with a size but no data is a corrupt archive
            lst = e.st
            if lst is None:
                try:
                    lst = os.lstat(e.path)
                except FileNotFoundError:
                    continue
                if not (stat.S_ISLNK(lst.st_mode) if e.kind == "symlink" else stat.S_ISDIR(lst.st_mode)):
                    _changed(changed, e, f"no longer a {'symlink' if e.kind == 'symlink' else 'directory'}; "
                                         "not archived")
                    continue
            if e.kind == "symlink":
                target = e.target
                if target is None:
                    try:
                        target = os.readlink(e.path)
                    except OSError as exc:
                        _changed(changed, e, f"cannot read the link ({exc.strerror}); not archived")
                        continue
                ti = _tarinfo(e.arcname, lst, tarfile.SYMTYPE, linkname=target)
            else:
                ti = _tarinfo(e.arcname, lst, tarfile.DIRTYPE)
            item = {"path": e.arcname, "type": e.kind, "mode": ti.mode}
            if e.kind == "symlink":
                item["target"] = ti.linkname
            tf.addfile(ti)
            listed.append(item)
    out.flush()
    return listed


def iter_files(listed: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (f for f in listed if f.get("type") == "file")
