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
import json
import os
import pwd
import re
import stat
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    #: (st_dev, st_ino) of the directory the walk listed the entry in (None for a configured path): a file is
    #: opened through that directory, checked to be still the one listed
    parent: tuple[int, int] | None = None


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
    """Every entry under ``roots``, as a list (see :func:`iter_walk`, which a backup streams instead)."""
    out = Walk()
    out.entries = list(iter_walk(roots, exclude, skip, out))
    return out


def iter_walk(roots: Sequence[Path], exclude: Sequence[str], skip: Callable[[str], bool] = lambda real: False,
              out: Walk | None = None) -> Iterator[Entry]:
    """Every entry under ``roots`` (which must exist), not following symlinks, one directory listed at a time:
    memory does not grow with the tree (what is skipped or changed is recorded in ``out``, whose ``entries``
    are left alone).

    ``skip`` is asked with each entry's :attr:`Entry.real` path, so a file reached through a
    symlinked directory (``/srv/app`` → ``/srv/releases/42``) is recognised under either name.

    Each directory is listed through a descriptor that is checked to be the directory found when its parent
    was listed, and its entries are stat'ed relative to it: a directory swapped for a symlink meanwhile is
    never walked into, so every inode listed is inside the tree (:func:`write_tar` reads only those inodes).
    An unreadable directory raises :class:`BackupError` naming it.
    """
    if out is None:
        out = Walk()
    # archived under its real path: a configured path that is a link (releases/current) or lies below one
    # (/srv/app/.env, app → releases/42) is named as what it is, so no member ever lies below a symlink
    # member (which a restore would have to write through) and two names for one file are archived once
    given = [os.path.abspath(r) for r in roots]
    reals = [os.path.realpath(g) for g in given]
    # names already archived matter only when one root lies inside another: remembered only then
    seen: set[str] | None = set() if any(
        i != j and (a == b or b.startswith(a.rstrip("/") + "/"))
        for i, a in enumerate(reals) for j, b in enumerate(reals)) else None
    real_root = given_root = ""

    def add(p: Path, rel_for_exclude: str, st: os.stat_result | None = None, target: str | None = None,
            parent: tuple[int, int] | None = None) -> Entry | None:
        arc = str(p).lstrip("/")
        real = os.path.join(real_root, rel_for_exclude) if rel_for_exclude else real_root
        if (seen is not None and arc in seen) or skip(real) or (rel_for_exclude and exclude and excluded(
                rel_for_exclude, exclude, (os.path.join(given_root, rel_for_exclude), str(p), real))):
            return None
        if st is None:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                return None
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
            return None
        if kind == "symlink" and target is None:
            try:
                target = os.readlink(p)
            except FileNotFoundError:
                return None
            except OSError:  # replaced since the lstat: the archive takes it as found then, or not at all
                out.changed.append((str(p), "replaced while being listed; not archived"))
                return None
        if seen is not None:
            seen.add(arc)
        return Entry(p, arc, kind, real, st, target, parent)

    def listing(d: Path, expect: os.stat_result) -> list[tuple[str, os.stat_result, str | None]] | None:
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:  # removed since its parent was listed: archived as found then, empty
            out.changed.append((str(d), "removed during the backup; its contents not archived"))
            return None
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

    # for each directory being walked (depth first): its path, relative path, (st_dev, st_ino) and entries left
    stack: list[tuple[Path, str, tuple[int, int], Iterator[tuple[str, os.stat_result, str | None]]]] = []

    def enter(d: Path, drel: str, dst: os.stat_result) -> None:
        items = listing(d, dst)
        if items is not None:  # files and links first, then subdirectories
            stack.append((d, drel, (dst.st_dev, dst.st_ino), iter(sorted(items, key=lambda i: (stat.S_ISDIR(i[1].st_mode), i[0])))))

    for k, real_root in enumerate(reals):
        given_root = given[k]  # (read by add(), as real_root is)
        root = Path(real_root)  # the walk below never follows links, so entries extend it
        top = add(root, "")
        if top is None:
            continue
        yield top
        if top.kind != "dir":
            continue
        # Depth first in pre-order, as GNU tar writes: each directory's entries (files and links first, then
        # subdirectories) right after it, so nothing below a directory comes after another directory.  GNU tar
        # sets a directory's mode and mtime once a member outside it is extracted: one that came later would
        # move its mtime, or fail to be written into a read-only (0555) directory when not extracting as root.
        enter(root, "", top.st or os.lstat(root))
        while stack:
            d, drel, ident, it = stack[-1]
            item = next(it, None)
            if item is None:
                stack.pop()
                continue
            name, est, target = item
            rel = f"{drel}/{name}" if drel else name
            e = add(d / name, rel, est, target, ident)
            if e is None:
                continue
            yield e
            if e.kind == "dir":  # real directories only: a symlinked dir is stored as a link
                enter(e.path, rel, est)


def _walk_error(p: Path, exc: OSError, what: str = "cannot read") -> BackupError:
    if exc.errno == errno.ENAMETOOLONG:
        hint = "Try: exclude it, or shorten the path (it is longer than the system allows)"
    else:
        hint = "Try: run the job as a user that can read it, or exclude it"
    return BackupError(f"{what} {p}: {exc.strerror or exc}", hint)


class FileList:
    """The manifest's list of one archive's entries (dicts: path, type, mode, size, sha256…), kept as compact
    JSON text, one line an entry: about the size of its manifest line, a fraction of a dict's, so a tree of
    millions of files fits in memory.  :class:`~upkeeper.backup.manifest.Manifest` writes the lines into
    manifest.json as they are; iterating decodes them."""

    def __init__(self, items: Iterable[dict[str, Any]] = ()) -> None:
        self._lines: list[bytes] = []  # chunks of lines, each ending in a newline
        self._chunk = bytearray()
        self.count = 0
        self.files = 0
        for item in items:
            self.append(item)

    def append(self, item: dict[str, Any]) -> None:
        self._chunk += json_line(item)
        self.count += 1
        if item.get("type") == "file":
            self.files += 1
        if len(self._chunk) >= BUFFER:
            self._lines.append(bytes(self._chunk))
            self._chunk.clear()

    def chunks(self) -> Iterator[bytes]:
        """The entries' JSON texts (UTF-8), each ending in a newline, a few thousand a chunk."""
        yield from self._lines
        if self._chunk:
            yield bytes(self._chunk)

    def lines(self) -> Iterator[bytes]:
        """The entries' JSON texts (UTF-8, no newline)."""
        for chunk in self.chunks():
            yield from chunk.splitlines()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (json.loads(line) for line in self.lines())

    def __len__(self) -> int:
        return self.count


#: the keys of a file list's entry, in the order :class:`ReadFileList` keeps their values
ENTRY_KEYS = ("path", "type", "mode", "size", "sha256", "target", "padded")
_KINDS = {k: k for k in ("file", "dir", "symlink")}
_MODES: dict[int, int] = {}


class ReadFileList:
    """A file list as read from a manifest: each entry a tuple of its values (:data:`ENTRY_KEYS`, ``None`` for
    a key it lacks) instead of a dict, some 40% less memory (200,000 entries as dicts take some 110 MB);
    iterating gives the dicts again, made as they are needed."""

    def __init__(self, entries: list[tuple[Any, ...]]) -> None:
        self._entries = entries

    @staticmethod
    def entry(d: dict[str, Any]) -> tuple[Any, ...]:
        """The tuple of an entry (a dict with no other keys than :data:`ENTRY_KEYS`)."""
        kind, mode = d.get("type"), d.get("mode")
        # (one str for each kind, one int for each mode: not one an entry)
        return (d.get("path"), _KINDS.get(kind, kind) if isinstance(kind, str) else kind,
                _MODES.setdefault(mode, mode) if type(mode) is int and len(_MODES) < 4096 else mode,
                d.get("size"), d.get("sha256"), d.get("target"), d.get("padded"))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for t in self._entries:
            yield {k: v for k, v in zip(ENTRY_KEYS, t, strict=True) if v is not None}

    def __len__(self) -> int:
        return len(self._entries)


_SURROGATE = re.compile("[\ud800-\udfff]")


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # made once: json.dumps(ensure_ascii=False) makes one a call


def json_line(item: Any) -> bytes:
    """``item`` as one line of JSON.  A file name that is not UTF-8 comes from os as lone surrogates
    (surrogateescape): written as \\udcXX escapes, which json.loads reads back to the same str."""
    text = _ENCODE(item)
    if not text.isascii():
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode() + b"\n"


class _Buffered:
    """Collects headers and data into larger writes."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self.buf = bytearray()
        self.offset = 0

    def write(self, b: bytes | bytearray | memoryview) -> None:
        self.buf += b
        self.offset += len(b)
        if len(self.buf) >= BUFFER:
            self.flush()

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


BLOCK = tarfile.BLOCKSIZE
_NUL = bytes(BLOCK)
_USTAR = b"ustar\x0000"
#: name, mode, uid, gid, size, mtime, checksum, type, linkname, magic+version, uname, gname, devmajor, devminor,
#: prefix, padding: every string NUL-padded (numbers in octal, NUL-terminated)
_USTAR_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12s")


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for a ustar header, as GNU tar splits a long name; None if it does not fit."""
    if len(name) <= 100:
        return b"", name
    i = name.find(b"/", len(name) - 101)  # the longest prefix (≤ 155) that leaves a name of ≤ 100
    if 0 < i <= 155 and 0 < len(name) - i - 1 <= 100:
        return name[:i], name[i + 1:]
    return None


def _header(arcname: str, st: os.stat_result, type_: bytes, size: int = 0, linkname: str = "") -> bytes:
    """A tar header from stat data already taken (never a fresh lstat of the path, which may have changed since).

    A plain ustar header (mtime in whole seconds, as GNU tar writes by default) when every field fits it; a
    pax extended header (as tarfile writes them) only for what does not: names longer than ustar can split
    or not ASCII, sizes of 8 GiB and more, large ids.  Every name of a hard-linked file is a regular member
    with its own data: the manifest lists each name with its size and hash, and a restore of any subset of
    the names gets the content.
    """
    if type_ == tarfile.DIRTYPE:
        arcname += "/"
    mode = stat.S_IMODE(st.st_mode)
    uid, gid = st.st_uid, st.st_gid
    uname, gname = _owner("u", uid), _owner("g", gid)
    mtime = st.st_mtime_ns // 1_000_000_000
    if arcname.isascii() and linkname.isascii() and uname.isascii() and gname.isascii() and len(linkname) <= 100 \
            and len(uname) <= 32 and len(gname) <= 32 and uid < 0o7777777 and gid < 0o7777777 \
            and size < 0o77777777777 and 0 <= mtime < 0o77777777777:
        split = _split_name(arcname.encode())
        if split is not None:
            buf = bytearray(_USTAR_HEADER.pack(
                split[1], b"%07o" % mode, b"%07o" % uid, b"%07o" % gid, b"%011o" % size, b"%011o" % mtime,
                b"        ", type_, linkname.encode(), _USTAR, uname.encode(), gname.encode(), b"", b"", split[0], b""))
            buf[148:155] = b"%06o\0" % sum(buf)  # the checksum, over the header with its field as spaces
            return bytes(buf)
    ti = tarfile.TarInfo(arcname)
    ti.type = type_
    ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = mode, uid, gid, uname, gname
    ti.mtime = mtime
    ti.size = size
    ti.linkname = linkname
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _changed(changed: list[tuple[str, str]] | None, e: Entry, what: str) -> None:
    if changed is not None:
        changed.append((str(e.path), what))


def _read_error(e: Entry, exc: OSError) -> BackupError:
    return BackupError(f"cannot read {e.path}: {exc.strerror or exc}",
                       "Try: check the disk (dmesg), or exclude the file")


def _add_file(out: _Buffered, e: Entry, fd: int, st: os.stat_result, hashes: bool,
              changed: list[tuple[str, str]] | None) -> dict[str, Any]:
    """The header and exactly ``st.st_size`` bytes of data read from ``fd`` (hashed on the way).  A file that
    ends before that size (it shrank while being read: a log truncated by logrotate) is padded with zeros to
    it, as GNU tar does ("File shrank by N bytes; padding with zeros"): the archive stays sound and the hash
    is of what it holds."""
    size = st.st_size
    out.write(_header(e.arcname, st, tarfile.REGTYPE, size))
    sha = hashlib.sha256() if hashes else None
    left = size
    padded = 0
    while left:
        try:
            b = os.read(fd, min(left, BUFFER))
        except OSError as exc:
            raise _read_error(e, exc) from None
        if not b:  # shrank
            padded = left
            b = bytes(left)
        if sha is not None:
            sha.update(b)
        out.write(b)
        left -= len(b)
    if size % BLOCK:
        out.write(_NUL[size % BLOCK:])
    after = os.fstat(fd)
    if padded:
        _changed(changed, e, f"shrank by {padded} bytes while being read (truncated, e.g. by logrotate); "
                             f"archived as read ({size - padded} bytes), padded with zeros to its size at the "
                             f"start ({size} bytes)")
    elif (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        # as GNU tar's "file changed as we read it": the manifest's hash is of what was archived, which may be
        # neither the old nor the new content
        _changed(changed, e, "changed while being read; archived as read, possibly inconsistent")
    item: dict[str, Any] = {"path": e.arcname, "type": "file", "mode": stat.S_IMODE(st.st_mode), "size": size}
    if sha is not None:
        item["sha256"] = sha.hexdigest()
    if padded:  # size and hash are of the member; its last `padded` bytes are not the file's
        item["padded"] = padded
    return item


class _Parents:
    """The directory of the files being read (they come grouped by directory), opened once and checked to be
    the directory the walk listed them in: a file opened relative to it is inside the tree, whatever was
    renamed or swapped along its path since."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.fd: int | None = None

    def fd_for(self, e: Entry) -> int | None:
        """A descriptor of ``e``'s directory as the walk listed it; None if that directory is gone or replaced."""
        if e.path.parent != self.path:
            self.close()
            self.path = e.path.parent
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != e.parent:
                os.close(fd)
                return None
            self.fd = fd
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.path = self.fd = None


def _file_item(out: _Buffered, e: Entry, hashes: bool, changed: list[tuple[str, str]] | None,
               parents: _Parents) -> dict[str, Any] | None:
    dir_fd = parents.fd_for(e) if e.parent is not None else None
    if e.parent is not None and dir_fd is None:
        if os.path.lexists(e.path.parent):
            _changed(changed, e, "a directory above it was replaced during the backup; not archived")
        else:
            _changed(changed, e, "removed during the backup; not archived")
        return None
    try:
        # never through a symlink put in its place, never blocking on a FIFO put in its place
        fd = os.open(e.path.name if dir_fd is not None else e.path,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:  # vanished since the walk (a rotated log, a pruned release): as GNU tar's
        _changed(changed, e, "removed during the backup; not archived")  # "File removed before we read it"
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _changed(changed, e, "replaced by a symlink during the backup; not archived")
            return None
        raise BackupError(f"cannot read {e.path}: {exc.strerror or exc}",
                          "Try: run the job as a user that can read it, or exclude it") from None
    try:
        st = os.fstat(fd)  # of what we read: consistent
        if not stat.S_ISREG(st.st_mode):
            _changed(changed, e, "replaced by a special file during the backup; not archived")
            return None
        if e.st is not None and (st.st_dev, st.st_ino) != (e.st.st_dev, e.st.st_ino):
            if dir_fd is None:  # a configured path: replaced, or a directory above it was
                _changed(changed, e, "replaced during the backup; not archived")
                return None
            # another file renamed over it (an atomic save), in the very directory the walk listed: the tree's
            # file now, archived as found when it was opened (its header from that file's fstat)
            _changed(changed, e, "replaced (renamed over) during the backup; the new file archived")
        return _add_file(out, e, fd, st, hashes, changed)
    finally:
        os.close(fd)


def _other_item(out: _Buffered, e: Entry, changed: list[tuple[str, str]] | None) -> dict[str, Any] | None:
    # a directory or symlink as the walk found it: a fresh lstat could find a regular file put in its
    # place since, and a header with a size but no data is a corrupt archive
    lst = e.st
    if lst is None:
        try:
            lst = os.lstat(e.path)
        except FileNotFoundError:
            return None
        if not (stat.S_ISLNK(lst.st_mode) if e.kind == "symlink" else stat.S_ISDIR(lst.st_mode)):
            _changed(changed, e, f"no longer a {'symlink' if e.kind == 'symlink' else 'directory'}; not archived")
            return None
    item: dict[str, Any] = {"path": e.arcname, "type": e.kind, "mode": stat.S_IMODE(lst.st_mode)}
    if e.kind == "symlink":
        target = e.target
        if target is None:
            try:
                target = os.readlink(e.path)
            except OSError as exc:
                _changed(changed, e, f"cannot read the link ({exc.strerror}); not archived")
                return None
        out.write(_header(e.arcname, lst, tarfile.SYMTYPE, linkname=target))
        item["target"] = target
    else:
        out.write(_header(e.arcname, lst, tarfile.DIRTYPE))
    return item


def write_tar(entries: Iterable[Entry], write: Callable[[bytes], Any], *, hashes: bool = True,
              changed: list[tuple[str, str]] | None = None) -> FileList:
    """Stream a tar of ``entries`` (a list, or :func:`iter_walk` as it goes) into ``write``; returns the file
    list for the manifest.

    Each file is opened relative to the directory the walk listed it in, checked to be still that directory.
    A file replaced since by a symlink or a FIFO, reached through a directory swapped since, or removed, is
    not read: it is left out and named in ``changed`` as ``(path, what happened)``, for a warning.  A regular
    file renamed over it in that directory (an atomic save) is the tree's file now: it is archived (with its
    own stat) and named there.  A file modified while it was read is archived as read and
    named there too; one that shrank is padded with zeros to its size at the start (its manifest line says
    how many bytes in ``padded``, which a restore cuts off).
    """
    out = _Buffered(write)
    listed = FileList()
    parents = _Parents()
    try:
        for e in entries:
            item = _file_item(out, e, hashes, changed, parents) if e.kind == "file" else _other_item(out, e, changed)
            if item is not None:
                listed.append(item)
    finally:
        parents.close()
    out.write(_NUL * 2)  # the end of the archive, padded to whole 10 KiB records as tar writes it
    if out.offset % tarfile.RECORDSIZE:
        out.write(bytes(tarfile.RECORDSIZE - out.offset % tarfile.RECORDSIZE))
    out.flush()
    return listed


def iter_files(listed: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (f for f in listed if f.get("type") == "file")
