"""Streaming tar archives of configured paths, with a file list (sizes, SHA-256) for the manifest.

Symlinks are stored as symlinks and never followed, so nothing outside the
configured trees is read; sockets, FIFOs and devices are skipped.  Entry names
are the real absolute paths (symlinked directories above a configured path resolved) without the leading
``/`` (as GNU tar writes them).  POSIX ACLs, file capabilities and ``user.*`` attributes are archived as GNU
tar's ``--xattrs --acls`` writes them (:data:`ARCHIVED_XATTRS`).  A file with several names (hard links) is
archived once: its later names are hard-link members to the first, as GNU tar writes them (:func:`write_tar`).
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
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upkeeper.backup.sqlite import MAGIC as SQLITE_MAGIC
from upkeeper.backup.sqlite import Snapshots
from upkeeper.errors import BackupError

BUFFER = 1 << 20
#: a buffer of zeros, to pad a file that shrank while it was read
_ZEROS = bytes(BUFFER)


#: one file's archived extended attributes: (name, value), sorted by name
Xattrs = tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class Entry:
    path: str  # absolute, on disk
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
    #: the path of that directory (one str for all its entries) and the entry's name in it ("" for a
    #: configured path)
    dir: str = ""
    name: str = ""
    #: a directory's archived extended attributes, read when the walk listed it
    xattrs: Xattrs = ()


#: the extended attributes archived, as GNU tar's ``--xattrs --acls`` writes them (pax records
#: ``SCHILY.xattr.<name>``, the ACLs also as ``SCHILY.acl.access``/``SCHILY.acl.default`` text): user attributes,
#: file capabilities (setcap), POSIX ACLs
ARCHIVED_XATTRS = ("user.", "security.capability", "system.posix_acl_access", "system.posix_acl_default")
#: attributes neither archived nor noted: labels the system's security policy sets on every file (restorecon's)
_POLICY_XATTRS = ("security.selinux", "security.SMACK64", "security.apparmor")


def archived_xattr(name: str) -> bool:
    """Whether the backup archives the extended attribute ``name`` (and a restore sets it)."""
    return name.startswith("user.") or name in ARCHIVED_XATTRS


@dataclass
class Unarchived:
    """Directories and files that have extended attributes the archive does not hold (``trusted.*``, other
    ``security.*`` than capabilities, NFSv4 ACLs…; never the security policy's labels): counted, and the first
    few named, for a note that a restore gives them back without."""

    count: int = 0
    examples: list[tuple[str, list[str]]] = field(default_factory=list)

    def note(self, path: str, names: list[str]) -> None:
        self.count += 1
        if len(self.examples) < 3:
            self.examples.append((path, names))


def read_xattrs(fd: int, path: str, unarchived: Unarchived | None) -> Xattrs:
    """The attributes of the open file ``fd`` that are archived (one listxattr; a getxattr for each only when
    it has some); those it has that are not are noted in ``unarchived``."""
    try:
        names = os.listxattr(fd)
    except OSError:  # a file system without extended attributes
        return ()
    if not names:
        return ()
    out: list[tuple[str, bytes]] = []
    left: list[str] = []
    for name in sorted(names):
        if archived_xattr(name):
            try:
                out.append((name, os.getxattr(fd, name)))
                continue
            except OSError as exc:
                if exc.errno == errno.ENODATA:  # removed since it was listed
                    continue
                left.append(f"{name} (unreadable: {exc.strerror or exc})")
        elif not name.startswith(_POLICY_XATTRS):
            left.append(name)
    if left and unarchived is not None:
        unarchived.note(path, left)
    return tuple(out)


@dataclass
class Walk:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: (path, what happened) for entries that changed while the tree was listed: warnings
    changed: list[tuple[str, str]] = field(default_factory=list)
    #: directories listed (and, given to :func:`write_tar`, files read) with extended attributes not archived
    attrs: Unarchived = field(default_factory=Unarchived)


def excluded(rel: str, patterns: Sequence[str], absolute: Sequence[str] = ()) -> bool:
    """``node_modules`` matches that name anywhere; ``*.log`` any file name; ``a/b/*``, ``./cache`` or ``/cache``
    a path from the root; an absolute path (``/srv/app/storage/cache``) that path, by any of the names in ``absolute``
    (the entry's path as configured, as walked, and with symlinks resolved).  A trailing ``/`` is ignored."""
    return _Excluder(patterns)(rel, lambda: absolute)


class _Excluder:
    """:func:`excluded` for one list of patterns, compiled once for a walk: one regular expression for the
    name patterns, one (and literal prefixes) for the path patterns, one for the absolute ones."""

    def __init__(self, patterns: Sequence[str]) -> None:
        names: list[str] = []
        paths: list[str] = []
        anchored: list[str] = []
        for pat in patterns:
            is_anchored = pat.startswith("/")
            # "./storage/cache", "./cache": from each root, as "storage/cache" (tar's names when archiving "."
            # start with "./"; ours never do, so the pattern matched nothing)
            rooted = pat.startswith("./")
            while pat.startswith("./"):
                pat = pat[2:].lstrip("/")
            pat = pat.strip("/")
            if not pat:
                continue
            if is_anchored:
                anchored.append(pat)
            elif "/" in pat or rooted:
                paths.append(pat)
            else:
                names.append(pat)
        self.names = _any_glob(names)
        # a path pattern matches the path, or is a prefix of it (literally, up to a "/")
        self.paths = _any_glob(paths + anchored)
        self.prefixes = tuple(p + "/" for p in paths + anchored)
        self.anchored = _any_glob(anchored)
        self.anchored_prefixes = tuple(p + "/" for p in anchored)
        self.active = bool(names or paths or anchored)

    def __call__(self, rel: str, absolute: Callable[[], Iterable[str]]) -> bool:
        if self.names is not None and self.names(rel[rel.rfind("/") + 1:]) is not None:
            return True
        if self.paths is not None and (self.paths(rel) is not None or rel.startswith(self.prefixes)):
            return True
        if self.anchored is not None:
            for a in absolute():
                a = a.lstrip("/")
                if self.anchored(a) is not None or a.startswith(self.anchored_prefixes):
                    return True
        return False


def _any_glob(patterns: Sequence[str]) -> Callable[[str], re.Match[str] | None] | None:
    """The ``match`` of one expression that matches what any of the shell patterns does (as
    :func:`fnmatch.fnmatchcase`); None without patterns."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


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
    excl = _Excluder(exclude) if exclude else None
    if excl is not None and not excl.active:
        excl = None

    def add(p: str, rel_for_exclude: str, st: os.stat_result | None = None, target: str | None = None,
            parent: tuple[int, int] | None = None, dpath: str = "", name: str = "") -> Entry | None:
        # p is its real path too: the walk starts at a real path and never follows a link
        arc = p.lstrip("/")
        if (seen is not None and arc in seen) or skip(p) or (rel_for_exclude and excl is not None and excl(
                rel_for_exclude, lambda: (os.path.join(given_root, rel_for_exclude), p))):
            return None
        if st is None:  # (a configured path: the walk below passes each entry's lstat)
            try:
                st = os.lstat(p)
            except FileNotFoundError:  # removed since the job looked, or (as the job refuses) a link to nothing
                named = p if p == given_root else f"{given_root} ({p})"
                out.changed.append((named, "not found when the backup reached it; not archived"))
                return None
            except OSError as exc:
                raise _walk_error(p, exc) from None
        mode = st.st_mode
        if stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
            if target is None:
                try:
                    target = os.readlink(p)
                except FileNotFoundError:
                    return None
                except OSError:  # replaced since the lstat: the archive takes it as found then, or not at all
                    out.changed.append((p, "replaced while being listed; not archived"))
                    return None
        else:
            out.skipped.append(f"{p} (not a regular file)")
            return None
        if seen is not None:
            seen.add(arc)
        return Entry(p, arc, kind, p, st, target, parent, dpath, name)

    def listing(d: str, prefix: str, expect: os.stat_result, e: Entry
                ) -> list[tuple[str, os.stat_result, str | None]] | None:
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:  # removed since its parent was listed: archived as found then, empty
            out.changed.append((d, "removed during the backup; its contents not archived"))
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # O_NOFOLLOW|O_DIRECTORY on a symlink: ENOTDIR
                out.changed.append((d, "replaced while being listed; its contents not archived"))
                return None
            raise _walk_error(d, exc, "cannot list") from None  # not backed up as empty
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):  # it, or a directory above, swapped
                out.changed.append((d, "replaced while being listed; its contents not archived"))
                return None
            e.xattrs = read_xattrs(fd, d, out.attrs)
            items: list[tuple[str, os.stat_result, str | None]] = []
            try:
                with os.scandir(fd) as it:
                    names = [de.name for de in it]
            except OSError as exc:
                raise _walk_error(d, exc, "cannot list") from None
            lstat, readlink, islink = os.lstat, os.readlink, stat.S_ISLNK
            for name in names:
                try:
                    est = lstat(name, dir_fd=fd)
                    target = readlink(name, dir_fd=fd) if islink(est.st_mode) else None
                except FileNotFoundError:
                    continue  # vanished since the listing
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # no longer a symlink
                        out.changed.append((prefix + name, "replaced while being listed; not archived"))
                        continue
                    raise _walk_error(prefix + name, exc) from None
                items.append((name, est, target))
            return items
        finally:
            os.close(fd)

    # for each directory being walked (depth first): its path, its path and its relative path each ending in
    # "/" (to put names after), (st_dev, st_ino) and entries left
    stack: list[tuple[str, str, str, tuple[int, int], Iterator[tuple[str, os.stat_result, str | None]]]] = []

    def enter(d: str, drel: str, dst: os.stat_result, e: Entry) -> None:
        """List the directory ``e`` (reading its attributes, before its member is written)."""
        prefix = d if d.endswith("/") else d + "/"
        items = listing(d, prefix, dst, e)
        if items is not None:  # files and links first, then subdirectories
            items.sort(key=lambda i: (stat.S_ISDIR(i[1].st_mode), i[0]))
            stack.append((d, prefix, f"{drel}/" if drel else "", (dst.st_dev, dst.st_ino), iter(items)))

    for k, real_root in enumerate(reals):
        given_root = given[k]  # (read by add(), as real_root is)
        top = add(real_root, "")  # the walk below never follows links, so entries extend it
        if top is None:
            continue
        if top.kind != "dir":
            yield top
            continue
        # Depth first in pre-order, as GNU tar writes: each directory's entries (files and links first, then
        # subdirectories) right after it, so nothing below a directory comes after another directory.  GNU tar
        # sets a directory's mode and mtime once a member outside it is extracted: one that came later would
        # move its mtime, or fail to be written into a read-only (0555) directory when not extracting as root.
        enter(real_root, "", top.st or os.lstat(real_root), top)
        yield top
        while stack:
            d, prefix, rprefix, ident, it = stack[-1]
            for name, est, target in it:
                rel = rprefix + name
                e = add(prefix + name, rel, est, target, ident, d, name)
                if e is None:
                    continue
                if e.kind == "dir":  # real directories only: a symlinked dir is stored as a link
                    enter(e.path, rel, est, e)  # (listed first: its member holds its attributes)
                    yield e
                    break  # its entries next; then on with the rest of this one's (the iterator keeps its place)
                yield e
            else:
                stack.pop()


def _walk_error(p: str, exc: OSError, what: str = "cannot read") -> BackupError:
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
        self.append_line(json_line(item), item.get("type") == "file")

    def append_line(self, line: bytes, is_file: bool) -> None:
        """An entry already made a line of JSON (:func:`json_line`, or the same bytes made faster)."""
        self._chunk += line
        self.count += 1
        if is_file:
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
ENTRY_KEYS = ("path", "type", "mode", "size", "sha256", "target", "padded", "snapshot", "xattrs", "link")
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
                d.get("size"), d.get("sha256"), d.get("target"), d.get("padded"), d.get("snapshot"),
                d.get("xattrs"), d.get("link"))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for t in self._entries:
            yield {k: v for k, v in zip(ENTRY_KEYS, t, strict=True) if v is not None}

    def __len__(self) -> int:
        return len(self._entries)

    def hard_links(self) -> Iterator[tuple[str, str]]:
        """(path, the path it links to) of each entry archived as a hard link (see :func:`hard_links`)."""
        i = ENTRY_KEYS.index("link")
        return ((t[0], t[i]) for t in self._entries if t[i] is not None)


def hard_links(listed: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(path, ``link``) of each entry of a file list that is archived as a hard link to an earlier member of
    its archive (its ``link``), without decoding every entry of a :class:`FileList` or
    :class:`ReadFileList`."""
    if isinstance(listed, ReadFileList):
        yield from listed.hard_links()
        return
    items: Iterable[dict[str, Any]] = listed
    if isinstance(listed, FileList):
        items = (json.loads(line) for line in listed.lines() if b'"link": ' in line)
    for f in items:
        if f.get("link") is not None:
            yield str(f["path"]), str(f["link"])


_SURROGATE = re.compile("[\ud800-\udfff]")


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # made once: json.dumps(ensure_ascii=False) makes one a call
#: a str as a JSON string, as _ENCODE writes it (the C encoder's, when there is one)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def _escape_surrogates(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def json_line(item: Any) -> bytes:
    """``item`` as one line of JSON.  A file name that is not UTF-8 comes from os as lone surrogates
    (surrogateescape): written as \\udcXX escapes, which json.loads reads back to the same str."""
    text = _ENCODE(item)
    if not text.isascii():
        text = _SURROGATE.sub(_escape_surrogates, text)
    return text.encode() + b"\n"


def _json_str(s: str) -> bytes:
    """``s`` as :func:`json_line` writes a str (surrogates escaped), encoded."""
    text = _encode_str(s)
    if not text.isascii():
        text = _SURROGATE.sub(_escape_surrogates, text)
    return text.encode()


class _Buffered:
    """Collects headers and data into larger writes."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self.buf = bytearray()
        self.flushed = 0  # bytes written out

    @property
    def offset(self) -> int:
        return self.flushed + len(self.buf)

    def write(self, b: bytes | bytearray | memoryview) -> None:
        if len(b) >= BUFFER and isinstance(b, bytes):  # a file's data, a buffer at a time: passed on, not copied
            self.flush()
            self._write(b)
            self.flushed += len(b)
            return
        self.buf += b
        if len(self.buf) >= BUFFER:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self._write(bytes(self.buf))
            self.flushed += len(self.buf)
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
#: name, mode+uid+gid, size+mtime, checksum, type, linkname, magic+version+uname+gname+devmajor+devminor,
#: prefix, padding (every string NUL-padded; numbers in octal, NUL-terminated): the fields that go together
#: packed together
_USTAR_HEADER = struct.Struct("100s24s24s8sc100s88s155s12s")
_OCTAL_11 = 0o77777777777


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for a ustar header, as GNU tar splits a long name; None if it does not fit."""
    if len(name) <= 100:
        return b"", name
    i = name.find(b"/", len(name) - 101)  # the longest prefix (≤ 155) that leaves a name of ≤ 100
    if 0 < i <= 155 and 0 < len(name) - i - 1 <= 100:
        return name[:i], name[i + 1:]
    return None


#: the fields of a ustar header set by (mode, uid, gid, type): mode, uid and gid as they are packed; magic,
#: version, uname and gname (devmajor, devminor empty); the sum of their bytes, the type's and the checksum
#: field's as spaces.  None when they do not fit ustar (the header is a pax one)
_Fixed = tuple[bytes, bytes, int] | None
_FIXED: dict[tuple[int, int, int, bytes], _Fixed] = {}


def _fixed(mode: int, uid: int, gid: int, type_: bytes) -> _Fixed:
    key = (mode, uid, gid, type_)
    try:
        return _FIXED[key]
    except KeyError:
        pass
    uname, gname = _owner("u", uid), _owner("g", gid)
    fixed: _Fixed = None
    if uname.isascii() and gname.isascii() and len(uname) <= 32 and len(gname) <= 32 and uid < 0o7777777 \
            and gid < 0o7777777:
        ids = b"%07o\0%07o\0%07o\0" % (mode, uid, gid)
        tail = _USTAR + uname.encode().ljust(32, b"\0") + gname.encode().ljust(32, b"\0") + bytes(16)
        fixed = (ids, tail, sum(ids) + sum(type_) + sum(tail) + 8 * ord(" "))
    if len(_FIXED) < 4096:
        _FIXED[key] = fixed
    return fixed


def _header(arcname: str, st: os.stat_result, type_: bytes, size: int = 0, linkname: str = "",
            xattrs: Xattrs = ()) -> bytes:
    """A tar header from stat data already taken (never a fresh lstat of the path, which may have changed since).

    A plain ustar header (mtime in whole seconds, as GNU tar writes by default) when every field fits it; a
    pax extended header (as tarfile writes them) only for what does not: names longer than ustar can split
    or not ASCII, sizes of 8 GiB and more, large ids; and for extended attributes (:func:`_xattr_records`).
    A hard link (``LNKTYPE``, as GNU tar writes the second and later names of a file) has size 0 and
    ``linkname`` the name of the member that holds the data.
    """
    if type_ == tarfile.DIRTYPE:  # "/" itself (its entry's path is ""): "./", as GNU tar names it
        arcname = arcname + "/" if arcname else "./"
    mode = st.st_mode & 0o7777
    mtime = st.st_mtime_ns // 1_000_000_000
    fixed = _fixed(mode, st.st_uid, st.st_gid, type_)
    if fixed is not None and arcname.isascii() and linkname.isascii() and len(linkname) <= 100 \
            and size < _OCTAL_11 and 0 <= mtime < _OCTAL_11:
        full = arcname.encode()
        split = _split_name(full)
        if split is not None:
            prefix, name = split
            times = b"%011o\0%011o" % (size, mtime)
            link = linkname.encode()
            # the checksum: the sum of the header's bytes (its own field as spaces), the variable part's taken
            # by adler32 (its low half is 1 + the sum of the bytes, modulo 65521: never reached by at most 378
            # ASCII bytes); the "/" between prefix and name is not in the header
            chksum = fixed[2] + (zlib.adler32(link, zlib.adler32(times, zlib.adler32(full))) & 0xFFFF) - 1 \
                - (47 if prefix else 0)
            header = _USTAR_HEADER.pack(name, fixed[0], times, b"%06o\0 " % chksum, type_, link, fixed[1], prefix,
                                        b"")
            return _pax_header(_xattr_records(xattrs)) + header if xattrs else header
    uid, gid = st.st_uid, st.st_gid
    ti = tarfile.TarInfo(arcname)
    ti.type = type_
    ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = mode, uid, gid, _owner("u", uid), _owner("g", gid)
    ti.mtime = mtime
    ti.size = size
    ti.linkname = linkname
    buf = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if not xattrs:
        return buf
    # one pax header: tarfile's records (between its header block and the member's), then the attributes'
    return _pax_header(buf[BLOCK:-BLOCK].rstrip(b"\0") + _xattr_records(xattrs)) + buf[-BLOCK:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<length> <key>=<value>\n"``, the length (in decimal) counting itself."""
    body = b" %s=%s\n" % (key, value)
    n = len(body) + 1
    while n != len(body) + len(b"%d" % n):
        n = len(body) + len(b"%d" % n)
    return b"%d%s" % (n, body)


def _pax_header(records: bytes) -> bytes:
    """A pax extended header ('x') holding ``records``, padded to whole blocks."""
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type = tarfile.XHDTYPE
    ti.size = len(records)
    pad = _NUL[len(records) % BLOCK:] if len(records) % BLOCK else b""
    return ti.tobuf(tarfile.USTAR_FORMAT, "ascii", "replace") + records + pad


#: a POSIX ACL entry's tag (ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER) as its text
_ACL_TAGS = {1: "user", 2: "user", 4: "group", 8: "group", 0x10: "mask", 0x20: "other"}


def acl_text(value: bytes) -> bytes | None:
    """A ``system.posix_acl_*`` attribute (the kernel's binary form, as setfacl sets it) as the text GNU tar
    writes with ``--acls`` (as ``getfacl`` shows it, a user or group by name where it has one): None if it is
    not a version 2 ACL."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        return None
    lines = []
    for tag, perm, ident in struct.iter_unpack("<HHI", value[4:]):
        kind = _ACL_TAGS.get(tag)
        if kind is None:
            return None
        who = (_owner("u" if tag == 2 else "g", ident) or str(ident)) if tag in (2, 8) else ""
        lines.append(f"{kind}:{who}:{'r' if perm & 4 else '-'}{'w' if perm & 2 else '-'}{'x' if perm & 1 else '-'}")
    return ("\n".join(lines) + "\n").encode()


def xattr_keyword(name: str) -> bytes:
    """An attribute's name in its pax keyword ``SCHILY.xattr.<name>``, as GNU tar encodes it ('%' and '='
    escaped)."""
    return name.encode("utf-8", "surrogateescape").replace(b"%", b"%25").replace(b"=", b"%3D")


def xattr_name(keyword: str) -> str:
    """The attribute's name in a ``SCHILY.xattr.`` keyword (as :mod:`tarfile` decodes it)."""
    return keyword.replace("%3D", "=").replace("%25", "%")


def _xattr_records(xattrs: Xattrs) -> bytes:
    """The pax records of a member's attributes, as GNU tar writes them with ``--xattrs --acls``: each as
    ``SCHILY.xattr.<name>`` (its value as it is), the ACLs also as text (``SCHILY.acl.access``,
    ``SCHILY.acl.default``), which ``tar --acls -x`` reads."""
    out = bytearray()
    for name, value in xattrs:
        if name in ("system.posix_acl_access", "system.posix_acl_default"):
            text = acl_text(value)
            if text is not None:
                out += _pax_record(b"SCHILY.acl." + name[len("system.posix_acl_"):].encode(), text)
    for name, value in xattrs:
        out += _pax_record(b"SCHILY.xattr." + xattr_keyword(name), value)
    return bytes(out)


def member_xattrs(ti: tarfile.TarInfo) -> dict[str, bytes]:
    """A tar member's extended attributes (its ``SCHILY.xattr.*`` pax records, as :mod:`tarfile` decoded
    them): name → value."""
    return {xattr_name(k[13:]): v.encode("utf-8", "surrogateescape") for k, v in ti.pax_headers.items()
            if k.startswith("SCHILY.xattr.")}


def xattrs_problem(path: str, got: dict[str, bytes], listed: Any) -> str | None:
    """What differs between a member's attributes and the manifest's record of them (:func:`xattrs_entry`;
    an entry without one, as every entry of a backup made before attributes were archived, has none)."""
    want: dict[str, Any] = listed if isinstance(listed, dict) else {}
    if got.keys() != want.keys():
        return (f"{path} has extended attributes {', '.join(sorted(got)) or 'none'} in the archive, the manifest "
                f"lists {', '.join(sorted(want)) or 'none'}")
    for name, digest in want.items():
        if digest is not None and hashlib.sha256(got[name]).hexdigest() != digest:
            return f"{path}: its extended attribute {name} does not match its SHA-256"
    return None


def xattrs_entry(xattrs: Xattrs, hashes: bool) -> dict[str, str | None]:
    """The manifest's record of a member's attributes: name → SHA-256 of the value (None without ``hashes``)."""
    return {name: hashlib.sha256(value).hexdigest() if hashes else None for name, value in xattrs}


def _changed(changed: list[tuple[str, str]] | None, e: Entry, what: str) -> None:
    if changed is not None:
        changed.append((e.path, what))


def _read_error(e: Entry, exc: OSError) -> BackupError:
    return BackupError(f"cannot read {e.path}: {exc.strerror or exc}",
                       "Try: check the disk (dmesg), or exclude the file")


@dataclass(slots=True)
class _Added:
    """A file archived with its data: its manifest line, the member's size and SHA-256 (None without hashes),
    and whether it was read whole and unchanged (only then may other names of it link to it)."""

    line: bytes
    size: int
    digest: str | None
    clean: bool


@dataclass(slots=True)
class _Linkable:
    """A multiply-linked file archived with its data: the member's name, the stat it was archived by (a later
    name must find the inode still so), the member's size and SHA-256, and how many of its names are not yet
    archived."""

    arcname: str
    ctime_ns: int
    mtime_ns: int
    st_size: int
    size: int
    digest: str | None
    left: int


#: (st_dev, st_ino) → the member that holds the data of a file with other names (hard links) not yet archived
Links = dict[tuple[int, int], _Linkable]


def _link_item(out: _Buffered, e: Entry, st: os.stat_result, links: Links) -> bytes | None:
    """Another name of a file already archived in this archive, unchanged since: a hard-link member (``LNKTYPE``,
    no data, ``linkname`` the first name, as GNU tar writes it) and its manifest line (the first member's size
    and hash, and ``link``: its path).  None when the file is not linked to (a first name; or it changed since
    its first name was archived: then this name is archived with its data, and is the one linked to after)."""
    key = (st.st_dev, st.st_ino)
    first = links.get(key)
    if first is None:
        return None
    if (first.ctime_ns, first.mtime_ns, first.st_size) != (st.st_ctime_ns, st.st_mtime_ns, st.st_size):
        del links[key]
        return None
    first.left -= 1
    if first.left <= 0:  # every name seen: forgotten (a tree of many links keeps only those still to come)
        del links[key]
    out.write(_header(e.arcname, st, tarfile.LNKTYPE, linkname=first.arcname))
    item: dict[str, Any] = {"path": e.arcname, "type": "file", "mode": stat.S_IMODE(st.st_mode),
                            "size": first.size}
    if first.digest is not None:
        item["sha256"] = first.digest
    item["link"] = first.arcname
    return json_line(item)


class _SQLite(Exception):
    """Raised by :func:`_add_file` for a SQLite database, before anything is written: ``head`` is what it
    read of its start."""

    def __init__(self, head: bytes) -> None:
        self.head = head


def _add_file(out: _Buffered, e: Entry, fd: int, st: os.stat_result, hashes: bool,
              changed: list[tuple[str, str]] | None, xattrs: Xattrs = (), *, sqlite: bool = False,
              meta: os.stat_result | None = None, snapshot: str | None = None) -> _Added:
    """The header and exactly ``st.st_size`` bytes of data read from ``fd`` (hashed on the way): returns the
    manifest's line (and what a hard link to it needs).  A file that ends before that size (it shrank while
    being read: a log truncated by logrotate) is padded with zeros to it, as GNU tar does ("File shrank by N
    bytes; padding with zeros"): the archive stays sound and the hash is of what it holds.

    With ``sqlite``, a file that starts with SQLite's header raises :class:`_SQLite` before anything is
    written (the data of a file of up to :data:`BUFFER` bytes is read anyway: checked in it; 100 bytes read
    of a larger one).  ``fd`` is then a copy of the file: ``meta`` the file's stat (the member's mode, owner,
    mtime), ``snapshot`` how it was made (in the manifest's line)."""
    size = st.st_size
    if sqlite and size > BUFFER:
        try:
            head = os.pread(fd, 100, 0)
        except OSError as exc:
            raise _read_error(e, exc) from None
        if head.startswith(SQLITE_MAGIC):
            raise _SQLite(head)
    info = st if meta is None else meta
    header = _header(e.arcname, info, tarfile.REGTYPE, size, xattrs=xattrs)
    padded = 0
    if size <= BUFFER:  # (most files) in one read, one hash call, one write of header, data and padding
        try:
            b = os.read(fd, size) if size else b""
        except OSError as exc:
            raise _read_error(e, exc) from None
        if len(b) < size:  # shrank, or a short read: read on
            b = _read_rest(e, fd, b, size)
        if sqlite and b.startswith(SQLITE_MAGIC):
            raise _SQLite(b[:100])
        padded = size - len(b)
        if padded:
            b += bytes(padded)
        digest = hashlib.sha256(b).hexdigest() if hashes else None
        out.write(header + b + _NUL[size % BLOCK:] if size % BLOCK else header + b)
    else:
        out.write(header)
        padded, digest = _add_data(out, e, fd, size, hashes)
    after = os.fstat(fd)
    clean = False
    if padded:
        _changed(changed, e, f"shrank by {padded} bytes while being read (truncated, e.g. by logrotate); "
                             f"archived as read ({size - padded} bytes), padded with zeros to its size at the "
                             f"start ({size} bytes)")
    elif (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (size, st.st_mtime_ns, st.st_ctime_ns):
        # as GNU tar's "file changed as we read it": the manifest's hash is of what was archived, which may be
        # neither the old nor the new content
        _changed(changed, e, "changed while being read; archived as read, possibly inconsistent")
    else:
        clean = True
    # {"path", "type": "file", "mode", "size"[, "sha256"][, "padded"][, "snapshot"]}, as json_line writes it
    line = b'{"path": %s, "type": "file", "mode": %d, "size": %d' % (_json_str(e.arcname),
                                                                     stat.S_IMODE(info.st_mode), size)
    if digest is not None:
        line += b', "sha256": "%s"' % digest.encode()
    if padded:  # size and hash are of the member; its last `padded` bytes are not the file's
        line += b', "padded": %d' % padded
    if snapshot is not None:  # size and hash are of the copy archived, not of the file as it is now
        line += b', "snapshot": %s' % _json_str(snapshot)
    if xattrs:
        line += b', "xattrs": ' + json_line(xattrs_entry(xattrs, hashes))[:-1]
    return _Added(line + b"}\n", size, digest, clean)


def _add_data(out: _Buffered, e: Entry, fd: int, size: int, hashes: bool) -> tuple[int, str | None]:
    """Write (and hash) ``size`` bytes of the file ``fd`` from its start, a buffer at a time, then the
    member's padding: returns the bytes padded with zeros because the file ended before ``size`` (it shrank
    while being read), and the SHA-256 of what was written.

    Only the file's data is read: its holes (a sparse file: a VM image, ``lastlog``) are found with
    ``SEEK_DATA``/``SEEK_HOLE`` and written as the zeros a read would give, from one buffer of zeros, not
    read from the kernel (the archive and the hash are the same as when every byte was read).  Holes shorter
    than a buffer are read through (fewer calls); a file system that cannot say where the holes are is read
    whole."""
    sha = hashlib.sha256() if hashes else None
    pos = 0
    padded = 0
    # the region being read: [pos, hole_end) a hole, then up to data_end data (or not known: read); found anew
    # once pos is past both
    data_end = hole_end = 0
    seek = hasattr(os, "SEEK_DATA")
    b: bytes
    while pos < size:
        n = min(size - pos, BUFFER)
        if padded:  # shrank: zeros up to the size, a buffer at a time (a log of some GiB emptied by
            b = _ZEROS if n == BUFFER else _ZEROS[:n]  # logrotate half-way: not all at once)
        else:
            if pos >= data_end and pos >= hole_end:
                if seek:
                    try:
                        hole_end, data_end = _next_data(fd, pos, size)
                    except OSError:  # no SEEK_DATA here: read it all
                        seek = False
                if not seek:
                    data_end = size
            if pos < hole_end:
                n = min(n, hole_end - pos)
                b = _ZEROS if n == BUFFER else _ZEROS[:n]
            else:
                n = min(n, data_end - pos)
                try:
                    b = os.pread(fd, n, pos)
                except OSError as exc:
                    raise _read_error(e, exc) from None
                if not b:  # ended before its size
                    padded = size - pos
                    continue
                n = len(b)
        if sha is not None:
            sha.update(b)
        out.write(b)
        pos += n
    if size % BLOCK:
        out.write(_NUL[size % BLOCK:])
    return padded, sha.hexdigest() if sha is not None else None


def _next_data(fd: int, pos: int, size: int) -> tuple[int, int]:
    """(end of the hole at ``pos`` (``pos`` if none), end of the data after it) of the file ``fd``, holes
    shorter than :data:`BUFFER` between data counted as data (up to some buffers of it).  Past the file's end
    (it shrank): ``(pos, pos + 1)``, for the read there to find the end."""
    try:
        start = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        # no data from pos on: a hole to the file's end, or past its end (it shrank: the read finds out)
        end = os.fstat(fd).st_size
        return (min(end, size), min(end, size) + 1) if end > pos else (pos, pos + 1)
    if start >= size:  # (the file grew: what is beyond its size at the start is not archived)
        return size, size
    end = os.lseek(fd, start, os.SEEK_HOLE)
    while end < size and end - start < 8 * BUFFER:  # read through short holes
        try:
            more = os.lseek(fd, end, os.SEEK_DATA)
        except OSError:
            break
        if more - end >= BUFFER:
            break
        end = os.lseek(fd, more, os.SEEK_HOLE)
    return start, min(end, size)


def _read_rest(e: Entry, fd: int, b: bytes, size: int) -> bytes:
    """``b``, the start of a file of ``size`` bytes, and what more can be read of it, up to that size."""
    parts = [b]
    left = size - len(b)
    while left:
        try:
            more = os.read(fd, left)
        except OSError as exc:
            raise _read_error(e, exc) from None
        if not more:
            break
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


class _Parents:
    """The directory of the files being read (they come grouped by directory), opened once and checked to be
    the directory the walk listed them in: a file opened relative to it is inside the tree, whatever was
    renamed or swapped along its path since."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.fd: int | None = None

    def fd_for(self, e: Entry) -> int | None:
        """A descriptor of ``e``'s directory as the walk listed it; None if that directory is gone or replaced."""
        if e.dir != self.path:
            self.close()
            self.path = e.dir
            try:
                fd = os.open(e.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _file_item(out: _Buffered, e: Entry, hashes: bool, changed: list[tuple[str, str]] | None,
               parents: _Parents, attrs: Unarchived | None, sqlite: Snapshots | None = None,
               links: Links | None = None) -> bytes | None:
    if e.parent is not None:
        dir_fd = parents.fd_for(e)
        if dir_fd is None:
            if os.path.lexists(e.dir):
                _changed(changed, e, "a directory above it was replaced during the backup; not archived")
            else:
                _changed(changed, e, "removed during the backup; not archived")
            return None
    else:
        dir_fd = None
    try:
        # never through a symlink put in its place, never blocking on a FIFO put in its place
        fd = os.open(e.name if dir_fd is not None else e.path, _OPEN_FILE, dir_fd=dir_fd)
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
            other = "a directory" if stat.S_ISDIR(st.st_mode) else "a special file"
            _changed(changed, e, f"replaced by {other} during the backup; not archived")
            return None
        if e.st is not None and (st.st_ino != e.st.st_ino or st.st_dev != e.st.st_dev):
            if dir_fd is None:  # a configured path: replaced, or a directory above it was
                _changed(changed, e, "replaced during the backup; not archived")
                return None
            # another file renamed over it (an atomic save), in the very directory the walk listed: the tree's
            # file now, archived as found when it was opened (its header from that file's fstat)
            _changed(changed, e, "replaced (renamed over) during the backup; the new file archived")
        linked = links is not None and st.st_nlink > 1
        if linked:
            assert links is not None
            line = _link_item(out, e, st, links)
            if line is not None:
                return line
        xattrs = read_xattrs(fd, e.path, attrs)
        if sqlite is None:
            added = _add_file(out, e, fd, st, hashes, changed, xattrs)
        else:
            try:
                added = _add_file(out, e, fd, st, hashes, changed, xattrs, sqlite=True)
            except _SQLite as db:
                added = _sqlite_item(out, e, fd, st, dir_fd, db.head, hashes, changed, sqlite, xattrs)
        if linked and added.clean:  # the member its other names in this archive will link to
            assert links is not None
            links[(st.st_dev, st.st_ino)] = _Linkable(e.arcname, st.st_ctime_ns, st.st_mtime_ns, st.st_size,
                                                      added.size, added.digest, st.st_nlink - 1)
        return added.line
    finally:
        os.close(fd)


def _sqlite_item(out: _Buffered, e: Entry, fd: int, st: os.stat_result, dir_fd: int | None, head: bytes,
                 hashes: bool, changed: list[tuple[str, str]] | None, sqlite: Snapshots, xattrs: Xattrs
                 ) -> _Added:
    """A SQLite database: a consistent copy of it archived under its name (with the file's own attributes);
    the file as read when none can be made (:attr:`Snapshots.failed` says why)."""
    made = sqlite.snapshot(e.path, fd, st, dir_fd, e.name, head, e.arcname)
    if made is None:
        os.lseek(fd, 0, os.SEEK_SET)
        return _add_file(out, e, fd, st, hashes, changed, xattrs)
    copy, _ = made
    try:
        return _add_file(out, e, copy, os.fstat(copy), hashes, None, xattrs, meta=st, snapshot="sqlite")
    finally:
        os.close(copy)


def _other_item(out: _Buffered, e: Entry, hashes: bool, changed: list[tuple[str, str]] | None
                ) -> dict[str, Any] | None:
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
        out.write(_header(e.arcname, lst, tarfile.DIRTYPE, xattrs=e.xattrs))
        if e.xattrs:
            item["xattrs"] = xattrs_entry(e.xattrs, hashes)
    return item


def write_tar(entries: Iterable[Entry], write: Callable[[bytes], Any], *, hashes: bool = True,
              changed: list[tuple[str, str]] | None = None, attrs: Unarchived | None = None,
              sqlite: Snapshots | None = None) -> FileList:
    """Stream a tar of ``entries`` (a list, or :func:`iter_walk` as it goes) into ``write``; returns the file
    list for the manifest.

    Each file is opened relative to the directory the walk listed it in, checked to be still that directory.
    A file replaced since by a symlink or a FIFO, reached through a directory swapped since, or removed, is
    not read: it is left out and named in ``changed`` as ``(path, what happened)``, for a warning.  A regular
    file renamed over it in that directory (an atomic save) is the tree's file now: it is archived (with its
    own stat) and named there.  A file modified while it was read is archived as read and
    named there too; one that shrank is padded with zeros to its size at the start (its manifest line says
    how many bytes in ``padded``, which a restore cuts off).  Files' and directories' extended attributes
    (:data:`ARCHIVED_XATTRS`: user attributes, capabilities, POSIX ACLs) are archived as GNU tar's ``--xattrs
    --acls`` does (the manifest's ``xattrs``: name → SHA-256 of the value); files with others (not archived)
    are counted in ``attrs``, as the walk counts directories.  With ``sqlite``, a SQLite database is archived
    as a consistent copy (see :mod:`upkeeper.backup.sqlite`), its ``-wal``, ``-shm`` and ``-journal`` left out.

    A file with several names in ``entries`` (hard links) is archived once, under the first: each later name is
    a hard-link member to it (as GNU tar writes them; a ``tar -x`` makes the links again), listed in the manifest
    with the first one's size and hash and ``link``, the first one's path.  A name whose other names are not
    in ``entries`` (excluded, outside the tree, in the other archive) is archived with its data; so is one of a
    file that changed after its first name was archived (which is then the one later names link to).
    """
    out = _Buffered(write)
    listed = FileList()
    parents = _Parents()
    links: Links = {}
    try:
        for e in entries:
            if sqlite is not None and sqlite.skip and e.path in sqlite.skip:
                sqlite.skipped.append(e.path)
                continue
            if e.kind == "file":
                line = _file_item(out, e, hashes, changed, parents, attrs, sqlite, links)
                if line is not None:
                    listed.append_line(line, True)
            else:
                item = _other_item(out, e, hashes, changed)
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
