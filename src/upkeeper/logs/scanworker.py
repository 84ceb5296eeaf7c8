"""A log-scanning helper process: ``python -m upkeeper.logs.scanworker [--warm KIND]``.

Speaks pickle over stdin/stdout with :mod:`upkeeper.logs.parallel`:
``("init", kind, opts, continuation, memory_limit, board, slot, taken)``, then ``("unit", Unit)`` answered by
``("ok", bytes_read, notes)`` (:class:`~upkeeper.logs.parallel.ReadNote` items), then ``("finish", path)`` answered by ``("partial", path)`` once the
reduced result is pickled in the file ``path`` (created by the parent, mode 0600); then it exits at once
(:func:`_exit_now`).  ``--warm KIND``: import the accumulator module KIND (and what it scans with) before the
first message (:func:`upkeeper.logs.parallel.prestart`), and exit when none comes within :data:`WARM_IDLE`
seconds.  A helper ``upkeeper run`` started
ahead may first get ``("speculate", claims, options, target, share)``: it then scans the first pieces of its job's
log until the scan begins (:mod:`upkeeper.logs.speculate`); ``taken`` in the init then says how many of them the
scan took (answered by ``("spec", [(piece, bytes_read, notes)…])``, or ``("respec", why)`` when they could not all
be read: the scan reads them again) — 0 or less: what it read is thrown away.
End of input before ``finish``: it exits at once.
Any exception is answered by ``("error", traceback)``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import select
import sys
import traceback
from typing import IO, Any, NoReturn

from upkeeper.logs.speculate import Speculated, answer, speculate


def dump_fast(obj: Any, fh: IO[bytes]) -> None:
    """Pickle ``obj`` to ``fh`` without the memo (which costs tens of MB for millions of keys)."""
    p = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
    p.fast = True
    p.dump(obj)


def _exit_now(code: int) -> NoReturn:
    """Exit at once, without the interpreter's finalization: once the partial result is written and announced,
    nothing of this process is needed, and the finalization (the objects still alive freed one by one, the modules
    torn down, pyarrow's pools and threads shut) took 30-110 ms on a 100 MB log's half, while the parent waits for
    this process to end before it reads the result (:func:`upkeeper.logs.parallel.scan`).  The kernel takes the memory back in one go; what was written is
    flushed first (the result file is closed already)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def warm(kind: str) -> None:
    """Import the accumulator module ``kind`` and what its scanning needs (its ``warm()``, when it has one) before
    the first message comes (``--warm KIND``: a helper started ahead of its scan, see
    :func:`upkeeper.logs.parallel.prestart`).  Best effort: what fails here fails again, and is reported, where the
    scan needs it."""
    with contextlib.suppress(Exception):
        hook = getattr(importlib.import_module(kind), "warm", None)
        if callable(hook):
            hook()


#: seconds a helper started ahead of its scan (``--warm``) waits for its first message before it exits: no run
#: that took longer to start its scan would miss it (it starts a new helper), and a head start nobody took (a
#: worker that ran another job first) holds no memory for long
WARM_IDLE = 120.0


def main(argv: list[str] | None = None, idle: float = WARM_IDLE) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--warm":
        warm(args[1])
        ready, _w, _x = select.select([sys.stdin.buffer], [], [], idle)
        if not ready:
            _exit_now(0)
    recv = pickle.Unpickler(sys.stdin.buffer)
    out = sys.stdout.buffer
    send = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    acc: Any = None
    continuation = b""
    from upkeeper.logs.parallel import Board, Budget, FileChanged, MemoryLimit, release_memory, scan_unit

    budget = Budget(0)
    ahead: Speculated | None = None  # what it read before the scan began (see upkeeper.logs.speculate)

    while True:
        try:
            msg = recv.load()
        except EOFError:  # dismissed before its first unit (or the parent is gone): nothing to clean up
            _exit_now(0)
        try:
            if msg[0] == "speculate":  # (from upkeeper run, before the worker it forks drives this helper)
                _, path, options, target, share = msg
                ahead = speculate(args[1] if len(args) == 2 else "", path, options, target, int(share),
                                  sys.stdin.fileno())
                # (that message came from another pickler than the scan's: the scan's own memo starts afresh)
                recv = pickle.Unpickler(sys.stdin.buffer)
                continue
            if msg[0] == "init":
                _, kind, opts, continuation, *more = msg
                limit, board, slot, taken = (*more, "", 0, 0, 0)[:4] if more else (0, "", 0, 0)
                said, acc, base = answer(ahead, int(taken))  # what was read ahead: the scan's, or thrown away
                ahead = None
                if said is not None:
                    send.dump(said)
                    out.flush()
                budget = Budget(int(limit), base=base, board=Board(str(board)) if board and int(limit) > 0 else None,
                                slot=int(slot))
                if acc is None:
                    acc = importlib.import_module(kind).make_accumulator(opts)
                continue
            if msg[0] == "unit":
                notes: list[Any] = []
                n = scan_unit(acc, msg[1], continuation, notes, budget)
                send.dump(("ok", n, notes))
            elif msg[0] == "finish":
                # the parent reads the file after this process has exited, so the two copies never
                # coexist; streamed, without a pickle memo (none of the data is shared or cyclic)
                path = msg[1]
                release_memory()  # while the other processes still scan: see release_memory
                gc.disable()  # (for good: this process ends once its result is written, see paused_gc)
                result = acc.partial()
                acc = None
                release_memory()
                with open(path, "wb") as fh:
                    dump_fast(result, fh)
                # (result is not freed first: the process ends right after the answer, see _exit_now)
                send.dump(("partial", path))
                out.flush()
                _exit_now(0)
        except FileChanged as exc:  # logrotate ran meanwhile: the parent fails the run, records no cursor
            send.dump(("changed", str(exc)))
            out.flush()
            return 1
        except MemoryLimit as exc:  # too many distinct values for the limit: the parent fails the run
            send.dump(("memory", str(exc), exc.grown))
            out.flush()
            return 1
        except Exception:
            send.dump(("error", traceback.format_exc(limit=8)))
            out.flush()
            return 1
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
