"""Scan byte ranges of log files in several processes and merge what they found.

The calling process scans too; helpers are ``python -m upkeeper.logs.scanworker``
children (started through :mod:`upkeeper.core.proc`, so they live in the run's
process group and die with it on a timeout).  Work is handed out one *unit* at a
time — a byte range of a plain file aligned to line (or entry) starts, or a whole
compressed file — so fast and slow processes balance themselves.  Every process
keeps its own accumulator; only the reduced partial results travel back, pickled.

Memory stays bounded: files are read in buffers of :data:`CHUNK` bytes, a line is
not held whole beyond :data:`MAX_LINE` bytes (see :func:`read_unit`), and the
accumulators hold distinct values only (hosts, request lines, agents …).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import platform
import queue
import re
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from upkeeper.logs.sources import open_compressed
from upkeeper.logs.speculate import Claims

if TYPE_CHECKING:
    from upkeeper.core.proc import Spawned

CHUNK = 4 << 20  # bytes per buffer handed to an accumulator
UNIT = 24 << 20  # bytes per unit of work for plain files
MIN_PARALLEL = 16 << 20  # below this, helpers cost more than they save
#: pieces per process of an access log (its lines are independent): see :func:`units_for`
ACCESS_PIECES = 8
#: of those, the last ones per process cut again into quarters (``tail`` of :func:`units_for`): with pieces of one
#: size (~55 ms each of the 100 MB log) the process that took the last one scanned it alone while the other waited
#: (the ends 60 ms apart, median of 14 runs; 21 ms with the quarters)
ACCESS_TAIL = 1
#: but only with pieces up to this size (a log of up to ~256 MB for two processes): the processes then reach their
#: whole scan state together, and on a 1 GB log (64 MB pieces) that added ~6 MB to the peak of the process tree
#: (medians of 13 runs each, 2026-12-07), where a staggered end lets the first process shrink while the other ends
TAIL_MAX_UNIT = 16 << 20
#: the helpers leave the last pieces of the queue, up to this part of the scan's bytes (1/40: 2.5 MB of a 100 MB log),
#: to the calling process: a helper's end costs more than the caller's own (it builds its partial result, bigger when
#: it read ahead, pickles it and exits, then the caller unpickles it), and the caller waited for it, idle (~50 ms of
#: the 100 MB access log's run, 2026-12-07)
HELPERS_LEAVE = 40
#: processes that scan when a task says ``workers: 0``: one per CPU, but at most this many.  Each
#: scanning process holds about 150 MB at its peak on a big access log, so the default keeps a 1 GB
#: log under 500 MB for the whole process tree on any machine; ``workers`` raises it for speed.
DEFAULT_MAX_WORKERS = 2


#: the part of a memory limit per scanning process (:func:`scan` starts fewer helpers than asked rather than fewer):
#: each process adds the heap's holes and its own copy of the values the processes share (a client seen by all):
#: 16 processes within 512 MB (each checked against its 32 MB share, as it was then) stopped on the benchmark's
#: 1 GB log (14–34 MB each); 5 read it in the same time on 2 cores (55–73 MB each)
MIN_SHARE = 96 << 20


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS))
#: A line longer than this is not held whole (NUL padding after a crash, a binary file): nginx's
#: lines are far shorter (the request line and each header are at most 8 KB with the default
#: large_client_header_buffers, error messages at most 2 KB); a PostgreSQL statement this long is
#: a bulk load, still counted with its duration when cut (reports show 2000 bytes of a statement).
#: A reading process carries at most this much of a line from one buffer to the next.
MAX_LINE = 1 << 20
#: The start of a too-long line that is kept and handed on: the parsers see the line cut there
#: (counted as invalid, with a sample, when that start does not parse — as any bad line).
LONG_LINE_HEAD = 64 << 10


def release_memory() -> None:
    """Hand the free pages inside glibc's heap back to the system (``malloc_trim``; elsewhere nothing).

    A scanning process's heap keeps holes of 20–25 MB (the per-buffer Arrow columns and lists freed
    between Python objects that live on): resident, counted in its RSS, reused only by the next buffer.
    Called when a process has no more to scan and once its partial result is built, so that what one
    process no longer needs is not counted while the others still scan (a millisecond or two each)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: while a partial result is built, pickled, unpickled or merged.

    Those steps make hundreds of thousands of tuples, dicts and sets that live on (the partial result) and no
    cyclic garbage, yet each 700 of them trip a collection, and every few a full one that traverses all that
    the process holds: 5–15 ms of a 100 MB access log's tail in each process, growing with the log."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Accumulator(Protocol):
    """``chunk`` (optional attribute): the buffer size it wants, else :data:`CHUNK`.  ``start_unit(source,
    start, end)`` (optional method): called before each unit's buffers (a unit may not continue the last one:
    units are handed out biggest first)."""

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None: ...

    def partial(self) -> Any: ...


@dataclass(frozen=True)
class ReadNote:
    """Something wrong with a file that was read anyway: ``damaged`` (truncated or corrupt compressed
    data: the lines after the damage are lost) or not (trailing garbage after the compressed data)."""

    path: str
    message: str
    damaged: bool


class FileChanged(Exception):
    """A file was replaced or truncated between planning its read and reading it (logrotate ran meanwhile):
    what was read is not what the cursors will say was read, so the run must not record them."""


class MemoryLimit(Exception):
    """The scanning processes' counting outgrew the scan's memory limit (see :func:`scan`): a log of too many
    distinct values (request lines, clients, statements) for the limit.  Nothing of the scan is reported, so the
    run must not record cursors.  ``grown``: what the process that says so added (the one that added most tells
    what filled the memory)."""

    def __init__(self, message: str, grown: int = 0) -> None:
        super().__init__(message)
        self.grown = grown


def resident() -> int:
    """This process's resident memory in bytes (/proc/self/statm; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Board:
    """What each scanning process of a scan has added to its resident memory: an 8-byte slot each in a small shared
    file (``path``), so that every process checks the sum against the scan's limit.  With a share each instead, the
    process that read more than its part (a whole compressed file, or the pieces of a plain one it took before the
    helpers started) stopped the scan while the others held little: 86 MB together of a 128 MB limit."""

    def __init__(self, path: str, slots: int = 0) -> None:
        """Open the board at ``path``; with ``slots``, make it (zeroed) first."""
        import mmap

        self.path = path
        with open(path, "r+b" if not slots else "w+b") as fh:
            if slots:
                fh.truncate(8 * slots)
            self.slots = os.fstat(fh.fileno()).st_size // 8
            self.map = mmap.mmap(fh.fileno(), 8 * self.slots)

    @classmethod
    def make(cls, slots: int) -> Board:
        fd, path = tempfile.mkstemp(prefix="upkeeper-scan-", suffix=".mem")
        os.close(fd)
        try:
            return cls(path, slots)
        except BaseException:
            os.unlink(path)
            raise

    def put(self, slot: int, grown: int) -> None:
        self.map[8 * slot:8 * slot + 8] = max(0, grown).to_bytes(8, "little")

    def total(self) -> int:
        m = self.map
        return sum(int.from_bytes(m[i:i + 8], "little") for i in range(0, 8 * self.slots, 8))

    def close(self, remove: bool = False) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


@dataclass
class Budget:
    """What the scanning processes may add to their resident memory while they scan: ``limit`` bytes (0: no
    limit) together, each above its ``base``: its resident memory after its first buffer (which imported what the
    scan needs: pyarrow's ~50 MB, not the log's).  ``board``: where each process's growth is (this one's at
    ``slot``); none: this process is the only one."""

    limit: int
    base: int | None = None
    board: Board | None = None
    slot: int = 0

    def check(self, acc: Any, where: str) -> None:
        """Raise :class:`MemoryLimit` (saying what ``acc`` holds: its optional ``sizes()``) once past the limit."""
        if self.limit <= 0:
            return
        if self.base is None:
            self.base = resident()
            return
        grown = max(0, resident() - self.base)
        together = grown
        if self.board is not None:
            self.board.put(self.slot, grown)
            together = self.board.total()
        if together <= self.limit:
            return
        sizes = getattr(acc, "sizes", None)
        held = dict(sizes()) if callable(sizes) else {}
        lines = held.pop("lines", None)
        what = ", ".join(f"{v:,} {k}" for k, v in sorted(held.items(), key=lambda kv: -kv[1])[:3] if v > 1)
        mb = 2**20
        raise MemoryLimit((f"after {lines:,} lines of {where}" if lines is not None else f"reading {where}")
                          + (f" the {self.board.slots} scanning processes held {together / mb:,.0f} MB more than "
                             f"when they began (this one {grown / mb:,.0f} MB"
                             + (f": {what})" if what else ")") if self.board is not None else
                             f" the scanning process held {grown / mb:,.0f} MB more than when it began"
                             + (f" ({what})" if what else ""))
                          + f", past the limit of {self.limit / mb:,.0f} MB", grown)


@dataclass(frozen=True)
class Unit:
    path: str
    start: int
    end: int | None  # None: to EOF (compressed files)
    gz: bool
    final: bool  # a last line without newline is a line
    label: str = ""
    ident: tuple[int, int] | None = None  # (device, inode) planned: another file at ``path`` is FileChanged

    @property
    def size_hint(self) -> int:
        if self.end is not None:
            return self.end - self.start
        try:
            return os.path.getsize(self.path) * 8  # compressed text is about 8x smaller
        except OSError:
            return 0


def entry_start(buf: bytes, pos: int, continuation: bytes, record_start: re.Pattern[bytes] | None = None) -> int:
    """First offset ≥ ``pos`` that starts a line (and, with ``continuation``, a new entry; with
    ``record_start``, a line that it matches: a record that may span lines, such as a csvlog one)."""
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return -1
        nxt = nl + 1
        if record_start is not None:
            if nxt < len(buf) and record_start.match(buf, nxt):
                return nxt
        elif not continuation or buf[nxt:nxt + len(continuation)] != continuation or nxt >= len(buf):
            return nxt
        pos = nxt


def split_units(path: str, start: int, end: int, *, final: bool, label: str = "",
                continuation: bytes = b"", unit: int = UNIT, ident: tuple[int, int] | None = None,
                record_start: re.Pattern[bytes] | None = None) -> list[Unit]:
    """Cut [start, end) of a plain file into units that begin at line/entry starts (see :func:`entry_start`)."""
    if end - start <= unit * 1.5:
        return [Unit(path, start, end, False, final, label, ident)]
    cuts = [start]
    with open(path, "rb") as fh:
        pos = start + unit
        while pos < end - unit // 2:
            fh.seek(pos)
            window = fh.read(1 << 16)
            i = entry_start(window, 0, continuation, record_start) if window else -1
            if i < 0:
                pos += 1 << 16
                continue
            cut = pos + i
            if cut >= end:
                break
            cuts.append(cut)
            pos = cut + unit
    cuts.append(end)
    return [Unit(path, a, b, False, final and b == end, label, ident) for a, b in zip(cuts, cuts[1:], strict=False)
            if b > a]


def read_unit(u: Unit, chunk: int = CHUNK, continuation: bytes = b"", max_line: int = MAX_LINE,
              keep: int = LONG_LINE_HEAD, notes: list[ReadNote] | None = None
              ) -> Generator[tuple[int, bytes], None, int]:
    """Buffers of complete lines (entries) of ``u`` with their uncompressed offsets.

    A line is not held whole once more than ``max_line`` of its bytes are pending without a
    newline (NUL padding after a crash, a binary file): it comes as a buffer of its own holding
    only its first ``keep`` bytes (at most ``max_line``; and its newline), and the rest is skipped as it is read, so at
    most ``max_line`` bytes are carried from one read to the next.  Lines of up to ``max_line``
    bytes always come whole (longer ones too when their newline arrives in time: up to
    ``max_line + chunk``).  Hence a buffer may stand for more bytes than it holds: the generator
    returns (``StopIteration.value``, which :func:`scan_unit` uses) how many bytes of ``u`` it
    handed out or skipped.

    A compressed file is read as ``zcat`` reads it (:class:`~upkeeper.logs.sources.GzipReader`).
    When it is truncated or its data is damaged, the complete lines before the damage are handed
    out and the incomplete one is not (so a cursor set from the returned count resumes at a line
    start, should the file be completed later); trailing garbage after the compressed data is
    ignored.  Either way a :class:`ReadNote` is appended to ``notes``.
    """
    keep = min(keep, max_line)
    with open(u.path, "rb") as raw:
        _check_same(u, os.fstat(raw.fileno()))
        gz = open_compressed(raw, u.path) if u.gz else None
        fh: Any = gz if gz is not None else raw
        if u.start:
            if u.gz:
                remaining = u.start
                while remaining > 0:
                    skipped = fh.read(min(remaining, chunk))
                    if not skipped:
                        break
                    remaining -= len(skipped)
            else:
                fh.seek(u.start)
        pos = u.start  # offset of the end of ``data``
        done = u.start  # offset of the end of what was handed out (or skipped)
        carry = b""
        long_at = -1  # offset of the too-long line being skipped, when >= 0
        head = b""  # its first bytes
        while True:
            want = chunk if u.end is None else min(chunk, u.end - pos)
            data = fh.read(want) if want > 0 else b""
            if not data:
                break
            pos += len(data)
            if long_at >= 0:
                nl = data.find(b"\n")
                if nl < 0:
                    continue  # still inside the long line
                yield long_at, head + b"\n"
                done = pos - len(data) + nl + 1
                long_at, head = -1, b""
                data = data[nl + 1:]
                if not data:
                    continue
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n") + 1
            if len(buf) - cut > max_line:  # the last line is too long: hand out the lines before it
                if cut:
                    yield pos - len(buf), buf[:cut]
                done = long_at = pos - len(buf) + cut
                head, carry = buf[cut:cut + keep], b""
                continue
            if continuation and cut and (len(buf) - cut < len(continuation)
                                         or buf[cut:cut + len(continuation)] == continuation):
                # the line after the cut may continue the last entry (or is one of its lines): do not
                # split a multi-line entry, cut before the last entry start instead
                k = buf.rfind(b"\n", 0, cut - 1) + 1
                while k > 0 and buf[k:k + len(continuation)] == continuation:
                    k = buf.rfind(b"\n", 0, k - 1) + 1
                cut = k if k > 0 else cut
            if cut == 0:
                carry = buf
                continue
            yield pos - len(buf), buf[:cut]
            done = pos - len(buf) + cut
            carry = buf[cut:]
        if gz is not None and gz.problem is not None:
            label = u.label or u.path
            if not gz.damaged:  # trailing garbage: the data before it is whole, read on as at any end
                msg = f"{label}: {gz.problem}; the {pos:,} bytes of log text before it were read"
            else:  # the complete lines before the damage, not the one it cuts
                cut = carry.rfind(b"\n") + 1 if long_at < 0 else 0
                if cut:
                    yield pos - len(carry), carry[:cut]
                    done = pos - len(carry) + cut
                msg = (f"{label}: {gz.problem} after {pos:,} bytes of log text: the complete lines before it "
                       "were read, the rest of the file is lost" if pos > u.start else
                       f"{label}: {gz.problem}: nothing could be read from it")
            if notes is not None:
                notes.append(ReadNote(label, msg, gz.damaged))
            if gz.damaged:
                return done - u.start
        if u.end is not None and pos < u.end:  # the file got shorter while it was read
            _check_same(u, os.fstat(raw.fileno()))
        if u.final or u.end is None:
            if long_at >= 0:
                yield long_at, head
                done = pos
            elif carry:
                yield pos - len(carry), carry
                done = pos
        elif carry.endswith(b"\n"):
            yield pos - len(carry), carry
            done = pos
        # else: a half-written last line of the live file waits for the next run
    return done - u.start


def _check_same(u: Unit, st: os.stat_result) -> None:
    """Raise FileChanged when the file open for ``u`` is not the one planned, or is now shorter than planned."""
    label = u.label or u.path
    if u.ident is not None and (st.st_dev, st.st_ino) != u.ident:
        raise FileChanged(f"{label} was replaced (rotated) while this run was reading the logs")
    if u.end is not None and not u.gz and st.st_size < u.end:
        raise FileChanged(f"{label} got shorter (truncated, e.g. copytruncate) while this run was reading the logs")


def scan_unit(acc: Accumulator, u: Unit, continuation: bytes = b"", notes: list[ReadNote] | None = None,
              budget: Budget | None = None) -> int:
    """Feed one unit to an accumulator; returns the uncompressed bytes read (notes: see :func:`read_unit`;
    ``budget``: checked after each buffer, see :class:`Budget`)."""
    chunk = getattr(acc, "chunk", CHUNK)  # an accumulator may prefer other buffer sizes
    start_unit = getattr(acc, "start_unit", None)  # one whose entries pair across lines wants to know
    if start_unit is not None:
        start_unit(u.label or u.path, u.start, u.end)
    reader = read_unit(u, chunk, continuation=continuation, notes=notes)
    while True:
        try:
            off, buf = next(reader)
        except StopIteration as stop:
            n: int = stop.value
            return n
        acc.feed(buf, u.label or u.path, off)
        if budget is not None and budget.limit > 0:
            budget.check(acc, u.label or u.path)


class _Pieces(queue.Queue[Unit]):
    """A scan's queue of pieces, which knows the bytes they hold (their ``size_hint``, taken once each as it is put
    there: a compressed file's is a stat, and the helpers look at this sum before each piece they take)."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.hints: deque[int] = deque()
        self.bytes = 0

    def _put(self, item: Unit) -> None:
        hint = item.size_hint
        super()._put(item)
        self.hints.append(hint)
        self.bytes += hint

    def _get(self) -> Unit:
        self.bytes -= self.hints.popleft()
        return super()._get()


def queue_order(units: list[Unit]) -> list[Unit]:
    """The order in which a scan with helpers hands ``units`` out: the biggest first (balance); a helper started
    ahead reads them in this order before the scan begins (:mod:`upkeeper.logs.speculate`)."""
    return sorted(units, key=lambda u: -u.size_hint)


def _load(kind: str) -> Any:
    return importlib.import_module(kind)


def scan(kind: str, opts: Any, units: list[Unit], *, workers: int = 0,
         progress: Callable[[int, int], None] | None = None, continuation: bytes = b"",
         min_parallel: int = MIN_PARALLEL, notes: list[ReadNote] | None = None,
         memory_limit: int = 0, processes: dict[str, int] | None = None,
         idle: Callable[[], None] | None = None) -> tuple[Any, dict[str, int]]:
    """Run ``units`` through accumulators of module ``kind`` and merge their partial results.

    ``kind`` names a module with ``make_accumulator(opts)`` and ``merge(partials)``.  Returns the
    merged partial and the uncompressed bytes read per compressed file (for cursors).  Below
    ``min_parallel`` bytes no helper process is started (starting one costs a few tenths of a
    second: a fast accumulator sets it higher) and the units are scanned in the order given.
    Damaged compressed files are read up to the damage; ``notes`` (when given) receives a
    :class:`ReadNote` for each.  ``memory_limit``: bytes the scanning processes may add to their resident
    memory together (:class:`Board`; at most one process per :data:`MIN_SHARE` of it: fewer helpers start when
    ``workers`` asks for more; 0: no limit), else :class:`MemoryLimit` is raised once every process has stopped
    (each at its next buffer: the sum they check is past the limit).  ``processes`` (when given) receives how many
    processes scanned (``scanning``: this one and its helpers), how many helpers were started before the scan
    (``prestarted``, see :func:`prestart`) and how many of those by ``upkeeper run`` before it forked this worker
    (``ahead``).  ``idle`` (when given, and helpers scan) is called once this process has scanned its units and built
    its partial result, while the helpers finish theirs: work the caller needs after the scan but not from it
    (reading history) costs no time there.
    """
    mod = _load(kind)
    total = sum(u.size_hint for u in units) or 1
    if workers <= 0:
        workers = default_workers()
    helpers = min(workers - 1, len(units) - 1) if total >= min_parallel else 0
    if memory_limit > 0:  # each process at least MIN_SHARE of the limit
        helpers = min(helpers, max(0, memory_limit // MIN_SHARE - 1))
    todo = _Pieces()
    ordered = queue_order(units) if helpers > 0 else list(units)
    done_bytes = [0]
    gz_read: dict[str, int] = {}
    lock = threading.Lock()
    partials: list[str] = []  # files holding the helpers' pickled partial results
    errors: list[Exception] = []

    found: list[ReadNote] = []

    def account(u: Unit, n: int, unit_notes: list[ReadNote]) -> None:
        with lock:
            done_bytes[0] += u.size_hint if u.gz else n
            if u.gz:
                gz_read[u.path] = u.start + n
            found.extend(unit_notes)

    ready = [_take_prestarted(kind) for _ in range(max(0, helpers))]
    dismiss_prestarted()  # those this scan does not need
    # what a helper started ahead read before the scan began: its pieces, when its plan is this scan's
    taken: list[list[Unit] | None] = []
    for sp in ready:
        claims = _claims.pop(sp.popen.pid, None) if sp is not None else None
        k, plan = claims.close() if claims is not None else (0, None)
        if claims is not None:
            claims.remove()
        read: list[Unit] = list(plan[3][:k]) if k and isinstance(plan, tuple) and len(plan) == 4 else []
        if read and isinstance(plan, tuple) and plan[:3] == (kind, opts, continuation) and set(read) <= set(ordered):
            # every piece it read is one of this scan's (a live log grown meanwhile is cut elsewhere at its end
            # only: see units_for): this scan's queue goes without them
            taken.append(read)
            gone = set(read)
            ordered = [u for u in ordered if u not in gone]
        else:
            taken.append(None if k else [])  # (None: it read pieces, and throws them away)
    for u in ordered:
        todo.put(u)
    settled = [threading.Event() for t in taken if t]  # set once the pieces a helper read ahead are accounted for
    if processes is not None:
        from upkeeper.core.adopted import Adopted

        processes.update(scanning=1 + len(ready), prestarted=sum(sp is not None for sp in ready),
                         ahead=sum(sp is not None and isinstance(sp.popen, Adopted) for sp in ready),
                         read_ahead=sum(len(t) for t in taken if t),
                         read_ahead_bytes=sum(u.size_hint for t in taken if t for u in t),
                         pieces=len(units))
    board = Board.make(len(ready) + 1) if memory_limit > 0 and ready else None
    threads: list[threading.Thread] = []
    try:
        waits = iter(settled)
        lead = sum(u.size_hint for u in units) // HELPERS_LEAVE
        threads = [threading.Thread(target=_drive_helper, args=(kind, opts, todo, account, partials, errors, lock,
                                                                continuation, sp, memory_limit, board, i + 1),
                                    kwargs={"taken": taken[i], "settled": next(waits) if taken[i] else None,
                                            "lead": lead},
                                    daemon=True, name=f"scan-helper-{i}")
                   for i, sp in enumerate(ready)]
        for t in threads:
            t.start()
        budget = Budget(memory_limit, board=board)
        acc = mod.make_accumulator(opts)
        while True:
            if errors and isinstance(errors[0], FileChanged | MemoryLimit):  # a helper's: the scan fails, stop now
                del acc
                _stop_all(todo, threads, partials)
                raise errors[0]
            try:
                u = todo.get_nowait()
            except queue.Empty:
                pending = next((e for e in settled if not e.is_set()), None)
                if pending is None:
                    break
                pending.wait()  # pieces read ahead may come back to the queue (see _drive_helper's taken)
                continue
            unit_notes: list[ReadNote] = []
            try:
                account(u, scan_unit(acc, u, continuation, unit_notes, budget), unit_notes)
            except MemoryLimit as exc:
                del acc
                _stop_all(todo, threads, partials)  # the helpers stop at their next buffer, and take no other
                # the process that added most says what filled the memory (this one may have stopped on their sum)
                raise max([exc, *(e for e in errors if isinstance(e, MemoryLimit))], key=lambda e: e.grown) from None
            if progress is not None:
                progress(min(done_bytes[0], total), total)
        release_memory()  # the last buffer's columns: not needed while the helpers finish
        with paused_gc():
            mine = acc.partial()  # reduce our own state before the helpers' results arrive
        del acc
        release_memory()
        if idle is not None and threads:
            idle()
        for t in threads:
            t.join()
        if notes is not None:
            notes.extend(sorted(found, key=lambda x: x.path))
        merged = mine
        try:
            if errors:
                if isinstance(errors[0], FileChanged | MemoryLimit):
                    raise errors[0]
                raise RuntimeError(f"a log scanning helper failed: {errors[0]}")
            while partials:  # helpers' results wait in files until merged, one at a time
                path = partials.pop()
                with paused_gc():
                    try:
                        with open(path, "rb") as fh:
                            theirs = pickle.load(fh)
                    finally:
                        os.unlink(path)
                    merged = mod.merge([merged, theirs])
                    del theirs
                release_memory()
        finally:
            for path in partials:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return merged, gz_read
    except BaseException:
        # whatever ended the scan in this process (a file that changed under it, a stop, an accumulator's
        # failure): the helpers take no other unit, and the results they wrote are removed (those of a helper
        # that went on to its end stayed in the temp directory, a file at every such run)
        _stop_all(todo, threads, partials)
        raise
    finally:
        if board is not None:
            board.close(remove=True)


def _stop_all(todo: queue.Queue[Unit], threads: list[threading.Thread], partials: list[str]) -> None:
    """Hand out no more units, wait for the helpers to end, and drop their results (a scan that fails)."""
    with contextlib.suppress(queue.Empty):
        while True:
            todo.get_nowait()
    for t in threads:
        t.join()
    for path in partials:
        with contextlib.suppress(OSError):
            os.unlink(path)
    partials.clear()


def _spawn_helper(warm: str = "", *, ahead: bool = False) -> Spawned:
    """A new ``python -m upkeeper.logs.scanworker`` (``warm``: the accumulator module it imports at once, with
    what its scanning needs, see :func:`prestart`; ``ahead``: started before this process forks the worker that
    will drive it, see :func:`prestart`)."""
    import upkeeper
    from upkeeper.core import proc

    src = os.path.dirname(os.path.dirname(os.path.abspath(upkeeper.__file__)))
    pp = os.environ.get("PYTHONPATH")
    return proc.spawn([sys.executable, "-m", "upkeeper.logs.scanworker", *(["--warm", warm] if warm else [])],
                      stdin=proc.PIPE, stdout=proc.PIPE, extra_env={"PYTHONPATH": src + (os.pathsep + pp if pp else "")},
                      stderr_file=ahead)


#: helpers started ahead of a scan (:func:`prestart`), by accumulator module, until one is taken or dismissed
_prestarted: list[tuple[str, Spawned]] = []
_prestarted_lock = threading.Lock()
#: the claim files of the helpers that read ahead (:mod:`upkeeper.logs.speculate`), by process id
_claims: dict[int, Claims] = {}
#: the most a message to a helper that reads ahead may hold (the job's options): it is written before any thread
#: could drain the pipe, so it must fit in the pipe's buffer (64 KB on Linux)
SPECULATE_MAX = 32 << 10


def prestart(kind: str, count: int = 1, *, ahead: bool = False,
             speculate: tuple[dict[str, Any], dict[str, Any]] | None = None) -> int:
    """Have ``count`` helpers for a scan of ``kind`` that is to come, before it is planned: starts those missing
    (several jobs' head starts share them: one scan takes them); returns how many it started.

    A helper is a new interpreter that imports what the scanning needs (pyarrow for access logs: ~0.15 s of CPU,
    see ``warm`` in the accumulator module) before it can scan its first unit.  ``upkeeper run`` starts them while
    its worker waits for the run to be sent (:meth:`upkeeper.core.task.Task.head_start`), on another core: the
    scan's helpers then start on their first unit when it does, instead of ~0.2 s later.  :func:`scan` takes
    them first and dismisses the ones it does not need (a read below ``min_parallel``); so does
    :func:`dismiss_prestarted`.

    ``speculate`` (the job's options and target settings, as written in the config file): the first helper started
    reads the first pieces of the job's log until the scan begins (:mod:`upkeeper.logs.speculate`).

    ``ahead``: ``upkeeper run`` itself, before it imports what it needs and forks its worker (see
    :mod:`upkeeper.logs.ahead`): no thread is started (stderr goes to a file), and the fork hands the helpers to the
    worker (:func:`fork_fds`, :func:`adopt_forked`, :func:`release_forked`)."""
    started = 0
    with _prestarted_lock:
        have = sum(1 for k, _sp in _prestarted if k == kind)
    for _ in range(count - have):
        try:
            sp = _spawn_helper(kind, ahead=ahead)
        except Exception:  # the scan starts its own (and reports what is wrong there)
            break
        with _prestarted_lock:
            _prestarted.append((kind, sp))
        if speculate is not None and not started:
            _read_ahead(sp, kind, speculate, count + 1)
        started += 1
    return started


def _read_ahead(sp: Spawned, kind: str, job: tuple[dict[str, Any], dict[str, Any]], share: int) -> None:
    """Have the helper ``sp`` read the job's first pieces until the scan begins (best effort)."""
    try:
        claims = Claims.make()
    except OSError:  # (no temp directory): no reading ahead
        return
    try:
        msg = pickle.dumps(("speculate", claims.path, *job, share), protocol=pickle.HIGHEST_PROTOCOL)
        if len(msg) > SPECULATE_MAX:
            raise ValueError("the job's options are too big to send before the fork")
        sp.stdin.write(msg)
        sp.stdin.flush()
    except Exception:  # (options that do not pickle, a helper already gone): no reading ahead
        claims.remove()
        return
    if not _claims:  # (the worker forked from this process removes those it reads; what is left goes at exit)
        import atexit

        atexit.register(remove_claims)
    _claims[sp.popen.pid] = claims


#: helpers started ahead that the CLI handed to its forked worker (:func:`release_forked`): their processes are its
#: children, left unreaped until it exits (the worker reads their exit status from /proc: see core.adopted)
_handed: list[Spawned] = []


def fork_fds() -> list[int]:
    """The descriptors a worker forked now must keep open to drive the helpers started ahead (their stdin, stdout
    and stderr file)."""
    from upkeeper.core.adopted import StderrFile

    fds: list[int] = []
    with _prestarted_lock:
        for _k, sp in _prestarted:
            fds += [f.fileno() for f in (sp.popen.stdin, sp.popen.stdout) if f is not None]
            if isinstance(sp.collector, StderrFile):
                fds.append(sp.collector.fh.fileno())
    return fds


def adopt_forked() -> None:
    """In a worker just forked from the process that started the helpers (still in :data:`_prestarted`): follow
    them as :class:`~upkeeper.core.adopted.Adopted` processes (this process is not their parent); one that cannot
    be followed is closed (the scan starts its own)."""
    from upkeeper.core.adopted import Adopted

    with _prestarted_lock:
        kept: list[tuple[str, Spawned]] = []
        for k, sp in _prestarted:
            try:
                sp.popen = Adopted(sp.popen.pid, sp.popen.stdin, sp.popen.stdout)
            except Exception:  # (no pidfd for it: this process cannot follow it)
                for f in (sp.popen.stdin, sp.popen.stdout):
                    with contextlib.suppress(OSError):
                        if f is not None:
                            f.close()
                continue
            kept.append((k, sp))
        _prestarted[:] = kept


def release_forked(handed: bool) -> None:
    """In the process that started helpers ahead, once it has forked its worker: ``handed`` (the worker is a fork
    of this process, and drives them now), close this process's ends of their pipes, so that they see the
    worker's alone, and keep them unreaped (:data:`_handed`); else (the worker is a new interpreter, which cannot
    drive them) dismiss them."""
    from upkeeper.core.adopted import StderrFile

    if not handed:
        dismiss_prestarted()
        return
    if not _handed:
        import atexit

        atexit.register(reap_handed)
    with _prestarted_lock:
        left = [sp for _k, sp in _prestarted]
        _prestarted.clear()
    for sp in left:
        for f in (sp.popen.stdin, sp.popen.stdout):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        if isinstance(sp.collector, StderrFile):
            sp.collector.close()
        _handed.append(sp)


def reap_handed() -> None:
    """As this process exits: reap the helpers it handed to its worker that have ended (by then, all but one a scan
    dismissed at its very end), so that their CPU time counts in this process's children (``time``, a benchmark's
    ``RUSAGE_CHILDREN``) and none is left to init."""
    for sp in _handed:
        with contextlib.suppress(Exception):
            sp.popen.poll()


def remove_claims() -> None:
    """Remove the claim files of the helpers that read ahead that no scan took (as the process that made them
    exits: a run refused or failed before its scan, a worker that never scanned)."""
    while _claims:
        _pid, claims = _claims.popitem()
        claims.remove()


def _take_prestarted(kind: str) -> Spawned | None:
    """A helper :func:`prestart` started for ``kind`` and still running, or None."""
    while True:
        with _prestarted_lock:
            i = next((i for i, (k, _sp) in enumerate(_prestarted) if k == kind), -1)
            if i < 0:
                return None
            _k, sp = _prestarted.pop(i)
        if sp.popen.poll() is None:
            return sp
        _close(sp)  # it died while waiting (its stderr says why): a new one is started instead


def dismiss_prestarted() -> None:
    """End the helpers :func:`prestart` started that no scan took (their stdin closed: they exit at once)."""
    with _prestarted_lock:
        left = [sp for _k, sp in _prestarted]
        _prestarted.clear()
    for sp in left:
        _close(sp)


def _close(sp: Spawned) -> None:
    claims = _claims.pop(sp.popen.pid, None)
    if claims is not None:  # (what it read ahead is thrown away with it)
        claims.remove()
    with contextlib.suppress(Exception):
        sp.stdin.close()
    with contextlib.suppress(Exception):
        sp.popen.wait(timeout=5)
    sp.__exit__(None, None, None)  # (killed if it did not end)


def _drive_helper(kind: str, opts: Any, todo: _Pieces,
                  account: Callable[[Unit, int, list[ReadNote]], None],
                  partials: list[str], errors: list[Exception], lock: threading.Lock, continuation: bytes,
                  ready: Spawned | None = None, memory_limit: int = 0, board: Board | None = None,
                  slot: int = 0, *, taken: list[Unit] | None = None, settled: threading.Event | None = None,
                  lead: int = 0) -> None:
    """Hand units to one helper process (``ready``: one :func:`prestart` started, else a new one) until none is
    left, or those left hold ``lead`` bytes at most (the calling process scans them: see :data:`HELPERS_LEAVE`), then
    have it write its partial result to a file for :func:`scan` to merge (``board``, ``slot``: where it says what
    memory it added, see :class:`Board`; zeroed once it has ended).

    ``taken``: the pieces a helper started ahead read before the scan began, which the scan left out of its queue
    (see :mod:`upkeeper.logs.speculate`): accounted for as it tells what it read of each, or put back in the queue
    when it could not read them all; ``settled`` is set then (or when this ends otherwise).  None: it read pieces
    of another plan, and throws them away."""
    try:
        _drive(kind, opts, todo, account, partials, errors, lock, continuation, ready, memory_limit, board, slot,
               taken, settled, lead)
    finally:
        if settled is not None:  # (whatever happened: the scan's own process waits for it at its end)
            settled.set()


def _drive(kind: str, opts: Any, todo: _Pieces, account: Callable[[Unit, int, list[ReadNote]], None],
           partials: list[str], errors: list[Exception], lock: threading.Lock, continuation: bytes,
           ready: Spawned | None, memory_limit: int, board: Board | None, slot: int, taken: list[Unit] | None,
           settled: threading.Event | None = None, lead: int = 0) -> None:
    from upkeeper.core.proc import describe_exit

    try:
        sp = ready or _spawn_helper()
    except Exception:  # no helper: the main process does the work alone
        return
    with sp:
        try:
            send = pickle.Pickler(sp.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            recv = pickle.Unpickler(sp.stdout)
            send.dump(("init", kind, opts, continuation, memory_limit, board.path if board is not None else "", slot,
                       -1 if taken is None else len(taken)))
            sp.stdin.flush()
            if taken:
                _settle(recv.load(), taken, todo, account)
                if settled is not None:
                    settled.set()
            while True:
                if lead > 0:
                    with todo.mutex:
                        if todo.bytes <= lead:
                            break  # (the calling process takes what is left: it never stops before the queue is empty)
                try:
                    u = todo.get_nowait()
                except queue.Empty:
                    break
                send.dump(("unit", u))
                sp.stdin.flush()
                msg = recv.load()
                if msg[0] == "changed":
                    raise FileChanged(msg[1])
                if msg[0] == "memory":
                    raise MemoryLimit(msg[1], int(msg[2]) if len(msg) > 2 else 0)
                if msg[0] == "error":
                    raise RuntimeError(msg[1])
                account(u, int(msg[1]), list(msg[2]))
            fd, path = tempfile.mkstemp(prefix="upkeeper-scan-", suffix=".pickle")
            os.close(fd)
            try:
                send.dump(("finish", path))
                sp.stdin.flush()
                msg = recv.load()
                if msg[0] == "error":
                    raise RuntimeError(msg[1])
                sp.stdin.close()
                sp.wait(timeout=60)  # the helper's memory is released before its result is unpickled
                if board is not None:  # (and no longer counts)
                    board.put(slot, 0)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            with lock:
                partials.append(path)
        except (FileChanged, MemoryLimit) as exc:
            with lock:
                errors.insert(0, exc)
        except Exception as exc:
            why = str(exc)
            if isinstance(exc, EOFError | BrokenPipeError):  # (pickle's "Ran out of input": the helper is gone)
                why = f"the helper process {sp.popen.pid} ended before it answered"
                with contextlib.suppress(Exception):
                    why = f"the helper process {sp.popen.pid} {describe_exit(sp.popen.wait(timeout=5))} before it answered"
            tail = sp.collector.text.strip().splitlines()[-3:] if sp.collector else []
            with lock:
                errors.append(RuntimeError(f"{why}{': ' + ' / '.join(tail) if tail else ''}"))


def _settle(msg: Any, taken: list[Unit], todo: queue.Queue[Unit],
            account: Callable[[Unit, int, list[ReadNote]], None]) -> None:
    """The answer of a helper started ahead to the scan's init, for the pieces it read ahead (``taken``, see
    :func:`_drive_helper`): account for each, or put them back in the queue."""
    if msg[0] == "respec":  # (one it could not read: nothing it read ahead is used, the scan reads them all)
        for u in taken:
            todo.put(u)
        return
    if msg[0] == "error":
        raise RuntimeError(msg[1])
    done = list(msg[1]) if msg[0] == "spec" else []
    if sorted(int(i) for i, _n, _notes in done) != list(range(len(taken))):
        raise RuntimeError(f"the helper that read ahead answered {msg[0]!r} for {len(done)} of the {len(taken)} "
                           "pieces it had claimed")
    for i, n, notes in done:
        account(taken[int(i)], int(n), list(notes))


def units_for(ranges: list[Any], continuation: bytes = b"", workers: int = 0,
              record_start: re.Pattern[bytes] | None = None, per_process: int = 3, tail: int = 0) -> list[Unit]:
    """Units for :class:`~upkeeper.logs.sources.ReadRange` items (plain files are cut into pieces).

    Pieces are sized so that every process gets a few of them (balance): total / (``per_process`` x
    processes) in whole MB, between 4 MB and 64 MB.  The processes do not finish together (a helper starts a few
    tenths of a second late) and the last one scans its last piece alone, so smaller pieces shorten that
    tail; a piece costs next to nothing beyond its bytes (the accumulator carries over), but where entries
    pair across lines (an error and its STATEMENT; PostgreSQL's statement and duration are paired again
    afterwards, see :func:`upkeeper.logs.pglog.resolve`) each cut may split a pair: those logs keep
    few pieces, access logs (:data:`ACCESS_PIECES`) take more.  ``tail``: that many of the last pieces of the plain
    files, for each process, are cut again into quarters (at least 1 MB each; :data:`ACCESS_TAIL`) when the pieces
    are at most :data:`TAIL_MAX_UNIT`: :func:`scan` hands them out last (the biggest first), so the processes run out
    of work within a small piece of each other.
    """
    total = sum((r.end if r.end is not None else r.start) - r.start for r in ranges if not r.file.gz)
    procs = workers if workers > 0 else default_workers()
    # (in whole MB: a live log that grew a little between two plans is cut at the same places, but at its end, so
    # that the pieces a helper read ahead are those of the scan's plan: see upkeeper.logs.speculate)
    unit = min(64 << 20, max(4 << 20, total // max(1, per_process * procs) >> 20 << 20))
    units: list[Unit] = []
    for r in ranges:
        lf = r.file
        if lf.gz or r.end is None:
            units.append(unit_of(r))
        else:
            units += split_units(lf.path, r.start, r.end, final=r.final, label=lf.path, continuation=continuation,
                                 unit=unit, ident=(lf.dev, lf.inode), record_start=record_start)
    if tail > 0 and procs > 1 and unit <= TAIL_MAX_UNIT:
        plain = [i for i, u in enumerate(units) if not u.gz and u.end is not None]
        for i in reversed(plain[-tail * procs:]):
            u = units[i]
            assert u.end is not None
            units[i:i + 1] = split_units(u.path, u.start, u.end, final=u.final, label=u.label,
                                         continuation=continuation, unit=max(1 << 20, (u.end - u.start) // 4),
                                         ident=u.ident, record_start=record_start)
    return units


def unit_of(r: Any) -> Unit:
    """The whole of a :class:`~upkeeper.logs.sources.ReadRange` as one unit."""
    lf = r.file
    ident = (lf.dev, lf.inode)
    if lf.gz or r.end is None:
        return Unit(lf.path, r.start, None, True, True, lf.path, ident)
    return Unit(lf.path, r.start, r.end, False, r.final, lf.path, ident)
