"""A scan helper started ahead (:mod:`upkeeper.logs.ahead`) scans the first pieces of its job's log before the run
is sent, and the scan takes over what it read — or has it thrown away.

``upkeeper run`` starts a log job's helper at its very start; the helper has imported its parser ~0.3 s later, while
the CLI still imports, loads the config and claims the run, and the worker the CLI forked imports the task: the
scan began ~0.45 s after the helper was ready, and the helper waited idle (the 100 MB access log's run, timeline of
2026-12-07).  So the helper plans the read the run will make, from the job's options as written (the accumulator
module's ``speculation``), and scans its pieces in the order the scan hands them out, each claimed first in a small
shared file (:class:`Claims`).  When the scan begins, it closes the claims, and takes the pieces claimed as read by
that helper when they are pieces of its own plan (the same accumulator module and scan options; each piece the same
file — device, inode — and bounds as one of the scan's): the helper finishes the piece it is in, tells what it read
of each, and goes on with the pieces left.  A live log that grew meanwhile is cut at the same places but at its end
(:func:`upkeeper.logs.parallel.units_for` sizes pieces in whole MB), so the pieces read first — the biggest, the end's
are quartered — are the scan's.  Any other difference (a log rotated meanwhile, options the helper's guess got
wrong, a file the run holds back for its format) and the helper throws away what it read: the scan reads
everything as it would have.  A piece the helper could not read (a file that changed under it) goes back to the
scan's queue.

Nothing here is trusted but what the scan checks: the pieces' bounds and files (device, inode), and the options,
compared for equality.  The claim file is the helper's creator's (mode 0600 in the temp directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import pickle
import select
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: the counter's value once the scan has closed the claims: no piece is claimed after it
CLOSED = -1
_HEAD = 16  # the counter (8 bytes, signed), then the length of the published plan (8 bytes)


class Claims:
    """The claim file of one helper's speculative scan: a counter of the pieces it has claimed (the next one's
    index), and the plan it published (a pickle).  Every step holds the file's lock (``flock``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def make(cls) -> Claims:
        fd, path = tempfile.mkstemp(prefix="upkeeper-claims-", suffix=".bin")
        try:
            os.pwrite(fd, bytes(_HEAD), 0)
        finally:
            os.close(fd)
        return cls(path)

    @contextlib.contextmanager
    def _locked(self) -> Any:
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # (the lock goes with it)

    @staticmethod
    def _count(fd: int) -> int:
        return int.from_bytes(os.pread(fd, 8, 0), "little", signed=True)

    def publish(self, plan: Any) -> bool:
        """Write the helper's plan (before it claims any piece); False when the scan has closed the claims."""
        blob = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
        with self._locked() as fd:
            if self._count(fd) == CLOSED:
                return False
            os.pwrite(fd, len(blob).to_bytes(8, "little") + blob, 8)
            return True

    def claim(self, cap: int) -> int | None:
        """The index of the next piece, now the helper's; None once the claims are closed or ``cap`` are claimed."""
        with self._locked() as fd:
            n = self._count(fd)
            if n == CLOSED or n >= cap:
                return None
            os.pwrite(fd, (n + 1).to_bytes(8, "little", signed=True), 0)
            return n

    def close(self) -> tuple[int, Any]:
        """Close the claims (the scan begins): how many pieces the helper claimed (those before it in its plan's
        order: read, or being read), and its plan (None when it published none, or it cannot be read)."""
        with self._locked() as fd:
            n = self._count(fd)
            os.pwrite(fd, CLOSED.to_bytes(8, "little", signed=True), 0)
            size = int.from_bytes(os.pread(fd, 8, 8), "little")
            blob = os.pread(fd, size, _HEAD) if size else b""
        plan = None
        if blob and len(blob) == size:
            try:
                plan = pickle.loads(blob)
            except Exception:
                plan = None
        return max(n, 0), plan

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


@dataclass
class Speculated:
    """What a helper read before the scan began: its accumulator (None: nothing read), each piece read (its index
    in the plan's order, the bytes read, the :class:`~upkeeper.logs.parallel.ReadNote` items), why a piece could not
    be read ("" when none failed: the accumulator is then not to be used), and its resident memory after its first
    buffer (the scan's memory budget counts from there)."""

    acc: Any = None
    done: list[tuple[int, int, list[Any]]] = field(default_factory=list)
    failed: str = ""
    base: int | None = None


def _waiting(fd: int) -> bool:
    """A message waits on ``fd`` (the scan's init, or the end of input: either way, reading ahead is over)."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def speculate(kind: str, path: str, options: Mapping[str, Any], target: Mapping[str, Any], share: int,
              wake: int) -> Speculated:
    """In a helper started ahead: plan the read of the job whose ``options`` and ``target`` settings (as written in
    the config file) it was given, with the ``speculation`` of the accumulator module ``kind``; publish the plan in
    the claim file ``path``; then claim and scan its pieces in order until the scan closes the claims, a message
    waits on ``wake`` (the helper's stdin), or ``1/share`` of the pieces are claimed (the helper's part of the scan,
    rounded up: no more is read for a run that may never come, or whose plan turns out another).  Never raises: a
    failure is what :class:`Speculated` says."""
    from upkeeper.logs import parallel

    claims = Claims(path)
    try:
        mod = importlib.import_module(kind)
        plan_of = getattr(mod, "speculation", None)
        planned = plan_of(options, target) if callable(plan_of) else None
        if planned is None:
            return Speculated()
        opts, continuation, units = planned
        order = parallel.queue_order(units)
        if not order or not claims.publish((kind, opts, continuation, order)):
            return Speculated()
        acc = mod.make_accumulator(opts)
    except Exception:
        return Speculated()
    got = Speculated(acc)
    # no limit yet (the scan's comes with its init), but the base as the scan's budget takes it: the resident memory
    # after the first buffer, which imported what the scan needs
    budget = parallel.Budget(1 << 62)
    cap = -(-len(order) // max(1, share))
    while not _waiting(wake):
        try:
            i = claims.claim(cap)
        except OSError:  # (the claim file is gone: the scan closed it and went on, or never will)
            break
        if i is None:
            break
        notes: list[Any] = []
        try:
            n = parallel.scan_unit(acc, order[i], continuation, notes, budget)
        except Exception as exc:  # (a file rotated under it: the scan reads the piece again, and says so)
            got.failed = f"{type(exc).__name__}: {exc}"
            break
        got.done.append((i, n, notes))
        got.base = budget.base
    return got


def answer(ahead: Speculated | None, taken: int) -> tuple[tuple[Any, ...] | None, Any, int | None]:
    """In the helper, when the scan's init comes saying it ``taken`` the pieces claimed (0 or less: it planned
    otherwise, or nothing was read ahead): the answer to send (None: none), the accumulator to go on with (None: a new
    one) and the memory budget's base.  The pieces are the scan's only when every one claimed was read; else they
    go back to its queue (``respec``) and what was read is thrown away."""
    if ahead is None or taken <= 0:
        return None, None, None
    if ahead.failed or len(ahead.done) != taken:
        return ("respec", ahead.failed or f"{len(ahead.done)} of the {taken} pieces claimed read"), None, None
    return ("spec", ahead.done), ahead.acc, ahead.base
