"""Log files on disk: the live file and its rotated siblings, and where to resume reading.

Rotation schemes understood (logrotate's): ``access.log.1``, ``access.log.2.gz`` (or ``.zst``, ``.xz``, ``.bz2``)…
and ``dateext`` (``access.log-20240301``, ``access.log-20240301.gz``; any ``dateformat`` logrotate takes: the
year first, fields of two digits or %s, ``-``, ``_`` or ``.`` between them — ``-%Y%m%d-%s``, ``-%Y-%m-%d``,
``.%Y%m%d%H`` …); and upkeeper's own ``app.cleanup``
rotation (``app.log.20240301-031500.gz``, ``-1`` … after it should two rotations fall in one second).  Files are
returned oldest first, the live file last.

Incremental reading keeps one *cursor* per file: device and inode, the offset
read up to, a SHA-1 of the file's first bytes (``head``) and, past them, of the bytes
just before the offset (``tail``).  A cursor follows
its file through a rename (same inode) and through compression (same head,
offsets counted in uncompressed bytes); a file whose inode matches but whose
head or tail does not (inode reuse, ``copytruncate`` then refill) or which got shorter
than the cursor (truncation) is read from the start.  A cursor belongs to one file at
most, the oldest that matches it (files are matched oldest first): once the rotated copy
of the file it was left on (compressed, or ``copytruncate``'s copy) has it, a live file
that got the old inode number back and begins with the same bytes (a log whose lines are
all alike) is a new file, read from its start.  So is a plain file whose bytes match a cursor's but whose
birth time (statx) tells it is a new one: the cursor's inode number born at another time (reused), or the live
file under another inode born after the cursor's file was last seen modified (a log deleted and created again,
beginning with the same start-up lines); where birth times are unknown, a live file under another inode is read
from its start rather than resumed (:func:`_other_file`).  The live file is read up
to its last complete line; a half-written line waits for the next run. So is a plain rotated file while its log
has no byte in any newer file: the program may still be writing it, not having reopened its log yet
(:func:`_maybe_still_written`).

Rotated files that logrotate moves to another directory (its ``olddir``) are found there when that
directory is given (``rotated_dirs``), but read only as the continuation of what the last run read: the
file the last run's cursor matches (recognised as above) and the files rotated after it (same naming
scheme, later in it). Any other file there — older history, a file of another naming scheme, everything on
a first run — is never read (see :func:`plan_reads`).

Compressed files are decompressed as ``zcat`` does (:class:`GzipReader`; ``.zst``, ``.xz`` and ``.bz2``, what
logrotate's ``compresscmd`` may write instead, by :class:`StreamReader`): a truncated or
damaged one gives the lines before the damage (and a note), and its cursor remembers the
compressed size, so an unchanged damaged file is neither re-read nor reported again.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

HEAD_BYTES = 4096
#: a dateext stamp as logrotate's ``dateformat`` writes it (only %Y %m %d %H %M %S %V and %s, which logrotate
#: requires lexically sortable: the year first): after the separator the format begins with (``-``, ``.``,
#: ``_``), digits — a year and two-digit fields, or %s's 10 — with ``-``, ``_`` or ``.`` between fields:
#: ``-%Y%m%d`` (the default), ``-%Y%m%d%H``, ``-%Y%m%d-%s``, ``-%Y-%m-%d``, ``.%Y-%m-%d_%H%M%S``, ``-%s``
_DATE = r"[-._](?P<date>\d{4}(?:[-_.]?\d{2})+)"
#: logrotate's ``.N`` (up to 5 digits: more is a date) and dateext's stamp, and upkeeper's own (app.cleanup's)
#: ``.YYYYMMDD-HHMMSS[-N]``
_ROTATED = re.compile(r"^(?:\.(?P<num>\d{1,5})|\.(?P<stamp>\d{8}-\d{6})(?:-(?P<dup>\d+))?|" + _DATE
                      + r")(?P<gz>\.(?:gz|zst|xz|bz2))?$")


@dataclass(frozen=True)
class LogFile:
    path: str
    gz: bool
    live: bool
    dev: int
    inode: int
    size: int
    mtime: float
    #: for a rotated file found in one of ``rotated_dirs`` (logrotate's olddir): the live log it belongs to and
    #: the directory and its naming scheme ("<live path>\0<dir>\0num" or "…\0date"): the files of one such
    #: chain are in rotation order; empty for the files next to the log
    elsewhere: str = ""
    #: when the file was created (statx's birth time, in ns), None where the system or filesystem does not tell:
    #: a new file that got a freed inode number back, or begins with the same bytes, is told apart by it
    btime_ns: int | None = None


@dataclass(frozen=True)
class ReadRange:
    """Read ``file`` from ``start`` (uncompressed offset) to ``end`` (None: to EOF)."""

    file: LogFile
    start: int
    end: int | None
    final: bool  # a last line without newline counts (rotated files are complete)
    note: str = ""


@dataclass(frozen=True)
class PlanNote:
    """What planning noticed about one file: it cannot be read (``unreadable``), it got shorter or was
    replaced since the last run and is read from the start (``rotated``), or the live file the last run read
    is gone, with what was written to it since (``lost``)."""

    path: str
    kind: Literal["unreadable", "rotated", "lost", "left"]
    message: str
    #: how to fix it, where the note itself knows better than its kind
    fix: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass
class ReadPlan:
    ranges: list[ReadRange] = field(default_factory=list)
    cursors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[PlanNote] = field(default_factory=list)
    #: how many of the files could be read (the others are ``unreadable`` notes)
    readable: int = 0

    @property
    def unreadable(self) -> list[str]:
        """The files that could not be read (each has an ``unreadable`` note)."""
        return [n.path for n in self.notes if n.kind == "unreadable"]

    @property
    def bytes_planned(self) -> int:
        return sum((r.end if r.end is not None else r.file.size) - r.start for r in self.ranges)


_ROTATED_SUFFIX = re.compile(r"(?:\.\d{1,5}|\.\d{8}-\d{6}(?:-\d+)?|" + _DATE.replace("?P<date>", "")
                             + r")(?:\.(?:gz|zst|xz|bz2))?$|\.(?:gz|zst|xz|bz2)$")
#: what logrotate's compresscmd may write (its compressext): gzip (the default), zstd, xz, bzip2
COMPRESSED_SUFFIXES = (".gz", ".zst", ".xz", ".bz2")
GLOB_CHARS = "*?["


def is_glob(path: str) -> bool:
    return any(c in path for c in GLOB_CHARS)


def live_log(path: str) -> str:
    """The live log a rotated file belongs to (``x.log.1``, ``x.log.2.gz``, ``x.log-20240301`` → ``x.log``);
    any other path as it is."""
    return _ROTATED_SUFFIX.sub("", path) or path


def discover_glob(pattern: str, *, rotated: bool = True, max_files: int = 30,
                  rotated_dirs: tuple[str, ...] | list[str] = ()) -> list[LogFile]:
    """Each log ``pattern`` matches, with its rotated siblings (:func:`discover`, ``max_files`` per log), logs
    in name order.  A match that is itself a rotated file (``x.log.1``, ``x.log-20240301.gz``) stands for its
    live log ``x.log``, so ``*.log*`` reads every log once; with ``rotated`` false only live logs are read."""
    import glob

    bases = sorted({live_log(p) for p in glob.glob(pattern)})
    out: list[LogFile] = []
    seen: set[tuple[int, int]] = set()
    for base in bases:
        out += drop_seen(discover(base, rotated=rotated, max_files=max_files, rotated_dirs=rotated_dirs), seen)
    return out


def drop_seen(files: list[LogFile], seen: set[tuple[int, int]]) -> list[LogFile]:
    """``files`` without those in ``seen`` (device and inode, which it updates): one file under two names — a
    symbolic or hard link beside the log, a path two patterns match — is read once, under the first name."""
    out = []
    for f in files:
        if (f.dev, f.inode) not in seen:
            seen.add((f.dev, f.inode))
            out.append(f)
    return out


def _rotated_in(directory: Path, name: str) -> list[tuple[tuple[int, str], Path, bool]]:
    """The rotated files of the log ``name`` in ``directory`` (sort key, path, compressed), in no order."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found: list[tuple[tuple[int, str], Path, bool]] = []
    for entry in names:
        if not entry.startswith(name) or entry == name:
            continue
        m = _ROTATED.match(entry[len(name):])
        if not m:
            continue
        # order: higher numbers are older; dates sort ascending (app.cleanup's stamp as digits, a -N after it later)
        if m.group("num"):
            key = (-int(m.group("num")), "")
        elif m.group("stamp"):
            key = (-(10**9), m.group("stamp").replace("-", "") + (f".{int(m.group('dup')):06d}" if m.group("dup")
                                                                    else ""))
        else:  # (the stamp's digits: its separators, whatever the dateformat, do not change the order)
            key = (-(10**9), re.sub(r"\D", "", m.group("date")))
        found.append((key, directory / entry, bool(m.group("gz"))))
    return found


def rotated_dir(log: str, directory: str) -> Path:
    """Where a ``rotated_dirs`` entry points for ``log``: a relative one is relative to the log's own directory,
    as logrotate takes a relative ``olddir``."""
    d = Path(directory).expanduser()
    return d if d.is_absolute() else Path(log).parent / d


def discover(path: str, *, rotated: bool = True, max_files: int = 30,
             rotated_dirs: tuple[str, ...] | list[str] = ()) -> list[LogFile]:
    """``path`` and its rotated siblings that exist, oldest first (at most ``max_files``); for a symbolic link,
    the rotated siblings of the file it points to too (logrotate rotates that file, where it is).

    Before them, the rotated files of ``path`` in each of ``rotated_dirs`` (logrotate's ``olddir``; at most
    ``max_files`` per directory), marked :attr:`LogFile.elsewhere`: :func:`plan_reads` reads only those that
    continue what the last run read.  A file seen twice (the log's own directory named, a hard link) is
    listed once."""
    base = Path(path)
    found = _rotated_in(base.parent, base.name) if rotated and base.parent.is_dir() else []
    # a symbolic link to the log: logrotate rotates the file it points to (it skips links), beside that file
    real = Path(os.path.realpath(base))
    if rotated and base.is_symlink() and real.parent.is_dir():
        known = {q for _k, q, _gz in found}
        found += [x for x in _rotated_in(real.parent, real.name) if x[1] not in known]
    found.sort(key=lambda x: x[0])
    out: list[LogFile] = []
    linked: set[tuple[int, int]] = set()
    for _key, p, gz in found[-max(0, max_files - 1):] if max_files > 1 else []:
        lf = _stat(p, gz, live=False)
        if lf is not None:
            out += drop_seen([lf], linked)
    live = _stat(base, base.name.endswith(COMPRESSED_SUFFIXES), live=True)
    if live is not None:
        out.append(live)
    seen = {(f.dev, f.inode) for f in out}
    moved: list[LogFile] = []
    for d in rotated_dirs if rotated else ():
        elsewhere = sorted(_rotated_in(rotated_dir(path, d), base.name), key=lambda x: x[0])
        for key, p, gz in elsewhere[-max_files:]:
            lf = _stat(p, gz, live=False)
            if lf is None or (lf.dev, lf.inode) in seen:
                continue
            seen.add((lf.dev, lf.inode))
            moved.append(replace(lf, elsewhere=f"{path}\0{d}\0{'num' if key[1] == '' else 'date'}"))
    return moved + out


def _stat(p: Path, gz: bool, live: bool) -> LogFile | None:
    try:
        st = p.stat()
    except OSError:
        return None
    if not p.is_file():
        return None
    if not gz and not live:  # a rotated file compressed under a plain name (compressext "", a hand-made copy)
        try:
            with open(p, "rb") as fh:
                gz = compressed_magic(fh.read(8)) is not None
        except OSError:
            pass
    return LogFile(str(p), gz, live, st.st_dev, st.st_ino, st.st_size, st.st_mtime, btime_ns=birth_time_ns(p, st))


_STATX_BTIME = 0x800
_AT_FDCWD = -100
_libc: Any = None


def birth_time_ns(path: Path | str, st: os.stat_result | None = None) -> int | None:
    """When ``path`` was created, in ns since the epoch, or None when it cannot be told: Python's ``os.stat`` has
    ``st_birthtime`` on BSD, macOS and Windows only (Linux: from Python 3.15's ``os.statx``), so on Linux it is
    asked with statx(2) (glibc 2.28, Linux 4.11), which says whether the filesystem keeps it (ext4, XFS, btrfs,
    tmpfs do; NFS, ext3 do not). Symbolic links are followed, as ``os.stat`` does."""
    bt = getattr(st, "st_birthtime_ns", None) if st is not None else None
    if isinstance(bt, int):
        return bt
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
        except (OSError, AttributeError, TypeError):  # not Linux, or a libc without statx
            _libc = False
    if _libc is False:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _libc.statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, buf) != 0:
        return None
    mask, = struct.unpack_from("=I", buf.raw, 0)
    if not mask & _STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("=qI", buf.raw, 80)  # stx_btime: {tv_sec, tv_nsec}
    return int(sec) * 1_000_000_000 + int(nsec)


GZIP_MAGIC = b"\x1f\x8b"


class GzipReader:
    """Read a .gz file as ``zcat`` does, and keep what comes before damage.

    Members are read in turn (``cat a.gz b.gz > c.gz``) and zero padding between them is
    skipped.  After the last complete member, anything that is not a gzip member is trailing
    garbage: ignored, as ``zcat`` does ("decompression OK, trailing garbage ignored"), with
    :attr:`problem` set and :attr:`damaged` false.  A file that ends inside a member (truncated:
    compression interrupted, a full disk) or whose compressed data is corrupt gives everything
    decompressed before that point, then ends, with :attr:`problem` set and :attr:`damaged` true.

    ``gzip.GzipFile.read(n)`` raises EOFError, BadGzipFile or zlib.error in those cases instead,
    and drops whatever it had decompressed within the same call (up to ``n`` bytes).
    """

    RAW = 1 << 17  # compressed bytes read at a time

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._d = zlib.decompressobj(31)  # 31: a gzip header and trailer (CRC-32 and size are checked)
        self._in = b""  # compressed input not yet taken by the decompressor
        self._raw_eof = False
        self._started = False  # any compressed byte seen (an empty file is an empty log, as for gzip.open)
        self._end = False
        self.problem: str | None = None
        self.damaged = False

    def read(self, n: int) -> bytes:
        """Up to ``n`` uncompressed bytes (never more); b"" at the end of the usable data."""
        out: list[bytes] = []
        got = 0
        while got < n and not self._end:
            d = self._d
            if d.eof:
                self._next_member(d.unused_data)
                continue
            if not self._in and not self._raw_eof:
                self._in = self._fh.read(self.RAW)
                self._raw_eof = not self._in
                if self._raw_eof and not self._started:
                    self._end = True
                    break
                self._started = True
            try:
                data = d.decompress(self._in, n - got)
            except zlib.error as exc:
                self._stop(f"damaged compressed data ({exc})", damaged=True)
                break
            self._in = d.unconsumed_tail
            if data:
                out.append(data)
                got += len(data)
            elif self._raw_eof and not self._in and not d.eof:
                self._stop("truncated (the file ends inside the compressed data)", damaged=True)
        return b"".join(out)

    def _next_member(self, rest: bytes) -> None:
        while True:
            rest = rest.lstrip(b"\0")
            if len(rest) >= len(GZIP_MAGIC) or self._raw_eof:
                break
            more = self._fh.read(self.RAW)
            self._raw_eof = not more
            rest += more
        if not rest:
            self._end = True
        elif rest.startswith(GZIP_MAGIC):
            self._d = zlib.decompressobj(31)
            self._in = rest
        else:
            self._stop("trailing garbage after the compressed data was ignored, as zcat does", damaged=False)

    def _stop(self, problem: str, *, damaged: bool) -> None:
        self.problem, self.damaged, self._end = problem, damaged, True


class StreamReader:
    """Read a .zst, .xz or .bz2 file as ``zstdcat``, ``xzcat`` and ``bzcat`` do, with :class:`GzipReader`'s
    contract: streams one after another are read in turn, what comes before damage is kept (then the
    reading ends with :attr:`problem` set and :attr:`damaged` true: corrupt data, a file that ends inside a
    stream), and bytes after the last stream that start no other are trailing garbage (ignored, noted,
    :attr:`damaged` false)."""

    RAW = 1 << 17
    MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00", "bz2": b"BZh"}

    def __init__(self, fh: BinaryIO, codec: str) -> None:
        self._fh = fh
        self._codec = codec
        self._d: Any = None  # the decompressor of the stream being read (None: between streams)
        self._fed = False  # it was given input
        self._out: list[bytes] = []
        self._have = 0
        self._end = False
        self.problem: str | None = None
        self.damaged = False

    def _new(self) -> Any:
        if self._codec == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        if self._codec == "xz":
            import lzma

            return lzma.LZMADecompressor()
        import bz2

        return bz2.BZ2Decompressor()

    def read(self, n: int) -> bytes:
        """Up to ``n`` uncompressed bytes (never more); b"" at the end of the usable data."""
        while self._have < n and not self._end:
            raw = self._fh.read(self.RAW)
            if not raw:
                if self._d is not None and self._fed and not self._d.eof:
                    self._stop("truncated (the file ends inside the compressed data)", damaged=True)
                self._end = True
                break
            self._feed(raw)
        data = b"".join(self._out)
        out, rest = data[:n], data[n:]
        self._out, self._have = ([rest], len(rest)) if rest else ([], 0)
        return out

    def _feed(self, raw: bytes) -> None:
        import lzma

        import zstandard

        while raw and not self._end:
            if self._d is None:
                rest = raw.lstrip(b"\0")  # zero padding between streams, as for gzip
                if not rest:
                    return
                if not rest.startswith(self.MAGIC[self._codec][:len(rest)]):
                    self._stop("trailing garbage after the compressed data was ignored", damaged=False)
                    return
                self._d, self._fed, raw = self._new(), False, rest
            try:
                data = self._d.decompress(raw)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
                self._stop(f"damaged compressed data ({exc})", damaged=True)
                return
            self._fed = True
            if data:
                self._out.append(data)
                self._have += len(data)
            if self._d.eof:
                raw, self._d = self._d.unused_data, None
            else:
                raw = b""

    def _stop(self, problem: str, *, damaged: bool) -> None:
        self.problem, self.damaged, self._end = problem, damaged, True


def open_compressed(fh: BinaryIO, path: str) -> GzipReader | StreamReader:
    """The reader of compressed file ``path``: by its suffix (.gz, .zst, .xz, .bz2), else by its first bytes (a
    rotated file compressed under a plain name, :func:`compressed_magic`), else gzip."""
    for suffix, codec in ((".zst", "zstd"), (".xz", "xz"), (".bz2", "bz2")):
        if path.endswith(suffix):
            return StreamReader(fh, codec)
    if not path.endswith(".gz"):
        head = fh.read(8)
        fh.seek(0)
        sniffed = compressed_magic(head)
        if sniffed is not None and sniffed != "gzip":
            return StreamReader(fh, sniffed)
    return GzipReader(fh)


def compressed_magic(head: bytes) -> str | None:
    """The compression whose magic bytes ``head`` starts with (gzip, zstd, xz, bz2), else None.  bzip2's "BZh"
    is taken only with its block size digit and block magic, so a text line starting "BZh" is no match."""
    if head.startswith(GZIP_MAGIC + b"\x08"):  # and deflate, the only method gzip defines
        return "gzip"
    for codec, magic in StreamReader.MAGIC.items():
        if codec != "bz2" and head.startswith(magic):
            return codec
    if len(head) >= 8 and head.startswith(b"BZh") and head[3:4].isdigit() and head[4:8] == b"\x31\x41\x59\x26":
        return "bz2"
    return None


def head_digest(lf: LogFile, length: int = HEAD_BYTES) -> tuple[str, int]:
    """SHA-1 of the first ``length`` (uncompressed) bytes, and how many there were."""
    import hashlib  # (here: a scanning helper process reads no cursor, and OpenSSL costs it ~4 MB of RSS)

    with open(lf.path, "rb") as fh:
        data = open_compressed(fh, lf.path).read(length) if lf.gz else fh.read(length)
    return hashlib.sha1(data).hexdigest(), len(data)


def gzip_isize(path: str) -> int | None:
    """The uncompressed size modulo 2**32 from a gzip trailer (None for another compression)."""
    if not path.endswith(".gz"):
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return int(struct.unpack("<I", fh.read(4))[0])
    except (OSError, struct.error):
        return None


def last_newline_end(path: str, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 when there is none)."""
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                return pos - step + i + 1
            pos -= step
    return 0


def plan_reads(files: list[LogFile], cursors: list[dict[str, Any]] | None, *, incremental: bool) -> ReadPlan:
    """What to read of each file, and the cursors to remember once it has been read.

    A cursor of the last run that no file matches any more, and whose file was the live log then, is a
    ``lost`` note: that file was rotated away and deleted (or moved where it is not looked for) before this
    run, so whatever was written to it after the last run is missing.

    Files found in a ``rotated_dirs`` directory (:attr:`LogFile.elsewhere`) are read only from the oldest of
    their chain that a cursor of the last run matches on: that one (from where the last run stopped) and those
    rotated after it (written since the last run; read whole).  The others there — older ones, every one of a
    chain no cursor matches, all of them without cursors (a first run, ``incremental`` off) — are left alone,
    as is an unreadable one unless it may be the missing continuation."""
    plan = ReadPlan()
    given: Any = cursors  # (read back from history: may be anything)
    cursors = list(given) if incremental and isinstance(given, list) else []
    usable = [c for c in cursors if usable_cursor(c)]
    if incremental and (len(usable) < len(cursors) or not isinstance(given, list | None)):
        plan.notes.append(PlanNote(SAVED_POSITIONS, "rotated", (
            "the read positions the last run saved cannot be understood (written by another version of upkeeper, "
            "or damaged): the files they stood for are read from the start, what the last run read of them is "
            "counted again, and new positions are saved")))
    cursors = usable
    heads: list[tuple[LogFile, str, int, dict[str, Any] | None]] = []
    unreadable: list[tuple[LogFile, OSError]] = []
    claimed: set[int] = set()  # the cursors a file was matched to: each belongs to one file at most
    replaced: dict[str, str] = {}  # path → why a file whose bytes match a cursor is not that cursor's file
    digests: list[tuple[LogFile, str, int]] = []
    for lf in files:
        try:
            head, head_len = head_digest(lf)
        except OSError as exc:
            unreadable.append((lf, exc))
            continue
        digests.append((lf, head, head_len))
    own = _own_cursors(digests, cursors) if incremental else {}
    claimed.update(id(c) for c in own.values())
    for lf, head, head_len in digests:
        cur = own.get(id(lf))
        if cur is None and incremental:
            cur = _match(lf, head, head_len, [c for c in cursors if id(c) not in claimed], replaced)
            if cur is not None:
                claimed.add(id(cur))
        heads.append((lf, head, head_len, cur))
    copies = _copies(heads, own)
    heads, unreadable = _continuations(files, heads, unreadable, cursors)
    plan.notes += [PlanNote(lf.path, "unreadable", f"{lf.path}: cannot read ({exc})") for lf, exc in unreadable]
    plan.readable = len(heads)
    matched = {id(cur) for _lf, _h, _n, cur in heads if cur is not None}
    # a file that cannot be read now keeps the cursor of its inode, as it is: it is neither gone (no ``lost``
    # note) nor read again from its start, counting twice what was read of it, once it can be read again
    for lf, _exc in unreadable:
        kept = next((c for c in cursors if id(c) not in matched and _same_inode(lf, c)), None)
        if kept is not None:
            matched.add(id(kept))
            plan.cursors.append(kept)
    still_written = _maybe_still_written([lf for lf, *_x in heads])
    for lf, head, head_len, cur in heads:
        start = 0
        note = ""
        if id(lf) in copies:  # its bytes are the live file's, read there: as if read to its end
            live, c, size = copies[id(lf)]
            plan.notes.append(PlanNote(lf.path, "rotated", (
                f"{lf.path} is a copy of {live.path} (logrotate's copy, or copytruncate's before it truncated "
                f"{live.path}): its lines are read from {live.path}, once")))
            plan.cursors.append({**_cursor(lf, head, head_len, size), "copy_of": [c.get("dev"), c.get("inode")]})
            continue
        if cur is not None:
            start = int(cur.get("offset", 0))
            if not lf.gz and lf.size < start:
                note = f"{lf.path} is shorter than last time (truncated): read from the start"
                start = 0
        elif lf.path in replaced:
            note = replaced[lf.path]
        elif incremental and not lf.gz and any(
                c.get("dev") == lf.dev and c.get("inode") == lf.inode and not c.get("gz") and id(c) not in matched
                for c in cursors):
            # (a cursor of this inode that another file matched by content moved there: this file is a new one
            # that got the old inode number, as ext4 and tmpfs hand out freed inodes again — nothing to say)
            note = f"{lf.path} was replaced or truncated (its first bytes changed): read from the start"
        if note:
            plan.notes.append(PlanNote(lf.path, "rotated", note))
        if lf.gz:
            isize = gzip_isize(lf.path)
            # read to its end before: the trailer's size matches, or (a damaged file, whose last bytes
            # are no trailer) it was read as a compressed file of this very size
            if cur is not None and start > 0 and ((isize is not None and start % (1 << 32) == isize)
                                                  or (cur.get("gz") and cur.get("size") == lf.size)):
                plan.cursors.append(_carried(_cursor(lf, head, head_len, start), cur))
                continue  # nothing new in it
            plan.ranges.append(ReadRange(lf, start, None, final=True, note=note))
            plan.cursors.append(_carried(_cursor(lf, head, head_len, -1), cur))  # offset filled in after reading
            continue
        open_end = lf.live or id(lf) in still_written
        end = last_newline_end(lf.path, lf.size) if open_end else lf.size
        if end < start:
            end = start
        if end > start:
            plan.ranges.append(ReadRange(lf, start, end, final=not open_end, note=note))
        plan.cursors.append(_carried(_cursor(lf, head, head_len, end), cur))
    plan.notes += _lost(cursors, matched, read_whole=any(cur is None for *_x, cur in heads),
                        looked_at={lf.path for lf in files})
    return plan


def _own_cursors(digests: list[tuple[LogFile, str, int]], cursors: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The live plain files (by id) that keep the cursor of their own inode — the same first bytes and the bytes the
    last run read last — before any other file is matched by content: a rotated file that begins with the same
    bytes (logrotate's ``copy``, ``copytruncate`` caught between its copy and its truncation) would take it (files
    are matched oldest first) and the live file be read again from its start.  Not where the file's first lines are
    all alike (a format without a time): there the bytes cannot tell such a copy from a file truncated and written
    again with the same lines, which is the more likely."""
    own: dict[int, dict[str, Any]] = {}
    for lf, head, head_len in digests:
        if not lf.live or lf.gz:
            continue
        mine = [c for c in cursors if c.get("dev") == lf.dev and c.get("inode") == lf.inode and not c.get("gz")
                and id(c) not in {id(x) for x in own.values()}]
        cur = _match(lf, head, head_len, mine) if mine else None
        if cur is not None and int(cur.get("offset", 0)) > 0 and not _alike_lines(lf.path):
            own[id(lf)] = cur
    return own


def _alike_lines(path: str, length: int = HEAD_BYTES) -> bool:
    """Are the complete lines among the first ``length`` bytes of the file all the same (two or more)?"""
    try:
        with open(path, "rb") as fh:
            lines = fh.read(length).split(b"\n")[:-1]
    except OSError:
        return False
    return len(lines) >= 2 and lines.count(lines[0]) == len(lines)


def _copies(heads: list[tuple[LogFile, str, int, dict[str, Any] | None]], own: dict[int, dict[str, Any]]
            ) -> dict[int, tuple[LogFile, dict[str, Any], int]]:
    """The rotated files (by id) without a cursor that are copies of a live file keeping its own cursor
    (:func:`_own_cursors`), made since the last run by logrotate's ``copy`` or ``copytruncate`` (caught before it
    truncated the live file): they begin with the bytes of that cursor and hold at least what the last run read of
    the live file and at most what it holds now; a plain one ends with the bytes the live file has at the same
    offset, a gzip one is as long as its trailer says (what else begins as the live file does and is that long,
    while the live file still holds the bytes the last run read last?).  Each maps to the live file, its cursor
    and the copy's (uncompressed) size."""
    out: dict[int, tuple[LogFile, dict[str, Any], int]] = {}
    lives = [(lf, own[id(lf)]) for lf, *_x in heads if id(lf) in own]
    if not lives:
        return out
    for lf, _head, head_len, cur in heads:
        if cur is not None or lf.live:
            continue
        isize = gzip_isize(lf.path) if lf.gz else None
        for live, c in lives:
            n = int(c.get("head_len", 0))
            size = _copy_size(isize, int(c.get("offset", 0)), live.size) if lf.gz else lf.size
            if size is None or not (0 < n <= head_len and int(c.get("offset", 0)) <= size <= live.size):
                continue
            try:
                if head_digest(lf, n) == (c.get("head"), n) and (
                        lf.gz or tail_digest(lf.path, size) == tail_digest(live.path, size)):
                    out[id(lf)] = (live, c, size)
                    break
            except OSError:
                continue
    return out


def _copy_size(isize: int | None, low: int, high: int) -> int | None:
    """The uncompressed size of a gzip copy of a live file, whose trailer gives it modulo 2**32 (``isize``): the one
    size of that remainder between ``low`` (what the last run read of the live file) and ``high`` (what it holds
    now); None when there is none, or more than one (the live file grew by 4 GiB or more since)."""
    if isize is None:
        return None
    size = isize + max(0, -(-(low - isize) >> 32)) * (1 << 32)  # the smallest such size that is at least low
    return size if size <= high < size + (1 << 32) else None


def _log_keys(lf: LogFile) -> set[str]:
    """The live log a file of logrotate's naming belongs to (for the live file: its path, and the file a
    symbolic link there points to, whose rotated files are beside it), as paths with their directory
    resolved; empty for a file of another naming (a glob's match, the server's own rotation: PostgreSQL's
    log_filename)."""

    def norm(p: str) -> str:
        return os.path.join(os.path.realpath(os.path.dirname(p) or "."), os.path.basename(p))

    if lf.live:
        return {norm(lf.path), os.path.realpath(lf.path)}
    if lf.elsewhere:
        chain = lf.elsewhere.split("\0")
        return {norm(chain[0])} if chain[-1] in ("num", "date") else set()
    base = live_log(lf.path)
    return {norm(base)} if base != lf.path else set()


#: seconds after its last write that a rotated file whose program has written nowhere newer yet is taken as done
#: (:func:`_maybe_still_written`): its last line, complete or not, is then read
STILL_WRITTEN_FOR = 900.0


def _maybe_still_written(files: list[LogFile]) -> set[int]:
    """The plain (uncompressed) rotated files (ids) that their program may still be writing: logrotate renamed
    the log, and the program goes on writing the renamed file until it reopens its log (nginx's USR1, a
    postrotate script; ``delaycompress`` exists for this window) — a line may be half-written there as in the
    live file.  It is so while no file of its log rotated after it (``files`` are oldest first), nor the
    live one, holds a byte: the program has not written anywhere newer yet, and it was written to less than
    :data:`STILL_WRITTEN_FOR` ago (a program reopens its log within seconds of the rotation; one that wrote half a
    line and died never finishes it).  Such a file is read, as the live one, up to its last complete line; the
    rest is read once the program has moved on (or from the file compressed, or once it is that old)."""
    out: set[int] = set()
    later_written: set[str] = set()  # logs a file rotated later (or the live one) has bytes in
    recent = time.time() - STILL_WRITTEN_FOR
    for lf in reversed(files):
        keys = _log_keys(lf)
        if not lf.live and not lf.gz and keys and not keys & later_written and lf.mtime >= recent:
            out.add(id(lf))
        if lf.size > 0:
            later_written |= keys
    return out


def _continuations(files: list[LogFile], heads: list[tuple[LogFile, str, int, dict[str, Any] | None]],
                   unreadable: list[tuple[LogFile, OSError]], cursors: list[dict[str, Any]]
                   ) -> tuple[list[tuple[LogFile, str, int, dict[str, Any] | None]], list[tuple[LogFile, OSError]]]:
    """``heads`` and ``unreadable`` without the files of a ``rotated_dirs`` chain before the oldest one a cursor
    matched (all of the chain when none did): see :func:`plan_reads`.

    A live file that was empty at the last run has no first bytes to be recognised by once compressed: when no
    file of its chain matched, the chain is read from the oldest file modified no earlier than that empty file
    was (logrotate keeps a file's time when it compresses it) — that file, with what was written to it since,
    and those rotated after it."""
    first: dict[str, int] = {}  # chain → index in files of its oldest matched file
    order = {id(lf): i for i, lf in enumerate(files)}
    for lf, _h, _n, cur in heads:
        if lf.elsewhere and cur is not None:
            first.setdefault(lf.elsewhere, order[id(lf)])
    matched = {id(cur) for *_x, cur in heads if cur is not None}
    # the last run's empty live files that nothing matched: live path → the earliest time one was modified
    empty: dict[str, float] = {}
    for c in cursors:
        if (id(c) not in matched and c.get("live") and int(c.get("offset", 0)) <= 0
                and isinstance(c.get("mtime"), (int, float))):
            path = str(c.get("path"))
            empty[path] = min(float(c["mtime"]), empty.get(path, float(c["mtime"])))
    if empty:
        for lf in files:  # rotation order within a chain: the first one that qualifies
            chain = lf.elsewhere
            since = empty.get(chain.split("\0", 1)[0]) if chain else None
            # (1 s of slack: a filesystem or a copy that keeps whole seconds only)
            if since is not None and chain not in first and lf.mtime >= since - 1.0:
                first[chain] = order[id(lf)]

    def keep(lf: LogFile) -> bool:
        return not lf.elsewhere or (lf.elsewhere in first and order[id(lf)] >= first[lf.elsewhere])

    # after a run, an unreadable file of a chain nothing matched may be the continuation: said, as it may
    # hold the lines the last run's live file got since
    return ([h for h in heads if keep(h[0])],
            [u for u in unreadable if keep(u[0]) or (bool(cursors) and u[0].elsewhere not in first)])


def _same_inode(lf: LogFile, c: dict[str, Any]) -> bool:
    """Is ``lf`` the file the cursor ``c`` was left on, as far as its metadata tells (its bytes cannot be read):
    the same device, inode and kind, and the same birth time where both know it (ext4 and tmpfs hand freed
    inode numbers out again)."""
    born = c.get("btime_ns")
    return (c.get("dev") == lf.dev and c.get("inode") == lf.inode and bool(c.get("gz")) == lf.gz
            and (born is None or lf.btime_ns is None or born == lf.btime_ns))


def _lost(cursors: list[dict[str, Any]], matched: set[int], *, read_whole: bool,
          looked_at: set[str] | None = None) -> list[PlanNote]:
    """``lost`` notes for the last run's live files that no file matches now.

    A rotated file the last run read to its end may go (logrotate's ``rotate N`` deletes the oldest); the
    live one may not: nginx went on writing to it after the last run, and those lines are gone with it.
    A live file that was empty at the last run has no first bytes to be recognised by: if some file is read
    whole this run, it may be that one (renamed and compressed), and nothing is said.  A live file that is none
    of the files looked at now (``looked_at``: the job's log path changed, a glob's ``max_files``) but is still
    where it was (its inode) is not gone: nothing is said when no byte was written to it since the last run read
    it, else a ``left`` note says how many bytes are not read."""
    out: list[PlanNote] = []
    # the live files the last run found copied (copytruncate caught between its copy and its truncation): their
    # truncation since is logrotate's, and their lines up to the copy are in the copy
    # (the same first bytes as the copy: the cursor left on the live file before its truncation, not a later one)
    copied = {(of[0], of[1], o.get("head"), o.get("head_len")) for o in cursors
              if id(o) in matched and isinstance(of := o.get("copy_of"), list) and len(of) == 2}
    for c in cursors:
        if id(c) in matched or not c.get("live") or (
                (c.get("dev"), c.get("inode"), c.get("head"), c.get("head_len")) in copied):
            continue
        offset = int(c.get("offset", 0))
        if offset <= 0 and read_whole:
            continue
        path = str(c.get("path", "?"))
        if looked_at is not None and path not in looked_at and (there := _still_there(c)) is not None:
            if there > offset:  # written to since, and not read now: not gone, left out
                out.append(PlanNote(path, "left", (
                    f"{path}, the live log the last run read (inode {c.get('inode')}, {offset:,} bytes read), is not "
                    f"among the files this run reads (the job's log path changed, or a glob's max_files leaves it "
                    f"out), yet {there - offset:,} bytes were written to it since: they are missing from this "
                    "analysis")))
            continue
        beyond = _left_out_rotation(c, looked_at) if looked_at is not None else None
        if beyond is not None:
            out.append(PlanNote(path, "left", (
                f"{path} as the last run read it (the live log then: inode {c.get('inode')}, {offset:,} bytes read) "
                f"is {beyond} now, rotated more times since the last run than the newest files this run reads "
                "(the job's max_files): whatever was written to it after the last run is missing from this "
                "analysis, as are the files rotated between it and those read"),
                "raise the job's max_files above the number of rotations between two runs, or run the job more "
                "often (later runs do not read these files either)"))
            continue
        out.append(PlanNote(path, "lost", (
            f"{path} as the last run read it (the live log then: inode {c.get('inode')}, {offset:,} bytes read) "
            "is gone: no file here has its inode and first bytes any more. It was rotated away and deleted (or "
            "truncated) before this run — rotated more times between two runs than rotated files are kept "
            "(logrotate's 'rotate'), or its rotated copy is where it is not looked for (logrotate's olddir not "
            "named in the job's rotated_dirs option, a dateformat that does not begin with the year); whatever was written to it after the last run, if "
            "anything, is missing from this analysis (with the file gone, this run cannot tell whether it was "
            "written to after the last run read it)")))
    return out


def _left_out_rotation(c: dict[str, Any], looked_at: set[str]) -> str | None:
    """The rotated file of the log at cursor ``c``'s path that is the file ``c`` was left on — the same inode (born
    at the same time where known), or compressed since: the same first bytes — but none of the files looked at
    (more rotations since the last run than ``max_files`` keeps), or None."""
    path = Path(str(c.get("path")))
    dirs = [(path.parent, path.name)]
    real = Path(os.path.realpath(path))
    if real != path:
        dirs.append((real.parent, real.name))
    head_len = int(c.get("head_len", 0))
    for directory, name in dirs:
        for _key, p, gz in sorted(_rotated_in(directory, name), key=lambda x: x[0], reverse=True):  # newest first
            if str(p) in looked_at:
                continue
            lf = _stat(p, gz, live=False)
            if lf is None:
                continue
            if not lf.gz and not c.get("gz"):
                if _same_inode(lf, c) and lf.size >= int(c.get("offset", 0)):
                    return str(p)
            elif lf.gz and head_len > 0:
                try:
                    if head_digest(lf, head_len) == (c.get("head"), head_len):
                        return str(p)
                except OSError:
                    continue
    return None


def _still_there(c: dict[str, Any]) -> int | None:
    """The size of the file of cursor ``c`` if it is still at its path — the same device and inode, born at the
    same time where the cursor and the filesystem know it, not compressed —, else None."""
    try:
        st = os.stat(str(c.get("path")))
    except (OSError, ValueError):
        return None
    if (st.st_dev, st.st_ino) != (c.get("dev"), c.get("inode")) or c.get("gz"):
        return None
    born = c.get("btime_ns")
    btime = birth_time_ns(str(c["path"]), st) if born is not None else None
    return st.st_size if born is None or btime is None or btime == born else None


#: the subject of the note that the saved cursors could not be used
SAVED_POSITIONS = "saved read positions"


def usable_cursor(c: Any) -> bool:
    """Is ``c`` a cursor as :func:`_cursor` makes them (one an older version wrote may lack ``tail``, ``size``,
    ``btime_ns``): read back from the history database, it may be anything (damaged, another version's)."""
    if not isinstance(c, dict) or not isinstance(c.get("path"), str):
        return False
    if any(type(c.get(k, 0)) is not int or c.get(k, 0) < 0 for k in ("offset", "head_len")):
        return False
    if any(c.get(k) is not None and type(c.get(k)) is not int for k in ("dev", "inode", "size", "btime_ns")):
        return False
    mtime = c.get("mtime")
    if mtime is not None and (isinstance(mtime, bool) or not isinstance(mtime, int | float)
                              or not math.isfinite(mtime)):
        return False
    return all(c.get(k) is None or isinstance(c.get(k), str) for k in ("head", "tail"))


def _cursor(lf: LogFile, head: str, head_len: int, offset: int) -> dict[str, Any]:
    c = {"path": lf.path, "dev": lf.dev, "inode": lf.inode, "gz": lf.gz, "head": head, "head_len": head_len,
         "offset": offset, "size": lf.size, "live": lf.live, "mtime": lf.mtime}
    if lf.btime_ns is not None:
        c["btime_ns"] = lf.btime_ns
    if not lf.gz and offset > head_len:
        c["tail"] = tail_digest(lf.path, offset)
    return c


def _carried(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """``new`` with what the cursor ``old`` of the same file knew beyond its bytes: that it is a copy of a live
    file (``copy_of``, see :func:`_copies`), for as long as the copy is kept."""
    if old is not None and isinstance(old.get("copy_of"), list):
        new["copy_of"] = old["copy_of"]
    return new


def move_cursor(c: dict[str, Any], offset: int) -> None:
    """Make a plain file's cursor end at ``offset`` instead (its ``tail`` follows)."""
    c["offset"] = offset
    c.pop("tail", None)
    if not c.get("gz") and offset > int(c.get("head_len", 0)):
        c["tail"] = tail_digest(str(c["path"]), offset)


def hold_back(plan: ReadPlan, rng: ReadRange) -> None:
    """Leave ``rng`` of ``plan`` unread (its lines do not parse with the format, see
    :func:`upkeeper.logs.access.wrong_format`): out of the ranges, and its file's cursor where the range starts —
    where the last run left it, or the file's start — so that a later run reads it from there."""
    plan.ranges.remove(rng)
    lf = rng.file
    for c in plan.cursors:
        if c.get("path") == lf.path and c.get("dev") == lf.dev and c.get("inode") == lf.inode:
            if lf.gz:
                c["offset"] = rng.start
            else:
                move_cursor(c, rng.start)


def tail_digest(path: str, offset: int, length: int = HEAD_BYTES) -> str | None:
    """SHA-1 of the ``length`` bytes before ``offset`` (None when the file is shorter than ``offset``)."""
    import hashlib  # (see head_digest)

    start = max(0, offset - length)
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(offset - start)
    return hashlib.sha1(data).hexdigest() if len(data) == offset - start else None


def _other_file(lf: LogFile, c: dict[str, Any]) -> str:
    """Why the plain file ``lf``, whose bytes match the cursor ``c``'s, is neither the file ``c`` was left on nor a
    copy of it, or "": a new file that begins as the old one did (the same start-up lines; a program that fails
    the same way each time it starts) — resuming at ``c``'s offset would skip its first lines.

    * the same inode number, born at another time: a new file that got the freed number back (ext4, tmpfs);
    * the live log, another inode, born after the last run saw ``c``'s file modified: a new file. (A copy holding
      a cursor by its content is a rotated file: ``copytruncate``'s copy, a compressed one; the live log itself
      is the file it always was — on another device number after a reboot, born before.) Where the filesystem
      does not tell when a file was born, which of the two it is cannot be told: the file is read from its start,
      counting again what the last run read rather than skipping what it did not."""
    if lf.gz or c.get("gz"):
        return ""
    born, was_born, mtime = lf.btime_ns, c.get("btime_ns"), c.get("mtime")
    if c.get("dev") == lf.dev and c.get("inode") == lf.inode:
        if born is not None and isinstance(was_born, int) and born != was_born:
            return (f"{lf.path} is a new file (created {_when(born)}) that got the inode number of the one the last "
                    f"run read (created {_when(was_born)}) and begins with the same bytes: read from the start")
        return ""
    if not lf.live:
        return ""
    if born is None:
        return (f"{lf.path} is not the file the last run read (inode {c.get('inode')}, now {lf.inode}) but begins with "
                "the same bytes: whether it is that file moved or copied here or a new one cannot be told (this "
                "filesystem does not say when a file was created): read from the start — what the last run read "
                "of it, if it is that file, is counted again")
    if isinstance(mtime, (int, float)) and born > mtime * 1e9 + 1e3:  # (1 µs: the float's rounding)
        return (f"{lf.path} is a new file (created {_when(born)}, after the last run read the one it replaces) that "
                "begins with the same bytes: read from the start")
    return ""


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _match(lf: LogFile, head: str, head_len: int, cursors: list[dict[str, Any]],
           replaced: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The cursor that belongs to this file: same inode (plain files) and same first bytes; a plain file whose
    bytes match a cursor's but that is another file (:func:`_other_file`) has none, and why is put in
    ``replaced`` (by path)."""

    def other(c: dict[str, Any]) -> bool:
        why = _other_file(lf, c)
        if why and replaced is not None:
            replaced.setdefault(lf.path, why)
        return bool(why)

    def same_head(c: dict[str, Any]) -> bool:
        n = int(c.get("head_len", 0))
        if n == head_len:
            return bool(c.get("head") == head)
        if n > head_len or n <= 0:
            return False
        h, got = head_digest(lf, n)
        return got == n and h == c.get("head")

    def same_tail(c: dict[str, Any]) -> bool:
        """The bytes the last run read last are still there (only checked where the first bytes do not
        cover them): a file truncated and refilled past the old offset with the same first lines is not."""
        offset = int(c.get("offset", 0))
        if lf.gz or not c.get("tail") or offset > lf.size:
            return True  # a shorter file is handled as truncated
        return tail_digest(lf.path, offset) == c.get("tail")

    if not lf.gz:
        for c in cursors:
            # (a cursor of a file that was empty has no first bytes to compare: the file read from its start)
            if c.get("dev") == lf.dev and c.get("inode") == lf.inode and not c.get("gz") and (
                    int(c.get("head_len", 0)) == 0 or same_head(c)) and same_tail(c) and not other(c):
                return c
    else:
        for c in cursors:
            # the same compressed file, unchanged (renamed at most): an empty one has no content to be told by
            if (c.get("gz") and c.get("dev") == lf.dev and c.get("inode") == lf.inode and c.get("size") == lf.size
                    and int(c.get("head_len", 0)) == 0 and head_len == 0):
                return c
    # compressed (or copied) since: recognise it by its content
    for c in cursors:
        if same_head(c) and int(c.get("offset", 0)) > 0 and same_tail(c) and not other(c):
            return c
    return None


def continues(lf: LogFile, now: dict[str, Any], cursor: dict[str, Any]) -> bool:
    """``lf`` (whose cursor of this run is ``now``: its first bytes) is the file the old ``cursor`` was left on —
    the same file, or its rotated or compressed copy — as :func:`plan_reads` matches them."""
    return _match(lf, str(now.get("head", "")), int(now.get("head_len", 0)), [cursor]) is not None


def finish_cursors(plan: ReadPlan, gz_sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Cursors to store after a successful read (gz offsets become the uncompressed size read)."""
    out = []
    for c in plan.cursors:
        if c["offset"] == -1:
            c = {**c, "offset": gz_sizes.get(c["path"], 0)}
        out.append(c)
    return out
